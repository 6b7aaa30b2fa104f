#!/usr/bin/env bash
# Profiles mock-mesh while `mesh_load` downloads one 100 MB message from it N times (raw client,
# transfers only, mock only): prints every download's seconds, the server's and the client's
# CPU per download, the mock's task-clock, page faults and context switches (perf stat), and
# the top kernel/user symbols of its CPU (perf record -g; cpu-clock sampling: this VM has no
# PMU, so samples taken with interrupts off land on the next irq-enable, e.g.
# `_raw_spin_unlock_irqrestore`).
# Usage: tools/profile-mock-download.sh [--fifo] [MOCK_BIN] [DOWNLOADS] [OUT_DIR]
#   defaults: target/release/mock-mesh 15 /tmp/profile-mock-download
#   --fifo runs mesh_load, its servers and this script under `chrt -f 5` (SCHED_FIFO): on a
#   machine loaded by other work that reproduces the quiet machine's regime (where the reader
#   keeps up and the mock's CPU per download is about twice the loaded figure); it takes both
#   cores while it runs (about 10 s), so keep runs short.
# Needs: cargo build --release -p mock-mesh -p ndop-benches --bin mock-mesh --bin mesh_load
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--fifo" ]; then
  shift
  exec chrt -f 5 "$0" "$@"
fi
bin="$(realpath "${1:-target/release/mock-mesh}")"
n="${2:-15}"
out="${3:-/tmp/profile-mock-download}"
mkdir -p "$out"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
target/release/mesh_load --mock "$bin" --servers mock --transfers-only --rounds 1 \
  --downloads "$n" --single-bytes 1000000 --chunked-bytes 100000000 --store "$out/store" \
  > "$out/mesh_load.txt" 2>&1 &
ml=$!
pid=
for _ in $(seq 500); do
  pid="$(pgrep -f "^$bin serve" | head -1 || true)"
  [ -n "$pid" ] && break
  sleep 0.01
done
[ -n "$pid" ] || { echo "mock-mesh did not start" >&2; wait "$ml"; exit 1; }
perf stat -e task-clock,page-faults,context-switches -p "$pid" -o "$out/stat.txt" &
st=$!
perf record -q -g -p "$pid" -o "$out/perf.data" 2>/dev/null &
rec=$!
wait "$ml"
kill -INT "$st" "$rec" 2>/dev/null || true
wait "$st" "$rec" 2>/dev/null || true
grep -E "downloads \(s\)|CPU per" "$out/mesh_load.txt" | sed 's/.*single [0-9. ]*| chunked/100 MB downloads (s):/'
grep -E "task-clock|page-faults|context-switches" "$out/stat.txt"
perf report -i "$out/perf.data" --no-children --sort symbol --stdio 2>/dev/null |
  grep -E '^ +[0-9.]+%' | head -15
echo "(the whole run, upload included: $out/perf.data; perf report -i it --children for callers)"
