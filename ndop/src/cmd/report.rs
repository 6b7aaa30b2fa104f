//! `ndop report`: the record of one check, for the information governance lead who signs the
//! disclosure off.

use crate::evidence::{facts::gather_filter, gather, html, REPORT_HTML};
use crate::exit;
use crate::report::print_json;
use clap::Args;
use std::path::PathBuf;

/// Write the record of one check: one HTML page an IG lead can read, print and file.
///
/// Reads the work directory of an `ndop run` (run.json, journal.jsonl, the prepare and
/// reconcile summaries, the rejects report) and says, verdict first and in words: which
/// extract was checked (path, size, SHA-256, records, format, column), where (MESH
/// environment, mailboxes) and when; where every record went (a chart and a table); each
/// file sent to the POS and each reply (name, records, bytes, SHA-256, LocalId, MESH message
/// id, times); how long each stage took; and, in red, anything unusual (files not answered or
/// rejected, figures that do not add up, an extract changed since it was checked). Works on
/// an unfinished run too, and says it is unfinished. The page is self-contained (no script,
/// font or image is fetched) and prints on A4. No NHS number appears in it.
///
/// `ndop run` and `ndop demo` write WORK/report.html themselves; use this command to make it
/// again, elsewhere, or as JSON (--json: the same facts as one document, from which the page
/// is rendered). The SHA-256 of the extract and of the cleared extract are computed now (one
/// read of each; the extract only if its size and modification time are still those
/// recorded when it was prepared). To make a PDF: open the page in a browser and print, or
///   chromium --headless --no-sandbox --print-to-pdf=report.pdf WORK/report.html
///
/// Examples:
///   ndop report job42
///   ndop report job42 --out /shared/ig/2026-11-disclosure-17.html
///   ndop report job42 --json > job42-evidence.json
///
/// A filter that used the results cache (`ndop filter --cache`) has no work directory: save
/// the summary it prints and report on that. The record then also gives the as-of date, the
/// maximum age, when the oldest result used was checked and how old it was, and, in red, an
/// override of the 21-day ceiling (--allow-stale-cache) and any record not checked.
///   ndop filter extract.csv --column nhs_number --cache /srv/ndop-cache --out cleared.csv \
///       > filter.json
///   ndop report --filter-summary filter.json --out disclosure-17.html
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct ReportArgs {
    /// The work directory of an `ndop run` (or `ndop demo`).
    #[arg(value_name = "WORK", required_unless_present = "filter_summary")]
    pub work: Option<PathBuf>,

    /// Report on a filter that used the results cache instead: the JSON summary that
    /// `ndop filter --cache` printed, saved to FILE (--out is then required, or --json).
    #[arg(long, value_name = "FILE", conflicts_with = "work")]
    pub filter_summary: Option<PathBuf>,

    /// Where to write the HTML page (default: WORK/report.html; with --json, none unless
    /// given). Replaced if it exists; created with mode 0600.
    #[arg(long, value_name = "FILE.html")]
    pub out: Option<PathBuf>,

    /// Print the facts as one JSON document on standard output.
    #[arg(long)]
    pub json: bool,

    /// Do not read the extract and the cleared extract to compute their SHA-256 (for very
    /// large files; the report then says the hashes were not computed).
    #[arg(long)]
    pub no_hash: bool,
}

/// Runs `ndop report`.
pub(crate) fn run(args: ReportArgs) -> anyhow::Result<u8> {
    let facts = match (&args.work, &args.filter_summary) {
        (Some(work), _) => gather(work, !args.no_hash)?,
        (None, Some(summary)) => gather_filter(summary, !args.no_hash)?,
        (None, None) => {
            return Err(processor::Error::Usage(
                "give the work directory of an ndop run, or --filter-summary FILE".into(),
            )
            .into())
        }
    };
    if args.json {
        print_json(&facts)?;
    }
    let out =
        match (&args.out, args.json, &args.work) {
            (Some(out), _, _) => Some(out.clone()),
            (None, false, Some(work)) => Some(work.join(REPORT_HTML)),
            (None, false, None) => return Err(processor::Error::Usage(
                "--filter-summary: give --out FILE.html (or --json) to say where the report goes"
                    .into(),
            )
            .into()),
            (None, true, _) => None,
        };
    if let Some(out) = out {
        let name = out.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            processor::Error::Usage(format!("--out {}: not a file name", out.display()))
        })?;
        let written = processor::files::write_atomic(
            &processor::files::parent_dir(&out),
            name,
            html::render(&facts).as_bytes(),
        )?;
        eprintln!("ndop report: {}", facts.verdict);
        eprintln!("ndop report: wrote {}", written.display());
    }
    Ok(exit::OK)
}
