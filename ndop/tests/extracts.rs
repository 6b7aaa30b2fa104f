//! Real extracts (issue 8): every CSV an analyst exports is read correctly or refused clearly,
//! and `filter` never lets an opted-out patient's row through.
//!
//! The corpus is `testdata/csv/` (written by `tools/make_csv_corpus.py`; see its README). The
//! expected records come from a naive RFC 4180 reader written here only for tests ([`oracle`]),
//! a char-by-char state machine that mirrors Python's `csv` module (non-strict), and which is
//! itself checked against Python (`tools/csv_oracle.py`). Each case runs `validate`, `prepare`
//! and `filter` on the real `ndop` binary and compares counts, record numbers, start lines and
//! the filtered bytes with what the oracle says; refusals must exit 3 and name the cause; no
//! command may print an NHS number from the corpus on stdout or stderr.
//!
//! The contract is `/work/notes/csv-contract.md` (flags, JSON keys, reasons, report columns).

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

const NDOP: &str = env!("CARGO_BIN_EXE_ndop");
const MAILBOX: &str = "X26ABC1";
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The numbers the POS "returned": rows of these patients may be kept.
const ALLOWED: [&str; 6] = [
    "9434765919",
    "9990000018",
    "9990000026",
    "9990000034",
    "9990000042",
    "9990000050",
];

/// Valid numbers of patients who opted out (not in [`ALLOWED`]).
const OPTED_OUT: [&str; 5] = [
    "9694116414",
    "9990000069",
    "9990000077",
    "9990000085",
    "9990000093",
];

/// Invalid values in the corpus, and forms of its numbers that spreadsheets produce: none may
/// be printed either.
const OTHER_VALUES: [&str; 7] = [
    "9990000019",
    "9990000003",
    "999000001",
    "943 476 5919",
    "943-476-5919",
    "969 411 6414",
    "9.43477E+09",
];

// ================================================================ the oracle

/// One record as the oracle reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    /// The record's bytes in the input, its terminator included.
    raw: Range<usize>,
    /// The record's bytes without its terminator.
    body: Range<usize>,
    /// 1-based physical line where the record starts.
    line: u64,
    /// The fields, unquoted (doubled quotes undone). A blank line has none, as in Python.
    fields: Vec<Vec<u8>>,
    /// Text after a closing quote (`"ab"c`): Python reads it on, ndop calls it `bad_quoting`.
    malformed: bool,
    /// A quote still open at the end of the input.
    unterminated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    StartRecord,
    StartField,
    InField,
    InQuoted,
    QuoteInQuoted,
}

/// Naive RFC 4180 reader, as Python's `csv.reader(open(f, newline=''), delimiter=d)` with the
/// default (non-strict) dialect. A record ends at LF, CRLF or a lone CR outside quotes (the
/// "after CR" state is folded into `end`: a CR followed by LF ends the record after the LF).
/// Physical lines are counted everywhere, inside quotes too.
fn oracle(data: &[u8], delim: u8) -> Vec<Rec> {
    let mut recs = Vec::new();
    let mut i = 0;
    let mut line = 1u64;
    while i < data.len() {
        let (start, start_line) = (i, line);
        let mut fields = Vec::new();
        let mut field = Vec::new();
        let mut malformed = false;
        let mut unterminated = false;
        let mut st = St::StartRecord;
        let body_end;
        loop {
            let Some(&c) = data.get(i) else {
                // End of input: Python saves the open field (and, when not strict, returns
                // the record even inside a quote).
                match st {
                    St::StartRecord => {}
                    St::InQuoted => {
                        unterminated = true;
                        fields.push(std::mem::take(&mut field));
                    }
                    _ => fields.push(std::mem::take(&mut field)),
                }
                body_end = i;
                break;
            };
            let eol = c == b'\n' || c == b'\r';
            // Physical lines: LF, CRLF (counted at the LF) and a lone CR each end one.
            if c == b'\n' || (c == b'\r' && data.get(i + 1) != Some(&b'\n')) {
                line += 1;
            }
            match st {
                St::StartRecord | St::StartField | St::InField | St::QuoteInQuoted if eol => {
                    if st != St::StartRecord {
                        fields.push(std::mem::take(&mut field));
                    }
                    body_end = i;
                    if c == b'\r' && data.get(i + 1) == Some(&b'\n') {
                        // CRLF: one physical line, counted here (the LF is not visited).
                        line += 1;
                        i += 2;
                    } else {
                        i += 1;
                    }
                    break;
                }
                St::StartRecord | St::StartField => {
                    if c == b'"' {
                        st = St::InQuoted;
                    } else if c == delim {
                        fields.push(std::mem::take(&mut field));
                        st = St::StartField;
                    } else {
                        field.push(c);
                        st = St::InField;
                    }
                }
                St::InField => {
                    if c == delim {
                        fields.push(std::mem::take(&mut field));
                        st = St::StartField;
                    } else {
                        field.push(c);
                    }
                }
                St::InQuoted => {
                    if c == b'"' {
                        st = St::QuoteInQuoted;
                    } else {
                        field.push(c);
                    }
                }
                St::QuoteInQuoted => {
                    if c == b'"' {
                        field.push(c);
                        st = St::InQuoted;
                    } else if c == delim {
                        fields.push(std::mem::take(&mut field));
                        st = St::StartField;
                    } else {
                        malformed = true;
                        field.push(c);
                        st = St::InField;
                    }
                }
            }
            i += 1;
        }
        recs.push(Rec {
            raw: start..i,
            body: start..body_end,
            line: start_line,
            fields,
            malformed,
            unterminated,
        });
    }
    recs
}

/// Offset after the first `n` physical lines (LF, CRLF, lone CR), quotes not considered.
fn skip_physical_lines(data: &[u8], n: usize) -> usize {
    let mut i = 0;
    for _ in 0..n {
        while i < data.len() && data[i] != b'\n' && data[i] != b'\r' {
            i += 1;
        }
        if i < data.len() {
            i += if data[i] == b'\r' && data.get(i + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
        }
    }
    i
}

// ================================================================ NHS numbers, as the contract says

fn check_ten(s: &[u8]) -> Result<String, &'static str> {
    if s.len() != 10 {
        return Err("wrong_length");
    }
    if !s.iter().all(u8::is_ascii_digit) {
        return Err("non_digit");
    }
    let sum: u32 = s[..9]
        .iter()
        .enumerate()
        .map(|(i, &d)| (d - b'0') as u32 * (10 - i as u32))
        .sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        10 => return Err("no_check_digit_possible"),
        c => c,
    };
    if check != (s[9] - b'0') as u32 {
        return Err("check_digit_mismatch");
    }
    Ok(String::from_utf8(s.to_vec()).unwrap())
}

/// The NHS-number field: `Ok(None)` blank, `Ok(Some(n))` valid, `Err(reason)` invalid. Lenient
/// by default (surrounding spaces and tabs trimmed, `943 476 5919` and `943-476-5919` read).
fn classify(field: &[u8], strict: bool) -> Result<Option<String>, &'static str> {
    if field.len() == 10 {
        match check_ten(field) {
            Err("non_digit") => {}
            r => return r.map(Some),
        }
    }
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = field
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(field.len());
    let end = field
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |e| e + 1);
    let t = &field[start..end];
    if t.is_empty() {
        return Ok(None);
    }
    if strict {
        return Err(if field.iter().all(u8::is_ascii_digit) {
            "wrong_length"
        } else {
            "non_digit"
        });
    }
    if t.len() == 12 && (t[3] == b' ' || t[3] == b'-') && t[7] == t[3] {
        let ten = [&t[..3], &t[4..7], &t[8..]].concat();
        return check_ten(&ten).map(Some);
    }
    if !t.iter().all(u8::is_ascii_digit) {
        return Err("non_digit");
    }
    check_ten(t).map(Some)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Blank,
    Valid(String),
    Invalid(&'static str),
    Unparseable(&'static str),
}

/// What ndop must make of one data record, NHS number in field `col` (0-based).
fn outcome(data: &[u8], r: &Rec, col: usize, strict: bool) -> Outcome {
    if r.unterminated {
        return Outcome::Unparseable("unterminated_quote");
    }
    if r.malformed {
        return Outcome::Unparseable("bad_quoting");
    }
    if data[r.body.clone()]
        .iter()
        .all(|&b| b == b' ' || b == b'\t')
    {
        return Outcome::Blank;
    }
    match r.fields.get(col) {
        None => Outcome::Invalid("missing_field"),
        Some(f) => match classify(f, strict) {
            Ok(None) => Outcome::Invalid("missing_field"),
            Ok(Some(n)) => Outcome::Valid(n),
            Err(reason) => Outcome::Invalid(reason),
        },
    }
}

// ================================================================ the expected result of one input

/// How a case reads its input.
#[derive(Debug, Clone)]
struct Opts {
    /// `--column`: a name or a 1-based position.
    column: String,
    delim: u8,
    header: bool,
    skip: usize,
    strict: bool,
    /// Extra arguments (`--delimiter`, `--no-header`, `--skip-lines`, `--strict`).
    args: Vec<String>,
}

/// What the oracle says ndop must do with an input.
#[derive(Debug)]
struct Expected {
    /// The decompressed bytes.
    data: Vec<u8>,
    bom: bool,
    header: Option<Rec>,
    /// The data records with their outcome; `raw` and `body` index into `data`, `line` counts
    /// every physical line of the file.
    records: Vec<(Rec, Outcome)>,
    /// BOM + header + kept records, byte for byte.
    filtered: Vec<u8>,
}

impl Expected {
    fn count(&self, f: impl Fn(&Outcome) -> bool) -> u64 {
        self.records.iter().filter(|(_, o)| f(o)).count() as u64
    }
    fn kept(&self) -> u64 {
        self.count(|o| matches!(o, Outcome::Valid(n) if ALLOWED.contains(&n.as_str())))
    }
    fn valid(&self) -> u64 {
        self.count(|o| matches!(o, Outcome::Valid(_)))
    }
    fn invalid(&self) -> u64 {
        self.count(|o| matches!(o, Outcome::Invalid(_)))
    }
    fn unparseable(&self) -> u64 {
        self.count(|o| matches!(o, Outcome::Unparseable(_)))
    }
    fn blank(&self) -> u64 {
        self.count(|o| matches!(o, Outcome::Blank))
    }
    fn unique(&self) -> BTreeSet<String> {
        self.records
            .iter()
            .filter_map(|(_, o)| match o {
                Outcome::Valid(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }
    fn by_reason(&self, unparseable: bool) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for (_, o) in &self.records {
            match (o, unparseable) {
                (Outcome::Invalid(r), false) | (Outcome::Unparseable(r), true) => {
                    *m.entry(r.to_string()).or_default() += 1
                }
                _ => {}
            }
        }
        m
    }
    /// (record, line, reason) of every invalid and unparseable record, in order.
    fn rejects(&self) -> Vec<(u64, u64, String)> {
        self.records
            .iter()
            .enumerate()
            .filter_map(|(k, (r, o))| match o {
                Outcome::Invalid(reason) | Outcome::Unparseable(reason) => {
                    Some((k as u64 + 1, r.line, reason.to_string()))
                }
                _ => None,
            })
            .collect()
    }
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip is on PATH (needed to check the gzip case)");
    let mut stdin = child.stdin.take().unwrap();
    let bytes = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&bytes).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "gzip -dc failed");
    out.stdout
}

fn decompressed(bytes: &[u8]) -> Vec<u8> {
    if bytes.starts_with(b"\x1f\x8b") {
        gunzip(bytes)
    } else {
        bytes.to_vec()
    }
}

/// The expected result of reading `file_bytes` with `o`. `col` is the 0-based NHS column,
/// resolved by the test itself (names are looked up in the oracle's header).
fn expect(file_bytes: &[u8], o: &Opts) -> Expected {
    let data = decompressed(file_bytes);
    let bom = data.starts_with(BOM);
    let after_bom = if bom { 3 } else { 0 };
    let start = after_bom + skip_physical_lines(&data[after_bom..], o.skip);
    let mut recs = oracle(&data[start..], o.delim);
    for r in &mut recs {
        r.raw = r.raw.start + start..r.raw.end + start;
        r.body = r.body.start + start..r.body.end + start;
        r.line += o.skip as u64;
    }
    let header = if o.header && !recs.is_empty() {
        Some(recs.remove(0))
    } else {
        None
    };
    let col = match o.column.parse::<usize>() {
        Ok(p) => p - 1,
        Err(_) => {
            let h = header.as_ref().expect("a column name needs a header");
            let found: Vec<usize> = h
                .fields
                .iter()
                .enumerate()
                .filter(|(_, f)| name_matches(f, &o.column))
                .map(|(k, _)| k)
                .collect();
            assert_eq!(found.len(), 1, "test bug: column {:?} in {h:?}", o.column);
            found[0]
        }
    };
    let records: Vec<(Rec, Outcome)> = recs
        .into_iter()
        .map(|r| {
            let out = outcome(&data, &r, col, o.strict);
            (r, out)
        })
        .collect();
    let mut filtered = Vec::new();
    if bom {
        filtered.extend_from_slice(BOM);
    }
    if let Some(h) = &header {
        filtered.extend_from_slice(&data[h.raw.clone()]);
    }
    for (r, out) in &records {
        if matches!(out, Outcome::Valid(n) if ALLOWED.contains(&n.as_str())) {
            filtered.extend_from_slice(&data[r.raw.clone()]);
        }
    }
    Expected {
        data,
        bom,
        header,
        records,
        filtered,
    }
}

// ================================================================ running ndop

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/csv")
        .join(name)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Every NHS-number-like value of the corpus: the constants, and each run of ten digits found
/// in any corpus file.
fn forbidden() -> &'static BTreeSet<String> {
    static SET: OnceLock<BTreeSet<String>> = OnceLock::new();
    SET.get_or_init(|| {
        let mut set: BTreeSet<String> = ALLOWED
            .iter()
            .chain(&OPTED_OUT)
            .chain(&OTHER_VALUES)
            .map(|s| s.to_string())
            .collect();
        for e in std::fs::read_dir(corpus("")).unwrap() {
            let bytes = decompressed(&std::fs::read(e.unwrap().path()).unwrap());
            let text = String::from_utf8_lossy(&bytes);
            set.extend(digit_runs(&text).into_iter().filter(|r| r.len() == 10));
        }
        set
    })
}

/// The maximal runs of ASCII digits in `text`.
fn digit_runs(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Fails if `text` holds an NHS number (or a form of one) from the corpus.
#[track_caller]
fn assert_no_number(what: &str, text: &str) {
    let set = forbidden();
    for run in digit_runs(text) {
        assert!(
            !set.contains(&run),
            "{what} printed the NHS number {run}:\n{text}"
        );
    }
    for v in OTHER_VALUES
        .iter()
        .filter(|v| !v.bytes().all(|b| b.is_ascii_digit()))
    {
        assert!(!text.contains(v), "{what} printed {v:?}:\n{text}");
    }
}

/// Runs `ndop` in `cwd`, with `stdin` when given; checks that neither stream holds a number.
fn ndop_in(cwd: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(NDOP)
        .args(args)
        .current_dir(cwd)
        .env_remove("NDOP_MAILBOX")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ndop starts");
    let mut input = child.stdin.take().unwrap();
    let bytes = stdin.map(<[u8]>::to_vec);
    let writer = std::thread::spawn(move || {
        if let Some(b) = bytes {
            // ndop may refuse before reading it all.
            let _ = input.write_all(&b);
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let what = format!("ndop {args:?}");
    assert_no_number(&what, &String::from_utf8_lossy(&out.stdout));
    assert_no_number(&what, &String::from_utf8_lossy(&out.stderr));
    out
}

fn ndop(cwd: &Path, args: &[&str]) -> Output {
    ndop_in(cwd, args, None)
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
fn assert_code(out: &Output, want: i32, what: &str) {
    assert_eq!(out.status.code(), Some(want), "{what}\n{}", show(out));
}

fn json(bytes: &[u8], what: &str) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!("{what}: not JSON ({e}): {}", String::from_utf8_lossy(bytes));
    })
}

#[track_caller]
fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key:?} in {v}"))
}

fn reasons(v: &Value, key: &str) -> BTreeMap<String, u64> {
    v[key]
        .as_object()
        .unwrap_or_else(|| panic!("no object {key:?} in {v}"))
        .iter()
        .map(|(k, c)| (k.clone(), c.as_u64().unwrap()))
        .filter(|(_, c)| *c > 0)
        .collect()
}

#[track_caller]
fn assert_mode_0600(path: &Path) {
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
}

/// A report written by ndop (`invalid.csv`, the rejects report), read with the oracle: the
/// rows after the header, as strings.
fn report_rows(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut rows: Vec<Vec<String>> = oracle(&bytes, b',')
        .into_iter()
        .filter(|r| !r.fields.is_empty())
        .map(|r| {
            r.fields
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect()
        })
        .collect();
    assert!(!rows.is_empty(), "{} is empty", path.display());
    let header = rows.remove(0);
    (header, rows)
}

/// A header cell matches a `--column` name: trimmed, ASCII case ignored.
fn name_matches(cell: &[u8], name: &str) -> bool {
    String::from_utf8_lossy(cell)
        .trim()
        .eq_ignore_ascii_case(name.trim())
}

/// True when `text` holds `word` delimited by non-alphanumerics.
fn has_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w == word)
}

// ================================================================ one case: validate, prepare, filter

struct Case {
    /// The corpus file.
    file: &'static str,
    /// `--column`.
    column: &'static str,
    delim: u8,
    header: bool,
    skip: usize,
    strict: bool,
    args: &'static [&'static str],
}

impl Case {
    const fn new(file: &'static str, column: &'static str) -> Case {
        Case {
            file,
            column,
            delim: b',',
            header: true,
            skip: 0,
            strict: false,
            args: &[],
        }
    }
    const fn delim(mut self, d: u8, args: &'static [&'static str]) -> Case {
        self.delim = d;
        self.args = args;
        self
    }
    const fn args(mut self, args: &'static [&'static str]) -> Case {
        self.args = args;
        self
    }
    const fn no_header(mut self) -> Case {
        self.header = false;
        self
    }
    const fn skip(mut self, n: usize) -> Case {
        self.skip = n;
        self
    }
    const fn strict(mut self) -> Case {
        self.strict = true;
        self
    }
    fn opts(&self) -> Opts {
        Opts {
            column: self.column.to_string(),
            delim: self.delim,
            header: self.header,
            skip: self.skip,
            strict: self.strict,
            args: self.args.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The ways filter is run on a file; all must give the same output.
/// (`--io`, `--threads`, through standard input).
const READ_WAYS: [(&str, &str, bool); 3] = [
    ("read", "1", false),
    ("mmap", "3", false),
    ("auto", "2", true),
];

/// Runs validate, prepare and filter on `input` (a file) and checks them against the oracle.
/// `stdin_ok`: also filter through standard input (the delimiter must then be explicit).
fn check_input(input: &Path, o: &Opts, stdin_ok: bool) {
    check_input_ways(input, o, stdin_ok, &READ_WAYS);
}

/// [`check_input`] with the given ways of reading (validate runs once per `--io` of a way
/// that reads the file).
fn check_input_ways(input: &Path, o: &Opts, stdin_ok: bool, ways: &[(&str, &str, bool)]) {
    let file_bytes = std::fs::read(input).unwrap();
    let e = expect(&file_bytes, o);
    let what = format!("{} {:?} {:?}", input.display(), o.column, o.args);
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let mut common: Vec<&str> = vec!["--column", &o.column];
    common.extend(o.args.iter().map(String::as_str));

    // ---- validate, with --out: the summary and invalid.csv.
    for (k, (io, threads, _)) in ways.iter().filter(|w| !w.2).enumerate() {
        let rep = cwd.join(format!("report{k}"));
        let mut args = vec![
            "validate",
            p(input),
            "--out",
            p(&rep),
            "--io",
            io,
            "--threads",
            threads,
        ];
        args.extend_from_slice(&common);
        let what = format!("validate {what} --io {io} --threads {threads}");
        let out = ndop(cwd, &args);
        assert_code(&out, 0, &what);
        let s = json(&out.stdout, &what);
        check_validate_summary(&s, &e, &what);
        assert_mode_0600(&rep.join("invalid.csv"));
        assert_mode_0600(&rep.join("summary.json"));
        check_invalid_csv(&rep.join("invalid.csv"), &e, &what);
    }

    // ---- prepare: the .dat holds exactly the valid numbers, once each.
    let outbox = cwd.join("outbox");
    let mut args = vec![
        "prepare",
        p(input),
        "--out",
        p(&outbox),
        "--mailbox",
        MAILBOX,
        "--date",
        "2026-11-23",
    ];
    args.extend_from_slice(&common);
    let out = ndop(cwd, &args);
    assert_code(&out, 0, &format!("prepare {what}"));
    let s = json(&std::fs::read(outbox.join("summary.json")).unwrap(), &what);
    check_validate_summary(&s, &e, &format!("prepare {what}"));
    check_invalid_csv(&outbox.join("invalid.csv"), &e, &format!("prepare {what}"));
    let mut sent = BTreeSet::new();
    let mut count = 0;
    for entry in std::fs::read_dir(&outbox).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "dat") {
            assert_mode_0600(&path);
            for l in std::fs::read_to_string(&path).unwrap().lines() {
                sent.insert(l.trim_end_matches(',').to_string());
                count += 1;
            }
        }
    }
    assert_eq!(sent, e.unique(), "prepare {what}: the numbers sent");
    assert_eq!(count, sent.len(), "prepare {what}: each number once");

    // ---- filter, every way of reading: identical output, and the oracle's.
    let allowed = cwd.join("allowed.dat");
    std::fs::write(
        &allowed,
        ALLOWED
            .iter()
            .map(|n| format!("{n},\r\n"))
            .collect::<String>(),
    )
    .unwrap();
    let mut first: Option<(Vec<u8>, Vec<Vec<String>>)> = None;
    for (k, &(io, threads, stdin)) in ways.iter().enumerate() {
        if stdin && !stdin_ok {
            continue;
        }
        let cleared = cwd.join(format!("cleared-{k}.csv"));
        let source = if stdin { "-" } else { p(input) };
        let mut args = vec![
            "filter",
            source,
            "--allowed",
            p(&allowed),
            "--out",
            p(&cleared),
            "--io",
            io,
            "--threads",
            threads,
        ];
        args.extend_from_slice(&common);
        // Every other way without the syncs: the output must be the same.
        let no_sync = k % 2 == 1;
        if no_sync {
            args.push("--no-sync");
        }
        let way =
            format!("filter {what} --io {io} --threads {threads} stdin {stdin} no-sync {no_sync}");
        let out = ndop_in(cwd, &args, stdin.then_some(file_bytes.as_slice()));
        assert_code(&out, 0, &way);
        let f = json(&out.stdout, &way);
        check_filter_summary(&f, &e, o, &way);
        assert_mode_0600(&cleared);
        let got = std::fs::read(&cleared).unwrap();
        assert_safe(&got, &e, o, &way);
        assert!(
            got == e.filtered,
            "{way}: the filtered output differs from the oracle's\n got: {:?}\nwant: {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&e.filtered)
        );
        // The rejects report: where, and why, never what.
        let rejects = f["rejects"]
            .as_str()
            .map(|r| cwd.join(r))
            .unwrap_or_else(|| panic!("{way}: no \"rejects\" in {f}"));
        assert_mode_0600(&rejects);
        let (header, rows) = report_rows(&rejects);
        assert_eq!(header, ["file", "record", "line", "reason"], "{way}");
        assert_no_number(
            &format!("{way}: the rejects report"),
            &rows.concat().join(","),
        );
        let listed: Vec<(u64, u64, String)> = rows
            .iter()
            .map(|r| {
                assert_eq!(r.len(), 4, "{way}: {r:?}");
                (r[1].parse().unwrap(), r[2].parse().unwrap(), r[3].clone())
            })
            .collect();
        assert_eq!(listed, e.rejects(), "{way}: rejects (record, line, reason)");
        match &first {
            None => first = Some((got, rows)),
            Some((g, r)) => {
                assert_eq!(&got, g, "{way}: output differs from the first way");
                let strip = |rows: &Vec<Vec<String>>| -> Vec<Vec<String>> {
                    rows.iter().map(|r| r[1..].to_vec()).collect()
                };
                assert_eq!(strip(&rows), strip(r), "{way}: rejects differ");
            }
        }
    }
}

#[track_caller]
fn check_validate_summary(s: &Value, e: &Expected, what: &str) {
    let want = [
        ("lines", e.records.len() as u64),
        ("valid", e.valid()),
        ("unique", e.unique().len() as u64),
        ("duplicates", e.valid() - e.unique().len() as u64),
        ("invalid", e.invalid()),
        ("blank", e.blank()),
        ("unparseable", e.unparseable()),
    ];
    let got: Vec<(&str, u64)> = want.iter().map(|(k, _)| (*k, n(s, k))).collect();
    assert_eq!(got, want, "{what}: {s}");
    assert_eq!(
        n(s, "lines"),
        n(s, "valid") + n(s, "invalid") + n(s, "blank") + n(s, "unparseable"),
        "{what}: counts add up"
    );
    assert_eq!(
        reasons(s, "invalid_by_reason"),
        e.by_reason(false),
        "{what}: {s}"
    );
    assert_eq!(
        reasons(s, "unparseable_by_reason"),
        e.by_reason(true),
        "{what}: {s}"
    );
}

/// `invalid.csv`: `file,record,line,reason,value` for every invalid and unparseable record.
#[track_caller]
fn check_invalid_csv(path: &Path, e: &Expected, what: &str) {
    assert_mode_0600(path);
    let (header, rows) = report_rows(path);
    assert_eq!(
        header,
        ["file", "record", "line", "reason", "value"],
        "{what}"
    );
    let got: Vec<(u64, u64, String)> = rows
        .iter()
        .map(|r| {
            assert_eq!(r.len(), 5, "{what}: invalid.csv row {r:?}");
            assert!(r[4].len() <= 256 * 4, "{what}: value cut at 256 bytes");
            (r[1].parse().unwrap(), r[2].parse().unwrap(), r[3].clone())
        })
        .collect();
    assert_eq!(
        got,
        e.rejects(),
        "{what}: invalid.csv (record, line, reason)"
    );
}

#[track_caller]
fn check_filter_summary(f: &Value, e: &Expected, o: &Opts, what: &str) {
    let opted_out = e.valid() - e.kept();
    let want = [
        ("rows", e.records.len() as u64),
        ("kept", e.kept()),
        ("opted_out", opted_out),
        ("not_checked", 0),
        ("invalid", e.invalid()),
        ("blank", e.blank()),
        ("unparseable", e.unparseable()),
        ("headers", u64::from(e.header.is_some())),
        ("skipped_lines", o.skip as u64),
    ];
    let got: Vec<(&str, u64)> = want.iter().map(|(k, _)| (*k, n(f, k))).collect();
    assert_eq!(got, want, "{what}: {f}");
    assert_eq!(
        n(f, "rows"),
        n(f, "kept")
            + n(f, "opted_out")
            + n(f, "not_checked")
            + n(f, "invalid")
            + n(f, "blank")
            + n(f, "unparseable"),
        "{what}: counts add up"
    );
    assert_eq!(
        reasons(f, "invalid_by_reason"),
        e.by_reason(false),
        "{what}"
    );
    assert_eq!(
        reasons(f, "unparseable_by_reason"),
        e.by_reason(true),
        "{what}"
    );
    assert_eq!(f["bom"], e.bom, "{what}: bom");
    let d = f["delimiter"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no delimiter in {f}"));
    let names: &[&str] = match o.delim {
        b',' => &[",", "comma"],
        b'\t' => &["\t", "tab", "\\t"],
        b';' => &[";", "semicolon"],
        b'|' => &["|", "pipe"],
        _ => unreachable!(),
    };
    assert!(
        names.contains(&d),
        "{what}: delimiter {d:?}, want one of {names:?}"
    );
}

/// THE SAFETY INVARIANT: the output is the optional BOM, the header, and records whose NHS
/// field, re-read by the oracle, is a valid number in the allowed set.
#[track_caller]
fn assert_safe(output: &[u8], e: &Expected, o: &Opts, what: &str) {
    let mut rest = output;
    if let Some(r) = rest.strip_prefix(BOM) {
        rest = r;
    }
    if let Some(h) = &e.header {
        let hb = &e.data[h.raw.clone()];
        assert!(
            rest.starts_with(hb),
            "{what}: the output does not start with the header"
        );
        rest = &rest[hb.len()..];
    }
    let col = header_col(e, o);
    for r in oracle(rest, o.delim) {
        match outcome(rest, &r, col, o.strict) {
            Outcome::Valid(nhs) if ALLOWED.contains(&nhs.as_str()) => {}
            other => panic!(
                "{what}: SAFETY: the output holds a record that is not an allowed patient's \
                 ({other:?}), output record starting at byte {}",
                r.raw.start
            ),
        }
    }
}

fn header_col(e: &Expected, o: &Opts) -> usize {
    match o.column.parse::<usize>() {
        Ok(p) => p - 1,
        Err(_) => {
            let h = e.header.as_ref().unwrap();
            h.fields
                .iter()
                .position(|f| name_matches(f, &o.column))
                .unwrap()
        }
    }
}

fn run(case: Case) {
    let input = corpus(case.file);
    // Standard input has no name: a .tsv needs --delimiter there.
    let stdin_ok = !case.file.ends_with(".tsv") || case.args.contains(&"--delimiter");
    check_input(&input, &case.opts(), stdin_ok);
}

// ================================================================ the corpus: files read

/// Every case that ndop must read (not refuse), with its options.
fn readable_cases() -> Vec<Case> {
    vec![
        Case::new("excel_bom_crlf.csv", "nhs_number"),
        Case::new("excel_bom_crlf.csv", "2"),
        Case::new("excel_bom_crlf.csv", " NHS_Number "),
        Case::new("quoted_newlines.csv", "nhs_number"),
        Case::new("quoted_newlines.csv", "1"),
        Case::new("headerless.csv", "1")
            .no_header()
            .args(&["--no-header"]),
        Case::new("cr_only.csv", "nhs_number"),
        Case::new("blank_first_line.csv", "nhs_number")
            .skip(1)
            .args(&["--skip-lines", "1"]),
        Case::new("title_row.csv", "2")
            .skip(1)
            .args(&["--skip-lines", "1"]),
        Case::new("duplicate_columns.csv", "2"),
        Case::new("duplicate_columns.csv", "5"),
        Case::new("big_field.csv", "nhs_number"),
        Case::new("extract.tsv", "nhs_number").delim(b'\t', &[]),
        Case::new("extract.tsv", "1").delim(b'\t', &["--delimiter", "tab"]),
        Case::new("semicolon.csv", "nhs_number").delim(b';', &["--delimiter", ";"]),
        Case::new("semicolon.csv", "2").delim(b';', &["--delimiter", "semicolon"]),
        Case::new("pipe.csv", "nhs_number").delim(b'|', &["--delimiter", "|"]),
        Case::new("gzipped.csv.gz", "nhs_number"),
        Case::new("unterminated_quote.csv", "nhs_number"),
        Case::new("bad_quoting.csv", "nhs_number"),
        Case::new("ragged.csv", "nhs_number"),
        Case::new("latin1.csv", "nhs_number"),
        Case::new("wide_200_columns.csv", "nhs_number"),
        Case::new("wide_200_columns.csv", "150"),
        Case::new("repeated_headers.csv", "nhs_number"),
        Case::new("mangled_numbers.csv", "nhs_number"),
        Case::new("mangled_numbers.csv", "nhs_number")
            .strict()
            .args(&["--strict"]),
        Case::new("header_is_number.csv", "1")
            .no_header()
            .args(&["--no-header"]),
        Case::new("stray_quote.csv", "nhs_number"),
    ]
}

fn case(file: &str, column: &str) -> Case {
    readable_cases()
        .into_iter()
        .find(|c| c.file == file && c.column == column)
        .unwrap_or_else(|| panic!("test bug: no case {file} {column}"))
}

#[test]
fn excel_bom_crlf() {
    run(case("excel_bom_crlf.csv", "nhs_number"));
    run(case("excel_bom_crlf.csv", "2"));
    // Names match case- and space-insensitively.
    run(case("excel_bom_crlf.csv", " NHS_Number "));
}

#[test]
fn quoted_newlines() {
    run(case("quoted_newlines.csv", "nhs_number"));
    run(case("quoted_newlines.csv", "1"));
}

#[test]
fn quoted_newlines_the_issue_example_keeps_no_tail() {
    // nhs_number,notes / 9434765919,ok / 9694116414,"linked:⏎9434765919, secret": with only
    // 9434765919 allowed, the tail line `9434765919, secret"` must not be kept.
    let e = expect(
        &std::fs::read(corpus("quoted_newlines.csv")).unwrap(),
        &case("quoted_newlines.csv", "nhs_number").opts(),
    );
    let text = String::from_utf8_lossy(&e.filtered);
    assert!(!text.contains("secret"), "test bug: oracle kept {text}");
    run(case("quoted_newlines.csv", "nhs_number"));
}

#[test]
fn headerless() {
    run(case("headerless.csv", "1"));
}

#[test]
fn cr_only() {
    run(case("cr_only.csv", "nhs_number"));
}

#[test]
fn blank_first_line_with_skip_lines() {
    run(case("blank_first_line.csv", "nhs_number"));
}

#[test]
fn title_row_with_skip_lines() {
    run(case("title_row.csv", "2"));
}

#[test]
fn duplicate_columns_by_position() {
    run(case("duplicate_columns.csv", "2"));
    run(case("duplicate_columns.csv", "5"));
}

#[test]
fn big_field() {
    run(case("big_field.csv", "nhs_number"));
}

#[test]
fn tsv_delimiter_auto_and_explicit() {
    run(case("extract.tsv", "nhs_number"));
    run(case("extract.tsv", "1"));
}

#[test]
fn semicolon() {
    run(case("semicolon.csv", "nhs_number"));
    run(case("semicolon.csv", "2"));
}

#[test]
fn pipe() {
    run(case("pipe.csv", "nhs_number"));
}

#[test]
fn gzipped_equals_plain() {
    let gz = std::fs::read(corpus("gzipped.csv.gz")).unwrap();
    let plain = std::fs::read(corpus("quoted_newlines.csv")).unwrap();
    assert_eq!(gunzip(&gz), plain, "gzipped.csv.gz is quoted_newlines.csv");
    run(case("gzipped.csv.gz", "nhs_number"));

    // The same summary counts and the same filtered bytes as the plain file.
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed.dat");
    std::fs::write(&allowed, ALLOWED.map(|n| format!("{n},\n")).concat()).unwrap();
    let mut results = Vec::new();
    for name in ["quoted_newlines.csv", "gzipped.csv.gz"] {
        let out_path = dir.path().join(format!("{name}.out"));
        let out = ndop(
            dir.path(),
            &[
                "filter",
                p(&corpus(name)),
                "--column",
                "nhs_number",
                "--allowed",
                p(&allowed),
                "--out",
                p(&out_path),
            ],
        );
        assert_code(&out, 0, name);
        let f = json(&out.stdout, name);
        let want = if name.ends_with(".gz") {
            "gzip"
        } else {
            "none"
        };
        assert_eq!(f["compression"], want, "{name}: {f}");
        let keys = [
            "rows",
            "kept",
            "opted_out",
            "invalid",
            "blank",
            "unparseable",
        ];
        let counts: Vec<u64> = keys.iter().map(|k| n(&f, k)).collect();
        results.push((counts, std::fs::read(&out_path).unwrap()));
        let v = ndop(
            dir.path(),
            &["validate", p(&corpus(name)), "--column", "nhs_number"],
        );
        assert_code(&v, 0, name);
        let v = json(&v.stdout, name);
        results.push((
            ["lines", "valid", "invalid", "unparseable"]
                .iter()
                .map(|k| n(&v, k))
                .collect(),
            Vec::new(),
        ));
    }
    assert_eq!(results[0], results[2]);
    assert_eq!(results[1], results[3]);
}

#[test]
fn unterminated_quote_runs_to_eof_and_is_reported() {
    let c = case("unterminated_quote.csv", "nhs_number");
    let e = expect(&std::fs::read(corpus(c.file)).unwrap(), &c.opts());
    assert_eq!(
        e.records.last().unwrap().1,
        Outcome::Unparseable("unterminated_quote"),
        "test bug"
    );
    run(c);
}

#[test]
fn bad_quoting() {
    let c = case("bad_quoting.csv", "nhs_number");
    let e = expect(&std::fs::read(corpus(c.file)).unwrap(), &c.opts());
    assert_eq!(e.unparseable(), 5, "test bug");
    run(c);
}

#[test]
fn ragged() {
    run(case("ragged.csv", "nhs_number"));
}

#[test]
fn latin1() {
    run(case("latin1.csv", "nhs_number"));
}

#[test]
fn wide_200_columns() {
    run(case("wide_200_columns.csv", "nhs_number"));
    run(case("wide_200_columns.csv", "150"));
}

#[test]
fn repeated_headers() {
    run(case("repeated_headers.csv", "nhs_number"));
}

#[test]
fn mangled_numbers() {
    let c = case("mangled_numbers.csv", "nhs_number");
    let e = expect(&std::fs::read(corpus(c.file)).unwrap(), &c.opts());
    // 9.43477E+09, '9434765919, 9434765919.0 and 9.99E+09 are rejected and counted.
    assert_eq!(e.by_reason(false).get("non_digit"), Some(&4), "test bug");
    run(c);
    let strict = readable_cases()
        .into_iter()
        .find(|c| c.file == "mangled_numbers.csv" && c.strict)
        .unwrap();
    run(strict);
}

#[test]
fn header_is_number_with_no_header() {
    run(case("header_is_number.csv", "1"));
}

#[test]
fn stray_quote() {
    run(case("stray_quote.csv", "nhs_number"));
}

// ================================================================ refusals

/// `ndop CMD FILE ARGS` for validate, prepare and filter must exit 3, write no output, and say
/// `needles` (all of them, case-insensitively) on stderr.
fn assert_refused(file: &Path, args: &[&str], needles: &[&str], stdin: bool) {
    assert_refused_by(
        &["validate", "prepare", "filter"],
        file,
        args,
        needles,
        stdin,
    );
}

/// [`assert_refused`] for the commands `cmds`.
fn assert_refused_by(cmds: &[&str], file: &Path, args: &[&str], needles: &[&str], stdin: bool) {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let allowed = cwd.join("allowed.dat");
    std::fs::write(&allowed, ALLOWED.map(|n| format!("{n},\n")).concat()).unwrap();
    let bytes = std::fs::read(file).unwrap();
    let source = if stdin { "-" } else { p(file) };
    for &cmd in cmds {
        let out_path = cwd.join(format!("{cmd}-out"));
        let mut a = vec![cmd, source, "--out", p(&out_path)];
        match cmd {
            "prepare" => a.extend_from_slice(&["--mailbox", MAILBOX, "--date", "2026-11-23"]),
            "filter" => a.extend_from_slice(&["--allowed", p(&allowed)]),
            _ => {}
        }
        a.extend_from_slice(args);
        let what = format!("{cmd} {} {args:?}", file.display());
        let out = ndop_in(cwd, &a, stdin.then_some(bytes.as_slice()));
        assert_code(&out, 3, &what);
        let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
        for needle in needles {
            let hit = if needle.chars().all(|c| c.is_ascii_digit()) {
                has_word(&stderr, needle)
            } else {
                stderr.contains(&needle.to_lowercase())
            };
            assert!(
                hit,
                "{what}: stderr does not say {needle:?}\n{}",
                show(&out)
            );
        }
        // Nothing of the extract was written.
        if cmd == "filter" {
            if let Ok(got) = std::fs::read(&out_path) {
                panic!(
                    "{what}: a refused filter left {} ({} bytes)",
                    out_path.display(),
                    got.len()
                );
            }
        } else if out_path.exists() {
            let left: Vec<_> = std::fs::read_dir(&out_path)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n.to_string_lossy().ends_with(".dat"))
                .collect();
            assert!(left.is_empty(), "{what}: left {left:?}");
        }
    }
}

#[test]
fn utf16_is_refused_naming_the_encoding() {
    for column in ["nhs_number", "1"] {
        assert_refused(
            &corpus("utf16le.csv"),
            &["--column", column],
            &["UTF-16", "save as CSV UTF-8"],
            false,
        );
    }
    assert_refused(
        &corpus("utf16le.csv"),
        &["--column", "1", "--delimiter", "tab"],
        &["UTF-16"],
        true,
    );
}

#[test]
fn header_is_number_is_refused() {
    assert_refused(
        &corpus("header_is_number.csv"),
        &["--column", "1"],
        &["--no-header"],
        false,
    );
    // The old way in: the headerless bcp file read with a header.
    assert_refused(
        &corpus("headerless.csv"),
        &["--column", "1"],
        &["--no-header"],
        false,
    );
}

#[test]
fn duplicate_column_names_are_refused_naming_the_positions() {
    assert_refused(
        &corpus("duplicate_columns.csv"),
        &["--column", "nhs_number"],
        &["2", "5"],
        false,
    );
    assert_refused(
        &corpus("duplicate_columns.csv"),
        &["--column", "NHS_NUMBER"],
        &["2", "5"],
        false,
    );
}

#[test]
fn blank_first_line_is_refused_suggesting_skip_lines() {
    for column in ["nhs_number", "2"] {
        assert_refused(
            &corpus("blank_first_line.csv"),
            &["--column", column],
            &["blank", "--skip-lines"],
            false,
        );
    }
}

#[test]
fn title_row_is_refused() {
    assert_refused(
        &corpus("title_row.csv"),
        &["--column", "2"],
        &["--skip-lines"],
        false,
    );
    assert_refused(
        &corpus("title_row.csv"),
        &["--column", "nhs_number"],
        &["nhs_number"],
        false,
    );
}

#[test]
fn a_missing_column_names_the_delimiter_and_suggests_one() {
    assert_refused(
        &corpus("semicolon.csv"),
        &["--column", "nhs_number"],
        &["--delimiter"],
        false,
    );
    assert_refused(
        &corpus("pipe.csv"),
        &["--column", "nhs_number"],
        &["--delimiter"],
        false,
    );
    // A .tsv read as commas on purpose.
    assert_refused(
        &corpus("extract.tsv"),
        &["--column", "nhs_number", "--delimiter", ","],
        &["--delimiter"],
        false,
    );
}

#[test]
fn cr_only_is_not_one_header_line() {
    // The old failure: the whole file taken as the header and copied. By position, too.
    let c = case("cr_only.csv", "nhs_number");
    let e = expect(&std::fs::read(corpus(c.file)).unwrap(), &c.opts());
    assert_eq!(e.records.len(), 5, "test bug");
    check_input(
        &corpus("cr_only.csv"),
        &Opts {
            column: "1".into(),
            ..c.opts()
        },
        true,
    );
}

#[test]
fn no_header_with_a_column_name_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed.dat");
    std::fs::write(&allowed, ALLOWED.map(|n| format!("{n},\n")).concat()).unwrap();
    let file = corpus("headerless.csv");
    let outs = [dir.path().join("out1"), dir.path().join("out2")];
    for (k, args) in [
        vec![
            "validate",
            p(&file),
            "--no-header",
            "--column",
            "nhs_number",
        ],
        vec![
            "prepare",
            p(&file),
            "--no-header",
            "--column",
            "nhs_number",
            "--out",
            p(&outs[0]),
            "--mailbox",
            MAILBOX,
            "--date",
            "2026-11-23",
        ],
        vec![
            "filter",
            p(&file),
            "--no-header",
            "--column",
            "nhs_number",
            "--allowed",
            p(&allowed),
            "--out",
            p(&outs[1]),
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let out = ndop(dir.path(), &args);
        assert_code(&out, 2, &format!("{args:?}"));
        // Nothing written (an empty output directory may be left).
        let out_path = &outs[k.saturating_sub(1)];
        let wrote = out_path.is_file()
            || (out_path.is_dir() && std::fs::read_dir(out_path).unwrap().next().is_some());
        assert!(!wrote, "{args:?} wrote {}", out_path.display());
    }
}

/// A quote opened on line 5 and never closed, followed by more than 16 MiB of lines that look
/// like rows of allowed patients.
fn runaway_csv(dir: &Path) -> PathBuf {
    let file = dir.join("runaway.csv");
    let mut data = format!(
        "nhs_number,notes\n{},a\n{},b\n{},c\n{},\"never closed\n",
        ALLOWED[0], OPTED_OUT[1], ALLOWED[1], OPTED_OUT[0]
    )
    .into_bytes();
    let filler = format!("{},looks like a row of an allowed patient\n", ALLOWED[2]);
    while data.len() < 16 * 1024 * 1024 + 64 * 1024 {
        data.extend_from_slice(filler.as_bytes());
    }
    std::fs::write(&file, &data).unwrap();
    file
}

#[test]
fn a_runaway_quote_is_refused_naming_its_line() {
    // One run: the engine reads about 3 MB/s in a debug build. The ignored test below runs
    // every command on both read paths.
    let dir = tempfile::tempdir().unwrap();
    let file = runaway_csv(dir.path());
    assert_refused_by(
        &["filter"],
        &file,
        &["--column", "nhs_number", "--io", "read", "--threads", "2"],
        &["5"],
        false,
    );
}

#[test]
#[ignore = "slow in debug builds: cargo test --release -- --ignored"]
fn a_runaway_quote_is_refused_by_every_command_on_both_read_paths() {
    let dir = tempfile::tempdir().unwrap();
    let file = runaway_csv(dir.path());
    for io in ["read", "mmap"] {
        assert_refused(
            &file,
            &["--column", "nhs_number", "--io", io],
            &["5"],
            false,
        );
    }
}

// ================================================================ the safety invariant, corpus-wide

/// Every file of the corpus, with every option set a case uses and more (by name and by
/// position, with and without a header, every delimiter, strict or not), on both read paths
/// and at 1 and 3 threads: whatever ndop does (reads or refuses), every record it writes
/// belongs to an allowed patient.
#[test]
fn safety_invariant_over_the_whole_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let allowed = cwd.join("allowed.dat");
    std::fs::write(&allowed, ALLOWED.map(|n| format!("{n},\r\n")).concat()).unwrap();
    let mut files: Vec<String> = std::fs::read_dir(corpus(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.ends_with(".md"))
        .collect();
    files.sort();
    assert!(files.len() >= 22, "the corpus: {files:?}");
    let (mut runs, mut k) = (0, 0usize);
    for file in &files {
        let path = corpus(file);
        let data = decompressed(&std::fs::read(&path).unwrap());
        // The file's own delimiter; and commas for the TSV (read as one column before).
        let mut delims = vec![delim_of(file)];
        if file.ends_with(".tsv") {
            delims.push((b',', ","));
        }
        let mut columns = vec!["nhs_number", "1", "2"];
        if file.starts_with("wide") {
            columns.push("150");
        }
        for &(delim, dname) in &delims {
            for column in &columns {
                for (header, strict) in [(true, false), (false, false), (true, true)] {
                    if (!header && *column == "nhs_number")
                        || (strict && !file.starts_with("mangled"))
                    {
                        continue;
                    }
                    // Alternate the read path and the thread count.
                    k += 1;
                    let (io, threads) = [("read", "1"), ("mmap", "3"), ("auto", "2")][k % 3];
                    let out_path = cwd.join(format!("out-{k}"));
                    let mut args = vec![
                        "filter",
                        p(&path),
                        "--column",
                        column,
                        "--allowed",
                        p(&allowed),
                        "--out",
                        p(&out_path),
                        "--io",
                        io,
                        "--threads",
                        threads,
                        "--delimiter",
                        dname,
                    ];
                    if !header {
                        args.push("--no-header");
                    }
                    if strict {
                        args.push("--strict");
                    }
                    let out = ndop(cwd, &args);
                    let what = format!("{args:?}");
                    let code = out.status.code();
                    assert!(
                        matches!(code, Some(0) | Some(3)),
                        "{what}: exit {code:?}\n{}",
                        show(&out)
                    );
                    let Ok(got) = std::fs::read(&out_path) else {
                        assert_eq!(code, Some(3), "{what}: exit 0 and no output");
                        continue;
                    };
                    assert_eq!(code, Some(0), "{what}: refused but wrote an output");
                    runs += 1;
                    assert_safe_any(&got, &data, column, delim, header, strict, &what);
                }
            }
        }
    }
    assert!(runs > 50, "only {runs} runs wrote an output");
}

/// The safety invariant for an output whatever the options: after an optional BOM and (with a
/// header) the input's first record, every record is an allowed patient's.
#[track_caller]
fn assert_safe_any(
    got: &[u8],
    data: &[u8],
    column: &str,
    delim: u8,
    header: bool,
    strict: bool,
    what: &str,
) {
    let mut rest = got.strip_prefix(BOM).unwrap_or(got);
    let input = data.strip_prefix(BOM).unwrap_or(data);
    let first = oracle(input, delim).into_iter().next();
    let col = match column.parse::<usize>() {
        Ok(c) => c - 1,
        Err(_) => {
            let h = first.as_ref().expect("a header");
            let matching: Vec<usize> = h
                .fields
                .iter()
                .enumerate()
                .filter(|(_, f)| name_matches(f, column))
                .map(|(k, _)| k)
                .collect();
            assert_eq!(
                matching.len(),
                1,
                "{what}: ndop read column {column:?}, which the header has {} times",
                matching.len()
            );
            matching[0]
        }
    };
    if header {
        let h = first.map_or(&[][..], |h| &input[h.raw]);
        assert!(
            rest.starts_with(h),
            "{what}: the output does not start with the header"
        );
        rest = &rest[h.len()..];
    }
    for r in oracle(rest, delim) {
        match outcome(rest, &r, col, strict) {
            Outcome::Valid(nhs) if ALLOWED.contains(&nhs.as_str()) => {}
            other => panic!(
                "{what}: SAFETY: output record {:?} is {other:?}",
                String::from_utf8_lossy(&rest[r.raw.clone()])
            ),
        }
    }
}

// ================================================================ many blocks

/// A ~3 MB CSV whose quoted notes hold line breaks and lines that look like rows of allowed
/// patients, with long quoted fields around every 2 MiB boundary (the engine's block size)
/// and around 1 MiB and 64 KiB multiples too.
fn many_blocks_csv() -> Vec<u8> {
    let mut d = b"id,nhs_number,notes,code\r\n".to_vec();
    let mut k = 0usize;
    let numbers: Vec<&str> = ALLOWED.iter().chain(&OPTED_OUT).copied().collect();
    let boundaries: Vec<usize> = (1..=48).map(|m| m * 64 * 1024).collect();
    while d.len() < 3 * 1024 * 1024 {
        k += 1;
        let nhs = match k % 17 {
            3 => "9990000019", // check_digit_mismatch
            11 => "",          // missing_field
            _ => numbers[k % numbers.len()],
        };
        let fake = numbers[(k * 7 + 3) % ALLOWED.len()];
        // Near a 64 KiB multiple: a quoted field that straddles it, full of fake rows.
        let near = boundaries
            .iter()
            .any(|&b| d.len() < b && b - d.len() < 2000);
        let notes = if near {
            let mut s = String::from("\"straddles");
            for j in 0..120 {
                s.push_str(&format!("\n{fake},fake row {j},\"\"x\"\"\r\n{fake},\r"));
            }
            s.push('"');
            s
        } else {
            match k % 5 {
                0 => format!("\"note, with comma\n{fake},\"\"fake\"\" row\r\nend\""),
                1 => format!("\"cr\r{fake},inside\""),
                2 => "plain note".to_string(),
                3 => "\"\"".to_string(),
                _ => format!("\"\n{fake},starts with a break\""),
            }
        };
        let end = if k.is_multiple_of(3) { "\n" } else { "\r\n" };
        d.extend_from_slice(format!("{k},{nhs},{notes},C{k}{end}").as_bytes());
    }
    d
}

#[test]
fn many_blocks_quoted_line_breaks_straddle_block_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("many_blocks.csv");
    let data = many_blocks_csv();
    std::fs::write(&file, &data).unwrap();
    let o = Case::new("many_blocks.csv", "nhs_number").opts();
    // Quoted line breaks do straddle every 2 MiB (and 64 KiB) boundary.
    let recs = oracle(&data, b',');
    for b in (1..=48).map(|m| m * 64 * 1024).filter(|&b| b < data.len()) {
        let r = recs.iter().find(|r| r.raw.contains(&b)).unwrap();
        let line_breaks = data[r.raw.start..b].iter().filter(|&&c| c == b'\n').count();
        assert!(
            line_breaks > 0,
            "test bug: boundary {b} is not inside a multi-line record"
        );
    }
    let e = expect(&data, &o);
    assert!(
        e.records.len() > 5000 && e.kept() > 1000 && e.invalid() > 100,
        "test bug"
    );
    check_input_ways(
        &file,
        &o,
        false,
        &[("read", "2", false), ("mmap", "3", false)],
    );
}

// ================================================================ the oracle against Python

fn delim_of(file: &str) -> (u8, &'static str) {
    if file.ends_with(".tsv") || file.starts_with("utf16") {
        (b'\t', "tab")
    } else if file.starts_with("semicolon") {
        (b';', ";")
    } else if file.starts_with("pipe") {
        (b'|', "|")
    } else {
        (b',', ",")
    }
}

type Records = Vec<Vec<Vec<u8>>>;

/// Python's records for each `(path, delimiter)` (decompressed), as byte fields, from one run
/// of `tools/csv_oracle.py`; `None` for a file Python could not read (an old Python refuses NUL
/// bytes).
fn python_records(files: &[(PathBuf, &str)]) -> Vec<Option<Records>> {
    let script = repo_root().join("tools/csv_oracle.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script);
    for (path, delim) in files {
        cmd.arg(path).arg(delim);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "python3 must be on PATH: it checks the CSV oracle against Python's csv module \
             ({e})"
        )
    });
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{}: not JSON ({e})\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let answers = v.as_array().expect("a list of answers");
    assert_eq!(answers.len(), files.len(), "one answer per file");
    answers
        .iter()
        .zip(files)
        .map(|(a, (path, _))| {
            if let Some(err) = a.get("error") {
                let err = err.as_str().unwrap_or_default();
                assert!(err.contains("NUL"), "{}: Python: {err}", path.display());
                eprintln!("{}: skipped, this Python refuses NUL bytes", path.display());
                return None;
            }
            Some(
                a.as_array()
                    .unwrap()
                    .iter()
                    .map(|r| {
                        r.as_array()
                            .unwrap()
                            .iter()
                            // Latin-1: each code point is one byte.
                            .map(|f| {
                                f.as_str()
                                    .unwrap()
                                    .chars()
                                    .map(|c| c as u32 as u8)
                                    .collect()
                            })
                            .collect()
                    })
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn the_oracle_agrees_with_python_on_every_corpus_file() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().ends_with(".md"))
        .collect();
    files.sort();
    assert!(files.len() >= 22, "the corpus: {files:?}");
    // And the start of the many-blocks file, and a few tricky strings.
    let dir = tempfile::tempdir().unwrap();
    let extra = [
        (
            "many_blocks_head.csv",
            many_blocks_csv()[..300_000].to_vec(),
        ),
        ("edge1.csv", b"a,\"b\"c\"d,e\r\n\n\r\r\n  \r,\n\"x".to_vec()),
        (
            "edge2.csv",
            b"\"\"\"\",\"a\"\"\"\r\"\r\",\"\n\"\r\n,,\r".to_vec(),
        ),
        ("edge3.csv", b"a\"b,\"c\nd\"e,f\n\"g\"\"\n".to_vec()),
        ("edge4.csv", b"\r\n\n\r\r\r\n\"\"\r\"".to_vec()),
    ];
    for (name, bytes) in &extra {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        files.push(path);
    }
    let with_delims: Vec<(PathBuf, &str)> = files
        .iter()
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            (f.clone(), delim_of(&name).1)
        })
        .collect();
    let theirs_all = python_records(&with_delims);
    let mut compared = 0;
    for ((path, _), theirs) in with_delims.iter().zip(theirs_all) {
        let Some(theirs) = theirs else { continue };
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (delim, _) = delim_of(&name);
        let data = decompressed(&std::fs::read(path).unwrap());
        let ours: Records = oracle(&data, delim).into_iter().map(|r| r.fields).collect();
        assert_eq!(ours.len(), theirs.len(), "{name}: record count");
        for (k, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(
                a,
                b,
                "{name}: record {k}: {:?} vs Python {:?}",
                a.iter()
                    .map(|f| String::from_utf8_lossy(f))
                    .collect::<Vec<_>>(),
                b.iter()
                    .map(|f| String::from_utf8_lossy(f))
                    .collect::<Vec<_>>()
            );
        }
        compared += 1;
    }
    assert!(compared >= 25, "compared {compared} files");
}

#[test]
fn the_oracle_counts_lines_and_records_as_the_contract_says() {
    let data = b"h1,h2\r\nA,\"x\ny\"\r\n\r\nB,\"p\rq\r\nr\"\rC,z";
    let recs = oracle(data, b',');
    let lines: Vec<u64> = recs.iter().map(|r| r.line).collect();
    assert_eq!(lines, [1, 2, 4, 5, 8]);
    assert_eq!(
        recs[2].fields,
        Vec::<Vec<u8>>::new(),
        "a blank line has no fields"
    );
    assert_eq!(recs[3].fields[1], b"p\rq\r\nr");
    assert_eq!(&data[recs[1].raw.clone()], b"A,\"x\ny\"\r\n");
    assert_eq!(&data[recs[4].raw.clone()], b"C,z");
    let total: usize = recs.iter().map(|r| r.raw.len()).sum();
    assert_eq!(total, data.len(), "the records tile the input");
    let u = oracle(b"a\n\"b\nc", b',');
    assert!(u[1].unterminated && u[1].line == 2 && u[1].fields == [b"b\nc".to_vec()]);
    let m = oracle(b"\"ab\"c,d\n", b',');
    assert!(m[0].malformed && m[0].fields == [b"abc".to_vec(), b"d".to_vec()]);
    assert_eq!(skip_physical_lines(b"a\r\nb\rc\nd", 3), 7);
    // The contract's NHS-number rules, as the tests read them.
    assert_eq!(
        classify(b"943 476 5919", false),
        Ok(Some("9434765919".into()))
    );
    assert_eq!(classify(b"943 476 5919", true), Err("non_digit"));
    assert_eq!(
        classify(b" 9434765919 ", false),
        Ok(Some("9434765919".into()))
    );
    assert_eq!(classify(b"9.43477E+09", false), Err("non_digit"));
    assert_eq!(classify(b"9990000019", false), Err("check_digit_mismatch"));
    assert_eq!(
        classify(b"9990000003", false),
        Err("no_check_digit_possible")
    );
    assert_eq!(classify(b"999000001", false), Err("wrong_length"));
    assert_eq!(classify(b"  ", false), Ok(None));
}

#[test]
fn every_corpus_number_is_a_test_number() {
    // Only 999-range numbers and the published test patients; the valid ones pass Modulus 11.
    let published =
        std::fs::read_to_string(repo_root().join("testdata/test-patients.csv")).unwrap();
    for run in forbidden()
        .iter()
        .filter(|r| r.len() == 10 && r.bytes().all(|b| b.is_ascii_digit()))
    {
        // 9434765919 is the NHS's documented example number (used by the issue).
        assert!(
            run.starts_with("999") || published.contains(run.as_str()) || run == "9434765919",
            "{run} is neither 999-range nor a published test patient"
        );
    }
    for nhs in ALLOWED.iter().chain(&OPTED_OUT) {
        assert!(check_ten(nhs.as_bytes()).is_ok(), "{nhs}");
    }
}

#[test]
fn rejects_option_names_the_report_and_it_lists_no_values() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let allowed = cwd.join("allowed.dat");
    std::fs::write(&allowed, ALLOWED.map(|n| format!("{n},\n")).concat()).unwrap();
    let input = corpus("bad_quoting.csv");
    let cleared = cwd.join("cleared.csv");
    let rejects = cwd.join("elsewhere.csv");
    let out = ndop(
        cwd,
        &[
            "filter",
            p(&input),
            "--column",
            "nhs_number",
            "--allowed",
            p(&allowed),
            "--out",
            p(&cleared),
            "--rejects",
            p(&rejects),
        ],
    );
    assert_code(&out, 0, "filter --rejects");
    let f = json(&out.stdout, "filter --rejects");
    assert_eq!(
        Path::new(f["rejects"].as_str().unwrap()),
        rejects.as_path(),
        "{f}"
    );
    assert_mode_0600(&rejects);
    assert_mode_0600(&cleared);
    let c = case("bad_quoting.csv", "nhs_number");
    let e = expect(&std::fs::read(&input).unwrap(), &c.opts());
    let (header, rows) = report_rows(&rejects);
    assert_eq!(header, ["file", "record", "line", "reason"]);
    let listed: Vec<(u64, u64, String)> = rows
        .iter()
        .map(|r| (r[1].parse().unwrap(), r[2].parse().unwrap(), r[3].clone()))
        .collect();
    assert_eq!(listed, e.rejects());
    let text = std::fs::read_to_string(&rejects).unwrap();
    assert_no_number("the rejects report", &text);
    // Only the named report: no default one beside the output.
    let others: Vec<String> = std::fs::read_dir(cwd)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("rejects"))
        .collect();
    assert!(others.is_empty(), "{others:?}");
}
