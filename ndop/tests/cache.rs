//! The results cache through the real `ndop` binary against real mock-mesh servers on
//! loopback: two runs on different injected dates (the mock's clock set back, so the POS
//! answers carry those dates), imported; `filter --cache` at several as-of dates and maximum
//! ages against a naive oracle; the 21-day refusal and its audited override; idempotent and
//! concurrent import; exports read back (CSV by hand, Parquet by DuckDB).

mod util;

use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use util::ndop;

#[track_caller]
fn ok(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// The first `n` valid numbers of the 999 test range from prefix `999000000 + start`.
fn numbers(start: u32, n: usize) -> Vec<u64> {
    (999_000_000 + start..)
        .filter_map(|p| processor::nhs::check_digit_of_prefix(p).map(|c| p as u64 * 10 + c as u64))
        .take(n)
        .collect()
}

/// One `ndop run` of `population` (a line file) against a fresh mock whose clock reads `at`
/// and which opts out a share of numbers chosen by `seed`. Returns the work directory, the
/// numbers requested and the numbers returned (read from the run's own reconciliation).
struct Check {
    work: PathBuf,
    at: i64,
    requested: HashSet<u64>,
    returned: HashSet<u64>,
}

fn check(
    dir: &Path,
    name: &str,
    population: &[u64],
    at: &str,
    seed: u64,
    cache: Option<&Path>,
) -> Check {
    let at: DateTime<Utc> = at.parse().unwrap();
    let (rt, mesh) = mesh_at(at, seed);
    let extract = dir.join(format!("{name}.dat"));
    let text: String = population.iter().map(|n| format!("{n}\n")).collect();
    std::fs::write(&extract, text).unwrap();
    let work = dir.join(name);
    let url = mesh.base_url();
    let mut args = vec![
        "run",
        extract.to_str().unwrap(),
        "--work",
        work.to_str().unwrap(),
        "--mesh",
        &url,
        "--mailbox",
        "X26ABC1",
        "--max-records",
        "150",
        "--interval",
        "0.05",
        "--timeout",
        "30",
    ];
    if let Some(c) = cache {
        args.extend(["--cache", c.to_str().unwrap()]);
    }
    ok(&ndop(&args));
    rt.block_on(mesh.stop());
    let opted_out: HashSet<u64> = std::fs::read_to_string(work.join("reconciled/opted-out.txt"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim_end_matches(',').parse().ok())
        .collect();
    let requested: HashSet<u64> = population.iter().copied().collect();
    assert!(!opted_out.is_empty() && opted_out.len() < requested.len());
    Check {
        work,
        at: at.timestamp_millis(),
        returned: requested.difference(&opted_out).copied().collect(),
        requested,
    }
}

/// A mock MESH whose clock reads `at` and whose POS opts out 30% of numbers by `seed`.
fn mesh_at(at: DateTime<Utc>, seed: u64) -> (tokio::runtime::Runtime, mock_mesh::MockMesh) {
    let mut config = mock_mesh::Config {
        clock: mock_mesh::Clock::starting_at(at),
        ..Default::default()
    };
    config.auth.check_timestamp = false;
    config.pos.optout_rate = 0.3;
    config.pos.optout_seed = seed;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mesh = rt.block_on(mock_mesh::MockMesh::start(config)).unwrap();
    (rt, mesh)
}

/// An empty POS result file.
fn empty_result(path: &Path) -> PathBuf {
    std::fs::write(path, "").unwrap();
    path.to_path_buf()
}

/// The naive oracle: for each number, the newest check at or before `as_of`, no older than
/// `max_age`, that requested it decides. `Some(true)` allowed, `Some(false)` opted out, `None`
/// not checked.
fn oracle(checks: &[&Check], n: u64, as_of: i64, max_age: i64) -> Option<bool> {
    checks
        .iter()
        .filter(|c| c.at <= as_of && as_of - c.at <= max_age && c.requested.contains(&n))
        .max_by_key(|c| c.at)
        .map(|c| c.returned.contains(&n))
}

const DAY: i64 = 86_400_000;

fn ms(t: &str) -> i64 {
    t.parse::<DateTime<Utc>>().unwrap().timestamp_millis()
}

/// A CSV extract `id,nhs_number` with the numbers (each twice), an invalid and a blank row.
fn write_extract(path: &Path, nums: &[u64]) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = Vec::new();
    for (i, n) in nums.iter().chain(nums.iter().step_by(7)).enumerate() {
        rows.push((format!("R{i}"), n.to_string()));
    }
    rows.push(("BAD".into(), "9990000001".into()));
    rows.push(("EMPTY".into(), String::new()));
    let text: String = std::iter::once("id,nhs_number\n".to_string())
        .chain(rows.iter().map(|(id, n)| format!("{id},{n}\n")))
        .collect();
    std::fs::write(path, text).unwrap();
    rows
}

fn kept_ids(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect()
}

/// `ndop cache export --consent-out OUT` as of `as_of` under `age`, with `extra` arguments;
/// its JSON summary.
fn export_consents(
    cache: &Path,
    as_of: &str,
    age: &str,
    out: &Path,
    extra: &[&str],
) -> serde_json::Value {
    let mut args = vec![
        "cache",
        "export",
        "--cache",
        cache.to_str().unwrap(),
        "--as-of",
        as_of,
        "--max-age",
        age,
        "--consent-out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(&ndop(&args))
}

/// The NHS number a Consent is about (`patient.reference` is `Patient/NNNNNNNNNN`).
fn patient_of(consent: &serde_json::Value) -> u64 {
    consent["patient"]["reference"].as_str().unwrap()["Patient/".len()..]
        .parse()
        .unwrap()
}

/// `cache export --consent-out` against the naive oracle: one Consent per number checked in
/// the window, `active` where its newest check did not return it (and, with the full state,
/// `inactive` where it did), dated with that check's time.
fn consents_match_the_oracle(dir: &Path, cache: &Path, checks: &[&Check]) {
    let (as_of, age) = ("2026-10-12T00:00:00Z", "14d");
    let max_age = pos_cache::parse_age(age).unwrap();
    for (name, full) in [("opted-out", false), ("full", true)] {
        let out = dir.join(format!("consents-{name}.ndjson"));
        let s = export_consents(cache, as_of, age, &out, &["--consent-state", name]);
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut got: HashMap<u64, (String, i64)> = HashMap::new();
        for line in std::fs::read_to_string(&out).unwrap().lines() {
            let c: serde_json::Value = serde_json::from_str(line).unwrap();
            let n = patient_of(&c);
            let at = DateTime::parse_from_rfc3339(c["dateTime"].as_str().unwrap())
                .unwrap()
                .timestamp_millis();
            let status = c["status"].as_str().unwrap().to_string();
            assert!(got.insert(n, (status, at)).is_none(), "{n} twice");
        }
        let mut all: BTreeSet<u64> = BTreeSet::new();
        for c in checks {
            all.extend(&c.requested);
        }
        let mut want = 0;
        for n in all {
            let decider = checks
                .iter()
                .filter(|c| c.at <= ms(as_of) && ms(as_of) - c.at <= max_age)
                .filter(|c| c.requested.contains(&n))
                .max_by_key(|c| c.at);
            let Some(c) = decider else {
                assert!(!got.contains_key(&n));
                continue;
            };
            let returned = c.returned.contains(&n);
            if returned && !full {
                assert!(!got.contains_key(&n), "{n} returned yet written");
                continue;
            }
            let (status, at) = &got[&n];
            assert_eq!(status, if returned { "inactive" } else { "active" });
            // the mock's clock started at the check's time and ran for the run's seconds
            assert!(
                (*at - c.at).abs() < 10 * 60_000,
                "{n}: {at} is not {}",
                c.at
            );
            want += 1;
        }
        assert_eq!(got.len(), want);
        assert_eq!(
            s["active"].as_u64().unwrap() + s["inactive"].as_u64().unwrap(),
            want as u64
        );
    }
}

/// `cache export --consent-out --previous-as-of` against the naive oracle: `active` for each
/// number whose decisive check now did not return it, `inactive` only for the numbers opted out
/// as of the earlier time and returned now, nothing for the rest.
fn incremental_consents_match_the_oracle(dir: &Path, cache: &Path, checks: &[&Check]) {
    let (previous, as_of, age) = ("2026-10-05T00:00:00Z", "2026-10-12T00:00:00Z", "14d");
    let max_age = pos_cache::parse_age(age).unwrap();
    let out = dir.join("consents-incremental.ndjson");
    let s = export_consents(cache, as_of, age, &out, &["--previous-as-of", previous]);
    let got: HashMap<u64, String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|line| {
            let c: serde_json::Value = serde_json::from_str(line).unwrap();
            (patient_of(&c), c["status"].as_str().unwrap().to_string())
        })
        .collect();
    let mut want: HashMap<u64, String> = HashMap::new();
    for c in checks {
        for &n in &c.requested {
            let before = oracle(checks, n, ms(previous), max_age);
            match oracle(checks, n, ms(as_of), max_age) {
                Some(false) => want.insert(n, "active".into()),
                Some(true) if before == Some(false) => want.insert(n, "inactive".into()),
                _ => None,
            };
        }
    }
    let withdrawn = want.values().filter(|v| *v == "inactive").count();
    assert!(
        withdrawn > 0,
        "the checks give no withdrawn opt-out to test"
    );
    assert_eq!(got, want);
    assert_eq!(s["inactive"], withdrawn);
    // the earlier time must be earlier
    let refused = ndop(&[
        "cache",
        "export",
        "--cache",
        cache.to_str().unwrap(),
        "--as-of",
        previous,
        "--consent-out",
        dir.join("never.ndjson").to_str().unwrap(),
        "--previous-as-of",
        as_of,
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(!dir.join("never.ndjson").exists());
    let audit = audit(cache);
    let last = audit
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r["command"] == "export");
    assert_eq!(last.unwrap()["record"]["previous_as_of"], previous);
}

fn filter(extract: &Path, cache: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "filter",
        extract.to_str().unwrap(),
        "--column",
        "nhs_number",
        "--cache",
        cache.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ndop(&args)
}

#[test]
fn cache_applies_the_newest_fresh_check_as_of_a_date() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let pop1 = numbers(0, 300);
    let pop2 = numbers(2000, 300)
        .into_iter()
        .chain(pop1[200..].iter().copied())
        .collect::<Vec<_>>();
    let c1 = check(dir.path(), "run1", &pop1, "2026-10-01T12:00:00Z", 1, None);
    // the second run imports itself on success
    let c2 = check(
        dir.path(),
        "run2",
        &pop2,
        "2026-10-10T12:00:00Z",
        2,
        Some(&cache),
    );
    let imported = ok(&ndop(&[
        "cache",
        "import",
        c1.work.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
    ]));
    assert_eq!(imported["added"].as_array().unwrap().len(), 2, "{imported}");
    // idempotent: both again add nothing
    let again = ok(&ndop(&[
        "cache",
        "import",
        c1.work.to_str().unwrap(),
        c2.work.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
    ]));
    assert_eq!(again["added"].as_array().unwrap().len(), 0);
    assert_eq!(again["already_present"], 5);
    // a batch already held is not read again, but a new one is checked against the journal:
    // a copy of the first run with one request file changed
    let copy = dir.path().join("run1-copy");
    assert!(std::process::Command::new("cp")
        .args(["-r", c1.work.to_str().unwrap(), copy.to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    let dat = std::fs::read_dir(copy.join("prepared"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "dat"))
        .unwrap();
    let mut text = std::fs::read(&dat).unwrap();
    text.extend_from_slice(b"\r\n");
    std::fs::write(&dat, text).unwrap();
    let held = ok(&ndop(&[
        "cache",
        "import",
        copy.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
    ]));
    assert_eq!(held["added"].as_array().unwrap().len(), 0, "{held}");
    let fresh = ndop(&[
        "cache",
        "import",
        copy.to_str().unwrap(),
        "--cache",
        dir.path().join("other-cache").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&fresh.stderr);
    assert!(
        !fresh.status.success() && err.contains("differs from the file the journal recorded"),
        "{err}"
    );
    for f in ["", "cache.sqlite", "cache.sqlite-wal", "cache.sqlite-shm"] {
        let p = cache.join(f);
        if p.exists() {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, if f.is_empty() { 0o700 } else { 0o600 }, "{f}");
        }
    }

    // an extract: numbers of both runs, of neither, repeats, an invalid and a blank row
    let mut nums = pop1[150..].to_vec();
    nums.extend(&pop2[..100]);
    nums.extend(numbers(5000, 40));
    let extract = dir.path().join("extract.csv");
    let rows = write_extract(&extract, &nums);
    let checks = [&c1, &c2];
    let cases = [
        ("2026-10-01T00:00:00Z", "7d"),  // before any check
        ("2026-10-05T00:00:00Z", "7d"),  // the first only
        ("2026-10-09T13:00:00Z", "7d"),  // the first too old, the second not yet made
        ("2026-10-12T00:00:00Z", "7d"),  // the second only
        ("2026-10-12T00:00:00Z", "14d"), // both: the newer decides where they overlap
        ("2026-10-12T00:00:00Z", "36h"),
        ("2026-10-30T00:00:00Z", "21d"),
    ];
    for (i, (as_of, age)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("cleared{i}.csv"));
        let s = ok(&filter(
            &extract,
            &cache,
            &out,
            &["--as-of", as_of, "--max-age", age],
        ));
        let max_age = pos_cache::parse_age(age).unwrap();
        let (mut opted, mut unchecked) = (0u64, 0u64);
        let mut want = Vec::new();
        for (id, n) in &rows {
            if !processor::nhs::is_valid(n.as_bytes()) {
                continue;
            }
            match oracle(&checks, n.parse().unwrap(), ms(as_of), max_age) {
                Some(true) => want.push(id.clone()),
                Some(false) => opted += 1,
                None => unchecked += 1,
            }
        }
        assert_eq!(kept_ids(&out), want, "as of {as_of}, max age {age}");
        assert_eq!(s["opted_out"], opted, "{as_of} {age}: {s}");
        assert_eq!(s["not_checked"], unchecked, "{as_of} {age}: {s}");
        assert_eq!(s["invalid"], 2);
    }

    consents_match_the_oracle(dir.path(), &cache, &checks);
    incremental_consents_match_the_oracle(dir.path(), &cache, &checks);

    // --fail-on-not-checked: the output is written, the exit code is 1
    let out = dir.path().join("strict.csv");
    let strict = filter(
        &extract,
        &cache,
        &out,
        &["--as-of", "2026-10-12", "--fail-on-not-checked"],
    );
    assert_eq!(strict.status.code(), Some(1));
    assert!(out.exists());

    // an as-of date without a cache means nothing: refused
    let no_cache = ndop(&[
        "filter",
        extract.to_str().unwrap(),
        "--column",
        "nhs_number",
        "--allowed",
        empty_result(&dir.path().join("none.dat")).to_str().unwrap(),
        "--as-of",
        "2026-10-12",
        "--out",
        dir.path().join("nc.csv").to_str().unwrap(),
    ]);
    assert_eq!(no_cache.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_cache.stderr).contains("give --cache DIR"));

    // over 21 days: refused, then overridden and audited
    let out = dir.path().join("stale.csv");
    let refused = filter(
        &extract,
        &cache,
        &out,
        &["--as-of", "2026-10-30", "--max-age", "30d"],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--allow-stale-cache"));
    assert!(!out.exists());
    ok(&filter(
        &extract,
        &cache,
        &out,
        &[
            "--as-of",
            "2026-10-30",
            "--max-age",
            "30d",
            "--allow-stale-cache",
        ],
    ));
    let audit = ok(&ndop(&[
        "cache",
        "audit",
        "--cache",
        cache.to_str().unwrap(),
        "--json",
    ]));
    let records = audit.as_array().unwrap();
    let last = records.last().unwrap();
    assert_eq!(last["command"], "filter");
    assert_eq!(last["max_age"], "30d");
    assert!(last["record"]["overrides"][0]
        .as_str()
        .unwrap()
        .contains("allow-stale-cache"));
    assert_eq!(
        records.iter().filter(|r| r["command"] == "import").count(),
        // run 2's, the two imports and the changed copy's (the other cache has its own)
        4
    );
    // no NHS number anywhere in the audit log
    let text = audit.to_string();
    for n in c1.requested.iter().chain(&c2.requested) {
        assert!(
            !text.contains(&n.to_string()),
            "an NHS number in the audit log"
        );
    }

    // status: what is stale at an as-of date
    let st = ok(&ndop(&[
        "cache",
        "status",
        "--cache",
        cache.to_str().unwrap(),
        "--as-of",
        "2026-10-12",
        "--json",
    ]));
    let all: HashSet<u64> = c1.requested.union(&c2.requested).copied().collect();
    assert_eq!(st["numbers_covered"], all.len());
    assert_eq!(st["fresh"], c2.requested.len());
    assert_eq!(st["stale"], all.len() - c2.requested.len());

    // export: the allow-list and the derived opted-out list as of a date, against the oracle
    let as_of = "2026-10-12T00:00:00Z";
    let allow_csv = dir.path().join("allow.csv");
    ok(&ndop(&[
        "cache",
        "export",
        "--cache",
        cache.to_str().unwrap(),
        "--format",
        "csv",
        "--out",
        allow_csv.to_str().unwrap(),
        "--as-of",
        as_of,
        "--max-age",
        "14d",
    ]));
    let deny_dat = dir.path().join("deny.dat");
    ok(&ndop(&[
        "cache",
        "export",
        "--cache",
        cache.to_str().unwrap(),
        "--list",
        "opted-out",
        "--format",
        "dat",
        "--out",
        deny_dat.to_str().unwrap(),
        "--as-of",
        as_of,
        "--max-age",
        "14d",
    ]));
    let mut want_allow = BTreeSet::new();
    let mut want_deny = BTreeSet::new();
    for n in &all {
        match oracle(&checks, *n, ms(as_of), 14 * DAY) {
            Some(true) => want_allow.insert(format!("{n:010}")),
            Some(false) => want_deny.insert(format!("{n:010}")),
            None => false,
        };
    }
    let got_allow: Vec<String> = std::fs::read_to_string(&allow_csv)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(got_allow[0], "nhs_number");
    assert_eq!(
        got_allow[1..].to_vec(),
        want_allow.iter().cloned().collect::<Vec<_>>()
    );
    let got_deny: Vec<String> = std::fs::read_to_string(&deny_dat)
        .unwrap()
        .lines()
        .map(|l| l.trim_end_matches(',').to_string())
        .collect();
    assert_eq!(got_deny, want_deny.iter().cloned().collect::<Vec<_>>());
    assert_eq!(
        std::fs::metadata(&deny_dat).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // purge: the first run's batches go, the audit log stays
    let purged = ok(&ndop(&[
        "cache",
        "purge",
        "--cache",
        cache.to_str().unwrap(),
        "--older-than",
        "7d",
        "--as-of",
        "2026-10-12",
    ]));
    assert_eq!(purged["deleted_batches"].as_array().unwrap().len(), 2);
    let st = ok(&ndop(&[
        "cache",
        "status",
        "--cache",
        cache.to_str().unwrap(),
        "--json",
        "--as-of",
        "2026-10-12",
    ]));
    assert_eq!(st["batches"].as_array().unwrap().len(), 3);
    assert_eq!(st["numbers_covered"], c2.requested.len());
}

#[test]
fn concurrent_import_and_filter_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let pop = numbers(0, 400);
    let c = check(
        dir.path(),
        "run",
        &pop,
        "2026-11-01T09:00:00Z",
        3,
        Some(&cache),
    );
    // two more runs (other numbers, so the kept rows do not change) imported while filtering
    let others = [
        check(
            dir.path(),
            "other1",
            &numbers(3000, 200),
            "2026-11-01T10:00:00Z",
            4,
            None,
        ),
        check(
            dir.path(),
            "other2",
            &numbers(4000, 200),
            "2026-11-01T11:00:00Z",
            5,
            None,
        ),
    ];
    let extract = dir.path().join("extract.csv");
    write_extract(&extract, &pop);
    let mut children = Vec::new();
    for i in 0..4 {
        let mut cmd = util::ndop_command();
        if i % 2 == 0 {
            cmd.args([
                "cache",
                "import",
                others[i / 2].work.to_str().unwrap(),
                "--cache",
                cache.to_str().unwrap(),
            ]);
        } else {
            let out = dir.path().join(format!("out{i}.csv"));
            cmd.args([
                "filter",
                extract.to_str().unwrap(),
                "--column",
                "nhs_number",
                "--cache",
                cache.to_str().unwrap(),
                "--as-of",
                "2026-11-02",
                "--out",
                out.to_str().unwrap(),
            ]);
        }
        children.push(
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    let mut kept = HashMap::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let v = ok(&out);
        if i % 2 == 1 {
            kept.insert(i, v["kept"].clone());
        }
    }
    let want = pop
        .iter()
        .chain(pop.iter().step_by(7))
        .filter(|n| c.returned.contains(n))
        .count();
    for v in kept.values() {
        assert_eq!(*v, want);
    }
    let st = ok(&ndop(&[
        "cache",
        "status",
        "--cache",
        cache.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(st["batches"].as_array().unwrap().len(), 3 + 2 * 2);
}

/// The venv python with DuckDB, made (once, under a lock) by `tools/python-env.sh`.
fn python() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/python-env.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run tools/python-env.sh");
    assert!(out.status.success(), "tools/python-env.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

#[test]
fn duckdb_joins_the_parquet_export_like_filter_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let pop = numbers(0, 300);
    let c = check(
        dir.path(),
        "run",
        &pop,
        "2026-11-01T09:00:00Z",
        6,
        Some(&cache),
    );
    let mut nums = pop[100..].to_vec();
    nums.extend(numbers(6000, 30)); // never checked
    let extract = dir.path().join("extract.csv");
    let rows = write_extract(&extract, &nums);
    let as_of = ["--as-of", "2026-11-02T09:00:00Z", "--max-age", "3d"];
    let cleared = dir.path().join("cleared.csv");
    ok(&filter(&extract, &cache, &cleared, &as_of));
    let mut kept = kept_ids(&cleared);
    kept.sort();
    let export = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec![
            "cache",
            "export",
            "--cache",
            cache.to_str().unwrap(),
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(&as_of);
        args.extend_from_slice(extra);
        let s = ok(&ndop(&args));
        assert!(s["numbers"].as_u64().unwrap() > 0);
        out
    };
    let allow = export("allow.parquet", &[]);
    let allow_int = export("allow-int.parquet", &["--type", "int64"]);
    let deny = export("deny.parquet", &["--list", "opted-out"]);
    let out = std::process::Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/duckdb_join.py"))
        .args([&extract, &allow, &allow_int, &deny])
        .output()
        .expect("run the DuckDB script");
    let v = ok(&out);
    let ids = |key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    };
    assert!(!kept.is_empty());
    assert_eq!(
        ids("semi"),
        kept,
        "DuckDB's semi-join differs from filter --cache"
    );
    assert_eq!(ids("semi_int"), kept);
    // the anti-join keeps every row whose number is not a derived opt-out, checked or not
    let opted: HashSet<u64> = c.requested.difference(&c.returned).copied().collect();
    let mut anti_want: Vec<String> = rows
        .iter()
        .filter(|(_, n)| n.parse::<u64>().map_or(true, |n| !opted.contains(&n)))
        .map(|(id, _)| id.clone())
        .collect();
    anti_want.sort();
    assert_eq!(ids("anti"), anti_want);
    assert!(ids("anti").len() > kept.len());
    let meta = &v["metadata"];
    assert_eq!(meta["as_of"], "2026-11-02T09:00:00Z");
    assert_eq!(meta["max_age"], "3d");
    assert_eq!(meta["environment"], "int");
    // oldest check first: the two parts are sent in parallel, so either may be checked first
    let mut batch_ids: Vec<&str> = meta["batch_ids"].as_str().unwrap().split(',').collect();
    batch_ids.sort();
    assert_eq!(batch_ids, ["1", "2"]);
    assert!(meta["checked_at_min"]
        .as_str()
        .unwrap()
        .starts_with("2026-11-01T09:00"));
    assert_eq!(v["column_type"], "VARCHAR");
}

#[test]
fn refresh_sends_only_the_stale_part() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let now = Utc::now();
    let rfc = |t: DateTime<Utc>| t.to_rfc3339();
    let old = numbers(0, 150);
    let fresh = numbers(1000, 150);
    let never = numbers(7000, 50);
    let days = chrono::Duration::days;
    check(
        dir.path(),
        "old",
        &old,
        &rfc(now - days(10)),
        7,
        Some(&cache),
    );
    check(
        dir.path(),
        "fresh",
        &fresh,
        &rfc(now - days(2)),
        8,
        Some(&cache),
    );
    let population = dir.path().join("population.csv");
    let all: Vec<u64> = old.iter().chain(&fresh).chain(&never).copied().collect();
    write_extract(&population, &all);
    let (rt, mesh) = mesh_at(now, 9);
    let work = dir.path().join("refresh");
    let url = mesh.base_url();
    let refresh = ndop(&[
        "cache",
        "refresh",
        "--population",
        population.to_str().unwrap(),
        "--column",
        "nhs_number",
        "--cache",
        cache.to_str().unwrap(),
        "--work",
        work.to_str().unwrap(),
        "--stale-only",
        "--older-than",
        "7d",
        "--mesh",
        &url,
        "--mailbox",
        "X26ABC1",
        "--interval",
        "0.05",
        "--timeout",
        "30",
    ]);
    ok(&refresh);
    assert_quiet(&refresh);
    rt.block_on(mesh.stop());
    let sent: BTreeSet<u64> = std::fs::read_to_string(work.join("refresh.dat"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let want: BTreeSet<u64> = old.iter().chain(&never).copied().collect();
    assert_eq!(sent, want);
    // now every valid number of the population has a fresh check
    let out = dir.path().join("cleared.csv");
    let s = ok(&filter(&population, &cache, &out, &[]));
    assert_eq!(s["not_checked"], 0, "{s}");
    let st = ok(&ndop(&[
        "cache",
        "status",
        "--cache",
        cache.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(st["stale"], 0);
    assert_eq!(st["numbers_covered"], all.len());
}

/// The cache's state as seen through ndop: status (fixed as-of, without the file size), the
/// audit log, and a filter's kept rows and counts.
fn cache_state(cache: &Path, extract: &Path, out: &Path) -> (serde_json::Value, Vec<String>) {
    let mut st = ok(&ndop(&[
        "cache",
        "status",
        "--cache",
        cache.to_str().unwrap(),
        "--as-of",
        "2026-11-03",
        "--json",
    ]));
    st.as_object_mut().unwrap().remove("bytes");
    let mut f = ok(&filter(extract, cache, out, &["--as-of", "2026-11-03"]));
    // what names the output files or times the run differs between runs
    let stem = out.file_stem().unwrap().to_str().unwrap();
    f.as_object_mut().unwrap().retain(|k, v| {
        !k.contains("seconds") && !k.contains("elapsed") && !v.to_string().contains(stem)
    });
    f["cache"].as_object_mut().unwrap().remove("filtered_at");
    (
        serde_json::json!({"status": st, "filter": f}),
        kept_ids(out),
    )
}

fn audit(cache: &Path) -> serde_json::Value {
    ok(&ndop(&[
        "cache",
        "audit",
        "--cache",
        cache.to_str().unwrap(),
        "--json",
    ]))
}

#[test]
fn an_import_killed_before_commit_leaves_the_cache_as_it_was() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let pop1 = numbers(0, 300);
    let pop2 = numbers(5000, 300)
        .into_iter()
        .chain(pop1[..100].iter().copied())
        .collect::<Vec<_>>();
    let c1 = check(
        dir.path(),
        "run1",
        &pop1,
        "2026-11-01T09:00:00Z",
        11,
        Some(&cache),
    );
    let c2 = check(dir.path(), "run2", &pop2, "2026-11-02T09:00:00Z", 12, None);
    let extract = dir.path().join("extract.csv");
    let all: Vec<u64> = pop1.iter().chain(&pop2[..300]).copied().collect();
    write_extract(&extract, &all);
    let out = |name: &str| dir.path().join(format!("{name}.csv"));
    let before = cache_state(&cache, &extract, &out("before"));
    let audit_before = audit(&cache);

    let mut child = util::ndop_command()
        .args(["cache", "import", c2.work.to_str().unwrap(), "--cache"])
        .arg(&cache)
        .env("NDOP_TEST_CRASH_AT", "cache-import-before-commit")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(
        line.contains("cache-import-before-commit"),
        "the import did not reach its crash point: {line:?}"
    );
    // SIGKILL inside the write transaction: nothing of it may remain
    child.kill().unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9));

    assert_eq!(
        audit(&cache),
        audit_before,
        "the killed import left an audit record"
    );
    let after = cache_state(&cache, &extract, &out("after"));
    assert_eq!(after, before);
    // the filter before the crash used only the first run
    let want: usize = all
        .iter()
        .chain(all.iter().step_by(7))
        .filter(|n| oracle(&[&c1], **n, ms("2026-11-03T00:00:00Z"), 7 * DAY) == Some(true))
        .count();
    assert_eq!(before.1.len(), want);

    // importing again works, and now the second run decides its numbers
    let s = ok(&ndop(&[
        "cache",
        "import",
        c2.work.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
    ]));
    let added = s["added"].as_array().unwrap().len();
    assert!(added > 0, "{s}");
    let (state, kept) = cache_state(&cache, &extract, &out("reimported"));
    assert_eq!(
        state["status"]["batches"].as_array().unwrap().len(),
        before.0["status"]["batches"].as_array().unwrap().len() + added
    );
    assert_eq!(
        state["status"]["numbers_covered"],
        c1.requested.union(&c2.requested).count()
    );
    let want: usize = all
        .iter()
        .chain(all.iter().step_by(7))
        .filter(|n| oracle(&[&c1, &c2], **n, ms("2026-11-03T00:00:00Z"), 7 * DAY) == Some(true))
        .count();
    assert_eq!(kept.len(), want);
}

/// A refresh that succeeded said nothing (cron and systemd mail or log any output).
#[track_caller]
fn assert_quiet(out: &Output) {
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "a successful refresh printed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn refresh(population: &Path, cache: &Path, work: &Path, url: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "cache",
        "refresh",
        "--population",
        population.to_str().unwrap(),
        "--column",
        "nhs_number",
        "--cache",
        cache.to_str().unwrap(),
        "--work",
        work.to_str().unwrap(),
        "--mesh",
        url,
        "--mailbox",
        "X26ABC1",
        "--interval",
        "0.05",
        "--timeout",
        "30",
    ];
    args.extend_from_slice(extra);
    ndop(&args)
}

/// The POS's job reports (`Mex-Subject: SUCCESS` JSON) a work directory collected.
fn job_reports(work: &Path) -> Vec<serde_json::Value> {
    let mut jobs = Vec::new();
    let mut dirs = vec![work.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if let Ok(v) =
                serde_json::from_slice::<serde_json::Value>(&std::fs::read(&p).unwrap_or_default())
            {
                if v.get("stages").is_some() {
                    jobs.push(v);
                }
            }
        }
    }
    jobs
}

#[test]
fn refreshing_an_unchanged_population_is_a_new_upload_and_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let population = dir.path().join("population.csv");
    let pop = numbers(0, 200);
    write_extract(&population, &pop);
    // one mock for both refreshes: it remembers every upload's content, as the POS does
    let (rt, mesh) = mesh_at(Utc::now(), 21);
    let url = mesh.base_url();
    let works = [dir.path().join("r1"), dir.path().join("r2")];
    for w in &works {
        let out = refresh(&population, &cache, w, &url, &[]);
        ok(&out);
        assert_quiet(&out);
    }
    // the mock's POS judged both uploads new (validate_is_unique_upload passed) and answered
    for w in &works {
        let jobs = job_reports(w);
        assert!(!jobs.is_empty());
        for job in &jobs {
            assert_eq!(job["status"], "pending", "{job}");
            assert_eq!(job["stages"][1]["stage"], "validate_is_unique_upload");
            assert_eq!(job["stages"][1]["passed"], true);
        }
    }
    // same numbers, different files
    let sent: Vec<(BTreeSet<Vec<u8>>, BTreeSet<u64>)> = works
        .iter()
        .map(|w| {
            let mut files = BTreeSet::new();
            let mut set = BTreeSet::new();
            for e in std::fs::read_dir(w.join("prepared")).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "dat") {
                    let bytes = std::fs::read(&p).unwrap();
                    for l in String::from_utf8_lossy(&bytes).lines() {
                        set.insert(l.trim_end_matches(',').parse().unwrap());
                    }
                    files.insert(bytes);
                }
            }
            (files, set)
        })
        .collect();
    assert!(sent[0].0.is_disjoint(&sent[1].0));
    assert_eq!(sent[0].1, sent[1].1);
    assert_eq!(sent[0].1, pop.iter().copied().collect::<BTreeSet<u64>>());
    let st = ok(&ndop(&[
        "cache",
        "status",
        "--cache",
        cache.to_str().unwrap(),
        "--json",
    ]));
    let batches = st["batches"].as_array().unwrap().len();
    assert!(batches >= 3, "{st}");
    assert_eq!(st["numbers_covered"], pop.len());

    // nothing stale: quiet, nothing sent
    let out = refresh(
        &population,
        &cache,
        &dir.path().join("r3"),
        &url,
        &["--stale-only", "--older-than", "1d"],
    );
    ok(&out);
    assert_quiet(&out);
    // --verbose says what happened
    let out = refresh(
        &population,
        &cache,
        &dir.path().join("r4"),
        &url,
        &["--stale-only", "--older-than", "1d", "--verbose"],
    );
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 of 200 numbers are stale"));

    // a failure is loud: the transcript, then the reason, and a MESH exit code
    rt.block_on(mesh.stop());
    let out = refresh(&population, &cache, &dir.path().join("r5"), &url, &[]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("200 distinct valid numbers"), "{err}");
    assert!(err.contains("ndop: error:"), "{err}");
    assert!(out.stdout.is_empty());
    let after = ok(&ndop(&[
        "cache",
        "status",
        "--cache",
        cache.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(after["batches"], st["batches"]);
}

#[test]
fn run_reuses_fresh_answers_and_sends_only_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let now = Utc::now();
    let seed = 31;
    let old = numbers(0, 200);
    let c1 = check(
        dir.path(),
        "run1",
        &old,
        &(now - chrono::Duration::days(1)).to_rfc3339(),
        seed,
        Some(&cache),
    );
    let new = numbers(6000, 100);
    let all: Vec<u64> = old.iter().chain(&new).copied().collect();
    let extract = dir.path().join("extract.csv");
    let rows = write_extract(&extract, &all);
    let (rt, mesh) = mesh_at(now, seed);
    let url = mesh.base_url();
    let run = |name: &str| {
        let work = dir.path().join(name);
        let out = dir.path().join(format!("{name}.csv"));
        let s = ok(&ndop(&[
            "run",
            extract.to_str().unwrap(),
            "--column",
            "nhs_number",
            "--work",
            work.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--mesh",
            &url,
            "--mailbox",
            "X26ABC1",
            "--interval",
            "0.05",
            "--timeout",
            "30",
            "--cache",
            cache.to_str().unwrap(),
            "--reuse-younger-than",
            "3d",
        ]));
        (work, out, s)
    };
    let (work, out, s) = run("run2");
    assert_eq!(s["reuse"]["reused"], old.len(), "{s}");
    assert_eq!(s["reuse"]["sent"], new.len(), "{s}");
    // what the mock received: its job reports give the size of each upload, its cleaned
    // replies the numbers it answered for (all of the new ones, by its opt-out rule)
    let jobs = job_reports(&work);
    let received: u64 = jobs
        .iter()
        .map(|j| j["metadata"]["filesize"].as_u64().unwrap())
        .sum();
    assert_eq!(received, new.len() as u64 * "9990000000,\r\n".len() as u64);
    let mut answered = BTreeSet::new();
    for e in std::fs::read_dir(work.join("replies")).unwrap() {
        let p = e.unwrap().path();
        if p.to_str().unwrap().ends_with(".json") {
            continue;
        }
        for l in std::fs::read_to_string(&p).unwrap_or_default().lines() {
            if let Ok(n) = l.trim_end_matches(',').parse::<u64>() {
                answered.insert(n);
            }
        }
    }
    let mock_returns = |n: u64| !mock_mesh::pos::opted_out_by_rate(n, seed, 0.3);
    let want: BTreeSet<u64> = new.iter().copied().filter(|n| mock_returns(*n)).collect();
    assert_eq!(answered, want);
    // the output: old numbers as the first run answered, new ones as the mock answers
    let kept_want: Vec<String> = rows
        .iter()
        .filter(|(_, n)| {
            let Ok(n) = n.parse::<u64>() else {
                return false;
            };
            c1.returned.contains(&n) || (new.contains(&n) && mock_returns(n))
        })
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(kept_ids(&out), kept_want);
    assert_eq!(s["filter"]["not_checked"], 0, "{s}");
    let run_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.join("run.json")).unwrap()).unwrap();
    assert_eq!(run_json["reuse"]["reused"], old.len());
    rt.block_on(mesh.stop());

    // now the cache answers everything: nothing is sent (the mock is gone), same output
    let (_, out3, s3) = run("run3");
    assert_eq!(s3["reuse"]["reused"], all.len(), "{s3}");
    assert_eq!(s3["reuse"]["sent"], 0);
    assert_eq!(kept_ids(&out3), kept_want);
    let audit = audit(&cache);
    let reuses = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["command"] == "run-reuse")
        .count();
    assert_eq!(reuses, 2);
}
