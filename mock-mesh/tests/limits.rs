//! Bounded everything (issue 10), over loopback: clients that trickle their bodies or never
//! read their downloads hold no thread and cannot starve the others; a stalled body times
//! out; a disconnect mid-upload leaves no staging file; a declared chunk count is capped.

mod common;
use common::*;

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends a request head (and `first` body bytes of a declared `len`) on a raw socket.
async fn raw(
    m: &Mesh,
    method: &str,
    path: &str,
    extra: &str,
    len: usize,
    first: &[u8],
) -> TcpStream {
    let addr = m.server.local_addr();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: {}\r\naccept: {V2}\r\n\
         {extra}content-length: {len}\r\n\r\n",
        m.token(A, "password")
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(first).await.unwrap();
    s.flush().await.unwrap();
    s
}

fn staged_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("tmp")).unwrap().count()
}

/// Polls `f` until true or `limit` passes.
async fn eventually(limit: Duration, f: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

#[test]
fn slow_uploads_and_unread_downloads_do_not_block_others() {
    // few blocking threads, so that a design holding one per slow client starves at once
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(6)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let m = Mesh::start(Config::default().with_store_dir(dir.path())).await;
        let big: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
        let r = m.send(A, B, big.clone()).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let big_id = json(r).await["message_id"].as_str().unwrap().to_string();
        let mut hold = Vec::new();
        for _ in 0..12 {
            let s = raw(
                &m,
                "POST",
                &format!("/messageexchange/{A}/outbox"),
                &format!("mex-to: {B}\r\nmex-workflowid: TEST_WORKFLOW\r\n"),
                1 << 20,
                &[b'x'; 3000],
            )
            .await;
            hold.push(s);
        }
        for _ in 0..12 {
            let path = format!("/messageexchange/{B}/inbox/{big_id}");
            let addr = m.server.local_addr();
            let mut s = TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "GET {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: {}\r\naccept: {V2}\r\n\r\n",
                m.token(B, "password")
            );
            s.write_all(head.as_bytes()).await.unwrap();
            hold.push(s); // never read
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let start = Instant::now();
        let work = async {
            let id = m.send_ok(A, C, b"still served").await;
            let r = m.download(C, &id, None).await;
            assert_eq!(r.bytes().await.unwrap().as_ref(), b"still served");
            let r = m.download(B, &big_id, None).await;
            assert_eq!(r.bytes().await.unwrap().len(), big.len());
        };
        tokio::time::timeout(Duration::from_secs(15), work)
            .await
            .expect("other clients are served while slow ones hang");
        assert!(start.elapsed() < Duration::from_secs(15));
        drop(hold);
        m.server.stop().await;
    });
}

#[tokio::test]
async fn a_stalled_body_times_out_and_leaves_no_staging_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default().with_store_dir(dir.path());
    config.limits.body_timeout = Duration::from_millis(300);
    let m = Mesh::start(config).await;
    let mut s = raw(
        &m,
        "POST",
        &format!("/messageexchange/{A}/outbox"),
        &format!("mex-to: {B}\r\nmex-workflowid: TEST_WORKFLOW\r\n"),
        100,
        b"only part of it",
    )
    .await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server gave up on the stalled body");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert!(eventually(Duration::from_secs(2), || staged_files(dir.path()) == 0).await);
    m.server.stop().await;
}

#[tokio::test]
async fn a_disconnect_mid_upload_leaves_no_staging_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mesh::start(Config::default().with_store_dir(dir.path())).await;
    let s = raw(
        &m,
        "POST",
        &format!("/messageexchange/{A}/outbox"),
        &format!("mex-to: {B}\r\nmex-workflowid: TEST_WORKFLOW\r\n"),
        10 << 20,
        &vec![b'x'; 2 << 20],
    )
    .await;
    assert!(
        eventually(Duration::from_secs(5), || staged_files(dir.path()) == 1).await,
        "the upload is being staged"
    );
    drop(s);
    assert!(
        eventually(Duration::from_secs(5), || staged_files(dir.path()) == 0).await,
        "the staging file is removed when the client goes away"
    );
    assert!(m.inbox(B).await.is_empty());
    m.server.stop().await;
}

#[tokio::test]
async fn the_declared_chunk_count_is_capped() {
    let m = Mesh::default().await;
    // one past 20 GiB in 5 MiB chunks
    let r = m
        .send(A, B, "x")
        .header(
            "mex-chunk-range",
            format!("1:{}", mock_mesh::MAX_CHUNKS + 1),
        )
        .send()
        .await
        .unwrap();
    assert_v2_error(
        r,
        417,
        "SEND",
        "InvalidHeaderChunks",
        "Invalid chunk values sent in mex-Chunk-Range header",
    )
    .await;
    let r = m
        .send(A, B, "x")
        .header("mex-chunk-range", "1:100000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 417);
    // what NHS England's mesh-client declares for 20 GiB in its default 75 MiB chunks, and
    // the cap itself
    for n in [274, mock_mesh::MAX_CHUNKS] {
        let r = m
            .send(A, B, "x")
            .header("mex-chunk-range", format!("1:{n}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "1:{n}");
    }
    m.server.stop().await;
}

#[tokio::test]
async fn unfinished_uploads_per_mailbox_are_capped() {
    let mut config = Config::default();
    config.limits.max_uploads_per_mailbox = 2;
    let m = Mesh::start(config).await;
    let first = |from: &str, to: &str| {
        m.send(from, to, "part")
            .header("mex-chunk-range", "1:2")
            .send()
    };
    let a = json(first(A, B).await.unwrap()).await["message_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(first(A, B).await.unwrap().status(), StatusCode::ACCEPTED);
    let r = first(A, B).await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("unfinished chunked uploads"));
    // single-chunk messages and other senders are not held back
    assert_eq!(
        m.send(A, B, "whole").send().await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(first(B, A).await.unwrap().status(), StatusCode::ACCEPTED);
    // finishing one frees a place
    let r = m
        .req(
            Method::POST,
            &format!("/messageexchange/{A}/outbox/{a}/2"),
            A,
        )
        .header("mex-chunk-range", "2:2")
        .body("two")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(first(A, B).await.unwrap().status(), StatusCode::ACCEPTED);
    m.server.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let mut config = Config::default();
    config.limits.max_connections = 2;
    let m = Mesh::start(config).await;
    let addr = m.server.local_addr();
    let first = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let health = || {
        reqwest::Client::new()
            .get(m.url("/health"))
            .timeout(Duration::from_millis(500))
            .send()
    };
    assert!(health().await.is_err(), "a third connection waits");
    drop(first);
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(r) = health().await {
                return r;
            }
        }
    })
    .await
    .expect("served once a slot is free");
    assert_eq!(r.status(), StatusCode::OK);
    m.server.stop().await;
}

#[tokio::test]
async fn an_unread_download_is_cut_off_after_the_response_timeout_and_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default().with_store_dir(dir.path());
    config.limits.response_timeout = Duration::from_millis(300);
    config.limits.max_connections = 1;
    let mut m = Mesh::start(config).await;
    // no idle keep-alive connection may hold the only slot
    m.http = reqwest::Client::builder()
        .no_gzip()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let size = 16usize << 20; // far more than the socket buffers hold
    let r = m.send(A, B, vec![7u8; size]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = json(r).await["message_id"].as_str().unwrap().to_string();

    let addr = m.server.local_addr();
    let mut unread = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET /messageexchange/{B}/inbox/{id} HTTP/1.1\r\nhost: {addr}\r\nauthorization: {}\r\n\
         accept: {V2}\r\n\r\n",
        m.token(B, "password")
    );
    unread.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // the stalled download gave its (only) connection slot back
    let r = m
        .http
        .get(m.url("/health"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .expect("served while the unread download's client still holds its socket");
    assert_eq!(r.status(), StatusCode::OK);

    // and what the late reader finds is a cut-off response, then the end of the connection
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), unread.read_to_end(&mut got)).await;
    let read = read.expect("the server closed the connection");
    assert!(
        read.is_err() || got.len() < size,
        "cut off: {} bytes of a {size}-byte body",
        got.len()
    );
    m.server.stop().await;
}
