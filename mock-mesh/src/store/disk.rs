//! The disk side of the store: what a [`Store::commit`] moves and reports (a staged chunk to
//! put in place, why a change was refused), renames made durable, recovery's reclaiming of
//! chunk data no record owns, journal compaction, and the small file helpers (0600 files,
//! directory fsync, blocking work off the async threads).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::journal::Journal;
use super::{lock, Inner, Message, PosStage, Received, Status};
use crate::error::{ApiError, Error};

/// A staged chunk body to become chunk `n` of message `id` once a [`Store::commit`] allows it.
pub(crate) struct Place {
    pub(crate) id: String,
    pub(crate) n: u32,
    pub(crate) body: Received,
}

/// Why a [`Store::commit`] did not happen.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The change is not allowed (the message is gone, complete, …): an answer for the client.
    Api(ApiError),
    /// The store could not make it durable; nothing changed.
    Store(Error),
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> ApiError {
        match r {
            Refused::Api(e) => e,
            Refused::Store(e) if e.is_storage_full() => {
                tracing::error!(error = %e, "store full; request refused");
                ApiError::INSUFFICIENT_STORAGE
            }
            Refused::Store(e) => {
                tracing::error!(error = %e, "could not store a change");
                ApiError::INTERNAL
            }
        }
    }
}

impl From<Refused> for Error {
    fn from(r: Refused) -> Error {
        match r {
            Refused::Store(e) => e,
            Refused::Api(e) => Error::Store {
                path: PathBuf::new(),
                message: format!("change refused: {}", e.status()),
            },
        }
    }
}

/// Rewrites the journal from the current messages once old versions dominate it, so that it
/// stays proportional to the messages it describes. Called under the journal lock after every
/// change has been applied in memory. A failed compaction leaves the old journal in use.
pub(super) fn compact_if_due(journal: &mut Journal, inner: &Mutex<Inner>, dir: &Path) {
    let count = lock(inner).messages.len();
    if !journal.compaction_due(count) {
        return;
    }
    let mut messages: Vec<Message> = lock(inner).messages.values().cloned().collect();
    messages.sort_by_key(|m| (m.seq, m.created_us));
    match journal.compact(dir, &messages) {
        Ok(()) => tracing::info!(messages = messages.len(), "journal compacted"),
        Err(e) => tracing::warn!(error = %e, "journal compaction failed; the old journal stays"),
    }
}

/// Renames a staged chunk to its place and makes the rename durable.
pub(super) fn put_in_place(tmp: &Path, dest: &Path) -> Result<(), Error> {
    let parent = dest.parent().map(Path::to_path_buf).unwrap_or_default();
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    std::fs::rename(tmp, dest).map_err(|e| Error::io(dest, e))?;
    sync_dir(&parent);
    if let Some(chunks) = parent.parent() {
        sync_dir(chunks);
    }
    Ok(())
}

/// Removes chunk data that no live record owns: directories of unknown messages or of
/// messages that can no longer be downloaded (undeliverable, failed, answered by the POS), and
/// chunk files an uploading or accepted message does not list.
pub(super) fn reclaim_orphans(chunks: &Path, messages: &[Message]) {
    let by_id: HashMap<&str, &Message> = messages.iter().map(|m| (m.id.as_str(), m)).collect();
    let Ok(rd) = std::fs::read_dir(chunks) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let live = by_id.get(name.as_ref()).filter(|m| match m.status {
            Status::Uploading | Status::Accepted => true,
            Status::Acknowledged => m.pos_stage != PosStage::Done,
            Status::Undeliverable | Status::Error => false,
        });
        let Some(m) = live else {
            tracing::info!(message_id = %name, "reclaiming chunk data no record owns");
            let _ = std::fs::remove_dir_all(e.path());
            continue;
        };
        let Ok(files) = std::fs::read_dir(e.path()) else {
            continue;
        };
        for f in files.flatten() {
            let n: Option<usize> = f.file_name().to_string_lossy().parse().ok();
            let listed =
                n.is_some_and(|n| n >= 1 && m.chunks.get(n - 1).copied().flatten().is_some());
            if !listed {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
}

/// Runs blocking file work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(Error::Store {
            path: PathBuf::new(),
            message: format!("blocking task failed: {e}"),
        }),
    }
}

/// Creates a file readable and writable by the owner only (0600).
pub(crate) fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

pub(super) fn set_private(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// fsyncs a directory so a rename in it is durable.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::super::{MessageType, Store};
    use super::*;

    #[tokio::test]
    async fn the_journal_stays_proportional_to_the_messages() {
        let dir = tempfile::tempdir().unwrap();
        let expiry = std::time::Duration::from_secs(3600);
        let store = Store::open(dir.path(), expiry).unwrap();
        lock(store.journal.as_ref().unwrap()).compact_min = 8;
        let m = Message::new(
            "ID1".into(),
            MessageType::Data,
            Some("A".into()),
            "B".into(),
            "W".into(),
            0,
        );
        store
            .commit(None, move |inner| Ok(vec![inner.new_message(m)?]))
            .await
            .unwrap();
        let one_record = store.journal_len();
        for i in 0..200 {
            let stage = if i % 2 == 0 {
                PosStage::JobSent
            } else {
                PosStage::New
            };
            let snapshot = store.set_pos_stage("ID1", stage).unwrap();
            store.persist(vec![snapshot]).await.unwrap();
        }
        assert!(
            store.journal_len() <= 10 * one_record,
            "{}",
            store.journal_len()
        );
        let version = store.get("ID1").unwrap().version;
        drop(store);
        let store = Store::open(dir.path(), expiry).unwrap();
        assert_eq!(
            store.get("ID1").unwrap().version,
            version,
            "the newest version kept"
        );
    }
}
