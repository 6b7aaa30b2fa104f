//! `ndop send`: prepared pairs to the POS over MESH, journaled, never twice.

use crate::args::{FolderArgs, MeshArgs};
use crate::exit;
use crate::pipeline::{runtime, send_with_progress};
use crate::report::{print_json, thousands};
use clap::Args;
use pos_client::journal::Journal;
use std::path::PathBuf;

/// Send prepared .dat + .ctl pairs to the POS over MESH, journaled, never twice.
///
/// Each .ctl names the recipient, workflow, Subject and LocalId. Shows a progress bar. Each accepted submission is appended to the journal
/// (WORK/journal.jsonl); pairs already in the journal are never sent twice, and an
/// interrupted chunked upload resumes where it stopped. A send cut off after MESH accepted a
/// file but before the journal recorded it is found again by its LocalId (MESH tracking) and
/// adopted, not sent twice.
///
/// Examples:
///   NDOP_MESH_PASSWORD=... NDOP_MESH_SHARED_KEY=... ndop send outbox --mailbox X26ABC1
///   ndop send outbox/X26ABC1-231126-0001.dat --work job42 --config ndop.toml
///   ndop send outbox --mesh http://127.0.0.1:8700 --mailbox X26ABC1   (a local mock-mesh)
///   ndop send outbox --mesh-folder /mesh/data/X26ABC1 --mailbox X26ABC1 (an installed MESH client)
///   ndop send outbox --meshclient-cfg /mesh/app/meshclient.cfg --mailbox X26ABC1
///   ndop send outbox --compress-level 0     (no compression: a fast link, a CPU-starved host)
///
/// With --mesh-folder or --meshclient-cfg, each pair is handed to the installed MESH client
/// (written under a dot-name, journaled, renamed into OUT, .dat first) and the command returns;
/// `ndop collect` confirms what the client sent (SENT) or refused (FAILED: exit 5).
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct SendArgs {
    /// A directory of prepared pairs, or .dat files (each with its .ctl beside it).
    #[arg(required = true, value_name = "DIR|FILE")]
    pub inputs: Vec<PathBuf>,

    /// Work directory holding the journal (default: the directory given, else the current
    /// directory).
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,

    /// Gzip level of the chunks: 0 (stored), 1 (the default: on .dat files a line encoder, the
    /// fastest and as small as 9, about 15% of the file), 2-9 (libdeflate; on .dat files larger
    /// or no smaller than 1 for 2-12x its CPU), or `compress_level` in the [mesh] table.
    #[arg(long, value_name = "0-9", value_parser = clap::value_parser!(u32).range(0..=9))]
    pub compress_level: Option<u32>,

    #[command(flatten)]
    pub mesh: MeshArgs,

    #[command(flatten)]
    pub folder: FolderArgs,
}

/// Runs `ndop send`.
pub(crate) fn run(args: SendArgs) -> anyhow::Result<u8> {
    let work = match &args.work {
        Some(w) => w.clone(),
        None => match args.inputs.as_slice() {
            [dir] if dir.is_dir() => dir.clone(),
            _ => PathBuf::from("."),
        },
    };
    if let Some(folders) = args.folder.folders(args.mesh.mailbox.as_deref())? {
        let mut journal = Journal::open(&work)?;
        let look_once = pos_client::CollectOptions {
            interval: std::time::Duration::ZERO,
            timeout: std::time::Duration::ZERO,
        };
        let report = runtime()?.block_on(pos_client::folder::send(
            &folders,
            &mut journal,
            &args.inputs,
            args.mesh.mailbox.as_deref(),
            &look_once,
        ))?;
        print_json(&report)?;
        eprintln!(
            "ndop send: {} handed to the MESH client in {}, {} sent, {} already sent; journal {}",
            report.queued,
            folders.outbox.display(),
            report.sent,
            report.already_sent,
            journal.path().display()
        );
        return Ok(exit::OK);
    }
    let mut settings = args.mesh.settings()?;
    settings.compress_level = args.compress_level.or(settings.compress_level);
    let client = crate::args::client_for(&settings)?;
    let mut journal = Journal::open(&work)?;
    let report =
        runtime()?.block_on(send_with_progress(&client, &mut journal, &args.inputs, &[]))?;
    print_json(&report)?;
    eprintln!(
        "ndop send: {} sent, {} resumed, {} already sent ({} bytes); journal {}",
        report.sent,
        report.resumed,
        report.already_sent,
        thousands(report.bytes_sent),
        journal.path().display()
    );
    Ok(exit::OK)
}
