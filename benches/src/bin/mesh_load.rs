//! `mesh_load`: whole-run comparison of `mock-mesh` with NHS England's `mesh-sandbox`, side by
//! side in one run (docs/PERFORMANCE.md, section "mock-mesh vs mesh-sandbox").
//!
//! For each round it starts every server fresh on a free loopback port and measures, one server
//! after the other: handshakes per second over keep-alive connections (a fresh, valid token on
//! every request), the time to upload a single-request message and to download it again, and the
//! time to upload and download a chunked message, sampling the server's resident memory
//! (`VmRSS`) meanwhile. For mock-mesh it also measures NDOP FHIR API searches per second
//! (`GET /STU3/Consent?patient=…` with the Spine headers and a fresh unsigned JWT on every
//! request) over the same keep-alive connections. It prints per-run lines and a table of
//! medians and ratios.
//!
//! The sandbox runs as `python -m uvicorn mesh_sandbox.api:app --workers 1` with
//! `AUTH_MODE=full STORE_MODE=memory SHARED_KEY=TestKey`; mock-mesh runs with a disk store (it
//! answers 202 only once a chunk is fsynced) and all its auth checks on. Downloads ask for
//! `Accept-Encoding: identity` so the sandbox does not gzip on the fly.
//!
//! The timed downloads use one client for every server, by default `RawConn`: plain HTTP/1.1
//! on a blocking socket, 4 MiB reads into one reused buffer, the body counted (`Content-Length`
//! or chunked framing) and dropped. Client and server share the machine's cores, so a client
//! that spends as much CPU receiving as the server spends sending (reqwest did: about 0.06 s a
//! 100 MB download) caps what a fast server can show; `--client reqwest` keeps the old client
//! for comparison. In round 1 each message is first downloaded once untimed and its SHA-256
//! checked against the uploaded bytes, so the fast client is known to receive the right bytes.
//! Each run prints the server's and this process's user+sys CPU per download.
//!
//! Example (from the workspace root):
//!
//!   cargo build --release -p mock-mesh -p ndop-benches
//!   target/release/mesh_load --rounds 3

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Compares mock-mesh with mesh-sandbox on loopback: handshakes/s, 100 MB and 1 GB transfers,
/// server memory.
#[derive(Debug, Parser)]
struct Args {
    /// The mock-mesh binary.
    #[arg(long, default_value = "target/release/mock-mesh")]
    mock: PathBuf,
    /// A python with mesh-sandbox and uvicorn (tools/python-env.sh prints it).
    #[arg(long, default_value = ".venv/bin/python")]
    python: PathBuf,
    /// Rounds; medians are over rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of handshakes per round and server.
    #[arg(long, default_value_t = 5.0)]
    handshake_secs: f64,
    /// Concurrent keep-alive connections for handshakes.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Size of the single-request message.
    #[arg(long, default_value_t = 100_000_000)]
    single_bytes: usize,
    /// Size of the chunked message.
    #[arg(long, default_value_t = 1_000_000_000)]
    chunked_bytes: usize,
    /// Chunk size of the chunked message (MESH: at most 100 MB per request).
    #[arg(long, default_value_t = 100_000_000)]
    chunk_bytes: usize,
    /// Where mock-mesh keeps its disk store (a fresh subdirectory per round; removed after).
    #[arg(long, default_value = "target/mesh-load-store")]
    store: PathBuf,
    /// Servers to run, in order: sandbox, mock (disk store), mock-memory.
    #[arg(long, value_delimiter = ',', default_value = "sandbox,mock")]
    servers: Vec<String>,
    /// Downloads of each message per round (before it is acknowledged); a round's download
    /// time is their median, and every one is printed. 1 = the historical figure.
    #[arg(long, default_value_t = 1)]
    downloads: usize,
    /// Skip the handshake and FHIR rates (transfers only: for measuring downloads).
    #[arg(long)]
    transfers_only: bool,
    /// The client that times downloads: `raw` (a plain HTTP/1.1 reader on a blocking socket,
    /// one reused buffer, bytes counted and dropped) or `reqwest` (the figures before 28 Nov
    /// 2026 18:40 UTC). The same client serves every server.
    #[arg(long, value_enum, default_value_t = DownloadClient::Raw)]
    client: DownloadClient,
    /// Read size of the raw client (bytes).
    #[arg(long, default_value_t = 4 << 20)]
    read_buf: usize,
}

/// The HTTP client of the timed downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DownloadClient {
    /// `RawConn`: large reads into one reused buffer, no allocation per frame.
    Raw,
    /// reqwest's `bytes_stream()` (hyper's client).
    Reqwest,
}

const KEY: &str = "TestKey";
const FROM: &str = "X26ABC1";
const TO: &str = "X26ABC2";
const PASSWORD: &str = "password";

/// A server child process, killed on drop.
struct Server {
    child: Child,
    url: String,
    port: u16,
    _store: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start(kind: &str, a: &Args) -> anyhow::Result<Server> {
    let port = free_port()?;
    let (child, store) = match kind {
        "sandbox" => {
            let c = Command::new(&a.python)
                .args([
                    "-m",
                    "uvicorn",
                    "mesh_sandbox.api:app",
                    "--host",
                    "127.0.0.1",
                ])
                .args(["--port", &port.to_string(), "--workers", "1"])
                .args(["--log-level", "warning", "--no-access-log"])
                .env("AUTH_MODE", "full")
                .env("STORE_MODE", "memory")
                .env("SHARED_KEY", KEY)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("start {}", a.python.display()))?;
            (c, None)
        }
        "mock" | "mock-memory" => {
            let mut cmd = Command::new(&a.mock);
            cmd.args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--log",
                "warn",
            ]);
            let store = if kind == "mock" {
                std::fs::create_dir_all(&a.store)?;
                let d = tempfile::tempdir_in(&a.store)?;
                cmd.arg("--store").arg(d.path());
                Some(d)
            } else {
                cmd.arg("--memory");
                None
            };
            let c = cmd
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("start {}", a.mock.display()))?;
            (c, store)
        }
        other => bail!("unknown server {other}"),
    };
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        port,
        _store: store,
    };
    let http = reqwest::Client::new();
    // Up to a minute: on a busy machine the sandbox's Python imports alone take seconds.
    for _ in 0..2400 {
        if let Ok(r) = http.get(format!("{}/health", server.url)).send().await {
            if r.status().is_success() {
                return Ok(server);
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("{kind} did not come up")
}

fn token(mailbox: &str) -> String {
    let ts = chrono::Utc::now().format("%Y%m%d%H%M").to_string();
    let nonce = uuid::Uuid::new_v4().to_string();
    mock_mesh::auth::make_header(KEY, mailbox, PASSWORD, &nonce, 0, &ts)
}

/// A handshake request (a fresh token every time).
fn handshake_request(port: u16) -> String {
    format!(
        "POST /messageexchange/{FROM} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Authorization: {}\r\nAccept: application/vnd.mesh.v2+json\r\n\
         mex-ClientVersion: mesh_load==1\r\nmex-OSName: Linux\r\nmex-OSVersion: 6\r\n\
         Content-Length: 0\r\n\r\n",
        token(FROM)
    )
}

/// base64url without padding.
fn b64url(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len() * 4 / 3 + 4);
    for c in data.chunks(3) {
        let n = c.iter().fold(0u32, |a, &x| (a << 8) | u32::from(x)) << (8 * (3 - c.len()));
        for i in 0..=c.len() {
            out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// An NDOP FHIR search for a published INT test patient with an opt-out (a seeded Consent):
/// Spine headers, a new trace id and a new unsigned JWT every time.
fn fhir_search_request(port: u16) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "iss": "https://citizen-id.nhs.uk", "sub": "mesh_load",
        "aud": "https://clinicals.spineservices.nhs.uk", "exp": now + 300, "iat": now,
        "reason_for_request": "patientaccess", "scope": "patient/consent.read",
        "requesting_system": "https://fhir.nhs.uk/Id/accredited-system|200000000205",
    });
    format!(
        "GET /STU3/Consent?patient=https%3A%2F%2Fdemographics.spineservices.nhs.uk%2FSTU3%2FPatient%2F9694116414 HTTP/1.1\r\n\
         Host: 127.0.0.1:{port}\r\nAccept: application/fhir+json\r\nSsp-TraceID: {}\r\n\
         Ssp-From: 200000000205\r\nSsp-To: 200000001115\r\n\
         Ssp-InteractionID: urn:nhs:names:services:nationaldataoptout:fhir:rest:search:consent\r\n\
         Authorization: Bearer {}.{}.\r\n\r\n",
        uuid::Uuid::new_v4(),
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    )
}

/// One keep-alive connection sending `request(port)` until `deadline`; returns the number of
/// 200 answers (anything else counts in `errors`).
async fn request_loop(
    port: u16,
    deadline: Instant,
    errors: Arc<AtomicU64>,
    request: fn(u16) -> String,
) -> anyhow::Result<u64> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.set_nodelay(true)?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut ok = 0;
    while Instant::now() < deadline {
        let req = request(port);
        s.write_all(req.as_bytes()).await?;
        // read the head, then Content-Length bytes of body
        let mut filled = 0;
        let head_end = loop {
            let n = s.read(&mut buf[filled..]).await?;
            if n == 0 {
                bail!("connection closed");
            }
            filled += n;
            if let Some(i) = find(&buf[..filled], b"\r\n\r\n") {
                break i + 4;
            }
            if filled == buf.len() {
                bail!("response head too large");
            }
        };
        let head = std::str::from_utf8(&buf[..head_end])?.to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse())
            .transpose()?
            .unwrap_or(0);
        let mut have = filled - head_end;
        while have < len {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                bail!("connection closed");
            }
            have += n;
        }
        if head.starts_with("http/1.1 200") {
            ok += 1;
        } else {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(ok)
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Requests per second over `a.connections` keep-alive connections for `a.handshake_secs`.
async fn rate(server: &Server, a: &Args, request: fn(u16) -> String) -> anyhow::Result<f64> {
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(a.handshake_secs);
    let tasks: Vec<_> = (0..a.connections)
        .map(|_| tokio::spawn(request_loop(server.port, deadline, errors.clone(), request)))
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let errors = errors.load(Ordering::Relaxed);
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    Ok(ok as f64 / secs)
}

/// Samples a process's VmRSS (KiB) until stopped; returns the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(vm_rss_kib(pid));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak.max(vm_rss_kib(pid))
        });
        RssSampler { stop, handle }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(0)
    }
}

/// User + system CPU seconds a process has used so far (`/proc/PID/stat`, clock ticks of
/// 10 ms: sum many downloads before dividing).
fn cpu_s(pid: &str) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // the fields after the command name, which is in parentheses and may hold spaces
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

struct Transfer {
    upload_s: f64,
    /// Median of the downloads.
    download_s: f64,
    /// Every download, in order.
    downloads_s: Vec<f64>,
    /// The server's user + system CPU seconds per download (mean over the downloads).
    server_cpu_s: f64,
    /// This load generator's user + system CPU seconds per download (mean).
    client_cpu_s: f64,
    peak_rss_mib: f64,
}

/// Uploads `total` bytes (chunks of `chunk` bytes cut from `data`) as one message; if `verify`
/// is given, downloads it once untimed with [`RawConn`] and checks its SHA-256 against it;
/// downloads it chunk by chunk (identity) `client.downloads` times; acknowledges it.
async fn transfer(
    server: &Server,
    http: &reqwest::Client,
    data: &Bytes,
    total: usize,
    chunk: usize,
    client: &ClientOpts,
    verify: Option<[u8; 32]>,
) -> anyhow::Result<Transfer> {
    let n = total.div_ceil(chunk).max(1);
    let part = |i: usize| data.slice(0..(total - i * chunk).min(chunk));
    let v2 = "application/vnd.mesh.v2+json";
    let rss = RssSampler::start(server.child.id());
    // chunk i (0-based) of the upload: chunk 1 to the outbox, the others to the message
    let upload = |path: String, i: usize| {
        http.post(format!(
            "{}/messageexchange/{FROM}/outbox{path}",
            server.url
        ))
        .header("authorization", token(FROM))
        .header("accept", v2)
        .header("mex-chunk-range", format!("{}:{n}", i + 1))
        .header("content-type", "application/octet-stream")
        .body(part(i))
    };
    let started = Instant::now();
    let r = upload(String::new(), 0)
        .header("mex-to", TO)
        .header("mex-workflowid", "TEST_WORKFLOW")
        .send()
        .await?;
    if r.status().as_u16() != 202 {
        bail!("send: HTTP {}", r.status());
    }
    let id = r.json::<serde_json::Value>().await?["message_id"]
        .as_str()
        .context("no message_id")?
        .to_string();
    for i in 1..n {
        let r = upload(format!("/{id}/{}", i + 1), i).send().await?;
        if r.status().as_u16() != 202 {
            bail!("chunk {}: HTTP {}", i + 1, r.status());
        }
    }
    let upload_s = started.elapsed().as_secs_f64();
    if let Some(want) = verify {
        let (port, id, read_buf) = (server.port, id.clone(), client.read_buf);
        let got = tokio::task::spawn_blocking(move || {
            let mut hash = Some(Sha256::new());
            raw_download(port, &id, n, read_buf, &mut hash).map(|_| hash)
        })
        .await??
        .map(|h| <[u8; 32]>::from(h.finalize()));
        if got != Some(want) {
            bail!("the downloaded message's SHA-256 differs from the uploaded one's");
        }
    }
    let mut downloads_s = Vec::new();
    let pid = server.child.id().to_string();
    let (server_cpu, client_cpu) = (cpu_s(&pid), cpu_s("self"));
    for _ in 0..client.downloads.max(1) {
        downloads_s.push(download(server, http, &id, n, total, client).await?);
    }
    let per = downloads_s.len() as f64;
    let server_cpu_s = (cpu_s(&pid) - server_cpu) / per;
    let client_cpu_s = (cpu_s("self") - client_cpu) / per;
    let peak_rss_mib = rss.finish() as f64 / 1024.0;
    let r = http
        .put(format!(
            "{}/messageexchange/{TO}/inbox/{id}/status/acknowledged",
            server.url
        ))
        .header("authorization", token(TO))
        .header("accept", v2)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("acknowledge: HTTP {}", r.status());
    }
    Ok(Transfer {
        upload_s,
        download_s: median(&downloads_s),
        downloads_s,
        server_cpu_s,
        client_cpu_s,
        peak_rss_mib,
    })
}

/// Downloads message `id` (`n` chunks, `total` bytes) once with `client`; the seconds to its
/// last byte.
async fn download(
    server: &Server,
    http: &reqwest::Client,
    id: &str,
    n: usize,
    total: usize,
    client: &ClientOpts,
) -> anyhow::Result<f64> {
    let (secs, got) = match client.kind {
        DownloadClient::Reqwest => reqwest_download(server, http, id, n).await?,
        DownloadClient::Raw => {
            let (port, id, read_buf) = (server.port, id.to_string(), client.read_buf);
            tokio::task::spawn_blocking(move || raw_download(port, &id, n, read_buf, &mut None))
                .await??
        }
    };
    if got != total as u64 {
        bail!("downloaded {got} of {total} bytes");
    }
    Ok(secs)
}

/// [`download`] through reqwest (`bytes_stream()`); seconds and bytes.
async fn reqwest_download(
    server: &Server,
    http: &reqwest::Client,
    id: &str,
    n: usize,
) -> anyhow::Result<(f64, u64)> {
    let v2 = "application/vnd.mesh.v2+json";
    let started = Instant::now();
    let mut got = 0u64;
    for i in 0..n {
        let r = http
            .get(format!(
                "{}/messageexchange/{TO}/inbox/{id}/{}",
                server.url,
                i + 1
            ))
            .header("authorization", token(TO))
            .header("accept", v2)
            .header("accept-encoding", "identity")
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("download chunk {}: HTTP {}", i + 1, r.status());
        }
        let mut body = r.bytes_stream();
        while let Some(b) = body.next().await {
            got += b?.len() as u64;
        }
    }
    Ok((started.elapsed().as_secs_f64(), got))
}

/// How the timed downloads are made.
struct ClientOpts {
    kind: DownloadClient,
    read_buf: usize,
    /// Timed downloads of each message.
    downloads: usize,
}

/// Downloads message `id` (`n` chunks) with [`RawConn`] over one keep-alive connection, opened
/// (and its buffer allocated) before the clock starts, reopened after a `Connection: close`;
/// seconds to the last byte, and the bytes. Feeds the body to `hash` if given. Blocking.
fn raw_download(
    port: u16,
    id: &str,
    n: usize,
    read_buf: usize,
    hash: &mut Option<Sha256>,
) -> anyhow::Result<(f64, u64)> {
    let mut conn = Some(RawConn::connect(port, read_buf)?);
    let started = Instant::now();
    let mut got = 0;
    for i in 0..n {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => conn.insert(RawConn::connect(port, read_buf)?),
        };
        let path = format!("/messageexchange/{TO}/inbox/{id}/{}", i + 1);
        let (len, close) = c
            .get(port, &path, &token(TO), hash)
            .with_context(|| format!("download chunk {}", i + 1))?;
        got += len;
        if close {
            conn = None;
        }
    }
    Ok((started.elapsed().as_secs_f64(), got))
}

/// A plain HTTP/1.1 keep-alive client connection reading into one reused buffer (`--client
/// raw`): large reads, no allocation or copy per frame, body bytes counted and dropped (or
/// hashed when asked), so that the client costs little beside the kernel's receive copy and
/// the servers' differences show. It parses only what a download needs: the status line,
/// `Content-Length` or chunked framing, `Connection: close`.
struct RawConn {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
    /// The bytes received and not yet consumed: `buf[start..end]`.
    start: usize,
    end: usize,
}

impl RawConn {
    fn connect(port: u16, read_buf: usize) -> anyhow::Result<RawConn> {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(RawConn {
            stream,
            buf: vec![0; read_buf.max(4096)],
            start: 0,
            end: 0,
        })
    }

    /// Reads more after the unconsumed bytes (moved to the front first).
    fn fill(&mut self) -> anyhow::Result<()> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.end == self.buf.len() {
            bail!("a response line is longer than the read buffer");
        }
        let n = loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            bail!("the server closed the connection mid-response");
        }
        self.end += n;
        Ok(())
    }

    /// The next line of a head or of chunked framing, without its CRLF.
    fn line(&mut self) -> anyhow::Result<String> {
        loop {
            if let Some(i) = find(&self.buf[self.start..self.end], b"\r\n") {
                let line =
                    String::from_utf8_lossy(&self.buf[self.start..self.start + i]).into_owned();
                self.start += i + 2;
                return Ok(line);
            }
            self.fill()?;
        }
    }

    /// Consumes `n` body bytes, feeding them to `hash` if given.
    fn body(&mut self, mut n: u64, hash: &mut Option<Sha256>) -> anyhow::Result<()> {
        while n > 0 {
            if self.start == self.end {
                self.fill()?;
            }
            let take = ((self.end - self.start) as u64).min(n) as usize;
            if let Some(h) = hash.as_mut() {
                h.update(&self.buf[self.start..self.start + take]);
            }
            self.start += take;
            n -= take as u64;
        }
        Ok(())
    }

    /// GETs `path` (identity encoding); the body's length and whether the server closes the
    /// connection after it. Any status but 2xx is an error.
    fn get(
        &mut self,
        port: u16,
        path: &str,
        auth: &str,
        hash: &mut Option<Sha256>,
    ) -> anyhow::Result<(u64, bool)> {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {auth}\r\n\
             Accept: application/vnd.mesh.v2+json\r\nAccept-Encoding: identity\r\n\r\n"
        );
        self.stream.write_all(req.as_bytes())?;
        let status = self.line()?;
        let code = status
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .with_context(|| format!("bad status line {status:?}"))?;
        let (mut len, mut chunked, mut close) = (None, false, false);
        loop {
            let h = self.line()?;
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').context("bad header line")?;
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = Some(value.parse::<u64>()?),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        if !(200..300).contains(&code) {
            bail!("HTTP {code}");
        }
        let got = if chunked {
            let mut total = 0;
            loop {
                let l = self.line()?;
                let size = l.split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(size, 16)
                    .with_context(|| format!("bad chunk size line {l:?}"))?;
                if size == 0 {
                    while !self.line()?.is_empty() {} // trailers
                    break total;
                }
                self.body(size, hash)?;
                if !self.line()?.is_empty() {
                    bail!("a chunk is not followed by CRLF");
                }
                total += size;
            }
        } else if let Some(len) = len {
            self.body(len, hash)?;
            len
        } else {
            bail!("the response has neither Content-Length nor chunked framing");
        };
        Ok((got, close))
    }
}

/// SHA-256 of the message [`transfer`] uploads: `total` bytes in chunks of `chunk`, each cut
/// from the start of `data`.
fn message_sha256(data: &[u8], total: usize, chunk: usize) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk);
        h.update(&data[..n]);
        left -= n;
    }
    h.finalize().into()
}

#[derive(Default)]
struct Results {
    handshakes: Vec<f64>,
    fhir_searches: Vec<f64>,
    single_up: Vec<f64>,
    single_down: Vec<f64>,
    single_rss: Vec<f64>,
    single_cpu: Vec<f64>,
    single_client_cpu: Vec<f64>,
    chunked_up: Vec<f64>,
    chunked_down: Vec<f64>,
    chunked_rss: Vec<f64>,
    chunked_cpu: Vec<f64>,
    chunked_client_cpu: Vec<f64>,
}

/// Picks one metric's samples out of a server's results.
type Metric = fn(&Results) -> &Vec<f64>;

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(a))
}

async fn run(a: Args) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().no_gzip().build()?;
    let mut data = vec![0u8; a.chunk_bytes.max(a.single_bytes)];
    rand::Rng::fill(&mut rand::thread_rng(), &mut data[..]);
    let data = Bytes::from(data);
    let mut results: Vec<Results> = a.servers.iter().map(|_| Results::default()).collect();
    let client = ClientOpts {
        kind: a.client,
        read_buf: a.read_buf,
        downloads: a.downloads,
    };
    // every server's bytes are checked once, in round 1, outside the timing
    let sums = (
        message_sha256(&data, a.single_bytes, a.single_bytes),
        message_sha256(&data, a.chunked_bytes, a.chunk_bytes),
    );
    for round in 1..=a.rounds {
        let verify = |sum| (round == 1).then_some(sum);
        for (i, kind) in a.servers.iter().enumerate() {
            let server = start(kind, &a).await?;
            let hs = if a.transfers_only {
                f64::NAN
            } else {
                rate(&server, &a, handshake_request).await?
            };
            let fhir = if kind.starts_with("mock") && !a.transfers_only {
                rate(&server, &a, fhir_search_request).await?
            } else {
                f64::NAN // the sandbox has no NDOP FHIR API
            };
            let single = transfer(
                &server,
                &http,
                &data,
                a.single_bytes,
                a.single_bytes,
                &client,
                verify(sums.0),
            )
            .await?;
            let chunked = transfer(
                &server,
                &http,
                &data,
                a.chunked_bytes,
                a.chunk_bytes,
                &client,
                verify(sums.1),
            )
            .await?;
            if round == 1 {
                println!(
                    "round {round} {kind:<11} SHA-256 of a download of each message: as uploaded"
                );
            }
            if a.downloads > 1 {
                let list = |t: &Transfer| {
                    let v: Vec<String> = t.downloads_s.iter().map(|s| format!("{s:.3}")).collect();
                    v.join(" ")
                };
                println!(
                    "round {round} {kind:<11} downloads (s): single {} | chunked {}",
                    list(&single),
                    list(&chunked)
                );
                println!(
                    "round {round} {kind:<11} CPU per download (s, user+sys): single server {:.3} client {:.3} | chunked server {:.3} client {:.3}",
                    single.server_cpu_s, single.client_cpu_s, chunked.server_cpu_s, chunked.client_cpu_s
                );
            }
            println!(
                "round {round} {kind:<11} handshakes/s {hs:>8.0} | FHIR searches/s {fhir:>8.0} | single {} B up {:.3} s down {:.3} s peak RSS {:.0} MiB | chunked {} B up {:.3} s down {:.3} s peak RSS {:.0} MiB",
                a.single_bytes, single.upload_s, single.download_s, single.peak_rss_mib,
                a.chunked_bytes, chunked.upload_s, chunked.download_s, chunked.peak_rss_mib
            );
            let r = &mut results[i];
            r.handshakes.push(hs);
            r.fhir_searches.push(fhir);
            r.single_up.push(single.upload_s);
            r.single_down.push(single.download_s);
            r.single_rss.push(single.peak_rss_mib);
            r.single_cpu.push(single.server_cpu_s);
            r.single_client_cpu.push(single.client_cpu_s);
            r.chunked_up.push(chunked.upload_s);
            r.chunked_down.push(chunked.download_s);
            r.chunked_rss.push(chunked.peak_rss_mib);
            r.chunked_cpu.push(chunked.server_cpu_s);
            r.chunked_client_cpu.push(chunked.client_cpu_s);
            drop(server);
        }
    }
    println!();
    print!("| metric (median of {} rounds) |", a.rounds);
    for s in &a.servers {
        print!(" {s} |");
    }
    if a.servers.len() > 1 {
        print!(" {} vs {} |", a.servers[1], a.servers[0]);
    }
    println!();
    println!(
        "|---|{}",
        "---|".repeat(a.servers.len() + usize::from(a.servers.len() > 1))
    );
    let rows: [(&str, Metric, bool); 12] = [
        ("handshakes/s", |r| &r.handshakes, true),
        ("NDOP FHIR searches/s", |r| &r.fhir_searches, true),
        ("single upload (s)", |r| &r.single_up, false),
        ("single download (s)", |r| &r.single_down, false),
        ("single peak RSS (MiB)", |r| &r.single_rss, false),
        ("single download, server CPU (s)", |r| &r.single_cpu, false),
        (
            "single download, client CPU (s)",
            |r| &r.single_client_cpu,
            false,
        ),
        ("chunked upload (s)", |r| &r.chunked_up, false),
        ("chunked download (s)", |r| &r.chunked_down, false),
        ("chunked peak RSS (MiB)", |r| &r.chunked_rss, false),
        (
            "chunked download, server CPU (s)",
            |r| &r.chunked_cpu,
            false,
        ),
        (
            "chunked download, client CPU (s)",
            |r| &r.chunked_client_cpu,
            false,
        ),
    ];
    for (name, get, higher_is_better) in rows {
        print!("| {name} |");
        let meds: Vec<f64> = results.iter().map(|r| median(get(r))).collect();
        for m in &meds {
            if *m >= 100.0 {
                print!(" {m:.0} |");
            } else {
                print!(" {m:.3} |");
            }
        }
        if meds.len() > 1 {
            let ratio = if higher_is_better {
                meds[1] / meds[0]
            } else {
                meds[0] / meds[1]
            };
            print!(" {ratio:.1}x |");
        }
        println!();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `responses` in turn on one connection of a fresh loopback listener, reading
    /// one request head before each; returns the port.
    fn canned(responses: Vec<Vec<u8>>) -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            for r in responses {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).unwrap() == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                // in uneven pieces, so that lines and bodies straddle the client's reads
                for piece in r.chunks(777) {
                    s.write_all(piece).unwrap();
                }
            }
        });
        port
    }

    fn sha(b: &[u8]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    #[test]
    fn raw_conn_reads_content_length_and_chunked_bodies_on_one_connection() {
        let body: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut sized = b"HTTP/1.1 200 OK\r\ncontent-length: 10000\r\nx-a: b\r\n\r\n".to_vec();
        sized.extend_from_slice(&body);
        let mut chunked =
            b"HTTP/1.1 206 Partial Content\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        chunked.extend_from_slice(b"bb8;ext=1\r\n");
        chunked.extend_from_slice(&body[..3000]);
        chunked.extend_from_slice(b"\r\n1B58\r\n");
        chunked.extend_from_slice(&body[3000..]);
        chunked.extend_from_slice(b"\r\n0\r\nx-trailer: 1\r\n\r\n");
        let closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc";
        let port = canned(vec![sized, chunked, closing.to_vec()]);
        let mut c = RawConn::connect(port, 4096).unwrap();
        for _ in 0..2 {
            let mut h = Some(Sha256::new());
            let (len, close) = c.get(port, "/x", "auth", &mut h).unwrap();
            assert_eq!((len, close), (10_000, false));
            assert_eq!(<[u8; 32]>::from(h.unwrap().finalize()), sha(&body));
        }
        assert_eq!(c.get(port, "/x", "auth", &mut None).unwrap(), (3, true));
    }

    #[test]
    fn raw_conn_refuses_errors_short_bodies_and_unframed_bodies() {
        let port = canned(vec![
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()
        ]);
        let e = RawConn::connect(port, 4096)
            .unwrap()
            .get(port, "/x", "a", &mut None);
        assert!(format!("{:#}", e.unwrap_err()).contains("HTTP 404"));
        let port = canned(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec()
        ]);
        let e = RawConn::connect(port, 4096)
            .unwrap()
            .get(port, "/x", "a", &mut None);
        assert!(format!("{:#}", e.unwrap_err()).contains("closed the connection"));
        let port = canned(vec![b"HTTP/1.1 200 OK\r\n\r\nabc".to_vec()]);
        let e = RawConn::connect(port, 4096)
            .unwrap()
            .get(port, "/x", "a", &mut None);
        assert!(format!("{:#}", e.unwrap_err()).contains("neither Content-Length"));
    }

    #[test]
    fn message_sha256_hashes_the_chunks_as_uploaded() {
        let data = b"abcdefgh";
        assert_eq!(message_sha256(data, 10, 4), sha(b"abcdabcdab"));
        assert_eq!(message_sha256(data, 8, 8), sha(data));
    }
}
