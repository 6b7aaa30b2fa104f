//! Folder mode through the real `ndop` binary: `ndop run --mesh-folder` / `--meshclient-cfg`
//! against the stand-in MESH client (`mesh-folder-client`, a test double of NHS England's Java
//! client) and a real mock-mesh on loopback, compared byte for byte with the API path; a file
//! the client moves to FAILED; a run cut off and resumed without a second hand-over.

mod util;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use util::ndop;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A mock MESH and (optionally later) a stand-in client on a runtime of their own.
struct World {
    rt: tokio::runtime::Runtime,
    mesh: mock_mesh::MockMesh,
    stand_in: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl World {
    fn start() -> World {
        World::start_with(mock_mesh::Config::default())
    }

    fn start_with(config: mock_mesh::Config) -> World {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mesh = rt.block_on(mock_mesh::MockMesh::start(config)).unwrap();
        World {
            rt,
            mesh,
            stand_in: None,
        }
    }

    /// Starts the stand-in client for X26ABC1 on `root`, polling every 100 ms.
    fn start_client(&mut self, root: &Path) {
        let client = mesh_client::MeshClient::new(
            mesh_client::ClientConfig::default()
                .with_url(self.mesh.base_url())
                .with_mailbox("X26ABC1", "password")
                .with_shared_key("TestKey"),
        )
        .unwrap();
        let stand_in = mesh_folder_client::StandIn {
            root: root.to_path_buf(),
            client,
            poll: Duration::from_millis(100),
            min_age: Duration::from_secs(1),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = self.rt.spawn(async move {
            stand_in
                .run(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        self.stand_in = Some((tx, task));
    }

    fn stop(self) {
        if let Some((tx, task)) = self.stand_in {
            let _ = tx.send(());
            self.rt.block_on(task).unwrap();
        }
        self.rt.block_on(self.mesh.stop());
    }
}

/// A mailbox folder root with the client's five folders (upper case).
fn mailbox_root(dir: &Path) -> PathBuf {
    let root = dir.join("mesh-data").join("X26ABC1");
    for name in ["IN", "OUT", "SENT", "FAILED", "TEMP"] {
        std::fs::create_dir_all(root.join(name)).unwrap();
    }
    root
}

fn generate_csv(out: &Path) {
    let gen = ndop(&[
        "generate",
        "--lines",
        "3000",
        "--seed",
        "12",
        "--format",
        "csv",
        "--invalid-frac",
        "0.01",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(gen.status.success(), "{}", stderr(&gen));
}

/// `ndop run` on `extract` in `work`, reaching MESH by `how`.
fn run(extract: &Path, work: &Path, how: &[&str], timeout: &str) -> Output {
    let mut args = vec![
        "run",
        extract.to_str().unwrap(),
        "--column",
        "nhs_number",
        "--work",
        work.to_str().unwrap(),
        "--mailbox",
        "X26ABC1",
        "--max-records",
        "1000",
        "--interval",
        "0.1",
        "--timeout",
        timeout,
    ];
    args.extend_from_slice(how);
    ndop(&args)
}

fn count(work: &Path, kind: &str) -> usize {
    std::fs::read_to_string(work.join("journal.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains(&format!("\"kind\":\"{kind}\"")))
        .count()
}

#[test]
fn demo_through_folders_gives_the_api_demos_files() {
    let dir = tempfile::tempdir().unwrap();
    let (api, folder) = (dir.path().join("api"), dir.path().join("folder"));
    let a = ndop(&["demo", "--work", api.to_str().unwrap(), "--patients", "200"]);
    assert!(a.status.success(), "{}", stderr(&a));
    let f = ndop(&[
        "demo",
        "--mesh-folder",
        "--work",
        folder.to_str().unwrap(),
        "--patients",
        "200",
    ]);
    assert!(f.status.success(), "{}", stderr(&f));
    let out = String::from_utf8_lossy(&f.stdout);
    assert!(
        out.contains("through the MESH client folders") && out.contains("agree: yes"),
        "{out}"
    );
    for file in ["cleared.csv", "reconciled/opted-out.txt"] {
        assert!(
            std::fs::read(api.join(file)).unwrap() == std::fs::read(folder.join(file)).unwrap(),
            "{file} differs between the API and the folder demo"
        );
    }
    // the rejects report names the extract by its path, which is in the work directory
    let rejects = |work: &Path| {
        std::fs::read_to_string(work.join("cleared.csv.rejects.csv"))
            .unwrap()
            .replace(work.to_str().unwrap(), "WORK")
    };
    assert_eq!(rejects(&api), rejects(&folder));
    // every prepared pair went through SENT
    let dats = |d: PathBuf| {
        std::fs::read_dir(d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "dat")
            })
            .count()
    };
    let prepared = dats(folder.join("prepared"));
    assert!(prepared >= 1);
    assert_eq!(dats(folder.join("mesh-client/X26ABC1/SENT")), prepared);
}

#[test]
fn run_through_folders_is_resumable_and_matches_the_api_path() {
    let dir = tempfile::tempdir().unwrap();
    let extract = dir.path().join("extract.csv");
    generate_csv(&extract);

    let api_world = World::start();
    let api_work = dir.path().join("api-work");
    let url = api_world.mesh.base_url();
    let api = run(&extract, &api_work, &["--mesh", &url], "30");
    assert!(api.status.success(), "{}", stderr(&api));
    api_world.stop();

    let mut world = World::start();
    let root = mailbox_root(dir.path());
    let work = dir.path().join("work");
    let folder_arg = ["--mesh-folder", root.to_str().unwrap()];
    // a stranger's message in IN
    std::fs::write(
        root.join("IN/20201025030139_abc.ctl"),
        "<DTSControl><MessageType>Data</MessageType></DTSControl>",
    )
    .unwrap();
    std::fs::write(root.join("IN/20201025030139_abc.dat"), "x\n").unwrap();
    // no client running: the files are handed over and wait in OUT (exit 6), twice
    for _ in 0..2 {
        let first = run(&extract, &work, &folder_arg, "0");
        assert_eq!(first.status.code(), Some(6), "{}", stderr(&first));
        assert!(
            stderr(&first).contains("is the MESH client running?"),
            "{}",
            stderr(&first)
        );
    }
    let queued = count(&work, "queued");
    assert_eq!(queued, 3, "3000 lines in files of 1000");
    assert_eq!(
        std::fs::read_dir(root.join("OUT")).unwrap().count(),
        2 * queued
    );
    assert_eq!(count(&work, "submitted"), 0);

    // the client starts; the mailbox's root now comes from a meshclient.cfg with two mailboxes
    world.start_client(&root);
    let cfg = dir.path().join("meshclient.cfg");
    std::fs::write(
        &cfg,
        format!(
            "<MESHConfig><PollPeriod>1</PollPeriod>\
             <Client><ClientIdentity>X26ZZZ1</ClientIdentity><InterfaceRoot>/nowhere</InterfaceRoot></Client>\
             <Client><ClientIdentity>X26ABC1</ClientIdentity><InterfaceRoot>{}</InterfaceRoot></Client>\
             </MESHConfig>",
            root.display()
        ),
    )
    .unwrap();
    let resumed = run(
        &extract,
        &work,
        &["--meshclient-cfg", cfg.to_str().unwrap()],
        "30",
    );
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(count(&work, "queued"), queued, "nothing handed over twice");
    assert_eq!(count(&work, "submitted"), queued);
    for file in ["cleared.csv", "reconciled/opted-out.txt"] {
        assert!(
            std::fs::read(api_work.join(file)).unwrap() == std::fs::read(work.join(file)).unwrap(),
            "{file} differs from the API path's"
        );
    }
    // the stranger's files are still there, and nothing else
    let mut left: Vec<String> = std::fs::read_dir(root.join("IN"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["20201025030139_abc.ctl", "20201025030139_abc.dat"]);
    // done: a third run hands over nothing
    let again = run(&extract, &work, &folder_arg, "30");
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(count(&work, "queued"), queued);
    world.stop();
}

#[test]
fn a_file_the_client_moves_to_failed_is_exit_5_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::start();
    let root = mailbox_root(dir.path());
    world.start_client(&root);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("x.dat"), "9694116538,\r\n").unwrap();
    std::fs::write(
        out.join("x.ctl"),
        processor::ctl::render("X26ABC1", "X99ZZZ9", "x-1", "x-1_l"),
    )
    .unwrap();
    let work = dir.path().join("work");
    let (w, r) = (work.to_str().unwrap(), root.to_str().unwrap());
    let sent = ndop(&[
        "send",
        out.to_str().unwrap(),
        "--work",
        w,
        "--mesh-folder",
        r,
        "--mailbox",
        "X26ABC1",
    ]);
    assert!(sent.status.success(), "{}", stderr(&sent));
    let collect = ndop(&[
        "collect",
        "--work",
        w,
        "--mesh-folder",
        r,
        "--mailbox",
        "X26ABC1",
        "--interval",
        "0.1",
        "--timeout",
        "20",
    ]);
    let e = stderr(&collect);
    assert_eq!(collect.status.code(), Some(5), "{e}");
    assert!(
        e.contains("FAILED") && e.contains("SEND ERROR 12") && e.contains("unregistered"),
        "{e}"
    );
    assert!(root.join("FAILED/x-1_l.dat").exists());
    world.stop();
}

/// The stand-in downloads a chunked reply (a 250,000-line extract's ~2.6 MB result in 512 KiB chunks)
/// into one `IN/{id}.dat`, and the run's files are exactly what the generator's numbers and the
/// mock's opt-out rule say (the API path's files are the same by the pipeline tests; running it
/// too would double this test's time).
#[test]
fn a_large_extract_with_a_chunked_reply_gives_the_expected_files() {
    const SEED: u64 = 3;
    const RATE: f64 = 0.05;
    let dir = tempfile::tempdir().unwrap();
    let extract = dir.path().join("big.dat");
    util::generate_dat(&extract, "250000", "5");
    let mut config = mock_mesh::Config::default();
    config.pos.optout_rate = RATE;
    config.pos.optout_seed = SEED;
    config.pos_chunk_bytes = 512 << 10;
    let mut world = World::start_with(config);
    let root = mailbox_root(dir.path());
    world.start_client(&root);
    let work = dir.path().join("work");
    let (e, w, r) = (
        extract.to_str().unwrap(),
        work.to_str().unwrap(),
        root.to_str().unwrap(),
    );
    let out = ndop(&[
        "run",
        e,
        "--work",
        w,
        "--mailbox",
        "X26ABC1",
        "--interval",
        "0.1",
        "--timeout",
        "120",
        "--mesh-folder",
        r,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    world.stop();

    // the truth, from the generated lines (all valid: no --invalid-frac) and the mock's rule
    let text = std::fs::read_to_string(&extract).unwrap();
    let opted = |line: &str| {
        let n: u64 = line.trim_end_matches(',').parse().unwrap();
        mock_mesh::pos::opted_out_by_rate(n, SEED, RATE)
    };
    let mut expected_out: Vec<&str> = text
        .lines()
        .filter(|l| opted(l))
        .map(|l| l.trim_end_matches(','))
        .collect();
    expected_out.sort_unstable();
    expected_out.dedup();
    let expected_cleared: String = text
        .split_inclusive("\r\n")
        .filter(|l| !opted(l.trim_end()))
        .collect();
    let got = std::fs::read_to_string(work.join("reconciled/opted-out.txt")).unwrap();
    let mut got_out: Vec<&str> = got.lines().map(|l| l.trim_end_matches(',')).collect();
    got_out.sort_unstable();
    assert!(expected_out.len() > 7_000, "{}", expected_out.len());
    assert!(
        got_out == expected_out,
        "opted-out.txt is not the expected set"
    );
    assert!(
        std::fs::read_to_string(work.join("cleared.dat")).unwrap() == expected_cleared,
        "cleared.dat is not the extract less the opted-out lines"
    );
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["reconcile"]["unexpected"], 0);
    // one .dat/.ctl pair went through SENT; the reply came through IN as one message bigger
    // than two of the mock's chunks
    assert_eq!(std::fs::read_dir(root.join("SENT")).unwrap().count(), 2);
    let big: Vec<u64> = std::fs::read_dir(work.join("replies"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .filter(|&n| n > 1 << 20)
        .collect();
    assert_eq!(big.len(), 1, "one chunked reply taken from IN: {big:?}");
}
