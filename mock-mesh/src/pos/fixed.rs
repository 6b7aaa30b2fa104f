//! The judging loop's fast path on x86-64: a stretch of `.dat` lines `NNNNNNNNNN,\r\n` (ndop's,
//! and the POS documentation's shape), each checked, converted and judged from one 16-byte
//! vector load, with the counts and the kept runs in registers. About 40 % of the scalar
//! path's instructions a line: the line's shape (ten digits, then `,\r\n`) is one compare of
//! the line against its pattern, and Modulus 11's weighted sum and the number's value are two
//! multiply-adds each (SSSE3/SSE4.1, found at run time; elsewhere the scalar path judges every
//! line). Any line it does not take (another shape, an invalid number, the buffer's last 15
//! bytes) is left to the scalar path, which judges it as before.

use std::ops::Range;

use super::Decider;

/// Counts of the lines judged.
#[derive(Default)]
pub(super) struct Counts {
    pub(super) lines: u64,
    pub(super) kept: u64,
}

/// Judges the `.dat` lines from `data[start..]` while there are; the offset of the first line
/// not judged. Each opted-out line ends the run of kept lines before it (pushed to `runs` if
/// not empty) and starts the next after it (`run_start`). Falls back to judging nothing where
/// the CPU lacks SSSE3 and SSE4.1.
#[inline]
pub(super) fn judge_lines(
    data: &[u8],
    start: usize,
    decider: &Decider,
    runs: &mut Vec<Range<usize>>,
    run_start: &mut usize,
    counts: &mut Counts,
) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        if simd_available() {
            // SAFETY: the CPU has the features the function is compiled for (checked above).
            return unsafe { x86::judge_lines(data, start, decider, runs, run_start, counts) };
        }
    }
    let _ = (data, decider, runs, run_start, counts);
    start
}

/// Whether the vector path can run here (cached by the standard library).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(super) fn simd_available() -> bool {
    std::is_x86_feature_detected!("ssse3") && std::is_x86_feature_detected!("sse4.1")
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::super::Decider;
    use super::Counts;

    /// The line's pattern: each digit XOR `'0'` is its value (at most 9 exactly for `'0'..='9'`),
    /// and `,\r\n` XOR itself is 0; the last three bytes (the next line's) are not looked at.
    const PATTERN: [u8; 16] = *b"0000000000,\r\n\0\0\0";
    /// The most each byte XOR [`PATTERN`] may be.
    const LIMIT: [u8; 16] = [9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 0, 0, 0, 255, 255, 255];
    /// Modulus 11's weights, the check digit's 1 included: the sum is a multiple of 11.
    const WEIGHTS: [i8; 16] = [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0];
    /// Digit pairs to their value.
    const TENS: [i8; 16] = [10, 1, 10, 1, 10, 1, 10, 1, 10, 1, 0, 0, 0, 0, 0, 0];
    /// Pairs of pairs to four digits; the fifth pair alone.
    const HUNDREDS: [i16; 8] = [100, 1, 100, 1, 1, 0, 0, 0];

    /// The number of the `.dat` line at `p` (16 bytes readable there), if the line is ten
    /// ASCII digits passing Modulus 11 then `,\r\n`: [`super::super::crlf_line_value`]'s
    /// answer, from one vector load.
    ///
    /// # Safety
    /// 16 bytes must be readable at `p`, and the CPU must have SSSE3 and SSE4.1.
    #[inline]
    #[target_feature(enable = "ssse3,sse4.1")]
    pub(in super::super) unsafe fn line_value(p: *const u8) -> Option<u64> {
        // SAFETY: the caller promises 16 readable bytes; loadu takes any alignment.
        let v = unsafe { _mm_loadu_si128(p.cast()) };
        let x = _mm_xor_si128(v, unsafe { _mm_loadu_si128(PATTERN.as_ptr().cast()) });
        let limit = unsafe { _mm_loadu_si128(LIMIT.as_ptr().cast()) };
        if _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(x, limit), x)) != 0xFFFF {
            return None;
        }
        // the weighted sum: five 16-bit lanes of at most 171, so their bytes' sum is theirs
        let w = unsafe { _mm_loadu_si128(WEIGHTS.as_ptr().cast()) };
        let pairs = _mm_maddubs_epi16(x, w);
        let sad = _mm_sad_epu8(pairs, _mm_setzero_si128());
        let sum = (_mm_cvtsi128_si32(sad) + _mm_extract_epi32::<2>(sad)) as u32;
        if !sum.is_multiple_of(11) {
            return None;
        }
        let tens = unsafe { _mm_loadu_si128(TENS.as_ptr().cast()) };
        let hundreds = unsafe { _mm_loadu_si128(HUNDREDS.as_ptr().cast()) };
        let fours = _mm_madd_epi16(_mm_maddubs_epi16(x, tens), hundreds);
        let lo = _mm_cvtsi128_si64(fours) as u64;
        let last = _mm_extract_epi32::<2>(fours) as u64;
        Some((lo & 0xFFFF_FFFF) * 1_000_000 + (lo >> 32) * 100 + last)
    }

    /// [`super::judge_lines`], vectorised.
    ///
    /// # Safety
    /// The CPU must have SSSE3 and SSE4.1.
    #[target_feature(enable = "ssse3,sse4.1")]
    pub(in super::super) unsafe fn judge_lines(
        data: &[u8],
        start: usize,
        decider: &Decider,
        runs: &mut Vec<Range<usize>>,
        run_start: &mut usize,
        counts: &mut Counts,
    ) -> usize {
        let (mut pos, mut lines, mut kept, mut from) = (start, 0u64, 0u64, *run_start);
        while pos + 16 <= data.len() {
            // SAFETY: 16 bytes from `pos` are in `data` (the loop's condition).
            let Some(n) = (unsafe { line_value(data.as_ptr().add(pos)) }) else {
                break;
            };
            lines += 1;
            if decider.opted_out(n) {
                if from < pos {
                    runs.push(from..pos);
                }
                from = pos + 13;
            } else {
                kept += 1;
            }
            pos += 13;
        }
        counts.lines += lines;
        counts.kept += kept;
        *run_start = from;
        pos
    }
}
