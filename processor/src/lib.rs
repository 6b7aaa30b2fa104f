//! The engine behind `ndop`: NHS-number extracts in, POS-ready files out, and the POS's
//! answers turned back into a filtered extract.
//!
//! The engine reads and writes files, fast, in bounded memory: no async and no network (the
//! `pos-client` crate sends the prepared files to the POS over MESH and collects the replies;
//! the `ndop` crate is the command).
//! - [`nhs`]: the Modulus 11 rule and the classification of one field;
//! - [`csv`] and `header`: RFC 4180 records (quoted delimiters, quotes and line breaks) and the
//!   header row's checks;
//! - [`scan`] and `input`: inputs (plain or gzip) as blocks cut at line breaks, processed in
//!   parallel, merged in order, a CSV record cut by a block carried over to the next;
//! - [`validate`]: every record counted into exactly one bucket, bad records quarantined;
//! - [`dat`], [`ctl`] and [`prepare`]: `.dat` + `.ctl` pairs under the MESH limits, written by
//!   the rules of [`files`] (mode 0600, atomic) with the POS facts of [`pos`];
//! - [`reconcile`] and [`filter`]: who opted out, and the extract without them;
//! - [`generate`]: synthetic extracts in the 999 test range with their exact truth.
//!
//! `unsafe` is in five places, each with a `// SAFETY:` comment: the memory map (`mmap`), the
//! SSE2 loads of the fast path and of the CSV grammar's masks (`swar`), the number set's
//! words taken as atomics, their prefetch and the map's huge-page hint ([`seen`]), the
//! writeback hint of a streamed output ([`files`]), and the `.dat` lines stored into room
//! reserved a word of the set at a time ([`dat`]).

pub mod consent;
pub mod csv;
pub mod ctl;
pub mod dat;
pub mod error;
pub mod files;
pub mod filter;
pub mod generate;
mod header;
mod input;
mod mmap;
pub mod nhs;
pub mod pos;
pub mod prepare;
pub mod reconcile;
pub mod scan;
pub mod seen;
mod swar;
pub mod validate;

pub use error::{Error, ErrorKind, Result};
pub use input::IoMode;

/// Longest line of a one-number-per-line file (`.dat`) that the engine inspects; a longer line
/// is quarantined as `line_too_long`.
pub const MAX_LINE: usize = 64 * 1024;

/// Longest CSV record (and so longest quoted field) the engine reads: 16 MiB. A longer record,
/// most often a quote that is never closed, makes the input refused rather than swallow the
/// rest of the file.
pub const MAX_RECORD: usize = 16 << 20;
