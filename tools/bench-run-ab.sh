#!/usr/bin/env bash
# One whole `ndop run` of FILE with the binary NDOP against the mock-mesh binary MOCK (disk store,
# loopback, POS opt-out rate 5%), printed as one line tagged TAG: load average at the start, wall
# seconds, the stage seconds of run.json, the time outside the stages (report.html), collect's
# wait / download / check seconds, whether the reply was checked as it downloaded (and whether
# reconcile took its numbers from that check: returned_from_collect), ndop's CPU
# seconds and peak RSS, whether run.json recorded the report's hashes, the mock's CPU seconds
# (user+sys) and peak RSS, and, from its log, the seconds from the submission accepted to the POS job
# created and to the result sent (pos_job_s, pos_result_s), and, where the mock logs them, the
# CPU seconds of the POS pass's stages (pos_decode_cpu_s, pos_judge_cpu_s, pos_write_cpu_s), the
# chunk its early analysis was reading at acceptance (pos_early_chunk) and the seconds it took to
# finish after (pos_finished_after_s). For comparing two
# builds side by side, interleaved (the machine's load moves wall-clock figures by 2-3x):
#   for i in 1 2 3; do tools/bench-run-ab.sh OLD/ndop target/release/mock-mesh F old
#                      tools/bench-run-ab.sh target/release/ndop target/release/mock-mesh F new; done
# with F = bench-data/send-20000000-13000000.dat (made by tools/bench-send.sh 20000000 13000000).
# Two mocks the same way (the POS job): OLD/mock-mesh against target/release/mock-mesh, one ndop.
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
# the mock's CPU seconds (user+sys) over its whole life, read before it stops
mock_cpu=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' /proc/$mesh/stat)
mock_rss=$(awk '/^VmHWM/ {print $2}' /proc/$mesh/status)
kill -INT $mesh; wait $mesh || true
# the POS job from the mock's log: the submission accepted -> job created -> result sent
pos=$(python3 - "$tmp/store.log" <<'PY'
import re, sys
from datetime import datetime
t = {}
for line in open(sys.argv[1], errors="replace"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    m = re.match(r"(\S+Z)\s", line)
    if not m:
        continue
    at = datetime.fromisoformat(m.group(1).replace("Z", "+00:00")[:26] + "+00:00")
    for key, text in (("accepted", "message accepted into inbox"), ("job", "POS job created"), ("result", "POS result sent")):
        if text in line and key not in t:
            t[key] = at
# each stage's CPU (logged with the job by newer mocks) and where the early analysis was at acceptance
extra = ""
names = {"decode_cpu_s": "pos_decode_cpu_s", "judge_cpu_s": "pos_judge_cpu_s", "write_cpu_s": "pos_write_cpu_s",
         "reading_chunk_at_acceptance": "pos_early_chunk", "finished_after_s": "pos_finished_after_s"}
for line in open(sys.argv[1], errors="replace"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    for key, name in names.items():
        m = re.search(r"\b" + key + r"=(\S+)", line)
        if m:
            extra += f" {name}={m.group(1)}"
if len(t) == 3:
    print(f"pos_job_s={(t['job'] - t['accepted']).total_seconds():.2f} pos_result_s={(t['result'] - t['accepted']).total_seconds():.2f}{extra}")
else:
    print("pos_job_s=? pos_result_s=?" + extra)
PY
)
python3 - "$tmp/w/run.json" "$TAG" "$(echo "$e - $s" | bc)" "$tmp/cpu" "$load" "$mock_cpu $mock_rss $pos" <<'PY'
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
      f"returned_from_collect={run.get('returned_from_collect', False)} "
      f"cpu_user={user} cpu_sys={sys_} rss_kib={rss} hashes={'extract_hash' in run},{'output_hash' in run} "
      f"mock_cpu={sys.argv[6].split()[0]} mock_rss_kib={sys.argv[6].split()[1]} {' '.join(sys.argv[6].split()[2:])}")
PY
rm -rf "$tmp"
sync
