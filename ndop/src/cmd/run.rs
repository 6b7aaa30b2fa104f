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
///   ndop run extract.csv --column nhs_number --work job43 --cache C --reuse-younger-than 3d
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

    /// With --cache: numbers whose newest check in the cache is younger than AGE (e.g. 3d, at
    /// most 21d) are not sent again; their answer comes from the cache, the rest go to the POS,
    /// and the filtered extract combines both (run.json's `reuse` says how many of each).
    #[arg(long, value_name = "AGE", requires = "cache")]
    pub reuse_younger_than: Option<String>,

    #[command(flatten)]
    pub poll: PollArgs,

    /// Gzip level of the chunks sent: 0 (stored), 1 (the default: on .dat files a line
    /// encoder, the fastest and as small as 9, about 15% of the file), 2-9 (libdeflate; on .dat
    /// files larger or no smaller than 1 for 2-12x its CPU), or `compress_level` in the [mesh]
    /// table.
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
    // --reuse-younger-than: send only what the cache does not answer
    let reuse = match (&args.reuse_younger_than, &args.cache) {
        (Some(age), Some(dir)) => Some(crate::cached::plan_reuse(
            dir,
            &args.work,
            extract,
            &args.input.scan_options(),
            age,
        )?),
        _ => None,
    };
    let finish = |plan, sent| {
        finish_reuse(
            &args.input,
            args.cache.as_deref(),
            &args.work,
            extract,
            &out,
            plan,
            sent,
        )
    };
    if let Some((plan, _)) = reuse.as_ref().filter(|(p, _)| p.sent == 0) {
        // the cache answers everything: nothing to send
        return finish(plan, None);
    }
    let pipeline = Pipeline {
        extract: reuse
            .as_ref()
            .map_or(extract.clone(), |(_, send)| send.clone()),
        scan: match reuse {
            Some(_) => args.input.engine.scan_options(),
            None => args.input.scan_options(),
        },
        work: args.work.clone(),
        out: match reuse {
            Some(_) => args.work.join("sent-cleared.dat"),
            None => out.clone(),
        },
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
            if let Some((plan, _)) = &reuse {
                return finish(plan, Some(&done.1));
            }
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

/// The end of a run with --reuse-younger-than: the POS's answers (if anything was sent) go into
/// the cache, then the extract is filtered with them and the cached answers together, and
/// run.json gains a `reuse` object.
fn finish_reuse(
    input: &InputArgs,
    cache: Option<&std::path::Path>,
    work: &std::path::Path,
    extract: &std::path::Path,
    out: &std::path::Path,
    plan: &crate::cached::ReusePlan,
    sent: Option<&processor::reconcile::Reconciled>,
) -> anyhow::Result<u8> {
    let lines = input.engine.scan_options();
    if let (Some(dir), Some(_)) = (cache, sent) {
        crate::cached::import(dir, &[work.to_path_buf()], &lines)?;
    }
    let (checked, allowed) = crate::cached::reused_sets(work)?;
    if let Some(r) = sent {
        r.requested.for_each(|n| {
            checked.insert(n);
        });
        r.returned.for_each(|n| {
            allowed.insert(n);
        });
    }
    crate::pipeline::remove_if_exists(out)?;
    crate::pipeline::remove_if_exists(&processor::filter::default_rejects(out))?;
    let filtered = processor::filter::filter(
        extract,
        &allowed,
        Some(&checked),
        &input.scan_options(),
        out,
        &mut |_| {},
    )?;
    let run_json = work.join(crate::pipeline::RUN_JSON);
    let mut summary = crate::pipeline::read_json::<serde_json::Value>(&run_json, "run summary")?
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(f) = summary.get("filter").cloned() {
        // the pipeline filtered only what it sent
        summary["filter_sent"] = f;
    }
    summary["reuse"] = serde_json::to_value(plan)?;
    summary["filter"] = serde_json::to_value(&filtered)?;
    processor::files::write_atomic(
        work,
        crate::pipeline::RUN_JSON,
        &serde_json::to_vec_pretty(&summary)?,
    )?;
    print_json(&summary)?;
    let c = &filtered.counts;
    eprintln!(
        "ndop run: {} numbers answered from the cache (checks younger than {}), {} sent to the \
         POS; wrote {}: kept {} of {} rows, dropped {} opted out, {} not checked, {} invalid",
        crate::report::thousands(plan.reused),
        plan.younger_than,
        crate::report::thousands(plan.sent),
        out.display(),
        crate::report::thousands(c.kept),
        crate::report::thousands(c.rows),
        crate::report::thousands(c.opted_out),
        crate::report::thousands(c.not_checked),
        crate::report::thousands(c.invalid),
    );
    Ok(exit::OK)
}
