//! The `ndop run` pipeline: prepare, send, collect, reconcile, filter in one resumable go, in
//! the work directory. Sequencing, progress and printing only: what the journal, the replies
//! and the extract's identity mean is decided by `pos_client`.

use crate::args::client_for;
use crate::progress;
use crate::report::{describe_collect, describe_counts, thousands};
use crate::settings::MeshSettings;
use anyhow::{anyhow, bail, Context};
use mesh_client::MeshClient;
use pos_client::folder::{FolderCollectReport, FolderSendReport, Folders};
use pos_client::journal::{Entry, Extract, Journal};
use pos_client::{CollectOptions, CollectReport, KnownDigest, SendReport};
use processor::dat::{DatOptions, LineEnding};
use processor::filter::{filter_hashing, Durability, FilterSummary};
use processor::prepare::{prepare_keeping_set, PrepareOptions, Summary, SUMMARY_JSON};
use processor::reconcile::{
    reconcile_known, reconcile_with, requested_from, returned_from, ReconcileSummary, Reconciled,
};
use processor::scan::{Format, ScanOptions};
use processor::validate::Validated;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Prepared files, under the work directory.
const PREPARED: &str = "prepared";
/// Reconciliation output, under the work directory.
const RECONCILED: &str = "reconciled";
/// The run's summary, in the work directory.
pub(crate) const RUN_JSON: &str = "run.json";
/// How the run was asked to work ([`RunSettings`]), in the work directory.
pub(crate) const RUN_SETTINGS_JSON: &str = "run-settings.json";

/// Everything one pipeline run needs.
pub(crate) struct Pipeline {
    /// The extract (a regular file).
    pub extract: PathBuf,
    /// How to read it.
    pub scan: ScanOptions,
    /// The work directory.
    pub work: PathBuf,
    /// The filtered extract.
    pub out: PathBuf,
    /// How to reach MESH.
    pub settings: MeshSettings,
    /// Project tag for Subject and LocalId.
    pub tag: Option<String>,
    /// Most records in one `.dat`.
    pub max_records: Option<u64>,
    /// How to poll for the replies.
    pub poll: CollectOptions,
    /// Folder mode: the installed MESH client's folders instead of the MESH API.
    pub folders: Option<Folders>,
    /// The result as FHIR Consent resources, if asked for.
    pub consent: Option<crate::cmd::reconcile::ConsentArgs>,
}

/// The summary of a pipeline run (`run.json`).
#[derive(Debug, Serialize)]
pub(crate) struct RunSummary {
    /// Wall-clock seconds of each stage of this run (a resumed run skips finished work).
    pub stage_seconds: Vec<(&'static str, f64)>,
    /// When each stage of this run ended (RFC 3339, UTC). Absent from the run.json files of
    /// older versions.
    pub stage_ended: Vec<(&'static str, String)>,
    /// The CPU seconds (user and system, of every thread of the process) each stage of this
    /// run took: with `stage_seconds`, how much of a stage was ndop's own work and how much
    /// waiting (for the network, the POS, the disk). Absent from the run.json files of older
    /// versions.
    pub stage_cpu_seconds: Vec<(&'static str, StageCpu)>,
    /// What was prepared.
    pub prepare: PrepareFacts,
    /// What was sent.
    pub send: Option<SendReport>,
    /// What was handed to the MESH client and sent by it (folder mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folder_send: Option<FolderSendReport>,
    /// Folder mode's alerts: delay reports, Status ERROR, unreadable control files.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<String>,
    /// What was collected.
    pub collect: CollectReport,
    /// Who opted out.
    pub reconcile: ReconcileSummary,
    /// The filtered extract.
    pub filter: FilterSummary,
    /// The extract's SHA-256, taken during the run whenever a core was idle ([`IdleHash`]; for
    /// the report, which uses it while the file is unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extract_hash: Option<FileHash>,
    /// The filtered extract's SHA-256, taken as filter wrote it (likewise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_hash: Option<FileHash>,
    /// True when reconcile took the returned numbers gathered by collect's check of the
    /// replies (this run collected every reply), false when it read the reply files.
    pub returned_from_collect: bool,
}

/// CPU seconds used by the whole process (every thread), user and system, from `getrusage`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct StageCpu {
    /// User CPU seconds.
    pub user: f64,
    /// System CPU seconds.
    pub sys: f64,
}

impl StageCpu {
    /// The process's CPU time so far (zero if the kernel does not say).
    fn now() -> StageCpu {
        // SAFETY: `getrusage` writes a `rusage` into the zeroed one it is given and reads
        // nothing else.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
            return StageCpu::default();
        }
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        StageCpu {
            user: secs(u.ru_utime),
            sys: secs(u.ru_stime),
        }
    }

    /// The CPU time used between `earlier` and `self`.
    fn since(self, earlier: StageCpu) -> StageCpu {
        StageCpu {
            user: self.user - earlier.user,
            sys: self.sys - earlier.sys,
        }
    }
}

/// A file's SHA-256 taken during a run, with the identity (size, modification time, inode) the
/// file had before and after it was read: `ndop report` uses the hash instead of reading the
/// file again while the file still has that identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FileHash {
    /// The file, as it was while it was hashed.
    #[serde(flatten)]
    pub file: Extract,
    /// SHA-256 of its bytes (lower-case hex).
    pub sha256: String,
}

impl FileHash {
    /// The hash, if `now` is still the file that was hashed.
    pub(crate) fn of_same(&self, now: &Extract) -> Option<&str> {
        self.file
            .changes(now)
            .is_empty()
            .then_some(self.sha256.as_str())
    }
}

/// A file's SHA-256 ([`FileHash`]) taken on a thread that runs only when a core would otherwise
/// be idle (Linux's `SCHED_IDLE`), from the start of a run to its end: the extract is about
/// 1.3 GB at national scale, 1.7 s of one core, which taken in one go (during collect) competed
/// with the POS's job for the cores. [`IdleHash::finish`] carries on, on the calling thread and
/// at its priority, from the last piece the idle thread hashed: the thread is never waited for
/// (under load it may not run for a while).
struct IdleHash {
    /// The file.
    path: PathBuf,
    /// Its identity before it was read; `None` if it could not be had.
    before: Option<Extract>,
    /// How far the idle thread got: the hash state after the bytes it hashed, and whether
    /// those were the whole file. Taken (left `None`) by `finish`.
    reached: std::sync::Arc<std::sync::Mutex<Option<Reached>>>,
}

/// How far an [`IdleHash`] got.
struct Reached {
    /// SHA-256 of the first `bytes` bytes.
    hasher: sha2::Sha256,
    /// Bytes hashed.
    bytes: u64,
    /// True when they are the whole file (its end was read).
    whole: bool,
}

impl IdleHash {
    /// Starts hashing the file at `path`.
    fn start(path: &Path) -> IdleHash {
        use sha2::Digest;
        let reached = std::sync::Arc::new(std::sync::Mutex::new(Some(Reached {
            hasher: sha2::Sha256::new(),
            bytes: 0,
            whole: false,
        })));
        let before = Extract::of(path).ok();
        let (shared, owned) = (reached.clone(), path.to_path_buf());
        std::thread::spawn(move || {
            run_only_when_idle();
            let Ok(mut file) = std::fs::File::open(&owned) else {
                return;
            };
            // the next piece, from where the last one ended; stops once `finish` took over
            let mut step = |hasher: &sha2::Sha256, bytes: u64, whole: bool| match shared.lock() {
                Ok(mut at) if at.is_some() => {
                    let hasher = hasher.clone();
                    *at = Some(Reached {
                        hasher,
                        bytes,
                        whole,
                    });
                    true
                }
                _ => false,
            };
            let (mut hasher, mut bytes) = (sha2::Sha256::new(), 0);
            let _ = hash_on(&mut file, &mut hasher, &mut bytes, &mut step);
        });
        IdleHash {
            path: path.to_path_buf(),
            before,
            reached,
        }
    }

    /// The hash, finished on this thread if the idle thread had not; `None` if the file could
    /// not be read or changed since [`IdleHash::start`].
    fn finish(self) -> Option<FileHash> {
        use std::io::Seek;
        let before = self.before?;
        // taking it stops the idle thread (its next piece finds `None`)
        let Reached {
            mut hasher,
            mut bytes,
            whole,
        } = self.reached.lock().ok()?.take()?;
        if !whole {
            let mut file = std::fs::File::open(&self.path).ok()?;
            file.seek(std::io::SeekFrom::Start(bytes)).ok()?;
            hash_on(&mut file, &mut hasher, &mut bytes, &mut |_, _, _| true).ok()?;
        }
        let after = Extract::of(&self.path).ok()?;
        (before.changes(&after).is_empty() && bytes == after.bytes).then(|| FileHash {
            file: after,
            sha256: hex::encode(sha2::Digest::finalize(hasher)),
        })
    }
}

/// Hashes `file` from where it is to its end into `hasher` (`bytes`: bytes hashed so far, kept
/// up to date), in 1 MiB pieces. After each piece, and at the end (`true`), `step(hasher,
/// bytes, at_end)`: false stops early.
fn hash_on(
    file: &mut std::fs::File,
    hasher: &mut sha2::Sha256,
    bytes: &mut u64,
    step: &mut dyn FnMut(&sha2::Sha256, u64, bool) -> bool,
) -> std::io::Result<()> {
    use sha2::Digest;
    use std::io::Read;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => other?,
        };
        hasher.update(&buf[..n]);
        *bytes += n as u64;
        if !step(hasher, *bytes, n == 0) || n == 0 {
            return Ok(());
        }
    }
}

/// Asks Linux to run the calling thread only when a core would otherwise be idle
/// (`SCHED_IDLE`). A hint: where it cannot, the thread runs as before.
fn run_only_when_idle() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; the call reads `param` and changes only how that
        // thread is scheduled.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    }
}

/// The figures of a prepare that the rest of the run needs.
#[derive(Debug, Serialize)]
pub(crate) struct PrepareFacts {
    /// Data lines read.
    pub lines: u64,
    /// Distinct valid numbers.
    pub unique: u64,
    /// Valid lines whose number appeared earlier.
    pub duplicates: u64,
    /// Invalid lines.
    pub invalid: u64,
    /// Records that could not be read (broken CSV quoting).
    pub unparseable: u64,
    /// Blank lines.
    pub blank: u64,
    /// The `.dat` files written.
    pub files: Vec<String>,
}

impl From<&Summary> for PrepareFacts {
    fn from(s: &Summary) -> Self {
        PrepareFacts {
            lines: s.counts.lines,
            unique: s.counts.unique,
            duplicates: s.counts.duplicates,
            invalid: s.counts.invalid,
            unparseable: s.counts.unparseable,
            blank: s.counts.blank,
            files: s.files.iter().map(|f| f.name.clone()).collect(),
        }
    }
}

/// How a run was asked to read the extract and where to send it: written to
/// `run-settings.json` when each `ndop run` starts (so that a run that stops early still
/// leaves them for `ndop report`). No secret: the password, shared key and certificates are
/// never written. Work directories of older versions have no such file; every field has a
/// default so that the report reads what there is.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RunSettings {
    /// The ndop version that ran.
    pub ndop_version: String,
    /// When this run started (RFC 3339, UTC).
    pub started: String,
    /// The extract, as given.
    pub extract: String,
    /// The filtered extract.
    pub out: String,
    /// `csv` or `lines` (one number per line, the `.dat` form).
    pub format: String,
    /// The NHS number's column (a header name in quotes, or a 1-based position).
    pub column: Option<String>,
    /// Whether the CSV has a header row.
    pub header: bool,
    /// Lines skipped before the header.
    pub skip_lines: u64,
    /// The CSV delimiter asked for (none: from the file name).
    pub delimiter: Option<String>,
    /// Only ten bare digits accepted.
    pub strict: bool,
    /// Repdigits quarantined.
    pub reject_placeholders: bool,
    /// The MESH environment: `INT`, `LIVE`, or the base URL of another MESH (a mock).
    pub environment: String,
    /// Our mailbox.
    pub mailbox: Option<String>,
    /// The project tag.
    pub tag: Option<String>,
    /// Most records in one `.dat`.
    pub max_records: Option<u64>,
}

impl RunSettings {
    /// The settings of `p`, starting now.
    fn of(p: &Pipeline) -> RunSettings {
        let (format, column) = match &p.scan.format {
            Format::Lines => ("lines", None),
            Format::Csv(c) => ("csv", Some(c.to_string())),
        };
        RunSettings {
            ndop_version: env!("CARGO_PKG_VERSION").into(),
            started: pos_client::journal::now(),
            extract: p.extract.display().to_string(),
            out: p.out.display().to_string(),
            format: format.into(),
            column,
            header: p.scan.header,
            skip_lines: p.scan.skip_lines,
            delimiter: p.scan.delimiter.map(|d| d.name().into()),
            strict: p.scan.rules.strict,
            reject_placeholders: p.scan.rules.reject_placeholders,
            environment: match p.settings.environment() {
                Ok(mesh_client::Environment::Int) => "INT".into(),
                Ok(mesh_client::Environment::Live) => "LIVE".into(),
                Ok(mesh_client::Environment::Custom(url)) => without_userinfo(&url),
                Err(_) => p.settings.env.clone().unwrap_or_default(),
            },
            mailbox: p.settings.mailbox.clone(),
            tag: p.tag.clone(),
            max_records: p.max_records,
        }
    }
}

/// A URL without the `user:password@` part it may carry.
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// How the files reach the POS.
enum Via<'a> {
    /// An installed MESH client's folders.
    Folders(&'a Folders),
    /// The MESH API.
    Api(Box<MeshClient>),
}

/// Why a pipeline stopped before the end, when it is not an error of its own.
pub(crate) enum Outcome {
    /// Everything done: the summary, and the sets reconciled.
    Done(Box<(RunSummary, Reconciled)>),
    /// Replies still missing after the timeout.
    Waiting(CollectReport),
}

impl Pipeline {
    /// Runs (or resumes) the pipeline.
    pub(crate) fn run(&self) -> anyhow::Result<Outcome> {
        let prepared = self.work.join(PREPARED);
        let mut clock = std::time::Instant::now();
        let mut stages: Vec<(&'static str, f64)> = Vec::new();
        let mut ended: Vec<(&'static str, String)> = Vec::new();
        let mut cpu: Vec<(&'static str, StageCpu)> = Vec::new();
        let mut cpu_clock = StageCpu::now();
        let mut lap = |name: &'static str| {
            stages.push((name, clock.elapsed().as_secs_f64()));
            ended.push((name, pos_client::journal::now()));
            let cpu_now = StageCpu::now();
            cpu.push((name, cpu_now.since(cpu_clock)));
            cpu_clock = cpu_now;
            clock = std::time::Instant::now();
        };
        let mut journal = Journal::open(&self.work)?;
        processor::files::write_atomic(
            &self.work,
            RUN_SETTINGS_JSON,
            &serde_json::to_vec_pretty(&RunSettings::of(self))?,
        )?;
        let extract = self.check_extract(&mut journal, &prepared)?;
        // the report's hash of the extract, taken whenever a core would otherwise be idle
        let extract_hash = IdleHash::start(&self.extract);
        let (facts, just_prepared) = self.prepare(&prepared)?;
        let (prepared_set, known) = match just_prepared {
            Some((set, known)) => (Some(set), known),
            None => (None, Vec::new()),
        };
        self.unchanged(&extract)?;
        lap("prepare");
        eprintln!(
            "[1/5] prepared {} unique numbers from {} records ({} invalid, {} unparseable, {} \
             duplicates) into {} file(s)",
            thousands(facts.unique),
            thousands(facts.lines),
            thousands(facts.invalid),
            thousands(facts.unparseable),
            thousands(facts.duplicates),
            facts.files.len()
        );
        if facts.files.is_empty() {
            bail!("the extract holds no valid NHS number: nothing to send");
        }
        let requests: Vec<PathBuf> = facts.files.iter().map(|f| prepared.join(f)).collect();
        let lines = ScanOptions {
            format: Format::Lines,
            ..self.scan.clone()
        };
        let rt = runtime()?;
        let prepared_dirs = std::slice::from_ref(&prepared);
        let via = match &self.folders {
            Some(folders) => Via::Folders(folders),
            None => Via::Api(Box::new(client_for(&self.settings)?)),
        };
        let (sent, folder_sent) = match &via {
            Via::Folders(folders) => {
                let sent = rt.block_on(pos_client::folder::send(
                    folders,
                    &mut journal,
                    prepared_dirs,
                    self.settings.mailbox.as_deref(),
                    &self.poll,
                ))?;
                eprintln!(
                    "[2/5] the MESH client sent {} file(s) ({} handed to it now, {} sent earlier)",
                    sent.sent, sent.queued, sent.already_sent
                );
                (None, Some(sent))
            }
            Via::Api(client) => {
                let sent = rt.block_on(send_with_progress(
                    client,
                    &mut journal,
                    prepared_dirs,
                    &known,
                ))?;
                eprintln!(
                    "[2/5] sent {} file(s) ({} resumed, {} already sent earlier)",
                    sent.sent, sent.resumed, sent.already_sent
                );
                (Some(sent), None)
            }
        };
        lap("send");
        // the request side of reconcile: the set prepare just wrote the files from, or (a
        // resumed run) the files read while the POS works on them; and the report's hash of the
        // extract
        let requested = match prepared_set {
            Some(v) => std::thread::spawn(move || Ok(v)),
            None => read_requests(&requests, &lines),
        };
        // (the report's hash of the extract has been taken since the start, when a core was idle)
        let (collected, alerts) = match &via {
            Via::Folders(folders) => {
                let got = rt.block_on(folder_collect(folders, &mut journal, &self.poll))?;
                (got.report, got.alerts)
            }
            Via::Api(client) => (
                rt.block_on(pos_client::collect(client, &mut journal, &self.poll))?,
                Vec::new(),
            ),
        };
        lap("collect");
        describe_collect(&collected, &self.work);
        if !collected.complete {
            return Ok(Outcome::Waiting(collected));
        }
        eprintln!("[3/5] every file has its POS reply");

        let responses = pos_client::final_results(&journal, &self.work, &facts.files)?;
        let rec_dir = self.work.join(RECONCILED);
        remove_if_exists(&rec_dir)?;
        let requested = requested
            .join()
            .map_err(|_| anyhow!("reading the prepared files stopped unexpectedly"))??;
        // the result side: the numbers collect gathered as it checked the replies, when this run
        // collected them all; otherwise (a resumed run) the files are read
        let returned = returned_by_collect(&collected, &responses, &lines);
        let returned_from_collect = returned.is_some();
        let reconciled = match returned {
            Some(returned) => reconcile_known(requested, returned, &rec_dir)?,
            None => reconcile_with(requested, &responses, &lines, &rec_dir, &mut |_| {})?,
        };
        lap("reconcile");
        let r = &reconciled.summary;
        eprintln!(
            "[4/5] reconciled: {} requested, {} returned, {} opted out",
            thousands(r.requested),
            thousands(r.returned),
            thousands(r.opted_out)
        );
        if r.unexpected > 0 {
            bail!(pos_client::Error::BadAnswer(format!(
                "the POS returned {} numbers that were never sent (see {}); stopping before filtering",
                r.unexpected,
                rec_dir.display()
            )));
        }
        if let Some(c) = &self.consent {
            // a resumed run writes them again; only a file inside the work directory is ours
            if let Some(out) = c.consent_out.as_ref().filter(|p| p.starts_with(&self.work)) {
                remove_if_exists(out)?;
            }
            c.export(&reconciled, &responses, &lines)?;
        }
        self.unchanged(&extract)?;
        // filter writes OUT and its rejects report, and overwrites neither: a resumed run
        // that filters again removes both first
        remove_if_exists(&self.out)?;
        remove_if_exists(&processor::filter::default_rejects(&self.out))?;
        let bar = progress::bytes(
            "filter",
            processor::scan::total_len(std::slice::from_ref(&self.extract)),
        );
        // the report's hash of the output, taken as it is written
        let (filtered, hash) = filter_hashing(
            &self.extract,
            (&reconciled.returned, Some(&reconciled.requested)),
            &self.scan,
            (&self.out, &processor::filter::default_rejects(&self.out)),
            Durability::Synced,
            &mut |d| bar.set_position(d),
            true,
        )?;
        let output_hash = hash.and_then(|(sha256, bytes)| {
            let file = Extract::of(&self.out).ok().filter(|f| f.bytes == bytes)?;
            Some(FileHash { file, sha256 })
        });
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
            "[5/5] wrote {}: kept {} of {} rows; dropped {} opted out, {} invalid, {} \
             unparseable, {} blank (where each rejected record is: {})",
            self.out.display(),
            thousands(c.kept),
            thousands(c.rows),
            thousands(c.opted_out),
            thousands(c.invalid),
            thousands(c.unparseable),
            thousands(c.blank),
            filtered.rejects
        );
        let summary = RunSummary {
            stage_seconds: stages,
            stage_ended: ended,
            stage_cpu_seconds: cpu,
            prepare: facts,
            send: sent,
            folder_send: folder_sent,
            alerts,
            collect: collected,
            reconcile: reconciled.summary.clone(),
            filter: filtered,
            extract_hash: extract_hash.finish(),
            output_hash,
            returned_from_collect,
        };
        processor::files::write_atomic(
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
                recorded.verify(&now, &self.work)?;
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
        Ok(recorded.verify(&Extract::of(&self.extract)?, &self.work)?)
    }

    /// Prepares into `dir` unless an earlier run finished doing so (its summary.json exists),
    /// in which case the same files are used again. With the facts, when this call prepared:
    /// the request side of reconcile (prepare's own set of the numbers written, so that the
    /// files need not be read back) and the `.dat` files' SHA-256, lines and size as prepare
    /// wrote them (so that send need not read them for those); `None` when an earlier run did.
    fn prepare(&self, dir: &Path) -> anyhow::Result<(PrepareFacts, Option<JustPrepared>)> {
        let summary_path = dir.join(SUMMARY_JSON);
        if summary_path.exists() {
            return Ok((read_prepared(&summary_path)?, None));
        }
        // No summary: nothing was sent from here yet (send needs it), so start afresh.
        remove_if_exists(dir)?;
        let settings_mailbox = self
            .settings
            .mailbox
            .clone()
            .ok_or_else(|| anyhow!("no MESH mailbox: give --mailbox or set NDOP_MAILBOX"))?;
        let opts = PrepareOptions {
            scan: self.scan.clone(),
            dat: DatOptions {
                dir: dir.to_path_buf(),
                mailbox: processor::dat::check_mailbox(&settings_mailbox)?,
                date: chrono::Local::now().date_naive(),
                seq: 1,
                env: self.settings.pos_env()?,
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
        let (s, set) = prepare_keeping_set(std::slice::from_ref(&self.extract), &opts, &mut |d| {
            bar.set_position(d)
        })?;
        bar.finish_and_clear();
        eprint!("{}", describe_counts(&s.counts));
        let requested = requested_from(set, dir, &s.files, s.threads);
        let known = s
            .files
            .iter()
            .map(|f| KnownDigest {
                path: dir.join(&f.name),
                sha256: f.sha256.clone(),
                records: f.records,
                bytes: f.bytes,
            })
            .collect();
        Ok((PrepareFacts::from(&s), Some((requested, known))))
    }
}

/// What a prepare made in this process hands to the stages after it: the request side of
/// reconcile and the `.dat` files' SHA-256, lines and size as written.
type JustPrepared = (Validated, Vec<KnownDigest>);

/// The part of `prepared/summary.json` (written by `processor::prepare`) a resumed run needs.
#[derive(Deserialize)]
struct PreparedSummary {
    lines: u64,
    unique: u64,
    duplicates: u64,
    invalid: u64,
    /// Absent from summaries written before CSV records were read as RFC 4180.
    #[serde(default)]
    unparseable: u64,
    blank: u64,
    files: Vec<PreparedFile>,
}

/// One `.dat` in a [`PreparedSummary`].
#[derive(Deserialize)]
struct PreparedFile {
    name: String,
}

/// Reads the summary an earlier run's prepare wrote. A summary that does not parse, or lacks
/// a figure or the file list, is an input error naming the file: read as zeros, it would make
/// the run stop with a misleading "no valid NHS number".
fn read_prepared(path: &Path) -> processor::Result<PrepareFacts> {
    let s: PreparedSummary = read_json(path, "prepare summary")?
        .ok_or_else(|| processor::Error::read(path, std::io::ErrorKind::NotFound.into()))?;
    Ok(PrepareFacts {
        lines: s.lines,
        unique: s.unique,
        duplicates: s.duplicates,
        invalid: s.invalid,
        unparseable: s.unparseable,
        blank: s.blank,
        files: s.files.into_iter().map(|f| f.name).collect(),
    })
}

/// Parses the JSON file at `path` (a `what`, for the message); `None` if there is none. One
/// that does not parse is an input error naming the file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
) -> processor::Result<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(processor::Error::read(path, e)),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        let reason = format!("malformed {what}: {e}");
        processor::Error::read(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, reason),
        )
    })
}

/// Removes a file or a directory tree, if it exists.
pub(crate) fn remove_if_exists(path: &Path) -> anyhow::Result<()> {
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

/// The result side of reconcile from the numbers `collected` gathered as it checked the replies
/// (`responses`, the final replies in the order of the prepared files), when it gathered them
/// for every one of them; `None` (read the files) otherwise.
fn returned_by_collect(
    collected: &CollectReport,
    responses: &[PathBuf],
    lines: &ScanOptions,
) -> Option<Validated> {
    let mut gathered = Vec::with_capacity(responses.len());
    let mut every = true;
    for path in responses {
        let numbers = collected
            .replies
            .iter()
            .find(|r| &r.path == path && !r.duplicate)
            .and_then(|r| r.numbers.take());
        match numbers {
            Some(n) => gathered.push((path.clone(), n)),
            None => every = false,
        }
    }
    // the numbers not used (a duplicate delivery's; all of them when one reply has none) are
    // not kept through filter
    for r in &collected.replies {
        drop(r.numbers.take());
    }
    if !every {
        return None;
    }
    returned_from(gathered, lines)
}

/// Reads the numbers of the prepared files (`requests`) on a thread of its own: the request side
/// of reconcile, read while the POS works on them rather than after its replies arrive.
fn read_requests(
    requests: &[PathBuf],
    lines: &ScanOptions,
) -> std::thread::JoinHandle<processor::Result<processor::validate::Validated>> {
    let (requests, lines) = (requests.to_vec(), lines.clone());
    std::thread::spawn(move || {
        processor::reconcile::read_numbers(&requests, "request", &lines, &mut |_| {})
    })
}

/// A single-threaded runtime: the transfers are I/O-bound and sequential.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Sends with a progress bar.
pub(crate) async fn send_with_progress(
    client: &MeshClient,
    journal: &mut Journal,
    inputs: &[PathBuf],
    known: &[KnownDigest],
) -> Result<SendReport, pos_client::Error> {
    let bar = progress::bytes("send", Some(0));
    let shown = bar.clone();
    let report = pos_client::send_known(client, journal, inputs, known, &move |sent, total| {
        shown.set_length(total);
        shown.set_position(sent);
    })
    .await;
    bar.finish_and_clear();
    report
}

/// Folder mode's collect: waits for the MESH client to send what was handed to it (a refusal
/// is an error), then collects from IN; alerts go to standard error, and pairs still in OUT
/// count as pending.
pub(crate) async fn folder_collect(
    folders: &Folders,
    journal: &mut Journal,
    opts: &CollectOptions,
) -> Result<FolderCollectReport, pos_client::Error> {
    let confirmed = pos_client::folder::confirm(folders, journal, opts).await?;
    let mut got = pos_client::folder::collect(folders, journal, opts).await?;
    for alert in &got.alerts {
        eprintln!("ndop: ALERT: {alert}");
    }
    if !confirmed.waiting.is_empty() {
        eprintln!(
            "ndop: {} file(s) still in {} : is the MESH client running?",
            confirmed.waiting.len(),
            folders.outbox.display()
        );
        got.report.pending.extend(confirmed.waiting);
        got.report.complete = false;
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mesh_url_is_recorded_without_credentials() {
        assert_eq!(
            without_userinfo("https://u:p@mesh.example:443/x"),
            "https://mesh.example:443/x"
        );
        assert_eq!(
            without_userinfo("http://127.0.0.1:8700"),
            "http://127.0.0.1:8700"
        );
        assert_eq!(without_userinfo("http://h/a@b"), "http://h/a@b");
        assert_eq!(without_userinfo("int"), "int");
    }
}
