#!/usr/bin/env python3
"""Prints the records Python's csv module reads from FILE, as JSON, for processor/tests/extracts.rs.

Usage: tools/csv_oracle.py FILE DELIM [FILE DELIM ...]

DELIM is one character, or `tab`. Each file is read as
`csv.reader(open(FILE, newline=''), delimiter=DELIM)` (non-strict, the default dialect), decoded
as Latin-1 so that every byte is one character and any bytes round-trip; a `.gz` file (or one
that starts with the gzip magic bytes) is decompressed first. The field size limit is lifted.

Output, for one file: a JSON list of records, each a list of fields, each field a string whose
code points are the field's bytes; or {"error": "..."} if Python refuses the file (exit 1).
For several files (one Python start instead of many): a JSON list of those answers, in order.
"""

import csv
import gzip
import io
import json
import sys


def records(path, delim):
    if delim == "tab":
        delim = "\t"
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".gz") or data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    text = io.TextIOWrapper(io.BytesIO(data), encoding="latin-1", newline="")
    try:
        return list(csv.reader(text, delimiter=delim))
    except csv.Error as e:
        return {"error": str(e)}


def main():
    args = sys.argv[1:]
    if not args or len(args) % 2:
        print(__doc__, file=sys.stderr)
        return 2
    csv.field_size_limit(sys.maxsize)  # big_field.csv holds a 200 KiB field
    answers = [records(args[i], args[i + 1]) for i in range(0, len(args), 2)]
    if len(answers) == 1:
        json.dump(answers[0], sys.stdout)
        return 1 if isinstance(answers[0], dict) else 0
    json.dump(answers, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
