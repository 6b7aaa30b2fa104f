//! The fast path for the commonest line: ten digits, an optional comma, then LF or CRLF.
//!
//! Files made for the POS, and most one-number-per-line extracts, are almost all lines such as
//! `9434765919,\r\n`. Such a line is recognised, checked and decoded from sixteen bytes loaded
//! at once, with no search for the line end and no branch per byte:
//! - bytes 0..10 must be ASCII digits and the bytes after them the ending the caller expects
//!   (the previous line's, so the next line's position is known before this one is checked);
//! - the Modulus 11 sum `10·d0 + 9·d1 + … + 2·d8` is a dot product; the number is valid exactly
//!   when `sum + d9 ≡ 0 (mod 11)` (a remainder of 1 would need a check digit of 10, which no
//!   digit meets);
//! - the first nine digits become the number the de-duplication bitmap is keyed on.
//!
//! On x86-64 this is SSE2 (part of the x86-64 baseline, so always there): one compare for the
//! digits, `pmaddwd` for the sum and for the digits-to-number steps. Elsewhere a portable
//! version does the same with 64-bit words (SWAR: SIMD within a register); tests run both.
//!
//! Where the CPU has them, runs of lines with one ending go four at a time ([`Kernel`]): the
//! same steps on a 128-bit lane per line, with AVX-512 (one 512-bit vector) or AVX2 (two
//! 256-bit ones), chosen at run time. Four lines the kernel does not take whole go one at a
//! time, so the lines taken are the same whatever the kernel (tested, and `check_walk` runs
//! every kernel the CPU has).
//!
//! The fast path only ever accepts lines the general classifier calls valid and not normalised;
//! everything else (invalid, blank, spaced, CSV, a short final line) goes the general way.
//! Tests, a property test and the `walk_block` fuzz target check the two agree on every line.

/// A line the fast path accepted: a valid NHS number written as ten bare digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FastLine {
    /// The ten digits as a number.
    pub number: u64,
    /// The first nine digits as a number (what [`crate::seen::NumberSet`] keys on).
    pub prefix: u32,
    /// Bytes of the line including its line ending (11 to 13).
    pub len: usize,
    /// A repdigit such as `9999999999`.
    pub placeholder: bool,
}

/// Bytes the fast path reads at once; a line closer than this to the end of its block goes
/// the general way.
pub(crate) const WINDOW: usize = 16;

const HIGH_NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
const THREES: u64 = 0x3030_3030_3030_3030;
const SIXES: u64 = 0x0606_0606_0606_0606;
const EVEN_BYTES: u64 = 0x00FF_00FF_00FF_00FF;
/// Weights of digits 0, 2, 4, 6 (10, 8, 6, 4), lane order reversed.
const EVEN_WEIGHTS: u64 = (10 << 48) | (8 << 32) | (6 << 16) | 4;
/// Weights of digits 1, 3, 5, 7 (9, 7, 5, 3), lane order reversed.
const ODD_WEIGHTS: u64 = (9 << 48) | (7 << 32) | (5 << 16) | 3;

/// One of the line endings the fast path knows, after the ten digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ending {
    /// Which bytes after the digits (bytes 10..16 of the window, as the low bits) to compare.
    mask: u64,
    /// What they must be.
    bits: u64,
    /// Length of the whole line with this ending.
    len: usize,
}

/// `,\r\n`, `,\n`, `\r\n` and `\n`.
const ENDINGS: [Ending; 4] = [
    Ending {
        mask: 0xFF_FFFF,
        bits: 0x0A_0D_2C,
        len: 13,
    },
    Ending {
        mask: 0xFFFF,
        bits: 0x0A_2C,
        len: 12,
    },
    Ending {
        mask: 0xFFFF,
        bits: 0x0A_0D,
        len: 12,
    },
    Ending {
        mask: 0xFF,
        bits: 0x0A,
        len: 11,
    },
];

impl Default for Ending {
    /// The POS `.dat` ending, `,\r\n`.
    fn default() -> Self {
        ENDINGS[0]
    }
}

#[inline(always)]
fn words(window: &[u8; WINDOW]) -> (u64, u64) {
    let v = u128::from_le_bytes(*window);
    (v as u64, (v >> 64) as u64)
}

/// The ending that follows ten bytes at the start of `window`, if it is one the fast path knows.
#[inline]
pub(crate) fn ending_of(window: &[u8; WINDOW]) -> Option<Ending> {
    let tail = words(window).1 >> 16;
    ENDINGS.into_iter().find(|e| tail & e.mask == e.bits)
}

/// Recognises a bare valid line with the given ending at the start of `window`.
///
/// The caller passes the ending it expects (the previous line's) rather than having it found
/// here: then the position of the next line does not depend on this line's bytes, only on a
/// well-predicted branch, and the CPU can work on several lines at once.
#[inline(always)]
pub(crate) fn parse(window: &[u8; WINDOW], ending: Ending) -> Option<FastLine> {
    #[cfg(target_arch = "x86_64")]
    let prefix = sse2::prefix_if_valid(window, ending);
    #[cfg(not(target_arch = "x86_64"))]
    let prefix = portable::prefix_if_valid(window, ending);
    prefix.map(|prefix| line(prefix, window[9], ending))
}

/// [`parse`] for ten bytes on their own (a field cut out of a CSV row): the number, if they are
/// ten digits that pass Modulus 11.
#[inline]
pub(crate) fn parse_ten(ten: &[u8; 10]) -> Option<FastLine> {
    let mut window = [0u8; WINDOW];
    window[..10].copy_from_slice(ten);
    window[10] = b'\n';
    parse(&window, ENDINGS[3])
}

/// The line whose ten digits pass, given their first nine as a number and the tenth (the
/// check digit, as ASCII).
#[inline(always)]
fn line(prefix: u32, check: u8, ending: Ending) -> FastLine {
    FastLine {
        number: prefix as u64 * 10 + (check - b'0') as u64,
        prefix,
        len: ending.len,
        // A valid repdigit's check digit is its digit (54·d ≡ -d mod 11), so the prefix
        // decides: 0, 111111111, …, 999999999.
        placeholder: is_multiple_of_111111111(prefix),
    }
}

/// The inverse of 11 modulo 2^32 (see [`is_multiple_of`]).
#[cfg(target_arch = "x86_64")]
const INVERSE_OF_11: u32 = inverse::<11>();

/// The inverse of 111111111 modulo 2^32 (see [`is_multiple_of`]).
#[cfg(target_arch = "x86_64")]
const INVERSE_OF_111111111: u32 = inverse::<111_111_111>();

/// The inverse of an odd `D` modulo 2^32, by Newton's iteration: each step doubles the correct
/// low bits (`d·d ≡ 1 mod 8` to start).
const fn inverse<const D: u32>() -> u32 {
    assert!(D % 2 == 1);
    let mut x = D;
    let mut i = 0;
    while i < 4 {
        x = x.wrapping_mul(2u32.wrapping_sub(D.wrapping_mul(x)));
        i += 1;
    }
    assert!(D.wrapping_mul(x) == 1);
    x
}

/// `x % D == 0` for an odd `D`, as one multiplication and one comparison: an odd divisor has
/// an inverse modulo 2^32, and the multiples of `D` are exactly the `x` it maps to at most
/// `u32::MAX / D`. (The compiler's own remainder takes five or six instructions here.)
#[inline(always)]
fn is_multiple_of<const D: u32>(x: u32) -> bool {
    x.wrapping_mul(const { inverse::<D>() }) <= u32::MAX / D
}

/// A valid repdigit's prefix: 0, 111111111, …, 999999999.
#[inline(always)]
fn is_multiple_of_111111111(x: u32) -> bool {
    is_multiple_of::<111_111_111>(x)
}

/// Sixty-four-bit words only: for every target.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
mod portable {
    use super::*;

    /// True when the bytes after the ten digits are `ending` (`b` holds bytes 8..16).
    #[inline(always)]
    fn ends_with(b: u64, ending: Ending) -> bool {
        (b >> 16) & ending.mask == ending.bits
    }

    /// The first nine digits as a number, when the window holds ten digits that pass
    /// Modulus 11, then `ending`.
    #[inline(always)]
    pub(super) fn prefix_if_valid(window: &[u8; WINDOW], ending: Ending) -> Option<u32> {
        let (a, b) = words(window);
        // High nibbles of the ten digits, then again after adding 6 (a carry out of byte 1
        // of `b` only reaches bytes that are not looked at).
        let wrong = ((a & HIGH_NIBBLES) ^ THREES)
            | ((a.wrapping_add(SIXES) & HIGH_NIBBLES) ^ THREES)
            | ((b & 0xF0F0) ^ 0x3030)
            | ((b.wrapping_add(0x0606) & 0xF0F0) ^ 0x3030);
        if wrong != 0 || !ends_with(b, ending) {
            return None;
        }
        let d = a - THREES; // no borrows: every byte is a digit
        let (d8, d9) = ((b & 0xFF) - 0x30, ((b >> 8) & 0xFF) - 0x30);
        let even = d & EVEN_BYTES;
        let odd = (d >> 8) & EVEN_BYTES;
        // Every lane of each product stays below 2^16 (at most 9 · 28): no carry crosses lanes.
        let dot = even
            .wrapping_mul(EVEN_WEIGHTS)
            .wrapping_add(odd.wrapping_mul(ODD_WEIGHTS))
            >> 48;
        if !is_multiple_of::<11>((dot + 2 * d8 + d9) as u32) {
            return None;
        }
        // Eight digits to a number: pairs, then fours, then the eight.
        let pairs = d.wrapping_mul(10).wrapping_add(d >> 8);
        let eight = ((pairs & 0x0000_00FF_0000_00FF)
            .wrapping_mul(100 + (1_000_000 << 32))
            .wrapping_add(
                ((pairs >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32)),
            ))
            >> 32;
        Some((eight * 10 + d8) as u32)
    }
}

/// SSE2, which every x86-64 CPU has: the digit test and both sums on 16-byte vectors.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use super::*;
    use std::arch::x86_64::*;

    /// For a lane holding a line with `ending`: `cap` and `want` of the line compare (see
    /// [`prefix_if_valid`]), and the bits of its mask that must be set (the digits and
    /// the ending).
    #[inline(always)]
    pub(super) fn line_bytes(ending: Ending) -> (__m128i, __m128i, u16) {
        const NINES: i64 = 0x0909_0909_0909_0909;
        let mut tail = 0i64;
        for i in 0..3 {
            tail |= i64::from(((ending.bits >> (8 * i)) as u8).wrapping_sub(b'0')) << (8 * i);
        }
        let need = 0x3FF | (((1 << (ending.len - 10)) - 1) << 10);
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe {
            let cap = _mm_set_epi64x(0x0909, NINES);
            let want = _mm_set_epi64x(0x0909 | tail << 16, NINES);
            (cap, want, need)
        }
    }

    /// The Modulus 11 weights of the ten digits (`maddubs`), 0 for the bytes after them.
    pub(super) const MOD11_WEIGHTS: [i8; 16] = [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0];
    /// Digit pairs to two-digit numbers (`maddubs`), and `d8` on its own.
    pub(super) const TENS: [i8; 16] = [10, 1, 10, 1, 10, 1, 10, 1, 1, 0, 0, 0, 0, 0, 0, 0];
    /// Two-digit numbers to `q0`, `q1` (`madd`), and `d8` on its own.
    pub(super) const HUNDREDS: [i16; 8] = [100, 1, 100, 1, 1, 0, 0, 0];
    /// `q0`, `q1`, `d8` to their places in the prefix (`mullo`).
    pub(super) const PLACES: [i32; 4] = [100_000, 10, 1, 0];

    /// The 16 bytes of `bytes` (one of the arrays above) as a 128-bit lane.
    #[inline(always)]
    pub(super) fn lane<T: Copy>(bytes: &T) -> __m128i {
        const { assert!(std::mem::size_of::<T>() == 16) };
        // SAFETY: `bytes` is 16 readable bytes, and `loadu` has no alignment requirement.
        unsafe { _mm_loadu_si128((bytes as *const T).cast()) }
    }

    /// [`portable::prefix_if_valid`], vectorised:
    /// - `d = window - '0'` per byte; the first ten bytes are digits and the ending follows
    ///   when `max(d, cap) == want` in every byte up to the line's end, with `cap` and `want`
    ///   9 in the digits' lanes (`max(d, 9) == 9` exactly for a digit, unsigned) and 0 and the
    ///   ending's bytes minus `'0'` in the lanes after: one compare checks the whole line;
    /// - `madd` of the first eight digits (as 16-bit lanes) with the weights 10..3, and of the
    ///   next two with 2, 1, gives the Modulus 11 sum in four 32-bit lanes;
    /// - `madd` with 10, 1 then 100, 1 turns the first eight digits into two four-digit
    ///   numbers.
    #[inline(always)]
    pub(super) fn prefix_if_valid(window: &[u8; WINDOW], ending: Ending) -> Option<u32> {
        let (cap, want, need) = line_bytes(ending);
        let need = i32::from(need);
        // SAFETY: SSE2 is part of the x86-64 baseline, so every intrinsic here is available on
        // every CPU this code runs on; `window` is 16 readable bytes and `loadu` has no
        // alignment requirement.
        let (line, sum, fours) = unsafe {
            let v = _mm_loadu_si128(window.as_ptr().cast());
            let d = _mm_sub_epi8(v, _mm_set1_epi8(b'0' as i8));
            let line = _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(d, cap), want));
            let zero = _mm_setzero_si128();
            let first8 = _mm_unpacklo_epi8(d, zero);
            let rest = _mm_unpackhi_epi8(d, zero);
            let sums = _mm_add_epi32(
                _mm_madd_epi16(first8, _mm_setr_epi16(10, 9, 8, 7, 6, 5, 4, 3)),
                _mm_madd_epi16(rest, _mm_setr_epi16(2, 1, 0, 0, 0, 0, 0, 0)),
            );
            let sums = _mm_add_epi32(sums, _mm_shuffle_epi32::<0b01_00_11_10>(sums));
            let sums = _mm_add_epi32(sums, _mm_shuffle_epi32::<0b10_11_00_01>(sums));
            let pairs = _mm_madd_epi16(first8, _mm_setr_epi16(10, 1, 10, 1, 10, 1, 10, 1));
            let fours = _mm_madd_epi16(
                _mm_packs_epi32(pairs, pairs),
                _mm_setr_epi16(100, 1, 100, 1, 100, 1, 100, 1),
            );
            (
                line,
                _mm_cvtsi128_si32(sums) as u32,
                _mm_cvtsi128_si64(fours) as u64,
            )
        };
        if line & need != need || !is_multiple_of::<11>(sum) {
            return None;
        }
        let eight = (fours as u32) * 10_000 + (fours >> 32) as u32;
        Some(eight * 10 + u32::from(window[8] - b'0'))
    }
}

/// How [`run`] takes lines: one at a time, or four at a time when the CPU has the vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// One line at a time ([`parse`]: SSE2 on x86-64, 64-bit words elsewhere).
    One,
    /// Four lines at a time as two pairs (AVX2: [`avx2::four`]) while they are fast lines
    /// with the same ending; the rest one at a time.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Four lines at a time (AVX-512 F and BW: [`avx512::four`]), likewise.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    /// The kernel [`run`]'s callers use: the fastest this CPU runs, unless the environment
    /// variable `NDOP_LINE_KERNEL` names a slower one (`one`, `avx2`: for benchmarks). Decided
    /// once per process.
    #[inline]
    pub(crate) fn detect() -> Kernel {
        static CHOSEN: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let all = Kernel::available();
            let asked = std::env::var("NDOP_LINE_KERNEL").ok();
            all.iter()
                .copied()
                .find(|k| asked.as_deref() == Some(k.name()))
                .unwrap_or(all[all.len() - 1])
        })
    }

    /// Every kernel this CPU can run, slowest first (for the tests and the fuzz target: each
    /// must take the same lines).
    pub(crate) fn available() -> Vec<Kernel> {
        #[allow(unused_mut)]
        let mut all = vec![Kernel::One];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                all.push(Kernel::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
            {
                all.push(Kernel::Avx512);
            }
        }
        all
    }

    /// Its name for `NDOP_LINE_KERNEL`.
    fn name(self) -> &'static str {
        match self {
            Kernel::One => "one",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => "avx512",
        }
    }
}

/// Calls `f`, compiled for the vectors of [`Kernel::detect`]'s kernel, so that a block walk
/// built on [`run`] (marked `#[inline(always)]` down to the kernel) inlines the four-line
/// kernel into its loop: one dispatch a block, not a call every four lines. The same results
/// either way.
#[inline(always)]
pub(crate) fn for_cpu<R>(f: impl FnOnce() -> R) -> R {
    match Kernel::detect() {
        // SAFETY: `detect` picks these only when the CPU has the features they need.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe { with_avx512(f) },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { with_avx2(f) },
        Kernel::One => f(),
    }
}

/// `f()` compiled for AVX2 (see [`for_cpu`]).
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// `f()` compiled for AVX-512 F and BW (see [`for_cpu`]).
///
/// # Safety
/// The CPU must have AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// AVX2: four lines of one ending as two pairs, a pair to a 256-bit vector.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// [`avx512::four`] with two 256-bit vectors, a line in each 128-bit lane; the same
    /// steps, with `min`/`cmpeq`/`movemask` where AVX-512 has mask compares.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn four<const E: usize>(
        chunk: &[u8; avx512::CHUNK],
    ) -> Option<([u32; 4], u32)> {
        let ending = ENDINGS[E];
        let len = ending.len;
        let (cap, want, need) = sse2::line_bytes(ending);
        let need = u64::from(need) * 0x0001_0001;
        let p = chunk.as_ptr();
        // SAFETY (the loads): line 3's window ends at 3 · len + 16 <= 55 < CHUNK.
        let pair =
            |i: usize| _mm256_loadu2_m128i(p.add((i + 1) * len).cast(), p.add(i * len).cast());
        let cap = _mm256_broadcastsi128_si256(cap);
        let want = _mm256_broadcastsi128_si256(want);
        let weights = _mm256_broadcastsi128_si256(sse2::lane(&sse2::MOD11_WEIGHTS));
        let tens = _mm256_broadcastsi128_si256(sse2::lane(&sse2::TENS));
        let hundreds = _mm256_broadcastsi128_si256(sse2::lane(&sse2::HUNDREDS));
        let places = _mm256_broadcastsi128_si256(sse2::lane(&sse2::PLACES));
        let most = _mm256_set1_epi32((u32::MAX / 11) as i32);
        let mut out = [0u32; 4];
        for half in 0..2 {
            let d = _mm256_sub_epi8(pair(2 * half), _mm256_set1_epi8(b'0' as i8));
            let line = _mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_max_epu8(d, cap), want));
            let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(d, weights), _mm256_set1_epi16(1));
            let sums = _mm256_add_epi32(sums, _mm256_bsrli_epi128::<8>(sums));
            let sums = _mm256_add_epi32(sums, _mm256_bsrli_epi128::<4>(sums));
            let m = _mm256_mullo_epi32(sums, _mm256_set1_epi32(INVERSE_OF_11 as i32));
            let eleven = _mm256_movemask_epi8(_mm256_cmpeq_epi32(_mm256_min_epu32(m, most), m));
            if (line as u32 as u64) & need != need || eleven & 0x1_0001 != 0x1_0001 {
                return None;
            }
            let q = _mm256_madd_epi16(_mm256_maddubs_epi16(d, tens), hundreds);
            let q = _mm256_mullo_epi32(q, places);
            let q = _mm256_add_epi32(q, _mm256_bsrli_epi128::<8>(q));
            let q = _mm256_add_epi32(q, _mm256_bsrli_epi128::<4>(q));
            out[2 * half] = _mm256_extract_epi32::<0>(q) as u32;
            out[2 * half + 1] = _mm256_extract_epi32::<4>(q) as u32;
        }
        let placeholders = (0..4).fold(0, |m, i| {
            m | u32::from(is_multiple_of_111111111(out[i])) << i
        });
        Some((out, placeholders))
    }
}

/// AVX-512 (F and BW): four lines of one ending at once.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    /// Bytes [`four`] reads: four lines of at most 13 bytes and the 16-byte window of the
    /// last (3 · 13 + 16 = 55), rounded up to one 64-byte vector.
    pub(super) const CHUNK: usize = 64;

    /// The first nine digits of each of the four lines at the start of `chunk`, as numbers,
    /// and which of them are placeholders (bit `i` for line `i`), when all four are ten digits
    /// that pass Modulus 11 followed by `ENDINGS[E]`; else `None`
    /// (the caller then takes them one at a time, so a line [`parse`] would refuse is never
    /// taken here: the tests check the two agree).
    ///
    /// [`sse2::prefix_if_valid`] on four 128-bit lanes, one line's window in each:
    /// - the same `max(d, cap) == want` compare checks every byte of all four lines at once;
    /// - `maddubs` of the digits with the weights 10..1, then `madd` with ones and two shifts
    ///   within each lane, gives each line's Modulus 11 sum, tested as [`is_multiple_of`] does
    ///   (a multiplication by the inverse of 11 and one compare);
    /// - `maddubs` with 10, 1 then `madd` with 100, 1 makes the first eight digits two
    ///   four-digit numbers `q0`, `q1` beside `d8`; one `mullo` by 100000, 10, 1 and two shifts
    ///   within each lane add them into the nine-digit prefix.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    pub(super) unsafe fn four<const E: usize>(chunk: &[u8; CHUNK]) -> Option<([u32; 4], u32)> {
        let ending = ENDINGS[E];
        let len = ending.len;
        let (cap, want, need) = sse2::line_bytes(ending);
        let need = u64::from(need) * 0x0001_0001_0001_0001;
        let p = chunk.as_ptr();
        // SAFETY (all the loads): line 3's window ends at 3 · len + 16 <= 55 < CHUNK.
        let line_at = |i: usize| _mm_loadu_si128(p.add(i * len).cast());
        let v = _mm512_castsi128_si512(line_at(0));
        let v = _mm512_inserti32x4::<1>(v, line_at(1));
        let v = _mm512_inserti32x4::<2>(v, line_at(2));
        let v = _mm512_inserti32x4::<3>(v, line_at(3));
        let d = _mm512_sub_epi8(v, _mm512_set1_epi8(b'0' as i8));
        let cap = _mm512_broadcast_i32x4(cap);
        let want = _mm512_broadcast_i32x4(want);
        let line = _mm512_cmpeq_epi8_mask(_mm512_max_epu8(d, cap), want);
        // Each lane's sum in its first 32-bit element (the digits are at most 9 once `line`
        // holds, so no product or sum saturates; the bytes after them weigh 0).
        let weights = _mm512_broadcast_i32x4(sse2::lane(&sse2::MOD11_WEIGHTS));
        let sums = _mm512_madd_epi16(_mm512_maddubs_epi16(d, weights), _mm512_set1_epi16(1));
        let sums = _mm512_add_epi32(sums, _mm512_bsrli_epi128::<8>(sums));
        let sums = _mm512_add_epi32(sums, _mm512_bsrli_epi128::<4>(sums));
        let eleven = _mm512_cmple_epu32_mask(
            _mm512_mullo_epi32(sums, _mm512_set1_epi32(INVERSE_OF_11 as i32)),
            _mm512_set1_epi32((u32::MAX / 11) as i32),
        );
        if line & need != need || eleven & 0x1111 != 0x1111 {
            return None;
        }
        let tens = _mm512_broadcast_i32x4(sse2::lane(&sse2::TENS));
        let hundreds = _mm512_broadcast_i32x4(sse2::lane(&sse2::HUNDREDS));
        // [q0, q1, d8, 0] in each lane
        let q = _mm512_madd_epi16(_mm512_maddubs_epi16(d, tens), hundreds);
        let q = _mm512_mullo_epi32(q, _mm512_broadcast_i32x4(sse2::lane(&sse2::PLACES)));
        let q = _mm512_add_epi32(q, _mm512_bsrli_epi128::<8>(q));
        let q = _mm512_add_epi32(q, _mm512_bsrli_epi128::<4>(q));
        let firsts = _mm512_permutexvar_epi32(
            _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
            q,
        );
        // Placeholders among the four, as [`is_multiple_of_111111111`] tests them.
        let placeholders = _mm512_cmple_epu32_mask(
            _mm512_mullo_epi32(firsts, _mm512_set1_epi32(INVERSE_OF_111111111 as i32)),
            _mm512_set1_epi32((u32::MAX / 111_111_111) as i32),
        );
        let mut out = [0u32; 4];
        _mm_storeu_si128(out.as_mut_ptr().cast(), _mm512_castsi512_si128(firsts));
        Some((out, u32::from(placeholders) & 0xF))
    }
}

/// Where [`run`] hands the lines it takes: one at a time ([`Take::one`]) or, from the
/// four-line kernel, four at a time ([`Take::four`], by default one at a time). Any
/// `FnMut(FastLine, &[u8])` takes lines one at a time; a caller that can use four at once
/// (`validate`: one 16-byte copy of their prefixes) implements `four` itself.
pub(crate) trait Take<'b> {
    /// One line and its raw bytes (with its line ending).
    fn one(&mut self, line: FastLine, raw: &'b [u8]);

    /// Four lines in a row.
    #[inline(always)]
    fn four(&mut self, four: Four<'b>) {
        for i in 0..4 {
            self.one(four.line(i), four.raw(i));
        }
    }
}

impl<'b, F: FnMut(FastLine, &'b [u8])> Take<'b> for F {
    #[inline(always)]
    fn one(&mut self, line: FastLine, raw: &'b [u8]) {
        self(line, raw)
    }
}

/// Four lines in a row that the fast path takes, all with the same ending.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Four<'b> {
    /// Their prefixes, in order (as [`FastLine::prefix`]).
    pub(crate) prefixes: [u32; 4],
    /// Bit `i` set: line `i` holds a placeholder (as [`FastLine::placeholder`]).
    pub(crate) placeholders: u32,
    /// The four lines as read.
    raw: &'b [u8],
    /// Each line's length.
    len: usize,
}

impl<'b> Four<'b> {
    /// Line `i` (below 4).
    #[inline(always)]
    pub(crate) fn line(&self, i: usize) -> FastLine {
        FastLine {
            number: self.prefixes[i] as u64 * 10 + (self.raw[i * self.len + 9] - b'0') as u64,
            prefix: self.prefixes[i],
            len: self.len,
            placeholder: self.placeholders >> i & 1 != 0,
        }
    }

    /// Line `i`'s raw bytes.
    #[inline(always)]
    pub(crate) fn raw(&self, i: usize) -> &'b [u8] {
        &self.raw[i * self.len..(i + 1) * self.len]
    }
}

/// Takes lines from `block[*pos..]` while the fast path accepts them, calling `f(line, raw)`
/// for each and moving `*pos` past it; stops before the first line it does not take. Lines
/// with a placeholder are not taken when `reject_placeholders` (the general path rejects them).
/// `*ending` is the ending expected first, and on return the last one seen. `kernel` is
/// [`Kernel::detect`]'s (or, in the tests, any [`Kernel::available`]).
///
/// The lines are taken by a loop compiled once per ending ([`run_ending`]), so the ending's
/// mask, bytes and length are constants, not three more registers in a loop that needs every
/// register it has; a line with another ending the fast path knows leaves that loop for the
/// one of its ending.
#[inline(always)]
pub(crate) fn run<'b>(
    block: &'b [u8],
    pos: &mut usize,
    ending: &mut Ending,
    reject_placeholders: bool,
    kernel: Kernel,
    f: &mut impl Take<'b>,
) {
    let mut rest = &block[*pos..];
    let mut expect = *ending;
    loop {
        let reject = reject_placeholders;
        match ENDINGS.iter().position(|e| *e == expect) {
            Some(0) => run_ending::<0, _>(&mut rest, reject, kernel, f),
            Some(1) => run_ending::<1, _>(&mut rest, reject, kernel, f),
            Some(2) => run_ending::<2, _>(&mut rest, reject, kernel, f),
            Some(3) => run_ending::<3, _>(&mut rest, reject, kernel, f),
            _ => {}
        }
        match rest.first_chunk::<WINDOW>().and_then(ending_of) {
            // A line ending not seen before: expect it from now on.
            Some(e) if e != expect => expect = e,
            _ => break,
        }
    }
    *pos = block.len() - rest.len();
    *ending = expect;
}

/// [`run`]'s loop for the lines ending as `ENDINGS[E]`: takes them from `rest` while the fast
/// path accepts them.
#[inline(always)]
fn run_ending<'b, const E: usize, F: Take<'b>>(
    rest: &mut &'b [u8],
    reject_placeholders: bool,
    kernel: Kernel,
    f: &mut F,
) {
    let ending = ENDINGS[E];
    #[cfg(target_arch = "x86_64")]
    if kernel != Kernel::One {
        while let Some(chunk) = rest.first_chunk::<{ avx512::CHUNK }>() {
            // SAFETY: `Kernel::Avx512` and `Kernel::Avx2` are only chosen when the CPU has
            // the features they need.
            let got = unsafe {
                if kernel == Kernel::Avx512 {
                    avx512::four::<E>(chunk)
                } else {
                    avx2::four::<E>(chunk)
                }
            };
            let Some((prefixes, placeholders)) = got else {
                break;
            };
            if reject_placeholders && placeholders != 0 {
                break;
            }
            let (raw, tail) = rest.split_at(4 * ending.len);
            f.four(Four {
                prefixes,
                placeholders,
                raw,
                len: ending.len,
            });
            *rest = tail;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = kernel;
    while let Some(window) = rest.first_chunk::<WINDOW>() {
        let Some(line) = parse(window, ending) else {
            break;
        };
        if line.placeholder && reject_placeholders {
            break;
        }
        let (raw, tail) = rest.split_at(ending.len);
        f.one(line, raw);
        *rest = tail;
    }
}

/// [`parse`] with whatever ending the line has; checks that the portable code agrees.
#[cfg(test)]
fn parse_any(window: &[u8; WINDOW]) -> Option<FastLine> {
    let ending = ending_of(window)?;
    let got = parse(window, ending);
    let portable = portable::prefix_if_valid(window, ending);
    assert_eq!(portable, got.map(|l| l.prefix), "{window:?}");
    got
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nhs::{classify, Field, Rules};

    fn window(s: &[u8]) -> [u8; WINDOW] {
        let mut w = [b'x'; WINDOW];
        w[..s.len()].copy_from_slice(s);
        w
    }

    /// What the general path says of the same line.
    fn general(line: &[u8]) -> Option<FastLine> {
        let nl = line.iter().position(|&b| b == b'\n')?;
        let body = line[..nl].strip_suffix(b"\r").unwrap_or(&line[..nl]);
        let field = body.strip_suffix(b",").unwrap_or(body);
        match classify(field, Rules::default()) {
            Field::Valid {
                number,
                normalised: false,
                placeholder,
            } if field.len() == 10 => Some(FastLine {
                number,
                prefix: (number / 10) as u32,
                len: nl + 1,
                placeholder,
            }),
            _ => None,
        }
    }

    /// Mostly plain valid lines (0), some placeholders (1), some broken (2), some with another
    /// line ending from then on (3).
    fn prop_oneof_kind() -> impl proptest::strategy::Strategy<Value = u8> {
        proptest::sample::select(vec![0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3])
    }

    #[test]
    fn accepts_every_ending() {
        for (line, len) in [
            (&b"9434765919,\r\n"[..], 13),
            (b"9434765919,\n", 12),
            (b"9434765919\r\n", 12),
            (b"9434765919\n", 11),
        ] {
            let got = parse_any(&window(line)).expect("accepted");
            assert_eq!(got.number, 9434765919);
            assert_eq!(got.len, len);
            assert!(!got.placeholder);
        }
    }

    #[test]
    fn leaves_everything_else_to_the_general_path() {
        for line in [
            &b"9434765918,\r\n"[..], // check digit mismatch
            b"1000000010\n",         // remainder 1 would need check digit 10
            b"943476591,\r\n",       // nine digits
            b"94347659190\n",        // eleven digits
            b"9434765919,,\n",       // two commas
            b"9434765919 \n",        // trailing space
            b" 9434765919\n",        // leading space
            b"943 476 5919\n",
            b"9434765919\r\r\n",
            b"9434765919\r", // lone CR is not a line end
            b"9434765919,x\n",
            b"943476591:\n", // ':' is '9' + 1
            b"/434765919\n", // '/' is '0' - 1
            b"94347659\xB919\n",
        ] {
            assert_eq!(
                parse_any(&window(line)),
                None,
                "{:?}",
                String::from_utf8_lossy(line)
            );
            assert_eq!(general(line), None);
        }
    }

    #[test]
    fn ten_bytes_on_their_own() {
        for ten in [
            b"9434765919",
            b"9434765918",
            b"1000000010",
            b"0000000000",
            b"943476591x",
            b"94347 5919",
        ] {
            let want = general(&[&ten[..], b"\n"].concat());
            assert_eq!(
                parse_ten(ten).map(|l| (l.number, l.placeholder)),
                want.map(|l| (l.number, l.placeholder))
            );
        }
    }

    #[test]
    fn multiples_of_111111111() {
        for x in [
            0u32,
            1,
            111_111_110,
            111_111_112,
            999_999_998,
            999_999_999,
            u32::MAX,
        ]
        .into_iter()
        .chain((0..=38).map(|k| k * 111_111_111))
        .chain((0..200_000).map(|i| i * 21_474 + 7))
        {
            assert_eq!(is_multiple_of_111111111(x), x % 111_111_111 == 0, "{x}");
        }
    }

    #[test]
    fn placeholders_and_the_remainder_zero_case() {
        let rep = parse_any(&window(b"0000000000,\r\n")).expect("passes Modulus 11");
        assert!(rep.placeholder && rep.number == 0);
        assert!(parse_any(&window(b"9999999999\n")).unwrap().placeholder);
        // 9999999990? remainder check: the general path decides; the two must agree.
        for line in [&b"9999999990\n"[..], b"1111111119\n", b"9000000009\n"] {
            assert_eq!(parse_any(&window(line)), general(line));
        }
    }

    #[test]
    fn agrees_with_the_general_path_on_many_numbers() {
        // Every tenth prefix over a spread of the range, with all ten final digits: valid and
        // invalid alike, so both sides of the Modulus 11 test are covered.
        let mut accepted = 0;
        let mut prefix = 0u64;
        while prefix < 1_000_000_000 {
            for check in 0..10 {
                let line = format!("{:09}{check},\r\n", prefix);
                let w = window(line.as_bytes());
                let got = parse_any(&w);
                assert_eq!(got, general(line.as_bytes()), "{line:?}");
                accepted += got.is_some() as u32;
            }
            prefix += 999_983; // a prime stride reaches every digit position
        }
        assert!(accepted > 800, "{accepted}");
    }

    /// What [`run`] hands over with `kernel`: each line (with its offset in `block`) and
    /// whether it came in a [`Four`], and where the run stopped and with which ending.
    fn taken(
        block: &[u8],
        reject: bool,
        kernel: Kernel,
    ) -> (Vec<(FastLine, usize)>, usize, Ending, usize) {
        struct Record<'r> {
            base: usize,
            lines: Vec<(FastLine, usize)>,
            fours: usize,
            _block: &'r [u8],
        }
        impl<'b> Take<'b> for Record<'_> {
            fn one(&mut self, line: FastLine, raw: &'b [u8]) {
                assert_eq!(raw.len(), line.len);
                self.lines.push((line, raw.as_ptr() as usize - self.base));
            }
            fn four(&mut self, four: Four<'b>) {
                self.fours += 1;
                for i in 0..4 {
                    let line = four.line(i);
                    assert_eq!(line.prefix, four.prefixes[i]);
                    assert_eq!(line.placeholder, four.placeholders >> i & 1 != 0);
                    self.one(line, four.raw(i));
                }
            }
        }
        let mut record = Record {
            base: block.as_ptr() as usize,
            lines: Vec::new(),
            fours: 0,
            _block: block,
        };
        let (mut pos, mut ending) = (0, Ending::default());
        // as a block walk does: a run, then one line the general way, then a run again
        loop {
            run(block, &mut pos, &mut ending, reject, kernel, &mut record);
            match block[pos..].iter().position(|&b| b == b'\n') {
                Some(nl) => pos += nl + 1,
                None => break,
            }
        }
        (record.lines, pos, ending, record.fours)
    }

    /// A line the fast path never takes, long enough that every line before it is at least
    /// [`WINDOW`] bytes from the end.
    const LAST: &[u8] = b"the end of the block\n";

    /// A block of `.dat`-like lines from `picks`: mostly valid numbers (some of them
    /// placeholders), some invalid ones, and now and then another line ending; then [`LAST`].
    fn block_of(picks: &[(u32, u8)]) -> Vec<u8> {
        let mut block = Vec::new();
        let mut ending: &[u8] = b",\r\n";
        for &(p, kind) in picks {
            let p = p % 1_000_000_000;
            let p = if kind == 1 { (p % 10) * 111_111_111 } else { p };
            let mut d = [0u8; 10];
            match crate::nhs::check_digit_of_prefix(p) {
                Some(check) => {
                    crate::nhs::write_digits(u64::from(p) * 10 + u64::from(check), &mut d)
                }
                None => crate::nhs::write_digits(u64::from(p) * 10, &mut d),
            }
            if kind == 2 {
                d[(p % 10) as usize] = b"x:/ 9"[(p % 5) as usize];
            }
            if kind == 3 {
                ending = [&b",\r\n"[..], b",\n", b"\r\n", b"\n", b"\r"][(p % 5) as usize];
            }
            block.extend_from_slice(&d);
            block.extend_from_slice(ending);
        }
        block.extend_from_slice(LAST);
        block
    }

    #[test]
    fn the_four_line_kernel_takes_runs_of_each_ending() {
        for ending in [&b",\r\n"[..], b",\n", b"\r\n", b"\n"] {
            let mut block = Vec::new();
            let mut prefixes = Vec::new();
            let mut p = 400_000_000u32;
            while prefixes.len() < 40 {
                if let Some(check) = crate::nhs::check_digit_of_prefix(p) {
                    let mut d = [0u8; 10];
                    crate::nhs::write_digits(u64::from(p) * 10 + u64::from(check), &mut d);
                    block.extend_from_slice(&d);
                    block.extend_from_slice(ending);
                    prefixes.push(p);
                }
                p += 7_654_321;
            }
            block.extend_from_slice(LAST);
            for kernel in Kernel::available() {
                let (lines, pos, _, fours) = taken(&block, false, kernel);
                let got: Vec<u32> = lines.iter().map(|(l, _)| l.prefix).collect();
                assert_eq!(got, prefixes, "{kernel:?}");
                assert_eq!(pos, block.len());
                assert!(lines.iter().all(|(l, _)| l.len == 10 + ending.len()));
                if kernel != Kernel::One {
                    // all but the last few lines (the kernel reads 64 bytes) came four at a time
                    assert!(
                        fours * 4 >= 40 - 64 / (10 + ending.len()),
                        "{kernel:?} {fours}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_kernel_takes_the_same_lines_over_the_range() {
        // As `agrees_with_the_general_path_on_many_numbers`, in blocks: every check digit of
        // prefixes spread over the range, so groups of four mix valid and invalid lines.
        let mut picks = Vec::new();
        let mut prefix = 0u32;
        while prefix < 1_000_000_000 {
            picks.push((prefix, 0));
            prefix += 999_983;
        }
        let mut block = Vec::new();
        for &(p, _) in &picks {
            for check in 0..10 {
                block.extend_from_slice(format!("{p:09}{check},\r\n").as_bytes());
            }
        }
        block.extend_from_slice(LAST);
        every_kernel_agrees(&block, false);
        // and the valid ones alone, four at a time where the CPU can
        let taken = every_kernel_agrees(&block_of(&picks), false);
        assert_eq!(
            taken,
            picks
                .iter()
                .filter(|(p, _)| crate::nhs::check_digit_of_prefix(*p).is_some())
                .count()
        );
    }

    /// Checks that every kernel takes the same lines of `block` and stops in the same place;
    /// returns how many lines they took.
    fn every_kernel_agrees(block: &[u8], reject: bool) -> usize {
        let want = taken(block, reject, Kernel::One);
        for kernel in Kernel::available() {
            let got = taken(block, reject, kernel);
            assert_eq!(
                (&got.0, got.1, got.2),
                (&want.0, want.1, want.2),
                "{kernel:?}"
            );
        }
        want.0.len()
    }

    proptest::proptest! {
        #[test]
        fn every_kernel_takes_the_same_lines(
            picks in proptest::collection::vec((proptest::num::u32::ANY, prop_oneof_kind()), 0..200),
            reject in proptest::bool::ANY,
        ) {
            every_kernel_agrees(&block_of(&picks), reject);
        }

        #[test]
        fn agrees_with_the_general_path_on_any_bytes(
            bytes in proptest::collection::vec(
                proptest::sample::select(b"0123456789,\r\n /:".to_vec()), WINDOW)
        ) {
            let w: [u8; WINDOW] = bytes.try_into().unwrap();
            proptest::prop_assert_eq!(parse_any(&w), general(&w));
        }
    }
}
