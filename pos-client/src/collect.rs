//! [`collect`]: poll the inbox, store and journal the replies to our submissions, then
//! acknowledge them; and [`final_results`]: which reply settles each prepared file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_client::{MeshClient, MessageMeta, MessageType};
use processor::files::{create_private_dir, sync_dir, write_atomic};
use processor::reconcile::ReplyNumbers;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{mesh, Error};
use crate::journal::{self, Entry, Journal, Reply, ReplyKind};
use crate::reply::{check_stream, classify, safe_name, Facts, Streamed};

/// Pieces of a reply that may wait between the download and its check (a piece is one
/// network read or one decoded gzip piece: tens of KiB).
const TEE_PIECES: usize = 64;

/// Sub-directory of the work directory where replies are stored.
pub const REPLY_DIR: &str = "replies";

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
    /// Wall-clock seconds downloading it (every chunk, decompressed, written and fsync'd; the
    /// check of its lines and its SHA-256 run beside it).
    pub download_seconds: f64,
    /// Wall-clock seconds checking it after the download: the end of the check made as it
    /// arrived (SHA-256 and every line), or of a reading of the file when that check could
    /// not be used, then the rename into place.
    pub check_seconds: f64,
    /// True when its lines and SHA-256 were checked as it downloaded; false when the stored
    /// file was read for them (a small reply, a chunk retried mid-transfer, a folder reply).
    pub checked_while_downloading: bool,
    /// A cleaned reply's numbers, gathered as its lines were checked: the result side of
    /// reconcile without reading the file again (`processor::reconcile::returned_from`).
    #[serde(skip)]
    pub numbers: GatheredNumbers,
}

/// The numbers of a cleaned reply gathered by the check of its lines (or nothing), to be taken
/// once ([`GatheredNumbers::take`]); a clone of a [`CollectedReply`] shares them.
#[derive(Clone, Default)]
pub struct GatheredNumbers(Arc<Mutex<Option<ReplyNumbers>>>);

impl GatheredNumbers {
    /// The numbers, if gathered and not yet taken.
    pub fn take(&self) -> Option<ReplyNumbers> {
        self.0.lock().map(|mut n| n.take()).unwrap_or(None)
    }

    /// True while it holds numbers.
    fn holds(&self) -> bool {
        self.0.lock().map(|n| n.is_some()).unwrap_or(false)
    }
}

/// Most replies of one collect that keep their gathered numbers: each holds a set of its own
/// (up to a few tens of MiB resident at national scale) until reconcile unites them, so a run
/// split into many files keeps none beyond these, and reconcile reads the files instead.
const MAX_GATHERED: usize = 4;

/// Appends `collected` to `replies`, dropping its gathered numbers when [`MAX_GATHERED`]
/// replies before it hold some.
pub(crate) fn push_reply(replies: &mut Vec<CollectedReply>, collected: CollectedReply) {
    if replies.iter().filter(|r| r.numbers.holds()).count() >= MAX_GATHERED {
        drop(collected.numbers.take());
    }
    replies.push(collected);
}

impl std::fmt::Debug for GatheredNumbers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the numbers
        f.write_str("GatheredNumbers")
    }
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
    /// Of those, seconds paused between two polls (waiting for the POS to answer).
    pub waited_seconds: f64,
}

/// Polls the inbox until every journaled submission has its final reply or `opts.timeout`
/// has passed (at least one poll either way), storing and acknowledging the replies that
/// belong to our submissions into `work_dir/replies/`, where `work_dir` is the journal's
/// directory. Timing out is not an error: the report lists what is still pending.
pub async fn collect(
    client: &MeshClient,
    journal: &mut Journal,
    opts: &CollectOptions,
) -> Result<CollectReport, Error> {
    let started = Instant::now();
    let work_dir = work_dir_of(journal);
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
        waited_seconds: 0.0,
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
                    push_reply(&mut report.replies, collected);
                }
                Err(reason) => {
                    left.insert(id.clone());
                    report.unrecognised.push(unrecognised(&meta, reason));
                }
            }
        }
        report.pending = pending(journal);
        if report.pending.is_empty() {
            report.complete = true;
            break;
        }
        if started.elapsed() + opts.interval > opts.timeout {
            break;
        }
        tokio::time::sleep(opts.interval).await;
        report.waited_seconds += opts.interval.as_secs_f64();
    }
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The cleaned file the POS returned for each prepared file named in `files` (`.dat` names, in
/// that order), as paths under `work`, the work directory. Fails when a file was never sent or
/// has no final reply yet, when the POS rejected it as holding an invalid number, and (as
/// [`Error::BadAnswer`]) when its job failed or MESH reports it undelivered.
pub fn final_results(
    journal: &Journal,
    work: &Path,
    files: &[String],
) -> Result<Vec<PathBuf>, Error> {
    let usage = |m: String| Error::Local(processor::Error::Usage(m));
    let mut out = Vec::with_capacity(files.len());
    for name in files {
        let sub = journal
            .submissions()
            .filter(|s| &s.file == name)
            .last()
            .ok_or_else(|| usage(format!("{name} was never sent")))?;
        let fin = journal
            .replies_to(&sub.local_id)
            .find(|r| r.is_final())
            .ok_or_else(|| usage(format!("{name} has no final reply")))?;
        let path = work.join(&fin.file);
        match fin.reply {
            ReplyKind::Cleaned => out.push(path),
            ReplyKind::InvalidNumbers => {
                return Err(processor::Error::PosRejected { path }.into());
            }
            ReplyKind::JobCreated => {
                return Err(Error::BadAnswer(format!(
                    "the POS job for {name} failed (see {})",
                    path.display()
                )))
            }
            ReplyKind::Report => {
                return Err(Error::BadAnswer(format!(
                    "{name} was not delivered: {} (see {})",
                    fin.status_description
                        .as_deref()
                        .unwrap_or("no reason given"),
                    path.display()
                )))
            }
        }
    }
    Ok(out)
}

/// 404 / 410: the message left the inbox (acknowledged elsewhere, expired) after the listing.
fn gone(e: &mesh_client::Error) -> bool {
    matches!(e.status(), Some(404 | 410))
}

pub(crate) fn unrecognised(meta: &MessageMeta, reason: impl Into<String>) -> UnrecognisedMessage {
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
pub(crate) fn match_submission(journal: &Journal, meta: &MessageMeta) -> Option<String> {
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
) -> Result<Result<CollectedReply, String>, Error> {
    let mut times = (0.0, 0.0);
    let stored = if meta.message_type == MessageType::Report {
        store_report(reply_dir, meta, local_id)?
    } else {
        let temp = reply_dir.join(format!(".{}.download", safe_name(&meta.message_id)));
        let clock = Instant::now();
        // the reply is checked and hashed on a thread of its own as it arrives
        let (tee, pieces) = tokio::sync::mpsc::channel(TEE_PIECES);
        let checker = tokio::task::spawn_blocking(move || check_stream(pieces));
        match client.download_to_tee(&meta.message_id, &temp, tee).await {
            Ok(_) => {}
            Err(e) if gone(&e) => return Ok(Err("no longer available for download".into())),
            Err(e) => return Err(mesh(format!("downloading {}", meta.message_id))(e)),
        }
        times.0 = clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        // a checker that failed leaves the check to a reading of the file
        let streamed = checker.await.ok();
        let kept = keep_data(&temp, reply_dir, meta, local_id, streamed).await?;
        times.1 = clock.elapsed().as_secs_f64();
        match kept {
            Ok(stored) => stored,
            Err(reason) => return Ok(Err(reason)),
        }
    };
    let mut collected = journal_reply(journal, work_dir, meta, local_id, stored)?;
    (collected.download_seconds, collected.check_seconds) = times;
    Ok(Ok(collected))
}

/// A reply stored in the reply directory: its kind, path and content facts.
pub(crate) type Stored = (ReplyKind, PathBuf, Facts);

/// Stores a report (no body; its meaning is in the headers) as JSON in `reply_dir`.
pub(crate) fn store_report(
    reply_dir: &Path,
    meta: &MessageMeta,
    local_id: &str,
) -> Result<Stored, Error> {
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
    .map_err(|e| processor::Error::write(reply_dir, std::io::Error::other(e)))?;
    let name = format!("{local_id}.report.{}.json", safe_name(&meta.message_id));
    let path = write_atomic(reply_dir, &name, &json)?;
    sync_dir(reply_dir)?;
    let facts = Facts {
        sha256: hex::encode(Sha256::digest(&json)),
        bytes: json.len() as u64,
        records: None,
        job_status: None,
        streamed: false,
        numbers: None,
    };
    Ok((ReplyKind::Report, path, facts))
}

/// Classifies a data reply written (synced) to `temp` in `reply_dir` (from what was learnt
/// while it downloaded, if given: see [`classify`]) and renames it to its final name; a file
/// that is not a POS reply is removed and `Ok(Err(reason))`.
pub(crate) async fn keep_data(
    temp: &Path,
    reply_dir: &Path,
    meta: &MessageMeta,
    local_id: &str,
    streamed: Option<Streamed>,
) -> Result<Result<Stored, String>, Error> {
    let (kind, facts) = match classify(temp, meta, streamed).await {
        Ok(Ok(found)) => found,
        Ok(Err(reason)) => {
            let _ = std::fs::remove_file(temp);
            return Ok(Err(reason));
        }
        Err(e) => {
            let _ = std::fs::remove_file(temp);
            return Err(e);
        }
    };
    let ext = match kind {
        ReplyKind::JobCreated => "job.json",
        ReplyKind::Cleaned => "cleaned.dat",
        _ => "invalid.txt",
    };
    let id_part = safe_name(&meta.message_id);
    let path = reply_dir.join(format!("{local_id}.{id_part}.{ext}"));
    std::fs::rename(temp, &path).map_err(|e| processor::Error::write(&path, e))?;
    sync_dir(reply_dir)?;
    Ok(Ok((kind, path, facts)))
}

/// Journals a stored reply.
pub(crate) fn journal_reply(
    journal: &mut Journal,
    work_dir: &Path,
    meta: &MessageMeta,
    local_id: &str,
    (kind, path, facts): Stored,
) -> Result<CollectedReply, Error> {
    let streamed = facts.streamed;
    let numbers = GatheredNumbers(Arc::new(Mutex::new(facts.numbers)));
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
    Ok(CollectedReply {
        reply,
        path,
        duplicate,
        download_seconds: 0.0,
        check_seconds: 0.0,
        checked_while_downloading: streamed,
        numbers,
    })
}

/// The journal's directory: where replies are stored.
pub(crate) fn work_dir_of(journal: &Journal) -> PathBuf {
    journal
        .path()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// LocalIds of journaled submissions still without a final reply.
pub(crate) fn pending(journal: &Journal) -> Vec<String> {
    let mut pending: Vec<String> = journal
        .submissions()
        .filter(|s| !journal.is_answered(&s.local_id))
        .map(|s| s.local_id.clone())
        .collect();
    pending.dedup();
    pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Submission;

    #[test]
    fn at_most_a_few_replies_keep_their_gathered_numbers() {
        let collected = |gathered: bool| {
            let mut lines = processor::reconcile::ReplyLines::collecting();
            lines.feed(b"9434765919,\r\n").unwrap();
            let numbers = lines.finish_gathered(13).unwrap().1.filter(|_| gathered);
            CollectedReply {
                reply: Reply {
                    local_id: "L".into(),
                    message_id: "M".into(),
                    reply: ReplyKind::Cleaned,
                    file: "replies/r".into(),
                    sha256: "00".into(),
                    bytes: 13,
                    records: Some(1),
                    job_status: None,
                    status_code: None,
                    status_event: None,
                    status_description: None,
                    status_success: None,
                    time: journal::now(),
                },
                path: PathBuf::from("r"),
                duplicate: false,
                download_seconds: 0.0,
                check_seconds: 0.0,
                checked_while_downloading: true,
                numbers: GatheredNumbers(Arc::new(Mutex::new(numbers))),
            }
        };
        let mut replies = Vec::new();
        push_reply(&mut replies, collected(false));
        for _ in 0..MAX_GATHERED + 2 {
            push_reply(&mut replies, collected(true));
        }
        let kept: Vec<bool> = replies.iter().map(|r| r.numbers.holds()).collect();
        let mut want = vec![false];
        want.extend([true; MAX_GATHERED]);
        want.extend([false; 2]);
        assert_eq!(kept, want);
        // taken once
        assert!(replies[1].numbers.take().is_some());
        assert!(replies[1].numbers.take().is_none());
    }

    fn submitted(local_id: &str, file: &str) -> Entry {
        Entry::Submitted(Submission {
            local_id: local_id.into(),
            message_id: format!("SENT_{local_id}"),
            file: file.into(),
            sha256: "00".into(),
            records: 1,
            bytes: 13,
            subject: local_id.into(),
            to: "X26OT154".into(),
            workflow_id: "SPINE_NTT_UPHOLDING".into(),
            time: journal::now(),
            adopted: false,
        })
    }

    fn reply(local_id: &str, kind: ReplyKind, job_status: Option<&str>) -> Entry {
        Entry::Reply(Reply {
            local_id: local_id.into(),
            message_id: format!("R_{local_id}_{kind:?}"),
            reply: kind,
            file: format!("replies/{local_id}.{kind:?}"),
            sha256: "00".into(),
            bytes: 0,
            records: None,
            job_status: job_status.map(str::to_owned),
            status_code: None,
            status_event: None,
            status_description: None,
            status_success: (kind == ReplyKind::Report).then_some(false),
            time: journal::now(),
        })
    }

    #[test]
    fn the_final_reply_decides_each_file() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path();
        let mut journal = Journal::open(work).unwrap();
        for entry in [
            submitted("la", "a.dat"),
            reply("la", ReplyKind::JobCreated, Some("pending")),
            reply("la", ReplyKind::Cleaned, None),
            submitted("lc", "c.dat"),
            reply("lc", ReplyKind::JobCreated, Some("pending")),
            submitted("ld", "d.dat"),
            reply("ld", ReplyKind::InvalidNumbers, None),
            submitted("le", "e.dat"),
            reply("le", ReplyKind::JobCreated, Some("failed")),
            submitted("lf", "f.dat"),
            reply("lf", ReplyKind::Report, None),
        ] {
            journal.append(entry).unwrap();
        }
        let names = |files: &[&str]| files.iter().map(|f| f.to_string()).collect::<Vec<_>>();
        assert_eq!(
            final_results(&journal, work, &names(&["a.dat"])).unwrap(),
            [work.join("replies/la.Cleaned")]
        );
        for (file, message) in [
            ("b.dat", "b.dat was never sent"),
            ("c.dat", "c.dat has no final reply"),
            ("d.dat", "the POS rejected the request"),
            ("e.dat", "the POS job for e.dat failed"),
            ("f.dat", "f.dat was not delivered: no reason given"),
        ] {
            let e = final_results(&journal, work, &names(&["a.dat", file])).unwrap_err();
            assert!(e.to_string().contains(message), "{file}: {e}");
            let bad_answer = matches!(e, Error::BadAnswer(_));
            assert_eq!(
                bad_answer,
                file == "e.dat" || file == "f.dat",
                "{file}: {e:?}"
            );
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
                adopted: false,
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
}
