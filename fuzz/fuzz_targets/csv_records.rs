//! Fuzzes the CSV record reader (`processor::csv::scan_record`) against a naive byte-by-byte
//! RFC 4180 reader written here: the first byte picks the delimiter and the wanted column, the
//! rest is the data. For every record the two must agree on where it ends, how many line breaks
//! it covers, the wanted field, text after a closing quote and an unterminated quote. And the
//! property the parallel engine rests on: scanned without the end of the input (`at_eof`
//! false), any prefix of the data either leaves the record open or ends it exactly where the
//! whole data does. And the fast reader (per-chunk masks) agrees with the exact one it falls back
//! on, record by record and with one cursor kept across records as a block walk keeps it; so
//! does the fast record loop (`Records::run`, through `run_all`) on every record it takes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use processor::csv::{run_all, scan_all, scan_exact, scan_record, End};

struct Naive {
    end: usize,
    breaks: u32,
    field: Option<Vec<u8>>,
    bad: bool,
    unterminated: bool,
}

/// One record from `start`: a quote opens a field only at its start; `""` inside quotes is a
/// quote; LF, CRLF or CR outside quotes ends the record.
fn naive(data: &[u8], start: usize, want: usize, delim: u8) -> Naive {
    #[derive(PartialEq, Clone, Copy)]
    enum S {
        Start,
        Plain,
        Quoted,
        QuoteInQuoted,
    }
    let (mut i, mut s, mut index, mut breaks, mut bad) = (start, S::Start, 0, 0, false);
    let mut cur = Vec::new();
    let mut field = None;
    let mut ended = false;
    while i < data.len() {
        let c = data[i];
        i += 1;
        if c == b'\n' || c == b'\r' {
            if c == b'\r' && data.get(i) == Some(&b'\n') {
                i += 1;
                if s == S::Quoted {
                    cur.extend_from_slice(b"\r\n");
                }
            } else if s == S::Quoted {
                cur.push(c);
            }
            breaks += 1;
            if s != S::Quoted {
                ended = true;
                break;
            }
            continue;
        }
        match s {
            S::Start if c == b'"' => s = S::Quoted,
            S::Start | S::Plain | S::QuoteInQuoted if c == delim => {
                if index == want {
                    field = Some(std::mem::take(&mut cur));
                }
                cur.clear();
                index += 1;
                s = S::Start;
            }
            S::Start | S::Plain => {
                cur.push(c);
                s = S::Plain;
            }
            S::Quoted if c == b'"' => s = S::QuoteInQuoted,
            S::Quoted => cur.push(c),
            S::QuoteInQuoted if c == b'"' => {
                cur.extend_from_slice(b"\"\"");
                s = S::Quoted;
            }
            S::QuoteInQuoted => {
                bad = true;
                cur.push(c);
                s = S::Plain;
            }
        }
    }
    if index == want && field.is_none() {
        field = Some(cur);
    }
    Naive {
        end: i,
        breaks,
        field,
        bad,
        unterminated: !ended && s == S::Quoted,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let delim = [b',', b'\t', b';', b'|'][usize::from(pick & 3)];
    let want = usize::from(pick >> 2 & 7);
    for at_eof in [true, false] {
        let all = scan_all(data, want, delim, at_eof);
        let mut pos = 0;
        for s in all {
            assert_eq!(s, scan_exact(data, pos, want, delim, at_eof), "record at {pos}");
            pos = s.end;
        }
    }
    // The fast record loop: every record it takes is the exact reader's, well-formed, with the
    // same end and field, and the line breaks inside quotes add up.
    for at_eof in [true, false] {
        let (all, quoted) = run_all(data, want, delim, at_eof);
        let (mut pos, mut exact_quoted) = (0, 0);
        for (start, end, field, fast) in all {
            assert_eq!(start, pos, "records out of order");
            let s = scan_exact(data, start, want, delim, at_eof);
            assert_eq!((end, field), (s.end, s.field), "record at {start}");
            if fast {
                assert!(s.how == End::Complete && !s.bad_quoting, "fast record at {start}");
                exact_quoted += u64::from(s.breaks) - 1;
            }
            pos = end;
        }
        assert_eq!(quoted, exact_quoted, "line breaks inside quotes");
    }
    let mut start = 0;
    while start < data.len() {
        let got = scan_record(data, start, want, delim, true);
        assert_eq!(got, scan_exact(data, start, want, delim, true), "fast and exact");
        let n = naive(data, start, want, delim);
        assert_eq!(got.end, n.end, "end of the record at {start}");
        assert_eq!(got.breaks, n.breaks, "line breaks");
        if !n.unterminated {
            assert_eq!(got.bad_quoting, n.bad, "bad quoting");
            if !n.bad {
                // The field is cut out the same (the field of a broken record is not used).
                let field = got.field.map(|(a, b)| data[a..b].to_vec());
                assert_eq!(field, n.field, "field {want}");
            }
        }
        assert_eq!(
            got.how == (End::Open { quoted: true }),
            n.unterminated,
            "unterminated"
        );
        // Any prefix: open, or the same end.
        for cut in [start + 1, (start + got.end) / 2, got.end.saturating_sub(1), got.end] {
            if cut <= start || cut > data.len() {
                continue;
            }
            let part = scan_record(&data[..cut], start, want, delim, false);
            if part.how == End::Complete {
                assert_eq!(part.end, got.end, "a prefix ended the record elsewhere");
                assert_eq!(part.breaks, got.breaks);
            }
        }
        assert!(got.end > start);
        start = got.end;
    }
});
