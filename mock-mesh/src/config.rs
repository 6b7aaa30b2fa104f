//! Server configuration: built-in defaults (the sandbox's mailboxes and workflows plus the two
//! POS mailboxes), a TOML file format, and builder methods for embedding.
//!
//! TOML (every key optional; see `mock-mesh/mock-mesh.toml` for a complete example):
//! ```toml
//! shared_key = "TestKey"
//! builtin_mailboxes = true          # keep X26ABC1/2/3, X26OT154, X26HC065 and their workflows
//! store = "/var/lib/mock-mesh"       # omit for the memory store
//! inbox_expiry_days = 5
//! max_request_bytes = 104857600
//! max_message_bytes = 21474836480
//! [auth]
//! enabled = true
//! check_timestamp = true
//! check_replay = true
//! [pos]
//! delay_secs = 0.0
//! optout_rate = 0.0
//! optout_seed = 0
//! optout_numbers = [9000000009]
//! optout_file = "optouts.txt"
//! chunk_bytes = 78643200
//! result_encoding = "identity"      # or "gzip": how result chunks are stored and sent
//! [limits]
//! body_timeout_secs = 60             # a request body (or head) that stalls longer is dropped
//! response_timeout_secs = 60         # a download whose client stops reading is cut off
//! max_connections = 1024
//! max_chunks = 4096                  # largest N in Mex-Chunk-Range 1:N (else 417)
//! max_uploads_per_mailbox = 100      # unfinished chunked messages per sender (else 429)
//! upload_expiry_hours = 24           # an unfinished upload is abandoned after this
//! pos_max_decoded_bytes = 21474836480
//! [[mailbox]]
//! id = "X26NDOP1"
//! password = "secret"
//! name = "My test mailbox"
//! ods_code = "X26"
//! any_workflow = true
//! pos = "int"                        # makes it a POS mailbox (INT opt-out table); or "live"
//! [[workflow]]
//! id = "SPINE_NTT_UPHOLDING"
//! senders = ["X26NDOP1"]
//! receivers = ["X26OT154"]
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::clock::Clock;
use crate::error::Error;
use crate::headers::ContentEncoding;
use crate::tls::TlsConfig;

/// Workflow of the National Data Opt-out POS ("SPINE NDOP External Upholding").
pub const POS_WORKFLOW: &str = "SPINE_NTT_UPHOLDING";
/// INT POS mailbox.
pub const POS_INT_MAILBOX: &str = "X26OT154";
/// LIVE POS mailbox.
pub const POS_LIVE_MAILBOX: &str = "X26HC065";

/// Which published test table a POS mailbox answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PosEnv {
    /// Spine Integration: 10 of the 20 INT test patients are opted out.
    Int,
    /// LIVE: 4 of the 15 LIVE test patients are opted out.
    Live,
}

/// A mailbox.
#[derive(Debug, Clone, PartialEq)]
pub struct MailboxConfig {
    /// Mailbox id, upper-case.
    pub id: String,
    /// Password (part of the HMAC input).
    pub password: String,
    /// Display name (`recipient_name`, lookups).
    pub name: String,
    /// ODS code (endpoint lookup).
    pub ods_code: String,
    /// Organisation code.
    pub org_code: String,
    /// Organisation name.
    pub org_name: String,
    /// Billing entity.
    pub billing_entity: String,
    /// Accept and send any workflow (the sandbox's behaviour). When false, sends involving this
    /// mailbox need a matching `workflow` registration (real MESH error 17).
    pub any_workflow: bool,
    /// Answer `SPINE_NTT_UPHOLDING` messages like the POS.
    pub pos: Option<PosEnv>,
}

impl MailboxConfig {
    /// A mailbox accepting any workflow, named after its id, ODS code = first 3 characters.
    pub fn new(id: &str, password: &str) -> MailboxConfig {
        let id = id.trim().to_ascii_uppercase();
        let ods: String = id.chars().take(3).collect();
        MailboxConfig {
            name: id.clone(),
            id,
            password: password.to_string(),
            ods_code: ods.clone(),
            org_code: ods,
            org_name: String::new(),
            billing_entity: "England".into(),
            any_workflow: true,
            pos: None,
        }
    }
}

/// A workflow registration: who may send it, who receives it (endpoint lookup, workflow search,
/// and the error-17 check for restricted mailboxes).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    /// Workflow id.
    pub id: String,
    /// Registered senders.
    #[serde(default)]
    pub senders: Vec<String>,
    /// Registered receivers.
    #[serde(default)]
    pub receivers: Vec<String>,
}

/// Where messages live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreMode {
    /// In process memory; lost on exit.
    Memory,
    /// On disk under this directory; survives restarts.
    Disk(PathBuf),
}

/// The POS responder's knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct PosConfig {
    /// Time between the job-created message and the result (default 0).
    pub delay: Duration,
    /// Fraction (0..=1) of all other numbers treated as opted out, chosen by a hash of the number
    /// and `optout_seed` (independent of file order).
    pub optout_rate: f64,
    /// Seed of that hash.
    pub optout_seed: u64,
    /// Extra opted-out numbers (all POS mailboxes), e.g. from `--optout-file`.
    pub optout_numbers: Vec<u64>,
    /// How result messages are stored: identity (the default), or gzip'd (each chunk one gzip
    /// member, as a sender uploading with `Content-Encoding: gzip` stores it, passed through to
    /// clients that accept gzip and decoded for the others: less disk traffic, more CPU, which
    /// measured slower on the project's 2-core VM, `docs/PERFORMANCE.md`, session 11 gzres).
    pub result_encoding: ContentEncoding,
}

/// A POS result encoding by name (`identity` or `gzip`, as `serve --pos-result-encoding` and
/// the TOML key `pos.result_encoding` take it).
pub fn parse_result_encoding(name: &str) -> Option<ContentEncoding> {
    match name {
        "identity" => Some(ContentEncoding::Identity),
        "gzip" => Some(ContentEncoding::Gzip),
        _ => None,
    }
}

impl Default for PosConfig {
    fn default() -> Self {
        PosConfig {
            delay: Duration::ZERO,
            optout_rate: 0.0,
            optout_seed: 0,
            optout_numbers: Vec::new(),
            result_encoding: ContentEncoding::Identity,
        }
    }
}

/// Everything the server needs. `Default` = built-in mailboxes and workflows, shared key
/// `TestKey`, memory store, all auth checks on, POS delay 0.
#[derive(Debug, Clone)]
pub struct Config {
    /// HMAC key of the environment.
    pub shared_key: String,
    /// Mailboxes.
    pub mailboxes: Vec<MailboxConfig>,
    /// Workflow registrations.
    pub workflows: Vec<WorkflowConfig>,
    /// Memory or disk.
    pub store: StoreMode,
    /// Which auth checks run.
    pub auth: AuthConfig,
    /// POS responder.
    pub pos: PosConfig,
    /// Per-request body limit (MESH: 100 MB).
    pub max_request_bytes: u64,
    /// Per-message limit, sum of all chunks (MESH: 20 GB).
    pub max_message_bytes: u64,
    /// A message not acknowledged this long after delivery becomes undeliverable and its
    /// sender gets a non-delivery report (MESH: 5 days).
    pub inbox_expiry: Duration,
    /// Chunk size of POS result messages (default 75 MiB, mesh-client's default).
    pub pos_chunk_bytes: u64,
    /// The server clock.
    pub clock: Clock,
    /// HTTPS (optionally mutual TLS) instead of plain HTTP (default `None`).
    pub tls: Option<TlsConfig>,
    /// Timeouts and caps that keep slow or hostile clients from starving the others.
    pub limits: Limits,
}

/// Bounds on what one client can hold: every wait has a timeout, every resource a cap.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest wait for the next piece of a request body (or for the request head); a client
    /// that stalls longer is dropped and its staged data deleted (default 60 s).
    pub body_timeout: Duration,
    /// Longest wait for a client to take the next piece of a response body; a download whose
    /// client stops reading is cut off (default 60 s).
    pub response_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog (default 1,024).
    pub max_connections: usize,
    /// Largest `N` a `Mex-Chunk-Range: 1:N` may declare; beyond it the send is refused with
    /// `417 InvalidHeaderChunks`, as a malformed range is. Default [`MAX_CHUNKS`] (4,096): the
    /// 20 GiB message limit over the 5 MiB MESH asks every chunk but the last to reach, so any
    /// client within the MESH rules can send a 20 GiB message (NHS England's mesh-client, with
    /// its 75 MiB chunks, needs 274; 100 MB chunks need 200).
    pub max_chunks: u32,
    /// Chunked messages one mailbox may have begun and not finished at once; chunk 1 of one
    /// more is refused with 429 until one completes or expires (default 100).
    pub max_uploads_per_mailbox: usize,
    /// An upload still incomplete this long after its first chunk is abandoned: its data is
    /// freed and it turns `error` in tracking (default 1 day).
    pub upload_expiry: Duration,
    /// Most bytes the POS decodes from one (gzip) submission (default 20 GB, the MESH message
    /// limit); a larger submission is treated as unreadable and rejected whole.
    pub pos_max_decoded_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_timeout: Duration::from_secs(60),
            response_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_chunks: MAX_CHUNKS,
            max_uploads_per_mailbox: 100,
            upload_expiry: Duration::from_secs(DAY),
            pos_max_decoded_bytes: 20 * 1024 * 1024 * 1024,
        }
    }
}

const DAY: u64 = 24 * 3600;

/// The default [`Limits::max_chunks`]: 20 GiB (MESH's message limit) over 5 MiB (the smallest
/// chunk but the last that MESH accepts, mesh-client 3.0 change log), rounded up.
pub const MAX_CHUNKS: u32 = (20u64 << 30).div_ceil(5 << 20) as u32;

fn builtin_mailboxes() -> Vec<MailboxConfig> {
    let mb = |id: &str, name: &str, ods: &str, billing: &str, pos: Option<PosEnv>| MailboxConfig {
        id: id.into(),
        password: "password".into(),
        name: name.into(),
        ods_code: ods.into(),
        org_code: ods.into(),
        org_name: String::new(),
        billing_entity: billing.into(),
        any_workflow: pos.is_none(),
        pos,
    };
    vec![
        mb("X26ABC1", "TESTMB1", "X26", "England", None),
        mb("X26ABC2", "TESTMB2", "X26", "Wales", None),
        mb("X26ABC3", "TESTMB3", "X27", "England", None),
        mb(
            POS_INT_MAILBOX,
            "NHS Digital POS INT Mailbox",
            "X26",
            "England",
            Some(PosEnv::Int),
        ),
        mb(
            POS_LIVE_MAILBOX,
            "NHS Digital POS Mailbox",
            "X26",
            "England",
            Some(PosEnv::Live),
        ),
    ]
}

fn builtin_workflows() -> Vec<WorkflowConfig> {
    let wf = |id: &str, s: &[&str], r: &[&str]| WorkflowConfig {
        id: id.into(),
        senders: s.iter().map(|x| x.to_string()).collect(),
        receivers: r.iter().map(|x| x.to_string()).collect(),
    };
    vec![
        wf("TEST_WORKFLOW", &["X26ABC1"], &["X26ABC2"]),
        wf("TEST_WORKFLOW_ACK", &["X26ABC2"], &["X26ABC1", "X26ABC3"]),
        wf(
            "TEST_WORKFLOW2",
            &["X26ABC1"],
            &["X26ABC1", "X26ABC2", "X26ABC3"],
        ),
        wf(POS_WORKFLOW, &[], &[POS_INT_MAILBOX, POS_LIVE_MAILBOX]),
        wf(
            "SPINE_NTT_UPHOLDING_ACK",
            &[POS_INT_MAILBOX, POS_LIVE_MAILBOX],
            &[],
        ),
    ]
}

impl Default for Config {
    fn default() -> Self {
        Config {
            shared_key: "TestKey".into(),
            mailboxes: builtin_mailboxes(),
            workflows: builtin_workflows(),
            store: StoreMode::Memory,
            auth: AuthConfig::default(),
            pos: PosConfig::default(),
            max_request_bytes: 100 * 1024 * 1024,
            max_message_bytes: 20 * 1024 * 1024 * 1024,
            inbox_expiry: Duration::from_secs(5 * DAY),
            pos_chunk_bytes: 75 * 1024 * 1024,
            clock: Clock::system(),
            tls: None,
            limits: Limits::default(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    enabled: Option<bool>,
    check_timestamp: Option<bool>,
    check_replay: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePos {
    delay_secs: Option<f64>,
    optout_rate: Option<f64>,
    optout_seed: Option<u64>,
    #[serde(default)]
    optout_numbers: Vec<u64>,
    optout_file: Option<PathBuf>,
    chunk_bytes: Option<u64>,
    result_encoding: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMailbox {
    id: String,
    password: String,
    name: Option<String>,
    ods_code: Option<String>,
    org_code: Option<String>,
    org_name: Option<String>,
    billing_entity: Option<String>,
    any_workflow: Option<bool>,
    pos: Option<PosEnv>,
}

/// Changes to [`Limits`], as the `[limits]` table of the TOML file and the `serve` flags give
/// them: `None` keeps the current value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// [`Limits::body_timeout`], in seconds.
    pub body_timeout_secs: Option<f64>,
    /// [`Limits::response_timeout`], in seconds.
    pub response_timeout_secs: Option<f64>,
    /// [`Limits::max_connections`].
    pub max_connections: Option<usize>,
    /// [`Limits::max_chunks`].
    pub max_chunks: Option<u32>,
    /// [`Limits::max_uploads_per_mailbox`].
    pub max_uploads_per_mailbox: Option<usize>,
    /// [`Limits::upload_expiry`], in hours.
    pub upload_expiry_hours: Option<f64>,
    /// [`Limits::pos_max_decoded_bytes`].
    pub pos_max_decoded_bytes: Option<u64>,
}

impl LimitOverrides {
    /// Applies the values that are set to `limits`; a zero, negative or non-finite value is
    /// an error naming its key.
    pub fn apply(&self, limits: &mut Limits) -> Result<(), String> {
        let secs = |v: f64, key: &str| {
            if v.is_finite() && v > 0.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(format!("limits.{key} must be > 0"))
            }
        };
        let positive = |v: u64, key: &str| {
            if v > 0 {
                Ok(v)
            } else {
                Err(format!("limits.{key} must be > 0"))
            }
        };
        if let Some(v) = self.body_timeout_secs {
            limits.body_timeout = secs(v, "body_timeout_secs")?;
        }
        if let Some(v) = self.response_timeout_secs {
            limits.response_timeout = secs(v, "response_timeout_secs")?;
        }
        if let Some(v) = self.max_connections {
            limits.max_connections = positive(v as u64, "max_connections")? as usize;
        }
        if let Some(v) = self.max_chunks {
            limits.max_chunks = positive(u64::from(v), "max_chunks")? as u32;
        }
        if let Some(v) = self.max_uploads_per_mailbox {
            limits.max_uploads_per_mailbox =
                positive(v as u64, "max_uploads_per_mailbox")? as usize;
        }
        if let Some(v) = self.upload_expiry_hours {
            limits.upload_expiry = secs(v * 3600.0, "upload_expiry_hours")?;
        }
        if let Some(v) = self.pos_max_decoded_bytes {
            limits.pos_max_decoded_bytes = positive(v, "pos_max_decoded_bytes")?;
        }
        Ok(())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    shared_key: Option<String>,
    builtin_mailboxes: Option<bool>,
    store: Option<PathBuf>,
    inbox_expiry_days: Option<f64>,
    max_request_bytes: Option<u64>,
    max_message_bytes: Option<u64>,
    #[serde(default)]
    auth: FileAuth,
    #[serde(default)]
    pos: FilePos,
    #[serde(default)]
    limits: LimitOverrides,
    #[serde(default)]
    mailbox: Vec<FileMailbox>,
    #[serde(default)]
    workflow: Vec<WorkflowConfig>,
}

impl Config {
    /// Reads a TOML configuration (format in the module docs). Relative paths inside it are
    /// relative to the file's directory.
    pub fn from_toml_file(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Config::from_toml_str(&text, path)
    }

    fn from_toml_str(text: &str, path: &Path) -> Result<Config, Error> {
        let bad = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        let file: FileConfig = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut c = Config::default();
        if file.builtin_mailboxes == Some(false) {
            c.mailboxes.clear();
            c.workflows.clear();
        }
        if let Some(k) = file.shared_key {
            c.shared_key = k;
        }
        if let Some(dir) = file.store {
            c.store = StoreMode::Disk(base.join(dir));
        }
        if let Some(d) = file.inbox_expiry_days {
            if !(d.is_finite() && d > 0.0) {
                return Err(bad("inbox_expiry_days must be positive".into()));
            }
            c.inbox_expiry = Duration::from_secs_f64(d * DAY as f64);
        }
        if let Some(n) = file.max_request_bytes {
            c.max_request_bytes = n;
        }
        if let Some(n) = file.max_message_bytes {
            c.max_message_bytes = n;
        }
        c.auth.enabled = file.auth.enabled.unwrap_or(c.auth.enabled);
        c.auth.check_timestamp = file.auth.check_timestamp.unwrap_or(c.auth.check_timestamp);
        c.auth.check_replay = file.auth.check_replay.unwrap_or(c.auth.check_replay);
        if let Some(d) = file.pos.delay_secs {
            if !(d.is_finite() && d >= 0.0) {
                return Err(bad("pos.delay_secs must be >= 0".into()));
            }
            c.pos.delay = Duration::from_secs_f64(d);
        }
        if let Some(r) = file.pos.optout_rate {
            if !(0.0..=1.0).contains(&r) {
                return Err(bad("pos.optout_rate must be within 0..=1".into()));
            }
            c.pos.optout_rate = r;
        }
        if let Some(s) = file.pos.optout_seed {
            c.pos.optout_seed = s;
        }
        c.pos.optout_numbers.extend(file.pos.optout_numbers);
        if let Some(f) = file.pos.optout_file {
            let numbers = load_optout_file(&base.join(f))?;
            c.pos.optout_numbers.extend(numbers);
        }
        if let Some(n) = file.pos.chunk_bytes {
            if n == 0 {
                return Err(bad("pos.chunk_bytes must be > 0".into()));
            }
            c.pos_chunk_bytes = n;
        }
        if let Some(e) = file.pos.result_encoding {
            c.pos.result_encoding = parse_result_encoding(&e)
                .ok_or_else(|| bad(format!("pos.result_encoding {e:?}: identity or gzip")))?;
        }
        file.limits.apply(&mut c.limits).map_err(bad)?;
        for m in file.mailbox {
            let mut mb = MailboxConfig::new(&m.id, &m.password);
            if mb.id.is_empty() || mb.id.contains([' ', ':', '/']) {
                return Err(bad(format!("invalid mailbox id {:?}", m.id)));
            }
            if let Some(v) = m.name {
                mb.name = v;
            }
            if let Some(v) = m.ods_code {
                mb.ods_code = v;
            }
            if let Some(v) = m.org_code {
                mb.org_code = v;
            }
            if let Some(v) = m.org_name {
                mb.org_name = v;
            }
            if let Some(v) = m.billing_entity {
                mb.billing_entity = v;
            }
            mb.pos = m.pos;
            mb.any_workflow = m.any_workflow.unwrap_or(m.pos.is_none());
            c.mailboxes.retain(|x| x.id != mb.id);
            c.mailboxes.push(mb);
        }
        for mut w in file.workflow {
            for id in w.senders.iter_mut().chain(w.receivers.iter_mut()) {
                *id = id.to_ascii_uppercase();
            }
            match c.workflows.iter_mut().find(|x| x.id == w.id) {
                Some(existing) => {
                    existing.senders.extend(w.senders);
                    existing.receivers.extend(w.receivers);
                }
                None => c.workflows.push(w),
            }
        }
        Ok(c)
    }

    /// Uses a disk store under `dir` (created if missing; recovered if it holds messages).
    pub fn with_store_dir(mut self, dir: impl Into<PathBuf>) -> Config {
        self.store = StoreMode::Disk(dir.into());
        self
    }

    /// Serves HTTPS with these certificates instead of plain HTTP.
    pub fn with_tls(mut self, tls: TlsConfig) -> Config {
        self.tls = Some(tls);
        self
    }

    /// Adds (or replaces) a mailbox that accepts any workflow.
    pub fn with_mailbox(mut self, id: &str, password: &str) -> Config {
        let mb = MailboxConfig::new(id, password);
        self.mailboxes.retain(|m| m.id != mb.id);
        self.mailboxes.push(mb);
        self
    }
}

/// Reads opted-out NHS numbers: one per line, first comma-separated field; blank lines,
/// `#` comments and a header line are skipped.
pub fn load_optout_file(path: &Path) -> Result<Vec<u64>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let field = line.split(',').next().unwrap_or("").trim();
        if field.len() == 10 && field.bytes().all(|b| b.is_ascii_digit()) {
            out.push(field.parse().unwrap_or(0));
        } else if i == 0 {
            continue; // header
        } else {
            return Err(Error::OptOutFile {
                path: path.to_path_buf(),
                line: i + 1,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_hold_sandbox_and_pos_mailboxes() {
        let c = Config::default();
        for id in ["X26ABC1", "X26ABC2", "X26ABC3", "X26OT154", "X26HC065"] {
            assert!(c.mailboxes.iter().any(|m| m.id == id), "{id}");
        }
        assert_eq!(c.shared_key, "TestKey");
        let c = c.with_mailbox("x26ndop1", "pw");
        assert!(c
            .mailboxes
            .iter()
            .any(|m| m.id == "X26NDOP1" && m.any_workflow));
    }

    #[test]
    fn the_example_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("mock-mesh.toml");
        let c = Config::from_toml_file(&path).unwrap();
        let ndop = c.mailboxes.iter().find(|m| m.id == "X26NDOP1").unwrap();
        assert!(!ndop.any_workflow);
        assert_eq!(c.mailboxes.len(), 6);
        let pos = c.workflows.iter().find(|w| w.id == POS_WORKFLOW).unwrap();
        assert_eq!(pos.senders, ["X26NDOP1"]);
        assert_eq!(pos.receivers, [POS_INT_MAILBOX, POS_LIVE_MAILBOX]);
        assert_eq!(c.max_request_bytes, Config::default().max_request_bytes);
    }

    #[test]
    fn toml_overrides() {
        let c = Config::from_toml_str(
            r#"
            shared_key = "K"
            builtin_mailboxes = false
            [auth]
            check_replay = false
            [pos]
            delay_secs = 1.5
            optout_rate = 0.25
            result_encoding = "gzip"
            [limits]
            body_timeout_secs = 0.5
            max_chunks = 300
            max_uploads_per_mailbox = 2
            upload_expiry_hours = 0.5
            [[mailbox]]
            id = "a1"
            password = "p"
            pos = "live"
            [[workflow]]
            id = "W"
            receivers = ["a1"]
            "#,
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(c.shared_key, "K");
        assert_eq!(c.mailboxes.len(), 1);
        assert_eq!(c.mailboxes[0].pos, Some(PosEnv::Live));
        assert!(!c.mailboxes[0].any_workflow);
        assert!(!c.auth.check_replay && c.auth.check_timestamp);
        assert_eq!(c.pos.delay, Duration::from_millis(1500));
        assert_eq!(c.pos.result_encoding, ContentEncoding::Gzip);
        assert_eq!(
            Config::default().pos.result_encoding,
            ContentEncoding::Identity
        );
        let e =
            Config::from_toml_str("[pos]\nresult_encoding = \"br\"", Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("identity or gzip"), "{e}");
        assert_eq!(c.workflows[0].receivers, vec!["A1".to_string()]);
        assert!(Config::from_toml_str("nonsense = 1", Path::new("x")).is_err());
        assert_eq!(c.limits.body_timeout, Duration::from_millis(500));
        assert_eq!(
            (c.limits.max_chunks, c.limits.max_uploads_per_mailbox),
            (300, 2)
        );
        assert_eq!(c.limits.upload_expiry, Duration::from_secs(1800));
        assert_eq!(c.limits.max_connections, Limits::default().max_connections);
        let e = Config::from_toml_str("[limits]\nmax_chunks = 0", Path::new("x")).unwrap_err();
        assert!(
            e.to_string().contains("limits.max_chunks must be > 0"),
            "{e}"
        );
    }

    #[test]
    fn the_example_file_parses_and_the_chunk_cap_lets_mesh_client_send_20_gib() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("mock-mesh.toml");
        let c = Config::from_toml_file(&path).unwrap();
        assert_eq!(c.limits.max_chunks, MAX_CHUNKS);
        assert_eq!(MAX_CHUNKS, 4096);
        // NHS England's mesh-client cuts at 75 MiB by default
        let needed = c.max_message_bytes.div_ceil(75 << 20);
        assert_eq!(needed, 274);
        assert!(u64::from(Limits::default().max_chunks) >= needed);
    }
}
