//! Command-line options shared by several subcommands: what to read and how (every command
//! that scans extracts), and how to reach MESH and how long to wait (send, collect, run).

use anyhow::Context;
use clap::Args;
use mesh_client::MeshClient;
use pos_client::folder::Folders;
use pos_client::CollectOptions;
use processor::csv::{Column, Delimiter};
use processor::nhs::Rules;
use processor::scan::{Format, ScanOptions};
use processor::IoMode;
use std::path::PathBuf;
use std::time::Duration;

use crate::settings::MeshSettings;

/// Input options shared by every command that reads extracts.
#[derive(Debug, Args)]
pub(crate) struct InputArgs {
    /// Extract files to read; `-` reads standard input. Any size: files are memory-mapped and
    /// scanned in parallel in constant memory.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,

    /// The input is CSV; take the NHS number from this column (a header name, matched
    /// ignoring case, spaces and underscores, or a 1-based position). Records follow RFC 4180:
    /// quoted fields may hold delimiters, doubled quotes and line breaks, and a record may
    /// span lines (up to 16 MiB a record). Records end at CRLF, LF or CR. Without --column,
    /// each line holds one number, optionally followed by a comma (the POS `.dat` form; lines
    /// up to 64 KiB).
    #[arg(long, value_name = "NAME|N")]
    pub column: Option<Column>,

    /// The CSV has no header row (bcp, sqlcmd exports): every record is data, and --column
    /// must be a position.
    #[arg(long, requires = "column")]
    pub no_header: bool,

    /// Skip this many lines at the start (title rows, report banners) before the header row.
    /// Skipped lines are not records and filter does not copy them.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub skip_lines: u64,

    /// CSV field separator: `,` `tab` `;` or `|`. Default: tab for .tsv and .tab files,
    /// else comma.
    #[arg(long, value_name = "D", requires = "column")]
    pub delimiter: Option<Delimiter>,

    /// Accept only ten bare digits: no surrounding whitespace, no `943 476 5919` or
    /// `943-476-5919` forms (by default those are normalised and counted).
    #[arg(long)]
    pub strict: bool,

    /// Quarantine repdigits such as 0000000000 and 9999999999 (they pass Modulus 11 but are
    /// usually placeholders). By default they are kept and counted as `placeholder`.
    #[arg(long)]
    pub reject_placeholders: bool,

    #[command(flatten)]
    pub engine: EngineArgs,
}

/// How the engine reads: shared by every command that scans files.
#[derive(Debug, Args)]
pub(crate) struct EngineArgs {
    /// Worker threads (default: one per core).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub threads: usize,

    /// How to read inputs: auto (memory-map regular files), mmap, or read.
    #[arg(long, default_value = "auto", value_name = "MODE")]
    pub io: IoMode,
}

impl EngineArgs {
    /// Engine options for one-number-per-line files (POS requests and results).
    pub(crate) fn scan_options(&self) -> ScanOptions {
        ScanOptions {
            threads: self.threads,
            io: self.io,
            ..ScanOptions::default()
        }
    }
}

impl InputArgs {
    /// The engine options these arguments describe.
    pub(crate) fn scan_options(&self) -> ScanOptions {
        ScanOptions {
            format: match &self.column {
                Some(c) => Format::Csv(c.clone()),
                None => Format::Lines,
            },
            rules: Rules {
                strict: self.strict,
                reject_placeholders: self.reject_placeholders,
            },
            header: !self.no_header,
            skip_lines: self.skip_lines,
            delimiter: self.delimiter,
            ..self.engine.scan_options()
        }
    }
}

/// Parses a size such as `20GB`, `100MB`, `75MiB` or `1000`.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("not a size: {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown unit in {s:?} (use B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size too large: {s:?}"))
}

/// How to reach MESH. Secrets come only from the environment or the configuration file, never
/// from the command line (where other users could read them).
#[derive(Debug, Clone, Args)]
pub(crate) struct MeshArgs {
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
    pub(crate) fn settings(&self) -> anyhow::Result<MeshSettings> {
        let explicit = MeshSettings {
            env: self.mesh.clone(),
            mailbox: self.mailbox.clone(),
            ..MeshSettings::default()
        };
        Ok(MeshSettings::resolve(explicit, self.config.as_deref())?)
    }

    /// A client for these settings.
    pub(crate) fn client(&self) -> anyhow::Result<MeshClient> {
        client_for(&self.settings()?)
    }
}

/// A client for `settings`.
pub(crate) fn client_for(settings: &MeshSettings) -> anyhow::Result<MeshClient> {
    let config = settings.client_config()?;
    MeshClient::new(config).context("cannot set up the MESH client")
}

/// Folder mode: an installed NHS England MESH client (the Java program that syncs a mailbox
/// with IN/OUT/SENT/FAILED folders) instead of the MESH API. Shared by send, collect and run.
#[derive(Debug, Clone, Args)]
pub(crate) struct FolderArgs {
    /// Work through the MESH client's folders under DIR (the mailbox's InterfaceRoot, holding
    /// IN, OUT, SENT and FAILED in any case) instead of calling the MESH API.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["mesh", "meshclient_cfg"])]
    pub mesh_folder: Option<PathBuf>,

    /// Work through the MESH client's folders, taking the folder root of --mailbox from this
    /// meshclient.cfg (ClientIdentity -> InterfaceRoot).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "mesh",
        requires = "mailbox"
    )]
    pub meshclient_cfg: Option<PathBuf>,
}

impl FolderArgs {
    /// The MESH client's folders, if folder mode was asked for.
    pub(crate) fn folders(&self, mailbox: Option<&str>) -> anyhow::Result<Option<Folders>> {
        let root = match (&self.mesh_folder, &self.meshclient_cfg) {
            (Some(dir), _) => dir.clone(),
            (None, Some(cfg)) => {
                let mailbox = mailbox.context("--meshclient-cfg needs --mailbox")?;
                pos_client::folder::cfg::interface_root(cfg, mailbox)?
            }
            (None, None) => return Ok(None),
        };
        Ok(Some(Folders::open(&root)?))
    }
}

/// Polling options shared by `collect` and `run`.
#[derive(Debug, Clone, Args)]
pub(crate) struct PollArgs {
    /// Seconds between two inbox polls (the real MESH asks for no more than one every few
    /// minutes).
    #[arg(long, default_value_t = 300.0, value_name = "SECONDS")]
    pub interval: f64,

    /// Give up waiting after this many seconds (the POS usually answers within an hour).
    #[arg(long, default_value_t = 7200.0, value_name = "SECONDS")]
    pub timeout: f64,
}

impl PollArgs {
    /// The collect options these arguments describe.
    pub(crate) fn options(&self) -> anyhow::Result<CollectOptions> {
        let secs = |s: f64, what: &str| {
            Duration::try_from_secs_f64(s).with_context(|| format!("bad --{what} {s}"))
        };
        Ok(CollectOptions {
            interval: secs(self.interval, "interval")?,
            timeout: secs(self.timeout, "timeout")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("20GB"), Ok(20_000_000_000));
        assert_eq!(parse_size("100 MB"), Ok(100_000_000));
        assert_eq!(parse_size("75MiB"), Ok(75 << 20));
        assert_eq!(parse_size("13"), Ok(13));
        assert!(parse_size("x").is_err());
        assert!(parse_size("5TB").is_err());
    }
}
