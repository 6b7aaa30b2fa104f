//! A deflate encoder for files of fixed-length lines (the POS `.dat` files: sorted NHS numbers,
//! `NNNNNNNNNN,\r\n`): about a quarter of the CPU of libdeflate's fastest level, and a third
//! smaller (`docs/PERFORMANCE.md`, "The line encoder without a loop per byte").
//!
//! Sorted lines of equal length share their leading bytes with the line before. The encoder
//! therefore looks for repeats at one distance only, the line length `d`, and parses greedily:
//! at each position, the run of bytes equal to those `d` back is a match when it is 3 bytes or
//! longer (at most 258), else the byte is one literal. A `.dat` line becomes one match (its line
//! end and the digits it shares with the line before) and a few literals (the digits that differ
//! and the check digit).
//!
//! How it is fast:
//! - **No loop per byte.** The parse is computed 64 positions at a time: a bit mask of the
//!   positions whose byte equals the one `d` back (SSE2 compares on x86-64), from which shifts
//!   give the positions that runs of 3 or more cover; a token starts wherever such cover does not
//!   continue from the position before, so the tokens are the set bits of one word, taken in
//!   order, each as long as the distance to the next (1: a literal, 3..=258: a match).
//! - **One pass, no token buffer.** Each token is written as soon as it is known, through a
//!   table of whole codes (a match's length code, extra bits, distance code and extra bits in
//!   one entry) by a bit writer that stores eight bytes at a time into a small staging buffer.
//!   The Huffman codes of a block (RFC 1951 §3.2.7, dynamic, [`BLOCK_WORDS`] × 64 bytes of input)
//!   are built from the counts of the block before (the first block's from its first
//!   [`SAMPLE_WORDS`] × 64 bytes), every symbol counted once more so that any byte or length has
//!   a code: on sorted lines the counts hardly change from one block to the next.
//!
//! The output is standard deflate, decoded by every inflater; any input round-trips (a parse
//! with one match distance is valid for any bytes), but only line-shaped input compresses well:
//! [`crate::gzip()`] uses this only when the input has a line length and the result is small, else
//! libdeflate. Deterministic: the same input gives the same bytes, on every platform (the
//! vector and scalar masks are the same bits). Memory: a few tables on the stack.

use std::ops::Range;

/// Words of 64 input bytes in one deflate block (4 MiB of input: about a million tokens of
/// `.dat` lines).
pub(crate) const BLOCK_WORDS: usize = 1 << 16;

/// Words of input counted before the first block, for its codes (256 KiB).
const SAMPLE_WORDS: usize = 1 << 12;

/// Longest match (RFC 1951).
const MAX_MATCH: usize = 258;

/// Longest line length (= match distance) used.
pub(crate) const MAX_LINE: usize = 64;

/// Tokens: 0..=255 a literal byte, 256 + n a match of n bytes (3..=258) at the line distance.
const TOKENS: usize = 256 + MAX_MATCH + 1;

/// Size of the per-token tables: a power of two above the token values, so that an index
/// masked with `TABLE - 1` needs no bounds check.
const TABLE: usize = 1024;

/// Base length of each length code 257..=285, and its extra bits (RFC 1951 §3.2.5).
const LEN_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEN_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
/// Base distance of each distance code 0..=29 that a line length can use, and its extra bits.
const DIST_BASE: [u16; 12] = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49];
const DIST_EXTRA: [u8; 12] = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4];
/// Order in which the code-length code's lengths are written.
const CLEN_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// The line length of `data`: the distance between its first two line feeds, if that is a
/// usable match distance (3..=[`MAX_LINE`]).
pub(crate) fn line_length(data: &[u8]) -> Option<usize> {
    let first = memchr_nl(data, 0)?;
    let second = memchr_nl(data, first + 1)?;
    let d = second - first;
    (3..=MAX_LINE).contains(&d).then_some(d)
}

fn memchr_nl(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?
        .iter()
        .position(|&b| b == b'\n')
        .map(|p| p + from)
}

/// Deflates `data` (raw deflate, RFC 1951) with matches at distance `d` only (3..=[`MAX_LINE`]),
/// appending to `out`.
pub(crate) fn deflate(data: &[u8], d: usize, out: &mut Vec<u8>) {
    deflate_by(data, d, out, Deflater::block);
}

/// How a [`Deflater`] deflates one block: [`Deflater::block`] (the build for this CPU), or in
/// the tests the plain build.
type BlockFn = fn(&mut Deflater, &[u8], Range<usize>, bool, &mut Vec<u8>);

/// [`deflate`], block by block with `block`.
fn deflate_by(data: &[u8], d: usize, out: &mut Vec<u8>, block: BlockFn) {
    let words = data.len().div_ceil(64);
    let mut z = Deflater::new(d);
    let mut w = 0;
    loop {
        let end = (w + BLOCK_WORDS).min(words);
        let last = end == words;
        block(&mut z, data, w..end, last, out);
        if last {
            break;
        }
        w = end;
    }
}

/// The deflate stream between blocks: the parse's carries, the codes' counts and the bits not
/// yet a byte. Each block is deflated from a window of the input ([`Deflater::block`]): the
/// whole input for [`deflate`], or the stretch [`GzipLines`] holds, which moves on by whole
/// words ([`Deflater::shift`]) so that positions in it are word-aligned as in the whole input.
pub(crate) struct Deflater {
    d: usize,
    dist: Distance,
    enc: Encoder,
    /// The parse, from the first block on.
    parse: Option<Parse>,
    bits: Bits,
    /// The token counts of the block before (of the first block's sample before it).
    counts: [u64; TABLE],
}

impl Deflater {
    pub(crate) fn new(d: usize) -> Deflater {
        assert!((3..=MAX_LINE).contains(&d), "line length {d} out of range");
        Deflater {
            d,
            dist: Distance::new(d),
            enc: Encoder::new(),
            parse: None,
            bits: Bits::default(),
            counts: [0; TABLE],
        }
    }

    /// Deflates the words `range` of `window` as one block (the last of the stream if `last`:
    /// the input then ends with `window`); every whole byte written goes to `out`. Words are
    /// 64 bytes of `window` from its start; the parse needs the 64 bytes before `range` (the
    /// match distance back, and the byte before a literal) and, unless `last`, the word after
    /// it (whole). The first block's codes come from its first [`SAMPLE_WORDS`] words,
    /// counted by encoding them (with codes from no counts) into a scratch buffer.
    pub(crate) fn block(
        &mut self,
        window: &[u8],
        range: Range<usize>,
        last: bool,
        out: &mut Vec<u8>,
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("bmi1")
            && std::arch::is_x86_feature_detected!("bmi2")
        {
            // SAFETY: the CPU has BMI1 and BMI2 (checked just above), all `block_bmi` needs
            // beyond x86-64.
            unsafe { self.block_bmi(window, range, last, out) };
            return;
        }
        self.block_any(window, range, last, out);
    }

    /// [`Deflater::block_any`] compiled with BMI1 and BMI2 (`tzcnt`, `blsr`, and shifts by a
    /// register without `cl`: about a sixth fewer instructions in the parse's loop); the same
    /// bytes.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "bmi1,bmi2")]
    fn block_bmi(&mut self, window: &[u8], range: Range<usize>, last: bool, out: &mut Vec<u8>) {
        self.block_any(window, range, last, out);
    }

    /// [`Deflater::block`] for any CPU.
    #[inline(always)]
    fn block_any(&mut self, window: &[u8], range: Range<usize>, last: bool, out: &mut Vec<u8>) {
        let d = self.d;
        let parse = match &mut self.parse {
            Some(p) => p,
            None => {
                let sample = window.len().div_ceil(64).min(SAMPLE_WORDS);
                let mut scratch = Vec::with_capacity(sample * 64);
                let bits = self.enc.begin_block(
                    &[0; TABLE],
                    Bits::default(),
                    &mut scratch,
                    self.dist,
                    false,
                );
                Parse::new(window, d).run(window, 0..sample, &mut self.enc, bits, &mut scratch);
                self.counts = self.enc.counts();
                self.parse.insert(Parse::new(window, d))
            }
        };
        let mut bits = self
            .enc
            .begin_block(&self.counts, self.bits, out, self.dist, last);
        bits = parse.run(window, range, &mut self.enc, bits, out);
        if last {
            bits = parse.finish(window, &mut self.enc, bits, out);
        }
        bits = self.enc.end_block(bits, out);
        self.counts = self.enc.counts();
        if last {
            bits.finish(&self.enc.stage, out);
            bits = Bits::default();
        } else {
            append(out, &self.enc.stage[..bits.staged as usize]);
            bits.staged = 0;
        }
        self.bits = bits;
    }

    /// The window moves on by `by` bytes (a multiple of 64): what was at `by` is now at 0.
    pub(crate) fn shift(&mut self, by: usize) {
        debug_assert!(by.is_multiple_of(64));
        if let Some(p) = &mut self.parse {
            // the pending token may start before the new window (a long run): positions are
            // taken modulo 2^64, and only its last bytes are read
            p.start = p.start.wrapping_sub(by);
        }
    }
}

/// The distance code of the line length, its extra bits and their value (RFC 1951 §3.2.5).
#[derive(Clone, Copy)]
struct Distance {
    code: usize,
    extra_bits: u32,
    extra: u64,
}

impl Distance {
    fn new(d: usize) -> Self {
        let code = DIST_BASE
            .iter()
            .rposition(|&b| usize::from(b) <= d)
            .unwrap_or(0);
        Distance {
            code,
            extra_bits: u32::from(DIST_EXTRA[code]),
            extra: (d - usize::from(DIST_BASE[code])) as u64,
        }
    }
}

/// The greedy parse of `data` at distance `d` (a match wherever 3 or more bytes equal those `d`
/// back, as long as they do, at most 258; else a literal), word by word, each token written
/// as soon as it is known.
///
/// Per word of 64 positions: `m` marks the positions whose byte equals the one `d` back, `s`
/// those where three such begin, `c` those a run of 3 or more covers. A token starts wherever
/// `c` does not continue from the position before (`t`), so the tokens are the set bits of `t`
/// in order, each as long as the distance to the next. Carries between words: `m` of the next
/// word (for `s`), `s` and `c` of the one before (for `c` and `t`), and the start of the token
/// whose end is not yet known.
struct Parse {
    d: usize,
    m_next: u64,
    s_prev: u64,
    c_prev: u64,
    start: usize,
}

impl Parse {
    /// The parse of input starting at `data` (its first word's mask).
    fn new(data: &[u8], d: usize) -> Self {
        Parse {
            d,
            m_next: eq_word(data, d, 0),
            s_prev: 0,
            c_prev: 0,
            start: 0,
        }
    }

    /// Writes the tokens that end in the words `range` of `data` (the next words in order), in
    /// order. `data` ends with the input, or a whole word after `range`.
    #[inline(always)]
    fn run(
        &mut self,
        data: &[u8],
        range: Range<usize>,
        enc: &mut Encoder,
        bits: Bits,
        out: &mut Vec<u8>,
    ) -> Bits {
        let (d, n, words) = (self.d, data.len(), data.len().div_ceil(64));
        let (mut m_next, mut s_prev, mut c_prev) = (self.m_next, self.s_prev, self.c_prev);
        let mut start = self.start;
        // the writer's state as plain values (see [`Bits`])
        let mut state = (bits.acc, bits.n, bits.staged);
        for w in range {
            let base = w * 64;
            let m = m_next;
            m_next = if w + 1 < words {
                eq_word(data, d, base + 64)
            } else {
                0
            };
            let s = m & (m >> 1 | m_next << 63) & (m >> 2 | m_next << 62);
            let c = s | (s << 1 | s_prev >> 63) | (s << 2 | s_prev >> 62);
            let mut t = !(c & (c << 1 | c_prev >> 63));
            (s_prev, c_prev) = (s, c);
            if w == 0 {
                t &= !1; // position 0 is `start`
            }
            if n - base < 64 {
                t &= (1u64 << (n - base)) - 1;
            }
            // the word's bytes, after the one before it: a literal ending at `base + i` is
            // `bytes[i]`, found without a bounds check (i < 64)
            let mut bytes = [0u8; 65];
            if let Some(word) = data.get(base..base + 64) {
                bytes[1..].copy_from_slice(word);
            } else {
                bytes[1..1 + n - base].copy_from_slice(&data[base..]);
            }
            if base > 0 {
                bytes[0] = data[base - 1];
            }
            while t != 0 {
                let i = t.trailing_zeros() as usize;
                t &= t - 1;
                let p = base + i;
                let len = p.wrapping_sub(start); // `start` may be before the window
                if len > MAX_MATCH {
                    let (acc, n, staged) = state;
                    let b = long_run(data, start, p, enc, Bits { acc, n, staged }, out);
                    state = (b.acc, b.n, b.staged);
                } else {
                    let literal = usize::from(bytes[i]);
                    let token = if len == 1 { literal } else { 256 + len } & (TABLE - 1);
                    let [e, count] = &mut enc.table[token];
                    *count += 1;
                    let e = *e;
                    state = put_bits(&mut enc.stage, state, e >> 8, u32::from(e as u8));
                }
                start = p;
            }
            if state.2 as usize > STAGE - STAGE_ROOM {
                append(out, &enc.stage[..state.2 as usize]);
                state.2 = 0;
            }
        }
        (self.m_next, self.s_prev, self.c_prev, self.start) = (m_next, s_prev, c_prev, start);
        Bits {
            acc: state.0,
            n: state.1,
            staged: state.2,
        }
    }

    /// Writes the last token (once every word of `data`, which ends the input, has been run).
    fn finish(&mut self, data: &[u8], enc: &mut Encoder, bits: Bits, out: &mut Vec<u8>) -> Bits {
        let (start, n) = (self.start, data.len());
        self.start = n;
        if start != n {
            long_run(data, start, n, enc, bits, out)
        } else {
            bits
        }
    }
}

/// Writes the tokens of `data[start..end]`, a token's bytes (one literal, or a run of 2 bytes or
/// more equal to those `d` back, which the parse makes 3 or more) as the greedy parse takes them:
/// a literal if one byte, else matches of 258 while 3 bytes or more are left, then a match of
/// the rest, or one or two literals. Out of the parse's loop (state in and out by value), so
/// that the loop's state stays in registers. Only the last two bytes are read: `start` may be
/// before `data` (a run longer than the window, [`Deflater::shift`]), modulo 2^64.
#[cold]
#[inline(never)]
fn long_run(
    data: &[u8],
    mut start: usize,
    end: usize,
    enc: &mut Encoder,
    mut bits: Bits,
    out: &mut Vec<u8>,
) -> Bits {
    if end.wrapping_sub(start) == 1 {
        bits.room(&enc.stage, out);
        enc.token(&mut bits, usize::from(data[start]));
        return bits;
    }
    while end.wrapping_sub(start) >= 3 {
        let len = end.wrapping_sub(start).min(MAX_MATCH);
        bits.room(&enc.stage, out);
        enc.token(&mut bits, 256 + len);
        start = start.wrapping_add(len);
    }
    for &b in &data[start..end] {
        bits.room(&enc.stage, out);
        enc.token(&mut bits, usize::from(b));
    }
    bits
}

/// Bit `k` set if `data[base + k] == data[base + k - d]` (positions before `d` or past the end:
/// clear).
#[inline(always)]
fn eq_word(data: &[u8], d: usize, base: usize) -> u64 {
    match data.get(base.wrapping_sub(d)..base + 64) {
        Some(window) if base >= d => eq_word_window(window, d),
        _ => eq_word_edge(data, d, base),
    }
}

/// [`eq_word`] one byte at a time, for the words at the ends of `data`.
#[cold]
fn eq_word_edge(data: &[u8], d: usize, base: usize) -> u64 {
    let mut m = 0;
    for k in 0..64 {
        let p = base + k;
        if p >= d && p < data.len() && data[p] == data[p - d] {
            m |= 1 << k;
        }
    }
    m
}

/// Bit `k` set if `window[d + k] == window[k]`, for `k` in 0..64 (`window` is `d + 64` bytes).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn eq_word_window(window: &[u8], d: usize) -> u64 {
    use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8};
    assert!(window.len() >= d + 64);
    let p = window.as_ptr();
    let mut m = 0u64;
    for j in 0..4 {
        // SAFETY: window.len() >= d + 64 (checked above), so the 16 bytes at 16 * j and at
        // d + 16 * j are inside it; `_mm_loadu_si128` takes any alignment. SSE2 is part of
        // x86-64, so its instructions are always there.
        let bits = unsafe {
            let a = _mm_loadu_si128(p.add(16 * j).cast::<__m128i>());
            let b = _mm_loadu_si128(p.add(d + 16 * j).cast::<__m128i>());
            _mm_movemask_epi8(_mm_cmpeq_epi8(a, b)) as u32 & 0xffff
        };
        m |= u64::from(bits) << (16 * j);
    }
    m
}

/// [`eq_word_window`] without vector instructions: eight bytes at a time, exact (no carries
/// between bytes).
#[cfg(any(not(target_arch = "x86_64"), test))]
fn eq_word_window_swar(window: &[u8], d: usize) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&window[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let mut m = 0u64;
    for j in 0..8 {
        let x = word(8 * j) ^ word(d + 8 * j);
        // the top bit of each byte set where the byte of `x` is zero
        let zero = !(((x & LOW7) + LOW7) | x | LOW7);
        // gather the eight top bits into one byte
        m |= (((zero >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56) << (8 * j);
    }
    m
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn eq_word_window(window: &[u8], d: usize) -> u64 {
    eq_word_window_swar(window, d)
}

/// The length code index (0..29) of match length `len` (3..=258).
fn len_index(len: usize) -> usize {
    LEN_BASE
        .iter()
        .rposition(|&b| usize::from(b) <= len)
        .unwrap_or(0)
}

/// A code table entry: the code's bits above its length in bits (the low byte).
fn entry(code: u64, len: u32) -> u64 {
    code << 8 | u64::from(len)
}

/// Bytes of the staging buffer (a power of two: positions in it are masked, not checked).
const STAGE: usize = 1024;

/// Room left in the staging buffer after [`Bits::room`]: what is put before the next call, at
/// most 65 codes of at most 15 + 5 + 15 + 4 bits (a word's tokens, and one of a long run, which
/// calls it before each of its tokens) or a block header's first 74 bits, and the eight-byte
/// store past them.
const STAGE_ROOM: usize = 65 * 39 / 8 + 16;

/// The bit writer's state: bits not yet a whole byte (fewer than 8 between calls) and how many,
/// and the bytes staged. Passed by value, never by address, and 16 bytes (two registers in calls
/// and returns), so that it stays in registers in the parse's loop.
#[derive(Clone, Copy, Default)]
struct Bits {
    acc: u64,
    n: u32,
    staged: u32,
}

impl Bits {
    /// Appends the low `n` (≤ 56) bits of `value` (no bits above them set) to `stage`, as
    /// deflate packs them (least significant first), storing eight bytes at a time.
    #[inline(always)]
    fn put(&mut self, stage: &mut [u8; STAGE + 8], value: u64, n: u32) {
        (self.acc, self.n, self.staged) =
            put_bits(stage, (self.acc, self.n, self.staged), value, n);
    }

    /// Moves the staged bytes to `out` if [`STAGE_ROOM`] bytes might not fit after them.
    #[inline(always)]
    fn room(&mut self, stage: &[u8; STAGE + 8], out: &mut Vec<u8>) {
        if self.staged as usize > STAGE - STAGE_ROOM {
            append(out, &stage[..self.staged as usize]);
            self.staged = 0;
        }
    }

    /// Moves the staged bytes to `out`, and the last bits padded with zeros to a byte.
    fn finish(self, stage: &[u8; STAGE + 8], out: &mut Vec<u8>) {
        append(out, &stage[..self.staged as usize]);
        if self.n > 0 {
            out.push(self.acc as u8);
        }
    }
}

/// [`Bits::put`] on the state's parts, as plain values (which the parse's loop keeps in
/// registers).
#[inline(always)]
fn put_bits(
    stage: &mut [u8; STAGE + 8],
    (acc, bits, staged): (u64, u32, u32),
    value: u64,
    n: u32,
) -> (u64, u32, u32) {
    let acc = acc | value << bits;
    let bits = bits + n;
    debug_assert!((staged as usize) < STAGE, "staging buffer overrun");
    let at = staged as usize & (STAGE - 1);
    stage[at..at + 8].copy_from_slice(&acc.to_le_bytes());
    let whole = bits >> 3;
    (acc >> (whole * 8), bits & 7, staged + whole)
}

/// `out.extend_from_slice(bytes)`, not inlined (once every few hundred tokens).
#[inline(never)]
fn append(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
}

/// The current block's codes and counts, and the staging buffer the codes are written to.
struct Encoder {
    stage: [u8; STAGE + 8],
    /// The block's code of each token ([`entry`]) and its count so far, side by side (one
    /// cache line, and no false store-to-load dependency between two tables 4 KiB apart).
    table: [[u64; 2]; TABLE],
    /// The block's code of the end of block.
    end_of_block: u64,
}

impl Encoder {
    fn new() -> Self {
        Encoder {
            stage: [0; STAGE + 8],
            table: [[0; 2]; TABLE],
            end_of_block: 0,
        }
    }

    /// Writes a token and counts it.
    #[inline(always)]
    fn token(&mut self, bits: &mut Bits, token: usize) {
        let [e, count] = &mut self.table[token & (TABLE - 1)];
        *count += 1;
        let e = *e;
        bits.put(&mut self.stage, e >> 8, u32::from(e as u8));
    }

    /// Each token's count since the block began.
    fn counts(&self) -> [u64; TABLE] {
        let mut counts = [0; TABLE];
        for (c, [_, n]) in counts.iter_mut().zip(&self.table) {
            *c = *n;
        }
        counts
    }

    /// Starts a dynamic-Huffman block whose codes come from the token counts `freq` (each
    /// counted once more, so that every token has a code), matches at distance `dist`: writes
    /// its header, makes its code table, and clears the counts.
    fn begin_block(
        &mut self,
        freq: &[u64; TABLE],
        mut bits: Bits,
        out: &mut Vec<u8>,
        dist: Distance,
        last: bool,
    ) -> Bits {
        // (a block has at most 2^22 tokens: u32 counts do not overflow)
        let mut lit_freq = [1u32; 286];
        for (f, &n) in lit_freq.iter_mut().zip(&freq[..256]) {
            *f += n as u32;
        }
        let mut matches = 0u32;
        for (len, &n) in freq.iter().enumerate().take(TOKENS).skip(256 + 3) {
            lit_freq[257 + len_index(len - 256)] += n as u32;
            matches += n as u32;
        }
        lit_freq[256] = 1; // end of block
        let mut dist_freq = [0u32; 30];
        dist_freq[dist.code] = matches.saturating_add(1);
        dist_freq[if dist.code == 0 { 1 } else { 0 }] = 1;
        let lit_len = huffman_lengths(&lit_freq, 15);
        let dist_len = huffman_lengths(&dist_freq, 15);
        let lit_code = canonical_codes(&lit_len);
        let dist_code = canonical_codes(&dist_len);
        let nlit = 257.max(lit_len.iter().rposition(|&l| l > 0).map_or(0, |p| p + 1));
        let ndist = 1.max(dist_len.iter().rposition(|&l| l > 0).map_or(0, |p| p + 1));

        // the code lengths, written with the code-length code (no run-length symbols)
        let mut clen_freq = [0u32; 19];
        for &l in lit_len[..nlit].iter().chain(&dist_len[..ndist]) {
            clen_freq[usize::from(l)] += 1;
        }
        if clen_freq.iter().filter(|&&f| f > 0).count() < 2 {
            clen_freq[if clen_freq[0] == 0 { 0 } else { 1 }] = 1;
        }
        let clen_len = huffman_lengths(&clen_freq, 7);
        let clen_code = canonical_codes(&clen_len);
        let nclen = 4.max(
            CLEN_ORDER
                .iter()
                .rposition(|&s| clen_len[s] > 0)
                .map_or(0, |p| p + 1),
        );
        let stage = &mut self.stage;
        bits.room(stage, out);
        bits.put(stage, u64::from(last), 1);
        bits.put(stage, 2, 2); // dynamic Huffman
        bits.put(stage, (nlit - 257) as u64, 5);
        bits.put(stage, (ndist - 1) as u64, 5);
        bits.put(stage, (nclen - 4) as u64, 4);
        for &s in &CLEN_ORDER[..nclen] {
            bits.put(stage, u64::from(clen_len[s]), 3);
        }
        for &l in lit_len[..nlit].iter().chain(&dist_len[..ndist]) {
            let s = usize::from(l);
            bits.room(stage, out);
            bits.put(stage, u64::from(clen_code[s]), u32::from(clen_len[s]));
        }

        // each token's whole code: a literal's, or a match's length code, its extra bits, the
        // distance code and its extra bits (at most 15 + 5 + 15 + 4 bits)
        self.table = [[0; 2]; TABLE];
        for t in 0..256 {
            self.table[t] = [entry(u64::from(lit_code[t]), u32::from(lit_len[t])), 0];
        }
        for len in 3..=MAX_MATCH {
            let k = len_index(len);
            let s = 257 + k;
            let mut code = u64::from(lit_code[s]);
            let mut n = u32::from(lit_len[s]);
            code |= ((len - usize::from(LEN_BASE[k])) as u64) << n;
            n += u32::from(LEN_EXTRA[k]);
            code |= u64::from(dist_code[dist.code]) << n;
            n += u32::from(dist_len[dist.code]);
            code |= dist.extra << n;
            n += dist.extra_bits;
            self.table[256 + len] = [entry(code, n), 0];
        }
        self.end_of_block = entry(u64::from(lit_code[256]), u32::from(lit_len[256]));
        bits
    }

    /// Ends the block: writes its end code.
    fn end_block(&mut self, mut bits: Bits, out: &mut Vec<u8>) -> Bits {
        let e = self.end_of_block;
        bits.room(&self.stage, out);
        bits.put(&mut self.stage, e >> 8, u32::from(e as u8));
        bits
    }
}

/// Huffman code lengths for `freq` (symbols with frequency 0 get none), none longer than
/// `limit`: when the optimal code is too deep, the frequencies are halved (keeping every used
/// symbol at least 1) until it fits. Ties are broken by symbol, so the result is deterministic.
fn huffman_lengths(freq: &[u32], limit: u8) -> Vec<u8> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut f: Vec<u64> = freq.iter().map(|&x| u64::from(x)).collect();
    loop {
        let mut lengths = vec![0u8; f.len()];
        let used: Vec<usize> = (0..f.len()).filter(|&s| f[s] > 0).collect();
        if used.len() == 1 {
            lengths[used[0]] = 1;
            return lengths;
        }
        // nodes 0..n are the symbols, then the internal nodes; parent links give the depths
        let mut parent = vec![usize::MAX; 2 * f.len()];
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> =
            used.iter().map(|&s| Reverse((f[s], s))).collect();
        let mut next = f.len();
        while heap.len() > 1 {
            let (Some(Reverse((wa, a))), Some(Reverse((wb, b)))) = (heap.pop(), heap.pop()) else {
                break;
            };
            parent[a] = next;
            parent[b] = next;
            heap.push(Reverse((wa + wb, next)));
            next += 1;
        }
        let mut deepest = 0u8;
        for &s in &used {
            let (mut depth, mut node) = (0u8, s);
            while parent[node] != usize::MAX {
                node = parent[node];
                depth = depth.saturating_add(1);
            }
            lengths[s] = depth;
            deepest = deepest.max(depth);
        }
        if deepest <= limit {
            return lengths;
        }
        for x in f.iter_mut().filter(|x| **x > 0) {
            *x = (*x).div_ceil(2);
        }
    }
}

/// Canonical Huffman codes (RFC 1951 §3.2.2) of `lengths`, bit-reversed for an LSB-first writer.
fn canonical_codes(lengths: &[u8]) -> Vec<u32> {
    let mut count = [0u32; 16];
    for &l in lengths {
        count[usize::from(l)] += 1;
    }
    count[0] = 0;
    let mut next = [0u32; 16];
    let mut code = 0u32;
    for bits in 1..16 {
        code = (code + count[bits - 1]) << 1;
        next[bits] = code;
    }
    lengths
        .iter()
        .map(|&l| {
            if l == 0 {
                return 0;
            }
            let c = next[usize::from(l)];
            next[usize::from(l)] += 1;
            c.reverse_bits() >> (32 - u32::from(l))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn inflate(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(raw)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// Decodes `raw` with libdeflate (whole-buffer, strict: the output must be exactly `len`
    /// bytes).
    fn inflate_libdeflate(raw: &[u8], len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let n = libdeflater::Decompressor::new()
            .deflate_decompress(raw, &mut out)
            .unwrap();
        assert_eq!(n, len, "libdeflate decoded {n} of {len} bytes");
        out
    }

    /// Deflates `data` at distance `d`, checks that flate2 (zlib-rs) and libdeflate both decode
    /// it back, and returns the compressed size.
    fn round_trip(data: &[u8], d: usize) -> usize {
        let mut raw = Vec::new();
        deflate(data, d, &mut raw);
        assert_eq!(inflate(&raw), data, "flate2: d={d}, {} bytes", data.len());
        assert_eq!(
            inflate_libdeflate(&raw, data.len()),
            data,
            "libdeflate: d={d}, {} bytes",
            data.len()
        );
        raw.len()
    }

    /// Sorted `.dat` lines of numbers `step` apart: `NNNNNNNNNN,\r\n`.
    fn dat(lines: u64, step: u64) -> Vec<u8> {
        (0..lines)
            .flat_map(|i| format!("{:010},\r\n", 4_000_000_000 + i * step).into_bytes())
            .collect()
    }

    #[test]
    fn dat_lines_round_trip_small() {
        let data = dat(200_000, 47);
        assert_eq!(line_length(&data), Some(13));
        let n = round_trip(&data, 13);
        assert!(n < data.len() / 5, "{n} of {}", data.len());
        // cut mid-line at both ends, as chunks are
        let cut = &data[5..data.len() - 7];
        assert_eq!(line_length(cut), Some(13));
        round_trip(cut, 13);
    }

    #[test]
    fn several_blocks_and_long_runs() {
        // more tokens than one block holds, and a run of identical lines (matches of 258)
        let mut data = dat(600_000, 3);
        data.extend(std::iter::repeat_n(&b"9990000000,\r\n"[..], 5_000).flatten());
        data.extend(dat(1000, 1_000_003));
        round_trip(&data, 13);
    }

    #[test]
    fn any_bytes_round_trip_at_any_distance() {
        let mut rng = crate::XorShift(0x9e37_79b9_7f4a_7c15u64);
        let mut noise = || rng.next();
        for len in [0usize, 1, 2, 3, 12, 13, 14, 100, 4096, 70_000] {
            // random bytes from a small alphabet (some matches), and fully random ones
            let small: Vec<u8> = (0..len)
                .map(|_| b"01\r\n"[(noise() % 4) as usize])
                .collect();
            let full: Vec<u8> = (0..len).map(|_| noise() as u8).collect();
            for d in [3, 4, 12, 13, MAX_LINE] {
                round_trip(&small, d);
                round_trip(&full, d);
            }
        }
        round_trip(&[b'a'; 100_000], 3);
        round_trip(&[0u8; 1000], 13);
    }

    #[test]
    fn huffman_lengths_respect_the_limit_and_are_complete() {
        // Fibonacci frequencies force a deep optimal tree
        let mut freq = vec![0u32; 40];
        let (mut a, mut b) = (1u32, 1u32);
        for f in freq.iter_mut().take(30) {
            *f = a;
            (a, b) = (b, a.saturating_add(b));
        }
        for limit in [7u8, 15] {
            let l = huffman_lengths(&freq, limit);
            assert!(l.iter().all(|&x| x <= limit));
            assert!(l[..30].iter().all(|&x| x > 0) && l[30..].iter().all(|&x| x == 0));
            // Kraft sum exactly 1: a complete code
            let kraft: f64 = l
                .iter()
                .filter(|&&x| x > 0)
                .map(|&x| 0.5f64.powi(x.into()))
                .sum();
            assert!((kraft - 1.0).abs() < 1e-12, "limit {limit}: {kraft}");
        }
    }

    #[test]
    fn line_length_is_the_distance_between_the_first_two_line_feeds() {
        assert_eq!(line_length(b"12\n45\n"), Some(3));
        assert_eq!(line_length(b"x\r\n1234567890,\r\n"), Some(13));
        assert_eq!(line_length(b"\n\n"), None);
        assert_eq!(line_length(b"abc\n"), None);
        assert_eq!(line_length(&[b'\n'; 1]), None);
        let long = [&b"\n"[..], &[b'x'; 64], b"\n"].concat();
        assert_eq!(line_length(&long), None);
    }

    #[test]
    fn the_plain_and_the_bmi_builds_write_the_same_bytes() {
        let mut data = dat(400_000, 7); // two blocks
        data.extend(std::iter::repeat_n(&b"9990000000,\r\n"[..], 100).flatten());
        for d in [13, 3, 64] {
            let (mut plain, mut chosen) = (Vec::new(), Vec::new());
            deflate_by(&data, d, &mut plain, Deflater::block_any);
            deflate(&data, d, &mut chosen);
            assert!(plain == chosen, "d={d}");
            assert_eq!(inflate(&plain), data);
        }
    }

    #[test]
    fn vector_scalar_and_bytewise_masks_agree() {
        let mut rng = crate::XorShift(0x2545_f491_4f6c_dd1du64);
        let mut noise = || rng.next();
        for d in [3, 4, 7, 13, 33, MAX_LINE] {
            for _ in 0..200 {
                // a small alphabet, so that about half the bytes equal the one d back
                let window: Vec<u8> = (0..d + 64).map(|_| b"01"[(noise() % 2) as usize]).collect();
                let bytewise =
                    (0..64).fold(0u64, |m, k| m | u64::from(window[d + k] == window[k]) << k);
                assert_eq!(eq_word_window(&window, d), bytewise, "d={d}");
                assert_eq!(eq_word_window_swar(&window, d), bytewise, "d={d}");
                assert_eq!(eq_word(&window, d, d), bytewise, "d={d}");
                assert_eq!(eq_word_edge(&window, d, d), bytewise, "d={d}");
            }
        }
    }

    #[test]
    fn dat_lines_compress_as_one_match_and_a_few_literals_a_line() {
        // 13-byte lines two numbers apart on average: one match (about 3 bits with its
        // distance) and two or three digit literals (3-4 bits each) a line, under 16 bits; a
        // parse that lost its matches would take over 60
        let data: Vec<u8> = (0..300_000u64)
            .flat_map(|i| format!("{:010},\r\n", 9_990_000_000 + i * 2 + i % 3 / 2).into_bytes())
            .collect();
        let n = round_trip(&data, 13);
        assert!(
            n * 8 < 300_000 * 16,
            "{n} bytes: {} bits a line",
            n * 8 / 300_000
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 64, ..Default::default() })]

        /// Line-shaped inputs (sorted numbers in lines of 3..=64 bytes, some lines that break
        /// the pattern, a cut first and last line) round-trip through flate2 and libdeflate, at
        /// their line length and at another distance.
        #[test]
        fn line_shaped_inputs_round_trip_through_flate2_and_libdeflate(
            len in 3usize..=64,
            lines in 0usize..400,
            first in 9_990_000_000u64..9_999_000_000,
            gaps in proptest::collection::vec(0u64..40, 400),
            breaks in proptest::collection::vec((0usize..400, proptest::collection::vec(proptest::num::u8::ANY, 0..80)), 0..6),
            head in 0usize..70,
            tail in 0usize..70,
            other_d in 3usize..=MAX_LINE,
        ) {
            let width = len - 1; // digits, then a line feed
            let mut n = first;
            let mut data = Vec::new();
            for (i, gap) in gaps.iter().enumerate().take(lines) {
                n += gap;
                let digits = format!("{n:0width$}");
                data.extend_from_slice(&digits.as_bytes()[digits.len() - width..]);
                data.push(b'\n');
                for (_, bytes) in breaks.iter().filter(|(at, _)| *at == i) {
                    data.extend_from_slice(bytes);
                }
            }
            let data = &data[head.min(data.len())..data.len() - tail.min(data.len().saturating_sub(head))];
            let d = line_length(data).unwrap_or(len);
            round_trip(data, d);
            round_trip(data, other_d);
        }
    }
}
