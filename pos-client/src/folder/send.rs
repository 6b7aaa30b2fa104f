//! Folder-mode [`send`]: pairs into the MESH client's `OUT`, never twice; outcomes from `SENT`
//! and `FAILED`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use processor::ctl::{read_client_control, ClientControl, StatusRecord};
use processor::files::sync_dir;
use serde::Serialize;

use super::{copy_synced, find_file, Folders};
use crate::collect::CollectOptions;
use crate::error::{usage, Error};
use crate::journal::{self, Entry, Journal, Queued, Submission};
use crate::pairs::find_pairs;
use crate::send::digest;

/// Where one pair stands after [`send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FolderOutcome {
    /// The client sent it during this run (its `.ctl` in SENT has the message id).
    Sent,
    /// The journal already had it as sent.
    AlreadySent,
    /// Handed to the client, not yet sent (still in OUT when the wait ended).
    Waiting,
}

/// One pair in a [`FolderSendReport`].
#[derive(Debug, Clone, Serialize)]
pub struct QueuedFile {
    /// The prepared `.dat`.
    pub file: PathBuf,
    /// Its LocalId (also its base name in OUT, SENT and FAILED).
    pub local_id: String,
    /// Its Subject.
    pub subject: String,
    /// The recipient mailbox.
    pub to: String,
    /// The MESH message id (`DTSId`), once sent.
    pub message_id: Option<String>,
    /// SHA-256 of the `.dat`.
    pub sha256: String,
    /// Lines in the `.dat`.
    pub records: u64,
    /// Size of the `.dat`.
    pub bytes: u64,
    /// Where it stands.
    pub outcome: FolderOutcome,
}

/// The result of [`send`].
#[derive(Debug, Clone, Serialize)]
pub struct FolderSendReport {
    /// Every pair, in order.
    pub files: Vec<QueuedFile>,
    /// Pairs written into OUT by this run.
    pub queued: usize,
    /// Pairs the client sent during this run.
    pub sent: usize,
    /// Pairs the journal already had as sent.
    pub already_sent: usize,
    /// True when every pair is sent.
    pub complete: bool,
    /// Checks of SENT and FAILED made.
    pub polls: u32,
}

/// Hands every pair named by `inputs` (see [`find_pairs`]) that the journal does not have to
/// the MESH client in `folders`, then waits (checking every `opts.interval`, up to
/// `opts.timeout`) until the client has sent each one: journaled as `submitted` with the
/// `DTSId` of its rewritten `.ctl` in SENT. Each pair is copied to dot-names in OUT (synced),
/// journaled as `queued`, then renamed in, `.dat` first; a pair journaled as queued is never
/// written again (a run cut off between journal and rename finishes the renames).
///
/// A pair in FAILED is [`Error::Refused`] with the status record from its `.ctl` (or the
/// client's error `.ctl` in IN), after the other pairs have been waited for. `mailbox`, if
/// given, must be each `.ctl`'s `From_DTS`. Timing out is not an error: `complete` is false.
pub async fn send(
    folders: &Folders,
    journal: &mut Journal,
    inputs: &[PathBuf],
    mailbox: Option<&str>,
    opts: &CollectOptions,
) -> Result<FolderSendReport, Error> {
    let pairs = find_pairs(inputs)?;
    let mut report = FolderSendReport {
        files: Vec::new(),
        queued: 0,
        sent: 0,
        already_sent: 0,
        complete: false,
        polls: 0,
    };
    for pair in pairs {
        let c = &pair.control;
        if let (Some(from), Some(me)) = (&c.from_dts, mailbox) {
            if !from.eq_ignore_ascii_case(me) {
                return Err(usage(format!(
                    "{}: From_DTS is {from} but the mailbox is {me} (MESH error 07)",
                    pair.ctl.display()
                )));
            }
        }
        let d = digest(&pair.dat).await?;
        let known = journal
            .submission(&c.local_id)
            .map(|s| (s.sha256.clone(), Some(s.message_id.clone())))
            .or_else(|| queued(journal, &c.local_id).map(|q| (q.sha256.clone(), None)));
        let (message_id, outcome) = match known {
            Some((sha, _)) if sha != d.sha256 => {
                return Err(usage(format!(
                    "{}: LocalId {} was already handed to MESH with different content; \
                     prepare the file again to get a new LocalId",
                    pair.dat.display(),
                    c.local_id
                )))
            }
            Some((_, Some(id))) => (Some(id), FolderOutcome::AlreadySent),
            Some((_, None)) => {
                finish_renames(folders, &c.local_id)?;
                (None, FolderOutcome::Waiting)
            }
            None => {
                let base = c.local_id.clone();
                let (tmp_dat, tmp_ctl) = temp_names(folders, &base);
                for stale in [&tmp_dat, &tmp_ctl] {
                    let _ = std::fs::remove_file(stale);
                }
                if in_client_folders(folders, &base) {
                    return Err(usage(format!(
                        "{base}.dat or .ctl is already in {}'s OUT, SENT or FAILED but not in \
                         this journal: another job used the same LocalId; prepare again",
                        folders.root.display()
                    )));
                }
                copy_synced(&pair.dat, &tmp_dat)?;
                copy_synced(&pair.ctl, &tmp_ctl)?;
                journal.append(Entry::Queued(Queued {
                    local_id: c.local_id.clone(),
                    base: base.clone(),
                    file: file_name(&pair.dat),
                    sha256: d.sha256.clone(),
                    records: d.records,
                    bytes: d.bytes,
                    subject: c.subject.clone(),
                    to: c.to_dts.clone(),
                    workflow_id: c.workflow_id.clone(),
                    time: journal::now(),
                }))?;
                finish_renames(folders, &base)?;
                report.queued += 1;
                tracing::info!(local_id = %c.local_id, "handed to the MESH client");
                (None, FolderOutcome::Waiting)
            }
        };
        if outcome == FolderOutcome::AlreadySent {
            report.already_sent += 1;
        }
        report.files.push(QueuedFile {
            file: pair.dat.clone(),
            local_id: c.local_id.clone(),
            subject: c.subject.clone(),
            to: c.to_dts.clone(),
            message_id,
            sha256: d.sha256,
            records: d.records,
            bytes: d.bytes,
            outcome,
        });
    }

    let confirmed = confirm(folders, journal, opts).await?;
    report.polls = confirmed.polls;
    for f in &mut report.files {
        if let Some((_, id)) = confirmed.sent.iter().find(|(l, _)| *l == f.local_id) {
            f.message_id = Some(id.clone());
            f.outcome = FolderOutcome::Sent;
            report.sent += 1;
        }
    }
    report.complete = report
        .files
        .iter()
        .all(|f| matches!(f.outcome, FolderOutcome::Sent | FolderOutcome::AlreadySent));
    Ok(report)
}

/// The result of [`confirm`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct Confirmed {
    /// (LocalId, message id) of each pair found in SENT, now journaled as submitted.
    pub sent: Vec<(String, String)>,
    /// LocalIds of pairs still waiting in OUT.
    pub waiting: Vec<String>,
    /// Checks of SENT and FAILED made.
    pub polls: u32,
}

/// Waits (checking every `opts.interval`, up to `opts.timeout`, at least once) until the MESH
/// client has sent every pair the journal has as queued but not submitted: each found in SENT
/// is journaled as `submitted` with the `DTSId` of its rewritten `.ctl`. A pair in FAILED is
/// [`Error::Refused`] with its status record (from its `.ctl`, or the client's error `.ctl` in
/// IN) and both readings of the code, after the other pairs have been waited for.
pub async fn confirm(
    folders: &Folders,
    journal: &mut Journal,
    opts: &CollectOptions,
) -> Result<Confirmed, Error> {
    let started = Instant::now();
    let mut waiting: Vec<Queued> = Vec::new();
    for e in journal.entries() {
        if let Entry::Queued(q) = e {
            if journal.submission(&q.local_id).is_none()
                && !waiting.iter().any(|w| w.local_id == q.local_id)
            {
                waiting.push(q.clone());
            }
        }
    }
    let mut out = Confirmed::default();
    let mut refused: Vec<String> = Vec::new();
    loop {
        out.polls += 1;
        // the client may still be writing the status: without one, look again next time
        let last = started.elapsed() + opts.interval > opts.timeout;
        let mut still = Vec::new();
        for q in waiting {
            match outcome_of(folders, &q.base)? {
                Outcome::Pending | Outcome::Failed(None) if !last => still.push(q),
                Outcome::Pending => still.push(q),
                Outcome::Sent(id) => {
                    tracing::info!(local_id = %q.local_id, message_id = %id, "sent by the MESH client");
                    out.sent.push((q.local_id.clone(), id.clone()));
                    journal.append(Entry::Submitted(Submission {
                        local_id: q.local_id,
                        message_id: id,
                        file: q.file,
                        sha256: q.sha256,
                        records: q.records,
                        bytes: q.bytes,
                        subject: q.subject,
                        to: q.to,
                        workflow_id: q.workflow_id,
                        time: journal::now(),
                        adopted: false,
                    }))?;
                }
                Outcome::Failed(why) => {
                    let why = why.unwrap_or_else(|| {
                        format!(
                            "no status record found in {} or {}",
                            folders.failed.display(),
                            folders.inbox.display()
                        )
                    });
                    refused.push(format!("{} as {}.dat ({why})", q.file, q.base));
                }
            }
        }
        waiting = still;
        if waiting.is_empty() || last {
            break;
        }
        tokio::time::sleep(opts.interval).await;
    }
    if !refused.is_empty() {
        return Err(Error::Refused(refused.join("; ")));
    }
    out.waiting = waiting.into_iter().map(|q| q.local_id).collect();
    Ok(out)
}

/// What the client did with a queued pair.
enum Outcome {
    /// Still in OUT (or being moved).
    Pending,
    /// In SENT with this `DTSId`.
    Sent(String),
    /// In FAILED, for this reason (none found yet).
    Failed(Option<String>),
}

fn outcome_of(folders: &Folders, base: &str) -> Result<Outcome, Error> {
    if let Some(ctl) = find_file(&folders.sent, &format!("{base}.ctl")) {
        // the client may still be writing it: unreadable or without DTSId means not yet
        if let Ok((c, _)) = read_client_control(&ctl) {
            if c.local_id.as_deref().is_some_and(|l| l != base) {
                return Err(usage(format!(
                    "{} holds LocalId {}, not {base}: a file of another job has the same name",
                    ctl.display(),
                    c.local_id.unwrap_or_default()
                )));
            }
            match (&c.dts_id, &c.status) {
                (Some(id), Some(s)) if !s.is_error() => return Ok(Outcome::Sent(id.clone())),
                (_, Some(s)) if s.is_error() => return Ok(Outcome::Failed(Some(s.describe()))),
                (Some(id), None) => return Ok(Outcome::Sent(id.clone())),
                _ => {}
            }
        }
        return Ok(Outcome::Pending);
    }
    let failed_ctl = find_file(&folders.failed, &format!("{base}.ctl"));
    let failed_dat = find_file(&folders.failed, &format!("{base}.dat"));
    if failed_ctl.is_none() && failed_dat.is_none() {
        return Ok(Outcome::Pending);
    }
    let from_failed = failed_ctl
        .and_then(|p| read_client_control(&p).ok())
        .and_then(|(c, _)| c.status);
    let status = from_failed
        .filter(StatusRecord::is_error)
        .or_else(|| error_report_in(folders, base));
    Ok(Outcome::Failed(status.map(|s| s.describe())))
}

/// The status of the client's error `.ctl` in IN about LocalId `base`, if there is one.
fn error_report_in(folders: &Folders, base: &str) -> Option<StatusRecord> {
    let entries = std::fs::read_dir(&folders.inbox).ok()?;
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_ctl(p))
        .filter_map(|p| read_client_control(&p).ok().map(|(c, _)| c))
        .filter(|c: &ClientControl| c.local_id.as_deref() == Some(base))
        .filter_map(|c| c.status)
        .find(StatusRecord::is_error)
}

pub(super) fn is_ctl(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    !name.starts_with('.')
        && p.extension()
            .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case("ctl"))
}

/// The last `queued` line for this LocalId.
fn queued<'a>(journal: &'a Journal, local_id: &str) -> Option<&'a Queued> {
    journal.entries().iter().rev().find_map(|e| match e {
        Entry::Queued(q) if q.local_id == local_id => Some(q),
        _ => None,
    })
}

fn temp_names(folders: &Folders, base: &str) -> (PathBuf, PathBuf) {
    (
        folders.outbox.join(format!(".{base}.dat.part")),
        folders.outbox.join(format!(".{base}.ctl.part")),
    )
}

fn in_client_folders(folders: &Folders, base: &str) -> bool {
    [&folders.outbox, &folders.sent, &folders.failed]
        .iter()
        .any(|d| {
            ["dat", "ctl"]
                .iter()
                .any(|x| find_file(d, &format!("{base}.{x}")).is_some())
        })
}

/// Renames the dot-named copies of `base` into OUT, `.dat` first, where they are still there.
fn finish_renames(folders: &Folders, base: &str) -> Result<(), Error> {
    let (tmp_dat, tmp_ctl) = temp_names(folders, base);
    let mut renamed = false;
    for (tmp, ext) in [(&tmp_dat, "dat"), (&tmp_ctl, "ctl")] {
        if tmp.exists() {
            let dest = folders.outbox.join(format!("{base}.{ext}"));
            std::fs::rename(tmp, &dest).map_err(|e| processor::Error::write(&dest, e))?;
            renamed = true;
        }
    }
    if renamed {
        sync_dir(&folders.outbox)?;
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
