//! `mesh-folder-client`: a test double of NHS England's Java MESH client (see the library
//! documentation) for one mailbox.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mesh_client::{ClientConfig, MeshClient};
use mesh_folder_client::{stop_signal, StandIn};

/// A test double of NHS England's Java MESH client, NOT a replacement for it: syncs one
/// mailbox's folders (IN, OUT, SENT, FAILED under --root, names matched ignoring case) with a
/// MESH API such as mock-mesh or mesh-sandbox, the way the client user guide describes, so that
/// `ndop --mesh-folder` can be tested offline. Stops cleanly on SIGTERM or Ctrl-C.
///
/// The mailbox password and shared key come from MESH_PASSWORD and MESH_SHARED_KEY
/// (default `password` and `TestKey`, mock-mesh's and the sandbox's).
///
/// Examples:
///   mock-mesh serve --port 8700 &
///   mkdir -p /tmp/box/{IN,OUT,SENT,FAILED,TEMP}
///   mesh-folder-client --root /tmp/box --mailbox X26ABC1 --url http://127.0.0.1:8700 --poll 2
#[derive(Debug, Parser)]
#[command(name = "mesh-folder-client", version, verbatim_doc_comment)]
struct Args {
    /// The mailbox's folder root (InterfaceRoot in meshclient.cfg).
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// The mailbox id.
    #[arg(long, value_name = "ID")]
    mailbox: String,
    /// Seconds between polls (the real client's default is 30 minutes).
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    poll: f64,
    /// Base URL of the MESH API.
    #[arg(long, value_name = "URL")]
    url: String,
    /// Chunk size in bytes for large files (the real client uses 20 MB).
    #[arg(long, default_value_t = 20_000_000, value_name = "BYTES")]
    chunk_size: u64,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-folder-client: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(a: Args) -> anyhow::Result<()> {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let client = MeshClient::new(
        ClientConfig::default()
            .with_url(a.url.clone())
            .with_mailbox(a.mailbox.clone(), env("MESH_PASSWORD", "password"))
            .with_shared_key(env("MESH_SHARED_KEY", "TestKey"))
            .with_chunk_size(a.chunk_size),
    )
    .context("cannot set up the MESH client")?;
    let stand_in = StandIn {
        root: a.root,
        client,
        poll: Duration::try_from_secs_f64(a.poll).context("bad --poll")?,
        min_age: Duration::from_secs(1),
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(stand_in.run(stop_signal()))
}
