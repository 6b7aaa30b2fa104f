//! `ndop collect`: the POS replies, stored safely before they are acknowledged.

use crate::args::{FolderArgs, MeshArgs, PollArgs};
use crate::exit;
use crate::pipeline::{folder_collect, runtime};
use crate::report::{describe_collect, print_json};
use clap::Args;
use pos_client::journal::Journal;
use std::path::PathBuf;

/// Collect the POS replies to what was sent, store them safely, then acknowledge them.
///
/// Polls the inbox, downloads the messages that belong
/// to the journal's submissions (matched by LocalId), classify them (job created, cleaned file,
/// invalid-NHS-number rejection, delivery report), store them under WORK/replies (synced, mode
/// 0600) and only then acknowledge them. Messages it does not recognise stay in the inbox and
/// are reported. The report is printed as JSON.
///
/// Examples:
///   ndop collect --work outbox --mailbox X26ABC1
///   ndop collect --work job42 --interval 60 --timeout 3600
///   ndop collect --work job42 --mesh-folder /mesh/data/X26ABC1 --mailbox X26ABC1
///
/// With --mesh-folder or --meshclient-cfg, it first waits for the MESH client to send what
/// `ndop send` handed it (SENT; FAILED is exit 5 with the status code), then scans IN for .ctl
/// files (reports have no .dat), takes the ones that answer the journal's submissions (copied
/// into WORK/replies, synced, then removed from IN) and leaves everything else in IN, listed.
/// Delay reports (code 05) and any Status ERROR are printed as alerts.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct CollectArgs {
    /// Work directory holding the journal written by send.
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub work: PathBuf,

    #[command(flatten)]
    pub poll: PollArgs,

    #[command(flatten)]
    pub mesh: MeshArgs,

    #[command(flatten)]
    pub folder: FolderArgs,
}

/// Runs `ndop collect`.
pub(crate) fn run(args: CollectArgs) -> anyhow::Result<u8> {
    let opts = args.poll.options()?;
    if let Some(folders) = args.folder.folders(args.mesh.mailbox.as_deref())? {
        let mut journal = Journal::open(&args.work)?;
        let report = runtime()?.block_on(folder_collect(&folders, &mut journal, &opts))?;
        print_json(&report)?;
        describe_collect(&report.report, &args.work);
        return Ok(if report.report.complete {
            exit::OK
        } else {
            exit::POS
        });
    }
    let client = args.mesh.client()?;
    let mut journal = Journal::open(&args.work)?;
    let report = runtime()?.block_on(pos_client::collect(&client, &mut journal, &opts))?;
    print_json(&report)?;
    describe_collect(&report, &args.work);
    Ok(if report.complete { exit::OK } else { exit::POS })
}
