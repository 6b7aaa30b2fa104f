//! `ndop generate`: synthetic extracts in the 999 test range, with their truth.

use crate::exit;
use crate::report::thousands;
use clap::Args;
use processor::dat::LineEnding;
use processor::files::create_private;
use processor::generate::{generate, GenFormat, GenerateOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

/// Write a synthetic extract for tests and benchmarks, plus its exact truth as JSON.
///
/// Valid numbers come only from the 999 test range (never issued to patients), with correct
/// check digits; the range holds about 909,000 valid numbers, so big files are mostly
/// repeats. Invalid lines of each kind are mixed in on request. The truth (the counts a
/// correct validator must report) goes to OUT.truth.json, or to standard error with `-`.
///
/// Examples:
///   ndop generate --lines 1000000 --seed 7 --out sample.dat
///   ndop generate --lines 100000000 --seed 1 --dup-frac 0.5 --invalid-frac 0.0001 --out big.dat
///   ndop generate --lines 5000 --format csv --line-ending lf --out extract.csv
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct GenerateArgs {
    /// Data lines to write.
    #[arg(long, value_name = "N")]
    pub lines: u64,

    /// Seed: the same seed and options give the same file.
    #[arg(long, default_value_t = 1, value_name = "S")]
    pub seed: u64,

    /// Share of lines that repeat an earlier number.
    #[arg(long, default_value_t = 0.1, value_name = "F")]
    pub dup_frac: f64,

    /// Share of lines that are invalid (wrong length, non-digit, bad check digit, impossible
    /// check digit, in equal parts).
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    pub invalid_frac: f64,

    /// Share of lines that are blank.
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    pub blank_frac: f64,

    /// Line ending: crlf or lf.
    #[arg(long, default_value = "crlf", value_name = "EOL")]
    pub line_ending: LineEnding,

    /// File shape: dat (`NNNNNNNNNN,`), plain (bare numbers) or csv (with a header row; the
    /// number is in column nhs_number).
    #[arg(long, default_value = "dat", value_name = "FORMAT")]
    pub format: GenFormat,

    /// Output file (created with mode 0600; must not exist), or `-` for standard output.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Runs `ndop generate`.
pub(crate) fn run(args: GenerateArgs) -> anyhow::Result<u8> {
    for (name, f) in [
        ("--dup-frac", args.dup_frac),
        ("--invalid-frac", args.invalid_frac),
        ("--blank-frac", args.blank_frac),
    ] {
        if !(0.0..=1.0).contains(&f) {
            anyhow::bail!("{name} must be between 0 and 1");
        }
    }
    if args.invalid_frac + args.blank_frac > 1.0 {
        anyhow::bail!("--invalid-frac and --blank-frac add up to more than 1");
    }
    let opts = GenerateOptions {
        lines: args.lines,
        seed: args.seed,
        dup_frac: args.dup_frac,
        invalid_frac: args.invalid_frac,
        blank_frac: args.blank_frac,
        line_ending: args.line_ending,
        format: args.format,
    };
    let to_stdout = args.out.as_os_str() == "-";
    let truth = if to_stdout {
        let mut out = BufWriter::new(std::io::stdout().lock());
        let t = generate(&mut out, &opts)?;
        out.flush()?;
        t
    } else {
        let mut out = BufWriter::new(create_private(&args.out)?);
        let t = generate(&mut out, &opts)?;
        out.into_inner()?.sync_all()?;
        t
    };
    let json = serde_json::to_string_pretty(&truth)?;
    if to_stdout {
        eprintln!("{json}");
    } else {
        let mut name = args.out.clone().into_os_string();
        name.push(".truth.json");
        let truth_path = PathBuf::from(name);
        let mut f = create_private(&truth_path)?;
        f.write_all(json.as_bytes())?;
        eprintln!(
            "ndop generate: wrote {} lines to {} (unique {}, duplicates {}, invalid {}, blank {}); truth in {}",
            thousands(truth.lines),
            args.out.display(),
            thousands(truth.unique),
            thousands(truth.duplicates),
            thousands(truth.invalid),
            thousands(truth.blank),
            truth_path.display()
        );
    }
    Ok(exit::OK)
}
