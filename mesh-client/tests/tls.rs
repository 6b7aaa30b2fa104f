//! Mutual TLS against `mock-mesh` serving HTTPS on `127.0.0.1:0` and requiring a client
//! certificate, as real MESH does (mesh-protocol.md section 2). The CA, the server certificate
//! (127.0.0.1 and localhost) and the client certificates are made at test time by
//! `mock_mesh::pki` and handed to both sides as PEM files on disk.

use std::error::Error as _;
use std::path::Path;
use std::time::Duration;

use mesh_client::{ClientConfig, Error, MeshClient, SendOptions};
use mock_mesh::pki::{CertFiles, OtherCa, Pki};

const PASSWORD: &str = "password";
const SHARED_KEY: &str = "TestKey";
const SENDER: &str = "X26ABC1";
const RECIPIENT: &str = "X26ABC2";
const WORKFLOW: &str = "TEST_WORKFLOW";

/// Test certificates (`mock_mesh::pki`) in a fresh directory: the CA, a server certificate,
/// one client certificate for every mailbox's system, and another CA of the same name with a
/// client certificate; and a mock MESH on HTTPS that requires a client certificate from the CA.
struct Setup {
    dir: tempfile::TempDir,
    pki: Pki,
    other: OtherCa,
    mesh: mock_mesh::MockMesh,
}

impl Setup {
    async fn start() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let (pki, other) = (Pki::generate(dir.path()), OtherCa::generate(dir.path()));
        let (pki, other) = (pki.unwrap(), other.unwrap());
        let tls = pki.tls_config(true).expect("test certificates load");
        let mesh = mock_mesh::MockMesh::start(mock_mesh::Config::default().with_tls(tls))
            .await
            .expect("mock-mesh starts");
        Setup {
            dir,
            pki,
            other,
            mesh,
        }
    }
}

/// No retries: a refused handshake is final, and the tests should say so at once.
fn config(url: &str, mailbox: &str) -> ClientConfig {
    ClientConfig::default()
        .with_url(url)
        .with_mailbox(mailbox, PASSWORD)
        .with_shared_key(SHARED_KEY)
        .with_retries(0, Duration::from_millis(10))
        .with_timeout(Duration::from_secs(30))
        .with_application_name("mesh-client-tls-tests")
}

/// `config` with this client certificate (if any) and this CA bundle.
fn tls_config(config: ClientConfig, identity: Option<&CertFiles>, ca: &Path) -> ClientConfig {
    let config = config.with_ca_bundle(ca);
    match identity {
        Some(files) => config.with_client_certificate(&files.cert, &files.key),
        None => config,
    }
}

/// Against a fresh [`Setup`], a client with the client certificate and CA bundle that `pick`
/// chooses fails the handshake in the transport (TLS) layer, with `why` in the cause chain.
async fn assert_handshake_refused(pick: fn(&Setup) -> (Option<&CertFiles>, &Path), why: &str) {
    let setup = Setup::start().await;
    let (identity, ca) = pick(&setup);
    let config = tls_config(config(&setup.mesh.base_url(), SENDER), identity, ca);
    let client = MeshClient::new(config).unwrap();
    let chain = transport_chain(&client.handshake().await.unwrap_err());
    assert!(chain.contains(why), "{chain}");
    setup.mesh.stop().await;
}

/// A transport error (the TLS layer refused), with the whole cause chain for matching.
fn transport_chain(e: &Error) -> String {
    assert!(
        matches!(e, Error::Transport { .. }),
        "not a transport error: {e}"
    );
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(" / ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[tokio::test]
async fn mutual_tls_handshake_and_send_receive_round_trip() {
    let Setup {
        dir,
        pki,
        mesh,
        other: _,
    } = Setup::start().await;
    let url = mesh.base_url();
    assert!(url.starts_with("https://"), "{url}");
    let connect = |mailbox: &str| {
        let config = tls_config(config(&url, mailbox), Some(&pki.client), &pki.ca);
        MeshClient::new(config).unwrap()
    };
    let (sender, recipient) = (connect(SENDER), connect(RECIPIENT));
    sender.handshake().await.unwrap();
    recipient.handshake().await.unwrap();

    let data: Vec<u8> = (0..250_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    let path = dir.path().join("outgoing.dat");
    std::fs::write(&path, &data).unwrap();
    let opts = SendOptions {
        to: RECIPIENT.into(),
        workflow_id: WORKFLOW.into(),
        chunk_size: Some(400_000), // three chunks, each its own request over TLS
        ..SendOptions::default()
    };
    let id = sender.send_file(&path, &opts, &|_| {}).await.unwrap();

    assert_eq!(recipient.list_inbox(None).await.unwrap(), vec![id.clone()]);
    let dest = dir.path().join("received.dat");
    let meta = recipient.download_to(&id, &dest).await.unwrap();
    assert_eq!(meta.chunks, 3);
    assert!(std::fs::read(&dest).unwrap() == data, "download differs");
    recipient.acknowledge(&id).await.unwrap();
    assert!(recipient.list_inbox(None).await.unwrap().is_empty());
    mesh.stop().await;
}

#[tokio::test]
async fn without_a_client_certificate_the_connection_is_refused() {
    assert_handshake_refused(|s| (None, &s.pki.ca), "CertificateRequired").await;
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    // same CA name, other key
    assert_handshake_refused(
        |s| (Some(&s.other.client), &s.pki.ca),
        "received fatal alert",
    )
    .await;
}

#[tokio::test]
async fn plain_http_against_the_tls_port_fails() {
    let setup = Setup::start().await;
    let url = format!("http://{}", setup.mesh.local_addr());
    let client = MeshClient::new(config(&url, SENDER)).unwrap();
    let err = client.handshake().await.unwrap_err();
    let chain = transport_chain(&err);
    assert!(!chain.contains("timed out"), "{chain}");
    setup.mesh.stop().await;
}

#[tokio::test]
async fn the_server_certificate_is_checked_against_the_ca_bundle() {
    // the other CA has the same name, so only the signature check can tell
    assert_handshake_refused(|s| (Some(&s.pki.client), &s.other.ca), "BadSignature").await;
}
