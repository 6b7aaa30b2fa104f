//! The POS's one pass over a submission, pipelined over three threads so that a national file
//! (845 MB, 65 million lines, 11 gzip'd chunks) goes at the pace of its slowest stage rather
//! than the sum of them:
//!
//! 1. a decoder thread hands on the message's decoded content in 4 MiB buffers, in order: each
//!    chunk (gzip member) is gunzipped on a thread of its own, two at once when the next one
//!    is already there ([`Parts`], [`DECODING`]);
//! 2. the calling thread hashes each buffer (SHA-256 of the whole file, in order), judges
//!    every line ([`Decider`](super::Decider)) and hands each buffer on with the ranges of its
//!    kept lines ([`Kept`]: the kept bytes are not copied here);
//! 3. a writer thread writes those ranges into the result chunks ([`ResultSink`]), whose
//!    fsyncs run behind it, and gives the buffer back to the decoder.
//!
//! Bounded: at most [`DEPTH`] buffers wait between two stages, and the buffers go back to the
//! decoder once written, so nothing is allocated per buffer once the pipeline is primed (at
//! most `2 × DEPTH + 3` buffers of [`BUF`] bytes per job: one in each stage, the rest
//! waiting, plus up to [`AHEAD`] for each chunk being decoded). A stage that fails or stops closes its channels, and the others stop at their
//! next hand-over.

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
    /// Gunzip.
    pub(super) decode: f64,
    /// SHA-256, judging every line and gathering the kept ones.
    pub(super) judge: f64,
    /// Writing the result (the fsyncs behind it not counted).
    pub(super) write: f64,
}

/// Buffers handed to the next stage, and the empty ones handed back.
struct Lane<T> {
    tx: SyncSender<T>,
    free: Receiver<T>,
}

/// Two channels: `(lane for the producer, receiver of full buffers, sender of empty ones)`;
/// up to `free` empty buffers wait to be reused.
fn lane<T>(free: usize) -> (Lane<T>, Receiver<T>, SyncSender<T>) {
    let (tx, rx) = sync_channel(DEPTH);
    let (free_tx, free) = sync_channel(free);
    (Lane { tx, free }, rx, free_tx)
}

/// Decoded buffers that may be in the pipeline at once (see the module's doc), all of which
/// can wait to be reused.
const IN_FLIGHT: usize = 2 * DEPTH + 3;

/// What [`Parts::next_part`] found.
pub(super) enum Next {
    /// The next part's decoded content.
    Part(Box<dyn Read + Send>),
    /// The next part is not there yet (only when not waiting for it).
    NotYet,
    /// No more parts.
    End,
}

/// A submission as the parts it was sent in, in order (a chunked message's chunks: each an
/// independent gzip member, so two can be decoded at once); their decoded contents, one after
/// the other, are the submission.
pub(super) trait Parts: Send {
    /// The next part: waiting for it to be there if `wait`, else [`Next::NotYet`] if it is
    /// not there yet.
    fn next_part(&mut self, wait: bool) -> std::io::Result<Next>;
}

/// A submission of one part.
#[cfg(test)]
struct One(Option<Box<dyn Read + Send>>);

#[cfg(test)]
impl Parts for One {
    fn next_part(&mut self, _wait: bool) -> std::io::Result<Next> {
        Ok(self.0.take().map_or(Next::End, Next::Part))
    }
}

/// A submission whose every part is there, in order.
impl Parts for std::collections::VecDeque<Box<dyn Read + Send>> {
    fn next_part(&mut self, _wait: bool) -> std::io::Result<Next> {
        Ok(self.pop_front().map_or(Next::End, Next::Part))
    }
}

/// `reader`'s content as a submission of one part.
#[cfg(test)]
pub(super) fn one(reader: impl Read + Send + 'static) -> Box<dyn Parts> {
    Box::new(One(Some(Box::new(reader))))
}

/// Parts decoded at once (by as many threads), the one whose buffers are being handed on and
/// the next ones: with chunks of up to 100 MiB decoded, up to `DECODING × AHEAD` buffers of
/// [`BUF`] bytes wait (2 × 24 × 4 MiB = 192 MiB, about two and a half national chunks of
/// 75 MiB) besides the pipeline's own.
const DECODING: usize = 2;
/// Decoded buffers of one part that may wait to be handed on (a part decoded ahead stops
/// there until its turn comes).
const AHEAD: usize = 24;
/// Every buffer that may be in use at once (all of which can wait to be reused).
const MAX_BUFS: usize = IN_FLIGHT + DECODING * AHEAD;

/// Empty buffers, shared by the threads that decode.
type Pool = std::sync::Mutex<Receiver<Vec<u8>>>;

/// Decodes one part into buffers sent to `tx` (its error too), until it ends, fails, or
/// nobody listens; the thread's CPU seconds.
fn decode_part(
    mut reader: Box<dyn Read + Send>,
    pool: &Pool,
    tx: SyncSender<std::io::Result<Vec<u8>>>,
) -> f64 {
    let start = thread_cpu();
    loop {
        let reused = pool.lock().ok().and_then(|p| p.try_recv().ok());
        let mut buf = reused.unwrap_or_else(|| Vec::with_capacity(BUF));
        buf.resize(BUF, 0); // zeroing only the first time: a returned buffer is full-sized
        match read_full(&mut reader, &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                buf.truncate(n);
                if tx.send(Ok(buf)).is_err() || n < BUF {
                    break;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                break;
            }
        }
    }
    thread_cpu() - start
}

/// The decoder: decodes each part of `parts` on a thread of its own, up to [`DECODING`] at
/// once (the next part is started early only if it is already there: an upload is not
/// waited for while a part is being decoded), and hands their buffers on in order until the
/// last part ends, a part fails, or nobody listens. A read error is passed on through
/// `errors`, in its place: the parts before it are handed on whole. Returns the CPU seconds
/// of every part's thread and its own.
fn decode(
    mut parts: Box<dyn Parts>,
    lane: Lane<Vec<u8>>,
    errors: SyncSender<std::io::Error>,
) -> f64 {
    let start = thread_cpu();
    let pool: Pool = std::sync::Mutex::new(lane.free);
    let tx = lane.tx;
    let mut cpu = 0.0;
    std::thread::scope(|s| {
        let mut decoding = std::collections::VecDeque::new();
        let mut ended = false;
        // starts the next part on a thread: false if none was started
        let mut start_next =
            |wait: bool, decoding: &mut std::collections::VecDeque<_>| -> std::io::Result<bool> {
                if ended || decoding.len() >= DECODING {
                    return Ok(false);
                }
                let reader = match parts.next_part(wait)? {
                    Next::Part(r) => r,
                    Next::NotYet => return Ok(false),
                    Next::End => {
                        ended = true;
                        return Ok(false);
                    }
                };
                let (part_tx, part_rx) = sync_channel(AHEAD);
                let pool = &pool;
                let t = std::thread::Builder::new()
                    .name("pos-decode-part".into())
                    .spawn_scoped(s, move || decode_part(reader, pool, part_tx))?;
                decoding.push_back((part_rx, t));
                Ok(true)
            };
        let handed_on = (|| -> std::io::Result<()> {
            loop {
                if decoding.is_empty() && !start_next(true, &mut decoding)? {
                    return Ok(());
                }
                while let Some(got) = decoding.front().and_then(|(rx, _)| rx.recv().ok()) {
                    if tx.send(got?).is_err() {
                        return Ok(());
                    }
                    while start_next(false, &mut decoding)? {}
                }
                if let Some((_, t)) = decoding.pop_front() {
                    cpu += t.join().unwrap_or(0.0);
                }
                while start_next(false, &mut decoding)? {}
            }
        })();
        if let Err(e) = handed_on {
            let _ = errors.send(e);
        }
        drop(tx); // the judge ends
        for (rx, t) in decoding {
            drop(rx); // a thread still decoding stops at its next buffer
            cpu += t.join().unwrap_or(0.0);
        }
    });
    cpu + thread_cpu() - start
}

/// One decoded buffer and what of it is kept, from the judging thread to the writer.
#[derive(Default)]
pub(super) struct Kept {
    /// Bytes kept before the buffer's runs: a line carried over from the buffer before.
    pub(super) head: Vec<u8>,
    /// The decoded buffer (back to the decoder once written; empty for the file's last line).
    pub(super) buf: Vec<u8>,
    /// The ranges of `buf` kept, in order.
    pub(super) runs: Vec<std::ops::Range<usize>>,
}

/// The writer: the kept bytes of everything it receives go to `sink`, in order; each decoded
/// buffer goes back to the decoder (`bufs`), each emptied [`Kept`] to the judging thread.
fn write_out(
    sink: &mut ResultSink,
    full: Receiver<Kept>,
    free: SyncSender<Kept>,
    bufs: SyncSender<Vec<u8>>,
) -> std::io::Result<()> {
    for mut k in full {
        sink.write(&k.head)?;
        for r in k.runs.drain(..) {
            sink.write(k.buf.get(r).unwrap_or_default())?;
        }
        k.head.clear();
        let buf = std::mem::take(&mut k.buf);
        if buf.capacity() > 0 {
            let _ = bufs.try_send(buf);
        }
        let _ = free.try_send(k);
    }
    Ok(())
}

/// Where the judging thread hands its judged buffers ([`Kept`]) to the writer.
pub(super) struct Out {
    lane: Lane<Kept>,
}

impl Out {
    /// An empty [`Kept`] to fill: a returned one if there is one.
    pub(super) fn take(&self) -> Kept {
        self.lane.free.try_recv().unwrap_or_default()
    }

    /// Hands `kept` to the writer.
    pub(super) fn send(&self, kept: Kept) -> std::io::Result<()> {
        self.lane
            .tx
            .send(kept)
            .map_err(|_| std::io::Error::other("the POS result writer stopped"))
    }
}

/// The decoded buffers, in order, for the judging thread, which hashes them as they come
/// (here rather than on the decoder's thread, the pipeline's busiest since judging got cheaper).
pub(super) struct Input {
    rx: Receiver<Vec<u8>>,
    free: SyncSender<Vec<u8>>,
    hasher: Sha256,
}

impl Input {
    /// The next buffer (hashed); `None` at the end (or when the decoder stopped: see
    /// [`pipeline`]).
    pub(super) fn next(&mut self) -> Option<Vec<u8>> {
        let buf = self.rx.recv().ok()?;
        self.hasher.update(&buf);
        Some(buf)
    }

    /// Gives a buffer with nothing to write straight back to the decoder.
    pub(super) fn recycle(&self, buf: Vec<u8>) {
        let _ = self.free.try_send(buf);
    }
}

/// Runs `judge` over the decoded content of `reader`, with the kept bytes going to `sink`;
/// returns `judge`'s result, the SHA-256 (hex) of the content and each stage's CPU, once every
/// byte it kept has been written. The first error of any
/// stage is the answer: a read error (the decoder stopped early, so `judge` saw a short
/// file), then a write error (before the "writer stopped" it causes), then `judge`'s own.
pub(super) fn pipeline<T>(
    parts: Box<dyn Parts>,
    sink: &mut ResultSink,
    judge: impl FnOnce(&mut Input, &mut Out) -> std::io::Result<T>,
) -> std::io::Result<(T, String, StageCpu)> {
    let (in_lane, in_rx, in_free) = lane(MAX_BUFS);
    let (out_lane, out_rx, out_free) = lane(IN_FLIGHT);
    let bufs = in_free.clone();
    let (err_tx, err_rx) = sync_channel(1);
    std::thread::scope(|s| {
        let decoder = std::thread::Builder::new()
            .name("pos-decode".into())
            .spawn_scoped(s, move || decode(parts, in_lane, err_tx))?;
        let writer = std::thread::Builder::new()
            .name("pos-write".into())
            .spawn_scoped(s, move || {
                let start = thread_cpu();
                write_out(sink, out_rx, out_free, bufs).map(|()| thread_cpu() - start)
            })?;
        let mut input = Input {
            rx: in_rx,
            free: in_free,
            hasher: Sha256::new(),
        };
        let mut out = Out { lane: out_lane };
        let start = thread_cpu();
        let judged = judge(&mut input, &mut out);
        let hash = hex::encode(std::mem::take(&mut input.hasher).finalize());
        let judge_cpu = thread_cpu() - start;
        drop(input); // a decoder still reading stops at its next hand-over
        drop(out); // the writer ends once it has written what it has
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the POS result writer failed")));
        let decoded = decoder.join();
        if let Ok(e) = err_rx.try_recv() {
            return Err(e);
        }
        let write = written?;
        let decode = decoded.map_err(|_| std::io::Error::other("the POS decoder failed"))?;
        let cpu = StageCpu {
            decode,
            judge: judge_cpu,
            write,
        };
        judged.map(|t| (t, hash, cpu))
    })
}
