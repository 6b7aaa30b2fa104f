//! Response bodies: small in-memory bodies; stored chunk files served from memory maps, one
//! window at a time ([`stream_file`]); and bodies fed by a blocking reader (a gunzipped chunk)
//! through a bounded channel ([`stream_reader`]), so that a 20 GB message never sits in memory,
//! with a timeout so that a client that stops reading holds nothing for ever.

use std::fs::File;
use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, SizeHint};
use memmap2::{Mmap, MmapOptions};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::task::JoinHandle;

/// The body type of every response.
pub type ResponseBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// A body made of one buffer.
pub(crate) fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub(crate) fn empty() -> ResponseBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Read size for streamed bodies.
const READ_BUF: usize = 1 << 20;

/// A body fed by a channel; `len` (if known) is reported as the exact size hint so hyper sets
/// `Content-Length`.
struct ChannelBody {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    len: Option<u64>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.len {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// Streams everything `reader` yields. `len` is the exact length if known (it must be exact:
/// hyper trusts it for `Content-Length`). The reads run on blocking threads one buffer at a
/// time, so a client that stops reading holds no thread (at most the one read under way, which
/// ends by itself); if it takes no data for `timeout` the body is cut off (hyper then closes
/// the connection).
pub(crate) fn stream_reader(
    reader: Box<dyn Read + Send>,
    len: Option<u64>,
    timeout: Duration,
) -> ResponseBody {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(pump(reader, tx, timeout));
    ChannelBody { rx, len }.boxed_unsync()
}

type Reader = Box<dyn Read + Send>;

/// Buffers a download has read into and hyper has written out, kept for its next reads:
/// without them every MiB was a fresh zeroed allocation (and, above glibc's mmap threshold, a
/// fresh mapping whose pages fault in and whose unmapping flushes every core's TLB).
type Pool = Arc<Mutex<Vec<Vec<u8>>>>;

/// Buffers kept per download: the channel's depth, one being read, one being written.
const POOL_MAX: usize = 6;

/// The filled part of a pooled buffer, owned by a [`Bytes`]; the buffer goes back to its pool
/// when hyper drops the frame.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
    pool: Pool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(std::mem::take(&mut self.buf));
        }
    }
}

/// One buffer read on a blocking thread; the reader comes back with it.
fn read_next(
    mut reader: Reader,
    pool: Pool,
) -> JoinHandle<(Reader, std::io::Result<Option<Bytes>>)> {
    tokio::task::spawn_blocking(move || {
        let r = fill(&mut reader, &pool);
        (reader, r)
    })
}

/// Moves buffers from `reader` to `tx`. The next read is started before the current buffer is
/// handed over, so a read also proceeds while a send waits for room in the channel (one read
/// under way at a time, never more).
async fn pump(reader: Reader, tx: mpsc::Sender<std::io::Result<Bytes>>, timeout: Duration) {
    let pool = Pool::default();
    let mut reading = Some(read_next(reader, pool.clone()));
    while let Some(task) = reading.take() {
        let Ok((reader, r)) = task.await else {
            return;
        };
        let buf = match r {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(e) => {
                let _ = tx.send_timeout(Err(e), timeout).await;
                return;
            }
        };
        if buf.len() == READ_BUF {
            reading = Some(read_next(reader, pool.clone()));
        }
        match tx.send_timeout(Ok(buf), timeout).await {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => {
                tracing::info!("download cut off: the client took no data in time");
                return;
            }
            Err(SendTimeoutError::Closed(_)) => return, // client went away
        }
    }
}

/// Reads up to one buffer (fewer, larger frames) into a pooled buffer; `None` at the end.
fn fill(reader: &mut Reader, pool: &Pool) -> std::io::Result<Option<Bytes>> {
    let reused = pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
    let mut buf = reused.unwrap_or_else(|| vec![0; READ_BUF]); // full-sized either way
    let len = read_full(reader, &mut buf)?;
    if len == 0 {
        return Ok(None);
    }
    let pool = pool.clone();
    Ok(Some(Bytes::from_owner(Pooled { buf, len, pool })))
}

/// Reads until `buf` is full or `reader` ends; the bytes read (fewer than `buf.len()` only at
/// the end).
pub(crate) fn read_full<R: Read + ?Sized>(
    reader: &mut R,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Bytes mapped at a time by [`stream_file`]: each is one frame for hyper, so a 100 MB chunk
/// takes 12 hand-offs instead of the 96 of 1 MiB reads; at most two are mapped per download
/// (the one hyper is writing, the next), which bounds what a download adds to RSS.
const MAP_WINDOW: usize = 8 << 20;

/// Streams the first `size` bytes of `file` (a stored chunk; `size` must not exceed its length,
/// and is the exact `Content-Length`) from read-only memory maps of [`MAP_WINDOW`] bytes: no
/// read syscalls and no copy into a buffer; the kernel copies the page cache straight into
/// the socket. Each window is mapped and its pages populated on a blocking thread (a cold file
/// never stalls the async workers), the next one while hyper writes the current one, and it
/// is unmapped when hyper drops the frame.
///
/// A mapped file that shrank would raise SIGBUS on access. The store never shrinks or writes
/// a chunk file once it is in `chunks/`: bodies are staged in `tmp/` under fresh names
/// (`create_private`), then renamed into place (`store::disk::put_in_place`, which on a retry
/// replaces the directory entry, not the old inode's bytes), and freeing data unlinks files,
/// which leaves a mapped inode intact until it is unmapped. Each window is also checked
/// against the file's current length before it is mapped.
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
    next: Option<JoinHandle<std::io::Result<Mmap>>>,
}

impl MappedBody {
    /// Starts mapping the next window unless one is under way or all are asked for.
    fn map_ahead(&mut self) {
        if self.next.is_some() || self.mapped >= self.size {
            return;
        }
        let offset = self.mapped;
        let len = (self.size - offset).min(MAP_WINDOW as u64) as usize;
        self.mapped += len as u64;
        let file = self.file.clone();
        self.next = Some(tokio::task::spawn_blocking(move || {
            map_window(&file, offset, len)
        }));
    }
}

/// Maps `len` bytes of `file` at `offset` (a multiple of the page size) with their pages
/// populated, once the file is checked to hold them.
fn map_window(file: &File, offset: u64, len: usize) -> std::io::Result<Mmap> {
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
    // SAFETY: the file is read-only to us and never shrunk or rewritten while it may be mapped
    // (see `stream_file`), and the length was checked just above.
    let map = unsafe {
        MmapOptions::new()
            .offset(offset)
            .len(len)
            .populate()
            .map(file)?
    };
    Ok(map)
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
        let done = match Pin::new(task).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(done) => done,
        };
        self.next = None;
        match done {
            Ok(Ok(map)) => {
                self.sent += map.len() as u64;
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
