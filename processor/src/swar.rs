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
    prefix.map(|prefix| line(window, prefix, ending))
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

/// The line for a window whose ten digits pass, given their first nine as a number.
#[inline(always)]
fn line(window: &[u8; WINDOW], prefix: u32, ending: Ending) -> FastLine {
    FastLine {
        number: prefix as u64 * 10 + (window[9] - b'0') as u64,
        prefix,
        len: ending.len,
        // A valid repdigit's check digit is its digit (54·d ≡ -d mod 11), so the prefix
        // decides: 0, 111111111, …, 999999999.
        placeholder: is_multiple_of_111111111(prefix),
    }
}

/// `x % D == 0` for an odd `D`, as one multiplication and one comparison: an odd divisor has
/// an inverse modulo 2^32, and the multiples of `D` are exactly the `x` it maps to at most
/// `u32::MAX / D`. (The compiler's own remainder takes five or six instructions here.)
#[inline(always)]
fn is_multiple_of<const D: u32>(x: u32) -> bool {
    let inverse = const {
        assert!(D % 2 == 1);
        // Newton's iteration: each step doubles the correct low bits (d·d ≡ 1 mod 8 to start).
        let mut x = D;
        let mut i = 0;
        while i < 4 {
            x = x.wrapping_mul(2u32.wrapping_sub(D.wrapping_mul(x)));
            i += 1;
        }
        assert!(D.wrapping_mul(x) == 1);
        x
    };
    x.wrapping_mul(inverse) <= u32::MAX / D
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
        const NINES: u64 = 0x0909_0909_0909_0909;
        // The ending's bytes minus '0', each wrapping on its own, in the lanes after the digits
        // (lanes past the ending are not looked at).
        let mut tail = 0u64;
        for i in 0..3 {
            tail |= u64::from(((ending.bits >> (8 * i)) as u8).wrapping_sub(b'0')) << (8 * i);
        }
        let need = 0x3FF | (((1 << (ending.len - 10)) - 1) << 10);
        // SAFETY: SSE2 is part of the x86-64 baseline, so every intrinsic here is available on
        // every CPU this code runs on; `window` is 16 readable bytes and `loadu` has no
        // alignment requirement.
        let (line, sum, fours) = unsafe {
            let v = _mm_loadu_si128(window.as_ptr().cast());
            let d = _mm_sub_epi8(v, _mm_set1_epi8(b'0' as i8));
            let cap = _mm_set_epi64x(0x0909, NINES as i64);
            let want = _mm_set_epi64x((0x0909 | tail << 16) as i64, NINES as i64);
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

/// Takes lines from `block[*pos..]` while the fast path accepts them, calling `f(line, raw)`
/// for each and moving `*pos` past it; stops before the first line it does not take. Lines
/// with a placeholder are not taken when `reject_placeholders` (the general path rejects them).
/// `*ending` is the ending expected first, and on return the last one seen.
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
    mut f: impl FnMut(FastLine, &'b [u8]),
) {
    let mut rest = &block[*pos..];
    let mut expect = *ending;
    loop {
        let reject = reject_placeholders;
        match ENDINGS.iter().position(|e| *e == expect) {
            Some(0) => run_ending::<0, _>(&mut rest, reject, &mut f),
            Some(1) => run_ending::<1, _>(&mut rest, reject, &mut f),
            Some(2) => run_ending::<2, _>(&mut rest, reject, &mut f),
            Some(3) => run_ending::<3, _>(&mut rest, reject, &mut f),
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
fn run_ending<'b, const E: usize, F: FnMut(FastLine, &'b [u8])>(
    rest: &mut &'b [u8],
    reject_placeholders: bool,
    f: &mut F,
) {
    let ending = ENDINGS[E];
    while let Some(window) = rest.first_chunk::<WINDOW>() {
        let Some(line) = parse(window, ending) else {
            break;
        };
        if line.placeholder && reject_placeholders {
            break;
        }
        let (raw, tail) = rest.split_at(ending.len);
        f(line, raw);
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

    proptest::proptest! {
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
