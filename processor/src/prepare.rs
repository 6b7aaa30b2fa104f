//! `prepare`: validate and de-duplicate the inputs, then write POS-ready `.dat` + `.ctl` pairs,
//! `invalid.csv` and `summary.json` into a new or empty directory.
//!
//! If anything fails after the directory was checked, every file this run created there is
//! removed again: a failed run leaves no partial `.dat` behind.

use crate::dat::{write_dat_files_by, DatFile, DatOptions, DatWrite};
use crate::error::{Error, Result};
use crate::files::{ensure_empty_dir, write_atomic};
use crate::scan::ScanOptions;
use crate::seen::NumberSet;
use crate::validate::{validate_report_later, Counts, InputSummary};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// Options of a `prepare` run.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// How to read the inputs.
    pub scan: ScanOptions,
    /// How to write the outputs (its `dir` is the output directory).
    pub dat: DatOptions,
}

/// `summary.json`: the counts (flattened), the files written and the inputs read.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The bucket counts.
    #[serde(flatten)]
    pub counts: Counts,
    /// `.dat` files written, in order.
    pub files: Vec<DatFile>,
    /// Inputs read, in order.
    pub inputs: Vec<InputSummary>,
    /// The POS mailbox the `.ctl` files address.
    pub to_dts: String,
    /// Worker threads used.
    pub threads: usize,
    /// Wall-clock seconds for the whole run.
    pub elapsed_seconds: f64,
}

/// `invalid.csv` rows written at a time in the `.dat` writing's spare time: 10–25 µs (the
/// national benchmark file's 500,000 rows took 0.17 s of one core), so that a turn still
/// going when the hash of a wave of slices ends (about 10 ms for a dense wave) holds up the
/// next wave's hash little.
const ROWS_A_TURN: usize = 64;

/// File name of the quarantine report.
pub const INVALID_CSV: &str = "invalid.csv";
/// File name of the machine-readable summary.
pub const SUMMARY_JSON: &str = "summary.json";

/// Runs `prepare`. `progress` is called with the input bytes done so far.
pub fn prepare(
    inputs: &[PathBuf],
    opts: &PrepareOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<Summary> {
    prepare_by(inputs, opts, progress, DatWrite::Direct).map(|(summary, _)| summary)
}

/// [`prepare`], also returning the set of the numbers written to the `.dat` files: the request
/// side of a later reconciliation, without reading the files back
/// ([`crate::reconcile::requested_from`]). For a run that sends the files at once: they are
/// written through the page cache ([`DatWrite::Cached`]), where the send reads them.
pub fn prepare_keeping_set(
    inputs: &[PathBuf],
    opts: &PrepareOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<(Summary, NumberSet)> {
    prepare_by(inputs, opts, progress, DatWrite::Cached)
}

/// [`prepare_keeping_set`], the `.dat` bytes written as `how` says.
fn prepare_by(
    inputs: &[PathBuf],
    opts: &PrepareOptions,
    progress: &mut dyn FnMut(u64),
    how: DatWrite,
) -> Result<(Summary, NumberSet)> {
    let start = Instant::now();
    let dir = &opts.dat.dir;
    ensure_empty_dir(dir)?;
    let mut created: Vec<PathBuf> = Vec::new();
    let result = (|| {
        let invalid_csv = dir.join(INVALID_CSV);
        created.push(invalid_csv.clone());
        // invalid.csv's rows wait (up to a bound) while every core scans, and are written in
        // the time the `.dat` hashing leaves spare; the file is synced after the `.dat` files
        // are written: its writeback runs meanwhile.
        let (v, mut report) = validate_report_later(inputs, &opts.scan, &invalid_csv, progress)?;
        // The `.dat` files are written by as many threads as validation used.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(v.threads)
            .thread_name(|i| format!("ndop-writer-{i}"))
            .build()
            .map_err(|e| Error::Usage(format!("cannot start worker threads: {e}")))?;
        let mut rows = || report.write_some(ROWS_A_TURN);
        let set = (&v.set, v.counts.unique);
        let files =
            pool.install(|| write_dat_files_by(set, &opts.dat, &mut created, how, &mut rows))?;
        report.finish()?.sync()?;
        let summary = Summary {
            counts: v.counts,
            files,
            inputs: v.inputs,
            to_dts: opts.dat.env.pos_mailbox().to_string(),
            threads: v.threads,
            elapsed_seconds: start.elapsed().as_secs_f64(),
        };
        let json = serde_json::to_vec_pretty(&summary).expect("summary serialises");
        created.push(dir.join(format!(".{SUMMARY_JSON}.tmp")));
        created.push(write_atomic(dir, SUMMARY_JSON, &json)?);
        Ok((summary, v.set))
    })();
    if result.is_err() {
        for path in &created {
            let _ = std::fs::remove_file(path);
        }
    }
    result
}
