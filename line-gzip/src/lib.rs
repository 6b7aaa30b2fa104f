//! Gzip for MESH chunks, shared by the MESH client (its uploads) and the mock (its POS's
//! result): [`gzip`] compresses a whole chunk in one call (libdeflate, or at level 1 the line
//! encoder for files of fixed-length lines such as the POS `.dat` files), and [`GzipLines`]
//! makes the line encoder's gzip a piece at a time, in bounded memory.
//!
//! A leaf crate: it knows nothing of MESH or NHS numbers, and depends on no crate of the
//! workspace.

mod gzip;
mod lines;

pub use gzip::{gzip, GzipLines, MAX_GZIP_LEVEL};

/// The tests' random input: xorshift64, the same numbers from the same seed.
#[cfg(test)]
pub(crate) struct XorShift(pub(crate) u64);

#[cfg(test)]
impl XorShift {
    /// The next number.
    pub(crate) fn next(&mut self) -> u64 {
        let x = &mut self.0;
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// `len` random bytes (the low byte of each number).
    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}
