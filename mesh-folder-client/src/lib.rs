//! A **test double** of NHS England's Java MESH client (`mesh-client-folders.md`), built on the
//! `mesh-client` crate against any MESH API (mock-mesh, mesh-sandbox), so that folder mode
//! (`pos_client::folder`, `ndop --mesh-folder`) runs offline and in CI. It is not a replacement
//! for the real client: no keystore, no retry schedule, no upgrades, no reports the guide does
//! not describe.
//!
//! What it reproduces, each poll ([`StandIn::poll_once`]):
//! - folder names matched ignoring case (`IN` or `in`);
//! - **OUT**: each `name.ctl` with its `name.dat`, both at least [`StandIn::min_age`] old (the
//!   real client ignores files younger than about a second; dot-names are never taken), is sent
//!   honouring the `.ctl`'s `To_DTS`, `WorkflowId`, `Subject` and `LocalId` (chunked by the
//!   client's chunk size when `AllowChunking` is not `N`, gzip'd when `Compress` is `Y`), then
//!   moved to **SENT** with the `.ctl` rewritten (`DTSId`, `StatusRecord` TRANSFER SUCCESS 00);
//!   refused by MESH, the pair goes to **FAILED** (its `.ctl` carrying the SEND ERROR status) and
//!   an error `.ctl` is written to **IN**; a malformed `.ctl` gets TRANSFER ERROR 06, a `.ctl`
//!   without its `.dat` COLLECT ERROR 02; MESH unreachable leaves the pair in OUT and writes a
//!   delay report (TRANSFER SUCCESS 05) to IN;
//! - **inbox**: each message is downloaded to `IN/{message id}.dat` (under a dot-name first)
//!   with `IN/{message id}.ctl` beside it (`StatusRecord` TRANSFER SUCCESS 00); a MESH report
//!   becomes a `.ctl` alone; then the message is acknowledged.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use mesh_client::{MeshClient, MessageType, SendOptions};
use pos_client::folder::{find_file, Folders};
use processor::ctl::{parse_client_control, render_fields, rewrite, StatusRecord};
use processor::files::{sync_dir, write_atomic};

/// One mailbox's folders synced with MESH.
#[derive(Debug)]
pub struct StandIn {
    /// The mailbox's folder root (`InterfaceRoot`).
    pub root: PathBuf,
    /// A client for the mailbox.
    pub client: MeshClient,
    /// Pause between polls.
    pub poll: Duration,
    /// Files in OUT younger than this are left for the next poll (the real client: ~1 s).
    pub min_age: Duration,
}

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// Pairs moved to SENT.
    pub sent: usize,
    /// Pairs moved to FAILED.
    pub failed: usize,
    /// Messages written to IN and acknowledged.
    pub received: usize,
}

impl StandIn {
    /// Polls until `stop` completes; a poll under way finishes first (a clean stop).
    pub async fn run(&self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(stop);
        loop {
            match self.poll_once().await {
                Ok(c) if c != Cycle::default() => tracing::info!(?c, "poll"),
                Ok(_) => {}
                Err(e) => tracing::warn!("poll failed: {e:#}"),
            }
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// One poll: OUT first, then the inbox.
    pub async fn poll_once(&self) -> anyhow::Result<Cycle> {
        let folders = Folders::open(&self.root)?;
        let mut cycle = Cycle::default();
        self.send_out(&folders, &mut cycle).await?;
        self.receive(&folders, &mut cycle).await?;
        Ok(cycle)
    }

    async fn send_out(&self, f: &Folders, cycle: &mut Cycle) -> anyhow::Result<()> {
        let mut ctls: Vec<PathBuf> = std::fs::read_dir(&f.outbox)
            .with_context(|| format!("reading {}", f.outbox.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| has_ext(p, "ctl"))
            .collect();
        ctls.sort();
        for ctl in ctls {
            if !self.old_enough(&ctl) {
                continue;
            }
            let base = stem(&ctl);
            let raw = std::fs::read(&ctl).with_context(|| format!("reading {}", ctl.display()))?;
            let Some(dat) = find_file(&f.outbox, &format!("{base}.dat")) else {
                let s = StatusRecord::now(
                    "COLLECT",
                    "ERROR",
                    "02",
                    "Data file is missing or inaccessible.",
                );
                self.fail(f, &base, &ctl, None, &raw, &s)?;
                cycle.failed += 1;
                continue;
            };
            if !self.old_enough(&dat) {
                continue;
            }
            let c = match parse_client_control(&raw) {
                Ok(c) if c.to_dts.is_some() && c.workflow_id.is_some() => c,
                _ => {
                    let s = StatusRecord::now("TRANSFER", "ERROR", "06", "Malformed control file");
                    self.fail(f, &base, &ctl, Some(&dat), &raw, &s)?;
                    cycle.failed += 1;
                    continue;
                }
            };
            let flag = |name: &str| {
                processor::ctl::elements(&raw, "DTSControl")
                    .ok()
                    .and_then(|fs| {
                        processor::ctl::field(&fs, name).map(|v| v.eq_ignore_ascii_case("Y"))
                    })
            };
            let opts = SendOptions {
                to: c.to_dts.clone().unwrap_or_default(),
                workflow_id: c.workflow_id.clone().unwrap_or_default(),
                subject: c.subject.clone(),
                local_id: c.local_id.clone(),
                file_name: Some(format!("{base}.dat")),
                compress: flag("Compress").unwrap_or(false),
                chunk_size: match flag("AllowChunking") {
                    Some(false) => Some(100_000_000),
                    _ => None,
                },
                ..SendOptions::default()
            };
            match self.client.send_file(&dat, &opts, &|_| {}).await {
                Ok(id) => {
                    let s = StatusRecord::now(
                        "TRANSFER",
                        "SUCCESS",
                        "00",
                        "Data Transfer success confirmation.",
                    );
                    let text = rewrite(&raw, &id, &s)?;
                    let sent_dat = f.sent.join(format!("{base}.dat"));
                    std::fs::rename(&dat, &sent_dat)
                        .with_context(|| format!("moving {} to SENT", dat.display()))?;
                    write_atomic(&f.sent, &format!("{base}.ctl"), text.as_bytes())?;
                    sync_dir(&f.sent)?;
                    std::fs::remove_file(&ctl)?;
                    sync_dir(&f.outbox)?;
                    tracing::info!(%base, message_id = %id, "sent");
                    cycle.sent += 1;
                }
                Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                    let code = e.mesh_code().unwrap_or("").to_owned();
                    let s = StatusRecord::now("SEND", "ERROR", &code, &e.to_string());
                    self.fail(f, &base, &ctl, Some(&dat), &raw, &s)?;
                    cycle.failed += 1;
                }
                Err(e) => {
                    // left in OUT for the next poll; the client reports the delay
                    let s = StatusRecord::now(
                        "TRANSFER",
                        "SUCCESS",
                        "05",
                        &format!("will try again: {e}"),
                    );
                    self.report_to_in(f, &base, &c, &s)?;
                }
            }
        }
        Ok(())
    }

    /// Moves a pair to FAILED (its `.ctl` with `status`) and writes the error `.ctl` to IN.
    fn fail(
        &self,
        f: &Folders,
        base: &str,
        ctl: &Path,
        dat: Option<&Path>,
        raw: &[u8],
        status: &StatusRecord,
    ) -> anyhow::Result<()> {
        tracing::warn!(%base, status = %status.describe(), "moved to FAILED");
        let c = parse_client_control(raw).unwrap_or_default();
        self.report_to_in(f, base, &c, status)?;
        let text =
            rewrite(raw, "", status).unwrap_or_else(|_| String::from_utf8_lossy(raw).into_owned());
        write_atomic(&f.failed, &format!("{base}.ctl"), text.as_bytes())?;
        if let Some(dat) = dat {
            std::fs::rename(dat, f.failed.join(format!("{base}.dat")))?;
        }
        sync_dir(&f.failed)?;
        std::fs::remove_file(ctl)?;
        sync_dir(&f.outbox)?;
        Ok(())
    }

    /// A report `.ctl` (no `.dat`) about our own message, into IN.
    fn report_to_in(
        &self,
        f: &Folders,
        base: &str,
        c: &processor::ctl::ClientControl,
        status: &StatusRecord,
    ) -> anyhow::Result<()> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let text = render_fields(
            &[
                ("Version", "1.0"),
                ("AddressType", "DTS"),
                ("MessageType", "Report"),
                ("From_DTS", &opt(&c.from_dts)),
                ("To_DTS", &opt(&c.to_dts)),
                ("Subject", &opt(&c.subject)),
                ("LocalId", &opt(&c.local_id)),
                ("DTSId", ""),
                ("WorkflowId", &opt(&c.workflow_id)),
            ],
            Some(status),
        );
        let name = format!(
            "{}_{}_{}.ctl",
            chrono::Utc::now().format("%Y%m%d%H%M%S%f"),
            status.code,
            base
        );
        write_atomic(&f.inbox, &name, text.as_bytes())?;
        sync_dir(&f.inbox)?;
        Ok(())
    }

    async fn receive(&self, f: &Folders, cycle: &mut Cycle) -> anyhow::Result<()> {
        for id in self.client.list_inbox(None).await? {
            let safe: String = id
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let ctl_name = format!("{safe}.ctl");
            if f.inbox.join(&ctl_name).exists() {
                // written before a crash, not yet acknowledged
                self.client.acknowledge(&id).await?;
                continue;
            }
            let meta = self.client.head_message(&id).await?;
            let report = meta.message_type == MessageType::Report;
            if !report {
                let part = f.inbox.join(format!(".{safe}.dat.part"));
                let _ = std::fs::remove_file(&part);
                self.client.download_to(&id, &part).await?;
                std::fs::rename(&part, f.inbox.join(format!("{safe}.dat")))?;
            }
            let status = if report {
                StatusRecord::now(
                    meta.status_event.as_deref().unwrap_or("SEND"),
                    if meta.status_success == Some(false) {
                        "ERROR"
                    } else {
                        "SUCCESS"
                    },
                    meta.status_code.as_deref().unwrap_or(""),
                    meta.status_description.as_deref().unwrap_or(""),
                )
            } else {
                StatusRecord::now(
                    "TRANSFER",
                    "SUCCESS",
                    "00",
                    "Transferred to recipient mailbox",
                )
            };
            let opt = |v: &Option<String>| v.clone().unwrap_or_default();
            let dts_id = if report {
                meta.linked_message_id.clone().unwrap_or_else(|| id.clone())
            } else {
                id.clone()
            };
            let text = render_fields(
                &[
                    ("Version", "1.0"),
                    ("AddressType", "DTS"),
                    ("MessageType", if report { "Report" } else { "Data" }),
                    ("From_DTS", &opt(&meta.sender)),
                    ("To_DTS", &opt(&meta.recipient)),
                    ("Subject", &opt(&meta.subject)),
                    ("LocalId", &opt(&meta.local_id)),
                    ("DTSId", &dts_id),
                    ("WorkflowId", &opt(&meta.workflow_id)),
                ],
                Some(&status),
            );
            write_atomic(&f.inbox, &ctl_name, text.as_bytes())?;
            sync_dir(&f.inbox)?;
            self.client.acknowledge(&id).await?;
            cycle.received += 1;
        }
        Ok(())
    }

    fn old_enough(&self, p: &Path) -> bool {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age >= self.min_age)
    }
}

fn has_ext(p: &Path, ext: &str) -> bool {
    let hidden = p
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'));
    !hidden
        && p.is_file()
        && p.extension()
            .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case(ext))
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn stop_signal() {
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
