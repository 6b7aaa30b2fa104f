//! Synthetic extracts for benchmarks and tests, with their exact truth.
//!
//! Every valid number is in the 999 test range (`999 xxx xxxx` with a correct check digit),
//! which is never issued to a patient. Unique numbers are drawn without replacement from a
//! seeded permutation of the range's million nine-digit prefixes (about 909,000 of which have a
//! check digit), so a large extract is necessarily mostly repeats. Invalid lines are made on
//! purpose, one kind at a time, and counted by kind; the truth is what the construction did,
//! which makes it an independent check of the validator.

use crate::dat::LineEnding;
use crate::nhs::{check_digit_of_prefix, write_digits, Reason};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{self, Write};

/// Shape of the generated file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GenFormat {
    /// POS `.dat` lines: `9991234567,`.
    #[default]
    Dat,
    /// Bare numbers, one per line.
    Plain,
    /// CSV `record_id,nhs_number,event_date,code` with a header row.
    Csv,
}

impl std::str::FromStr for GenFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dat" => Ok(GenFormat::Dat),
            "plain" => Ok(GenFormat::Plain),
            "csv" => Ok(GenFormat::Csv),
            _ => Err(format!("expected dat, plain or csv, got {s:?}")),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Data lines (the CSV header is extra).
    pub lines: u64,
    /// Seed: the same seed and options give the same bytes.
    pub seed: u64,
    /// Share of lines that repeat an earlier number.
    pub dup_frac: f64,
    /// Share of lines that are invalid.
    pub invalid_frac: f64,
    /// Share of lines that are blank.
    pub blank_frac: f64,
    /// Line ending.
    pub line_ending: LineEnding,
    /// File shape.
    pub format: GenFormat,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            lines: 1000,
            seed: 1,
            dup_frac: 0.1,
            invalid_frac: 0.001,
            blank_frac: 0.0,
            line_ending: LineEnding::Crlf,
            format: GenFormat::Dat,
        }
    }
}

/// The exact counts of a generated file, in the shape of the validator's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Truth {
    /// Data lines.
    pub lines: u64,
    /// Valid lines.
    pub valid: u64,
    /// Distinct valid numbers.
    pub unique: u64,
    /// Valid lines repeating an earlier number.
    pub duplicates: u64,
    /// Invalid lines.
    pub invalid: u64,
    /// Blank lines.
    pub blank: u64,
    /// Unparseable lines: none are generated (always 0).
    pub unparseable: u64,
    /// Invalid lines by reason.
    pub invalid_by_reason: BTreeMap<&'static str, u64>,
    /// Unparseable lines by reason (always empty).
    pub unparseable_by_reason: BTreeMap<&'static str, u64>,
}

/// SplitMix64: small, fast, and good enough for test data (the benches' generators use it
/// too, so the same seed means the same stream everywhere).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform below `n` (`n` < 2^32).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }
    /// Uniform in [0, 1).
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const RANGE: u64 = 1_000_000;
const STRIDE: u64 = 387_419; // odd and not a multiple of 5: a permutation of 0..10^6

/// Writes a synthetic extract to `out` and returns its truth.
pub fn generate(out: &mut dyn Write, opts: &GenerateOptions) -> io::Result<Truth> {
    let mut rng = Rng(opts.seed);
    let offset = rng.below(RANGE);
    let mut next_j = 0u64;
    let mut emitted: Vec<u32> = Vec::new();
    let mut truth = Truth::default();
    let eol = opts.line_ending.bytes();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    if opts.format == GenFormat::Csv {
        buf.extend_from_slice(b"record_id,nhs_number,event_date,code");
        buf.extend_from_slice(eol);
    }
    let mut next_unique = |rng: &mut Rng| -> Option<u32> {
        while next_j < RANGE {
            let p = ((next_j * STRIDE + offset) % RANGE) as u32;
            next_j += 1;
            if check_digit_of_prefix(999_000_000 + p).is_some() {
                return Some(p);
            }
        }
        let _ = rng;
        None
    };
    for i in 0..opts.lines {
        let r = rng.unit();
        let mut field = [0u8; 16];
        let len: usize;
        if r < opts.blank_frac {
            truth.blank += 1;
            len = 0;
        } else if r < opts.blank_frac + opts.invalid_frac {
            let (reason, n) = invalid_value(&mut rng, &mut field);
            *truth.invalid_by_reason.entry(reason.as_str()).or_default() += 1;
            truth.invalid += 1;
            len = n;
        } else {
            let want_dup = r < opts.blank_frac + opts.invalid_frac + opts.dup_frac;
            let p = if want_dup && !emitted.is_empty() {
                truth.duplicates += 1;
                emitted[rng.below(emitted.len() as u64) as usize]
            } else if let Some(p) = next_unique(&mut rng) {
                emitted.push(p);
                truth.unique += 1;
                p
            } else {
                truth.duplicates += 1;
                emitted[rng.below(emitted.len() as u64) as usize]
            };
            truth.valid += 1;
            let prefix = 999_000_000 + p;
            let check = check_digit_of_prefix(prefix).expect("only prefixes with a check digit");
            let mut d = [0u8; 10];
            write_digits(prefix as u64 * 10 + check as u64, &mut d);
            field[..10].copy_from_slice(&d);
            len = 10;
        }
        truth.lines += 1;
        match opts.format {
            GenFormat::Dat => {
                buf.extend_from_slice(&field[..len]);
                if len > 0 {
                    buf.push(b',');
                }
            }
            GenFormat::Plain => buf.extend_from_slice(&field[..len]),
            GenFormat::Csv => {
                if len > 0 || rng.below(2) == 0 {
                    let day = rng.below(365);
                    let _ = write!(buf, "{},", i + 1);
                    buf.extend_from_slice(&field[..len]);
                    let _ = write!(
                        buf,
                        ",2025-{:02}-{:02},C{}",
                        day / 31 + 1,
                        day % 28 + 1,
                        rng.below(90) + 10
                    );
                    if len == 0 {
                        // A row with an empty NHS-number field is a real row that cannot be
                        // checked: the validator quarantines it as missing_field.
                        truth.blank -= 1;
                        truth.invalid += 1;
                        *truth
                            .invalid_by_reason
                            .entry(Reason::MissingField.as_str())
                            .or_default() += 1;
                    }
                }
            }
        }
        buf.extend_from_slice(eol);
        if buf.len() >= (1 << 20) - 64 {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)?;
    Ok(truth)
}

/// Writes one invalid value of a random kind into `field` (made from the 999 range, so never a
/// real patient's number); returns its reason and length. The benches' national-shape generator
/// uses it too.
pub fn invalid_value(rng: &mut Rng, field: &mut [u8; 16]) -> (Reason, usize) {
    // A prefix with a check digit, and one without (sum mod 11 = 1).
    let mut prefix = 999_000_000 + rng.below(RANGE) as u32;
    while check_digit_of_prefix(prefix).is_none() {
        prefix = 999_000_000 + rng.below(RANGE) as u32;
    }
    let check = check_digit_of_prefix(prefix).expect("checked above");
    let mut d = [0u8; 10];
    write_digits(prefix as u64 * 10 + check as u64, &mut d);
    match rng.below(4) {
        0 => {
            // A digit lost, as spreadsheets do to leading zeros.
            field[..9].copy_from_slice(&d[1..]);
            (Reason::WrongLength, 9)
        }
        1 => {
            field[..10].copy_from_slice(&d);
            field[rng.below(10) as usize] = b'A' + rng.below(26) as u8;
            (Reason::NonDigit, 10)
        }
        2 => {
            field[..10].copy_from_slice(&d);
            field[9] = b'0' + ((check + 1 + rng.below(9) as u8) % 10);
            (Reason::CheckDigitMismatch, 10)
        }
        _ => {
            let mut p = 999_000_000 + rng.below(RANGE) as u32;
            while check_digit_of_prefix(p).is_some() {
                p = 999_000_000 + rng.below(RANGE) as u32;
            }
            write_digits(p as u64 * 10 + rng.below(10), &mut d);
            field[..10].copy_from_slice(&d);
            (Reason::NoCheckDigitPossible, 10)
        }
    }
}
