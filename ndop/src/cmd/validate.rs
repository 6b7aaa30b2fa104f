//! `ndop validate`: the report-only form of prepare.

use crate::args::InputArgs;
use crate::report::{describe_counts, print_json, thousands};
use crate::{exit, progress};
use clap::Args;
use processor::files::{ensure_empty_dir, write_atomic};
use processor::prepare::{INVALID_CSV, SUMMARY_JSON};
use processor::validate::{validate, Summary};
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
pub(crate) struct ValidateArgs {
    #[command(flatten)]
    pub input: InputArgs,

    /// Also write invalid.csv and summary.json into this new or empty directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Exit with code 1 when any line is invalid.
    #[arg(long)]
    pub fail_on_invalid: bool,
}

/// Runs `ndop validate`.
pub(crate) fn run(args: ValidateArgs) -> anyhow::Result<u8> {
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
    let summary = Summary {
        counts: &v.counts,
        inputs: &v.inputs,
        threads: v.threads,
        elapsed_seconds: start.elapsed().as_secs_f64(),
    };
    // through a `Value`, so the keys come out sorted as they always have
    let summary = serde_json::to_value(&summary)?;
    if let Some(dir) = &args.out {
        let json = serde_json::to_string_pretty(&summary)?;
        write_atomic(dir, SUMMARY_JSON, json.as_bytes())?;
    }
    print_json(&summary)?;
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
