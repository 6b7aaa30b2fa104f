//! The one policy for files the engine writes: new files are created with mode 0600 (they
//! hold NHS numbers), written under a temporary name, synced and renamed, and the directory
//! synced so that the rename is durable.

use crate::error::{Error, Result};
pub(crate) use direct_io::start_writeback;
use direct_io::{open_direct, write_all_at_direct, AlignedBuf, DIRECT_ALIGN};
use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Write};
use std::ops::Range;
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
///
/// Small writes are gathered in a buffer; [`AtomicFile::write_ranges`] hands large runs of a
/// block to the kernel straight from the block (`writev`), without a copy. On Linux the
/// written data is handed to the disk as the file grows (`sync_file_range`, start only, every
/// [`WRITEBACK_WINDOW`] bytes), so the disk works while the input is still being read and the
/// final `fsync` has little left to wait for.
pub struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// Bytes handed to the kernel so far.
    written: u64,
    /// Bytes whose writeback has been started.
    started: u64,
    /// Sync before the rename (see [`AtomicFile::no_sync`]).
    durable: bool,
    /// Bytes allocated ahead by [`AtomicFile::reserve`] (the file's size until commit).
    reserved: u64,
}

/// How much written data [`AtomicFile`] lets gather before it starts its writeback.
pub const WRITEBACK_WINDOW: u64 = 32 << 20;

/// Buffer size of [`AtomicFile`]; a run list smaller than this is copied into it.
const BUFFER: usize = 1 << 20;

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
        let file = create_private(&tmp)?;
        Ok(AtomicFile {
            tmp,
            dest: dest.to_path_buf(),
            file,
            buf: Vec::with_capacity(BUFFER),
            written: 0,
            started: 0,
            durable: true,
            reserved: 0,
        })
    }

    /// Allocates `len` bytes of disk for the file before it is written (`fallocate`), so the
    /// filesystem maps its blocks once instead of reserving them block by block as the writes
    /// come (ext4's delayed allocation: about 40% of a buffered write's system time). What is
    /// not written is given back by [`AtomicFile::commit`]. Only a hint: when the filesystem
    /// cannot (no room, not supported), nothing is reserved and the writes go on as before.
    pub fn reserve(&mut self, len: u64) {
        if self.written == 0 && self.buf.is_empty() && len > 0 && allocate(&self.file, len) {
            self.reserved = len;
        }
    }

    /// [`AtomicFile::reserve`]s the size of the file at `input` (when it is a regular file):
    /// for output that is a subset of that input's bytes.
    pub fn reserve_for(&mut self, input: &Path) {
        match std::fs::metadata(input) {
            Ok(m) if m.is_file() => self.reserve(m.len()),
            _ => {}
        }
    }

    /// Skips the `fsync` before the rename and the writeback hints: for output that is
    /// consumed at once. The rename still happens only after every byte was written, so the
    /// destination never holds a partial file while the machine runs; but after a power loss
    /// soon after, it may be short or empty (compare its SHA-256 with what was reported).
    pub fn no_sync(mut self) -> AtomicFile {
        self.durable = false;
        self
    }

    /// The temporary name, to remove if the file is given up.
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// Appends `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.buf.len() + bytes.len() > BUFFER {
            self.flush()?;
        }
        if bytes.len() >= BUFFER {
            return self.write_slices(&mut [IoSlice::new(bytes)]);
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Appends `block[r]` for each range `r` of `ranges`, in order: copied into the buffer when
    /// they are few bytes in all, else written straight from `block` with `writev`.
    pub fn write_ranges(&mut self, block: &[u8], ranges: &[Range<usize>]) -> Result<()> {
        let total: usize = ranges.iter().map(|r| r.len()).sum();
        if total <= BUFFER - self.buf.len() {
            for r in ranges {
                self.buf.extend_from_slice(&block[r.clone()]);
            }
            return Ok(());
        }
        self.flush()?;
        // writev takes at most IOV_MAX (1024 on Linux) slices a call.
        for group in ranges.chunks(1024) {
            let mut slices: Vec<IoSlice<'_>> = group
                .iter()
                .map(|r| IoSlice::new(&block[r.clone()]))
                .collect();
            self.write_slices(&mut slices)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let r = self.write_slices(&mut [IoSlice::new(&buf)]);
        self.buf = buf;
        self.buf.clear();
        r
    }

    /// Writes all of `slices` (retrying short writes), then starts writeback if a window's
    /// worth has gathered.
    fn write_slices(&mut self, mut slices: &mut [IoSlice<'_>]) -> Result<()> {
        let tmp = &self.tmp;
        while !slices.is_empty() {
            match self.file.write_vectored(slices) {
                Ok(0) => {
                    return Err(Error::write(tmp, std::io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => {
                    self.written += n as u64;
                    IoSlice::advance_slices(&mut slices, n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::write(tmp, e)),
            }
        }
        if self.durable && self.written - self.started >= WRITEBACK_WINDOW {
            start_writeback(&self.file, self.started, self.written - self.started);
            self.started = self.written;
        }
        Ok(())
    }

    /// Records that the `n` bytes after those written so far were written through another
    /// descriptor of [`AtomicFile::tmp`] (positional writes, e.g. direct I/O from a thread of
    /// its own): the next [`AtomicFile::write`] appends after them, and [`AtomicFile::commit`]
    /// keeps them.
    pub(crate) fn written_elsewhere(&mut self, n: u64) -> Result<()> {
        use std::io::Seek;
        self.flush()?;
        self.written += n;
        self.started = self.written;
        self.file
            .seek(std::io::SeekFrom::Start(self.written))
            .map(|_| ())
            .map_err(|e| Error::write(&self.tmp, e))
    }

    /// Syncs the file (unless [`AtomicFile::no_sync`]) and renames it into place (the caller
    /// syncs the directory).
    pub fn commit(mut self) -> Result<()> {
        self.flush()?;
        if self.reserved > self.written {
            self.file
                .set_len(self.written)
                .map_err(|e| Error::write(&self.tmp, e))?;
        }
        if self.durable {
            self.file
                .sync_all()
                .map_err(|e| Error::write(&self.tmp, e))?;
        }
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| Error::write(&self.dest, e))
    }
}

/// Allocates the first `len` bytes of `file` (the file's size becomes `len`); true when done.
#[cfg(target_os = "linux")]
fn allocate(file: &File, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(len) = libc::off64_t::try_from(len) else {
        return false;
    };
    // SAFETY: fallocate only reads its integer arguments; the descriptor is open for as long
    // as `file` is borrowed.
    let r = unsafe { libc::fallocate64(file.as_raw_fd(), 0, 0, len) };
    if r == 0 {
        return true;
    }
    // A failed allocation may have left part of it in place: give it back.
    let _ = file.set_len(0);
    false
}

#[cfg(not(target_os = "linux"))]
fn allocate(_file: &File, _len: u64) -> bool {
    false
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

/// Bytes of one buffer of a [`ThreadedOut`] (a multiple of [`DIRECT_ALIGN`]).
pub(crate) const OUT_BUFFER: usize = 8 << 20;
/// Buffers of a [`ThreadedOut`] queued to its thread at most.
const OUT_QUEUED: usize = 1;

/// Bytes of one `write` through the page cache: a whole 8 MiB buffer in one call measured
/// twice the kernel time of 128 KiB calls for the `.dat` files (docs/PERFORMANCE.md).
const PLAIN_WRITE: usize = 128 << 10;

/// Writes all of `bytes` at `offset` of `file`, [`PLAIN_WRITE`] bytes a call.
fn write_all_at_pieces(file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut at = offset;
    for piece in bytes.chunks(PLAIN_WRITE) {
        file.write_all_at(piece, at)?;
        at += piece.len() as u64;
    }
    Ok(())
}

/// What a [`ThreadedOut`]'s writer did: the bytes it wrote at the start of the file, and the
/// rest (less than [`DIRECT_ALIGN`], the end of the last buffer, when direct I/O could not take
/// it) for the caller to write.
struct Wrote {
    written: u64,
    tail: Vec<u8>,
}

/// An output file written from [`OUT_BUFFER`]-byte buffers by a thread of its own, which writes
/// each at its offset: with direct I/O when `direct` and the filesystem allows it (the bytes are
/// not copied into the page cache), else the usual way. When asked, a second thread hashes each
/// buffer before it goes to the writer (a direct write waits for the disk: hashing on the same
/// thread would leave the disk idle meanwhile). The [`AtomicFile`] names, syncs and renames the
/// file as for any other output.
pub(crate) struct ThreadedOut {
    file: AtomicFile,
    buf: AlignedBuf,
    full: Option<std::sync::mpsc::SyncSender<AlignedBuf>>,
    free: std::sync::mpsc::Receiver<AlignedBuf>,
    /// Buffers made so far.
    made: usize,
    thread: std::thread::JoinHandle<std::io::Result<Wrote>>,
    /// The hashing thread, when asked for.
    hasher: Option<std::thread::JoinHandle<sha2::Sha256>>,
}

impl ThreadedOut {
    pub(crate) fn new(file: AtomicFile, direct: bool, hash: bool) -> ThreadedOut {
        use sha2::Digest;
        let (full, full_rx) = std::sync::mpsc::sync_channel::<AlignedBuf>(OUT_QUEUED);
        let (free_tx, free) = std::sync::mpsc::channel();
        let tmp = file.tmp().to_path_buf();
        // Writeback hints for a synced file whose bytes go through the page cache.
        let durable = file.durable;
        // with a hash: a thread hashes each buffer and passes it on to the writer
        let (full_rx, hasher) = if hash {
            let (to_writer, writer_rx) = std::sync::mpsc::sync_channel::<AlignedBuf>(OUT_QUEUED);
            let hasher = std::thread::spawn(move || {
                let mut hasher = sha2::Sha256::new();
                for buf in full_rx {
                    hasher.update(buf.bytes());
                    if to_writer.send(buf).is_err() {
                        break;
                    }
                }
                hasher
            });
            (writer_rx, Some(hasher))
        } else {
            (full_rx, None)
        };
        let thread = std::thread::spawn(move || {
            let plain = std::fs::OpenOptions::new().write(true).open(&tmp)?;
            let mut direct = direct.then(|| open_direct(&tmp)).flatten();
            let mut wrote = Wrote {
                written: 0,
                tail: Vec::new(),
            };
            let mut failed = None;
            for buf in full_rx {
                let bytes = buf.bytes();
                if failed.is_none() {
                    let at = wrote.written;
                    // direct I/O takes whole aligned blocks; only the last buffer has a rest
                    let whole = bytes.len() / DIRECT_ALIGN * DIRECT_ALIGN;
                    // without direct I/O (or once the filesystem refused it): the usual way,
                    // a piece at a time (see PLAIN_WRITE)
                    let r = if direct.is_some() {
                        write_all_at_direct(&mut direct, &plain, &bytes[..whole], at)
                    } else {
                        write_all_at_pieces(&plain, &bytes[..whole], at)
                    };
                    match r {
                        Ok(()) => {
                            wrote.written += whole as u64;
                            wrote.tail = bytes[whole..].to_vec();
                            if durable && direct.is_none() {
                                crate::files::start_writeback(&plain, at, whole as u64);
                            }
                        }
                        Err(e) => failed = Some(e),
                    }
                }
                let _ = free_tx.send(buf);
            }
            match failed {
                Some(e) => Err(e),
                None => Ok(wrote),
            }
        });
        ThreadedOut {
            file,
            buf: AlignedBuf::new(OUT_BUFFER),
            full: Some(full),
            free,
            made: 1,
            thread,
            hasher,
        }
    }

    /// Appends `bytes`.
    pub(crate) fn write(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            bytes = &bytes[self.buf.fill(bytes)..];
            if self.buf.is_full() {
                self.send();
            }
        }
    }

    /// Hands the buffer being filled to the thread and takes an empty one.
    fn send(&mut self) {
        let next = match self.free.try_recv() {
            Ok(buf) => buf,
            Err(_) if self.made < 2 * OUT_QUEUED + 3 => {
                self.made += 1;
                AlignedBuf::new(OUT_BUFFER)
            }
            // the thread holds every other buffer: wait for one (or, if it stopped, make one)
            Err(_) => self
                .free
                .recv()
                .unwrap_or_else(|_| AlignedBuf::new(OUT_BUFFER)),
        };
        let full = std::mem::replace(&mut self.buf, next);
        self.buf.clear();
        if let Some(tx) = &self.full {
            // a thread that stopped (a write failed) says why when it is joined
            let _ = tx.send(full);
        }
    }

    /// Writes what is left, then commits the file; the hash, when asked for.
    pub(crate) fn commit(self) -> Result<Option<(String, u64)>> {
        let (file, hash) = self.close()?;
        file.commit()?;
        Ok(hash)
    }

    /// Writes what is left and ends the threads: the file, every byte written but not yet
    /// committed (synced and renamed: [`AtomicFile::commit`]), and the hash when asked for.
    /// A file that is full while others are still being written closes this way, so that its
    /// thread and buffers do not wait for the last file.
    pub(crate) fn close(mut self) -> Result<(AtomicFile, Option<(String, u64)>)> {
        use sha2::Digest;
        if !self.buf.is_empty() {
            self.send();
        }
        self.full = None;
        let tmp = self.file.tmp().to_path_buf();
        let wrote = self
            .thread
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the output's writer stopped")))
            .map_err(|e| Error::write(&tmp, e))?;
        let hasher = match self.hasher {
            Some(h) => Some(h.join().map_err(|_| {
                Error::write(&tmp, std::io::Error::other("the output's hash stopped"))
            })?),
            None => None,
        };
        self.file.written_elsewhere(wrote.written)?;
        self.file.write(&wrote.tail)?;
        let bytes = wrote.written + wrote.tail.len() as u64;
        Ok((
            self.file,
            hasher.map(|h| (hex::encode(h.finalize()), bytes)),
        ))
    }
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

    /// Small writes, run lists copied into the buffer, run lists written straight from the
    /// block (more than 1024 runs, past several writeback windows) all land in order.
    #[test]
    fn atomic_file_keeps_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let block: Vec<u8> = (0..(3 << 20)).map(|i: u32| (i % 251) as u8).collect();
        let mut want = Vec::new();
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write(b"header\n").unwrap();
        want.extend_from_slice(b"header\n");
        let few = [5..17, 17..40, 100..4000];
        // Many short runs (more than one writev's 1024), then runs larger than the buffer.
        let many: Vec<Range<usize>> = (0..3000).map(|k| k * 700..k * 700 + 350).collect();
        let big = [0..(2 << 20), (2 << 20) + 1..(3 << 20)];
        for _ in 0..20 {
            for ranges in [&few[..], &many[..], &big[..]] {
                f.write_ranges(&block, ranges).unwrap();
                for r in ranges {
                    want.extend_from_slice(&block[r.clone()]);
                }
                f.write(b",").unwrap();
                want.push(b',');
            }
        }
        f.write(&block[..BUFFER + 3]).unwrap();
        want.extend_from_slice(&block[..BUFFER + 3]);
        assert!(!dest.exists(), "nothing at the destination before commit");
        let tmp = f.tmp().to_path_buf();
        f.commit().unwrap();
        assert!(!tmp.exists());
        assert!(want.len() as u64 > 2 * WRITEBACK_WINDOW);
        assert!(std::fs::read(&dest).unwrap() == want);
        assert!(
            AtomicFile::create(&dest).is_err(),
            "an existing file is never replaced"
        );
    }

    /// A file reserved ahead ends where its writes end, whether it was reserved too large
    /// (the usual case: a filter's output is part of its input), too small, or left empty.
    #[test]
    fn a_reserved_file_ends_where_its_writes_end() {
        let dir = tempfile::tempdir().unwrap();
        let block: Vec<u8> = (0..(3 << 20)).map(|i: u32| (i % 253) as u8).collect();
        for (name, reserve, ranges) in [
            ("larger", 10 << 20, vec![0..100, 200..(3 << 20)]),
            ("smaller", 1000, vec![0..(2 << 20), 7..5000]),
            ("empty", 1 << 20, vec![]),
        ] {
            let dest = dir.path().join(name);
            let mut f = AtomicFile::create(&dest).unwrap().no_sync();
            f.reserve(reserve);
            f.write(b"head\n").unwrap();
            f.write_ranges(&block, &ranges).unwrap();
            let mut want = b"head\n".to_vec();
            for r in &ranges {
                want.extend_from_slice(&block[r.clone()]);
            }
            f.commit().unwrap();
            assert!(std::fs::read(&dest).unwrap() == want, "{name}");
        }
        // Reserving for an input that is not a regular file reserves nothing.
        let dest = dir.path().join("from-a-dir");
        let mut f = AtomicFile::create(&dest).unwrap();
        f.reserve_for(dir.path());
        f.write(b"x").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"x");
    }
}
