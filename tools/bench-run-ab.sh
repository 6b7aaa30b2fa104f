#!/usr/bin/env bash
# One whole `ndop run` of FILE with the binary NDOP against the mock-mesh binary MOCK (disk store,
# loopback, POS opt-out rate 5%), printed as one line tagged TAG: load average at the start, wall
# seconds, the stage seconds of run.json, the time outside the stages (report.html), collect's
# wait / download / check seconds, whether the reply was checked as it downloaded, ndop's CPU
# seconds and peak RSS, and whether run.json recorded the report's hashes. For comparing two
# builds side by side, interleaved (the machine's load moves wall-clock figures by 2-3x):
#   for i in 1 2 3; do tools/bench-run-ab.sh OLD/ndop target/release/mock-mesh F old
#                      tools/bench-run-ab.sh target/release/ndop target/release/mock-mesh F new; done
# with F = bench-data/send-20000000-13000000.dat (made by tools/bench-send.sh 20000000 13000000).
# BENCHMARK DATA ONLY: sent to the local mock only. Scratch files go to ${TMPDIR:-/tmp}.
set -euo pipefail
[ $# = 4 ] || { echo "usage: $0 NDOP MOCK FILE TAG" >&2; exit 2; }
N=$1; M=$2; FILE=$3; TAG=$4
export NDOP_MESH_PASSWORD=password NDOP_MESH_SHARED_KEY=TestKey
tmp=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
"$M" serve --listen "127.0.0.1:$port" --store "$tmp/store" --optout-rate 0.05 --optout-seed 1 --log info >"$tmp/store.log" 2>&1 &
mesh=$!
url="http://127.0.0.1:$port"
for _ in $(seq 50); do curl -s -o /dev/null "$url" && break; sleep 0.1; done
sync
load=$(cut -d' ' -f1 /proc/loadavg)
s=$(date +%s.%N)
/usr/bin/time -f '%U %S %M' -o "$tmp/cpu" "$N" run "$FILE" --work "$tmp/w" --mesh "$url" --mailbox X26ABC1 --interval 0.05 --timeout 600 >/dev/null 2>"$tmp/run.err" || { cat "$tmp/run.err"; exit 1; }
e=$(date +%s.%N)
kill -INT $mesh; wait $mesh || true
python3 - "$tmp/w/run.json" "$TAG" "$(echo "$e - $s" | bc)" "$tmp/cpu" "$load" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
st = run["stage_seconds"]
stages = " ".join(f"{k}={v:.2f}" for k, v in st)
whole = float(sys.argv[3])
user, sys_, rss = open(sys.argv[4]).read().split()
c = run["collect"]
down = sum(r.get("download_seconds", 0) for r in c["replies"])
check = sum(r.get("check_seconds", 0) for r in c["replies"])
stream = all(r.get("checked_while_downloading", False) for r in c["replies"] if r["reply"] == "cleaned")
print(f"{sys.argv[2]} load={sys.argv[5]} run_s={whole:.2f} {stages} outside={whole - sum(v for _, v in st):.2f} "
      f"waited={c.get('waited_seconds', 0):.2f} download={down:.2f} check={check:.2f} streamed={stream} "
      f"cpu_user={user} cpu_sys={sys_} rss_kib={rss} hashes={'extract_hash' in run},{'output_hash' in run}")
PY
rm -rf "$tmp"
sync
