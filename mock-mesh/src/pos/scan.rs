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

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use super::ResultSink;
use crate::body::read_full;

/// Size of one buffer between stages.
pub(super) const BUF: usize = 4 << 20;
/// Buffers that may wait between two stages.
const DEPTH: usize = 2;

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

/// One part of a submission for the decoder, in order.
pub(super) enum Part {
    /// A stored chunk as uploaded (gzip'd if `gzip`).
    Stored { data: Stored, gzip: bool },
    /// Content as it is (tests).
    #[cfg(test)]
    Plain(Box<dyn Read + Send>),
}

/// A stored chunk's bytes: its file (open), or the memory store's bytes.
pub(super) enum Stored {
    File(std::fs::File),
    Memory(bytes::Bytes),
}

/// The parts of a submission, in order; an error stops the pass (it is the answer).
pub(super) type Parts = Box<dyn Iterator<Item = std::io::Result<Part>> + Send>;

/// A whole chunk is decoded in one call (libdeflate) when it is one plain gzip member whose
/// stored size and decoded size (its trailer's ISIZE) are at most this: a chunk of a national
/// file is about 20 MB gzip'd, 77 MB decoded. Anything else is decoded streaming.
const WHOLE_MAX: usize = 128 << 20;

/// Fills the pipeline's buffers in order, hashing each as it is handed on.
struct Filler {
    lane: Lane,
    hasher: Sha256,
    /// The buffer being filled (`BUF` long; `filled` of it in use), if any.
    buf: Vec<u8>,
    filled: usize,
    /// Bytes decoded so far.
    total: u64,
}

impl Filler {
    /// The buffer being filled, taking an empty one if there is none.
    fn room(&mut self) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = self.lane.take();
            self.buf.resize(BUF, 0); // zeroing only the first time: returned buffers are full
            self.filled = 0;
        }
        &mut self.buf[self.filled..]
    }

    /// Hands the buffer on if it is full; false if the judging thread stopped.
    fn hand_on_if_full(&mut self) -> bool {
        self.filled < BUF || self.hand_on()
    }

    /// Hands on what is buffered (hashed first); false if the judging thread stopped.
    fn hand_on(&mut self) -> bool {
        if self.filled == 0 {
            return true; // nothing to hand on (an empty buffer is kept for later)
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.truncate(self.filled);
        self.hasher.update(&buf);
        self.filled = 0;
        self.lane.tx.send(buf).is_ok()
    }

    /// Appends decoded bytes; false if the judging thread stopped.
    fn put(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let room = self.room();
            let n = room.len().min(data.len());
            room[..n].copy_from_slice(&data[..n]);
            data = &data[n..];
            self.filled += n;
            self.total += n as u64;
            if !self.hand_on_if_full() {
                return false;
            }
        }
        true
    }

    /// Appends everything `reader` gives; false if the judging thread stopped.
    fn read_from(&mut self, reader: &mut dyn Read) -> std::io::Result<bool> {
        loop {
            let n = read_full(reader, self.room())?;
            self.filled += n;
            self.total += n as u64;
            if self.filled < BUF {
                return Ok(true); // the reader ended
            }
            if !self.hand_on() {
                return Ok(false);
            }
        }
    }
}

/// libdeflate's decompressor, freed when dropped.
struct Inflater(std::ptr::NonNull<libdeflate_sys::libdeflate_decompressor>);

impl Inflater {
    fn new() -> Option<Inflater> {
        // SAFETY: no arguments; a null return (out of memory) is checked
        std::ptr::NonNull::new(unsafe { libdeflate_sys::libdeflate_alloc_decompressor() })
            .map(Inflater)
    }

    /// Decodes the gzip member at the start of `gz` into `out` (grown to the member's ISIZE if
    /// that is at most `room` and [`WHOLE_MAX`]), checking its CRC-32 and ISIZE: the bytes of
    /// `gz` it used and the decoded bytes, or `None` if it is not one such member (the caller
    /// then decodes `gz` streaming, as before: the answer cannot differ).
    fn member<'o>(
        &mut self,
        gz: &[u8],
        room: u64,
        out: &'o mut Vec<u8>,
    ) -> Option<(usize, &'o [u8])> {
        // a plain 10-byte header (FLG 0): libdeflate skips a header CRC that flate2 checks
        if gz.len() > WHOLE_MAX || gz.len() < 18 || gz[..4] != [0x1f, 0x8b, 8, 0] {
            return None;
        }
        let tail: [u8; 4] = gz[gz.len() - 4..].try_into().ok()?;
        let size = u32::from_le_bytes(tail) as usize; // a later member's, if there are more
        if size > WHOLE_MAX || size as u64 > room {
            return None;
        }
        if out.len() < size {
            out.resize(size, 0);
        }
        let (mut used, mut made) = (0usize, 0usize);
        // SAFETY: the decompressor is live and used by this thread only; `gz` is readable for
        // `gz.len()` bytes and `out` writable for `size <= out.len()` bytes; libdeflate writes
        // no more than that and sets `used <= gz.len()`, `made <= size`
        let result = unsafe {
            libdeflate_sys::libdeflate_gzip_decompress_ex(
                self.0.as_ptr(),
                gz.as_ptr().cast(),
                gz.len(),
                out.as_mut_ptr().cast(),
                size,
                &mut used,
                &mut made,
            )
        };
        (result == libdeflate_sys::libdeflate_result_LIBDEFLATE_SUCCESS
            && used <= gz.len()
            && made <= size)
            .then(|| (used, &out[..made]))
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: allocated by `libdeflate_alloc_decompressor`, freed once
        unsafe { libdeflate_sys::libdeflate_free_decompressor(self.0.as_ptr()) }
    }
}

/// Decodes one stored gzip'd chunk into `fill`: in one call where it is one plain member
/// ([`Inflater::member`]), what follows it (more members) and anything else streaming
/// (flate2's `MultiGzDecoder`, which every chunk went through before). `packed` and `out` are
/// the decoder's reused buffers. False if the judging thread stopped.
fn gunzip_stored(
    data: Stored,
    fill: &mut Filler,
    limit: u64,
    inflater: &mut Option<Inflater>,
    packed: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let gz: &[u8] = match &data {
        Stored::Memory(b) => b,
        Stored::File(f) => {
            if f.metadata()?.len() > WHOLE_MAX as u64 {
                let mut reader = std::io::BufReader::with_capacity(1 << 20, f);
                return fill.read_from(&mut MultiGzDecoder::new(&mut reader));
            }
            packed.clear();
            let mut file: &std::fs::File = f;
            file.read_to_end(packed)?;
            packed
        }
    };
    let room = limit.saturating_sub(fill.total);
    if inflater.is_none() {
        *inflater = Inflater::new();
    }
    let whole = inflater.as_mut().and_then(|i| i.member(gz, room, out));
    let rest = match whole {
        Some((used, decoded)) => {
            if !fill.put(decoded) {
                return Ok(false);
            }
            &gz[used..]
        }
        None => gz,
    };
    if rest.is_empty() {
        return Ok(true);
    }
    fill.read_from(&mut MultiGzDecoder::new(rest))
}

/// Decodes every part into `fill`; false if the judging thread stopped.
fn decode_parts(parts: Parts, fill: &mut Filler, limit: u64) -> std::io::Result<bool> {
    let (mut inflater, mut packed, mut out) = (None, Vec::new(), Vec::new());
    for part in parts {
        let going = match part? {
            #[cfg(test)]
            Part::Plain(mut r) => fill.read_from(&mut r)?,
            Part::Stored { data, gzip: true } => {
                gunzip_stored(data, fill, limit, &mut inflater, &mut packed, &mut out)?
            }
            Part::Stored {
                data: Stored::Memory(b),
                gzip: false,
            } => fill.put(&b),
            Part::Stored {
                data: Stored::File(f),
                gzip: false,
            } => fill.read_from(&mut std::io::BufReader::with_capacity(1 << 20, f))?,
        };
        if !going {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The decoder: decodes the parts into buffers until they end, fail, or nobody listens, and
/// hashes them in order (SHA-256 here rather than on the busier judging thread); the hash of
/// everything read. An error is passed on through `errors`. `limit` is the engine's decode
/// limit: a chunk decoded whole must fit under it (the judging thread enforces it).
fn decode(parts: Parts, lane: Lane, errors: SyncSender<std::io::Error>, limit: u64) -> String {
    let mut fill = Filler {
        lane,
        hasher: Sha256::new(),
        buf: Vec::new(),
        filled: 0,
        total: 0,
    };
    match decode_parts(parts, &mut fill, limit) {
        Ok(true) => {
            fill.hand_on();
            hex::encode(fill.hasher.finalize())
        }
        Ok(false) => String::new(), // the judging thread stopped: its error is the answer
        Err(e) => {
            let _ = errors.send(e);
            String::new()
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
/// returns `judge`'s result and the SHA-256 (hex) of the content once every byte it kept has
/// been written. The first error of any
/// stage is the answer: a read error (the decoder stopped early, so `judge` saw a short
/// file), then a write error (before the "writer stopped" it causes), then `judge`'s own.
pub(super) fn pipeline<T>(
    parts: Parts,
    limit: u64,
    sink: &mut ResultSink,
    judge: impl FnOnce(&mut Input, &mut Out) -> std::io::Result<T>,
) -> std::io::Result<(T, String)> {
    let (in_lane, in_rx, in_free) = lane();
    let (out_lane, out_rx, out_free) = lane();
    let (err_tx, err_rx) = sync_channel(1);
    std::thread::scope(|s| {
        let decoder = std::thread::Builder::new()
            .name("pos-decode".into())
            .spawn_scoped(s, move || decode(parts, in_lane, err_tx, limit))?;
        let writer = std::thread::Builder::new()
            .name("pos-write".into())
            .spawn_scoped(s, move || write_out(sink, out_rx, out_free))?;
        let mut input = Input {
            rx: in_rx,
            free: in_free,
            current: Vec::new(),
        };
        let mut out = Out {
            buf: Vec::with_capacity(BUF),
            lane: out_lane,
        };
        let judged = judge(&mut input, &mut out).and_then(|t| out.flush().map(|()| t));
        drop(input); // a decoder still reading stops at its next hand-over
        drop(out); // the writer ends once it has written what it has
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the POS result writer failed")));
        let hash = decoder.join();
        if let Ok(e) = err_rx.try_recv() {
            return Err(e);
        }
        written?;
        let hash = hash.map_err(|_| std::io::Error::other("the POS decoder failed"))?;
        judged.map(|t| (t, hash))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8], name: Option<&str>) -> Vec<u8> {
        let b = flate2::GzBuilder::new();
        let b = match name {
            Some(n) => b.filename(n),
            None => b,
        };
        let mut e = b.write(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// The one-call path takes exactly the plain single members it is for, and says how much
    /// of the chunk the first member used.
    #[test]
    fn a_plain_member_is_decoded_in_one_call_and_nothing_else_is() {
        let data = b"9434765919,\r\n".repeat(10_000);
        let mut i = Inflater::new().unwrap();
        let mut out = Vec::new();
        let one = gz(&data, None);
        assert_eq!(
            i.member(&one, u64::MAX, &mut out),
            Some((one.len(), &data[..]))
        );
        // the first of two members (the trailer read is the second's)
        let two = [gz(&data[..13_000], None), gz(&data, None)].concat();
        let first = gz(&data[..13_000], None).len();
        assert_eq!(
            i.member(&two, u64::MAX, &mut out)
                .map(|(n, d)| (n, d.len())),
            Some((first, 13_000))
        );
        // a first member longer than the last one's ISIZE says: streaming
        let longer_first = [gz(&data, None), gz(&data[..13_000], None)].concat();
        assert_eq!(i.member(&longer_first, u64::MAX, &mut out), None);
        // a header with a name, a corrupt CRC, over the room left: not taken
        assert_eq!(i.member(&gz(&data, Some("x")), u64::MAX, &mut out), None);
        let mut bad = one.clone();
        let at = bad.len() - 6;
        bad[at] ^= 1;
        assert_eq!(i.member(&bad, u64::MAX, &mut out), None);
        assert_eq!(i.member(&one, data.len() as u64 - 1, &mut out), None);
        assert_eq!(
            i.member(&one, data.len() as u64, &mut out).map(|(n, _)| n),
            Some(one.len())
        );
    }
}
