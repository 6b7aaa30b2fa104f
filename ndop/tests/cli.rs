//! The real `ndop` binary, end to end, on real files in temporary directories: `prepare`,
//! `validate`, `generate`, `reconcile` and `filter`. Exit codes, the files left behind after an
//! error, file modes, standard input against the file path, the two read paths, CSV columns,
//! the reports, and that no invalid NHS-number value from the input is ever printed.
//!
//! Fixtures in `testdata/`: `int-test-patients.dat` (the 20 published INT test patients in POS
//! form), `malformed.dat` (lines of every invalid reason, built from test-patient and 999-range
//! numbers) and `extract.csv` (several rows per INT patient, a quoted comma, one invalid row).

mod util;

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

const MAILBOX: &str = "X26ABC1";

/// The invalid values in `malformed.dat` and `extract.csv`: none may ever reach stdout or stderr.
const INVALID_VALUES: [&str; 8] = [
    "969411641,",
    "96941164220",
    "969411643X",
    "96941A6449",
    "9694116415",
    "9694116423",
    "9990000003",
    "9990000145",
];

/// The INT test patients who have an opt-out (the POS does not return them).
const OPTED_OUT: [&str; 10] = [
    "9694116414",
    "9694116422",
    "9694116430",
    "9694116449",
    "9694116457",
    "9694116465",
    "9694116473",
    "9694116481",
    "9694116503",
    "9694116511",
];

/// The INT test patients without an opt-out (the POS returns them).
const NOT_OPTED_OUT: [&str; 10] = [
    "9694116538",
    "9694116546",
    "9694116554",
    "9694116562",
    "9694116570",
    "9694116589",
    "9694116597",
    "9694116600",
    "9694116619",
    "9694116627",
];

// ---------------------------------------------------------------- helpers

use util::fixture;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Runs `ndop` in `cwd` with `stdin` (empty when `None`) and checks that neither output stream
/// holds an invalid value from the fixtures.
fn ndop_in(cwd: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = util::ndop_command()
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ndop starts");
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            input.write_all(bytes).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for v in INVALID_VALUES {
        assert!(
            !stdout.contains(v) && !stderr.contains(v),
            "ndop {args:?} printed the invalid value {v:?}\nstdout: {stdout}\nstderr: {stderr}"
        );
    }
    out
}

fn ndop(cwd: &Path, args: &[&str]) -> Output {
    ndop_in(cwd, args, None)
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

#[track_caller]
fn assert_code(out: &Output, want: i32) {
    assert_eq!(
        code(out),
        want,
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes));
    })
}

fn read_json(path: &Path) -> Value {
    json(&std::fs::read(path).unwrap())
}

fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key} in {v}"))
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// The `.dat` files in `dir`, sorted by name, with their bytes.
fn dats(dir: &Path) -> Vec<(String, Vec<u8>)> {
    names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".dat"))
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n)).unwrap();
            (n, bytes)
        })
        .collect()
}

#[track_caller]
fn assert_mode_0600(path: &Path) {
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
}

/// No `.dat` (nor a temporary file standing for one) in `dir`, if it exists at all.
#[track_caller]
fn assert_no_dat(dir: &Path) {
    if dir.exists() {
        let left: Vec<String> = names(dir)
            .into_iter()
            .filter(|n| n.contains(".dat") || n.contains(".ctl") || n.contains("tmp"))
            .collect();
        assert!(
            left.is_empty(),
            "left behind in {}: {left:?}",
            dir.display()
        );
    }
}

/// The counting invariants of a summary.
#[track_caller]
fn assert_invariants(s: &Value) {
    for key in [
        "lines",
        "valid",
        "unique",
        "duplicates",
        "invalid",
        "blank",
        "unparseable",
    ] {
        n(s, key);
    }
    assert_eq!(
        n(s, "lines"),
        n(s, "valid") + n(s, "invalid") + n(s, "blank") + n(s, "unparseable"),
        "{s}"
    );
    assert_eq!(n(s, "valid"), n(s, "unique") + n(s, "duplicates"), "{s}");
    for bucket in ["invalid", "unparseable"] {
        let by_reason: u64 = s[format!("{bucket}_by_reason")]
            .as_object()
            .expect("by_reason is an object")
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(by_reason, n(s, bucket), "{s}");
    }
}

fn prepare_args<'a>(inputs: &[&'a str], out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["prepare"];
    args.extend_from_slice(inputs);
    args.extend_from_slice(&["--out", out, "--mailbox", MAILBOX, "--date", "2026-11-23"]);
    args.extend_from_slice(extra);
    args
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn pos_lines(numbers: &[&str]) -> Vec<u8> {
    numbers
        .iter()
        .flat_map(|n| format!("{n},\r\n").into_bytes())
        .collect()
}

// ---------------------------------------------------------------- fixtures and help

#[test]
fn the_int_fixture_is_the_twenty_int_test_patients_in_pos_form() {
    let csv = std::fs::read_to_string(fixture("test-patients.csv")).unwrap();
    let want: String = csv
        .lines()
        .filter(|l| l.starts_with("int,"))
        .map(|l| format!("{},\r\n", l.split(',').nth(1).unwrap()))
        .collect();
    let dat = std::fs::read_to_string(fixture("int-test-patients.dat")).unwrap();
    assert_eq!(dat, want);
    assert_eq!(dat.lines().count(), 20);
    let all: BTreeSet<&str> = OPTED_OUT.iter().chain(&NOT_OPTED_OUT).copied().collect();
    let listed: BTreeSet<&str> = dat.lines().map(|l| &l[..10]).collect();
    assert_eq!(all, listed);
}

#[test]
fn help_documents_every_exit_code() {
    let dir = tempdir();
    let out = ndop(dir.path(), &["--help"]);
    assert_code(&out, 0);
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("Exit codes:"), "{help}");
    for c in 0..=6 {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{c}  "))),
            "exit code {c} not documented:\n{help}"
        );
    }
    for sub in ["prepare", "validate", "generate", "reconcile", "filter"] {
        let out = ndop(dir.path(), &[sub, "--help"]);
        assert_code(&out, 0);
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: ndop"));
    }
}

#[test]
fn send_help_names_the_journal_file() {
    let dir = tempdir();
    let out = ndop(dir.path(), &["send", "--help"]);
    assert_code(&out, 0);
    let help = String::from_utf8_lossy(&out.stdout);
    let journal = format!("WORK/{}", pos_client::journal::JOURNAL_FILE);
    assert!(
        help.contains(&journal),
        "send --help does not name {journal}:\n{help}"
    );
}

// ---------------------------------------------------------------- validate

#[test]
fn validate_reports_every_reason_with_its_line_number() {
    let dir = tempdir();
    let input = fixture("malformed.dat");
    let rep = dir.path().join("report");
    let out = ndop(dir.path(), &["validate", p(&input), "--out", p(&rep)]);
    assert_code(&out, 0);
    let s = json(&out.stdout);
    assert_invariants(&s);
    assert_eq!(n(&s, "lines"), 16);
    assert_eq!(n(&s, "valid"), 7);
    assert_eq!(n(&s, "unique"), 6);
    assert_eq!(n(&s, "duplicates"), 1);
    assert_eq!(n(&s, "invalid"), 8);
    assert_eq!(n(&s, "blank"), 1);
    assert_eq!(n(&s, "normalised"), 3);
    assert_eq!(n(&s, "placeholder"), 1);
    assert_eq!(
        s["invalid_by_reason"],
        serde_json::json!({
            "check_digit_mismatch": 2,
            "no_check_digit_possible": 2,
            "non_digit": 2,
            "wrong_length": 2
        })
    );

    // The report directory: the same summary, and invalid.csv with file, record, line, reason,
    // value (a `.dat` line is a record: the two numbers agree).
    assert_eq!(names(&rep), ["invalid.csv", "summary.json"]);
    assert_mode_0600(&rep.join("invalid.csv"));
    assert_mode_0600(&rep.join("summary.json"));
    let file_summary = read_json(&rep.join("summary.json"));
    for key in ["lines", "valid", "unique", "duplicates", "invalid", "blank"] {
        assert_eq!(file_summary[key], s[key], "{key}");
    }
    let invalid = std::fs::read_to_string(rep.join("invalid.csv")).unwrap();
    let rows: Vec<Vec<&str>> = invalid.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0], ["file", "record", "line", "reason", "value"]);
    let got: Vec<(u64, &str, &str)> = rows[1..]
        .iter()
        .map(|r| {
            assert!(r[0].ends_with("malformed.dat"), "{r:?}");
            assert_eq!(r[1], r[2], "record and line");
            (r[2].parse().unwrap(), r[3], r[4])
        })
        .collect();
    assert_eq!(
        got,
        [
            (2, "wrong_length", "969411641"),
            (3, "wrong_length", "96941164220"),
            (4, "non_digit", "969411643X"),
            (5, "non_digit", "96941A6449"),
            (6, "check_digit_mismatch", "9694116415"),
            (7, "check_digit_mismatch", "9694116423"),
            (8, "no_check_digit_possible", "9990000003"),
            (9, "no_check_digit_possible", "9990000145"),
        ]
    );
}

#[test]
fn validate_strict_and_reject_placeholders_move_lines_to_invalid() {
    let dir = tempdir();
    let input = fixture("malformed.dat");
    let out = ndop(
        dir.path(),
        &["validate", p(&input), "--strict", "--reject-placeholders"],
    );
    assert_code(&out, 0);
    let s = json(&out.stdout);
    assert_invariants(&s);
    // The three normalised forms and the placeholder are now invalid.
    assert_eq!(n(&s, "invalid"), 12);
    assert_eq!(n(&s, "normalised"), 0);
    assert_eq!(n(&s, "valid"), 3);
    assert_eq!(s["invalid_by_reason"]["placeholder"], 1);
}

#[test]
fn fail_on_invalid_exits_1_and_still_writes_the_reports() {
    let dir = tempdir();
    let bad = fixture("malformed.dat");
    let good = fixture("int-test-patients.dat");

    let out = ndop(dir.path(), &["validate", p(&bad), "--fail-on-invalid"]);
    assert_code(&out, 1);
    assert_eq!(n(&json(&out.stdout), "invalid"), 8);
    let out = ndop(dir.path(), &["validate", p(&good), "--fail-on-invalid"]);
    assert_code(&out, 0);

    let outbox = dir.path().join("outbox");
    let out = ndop(
        dir.path(),
        &prepare_args(&[p(&bad)], p(&outbox), &["--fail-on-invalid"]),
    );
    assert_code(&out, 1);
    assert_eq!(
        names(&outbox),
        [
            "X26ABC1-231126-0001.ctl",
            "X26ABC1-231126-0001.dat",
            "invalid.csv",
            "summary.json"
        ]
    );
    let outbox = dir.path().join("outbox2");
    let out = ndop(
        dir.path(),
        &prepare_args(&[p(&good)], p(&outbox), &["--fail-on-invalid"]),
    );
    assert_code(&out, 0);
}

// ---------------------------------------------------------------- exit codes for errors

#[test]
fn bad_arguments_exit_2() {
    let dir = tempdir();
    let input = fixture("int-test-patients.dat");
    let input = p(&input);
    let out_dir = dir.path().join("o");
    let o = p(&out_dir);
    for args in [
        vec![],
        vec!["no-such-command"],
        vec!["prepare", input, "--mailbox", MAILBOX],
        vec!["prepare", input, "--out", o],
        vec!["validate"],
        vec!["validate", input, "--io", "bogus"],
        vec!["validate", input, "--column", "0"],
        vec!["generate", "--out", "g.dat"],
        vec!["reconcile", "--request", input, "--out", o],
        vec!["filter", input, "--out", "f.dat"],
    ] {
        let out = ndop(dir.path(), &args);
        assert_eq!(code(&out), 2, "ndop {args:?}");
    }
    let out = ndop(dir.path(), &prepare_args(&[input], o, &["--seq", "10000"]));
    assert_code(&out, 2);
    assert_no_dat(&out_dir);
}

#[test]
fn an_unreadable_input_exits_3_and_leaves_no_dat() {
    let dir = tempdir();
    let good = fixture("int-test-patients.dat");
    let missing = dir.path().join("missing.dat");
    let a_dir = dir.path().join("a-directory");
    std::fs::create_dir(&a_dir).unwrap();

    for bad in [&missing, &a_dir] {
        let out = ndop(dir.path(), &["validate", p(bad)]);
        assert_code(&out, 3);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(p(bad)), "the message names the file: {err}");

        // The good input is read first: its numbers must not be written anyway.
        let outbox = dir.path().join("outbox");
        let out = ndop(
            dir.path(),
            &prepare_args(&[p(&good), p(bad)], p(&outbox), &[]),
        );
        assert_code(&out, 3);
        assert_no_dat(&outbox);
        if outbox.exists() {
            std::fs::remove_dir_all(&outbox).unwrap();
        }
    }

    let r = dir.path().join("r");
    let out = ndop(
        dir.path(),
        &[
            "reconcile",
            "--request",
            p(&good),
            "--response",
            p(&missing),
            "--out",
            p(&r),
        ],
    );
    assert_code(&out, 3);
    let f = dir.path().join("f.dat");
    let out = ndop(
        dir.path(),
        &["filter", p(&missing), "--allowed", p(&good), "--out", p(&f)],
    );
    assert_code(&out, 3);
    assert!(!f.exists());
    let out = ndop(
        dir.path(),
        &["filter", p(&good), "--allowed", p(&missing), "--out", p(&f)],
    );
    assert_code(&out, 3);
    assert!(!f.exists());
}

#[test]
fn a_missing_csv_column_exits_3_and_leaves_no_dat() {
    let dir = tempdir();
    let extract = fixture("extract.csv");
    let out = ndop(dir.path(), &["validate", p(&extract), "--column", "nhs"]);
    assert_code(&out, 3);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("extract.csv") && err.contains("nhs"), "{err}");

    let outbox = dir.path().join("outbox");
    let out = ndop(
        dir.path(),
        &prepare_args(&[p(&extract)], p(&outbox), &["--column", "nhs_no"]),
    );
    assert_code(&out, 3);
    assert_no_dat(&outbox);

    let f = dir.path().join("f.csv");
    let allowed = fixture("int-test-patients.dat");
    let out = ndop(
        dir.path(),
        &[
            "filter",
            p(&extract),
            "--column",
            "nhs",
            "--allowed",
            p(&allowed),
            "--out",
            p(&f),
        ],
    );
    assert_code(&out, 3);
    assert!(!f.exists());
}

#[test]
fn an_output_that_is_not_new_exits_4_and_touches_nothing() {
    let dir = tempdir();
    let input = fixture("int-test-patients.dat");
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep.txt"), b"mine").unwrap();

    let runs: Vec<Vec<&str>> = vec![
        prepare_args(&[p(&input)], p(&full), &[]),
        vec!["validate", p(&input), "--out", p(&full)],
        vec![
            "reconcile",
            "--request",
            p(&input),
            "--response",
            p(&input),
            "--out",
            p(&full),
        ],
    ];
    for args in runs {
        let out = ndop(dir.path(), &args);
        assert_code(&out, 4);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not empty"), "{err}");
        assert_eq!(names(&full), ["keep.txt"]);
        assert_eq!(std::fs::read(full.join("keep.txt")).unwrap(), b"mine");
    }

    let existing = dir.path().join("existing.dat");
    std::fs::write(&existing, b"mine").unwrap();
    let out = ndop(
        dir.path(),
        &[
            "filter",
            p(&input),
            "--allowed",
            p(&input),
            "--out",
            p(&existing),
        ],
    );
    assert_code(&out, 4);
    let out = ndop(
        dir.path(),
        &["generate", "--lines", "10", "--out", p(&existing)],
    );
    assert_code(&out, 4);
    assert_eq!(std::fs::read(&existing).unwrap(), b"mine");
}

#[test]
fn a_sequence_overflow_fails_and_leaves_no_dat() {
    // Three unique numbers, one per file, from 9998: the third file would be number 10000.
    let dir = tempdir();
    let input = dir.path().join("three.dat");
    std::fs::write(&input, pos_lines(&NOT_OPTED_OUT[..3])).unwrap();
    let outbox = dir.path().join("outbox");
    let out = ndop(
        dir.path(),
        &prepare_args(
            &[p(&input)],
            p(&outbox),
            &["--seq", "9998", "--max-records", "1"],
        ),
    );
    assert_ne!(code(&out), 0);
    assert_code(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("9999"));
    assert_no_dat(&outbox);

    // Two fit exactly.
    std::fs::write(&input, pos_lines(&NOT_OPTED_OUT[..2])).unwrap();
    let outbox = dir.path().join("outbox2");
    let out = ndop(
        dir.path(),
        &prepare_args(
            &[p(&input)],
            p(&outbox),
            &["--seq", "9998", "--max-records", "1"],
        ),
    );
    assert_code(&out, 0);
    let files: Vec<String> = dats(&outbox).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        files,
        ["X26ABC1-231126-9998.dat", "X26ABC1-231126-9999.dat"]
    );
}

// ---------------------------------------------------------------- prepare's output

#[test]
fn prepare_writes_pos_files_with_ctl_reports_and_mode_0600() {
    let dir = tempdir();
    let input = fixture("int-test-patients.dat");
    let outbox = dir.path().join("outbox");
    let out = ndop(dir.path(), &prepare_args(&[p(&input)], p(&outbox), &[]));
    assert_code(&out, 0);
    assert_eq!(
        names(&outbox),
        [
            "X26ABC1-231126-0001.ctl",
            "X26ABC1-231126-0001.dat",
            "invalid.csv",
            "summary.json"
        ]
    );
    for name in names(&outbox) {
        assert_mode_0600(&outbox.join(name));
    }
    // The fixture is already sorted, unique and in POS form: it comes back byte for byte.
    let dat = std::fs::read(outbox.join("X26ABC1-231126-0001.dat")).unwrap();
    assert_eq!(dat, std::fs::read(&input).unwrap());
    let ctl = std::fs::read_to_string(outbox.join("X26ABC1-231126-0001.ctl")).unwrap();
    for want in [
        "<WorkflowId>SPINE_NTT_UPHOLDING</WorkflowId>",
        "<From_DTS>X26ABC1</From_DTS>",
        "<To_DTS>X26OT154</To_DTS>",
        "<Subject>X26ABC1-231126-0001</Subject>",
    ] {
        assert!(ctl.contains(want), "{want} not in {ctl}");
    }
    let s = read_json(&outbox.join("summary.json"));
    assert_invariants(&s);
    assert_eq!(n(&s, "lines"), 20);
    assert_eq!(n(&s, "unique"), 20);
    let files = s["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["name"], "X26ABC1-231126-0001.dat");
    assert_eq!(n(&files[0], "records"), 20);
    assert_eq!(n(&files[0], "bytes"), dat.len() as u64);
    assert_eq!(files[0]["sha256"], hex::encode(Sha256::digest(&dat)));
    assert_eq!(
        std::fs::read_to_string(outbox.join("invalid.csv"))
            .unwrap()
            .lines()
            .count(),
        1,
        "only the header"
    );

    // --env live, --line-ending lf and --max-records.
    let outbox = dir.path().join("live");
    let out = ndop(
        dir.path(),
        &prepare_args(
            &[p(&input)],
            p(&outbox),
            &[
                "--env",
                "live",
                "--line-ending",
                "lf",
                "--max-records",
                "8",
                "--tag",
                "study42",
            ],
        ),
    );
    assert_code(&out, 0);
    let files = dats(&outbox);
    let records: Vec<usize> = files.iter().map(|(_, b)| b.len() / 11).collect();
    assert_eq!(records, [8, 8, 4]);
    let joined: Vec<u8> = files.iter().flat_map(|(_, b)| b.clone()).collect();
    let want = String::from_utf8(std::fs::read(&input).unwrap())
        .unwrap()
        .replace("\r\n", "\n");
    assert_eq!(String::from_utf8(joined).unwrap(), want);
    for (name, _) in &files {
        let ctl_name = name.replace(".dat", ".ctl");
        let ctl = std::fs::read_to_string(outbox.join(&ctl_name)).unwrap();
        assert!(ctl.contains("<To_DTS>X26HC065</To_DTS>"), "{ctl}");
        assert!(ctl.contains("study42"), "{ctl}");
        assert_mode_0600(&outbox.join(name));
        assert_mode_0600(&outbox.join(ctl_name));
    }
}

#[test]
fn prepare_deduplicates_and_normalises_the_malformed_fixture() {
    let dir = tempdir();
    let input = fixture("malformed.dat");
    let outbox = dir.path().join("outbox");
    let out = ndop(dir.path(), &prepare_args(&[p(&input)], p(&outbox), &[]));
    assert_code(&out, 0);
    let files = dats(&outbox);
    assert_eq!(files.len(), 1);
    assert_eq!(
        String::from_utf8(files[0].1.clone()).unwrap(),
        "9694116414,\r\n9694116457,\r\n9694116465,\r\n9694116473,\r\n9990000018,\r\n9999999999,\r\n"
    );
    let s = read_json(&outbox.join("summary.json"));
    assert_invariants(&s);
    assert_eq!(n(&s, "unique"), 6);
    assert_eq!(n(&s, "duplicates"), 1);
    assert_eq!(n(&s, "invalid"), 8);
    assert_eq!(n(&s, "blank"), 1);
    assert_eq!(n(&s, "normalised"), 3);
    assert_eq!(n(&s, "placeholder"), 1);
    assert_eq!(s["invalid_by_reason"]["wrong_length"], 2);
    assert_eq!(s["files"][0]["records"], 6);
}

#[test]
fn stdin_and_both_read_paths_give_identical_output() {
    let dir = tempdir();
    for (fixture_name, extra) in [
        ("malformed.dat", vec![]),
        ("extract.csv", vec!["--column", "nhs_number"]),
    ] {
        let input = fixture(fixture_name);
        let bytes = std::fs::read(&input).unwrap();
        let mut results = Vec::new();
        for (k, (source, io)) in [
            (p(&input), "auto"),
            (p(&input), "read"),
            (p(&input), "mmap"),
            ("-", "auto"),
            ("-", "read"),
        ]
        .into_iter()
        .enumerate()
        {
            let outbox = dir.path().join(format!("{fixture_name}-{k}"));
            let mut more = extra.clone();
            more.extend_from_slice(&["--io", io, "--threads", "2"]);
            let args = prepare_args(&[source], p(&outbox), &more);
            let stdin = (source == "-").then_some(bytes.as_slice());
            let out = ndop_in(dir.path(), &args, stdin);
            assert_code(&out, 0);
            let s = read_json(&outbox.join("summary.json"));
            assert_invariants(&s);
            let counts: Vec<u64> = ["lines", "valid", "unique", "duplicates", "invalid", "blank"]
                .iter()
                .map(|k| n(&s, k))
                .collect();
            // invalid.csv names the source, `-` for stdin: compare line, reason and value.
            let invalid: Vec<String> = std::fs::read_to_string(outbox.join("invalid.csv"))
                .unwrap()
                .lines()
                .skip(1)
                .map(|l| l.split_once(',').unwrap().1.to_string())
                .collect();
            results.push((dats(&outbox), counts, invalid));

            // validate agrees, through the same source and path.
            let mut vargs = vec!["validate", source, "--io", io];
            vargs.extend_from_slice(&extra);
            let out = ndop_in(dir.path(), &vargs, stdin);
            assert_code(&out, 0);
            let v = json(&out.stdout);
            assert_eq!(n(&v, "unique"), results[k].1[2]);
            assert_eq!(n(&v, "invalid"), results[k].1[4]);
        }
        assert!(!results[0].0.is_empty());
        for r in &results[1..] {
            assert_eq!(r, &results[0], "{fixture_name}");
        }
    }
}

// ---------------------------------------------------------------- CSV

#[test]
fn csv_column_by_name_and_by_position_agree() {
    let dir = tempdir();
    let extract = fixture("extract.csv");
    let mut outputs = Vec::new();
    for (k, column) in ["nhs_number", "2"].into_iter().enumerate() {
        let outbox = dir.path().join(format!("o{k}"));
        let out = ndop(
            dir.path(),
            &prepare_args(&[p(&extract)], p(&outbox), &["--column", column]),
        );
        assert_code(&out, 0);
        let s = read_json(&outbox.join("summary.json"));
        assert_invariants(&s);
        assert_eq!(n(&s, "lines"), 51, "data rows, the header not counted");
        assert_eq!(n(&s, "unique"), 20);
        assert_eq!(n(&s, "duplicates"), 30);
        assert_eq!(n(&s, "invalid"), 1);
        assert_eq!(s["invalid_by_reason"]["check_digit_mismatch"], 1);
        let invalid = std::fs::read_to_string(outbox.join("invalid.csv")).unwrap();
        let rows: Vec<&str> = invalid.lines().skip(1).collect();
        assert_eq!(rows.len(), 1);
        // Line 12 of the file (the header is line 1).
        assert!(
            rows[0].ends_with(",12,check_digit_mismatch,9694116415"),
            "{invalid}"
        );
        let files = dats(&outbox);
        assert_eq!(files.len(), 1);
        assert_eq!(
            files[0].1,
            std::fs::read(fixture("int-test-patients.dat")).unwrap()
        );
        outputs.push(files);
    }
    assert_eq!(outputs[0], outputs[1]);
}

// ---------------------------------------------------------------- generate

#[test]
fn generate_truth_agrees_with_validate() {
    let dir = tempdir();
    for (k, (format, extra)) in [
        ("dat", vec![]),
        ("plain", vec!["--line-ending", "lf"]),
        ("csv", vec![]),
    ]
    .into_iter()
    .enumerate()
    {
        let file = dir.path().join(format!("g{k}.{format}"));
        let seed = format!("{}", 11 + k);
        let mut args = vec![
            "generate",
            "--lines",
            "3000",
            "--seed",
            &seed,
            "--dup-frac",
            "0.3",
            "--invalid-frac",
            "0.05",
            "--blank-frac",
            "0.02",
            "--format",
            format,
            "--out",
            p(&file),
        ];
        args.extend_from_slice(&extra);
        let out = ndop(dir.path(), &args);
        assert_code(&out, 0);
        assert_mode_0600(&file);
        let truth_path = PathBuf::from(format!("{}.truth.json", file.display()));
        let truth = read_json(&truth_path);
        assert_invariants(&truth);
        assert_eq!(n(&truth, "lines"), 3000);
        assert!(n(&truth, "invalid") > 0 && n(&truth, "duplicates") > 0);

        let mut vargs = vec!["validate", p(&file)];
        if format == "csv" {
            vargs.extend_from_slice(&["--column", "nhs_number"]);
        }
        let out = ndop(dir.path(), &vargs);
        assert_code(&out, 0);
        let s = json(&out.stdout);
        assert_invariants(&s);
        for key in [
            "lines",
            "valid",
            "unique",
            "duplicates",
            "invalid",
            "blank",
            "invalid_by_reason",
        ] {
            assert_eq!(s[key], truth[key], "{format}: {key}");
        }

        // The same seed gives the same file.
        let again = dir.path().join(format!("again{k}.{format}"));
        let pos = args.iter().position(|a| *a == p(&file)).unwrap();
        args[pos] = p(&again);
        assert_code(&ndop(dir.path(), &args), 0);
        assert_eq!(
            std::fs::read(&file).unwrap(),
            std::fs::read(&again).unwrap()
        );
    }
}

// ---------------------------------------------------------------- reconcile and filter

#[test]
fn reconcile_and_filter_keep_exactly_the_rows_of_patients_without_an_opt_out() {
    let dir = tempdir();
    let extract = fixture("extract.csv");
    let outbox = dir.path().join("outbox");
    let out = ndop(
        dir.path(),
        &prepare_args(&[p(&extract)], p(&outbox), &["--column", "nhs_number"]),
    );
    assert_code(&out, 0);
    let request = outbox.join("X26ABC1-231126-0001.dat");

    // The POS returns the patients without an opt-out.
    let response = dir.path().join("response.dat");
    std::fs::write(&response, pos_lines(&NOT_OPTED_OUT)).unwrap();

    let rec = dir.path().join("reconciled");
    let out = ndop(
        dir.path(),
        &[
            "reconcile",
            "--request",
            p(&request),
            "--response",
            p(&response),
            "--out",
            p(&rec),
        ],
    );
    assert_code(&out, 0);
    let s = json(&out.stdout);
    assert_eq!(n(&s, "requested"), 20);
    assert_eq!(n(&s, "returned"), 10);
    assert_eq!(n(&s, "opted_out"), 10);
    assert_eq!(n(&s, "unexpected"), 0);
    for name in ["opted-out.txt", "unexpected.txt", "summary.json"] {
        assert_mode_0600(&rec.join(name));
    }
    let opted: Vec<String> = std::fs::read_to_string(rec.join("opted-out.txt"))
        .unwrap()
        .lines()
        .map(|l| l.trim_end_matches(',').to_string())
        .collect();
    assert_eq!(opted, OPTED_OUT);
    assert_eq!(std::fs::read(rec.join("unexpected.txt")).unwrap(), b"");
    assert_eq!(n(&read_json(&rec.join("summary.json")), "opted_out"), 10);

    // Filter the extract: the header and exactly the rows of the ten, byte for byte.
    let cleared = dir.path().join("cleared.csv");
    let out = ndop(
        dir.path(),
        &[
            "filter",
            p(&extract),
            "--column",
            "nhs_number",
            "--allowed",
            p(&response),
            "--requested",
            p(&request),
            "--out",
            p(&cleared),
        ],
    );
    assert_code(&out, 0);
    assert_mode_0600(&cleared);
    let original = std::fs::read_to_string(&extract).unwrap();
    let want: String = original
        .split_inclusive("\r\n")
        .enumerate()
        .filter(|(i, row)| *i == 0 || NOT_OPTED_OUT.contains(&row.split(',').nth(1).unwrap()))
        .map(|(_, row)| row)
        .collect();
    let got = std::fs::read_to_string(&cleared).unwrap();
    assert_eq!(got, want);
    assert!(got.contains(",\"A01,B02\"\r\n"), "the quoted field is kept");
    assert_eq!(got.lines().count(), 26);
    let f = json(&out.stdout);
    assert_eq!(n(&f, "rows"), 51);
    assert_eq!(n(&f, "kept"), 25);
    assert_eq!(n(&f, "opted_out"), 25);
    assert_eq!(n(&f, "not_checked"), 0);
    assert_eq!(n(&f, "invalid"), 1);
    assert_eq!(n(&f, "headers"), 1);
    assert_eq!(
        n(&f, "rows"),
        n(&f, "kept")
            + n(&f, "opted_out")
            + n(&f, "not_checked")
            + n(&f, "invalid")
            + n(&f, "blank")
    );

    // By column position, without --requested: the same rows.
    let cleared2 = dir.path().join("cleared2.csv");
    let out = ndop(
        dir.path(),
        &[
            "filter",
            p(&extract),
            "--column",
            "2",
            "--allowed",
            p(&response),
            "--out",
            p(&cleared2),
        ],
    );
    assert_code(&out, 0);
    assert_eq!(std::fs::read_to_string(&cleared2).unwrap(), want);
}

#[test]
fn filter_counts_rows_never_requested_as_not_checked() {
    let dir = tempdir();
    let extract = fixture("extract.csv");
    // Only the first five patients of each group were sent; the POS returned the five of them
    // without an opt-out.
    let request = dir.path().join("request.dat");
    let sent: Vec<&str> = OPTED_OUT[..5]
        .iter()
        .chain(&NOT_OPTED_OUT[..5])
        .copied()
        .collect();
    std::fs::write(&request, pos_lines(&sent)).unwrap();
    let response = dir.path().join("response.dat");
    std::fs::write(&response, pos_lines(&NOT_OPTED_OUT[..5])).unwrap();
    let cleared = dir.path().join("cleared.csv");
    let out = ndop(
        dir.path(),
        &[
            "filter",
            p(&extract),
            "--column",
            "nhs_number",
            "--allowed",
            p(&response),
            "--requested",
            p(&request),
            "--out",
            p(&cleared),
        ],
    );
    assert_code(&out, 0);
    let original = std::fs::read_to_string(&extract).unwrap();
    let rows_of = |set: &[&str]| {
        original
            .lines()
            .skip(1)
            .filter(|r| set.contains(&r.split(',').nth(1).unwrap()))
            .count() as u64
    };
    let f = json(&out.stdout);
    assert_eq!(n(&f, "kept"), rows_of(&NOT_OPTED_OUT[..5]));
    assert_eq!(n(&f, "opted_out"), rows_of(&OPTED_OUT[..5]));
    assert_eq!(
        n(&f, "not_checked"),
        rows_of(&OPTED_OUT[5..]) + rows_of(&NOT_OPTED_OUT[5..])
    );
    assert_eq!(n(&f, "invalid"), 1);
    let got = std::fs::read_to_string(&cleared).unwrap();
    assert_eq!(got.lines().count() as u64, 1 + n(&f, "kept"));
}

#[test]
fn filter_keeps_a_bom_through_stdin_pipes_and_both_read_paths() {
    let dir = tempdir();
    let response = dir.path().join("response.dat");
    std::fs::write(&response, pos_lines(&NOT_OPTED_OUT)).unwrap();
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    for (fixture_name, extra) in [
        ("extract.csv", vec!["--column", "nhs_number"]),
        ("int-test-patients.dat", vec![]),
    ] {
        let plain = std::fs::read(fixture(fixture_name)).unwrap();
        // Without a BOM the output has none; with one, the same rows follow it.
        let mut want_plain = None;
        for bom in [false, true] {
            let bytes = if bom {
                [BOM, &plain].concat()
            } else {
                plain.clone()
            };
            let input = dir.path().join(format!("{}-{fixture_name}", u8::from(bom)));
            std::fs::write(&input, &bytes).unwrap();
            let mut outputs = Vec::new();
            for (k, (source, io)) in [
                (p(&input), "mmap"),
                (p(&input), "read"),
                (p(&input), "auto"),
                ("-", "auto"),
                ("-", "read"),
            ]
            .into_iter()
            .enumerate()
            {
                let cleared = dir
                    .path()
                    .join(format!("cleared-{}-{k}-{fixture_name}", u8::from(bom)));
                let mut args = vec![
                    "filter",
                    source,
                    "--allowed",
                    p(&response),
                    "--out",
                    p(&cleared),
                    "--io",
                    io,
                ];
                args.extend_from_slice(&extra);
                let stdin = (source == "-").then_some(bytes.as_slice());
                let out = ndop_in(dir.path(), &args, stdin);
                assert_code(&out, 0);
                assert_mode_0600(&cleared);
                assert_eq!(
                    json(&out.stdout)["bom"],
                    bom,
                    "{fixture_name} {source} {io}"
                );
                outputs.push(std::fs::read(&cleared).unwrap());
            }
            for o in &outputs[1..] {
                assert_eq!(o, &outputs[0], "{fixture_name}, bom {bom}");
            }
            // A named pipe whose writer sends the first two bytes one at a time: the BOM is
            // still seen, and kept.
            let fifo = dir
                .path()
                .join(format!("fifo-{}-{fixture_name}", u8::from(bom)));
            let made = std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap();
            assert!(made.success());
            let writer = {
                let (fifo, bytes) = (fifo.clone(), bytes.clone());
                std::thread::spawn(move || {
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
                    for b in &bytes[..2] {
                        f.write_all(&[*b]).unwrap();
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    f.write_all(&bytes[2..]).unwrap();
                })
            };
            let cleared = dir
                .path()
                .join(format!("cleared-{}-fifo-{fixture_name}", u8::from(bom)));
            let mut args = vec![
                "filter",
                p(&fifo),
                "--allowed",
                p(&response),
                "--out",
                p(&cleared),
            ];
            args.extend_from_slice(&extra);
            let out = ndop_in(dir.path(), &args, None);
            writer.join().unwrap();
            assert_code(&out, 0);
            assert_eq!(json(&out.stdout)["bom"], bom, "{fixture_name} fifo");
            assert_eq!(
                std::fs::read(&cleared).unwrap(),
                outputs[0],
                "{fixture_name} fifo"
            );
            let got = &outputs[0];
            assert_eq!(got.starts_with(BOM), bom, "{fixture_name}");
            assert!(!got[3..].starts_with(BOM), "{fixture_name}: one BOM only");
            match &want_plain {
                None => want_plain = Some(got.clone()),
                Some(plain_out) => assert_eq!(&got[3..], &plain_out[..], "{fixture_name}"),
            }
        }
        // The rows of the ten patients without an opt-out are there.
        let kept = String::from_utf8(want_plain.unwrap()).unwrap();
        assert!(
            NOT_OPTED_OUT.iter().all(|n| kept.contains(n)),
            "{fixture_name}"
        );
        assert!(
            !OPTED_OUT.iter().any(|n| kept.contains(n)),
            "{fixture_name}"
        );
        assert_eq!(
            kept.starts_with("record_id,"),
            fixture_name.ends_with(".csv")
        );
    }
}

#[test]
fn reconcile_against_a_rejection_exits_6() {
    let dir = tempdir();
    let request = fixture("int-test-patients.dat");
    let rejection = dir.path().join("rejection.dat");
    std::fs::write(
        &rejection,
        b"The file contains one or more invalid NHS Numbers.\r\n",
    )
    .unwrap();
    let rec = dir.path().join("r");
    let out = ndop(
        dir.path(),
        &[
            "reconcile",
            "--request",
            p(&request),
            "--response",
            p(&rejection),
            "--out",
            p(&rec),
        ],
    );
    assert_code(&out, 6);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rejection.dat"), "{err}");
    // Nobody may be taken for opted out on the strength of a rejection.
    assert!(!rec.join("opted-out.txt").exists());
}

#[test]
fn reconcile_with_unexpected_numbers_exits_6_and_lists_them() {
    let dir = tempdir();
    let request = fixture("int-test-patients.dat");
    let response = dir.path().join("response.dat");
    std::fs::write(&response, pos_lines(&[NOT_OPTED_OUT[0], "9990000018"])).unwrap();
    let rec = dir.path().join("r");
    let out = ndop(
        dir.path(),
        &[
            "reconcile",
            "--request",
            p(&request),
            "--response",
            p(&response),
            "--out",
            p(&rec),
        ],
    );
    assert_code(&out, 6);
    let s = json(&out.stdout);
    assert_eq!(n(&s, "unexpected"), 1);
    assert_eq!(n(&s, "returned"), 2);
    let unexpected = std::fs::read_to_string(rec.join("unexpected.txt")).unwrap();
    assert_eq!(unexpected.trim_end(), "9990000018");
    assert_mode_0600(&rec.join("unexpected.txt"));
}

#[test]
fn reconcile_with_an_empty_result_means_everyone_opted_out() {
    let dir = tempdir();
    let request = fixture("int-test-patients.dat");
    let empty = dir.path().join("empty.dat");
    std::fs::write(&empty, b"").unwrap();
    let rec = dir.path().join("r");
    let out = ndop(
        dir.path(),
        &[
            "reconcile",
            "--request",
            p(&request),
            "--response",
            p(&empty),
            "--out",
            p(&rec),
        ],
    );
    assert_code(&out, 0);
    assert_eq!(n(&json(&out.stdout), "opted_out"), 20);
    let opted = std::fs::read_to_string(rec.join("opted-out.txt")).unwrap();
    assert_eq!(opted.lines().count(), 20);
}

#[test]
fn reconcile_refuses_files_that_are_not_numbers_without_printing_them() {
    let dir = tempdir();
    let good = fixture("int-test-patients.dat");
    let malformed = fixture("malformed.dat");
    let rec = dir.path().join("r1");
    let out = ndop(
        dir.path(),
        &[
            "reconcile",
            "--request",
            p(&malformed),
            "--response",
            p(&good),
            "--out",
            p(&rec),
        ],
    );
    assert_code(&out, 6);
    let rec = dir.path().join("r2");
    let out = ndop(
        dir.path(),
        &[
            "reconcile",
            "--request",
            p(&good),
            "--response",
            p(&malformed),
            "--out",
            p(&rec),
        ],
    );
    assert_code(&out, 6);
}

// ---------------------------------------------------------------- personal data

#[test]
fn no_command_prints_an_invalid_value() {
    // Every run above goes through `ndop_in`, which checks stdout and stderr for the fixtures'
    // invalid values. Here: the other shapes of bad line, each holding a value that must stay
    // out of the messages (invalid.csv legitimately holds it).
    let dir = tempdir();
    let long_value = "9990000026".repeat(7000);
    let secrets = [
        "96941164X9",
        "9990000034 9",
        long_value.as_str(),
        "\"9990000042",
    ];
    let csv = format!(
        "id,nhs_number\n1,{}\n2,{}\n3,{}\n4,{}\n5,9694116538\n",
        secrets[0], secrets[1], secrets[2], secrets[3]
    );
    let input = dir.path().join("secrets.csv");
    std::fs::write(&input, &csv).unwrap();
    let allowed = fixture("int-test-patients.dat");
    let report = dir.path().join("report");
    let outbox = dir.path().join("outbox");
    let cleared = dir.path().join("cleared.csv");
    let runs: Vec<Vec<&str>> = vec![
        vec![
            "validate",
            p(&input),
            "--column",
            "nhs_number",
            "--out",
            p(&report),
        ],
        vec!["validate", p(&input), "--column", "2", "--fail-on-invalid"],
        prepare_args(&[p(&input)], p(&outbox), &["--column", "nhs_number"]),
        vec![
            "filter",
            p(&input),
            "--column",
            "nhs_number",
            "--allowed",
            p(&allowed),
            "--out",
            p(&cleared),
        ],
    ];
    for args in runs {
        let out = ndop(dir.path(), &args);
        assert!(code(&out) <= 1, "{args:?}");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for s in secrets {
            let probe = &s[..s.len().min(11)];
            assert!(
                !text.contains(probe),
                "ndop {args:?} printed {probe:?}:\n{text}"
            );
        }
    }
    let s = read_json(&report.join("summary.json"));
    assert_invariants(&s);
    // The open quote of record 4 is never closed: it runs to the end of the file, swallowing
    // the line of record 5, and the whole record is unparseable (never kept).
    assert_eq!(n(&s, "invalid"), 3);
    assert_eq!(n(&s, "unparseable"), 1);
    assert_eq!(s["unparseable_by_reason"]["unterminated_quote"], 1);
    assert_eq!(n(&s, "valid"), 0);
    let invalid = std::fs::read_to_string(report.join("invalid.csv")).unwrap();
    // (The unterminated record's value spans lines inside its quotes: keep the rows' starts.)
    let at: Vec<(u64, u64)> = invalid
        .lines()
        .filter(|l| l.starts_with(p(&input)))
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect();
    // (record, line): the header is line 1 and not a record.
    assert_eq!(at, [(1, 2), (2, 3), (3, 4), (4, 5)]);
    assert_eq!(
        std::fs::read_to_string(&cleared).unwrap(),
        "id,nhs_number\n"
    );
}
