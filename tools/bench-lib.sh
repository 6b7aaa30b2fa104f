# Shared by the bench scripts (source it): builds release `ndop` as $N, makes the bench-data
# directory $B and generates the 100M-line-style `.dat` file of LINES lines as $F (kept between
# runs; bench-data/ is gitignored) unless SKIP_999 is set.
# Usage: . tools/bench-lib.sh LINES
cd "$(dirname "${BASH_SOURCE[0]}")/.."
B=${BENCH_DATA:-bench-data}
cargo build --release -q -p ndop
N=$PWD/target/release/ndop
mkdir -p "$B"
F="$B/engine-$1.dat"
[ -n "${SKIP_999:-}" ] || [ -f "$F" ] || "$N" generate --lines "$1" --seed 1 --out "$F" 2>/dev/null
