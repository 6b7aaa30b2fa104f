//! Certificates for tests and local mTLS setups: a CA, a server certificate for `127.0.0.1`
//! and `localhost`, and a client certificate, made with `rcgen` and written as PEM files into a
//! directory ([`Pki::generate`]); plus, for negative tests, a second CA with a client
//! certificate of its own ([`OtherCa::generate`]). `mock-mesh serve --tls-generate DIR` uses
//! the first set.
//!
//! Nothing is ever overwritten: if any of the files already exists, nothing is written and the
//! error names the path. Private keys (`*.key`, PKCS#8) are created with mode `0600` on Unix.
//! These are throw-away certificates (ECDSA P-256, valid until 4096): never use them for
//! anything but testing.
//!
//! ```no_run
//! # fn demo() -> Result<(), mock_mesh::Error> {
//! let pki = mock_mesh::pki::Pki::generate(std::path::Path::new("certs"))?;
//! let config = mock_mesh::Config::default().with_tls(pki.tls_config(true)?);
//! // the client presents pki.client.cert / pki.client.key and trusts pki.ca
//! # Ok(()) }
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::error::Error;
use crate::tls::TlsConfig;

/// Subject common name of the CA of [`Pki`], and of [`OtherCa`] as well.
pub const CA_NAME: &str = "mock-mesh test CA";

/// Common name of the client certificates: a MESH client system name.
pub const CLIENT_NAME: &str = "SERVER001.X26.api.mesh-client.nhs.uk";

/// A certificate and its private key on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM certificate (`<name>.pem`).
    pub cert: PathBuf,
    /// PEM private key (`<name>.key`, mode `0600`).
    pub key: PathBuf,
}

/// A CA, a server certificate and a client certificate on disk (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pki {
    /// The CA certificate (`ca.pem`): clients trust it for the server, the server for clients.
    pub ca: PathBuf,
    /// Server certificate for `127.0.0.1` and `localhost` (`server.pem`, `server.key`).
    pub server: CertFiles,
    /// Client certificate for [`CLIENT_NAME`] (`client.pem`, `client.key`).
    pub client: CertFiles,
}

/// A second CA, unrelated to the one of [`Pki`] although it has the same name ([`CA_NAME`]):
/// only its key tells it apart. For negative tests: a server requiring clients of [`Pki::ca`]
/// refuses [`OtherCa::client`], and a client trusting [`OtherCa::ca`] refuses the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherCa {
    /// The CA certificate (`other-ca.pem`).
    pub ca: PathBuf,
    /// Client certificate for [`CLIENT_NAME`] (`other-client.pem`, `other-client.key`).
    pub client: CertFiles,
}

impl Pki {
    /// Writes `ca.pem`, `server.pem`, `server.key`, `client.pem` and `client.key` into `dir`
    /// (created if missing). Refuses, writing nothing, if any of them exists.
    pub fn generate(dir: &Path) -> Result<Pki, Error> {
        let pki = Pki {
            ca: dir.join("ca.pem"),
            server: CertFiles::named(dir, "server"),
            client: CertFiles::named(dir, "client"),
        };
        let (server, client) = (&pki.server, &pki.client);
        let paths = [
            &pki.ca,
            &server.cert,
            &server.key,
            &client.cert,
            &client.key,
        ];
        check_absent(dir, &paths.map(PathBuf::as_path))?;
        let ca = Ca::new()?;
        let server_cert = ca.issue("localhost", &["127.0.0.1", "localhost"], Purpose::Server)?;
        let client_cert = ca.issue(CLIENT_NAME, &[], Purpose::Client)?;
        write_new(&pki.ca, &ca.cert.pem(), false)?;
        write_pair(server, &server_cert)?;
        write_pair(client, &client_cert)?;
        Ok(pki)
    }

    /// The server's TLS settings; `mutual`: clients must present a certificate of this CA.
    pub fn tls_config(&self, mutual: bool) -> Result<TlsConfig, Error> {
        let client_ca = mutual.then_some(self.ca.as_path());
        TlsConfig::from_files(&self.server.cert, &self.server.key, client_ca)
    }
}

impl OtherCa {
    /// Writes `other-ca.pem`, `other-client.pem` and `other-client.key` into `dir` (created if
    /// missing). Refuses, writing nothing, if any of them exists.
    pub fn generate(dir: &Path) -> Result<OtherCa, Error> {
        let other = OtherCa {
            ca: dir.join("other-ca.pem"),
            client: CertFiles::named(dir, "other-client"),
        };
        let paths = [&other.ca, &other.client.cert, &other.client.key];
        check_absent(dir, &paths.map(PathBuf::as_path))?;
        let ca = Ca::new()?;
        let client = ca.issue(CLIENT_NAME, &[], Purpose::Client)?;
        write_new(&other.ca, &ca.cert.pem(), false)?;
        write_pair(&other.client, &client)?;
        Ok(other)
    }
}

impl CertFiles {
    fn named(dir: &Path, name: &str) -> CertFiles {
        CertFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }
}

/// A CA that can issue certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

enum Purpose {
    Server,
    Client,
}

/// An issued certificate and its key, as PEM text.
struct Issued {
    cert_pem: String,
    key_pem: String,
}

fn generation_error(e: rcgen::Error) -> Error {
    Error::Tls {
        what: "certificate generation".into(),
        message: e.to_string(),
    }
}

impl Ca {
    /// Two CAs made here have the same name but different keys, so one cannot stand in for
    /// the other.
    fn new() -> Result<Ca, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generation_error)?;
        params.distinguished_name.push(DnType::CommonName, CA_NAME);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(generation_error)?;
        let cert = params.self_signed(&key).map_err(generation_error)?;
        Ok(Ca { cert, key })
    }

    /// A leaf certificate for `cn` with these subject alternative names (IP addresses or DNS
    /// names), signed by this CA.
    fn issue(&self, cn: &str, sans: &[&str], purpose: Purpose) -> Result<Issued, Error> {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).map_err(generation_error)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![match purpose {
            Purpose::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Purpose::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        let key = KeyPair::generate().map_err(generation_error)?;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(generation_error)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Creates `dir` and checks that none of `paths` exists yet, so that a refusal writes nothing.
fn check_absent(dir: &Path, paths: &[&Path]) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::io(dir, source))?;
    match paths.iter().find(|p| p.symlink_metadata().is_ok()) {
        Some(path) => Err(exists(path)),
        None => Ok(()),
    }
}

fn write_pair(files: &CertFiles, issued: &Issued) -> Result<(), Error> {
    write_new(&files.cert, &issued.cert_pem, false)?;
    write_new(&files.key, &issued.key_pem, true)
}

/// Creates `path` (never replacing a file, even one that appeared since the check) and writes
/// `text`; a private key gets mode `0600` from the start.
fn write_new(path: &Path, text: &str, private: bool) -> Result<(), Error> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let io = |source| Error::io(path, source);
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => exists(path),
        _ => io(e),
    })?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

fn exists(path: &Path) -> Error {
    Error::Exists {
        path: path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_set_and_loads_as_mutual_tls() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs"); // created on the way
        let pki = Pki::generate(&dir).unwrap();
        for path in [&pki.ca, &pki.server.cert, &pki.client.cert] {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{text}");
        }
        for path in [&pki.server.key, &pki.client.key] {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"));
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", path.display());
            }
        }
        assert!(pki.tls_config(true).unwrap().requires_client_certificate());
        assert!(!pki.tls_config(false).unwrap().requires_client_certificate());
        let other = OtherCa::generate(&dir).unwrap();
        assert_ne!(
            std::fs::read(&other.ca).unwrap(),
            std::fs::read(&pki.ca).unwrap()
        );
    }

    #[test]
    fn refuses_to_overwrite_and_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let existing = dir.join("client.key");
        std::fs::write(&existing, "mine").unwrap();
        let e = Pki::generate(dir).unwrap_err().to_string();
        assert!(
            e.contains(&existing.display().to_string()) && e.contains("already exists"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&existing).unwrap(), "mine");
        let names: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // a second run over a complete set is refused at the first file
        let other = OtherCa::generate(dir).unwrap();
        let e = OtherCa::generate(dir).unwrap_err().to_string();
        assert!(e.contains(&other.ca.display().to_string()), "{e}");
    }
}
