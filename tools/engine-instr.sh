#!/usr/bin/env bash
# Instructions per line of the engine, exactly (callgrind), for the shapes of
# tools/bench-engine.sh: load-insensitive, so it can compare two builds on a busy machine
# (this VM has no hardware counters for `perf stat`). Runs `ndop validate --threads 1` and
# `ndop prepare --threads 1` under valgrind on LINES-line files (default 2,000,000):
#   999       `ndop generate --lines LINES --seed 1`
#   national  the first LINES lines of bench-data/national-100000000.dat (made by
#             tools/bench-engine.sh; 65% distinct over England's prefixes, 0.5% invalid)
# Prints instructions per line. Under valgrind SHA-256 runs its portable code (no SHA-NI), so
# prepare's figure overstates its hashing; compare prepare with prepare.
#
# Usage: tools/engine-instr.sh [NDOP_BINARY] [LINES]
#        (default binary: a fresh release build; pass an older build to compare)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${1:-}" ]; then N=$1; else cargo build --release -q -p ndop; N=$PWD/target/release/ndop; fi
LINES=${2:-2000000}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
"$N" generate --lines "$LINES" --seed 1 --out "$T/999.dat" >/dev/null 2>&1
NAT=bench-data/national-100000000.dat
[ -f "$NAT" ] && head -n "$LINES" "$NAT" > "$T/national.dat"
instr() { # command... -> instructions
  valgrind --tool=callgrind --callgrind-out-file="$T/cg.out" "$@" >/dev/null 2>"$T/cg.err"
  sed -n 's/.*I *refs: *//p' "$T/cg.err" | tr -d ,
}
echo "# $(date -u '+%F %T') UTC, $N, $LINES lines, callgrind, --threads 1"
printf '%-10s %18s %18s\n' shape "validate instr/line" "prepare instr/line"
for shape in 999 national; do
  f="$T/$shape.dat"
  [ -f "$f" ] || { echo "$shape: $NAT missing (tools/bench-engine.sh national makes it)"; continue; }
  v=$(instr "$N" validate --threads 1 "$f")
  rm -rf "$T/out"
  p=$(instr "$N" prepare --threads 1 "$f" --out "$T/out" --mailbox X26ABC1 --date 2026-11-23)
  printf '%-10s %18.1f %18.1f\n' "$shape" "$(echo "$v / $LINES" | bc -l)" "$(echo "$p / $LINES" | bc -l)"
done
