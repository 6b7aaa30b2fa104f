#!/usr/bin/env bash
# The engine figures of docs/PERFORMANCE.md, shape by shape: `ndop validate` and `ndop prepare`
# on one generated `.dat` file in the page cache, side by side in ONE hyperfine run per shape
# with `cat FILE > /dev/null`, `cat FILE > COPY` (and `+ sync`, next to `prepare + sync`); then
# the same job in DuckDB (tools/duckdb_prepare.py, fewer runs: it is slow) and peak RSS from
# /usr/bin/time. Prints medians and the ratios the targets are stated in, for every shape.
#
# Shapes (LINES lines each, default 100,000,000):
#   national  LINES*0.65 distinct numbers over England's prefixes (400-499 and 600-799 million),
#             0.5% invalid: benches' national_extract (bench data only: not the 999 range)
#   worst     every valid line a new number, over the whole range, 0.5% invalid
#   999       `ndop generate`: the 999 test range (about 909,000 distinct: mostly repeats)
#
# Usage: tools/bench-engine.sh [SHAPES] [RUNS] [DUCKDB_RUNS]
#        (defaults national,worst,999 10 2; DUCKDB_RUNS=0 skips DuckDB; LINES=20000000 for a
#        smaller run). Needs about 3 * 1.3 GB of bench-data/ at the default size, twice that
#        while a COPY exists. The machine may be shared: quote only ratios from one run.
set -euo pipefail
SHAPES=${1:-national,worst,999}
RUNS=${2:-10}
DUCK_RUNS=${3:-2}
LINES=${LINES:-100000000}
command -v hyperfine >/dev/null || { sudo -n true 2>/dev/null && S=sudo || S=; $S apt-get install -y hyperfine >&2; }
. "$(dirname "$0")/bench-lib.sh" "$LINES"
cargo build --release -q -p ndop-benches --bin national_extract
G=$PWD/target/release/national_extract
[ "$DUCK_RUNS" = 0 ] || PY=$(tools/python-env.sh)

shape_file() { # shape -> path of its file (generated once, with its truth beside it)
  local f
  case "$1" in
    999) echo "$F"; return ;;
    national) f="$B/national-$LINES.dat"
      [ -f "$f" ] || "$G" --lines "$LINES" --distinct $((LINES * 65 / 100)) --range england \
        --invalid-rate 0.005 --seed 1 --out "$f" --truth "${f%.dat}.truth.json" ;;
    worst) f="$B/worst-$LINES.dat"
      [ -f "$f" ] || "$G" --lines "$LINES" --distinct $((LINES - LINES / 200)) --range full \
        --invalid-rate 0.005 --seed 1 --out "$f" --truth "${f%.dat}.truth.json" ;;
    *) echo "unknown shape $1 (national, worst, 999)" >&2; exit 2 ;;
  esac
  echo "$f"
}

echo "# $(date -u '+%F %T') UTC, $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg), ndop $(git rev-parse --short HEAD), $LINES lines"
P="--mailbox X26ABC1 --date 2026-11-23"
rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
for shape in ${SHAPES//,/ }; do
  f=$(shape_file "$shape")
  cat "$f" > /dev/null; cat "$f" > /dev/null   # into the page cache
  hyperfine --style basic --runs "$RUNS" --export-json "$B/engine-$shape.json" \
    -n 'cat FILE > /dev/null' --prepare true "cat $f > /dev/null" \
    -n 'cat FILE > COPY' --prepare "rm -f $B/copy.dat" "cat $f > $B/copy.dat" \
    -n 'ndop validate FILE' --prepare true "$N validate $f > /dev/null" \
    -n 'ndop prepare FILE' --prepare "rm -rf $B/out" "$N prepare $f --out $B/out $P > /dev/null" \
    -n 'cat FILE > COPY; sync' --prepare "rm -f $B/copy.dat; sync" "cat $f > $B/copy.dat; sync" \
    -n 'ndop prepare FILE; sync' --prepare "rm -rf $B/out; sync" \
    "$N prepare $f --out $B/out $P > /dev/null; sync" >/dev/null
  rm -rf "$B/out" "$B/copy.dat"
  duck=null
  if [ "$DUCK_RUNS" != 0 ]; then
    hyperfine --style basic --runs "$DUCK_RUNS" --export-json "$B/duckdb-$shape.json" \
      -n 'DuckDB prepare' --prepare "rm -f $B/duck.dat $B/duck-invalid.csv" \
      "$PY tools/duckdb_prepare.py $f $B/duck.dat $B/duck-invalid.csv" >/dev/null
    duck="$B/duckdb-$shape.json"
  fi
  rss_v=$(rss "$N" validate "$f")
  rss_p=$(rss "$N" prepare "$f" --out "$B/out" $P)
  rss_d=-
  [ "$DUCK_RUNS" = 0 ] || rss_d=$(rss "$PY" tools/duckdb_prepare.py "$f" "$B/duck.dat" "$B/duck-invalid.csv")
  rm -rf "$B/out" "$B/duck.dat" "$B/duck-invalid.csv"
  python3 - "$shape" "$f" "$B/engine-$shape.json" "$duck" "$rss_v" "$rss_p" "$rss_d" <<'PY'
import json, os, sys
shape, path, engine, duck, rss_v, rss_p, rss_d = sys.argv[1:8]
res = {r["command"]: r for r in json.load(open(engine))["results"]}
if duck != "null":
    res.update({r["command"]: r for r in json.load(open(duck))["results"]})
med = {k: v["median"] for k, v in res.items()}
about = ""
for truth in (path[:-4] + ".truth.json", path + ".truth.json"):  # national_extract, ndop generate
    if not os.path.exists(truth):
        continue
    t = json.load(open(truth))
    about = f", {t['unique']:,} distinct, {t['invalid']:,} invalid"
print(f"## {shape}: {path} ({os.path.getsize(path):,} bytes{about})")
for k, r in res.items():
    print(f"{k:26} median {r['median']:8.3f} s  min {r['min']:8.3f}  max {r['max']:8.3f}  "
          f"user {r['user']:6.3f}  sys {r['system']:6.3f}")
v, p = med["ndop validate FILE"], med["ndop prepare FILE"]
print(f"validate / cat>/dev/null        = {v / med['cat FILE > /dev/null']:.2f}x")
print(f"prepare / cat>COPY              = {p / med['cat FILE > COPY']:.2f}x")
print(f"prepare+sync / cat>COPY+sync    = {med['ndop prepare FILE; sync'] / med['cat FILE > COPY; sync']:.2f}x")
if "DuckDB prepare" in med:
    print(f"DuckDB / prepare                = {med['DuckDB prepare'] / p:.1f}x")
mib = lambda kb: f"{int(kb) / 1024:.0f} MiB" if kb.isdigit() else kb
print(f"peak RSS: validate {mib(rss_v)}, prepare {mib(rss_p)}, DuckDB {mib(rss_d)}")
PY
done
