//! `ndop send` and `ndop collect`, and the MESH connection options they share with `run`.

use super::thousands;
use crate::{exit, progress};
use anyhow::Context;
use clap::Args;
use mesh_client::MeshClient;
use processor::journal::Journal;
use processor::mesh_settings::MeshSettings;
use processor::transfer::{self, CollectOptions, CollectReport, SendReport, TransferError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to reach MESH. Secrets come only from the environment or the configuration file, never
/// from the command line (where other users could read them).
#[derive(Debug, Clone, Args)]
pub struct MeshArgs {
    /// TOML configuration file with a [mesh] table (mailbox, password, shared_key, cert, key,
    /// ca, env, chunk_size, compress).
    #[arg(long, env = "NDOP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// MESH environment: int, live, or a base URL such as http://127.0.0.1:8700
    /// [env: NDOP_MESH_URL]
    #[arg(long = "mesh", value_name = "ENV|URL")]
    pub mesh: Option<String>,

    /// Your MESH mailbox id [env: NDOP_MAILBOX]. Password, shared key and certificates come
    /// from NDOP_MESH_PASSWORD, NDOP_MESH_SHARED_KEY, NDOP_MESH_CERT, NDOP_MESH_KEY and
    /// NDOP_MESH_CA or the configuration file.
    #[arg(long, value_name = "MAILBOX")]
    pub mailbox: Option<String>,
}

impl MeshArgs {
    /// The settings: these options > environment > configuration file > defaults.
    pub fn settings(&self) -> anyhow::Result<MeshSettings> {
        let explicit = MeshSettings {
            env: self.mesh.clone(),
            mailbox: self.mailbox.clone(),
            ..MeshSettings::default()
        };
        Ok(MeshSettings::resolve(explicit, self.config.as_deref())?)
    }

    /// A client for these settings.
    pub fn client(&self) -> anyhow::Result<MeshClient> {
        client_for(&self.settings()?)
    }
}

/// A client for `settings`.
pub fn client_for(settings: &MeshSettings) -> anyhow::Result<MeshClient> {
    let config = settings.client_config()?;
    MeshClient::new(config).context("cannot set up the MESH client")
}

/// Polling options shared by `collect` and `run`.
#[derive(Debug, Clone, Args)]
pub struct PollArgs {
    /// Seconds between two inbox polls (the real MESH asks for no more than one every few
    /// minutes).
    #[arg(long, default_value_t = 300.0, value_name = "SECONDS")]
    pub interval: f64,

    /// Give up waiting after this many seconds (the POS usually answers within an hour).
    #[arg(long, default_value_t = 7200.0, value_name = "SECONDS")]
    pub timeout: f64,
}

impl PollArgs {
    pub fn options(&self) -> anyhow::Result<CollectOptions> {
        let secs = |s: f64, what: &str| {
            Duration::try_from_secs_f64(s).with_context(|| format!("bad --{what} {s}"))
        };
        Ok(CollectOptions {
            interval: secs(self.interval, "interval")?,
            timeout: secs(self.timeout, "timeout")?,
        })
    }
}

/// Send prepared .dat + .ctl pairs to the POS over MESH, journaled, never twice.
///
/// Each .ctl names the recipient, workflow, Subject and LocalId. Shows a progress bar. Each accepted submission is appended to the journal
/// (WORK/ndop-journal.jsonl); pairs already in the journal are never sent twice, and an
/// interrupted chunked upload resumes where it stopped.
///
/// Examples:
///   NDOP_MESH_PASSWORD=... NDOP_MESH_SHARED_KEY=... ndop send outbox --mailbox X26ABC1
///   ndop send outbox/X26ABC1-231126-0001.dat --work job42 --config ndop.toml
///   ndop send outbox --mesh http://127.0.0.1:8700 --mailbox X26ABC1   (a local mock-mesh)
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct SendArgs {
    /// A directory of prepared pairs, or .dat files (each with its .ctl beside it).
    #[arg(required = true, value_name = "DIR|FILE")]
    pub inputs: Vec<PathBuf>,

    /// Work directory holding the journal (default: the directory given, else the current
    /// directory).
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,

    #[command(flatten)]
    pub mesh: MeshArgs,
}

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
pub struct CollectArgs {
    /// Work directory holding the journal written by send.
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub work: PathBuf,

    #[command(flatten)]
    pub poll: PollArgs,

    #[command(flatten)]
    pub mesh: MeshArgs,
}

/// A single-threaded runtime: the transfers are I/O-bound and sequential.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Sends with a progress bar.
pub async fn send_with_progress(
    client: &MeshClient,
    journal: &mut Journal,
    inputs: &[PathBuf],
) -> Result<SendReport, TransferError> {
    let bar = progress::bytes("send", Some(0));
    let shown = bar.clone();
    let report = transfer::send(client, journal, inputs, &move |sent, total| {
        shown.set_length(total);
        shown.set_position(sent);
    })
    .await;
    bar.finish_and_clear();
    report
}

pub fn run_send(args: SendArgs) -> anyhow::Result<u8> {
    let work = match &args.work {
        Some(w) => w.clone(),
        None => match args.inputs.as_slice() {
            [dir] if dir.is_dir() => dir.clone(),
            _ => PathBuf::from("."),
        },
    };
    let client = args.mesh.client()?;
    let mut journal = Journal::open(&work)?;
    let report = runtime()?.block_on(send_with_progress(&client, &mut journal, &args.inputs))?;
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

pub fn run_collect(args: CollectArgs) -> anyhow::Result<u8> {
    let client = args.mesh.client()?;
    let mut journal = Journal::open(&args.work)?;
    let opts = args.poll.options()?;
    let report = runtime()?.block_on(transfer::collect(&client, &mut journal, &opts))?;
    print_json(&report)?;
    describe_collect(&report, &args.work);
    Ok(if report.complete { exit::OK } else { exit::POS })
}

/// The human account of a collect, for standard error.
pub fn describe_collect(report: &CollectReport, work: &Path) {
    eprintln!(
        "ndop collect: {} replies stored in {} after {} polls; {} left in the inbox; {}",
        report.replies.len(),
        work.join(transfer::REPLY_DIR).display(),
        report.polls,
        report.unrecognised.len(),
        if report.complete {
            "every submission has its final reply".to_string()
        } else {
            format!(
                "{} submissions still waiting (run collect again later)",
                report.pending.len()
            )
        }
    );
    for u in &report.unrecognised {
        eprintln!("  left in inbox: {} ({})", u.message_id, u.reason);
    }
}

/// Prints a value as pretty JSON on standard output.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string_pretty(value)?)?;
    stdout.flush()?;
    Ok(())
}
