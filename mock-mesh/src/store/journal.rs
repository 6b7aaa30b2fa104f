//! The disk store's journal, `journal.jsonl`: one JSON line per metadata change, appended and
//! fsynced before the change becomes visible.
//!
//! A failed append (a full disk, an I/O error) is cut back to the last good length before the
//! error is returned, so a torn fragment can never glue itself to the next record. Recovery
//! reads every line, keeps the newest version of each message, and tolerates a torn fragment
//! anywhere (a crash mid-append, or a fragment an older version left behind): a line that does
//! not parse is searched for a whole record after the fragment, so no record after a tear is
//! ever dropped.
//!
//! The same file discipline serves other record types: [`Journal::open_file`] and
//! [`parse_lines`] take any serde type (the FHIR Consent versions use them).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{create_private, sync_dir, Message};
use crate::error::Error;

/// What every serialised [`Message`] starts with (its first field is `id`).
const RECORD_START: &[u8] = br#"{"id":"#;

/// The open journal: appends only, cut back on failure.
pub(crate) struct Journal {
    file: File,
    path: PathBuf,
    /// Length of the journal up to its last durable record.
    good_len: u64,
    /// A failed append could not be cut back yet; retried before the next append.
    dirty: bool,
    /// Test hook: the next appends write a torn prefix and fail with ENOSPC.
    fault: Option<Fault>,
    /// Records in the journal (whole messages after a rewrite, plus every append since).
    records: usize,
    /// Messages at the last rewrite.
    live: usize,
    /// Fewest records worth a compaction.
    pub(super) compact_min: usize,
}

/// An injected journal failure (tests only): the next `times` appends write their first
/// `torn_bytes` bytes, then fail as if the disk were full.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fault {
    pub(super) torn_bytes: usize,
    pub(super) times: u32,
}

impl Journal {
    /// Reads `dir/journal.jsonl` (newest version of each message), rewrites it compacted (one
    /// line per message, atomically) and opens it for appending.
    pub(super) fn recover(dir: &Path) -> Result<(Journal, Vec<Message>), Error> {
        let path = dir.join("journal.jsonl");
        let mut latest: HashMap<String, Message> = HashMap::new();
        match std::fs::read(&path) {
            Ok(data) => {
                for m in parse_records(&data) {
                    match latest.get(&m.id) {
                        Some(old) if old.version >= m.version => {}
                        _ => {
                            latest.insert(m.id.clone(), m);
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
        let mut ms: Vec<Message> = latest.into_values().collect();
        ms.sort_by_key(|m| (m.seq, m.created_us));
        let journal = Journal::rewrite(dir, &ms)?;
        Ok((journal, ms))
    }

    /// Replaces the journal with exactly `messages` (write a temporary file, fsync, rename,
    /// fsync the directory) and opens it for appending.
    pub(super) fn rewrite(dir: &Path, messages: &[Message]) -> Result<Journal, Error> {
        Journal::open_file(dir, "journal.jsonl", messages)
    }

    /// Replaces `dir/name` with exactly `records` (one JSON line each; temporary file, fsync,
    /// rename, directory fsync) and opens it for appending.
    pub(crate) fn open_file<T: Serialize>(
        dir: &Path,
        name: &str,
        records: &[T],
    ) -> Result<Journal, Error> {
        let path = dir.join(name);
        let tmp = dir.join(format!("{name}.tmp"));
        let buf = encode(records, &tmp)?;
        {
            let mut f = create_private(&tmp).map_err(|e| Error::io(&tmp, e))?;
            f.write_all(&buf).map_err(|e| Error::io(&tmp, e))?;
            f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        sync_dir(dir);
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Journal {
            file,
            path,
            good_len: buf.len() as u64,
            dirty: false,
            fault: None,
            records: records.len(),
            live: records.len(),
            compact_min: 4096,
        })
    }

    /// Opens `dir/name`, whose `len` bytes hold exactly `records` whole records (checked by
    /// the caller), for appending, without rewriting it.
    pub(crate) fn open_existing(
        dir: &Path,
        name: &str,
        len: u64,
        records: usize,
    ) -> Result<Journal, Error> {
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Journal {
            file,
            path,
            good_len: len,
            dirty: false,
            fault: None,
            records,
            live: records,
            compact_min: 4096,
        })
    }

    /// Bytes in the journal.
    pub(super) fn len(&self) -> u64 {
        self.good_len
    }

    /// True once the journal holds more than twice as many records as messages (and enough
    /// to be worth it): old versions dominate, so [`Journal::compact`] is due.
    pub(super) fn compaction_due(&self, messages: usize) -> bool {
        self.records > self.compact_min.max(2 * messages.max(self.live))
    }

    /// Rewrites the journal as exactly `messages` (one line each), keeping the test hook.
    pub(super) fn compact(&mut self, dir: &Path, messages: &[Message]) -> Result<(), Error> {
        let mut fresh = Journal::rewrite(dir, messages)?;
        fresh.fault = self.fault.take();
        fresh.compact_min = self.compact_min;
        *self = fresh;
        Ok(())
    }

    /// Arms the test hook.
    pub(super) fn inject(&mut self, fault: Fault) {
        self.fault = Some(fault);
    }

    /// Appends `messages` and fsyncs. On failure the journal is cut back to where it was.
    pub(crate) fn append<T: Serialize>(&mut self, messages: &[T]) -> Result<(), Error> {
        if messages.is_empty() {
            return Ok(());
        }
        let buf = encode(messages, &self.path)?;
        if self.dirty {
            self.cut_back().map_err(|e| Error::io(&self.path, e))?;
        }
        match self.write(&buf) {
            Ok(()) => {
                self.good_len += buf.len() as u64;
                self.records += messages.len();
                Ok(())
            }
            Err(e) => {
                self.dirty = true;
                if let Err(cut) = self.cut_back() {
                    tracing::error!(error = %cut, "could not cut the journal back after a failed append");
                }
                Err(Error::io(&self.path, e))
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let Some(f) = &mut self.fault {
            if f.times > 0 {
                f.times -= 1;
                let torn = f.torn_bytes.min(buf.len());
                self.file.write_all(&buf[..torn])?;
                return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
            }
        }
        self.file.write_all(buf)?;
        self.file.sync_data()
    }

    fn cut_back(&mut self) -> std::io::Result<()> {
        self.file.set_len(self.good_len)?;
        self.file.sync_data()?;
        self.dirty = false;
        Ok(())
    }
}

fn encode<T: Serialize>(messages: &[T], path: &Path) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    for m in messages {
        serde_json::to_writer(&mut buf, m).map_err(|e| Error::Store {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        buf.push(b'\n');
    }
    Ok(buf)
}

/// Every whole record in `data`. A line that does not parse (a torn fragment, possibly with a
/// whole record glued after it) is searched for the last record start that parses.
pub(super) fn parse_records(data: &[u8]) -> Vec<Message> {
    parse_lines(data, RECORD_START)
}

/// Every whole record of type `T` in `data`, one per line, each starting with `start`; torn
/// fragments are skipped as in [`parse_records`].
pub(crate) fn parse_lines<T: DeserializeOwned>(data: &[u8], start: &[u8]) -> Vec<T> {
    let mut out = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        if let Ok(m) = serde_json::from_slice::<T>(line) {
            out.push(m);
            continue;
        }
        let mut end = line.len();
        while let Some(i) = memchr::memmem::rfind(&line[..end], start) {
            if i > 0 {
                if let Ok(m) = serde_json::from_slice::<T>(&line[i..]) {
                    out.push(m);
                    break;
                }
            }
            end = i;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MessageType;

    fn record(id: &str, version: u64) -> Vec<u8> {
        let mut m = Message::new(
            id.into(),
            MessageType::Data,
            Some("A".into()),
            "B".into(),
            "WF".into(),
            0,
        );
        m.version = version;
        let mut b = serde_json::to_vec(&m).unwrap();
        b.push(b'\n');
        b
    }

    #[test]
    fn a_torn_fragment_never_hides_the_record_glued_after_it() {
        let mut data = record("ONE", 1);
        data.extend_from_slice(&record("TORN", 1)[..40]); // a crash or ENOSPC mid-append
        data.extend_from_slice(&record("TWO", 1)); // written after it, same line
        data.extend_from_slice(&record("THREE", 2)[..25]); // torn tail
        let ids: Vec<String> = parse_records(&data).into_iter().map(|m| m.id).collect();
        assert_eq!(ids, ["ONE", "TWO"]);
    }

    #[test]
    fn a_failed_append_is_cut_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, ms) = Journal::recover(dir.path()).unwrap();
        assert!(ms.is_empty());
        let one = Message::new(
            "ONE".into(),
            MessageType::Data,
            None,
            "B".into(),
            "W".into(),
            0,
        );
        j.append(std::slice::from_ref(&one)).unwrap();
        let good = j.len();
        j.inject(Fault {
            torn_bytes: 10,
            times: 1,
        });
        assert!(j
            .append(std::slice::from_ref(&one))
            .unwrap_err()
            .is_storage_full());
        assert_eq!(
            std::fs::metadata(dir.path().join("journal.jsonl"))
                .unwrap()
                .len(),
            good
        );
        let two = Message {
            id: "TWO".into(),
            ..one
        };
        j.append(&[two]).unwrap();
        let (_, ms) = Journal::recover(dir.path()).unwrap();
        assert_eq!(ms.len(), 2);
    }
}
