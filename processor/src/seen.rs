//! The set of NHS numbers seen: one bit per nine-digit prefix.
//!
//! A valid NHS number is fixed by its first nine digits (the tenth is the check digit), so
//! 10^9 bits (119 MiB) hold any set of them, whatever the input size. Threads insert
//! concurrently: a plain load first (cheap for the many repeats of an extract, and it lets the
//! CPU overlap cache misses), then an atomic `fetch_or` only for a bit not yet set, whose
//! result decides exactly one winner. Iteration is in ascending number order, which makes every
//! output independent of thread timing. A second, small map with one bit per 64 words says
//! which parts of the big one were ever written, so counting and iterating a sparse set skip the
//! untouched memory instead of reading all 119 MiB.

use crate::nhs::check_digit_of_prefix;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const PREFIXES: usize = 1_000_000_000;
const WORDS: usize = PREFIXES.div_ceil(64);
/// Words of the big map covered by one bit of the summary map.
const GROUP: usize = 64;
const GROUPS: usize = WORDS.div_ceil(GROUP);

/// A set of valid NHS numbers.
pub struct NumberSet {
    words: Vec<AtomicU64>,
    /// Bit `g` is set when word group `g` of `words` may hold a member.
    groups: Vec<AtomicU64>,
}

impl Default for NumberSet {
    fn default() -> Self {
        Self::new()
    }
}

impl NumberSet {
    /// An empty set. The memory is reserved, not touched: only pages holding members become
    /// resident.
    pub fn new() -> Self {
        NumberSet {
            words: zeroed_atomics(WORDS),
            groups: zeroed_atomics(GROUPS.div_ceil(64)),
        }
    }

    /// Inserts a valid number (below 10^10); true if it was not yet in the set.
    #[inline]
    pub fn insert(&self, number: u64) -> bool {
        self.insert_prefix((number / 10) as u32)
    }

    /// Inserts the valid number with these first nine digits (below 10^9); true if it was not
    /// yet in the set.
    #[inline(always)]
    pub(crate) fn insert_prefix(&self, prefix: u32) -> bool {
        let key = prefix as usize;
        let word = &self.words[key >> 6];
        let mask = 1u64 << (key & 63);
        if word.load(Relaxed) & mask != 0 {
            return false;
        }
        let old = word.fetch_or(mask, Relaxed);
        if old == 0 {
            let group = key >> 6 >> 6;
            self.groups[group >> 6].fetch_or(1u64 << (group & 63), Relaxed);
        }
        old & mask == 0
    }

    /// True if the number's prefix is in the set.
    #[inline]
    pub fn contains(&self, number: u64) -> bool {
        self.contains_prefix((number / 10) as u32)
    }

    /// True if this nine-digit prefix is in the set.
    #[inline(always)]
    pub(crate) fn contains_prefix(&self, prefix: u32) -> bool {
        let key = prefix as usize;
        self.words[key >> 6].load(Relaxed) & (1u64 << (key & 63)) != 0
    }

    /// The number of members.
    pub fn len(&self) -> u64 {
        let mut n = 0u64;
        self.for_each_group(|range| {
            n += self.words[range]
                .iter()
                .map(|w| w.load(Relaxed).count_ones() as u64)
                .sum::<u64>()
        });
        n
    }

    /// True when the set has no member.
    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(|g| g.load(Relaxed) == 0)
    }

    /// Calls `f` with the word range of every group that was ever written, in order.
    fn for_each_group(&self, mut f: impl FnMut(std::ops::Range<usize>)) {
        for (gi, g) in self.groups.iter().enumerate() {
            let mut bits = g.load(Relaxed);
            while bits != 0 {
                let group = gi * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let start = group * GROUP;
                f(start..(start + GROUP).min(WORDS));
            }
        }
    }

    /// Calls `f` with every member in ascending order.
    pub fn for_each(&self, mut f: impl FnMut(u64)) {
        self.for_each_prefix(|prefix| {
            // Only valid numbers are inserted, so a check digit exists.
            let check = check_digit_of_prefix(prefix).unwrap_or(0);
            f(prefix as u64 * 10 + check as u64)
        })
    }

    /// Calls `f` with the nine-digit prefix of every member, in ascending order.
    pub fn for_each_prefix(&self, f: impl FnMut(u32)) {
        self.for_each_word(|_, w| w, f)
    }

    /// Calls `f` with every member of `self` that is not in `other`, in ascending order.
    pub fn for_each_not_in(&self, other: &NumberSet, mut f: impl FnMut(u64)) {
        self.for_each_word(
            |i, w| w & !other.words[i].load(Relaxed),
            |prefix| {
                let check = check_digit_of_prefix(prefix).unwrap_or(0);
                f(prefix as u64 * 10 + check as u64)
            },
        )
    }

    /// Calls `f` with the prefix of every bit `select` keeps, in ascending order.
    fn for_each_word(&self, select: impl Fn(usize, u64) -> u64, mut f: impl FnMut(u32)) {
        self.for_each_group(|range| {
            for i in range {
                let mut bits = self.words[i].load(Relaxed);
                if bits == 0 {
                    continue;
                }
                bits = select(i, bits);
                while bits != 0 {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    f((i * 64 + b) as u32);
                }
            }
        })
    }
}

/// `n` zeroed atomics. `vec![0; n]` asks the allocator for zeroed memory (calloc), which leaves
/// the pages unmapped until written.
fn zeroed_atomics(n: usize) -> Vec<AtomicU64> {
    let mut zeroed = std::mem::ManuallyDrop::new(vec![0u64; n]);
    let (ptr, len, cap) = (zeroed.as_mut_ptr(), zeroed.len(), zeroed.capacity());
    // SAFETY: AtomicU64 has the same size, alignment and bit validity as u64 (documented); same
    // allocation, length and capacity; the original Vec is never dropped.
    unsafe { Vec::from_raw_parts(ptr.cast::<AtomicU64>(), len, cap) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_contains_iterate_in_order() {
        let s = NumberSet::new();
        assert!(s.is_empty());
        for n in [9434765919u64, 9000000009, 9694116414, 0] {
            assert!(s.insert(n));
            assert!(!s.insert(n));
            assert!(s.contains(n));
        }
        assert_eq!(s.len(), 4);
        let mut all = Vec::new();
        s.for_each(|n| all.push(n));
        assert_eq!(all, vec![0, 9000000009, 9434765919, 9694116414]);
        let other = NumberSet::new();
        other.insert(9000000009);
        let mut diff = Vec::new();
        s.for_each_not_in(&other, |n| diff.push(n));
        assert_eq!(diff, vec![0, 9434765919, 9694116414]);
        assert!(!s.contains(9999999999));
        // The last prefix lives in the last, partial group.
        assert!(s.insert(9999999999));
        assert_eq!(s.len(), 5);
        let mut last = 0;
        s.for_each(|n| last = n);
        assert_eq!(last, 9999999999);
    }
}
