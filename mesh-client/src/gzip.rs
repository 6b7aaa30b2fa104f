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
//! Levels: 0 writes stored blocks (gzip framing, no compression); 1–9 are libdeflate's levels of
//! the same numbers (greedy/lazy parsing up to 9); libdeflate's 10–12 (near-optimal parsing,
//! several times slower) are accepted here for benchmarks but not by
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
