//! Downloads of stored chunk files without copying them through user space.
//!
//! [`stream_file`] serves a chunk file as a response body of read-only memory maps, one window
//! at a time: no read syscalls and no copy into buffers. On a plain TCP connection,
//! [`Sendfile`] goes one step further: when hyper asks it to write bytes that lie in such a
//! window, it has the kernel send them straight from the file (`sendfile(2)`) instead of
//! copying them from the mapping into the socket, so the page cache feeds the socket without
//! the server touching the bytes at all. Over TLS (and anywhere else) the mapping is written
//! as ordinary memory.
//!
//! A mapped file that shrank would raise SIGBUS on access. The store never shrinks or writes
//! a chunk file once it is in `chunks/`: bodies are staged in `tmp/` under fresh names
//! (`create_private`), then renamed into place (`store::disk::put_in_place`; a retry replaces
//! the directory entry, not the old inode's bytes), and freeing data unlinks files, which
//! leaves a mapped (or open) inode intact until it is unmapped (closed). Each window is also
//! checked against the file's current length before it is mapped.

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use memmap2::{Mmap, MmapOptions};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::body::ResponseBody;

/// Experiment knobs (read once from the environment).
struct Knobs {
    window: usize,
    populate: bool,
    sendfile: bool,
}

fn knobs() -> &'static Knobs {
    static K: OnceLock<Knobs> = OnceLock::new();
    K.get_or_init(|| {
        let get = |k: &str, d: usize| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        Knobs {
            window: get("MOCK_MESH_EXP_WINDOW_MIB", 8) << 20,
            populate: get("MOCK_MESH_EXP_POPULATE", 1) == 1,
            sendfile: get("MOCK_MESH_EXP_SENDFILE", 1) == 1,
        }
    })
}

/// Streams the first `size` bytes of `file` (a stored chunk; `size` must not exceed its length,
/// and is the exact `Content-Length`) from read-only memory maps of a window of bytes each,
/// one frame per window: a 100 MB chunk takes 12 hand-offs instead of the 96 of 1 MiB reads,
/// and at most two windows are mapped per download (the one hyper is writing, the next),
/// which bounds what a download adds to RSS. Each window is mapped (and its pages populated)
/// on a blocking thread, so a cold file never stalls the async workers, the next one while
/// hyper writes the current one, and it is unmapped when hyper drops the frame.
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
        let len = (self.size - offset).min(knobs().window as u64) as usize;
        self.mapped += len as u64;
        let file = self.file.clone();
        self.next = Some(tokio::task::spawn_blocking(move || {
            Window::map(file, offset, len)
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
                self.sent += window.map.len() as u64;
                self.map_ahead(); // mapped while hyper writes this one
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_owner(window)))))
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

/// One mapped window of a chunk file, known to [`Sendfile`] (by its address) while it lives.
struct Window {
    map: Mmap,
}

/// A live window: where its bytes are in the file.
struct Source {
    len: usize,
    file: Arc<File>,
    offset: u64,
}

/// Live windows by start address.
static WINDOWS: Mutex<BTreeMap<usize, Source>> = Mutex::new(BTreeMap::new());

fn windows() -> std::sync::MutexGuard<'static, BTreeMap<usize, Source>> {
    WINDOWS.lock().unwrap_or_else(|p| p.into_inner())
}

impl Window {
    /// Maps `len` bytes of `file` at `offset` (a multiple of the page size), once the file is
    /// checked to hold them. Blocking.
    fn map(file: Arc<File>, offset: u64, len: usize) -> std::io::Result<Window> {
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
        let mut options = MmapOptions::new();
        options.offset(offset).len(len);
        if knobs().populate {
            options.populate();
        }
        // SAFETY: the file is read-only to us and never shrunk or rewritten while it may be
        // mapped (see the module comment), and its length was checked just above.
        let map = unsafe { options.map(&*file)? };
        if !knobs().populate {
            let _ = map.advise(memmap2::Advice::WillNeed);
        }
        windows().insert(map.as_ptr() as usize, Source { len, file, offset });
        Ok(Window { map })
    }
}

impl AsRef<[u8]> for Window {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // forgotten before the mapping goes, so no write can find a stale address
        windows().remove(&(self.map.as_ptr() as usize));
    }
}

/// Where `bytes` (a slice hyper is writing) lie in a chunk file, if they lie in a live window.
fn source_of(bytes: &[u8]) -> Option<(Arc<File>, u64)> {
    if bytes.is_empty() {
        return None;
    }
    let at = bytes.as_ptr() as usize;
    let windows = windows();
    let (&start, s) = windows.range(..=at).next_back()?;
    (at + bytes.len() <= start + s.len).then(|| (s.file.clone(), s.offset + (at - start) as u64))
}

/// A plain TCP connection that sends bytes of live [`Window`]s with `sendfile(2)`.
pub(crate) struct Sendfile(pub(crate) TcpStream);

impl Sendfile {
    /// Sends up to `len` bytes of `file` from `offset`; `None` if the socket has no room.
    fn send(&self, file: &File, offset: u64, len: usize) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        let mut off = offset as libc::off_t;
        // SAFETY: both descriptors are open for the duration of the call; `off` is a valid
        // pointer to a local.
        let n = unsafe { libc::sendfile(self.0.as_raw_fd(), file.as_raw_fd(), &mut off, len) };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: usize,
    ) -> Poll<std::io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self
                .0
                .try_io(Interest::WRITABLE, || self.send(file, offset, len))
            {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }
}

impl AsyncRead for Sendfile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Sendfile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if knobs().sendfile {
            if let Some((file, offset)) = source_of(buf) {
                return self.poll_sendfile(cx, &file, offset, buf.len());
            }
        }
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        // only the first non-empty slice can be sent from its file: bytes go out in order
        if knobs().sendfile {
            if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
                if let Some((file, offset)) = source_of(first) {
                    return self.poll_sendfile(cx, &file, offset, first.len());
                }
            }
        }
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
