//! Reading the batches of an `ndop run` work directory: its journal, the prepared `.dat`
//! files that were sent and the cleaned files the POS answered with.

use crate::error::{Error, Result};
use crate::time::{message_id_time, parse_time};
use pos_client::journal::{Journal, ReplyKind, JOURNAL_FILE};
use processor::reconcile::read_numbers;
use processor::scan::ScanOptions;
use roaring::RoaringBitmap;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Where `ndop run` keeps the files it sends, under the work directory.
const PREPARED: &str = "prepared";

/// One completed POS check, ready to add to the cache.
#[derive(Debug)]
pub struct NewBatch {
    /// The submission's LocalId.
    pub local_id: String,
    /// `int`, `live`, or the POS mailbox when it is neither.
    pub environment: String,
    /// The sending mailbox (from the `.ctl`), if known.
    pub mailbox: Option<String>,
    /// The POS mailbox it was sent to.
    pub pos_mailbox: String,
    /// MESH message id of the submission.
    pub request_message_id: String,
    /// MESH message id of the cleaned file.
    pub response_message_id: String,
    /// File name of the `.dat`.
    pub request_file: String,
    /// When MESH accepted the submission (ms since the epoch).
    pub sent_at: i64,
    /// When MESH accepted the POS's answer: the time in its message id, else when it was
    /// stored.
    pub answered_at: i64,
    /// The earlier of the two: the age of the result is counted from it (conservative).
    pub checked_at: i64,
    /// SHA-256 of the `.dat` sent.
    pub request_sha256: String,
    /// SHA-256 of the cleaned file.
    pub response_sha256: String,
    /// Prefixes of the numbers requested.
    pub requested: RoaringBitmap,
    /// Prefixes of the numbers returned.
    pub returned: RoaringBitmap,
    /// The work directory it came from.
    pub source: String,
}

/// A submission of a work directory that gives no batch, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// The work directory.
    pub work: String,
    /// Its LocalId.
    pub local_id: String,
    /// Why it is not a completed check (its numbers stay not checked).
    pub reason: String,
}

/// What `ndop cache import` did.
#[derive(Debug, Serialize)]
pub struct ImportSummary {
    /// Batches added.
    pub added: Vec<i64>,
    /// Batches that were already in the cache.
    pub already_present: u64,
    /// Submissions without a completed check.
    pub skipped: Vec<Skipped>,
    /// Numbers requested in the batches read.
    pub requested: u64,
    /// Numbers returned in the batches read.
    pub returned: u64,
}

/// SHA-256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| processor::Error::read(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| processor::Error::read(path, e))?;
    Ok(hex::encode(h.finalize()))
}

/// The completed checks of a work directory, and the submissions that are not (no answer yet,
/// rejected, failed). Each file is checked against the SHA-256 the journal holds for it, so
/// a file changed since it was sent or stored is refused instead of trusted.
pub fn read_work_dir(work: &Path, scan: &ScanOptions) -> Result<(Vec<NewBatch>, Vec<Skipped>)> {
    let (batches, skipped, _) = read_new_batches(work, scan, &mut |_, _, _| Ok(false))?;
    Ok((batches, skipped))
}

/// [`read_work_dir`], leaving out (unread, and counted in the third value) the completed checks
/// for which `present(local_id, request_sha256, response_sha256)` (the journal's values) says
/// the cache already holds that batch: an idempotent re-import reads no number file. The files
/// of every batch returned are checked against the journal's SHA-256, hashed on a second thread
/// while the numbers are read.
pub fn read_new_batches(
    work: &Path,
    scan: &ScanOptions,
    present: &mut dyn FnMut(&str, &str, &str) -> Result<bool>,
) -> Result<(Vec<NewBatch>, Vec<Skipped>, u64)> {
    let work_err = |path: &Path, message: String| Error::WorkDir {
        path: path.to_path_buf(),
        message,
    };
    if !work.join(JOURNAL_FILE).is_file() {
        return Err(work_err(
            work,
            format!(
                "not an `ndop run` work directory (no {JOURNAL_FILE}); give the --work directory \
                 of a run"
            ),
        ));
    }
    let journal = Journal::open(work)?;
    let mut batches = Vec::new();
    let mut skipped = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut already = 0u64;
    let subs: Vec<_> = journal.submissions().cloned().collect();
    for sub in subs.iter().rev() {
        // the last submission of each LocalId counts
        if !seen.insert(sub.local_id.clone()) {
            continue;
        }
        let skip = |reason: &str| Skipped {
            work: work.display().to_string(),
            local_id: sub.local_id.clone(),
            reason: reason.to_string(),
        };
        let Some(fin) = journal.replies_to(&sub.local_id).find(|r| r.is_final()) else {
            skipped.push(skip(
                "no answer from the POS yet: run the same ndop run again",
            ));
            continue;
        };
        match fin.reply {
            ReplyKind::Cleaned => {}
            ReplyKind::InvalidNumbers => {
                skipped.push(skip(
                    "the POS rejected the file as holding an invalid number",
                ));
                continue;
            }
            ReplyKind::JobCreated => {
                skipped.push(skip("the POS job failed"));
                continue;
            }
            ReplyKind::Report => {
                skipped.push(skip("MESH reported the file undelivered"));
                continue;
            }
        }
        if present(&sub.local_id, &sub.sha256, &fin.sha256)? {
            already += 1;
            continue;
        }
        let request: PathBuf = work.join(PREPARED).join(&sub.file);
        let response: PathBuf = work.join(&fin.file);
        // hash on a second thread while this one reads the numbers; nothing read is used
        // unless both hashes match the journal
        let (hashes, sets) = std::thread::scope(|s| {
            let hashing = s.spawn(|| -> Result<Vec<String>> {
                [&request, &response]
                    .into_iter()
                    .map(|p| sha256_file(p))
                    .collect()
            });
            let read = |path: &PathBuf, role| -> Result<RoaringBitmap> {
                Ok(crate::bitmap_of(
                    &read_numbers(std::slice::from_ref(path), role, scan, &mut |_| {})?.set,
                ))
            };
            let sets = read(&request, "request").and_then(|a| Ok((a, read(&response, "result")?)));
            let hashes = hashing
                .join()
                .unwrap_or_else(|_| Err(work_err(work, "hashing its files failed".into())));
            (hashes, sets)
        });
        for (path, (got, want)) in [&request, &response]
            .into_iter()
            .zip(hashes?.iter().zip([&sub.sha256, &fin.sha256]))
        {
            if got != want {
                return Err(work_err(
                    path,
                    "differs from the file the journal recorded (SHA-256); it changed after it \
                     was sent or collected, so its numbers cannot be trusted: run the check again \
                     in a new work directory"
                        .into(),
                ));
            }
        }
        let (requested, returned) = sets?;
        let unexpected = (&returned - &requested).len();
        if unexpected > 0 {
            return Err(Error::Journal(pos_client::Error::BadAnswer(format!(
                "{}: the POS returned {unexpected} numbers that were not sent in {}; not imported",
                response.display(),
                request.display()
            ))));
        }
        let sent_at = parse_time(&sub.time)
            .map_err(|_| work_err(work, format!("journal time {:?} is not RFC 3339", sub.time)))?;
        let answered_at = match message_id_time(&fin.message_id) {
            Some(t) => t,
            None => parse_time(&fin.time).map_err(|_| {
                work_err(work, format!("journal time {:?} is not RFC 3339", fin.time))
            })?,
        };
        let ctl = request.with_extension("ctl");
        let mailbox = processor::ctl::read_control(&ctl)
            .ok()
            .and_then(|c| c.from_dts);
        let environment = match sub.to.as_str() {
            t if t.eq_ignore_ascii_case(processor::pos::PosEnv::Int.pos_mailbox()) => "int".into(),
            t if t.eq_ignore_ascii_case(processor::pos::PosEnv::Live.pos_mailbox()) => {
                "live".into()
            }
            t => t.to_ascii_lowercase(),
        };
        batches.push(NewBatch {
            local_id: sub.local_id.clone(),
            environment,
            mailbox,
            pos_mailbox: sub.to.clone(),
            request_message_id: sub.message_id.clone(),
            response_message_id: fin.message_id.clone(),
            request_file: sub.file.clone(),
            sent_at,
            answered_at,
            checked_at: sent_at.min(answered_at),
            request_sha256: sub.sha256.clone(),
            response_sha256: fin.sha256.clone(),
            requested,
            returned,
            source: work.display().to_string(),
        });
    }
    batches.reverse();
    skipped.reverse();
    Ok((batches, skipped, already))
}
