//! The set of NHS numbers seen: one bit per nine-digit prefix.
//!
//! A valid NHS number is fixed by its first nine digits (the tenth is the check digit), so
//! 10^9 bits (119 MiB) hold any set of them, whatever the input size. Threads insert
//! concurrently: a plain load first (cheap for the many repeats of an extract, and it lets the
//! CPU overlap cache misses), then an atomic `fetch_or` only for a bit not yet set, whose
//! result decides exactly one winner. A big set is filled faster by one thread alone, with
//! plain stores, from radix-partitioned batches (`Partitioned`, `NumberSet::insert_alone`):
//! `validate` switches to that once its set has grown. Iteration is in ascending number order,
//! which makes every output independent of thread timing. A second, small map with one bit per
//! 64 words says which parts of the big one were ever written, so counting and iterating a
//! sparse set skip the untouched memory instead of reading all 119 MiB.

use crate::nhs::PrefixDigits;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const PREFIXES: usize = 1_000_000_000;
const WORDS: usize = PREFIXES.div_ceil(64);
/// Words reserved for the map: a power of two above [`WORDS`], so that any `u32` prefix indexes
/// it without a bounds check (`(prefix >> 6) & (MAP_WORDS - 1)` is in range by construction).
/// The words past [`WORDS`] are never iterated; only the last one is ever touched (it holds
/// [`SENTINEL`]), so they cost address space, not memory.
const MAP_WORDS: usize = 1 << 24;
const _: () = assert!(MAP_WORDS > WORDS && SENTINEL as usize >= PREFIXES);
/// A prefix beyond every real one (10^9 and up) whose bit is set when the map is made: an
/// [`Inserter`]'s ring starts full of it, so inserting it is a duplicate that changes nothing.
const SENTINEL: u32 = (MAP_WORDS * 64 - 1) as u32;
/// Words of the big map covered by one bit of the summary map.
const GROUP: usize = 64;
const GROUPS: usize = WORDS.div_ceil(GROUP);

/// Groups in one slice of [`NumberSet::for_each_word_in_slice`].
const SLICE_GROUPS: usize = 256;
/// Prefixes in one slice of [`NumberSet::for_each_word_in_slice`]: 2^20, about a million.
pub(crate) const SLICE_PREFIXES: usize = SLICE_GROUPS * GROUP * 64;
/// The number of slices of [`NumberSet::for_each_word_in_slice`].
pub(crate) const SLICES: usize = PREFIXES.div_ceil(SLICE_PREFIXES);

/// A set of valid NHS numbers.
pub struct NumberSet {
    /// [`MAP_WORDS`] words: bit `b` of word `i` is the prefix `i * 64 + b`.
    words: Box<[AtomicU64; MAP_WORDS]>,
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
        let words: Box<[AtomicU64; MAP_WORDS]> = zeroed_atomics(MAP_WORDS)
            .into_boxed_slice()
            .try_into()
            .unwrap_or_else(|_| unreachable!("MAP_WORDS words"));
        advise_huge_pages(&words[..WORDS]);
        words[SENTINEL as usize >> 6].store(1 << (SENTINEL & 63), Relaxed);
        NumberSet {
            words,
            groups: zeroed_atomics(GROUPS.div_ceil(64)),
        }
    }

    /// Inserts a valid number (below 10^10); true if it was not yet in the set.
    #[inline]
    pub fn insert(&self, number: u64) -> bool {
        debug_assert!(number < 10_000_000_000, "not a ten-digit number");
        self.insert_prefix((number / 10) as u32)
    }

    /// Inserts the valid number with these first nine digits (below 10^9); true if it was not
    /// yet in the set.
    #[inline(always)]
    pub(crate) fn insert_prefix(&self, prefix: u32) -> bool {
        let (word, mask) = self.word_of(prefix);
        let seen = word.load(Relaxed);
        if seen & mask != 0 {
            return false;
        }
        // The thread whose write is the word's first saw it zero here (its load comes before
        // its write), so the group is marked whoever wins; a second mark changes nothing.
        if seen == 0 {
            self.mark_group(prefix as usize >> 12);
        }
        set_bit(word, prefix & 63, mask)
    }

    /// Inserts the valid number with these first nine digits (below 10^9) when no other
    /// thread writes to the set meanwhile; true if it was not yet in the set. Plain stores, no
    /// locked write: with no other writer, nothing can be lost between the load and the store.
    /// (Concurrent use keeps the set memory-safe, but may lose members: the caller makes sure
    /// there is none.)
    #[inline(always)]
    pub(crate) fn insert_prefix_alone(&self, prefix: u32) -> bool {
        let (word, mask) = self.word_of(prefix);
        self.or_alone(word, prefix as usize >> 12, mask) & mask == 0
    }

    /// ORs `bits` into `word` (in group `group`) with a plain load and store, no locked
    /// instruction, for a caller that knows no other thread writes meanwhile; the word's old
    /// value.
    #[inline(always)]
    fn or_alone(&self, word: &AtomicU64, group: usize, bits: u64) -> u64 {
        let seen = word.load(Relaxed);
        if seen == 0 && bits != 0 {
            self.mark_group(group);
        }
        word.store(seen | bits, Relaxed);
        seen
    }

    /// The word holding `prefix` and its bit. Any `u32` is in range (see [`MAP_WORDS`]): no
    /// bounds check on the hot path; prefixes of real numbers are below 10^9.
    #[inline(always)]
    fn word_of(&self, prefix: u32) -> (&AtomicU64, u64) {
        let key = prefix as usize;
        (
            &self.words[(key >> 6) & (MAP_WORDS - 1)],
            1u64 << (key & 63),
        )
    }

    /// Marks word group `group` as written. A plain load first: the group's bit is usually set
    /// already (by the first of its 64 words), and the summary map is shared by every thread,
    /// so a locked write to it for every new word would bounce its cache line between cores.
    #[inline(always)]
    fn mark_group(&self, group: usize) {
        let (summary, bit) = (&self.groups[group >> 6], 1u64 << (group & 63));
        if summary.load(Relaxed) & bit == 0 {
            summary.fetch_or(bit, Relaxed);
        }
    }

    /// Asks the CPU to bring the word holding `prefix` into the cache, without waiting for it.
    #[inline(always)]
    pub(crate) fn prefetch(&self, prefix: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            let (word, _) = self.word_of(prefix);
            // SAFETY: a prefetch is only a hint: it never faults and changes no memory, and the
            // address is that of a live word of the map anyway.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    (word as *const AtomicU64).cast::<i8>(),
                )
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = prefix;
    }

    /// True if the number's prefix is in the set.
    #[inline]
    pub fn contains(&self, number: u64) -> bool {
        self.contains_prefix((number / 10) as u32)
    }

    /// True if this nine-digit prefix is in the set.
    #[inline(always)]
    pub(crate) fn contains_prefix(&self, prefix: u32) -> bool {
        let (word, mask) = self.word_of(prefix);
        word.load(Relaxed) & mask != 0
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
    fn for_each_group(&self, f: impl FnMut(std::ops::Range<usize>)) {
        self.for_each_group_in(0..GROUPS, f)
    }

    /// Calls `f` with the word range of every group among `groups` that was ever written, in
    /// order.
    fn for_each_group_in(
        &self,
        groups: std::ops::Range<usize>,
        mut f: impl FnMut(std::ops::Range<usize>),
    ) {
        let (first, last) = (groups.start, groups.end.min(GROUPS));
        if first >= last {
            return;
        }
        for gi in first / 64..last.div_ceil(64) {
            let mut bits = self.groups[gi].load(Relaxed);
            // Keep only the groups inside `first..last`.
            if gi == first / 64 {
                bits &= u64::MAX << (first % 64);
            }
            if gi == (last - 1) / 64 && last % 64 != 0 {
                bits &= u64::MAX >> (64 - last % 64);
            }
            while bits != 0 {
                let group = gi * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let start = group * GROUP;
                f(start..(start + GROUP).min(WORDS));
            }
        }
    }

    /// Calls `f` with the nine-digit prefix of every member in the slice `slice`, in
    /// ascending order (the writers use [`NumberSet::for_each_word_in_slice`]; the tests check
    /// both against an oracle).
    #[cfg(test)]
    pub(crate) fn for_each_prefix_in_slice(&self, slice: usize, mut f: impl FnMut(u32)) {
        self.for_each_word_in_slice(slice, |first, mut bits| {
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                f(first + b);
            }
        })
    }

    /// Calls `f` with the first prefix of every non-zero word in the slice `slice` of the
    /// prefixes cut into [`SLICE_PREFIXES`]-sized slices, in ascending order, and the word:
    /// bit `b` stands for the prefix `first + b`. Untouched groups are skipped and zero words
    /// not passed on. The slices together cover every prefix, so writers can work on them in
    /// parallel.
    pub(crate) fn for_each_word_in_slice(&self, slice: usize, mut f: impl FnMut(u32, u64)) {
        let groups = slice * SLICE_GROUPS..(slice + 1) * SLICE_GROUPS;
        self.for_each_group_in(groups, |range| {
            for i in range {
                let bits = self.words[i].load(Relaxed);
                if bits != 0 {
                    f((i * 64) as u32, bits);
                }
            }
        })
    }

    /// Calls `f` with every member in ascending order.
    pub fn for_each(&self, mut f: impl FnMut(u64)) {
        let mut digits = PrefixDigits::new();
        self.for_each_prefix(|prefix| f(number_of(&mut digits, prefix)))
    }

    /// Calls `f` with the nine-digit prefix of every member, in ascending order.
    pub fn for_each_prefix(&self, f: impl FnMut(u32)) {
        self.for_each_word(|_, w| w, f)
    }

    /// Calls `f` with every member of `self` that is not in `other`, in ascending order.
    pub fn for_each_not_in(&self, other: &NumberSet, mut f: impl FnMut(u64)) {
        let mut digits = PrefixDigits::new();
        self.for_each_prefix_not_in(other, |prefix| f(number_of(&mut digits, prefix)))
    }

    /// Calls `f` with the prefix of every member of `self` that is not in `other`, in
    /// ascending order.
    pub(crate) fn for_each_prefix_not_in(&self, other: &NumberSet, f: impl FnMut(u32)) {
        self.for_each_word(|i, w| w & !other.words[i].load(Relaxed), f)
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

/// Sets bit `bit` (below 64; `mask` is `1 << bit`) of `word` atomically; true if it was clear
/// before, for exactly one of any threads setting it at once.
///
/// On x86-64 this is one `lock bts`: `fetch_or` whose result is tested for that bit only
/// compiles to a `lock cmpxchg` loop (rustc 1.95, LLVM does not match the pattern here), which
/// loads the word again and may retry. See docs/PERFORMANCE.md.
#[inline(always)]
fn set_bit(word: &AtomicU64, bit: u32, mask: u64) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let _ = mask;
        let was_set: u8;
        // SAFETY: `word` is a live, aligned AtomicU64; `lock bts` with a register bit offset
        // below 64 reads and writes only that quadword, atomically (an atomic RMW on memory
        // only ever accessed atomically). It changes the flags, which `asm!` assumes anyway.
        unsafe {
            std::arch::asm!(
                "lock bts qword ptr [{word}], {bit}",
                "setc {was_set}",
                word = in(reg) word.as_ptr(),
                bit = in(reg) u64::from(bit),
                was_set = out(reg_byte) was_set,
                options(nostack),
            );
        }
        was_set == 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = bit;
        word.fetch_or(mask, Relaxed) & mask == 0
    }
}

/// The valid number with the nine-digit prefix of a member (only valid numbers are inserted,
/// so a check digit exists; 0 stands in where none does, which cannot happen).
#[inline(always)]
fn number_of(digits: &mut PrefixDigits, prefix: u32) -> u64 {
    let check = digits.ascii(prefix).map_or(0, |d| (d >> 72) as u8 - b'0');
    u64::from(prefix) * 10 + u64::from(check)
}

/// Prefixes an [`Inserter`] holds between prefetching a word and setting its bit: enough
/// cache misses in flight to cover the memory latency, few enough that the prefetched lines are
/// still in L1 when their turn comes. A power of two: the ring is indexed by the push count
/// masked. The filter's lookups ([`crate::filter`]) run the same distance ahead.
pub(crate) const LAG: usize = 16;

/// Inserts prefixes into a [`NumberSet`] with their cache misses overlapped, for a set too big
/// for the cache (a national extract's tens of millions of distinct numbers spread over 37.5 MiB
/// of map for England's ranges, 119 MiB for the whole range).
///
/// Inserting one prefix at a time waits for each miss in turn: the atomic `fetch_or` of a new
/// member cannot start until its line arrives, and it holds back the loads behind it. Here each
/// prefix's word is prefetched when it is pushed and its bit set `LAG` pushes later, when the
/// line is (most likely) in L1, so up to `LAG` misses are in flight at once. The set and the
/// number of duplicates are exactly as if each prefix were inserted when pushed: the prefixes
/// are inserted in the same order by the same thread. For a set that fits in the cache (the
/// 999 range) the prefetches hit and cost next to nothing. See docs/PERFORMANCE.md,
/// "De-duplication at national scale", for the alternatives measured.
///
/// The hot loop's state stays in registers: the inserter is only the ring (memory, indexed),
/// and the caller keeps the push count and the duplicate count as locals (a count inside this
/// struct would live in memory with the ring, which measured 8 instructions a line for the
/// increment alone). The ring starts full of [`SENTINEL`], whose bit is always set, so every
/// push inserts the prefix pushed `LAG` pushes before without a "ring full yet?" test; the
/// `LAG` sentinels come out as duplicates and [`Inserter::finish`] takes them off again.
pub(crate) struct Inserter<'a> {
    set: &'a NumberSet,
    ring: [u32; LAG],
}

impl<'a> Inserter<'a> {
    /// An inserter into `set`.
    #[inline]
    pub(crate) fn new(set: &'a NumberSet) -> Self {
        Inserter {
            set,
            ring: [SENTINEL; LAG],
        }
    }

    /// Queues a prefix (below 10^9) for insertion; `pushed` must count the earlier pushes
    /// (0 for the first). Returns 1 when the prefix it inserted in turn, pushed `LAG` pushes
    /// before, was a duplicate (already in the set, or pushed before), else 0; the first `LAG`
    /// pushes insert the sentinel, a duplicate.
    #[inline(always)]
    pub(crate) fn push(&mut self, pushed: u64, prefix: u32) -> u64 {
        self.set.prefetch(prefix);
        let slot = &mut self.ring[pushed as usize & (LAG - 1)];
        let due = std::mem::replace(slot, prefix);
        !self.set.insert_prefix(due) as u64
    }

    /// Inserts what is still queued, after `pushed` pushes whose results add up to `counted`;
    /// returns how many of the pushed prefixes were duplicates (already in the set, or pushed
    /// before).
    #[inline]
    pub(crate) fn finish(self, pushed: u64, counted: u64) -> u64 {
        let mut duplicates = counted;
        for i in pushed..pushed + LAG as u64 {
            duplicates += !self.set.insert_prefix(self.ring[i as usize & (LAG - 1)]) as u64;
        }
        // Every push and the drain together inserted each of the `LAG` sentinels once.
        duplicates - LAG as u64
    }
}

/// Prefix bits below a [`Partitioned`] bucket: a bucket covers 2^21 prefixes, 256 KiB of the
/// map, which stays in L2 while its prefixes are inserted.
const BUCKET_SHIFT: u32 = 21;
/// Buckets of [`Partitioned`]: a power of two, so that any `u32` prefix's bucket
/// (`(prefix >> BUCKET_SHIFT) & (BUCKETS - 1)`) is in range by construction; prefixes of real
/// numbers use the first 477.
const BUCKETS: usize = 1 << (32 - BUCKET_SHIFT);

/// The prefix's bucket.
#[inline(always)]
fn bucket(prefix: u32) -> usize {
    (prefix >> BUCKET_SHIFT) as usize & (BUCKETS - 1)
}

/// A list of prefixes reordered by bucket (the high bits of the prefix, radix-partitioned, each
/// bucket's prefixes in their original order), for [`NumberSet::insert_alone`].
#[derive(Default)]
pub(crate) struct Partitioned {
    /// The prefixes, bucket by bucket.
    prefixes: Vec<u32>,
    /// Bucket `b`'s prefixes are `prefixes[starts[b]..starts[b + 1]]`; empty when there is no
    /// prefix at all.
    starts: Vec<u32>,
}

impl Partitioned {
    /// Partitions `prefixes` (fewer than 2^32) by bucket: one pass to count, one to place.
    #[cfg(test)]
    pub(crate) fn new(prefixes: &[u32]) -> Partitioned {
        Partitioned::new_in(prefixes, Vec::new())
    }

    /// [`Partitioned::new`], placing the prefixes into `room` (its capacity reused: no fresh
    /// pages to fault in).
    pub(crate) fn new_in(prefixes: &[u32], mut room: Vec<u32>) -> Partitioned {
        if prefixes.is_empty() {
            return Partitioned::default();
        }
        let mut starts = vec![0u32; BUCKETS + 1];
        for &p in prefixes {
            starts[bucket(p) + 1] += 1;
        }
        for b in 0..BUCKETS {
            starts[b + 1] += starts[b];
        }
        let mut at = starts[..BUCKETS].to_vec();
        room.clear();
        // Zeroed first although every slot is then written once: the zeroing brings the list's
        // lines into the cache for writing at streaming speed, and the scattered writes below
        // then hit them. Writing into the uninitialised capacity instead measured a quarter
        // slower `validate` on the national file (interleaved runs, 29 Nov 2026).
        room.resize(prefixes.len(), 0);
        for &p in prefixes {
            let slot = &mut at[bucket(p)];
            room[*slot as usize] = p;
            *slot += 1;
        }
        Partitioned {
            prefixes: room,
            starts,
        }
    }

    /// The buffer of the prefixes, for reuse.
    pub(crate) fn into_room(self) -> Vec<u32> {
        self.prefixes
    }

    /// The number of prefixes.
    pub(crate) fn len(&self) -> usize {
        self.prefixes.len()
    }

    /// Bucket `b`'s prefixes.
    #[inline]
    fn bucket(&self, b: usize) -> &[u32] {
        match self.starts.get(b..b + 2) {
            Some(&[start, end]) => &self.prefixes[start as usize..end as usize],
            _ => &[],
        }
    }
}

impl NumberSet {
    /// Inserts every prefix (below 10^9) of `lists` when no other thread writes to the set
    /// meanwhile, bucket by bucket across the lists, so that each bucket's 256 KiB of the map
    /// is brought into the cache once for all of its prefixes instead of once for each; within
    /// a bucket each word is prefetched [`LAG`] prefixes ahead. Returns how many prefixes were
    /// duplicates (already in the set, or listed before). Plain stores: see
    /// [`NumberSet::insert_prefix_alone`]. (`validate` inserts with
    /// [`NumberSet::insert_alone_parallel`]; this one thread's way is the tests' reference.)
    #[cfg(test)]
    pub(crate) fn insert_alone(&self, lists: &[Partitioned]) -> u64 {
        self.insert_buckets_alone(lists, 0..BUCKETS)
    }

    /// [`NumberSet::insert_alone`] by the threads of the current rayon pool, each inserting
    /// its own run of buckets, for a caller whose other threads are idle (`validate`'s last
    /// batch, once the scan has ended). A bucket covers whole words of the map and whole words
    /// of its summary (2^21 prefixes; a summary word covers 2^18), so no two threads write the
    /// same word and the plain stores lose nothing. Returns the same count.
    pub(crate) fn insert_alone_parallel(&self, lists: &[Partitioned]) -> u64 {
        use rayon::prelude::*;
        const _: () = assert!(BUCKET_SHIFT >= 6 + 6 + 6);
        let total: usize = lists.iter().map(Partitioned::len).sum();
        // Runs of buckets of about equal numbers of prefixes, a few per thread.
        let share = total.div_ceil(rayon::current_num_threads() * 4).max(1);
        let mut runs = Vec::new();
        let (mut start, mut gathered) = (0, 0);
        for b in 0..BUCKETS {
            gathered += lists.iter().map(|l| l.bucket(b).len()).sum::<usize>();
            if gathered >= share || b + 1 == BUCKETS {
                runs.push(start..b + 1);
                (start, gathered) = (b + 1, 0);
            }
        }
        runs.into_par_iter()
            .map(|run| self.insert_buckets_alone(lists, run))
            .sum()
    }

    /// [`NumberSet::insert_alone`] of the prefixes in the buckets `buckets` only.
    fn insert_buckets_alone(&self, lists: &[Partitioned], buckets: std::ops::Range<usize>) -> u64 {
        let mut duplicates = 0u64;
        for b in buckets {
            for list in lists {
                let prefixes = list.bucket(b);
                for (i, &prefix) in prefixes.iter().enumerate() {
                    if let Some(&ahead) = prefixes.get(i + LAG) {
                        self.prefetch(ahead);
                    }
                    duplicates += !self.insert_prefix_alone(prefix) as u64;
                }
            }
        }
        duplicates
    }
}

/// Asks Linux to back the map with transparent huge pages (2 MiB) where it can: a national set
/// touches the map all over, and with 4 KiB pages nearly every insertion would also miss the
/// TLB. Only the pages written become resident, as before, but 2 MiB at a time (a sparse set of
/// the 999 range holds one or two). A hint: where THP is off, nothing changes.
fn advise_huge_pages(words: &[AtomicU64]) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = words.as_ptr() as usize;
        let end = start + std::mem::size_of_val(words);
        let (first, last) = (start.next_multiple_of(PAGE), end / PAGE * PAGE);
        if first < last {
            // SAFETY: the range lies inside the live allocation of `words` and is page-aligned;
            // MADV_HUGEPAGE changes how the kernel backs the memory, never its contents.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = words;
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

/// Word-level access, for callers that move whole sets in and out (the results cache's roaring
/// bitmaps): bit `b` of word `i` is the nine-digit prefix `i * 64 + b`.
impl NumberSet {
    /// The number of 64-bit words: indexes run from 0 to this, exclusive.
    pub const WORDS: usize = WORDS;

    /// Calls `f` with the index and value of every non-zero word, in ascending order of index.
    pub fn for_each_nonzero_word(&self, mut f: impl FnMut(usize, u64)) {
        self.for_each_group(|range| {
            for i in range {
                let w = self.words[i].load(Relaxed);
                if w != 0 {
                    f(i, w);
                }
            }
        })
    }

    /// [`NumberSet::insert_word`] for a set no other thread writes to meanwhile (one thread
    /// filling a set of its own): a plain load and store, no locked instruction. Another
    /// thread's write to the same word at the same time could be lost, never undefined
    /// behaviour. Nothing is added when `index` is not below [`NumberSet::WORDS`].
    #[inline]
    pub(crate) fn insert_word_unshared(&self, index: usize, bits: u64) {
        if let Some(word) = self.words[..WORDS].get(index) {
            self.or_alone(word, index >> 6, bits);
        }
    }

    /// Adds the prefixes whose bits are set in `bits` to word `index` (only prefixes of valid
    /// numbers belong in a set). False, and nothing added, when `index` is not below
    /// [`NumberSet::WORDS`].
    pub fn insert_word(&self, index: usize, bits: u64) -> bool {
        let Some(word) = self.words[..WORDS].get(index) else {
            return false;
        };
        if bits != 0 && word.fetch_or(bits, Relaxed) == 0 {
            self.mark_group(index >> 6);
        }
        true
    }
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

#[cfg(test)]
mod inserter_tests {
    //! The prefetching [`Inserter`] and the sliced iteration against a `HashSet` oracle, on
    //! random prefixes spread over the whole range (0 and 999,999,999 included), inserted by 1
    //! and by 4 threads at once, each through its own inserter, and the set filled in one round
    //! or several.
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashSet};

    /// Random prefixes over the whole range, with repeats and the two ends.
    fn prefixes() -> impl Strategy<Value = Vec<u32>> {
        let one = prop_oneof![
            4 => 0u32..PREFIXES as u32,
            1 => Just(0u32),
            1 => Just(PREFIXES as u32 - 1),
            // The last prefix of a word: neighbours share a word, a group, a bucket.
            1 => (0u32..PREFIXES as u32 / 64).prop_map(|w| w * 64 + 63),
        ];
        proptest::collection::vec(one, 0..400).prop_flat_map(|v| {
            let n = v.len().max(1);
            let picks = proptest::collection::vec(any::<prop::sample::Index>(), 0..n);
            (Just(v), picks).prop_map(|(mut v, picks)| {
                // Repeats of earlier prefixes.
                if !v.is_empty() {
                    let again: Vec<u32> = picks.iter().map(|i| v[i.index(v.len())]).collect();
                    v.extend(again);
                }
                v
            })
        })
    }

    /// Inserts `all` in `rounds` rounds, each split over `threads` threads pushing through
    /// their own `Inserter`; returns the set and the duplicates the inserters counted.
    fn insert(all: &[u32], threads: usize, rounds: usize) -> (NumberSet, u64) {
        let set = NumberSet::new();
        let mut duplicates = 0;
        for round in all.chunks(all.len().div_ceil(rounds).max(1)) {
            duplicates += std::thread::scope(|s| {
                let handles: Vec<_> = round
                    .chunks(round.len().div_ceil(threads).max(1))
                    .map(|part| {
                        let set = &set;
                        s.spawn(move || {
                            let mut ins = Inserter::new(set);
                            let mut counted = 0;
                            for (i, &p) in part.iter().enumerate() {
                                counted += ins.push(i as u64, p);
                            }
                            ins.finish(part.len() as u64, counted)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
            });
        }
        (set, duplicates)
    }

    #[test]
    fn words_round_trip() {
        let set = NumberSet::new();
        let prefixes = [
            0u32,
            63,
            64,
            4095,
            4096,
            262_143,
            500_000_000,
            PREFIXES as u32 - 1,
        ];
        for &p in &prefixes {
            set.insert_prefix(p);
        }
        let copy = NumberSet::new();
        let mut last = None;
        set.for_each_nonzero_word(|i, w| {
            assert!(last < Some(i));
            last = Some(i);
            assert!(copy.insert_word(i, w));
        });
        assert!(!copy.insert_word(NumberSet::WORDS, 1));
        let mut members = Vec::new();
        copy.for_each_prefix(|p| members.push(p));
        assert_eq!(members, prefixes);
        assert_eq!(copy.len(), prefixes.len() as u64);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn partitioned_insertion_matches_a_hashset(
            all in prefixes(),
            lists in 1usize..5,
            direct in 0usize..50,
        ) {
            // Some prefixes inserted one by one first (the switch from the workers' inserts),
            // the rest as `lists` partitioned lists in one batch.
            let set = NumberSet::new();
            let direct = direct.min(all.len());
            let mut duplicates = 0u64;
            for &p in &all[..direct] {
                duplicates += !set.insert_prefix(p) as u64;
            }
            let rest = &all[direct..];
            let batch: Vec<Partitioned> = rest
                .chunks(rest.len().div_ceil(lists).max(1))
                .map(Partitioned::new)
                .collect();
            prop_assert_eq!(batch.iter().map(Partitioned::len).sum::<usize>(), rest.len());
            for list in &batch {
                for b in 0..BUCKETS {
                    prop_assert!(list.bucket(b).iter().all(|&p| bucket(p) == b));
                }
            }
            // The same batch inserted by a pool's threads, bucket runs each, into a set that
            // had the same direct inserts, must end up the same.
            let twin = NumberSet::new();
            for &p in &all[..direct] {
                twin.insert_prefix(p);
            }
            let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
            let twin_duplicates = pool.install(|| twin.insert_alone_parallel(&batch));
            let alone = set.insert_alone(&batch);
            prop_assert_eq!(twin_duplicates, alone);
            duplicates += alone;
            let mut twins = Vec::new();
            twin.for_each_prefix(|p| twins.push(p));
            prop_assert_eq!(twin.len(), set.len());
            let oracle: HashSet<u32> = all.iter().copied().collect();
            prop_assert_eq!(duplicates, (all.len() - oracle.len()) as u64);
            prop_assert_eq!(set.len(), oracle.len() as u64);
            let sorted: Vec<u32> = oracle.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
            let mut members = Vec::new();
            set.for_each_prefix(|p| members.push(p));
            prop_assert_eq!(&members, &sorted);
            prop_assert_eq!(&twins, &sorted);
            let mut sliced = Vec::new();
            for slice in 0..SLICES {
                set.for_each_prefix_in_slice(slice, |p| sliced.push(p));
            }
            prop_assert_eq!(&sliced, &sorted);
        }

        #[test]
        fn inserter_matches_a_hashset(
            all in prefixes(),
            threads in prop_oneof![Just(1usize), Just(4)],
            rounds in 1usize..4,
        ) {
            let oracle: HashSet<u32> = all.iter().copied().collect();
            let (set, duplicates) = insert(&all, threads, rounds);
            prop_assert_eq!(duplicates, (all.len() - oracle.len()) as u64);
            prop_assert_eq!(set.len(), oracle.len() as u64);
            prop_assert_eq!(set.is_empty(), oracle.is_empty());
            let sorted: Vec<u32> = oracle.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
            let mut members = Vec::new();
            set.for_each_prefix(|p| members.push(p));
            prop_assert_eq!(&members, &sorted);
            let mut sliced = Vec::new();
            for slice in 0..SLICES {
                let before = sliced.len();
                set.for_each_prefix_in_slice(slice, |p| sliced.push(p));
                for &p in &sliced[before..] {
                    prop_assert_eq!(p as usize / SLICE_PREFIXES, slice);
                }
            }
            prop_assert_eq!(&sliced, &sorted);
            for &p in &all {
                prop_assert!(set.contains_prefix(p));
                prop_assert!(!set.insert_prefix(p));
            }
            for p in [1u32, 500_000_000, PREFIXES as u32 - 2] {
                prop_assert_eq!(set.contains_prefix(p), oracle.contains(&p));
            }
        }
    }
}
