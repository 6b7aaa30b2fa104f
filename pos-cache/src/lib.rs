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
///
/// The words come from roaring's portable serialization, container by container: a bitmap
/// container's 1,024 words are copied as they are, array and run containers are turned into
/// words, so a national set (tens of millions of prefixes, mostly in bitmap containers) costs a
/// copy of its containers rather than a step per member.
pub fn number_set_of(bitmap: &RoaringBitmap) -> NumberSet {
    let set = NumberSet::new();
    let mut bytes = Vec::with_capacity(bitmap.serialized_size());
    let words = bitmap.serialize_into(&mut bytes).is_ok()
        && for_each_serialized_word(&bytes, |i, w| {
            set.insert_word(i, w);
        })
        .is_some();
    if words {
        set
    } else {
        // not reached for a bitmap serialized just now; kept so that no input can panic
        number_set_by_value(bitmap)
    }
}

/// [`number_set_of`] a value at a time (the reference the word-wise version is tested against).
fn number_set_by_value(bitmap: &RoaringBitmap) -> NumberSet {
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

/// Calls `f(index, word)` for the non-zero 64-bit words of the bitmap serialized in `bytes`
/// (roaring's portable format), in ascending order, bit `b` of word `i` standing for the value
/// `64 i + b`. `None` when the bytes are not in that format (then `f` may have been called for
/// some words).
fn for_each_serialized_word(bytes: &[u8], mut f: impl FnMut(usize, u64)) -> Option<()> {
    const COOKIE_NO_RUNS: u32 = 12346;
    const COOKIE: u32 = 12347;
    let u16_at = |at: usize| Some(u16::from_le_bytes(*bytes.get(at..at + 2)?.first_chunk()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(*bytes.get(at..at + 4)?.first_chunk()?));
    let cookie = u32_at(0)?;
    // containers, the bitmap of which are run containers, and where the descriptions start
    let (count, runs, mut at) = if cookie == COOKIE_NO_RUNS {
        (u32_at(4)? as usize, None, 8)
    } else if cookie & 0xFFFF == COOKIE {
        let count = (cookie >> 16) as usize + 1;
        (count, Some(4), 4 + count.div_ceil(8))
    } else {
        return None;
    };
    let descriptions = at;
    at += count * 4;
    // offsets: always without run containers, with them from four containers on
    if runs.is_none() || count >= 4 {
        at += count * 4;
    }
    let mut pending = Pending {
        index: usize::MAX,
        word: 0,
    };
    for c in 0..count {
        let key = u16_at(descriptions + c * 4)? as usize;
        let cardinality = u16_at(descriptions + c * 4 + 2)? as usize + 1;
        let base = key << 16;
        let is_run = match runs {
            Some(flags) => bytes.get(flags + c / 8)? >> (c % 8) & 1 == 1,
            None => false,
        };
        if is_run {
            let n = u16_at(at)? as usize;
            for r in 0..n {
                let start = base + u16_at(at + 2 + r * 4)? as usize;
                let last = start + u16_at(at + 4 + r * 4)? as usize;
                pending.set_range(start, last, &mut f);
            }
            at += 2 + n * 4;
        } else if cardinality > 4096 {
            // a bitmap container: its words as they are
            pending.flush(&mut f);
            for (j, w) in bytes.get(at..at + 8192)?.chunks_exact(8).enumerate() {
                let w = u64::from_le_bytes(*w.first_chunk()?);
                if w != 0 {
                    f(base / 64 + j, w);
                }
            }
            at += 8192;
        } else {
            for k in 0..cardinality {
                let v = base + u16_at(at + k * 2)? as usize;
                pending.set_range(v, v, &mut f);
            }
            at += cardinality * 2;
        }
    }
    pending.flush(&mut f);
    Some(())
}

/// The word being filled from array and run containers, not yet handed on.
struct Pending {
    index: usize,
    word: u64,
}

impl Pending {
    /// Sets the bits of the values `first..=last` (ascending, after those set before), handing
    /// each word on once the range has moved past it.
    fn set_range(&mut self, first: usize, last: usize, f: &mut impl FnMut(usize, u64)) {
        for i in first / 64..=last / 64 {
            if i != self.index {
                self.flush(f);
                self.index = i;
            }
            let lo = if i == first / 64 { first % 64 } else { 0 };
            let hi = if i == last / 64 { last % 64 } else { 63 };
            self.word |= (u64::MAX >> (63 - hi)) & (u64::MAX << lo);
        }
    }

    /// Hands on the word being filled, if any bit of it is set.
    fn flush(&mut self, f: &mut impl FnMut(usize, u64)) {
        if self.word != 0 {
            f(self.index, self.word);
        }
        self.word = 0;
    }
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

    /// The set's words, for comparing sets exactly.
    fn words_of(set: &NumberSet) -> Vec<(usize, u64)> {
        let mut words = Vec::new();
        set.for_each_nonzero_word(|i, w| words.push((i, w)));
        words
    }

    #[test]
    fn the_word_wise_copy_agrees_with_the_value_by_value_one() {
        let c = 1u32 << 16;
        let mut ranges = shapes();
        // run containers alone (fewer than four: no offsets in the serialization), runs that
        // start and end inside words, and a run next to array and bitmap containers
        ranges.push((3 * c..4 * c).collect());
        ranges.push((c + 100..=c + 200).chain(2 * c + 63..=2 * c + 64).collect());
        let mut many: BTreeSet<u32> = (9 * c + 1..=9 * c + 130).collect();
        many.extend((0..6000).map(|i| 11 * c + i * 7));
        // the smallest bitmap container and the largest array container
        many.extend((0..4097).map(|i| 13 * c + i * 2));
        many.extend((0..4096).map(|i| 14 * c + i * 3));
        many.extend([12 * c + 5, 40 * c, 15_258 * c + 1]);
        ranges.push(many);
        for prefixes in ranges {
            let plain: RoaringBitmap = prefixes.iter().copied().collect();
            let mut runs = plain.clone();
            runs.optimize();
            for bitmap in [&plain, &runs] {
                let want = words_of(&number_set_by_value(bitmap));
                assert_eq!(words_of(&number_set_of(bitmap)), want);
                // the serialization was read, not left to the fallback
                let mut bytes = Vec::new();
                bitmap.serialize_into(&mut bytes).unwrap();
                let mut words = Vec::new();
                let read = for_each_serialized_word(&bytes, |i, w| words.push((i, w)));
                assert_eq!((read, words), (Some(()), want));
            }
        }
    }

    #[test]
    fn bytes_not_in_roarings_format_are_refused() {
        let mut bytes = Vec::new();
        let bitmap: RoaringBitmap = (0..10_000).map(|i| i * 3).collect();
        bitmap.serialize_into(&mut bytes).unwrap();
        for cut in [0, 3, 8, 20, bytes.len() - 1] {
            assert!(for_each_serialized_word(&bytes[..cut], |_, _| {}).is_none());
        }
        bytes[0] ^= 0xFF;
        assert!(for_each_serialized_word(&bytes, |_, _| {}).is_none());
    }

    #[test]
    fn number_set_of_leaves_out_values_that_are_not_prefixes() {
        let bitmap: RoaringBitmap = [5, 1_000_000_000, u32::MAX].into_iter().collect();
        let set = number_set_of(&bitmap);
        assert_eq!(set.len(), 1);
        assert!(set.contains(50));
    }
}
