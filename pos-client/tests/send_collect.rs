//! `pos_client::send` and `pos_client::collect` end to end against a real `mock-mesh` on loopback
//! (127.0.0.1, ephemeral port): prepared `.dat`/`.ctl` pairs go to the INT POS mailbox, the
//! POS replies come back, are classified, stored (0600), journaled and acknowledged.
//! Nothing here mocks HTTP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_client::{ClientConfig, MeshClient};
use pos_client::journal::{Entry, Journal, ReplyKind};
use pos_client::{CollectOptions, CollectReport, CollectedReply, SendOutcome};
use processor::ctl::render as control_file;
use processor::dat::{DatOptions, LineEnding};
use processor::pos::PosEnv;
use processor::prepare::{prepare, PrepareOptions};
use processor::scan::ScanOptions;

const ME: &str = "X26ABC1";
const OTHER: &str = "X26ABC2";

/// The published INT test patients (`testdata/test-patients.csv`): (number, opted out).
fn int_patients() -> Vec<(String, bool)> {
    let csv = include_str!("../../testdata/test-patients.csv");
    csv.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split(',').collect();
            match f.as_slice() {
                ["int", n, flag] => Some((n.to_string(), *flag == "yes")),
                _ => None,
            }
        })
        .collect()
}

struct World {
    mesh: mock_mesh::MockMesh,
    dir: tempfile::TempDir,
}

impl World {
    async fn start(config: mock_mesh::Config) -> World {
        let mesh = mock_mesh::MockMesh::start(config).await.expect("mock-mesh");
        assert!(mesh.base_url().starts_with("http://127.0.0.1:"));
        World {
            mesh,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn client(&self, mailbox: &str, chunk_size: u64) -> MeshClient {
        MeshClient::new(
            ClientConfig::default()
                .with_url(self.mesh.base_url())
                .with_mailbox(mailbox, "password")
                .with_shared_key("TestKey")
                .with_compression(true)
                .with_chunk_size(chunk_size)
                .with_retries(2, Duration::from_millis(20))
                .with_timeout(Duration::from_secs(30)),
        )
        .unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn work(&self) -> PathBuf {
        self.path("work")
    }

    /// Prepares `lines` (one number per line) with the engine into `out/`.
    fn prepare(&self, lines: &[String]) -> PathBuf {
        let input = self.path("extract.txt");
        std::fs::write(&input, lines.join("\n") + "\n").unwrap();
        let out = self.path("out");
        let opts = PrepareOptions {
            scan: ScanOptions::default(),
            dat: DatOptions {
                dir: out.clone(),
                mailbox: ME.into(),
                date: chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
                seq: 1,
                env: PosEnv::Int,
                tag: Some("test".into()),
                line_ending: LineEnding::Crlf,
                max_bytes: 100_000_000,
                max_records: None,
            },
        };
        let summary = prepare(&[input], &opts, &mut |_| {}).unwrap();
        assert_eq!(summary.files.len(), 1);
        out
    }

    async fn stop(self) {
        self.mesh.stop().await;
    }
}

fn quick() -> CollectOptions {
    CollectOptions {
        interval: Duration::from_millis(25),
        timeout: Duration::from_secs(20),
    }
}

/// The (first) reply of this kind, which must be there.
fn reply(report: &CollectReport, kind: ReplyKind) -> &CollectedReply {
    report
        .replies
        .iter()
        .find(|r| r.reply.reply == kind)
        .unwrap_or_else(|| panic!("no {kind:?} reply in {report:?}"))
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn numbers_in(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.trim_end_matches(',').to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn the_int_test_patients_go_out_and_the_ten_without_an_opt_out_come_back() {
    let world = World::start(mock_mesh::Config::default()).await;
    let patients = int_patients();
    assert_eq!(patients.len(), 20);
    let out = world.prepare(&patients.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
    let client = world.client(ME, mesh_client::DEFAULT_CHUNK_SIZE);
    let mut journal = Journal::open(&world.work()).unwrap();

    let seen = std::sync::Mutex::new(Vec::new());
    let report = pos_client::send(
        &client,
        &mut journal,
        std::slice::from_ref(&out),
        &|sent, total| seen.lock().unwrap().push((sent, total)),
    )
    .await
    .unwrap();
    assert_eq!(
        (report.sent, report.resumed, report.already_sent),
        (1, 0, 0)
    );
    let file = &report.files[0];
    assert_eq!(file.to, "X26OT154");
    assert_eq!((file.records, file.bytes), (20, 20 * 13));
    assert_eq!(report.bytes_sent, 260);
    assert_eq!(seen.lock().unwrap().last(), Some(&(260, 260)));
    assert_eq!(
        journal.submission(&file.local_id).unwrap().message_id,
        file.message_id
    );

    let collected = pos_client::collect(&client, &mut journal, &quick())
        .await
        .unwrap();
    assert!(collected.complete, "{collected:?}");
    assert!(collected.pending.is_empty() && collected.unrecognised.is_empty());
    let kinds: Vec<ReplyKind> = collected.replies.iter().map(|r| r.reply.reply).collect();
    assert_eq!(kinds, [ReplyKind::JobCreated, ReplyKind::Cleaned]);
    assert_eq!(
        collected.replies[0].reply.job_status.as_deref(),
        Some("pending")
    );
    let cleaned = &collected.replies[1];
    assert_eq!(cleaned.reply.local_id, file.local_id);
    assert_eq!(cleaned.reply.records, Some(10));
    assert!(!cleaned.duplicate);
    let mut expected: Vec<String> = patients
        .iter()
        .filter(|(_, opted_out)| !opted_out)
        .map(|(n, _)| n.clone())
        .collect();
    expected.sort();
    assert_eq!(numbers_in(&cleaned.path), expected);
    assert_eq!(mode(&cleaned.path), 0o600);
    assert!(cleaned.path.starts_with(world.work().join("replies")));
    assert_eq!(mode(&world.work().join("replies")), 0o700);
    // stored, journaled, acknowledged: the inbox is empty
    assert!(client.list_inbox(None).await.unwrap().is_empty());
    assert_eq!(
        client.track(&file.message_id).await.unwrap().status,
        "acknowledged"
    );
    drop(journal);

    // a second run (new process) sends nothing and waits for nothing
    let mut journal = Journal::open(&world.work()).unwrap();
    assert!(journal.is_answered(&file.local_id));
    let again = pos_client::send(&client, &mut journal, &[out], &|_, _| {})
        .await
        .unwrap();
    assert_eq!((again.sent, again.already_sent), (0, 1));
    assert_eq!(again.files[0].outcome, SendOutcome::AlreadySent);
    assert_eq!(again.files[0].message_id, file.message_id);
    let nothing = pos_client::collect(&client, &mut journal, &quick())
        .await
        .unwrap();
    assert!(nothing.complete && nothing.replies.is_empty() && nothing.polls == 1);
    let submitted = journal
        .entries()
        .iter()
        .filter(|e| matches!(e, Entry::Submitted(_)))
        .count();
    assert_eq!(submitted, 1);
    world.stop().await;
}

#[tokio::test]
async fn an_interrupted_chunked_send_resumes_and_is_never_sent_twice() {
    let world = World::start(mock_mesh::Config::default()).await;
    let patients = int_patients();
    let out = world.prepare(&patients.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
    // 260 bytes in chunks of 50: 6 chunks
    let client = world.client(ME, 50);
    let mut journal = Journal::open(&world.work()).unwrap();

    // "kill" the send once two chunks are up
    let interrupt = Arc::new(tokio::sync::Notify::new());
    let signal = interrupt.clone();
    let progress = move |sent: u64, _total: u64| {
        if sent >= 100 {
            signal.notify_one();
        }
    };
    let inputs = [out.clone()];
    let interrupted = tokio::select! {
        biased;
        _ = interrupt.notified() => true,
        r = pos_client::send(&client, &mut journal, &inputs, &progress) => {
            panic!("the send finished before the interruption: {r:?}")
        }
    };
    assert!(interrupted);
    let upload = journal.entries().iter().find_map(|e| match e {
        Entry::Started(s) => Some(s.clone()),
        _ => None,
    });
    let started = upload.expect("chunk 1 journaled as started");
    assert_eq!((started.chunks, started.chunk_size), (6, 50));
    assert!(journal.submissions().next().is_none());
    assert_eq!(
        client.track(&started.message_id).await.unwrap().status,
        "uploading"
    );
    drop(journal);

    // next run: same message finished from its first missing chunk
    let mut journal = Journal::open(&world.work()).unwrap();
    let seen = std::sync::Mutex::new(Vec::new());
    let report = pos_client::send(
        &client,
        &mut journal,
        std::slice::from_ref(&out),
        &|sent, _| seen.lock().unwrap().push(sent),
    )
    .await
    .unwrap();
    assert_eq!((report.sent, report.resumed), (0, 1));
    assert_eq!(report.files[0].message_id, started.message_id);
    // after the opening (0, total), progress jumps to the chunks already up, then on to the end
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen[0], 0);
    assert!((100..260).contains(&seen[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&260));
    assert_ne!(
        client.track(&started.message_id).await.unwrap().status,
        "uploading"
    );

    // and a third run does nothing
    let again = pos_client::send(&client, &mut journal, &[out], &|_, _| {})
        .await
        .unwrap();
    assert_eq!(again.already_sent, 1);

    // the POS saw one upload (a duplicate would draw a failed job), intact
    let collected = pos_client::collect(&client, &mut journal, &quick())
        .await
        .unwrap();
    assert!(collected.complete, "{collected:?}");
    let job = reply(&collected, ReplyKind::JobCreated);
    assert_eq!(job.reply.job_status.as_deref(), Some("pending"));
    let cleaned = reply(&collected, ReplyKind::Cleaned);
    assert_eq!(cleaned.reply.records, Some(10));
    assert_eq!(collected.replies.len(), 2);
    world.stop().await;
}

#[tokio::test]
async fn an_invalid_file_draws_the_error_reply_and_strangers_stay_in_the_inbox() {
    let world = World::start(mock_mesh::Config::default()).await;
    let out = world.path("hand-made");
    std::fs::create_dir(&out).unwrap();
    // 9000543664 fails Modulus 11 (ndop-domain.md section 4): the POS rejects the whole file
    std::fs::write(out.join("bad.dat"), "9694116538,\r\n9000543664,\r\n").unwrap();
    std::fs::write(
        out.join("bad.ctl"),
        control_file(ME, "X26OT154", "bad-1", "bad-1_local"),
    )
    .unwrap();
    let client = world.client(ME, mesh_client::DEFAULT_CHUNK_SIZE);

    // someone else's message in our inbox
    let stranger = world.client(OTHER, mesh_client::DEFAULT_CHUNK_SIZE);
    let note = world.path("note.txt");
    std::fs::write(&note, "not for the POS").unwrap();
    let opts = mesh_client::SendOptions {
        to: ME.into(),
        workflow_id: "TEST_WORKFLOW".into(),
        local_id: Some("bad-1_local".into()),
        ..Default::default()
    };
    let stranger_id = stranger.send_file(&note, &opts, &|_| {}).await.unwrap();

    let mut journal = Journal::open(&world.work()).unwrap();
    pos_client::send(&client, &mut journal, &[out.join("bad.ctl")], &|_, _| {})
        .await
        .unwrap();
    let collected = pos_client::collect(&client, &mut journal, &quick())
        .await
        .unwrap();
    assert!(collected.complete, "{collected:?}");
    let invalid = reply(&collected, ReplyKind::InvalidNumbers);
    assert!(invalid.reply.is_final());
    assert_eq!(
        std::fs::read_to_string(&invalid.path).unwrap().trim_end(),
        processor::pos::REJECTION_LINE
    );
    assert_eq!(mode(&invalid.path), 0o600);
    assert_eq!(collected.unrecognised.len(), 1, "{collected:?}");
    assert_eq!(collected.unrecognised[0].message_id, stranger_id);
    assert_eq!(client.list_inbox(None).await.unwrap(), vec![stranger_id]);
    // the report serialises for the CLI
    let json = serde_json::to_value(&collected).unwrap();
    assert_eq!(json["replies"][1]["reply"], "invalid_numbers");
    world.stop().await;
}

#[tokio::test]
async fn collect_times_out_with_the_submission_pending_and_finishes_later() {
    let world = World::start(mock_mesh::Config {
        pos: mock_mesh::PosConfig {
            delay: Duration::from_millis(1500),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let out = world.prepare(&["9694116538".to_string(), "9694116414".to_string()]);
    let client = world.client(ME, mesh_client::DEFAULT_CHUNK_SIZE);
    let mut journal = Journal::open(&world.work()).unwrap();
    let sent = pos_client::send(&client, &mut journal, &[out], &|_, _| {})
        .await
        .unwrap();
    let local_id = sent.files[0].local_id.clone();
    let early = pos_client::collect(
        &client,
        &mut journal,
        &CollectOptions {
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(400),
        },
    )
    .await
    .unwrap();
    assert!(!early.complete);
    assert_eq!(early.pending, vec![local_id.clone()]);
    assert!(early.polls >= 2);
    assert!(early
        .replies
        .iter()
        .all(|r| r.reply.reply == ReplyKind::JobCreated));

    let late = pos_client::collect(&client, &mut journal, &quick())
        .await
        .unwrap();
    assert!(late.complete);
    let cleaned = reply(&late, ReplyKind::Cleaned);
    assert_eq!(numbers_in(&cleaned.path), ["9694116538"]);
    world.stop().await;
}

#[tokio::test]
async fn a_malformed_control_file_stops_the_send_before_anything_goes_out() {
    let world = World::start(mock_mesh::Config::default()).await;
    let out = world.prepare(&["9694116538".to_string()]);
    std::fs::write(out.join("zz.dat"), "9694116546,\r\n").unwrap();
    std::fs::write(
        out.join("zz.ctl"),
        "<DTSControl><To_DTS>X26OT154</To_DTS></DTSControl>",
    )
    .unwrap();
    let client = world.client(ME, mesh_client::DEFAULT_CHUNK_SIZE);
    let mut journal = Journal::open(&world.work()).unwrap();
    let err = pos_client::send(&client, &mut journal, &[out], &|_, _| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("zz.ctl"), "{err}");
    assert!(journal.entries().is_empty());
    // had anything gone out, the POS would have answered by now
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(client.list_inbox(None).await.unwrap().is_empty());
    world.stop().await;
}

/// A 900,000-line extract (999 test range): the upload is cut into gzip'd chunks and the cleaned reply comes
/// back in several chunks too; every kept number is accounted for.
#[tokio::test]
async fn many_numbers_go_out_in_chunks_and_come_back_in_chunks() {
    const SEED: u64 = 7;
    const RATE: f64 = 0.05;
    let world = World::start(mock_mesh::Config {
        pos: mock_mesh::PosConfig {
            optout_rate: RATE,
            optout_seed: SEED,
            ..Default::default()
        },
        pos_chunk_bytes: 4_000_000,
        ..Default::default()
    })
    .await;
    let mut numbers: Vec<u64> = Vec::with_capacity(900_000);
    let mut prefix = 999_000_000u32;
    while numbers.len() < 900_000 {
        if let Some(check) = processor::nhs::check_digit_of_prefix(prefix) {
            numbers.push(u64::from(prefix) * 10 + u64::from(check));
        }
        prefix += 1;
    }
    let lines: Vec<String> = numbers.iter().map(|n| n.to_string()).collect();
    let out = world.prepare(&lines);
    let client = world.client(ME, 5_000_000);
    let mut journal = Journal::open(&world.work()).unwrap();
    let sent = pos_client::send(&client, &mut journal, &[out], &|_, _| {})
        .await
        .unwrap();
    assert_eq!(sent.files[0].records, 900_000);
    let started = journal.entries().iter().find_map(|e| match e {
        Entry::Started(s) => Some(s.chunks),
        _ => None,
    });
    assert_eq!(started, Some(3), "11.7 MB in chunks of 5 MB");

    let collected = pos_client::collect(&client, &mut journal, &quick())
        .await
        .unwrap();
    assert!(collected.complete, "{collected:?}");
    let cleaned = reply(&collected, ReplyKind::Cleaned);
    let expected: Vec<u64> = numbers
        .iter()
        .copied()
        .filter(|n| !mock_mesh::pos::opted_out_by_rate(*n, SEED, RATE))
        .collect();
    assert!(expected.len() > 800_000 && expected.len() < 900_000);
    assert_eq!(cleaned.reply.records, Some(expected.len() as u64));
    let text = std::fs::read_to_string(&cleaned.path).unwrap();
    let mut got: Vec<u64> = text
        .lines()
        .map(|l| l.trim_end_matches(',').parse().unwrap())
        .collect();
    got.sort_unstable();
    assert!(
        got == expected,
        "the cleaned file differs from the expected set"
    );
    world.stop().await;
}

/// A submission nobody collects expires after 5 days; MESH's non-delivery report (code 14,
/// linked to it, no body) is the final reply, stored as JSON.
#[tokio::test]
async fn a_non_delivery_report_is_a_final_reply() {
    let clock = mock_mesh::Clock::system();
    let world = World::start(mock_mesh::Config {
        clock: clock.clone(),
        auth: mock_mesh::AuthConfig {
            check_timestamp: false,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let out = world.path("to-b");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("x.dat"), "9694116538,\r\n").unwrap();
    // addressed to an ordinary mailbox that never collects
    std::fs::write(out.join("x.ctl"), control_file(ME, OTHER, "x-1", "x-1_l")).unwrap();
    let client = world.client(ME, mesh_client::DEFAULT_CHUNK_SIZE);
    let mut journal = Journal::open(&world.work()).unwrap();
    let sent = pos_client::send(&client, &mut journal, &[out], &|_, _| {})
        .await
        .unwrap();
    let quick_look = CollectOptions {
        interval: Duration::from_millis(10),
        timeout: Duration::ZERO,
    };
    let before = pos_client::collect(&client, &mut journal, &quick_look)
        .await
        .unwrap();
    assert_eq!((before.polls, before.complete), (1, false));
    clock.advance(chrono::Duration::days(5) + chrono::Duration::minutes(1));

    let after = pos_client::collect(&client, &mut journal, &quick())
        .await
        .unwrap();
    assert!(after.complete, "{after:?}");
    let ndr = reply(&after, ReplyKind::Report);
    assert!(ndr.reply.is_final());
    assert_eq!(ndr.reply.local_id, "x-1_l");
    assert_eq!(ndr.reply.status_code.as_deref(), Some("14"));
    assert_eq!(ndr.reply.status_success, Some(false));
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ndr.path).unwrap()).unwrap();
    assert_eq!(
        stored["linked_message_id"],
        sent.files[0].message_id.as_str()
    );
    assert_eq!(mode(&ndr.path), 0o600);
    assert!(client.list_inbox(None).await.unwrap().is_empty());
    world.stop().await;
}

/// A crash after a reply was stored and journaled but before it was acknowledged: the next
/// collect acknowledges it without storing it twice.
#[tokio::test]
async fn a_reply_journaled_but_not_acknowledged_is_acknowledged_next_time() {
    let world = World::start(mock_mesh::Config::default()).await;
    let out = world.prepare(&["9694116538".to_string()]);
    let client = world.client(ME, mesh_client::DEFAULT_CHUNK_SIZE);
    let mut journal = Journal::open(&world.work()).unwrap();
    let sent = pos_client::send(&client, &mut journal, &[out], &|_, _| {})
        .await
        .unwrap();
    let local_id = sent.files[0].local_id.clone();
    // let both replies arrive, then "crash" right after journaling the first one
    let mut ids = Vec::new();
    for _ in 0..400 {
        ids = client.list_inbox(None).await.unwrap();
        if ids.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ids.len(), 2);
    journal
        .append(Entry::Reply(pos_client::journal::Reply {
            local_id: local_id.clone(),
            message_id: ids[0].clone(),
            reply: ReplyKind::JobCreated,
            file: "replies/earlier.job.json".into(),
            sha256: "0".repeat(64),
            bytes: 1,
            records: None,
            job_status: Some("pending".into()),
            status_code: None,
            status_event: None,
            status_description: None,
            status_success: None,
            time: pos_client::journal::now(),
        }))
        .unwrap();

    let collected = pos_client::collect(&client, &mut journal, &quick())
        .await
        .unwrap();
    assert!(collected.complete);
    assert_eq!(collected.acknowledged_again, vec![ids[0].clone()]);
    assert_eq!(collected.replies.len(), 1);
    assert_eq!(collected.replies[0].reply.message_id, ids[1]);
    assert_eq!(journal.replies_to(&local_id).count(), 2);
    assert!(client.list_inbox(None).await.unwrap().is_empty());
    world.stop().await;
}

/// A reply larger than a job-created object is checked and hashed as it downloads (chunked and
/// gzip'd here): a bad line deep inside it is named by number, never by content, and the message
/// stays in the inbox; a good one is stored with the SHA-256 and line count of the file on disk.
#[tokio::test]
async fn a_large_reply_is_checked_as_it_downloads() {
    let world = World::start(mock_mesh::Config::default()).await;
    let out = world.path("hand-made");
    std::fs::create_dir(&out).unwrap();
    // addressed to another mailbox, which plays the POS by hand
    std::fs::write(out.join("big.dat"), "9694116538,\r\n").unwrap();
    std::fs::write(
        out.join("big.ctl"),
        control_file(ME, OTHER, "big-1", "big-1_local"),
    )
    .unwrap();
    let client = world.client(ME, mesh_client::DEFAULT_CHUNK_SIZE);
    let mut journal = Journal::open(&world.work()).unwrap();
    pos_client::send(&client, &mut journal, &[out.join("big.ctl")], &|_, _| {})
        .await
        .unwrap();

    // 200,000 lines (2.6 MB) of the 999 range, sent back in gzip'd chunks of 1 MB
    let mut good = Vec::new();
    let mut prefix = 999_000_000u32;
    let mut lines = 0;
    while lines < 200_000 {
        if let Some(check) = processor::nhs::check_digit_of_prefix(prefix) {
            good.extend_from_slice(format!("{prefix}{check},\r\n").as_bytes());
            lines += 1;
        }
        prefix += 1;
    }
    let mut bad = good.clone();
    let at = 150_000 * 13 + 9; // the check digit of line 150,001
    bad[at] = if bad[at] == b'0' { b'1' } else { bad[at] - 1 };
    let pos = world.client(OTHER, 1_000_000);
    let opts = mesh_client::SendOptions {
        to: ME.into(),
        workflow_id: processor::pos::WORKFLOW_ID.into(),
        local_id: Some("big-1_local".into()),
        ..Default::default()
    };
    let reply_file = world.path("reply.dat");
    std::fs::write(&reply_file, &bad).unwrap();
    let bad_id = pos.send_file(&reply_file, &opts, &|_| {}).await.unwrap();
    let brief = CollectOptions {
        interval: Duration::from_millis(25),
        timeout: Duration::from_millis(200),
    };
    let collected = pos_client::collect(&client, &mut journal, &brief)
        .await
        .unwrap();
    assert!(!collected.complete, "{collected:?}");
    assert_eq!(collected.unrecognised.len(), 1, "{collected:?}");
    let left = &collected.unrecognised[0];
    assert_eq!(left.message_id, bad_id);
    assert!(
        left.reason
            .starts_with("line 150001 is not an NHS number line"),
        "{}",
        left.reason
    );
    let shown = String::from_utf8_lossy(&bad[150_000 * 13..150_000 * 13 + 10]).into_owned();
    assert!(!left.reason.contains(&shown), "{}", left.reason);
    assert!(client.list_inbox(None).await.unwrap().contains(&bad_id));
    assert!(
        std::fs::read_dir(world.work().join(pos_client::REPLY_DIR))
            .unwrap()
            .next()
            .is_none(),
        "nothing of the bad reply is kept"
    );

    std::fs::write(&reply_file, &good).unwrap();
    pos.send_file(&reply_file, &opts, &|_| {}).await.unwrap();
    let collected = pos_client::collect(&client, &mut journal, &quick())
        .await
        .unwrap();
    assert!(collected.complete, "{collected:?}");
    let cleaned = reply(&collected, ReplyKind::Cleaned);
    assert_eq!(cleaned.reply.records, Some(200_000));
    assert_eq!(cleaned.reply.bytes, good.len() as u64);
    assert!(cleaned.checked_while_downloading);
    let on_disk = std::fs::read(&cleaned.path).unwrap();
    assert!(on_disk == good, "the stored reply is the reply sent");
    let (sha, _) = processor::files::sha256_file(&cleaned.path).unwrap();
    assert_eq!(cleaned.reply.sha256, sha);
    world.stop().await;
}
