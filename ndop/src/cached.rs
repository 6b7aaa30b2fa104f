//! What the commands that use the results cache share: the as-of window options (filter,
//! cache export, cache status) and importing work directories (cache import, run --cache).

use anyhow::Context;
use clap::Args;
use pos_cache::{Age, Cache, ImportSummary, View};
use processor::scan::ScanOptions;
use std::path::{Path, PathBuf};

/// Which results of the cache apply: as of when, and how old they may be.
#[derive(Debug, Clone, Args)]
pub(crate) struct WindowArgs {
    /// The disclosure time the cache is applied as of: 2026-11-20 (00:00 UTC) or
    /// 2026-11-20T14:00:00Z. Default: now. Checks made after it are not used.
    #[arg(long, value_name = "DATE")]
    pub as_of: Option<String>,

    /// Oldest check that may be used, counted back from --as-of: 7d, 12h, 21d. Numbers whose
    /// newest check is older are `not_checked`. Above 21d needs --allow-stale-cache.
    #[arg(long, default_value = "7d", value_name = "AGE")]
    pub max_age: String,

    /// Accept a --max-age above 21 days (recorded in the cache's audit log). Confirm the
    /// cache rule with your IG lead first.
    #[arg(long)]
    pub allow_stale_cache: bool,

    /// Use only results of this POS environment (int or live) when the cache holds both.
    #[arg(long, value_name = "ENV")]
    pub environment: Option<String>,
}

/// The window resolved: as-of time, maximum age, and whether the 21-day ceiling was overridden.
pub(crate) struct Window {
    pub as_of: i64,
    pub max_age: Age,
    pub overridden: bool,
    pub environment: Option<String>,
}

impl WindowArgs {
    /// Whether any window option was given (they mean nothing without a cache).
    pub(crate) fn given(&self) -> bool {
        self.as_of.is_some() || self.allow_stale_cache || self.environment.is_some()
    }

    /// Checks and resolves the options; a maximum age over 21 days without the override is
    /// refused.
    pub(crate) fn resolve(&self) -> anyhow::Result<Window> {
        let as_of = match &self.as_of {
            Some(t) => pos_cache::parse_time(t)?,
            None => chrono::Utc::now().timestamp_millis(),
        };
        let max_age = pos_cache::parse_age(&self.max_age)?;
        let over = max_age > pos_cache::HARD_MAX_AGE;
        if over && !self.allow_stale_cache {
            return Err(pos_cache::Error::Usage(format!(
                "--max-age {} is over the 21-day ceiling: results that old must not be applied; \
                 refresh the cache (ndop cache refresh), or give --allow-stale-cache if your IG \
                 lead has agreed (the override is recorded in the audit log)",
                self.max_age
            ))
            .into());
        }
        Ok(Window {
            as_of,
            max_age,
            overridden: over,
            environment: self.environment.clone(),
        })
    }
}

impl Window {
    /// The cache's view for this window.
    pub(crate) fn view(&self, cache: &Cache) -> anyhow::Result<View> {
        Ok(cache.view(self.as_of, self.max_age, self.environment.as_deref())?)
    }

    /// The audit fields every window-using command records.
    pub(crate) fn audit(&self, view: &View) -> serde_json::Value {
        let mut overrides = Vec::new();
        if self.overridden {
            overrides.push(format!(
                "allow-stale-cache: max age {} is over 21d",
                pos_cache::format_age(self.max_age)
            ));
        }
        serde_json::json!({
            "environment": view.environment,
            "batch_ids": view.batch_ids(),
            "checked_at_range": view.checked_range(),
            "oldest_checked_at": view.oldest_decided().map(pos_cache::format_time),
            "allow_stale_cache": self.overridden,
            "overrides": overrides,
        })
    }

    /// What a command's JSON summary says of the window: the audit fields plus the as-of time
    /// and the maximum age.
    pub(crate) fn summary(&self, view: &View) -> serde_json::Value {
        let mut s = self.audit(view);
        s["as_of"] = pos_cache::format_time(self.as_of).into();
        s["max_age"] = pos_cache::format_age(self.max_age).into();
        s
    }
}

/// Imports `works` (completed `ndop run` work directories) into the cache in `dir`, creating
/// it if needed: one transaction, audited.
pub(crate) fn import(
    dir: &Path,
    works: &[PathBuf],
    scan: &ScanOptions,
) -> anyhow::Result<ImportSummary> {
    let mut cache = Cache::open(dir, true)?;
    let mut batches = Vec::new();
    let mut skipped = Vec::new();
    let mut unread = 0;
    for w in works {
        // batches the cache already holds are not read again
        let (b, s, n) =
            pos_cache::read_new_batches(w, scan, &mut |id, req, res| cache.has_batch(id, req, res))
                .with_context(|| format!("cannot import {}", w.display()))?;
        batches.extend(b);
        skipped.extend(s);
        unread += n;
    }
    let requested = batches.iter().map(|b| b.requested.len()).sum();
    let returned = batches.iter().map(|b| b.returned.len()).sum();
    let audit = serde_json::json!({
        "work_dirs": works.iter().map(|w| w.display().to_string()).collect::<Vec<_>>(),
        "batches_read": batches.len(),
        "batches_present_unread": unread,
        "requested": requested,
        "returned": returned,
        "request_sha256": batches.iter().map(|b| b.request_sha256.clone()).collect::<Vec<_>>(),
        "response_sha256": batches.iter().map(|b| b.response_sha256.clone()).collect::<Vec<_>>(),
        "skipped": skipped.iter().map(|s| serde_json::json!({"local_id": s.local_id, "reason": s.reason})).collect::<Vec<_>>(),
    });
    let (added, already_present) = cache.add_batches(&batches, audit)?;
    Ok(ImportSummary {
        added,
        already_present: already_present + unread,
        skipped,
        requested,
        returned,
    })
}

/// `ndop run --reuse-younger-than`: the part of the extract the cache already answers.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct ReusePlan {
    /// When the cache was consulted (RFC 3339): the reused answers are as of then.
    pub as_of: String,
    /// The AGE given: checks younger than it were reused.
    pub younger_than: String,
    /// Distinct valid numbers of the extract.
    pub numbers: u64,
    /// Numbers answered from the cache (not sent again).
    pub reused: u64,
    /// Of those, the numbers the cache's decisive check returned (kept).
    pub reused_allowed: u64,
    /// Numbers sent to the POS.
    pub sent: u64,
    /// The batches relied on.
    pub batch_ids: Vec<i64>,
}

/// Files of a reusing run, under its work directory (mode 0600, one number a line).
pub(crate) const REUSE_JSON: &str = "reuse.json";
const REUSE_SEND: &str = "reuse-send.dat";
const REUSE_CHECKED: &str = "reuse-checked.dat";
const REUSE_ALLOWED: &str = "reuse-allowed.dat";

/// What a reusing run sends, and what it takes from the cache: decided once, when the run
/// starts, and kept in the work directory, so that a resumed run sends the same numbers and
/// applies the same cached answers (the cache may change meanwhile). The numbers whose
/// decisive check in `dir` as of now is younger than `age` are reused; the rest go to
/// `reuse-send.dat`. The decision is audited in the cache.
pub(crate) fn plan_reuse(
    dir: &Path,
    work: &Path,
    extract: &Path,
    scan: &ScanOptions,
    age: &str,
) -> anyhow::Result<(ReusePlan, PathBuf)> {
    let send = work.join(REUSE_SEND);
    if let Some(plan) =
        crate::pipeline::read_json::<ReusePlan>(&work.join(REUSE_JSON), "reuse plan")?
    {
        return Ok((plan, send));
    }
    let max_age = pos_cache::parse_age(age)?;
    if max_age > pos_cache::HARD_MAX_AGE {
        anyhow::bail!(pos_cache::Error::Usage(format!(
            "--reuse-younger-than {age} is over the 21-day ceiling: results that old must not \
             be applied; give a shorter age"
        )));
    }
    let now = chrono::Utc::now().timestamp_millis();
    let mut cache = Cache::open(dir, true)?;
    let view = cache.view(now, max_age, None)?;
    let set = processor::validate::validate(
        std::slice::from_ref(&extract.to_path_buf()),
        scan,
        None,
        &mut |_| {},
    )?
    .set;
    let wanted = pos_cache::bitmap_of(&set);
    let checked = &wanted & &view.covered;
    let allowed = &wanted & &view.allowed;
    let to_send = &wanted - &checked;
    processor::files::create_private_dir(work)?;
    for (name, bitmap) in [
        (REUSE_SEND, &to_send),
        (REUSE_CHECKED, &checked),
        (REUSE_ALLOWED, &allowed),
    ] {
        let mut text = Vec::with_capacity(bitmap.len() as usize * 12);
        for p in bitmap {
            text.extend_from_slice(
                format!("{:010}\r\n", pos_cache::number_of_prefix(p)).as_bytes(),
            );
        }
        processor::files::write_atomic(work, name, &text)?;
    }
    let plan = ReusePlan {
        as_of: pos_cache::format_time(now),
        younger_than: pos_cache::format_age(max_age),
        numbers: wanted.len(),
        reused: checked.len(),
        reused_allowed: allowed.len(),
        sent: to_send.len(),
        batch_ids: view.batch_ids(),
    };
    let mut record = serde_json::to_value(&plan)?;
    record["work"] = work.display().to_string().into();
    record["input"] = extract.display().to_string().into();
    record["input_sha256"] = pos_cache::sha256_file(extract)?.into();
    cache.audit("run-reuse", Some(now), Some(max_age), &record)?;
    processor::files::write_atomic(work, REUSE_JSON, &serde_json::to_vec_pretty(&plan)?)?;
    Ok((plan, send))
}

/// The numbers a reusing run took from the cache: (checked, allowed).
pub(crate) fn reused_sets(
    work: &Path,
) -> anyhow::Result<(processor::seen::NumberSet, processor::seen::NumberSet)> {
    let lines = ScanOptions::default();
    let read = |name: &str| -> anyhow::Result<processor::seen::NumberSet> {
        Ok(
            processor::reconcile::read_numbers(&[work.join(name)], "cache", &lines, &mut |_| {})?
                .set,
        )
    };
    Ok((read(REUSE_CHECKED)?, read(REUSE_ALLOWED)?))
}
