//! Folder-mode [`collect`]: the replies the MESH client put in `IN`, taken when they are ours.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mesh_client::{MessageMeta, MessageType};
use processor::ctl::{read_client_control, ClientControl};
use processor::files::{create_private_dir, sync_dir, write_atomic};
use serde::Serialize;

use super::send::is_ctl;
use super::{copy_synced, find_file, Folders};
use crate::collect::{
    journal_reply, keep_data, match_submission, pending, store_report, unrecognised, work_dir_of,
    CollectOptions, CollectReport, UnrecognisedMessage, REPLY_DIR,
};
use crate::error::Error;
use crate::journal::Journal;
use crate::reply::safe_name;

/// The result of [`collect`]: the API path's report (a message id here is the `IN` file's
/// base name; "acknowledged again" means removed from `IN` after an earlier run stored it),
/// plus the alerts.
#[derive(Debug, Clone, Serialize)]
pub struct FolderCollectReport {
    /// What was stored, left and still pending.
    #[serde(flatten)]
    pub report: CollectReport,
    /// Delay reports (TRANSFER 05), any `Status` ERROR, unreadable control files: one line
    /// each, naming the file.
    pub alerts: Vec<String>,
}

/// Scans `folders.inbox` for `.ctl` files until every journaled submission has its final reply
/// or `opts.timeout` has passed (at least one scan). Each `.ctl` (with its `.dat`, if any: a
/// report has none) that answers a journaled submission is stored in `WORK/replies` like an
/// API reply (the raw `.ctl` kept beside it), journaled, and only then removed from `IN`.
/// Anything else in `IN` is left untouched and listed as unrecognised.
pub async fn collect(
    folders: &Folders,
    journal: &mut Journal,
    opts: &CollectOptions,
) -> Result<FolderCollectReport, Error> {
    let started = Instant::now();
    let work_dir = work_dir_of(journal);
    let reply_dir = work_dir.join(REPLY_DIR);
    create_private_dir(&reply_dir)?;
    let mut out = FolderCollectReport {
        report: CollectReport {
            replies: Vec::new(),
            acknowledged_again: Vec::new(),
            unrecognised: Vec::new(),
            pending: Vec::new(),
            complete: false,
            polls: 0,
            elapsed_seconds: 0.0,
            waited_seconds: 0.0,
        },
        alerts: Vec::new(),
    };
    // files judged not ours this run: looked at once only
    let mut left: HashSet<PathBuf> = HashSet::new();
    loop {
        out.report.polls += 1;
        let mut ctls: Vec<PathBuf> = std::fs::read_dir(&folders.inbox)
            .map_err(|e| processor::Error::read(&folders.inbox, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_ctl(p) && p.is_file())
            .collect();
        ctls.sort();
        for ctl in ctls {
            if left.contains(&ctl) {
                continue;
            }
            let id = ctl
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let dat = find_file(&folders.inbox, &format!("{id}.dat"));
            if journal.reply(&id).is_some() {
                // stored and journaled before a crash, not yet removed from IN
                remove_from_in(folders, &ctl, dat.as_deref())?;
                out.report.acknowledged_again.push(id);
                continue;
            }
            let control = match read_client_control(&ctl) {
                Ok((c, raw)) => (c, raw),
                Err(e) => {
                    left.insert(ctl.clone());
                    out.alerts
                        .push(format!("{}: unreadable, left in IN: {e}", ctl.display()));
                    out.report.unrecognised.push(UnrecognisedMessage {
                        message_id: id,
                        message_type: "unreadable",
                        sender: None,
                        workflow_id: None,
                        local_id: None,
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            let (c, raw) = control;
            let meta = meta_of(&id, &c, dat.is_some());
            if let Some(s) = &c.status {
                if s.is_delay() || s.is_error() {
                    let what = if s.is_delay() {
                        "delay report"
                    } else {
                        "error"
                    };
                    out.alerts.push(format!(
                        "{}: {what} about LocalId {}: {}",
                        ctl.display(),
                        c.local_id.as_deref().unwrap_or("(none)"),
                        s.describe()
                    ));
                }
            }
            let Some(local_id) = match_submission(journal, &meta) else {
                left.insert(ctl.clone());
                out.report
                    .unrecognised
                    .push(unrecognised(&meta, "not a reply to a journaled submission"));
                continue;
            };
            let stored = match &dat {
                None => store_report(&reply_dir, &meta, &local_id)?,
                Some(dat) => {
                    let temp = reply_dir.join(format!(".{}.download", safe_name(&id)));
                    let _ = std::fs::remove_file(&temp);
                    copy_synced(dat, &temp)?;
                    match keep_data(&temp, &reply_dir, &meta, &local_id, None).await? {
                        Ok(stored) => stored,
                        Err(reason) => {
                            left.insert(ctl.clone());
                            out.report.unrecognised.push(unrecognised(&meta, reason));
                            continue;
                        }
                    }
                }
            };
            // the raw control file, for audit
            write_atomic(
                &reply_dir,
                &format!("{local_id}.{}.ctl", safe_name(&id)),
                &raw,
            )?;
            let collected = journal_reply(journal, &work_dir, &meta, &local_id, stored)?;
            remove_from_in(folders, &ctl, dat.as_deref())?;
            tracing::info!(message_id = %id, local_id = %local_id, kind = ?collected.reply.reply, "reply stored and taken from IN");
            crate::collect::push_reply(&mut out.report.replies, collected);
        }
        out.report.pending = pending(journal);
        if out.report.pending.is_empty() {
            out.report.complete = true;
            break;
        }
        if started.elapsed() + opts.interval > opts.timeout {
            break;
        }
        tokio::time::sleep(opts.interval).await;
        out.report.waited_seconds += opts.interval.as_secs_f64();
    }
    out.report.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

/// The API path's view of a message in IN: a `.ctl` with no `.dat`, or one that says so, is a
/// report, about the message its `DTSId` names.
fn meta_of(id: &str, c: &ClientControl, has_dat: bool) -> MessageMeta {
    let mut m = MessageMeta::default();
    let report = !has_dat || c.message_type.as_deref() == Some("REPORT");
    m.message_id = id.to_owned();
    m.message_type = if report {
        MessageType::Report
    } else {
        MessageType::Data
    };
    m.sender = c.from_dts.clone();
    m.recipient = c.to_dts.clone();
    m.workflow_id = c.workflow_id.clone();
    m.local_id = c.local_id.clone();
    m.subject = c.subject.clone();
    if report {
        m.linked_message_id = c.dts_id.clone();
        if let Some(s) = &c.status {
            m.status_code = Some(s.code.clone());
            m.status_event = Some(s.event.clone());
            m.status_description = Some(s.description.clone());
            m.status_success = match s.status.as_str() {
                "SUCCESS" => Some(true),
                "ERROR" => Some(false),
                _ => None,
            };
        }
    }
    m
}

fn remove_from_in(folders: &Folders, ctl: &Path, dat: Option<&Path>) -> Result<(), Error> {
    for p in dat.into_iter().chain([ctl]) {
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(processor::Error::write(p, e).into()),
        }
    }
    sync_dir(&folders.inbox)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Entry, ReplyKind, Submission};

    fn report_ctl(local_id: &str, event: &str, status: &str, code: &str, what: &str) -> String {
        processor::ctl::render_fields(
            &[
                ("MessageType", "Report"),
                ("From_DTS", "X26ABC1"),
                ("To_DTS", "X26OT154"),
                ("LocalId", local_id),
                ("DTSId", "SENT_1"),
            ],
            Some(&processor::ctl::StatusRecord::now(
                event, status, code, what,
            )),
        )
    }

    #[tokio::test]
    async fn delay_and_error_reports_are_alerts_and_an_error_report_is_final() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("box");
        for name in ["in", "out", "sent", "failed"] {
            std::fs::create_dir_all(root.join(name)).unwrap();
        }
        let folders = Folders::open(&root).unwrap();
        let mut journal = Journal::open(&dir.path().join("work")).unwrap();
        journal
            .append(Entry::Submitted(Submission {
                local_id: "lid".into(),
                message_id: "SENT_1".into(),
                file: "a.dat".into(),
                sha256: "00".into(),
                records: 1,
                bytes: 13,
                subject: "s".into(),
                to: "X26OT154".into(),
                workflow_id: "SPINE_NTT_UPHOLDING".into(),
                time: crate::journal::now(),
                adopted: false,
            }))
            .unwrap();
        let inbox = &folders.inbox;
        std::fs::write(
            inbox.join("R1.ctl"),
            report_ctl("lid", "TRANSFER", "SUCCESS", "5", "will try again"),
        )
        .unwrap();
        std::fs::write(
            inbox.join("R2.ctl"),
            report_ctl("lid", "SEND", "ERROR", "14", "not collected"),
        )
        .unwrap();
        // an error about somebody else's file: alerted, left alone
        std::fs::write(
            inbox.join("R3.ctl"),
            report_ctl("other", "SEND", "ERROR", "EPL-152", "Invalid NHS Number")
                .replace("SENT_1", "SENT_9"),
        )
        .unwrap();
        let opts = CollectOptions {
            interval: std::time::Duration::ZERO,
            timeout: std::time::Duration::ZERO,
        };
        let got = collect(&folders, &mut journal, &opts).await.unwrap();
        assert_eq!(got.alerts.len(), 3, "{:?}", got.alerts);
        assert!(
            got.alerts[0].contains("delay report") && got.alerts[0].contains("TRANSFER SUCCESS 05")
        );
        assert!(got.alerts[2].contains("EPL-152") && got.alerts[2].contains("invalid NHS number"));
        let r = &got.report;
        assert_eq!(r.replies.len(), 2);
        assert!(r.replies.iter().all(|c| c.reply.reply == ReplyKind::Report));
        assert!(!r.replies[0].reply.is_final() && r.replies[1].reply.is_final());
        assert_eq!(r.replies[1].reply.status_code.as_deref(), Some("14"));
        assert!(r.complete, "the error report settles the submission");
        let e =
            crate::final_results(&journal, &work_dir_of(&journal), &["a.dat".into()]).unwrap_err();
        assert!(matches!(e, Error::BadAnswer(_)), "{e}");
        let left: Vec<_> = std::fs::read_dir(inbox).unwrap().collect();
        assert_eq!(left.len(), 1, "only the stranger's report is left");
        assert_eq!(r.unrecognised.len(), 1);
    }
}
