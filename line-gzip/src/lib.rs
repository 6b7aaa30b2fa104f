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
