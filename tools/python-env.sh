#!/usr/bin/env bash
# Creates (once) the Python virtual environment used by the interop tests and benchmarks:
# NHS England's official MESH client and its MESH sandbox, a FHIR STU3 client (fhirclient 3.2.0)
# and FHIR models (fhir.resources: STU3 and R4B), pinned, from PyPI.
# DuckDB (pinned) reads the cache's Parquet export in ndop/tests/cache.rs and is the engine
# benchmark's comparison (tools/duckdb_prepare.py).
# Prints the path of the environment's python on stdout. Safe to run concurrently.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${NDOP_PYTHON_VENV:-$root/.venv}"
want="mesh-client==5.0.2 mesh-sandbox==1.0.137 uvicorn fhirclient==3.2.0 fhir.resources==8.3.0 duckdb==2.0.1"
exec 9>"$root/.venv.lock"
flock 9
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.ndop-packages" 2>/dev/null)" != "$want" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $want >&2
  echo "$want" > "$venv/.ndop-packages"
fi
echo "$venv/bin/python"
