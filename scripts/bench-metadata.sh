#!/usr/bin/env bash
# The metadata server's cached token path under wrk, beside nginx serving the same bytes as a
# static file, in the same run; then the cold latency of a new identity and the resident memory
# with 1,000 identities cached. Loopback only; every run is bounded in time.
#
#   apt-get install -y wrk nginx-light     # once
#   cargo build --release -p wid
#   scripts/bench-metadata.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
wid=target/release/wid
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; nginx -p "$work/nginx" -c nginx.conf -s stop 2>/dev/null || true' EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

md_port=18901; iam_port=18902; ng_port=18903
path=/computeMetadata/v1/instance/service-accounts/default/token

# 1000 pods on 127.0.1.x-127.0.4.x, plus the dev pod on 127.0.0.1.
python3 - "$work/pods.json" <<'PY'
import json, sys
pods = [{"ip": "127.0.0.1", "namespace": "default", "name": "dev", "uid": "dev", "serviceAccountName": "default",
         "annotations": {"iam.gke.io/gcp-service-account": "dev-runner@wid-dev.iam.gserviceaccount.com"}}]
for i in range(1000):
    pods.append({"ip": f"127.0.{1 + i // 250}.{1 + i % 250}", "namespace": f"ns{i}", "name": f"p{i}", "uid": f"u{i}", "serviceAccountName": "app"})
json.dump({"pods": pods}, open(sys.argv[1], "w"))
PY

WID_LOG=warn "$wid" dev --metadata-addr 127.0.0.1:$md_port --iam-addr 127.0.0.1:$iam_port --data-dir "$work/data" --pods "$work/pods.json" > "$work/dev.out" 2> "$work/dev.err" &
dev_pid=$!
for _ in $(seq 1 300); do grep -q GCE_METADATA_HOST "$work/dev.out" 2>/dev/null && break; sleep 0.1; done

# Cold: the first token of a new identity (STS exchange + generateAccessToken).
cold=$(curl -s -o "$work/token.json" -w '%{time_total}' -H 'Metadata-Flavor: Google' "http://127.0.0.1:$md_port$path")
echo "cold first token of a new identity: ${cold}s"

# nginx serves the same bytes.
mkdir -p "$work/nginx/logs" "$work/nginx/root$(dirname $path)"
cp "$work/token.json" "$work/nginx/root$path"
cat > "$work/nginx/nginx.conf" <<NG
user root;
worker_processes auto;
worker_rlimit_nofile 65536;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  default_type application/json;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$ng_port backlog=16384; root $work/nginx/root; }
}
NG
nginx -p "$work/nginx" -c nginx.conf

row() { # name url conns
  out=$(wrk -t2 -c"$3" -d"${secs}s" --timeout 10s --latency -H 'Metadata-Flavor: Google' "$2" 2>&1)
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errs=$(awk '/Socket errors/ {print $0}' <<<"$out"; awk '/Non-2xx/ {print $0}' <<<"$out")
  echo "$1|$3|$rps|$p50|$p99|${errs:-none}"
}
echo "server|connections|req/s|p50|p99|errors"
for c in 100 1000 10000; do
  row nginx "http://127.0.0.1:$ng_port$path" $c
  row wid "http://127.0.0.1:$md_port$path" $c
done

# 1,000 identities cached: each pod asks once (a federated token each).
start=$(date +%s.%N)
fails=0
for i in $(seq 0 999); do
  ip="127.0.$((1 + i / 250)).$((1 + i % 250))"
  code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' --interface "$ip" -H 'Metadata-Flavor: Google' "http://127.0.0.1:$md_port$path" || true)
  [ "$code" = 200 ] || fails=$((fails + 1))
done
end=$(date +%s.%N)
rss=$(awk '/VmRSS/ {print $2, $3}' /proc/$dev_pid/status)
echo "1,000 new identities fetched one after another in $(echo "$end - $start" | bc) s ($fails failed); wid dev (token service + agent) resident: $rss"
