//! [`MeshClient`]: the HTTP plumbing shared by every endpoint, plus the handshake.
//!
//! Every request gets a fresh `Authorization` token (section 3) and asks for the v2 API with
//! `Accept: application/vnd.mesh.v2+json` (section 4). Requests that are safe to repeat are
//! retried with exponential backoff on connection errors, 5xx, 425 and 429, like NHS England's
//! client; the first `POST …/outbox` of a message is never retried because MESH cannot tell a
//! repeat from a second message (section 13). Redirects are not followed, so credentials never
//! travel to another host.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT};
use reqwest::{Method, RequestBuilder, Response};
use url::Url;

use crate::auth::Authenticator;
use crate::error::MeshErrorDetail;
use crate::{ClientConfig, Error};

/// The v2 API media type (section 4).
const ACCEPT_V2: &str = "application/vnd.mesh.v2+json";
/// Longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A client for one MESH mailbox. Cheap to share by reference across tasks; all methods take
/// `&self` and return `Send` futures.
#[derive(Debug)]
pub struct MeshClient {
    pub(crate) http: reqwest::Client,
    base: Url,
    auth: Authenticator,
    pub(crate) config: ClientConfig,
}

impl MeshClient {
    /// Validates `config`, loads the TLS material it names and builds the HTTP client.
    /// No request is made; call [`handshake`](MeshClient::handshake) to check the mailbox.
    pub fn new(config: ClientConfig) -> Result<MeshClient, Error> {
        let base = config.validate()?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(ACCEPT_V2));
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .min_tls_version(reqwest::tls::Version::TLS_1_2)
            .default_headers(headers)
            .user_agent(user_agent(config.application_name.as_deref()))
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(30)))
            .redirect(reqwest::redirect::Policy::none())
            // Content-Encoding is handled per chunk by the download code (section 8).
            .no_gzip();
        if let Some((cert, key)) = &config.client_cert {
            // rustls wants one PEM holding the private key and the certificate chain.
            let mut pem = read_pem(key)?;
            pem.push(b'\n');
            pem.extend(read_pem(cert)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                Error::Config(format!(
                    "client certificate {} / key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
            builder = builder.identity(identity);
        }
        if let Some(ca) = &config.ca_bundle {
            let certs = reqwest::Certificate::from_pem_bundle(&read_pem(ca)?)
                .map_err(|e| Error::Config(format!("CA bundle {}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(Error::Config(format!(
                    "CA bundle {} holds no certificate",
                    ca.display()
                )));
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        let auth = Authenticator::new(&config.mailbox, &config.password, &config.shared_key);
        Ok(MeshClient {
            http,
            base,
            auth,
            config,
        })
    }

    /// The mailbox this client acts for.
    pub fn mailbox(&self) -> &str {
        &self.config.mailbox
    }

    /// Validates the mailbox and credentials (`POST /messageexchange/{mailbox}`, section 5.1).
    /// The spec asks for one handshake a day. A wrong password or shared key gives
    /// [`Error::Api`] with status 403.
    pub async fn handshake(&self) -> Result<(), Error> {
        let url = self.endpoint(&[self.mailbox()]);
        let mut attempt = 0;
        loop {
            let request = self
                .request(Method::POST, url.clone())
                .header(
                    "mex-ClientVersion",
                    concat!("mesh-client-rs==", env!("CARGO_PKG_VERSION")),
                )
                .header("mex-OSArchitecture", std::env::consts::ARCH)
                .header("mex-OSName", os_name())
                .header("mex-OSVersion", os_version())
                .header("mex-JavaVersion", "N/A")
                .body(Vec::new());
            match self.execute(request, &describe(&Method::POST, &url)).await {
                Ok(_) => return Ok(()),
                Err(e) if self.should_retry(&e, &mut attempt).await => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// `{base}/messageexchange/{segments…}`, each segment percent-encoded.
    pub(crate) fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("validate() rejects URLs that cannot be a base")
            .pop_if_empty()
            .push("messageexchange")
            .extend(segments);
        url
    }

    /// Resolves a `links.next` of an inbox page (a root-relative path, section 5.4), refusing
    /// links to another origin so the credentials stay with the configured server.
    pub(crate) fn follow_link(&self, link: &str) -> Result<Url, Error> {
        let url = if link.starts_with('/') {
            // As NHS England's client: base URL + link (keeps a reverse-proxy path prefix).
            Url::parse(&format!(
                "{}{link}",
                self.base.as_str().trim_end_matches('/')
            ))
        } else {
            Url::parse(link)
        };
        match url {
            Ok(url) if url.origin() == self.base.origin() => Ok(url),
            _ => Err(Error::Protocol {
                request: "GET inbox".into(),
                reason: format!("unusable links.next {link:?}"),
            }),
        }
    }

    /// A request with a fresh auth token (the `Accept` header is a client default).
    pub(crate) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.http
            .request(method, url)
            .header(reqwest::header::AUTHORIZATION, self.auth.header())
    }

    /// Sends one request (no retry) and turns a non-2xx answer into [`Error::Api`].
    pub(crate) async fn execute(
        &self,
        request: RequestBuilder,
        what: &str,
    ) -> Result<Response, Error> {
        let response = request.send().await.map_err(|source| Error::Transport {
            request: what.to_owned(),
            source,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        let mesh = MeshErrorDetail::parse(&body);
        tracing::debug!(
            request = what,
            status = status.as_u16(),
            "MESH error response"
        );
        Err(Error::Api {
            request: what.to_owned(),
            status: status.as_u16(),
            mesh,
        })
    }

    /// `GET url` and parse the JSON body as `T`, retried (every GET is safe to repeat).
    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &Url,
    ) -> Result<T, Error> {
        let what = describe(&Method::GET, url);
        let mut attempt = 0;
        loop {
            let result = async {
                let response = self
                    .execute(self.request(Method::GET, url.clone()), &what)
                    .await?;
                let body = response.bytes().await.map_err(|source| Error::Transport {
                    request: what.clone(),
                    source,
                })?;
                serde_json::from_slice::<T>(&body).map_err(|e| Error::Protocol {
                    request: what.clone(),
                    reason: format!("response body: {e}"),
                })
            }
            .await;
            match result {
                Err(e) if self.should_retry(&e, &mut attempt).await => continue,
                done => return done,
            }
        }
    }

    /// After a failed attempt of a request that is safe to repeat: if `err` is transient and
    /// attempts remain, sleeps the backoff and returns `true`.
    pub(crate) async fn should_retry(&self, err: &Error, attempt: &mut u32) -> bool {
        if !err.is_transient() || *attempt >= self.config.retries {
            return false;
        }
        *attempt += 1;
        let delay = self
            .config
            .backoff
            .saturating_mul(1 << (*attempt - 1).min(16))
            .min(MAX_BACKOFF);
        tracing::debug!(attempt = *attempt, delay_ms = delay.as_millis() as u64, error = %err, "retrying");
        tokio::time::sleep(delay).await;
        true
    }
}

/// `METHOD /path` for error messages and logs (no query string: it may hold ids only, but
/// paths are enough to identify the call).
pub(crate) fn describe(method: &Method, url: &Url) -> String {
    format!("{method} {}", url.path())
}

fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// `[app;]mesh-client-rs;version;N/A;arch;os;os version`, the shape of NHS England's client.
fn user_agent(application: Option<&str>) -> String {
    let ours = format!(
        "mesh-client-rs;{};N/A;{};{};{}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        os_name(),
        os_version()
    );
    match application {
        Some(app) if !app.is_empty() => format!("{app};{ours}"),
        _ => ours,
    }
}

/// `Linux`, `Macos`, `Windows`, … (the capitalised `std::env::consts::OS`).
fn os_name() -> String {
    let os = std::env::consts::OS;
    let mut chars = os.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => "unknown".to_owned(),
    }
}

/// The kernel release where it is cheap to know, else `N/A`.
fn os_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "N/A".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(url: &str) -> MeshClient {
        MeshClient::new(
            ClientConfig::default()
                .with_url(url)
                .with_mailbox("X26ABC1", "password")
                .with_shared_key("TestKey"),
        )
        .unwrap()
    }

    #[test]
    fn endpoints_are_built_under_the_base_and_encoded() {
        let c = client("http://127.0.0.1:8700");
        assert_eq!(
            c.endpoint(&["X26ABC1", "inbox", "A/B"]).as_str(),
            "http://127.0.0.1:8700/messageexchange/X26ABC1/inbox/A%2FB"
        );
        let c = client("https://proxy.example/mesh/");
        assert_eq!(
            c.endpoint(&["X26ABC1"]).as_str(),
            "https://proxy.example/mesh/messageexchange/X26ABC1"
        );
    }

    #[test]
    fn next_links_stay_on_the_same_origin() {
        let c = client("http://127.0.0.1:8700");
        assert_eq!(
            c.follow_link("/messageexchange/X26ABC2/inbox?max_results=10&continue_from=x%3D")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8700/messageexchange/X26ABC2/inbox?max_results=10&continue_from=x%3D"
        );
        assert!(c.follow_link("http://127.0.0.1:8700/m").is_ok());
        assert!(c.follow_link("http://evil.example/m").is_err());
        assert!(c.follow_link("https://127.0.0.1:8700/m").is_err());
    }

    #[test]
    fn user_agent_names_the_application() {
        assert!(user_agent(Some("ndop")).starts_with("ndop;mesh-client-rs;"));
        assert!(user_agent(None).starts_with("mesh-client-rs;"));
    }

    #[test]
    fn missing_tls_files_are_reported_with_their_path() {
        let err = MeshClient::new(
            ClientConfig::default()
                .with_mailbox("X26ABC1", "password")
                .with_shared_key("TestKey")
                .with_ca_bundle("/nonexistent/ca.pem"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    /// A loopback port with nothing listening: every connection is refused.
    fn dead_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://127.0.0.1:{port}")
    }

    fn dead_client(retries: u32, backoff_ms: u64) -> MeshClient {
        MeshClient::new(
            ClientConfig::default()
                .with_url(dead_url())
                .with_mailbox("X26ABC1", "password")
                .with_shared_key("TestKey")
                .with_retries(retries, Duration::from_millis(backoff_ms)),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn safe_requests_are_retried_with_growing_backoff() {
        let c = dead_client(2, 100);
        let started = std::time::Instant::now();
        let err = c.handshake().await.unwrap_err();
        assert!(matches!(err, Error::Transport { .. }), "{err:?}");
        // 100 ms, then 200 ms
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        let started = std::time::Instant::now();
        assert!(dead_client(0, 1000).list_inbox(None).await.is_err());
        assert!(started.elapsed() < Duration::from_millis(900));
    }

    #[tokio::test]
    async fn the_first_chunk_of_a_send_is_never_retried() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.dat");
        std::fs::write(&path, b"payload").unwrap();
        let opts = crate::SendOptions {
            to: "X26ABC2".into(),
            workflow_id: "W".into(),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let err = dead_client(3, 1000)
            .send_file(&path, &opts, &|_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Transport { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_millis(900));
    }

    #[test]
    fn futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let c = client("http://127.0.0.1:1");
        let p = std::path::Path::new("x");
        let opts = crate::SendOptions::default();
        assert_send(&c.handshake());
        assert_send(&c.send_file(p, &opts, &|_| {}));
        assert_send(&c.resume_send(p, &opts, "M", 2, &|_| {}));
        assert_send(&c.list_inbox(None));
        assert_send(&c.head_message("M"));
        assert_send(&c.download_to("M", p));
        assert_send(&c.acknowledge("M"));
        assert_send(&c.track("M"));
        assert_send(&c.lookup_endpoint("X26", "W"));
    }
}
