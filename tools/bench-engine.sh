#!/usr/bin/env bash
# The engine figures of docs/PERFORMANCE.md: `ndop validate` and `ndop prepare` on one generated
# `.dat` file in the page cache, side by side in ONE hyperfine run with `cat FILE > /dev/null`,
# `cat FILE > COPY` and `wc -l FILE`; then `LC_ALL=C sort -u FILE` (slow, fewer runs) and peak
# RSS from /usr/bin/time -v. Prints medians and the ratios the targets are stated in.
# Usage: tools/bench-engine.sh [LINES] [RUNS] [SORT_RUNS]   (defaults 100000000 10 2)
set -euo pipefail
LINES=${1:-100000000}
RUNS=${2:-10}
SORT_RUNS=${3:-2}
. "$(dirname "$0")/bench-lib.sh" "$LINES"
cat "$F" > /dev/null; cat "$F" > /dev/null   # into the page cache
echo "# $(date -u '+%F %T') UTC, $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg), ndop $(git rev-parse --short HEAD)"
hyperfine --style basic --runs "$RUNS" --export-json "$B/engine.json" \
  -n 'cat FILE > /dev/null' --prepare true "cat $F > /dev/null" \
  -n 'cat FILE > COPY' --prepare "rm -f $B/copy.dat" "cat $F > $B/copy.dat" \
  -n 'wc -l FILE' --prepare true "wc -l $F" \
  -n 'ndop validate FILE' --prepare true "$N validate $F > /dev/null" \
  -n 'ndop validate --threads 1 FILE' --prepare true "$N validate --threads 1 $F > /dev/null" \
  -n 'ndop validate --io read FILE' --prepare true "$N validate --io read $F > /dev/null" \
  -n 'ndop prepare FILE' --prepare "rm -rf $B/out" \
  "$N prepare $F --out $B/out --mailbox X26ABC1 --date 2026-11-23 > /dev/null" >/dev/null
hyperfine --style basic --runs "$SORT_RUNS" --export-json "$B/sort.json" \
  -n 'LC_ALL=C sort -u FILE' "LC_ALL=C sort -u $F > /dev/null" >/dev/null
rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
rm -rf "$B/out"
echo "peak RSS kB: validate $(rss "$N" validate "$F")" \
  "validate --io read $(rss "$N" validate --io read "$F")" \
  "prepare $(rss "$N" prepare "$F" --out "$B/out" --mailbox X26ABC1 --date 2026-11-23)"
rm -rf "$B/out" "$B/copy.dat"
python3 - "$B/engine.json" "$B/sort.json" <<'PY'
import json, sys
res = {}
for path in sys.argv[1:]:
    for r in json.load(open(path))["results"]:
        res[r["command"]] = r
med = {k: v["median"] for k, v in res.items()}
for k, r in res.items():
    print(f"{k:34} median {r['median']:8.3f} s  min {r['min']:8.3f}  max {r['max']:8.3f}  "
          f"user {r['user']:6.3f}  sys {r['system']:6.3f}")
null, copy, sort = med["cat FILE > /dev/null"], med["cat FILE > COPY"], med["LC_ALL=C sort -u FILE"]
print(f"validate / cat>/dev/null = {med['ndop validate FILE'] / null:.2f}x (target <= 4x)")
print(f"prepare / cat>COPY       = {med['ndop prepare FILE'] / copy:.2f}x (target <= 1.3x)")
print(f"sort -u / prepare        = {sort / med['ndop prepare FILE']:.1f}x (target >= 30x)")
print(f"sort -u / validate       = {sort / med['ndop validate FILE']:.1f}x")
PY
