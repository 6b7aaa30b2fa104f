//! TLS and mutual TLS of the server: a real listener on `127.0.0.1:0`, certificates made at
//! test time with `rcgen` and written to disk, real TLS clients (reqwest with rustls) and the
//! `mock-mesh` binary itself for the command-line flags.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mock_mesh::pki::{CertFiles, OtherCa, Pki};
use mock_mesh::{Config, MockMesh, TlsConfig};

const PING: &str = "/messageexchange/_ping";

/// Everything on disk (`mock_mesh::pki`): the CA, a server certificate for 127.0.0.1/localhost,
/// a client certificate from the CA, and another CA of the same name with a client certificate.
struct Certs {
    dir: tempfile::TempDir,
    pki: Pki,
    other: OtherCa,
}

impl Certs {
    fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::generate(dir.path()).unwrap();
        let other = OtherCa::generate(dir.path()).unwrap();
        Certs { dir, pki, other }
    }

    /// Fresh certificates and a server on 127.0.0.1:0 using them; `mutual`: a client
    /// certificate from the CA is required.
    async fn serve(mutual: bool) -> (Certs, MockMesh) {
        let c = Certs::new();
        let tls = c.pki.tls_config(mutual).unwrap();
        let mesh = MockMesh::start(Config::default().with_tls(tls)).await;
        (c, mesh.unwrap())
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// A rustls HTTP client trusting only this CA, with this client certificate if any.
fn https_client(ca: &Path, identity: Option<&CertFiles>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap())
        .timeout(Duration::from_secs(20));
    if let Some(files) = identity {
        let mut pem = std::fs::read(&files.key).unwrap();
        pem.extend(std::fs::read(&files.cert).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

/// The error and all its sources on one line.
fn chain(e: reqwest::Error) -> String {
    format!("{:#}", anyhow::Error::new(e))
}

/// GET `{base}/messageexchange/_ping` over HTTPS trusting `ca`, presenting `identity` if any:
/// the status, or the error chain.
async fn ping(base: &str, ca: &Path, identity: Option<&CertFiles>) -> Result<u16, String> {
    https_client(ca, identity)
        .get(format!("{base}{PING}"))
        .send()
        .await
        .map(|res| res.status().as_u16())
        .map_err(chain)
}

/// The ping is answered 200.
async fn assert_served(base: &str, ca: &Path, identity: Option<&CertFiles>) {
    assert_eq!(ping(base, ca, identity).await, Ok(200), "{base}");
}

/// The ping fails (no HTTP answer at all) with `why` in the error chain.
async fn assert_refused(base: &str, ca: &Path, identity: Option<&CertFiles>, why: &str) {
    match ping(base, ca, identity).await {
        Ok(status) => panic!("{base}: answered {status}, expected a TLS failure ({why})"),
        Err(chain) => assert!(chain.contains(why), "{chain}"),
    }
}

#[tokio::test]
async fn mutual_tls_serves_a_client_with_a_certificate_from_the_ca() {
    let (c, mesh) = Certs::serve(true).await;
    let base = mesh.base_url();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    assert_served(&base, &c.pki.ca, Some(&c.pki.client)).await;
    // by name too: the certificate names localhost as well as 127.0.0.1
    let port = mesh.local_addr().port();
    let by_name = format!("https://localhost:{port}");
    assert_served(&by_name, &c.pki.ca, Some(&c.pki.client)).await;
    mesh.stop().await;
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let (c, mesh) = Certs::serve(true).await;
    assert_refused(&mesh.base_url(), &c.pki.ca, None, "CertificateRequired").await;
    mesh.stop().await;
}

#[tokio::test]
async fn mutual_tls_refuses_a_certificate_from_another_ca() {
    let (c, mesh) = Certs::serve(true).await;
    let base = mesh.base_url();
    // same CA name, other key: the signature check fails on the server, which says so
    let rogue = Some(&c.other.client);
    assert_refused(&base, &c.pki.ca, rogue, "received fatal alert").await;
    // the right certificate still works on the same server
    assert_served(&base, &c.pki.ca, Some(&c.pki.client)).await;
    mesh.stop().await;
}

#[tokio::test]
async fn plain_http_to_the_tls_port_fails_and_the_server_carries_on() {
    let (c, mesh) = Certs::serve(true).await;
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let url = format!("http://{}{PING}", mesh.local_addr());
    // the server answers the HTTP request with TLS bytes (an alert), never with HTTP
    let err = plain.get(&url).send().await.unwrap_err();
    assert!(!err.is_timeout() && !err.is_connect(), "{}", chain(err));
    assert_served(&mesh.base_url(), &c.pki.ca, Some(&c.pki.client)).await;
    mesh.stop().await;
}

#[tokio::test]
async fn server_only_tls_needs_no_client_certificate_but_the_server_is_verified() {
    let (c, mesh) = Certs::serve(false).await;
    let base = mesh.base_url();
    assert_served(&base, &c.pki.ca, None).await;
    // a client that trusts another CA refuses our server; that CA has the same name, so it
    // is the signature check that fails
    assert_refused(&base, &c.other.ca, None, "BadSignature").await;
    mesh.stop().await;
}

#[test]
fn bad_pem_files_are_named_with_the_reason() {
    let c = Certs::new();
    let (cert, key) = (&c.pki.server.cert, &c.pki.server.key);
    let missing = c.dir.path().join("missing.pem");
    let garbage = c.file("garbage.pem", "not a certificate\n");
    let cut = c.file(
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
        (cert, &c.pki.client.key, None, "certificate", "does not fit"),
    ];
    for (crt, k, ca, what, why) in cases {
        let e = TlsConfig::from_files(crt, k, ca).unwrap_err().to_string();
        let path = match what {
            "certificate" => crt,
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
    let c = Certs::new();
    let (server, garbage) = (&c.pki.server, c.file("garbage.key", "hello\n"));
    let missing = c.dir.path().join("nope.pem");
    for (cert, key, ca, expect) in [
        (&server.cert, &garbage, None, garbage.display().to_string()),
        (&missing, &server.key, None, missing.display().to_string()),
        (
            &server.cert,
            &server.key,
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
        .arg(&server.cert)
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
        "--tls-generate <DIR>",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    for example in [
        "mock-mesh serve --tls-cert server.pem --tls-key server.key --tls-client-ca",
        "mock-mesh serve --memory --tls-generate /tmp/mesh-tls",
    ] {
        assert!(help.contains(example), "{example} missing from:\n{help}");
    }
}

/// Kills the child process on drop so a failing test leaves nothing running.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `mock-mesh serve --memory --listen 127.0.0.1:0` plus `args` until it logs that it
/// listens on https: the process, the base URL and the log lines up to that one.
async fn serve_https(args: &[&std::ffi::OsStr]) -> (Child, String, Vec<String>) {
    let mut child = Child(
        mock_mesh_bin()
            .args(["serve", "--memory", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (port, lines) = tokio::task::spawn_blocking(move || {
        let marker = "listening on https://127.0.0.1:";
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if let Some(i) = line.find(marker) {
                let digits: String = line[i + marker.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect();
                return (digits.parse::<u16>().unwrap(), lines);
            }
            lines.push(line);
        }
        panic!("mock-mesh exited without a listening line: {lines:#?}");
    })
    .await
    .unwrap();
    (child, format!("https://127.0.0.1:{port}"), lines)
}

#[tokio::test]
async fn cli_serves_mutual_tls() {
    let c = Certs::new();
    let (server, ca) = (&c.pki.server, c.pki.ca.as_os_str());
    let (_child, base, _) = serve_https(&[
        "--tls-cert".as_ref(),
        server.cert.as_os_str(),
        "--tls-key".as_ref(),
        server.key.as_os_str(),
        "--tls-client-ca".as_ref(),
        ca,
    ])
    .await;
    assert_served(&base, &c.pki.ca, Some(&c.pki.client)).await;
    assert_refused(&base, &c.pki.ca, None, "CertificateRequired").await;
}

#[tokio::test]
async fn cli_tls_generate_writes_certificates_and_serves_mutual_tls_with_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    let (_child, base, log) = serve_https(&["--tls-generate".as_ref(), dir.as_os_str()]).await;
    // the files the client should use are named in the log; no key material is
    let files = Pki {
        ca: dir.join("ca.pem"),
        server: CertFiles {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        },
        client: CertFiles {
            cert: dir.join("client.pem"),
            key: dir.join("client.key"),
        },
    };
    let log = log.join("\n");
    for path in [&files.ca, &files.client.cert, &files.client.key] {
        assert!(path.is_file(), "{}", path.display());
        assert!(log.contains(&path.display().to_string()), "{log}");
    }
    assert!(files.server.cert.is_file() && files.server.key.is_file());
    assert!(!log.contains("PRIVATE KEY"), "{log}");
    // mutual TLS with the generated set: its client certificate is served, none is refused,
    // and so is one from another CA
    assert_served(&base, &files.ca, Some(&files.client)).await;
    assert_refused(&base, &files.ca, None, "CertificateRequired").await;
    let other = OtherCa::generate(tmp.path()).unwrap();
    assert_refused(
        &base,
        &files.ca,
        Some(&other.client),
        "received fatal alert",
    )
    .await;
    // a client trusting another CA refuses the server
    assert_refused(&base, &other.ca, Some(&files.client), "BadSignature").await;

    // the same directory again: refused, naming the first existing file, nothing changed
    let before = std::fs::read(&files.client.key).unwrap();
    let out = mock_mesh_bin()
        .args([
            "serve",
            "--memory",
            "--listen",
            "127.0.0.1:0",
            "--tls-generate",
        ])
        .arg(&dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expect = format!(
        "mock-mesh: {}: already exists; not overwritten",
        files.ca.display()
    );
    assert!(stderr.contains(&expect), "{stderr}");
    assert_eq!(stderr.matches("already exists").count(), 1, "{stderr}");
    assert_eq!(std::fs::read(&files.client.key).unwrap(), before);

    // it makes its own certificates: with --tls-cert and the like it is a usage error
    let out = mock_mesh_bin()
        .args(["serve", "--tls-generate"])
        .arg(&dir)
        .arg("--tls-client-ca")
        .arg(&files.ca)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-generate"));
}

#[tokio::test]
async fn the_ndop_fhir_api_is_behind_the_same_mutual_tls() {
    let (c, mesh) = Certs::serve(true).await;
    let url = format!("{}/STU3/metadata", mesh.base_url());
    let without = https_client(&c.pki.ca, None).get(&url).send().await;
    assert!(chain(without.unwrap_err()).contains("CertificateRequired"));
    // with the client certificate the API answers (here: 400, no Spine headers)
    let with = https_client(&c.pki.ca, Some(&c.pki.client))
        .get(&url)
        .header("accept", "application/fhir+json")
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 400);
    let body: serde_json::Value = with.json().await.unwrap();
    assert_eq!(body["resourceType"], "OperationOutcome");
    mesh.stop().await;
}
