//! `ndop cache`: keep POS answers for a bounded time and hand them to data platforms.

use crate::args::{EngineArgs, MeshArgs, PollArgs};
use crate::cached::{import, WindowArgs};
use crate::cmd::reconcile::ConsentArgs;
use crate::exit;
use crate::pipeline::{Outcome, Pipeline};
use crate::report::{print_json, thousands};
use anyhow::Context;
use clap::{Args, Subcommand};
use pos_cache::{format_age, format_time, Cache, ExportFormat, ExportList, NumberType};
use processor::scan::{Format, ScanOptions};
use processor::validate::validate;
use std::io::Seek;
use std::os::fd::AsFd;
use std::path::PathBuf;

/// The POS results cache: keep the answers of completed checks for a bounded time, apply them
/// as of a disclosure date, export them for data platforms.
///
/// The cache is a directory holding one SQLite database (mode 0600). Each completed POS check
/// (one submission and its cleaned reply) is a batch: when the POS checked it, environment,
/// mailboxes, LocalId, MESH message ids, SHA-256 of request and reply, and the numbers
/// requested and returned. No other patient data, and no "opted out" flag: opted out is
/// derived (requested minus returned) when asked for. Every import, filter, export and purge
/// appends to an append-only audit log that never holds an NHS number.
///
/// Confirm the maximum age with your IG lead: the default is 7 days, and ages above 21 days
/// are refused unless --allow-stale-cache is given (and audited).
///
/// Examples:
///   ndop run extract.csv --column nhs_number --work job42 --cache /srv/ndop-cache ...
///   ndop cache import job41 job42 --cache /srv/ndop-cache
///   ndop cache status --cache /srv/ndop-cache
///   ndop filter extract.csv --column nhs_number --cache /srv/ndop-cache --out cleared.csv
///   ndop cache export --cache /srv/ndop-cache --format parquet --out allow.parquet
///   ndop cache purge --cache /srv/ndop-cache --older-than 28d
///   ndop cache audit --cache /srv/ndop-cache --json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct CacheArgs {
    #[command(subcommand)]
    command: CacheCommand,
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    Import(ImportArgs),
    Status(StatusArgs),
    Export(ExportArgs),
    Refresh(RefreshArgs),
    Purge(PurgeArgs),
    Audit(AuditArgs),
}

/// The cache directory.
#[derive(Debug, Args)]
struct CacheDir {
    /// The cache directory (created by import with mode 0700).
    #[arg(long, value_name = "DIR")]
    cache: PathBuf,
}

/// Add completed `ndop run` work directories to the cache.
///
/// Each submission with a cleaned reply becomes a batch; its checked_at is the earlier of when
/// MESH accepted the submission and when it accepted the POS's answer. Submissions without an
/// answer, rejected or failed are listed and left out (their numbers stay not checked).
/// Importing the same run twice adds nothing. The .dat and reply files are checked against the
/// SHA-256 in the journal first.
///
/// Examples:
///   ndop cache import job41 job42 --cache /srv/ndop-cache
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
struct ImportArgs {
    /// Work directories of `ndop run`.
    #[arg(required = true, value_name = "WORK")]
    works: Vec<PathBuf>,
    #[command(flatten)]
    dir: CacheDir,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Batches, numbers covered, how recently they were checked, and what is stale.
///
/// Examples:
///   ndop cache status --cache /srv/ndop-cache
///   ndop cache status --cache /srv/ndop-cache --max-age 3d --json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
struct StatusArgs {
    #[command(flatten)]
    dir: CacheDir,
    #[command(flatten)]
    window: WindowArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Write the join-ready table: one sorted, distinct `nhs_number` column.
///
/// The allow-list (numbers whose decisive check as of --as-of returned them; fails closed when
/// joined) is the default; the opted-out list (derived) must be asked for by name and is
/// applied with an anti-join, never NOT IN. Parquet files carry the as-of time, maximum age,
/// checked_at range, environment and batch ids as key-value metadata. See docs/CACHE.md.
///
/// Examples:
///   ndop cache export --cache C --format parquet --out allow.parquet
///   ndop cache export --cache C --list opted-out --format csv --out deny.csv --as-of 2026-11-20
///   ndop cache export --cache C --consent-out consents.ndjson --as-of 2026-11-20
///   ndop cache export --cache C --consent-out bundle.json --consent-format bundle --fhir stu3
///   ndop cache export --cache C --consent-out changes.ndjson --previous-as-of 2026-11-13
///
/// With --consent-out (instead of --format and --out) the view as of --as-of is written as FHIR
/// Consent resources, as `ndop reconcile --consent-out` writes them: `active` for each number
/// whose newest check in the window did not return it (plus, with --consent-state full,
/// `inactive` for each number it returned), each dated with the checked_at of that check.
/// With --previous-as-of (the incremental export), `inactive` only for the numbers that were
/// opted out in the view as of that earlier time and are returned now.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
struct ExportArgs {
    #[command(flatten)]
    dir: CacheDir,
    /// Which list: allowed or opted-out.
    #[arg(long, default_value = "allowed", value_parser = ["allowed", "opted-out"])]
    list: String,
    /// dat (POS lines), csv (header nhs_number) or parquet.
    #[arg(long, value_parser = ["dat", "csv", "parquet"], required_unless_present = "consent_out")]
    format: Option<String>,
    /// Parquet column type: string (10 characters, the default) or int64.
    #[arg(long = "type", default_value = "string", value_parser = ["string", "int64"])]
    number_type: String,
    /// The file to write (must not exist; mode 0600).
    #[arg(long, value_name = "FILE", required_unless_present = "consent_out")]
    out: Option<PathBuf>,
    #[command(flatten)]
    window: WindowArgs,
    #[command(flatten)]
    consent: ConsentArgs,
    /// With --consent-out: write `inactive` only for the numbers that were opted out in the
    /// cache's view as of this earlier time (same --max-age and --environment) and are
    /// returned now (their opt-out was withdrawn), as `ndop reconcile --previous` does.
    #[arg(long, value_name = "DATE", requires = "consent_out")]
    previous_as_of: Option<String>,
}

/// Check the population (or only its stale part) through the POS and import the answers.
///
/// Made for cron or a systemd timer: the same resumable pipeline as `ndop run` in WORK (use a
/// new work directory for each refresh; run the same command again to resume one that timed
/// out), then the answers are imported. Quiet on success: nothing on standard output or
/// standard error unless --verbose. When it fails, everything it would have said is printed
/// on standard error, followed by the reason.
///
/// Exit codes: 0 the cache was refreshed (or, with --stale-only, nothing was stale); 2 bad
/// arguments; 3 the population or the cache could not be read; 4 an output could not be
/// written; 5 MESH failed; 6 the POS did not answer as expected (replies still missing when
/// --timeout ran out: run the same command again; or the upload was refused). Nothing is
/// imported unless every file has its answer, so a failed refresh never leaves the cache
/// looking fresher than it is.
///
/// The numbers to send (every valid number of the population, or with --stale-only those
/// whose newest check is older than --older-than or that were never checked) are written
/// once to WORK/refresh.dat (mode 0600), so that a resumed refresh sends the same. The POS
/// refuses an upload whose content it has seen before (validate_is_unique_upload), and the
/// .dat files of one set of numbers are always the same bytes (sorted); each refresh therefore
/// splits its files at different places (a --max-records lower by the number of records in
/// the cache's audit log), so an unchanged population is still new uploads of the same numbers.
///
/// Examples:
///   ndop cache refresh --population patients.csv --column nhs_number --cache /srv/ndop-cache \
///       --work /srv/ndop-work/refresh-$(date +%F) --config /etc/ndop/ndop.toml
///   ndop cache refresh --population patients.dat --cache C --work W --stale-only --older-than 5d
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
struct RefreshArgs {
    /// The population: every NHS number the organisation may disclose (a CSV with --column,
    /// else one number per line).
    #[arg(long, value_name = "FILE")]
    population: PathBuf,
    /// The population's NHS number column (header name or 1-based position).
    #[arg(long, value_name = "NAME|N")]
    column: Option<processor::csv::Column>,
    #[command(flatten)]
    dir: CacheDir,
    /// Work directory of this refresh (created if needed; reuse it to resume).
    #[arg(long, value_name = "DIR")]
    work: PathBuf,
    /// Send only the numbers whose newest check is older than --older-than, or never checked.
    #[arg(long, requires = "older_than")]
    stale_only: bool,
    /// With --stale-only: the age beyond which a check is refreshed (e.g. 5d).
    #[arg(long, value_name = "AGE")]
    older_than: Option<String>,
    /// Most records in one .dat file.
    #[arg(long, value_name = "N")]
    max_records: Option<u64>,
    /// Say what is happening (stages, counts) even when the refresh succeeds.
    #[arg(long, short = 'v')]
    verbose: bool,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    poll: PollArgs,
    #[command(flatten)]
    mesh: MeshArgs,
}

/// Delete whole batches checked longer ago than AGE, and give the space back.
///
/// Examples:
///   ndop cache purge --cache /srv/ndop-cache --older-than 28d
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
struct PurgeArgs {
    #[command(flatten)]
    dir: CacheDir,
    /// Delete batches whose check is older than this (7d, 28d, 12h).
    #[arg(long, value_name = "AGE")]
    older_than: String,
    /// Count the age back from this time instead of now (2026-11-20 or RFC 3339).
    #[arg(long, value_name = "DATE")]
    as_of: Option<String>,
}

/// Print the audit log (oldest first). It never holds an NHS number.
///
/// Examples:
///   ndop cache audit --cache /srv/ndop-cache --json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
struct AuditArgs {
    #[command(flatten)]
    dir: CacheDir,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `ndop cache`.
pub(crate) fn run(args: CacheArgs) -> anyhow::Result<u8> {
    match args.command {
        CacheCommand::Import(a) => run_import(a),
        CacheCommand::Status(a) => run_status(a),
        CacheCommand::Export(a) => run_export(a),
        CacheCommand::Refresh(a) => run_refresh(a),
        CacheCommand::Purge(a) => run_purge(a),
        CacheCommand::Audit(a) => run_audit(a),
    }
}

fn run_import(a: ImportArgs) -> anyhow::Result<u8> {
    let s = import(&a.dir.cache, &a.works, &a.engine.scan_options())?;
    print_json(&s)?;
    eprintln!(
        "ndop cache import: {} batch(es) added, {} already present, {} submission(s) without a \
         completed check",
        s.added.len(),
        s.already_present,
        s.skipped.len()
    );
    Ok(exit::OK)
}

fn run_status(a: StatusArgs) -> anyhow::Result<u8> {
    let w = a.window.resolve()?;
    let cache = Cache::open(&a.dir.cache, false)?;
    let s = cache.status(w.as_of, w.max_age)?;
    if a.json {
        print_json(&s)?;
        return Ok(exit::OK);
    }
    println!(
        "cache {} (schema {}, {} bytes)",
        s.path,
        s.schema_version,
        thousands(s.bytes)
    );
    println!("as of {}, maximum age {}", s.as_of, s.max_age);
    println!("{} batch(es):", s.batches.len());
    for b in &s.batches {
        println!(
            "  #{} {} {} checked {} requested {} returned {}",
            b.id,
            b.environment,
            b.local_id,
            b.checked_at,
            thousands(b.requested),
            thousands(b.returned)
        );
    }
    println!("numbers covered: {}", thousands(s.numbers_covered));
    for (age, n) in &s.last_checked_within {
        println!("  last checked within {age}: {}", thousands(*n));
    }
    println!(
        "fresh (within {}): {}; stale: {}{}",
        s.max_age,
        thousands(s.fresh),
        thousands(s.stale),
        if s.stale > 0 {
            " (refresh them: ndop cache refresh)"
        } else {
            ""
        }
    );
    Ok(exit::OK)
}

fn run_export(a: ExportArgs) -> anyhow::Result<u8> {
    let w = a.window.resolve()?;
    let mut cache = Cache::open(&a.dir.cache, false)?;
    let view = w.view(&cache)?;
    if let Some(path) = &a.consent.consent_out {
        return export_consents(&a, path, &w, &view, &mut cache);
    }
    let (Some(format_name), Some(out)) = (&a.format, &a.out) else {
        anyhow::bail!(processor::Error::Usage(
            "cache export needs --format and --out (or --consent-out FILE)".into()
        ));
    };
    let list = match a.list.as_str() {
        "opted-out" => ExportList::OptedOut,
        _ => ExportList::Allowed,
    };
    let format = match format_name.as_str() {
        "dat" => ExportFormat::Dat,
        "csv" => ExportFormat::Csv,
        _ => ExportFormat::Parquet,
    };
    let number_type = match a.number_type.as_str() {
        "int64" => NumberType::Int64,
        _ => NumberType::String,
    };
    let s = pos_cache::export(&view, list, format, number_type, out)?;
    let mut record = w.audit(&view);
    record["list"] = a.list.clone().into();
    record["format"] = format_name.clone().into();
    record["output"] = s.out.clone().into();
    record["output_sha256"] = s.sha256.clone().into();
    record["numbers"] = s.numbers.into();
    record["numbers_covered"] = view.covered.len().into();
    cache.audit("export", Some(w.as_of), Some(w.max_age), &record)?;
    print_json(&s)?;
    eprintln!(
        "ndop cache export: wrote {} numbers ({}) to {} as of {}, maximum age {}",
        thousands(s.numbers),
        a.list,
        s.out,
        format_time(w.as_of),
        format_age(w.max_age)
    );
    Ok(exit::OK)
}

fn run_refresh(a: RefreshArgs) -> anyhow::Result<u8> {
    if a.verbose {
        return refresh(&a);
    }
    // quiet for cron and systemd: what would go to standard error (the pipeline's stages, any
    // warning) is kept aside, and shown only when the refresh does not succeed
    let mut transcript = tempfile::tempfile()
        .context("cannot create a temporary file for the refresh's messages (TMPDIR)")?;
    let saved = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("cannot duplicate standard error")?;
    rustix::stdio::dup2_stderr(&transcript).context("cannot redirect standard error")?;
    let result = refresh(&a);
    rustix::stdio::dup2_stderr(&saved).context("cannot restore standard error")?;
    if !matches!(result, Ok(exit::OK)) {
        transcript.seek(std::io::SeekFrom::Start(0))?;
        std::io::copy(&mut transcript, &mut std::io::stderr())?;
    }
    result
}

fn refresh(a: &RefreshArgs) -> anyhow::Result<u8> {
    let lines = a.engine.scan_options();
    let plan_file = a.work.join(REFRESH_JSON);
    let plan = match crate::pipeline::read_json::<RefreshPlan>(&plan_file, "refresh plan")? {
        Some(p) => p,
        None => match plan_refresh(a)? {
            Some(p) => p,
            None => return Ok(exit::OK),
        },
    };
    let out = a.work.join("population-cleared.out");
    let pipeline = Pipeline {
        extract: a.work.join(REFRESH_DAT),
        scan: lines.clone(),
        work: a.work.clone(),
        out,
        settings: a.mesh.settings()?,
        tag: Some("refresh".into()),
        max_records: Some(plan.max_records),
        poll: a.poll.options()?,
        folders: None,
        consent: None,
    };
    match pipeline.run()? {
        Outcome::Done(_) => {
            let s = import(&a.dir.cache, std::slice::from_ref(&a.work), &lines)?;
            eprintln!(
                "ndop cache refresh: {} batch(es) added to {} ({} already there)",
                s.added.len(),
                a.dir.cache.display(),
                s.already_present
            );
            Ok(exit::OK)
        }
        Outcome::Waiting(_) => {
            eprintln!(
                "ndop cache refresh: the POS has not answered yet; run the same command again \
                 (with the same --work) to resume"
            );
            Ok(exit::POS)
        }
    }
}

/// The numbers a refresh sends, under its work directory.
const REFRESH_DAT: &str = "refresh.dat";
/// How they are split into files, under its work directory.
const REFRESH_JSON: &str = "refresh.json";

/// How a refresh splits its numbers, fixed when it starts (WORK/refresh.json) so that a
/// resumed refresh prepares the same files.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct RefreshPlan {
    /// Numbers to send.
    numbers: u64,
    /// Most records in one .dat.
    max_records: u64,
}

/// Writes WORK/refresh.dat (the population's valid numbers, or with --stale-only its stale
/// part, sorted) and WORK/refresh.json. `None` when nothing is stale.
///
/// The POS refuses an upload whose content it has seen, and `prepare` writes the same set of
/// numbers as the same bytes; an unchanged population must still be refreshable. So the
/// files are split at different places on each refresh: at most `base - k mod base` records
/// each, where `base` is --max-records (or the count) and `k` the number of records in the
/// cache's audit log (every refresh adds at least one). Two different limits never give a
/// file of the same numbers (each file is a run of the sorted list starting at a multiple of
/// the limit), so no file repeats an earlier refresh's unless `k` wraps around `base`.
fn plan_refresh(a: &RefreshArgs) -> anyhow::Result<Option<RefreshPlan>> {
    let population_scan = ScanOptions {
        format: match &a.column {
            Some(c) => Format::Csv(c.clone()),
            None => Format::Lines,
        },
        ..a.engine.scan_options()
    };
    let cache = Cache::open(&a.dir.cache, true)?;
    let pop = validate(
        std::slice::from_ref(&a.population),
        &population_scan,
        None,
        &mut |_| {},
    )?;
    let mut part = pos_cache::bitmap_of(&pop.set);
    eprintln!(
        "ndop cache refresh: the population has {} distinct valid numbers ({} invalid and {} \
         unreadable lines left out: `ndop validate` lists them)",
        thousands(pop.counts.unique),
        thousands(pop.counts.invalid),
        thousands(pop.counts.unparseable)
    );
    if a.stale_only {
        let age = pos_cache::parse_age(a.older_than.as_deref().unwrap_or_default())?;
        part = cache.stale_part(&part, chrono::Utc::now().timestamp_millis(), age)?;
        eprintln!(
            "ndop cache refresh: {} of {} numbers are stale or never checked",
            thousands(part.len()),
            thousands(pop.set.len())
        );
        if part.is_empty() {
            return Ok(None);
        }
    }
    if part.is_empty() {
        anyhow::bail!(processor::Error::Usage(format!(
            "the population {} holds no valid NHS number: nothing to refresh (check --column)",
            a.population.display()
        )));
    }
    let base = a.max_records.unwrap_or(u64::MAX).min(part.len()).max(1);
    let k = cache.audit_records()?.len() as u64;
    let plan = RefreshPlan {
        numbers: part.len(),
        max_records: base - k % base,
    };
    processor::files::create_private_dir(&a.work)?;
    let mut text = Vec::with_capacity(part.len() as usize * 12);
    for p in &part {
        text.extend_from_slice(format!("{:010}\r\n", pos_cache::number_of_prefix(p)).as_bytes());
    }
    processor::files::write_atomic(&a.work, REFRESH_DAT, &text)?;
    processor::files::write_atomic(&a.work, REFRESH_JSON, &serde_json::to_vec_pretty(&plan)?)?;
    eprintln!(
        "ndop cache refresh: sending {} numbers, at most {} per file",
        thousands(plan.numbers),
        thousands(plan.max_records)
    );
    Ok(Some(plan))
}

fn run_purge(a: PurgeArgs) -> anyhow::Result<u8> {
    let as_of = match &a.as_of {
        Some(t) => pos_cache::parse_time(t)?,
        None => chrono::Utc::now().timestamp_millis(),
    };
    let age = pos_cache::parse_age(&a.older_than)?;
    let mut cache = Cache::open(&a.dir.cache, false)?;
    let before = as_of - age;
    let record = serde_json::json!({
        "older_than": format_age(age),
        "checked_before": format_time(before),
    });
    let ids = cache.purge(before, record)?;
    print_json(&serde_json::json!({ "deleted_batches": ids }))?;
    eprintln!(
        "ndop cache purge: deleted {} batch(es) checked before {}",
        ids.len(),
        format_time(before)
    );
    Ok(exit::OK)
}

fn run_audit(a: AuditArgs) -> anyhow::Result<u8> {
    let cache = Cache::open(&a.dir.cache, false)?;
    let records = cache.audit_records()?;
    if a.json {
        print_json(&records)?;
        return Ok(exit::OK);
    }
    for r in &records {
        println!(
            "#{} {} {} as-of {} max-age {} {}",
            r.id,
            r.time,
            r.command,
            r.as_of.as_deref().unwrap_or("-"),
            r.max_age.as_deref().unwrap_or("-"),
            r.record
        );
    }
    Ok(exit::OK)
}

/// `cache export --consent-out`: the view as Consent resources, each dated with the checked_at
/// of the check that decides its number; audited like the other exports.
fn export_consents(
    a: &ExportArgs,
    path: &std::path::Path,
    w: &crate::cached::Window,
    view: &pos_cache::View,
    cache: &mut Cache,
) -> anyhow::Result<u8> {
    if a.consent.previous.is_some() || a.consent.checked_at.is_some() || a.format.is_some() {
        anyhow::bail!(processor::Error::Usage(
            "cache export --consent-out dates each Consent with its own check: drop --checked-at \
             and --format, and give the earlier state as --previous-as-of DATE (the cache's \
             view then) instead of --previous RECONCILED_DIR"
                .into()
        ));
    }
    // the incremental export: who was opted out in the view as of the earlier time
    let previous = match &a.previous_as_of {
        None => None,
        Some(t) => {
            if a.consent.consent_state == crate::cmd::reconcile::StateArg::Full {
                anyhow::bail!(processor::Error::Usage(
                    "--consent-state full already writes every returned patient; drop \
                     --previous-as-of"
                        .into()
                ));
            }
            let earlier = pos_cache::parse_time(t)?;
            if earlier >= w.as_of {
                anyhow::bail!(processor::Error::Usage(format!(
                    "--previous-as-of {t} is not before --as-of {}: give the time of the \
                     earlier export",
                    format_time(w.as_of)
                )));
            }
            let before = cache.view(earlier, w.max_age, w.environment.as_deref())?;
            Some((
                earlier,
                pos_cache::number_set_of(&(&before.covered - &before.allowed)),
            ))
        }
    };
    let dates = view
        .decided
        .iter()
        .map(|(at, _)| {
            chrono::DateTime::from_timestamp_millis(*at)
                .map(|t| t.fixed_offset())
                .ok_or_else(|| {
                    processor::Error::Usage(format!("a check time {at} is out of range"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // the decided sets are disjoint; the newest batches are the likeliest, so look there first
    let date_of = |n: u64| {
        let prefix = u32::try_from(n / 10).ok()?;
        view.decided.iter().rposition(|(_, d)| d.contains(prefix))
    };
    let requested = pos_cache::number_set_of(&view.covered);
    let returned = pos_cache::number_set_of(&view.allowed);
    let opts = a.consent.options(chrono::Utc::now().fixed_offset());
    let s = processor::consent::write_consents_dated(
        path,
        &requested,
        &returned,
        previous.as_ref().map(|(_, set)| set),
        &opts,
        &dates,
        date_of,
    )?;
    let mut record = w.audit(view);
    record["list"] = "consent".into();
    record["format"] = serde_json::to_value(s.format)?;
    record["fhir"] = serde_json::to_value(s.fhir)?;
    record["output"] = s.path.clone().into();
    record["output_sha256"] = pos_cache::sha256_file(path)?.into();
    record["active"] = s.active.into();
    record["inactive"] = s.inactive.into();
    record["numbers_covered"] = view.covered.len().into();
    record["previous_as_of"] = previous.as_ref().map(|(t, _)| format_time(*t)).into();
    cache.audit("export", Some(w.as_of), Some(w.max_age), &record)?;
    print_json(&s)?;
    eprintln!(
        "ndop cache export: wrote {} active and {} inactive Consent resources to {} as of {}, \
         maximum age {} (dateTime from {} to {})",
        thousands(s.active),
        thousands(s.inactive),
        s.path,
        format_time(w.as_of),
        format_age(w.max_age),
        s.oldest_date_time,
        s.date_time
    );
    Ok(exit::OK)
}
