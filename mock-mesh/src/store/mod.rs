//! Messages and their chunks, with the MESH lifecycle (`mesh-protocol.md` §11):
//! `uploading` → `accepted` (in the recipient's inbox) → `acknowledged`, or `undeliverable`
//! after the inbox expiry with a non-delivery report (REPORT, code 14) to the sender.
//!
//! Metadata lives in memory behind one `std::sync::Mutex` (never held across `.await`).
//! The disk store adds durability:
//! * a chunk body is streamed to `tmp/` and fsynced; only once [`Store::commit`] has checked,
//!   under the journal lock, that the message still takes it (a chunk that lost the race with
//!   its retry is refused and deleted) is it renamed to `chunks/<id>/<n>` and the directory
//!   fsynced;
//! * every metadata change is appended as one JSON line to `journal.jsonl` and fsynced
//!   *before* it is applied in memory, so a message is visible to its recipient, and answered
//!   `202`, only once its record is durable; a failed append is cut back to the last good
//!   record (`journal.rs`), and a full disk is answered `507`;
//! * a message enters an inbox only once all its chunks are stored, so a restart never exposes a
//!   partial message, and an `uploading` message can still be completed after a restart;
//! * recovery keeps the newest version of each message, survives torn fragments, compacts the
//!   journal and reclaims chunk files no record owns.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rand::Rng;

use crate::clock::to_us;
use crate::error::{ApiError, Error};
pub(crate) use disk::{blocking, create_private, sync_dir, Place, Refused};
use disk::{compact_if_due, put_in_place, reclaim_orphans, set_private};
use journal::Fault;
pub(crate) use journal::{parse_lines, Journal};

mod disk;
mod journal;
mod message;

pub(crate) use message::{ErrorEvent, Message, MessageType, PosStage, Status, WorkflowFilter};

/// A chunk body received from a client, not yet committed.
pub(crate) enum Received {
    Memory(Bytes),
    File { tmp: PathBuf, size: u64 },
}

impl Received {
    pub(crate) fn size(&self) -> u64 {
        match self {
            Received::Memory(b) => b.len() as u64,
            Received::File { size, .. } => *size,
        }
    }
}

/// Where to read a stored chunk from.
pub(crate) enum ChunkSource {
    Memory(Bytes),
    File { path: PathBuf, size: u64 },
}

/// The metadata and its indexes.
#[derive(Default)]
pub(crate) struct Inner {
    messages: HashMap<String, Message>,
    /// recipient → seq → id, accepted messages only
    inboxes: HashMap<String, BTreeMap<u64, String>>,
    /// sender → ids in send order
    outboxes: HashMap<String, Vec<String>>,
    /// (deadline µs, id) of accepted DATA messages
    expiry: BTreeSet<(i64, String)>,
    /// (created µs, id) of messages still uploading
    uploads: BTreeSet<(i64, String)>,
    next_seq: u64,
    /// (sender, POS mailbox, file hash) → message id that first submitted it
    pos_hashes: HashMap<(String, String, String), String>,
}

impl Inner {
    /// Adds `m` to the indexes; `new` = first time this message is seen (outbox entry).
    fn index(&mut self, m: &Message, expiry_us: i64, new: bool) {
        if let (Some(s), true) = (&m.sender, new) {
            self.outboxes
                .entry(s.clone())
                .or_default()
                .push(m.id.clone());
        }
        if m.status == Status::Uploading {
            self.uploads.insert((m.created_us, m.id.clone()));
        }
        if m.status == Status::Accepted {
            self.inboxes
                .entry(m.recipient.clone())
                .or_default()
                .insert(m.seq, m.id.clone());
            if m.message_type == MessageType::Data {
                let at = m.accepted_us.unwrap_or(m.created_us);
                self.expiry
                    .insert((at.saturating_add(expiry_us), m.id.clone()));
            }
        }
        if let (Some(h), Some(s)) = (&m.pos_hash, &m.sender) {
            self.pos_hashes
                .entry((s.clone(), m.recipient.clone(), h.clone()))
                .or_insert_with(|| m.id.clone());
        }
        self.next_seq = self.next_seq.max(m.seq + 1);
    }

    /// Makes `m` the current version of its message, re-indexing it.
    fn apply(&mut self, m: Message, expiry_us: i64) {
        let new = match self.messages.get(&m.id) {
            Some(old) => {
                let old = old.clone();
                self.unindex_inbox(&old, expiry_us);
                false
            }
            None => true,
        };
        self.index(&m, expiry_us, new);
        self.messages.insert(m.id.clone(), m);
    }

    /// The new version of message `id` with chunk `n` (of `size` bytes) stored, accepted if
    /// that was its last missing chunk. Refused if the message is gone (404), no longer
    /// uploading (423: the chunk lost a race with the last one), `n` is out of range (406) or
    /// the message would exceed `max_message_bytes` (413).
    pub(crate) fn with_chunk(
        &mut self,
        id: &str,
        n: u32,
        size: u64,
        max_message_bytes: u64,
        now_us: i64,
    ) -> Result<Message, ApiError> {
        let mut m = self.messages.get(id).ok_or(ApiError::NOT_FOUND)?.clone();
        if m.status != Status::Uploading {
            return Err(ApiError::LOCKED);
        }
        let idx = (n as usize).saturating_sub(1);
        let Some(slot) = m.chunks.get_mut(idx) else {
            return Err(ApiError::NOT_ACCEPTABLE);
        };
        *slot = Some(size);
        if m.file_size() > max_message_bytes {
            return Err(ApiError::TOO_LARGE);
        }
        m.version += 1;
        if m.all_chunks_present() {
            m.status = Status::Accepted;
            m.accepted_us = Some(now_us);
            m.status_us = now_us;
            m.seq = self.reserve_seq();
        }
        Ok(m)
    }

    /// Chunked messages `sender` has begun and not finished (nor abandoned).
    pub(crate) fn uploads_from(&self, sender: &str) -> usize {
        self.uploads
            .iter()
            .filter(|(_, id)| {
                self.messages.get(id).is_some_and(|m| {
                    m.status == Status::Uploading && m.sender.as_deref() == Some(sender)
                })
            })
            .count()
    }

    /// A brand-new message, version 1, with an inbox sequence number if it is accepted.
    pub(crate) fn new_message(&mut self, mut m: Message) -> Result<Message, ApiError> {
        if self.messages.contains_key(&m.id) {
            return Err(ApiError::INTERNAL);
        }
        m.version = 1;
        if m.status == Status::Accepted {
            m.seq = self.reserve_seq();
        }
        Ok(m)
    }

    /// Reserves the next inbox sequence number.
    pub(crate) fn reserve_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn unindex_inbox(&mut self, m: &Message, expiry_us: i64) {
        if let Some(ib) = self.inboxes.get_mut(&m.recipient) {
            if ib.get(&m.seq) == Some(&m.id) {
                ib.remove(&m.seq);
            }
        }
        let at = m.accepted_us.unwrap_or(m.created_us);
        self.expiry
            .remove(&(at.saturating_add(expiry_us), m.id.clone()));
        self.uploads.remove(&(m.created_us, m.id.clone()));
    }
}

/// A message id in the real MESH format `yyyyMMddHHmmssffffff_XXXXXX` (§1) not in `taken`.
fn fresh_id(taken: &HashMap<String, Message>, now: DateTime<Utc>) -> String {
    loop {
        let id = format!(
            "{}_{:06X}",
            now.format("%Y%m%d%H%M%S%6f"),
            rand::thread_rng().gen_range(0..0x100_0000u32)
        );
        if !taken.contains_key(&id) {
            return id;
        }
    }
}

/// The message store.
pub(crate) struct Store {
    inner: Arc<Mutex<Inner>>,
    blobs: Arc<Mutex<HashMap<(String, u32), Bytes>>>,
    dir: Option<PathBuf>,
    journal: Option<Arc<Mutex<Journal>>>,
    expiry_us: i64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// A memory store.
    pub(crate) fn memory(expiry: std::time::Duration) -> Store {
        Store {
            inner: Arc::new(Mutex::new(Inner::default())),
            blobs: Arc::new(Mutex::new(HashMap::new())),
            dir: None,
            journal: None,
            expiry_us: expiry.as_micros().min(i64::MAX as u128) as i64,
        }
    }

    /// Opens (creating or recovering) a disk store. Blocking; call from start-up.
    ///
    /// Recovery: the journal is read (tolerating torn fragments) and compacted; staging files
    /// in `tmp/` are removed; chunk files that no live record owns (a crash between the rename
    /// and the journal record, or data of messages that can no longer be downloaded) are
    /// reclaimed.
    pub(crate) fn open(dir: &Path, expiry: std::time::Duration) -> Result<Store, Error> {
        for sub in ["tmp", "chunks"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        }
        set_private(dir);
        // leftovers of interrupted uploads
        if let Ok(rd) = std::fs::read_dir(dir.join("tmp")) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let (journal, messages) = Journal::recover(dir)?;
        reclaim_orphans(&dir.join("chunks"), &messages);
        let store = Store {
            inner: Arc::new(Mutex::new(Inner::default())),
            blobs: Arc::new(Mutex::new(HashMap::new())),
            dir: Some(dir.to_path_buf()),
            journal: Some(Arc::new(Mutex::new(journal))),
            expiry_us: expiry.as_micros().min(i64::MAX as u128) as i64,
        };
        {
            let mut inner = lock(&store.inner);
            for m in messages {
                inner.index(&m, store.expiry_us, true);
                inner.messages.insert(m.id.clone(), m);
            }
        }
        Ok(store)
    }

    /// Where an upload in progress is written (disk store only).
    pub(crate) fn tmp_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| {
            d.join("tmp")
                .join(uuid::Uuid::new_v4().simple().to_string())
        })
    }

    fn chunk_path(&self, id: &str, n: u32) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join("chunks").join(id).join(n.to_string()))
    }

    /// A new message id in the real MESH format `yyyyMMddHHmmssffffff_XXXXXX`.
    pub(crate) fn new_id(&self, now: DateTime<Utc>) -> String {
        fresh_id(&lock(&self.inner).messages, now)
    }

    pub(crate) fn get(&self, id: &str) -> Option<Message> {
        lock(&self.inner).messages.get(id).cloned()
    }

    /// Records chunk `n` of an uploading message, accepting the message when every chunk is
    /// present. Checks (§5.3): exists (404), caller is the sender (403), still uploading (423),
    /// `n <= N` and DATA (406), same encoding (417).
    pub(crate) fn check_chunk_upload(
        &self,
        id: &str,
        caller: &str,
        n: u32,
        encoding: crate::headers::ContentEncoding,
    ) -> Result<Message, ApiError> {
        let inner = lock(&self.inner);
        let m = inner.messages.get(id).ok_or(ApiError::NOT_FOUND)?;
        if m.sender.as_deref() != Some(caller) {
            return Err(ApiError::FORBIDDEN);
        }
        if m.status != Status::Uploading {
            return Err(ApiError::LOCKED);
        }
        if n > m.total_chunks || m.message_type != MessageType::Data {
            return Err(ApiError::NOT_ACCEPTABLE);
        }
        if m.content_encoding != encoding {
            return Err(ApiError::ENCODING_CHANGED);
        }
        Ok(m.clone())
    }

    /// Acknowledge (§5.8): only the recipient; accepted → acknowledged; otherwise no change.
    /// Returns the message and whether it changed. Durable before visible, like every
    /// [`Store::commit`]: a failed journal write leaves the message in the inbox.
    pub(crate) async fn acknowledge(
        &self,
        id: &str,
        caller: &str,
        now: DateTime<Utc>,
    ) -> Result<(Message, bool), Refused> {
        let (owned_id, caller) = (id.to_string(), caller.to_string());
        let now_us = to_us(now);
        let changed = self
            .commit(None, move |inner| {
                let m = inner.messages.get(&owned_id).ok_or(ApiError::NO_MESSAGE)?;
                if m.recipient != caller {
                    return Err(ApiError::FORBIDDEN);
                }
                if m.status != Status::Accepted {
                    return Ok(Vec::new());
                }
                let mut m = m.clone();
                m.status = Status::Acknowledged;
                m.acknowledged_us = Some(now_us);
                m.status_us = now_us;
                m.version += 1;
                Ok(vec![m])
            })
            .await?;
        match changed.into_iter().next() {
            Some(m) => Ok((m, true)),
            None => Ok((
                self.get(id).ok_or(Refused::Api(ApiError::NO_MESSAGE))?,
                false,
            )),
        }
    }

    /// Sets a POS file hash on a message; returns the id of an earlier message from the same
    /// sender to the same POS mailbox with the same content, if there is one.
    pub(crate) fn record_pos_hash(
        &self,
        id: &str,
        hash: &str,
    ) -> (Option<Message>, Option<String>) {
        let mut inner = lock(&self.inner);
        let Some(m) = inner.messages.get_mut(id) else {
            return (None, None);
        };
        m.pos_hash = Some(hash.to_string());
        m.version += 1;
        let snapshot = m.clone();
        let key = (
            snapshot.sender.clone().unwrap_or_default(),
            snapshot.recipient.clone(),
            hash.to_string(),
        );
        let first = inner
            .pos_hashes
            .entry(key)
            .or_insert_with(|| id.to_string())
            .clone();
        let dup = (first != id).then_some(first);
        (Some(snapshot), dup)
    }

    /// Moves every accepted DATA message whose expiry passed to `undeliverable` and creates a
    /// non-delivery report (REPORT, SEND/14) in its sender's inbox. Returns all changed and new
    /// messages (to persist) and the ids whose data can be dropped.
    pub(crate) fn expire_due(&self, now: DateTime<Utc>, days: u64) -> Vec<Message> {
        let now_us = to_us(now);
        let mut inner = lock(&self.inner);
        let mut changed = Vec::new();
        while let Some((deadline, id)) = inner.expiry.first().cloned() {
            if deadline > now_us {
                break;
            }
            inner.expiry.pop_first();
            let Some(m) = inner.messages.get_mut(&id) else {
                continue;
            };
            if m.status != Status::Accepted {
                continue;
            }
            let description = format!("Message not collected by recipient after {days} days");
            m.status = Status::Undeliverable;
            m.status_us = now_us;
            m.version += 1;
            m.error = Some(ErrorEvent {
                event: "SEND".into(),
                code: "14".into(),
                description: description.clone(),
                linked_message_id: None,
            });
            let snapshot = m.clone();
            if let Some(ib) = inner.inboxes.get_mut(&snapshot.recipient) {
                ib.remove(&snapshot.seq);
            }
            changed.push(snapshot.clone());
            if let Some(sender) = snapshot.sender.clone() {
                let seq = inner.next_seq;
                inner.next_seq += 1;
                let report_id = fresh_id(&inner.messages, now);
                let report = Message {
                    subject: Some(match &snapshot.subject {
                        Some(s) => format!("NDR: {s}"),
                        None => "NDR".into(),
                    }),
                    local_id: snapshot.local_id.clone(),
                    seq,
                    error: Some(ErrorEvent {
                        event: "SEND".into(),
                        code: "14".into(),
                        description,
                        linked_message_id: Some(snapshot.id.clone()),
                    }),
                    ..Message::new(
                        report_id,
                        MessageType::Report,
                        None,
                        sender,
                        snapshot.workflow_id.clone(),
                        now_us,
                    )
                };
                inner.index(&report, self.expiry_us, true);
                // reports are not themselves subject to expiry
                let at = report.accepted_us.unwrap_or(now_us);
                inner
                    .expiry
                    .remove(&(at.saturating_add(self.expiry_us), report.id.clone()));
                inner.messages.insert(report.id.clone(), report.clone());
                changed.push(report);
            }
        }
        changed
    }

    /// Abandons every upload started more than `max_age` before `now` and still incomplete:
    /// it turns `error` (no longer completable; 423 for a late chunk). Returns the changed
    /// messages (to persist, and whose data to drop).
    pub(crate) fn abandon_uploads(
        &self,
        now: DateTime<Utc>,
        max_age: std::time::Duration,
    ) -> Vec<Message> {
        let now_us = to_us(now);
        let age_us = max_age.as_micros().min(i64::MAX as u128) as i64;
        let mut inner = lock(&self.inner);
        let mut changed = Vec::new();
        while let Some((created, id)) = inner.uploads.first().cloned() {
            if created.saturating_add(age_us) > now_us {
                break;
            }
            inner.uploads.pop_first();
            let Some(m) = inner.messages.get_mut(&id) else {
                continue;
            };
            if m.status != Status::Uploading {
                continue;
            }
            m.status = Status::Error;
            m.status_us = now_us;
            m.version += 1;
            changed.push(m.clone());
        }
        changed
    }

    /// Lists accepted inbox messages after `after` (an id), with an optional workflow filter.
    /// Returns `(ids, more, total_in_inbox)`; `None` if `after` is unknown.
    pub(crate) fn list_inbox(
        &self,
        mailbox: &str,
        after: Option<&str>,
        filter: Option<&WorkflowFilter>,
        max: usize,
    ) -> Option<(Vec<String>, bool, usize)> {
        let inner = lock(&self.inner);
        let empty = BTreeMap::new();
        let inbox = inner.inboxes.get(mailbox).unwrap_or(&empty);
        let start = match after {
            None => 0,
            Some(id) => inner.messages.get(id)?.seq + 1,
        };
        let mut ids = Vec::new();
        let mut more = false;
        for (_, id) in inbox.range(start..) {
            let Some(m) = inner.messages.get(id) else {
                continue;
            };
            if let Some(f) = filter {
                if !f.matches(&m.workflow_id) {
                    continue;
                }
            }
            if ids.len() == max {
                more = true;
                break;
            }
            ids.push(id.clone());
        }
        Some((ids, more, inbox.len()))
    }

    /// Messages in `sender`'s outbox with this local id.
    pub(crate) fn by_local_id(&self, sender: &str, local_id: &str) -> Vec<Message> {
        let inner = lock(&self.inner);
        inner
            .outboxes
            .get(sender)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| inner.messages.get(id))
                    .filter(|m| m.local_id.as_deref() == Some(local_id))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Messages to `mailbox` that the POS has not finished answering (recovery after a
    /// restart): accepted ones, and collected ones whose result is still to be sent.
    pub(crate) fn pos_pending(&self, mailbox: &str) -> Vec<Message> {
        let inner = lock(&self.inner);
        let mut out: Vec<Message> = inner
            .messages
            .values()
            .filter(|m| {
                m.recipient == mailbox
                    && m.message_type == MessageType::Data
                    && m.pos_stage != PosStage::Done
                    && matches!(m.status, Status::Accepted | Status::Acknowledged)
            })
            .cloned()
            .collect();
        out.sort_by_key(|m| m.seq);
        out
    }

    /// Records the POS's progress on a submission; the snapshot to persist.
    pub(crate) fn set_pos_stage(&self, id: &str, stage: PosStage) -> Option<Message> {
        let mut inner = lock(&self.inner);
        let m = inner.messages.get_mut(id)?;
        m.pos_stage = stage;
        m.version += 1;
        Some(m.clone())
    }

    /// Makes received chunk bodies chunks 1, 2, ... of message `id`: on disk, every file is
    /// renamed into place, then the directories are fsynced once (not once a chunk: a POS
    /// result of 11 chunks was 22 directory fsyncs one after another).
    pub(crate) async fn commit_chunks(&self, id: &str, bodies: Vec<Received>) -> Result<(), Error> {
        let mut files = Vec::new();
        for (i, body) in bodies.into_iter().enumerate() {
            let n = i as u32 + 1;
            match body {
                Received::Memory(b) => {
                    lock(&self.blobs).insert((id.to_string(), n), b);
                }
                Received::File { tmp, .. } => match self.chunk_path(id, n) {
                    Some(dest) => files.push((tmp, dest)),
                    None => {
                        return Err(Error::Store {
                            path: tmp,
                            message: "file chunk in a memory store".into(),
                        })
                    }
                },
            }
        }
        let Some(parent) = files
            .first()
            .and_then(|(_, d)| d.parent().map(Path::to_path_buf))
        else {
            return Ok(());
        };
        blocking(move || {
            std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
            for (tmp, dest) in &files {
                std::fs::rename(tmp, dest).map_err(|e| Error::io(dest, e))?;
            }
            sync_dir(&parent);
            if let Some(chunks) = parent.parent() {
                sync_dir(chunks);
            }
            Ok(())
        })
        .await
    }

    /// Drops a received but uncommitted body.
    pub(crate) async fn discard(&self, body: Received) {
        if let Received::File { tmp, .. } = body {
            let _ = tokio::fs::remove_file(tmp).await;
        }
    }

    /// Where chunk `n` of `id` can be read.
    pub(crate) fn chunk_source(&self, id: &str, n: u32, size: u64) -> Option<ChunkSource> {
        match &self.dir {
            None => lock(&self.blobs)
                .get(&(id.to_string(), n))
                .cloned()
                .map(ChunkSource::Memory),
            Some(_) => {
                let path = self.chunk_path(id, n)?;
                Some(ChunkSource::File { path, size })
            }
        }
    }

    /// Frees the bodies of a message that can no longer be downloaded.
    pub(crate) async fn drop_data(&self, m: &Message) {
        self.drop_data_of(&m.id, m.total_chunks).await;
    }

    /// Frees the bodies of message `id` (of `total` chunks).
    pub(crate) async fn drop_data_of(&self, id: &str, total: u32) {
        match &self.dir {
            None => {
                let mut blobs = lock(&self.blobs);
                for n in 1..=total {
                    blobs.remove(&(id.to_string(), n));
                }
            }
            Some(d) => {
                let p = d.join("chunks").join(id);
                let _ = tokio::fs::remove_dir_all(p).await;
            }
        }
    }

    /// Appends message snapshots to the journal and fsyncs it (no-op for the memory store). A
    /// failed append leaves the journal as it was.
    pub(crate) async fn persist(&self, messages: Vec<Message>) -> Result<(), Error> {
        let Some(journal) = self.journal.clone() else {
            return Ok(());
        };
        if messages.is_empty() {
            return Ok(());
        }
        let inner = self.inner.clone();
        let dir = self.dir.clone().unwrap_or_default();
        blocking(move || {
            let mut journal = lock(&journal);
            journal.append(&messages)?;
            compact_if_due(&mut journal, &inner, &dir);
            Ok(())
        })
        .await
    }

    /// Test hook: the next `times` journal appends write `torn_bytes` bytes and then fail as if
    /// the disk were full. No-op for the memory store.
    pub(crate) fn inject_journal_fault(&self, torn_bytes: usize, times: u32) {
        if let Some(j) = &self.journal {
            lock(j).inject(Fault { torn_bytes, times });
        }
    }

    /// Bytes in the journal (0 for the memory store).
    pub(crate) fn journal_len(&self) -> u64 {
        self.journal.as_ref().map_or(0, |j| lock(j).len())
    }

    /// One metadata change, durable before visible. `change` computes the new versions of the
    /// messages it touches from the current state (it may only reserve inbox sequence numbers,
    /// nothing else); if it refuses, nothing happens and a staged chunk in `place` is deleted.
    /// Otherwise the staged chunk is moved into place, the new versions are journaled and
    /// fsynced, and only then applied (indexed into inboxes). On the disk store the whole step
    /// runs under the journal lock, so two changes to one message cannot interleave: a chunk
    /// that loses a race is refused before its bytes go anywhere near the accepted data.
    pub(crate) async fn commit<F>(
        &self,
        place: Option<Place>,
        change: F,
    ) -> Result<Vec<Message>, Refused>
    where
        F: FnOnce(&mut Inner) -> Result<Vec<Message>, ApiError> + Send + 'static,
    {
        let expiry_us = self.expiry_us;
        let inner = self.inner.clone();
        let Some(journal) = self.journal.clone() else {
            let mut guard = lock(&inner);
            let changed = change(&mut guard).map_err(Refused::Api)?;
            if let Some(Place {
                id,
                n,
                body: Received::Memory(b),
            }) = place
            {
                lock(&self.blobs).insert((id, n), b);
            }
            for m in &changed {
                guard.apply(m.clone(), expiry_us);
            }
            return Ok(changed);
        };
        let dest = place.as_ref().and_then(|p| self.chunk_path(&p.id, p.n));
        let dir = self.dir.clone().unwrap_or_default();
        let done = tokio::task::spawn_blocking(move || {
            let mut journal = lock(&journal);
            let (changed, had_chunk) = {
                let mut guard = lock(&inner);
                let had = place.as_ref().is_some_and(|p| {
                    guard
                        .messages
                        .get(&p.id)
                        .and_then(|m| m.chunks.get(p.n as usize - 1).copied().flatten())
                        .is_some()
                });
                match change(&mut guard) {
                    Ok(c) => (c, had),
                    Err(e) => {
                        drop(guard);
                        if let Some(Place {
                            body: Received::File { tmp, .. },
                            ..
                        }) = place
                        {
                            let _ = std::fs::remove_file(tmp);
                        }
                        return Err(Refused::Api(e));
                    }
                }
            };
            let placed = match (place, &dest) {
                (
                    Some(Place {
                        body: Received::File { tmp, .. },
                        ..
                    }),
                    Some(dest),
                ) => {
                    put_in_place(&tmp, dest).map_err(Refused::Store)?;
                    Some(dest)
                }
                _ => None,
            };
            if let Err(e) = journal.append(&changed) {
                if let (Some(dest), false) = (placed, had_chunk) {
                    let _ = std::fs::remove_file(dest);
                    if let Some(parent) = dest.parent() {
                        let _ = std::fs::remove_dir(parent); // only if now empty
                    }
                }
                return Err(Refused::Store(e));
            }
            {
                let mut guard = lock(&inner);
                for m in &changed {
                    guard.apply(m.clone(), expiry_us);
                }
            }
            compact_if_due(&mut journal, &inner, &dir);
            Ok(changed)
        })
        .await;
        match done {
            Ok(r) => r,
            Err(e) => Err(Refused::Store(Error::Store {
                path: PathBuf::new(),
                message: format!("blocking task failed: {e}"),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_real_format() {
        let s = Store::memory(std::time::Duration::from_secs(5));
        let id = s.new_id(Utc::now());
        assert_eq!(id.len(), 27);
        assert_eq!(&id[20..21], "_");
        assert!(id[..20].bytes().all(|b| b.is_ascii_digit()));
    }
}
