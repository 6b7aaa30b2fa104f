//! Over loopback HTTP with a real client (reqwest): send, download, acknowledge and tracking of
//! single and chunked messages, their error paths (`mesh-protocol.md` §5.2–5.11, §10.2), gzip
//! pass-through and decoding, and inbox paging.

mod common;
use common::*;

#[tokio::test]
async fn single_message_round_trip_with_every_mex_header() {
    let m = Mesh::default().await;
    let r = m
        .send(A, "x26abc2", &b"Hello Bob"[..])
        .header("mex-subject", "greeting")
        .header("mex-localid", "local-1")
        .header("mex-partnerid", "partner")
        .header("mex-filename", "hello.txt")
        .header("mex-content-checksum", "md5:deadbeef")
        .header("mex-content-compressed", "N")
        .header("mex-content-encrypted", "Y")
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "content-type"), Some(V1));
    let id = json(r).await["message_id"].as_str().unwrap().to_string();
    // real MESH id format yyyyMMddHHmmssffffff_XXXXXX
    assert_eq!(id.len(), 27, "{id}");
    assert_eq!(&id[20..21], "_");
    assert_eq!(m.inbox(B).await, vec![id.clone()]);
    assert!(m.inbox(A).await.is_empty());

    let r = m
        .req(Method::HEAD, &format!("/messageexchange/{B}/inbox/{id}"), B)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "mex-messageid"), Some(id.as_str()));

    let r = m.download(B, &id, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    for (k, v) in [
        ("mex-from", A),
        ("mex-to", B),
        ("mex-workflowid", "TEST_WORKFLOW"),
        ("mex-chunk-range", "1:1"),
        ("mex-total-chunks", "1"),
        ("mex-localid", "local-1"),
        ("mex-partnerid", "partner"),
        ("mex-filename", "hello.txt"),
        ("mex-subject", "greeting"),
        ("mex-messagetype", "DATA"),
        ("mex-messageid", &id),
        ("mex-content-checksum", "md5:deadbeef"),
        ("mex-content-encrypted", "Y"),
        ("mex-content-type", "text/plain"),
        ("mex-statuscode", "00"),
        ("mex-statussuccess", "SUCCESS"),
        ("mex-version", "1.0"),
        ("content-type", "text/plain"),
    ] {
        assert_eq!(header(&r, k), Some(v), "{k}");
    }
    assert_eq!(header(&r, "mex-content-compressed"), None);
    assert!(header(&r, "last-modified").unwrap().ends_with(" UTC"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"Hello Bob");

    // tracking: only the sender; v2 and v1 shapes
    let v = json(m.track(A, &id).await).await;
    assert_eq!(v["status"], "accepted");
    assert_eq!(v["local_id"], "local-1");
    assert_eq!(v["recipient_name"], "TESTMB2");
    assert_eq!(v["status_success"], true);
    let r = m.track(B, &id).await;
    assert_v2_error(r, 404, "", "", "Not Found").await;
    let r = m
        .req1(
            Method::GET,
            &format!("/messageexchange/{A}/outbox/tracking?messageID={id}"),
            A,
        )
        .send()
        .await
        .unwrap();
    let v = json(r).await;
    assert_eq!(
        (v["status"].as_str(), v["messageType"].as_str()),
        (Some("Accepted"), Some("Data"))
    );
    assert_eq!(v["fileSize"], 9);
    assert_eq!(v["senderName"], "TESTMB1");

    // acknowledge: only the recipient, idempotent, then gone for good
    let r = m.ack(A, &id).await;
    assert_v2_error(r, 403, "", "", "Forbidden").await;
    let r = m.ack(B, &id).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = m
        .req1(
            Method::PUT,
            &format!("/messageexchange/{B}/inbox/{id}/status/acknowledged"),
            B,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await, serde_json::json!({"messageId": id}));
    assert!(m.inbox(B).await.is_empty());
    assert_gone(m.download(B, &id, None).await).await;
    let v = json(m.track(A, &id).await).await;
    assert_eq!(v["status"], "acknowledged");
    m.server.stop().await;
}

#[tokio::test]
async fn send_error_paths() {
    let c = Config {
        max_request_bytes: 1000,
        ..Config::default()
    };
    let m = Mesh::start(c).await;
    let outbox = format!("/messageexchange/{A}/outbox");
    let post = || m.req(Method::POST, &outbox, A).body("x");
    // missing required headers → validation
    let r = post().send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json(r).await["detail"][0]["loc"],
        serde_json::json!(["header", "mex-to"])
    );
    // a value longer than the sandbox allows → validation
    let r = post()
        .header("mex-to", B)
        .header("mex-workflowid", "TEST_WORKFLOW")
        .header("mex-subject", "s".repeat(501))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json(r).await["detail"][0]["type"],
        "string_too_long",
        "Mex-Subject at most 500"
    );
    // tracking without messageID → validation
    let r = m
        .req(
            Method::GET,
            &format!("/messageexchange/{A}/outbox/tracking"),
            A,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json(r).await["detail"][0]["loc"],
        serde_json::json!(["query", "messageID"])
    );
    let with = |to: &str| {
        post()
            .header("mex-to", to)
            .header("mex-workflowid", "TEST_WORKFLOW")
    };
    assert_v2_error(
        with("").send().await.unwrap(),
        400,
        "SEND",
        "08",
        "TO_DTS missing",
    )
    .await;
    let r = with(B).header("mex-subject", "a\tb").send().await.unwrap();
    assert_v2_error(r, 400, "TRANSFER", "06", "MalformedControlFile").await;
    let r = post()
        .header("mex-to", B)
        .header("mex-workflowid", "https://x")
        .send()
        .await
        .unwrap();
    assert_v2_error(r, 400, "TRANSFER", "06", "MalformedControlFile").await;
    let r = with(B)
        .header("mex-content-checksum", "a;b")
        .send()
        .await
        .unwrap();
    assert_v2_error(r, 400, "SEND", "Invalid checksum", "Invalid checksum").await;
    let r = with(B)
        .header("content-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_v2_error(
        r,
        422,
        "SEND",
        "UnsupportedContentEncoding",
        "Unsupported content encoding",
    )
    .await;
    let chunks_msg = "Invalid chunk values sent in mex-Chunk-Range header";
    for bad in ["2:3", "0:3", "4:3", "x", "1:100001", "1:4294967295"] {
        let r = with(B).header("mex-chunk-range", bad).send().await.unwrap();
        assert_v2_error(r, 417, "SEND", "InvalidHeaderChunks", chunks_msg).await;
    }
    let r = with("NOSUCH1").send().await.unwrap();
    assert_v2_error(r, 417, "SEND", "12", "Unregistered to address").await;
    let r = m
        .req1(Method::POST, &outbox, A)
        .header("mex-to", "NOSUCH1")
        .header("mex-workflowid", "TEST_WORKFLOW")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_v1_error(r, 417, "SEND", "12", "Unregistered to address").await;
    let r = m.send(A, B, "").send().await.unwrap();
    assert_v2_error(
        r,
        417,
        "COLLECT",
        "02",
        "Data file is missing or inaccessible.",
    )
    .await;
    // a workflow the POS mailbox is not registered for (real MESH code 17)
    let r = m.send(A, POS_INT, "x").send().await.unwrap();
    assert_v2_error(
        r,
        417,
        "SEND",
        "17",
        "Workflow ID not registered for mailbox",
    )
    .await;
    // per-request limit, with and without Content-Length
    let r = m.send(A, B, vec![b'x'; 1001]).send().await.unwrap();
    assert_v2_error(r, 413, "SEND", "", "Request entity too large").await;
    let r = m
        .send(A, B, streamed(vec![b'x'; 5000]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(m.inbox(B).await.is_empty(), "nothing was stored");
    m.server.stop().await;
}

#[tokio::test]
async fn per_message_limit_applies_across_chunks() {
    let m = Mesh::start(Config {
        max_message_bytes: 10,
        ..Config::default()
    })
    .await;
    let first = m
        .send(A, B, vec![b'x'; 6])
        .header("mex-chunk-range", "1:2")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let id = json(first).await["message_id"]
        .as_str()
        .unwrap()
        .to_string();
    let chunk2 = |len: usize| {
        m.req(
            Method::POST,
            &format!("/messageexchange/{A}/outbox/{id}/2"),
            A,
        )
        .header("mex-chunk-range", "2:2")
        .body(vec![b'x'; len])
        .send()
    };
    let r = chunk2(6).await.unwrap();
    assert_v2_error(r, 413, "SEND", "", "Request entity too large").await;
    assert!(m.inbox(B).await.is_empty());
    assert_eq!(chunk2(4).await.unwrap().status(), StatusCode::ACCEPTED);
    assert_eq!(m.inbox(B).await, vec![id]);
    m.server.stop().await;
}

#[tokio::test]
async fn chunked_message_upload_download_and_chunk_errors() {
    let m = Mesh::default().await;
    let parts: [&[u8]; 3] = [b"first-", b"second-", b"third"];
    // chunk 1 with Transfer-Encoding: chunked, as mesh-client sends it
    let r = m
        .send(A, B, streamed(parts[0].to_vec()))
        .header("mex-chunk-range", "1:3")
        .header("mex-localid", "chunky")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = json(r).await["message_id"].as_str().unwrap().to_string();
    let chunk = |n: u32, range: &str, mailbox: &str| {
        m.req(
            Method::POST,
            &format!("/messageexchange/{mailbox}/outbox/{id}/{n}"),
            mailbox,
        )
        .header("mex-chunk-range", range.to_string())
        .header("content-type", "application/octet-stream")
    };
    // not yet complete: not listed, not downloadable, tracked as uploading
    assert!(m.inbox(B).await.is_empty());
    assert_gone(m.download(B, &id, None).await).await;
    assert_eq!(json(m.track(A, &id).await).await["status"], "uploading");
    // chunk errors
    let chunks_msg = "Invalid chunk values sent in mex-Chunk-Range header";
    let r = chunk(2, "3:3", A).body("x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::EXPECTATION_FAILED);
    let v = json(r).await;
    assert_eq!(v["message_id"], id.as_str());
    assert_eq!(v["detail"][0]["msg"], chunks_msg);
    let r = m
        .req(
            Method::POST,
            &format!("/messageexchange/{A}/outbox/{id}/2"),
            A,
        )
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::EXPECTATION_FAILED,
        "range header required"
    );
    let r = m
        .req(
            Method::POST,
            &format!("/messageexchange/{A}/outbox/NOSUCHID/2"),
            A,
        )
        .header("mex-chunk-range", "2:3")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_v2_error(r, 404, "", "", "Not Found").await;
    assert_v2_error(
        chunk(2, "2:3", C).body("x").send().await.unwrap(),
        403,
        "",
        "",
        "Forbidden",
    )
    .await;
    let r = chunk(4, "4:4", A).body("x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);
    assert!(json(r).await["message"]
        .as_str()
        .unwrap()
        .contains("contact support"));
    let r = chunk(2, "2:3", A)
        .header("content-encoding", "gzip")
        .body(gzip(b"x"))
        .send()
        .await
        .unwrap();
    assert_v2_error(r, 417, "", "", "cannot change content encoding").await;
    // the rest, with v1 and v2 bodies
    let r = m
        .req1(
            Method::POST,
            &format!("/messageexchange/{A}/outbox/{id}/2"),
            A,
        )
        .header("mex-chunk-range", "2:3")
        .body(parts[1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        json(r).await,
        serde_json::json!({"messageID": id, "blockID": 2})
    );
    let r = chunk(3, "3:3", A).body(parts[2]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(json(r).await, Value::Null);
    // finished: 423 for more chunks
    let r = chunk(3, "3:3", A).body("again").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::LOCKED);
    // download: 206, 206, 200 with Mex-Chunk-Range on each
    assert_eq!(m.inbox(B).await, vec![id.clone()]);
    let mut whole = Vec::new();
    for n in 1..=3u32 {
        let r = m.download(B, &id, Some(n)).await;
        let want = if n < 3 {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        };
        assert_eq!(r.status(), want);
        assert_eq!(
            header(&r, "mex-chunk-range"),
            Some(format!("{n}:3").as_str())
        );
        assert_eq!(header(&r, "content-type"), Some("application/octet-stream"));
        whole.extend_from_slice(&r.bytes().await.unwrap());
    }
    assert_eq!(whole, b"first-second-third");
    let r = m.download(B, &id, None).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), parts[0]);
    // chunk out of range, chunk 0, unknown message, not the recipient
    let no_msg = "Message does not exist";
    assert_v2_error(
        m.download(B, &id, Some(4)).await,
        404,
        "RECEIVE",
        "20",
        no_msg,
    )
    .await;
    assert_eq!(
        m.download(B, &id, Some(0)).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_v2_error(
        m.download(B, "NOSUCHID", None).await,
        404,
        "RECEIVE",
        "20",
        no_msg,
    )
    .await;
    assert_v2_error(m.ack(B, "NOSUCHID").await, 404, "RECEIVE", "20", no_msg).await;
    assert_v2_error(m.download(C, &id, None).await, 403, "", "", "Forbidden").await;
    // HEAD: the sender may look at its own message; an unrelated mailbox gets 404
    let head = |mb: &str| {
        m.req(
            Method::HEAD,
            &format!("/messageexchange/{mb}/inbox/{id}"),
            mb,
        )
        .send()
    };
    assert_eq!(head(A).await.unwrap().status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(head(C).await.unwrap().status(), StatusCode::NOT_FOUND);
    // tracking by local id (deprecated, v1 body); several matches → 300
    let by_local = |l: &str| {
        m.req(
            Method::GET,
            &format!("/messageexchange/{A}/outbox/tracking/{l}"),
            A,
        )
        .send()
    };
    let v = json(by_local("chunky").await.unwrap()).await;
    assert_eq!(
        (v["chunkCount"].as_u64(), v["status"].as_str()),
        (Some(3), Some("Accepted"))
    );
    assert_eq!(
        by_local("nothing").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let r = m
        .send(A, B, &b"x"[..])
        .header("mex-localid", "chunky")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = by_local("chunky").await.unwrap();
    assert_eq!(r.status(), StatusCode::MULTIPLE_CHOICES);
    m.server.stop().await;
}

#[tokio::test]
async fn gzip_is_passed_through_or_decoded() {
    let m = Mesh::default().await;
    let data = b"compress me ".repeat(1000);
    let packed = gzip(&data);
    let r = m
        .send(A, B, packed.clone())
        .header("content-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = json(r).await["message_id"].as_str().unwrap().to_string();
    let path = format!("/messageexchange/{B}/inbox/{id}");
    let r = m
        .req(Method::GET, &path, B)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-encoding"), Some("gzip"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), packed.as_slice());
    let r = m
        .req(Method::GET, &path, B)
        .header("accept-encoding", "identity")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-encoding"), None);
    assert_eq!(r.bytes().await.unwrap().as_ref(), data.as_slice());
    // tracking reports the stored (compressed) size
    let v = json(
        m.req1(
            Method::GET,
            &format!("/messageexchange/{A}/outbox/tracking?messageID={id}"),
            A,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(v["fileSize"].as_u64(), Some(packed.len() as u64));
    assert_eq!(v["contentEncoding"], "gzip");
    m.server.stop().await;
}

#[tokio::test]
async fn inbox_paging_filter_and_count() {
    let m = Mesh::default().await;
    let mut sent = Vec::new();
    for i in 0..23 {
        let wf = if i % 2 == 0 {
            "TEST_WORKFLOW"
        } else {
            "TEST_WORKFLOW_ACK"
        };
        let r = m.send_wf(A, B, wf, "x").send().await.unwrap();
        sent.push(json(r).await["message_id"].as_str().unwrap().to_string());
    }
    // v2: follow links.next
    let mut got = Vec::new();
    let mut next = Some(format!("/messageexchange/{B}/inbox?max_results=10"));
    let mut pages = 0;
    while let Some(path) = next {
        let v = json(m.req(Method::GET, &path, B).send().await.unwrap()).await;
        assert_eq!(v["approx_inbox_count"], 23);
        assert!(!v["links"]["self"]
            .as_str()
            .unwrap()
            .contains("continue_from"));
        got.extend(ids(&v["messages"]));
        next = v["links"]["next"].as_str().map(str::to_string);
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(got, sent, "oldest first, nothing lost or repeated");
    // v1: continue_from = last id of the previous page
    let path = format!(
        "/messageexchange/{B}/inbox?max_results=10&continue_from={}",
        sent[9]
    );
    let v = json(m.req1(Method::GET, &path, B).send().await.unwrap()).await;
    assert_eq!(ids(&v["messages"]), sent[10..20].to_vec());
    assert!(v.get("links").is_none());
    // workflow filter: equals, prefix, contains, negated
    let count = |f: &str| {
        let path = format!("/messageexchange/{B}/inbox?workflow_filter={f}");
        let req = m.req(Method::GET, &path, B);
        async move {
            json(req.send().await.unwrap()).await["messages"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(count("TEST_WORKFLOW").await, 12);
    assert_eq!(count("TEST_WORKFLOW_ACK").await, 11);
    assert_eq!(count("TEST*").await, 23);
    assert_eq!(count("*ACK*").await, 11);
    assert_eq!(count("!*ACK*").await, 12);
    // max_results bounds
    for bad in ["5", "5001", "x"] {
        let path = format!("/messageexchange/{B}/inbox?max_results={bad}");
        assert_eq!(
            m.req(Method::GET, &path, B).send().await.unwrap().status(),
            StatusCode::BAD_REQUEST
        );
    }
    // count (deprecated)
    let v = json(
        m.req(Method::GET, &format!("/messageexchange/{B}/count"), B)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v, serde_json::json!({"count": 23}));
    let r = m
        .req1(Method::GET, &format!("/messageexchange/{B}/count"), B)
        .send();
    let v = json(r.await.unwrap()).await;
    assert_eq!(
        (v["count"].as_u64(), v["allResultsIncluded"].as_bool()),
        (Some(23), Some(true))
    );
    m.server.stop().await;
}
