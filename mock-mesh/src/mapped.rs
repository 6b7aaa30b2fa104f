//! Downloads of stored chunk files without copying them through a buffer: [`stream_file`]
//! serves a chunk file as a response body of read-only memory maps, one window at a time, so
//! a download costs no read syscalls and no copy into user memory.
//!
//! On a plain TCP connection the mapped bytes are not even read: each window is registered
//! while it lives, and the connection's writer ([`SendMapped`], called by
//! `server::WriteTimeout`) recognises a write of a registered window by its address and hands
//! the same bytes to the socket from the file with `sendfile(2)`: the kernel then passes
//! page-cache pages to the socket without copying them and without faulting the map's pages
//! in. Hyper still frames the response (head, `Content-Length`, keep-alive) exactly as for any
//! other body; only the system call that moves the body's bytes changes. Over TLS (rustls
//! encrypts in user space) the map is read as an ordinary buffer.
//!
//! A mapped file that shrank would raise SIGBUS on access. The store never shrinks or writes
//! a chunk file once it is in `chunks/`: bodies are staged in `tmp/` under fresh names
//! (`create_private`), then renamed into place (`store::disk::put_in_place`; a retry replaces
//! the directory entry, not the old inode's bytes), and freeing data unlinks files, which
//! leaves a mapped (or open) inode intact until it is unmapped (closed). Each window is also
//! checked against the file's current length before it is mapped. (A disk error when the
//! kernel has to read a page again would still raise it, as for any program that maps files.)
//! `sendfile(2)` never touches the map: a file that shrank anyway ends that write short (the
//! connection fails) instead.
//!
//! Measured choices (`docs/PERFORMANCE.md`, "Downloads from memory maps" and "sendfile(2)
//! for mapped windows"): the pages are not populated up front (`MAP_POPULATE` cost about a
//! quarter more server CPU than the faults it saves, which fault-around handles 16 pages at a
//! time from a hot page cache); `madvise(WILLNEED)` on the blocking thread starts reading a
//! cold file ahead instead.

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use memmap2::{Advice, Mmap, MmapOptions};
use tokio::task::JoinHandle;

use crate::body::ResponseBody;

/// Bytes mapped at a time: one frame each, so a 100 MB chunk takes 6 hand-offs from the
/// blocking pool instead of the 96 of 1 MiB reads; at most two windows are mapped per
/// download (the one hyper is writing, the next), which bounds what a download adds to RSS.
const WINDOW: usize = 16 << 20;

/// Streams the first `size` bytes of `file` (a stored chunk; `size` must not exceed its length,
/// and is the exact `Content-Length`) from read-only memory maps of [`WINDOW`] bytes, one
/// frame per window. Each window is mapped on a blocking thread (which also asks the kernel to
/// read it ahead), the next one while hyper writes the current one, and it is unmapped when
/// hyper drops the frame.
///
/// A client that stops reading is cut off by the connection's write timeout
/// (`server::WriteTimeout`): hyper then drops this body and with it every mapping.
pub(crate) fn stream_file(file: File, size: u64) -> ResponseBody {
    MappedBody {
        file: Arc::new(file),
        size,
        mapped: 0,
        sent: 0,
        next: None,
    }
    .boxed_unsync()
}

/// The body of [`stream_file`].
struct MappedBody {
    file: Arc<File>,
    size: u64,
    /// Bytes up to which windows have been asked for.
    mapped: u64,
    /// Bytes handed to hyper.
    sent: u64,
    /// The window being mapped, if any.
    next: Option<JoinHandle<std::io::Result<Window>>>,
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
            map_window(&file, offset, len)
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
            Ok(Ok(map)) => {
                self.sent += map.map.len() as u64;
                self.map_ahead(); // mapped while hyper writes this one
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_owner(map)))))
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

/// Maps `len` bytes of `file` at `offset` (a multiple of the page size), once the file is
/// checked to hold them, and starts reading them ahead. Blocking.
fn map_window(file: &Arc<File>, offset: u64, len: usize) -> std::io::Result<Window> {
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
    let _ = map.advise(Advice::WillNeed); // a hint: a failure costs only speed
    Ok(Window::register(map, file.clone(), offset))
}

/// A mapped window of a file, registered (by address) for as long as it is mapped, so that a
/// write of its bytes can be made from the file instead ([`SendMapped`]).
struct Window {
    map: Mmap,
}

/// A live window: its length, its file and where in the file it starts.
struct Registered {
    len: usize,
    file: Arc<File>,
    offset: u64,
}

/// Live windows by start address. An address is in at most one live mapping, and a window is
/// removed before it is unmapped, so an address found here means that window's bytes.
static WINDOWS: Mutex<BTreeMap<usize, Registered>> = Mutex::new(BTreeMap::new());

/// How many windows are registered: writes skip the lock while none is.
static LIVE: AtomicUsize = AtomicUsize::new(0);

fn windows() -> std::sync::MutexGuard<'static, BTreeMap<usize, Registered>> {
    WINDOWS.lock().unwrap_or_else(|p| p.into_inner())
}

impl Window {
    fn register(map: Mmap, file: Arc<File>, offset: u64) -> Window {
        let len = map.len();
        if len > 0 {
            windows().insert(map.as_ptr() as usize, Registered { len, file, offset });
            LIVE.fetch_add(1, Ordering::Release);
        }
        Window { map }
    }
}

impl AsRef<[u8]> for Window {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // before `map` is unmapped (fields drop after this)
        if windows().remove(&(self.map.as_ptr() as usize)).is_some() {
            LIVE.fetch_sub(1, Ordering::Release);
        }
    }
}

/// Where `buf`'s bytes are in a file, if `buf` lies within a live mapped window: the file and
/// the offset of `buf`'s first byte in it.
fn file_behind(buf: &[u8]) -> Option<(Arc<File>, u64)> {
    if buf.is_empty() || LIVE.load(Ordering::Acquire) == 0 {
        return None;
    }
    let start = buf.as_ptr() as usize;
    let map = windows();
    let (&base, w) = map.range(..=start).next_back()?;
    let into = start - base;
    if into.checked_add(buf.len())? > w.len {
        return None;
    }
    Some((w.file.clone(), w.offset + into as u64))
}

/// Bytes written to sockets with `sendfile(2)` from mapped windows (for tests and profiles).
pub(crate) static SENT_FROM_FILE: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// A connection's writer that can write the bytes of a mapped window from its file.
pub(crate) trait SendMapped {
    /// A write of `bufs` made without reading the ones that lie in a live mapped window: their
    /// bytes go from the file with `sendfile(2)`, the slices before the first of them with an
    /// ordinary vectored write (so one call writes either the slices before a window or part
    /// of one window). `None`: no slice is a window, or this connection cannot (TLS), and the
    /// caller writes `bufs` as usual.
    fn poll_write_mapped(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Option<Poll<std::io::Result<usize>>>;
}

#[cfg(target_os = "linux")]
impl SendMapped for tokio::net::TcpStream {
    fn poll_write_mapped(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Option<Poll<std::io::Result<usize>>> {
        if LIVE.load(Ordering::Acquire) == 0 {
            return None;
        }
        let (i, (file, offset)) = bufs
            .iter()
            .enumerate()
            .find_map(|(i, b)| file_behind(b).map(|f| (i, f)))?;
        if i > 0 {
            let before = &bufs[..i];
            return Some(tokio::io::AsyncWrite::poll_write_vectored(
                Pin::new(self),
                cx,
                before,
            ));
        }
        Some(poll_sendfile(self, cx, &file, offset, bufs[0].len()))
    }
}

#[cfg(not(target_os = "linux"))]
impl SendMapped for tokio::net::TcpStream {
    fn poll_write_mapped(
        &mut self,
        _: &mut Context<'_>,
        _: &[IoSlice<'_>],
    ) -> Option<Poll<std::io::Result<usize>>> {
        None // sendfile(2) as used here is Linux's
    }
}

impl<I> SendMapped for tokio_rustls::server::TlsStream<I> {
    fn poll_write_mapped(
        &mut self,
        _: &mut Context<'_>,
        _: &[IoSlice<'_>],
    ) -> Option<Poll<std::io::Result<usize>>> {
        None // rustls must read the bytes to encrypt them
    }
}

/// Writes up to `len` bytes of `file` from `offset` to `stream` with `sendfile(2)`, waiting for
/// room like any write; the bytes written. A file shorter than `offset + len` writes fewer (0
/// at its end), which hyper treats as a failed write.
#[cfg(target_os = "linux")]
fn poll_sendfile(
    stream: &tokio::net::TcpStream,
    cx: &mut Context<'_>,
    file: &File,
    offset: u64,
    len: usize,
) -> Poll<std::io::Result<usize>> {
    use std::os::fd::AsRawFd;
    let Ok(mut off) = libc::off_t::try_from(offset) else {
        return Poll::Ready(Err(std::io::ErrorKind::InvalidInput.into()));
    };
    loop {
        ready!(stream.poll_write_ready(cx))?;
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            // SAFETY: both descriptors are open for the call (the stream is borrowed, the file
            // is held), and `off` is a valid off_t that sendfile updates.
            let n = unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut off, len) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            Ok(n) => {
                SENT_FROM_FILE.fetch_add(n as u64, Ordering::Relaxed);
                return Poll::Ready(Ok(n));
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}
