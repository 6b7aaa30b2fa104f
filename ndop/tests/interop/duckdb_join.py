"""Applies ndop's Parquet exports in DuckDB as docs/CACHE.md shows: a semi-join on the
allow-list (string column), the same with the int64 column, and an anti-join on the derived
opted-out list. Prints JSON: the ids kept by each, and the allow-list file's metadata.

usage: duckdb_join.py EXTRACT.csv ALLOW.parquet ALLOW_INT64.parquet DENY.parquet
"""
import json
import sys

import duckdb

extract, allow, allow_int, deny = sys.argv[1:5]
con = duckdb.connect()
con.execute(
    "CREATE TABLE extract AS SELECT * FROM read_csv(?, header = true, all_varchar = true)",
    [extract],
)
# the rows that may be disclosed: their number is on the allow-list
semi = con.execute(
    "SELECT e.id FROM extract e SEMI JOIN read_parquet(?) a USING (nhs_number) ORDER BY e.id",
    [allow],
).fetchall()
# the same against an int64 column: compare as zero-padded strings
semi_int = con.execute(
    "SELECT e.id FROM extract e SEMI JOIN "
    "(SELECT lpad(CAST(nhs_number AS VARCHAR), 10, '0') AS nhs_number FROM read_parquet(?)) a "
    "USING (nhs_number) ORDER BY e.id",
    [allow_int],
).fetchall()
# a deny-list fails open: rows never checked (and invalid ones) are kept by an anti-join
anti = con.execute(
    "SELECT e.id FROM extract e ANTI JOIN read_parquet(?) d USING (nhs_number) ORDER BY e.id",
    [deny],
).fetchall()
meta = {
    k.decode(): v.decode()
    for k, v in con.execute(
        "SELECT key, value FROM parquet_kv_metadata(?)", [allow]
    ).fetchall()
}
types = con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [allow]).fetchall()
print(
    json.dumps(
        {
            "semi": [r[0] for r in semi],
            "semi_int": [r[0] for r in semi_int],
            "anti": [r[0] for r in anti],
            "metadata": meta,
            "column_type": types[0][1],
        }
    )
)
