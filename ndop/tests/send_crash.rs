//! `ndop send` never sends a file twice: the real binary is killed (`abort`, through the
//! test-only `NDOP_TEST_CRASH_AT` hook of `pos-client`) at each step of single-chunk and chunked
//! uploads against a real mock-mesh on loopback, then run again in the same work directory.
//! Afterwards MESH must hold exactly one message per pair (tracking by LocalId answers 200, not
//! 300 Multiple Choices), and the POS must answer every submission as a fresh one (its job
//! `pending`, never `failed` as a duplicate upload), which `ndop collect` checks.

mod util;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use util::{generate_csv, ndop, ndop_command, start_mesh};

/// `ndop send` of `outbox` into `work`, aborting at `crash_at` if given.
fn send(outbox: &Path, work: &Path, config: &Path, url: &str, crash_at: Option<&str>) -> Output {
    let mut cmd = ndop_command();
    cmd.args(["send", outbox.to_str().unwrap(), "--work"])
        .arg(work)
        .arg("--config")
        .arg(config)
        .args(["--mesh", url, "--mailbox", "X26ABC1"])
        .env("NDOP_MESH_PASSWORD", "password")
        .env("NDOP_MESH_SHARED_KEY", "TestKey")
        .env_remove("NDOP_TEST_CRASH_AT");
    if let Some(point) = crash_at {
        cmd.env("NDOP_TEST_CRASH_AT", point);
    }
    cmd.output().expect("ndop runs")
}

/// The journal's lines as JSON.
fn journal(work: &Path) -> Vec<Value> {
    std::fs::read_to_string(work.join("journal.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn kind<'a>(journal: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    journal.iter().filter(move |e| e["kind"] == kind)
}

/// LocalIds of the prepared pairs, from their `.ctl`s.
fn local_ids(outbox: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(outbox)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ctl"))
        .map(|p| {
            let ctl = std::fs::read_to_string(p).unwrap();
            let start = ctl.find("<LocalId>").unwrap() + "<LocalId>".len();
            let end = ctl.find("</LocalId>").unwrap();
            ctl[start..end].to_owned()
        })
        .collect();
    ids.sort();
    ids
}

/// Prepares two pairs of 1500 records (16.5 kB each) from a fresh extract in `dir`, and a
/// configuration cutting them into chunks of `chunk_size` bytes, gzip'd.
fn prepare(dir: &Path, seed: &str, chunk_size: u64) -> (PathBuf, PathBuf) {
    let extract = dir.join("extract.csv");
    generate_csv(&extract, "3000", seed);
    let outbox = dir.join("outbox");
    let out = ndop(&[
        "prepare",
        extract.to_str().unwrap(),
        "--column",
        "nhs_number",
        "--out",
        outbox.to_str().unwrap(),
        "--mailbox",
        "X26ABC1",
        "--max-records",
        "1500",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.join("ndop.toml");
    std::fs::write(
        &config,
        format!("[mesh]\nchunk_size = {chunk_size}\ncompress = true\n"),
    )
    .unwrap();
    (outbox, config)
}

/// Sends two pairs, aborting at each of `crashes` in turn (a fresh process each time), then
/// sends to the end, and checks that each pair is in MESH exactly once and that the POS took
/// every one as a new upload. `chunk_size` decides single-chunk or chunked messages.
fn crash_then_finish(seed: &str, chunk_size: u64, crashes: &[&str], adopted: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (rt, mesh) = start_mesh(mock_mesh::Config::default());
    let url = mesh.base_url();
    let (outbox, config) = prepare(dir.path(), seed, chunk_size);
    let work = dir.path().join("work");
    // chunks of the first pair (both are the same size)
    let dat = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "dat"))
        .unwrap();
    let chunks = std::fs::metadata(dat).unwrap().len().div_ceil(chunk_size);
    for point in crashes {
        let point = point.replace("LAST", &chunks.to_string());
        let out = send(&outbox, &work, &config, &url, Some(&point));
        assert_eq!(
            out.status.signal(),
            Some(SIGABRT),
            "{point}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = send(&outbox, &work, &config, &url, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let j = journal(&work);
    let ids = local_ids(&outbox);
    let mut submitted: Vec<String> = kind(&j, "submitted")
        .map(|s| s["local_id"].as_str().unwrap().to_owned())
        .collect();
    submitted.sort();
    assert_eq!(submitted, ids, "one submission per pair");
    assert_eq!(
        kind(&j, "submitted")
            .filter(|s| s["adopted"] == true)
            .count(),
        adopted,
        "{crashes:?}"
    );

    // MESH holds exactly one message per LocalId (several would answer 300), accepted.
    let client = mesh_client::MeshClient::new(
        mesh_client::ClientConfig::default()
            .with_url(url.clone())
            .with_mailbox("X26ABC1", "password")
            .with_shared_key("TestKey"),
    )
    .unwrap();
    for id in &ids {
        let found = rt.block_on(client.track_local_id(id)).unwrap();
        match found {
            mesh_client::LocalIdLookup::One(t) => {
                assert_eq!(&t.local_id, id);
                assert!(
                    matches!(t.status.as_str(), "accepted" | "acknowledged"),
                    "{t:?}"
                );
            }
            other => panic!("{id}: {other:?} in MESH after {crashes:?}"),
        }
    }

    // The POS answers each as a new upload: no job failed as a duplicate.
    let out = ndop(&[
        "collect",
        "--work",
        work.to_str().unwrap(),
        "--mesh",
        &url,
        "--mailbox",
        "X26ABC1",
        "--interval",
        "0.05",
        "--timeout",
        "30",
    ]);
    assert!(
        out.status.success(),
        "{crashes:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = journal(&work);
    let jobs: Vec<&Value> = kind(&j, "reply")
        .filter(|r| r["reply"] == "job_created")
        .collect();
    assert_eq!(jobs.len(), ids.len(), "{jobs:?}");
    assert!(
        jobs.iter().all(|r| r["job_status"] == "pending"),
        "{jobs:?}"
    );
    rt.block_on(mesh.stop());
}

/// SIGABRT, what `std::process::abort` ends the process with.
const SIGABRT: i32 = 6;

const SINGLE: u64 = 1 << 20;
const CHUNKED: u64 = 4000;

#[test]
fn single_chunk_crash_before_the_send_resends_once() {
    // the write-ahead line is there, MESH has nothing: the LocalId lookup finds none
    crash_then_finish("31", SINGLE, &["after-sending"], 0);
}

#[test]
fn single_chunk_crash_after_mesh_accepted_adopts_the_message() {
    crash_then_finish("32", SINGLE, &["after-accept"], 1);
}

#[test]
fn chunked_crash_after_chunk_1_resumes_the_same_message() {
    // MESH holds an unfinished upload the journal has no id for: found by LocalId, resumed
    crash_then_finish("33", CHUNKED, &["after-accept"], 0);
}

#[test]
fn chunked_crash_mid_upload_and_again_while_resuming() {
    crash_then_finish("34", CHUNKED, &["after-chunk-2", "after-chunk-4"], 0);
}

#[test]
fn chunked_crash_after_the_last_chunk_finds_it_complete() {
    // the first rerun resumes the upload found by LocalId and dies after its last chunk
    crash_then_finish("35", CHUNKED, &["after-accept", "after-chunk-LAST"], 0);
}
