//! Response bodies: small in-memory bodies; stored chunk files served from memory maps, one
//! window at a time (`mapped::stream_file`); and bodies fed by a blocking reader (a gunzipped chunk)
//! through a bounded channel ([`stream_reader`]), so that a 20 GB message never sits in memory,
//! with a timeout so that a client that stops reading holds nothing for ever.

use std::io::Read;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame};
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

/// A body fed by a channel, of a length not known ahead (hyper sends it chunked).
struct ChannelBody {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
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
}

/// Streams everything `reader` yields (a decoded download, whose length is not known). The reads run on blocking threads one buffer at a
/// time, so a client that stops reading holds no thread (at most the one read under way, which
/// ends by itself); if it takes no data for `timeout` the body is cut off (hyper then closes
/// the connection).
pub(crate) fn stream_reader(reader: Box<dyn Read + Send>, timeout: Duration) -> ResponseBody {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(pump(reader, tx, timeout));
    ChannelBody { rx }.boxed_unsync()
}

type Reader = Box<dyn Read + Send>;

/// Buffers a download has read into and hyper has written out, kept for its next reads:
/// without them every MiB was a fresh zeroed allocation (and, above glibc's mmap threshold, a
/// fresh mapping whose pages fault in and whose unmapping flushes every core's TLB).
pub(crate) type Pool<B = Vec<u8>> = Arc<Mutex<Vec<B>>>;

/// Buffers kept per download: the channel's depth, one being read, one being written.
const POOL_MAX: usize = 6;

/// A buffer whose first `len` bytes are a frame's data.
pub(crate) trait Filled: Send + 'static {
    /// The first `len` bytes.
    fn filled(&self, len: usize) -> &[u8];
}

impl Filled for Vec<u8> {
    fn filled(&self, len: usize) -> &[u8] {
        &self[..len]
    }
}

impl Filled for direct_io::AlignedBuf {
    fn filled(&self, len: usize) -> &[u8] {
        &self.bytes()[..len]
    }
}

/// The filled part of a pooled buffer, owned by a [`Bytes`]; the buffer goes back to its pool
/// (if it holds fewer than `max`) when hyper drops the frame.
struct Pooled<B: Filled> {
    buf: Option<B>,
    len: usize,
    pool: Pool<B>,
    max: usize,
}

impl<B: Filled> AsRef<[u8]> for Pooled<B> {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[], |b| b.filled(self.len))
    }
}

impl<B: Filled> Drop for Pooled<B> {
    fn drop(&mut self) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = self.buf.take().filter(|_| pool.len() < self.max) {
            pool.push(b);
        }
    }
}

/// A frame of the first `len` bytes of `buf`, which goes back to `pool` (holding at most
/// `max`) when the frame is dropped.
pub(crate) fn pooled_bytes<B: Filled>(buf: B, len: usize, pool: &Pool<B>, max: usize) -> Bytes {
    Bytes::from_owner(Pooled {
        buf: Some(buf),
        len,
        pool: pool.clone(),
        max,
    })
}

/// A buffer from `pool`, if it has one.
pub(crate) fn take_pooled<B>(pool: &Pool<B>) -> Option<B> {
    pool.lock().unwrap_or_else(|p| p.into_inner()).pop()
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
    let reused = take_pooled(pool);
    let mut buf = reused.unwrap_or_else(|| vec![0; READ_BUF]); // full-sized either way
    let len = read_full(reader, &mut buf)?;
    if len == 0 {
        return Ok(None);
    }
    Ok(Some(pooled_bytes(buf, len, pool, POOL_MAX)))
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
