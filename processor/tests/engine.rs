//! The engine against a naive oracle (strings and a HashSet), on random inputs with malformed
//! lines, mixed line endings, byte-order marks, missing final newlines and lines that straddle
//! block boundaries; at 1 and 3 threads, through the memory map and through plain reads.
//! And a property test that filter after reconcile keeps exactly the rows of patients who did
//! not opt out (the `ndop` binary's own tests are in `ndop/tests`).

use processor::csv::Column;
use processor::dat::{DatOptions, LineEnding};
use processor::filter::filter;
use processor::nhs::Rules;
use processor::pos::PosEnv;
use processor::prepare::{prepare, PrepareOptions};
use processor::reconcile::reconcile;
use processor::scan::{Format, ScanOptions};
use processor::validate::validate;
use processor::IoMode;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------- the oracle

const MAX_LINE: usize = 40;

fn mod11_ok(d: &str) -> Result<u64, &'static str> {
    let digits: Vec<u32> = d.chars().map(|c| c.to_digit(10).unwrap()).collect();
    let sum: u32 = (0..9).map(|i| digits[i] * (10 - i as u32)).sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        10 => return Err("no_check_digit_possible"),
        c => c,
    };
    if check != digits[9] {
        return Err("check_digit_mismatch");
    }
    Ok(d.parse().unwrap())
}

enum Outcome {
    Blank,
    Valid(u64, bool),
    Invalid(&'static str),
}

fn naive_field(field: &str, rules: Rules) -> Outcome {
    let t = field.trim_matches(|c| c == ' ' || c == '\t');
    if t.is_empty() {
        return Outcome::Blank;
    }
    let digits: String = if rules.strict {
        field.to_string()
    } else {
        let b = t.as_bytes();
        if b.len() == 12 && (b[3] == b' ' || b[3] == b'-') && b[7] == b[3] {
            format!("{}{}{}", &t[..3], &t[4..7], &t[8..])
        } else {
            t.to_string()
        }
    };
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return Outcome::Invalid("non_digit");
    }
    if digits.len() != 10 {
        return Outcome::Invalid("wrong_length");
    }
    match mod11_ok(&digits) {
        Err(r) => Outcome::Invalid(r),
        Ok(n) => {
            let rep = digits.chars().all(|c| c == digits.chars().next().unwrap());
            if rep && rules.reject_placeholders {
                Outcome::Invalid("placeholder")
            } else {
                Outcome::Valid(n, digits != field)
            }
        }
    }
}

/// One CSV record as a byte-by-byte state machine reads it (Python's `csv` module, not strict).
#[derive(Debug, Clone)]
struct NaiveRecord {
    /// The raw bytes, line ending included.
    raw: Vec<u8>,
    /// 1-based physical line where it starts.
    line: u64,
    /// Fields; a quoted field's content keeps its doubled quotes (as the engine reports it).
    fields: Vec<Vec<u8>>,
    /// Text after a closing quote.
    bad: bool,
    /// A quote still open at the end of the input.
    unterminated: bool,
}

/// Splits `data` into CSV records: a record ends at LF, CRLF or CR outside quotes; a field
/// starting with `"` is quoted, and inside it anything but `"` is data and `""` is a quote.
fn naive_records(data: &[u8], delim: u8, first_line: u64) -> Vec<NaiveRecord> {
    #[derive(PartialEq)]
    enum S {
        StartField,
        InField,
        InQuoted,
        QuoteInQuoted,
    }
    let mut out = Vec::new();
    let mut line = first_line;
    let mut i = 0;
    while i < data.len() {
        let (start, start_line) = (i, line);
        let mut fields = Vec::new();
        let mut cur = Vec::new();
        let mut bad = false;
        let mut state = S::StartField;
        let mut ended = false;
        while i < data.len() {
            let c = data[i];
            i += 1;
            let brk = c == b'\n' || c == b'\r';
            if brk {
                if c == b'\r' && data.get(i) == Some(&b'\n') {
                    i += 1;
                    if state == S::InQuoted {
                        cur.extend_from_slice(b"\r\n");
                    }
                } else if state == S::InQuoted {
                    cur.push(c);
                }
                line += 1;
                if state != S::InQuoted {
                    ended = true;
                    break;
                }
                continue;
            }
            match state {
                S::StartField if c == b'"' => state = S::InQuoted,
                S::StartField | S::InField if c == delim => {
                    fields.push(std::mem::take(&mut cur));
                    state = S::StartField;
                }
                S::StartField | S::InField => {
                    cur.push(c);
                    state = S::InField;
                }
                S::InQuoted if c == b'"' => state = S::QuoteInQuoted,
                S::InQuoted => cur.push(c),
                S::QuoteInQuoted if c == b'"' => {
                    cur.extend_from_slice(b"\"\"");
                    state = S::InQuoted;
                }
                S::QuoteInQuoted if c == delim => {
                    fields.push(std::mem::take(&mut cur));
                    state = S::StartField;
                }
                S::QuoteInQuoted => {
                    bad = true;
                    cur.push(c);
                    state = S::InField;
                }
            }
        }
        let unterminated = !ended && state == S::InQuoted;
        fields.push(cur);
        out.push(NaiveRecord {
            raw: data[start..i].to_vec(),
            line: start_line,
            fields,
            bad,
            unterminated,
        });
    }
    out
}

/// What the engine should make of one CSV record with the number in field `col`.
fn naive_record_outcome(r: &NaiveRecord, col: usize, rules: Rules) -> Outcome {
    if r.unterminated {
        return Outcome::Invalid("unterminated_quote");
    }
    if r.bad {
        return Outcome::Invalid("bad_quoting");
    }
    let text = r.raw.strip_suffix(b"\n").unwrap_or(&r.raw);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let blank = text.iter().all(|&b| b == b' ' || b == b'\t');
    match r.fields.get(col) {
        None if blank => Outcome::Blank,
        None => Outcome::Invalid("missing_field"),
        Some(f) => match naive_field(&String::from_utf8_lossy(f), rules) {
            Outcome::Blank if blank => Outcome::Blank,
            Outcome::Blank => Outcome::Invalid("missing_field"),
            o => o,
        },
    }
}

#[derive(Debug, Default, PartialEq)]
struct Expect {
    lines: u64,
    valid: u64,
    duplicates: u64,
    blank: u64,
    normalised: u64,
    by_reason: BTreeMap<String, u64>,
    /// (file, record, line, reason)
    bad: Vec<(String, u64, u64, String)>,
    unique: Vec<u64>,
}

fn oracle(files: &[(PathBuf, Vec<u8>)], col: Option<usize>, rules: Rules) -> Expect {
    let mut e = Expect::default();
    let mut seen = HashSet::new();
    for (path, bytes) in files {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        // (record number, line, outcome)
        let outcomes: Vec<(u64, u64, Outcome)> = match col {
            None => {
                let text = String::from_utf8(bytes.to_vec()).unwrap();
                let mut lines: Vec<&str> = text.split('\n').collect();
                if lines.last() == Some(&"") {
                    lines.pop();
                }
                lines
                    .iter()
                    .enumerate()
                    .map(|(i, raw)| {
                        let line = raw.strip_suffix('\r').unwrap_or(raw);
                        let o = if line.len() > MAX_LINE {
                            Outcome::Invalid("line_too_long")
                        } else {
                            naive_field(line.strip_suffix(',').unwrap_or(line), rules)
                        };
                        (i as u64 + 1, i as u64 + 1, o)
                    })
                    .collect()
            }
            Some(c) => naive_records(bytes, b',', 1)
                .iter()
                .skip(1) // the header
                .enumerate()
                .map(|(i, r)| (i as u64 + 1, r.line, naive_record_outcome(r, c, rules)))
                .collect(),
        };
        for (record, line, outcome) in outcomes {
            e.lines += 1;
            match outcome {
                Outcome::Blank => e.blank += 1,
                Outcome::Valid(n, normalised) => {
                    e.valid += 1;
                    e.normalised += normalised as u64;
                    if !seen.insert(n) {
                        e.duplicates += 1;
                    }
                }
                Outcome::Invalid(r) => {
                    *e.by_reason.entry(r.to_string()).or_default() += 1;
                    e.bad
                        .push((path.display().to_string(), record, line, r.to_string()));
                }
            }
        }
    }
    e.unique = seen.into_iter().collect();
    e.unique.sort();
    e
}

// ---------------------------------------------------------------- the engine under test

fn engine(
    paths: &[PathBuf],
    col: Option<usize>,
    rules: Rules,
    threads: usize,
    io: IoMode,
    block_size: usize,
    dir: &Path,
) -> Expect {
    let opts = ScanOptions {
        format: match col {
            Some(c) => Format::Csv(Column::Position(c + 1)),
            None => Format::Lines,
        },
        rules,
        threads,
        io,
        block_size,
        max_line: MAX_LINE,
        ..ScanOptions::default()
    };
    let report = dir.join(format!("invalid-{threads}-{io:?}-{block_size}.csv"));
    let v = validate(paths, &opts, Some(&report), &mut |_| {}).unwrap();
    assert!(v.counts.check(), "buckets must add up: {:?}", v.counts);
    let mut unique = Vec::new();
    v.set.for_each(|n| unique.push(n));
    let report = std::fs::read(&report).unwrap();
    let bad = naive_records(&report, b',', 1)
        .iter()
        .skip(1)
        .map(|r| {
            let f = |i: usize| String::from_utf8(r.fields[i].clone()).unwrap();
            (f(0), f(1).parse().unwrap(), f(2).parse().unwrap(), f(3))
        })
        .collect();
    Expect {
        lines: v.counts.lines,
        valid: v.counts.valid,
        duplicates: v.counts.duplicates,
        blank: v.counts.blank,
        normalised: v.counts.normalised,
        by_reason: v
            .counts
            .invalid_by_reason
            .iter()
            .chain(&v.counts.unparseable_by_reason)
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        bad,
        unique,
    }
}

// ---------------------------------------------------------------- generators

const POOL: &[&str] = &[
    "9434765919",
    "9694116414",
    "9694116538",
    "9990569479",
    "9876543210",
    "9991000100",
    "0000000000",
    "9999999999",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(POOL).prop_map(|s| s.to_string()),
        1 => prop::sample::select(POOL).prop_map(|s| format!("{} {} {}", &s[..3], &s[3..6], &s[6..])),
        1 => prop::sample::select(POOL).prop_map(|s| format!("{}-{}-{}", &s[..3], &s[3..6], &s[6..])),
        1 => prop::sample::select(POOL).prop_map(|s| format!("  {s}\t")),
        1 => prop::sample::select(POOL).prop_map(|s| s[1..].to_string()),
        1 => Just("9434765918".to_string()),
        1 => Just("9991234563".to_string()),
        1 => "[0-9A-Z ,-]{0,14}",
        1 => Just(String::new()),
        1 => Just("          ".to_string()),
        1 => "[0-9]{41,60}",
    ]
}

fn lines_file() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec((value(), any::<bool>(), any::<bool>()), 0..60),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(rows, bom, last_eol)| {
            let mut out = Vec::new();
            if bom {
                out.extend_from_slice(b"\xEF\xBB\xBF");
            }
            let n = rows.len();
            for (i, (v, comma, crlf)) in rows.into_iter().enumerate() {
                out.extend_from_slice(v.as_bytes());
                if comma {
                    out.push(b',');
                }
                if i + 1 < n || last_eol {
                    out.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                }
            }
            out
        })
}

/// Free text for other columns: delimiters, quotes and every kind of line break.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "a",
            "b c",
            ",",
            "\"\"",
            "\n",
            "\r\n",
            "\r",
            "9434765919",
            " ",
        ]),
        0..6,
    )
    .prop_map(|parts| parts.concat())
}

fn eol() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["\n", "\r\n", "\r"])
}

fn csv_file() -> impl Strategy<Value = Vec<u8>> {
    let row = (value(), 0u8..10, text(), eol()).prop_map(|(v, shape, t, eol)| {
        let body = match shape {
            0 => format!("1,{v},x"),
            1 => format!("\"a, b\",\"{v}\",\"y\"\"z\""),
            2 => "only-one-field".to_string(),
            3 => format!("2,\"{v}"),
            4 => format!("3,\"{v}\"junk,z"),
            5 => format!("\"{t}\",{v},\"{t}\""),
            6 => format!("5,\"{v}\",\"{t}\"{t}"),
            7 => format!("6,{v},7\" wound"),
            8 => String::new(),
            _ => format!("4,{v}"),
        };
        format!("{body}{eol}")
    });
    (prop::collection::vec(row, 0..50), eol(), any::<bool>()).prop_map(|(rows, eol, bom)| {
        let mut s = String::new();
        if bom {
            s.push('\u{feff}');
        }
        s.push_str("id,nhs_number,other");
        s.push_str(eol);
        for r in rows {
            s.push_str(&r);
        }
        s.into_bytes()
    })
}

fn write_files(dir: &Path, files: &[Vec<u8>]) -> Vec<(PathBuf, Vec<u8>)> {
    files
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let p = dir.join(format!("in{i}.txt"));
            std::fs::write(&p, b).unwrap();
            (p, b.clone())
        })
        .collect()
}

fn check_all_paths(files: Vec<Vec<u8>>, col: Option<usize>, rules: Rules, block: usize) {
    let dir = tempfile::tempdir().unwrap();
    let written = write_files(dir.path(), &files);
    let paths: Vec<PathBuf> = written.iter().map(|(p, _)| p.clone()).collect();
    let want = oracle(&written, col, rules);
    for threads in [1, 3] {
        for io in [IoMode::Mmap, IoMode::Read] {
            let got = engine(&paths, col, rules, threads, io, block, dir.path());
            assert_eq!(got, want, "threads {threads}, {io:?}, block {block}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn lines_match_the_oracle(
        files in prop::collection::vec(lines_file(), 1..4),
        block in (MAX_LINE + 3)..200,
        strict in any::<bool>(),
        reject in any::<bool>(),
    ) {
        let rules = Rules { strict, reject_placeholders: reject };
        check_all_paths(files, None, rules, block);
    }

    #[test]
    fn csv_matches_the_oracle(
        files in prop::collection::vec(csv_file(), 1..3),
        block in (MAX_LINE + 3)..200,
    ) {
        check_all_paths(files, Some(1), Rules::default(), block);
    }
}

#[test]
fn a_line_longer_than_a_block_is_reported_the_same_on_both_paths() {
    let mut data = b"9434765919\n".to_vec();
    data.extend(std::iter::repeat_n(b'7', 1000));
    data.extend_from_slice(b"\r\n9694116414,\n");
    data.extend(std::iter::repeat_n(b'x', 700));
    check_all_paths(vec![data], None, Rules::default(), MAX_LINE + 3);
}

// ---------------------------------------------------------------- prepare's output

#[test]
fn prepare_output_is_identical_whatever_the_threads_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = Vec::new();
    for i in 0..20_000u64 {
        let n = POOL[(i * 7 % 5) as usize];
        data.extend_from_slice(n.as_bytes());
        data.extend_from_slice(if i % 3 == 0 { b",\r\n" } else { b"\n" });
    }
    let input = dir.path().join("in.dat");
    std::fs::write(&input, &data).unwrap();
    let mut outputs = Vec::new();
    for (k, (threads, io)) in [(1, IoMode::Mmap), (2, IoMode::Read), (3, IoMode::Mmap)]
        .into_iter()
        .enumerate()
    {
        let out = dir.path().join(format!("out{k}"));
        let opts = PrepareOptions {
            scan: ScanOptions {
                threads,
                io,
                block_size: 4096,
                max_line: 100,
                ..ScanOptions::default()
            },
            dat: DatOptions {
                dir: out.clone(),
                mailbox: "X26ABC1".into(),
                date: chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
                seq: 1,
                env: PosEnv::Int,
                tag: None,
                line_ending: LineEnding::Crlf,
                max_bytes: 20_000_000_000,
                max_records: Some(2),
            },
        };
        let s = prepare(std::slice::from_ref(&input), &opts, &mut |_| {}).unwrap();
        assert_eq!(s.counts.unique, 5);
        assert_eq!(s.files.len(), 3);
        let mut all = Vec::new();
        for f in &s.files {
            all.push(std::fs::read(out.join(&f.name)).unwrap());
        }
        outputs.push(all);
    }
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[0], outputs[2]);
    let joined: Vec<u8> = outputs[0].concat();
    assert_eq!(
        String::from_utf8(joined).unwrap(),
        "9434765919,\r\n9694116414,\r\n9694116538,\r\n9876543210,\r\n9990569479,\r\n"
    );
}

// ---------------------------------------------------------------- filter after reconcile

/// A random extract: patients with several rows each, some invalid rows.
fn extract_strategy() -> impl Strategy<Value = (Vec<u32>, Vec<(usize, bool)>, Vec<bool>)> {
    (
        prop::collection::vec(0u32..1_000_000, 1..40),
        prop::collection::vec((0usize..1000, any::<bool>()), 0..150),
        prop::collection::vec(any::<bool>(), 40),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn filter_after_reconcile_keeps_exactly_the_patients_not_opted_out(
        (prefixes, picks, opt) in extract_strategy()
    ) {
        let dir = tempfile::tempdir().unwrap();
        let patients: Vec<u64> = prefixes
            .iter()
            .filter_map(|&p| {
                let prefix = 999_000_000 + p;
                processor::nhs::check_digit_of_prefix(prefix).map(|c| prefix as u64 * 10 + c as u64)
            })
            .collect();
        prop_assume!(!patients.is_empty());
        let mut csv = String::from("id,nhs_number,x\n");
        let mut rows = Vec::new();
        for (i, (pick, bad)) in picks.iter().enumerate() {
            let n = patients[pick % patients.len()];
            let field = if *bad && i % 3 == 0 { format!("{}", n + 1) } else { n.to_string() };
            rows.push((field.clone(), format!("{i},{field},\"v,{i}\"")));
            csv += &format!("{i},{field},\"v,{i}\"\r\n");
        }
        let extract = dir.path().join("x.csv");
        std::fs::write(&extract, &csv).unwrap();
        // The request: every distinct valid number; the POS result: those not opted out.
        let opted: HashSet<u64> = patients
            .iter()
            .enumerate()
            .filter(|(i, _)| opt[*i % opt.len()])
            .map(|(_, n)| *n)
            .collect();
        let mut request: Vec<u64> = patients.clone();
        request.sort();
        request.dedup();
        let req = dir.path().join("req.dat");
        let resp = dir.path().join("resp.dat");
        std::fs::write(&req, request.iter().map(|n| format!("{n},\r\n")).collect::<String>()).unwrap();
        std::fs::write(
            &resp,
            request.iter().filter(|n| !opted.contains(n)).map(|n| format!("{n},\r\n")).collect::<String>(),
        )
        .unwrap();
        let opts = ScanOptions { block_size: 512, max_line: 100, ..ScanOptions::default() };
        let r = reconcile(&[req], &[resp], &opts, &dir.path().join("rec"), &mut |_| {}).unwrap();
        prop_assert_eq!(r.summary.opted_out, opted.len() as u64);
        let out = dir.path().join("kept.csv");
        let csv_opts = ScanOptions { format: Format::Csv(Column::Position(2)), ..opts };
        let s = filter(&extract, &r.returned, Some(&r.requested), &csv_opts, &out, &mut |_| {}).unwrap();
        let expected: String = std::iter::once("id,nhs_number,x\n".to_string())
            .chain(rows.iter().filter_map(|(field, row)| {
                let n: u64 = field.parse().ok()?;
                let sent = processor::nhs::is_valid(field.as_bytes()) && request.binary_search(&n).is_ok();
                (sent && !opted.contains(&n))
                    .then(|| format!("{row}\r\n"))
            }))
            .collect();
        prop_assert_eq!(std::fs::read_to_string(&out).unwrap(), expected);
        prop_assert!(s.counts.check());
    }
}

// ---------------------------------------------------------------- filter fails closed

/// Filters `file` (CSV, number in the second column) keeping the numbers of `POOL` picked by
/// `mask`, at 1 and 3 threads, mapped and read, and checks the output against the oracle: the
/// BOM, the header, then exactly the raw bytes of the records whose number is valid and
/// allowed, in order. And the safety invariant on its own: read back with the oracle, every
/// record of the output holds a valid, allowed number.
fn check_filter(file: &[u8], mask: u8, block: usize) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("extract.csv");
    std::fs::write(&input, file).unwrap();
    let allowed = processor::seen::NumberSet::new();
    let mut allowed_numbers = HashSet::new();
    for (i, n) in POOL.iter().enumerate() {
        if mask & (1 << i) != 0 {
            let n: u64 = n.parse().unwrap();
            allowed.insert(n);
            allowed_numbers.insert(n);
        }
    }
    let bom = file.starts_with(b"\xEF\xBB\xBF");
    let body = if bom { &file[3..] } else { file };
    let records = naive_records(body, b',', 1);
    let mut want = Vec::new();
    if bom {
        want.extend_from_slice(b"\xEF\xBB\xBF");
    }
    if let Some(header) = records.first() {
        want.extend_from_slice(&header.raw);
    }
    let mut kept = 0u64;
    for r in records.iter().skip(1) {
        if let Outcome::Valid(n, _) = naive_record_outcome(r, 1, Rules::default()) {
            if allowed_numbers.contains(&n) {
                want.extend_from_slice(&r.raw);
                kept += 1;
            }
        }
    }
    for threads in [1, 3] {
        for io in [IoMode::Mmap, IoMode::Read] {
            let out = dir.path().join(format!("out-{threads}-{io:?}.csv"));
            let opts = ScanOptions {
                format: Format::Csv(Column::Name("nhs_number".into())),
                threads,
                io,
                block_size: block,
                max_line: MAX_LINE,
                ..ScanOptions::default()
            };
            let s = processor::filter::filter(&input, &allowed, None, &opts, &out, &mut |_| {})
                .unwrap();
            assert!(s.counts.check(), "{:?}", s.counts);
            assert_eq!(s.counts.rows, records.len().saturating_sub(1) as u64);
            assert_eq!(s.counts.kept, kept);
            let got = std::fs::read(&out).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "threads {threads}, {io:?}, block {block}"
            );
            let got_body = if bom { &got[3..] } else { &got[..] };
            for r in naive_records(got_body, b',', 1).iter().skip(1) {
                match naive_record_outcome(r, 1, Rules::default()) {
                    Outcome::Valid(n, _) => assert!(allowed_numbers.contains(&n), "{r:?}"),
                    _ => panic!("a record without a valid number was kept: {r:?}"),
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn filter_keeps_only_allowed_records(
        file in csv_file(),
        mask in any::<u8>(),
        block in (MAX_LINE + 3)..200,
    ) {
        check_filter(&file, mask, block);
    }
}

#[test]
fn the_issue_example_keeps_no_text_of_an_opted_out_patient() {
    // 9434765919 is allowed; 9694116414 opted out, and its notes hold a line that looks like
    // an allowed record.
    let file =
        b"id,nhs_number,notes\n1,9434765919,ok\n2,9694116414,\"linked:\n3,9434765919, secret\"\n";
    for block in [MAX_LINE + 3, 50, 64, 1 << 20] {
        check_filter(file, 0b1, block);
    }
}
