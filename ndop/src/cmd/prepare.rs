//! `ndop prepare`: extracts in, POS-ready `.dat` + `.ctl` files out.

use crate::args::{parse_size, InputArgs};
use crate::report::{describe_counts, thousands};
use crate::{exit, progress};
use chrono::NaiveDate;
use clap::Args;
use processor::dat::{check_mailbox, check_tag, DatOptions, LineEnding};
use processor::pos::PosEnv;
use processor::prepare::{prepare, PrepareOptions, INVALID_CSV, SUMMARY_JSON};
use std::path::PathBuf;

/// Validate, de-duplicate and split extracts into POS-ready `.dat` + `.ctl` files.
///
/// Every input line ends in exactly one bucket: written (unique), duplicate, invalid (with its
/// reason and line number in OUT/invalid.csv) or blank. The `.dat` files hold one
/// `NNNNNNNNNN,` line per unique valid number, in ascending order, named
/// MAILBOX-DDMMYY-NNNN.dat, each with a DTSControl .ctl addressed to the POS mailbox.
/// OUT/summary.json has the counts and each file's records, bytes and SHA-256.
///
/// Examples:
///   ndop prepare extract.dat --out outbox --mailbox X26ABC1
///   ndop prepare a.csv b.csv --column nhs_number --out outbox --mailbox X26ABC1 --tag study42
///   ndop prepare big.dat --out outbox --mailbox X26ABC1 --target ui --env live
///   zcat extract.csv.gz | ndop prepare - --column 2 --out outbox --mailbox X26ABC1
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct PrepareArgs {
    #[command(flatten)]
    pub input: InputArgs,

    /// Output directory; must be new or empty.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Your MESH mailbox id (From_DTS, and the file-name prefix).
    #[arg(long, env = "NDOP_MAILBOX", value_name = "MAILBOX")]
    pub mailbox: String,

    /// Spine environment: int sends to X26OT154, live to X26HC065.
    #[arg(long, default_value = "int", value_name = "ENV")]
    pub env: PosEnv,

    /// Production date for the file names (default: today).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<NaiveDate>,

    /// First 4-digit sequence number in the file names.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seq: u32,

    /// Project tag added to Subject and LocalId (letters, digits, _ and -).
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,

    /// Line ending of the .dat lines: crlf (as the NHS page shows) or lf.
    #[arg(long, default_value = "crlf", value_name = "EOL")]
    pub line_ending: LineEnding,

    /// Where the files will be sent: api (MESH API or client, 20 GB per file) or ui (the MESH
    /// web page, 100 MB per file). Sets the default --max-bytes.
    #[arg(long, default_value = "api", value_parser = ["api", "ui"], value_name = "TARGET")]
    pub target: String,

    /// Largest .dat file, e.g. 20GB, 100MB, 75MiB (default from --target).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub max_bytes: Option<u64>,

    /// Most records in one .dat file.
    #[arg(long, value_name = "N")]
    pub max_records: Option<u64>,

    /// Exit with code 1 when any line is invalid (the files and reports are still written).
    #[arg(long)]
    pub fail_on_invalid: bool,
}

/// Runs `ndop prepare`.
pub(crate) fn run(args: PrepareArgs) -> anyhow::Result<u8> {
    let mailbox = check_mailbox(&args.mailbox)?;
    if let Some(tag) = &args.tag {
        check_tag(tag)?;
    }
    let max_bytes = args.max_bytes.unwrap_or(if args.target == "ui" {
        100_000_000
    } else {
        20_000_000_000
    });
    let opts = PrepareOptions {
        scan: args.input.scan_options(),
        dat: DatOptions {
            dir: args.out.clone(),
            mailbox,
            date: args
                .date
                .unwrap_or_else(|| chrono::Local::now().date_naive()),
            seq: args.seq,
            env: args.env,
            tag: args.tag.clone(),
            line_ending: args.line_ending,
            max_bytes,
            max_records: args.max_records,
        },
    };
    let bar = progress::bytes("prepare", processor::scan::total_len(&args.input.inputs));
    let summary = prepare(&args.input.inputs, &opts, &mut |done| {
        bar.set_position(done)
    })?;
    bar.finish_and_clear();
    let c = &summary.counts;
    let mut text = format!(
        "ndop prepare: {} lines from {} input(s) in {:.2} s\n",
        thousands(c.lines),
        summary.inputs.len(),
        summary.elapsed_seconds
    );
    text += &describe_counts(c);
    for f in &summary.files {
        text += &format!(
            "  wrote {} ({} records, {} bytes) + {}\n",
            args.out.join(&f.name).display(),
            thousands(f.records),
            thousands(f.bytes),
            f.ctl
        );
    }
    if summary.files.is_empty() {
        text += "  no valid numbers: no .dat written\n";
    }
    text += &format!(
        "  reports: {} and {}\n",
        args.out.join(INVALID_CSV).display(),
        args.out.join(SUMMARY_JSON).display()
    );
    eprint!("{text}");
    if args.fail_on_invalid && c.invalid + c.unparseable > 0 {
        eprintln!(
            "ndop prepare: {} invalid line(s) and --fail-on-invalid given",
            thousands(c.invalid)
        );
        return Ok(exit::INVALID_LINES);
    }
    Ok(exit::OK)
}
