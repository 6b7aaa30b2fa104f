//! What a real MESH survives, over loopback HTTP (issue 10): a torn journal write on a full
//! disk (507, nothing visible, nothing lost after it), and a late chunk that loses the race
//! with its retry (refused, never written over the accepted data).

mod common;
use common::*;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Starts a disk-store server in `dir`.
async fn on_disk(dir: &std::path::Path) -> Mesh {
    Mesh::start(Config::default().with_store_dir(dir)).await
}

async fn body_of(m: &Mesh, mailbox: &str, id: &str, n: Option<u32>) -> Vec<u8> {
    let r = m.download(mailbox, id, n).await;
    assert!(r.status().is_success(), "{}", r.status());
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn a_torn_journal_write_is_507_invisible_and_loses_nothing_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let m = on_disk(dir.path()).await;
    let kept = m.send_ok(A, B, b"before the full disk").await;
    let before = m.server.app().journal_len();

    // the disk fills mid-append: 40 bytes of the record land, then ENOSPC
    m.server.app().inject_journal_fault(40, 1);
    let r = m.send(A, B, "refused on a full disk").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 507);
    assert_eq!(m.server.app().journal_len(), before, "journal cut back");
    assert_eq!(
        m.inbox(B).await,
        vec![kept.clone()],
        "a refused message is never visible"
    );

    // space is freed: the next send is accepted and durable
    let after = m.send_ok(A, B, b"after space was freed").await;
    assert_eq!(m.inbox(B).await, vec![kept.clone(), after.clone()]);
    m.server.stop().await;

    let m = on_disk(dir.path()).await;
    assert_eq!(
        m.inbox(B).await,
        vec![kept.clone(), after.clone()],
        "nothing lost"
    );
    assert_eq!(body_of(&m, B, &after, None).await, b"after space was freed");
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    m.server.stop().await;
}

#[tokio::test]
async fn a_failed_chunk_record_leaves_the_message_uploading_and_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let m = on_disk(dir.path()).await;
    let r = m
        .send(A, B, "chunk one,")
        .header("mex-chunk-range", "1:2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = json(r).await["message_id"].as_str().unwrap().to_string();
    let chunk2 = |body: &'static str| {
        m.req(
            Method::POST,
            &format!("/messageexchange/{A}/outbox/{id}/2"),
            A,
        )
        .header("mex-chunk-range", "2:2")
        .body(body)
    };
    m.server.app().inject_journal_fault(7, 1);
    let r = chunk2("chunk two").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 507);
    assert!(
        m.inbox(B).await.is_empty(),
        "not accepted without its record"
    );
    assert_eq!(json(m.track(A, &id).await).await["status"], "uploading");
    let r = chunk2("chunk two").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(m.inbox(B).await, vec![id.clone()]);
    m.server.stop().await;
    let m = on_disk(dir.path()).await;
    assert_eq!(body_of(&m, B, &id, Some(2)).await, b"chunk two");
    m.server.stop().await;
}

/// A chunk upload over a raw socket whose body arrives in two parts, under the test's control.
struct SlowUpload {
    stream: tokio::net::TcpStream,
}

impl SlowUpload {
    /// Sends the request head and the first `first` bytes of `body`'s declared length `len`.
    async fn start(m: &Mesh, path: &str, range: &str, len: usize, first: &[u8]) -> SlowUpload {
        let addr = m.server.local_addr();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: {}\r\naccept: {V2}\r\n\
             mex-chunk-range: {range}\r\ncontent-length: {len}\r\n\r\n",
            m.token(A, "password")
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(first).await.unwrap();
        stream.flush().await.unwrap();
        SlowUpload { stream }
    }

    /// Sends the rest and returns the response's status code.
    async fn finish(mut self, rest: &[u8]) -> u16 {
        self.stream.write_all(rest).await.unwrap();
        let mut buf = Vec::new();
        let mut piece = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut piece))
                .await
                .expect("a response in time")
                .unwrap();
            assert!(n > 0, "connection closed without a response");
            buf.extend_from_slice(&piece[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

async fn late_chunk_loses_the_race(dir: Option<&std::path::Path>) {
    let config = match dir {
        Some(d) => Config::default().with_store_dir(d),
        None => Config::default(),
    };
    let m = Mesh::start(config).await;
    let r = m
        .send(A, B, "chunk one,")
        .header("mex-chunk-range", "1:2")
        .send()
        .await
        .unwrap();
    let id = json(r).await["message_id"].as_str().unwrap().to_string();
    let path = format!("/messageexchange/{A}/outbox/{id}/2");
    // a slow upload of chunk 2 is under way...
    let slow = SlowUpload::start(&m, &path, "2:2", 4, b"LA").await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    // ...while its retry completes the message
    let r = m
        .req(Method::POST, &path, A)
        .header("mex-chunk-range", "2:2")
        .body("the accepted chunk two")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(m.inbox(B).await, vec![id.clone()]);
    // the slow one finishes late: refused, and the accepted bytes stay
    assert_eq!(slow.finish(b"TE").await, 423);
    assert_eq!(
        body_of(&m, B, &id, Some(2)).await,
        b"the accepted chunk two"
    );
    m.server.stop().await;
    if let Some(d) = dir {
        let m = on_disk(d).await;
        assert_eq!(
            body_of(&m, B, &id, Some(2)).await,
            b"the accepted chunk two"
        );
        assert_eq!(std::fs::read_dir(d.join("tmp")).unwrap().count(), 0);
        m.server.stop().await;
    }
}

#[tokio::test]
async fn a_late_chunk_never_overwrites_an_accepted_message_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    late_chunk_loses_the_race(Some(dir.path())).await;
}

#[tokio::test]
async fn a_late_chunk_never_overwrites_an_accepted_message_in_memory() {
    late_chunk_loses_the_race(None).await;
}

#[tokio::test]
async fn completing_a_chunked_message_leaves_the_inbox_alone() {
    let m = Mesh::default().await;
    let first = m.send_ok(A, B, b"first").await;
    let r = m
        .send(A, B, "one,")
        .header("mex-chunk-range", "1:2")
        .send()
        .await
        .unwrap();
    let id = json(r).await["message_id"].as_str().unwrap().to_string();
    let r = m
        .req(
            Method::POST,
            &format!("/messageexchange/{A}/outbox/{id}/2"),
            A,
        )
        .header("mex-chunk-range", "2:2")
        .body("two")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(m.inbox(B).await, vec![first, id]);
    m.server.stop().await;
}

#[tokio::test]
async fn a_failed_acknowledgement_record_leaves_the_message_downloadable() {
    let dir = tempfile::tempdir().unwrap();
    let m = on_disk(dir.path()).await;
    let id = m.send_ok(A, B, b"collect me").await;
    m.server.app().inject_journal_fault(12, 1);
    assert_eq!(m.ack(B, &id).await.status().as_u16(), 507);
    assert_eq!(m.inbox(B).await, vec![id.clone()]);
    assert_eq!(body_of(&m, B, &id, None).await, b"collect me");
    assert_eq!(m.ack(B, &id).await.status(), StatusCode::OK);
    assert!(m.inbox(B).await.is_empty());
    m.server.stop().await;
    let m = on_disk(dir.path()).await;
    assert!(
        m.inbox(B).await.is_empty(),
        "the acknowledgement is durable"
    );
    m.server.stop().await;
}

/// Tracking by local id (§5.11), which `ndop send` relies on to adopt a message it lost track
/// of: an unfinished chunked upload is found as `Uploading` with its declared chunk count and
/// checksum; only the sender finds it; it is the same one message after a restart, and its
/// completion (not a second message) is what a retry must produce; a second message with the
/// same local id makes the answer 300.
#[tokio::test]
async fn tracking_by_local_id_finds_unfinished_uploads_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let by_local = |m: &Mesh, mb: &str, l: &str| {
        m.req(
            Method::GET,
            &format!("/messageexchange/{mb}/outbox/tracking/{l}"),
            mb,
        )
        .send()
    };
    let m = on_disk(dir.path()).await;
    let r = m
        .send(A, B, &b"part one, "[..])
        .header("mex-chunk-range", "1:2")
        .header("mex-localid", "lost-1")
        .header("mex-content-checksum", "sha256:abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = json(r).await["message_id"].as_str().unwrap().to_string();
    let v = json(by_local(&m, A, "lost-1").await.unwrap()).await;
    assert_eq!(
        (v["messageId"].as_str(), v["status"].as_str()),
        (Some(id.as_str()), Some("Uploading"))
    );
    assert_eq!(
        (v["chunkCount"].as_u64(), v["checksum"].as_str()),
        (Some(2), Some("sha256:abc"))
    );
    // the recipient (or anyone else) does not find it
    assert_eq!(
        by_local(&m, B, "lost-1").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    m.server.stop().await;

    // after a restart: still one message, still uploading; finishing it accepts that one
    let m = on_disk(dir.path()).await;
    let v = json(by_local(&m, A, "lost-1").await.unwrap()).await;
    assert_eq!(
        (v["messageId"].as_str(), v["status"].as_str()),
        (Some(id.as_str()), Some("Uploading"))
    );
    let r = m
        .req(
            Method::POST,
            &format!("/messageexchange/{A}/outbox/{id}/2"),
            A,
        )
        .header("mex-chunk-range", "2:2")
        .body("part two")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let v = json(by_local(&m, A, "lost-1").await.unwrap()).await;
    assert_eq!(
        (v["messageId"].as_str(), v["status"].as_str()),
        (Some(id.as_str()), Some("Accepted"))
    );
    assert_eq!(m.inbox(B).await, vec![id.clone()]);
    // a second message under the same local id: MESH cannot say which
    m.send(A, B, &b"again"[..])
        .header("mex-localid", "lost-1")
        .send()
        .await
        .unwrap();
    let r = by_local(&m, A, "lost-1").await.unwrap();
    assert_eq!(r.status(), StatusCode::MULTIPLE_CHOICES);
    assert!(r.text().await.unwrap().contains("Multiple Choices"));
    m.server.stop().await;
}

/// `n` bytes whose every window of the server's 16 MiB maps would differ if misplaced.
fn patterned(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ (i >> 20) as u8).collect()
}

#[tokio::test]
async fn stored_chunks_are_served_whole_across_map_windows() {
    let dir = tempfile::tempdir().unwrap();
    let m = on_disk(dir.path()).await;
    const W: usize = 16 << 20; // the server's map window
    for n in [5, W, W + 12_345] {
        let data = patterned(n);
        let r = m.send(A, B, data.clone()).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let id = json(r).await["message_id"].as_str().unwrap().to_string();
        let r = m.download(B, &id, None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.content_length(), Some(n as u64), "exact Content-Length");
        let got = r.bytes().await.unwrap();
        assert!(got.as_ref() == data.as_slice(), "{n} bytes served intact");
    }
    m.server.stop().await;
}

#[tokio::test]
async fn a_download_under_way_survives_the_acknowledgement_that_frees_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let m = on_disk(dir.path()).await;
    // three 16 MiB windows: the third is mapped only after the acknowledgement
    let data = patterned((16 << 20) * 2 + 777);
    let r = m.send(A, B, data.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = json(r).await["message_id"].as_str().unwrap().to_string();
    let mut r = m.download(B, &id, None).await;
    let mut got = Vec::new();
    while got.len() < 1 << 20 {
        got.extend_from_slice(&r.chunk().await.unwrap().expect("more body"));
    }
    // the chunk files are unlinked while the download still reads (and maps) them
    assert!(m.ack(B, &id).await.status().is_success());
    assert!(!dir.path().join("chunks").join(&id).exists(), "data freed");
    while let Some(b) = r.chunk().await.unwrap() {
        got.extend_from_slice(&b);
    }
    assert!(got == data, "the download finishes intact");
    m.server.stop().await;
}
