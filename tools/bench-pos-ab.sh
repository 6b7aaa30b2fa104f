#!/usr/bin/env bash
# The mock POS job's cost, two mock-mesh builds side by side: ROUNDS interleaved whole `ndop run`s
# of FILE (tools/bench-run-ab.sh, one ndop) against OLD_MOCK and NEW_MOCK, then a table of the
# POS pass's CPU seconds by stage (decode, judge, write: from the mock's "POS job created" log
# line), their sum, the mock's CPU over the whole run, the seconds from the submission accepted
# to the job created, collect's download seconds, and the load average at each start.
#   tools/bench-pos-ab.sh NDOP OLD_MOCK NEW_MOCK FILE [ROUNDS]
# e.g. (national: 845 MB, 65M lines, 11 chunks; copy the old mock before rebuilding)
#   tools/bench-pos-ab.sh target/release/ndop /tmp/old/mock-mesh target/release/mock-mesh \
#     bench-data/send-100000000-65000000.dat 3
# BENCHMARK DATA ONLY: sent to the local mock only. Scratch files go to ${TMPDIR:-/tmp}.
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 NDOP OLD_MOCK NEW_MOCK FILE [ROUNDS]" >&2; exit 2; }
N=$1; OLD=$2; NEW=$3; FILE=$4; ROUNDS=${5:-3}
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp)
for i in $(seq "$ROUNDS"); do
  "$here/bench-run-ab.sh" "$N" "$OLD" "$FILE" old | tail -1 | tee -a "$out"
  "$here/bench-run-ab.sh" "$N" "$NEW" "$FILE" new | tail -1 | tee -a "$out"
done
python3 - "$out" <<'PY'
import re, sys, statistics
rows = []
for line in open(sys.argv[1]):
    f = dict(re.findall(r"(\w+)=(\S+)", line))
    f["tag"] = line.split()[0]
    rows.append(f)
num = lambda r, k: float(r[k]) if r.get(k, "?") not in ("?", "") else float("nan")
cols = [("load", "load"), ("pos_decode_cpu_s", "decode"), ("pos_judge_cpu_s", "judge"),
        ("pos_write_cpu_s", "write"), (None, "stages"), ("mock_cpu", "mock CPU"),
        ("pos_job_s", "accepted->job"), ("download", "download"), ("run_s", "run")]
print("| mock | " + " | ".join(h for _, h in cols) + " |")
print("|---|" + "---:|" * len(cols))
def stages(r):
    return sum(num(r, k) for k in ("pos_decode_cpu_s", "pos_judge_cpu_s", "pos_write_cpu_s"))
for r in rows:
    cells = [f"{stages(r):.2f}" if k is None else r.get(k, "?") for k, _ in cols]
    print(f"| {r['tag']} | " + " | ".join(cells) + " |")
for tag in ("old", "new"):
    rs = [r for r in rows if r["tag"] == tag]
    med = [statistics.median(stages(r) if k is None else num(r, k) for r in rs) for k, _ in cols]
    print(f"| **{tag} median** | " + " | ".join(f"{m:.2f}" for m in med) + " |")
PY
rm -f "$out"
