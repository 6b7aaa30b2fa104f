//! Filtering: the original extract without the patients who opted out.
//!
//! Fails closed: a record of the extract is copied, byte for byte (header, other columns, line
//! endings and line breaks inside quoted fields untouched), only when its NHS number was parsed,
//! validated and found in the set the POS returned. Every other record is dropped and counted:
//! as opted out (a valid number the POS did not return), as not checked (a valid number that
//! was never sent, when the requested set is known), as invalid (its number is not valid), as
//! unparseable (the record itself is broken: an unterminated quote, text after a closing quote)
//! or as blank. So `rows = kept + opted_out + not_checked + invalid + blank + unparseable`.
//! Invalid and unparseable records are listed in a rejects report (`file,record,line,reason`:
//! where to find them, never their content). Lines skipped before the header (`skip_lines`)
//! are not records and are not copied.
//!
//! A UTF-8 byte-order mark at the start of the extract is written back at the start of the
//! output. The input layer skips it before any line is classified (so the first header or row is
//! read the same with or without one) and says it did (`Event::Start::bom`), whatever the input:
//! a file on either read path, standard input or a pipe.
//!
//! Blocks are filtered in parallel and written in input order, so the output is the same
//! whatever the thread count.

use crate::csv::{escaped, push_report_row};
use crate::error::Result;
use crate::files::{parent_dir, sync_dir, AtomicFile, ThreadedOut};
use crate::nhs::{Field, Reason};
use crate::scan::{Engine, Event, LineParser, ScanOptions, Span, Spanned};
use crate::seen::{NumberSet, LAG};
use crate::validate::add_reasons;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a filter did; the buckets add up to `rows`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilterCounts {
    /// Data records read (header rows and skipped lines excluded; a CSV record may span
    /// lines).
    pub rows: u64,
    /// Rows written: their patient's number was returned by the POS.
    pub kept: u64,
    /// Rows dropped because their patient opted out.
    pub opted_out: u64,
    /// Rows dropped because their (valid) number was never sent to the POS. Only counted when
    /// the requested numbers are known; otherwise such rows count as `opted_out`.
    pub not_checked: u64,
    /// Rows dropped because their NHS number is invalid.
    pub invalid: u64,
    /// Rows dropped because they are blank.
    pub blank: u64,
    /// Rows dropped because the record cannot be read (broken quoting).
    pub unparseable: u64,
    /// Header rows copied.
    pub headers: u64,
    /// Physical lines skipped before the header (not copied).
    pub skipped_lines: u64,
    /// Invalid rows by reason.
    pub invalid_by_reason: BTreeMap<&'static str, u64>,
    /// Unparseable rows by reason.
    pub unparseable_by_reason: BTreeMap<&'static str, u64>,
}

impl FilterCounts {
    /// Checks that every row is in exactly one bucket.
    pub fn check(&self) -> bool {
        self.rows
            == self.kept
                + self.opted_out
                + self.not_checked
                + self.invalid
                + self.blank
                + self.unparseable
            && self.invalid == self.invalid_by_reason.values().sum::<u64>()
            && self.unparseable == self.unparseable_by_reason.values().sum::<u64>()
    }
}

/// The filter's summary.
#[derive(Debug, Clone, Serialize)]
pub struct FilterSummary {
    /// The counts.
    #[serde(flatten)]
    pub counts: FilterCounts,
    /// The extract read.
    pub input: String,
    /// The file written.
    pub output: String,
    /// The rejects report written: where each invalid or unparseable record is.
    pub rejects: String,
    /// `gzip` when the extract was decompressed, else `none`.
    pub compression: &'static str,
    /// The CSV delimiter (`comma`, `tab`, `semicolon`, `pipe`); absent for `.dat` lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<&'static str>,
    /// Whether the extract started with a UTF-8 byte-order mark, written back at the start of
    /// the output.
    pub bom: bool,
    /// Worker threads used.
    pub threads: usize,
    /// Wall-clock time.
    pub elapsed_seconds: f64,
}

/// The UTF-8 byte-order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Default)]
struct Part {
    /// The rows to keep, as byte ranges of the block; adjacent rows make one range.
    keep: Vec<std::ops::Range<usize>>,
    rows: u64,
    kept: u64,
    opted_out: u64,
    not_checked: u64,
    blank: u64,
    invalid: [u64; Reason::ALL.len()],
    /// Invalid and unparseable records: `(records before it, lines before it, reason)`.
    rejects: Vec<(u64, u64, Reason)>,
    span: Span,
}

impl Spanned for Part {
    fn span(&self) -> Span {
        self.span
    }
}

impl Part {
    /// Decides a row with a valid number, at `start..end` of the block, whose word of
    /// `allowed` was prefetched [`LAG`] rows ago: kept, or its prefix put in `dropped` for
    /// [`Part::classify_dropped`].
    #[inline(always)]
    fn decide(
        &mut self,
        (prefix, start, end): (u32, usize, usize),
        allowed: &NumberSet,
        dropped: &mut Vec<u32>,
    ) {
        if allowed.contains_prefix(prefix) {
            self.kept += 1;
            match self.keep.last_mut() {
                Some(run) if run.end == start => run.end = end,
                _ => self.keep.push(start..end),
            }
        } else {
            dropped.push(prefix);
        }
    }

    /// Counts the rows dropped because `allowed` lacks their number: not checked when
    /// `requested` is known and lacks it too, else opted out. Their order does not matter (they
    /// write nothing), so they are looked up in a second pass, again [`LAG`] rows ahead.
    fn classify_dropped(&mut self, dropped: &[u32], requested: Option<&NumberSet>) {
        let Some(requested) = requested else {
            self.opted_out += dropped.len() as u64;
            return;
        };
        for (i, &prefix) in dropped.iter().enumerate() {
            if let Some(&ahead) = dropped.get(i + LAG) {
                requested.prefetch(ahead);
            }
            if requested.contains_prefix(prefix) {
                self.opted_out += 1;
            } else {
                self.not_checked += 1;
            }
        }
    }
}

/// The rows with a valid number whose word of the allowed set has been prefetched, in row
/// order, each decided [`LAG`] rows later (when the word has most likely arrived) so that
/// that many cache misses are in flight at once: a national extract's numbers are spread over
/// tens of MiB of the set. The same decisions, in the same order, as deciding each row at once.
struct Ahead {
    /// `(prefix, start, end)` of the last `LAG` rows pushed.
    ring: [(u32, usize, usize); LAG],
    /// Rows pushed so far.
    pushed: usize,
}

impl Ahead {
    fn new() -> Ahead {
        Ahead {
            ring: [(0, 0, 0); LAG],
            pushed: 0,
        }
    }

    /// Queues a row (see [`Part::decide`]) and decides the one pushed `LAG` rows before.
    #[inline(always)]
    fn push(
        &mut self,
        row: (u32, usize, usize),
        p: &mut Part,
        allowed: &NumberSet,
        dropped: &mut Vec<u32>,
    ) {
        allowed.prefetch(row.0);
        let due = std::mem::replace(&mut self.ring[self.pushed & (LAG - 1)], row);
        if self.pushed >= LAG {
            p.decide(due, allowed, dropped);
        }
        self.pushed += 1;
    }

    /// Decides the rows still queued, in order.
    fn finish(self, p: &mut Part, allowed: &NumberSet, dropped: &mut Vec<u32>) {
        for i in self.pushed.saturating_sub(LAG)..self.pushed {
            p.decide(self.ring[i & (LAG - 1)], allowed, dropped);
        }
    }
}

fn filter_block(
    parser: &LineParser,
    allowed: &NumberSet,
    requested: Option<&NumberSet>,
    block: &[u8],
    at_eof: bool,
) -> Part {
    if parser.is_csv() {
        // The CSV walk compiled for the CPU's mask kernel (see `csv::for_cpu`).
        return crate::csv::for_cpu(
            #[inline(always)]
            || walk_block(parser, allowed, requested, block, at_eof),
        );
    }
    // The line walk compiled for the CPU's fast-line kernel (see `swar::for_cpu`).
    crate::swar::for_cpu(
        #[inline(always)]
        || walk_block(parser, allowed, requested, block, at_eof),
    )
}

#[inline(always)]
fn walk_block(
    parser: &LineParser,
    allowed: &NumberSet,
    requested: Option<&NumberSet>,
    block: &[u8],
    at_eof: bool,
) -> Part {
    let mut p = Part::default();
    let mut ahead = Ahead::new();
    let mut dropped = Vec::new();
    let at = |prefix: u32, raw: &[u8]| {
        let start = raw.as_ptr() as usize - block.as_ptr() as usize;
        (prefix, start, start + raw.len())
    };
    let mut walk = parser.walk(block, at_eof);
    loop {
        walk.fast_lines(|l, raw| {
            p.rows += 1;
            ahead.push(at(l.prefix, raw), &mut p, allowed, &mut dropped);
        });
        walk.fast_records(
            #[inline(always)]
            |l, raw| {
                p.rows += 1;
                ahead.push(at(l.prefix, raw), &mut p, allowed, &mut dropped);
            },
        );
        let Some((field, _, raw)) = walk.next_other() else {
            break;
        };
        match field {
            Field::Blank => p.blank += 1,
            Field::Invalid(r) => {
                p.invalid[r.index()] += 1;
                let line = walk.record_line().unwrap_or(p.rows);
                p.rejects.push((p.rows, line, r));
            }
            Field::Valid { number, .. } => {
                let row = at((number / 10) as u32, raw);
                ahead.push(row, &mut p, allowed, &mut dropped);
            }
        }
        p.rows += 1;
    }
    ahead.finish(&mut p, allowed, &mut dropped);
    p.classify_dropped(&dropped, requested);
    p.span = walk.span(p.rows);
    p
}

/// The default rejects report of a filter writing `out`: `OUT.rejects.csv` beside it.
pub fn default_rejects(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_os_string();
    name.push(".rejects.csv");
    PathBuf::from(name)
}

/// Writes to `out` (which must not exist; created with mode 0600, atomically) the rows of
/// `extract` whose NHS number is in `allowed`, and the rejects report to
/// [`default_rejects`]`(out)`. See [`filter_to`].
pub fn filter(
    extract: &Path,
    allowed: &NumberSet,
    requested: Option<&NumberSet>,
    opts: &ScanOptions,
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<FilterSummary> {
    let rejects = default_rejects(out);
    filter_to(extract, allowed, requested, opts, (out, &rejects), progress)
}

/// Writes to `out` (which must not exist; created with mode 0600, atomically) the rows of
/// `extract` whose NHS number is in `allowed`, and to `rejects` (the same) where each invalid
/// and unparseable record is. With `requested`, valid numbers outside it are counted as
/// `not_checked` rather than `opted_out`. `progress` gets the bytes read so far. A byte-order
/// mark at the start of `extract` starts `out` too. On any error neither file is left.
pub fn filter_to(
    extract: &Path,
    allowed: &NumberSet,
    requested: Option<&NumberSet>,
    opts: &ScanOptions,
    outputs: (&Path, &Path),
    progress: &mut dyn FnMut(u64),
) -> Result<FilterSummary> {
    let durable = Durability::Synced;
    filter_with(
        extract, allowed, requested, opts, outputs, durable, progress,
    )
}

/// Whether [`filter_with`] makes its outputs durable before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fsync` each output before renaming it into place, and its directory after: once the
    /// call returns, a power loss cannot lose them. The default.
    Synced,
    /// No `fsync` (see [`AtomicFile::no_sync`]): the outputs are complete when renamed into
    /// place, but a power loss soon after may leave them short or empty. What is written is
    /// the same either way, so no record that should be left out can get in.
    NoSync,
}

/// [`filter_to`], with the outputs made durable or not.
pub fn filter_with(
    extract: &Path,
    allowed: &NumberSet,
    requested: Option<&NumberSet>,
    opts: &ScanOptions,
    outputs: (&Path, &Path),
    durability: Durability,
    progress: &mut dyn FnMut(u64),
) -> Result<FilterSummary> {
    let filters = (allowed, requested);
    let (summary, _) =
        filter_hashing(extract, filters, opts, outputs, durability, progress, false)?;
    Ok(summary)
}

/// [`filter_with`] (`filters` = `allowed`, `requested`); with `hash`, also the SHA-256 of the
/// bytes written to `out` (lower-case hex) and their number, taken as they are written (not
/// read back).
///
/// A durable output ([`Durability::Synced`]), or one hashed, is written from a thread of its own
/// in 8 MiB buffers, hashed there, and written with direct I/O (`O_DIRECT`: from the buffer to
/// the disk, not copied into the page cache) where the filesystem allows it: the kernel's copy
/// into new page-cache pages was most of a national filter's system time, and the bytes must
/// reach the disk before the rename anyway. Elsewhere the same thread writes them the usual way.
pub fn filter_hashing(
    extract: &Path,
    (allowed, requested): (&NumberSet, Option<&NumberSet>),
    opts: &ScanOptions,
    (out, rejects): (&Path, &Path),
    durability: Durability,
    progress: &mut dyn FnMut(u64),
    hash: bool,
) -> Result<(FilterSummary, Option<(String, u64)>)> {
    let started = Instant::now();
    let durable = durability == Durability::Synced;
    let unsynced = |f: AtomicFile| if durable { f } else { f.no_sync() };
    let mut w = unsynced(AtomicFile::create(out)?);
    w.reserve_for(extract);
    let tmp_out = w.tmp().to_path_buf();
    let mut w = if durable || hash {
        Output::Threaded(ThreadedOut::new(w, durable, hash))
    } else {
        Output::Plain(w)
    };
    let mut r = match AtomicFile::create(rejects).map(unsynced) {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp_out);
            return Err(e);
        }
    };
    let tmp_rejects = r.tmp().to_path_buf();
    let mut bom = false;
    let mut compression = "none";
    let mut delimiter = None;
    let result = (|| {
        r.write(b"file,record,line,reason\n")?;
        let engine = Engine::new(opts)?;
        let mut c = FilterCounts::default();
        let mut invalid = [0u64; Reason::ALL.len()];
        let mut done = 0u64;
        let inputs = [extract.to_path_buf()];
        let file_field = escaped(extract.display().to_string().as_bytes());
        let mut rows = Vec::new();
        engine.run(
            &inputs,
            |parser, block, at_eof| filter_block(parser, allowed, requested, block, at_eof),
            |event| {
                match event {
                    Event::Start(s) => {
                        bom = s.bom;
                        compression = if s.gzip { "gzip" } else { "none" };
                        delimiter = s.delimiter.map(|d| d.name());
                        c.skipped_lines += s.skipped_lines;
                        if bom {
                            w.write(BOM)?;
                        }
                        if let Some(h) = s.header {
                            c.headers += 1;
                            w.write(h)?;
                        }
                    }
                    Event::Block {
                        out: p,
                        block,
                        record_base,
                        line_base,
                    } => {
                        w.write_ranges(block, &p.keep)?;
                        rows.clear();
                        for (record, line, reason) in p.rejects {
                            let at = (record_base + record + 1, line_base + line + 1);
                            push_report_row(&mut rows, &file_field, at, reason, None);
                        }
                        r.write(&rows)?;
                        c.rows += p.rows;
                        c.kept += p.kept;
                        c.opted_out += p.opted_out;
                        c.not_checked += p.not_checked;
                        c.blank += p.blank;
                        for (sum, n) in invalid.iter_mut().zip(p.invalid) {
                            *sum += n;
                        }
                        done += block.len() as u64;
                        progress(done);
                    }
                }
                Ok(())
            },
        )?;
        add_reasons(
            &invalid,
            (&mut c.invalid, &mut c.invalid_by_reason),
            (&mut c.unparseable, &mut c.unparseable_by_reason),
        );
        r.commit()?;
        let hashed = w.commit()?;
        debug_assert!(c.check());
        Ok((c, engine.threads(), hashed))
    })();
    let (counts, threads, hashed) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp_out);
            let _ = std::fs::remove_file(&tmp_rejects);
            let _ = std::fs::remove_file(rejects);
            return Err(e);
        }
    };
    if durable {
        sync_dir(&parent_dir(out))?;
        sync_dir(&parent_dir(rejects))?;
    }
    let summary = FilterSummary {
        counts,
        input: extract.display().to_string(),
        output: out.display().to_string(),
        rejects: rejects.display().to_string(),
        compression,
        delimiter,
        bom,
        threads,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    };
    Ok((summary, hashed))
}

/// Where the kept rows go: straight to the file (buffered, with `writev` from the input), or
/// through a [`ThreadedOut`].
enum Output {
    Plain(AtomicFile),
    Threaded(ThreadedOut),
}

impl Output {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            Output::Plain(f) => f.write(bytes),
            Output::Threaded(t) => {
                t.write(bytes);
                Ok(())
            }
        }
    }

    fn write_ranges(&mut self, block: &[u8], ranges: &[std::ops::Range<usize>]) -> Result<()> {
        match self {
            Output::Plain(f) => f.write_ranges(block, ranges),
            Output::Threaded(t) => {
                ranges.iter().for_each(|r| t.write(&block[r.clone()]));
                Ok(())
            }
        }
    }

    /// Commits the file; the hash, when one was asked for.
    fn commit(self) -> Result<Option<(String, u64)>> {
        match self {
            Output::Plain(f) => f.commit().map(|()| None),
            Output::Threaded(t) => t.commit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csv::Column;
    use crate::files::OUT_BUFFER;
    use crate::input::IoMode;
    use crate::scan::Format;

    #[test]
    fn keeps_rows_of_returned_patients_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let extract = dir.path().join("x.csv");
        std::fs::write(
            &extract,
            "id,\"nhs number\",note\r\n\
             1,9434765919,\"a, b\"\r\n\
             2,9694116414,c\n\
             3,943 476 5919,d\r\n\
             4,9434765918,e\r\n\
             \r\n\
             5,9876543210,f",
        )
        .unwrap();
        let allowed = NumberSet::new();
        allowed.insert(9434765919);
        let requested = NumberSet::new();
        requested.insert(9434765919);
        requested.insert(9694116414);
        let opts = ScanOptions {
            format: Format::Csv(Column::Name("nhs number".into())),
            ..ScanOptions::default()
        };
        let out = dir.path().join("kept.csv");
        let s = filter(
            &extract,
            &allowed,
            Some(&requested),
            &opts,
            &out,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "id,\"nhs number\",note\r\n1,9434765919,\"a, b\"\r\n3,943 476 5919,d\r\n"
        );
        let c = &s.counts;
        assert_eq!(
            (
                c.rows,
                c.kept,
                c.opted_out,
                c.not_checked,
                c.invalid,
                c.blank
            ),
            (6, 2, 1, 1, 1, 1)
        );
        assert_eq!(c.invalid_by_reason["check_digit_mismatch"], 1);
        assert!(c.check());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // An existing output is never overwritten.
        assert!(filter(&extract, &allowed, None, &opts, &out, &mut |_| {}).is_err());
        // Without the syncs: the same bytes, counts, rejects and mode.
        let (fast, fast_rejects) = (dir.path().join("fast.csv"), dir.path().join("fast.rej"));
        let n = filter_with(
            &extract,
            &allowed,
            Some(&requested),
            &opts,
            (&fast, &fast_rejects),
            Durability::NoSync,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(std::fs::read(&fast).unwrap(), std::fs::read(&out).unwrap());
        let rejects = std::fs::read(default_rejects(&out)).unwrap();
        assert_eq!(std::fs::read(&fast_rejects).unwrap(), rejects);
        assert_eq!(n.counts, s.counts);
        let mode = std::fs::metadata(&fast).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join(".fast.csv.tmp").exists());
    }

    /// Filters `text` (with and without a BOM, through both read paths and a block size that
    /// cuts the input into many blocks) and checks the output: the expected rows, after a BOM
    /// exactly when the input had one, with the same counts either way.
    fn check_bom_round_trip(text: &str, format: Format, want: &str) {
        let dir = tempfile::tempdir().unwrap();
        let allowed = NumberSet::new();
        allowed.insert(9434765919);
        allowed.insert(9990000018);
        let mut counts = Vec::new();
        for (k, (bom, io)) in [
            (false, IoMode::Auto),
            (false, IoMode::Read),
            (true, IoMode::Auto),
            (true, IoMode::Read),
        ]
        .into_iter()
        .enumerate()
        {
            let extract = dir.path().join(format!("x{k}"));
            let mut bytes = if bom { BOM.to_vec() } else { Vec::new() };
            bytes.extend_from_slice(text.as_bytes());
            std::fs::write(&extract, &bytes).unwrap();
            let opts = ScanOptions {
                format: format.clone(),
                io,
                block_size: 64,
                max_line: 40,
                ..ScanOptions::default()
            };
            let out = dir.path().join(format!("out{k}"));
            let s = filter(&extract, &allowed, None, &opts, &out, &mut |_| {}).unwrap();
            let got = std::fs::read(&out).unwrap();
            let (head, rest) = got.split_at(if bom { 3 } else { 0 });
            assert_eq!(head, if bom { BOM } else { b"" }, "{k}");
            assert!(!rest.starts_with(BOM), "{k}: one BOM only");
            assert_eq!(String::from_utf8_lossy(rest), want, "{k}");
            assert_eq!(s.bom, bom);
            counts.push(s.counts);
        }
        assert!(counts.iter().all(|c| c == &counts[0] && c.check()));
    }

    #[test]
    fn a_threaded_output_is_the_same_bytes_with_the_hash_of_them() {
        use sha2::Digest;
        // more than one writer buffer, the last not a whole number of direct I/O blocks
        let dir = tempfile::tempdir().unwrap();
        let extract = dir.path().join("x.dat");
        let allowed = NumberSet::new();
        let (mut text, mut want) = (Vec::new(), Vec::new());
        let mut prefix = 999_000_000u32;
        while text.len() < OUT_BUFFER + OUT_BUFFER / 8 + 77 {
            if let Some(check) = crate::nhs::check_digit_of_prefix(prefix) {
                let line = format!("{prefix}{check},\r\n");
                text.extend_from_slice(line.as_bytes());
                if !prefix.is_multiple_of(7) {
                    allowed.insert(prefix as u64 * 10 + check as u64);
                    want.extend_from_slice(line.as_bytes());
                }
            }
            prefix += 1;
        }
        // an invalid line, and a kept last line without its line ending
        text.extend_from_slice(b"not a number\n9990000018");
        assert!(allowed.contains(9990000018));
        want.extend_from_slice(b"9990000018");
        std::fs::write(&extract, &text).unwrap();
        let mut counts = Vec::new();
        for (k, (durability, hash)) in [
            (Durability::NoSync, false),
            (Durability::Synced, false),
            (Durability::Synced, true),
            (Durability::NoSync, true),
        ]
        .into_iter()
        .enumerate()
        {
            let (out, rejects) = (
                dir.path().join(format!("o{k}")),
                dir.path().join(format!("r{k}")),
            );
            let (s, h) = filter_hashing(
                &extract,
                (&allowed, None),
                &ScanOptions::default(),
                (&out, &rejects),
                durability,
                &mut |_| {},
                hash,
            )
            .unwrap();
            let got = std::fs::read(&out).unwrap();
            assert!(got == want, "{k}: {} bytes, want {}", got.len(), want.len());
            let sha = hex::encode(sha2::Sha256::digest(&got));
            assert_eq!(h, hash.then_some((sha, got.len() as u64)), "{k}");
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{k}");
            assert!(!dir.path().join(format!(".o{k}.tmp")).exists(), "{k}");
            assert!(
                s.counts.check() && s.counts.invalid == 1,
                "{k}: {:?}",
                s.counts
            );
            counts.push(s.counts);
        }
        assert!(counts.iter().all(|c| c == &counts[0]));
    }

    #[test]
    fn a_bom_is_kept_before_a_csv_header() {
        check_bom_round_trip(
            "id,nhs_number\r\n1,9434765919\r\n2,9694116414\r\n3,bad\r\n4,9990000018\r\n",
            Format::Csv(Column::Name("nhs_number".into())),
            "id,nhs_number\r\n1,9434765919\r\n4,9990000018\r\n",
        );
    }

    #[test]
    fn a_bom_is_kept_before_dat_lines() {
        // The first line is a kept number: classified the same after the BOM as without it.
        check_bom_round_trip(
            "9434765919,\r\n9694116414,\r\n9990000018\n999000001\n9434765919,",
            Format::Lines,
            "9434765919,\r\n9990000018\n9434765919,",
        );
    }

    #[test]
    fn a_bom_alone_or_a_short_file_is_handled() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = NumberSet::new();
        for (k, (input, want)) in [
            (BOM, BOM),
            (&b"\xEF\xBB"[..], &b""[..]),
            (&b""[..], &b""[..]),
        ]
        .into_iter()
        .enumerate()
        {
            let extract = dir.path().join(format!("x{k}"));
            std::fs::write(&extract, input).unwrap();
            let out = dir.path().join(format!("out{k}"));
            filter(
                &extract,
                &allowed,
                None,
                &ScanOptions::default(),
                &out,
                &mut |_| {},
            )
            .unwrap();
            assert_eq!(std::fs::read(&out).unwrap(), want, "{k}");
        }
    }
}
