//! `ndop run` (prepare, send, collect, reconcile, filter in one resumable go) and `ndop demo`
//! (the same against an in-process mock MESH on a sample extract).

use super::mesh::{client_for, describe_collect, print_json, runtime, send_with_progress};
use super::mesh::{MeshArgs, PollArgs};
use super::{describe_counts, thousands, InputArgs};
use crate::{exit, progress};
use anyhow::{anyhow, bail, Context};
use clap::Args;
use processor::filter::{filter, FilterSummary};
use processor::journal::{Entry, Extract, Journal, ReplyKind};
use processor::mesh_settings::{MeshSettings, Secret};
use processor::output::{DatOptions, Environment, LineEnding};
use processor::prepare::{prepare, PrepareOptions, Summary, SUMMARY_JSON};
use processor::reconcile::{reconcile, ReconcileSummary, Reconciled};
use processor::scan::{Format, ScanOptions};
use processor::transfer::{CollectOptions, CollectReport, SendReport};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Prepared files, under the work directory.
const PREPARED: &str = "prepared";
/// Reconciliation output, under the work directory.
const RECONCILED: &str = "reconciled";
/// The run's summary, in the work directory.
const RUN_JSON: &str = "run.json";

/// Do the whole job on one extract: prepare, send, collect, reconcile, filter.
///
/// Prepares the POS files, sends them over MESH, waits for and collects the replies, works out
/// who opted out and writes the extract without them. Everything lives in the work directory (prepared/, replies/, reconciled/, the
/// journal, run.json). If the run is interrupted at any step, or collect times out, run the
/// same command again: it resumes from the journal and never sends a file twice.
///
/// The extract must be a regular file, and the same file on every run in one work directory:
/// its size, modification time and inode are journaled when it is prepared, and a run that finds
/// them changed (checked at the start, after prepare and around filter) stops with exit code 3:
/// nothing more is sent and no output is left from the changed file. A work directory from an
/// older ndop resumes with a warning.
///
/// Examples:
///   export NDOP_MESH_PASSWORD=... NDOP_MESH_SHARED_KEY=... NDOP_MESH_CERT=... NDOP_MESH_KEY=...
///   ndop run extract.csv --column nhs_number --work job42 --mailbox X26ABC1 --mesh int
///   ndop run extract.dat --work job42 --config ndop.toml --interval 60
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RunArgs {
    #[command(flatten)]
    pub input: InputArgs,

    /// Work directory (created if needed; reuse it to resume).
    #[arg(long, value_name = "DIR")]
    pub work: PathBuf,

    /// The filtered extract (default: WORK/cleared.<extension of the extract>).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Project tag added to Subject and LocalId (letters, digits, _ and -).
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,

    /// Most records in one .dat file (default: only the 20 GB MESH limit splits).
    #[arg(long, value_name = "N")]
    pub max_records: Option<u64>,

    #[command(flatten)]
    pub poll: PollArgs,

    #[command(flatten)]
    pub mesh: MeshArgs,
}

/// Run the whole pipeline on a sample extract against an in-process mock MESH.
///
/// The mock listens on a loopback port: no Spine access, certificates or mailbox needed. The sample holds the
/// published INT test patients (10 of whom have an opt-out), synthetic patients from the 999
/// test range with several rows each (one in ten of them given an opt-out in the mock POS) and a few invalid
/// lines. Prints what happened and where the files are.
///
/// Examples:
///   ndop demo
///   ndop demo --work /tmp/ndop-demo --patients 100000
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct DemoArgs {
    /// Work directory (must be new or empty; default: a fresh temporary directory, kept).
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,

    /// Synthetic 999-range patients in the sample, each with 1 to 4 rows.
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub patients: u32,
}

/// Everything one pipeline run needs.
struct Pipeline {
    extract: PathBuf,
    scan: ScanOptions,
    work: PathBuf,
    out: PathBuf,
    settings: MeshSettings,
    tag: Option<String>,
    max_records: Option<u64>,
    poll: CollectOptions,
}

/// The summary of a pipeline run (`run.json`).
#[derive(Debug, Serialize)]
struct RunSummary {
    /// Wall-clock seconds of each stage of this run (a resumed run skips finished work).
    stage_seconds: Vec<(&'static str, f64)>,
    prepare: PrepareFacts,
    send: Option<SendReport>,
    collect: CollectReport,
    reconcile: ReconcileSummary,
    filter: FilterSummary,
}

#[derive(Debug, Serialize, serde::Deserialize)]
struct PrepareFacts {
    lines: u64,
    unique: u64,
    duplicates: u64,
    invalid: u64,
    blank: u64,
    files: Vec<String>,
}

impl From<&Summary> for PrepareFacts {
    fn from(s: &Summary) -> Self {
        PrepareFacts {
            lines: s.counts.lines,
            unique: s.counts.unique,
            duplicates: s.counts.duplicates,
            invalid: s.counts.invalid,
            blank: s.counts.blank,
            files: s.files.iter().map(|f| f.name.clone()).collect(),
        }
    }
}

/// Why a pipeline stopped before the end, when it is not an error of its own.
enum Outcome {
    Done(Box<(RunSummary, Reconciled)>),
    Waiting(CollectReport),
}

impl Pipeline {
    fn run(&self) -> anyhow::Result<Outcome> {
        let prepared = self.work.join(PREPARED);
        let mut clock = std::time::Instant::now();
        let mut stages: Vec<(&'static str, f64)> = Vec::new();
        let mut lap = |name: &'static str| {
            stages.push((name, clock.elapsed().as_secs_f64()));
            clock = std::time::Instant::now();
        };
        let mut journal = Journal::open(&self.work)?;
        let extract = self.check_extract(&mut journal, &prepared)?;
        let facts = self.prepare(&prepared)?;
        self.unchanged(&extract)?;
        lap("prepare");
        eprintln!(
            "[1/5] prepared {} unique numbers from {} lines ({} invalid, {} duplicates) into {} file(s)",
            thousands(facts.unique),
            thousands(facts.lines),
            thousands(facts.invalid),
            thousands(facts.duplicates),
            facts.files.len()
        );
        if facts.files.is_empty() {
            bail!("the extract holds no valid NHS number: nothing to send");
        }
        let client = client_for(&self.settings)?;
        let rt = runtime()?;
        let sent = rt.block_on(send_with_progress(
            &client,
            &mut journal,
            std::slice::from_ref(&prepared),
        ))?;
        lap("send");
        eprintln!(
            "[2/5] sent {} file(s) ({} resumed, {} already sent earlier)",
            sent.sent, sent.resumed, sent.already_sent
        );
        let collected = rt.block_on(processor::transfer::collect(
            &client,
            &mut journal,
            &self.poll,
        ))?;
        lap("collect");
        describe_collect(&collected, &self.work);
        if !collected.complete {
            return Ok(Outcome::Waiting(collected));
        }
        eprintln!("[3/5] every file has its POS reply");

        let requests: Vec<PathBuf> = facts.files.iter().map(|f| prepared.join(f)).collect();
        let responses = self.results(&journal, &facts.files)?;
        let rec_dir = self.work.join(RECONCILED);
        remove_if_exists(&rec_dir)?;
        let lines = ScanOptions {
            format: Format::Lines,
            ..self.scan.clone()
        };
        let reconciled = reconcile(&requests, &responses, &lines, &rec_dir, &mut |_| {})?;
        lap("reconcile");
        let r = &reconciled.summary;
        eprintln!(
            "[4/5] reconciled: {} requested, {} returned, {} opted out",
            thousands(r.requested),
            thousands(r.returned),
            thousands(r.opted_out)
        );
        if r.unexpected > 0 {
            bail!(processor::Error::Usage(format!(
                "the POS returned {} numbers that were never sent (see {}); stopping before filtering",
                r.unexpected,
                rec_dir.display()
            )));
        }
        self.unchanged(&extract)?;
        remove_if_exists(&self.out)?;
        remove_if_exists(&processor::filter::default_rejects(&self.out))?;
        let bar = progress::bytes(
            "filter",
            processor::scan::total_len(std::slice::from_ref(&self.extract)),
        );
        let filtered = filter(
            &self.extract,
            &reconciled.returned,
            Some(&reconciled.requested),
            &self.scan,
            &self.out,
            &mut |d| bar.set_position(d),
        )?;
        bar.finish_and_clear();
        if let Err(e) = self.unchanged(&extract) {
            // changed while it was being filtered: the output mixes two files
            remove_if_exists(&self.out)?;
            remove_if_exists(&processor::filter::default_rejects(&self.out))?;
            return Err(e);
        }
        lap("filter");
        let c = &filtered.counts;
        eprintln!(
            "[5/5] wrote {}: kept {} of {} rows; dropped {} opted out, {} invalid, {} blank",
            self.out.display(),
            thousands(c.kept),
            thousands(c.rows),
            thousands(c.opted_out),
            thousands(c.invalid),
            thousands(c.blank)
        );
        let summary = RunSummary {
            stage_seconds: stages,
            prepare: facts,
            send: Some(sent),
            collect: collected,
            reconcile: reconciled.summary.clone(),
            filter: filtered,
        };
        processor::output::write_atomic(
            &self.work,
            RUN_JSON,
            &serde_json::to_vec_pretty(&summary)?,
        )?;
        Ok(Outcome::Done(Box::new((summary, reconciled))))
    }

    /// Checks, before anything is prepared or sent, that the extract is the file this work
    /// directory was started with, and returns its journaled identity. A work directory that
    /// has nothing prepared yet (no summary.json in `prepared`) starts afresh: the extract is
    /// journaled (a later record supersedes one from a run that stopped before finishing
    /// prepare). A journal without a record (written by an older ndop) cannot be checked: a
    /// warning, and the extract as it is now is recorded for the runs after this one.
    fn check_extract(&self, journal: &mut Journal, prepared: &Path) -> anyhow::Result<Extract> {
        let now = Extract::of(&self.extract)?;
        if !prepared.join(SUMMARY_JSON).exists() {
            journal.append(Entry::Extract(now.clone()))?;
            return Ok(now);
        }
        match journal.extract() {
            Some(recorded) => {
                let recorded = recorded.clone();
                self.compare(&recorded, &now)?;
                Ok(recorded)
            }
            None => {
                eprintln!(
                    "ndop run: warning: the journal in {} has no record of the extract (it was \
                     written by an older ndop), so {} cannot be checked to be the file prepared \
                     there; recording it now",
                    self.work.display(),
                    self.extract.display()
                );
                journal.append(Entry::Extract(now.clone()))?;
                Ok(now)
            }
        }
    }

    /// Fails if the extract is no longer the file `recorded` describes.
    fn unchanged(&self, recorded: &Extract) -> anyhow::Result<()> {
        self.compare(recorded, &Extract::of(&self.extract)?)
    }

    fn compare(&self, recorded: &Extract, now: &Extract) -> anyhow::Result<()> {
        let mut changes = recorded.changes(now);
        if changes.is_empty() {
            return Ok(());
        }
        if recorded.path != now.path {
            changes.insert(0, format!("given as {}, was {}", now.path, recorded.path));
        }
        bail!(processor::Error::ExtractChanged {
            path: self.extract.clone(),
            work: self.work.clone(),
            changes: changes.join("; "),
        })
    }

    /// Prepares into `dir` unless an earlier run finished doing so (its summary.json exists),
    /// in which case the same files are used again.
    fn prepare(&self, dir: &Path) -> anyhow::Result<PrepareFacts> {
        let summary_path = dir.join(SUMMARY_JSON);
        if summary_path.exists() {
            let bytes = std::fs::read(&summary_path)
                .with_context(|| format!("cannot read {}", summary_path.display()))?;
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not JSON", summary_path.display()))?;
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            let files = v["files"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|f| f["name"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            return Ok(PrepareFacts {
                lines: n("lines"),
                unique: n("unique"),
                duplicates: n("duplicates"),
                invalid: n("invalid"),
                blank: n("blank"),
                files,
            });
        }
        // No summary: nothing was sent from here yet (send needs it), so start afresh.
        remove_if_exists(dir)?;
        let settings_mailbox = self
            .settings
            .mailbox
            .clone()
            .ok_or_else(|| anyhow!("no MESH mailbox: give --mailbox or set NDOP_MAILBOX"))?;
        let env = match self.settings.env.as_deref() {
            Some("live") => Environment::Live,
            _ => Environment::Int,
        };
        let opts = PrepareOptions {
            scan: self.scan.clone(),
            dat: DatOptions {
                dir: dir.to_path_buf(),
                mailbox: processor::output::check_mailbox(&settings_mailbox)?,
                date: chrono::Local::now().date_naive(),
                seq: 1,
                env,
                tag: self.tag.clone(),
                line_ending: LineEnding::Crlf,
                max_bytes: 20_000_000_000,
                max_records: self.max_records,
            },
        };
        let bar = progress::bytes(
            "prepare",
            processor::scan::total_len(std::slice::from_ref(&self.extract)),
        );
        let s = prepare(std::slice::from_ref(&self.extract), &opts, &mut |d| {
            bar.set_position(d)
        })?;
        bar.finish_and_clear();
        eprint!("{}", describe_counts(&s.counts));
        Ok(PrepareFacts::from(&s))
    }

    /// The cleaned file the POS returned for each prepared file, in the same order.
    fn results(&self, journal: &Journal, files: &[String]) -> anyhow::Result<Vec<PathBuf>> {
        let mut out = Vec::with_capacity(files.len());
        for name in files {
            let sub = journal
                .submissions()
                .filter(|s| &s.file == name)
                .last()
                .ok_or_else(|| anyhow!("{name} was never sent"))?;
            let fin = journal
                .replies_to(&sub.local_id)
                .find(|r| r.is_final())
                .ok_or_else(|| anyhow!("{name} has no final reply"))?;
            match fin.reply {
                ReplyKind::Cleaned => out.push(self.work.join(&fin.file)),
                ReplyKind::InvalidNumbers => bail!(processor::Error::PosRejected {
                    path: self.work.join(&fin.file)
                }),
                ReplyKind::JobCreated => bail!(processor::Error::Usage(format!(
                    "the POS job for {name} failed (see {})",
                    self.work.join(&fin.file).display()
                ))),
                ReplyKind::Report => bail!(processor::Error::Usage(format!(
                    "{name} was not delivered: {} (see {})",
                    fin.status_description
                        .as_deref()
                        .unwrap_or("no reason given"),
                    self.work.join(&fin.file).display()
                ))),
            }
        }
        Ok(out)
    }
}

fn remove_if_exists(path: &Path) -> anyhow::Result<()> {
    let r = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    let [extract] = args.input.inputs.as_slice() else {
        bail!(processor::Error::Usage(
            "run takes exactly one extract".into()
        ));
    };
    let out = args.out.clone().unwrap_or_else(|| {
        let ext = extract
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("csv");
        args.work.join(format!("cleared.{ext}"))
    });
    let pipeline = Pipeline {
        extract: extract.clone(),
        scan: args.input.scan_options(),
        work: args.work.clone(),
        out,
        settings: args.mesh.settings()?,
        tag: args.tag.clone(),
        max_records: args.max_records,
        poll: args.poll.options()?,
    };
    match pipeline.run()? {
        Outcome::Done(done) => {
            print_json(&done.0)?;
            Ok(exit::OK)
        }
        Outcome::Waiting(report) => {
            print_json(&report)?;
            eprintln!("ndop run: replies still missing; run the same command again to resume");
            Ok(exit::POS)
        }
    }
}

/// The published test patients (`environment,nhs_number,opted_out`).
const TEST_PATIENTS: &str = include_str!("../../../../../testdata/test-patients.csv");

/// The INT test patients and whether each has an opt-out.
fn int_test_patients() -> Vec<(u64, bool)> {
    TEST_PATIENTS
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(',');
            let (env, n, o) = (f.next()?, f.next()?, f.next()?);
            (env == "int").then(|| Some((n.parse().ok()?, o == "yes")))?
        })
        .collect()
}

/// Writes the demo extract: `record_id,nhs_number,event_date,code`, rows in a shuffled order.
/// Returns the number of rows and the synthetic patients picked (one in ten) to have opted out.
fn write_sample(path: &Path, patients: u32) -> anyhow::Result<(u64, Vec<u64>)> {
    // SplitMix64: a fixed seed makes the same sample every time.
    let mut state = 20261123u64;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut numbers: Vec<String> = Vec::new();
    for (n, _) in int_test_patients() {
        for _ in 0..2 {
            numbers.push(n.to_string());
        }
    }
    let mut made = 0;
    let mut opted_out = Vec::new();
    while made < patients {
        let prefix = 999_000_000 + (next() % 1_000_000) as u32;
        let Some(check) = processor::nhs::check_digit_of_prefix(prefix) else {
            continue;
        };
        made += 1;
        let n = format!("{prefix}{check}");
        if next() % 10 == 0 {
            opted_out.push(prefix as u64 * 10 + check as u64);
        }
        for _ in 0..1 + next() % 4 {
            numbers.push(n.clone());
        }
    }
    // A few lines the POS would reject: a wrong check digit, too short, letters.
    numbers.extend(["9990000019".into(), "999123".into(), "99912X4567".into()]);
    for i in (1..numbers.len()).rev() {
        numbers.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    let mut text = String::from("record_id,nhs_number,event_date,code\r\n");
    for (i, n) in numbers.iter().enumerate() {
        let day = 1 + i % 28;
        text += &format!(
            "R{:06},{n},2026-10-{day:02},\"C{}, routine\"\r\n",
            i + 1,
            i % 97
        );
    }
    processor::output::create_private(path)?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok((numbers.len() as u64, opted_out))
}

pub fn demo(args: DemoArgs) -> anyhow::Result<u8> {
    let work = match args.work {
        Some(w) => {
            processor::output::ensure_empty_dir(&w)?;
            w
        }
        None => tempfile::Builder::new()
            .prefix("ndop-demo-")
            .tempdir()
            .context("cannot create a temporary directory")?
            .keep(),
    };
    let extract = work.join("extract.csv");
    let (rows, synthetic_opt_outs) = write_sample(&extract, args.patients)?;
    eprintln!(
        "ndop demo: sample extract {} ({} rows: the 20 INT test patients twice each, {} synthetic \
         patients with 1-4 rows each, 3 invalid rows)",
        extract.display(),
        thousands(rows),
        thousands(args.patients as u64)
    );

    // The mock MESH runs on its own threads so that the pipeline can block on it.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the mock MESH runtime")?;
    let mut config = mock_mesh::Config::default().with_store_dir(work.join("mesh-store"));
    config.pos.optout_numbers = synthetic_opt_outs.clone();
    let mesh = server_rt
        .block_on(mock_mesh::MockMesh::start(config))
        .context("cannot start the mock MESH")?;
    eprintln!(
        "ndop demo: mock MESH listening on {} (store {})",
        mesh.base_url(),
        work.join("mesh-store").display()
    );
    let settings = MeshSettings {
        env: Some(mesh.base_url()),
        mailbox: Some("X26ABC1".into()),
        password: Some(Secret::new("password")),
        shared_key: Some(Secret::new("TestKey")),
        ..MeshSettings::default()
    }
    .over(MeshSettings::defaults());
    let pipeline = Pipeline {
        extract: extract.clone(),
        scan: ScanOptions {
            format: Format::Csv(processor::csv::Column::Name("nhs_number".into())),
            ..ScanOptions::default()
        },
        work: work.clone(),
        out: work.join("cleared.csv"),
        settings,
        tag: Some("demo".into()),
        max_records: Some(400),
        poll: CollectOptions {
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(60),
        },
    };
    let outcome = pipeline.run();
    server_rt.block_on(mesh.stop());
    let Outcome::Done(done) = outcome? else {
        bail!("the mock POS did not answer within a minute");
    };
    let (summary, reconciled) = *done;

    // Check the answer: exactly the test patients the published table marks, and the synthetic
    // patients the mock POS was told about, are gone.
    let gone = |n: u64| reconciled.requested.contains(n) && !reconciled.returned.contains(n);
    let mut removed = Vec::new();
    let mut agrees = true;
    for (n, opted_out) in int_test_patients() {
        agrees &= gone(n) == opted_out;
        if gone(n) {
            removed.push(n.to_string());
        }
    }
    agrees &= synthetic_opt_outs.iter().all(|&n| gone(n));
    agrees &= summary.reconcile.opted_out == (removed.len() + synthetic_opt_outs.len()) as u64;
    let f = &summary.filter.counts;
    println!("ndop demo: done.");
    println!(
        "  sent        {} unique NHS numbers in {} file(s) over MESH to the POS mailbox X26OT154",
        thousands(summary.prepare.unique),
        summary.prepare.files.len()
    );
    println!(
        "  opted out   {} patients ({} of the 20 INT test patients: {})",
        thousands(summary.reconcile.opted_out),
        removed.len(),
        removed.join(" ")
    );
    println!(
        "  expected    the published table and the mock's synthetic opt-outs agree: {}",
        if agrees { "yes" } else { "NO" }
    );
    println!(
        "  extract     {} rows: kept {}, dropped {} opted out, {} invalid",
        thousands(f.rows),
        thousands(f.kept),
        thousands(f.opted_out),
        thousands(f.invalid)
    );
    println!("  files       {}", work.display());
    println!("                extract.csv            the sample extract");
    println!("                prepared/              the .dat + .ctl files sent, invalid.csv, summary.json");
    println!("                replies/               the POS replies as received");
    println!("                reconciled/            opted-out.txt, summary.json");
    println!("                cleared.csv            the extract without opted-out patients");
    println!("                run.json               everything above as JSON");
    Ok(if agrees { exit::OK } else { exit::POS })
}
