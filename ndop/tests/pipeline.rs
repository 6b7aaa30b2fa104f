//! The whole pipeline through the real `ndop` binary against a real mock-mesh on loopback:
//! `ndop demo`, `ndop run` interrupted and resumed (and refused on a changed extract), a 1M-line
//! extract with chunked replies. (The property test that filter after reconcile keeps exactly
//! the rows of patients who did not opt out is an engine test: `processor/tests/engine.rs`.)

mod util;

use util::{generate_csv, ndop, run_in, start_mesh};

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// `(nhs_number, whole row)` of every data row of a CSV whose second column is the number.
fn rows(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| (l.split(',').nth(1).unwrap_or("").to_string(), l.to_string()))
        .collect()
}

fn lines(path: &Path) -> HashSet<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.trim_end_matches(',').to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The filtered extract holds exactly the extract's rows whose number is valid and not opted
/// out, in order.
fn assert_filtered(extract: &Path, cleared: &Path, opted_out: &HashSet<String>) {
    let expected: Vec<String> = rows(extract)
        .into_iter()
        .filter(|(n, _)| processor::nhs::is_valid(n.as_bytes()) && !opted_out.contains(n))
        .map(|(_, row)| row)
        .collect();
    let got: Vec<String> = rows(cleared).into_iter().map(|(_, row)| row).collect();
    assert_eq!(got.len(), expected.len());
    assert!(
        got == expected,
        "the filtered rows differ from the expected rows"
    );
}

#[test]
fn demo_runs_end_to_end_and_checks_itself() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    let out = ndop(&[
        "demo",
        "--work",
        work.to_str().unwrap(),
        "--patients",
        "200",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("agree: yes"), "{stdout}");
    assert!(
        stdout.contains("10 of the 20 INT test patients"),
        "{stdout}"
    );
    let opted_out = lines(&work.join("reconciled/opted-out.txt"));
    assert!(opted_out.contains("9694116414"));
    assert!(!opted_out.contains("9694116538"));
    assert_filtered(
        &work.join("extract.csv"),
        &work.join("cleared.csv"),
        &opted_out,
    );
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["filter"]["invalid"], 3);
    // each stage's CPU time beside its wall-clock time: the same stages, none negative, some
    // CPU spent in all
    let names = |key: &str| -> Vec<String> {
        let stages = run[key].as_array().unwrap();
        stages.iter().map(|s| s[0].to_string()).collect()
    };
    assert_eq!(names("stage_cpu_seconds"), names("stage_seconds"));
    let mut total = 0.0;
    for stage in run["stage_cpu_seconds"].as_array().unwrap() {
        let (user, sys) = (stage[1]["user"].as_f64(), stage[1]["sys"].as_f64());
        let (user, sys) = (user.unwrap(), sys.unwrap());
        assert!(user >= 0.0 && sys >= 0.0, "{stage}");
        total += user + sys;
    }
    assert!(total > 0.0, "{}", run["stage_cpu_seconds"]);
}

fn submissions(work: &Path) -> usize {
    std::fs::read_to_string(work.join("journal.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"submitted\""))
        .count()
}

#[test]
fn run_resumes_after_a_timeout_and_never_sends_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, mesh, extract, work, sent) = interrupted_run(dir.path(), "5000", "9");
    assert!(sent >= 3, "{sent} submissions");
    let url = mesh.base_url();
    let run = |timeout: &str| run_in(&extract, &work, &url, timeout);
    assert!(!work.join("cleared.csv").exists());
    // Resumed: nothing sent again, the replies collected, the extract filtered.
    let second = run("30");
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(submissions(&work), sent);
    // The default POS opts out nobody in the 999 range: every valid row is kept.
    assert_filtered(&extract, &work.join("cleared.csv"), &HashSet::new());
    // A third run finds everything done and still sends nothing; its reconcile reads the
    // replies stored by the second (which took their numbers from collect's check) and finds
    // the same
    let third = run("30");
    assert!(third.status.success());
    assert_eq!(submissions(&work), sent);
    let json = |out: &Output| -> serde_json::Value { serde_json::from_slice(&out.stdout).unwrap() };
    let (second, third) = (json(&second), json(&third));
    assert_eq!(second["returned_from_collect"], true);
    assert_eq!(third["returned_from_collect"], false);
    assert_same_counts(&second["reconcile"], &third["reconcile"]);
    rt.block_on(mesh.stop());
}

/// A mock whose POS takes 1.5 s, a generated CSV extract in `dir` and a first `ndop run` in
/// `dir/work` that waits for nothing, so it stops with the replies missing (exit 6) after
/// sending. Returns the runtime, the mock, the extract, the work directory and the number of
/// submissions made.
fn interrupted_run(
    dir: &Path,
    lines: &str,
    seed: &str,
) -> (
    tokio::runtime::Runtime,
    mock_mesh::MockMesh,
    PathBuf,
    PathBuf,
    usize,
) {
    let mut config = mock_mesh::Config::default();
    config.pos.delay = Duration::from_millis(1500);
    let (rt, mesh) = start_mesh(config);
    let extract = dir.join("extract.csv");
    generate_csv(&extract, lines, seed);
    let work = dir.join("work");
    let first = run_in(&extract, &work, &mesh.base_url(), "0");
    assert_eq!(
        first.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let sent = submissions(&work);
    (rt, mesh, extract, work, sent)
}

#[track_caller]
fn assert_refused_as_changed(out: &Output, extract: &Path, numbers: &HashSet<String>) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("{} is not the extract", extract.display())),
        "{stderr}"
    );
    assert!(stderr.contains("work directory"), "{stderr}");
    assert!(
        !numbers
            .iter()
            .any(|n| !n.is_empty() && stderr.contains(n.as_str())),
        "an NHS number was printed: {stderr}"
    );
}

#[test]
fn run_refuses_an_extract_that_changed_and_resumes_on_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, mesh, extract, work, sent) = interrupted_run(dir.path(), "3000", "11");
    assert!(sent >= 2, "{sent} submissions");
    let url = mesh.base_url();
    let journal = std::fs::read_to_string(work.join("journal.jsonl")).unwrap();
    assert_eq!(journal.matches("\"kind\":\"extract\"").count(), 1);

    // Another file in its place (the original set aside): refused, nothing sent, no output.
    let original = dir.path().join("extract.orig");
    std::fs::rename(&extract, &original).unwrap();
    let other = dir.path().join("other.csv");
    generate_csv(&other, "3000", "12");
    std::fs::rename(&other, &extract).unwrap();
    let mut numbers: HashSet<String> = rows(&original).into_iter().map(|(n, _)| n).collect();
    numbers.extend(rows(&extract).into_iter().map(|(n, _)| n));
    let refused = run_in(&extract, &work, &url, "30");
    assert_refused_as_changed(&refused, &extract, &numbers);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("another file: inode"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(submissions(&work), sent);
    assert!(!work.join("cleared.csv").exists());

    // The original back (the same file): resumed, nothing sent again, the extract filtered.
    std::fs::rename(&original, &extract).unwrap();
    let resumed = run_in(&extract, &work, &url, "30");
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(submissions(&work), sent);
    assert_filtered(&extract, &work.join("cleared.csv"), &HashSet::new());
    let cleared = std::fs::read(work.join("cleared.csv")).unwrap();

    // Changed in place (the same inode, a row more): refused, the filtered extract untouched.
    let mut text = std::fs::read_to_string(&extract).unwrap();
    text += "R999999,9990000018,2026-11-23,X\r\n";
    std::fs::write(&extract, &text).unwrap();
    let refused = run_in(&extract, &work, &url, "30");
    assert_refused_as_changed(&refused, &extract, &numbers);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("size "),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(submissions(&work), sent);
    assert_eq!(std::fs::read(work.join("cleared.csv")).unwrap(), cleared);

    // A journal from before extracts were recorded cannot be checked: a warning, and the run
    // goes on (recording the extract as it is now).
    let old: String = std::fs::read_to_string(work.join("journal.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("\"kind\":\"extract\""))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(work.join("journal.jsonl"), old).unwrap();
    let unchecked = run_in(&extract, &work, &url, "30");
    let stderr = String::from_utf8_lossy(&unchecked.stderr);
    assert!(unchecked.status.success(), "{stderr}");
    assert!(stderr.contains("has no record of the extract"), "{stderr}");
    assert_eq!(submissions(&work), sent);
    let journal = std::fs::read_to_string(work.join("journal.jsonl")).unwrap();
    assert_eq!(journal.matches("\"kind\":\"extract\"").count(), 1);
    rt.block_on(mesh.stop());
}

#[test]
fn a_large_extract_with_chunked_replies() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = mock_mesh::Config::default();
    config.pos.optout_rate = 0.05;
    config.pos.optout_seed = 3;
    config.pos_chunk_bytes = 512 << 10; // a ~2.6 MB result comes back in 6 chunks
    let (rt, mesh) = start_mesh(config);
    let extract = dir.path().join("big.dat");
    util::generate_dat(&extract, "250000", "5");
    let work = dir.path().join("work");
    let out = ndop(&[
        "run",
        extract.to_str().unwrap(),
        "--work",
        work.to_str().unwrap(),
        "--mesh",
        &mesh.base_url(),
        "--mailbox",
        "X26ABC1",
        "--interval",
        "0.05",
        "--timeout",
        "60",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let requested = run["reconcile"]["requested"].as_u64().unwrap();
    let opted_out = run["reconcile"]["opted_out"].as_u64().unwrap();
    assert_eq!(run["reconcile"]["unexpected"], 0);
    // About 5% opted out, decided by the mock's hash.
    let rate = opted_out as f64 / requested as f64;
    assert!((0.04..0.06).contains(&rate), "opt-out rate {rate}");
    assert_eq!(
        run["filter"]["kept"].as_u64().unwrap() + run["filter"]["opted_out"].as_u64().unwrap(),
        run["prepare"]["lines"].as_u64().unwrap()
            - run["prepare"]["invalid"].as_u64().unwrap()
            - run["prepare"]["blank"].as_u64().unwrap()
    );
    // the ~2.6 MB reply was checked as it downloaded, not read again
    let replies = run["collect"]["replies"].as_array().unwrap();
    assert!(
        replies
            .iter()
            .any(|r| r["reply"] == "cleaned" && r["checked_while_downloading"] == true),
        "{replies:?}"
    );
    // reconcile took the returned numbers from that check, and they are what reading the
    // files gives: `ndop reconcile` of the prepared files and the replies writes the same
    assert_eq!(run["returned_from_collect"], true);
    let in_dir = |sub: &str, end: &str| -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_dir(work.join(sub))
            .unwrap()
            .map(|e| e.unwrap().path().display().to_string())
            .filter(|p| p.ends_with(end))
            .collect();
        found.sort();
        found
    };
    let again = dir.path().join("again");
    let mut args = vec!["reconcile".to_string(), "--request".into()];
    args.extend(in_dir("prepared", ".dat"));
    args.push("--response".into());
    args.extend(in_dir("replies", ".cleaned.dat"));
    args.extend(["--out".into(), again.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let read = ndop(&args);
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_same_counts(&run["reconcile"], &read);
    assert_eq!(
        run["reconcile"]["responses"][0]["bytes"],
        read["responses"][0]["bytes"]
    );
    for file in ["opted-out.txt", "unexpected.txt"] {
        assert_eq!(
            std::fs::read(work.join("reconciled").join(file)).unwrap(),
            std::fs::read(again.join(file)).unwrap(),
            "{file}"
        );
    }
    // the report's hashes were taken during the run (the extract while the POS worked, the
    // output as it was written) and are used while the files are unchanged
    let sha = |p: &Path| processor::files::sha256_file(p).unwrap().0;
    let cleared = work.join("cleared.dat");
    assert_eq!(run["extract_hash"]["sha256"], sha(&extract).as_str());
    assert_eq!(run["output_hash"]["sha256"], sha(&cleared).as_str());
    let report = |work: &Path| -> serde_json::Value {
        let out = ndop(&["report", work.to_str().unwrap(), "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let facts = report(&work);
    assert_eq!(facts["extract"]["sha256"], sha(&extract).as_str());
    let note = facts["extract"]["sha256_note"].as_str().unwrap();
    assert!(note.contains("while the run waited for the POS"), "{note}");
    assert_eq!(facts["output"]["sha256"], sha(&cleared).as_str());
    // a changed output is hashed as it is now
    let mut changed = std::fs::read(&cleared).unwrap();
    changed.truncate(changed.len() - 13);
    std::fs::write(&cleared, &changed).unwrap();
    assert_eq!(report(&work)["output"]["sha256"], sha(&cleared).as_str());
    rt.block_on(mesh.stop());
}

/// A finished `ndop run` in `dir/work` on a small generated extract, against a mock left
/// running. Returns the runtime, the mock, the extract and the work directory.
fn finished_run(
    dir: &Path,
) -> (
    tokio::runtime::Runtime,
    mock_mesh::MockMesh,
    PathBuf,
    PathBuf,
) {
    let (rt, mesh) = start_mesh(mock_mesh::Config::default());
    let extract = dir.join("extract.csv");
    generate_csv(&extract, "600", "21");
    let work = dir.join("work");
    let done = run_in(&extract, &work, &mesh.base_url(), "30");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    (rt, mesh, extract, work)
}

/// A copy of the work directory `from` at `to`, without its filtered extract.
fn copy_work(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_work(&path, &target);
        } else if !path.ends_with("cleared.csv") {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// Rewrites the journal of `work` line by line; returns how many lines `change` altered.
fn edit_journal(work: &Path, change: impl Fn(&str) -> String) -> usize {
    let path = work.join("journal.jsonl");
    let old = std::fs::read_to_string(&path).unwrap();
    let mut altered = 0;
    let new: String = old
        .lines()
        .map(|l| {
            let c = change(l);
            altered += usize::from(c != l);
            c + "\n"
        })
        .collect();
    std::fs::write(&path, new).unwrap();
    altered
}

#[test]
fn run_exits_6_when_the_pos_does_not_answer_as_expected() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, mesh, extract, work) = finished_run(dir.path());
    let url = mesh.base_url();

    // The POS job failed.
    let failed = dir.path().join("failed");
    copy_work(&work, &failed);
    let n = edit_journal(&failed, |l| {
        l.replace("\"job_status\":\"pending\"", "\"job_status\":\"failed\"")
    });
    assert!(n > 0);
    // MESH reports the file undelivered.
    let undelivered = dir.path().join("undelivered");
    copy_work(&work, &undelivered);
    let n = edit_journal(&undelivered, |l| {
        let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
        if v["reply"] != "cleaned" {
            return l.to_string();
        }
        v["reply"] = "report".into();
        v["status_success"] = false.into();
        v["status_description"] = "not collected".into();
        v.to_string()
    });
    assert!(n > 0);
    // The POS returned a number that was never sent (9434765919 is outside the 999 range).
    let unexpected = dir.path().join("unexpected");
    copy_work(&work, &unexpected);
    let cleaned = std::fs::read_dir(unexpected.join("replies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".cleaned.dat"))
        .expect("a cleaned reply");
    let mut text = std::fs::read_to_string(&cleaned).unwrap();
    text += "9434765919,\r\n";
    std::fs::write(&cleaned, text).unwrap();

    for (w, says) in [
        (&failed, "failed"),
        (&undelivered, "was not delivered: not collected"),
        (&unexpected, "never sent"),
    ] {
        let out = run_in(&extract, w, &url, "30");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(6), "{says}: {stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(!w.join("cleared.csv").exists(), "{says}");
        assert!(
            !stderr.contains("9434765919"),
            "an NHS number was printed: {stderr}"
        );
    }
    rt.block_on(mesh.stop());
}

#[test]
fn a_resumed_run_refuses_a_malformed_prepare_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, mesh, extract, work) = finished_run(dir.path());
    let summary = work.join("prepared/summary.json");
    let good = std::fs::read_to_string(&summary).unwrap();
    for bad in [
        "{}".to_string(),
        "not json".to_string(),
        good.replace("\"files\"", "\"dat_files\""),
        good.replace("\"unique\"", "\"distinct\""),
    ] {
        std::fs::write(&summary, &bad).unwrap();
        let out = run_in(&extract, &work, &mesh.base_url(), "30");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{bad}: {stderr}");
        assert!(stderr.contains("summary.json"), "{stderr}");
        assert!(stderr.contains("malformed"), "{stderr}");
        assert!(!stderr.contains("no valid NHS number"), "{stderr}");
    }
    // The summary as prepare wrote it: the run resumes and finishes.
    std::fs::write(&summary, &good).unwrap();
    assert!(run_in(&extract, &work, &mesh.base_url(), "30")
        .status
        .success());
    rt.block_on(mesh.stop());
}

/// Two reconcile summaries (`run.json`'s `reconcile` or `ndop reconcile`'s output) agree on
/// every count.
fn assert_same_counts(a: &serde_json::Value, b: &serde_json::Value) {
    for key in [
        "requested",
        "returned",
        "opted_out",
        "unexpected",
        "response_lines",
        "request_lines",
    ] {
        assert_eq!(a[key], b[key], "{key}");
    }
}
