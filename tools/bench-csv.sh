#!/usr/bin/env bash
# The CSV figures of docs/PERFORMANCE.md (issue 8, "Performance"): `ndop validate` and
# `ndop filter` on one realistic 8-column CSV extract in the page cache, side by side in ONE
# hyperfine run with `cat FILE > /dev/null` and `cat FILE > COPY` (and DuckDB doing the same
# filter, when a python with duckdb is found). Prints medians and the ratios the targets are
# stated in (validate <= 5x cat>/dev/null, filter <= 1.5x cat>COPY), then checks one filter run's
# counts against the generator's truth. Default `filter` fsyncs its output before renaming it into
# place, so it is compared with `cat FILE > COPY; sync COPY`; `filter --no-sync` does not, and is
# compared with a plain `cat FILE > COPY`.
#
# Usage: tools/bench-csv.sh [ROWS] [RUNS]   (defaults 20000000 10)
#
# The extract comes from benches/src/bin/csv_extract.rs (`--seed 1`): header
# record_id,nhs_number,event_date,provider,code,description,notes,amount; 999-range NHS numbers
# with repeats and ~0.1% invalid; quoted free text with commas and doubled quotes; one record in
# a thousand with a quoted line break (CRLF or LF); CRLF record endings. It is generated once into
# bench-data/csv-ROWS.csv (about 1.96 GB for 20M rows, ~98 bytes a record; bench-data/ is
# gitignored; BENCH_DATA=DIR moves it), with csv-ROWS.allowed.dat (the distinct valid numbers
# minus ~2% "opted out", one `NNNNNNNNNN,` CRLF line each: the --allowed list) and
# csv-ROWS.truth.json (the counts a correct reader must report, and filter's output size).
#
# Needs hyperfine (installed with apt-get when run as root; otherwise `sudo apt-get install
# hyperfine` or `cargo install hyperfine`) and python3. DuckDB is optional: DUCKDB_PYTHON=PATH, or
# .venv/bin/python, if it can `import duckdb` (e.g. `.venv/bin/pip install duckdb`).
# Results: bench-data/csv.json (hyperfine's JSON export).
#
# NDOP_BASE=PATH also times that build's `filter --no-sync` in the same hyperfine run, for an A/B
# against a previous build (e.g. a copy of target/release/ndop taken before a change).
set -euo pipefail
case "${1:-}" in
-h | --help)
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
  ;;
esac
ROWS=${1:-20000000}
RUNS=${2:-10}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
B=${BENCH_DATA:-bench-data}
mkdir -p "$B"

if ! command -v hyperfine >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing hyperfine with apt-get" >&2
    apt-get install -y -qq hyperfine >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq hyperfine >/dev/null; }
  else
    echo "bench-csv: needs hyperfine: sudo apt-get install hyperfine" \
      "(or cargo install hyperfine)" >&2
    exit 1
  fi
fi

# ndop lives in package `ndop` after the layout change, in `processor` before it.
pkg() {
  for p in "$@"; do
    if cargo pkgid -q "$p" >/dev/null 2>&1; then
      echo "$p"
      return
    fi
  done
  echo "$1"
}
NDOP_PKG=$(pkg ndop processor)
GEN_PKG=$(pkg ndop-benches benches)
cargo build --release -q -p "$NDOP_PKG" --bin ndop
cargo build --release -q -p "$GEN_PKG" --bin csv_extract
N=$PWD/target/release/ndop

F="$B/csv-$ROWS.csv"
A="$B/csv-$ROWS.allowed.dat"
T="$B/csv-$ROWS.truth.json"
if [ ! -f "$F" ] || [ ! -f "$A" ] || [ ! -f "$T" ]; then
  echo "generating $F" >&2
  target/release/csv_extract --rows "$ROWS" --seed 1 --out "$F.tmp" --allowed-out "$A.tmp" \
    --truth "$T.tmp"
  mv "$A.tmp" "$A"
  mv "$T.tmp" "$T"
  mv "$F.tmp" "$F"
fi
OUT="$B/csv-filtered.csv"
COPY="$B/csv-copy.csv"
DOUT="$B/csv-duckdb.csv"
cleanup() { rm -f "$OUT" "$OUT.rejects.csv" "$COPY" "$DOUT"; }
trap cleanup EXIT
cleanup

# DuckDB, optional: the same filter as a semi join, written back as CSV.
DPY=${DUCKDB_PYTHON:-.venv/bin/python}
DUCK=()
if [ -x "$DPY" ] && "$DPY" -c 'import duckdb' 2>/dev/null; then
  cat >"$B/duckdb-filter.py" <<'PY'
import sys, duckdb
src, allowed, out = sys.argv[1:4]
duckdb.sql(f"""
COPY (
  SELECT e.* FROM read_csv('{src}', header = true, delim = ',', quote = '"', escape = '"',
                           all_varchar = true) e
  SEMI JOIN read_csv('{allowed}', header = false, delim = ',',
                     columns = {{'n': 'VARCHAR', 'x': 'VARCHAR'}}) a
  ON e.nhs_number = a.n
) TO '{out}' (HEADER, DELIMITER ',')
""")
PY
  DUCK=(-n "duckdb filter (python $("$DPY" -c 'import duckdb; print(duckdb.__version__)'))"
    --prepare "rm -f $DOUT" "$DPY $B/duckdb-filter.py $F $A $DOUT")
else
  echo "# DuckDB skipped: no python with duckdb at $DPY (set DUCKDB_PYTHON)" >&2
fi

BASE=()
if [ -n "${NDOP_BASE:-}" ]; then
  BASE=(-n 'base filter --no-sync' --prepare "rm -f $OUT $OUT.rejects.csv; sync"
    "$NDOP_BASE filter $F --column nhs_number --allowed $A --out $OUT --no-sync > /dev/null")
fi

cat "$F" >/dev/null
cat "$F" >/dev/null # into the page cache
cat "$A" >/dev/null
echo "# $(date -u '+%F %T') UTC, $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)," \
  "ndop $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo +dirty)," \
  "$F: $(stat -c %s "$F") bytes, $ROWS records"
echo "# tools/bench-csv.sh $ROWS $RUNS"
hyperfine --style basic --runs "$RUNS" --export-json "$B/csv.json" \
  -n 'cat FILE > /dev/null' --prepare true "cat $F > /dev/null" \
  -n 'cat FILE > COPY' --prepare "rm -f $COPY" "cat $F > $COPY" \
  -n 'cat FILE > COPY; sync' --prepare "rm -f $COPY; sync" "cat $F > $COPY; sync $COPY" \
  -n 'ndop validate --column nhs_number' --prepare true \
  "$N validate $F --column nhs_number > /dev/null" \
  -n 'ndop filter --column nhs_number' --prepare "rm -f $OUT $OUT.rejects.csv; sync" \
  "$N filter $F --column nhs_number --allowed $A --out $OUT > /dev/null" \
  -n 'ndop filter --no-sync' --prepare "rm -f $OUT $OUT.rejects.csv; sync" \
  "$N filter $F --column nhs_number --allowed $A --out $OUT --no-sync > /dev/null" \
  "${BASE[@]}" "${DUCK[@]}" >/dev/null

# One more filter run outside the timing: its exit code and counts against the truth.
rm -f "$OUT" "$OUT.rejects.csv"
set +e
"$N" filter "$F" --column nhs_number --allowed "$A" --out "$OUT" >"$B/csv-filter-summary.json" \
  2>/dev/null
RC=$?
set -e
OUT_BYTES=$(stat -c %s "$OUT" 2>/dev/null || echo -1)
python3 - "$B/csv.json" "$T" "$B/csv-filter-summary.json" "$RC" "$OUT_BYTES" <<'PY'
import json, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
truth = json.load(open(sys.argv[2]))
mb = truth["bytes"] / 1e6
for k, r in res.items():
    print(f"{k:36} median {r['median']:8.3f} s  min {r['min']:8.3f}  max {r['max']:8.3f}  "
          f"user {r['user']:6.3f}  sys {r['system']:6.3f}  {mb / r['median']:7.0f} MB/s")
med = {k: v["median"] for k, v in res.items()}
null, copy = med["cat FILE > /dev/null"], med["cat FILE > COPY"]
v, f = med["ndop validate --column nhs_number"], med["ndop filter --column nhs_number"]
fns = med["ndop filter --no-sync"]
print(f"validate / cat>/dev/null = {v / null:.2f}x (target <= 5x)")
print(f"filter --no-sync / cat>COPY = {fns / copy:.2f}x (target <= 1.5x)")
if "base filter --no-sync" in med:
    b = med["base filter --no-sync"]
    print(f"base filter --no-sync / cat>COPY = {b / copy:.2f}x; this build / base = {fns / b:.2f}")
# filter syncs its output before renaming it into place; cat does not unless told to.
print(f"filter / (cat>COPY; sync) = {f / med['cat FILE > COPY; sync']:.2f}x (target <= 1.5x)")
print(f"filter / cat>COPY        = {f / copy:.2f}x")
for k in med:
    if k.startswith("duckdb"):
        print(f"duckdb filter / ndop filter = {med[k] / f:.2f}x")
# The check: ndop's summary (old reader: `rows`; new reader may say `records`) vs the truth.
rc = int(sys.argv[4])
try:
    s = json.load(open(sys.argv[3]))
    c = s.get("counts", s)
except Exception as e:
    print(f"check: filter exited {rc}, no JSON summary ({e})")
    sys.exit(0)
want = {"records": truth["rows"], "kept": truth["kept_rows"],
        "opted_out": truth["opted_out_rows"], "invalid": truth["invalid"],
        "output bytes": truth.get("kept_bytes")}
got = {"records": c.get("records", c.get("rows")), "kept": c.get("kept"),
       "opted_out": c.get("opted_out"), "invalid": c.get("invalid"),
       "output bytes": int(sys.argv[5])}
bad = [k for k in want if got[k] != want[k]]
print(f"check: filter exited {rc}; " + ", ".join(
    f"{k} {got[k]}" + ("" if got[k] == want[k] else f" (truth {want[k]})") for k in want)
    + ("; agrees with the truth" if not bad else "; DISAGREES with the truth"))
PY
