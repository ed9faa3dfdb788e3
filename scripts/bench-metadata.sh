#!/usr/bin/env bash
# The metadata server's cached token path under wrk, beside nginx serving the same bytes as a
# static file, in the same run; then the cold latency of a new identity and the resident memory
# with 1,000 identities cached. Loopback only; every run is bounded in time.
#
#   apt-get install -y wrk nginx-light     # once
#   cargo build --release -p wid
#   scripts/bench-metadata.sh [SECONDS] [ROUNDS]
#
# Each round runs nginx then wid at 100, 1,000 and 10,000 connections; the ratio columns compare
# wid with the nginx row just before it (the two cores are shared with wrk, and runs move by
# +-10%, so several rounds tell more than one).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
rounds="${2:-1}"
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
echo "first token after start (connections to the token service not yet open): ${cold}s"

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

# wrk's latencies in milliseconds.
ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.2f", v}' <<<"$1"; }
row() { # name url conns
  out=$(wrk -t2 -c"$3" -d"${secs}s" --timeout 10s --latency -H 'Metadata-Flavor: Google' "$2" 2>&1)
  rps=$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$out")
  p50=$(ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
  p99=$(ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
  errs=$(awk '/Socket errors/ {print $0}' <<<"$out"; awk '/Non-2xx/ {print $0}' <<<"$out")
  errs="${errs:-none}"
  if [ "$1" = nginx ]; then
    ng_rps=$rps; ng_p99=$p99; ratios="|"
  else
    ratios="$(echo "scale=2; $rps / $ng_rps" | bc)x|$(echo "scale=2; $p99 / $ng_p99" | bc)x"
  fi
  echo "$1|$3|$rps|$p50 ms|$p99 ms|${errs//$'\n'/; }|$ratios"
}
echo "server|connections|req/s|p50|p99|errors|throughput vs nginx|p99 vs nginx"
for _ in $(seq 1 "$rounds"); do
  for c in 100 1000 10000; do
    row nginx "http://127.0.0.1:$ng_port$path" $c
    row wid "http://127.0.0.1:$md_port$path" $c
  done
done

# 1,000 identities cached: each pod asks once (a KSA token, an STS exchange each); curl's own
# time for each is the cold latency of a new identity.
start=$(date +%s.%N)
fails=0
: > "$work/cold.txt"
for i in $(seq 0 999); do
  ip="127.0.$((1 + i / 250)).$((1 + i % 250))"
  out=$(curl -s -m 10 -o /dev/null -w '%{http_code} %{time_total}' --interface "$ip" -H 'Metadata-Flavor: Google' "http://127.0.0.1:$md_port$path" || true)
  [ "${out%% *}" = 200 ] || fails=$((fails + 1))
  echo "${out##* }" >> "$work/cold.txt"
done
end=$(date +%s.%N)
rss=$(awk '/VmRSS/ {print $2, $3}' /proc/$dev_pid/status)
cold=$(sort -n "$work/cold.txt" | awk '{v[NR]=$1} END {printf "p50 %.1f ms, p99 %.1f ms", v[int(NR*0.5)]*1000, v[int(NR*0.99)]*1000}')
echo "1,000 new identities fetched one after another in $(echo "$end - $start" | bc) s ($fails failed); cold first token of each: $cold"
echo "wid dev (token service + agent) resident with 1,000 identities cached: $rss"
