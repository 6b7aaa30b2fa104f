//! Downloads of stored chunk files without copying them through a buffer: [`stream_file`]
//! serves a chunk file as a response body of read-only memory maps, one window at a time, so
//! a download costs no read syscalls and no copy into user memory; the kernel copies the page
//! cache straight into the socket.
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
    next: Option<JoinHandle<std::io::Result<Mmap>>>,
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

/// Maps `len` bytes of `file` at `offset` (a multiple of the page size), once the file is
/// checked to hold them, and starts reading them ahead. Blocking.
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
    // SAFETY: the file is read-only to us and never shrunk or rewritten while it may be
    // mapped (see the module comment), and its length was checked just above.
    let map = unsafe { MmapOptions::new().offset(offset).len(len).map(file)? };
    let _ = map.advise(Advice::WillNeed); // a hint: a failure costs only speed
    Ok(map)
}
