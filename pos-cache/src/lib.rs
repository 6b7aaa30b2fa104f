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

/// Words of a [`NumberSet`] in one roaring container (65,536 prefixes).
const CONTAINER_WORDS: usize = (1 << 16) / 64;

/// Empty containers a stretch handed to roaring may span before it is cut in two (each is
/// 8 KiB of zeros to scan).
const GAP_CONTAINERS: usize = 4;

/// The nine-digit prefixes of a set's members, as a roaring bitmap: built from the set's
/// 64-bit words, a stretch of containers at a time (`from_lsb0_bytes`), not one value at a time.
pub fn bitmap_of(set: &NumberSet) -> RoaringBitmap {
    let mut b = RoaringBitmap::new();
    // the words, as bytes, of the containers from word `start` on
    let mut run: Vec<u8> = Vec::new();
    let mut start = 0usize;
    let flush = |b: &mut RoaringBitmap, run: &mut Vec<u8>, start: usize| {
        if run.is_empty() {
            return;
        }
        // a prefix is below 10^9, so its bit position fits u32
        let part = RoaringBitmap::from_lsb0_bytes((start * 64) as u32, run);
        if b.is_empty() {
            *b = part;
        } else {
            // the stretches ascend: the new containers go after the ones held
            *b |= part;
        }
        run.clear();
    };
    set.for_each_nonzero_word(|i, w| {
        if !run.is_empty() && i >= start + run.len() / 8 + GAP_CONTAINERS * CONTAINER_WORDS {
            flush(&mut b, &mut run, start);
        }
        if run.is_empty() {
            start = i / CONTAINER_WORDS * CONTAINER_WORDS;
        }
        // words arrive in ascending order, so `i` is at or past the end of the run
        run.resize((i - start) * 8, 0);
        run.extend_from_slice(&w.to_le_bytes());
    });
    flush(&mut b, &mut run, start);
    // run containers where they are smaller (dense, issued ranges)
    b.optimize();
    b
}

/// A [`NumberSet`] holding the valid numbers whose prefixes are in `bitmap`, filled a word at a
/// time. Values of `bitmap` that are not prefixes (10^9 and above: only a damaged cache holds
/// them) are left out, so they are never allowed nor counted as checked.
pub fn number_set_of(bitmap: &RoaringBitmap) -> NumberSet {
    let set = NumberSet::new();
    let (mut index, mut word) = (usize::MAX, 0u64);
    for p in bitmap {
        let i = p as usize / 64;
        if i != index {
            if word != 0 {
                set.insert_word(index, word);
            }
            (index, word) = (i, 0);
        }
        word |= 1 << (p % 64);
    }
    if word != 0 {
        set.insert_word(index, word);
    }
    set
}

/// The full ten-digit number of a nine-digit prefix (prefixes come only from valid numbers, so
/// a check digit exists).
pub fn number_of_prefix(prefix: u32) -> u64 {
    let check = processor::nhs::check_digit_of_prefix(prefix).unwrap_or(0);
    prefix as u64 * 10 + check as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Prefixes in containers of every kind (array, bitmap, full run), at the ends of the key
    /// space, and with gaps on both sides of the cut between stretches.
    fn shapes() -> Vec<BTreeSet<u32>> {
        let c = 1u32 << 16;
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut mixed = BTreeSet::new();
        mixed.extend([0, 1, 63, 64, 999_999_999]);
        mixed.extend(5 * c..6 * c); // full container
        mixed.extend((0..5000).map(|_| 7 * c + (next() % c as u64) as u32)); // bitmap
        for gap in [1, 3, 4, 5, 6, 100] {
            // stretches cut (or not) at GAP_CONTAINERS empty containers
            mixed.insert(1000 * c + gap * c + 17);
        }
        mixed.extend((0..20_000).map(|_| (next() % 1_000_000_000) as u32));
        vec![
            BTreeSet::new(),
            BTreeSet::from([999_999_999]),
            BTreeSet::from([0]),
            mixed,
        ]
    }

    #[test]
    fn bitmap_of_and_number_set_of_keep_every_prefix() {
        for prefixes in shapes() {
            let set = NumberSet::new();
            for &p in &prefixes {
                set.insert(p as u64 * 10);
            }
            let bitmap = bitmap_of(&set);
            let want: RoaringBitmap = prefixes.iter().copied().collect();
            assert_eq!(bitmap, want);
            let back = number_set_of(&bitmap);
            let mut got = BTreeSet::new();
            back.for_each_prefix(|p| {
                got.insert(p);
            });
            assert_eq!(got, prefixes);
        }
    }

    #[test]
    fn number_set_of_leaves_out_values_that_are_not_prefixes() {
        let bitmap: RoaringBitmap = [5, 1_000_000_000, u32::MAX].into_iter().collect();
        let set = number_set_of(&bitmap);
        assert_eq!(set.len(), 1);
        assert!(set.contains(50));
    }
}
