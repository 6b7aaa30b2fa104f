#!/usr/bin/env bash
# Constant memory at scale: a 20.8 GB, 1.6-billion-line `.dat` file (16 copies of the 100M-line
# generated file) through `ndop validate` and `ndop prepare`, next to `cat FILE > /dev/null`,
# with peak RSS. Needs about 22 GB of free disk; the file is deleted afterwards.
# Usage: tools/bench-scale.sh [COPIES] [ROUNDS]   (defaults 16 2)
set -euo pipefail
COPIES=${1:-16}
ROUNDS=${2:-2}
. "$(dirname "$0")/bench-lib.sh" 100000000
SRC="$F"
BIG="$B/scale.dat"
trap 'rm -f "$BIG"; rm -rf "$B/scale-out"' EXIT
for _ in $(seq "$COPIES"); do cat "$SRC"; done > "$BIG"
echo "# $(date -u '+%F %T') UTC, $(stat -c %s "$BIG") bytes, ndop $(git rev-parse --short HEAD)"
T="$B/scale-times.txt"; : > "$T"
for _ in $(seq "$ROUNDS"); do
  /usr/bin/time -a -o "$T" -f "cat > /dev/null: %e s" cat "$BIG" > /dev/null
  /usr/bin/time -a -o "$T" -f "validate: %e s, user %U s, sys %S s, peak RSS %M kB" \
    "$N" validate "$BIG" > /dev/null 2>&1
  rm -rf "$B/scale-out"
  /usr/bin/time -a -o "$T" -f "prepare: %e s, user %U s, sys %S s, peak RSS %M kB" \
    "$N" prepare "$BIG" --out "$B/scale-out" --mailbox X26ABC1 > /dev/null 2>&1
done
cat "$T"
