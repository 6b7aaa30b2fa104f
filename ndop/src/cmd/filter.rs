//! `ndop filter`: the original extract without the patients who opted out.

use crate::args::InputArgs;
use crate::progress;
use crate::report::{print_json, thousands};
use anyhow::bail;
use clap::Args;
use processor::filter::filter;
use processor::reconcile::read_numbers;
use std::path::PathBuf;

/// Write the original extract without the rows of opted-out patients.
///
/// Keeps the rows whose NHS number the POS returned: the header, every
/// other column and the line endings are copied untouched, and so is a UTF-8 byte-order mark
/// at the start of a file or of standard input; rows of patients who opted out, and
/// rows with an invalid or missing number, are dropped and counted. The summary is printed as
/// JSON. Use the same --column, --strict and --reject-placeholders as for prepare.
///
/// Examples:
///   ndop filter extract.csv --column nhs_number --allowed inbox/*.dat --out cleared.csv
///   ndop filter extract.dat --allowed returned.dat --requested outbox/*.dat --out cleared.dat
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct FilterArgs {
    #[command(flatten)]
    pub input: InputArgs,

    /// The POS result files: the numbers whose rows may be kept.
    #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
    pub allowed: Vec<PathBuf>,

    /// The .dat files that were sent. With them, rows whose number was never sent are counted
    /// as `not_checked` instead of `opted_out`.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub requested: Vec<PathBuf>,

    /// The filtered extract to write (must not exist; created with mode 0600).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Runs `ndop filter`.
pub(crate) fn run(args: FilterArgs) -> anyhow::Result<u8> {
    let [extract] = args.input.inputs.as_slice() else {
        bail!("filter takes exactly one extract");
    };
    let lines = args.input.engine.scan_options();
    let allowed = read_numbers(&args.allowed, "result", &lines, &mut |_| {})?;
    let requested = if args.requested.is_empty() {
        None
    } else {
        Some(read_numbers(
            &args.requested,
            "request",
            &lines,
            &mut |_| {},
        )?)
    };
    let bar = progress::bytes("filter", processor::scan::total_len(&args.input.inputs));
    let s = filter(
        extract,
        &allowed.set,
        requested.as_ref().map(|r| &r.set),
        &args.input.scan_options(),
        &args.out,
        &mut |done| bar.set_position(done),
    )?;
    bar.finish_and_clear();
    print_json(&s)?;
    let c = &s.counts;
    eprintln!(
        "ndop filter: {} rows: kept {}, dropped {} opted out, {} not checked, {} invalid, {} \
         blank; wrote {} in {:.2} s",
        thousands(c.rows),
        thousands(c.kept),
        thousands(c.opted_out),
        thousands(c.not_checked),
        thousands(c.invalid),
        thousands(c.blank),
        args.out.display(),
        s.elapsed_seconds
    );
    Ok(crate::exit::OK)
}
