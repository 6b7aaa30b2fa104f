//! `ndop validate`: the report-only form of prepare.

use super::{describe_counts, thousands, InputArgs};
use crate::{exit, progress};
use clap::Args;
use processor::output::{ensure_empty_dir, write_atomic};
use processor::prepare::{INVALID_CSV, SUMMARY_JSON};
use processor::validate::validate;
use std::io::Write;
use std::path::PathBuf;

/// Check extracts without writing any .dat: the same input options and checks as prepare,
/// with the summary as JSON on standard output.
///
/// Examples:
///   ndop validate extract.dat
///   ndop validate extract.csv --column nhs_number --out report/
///   ndop validate extract.dat --fail-on-invalid > summary.json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub input: InputArgs,

    /// Also write invalid.csv and summary.json into this new or empty directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Exit with code 1 when any line is invalid.
    #[arg(long)]
    pub fail_on_invalid: bool,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<u8> {
    let start = std::time::Instant::now();
    let invalid_csv = match &args.out {
        Some(dir) => {
            ensure_empty_dir(dir)?;
            Some(dir.join(INVALID_CSV))
        }
        None => None,
    };
    let bar = progress::bytes("validate", processor::scan::total_len(&args.input.inputs));
    let v = validate(
        &args.input.inputs,
        &args.input.scan_options(),
        invalid_csv.as_deref(),
        &mut |done| bar.set_position(done),
    )?;
    bar.finish_and_clear();
    let summary = serde_json::json!({
        "lines": v.counts.lines,
        "valid": v.counts.valid,
        "unique": v.counts.unique,
        "duplicates": v.counts.duplicates,
        "invalid": v.counts.invalid,
        "blank": v.counts.blank,
        "unparseable": v.counts.unparseable,
        "normalised": v.counts.normalised,
        "placeholder": v.counts.placeholder,
        "headers": v.counts.headers,
        "invalid_by_reason": v.counts.invalid_by_reason,
        "unparseable_by_reason": v.counts.unparseable_by_reason,
        "inputs": v.inputs,
        "threads": v.threads,
        "elapsed_seconds": start.elapsed().as_secs_f64(),
    });
    let json = serde_json::to_string_pretty(&summary)?;
    if let Some(dir) = &args.out {
        write_atomic(dir, SUMMARY_JSON, json.as_bytes())?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{json}")?;
    stdout.flush()?;
    eprint!(
        "ndop validate: {} lines in {:.2} s\n{}",
        thousands(v.counts.lines),
        start.elapsed().as_secs_f64(),
        describe_counts(&v.counts)
    );
    if args.fail_on_invalid && v.counts.invalid + v.counts.unparseable > 0 {
        return Ok(exit::INVALID_LINES);
    }
    Ok(exit::OK)
}
