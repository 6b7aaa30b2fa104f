//! The NHS number: the Modulus 11 check and the classification of one field.
//!
//! The rule is the NHS Data Dictionary's (attribute NHS NUMBER, "the use of this algorithm is
//! mandatory"): multiply the first nine digits by the weights 10, 9, …, 2, add the products and
//! take the remainder `r` of the sum divided by 11. The check digit is `11 - r`; when that is 11
//! the check digit is 0, and when it is 10 no valid number exists for those nine digits.
//!
//! Classification works on bytes, never allocates, and gives every field exactly one outcome:
//! blank, valid (possibly normalised, possibly a placeholder) or invalid with one [`Reason`].

use serde::Serialize;

/// Why a line was quarantined. Each invalid line gets exactly one reason, checked in this order:
/// the line's length in bytes, the CSV structure, non-digit characters, the digit count, then
/// the check digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Not exactly ten digits (after the normalisation allowed by the mode).
    WrongLength,
    /// A character other than an ASCII digit.
    NonDigit,
    /// Ten digits whose tenth differs from the computed Modulus 11 check digit.
    CheckDigitMismatch,
    /// Ten digits whose first nine give `sum mod 11 = 1`: no check digit fits, never issued.
    NoCheckDigitPossible,
    /// A repdigit such as `0000000000` (passes Modulus 11), rejected by `--reject-placeholders`.
    Placeholder,
    /// CSV row with too few columns, or an empty NHS-number field.
    MissingField,
    /// CSV record with text after a closing quote (`"ab"c`): the producer did not escape a
    /// quote, so the record cannot be trusted.
    BadQuoting,
    /// A line of a one-number-per-line file longer than the longest inspected
    /// ([`crate::MAX_LINE`] by default); its content is not inspected further.
    LineTooLong,
    /// CSV record whose quoted field is still open at the end of the input: it runs from its
    /// starting line to the end of the file.
    UnterminatedQuote,
}

impl Reason {
    /// Every reason, in a fixed order (used for counting arrays and reports).
    pub const ALL: [Reason; 9] = [
        Reason::WrongLength,
        Reason::NonDigit,
        Reason::CheckDigitMismatch,
        Reason::NoCheckDigitPossible,
        Reason::Placeholder,
        Reason::MissingField,
        Reason::BadQuoting,
        Reason::LineTooLong,
        Reason::UnterminatedQuote,
    ];

    /// Position of this reason in [`Reason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The snake_case name used in `invalid.csv` and `summary.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::WrongLength => "wrong_length",
            Reason::NonDigit => "non_digit",
            Reason::CheckDigitMismatch => "check_digit_mismatch",
            Reason::NoCheckDigitPossible => "no_check_digit_possible",
            Reason::Placeholder => "placeholder",
            Reason::MissingField => "missing_field",
            Reason::BadQuoting => "bad_quoting",
            Reason::LineTooLong => "line_too_long",
            Reason::UnterminatedQuote => "unterminated_quote",
        }
    }

    /// True for the reasons that say the record itself could not be read (`bad_quoting`,
    /// `unterminated_quote`, `line_too_long`): counted as `unparseable`, not `invalid`.
    pub fn is_unparseable(self) -> bool {
        matches!(
            self,
            Reason::BadQuoting | Reason::UnterminatedQuote | Reason::LineTooLong
        )
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Modulus 11 check digit for nine leading digits (each 0..=9), or `None` when the
/// remainder is 1 and no valid NHS number has this prefix.
#[inline]
pub fn check_digit(first9: &[u8; 9]) -> Option<u8> {
    let mut sum = 0u32;
    let mut i = 0;
    while i < 9 {
        sum += first9[i] as u32 * (10 - i as u32);
        i += 1;
    }
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        c => Some(c as u8),
    }
}

/// The check digit for a nine-digit prefix given as a number below 10^9.
#[inline]
pub fn check_digit_of_prefix(prefix: u32) -> Option<u8> {
    digits_of_prefix(prefix).map(|d| d[9] - b'0')
}

/// "00", "01", …, "99".
const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// The ten ASCII digits of the valid NHS number whose first nine digits are `prefix` (below
/// 10^9), or `None` when no check digit fits. Four divisions and a pair table, for writing
/// sets of numbers out quickly.
#[inline]
pub fn digits_of_prefix(prefix: u32) -> Option<[u8; 10]> {
    let mut d = [b'0'; 10];
    let (first, rest) = (prefix / 100_000_000, prefix % 100_000_000);
    d[0] = b'0' + first as u8;
    let (hi, lo) = (rest / 10_000, rest % 10_000);
    for (i, pair) in [hi / 100, hi % 100, lo / 100, lo % 100]
        .into_iter()
        .enumerate()
    {
        let at = pair as usize * 2;
        d[1 + 2 * i..3 + 2 * i].copy_from_slice(&PAIRS[at..at + 2]);
    }
    let mut sum = 0u32;
    for (i, &c) in d[..9].iter().enumerate() {
        sum += (c - b'0') as u32 * (10 - i as u32);
    }
    d[9] = match 11 - sum % 11 {
        11 => b'0',
        10 => return None,
        c => b'0' + c as u8,
    };
    Some(d)
}

/// The weight of each of the nine leading digits in the Modulus 11 sum.
const WEIGHTS: [u32; 9] = [10, 9, 8, 7, 6, 5, 4, 3, 2];

/// For each `n` below 10,000: its four ASCII digits (little-endian: the first digit in the low
/// byte) in the low 32 bits and their part of the Modulus 11 sum as the last four of nine
/// digits (weights 5..2) above them. Padded to 2^14 entries, so that an index masked with
/// [`LAST_FOUR_MASK`] needs no bounds check (only the first 10,000 are ever used).
static LAST_FOUR: [u64; LAST_FOUR_MASK + 1] = {
    let mut t = [0u64; LAST_FOUR_MASK + 1];
    let mut n = 0;
    while n < 10_000 {
        let d = [n / 1000, n / 100 % 10, n / 10 % 10, n % 10];
        let mut ascii = 0u64;
        let mut sum = 0u64;
        let mut i = 0;
        while i < 4 {
            ascii |= (b'0' as u64 + d[i] as u64) << (8 * i);
            sum += d[i] as u64 * WEIGHTS[5 + i] as u64;
            i += 1;
        }
        t[n] = ascii | sum << 32;
        n += 1;
    }
    t
};
const LAST_FOUR_MASK: usize = (1 << 14) - 1;

/// The ASCII check digit for each Modulus 11 sum of nine digits (at most 9 × 54 = 486), or 0
/// where no check digit fits. Padded to 512 entries: an index masked with 511 needs no bounds
/// check.
static CHECK_OF_SUM: [u8; 512] = {
    let mut t = [0u8; 512];
    let mut s = 0;
    while s < 487 {
        t[s] = match 11 - s % 11 {
            11 => b'0',
            10 => 0,
            c => b'0' + c as u8,
        };
        s += 1;
    }
    t
};

/// The ten ASCII digits of valid NHS numbers from their nine-digit prefixes, for writing a set
/// out in order: the first five digits and their part of the sum are kept while the prefixes
/// stay in one run of 10,000, and the last four come from a table, so a number costs two table
/// loads and no division. Correct in any order; fastest in ascending order.
#[derive(Debug, Clone)]
pub struct PrefixDigits {
    /// The first prefix of the current run of 10,000.
    base: u32,
    /// Its first five digits in ASCII, the first in the low byte.
    first_five: u64,
    /// Their part of the Modulus 11 sum.
    sum: u32,
}

impl Default for PrefixDigits {
    fn default() -> Self {
        Self::new()
    }
}

impl PrefixDigits {
    /// A formatter, positioned at prefix 0.
    pub fn new() -> Self {
        Self::run_of(0)
    }

    /// The formatter positioned at the run of 10,000 holding `prefix`. By value, not through
    /// `&mut self`: a caller's formatter then stays in registers in its loop.
    #[cold]
    fn run_of(prefix: u32) -> Self {
        let high = prefix / 10_000;
        let (mut first_five, mut sum) = (0, 0);
        let mut rest = high;
        for i in (0..5).rev() {
            let d = rest % 10;
            rest /= 10;
            first_five |= u64::from(b'0' as u32 + d) << (8 * i);
            sum += d * WEIGHTS[i];
        }
        PrefixDigits {
            base: high * 10_000,
            first_five,
            sum,
        }
    }

    /// The ten ASCII digits of the number with the nine-digit prefix `prefix` (below 10^9) as
    /// two halves, the first digit in the low byte of the first: the first eight digits, and
    /// the last two in the low two bytes of the second (its other bytes zero). Where no check
    /// digit fits, the tenth byte is 0: for prefixes known to be of valid numbers (a set's
    /// members), without a test.
    #[inline(always)]
    pub fn halves(&mut self, prefix: u32) -> (u64, u64) {
        if prefix.wrapping_sub(self.base) >= 10_000 {
            *self = Self::run_of(prefix);
        }
        let last = LAST_FOUR[(prefix.wrapping_sub(self.base)) as usize & LAST_FOUR_MASK];
        let check = CHECK_OF_SUM[(self.sum + (last >> 32) as u32) as usize & 511];
        let last = last & 0xffff_ffff;
        (
            self.first_five | last << 40,
            last >> 24 | u64::from(check) << 8,
        )
    }

    /// The ten ASCII digits of the valid NHS number whose first nine digits are `prefix`
    /// (below 10^9), the first digit in the low byte of the result, or `None` when no check
    /// digit fits.
    #[inline(always)]
    pub fn ascii(&mut self, prefix: u32) -> Option<u128> {
        let (low, high) = self.halves(prefix);
        if high >> 8 == 0 {
            return None;
        }
        Some(u128::from(low) | u128::from(high) << 64)
    }

    /// [`PrefixDigits::ascii`] as an array.
    #[inline(always)]
    pub fn digits(&mut self, prefix: u32) -> Option<[u8; 10]> {
        let mut out = [0u8; 10];
        out.copy_from_slice(&self.ascii(prefix)?.to_le_bytes()[..10]);
        Some(out)
    }
}

/// True when `s` is exactly ten ASCII digits that pass Modulus 11.
pub fn is_valid(s: &[u8]) -> bool {
    check_ten(s).is_ok()
}

/// Checks exactly ten bytes that are all ASCII digits; returns the number.
#[inline]
fn check_ten(s: &[u8]) -> Result<u64, Reason> {
    let Ok(bytes) = <&[u8; 10]>::try_from(s) else {
        return Err(Reason::WrongLength);
    };
    let mut digits = [0u8; 10];
    for (d, &b) in digits.iter_mut().zip(bytes) {
        *d = b.wrapping_sub(b'0');
        if *d > 9 {
            return Err(Reason::NonDigit);
        }
    }
    let first9: &[u8; 9] = digits[..9].try_into().expect("nine of ten");
    match check_digit(first9) {
        None => Err(Reason::NoCheckDigitPossible),
        Some(c) if c != digits[9] => Err(Reason::CheckDigitMismatch),
        Some(_) => Ok(digits.iter().fold(0u64, |n, &d| n * 10 + d as u64)),
    }
}

/// How a field may be written for it to count as an NHS number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rules {
    /// Only ten bare digits; no surrounding whitespace, no 3-3-4 separators.
    pub strict: bool,
    /// Repdigits (`0000000000` … `9999999999`) are invalid with [`Reason::Placeholder`].
    pub reject_placeholders: bool,
}

/// The outcome for one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Nothing but whitespace.
    Blank,
    /// A valid NHS number.
    Valid {
        /// The ten digits as a number (below 10^10).
        number: u64,
        /// Whitespace was trimmed or 3-3-4 separators removed to reach ten digits.
        normalised: bool,
        /// A repdigit, kept (see [`Rules::reject_placeholders`]).
        placeholder: bool,
    },
    /// Not a valid NHS number.
    Invalid(Reason),
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_space(b)).unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| !is_space(b))
        .map_or(start, |e| e + 1);
    &s[start..end]
}

fn is_repdigit(n: u64) -> bool {
    n.is_multiple_of(1_111_111_111)
}

/// Classifies one field (already separated from its line ending and, in `.dat` lines, from
/// its trailing comma).
#[inline]
pub fn classify(field: &[u8], rules: Rules) -> Field {
    // Fastest path: ten bare digits that pass (see `swar`); anything else is worked out below.
    if let Ok(ten) = <&[u8; 10]>::try_from(field) {
        if let Some(l) = crate::swar::parse_ten(ten) {
            return if l.placeholder && rules.reject_placeholders {
                Field::Invalid(Reason::Placeholder)
            } else {
                Field::Valid {
                    number: l.number,
                    normalised: false,
                    placeholder: l.placeholder,
                }
            };
        }
    }
    // Fast path: ten bare digits.
    let fast = if field.len() == 10 {
        Some(check_ten(field))
    } else {
        None
    };
    let (result, normalised) = if let Some(r) = fast.filter(|r| *r != Err(Reason::NonDigit)) {
        (r, false)
    } else {
        let trimmed = trim(field);
        if trimmed.is_empty() {
            return Field::Blank;
        }
        if rules.strict {
            // Whitespace or separators are characters that are not digits.
            let reason = if field.iter().any(|b| !b.is_ascii_digit()) {
                Reason::NonDigit
            } else {
                Reason::WrongLength
            };
            return Field::Invalid(reason);
        }
        normalise(trimmed)
    };
    match result {
        Ok(number) => {
            let placeholder = is_repdigit(number);
            if placeholder && rules.reject_placeholders {
                Field::Invalid(Reason::Placeholder)
            } else {
                Field::Valid {
                    number,
                    normalised,
                    placeholder,
                }
            }
        }
        Err(reason) => Field::Invalid(reason),
    }
}

/// Lenient forms: surrounding whitespace already trimmed; accept `DDDDDDDDDD`, `DDD DDD DDDD`
/// and `DDD-DDD-DDDD` (one separator, the same one twice). Returns whether anything was changed
/// relative to the untrimmed field (the caller knows whether trimming happened).
fn normalise(t: &[u8]) -> (Result<u64, Reason>, bool) {
    if t.len() == 12 && (t[3] == b' ' || t[3] == b'-') && t[7] == t[3] {
        let mut ten = [0u8; 10];
        ten[..3].copy_from_slice(&t[..3]);
        ten[3..6].copy_from_slice(&t[4..7]);
        ten[6..].copy_from_slice(&t[8..]);
        return (check_ten(&ten), true);
    }
    if t.iter().any(|b| !b.is_ascii_digit()) {
        return (Err(Reason::NonDigit), true);
    }
    // Only trimming can have happened (the field was not ten bytes long).
    (check_ten(t), true)
}

/// Writes the ten digits of `number` (below 10^10) into `out`.
#[inline]
pub fn write_digits(number: u64, out: &mut [u8; 10]) {
    let mut n = number;
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LENIENT: Rules = Rules {
        strict: false,
        reject_placeholders: false,
    };

    fn reason(s: &str) -> Option<Reason> {
        match classify(s.as_bytes(), LENIENT) {
            Field::Invalid(r) => Some(r),
            _ => None,
        }
    }

    #[test]
    fn digits_of_prefix_agree_with_the_rule() {
        let mut prefix = 0u32;
        while prefix < 1_000_000_000 {
            let mut nine = [0u8; 9];
            let mut p = prefix;
            for d in nine.iter_mut().rev() {
                *d = (p % 10) as u8;
                p /= 10;
            }
            match (digits_of_prefix(prefix), check_digit(&nine)) {
                (Some(ten), Some(c)) => {
                    let want: Vec<u8> = nine.iter().chain([&c]).map(|d| b'0' + d).collect();
                    assert_eq!(&ten[..], &want[..], "{prefix}");
                    assert!(is_valid(&ten));
                }
                (None, None) => {}
                other => panic!("{prefix}: {other:?}"),
            }
            prefix += 7_919; // a prime stride through the whole range
        }
        assert_eq!(&digits_of_prefix(943_476_591).unwrap(), b"9434765919");
        assert_eq!(&digits_of_prefix(999_999_999).unwrap(), b"9999999999");
        assert_eq!(&digits_of_prefix(0).unwrap(), b"0000000000");
    }

    #[test]
    fn prefix_digits_agree_with_digits_of_prefix() {
        // Ascending runs across runs of 10,000 (and a skip back), then a stride in order and
        // out of order, so the kept five digits are reused, moved forward and moved back.
        let mut d = PrefixDigits::new();
        let runs = [
            0..20_050,
            9_999_990..10_000_010,
            123_456_000..123_476_000,
            5_000..5_100,
            999_980_000..1_000_000_000,
        ];
        let strided = (0..1_000_000_000u32).step_by(7_919);
        let backwards = (0..1_000_000_000u32).rev().step_by(104_729);
        for prefix in runs.into_iter().flatten().chain(strided).chain(backwards) {
            assert_eq!(d.digits(prefix), digits_of_prefix(prefix), "{prefix}");
        }
        assert_eq!(&d.digits(943_476_591).unwrap(), b"9434765919");
        assert_eq!(d.ascii(0).unwrap().to_le_bytes()[..11], *b"0000000000\0");
    }

    #[test]
    fn worked_example_9434765919() {
        // 9·10+4·9+3·8+4·7+7·6+6·5+5·4+9·3+1·2 = 299; 299 mod 11 = 2; 11 − 2 = 9.
        assert_eq!(check_digit(&[9, 4, 3, 4, 7, 6, 5, 9, 1]), Some(9));
        assert!(is_valid(b"9434765919"));
        assert_eq!(reason("9434765918"), Some(Reason::CheckDigitMismatch));
    }

    #[test]
    fn remainder_zero_gives_check_digit_zero() {
        // 9991000100: 9·10+9·9+9·8+1·7+0+0+0+1·3+0 = 253 = 23·11 → r = 0 → check 0.
        assert_eq!(check_digit(&[9, 9, 9, 1, 0, 0, 0, 1, 0]), Some(0));
        assert!(is_valid(b"9991000100"));
        assert!(is_valid(b"9876543210"));
        assert_eq!(reason("9991000101"), Some(Reason::CheckDigitMismatch));
    }

    #[test]
    fn remainder_one_has_no_check_digit() {
        // 999123456x: sum 320, 320 mod 11 = 1 → no valid number, whatever the tenth digit.
        for last in 0..=9 {
            let s = format!("999123456{last}");
            assert_eq!(reason(&s), Some(Reason::NoCheckDigitPossible), "{s}");
        }
        assert_eq!(check_digit(&[9, 9, 9, 1, 2, 3, 4, 5, 6]), None);
    }

    #[test]
    fn each_invalid_reason() {
        assert_eq!(reason("943476591"), Some(Reason::WrongLength));
        assert_eq!(reason("94347659190"), Some(Reason::WrongLength));
        assert_eq!(reason("943476591X"), Some(Reason::NonDigit));
        assert_eq!(reason("N/A"), Some(Reason::NonDigit));
        assert_eq!(reason("943 476 591"), Some(Reason::NonDigit));
        assert_eq!(reason("4865447041"), Some(Reason::CheckDigitMismatch));
        assert_eq!(reason("9000961849"), Some(Reason::NoCheckDigitPossible));
        let reject = Rules {
            reject_placeholders: true,
            ..LENIENT
        };
        assert_eq!(
            classify(b"9999999999", reject),
            Field::Invalid(Reason::Placeholder)
        );
    }

    #[test]
    fn published_fixtures() {
        for s in [
            "9000000009",
            "1234567881",
            "0211165794",
            "0402070763",
            "6328797966",
            "6148595893",
            "4865447040",
            "4823917286",
            "9992656328",
            "9991000003",
        ] {
            assert!(is_valid(s.as_bytes()), "{s}");
        }
        for s in [
            "1234567890",
            "9991234560",
            "0101010000",
            "9111111124",
            "9222222228",
        ] {
            assert!(!is_valid(s.as_bytes()), "{s}");
        }
    }

    #[test]
    fn repdigits_pass_and_are_flagged() {
        for d in 0..=9u64 {
            let n = d * 1_111_111_111;
            let s = format!("{n:010}");
            assert_eq!(
                classify(s.as_bytes(), LENIENT),
                Field::Valid {
                    number: n,
                    normalised: false,
                    placeholder: true
                }
            );
        }
    }

    #[test]
    fn normalised_forms() {
        let want = Field::Valid {
            number: 9434765919,
            normalised: true,
            placeholder: false,
        };
        for s in [
            "943 476 5919",
            "943-476-5919",
            "  9434765919\t",
            " 943 476 5919 ",
        ] {
            assert_eq!(classify(s.as_bytes(), LENIENT), want, "{s:?}");
        }
        assert_eq!(reason("943-476 5919"), Some(Reason::NonDigit));
        assert_eq!(classify(b"   ", LENIENT), Field::Blank);
        assert_eq!(classify(b"", LENIENT), Field::Blank);
    }

    #[test]
    fn strict_accepts_only_bare_digits() {
        let strict = Rules {
            strict: true,
            ..LENIENT
        };
        assert!(matches!(
            classify(b"9434765919", strict),
            Field::Valid { .. }
        ));
        assert_eq!(
            classify(b"943 476 5919", strict),
            Field::Invalid(Reason::NonDigit)
        );
        assert_eq!(
            classify(b" 9434765919", strict),
            Field::Invalid(Reason::NonDigit)
        );
        assert_eq!(
            classify(b"943476591", strict),
            Field::Invalid(Reason::WrongLength)
        );
        assert_eq!(classify(b"  ", strict), Field::Blank);
    }

    #[test]
    fn published_test_patients_all_pass() {
        let table = include_str!("../../testdata/test-patients.csv");
        let numbers: Vec<&str> = table
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap())
            .collect();
        assert_eq!(numbers.len(), 35);
        for n in numbers {
            assert!(is_valid(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn against_a_naive_oracle() {
        // Exhaustive over a slice of prefixes: compare with the textbook formula.
        for prefix in (0..1_000_000_000u32).step_by(7_919_993) {
            let digits: Vec<u32> = format!("{prefix:09}")
                .bytes()
                .map(|b| (b - b'0') as u32)
                .collect();
            let sum: u32 = digits.iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
            let naive = match 11 - sum % 11 {
                11 => Some(0),
                10 => None,
                c => Some(c as u8),
            };
            assert_eq!(check_digit_of_prefix(prefix), naive, "{prefix}");
        }
    }
}
