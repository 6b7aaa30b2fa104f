//! The engine behind `ndop`: NHS-number extracts in, POS-ready files out, and the POS's
//! answers turned back into a filtered extract.
//!
//! The engine reads and writes files, fast, in bounded memory; only [`transfer`] talks to MESH
//! (async, through the `mesh-client` crate).
//! - [`nhs`]: the Modulus 11 rule and the classification of one field;
//! - [`scan`] and `input`: inputs as line-aligned blocks, processed in parallel, merged in order;
//! - [`validate`]: every line counted into exactly one bucket, bad lines quarantined;
//! - [`dat`], [`ctl`] and [`prepare`]: `.dat` + `.ctl` pairs under the MESH limits, written by
//!   the rules of [`files`] (mode 0600, atomic) with the POS facts of [`pos`];
//! - [`journal`], [`mesh_settings`] and [`transfer`]: sending the pairs and collecting
//!   the POS replies, resumably;
//! - [`reconcile`] and [`filter`]: who opted out, and the extract without them;
//! - [`generate`]: synthetic extracts in the 999 test range with their exact truth.

pub mod csv;
pub mod ctl;
pub mod dat;
pub mod error;
pub mod files;
pub mod filter;
pub mod generate;
mod input;
pub mod journal;
pub mod mesh_settings;
mod mmap;
pub mod nhs;
pub mod pos;
pub mod prepare;
pub mod reconcile;
pub mod scan;
pub mod seen;
mod swar;
pub mod transfer;
pub mod validate;

pub use error::{Error, ErrorKind, Result};
pub use input::IoMode;

/// Longest line the engine inspects; a longer line is quarantined as `line_too_long`.
pub const MAX_LINE: usize = 64 * 1024;
