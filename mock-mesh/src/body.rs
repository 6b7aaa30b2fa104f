//! Response bodies: small in-memory bodies, and streamed chunk bodies fed by a blocking reader
//! (a file, optionally gunzipped) through a bounded channel so that a 20 GB message never sits
//! in memory.

use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

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

/// Streams everything `reader` yields, read on a blocking thread. `len` is the exact length if
/// known (it must be exact: hyper trusts it for `Content-Length`).
pub(crate) fn stream_reader(reader: Box<dyn Read + Send>, len: Option<u64>) -> ResponseBody {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || pump(reader, tx));
    ChannelBody { rx, len }.boxed_unsync()
}

fn pump(mut reader: Box<dyn Read + Send>, tx: mpsc::Sender<std::io::Result<Bytes>>) {
    loop {
        let mut buf = BytesMut::zeroed(READ_BUF);
        let mut filled = 0;
        // fill the buffer as far as possible: fewer, larger frames
        while filled < READ_BUF {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        if filled == 0 {
            return;
        }
        buf.truncate(filled);
        if tx.blocking_send(Ok(buf.freeze())).is_err() {
            return; // client went away
        }
        if filled < READ_BUF {
            return;
        }
    }
}
