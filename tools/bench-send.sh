#!/usr/bin/env bash
# Times `ndop send` per `--compress-level` against a release mock-mesh (disk store) on loopback,
# and `ndop collect` of the POS reply, on a national-shaped prepared `.dat` (issue 15 item 5).
# Usage: tools/bench-send.sh [LINES] [DISTINCT] [ROUNDS] [LEVELS]
#   defaults: 100000000 65000000 3 "0 1 3 6 9" (about 840 MB of .dat after `ndop prepare`)
# Prints one line per round and level: send seconds (wall, and the CPU seconds of ndop) and the
# bytes MESH stored (the gzip'd chunks); then per round the collect seconds (default-level send,
# reply of every number not opted out) and one whole `ndop run` of the extract with the stage
# seconds of its run.json.
# BENCHMARK DATA ONLY: the national generator's numbers are outside the 999 test range; it is
# sent to the local mock only.
set -euo pipefail
cd "$(dirname "$0")/.."
LINES=${1:-100000000}
DISTINCT=${2:-65000000}
ROUNDS=${3:-3}
LEVELS=${4:-0 1 3 6 9}
DATA=${BENCH_DATA:-bench-data}
cargo build --release -q -p ndop -p mock-mesh -p ndop-benches --bin national_extract --bin ndop --bin mock-mesh
N=$PWD/target/release/ndop
M=$PWD/target/release/mock-mesh
mkdir -p "$DATA"
FILE="$DATA/send-$LINES-$DISTINCT.dat"
PREP="$DATA/send-$LINES-$DISTINCT.prepared"
[ -f "$FILE" ] || target/release/national_extract --lines "$LINES" --distinct "$DISTINCT" \
  --range england --invalid-rate 0.005 --seed 1 --out "$FILE" --truth "$FILE.truth.json"
if [ ! -d "$PREP" ]; then
  "$N" prepare "$FILE" --out "$PREP.tmp" --mailbox X26ABC1 >/dev/null 2>&1
  mv "$PREP.tmp" "$PREP"
fi
echo "prepared: $(cat "$PREP"/*.dat | wc -c) bytes of .dat in $(ls "$PREP"/*.dat | wc -l) files"
export NDOP_MESH_PASSWORD=password NDOP_MESH_SHARED_KEY=TestKey

# start_mesh STORE [ARGS...]: a release mock on a free port; sets $mesh (pid) and $url.
start_mesh() {
  local store=$1
  shift
  local port=$((20000 + RANDOM % 20000))
  "$M" serve --listen "127.0.0.1:$port" --store "$store" --optout-rate 0.05 --optout-seed 1 "$@" \
    >/dev/null 2>&1 &
  mesh=$!
  url="http://127.0.0.1:$port"
  for _ in $(seq 50); do curl -s -o /dev/null "$url" && return; sleep 0.1; done
}
stop_mesh() { kill -INT "$mesh"; wait "$mesh" || true; }
secs() { echo "$2 - $1" | bc; }

for r in $(seq "$ROUNDS"); do
  for level in $LEVELS; do
    tmp=$(mktemp -d)
    # the mock's POS waits an hour: the store holds only the uploaded (gzip'd) chunks
    start_mesh "$tmp/store" --pos-delay 3600
    s=$(date +%s.%N)
    /usr/bin/time -f '%U %S' -o "$tmp/cpu" "$N" send "$PREP" --work "$tmp/w" --mesh "$url" \
      --mailbox X26ABC1 --compress-level "$level" >/dev/null 2>"$tmp/send.err" \
      || { cat "$tmp/send.err"; exit 1; }
    e=$(date +%s.%N)
    # the submission's chunks, as uploaded (the POS keeps them until it answers)
    stored=$(du -sb "$tmp/store/chunks" | cut -f1)
    stop_mesh
    echo "round=$r level=$level send_s=$(secs "$s" "$e") cpu_s=$(awk '{print $1 + $2}' "$tmp/cpu") stored_bytes=$stored"
    rm -rf "$tmp"
  done
  tmp=$(mktemp -d)
  start_mesh "$tmp/store"
  "$N" send "$PREP" --work "$tmp/w" --mesh "$url" --mailbox X26ABC1 >/dev/null 2>&1
  s=$(date +%s.%N)
  "$N" collect --work "$tmp/w" --mesh "$url" --mailbox X26ABC1 --interval 0.05 --timeout 600 \
    >/dev/null 2>"$tmp/collect.err" || { cat "$tmp/collect.err"; exit 1; }
  e=$(date +%s.%N)
  stop_mesh
  echo "round=$r collect_s=$(secs "$s" "$e") replies_bytes=$(du -sb "$tmp/w/replies" | cut -f1)"
  rm -rf "$tmp"
  tmp=$(mktemp -d)
  start_mesh "$tmp/store"
  s=$(date +%s.%N)
  "$N" run "$FILE" --work "$tmp/w" --mesh "$url" --mailbox X26ABC1 --interval 0.05 --timeout 600 \
    >/dev/null 2>"$tmp/run.err" || { cat "$tmp/run.err"; exit 1; }
  e=$(date +%s.%N)
  stop_mesh
  python3 - "$tmp/w/run.json" "$r" "$(secs "$s" "$e")" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
stages = " ".join(f"{k}={v:.2f}" for k, v in run["stage_seconds"])
print(f"round={sys.argv[2]} run_s={float(sys.argv[3]):.2f} {stages}")
PY
  rm -rf "$tmp"
done
