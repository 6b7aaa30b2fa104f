//! Downloads of stored chunk files without copying them through the page cache's fresh pages
//! or a buffer of their own: [`stream_file`] serves a chunk file as a response body one window
//! at a time, each window either a read-only memory map of pages already in the page cache
//! (no read syscalls, no copy into user memory: the kernel copies the page cache straight into
//! the socket) or, for a window not in the page cache, a direct (`O_DIRECT`) read into a reused
//! aligned buffer.
//!
//! Why the two: a file that is not in the page cache (the POS's result chunks, written around
//! it: `pos/direct.rs`) would otherwise be read into new page-cache pages, and on this VM each
//! new page is first faulted in by the host (`docs/PERFORMANCE.md`): reading 800 MB that way
//! cost about 2 s of system time and ran at about 200 MB/s, against 0.1 s and 450 MB/s for
//! direct reads into reused buffers. A window wholly in the page cache (a message just
//! uploaded, a chunk downloaded again) is mapped as before. Which one is decided per window
//! (`mincore` of its mapping, which reads nothing).
//!
//! A mapped file that shrank would raise SIGBUS on access. The store never shrinks or writes
//! a chunk file once it is in `chunks/`: bodies are staged in `tmp/` under fresh names
//! (`create_private`), then renamed into place (`store::disk::put_in_place`; a retry replaces
//! the directory entry, not the old inode's bytes), and freeing data unlinks files, which
//! leaves a mapped (or open) inode intact until it is unmapped (closed). Each window is also
//! checked against the file's current length before it is mapped. (A disk error when the
//! kernel has to read a page again would still raise it, as for any program that maps files.)
//!
//! Measured choices (`docs/PERFORMANCE.md`, "Downloads from memory maps"): the pages are not
//! populated up front (`MAP_POPULATE` cost about a quarter more server CPU than the faults it saves,
//! which fault-around handles 16 pages at a time from a hot page cache); `madvise(WILLNEED)`
//! on the blocking thread starts reading a cold file ahead instead. `sendfile(2)` from the
//! file (tried: hyper's writes recognised by address) saved little server CPU and cost the
//! client more, so it was left out.

use std::fs::File;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use memmap2::{Advice, Mmap, MmapOptions};
use tokio::task::JoinHandle;

use direct_io::AlignedBuf;

use crate::body::{pooled_bytes, take_pooled, Pool, ResponseBody};

/// Bytes mapped at a time: one frame each, so a 100 MB chunk takes 6 hand-offs from the
/// blocking pool instead of the 96 of 1 MiB reads; at most two windows are mapped per
/// download (the one hyper is writing, the next), which bounds what a download adds to RSS.
const WINDOW: usize = 16 << 20;

/// Direct-read buffers ([`WINDOW`] bytes, aligned) kept for the next downloads: every
/// download shares them, as a new buffer's pages are new pages too (each first faulted in by
/// the host). A download holds at most two at once (see [`WINDOW`]).
const DIRECT_KEPT: usize = 4;

/// The direct-read buffers kept between downloads.
fn direct_pool() -> &'static Pool<AlignedBuf> {
    static POOL: std::sync::OnceLock<Pool<AlignedBuf>> = std::sync::OnceLock::new();
    POOL.get_or_init(Pool::default)
}

/// Streams the first `size` bytes of `file` (a stored chunk; `size` must not exceed its length,
/// and is the exact `Content-Length`) one frame per window of [`WINDOW`] bytes: a read-only
/// memory map where the window is in the page cache, else (given `direct`, a direct read
/// handle to the same file: `direct_io::open_direct_read`) a direct read into a reused aligned
/// buffer. Each window is loaded on a blocking thread (a map is also asked to be read ahead),
/// the next one while hyper writes the current one; hyper dropping the frame unmaps the window
/// or gives the buffer back.
///
/// A client that stops reading is cut off by the connection's write timeout
/// (`server::WriteTimeout`): hyper then drops this body and with it every window.
pub(crate) fn stream_file(file: File, direct: Option<File>, size: u64) -> ResponseBody {
    // the direct handle was opened by path: only if it is the same inode (a retry may have
    // renamed another file into place in between)
    let direct = direct.filter(|d| same_file(&file, d));
    MappedBody {
        file: Arc::new((file, direct)),
        size,
        mapped: 0,
        sent: 0,
        next: None,
    }
    .boxed_unsync()
}

/// Whether `a` and `b` are the same file (device and inode); no where that cannot be told.
fn same_file(a: &File, b: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a.metadata(), b.metadata()) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// The body of [`stream_file`].
struct MappedBody {
    /// The file, and a direct read handle to it if there is one.
    file: Arc<(File, Option<File>)>,
    size: u64,
    /// Bytes up to which windows have been asked for.
    mapped: u64,
    /// Bytes handed to hyper.
    sent: u64,
    /// The window being mapped, if any.
    next: Option<JoinHandle<std::io::Result<Bytes>>>,
}

impl MappedBody {
    /// Starts mapping the next window unless one is under way or all are asked for.
    fn map_ahead(&mut self) {
        if self.next.is_some() || self.mapped >= self.size {
            return;
        }
        let offset = self.mapped;
        let len = (self.size - offset).min(WINDOW as u64) as usize;
        self.mapped += len as u64;
        let file = self.file.clone();
        self.next = Some(tokio::task::spawn_blocking(move || {
            load_window(&file.0, file.1.as_ref(), offset, len)
        }));
    }
}

impl Body for MappedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.map_ahead();
        let Some(task) = self.next.as_mut() else {
            return Poll::Ready(None);
        };
        let done = ready!(Pin::new(task).poll(cx));
        self.next = None;
        match done {
            Ok(Ok(window)) => {
                self.sent += window.len() as u64;
                self.map_ahead(); // loaded while hyper writes this one
                Poll::Ready(Some(Ok(Frame::data(window))))
            }
            Ok(Err(e)) => {
                self.mapped = self.size; // no more windows
                Poll::Ready(Some(Err(e)))
            }
            Err(e) => {
                self.mapped = self.size;
                Poll::Ready(Some(Err(std::io::Error::other(e))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.size
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.size - self.sent)
    }
}

/// Loads `len` bytes of `file` at `offset` (a multiple of [`WINDOW`]), once the file is checked
/// to hold them: a memory map if they are all in the page cache or there is no `direct` handle
/// (or it fails), else a direct read. Blocking.
fn load_window(
    file: &File,
    direct: Option<&File>,
    offset: u64,
    len: usize,
) -> std::io::Result<Bytes> {
    let have = file.metadata()?.len();
    if have < offset + len as u64 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "stored chunk is {have} bytes, shorter than its record ({})",
                offset + len as u64
            ),
        ));
    }
    // SAFETY: the file is read-only to us and never shrunk or rewritten while it may be
    // mapped (see the module comment), and its length was checked just above.
    let map = unsafe { MmapOptions::new().offset(offset).len(len).map(file)? };
    if let Some(d) = direct.filter(|_| !resident(&map)) {
        drop(map);
        if let Some(b) = read_direct(d, offset, len) {
            return Ok(b);
        }
        // the filesystem refused after all: the map (and the page cache) serve it
        return load_window(file, None, offset, len);
    }
    let _ = map.advise(Advice::WillNeed); // a hint: a failure costs only speed
    Ok(Bytes::from_owner(map))
}

/// Whether every page of `map` is in the page cache (`mincore`: nothing is read). Where that
/// cannot be told, yes (the map serves it, as before direct reads).
fn resident(map: &Mmap) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf reads a constant.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let mut vec = vec![0u8; map.len().div_ceil(page.max(1))];
        // SAFETY: `map` is a live mapping of `map.len()` bytes starting at a page boundary, and
        // `vec` has one byte for each of its pages.
        let r = unsafe {
            libc::mincore(
                map.as_ptr() as *mut libc::c_void,
                map.len(),
                vec.as_mut_ptr(),
            )
        };
        r != 0 || vec.iter().all(|&v| v & 1 != 0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = map;
        true
    }
}

/// `len` bytes of `direct` at `offset`, read into a pooled aligned buffer; `None` if the
/// read fails or comes short (the caller maps the window instead, which reports a real error).
fn read_direct(direct: &File, offset: u64, len: usize) -> Option<Bytes> {
    let pool = direct_pool();
    let mut buf = take_pooled(pool).unwrap_or_else(|| AlignedBuf::new(WINDOW));
    match buf.read_at(direct, offset, len) {
        Ok(n) if n == len => {
            #[cfg(test)]
            tests::DIRECT_READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Some(pooled_bytes(buf, len, pool, DIRECT_KEPT))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Windows read directly so far (by any test).
    pub(super) static DIRECT_READS: AtomicUsize = AtomicUsize::new(0);

    /// Whether direct reads work in `dir` (not on tmpfs, say).
    fn direct_io_works(dir: &std::path::Path) -> bool {
        let p = dir.join("probe");
        std::fs::write(&p, [1u8; 4096]).unwrap();
        let ok = direct_io::open_direct_read(&p).is_some_and(|f| {
            AlignedBuf::new(4096)
                .read_at(&f, 0, 4096)
                .is_ok_and(|n| n == 4096)
        });
        std::fs::remove_file(&p).unwrap();
        ok
    }

    /// Drops `path`'s pages from the page cache (a hint: it may leave some).
    fn evict(path: &std::path::Path) {
        use std::os::fd::AsRawFd;
        let f = File::open(path).unwrap();
        f.sync_all().unwrap();
        // SAFETY: plain advice on an open descriptor; no memory passes.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }

    /// A chunk file streams as exactly its first `size` bytes in windows, whether its windows
    /// are read directly (not in the page cache), mapped (in it, or no direct handle), or the
    /// two mixed; and a file shorter than its record is an error, not a short body.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_chunk_file_streams_whole_read_directly_or_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chunk");
        let data: Vec<u8> = (0..2 * WINDOW + 3 * 4096 + 77)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let ways = [
            ("cold, direct", true, true),
            ("warm, direct handle", false, true),
            ("cold, no direct handle", true, false),
        ];
        for (name, cold, with_direct) in ways {
            for size in [data.len(), WINDOW, 4096 + 3] {
                if cold {
                    evict(&path);
                } else {
                    let _ = std::fs::read(&path).unwrap();
                }
                let direct = if with_direct {
                    direct_io::open_direct_read(&path)
                } else {
                    None
                };
                let can_direct = direct.is_some();
                let before = DIRECT_READS.load(Ordering::Relaxed);
                let body = stream_file(File::open(&path).unwrap(), direct, size as u64);
                let got = body.collect().await.unwrap().to_bytes();
                assert!(got[..] == data[..size], "{name}, size {size}");
                if cold && can_direct && direct_io_works(dir.path()) {
                    // the cold file was read around the page cache
                    assert!(
                        DIRECT_READS.load(Ordering::Relaxed) > before,
                        "{name}, size {size}"
                    );
                }
            }
        }
        // a direct handle to another file (another inode renamed into place) is not used
        let other = dir.path().join("other");
        std::fs::write(&other, vec![0u8; data.len()]).unwrap();
        evict(&path);
        let body = stream_file(
            File::open(&path).unwrap(),
            direct_io::open_direct_read(&other),
            data.len() as u64,
        );
        assert!(body.collect().await.unwrap().to_bytes()[..] == data[..]);
        let body = stream_file(
            File::open(&path).unwrap(),
            direct_io::open_direct_read(&path),
            data.len() as u64 + 1,
        );
        assert!(
            body.collect().await.is_err(),
            "a file shorter than its record"
        );
    }
}
