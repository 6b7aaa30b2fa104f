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
//! benchmarks but not by
//! [`ClientConfig`](crate::ClientConfig), which keeps MESH's 0–9.

use libdeflater::{CompressionLvl, Compressor};

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
    let d = crate::lines::line_length(data)?;
    let mut out = Vec::with_capacity(data.len() / 4 + 64);
    // RFC 1952 header as libdeflate writes it: no name, mtime 0, XFL 4 (fastest), OS unknown
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 0xff]);
    crate::lines::deflate(data, d, &mut out);
    if out.len() > data.len() / 5 * 2 {
        return None;
    }
    out.extend_from_slice(&libdeflater::crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.shrink_to_fit();
    Some(out)
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
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let gz = gzip(&noise, 6).unwrap();
        assert_eq!(gunzip_one_member(&gz), noise);
    }

    #[test]
    fn levels_past_twelve_are_refused() {
        let err = gzip(b"x", 13).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("0..=12"), "{err}");
        assert!(gzip(b"x", u32::MAX).is_err());
    }
}
