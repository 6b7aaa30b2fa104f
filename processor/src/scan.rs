//! The parallel engine: inputs in waves of line-aligned blocks, blocks processed on a thread
//! pool, results merged back in input order.
//!
//! Each wave holds a few blocks per thread; the blocks of a wave are processed in parallel and
//! their results handed to the caller's visitor strictly in order, so line numbers, report rows
//! and filtered output come out exactly as a single thread would produce them. Memory is bounded
//! by one wave (the mapped pages of finished waves are released), whatever the input's size.

use crate::csv::{self, Column};
use crate::error::{Error, Result};
use crate::input::{Blocks, IoMode};
use crate::nhs::{self, Field, Reason, Rules};
use memchr::memchr_iter;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// How the lines of an input carry their NHS number.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Format {
    /// One number per line; a trailing comma (the POS `.dat` form `9434765919,`) is allowed.
    #[default]
    Lines,
    /// CSV with a header row; the number is in the given column.
    Csv(Column),
}

/// Options shared by every command that reads extracts.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Line format.
    pub format: Format,
    /// Validation rules.
    pub rules: Rules,
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// Memory map or plain reads.
    pub io: IoMode,
    /// Bytes per block (a few MiB; must exceed `max_line` + 2).
    pub block_size: usize,
    /// Longest line inspected; longer lines are quarantined as `line_too_long`.
    pub max_line: usize,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            format: Format::Lines,
            rules: Rules::default(),
            threads: 0,
            io: IoMode::Auto,
            block_size: 8 << 20,
            max_line: crate::MAX_LINE,
        }
    }
}

/// Classifies whole lines for one input (its column is resolved from its header).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineParser {
    column: Option<usize>,
    rules: Rules,
    max_line: usize,
}

impl LineParser {
    /// A parser for one-number-per-line input.
    pub(crate) fn lines(rules: Rules, max_line: usize) -> Self {
        LineParser {
            column: None,
            rules,
            max_line,
        }
    }

    /// Classifies one line (without its line ending). Invalid lines come with the value to
    /// report: the field, or the whole line when no field could be cut out.
    #[inline]
    pub(crate) fn classify<'a>(&self, line: &'a [u8]) -> (Field, &'a [u8]) {
        if line.len() > self.max_line {
            return (Field::Invalid(Reason::LineTooLong), line);
        }
        match self.column {
            None => {
                let field = line.strip_suffix(b",").unwrap_or(line);
                (nhs::classify(field, self.rules), field)
            }
            Some(col) => {
                if line.iter().all(|&b| b == b' ' || b == b'\t') {
                    return (Field::Blank, line);
                }
                match csv::field(line, col) {
                    Err(reason) => (Field::Invalid(reason), line),
                    Ok(field) => match nhs::classify(field, self.rules) {
                        Field::Blank => (Field::Invalid(Reason::MissingField), field),
                        other => (other, field),
                    },
                }
            }
        }
    }
}

/// Calls `f(line, raw)` for every line of a block: `line` without its line ending (`\n` or
/// `\r\n`), `raw` with it.
#[inline]
pub(crate) fn for_each_line(block: &[u8], mut f: impl FnMut(&[u8], &[u8])) {
    let mut start = 0;
    for nl in memchr_iter(b'\n', block) {
        let raw = &block[start..=nl];
        let line = &block[start..nl];
        f(line.strip_suffix(b"\r").unwrap_or(line), raw);
        start = nl + 1;
    }
    if start < block.len() {
        let raw = &block[start..];
        f(raw.strip_suffix(b"\r").unwrap_or(raw), raw);
    }
}

/// Total size of the inputs when every one is a regular file (for progress bars).
pub fn total_len(inputs: &[PathBuf]) -> Option<u64> {
    inputs
        .iter()
        .map(|p| {
            if p == Path::new("-") {
                None
            } else {
                std::fs::metadata(p)
                    .ok()
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
            }
        })
        .sum()
}

/// What the engine tells the visitor, in input order.
pub(crate) enum Event<'a, O> {
    /// An input is about to be read; `header` is its CSV header row as read (with its line
    /// ending, if it has one).
    Start {
        path: &'a Path,
        header: Option<&'a [u8]>,
    },
    /// The result of one block of the current input, and the bytes it covered.
    Block { out: O, bytes: u64 },
}

/// A thread pool and the options to read with.
pub(crate) struct Engine {
    pool: rayon::ThreadPool,
    opts: ScanOptions,
}

impl Engine {
    pub(crate) fn new(opts: &ScanOptions) -> Result<Engine> {
        if opts.block_size <= opts.max_line + 2 {
            return Err(Error::Usage(format!(
                "block size must be more than {} bytes",
                opts.max_line + 2
            )));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads)
            .thread_name(|i| format!("ndop-worker-{i}"))
            .build()
            .map_err(|e| Error::Usage(format!("cannot start worker threads: {e}")))?;
        Ok(Engine {
            pool,
            opts: opts.clone(),
        })
    }

    /// Number of worker threads.
    pub(crate) fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Reads every input in order, runs `work` on each block in parallel and hands the results
    /// to `visit` in input order.
    pub(crate) fn run<O: Send>(
        &self,
        inputs: &[PathBuf],
        work: impl Fn(&LineParser, &[u8]) -> O + Sync,
        mut visit: impl FnMut(Event<'_, O>) -> Result<()>,
    ) -> Result<()> {
        let wave_len = self.threads() * 4;
        for path in inputs {
            let mut blocks =
                Blocks::open(path, self.opts.io, self.opts.block_size, self.opts.max_line)?;
            let (parser, header) = self.parser_for(&mut blocks)?;
            visit(Event::Start {
                path,
                header: header.as_deref(),
            })?;
            loop {
                let wave = blocks.next_wave(wave_len)?;
                if wave.is_empty() {
                    break;
                }
                let sizes: Vec<u64> = wave.iter().map(|b| b.len() as u64).collect();
                let outs: Vec<O> = self
                    .pool
                    .install(|| wave.par_iter().map(|b| work(&parser, b)).collect());
                for (out, bytes) in outs.into_iter().zip(sizes) {
                    visit(Event::Block { out, bytes })?;
                }
                blocks.release();
            }
        }
        Ok(())
    }

    fn parser_for(&self, blocks: &mut Blocks) -> Result<(LineParser, Option<Vec<u8>>)> {
        let (rules, max_line) = (self.opts.rules, self.opts.max_line);
        match &self.opts.format {
            Format::Lines => Ok((LineParser::lines(rules, max_line), None)),
            Format::Csv(column) => {
                let Some(raw) = blocks.take_first_line()? else {
                    // An empty input has no header and no rows.
                    return Ok((LineParser::lines(rules, max_line), None));
                };
                let header = crate::input::strip_eol(&raw);
                if csv::header_fields(header).is_none() {
                    return Err(Error::BadHeader {
                        path: blocks.path().to_path_buf(),
                    });
                }
                let col = csv::resolve(header, column).ok_or_else(|| Error::NoSuchColumn {
                    path: blocks.path().to_path_buf(),
                    column: column.to_string(),
                })?;
                Ok((
                    LineParser {
                        column: Some(col),
                        rules,
                        max_line,
                    },
                    Some(raw),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_endings() {
        let mut seen = Vec::new();
        for_each_line(b"a\r\nb\n\nc\r", |l, raw| {
            seen.push((l.to_vec(), raw.to_vec()))
        });
        assert_eq!(
            seen,
            vec![
                (b"a".to_vec(), b"a\r\n".to_vec()),
                (b"b".to_vec(), b"b\n".to_vec()),
                (b"".to_vec(), b"\n".to_vec()),
                (b"c".to_vec(), b"c\r".to_vec()),
            ]
        );
    }

    #[test]
    fn dat_lines_accept_the_trailing_comma() {
        let p = LineParser::lines(Rules::default(), 100);
        assert!(matches!(p.classify(b"9434765919,").0, Field::Valid { .. }));
        assert!(matches!(p.classify(b"9434765919").0, Field::Valid { .. }));
        assert_eq!(p.classify(b",").0, Field::Blank);
        assert_eq!(
            p.classify(b"9434765919,,").0,
            Field::Invalid(Reason::NonDigit)
        );
    }

    #[test]
    fn csv_rows() {
        let p = LineParser {
            column: Some(1),
            rules: Rules::default(),
            max_line: 100,
        };
        assert!(matches!(
            p.classify(b"1,9434765919,x").0,
            Field::Valid { .. }
        ));
        assert_eq!(p.classify(b"1,,x").0, Field::Invalid(Reason::MissingField));
        assert_eq!(p.classify(b"1").0, Field::Invalid(Reason::MissingField));
        assert_eq!(p.classify(b"  ").0, Field::Blank);
        assert_eq!(p.classify(b"1,\"943").0, Field::Invalid(Reason::BadQuoting));
    }
}
