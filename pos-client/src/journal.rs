//! The work-directory journal: an append-only record, one JSON object per line, of every
//! submission to MESH and every reply collected, so that a second `ndop send` or `ndop run`
//! never sends a file twice and `ndop collect` knows what it is waiting for.
//!
//! Each line has a `kind`:
//! - `sending`: a pair is about to be sent, and how it will be cut (written before chunk 1
//!   leaves, so that a crash after MESH accepted it but before `started`/`submitted` was
//!   written leaves a trace: the next run looks the LocalId up in MESH tracking and adopts or
//!   resumes the message instead of sending it again);
//! - `started`: chunk 1 of a multi-chunk message was accepted (MESH gave it a message id);
//! - `chunk`: chunk `n` of that message was accepted;
//! - `submitted`: MESH accepted the whole message (the line the issue asks for: LocalId,
//!   message id, file name, sha256, records, time); `adopted` when the message was found in
//!   MESH by its LocalId after an interrupted send rather than seen accepted;
//! - `reply`: a reply was written safely to the work directory (before it is acknowledged);
//! - `extract`: the identity of the extract `ndop run` started the work directory with, so that a
//!   resumed run refuses a different file (see [`Extract`]). Journals written before this kind
//!   existed have none; older versions skip it as an unknown kind.
//!
//! Durability: each line is written with one `write` and then `fsync`ed before the caller goes
//! on (so "journaled" means "on disk"). A crash can leave the last line torn; [`Journal::open`]
//! keeps it if it still parses (adding the missing newline) and cuts it off otherwise. A bad
//! line anywhere else is corruption and is reported with its line number. The journal holds ids,
//! names, hashes and counts only, never an NHS number. One process at a time: the file is
//! locked (`flock`) while a [`Journal`] is open.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use processor::{Error, Result};

/// File name of the journal inside the work directory.
pub const JOURNAL_FILE: &str = "journal.jsonl";

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A pair is about to be sent.
    Sending(Sending),
    /// Chunk 1 of a multi-chunk message was accepted.
    Started(Started),
    /// A later chunk was accepted.
    Chunk(ChunkDone),
    /// MESH accepted the whole message.
    Submitted(Submission),
    /// A reply was stored in the work directory.
    Reply(Reply),
    /// The extract `ndop run` prepared from.
    Extract(Extract),
    /// A pair handed to an installed MESH client's OUT folder (folder mode), journaled before
    /// the rename into OUT; the `submitted` line follows when the client has sent it.
    Queued(Queued),
    /// A line of a kind this version does not know (written by a newer one); kept, ignored.
    #[serde(other)]
    Unknown,
}

/// A pair about to be sent: what is needed to recognise and resume it if the process dies
/// before MESH's answer is journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sending {
    /// The submission's LocalId.
    pub local_id: String,
    /// SHA-256 of the `.dat` (lower-case hex).
    pub sha256: String,
    /// Chunks the message is cut into.
    pub chunks: u32,
    /// Bytes of the file per chunk.
    pub chunk_size: u64,
    /// Whether chunks are gzip'd.
    pub compress: bool,
    /// When (RFC 3339, UTC).
    pub time: String,
}

/// A message whose upload began: what is needed to resume it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// The submission's LocalId.
    pub local_id: String,
    /// The id MESH gave the message.
    pub message_id: String,
    /// File name of the `.dat`.
    pub file: String,
    /// SHA-256 of the `.dat` (lower-case hex).
    pub sha256: String,
    /// Size of the `.dat`.
    pub bytes: u64,
    /// Chunks the message is cut into.
    pub chunks: u32,
    /// Bytes of the file per chunk.
    pub chunk_size: u64,
    /// Whether chunks are gzip'd.
    pub compress: bool,
    /// When (RFC 3339, UTC).
    pub time: String,
}

/// Chunk `chunk` of `message_id` was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkDone {
    /// The submission's LocalId.
    pub local_id: String,
    /// The message.
    pub message_id: String,
    /// The chunk (1-based).
    pub chunk: u32,
    /// When (RFC 3339, UTC).
    pub time: String,
}

/// A file MESH accepted for delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// LocalId from the `.ctl`; every POS reply carries it.
    pub local_id: String,
    /// The MESH message id.
    pub message_id: String,
    /// File name of the `.dat`.
    pub file: String,
    /// SHA-256 of the `.dat` (lower-case hex).
    pub sha256: String,
    /// Lines (records) in the `.dat`.
    pub records: u64,
    /// Size of the `.dat`.
    pub bytes: u64,
    /// Subject from the `.ctl`.
    pub subject: String,
    /// Recipient mailbox (To_DTS).
    pub to: String,
    /// Workflow id.
    pub workflow_id: String,
    /// When MESH accepted it (RFC 3339, UTC).
    pub time: String,
    /// Found in MESH by its LocalId after an interrupted send (not sent again).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
}

/// What a collected reply is (`ndop-domain.md` §2.3, §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyKind {
    /// The POS's "job created" JSON (`Subject SUCCESS`); final only if the job failed.
    JobCreated,
    /// The cleaned file: the submitted numbers without an opt-out (possibly none).
    Cleaned,
    /// The one-line error `The file contains one or more invalid NHS Numbers.`: the whole
    /// submission was rejected.
    InvalidNumbers,
    /// A MESH report about the submission (delivery or non-delivery, e.g. code 14).
    Report,
}

/// A reply stored in the work directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// LocalId of the submission it answers.
    pub local_id: String,
    /// The reply's MESH message id.
    pub message_id: String,
    /// What it is.
    pub reply: ReplyKind,
    /// Where it was written, relative to the work directory.
    pub file: String,
    /// SHA-256 of the stored file.
    pub sha256: String,
    /// Size of the stored file.
    pub bytes: u64,
    /// Numbers in a cleaned file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    /// Job status of a job-created reply (`pending`, `failed`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_status: Option<String>,
    /// MESH status code of a report (`00` delivered, `14` not collected, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<String>,
    /// MESH status event of a report (`TRANSFER`, `COLLECT`, `SEND`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_event: Option<String>,
    /// MESH status description of a report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_description: Option<String>,
    /// Whether the report says success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_success: Option<bool>,
    /// When it was stored (RFC 3339, UTC).
    pub time: String,
}

impl Reply {
    /// Whether this reply ends the wait for its submission: the cleaned file, the invalid-number
    /// error, a failed job, or a report of failure.
    pub fn is_final(&self) -> bool {
        match self.reply {
            ReplyKind::Cleaned | ReplyKind::InvalidNumbers => true,
            ReplyKind::JobCreated => self.job_status.as_deref() == Some("failed"),
            ReplyKind::Report => self.status_success == Some(false),
        }
    }
}

/// The identity of an extract: which file it was and how big and how recent, as one `stat`
/// gives them, so that `ndop run` resumed in the same work directory can tell that the extract
/// is still the file it prepared and sent (and that the POS answers will be applied to the rows
/// they were asked about).
///
/// Trade-off: this is the file's identity, not a hash of its content. Size, modification time
/// (to the nanosecond the file system keeps) and device + inode cost one `stat` and no read. A
/// SHA-256 would catch every change, but it needs a full extra read of an extract that may be
/// tens of gigabytes, on the first run (the parallel scan of prepare does not hash) and again on
/// every resume, where the check must come before anything is sent. What the identity misses: a
/// rewrite in place that keeps the size and then sets the modification time back (`touch -d`),
/// or one within the file system's timestamp granularity of the first run's `stat`. What it
/// refuses although the bytes are the same: a copy (another inode), e.g. restored from a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extract {
    /// The path as given on the command line.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Modification time (RFC 3339, UTC, nanoseconds).
    pub modified: String,
    /// Device number of the file system holding it.
    pub device: u64,
    /// Inode number.
    pub inode: u64,
    /// When it was recorded (RFC 3339, UTC).
    pub time: String,
}

impl Extract {
    /// The identity of the regular file at `path`, now. Standard input, pipes and other
    /// non-regular files have none (they cannot be read twice either): a usage error.
    pub fn of(path: &Path) -> Result<Extract> {
        if path == Path::new("-") {
            return Err(Error::Usage(
                "ndop run needs the extract as a file, not standard input: it reads it twice \
                 (prepare, then filter) and checks it on resume"
                    .into(),
            ));
        }
        let meta = std::fs::metadata(path).map_err(|e| Error::read(path, e))?;
        if !meta.is_file() {
            return Err(Error::Usage(format!(
                "{} is not a regular file: ndop run reads the extract twice (prepare, then \
                 filter) and checks it on resume",
                path.display()
            )));
        }
        use std::os::unix::fs::MetadataExt;
        let modified = meta.modified().map_err(|e| Error::read(path, e))?;
        Ok(Extract {
            path: path.display().to_string(),
            bytes: meta.len(),
            modified: chrono::DateTime::<chrono::Utc>::from(modified)
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            device: meta.dev(),
            inode: meta.ino(),
            time: now(),
        })
    }

    /// How `now` differs from this record, one phrase per difference (empty if it is the same
    /// file). The path as given is not compared: the same file reached another way is the same
    /// extract.
    pub fn changes(&self, now: &Extract) -> Vec<String> {
        let mut changes = Vec::new();
        if (now.device, now.inode) != (self.device, self.inode) {
            changes.push(format!(
                "another file: inode {} on device {}, was inode {} on device {}",
                now.inode, now.device, self.inode, self.device
            ));
        }
        if now.bytes != self.bytes {
            changes.push(format!("size {} bytes, was {}", now.bytes, self.bytes));
        }
        if now.modified != self.modified {
            changes.push(format!("modified {}, was {}", now.modified, self.modified));
        }
        changes
    }

    /// Fails with [`crate::Error::ExtractChanged`] unless `now` (the extract as given now) is
    /// the file this record describes; `work` is the work directory, for the message.
    pub fn verify(&self, now: &Extract, work: &Path) -> std::result::Result<(), crate::Error> {
        let mut changes = self.changes(now);
        if changes.is_empty() {
            return Ok(());
        }
        if self.path != now.path {
            changes.insert(0, format!("given as {}, was {}", now.path, self.path));
        }
        Err(crate::Error::ExtractChanged {
            path: PathBuf::from(&now.path),
            work: work.to_path_buf(),
            changes: changes.join("; "),
        })
    }
}

/// A pair handed to the MESH client (folder mode): written into its OUT folder as
/// `{base}.dat` + `{base}.ctl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// The submission's LocalId.
    pub local_id: String,
    /// Base name of the pair in OUT (and then SENT or FAILED).
    pub base: String,
    /// File name of the prepared `.dat`.
    pub file: String,
    /// SHA-256 of the `.dat` (lower-case hex).
    pub sha256: String,
    /// Lines (records) in the `.dat`.
    pub records: u64,
    /// Size of the `.dat`.
    pub bytes: u64,
    /// Subject from the `.ctl`.
    pub subject: String,
    /// Recipient mailbox (To_DTS).
    pub to: String,
    /// Workflow id.
    pub workflow_id: String,
    /// When (RFC 3339, UTC).
    pub time: String,
}

/// An upload that began but was not journaled as submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// Its `started` line.
    pub started: Started,
    /// Chunks known to be accepted: 1..=`chunks_done` (chunks are sent in order).
    pub chunks_done: u32,
}

/// The current time as journaled: RFC 3339, UTC, milliseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An open, locked journal and everything in it.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    len: u64,
    entries: Vec<Entry>,
    repaired: bool,
}

impl Journal {
    /// Opens (creating if needed, mode 0600) `work_dir/journal.jsonl`, creating `work_dir` if
    /// missing, locks it against other processes, reads it and repairs a torn last line.
    pub fn open(work_dir: &Path) -> Result<Journal> {
        std::fs::create_dir_all(work_dir).map_err(|e| Error::write(work_dir, e))?;
        let path = work_dir.join(JOURNAL_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::write(&path, e))?;
        lock(&file, &path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::read(&path, e))?;
        let (entries, keep, repaired) =
            parse(&bytes).map_err(|(line, reason)| corrupt(&path, line, &reason))?;
        let mut len = bytes.len() as u64;
        if repaired {
            match keep {
                Keep::All => {
                    // the torn last line parsed: only its newline was lost
                    file.write_all(b"\n").map_err(|e| Error::write(&path, e))?;
                    len += 1;
                }
                Keep::Upto(n) => {
                    file.set_len(n).map_err(|e| Error::write(&path, e))?;
                    len = n;
                }
            }
            file.sync_all().map_err(|e| Error::write(&path, e))?;
            tracing::warn!(journal = %path.display(), "repaired a torn last journal line");
        }
        file.seek(SeekFrom::End(0))
            .map_err(|e| Error::read(&path, e))?;
        Ok(Journal {
            path,
            file,
            len,
            entries,
            repaired,
        })
    }

    /// Path of the journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether [`open`](Journal::open) found and repaired a torn last line.
    pub fn repaired(&self) -> bool {
        self.repaired
    }

    /// Every entry, in order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Appends `entry` as one line and fsyncs it. If the write fails the file is cut back, so
    /// a failed append never leaves a partial line behind.
    pub fn append(&mut self, entry: Entry) -> Result<()> {
        let mut line = serde_json::to_vec(&entry)
            .map_err(|e| Error::write(&self.path, std::io::Error::other(e)))?;
        line.push(b'\n');
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            let _ = self.file.set_len(self.len);
            return Err(Error::write(&self.path, e));
        }
        self.len += line.len() as u64;
        self.entries.push(entry);
        Ok(())
    }

    /// Every submission, in the order they were journaled.
    pub fn submissions(&self) -> impl Iterator<Item = &Submission> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Submitted(s) => Some(s),
            _ => None,
        })
    }

    /// The (last) submission with this LocalId.
    pub fn submission(&self, local_id: &str) -> Option<&Submission> {
        self.submissions().filter(|s| s.local_id == local_id).last()
    }

    /// An upload of this LocalId and content that began but has no `submitted` line, with the
    /// chunks known to be accepted (the last one begun, if several).
    pub fn upload_in_progress(&self, local_id: &str, sha256: &str) -> Option<Upload> {
        let mut current: Option<Upload> = None;
        for e in &self.entries {
            match e {
                Entry::Started(s) if s.local_id == local_id && s.sha256 == sha256 => {
                    current = Some(Upload {
                        started: s.clone(),
                        chunks_done: 1,
                    });
                }
                Entry::Chunk(c) => {
                    if let Some(u) = current.as_mut() {
                        if u.started.message_id == c.message_id && c.chunk == u.chunks_done + 1 {
                            u.chunks_done = c.chunk;
                        }
                    }
                }
                Entry::Submitted(s) if s.local_id == local_id && s.sha256 == sha256 => {
                    current = None;
                }
                _ => {}
            }
        }
        current
    }

    /// The last `sending` line of this LocalId and content, unless a `submitted` line of the
    /// same follows it: a send that may have reached MESH without its answer being journaled.
    pub fn sending(&self, local_id: &str, sha256: &str) -> Option<&Sending> {
        let mut current = None;
        for e in &self.entries {
            match e {
                Entry::Sending(s) if s.local_id == local_id && s.sha256 == sha256 => {
                    current = Some(s);
                }
                Entry::Submitted(s) if s.local_id == local_id && s.sha256 == sha256 => {
                    current = None;
                }
                _ => {}
            }
        }
        current
    }

    /// Every reply, in order.
    pub fn replies(&self) -> impl Iterator<Item = &Reply> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Reply(r) => Some(r),
            _ => None,
        })
    }

    /// Replies to the submission with this LocalId.
    pub fn replies_to<'a>(&'a self, local_id: &'a str) -> impl Iterator<Item = &'a Reply> + 'a {
        self.replies().filter(move |r| r.local_id == local_id)
    }

    /// The reply stored from MESH message `message_id`, if any.
    pub fn reply(&self, message_id: &str) -> Option<&Reply> {
        self.replies().find(|r| r.message_id == message_id)
    }

    /// The extract `ndop run` last recorded, if any (journals of older versions have none).
    pub fn extract(&self) -> Option<&Extract> {
        self.entries.iter().rev().find_map(|e| match e {
            Entry::Extract(x) => Some(x),
            _ => None,
        })
    }

    /// Whether the submission with this LocalId has its final reply.
    pub fn is_answered(&self, local_id: &str) -> bool {
        self.replies_to(local_id).any(Reply::is_final)
    }
}

/// Reads the journal of `work_dir` without opening it for writing or locking it (for a report
/// on a work directory, possibly while another ndop process holds it): every entry, a torn last
/// line left out (as [`Journal::open`] would repair it). A missing journal is an empty one; a
/// bad line anywhere else is corruption, reported with its line number.
pub fn read_entries(work_dir: &Path) -> Result<Vec<Entry>> {
    let path = work_dir.join(JOURNAL_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::read(&path, e)),
    };
    let (entries, _, _) = parse(&bytes).map_err(|(line, reason)| corrupt(&path, line, &reason))?;
    Ok(entries)
}

/// The error for a corrupt journal line.
fn corrupt(path: &Path, line: usize, reason: &str) -> Error {
    Error::read(
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("journal line {line} is corrupt: {reason}"),
        ),
    )
}

/// What to keep of the file after a torn last line.
enum Keep {
    All,
    Upto(u64),
}

/// Parses the whole file. Returns the entries, what to keep, and whether the last line was
/// torn; or the 1-based number of a corrupt line and why.
fn parse(bytes: &[u8]) -> std::result::Result<(Vec<Entry>, Keep, bool), (usize, String)> {
    let mut entries = Vec::new();
    let mut start = 0;
    let mut line_no = 0;
    while start < bytes.len() {
        line_no += 1;
        let (line, next, terminated) = match memchr::memchr(b'\n', &bytes[start..]) {
            Some(i) => (&bytes[start..start + i], start + i + 1, true),
            None => (&bytes[start..], bytes.len(), false),
        };
        let parsed = if line.iter().all(u8::is_ascii_whitespace) {
            Ok(None)
        } else {
            serde_json::from_slice::<Entry>(line).map(Some)
        };
        match (parsed, terminated) {
            (Ok(entry), true) => entries.extend(entry),
            (Ok(entry), false) => {
                entries.extend(entry);
                return Ok((entries, Keep::All, true));
            }
            (Err(_), false) => return Ok((entries, Keep::Upto(start as u64), true)),
            (Err(e), true) => return Err((line_no, e.to_string())),
        }
        start = next;
    }
    Ok((entries, Keep::All, false))
}

/// Takes an exclusive advisory lock, failing at once if another process holds it.
fn lock(file: &File, path: &Path) -> Result<()> {
    // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Err(Error::Usage(format!(
            "{} is in use by another ndop process; wait for it to finish",
            path.display()
        )));
    }
    Err(Error::write(path, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submission(local_id: &str, sha: &str) -> Entry {
        Entry::Submitted(Submission {
            local_id: local_id.into(),
            message_id: format!("M-{local_id}"),
            file: format!("{local_id}.dat"),
            sha256: sha.into(),
            records: 20,
            bytes: 260,
            subject: local_id.into(),
            to: "X26OT154".into(),
            workflow_id: "SPINE_NTT_UPHOLDING".into(),
            time: now(),
            adopted: false,
        })
    }

    fn reply(local_id: &str, id: &str, kind: ReplyKind) -> Reply {
        Reply {
            local_id: local_id.into(),
            message_id: id.into(),
            reply: kind,
            file: format!("replies/{id}"),
            sha256: "00".into(),
            bytes: 1,
            records: None,
            job_status: None,
            status_code: None,
            status_event: None,
            status_description: None,
            status_success: None,
            time: now(),
        }
    }

    #[test]
    fn read_entries_needs_no_lock_and_leaves_a_torn_line_out() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_entries(dir.path()).unwrap().is_empty());
        let mut j = Journal::open(dir.path()).unwrap();
        j.append(submission("a", "11")).unwrap();
        // read while the journal is open (and locked) here
        assert_eq!(read_entries(dir.path()).unwrap(), j.entries());
        let mut f = OpenOptions::new().append(true).open(j.path()).unwrap();
        f.write_all(b"{\"kind\":\"subm").unwrap();
        assert_eq!(read_entries(dir.path()).unwrap().len(), 1);
        std::fs::write(j.path(), "not json\n").unwrap();
        let e = read_entries(dir.path()).unwrap_err().to_string();
        assert!(e.contains("journal line 1 is corrupt"), "{e}");
    }

    #[test]
    fn entries_survive_reopening_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut j = Journal::open(dir.path()).unwrap();
            assert!(j.entries().is_empty());
            j.append(submission("a", "11")).unwrap();
            j.append(Entry::Reply(reply("a", "R1", ReplyKind::JobCreated)))
                .unwrap();
        }
        let j = Journal::open(dir.path()).unwrap();
        assert!(!j.repaired());
        assert_eq!(j.entries().len(), 2);
        assert_eq!(j.submission("a").unwrap().message_id, "M-a");
        assert!(j.submission("b").is_none());
        assert!(!j.is_answered("a"));
        assert_eq!(j.reply("R1").unwrap().reply, ReplyKind::JobCreated);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(j.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(j.path()).unwrap();
        assert!(text.starts_with(r#"{"kind":"submitted","local_id":"a","message_id":"M-a""#));
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn a_torn_last_line_is_cut_or_completed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let good = serde_json::to_string(&submission("a", "11")).unwrap();
        let second = serde_json::to_string(&submission("b", "22")).unwrap();
        // torn in the middle: cut off
        std::fs::write(&path, format!("{good}\n{}", &second[..30])).unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        assert!(j.repaired());
        assert_eq!(j.submissions().count(), 1);
        j.append(submission("c", "33")).unwrap();
        drop(j);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&format!("{good}\n{{")), "{text}");
        assert!(text.ends_with("}\n") && text.lines().count() == 2, "{text}");
        let j = Journal::open(dir.path()).unwrap();
        assert!(!j.repaired());
        let ids: Vec<_> = j.submissions().map(|s| s.local_id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        drop(j);
        // only the newline lost: kept
        std::fs::write(&path, format!("{good}\n{second}")).unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert!(j.repaired());
        assert_eq!(j.submissions().count(), 2);
        drop(j);
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n"));
    }

    #[test]
    fn corruption_before_the_last_line_is_an_error_with_its_line_number() {
        let dir = tempfile::tempdir().unwrap();
        let good = serde_json::to_string(&submission("a", "11")).unwrap();
        std::fs::write(
            dir.path().join(JOURNAL_FILE),
            format!("{good}\n\n{{broken\n{good}\n"),
        )
        .unwrap();
        let e = Journal::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn unknown_kinds_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(JOURNAL_FILE),
            "{\"kind\":\"from_the_future\",\"x\":1}\n",
        )
        .unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.entries(), &[Entry::Unknown]);
    }

    #[test]
    fn a_second_open_is_refused_while_the_first_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let e = Journal::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("another ndop process"), "{e}");
        drop(j);
        assert!(Journal::open(dir.path()).is_ok());
    }

    #[test]
    fn uploads_in_progress_track_their_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        let started = Started {
            local_id: "a".into(),
            message_id: "M1".into(),
            file: "a.dat".into(),
            sha256: "11".into(),
            bytes: 100,
            chunks: 4,
            chunk_size: 25,
            compress: true,
            time: now(),
        };
        j.append(Entry::Started(started.clone())).unwrap();
        for chunk in [2, 3] {
            j.append(Entry::Chunk(ChunkDone {
                local_id: "a".into(),
                message_id: "M1".into(),
                chunk,
                time: now(),
            }))
            .unwrap();
        }
        let u = j.upload_in_progress("a", "11").unwrap();
        assert_eq!((u.started.message_id.as_str(), u.chunks_done), ("M1", 3));
        assert!(j.upload_in_progress("a", "other content").is_none());
        j.append(submission("a", "11")).unwrap();
        assert!(j.upload_in_progress("a", "11").is_none());
    }

    #[test]
    fn a_sending_line_stays_open_until_its_submission() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        let sending = Sending {
            local_id: "a".into(),
            sha256: "11".into(),
            chunks: 1,
            chunk_size: 100,
            compress: false,
            time: now(),
        };
        j.append(Entry::Sending(sending.clone())).unwrap();
        drop(j);
        let mut j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.sending("a", "11"), Some(&sending));
        assert!(j.sending("a", "22").is_none() && j.sending("b", "11").is_none());
        let mut adopted = submission("a", "11");
        if let Entry::Submitted(s) = &mut adopted {
            s.adopted = true;
        }
        j.append(adopted).unwrap();
        assert!(j.sending("a", "11").is_none());
        assert!(j.submission("a").unwrap().adopted);
        let text = std::fs::read_to_string(j.path()).unwrap();
        assert!(
            text.starts_with(r#"{"kind":"sending","local_id":"a""#),
            "{text}"
        );
        assert!(text.trim_end().ends_with(r#""adopted":true}"#), "{text}");
        // a plain submission does not carry the flag
        j.append(submission("b", "22")).unwrap();
        let text = std::fs::read_to_string(j.path()).unwrap();
        assert!(!text.lines().last().unwrap().contains("adopted"), "{text}");
    }

    #[test]
    fn final_replies() {
        let mut r = reply("a", "R", ReplyKind::JobCreated);
        r.job_status = Some("pending".into());
        assert!(!r.is_final());
        r.job_status = Some("failed".into());
        assert!(r.is_final());
        assert!(reply("a", "R", ReplyKind::Cleaned).is_final());
        assert!(reply("a", "R", ReplyKind::InvalidNumbers).is_final());
        let mut report = reply("a", "R", ReplyKind::Report);
        report.status_success = Some(true);
        assert!(!report.is_final());
        report.status_success = Some(false);
        assert!(report.is_final());
    }

    #[test]
    fn the_extract_record_is_the_last_one_and_tells_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let extract = dir.path().join("x.dat");
        std::fs::write(&extract, "9434765919,\r\n").unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        // A journal from before the record existed has none.
        j.append(submission("a", "11")).unwrap();
        assert!(j.extract().is_none());
        let first = Extract::of(&extract).unwrap();
        assert_eq!(first.bytes, 13);
        assert_eq!(first.path, extract.display().to_string());
        j.append(Entry::Extract(first.clone())).unwrap();
        drop(j);
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.extract(), Some(&first));
        let text = std::fs::read_to_string(j.path()).unwrap();
        assert!(text
            .lines()
            .last()
            .unwrap()
            .starts_with(r#"{"kind":"extract","path":"#));

        // The same file, seen again (even by another path): no change.
        let again = Extract::of(&dir.path().join(".").join("x.dat")).unwrap();
        assert_eq!(first.changes(&again), Vec::<String>::new());
        // Rewritten in place: size and time.
        std::fs::write(&extract, "9434765919,\r\n9694116414,\r\n").unwrap();
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        std::fs::File::options()
            .write(true)
            .open(&extract)
            .unwrap()
            .set_modified(t)
            .unwrap();
        let changes = first.changes(&Extract::of(&extract).unwrap());
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(
            changes[0].starts_with("size 26 bytes, was 13"),
            "{changes:?}"
        );
        assert!(changes[1].starts_with("modified 2023-11-14T22:13:20.000000000Z, was "));
        // Replaced by another file of the same size and time: the inode.
        let other = dir.path().join("y.dat");
        std::fs::write(&other, "9434765919,\r\n9694116414,\r\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&other)
            .unwrap()
            .set_modified(t)
            .unwrap();
        std::fs::rename(&other, &extract).unwrap();
        let replaced = Extract::of(&extract).unwrap();
        let record = Extract {
            bytes: replaced.bytes,
            modified: replaced.modified.clone(),
            ..first.clone()
        };
        let changes = record.changes(&replaced);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(
            changes[0].starts_with("another file: inode "),
            "{changes:?}"
        );
    }

    #[test]
    fn a_changed_extract_fails_verification_naming_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, "a\n").unwrap();
        let recorded = Extract::of(&path).unwrap();
        recorded
            .verify(&Extract::of(&path).unwrap(), dir.path())
            .unwrap();
        std::fs::write(&path, "ab\n").unwrap();
        let e = recorded
            .verify(&Extract::of(&path).unwrap(), dir.path())
            .unwrap_err();
        assert!(matches!(e, crate::Error::ExtractChanged { .. }), "{e}");
        assert!(e.to_string().contains("size 3 bytes, was 2"), "{e}");
    }

    #[test]
    fn only_regular_files_have_an_identity() {
        let dir = tempfile::tempdir().unwrap();
        for path in [Path::new("-"), dir.path()] {
            let e = Extract::of(path).unwrap_err();
            assert_eq!(e.kind(), processor::ErrorKind::Usage, "{e}");
        }
        let e = Extract::of(&dir.path().join("missing")).unwrap_err();
        assert_eq!(e.kind(), processor::ErrorKind::Input, "{e}");
    }
}
