//! The parallel engine: inputs in waves of line-aligned blocks, blocks processed on a thread
//! pool, results merged back in input order.
//!
//! Each wave holds a few blocks per thread; the blocks of a wave are processed in parallel and
//! their results handed to the caller's visitor strictly in order, so line numbers, report rows
//! and filtered output come out exactly as a single thread would produce them. Memory is bounded
//! by one wave (the mapped pages of finished waves are released), whatever the input's size.

use crate::csv::{self, Column};
use crate::error::{Error, Result};
use crate::input::{Blocks, Chunk, Input, IoMode};
use crate::nhs::{self, Field, Reason, Rules};
use crate::swar::{self, FastLine};
use memchr::memchr;
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
            block_size: 2 << 20,
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

    /// The lines of a block, in order: a cursor that alternates between runs of fast lines and
    /// single lines classified the general way (see [`Walk`]).
    pub(crate) fn walk<'b>(&self, block: &'b [u8]) -> Walk<'_, 'b> {
        Walk {
            parser: self,
            block,
            pos: 0,
            // The fast path's lines are 10 or 11 bytes long without their line ending.
            fast: self.column.is_none() && self.max_line >= 11,
            ending: swar::Ending::default(),
        }
    }
}

/// A cursor over the lines of a block, used as
/// ```ignore
/// let mut walk = parser.walk(block);
/// loop {
///     walk.fast_lines(|line, raw| { /* a valid bare number */ });
///     let Some((field, value, raw)) = walk.next_other() else { break };
///     /* anything else, as `LineParser::classify` sees it */
/// }
/// ```
/// Lines of ten bare digits that pass Modulus 11 go to `fast_lines` (see [`swar`]; `classify`
/// would call them valid and not normalised). `fast_lines` is a tight loop of its own, so the
/// caller's handling of the common line compiles into it with its counters in registers.
/// `raw` is always the line as read, with its line ending.
pub(crate) struct Walk<'p, 'b> {
    parser: &'p LineParser,
    block: &'b [u8],
    pos: usize,
    fast: bool,
    /// The line ending the fast path expects: the last one it saw.
    ending: swar::Ending,
}

impl<'b> Walk<'_, 'b> {
    /// Hands `f(line, raw)` every line from here on that the fast path takes; stops before the
    /// first one it does not (or at the end).
    #[inline(always)]
    pub(crate) fn fast_lines(&mut self, f: impl FnMut(FastLine, &'b [u8])) {
        if self.fast {
            let reject = self.parser.rules.reject_placeholders;
            swar::run(self.block, &mut self.pos, &mut self.ending, reject, f);
        }
    }

    /// The next line, classified the general way: `(field, value, raw)`; `None` at the end.
    #[inline]
    pub(crate) fn next_other(&mut self) -> Option<(Field, &'b [u8], &'b [u8])> {
        let (block, pos) = (self.block, self.pos);
        if pos == block.len() {
            return None;
        }
        let end = memchr(b'\n', &block[pos..]).map_or(block.len(), |i| pos + i + 1);
        self.pos = end;
        let raw = &block[pos..end];
        let (field, value) = self.parser.classify(crate::input::strip_eol(raw));
        Some((field, value, raw))
    }
}

/// Walks `block` as one-number-per-line input and panics unless the walk agrees with
/// [`LineParser::classify`] on every line: the lines tile the block in order, each fast line is
/// one `classify` calls valid (not normalised) with the same number, and every other line gets
/// exactly `classify`'s outcome. For the fuzz target `walk_block` and the tests.
#[doc(hidden)]
pub fn check_walk(block: &[u8], rules: Rules) {
    let parser = LineParser::lines(rules, crate::MAX_LINE);
    let mut walk = parser.walk(block);
    let mut at = 0;
    let mut next = |raw: &[u8]| {
        assert_eq!(
            raw.as_ptr() as usize - block.as_ptr() as usize,
            at,
            "lines out of order"
        );
        at += raw.len();
        let eol = memchr(b'\n', raw).map_or(raw.len(), |i| i + 1);
        assert_eq!(eol, raw.len(), "a line runs past its line end");
        parser.classify(crate::input::strip_eol(raw)).0
    };
    loop {
        walk.fast_lines(|l, raw| {
            let want = Field::Valid {
                number: l.number,
                normalised: false,
                placeholder: l.placeholder,
            };
            assert_eq!(next(raw), want);
            assert_eq!(l.prefix as u64, l.number / 10);
        });
        let Some((field, _, raw)) = walk.next_other() else {
            break;
        };
        assert_eq!(next(raw), field);
    }
    assert_eq!(at, block.len(), "lines do not cover the block");
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
    /// ending, if it has one); `bom` says whether a UTF-8 byte-order mark before it was skipped.
    Start {
        path: &'a Path,
        header: Option<&'a [u8]>,
        bom: bool,
    },
    /// The result of one block of the current input, and the block itself.
    Block { out: O, block: &'a [u8] },
}

/// Blocks per worker thread in a wave: enough that the threads finish a wave close together.
const WAVE_BLOCKS_PER_THREAD: usize = 8;

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
    ///
    /// Waves overlap: while the pool works on one wave, this thread hands the previous wave's
    /// results to `visit` (which may be writing output), so neither waits for the other.
    pub(crate) fn run<O: Send>(
        &self,
        inputs: &[PathBuf],
        work: impl Fn(&LineParser, &[u8]) -> O + Sync,
        mut visit: impl FnMut(Event<'_, O>) -> Result<()>,
    ) -> Result<()> {
        let wave_len = self.threads() * WAVE_BLOCKS_PER_THREAD;
        for path in inputs {
            let mut input = Input::open(path, self.opts.io)?;
            let mut blocks =
                Blocks::new(path, &mut input, self.opts.block_size, self.opts.max_line);
            let bom = blocks.skip_bom()?;
            let (parser, header) = self.parser_for(&mut blocks)?;
            visit(Event::Start {
                path,
                header: header.as_deref(),
                bom,
            })?;
            let mut done: Option<(Vec<Chunk>, Vec<O>)> = None;
            loop {
                let wave = blocks.next_wave(wave_len)?;
                if wave.is_empty() && done.is_none() {
                    break;
                }
                let mut outs = Vec::new();
                let mut visited = Ok(());
                self.pool.in_place_scope(|scope| {
                    scope.spawn(|_| {
                        outs = wave.par_iter().map(|b| work(&parser, b)).collect();
                    });
                    if let Some((chunks, results)) = done.take() {
                        visited = chunks
                            .iter()
                            .zip(results)
                            .try_for_each(|(chunk, out)| visit(Event::Block { out, block: chunk }));
                        blocks.recycle(chunks);
                    }
                });
                visited?;
                if !wave.is_empty() {
                    done = Some((wave, outs));
                }
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

    /// Every line of `block` as the walk hands it over: `(fast?, valid number or reason, raw)`.
    fn walked(p: &LineParser, block: &[u8]) -> Vec<(bool, String, Vec<u8>)> {
        let mut seen = Vec::new();
        let mut walk = p.walk(block);
        loop {
            walk.fast_lines(|l, raw| seen.push((true, l.number.to_string(), raw.to_vec())));
            let Some((field, _, raw)) = walk.next_other() else {
                break;
            };
            let what = match field {
                Field::Valid { number, .. } => number.to_string(),
                Field::Blank => "blank".into(),
                Field::Invalid(r) => r.to_string(),
            };
            seen.push((false, what, raw.to_vec()));
        }
        seen
    }

    #[test]
    fn lines_and_endings() {
        let p = LineParser::lines(Rules::default(), 100);
        let block = b"9434765919,\r\n9434765919\n\n943 476 5919\r\n9434765919,\n9434765918\n\
            9434765919\r\n9434765919,\r\n9434765919,\r";
        let got = walked(&p, block);
        let want: Vec<(bool, &str, &[u8])> = vec![
            (true, "9434765919", b"9434765919,\r\n"),
            (true, "9434765919", b"9434765919\n"),
            (false, "blank", b"\n"),
            (false, "9434765919", b"943 476 5919\r\n"),
            (true, "9434765919", b"9434765919,\n"),
            (false, "check_digit_mismatch", b"9434765918\n"),
            (true, "9434765919", b"9434765919\r\n"),
            (true, "9434765919", b"9434765919,\r\n"),
            // Too close to the end of the block for the fast path's 16-byte window.
            (false, "9434765919", b"9434765919,\r"),
        ];
        let want: Vec<_> = want
            .into_iter()
            .map(|(f, w, r)| (f, w.to_string(), r.to_vec()))
            .collect();
        assert_eq!(got, want);
        // Every line the same whichever way it goes.
        let csv = LineParser {
            column: Some(0),
            ..p
        };
        let slow: Vec<_> = walked(&csv, block)
            .into_iter()
            .map(|(_, w, r)| (w, r))
            .collect();
        let fast: Vec<_> = got.into_iter().map(|(_, w, r)| (w, r)).collect();
        assert_eq!(slow.len(), fast.len());
        assert_eq!(slow[0], fast[0]);
    }

    #[test]
    fn placeholders_leave_the_fast_path_when_rejected() {
        let block = b"9999999999,\r\n9434765919,\r\n0000000000,\r\n9434765919,\r\n9434765919,\r\n";
        let keep = LineParser::lines(Rules::default(), 100);
        let kept = walked(&keep, block);
        // All but the last line, which is too close to the end for the 16-byte window.
        assert!(kept[..4].iter().all(|l| l.0) && !kept[4].0);
        let reject = LineParser::lines(
            Rules {
                reject_placeholders: true,
                ..Rules::default()
            },
            100,
        );
        let got = walked(&reject, block);
        assert_eq!(
            got[0],
            (false, "placeholder".into(), b"9999999999,\r\n".to_vec())
        );
        assert_eq!(got[2].1, "placeholder");
        assert!(got[1].0 && got[3].0);
        // A max_line below the fast path's line length turns it off.
        let short = LineParser::lines(Rules::default(), 10);
        assert_eq!(walked(&short, block)[1].1, "line_too_long");
    }

    proptest::proptest! {
        #[test]
        fn the_walk_agrees_with_classify(
            lines in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "9434765919", "9434765918", "9999999999", "0000000000", "1000000010",
                        "943476591", " 9434765919", "943 476 5919", "", "x",
                    ]),
                    proptest::sample::select(vec!["", ","]),
                    proptest::sample::select(vec!["\n", "\r\n", "\r", ""]),
                ),
                0..40,
            ),
            reject in proptest::bool::ANY,
        ) {
            let block: String = lines.iter().map(|(v, c, e)| format!("{v}{c}{e}")).collect();
            check_walk(
                block.as_bytes(),
                Rules { strict: false, reject_placeholders: reject },
            );
        }
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
