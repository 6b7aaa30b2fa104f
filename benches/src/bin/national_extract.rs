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

use anyhow::Context;
use clap::Parser;
use ndop_benches::national::{generate_national, parse_ranges, NationalOptions};

/// Writes a national-shaped `.dat` extract (BENCHMARK DATA: valid numbers outside the 999 test
/// range) and its exact truth as JSON.
#[derive(Debug, Parser)]
#[command(
    after_help = "Example:\n  national_extract --lines 100000000 --distinct 65000000 \
    --range england --invalid-rate 0.005 --seed 1 --out bench-data/national.dat \
    --truth bench-data/national.truth.json"
)]
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let opts = NationalOptions {
        lines: args.lines,
        distinct: args.distinct,
        ranges: parse_ranges(&args.range)?,
        invalid_rate: args.invalid_rate,
        seed: args.seed,
        lf: args.lf,
    };
    let out: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(File::create(p).with_context(|| format!("create {}", p.display()))?),
        None => Box::new(io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let truth = generate_national(&mut out, &opts)?;
    drop(out);
    let json = serde_json::to_string_pretty(&truth)?;
    match &args.truth {
        Some(p) => std::fs::write(p, json + "\n").with_context(|| format!("{}", p.display()))?,
        None => eprintln!("{json}"),
    }
    Ok(())
}
