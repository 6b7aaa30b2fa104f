//! Client configuration: where MESH is, who we are, how to send.
//!
//! A [`ClientConfig`] starts from [`Default`] (INT environment, 75 MiB chunks like NHS
//! England's client, 3 retries, 600 s timeout) and is adjusted with `with_*` methods. It is
//! only checked when [`MeshClient::new`](crate::MeshClient::new) builds a client, so all
//! mistakes surface in one place as [`Error::Config`].

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use url::Url;

use crate::Error;

/// Base URL of the MESH integration (INT) environment (mesh-protocol.md section 2).
pub const INT_URL: &str = "https://msg.intspineservices.nhs.uk";
/// Base URL of the MESH production (LIVE) environment.
pub const LIVE_URL: &str = "https://mesh-sync.spineservices.nhs.uk";

/// Default chunk size: 75 MiB, as NHS England's `mesh-client` (section 7).
pub const DEFAULT_CHUNK_SIZE: u64 = 75 * 1024 * 1024;
/// Default gzip level of compressed chunks: 1. On `.dat` files (fixed-length lines) level 1 is
/// the line encoder of [`gzip`](crate::gzip): about the size of libdeflate's slowest level
/// (15.4 % of a national chunk) for under half the CPU of libdeflate's level 1
/// (`docs/PERFORMANCE.md`, "Sending at national scale"); on other content, libdeflate's 1.
pub const DEFAULT_COMPRESS_LEVEL: u32 = 1;
/// Largest request body MESH accepts: 100 MB (section 7); bigger chunk sizes are refused.
pub const MAX_CHUNK_SIZE: u64 = 100_000_000;

/// Which MESH to talk to.
///
/// The real environments require mutual TLS: set
/// [`ClientConfig::with_client_certificate`] (the certificate issued for the mailbox's system)
/// and [`ClientConfig::with_ca_bundle`] (NHS England's CA bundle for that environment, as
/// shipped with its Python client); this crate does not embed the bundles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Environment {
    /// The integration environment, [`INT_URL`].
    Int,
    /// Production, [`LIVE_URL`].
    Live,
    /// Any other base URL (a mock, the sandbox, a proxy). Plain `http` only for loopback hosts.
    Custom(String),
}

impl Environment {
    /// The base URL as a string.
    pub fn url(&self) -> &str {
        match self {
            Environment::Int => INT_URL,
            Environment::Live => LIVE_URL,
            Environment::Custom(url) => url,
        }
    }
}

impl FromStr for Environment {
    type Err = Error;

    /// `int`, `live` (any case) or a URL; the URL is validated by
    /// [`MeshClient::new`](crate::MeshClient::new).
    fn from_str(s: &str) -> Result<Environment, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "int" => Ok(Environment::Int),
            "live" => Ok(Environment::Live),
            "" => Err(Error::Config("empty environment".into())),
            _ => Ok(Environment::Custom(s.trim().to_owned())),
        }
    }
}

/// Everything [`MeshClient`](crate::MeshClient) needs; build it with the `with_*` methods.
///
/// ```
/// use mesh_client::{ClientConfig, Environment};
/// use std::time::Duration;
///
/// let config = ClientConfig::default()
///     .with_environment(Environment::Int)
///     .with_mailbox("X26ABC1", "s3cret")
///     .with_shared_key("TestKey")
///     .with_client_certificate("client.crt", "client.key")
///     .with_ca_bundle("nhs-int-ca-bundle.pem")
///     .with_chunk_size(20 * 1024 * 1024)
///     .with_retries(3, Duration::from_millis(500))
///     .with_application_name("ndop");
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct ClientConfig {
    pub(crate) environment: Environment,
    pub(crate) mailbox: String,
    pub(crate) password: String,
    pub(crate) shared_key: String,
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
    pub(crate) ca_bundle: Option<PathBuf>,
    pub(crate) chunk_size: u64,
    pub(crate) compress: bool,
    pub(crate) compress_level: u32,
    pub(crate) retries: u32,
    pub(crate) backoff: Duration,
    pub(crate) timeout: Duration,
    pub(crate) application_name: Option<String>,
    pub(crate) inbox_page_size: Option<u32>,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            environment: Environment::Int,
            mailbox: String::new(),
            password: String::new(),
            shared_key: String::new(),
            client_cert: None,
            ca_bundle: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            compress: false,
            compress_level: DEFAULT_COMPRESS_LEVEL,
            retries: 3,
            backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(600),
            application_name: None,
            inbox_page_size: None,
        }
    }
}

impl ClientConfig {
    /// Sets the environment (default [`Environment::Int`]).
    pub fn with_environment(mut self, environment: Environment) -> ClientConfig {
        self.environment = environment;
        self
    }

    /// Sets a custom base URL, e.g. `http://127.0.0.1:8700` for a local mock.
    pub fn with_url(self, url: impl Into<String>) -> ClientConfig {
        self.with_environment(Environment::Custom(url.into()))
    }

    /// Sets the mailbox id (upper-cased) and its password.
    pub fn with_mailbox(mut self, mailbox: impl Into<String>, password: impl Into<String>) -> Self {
        self.mailbox = mailbox.into().trim().to_ascii_uppercase();
        self.password = password.into();
        self
    }

    /// Sets the environment's shared secret, the HMAC key of the auth header.
    pub fn with_shared_key(mut self, shared_key: impl Into<String>) -> ClientConfig {
        self.shared_key = shared_key.into();
        self
    }

    /// Mutual TLS: PEM files of the client certificate (chain) and its private key.
    pub fn with_client_certificate(
        mut self,
        cert_pem: impl Into<PathBuf>,
        key_pem: impl Into<PathBuf>,
    ) -> ClientConfig {
        self.client_cert = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Trust only the CA certificates in this PEM bundle (e.g. NHS England's INT bundle)
    /// instead of the public web roots.
    pub fn with_ca_bundle(mut self, ca_pem: impl Into<PathBuf>) -> ClientConfig {
        self.ca_bundle = Some(ca_pem.into());
        self
    }

    /// Default chunk size for sends, in bytes of the uncompressed file (at most
    /// [`MAX_CHUNK_SIZE`]; default [`DEFAULT_CHUNK_SIZE`]).
    pub fn with_chunk_size(mut self, bytes: u64) -> ClientConfig {
        self.chunk_size = bytes;
        self
    }

    /// Gzip every chunk of every send (`Content-Encoding: gzip`, section 8); a message can also
    /// ask for it with [`SendOptions::compress`](crate::SendOptions::compress).
    pub fn with_compression(mut self, compress: bool) -> ClientConfig {
        self.compress = compress;
        self
    }

    /// Gzip level of compressed chunks, 0 to 9; default 1 ([`DEFAULT_COMPRESS_LEVEL`]). Each
    /// chunk is gzip'd whole ([`gzip`](crate::gzip)): 0 stores (gzip framing, no
    /// compression); 1 is the line encoder on content of fixed-length lines (`.dat` files:
    /// matches at the line length only; as small as 9 there and the fastest), else libdeflate's
    /// 1; 2–8 are libdeflate's levels of the same number; 9 is libdeflate's level 10, its
    /// near-optimal parser. On `.dat` files 1 is the best choice at any link speed: 2–9 are
    /// larger or no smaller, for 2–12 times its CPU.
    pub fn with_compression_level(mut self, level: u32) -> ClientConfig {
        self.compress_level = level;
        self
    }

    /// Retries for requests that are safe to repeat: `retries` more attempts after the first,
    /// sleeping `backoff`, 2×`backoff`, 4×`backoff`, … (capped at 60 s) in between.
    /// `retries = 0` disables retrying.
    pub fn with_retries(mut self, retries: u32, backoff: Duration) -> ClientConfig {
        self.retries = retries;
        self.backoff = backoff;
        self
    }

    /// Time limit of one HTTP request, body included (default 600 s).
    pub fn with_timeout(mut self, timeout: Duration) -> ClientConfig {
        self.timeout = timeout;
        self
    }

    /// Name of the application, put first in the `User-Agent`.
    pub fn with_application_name(mut self, name: impl Into<String>) -> ClientConfig {
        self.application_name = Some(name.into());
        self
    }

    /// Inbox page size asked for with `max_results` (10..=5000; default: the server's, 500).
    /// [`MeshClient::list_inbox`](crate::MeshClient::list_inbox) follows every page anyway.
    pub fn with_inbox_page_size(mut self, max_results: u32) -> ClientConfig {
        self.inbox_page_size = Some(max_results);
        self
    }

    /// The mailbox id this configuration authenticates as.
    pub fn mailbox(&self) -> &str {
        &self.mailbox
    }

    /// Checks everything that can be checked without I/O and returns the parsed base URL.
    pub(crate) fn validate(&self) -> Result<Url, Error> {
        let url = Url::parse(self.environment.url())
            .map_err(|e| Error::Config(format!("base URL {:?}: {e}", self.environment.url())))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                return Err(Error::Config(format!(
                    "plain http is only allowed to a loopback host, not {url}"
                )))
            }
            other => return Err(Error::Config(format!("unsupported URL scheme {other:?}"))),
        }
        if url.cannot_be_a_base() || url.query().is_some() || url.fragment().is_some() {
            return Err(Error::Config(format!("{url} cannot be a base URL")));
        }
        if self.mailbox.is_empty() || !self.mailbox.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Error::Config(format!(
                "mailbox id {:?} must be non-empty and alphanumeric",
                self.mailbox
            )));
        }
        if self.password.is_empty() {
            return Err(Error::Config("the mailbox password is empty".into()));
        }
        if self.shared_key.is_empty() {
            return Err(Error::Config("the shared key is empty".into()));
        }
        check_chunk_size(self.chunk_size)?;
        if self.compress_level > 9 {
            return Err(Error::Config(format!(
                "compression level {} is outside 0..=9",
                self.compress_level
            )));
        }
        if let Some(n) = self.inbox_page_size {
            if !(10..=5000).contains(&n) {
                return Err(Error::Config(format!(
                    "inbox page size {n} is outside 10..=5000"
                )));
            }
        }
        Ok(url)
    }
}

/// A chunk must hold at least one byte and at most [`MAX_CHUNK_SIZE`].
pub(crate) fn check_chunk_size(bytes: u64) -> Result<(), Error> {
    if bytes == 0 || bytes > MAX_CHUNK_SIZE {
        return Err(Error::Config(format!(
            "chunk size {bytes} is outside 1..={MAX_CHUNK_SIZE} bytes (MESH takes at most 100 MB per request)"
        )));
    }
    Ok(())
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

impl fmt::Debug for ClientConfig {
    /// Secrets are redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("environment", &self.environment)
            .field("mailbox", &self.mailbox)
            .field("password", &"<redacted>")
            .field("shared_key", &"<redacted>")
            .field("client_cert", &self.client_cert)
            .field("ca_bundle", &self.ca_bundle)
            .field("chunk_size", &self.chunk_size)
            .field("compress", &self.compress)
            .field("compress_level", &self.compress_level)
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("timeout", &self.timeout)
            .field("application_name", &self.application_name)
            .field("inbox_page_size", &self.inbox_page_size)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> ClientConfig {
        ClientConfig::default()
            .with_mailbox("x26abc1", "password")
            .with_shared_key("TestKey")
    }

    #[test]
    fn defaults_match_the_official_client() {
        let c = ClientConfig::default();
        assert_eq!(c.environment.url(), INT_URL);
        assert_eq!(c.chunk_size, 78_643_200);
        assert_eq!(c.retries, 3);
        assert_eq!(c.timeout, Duration::from_secs(600));
        assert_eq!(valid().mailbox(), "X26ABC1");
        assert!(valid().validate().is_ok());
    }

    #[test]
    fn environments_parse() {
        assert_eq!("INT".parse::<Environment>().unwrap(), Environment::Int);
        assert_eq!("live".parse::<Environment>().unwrap().url(), LIVE_URL);
        assert_eq!(
            "http://127.0.0.1:8700".parse::<Environment>().unwrap(),
            Environment::Custom("http://127.0.0.1:8700".into())
        );
        assert!("".parse::<Environment>().is_err());
    }

    #[test]
    fn plain_http_only_on_loopback() {
        for ok in [
            "http://127.0.0.1:8700",
            "http://localhost:1",
            "http://[::1]:9",
            "https://example.org/mesh/",
        ] {
            assert!(valid().with_url(ok).validate().is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1",
            "http://msg.intspineservices.nhs.uk",
            "ftp://127.0.0.1",
            "not a url",
            "https://h/?q=1",
        ] {
            assert!(
                matches!(valid().with_url(bad).validate(), Err(Error::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn chunk_size_and_credentials_are_checked() {
        assert!(valid().with_chunk_size(MAX_CHUNK_SIZE).validate().is_ok());
        assert!(valid()
            .with_chunk_size(MAX_CHUNK_SIZE + 1)
            .validate()
            .is_err());
        assert!(valid().with_chunk_size(0).validate().is_err());
        assert!(valid().with_compression_level(9).validate().is_ok());
        assert!(matches!(
            valid().with_compression_level(10).validate(),
            Err(Error::Config(m)) if m.contains("0..=9")
        ));
        assert!(valid().with_mailbox("", "pw").validate().is_err());
        assert!(valid().with_mailbox("X26:ABC", "pw").validate().is_err());
        assert!(valid().with_mailbox("X26ABC1", "").validate().is_err());
        assert!(valid().with_shared_key("").validate().is_err());
        assert!(valid().with_inbox_page_size(9).validate().is_err());
        assert!(valid().with_inbox_page_size(10).validate().is_ok());
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = ClientConfig::default()
            .with_mailbox("X26ABC1", "hunter2")
            .with_shared_key("sekrit");
        let s = format!("{c:?}");
        assert!(!s.contains("hunter2") && !s.contains("sekrit"), "{s}");
    }
}
