//! Validation and de-duplication: every input line counted into exactly one bucket.
//!
//! Buckets: blank, invalid (one [`Reason`] each), or valid; valid lines are either the first
//! occurrence of their number (unique) or a duplicate. So `lines = valid + invalid + blank` and
//! `valid = unique + duplicates`, which [`Counts::check`] asserts. Invalid lines go to
//! `invalid.csv` with their file, physical line number (1-based, header included), reason and
//! raw value.

use crate::error::{Error, Result};
use crate::files::create_private;
use crate::nhs::{Field, Reason};
use crate::scan::{Engine, Event, LineParser, ScanOptions};
use crate::seen::NumberSet;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Longest raw value copied into `invalid.csv` (longer values are cut).
pub const VALUE_MAX: usize = 256;

/// The counts of a run; the buckets add up (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Data lines read (CSV header rows are not data lines; see `headers`).
    pub lines: u64,
    /// Lines holding a valid NHS number.
    pub valid: u64,
    /// Distinct valid numbers.
    pub unique: u64,
    /// Valid lines whose number appeared earlier (in any input).
    pub duplicates: u64,
    /// Lines quarantined as invalid.
    pub invalid: u64,
    /// Lines with nothing but whitespace (and, for `.dat` lines, a lone comma).
    pub blank: u64,
    /// Valid lines that needed whitespace trimmed or 3-3-4 separators removed.
    pub normalised: u64,
    /// Valid lines holding a repdigit such as `9999999999` (kept unless rejected).
    pub placeholder: u64,
    /// CSV header rows read (one per non-empty CSV input).
    pub headers: u64,
    /// Invalid lines by reason.
    pub invalid_by_reason: BTreeMap<&'static str, u64>,
}

impl Counts {
    /// Checks the bucket invariants.
    pub fn check(&self) -> bool {
        self.lines == self.valid + self.invalid + self.blank
            && self.valid == self.unique + self.duplicates
            && self.invalid == self.invalid_by_reason.values().sum::<u64>()
    }

    fn add(&mut self, t: &Tally) {
        self.lines += t.lines;
        self.valid += t.valid;
        self.duplicates += t.duplicates;
        self.blank += t.blank;
        self.normalised += t.normalised;
        self.placeholder += t.placeholder;
        for r in Reason::ALL {
            let n = t.invalid[r.index()];
            if n > 0 {
                self.invalid += n;
                *self.invalid_by_reason.entry(r.as_str()).or_default() += n;
            }
        }
    }
}

/// One quarantined line of a block.
struct BadLine {
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
}

fn tally(parser: &LineParser, set: &NumberSet, keep_bad: bool, block: &[u8]) -> Tally {
    let mut t = Tally::default();
    // The fast path's counters are locals, apart from `t`, so they can live in registers.
    let (mut fast, mut fast_placeholder, mut fast_duplicates) = (0u64, 0u64, 0u64);
    let mut walk = parser.walk(block);
    loop {
        walk.fast_lines(|l, _| {
            fast += 1;
            fast_placeholder += l.placeholder as u64;
            fast_duplicates += !set.insert_prefix(l.prefix) as u64;
        });
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
                if !set.insert(number) {
                    t.duplicates += 1;
                }
            }
            Field::Invalid(reason) => {
                t.invalid[reason.index()] += 1;
                if keep_bad {
                    let value = &value[..value.len().min(VALUE_MAX)];
                    t.bad.push(BadLine {
                        line: t.lines + fast,
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
    t.lines += fast;
    t.valid += fast;
    t.placeholder += fast_placeholder;
    t.duplicates += fast_duplicates;
    t
}

/// Per-input figures for the summary.
#[derive(Debug, Clone, Serialize)]
pub struct InputSummary {
    /// The path as given (`-` for standard input).
    pub path: String,
    /// Data lines.
    pub lines: u64,
    /// Data lines quarantined as invalid.
    pub invalid: u64,
    /// Bytes read (after the header row, if any).
    pub bytes: u64,
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
    let engine = Engine::new(opts)?;
    let set = NumberSet::new();
    let mut counts = Counts::default();
    let mut per_input: Vec<InputSummary> = Vec::new();
    let mut report = match invalid_csv {
        Some(p) => Some(InvalidCsv::create(p)?),
        None => None,
    };
    let keep_bad = report.is_some();
    let mut line_base = 0u64; // physical lines of the current input before the current block
    let mut done = 0u64;
    let mut current = String::new();
    engine.run(
        inputs,
        |parser, block| tally(parser, &set, keep_bad, block),
        |event| {
            match event {
                Event::Start { path, header, .. } => {
                    current = path.display().to_string();
                    line_base = header.is_some() as u64;
                    counts.headers += header.is_some() as u64;
                    per_input.push(InputSummary {
                        path: current.clone(),
                        lines: 0,
                        invalid: 0,
                        bytes: 0,
                    });
                }
                Event::Block { out, block } => {
                    let bytes = block.len() as u64;
                    if let Some(r) = report.as_mut() {
                        for b in &out.bad {
                            let value = &out.values[b.start..b.start + b.len];
                            r.row(&current, line_base + b.line + 1, b.reason, value)?;
                        }
                    }
                    line_base += out.lines;
                    counts.add(&out);
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
    if let Some(r) = report {
        r.finish()?;
    }
    counts.unique = counts.valid - counts.duplicates;
    debug_assert_eq!(counts.unique, set.len());
    debug_assert!(counts.check());
    Ok(Validated {
        counts,
        inputs: per_input,
        set,
        threads: engine.threads(),
    })
}

/// The `invalid.csv` report: `file,line,reason,value`.
struct InvalidCsv {
    path: PathBuf,
    out: BufWriter<std::fs::File>,
}

impl InvalidCsv {
    fn create(path: &Path) -> Result<Self> {
        let file = create_private(path)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(b"file,line,reason,value\n")
            .map_err(|e| Error::write(path, e))?;
        Ok(InvalidCsv {
            path: path.to_path_buf(),
            out,
        })
    }

    fn row(&mut self, file: &str, line: u64, reason: Reason, value: &[u8]) -> Result<()> {
        let r = (|| {
            write_csv_field(&mut self.out, file.as_bytes())?;
            write!(self.out, ",{line},{reason},")?;
            write_csv_field(&mut self.out, value)?;
            self.out.write_all(b"\n")
        })();
        r.map_err(|e| Error::write(&self.path, e))
    }

    fn finish(self) -> Result<()> {
        let path = self.path;
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::write(&path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::write(&path, e))
    }
}

/// Writes one CSV field, quoted when it holds a comma, quote, CR or LF (RFC 4180).
pub(crate) fn write_csv_field(out: &mut impl Write, value: &[u8]) -> std::io::Result<()> {
    if value
        .iter()
        .any(|&b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
    {
        out.write_all(b"\"")?;
        for part in value.split(|&b| b == b'"').enumerate() {
            if part.0 > 0 {
                out.write_all(b"\"\"")?;
            }
            out.write_all(part.1)?;
        }
        out.write_all(b"\"")
    } else {
        out.write_all(value)
    }
}
