//! `ndop filter`: the original extract without the patients who opted out.

use crate::args::InputArgs;
use crate::progress;
use crate::report::{print_json, thousands};
use anyhow::bail;
use clap::Args;
use processor::filter::{default_rejects, filter_to};
use processor::reconcile::read_numbers;
use std::path::PathBuf;

/// Write the original extract without the rows of opted-out patients.
///
/// Fails closed: a record is kept only when its NHS number was read, is valid and was
/// returned by the POS. Kept records are copied byte for byte (the header, every other
/// column, line endings and line breaks inside quoted fields untouched), and so is a UTF-8
/// byte-order mark at the start of a file or of standard input. Every other record is
/// dropped and counted: opted out, not checked, invalid (a bad or missing number),
/// unparseable (broken quoting) or blank. Where each invalid and unparseable record is
/// (file, record number, starting line, reason; never its content) goes to the rejects
/// report, OUT.rejects.csv by default. The summary is printed as JSON. Use the same
/// --column, --delimiter, --no-header, --skip-lines, --strict and --reject-placeholders
/// as for prepare. A gzip-compressed extract is read as it is; the output is not compressed.
///
/// Examples:
///   ndop filter extract.csv --column nhs_number --allowed inbox/*.dat --out cleared.csv
///   ndop filter extract.tsv --column 3 --no-header --allowed returned.dat --out cleared.tsv
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

    /// Where to list the invalid and unparseable records (must not exist; mode 0600).
    /// Default: OUT.rejects.csv.
    #[arg(long, value_name = "FILE")]
    pub rejects: Option<PathBuf>,
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
    let rejects = args
        .rejects
        .clone()
        .unwrap_or_else(|| default_rejects(&args.out));
    let s = filter_to(
        extract,
        &allowed.set,
        requested.as_ref().map(|r| &r.set),
        &args.input.scan_options(),
        (&args.out, &rejects),
        &mut |done| bar.set_position(done),
    )?;
    bar.finish_and_clear();
    print_json(&s)?;
    let c = &s.counts;
    eprintln!(
        "ndop filter: {} rows: kept {}, dropped {} opted out, {} not checked, {} invalid, {} \
         blank, {} unparseable; wrote {} in {:.2} s",
        thousands(c.rows),
        thousands(c.kept),
        thousands(c.opted_out),
        thousands(c.not_checked),
        thousands(c.invalid),
        thousands(c.blank),
        thousands(c.unparseable),
        args.out.display(),
        s.elapsed_seconds
    );
    Ok(crate::exit::OK)
}
