#!/usr/bin/env bash
# The node agent in a simulated large cluster: the fake API server (wid-kube-fake) holds 100,000
# pods on 910 nodes and 1,000,000 service accounts; the agent watches node-0, which has 110 pods.
# Reports the agent's time to ready (start, and restart), its resident memory, the time from
# a new pod's address appearing to its first token (p50/p99, failures), each pod asking at once,
# and the first token request of pods whose KSA is annotated with an IAM service account, with
# the tokens fetched ahead (the default) and without (--no-token-prefetch), and the upstream
# calls each costs.
# Loopback only; every wait is bounded.
#
#   cargo build --release -p wid -p wid-kube-fake
#   scripts/bench-kubernetes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
wid=target/release/wid
fake=target/release/wid-kube-fake
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
iam_port=18971; fake_port=18972; md_port=18973; admin_port=18974
rss() { awk '/VmRSS/ {printf "%.1f MiB", $2 / 1024}' "/proc/$1/status"; }

WID_LOG=warn "$wid" iam serve --addr 127.0.0.1:$iam_port --data-dir "$work/data" > /dev/null 2> "$work/iam.log" &
"$fake" --addr 127.0.0.1:$fake_port --pods 100000 --nodes 909 --service-accounts 1000000 > "$work/fake.out" 2> "$work/fake.log" &
fake_pid=$!
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$iam_port/healthz" >/dev/null 2>&1 && grep -q WID_KUBE_FAKE "$work/fake.out" && break
  sleep 0.1
done
echo "fake API server: 100,000 pods, 1,000,000 service accounts; resident $(rss $fake_pid)"
base="http://127.0.0.1:$iam_port"
admin=(-H "Authorization: Bearer $(cat "$work/data/admin-token")" -H 'Content-Type: application/json')
curl -sf "${admin[@]}" -d '{"projectId":"bench-proj","projectNumber":"424242424242"}' "$base/v1/projects" >/dev/null
curl -sf "${admin[@]}" -d "{\"clusterName\":\"bench\",\"issuerUri\":\"http://127.0.0.1:$fake_port\",\"discover\":true}" \
  "$base/v1/projects/bench-proj/locations/local/clusters" >/dev/null
curl -sf "http://127.0.0.1:$fake_port/_fake/kubeconfig" > "$work/kubeconfig"

# node-0's 110 pods, on 127.0.4.x, each with its own (unannotated) service account.
python3 - "$fake_port" <<'PY'
import json, sys, urllib.request
port = sys.argv[1]
for i in range(110):
    body = json.dumps({"namespace": "bench", "name": f"p{i}", "node": "node-0", "ip": f"127.0.4.{i + 1}",
                       "serviceAccount": f"ksa-{i}"}).encode()
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/_fake/pods", body,
                                                  {"Content-Type": "application/json"}), timeout=10).read()
PY

# Starts the agent and sets agent_pid and ready_ms (time until /readyz answers 200).
start_agent() {
  local started; started=$(date +%s%N)
  WID_LOG=warn "$wid" metadata serve "$@" --addr 127.0.0.1:$md_port --admin-addr 127.0.0.1:$admin_port \
    --kubeconfig "$work/kubeconfig" --node-name node-0 --project bench-proj --project-number 424242424242 \
    --cluster-name bench --cluster-location local --sts-url "$base" --iamcredentials-url "$base" \
    > /dev/null 2>> "$work/agent.log" &
  agent_pid=$!
  for _ in $(seq 1 3000); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin_port/readyz")" = 200 ] && break
    sleep 0.005
  done
  ready=$(( ($(date +%s%N) - started) / 1000000 ))
}
start_agent
echo "agent ready (the 110 pods of its node listed): ${ready} ms; resident $(rss $agent_pid)"

# New pods, one after another: the address appears (the pod is created) and the pod asks for a
# token at once; its request is held until the watch delivers the pod.
python3 - "$fake_port" "$md_port" <<'PY'
import http.client, json, sys, time, urllib.request
fake, md = sys.argv[1], int(sys.argv[2])
times, failed = [], 0
for i in range(110):
    ip = f"127.0.5.{i + 1}"
    body = json.dumps({"namespace": "bench", "name": f"new{i}", "node": "node-0", "ip": ip,
                       "serviceAccount": f"ksa-{1000 + i}", "phase": "Pending"}).encode()
    started = time.monotonic()
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{fake}/_fake/pods", body,
                                                  {"Content-Type": "application/json"}), timeout=10).read()
    conn = http.client.HTTPConnection("127.0.0.1", md, timeout=15, source_address=(ip, 0))
    conn.request("GET", "/computeMetadata/v1/instance/service-accounts/default/token", headers={"Metadata-Flavor": "Google"})
    response = conn.getresponse()
    response.read()
    times.append(time.monotonic() - started)
    failed += response.status != 200
    conn.close()
times.sort()
p = lambda q: times[min(len(times) - 1, int(len(times) * q))] * 1000
print(f"new pod to first token, 110 pods: p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, max {times[-1] * 1000:.1f} ms; failed first requests: {failed}")
PY
echo "agent resident after 220 pods and their tokens: $(rss $agent_pid)"

kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true
start_agent
echo "agent restart, ready with 220 pods on its node: ${ready} ms; resident $(rss $agent_pid)"

# Pods that use Workload Identity: their KSA bench/wi is annotated with an IAM service account
# the token service lets it act as. Each pod's address appears, and its application asks for a
# token DELAY ms later (0: at once; 250: a container's start after its sandbox's address), with
# the agent fetching ahead and without.
account="bench-runner@bench-proj.iam.gserviceaccount.com"
curl -sf "${admin[@]}" -d '{"accountId":"bench-runner"}' "$base/v1/projects/bench-proj/serviceAccounts" >/dev/null
curl -sf "${admin[@]}" -d "{\"policy\":{\"bindings\":[{\"role\":\"roles/iam.workloadIdentityUser\",\"members\":[\"serviceAccount:bench-proj.svc.id.goog[bench/wi]\"]}]}}" \
  "$base/v1/projects/-/serviceAccounts/$account:setIamPolicy" >/dev/null
curl -sf -H 'Content-Type: application/json' \
  -d "{\"namespace\":\"bench\",\"name\":\"wi\",\"annotations\":{\"iam.gke.io/gcp-service-account\":\"$account\"}}" \
  "http://127.0.0.1:$fake_port/_fake/serviceaccounts" >/dev/null
upstream_calls() {
  curl -s "http://127.0.0.1:$admin_port/metrics" | awk '/^wid_metadata_upstream_calls_total/ {n += $2} END {print n + 0}'
}
round=0
for mode in prefetch no-prefetch; do
  for delay in 0 250; do
    kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true
    if [ "$mode" = prefetch ]; then start_agent; else start_agent --no-token-prefetch; fi
    before=$(upstream_calls)
    python3 - "$fake_port" "$md_port" "$delay" "$mode" "$round" <<'PY'
import http.client, json, sys, time, urllib.request
fake, md, delay, mode, round_ = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) / 1000, sys.argv[4], int(sys.argv[5])
times, failed = [], 0
for i in range(50):
    ip = f"127.0.{6 + round_}.{i + 1}"
    body = json.dumps({"namespace": "bench", "name": f"wi{round_}-{i}", "node": "node-0", "ip": ip,
                       "serviceAccount": "wi", "phase": "Pending"}).encode()
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{fake}/_fake/pods", body,
                                                  {"Content-Type": "application/json"}), timeout=10).read()
    time.sleep(delay)
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", md, timeout=15, source_address=(ip, 0))
    conn.request("GET", "/computeMetadata/v1/instance/service-accounts/default/token", headers={"Metadata-Flavor": "Google"})
    response = conn.getresponse()
    response.read()
    times.append(time.monotonic() - started)
    failed += response.status != 200
    conn.close()
times.sort()
p = lambda q: times[min(len(times) - 1, int(len(times) * q))] * 1000
# Gone before the next round, whose agent would otherwise fetch ahead for them as it starts.
for i in range(50):
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{fake}/_fake/pods/bench/wi{round_}-{i}",
                                                  method="DELETE"), timeout=10).read()
print(f"{mode:>11}, asked {int(delay * 1000):>3} ms after the address: first token request p50 {p(0.5):.2f} ms, "
      f"p99 {p(0.99):.2f} ms; failed {failed} of 50", end="")
PY
    echo "; upstream calls per pod $(awk -v a="$before" -v b="$(upstream_calls)" 'BEGIN {printf "%.2f", (b - a) / 50}')"
    round=$((round + 1))
  done
done
