//! `ndop filter`: the original extract without the patients who opted out.

use crate::args::InputArgs;
use crate::cached::WindowArgs;
use crate::progress;
use crate::report::{print_json, thousands};
use anyhow::bail;
use clap::Args;
use pos_cache::{number_set_of, sha256_file, Cache};
use processor::filter::{default_rejects, filter_with, Durability};
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
///   ndop filter extract.csv --column nhs_number --allowed inbox/*.dat --out cleared.csv \
///       --no-sync    # the output is read at once; see --no-sync below
///   ndop filter extract.tsv --column 3 --no-header --allowed returned.dat --out cleared.tsv
///   ndop filter extract.dat --allowed returned.dat --requested outbox/*.dat --out cleared.dat
///   ndop filter extract.csv --column nhs_number --cache /srv/ndop-cache --out cleared.csv
///   ndop filter extract.csv --column nhs_number --cache C --as-of 2026-11-20 --max-age 3d \
///       --fail-on-not-checked --out cleared.csv
///
/// With --cache, the numbers come from the results cache (see `ndop cache --help`) as of
/// --as-of: a row is kept only if the newest check of its number at or before that time is at
/// most --max-age old (default 7d) and the POS returned the number. Numbers never checked, or
/// last checked too long ago, are counted as `not_checked` and dropped. The use is recorded in
/// the cache's audit log (counts, SHA-256 of the extract and the output, batches relied on),
/// and the printed summary's `cache` object says the same: as_of, max_age, oldest_checked_at
/// (the oldest result relied on), allow_stale_cache, not_checked, the two SHA-256. Save it
/// (`... > filter.json`) and `ndop report --filter-summary filter.json` makes the IG record.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct FilterArgs {
    #[command(flatten)]
    pub input: InputArgs,

    /// The POS result files: the numbers whose rows may be kept.
    #[arg(long, required_unless_present = "cache", conflicts_with = "cache", num_args = 1.., value_name = "FILE")]
    pub allowed: Vec<PathBuf>,

    /// The .dat files that were sent. With them, rows whose number was never sent are counted
    /// as `not_checked` instead of `opted_out`.
    #[arg(long, num_args = 1.., value_name = "FILE", conflicts_with = "cache")]
    pub requested: Vec<PathBuf>,

    /// Take the numbers from this results cache instead of --allowed files.
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,

    #[command(flatten)]
    pub window: WindowArgs,

    /// Exit 1 (after writing the output) when any row was dropped as not checked.
    #[arg(long)]
    pub fail_on_not_checked: bool,

    /// The filtered extract to write (must not exist; created with mode 0600).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// Where to list the invalid and unparseable records (must not exist; mode 0600).
    /// Default: OUT.rejects.csv.
    #[arg(long, value_name = "FILE")]
    pub rejects: Option<PathBuf>,

    /// Do not wait for the output to reach the disk (no fsync before the rename, no early
    /// writeback): for a pipeline that reads the output at once. The output is still written
    /// in full under a temporary name and renamed into place only when complete, and it holds
    /// exactly the same records: nothing opted out can get in either way. The risk is a power
    /// loss or crash of the machine soon after: the output may then be short or empty. Check it
    /// before use (its size, or with --cache the output_sha256 in the summary) or re-run.
    /// Default: the output and its rejects report are synced to disk before ndop exits.
    #[arg(long)]
    pub no_sync: bool,
}

/// Runs `ndop filter`.
pub(crate) fn run(args: FilterArgs) -> anyhow::Result<u8> {
    let [extract] = args.input.inputs.as_slice() else {
        bail!("filter takes exactly one extract");
    };
    if args.cache.is_none() && args.window.given() {
        bail!(processor::Error::Usage(
            "--as-of, --allow-stale-cache and --environment apply a results cache: give --cache DIR"
                .into()
        ));
    }
    let lines = args.input.engine.scan_options();
    let mut cached = None;
    let (allowed, requested) = if let Some(dir) = &args.cache {
        let window = args.window.resolve()?;
        let cache = Cache::open(dir, false)?;
        let view = window.view(&cache)?;
        if view.batches.is_empty() {
            eprintln!(
                "ndop filter: warning: the cache holds no check within {} before {}: every row \
                 will be dropped as not checked (refresh the cache)",
                pos_cache::format_age(window.max_age),
                pos_cache::format_time(window.as_of)
            );
        }
        let sets = (
            number_set_of(&view.allowed),
            Some(number_set_of(&view.covered)),
        );
        cached = Some((cache, window, view));
        sets
    } else {
        let allowed = read_numbers(&args.allowed, "result", &lines, &mut |_| {})?.set;
        let requested = if args.requested.is_empty() {
            None
        } else {
            Some(read_numbers(&args.requested, "request", &lines, &mut |_| {})?.set)
        };
        (allowed, requested)
    };
    let bar = progress::bytes("filter", processor::scan::total_len(&args.input.inputs));
    let rejects = args
        .rejects
        .clone()
        .unwrap_or_else(|| default_rejects(&args.out));
    let durability = if args.no_sync {
        Durability::NoSync
    } else {
        Durability::Synced
    };
    let s = filter_with(
        extract,
        &allowed,
        requested.as_ref(),
        &args.input.scan_options(),
        (&args.out, &rejects),
        durability,
        &mut |done| bar.set_position(done),
    )?;
    bar.finish_and_clear();
    let mut summary = serde_json::to_value(&s)?;
    if let Some((mut cache, window, view)) = cached {
        let mut record = window.audit(&view);
        record["input"] = extract.display().to_string().into();
        // standard input cannot be read twice: no hash for it
        if extract.as_path() != std::path::Path::new("-") {
            record["input_sha256"] = sha256_file(extract)?.into();
        }
        record["output"] = args.out.display().to_string().into();
        record["output_sha256"] = sha256_file(&args.out)?.into();
        record["counts"] = serde_json::to_value(&s.counts)?;
        cache.audit("filter", Some(window.as_of), Some(window.max_age), &record)?;
        let mut c = window.summary(&view);
        c["not_checked"] = s.counts.not_checked.into();
        c["filtered_at"] = pos_cache::format_time(chrono::Utc::now().timestamp_millis()).into();
        for key in ["input_sha256", "output_sha256"] {
            c[key] = record.get(key).cloned().unwrap_or_default();
        }
        summary["cache"] = c;
    }
    print_json(&summary)?;
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
    if args.fail_on_not_checked && c.not_checked > 0 {
        eprintln!(
            "ndop filter: {} rows not checked (--fail-on-not-checked)",
            thousands(c.not_checked)
        );
        return Ok(crate::exit::INVALID_LINES);
    }
    Ok(crate::exit::OK)
}
