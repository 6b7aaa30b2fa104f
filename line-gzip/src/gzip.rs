//! Gzip of one whole chunk (section 7: each chunk is compressed on its own, never "compress then
//! split"), with libdeflate.
//!
//! A chunk is in memory whole before it is sent, so a whole-buffer compressor fits: libdeflate
//! compresses the buffer in one call, 2–4x faster than zlib-rs's streaming deflate at the same
//! size on `.dat` files (`docs/PERFORMANCE.md`, "Sending at national scale"). The result is one
//! standard gzip member (RFC 1952: header with no name and mtime 0, the deflate stream, CRC-32
//! and ISIZE), which mesh-sandbox, NHS England's `mesh-client` and every gzip reader accept.
//! The same input and level give the same bytes with the same libdeflate, so a resumed upload
//! re-sends identical chunks.
//!
//! Levels: 0 writes stored blocks (gzip framing, no compression); 1 is the line encoder of
//! [`crate::lines`] when the input is made of fixed-length lines (a `.dat` file: a quarter of the
//! CPU of libdeflate's level 1 and a third smaller, about the size of libdeflate's 10), else
//! libdeflate's 1; 2–9 are libdeflate's levels of the same numbers (greedy/lazy parsing up to
//! 9); libdeflate's 10–12 (near-optimal parsing, several times slower) are accepted here for
//! benchmarks but not by mesh-client's `ClientConfig`, which keeps MESH's 0–9.
//!
//! [`GzipLines`] is the line encoder as a stream, for content made a piece at a time (the mock
//! POS's result): one gzip member whatever the pieces, in the same bytes as [`gzip`] at level 1
//! gives a line-shaped input whole, with memory bounded by one deflate block of input.

use libdeflater::{CompressionLvl, Compressor, Crc};

use crate::lines::{line_length, Deflater, BLOCK_WORDS};

/// The gzip header (RFC 1952) as libdeflate writes it: deflate, no name, mtime 0, XFL 4
/// (fastest), OS unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 0xff];

/// Highest level [`gzip`] takes (libdeflate's own maximum).
pub const MAX_GZIP_LEVEL: u32 = 12;

/// Compresses `data` as one gzip member at `level` (0 stored, 1 fastest … 12 smallest).
///
/// Memory: the output buffer is reserved at libdeflate's bound (slightly more than `data`) but
/// zero-filled lazily by the allocator (a fresh mapping for buffers this large), so only the
/// pages the compressed bytes reach are touched; it is shrunk to the compressed size before
/// being returned.
pub fn gzip(data: &[u8], level: u32) -> std::io::Result<Vec<u8>> {
    if level == 1 {
        if let Some(gz) = gzip_lines(data) {
            return Ok(gz);
        }
    }
    let lvl = i32::try_from(level)
        .ok()
        .and_then(|l| CompressionLvl::new(l).ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("gzip level {level} is outside 0..={MAX_GZIP_LEVEL}"),
            )
        })?;
    let mut compressor = Compressor::new(lvl);
    let bound = compressor.gzip_compress_bound(data.len());
    let mut out = vec![0u8; bound];
    let written = compressor.gzip_compress(data, &mut out).map_err(|e| {
        // cannot happen with a buffer of the bound's size; an error, not a panic, if it does
        std::io::Error::other(format!(
            "gzip of a {} byte chunk into {bound} bytes failed: {e}",
            data.len()
        ))
    })?;
    out.truncate(written);
    out.shrink_to_fit();
    Ok(out)
}

/// Gzip of `data` by the line encoder ([`crate::lines`]), if `data` has a line length and the
/// result is under 40 % of it (else libdeflate does better).
fn gzip_lines(data: &[u8]) -> Option<Vec<u8>> {
    let d = line_length(data)?;
    let mut out = Vec::with_capacity(data.len() / 4 + 64);
    out.extend_from_slice(&HEADER);
    crate::lines::deflate(data, d, &mut out);
    if out.len() > data.len() / 5 * 2 {
        return None;
    }
    trailer(libdeflater::crc32(data), data.len() as u64, &mut out);
    out.shrink_to_fit();
    Some(out)
}

/// Appends the gzip trailer: CRC-32 and ISIZE (the length modulo 2^32), little-endian.
fn trailer(crc: u32, len: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
}

/// Line length used when the content has none (fewer than two line feeds, or lines longer than
/// 64 bytes): any distance gives valid deflate, this one suits `.dat` lines.
const FALLBACK_LINE: usize = 13;

/// Input bytes of one deflate block.
const BLOCK: usize = BLOCK_WORDS * 64;

/// Gzip made a piece at a time by the line encoder (as [`gzip`] at level 1): [`GzipLines::write`]
/// the content in pieces of any size, then [`GzipLines::finish`] for one whole gzip member;
/// the encoder is then ready for the next member. Compressed bytes are appended to the
/// caller's buffer as each deflate block (4 MiB of input) is done.
///
/// The output is the bytes [`gzip`] at level 1 gives for the whole content when it has a line
/// length (else the line encoder at a 13-byte distance, which is valid deflate for any bytes
/// but compresses only lines): however the content is cut into pieces, the same bytes.
/// Memory: one block of input and 128 bytes (about 4 MiB, reused from member to member), and
/// the encoder's tables.
pub struct GzipLines {
    /// The input not yet deflated, after the 64 bytes before it (the match distance and the
    /// byte before a literal), once a block has been deflated: `[history][pending]`.
    window: Vec<u8>,
    /// Bytes of history at the window's start: 0 before the first block, then 64.
    history: usize,
    /// The deflate stream, once its first block is begun (when the line length is known).
    deflater: Option<Deflater>,
    crc: Crc,
    len: u64,
}

impl Default for GzipLines {
    fn default() -> Self {
        GzipLines::new()
    }
}

impl GzipLines {
    /// An encoder for a new member.
    pub fn new() -> GzipLines {
        GzipLines {
            window: Vec::new(),
            history: 0,
            deflater: None,
            crc: Crc::new(),
            len: 0,
        }
    }

    /// Content bytes written since the member began.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if nothing has been written since the member began.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `data` to the member's content; the compressed bytes of every block it
    /// completes go to `out`.
    pub fn write(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        self.crc.update(data);
        self.len += data.len() as u64;
        while !data.is_empty() {
            // a block is deflated once the whole word after it is there (the parse looks one
            // word ahead), so that it is not the last
            let full = self.history + BLOCK + 64;
            if self.window.capacity() < full {
                self.window.reserve_exact(full - self.window.len());
            }
            let take = (full - self.window.len()).min(data.len());
            self.window.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.window.len() == full {
                let first = self.history / 64;
                self.block(first..first + BLOCK_WORDS, false, out);
                // the block's last word stays as the history of the next
                let by = self.history + BLOCK - 64;
                self.window.copy_within(by.., 0);
                self.window.truncate(self.window.len() - by);
                if let Some(z) = &mut self.deflater {
                    z.shift(by);
                }
                self.history = 64;
            }
        }
    }

    /// Ends the member: its last block and the trailer (CRC-32, ISIZE) go to `out`. The
    /// encoder then starts a new member.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let mut first = self.history / 64;
        let words = self.window.len().div_ceil(64);
        if words - first > BLOCK_WORDS {
            // a block and less than a word after it (a whole word would have ended it in
            // `write`): the block is not the last, as in the whole-buffer encoder
            self.block(first..first + BLOCK_WORDS, false, out);
            first += BLOCK_WORDS;
        }
        self.block(first..words, true, out);
        trailer(self.crc.sum(), self.len, out);
        self.window.clear();
        self.history = 0;
        self.deflater = None;
        self.crc = Crc::new();
        self.len = 0;
    }

    /// Deflates the words `range` of the window as one block ([`Deflater::block`]); the
    /// first begins the stream (the gzip header to `out`), with the line length of its content.
    fn block(&mut self, range: std::ops::Range<usize>, last: bool, out: &mut Vec<u8>) {
        let window = &self.window;
        self.deflater
            .get_or_insert_with(|| {
                out.extend_from_slice(&HEADER);
                Deflater::new(line_length(window).unwrap_or(FALLBACK_LINE))
            })
            .block(window, range, last, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// `.dat`-like lines: ten digits and CRLF.
    fn dat(lines: u64) -> Vec<u8> {
        (0..lines)
            .flat_map(|i| format!("{:010}\r\n", 9_990_000_000 + i * 7_919 % 9_999_999).into_bytes())
            .collect()
    }

    /// Sorted `.dat` lines as `ndop prepare` writes them: `NNNNNNNNNN,\r\n`.
    fn sorted_dat(lines: u64) -> Vec<u8> {
        (0..lines)
            .flat_map(|i| format!("{:010},\r\n", 4_000_000_000 + i * 5).into_bytes())
            .collect()
    }

    #[test]
    fn level_one_uses_the_line_encoder_on_lines_and_libdeflate_otherwise() {
        let data = sorted_dat(100_000);
        let gz = gzip(&data, 1).unwrap();
        assert_eq!(gz[8], 4, "XFL");
        assert_eq!(gunzip_one_member(&gz), data);
        assert_eq!(gz, gzip(&data, 1).unwrap(), "deterministic");
        // smaller than libdeflate's level 1 on sorted lines
        let mut c = Compressor::new(CompressionLvl::new(1).unwrap());
        let mut other = vec![0u8; c.gzip_compress_bound(data.len())];
        let n = c.gzip_compress(&data, &mut other).unwrap();
        assert!(gz.len() < n, "{} against libdeflate's {n}", gz.len());
        // no line length (and noise): libdeflate, identical to a direct call
        let noise: Vec<u8> = (0..50_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1)
            .collect();
        let noise: Vec<u8> = noise
            .into_iter()
            .map(|b| if b == b'\n' { b'x' } else { b })
            .collect();
        assert!(gzip_lines(&noise).is_none());
        let mut direct = vec![0u8; c.gzip_compress_bound(noise.len())];
        let n = c.gzip_compress(&noise, &mut direct).unwrap();
        assert_eq!(gzip(&noise, 1).unwrap(), direct[..n]);
    }

    /// Decodes `gz` as exactly one gzip member (flate2 checks CRC-32 and ISIZE) and returns
    /// its content; fails if bytes follow the member.
    fn gunzip_one_member(gz: &[u8]) -> Vec<u8> {
        let mut rest = gz;
        let mut decoder = flate2::read::GzDecoder::new(&mut rest);
        let mut out = Vec::new();
        decoder.read_to_end(&mut out).unwrap();
        drop(decoder);
        assert!(
            rest.is_empty(),
            "{} bytes after the gzip member",
            rest.len()
        );
        out
    }

    #[test]
    fn every_level_is_one_standard_gzip_member_with_crc_and_isize() {
        let data = dat(50_000);
        for level in 0..=MAX_GZIP_LEVEL {
            let gz = gzip(&data, level).unwrap();
            assert_eq!(
                &gz[..3],
                &[0x1f, 0x8b, 8],
                "level {level}: gzip magic, deflate"
            );
            let n = gz.len();
            let crc = u32::from_le_bytes(gz[n - 8..n - 4].try_into().unwrap());
            let isize = u32::from_le_bytes(gz[n - 4..].try_into().unwrap());
            assert_eq!(crc, libdeflater::crc32(&data), "level {level}");
            assert_eq!(isize as usize, data.len(), "level {level}");
            assert_eq!(gunzip_one_member(&gz), data, "level {level}");
            if level == 0 {
                assert!(n > data.len(), "level 0 stores");
            } else {
                assert!(n < data.len() / 2, "level {level}: {n} bytes");
            }
            assert_eq!(gz.capacity(), n, "shrunk to the compressed size");
        }
    }

    #[test]
    fn the_same_input_and_level_give_the_same_bytes() {
        let data = dat(20_000);
        for level in [1, 3, 6, 9] {
            assert_eq!(gzip(&data, level).unwrap(), gzip(&data, level).unwrap());
        }
        assert_ne!(gzip(&data, 1).unwrap(), gzip(&data, 9).unwrap());
    }

    #[test]
    fn empty_and_incompressible_chunks_round_trip() {
        assert!(gunzip_one_member(&gzip(&[], 3).unwrap()).is_empty());
        let noise = crate::XorShift(0x9e37_79b9_7f4a_7c15).bytes(300_000);
        let gz = gzip(&noise, 6).unwrap();
        assert_eq!(gunzip_one_member(&gz), noise);
    }

    /// `data` through a [`GzipLines`] in pieces of the sizes `cuts` gives, one after the other
    /// (the rest whole at the end).
    fn stream(z: &mut GzipLines, data: &[u8], cuts: impl IntoIterator<Item = usize>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = data;
        for n in cuts {
            let (now, later) = rest.split_at(n.min(rest.len()));
            z.write(now, &mut out);
            rest = later;
        }
        z.write(rest, &mut out);
        assert_eq!(z.len(), data.len() as u64);
        z.finish(&mut out);
        assert!(z.is_empty(), "ready for the next member");
        out
    }

    /// Random bytes (xorshift).
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        crate::XorShift(seed).bytes(len)
    }

    /// Line-shaped content over several blocks, cut into pieces of every kind (one piece,
    /// bytes, sizes around the block and the word, random sizes): one gzip member, the bytes
    /// of the whole-buffer line encoder ([`gzip`] at level 1), which flate2 decodes back.
    /// Includes a run of identical lines longer than a block across a block's end, the parse's
    /// token then starting before the encoder's window.
    #[test]
    fn the_stream_gives_the_whole_buffer_bytes_however_it_is_cut() {
        let mut data = sorted_dat(400_000); // 5.2 MB: past the first block
        data.extend(b"9990000000,\r\n".repeat(BLOCK / 13 + 1000)); // a run over a block
        data.extend(sorted_dat(300_000));
        data.extend(b"9990000001,\r\n".repeat(30)); // a run of 390 bytes
        data.extend(dat(200_000)); // not sorted
        data.truncate(data.len() - 5); // a cut last line
        let whole = gzip(&data, 1).unwrap();
        assert_eq!(gunzip_one_member(&whole), data);
        let mut z = GzipLines::new();
        let r: Vec<usize> = noise(3000, 7)
            .chunks(2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])) * 37)
            .collect();
        let cuts: Vec<Vec<usize>> = vec![
            vec![],
            vec![BLOCK],
            vec![BLOCK - 1, 1, BLOCK + 64, 63, 65],
            vec![BLOCK + 64 + 1; 4],
            vec![64; 70_000],
            r,
        ];
        for c in cuts {
            let what = format!("{:?}", &c[..c.len().min(5)]);
            let got = stream(&mut z, &data, c); // the same encoder, member after member
            assert!(got == whole, "cut as {what}: the whole-buffer bytes");
        }
        let small = &data[..1000];
        let got = stream(&mut z, small, std::iter::repeat_n(1, 1000));
        assert_eq!(got, gzip(small, 1).unwrap(), "byte by byte");
    }

    /// Any content (random bytes, no lines; empty; short; sizes around the block) is one gzip
    /// member that flate2 decodes back, with its CRC-32 and length; the same content gives the
    /// same bytes.
    #[test]
    fn any_content_round_trips_through_flate2() {
        for (len, seed) in [
            (0, 1),
            (1, 2),
            (13, 3),
            (BLOCK, 4),
            (BLOCK + 65, 5),
            (2 * BLOCK + 100, 6),
        ] {
            let data = noise(len, seed);
            let mut z = GzipLines::new();
            let gz = stream(&mut z, &data, [len / 3, 100]);
            assert!(gunzip_one_member(&gz) == data, "{len} random bytes");
            assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
            assert_eq!(
                gz,
                stream(&mut GzipLines::new(), &data, []),
                "deterministic"
            );
        }
        // lines of every length the encoder takes, and longer ones (the fallback distance)
        for width in [2usize, 11, 12, 40, 63, 64, 80] {
            let data: Vec<u8> = (0..BLOCK / width + 500)
                .flat_map(|i| {
                    let mut l = format!("{:0w$}", i * 7, w = width).into_bytes();
                    l.truncate(width);
                    l.push(b'\n');
                    l
                })
                .collect();
            let gz = stream(&mut GzipLines::new(), &data, [12_345]);
            assert!(gunzip_one_member(&gz) == data, "lines of {width}");
        }
    }

    #[test]
    fn levels_past_twelve_are_refused() {
        let err = gzip(b"x", 13).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("0..=12"), "{err}");
        assert!(gzip(b"x", u32::MAX).is_err());
    }
}
