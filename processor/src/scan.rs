//! The parallel engine: inputs as a stream of line-aligned blocks, blocks processed on a thread
//! pool, results merged back in input order.
//!
//! Blocks are processed in parallel, a bounded number ahead of the one being delivered, and
//! their results handed to the caller's visitor strictly in order, so record numbers, line
//! numbers, report rows and filtered output come out exactly as a single thread would produce
//! them. Memory is bounded by the blocks in flight (16 a thread: the mapped pages of
//! delivered blocks are released) plus at most one CSV record ([`crate::MAX_RECORD`]),
//! whatever the input's size.
//!
//! CSV records may span lines (a quoted field with a line break), so a block cut at a line
//! break may end inside a record. Each block is parsed on the guess that it starts at a record
//! boundary; a block whose last record is still open says where that record starts (its
//! *tail*), and the next block is then parsed again, in order, from the tail's start with the
//! block appended. A guess is only ever used when the block before it ended at a record
//! boundary, which is exactly when the guess is right, so the result is that of one thread
//! reading the file from the start. Wrong guesses are rare (a cut must fall on a line break
//! inside quotes) and cost one block's parse on the ordering thread.

use crate::csv::{self, Column, Delimiter, End};
use crate::error::{Error, Result};
use crate::input::{line_end, strip_eol, Blocks, Chunk, Input, IoMode};
use crate::nhs::{self, Field, Reason, Rules};
use crate::swar::{self, FastLine};
use memchr::memchr;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// How the lines of an input carry their NHS number.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Format {
    /// One number per line; a trailing comma (the POS `.dat` form `9434765919,`) is allowed.
    #[default]
    Lines,
    /// CSV (RFC 4180: quoted fields may hold delimiters, quotes and line breaks); the number is
    /// in the given column. See [`ScanOptions::header`] and [`ScanOptions::delimiter`].
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
    /// Longest line of a one-number-per-line input inspected; longer lines are quarantined as
    /// `line_too_long`.
    pub max_line: usize,
    /// Longest CSV record; a longer one makes the input refused ([`Error::RecordTooLong`]).
    pub max_record: usize,
    /// CSV field separator; `None`: tab for `.tsv`/`.tab` files, else comma.
    pub delimiter: Option<Delimiter>,
    /// CSV: the first record (after `skip_lines`) is a header row. Without one, the column
    /// must be a position.
    pub header: bool,
    /// Physical lines skipped at the start of every input, before the header (title rows,
    /// report banners). They are not records and are not copied by `filter`.
    pub skip_lines: u64,
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
            max_record: crate::MAX_RECORD,
            delimiter: None,
            header: true,
            skip_lines: 0,
        }
    }
}

/// The CSV reading of one input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CsvRead {
    /// 0-based column of the NHS number.
    column: usize,
    delim: u8,
}

/// Classifies the records of one input (its column is resolved from its header).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineParser {
    csv: Option<CsvRead>,
    rules: Rules,
    max_line: usize,
    max_record: usize,
}

/// Blank for a CSV record: nothing but spaces and tabs.
fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|&b| b == b' ' || b == b'\t')
}

impl LineParser {
    /// A parser for one-number-per-line input.
    pub(crate) fn lines(rules: Rules, max_line: usize) -> Self {
        LineParser {
            csv: None,
            rules,
            max_line,
            max_record: crate::MAX_RECORD,
        }
    }

    /// A parser for CSV records with the NHS number in field `column` (0-based).
    pub(crate) fn csv(column: usize, delim: u8, rules: Rules, max_record: usize) -> Self {
        LineParser {
            csv: Some(CsvRead { column, delim }),
            rules,
            max_line: crate::MAX_LINE,
            max_record,
        }
    }

    /// True for CSV input.
    pub(crate) fn is_csv(&self) -> bool {
        self.csv.is_some()
    }

    /// Classifies one line (without its line ending) of a one-number-per-line input. Invalid
    /// lines come with the value to report: the field, or the whole line when no field could
    /// be cut out. CSV input is classified record by record by [`Walk::next_other`].
    #[inline]
    pub(crate) fn classify<'a>(&self, line: &'a [u8]) -> (Field, &'a [u8]) {
        if line.len() > self.max_line {
            return (Field::Invalid(Reason::LineTooLong), line);
        }
        let field = line.strip_suffix(b",").unwrap_or(line);
        (nhs::classify(field, self.rules), field)
    }

    /// The field of a CSV record that starts at `start` of the data `s` was scanned in,
    /// classified: `(field, value)`.
    #[inline]
    fn classify_record<'a>(
        &self,
        record: &'a [u8],
        start: usize,
        s: &csv::Scanned,
    ) -> (Field, &'a [u8]) {
        if s.bad_quoting {
            return (Field::Invalid(Reason::BadQuoting), strip_eol(record));
        }
        match s.field {
            None => {
                let line = strip_eol(record);
                if is_blank(line) {
                    (Field::Blank, line)
                } else {
                    (Field::Invalid(Reason::MissingField), line)
                }
            }
            Some((a, b)) => {
                let field = &record[a - start..b - start];
                match nhs::classify(field, self.rules) {
                    Field::Blank if is_blank(strip_eol(record)) => (Field::Blank, field),
                    Field::Blank => (Field::Invalid(Reason::MissingField), field),
                    other => (other, field),
                }
            }
        }
    }

    /// The records of a block, in order: a cursor that alternates between runs of fast lines
    /// and single records classified the general way (see [`Walk`]). With `at_eof` the block
    /// ends the input (a CSV record still open there is `unterminated_quote`, or ends there).
    pub(crate) fn walk<'b>(&self, block: &'b [u8], at_eof: bool) -> Walk<'_, 'b> {
        Walk {
            parser: self,
            block,
            pos: 0,
            // The fast path's lines are 10 or 11 bytes long without their line ending.
            fast: self.csv.is_none() && self.max_line >= 11,
            ending: swar::Ending::default(),
            kernel: swar::Kernel::detect(),
            at_eof,
            lines: 0,
            record_line: 0,
            tail: None,
            too_long: None,
            specials: self.csv.map(|c| csv::Records::new(block, c.delim)),
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
    /// How the fast path takes lines ([`swar::Kernel::detect`]'s unless a test says).
    kernel: swar::Kernel,
    at_eof: bool,
    /// CSV: physical lines before `pos`, within the block.
    lines: u64,
    /// CSV: the physical line (within the block, 0-based) where the last record returned starts.
    record_line: u64,
    /// CSV: where the record still open at the end of the block starts.
    tail: Option<usize>,
    /// CSV: the line (within the block) of a record longer than the bound.
    too_long: Option<u64>,
    /// CSV: where the grammar's bytes are, kept from one record to the next.
    specials: Option<csv::Records<'b>>,
}

impl<'b> Walk<'_, 'b> {
    /// Hands `f(line, raw)` every line from here on that the fast path takes; stops before the
    /// first one it does not (or at the end).
    #[inline(always)]
    pub(crate) fn fast_lines(&mut self, mut f: impl FnMut(FastLine, &'b [u8])) {
        self.fast_lines_into(&mut f);
    }

    /// [`Walk::fast_lines`] into a [`swar::Take`], which may take four lines at once.
    #[inline(always)]
    pub(crate) fn fast_lines_into(&mut self, take: &mut impl swar::Take<'b>) {
        if self.fast {
            let reject = self.parser.rules.reject_placeholders;
            swar::run(
                self.block,
                &mut self.pos,
                &mut self.ending,
                reject,
                self.kernel,
                take,
            );
        }
    }

    /// CSV: hands `f(line, raw)` every record from here on that the fast record cursor reads
    /// ([`csv::Records::run`]) and whose field is ten bare digits that pass Modulus 11: valid
    /// and not normalised, as `nhs::classify` says (placeholders too, unless the rules reject
    /// them). Stops before the first record it does not take (or at the end); `line.len` is
    /// the record's length. The caller's handling compiles into the loop, as for
    /// [`Walk::fast_lines`].
    #[inline(always)]
    pub(crate) fn fast_records(&mut self, mut f: impl FnMut(FastLine, &'b [u8])) {
        let (Some(c), Some(cursor)) = (self.parser.csv, self.specials.as_mut()) else {
            return;
        };
        let block = self.block;
        let reject = self.parser.rules.reject_placeholders;
        let max_record = self.parser.max_record;
        let mut records = 0u64;
        let quoted = cursor.run(
            &mut self.pos,
            c.column,
            #[inline(always)]
            |start, end, a, b| {
                let Ok(ten) = <&[u8; 10]>::try_from(&block[a..b]) else {
                    return false;
                };
                let Some(mut l) = swar::parse_ten(ten) else {
                    return false;
                };
                if (l.placeholder && reject) || end - start > max_record {
                    return false;
                }
                records += 1;
                l.len = end - start;
                f(l, &block[start..end]);
                true
            },
        );
        self.lines += records + quoted;
    }

    /// The next record, classified the general way: `(field, value, raw)`; `None` at the end
    /// (or, for CSV, at a record the block does not finish: see [`Walk::span`]).
    #[inline]
    pub(crate) fn next_other(&mut self) -> Option<(Field, &'b [u8], &'b [u8])> {
        let (block, pos) = (self.block, self.pos);
        if pos == block.len() {
            return None;
        }
        let Some(c) = self.parser.csv else {
            let end = memchr(b'\n', &block[pos..]).map_or(block.len(), |i| pos + i + 1);
            self.pos = end;
            let raw = &block[pos..end];
            let (field, value) = self.parser.classify(strip_eol(raw));
            return Some((field, value, raw));
        };
        let specials = self.specials.as_mut()?;
        let s = csv::scan_with(specials, pos, c.column, self.at_eof);
        if s.end - pos > self.parser.max_record {
            self.too_long = Some(self.lines);
            self.pos = block.len();
            return None;
        }
        let (field, value, raw) = match s.how {
            End::Open { .. } if !self.at_eof => {
                self.tail = Some(pos);
                self.pos = block.len();
                return None;
            }
            End::Open { .. } => {
                let raw = &block[pos..];
                (Field::Invalid(Reason::UnterminatedQuote), raw, raw)
            }
            End::Complete => {
                let raw = &block[pos..s.end];
                let (field, value) = self.parser.classify_record(raw, pos, &s);
                (field, value, raw)
            }
        };
        self.pos = pos + raw.len();
        self.record_line = self.lines;
        self.lines += s.breaks as u64;
        Some((field, value, raw))
    }

    /// CSV: the physical line, counted from the block's start (0-based), where the record last
    /// returned by [`Walk::next_other`] starts; `None` for one-number-per-line input, whose
    /// lines are its records.
    #[inline]
    pub(crate) fn record_line(&self) -> Option<u64> {
        self.parser.is_csv().then_some(self.record_line)
    }

    /// What the walk covered, once it has ended: `records` records (counted by the caller),
    /// their physical lines, and a record it could not finish.
    pub(crate) fn span(&self, records: u64) -> Span {
        Span {
            records,
            lines: if self.parser.is_csv() {
                self.lines
            } else {
                records
            },
            tail: self.tail,
            too_long: self.too_long,
        }
    }
}

/// What one block's result covered, for the engine's numbering and carry-over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Span {
    /// Whole records.
    pub(crate) records: u64,
    /// Physical lines they cover.
    pub(crate) lines: u64,
    /// Where a record the block does not finish starts (CSV; its result is not counted).
    pub(crate) tail: Option<usize>,
    /// The block's line (0-based) where a record longer than the bound starts.
    pub(crate) too_long: Option<u64>,
}

/// A block's result, as the engine needs to see it.
pub(crate) trait Spanned {
    /// What the block's walk covered.
    fn span(&self) -> Span;
}

/// Walks `block` as one-number-per-line input and panics unless the walk agrees with
/// [`LineParser::classify`] on every line: the lines tile the block in order, each fast line is
/// one `classify` calls valid (not normalised) with the same number, and every other line gets
/// exactly `classify`'s outcome. For the fuzz target `walk_block` and the tests. Every kernel
/// the CPU runs ([`swar::Kernel::available`]) is checked.
#[doc(hidden)]
pub fn check_walk(block: &[u8], rules: Rules) {
    for kernel in swar::Kernel::available() {
        check_walk_with(block, rules, kernel);
    }
}

fn check_walk_with(block: &[u8], rules: Rules, kernel: swar::Kernel) {
    let parser = LineParser::lines(rules, crate::MAX_LINE);
    let mut walk = parser.walk(block, true);
    walk.kernel = kernel;
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
        parser.classify(strip_eol(raw)).0
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
    /// An input is about to be read.
    Start(&'a Started<'a>),
    /// The result of one block of the current input, and the block itself (for CSV, possibly
    /// the end of an earlier block joined to it: see the module docs).
    Block {
        /// The block's result.
        out: O,
        /// The bytes it covers.
        block: &'a [u8],
        /// Records of this input before the block's first.
        record_base: u64,
        /// Physical lines of this input before the block's first (skipped lines and the header
        /// included), so the block's first record starts on line `line_base + 1`.
        line_base: u64,
    },
}

/// How an input was opened, for the visitor and the summaries.
pub(crate) struct Started<'a> {
    /// The path as given.
    pub(crate) path: &'a Path,
    /// The CSV header record as read (with its line ending, if it has one).
    pub(crate) header: Option<&'a [u8]>,
    /// A UTF-8 byte-order mark before it was skipped.
    pub(crate) bom: bool,
    /// The input was gzip-compressed.
    pub(crate) gzip: bool,
    /// The CSV delimiter in use.
    pub(crate) delimiter: Option<Delimiter>,
    /// Physical lines skipped before the header (`skip_lines`, or fewer in a shorter input).
    pub(crate) skipped_lines: u64,
}

/// Blocks cut and not yet delivered, per worker thread: as many as the wave-by-wave engine
/// before it held (a wave of 8 a thread parsed while the one before was delivered).
const BLOCKS_IN_FLIGHT_PER_THREAD: usize = 16;

/// A thread pool and the options to read with.
pub(crate) struct Engine {
    pool: rayon::ThreadPool,
    opts: ScanOptions,
}

/// The ordering thread's running state within one input.
struct Order {
    record_base: u64,
    line_base: u64,
    /// The start of a CSV record the last block did not finish.
    pending: Option<Vec<u8>>,
}

impl Engine {
    pub(crate) fn new(opts: &ScanOptions) -> Result<Engine> {
        if opts.block_size <= opts.max_line + 2 {
            return Err(Error::Usage(format!(
                "block size must be more than {} bytes",
                opts.max_line + 2
            )));
        }
        if !opts.header {
            if let Format::Csv(Column::Name(name)) = &opts.format {
                return Err(Error::Usage(format!(
                    "--no-header needs the column as a position (--column N): without a header \
                     row there is no column {name:?}"
                )));
            }
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

    /// Runs `f` in the pool (for work between or after runs, when the pool is idle).
    pub(crate) fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// Reads every input in order, runs `work(parser, block, at_eof)` on each block in parallel
    /// and hands the results to `visit` in input order.
    ///
    /// The pool parses blocks ahead while this thread hands earlier blocks' results to `visit`
    /// (which may be writing output), so neither waits for the other: there is no barrier at
    /// the end of a wave, only a bound on the blocks in flight.
    pub(crate) fn run<O: Send + Spanned>(
        &self,
        inputs: &[PathBuf],
        work: impl Fn(&LineParser, &[u8], bool) -> O + Sync,
        mut visit: impl FnMut(Event<'_, O>) -> Result<()>,
    ) -> Result<()> {
        let in_flight = self.threads() * BLOCKS_IN_FLIGHT_PER_THREAD;
        let csv = matches!(self.opts.format, Format::Csv(_));
        let max_record = self.opts.max_record;
        for path in inputs {
            let mut input = Input::open(path, self.opts.io)?;
            let gzip = input.gzip;
            let mut blocks = Blocks::new(
                path,
                &mut input,
                self.opts.block_size,
                self.opts.max_line,
                csv,
            );
            let bom = blocks.skip_bom()?;
            let mut skipped_lines = 0;
            while skipped_lines < self.opts.skip_lines {
                let line = blocks.take_prefix(max_record, |d, eof| line_end(d, csv, eof));
                match at_line(line, skipped_lines)? {
                    Some(_) => skipped_lines += 1,
                    None => break,
                }
            }
            let (parser, header, header_lines, delimiter) =
                self.parser_for(&mut blocks, skipped_lines)?;
            visit(Event::Start(&Started {
                path,
                header: header.as_deref(),
                bom,
                gzip,
                delimiter,
                skipped_lines,
            }))?;
            let mut order = Order {
                record_base: 0,
                line_base: skipped_lines + header_lines,
                pending: None,
            };
            // Hands one block's result to `visit`, after parsing it again from the start of
            // an unfinished record carried over from the block before, if there is one.
            let mut deliver = |out: O, block: &[u8], order: &mut Order, at_eof: bool| {
                let joined;
                let (out, block) = match order.pending.take() {
                    Some(mut start) => {
                        start.extend_from_slice(block);
                        joined = start;
                        (work(&parser, &joined, at_eof), &joined[..])
                    }
                    None => (out, block),
                };
                let span = out.span();
                if let Some(line) = span.too_long {
                    return Err(Error::RecordTooLong {
                        path: path.clone(),
                        line: order.line_base + line + 1,
                        limit: max_record,
                    });
                }
                visit(Event::Block {
                    out,
                    block,
                    record_base: order.record_base,
                    line_base: order.line_base,
                })?;
                order.record_base += span.records;
                order.line_base += span.lines;
                if let Some(t) = span.tail {
                    if block.len() - t > max_record {
                        return Err(Error::RecordTooLong {
                            path: path.clone(),
                            line: order.line_base + 1,
                            limit: max_record,
                        });
                    }
                    order.pending = Some(block[t..].to_vec());
                }
                Ok(())
            };
            // Blocks flow through the pool one by one: up to `in_flight` are cut and parsed
            // ahead of the one being delivered, so the workers keep parsing while this thread
            // delivers (and `visit` writes) and neither waits for the other at a wave's end.
            let parser = &parser;
            let work = &work;
            let flowed: Result<()> = self.pool.in_place_scope(|scope| {
                let (tx, rx) = std::sync::mpsc::channel::<(usize, Chunk, std::thread::Result<O>)>();
                // Results that arrived before the block due next, by index - `next`.
                let mut arrived: VecDeque<Option<(Chunk, O)>> = VecDeque::new();
                let (mut next, mut cut, mut exhausted) = (0usize, 0usize, false);
                loop {
                    while !exhausted && cut - next < in_flight {
                        let Some(chunk) = blocks.next_block()? else {
                            exhausted = true;
                            break;
                        };
                        let tx = tx.clone();
                        let i = cut;
                        scope.spawn(move |_| {
                            // A panic is sent on too (and raised again below), so that this
                            // thread never waits for a block that will not come.
                            let out =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    work(parser, &chunk, false)
                                }));
                            // The receiver is gone only when delivering failed.
                            let _ = tx.send((i, chunk, out));
                        });
                        cut += 1;
                    }
                    if next == cut {
                        return Ok(());
                    }
                    while arrived.front().is_none_or(|a| a.is_none()) {
                        let (i, chunk, out) = rx.recv().expect("a spawned block always reports");
                        let out = out.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                        let k = i - next;
                        if arrived.len() <= k {
                            arrived.resize_with(k + 1, || None);
                        }
                        arrived[k] = Some((chunk, out));
                    }
                    let Some(Some((chunk, out))) = arrived.pop_front() else {
                        unreachable!("the front was just filled")
                    };
                    deliver(out, &chunk, &mut order, false)?;
                    blocks.recycle(chunk);
                    next += 1;
                }
            });
            flowed?;
            // The input's last record, when no line break ends it (or its quote never closes).
            if order.pending.is_some() {
                let out = work(parser, &[], true);
                deliver(out, &[], &mut order, true)?;
            }
        }
        Ok(())
    }

    /// Reads the header of a CSV input (after `skipped` lines) and works out the parser, the
    /// header record, the physical lines it covers and the delimiter.
    #[allow(clippy::type_complexity)]
    fn parser_for(
        &self,
        blocks: &mut Blocks,
        skipped: u64,
    ) -> Result<(LineParser, Option<Vec<u8>>, u64, Option<Delimiter>)> {
        let (rules, max_record) = (self.opts.rules, self.opts.max_record);
        let Format::Csv(column) = &self.opts.format else {
            return Ok((LineParser::lines(rules, self.opts.max_line), None, 0, None));
        };
        let path = blocks.path().to_path_buf();
        let delimiter = self
            .opts
            .delimiter
            .unwrap_or_else(|| Delimiter::for_path(&path));
        let delim = delimiter.byte();
        let parser = |col| LineParser::csv(col, delim, rules, max_record);
        if !self.opts.header {
            let Column::Position(p) = column else {
                unreachable!("checked in Engine::new")
            };
            return Ok((parser(p - 1), None, 0, Some(delimiter)));
        }
        let raw = blocks.take_prefix(max_record, |d, eof| {
            let s = csv::record_end(d, 0, delim, eof);
            (s.how == End::Complete || eof).then_some(s.end)
        });
        let Some(raw) = at_line(raw, skipped)? else {
            // An empty input has no header and no records.
            return Ok((parser(0), None, 0, Some(delimiter)));
        };
        let col = crate::header::column_of(&path, &raw, column, delimiter, skipped + 1)?;
        let lines = csv::count_breaks(&raw).max(1) as u64;
        Ok((parser(col), Some(raw), lines, Some(delimiter)))
    }
}

/// Puts the line number in a [`Error::RecordTooLong`] from reading the start of an input.
fn at_line<T>(r: Result<T>, before: u64) -> Result<T> {
    r.map_err(|e| match e {
        Error::RecordTooLong { path, limit, .. } => Error::RecordTooLong {
            path,
            line: before + 1,
            limit,
        },
        e => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How a test lists a field: the number, `blank` or the reason.
    fn what(field: Field) -> String {
        match field {
            Field::Valid { number, .. } => number.to_string(),
            Field::Blank => "blank".into(),
            Field::Invalid(r) => r.to_string(),
        }
    }

    /// Every line of `block` as the walk hands it over: `(fast?, valid number or reason, raw)`.
    fn walked(p: &LineParser, block: &[u8]) -> Vec<(bool, String, Vec<u8>)> {
        let mut seen = Vec::new();
        let mut walk = p.walk(block, true);
        loop {
            walk.fast_lines(|l, raw| seen.push((true, l.number.to_string(), raw.to_vec())));
            walk.fast_records(|l, raw| seen.push((true, l.number.to_string(), raw.to_vec())));
            let Some((field, _, raw)) = walk.next_other() else {
                break;
            };
            let what = what(field);
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
        let csv = LineParser::csv(0, b',', Rules::default(), 100);
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

    /// The records of a CSV block as the walk hands them over, `(number or reason, raw, line)`
    /// (the line only for records that went the general way), and the span; with `fast`, the
    /// fast records are taken first as a block walk does.
    fn csv_walk(p: &LineParser, block: &[u8], at_eof: bool, fast: bool) -> (Vec<Rec>, Span) {
        let mut seen = Vec::new();
        let mut walk = p.walk(block, at_eof);
        loop {
            if fast {
                walk.fast_records(|l, raw| seen.push((l.number.to_string(), raw.to_vec(), None)));
            }
            let Some((field, _, raw)) = walk.next_other() else {
                break;
            };
            let what = what(field);
            seen.push((what, raw.to_vec(), walk.record_line()));
        }
        let span = walk.span(seen.len() as u64);
        (seen, span)
    }

    type Rec = (String, Vec<u8>, Option<u64>);

    proptest::proptest! {
        #[test]
        fn fast_csv_records_agree_with_the_general_walk(
            records in proptest::collection::vec(
                (
                    proptest::collection::vec(
                        proptest::sample::select(vec![
                            "9434765919", "\"9434765919\"", "9999999999", "9434765918",
                            "943 476 5919", "x", "", "\"a,\r\nb\"", "\"q\"\"x\"", "\"\n\"",
                            "5\" x", "\"ab\"c", "\"open", "\"\r\"", "a long field of text",
                        ]),
                        0..5,
                    ),
                    proptest::sample::select(vec!["\n", "\r\n", "\r", "\r\n"]),
                ),
                0..30,
            ),
            column in 0usize..3,
            reject in proptest::bool::ANY,
            at_eof in proptest::bool::ANY,
            cut in 0usize..64,
        ) {
            let mut block: Vec<u8> = Vec::new();
            for (fields, end) in &records {
                block.extend_from_slice(fields.join(",").as_bytes());
                block.extend_from_slice(end.as_bytes());
            }
            // Also cut short anywhere in the last 64 bytes: records reaching the data's end.
            let block = &block[..block.len() - cut.min(block.len())];
            let rules = Rules { strict: false, reject_placeholders: reject };
            let p = LineParser::csv(column, b',', rules, 1 << 20);
            let (slow, slow_span) = csv_walk(&p, block, at_eof, false);
            let (fast, fast_span) = csv_walk(&p, block, at_eof, true);
            proptest::prop_assert_eq!(slow_span, fast_span);
            proptest::prop_assert_eq!(slow.len(), fast.len());
            for (s, f) in slow.iter().zip(&fast) {
                proptest::prop_assert_eq!(&s.0, &f.0);
                proptest::prop_assert_eq!(&s.1, &f.1);
                if f.2.is_some() {
                    proptest::prop_assert_eq!(s.2, f.2);
                }
            }
        }
    }

    #[test]
    fn csv_rows() {
        let p = LineParser::csv(1, b',', Rules::default(), 1000);
        let got = walked(
            &p,
            b"1,9434765919,x\n1,,x\n1\n  \n1,\"943\n2,\"a\"b,9434765919\r\n3,\"9434765919\"\r",
        );
        let what: Vec<&str> = got.iter().map(|g| g.1.as_str()).collect();
        assert_eq!(
            what,
            vec![
                "9434765919",
                "missing_field",
                "missing_field",
                "blank",
                // The quote opened on the line before closes before `a`: text after it.
                "bad_quoting",
                "9434765919",
            ]
        );
        // The first record goes the fast way, the quoted number at the data's end does not.
        assert!(got[0].0 && got[1..].iter().all(|g| !g.0));
        let got = walked(&p, b"1,9434765919\n1,\"943\n2,x\n");
        assert_eq!(got[1].1, "unterminated_quote");
        assert_eq!(got[1].2, b"1,\"943\n2,x\n");
        // Not at the end of the input: the open record is left for the next block.
        let mut walk = p.walk(b"1,9434765919\n2,\"94347\n", false);
        assert!(walk.next_other().is_some());
        assert!(walk.next_other().is_none());
        assert_eq!(walk.span(1).tail, Some(13));
        let got = walked(&p, b"2,\"a\"b,9434765919\r\n3,\"9434765919\"\r");
        assert_eq!(got[0].1, "bad_quoting");
        assert_eq!(got[1].1, "9434765919");
    }

    /// A block's result for the engine tests: its bytes, and a span of nothing.
    struct Bytes(Vec<u8>);

    impl Spanned for Bytes {
        fn span(&self) -> Span {
            Span::default()
        }
    }

    /// Blocks flow through the pool ahead of the one delivered, and are still delivered in
    /// input order; a panic in one block's work reaches the caller instead of leaving the
    /// ordering thread waiting for a block that never comes.
    #[test]
    fn blocks_come_back_in_order_and_a_panic_reaches_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.dat");
        let text: Vec<u8> = (0..40_000u32)
            .flat_map(|i| format!("{}\n", 9_990_000_000u64 + u64::from(i)).into_bytes())
            .collect();
        std::fs::write(&path, &text).unwrap();
        for io in [IoMode::Mmap, IoMode::Read] {
            let opts = ScanOptions {
                threads: 3,
                io,
                block_size: 4096,
                max_line: 100,
                ..Default::default()
            };
            let engine = Engine::new(&opts).unwrap();
            let inputs = [path.clone()];
            let mut got = Vec::new();
            engine
                .run(
                    &inputs,
                    |_, block, _| Bytes(block.to_vec()),
                    |event| {
                        if let Event::Block { out, block, .. } = event {
                            assert_eq!(out.0, block);
                            got.extend_from_slice(block);
                        }
                        Ok(())
                    },
                )
                .unwrap();
            assert!(got == text, "{io:?}: every block, in order");
            let seen = std::sync::atomic::AtomicUsize::new(0);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                engine.run(
                    &inputs,
                    |_, block, _| {
                        if seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 40 {
                            panic!("block 40");
                        }
                        Bytes(block.to_vec())
                    },
                    |_| Ok(()),
                )
            }));
            assert!(r.is_err(), "{io:?}: the panic reaches the caller");
        }
    }
}
