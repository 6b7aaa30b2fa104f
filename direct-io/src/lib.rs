//! Writing files around the page cache (`O_DIRECT`) and asking for writeback early: the few
//! system-level pieces that the engine (`processor`), the MESH client and the mock server each
//! need for large durable writes, kept in one leaf crate so that none of them depends on another.
//!
//! Why direct I/O at all: on a VM whose free memory goes back to the host (free page reporting,
//! as on the project's machine), each new page-cache page is first faulted in by the host, and a
//! buffered `write(2)` of a large new file costs 4–6 ns a byte of system time; a direct write from
//! a reused aligned buffer costs about 0.15 (`docs/PERFORMANCE.md`).

use std::fs::{File, OpenOptions};
#[cfg(target_os = "linux")]
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Asks the kernel to start writing `len` bytes of `file` from `offset` to disk, without
/// waiting. Only a hint: errors are left for the final `fsync` to report.
#[cfg(target_os = "linux")]
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads its integer arguments; the descriptor is open for as
    // long as `file` is borrowed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Asks the kernel to start writing a range of `file` to disk (none: Linux only).
#[cfg(not(target_os = "linux"))]
pub fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// Alignment of direct I/O (buffer address, length and file offset): the largest logical
/// block size in common use.
pub const DIRECT_ALIGN: usize = 4096;

/// A buffer of a fixed capacity starting at a [`DIRECT_ALIGN`] boundary, as direct I/O
/// (`O_DIRECT`) needs, without `unsafe`: a vector one block longer, used from its first aligned
/// byte.
#[derive(Debug)]
pub struct AlignedBuf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
    cap: usize,
}

impl AlignedBuf {
    /// An empty buffer of `cap` bytes (a multiple of [`DIRECT_ALIGN`] for whole-block writes).
    pub fn new(cap: usize) -> AlignedBuf {
        let mem = vec![0u8; cap + DIRECT_ALIGN];
        let start = mem.as_ptr().align_offset(DIRECT_ALIGN);
        AlignedBuf {
            mem,
            start,
            len: 0,
            cap,
        }
    }

    /// Copies in as much of `bytes` as fits; how much that was.
    pub fn fill(&mut self, bytes: &[u8]) -> usize {
        let take = bytes.len().min(self.cap - self.len);
        let at = self.start + self.len;
        self.mem[at..at + take].copy_from_slice(&bytes[..take]);
        self.len += take;
        take
    }

    /// The bytes held (they start at an aligned address).
    pub fn bytes(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when no more fits.
    pub fn is_full(&self) -> bool {
        self.len == self.cap
    }

    /// Empties the buffer (its memory is kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Replaces what the buffer holds with up to `len` bytes (at most its capacity) of `file`
    /// from `offset`, reading until it has them or the file ends; the bytes held after. For a
    /// direct handle ([`open_direct_read`]) `offset` must be a multiple of [`DIRECT_ALIGN`]:
    /// the reads are asked in whole blocks (the file's end may cut the last one short; bytes
    /// past `len` are dropped). A direct read the filesystem refuses fails with `InvalidInput`
    /// and the buffer holds what was read before it.
    pub fn read_at(&mut self, file: &File, offset: u64, len: usize) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = len.min(self.cap);
        let ask = want.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
        let room = ask.min(self.mem.len() - self.start);
        self.len = 0;
        while self.len < want {
            let at = self.start + self.len;
            match file.read_at(
                &mut self.mem[at..self.start + room],
                offset + self.len as u64,
            ) {
                Ok(0) => break,
                Ok(n) => self.len = (self.len + n).min(want),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.len)
    }
    /// Keeps only the first `len` bytes held (all of them if it holds fewer).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// Writes all of `bytes` at `offset` of a file: through its direct handle `direct` if it has
/// one (then `bytes` must start at an aligned address and `offset` and its length be multiples
/// of [`DIRECT_ALIGN`], as from an [`AlignedBuf`]), else through its ordinary handle `plain`.
/// A filesystem that refuses direct writes (`InvalidInput`) loses the direct handle (`direct`
/// becomes `None`) and the bytes are written through `plain`.
#[cfg(unix)]
pub fn write_all_at_direct(
    direct: &mut Option<File>,
    plain: &File,
    bytes: &[u8],
    offset: u64,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    if let Some(d) = direct {
        match d.write_all_at(bytes, offset) {
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => *direct = None,
            r => return r,
        }
    }
    plain.write_all_at(bytes, offset)
}

/// Writes all of `bytes` at `offset` (a multiple of [`DIRECT_ALIGN`], `bytes` from an
/// [`AlignedBuf`]): its whole blocks by [`write_all_at_direct`] if `blocks_direct`, and the rest
/// (all of it if not `blocks_direct`; else less than a block, a file's end) through `plain`.
#[cfg(unix)]
pub fn write_all_at_blocks(
    direct: &mut Option<File>,
    plain: &File,
    bytes: &[u8],
    offset: u64,
    blocks_direct: bool,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let whole = if blocks_direct {
        bytes.len() / DIRECT_ALIGN * DIRECT_ALIGN
    } else {
        0
    };
    write_all_at_direct(direct, plain, &bytes[..whole], offset)?;
    plain.write_all_at(&bytes[whole..], offset + whole as u64)
}

/// A second, direct (`O_DIRECT`) write handle to the file at `path`, if its filesystem takes
/// direct I/O (Linux; `None` elsewhere, and the file is written through the page cache). A
/// filesystem may still refuse a write with `InvalidInput`: callers then fall back to an
/// ordinary handle.
#[cfg(target_os = "linux")]
pub fn open_direct(path: &Path) -> Option<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

/// A second, direct write handle (none: direct I/O is used on Linux only).
#[cfg(not(target_os = "linux"))]
pub fn open_direct(_path: &Path) -> Option<File> {
    None
}

/// A direct (`O_DIRECT`) read handle to the file at `path`, if its filesystem takes direct
/// I/O (Linux; `None` elsewhere). Reading a large file this way into a reused
/// [`AlignedBuf`] puts none of it in the page cache (see the crate's doc for why that
/// matters); a read the filesystem refuses fails with `InvalidInput`.
#[cfg(target_os = "linux")]
pub fn open_direct_read(path: &Path) -> Option<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

/// A direct read handle (none: direct I/O is used on Linux only).
#[cfg(not(target_os = "linux"))]
pub fn open_direct_read(_path: &Path) -> Option<File> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn an_aligned_buffer_starts_aligned_fills_to_capacity_and_clears() {
        let mut buf = AlignedBuf::new(2 * DIRECT_ALIGN);
        assert!(buf.is_empty());
        assert_eq!(buf.fill(&[7u8; DIRECT_ALIGN + 5]), DIRECT_ALIGN + 5);
        assert_eq!(buf.bytes().as_ptr() as usize % DIRECT_ALIGN, 0);
        // only what fits is taken
        assert_eq!(buf.fill(&[9u8; DIRECT_ALIGN]), DIRECT_ALIGN - 5);
        assert!(buf.is_full());
        assert_eq!(buf.len(), 2 * DIRECT_ALIGN);
        assert_eq!(buf.bytes()[DIRECT_ALIGN + 4], 7);
        assert_eq!(buf.bytes()[DIRECT_ALIGN + 5], 9);
        buf.truncate(DIRECT_ALIGN + 1);
        assert_eq!(buf.len(), DIRECT_ALIGN + 1);
        assert_eq!(buf.bytes()[DIRECT_ALIGN], 7);
        buf.truncate(3 * DIRECT_ALIGN);
        assert_eq!(buf.len(), DIRECT_ALIGN + 1);
        buf.clear();
        assert!(buf.is_empty() && !buf.is_full());
    }

    #[test]
    fn a_direct_handle_writes_what_an_ordinary_read_sees() {
        let dir = std::env::temp_dir().join(format!("direct-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        File::create(&path).unwrap();
        let mut buf = AlignedBuf::new(2 * DIRECT_ALIGN);
        let data: Vec<u8> = (0..2 * DIRECT_ALIGN).map(|i| (i % 251) as u8).collect();
        buf.fill(&data);
        // a filesystem that takes direct I/O (tmpfs does not: then there is nothing to test)
        if let Some(f) = open_direct(&path) {
            match f.write_all_at(buf.bytes(), 0) {
                Ok(()) => {
                    start_writeback(&f, 0, 0);
                    assert_eq!(std::fs::read(&path).unwrap(), data);
                }
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput),
            }
        }
        // the shared write: direct where taken, else (and after a refusal) the ordinary handle
        let plain = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        plain.write_all_at(&data[..DIRECT_ALIGN], 0).unwrap();
        let mut direct = open_direct(&path);
        write_all_at_direct(&mut direct, &plain, buf.bytes(), DIRECT_ALIGN as u64).unwrap();
        write_all_at_direct(&mut None, &plain, b"end", 3 * DIRECT_ALIGN as u64).unwrap();
        let mut want = data[..DIRECT_ALIGN].to_vec();
        want.extend_from_slice(&data);
        want.extend_from_slice(b"end");
        assert_eq!(std::fs::read(&path).unwrap(), want);
        // whole blocks directly and an odd tail through the page cache, or all of it buffered
        for blocks_direct in [true, false] {
            let mut buf = AlignedBuf::new(2 * DIRECT_ALIGN);
            buf.fill(&data[..DIRECT_ALIGN + 9]);
            let mut direct = open_direct(&path);
            let at = 4 * DIRECT_ALIGN as u64;
            write_all_at_blocks(&mut direct, &plain, buf.bytes(), at, blocks_direct).unwrap();
            let file = std::fs::read(&path).unwrap();
            assert_eq!(file.len(), 5 * DIRECT_ALIGN + 9);
            assert_eq!(&file[4 * DIRECT_ALIGN..], &data[..DIRECT_ALIGN + 9]);
            plain.set_len(0).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `read_at` gives the file's bytes from an aligned offset, through a direct handle (where
    /// the filesystem takes one) and an ordinary one alike: a whole window, the file's short
    /// last block, and a length past the end (cut at the end).
    #[test]
    fn read_at_gives_the_files_bytes_directly_or_not() {
        let dir = std::env::temp_dir().join(format!("direct-io-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let data: Vec<u8> = (0..3 * DIRECT_ALIGN + 77)
            .map(|i| (i % 253) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let mut buf = AlignedBuf::new(2 * DIRECT_ALIGN);
        let handles = [Some(File::open(&path).unwrap()), open_direct_read(&path)];
        for f in handles.iter().flatten() {
            for (offset, len) in [
                (0, 2 * DIRECT_ALIGN),
                (DIRECT_ALIGN, 5),
                (2 * DIRECT_ALIGN, DIRECT_ALIGN + 77),
                (2 * DIRECT_ALIGN, 2 * DIRECT_ALIGN),
            ] {
                match buf.read_at(f, offset as u64, len) {
                    Ok(n) => {
                        let want = &data[offset..(offset + len).min(data.len())];
                        assert_eq!(n, want.len());
                        assert!(buf.bytes() == want, "offset {offset}, len {len}");
                    }
                    // a filesystem that refuses direct reads (tmpfs)
                    Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput),
                }
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
