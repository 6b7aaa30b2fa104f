//! The one policy for files the engine writes: new files are created with mode 0600 (they
//! hold NHS numbers), written under a temporary name, synced and renamed, and the directory
//! synced so that the rename is durable.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
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

/// A file written as a stream by the same rule as [`write_atomic`]: under a temporary name in
/// its directory (`.NAME.tmp`, mode 0600), synced and renamed into place by
/// [`AtomicFile::commit`]. Until then the destination does not exist.
pub struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    w: BufWriter<File>,
}

impl AtomicFile {
    /// Starts `dest`, which must not exist.
    pub fn create(dest: &Path) -> Result<AtomicFile> {
        if dest.symlink_metadata().is_ok() {
            return Err(Error::Write {
                path: dest.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the output file exists; name a new one",
                ),
            });
        }
        let name = dest
            .file_name()
            .ok_or_else(|| Error::Usage(format!("{} is not a file name", dest.display())))?;
        let tmp = parent_dir(dest).join(format!(".{}.tmp", name.to_string_lossy()));
        let w = BufWriter::with_capacity(1 << 20, create_private(&tmp)?);
        Ok(AtomicFile {
            tmp,
            dest: dest.to_path_buf(),
            w,
        })
    }

    /// The temporary name, to remove if the file is given up.
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// Appends `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.w
            .write_all(bytes)
            .map_err(|e| Error::write(&self.tmp, e))
    }

    /// Syncs the file and renames it into place (the caller syncs the directory).
    pub fn commit(self) -> Result<()> {
        let file = self
            .w
            .into_inner()
            .map_err(|e| Error::write(&self.tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::write(&self.tmp, e))?;
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| Error::write(&self.dest, e))
    }
}

/// The directory `path` is in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// SHA-256 (lower-case hex) and size of the file at `path`, read once in 1 MiB blocks: how a
/// report identifies an extract and the file written from it.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = File::open(path).map_err(|e| Error::read(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                bytes += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::read(path, e)),
        }
    }
    Ok((hex::encode(hasher.finalize()), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        let (sha, bytes) = sha256_file(&p).unwrap();
        // FIPS 180-2 example
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(bytes, 3);
        assert!(sha256_file(&dir.path().join("missing")).is_err());
    }
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
