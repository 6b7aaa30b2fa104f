//! `mock-mesh`: runs the mock MESH server. Thin: parses arguments, builds a `Config`, calls
//! `mock_mesh::serve`, maps the result to an exit code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Exit codes (also listed in `--help`).
const EXIT_OK: u8 = 0;
const EXIT_ERROR: u8 = 1;

/// A MESH API v1/v2 server with the National Data Opt-out POS workflow built in.
///
/// Exit codes: 0 = stopped cleanly (Ctrl-C / SIGTERM), 1 = start-up or runtime error,
/// 2 = bad command line.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the MESH API until Ctrl-C.
    ///
    /// Built-in mailboxes (password `password`, shared key `TestKey`): X26ABC1, X26ABC2,
    /// X26ABC3 (any workflow, like mesh-sandbox) and the POS mailboxes X26OT154 (INT) and
    /// X26HC065 (LIVE), which answer `SPINE_NTT_UPHOLDING` submissions.
    ///
    /// The same server is a mock of the NDOP FHIR API (STU3 Consent) under /STU3/ (metadata,
    /// Consent search/create/update/_history/vread; Spine headers and an unsigned JWT required),
    /// seeded with the INT test patients' opt-outs; the INT POS answers from the same
    /// Consents, and they are kept in the store directory like the messages.
    ///
    /// Examples:
    ///
    ///   mock-mesh serve --listen 127.0.0.1:8700 --memory
    ///
    ///   mock-mesh serve --store /var/tmp/mesh --config mock-mesh/mock-mesh.toml --pos-delay 5
    ///
    ///   mock-mesh serve --optout-rate 0.03 --optout-seed 7 --no-auth-replay-check
    ///
    ///   mock-mesh serve --tls-cert server.pem --tls-key server.key --tls-client-ca client-ca.pem
    ///
    ///   mock-mesh serve --memory --tls-generate /tmp/mesh-tls
    ///
    /// The last two serve https:// and, like real MESH, refuse any client that does not
    /// present a certificate issued by the client CA (mutual TLS). --tls-generate makes a
    /// throw-away CA (ca.pem), a server certificate for 127.0.0.1 and localhost
    /// (server.pem, server.key) and a client certificate (client.pem, client.key) in the
    /// directory first, and logs which files a client should use.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8700 (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8700")]
    listen: SocketAddr,
    /// Keep messages on disk under DIR (survives restarts). Overrides the config file's `store`.
    #[arg(long, value_name = "DIR", conflicts_with = "memory")]
    store: Option<PathBuf>,
    /// Keep messages in memory only (the default unless --store or the config sets a store).
    #[arg(long)]
    memory: bool,
    /// TOML configuration (mailboxes, workflows, auth, POS); see mock-mesh/mock-mesh.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Seconds between the POS "job created" message and its result, e.g. 2.5.
    #[arg(long, value_name = "SECS")]
    pos_delay: Option<f64>,
    /// Extra opted-out NHS numbers, one per line (first comma-separated field).
    #[arg(long, value_name = "FILE")]
    optout_file: Option<PathBuf>,
    /// Fraction (0..=1) of all numbers treated as opted out, chosen by a hash of the number.
    #[arg(long, value_name = "R")]
    optout_rate: Option<f64>,
    /// How POS results are stored and sent: identity (the default) or gzip (each chunk one gzip
    /// member, passed through to clients that accept gzip, decoded for the others).
    #[arg(long, value_name = "ENCODING", value_parser = ["identity", "gzip"])]
    pos_result_encoding: Option<String>,
    /// Seed of the --optout-rate hash.
    #[arg(long, value_name = "S")]
    optout_seed: Option<u64>,
    /// HMAC shared key (default TestKey).
    #[arg(long, value_name = "KEY", env = "MOCK_MESH_SHARED_KEY")]
    shared_key: Option<String>,
    /// Accept a token more than once (mesh-sandbox behaviour).
    #[arg(long)]
    no_auth_replay_check: bool,
    /// Accept token timestamps more than 2 hours from the server clock (mesh-sandbox behaviour).
    #[arg(long)]
    no_auth_timestamp_check: bool,
    /// Skip authentication entirely (mesh-sandbox AUTH_MODE=none).
    #[arg(long)]
    no_auth: bool,
    /// Days before an unacknowledged message becomes undeliverable (default 5).
    #[arg(long, value_name = "DAYS")]
    inbox_expiry_days: Option<f64>,
    /// Drop a client whose request body (or head) stalls this long (default 60).
    #[arg(long, value_name = "SECS")]
    body_timeout_secs: Option<f64>,
    /// Cut off a download whose client stops reading for this long (default 60).
    #[arg(long, value_name = "SECS")]
    response_timeout_secs: Option<f64>,
    /// Connections served at once; more wait in the listen backlog (default 1024).
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Largest N of `Mex-Chunk-Range: 1:N` (417 InvalidHeaderChunks beyond; default 4096 =
    /// 20 GiB over 5 MiB chunks).
    #[arg(long, value_name = "N")]
    max_chunks: Option<u32>,
    /// Unfinished chunked messages one mailbox may have at once (429 beyond; default 100).
    #[arg(long, value_name = "N")]
    max_uploads_per_mailbox: Option<usize>,
    /// Hours after which an unfinished chunked upload is abandoned (default 24).
    #[arg(long, value_name = "HOURS")]
    upload_expiry_hours: Option<f64>,
    /// Serve HTTPS with this PEM certificate chain (leaf first; needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, RSA or EC).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: require a client certificate issued by a CA in this PEM file; clients
    /// without one fail the TLS handshake (needs --tls-cert).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Mutual TLS with certificates made now: writes ca.pem, server.pem, server.key,
    /// client.pem and client.key (keys mode 0600) into DIR, which must not hold any of them,
    /// and serves with them. For tests and local setups only.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with_all = ["tls_cert", "tls_key", "tls_client_ca"]
    )]
    tls_generate: Option<PathBuf>,
    /// Log filter (also RUST_LOG), e.g. info or mock_mesh=debug.
    #[arg(long, default_value = "info")]
    log: String,
}

fn build_config(a: &ServeArgs) -> anyhow::Result<mock_mesh::Config> {
    let mut c = match &a.config {
        Some(p) => mock_mesh::Config::from_toml_file(p)?,
        None => mock_mesh::Config::default(),
    };
    if let Some(dir) = &a.store {
        c = c.with_store_dir(dir);
    }
    if a.memory {
        c.store = mock_mesh::StoreMode::Memory;
    }
    if let Some(d) = a.pos_delay {
        anyhow::ensure!(d.is_finite() && d >= 0.0, "--pos-delay must be >= 0");
        c.pos.delay = Duration::from_secs_f64(d);
    }
    if let Some(f) = &a.optout_file {
        c.pos.optout_numbers.extend(mock_mesh::load_optout_file(f)?);
    }
    if let Some(r) = a.optout_rate {
        anyhow::ensure!(
            (0.0..=1.0).contains(&r),
            "--optout-rate must be within 0..=1"
        );
        c.pos.optout_rate = r;
    }
    if let Some(s) = a.optout_seed {
        c.pos.optout_seed = s;
    }
    if let Some(e) = &a.pos_result_encoding {
        c.pos.result_encoding = mock_mesh::parse_result_encoding(e)
            .with_context(|| format!("--pos-result-encoding {e}: identity or gzip"))?;
    }
    if let Some(k) = &a.shared_key {
        c.shared_key = k.clone();
    }
    if a.no_auth_replay_check {
        c.auth.check_replay = false;
    }
    if a.no_auth_timestamp_check {
        c.auth.check_timestamp = false;
    }
    if a.no_auth {
        c.auth.enabled = false;
    }
    if let Some(d) = a.inbox_expiry_days {
        anyhow::ensure!(d.is_finite() && d > 0.0, "--inbox-expiry-days must be > 0");
        c.inbox_expiry = Duration::from_secs_f64(d * 86_400.0);
    }
    mock_mesh::LimitOverrides {
        body_timeout_secs: a.body_timeout_secs,
        response_timeout_secs: a.response_timeout_secs,
        max_connections: a.max_connections,
        max_chunks: a.max_chunks,
        max_uploads_per_mailbox: a.max_uploads_per_mailbox,
        upload_expiry_hours: a.upload_expiry_hours,
        pos_max_decoded_bytes: None,
    }
    .apply(&mut c.limits)
    .map_err(|e| anyhow::anyhow!("{}", e.replace("limits.", "--").replace('_', "-")))?;
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        let tls = mock_mesh::TlsConfig::from_files(cert, key, a.tls_client_ca.as_deref())?;
        c = c.with_tls(tls);
    }
    if let Some(dir) = &a.tls_generate {
        let pki = mock_mesh::pki::Pki::generate(dir)?;
        c = c.with_tls(pki.tls_config(true)?);
        tracing::info!(
            dir = %dir.display(),
            "TLS certificates written; clients use certificate {}, key {} and trust CA {}",
            pki.client.cert.display(),
            pki.client.key.display(),
            pki.ca.display()
        );
    }
    Ok(c)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down");
}

async fn run(a: ServeArgs) -> anyhow::Result<()> {
    let config = build_config(&a)?;
    // recover the store first: "listening" means requests can be served
    let app = mock_mesh::App::new(config.clone()).await?;
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = listener.local_addr()?;
    let store = match &config.store {
        mock_mesh::StoreMode::Memory => "memory".to_string(),
        mock_mesh::StoreMode::Disk(d) => d.display().to_string(),
    };
    let (scheme, client_certificates) = match &config.tls {
        None => ("http", "none"),
        Some(tls) if tls.requires_client_certificate() => ("https", "required"),
        Some(_) => ("https", "not asked for"),
    };
    tracing::info!(%addr, store = %store, mailboxes = config.mailboxes.len(), client_certificates, "mock-mesh listening on {scheme}://{addr}");
    mock_mesh::serve_app(listener, app, shutdown_signal()).await?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Serve(args) = cli.command;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mock-mesh: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("mock-mesh: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
