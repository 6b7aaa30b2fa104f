//! The POS workflow over loopback HTTP (`ndop-domain.md` §2.3, §3, §4): the job-created and
//! result replies, the opt-out tables and rate, rejected files, a job resumed after a restart,
//! and logs that never carry an NHS number, a local id or a body.

mod common;
use common::*;

use std::collections::HashMap;

#[tokio::test]
async fn pos_answers_the_int_test_patients_and_rejects_a_bad_file() {
    let config = Config {
        pos_chunk_bytes: 100, // the result of 10 lines spans two chunks
        ..Config::default()
    };
    let m = Mesh::start(config).await;
    let int = patients("int");
    assert_eq!(int.len(), 20);
    let file: String = int.iter().map(|(n, _)| format!("{n},\r\n")).collect();
    let want: String = int
        .iter()
        .filter(|(_, out)| !out)
        .map(|(n, _)| format!("{n},\r\n"))
        .collect();
    let sub = submit(&m, POS_INT, file.into_bytes(), "NDOP-0001", false).await;

    let ids = m.wait_for(A, 2).await;
    let (job_h, job) = collect(&m, A, &ids[0]).await;
    assert_eq!(h(&job_h, "mex-subject"), Some("SUCCESS"));
    assert_eq!(h(&job_h, "mex-localid"), Some("NDOP-0001"));
    assert_eq!(h(&job_h, "mex-from"), Some(POS_INT));
    assert_eq!(h(&job_h, "mex-workflowid"), Some("SPINE_NTT_UPHOLDING"));
    let v: Value = serde_json::from_slice(&job).unwrap();
    assert_eq!(v["status"], "pending");
    assert_eq!(v["dataset_id"], "mesh_to_pos");
    assert_eq!(v["metadata"]["request"]["extra"]["local_id"], "NDOP-0001");
    assert_eq!(
        v["metadata"]["request"]["extra"]["message_id"],
        sub.as_str()
    );
    let stages: Vec<&str> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "validate_non_empty_file",
            "validate_is_unique_upload",
            "validate_in_order"
        ]
    );

    let (res_h, result) = collect(&m, A, &ids[1]).await;
    assert_eq!(h(&res_h, "mex-localid"), Some("NDOP-0001"));
    assert_eq!(h(&res_h, "mex-filename"), Some("NDOP-0001.dat"));
    assert_eq!(h(&res_h, "mex-chunk-range"), Some("1:2"));
    assert_eq!(String::from_utf8(result).unwrap(), want);
    assert_eq!(want.lines().count(), 10);
    // the POS collected the submission
    assert_eq!(json(m.track(A, &sub).await).await["status"], "acknowledged");

    // one bad line (LF endings, gzip transport) → the one-line error
    let mut bad: String = int.iter().take(5).map(|(n, _)| format!("{n},\n")).collect();
    bad.push_str("123456789,\n");
    submit(&m, POS_INT, bad.into_bytes(), "NDOP-0002", true).await;
    let ids = m.wait_for(A, 2).await;
    let (_, job) = collect(&m, A, &ids[0]).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&job).unwrap()["status"],
        "pending"
    );
    let (res_h, result) = collect(&m, A, &ids[1]).await;
    assert_eq!(h(&res_h, "mex-localid"), Some("NDOP-0002"));
    assert_eq!(
        result,
        b"The file contains one or more invalid NHS Numbers.\n"
    );
    m.server.stop().await;
}

#[tokio::test]
async fn pos_live_table_rate_file_empty_and_repeated_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let optouts = dir.path().join("optouts.txt");
    std::fs::write(&optouts, "nhs_number\n9434765919\n").unwrap();
    let mut config = Config::default();
    config.pos.optout_numbers = mock_mesh::load_optout_file(&optouts).unwrap();
    let m = Mesh::start(config).await;
    let live = patients("live");
    let mut file: String = live.iter().map(|(n, _)| format!("{n}\n")).collect();
    file.push_str("9434765919\n"); // opted out through the file
    let last_unterminated = "9990539510";
    file.push_str(last_unterminated);
    submit(&m, POS_LIVE, file.clone().into_bytes(), "L1", false).await;
    let ids = m.wait_for(A, 2).await;
    collect(&m, A, &ids[0]).await;
    let (_, result) = collect(&m, A, &ids[1]).await;
    let kept: Vec<&str> = std::str::from_utf8(&result).unwrap().split('\n').collect();
    assert_eq!(kept.len(), 12, "11 not opted out + the unterminated repeat");
    for (n, out) in &live {
        assert_eq!(kept.contains(n), !out, "{n}");
    }
    assert!(!kept.contains(&"9434765919"));

    // the same content again from the same sender: the job fails its uniqueness stage
    submit(&m, POS_LIVE, file.into_bytes(), "L2", false).await;
    let ids = m.wait_for(A, 1).await;
    let (job_h, job) = collect(&m, A, &ids[0]).await;
    assert_eq!(h(&job_h, "mex-localid"), Some("L2"));
    let v: Value = serde_json::from_slice(&job).unwrap();
    assert_eq!(v["status"], "failed");
    assert_eq!(v["stages"][0]["passed"], true);
    assert_eq!(v["stages"][1]["passed"], false);
    // an empty file (only possible through gzip transport encoding) fails the first stage
    submit(&m, POS_LIVE, Vec::new(), "L3", true).await;
    let ids = m.wait_for(A, 1).await;
    let (_, job) = collect(&m, A, &ids[0]).await;
    let v: Value = serde_json::from_slice(&job).unwrap();
    assert_eq!(v["status"], "failed");
    assert_eq!(v["stages"][0]["passed"], false);
    // no result follows a failed job
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(m.inbox(A).await.is_empty());
    m.server.stop().await;
}

#[tokio::test]
async fn pos_rate_is_deterministic_and_delay_is_honoured() {
    let mut config = Config::default();
    config.pos.optout_rate = 0.5;
    config.pos.optout_seed = 7;
    config.pos.delay = Duration::from_millis(300);
    let m = Mesh::start(config).await;
    // valid synthetic numbers from the 999 range
    let numbers: Vec<String> = (0..2000u64)
        .map(|i| format!("999{:06}", 100_000 + i))
        .filter_map(|p| {
            (0..10)
                .map(|d| format!("{p}{d}"))
                .find(|n| mock_mesh::pos::is_valid_nhs_number(n.as_bytes()))
        })
        .take(400)
        .collect();
    let forward: String = numbers.iter().map(|n| format!("{n},\r\n")).collect();
    let backward: String = numbers.iter().rev().map(|n| format!("{n},\r\n")).collect();
    let mut results = Vec::new();
    for (i, f) in [forward, backward].into_iter().enumerate() {
        let started = std::time::Instant::now();
        submit(&m, POS_INT, f.into_bytes(), &format!("R{i}"), false).await;
        let ids = m.wait_for(A, 1).await;
        collect(&m, A, &ids[0]).await;
        let ids = m.wait_for(A, 1).await;
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "the result waits for the delay"
        );
        let (_, body) = collect(&m, A, &ids[0]).await;
        let mut kept: Vec<String> = String::from_utf8(body)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        kept.sort();
        results.push(kept);
    }
    assert_eq!(
        results[0], results[1],
        "the answer for a number ignores its position"
    );
    let n = results[0].len();
    assert!((140..260).contains(&n), "about half kept: {n}");
    m.server.stop().await;
}

#[tokio::test]
async fn pos_job_interrupted_by_a_restart_still_gets_its_result() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default().with_store_dir(dir.path());
    config.pos.delay = Duration::from_secs(3600);
    let m = Mesh::start(config).await;
    let int = patients("int");
    let file: String = int.iter().map(|(n, _)| format!("{n},\n")).collect();
    let want: String = int
        .iter()
        .filter(|(_, out)| !out)
        .map(|(n, _)| format!("{n},\n"))
        .collect();
    let sub = submit(&m, POS_INT, file.into_bytes(), "RESTART-1", false).await;
    let job = m.wait_for(A, 1).await;
    m.server.stop().await; // the result was an hour away

    let m = Mesh::start(Config::default().with_store_dir(dir.path())).await;
    let ids = m.wait_for(A, 2).await;
    assert_eq!(
        ids[0], job[0],
        "the job message survived and was not sent twice"
    );
    let (job_h, _) = collect(&m, A, &ids[0]).await;
    assert_eq!(h(&job_h, "mex-subject"), Some("SUCCESS"));
    let (res_h, result) = collect(&m, A, &ids[1]).await;
    assert_eq!(h(&res_h, "mex-localid"), Some("RESTART-1"));
    assert_eq!(String::from_utf8(result).unwrap(), want);
    assert_eq!(json(m.track(A, &sub).await).await["status"], "acknowledged");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(m.inbox(A).await.is_empty(), "exactly two replies");
    m.server.stop().await;
}

#[tokio::test]
async fn logs_carry_no_nhs_numbers_local_ids_or_bodies() {
    let m = Mesh::default().await;
    let int = patients("int");
    let file: String = int.iter().map(|(n, _)| format!("{n},\r\n")).collect();
    submit(&m, POS_INT, file.into_bytes(), "LOGCHECK-LOCAL", false).await;
    submit(&m, POS_INT, b"0123456789\n".to_vec(), "LOGCHECK-BAD", false).await;
    m.wait_for(A, 4).await;
    let r = m
        .send(A, B, "SECRET-BODY-TEXT")
        .header("mex-subject", "SECRET-SUBJECT")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    m.server.stop().await;
    let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
    assert!(
        logs.contains("POS job created") && logs.contains("POS result sent"),
        "{logs}"
    );
    assert!(logs.contains("/{mb}/outbox"), "requests are logged");
    for (n, _) in &int {
        assert!(!logs.contains(n), "NHS number {n} in the logs");
    }
    for secret in [
        "0123456789",
        "SECRET-BODY-TEXT",
        "SECRET-SUBJECT",
        "LOGCHECK",
        "password",
    ] {
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
}

#[tokio::test]
async fn a_gzip_bomb_is_decoded_under_a_limit_and_rejected_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default().with_store_dir(dir.path());
    config.limits.pos_max_decoded_bytes = 100_000;
    let m = Mesh::start(config).await;
    // 22 kB of valid lines fit; 220 kB (a few hundred bytes of gzip) do not
    let small = "9434765919\n".repeat(2_000).into_bytes();
    let bomb = "9434765919\n".repeat(20_000).into_bytes();
    submit(&m, POS_INT, small.clone(), "SMALL", true).await;
    submit(&m, POS_INT, bomb, "BOMB", true).await;
    let ids = m.wait_for(A, 4).await;
    let mut results = HashMap::new();
    for id in &ids {
        let (h_, body) = collect(&m, A, id).await;
        if h(&h_, "mex-subject") != Some("SUCCESS") {
            results.insert(h(&h_, "mex-localid").unwrap().to_string(), body);
        }
    }
    assert_eq!(results["SMALL"], small);
    assert_eq!(
        results["BOMB"], b"The file contains one or more invalid NHS Numbers.\r\n",
        "rejected as an unreadable file is (CRLF: no line was read)"
    );
    m.server.stop().await;
    // no result file of the cut-off job is left behind
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

/// Sends `chunks` (each gzip'd on its own, as MESH clients compress) as one chunked POS
/// submission; each of `retries` re-uploads chunk 2 (with other content) once it has been
/// read, before the last chunk. Returns the submission's id.
async fn submit_chunked(m: &Mesh, chunks: &[Vec<u8>], retries: &[Vec<u8>]) -> String {
    let total = chunks.len();
    let r = m
        .send_wf(A, POS_LIVE, "SPINE_NTT_UPHOLDING", gzip(&chunks[0]))
        .header("mex-chunk-range", format!("1:{total}"))
        .header("content-encoding", "gzip")
        .header("mex-localid", "CHUNKED")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = json(r).await["message_id"].as_str().unwrap().to_string();
    let upload = |n: usize, body: &[u8]| {
        m.req(
            Method::POST,
            &format!("/messageexchange/{A}/outbox/{id}/{n}"),
            A,
        )
        .header("mex-chunk-range", format!("{n}:{total}"))
        .header("content-encoding", "gzip")
        .body(gzip(body))
        .send()
    };
    for (i, c) in chunks.iter().enumerate().skip(1) {
        let n = i + 1;
        if n == total && !retries.is_empty() {
            // the early analysis has read chunk 2 by now (it polls at least every 250 ms)
            tokio::time::sleep(Duration::from_millis(600)).await;
            for other in retries {
                assert_eq!(upload(2, other).await.unwrap().status(), 202);
            }
        }
        assert_eq!(upload(n, c).await.unwrap().status(), StatusCode::ACCEPTED);
    }
    id
}

/// A chunked submission is analysed while it uploads, and answered from exactly the accepted
/// chunks: when chunk 2 is replaced by a retry after it was read, the job reads the accepted
/// submission again. Memory and disk stores.
#[tokio::test]
async fn a_chunked_submission_is_answered_from_the_accepted_chunks() {
    let live = patients("live");
    // several lines per chunk, LF and CRLF, a line of chunk 2 split across chunks 2 and 3
    let lines: Vec<String> = (0..60)
        .map(|i| {
            let (n, _) = live[i % live.len()];
            if i % 2 == 0 {
                format!("{n},\r\n")
            } else {
                format!("{n}\n")
            }
        })
        .collect();
    let all: Vec<u8> = lines.concat().into_bytes();
    let (c1, rest) = all.split_at(all.len() / 3);
    let (c2, c3) = rest.split_at(rest.len() / 2 + 5);
    let c2_longer: Vec<u8> = {
        let mut v = c2.to_vec();
        v.splice(0..0, b"9434765919\n".iter().copied()); // one more line, other sizes
        v
    };
    let c2_same_size: Vec<u8> = {
        // chunk 2 with its first whole line's number swapped for another patient's
        let mut v = c2.to_vec();
        let at = v.iter().position(|&b| b == b'\n').unwrap() + 1;
        let other = live
            .iter()
            .map(|(n, _)| n.as_bytes())
            .find(|n| *n != &v[at..at + 10])
            .unwrap();
        v[at..at + 10].copy_from_slice(other);
        v
    };
    let kept = |file: &[u8]| -> Vec<u8> {
        file.split_inclusive(|&b| b == b'\n')
            .filter(|l| {
                let n = std::str::from_utf8(&l[..10]).unwrap();
                !live.iter().any(|(p, out)| *p == n && *out)
            })
            .flatten()
            .copied()
            .collect()
    };
    for disk in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        if disk {
            config = config.with_store_dir(dir.path());
        }
        config.pos_chunk_bytes = 97; // the result in several chunks
        let m = Mesh::start(config).await;
        let chunks = [c1.to_vec(), c2.to_vec(), c3.to_vec()];
        // no retry; a longer chunk 2; a longer then a same-sized one (the first chunk 2's
        // inode or address is free by then, and must not pass for it)
        let cases = [
            vec![],
            vec![c2_longer.clone()],
            vec![c2_longer.clone(), c2_same_size.clone()],
        ];
        for retries in cases {
            let file = match retries.last() {
                None => all.clone(),
                Some(r) => [c1, r.as_slice(), c3].concat(),
            };
            let sub = submit_chunked(&m, &chunks, &retries).await;
            let ids = m.wait_for(A, 2).await;
            let (_, job) = collect(&m, A, &ids[0]).await;
            let v: Value = serde_json::from_slice(&job).unwrap();
            assert_eq!(v["status"], "pending", "disk {disk}");
            assert_eq!(v["metadata"]["filesize"], file.len());
            let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&file));
            assert_eq!(v["metadata"]["file_hash"], hash.as_str());
            let (_, result) = collect(&m, A, &ids[1]).await;
            assert_eq!(
                String::from_utf8(result).unwrap(),
                String::from_utf8(kept(&file)).unwrap(),
                "disk {disk}, retries {}",
                retries.len()
            );
            let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
            let said = |what: &str| {
                logs.lines()
                    .any(|l| l.contains(what) && l.contains(sub.as_str()))
            };
            if retries.is_empty() {
                assert!(said("POS analysed the submission while it uploaded"));
            } else {
                assert!(said("POS early analysis discarded"));
                assert!(!said("POS analysed the submission while it uploaded"));
            }
        }
        m.server.stop().await;
    }
}

/// The result as MESH stores a gzip'd upload (`pos.result_encoding` gzip): each chunk
/// one gzip member, passed through to a client that accepts gzip (`Content-Encoding: gzip`)
/// and decoded for one that does not; either way the kept lines, byte for byte, as with
/// `identity`, whose chunks are sent as stored whatever the client accepts. No
/// `Mex-Content-Compressed` (the content itself is not compressed); the sender's tracking
/// says `contentEncoding: gzip`. On disk and in memory.
#[tokio::test]
async fn the_result_is_sent_gzip_d_or_plain_as_the_client_accepts() {
    use std::io::Read;
    let numbers: Vec<String> = (0..3000u64)
        .map(|i| format!("999{:06}", 100_000 + i * 7))
        .filter_map(|p| {
            (0..10)
                .map(|d| format!("{p}{d}"))
                .find(|n| mock_mesh::pos::is_valid_nhs_number(n.as_bytes()))
        })
        .collect();
    let file: String = numbers.iter().map(|n| format!("{n},\r\n")).collect();
    let mut expected = None;
    for (encoding, on_disk) in [("gzip", true), ("gzip", false), ("identity", true)] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            pos_chunk_bytes: 10_000, // several chunks
            ..Config::default()
        };
        if on_disk {
            config = config.with_store_dir(dir.path());
        }
        config.pos.optout_rate = 0.2;
        config.pos.result_encoding = mock_mesh::parse_result_encoding(encoding).unwrap();
        let m = Mesh::start(config).await;
        submit(&m, POS_INT, file.clone().into_bytes(), "GZ-1", true).await;
        let ids = m.wait_for(A, 2).await;
        let result = &ids[1];
        let path = format!("/messageexchange/{A}/inbox/{result}");
        let first = m.download(A, result, None).await;
        let total: u32 = header(&first, "mex-total-chunks").unwrap().parse().unwrap();
        assert!(total > 2, "{total} chunks");
        let (mut plain, mut passed, mut stored) = (Vec::new(), Vec::new(), 0);
        for n in 1..=total {
            let chunk = if n == 1 {
                path.clone()
            } else {
                format!("{path}/{n}")
            };
            // no Accept-Encoding: the content
            let r = m.req(Method::GET, &chunk, A).send().await.unwrap();
            assert_eq!(header(&r, "content-encoding"), None, "{encoding}");
            assert_eq!(header(&r, "mex-content-compressed"), None);
            plain.extend_from_slice(&r.bytes().await.unwrap());
            // Accept-Encoding: gzip: one gzip member a chunk if stored so
            let r = m
                .req(Method::GET, &chunk, A)
                .header("accept-encoding", "gzip")
                .send()
                .await
                .unwrap();
            assert_eq!(header(&r, "mex-content-compressed"), None);
            let gz = header(&r, "content-encoding") == Some("gzip");
            assert_eq!(
                gz,
                encoding == "gzip",
                "{encoding}: passed through as stored"
            );
            let body = r.bytes().await.unwrap();
            stored += body.len();
            if gz {
                let mut rest = &body[..];
                flate2::read::GzDecoder::new(&mut rest)
                    .read_to_end(&mut passed)
                    .unwrap();
                assert!(rest.is_empty(), "one gzip member a chunk");
            } else {
                passed.extend_from_slice(&body);
            }
        }
        assert!(plain == passed, "{encoding}: the same content either way");
        let kept = plain.len();
        assert!(kept > 0 && kept < file.len() * 9 / 10, "some opted out");
        if encoding == "gzip" {
            assert!(stored < kept / 2, "{stored} stored of {kept}");
        }
        match &expected {
            None => expected = Some(plain),
            Some(e) => assert!(*e == plain, "{encoding}: the same result"),
        }
        // the POS's tracking of its result (v1: the encoding and flags)
        let track = format!("/messageexchange/{POS_INT}/outbox/tracking?messageID={result}");
        let v = json(m.req1(Method::GET, &track, POS_INT).send().await.unwrap()).await;
        let want = if encoding == "gzip" { "gzip" } else { "" };
        assert_eq!(v["contentEncoding"], want);
        assert_eq!(
            v["fileSize"].as_u64(),
            Some(stored as u64),
            "the stored size"
        );
        assert_eq!(v["compressFlag"], "");
        m.server.stop().await;
    }
}
