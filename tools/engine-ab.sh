#!/usr/bin/env bash
# Two ndop builds A/B on the engine's national-scale files, interleaved round by round (A, B,
# A, B, ...), so that a busy machine's load falls on both alike: `ndop validate` and
# `ndop prepare` (+ sync) on bench-data/national-100000000.dat and worst-100000000.dat (made by
# tools/bench-engine.sh), each run under /usr/bin/time. Prints one row per run: wall, user,
# sys, user+sys and peak RSS, with the load average before each round; compare CPU time
# (user+sys) on a loaded machine, wall time only on a quiet one. Checks that both builds
# print the same counts and write the same .dat bytes (SHA-256 of the output directory's
# .dat files).
#
# Usage: tools/engine-ab.sh OLD_NDOP NEW_NDOP [ROUNDS] [SHAPES]
#        (defaults: 3 rounds, national,worst). Needs about 1 GB free under $TMPDIR per
#        prepare output (removed after each run).
set -euo pipefail
cd "$(dirname "$0")/.."
A=${1:?usage: tools/engine-ab.sh OLD_NDOP NEW_NDOP [ROUNDS] [SHAPES]}
B=${2:?usage: tools/engine-ab.sh OLD_NDOP NEW_NDOP [ROUNDS] [SHAPES]}
ROUNDS=${3:-3}
SHAPES=${4:-national,worst}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
echo "# $(date -u '+%F %T') UTC, $(nproc) cores, A=$A, B=$B, $ROUNDS rounds"
printf '%-9s %-18s %-3s %6s %8s %7s %6s %9s %8s\n' shape command ab load wall user sys "user+sys" "RSS MiB"
for shape in ${SHAPES//,/ }; do
  f=bench-data/$shape-100000000.dat
  [ -f "$f" ] || { echo "missing $f: run tools/bench-engine.sh $shape first" >&2; exit 2; }
  cat "$f" > /dev/null
  for r in $(seq "$ROUNDS"); do
    for ab in A B; do
      n=$A; [ $ab = B ] && n=$B
      for cmd in validate prepare; do
        rm -rf "$T/out"; sync
        load=$(cut -d' ' -f1 /proc/loadavg)
        if [ $cmd = validate ]; then
          /usr/bin/time -o "$T/time" -f '%e %U %S %M' "$n" validate "$f" > "$T/$ab-$shape.txt" 2>/dev/null
        else
          /usr/bin/time -o "$T/time" -f '%e %U %S %M' sh -c \
            "'$n' prepare '$f' --out '$T/out' --mailbox X26ABC1 --date 2026-11-23 >/dev/null 2>&1; sync"
          cat "$T"/out/*.dat | sha256sum > "$T/$ab-$shape.sha"
        fi
        read -r wall user sys rss < "$T/time"
        printf '%-9s %-18s %-3s %6s %8s %7s %6s %9.2f %8d\n' "$shape" "$cmd" $ab "$load" "$wall" \
          "$user" "$sys" "$(echo "$user + $sys" | bc)" $((rss / 1024))
      done
    done
    rm -rf "$T/out"
  done
  cmp -s <(grep -v elapsed "$T/A-$shape.txt") <(grep -v elapsed "$T/B-$shape.txt") \
    || { echo "$shape: the two builds' validate counts differ" >&2; exit 1; }
  cmp -s "$T/A-$shape.sha" "$T/B-$shape.sha" \
    || { echo "$shape: the two builds' .dat bytes differ" >&2; exit 1; }
  echo "# $shape: same counts, same .dat bytes ($(cut -c1-16 "$T/B-$shape.sha")...)"
done
