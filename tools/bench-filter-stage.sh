#!/usr/bin/env bash
# The filter stage of `ndop run` alone, old build against new, interleaved: `ndop filter` of the
# extract with the run's POS reply as --allowed and its prepared .dat files as --requested (what
# the run's filter stage does, less the report's hash), ROUNDS rounds. Prints one line per run:
# load average at the start, wall seconds, user and sys CPU seconds, peak RSS, and the output's
# SHA-256 (must be the same for both builds). With PERF=1 each run is also sampled (`perf record
# -F 499`, CPU clock) and the line ends with filter_block_cpu_s: the CPU seconds in the per-block
# work of the pool (parse and lookups: `processor::filter::filter_block` and what it inlines),
# without the reading of the two sets; less sensitive to the machine's load than the wall clock.
# Usage: tools/bench-filter-stage.sh OLD_NDOP NEW_NDOP EXTRACT WORK [ROUNDS]
#   WORK: the work directory of a finished `ndop run` of EXTRACT (its replies/ and prepared/),
#   e.g. from `ndop run bench-data/send-100000000-65000000.dat --work /tmp/w ...` against
#   mock-mesh (tools/bench-run-ab.sh shows how). Scratch output goes to ${TMPDIR:-/tmp}.
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 OLD_NDOP NEW_NDOP EXTRACT WORK [ROUNDS]" >&2; exit 2; }
OLD=$1; NEW=$2; EXTRACT=$3; WORK=$4; ROUNDS=${5:-3}
replies=("$WORK"/replies/*.cleaned.dat)
requests=("$WORK"/prepared/*.dat)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for r in $(seq "$ROUNDS"); do
  for tag in old new; do
    bin=$OLD; [ $tag = new ] && bin=$NEW
    sync
    load=$(cut -d' ' -f1 /proc/loadavg)
    perf=()
    [ "${PERF:-0}" = 1 ] && perf=(perf record -q -F 499 -o "$tmp/perf.data" --)
    /usr/bin/time -f '%e %U %S %M' -o "$tmp/cpu" "${perf[@]}" "$bin" filter "$EXTRACT" \
      --allowed "${replies[@]}" --requested "${requests[@]}" --out "$tmp/out" >/dev/null 2>"$tmp/err" \
      || { cat "$tmp/err"; exit 1; }
    read -r wall user sys rss <"$tmp/cpu"
    sha=$(sha256sum "$tmp/out" | cut -c1-16)
    block=
    if [ "${PERF:-0}" = 1 ]; then
      block=" filter_block_cpu_s=$(perf report -i "$tmp/perf.data" --no-children -n --sort symbol -g none 2>/dev/null |
        awk '/processor::filter::(filter_block|walk_block|walk_rows|decide)/ {s += $2} END {printf "%.2f", s / 499}')"
      rm -f "$tmp/perf.data"
    fi
    echo "round=$r $tag load=$load wall_s=$wall user_s=$user sys_s=$sys rss_kib=$rss out_sha256=$sha$block"
    rm -f "$tmp/out" "$tmp/out.rejects.csv"
  done
done
