//! End-to-end tests of the client over loopback HTTP, never mocked at the HTTP level:
//! against NHS England's `mesh-sandbox` (a Python process started per test, see
//! `tools/python-env.sh`) and against our own `mock-mesh` (in process).
//!
//! Each scenario is written once against a base URL and instantiated for every server by
//! `scenario_tests!`; each test gets a fresh server so inboxes start empty.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use mesh_client::{ClientConfig, Error, MeshClient, MessageType, SendOptions};

const PASSWORD: &str = "password";
const SHARED_KEY: &str = "TestKey";
const SENDER: &str = "X26ABC1";
const RECIPIENT: &str = "X26ABC2";
const THIRD: &str = "X26ABC3";
const WORKFLOW: &str = "TEST_WORKFLOW";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn config(url: &str, mailbox: &str) -> ClientConfig {
    ClientConfig::default()
        .with_url(url)
        .with_mailbox(mailbox, PASSWORD)
        .with_shared_key(SHARED_KEY)
        .with_retries(2, Duration::from_millis(20))
        .with_timeout(Duration::from_secs(60))
        .with_application_name("mesh-client-tests")
}

fn client(url: &str, mailbox: &str) -> MeshClient {
    MeshClient::new(config(url, mailbox)).expect("valid test config")
}

fn options(to: &str) -> SendOptions {
    SendOptions {
        to: to.into(),
        workflow_id: WORKFLOW.into(),
        ..SendOptions::default()
    }
}

/// Deterministic test content: text-like lines (compressible) with varying numbers.
fn content(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(format!("{:010},row,{}\n", x % 10_000_000_000, x % 97).as_bytes());
    }
    out.truncate(len);
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Records every progress report.
#[derive(Default)]
struct Progress(Mutex<Vec<u64>>);

impl Progress {
    fn report(&self) -> impl Fn(u64) + Send + Sync + '_ {
        |n| self.0.lock().unwrap().push(n)
    }
    fn seen(&self) -> Vec<u64> {
        self.0.lock().unwrap().clone()
    }
}

fn assert_api_error(err: &Error, status: u16) {
    assert!(
        matches!(err, Error::Api { status: s, .. } if *s == status),
        "expected HTTP {status}, got {err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/// NHS England's mesh-sandbox on a free loopback port, killed on drop.
struct Sandbox {
    child: std::process::Child,
    url: String,
    _log_dir: tempfile::TempDir,
}

/// Certificates for a TLS sandbox: a throw-away CA, a server certificate for 127.0.0.1 and a
/// client certificate, all made by `cryptography` from the sandbox's venv.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn generate() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new(python())
            .args(["-c", GENERATE_PKI])
            .arg(dir.path())
            .status()
            .expect("run python");
        assert!(status.success(), "certificate generation failed");
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Writes ca.pem, server.pem/server.key (SAN 127.0.0.1), client.pem/client.key into argv[1].
const GENERATE_PKI: &str = r#"
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

out = sys.argv[1]
now = datetime.datetime.now(datetime.timezone.utc)
def name(cn): return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
def save(fname, data):
    with open(f"{out}/{fname}", "wb") as f: f.write(data)
def key_pem(k):
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())

ca_key = ec.generate_private_key(ec.SECP256R1())
ca = (x509.CertificateBuilder().subject_name(name("test CA")).issuer_name(name("test CA"))
      .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
      .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
      .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
      .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
      .sign(ca_key, hashes.SHA256()))
save("ca.pem", ca.public_bytes(serialization.Encoding.PEM))

def leaf(cn, fname, eku, san):
    key = ec.generate_private_key(ec.SECP256R1())
    b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage([eku]), critical=False))
    if san: b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    save(f"{fname}.pem", b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    save(f"{fname}.key", key_pem(key))

leaf("127.0.0.1", "server", ExtendedKeyUsageOID.SERVER_AUTH,
     [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
leaf("SERVER001.X26.api.mesh-client.nhs.uk", "client", ExtendedKeyUsageOID.CLIENT_AUTH, None)
"#;

impl Sandbox {
    async fn start() -> Sandbox {
        Sandbox::start_with(None).await
    }

    /// With `pki`, the sandbox serves HTTPS and requires a client certificate signed by its CA.
    async fn start_with(pki: Option<&Pki>) -> Sandbox {
        let python = python();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log_dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(log_dir.path().join("sandbox.log")).unwrap();
        let mut command = std::process::Command::new(python);
        command
            .args([
                "-m",
                "uvicorn",
                "mesh_sandbox.api:app",
                "--host",
                "127.0.0.1",
            ])
            .args(["--port", &port.to_string(), "--workers", "1"]);
        if let Some(pki) = pki {
            command
                .arg("--ssl-certfile")
                .arg(pki.path("server.pem"))
                .arg("--ssl-keyfile")
                .arg(pki.path("server.key"))
                .arg("--ssl-ca-certs")
                .arg(pki.path("ca.pem"))
                .args(["--ssl-cert-reqs", "2"]);
        }
        let child = command
            .env("STORE_MODE", "memory")
            .env("AUTH_MODE", "full")
            .env("SHARED_KEY", SHARED_KEY)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mesh-sandbox");
        let scheme = if pki.is_some() { "https" } else { "http" };
        let mut sandbox = Sandbox {
            child,
            url: format!("{scheme}://127.0.0.1:{port}"),
            _log_dir: log_dir,
        };
        let health = format!("{}/health", sandbox.url);
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if let Some(status) = sandbox.child.try_wait().unwrap() {
                panic!("mesh-sandbox exited with {status}: {}", sandbox.log());
            }
            let ready = if pki.is_some() {
                // uvicorn listens only once the app is loaded
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            } else {
                matches!(http.get(&health).send().await, Ok(r) if r.status().is_success())
            };
            if ready {
                return sandbox;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("mesh-sandbox did not become healthy: {}", sandbox.log());
    }

    fn url(&self) -> &str {
        &self.url
    }

    async fn stop(self) {}

    fn log(&self) -> String {
        std::fs::read_to_string(self._log_dir.path().join("sandbox.log")).unwrap_or_default()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Our `mock-mesh`, in process on an ephemeral loopback port with a memory store.
struct Mock {
    mesh: mock_mesh::MockMesh,
    url: String,
}

impl Mock {
    async fn start() -> Mock {
        Mock::start_with(mock_mesh::Config::default()).await
    }

    async fn start_with(config: mock_mesh::Config) -> Mock {
        let mesh = mock_mesh::MockMesh::start(config)
            .await
            .expect("start mock-mesh");
        let url = mesh.base_url();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        Mock { mesh, url }
    }

    fn url(&self) -> &str {
        &self.url
    }

    async fn stop(self) {
        self.mesh.stop().await;
    }
}

/// The venv python with mesh-sandbox, created on first use by `tools/python-env.sh`.
fn python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/python-env.sh");
            let out = std::process::Command::new("bash")
                .arg(&script)
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("run tools/python-env.sh");
            assert!(out.status.success(), "tools/python-env.sh failed");
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        })
        .clone()
}

// ---------------------------------------------------------------------------------------------
// Scenarios (any faithful MESH server with mailboxes X26ABC1..3, password `password`)
// ---------------------------------------------------------------------------------------------

mod scenarios {
    use super::*;

    pub(crate) async fn handshake_and_wrong_credentials(url: &str) {
        client(url, SENDER).handshake().await.unwrap();
        client(url, RECIPIENT).handshake().await.unwrap();

        let wrong_password =
            MeshClient::new(config(url, SENDER).with_mailbox(SENDER, "not-the-password")).unwrap();
        let err = wrong_password.handshake().await.unwrap_err();
        assert_api_error(&err, 403);
        assert!(!err.to_string().contains("not-the-password"), "{err}");

        let wrong_key = MeshClient::new(config(url, SENDER).with_shared_key("BackBone")).unwrap();
        assert_eq!(wrong_key.handshake().await.unwrap_err().status(), Some(403));
    }

    pub(crate) async fn single_chunk_send_download_acknowledge(url: &str) {
        let dir = tempfile::tempdir().unwrap();
        let data = b"Hello Bob, single chunk".to_vec();
        let path = write(dir.path(), "hello.txt", &data);
        let (sender, recipient) = (client(url, SENDER), client(url, RECIPIENT));
        let opts = SendOptions {
            subject: Some("greeting".into()),
            local_id: Some("local-single-1".into()),
            content_type: Some("text/plain".into()),
            checksum: Some("md5:deadbeef".into()),
            ..options(RECIPIENT)
        };
        let progress = Progress::default();
        let id = sender
            .send_file(&path, &opts, &progress.report())
            .await
            .unwrap();
        assert_eq!(progress.seen(), vec![0, data.len() as u64]);

        assert_eq!(recipient.list_inbox(None).await.unwrap(), vec![id.clone()]);
        let head = recipient.head_message(&id).await.unwrap();
        assert_eq!(head.message_id, id);
        assert_eq!(head.message_type, MessageType::Data);
        assert_eq!(head.sender.as_deref(), Some(SENDER));
        assert_eq!(head.recipient.as_deref(), Some(RECIPIENT));
        assert_eq!(head.workflow_id.as_deref(), Some(WORKFLOW));
        assert_eq!(head.local_id.as_deref(), Some("local-single-1"));
        assert_eq!(head.subject.as_deref(), Some("greeting"));
        assert_eq!(head.file_name.as_deref(), Some("hello.txt"));
        assert_eq!(head.checksum.as_deref(), Some("md5:deadbeef"));
        assert_eq!(head.chunks, 1);
        assert!(head
            .content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("text/plain")));

        let dest = dir.path().join("received.txt");
        let meta = recipient.download_to(&id, &dest).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        assert_eq!(meta.bytes, data.len() as u64);
        assert_eq!(meta.local_id.as_deref(), Some("local-single-1"));
        assert_eq!(meta.status_success, Some(true));
        assert!(!dir.path().join("received.txt.part").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "downloads are private: {mode:o}");
        }

        assert_eq!(sender.track(&id).await.unwrap().status, "accepted");
        recipient.acknowledge(&id).await.unwrap();
        recipient.acknowledge(&id).await.unwrap(); // idempotent
        assert!(recipient.list_inbox(None).await.unwrap().is_empty());
        let tracking = sender.track(&id).await.unwrap();
        assert_eq!(tracking.message_id, id);
        assert_eq!(tracking.status, "acknowledged");
        assert_eq!(tracking.local_id.as_deref(), Some("local-single-1"));
        assert_eq!(tracking.recipient.as_deref(), Some(RECIPIENT));
    }

    pub(crate) async fn multi_chunk_send_and_download(url: &str) {
        chunked_roundtrip(url, false).await;
    }

    pub(crate) async fn gzip_multi_chunk_send_and_download(url: &str) {
        chunked_roundtrip(url, true).await;
    }

    async fn chunked_roundtrip(url: &str, compress: bool) {
        let dir = tempfile::tempdir().unwrap();
        let data = content(1_000_003);
        let path = write(dir.path(), "big.dat", &data);
        let (sender, recipient) = (client(url, SENDER), client(url, RECIPIENT));
        let opts = SendOptions {
            compress,
            chunk_size: Some(300_000),
            local_id: Some(format!("chunked-{compress}")),
            ..options(RECIPIENT)
        };
        let progress = Progress::default();
        let id = sender
            .send_file(&path, &opts, &progress.report())
            .await
            .unwrap();
        assert_eq!(
            progress.seen(),
            vec![0, 300_000, 600_000, 900_000, 1_000_003]
        );

        let dest = dir.path().join("out.dat");
        let meta = recipient.download_to(&id, &dest).await.unwrap();
        assert_eq!(meta.chunks, 4);
        assert_eq!(meta.bytes, data.len() as u64);
        assert!(std::fs::read(&dest).unwrap() == data, "download differs");
        let one = dir.path().join("chunk2.dat");
        let meta = recipient.download_chunk_to(&id, 2, &one).await.unwrap();
        assert_eq!((meta.chunks, meta.bytes), (4, 300_000));
        assert!(
            std::fs::read(&one).unwrap() == data[300_000..600_000],
            "chunk 2 differs"
        );
        assert_api_error(
            &recipient
                .download_chunk_to(&id, 5, &dir.path().join("none"))
                .await
                .unwrap_err(),
            404,
        );
        recipient.acknowledge(&id).await.unwrap();
        assert_eq!(sender.track(&id).await.unwrap().status, "acknowledged");
    }

    pub(crate) async fn inbox_paging_and_workflow_filter(url: &str) {
        let dir = tempfile::tempdir().unwrap();
        let sender = client(url, SENDER);
        let recipient =
            MeshClient::new(config(url, THIRD).with_inbox_page_size(10)).expect("config");
        let mut sent = Vec::new();
        for i in 0..12 {
            let path = write(
                dir.path(),
                &format!("m{i}.txt"),
                format!("message {i}").as_bytes(),
            );
            let workflow = if i % 4 == 0 {
                "OTHER_WORKFLOW"
            } else {
                WORKFLOW
            };
            let opts = SendOptions {
                workflow_id: workflow.into(),
                ..options(THIRD)
            };
            sent.push((
                sender.send_file(&path, &opts, &|_| {}).await.unwrap(),
                workflow,
            ));
        }
        let all: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(recipient.list_inbox(None).await.unwrap(), all);
        let other: Vec<String> = sent
            .iter()
            .filter(|(_, wf)| *wf == "OTHER_WORKFLOW")
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(
            recipient.list_inbox(Some("OTHER_WORKFLOW")).await.unwrap(),
            other
        );
        for id in &all[..5] {
            recipient.acknowledge(id).await.unwrap();
        }
        assert_eq!(recipient.list_inbox(None).await.unwrap(), all[5..]);
    }

    pub(crate) async fn unknown_message_and_recipient_errors(url: &str) {
        let dir = tempfile::tempdir().unwrap();
        let (sender, recipient) = (client(url, SENDER), client(url, RECIPIENT));
        let missing = "NOSUCHMESSAGE0000000000000000000";

        let dest = dir.path().join("nothing.dat");
        let err = recipient.download_to(missing, &dest).await.unwrap_err();
        assert_api_error(&err, 404);
        assert_eq!(err.mesh_code(), Some("20"));
        assert!(!dest.exists() && !dir.path().join("nothing.dat.part").exists());
        assert_api_error(&recipient.head_message(missing).await.unwrap_err(), 404);
        assert_api_error(&recipient.acknowledge(missing).await.unwrap_err(), 404);
        assert_api_error(&sender.track(missing).await.unwrap_err(), 404);

        let path = write(dir.path(), "x.txt", b"x");
        let err = sender
            .send_file(&path, &options("NOSUCHMAILBOX"), &|_| {})
            .await
            .unwrap_err();
        assert_api_error(&err, 417);
        assert_eq!(err.mesh_code(), Some("12"));
    }

    pub(crate) async fn resume_after_partial_upload(url: &str) {
        let dir = tempfile::tempdir().unwrap();
        let data = content(50_000);
        let path = write(dir.path(), "resume.dat", &data);
        let (sender, recipient) = (client(url, SENDER), client(url, RECIPIENT));
        let opts = SendOptions {
            chunk_size: Some(10_000),
            ..options(RECIPIENT)
        };
        // Chunks 1 and 2 go up, then the "process dies".
        let id = sender.send_chunk(&path, &opts, None, 1).await.unwrap();
        sender.send_chunk(&path, &opts, Some(&id), 2).await.unwrap();
        assert_eq!(sender.track(&id).await.unwrap().status, "uploading");
        assert!(recipient.list_inbox(None).await.unwrap().is_empty());

        let last = AtomicU64::new(0);
        sender
            .resume_send(&path, &opts, &id, 3, &|n| last.store(n, Ordering::SeqCst))
            .await
            .unwrap();
        assert_eq!(last.load(Ordering::SeqCst), data.len() as u64);
        assert_eq!(sender.track(&id).await.unwrap().status, "accepted");
        assert_eq!(recipient.list_inbox(None).await.unwrap(), vec![id.clone()]);
        let dest = dir.path().join("resumed.dat");
        let meta = recipient.download_to(&id, &dest).await.unwrap();
        assert_eq!(meta.chunks, 5);
        assert!(
            std::fs::read(&dest).unwrap() == data,
            "resumed message differs"
        );
        // Nothing left to do past the last chunk.
        sender
            .resume_send(&path, &opts, &id, 6, &|_| {})
            .await
            .unwrap();
    }
}

/// Calls `$m!($server: scenario, …)` with every scenario, so each server runs them all.
macro_rules! every_scenario {
    ($m:ident!($server:ty)) => {
        $m!($server:
            handshake_and_wrong_credentials,
            single_chunk_send_download_acknowledge,
            multi_chunk_send_and_download,
            gzip_multi_chunk_send_and_download,
            inbox_paging_and_workflow_filter,
            unknown_message_and_recipient_errors,
            resume_after_partial_upload,
        );
    };
}

/// One `#[tokio::test]` per scenario, each with a fresh `$server`.
macro_rules! scenario_tests {
    ($server:ty: $($scenario:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $scenario() {
            let server = <$server>::start().await;
            crate::scenarios::$scenario(server.url()).await;
            server.stop().await;
        }
    )*};
}

mod sandbox {
    use super::*;

    every_scenario!(scenario_tests!(Sandbox));

    /// The sandbox's own error texts (section 10.2) reach the typed error.
    #[tokio::test]
    async fn wrong_password_error_carries_the_mesh_description() {
        let sandbox = Sandbox::start().await;
        let c =
            MeshClient::new(config(sandbox.url(), SENDER).with_mailbox(SENDER, "wrong")).unwrap();
        match c.handshake().await.unwrap_err() {
            Error::Api { status, mesh, .. } => {
                assert_eq!(status, 403);
                assert_eq!(
                    mesh.description.as_deref(),
                    Some("Invalid Authentication Token")
                );
            }
            other => panic!("expected an API error, got {other:?}"),
        }
    }

    /// Sandbox data: TEST_WORKFLOW is received by X26ABC2 (ODS X26) (section 12.2).
    #[tokio::test]
    async fn endpoint_lookup() {
        let sandbox = Sandbox::start().await;
        let c = client(sandbox.url(), SENDER);
        let found = c.lookup_endpoint("X26", WORKFLOW).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].mailbox_id, RECIPIENT);
        assert_eq!(found[0].mailbox_name.as_deref(), Some("TESTMB2"));
        assert!(c
            .lookup_endpoint("X26", "NO_SUCH_WORKFLOW")
            .await
            .unwrap()
            .is_empty());
    }

    /// A non-delivery report (created with the sandbox's admin API) downloads as an empty
    /// file whose metadata carries the report (sections 6, 11; E46, E47).
    #[tokio::test]
    async fn report_message_has_empty_body_and_status_metadata() {
        let sandbox = Sandbox::start().await;
        let dir = tempfile::tempdir().unwrap();
        let sender = client(sandbox.url(), SENDER);
        let path = write(dir.path(), "a.txt", b"a");
        let id = sender
            .send_file(&path, &options(RECIPIENT), &|_| {})
            .await
            .unwrap();
        let report: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/messageexchange/admin/report", sandbox.url()))
            .json(&serde_json::json!({
                "mailbox_id": SENDER, "code": "14", "description": "x",
                "workflow_id": WORKFLOW, "subject": "subj", "linked_message_id": id,
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let report_id = report["message_id"].as_str().unwrap();
        assert_eq!(sender.list_inbox(None).await.unwrap(), vec![report_id]);
        let dest = dir.path().join("report.dat");
        let meta = sender.download_to(report_id, &dest).await.unwrap();
        assert_eq!(meta.message_type, MessageType::Report);
        assert_eq!(meta.chunks, 0);
        assert_eq!(meta.bytes, 0);
        assert_eq!(meta.status_code.as_deref(), Some("14"));
        assert_eq!(meta.status_success, Some(false));
        assert_eq!(meta.linked_message_id.as_deref(), Some(id.as_str()));
        assert_eq!(std::fs::read(&dest).unwrap(), b"");
    }

    /// Mutual TLS as real MESH requires it: our CA bundle and client certificate work; without
    /// the client certificate, or without the CA, the connection fails (section 2).
    #[tokio::test]
    async fn mutual_tls() {
        let pki = Pki::generate();
        let sandbox = Sandbox::start_with(Some(&pki)).await;
        let url = sandbox.url();
        let tls = |mailbox| {
            config(url, mailbox)
                .with_ca_bundle(pki.path("ca.pem"))
                .with_client_certificate(pki.path("client.pem"), pki.path("client.key"))
        };
        let sender = MeshClient::new(tls(SENDER)).unwrap();
        let recipient = MeshClient::new(tls(RECIPIENT)).unwrap();
        sender.handshake().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = content(70_000);
        let path = write(dir.path(), "tls.dat", &data);
        let opts = SendOptions {
            chunk_size: Some(30_000),
            compress: true,
            ..options(RECIPIENT)
        };
        let id = sender.send_file(&path, &opts, &|_| {}).await.unwrap();
        let dest = dir.path().join("tls.out");
        recipient.download_to(&id, &dest).await.unwrap();
        assert!(std::fs::read(&dest).unwrap() == data);

        let no_client_cert = config(url, SENDER).with_ca_bundle(pki.path("ca.pem"));
        let err = MeshClient::new(no_client_cert.with_retries(0, Duration::ZERO))
            .unwrap()
            .handshake()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Transport { .. }), "{err:?}");
        let no_ca = config(url, SENDER)
            .with_client_certificate(pki.path("client.pem"), pki.path("client.key"))
            .with_retries(0, Duration::ZERO);
        let err = MeshClient::new(no_ca)
            .unwrap()
            .handshake()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    }

    /// Bad TLS material is a configuration error, reported before any request.
    #[test]
    fn unusable_tls_files_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let junk = write(dir.path(), "junk.pem", b"not a certificate");
        let err = MeshClient::new(config("https://127.0.0.1:1", SENDER).with_ca_bundle(&junk))
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        let err = MeshClient::new(
            config("https://127.0.0.1:1", SENDER).with_client_certificate(&junk, &junk),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
    }
}

mod mock {
    use super::*;

    every_scenario!(scenario_tests!(Mock));

    /// A download larger than the inbox writer's direct-I/O stage (4 MiB), in chunks whose
    /// borders are not block borders and with a tail that is not a whole block, plain and
    /// gzip'd: the file is exactly the bytes sent, private, and the tee saw them in order.
    #[tokio::test]
    async fn a_large_download_through_the_direct_path_is_the_bytes_sent() {
        let mock = Mock::start().await;
        let dir = tempfile::tempdir().unwrap();
        let data = content(5 * 1024 * 1024 + 4097 + 13);
        let path = write(dir.path(), "large.dat", &data);
        let (sender, recipient) = (client(mock.url(), SENDER), client(mock.url(), RECIPIENT));
        for compress in [false, true] {
            let opts = SendOptions {
                compress,
                chunk_size: Some(1_500_001),
                local_id: Some(format!("large-{compress}")),
                ..options(RECIPIENT)
            };
            let id = sender.send_file(&path, &opts, &|_| {}).await.unwrap();
            let dest = dir.path().join(format!("large-{compress}.out"));
            let (tee, mut pieces) = tokio::sync::mpsc::channel::<mesh_client::Piece>(16);
            let seen = tokio::spawn(async move {
                let mut seen = Vec::new();
                while let Some((at, piece)) = pieces.recv().await {
                    assert_eq!(at, seen.len() as u64, "pieces in order");
                    seen.extend_from_slice(&piece);
                }
                seen
            });
            let meta = recipient.download_to_tee(&id, &dest, tee).await.unwrap();
            assert_eq!((meta.chunks, meta.bytes), (4, data.len() as u64));
            assert!(std::fs::read(&dest).unwrap() == data, "download differs");
            assert!(seen.await.unwrap() == data, "tee differs");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600);
            }
            recipient.acknowledge(&id).await.unwrap();
        }
        mock.stop().await;
    }

    /// A submission to the INT POS mailbox draws two replies to the sender, both carrying its
    /// LocalId: the job-created JSON (`Mex-Subject: SUCCESS`) and the cleaned file, here cut
    /// into several chunks by the mock and reassembled by the client.
    #[tokio::test]
    async fn pos_replies_arrive_in_chunks_and_reassemble() {
        let mock = Mock::start_with(mock_mesh::Config {
            pos_chunk_bytes: 40,
            ..mock_mesh::Config::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        // two INT test patients with an opt-out, four without (ndop-domain.md section 4)
        let request = "9694116414,\r\n9694116538,\r\n9694116422,\r\n9694116546,\r\n\
                       9694116554,\r\n9694116562,\r\n";
        let path = write(dir.path(), "req.dat", request.as_bytes());
        let me = client(mock.url(), SENDER);
        let opts = SendOptions {
            to: mock_mesh::POS_INT_MAILBOX.into(),
            workflow_id: mock_mesh::POS_WORKFLOW.into(),
            subject: Some("req-1".into()),
            local_id: Some("req-1_abcd".into()),
            compress: true,
            ..SendOptions::default()
        };
        let sent = me.send_file(&path, &opts, &|_| {}).await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..200 {
            ids = me.list_inbox(Some(mock_mesh::POS_WORKFLOW)).await.unwrap();
            if ids.len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(ids.len(), 2, "job-created and result expected");
        let job = me
            .download_to(&ids[0], &dir.path().join("job.json"))
            .await
            .unwrap();
        assert_eq!(job.subject.as_deref(), Some("SUCCESS"));
        assert_eq!(job.local_id.as_deref(), Some("req-1_abcd"));
        assert_eq!(job.sender.as_deref(), Some(mock_mesh::POS_INT_MAILBOX));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("job.json")).unwrap()).unwrap();
        assert_eq!(json["status"], "pending");

        let dest = dir.path().join("result.dat");
        let result = me.download_to(&ids[1], &dest).await.unwrap();
        assert_eq!(result.local_id.as_deref(), Some("req-1_abcd"));
        assert_eq!(result.subject.as_deref(), Some("req-1"));
        assert_eq!(result.chunks, 2, "52 bytes in chunks of 40");
        assert_eq!(
            std::fs::read_to_string(&dest).unwrap(),
            "9694116538,\r\n9694116546,\r\n9694116554,\r\n9694116562,\r\n"
        );
        for id in &ids {
            me.acknowledge(id).await.unwrap();
        }
        assert!(me.list_inbox(None).await.unwrap().is_empty());
        assert_eq!(me.track(&sent).await.unwrap().status, "acknowledged");
        mock.stop().await;
    }
}
