//! Mutual TLS against `mock-mesh` serving HTTPS on `127.0.0.1:0` and requiring a client
//! certificate, as real MESH does (mesh-protocol.md section 2). The CA, the server certificate
//! (127.0.0.1 and localhost) and the client certificates are made at test time with `rcgen`
//! and handed to both sides as PEM files on disk.

use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_client::{ClientConfig, Error, MeshClient, SendOptions};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

const PASSWORD: &str = "password";
const SHARED_KEY: &str = "TestKey";
const SENDER: &str = "X26ABC1";
const RECIPIENT: &str = "X26ABC2";
const WORKFLOW: &str = "TEST_WORKFLOW";

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// Writes a certificate issued by this CA and its key as `<name>.pem` / `<name>.key`.
    fn issue(
        &self,
        dir: &Path,
        name: &str,
        cn: &str,
        sans: &[&str],
        purpose: ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf) {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let paths = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&paths.0, cert.pem()).unwrap();
        std::fs::write(&paths.1, key.serialize_pem()).unwrap();
        paths
    }
}

/// The test CA on disk, with a server certificate, a client certificate for each mailbox's
/// system, and a client certificate from another CA of the same name.
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
    rogue_client: (PathBuf, PathBuf),
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("MESH test CA");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.cert.pem()).unwrap();
        let server = ca.issue(
            dir.path(),
            "server",
            "localhost",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let cn = "SERVER001.X26.api.mesh-client.nhs.uk";
        let client = ca.issue(
            dir.path(),
            "client",
            cn,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let rogue_client = Ca::new("MESH test CA").issue(
            dir.path(),
            "rogue-client",
            cn,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Pki {
            dir,
            ca: ca_path,
            server,
            client,
            rogue_client,
        }
    }

    /// A mock MESH on HTTPS that requires a client certificate from the test CA.
    async fn start_mesh(&self) -> mock_mesh::MockMesh {
        let tls = mock_mesh::TlsConfig::from_files(&self.server.0, &self.server.1, Some(&self.ca))
            .expect("test certificates load");
        mock_mesh::MockMesh::start(mock_mesh::Config::default().with_tls(tls))
            .await
            .expect("mock-mesh starts")
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
    let pki = Pki::new();
    let mesh = pki.start_mesh().await;
    let url = mesh.base_url();
    assert!(url.starts_with("https://"), "{url}");
    let connect = |mailbox: &str| {
        MeshClient::new(
            config(&url, mailbox)
                .with_client_certificate(&pki.client.0, &pki.client.1)
                .with_ca_bundle(&pki.ca),
        )
        .unwrap()
    };
    let (sender, recipient) = (connect(SENDER), connect(RECIPIENT));
    sender.handshake().await.unwrap();
    recipient.handshake().await.unwrap();

    let data: Vec<u8> = (0..250_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    let path = pki.dir.path().join("outgoing.dat");
    std::fs::write(&path, &data).unwrap();
    let opts = SendOptions {
        to: RECIPIENT.into(),
        workflow_id: WORKFLOW.into(),
        chunk_size: Some(400_000), // three chunks, each its own request over TLS
        ..SendOptions::default()
    };
    let id = sender.send_file(&path, &opts, &|_| {}).await.unwrap();

    assert_eq!(recipient.list_inbox(None).await.unwrap(), vec![id.clone()]);
    let dest = pki.dir.path().join("received.dat");
    let meta = recipient.download_to(&id, &dest).await.unwrap();
    assert_eq!(meta.chunks, 3);
    assert!(std::fs::read(&dest).unwrap() == data, "download differs");
    recipient.acknowledge(&id).await.unwrap();
    assert!(recipient.list_inbox(None).await.unwrap().is_empty());
    mesh.stop().await;
}

#[tokio::test]
async fn without_a_client_certificate_the_connection_is_refused() {
    let pki = Pki::new();
    let mesh = pki.start_mesh().await;
    let client = MeshClient::new(config(&mesh.base_url(), SENDER).with_ca_bundle(&pki.ca)).unwrap();
    let chain = transport_chain(&client.handshake().await.unwrap_err());
    assert!(chain.contains("CertificateRequired"), "{chain}");
    mesh.stop().await;
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let mesh = pki.start_mesh().await;
    let client = MeshClient::new(
        config(&mesh.base_url(), SENDER)
            .with_client_certificate(&pki.rogue_client.0, &pki.rogue_client.1)
            .with_ca_bundle(&pki.ca),
    )
    .unwrap();
    let chain = transport_chain(&client.handshake().await.unwrap_err());
    assert!(chain.contains("received fatal alert"), "{chain}");
    mesh.stop().await;
}

#[tokio::test]
async fn plain_http_against_the_tls_port_fails() {
    let pki = Pki::new();
    let mesh = pki.start_mesh().await;
    let url = format!("http://{}", mesh.local_addr());
    let client = MeshClient::new(config(&url, SENDER)).unwrap();
    let err = client.handshake().await.unwrap_err();
    let chain = transport_chain(&err);
    assert!(!chain.contains("timed out"), "{chain}");
    mesh.stop().await;
}

#[tokio::test]
async fn the_server_certificate_is_checked_against_the_ca_bundle() {
    let pki = Pki::new();
    let mesh = pki.start_mesh().await;
    let other_ca = pki.dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, Ca::new("another CA").cert.pem()).unwrap();
    let client = MeshClient::new(
        config(&mesh.base_url(), SENDER)
            .with_client_certificate(&pki.client.0, &pki.client.1)
            .with_ca_bundle(&other_ca),
    )
    .unwrap();
    let chain = transport_chain(&client.handshake().await.unwrap_err());
    assert!(chain.contains("UnknownIssuer"), "{chain}");
    mesh.stop().await;
}
