//! A deflate encoder for files of fixed-length lines (the POS `.dat` files: sorted NHS numbers,
//! `NNNNNNNNNN,\r\n`), twice as fast as libdeflate's fastest level and a third smaller.
//!
//! Sorted lines of equal length share their leading bytes with the line before. The encoder
//! therefore looks for repeats at one distance only, the line length `d`: at each position it
//! compares the bytes with those `d` back (eight at a time) and emits a match of that run when
//! it is 3 bytes or longer, else one literal. A `.dat` line becomes one match (its line end and
//! the digits it shares with the line before) and a few literals (the digits that differ and
//! the check digit). The tokens are Huffman-coded in dynamic blocks of at most
//! [`BLOCK_TOKENS`] tokens (RFC 1951 §3.2.7), so memory is a fixed token buffer whatever the
//! input. The output is standard deflate, decoded by every inflater; any input round-trips
//! (a parse with one match distance is valid for any bytes), but only line-shaped input
//! compresses well: [`crate::gzip`] uses this only when the input has a line length and the
//! result is small, else libdeflate. Deterministic: the same input gives the same bytes.

/// Most tokens in one deflate block (4 MiB of token buffer).
const BLOCK_TOKENS: usize = 1 << 20;

/// Longest line length (= match distance) used.
pub(crate) const MAX_LINE: usize = 64;

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
    let mut w = BitWriter {
        out,
        acc: 0,
        bits: 0,
    };
    let dcode = DIST_BASE
        .iter()
        .rposition(|&b| usize::from(b) <= d)
        .unwrap_or(0);
    let dextra = (d - usize::from(DIST_BASE[dcode])) as u32;
    let mut tokens: Vec<u32> = Vec::with_capacity(BLOCK_TOKENS.min(data.len() + 1));
    let mut i = 0;
    loop {
        tokens.clear();
        // literal and match-length counts, gathered as the tokens are made
        let mut freq = [0u32; 256 + 259];
        while i < data.len() && tokens.len() < BLOCK_TOKENS {
            let run = if i >= d {
                common_prefix(data, i - d, i, (data.len() - i).min(258))
            } else {
                0
            };
            let t = if run >= 3 {
                i += run;
                256 + run as u32
            } else {
                i += 1;
                u32::from(data[i - 1])
            };
            tokens.push(t);
            freq[t as usize] += 1;
        }
        let last = i >= data.len();
        write_block(
            &mut w,
            &tokens,
            &freq,
            (dcode, DIST_EXTRA[dcode], dextra),
            last,
        );
        if last {
            break;
        }
    }
    w.finish();
}

/// Length of the common prefix of `data[a..]` and `data[b..]`, at most `max` (a < b, b + max
/// ≤ len).
#[inline]
fn common_prefix(data: &[u8], a: usize, b: usize, max: usize) -> usize {
    let mut k = 0;
    while k + 8 <= max {
        let x = u64::from_le_bytes(data[a + k..a + k + 8].try_into().unwrap_or([0; 8]));
        let y = u64::from_le_bytes(data[b + k..b + k + 8].try_into().unwrap_or([0; 8]));
        let diff = x ^ y;
        if diff != 0 {
            return k + (diff.trailing_zeros() / 8) as usize;
        }
        k += 8;
    }
    while k < max && data[a + k] == data[b + k] {
        k += 1;
    }
    k
}

/// The length code index (0..29) of match length `len` (3..=258).
fn len_index(len: usize) -> usize {
    LEN_BASE
        .iter()
        .rposition(|&b| usize::from(b) <= len)
        .unwrap_or(0)
}

/// One dynamic-Huffman block of `tokens` (literal byte, or 256 + the length of a match at the
/// distance whose code, extra bits and their value are `dist`), counted in `freq` (by token).
fn write_block(
    w: &mut BitWriter<'_>,
    tokens: &[u32],
    freq: &[u32; 256 + 259],
    (dcode, dextra_bits, dextra): (usize, u8, u32),
    last: bool,
) {
    let mut lit_freq = [0u32; 286];
    lit_freq[..256].copy_from_slice(&freq[..256]);
    let len_freq = &freq[256..];
    let mut matches = 0u32;
    for (len, &n) in len_freq.iter().enumerate().skip(3) {
        lit_freq[257 + len_index(len)] += n;
        matches += n;
    }
    lit_freq[256] = 1; // end of block
                       // two codes at least in each alphabet, so that every code is complete
    if lit_freq.iter().filter(|&&f| f > 0).count() < 2 {
        lit_freq[if lit_freq[0] == 0 { 0 } else { 1 }] = 1;
    }
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

    w.put(u32::from(last), 1);
    w.put(2, 2); // dynamic Huffman
    w.put((nlit - 257) as u32, 5);
    w.put((ndist - 1) as u32, 5);
    w.put((nclen - 4) as u32, 4);
    for &s in &CLEN_ORDER[..nclen] {
        w.put(u32::from(clen_len[s]), 3);
    }
    for &l in lit_len[..nlit].iter().chain(&dist_len[..ndist]) {
        let s = usize::from(l);
        w.put(clen_code[s], u32::from(clen_len[s]));
    }

    // a match's whole code (length code, its extra bits, distance code, its extra bits) by length
    let mut match_code = [(0u64, 0u32); 259];
    for (len, slot) in match_code.iter_mut().enumerate().skip(3) {
        let k = len_index(len);
        let s = 257 + k;
        let mut bits = u64::from(lit_code[s]);
        let mut n = u32::from(lit_len[s]);
        bits |= ((len - usize::from(LEN_BASE[k])) as u64) << n;
        n += u32::from(LEN_EXTRA[k]);
        bits |= u64::from(dist_code[dcode]) << n;
        n += u32::from(dist_len[dcode]);
        bits |= u64::from(dextra) << n;
        n += u32::from(dextra_bits);
        *slot = (bits, n);
    }
    for &t in tokens {
        if t < 256 {
            w.put(lit_code[t as usize], u32::from(lit_len[t as usize]));
        } else {
            let (bits, n) = match_code[(t - 256) as usize];
            w.put_long(bits, n);
        }
    }
    w.put(lit_code[256], u32::from(lit_len[256]));
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

/// Writes bits least significant first, as deflate packs them.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    bits: u32,
}

impl BitWriter<'_> {
    /// Appends the low `n` (≤ 32) bits of `value`.
    #[inline]
    fn put(&mut self, value: u32, n: u32) {
        self.acc |= u64::from(value) << self.bits;
        self.bits += n;
        if self.bits >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.bits -= 32;
        }
    }

    /// Appends the low `n` (≤ 64) bits of `value`.
    #[inline]
    fn put_long(&mut self, value: u64, n: u32) {
        if n > 32 {
            self.put(value as u32, 32);
            self.put((value >> 32) as u32, n - 32);
        } else {
            self.put(value as u32, n);
        }
    }

    /// Pads the last byte with zero bits and writes it.
    fn finish(mut self) {
        while self.bits > 0 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.bits = self.bits.saturating_sub(8);
        }
    }
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
