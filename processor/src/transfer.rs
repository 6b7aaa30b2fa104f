//! Talking to the POS over MESH: [`send`] prepared `.dat` + `.ctl` pairs, [`collect`] the
//! replies. Everything that happens is journaled ([`crate::journal`]) at the moment it becomes
//! true, so either step can be interrupted at any point and run again:
//!
//! - a pair whose LocalId and SHA-256 are journaled as submitted is never sent again;
//! - a chunked upload that was cut off resumes from its first missing chunk (the journal
//!   records each accepted chunk; MESH tracking confirms the message is still uploading);
//! - a reply is written to the work directory (temporary name, fsync, rename, mode 0600),
//!   journaled, and only then acknowledged, so MESH never forgets a reply we have not kept.
//!
//! What the POS sends back for one submission (`ndop-domain.md` §2.3, §3.2; mock-mesh `pos`),
//! all carrying the submission's `Mex-LocalID`: a "job created" JSON message (`Mex-Subject:
//! SUCCESS`, `status` `pending`, or `failed` if the file was empty or a duplicate), then the
//! cleaned file (the submitted numbers without an opt-out, possibly none) or the single line
//! `The file contains one or more invalid NHS Numbers.`; MESH itself may add REPORT messages
//! (collection or non-delivery, linked to the submission). Replies are matched to submissions by
//! LocalId (else by Subject, or a report's linked message id) and sender; anything else stays
//! in the inbox and is listed as unrecognised.
//!
//! No NHS number, secret or message body is ever logged: only ids, names, counts and sizes.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mesh_client::{MeshClient, MessageMeta, MessageType, SendOptions};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::ctl::{read_control, ControlFile};
use crate::error::Error;
use crate::files::{create_private_dir, sync_dir, write_atomic};
use crate::journal::{self, ChunkDone, Entry, Journal, Reply, ReplyKind, Started, Submission};

/// The POS's whole answer to a file with any invalid line (`ndop-domain.md` §3.2).
pub const INVALID_NUMBERS_LINE: &str = crate::pos::REJECTION_LINE;

/// Sub-directory of the work directory where replies are stored.
pub const REPLY_DIR: &str = "replies";

/// What can stop a send or a collect.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A local problem: a file, the journal, a malformed `.ctl`, a conflict.
    #[error(transparent)]
    Local(#[from] Error),
    /// MESH refused or could not be reached (after the client's retries).
    #[error("{context}: {source}")]
    Mesh {
        /// What was being done, e.g. `sending X26ABC1-231126-0001.dat`.
        context: String,
        /// The client's error (carries the HTTP status and MESH error code).
        #[source]
        source: Box<mesh_client::Error>,
    },
}

impl TransferError {
    /// The MESH client error, if that is what this is.
    pub fn mesh_error(&self) -> Option<&mesh_client::Error> {
        match self {
            TransferError::Mesh { source, .. } => Some(source.as_ref()),
            TransferError::Local(_) => None,
        }
    }
}

fn mesh(context: impl Into<String>) -> impl FnOnce(mesh_client::Error) -> TransferError {
    let context = context.into();
    move |source| TransferError::Mesh {
        context,
        source: Box::new(source),
    }
}

fn usage(message: String) -> TransferError {
    TransferError::Local(Error::Usage(message))
}

// ---------------------------------------------------------------------------------------------
// Finding the pairs
// ---------------------------------------------------------------------------------------------

/// A `.dat` and the `.ctl` beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pair {
    /// The data file.
    pub dat: PathBuf,
    /// Its control file.
    pub ctl: PathBuf,
    /// What the control file says.
    pub control: ControlFile,
}

/// The `.dat` + `.ctl` pairs named by `inputs`: a directory stands for every pair in it
/// (other files, such as `summary.json`, and hidden temporary files are ignored); a `.dat` or
/// `.ctl` file stands for itself and its partner with the same stem. Every control file is read
/// and checked; a `.dat` without its `.ctl` (or the reverse), a malformed `.ctl`, or two pairs
/// with the same LocalId is an error, so nothing is sent from a half-valid set. Sorted by path.
pub fn find_pairs(inputs: &[PathBuf]) -> Result<Vec<Pair>, TransferError> {
    let mut stems: Vec<PathBuf> = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| Error::read(input, e))?;
        if meta.is_dir() {
            let entries = std::fs::read_dir(input).map_err(|e| Error::read(input, e))?;
            for entry in entries {
                let path = entry.map_err(|e| Error::read(input, e))?.path();
                let hidden = path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                if !hidden && matches!(extension(&path), Some("dat" | "ctl")) {
                    stems.push(path.with_extension(""));
                }
            }
        } else {
            match extension(input) {
                Some("dat" | "ctl") => stems.push(input.with_extension("")),
                _ => {
                    return Err(usage(format!(
                        "{}: expected a directory, a .dat or a .ctl file",
                        input.display()
                    )))
                }
            }
        }
    }
    stems.sort();
    stems.dedup();
    let mut pairs = Vec::with_capacity(stems.len());
    let mut local_ids = HashSet::new();
    for stem in stems {
        let (dat, ctl) = (stem.with_extension("dat"), stem.with_extension("ctl"));
        for (have, missing) in [(&dat, &ctl), (&ctl, &dat)] {
            if !missing.is_file() {
                return Err(usage(format!(
                    "{} has no partner {}",
                    have.display(),
                    missing.display()
                )));
            }
        }
        let control = read_control(&ctl)?;
        if !local_ids.insert(control.local_id.clone()) {
            return Err(usage(format!(
                "{}: LocalId {} is used by another pair; replies could not be told apart",
                ctl.display(),
                control.local_id
            )));
        }
        pairs.push(Pair { dat, ctl, control });
    }
    Ok(pairs)
}

fn extension(path: &Path) -> Option<&str> {
    path.extension().and_then(|e| e.to_str())
}

// ---------------------------------------------------------------------------------------------
// send
// ---------------------------------------------------------------------------------------------

/// What happened to one pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SendOutcome {
    /// Sent now.
    Sent,
    /// An interrupted upload was finished (or found already complete).
    Resumed,
    /// The journal says it was sent before; nothing was sent.
    AlreadySent,
}

/// One pair in a [`SendReport`].
#[derive(Debug, Clone, Serialize)]
pub struct SentFile {
    /// The `.dat`.
    pub file: PathBuf,
    /// Its LocalId.
    pub local_id: String,
    /// Its Subject.
    pub subject: String,
    /// The recipient mailbox.
    pub to: String,
    /// The MESH message id.
    pub message_id: String,
    /// SHA-256 of the `.dat`.
    pub sha256: String,
    /// Lines in the `.dat`.
    pub records: u64,
    /// Size of the `.dat`.
    pub bytes: u64,
    /// What happened.
    pub outcome: SendOutcome,
}

/// The result of [`send`].
#[derive(Debug, Clone, Serialize)]
pub struct SendReport {
    /// Every pair, in order.
    pub files: Vec<SentFile>,
    /// Pairs sent now.
    pub sent: usize,
    /// Interrupted uploads finished.
    pub resumed: usize,
    /// Pairs skipped because the journal has them.
    pub already_sent: usize,
    /// Bytes of files uploaded by this run.
    pub bytes_sent: u64,
}

/// Content facts of a `.dat`.
struct Digest256 {
    sha256: String,
    records: u64,
    bytes: u64,
}

/// Sends every pair named by `inputs` (see [`find_pairs`]) that the journal does not already
/// have, in path order, and journals each submission right after MESH accepts it.
///
/// `progress(sent, total)` is called with bytes of files uploaded so far and the bytes this run
/// has to upload. Each `.ctl`'s `From_DTS`, if present, must be the client's mailbox. A pair
/// whose LocalId was journaled with other content is refused (its replies would be
/// ambiguous). Stops at the first failure; what was sent before it stays journaled.
pub async fn send(
    client: &MeshClient,
    journal: &mut Journal,
    inputs: &[PathBuf],
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<SendReport, TransferError> {
    let pairs = find_pairs(inputs)?;
    let mut planned = Vec::with_capacity(pairs.len());
    for pair in pairs {
        if let Some(from) = &pair.control.from_dts {
            if !from.eq_ignore_ascii_case(client.mailbox()) {
                return Err(usage(format!(
                    "{}: From_DTS is {from} but the MESH mailbox is {} (MESH error 07)",
                    pair.ctl.display(),
                    client.mailbox()
                )));
            }
        }
        let digest = digest(&pair.dat).await?;
        if let Some(previous) = journal.submission(&pair.control.local_id) {
            if previous.sha256 != digest.sha256 {
                return Err(usage(format!(
                    "{}: LocalId {} was already sent (message {}) with different content; \
                     prepare the file again to get a new LocalId",
                    pair.dat.display(),
                    pair.control.local_id,
                    previous.message_id
                )));
            }
        }
        planned.push((pair, digest));
    }
    let total: u64 = planned
        .iter()
        .filter(|(p, _)| journal.submission(&p.control.local_id).is_none())
        .map(|(_, d)| d.bytes)
        .sum();
    let sent_bytes = AtomicU64::new(0);
    progress(0, total);
    let mut report = SendReport {
        files: Vec::new(),
        sent: 0,
        resumed: 0,
        already_sent: 0,
        bytes_sent: 0,
    };
    for (pair, digest) in planned {
        let (message_id, outcome) = match journal.submission(&pair.control.local_id) {
            Some(previous) => (previous.message_id.clone(), SendOutcome::AlreadySent),
            None => {
                let base = sent_bytes.load(Ordering::Relaxed);
                let report_bytes = |n: u64| {
                    sent_bytes.store(base + n, Ordering::Relaxed);
                    progress(base + n, total);
                };
                let done = send_pair(client, journal, &pair, &digest, &report_bytes).await?;
                sent_bytes.store(base + digest.bytes, Ordering::Relaxed);
                done
            }
        };
        match outcome {
            SendOutcome::Sent => report.sent += 1,
            SendOutcome::Resumed => report.resumed += 1,
            SendOutcome::AlreadySent => report.already_sent += 1,
        }
        tracing::info!(local_id = %pair.control.local_id, %message_id, ?outcome, "submission");
        report.files.push(SentFile {
            file: pair.dat,
            local_id: pair.control.local_id,
            subject: pair.control.subject,
            to: pair.control.to_dts,
            message_id,
            sha256: digest.sha256,
            records: digest.records,
            bytes: digest.bytes,
            outcome,
        });
    }
    report.bytes_sent = sent_bytes.load(Ordering::Relaxed);
    Ok(report)
}

/// Sends (or resumes) one pair and journals it as submitted.
async fn send_pair(
    client: &MeshClient,
    journal: &mut Journal,
    pair: &Pair,
    digest: &Digest256,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<(String, SendOutcome), TransferError> {
    let c = &pair.control;
    let file_name = file_name(&pair.dat);
    let context = format!("sending {}", pair.dat.display());
    let mut opts = SendOptions {
        to: c.to_dts.clone(),
        workflow_id: c.workflow_id.clone(),
        subject: Some(c.subject.clone()),
        local_id: Some(c.local_id.clone()),
        file_name: Some(file_name.clone()),
        checksum: Some(format!("sha256:{}", digest.sha256)),
        ..SendOptions::default()
    };
    let submitted = |message_id: &str| {
        Entry::Submitted(Submission {
            local_id: c.local_id.clone(),
            message_id: message_id.to_owned(),
            file: file_name.clone(),
            sha256: digest.sha256.clone(),
            records: digest.records,
            bytes: digest.bytes,
            subject: c.subject.clone(),
            to: c.to_dts.clone(),
            workflow_id: c.workflow_id.clone(),
            time: journal::now(),
        })
    };

    if let Some(upload) = journal.upload_in_progress(&c.local_id, &digest.sha256) {
        let id = upload.started.message_id.clone();
        let status = match client.track(&id).await {
            Ok(t) => Some(t.status),
            Err(e) if e.status() == Some(404) => None,
            Err(e) => return Err(mesh(format!("tracking {id}"))(e)),
        };
        match status.as_deref() {
            Some("accepted" | "acknowledged") => {
                // the last chunk arrived; only its journal line was lost
                journal.append(submitted(&id))?;
                progress(digest.bytes);
                return Ok((id, SendOutcome::Resumed));
            }
            Some("uploading") => {
                opts.chunk_size = Some(upload.started.chunk_size);
                opts.compress = upload.started.compress;
                let plan = client
                    .plan_send(&pair.dat, &opts)
                    .await
                    .map_err(mesh(&context))?;
                if plan.chunks == upload.started.chunks && plan.compress == upload.started.compress
                {
                    progress(plan.bytes_through(upload.chunks_done));
                    tracing::info!(message_id = %id, from_chunk = upload.chunks_done + 1, "resuming upload");
                    upload_rest(
                        client,
                        journal,
                        pair,
                        &opts,
                        &id,
                        upload.chunks_done + 1,
                        &plan,
                        progress,
                    )
                    .await?;
                    journal.append(submitted(&id))?;
                    return Ok((id, SendOutcome::Resumed));
                }
                tracing::warn!(message_id = %id, "cannot resume with the current chunking; sending afresh");
            }
            other => {
                tracing::warn!(message_id = %id, status = ?other, "interrupted upload is gone; sending afresh");
            }
        }
        opts.chunk_size = None;
        opts.compress = false;
    }

    let plan = client
        .plan_send(&pair.dat, &opts)
        .await
        .map_err(mesh(&context))?;
    // pin the cut, so that a resume by a later run cuts the file the same way
    opts.chunk_size = Some(plan.chunk_size);
    opts.compress = plan.compress;
    let id = client
        .send_chunk(&pair.dat, &opts, None, 1)
        .await
        .map_err(mesh(&context))?;
    if plan.chunks > 1 {
        journal.append(Entry::Started(Started {
            local_id: c.local_id.clone(),
            message_id: id.clone(),
            file: file_name.clone(),
            sha256: digest.sha256.clone(),
            bytes: digest.bytes,
            chunks: plan.chunks,
            chunk_size: plan.chunk_size,
            compress: plan.compress,
            time: journal::now(),
        }))?;
    }
    progress(plan.bytes_through(1));
    upload_rest(client, journal, pair, &opts, &id, 2, &plan, progress).await?;
    journal.append(submitted(&id))?;
    Ok((id, SendOutcome::Sent))
}

/// Uploads chunks `from..=N`, journaling each but the last (the caller journals the whole).
#[allow(clippy::too_many_arguments)]
async fn upload_rest(
    client: &MeshClient,
    journal: &mut Journal,
    pair: &Pair,
    opts: &SendOptions,
    message_id: &str,
    from: u32,
    plan: &mesh_client::ChunkPlan,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<(), TransferError> {
    for n in from..=plan.chunks {
        client
            .send_chunk(&pair.dat, opts, Some(message_id), n)
            .await
            .map_err(mesh(format!(
                "sending chunk {n} of {} of {}",
                plan.chunks,
                pair.dat.display()
            )))?;
        if n < plan.chunks {
            journal.append(Entry::Chunk(ChunkDone {
                local_id: pair.control.local_id.clone(),
                message_id: message_id.to_owned(),
                chunk: n,
                time: journal::now(),
            }))?;
        }
        progress(plan.bytes_through(n));
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// SHA-256, line count and size of a file, read once off the async threads.
async fn digest(path: &Path) -> Result<Digest256, TransferError> {
    let owned = path.to_path_buf();
    let result = tokio::task::spawn_blocking(move || -> std::io::Result<Digest256> {
        let mut file = std::fs::File::open(&owned)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let (mut bytes, mut newlines, mut last) = (0u64, 0u64, b'\n');
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            newlines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
            bytes += n as u64;
            last = buf[n - 1];
        }
        Ok(Digest256 {
            sha256: hex::encode(hasher.finalize()),
            records: newlines + u64::from(last != b'\n'),
            bytes,
        })
    })
    .await
    .map_err(|e| Error::read(path, std::io::Error::other(e)))?;
    result.map_err(|e| TransferError::Local(Error::read(path, e)))
}

// ---------------------------------------------------------------------------------------------
// collect
// ---------------------------------------------------------------------------------------------

/// How long and how often [`collect`] polls.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// Pause between two polls of the inbox (MESH asks for no more than one poll every few
    /// minutes against the real service; the default is 5 minutes).
    pub interval: Duration,
    /// Stop polling after this long even if replies are missing (default 2 hours; the POS
    /// usually answers within an hour).
    pub timeout: Duration,
}

impl Default for CollectOptions {
    fn default() -> Self {
        CollectOptions {
            interval: Duration::from_secs(300),
            timeout: Duration::from_secs(2 * 3600),
        }
    }
}

/// A reply stored by this run.
#[derive(Debug, Clone, Serialize)]
pub struct CollectedReply {
    /// The journal record (kind, LocalId, message id, file, hash, counts, status).
    #[serde(flatten)]
    pub reply: Reply,
    /// Where the reply was written.
    pub path: PathBuf,
    /// True if a final reply for the same submission was already stored (a duplicate
    /// delivery); use the first.
    pub duplicate: bool,
}

/// A message left in the inbox.
#[derive(Debug, Clone, Serialize)]
pub struct UnrecognisedMessage {
    /// Its MESH message id.
    pub message_id: String,
    /// `data` or `report`.
    pub message_type: &'static str,
    /// Sending mailbox.
    pub sender: Option<String>,
    /// Workflow.
    pub workflow_id: Option<String>,
    /// Its LocalId, if any.
    pub local_id: Option<String>,
    /// Why it was left.
    pub reason: String,
}

/// The result of [`collect`].
#[derive(Debug, Clone, Serialize)]
pub struct CollectReport {
    /// Replies stored (and acknowledged) by this run, in order.
    pub replies: Vec<CollectedReply>,
    /// Messages that were stored by an earlier run but not acknowledged; acknowledged now.
    pub acknowledged_again: Vec<String>,
    /// Messages left in the inbox, with the reason.
    pub unrecognised: Vec<UnrecognisedMessage>,
    /// LocalIds of journaled submissions still without a final reply.
    pub pending: Vec<String>,
    /// True when every journaled submission has its final reply.
    pub complete: bool,
    /// Inbox polls made.
    pub polls: u32,
    /// Wall-clock seconds.
    pub elapsed_seconds: f64,
}

/// Polls the inbox until every journaled submission has its final reply or `opts.timeout`
/// has passed (at least one poll either way), storing and acknowledging the replies that
/// belong to our submissions into `work_dir/replies/`, where `work_dir` is the journal's
/// directory. Timing out is not an error: the report lists what is still pending.
pub async fn collect(
    client: &MeshClient,
    journal: &mut Journal,
    opts: &CollectOptions,
) -> Result<CollectReport, TransferError> {
    let started = Instant::now();
    let work_dir = journal
        .path()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let reply_dir = work_dir.join(REPLY_DIR);
    create_private_dir(&reply_dir)?;
    let mut report = CollectReport {
        replies: Vec::new(),
        acknowledged_again: Vec::new(),
        unrecognised: Vec::new(),
        pending: Vec::new(),
        complete: false,
        polls: 0,
        elapsed_seconds: 0.0,
    };
    // messages judged not ours this run: looked at once only
    let mut left: HashSet<String> = HashSet::new();
    loop {
        report.polls += 1;
        let ids = client
            .list_inbox(None)
            .await
            .map_err(mesh("listing the inbox"))?;
        for id in ids {
            if left.contains(&id) {
                continue;
            }
            if journal.reply(&id).is_some() {
                // stored and journaled before a crash, not yet acknowledged
                client
                    .acknowledge(&id)
                    .await
                    .map_err(mesh(format!("acknowledging {id}")))?;
                report.acknowledged_again.push(id);
                continue;
            }
            let meta = match client.head_message(&id).await {
                Ok(meta) => meta,
                // taken or expired between the listing and now
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(mesh(format!("reading the headers of {id}"))(e)),
            };
            let Some(local_id) = match_submission(journal, &meta) else {
                left.insert(id.clone());
                report
                    .unrecognised
                    .push(unrecognised(&meta, "not a reply to a journaled submission"));
                continue;
            };
            match store_reply(client, journal, &reply_dir, &work_dir, &meta, &local_id).await? {
                Ok(collected) => {
                    client
                        .acknowledge(&id)
                        .await
                        .map_err(mesh(format!("acknowledging {id}")))?;
                    tracing::info!(
                        message_id = %id,
                        local_id = %local_id,
                        kind = ?collected.reply.reply,
                        "reply stored and acknowledged"
                    );
                    report.replies.push(collected);
                }
                Err(reason) => {
                    left.insert(id.clone());
                    report.unrecognised.push(unrecognised(&meta, reason));
                }
            }
        }
        report.pending = journal
            .submissions()
            .filter(|s| !journal.is_answered(&s.local_id))
            .map(|s| s.local_id.clone())
            .collect();
        report.pending.dedup();
        if report.pending.is_empty() {
            report.complete = true;
            break;
        }
        if started.elapsed() + opts.interval > opts.timeout {
            break;
        }
        tokio::time::sleep(opts.interval).await;
    }
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// 404 / 410: the message left the inbox (acknowledged elsewhere, expired) after the listing.
fn gone(e: &mesh_client::Error) -> bool {
    matches!(e.status(), Some(404 | 410))
}

fn unrecognised(meta: &MessageMeta, reason: impl Into<String>) -> UnrecognisedMessage {
    UnrecognisedMessage {
        message_id: meta.message_id.clone(),
        message_type: match meta.message_type {
            MessageType::Report => "report",
            _ => "data",
        },
        sender: meta.sender.clone(),
        workflow_id: meta.workflow_id.clone(),
        local_id: meta.local_id.clone(),
        reason: reason.into(),
    }
}

/// The LocalId of the journaled submission `meta` answers, if any: a data message must come
/// from the mailbox the submission went to and carry its LocalId (or, lacking one, its
/// Subject); a MESH report must carry its LocalId or link to its message id.
fn match_submission(journal: &Journal, meta: &MessageMeta) -> Option<String> {
    let by_local_id = meta.local_id.as_deref().and_then(|l| journal.submission(l));
    match meta.message_type {
        MessageType::Report => by_local_id
            .or_else(|| {
                let linked = meta.linked_message_id.as_deref()?;
                journal.submissions().find(|s| s.message_id == linked)
            })
            .map(|s| s.local_id.clone()),
        _ => {
            let from = meta.sender.as_deref()?;
            let submission = match (&meta.local_id, by_local_id) {
                (Some(_), found) => found,
                (None, _) => {
                    let subject = meta.subject.as_deref()?;
                    journal
                        .submissions()
                        .filter(|s| s.subject == subject)
                        .last()
                }
            }?;
            submission
                .to
                .eq_ignore_ascii_case(from)
                .then(|| submission.local_id.clone())
        }
    }
}

/// Downloads, classifies, stores and journals one reply. The outer error is fatal; the inner
/// `Err` is the reason a message is left in the inbox.
async fn store_reply(
    client: &MeshClient,
    journal: &mut Journal,
    reply_dir: &Path,
    work_dir: &Path,
    meta: &MessageMeta,
    local_id: &str,
) -> Result<Result<CollectedReply, String>, TransferError> {
    let id_part = safe_name(&meta.message_id);
    let (kind, path, facts) = if meta.message_type == MessageType::Report {
        // a report has no body; its meaning is in the headers: keep them as JSON
        let json = serde_json::to_vec_pretty(&serde_json::json!({
            "message_id": meta.message_id,
            "local_id": meta.local_id,
            "linked_message_id": meta.linked_message_id,
            "workflow_id": meta.workflow_id,
            "status_code": meta.status_code,
            "status_event": meta.status_event,
            "status_description": meta.status_description,
            "status_success": meta.status_success,
        }))
        .map_err(|e| Error::write(reply_dir, std::io::Error::other(e)))?;
        let name = format!("{local_id}.report.{id_part}.json");
        let path = write_atomic(reply_dir, &name, &json)?;
        sync_dir(reply_dir)?;
        let facts = Facts {
            sha256: hex::encode(Sha256::digest(&json)),
            bytes: json.len() as u64,
            records: None,
            job_status: None,
        };
        (ReplyKind::Report, path, facts)
    } else {
        let temp = reply_dir.join(format!(".{id_part}.download"));
        match client.download_to(&meta.message_id, &temp).await {
            Ok(_) => {}
            Err(e) if gone(&e) => return Ok(Err("no longer available for download".into())),
            Err(e) => return Err(mesh(format!("downloading {}", meta.message_id))(e)),
        }
        let (kind, facts) = match classify(&temp, meta).await {
            Ok(Ok(found)) => found,
            Ok(Err(reason)) => {
                let _ = std::fs::remove_file(&temp);
                return Ok(Err(reason));
            }
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
        };
        let ext = match kind {
            ReplyKind::JobCreated => "job.json",
            ReplyKind::Cleaned => "cleaned.dat",
            _ => "invalid.txt",
        };
        let path = reply_dir.join(format!("{local_id}.{id_part}.{ext}"));
        std::fs::rename(&temp, &path).map_err(|e| Error::write(&path, e))?;
        sync_dir(reply_dir)?;
        (kind, path, facts)
    };
    let relative = path
        .strip_prefix(work_dir)
        .unwrap_or(&path)
        .to_string_lossy()
        .into_owned();
    let reply = Reply {
        local_id: local_id.to_owned(),
        message_id: meta.message_id.clone(),
        reply: kind,
        file: relative,
        sha256: facts.sha256,
        bytes: facts.bytes,
        records: facts.records,
        job_status: facts.job_status,
        status_code: meta.status_code.clone(),
        status_event: meta.status_event.clone(),
        status_description: meta.status_description.clone(),
        status_success: meta.status_success,
        time: journal::now(),
    };
    let duplicate = reply.is_final() && journal.is_answered(local_id);
    journal.append(Entry::Reply(reply.clone()))?;
    Ok(Ok(CollectedReply {
        reply,
        path,
        duplicate,
    }))
}

/// What classification learnt about a stored reply.
#[derive(Debug)]
struct Facts {
    sha256: String,
    bytes: u64,
    records: Option<u64>,
    job_status: Option<String>,
}

/// Largest job-created JSON read.
const MAX_JOB_JSON: u64 = 1 << 20;

/// Reads a downloaded data reply once: the invalid-numbers line, a job-created JSON object
/// (Subject `SUCCESS` or a JSON content type), or a cleaned file (every line ten digits passing
/// Modulus 11, an optional comma, CRLF or LF; empty = everyone opted out). Anything else is
/// `Ok(Err(reason))`.
async fn classify(
    path: &Path,
    meta: &MessageMeta,
) -> Result<Result<(ReplyKind, Facts), String>, TransferError> {
    let owned = path.to_path_buf();
    let job_like = meta.subject.as_deref() == Some("SUCCESS")
        || meta
            .content_type
            .as_deref()
            .is_some_and(|t| t.contains("json"));
    let result = tokio::task::spawn_blocking(move || classify_file(&owned, job_like))
        .await
        .map_err(|e| Error::read(path, std::io::Error::other(e)))?;
    result.map_err(|e| TransferError::Local(Error::read(path, e)))
}

fn classify_file(
    path: &Path,
    job_like: bool,
) -> std::io::Result<Result<(ReplyKind, Facts), String>> {
    let size = std::fs::metadata(path)?.len();
    if size <= MAX_JOB_JSON {
        let bytes = std::fs::read(path)?;
        let facts = |records, job_status| Facts {
            sha256: hex::encode(Sha256::digest(&bytes)),
            bytes: bytes.len() as u64,
            records,
            job_status,
        };
        let text = std::str::from_utf8(&bytes).unwrap_or("").trim();
        if text == INVALID_NUMBERS_LINE {
            return Ok(Ok((ReplyKind::InvalidNumbers, facts(None, None))));
        }
        if job_like || text.starts_with('{') {
            if let Ok(serde_json::Value::Object(job)) = serde_json::from_str(text) {
                let status = job
                    .get("status")
                    .and_then(|s| s.as_str())
                    .map(str::to_owned)
                    .unwrap_or_else(|| "unknown".into());
                return Ok(Ok((ReplyKind::JobCreated, facts(None, Some(status)))));
            }
            if job_like {
                return Ok(Err(
                    "a job-created message whose body is not a JSON object".into()
                ));
            }
        }
    }
    // a cleaned file: stream it, checking every line
    let mut reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut hasher = Sha256::new();
    let mut line = Vec::with_capacity(64);
    let (mut records, mut bytes, mut line_no) = (0u64, 0u64, 0u64);
    loop {
        line.clear();
        let n = std::io::BufRead::read_until(
            &mut std::io::Read::take(&mut reader, 4096),
            b'\n',
            &mut line,
        )?;
        if n == 0 {
            break;
        }
        line_no += 1;
        hasher.update(&line);
        bytes += n as u64;
        if !crate::pos::is_reply_line(&line) {
            return Ok(Err(format!(
                "line {line_no} is not an NHS number line: not a POS reply this tool knows"
            )));
        }
        records += 1;
    }
    Ok(Ok((
        ReplyKind::Cleaned,
        Facts {
            sha256: hex::encode(hasher.finalize()),
            bytes,
            records: Some(records),
            job_status: None,
        },
    )))
}

/// A message id reduced to `[A-Za-z0-9_-]` for use in a file name.
fn safe_name(id: &str) -> String {
    let s: String = id
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "unnamed".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::render as control_file;

    fn classify_bytes(bytes: &[u8], job_like: bool) -> Result<(ReplyKind, Facts), String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        std::fs::write(&path, bytes).unwrap();
        classify_file(&path, job_like).unwrap()
    }

    #[test]
    fn replies_are_classified_by_content() {
        let (kind, f) = classify_bytes(b"9694116538,\r\n9694116546,\r\n", false).unwrap();
        assert_eq!(
            (kind, f.records, f.bytes),
            (ReplyKind::Cleaned, Some(2), 26)
        );
        let (kind, f) = classify_bytes(b"9694116538\n9694116546", false).unwrap();
        assert_eq!((kind, f.records), (ReplyKind::Cleaned, Some(2)));
        let (kind, f) = classify_bytes(b"", false).unwrap();
        assert_eq!(
            (kind, f.records),
            (ReplyKind::Cleaned, Some(0)),
            "all opted out"
        );
        let (kind, _) = classify_bytes(
            b"The file contains one or more invalid NHS Numbers.\r\n",
            false,
        )
        .unwrap();
        assert_eq!(kind, ReplyKind::InvalidNumbers);
        let (kind, f) = classify_bytes(br#"{"status": "pending", "stages": []}"#, true).unwrap();
        assert_eq!(
            (kind, f.job_status.as_deref()),
            (ReplyKind::JobCreated, Some("pending"))
        );
        let (kind, f) = classify_bytes(br#"{"status": "failed"}"#, false).unwrap();
        assert_eq!(
            (kind, f.job_status.as_deref()),
            (ReplyKind::JobCreated, Some("failed"))
        );
        // not ours to interpret
        assert!(
            classify_bytes(b"9694116539,\r\n", false).is_err(),
            "bad check digit"
        );
        assert!(classify_bytes(b"hello\n", false).is_err());
        assert!(classify_bytes(b"[1,2]", true).is_err());
        assert!(classify_bytes(&[b'9'; 5000], false).is_err(), "a long line");
        let err = classify_bytes(b"9694116538,\r\nx\r\n", false).unwrap_err();
        assert!(
            err.contains("line 2") && !err.contains("9694116538"),
            "{err}"
        );
    }

    #[test]
    fn pairs_are_found_in_directories_and_from_either_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (stem, local) in [("b", "lid_b"), ("a", "lid_a")] {
            std::fs::write(d.join(format!("{stem}.dat")), b"9694116538,\r\n").unwrap();
            std::fs::write(
                d.join(format!("{stem}.ctl")),
                control_file("X26ABC1", "X26OT154", local, local),
            )
            .unwrap();
        }
        std::fs::write(d.join("summary.json"), b"{}").unwrap();
        std::fs::write(d.join(".c.dat.tmp"), b"").unwrap();
        let pairs = find_pairs(&[d.to_path_buf()]).unwrap();
        let ids: Vec<_> = pairs.iter().map(|p| p.control.local_id.as_str()).collect();
        assert_eq!(ids, ["lid_a", "lid_b"]);
        let same = find_pairs(&[d.join("a.ctl"), d.join("a.dat"), d.join("b.dat")]).unwrap();
        assert_eq!(same, pairs);
        assert!(find_pairs(&[d.join("summary.json")]).is_err());

        std::fs::write(d.join("c.dat"), b"").unwrap();
        let e = find_pairs(&[d.to_path_buf()]).unwrap_err().to_string();
        assert!(e.contains("c.dat has no partner"), "{e}");
        std::fs::write(
            d.join("c.ctl"),
            control_file("X26ABC1", "X26OT154", "s", "lid_a"),
        )
        .unwrap();
        let e = find_pairs(&[d.to_path_buf()]).unwrap_err().to_string();
        assert!(e.contains("LocalId lid_a is used by another pair"), "{e}");
        std::fs::write(d.join("c.ctl"), "<DTSControl/>").unwrap();
        let e = find_pairs(&[d.to_path_buf()]).unwrap_err().to_string();
        assert!(e.contains("c.ctl") && e.contains("malformed"), "{e}");
    }

    #[tokio::test]
    async fn digests_count_lines_with_or_without_a_final_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        for (content, records) in [(&b""[..], 0), (b"a\n", 1), (b"a\nb", 2), (b"a\r\nb\r\n", 2)] {
            std::fs::write(&p, content).unwrap();
            let d = digest(&p).await.unwrap();
            assert_eq!((d.records, d.bytes), (records, content.len() as u64));
            assert_eq!(d.sha256, hex::encode(Sha256::digest(content)));
        }
    }

    #[test]
    fn replies_match_submissions_by_local_id_subject_or_link_and_sender() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        journal
            .append(Entry::Submitted(Submission {
                local_id: "lid".into(),
                message_id: "SENT1".into(),
                file: "a.dat".into(),
                sha256: "00".into(),
                records: 1,
                bytes: 13,
                subject: "subj".into(),
                to: "X26OT154".into(),
                workflow_id: "SPINE_NTT_UPHOLDING".into(),
                time: journal::now(),
            }))
            .unwrap();
        let data = |from: Option<&str>, local: Option<&str>, subject: Option<&str>| {
            let mut m = MessageMeta::default();
            m.sender = from.map(str::to_owned);
            m.local_id = local.map(str::to_owned);
            m.subject = subject.map(str::to_owned);
            m
        };
        let ours = Some("lid".to_string());
        assert_eq!(
            match_submission(&journal, &data(Some("X26OT154"), Some("lid"), None)),
            ours
        );
        assert_eq!(
            match_submission(&journal, &data(Some("x26ot154"), None, Some("subj"))),
            ours
        );
        // wrong sender, unknown LocalId, a LocalId that does not match despite the subject,
        // the job-created subject without a LocalId, no sender at all
        for m in [
            data(Some("X26ABC2"), Some("lid"), None),
            data(Some("X26OT154"), Some("other"), Some("subj")),
            data(Some("X26OT154"), None, Some("SUCCESS")),
            data(None, Some("lid"), None),
        ] {
            assert_eq!(match_submission(&journal, &m), None, "{m:?}");
        }
        let mut report = MessageMeta::default();
        report.message_type = MessageType::Report;
        assert_eq!(match_submission(&journal, &report), None);
        report.linked_message_id = Some("SENT1".into());
        assert_eq!(match_submission(&journal, &report), ours);
        report.linked_message_id = None;
        report.local_id = Some("lid".into());
        assert_eq!(match_submission(&journal, &report), ours);
    }

    #[test]
    fn file_names_from_message_ids_are_safe() {
        assert_eq!(
            safe_name("20200529155357895317_3573F8"),
            "20200529155357895317_3573F8"
        );
        assert_eq!(safe_name("../../etc/passwd"), "______etc_passwd");
        assert_eq!(safe_name(""), "unnamed");
    }
}
