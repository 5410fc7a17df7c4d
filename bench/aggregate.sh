#!/usr/bin/env bash
# Batch-mode throughput: `meshmon-aggregator aggregate` over the 2 M-record reference file.
# Usage: bench/aggregate.sh [records] [shards]   (figures go in docs/BENCHMARKS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-2000000}
shards=${2:-1}
out=bench/out
mkdir -p "$out"
cargo build --release -q -p meshmon-aggregator --bin meshmon-aggregator --example reference_jsonl
file="$out/reference-$records.jsonl"
[ -s "$file" ] || target/release/examples/reference_jsonl "$records" > "$file"
echo "input: $file ($(wc -l < "$file") lines, $(du -h "$file" | cut -f1))"
start=$(date +%s.%N)
target/release/meshmon-aggregator aggregate --input "$file" --output "$out/results.csv" \
  --window tumbling:10s --out-of-orderness 5s --allowed-lateness 0s --shards "$shards"
end=$(date +%s.%N)
echo "wall: $(echo "$end - $start" | bc) s for $records records, $(wc -l < "$out/results.csv") CSV lines"
