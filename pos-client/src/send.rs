//! [`send`]: each prepared pair MESH does not already have, chunked, journaled, resumable.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use mesh_client::{LocalIdLookup, MeshClient, SendOptions};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{mesh, usage, Error};
use crate::journal::{self, ChunkDone, Entry, Journal, Sending, Started, Submission};
use crate::pairs::{find_pairs, Pair};

/// What happened to one pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SendOutcome {
    /// Sent now.
    Sent,
    /// An interrupted upload was finished, or found already complete in MESH (by its message
    /// id, or by its LocalId when the process died before MESH's answer was journaled).
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
pub(crate) struct Digest256 {
    pub(crate) sha256: String,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
}

/// A `.dat`'s content facts taken as it was written (`processor::dat::DatFile`'s), in this
/// process, just before it is sent: [`send_known`] uses them instead of reading the file for its
/// SHA-256 again.
#[derive(Debug, Clone)]
pub struct KnownDigest {
    /// The `.dat`, as the pair names it (the prepared directory joined with its name).
    pub path: PathBuf,
    /// Lower-case hex SHA-256 of its content.
    pub sha256: String,
    /// Its lines.
    pub records: u64,
    /// Its size.
    pub bytes: u64,
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
) -> Result<SendReport, Error> {
    send_known(client, journal, inputs, &[], progress).await
}

/// [`send`], taking the SHA-256, lines and size of the `.dat` files in `known` from there
/// instead of reading the files for them: only for files written by this process moments before
/// (`ndop run`'s prepare), whose size is still the one known. Any other file is read as by
/// [`send`]; a resumed run, which did not write them, gives none.
pub async fn send_known(
    client: &MeshClient,
    journal: &mut Journal,
    inputs: &[PathBuf],
    known: &[KnownDigest],
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<SendReport, Error> {
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
        let digest = match known_digest(known, &pair.dat) {
            Some(d) => d,
            None => digest(&pair.dat).await?,
        };
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
) -> Result<(String, SendOutcome), Error> {
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
    let submitted = |message_id: &str, adopted: bool| {
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
            adopted,
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
                journal.append(submitted(&id, false))?;
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
                        Message::Existing(&id),
                        upload.chunks_done + 1,
                        &plan,
                        progress,
                    )
                    .await?;
                    journal.append(submitted(&id, false))?;
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
    } else {
        // Chunk 1 may have reached MESH in a run that died before journaling its answer.
        let sending = journal.sending(&c.local_id, &digest.sha256).cloned();
        match look_up(client, pair, digest, sending.as_ref()).await? {
            Found::Nothing => {}
            Found::Complete(id) => {
                tracing::info!(message_id = %id, "MESH already has this submission; adopted, not sent again");
                journal.append(submitted(&id, true))?;
                progress(digest.bytes);
                return Ok((id, SendOutcome::Resumed));
            }
            Found::Uploading(id, sending) => {
                opts.chunk_size = Some(sending.chunk_size);
                opts.compress = sending.compress;
                let plan = client
                    .plan_send(&pair.dat, &opts)
                    .await
                    .map_err(mesh(&context))?;
                if plan.chunks != sending.chunks || plan.compress != sending.compress {
                    return Err(usage(format!(
                        "{}: MESH holds an unfinished upload of LocalId {} (message {id}) that \
                         cannot be finished with the current settings; wait for MESH to expire \
                         it, or prepare the file again to get a new LocalId",
                        pair.dat.display(),
                        c.local_id
                    )));
                }
                journal.append(started(&c.local_id, &id, &file_name, digest, &plan))?;
                tracing::info!(message_id = %id, "found an unfinished upload by its LocalId; resuming it");
                progress(plan.bytes_through(1));
                let existing = Message::Existing(&id);
                upload_rest(client, journal, pair, existing, 2, &plan, progress).await?;
                journal.append(submitted(&id, false))?;
                return Ok((id, SendOutcome::Resumed));
            }
        }
    }

    let plan = client
        .plan_send(&pair.dat, &opts)
        .await
        .map_err(mesh(&context))?;
    // pin the cut, so that a resume by a later run cuts the file the same way
    opts.chunk_size = Some(plan.chunk_size);
    opts.compress = plan.compress;
    // write-ahead: from here on MESH may hold the message before the journal knows its id
    journal.append(Entry::Sending(Sending {
        local_id: c.local_id.clone(),
        sha256: digest.sha256.clone(),
        chunks: plan.chunks,
        chunk_size: plan.chunk_size,
        compress: plan.compress,
        time: journal::now(),
    }))?;
    crash_point("after-sending");
    let new = NewMessage {
        opts: &opts,
        digest,
        file_name: &file_name,
    };
    let id = upload_rest(client, journal, pair, Message::New(new), 1, &plan, progress).await?;
    journal.append(submitted(&id, false))?;
    Ok((id, SendOutcome::Sent))
}

/// The message [`upload_rest`] uploads to.
enum Message<'a> {
    /// One MESH already holds chunk 1 of: its id.
    Existing(&'a str),
    /// A new one, created by chunk 1.
    New(NewMessage<'a>),
}

/// What chunk 1 of a new message needs.
struct NewMessage<'a> {
    opts: &'a SendOptions,
    digest: &'a Digest256,
    file_name: &'a str,
}

/// Uploads chunks `from..=N` of `message` (from 1 for a new one), journaling each but the last
/// (the caller journals the whole); returns the message id.
async fn upload_rest(
    client: &MeshClient,
    journal: &mut Journal,
    pair: &Pair,
    message: Message<'_>,
    from: u32,
    plan: &mesh_client::ChunkPlan,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<String, Error> {
    let context = |n: u32| {
        format!(
            "sending chunk {n} of {} of {}",
            plan.chunks,
            pair.dat.display()
        )
    };
    let mut message_id = match message {
        Message::Existing(id) => id.to_owned(),
        Message::New(_) => String::new(),
    };
    // chunks are read and gzip'd ahead, in parallel, while the one before them uploads
    let window = read_ahead(plan.chunk_size);
    let mut ahead = ReadAhead(std::collections::VecDeque::new());
    let mut next = from;
    for n in from..=plan.chunks {
        while next <= plan.chunks && next < n.saturating_add(window) {
            let (path, plan, k) = (pair.dat.clone(), *plan, next);
            ahead
                .0
                .push_back(tokio::spawn(async move { plan.read_chunk(&path, k).await }));
            next += 1;
        }
        let Some(task) = ahead.0.pop_front() else {
            break;
        };
        let body = task
            .await
            .map_err(|e| processor::Error::read(&pair.dat, std::io::Error::other(e)))?
            .map_err(mesh(context(n)))?;
        match &message {
            Message::New(new) if n == 1 => {
                message_id = client
                    .upload_first_chunk(&pair.dat, new.opts, plan, body)
                    .await
                    .map_err(mesh(format!("sending {}", pair.dat.display())))?;
                crash_point("after-accept");
                if plan.chunks > 1 {
                    let c = &pair.control;
                    let entry = started(&c.local_id, &message_id, new.file_name, new.digest, plan);
                    journal.append(entry)?;
                }
            }
            _ => {
                client
                    .upload_chunk(&message_id, n, plan, body)
                    .await
                    .map_err(mesh(context(n)))?;
                crash_point(&format!("after-chunk-{n}"));
                if n < plan.chunks {
                    journal.append(Entry::Chunk(ChunkDone {
                        local_id: pair.control.local_id.clone(),
                        message_id: message_id.clone(),
                        chunk: n,
                        time: journal::now(),
                    }))?;
                }
            }
        }
        progress(plan.bytes_through(n));
    }
    Ok(message_id)
}

/// What MESH holds under a pair's LocalId before chunk 1 is (re)sent.
enum Found {
    /// Nothing usable: send it.
    Nothing,
    /// The whole message, accepted: its id.
    Complete(String),
    /// An upload that is still open, begun as `sending` says: its id.
    Uploading(String, Sending),
}

/// Looks the pair's LocalId up in MESH tracking (`mesh-protocol.md` §5.11), so that a message
/// MESH accepted in a run that died before journaling it is adopted instead of sent again.
///
/// `sending` is the pair's open write-ahead line: with one, MESH may hold the message, so a
/// failed lookup stops the send (fail closed); without one nothing of this work directory can
/// be in MESH, and a failed lookup only costs the check against a copy sent from elsewhere.
/// A message found must carry this content's checksum (ndop always sends `sha256:HEX`);
/// a LocalId used by other content, or by several messages, is refused.
async fn look_up(
    client: &MeshClient,
    pair: &Pair,
    digest: &Digest256,
    sending: Option<&Sending>,
) -> Result<Found, Error> {
    let local_id = &pair.control.local_id;
    let t = match client.track_local_id(local_id).await {
        Ok(LocalIdLookup::One(t)) => t,
        Ok(LocalIdLookup::None) => return Ok(Found::Nothing),
        Ok(LocalIdLookup::Several) => {
            return Err(usage(format!(
                "{}: MESH holds several messages with LocalId {local_id} from this mailbox, so \
                 ndop cannot tell whether this file was already sent; check them with MESH \
                 tracking, and prepare the file again (new LocalId) if it must be sent",
                pair.dat.display()
            )))
        }
        Ok(_) => return Ok(Found::Nothing),
        Err(e) if sending.is_some() => {
            return Err(mesh(format!(
                "looking up LocalId {local_id} in MESH tracking (an earlier send of {} may have \
                 reached MESH; run again when MESH answers, so that it is not sent twice)",
                pair.dat.display()
            ))(e))
        }
        Err(e) => {
            tracing::warn!(%local_id, error = %e, "MESH tracking by LocalId failed; sending");
            return Ok(Found::Nothing);
        }
    };
    let checksum = format!("sha256:{}", digest.sha256);
    if !t.checksum.eq_ignore_ascii_case(&checksum) {
        return Err(usage(format!(
            "{}: LocalId {local_id} is already used in MESH by message {} with other content \
             (checksum {:?}); prepare the file again to get a new LocalId",
            pair.dat.display(),
            t.message_id,
            t.checksum
        )));
    }
    match t.status.as_str() {
        "accepted" | "acknowledged" => Ok(Found::Complete(t.message_id)),
        "uploading" => match sending {
            Some(s) if s.chunks == t.chunk_count => Ok(Found::Uploading(t.message_id, s.clone())),
            _ => Err(usage(format!(
                "{}: MESH holds an unfinished upload of LocalId {local_id} (message {}) that \
                 this work directory did not start; finish it where it was started, wait for \
                 MESH to expire it, or prepare the file again to get a new LocalId",
                pair.dat.display(),
                t.message_id
            ))),
        },
        // failed, expired or not delivered: MESH has nothing the POS will answer; send it again
        status => {
            tracing::warn!(message_id = %t.message_id, status, "an earlier send of this LocalId did not arrive; sending again");
            Ok(Found::Nothing)
        }
    }
}

/// Test-only fault injection: when the environment variable `NDOP_TEST_CRASH_AT` names
/// `point`, the process aborts there (as `kill -9` would), so that tests can check that a rerun
/// never sends twice. Points: `after-sending` (write-ahead line journaled, nothing sent),
/// `after-accept` (MESH accepted chunk 1, or the whole single-chunk message, before the
/// journal knows), `after-chunk-N` (chunk N ≥ 2 accepted, before its journal line). Never
/// set it outside tests.
fn crash_point(point: &str) {
    if std::env::var_os("NDOP_TEST_CRASH_AT").is_some_and(|v| v == point) {
        std::process::abort();
    }
}

/// How many chunks [`upload_rest`] reads and compresses ahead, counting the one uploading: one
/// per core plus one (so that every core compresses while a chunk uploads), at most 4, and at
/// most 256 MiB of chunks (a body is held until it is uploaded), at least one.
fn read_ahead(chunk_size: u64) -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let by_memory = (256 << 20) / chunk_size.max(1);
    (cores + 1).min(4).min(by_memory).max(1) as u32
}

/// Chunks being read ahead; those not needed (an upload failed) are cancelled on drop.
struct ReadAhead<T>(std::collections::VecDeque<tokio::task::JoinHandle<T>>);

impl<T> Drop for ReadAhead<T> {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The facts of `path` from `known`, if there and the file still has that size.
fn known_digest(known: &[KnownDigest], path: &Path) -> Option<Digest256> {
    let k = known.iter().find(|k| k.path == path)?;
    let size = std::fs::metadata(path).ok()?.len();
    (size == k.bytes).then(|| Digest256 {
        sha256: k.sha256.clone(),
        records: k.records,
        bytes: k.bytes,
    })
}

/// SHA-256, line count and size of a file, read once off the async threads.
pub(crate) async fn digest(path: &Path) -> Result<Digest256, Error> {
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
    .map_err(|e| processor::Error::read(path, std::io::Error::other(e)))?;
    result.map_err(|e| Error::Local(processor::Error::read(path, e)))
}

/// The journal line of a chunked upload under way: message `id` holds chunk 1 of `file`.
fn started(
    local_id: &str,
    id: &str,
    file: &str,
    digest: &Digest256,
    plan: &mesh_client::ChunkPlan,
) -> Entry {
    Entry::Started(Started {
        local_id: local_id.to_string(),
        message_id: id.to_string(),
        file: file.to_string(),
        sha256: digest.sha256.clone(),
        bytes: digest.bytes,
        chunks: plan.chunks,
        chunk_size: plan.chunk_size,
        compress: plan.compress,
        time: journal::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn the_facts_prepare_records_are_what_reading_the_file_gives() {
        use processor::dat::{DatOptions, LineEnding};
        use processor::prepare::{prepare, PrepareOptions};
        let dir = tempfile::tempdir().unwrap();
        let extract = dir.path().join("x.dat");
        std::fs::write(
            &extract,
            "9434765919\n9694116414\n9434765919\nbad\n9694116538\n",
        )
        .unwrap();
        let prepared = dir.path().join("prepared");
        for line_ending in [LineEnding::Crlf, LineEnding::Lf] {
            let _ = std::fs::remove_dir_all(&prepared);
            let opts = PrepareOptions {
                scan: processor::scan::ScanOptions::default(),
                dat: DatOptions {
                    dir: prepared.clone(),
                    mailbox: "X26ABC1".into(),
                    date: chrono::NaiveDate::from_ymd_opt(2026, 11, 28).unwrap(),
                    seq: 1,
                    env: processor::pos::PosEnv::Int,
                    tag: None,
                    line_ending,
                    max_bytes: 20_000_000_000,
                    max_records: Some(2),
                },
            };
            let summary = prepare(std::slice::from_ref(&extract), &opts, &mut |_| {}).unwrap();
            assert_eq!(summary.files.len(), 2);
            for f in &summary.files {
                let path = prepared.join(&f.name);
                let read = digest(&path).await.unwrap();
                let known = [KnownDigest {
                    path: path.clone(),
                    sha256: f.sha256.clone(),
                    records: f.records,
                    bytes: f.bytes,
                }];
                let k = known_digest(&known, &path).unwrap();
                assert_eq!(
                    (&k.sha256, k.records, k.bytes),
                    (&read.sha256, read.records, read.bytes)
                );
                // a file of another size than the one known is read instead
                std::fs::write(&path, "9434765919\r\n".repeat(3)).unwrap();
                assert!(known_digest(&known, &path).is_none());
                assert!(known_digest(&known, &prepared.join("other.dat")).is_none());
            }
        }
    }
}
