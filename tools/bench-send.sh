#!/usr/bin/env bash
# Times `ndop send` per `--compress-level` against a release mock-mesh (disk store) on loopback,
# and `ndop collect` of the POS reply, on a national-shaped prepared `.dat` (issue 15 item 5).
# Usage: tools/bench-send.sh [LINES] [DISTINCT] [ROUNDS] [LEVELS]
#   defaults: 100000000 65000000 3 "0 1 3 6 9" (about 840 MB of .dat after `ndop prepare`)
# Prints one line per round and level: send seconds (wall, and the CPU seconds of ndop) and the
# bytes MESH stored (the gzip'd chunks); then per round the collect seconds (default-level send,
# reply of every number not opted out) and one whole `ndop run` of the extract with the stage
# seconds of its run.json, its CPU seconds, the load average, and collect split into the wait for
# the mock's POS (from the mock's log: submission accepted -> result sent) and ndop's download
# and check of the reply (collect's own figures in run.json). STAGE_cpu= is ndop's CPU seconds
# (user + sys, all threads) in each stage, from run.json's stage_cpu_seconds.
# Level 1 is mesh-client's line encoder on .dat chunks (one match distance, the line length;
# libdeflate's 1 on anything else); 2-8 libdeflate's levels; 9 libdeflate's 10 (mesh_client::gzip).
# NO_BUILD=1 uses the release binaries as they are (no cargo build first).
# MOCK_ARGS="..." passes more `serve` arguments to the mock (e.g. --pos-result-encoding identity);
# MOCK=PATH runs another mock-mesh binary. The whole run's line also gives the mock's CPU seconds
# (user+sys over its life) and peak RSS.
# NDOP=PATH times another ndop binary (e.g. one built before a change) against the same mock.
# RUN_LEVEL=N runs the whole `ndop run` with --compress-level N (default: ndop's default, mesh_client::DEFAULT_COMPRESS_LEVEL).
# COLLECT_ONLY=1 (with LEVELS "") times only the lone collect, started once the mock's POS
# result is ready (its user and sys CPU seconds from /usr/bin/time: the figure to compare).
# RUN_ONLY=1 skips the per-level sends and the lone collect (only the whole runs); LEVELS ""
# skips the per-level sends alone. The disk is synced before each timed command (deleting the
# previous round's files issues discards on this VM's ext4, which otherwise land in the next).
# BENCHMARK DATA ONLY: the national generator's numbers are outside the 999 test range; it is
# sent to the local mock only.
set -euo pipefail
cd "$(dirname "$0")/.."
LINES=${1:-100000000}
DISTINCT=${2:-65000000}
ROUNDS=${3:-3}
LEVELS=${4-0 1 3 6 9}
[ "${RUN_ONLY:-0}" = 1 ] && LEVELS=""
DATA=${BENCH_DATA:-bench-data}
[ "${NO_BUILD:-0}" = 1 ] || cargo build --release -q -p ndop -p mock-mesh -p ndop-benches --bin national_extract --bin ndop --bin mock-mesh
N=${NDOP:-$PWD/target/release/ndop}
M=${MOCK:-$PWD/target/release/mock-mesh}
mkdir -p "$DATA"
FILE="$DATA/send-$LINES-$DISTINCT.dat"
PREP="$DATA/send-$LINES-$DISTINCT.prepared"
[ -f "$FILE" ] || target/release/national_extract --lines "$LINES" --distinct "$DISTINCT" \
  --range england --invalid-rate 0.005 --seed 1 --out "$FILE" --truth "$FILE.truth.json"
if [ ! -d "$PREP" ]; then
  "$N" prepare "$FILE" --out "$PREP.tmp" --mailbox X26ABC1 >/dev/null 2>&1
  mv "$PREP.tmp" "$PREP"
fi
echo "prepared: $(cat "$PREP"/*.dat | wc -c) bytes of .dat in $(ls "$PREP"/*.dat | wc -l) files"
export NDOP_MESH_PASSWORD=password NDOP_MESH_SHARED_KEY=TestKey

# start_mesh STORE [ARGS...]: a release mock on a free port; sets $mesh (pid) and $url.
start_mesh() {
  local store=$1
  shift
  local port=$((20000 + RANDOM % 20000))
  # shellcheck disable=SC2086 # MOCK_ARGS is split into arguments on purpose
  "$M" serve --listen "127.0.0.1:$port" --store "$store" --optout-rate 0.05 --optout-seed 1 ${MOCK_ARGS:-} "$@" \
    >"$store.log" 2>&1 &
  mesh=$!
  url="http://127.0.0.1:$port"
  for _ in $(seq 50); do curl -s -o /dev/null "$url" && return; sleep 0.1; done
}
stop_mesh() { kill -INT "$mesh"; wait "$mesh" || true; }
secs() { echo "$2 - $1" | bc; }

for r in $(seq "$ROUNDS"); do
  for level in $LEVELS; do
    tmp=$(mktemp -d)
    # the mock's POS waits an hour: the store holds only the uploaded (gzip'd) chunks
    start_mesh "$tmp/store" --pos-delay 3600
    sync
    s=$(date +%s.%N)
    /usr/bin/time -f '%U %S %M' -o "$tmp/cpu" "$N" send "$PREP" --work "$tmp/w" --mesh "$url" \
      --mailbox X26ABC1 --compress-level "$level" >/dev/null 2>"$tmp/send.err" \
      || { cat "$tmp/send.err"; exit 1; }
    e=$(date +%s.%N)
    # the submission's chunks, as uploaded (the POS keeps them until it answers)
    stored=$(du -sb "$tmp/store/chunks" | cut -f1)
    stop_mesh
    echo "round=$r level=$level send_s=$(secs "$s" "$e") cpu_s=$(awk '{print $1 + $2}' "$tmp/cpu") peak_rss_kib=$(awk '{print $3}' "$tmp/cpu") stored_bytes=$stored load=$(cut -d' ' -f1 /proc/loadavg)"
    rm -rf "$tmp"
    sync
  done
  if [ "${RUN_ONLY:-0}" != 1 ]; then
  tmp=$(mktemp -d)
  start_mesh "$tmp/store"
  "$N" send "$PREP" --work "$tmp/w" --mesh "$url" --mailbox X26ABC1 >/dev/null 2>&1
  # the POS's result ready first: collect's own cost (download and check), not the wait
  for _ in $(seq 600); do grep -q "POS result sent" "$tmp/store.log" && break; sleep 0.1; done
  sync
  load=$(cut -d' ' -f1 /proc/loadavg)
  s=$(date +%s.%N)
  /usr/bin/time -f '%U %S %M' -o "$tmp/cpu" \
    "$N" collect --work "$tmp/w" --mesh "$url" --mailbox X26ABC1 --interval 0.05 --timeout 600 \
    >/dev/null 2>"$tmp/collect.err" || { cat "$tmp/collect.err"; exit 1; }
  e=$(date +%s.%N)
  stop_mesh
  echo "round=$r collect_s=$(secs "$s" "$e") replies_bytes=$(du -sb "$tmp/w/replies" | cut -f1) collect_user_s=$(cut -d' ' -f1 "$tmp/cpu") collect_sys_s=$(cut -d' ' -f2 "$tmp/cpu") peak_rss_kib=$(cut -d' ' -f3 "$tmp/cpu") load=$load"
  rm -rf "$tmp"
  sync
  [ "${COLLECT_ONLY:-0}" = 1 ] && continue
  rm -rf "$tmp"
  sync
  fi
  tmp=$(mktemp -d)
  start_mesh "$tmp/store"
  sync
  # the extract in the page cache, as the targets say ("page cache warm"): this VM reclaims
  # cold page cache within seconds (DAMON), so the runs before can have evicted it
  cat "$FILE" > /dev/null
  load=$(cut -d' ' -f1 /proc/loadavg)
  s=$(date +%s.%N)
  /usr/bin/time -f '%U %S %M' -o "$tmp/cpu" \
    "$N" run "$FILE" --work "$tmp/w" --mesh "$url" --mailbox X26ABC1 --interval 0.05 --timeout 600 \
    ${RUN_LEVEL:+--compress-level "$RUN_LEVEL"} >/dev/null 2>"$tmp/run.err" || { cat "$tmp/run.err"; exit 1; }
  e=$(date +%s.%N)
  # the mock's CPU seconds (user+sys) over its whole life and its peak RSS, read before it stops
  mock=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' /proc/$mesh/stat)
  mock="$mock $(awk '/^VmHWM/ {print $2}' /proc/$mesh/status)"
  stop_mesh
  python3 - "$tmp/w/run.json" "$r" "$(secs "$s" "$e")" "$tmp/cpu" "$load" "$tmp/store.log" "$mock" <<'PY'
import json, re, sys
from datetime import datetime
run = json.load(open(sys.argv[1]))
stages = " ".join(f"{k}={v:.2f}" for k, v in run["stage_seconds"])
# each stage's CPU seconds (user + sys, every thread of ndop), from run.json when it has them
stages += "".join(f" {k}_cpu={c['user'] + c['sys']:.2f}" for k, c in run.get("stage_cpu_seconds", []))
user, sys_, rss = open(sys.argv[4]).read().split()
print(f"round={sys.argv[2]} run_s={float(sys.argv[3]):.2f} {stages} "
      f"cpu_user={user} cpu_sys={sys_} peak_rss_kib={rss} load_at_start={sys.argv[5]} "
      f"mock_cpu={sys.argv[7].split()[0]} mock_rss_kib={sys.argv[7].split()[1]}")
# collect split: the mock's POS job (its log, UTC) against ndop's own figures
def when(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
ended = dict(run.get("stage_ended", []))
log = re.sub(r"\x1b\[[0-9;]*m", "", open(sys.argv[6]).read())
sent = [when(m) for m in re.findall(r"^(\S+Z)\s+INFO.*POS result sent", log, re.M)]
c = run["collect"]
down = sum(r.get("download_seconds", 0) for r in c["replies"])
check = sum(r.get("check_seconds", 0) for r in c["replies"])
created = [when(m) for m in re.findall(r"^(\S+Z)\s+INFO.*POS job created", log, re.M)]
def after_send(times):
    if not times or "send" not in ended:
        return float("nan")
    return (max(times) - when(ended["send"])).total_seconds()
print(f"round={sys.argv[2]} collect: pos_job_created_after_send_s={after_send(created):.2f} "
      f"pos_result_sent_after_send_s={after_send(sent):.2f} polls={c['polls']} "
      f"waited_s={c.get('waited_seconds', float('nan')):.2f} download_s={down:.2f} check_s={check:.2f}")
PY
  rm -rf "$tmp"
  sync
done
