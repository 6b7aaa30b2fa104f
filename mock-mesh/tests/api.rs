//! Integration tests of `mock-mesh` over loopback HTTP with a real client (reqwest): every
//! endpoint, the error paths of `mesh-protocol.md` §10.2, the real-MESH lifecycle (no download
//! after acknowledge, 5-day expiry with a non-delivery report), restart recovery of the disk
//! store, concurrent senders, and the POS workflow (`ndop-domain.md` §2.3, §3, §4).

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use flate2::write::GzEncoder;
use mock_mesh::auth::make_header;
use mock_mesh::{Clock, Config, MockMesh};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

const V2: &str = "application/vnd.mesh.v2+json";
const V1: &str = "application/json";
const A: &str = "X26ABC1";
const B: &str = "X26ABC2";
const C: &str = "X26ABC3";
const POS_INT: &str = "X26OT154";
const POS_LIVE: &str = "X26HC065";

/// A running server plus a raw HTTP client (no automatic gzip) and the server's clock.
struct Mesh {
    server: MockMesh,
    http: reqwest::Client,
    clock: Clock,
    shared_key: String,
}

/// Everything every test's servers log (debug level), to check what never appears in it.
static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

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

fn capture_logs() {
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
    async fn start(mut config: Config) -> Mesh {
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

    async fn default() -> Mesh {
        Mesh::start(Config::default()).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url())
    }

    /// A GET without credentials.
    fn get(&self, path: &str) -> RequestBuilder {
        self.http.get(self.url(path))
    }

    /// A fresh, valid token for `mailbox` (new nonce every time).
    fn token(&self, mailbox: &str, password: &str) -> String {
        let ts = self.clock.now().format("%Y%m%d%H%M").to_string();
        let nonce = uuid::Uuid::new_v4().to_string();
        make_header(&self.shared_key, mailbox, password, &nonce, 0, &ts)
    }

    /// An authenticated v2 request as `mailbox` (password `password`).
    fn req(&self, method: Method, path: &str, mailbox: &str) -> RequestBuilder {
        self.req_as(method, path, mailbox, V2)
    }

    /// An authenticated v1 request.
    fn req1(&self, method: Method, path: &str, mailbox: &str) -> RequestBuilder {
        self.req_as(method, path, mailbox, V1)
    }

    fn req_as(&self, method: Method, path: &str, mailbox: &str, accept: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("authorization", self.token(mailbox, "password"))
            .header("accept", accept)
    }

    fn handshake(&self, mailbox: &str) -> RequestBuilder {
        self.handshake_as(mailbox, V2)
    }

    fn handshake_as(&self, mailbox: &str, accept: &str) -> RequestBuilder {
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

    fn send(&self, from: &str, to: &str, body: impl Into<reqwest::Body>) -> RequestBuilder {
        self.send_wf(from, to, "TEST_WORKFLOW", body)
    }

    fn send_wf(
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

    async fn send_ok(&self, from: &str, to: &str, body: &'static [u8]) -> String {
        let r = self.send(from, to, body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        json(r).await["message_id"].as_str().unwrap().to_string()
    }

    async fn inbox(&self, mailbox: &str) -> Vec<String> {
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

    async fn download(&self, mailbox: &str, id: &str, chunk: Option<u32>) -> Response {
        let path = match chunk {
            None => format!("/messageexchange/{mailbox}/inbox/{id}"),
            Some(n) => format!("/messageexchange/{mailbox}/inbox/{id}/{n}"),
        };
        self.req(Method::GET, &path, mailbox).send().await.unwrap()
    }

    async fn ack(&self, mailbox: &str, id: &str) -> Response {
        let path = format!("/messageexchange/{mailbox}/inbox/{id}/status/acknowledged");
        self.req(Method::PUT, &path, mailbox).send().await.unwrap()
    }

    async fn track(&self, mailbox: &str, id: &str) -> Response {
        let path = format!("/messageexchange/{mailbox}/outbox/tracking?messageID={id}");
        self.req(Method::GET, &path, mailbox).send().await.unwrap()
    }

    /// Polls `mailbox`'s inbox until it holds at least `n` messages.
    async fn wait_for(&self, mailbox: &str, n: usize) -> Vec<String> {
        for _ in 0..200 {
            let ids = self.inbox(mailbox).await;
            if ids.len() >= n {
                return ids;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{mailbox} never got {n} messages");
    }
}

async fn json(r: Response) -> Value {
    let b = r.bytes().await.unwrap();
    serde_json::from_slice(&b)
        .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&b)))
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

/// Asserts a MESH v2 error body `{"detail":[{"event","code","msg"}]}`.
async fn assert_v2_error(r: Response, status: u16, event: &str, code: &str, msg: &str) {
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
async fn assert_gone(r: Response) {
    let msg = "Message no longer available for download";
    assert_v2_error(r, 410, "SEND", "Message already accepted", msg).await;
}

/// Asserts a MESH v1 error body `{"errorEvent","errorCode","errorDescription"}`.
async fn assert_v1_error(r: Response, status: u16, event: &str, code: &str, msg: &str) {
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

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A body sent with `Transfer-Encoding: chunked` (no Content-Length), in small pieces.
fn streamed(data: Vec<u8>) -> reqwest::Body {
    let pieces: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(1000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(pieces))
}

// ---------------------------------------------------------------------------------------------
// Handshake, auth, content negotiation, health, routing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn handshake_get_post_v1_v2_and_missing_headers() {
    let m = Mesh::default().await;
    let r = m.handshake(A).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.bytes().await.unwrap().is_empty(),
        "v2 handshake body is empty"
    );
    let r = m.handshake_as(A, V1).send().await.unwrap();
    assert_eq!(json(r).await, serde_json::json!({"mailboxId": A}));
    // GET works too, and the path mailbox is upper-cased
    let r = m
        .req(Method::GET, "/messageexchange/x26abc1", A)
        .header("mex-clientversion", "x")
        .header("mex-osname", "x")
        .header("mex-osversion", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // missing mex headers → FastAPI validation body listing each
    let r = m
        .req(Method::POST, "/messageexchange/X26ABC1", A)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v = json(r).await;
    let locs: Vec<&str> = v["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["loc"][1].as_str().unwrap())
        .collect();
    assert_eq!(locs, ["mex-clientversion", "mex-osname", "mex-osversion"]);
    m.server.stop().await;
}

#[tokio::test]
async fn every_auth_failure_is_a_403_with_the_mesh_text() {
    let m = Mesh::default().await;
    let path = "/messageexchange/X26ABC1/inbox";
    let get = |auth: Option<String>, accept: &str| {
        let mut r = m.get(path).header("accept", accept);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    let ts = m.clock.now().format("%Y%m%d%H%M").to_string();
    let bad_header = "Error reading from Authorization header";
    assert_v2_error(get(None, V2).await.unwrap(), 403, "", "", bad_header).await;
    assert_v1_error(get(None, V1).await.unwrap(), 403, "", "", bad_header).await;
    let r = get(Some("NHSMESH X26ABC1:only:three".into()), V2)
        .await
        .unwrap();
    assert_v2_error(r, 403, "", "", bad_header).await;
    let r = get(Some(m.token(B, "password")), V2).await.unwrap();
    assert_v2_error(r, 403, "", "", "Mailbox id does not match token").await;
    // unknown mailbox
    let r = m
        .get("/messageexchange/NOSUCH1/inbox")
        .header("authorization", m.token("NOSUCH1", "password"))
        .header("accept", V2)
        .send()
        .await
        .unwrap();
    assert_v2_error(r, 403, "SEND", "EPL-151", "No mailbox matched").await;
    let invalid = "Invalid Authentication Token";
    let r = get(Some(m.token(A, "wrong")), V2).await.unwrap();
    assert_v2_error(r, 403, "", "", invalid).await;
    let wrong_key = make_header("BackBone", A, "password", "n1", 0, &ts);
    assert_v2_error(
        get(Some(wrong_key), V2).await.unwrap(),
        403,
        "",
        "",
        invalid,
    )
    .await;
    // real MESH: a token is good for one request only…
    let once = m.token(A, "password");
    assert_eq!(
        get(Some(once.clone()), V2).await.unwrap().status(),
        StatusCode::OK
    );
    assert_v2_error(get(Some(once), V2).await.unwrap(), 403, "", "", invalid).await;
    // …and its timestamp must be within 2 hours of the server clock
    let old = (m.clock.now() - chrono::Duration::minutes(121))
        .format("%Y%m%d%H%M")
        .to_string();
    let stale = make_header("TestKey", A, "password", "n2", 0, &old);
    assert_v2_error(get(Some(stale), V2).await.unwrap(), 403, "", "", invalid).await;
    let near = (m.clock.now() - chrono::Duration::minutes(110))
        .format("%Y%m%d%H%M")
        .to_string();
    let fresh = make_header("TestKey", A, "password", "n3", 0, &near);
    assert_eq!(get(Some(fresh), V2).await.unwrap().status(), StatusCode::OK);
    m.server.stop().await;
}

#[tokio::test]
async fn sandbox_compatible_auth_switches() {
    let mut c = Config::default();
    c.auth.check_replay = false;
    c.auth.check_timestamp = false;
    let m = Mesh::start(c).await;
    let t = make_header("TestKey", A, "password", "n", 0, "202001010000");
    for _ in 0..2 {
        let r = m
            .get("/messageexchange/X26ABC1/inbox")
            .header("authorization", &t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "replayed, old token accepted");
    }
    m.server.stop().await;
    let mut c = Config::default();
    c.auth.enabled = false;
    let m = Mesh::start(c).await;
    let r = m
        .get("/messageexchange/X26ABC1/inbox")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = m.get("/messageexchange/NOSUCH/inbox").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    m.server.stop().await;
}

#[tokio::test]
async fn accept_header_health_routing() {
    let m = Mesh::default().await;
    let r = m
        .req_as(
            Method::GET,
            "/messageexchange/X26ABC1/inbox",
            A,
            "application/vnd.mesh.v2+json, application/json",
        )
        .send()
        .await
        .unwrap();
    assert_v1_error(r, 400, "", "", "Accept header api format incorrect").await;
    for p in [
        "/health",
        "/_status",
        "/_ping",
        "/healthcheck",
        "/messageexchange/_ping",
    ] {
        let r = m.get(p).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{p}");
        assert_eq!(json(r).await["status"], "running");
    }
    let r = m.get("/nope").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(json(r).await, serde_json::json!({"detail": "Not Found"}));
    let r = m
        .http
        .delete(m.url("/messageexchange/X26ABC1/inbox"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        json(r).await,
        serde_json::json!({"detail": "Method Not Allowed"})
    );
    let r = m
        .req(Method::POST, "/messageexchange/X26ABC1/update", A)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    m.server.stop().await;
}

#[tokio::test]
async fn endpoint_lookup_and_workflow_search() {
    let m = Mesh::default().await;
    let r = m
        .get("/messageexchange/endpointlookup/X26/TEST_WORKFLOW")
        .header("accept", V2)
        .send()
        .await
        .unwrap();
    assert_eq!(
        json(r).await,
        serde_json::json!({"results": [{"mailbox_id": B, "mailbox_name": "TESTMB2"}]})
    );
    let r = m
        .get("/messageexchange/endpointlookup/X26/TEST_WORKFLOW")
        .send()
        .await
        .unwrap();
    let v = json(r).await;
    assert_eq!(v["results"][0]["address"], B);
    assert_eq!(v["results"][0]["endpoint_type"], "MESH");
    assert!(v["query_id"].is_string());
    let r = m
        .get("/messageexchange/workflowsearch/SPINE_NTT_UPHOLDING")
        .send()
        .await
        .unwrap();
    let found: Vec<String> = json(r).await["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["mailbox_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(found, [POS_INT, POS_LIVE]);
    let r = m
        .get("/messageexchange/endpointlookup/ZZZ/TEST_WORKFLOW")
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["results"], serde_json::json!([]));
    m.server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Send, download, acknowledge, tracking
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn single_message_round_trip_with_every_mex_header() {
    let m = Mesh::default().await;
    let r = m
        .send(A, "x26abc2", &b"Hello Bob"[..])
        .header("mex-subject", "greeting")
        .header("mex-localid", "local-1")
        .header("mex-partnerid", "partner")
        .header("mex-filename", "hello.txt")
        .header("mex-content-checksum", "md5:deadbeef")
        .header("mex-content-compressed", "N")
        .header("mex-content-encrypted", "Y")
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "content-type"), Some(V1));
    let id = json(r).await["message_id"].as_str().unwrap().to_string();
    // real MESH id format yyyyMMddHHmmssffffff_XXXXXX
    assert_eq!(id.len(), 27, "{id}");
    assert_eq!(&id[20..21], "_");
    assert_eq!(m.inbox(B).await, vec![id.clone()]);
    assert!(m.inbox(A).await.is_empty());

    let r = m
        .req(Method::HEAD, &format!("/messageexchange/{B}/inbox/{id}"), B)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "mex-messageid"), Some(id.as_str()));

    let r = m.download(B, &id, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    for (k, v) in [
        ("mex-from", A),
        ("mex-to", B),
        ("mex-workflowid", "TEST_WORKFLOW"),
        ("mex-chunk-range", "1:1"),
        ("mex-total-chunks", "1"),
        ("mex-localid", "local-1"),
        ("mex-partnerid", "partner"),
        ("mex-filename", "hello.txt"),
        ("mex-subject", "greeting"),
        ("mex-messagetype", "DATA"),
        ("mex-messageid", &id),
        ("mex-content-checksum", "md5:deadbeef"),
        ("mex-content-encrypted", "Y"),
        ("mex-content-type", "text/plain"),
        ("mex-statuscode", "00"),
        ("mex-statussuccess", "SUCCESS"),
        ("mex-version", "1.0"),
        ("content-type", "text/plain"),
    ] {
        assert_eq!(header(&r, k), Some(v), "{k}");
    }
    assert_eq!(header(&r, "mex-content-compressed"), None);
    assert!(header(&r, "last-modified").unwrap().ends_with(" UTC"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"Hello Bob");

    // tracking: only the sender; v2 and v1 shapes
    let v = json(m.track(A, &id).await).await;
    assert_eq!(v["status"], "accepted");
    assert_eq!(v["local_id"], "local-1");
    assert_eq!(v["recipient_name"], "TESTMB2");
    assert_eq!(v["status_success"], true);
    let r = m.track(B, &id).await;
    assert_v2_error(r, 404, "", "", "Not Found").await;
    let r = m
        .req1(
            Method::GET,
            &format!("/messageexchange/{A}/outbox/tracking?messageID={id}"),
            A,
        )
        .send()
        .await
        .unwrap();
    let v = json(r).await;
    assert_eq!(
        (v["status"].as_str(), v["messageType"].as_str()),
        (Some("Accepted"), Some("Data"))
    );
    assert_eq!(v["fileSize"], 9);
    assert_eq!(v["senderName"], "TESTMB1");

    // acknowledge: only the recipient, idempotent, then gone for good
    let r = m.ack(A, &id).await;
    assert_v2_error(r, 403, "", "", "Forbidden").await;
    let r = m.ack(B, &id).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = m
        .req1(
            Method::PUT,
            &format!("/messageexchange/{B}/inbox/{id}/status/acknowledged"),
            B,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await, serde_json::json!({"messageId": id}));
    assert!(m.inbox(B).await.is_empty());
    assert_gone(m.download(B, &id, None).await).await;
    let v = json(m.track(A, &id).await).await;
    assert_eq!(v["status"], "acknowledged");
    m.server.stop().await;
}

#[tokio::test]
async fn send_error_paths() {
    let c = Config {
        max_request_bytes: 1000,
        ..Config::default()
    };
    let m = Mesh::start(c).await;
    let outbox = format!("/messageexchange/{A}/outbox");
    let post = || m.req(Method::POST, &outbox, A).body("x");
    // missing required headers → validation
    let r = post().send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json(r).await["detail"][0]["loc"],
        serde_json::json!(["header", "mex-to"])
    );
    // a value longer than the sandbox allows → validation
    let r = post()
        .header("mex-to", B)
        .header("mex-workflowid", "TEST_WORKFLOW")
        .header("mex-subject", "s".repeat(501))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json(r).await["detail"][0]["type"],
        "string_too_long",
        "Mex-Subject at most 500"
    );
    // tracking without messageID → validation
    let r = m
        .req(
            Method::GET,
            &format!("/messageexchange/{A}/outbox/tracking"),
            A,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json(r).await["detail"][0]["loc"],
        serde_json::json!(["query", "messageID"])
    );
    let with = |to: &str| {
        post()
            .header("mex-to", to)
            .header("mex-workflowid", "TEST_WORKFLOW")
    };
    assert_v2_error(
        with("").send().await.unwrap(),
        400,
        "SEND",
        "08",
        "TO_DTS missing",
    )
    .await;
    let r = with(B).header("mex-subject", "a\tb").send().await.unwrap();
    assert_v2_error(r, 400, "TRANSFER", "06", "MalformedControlFile").await;
    let r = post()
        .header("mex-to", B)
        .header("mex-workflowid", "https://x")
        .send()
        .await
        .unwrap();
    assert_v2_error(r, 400, "TRANSFER", "06", "MalformedControlFile").await;
    let r = with(B)
        .header("mex-content-checksum", "a;b")
        .send()
        .await
        .unwrap();
    assert_v2_error(r, 400, "SEND", "Invalid checksum", "Invalid checksum").await;
    let r = with(B)
        .header("content-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_v2_error(
        r,
        422,
        "SEND",
        "UnsupportedContentEncoding",
        "Unsupported content encoding",
    )
    .await;
    let chunks_msg = "Invalid chunk values sent in mex-Chunk-Range header";
    for bad in ["2:3", "0:3", "4:3", "x", "1:100001", "1:4294967295"] {
        let r = with(B).header("mex-chunk-range", bad).send().await.unwrap();
        assert_v2_error(r, 417, "SEND", "InvalidHeaderChunks", chunks_msg).await;
    }
    let r = with("NOSUCH1").send().await.unwrap();
    assert_v2_error(r, 417, "SEND", "12", "Unregistered to address").await;
    let r = m
        .req1(Method::POST, &outbox, A)
        .header("mex-to", "NOSUCH1")
        .header("mex-workflowid", "TEST_WORKFLOW")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_v1_error(r, 417, "SEND", "12", "Unregistered to address").await;
    let r = m.send(A, B, "").send().await.unwrap();
    assert_v2_error(
        r,
        417,
        "COLLECT",
        "02",
        "Data file is missing or inaccessible.",
    )
    .await;
    // a workflow the POS mailbox is not registered for (real MESH code 17)
    let r = m.send(A, POS_INT, "x").send().await.unwrap();
    assert_v2_error(
        r,
        417,
        "SEND",
        "17",
        "Workflow ID not registered for mailbox",
    )
    .await;
    // per-request limit, with and without Content-Length
    let r = m.send(A, B, vec![b'x'; 1001]).send().await.unwrap();
    assert_v2_error(r, 413, "SEND", "", "Request entity too large").await;
    let r = m
        .send(A, B, streamed(vec![b'x'; 5000]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(m.inbox(B).await.is_empty(), "nothing was stored");
    m.server.stop().await;
}

#[tokio::test]
async fn per_message_limit_applies_across_chunks() {
    let m = Mesh::start(Config {
        max_message_bytes: 10,
        ..Config::default()
    })
    .await;
    let first = m
        .send(A, B, vec![b'x'; 6])
        .header("mex-chunk-range", "1:2")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let id = json(first).await["message_id"]
        .as_str()
        .unwrap()
        .to_string();
    let chunk2 = |len: usize| {
        m.req(
            Method::POST,
            &format!("/messageexchange/{A}/outbox/{id}/2"),
            A,
        )
        .header("mex-chunk-range", "2:2")
        .body(vec![b'x'; len])
        .send()
    };
    let r = chunk2(6).await.unwrap();
    assert_v2_error(r, 413, "SEND", "", "Request entity too large").await;
    assert!(m.inbox(B).await.is_empty());
    assert_eq!(chunk2(4).await.unwrap().status(), StatusCode::ACCEPTED);
    assert_eq!(m.inbox(B).await, vec![id]);
    m.server.stop().await;
}

#[tokio::test]
async fn chunked_message_upload_download_and_chunk_errors() {
    let m = Mesh::default().await;
    let parts: [&[u8]; 3] = [b"first-", b"second-", b"third"];
    // chunk 1 with Transfer-Encoding: chunked, as mesh-client sends it
    let r = m
        .send(A, B, streamed(parts[0].to_vec()))
        .header("mex-chunk-range", "1:3")
        .header("mex-localid", "chunky")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = json(r).await["message_id"].as_str().unwrap().to_string();
    let chunk = |n: u32, range: &str, mailbox: &str| {
        m.req(
            Method::POST,
            &format!("/messageexchange/{mailbox}/outbox/{id}/{n}"),
            mailbox,
        )
        .header("mex-chunk-range", range.to_string())
        .header("content-type", "application/octet-stream")
    };
    // not yet complete: not listed, not downloadable, tracked as uploading
    assert!(m.inbox(B).await.is_empty());
    assert_gone(m.download(B, &id, None).await).await;
    assert_eq!(json(m.track(A, &id).await).await["status"], "uploading");
    // chunk errors
    let chunks_msg = "Invalid chunk values sent in mex-Chunk-Range header";
    let r = chunk(2, "3:3", A).body("x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::EXPECTATION_FAILED);
    let v = json(r).await;
    assert_eq!(v["message_id"], id.as_str());
    assert_eq!(v["detail"][0]["msg"], chunks_msg);
    let r = m
        .req(
            Method::POST,
            &format!("/messageexchange/{A}/outbox/{id}/2"),
            A,
        )
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::EXPECTATION_FAILED,
        "range header required"
    );
    let r = m
        .req(
            Method::POST,
            &format!("/messageexchange/{A}/outbox/NOSUCHID/2"),
            A,
        )
        .header("mex-chunk-range", "2:3")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_v2_error(r, 404, "", "", "Not Found").await;
    assert_v2_error(
        chunk(2, "2:3", C).body("x").send().await.unwrap(),
        403,
        "",
        "",
        "Forbidden",
    )
    .await;
    let r = chunk(4, "4:4", A).body("x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);
    assert!(json(r).await["message"]
        .as_str()
        .unwrap()
        .contains("contact support"));
    let r = chunk(2, "2:3", A)
        .header("content-encoding", "gzip")
        .body(gzip(b"x"))
        .send()
        .await
        .unwrap();
    assert_v2_error(r, 417, "", "", "cannot change content encoding").await;
    // the rest, with v1 and v2 bodies
    let r = m
        .req1(
            Method::POST,
            &format!("/messageexchange/{A}/outbox/{id}/2"),
            A,
        )
        .header("mex-chunk-range", "2:3")
        .body(parts[1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        json(r).await,
        serde_json::json!({"messageID": id, "blockID": 2})
    );
    let r = chunk(3, "3:3", A).body(parts[2]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(json(r).await, Value::Null);
    // finished: 423 for more chunks
    let r = chunk(3, "3:3", A).body("again").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::LOCKED);
    // download: 206, 206, 200 with Mex-Chunk-Range on each
    assert_eq!(m.inbox(B).await, vec![id.clone()]);
    let mut whole = Vec::new();
    for n in 1..=3u32 {
        let r = m.download(B, &id, Some(n)).await;
        let want = if n < 3 {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        };
        assert_eq!(r.status(), want);
        assert_eq!(
            header(&r, "mex-chunk-range"),
            Some(format!("{n}:3").as_str())
        );
        assert_eq!(header(&r, "content-type"), Some("application/octet-stream"));
        whole.extend_from_slice(&r.bytes().await.unwrap());
    }
    assert_eq!(whole, b"first-second-third");
    let r = m.download(B, &id, None).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), parts[0]);
    // chunk out of range, chunk 0, unknown message, not the recipient
    let no_msg = "Message does not exist";
    assert_v2_error(
        m.download(B, &id, Some(4)).await,
        404,
        "RECEIVE",
        "20",
        no_msg,
    )
    .await;
    assert_eq!(
        m.download(B, &id, Some(0)).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_v2_error(
        m.download(B, "NOSUCHID", None).await,
        404,
        "RECEIVE",
        "20",
        no_msg,
    )
    .await;
    assert_v2_error(m.ack(B, "NOSUCHID").await, 404, "RECEIVE", "20", no_msg).await;
    assert_v2_error(m.download(C, &id, None).await, 403, "", "", "Forbidden").await;
    // HEAD: the sender may look at its own message; an unrelated mailbox gets 404
    let head = |mb: &str| {
        m.req(
            Method::HEAD,
            &format!("/messageexchange/{mb}/inbox/{id}"),
            mb,
        )
        .send()
    };
    assert_eq!(head(A).await.unwrap().status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(head(C).await.unwrap().status(), StatusCode::NOT_FOUND);
    // tracking by local id (deprecated, v1 body); several matches → 300
    let by_local = |l: &str| {
        m.req(
            Method::GET,
            &format!("/messageexchange/{A}/outbox/tracking/{l}"),
            A,
        )
        .send()
    };
    let v = json(by_local("chunky").await.unwrap()).await;
    assert_eq!(
        (v["chunkCount"].as_u64(), v["status"].as_str()),
        (Some(3), Some("Accepted"))
    );
    assert_eq!(
        by_local("nothing").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let r = m
        .send(A, B, &b"x"[..])
        .header("mex-localid", "chunky")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = by_local("chunky").await.unwrap();
    assert_eq!(r.status(), StatusCode::MULTIPLE_CHOICES);
    m.server.stop().await;
}

#[tokio::test]
async fn gzip_is_passed_through_or_decoded() {
    let m = Mesh::default().await;
    let data = b"compress me ".repeat(1000);
    let packed = gzip(&data);
    let r = m
        .send(A, B, packed.clone())
        .header("content-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = json(r).await["message_id"].as_str().unwrap().to_string();
    let path = format!("/messageexchange/{B}/inbox/{id}");
    let r = m
        .req(Method::GET, &path, B)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-encoding"), Some("gzip"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), packed.as_slice());
    let r = m
        .req(Method::GET, &path, B)
        .header("accept-encoding", "identity")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-encoding"), None);
    assert_eq!(r.bytes().await.unwrap().as_ref(), data.as_slice());
    // tracking reports the stored (compressed) size
    let v = json(
        m.req1(
            Method::GET,
            &format!("/messageexchange/{A}/outbox/tracking?messageID={id}"),
            A,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(v["fileSize"].as_u64(), Some(packed.len() as u64));
    assert_eq!(v["contentEncoding"], "gzip");
    m.server.stop().await;
}

#[tokio::test]
async fn inbox_paging_filter_and_count() {
    let m = Mesh::default().await;
    let mut sent = Vec::new();
    for i in 0..23 {
        let wf = if i % 2 == 0 {
            "TEST_WORKFLOW"
        } else {
            "TEST_WORKFLOW_ACK"
        };
        let r = m.send_wf(A, B, wf, "x").send().await.unwrap();
        sent.push(json(r).await["message_id"].as_str().unwrap().to_string());
    }
    // v2: follow links.next
    let mut got = Vec::new();
    let mut next = Some(format!("/messageexchange/{B}/inbox?max_results=10"));
    let mut pages = 0;
    while let Some(path) = next {
        let v = json(m.req(Method::GET, &path, B).send().await.unwrap()).await;
        assert_eq!(v["approx_inbox_count"], 23);
        assert!(!v["links"]["self"]
            .as_str()
            .unwrap()
            .contains("continue_from"));
        got.extend(ids(&v["messages"]));
        next = v["links"]["next"].as_str().map(str::to_string);
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(got, sent, "oldest first, nothing lost or repeated");
    // v1: continue_from = last id of the previous page
    let path = format!(
        "/messageexchange/{B}/inbox?max_results=10&continue_from={}",
        sent[9]
    );
    let v = json(m.req1(Method::GET, &path, B).send().await.unwrap()).await;
    assert_eq!(ids(&v["messages"]), sent[10..20].to_vec());
    assert!(v.get("links").is_none());
    // workflow filter: equals, prefix, contains, negated
    let count = |f: &str| {
        let path = format!("/messageexchange/{B}/inbox?workflow_filter={f}");
        let req = m.req(Method::GET, &path, B);
        async move {
            json(req.send().await.unwrap()).await["messages"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(count("TEST_WORKFLOW").await, 12);
    assert_eq!(count("TEST_WORKFLOW_ACK").await, 11);
    assert_eq!(count("TEST*").await, 23);
    assert_eq!(count("*ACK*").await, 11);
    assert_eq!(count("!*ACK*").await, 12);
    // max_results bounds
    for bad in ["5", "5001", "x"] {
        let path = format!("/messageexchange/{B}/inbox?max_results={bad}");
        assert_eq!(
            m.req(Method::GET, &path, B).send().await.unwrap().status(),
            StatusCode::BAD_REQUEST
        );
    }
    // count (deprecated)
    let v = json(
        m.req(Method::GET, &format!("/messageexchange/{B}/count"), B)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v, serde_json::json!({"count": 23}));
    let r = m
        .req1(Method::GET, &format!("/messageexchange/{B}/count"), B)
        .send();
    let v = json(r.await.unwrap()).await;
    assert_eq!(
        (v["count"].as_u64(), v["allResultsIncluded"].as_bool()),
        (Some(23), Some(true))
    );
    m.server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Lifecycle: expiry, restart recovery, concurrency
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn uncollected_message_expires_with_a_non_delivery_report() {
    let m = Mesh::default().await;
    let id = m
        .send(A, B, "late")
        .header("mex-subject", "s")
        .header("mex-localid", "l-exp")
        .send()
        .await
        .unwrap();
    let id = json(id).await["message_id"].as_str().unwrap().to_string();
    m.clock.advance(chrono::Duration::days(4));
    assert_eq!(
        m.inbox(B).await,
        vec![id.clone()],
        "still there after 4 days"
    );
    m.clock
        .advance(chrono::Duration::days(1) + chrono::Duration::minutes(1));
    assert!(m.inbox(B).await.is_empty(), "gone after 5 days");
    assert_gone(m.download(B, &id, None).await).await;
    let v = json(m.track(A, &id).await).await;
    assert_eq!(v["status"], "undeliverable");
    // the sender's inbox holds the NDR
    let reports = m.inbox(A).await;
    assert_eq!(reports.len(), 1);
    let r = m.download(A, &reports[0], None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "mex-messagetype"), Some("REPORT"));
    assert_eq!(header(&r, "mex-statuscode"), Some("14"));
    assert_eq!(header(&r, "mex-statussuccess"), Some("ERROR"));
    assert_eq!(header(&r, "mex-linkedmsgid"), Some(id.as_str()));
    assert_eq!(header(&r, "mex-localid"), Some("l-exp"));
    assert_eq!(header(&r, "mex-subject"), Some("NDR: s"));
    assert_eq!(header(&r, "mex-chunk-range"), Some("1:0"));
    assert!(r.bytes().await.unwrap().is_empty());
    m.server.stop().await;
}

#[tokio::test]
async fn disk_store_recovers_every_message_and_state_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = || Config::default().with_store_dir(dir.path());
    let m = Mesh::start(config()).await;
    let kept = m.send_ok(A, B, b"kept").await;
    let acked = m.send_ok(A, B, b"acked").await;
    assert_eq!(m.ack(B, &acked).await.status(), StatusCode::OK);
    let big: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let r = m
        .send(A, C, big[..600_000].to_vec())
        .header("mex-chunk-range", "1:2")
        .send()
        .await
        .unwrap();
    let partial = json(r).await["message_id"].as_str().unwrap().to_string();
    m.server.stop().await;

    let m = Mesh::start(config()).await;
    assert_eq!(m.inbox(B).await, vec![kept.clone()]);
    assert_eq!(
        m.download(B, &kept, None)
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        b"kept"
    );
    assert_eq!(m.download(B, &acked, None).await.status(), StatusCode::GONE);
    assert_eq!(
        json(m.track(A, &acked).await).await["status"],
        "acknowledged"
    );
    assert!(
        m.inbox(C).await.is_empty(),
        "a partial message is never visible"
    );
    // the upload can be finished after the restart
    let r = m
        .req(
            Method::POST,
            &format!("/messageexchange/{A}/outbox/{partial}/2"),
            A,
        )
        .header("mex-chunk-range", "2:2")
        .body(big[600_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut got = m
        .download(C, &partial, Some(1))
        .await
        .bytes()
        .await
        .unwrap()
        .to_vec();
    got.extend_from_slice(
        &m.download(C, &partial, Some(2))
            .await
            .bytes()
            .await
            .unwrap(),
    );
    assert_eq!(got, big);
    // new messages after a restart still go to the end of the inbox
    let newer = m.send_ok(A, B, b"newer").await;
    assert_eq!(m.inbox(B).await, vec![kept, newer]);
    m.server.stop().await;
}

#[tokio::test]
async fn eight_concurrent_senders_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default().with_store_dir(dir.path());
    for i in 0..8 {
        config = config.with_mailbox(&format!("X26SND{i}"), "password");
    }
    let m = std::sync::Arc::new(Mesh::start(config).await);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let from = format!("X26SND{i}");
            let mut sent = Vec::new();
            for j in 0..12 {
                let body = format!("sender {i} message {j} ").repeat(100 + j);
                let r = m.send(&from, B, body.clone()).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                sent.push((
                    json(r).await["message_id"].as_str().unwrap().to_string(),
                    body,
                ));
            }
            sent
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let listed = m.inbox(B).await;
    assert_eq!(listed.len(), 96);
    for (id, body) in &all {
        assert!(listed.contains(id));
        let got = m.download(B, id, None).await.bytes().await.unwrap();
        assert_eq!(got.as_ref(), body.as_bytes());
    }
    let m = std::sync::Arc::into_inner(m).unwrap();
    m.server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The POS workflow
// ---------------------------------------------------------------------------------------------

const PATIENTS: &str = include_str!("../../testdata/test-patients.csv");

fn patients(env: &str) -> Vec<(&'static str, bool)> {
    PATIENTS
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0] == env).then(|| (f[1], f[2] == "yes"))
        })
        .collect()
}

async fn submit(m: &Mesh, pos: &str, body: Vec<u8>, local_id: &str, gz: bool) -> String {
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
async fn collect(m: &Mesh, mailbox: &str, id: &str) -> (reqwest::header::HeaderMap, Vec<u8>) {
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

fn h<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn pos_answers_the_int_test_patients_and_rejects_a_bad_file() {
    let config = Config {
        pos_chunk_bytes: 100, // the result of 10 lines spans two chunks
        ..Config::default()
    };
    let m = Mesh::start(config).await;
    let int = patients("int");
    assert_eq!(int.len(), 20);
    let file: String = int.iter().map(|(n, _)| format!("{n},\r\n")).collect();
    let want: String = int
        .iter()
        .filter(|(_, out)| !out)
        .map(|(n, _)| format!("{n},\r\n"))
        .collect();
    let sub = submit(&m, POS_INT, file.into_bytes(), "NDOP-0001", false).await;

    let ids = m.wait_for(A, 2).await;
    let (job_h, job) = collect(&m, A, &ids[0]).await;
    assert_eq!(h(&job_h, "mex-subject"), Some("SUCCESS"));
    assert_eq!(h(&job_h, "mex-localid"), Some("NDOP-0001"));
    assert_eq!(h(&job_h, "mex-from"), Some(POS_INT));
    assert_eq!(h(&job_h, "mex-workflowid"), Some("SPINE_NTT_UPHOLDING"));
    let v: Value = serde_json::from_slice(&job).unwrap();
    assert_eq!(v["status"], "pending");
    assert_eq!(v["dataset_id"], "mesh_to_pos");
    assert_eq!(v["metadata"]["request"]["extra"]["local_id"], "NDOP-0001");
    assert_eq!(
        v["metadata"]["request"]["extra"]["message_id"],
        sub.as_str()
    );
    let stages: Vec<&str> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "validate_non_empty_file",
            "validate_is_unique_upload",
            "validate_in_order"
        ]
    );

    let (res_h, result) = collect(&m, A, &ids[1]).await;
    assert_eq!(h(&res_h, "mex-localid"), Some("NDOP-0001"));
    assert_eq!(h(&res_h, "mex-filename"), Some("NDOP-0001.dat"));
    assert_eq!(h(&res_h, "mex-chunk-range"), Some("1:2"));
    assert_eq!(String::from_utf8(result).unwrap(), want);
    assert_eq!(want.lines().count(), 10);
    // the POS collected the submission
    assert_eq!(json(m.track(A, &sub).await).await["status"], "acknowledged");

    // one bad line (LF endings, gzip transport) → the one-line error
    let mut bad: String = int.iter().take(5).map(|(n, _)| format!("{n},\n")).collect();
    bad.push_str("123456789,\n");
    submit(&m, POS_INT, bad.into_bytes(), "NDOP-0002", true).await;
    let ids = m.wait_for(A, 2).await;
    let (_, job) = collect(&m, A, &ids[0]).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&job).unwrap()["status"],
        "pending"
    );
    let (res_h, result) = collect(&m, A, &ids[1]).await;
    assert_eq!(h(&res_h, "mex-localid"), Some("NDOP-0002"));
    assert_eq!(
        result,
        b"The file contains one or more invalid NHS Numbers.\n"
    );
    m.server.stop().await;
}

#[tokio::test]
async fn pos_live_table_rate_file_empty_and_repeated_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let optouts = dir.path().join("optouts.txt");
    std::fs::write(&optouts, "nhs_number\n9434765919\n").unwrap();
    let mut config = Config::default();
    config.pos.optout_numbers = mock_mesh::load_optout_file(&optouts).unwrap();
    let m = Mesh::start(config).await;
    let live = patients("live");
    let mut file: String = live.iter().map(|(n, _)| format!("{n}\n")).collect();
    file.push_str("9434765919\n"); // opted out through the file
    let last_unterminated = "9990539510";
    file.push_str(last_unterminated);
    submit(&m, POS_LIVE, file.clone().into_bytes(), "L1", false).await;
    let ids = m.wait_for(A, 2).await;
    collect(&m, A, &ids[0]).await;
    let (_, result) = collect(&m, A, &ids[1]).await;
    let kept: Vec<&str> = std::str::from_utf8(&result).unwrap().split('\n').collect();
    assert_eq!(kept.len(), 12, "11 not opted out + the unterminated repeat");
    for (n, out) in &live {
        assert_eq!(kept.contains(n), !out, "{n}");
    }
    assert!(!kept.contains(&"9434765919"));

    // the same content again from the same sender: the job fails its uniqueness stage
    submit(&m, POS_LIVE, file.into_bytes(), "L2", false).await;
    let ids = m.wait_for(A, 1).await;
    let (job_h, job) = collect(&m, A, &ids[0]).await;
    assert_eq!(h(&job_h, "mex-localid"), Some("L2"));
    let v: Value = serde_json::from_slice(&job).unwrap();
    assert_eq!(v["status"], "failed");
    assert_eq!(v["stages"][0]["passed"], true);
    assert_eq!(v["stages"][1]["passed"], false);
    // an empty file (only possible through gzip transport encoding) fails the first stage
    submit(&m, POS_LIVE, Vec::new(), "L3", true).await;
    let ids = m.wait_for(A, 1).await;
    let (_, job) = collect(&m, A, &ids[0]).await;
    let v: Value = serde_json::from_slice(&job).unwrap();
    assert_eq!(v["status"], "failed");
    assert_eq!(v["stages"][0]["passed"], false);
    // no result follows a failed job
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(m.inbox(A).await.is_empty());
    m.server.stop().await;
}

#[tokio::test]
async fn pos_rate_is_deterministic_and_delay_is_honoured() {
    let mut config = Config::default();
    config.pos.optout_rate = 0.5;
    config.pos.optout_seed = 7;
    config.pos.delay = Duration::from_millis(300);
    let m = Mesh::start(config).await;
    // valid synthetic numbers from the 999 range
    let numbers: Vec<String> = (0..2000u64)
        .map(|i| format!("999{:06}", 100_000 + i))
        .filter_map(|p| {
            (0..10)
                .map(|d| format!("{p}{d}"))
                .find(|n| mock_mesh::pos::is_valid_nhs_number(n.as_bytes()))
        })
        .take(400)
        .collect();
    let forward: String = numbers.iter().map(|n| format!("{n},\r\n")).collect();
    let backward: String = numbers.iter().rev().map(|n| format!("{n},\r\n")).collect();
    let mut results = Vec::new();
    for (i, f) in [forward, backward].into_iter().enumerate() {
        let started = std::time::Instant::now();
        submit(&m, POS_INT, f.into_bytes(), &format!("R{i}"), false).await;
        let ids = m.wait_for(A, 1).await;
        collect(&m, A, &ids[0]).await;
        let ids = m.wait_for(A, 1).await;
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "the result waits for the delay"
        );
        let (_, body) = collect(&m, A, &ids[0]).await;
        let mut kept: Vec<String> = String::from_utf8(body)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        kept.sort();
        results.push(kept);
    }
    assert_eq!(
        results[0], results[1],
        "the answer for a number ignores its position"
    );
    let n = results[0].len();
    assert!((140..260).contains(&n), "about half kept: {n}");
    m.server.stop().await;
}

#[tokio::test]
async fn pos_job_interrupted_by_a_restart_still_gets_its_result() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default().with_store_dir(dir.path());
    config.pos.delay = Duration::from_secs(3600);
    let m = Mesh::start(config).await;
    let int = patients("int");
    let file: String = int.iter().map(|(n, _)| format!("{n},\n")).collect();
    let want: String = int
        .iter()
        .filter(|(_, out)| !out)
        .map(|(n, _)| format!("{n},\n"))
        .collect();
    let sub = submit(&m, POS_INT, file.into_bytes(), "RESTART-1", false).await;
    let job = m.wait_for(A, 1).await;
    m.server.stop().await; // the result was an hour away

    let m = Mesh::start(Config::default().with_store_dir(dir.path())).await;
    let ids = m.wait_for(A, 2).await;
    assert_eq!(
        ids[0], job[0],
        "the job message survived and was not sent twice"
    );
    let (job_h, _) = collect(&m, A, &ids[0]).await;
    assert_eq!(h(&job_h, "mex-subject"), Some("SUCCESS"));
    let (res_h, result) = collect(&m, A, &ids[1]).await;
    assert_eq!(h(&res_h, "mex-localid"), Some("RESTART-1"));
    assert_eq!(String::from_utf8(result).unwrap(), want);
    assert_eq!(json(m.track(A, &sub).await).await["status"], "acknowledged");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(m.inbox(A).await.is_empty(), "exactly two replies");
    m.server.stop().await;
}

#[tokio::test]
async fn logs_carry_no_nhs_numbers_local_ids_or_bodies() {
    let m = Mesh::default().await;
    let int = patients("int");
    let file: String = int.iter().map(|(n, _)| format!("{n},\r\n")).collect();
    submit(&m, POS_INT, file.into_bytes(), "LOGCHECK-LOCAL", false).await;
    submit(&m, POS_INT, b"0123456789\n".to_vec(), "LOGCHECK-BAD", false).await;
    m.wait_for(A, 4).await;
    let r = m
        .send(A, B, "SECRET-BODY-TEXT")
        .header("mex-subject", "SECRET-SUBJECT")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    m.server.stop().await;
    let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
    assert!(
        logs.contains("POS job created") && logs.contains("POS result sent"),
        "{logs}"
    );
    assert!(logs.contains("/{mb}/outbox"), "requests are logged");
    for (n, _) in &int {
        assert!(!logs.contains(n), "NHS number {n} in the logs");
    }
    for secret in [
        "0123456789",
        "SECRET-BODY-TEXT",
        "SECRET-SUBJECT",
        "LOGCHECK",
        "password",
    ] {
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
}

// ---------------------------------------------------------------------------------------------
// Robustness: garbage in never panics or kills the server
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn garbage_requests_get_http_errors_and_the_server_survives() {
    let m = Mesh::default().await;
    let paths = [
        "/messageexchange/",
        "/messageexchange//inbox",
        "/messageexchange/X26ABC1/inbox/%ff%fe/1",
        "/messageexchange/X26ABC1/inbox/ID/99999999999999999999",
        "/messageexchange/X26ABC1/outbox/ID/-1",
        "/messageexchange/X26ABC1/outbox/tracking",
        "/messageexchange/X26ABC1/inbox?max_results=%",
        "/messageexchange/endpointlookup/%/%",
    ];
    for p in paths {
        for method in [Method::GET, Method::POST, Method::PUT, Method::HEAD] {
            let r = m
                .req(method.clone(), p, A)
                .header(
                    "mex-chunk-range",
                    reqwest::header::HeaderValue::from_bytes(b"\xff\xfe:1").unwrap(),
                )
                .body("x")
                .send()
                .await
                .unwrap();
            assert!(
                r.status().is_client_error() || r.status().is_success(),
                "{method} {p}: {}",
                r.status()
            );
        }
    }
    for auth in [
        "NHSMESH",
        "NHSMESH :::::",
        "NHSMESH X26ABC1::::",
        "NHSMESH X26ABC1:a:1:b:zz",
        "X26ABC1:a:1:b:0",
    ] {
        let r = m
            .get("/messageexchange/X26ABC1/inbox")
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{auth}");
    }
    assert_eq!(
        m.handshake(A).send().await.unwrap().status(),
        StatusCode::OK
    );
    m.server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Interop: NHS England's own Python client against mock-mesh
// ---------------------------------------------------------------------------------------------

/// The venv python with `mesh-client==5.0.2`, made (once, under a lock) by `tools/python-env.sh`.
fn python() -> std::path::PathBuf {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/python-env.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run tools/python-env.sh");
    assert!(out.status.success(), "tools/python-env.sh failed");
    std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_mesh_client_drives_the_whole_flow() {
    let m = Mesh::default().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new(python())
        .arg(root.join("tests/interop/mesh_client_flow.py"))
        .arg(m.server.base_url())
        .arg(root.join("../testdata/test-patients.csv"))
        .output()
        .await
        .expect("run the interop script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passes = stdout.lines().filter(|l| l.starts_with("PASS ")).count();
    assert_eq!(passes, 17, "every check ran and passed");
    m.server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn binary_serves_on_an_ephemeral_port_and_stops_cleanly_on_ctrl_c() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mock-mesh"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log",
            "info",
            "--store",
        ])
        .arg(dir.path())
        .args([
            "--pos-delay",
            "0.5",
            "--optout-rate",
            "0.1",
            "--optout-seed",
            "3",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("a listening line").unwrap();
        if let Some(i) = line.find("listening on http://127.0.0.1:") {
            let rest = &line[i + "listening on ".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || ":/.".contains(c)))
                .unwrap_or(rest.len());
            break rest[..end].to_string();
        }
    };
    let http = reqwest::Client::new();
    let r = http.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(dir.path().join("journal.jsonl").exists());
    // bad command lines exit with 2
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_mock-mesh"))
        .args(["serve", "--store", "x", "--memory"])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(bad.code(), Some(2));
}
