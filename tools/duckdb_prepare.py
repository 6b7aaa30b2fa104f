"""The job of `ndop prepare`, written in DuckDB, for tools/bench-engine.sh's comparison.

Reads a one-number-per-line `.dat` extract (`NNNNNNNNNN,` lines), checks each value with a
Modulus 11 macro, writes the distinct valid numbers in ascending order as `NNNNNNNNNN,` lines to
OUT_DAT and the invalid values to OUT_INVALID, and prints the counts. DuckDB from the `.venv`
built by tools/python-env.sh (pinned there).

Usage: python tools/duckdb_prepare.py EXTRACT OUT_DAT OUT_INVALID
"""

import sys

import duckdb

src, out_dat, out_invalid = sys.argv[1:4]
con = duckdb.connect()
# The Modulus 11 check digit of ten ASCII digits, or NULL when none fits (sum mod 11 = 1).
con.sql(
    "CREATE MACRO mod11_check(s) AS (CASE (11 - ("
    + " + ".join(f"(ascii(s[{i + 1}]) - 48) * {10 - i}" for i in range(9))
    + ") % 11) WHEN 11 THEN 0 WHEN 10 THEN NULL ELSE 11 - ("
    + " + ".join(f"(ascii(s[{i + 1}]) - 48) * {10 - i}" for i in range(9))
    + ") % 11 END)"
)
con.sql(
    "CREATE MACRO is_valid(s) AS (regexp_full_match(s, '[0-9]{10}') "
    "AND mod11_check(s) = ascii(s[10]) - 48)"
)
con.sql(
    f"""CREATE TEMP TABLE lines AS
    SELECT n, coalesce(is_valid(trim(n)), false) AS valid
    FROM read_csv('{src}', header = false, delim = ',', quote = '', escape = '',
                  auto_detect = false, columns = {{'n': 'VARCHAR', 'x': 'VARCHAR'}},
                  null_padding = true)"""
)
con.sql(
    f"""COPY (SELECT DISTINCT trim(n) || ',' AS line FROM lines WHERE valid ORDER BY line)
    TO '{out_dat}' (HEADER false, QUOTE '', DELIMITER '|')"""
)
con.sql(
    f"""COPY (SELECT n AS value FROM lines WHERE NOT valid)
    TO '{out_invalid}' (HEADER true)"""
)
# DuckDB 2 relations have no fetchone(): the one row from fetchall().
((lines, valid, unique),) = con.sql(
    "SELECT count(*), count(*) FILTER (valid), count(DISTINCT n) FILTER (valid) FROM lines"
).fetchall()
print(f"lines {lines} valid {valid} unique {unique} invalid {lines - valid}")
