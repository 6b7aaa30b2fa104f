//! Validation and de-duplication: every input record counted into exactly one bucket.
//!
//! A record is a line of a one-number-per-line file, or a CSV record (which may span lines).
//! Buckets: blank, unparseable (the record itself is broken: [`Reason::is_unparseable`]),
//! invalid (its NHS number is not valid; one [`Reason`] each), or valid; valid records are
//! either the first occurrence of their number (unique) or a duplicate. So
//! `lines = valid + invalid + blank + unparseable` and `valid = unique + duplicates`, which
//! [`Counts::check`] asserts. Invalid and unparseable records go to `invalid.csv` with their
//! file, record number (1-based, data records only), starting physical line (1-based, header
//! and skipped lines included), reason and raw value.

use crate::csv::{escaped, push_report_row};
use crate::error::{Error, Result};
use crate::files::create_private;
use crate::nhs::{Field, Reason};
use crate::scan::{Engine, Event, LineParser, ScanOptions, Span, Spanned};
use crate::seen::{Inserter, NumberSet, Partitioned};
use crate::swar::{FastLine, Four, Take};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Mutex;

/// Longest raw value copied into `invalid.csv` (longer values are cut).
pub const VALUE_MAX: usize = 256;

/// Distinct numbers after which one-number-per-line blocks stop inserting into the set
/// themselves and hand their prefixes to the ordering thread instead (see [`tally`]): by then
/// a set spread over the range no longer fits in the cache. The 999 test range holds at most
/// 909,091 valid numbers (in 122 KiB of map, always cache-resident): its files never get here
/// and keep the cheaper direct inserts. (`tests/national.rs`'s 2M distinct numbers do.)
const DEFER_AFTER: u64 = 1 << 20;

/// The counts of a run; the buckets add up (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Data records read: lines of a one-number-per-line file, CSV records (a CSV record may
    /// span lines; header rows and skipped lines are not data records, see `headers`).
    pub lines: u64,
    /// Lines holding a valid NHS number.
    pub valid: u64,
    /// Distinct valid numbers.
    pub unique: u64,
    /// Valid lines whose number appeared earlier (in any input).
    pub duplicates: u64,
    /// Records quarantined because their NHS number is not valid.
    pub invalid: u64,
    /// Records quarantined because they cannot be read (broken quoting, over-long lines).
    pub unparseable: u64,
    /// Lines with nothing but whitespace (and, for `.dat` lines, a lone comma).
    pub blank: u64,
    /// Valid lines that needed whitespace trimmed or 3-3-4 separators removed.
    pub normalised: u64,
    /// Valid lines holding a repdigit such as `9999999999` (kept unless rejected).
    pub placeholder: u64,
    /// CSV header rows read (one per non-empty CSV input).
    pub headers: u64,
    /// Invalid records by reason.
    pub invalid_by_reason: BTreeMap<&'static str, u64>,
    /// Unparseable records by reason.
    pub unparseable_by_reason: BTreeMap<&'static str, u64>,
}

impl Counts {
    /// Checks the bucket invariants.
    pub fn check(&self) -> bool {
        self.lines == self.valid + self.invalid + self.blank + self.unparseable
            && self.valid == self.unique + self.duplicates
            && self.invalid == self.invalid_by_reason.values().sum::<u64>()
            && self.unparseable == self.unparseable_by_reason.values().sum::<u64>()
    }

    fn add(&mut self, t: &Tally) {
        self.lines += t.lines;
        self.valid += t.valid;
        self.duplicates += t.duplicates;
        self.blank += t.blank;
        self.normalised += t.normalised;
        self.placeholder += t.placeholder;
        add_reasons(
            &t.invalid,
            (&mut self.invalid, &mut self.invalid_by_reason),
            (&mut self.unparseable, &mut self.unparseable_by_reason),
        );
    }
}

/// Adds counts by reason (indexed as [`Reason::ALL`]) to the invalid or the unparseable
/// total and map, as each reason belongs.
pub(crate) fn add_reasons(
    by_reason: &[u64; Reason::ALL.len()],
    invalid: (&mut u64, &mut BTreeMap<&'static str, u64>),
    unparseable: (&mut u64, &mut BTreeMap<&'static str, u64>),
) {
    for r in Reason::ALL {
        let n = by_reason[r.index()];
        if n > 0 {
            let (total, map) = if r.is_unparseable() {
                (&mut *unparseable.0, &mut *unparseable.1)
            } else {
                (&mut *invalid.0, &mut *invalid.1)
            };
            *total += n;
            *map.entry(r.as_str()).or_default() += n;
        }
    }
}

/// One quarantined record of a block.
struct BadLine {
    /// Records of the block before it.
    record: u64,
    /// Physical lines of the block before it.
    line: u64,
    reason: Reason,
    start: usize,
    len: usize,
}

/// What one block contributed.
#[derive(Default)]
struct Tally {
    lines: u64,
    valid: u64,
    duplicates: u64,
    blank: u64,
    normalised: u64,
    placeholder: u64,
    invalid: [u64; Reason::ALL.len()],
    bad: Vec<BadLine>,
    values: Vec<u8>,
    /// Deferred (see [`tally`]): the valid numbers' prefixes, partitioned, for the ordering
    /// thread to insert.
    prefixes: Partitioned,
    span: Span,
}

impl Spanned for Tally {
    fn span(&self) -> Span {
        self.span
    }
}

/// Counts one block, inserting its valid numbers into `set` in one of two ways.
///
/// - **In the block** (`defer` none): the worker inserts as it goes, through an [`Inserter`]
///   (which overlaps the cache misses of a set too big for the cache) with a locked write for
///   each new member, since the other workers insert into the same set at the same time. Best
///   while the set is small and stays in the cache: no extra pass, no extra memory.
/// - **Deferred** (`defer` holds the spare buffers): the block lists its valid numbers'
///   prefixes, partitioned by bucket ([`Partitioned`]); the ordering thread gathers them in
///   batches ([`Batch`]), which the pool's workers insert with plain writes, each worker on
///   its own buckets, between deferred blocks. Best once the set is big (a national
///   extract): the workers no longer wait on the set's cache misses nor take a locked write
///   per new member, and the batches are inserted bucket by bucket, each bucket's part of the
///   map in L2.
///
/// A CSV block is always deferred: it may be a guess the engine throws away (see
/// [`crate::scan`]), so it must leave `set` alone. [`validate`] switches lines from the first
/// way to the second once the set holds [`DEFER_AFTER`] numbers.
fn tally(
    parser: &LineParser,
    set: &NumberSet,
    keep_bad: bool,
    defer: Option<&Spare>,
    block: &[u8],
    at_eof: bool,
) -> Tally {
    if parser.is_csv() {
        // The CSV walk compiled for the CPU's mask kernel (see `csv::for_cpu`).
        return crate::csv::for_cpu(
            #[inline(always)]
            || tally_walk::<true>(parser, set, keep_bad, defer, block, at_eof),
        );
    }
    // The line walk compiled for the CPU's fast-line kernel (see `swar::for_cpu`).
    crate::swar::for_cpu(
        #[inline(always)]
        || {
            if defer.is_some() {
                tally_walk::<true>(parser, set, keep_bad, defer, block, at_eof)
            } else {
                tally_walk::<false>(parser, set, keep_bad, None, block, at_eof)
            }
        },
    )
}

/// [`tally`]'s walk; `DEFER`: list the prefixes instead of inserting them.
#[inline(always)]
fn tally_walk<const DEFER: bool>(
    parser: &LineParser,
    set: &NumberSet,
    keep_bad: bool,
    spare: Option<&Spare>,
    block: &[u8],
    at_eof: bool,
) -> Tally {
    let mut t = Tally::default();
    // The deferred prefixes; a local, like the fast path's counters, apart from `t` and the
    // inserter's ring, so that they can live in registers.
    let mut prefixes = spare.map(Spare::take).unwrap_or_default();
    if DEFER && !parser.is_csv() {
        // At most one number per 11 bytes (ten digits and a line break): no regrowth.
        prefixes.reserve(block.len() / 11 + 1);
    }
    let mut fast = FastTally::<DEFER> {
        prefixes: &mut prefixes,
        inserter: Inserter::new(set),
        lines: 0,
        placeholders: 0,
        duplicates: 0,
    };
    let mut walk = parser.walk(block, at_eof);
    loop {
        walk.fast_lines_into(&mut fast);
        // CSV (deferred: the ordering thread inserts the prefixes).
        walk.fast_records(
            #[inline(always)]
            |l, _| {
                fast.prefixes.push(l.prefix);
                fast.lines += 1;
                fast.placeholders += l.placeholder as u64;
            },
        );
        let Some((field, value, _)) = walk.next_other() else {
            break;
        };
        match field {
            Field::Blank => t.blank += 1,
            Field::Valid {
                number,
                normalised,
                placeholder,
            } => {
                t.valid += 1;
                t.normalised += normalised as u64;
                t.placeholder += placeholder as u64;
                if DEFER {
                    fast.prefixes.push((number / 10) as u32);
                } else if !set.insert(number) {
                    t.duplicates += 1;
                }
            }
            Field::Invalid(reason) => {
                t.invalid[reason.index()] += 1;
                if keep_bad {
                    let value = &value[..value.len().min(VALUE_MAX)];
                    let record = t.lines + fast.lines;
                    t.bad.push(BadLine {
                        record,
                        line: walk.record_line().unwrap_or(record),
                        reason,
                        start: t.values.len(),
                        len: value.len(),
                    });
                    t.values.extend_from_slice(value);
                }
            }
        }
        t.lines += 1;
    }
    let FastTally {
        inserter,
        lines,
        placeholders,
        duplicates,
        ..
    } = fast;
    t.lines += lines;
    t.valid += lines;
    t.placeholder += placeholders;
    t.duplicates += inserter.finish(lines, duplicates);
    if DEFER {
        let room = spare.map(Spare::take).unwrap_or_default();
        t.prefixes = Partitioned::new_in(&prefixes, room);
        if let Some(spare) = spare {
            spare.give(prefixes);
        }
    }
    t.span = walk.span(t.lines);
    t
}

/// What [`tally_walk`] counts of the lines the fast path takes, and where their numbers go:
/// `DEFER`, listed in `prefixes`; else inserted through `inserter`.
struct FastTally<'t, 's, const DEFER: bool> {
    prefixes: &'t mut Vec<u32>,
    inserter: Inserter<'s>,
    lines: u64,
    placeholders: u64,
    /// Duplicates found by the inserter so far.
    duplicates: u64,
}

impl<'b, const DEFER: bool> Take<'b> for FastTally<'_, '_, DEFER> {
    #[inline(always)]
    fn one(&mut self, l: FastLine, _: &'b [u8]) {
        if DEFER {
            self.prefixes.push(l.prefix);
        } else {
            self.duplicates += self.inserter.push(self.lines, l.prefix);
        }
        self.lines += 1;
        self.placeholders += l.placeholder as u64;
    }

    /// Deferred, the four prefixes are copied at once.
    #[inline(always)]
    fn four(&mut self, four: Four<'b>) {
        if DEFER {
            self.prefixes.extend_from_slice(&four.prefixes);
            self.lines += 4;
            self.placeholders += u64::from(four.placeholders.count_ones());
        } else {
            for i in 0..4 {
                self.one(four.line(i), &[]);
            }
        }
    }
}

/// Prefixes the ordering thread gathers from deferred blocks before inserting them, bucket
/// by bucket ([`NumberSet::insert_alone_parallel`]): the more there are, the more of them
/// each cache line of the map brought in serves (on the national file 16 Mi prefixes over
/// England's 37.5 MiB of map are about 27 a line; each bucket's 4,096 lines come from L3 or
/// memory once a batch). 64 MiB of memory; 8 Mi measured a quarter more insertion time.
const BATCH: usize = 1 << 24;

/// Prefix buffers handed back after their batch was inserted, for the workers' next deferred
/// blocks: a block's list is about 600 KiB, and a fresh one is fresh pages to fault in.
#[derive(Default)]
struct Spare(Mutex<Vec<Vec<u32>>>);

impl Spare {
    /// Buffers kept at most (more than one batch holds: [`BATCH`] over a 2 MiB block's
    /// ~160k prefixes is about 105 lists).
    const KEEP: usize = 128;

    /// A buffer (empty), reused if one is spare.
    fn take(&self) -> Vec<u32> {
        let reused = self.0.lock().ok().and_then(|mut s| s.pop());
        reused.unwrap_or_default()
    }

    /// Hands a buffer back for reuse.
    fn give(&self, mut buffer: Vec<u32>) {
        buffer.clear();
        if let Ok(mut s) = self.0.lock() {
            if s.len() < Self::KEEP && buffer.capacity() > 0 {
                s.push(buffer);
            }
        }
    }
}

/// Where a [`Batch`] goes: the set, the pool that inserts it, the blocks that may still
/// insert by themselves, and the spare buffers its lists go back to; and the prefixes a batch
/// gathers before it is inserted ([`BATCH`]; the tests try a few).
#[derive(Clone, Copy)]
struct Target<'a> {
    batch: usize,
    set: &'a NumberSet,
    engine: &'a Engine,
    writers: &'a Writers,
    spare: &'a Spare,
}

/// Deferred blocks' prefixes not inserted yet.
#[derive(Default)]
struct Batch {
    lists: Vec<Partitioned>,
    prefixes: usize,
}

impl Batch {
    /// Adds a deferred block's prefixes; inserts the batch once it is full. Returns the
    /// duplicates among the prefixes inserted.
    ///
    /// No worker inserts by itself meanwhile (the ordering thread waits for [`Writers`] to be
    /// none first), so the set is written with plain stores.
    fn add(&mut self, into: Target<'_>, list: Partitioned) -> u64 {
        if list.len() == 0 {
            return 0;
        }
        self.prefixes += list.len();
        self.lists.push(list);
        if self.prefixes < into.batch {
            return 0;
        }
        self.insert(into)
    }

    /// Inserts what is gathered, handing the buffers back to the spares; returns the
    /// duplicates among it.
    ///
    /// The engine's workers insert it, each on its own runs of buckets
    /// ([`NumberSet::insert_alone_parallel`]), while the ordering thread waits: the job joins
    /// the pool's queue behind the blocks in flight (deferred blocks, which only list their
    /// prefixes), so the batch goes in on every core, and no third thread shares the cores
    /// with the workers' scan (before, the ordering thread inserted alone beside them: the
    /// cores were oversubscribed while it did, and idle once the blocks in flight were done).
    fn insert(&mut self, into: Target<'_>) -> u64 {
        into.writers.wait_for_none();
        let duplicates = into
            .engine
            .install(|| into.set.insert_alone_parallel(&self.lists));
        self.recycle(into.spare);
        duplicates
    }

    /// Hands the buffers back to `spare` and empties the batch.
    fn recycle(&mut self, spare: &Spare) {
        for list in self.lists.drain(..) {
            spare.give(list.into_room());
        }
        self.prefixes = 0;
    }
}

/// Which of a `.dat` input's blocks insert into the set themselves: none once the ordering
/// thread has switched them to deferring and the blocks that started before the switch have
/// ended. A block counts itself in before it reads the switch (and out when it ends, even by
/// a panic); the ordering thread sets the switch before it waits for the count to reach
/// zero. Both sequentially consistent: either the block sees the switch and defers, or the
/// ordering thread sees the block and waits for it. So no plain-store batch insert ever runs
/// beside a worker's locked inserts, whatever order the pool runs blocks in.
#[derive(Default)]
struct Writers {
    deferring: AtomicBool,
    inserting: AtomicUsize,
}

/// A block counted in [`Writers`]' inserting blocks while it inserts.
struct Inserting<'a>(&'a AtomicUsize);

impl Drop for Inserting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

impl Writers {
    /// Called by a line block's worker as it starts: `None` when the block must defer, else a
    /// guard that counts it as inserting until dropped.
    fn start(&self) -> Option<Inserting<'_>> {
        self.inserting.fetch_add(1, SeqCst);
        let guard = Inserting(&self.inserting);
        if self.deferring.load(SeqCst) {
            return None;
        }
        Some(guard)
    }

    /// Switches the blocks that start from now on to deferring (ordering thread).
    fn defer_from_now(&self) {
        self.deferring.store(true, SeqCst);
    }

    /// Switches to deferring if not yet done, then waits until no block inserts by itself
    /// (ordering thread, before a plain-store insert). Only blocks that started before the
    /// switch can still count, so the wait is short and happens at the switch only.
    fn wait_for_none(&self) {
        self.defer_from_now();
        while self.inserting.load(SeqCst) != 0 {
            std::thread::yield_now();
        }
    }
}

/// Per-input figures for the summary.
#[derive(Debug, Clone, Serialize)]
pub struct InputSummary {
    /// The path as given (`-` for standard input).
    pub path: String,
    /// Data records.
    pub lines: u64,
    /// Data records quarantined as invalid or unparseable.
    pub invalid: u64,
    /// Bytes read (after the header row, if any; decompressed).
    pub bytes: u64,
    /// `gzip` when the input was decompressed, else `none`.
    pub compression: &'static str,
    /// The CSV delimiter (`comma`, `tab`, `semicolon`, `pipe`); absent for `.dat` lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<&'static str>,
    /// Physical lines skipped before the header (`--skip-lines`).
    pub skipped_lines: u64,
}

/// The result of validating a set of inputs.
pub struct Validated {
    /// The counts.
    pub counts: Counts,
    /// Per input.
    pub inputs: Vec<InputSummary>,
    /// The distinct valid numbers.
    pub set: NumberSet,
    /// Worker threads used.
    pub threads: usize,
}

/// The summary of a validation as `ndop validate` prints it and writes it to `summary.json`:
/// the [`Counts`], the per-input figures, the threads and the wall-clock seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary<'a> {
    /// The counts (their keys at the top level).
    #[serde(flatten)]
    pub counts: &'a Counts,
    /// Per input.
    pub inputs: &'a [InputSummary],
    /// Worker threads used.
    pub threads: usize,
    /// Wall-clock seconds.
    pub elapsed_seconds: f64,
}

/// Reads every input once, counting, de-duplicating into a fresh [`NumberSet`] and, when
/// `invalid_csv` is given, writing the quarantined lines there (mode 0600).
/// `progress` is called with the bytes done so far.
pub fn validate(
    inputs: &[PathBuf],
    opts: &ScanOptions,
    invalid_csv: Option<&Path>,
    progress: &mut dyn FnMut(u64),
) -> Result<Validated> {
    let mut report = invalid_csv.map(|p| InvalidCsv::create(p, 0)).transpose()?;
    let v = validate_deferring(
        inputs,
        opts,
        report.as_mut(),
        progress,
        (DEFER_AFTER, BATCH),
    )?;
    if let Some(r) = report {
        r.finish()?.sync()?;
    }
    Ok(v)
}

/// Bytes of `invalid.csv` written at a time.
const INVALID_BUFFER: usize = 1 << 20;

/// Memory the quarantined rows of `prepare`'s `invalid.csv` may hold while they wait to be
/// written ([`validate_report_later`]). The national benchmark file's 500,000 rows take about
/// 30 MiB; beyond this, the oldest are written as blocks come in, as `validate` writes them.
const ROWS_WAITING: usize = 48 << 20;

/// [`validate`] with its `invalid.csv` report, left for the caller to finish: up to
/// [`ROWS_WAITING`] bytes of the report's rows wait in memory instead of being written on the
/// ordering thread while every core scans, and `prepare` writes them in the time its `.dat`
/// writing leaves spare ([`InvalidCsv::write_some`]), then finishes and syncs the file once
/// the `.dat` files are written, so that the sync finds the data on disk already.
pub(crate) fn validate_report_later(
    inputs: &[PathBuf],
    opts: &ScanOptions,
    invalid_csv: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(Validated, InvalidCsv)> {
    // Rows wait only when the `.dat` writing will have a thread to spare beside the hash: with
    // one worker, they are written on the ordering thread as they come, beside it.
    let wait = if opts.threads == 1 { 0 } else { ROWS_WAITING };
    let mut report = InvalidCsv::create(invalid_csv, wait)?;
    let v = validate_deferring(
        inputs,
        opts,
        Some(&mut report),
        progress,
        (DEFER_AFTER, BATCH),
    )?;
    Ok((v, report))
}

/// A written file whose `fsync` is still to come.
pub(crate) struct Unsynced {
    path: PathBuf,
    file: std::fs::File,
}

impl Unsynced {
    /// Syncs the file.
    pub(crate) fn sync(self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::write(&self.path, e))
    }
}

/// [`validate`] into `report` (left for the caller to finish), with line blocks deferring their prefixes once the set holds
/// `defer_after` numbers (the tests try 0, a few and never), inserted in batches of `batch`
/// prefixes (the tests try a few, so that batches go in while blocks are still scanned).
fn validate_deferring(
    inputs: &[PathBuf],
    opts: &ScanOptions,
    mut report: Option<&mut InvalidCsv>,
    progress: &mut dyn FnMut(u64),
    (defer_after, batch_size): (u64, usize),
) -> Result<Validated> {
    let engine = Engine::new(opts)?;
    let set = NumberSet::new();
    let mut counts = Counts::default();
    let mut per_input: Vec<InputSummary> = Vec::new();
    let keep_bad = report.is_some();
    // Switched on by this (the ordering) thread once the set is big; read by the line blocks'
    // workers as they start. While the ordering thread writes, no worker does (`Writers`).
    let writers = Writers::default();
    let mut batch = Batch::default();
    let spare = Spare::default();
    let into = Target {
        batch: batch_size,
        set: &set,
        engine: &engine,
        writers: &writers,
        spare: &spare,
    };
    let mut done = 0u64;
    engine.run(
        inputs,
        |parser, block, at_eof| {
            if parser.is_csv() {
                // CSV blocks never insert (see `tally`).
                let defer = writers.deferring.load(Relaxed).then_some(&spare);
                return tally(parser, &set, keep_bad, defer, block, at_eof);
            }
            let inserting = writers.start();
            let defer = inserting.is_none().then_some(&spare);
            tally(parser, &set, keep_bad, defer, block, at_eof)
        },
        |event| {
            match event {
                Event::Start(s) => {
                    let name = s.path.display().to_string();
                    if let Some(r) = report.as_mut() {
                        r.start_input(&name);
                    }
                    counts.headers += s.header.is_some() as u64;
                    per_input.push(InputSummary {
                        path: name,
                        lines: 0,
                        invalid: 0,
                        bytes: 0,
                        compression: if s.gzip { "gzip" } else { "none" },
                        delimiter: s.delimiter.map(|d| d.name()),
                        skipped_lines: s.skipped_lines,
                    });
                }
                Event::Block {
                    mut out,
                    block,
                    record_base,
                    line_base,
                } => {
                    let bytes = block.len() as u64;
                    if let Some(r) = report.as_mut() {
                        let (bad, values) = (
                            std::mem::take(&mut out.bad),
                            std::mem::take(&mut out.values),
                        );
                        r.add((record_base, line_base), bad, values)?;
                    }
                    counts.add(&out);
                    counts.duplicates += batch.add(into, out.prefixes);
                    if counts.valid - counts.duplicates >= defer_after {
                        writers.defer_from_now();
                    }
                    if let Some(last) = per_input.last_mut() {
                        last.lines += out.lines;
                        last.invalid += out.invalid.iter().sum::<u64>();
                        last.bytes += bytes;
                    }
                    done += bytes;
                    progress(done);
                }
            }
            Ok(())
        },
    )?;
    // The workers have all ended: the last deferred prefixes.
    counts.duplicates += batch.insert(into);
    counts.unique = counts.valid - counts.duplicates;
    debug_assert_eq!(counts.unique, set.len());
    debug_assert!(counts.check());
    let v = Validated {
        counts,
        inputs: per_input,
        set,
        threads: engine.threads(),
    };
    // The spare prefix buffers (tens of megabytes in some hundred allocations, each one's
    // `munmap` a TLB shootdown) are freed beside what comes next (`prepare`'s output), not
    // before it.
    let _ = std::thread::Builder::new()
        .name("ndop-free".into())
        .spawn(move || drop(spare));
    Ok(v)
}

/// The `invalid.csv` report: `file,record,line,reason,value`, a row for each quarantined
/// line, in input order.
///
/// Blocks' quarantined lines may wait in memory, up to `wait_at_most` bytes of them (the oldest
/// are written once there are more), to be written later: by [`InvalidCsv::write_some`], a
/// few rows at a time, or by [`InvalidCsv::finish`].
pub(crate) struct InvalidCsv {
    path: PathBuf,
    out: BufWriter<std::fs::File>,
    /// The inputs' names as the rows give them: each one's CSV field, escaped.
    files: Vec<Vec<u8>>,
    /// Rows being gathered for one write (its memory is reused).
    gathered: Vec<u8>,
    /// Blocks with rows not written yet, oldest first.
    waiting: VecDeque<Waiting>,
    /// Memory the waiting blocks hold.
    waiting_bytes: usize,
    wait_at_most: usize,
    /// A write that failed in [`InvalidCsv::write_some`], for [`InvalidCsv::finish`] to return.
    failed: Option<Error>,
}

/// A block's quarantined lines, some of whose rows are not written yet.
struct Waiting {
    /// The input's index in [`InvalidCsv::files`].
    input: usize,
    /// The records and physical lines before the block.
    bases: (u64, u64),
    bad: Vec<BadLine>,
    values: Vec<u8>,
    /// Rows of `bad` already written.
    written: usize,
}

impl Waiting {
    /// The memory the block's lines hold.
    fn bytes(&self) -> usize {
        self.bad.capacity() * std::mem::size_of::<BadLine>() + self.values.capacity()
    }
}

impl InvalidCsv {
    /// Creates the file (mode 0600) and writes the header row.
    pub(crate) fn create(path: &Path, wait_at_most: usize) -> Result<Self> {
        let file = create_private(path)?;
        let mut out = BufWriter::with_capacity(INVALID_BUFFER, file);
        out.write_all(b"file,record,line,reason,value\n")
            .map_err(|e| Error::write(path, e))?;
        Ok(InvalidCsv {
            path: path.to_path_buf(),
            out,
            files: Vec::new(),
            gathered: Vec::new(),
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            wait_at_most,
            failed: None,
        })
    }

    /// Starts the rows of the next input, named `name`.
    fn start_input(&mut self, name: &str) {
        self.files.push(escaped(name.as_bytes()));
    }

    /// Adds a block's quarantined lines (of the input named last), `bases` the records and
    /// physical lines before it, and writes the oldest waiting rows while more than
    /// `wait_at_most` bytes wait.
    fn add(&mut self, bases: (u64, u64), bad: Vec<BadLine>, values: Vec<u8>) -> Result<()> {
        if bad.is_empty() {
            return Ok(());
        }
        let block = Waiting {
            input: self.files.len().saturating_sub(1),
            bases,
            bad,
            values,
            written: 0,
        };
        self.waiting_bytes += block.bytes();
        self.waiting.push_back(block);
        // The oldest blocks, whole, while more than the bound waits.
        while let Some(oldest) = self
            .waiting
            .front()
            .filter(|_| self.waiting_bytes > self.wait_at_most)
        {
            self.write_rows(oldest.bad.len() - oldest.written)?;
        }
        Ok(())
    }

    /// Writes up to `rows` of the waiting rows; true while rows still wait. Once none waits,
    /// the file's writeback starts, so that the sync after finds it on disk. An error is kept
    /// for [`InvalidCsv::finish`] (and ends the writing here).
    pub(crate) fn write_some(&mut self, rows: usize) -> bool {
        if self.failed.is_some() {
            return false;
        }
        let written = self.write_rows(rows).and_then(|()| {
            if self.waiting.is_empty() {
                self.out.flush().map_err(|e| Error::write(&self.path, e))?;
                crate::files::start_writeback(self.out.get_ref(), 0, 0);
            }
            Ok(())
        });
        match written {
            Ok(()) => !self.waiting.is_empty(),
            Err(e) => {
                self.failed = Some(e);
                false
            }
        }
    }

    /// Writes up to `rows` waiting rows, oldest first.
    fn write_rows(&mut self, mut rows: usize) -> Result<()> {
        /// Bytes of rows gathered before they are written: as many as the buffered writer
        /// holds, so that it writes them as they are instead of copying them in.
        const GATHER: usize = INVALID_BUFFER;
        let InvalidCsv {
            path,
            out,
            files,
            gathered,
            waiting,
            waiting_bytes,
            ..
        } = self;
        let mut write = |gathered: &mut Vec<u8>| {
            let r = out.write_all(gathered);
            gathered.clear();
            r.map_err(|e| Error::write(&*path, e))
        };
        while rows > 0 {
            let Some(block) = waiting.front_mut() else {
                break;
            };
            let file = files.get(block.input).map_or(&[][..], Vec::as_slice);
            let (record_base, line_base) = block.bases;
            let end = block.bad.len().min(block.written.saturating_add(rows));
            for b in &block.bad[block.written..end] {
                let value = block
                    .values
                    .get(b.start..b.start + b.len)
                    .unwrap_or_default();
                let at = (record_base + b.record + 1, line_base + b.line + 1);
                push_report_row(gathered, file, at, b.reason, Some(value));
                if gathered.len() >= GATHER {
                    write(gathered)?;
                }
            }
            rows -= end - block.written;
            block.written = end;
            if block.written == block.bad.len() {
                *waiting_bytes -= block.bytes();
                waiting.pop_front();
            }
        }
        write(gathered)
    }

    /// Writes the rows still waiting and what is buffered, and starts the writeback; the sync
    /// is the caller's.
    pub(crate) fn finish(mut self) -> Result<Unsynced> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.write_rows(usize::MAX)?;
        let path = self.path;
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::write(&path, e.into_error()))?;
        // A length of 0: from the offset to the end of the file (sync_file_range(2)).
        crate::files::start_writeback(&file, 0, 0);
        Ok(Unsynced { path, file })
    }
}

#[cfg(test)]
mod tests {
    //! The two ways of inserting (see [`tally`]) and the switch between them, against a
    //! `HashSet` oracle: small blocks, so that a small file spans many waves and batches.
    use super::*;
    use crate::nhs::{check_digit_of_prefix, write_digits};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn deferred_insertion_counts_and_keeps_what_direct_insertion_does(
            picks in proptest::collection::vec((0u32..1_000_000_000, 0u8..8), 1..3000),
            defer_after in prop_oneof![Just(0u64), 1u64..200, Just(u64::MAX)],
            threads in prop_oneof![Just(1usize), Just(3)],
            batch in prop_oneof![Just(1usize), 2usize..400, Just(BATCH)],
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("in.dat");
            let mut file = Vec::new();
            let mut valid = Vec::new();
            let mut d = [0u8; 10];
            let mut placeholders = 0u64;
            for (i, &(p, kind)) in picks.iter().enumerate() {
                // Mostly new numbers, some repeats of earlier ones, some padded (slow path),
                // and an invalid line where a prefix has no check digit.
                let p = if kind == 0 && !valid.is_empty() { valid[i % valid.len()] } else { p };
                // A placeholder now and then (the fast path counts them, four at a time too).
                let p = if kind == 2 { (p % 10) * 111_111_111 } else { p };
                let Some(check) = check_digit_of_prefix(p) else {
                    file.extend_from_slice(b"123\n");
                    continue;
                };
                write_digits(u64::from(p) * 10 + u64::from(check), &mut d);
                if kind == 1 {
                    file.push(b' ');
                }
                file.extend_from_slice(&d);
                file.extend_from_slice(b",\r\n");
                placeholders += u64::from(p % 111_111_111 == 0);
                valid.push(p);
            }
            std::fs::write(&path, &file).unwrap();
            let opts = ScanOptions {
                threads,
                block_size: 256,
                max_line: 64,
                ..ScanOptions::default()
            };
            let v = validate_deferring(&[path], &opts, None, &mut |_| {}, (defer_after, batch)).unwrap();
            let oracle: BTreeSet<u32> = valid.iter().copied().collect();
            prop_assert_eq!(v.counts.valid, valid.len() as u64);
            prop_assert_eq!(v.counts.placeholder, placeholders);
            prop_assert_eq!(v.counts.unique, oracle.len() as u64);
            prop_assert_eq!(v.counts.duplicates, (valid.len() - oracle.len()) as u64);
            prop_assert!(v.counts.check());
            let mut members = Vec::new();
            v.set.for_each_prefix(|p| members.push(p));
            prop_assert_eq!(members, oracle.into_iter().collect::<Vec<_>>());
        }
    }

    /// `invalid.csv` holds the same rows in the same order whether they are written as their
    /// blocks come in (`validate`), wait in memory (all of them, or up to a bound) and are
    /// written a few at a time (`prepare`'s spare time), or are written by `finish`.
    #[test]
    fn invalid_rows_are_the_same_however_long_they_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (mut inputs, mut bad) = (Vec::new(), 0u64);
        for input in 0..2u32 {
            let mut file = Vec::new();
            let mut d = [0u8; 10];
            for i in 0..3000u32 {
                let p = 999_000_000 + (i * 7919 + input * 13) % 1_000_000;
                let check = check_digit_of_prefix(p);
                bad += u64::from(i % 5 < 2 || check.is_none());
                match (i % 5, check) {
                    (0, _) => file.extend_from_slice(format!("bad,{i}\r\n").as_bytes()),
                    (1, _) => file.extend_from_slice(b"12345\n"),
                    (_, Some(c)) => {
                        write_digits(u64::from(p) * 10 + u64::from(c), &mut d);
                        file.extend_from_slice(&d);
                        file.extend_from_slice(b",\r\n");
                    }
                    (_, None) => file.extend_from_slice(b"\"quoted\"\n"),
                }
            }
            let path = dir.path().join(format!("in{input}.dat"));
            std::fs::write(&path, &file).unwrap();
            inputs.push(path);
        }
        let opts = ScanOptions {
            threads: 2,
            block_size: 512,
            max_line: 64,
            ..ScanOptions::default()
        };
        let report = |wait: usize, turn: usize| {
            let path = dir.path().join(format!("invalid-{wait}-{turn}.csv"));
            let mut r = InvalidCsv::create(&path, wait).unwrap();
            let v = validate_deferring(&inputs, &opts, Some(&mut r), &mut |_| {}, (0, BATCH));
            let v = v.unwrap();
            let waited = r.waiting_bytes;
            assert!(waited <= wait, "{waited} bytes waiting, {wait} allowed");
            let mut turns = 0;
            while turn > 0 && r.write_some(turn) {
                turns += 1;
            }
            assert!(r.waiting.is_empty() || turn == 0);
            r.finish().unwrap().sync().unwrap();
            (
                v.counts.invalid,
                waited,
                turns,
                std::fs::read(&path).unwrap(),
            )
        };
        let (invalid, waited, _, inline) = report(0, 0);
        assert_eq!((invalid, waited), (bad, 0));
        let rows: Vec<&[u8]> = inline.split(|&b| b == b'\n').collect();
        assert_eq!(
            rows.len() as u64,
            1 + bad + 1,
            "the header, a row each, the last newline"
        );
        assert!(
            rows[1].ends_with(b",1,1,non_digit,\"bad,0\""),
            "{:?}",
            rows[1]
        );
        for (wait, turn) in [
            (usize::MAX, 0),
            (usize::MAX, 1),
            (usize::MAX, 256),
            (4000, 7),
        ] {
            let (_, waited, turns, got) = report(wait, turn);
            assert!(waited > 0, "rows waited ({wait}, {turn})");
            assert!(turn == 0 || turns > 0);
            assert!(
                got == inline,
                "invalid.csv differs ({wait} bytes, {turn} a turn)"
            );
        }
    }
}
