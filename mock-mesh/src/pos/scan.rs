//! The POS's one pass over a submission, pipelined over three threads so that a national file
//! (845 MB, 65 million lines, 11 gzip'd chunks) goes at the pace of its slowest stage rather
//! than the sum of them:
//!
//! 1. a decoder thread reads the message (each chunk gunzipped, in order) into 4 MiB buffers;
//! 2. the calling thread hashes each buffer (SHA-256 of the whole file, in order), judges every
//!    line ([`Decider`](super::Decider)) and copies the runs of kept lines into output buffers;
//! 3. a writer thread writes those into the result chunks ([`ResultSink`]), whose fsyncs run
//!    behind it.
//!
//! Bounded: at most [`DEPTH`] buffers wait between two stages, and the buffers go back to the
//! stage that fills them, so nothing is allocated per buffer once the pipeline is primed (at
//! most `2 × (DEPTH + 2)` buffers of [`BUF`] bytes per job). A stage that fails or stops closes
//! its channels, and the others stop at their next hand-over.

use std::io::Read;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use sha2::{Digest, Sha256};

use super::ResultSink;
use crate::body::read_full;

/// Size of one buffer between stages.
pub(super) const BUF: usize = 4 << 20;
/// Buffers that may wait between two stages.
const DEPTH: usize = 2;

/// CPU seconds the calling thread has run so far (Linux's `/proc/thread-self/schedstat`; 0
/// where that cannot be read).
fn thread_cpu() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// CPU seconds each stage of one pass used (logged with the job: what a submission cost the
/// POS, whatever the machine's load).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct StageCpu {
    /// Gunzip and SHA-256.
    pub(super) decode: f64,
    /// Judging every line and gathering the kept ones.
    pub(super) judge: f64,
    /// Writing the result (the fsyncs behind it not counted).
    pub(super) write: f64,
}

/// Buffers handed to the next stage, and the empty ones it hands back.
struct Lane {
    tx: SyncSender<Vec<u8>>,
    free: Receiver<Vec<u8>>,
}

impl Lane {
    /// An empty buffer: a returned one if there is one, else a new one.
    fn take(&self) -> Vec<u8> {
        self.free
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BUF))
    }
}

/// Two channels: `(lane for the producer, receiver of full buffers, sender of empty ones)`.
fn lane() -> (Lane, Receiver<Vec<u8>>, SyncSender<Vec<u8>>) {
    let (tx, rx) = sync_channel(DEPTH);
    let (free_tx, free) = sync_channel(DEPTH + 2);
    (Lane { tx, free }, rx, free_tx)
}

/// The decoder: fills buffers from `reader` until it ends, fails, or nobody listens, and
/// hashes them in order (SHA-256 here rather than on the busier judging thread); the hash of
/// everything read. A read error is passed on through `errors`.
fn decode(
    mut reader: Box<dyn Read + Send>,
    lane: Lane,
    errors: SyncSender<std::io::Error>,
) -> String {
    let mut hasher = Sha256::new();
    let hash = |h: Sha256| hex::encode(h.finalize());
    loop {
        let mut buf = lane.take();
        buf.resize(BUF, 0); // zeroing only the first time: a returned buffer is full-sized
        match read_full(&mut reader, &mut buf) {
            Ok(0) => return hash(hasher),
            Ok(n) => {
                buf.truncate(n);
                hasher.update(&buf);
                if lane.tx.send(buf).is_err() || n < BUF {
                    return hash(hasher);
                }
            }
            Err(e) => {
                let _ = errors.send(e);
                return String::new();
            }
        }
    }
}

/// The writer: everything it receives goes to `sink`, in order.
fn write_out(
    sink: &mut ResultSink,
    full: Receiver<Vec<u8>>,
    free: SyncSender<Vec<u8>>,
) -> std::io::Result<()> {
    for mut buf in full {
        sink.write(&buf)?;
        buf.clear();
        let _ = free.try_send(buf);
    }
    Ok(())
}

/// Where the judging thread puts kept bytes: filled up to [`BUF`], then handed to the writer.
pub(super) struct Out {
    buf: Vec<u8>,
    lane: Lane,
}

impl Out {
    /// Appends `data` (handing full buffers on).
    pub(super) fn put(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let n = (BUF - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == BUF {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Hands what is buffered to the writer.
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self.lane.take();
        let full = std::mem::replace(&mut self.buf, next);
        self.lane
            .tx
            .send(full)
            .map_err(|_| std::io::Error::other("the POS result writer stopped"))
    }
}

/// The decoded buffers, in order, for the judging thread; each goes back to the decoder once
/// the next is asked for.
pub(super) struct Input {
    rx: Receiver<Vec<u8>>,
    free: SyncSender<Vec<u8>>,
    current: Vec<u8>,
}

impl Input {
    /// The next buffer; `None` at the end (or when the decoder stopped: see [`pipeline`]).
    pub(super) fn next(&mut self) -> Option<&[u8]> {
        let done = std::mem::take(&mut self.current);
        if done.capacity() > 0 {
            let _ = self.free.try_send(done);
        }
        self.current = self.rx.recv().ok()?;
        Some(&self.current)
    }
}

/// Runs `judge` over the decoded content of `reader`, with the kept bytes going to `sink`;
/// returns `judge`'s result, the SHA-256 (hex) of the content and each stage's CPU, once every
/// byte it kept has been written. The first error of any
/// stage is the answer: a read error (the decoder stopped early, so `judge` saw a short
/// file), then a write error (before the "writer stopped" it causes), then `judge`'s own.
pub(super) fn pipeline<T>(
    reader: Box<dyn Read + Send>,
    sink: &mut ResultSink,
    judge: impl FnOnce(&mut Input, &mut Out) -> std::io::Result<T>,
) -> std::io::Result<(T, String, StageCpu)> {
    let (in_lane, in_rx, in_free) = lane();
    let (out_lane, out_rx, out_free) = lane();
    let (err_tx, err_rx) = sync_channel(1);
    std::thread::scope(|s| {
        let decoder = std::thread::Builder::new()
            .name("pos-decode".into())
            .spawn_scoped(s, move || {
                let start = thread_cpu();
                let hash = decode(reader, in_lane, err_tx);
                (hash, thread_cpu() - start)
            })?;
        let writer = std::thread::Builder::new()
            .name("pos-write".into())
            .spawn_scoped(s, move || {
                let start = thread_cpu();
                write_out(sink, out_rx, out_free).map(|()| thread_cpu() - start)
            })?;
        let mut input = Input {
            rx: in_rx,
            free: in_free,
            current: Vec::new(),
        };
        let mut out = Out {
            buf: Vec::with_capacity(BUF),
            lane: out_lane,
        };
        let start = thread_cpu();
        let judged = judge(&mut input, &mut out).and_then(|t| out.flush().map(|()| t));
        let judge_cpu = thread_cpu() - start;
        drop(input); // a decoder still reading stops at its next hand-over
        drop(out); // the writer ends once it has written what it has
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the POS result writer failed")));
        let hash = decoder.join();
        if let Ok(e) = err_rx.try_recv() {
            return Err(e);
        }
        let write = written?;
        let (hash, decode) = hash.map_err(|_| std::io::Error::other("the POS decoder failed"))?;
        let cpu = StageCpu {
            decode,
            judge: judge_cpu,
            write,
        };
        judged.map(|t| (t, hash, cpu))
    })
}
