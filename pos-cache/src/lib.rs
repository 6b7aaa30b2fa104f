//! The POS results cache: every completed POS check kept as a *batch* in an embedded SQLite
//! database, applied as of a disclosure date, and exported as the join-ready table data
//! platforms use (`docs/CACHE.md`).
//!
//! A batch is one submission and its cleaned reply: when the POS checked it (`checked_at`),
//! environment, mailboxes, LocalId, MESH message ids, SHA-256 of the request and of the reply,
//! and two sets of numbers, requested and returned, stored as roaring bitmaps of the nine-digit
//! prefixes (a valid NHS number is fixed by its first nine digits). Nothing else about a patient
//! is kept, and no "opted out" flag: opted out is derived (requested minus returned) when asked.
//!
//! The rule ([`Cache::view`]): at an as-of time T, a number's decisive check is the newest batch
//! at or before T that requested it. The number may be used only if that batch is at most the
//! maximum age old at T and returned it. Numbers no batch in that window requested are *not
//! checked*; they are withheld and counted apart from the opted out.
//!
//! Files are private (directory 0700, database 0600; SQLite gives its WAL and shared-memory
//! files the database's mode). Every change is one transaction, so a crash leaves the cache as
//! it was; a second process waits for a writer (busy timeout) instead of failing. The audit
//! table is append-only (triggers refuse UPDATE and DELETE) and never holds an NHS number.

mod error;
mod export;
mod import;
mod store;
mod time;

pub use error::{Error, Result};
pub use export::{export, ExportFormat, ExportList, ExportSummary, NumberType};
pub use import::{read_new_batches, read_work_dir, sha256_file, ImportSummary, NewBatch, Skipped};
pub use store::{AuditRecord, BatchInfo, Cache, Status, View, DB_FILE, SCHEMA_VERSION};
pub use time::{
    format_age, format_time, parse_age, parse_time, Age, DEFAULT_MAX_AGE, HARD_MAX_AGE,
};

use processor::seen::NumberSet;
use roaring::RoaringBitmap;

/// The nine-digit prefixes of a set's members, as a roaring bitmap.
pub fn bitmap_of(set: &NumberSet) -> RoaringBitmap {
    let mut b = RoaringBitmap::new();
    // ascending order: each push appends
    set.for_each_prefix(|p| {
        let _ = b.try_push(p);
    });
    // run containers where they are smaller (dense, issued ranges)
    b.optimize();
    b
}

/// A [`NumberSet`] holding the valid numbers whose prefixes are in `bitmap`.
pub fn number_set_of(bitmap: &RoaringBitmap) -> NumberSet {
    let set = NumberSet::new();
    for p in bitmap {
        // the set keys on the prefix: the check digit does not matter here
        set.insert(p as u64 * 10);
    }
    set
}

/// The full ten-digit number of a nine-digit prefix (prefixes come only from valid numbers, so
/// a check digit exists).
pub fn number_of_prefix(prefix: u32) -> u64 {
    let check = processor::nhs::check_digit_of_prefix(prefix).unwrap_or(0);
    prefix as u64 * 10 + check as u64
}
