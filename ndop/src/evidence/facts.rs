//! The facts of one run, gathered from its work directory: what `ndop run` wrote there
//! (`run-settings.json`, `journal.jsonl`, `prepared/summary.json`, `reconciled/summary.json`,
//! `run.json`, the filter's rejects report) and the extract and cleared extract as they are now
//! (their SHA-256). Read only: nothing in the work directory is changed, and the journal is not
//! locked. The files that hold NHS numbers (the `.dat` files, the replies, `invalid.csv`,
//! `opted-out.txt`, the extracts' content) are never read, except to hash the two extracts:
//! the facts hold counts, names, ids, hashes and times only.
//!
//! Fail closed: a summary that exists but does not parse is an error naming the file, not a
//! report with figures missing. A fact that a work directory lacks (older versions wrote
//! fewer) is absent, and said to be.

use crate::pipeline::{read_json, RunSettings, RUN_JSON, RUN_SETTINGS_JSON};
use anyhow::bail;
use pos_client::journal::{read_entries, Entry, Extract, Reply, ReplyKind, Submission};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the JSON document calls itself: bumped when a field changes meaning or goes.
pub(crate) const SCHEMA: &str = "ndop-report/1";
/// Rejected records listed in the report (the rejects report has them all).
const REJECTS_LISTED: usize = 20;

/// Everything the report says, as one document (`ndop report --json`); the HTML page is
/// rendered from it and from nothing else.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Facts {
    /// [`SCHEMA`].
    pub schema: String,
    /// When these facts were gathered (RFC 3339, UTC).
    pub generated: String,
    /// The ndop that gathered them.
    pub ndop_version: String,
    /// The work directory.
    pub work: String,
    /// How far the run got.
    pub state: State,
    /// The outcome in one sentence.
    pub verdict: String,
    /// The extract that was checked.
    pub extract: ExtractFacts,
    /// The cleared extract (the extract without opted-out patients), once written.
    pub output: Option<OutputFacts>,
    /// Where the check went.
    pub mesh: MeshFacts,
    /// When each step happened.
    pub dates: Dates,
    /// Distinct patients checked and what the POS said, once reconciled.
    pub patients: Option<Patients>,
    /// Where every record of the extract went.
    pub records: Option<Records>,
    /// Each file sent to the POS and the replies to it.
    pub files: Vec<FileFacts>,
    /// How long each stage of the last run took.
    pub stages: Vec<Stage>,
    /// The records the filter left out as invalid or unparseable.
    pub rejects: Option<Rejects>,
    /// Anything unusual (alerts) and what a reader should know (notes).
    pub findings: Vec<Finding>,
    /// The results cache the extract was filtered with (`ndop filter --cache`), if it was.
    #[serde(default)]
    pub cache: Option<CacheFacts>,
}

/// The results cache a filter applied: as of when, how old the results it used were.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct CacheFacts {
    /// The disclosure time the cache was applied as of (RFC 3339, UTC).
    pub as_of: String,
    /// The maximum age of a result (`7d`).
    pub max_age: String,
    /// The POS environment of the results (`int`, `live`).
    #[serde(default)]
    pub environment: Option<String>,
    /// The cache's ids of the batches (POS checks) in the window.
    #[serde(default)]
    pub batch_ids: Vec<i64>,
    /// When the oldest result the filter could rely on was checked (the oldest batch that
    /// still decides a number in the window).
    #[serde(default)]
    pub oldest_checked_at: Option<String>,
    /// How long before the as-of time that was (`3d 4h`).
    #[serde(default)]
    pub oldest_age: Option<String>,
    /// Whether the 21-day ceiling on the maximum age was overridden (`--allow-stale-cache`).
    #[serde(default)]
    pub allow_stale_cache: bool,
    /// The overrides, in words.
    #[serde(default)]
    pub overrides: Vec<String>,
    /// Records dropped because no result in the window covered their number.
    #[serde(default)]
    pub not_checked: u64,
}

/// How far a run got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum State {
    /// Prepared, nothing sent yet.
    NotSent,
    /// Sent; some files still wait for their final reply.
    Waiting,
    /// Every file answered, but the run stopped before writing the cleared extract.
    Stopped,
    /// The cleared extract is written.
    Complete,
}

/// The extract that was checked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ExtractFacts {
    /// Its path, as given to `ndop run`.
    pub path: Option<String>,
    /// Size in bytes, as recorded when it was prepared.
    pub bytes: Option<u64>,
    /// Modification time, as recorded when it was prepared.
    pub modified: Option<String>,
    /// SHA-256 of the file, computed when the report was made.
    pub sha256: Option<String>,
    /// How [`sha256`](Self::sha256) was obtained, or why it is absent.
    pub sha256_note: String,
    /// Data records read (header rows and skipped lines excluded).
    pub records: Option<u64>,
    /// `csv` or `lines`.
    pub format: Option<String>,
    /// The NHS number's column.
    pub column: Option<String>,
    /// The CSV delimiter.
    pub delimiter: Option<String>,
    /// Header rows.
    pub header_rows: Option<u64>,
    /// Lines skipped before the header.
    pub skipped_lines: Option<u64>,
    /// Only ten bare digits accepted.
    pub strict: Option<bool>,
    /// Repdigits quarantined.
    pub reject_placeholders: Option<bool>,
}

/// The cleared extract.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OutputFacts {
    /// Its path.
    pub path: String,
    /// Records in it (header rows excluded).
    pub records: u64,
    /// Size in bytes now.
    pub bytes: Option<u64>,
    /// SHA-256 now.
    pub sha256: Option<String>,
}

/// Where the check went.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct MeshFacts {
    /// `INT`, `LIVE`, or the URL of another MESH (a mock or sandbox).
    pub environment: Option<String>,
    /// Our mailbox.
    pub mailbox: Option<String>,
    /// The POS mailbox the files went to.
    pub pos_mailbox: Option<String>,
    /// The MESH workflow.
    pub workflow_id: Option<String>,
}

/// When each step happened (RFC 3339, UTC).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Dates {
    /// The extract was recorded and prepare began.
    pub prepared: Option<String>,
    /// The last file was accepted by MESH.
    pub sent: Option<String>,
    /// The last final POS reply was collected.
    pub answered: Option<String>,
    /// The cleared extract was written.
    pub filtered: Option<String>,
}

/// Distinct patients (valid NHS numbers) and what the POS said.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Patients {
    /// Distinct numbers sent.
    pub checked: u64,
    /// Returned by the POS: may be used.
    pub returned: u64,
    /// Sent but not returned: opted out.
    pub opted_out: u64,
    /// Returned but never sent (must be 0).
    pub unexpected: u64,
}

/// Where every record went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Records {
    /// Data records read.
    pub total: u64,
    /// One bucket per outcome; they add up to `total`.
    pub buckets: Vec<Bucket>,
    /// Valid records whose number appeared earlier in the extract (checked once, kept or
    /// removed with it; not a bucket of their own).
    pub duplicates: Option<u64>,
}

/// One outcome for records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Bucket {
    /// A stable key (`kept`, `opted_out`, `invalid:check_digit_mismatch`, …).
    pub key: String,
    /// What it is, in words.
    pub label: String,
    /// Records.
    pub records: u64,
    /// Whether these records are in the cleared extract.
    pub kept: bool,
}

/// One file sent to the POS.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FileFacts {
    /// The `.dat` file name.
    pub name: String,
    /// NHS numbers in it.
    pub records: u64,
    /// Size.
    pub bytes: u64,
    /// SHA-256.
    pub sha256: String,
    /// LocalId from its `.ctl`.
    pub local_id: String,
    /// Subject.
    pub subject: String,
    /// The MESH message id.
    pub message_id: String,
    /// Recipient mailbox.
    pub to: String,
    /// When MESH accepted it.
    pub sent: String,
    /// What became of it, in words.
    pub status: String,
    /// Whether it has its final reply and that reply is the cleaned file.
    pub answered: bool,
    /// The replies collected for it, in order.
    pub replies: Vec<ReplyFacts>,
}

/// One reply collected.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReplyFacts {
    /// What it is, in words.
    pub kind: String,
    /// Its MESH message id.
    pub message_id: String,
    /// Where it is stored, relative to the work directory.
    pub file: String,
    /// Numbers in a cleaned file.
    pub records: Option<u64>,
    /// Size.
    pub bytes: u64,
    /// SHA-256.
    pub sha256: String,
    /// When it was stored.
    pub stored: String,
    /// Whether it ends the wait for its file.
    pub is_final: bool,
}

/// One stage of the last run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stage {
    /// `prepare`, `send`, `collect`, `reconcile` or `filter`.
    pub name: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// When it ended, where recorded.
    pub ended: Option<String>,
}

/// The filter's rejects report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Rejects {
    /// Its path.
    pub path: String,
    /// Records listed in it.
    pub records: u64,
    /// By reason.
    pub by_reason: BTreeMap<String, u64>,
    /// The first few: record number, starting line, reason.
    pub first: Vec<RejectRow>,
}

/// One rejected record: where it is and why, never its content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RejectRow {
    /// 1-based data record.
    pub record: u64,
    /// 1-based line where it starts.
    pub line: u64,
    /// Why.
    pub reason: String,
}

/// Something a reader should know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Finding {
    /// How much it matters.
    pub severity: Severity,
    /// What, in words.
    pub text: String,
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Severity {
    /// Unusual: the check is incomplete or a figure does not add up (shown in red).
    Alert,
    /// Worth knowing, not wrong.
    Note,
}

/// The part of `run.json` the report reads.
#[derive(Debug, Deserialize)]
struct RunJson {
    #[serde(default)]
    stage_seconds: Vec<(String, f64)>,
    #[serde(default)]
    stage_ended: Vec<(String, String)>,
    collect: RunCollect,
    filter: RunFilter,
    /// The extract's hash taken during the run (absent from older run.json files).
    #[serde(default)]
    extract_hash: Option<crate::pipeline::FileHash>,
    /// The cleared extract's hash taken as it was written (likewise).
    #[serde(default)]
    output_hash: Option<crate::pipeline::FileHash>,
}

/// The part of a collect report the report reads.
#[derive(Debug, Deserialize)]
struct RunCollect {
    #[serde(default)]
    unrecognised: Vec<Unrecognised>,
}

/// A message collect left in the inbox.
#[derive(Debug, Deserialize)]
struct Unrecognised {
    message_id: String,
    reason: String,
}

/// The filter summary in `run.json`.
#[derive(Debug, Deserialize)]
struct RunFilter {
    rows: u64,
    kept: u64,
    opted_out: u64,
    #[serde(default)]
    not_checked: u64,
    invalid: u64,
    blank: u64,
    #[serde(default)]
    unparseable: u64,
    #[serde(default)]
    headers: u64,
    #[serde(default)]
    skipped_lines: u64,
    #[serde(default)]
    invalid_by_reason: BTreeMap<String, u64>,
    #[serde(default)]
    unparseable_by_reason: BTreeMap<String, u64>,
    input: String,
    output: String,
    #[serde(default)]
    rejects: Option<String>,
    #[serde(default)]
    delimiter: Option<String>,
}

/// The JSON summary `ndop filter --cache` prints (saved to a file), as the report reads it.
#[derive(Debug, Deserialize)]
struct FilterSummaryJson {
    #[serde(flatten)]
    filter: RunFilter,
    #[serde(default)]
    elapsed_seconds: f64,
    cache: Option<CacheJson>,
}

/// The `cache` object of a filter summary.
#[derive(Debug, Deserialize)]
struct CacheJson {
    as_of: String,
    max_age: String,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    batch_ids: Vec<i64>,
    #[serde(default)]
    oldest_checked_at: Option<String>,
    #[serde(default)]
    allow_stale_cache: bool,
    #[serde(default)]
    overrides: Vec<String>,
    #[serde(default)]
    input_sha256: Option<String>,
    #[serde(default)]
    output_sha256: Option<String>,
    #[serde(default)]
    filtered_at: Option<String>,
}

/// The part of `prepared/summary.json` the report reads.
#[derive(Debug, Deserialize)]
struct PreparedJson {
    lines: u64,
    unique: u64,
    duplicates: u64,
    invalid: u64,
    #[serde(default)]
    unparseable: u64,
    blank: u64,
    #[serde(default)]
    headers: u64,
    #[serde(default)]
    invalid_by_reason: BTreeMap<String, u64>,
    #[serde(default)]
    unparseable_by_reason: BTreeMap<String, u64>,
    #[serde(default)]
    to_dts: Option<String>,
}

/// The part of `reconciled/summary.json` the report reads.
#[derive(Debug, Deserialize)]
struct ReconciledJson {
    requested: u64,
    returned: u64,
    opted_out: u64,
    unexpected: u64,
}

/// What a work directory holds, parsed.
struct Sources {
    settings: Option<RunSettings>,
    entries: Vec<Entry>,
    prepared: Option<PreparedJson>,
    reconciled: Option<ReconciledJson>,
    run: Option<RunJson>,
    /// The results cache of a cache-based filter summary.
    cache: Option<CacheJson>,
}

/// Gathers the facts of the run in `work`. With `hash`, the extract and the cleared extract
/// are read once each for their SHA-256 (the extract only if it is still the file that was
/// prepared). Fails if `work` holds no run, or a summary in it does not parse.
pub(crate) fn gather(work: &Path, hash: bool) -> anyhow::Result<Facts> {
    if !work.is_dir() {
        bail!(processor::Error::Usage(format!(
            "{} is not a directory: give the --work directory of an ndop run",
            work.display()
        )));
    }
    let src = Sources {
        settings: read_json(&work.join(RUN_SETTINGS_JSON), "run settings")?,
        entries: read_entries(work)?,
        prepared: read_json(
            &work.join("prepared").join(processor::prepare::SUMMARY_JSON),
            "prepare summary",
        )?,
        reconciled: read_json(&work.join("reconciled/summary.json"), "reconcile summary")?,
        run: read_json(&work.join(RUN_JSON), "run summary")?,
        cache: None,
    };
    if src.entries.is_empty() && src.prepared.is_none() && src.run.is_none() {
        bail!(processor::Error::Usage(format!(
            "{} holds no ndop run (no journal.jsonl, prepared/summary.json or run.json): give \
             the --work directory of an ndop run",
            work.display()
        )));
    }
    build(&work.display().to_string(), &src, hash)
}

/// Gathers the facts of a filter that used the results cache from the JSON summary it printed
/// (`ndop filter --cache C ... > FILE`): the extract and cleared extract (hashed now, and
/// compared with the hashes the filter recorded), where every record went, and the cache's
/// as-of date, maximum age and the age of the oldest result used.
pub(crate) fn gather_filter(summary: &Path, hash: bool) -> anyhow::Result<Facts> {
    let parsed: Option<FilterSummaryJson> = read_json(summary, "filter summary")?;
    let Some(parsed) = parsed else {
        bail!(processor::Error::Usage(format!(
            "{}: no such file; save the summary `ndop filter --cache` prints (ndop filter ... \
                 --cache DIR --out cleared.csv > filter.json) and name that file",
            summary.display()
        )));
    };
    let Some(cache) = parsed.cache else {
        bail!(processor::Error::Usage(format!(
            "{} is the summary of a filter without --cache: report on the work directory of \
                 the ndop run instead (ndop report WORK)",
            summary.display()
        )));
    };
    let src = Sources {
        settings: None,
        entries: Vec::new(),
        prepared: None,
        reconciled: None,
        run: Some(RunJson {
            stage_seconds: vec![("filter".into(), parsed.elapsed_seconds)],
            stage_ended: cache
                .filtered_at
                .iter()
                .map(|t| ("filter".to_string(), t.clone()))
                .collect(),
            collect: RunCollect {
                unrecognised: Vec::new(),
            },
            filter: parsed.filter,
            extract_hash: None,
            output_hash: None,
        }),
        cache: Some(cache),
    };
    build(&summary.display().to_string(), &src, hash)
}

/// The facts of what `src` holds; `label` names where it was read from.
fn build(label: &str, src: &Sources, hash: bool) -> anyhow::Result<Facts> {
    let mut findings = Vec::new();
    let files = files(&src.entries, &mut findings);
    let state = if src.run.is_some() {
        State::Complete
    } else if files.is_empty() {
        State::NotSent
    } else if files.iter().any(|f| !f.answered && !final_reply(f)) {
        State::Waiting
    } else {
        State::Stopped
    };
    let extract = extract_facts(src, hash, &mut findings)?;
    let output = match &src.run {
        Some(run) => Some(output_facts(run, hash, &mut findings)?),
        None => None,
    };
    let rejects = match src.run.as_ref().and_then(|r| r.filter.rejects.as_deref()) {
        Some(path) => rejects(Path::new(path), &mut findings),
        None => None,
    };
    let records = records(src);
    let patients = src.reconciled.as_ref().map(|r| Patients {
        checked: r.requested,
        returned: r.returned,
        opted_out: r.opted_out,
        unexpected: r.unexpected,
    });
    let mesh = MeshFacts {
        environment: src
            .settings
            .as_ref()
            .map(|s| s.environment.clone())
            .or_else(|| {
                let env = src.cache.as_ref()?.environment.as_deref()?;
                Some(match env {
                    "int" | "live" => env.to_ascii_uppercase(),
                    other => other.to_string(),
                })
            })
            .filter(|e| !e.is_empty()),
        mailbox: src.settings.as_ref().and_then(|s| s.mailbox.clone()),
        pos_mailbox: submissions(&src.entries)
            .last()
            .map(|s| s.to.clone())
            .or_else(|| src.prepared.as_ref().and_then(|p| p.to_dts.clone())),
        workflow_id: submissions(&src.entries)
            .last()
            .map(|s| s.workflow_id.clone()),
    };
    let dates = Dates {
        prepared: src.entries.iter().rev().find_map(|e| match e {
            Entry::Extract(x) => Some(x.time.clone()),
            _ => None,
        }),
        sent: files.iter().map(|f| f.sent.clone()).max(),
        answered: if files.iter().all(|f| f.answered) {
            files
                .iter()
                .flat_map(|f| f.replies.iter().filter(|r| r.is_final))
                .map(|r| r.stored.clone())
                .max()
        } else {
            None
        },
        filtered: src.run.as_ref().and_then(|r| {
            r.stage_ended
                .iter()
                .find(|(name, _)| name == "filter")
                .map(|(_, t)| t.clone())
        }),
    };
    let stages = src
        .run
        .as_ref()
        .map(|r| {
            r.stage_seconds
                .iter()
                .map(|(name, seconds)| Stage {
                    name: name.clone(),
                    seconds: *seconds,
                    ended: r
                        .stage_ended
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, t)| t.clone()),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut facts = Facts {
        schema: SCHEMA.into(),
        generated: pos_client::journal::now(),
        ndop_version: env!("CARGO_PKG_VERSION").into(),
        work: label.to_string(),
        state,
        verdict: String::new(),
        extract,
        output,
        mesh,
        dates,
        patients,
        records,
        files,
        stages,
        rejects,
        findings,
        cache: src.cache.as_ref().map(|c| cache_facts(c, src)),
    };
    check(src, &mut facts);
    facts.verdict = verdict(&facts);
    super::scrub(facts)
}

/// The cache facts of a cache-based filter summary.
fn cache_facts(c: &CacheJson, src: &Sources) -> CacheFacts {
    let oldest_age = c.oldest_checked_at.as_deref().and_then(|t| {
        let age = pos_cache::parse_time(&c.as_of).ok()? - pos_cache::parse_time(t).ok()?;
        Some(pos_cache::format_age(age.max(0)))
    });
    CacheFacts {
        as_of: c.as_of.clone(),
        max_age: c.max_age.clone(),
        environment: c.environment.clone(),
        batch_ids: c.batch_ids.clone(),
        oldest_checked_at: c.oldest_checked_at.clone(),
        oldest_age,
        allow_stale_cache: c.allow_stale_cache,
        overrides: c.overrides.clone(),
        not_checked: src.run.as_ref().map_or(0, |r| r.filter.not_checked),
    }
}

/// Findings about the results cache a filter applied.
fn check_cache(c: &CacheFacts, src: &Sources, found: &mut Vec<Finding>) {
    if c.allow_stale_cache {
        alert(
            found,
            format!(
                "The 21-day ceiling on the age of cached results was overridden \
                 (--allow-stale-cache, maximum age {}): results that old may no longer reflect \
                 patients' opt-outs.",
                c.max_age
            ),
        );
    }
    match (&c.oldest_checked_at, &c.oldest_age) {
        (Some(at), Some(age)) => note(
            found,
            format!(
                "Results cache applied as of {}: the oldest result used was checked at {at}, \
                 {age} before, against a maximum age of {}.",
                c.as_of, c.max_age
            ),
        ),
        _ => alert(
            found,
            format!(
                "The results cache held no check within {} before {}: no record could be \
                 kept (refresh the cache).",
                c.max_age, c.as_of
            ),
        ),
    }
    if c.not_checked > 0 {
        alert(
            found,
            format!(
                "{} records had a valid NHS number with no result in the cache within {} \
                 before {}; they were left out of the cleared extract.",
                c.not_checked, c.max_age, c.as_of
            ),
        );
    }
    let Some(cache) = &src.cache else { return };
    let f = src.run.as_ref().map(|r| &r.filter);
    let ext = f.map(|f| f.input.as_str());
    let out = f.map(|f| f.output.as_str());
    for (what, path, recorded) in [
        ("extract", ext, &cache.input_sha256),
        ("cleared extract", out, &cache.output_sha256),
    ] {
        let (Some(path), Some(recorded)) = (path, recorded) else {
            continue;
        };
        if let Ok((now, _)) = processor::files::sha256_file(Path::new(path)) {
            if &now != recorded {
                alert(
                    found,
                    format!(
                        "The {what} has changed since it was filtered (its SHA-256 is not the \
                 one the filter recorded): the figures are about the file as it was."
                    ),
                );
            }
        }
    }
}

/// The journal's submissions, the last one of each LocalId, in order.
fn submissions(entries: &[Entry]) -> Vec<&Submission> {
    let mut out: Vec<&Submission> = Vec::new();
    for e in entries {
        if let Entry::Submitted(s) = e {
            out.retain(|o| o.local_id != s.local_id);
            out.push(s);
        }
    }
    out
}

/// Whether a file has a final reply (of any kind).
fn final_reply(f: &FileFacts) -> bool {
    f.replies.iter().any(|r| r.is_final)
}

/// Each file sent and the replies to it, from the journal; alerts for files the POS refused,
/// failed or has not answered.
fn files(entries: &[Entry], findings: &mut Vec<Finding>) -> Vec<FileFacts> {
    let replies: Vec<&Reply> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Reply(r) => Some(r),
            _ => None,
        })
        .collect();
    submissions(entries)
        .into_iter()
        .map(|s| {
            let mine: Vec<&Reply> = replies
                .iter()
                .copied()
                .filter(|r| r.local_id == s.local_id)
                .collect();
            let settled = mine.iter().copied().find(|r| r.is_final());
            let (status, answered) = match settled {
                None => {
                    alert(
                        findings,
                        format!(
                            "{} has no final reply from the POS yet: its patients are not \
                             checked. Run the same `ndop run` command again to collect it.",
                            s.file
                        ),
                    );
                    ("waiting for the POS".to_string(), false)
                }
                Some(r) => match r.reply {
                    ReplyKind::Cleaned => (
                        format!(
                            "answered: {} of {} numbers returned",
                            r.records.unwrap_or(0),
                            s.records
                        ),
                        true,
                    ),
                    ReplyKind::InvalidNumbers => {
                        alert(
                            findings,
                            format!(
                                "The POS rejected {}: \"The file contains one or more invalid \
                                 NHS Numbers.\" None of its {} patients was checked.",
                                s.file, s.records
                            ),
                        );
                        (
                            "rejected by the POS (invalid NHS numbers)".to_string(),
                            false,
                        )
                    }
                    ReplyKind::JobCreated => {
                        alert(
                            findings,
                            format!(
                                "The POS job for {} failed (job status {}): none of its \
                                 patients was checked.",
                                s.file,
                                r.job_status.as_deref().unwrap_or("unknown")
                            ),
                        );
                        ("POS job failed".to_string(), false)
                    }
                    ReplyKind::Report => {
                        let why = r.status_description.as_deref().unwrap_or("no reason given");
                        alert(
                            findings,
                            format!(
                                "MESH reports that {} was not delivered to the POS ({}; code \
                                 {}).",
                                s.file,
                                why,
                                r.status_code.as_deref().unwrap_or("none")
                            ),
                        );
                        (format!("not delivered: {why}"), false)
                    }
                },
            };
            let finals = mine.iter().filter(|r| r.is_final()).count();
            if finals > 1 {
                note(
                    findings,
                    format!(
                        "{} has {finals} final replies (a duplicate delivery); the first one \
                         collected is used.",
                        s.file
                    ),
                );
            }
            FileFacts {
                name: s.file.clone(),
                records: s.records,
                bytes: s.bytes,
                sha256: s.sha256.clone(),
                local_id: s.local_id.clone(),
                subject: s.subject.clone(),
                message_id: s.message_id.clone(),
                to: s.to.clone(),
                sent: s.time.clone(),
                status,
                answered,
                replies: mine
                    .iter()
                    .map(|r| ReplyFacts {
                        kind: reply_kind(r),
                        message_id: r.message_id.clone(),
                        file: r.file.clone(),
                        records: r.records,
                        bytes: r.bytes,
                        sha256: r.sha256.clone(),
                        stored: r.time.clone(),
                        is_final: r.is_final(),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// A reply's kind in words.
fn reply_kind(r: &Reply) -> String {
    match r.reply {
        ReplyKind::JobCreated => format!(
            "POS job created ({})",
            r.job_status.as_deref().unwrap_or("status unknown")
        ),
        ReplyKind::Cleaned => "cleaned file (numbers without an opt-out)".into(),
        ReplyKind::InvalidNumbers => "rejection: invalid NHS numbers".into(),
        ReplyKind::Report => format!(
            "MESH report: {}",
            r.status_description.as_deref().unwrap_or("no description")
        ),
    }
}

/// The extract: its identity as journaled, how it was read, and its SHA-256 if it is still
/// the same file.
fn extract_facts(
    src: &Sources,
    hash: bool,
    findings: &mut Vec<Finding>,
) -> anyhow::Result<ExtractFacts> {
    let recorded: Option<&Extract> = src.entries.iter().rev().find_map(|e| match e {
        Entry::Extract(x) => Some(x),
        _ => None,
    });
    let s = src.settings.as_ref();
    let filter = src.run.as_ref().map(|r| &r.filter);
    let path = recorded
        .map(|x| x.path.clone())
        .or_else(|| s.map(|s| s.extract.clone()).filter(|p| !p.is_empty()))
        .or_else(|| filter.map(|f| f.input.clone()));
    let mut facts = ExtractFacts {
        path: path.clone(),
        bytes: recorded.map(|x| x.bytes),
        modified: recorded.map(|x| x.modified.clone()),
        records: filter
            .map(|f| f.rows)
            .or_else(|| src.prepared.as_ref().map(|p| p.lines)),
        format: s.map(|s| s.format.clone()).filter(|f| !f.is_empty()),
        column: s.and_then(|s| s.column.clone()),
        delimiter: filter.and_then(|f| f.delimiter.clone()),
        header_rows: filter
            .map(|f| f.headers)
            .or_else(|| src.prepared.as_ref().map(|p| p.headers)),
        skipped_lines: filter.map(|f| f.skipped_lines),
        strict: s.map(|s| s.strict),
        reject_placeholders: s.map(|s| s.reject_placeholders),
        ..ExtractFacts::default()
    };
    if s.is_none() && src.cache.is_none() {
        note(
            findings,
            "This work directory has no run-settings.json (an older ndop ran here): the \
             format, column and MESH environment used are not recorded."
                .into(),
        );
    }
    let Some(path) = path else {
        facts.sha256_note = "the extract's path is not recorded in this work directory".into();
        return Ok(facts);
    };
    let now = match Extract::of(Path::new(&path)) {
        Ok(now) => now,
        Err(e) => {
            facts.sha256_note = format!("not computed: the extract cannot be read now ({e})");
            note(
                findings,
                format!("The extract cannot be read from here, so its SHA-256 is not given ({e})."),
            );
            return Ok(facts);
        }
    };
    match recorded {
        Some(r) if !r.changes(&now).is_empty() => {
            facts.sha256_note =
                "not computed: the file at this path is no longer the one that was checked".into();
            alert(
                findings,
                format!(
                    "The extract has changed since it was checked ({}): the figures below are \
                     about the file as it was, not as it is now.",
                    r.changes(&now).join("; ")
                ),
            );
            return Ok(facts);
        }
        Some(_) => {}
        None if src.cache.is_some() => {
            facts.bytes = Some(now.bytes);
            facts.modified = Some(now.modified.clone());
        }
        None => {
            note(
                findings,
                "The journal has no record of the extract's size and modification time (an \
                 older ndop wrote it): the file hashed may not be the one that was checked."
                    .into(),
            );
            facts.bytes = Some(now.bytes);
            facts.modified = Some(now.modified.clone());
        }
    }
    let taken = src.run.as_ref().and_then(|r| r.extract_hash.as_ref());
    if let Some((h, sha)) = taken.and_then(|h| Some((h, h.of_same(&now)?))) {
        facts.sha256 = Some(sha.to_owned());
        facts.sha256_note = format!(
            "computed at {} from the file while the run waited for the POS; its size, \
             modification time and inode are still those recorded then",
            h.file.time
        );
    } else if hash {
        let (sha, _) = processor::files::sha256_file(Path::new(&path))?;
        facts.sha256 = Some(sha);
        facts.sha256_note = format!(
            "computed at {} from the file, whose size and modification time are still those \
             recorded when it was prepared",
            pos_client::journal::now()
        );
    } else {
        facts.sha256_note = "not computed (asked not to hash)".into();
    }
    Ok(facts)
}

/// The cleared extract, hashed as it is now (or as it was written, if it is unchanged since).
fn output_facts(
    run: &RunJson,
    hash: bool,
    findings: &mut Vec<Finding>,
) -> anyhow::Result<OutputFacts> {
    let f = &run.filter;
    let path = PathBuf::from(&f.output);
    let mut out = OutputFacts {
        path: f.output.clone(),
        records: f.kept,
        bytes: None,
        sha256: None,
    };
    match std::fs::metadata(&path) {
        Ok(m) => {
            out.bytes = Some(m.len());
            let taken = run.output_hash.as_ref().and_then(|h| {
                let now = Extract::of(&path).ok()?;
                h.of_same(&now).map(str::to_owned)
            });
            if taken.is_some() {
                out.sha256 = taken;
            } else if hash {
                out.sha256 = Some(processor::files::sha256_file(&path)?.0);
            }
        }
        Err(e) => alert(
            findings,
            format!("The cleared extract {} cannot be read now ({e}).", f.output),
        ),
    }
    Ok(out)
}

/// The rejects report: how many records it lists, by reason, and the first few. Its lines are
/// `file,record,line,reason` (the file name may be quoted and hold commas, so the last three
/// fields are taken from the right).
fn rejects(path: &Path, findings: &mut Vec<Finding>) -> Option<Rejects> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            alert(
                findings,
                format!(
                    "The rejects report {} cannot be read ({e}).",
                    path.display()
                ),
            );
            return None;
        }
    };
    let mut r = Rejects {
        path: path.display().to_string(),
        records: 0,
        by_reason: BTreeMap::new(),
        first: Vec::new(),
    };
    let mut bad = 0u64;
    for line in text.lines().skip(1).filter(|l| !l.is_empty()) {
        let mut fields = line.rsplitn(4, ',');
        let (reason, line_no, record) = (fields.next(), fields.next(), fields.next());
        let parsed = match (record.map(str::parse), line_no.map(str::parse), reason) {
            (Some(Ok(record)), Some(Ok(line)), Some(reason)) => Some(RejectRow {
                record,
                line,
                reason: reason.to_string(),
            }),
            _ => None,
        };
        let Some(row) = parsed else {
            bad += 1;
            continue;
        };
        r.records += 1;
        *r.by_reason.entry(row.reason.clone()).or_default() += 1;
        if r.first.len() < REJECTS_LISTED {
            r.first.push(row);
        }
    }
    if bad > 0 {
        alert(
            findings,
            format!(
                "{bad} line(s) of the rejects report {} could not be read.",
                path.display()
            ),
        );
    }
    Some(r)
}

/// Where every record went: the filter's buckets once filtered, else what prepare found
/// (valid records then wait for the POS).
fn records(src: &Sources) -> Option<Records> {
    let reasons = |by: &BTreeMap<String, u64>, kind: &str, label: &str| -> Vec<Bucket> {
        by.iter()
            .filter(|(_, n)| **n > 0)
            .map(|(reason, n)| Bucket {
                key: format!("{kind}:{reason}"),
                label: format!("{label}: {}", reason.replace('_', " ")),
                records: *n,
                kept: false,
            })
            .collect()
    };
    let bucket = |key: &str, label: &str, records: u64, kept: bool| Bucket {
        key: key.into(),
        label: label.into(),
        records,
        kept,
    };
    let duplicates = src.prepared.as_ref().map(|p| p.duplicates);
    if let Some(run) = &src.run {
        let f = &run.filter;
        let mut buckets = vec![
            bucket("kept", "kept: no opt-out", f.kept, true),
            bucket(
                "opted_out",
                "removed: the patient opted out",
                f.opted_out,
                false,
            ),
            bucket(
                "not_checked",
                "removed: valid but not checked by the POS",
                f.not_checked,
                false,
            ),
        ];
        buckets.extend(reasons(
            &f.invalid_by_reason,
            "invalid",
            "removed: invalid NHS number",
        ));
        buckets.extend(reasons(
            &f.unparseable_by_reason,
            "unparseable",
            "removed: unreadable record",
        ));
        buckets.push(bucket("blank", "removed: blank", f.blank, false));
        return Some(Records {
            total: f.rows,
            buckets,
            duplicates,
        });
    }
    let p = src.prepared.as_ref()?;
    let valid = p.lines.saturating_sub(p.invalid + p.unparseable + p.blank);
    let mut buckets = vec![bucket(
        "awaiting",
        "valid: not yet through the POS check",
        valid,
        false,
    )];
    buckets.extend(reasons(
        &p.invalid_by_reason,
        "invalid",
        "invalid NHS number",
    ));
    buckets.extend(reasons(
        &p.unparseable_by_reason,
        "unparseable",
        "unreadable record",
    ));
    buckets.push(bucket("blank", "blank", p.blank, false));
    Some(Records {
        total: p.lines,
        buckets,
        duplicates: Some(p.duplicates),
    })
}

/// Cross-checks the figures against each other; every disagreement is an alert.
fn check(src: &Sources, facts: &mut Facts) {
    let mut found = Vec::new();
    match facts.state {
        State::NotSent => alert(
            &mut found,
            "Nothing has been sent to the POS: no patient is checked yet.".into(),
        ),
        State::Waiting => alert(
            &mut found,
            "The check is not finished: the POS has not answered every file. No cleared extract \
             has been written; nothing from this work directory may be disclosed yet."
                .into(),
        ),
        State::Stopped => alert(
            &mut found,
            "The run stopped before writing the cleared extract (see the alerts below and the \
             terminal output of ndop run); nothing from this work directory may be disclosed."
                .into(),
        ),
        State::Complete => {}
    }
    if let Some(records) = &facts.records {
        let sum: u64 = records.buckets.iter().map(|b| b.records).sum();
        if sum != records.total {
            alert(
                &mut found,
                format!(
                    "The outcomes add up to {sum} records, not the {} read.",
                    records.total
                ),
            );
        }
    }
    if let (Some(run), Some(p)) = (&src.run, &src.prepared) {
        let f = &run.filter;
        if f.rows != p.lines {
            alert(
                &mut found,
                format!(
                    "Prepare read {} records but filter read {}: they should be the same file.",
                    p.lines, f.rows
                ),
            );
        }
        if f.invalid != p.invalid || f.unparseable != p.unparseable || f.blank != p.blank {
            alert(
                &mut found,
                "Prepare and filter disagree on the invalid, unparseable or blank records.".into(),
            );
        }
        if f.not_checked > 0 {
            alert(
                &mut found,
                format!(
                    "{} records had a valid NHS number that was never sent to the POS; they \
                     were left out of the cleared extract.",
                    f.not_checked
                ),
            );
        }
        if let Some(rej) = &facts.rejects {
            if rej.records != f.invalid + f.unparseable {
                alert(
                    &mut found,
                    format!(
                        "The rejects report lists {} records, but {} were invalid or \
                         unparseable.",
                        rej.records,
                        f.invalid + f.unparseable
                    ),
                );
            }
        }
        for u in &run.collect.unrecognised {
            alert(
                &mut found,
                format!(
                    "Collect left MESH message {} in the inbox: {}.",
                    u.message_id, u.reason
                ),
            );
        }
    }
    if let Some(p) = &src.prepared {
        if facts.state != State::NotSent {
            let sent: u64 = facts.files.iter().map(|f| f.records).sum();
            if sent != p.unique {
                alert(
                    &mut found,
                    format!(
                        "Prepare found {} distinct valid numbers but the files sent hold {sent}.",
                        p.unique
                    ),
                );
            }
        }
        if let Some(r) = &src.reconciled {
            if r.requested != p.unique {
                alert(
                    &mut found,
                    format!(
                        "Reconcile counted {} numbers sent, prepare {}.",
                        r.requested, p.unique
                    ),
                );
            }
        }
        if p.invalid + p.unparseable > 0 {
            note(
                &mut found,
                format!(
                    "{} records had no usable NHS number (invalid or unreadable) and were left \
                     out; the rejects report says where each one is.",
                    p.invalid + p.unparseable
                ),
            );
        }
    }
    if let Some(r) = &src.reconciled {
        if r.unexpected > 0 {
            alert(
                &mut found,
                format!(
                    "The POS returned {} numbers that were never sent: its answer cannot be \
                     trusted and the extract was not filtered.",
                    r.unexpected
                ),
            );
        }
        if r.returned + r.opted_out != r.requested {
            alert(
                &mut found,
                format!(
                    "{} returned plus {} opted out is not the {} sent.",
                    r.returned, r.opted_out, r.requested
                ),
            );
        }
    }
    match facts.mesh.environment.as_deref() {
        Some("LIVE") | None => {}
        Some("INT") => note(
            &mut found,
            "This check ran against INT, the NHS England integration environment: its POS \
             answers are test data, not patients' real opt-outs."
                .into(),
        ),
        Some(other) => note(
            &mut found,
            format!(
                "This check ran against {other}, not the LIVE MESH: a test (mock) service whose \
                 answers are not patients' real opt-outs."
            ),
        ),
    }
    if let Some(c) = &facts.cache {
        check_cache(c, src, &mut found);
    }
    // state first, then the rest in the order found
    found.append(&mut facts.findings);
    found.sort_by_key(|f| f.severity != Severity::Alert);
    facts.findings = found;
}

/// The outcome in one sentence.
fn verdict(f: &Facts) -> String {
    let t = crate::report::thousands;
    match f.state {
        State::Complete if f.cache.is_some() => {
            let c = f
                .cache
                .as_ref()
                .map(|c| (c.as_of.as_str(), c.max_age.as_str()));
            let (as_of, max_age) = c.unwrap_or_default();
            let by = |key: &str| {
                f.records
                    .iter()
                    .flat_map(|r| &r.buckets)
                    .filter(|b| b.key == key)
                    .map(|b| b.records)
                    .sum::<u64>()
            };
            let total = f.records.as_ref().map_or(0, |r| r.total);
            format!(
                "The cleared extract keeps {} of {} records: {} removed as opted out and {} as \
                 not checked, by the results cache as of {as_of} (results at most {max_age} \
                 old).",
                t(by("kept")),
                t(total),
                t(by("opted_out")),
                t(by("not_checked"))
            )
        }
        State::Complete => {
            let (checked, opted_out) = f
                .patients
                .as_ref()
                .map(|p| (p.checked, p.opted_out))
                .unwrap_or_default();
            let (kept, total) = f
                .records
                .as_ref()
                .map(|r| {
                    let kept = r.buckets.iter().filter(|b| b.kept).map(|b| b.records);
                    (kept.sum(), r.total)
                })
                .unwrap_or_default();
            format!(
                "{} of {} patients opted out; the cleared extract keeps {} of {} records.",
                t(opted_out),
                t(checked),
                t(kept),
                t(total)
            )
        }
        State::Waiting => {
            let waiting = f.files.iter().filter(|x| !final_reply(x)).count();
            format!(
                "Not finished: the POS has not yet answered {waiting} of {} file(s) sent. Do not \
                 disclose: no cleared extract has been written.",
                f.files.len()
            )
        }
        State::Stopped => {
            let refused = f.files.iter().filter(|x| !x.answered).count();
            if refused > 0 {
                format!(
                    "Not finished: {refused} of {} file(s) sent were not checked by the POS. Do \
                     not disclose: no cleared extract has been written.",
                    f.files.len()
                )
            } else {
                "Not finished: the POS answered, but the run stopped before writing the cleared \
                 extract. Do not disclose."
                    .into()
            }
        }
        State::NotSent => "Not finished: the extract was prepared but nothing has been sent to \
                           the POS yet. Do not disclose."
            .into(),
    }
}

/// Adds an alert.
fn alert(findings: &mut Vec<Finding>, text: String) {
    findings.push(Finding {
        severity: Severity::Alert,
        text,
    });
}

/// Adds a note.
fn note(findings: &mut Vec<Finding>, text: String) {
    findings.push(Finding {
        severity: Severity::Note,
        text,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SHA_DAT: &str = "453e592ff7859686b6aea0683062e84d79ad8d6561339e50521589a2f3fd9e37";

    /// Writes `value` as `work/name`.
    fn put(work: &Path, name: &str, value: &serde_json::Value) {
        let path = work.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    }

    /// A journal line.
    fn line(value: serde_json::Value) -> String {
        value.to_string() + "\n"
    }

    fn submitted(n: u32, records: u64) -> String {
        line(
            json!({"kind": "submitted", "local_id": format!("t_X26ABC1-281126-000{n}_ab"),
            "message_id": format!("2026112807031271170{n}_159749"),
            "file": format!("X26ABC1-281126-000{n}.dat"), "sha256": SHA_DAT, "records": records,
            "bytes": records * 13, "subject": format!("t_X26ABC1-281126-000{n}"),
            "to": "X26OT154", "workflow_id": "SPINE_NTT_UPHOLDING",
            "time": format!("2026-11-28T07:03:1{n}.720Z")}),
        )
    }

    fn reply(n: u32, kind: &str, extra: serde_json::Value) -> String {
        let mut v = json!({"kind": "reply", "local_id": format!("t_X26ABC1-281126-000{n}_ab"),
            "message_id": format!("R{n}_{kind}"), "reply": kind,
            "file": format!("replies/r{n}.{kind}"), "sha256": "e1ef75", "bytes": 40,
            "time": format!("2026-11-28T07:04:1{n}.000Z")});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        line(v)
    }

    /// The work directory of a complete run: an extract of 10 records (2 invalid) whose 6
    /// distinct valid numbers went in two files; 2 patients (3 records) opted out.
    fn complete_run(dir: &Path) -> PathBuf {
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let extract = dir.join("extract.csv");
        std::fs::write(&extract, "id,nhs_number\n1,x\n").unwrap();
        let x = Extract::of(&extract).unwrap();
        let cleared = work.join("cleared.csv");
        std::fs::write(&cleared, "id,nhs_number\n").unwrap();
        let rejects = work.join("cleared.csv.rejects.csv");
        std::fs::write(
            &rejects,
            format!(
                "file,record,line,reason\n{p},3,4,check_digit_mismatch\n\"{p}\",9,10,wrong_length\n",
                p = extract.display()
            ),
        )
        .unwrap();
        let mut journal = line(serde_json::to_value(Entry::Extract(x)).unwrap());
        journal += &submitted(1, 4);
        journal += &reply(1, "job_created", json!({"job_status": "pending"}));
        journal += &reply(1, "cleaned", json!({"records": 3}));
        journal += &submitted(2, 2);
        journal += &reply(2, "cleaned", json!({"records": 1}));
        std::fs::write(work.join("journal.jsonl"), journal).unwrap();
        put(
            &work,
            "run-settings.json",
            &json!({"extract": extract.display().to_string(),
            "format": "csv", "column": "\"nhs_number\"", "header": true,
            "environment": "LIVE", "mailbox": "X26ABC1"}),
        );
        put(
            &work,
            "prepared/summary.json",
            &json!({"lines": 10, "unique": 6,
            "duplicates": 2, "invalid": 2, "unparseable": 0, "blank": 0, "headers": 1,
            "invalid_by_reason": {"check_digit_mismatch": 1, "wrong_length": 1},
            "to_dts": "X26OT154"}),
        );
        put(
            &work,
            "reconciled/summary.json",
            &json!({"requested": 6, "returned": 4,
            "opted_out": 2, "unexpected": 0}),
        );
        put(
            &work,
            "run.json",
            &json!({
            "stage_seconds": [["prepare", 0.5], ["send", 1.0], ["collect", 60.0],
                ["reconcile", 0.1], ["filter", 0.4]],
            "stage_ended": [["filter", "2026-11-28T07:05:00.000Z"]],
            "collect": {"unrecognised": []},
            "filter": {"rows": 10, "kept": 5, "opted_out": 3, "not_checked": 0, "invalid": 2,
                "blank": 0, "unparseable": 0, "headers": 1,
                "invalid_by_reason": {"check_digit_mismatch": 1, "wrong_length": 1},
                "input": extract.display().to_string(),
                "output": cleared.display().to_string(),
                "rejects": rejects.display().to_string(), "delimiter": "comma"}}),
        );
        work
    }

    fn alerts(f: &Facts) -> Vec<&str> {
        f.findings
            .iter()
            .filter(|x| x.severity == Severity::Alert)
            .map(|x| x.text.as_str())
            .collect()
    }

    #[test]
    fn a_complete_run() {
        let dir = tempfile::tempdir().unwrap();
        let work = complete_run(dir.path());
        let f = gather(&work, true).unwrap();
        assert_eq!(f.state, State::Complete);
        assert_eq!(
            f.verdict,
            "2 of 6 patients opted out; the cleared extract keeps 5 of 10 records."
        );
        assert!(alerts(&f).is_empty(), "{:?}", f.findings);
        let (sha, _) = processor::files::sha256_file(&dir.path().join("extract.csv")).unwrap();
        assert_eq!(f.extract.sha256.as_deref(), Some(sha.as_str()));
        assert_eq!(f.extract.records, Some(10));
        assert_eq!(f.extract.column.as_deref(), Some("\"nhs_number\""));
        let out = f.output.as_ref().unwrap();
        assert_eq!((out.records, out.bytes), (5, Some(14)));
        assert_eq!(f.mesh.environment.as_deref(), Some("LIVE"));
        assert_eq!(f.mesh.pos_mailbox.as_deref(), Some("X26OT154"));
        assert_eq!(f.dates.sent.as_deref(), Some("2026-11-28T07:03:12.720Z"));
        assert_eq!(
            f.dates.answered.as_deref(),
            Some("2026-11-28T07:04:12.000Z")
        );
        assert_eq!(
            f.dates.filtered.as_deref(),
            Some("2026-11-28T07:05:00.000Z")
        );
        let r = f.records.as_ref().unwrap();
        let by: BTreeMap<&str, u64> = r
            .buckets
            .iter()
            .map(|b| (b.key.as_str(), b.records))
            .collect();
        assert_eq!(by["kept"], 5);
        assert_eq!(by["opted_out"], 3);
        assert_eq!(by["invalid:wrong_length"], 1);
        assert_eq!(r.buckets.iter().map(|b| b.records).sum::<u64>(), 10);
        assert_eq!(f.files.len(), 2);
        assert!(f.files.iter().all(|x| x.answered));
        assert_eq!(f.files[0].replies.len(), 2);
        assert_eq!(f.files[0].status, "answered: 3 of 4 numbers returned");
        let rej = f.rejects.as_ref().unwrap();
        assert_eq!(rej.records, 2);
        assert_eq!(rej.first[1].line, 10);
        assert_eq!(f.stages.len(), 5);
        // the hashes can be left out
        assert_eq!(gather(&work, false).unwrap().extract.sha256, None);
    }

    #[test]
    fn figures_that_disagree_and_a_changed_extract_are_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let work = complete_run(dir.path());
        put(
            &work,
            "reconciled/summary.json",
            &json!({"requested": 6, "returned": 5,
            "opted_out": 2, "unexpected": 1}),
        );
        std::fs::write(dir.path().join("extract.csv"), "changed\n").unwrap();
        let f = gather(&work, true).unwrap();
        let a = alerts(&f).join("\n");
        assert!(a.contains("1 numbers that were never sent"), "{a}");
        assert!(
            a.contains("5 returned plus 2 opted out is not the 6 sent"),
            "{a}"
        );
        assert!(
            a.contains("The extract has changed since it was checked"),
            "{a}"
        );
        assert_eq!(f.extract.sha256, None);
        let page = super::super::html::render(&f);
        assert!(page.contains("class=\"verdict bad\""));
    }

    #[test]
    fn a_file_the_pos_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let work = complete_run(dir.path());
        let journal = std::fs::read_to_string(work.join("journal.jsonl")).unwrap();
        let mut lines: Vec<&str> = journal.lines().collect();
        lines.pop(); // file 2's cleaned reply, replaced by the rejection
        let mut journal = lines.join("\n") + "\n";
        journal += &reply(2, "invalid_numbers", json!({}));
        std::fs::write(work.join("journal.jsonl"), journal).unwrap();
        std::fs::remove_file(work.join("run.json")).unwrap();
        std::fs::remove_dir_all(work.join("reconciled")).unwrap();
        let f = gather(&work, true).unwrap();
        assert_eq!(f.state, State::Stopped);
        assert_eq!(
            f.verdict,
            "Not finished: 1 of 2 file(s) sent were not checked by the POS. Do not disclose: \
             no cleared extract has been written."
        );
        let a = alerts(&f).join("\n");
        assert!(
            a.contains("The POS rejected X26ABC1-281126-0002.dat"),
            "{a}"
        );
        assert!(f.output.is_none());
        assert_eq!(
            f.files[1].status,
            "rejected by the POS (invalid NHS numbers)"
        );
        // records not filtered: what prepare found
        let r = f.records.unwrap();
        assert_eq!(r.buckets[0].key, "awaiting");
        assert_eq!(r.buckets[0].records, 8);
    }

    #[test]
    fn a_collect_that_timed_out() {
        let dir = tempfile::tempdir().unwrap();
        let work = complete_run(dir.path());
        let journal = std::fs::read_to_string(work.join("journal.jsonl")).unwrap();
        let kept: Vec<&str> = journal
            .lines()
            .filter(|l| !l.contains("\"reply\":\"cleaned\""))
            .collect();
        std::fs::write(work.join("journal.jsonl"), kept.join("\n") + "\n").unwrap();
        std::fs::remove_file(work.join("run.json")).unwrap();
        std::fs::remove_dir_all(work.join("reconciled")).unwrap();
        let f = gather(&work, true).unwrap();
        assert_eq!(f.state, State::Waiting);
        assert_eq!(
            f.verdict,
            "Not finished: the POS has not yet answered 2 of 2 file(s) sent. Do not disclose: \
             no cleared extract has been written."
        );
        assert_eq!(f.dates.answered, None);
        let a = alerts(&f).join("\n");
        assert!(
            a.contains("X26ABC1-281126-0001.dat has no final reply"),
            "{a}"
        );
        assert_eq!(f.files[0].status, "waiting for the POS");
        assert!(f.stages.is_empty());
    }

    #[test]
    fn refuses_what_is_not_a_run_and_a_malformed_summary() {
        let dir = tempfile::tempdir().unwrap();
        let e = gather(dir.path(), false).unwrap_err().to_string();
        assert!(e.contains("holds no ndop run"), "{e}");
        let e = gather(&dir.path().join("nope"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a directory"), "{e}");
        let work = complete_run(dir.path());
        std::fs::write(work.join("run.json"), "{\"stage_seconds\": 3}").unwrap();
        let e = format!("{:#}", gather(&work, false).unwrap_err());
        assert!(
            e.contains("run.json") && e.contains("malformed run summary"),
            "{e}"
        );
    }

    /// The summary `ndop filter --cache` printed: 10 records, 5 kept, 2 opted out, 1 not
    /// checked, 1 invalid, 1 blank; results of two batches, the oldest 3 days before the as-of
    /// date; the extract and cleared extract as they were filtered.
    fn cache_filter(dir: &Path, allow_stale: bool) -> PathBuf {
        let extract = dir.join("extract.csv");
        std::fs::write(&extract, "id,nhs_number\n1,x\n").unwrap();
        let cleared = dir.join("cleared.csv");
        std::fs::write(&cleared, "id,nhs_number\n").unwrap();
        let sha = |p: &Path| processor::files::sha256_file(p).unwrap().0;
        let summary = dir.join("filter.json");
        put(
            dir,
            "filter.json",
            &json!({"rows": 10, "kept": 5, "opted_out": 2, "not_checked": 1, "invalid": 1,
            "blank": 1, "unparseable": 0, "headers": 1,
            "invalid_by_reason": {"check_digit_mismatch": 1},
            "input": extract.display().to_string(), "output": cleared.display().to_string(),
            "rejects": dir.join("cleared.csv.rejects.csv").display().to_string(),
            "compression": "none", "delimiter": "comma", "bom": false, "threads": 1,
            "elapsed_seconds": 0.25,
            "cache": {"as_of": "2026-11-20T00:00:00Z",
                "max_age": if allow_stale { "28d" } else { "7d" },
                "environment": "int", "batch_ids": [3, 4],
                "checked_at_range": ["2026-11-17T00:00:00Z", "2026-11-19T12:00:00Z"],
                "oldest_checked_at": "2026-11-17T00:00:00Z",
                "allow_stale_cache": allow_stale,
                "overrides": if allow_stale { vec!["allow-stale-cache: max age 28d is over 21d"] } else { vec![] },
                "not_checked": 1, "filtered_at": "2026-11-20T09:00:00Z",
                "input_sha256": sha(&extract), "output_sha256": sha(&cleared)}}),
        );
        summary
    }

    #[test]
    fn a_filter_that_used_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let summary = cache_filter(dir.path(), false);
        std::fs::write(
            dir.path().join("cleared.csv.rejects.csv"),
            "file,record,line,reason\nx,3,4,check_digit_mismatch\n",
        )
        .unwrap();
        let f = gather_filter(&summary, true).unwrap();
        assert_eq!(f.state, State::Complete);
        assert_eq!(
            f.verdict,
            "The cleared extract keeps 5 of 10 records: 2 removed as opted out and 1 as not \
             checked, by the results cache as of 2026-11-20T00:00:00Z (results at most 7d old)."
        );
        let c = f.cache.as_ref().unwrap();
        assert_eq!(c.oldest_checked_at.as_deref(), Some("2026-11-17T00:00:00Z"));
        assert_eq!(c.oldest_age.as_deref(), Some("3d"));
        assert_eq!((c.not_checked, c.allow_stale_cache), (1, false));
        assert_eq!(f.mesh.environment.as_deref(), Some("INT"));
        assert_eq!(f.dates.filtered.as_deref(), Some("2026-11-20T09:00:00Z"));
        assert!(f.extract.sha256.is_some(), "{}", f.extract.sha256_note);
        let a = alerts(&f).join("\n");
        assert!(
            a.contains("1 records had a valid NHS number with no result"),
            "{a}"
        );
        assert!(!a.contains("changed") && !a.contains("21-day"), "{a}");
        let notes: Vec<&str> = f.findings.iter().map(|x| x.text.as_str()).collect();
        assert!(
            notes.iter().any(|n| n.contains(
                "oldest result used was checked at \
                2026-11-17T00:00:00Z, 3d before, against a maximum age of 7d"
            )),
            "{notes:?}"
        );
        let page = super::super::html::render(&f);
        assert!(page.contains("Oldest result used"), "{page}");
        assert!(page.contains("Results cache as of"));
    }

    #[test]
    fn a_stale_cache_override_and_a_changed_output_are_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let summary = cache_filter(dir.path(), true);
        std::fs::write(dir.path().join("cleared.csv"), "id,nhs_number\n9,y\n").unwrap();
        let f = gather_filter(&summary, false).unwrap();
        let a = alerts(&f).join("\n");
        assert!(a.contains("--allow-stale-cache, maximum age 28d"), "{a}");
        assert!(
            a.contains("The cleared extract has changed since it was filtered"),
            "{a}"
        );
        let page = super::super::html::render(&f);
        assert!(
            page.contains("<span class=\"red\">28d (over the 21-day ceiling"),
            "{page}"
        );
        // a summary without a cache, or none at all, is refused with the way out
        put(
            dir.path(),
            "plain.json",
            &json!({"rows": 1, "kept": 1, "opted_out": 0,
            "invalid": 0, "blank": 0, "input": "a", "output": "b"}),
        );
        let e = gather_filter(&dir.path().join("plain.json"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("without --cache"), "{e}");
        let e = gather_filter(&dir.path().join("none.json"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such file"), "{e}");
    }

    #[test]
    fn names_are_escaped_and_nhs_numbers_in_them_removed() {
        let dir = tempfile::tempdir().unwrap();
        let work = complete_run(dir.path());
        let evil = dir.path().join("<b>x&y<b> 9434765919.csv");
        std::fs::rename(dir.path().join("extract.csv"), &evil).unwrap();
        let journal = std::fs::read_to_string(work.join("journal.jsonl")).unwrap();
        let journal = journal.replace("extract.csv", "<b>x&y<b> 9434765919.csv");
        std::fs::write(work.join("journal.jsonl"), journal).unwrap();
        let f = gather(&work, true).unwrap();
        assert_eq!(
            f.extract.path.as_deref(),
            Some(
                format!(
                    "{}/<b>x&y<b> [NHS number removed].csv",
                    dir.path().display()
                )
                .as_str()
            )
        );
        assert!(f.extract.sha256.is_some(), "{}", f.extract.sha256_note);
        let page = super::super::html::render(&f);
        assert!(!page.contains("<b>"));
        assert!(page.contains("&lt;b&gt;x&amp;y&lt;b&gt; [NHS number removed].csv"));
        assert!(!page.contains("9434765919"));
        assert!(!serde_json::to_string(&f).unwrap().contains("9434765919"));
    }
}
