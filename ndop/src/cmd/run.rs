//! `ndop run`: prepare, send, collect, reconcile and filter one extract in one resumable go.

use crate::args::{FolderArgs, InputArgs, MeshArgs, PollArgs};
use crate::exit;
use crate::pipeline::{Outcome, Pipeline};
use crate::report::print_json;
use anyhow::bail;
use clap::Args;
use std::path::PathBuf;

/// Do the whole job on one extract: prepare, send, collect, reconcile, filter.
///
/// Prepares the POS files, sends them over MESH, waits for and collects the replies, works out
/// who opted out and writes the extract without them. Everything lives in the work directory (prepared/, replies/, reconciled/, the
/// journal, run.json), and at the end, however the run ended, the record of the check that an
/// IG lead can read and file: WORK/report.html (see `ndop report`). If the run is interrupted at any step, or collect times out, run the
/// same command again: it resumes from the journal and never sends a file twice.
///
/// The extract must be a regular file, and the same file on every run in one work directory:
/// its size, modification time and inode are journaled when it is prepared, and a run that finds
/// them changed (checked at the start, after prepare and around filter) stops with exit code 3:
/// nothing more is sent and no output is left from the changed file. A work directory from an
/// older ndop resumes with a warning.
///
/// Examples:
///   export NDOP_MESH_PASSWORD=... NDOP_MESH_SHARED_KEY=... NDOP_MESH_CERT=... NDOP_MESH_KEY=...
///   ndop run extract.csv --column nhs_number --work job42 --mailbox X26ABC1 --mesh int
///   ndop run extract.dat --work job42 --config ndop.toml --interval 60
///   ndop run extract.csv --column nhs_number --work job42 --mailbox X26ABC1 \
///       --mesh-folder /mesh/data/X26ABC1 --interval 60   (through an installed MESH client)
///   ndop run extract.dat --work job42 --config ndop.toml --consent-out job42/consents.ndjson
///   ndop run population.csv --column nhs_number --work pop-2026-11-20 --cache /srv/ndop-cache
///
/// With --mesh-folder DIR (the mailbox's folder root) or --meshclient-cfg FILE --mailbox ID,
/// the files go through an installed MESH client's folders instead of the MESH API (see
/// `ndop send --help` and `ndop collect --help`); everything else is the same.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub input: InputArgs,

    /// Work directory (created if needed; reuse it to resume).
    #[arg(long, value_name = "DIR")]
    pub work: PathBuf,

    /// The filtered extract (default: WORK/cleared.<extension of the extract>).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Project tag added to Subject and LocalId (letters, digits, _ and -).
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,

    /// Most records in one .dat file (default: only the 20 GB MESH limit splits).
    #[arg(long, value_name = "N")]
    pub max_records: Option<u64>,

    /// When the run completes, import its checks into this results cache (see `ndop cache`).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,

    #[command(flatten)]
    pub poll: PollArgs,

    /// Gzip level of the chunks sent: 0 (stored) to 9 (smallest, slowest); default 3, or
    /// `compress_level` in the [mesh] table.
    #[arg(long, value_name = "0-9", value_parser = clap::value_parser!(u32).range(0..=9))]
    pub compress_level: Option<u32>,

    #[command(flatten)]
    pub mesh: MeshArgs,

    #[command(flatten)]
    pub folder: FolderArgs,

    #[command(flatten)]
    pub consent: crate::cmd::reconcile::ConsentArgs,
}

/// Runs `ndop run`.
pub(crate) fn run(args: RunArgs) -> anyhow::Result<u8> {
    let [extract] = args.input.inputs.as_slice() else {
        bail!(processor::Error::Usage(
            "run takes exactly one extract".into()
        ));
    };
    let out = args.out.clone().unwrap_or_else(|| {
        let ext = extract
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("csv");
        args.work.join(format!("cleared.{ext}"))
    });
    let pipeline = Pipeline {
        extract: extract.clone(),
        scan: args.input.scan_options(),
        work: args.work.clone(),
        out,
        settings: {
            let mut s = args.mesh.settings()?;
            s.compress_level = args.compress_level.or(s.compress_level);
            s
        },
        tag: args.tag.clone(),
        max_records: args.max_records,
        poll: args.poll.options()?,
        folders: args.folder.folders(args.mesh.mailbox.as_deref())?,
        consent: Some(args.consent),
    };
    let outcome = pipeline.run();
    if let Some(report) = crate::evidence::report_run(&args.work, "ndop run") {
        eprintln!("ndop run: the record of this check: {}", report.display());
    }
    match outcome? {
        Outcome::Done(done) => {
            print_json(&done.0)?;
            if let Some(dir) = &args.cache {
                let s = crate::cached::import(
                    dir,
                    std::slice::from_ref(&args.work),
                    &args.input.engine.scan_options(),
                )?;
                eprintln!(
                    "ndop run: cached {} batch(es) in {} ({} already there)",
                    s.added.len(),
                    dir.display(),
                    s.already_present
                );
            }
            Ok(exit::OK)
        }
        Outcome::Waiting(report) => {
            print_json(&report)?;
            eprintln!("ndop run: replies still missing; run the same command again to resume");
            Ok(exit::POS)
        }
    }
}
