#!/usr/bin/env bash
# Agent footprint: CPU (share of one core) and RSS of a release `meshmon-agent` pushing to a release
# `meshmon-aggregator serve`, over DURATION seconds.
#   PLUGINS=default  the agent's default plugin set: the system plugin every 10 s (nothing else is on
#                    until configured)
#   PLUGINS=typical  plus, at their default intervals: process (2 groups), tcp (2 targets), http probe
#                    (the aggregator's page), log (a file getting 10 lines/s, 1 in 10 an ERROR kept as a
#                    raw record), prometheus (the aggregator's /metrics), statsd (100 lines/s)
# Usage: [PLUGINS=default|typical] bench/agent_footprint.sh [duration_s=300]   (docs/BENCHMARKS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-300}
cargo build --release -q -p meshmon-agent -p meshmon-aggregator
work=$(mktemp -d)
loadgen=
trap 'kill $agg $agent $loadgen 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
grpc=$(port); http=$(port); agrpc=$(port); ahttp=$(port)
target/release/meshmon-aggregator serve --grpc-listen 127.0.0.1:$grpc --http-listen 127.0.0.1:$http \
  --data-dir "$work/agg" --shards 1 >"$work/agg.log" 2>&1 &
agg=$!
cat >"$work/agent.toml" <<TOML
output = "http://127.0.0.1:$grpc"
grpc_listen = "127.0.0.1:$agrpc"
http_listen = "127.0.0.1:$ahttp"
metrics_listen = "127.0.0.1:$ahttp"
state_dir = "$work/agent-state"
[plugins.system]
enabled = true
interval = "10s"
TOML
if [ "${PLUGINS:-default}" = typical ]; then
  statsd=$(port)
  : >"$work/app.log"
  cat >>"$work/agent.toml" <<TOML
[[plugins.process]]
matches = [{ label = "aggregator", name = "meshmon-aggregator" }, { label = "sshd", name = "sshd" }]
[[plugins.tcp]]
targets = ["127.0.0.1:$grpc", "127.0.0.1:$http"]
[[plugins.http]]
url = "http://127.0.0.1:$http/"
[[plugins.log]]
paths = ["$work/app.log"]
rules = [{ name = "error", pattern = "ERROR" }]
[[plugins.prometheus]]
url = "http://127.0.0.1:$http/metrics"
[[plugins.statsd]]
listen = "127.0.0.1:$statsd"
TOML
  # Load generators (separate processes, not measured): 10 log lines/s and 100 StatsD lines/s.
  python3 - "$work/app.log" "$statsd" <<'PY' &
import socket, sys, time
log = open(sys.argv[1], "a", buffering=1)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
i = 0
while True:
    for j in range(10):
        udp.sendto(b"api.requests:1|c\napi.latency:%d|ms\nqueue.depth:%d|g\nusers:%d|s\nerrors:1|c" % (j, i % 50, i), ("127.0.0.1", int(sys.argv[2])))
        udp.sendto(b"api.requests:1|c\napi.latency:%d|ms\nqueue.depth:%d|g\nusers:%d|s\nerrors:1|c" % (j + 1, i % 40, i + 1), ("127.0.0.1", int(sys.argv[2])))
        log.write("2026-11-21T12:00:00Z %s request %d served\n" % ("ERROR" if j == 0 else "INFO", i))
        i += 1
        time.sleep(0.1)
PY
  loadgen=$!
fi
target/release/meshmon-agent --config "$work/agent.toml" >"$work/agent.log" 2>&1 &
agent=$!
sleep 15 # let it start and take its first samples before measuring
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$agent/stat"; }
t0=$(ticks); s0=$(date +%s.%N); peak=0
for _ in $(seq 1 "$((duration / 5))"); do
  sleep 5
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$agent/status")
  [ "$rss" -gt "$peak" ] && peak=$rss
done
t1=$(ticks); s1=$(date +%s.%N)
cpu=$(echo "scale=4; ($t1 - $t0) / $hz / ($s1 - $s0) * 100" | bc)
sent=$(curl -s "http://127.0.0.1:$ahttp/metrics" | awk '/^meshmon_agent_sent_records_total|^meshmon_agent_sent_total/ {print $2}' | head -1)
echo "plugins: ${PLUGINS:-default}"
echo "agent over $(echo "$s1 - $s0" | bc | cut -d. -f1) s: CPU ${cpu}% of one core ($((t1 - t0)) ticks at ${hz} Hz), peak RSS $((peak / 1024)).$(((peak % 1024) * 10 / 1024)) MB, records sent ${sent:-?}"
