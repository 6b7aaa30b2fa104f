//! The National Data Opt-out "Check for National Data Opt-outs Service" (POS) behind the POS
//! mailboxes (`ndop-domain.md` §2.3, §3, §4).
//!
//! When a complete DATA message with workflow `SPINE_NTT_UPHOLDING` reaches a POS mailbox:
//! 1. the POS collects it (the submission becomes `acknowledged` in the sender's tracking);
//! 2. it reads the file once, streaming (gzip transport encoding decoded), computing its
//!    SHA-256 and validating every line: ten ASCII digits passing Modulus 11, optionally followed
//!    by a comma, terminated by CRLF or LF (the last line may be unterminated);
//! 3. it sends the sender a "job created" message (`Mex-Subject: SUCCESS`, JSON body) whose
//!    stages are `validate_non_empty_file` (the file has at least one byte),
//!    `validate_is_unique_upload` (this sender has not submitted the same content to this POS
//!    mailbox before) and `validate_in_order` (always passes); if a stage fails the job's
//!    `status` is `failed` and nothing else is sent;
//! 4. after [`PosConfig::delay`](crate::PosConfig::delay) it sends the result: the submitted
//!    lines minus the opted-out numbers, byte for byte (same line endings), split into chunks of
//!    `pos_chunk_bytes`; or, if any line is invalid, the single line
//!    `The file contains one or more invalid NHS Numbers.` followed by the file's first line
//!    ending (CRLF if it has none).
//!
//! Opted out: the published test patients with an opt-out (`testdata/test-patients.csv`: INT
//! table for INT POS mailboxes, LIVE table for LIVE ones), plus
//! [`PosConfig::optout_numbers`](crate::PosConfig::optout_numbers), plus a fraction
//! [`PosConfig::optout_rate`](crate::PosConfig::optout_rate) of every other number chosen by
//! [`opted_out_by_rate`] — a hash of the number and the seed, so the answer for a number never
//! depends on the file it is in or its position.
//!
//! Nothing here logs an NHS number or file content: only ids, counts and sizes.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::{PosConfig, PosEnv, POS_WORKFLOW};
use crate::error::Error;
use crate::headers::ContentEncoding;
use crate::server::AppState;
use crate::store::{create_private, ChunkSource, Message, MessageType, PosStage, Received};

/// The POS's whole answer to a file with any invalid line.
pub const INVALID_FILE_LINE: &str = "The file contains one or more invalid NHS Numbers.";

/// The published test patients (environment, number, opted out).
const TEST_PATIENTS: &str = include_str!("../../testdata/test-patients.csv");

/// NHS Data Dictionary Modulus 11 check of ten ASCII digits (`ndop-domain.md` §1.1): weights
/// 10..2 on the first nine digits; check = 11 − (sum mod 11); 11 → 0; 10 → never valid.
pub fn is_valid_nhs_number(digits: &[u8]) -> bool {
    if digits.len() != 10 || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = digits[..9]
        .iter()
        .zip((2..=10).rev())
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        10 => return false,
        c => c,
    };
    u32::from(digits[9] - b'0') == check
}

/// Parses one POS line (with or without its terminator): `NNNNNNNNNN[,](\r\n|\n)?`.
/// Returns the number if the line is valid.
pub fn parse_pos_line(line: &[u8]) -> Option<u64> {
    let mut l = line;
    if let Some(rest) = l.strip_suffix(b"\n") {
        l = rest.strip_suffix(b"\r").unwrap_or(rest);
    }
    let l = l.strip_suffix(b",").unwrap_or(l);
    if !is_valid_nhs_number(l) {
        return None;
    }
    Some(l.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0')))
}

/// SplitMix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Deterministic 64-bit hash of an NHS number under a seed.
pub fn optout_hash(number: u64, seed: u64) -> u64 {
    mix(number ^ mix(seed))
}

/// True if `number` falls in the opted-out fraction `rate` for `seed`: the top 53 bits of
/// [`optout_hash`] as a fraction of 2^53 are below `rate`.
pub fn opted_out_by_rate(number: u64, seed: u64, rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    let unit = (optout_hash(number, seed) >> 11) as f64 / (1u64 << 53) as f64;
    unit < rate
}

/// The opt-out decision for each POS mailbox.
#[derive(Debug)]
pub(crate) struct PosEngine {
    int: HashSet<u64>,
    live: HashSet<u64>,
    extra: HashSet<u64>,
    rate: f64,
    seed: u64,
    delay: Duration,
    chunk_bytes: u64,
}

impl PosEngine {
    pub(crate) fn new(c: &PosConfig, chunk_bytes: u64) -> PosEngine {
        let mut int = HashSet::new();
        let mut live = HashSet::new();
        for line in TEST_PATIENTS.lines().skip(1) {
            let f: Vec<&str> = line.trim().split(',').collect();
            if let [env, number, "yes"] = f.as_slice() {
                if let Ok(n) = number.parse::<u64>() {
                    match *env {
                        "int" => int.insert(n),
                        "live" => live.insert(n),
                        _ => false,
                    };
                }
            }
        }
        PosEngine {
            int,
            live,
            extra: c.optout_numbers.iter().copied().collect(),
            rate: c.optout_rate,
            seed: c.optout_seed,
            delay: c.delay,
            chunk_bytes: chunk_bytes.max(1),
        }
    }

    pub(crate) fn opted_out(&self, env: PosEnv, n: u64) -> bool {
        let table = match env {
            PosEnv::Int => &self.int,
            PosEnv::Live => &self.live,
        };
        table.contains(&n) || self.extra.contains(&n) || opted_out_by_rate(n, self.seed, self.rate)
    }
}

/// Starts a POS job if `m` is a submission to a POS mailbox.
pub(crate) fn maybe_start(state: &Arc<AppState>, m: &Message) {
    let Some(env) = state.mailboxes.get(&m.recipient).and_then(|mb| mb.pos) else {
        return;
    };
    let from_pos = m
        .sender
        .as_ref()
        .and_then(|s| state.mailboxes.get(s))
        .is_some_and(|mb| mb.pos.is_some());
    if m.workflow_id != POS_WORKFLOW || m.message_type != MessageType::Data || from_pos {
        return;
    }
    let job_state = state.clone();
    let m = m.clone();
    state.spawn(async move {
        let id = m.id.clone();
        if let Err(e) = run_job(job_state, m, env).await {
            tracing::error!(message_id = %id, error = %e, "POS job failed");
        }
    });
}

/// After a restart: answer submissions still waiting in POS inboxes.
pub(crate) fn recover(state: &Arc<AppState>) {
    let pos_boxes: Vec<String> = state
        .mailboxes
        .values()
        .filter(|m| m.pos.is_some())
        .map(|m| m.id.clone())
        .collect();
    for mb in pos_boxes {
        for m in state.store.pos_pending(&mb) {
            maybe_start(state, &m);
        }
    }
}

/// Writes the result file into chunks of `chunk_bytes`.
struct ResultSink {
    chunk_bytes: u64,
    tmp_dir: Option<PathBuf>,
    done: Vec<Received>,
    mem: Vec<u8>,
    file: Option<(std::io::BufWriter<std::fs::File>, PathBuf)>,
    len: u64,
}

impl ResultSink {
    fn new(chunk_bytes: u64, tmp_dir: Option<PathBuf>) -> ResultSink {
        ResultSink {
            chunk_bytes,
            tmp_dir,
            done: Vec::new(),
            mem: Vec::new(),
            file: None,
            len: 0,
        }
    }

    fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let room = (self.chunk_bytes - self.len).min(data.len() as u64) as usize;
            let (now, rest) = data.split_at(room);
            match &self.tmp_dir {
                None => self.mem.extend_from_slice(now),
                Some(dir) => {
                    if self.file.is_none() {
                        let p = dir.join(uuid::Uuid::new_v4().simple().to_string());
                        let f = create_private(&p)?;
                        self.file = Some((std::io::BufWriter::with_capacity(1 << 20, f), p));
                    }
                    if let Some((w, _)) = &mut self.file {
                        w.write_all(now)?;
                    }
                }
            }
            self.len += room as u64;
            data = rest;
            if self.len == self.chunk_bytes {
                self.cut()?;
            }
        }
        Ok(())
    }

    fn cut(&mut self) -> std::io::Result<()> {
        match self.file.take() {
            Some((w, tmp)) => {
                let f = w.into_inner().map_err(|e| e.into_error())?;
                f.sync_all()?;
                self.done.push(Received::File {
                    tmp,
                    size: self.len,
                });
            }
            None => {
                let b = Bytes::from(std::mem::take(&mut self.mem));
                self.done.push(Received::Memory(b));
            }
        }
        self.len = 0;
        Ok(())
    }

    /// The chunks; at least one (an empty file is one empty chunk).
    fn finish(mut self) -> std::io::Result<Vec<Received>> {
        if self.len > 0 || self.done.is_empty() {
            if let (Some(dir), None) = (&self.tmp_dir, &self.file) {
                // an empty last chunk on disk still needs a file
                let p = dir.join(uuid::Uuid::new_v4().simple().to_string());
                let f = create_private(&p)?;
                self.file = Some((std::io::BufWriter::new(f), p));
            }
            self.cut()?;
        }
        Ok(self.done)
    }

    fn discard(self) {
        if let Some((_, p)) = self.file {
            let _ = std::fs::remove_file(p);
        }
        for r in self.done {
            if let Received::File { tmp, .. } = r {
                let _ = std::fs::remove_file(tmp);
            }
        }
    }
}

/// What one pass over a submitted file found.
struct Analysis {
    size: u64,
    hash: String,
    lines: u64,
    kept_lines: u64,
    invalid: bool,
    line_ending: &'static str,
    result: Option<ResultSink>,
}

fn analyse(
    mut reader: Box<dyn Read + Send>,
    engine: &PosEngine,
    env: PosEnv,
    mut sink: ResultSink,
) -> std::io::Result<Analysis> {
    let mut buf = vec![0u8; 4 << 20];
    let mut carry: Vec<u8> = Vec::new();
    let mut hasher = Sha256::new();
    let mut a = Analysis {
        size: 0,
        hash: String::new(),
        lines: 0,
        kept_lines: 0,
        invalid: false,
        line_ending: "",
        result: None,
    };
    // judges one line; true = keep it
    let judge = |line: &[u8], a: &mut Analysis| -> bool {
        a.lines += 1;
        if a.line_ending.is_empty() && line.ends_with(b"\n") {
            a.line_ending = if line.ends_with(b"\r\n") {
                "\r\n"
            } else {
                "\n"
            };
        }
        match parse_pos_line(line) {
            None => {
                a.invalid = true;
                false
            }
            Some(n) if engine.opted_out(env, n) => false,
            Some(_) => {
                a.kept_lines += 1;
                true
            }
        }
    };
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let data = &buf[..n];
        hasher.update(data);
        a.size += n as u64;
        if a.invalid {
            continue; // only the hash matters now
        }
        let mut pos = 0;
        if !carry.is_empty() {
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    carry.extend_from_slice(&data[..=i]);
                    if judge(&carry, &mut a) {
                        sink.write(&carry)?;
                    }
                    carry.clear();
                    pos = i + 1;
                }
                None => {
                    carry.extend_from_slice(data);
                    if carry.len() > 64 {
                        a.invalid = true;
                    }
                    continue;
                }
            }
        }
        let mut run_start = pos;
        while let Some(i) = memchr::memchr(b'\n', &data[pos..]) {
            let end = pos + i + 1;
            if !judge(&data[pos..end], &mut a) {
                if a.invalid {
                    break;
                }
                sink.write(&data[run_start..pos])?;
                run_start = end;
            }
            pos = end;
        }
        if a.invalid {
            continue;
        }
        sink.write(&data[run_start..pos])?;
        carry.extend_from_slice(&data[pos..]);
        if carry.len() > 64 {
            a.invalid = true;
        }
    }
    if !a.invalid && !carry.is_empty() && judge(&carry, &mut a) {
        sink.write(&carry)?;
    }
    a.hash = hex::encode(hasher.finalize());
    if a.line_ending.is_empty() {
        a.line_ending = "\r\n";
    }
    if a.invalid || a.size == 0 {
        sink.discard();
    } else {
        a.result = Some(sink);
    }
    Ok(a)
}

/// Opens the decoded content of a whole message.
fn open_message(sources: Vec<ChunkSource>, gzip: bool) -> std::io::Result<Box<dyn Read + Send>> {
    let mut reader: Box<dyn Read + Send> = Box::new(std::io::empty());
    for s in sources {
        let raw: Box<dyn Read + Send> = match s {
            ChunkSource::Memory(b) => Box::new(std::io::Cursor::new(b)),
            ChunkSource::File { path, .. } => Box::new(std::io::BufReader::with_capacity(
                1 << 20,
                std::fs::File::open(path)?,
            )),
        };
        let part: Box<dyn Read + Send> = if gzip {
            Box::new(MultiGzDecoder::new(raw))
        } else {
            raw
        };
        reader = Box::new(reader.chain(part));
    }
    Ok(reader)
}

fn io_err(e: std::io::Error) -> Error {
    Error::Store {
        path: PathBuf::from("<pos>"),
        message: e.to_string(),
    }
}

/// Fields of a message the POS sends.
struct Reply {
    subject: Option<String>,
    file_name: Option<String>,
    content_type: Option<String>,
}

async fn deliver(
    state: &Arc<AppState>,
    from: &str,
    to: &str,
    local_id: Option<String>,
    reply: Reply,
    chunks: Vec<Received>,
) -> Result<Message, Error> {
    let now = state.config.clock.now();
    let id = state.store.new_id(now);
    let sizes: Vec<Option<u64>> = chunks.iter().map(|c| Some(c.size())).collect();
    for (i, c) in chunks.into_iter().enumerate() {
        state.store.commit_chunk(&id, i as u32 + 1, c).await?;
    }
    let m = state.store.insert(Message {
        subject: reply.subject,
        local_id,
        file_name: reply.file_name,
        content_type: reply.content_type,
        total_chunks: sizes.len() as u32,
        chunks: sizes,
        ..Message::new(
            id,
            MessageType::Data,
            Some(from.to_string()),
            to.to_string(),
            POS_WORKFLOW.to_string(),
            now.timestamp_micros(),
        )
    });
    state.store.persist(vec![m.clone()]).await?;
    state.on_accepted(&m);
    Ok(m)
}

async fn run_job(state: Arc<AppState>, m: Message, env: PosEnv) -> Result<(), Error> {
    let received = state.config.clock.now();
    let sources: Vec<ChunkSource> = (1..=m.total_chunks)
        .filter_map(|n| {
            let size = m.chunks.get(n as usize - 1).copied().flatten()?;
            state.store.chunk_source(&m.id, n, size)
        })
        .collect();
    if sources.len() != m.total_chunks as usize {
        return Err(Error::Store {
            path: PathBuf::from(&m.id),
            message: "chunk data missing".into(),
        });
    }
    let gzip = m.content_encoding == ContentEncoding::Gzip;
    let sink = ResultSink::new(
        state.pos.chunk_bytes,
        state
            .store
            .tmp_path()
            .and_then(|p| p.parent().map(PathBuf::from)),
    );
    let job_state = state.clone();
    let analysis = crate::store::blocking(move || {
        let reader = open_message(sources, gzip).map_err(io_err)?;
        analyse(reader, &job_state.pos, env, sink).map_err(io_err)
    })
    .await;
    let mut analysis = match analysis {
        Ok(a) => a,
        Err(e) => {
            // e.g. a corrupt gzip stream: the POS cannot read it, so treat it as invalid
            tracing::warn!(message_id = %m.id, error = %e, "POS could not read the submission");
            Analysis {
                size: 1,
                hash: String::new(),
                lines: 0,
                kept_lines: 0,
                invalid: true,
                line_ending: "\r\n",
                result: None,
            }
        }
    };
    let pos_mailbox = m.recipient.clone();
    let sender = m.sender.clone().unwrap_or_default();
    // the POS collects the submission (its data is kept until the job is answered, so that a
    // restart can finish the job)
    if let Ok((acked, true)) =
        state
            .store
            .acknowledge(&m.id, &pos_mailbox, state.config.clock.now())
    {
        state.store.persist(vec![acked]).await?;
    }
    if m.pos_stage == PosStage::JobSent {
        tracing::info!(submission = %m.id, "POS job resumed after a restart");
        return send_result(&state, &m, analysis).await;
    }
    let non_empty = analysis.size > 0;
    let mut duplicate_of = None;
    if non_empty && !analysis.hash.is_empty() {
        let (snapshot, dup) = state.store.record_pos_hash(&m.id, &analysis.hash);
        if let Some(s) = snapshot {
            state.store.persist(vec![s]).await?;
        }
        duplicate_of = dup;
    }
    let unique = duplicate_of.is_none();
    let passed = non_empty && unique;
    let stage = |name: &str, p: Option<bool>| json!({"stage": name, "passed": p});
    let iso = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let now = state.config.clock.now();
    let job = json!({
        "version": 1,
        "id": rand::random::<u32>() % 90_000_000 + 10_000_000,
        "status": if passed { "pending" } else { "failed" },
        "received": iso(received),
        "submitted": iso(crate::clock::from_us(m.accepted_us.unwrap_or(m.created_us))),
        "finished": if passed { serde_json::Value::Null } else { iso(now).into() },
        "stages": [
            stage("validate_non_empty_file", Some(non_empty)),
            stage("validate_is_unique_upload", non_empty.then_some(unique)),
            stage("validate_in_order", passed.then_some(true)),
        ],
        "runs": [],
        "sender_id": sender,
        "dataset_id": "mesh_to_pos",
        "metadata": {
            "request": {
                "extra": {
                    "sending_mailbox": sender,
                    "landing_mailbox": pos_mailbox,
                    "message_id": m.id,
                    "filename": m.file_name.clone().unwrap_or_else(|| format!("{}.dat", m.id)),
                    "local_id": m.local_id,
                    "subject": m.subject,
                    "compressed": m.compressed || gzip,
                }
            },
            "filename": m.file_name.clone().unwrap_or_else(|| format!("{}.dat", m.id)),
            "filesize": analysis.size,
            "file_hash": analysis.hash,
        },
    });
    let mut job_body = job.to_string().into_bytes();
    job_body.push(b'\n');
    let job_msg = deliver(
        &state,
        &pos_mailbox,
        &sender,
        m.local_id.clone(),
        Reply {
            subject: Some("SUCCESS".into()),
            file_name: None,
            content_type: Some("application/json".into()),
        },
        vec![stage_bytes(&state, job_body)?],
    )
    .await?;
    tracing::info!(
        submission = %m.id,
        job_message = %job_msg.id,
        lines = analysis.lines,
        bytes = analysis.size,
        non_empty,
        unique,
        "POS job created"
    );
    if !passed {
        if let Some(s) = analysis.result.take() {
            s.discard();
        }
        return finish(&state, &m).await;
    }
    if let Some(snapshot) = state.store.set_pos_stage(&m.id, PosStage::JobSent) {
        state.store.persist(vec![snapshot]).await?;
    }
    send_result(&state, &m, analysis).await
}

/// Marks a submission answered and frees its data.
async fn finish(state: &Arc<AppState>, m: &Message) -> Result<(), Error> {
    if let Some(snapshot) = state.store.set_pos_stage(&m.id, PosStage::Done) {
        state.store.persist(vec![snapshot.clone()]).await?;
        state.store.drop_data(&snapshot).await;
    }
    Ok(())
}

/// After the configured delay, sends the result of a job whose "job created" message is out.
async fn send_result(
    state: &Arc<AppState>,
    m: &Message,
    mut analysis: Analysis,
) -> Result<(), Error> {
    if !state.pos.delay.is_zero() {
        tokio::time::sleep(state.pos.delay).await;
    }
    let chunks = match (analysis.invalid, analysis.result.take()) {
        (false, Some(sink)) => {
            crate::store::blocking(move || sink.finish().map_err(io_err)).await?
        }
        (_, other) => {
            if let Some(s) = other {
                s.discard();
            }
            let line = format!("{INVALID_FILE_LINE}{}", analysis.line_ending);
            vec![stage_bytes(state, line.into_bytes())?]
        }
    };
    let result = deliver(
        state,
        &m.recipient,
        m.sender.as_deref().unwrap_or_default(),
        m.local_id.clone(),
        Reply {
            subject: m.subject.clone(),
            file_name: m.file_name.clone(),
            content_type: None,
        },
        chunks,
    )
    .await?;
    tracing::info!(
        submission = %m.id,
        result_message = %result.id,
        invalid = analysis.invalid,
        lines = analysis.lines,
        kept = analysis.kept_lines,
        "POS result sent"
    );
    finish(state, m).await
}

/// A small body as a chunk ready to commit (a durable temp file for the disk store).
fn stage_bytes(state: &AppState, data: Vec<u8>) -> Result<Received, Error> {
    match state.store.tmp_path() {
        None => Ok(Received::Memory(Bytes::from(data))),
        Some(tmp) => {
            let size = data.len() as u64;
            let mut f = create_private(&tmp).map_err(|e| Error::io(&tmp, e))?;
            f.write_all(&data).map_err(|e| Error::io(&tmp, e))?;
            f.sync_all().map_err(|e| Error::io(&tmp, e))?;
            Ok(Received::File { tmp, size })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_11() {
        assert!(is_valid_nhs_number(b"9434765919"));
        assert!(!is_valid_nhs_number(b"9434765918"));
        assert!(!is_valid_nhs_number(b"9991234560")); // remainder 1: never valid
        assert!(is_valid_nhs_number(b"0000000000"));
        assert!(!is_valid_nhs_number(b"943476591"));
        assert!(!is_valid_nhs_number(b"94347659a9"));
        for line in TEST_PATIENTS.lines().skip(1) {
            let n = line.split(',').nth(1).unwrap();
            assert!(is_valid_nhs_number(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn pos_lines() {
        assert_eq!(parse_pos_line(b"9434765919,\r\n"), Some(9434765919));
        assert_eq!(parse_pos_line(b"9434765919\n"), Some(9434765919));
        assert_eq!(parse_pos_line(b"9434765919"), Some(9434765919));
        assert_eq!(parse_pos_line(b"9434765919,"), Some(9434765919));
        assert_eq!(parse_pos_line(b"9434765919,,\n"), None);
        assert_eq!(parse_pos_line(b" 9434765919\n"), None);
        assert_eq!(parse_pos_line(b"\n"), None);
        assert_eq!(parse_pos_line(b"943 476 5919\n"), None);
    }

    #[test]
    fn optout_hash_is_deterministic_and_near_the_rate() {
        assert_eq!(optout_hash(9434765919, 7), optout_hash(9434765919, 7));
        assert_ne!(optout_hash(9434765919, 7), optout_hash(9434765919, 8));
        let hits = (0..100_000u64)
            .filter(|i| opted_out_by_rate(9_000_000_000 + i, 42, 0.05))
            .count();
        assert!((4_500..5_500).contains(&hits), "{hits}");
        assert!(!opted_out_by_rate(1, 1, 0.0));
        assert!(opted_out_by_rate(1, 1, 1.0));
        // pinned: changing the hash changes every synthetic answer
        assert_eq!(optout_hash(0, 0), mix(mix(0)));
    }

    fn run(input: &[u8], env: PosEnv, rate: f64) -> (Analysis, Vec<u8>) {
        let engine = PosEngine::new(
            &PosConfig {
                optout_rate: rate,
                ..PosConfig::default()
            },
            7,
        );
        let sink = ResultSink::new(7, None);
        let mut a = analyse(
            Box::new(std::io::Cursor::new(input.to_vec())),
            &engine,
            env,
            sink,
        )
        .unwrap();
        let mut out = Vec::new();
        if let Some(s) = a.result.take() {
            for c in s.finish().unwrap() {
                if let Received::Memory(b) = c {
                    out.extend_from_slice(&b);
                }
            }
        }
        (a, out)
    }

    #[test]
    fn int_patients_filtered_with_line_endings_kept() {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for line in TEST_PATIENTS.lines().filter(|l| l.starts_with("int,")) {
            let f: Vec<&str> = line.split(',').collect();
            let l = format!("{},\r\n", f[1]);
            input.extend_from_slice(l.as_bytes());
            if f[2] == "no" {
                expected.extend_from_slice(l.as_bytes());
            }
        }
        let (a, out) = run(&input, PosEnv::Int, 0.0);
        assert!(!a.invalid);
        assert_eq!(a.lines, 20);
        assert_eq!(a.kept_lines, 10);
        assert_eq!(out, expected);
        // LIVE table does not opt out INT patients
        let (a, out) = run(&input, PosEnv::Live, 0.0);
        assert_eq!(a.kept_lines, 20);
        assert_eq!(out, input);
    }

    #[test]
    fn invalid_and_unterminated_lines() {
        let (a, _) = run(b"9434765919,\n123\n", PosEnv::Int, 0.0);
        assert!(a.invalid);
        assert_eq!(a.line_ending, "\n");
        let (a, out) = run(b"9434765919\n9434765919", PosEnv::Int, 0.0);
        assert!(!a.invalid);
        assert_eq!(out, b"9434765919\n9434765919");
        let (a, _) = run(&[b'1'; 1000], PosEnv::Int, 0.0);
        assert!(a.invalid);
        let (a, _) = run(b"", PosEnv::Int, 0.0);
        assert_eq!(a.size, 0);
        let (_, out) = run(b"9434765919\n", PosEnv::Int, 1.0);
        assert!(out.is_empty());
    }
}
