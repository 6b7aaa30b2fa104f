//! What every test file shares: a running server with a raw HTTP client ([`Mesh`]), the log
//! capture, and assertions on MESH error bodies and POS replies.
#![allow(dead_code)] // each test binary uses a different part of it

pub(crate) use std::io::Write;
pub(crate) use std::time::Duration;

pub(crate) use bytes::Bytes;
pub(crate) use flate2::write::GzEncoder;
pub(crate) use mock_mesh::auth::make_header;
pub(crate) use mock_mesh::{Clock, Config, MockMesh};
pub(crate) use reqwest::{Method, RequestBuilder, Response, StatusCode};
pub(crate) use serde_json::Value;

pub(crate) const V2: &str = "application/vnd.mesh.v2+json";
pub(crate) const V1: &str = "application/json";
pub(crate) const A: &str = "X26ABC1";
pub(crate) const B: &str = "X26ABC2";
pub(crate) const C: &str = "X26ABC3";
pub(crate) const POS_INT: &str = "X26OT154";
pub(crate) const POS_LIVE: &str = "X26HC065";

/// A running server plus a raw HTTP client (no automatic gzip) and the server's clock.
pub(crate) struct Mesh {
    pub(crate) server: MockMesh,
    pub(crate) http: reqwest::Client,
    pub(crate) clock: Clock,
    pub(crate) shared_key: String,
}

/// Everything every test's servers log (debug level), to check what never appears in it.
pub(crate) static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(crate) fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing_subscriber::fmt()
            .with_env_filter("mock_mesh=debug")
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .init();
    });
}

impl Mesh {
    pub(crate) async fn start(mut config: Config) -> Mesh {
        capture_logs();
        let clock = Clock::system();
        config.clock = clock.clone();
        let shared_key = config.shared_key.clone();
        let server = MockMesh::start(config).await.expect("server starts");
        let http = reqwest::Client::builder()
            .no_gzip()
            .build()
            .expect("client builds");
        Mesh {
            server,
            http,
            clock,
            shared_key,
        }
    }

    pub(crate) async fn default() -> Mesh {
        Mesh::start(Config::default()).await
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url())
    }

    /// A GET without credentials.
    pub(crate) fn get(&self, path: &str) -> RequestBuilder {
        self.http.get(self.url(path))
    }

    /// A fresh, valid token for `mailbox` (new nonce every time).
    pub(crate) fn token(&self, mailbox: &str, password: &str) -> String {
        let ts = self.clock.now().format("%Y%m%d%H%M").to_string();
        let nonce = uuid::Uuid::new_v4().to_string();
        make_header(&self.shared_key, mailbox, password, &nonce, 0, &ts)
    }

    /// An authenticated v2 request as `mailbox` (password `password`).
    pub(crate) fn req(&self, method: Method, path: &str, mailbox: &str) -> RequestBuilder {
        self.req_as(method, path, mailbox, V2)
    }

    /// An authenticated v1 request.
    pub(crate) fn req1(&self, method: Method, path: &str, mailbox: &str) -> RequestBuilder {
        self.req_as(method, path, mailbox, V1)
    }

    pub(crate) fn req_as(
        &self,
        method: Method,
        path: &str,
        mailbox: &str,
        accept: &str,
    ) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("authorization", self.token(mailbox, "password"))
            .header("accept", accept)
    }

    pub(crate) fn handshake(&self, mailbox: &str) -> RequestBuilder {
        self.handshake_as(mailbox, V2)
    }

    pub(crate) fn handshake_as(&self, mailbox: &str, accept: &str) -> RequestBuilder {
        self.req_as(
            Method::POST,
            &format!("/messageexchange/{mailbox}"),
            mailbox,
            accept,
        )
        .header("mex-clientversion", "tests==1")
        .header("mex-osname", "Linux")
        .header("mex-osversion", "6")
    }

    pub(crate) fn send(
        &self,
        from: &str,
        to: &str,
        body: impl Into<reqwest::Body>,
    ) -> RequestBuilder {
        self.send_wf(from, to, "TEST_WORKFLOW", body)
    }

    pub(crate) fn send_wf(
        &self,
        from: &str,
        to: &str,
        wf: &str,
        body: impl Into<reqwest::Body>,
    ) -> RequestBuilder {
        self.req(
            Method::POST,
            &format!("/messageexchange/{from}/outbox"),
            from,
        )
        .header("mex-to", to)
        .header("mex-workflowid", wf)
        .body(body)
    }

    pub(crate) async fn send_ok(&self, from: &str, to: &str, body: &'static [u8]) -> String {
        let r = self.send(from, to, body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        json(r).await["message_id"].as_str().unwrap().to_string()
    }

    pub(crate) async fn inbox(&self, mailbox: &str) -> Vec<String> {
        let r = self
            .req(
                Method::GET,
                &format!("/messageexchange/{mailbox}/inbox"),
                mailbox,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        ids(&json(r).await["messages"])
    }

    pub(crate) async fn download(&self, mailbox: &str, id: &str, chunk: Option<u32>) -> Response {
        let path = match chunk {
            None => format!("/messageexchange/{mailbox}/inbox/{id}"),
            Some(n) => format!("/messageexchange/{mailbox}/inbox/{id}/{n}"),
        };
        self.req(Method::GET, &path, mailbox).send().await.unwrap()
    }

    pub(crate) async fn ack(&self, mailbox: &str, id: &str) -> Response {
        let path = format!("/messageexchange/{mailbox}/inbox/{id}/status/acknowledged");
        self.req(Method::PUT, &path, mailbox).send().await.unwrap()
    }

    pub(crate) async fn track(&self, mailbox: &str, id: &str) -> Response {
        let path = format!("/messageexchange/{mailbox}/outbox/tracking?messageID={id}");
        self.req(Method::GET, &path, mailbox).send().await.unwrap()
    }

    /// Polls `mailbox`'s inbox until it holds at least `n` messages.
    ///
    /// Gives up after a minute: long enough for a POS job on a machine busy with the rest of
    /// the suite (a 5-second bound failed there), short of hanging a test that cannot pass.
    pub(crate) async fn wait_for(&self, mailbox: &str, n: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ids = self.inbox(mailbox).await;
            if ids.len() >= n {
                return ids;
            }
            if std::time::Instant::now() > deadline {
                panic!("{mailbox} never got {n} messages in 60 s");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

pub(crate) async fn json(r: Response) -> Value {
    let b = r.bytes().await.unwrap();
    serde_json::from_slice(&b)
        .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&b)))
}

pub(crate) fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

pub(crate) fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

/// Asserts a MESH v2 error body `{"detail":[{"event","code","msg"}]}`.
pub(crate) async fn assert_v2_error(r: Response, status: u16, event: &str, code: &str, msg: &str) {
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(header(&r, "content-type"), Some(V2));
    let v = json(r).await;
    let d = &v["detail"][0];
    assert_eq!(
        (d["event"].as_str(), d["code"].as_str(), d["msg"].as_str()),
        (Some(event), Some(code), Some(msg)),
        "{v}"
    );
}

/// Asserts the 410 of a message that is not (or no longer) downloadable.
pub(crate) async fn assert_gone(r: Response) {
    let msg = "Message no longer available for download";
    assert_v2_error(r, 410, "SEND", "Message already accepted", msg).await;
}

/// Asserts a MESH v1 error body `{"errorEvent","errorCode","errorDescription"}`.
pub(crate) async fn assert_v1_error(r: Response, status: u16, event: &str, code: &str, msg: &str) {
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(header(&r, "content-type"), Some(V1));
    let v = json(r).await;
    assert_eq!(
        (
            v["errorEvent"].as_str(),
            v["errorCode"].as_str(),
            v["errorDescription"].as_str()
        ),
        (Some(event), Some(code), Some(msg)),
        "{v}"
    );
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A body sent with `Transfer-Encoding: chunked` (no Content-Length), in small pieces.
pub(crate) fn streamed(data: Vec<u8>) -> reqwest::Body {
    let pieces: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(1000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(pieces))
}

// ---------------------------------------------------------------------------------------------
// The POS workflow
// ---------------------------------------------------------------------------------------------

pub(crate) fn patients(env: &str) -> Vec<(&'static str, bool)> {
    mock_mesh::pos::PUBLISHED_TEST_PATIENTS
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0] == env).then(|| (f[1], f[2] == "yes"))
        })
        .collect()
}

pub(crate) async fn submit(m: &Mesh, pos: &str, body: Vec<u8>, local_id: &str, gz: bool) -> String {
    let mut r = m
        .send_wf(
            A,
            pos,
            "SPINE_NTT_UPHOLDING",
            if gz { gzip(&body) } else { body },
        )
        .header("mex-localid", local_id)
        .header("mex-subject", local_id)
        .header("mex-filename", format!("{local_id}.dat"));
    if gz {
        r = r.header("content-encoding", "gzip");
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    json(r).await["message_id"].as_str().unwrap().to_string()
}

/// Downloads (whole, all chunks) and acknowledges a message; returns (headers of chunk 1, body).
pub(crate) async fn collect(
    m: &Mesh,
    mailbox: &str,
    id: &str,
) -> (reqwest::header::HeaderMap, Vec<u8>) {
    let r = m.download(mailbox, id, None).await;
    let headers = r.headers().clone();
    let total: u32 = header(&r, "mex-chunk-range")
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut body = r.bytes().await.unwrap().to_vec();
    for n in 2..=total {
        body.extend_from_slice(
            &m.download(mailbox, id, Some(n))
                .await
                .bytes()
                .await
                .unwrap(),
        );
    }
    assert_eq!(m.ack(mailbox, id).await.status(), StatusCode::OK);
    (headers, body)
}

pub(crate) fn h<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}
