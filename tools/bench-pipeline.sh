#!/usr/bin/env bash
# Times `ndop run` on a generated extract against a release mock-mesh (disk store) on loopback,
# next to `cat FILE > /dev/null` in the same run. Usage: tools/bench-pipeline.sh [LINES] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
LINES=${1:-100000000}
ROUNDS=${2:-3}
DATA=${BENCH_DATA:-bench-data}
cargo build --release -q -p ndop -p mock-mesh
mkdir -p "$DATA"
FILE="$DATA/pipeline-$LINES.dat"
[ -f "$FILE" ] || target/release/ndop generate --lines "$LINES" --seed 1 --out "$FILE" 2>/dev/null
cat "$FILE" > /dev/null
for r in $(seq "$ROUNDS"); do
  store=$(mktemp -d) work=$(mktemp -d)
  port=$((20000 + RANDOM % 20000))
  target/release/mock-mesh serve --listen "127.0.0.1:$port" --store "$store" --optout-rate 0.05 --optout-seed 1 >/dev/null 2>&1 &
  mesh=$!
  sleep 0.5
  s=$(date +%s.%N); cat "$FILE" > /dev/null; e=$(date +%s.%N)
  cat_s=$(echo "$e - $s" | bc)
  s=$(date +%s.%N)
  NDOP_MESH_PASSWORD=password NDOP_MESH_SHARED_KEY=TestKey target/release/ndop run "$FILE" \
    --work "$work/w" --mesh "http://127.0.0.1:$port" --mailbox X26ABC1 --interval 0.05 --timeout 600 \
    > "$work/run.out" 2>/dev/null
  e=$(date +%s.%N)
  total=$(echo "$e - $s" | bc)
  python3 - "$work/w/run.json" "$cat_s" "$total" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
stages = " ".join(f"{k}={v:.2f}" for k, v in run["stage_seconds"])
print(f"cat>/dev/null={float(sys.argv[2]):.2f} total={float(sys.argv[3]):.2f} {stages} "
      f"requested={run['reconcile']['requested']} opted_out={run['reconcile']['opted_out']} "
      f"kept_rows={run['filter']['kept']}")
PY
  kill -INT "$mesh"; wait "$mesh" || true
  rm -rf "$store" "$work"
done
