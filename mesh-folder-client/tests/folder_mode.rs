//! Folder mode end to end on loopback: `pos_client::folder` hands prepared pairs to the stand-in
//! MESH client (`mesh_folder_client::StandIn`), which talks to a real `mock-mesh` on
//! 127.0.0.1; the replies come back through `IN`. Nothing here mocks HTTP or the folders.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_client::{ClientConfig, MeshClient};
use mesh_folder_client::StandIn;
use pos_client::folder::{self, FolderOutcome, Folders};
use pos_client::journal::{Entry, Journal, ReplyKind};
use pos_client::CollectOptions;
use processor::ctl::render as control_file;
use processor::dat::{DatOptions, LineEnding};
use processor::pos::PosEnv;
use processor::prepare::{prepare, PrepareOptions};
use processor::scan::ScanOptions;

const ME: &str = "X26ABC1";

fn client(url: &str) -> MeshClient {
    MeshClient::new(
        ClientConfig::default()
            .with_url(url)
            .with_mailbox(ME, "password")
            .with_shared_key("TestKey")
            .with_retries(1, Duration::from_millis(20))
            .with_timeout(Duration::from_secs(30)),
    )
    .unwrap()
}

/// A folder root with the five folders, named in `case`.
fn mailbox_root(dir: &Path, upper: bool) -> PathBuf {
    let root = dir.join("mesh-data").join(ME);
    for name in ["IN", "OUT", "SENT", "FAILED", "TEMP"] {
        let name = if upper {
            name.to_string()
        } else {
            name.to_ascii_lowercase()
        };
        std::fs::create_dir_all(root.join(name)).unwrap();
    }
    root
}

/// Starts the stand-in on `root` against `url`, polling every 100 ms; stop it with the sender.
fn start_stand_in(
    url: &str,
    root: &Path,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let stand_in = StandIn {
        root: root.to_path_buf(),
        client: client(url),
        poll: Duration::from_millis(100),
        min_age: Duration::from_secs(1),
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        stand_in
            .run(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    (task, tx)
}

/// The published INT test patients (`testdata/test-patients.csv`).
fn int_patients() -> Vec<String> {
    include_str!("../../testdata/test-patients.csv")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split(',').collect();
            match f.as_slice() {
                ["int", n, _] => Some(n.to_string()),
                _ => None,
            }
        })
        .collect()
}

fn prepare_into(dir: &Path, lines: &[String]) -> PathBuf {
    let input = dir.join("extract.txt");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.join("out");
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
    prepare(&[input], &opts, &mut |_| {}).unwrap();
    out
}

fn quick() -> CollectOptions {
    CollectOptions {
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(30),
    }
}

fn count(journal: &Journal, kind: fn(&Entry) -> bool) -> usize {
    journal.entries().iter().filter(|e| kind(e)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int_patients_through_the_folders_give_the_api_paths_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let out = prepare_into(dir.path(), &int_patients());

    // the API path, against a mock of its own (the mock POS refuses a second identical file)
    let api_mesh = mock_mesh::MockMesh::start(mock_mesh::Config::default())
        .await
        .unwrap();
    let api_work = dir.path().join("api-work");
    let mut api_journal = Journal::open(&api_work).unwrap();
    let api_client = client(&api_mesh.base_url());
    pos_client::send(
        &api_client,
        &mut api_journal,
        std::slice::from_ref(&out),
        &|_, _| {},
    )
    .await
    .unwrap();
    let api = pos_client::collect(&api_client, &mut api_journal, &quick())
        .await
        .unwrap();
    assert!(api.complete, "{api:?}");
    api_mesh.stop().await;

    // the folder path, lower-case folder names
    let mesh = mock_mesh::MockMesh::start(mock_mesh::Config::default())
        .await
        .unwrap();
    let root = mailbox_root(dir.path(), false);
    let folders = Folders::open(&root).unwrap();
    // a stranger's message and an unreadable file in IN: left alone
    std::fs::write(folders.inbox.join("20201025030139_abc.dat"), b"not ours\n").unwrap();
    std::fs::write(
        folders.inbox.join("20201025030139_abc.ctl"),
        control_file("X26XYZ9", ME, "other", "other_1"),
    )
    .unwrap();
    std::fs::write(folders.inbox.join("broken.ctl"), b"<DTSControl>").unwrap();
    let (task, stop) = start_stand_in(&mesh.base_url(), &root);
    let work = dir.path().join("folder-work");
    let mut journal = Journal::open(&work).unwrap();
    let sent = folder::send(
        &folders,
        &mut journal,
        std::slice::from_ref(&out),
        Some(ME),
        &quick(),
    )
    .await
    .unwrap();
    assert!(sent.complete, "{sent:?}");
    assert_eq!((sent.queued, sent.sent, sent.already_sent), (1, 1, 0));
    let file = &sent.files[0];
    let message_id = file.message_id.clone().unwrap();
    // the pair is in SENT, its .ctl rewritten with the message id
    let sent_ctl = std::fs::read(folders.sent.join(format!("{}.ctl", file.local_id))).unwrap();
    let c = processor::ctl::parse_client_control(&sent_ctl).unwrap();
    assert_eq!(c.dts_id.as_deref(), Some(message_id.as_str()));
    assert_eq!(c.status.unwrap().code, "00");
    assert_eq!(
        journal.submission(&file.local_id).unwrap().message_id,
        message_id
    );

    // a collect report from the POS, as a .ctl alone
    std::fs::write(
        folders.inbox.join("20260101000000000000_AAAAAA.ctl"),
        format!(
            "<DTSControl><MessageType>Report</MessageType><From_DTS>{ME}</From_DTS>\
             <To_DTS>X26OT154</To_DTS><LocalId>{}</LocalId><DTSId>{message_id}</DTSId>\
             <StatusRecord><DateTime>20260101000000</DateTime><Event>COLLECT</Event>\
             <Status>SUCCESS</Status><StatusCode>0</StatusCode><Description>Data collect \
             success confirmation.</Description></StatusRecord></DTSControl>",
            file.local_id
        ),
    )
    .unwrap();
    let got = folder::collect(&folders, &mut journal, &quick())
        .await
        .unwrap();
    assert!(got.report.complete, "{got:?}");
    let kinds: Vec<ReplyKind> = got.report.replies.iter().map(|r| r.reply.reply).collect();
    assert!(
        kinds.contains(&ReplyKind::Report) && kinds.contains(&ReplyKind::Cleaned),
        "{kinds:?}"
    );
    let report = got
        .report
        .replies
        .iter()
        .find(|r| r.reply.reply == ReplyKind::Report)
        .unwrap();
    assert_eq!(report.reply.status_code.as_deref(), Some("00"));
    assert!(!report.reply.is_final());
    // the same cleaned file, byte for byte, as the API path stored
    let cleaned = |replies: &[pos_client::CollectedReply]| {
        let r = replies
            .iter()
            .find(|r| r.reply.reply == ReplyKind::Cleaned)
            .unwrap();
        std::fs::read(&r.path).unwrap()
    };
    assert_eq!(cleaned(&got.report.replies), cleaned(&api.replies));
    let files = [file
        .file
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()];
    assert!(pos_client::final_results(&journal, &work, &files).is_ok());
    // ours taken from IN; the stranger's pair and the broken file untouched and listed
    let mut left: Vec<String> = std::fs::read_dir(&folders.inbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "20201025030139_abc.ctl",
            "20201025030139_abc.dat",
            "broken.ctl"
        ]
    );
    assert_eq!(
        got.report.unrecognised.len(),
        2,
        "{:?}",
        got.report.unrecognised
    );
    assert!(
        got.alerts.iter().any(|a| a.contains("broken.ctl")),
        "{:?}",
        got.alerts
    );
    let raw_kept = std::fs::read_dir(work.join("replies"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "ctl")
        })
        .count();
    assert!(raw_kept >= 2, "the raw .ctl files are kept for audit");
    let _ = stop.send(());
    task.await.unwrap();
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_files_go_to_failed_and_are_reported_with_their_code() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = mock_mesh::MockMesh::start(mock_mesh::Config::default())
        .await
        .unwrap();
    let root = mailbox_root(dir.path(), true);
    let folders = Folders::open(&root).unwrap();
    let (task, stop) = start_stand_in(&mesh.base_url(), &root);
    for (name, ctl, code) in [
        (
            "workflow",
            control_file(ME, "X26OT154", "w-1", "w-1_l")
                .replace("SPINE_NTT_UPHOLDING", "NOT_A_WORKFLOW"),
            "17",
        ),
        (
            "recipient",
            control_file(ME, "X99ZZZ9", "r-1", "r-1_l"),
            "12",
        ),
    ] {
        let out = dir.path().join(name);
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("x.dat"), "9694116538,\r\n").unwrap();
        std::fs::write(out.join("x.ctl"), ctl).unwrap();
        let mut journal = Journal::open(&dir.path().join(format!("work-{name}"))).unwrap();
        let e = folder::send(&folders, &mut journal, &[out], Some(ME), &quick())
            .await
            .unwrap_err();
        assert!(matches!(e, pos_client::Error::Refused(_)), "{e:?}");
        let text = e.to_string();
        assert!(text.contains(&format!("SEND ERROR {code}")), "{text}");
        assert!(text.contains("FAILED"), "{text}");
        assert_eq!(count(&journal, |e| matches!(e, Entry::Submitted(_))), 0);
    }
    // both pairs in FAILED, an error .ctl for each in IN
    assert_eq!(std::fs::read_dir(&folders.failed).unwrap().count(), 4);
    assert_eq!(std::fs::read_dir(&folders.inbox).unwrap().count(), 2);
    let _ = stop.send(());
    task.await.unwrap();
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_hand_over_resumes_without_writing_the_pair_again() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = mock_mesh::MockMesh::start(mock_mesh::Config::default())
        .await
        .unwrap();
    let out = prepare_into(dir.path(), &int_patients());
    let root = mailbox_root(dir.path(), true);
    let folders = Folders::open(&root).unwrap();
    let work = dir.path().join("work");
    let no_wait = CollectOptions {
        interval: Duration::from_millis(10),
        timeout: Duration::ZERO,
    };
    // no client running: the pair is handed over and waits in OUT
    let mut journal = Journal::open(&work).unwrap();
    let first = folder::send(
        &folders,
        &mut journal,
        std::slice::from_ref(&out),
        Some(ME),
        &no_wait,
    )
    .await
    .unwrap();
    assert!(!first.complete);
    assert_eq!(
        (first.queued, first.files[0].outcome),
        (1, FolderOutcome::Waiting)
    );
    let base = first.files[0].local_id.clone();
    // cut off between the .dat's and the .ctl's rename: put the .ctl back under its dot-name
    std::fs::rename(
        folders.outbox.join(format!("{base}.ctl")),
        folders.outbox.join(format!(".{base}.ctl.part")),
    )
    .unwrap();
    drop(journal);
    let mut journal = Journal::open(&work).unwrap();
    let dat_inode = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(folders.outbox.join(format!("{base}.dat")))
            .unwrap()
            .ino()
    };
    let second = folder::send(
        &folders,
        &mut journal,
        std::slice::from_ref(&out),
        Some(ME),
        &no_wait,
    )
    .await
    .unwrap();
    assert_eq!(second.queued, 0, "never written twice");
    assert!(
        folders.outbox.join(format!("{base}.ctl")).exists(),
        "the rename was finished"
    );
    {
        use std::os::unix::fs::MetadataExt;
        let now = std::fs::metadata(folders.outbox.join(format!("{base}.dat")))
            .unwrap()
            .ino();
        assert_eq!(now, dat_inode, "the .dat in OUT was not rewritten");
    }
    // the client starts; a third run sees it sent, a fourth has nothing to do
    let (task, stop) = start_stand_in(&mesh.base_url(), &root);
    let third = folder::send(
        &folders,
        &mut journal,
        std::slice::from_ref(&out),
        Some(ME),
        &quick(),
    )
    .await
    .unwrap();
    assert!(
        third.complete && third.sent == 1 && third.queued == 0,
        "{third:?}"
    );
    let fourth = folder::send(
        &folders,
        &mut journal,
        std::slice::from_ref(&out),
        Some(ME),
        &quick(),
    )
    .await
    .unwrap();
    assert_eq!(
        (fourth.already_sent, fourth.queued, fourth.polls),
        (1, 0, 1)
    );
    assert_eq!(count(&journal, |e| matches!(e, Entry::Queued(_))), 1);
    assert_eq!(count(&journal, |e| matches!(e, Entry::Submitted(_))), 1);
    let got = folder::collect(&folders, &mut journal, &quick())
        .await
        .unwrap();
    assert!(got.report.complete, "{got:?}");
    let _ = stop.send(());
    task.await.unwrap();
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_sends_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = mock_mesh::MockMesh::start(mock_mesh::Config::default())
        .await
        .unwrap();
    let root = mailbox_root(dir.path(), false);
    let out = root.join("out");
    std::fs::write(out.join("m.dat"), "9694116538,\r\n").unwrap();
    std::fs::write(
        out.join("m.ctl"),
        control_file(ME, "X26ABC2", "m-1", "m-1_l"),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-folder-client"))
        .args([
            "--root",
            root.to_str().unwrap(),
            "--mailbox",
            ME,
            "--poll",
            "0.1",
        ])
        .args(["--url", &mesh.base_url()])
        .spawn()
        .unwrap();
    let sent = root.join("sent").join("m.ctl");
    for _ in 0..100 {
        if sent.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent.exists(), "the pair reached SENT");
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut status = None;
    for _ in 0..50 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("still running 5 s after SIGTERM")
    });
    assert!(status.success(), "{status:?}");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_younger_than_a_second_and_dot_names_are_left_in_out() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = mock_mesh::MockMesh::start(mock_mesh::Config::default())
        .await
        .unwrap();
    let root = mailbox_root(dir.path(), true);
    let out = root.join("OUT");
    std::fs::write(out.join("y.dat"), "9694116538,\r\n").unwrap();
    std::fs::write(
        out.join("y.ctl"),
        control_file(ME, "X26ABC2", "y-1", "y-1_l"),
    )
    .unwrap();
    std::fs::write(out.join(".z.dat.part"), "9694116538,\r\n").unwrap();
    std::fs::write(
        out.join(".z.ctl.part"),
        control_file(ME, "X26ABC2", "z-1", "z-1_l"),
    )
    .unwrap();
    let stand_in = StandIn {
        root: root.clone(),
        client: client(&mesh.base_url()),
        poll: Duration::from_millis(100),
        min_age: Duration::from_secs(1),
    };
    let young = stand_in.poll_once().await.unwrap();
    assert_eq!(young.sent, 0, "too young");
    assert!(out.join("y.ctl").exists());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let old = stand_in.poll_once().await.unwrap();
    assert_eq!(old.sent, 1);
    assert!(root.join("SENT/y.dat").exists() && root.join("SENT/y.ctl").exists());
    assert!(out.join(".z.dat.part").exists() && out.join(".z.ctl.part").exists());
    mesh.stop().await;
}
