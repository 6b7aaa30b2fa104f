//! The one policy for files the engine writes: new files are created with mode 0600 (they
//! hold NHS numbers), written under a temporary name, synced and renamed, and the directory
//! synced so that the rename is durable.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Makes `dir` if needed; fails unless it ends up an empty directory.
pub fn ensure_empty_dir(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::OutputNotEmpty {
                    path: dir.to_path_buf(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))
        }
        Err(e) => Err(Error::write(dir, e)),
    }
}

/// Creates `dir` (and parents) with mode 0700 for the last component.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::write(dir, e))
}

/// Creates a new file with mode 0600; fails if it exists.
pub fn create_private(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::write(path, e))
}

/// Writes `content` to `dir/name` atomically (temporary name, sync, rename), mode 0600.
pub fn write_atomic(dir: &Path, name: &str, content: &[u8]) -> Result<PathBuf> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let r = (|| {
        let mut f = create_private(&tmp)?;
        f.write_all(content).map_err(|e| Error::write(&tmp, e))?;
        f.sync_all().map_err(|e| Error::write(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::write(&path, e))
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map(|_| path)
}

/// Syncs a directory so that renames in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::write(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_files_and_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let path = write_atomic(d, "a.txt", b"x").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(create_private(&path).is_err(), "exists");
        assert!(ensure_empty_dir(d).is_err());
        let sub = d.join("b/c");
        create_private_dir(&sub).unwrap();
        let mode = std::fs::metadata(&sub).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        ensure_empty_dir(&sub).unwrap();
        sync_dir(d).unwrap();
    }
}
