//! `ndop collect`: the POS replies, stored safely before they are acknowledged.

use crate::args::{MeshArgs, PollArgs};
use crate::exit;
use crate::pipeline::runtime;
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
}

/// Runs `ndop collect`.
pub(crate) fn run(args: CollectArgs) -> anyhow::Result<u8> {
    let client = args.mesh.client()?;
    let mut journal = Journal::open(&args.work)?;
    let opts = args.poll.options()?;
    let report = runtime()?.block_on(pos_client::collect(&client, &mut journal, &opts))?;
    print_json(&report)?;
    describe_collect(&report, &args.work);
    Ok(if report.complete { exit::OK } else { exit::POS })
}
