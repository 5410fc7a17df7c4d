#!/usr/bin/env bash
# Agent footprint: CPU (share of one core) and RSS of a release `meshmon-agent` with the system
# plugin sampling every 10 s, pushing to a release `meshmon-aggregator serve`, over DURATION seconds.
# Usage: bench/agent_footprint.sh [duration_s=300]      (figures go in docs/BENCHMARKS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-300}
cargo build --release -q -p meshmon-agent -p meshmon-aggregator
work=$(mktemp -d)
trap 'kill $agg $agent 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
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
echo "agent over $(echo "$s1 - $s0" | bc | cut -d. -f1) s: CPU ${cpu}% of one core ($((t1 - t0)) ticks at ${hz} Hz), peak RSS $((peak / 1024)).$(((peak % 1024) * 10 / 1024)) MB, records sent ${sent:-?}"
