//! TLS and mutual TLS of the server: a real listener on `127.0.0.1:0`, certificates made at
//! test time with `rcgen` and written to disk, real TLS clients (reqwest with rustls) and the
//! `mock-mesh` binary itself for the command-line flags.

use std::error::Error as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mock_mesh::{Config, MockMesh, TlsConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

const PING: &str = "/messageexchange/_ping";

/// A CA that can issue certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    /// Two CAs made with the same name still have different keys, so one cannot stand in for
    /// the other.
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// Writes a leaf certificate and its key as `<name>.pem` / `<name>.key`.
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
        let cert_path = dir.join(format!("{name}.pem"));
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

/// Everything on disk: the CA, a server certificate for 127.0.0.1/localhost, a client
/// certificate from the CA and one from another CA of the same name.
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
        let ca = Ca::new("mock-mesh test CA");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.cert.pem()).unwrap();
        let server = ca.issue(
            dir.path(),
            "server",
            "localhost",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client_cn = "SERVER001.X26.api.mesh-client.nhs.uk";
        let client = ca.issue(
            dir.path(),
            "client",
            client_cn,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let rogue = Ca::new("mock-mesh test CA");
        let rogue_client = rogue.issue(
            dir.path(),
            "rogue-client",
            client_cn,
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

    fn tls(&self, mutual: bool) -> TlsConfig {
        let ca = mutual.then_some(self.ca.as_path());
        TlsConfig::from_files(&self.server.0, &self.server.1, ca).unwrap()
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// A rustls HTTP client trusting only the test CA, with this client certificate if any.
fn https_client(ca: &Path, identity: Option<&(PathBuf, PathBuf)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap())
        .timeout(Duration::from_secs(20));
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(key).unwrap();
        pem.extend(std::fs::read(cert).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

/// The error and all its sources on one line.
fn chain(e: &reqwest::Error) -> String {
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
async fn mutual_tls_serves_a_client_with_a_certificate_from_the_ca() {
    let pki = Pki::new();
    let mesh = MockMesh::start(Config::default().with_tls(pki.tls(true)))
        .await
        .unwrap();
    let base = mesh.base_url();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let client = https_client(&pki.ca, Some(&pki.client));
    let res = client.get(format!("{base}{PING}")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    // by name too: the certificate names localhost as well as 127.0.0.1
    let port = mesh.local_addr().port();
    let res = client
        .get(format!("https://localhost:{port}{PING}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    mesh.stop().await;
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let pki = Pki::new();
    let mesh = MockMesh::start(Config::default().with_tls(pki.tls(true)))
        .await
        .unwrap();
    let err = https_client(&pki.ca, None)
        .get(format!("{}{PING}", mesh.base_url()))
        .send()
        .await
        .unwrap_err();
    let chain = chain(&err);
    assert!(chain.contains("CertificateRequired"), "{chain}");
    mesh.stop().await;
}

#[tokio::test]
async fn mutual_tls_refuses_a_certificate_from_another_ca() {
    let pki = Pki::new();
    let mesh = MockMesh::start(Config::default().with_tls(pki.tls(true)))
        .await
        .unwrap();
    let err = https_client(&pki.ca, Some(&pki.rogue_client))
        .get(format!("{}{PING}", mesh.base_url()))
        .send()
        .await
        .unwrap_err();
    let chain = chain(&err);
    // same CA name, other key: the signature check fails on the server, which says so
    assert!(chain.contains("received fatal alert"), "{chain}");
    // the right certificate still works on the same server
    let res = https_client(&pki.ca, Some(&pki.client))
        .get(format!("{}{PING}", mesh.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    mesh.stop().await;
}

#[tokio::test]
async fn plain_http_to_the_tls_port_fails_and_the_server_carries_on() {
    let pki = Pki::new();
    let mesh = MockMesh::start(Config::default().with_tls(pki.tls(true)))
        .await
        .unwrap();
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let url = format!("http://{}{PING}", mesh.local_addr());
    // the server answers the HTTP request with TLS bytes (an alert), never with HTTP
    let err = plain.get(&url).send().await.unwrap_err();
    assert!(!err.is_timeout() && !err.is_connect(), "{}", chain(&err));
    let res = https_client(&pki.ca, Some(&pki.client))
        .get(format!("{}{PING}", mesh.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    mesh.stop().await;
}

#[tokio::test]
async fn server_only_tls_needs_no_client_certificate_but_the_server_is_verified() {
    let pki = Pki::new();
    let mesh = MockMesh::start(Config::default().with_tls(pki.tls(false)))
        .await
        .unwrap();
    let url = format!("{}{PING}", mesh.base_url());
    let res = https_client(&pki.ca, None).get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    // a client that trusts another CA refuses our server
    let other = pki.file("other-ca.pem", &Ca::new("other").cert.pem());
    let err = https_client(&other, None)
        .get(&url)
        .send()
        .await
        .unwrap_err();
    let chain = chain(&err);
    assert!(chain.contains("UnknownIssuer"), "{chain}");
    mesh.stop().await;
}

#[test]
fn bad_pem_files_are_named_with_the_reason() {
    let pki = Pki::new();
    let (cert, key) = (&pki.server.0, &pki.server.1);
    let missing = pki.dir.path().join("missing.pem");
    let garbage = pki.file("garbage.pem", "not a certificate\n");
    let cut = pki.file(
        "cut.pem",
        "-----BEGIN CERTIFICATE-----\nMIIB\n", // no END line
    );
    let cases: [(&Path, &Path, Option<&Path>, &str, &str); 6] = [
        (&missing, key, None, "certificate", "cannot read"),
        (cert, &missing, None, "private key", "cannot read"),
        (
            &garbage,
            key,
            None,
            "certificate",
            "no PEM CERTIFICATE block",
        ),
        (
            cert,
            &garbage,
            None,
            "private key",
            "no PEM PRIVATE KEY block",
        ),
        (cert, key, Some(&cut), "client CA", "END CERTIFICATE"),
        (cert, &pki.client.1, None, "certificate", "does not fit"),
    ];
    for (c, k, ca, what, why) in cases {
        let e = TlsConfig::from_files(c, k, ca).unwrap_err().to_string();
        let path = match what {
            "certificate" => c,
            "private key" => k,
            _ => ca.unwrap(),
        };
        assert!(
            e.contains(&format!("TLS {what} {}", path.display())) && e.contains(why),
            "{e}"
        );
        assert!(!e.contains("PRIVATE KEY-----"), "{e}");
    }
}

fn mock_mesh_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mock-mesh"))
}

#[test]
fn cli_reports_unreadable_or_invalid_pem_and_exits_1() {
    let pki = Pki::new();
    let garbage = pki.file("garbage.key", "hello\n");
    let missing = pki.dir.path().join("nope.pem");
    for (cert, key, ca, expect) in [
        (&pki.server.0, &garbage, None, garbage.display().to_string()),
        (&missing, &pki.server.1, None, missing.display().to_string()),
        (
            &pki.server.0,
            &pki.server.1,
            Some(&garbage),
            "no PEM CERTIFICATE block".to_string(),
        ),
    ] {
        let mut cmd = mock_mesh_bin();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(cert)
            .arg("--tls-key")
            .arg(key);
        if let Some(ca) = ca {
            cmd.arg("--tls-client-ca").arg(ca);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("mock-mesh: TLS ") && stderr.contains(&expect),
            "{stderr}"
        );
    }
    // half a pair is a usage error
    let out = mock_mesh_bin()
        .args(["serve", "--tls-cert"])
        .arg(&pki.server.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}

#[test]
fn cli_help_documents_the_tls_flags_with_an_example() {
    let out = mock_mesh_bin().args(["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--tls-cert <FILE>",
        "--tls-key <FILE>",
        "--tls-client-ca <FILE>",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    assert!(
        help.contains("mock-mesh serve --tls-cert server.pem --tls-key server.key --tls-client-ca")
    );
}

/// Kills the child process on drop so a failing test leaves nothing running.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn cli_serves_mutual_tls() {
    let pki = Pki::new();
    let mut child = Child(
        mock_mesh_bin()
            .args(["serve", "--memory", "--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(&pki.server.0)
            .arg("--tls-key")
            .arg(&pki.server.1)
            .arg("--tls-client-ca")
            .arg(&pki.ca)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let port = tokio::task::spawn_blocking(move || {
        let marker = "listening on https://127.0.0.1:";
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if let Some(i) = line.find(marker) {
                let digits: String = line[i + marker.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect();
                return digits.parse::<u16>().unwrap();
            }
        }
        panic!("mock-mesh exited without a listening line");
    })
    .await
    .unwrap();
    let url = format!("https://127.0.0.1:{port}{PING}");
    let res = https_client(&pki.ca, Some(&pki.client))
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let err = https_client(&pki.ca, None)
        .get(&url)
        .send()
        .await
        .unwrap_err();
    assert!(
        chain(&err).contains("CertificateRequired"),
        "{}",
        chain(&err)
    );
}
