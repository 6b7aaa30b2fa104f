#!/usr/bin/env bash
# Instructions a record of `ndop filter` and `ndop validate --column` on a CSV extract, counted
# by callgrind (this VM has no hardware counters; callgrind's counts do not move with the
# machine's load), for one or more ndop binaries side by side: e.g. a saved copy of the previous build against target/release/ndop.
#
# Usage: tools/csv-instructions.sh [NDOP...]   (default target/release/ndop)
#
# Reads bench-data/csv-200000.csv and its csv-200000.allowed.dat (made by
# `tools/bench-csv.sh 200000 1`, or BENCH_DATA=DIR), one thread, filter's output not synced;
# prints the instruction total and the total divided by the records, for filter then validate.
# Needs valgrind.
set -euo pipefail
case "${1:-}" in
-h | --help)
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
  ;;
esac
cd "$(dirname "${BASH_SOURCE[0]}")/.."
B=${BENCH_DATA:-bench-data}
F="$B/csv-200000.csv"
A="$B/csv-200000.allowed.dat"
[ -f "$F" ] && [ -f "$A" ] || { echo "csv-instructions: no $F; run tools/bench-csv.sh 200000 1" >&2; exit 1; }
[ $# -gt 0 ] || set -- target/release/ndop
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
RECORDS=200000
for N in "$@"; do
  rm -f "$TMP/out.csv" "$TMP/out.csv.rejects.csv"
  valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" "$N" filter "$F" \
    --column nhs_number --allowed "$A" --out "$TMP/out.csv" --no-sync --threads 1 \
    >/dev/null 2>"$TMP/log" || { cat "$TMP/log" >&2; exit 1; }
  IR=$(sed -n 's/.*refs: *//p' "$TMP/log" | tr -d ',')
  echo "$N: $IR instructions, $((IR / RECORDS)) a record (filter --threads 1, $F)"
  rm -rf "$TMP/v"
  valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" "$N" validate "$F" \
    --column nhs_number --out "$TMP/v" --threads 1 >/dev/null 2>"$TMP/log" ||
    { cat "$TMP/log" >&2; exit 1; }
  IR=$(sed -n 's/.*refs: *//p' "$TMP/log" | tr -d ',')
  echo "$N: $IR instructions, $((IR / RECORDS)) a record (validate --column --threads 1, $F)"
done
