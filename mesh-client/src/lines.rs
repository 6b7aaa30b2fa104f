//! A deflate encoder for files of fixed-length lines (the POS `.dat` files: sorted NHS numbers,
//! `NNNNNNNNNN,\r\n`), several times faster than libdeflate's fastest level and a third smaller.
//!
//! Sorted lines of equal length share their leading bytes with the line before. The encoder
//! therefore looks for repeats at one distance only, the line length `d`, and parses greedily:
//! at each position, the run of bytes equal to those `d` back is a match when it is 3 bytes or
//! longer (at most 258), else the byte is one literal. A `.dat` line becomes one match (its line
//! end and the digits it shares with the line before) and a few literals (the digits that differ
//! and the check digit).
//!
//! The parse is computed 64 positions at a time, without a loop per byte: a bit mask of the
//! positions whose byte equals the one `d` back (SSE2 compares on x86-64), from which three
//! shifts give the positions covered by runs of 3 or more; every token starts where such a
//! coverage does not continue, so the tokens are the set bits of one word, taken in order (a
//! token's length is the distance to the next start: 1 is a literal, 3..=258 a match). The
//! tokens are Huffman-coded in dynamic blocks of at most [`BLOCK_TOKENS`] tokens (RFC 1951
//! §3.2.7), counted from the token buffer and written through a table of whole codes (a
//! match's length code, extra bits, distance code and extra bits in one entry) by a bit writer
//! that stores eight bytes at a time; memory is a fixed token buffer whatever the input.
//!
//! The output is standard deflate, decoded by every inflater; any input round-trips (a parse
//! with one match distance is valid for any bytes), but only line-shaped input compresses well:
//! [`crate::gzip`] uses this only when the input has a line length and the result is small, else
//! libdeflate. Deterministic: the same input gives the same bytes, on every platform (the
//! vector and scalar masks are the same bits).

/// Most tokens in one deflate block (2 MiB of token buffer).
const BLOCK_TOKENS: usize = 1 << 20;

/// Longest match (RFC 1951).
const MAX_MATCH: usize = 258;

/// Longest line length (= match distance) used.
pub(crate) const MAX_LINE: usize = 64;

/// Tokens: 0..=255 a literal byte, 256 + n a match of n bytes (3..=258) at the line distance.
const TOKENS: usize = 256 + MAX_MATCH + 1;

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
    assert!((3..=MAX_LINE).contains(&d), "line length {d} out of range");
    let dist = Distance::new(d);
    let mut w = BitWriter::new(out);
    let mut tokens = vec![0u16; BLOCK_TOKENS.min(data.len()) + WORD_TOKENS];
    let left = tokenize(data, d, &mut tokens, |block| {
        write_block(&mut w, block, dist, false)
    });
    let mut blocks = tokens[..left].chunks(BLOCK_TOKENS).peekable();
    while let Some(block) = blocks.next() {
        write_block(&mut w, block, dist, blocks.peek().is_none());
    }
    if left == 0 {
        write_block(&mut w, &[], dist, true);
    }
    w.finish();
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

/// Room in the token buffer for one word's tokens (one a position, and the one pending).
const WORD_TOKENS: usize = 64 + 1;

/// Puts into `tokens` the greedy parse of `data` at distance `d` (a match wherever 3 or more
/// bytes equal those `d` back, as long as they do, at most 258; else a literal), handing each
/// block of [`BLOCK_TOKENS`] tokens to `block` as soon as one more follows it; returns how many
/// tokens are left in `tokens` (the last block, or several if a long run came at the end).
/// `tokens` holds at least `BLOCK_TOKENS + WORD_TOKENS` (or the input's length + that) tokens,
/// and grows only for runs longer than one match.
///
/// Per word of 64 positions: `m` marks the positions whose byte equals the one `d` back, `s`
/// those where three such begin, `c` those a run of 3 or more covers. A token starts wherever
/// `c` does not continue from the position before (`t`), so the tokens are the set bits of `t`
/// in order, each as long as the distance to the next. Carries between words: `m` of the next
/// word (for `s`), `s` and `c` of the one before (for `c` and `t`).
fn tokenize(data: &[u8], d: usize, tokens: &mut Vec<u16>, mut block: impl FnMut(&[u16])) -> usize {
    let n = data.len();
    if n == 0 {
        return 0;
    }
    let words = n.div_ceil(64);
    let mut m_next = eq_word(data, d, 0);
    let (mut s_prev, mut c_prev) = (0u64, 0u64);
    // start of the token not yet put (its length is known when the next one starts)
    let mut start = 0usize;
    let mut k = 0usize;
    let mut buf = &mut tokens[..];
    for w in 0..words {
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
        while t != 0 {
            let p = base + t.trailing_zeros() as usize;
            t &= t - 1;
            let len = p - start;
            if len > MAX_MATCH {
                k = put_long_run(data, start, p, tokens, k);
                buf = &mut tokens[..];
            } else {
                let literal = u16::from(data[start]);
                buf[k] = if len == 1 { literal } else { 256 + len as u16 };
                k += 1;
            }
            start = p;
        }
        if k > BLOCK_TOKENS {
            let mut done = 0;
            while k - done > BLOCK_TOKENS {
                block(&buf[done..done + BLOCK_TOKENS]);
                done += BLOCK_TOKENS;
            }
            buf.copy_within(done..k, 0);
            k -= done;
        }
    }
    put_long_run(data, start, n, tokens, k)
}

/// Puts the tokens of `data[start..end]` at `k` in `tokens` (growing it if need be, keeping
/// [`WORD_TOKENS`] of room after them) and returns the new count: one literal if it is one byte,
/// else matches (the parse makes any run of 2 bytes or more 3 or more, all equal to those `d`
/// back) as the greedy parse takes them: 258 bytes while 3 or more are left, then a match of
/// the rest, or one or two literals.
#[cold]
fn put_long_run(
    data: &[u8],
    mut start: usize,
    end: usize,
    tokens: &mut Vec<u16>,
    mut k: usize,
) -> usize {
    let need = k + (end - start) / MAX_MATCH + 3 + WORD_TOKENS;
    if tokens.len() < need {
        tokens.resize(need, 0);
    }
    if end - start == 1 {
        tokens[k] = u16::from(data[start]);
        return k + 1;
    }
    while end - start >= 3 {
        let len = (end - start).min(MAX_MATCH);
        tokens[k] = 256 + len as u16;
        k += 1;
        start += len;
    }
    for &b in &data[start..end] {
        tokens[k] = u16::from(b);
        k += 1;
    }
    k
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

/// Size of the per-token tables: a power of two above the token values, so that an index
/// masked with `TABLE - 1` needs no bounds check.
const TABLE: usize = 1024;

/// How many times each token occurs (four tables, so that a run of one token does not wait
/// on its own count).
fn count_tokens(tokens: &[u16]) -> [u32; TOKENS] {
    let mut f = [[0u32; TABLE]; 4];
    let mut quads = tokens.chunks_exact(4);
    for q in &mut quads {
        f[0][usize::from(q[0]) & (TABLE - 1)] += 1;
        f[1][usize::from(q[1]) & (TABLE - 1)] += 1;
        f[2][usize::from(q[2]) & (TABLE - 1)] += 1;
        f[3][usize::from(q[3]) & (TABLE - 1)] += 1;
    }
    for &t in quads.remainder() {
        f[0][usize::from(t) & (TABLE - 1)] += 1;
    }
    let mut freq = [0u32; TOKENS];
    for (i, x) in freq.iter_mut().enumerate() {
        *x = f[0][i] + f[1][i] + f[2][i] + f[3][i];
    }
    freq
}

/// In a code table entry, the code's bits (low) and its length in bits (from bit 56).
const CODE_MASK: u64 = (1 << 56) - 1;

/// One dynamic-Huffman block of `tokens`, matches at distance `dist`.
fn write_block(w: &mut BitWriter<'_>, tokens: &[u16], dist: Distance, last: bool) {
    let freq = count_tokens(tokens);
    let mut lit_freq = [0u32; 286];
    lit_freq[..256].copy_from_slice(&freq[..256]);
    let mut matches = 0u32;
    for (len, &n) in freq[256..].iter().enumerate().skip(3) {
        lit_freq[257 + len_index(len)] += n;
        matches += n;
    }
    lit_freq[256] = 1; // end of block
                       // two codes at least in each alphabet, so that every code is complete
    if lit_freq.iter().filter(|&&f| f > 0).count() < 2 {
        lit_freq[if lit_freq[0] == 0 { 0 } else { 1 }] = 1;
    }
    let dcode = dist.code;
    let mut dist_freq = [0u32; 30];
    dist_freq[dcode] = matches.max(1);
    dist_freq[if dcode == 0 { 1 } else { 0 }] = 1;
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

    // the header: at most 17 + 19 * 3 + 316 * 7 bits
    w.reserve(17 + 19 * 3 + 316 * 7);
    w.put(u64::from(last), 1);
    w.put(2, 2); // dynamic Huffman
    w.put((nlit - 257) as u64, 5);
    w.put((ndist - 1) as u64, 5);
    w.put((nclen - 4) as u64, 4);
    for &s in &CLEN_ORDER[..nclen] {
        w.put(u64::from(clen_len[s]), 3);
    }
    for &l in lit_len[..nlit].iter().chain(&dist_len[..ndist]) {
        let s = usize::from(l);
        w.put(u64::from(clen_code[s]), u32::from(clen_len[s]));
    }

    // each token's whole code: a literal's, or a match's length code, its extra bits, the
    // distance code and its extra bits (at most 15 + 5 + 15 + 4 bits)
    let mut table = [0u64; TABLE];
    for (t, slot) in table.iter_mut().enumerate().take(256) {
        *slot = u64::from(lit_code[t]) | u64::from(lit_len[t]) << 56;
    }
    for len in 3..=MAX_MATCH {
        let k = len_index(len);
        let s = 257 + k;
        let mut bits = u64::from(lit_code[s]);
        let mut n = u32::from(lit_len[s]);
        bits |= ((len - usize::from(LEN_BASE[k])) as u64) << n;
        n += u32::from(LEN_EXTRA[k]);
        bits |= u64::from(dist_code[dcode]) << n;
        n += u32::from(dist_len[dcode]);
        bits |= dist.extra << n;
        n += dist.extra_bits;
        table[256 + len] = bits | u64::from(n) << 56;
    }
    let body: u64 = freq
        .iter()
        .zip(&table)
        .map(|(&f, &e)| u64::from(f) * (e >> 56))
        .sum();
    w.reserve(body + 15);
    let longest = freq
        .iter()
        .zip(&table)
        .filter(|(&f, _)| f > 0)
        .map(|(_, &e)| e >> 56)
        .max()
        .unwrap_or(0);
    w.put_tokens(tokens, &table, longest);
    w.put(u64::from(lit_code[256]), u32::from(lit_len[256]));
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

/// Writes bits least significant first, as deflate packs them: into `out` from `pos`, eight
/// bytes at a time (the bytes past `pos` are scratch until [`BitWriter::finish`] trims them).
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    /// Bytes of `out` complete.
    pos: usize,
    /// Bits not yet complete (fewer than 8 between calls), and how many.
    acc: u64,
    bits: u32,
}

impl<'a> BitWriter<'a> {
    /// Appends to `out`.
    fn new(out: &'a mut Vec<u8>) -> Self {
        let pos = out.len();
        BitWriter {
            out,
            pos,
            acc: 0,
            bits: 0,
        }
    }

    /// Makes room for `bits` more bits (and the eight-byte stores' slack).
    fn reserve(&mut self, bits: u64) {
        let need = self.pos + (bits / 8) as usize + 16;
        if self.out.len() < need {
            self.out.resize(need, 0);
        }
    }

    /// Appends the low `n` (≤ 56) bits of `value` (no bits above them set), room reserved.
    #[inline(always)]
    fn put(&mut self, value: u64, n: u32) {
        (self.pos, self.acc, self.bits) =
            put_bits(self.out, self.pos, self.acc, self.bits, value, n);
    }

    /// Appends the code of each token from `table` (code | length << 56), room reserved.
    /// Two tokens at a time when no two codes make more than 56 bits (always on `.dat` lines:
    /// literals take at most 15, a match at the line distance about 20).
    /// `longest`: the longest code of the tokens.
    fn put_tokens(&mut self, tokens: &[u16], table: &[u64; TABLE], longest: u64) {
        let out = &mut self.out[..];
        let (mut pos, mut acc, mut bits) = (self.pos, self.acc, self.bits);
        let entry = |t: u16| table[usize::from(t) & (TABLE - 1)];
        let mut rest = tokens;
        if longest <= 28 {
            let mut pairs = tokens.chunks_exact(2);
            for pair in &mut pairs {
                let (a, b) = (entry(pair[0]), entry(pair[1]));
                let n = (a >> 56) as u32;
                let code = (a & CODE_MASK) | (b & CODE_MASK) << n;
                (pos, acc, bits) = put_bits(out, pos, acc, bits, code, n + (b >> 56) as u32);
            }
            rest = pairs.remainder();
        }
        for &t in rest {
            let e = entry(t);
            (pos, acc, bits) = put_bits(out, pos, acc, bits, e & CODE_MASK, (e >> 56) as u32);
        }
        (self.pos, self.acc, self.bits) = (pos, acc, bits);
    }

    /// Pads the last byte with zero bits and trims `out` to the bytes written.
    fn finish(self) {
        let mut end = self.pos;
        if self.bits > 0 {
            self.out[end] = self.acc as u8;
            end += 1;
        }
        self.out.truncate(end);
    }
}

/// One append of [`BitWriter::put`] on its parts: stores all pending bits (eight bytes, whole
/// or not) at `pos` and moves on by the whole bytes.
#[inline(always)]
fn put_bits(
    out: &mut [u8],
    pos: usize,
    acc: u64,
    bits: u32,
    value: u64,
    n: u32,
) -> (usize, u64, u32) {
    let acc = acc | value << bits;
    let bits = bits + n;
    out[pos..pos + 8].copy_from_slice(&acc.to_le_bytes());
    let whole = bits >> 3;
    (pos + whole as usize, acc >> (whole * 8), bits & 7)
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

    fn round_trip(data: &[u8], d: usize) -> usize {
        let mut raw = Vec::new();
        deflate(data, d, &mut raw);
        assert_eq!(inflate(&raw), data, "d={d}, {} bytes", data.len());
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
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut noise = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
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
}
