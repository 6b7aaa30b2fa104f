//! National-shaped `.dat` extracts (issue 15): tens of millions of distinct valid numbers over
//! England's prefix ranges or the whole range, with their exact truth.
//!
//! **Benchmark data only.** Valid numbers outside the 999 range may belong to real people:
//! checking them against a LIVE POS would reveal real opt-outs. That is why this lives in the
//! benches crate and not in `ndop` (whose `generate` stays in the 999 range); see the
//! `national_extract` binary for the shape.

use std::io::Write;

use anyhow::{bail, Context};
use processor::generate::{invalid_value, Rng, Truth};
use processor::nhs::{check_digit_of_prefix, write_digits};

/// What to generate.
#[derive(Debug, Clone)]
pub struct NationalOptions {
    /// Lines in the file.
    pub lines: u64,
    /// Distinct valid numbers among them.
    pub distinct: u64,
    /// Half-open ranges of nine-digit prefixes to draw from (see [`parse_ranges`]).
    pub ranges: Vec<(u64, u64)>,
    /// Share of lines that are invalid.
    pub invalid_rate: f64,
    /// Seed: the same seed and options give the same bytes.
    pub seed: u64,
    /// LF line endings instead of CRLF.
    pub lf: bool,
}

/// Nine-digit prefixes: 10^9 of them.
const PREFIXES: u64 = 1_000_000_000;

/// Parses a range name into half-open prefix ranges: `england` (400–499 and 600–799 million),
/// `full`, or `LO-HI[,LO-HI…]` nine-digit prefixes, LO inclusive, HI exclusive.
pub fn parse_ranges(s: &str) -> anyhow::Result<Vec<(u64, u64)>> {
    let ranges = match s {
        "england" => vec![(400_000_000, 500_000_000), (600_000_000, 800_000_000)],
        "full" => vec![(0, PREFIXES)],
        _ => s
            .split(',')
            .map(|r| {
                let (lo, hi) = r
                    .split_once('-')
                    .with_context(|| format!("range {r:?} is not LO-HI"))?;
                let (lo, hi): (u64, u64) = (lo.trim().parse()?, hi.trim().parse()?);
                if lo >= hi || hi > PREFIXES {
                    bail!("range {r:?}: need LO < HI <= 1000000000 (nine-digit prefixes)");
                }
                Ok((lo, hi))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    Ok(ranges)
}

/// A seeded pseudo-random bijection of `0..n` (xor-shift-multiply rounds on the smallest power
/// of two holding `n`, cycle-walked back into `0..n`).
struct Permutation {
    n: u64,
    bits: u32,
    keys: [u64; 3],
}

impl Permutation {
    fn new(n: u64, rng: &mut Rng) -> Self {
        let bits = 64 - (n.max(2) - 1).leading_zeros();
        let keys = [rng.next_u64(), rng.next_u64() | 1, rng.next_u64() | 1];
        Permutation { n, bits, keys }
    }

    /// One round of the bijection on `bits` bits: each step (xor a key, multiply by an odd
    /// number, xor-shift right) is invertible modulo 2^bits.
    fn round(&self, mut x: u64) -> u64 {
        let mask = (1u64 << self.bits) - 1;
        let half = (self.bits / 2).max(1);
        x = (x ^ self.keys[0]) & mask;
        x = x.wrapping_mul(self.keys[1]) & mask;
        x ^= x >> half;
        x = x.wrapping_mul(self.keys[2]) & mask;
        x ^= x >> half;
        x
    }

    fn get(&self, j: u64) -> u64 {
        let mut x = self.round(j);
        while x >= self.n {
            x = self.round(x);
        }
        x
    }
}

/// Writes the extract to `out` and returns its exact truth. Memory: 4 bytes per valid line.
pub fn generate_national(out: &mut dyn Write, opts: &NationalOptions) -> anyhow::Result<Truth> {
    let ranges = &opts.ranges;
    let size: u64 = ranges.iter().map(|(lo, hi)| hi - lo).sum();
    if !(0.0..=1.0).contains(&opts.invalid_rate) {
        bail!("--invalid-rate must be between 0 and 1");
    }
    let invalid = (opts.lines as f64 * opts.invalid_rate).round() as u64;
    let valid = opts.lines - invalid;
    if opts.distinct > valid {
        bail!(
            "--distinct {} is more than the {valid} valid lines; lower it or raise --lines",
            opts.distinct
        );
    }
    // About 10 in 11 prefixes have a check digit.
    if opts.distinct > size / 11 * 10 {
        bail!(
            "--distinct {} does not fit in a range of {size} prefixes (about 10 in 11 have a \
             check digit); widen --range",
            opts.distinct
        );
    }
    let mut rng = Rng(opts.seed);
    let perm = Permutation::new(size, &mut rng);
    let to_prefix = |mut i: u64| -> u32 {
        for &(lo, hi) in ranges {
            if i < hi - lo {
                return (lo + i) as u32;
            }
            i -= hi - lo;
        }
        unreachable!("index below the ranges' total size")
    };
    // The valid lines' numbers: every one of the distinct numbers once, then the repeats, each
    // a uniformly random one of them; shuffled, so both first occurrences and repeats are
    // spread evenly over the file, as in an extract where each row is a random patient.
    let mut numbers: Vec<u32> = Vec::with_capacity(valid as usize);
    let mut next_j = 0u64;
    while (numbers.len() as u64) < opts.distinct {
        if next_j >= size {
            bail!("ran out of prefixes with a check digit; widen --range");
        }
        let p = to_prefix(perm.get(next_j));
        next_j += 1;
        if check_digit_of_prefix(p).is_some() {
            numbers.push(p);
        }
    }
    let distinct = numbers.len();
    while (numbers.len() as u64) < valid {
        numbers.push(numbers[rng.below(distinct as u64) as usize]);
    }
    for i in (1..numbers.len()).rev() {
        numbers.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let eol: &[u8] = if opts.lf { b"\n" } else { b"\r\n" };
    let mut truth = Truth {
        lines: opts.lines,
        valid,
        unique: opts.distinct,
        duplicates: valid - opts.distinct,
        invalid,
        ..Truth::default()
    };
    let mut invalid_left = invalid;
    let mut next = numbers.into_iter();
    for left in (1..=opts.lines).rev() {
        let mut field = [0u8; 16];
        let len = if rng.below(left) < invalid_left {
            invalid_left -= 1;
            let (reason, n) = invalid_value(&mut rng, &mut field);
            *truth.invalid_by_reason.entry(reason.as_str()).or_default() += 1;
            n
        } else {
            let prefix = next.next().context("as many numbers as valid lines")?;
            let check = check_digit_of_prefix(prefix).context("prefix has a check digit")?;
            let mut d = [0u8; 10];
            write_digits(prefix as u64 * 10 + check as u64, &mut d);
            field[..10].copy_from_slice(&d);
            10
        };
        out.write_all(&field[..len])?;
        out.write_all(b",")?;
        out.write_all(eol)?;
    }
    out.flush()?;
    Ok(truth)
}

/// The options of a named benchmark shape of `lines` lines: `national` (65% of the lines
/// distinct numbers over England's ranges, 0.5% invalid) or `worst` (every valid line a new
/// number, over the whole range, 0.5% invalid), as `tools/bench-engine.sh` makes them.
pub fn shape(name: &str, lines: u64) -> anyhow::Result<NationalOptions> {
    let (distinct, range) = match name {
        "national" => (lines * 65 / 100, "england"),
        "worst" => (lines - lines / 200, "full"),
        _ => bail!("unknown shape {name:?}: national or worst"),
    };
    Ok(NationalOptions {
        lines,
        distinct,
        ranges: parse_ranges(range)?,
        invalid_rate: 0.005,
        seed: 1,
        lf: false,
    })
}
