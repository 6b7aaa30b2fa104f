//! `national_extract`: a national-shaped `.dat` extract for the engine benchmarks (issue 15),
//! with its exact truth.
//!
//! Unlike `ndop generate`, which stays in the 999 test range (about 909,000 valid numbers, so a
//! large file is mostly repeats and the de-duplication set stays in the CPU cache), this draws
//! tens of millions of distinct valid numbers from the prefix ranges England issues
//! (`--range england`: 400–499 and 600–799 million), the whole range (`full`), or any ranges
//! given as `LO-HI` nine-digit prefixes (LO inclusive, HI exclusive, comma-separated).
//!
//! **Benchmark data only.** Valid numbers outside the 999 range may belong to real people:
//! checking them against a LIVE POS would reveal real opt-outs. That is why this is a bench
//! binary and not an `ndop` subcommand; never send its output anywhere but a mock.
//!
//! Shape: exactly `--lines` lines, of which `round(lines * invalid-rate)` are invalid (made by
//! [`processor::generate::invalid_value`], spread at random), and the valid ones hold exactly
//! `--distinct` distinct numbers, the first that a seeded pseudo-random permutation of the range
//! gives (so they land all over the bitmap, as a national extract's do); the repeats are
//! uniformly random ones among them, and the valid lines are shuffled, so first occurrences and
//! repeats are spread evenly over the file. Memory: 4 bytes per valid line.
//! Lines are `NNNNNNNNNN,` with CRLF (or `--lf`), as `ndop generate` writes them. The same seed
//! and options give the same bytes; the truth (JSON, the same fields as `ndop generate`'s) goes
//! to `--truth FILE` or standard error.
//!
//! Example (from the workspace root; the national file of `tools/bench-engine.sh`):
//!
//!   cargo build --release -p ndop-benches --bin national_extract
//!   target/release/national_extract --lines 100000000 --distinct 65000000 --range england \
//!       --invalid-rate 0.005 --seed 1 --out bench-data/national.dat \
//!       --truth bench-data/national.truth.json

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use processor::generate::{invalid_value, Rng, Truth};
use processor::nhs::{check_digit_of_prefix, write_digits};

/// Writes a national-shaped `.dat` extract (BENCHMARK DATA: valid numbers outside the 999 test
/// range) and its exact truth as JSON.
#[derive(Debug, Parser)]
#[command(after_help = "Example:\n  national_extract --lines 100000000 --distinct 65000000 \
    --range england --invalid-rate 0.005 --seed 1 --out bench-data/national.dat \
    --truth bench-data/national.truth.json")]
struct Args {
    /// Lines in the file.
    #[arg(long)]
    lines: u64,
    /// Distinct valid numbers among them (at most the valid lines).
    #[arg(long)]
    distinct: u64,
    /// Prefix ranges to draw from: `england` (400–499 and 600–799 million), `full`, or
    /// `LO-HI[,LO-HI…]` nine-digit prefixes, LO inclusive, HI exclusive.
    #[arg(long, default_value = "england")]
    range: String,
    /// Share of lines that are invalid.
    #[arg(long, default_value_t = 0.005)]
    invalid_rate: f64,
    /// Seed: the same seed and options give the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// LF line endings instead of CRLF.
    #[arg(long)]
    lf: bool,
    /// Write the extract here instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write the truth JSON here instead of standard error.
    #[arg(long, value_name = "FILE")]
    truth: Option<PathBuf>,
}

/// Nine-digit prefixes: 10^9 of them.
const PREFIXES: u64 = 1_000_000_000;

/// Parses `--range` into half-open prefix ranges.
fn parse_ranges(s: &str) -> anyhow::Result<Vec<(u64, u64)>> {
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ranges = parse_ranges(&args.range)?;
    let size: u64 = ranges.iter().map(|(lo, hi)| hi - lo).sum();
    if !(0.0..=1.0).contains(&args.invalid_rate) {
        bail!("--invalid-rate must be between 0 and 1");
    }
    let invalid = (args.lines as f64 * args.invalid_rate).round() as u64;
    let valid = args.lines - invalid;
    if args.distinct > valid {
        bail!(
            "--distinct {} is more than the {valid} valid lines; lower it or raise --lines",
            args.distinct
        );
    }
    // About 10 in 11 prefixes have a check digit.
    if args.distinct > size / 11 * 10 {
        bail!(
            "--distinct {} does not fit in a range of {size} prefixes (about 10 in 11 have a \
             check digit); widen --range",
            args.distinct
        );
    }
    let out: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(File::create(p).with_context(|| format!("create {}", p.display()))?),
        None => Box::new(io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let mut rng = Rng(args.seed);
    let perm = Permutation::new(size, &mut rng);
    let to_prefix = |mut i: u64| -> u32 {
        for &(lo, hi) in &ranges {
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
    while (numbers.len() as u64) < args.distinct {
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
    let eol: &[u8] = if args.lf { b"\n" } else { b"\r\n" };
    let mut truth = Truth {
        lines: args.lines,
        valid,
        unique: args.distinct,
        duplicates: valid - args.distinct,
        invalid,
        ..Truth::default()
    };
    let mut invalid_left = invalid;
    let mut next = numbers.into_iter();
    for left in (1..=args.lines).rev() {
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
    drop(out);
    let json = serde_json::to_string_pretty(&truth)?;
    match &args.truth {
        Some(p) => std::fs::write(p, json + "\n").with_context(|| format!("{}", p.display()))?,
        None => eprintln!("{json}"),
    }
    Ok(())
}
