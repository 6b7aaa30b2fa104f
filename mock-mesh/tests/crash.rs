//! `kill -9` the real `mock-mesh` binary at random points while clients send single and
//! chunked messages, download and acknowledge; restart it on the same store and check that
//! every message answered 202 is there exactly once with the same SHA-256, and every
//! acknowledged one stays acknowledged (issue 10). Bounded: a few short cycles, loopback only.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mock_mesh::auth::make_header;
use rand::Rng;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

const A: &str = "X26ABC1";
const B: &str = "X26ABC2";
const V2: &str = "application/vnd.mesh.v2+json";

/// The binary serving `dir`, and its base URL once it says it is listening.
fn start(dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-mesh"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log",
            "info",
            "--store",
        ])
        .arg(dir)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("a listening line").unwrap();
        if let Some(i) = line.find("listening on http://127.0.0.1:") {
            let rest = &line[i + "listening on ".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || ":/.".contains(c)))
                .unwrap_or(rest.len());
            break rest[..end].to_string();
        }
    };
    // keep draining the logs so the server never blocks on a full pipe
    std::thread::spawn(move || for _ in lines.by_ref() {});
    (child, url)
}

struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    fn req(&self, method: reqwest::Method, path: &str, mailbox: &str) -> reqwest::RequestBuilder {
        let ts = chrono::Utc::now().format("%Y%m%d%H%M").to_string();
        let nonce = uuid::Uuid::new_v4().to_string();
        self.http
            .request(method, format!("{}{path}", self.url))
            .header(
                "authorization",
                make_header("TestKey", mailbox, "password", &nonce, 0, &ts),
            )
            .header("accept", V2)
            .timeout(Duration::from_secs(10))
    }

    async fn inbox(&self, mailbox: &str) -> Vec<String> {
        let r = self
            .req(
                reqwest::Method::GET,
                &format!("/messageexchange/{mailbox}/inbox?max_results=5000"),
                mailbox,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let v: serde_json::Value = r.json().await.unwrap();
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    }

    /// The whole body of an accepted message (all chunks).
    async fn download(&self, mailbox: &str, id: &str) -> Option<Vec<u8>> {
        let path = format!("/messageexchange/{mailbox}/inbox/{id}");
        let r = self
            .req(reqwest::Method::GET, &path, mailbox)
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        let total: u32 = r
            .headers()
            .get("mex-chunk-range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(':').nth(1)?.parse().ok())
            .unwrap_or(1);
        let mut body = r.bytes().await.ok()?.to_vec();
        for n in 2..=total {
            let r = self
                .req(reqwest::Method::GET, &format!("{path}/{n}"), mailbox)
                .send()
                .await
                .ok()?;
            if !r.status().is_success() {
                return None;
            }
            body.extend_from_slice(&r.bytes().await.ok()?);
        }
        Some(body)
    }

    /// Sends `body` in `chunks` pieces; the id once every request was answered 202.
    async fn send(&self, body: &[u8], chunks: usize) -> Option<String> {
        let size = body.len().div_ceil(chunks);
        let pieces: Vec<&[u8]> = body.chunks(size).collect();
        let n = pieces.len();
        let r = self
            .req(
                reqwest::Method::POST,
                &format!("/messageexchange/{A}/outbox"),
                A,
            )
            .header("mex-to", B)
            .header("mex-workflowid", "TEST_WORKFLOW")
            .header("mex-chunk-range", format!("1:{n}"))
            .body(pieces[0].to_vec())
            .send()
            .await
            .ok()?;
        if r.status() != StatusCode::ACCEPTED {
            return None;
        }
        let v: serde_json::Value = r.json().await.ok()?;
        let id = v["message_id"].as_str()?.to_string();
        for (i, p) in pieces.iter().enumerate().skip(1) {
            let r = self
                .req(
                    reqwest::Method::POST,
                    &format!("/messageexchange/{A}/outbox/{id}/{}", i + 1),
                    A,
                )
                .header("mex-chunk-range", format!("{}:{n}", i + 1))
                .body(p.to_vec())
                .send()
                .await
                .ok()?;
            if r.status() != StatusCode::ACCEPTED {
                return None;
            }
        }
        Some(id)
    }

    async fn ack(&self, id: &str) -> bool {
        let path = format!("/messageexchange/{B}/inbox/{id}/status/acknowledged");
        match self.req(reqwest::Method::PUT, &path, B).send().await {
            Ok(r) => r.status() == StatusCode::OK,
            Err(_) => false,
        }
    }
}

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Kills the server when the test ends, passing or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Default)]
struct Ledger {
    /// accepted (every request answered 202): id → SHA-256 of the body
    accepted: HashMap<String, [u8; 32]>,
    /// acknowledged (answered 200)
    acked: HashSet<String>,
    /// an acknowledgement was sent but not answered (the server died): either state is right
    ack_unknown: HashSet<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_message_survives_kill_9_exactly_once_and_intact() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let started = Instant::now();
    let mut rng = rand::thread_rng();
    for cycle in 0..6u32 {
        let (mut child, url) = start(dir.path());
        let client = Arc::new(Client {
            http: reqwest::Client::builder().no_gzip().build().unwrap(),
            url,
        });
        let mut tasks = Vec::new();
        for worker in 0..4u32 {
            let client = client.clone();
            let ledger = ledger.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0u32.. {
                    let seed = cycle * 1_000_000 + worker * 10_000 + i;
                    let len = 1_000 + (seed as usize * 7919) % 150_000;
                    let body: Vec<u8> = (0..len)
                        .map(|k| (k as u32).wrapping_mul(seed | 1).to_le_bytes()[1])
                        .collect();
                    let chunks = 1 + (seed % 3) as usize;
                    let Some(id) = client.send(&body, chunks).await else {
                        return; // the server is gone
                    };
                    ledger
                        .lock()
                        .unwrap()
                        .accepted
                        .insert(id.clone(), sha(&body));
                    if i % 3 == 2 {
                        if client.download(B, &id).await.is_none() {
                            return;
                        }
                        ledger.lock().unwrap().ack_unknown.insert(id.clone());
                        if client.ack(&id).await {
                            let mut l = ledger.lock().unwrap();
                            l.ack_unknown.remove(&id);
                            l.acked.insert(id);
                        } else {
                            return;
                        }
                    }
                }
            }));
        }
        let at = rng.gen_range(150..900);
        tokio::time::sleep(Duration::from_millis(at)).await;
        child.kill().unwrap(); // SIGKILL
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        for t in tasks {
            let _ = t.await;
        }
    }

    let (child, url) = start(dir.path());
    let child = KillOnDrop(child);
    let client = Client {
        http: reqwest::Client::builder().no_gzip().build().unwrap(),
        url,
    };
    let inbox = client.inbox(B).await;
    let listed: HashSet<&String> = inbox.iter().collect();
    assert_eq!(listed.len(), inbox.len(), "a message listed twice");
    let (accepted, acked, ack_unknown) = {
        let l = ledger.lock().unwrap();
        (l.accepted.clone(), l.acked.clone(), l.ack_unknown.clone())
    };
    assert!(
        accepted.len() >= 10,
        "the test sent too little: {}",
        accepted.len()
    );
    for (id, digest) in &accepted {
        if acked.contains(id) {
            assert!(!listed.contains(id), "{id} was acknowledged but is back");
            continue;
        }
        if ack_unknown.contains(id) && !listed.contains(id) {
            continue; // acknowledged just before the kill, unanswered
        }
        assert!(listed.contains(id), "{id} was accepted (202) but is lost");
        let body = client.download(B, id).await.expect("downloadable");
        assert_eq!(&sha(&body), digest, "{id} changed");
    }
    // nothing left behind in the staging area
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    drop(child);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}
