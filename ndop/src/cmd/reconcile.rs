//! `ndop reconcile`: requested minus returned is who opted out.

use crate::args::EngineArgs;
use crate::report::{print_json, thousands};
use crate::{exit, progress};
use clap::Args;
use processor::reconcile::{reconcile, OPTED_OUT_FILE, UNEXPECTED_FILE};
use std::path::PathBuf;

/// Work out who opted out: requested minus returned.
///
/// The opted-out patients are the numbers in the request files that are not in the POS result
/// files. Writes OUT/opted-out.txt, OUT/unexpected.txt (numbers returned that were never
/// requested: there should be none) and OUT/summary.json, and prints the summary as JSON.
///
/// An empty result file means every requested patient opted out. A result that is the POS's
/// rejection ("The file contains one or more invalid NHS Numbers.") or holds anything but NHS
/// numbers is an error (exit 6), as is any unexpected number.
///
/// Examples:
///   ndop reconcile --request outbox/*.dat --response inbox/*.dat --out reconciled
///   ndop reconcile --request sent.dat --response returned.dat --out r | jq .opted_out
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct ReconcileArgs {
    /// The .dat files sent to the POS.
    #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
    pub request: Vec<PathBuf>,

    /// The files the POS returned (may be empty files).
    #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
    pub response: Vec<PathBuf>,

    /// Output directory; must be new or empty.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Runs `ndop reconcile`.
pub(crate) fn run(args: ReconcileArgs) -> anyhow::Result<u8> {
    let total = processor::scan::total_len(&args.request)
        .zip(processor::scan::total_len(&args.response))
        .map(|(a, b)| a + b);
    let bar = progress::bytes("reconcile", total);
    let r = reconcile(
        &args.request,
        &args.response,
        &args.engine.scan_options(),
        &args.out,
        &mut |done| bar.set_position(done),
    )?;
    bar.finish_and_clear();
    let s = &r.summary;
    print_json(s)?;
    eprintln!(
        "ndop reconcile: {} requested, {} returned, {} opted out ({}) in {:.2} s",
        thousands(s.requested),
        thousands(s.returned),
        thousands(s.opted_out),
        args.out.join(OPTED_OUT_FILE).display(),
        s.elapsed_seconds
    );
    if s.unexpected > 0 {
        eprintln!(
            "ndop reconcile: WARNING: {} numbers were returned that were never requested \
             (listed in {}); the request and result files do not belong together",
            thousands(s.unexpected),
            args.out.join(UNEXPECTED_FILE).display()
        );
        return Ok(exit::POS);
    }
    Ok(exit::OK)
}
