//! Garbage in never panics or kills the server; the `mock-mesh` binary serves on an ephemeral
//! port and stops cleanly on Ctrl-C.

mod common;
use common::*;

// ---------------------------------------------------------------------------------------------
// Robustness: garbage in never panics or kills the server
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn garbage_requests_get_http_errors_and_the_server_survives() {
    let m = Mesh::default().await;
    let paths = [
        "/messageexchange/",
        "/messageexchange//inbox",
        "/messageexchange/X26ABC1/inbox/%ff%fe/1",
        "/messageexchange/X26ABC1/inbox/ID/99999999999999999999",
        "/messageexchange/X26ABC1/outbox/ID/-1",
        "/messageexchange/X26ABC1/outbox/tracking",
        "/messageexchange/X26ABC1/inbox?max_results=%",
        "/messageexchange/endpointlookup/%/%",
    ];
    for p in paths {
        for method in [Method::GET, Method::POST, Method::PUT, Method::HEAD] {
            let r = m
                .req(method.clone(), p, A)
                .header(
                    "mex-chunk-range",
                    reqwest::header::HeaderValue::from_bytes(b"\xff\xfe:1").unwrap(),
                )
                .body("x")
                .send()
                .await
                .unwrap();
            assert!(
                r.status().is_client_error() || r.status().is_success(),
                "{method} {p}: {}",
                r.status()
            );
        }
    }
    for auth in [
        "NHSMESH",
        "NHSMESH :::::",
        "NHSMESH X26ABC1::::",
        "NHSMESH X26ABC1:a:1:b:zz",
        "X26ABC1:a:1:b:0",
    ] {
        let r = m
            .get("/messageexchange/X26ABC1/inbox")
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{auth}");
    }
    assert_eq!(
        m.handshake(A).send().await.unwrap().status(),
        StatusCode::OK
    );
    m.server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn binary_serves_on_an_ephemeral_port_and_stops_cleanly_on_ctrl_c() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mock-mesh"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log",
            "info",
            "--store",
        ])
        .arg(dir.path())
        .args([
            "--pos-delay",
            "0.5",
            "--optout-rate",
            "0.1",
            "--optout-seed",
            "3",
        ])
        .stderr(std::process::Stdio::piped())
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
    let http = reqwest::Client::new();
    let r = http.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(dir.path().join("journal.jsonl").exists());
    // bad command lines exit with 2
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_mock-mesh"))
        .args(["serve", "--store", "x", "--memory"])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(bad.code(), Some(2));
}
