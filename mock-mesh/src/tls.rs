//! TLS for the listener, optionally mutual: real MESH only talks to clients that present a
//! certificate issued for their system (`mesh-protocol.md` section 2), so with a client CA set
//! a connection without a certificate signed by that CA fails the handshake.
//!
//! rustls with the `ring` provider, the same crates `reqwest`'s `rustls-tls` already builds.
//! TLS 1.2 and 1.3 (mesh-client enforces at least 1.2). Plain HTTP stays the default.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::error::Error;

/// TLS settings of the listener: PEM text of the server certificate chain and key, and
/// optionally of the CA(s) that must have issued every client's certificate.
///
/// ```no_run
/// # fn demo() -> Result<(), mock_mesh::Error> {
/// use std::path::Path;
/// let tls = mock_mesh::TlsConfig::from_files(
///     Path::new("server.pem"),
///     Path::new("server.key"),
///     Some(Path::new("client-ca.pem")), // mutual TLS: a client certificate is required
/// )?;
/// let config = mock_mesh::Config::default().with_tls(tls);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    cert_chain_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_ca_pem: Option<Vec<u8>>,
    /// Where each PEM came from, for error messages (`None`: given in memory).
    sources: [Option<PathBuf>; 3],
}

/// Which PEM an error is about.
#[derive(Clone, Copy)]
enum Part {
    Cert = 0,
    Key = 1,
    ClientCa = 2,
}

impl TlsConfig {
    /// Server-only TLS from PEM text: the certificate chain (leaf first) and its private key
    /// (PKCS#8, PKCS#1 or SEC1). Checked when the server starts.
    pub fn new(cert_chain_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> TlsConfig {
        TlsConfig {
            cert_chain_pem: cert_chain_pem.into(),
            key_pem: key_pem.into(),
            client_ca_pem: None,
            sources: [None, None, None],
        }
    }

    /// Mutual TLS: every client must present a certificate issued by one of the CA
    /// certificates in this PEM text, else the handshake fails.
    pub fn with_client_ca(mut self, client_ca_pem: impl Into<Vec<u8>>) -> TlsConfig {
        self.client_ca_pem = Some(client_ca_pem.into());
        self.sources[Part::ClientCa as usize] = None;
        self
    }

    /// Reads the PEM files and checks them now (certificates parse, the key parses and matches
    /// the leaf certificate); every error names the file and the reason.
    pub fn from_files(
        cert_chain: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<TlsConfig, Error> {
        let read = |part: Part, path: &Path| {
            std::fs::read(path).map_err(|e| Error::Tls {
                what: describe(part, Some(path)),
                message: format!("cannot read: {e}"),
            })
        };
        let mut tls = TlsConfig::new(read(Part::Cert, cert_chain)?, read(Part::Key, key)?);
        tls.sources[Part::Cert as usize] = Some(cert_chain.to_path_buf());
        tls.sources[Part::Key as usize] = Some(key.to_path_buf());
        if let Some(ca) = client_ca {
            tls = tls.with_client_ca(read(Part::ClientCa, ca)?);
            tls.sources[Part::ClientCa as usize] = Some(ca.to_path_buf());
        }
        tls.server_config()?;
        Ok(tls)
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certificate(&self) -> bool {
        self.client_ca_pem.is_some()
    }

    fn error(&self, part: Part, message: impl Into<String>) -> Error {
        Error::Tls {
            what: describe(part, self.sources[part as usize].as_deref()),
            message: message.into(),
        }
    }

    /// The rustls configuration: TLS 1.2 and 1.3, ALPN `http/1.1`, and the client certificate
    /// verifier when a client CA is set (no certificate, or one from another CA, is refused).
    pub(crate) fn server_config(&self) -> Result<Arc<ServerConfig>, Error> {
        let provider = Arc::new(ring::default_provider());
        let chain = certificates(&self.cert_chain_pem).map_err(|m| self.error(Part::Cert, m))?;
        let key = private_key(&provider, &self.key_pem).map_err(|m| self.error(Part::Key, m))?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| self.error(Part::Cert, e.to_string()))?;
        let builder = match &self.client_ca_pem {
            None => builder.with_no_client_auth(),
            Some(pem) => {
                let mut roots = RootCertStore::empty();
                for ca in certificates(pem).map_err(|m| self.error(Part::ClientCa, m))? {
                    roots.add(ca).map_err(|e| {
                        self.error(Part::ClientCa, format!("not a usable CA certificate: {e}"))
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| self.error(Part::ClientCa, e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            let key = describe(Part::Key, self.sources[Part::Key as usize].as_deref());
            self.error(Part::Cert, format!("does not fit the {key}: {e}"))
        })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    pub(crate) fn acceptor(&self) -> Result<TlsAcceptor, Error> {
        Ok(TlsAcceptor::from(self.server_config()?))
    }
}

impl fmt::Debug for TlsConfig {
    /// The private key is never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field(
                "cert_chain_pem",
                &format_args!("<{} bytes>", self.cert_chain_pem.len()),
            )
            .field("key_pem", &"<redacted>")
            .field("client_ca", &self.client_ca_pem.is_some())
            .field("sources", &self.sources)
            .finish()
    }
}

fn describe(part: Part, path: Option<&Path>) -> String {
    let name = match part {
        Part::Cert => "certificate",
        Part::Key => "private key",
        Part::ClientCa => "client CA",
    };
    match path {
        Some(p) => format!("{name} {}", p.display()),
        None => format!("{name} PEM"),
    }
}

fn pem_reason(e: pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "not valid PEM: the -----END {}----- line is missing",
            String::from_utf8_lossy(&end_marker)
        ),
        pem::Error::IllegalSectionStart { .. } => "not valid PEM: malformed BEGIN line".into(),
        other => format!("not valid PEM: {other}"),
    }
}

/// Every `CERTIFICATE` block, in order; at least one.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_reason)?;
    if certs.is_empty() {
        return Err("no PEM CERTIFICATE block found".into());
    }
    Ok(certs)
}

/// The first private key block, loaded by the provider (so an unusable key fails here).
fn private_key(provider: &CryptoProvider, pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            "no PEM PRIVATE KEY block found (PKCS#8, RSA or EC)".to_string()
        }
        other => pem_reason(other),
    })?;
    provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| format!("unusable private key: {e}"))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_empty_pem_are_refused_with_the_part_named() {
        let e = TlsConfig::new("", "").server_config().unwrap_err();
        assert!(
            e.to_string()
                .contains("certificate PEM: no PEM CERTIFICATE block found"),
            "{e}"
        );
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n";
        let e = TlsConfig::new(cert, "").server_config().unwrap_err();
        assert!(e.to_string().contains("END CERTIFICATE"), "{e}");
    }

    #[test]
    fn debug_hides_the_key() {
        let tls = TlsConfig::new("CERT", "-----BEGIN PRIVATE KEY-----\nsekrit\n");
        let s = format!("{tls:?}");
        assert!(!s.contains("sekrit") && s.contains("redacted"), "{s}");
    }
}
