#!/usr/bin/env python3
"""Writes the CSV corpus of testdata/csv/ byte for byte (issue 8).

Run once from the repository root: `python3 tools/make_csv_corpus.py`. The files are committed;
this script exists so that the CRs, BOMs, UTF-16 and gzip bytes are reproducible and reviewable.
Every NHS number is from the 999 test range with a correct Modulus 11 check digit, or a published
test patient (testdata/test-patients.csv); the deliberately invalid ones are marked below.

The allowed set the tests use (processor/tests/extracts.rs, ALLOWED) is 9434765919 and
9990000018, 9990000026, 9990000034, 9990000042, 9990000050. The opted-out ones are 9694116414,
9990000069, 9990000077, 9990000085, 9990000093.
"""

import gzip
import os
import sys

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testdata", "csv")

# Valid, allowed.
A1, A2, A3, A4, A5, A6 = (
    "9434765919",
    "9990000018",
    "9990000026",
    "9990000034",
    "9990000042",
    "9990000050",
)
# Valid, opted out (not in the allowed set).
O1, O2, O3, O4, O5 = "9694116414", "9990000069", "9990000077", "9990000085", "9990000093"
# Invalid on purpose.
BAD_CHECK = "9990000019"  # check_digit_mismatch
NO_CHECK = "9990000003"  # no_check_digit_possible
SHORT = "999000001"  # wrong_length


def mod11_ok(s):
    if len(s) != 10 or not s.isdigit():
        return False
    t = sum(int(s[i]) * (10 - i) for i in range(9))
    c = 11 - t % 11
    c = 0 if c == 11 else c
    return c != 10 and c == int(s[9])


for n in (A1, A2, A3, A4, A5, A6, O1, O2, O3, O4, O5):
    assert mod11_ok(n), n
for n in (BAD_CHECK, NO_CHECK, SHORT):
    assert not mod11_ok(n), n

FILES = {}


def put(name, data):
    assert isinstance(data, bytes)
    FILES[name] = data


def lines(rows, end):
    return "".join(r + end for r in rows).encode("utf-8")


# Excel "CSV UTF-8": BOM, CRLF, embedded commas and doubled quotes.
put(
    "excel_bom_crlf.csv",
    b"\xef\xbb\xbf"
    + lines(
        [
            "id,nhs_number,name,notes",
            f'1,{A1},"Smith, John","said ""hello"", left"',
            f'2,{O1},"Jones, Ann",plain',
            f'3,{A2},"O""Brien, Pat","a ""quoted"" word"',
            f"4,{BAD_CHECK},Bad Check,x",
            f'5,"{A3}","Quoted, Number",""',
            f'6,{O2},"Lee, ""Opted"" Out","x,y,z"',
            f"7,{NO_CHECK},No Check,y",
            f'8,{A4},"",","',
        ],
        "\r\n",
    ),
)

# Line breaks inside quoted fields: LF, CRLF and lone CR; the example first.
put(
    "quoted_newlines.csv",
    (
        "nhs_number,notes\n"
        f"{A1},ok\n"
        f'{O1},"linked:\n{A1}, secret"\n'
        f'{A2},"two\nlines"\n'
        f'{O2},"crlf\r\n{A2},inside\r\nquotes"\n'
        f'{A3},"lone\rcr\rinside"\n'
        f'{O3},"\n{A3},""starts with a break"""\n'
        f'"{A4}","number quoted, then\n\n\nblank lines inside"\n'
        f'{O4},"ends with a break\n"\n'
        f"{A5},last\n"
    ).encode(),
)

# bcp / sqlcmd: no header, CRLF; the first record is an opted-out patient.
put(
    "headerless.csv",
    lines(
        [
            f"{O1},2024-01-01,C00",
            f"{A1},2024-01-02,C01",
            f"{O2},2024-01-03,C02",
            f"{A2},2024-01-04,C03",
            f"{BAD_CHECK},2024-01-05,C04",
            f'{A3},2024-01-06,"C05, C06"',
        ],
        "\r\n",
    ),
)

# Old Mac: lone CR line endings.
put(
    "cr_only.csv",
    lines(
        [
            "nhs_number,name,notes",
            f"{O1},Opted Out,x",
            f"{A1},Kept,y",
            f'{O2},"Quoted, comma",z',
            f'{A2},"cr\rinside quotes",w',
            f"{SHORT},Short,v",
        ],
        "\r",
    ),
)

# A blank first line before the header.
put(
    "blank_first_line.csv",
    lines(
        ["", "id,nhs_number,name", f"1,{A1},Kept", f"2,{O1},Dropped", f"3,{A2},Kept"], "\r\n"
    ),
)

# A title row (one cell) before the header.
put(
    "title_row.csv",
    lines(
        [
            "Patient extract 2024-01-01",
            "id,nhs_number,name",
            f"1,{A1},Kept",
            f"2,{O1},Dropped",
            f"3,{A2},Kept",
        ],
        "\r\n",
    ),
)

# SELECT a.*, b.*: the same column names twice (nhs_number at positions 2 and 5).
put(
    "duplicate_columns.csv",
    lines(
        [
            "id,nhs_number,name,id,nhs_number,event",
            f"1,{O1},A,1,{A1},E1",
            f"2,{A1},B,2,{O1},E2",
            f"3,{A2},C,3,{A2},E3",
        ],
        "\n",
    ),
)

# A 200 KiB quoted field (commas, quotes and line breaks inside) and a 100 KiB unquoted one.
chunk = 'Letter text, with commas, ""quotes"" and\r\nline breaks. '
big = chunk * (200 * 1024 // len(chunk) + 1)  # whole chunks: no doubled quote cut in two
assert len(big) > 200 * 1024
unq = ("abcdefghij" * (100 * 1024 // 10 + 1))[: 100 * 1024]
put(
    "big_field.csv",
    (
        "nhs_number,letter,blob\r\n"
        f"{A1},short,x\r\n"
        f'{A2},"{big}",y\r\n'
        f"{O1},\"{chunk * 20}\",z\r\n"
        f"{A3},plain,{unq}\r\n"
        f"{O2},plain,{unq}\r\n"
        f"{A4},end,end\r\n"
    ).encode(),
)

# Tab-separated (.tsv: tab chosen automatically); a quoted field holds a tab and a line break.
put(
    "extract.tsv",
    lines(
        [
            "nhs_number\tname\tnotes",
            f"{A1}\tSmith, John\tcomma is data",
            f'{O1}\t"Tab\tinside"\tx',
            f'{A2}\t"Break\ninside"\ty',
            f"{BAD_CHECK}\tBad\tz",
            f"{A3}\tKept\t",
        ],
        "\r\n",
    ),
)

# European Excel: semicolons, decimal commas.
put(
    "semicolon.csv",
    lines(
        [
            "id;nhs_number;weight",
            f"1;{A1};70,5",
            f"2;{O1};80,25",
            f'3;{A2};"60;5"',
            f"4;{NO_CHECK};1,0",
        ],
        "\r\n",
    ),
)

put(
    "pipe.csv",
    lines(
        [
            "id|nhs_number|name",
            f"1|{A1}|Smith, John",
            f"2|{O1}|Jones",
            f'3|{A2}|"Pipe | inside"',
            f"4|{SHORT}|Short",
        ],
        "\n",
    ),
)

# Excel "Unicode text": FF FE + UTF-16LE, tab-separated, CRLF.
put(
    "utf16le.csv",
    b"\xff\xfe"
    + "".join(
        r + "\r\n"
        for r in ["nhs_number\tname", f"{A1}\tKept", f"{O1}\tDropped", f"{A2}\tKept"]
    ).encode("utf-16-le"),
)

# A quote still open at the end: the last record runs to EOF and holds an allowed number's line.
put(
    "unterminated_quote.csv",
    (
        "nhs_number,notes\n"
        f"{A1},fine\n"
        f"{O2},fine\n"
        f'{O1},"never closed\n'
        f"{A2},looks like a row\n"
        f"{A3},so does this\n"
    ).encode(),
)

# Text after a closing quote ("ab"c): before, at and after the NHS column.
put(
    "bad_quoting.csv",
    lines(
        [
            "id,nhs_number,notes",
            f'1,{A1},"ok ""fine"""',
            f'2,{A2},"ab"c',
            f'"3"x,{A3},notes',
            f'4,"{A4}"5,notes',
            f'5,{A5},"closed" then text, more',
            f"6,{A6},fine",
            f'7,{O1},"ab"c',
        ],
        "\r\n",
    ),
)

# Ragged rows: fewer and more fields than the header; empty and blank NHS fields; blank lines.
put(
    "ragged.csv",
    lines(
        [
            "id,nhs_number,name",
            f"1,{A1}",
            "2",
            f"3,{A2},C,extra,more",
            f"4,{O1},D,extra",
            "5,,E",
            "",
            "6,   ,F",
            "   ",
            f"7,{A3},G",
            f"8, {A4} ,H",
        ],
        "\n",
    ),
)

# Latin-1 (Windows-1252) bytes in other columns.
put(
    "latin1.csv",
    b"nhs_number,name,town\r\n"
    + f"{A1},Ren\xe9e,Orl\xe9ans\r\n".encode("latin-1")
    + f"{O1},Z\xf6e,\xa3100\r\n".encode("latin-1")
    + f'{A2},"M\xfcller, J",K\xf8benhavn\r\n'.encode("latin-1")
    + f"{A3},\xff\xfe,\x80\x81\r\n".encode("latin-1"),
)

# 200 columns; the NHS number in column 150.
hdr = [f"c{i}" for i in range(1, 201)]
hdr[149] = "nhs_number"


def wide(n, tag):
    row = [f"{tag}{i}" for i in range(1, 201)]
    row[149] = n
    row[10] = f'"{tag}, quoted"'
    return ",".join(row)


put(
    "wide_200_columns.csv",
    lines([",".join(hdr), wide(A1, "a"), wide(O1, "b"), wide(A2, "c"), wide(SHORT, "d")], "\r\n"),
)

# Two exports concatenated: the second header is a record (its NHS field is not a number).
put(
    "repeated_headers.csv",
    lines(
        [
            "id,nhs_number,name",
            f"1,{A1},A",
            f"2,{O1},B",
            "id,nhs_number,name",
            f"3,{A2},C",
            f"4,{O2},D",
        ],
        "\r\n",
    ),
)

# What spreadsheets do to numbers.
put(
    "mangled_numbers.csv",
    lines(
        [
            "id,nhs_number",
            "1,9.43477E+09",
            f"2,'{A1}",
            "3,943 476 5919",
            "4,943-476-5919",
            f"5,{A1}.0",
            f'6," {A2} "',
            "7,9.99E+09",
            f"8,{A3}",
            "9,969 411 6414",
        ],
        "\r\n",
    ),
)

# The first row is data, read with --column 1 and no --no-header.
put(
    "header_is_number.csv",
    lines([f"{O1},x", f"{A1},y", f"{A2},z"], "\n"),
)

# A quote inside an unquoted field is data: 5" wound.
put(
    "stray_quote.csv",
    lines(
        [
            "nhs_number,notes,site",
            f'{A1},5" wound,left leg',
            f'{O1},He said "ok",x',
            f'{A2},12" x 3",y',
            f'{O2},"quoted ""fine""",z',
        ],
        "\n",
    ),
)

# The gzip of quoted_newlines.csv (fixed mtime, so the bytes are reproducible).
put("gzipped.csv.gz", gzip.compress(FILES["quoted_newlines.csv"], compresslevel=9, mtime=0))


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in sorted(FILES.items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(FILES)} files to {os.path.normpath(OUT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
