#!/usr/bin/env bash
# Where each thread of one `ndop prepare` (or `validate`) run spends its CPU, by activity:
# `perf record -e cpu-clock -g` (a software event: this VM has no hardware counters), then
# every sample put in one bucket by its call chain (write(), sync_file_range, fsync, munmap,
# page faults, else the leaf function), summed per thread: the scan's workers
# (`ndop-worker-N`), the ordering thread (`ndop`) and the output's writers (`ndop-writer-N`).
# CPU seconds are samples / frequency; on a loaded machine they are inflated alike, so
# compare the buckets' shares within one run (e.g. write() against SHA-256 on the writers).
# With TIMELINE=1 it also prints each thread's samples per 0.25 s of the run (the phases).
#
# Usage: tools/engine-threads.sh [NDOP] [FILE] [prepare|validate]
#        (defaults: target/release/ndop, bench-data/national-100000000.dat, prepare)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-target/release/ndop}
F=${2:-bench-data/national-100000000.dat}
CMD=${3:-prepare}
HZ=${HZ:-2000}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
command -v perf >/dev/null || { echo "needs perf" >&2; exit 2; }
cat "$F" > /dev/null
echo "# $(date -u '+%F %T') UTC, load $(cut -d' ' -f1-3 /proc/loadavg), $N $CMD $F"
if [ "$CMD" = prepare ]; then
  perf record -q -e cpu-clock -F "$HZ" -g -o "$T/perf.data" -- \
    "$N" prepare "$F" --out "$T/out" --mailbox X26ABC1 --date 2026-11-23 >/dev/null 2>&1
else
  perf record -q -e cpu-clock -F "$HZ" -g -o "$T/perf.data" -- "$N" validate "$F" >/dev/null 2>&1
fi
perf script -i "$T/perf.data" -F comm,tid,time,ip,sym 2>/dev/null > "$T/samples.txt"
HZ=$HZ TIMELINE=${TIMELINE:-0} python3 - "$T/samples.txt" <<'EOF'
import collections, os, sys
hz = float(os.environ["HZ"])
by = collections.defaultdict(collections.Counter)
when = collections.defaultdict(collections.Counter)
comm, t, stack, t0 = None, 0.0, [], None

def bucket(stack):
    s = " ".join(stack)
    for key, name in [("sync_file_range", "sync_file_range"), ("ksys_write", "write()"),
                      ("vfs_write", "write()"), ("fsync", "fsync"), ("fallocate", "fallocate"),
                      ("unmap", "munmap/release"), ("page_fault", "page faults")]:
        if key in s:
            return name
    return stack[0] if stack else "?"

def flush():
    if comm is not None:
        by[comm][bucket(stack)[:70]] += 1
        when[comm][int((t - t0) * 4)] += 1

for line in open(sys.argv[1]):
    if line and not line[0].isspace():
        flush()
        parts = line.split()
        comm, t, stack = parts[0], float(parts[2].rstrip(":")), []
        t0 = t if t0 is None else t0
    elif line.strip():
        p = line.split(None, 1)
        stack.append(p[1].strip() if len(p) > 1 else "?")
flush()
for c in sorted(by):
    total = sum(by[c].values())
    print(f"{c:16s} {total / hz:6.2f} s CPU")
    for k, n in by[c].most_common(6):
        print(f"    {n / hz:6.2f} s  {100 * n / total:4.0f}%  {k}")
if os.environ.get("TIMELINE") == "1":
    end = max(max(w) for w in when.values())
    print("time   " + " ".join(f"{c[-8:]:>8s}" for c in sorted(when)))
    for b in range(end + 1):
        print(f"{b / 4:5.2f}s " + " ".join(f"{when[c][b]:8d}" for c in sorted(when)))
EOF
