//! Folder mode: the POS through an installed NHS England MESH client (the Java program that
//! syncs a mailbox with folders) instead of the MESH API (`mesh-client-folders.md`).
//!
//! The pipeline is the API path's: the same journal, the same pairs, the same reply
//! classification and the same final results. Only the transport differs:
//! - [`send`](send()) writes each pair under a dot-name in `OUT`, journals it as `queued`, renames it
//!   in (`.dat` first), then waits for the client to move it to `SENT` (its rewritten `.ctl`
//!   gives the MESH message id: journaled as `submitted`) or to `FAILED` (an error naming the
//!   status code with both readings). A pair already queued is never written again.
//! - [`collect`](collect()) treats every `IN/*.ctl` as a message (a `.dat` is optional:
//!   reports have none), matches it to a submission by LocalId like the API path, stores the
//!   files that are ours in the work directory (synced) and only then removes them from `IN`;
//!   everything else is left untouched and listed. Delay reports (05) and any `Status` ERROR
//!   are alerts.
//! - [`cfg`](mod@cfg) finds a mailbox's folder root in `meshclient.cfg`.

pub mod cfg;
mod collect;
mod send;

pub use collect::{collect, FolderCollectReport};
pub use send::{confirm, send, Confirmed, FolderOutcome, FolderSendReport, QueuedFile};

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{usage, Error};

/// The folders of one mailbox under its folder root (`InterfaceRoot`), found ignoring case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folders {
    /// The folder root.
    pub root: PathBuf,
    /// `IN`: received messages and reports.
    pub inbox: PathBuf,
    /// `OUT`: messages to send.
    pub outbox: PathBuf,
    /// `SENT`: sent messages, `.ctl` rewritten.
    pub sent: PathBuf,
    /// `FAILED`: messages the client could not send.
    pub failed: PathBuf,
}

impl Folders {
    /// Finds `IN`, `OUT`, `SENT` and `FAILED` under `root`, each matched ignoring case; a name
    /// missing, or present twice (`IN` and `in`), is an error.
    pub fn open(root: &Path) -> Result<Folders, Error> {
        Ok(Folders {
            root: root.to_path_buf(),
            inbox: find_dir(root, "IN")?,
            outbox: find_dir(root, "OUT")?,
            sent: find_dir(root, "SENT")?,
            failed: find_dir(root, "FAILED")?,
        })
    }
}

/// The one directory under `root` named `name` ignoring case.
pub fn find_dir(root: &Path, name: &str) -> Result<PathBuf, Error> {
    let entries = std::fs::read_dir(root).map_err(|e| {
        usage(format!(
            "cannot read the MESH client folder root {}: {e}; give the mailbox's InterfaceRoot \
             from meshclient.cfg",
            root.display()
        ))
    })?;
    let mut found: Vec<PathBuf> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir()
            && entry
                .file_name()
                .to_string_lossy()
                .eq_ignore_ascii_case(name)
        {
            found.push(path);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(usage(format!(
            "{} has no {name} folder: is it a MESH client mailbox folder (InterfaceRoot)?",
            root.display()
        ))),
        _ => Err(usage(format!(
            "{} has {} folders named {name} ignoring case; keep one",
            root.display(),
            found.len()
        ))),
    }
}

/// The file in `dir` named `name` (exactly, else ignoring case), if there is exactly one.
pub fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let exact = dir.join(name);
    if exact.is_file() {
        return Some(exact);
    }
    let mut found = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().eq_ignore_ascii_case(name))
        .map(|e| e.path());
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// Copies `from` to the new file `to` (mode 0600) and syncs it.
pub fn copy_synced(from: &Path, to: &Path) -> Result<u64, Error> {
    let mut src = std::fs::File::open(from).map_err(|e| processor::Error::read(from, e))?;
    let mut dst = processor::files::create_private(to)?;
    let n = std::io::copy(&mut src, &mut dst).map_err(|e| processor::Error::write(to, e))?;
    dst.flush().map_err(|e| processor::Error::write(to, e))?;
    dst.sync_all().map_err(|e| processor::Error::write(to, e))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_found_ignoring_case_and_never_twice() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for name in ["in", "OUT", "Sent", "failed", "temp"] {
            std::fs::create_dir(root.join(name)).unwrap();
        }
        let f = Folders::open(root).unwrap();
        assert_eq!(f.inbox, root.join("in"));
        assert_eq!(f.sent, root.join("Sent"));
        std::fs::create_dir(root.join("IN")).unwrap();
        let e = Folders::open(root).unwrap_err().to_string();
        assert!(e.contains("2 folders named IN"), "{e}");
        std::fs::remove_dir(root.join("in")).unwrap();
        std::fs::remove_dir(root.join("failed")).unwrap();
        let e = Folders::open(root).unwrap_err().to_string();
        assert!(e.contains("no FAILED folder"), "{e}");
    }
}
