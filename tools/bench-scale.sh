#!/usr/bin/env bash
# Constant memory at scale: a 20.8 GB, 1.6-billion-line `.dat` file (16 copies of the 100M-line
# generated file) through `ndop validate` and `ndop prepare`, next to `cat FILE > /dev/null`,
# with peak RSS. Needs about 22 GB of free disk; the file is deleted afterwards.
# Usage: tools/bench-scale.sh [COPIES] [ROUNDS] [SHAPE]   (defaults 16 2 999)
#   SHAPE 999: copies of `ndop generate`'s 100M-line file (909,091 distinct numbers);
#   SHAPE national: copies of the national-shaped 100M-line file of tools/bench-engine.sh
#   (65M distinct numbers over England's prefix ranges, 0.5% invalid; bench data only).
# Each round's validate counts go to $B/scale-validate-N.json (exact: COPIES times the source's
# lines and valid numbers, the source's distinct numbers).
set -euo pipefail
COPIES=${1:-16}
ROUNDS=${2:-2}
SHAPE=${3:-999}
[ "$SHAPE" = 999 ] || SKIP_999=1
. "$(dirname "$0")/bench-lib.sh" 100000000
case "$SHAPE" in
  999) SRC="$F" ;;
  national) SRC="$B/national-100000000.dat"
    cargo build --release -q -p ndop-benches --bin national_extract
    [ -f "$SRC" ] || target/release/national_extract --lines 100000000 --distinct 65000000 \
      --range england --invalid-rate 0.005 --seed 1 --out "$SRC" --truth "${SRC%.dat}.truth.json" ;;
  *) echo "unknown shape $SHAPE (999, national)" >&2; exit 2 ;;
esac
BIG="$B/scale.dat"
trap 'rm -f "$BIG"; rm -rf "$B/scale-out"' EXIT
for _ in $(seq "$COPIES"); do cat "$SRC"; done > "$BIG"
echo "# $(date -u '+%F %T') UTC, $(stat -c %s "$BIG") bytes, ndop $(git rev-parse --short HEAD)"
T="$B/scale-times.txt"; : > "$T"
echo "# shape $SHAPE: $COPIES copies of $SRC, load: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
  /usr/bin/time -a -o "$T" -f "cat > /dev/null: %e s" cat "$BIG" > /dev/null
  /usr/bin/time -a -o "$T" -f "validate: %e s, user %U s, sys %S s, peak RSS %M kB" \
    "$N" validate "$BIG" > "$B/scale-validate-$r.json" 2>/dev/null
  rm -rf "$B/scale-out"
  /usr/bin/time -a -o "$T" -f "prepare: %e s, user %U s, sys %S s, peak RSS %M kB" \
    "$N" prepare "$BIG" --out "$B/scale-out" --mailbox X26ABC1 > /dev/null 2>&1
done
cat "$T"
