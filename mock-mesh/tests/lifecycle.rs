//! The real-MESH lifecycle over loopback HTTP: expiry with a non-delivery report, restart
//! recovery of the disk store, and concurrent senders losing nothing.

mod common;
use common::*;

#[tokio::test]
async fn uncollected_message_expires_with_a_non_delivery_report() {
    let m = Mesh::default().await;
    let id = m
        .send(A, B, "late")
        .header("mex-subject", "s")
        .header("mex-localid", "l-exp")
        .send()
        .await
        .unwrap();
    let id = json(id).await["message_id"].as_str().unwrap().to_string();
    m.clock.advance(chrono::Duration::days(4));
    assert_eq!(
        m.inbox(B).await,
        vec![id.clone()],
        "still there after 4 days"
    );
    m.clock
        .advance(chrono::Duration::days(1) + chrono::Duration::minutes(1));
    assert!(m.inbox(B).await.is_empty(), "gone after 5 days");
    assert_gone(m.download(B, &id, None).await).await;
    let v = json(m.track(A, &id).await).await;
    assert_eq!(v["status"], "undeliverable");
    // the sender's inbox holds the NDR
    let reports = m.inbox(A).await;
    assert_eq!(reports.len(), 1);
    let r = m.download(A, &reports[0], None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "mex-messagetype"), Some("REPORT"));
    assert_eq!(header(&r, "mex-statuscode"), Some("14"));
    assert_eq!(header(&r, "mex-statussuccess"), Some("ERROR"));
    assert_eq!(header(&r, "mex-linkedmsgid"), Some(id.as_str()));
    assert_eq!(header(&r, "mex-localid"), Some("l-exp"));
    assert_eq!(header(&r, "mex-subject"), Some("NDR: s"));
    assert_eq!(header(&r, "mex-chunk-range"), Some("1:0"));
    assert!(r.bytes().await.unwrap().is_empty());
    m.server.stop().await;
}

#[tokio::test]
async fn disk_store_recovers_every_message_and_state_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = || Config::default().with_store_dir(dir.path());
    let m = Mesh::start(config()).await;
    let kept = m.send_ok(A, B, b"kept").await;
    let acked = m.send_ok(A, B, b"acked").await;
    assert_eq!(m.ack(B, &acked).await.status(), StatusCode::OK);
    let big: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let r = m
        .send(A, C, big[..600_000].to_vec())
        .header("mex-chunk-range", "1:2")
        .send()
        .await
        .unwrap();
    let partial = json(r).await["message_id"].as_str().unwrap().to_string();
    m.server.stop().await;

    let m = Mesh::start(config()).await;
    assert_eq!(m.inbox(B).await, vec![kept.clone()]);
    assert_eq!(
        m.download(B, &kept, None)
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        b"kept"
    );
    assert_eq!(m.download(B, &acked, None).await.status(), StatusCode::GONE);
    assert_eq!(
        json(m.track(A, &acked).await).await["status"],
        "acknowledged"
    );
    assert!(
        m.inbox(C).await.is_empty(),
        "a partial message is never visible"
    );
    // the upload can be finished after the restart
    let r = m
        .req(
            Method::POST,
            &format!("/messageexchange/{A}/outbox/{partial}/2"),
            A,
        )
        .header("mex-chunk-range", "2:2")
        .body(big[600_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut got = m
        .download(C, &partial, Some(1))
        .await
        .bytes()
        .await
        .unwrap()
        .to_vec();
    got.extend_from_slice(
        &m.download(C, &partial, Some(2))
            .await
            .bytes()
            .await
            .unwrap(),
    );
    assert_eq!(got, big);
    // new messages after a restart still go to the end of the inbox
    let newer = m.send_ok(A, B, b"newer").await;
    assert_eq!(m.inbox(B).await, vec![kept, newer]);
    m.server.stop().await;
}

#[tokio::test]
async fn eight_concurrent_senders_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default().with_store_dir(dir.path());
    for i in 0..8 {
        config = config.with_mailbox(&format!("X26SND{i}"), "password");
    }
    let m = std::sync::Arc::new(Mesh::start(config).await);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let from = format!("X26SND{i}");
            let mut sent = Vec::new();
            for j in 0..12 {
                let body = format!("sender {i} message {j} ").repeat(100 + j);
                let r = m.send(&from, B, body.clone()).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                sent.push((
                    json(r).await["message_id"].as_str().unwrap().to_string(),
                    body,
                ));
            }
            sent
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let listed = m.inbox(B).await;
    assert_eq!(listed.len(), 96);
    for (id, body) in &all {
        assert!(listed.contains(id));
        let got = m.download(B, id, None).await.bytes().await.unwrap();
        assert_eq!(got.as_ref(), body.as_bytes());
    }
    let m = std::sync::Arc::into_inner(m).unwrap();
    m.server.stop().await;
}

#[tokio::test]
async fn an_unfinished_upload_expires_and_frees_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mesh::start(Config::default().with_store_dir(dir.path())).await;
    let r = m
        .send(A, B, "chunk one of two")
        .header("mex-chunk-range", "1:2")
        .send()
        .await
        .unwrap();
    let id = json(r).await["message_id"].as_str().unwrap().to_string();
    let data = dir.path().join("chunks").join(&id);
    assert!(data.exists());
    m.clock.advance(chrono::Duration::hours(23));
    assert_eq!(json(m.track(A, &id).await).await["status"], "uploading");
    m.clock
        .advance(chrono::Duration::hours(1) + chrono::Duration::minutes(1));
    assert_eq!(json(m.track(A, &id).await).await["status"], "error");
    assert!(!data.exists(), "its chunk data is freed");
    let r = m
        .req(
            Method::POST,
            &format!("/messageexchange/{A}/outbox/{id}/2"),
            A,
        )
        .header("mex-chunk-range", "2:2")
        .body("too late")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 423);
    assert!(m.inbox(B).await.is_empty());
    m.server.stop().await;
}
