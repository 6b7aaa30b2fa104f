//! Filtering: the original extract without the patients who opted out.
//!
//! Every row of the extract is copied byte for byte (header, other columns and line endings
//! untouched) when its NHS number is in the set the POS returned; otherwise it is dropped and
//! counted: as opted out (a valid number the POS did not return), as not checked (a valid number
//! that was never sent, when the requested set is known), as invalid (with its reason) or as
//! blank. So `rows = kept + opted_out + not_checked + invalid + blank`.
//!
//! A UTF-8 byte-order mark at the start of the extract is written back at the start of the
//! output. The input layer skips it before any line is classified (so the first header or row is
//! read the same with or without one) and says it did (`Event::Start::bom`), whatever the input:
//! a file on either read path, standard input or a pipe.
//!
//! Blocks are filtered in parallel and written in input order, so the output is the same
//! whatever the thread count.

use crate::error::{Error, Result};
use crate::files::create_private;
use crate::nhs::{Field, Reason};
use crate::scan::{Engine, Event, LineParser, ScanOptions};
use crate::seen::NumberSet;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a filter did; the buckets add up to `rows`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilterCounts {
    /// Data rows read (header rows excluded).
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
    /// Header rows copied.
    pub headers: u64,
    /// Invalid rows by reason.
    pub invalid_by_reason: BTreeMap<&'static str, u64>,
}

impl FilterCounts {
    /// Checks that every row is in exactly one bucket.
    pub fn check(&self) -> bool {
        self.rows == self.kept + self.opted_out + self.not_checked + self.invalid + self.blank
            && self.invalid == self.invalid_by_reason.values().sum::<u64>()
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
}

impl Part {
    /// A row with a valid number, at `start..end` of the block: kept, or dropped and counted.
    #[inline(always)]
    fn valid(
        &mut self,
        prefix: u32,
        (start, end): (usize, usize),
        allowed: &NumberSet,
        requested: Option<&NumberSet>,
    ) {
        if allowed.contains_prefix(prefix) {
            self.kept += 1;
            match self.keep.last_mut() {
                Some(run) if run.end == start => run.end = end,
                _ => self.keep.push(start..end),
            }
        } else if requested.is_some_and(|r| !r.contains_prefix(prefix)) {
            self.not_checked += 1;
        } else {
            self.opted_out += 1;
        }
    }
}

fn filter_block(
    parser: &LineParser,
    allowed: &NumberSet,
    requested: Option<&NumberSet>,
    block: &[u8],
) -> Part {
    let mut p = Part::default();
    let at = |raw: &[u8]| {
        let start = raw.as_ptr() as usize - block.as_ptr() as usize;
        (start, start + raw.len())
    };
    let mut walk = parser.walk(block);
    loop {
        walk.fast_lines(|l, raw| {
            p.rows += 1;
            p.valid(l.prefix, at(raw), allowed, requested);
        });
        let Some((field, _, raw)) = walk.next_other() else {
            break;
        };
        p.rows += 1;
        match field {
            Field::Blank => p.blank += 1,
            Field::Invalid(r) => p.invalid[r as usize] += 1,
            Field::Valid { number, .. } => {
                p.valid((number / 10) as u32, at(raw), allowed, requested)
            }
        }
    }
    p
}

/// Writes to `out` (which must not exist; created with mode 0600, atomically) the rows of
/// `extract` whose NHS number is in `allowed`. With `requested`, valid numbers outside it are
/// counted as `not_checked` rather than `opted_out`. `progress` gets the bytes read so far.
/// A byte-order mark at the start of `extract` starts `out` too.
pub fn filter(
    extract: &Path,
    allowed: &NumberSet,
    requested: Option<&NumberSet>,
    opts: &ScanOptions,
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<FilterSummary> {
    let started = Instant::now();
    if out.symlink_metadata().is_ok() {
        return Err(Error::Write {
            path: out.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the output file exists; name a new one",
            ),
        });
    }
    let name = out
        .file_name()
        .ok_or_else(|| Error::Usage(format!("{} is not a file name", out.display())))?;
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let mut bom = false;
    let result = (|| {
        let mut w = BufWriter::with_capacity(1 << 20, create_private(&tmp)?);
        let engine = Engine::new(opts)?;
        let mut c = FilterCounts::default();
        let mut invalid = [0u64; Reason::ALL.len()];
        let mut done = 0u64;
        let inputs = [extract.to_path_buf()];
        engine.run(
            &inputs,
            |parser, block| filter_block(parser, allowed, requested, block),
            |event| {
                match event {
                    Event::Start { header, bom: b, .. } => {
                        bom = b;
                        if bom {
                            w.write_all(BOM).map_err(|e| Error::write(&tmp, e))?;
                        }
                        if let Some(h) = header {
                            c.headers += 1;
                            w.write_all(h).map_err(|e| Error::write(&tmp, e))?;
                        }
                    }
                    Event::Block { out: p, block } => {
                        for run in p.keep {
                            w.write_all(&block[run])
                                .map_err(|e| Error::write(&tmp, e))?;
                        }
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
        for (r, n) in Reason::ALL.iter().zip(invalid) {
            if n > 0 {
                c.invalid += n;
                c.invalid_by_reason.insert(r.as_str(), n);
            }
        }
        let file = w
            .into_inner()
            .map_err(|e| Error::write(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::write(&tmp, e))?;
        std::fs::rename(&tmp, out).map_err(|e| Error::write(out, e))?;
        debug_assert!(c.check());
        Ok((c, engine.threads()))
    })();
    let (counts, threads) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    crate::files::sync_dir(&dir)?;
    Ok(FilterSummary {
        counts,
        input: extract.display().to_string(),
        output: out.display().to_string(),
        bom,
        threads,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csv::Column;
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
