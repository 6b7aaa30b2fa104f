//! Reconciliation: who opted out.
//!
//! The POS answers a request file with the same file minus the numbers of patients who opted
//! out, so the opted-out patients are *requested minus returned*. Numbers returned that were
//! never requested cannot happen with a correct service and are reported as `unexpected`. An
//! empty result means every requested patient opted out; it is not an error. A result that is
//! the POS's rejection line, or that holds anything but NHS numbers, is an error.
//!
//! Both sides are read by the engine into [`NumberSet`]s (119 MiB each, whatever the size of
//! the files), so this runs at the speed of reading; the result side can instead come from the
//! check of the replies as they arrived ([`ReplyLines::collecting`], [`returned_from`]).

use crate::dat::DatFile;
use crate::error::{Error, Result};
use crate::files::{create_private, ensure_empty_dir, sync_dir, write_atomic};
use crate::pos::REJECTION_LINE;
use crate::scan::{Format, ScanOptions};
use crate::seen::NumberSet;
use crate::validate::{validate, Counts, InputSummary, Validated};
use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The opted-out numbers, one per line, ascending.
pub const OPTED_OUT_FILE: &str = "opted-out.txt";
/// Numbers returned that were never requested, one per line, ascending.
pub const UNEXPECTED_FILE: &str = "unexpected.txt";
/// The reconciliation summary.
pub const SUMMARY_JSON: &str = "summary.json";

/// What a reconciliation found.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileSummary {
    /// Distinct numbers requested.
    pub requested: u64,
    /// Distinct numbers returned by the POS.
    pub returned: u64,
    /// Requested but not returned: the patients who opted out.
    pub opted_out: u64,
    /// Returned but never requested (should be zero; anything else is a fault upstream).
    pub unexpected: u64,
    /// Lines in the request files (duplicates included).
    pub request_lines: u64,
    /// Lines in the result files (duplicates included).
    pub response_lines: u64,
    /// The request files.
    pub requests: Vec<InputSummary>,
    /// The result files.
    pub responses: Vec<InputSummary>,
    /// The files written, relative to the output directory.
    pub files: Vec<String>,
    /// Worker threads used.
    pub threads: usize,
    /// Wall-clock time.
    pub elapsed_seconds: f64,
}

/// A reconciliation and the sets it computed, for a filter to use.
pub struct Reconciled {
    /// The summary (also written to `summary.json`).
    pub summary: ReconcileSummary,
    /// The numbers requested.
    pub requested: NumberSet,
    /// The numbers returned: the patients whose data may be used.
    pub returned: NumberSet,
}

/// Reads the numbers of POS files (request `.dat` files or result files) into a set. Every line
/// must be a valid NHS number (optionally followed by a comma) or blank; a file that is the
/// POS's rejection line gives [`Error::PosRejected`].
pub fn read_numbers(
    files: &[PathBuf],
    role: &'static str,
    opts: &ScanOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<Validated> {
    for f in files {
        if is_rejection(f)? {
            return Err(Error::PosRejected { path: f.clone() });
        }
    }
    let opts = ScanOptions {
        format: Format::Lines,
        ..opts.clone()
    };
    let v = validate(files, &opts, None, progress)?;
    if let Some(bad) = v.inputs.iter().find(|i| i.invalid > 0) {
        return Err(Error::NotPosFile {
            path: bad.path.clone().into(),
            role,
            invalid: bad.invalid,
        });
    }
    Ok(v)
}

/// The request side of a reconciliation from what [`crate::prepare::prepare_keeping_set`]
/// returned, without reading the `.dat` files back: `set` holds exactly the numbers of `files`
/// (written into `dir` from it, one number a line, each number in one file only), so the counts
/// and per-file figures are what [`read_numbers`] of those files gives (role `"request"`).
/// `threads` is the prepare's.
pub fn requested_from(set: NumberSet, dir: &Path, files: &[DatFile], threads: usize) -> Validated {
    let lines: u64 = files.iter().map(|f| f.records).sum();
    // repdigits such as 1111111111 that pass Modulus 11 are counted as placeholders when read
    let placeholder = (0..10u64)
        .filter(|d| set.contains(d * 1_111_111_111))
        .count() as u64;
    let inputs = files
        .iter()
        .map(|f| InputSummary {
            path: dir.join(&f.name).display().to_string(),
            lines: f.records,
            invalid: 0,
            bytes: f.bytes,
            compression: "none",
            delimiter: None,
            skipped_lines: 0,
        })
        .collect();
    Validated {
        counts: Counts {
            lines,
            valid: lines,
            unique: lines,
            placeholder,
            ..Counts::default()
        },
        inputs,
        set,
        threads,
    }
}

/// True when the file is the POS's rejection reply (standard input is never one: it cannot be
/// read twice).
fn is_rejection(path: &Path) -> Result<bool> {
    if path == Path::new("-") {
        return Ok(false);
    }
    let mut head = Vec::with_capacity(128);
    File::open(path)
        .and_then(|f| f.take(128).read_to_end(&mut head))
        .map_err(|e| Error::read(path, e))?;
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&head);
    Ok(text.trim_ascii().starts_with(REJECTION_LINE.as_bytes()))
}

/// Reconciles request files against POS result files, writing `opted-out.txt`,
/// `unexpected.txt` and `summary.json` (mode 0600) into `out_dir`, which must be new or empty.
/// `progress` is called with the bytes read so far over both sides.
pub fn reconcile(
    requests: &[PathBuf],
    responses: &[PathBuf],
    opts: &ScanOptions,
    out_dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<Reconciled> {
    let started = Instant::now();
    ensure_empty_dir(out_dir)?;
    let req = read_numbers(requests, "request", opts, progress)?;
    reconcile_read(req, started, responses, opts, out_dir, progress)
}

/// [`reconcile`] with the request side already read by [`read_numbers`] (role `"request"`),
/// e.g. on another thread while the POS was still working on them. The summary's
/// `elapsed_seconds` counts from this call.
pub fn reconcile_with(
    requested: Validated,
    responses: &[PathBuf],
    opts: &ScanOptions,
    out_dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<Reconciled> {
    let started = Instant::now();
    ensure_empty_dir(out_dir)?;
    reconcile_read(requested, started, responses, opts, out_dir, progress)
}

/// [`reconcile_with`] with the result side too already known: `returned` as
/// [`returned_from`] gives it from the replies' sets built while they were checked, which is
/// what [`read_numbers`] of those files (role `"result"`) gives. Nothing is read.
pub fn reconcile_known(
    requested: Validated,
    returned: Validated,
    out_dir: &Path,
) -> Result<Reconciled> {
    let started = Instant::now();
    ensure_empty_dir(out_dir)?;
    reconcile_sets(requested, returned, started, out_dir)
}

/// The rest of a reconciliation once the request side is read.
fn reconcile_read(
    req: Validated,
    started: Instant,
    responses: &[PathBuf],
    opts: &ScanOptions,
    out_dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<Reconciled> {
    let done: u64 = req.inputs.iter().map(|i| i.bytes).sum();
    let resp = read_numbers(responses, "result", opts, &mut |b| progress(done + b))?;
    reconcile_sets(req, resp, started, out_dir)
}

/// The set differences and the files, once both sides are known.
fn reconcile_sets(
    req: Validated,
    resp: Validated,
    started: Instant,
    out_dir: &Path,
) -> Result<Reconciled> {
    let opted_out = write_numbers(&out_dir.join(OPTED_OUT_FILE), |f| {
        req.set.for_each_not_in(&resp.set, f)
    })?;
    let unexpected = write_numbers(&out_dir.join(UNEXPECTED_FILE), |f| {
        resp.set.for_each_not_in(&req.set, f)
    })?;
    let mut summary = ReconcileSummary {
        requested: req.counts.unique,
        returned: resp.counts.unique,
        opted_out,
        unexpected,
        request_lines: req.counts.lines,
        response_lines: resp.counts.lines,
        requests: req.inputs,
        responses: resp.inputs,
        files: vec![OPTED_OUT_FILE.into(), UNEXPECTED_FILE.into()],
        threads: req.threads,
        elapsed_seconds: 0.0,
    };
    summary.elapsed_seconds = started.elapsed().as_secs_f64();
    let json = serde_json::to_vec_pretty(&summary).expect("summary serialises");
    write_atomic(out_dir, SUMMARY_JSON, &json)?;
    sync_dir(out_dir)?;
    Ok(Reconciled {
        summary,
        requested: req.set,
        returned: resp.set,
    })
}

/// The line check of a POS cleaned reply, fed in blocks of any size as the reply arrives (a
/// download's pieces, or a file's reads): every line must be ten digits passing Modulus 11, an
/// optional comma, then CRLF or LF (the last line may lack its ending); an empty reply has no
/// lines (everyone opted out). Lines are taken by the engine's fast line path (sixteen bytes at
/// a time, no search for the line end); a line it does not take, and one cut by the end of a
/// block, is judged by [`is_reply_line`](crate::pos::is_reply_line). An error names the first
/// bad line by number, never its content.
#[derive(Debug, Default)]
pub struct ReplyLines {
    /// Good lines so far.
    records: u64,
    /// Bytes of a line cut by the end of the previous block (at most [`MAX_REPLY_LINE`]).
    carry: Vec<u8>,
    /// The line ending the fast path expects next.
    ending: crate::swar::Ending,
    /// The first bad line, once found.
    bad: Option<u64>,
    /// The numbers of the good lines, when asked for ([`ReplyLines::collecting`]).
    numbers: Option<Gathered>,
}

/// The numbers of a reply's lines as [`ReplyLines`] takes them: the set, and the word of it
/// being filled (a reply is in ascending order, so most lines fall in the word of the line
/// before: one write to the set a word, not one a line).
#[derive(Default)]
struct Gathered {
    /// The numbers of the words written so far.
    set: NumberSet,
    /// Index of the word being filled.
    word: usize,
    /// Its bits so far.
    bits: u64,
    /// Lines holding a repdigit (a placeholder such as 1111111111).
    placeholders: u64,
}

impl std::fmt::Debug for Gathered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the numbers
        f.debug_struct("Gathered")
            .field("placeholders", &self.placeholders)
            .finish_non_exhaustive()
    }
}

impl Gathered {
    /// Adds the number whose first nine digits are `prefix`.
    fn add(&mut self, prefix: u32, placeholder: bool) {
        gather(&self.set, &mut self.word, &mut self.bits, prefix);
        self.placeholders += u64::from(placeholder);
    }

    /// Writes the word being filled into the set.
    fn flush(&mut self) {
        self.set.insert_word_unshared(self.word, self.bits);
        self.bits = 0;
    }
}

/// Adds `prefix` to the word being filled (index `word`, bits `bits`), first writing that word
/// into `set` when `prefix` falls in another.
#[inline(always)]
fn gather(set: &NumberSet, word: &mut usize, bits: &mut u64, prefix: u32) {
    let at = (prefix >> 6) as usize;
    if at != *word {
        set.insert_word_unshared(*word, *bits);
        (*word, *bits) = (at, 0);
    }
    *bits |= 1 << (prefix & 63);
}

/// The numbers of one cleaned reply, gathered as [`ReplyLines`] checked it
/// ([`ReplyLines::collecting`], [`ReplyLines::finish_gathered`]): with [`returned_from`], the
/// result side of a reconciliation without reading the reply again.
pub struct ReplyNumbers {
    /// The distinct numbers.
    set: NumberSet,
    /// Its lines (all good).
    lines: u64,
    /// Its size in bytes.
    bytes: u64,
    /// Lines holding a repdigit.
    placeholders: u64,
}

impl std::fmt::Debug for ReplyNumbers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the numbers
        f.debug_struct("ReplyNumbers")
            .field("lines", &self.lines)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// The result side of a reconciliation from the replies' numbers gathered while they were
/// checked (each with the path of the file it was checked as), in the order of `replies`: what
/// [`read_numbers`] of those files (role `"result"`, options `opts`) gives. `None` when reading
/// the files could give something else: `opts` rejects placeholders and a reply holds one
/// (reading would refuse the file); then read them.
pub fn returned_from(
    replies: Vec<(PathBuf, ReplyNumbers)>,
    opts: &ScanOptions,
) -> Option<Validated> {
    if opts.rules.reject_placeholders && replies.iter().any(|(_, r)| r.placeholders > 0) {
        return None;
    }
    let mut lines = 0u64;
    let mut placeholder = 0u64;
    let mut inputs = Vec::with_capacity(replies.len());
    let mut set: Option<NumberSet> = None;
    for (path, reply) in replies {
        lines += reply.lines;
        placeholder += reply.placeholders;
        inputs.push(InputSummary {
            path: path.display().to_string(),
            lines: reply.lines,
            invalid: 0,
            bytes: reply.bytes,
            compression: "none",
            delimiter: None,
            skipped_lines: 0,
        });
        match &set {
            None => set = Some(reply.set),
            Some(all) => reply
                .set
                .for_each_nonzero_word(|i, bits| _ = all.insert_word(i, bits)),
        }
    }
    let set = set.unwrap_or_default();
    let unique = set.len();
    Some(Validated {
        counts: Counts {
            lines,
            valid: lines,
            unique,
            duplicates: lines.saturating_sub(unique),
            placeholder,
            ..Counts::default()
        },
        inputs,
        set,
        threads: 1,
    })
}

/// Longest line of a cleaned reply looked at: a POS line is at most 13 bytes
/// (`NNNNNNNNNN,\r\n`), so anything longer is refused without being gathered whole.
const MAX_REPLY_LINE: usize = 64;

impl ReplyLines {
    /// A check at the start of a reply.
    pub fn new() -> ReplyLines {
        ReplyLines::default()
    }

    /// A check at the start of a reply that also gathers the numbers of its lines
    /// ([`ReplyLines::finish_gathered`]).
    pub fn collecting() -> ReplyLines {
        ReplyLines {
            numbers: Some(Gathered::default()),
            ..ReplyLines::default()
        }
    }

    /// Checks the next bytes of the reply. `Err(n)`: line `n` (1-based) is not a reply line;
    /// once found, every later call gives the same error.
    pub fn feed(&mut self, block: &[u8]) -> std::result::Result<(), u64> {
        // Compiled for the CPU's fast-line kernel (see `swar::for_cpu`).
        crate::swar::for_cpu(
            #[inline(always)]
            || self.feed_with(block, crate::swar::Kernel::detect()),
        )
    }

    /// [`ReplyLines::feed`], the fast lines taken by `kernel`.
    #[inline(always)]
    fn feed_with(
        &mut self,
        block: &[u8],
        kernel: crate::swar::Kernel,
    ) -> std::result::Result<(), u64> {
        if let Some(bad) = self.bad {
            return Err(bad);
        }
        let mut pos = 0;
        if !self.carry.is_empty() {
            // the end of the line the previous block cut
            let Some(end) = memchr::memchr(b'\n', block) else {
                self.carry.extend_from_slice(block);
                return self.cap_carry();
            };
            self.carry.extend_from_slice(&block[..=end]);
            let carry = std::mem::take(&mut self.carry);
            let ok = carry.len() <= MAX_REPLY_LINE && self.general(&carry);
            self.carry = carry;
            self.carry.clear();
            self.line(ok)?;
            pos = end + 1;
        }
        loop {
            let records = &mut self.records;
            match &mut self.numbers {
                None => crate::swar::run(
                    block,
                    &mut pos,
                    &mut self.ending,
                    false,
                    kernel,
                    &mut |_, _| *records += 1,
                ),
                Some(numbers) => {
                    // the word being filled and the counts in locals (registers), not in memory
                    let set = &numbers.set;
                    let (mut word, mut bits) = (numbers.word, numbers.bits);
                    let (mut lines, mut placeholders) = (0u64, 0u64);
                    crate::swar::run(
                        block,
                        &mut pos,
                        &mut self.ending,
                        false,
                        kernel,
                        &mut |line: crate::swar::FastLine, _: &[u8]| {
                            lines += 1;
                            placeholders += u64::from(line.placeholder);
                            gather(set, &mut word, &mut bits, line.prefix);
                        },
                    );
                    (numbers.word, numbers.bits) = (word, bits);
                    numbers.placeholders += placeholders;
                    *records += lines;
                }
            }
            let rest = &block[pos..];
            match memchr::memchr(b'\n', rest) {
                Some(end) => {
                    let ok = self.general(&rest[..=end]);
                    self.line(ok)?;
                    pos += end + 1;
                }
                None => {
                    self.carry.extend_from_slice(rest);
                    return self.cap_carry();
                }
            }
        }
    }

    /// The number of lines, once the last (which may lack its line ending) is checked; or the
    /// first bad line.
    pub fn finish(mut self) -> std::result::Result<u64, u64> {
        if let Some(bad) = self.bad {
            return Err(bad);
        }
        if !self.carry.is_empty() {
            let carry = std::mem::take(&mut self.carry);
            let ok = self.general(&carry);
            self.line(ok)?;
        }
        Ok(self.records)
    }

    /// [`ReplyLines::finish`], with the numbers gathered when the check was made
    /// [`ReplyLines::collecting`] (`bytes`: the reply's size, for the per-file figures).
    pub fn finish_gathered(
        mut self,
        bytes: u64,
    ) -> std::result::Result<(u64, Option<ReplyNumbers>), u64> {
        if let Some(bad) = self.bad {
            return Err(bad);
        }
        let mut numbers = self.numbers.take();
        // the last line, if cut, is judged (and its number gathered) by `finish`
        if let Some(n) = numbers.as_mut().filter(|_| !self.carry.is_empty()) {
            let carry = std::mem::take(&mut self.carry);
            let ok = is_reply_line_gathering(&carry, n);
            self.line(ok)?;
        }
        let lines = self.finish()?;
        Ok((
            lines,
            numbers.map(|mut n| {
                n.flush();
                ReplyNumbers {
                    set: n.set,
                    lines,
                    bytes,
                    placeholders: n.placeholders,
                }
            }),
        ))
    }

    /// Judges one line by the general path, gathering its number if asked to.
    fn general(&mut self, line: &[u8]) -> bool {
        match &mut self.numbers {
            None => crate::pos::is_reply_line(line),
            Some(numbers) => is_reply_line_gathering(line, numbers),
        }
    }

    /// Counts one line judged by the general path.
    fn line(&mut self, ok: bool) -> std::result::Result<(), u64> {
        if ok {
            self.records += 1;
            Ok(())
        } else {
            let bad = self.records + 1;
            self.bad = Some(bad);
            Err(bad)
        }
    }

    /// Refuses a cut line already longer than any reply line.
    fn cap_carry(&mut self) -> std::result::Result<(), u64> {
        if self.carry.len() > MAX_REPLY_LINE {
            return self.line(false);
        }
        Ok(())
    }
}

/// [`crate::pos::is_reply_line`], adding the line's number to `numbers` when it is one.
fn is_reply_line_gathering(line: &[u8], numbers: &mut Gathered) -> bool {
    if !crate::pos::is_reply_line(line) {
        return false;
    }
    // a reply line starts with its ten digits
    let prefix = line[..9]
        .iter()
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    numbers.add(prefix, prefix % 111_111_111 == 0);
    true
}

/// Writes the numbers `each` yields, one per line (LF), to a new private file; returns how many.
fn write_numbers(path: &Path, each: impl FnOnce(&mut dyn FnMut(u64))) -> Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, create_private(path)?);
    let mut n = 0u64;
    let mut failed = None;
    let mut digits = [0u8; 10];
    each(&mut |number| {
        if failed.is_some() {
            return;
        }
        crate::nhs::write_digits(number, &mut digits);
        if let Err(e) = out.write_all(&digits).and_then(|_| out.write_all(b"\n")) {
            failed = Some(e);
        }
        n += 1;
    });
    if let Some(e) = failed {
        return Err(Error::write(path, e));
    }
    let file = out
        .into_inner()
        .map_err(|e| Error::write(path, e.into_error()))?;
    file.sync_all().map_err(|e| Error::write(path, e))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn opted_out_is_requested_minus_returned() {
        let dir = tempfile::tempdir().unwrap();
        let req = write(
            dir.path(),
            "req.dat",
            "9434765919,\r\n9694116414,\r\n9694116538,\r\n",
        );
        let resp = write(dir.path(), "resp.dat", "9434765919,\r\n9876543210,\r\n");
        let out = dir.path().join("out");
        let r = reconcile(&[req], &[resp], &ScanOptions::default(), &out, &mut |_| {}).unwrap();
        let s = &r.summary;
        assert_eq!(
            (s.requested, s.returned, s.opted_out, s.unexpected),
            (3, 2, 2, 1)
        );
        assert_eq!(
            std::fs::read_to_string(out.join(OPTED_OUT_FILE)).unwrap(),
            "9694116414\n9694116538\n"
        );
        assert_eq!(
            std::fs::read_to_string(out.join(UNEXPECTED_FILE)).unwrap(),
            "9876543210\n"
        );
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(SUMMARY_JSON)).unwrap()).unwrap();
        assert_eq!(json["opted_out"], 2);
        assert!(r.returned.contains(9434765919));

        // the request side read beforehand (as `ndop run` does while the POS works) gives the
        // same files and counts
        let req = dir.path().join("req.dat");
        let resp = dir.path().join("resp.dat");
        let read = read_numbers(&[req], "request", &ScanOptions::default(), &mut |_| {}).unwrap();
        let out2 = dir.path().join("out2");
        let r2 =
            reconcile_with(read, &[resp], &ScanOptions::default(), &out2, &mut |_| {}).unwrap();
        let s2 = &r2.summary;
        assert_eq!(
            (s2.requested, s2.returned, s2.opted_out, s2.unexpected),
            (3, 2, 2, 1)
        );
        for file in [OPTED_OUT_FILE, UNEXPECTED_FILE] {
            assert_eq!(
                std::fs::read(out.join(file)).unwrap(),
                std::fs::read(out2.join(file)).unwrap(),
                "{file}"
            );
        }
        // and like reconcile, it refuses an output directory that is not empty
        let read = read_numbers(
            &[dir.path().join("req.dat")],
            "request",
            &ScanOptions::default(),
            &mut |_| {},
        )
        .unwrap();
        let again = reconcile_with(
            read,
            &[dir.path().join("resp.dat")],
            &ScanOptions::default(),
            &out2,
            &mut |_| {},
        );
        assert!(matches!(again, Err(Error::OutputNotEmpty { .. })));
    }

    #[test]
    fn the_request_side_from_prepare_is_what_reading_the_files_gives() {
        use crate::dat::{DatOptions, LineEnding};
        use crate::prepare::{prepare_keeping_set, PrepareOptions};
        let dir = tempfile::tempdir().unwrap();
        // repeats, an invalid line, a blank and a placeholder (1111111111 passes Modulus 11)
        let extract = write(
            dir.path(),
            "x.dat",
            "9434765919\n9694116414\n9434765919\n1111111111\n9434765918\n\n9694116538\n\
             9876543210\n",
        );
        let prepared = dir.path().join("prepared");
        let opts = PrepareOptions {
            scan: ScanOptions::default(),
            dat: DatOptions {
                dir: prepared.clone(),
                mailbox: "X26ABC1".into(),
                date: chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
                seq: 1,
                env: crate::pos::PosEnv::Int,
                tag: None,
                line_ending: LineEnding::Crlf,
                max_bytes: 20_000_000_000,
                max_records: Some(2),
            },
        };
        let (summary, set) = prepare_keeping_set(&[extract], &opts, &mut |_| {}).unwrap();
        assert_eq!(summary.files.len(), 3);
        let files: Vec<PathBuf> = summary
            .files
            .iter()
            .map(|f| prepared.join(&f.name))
            .collect();
        let read = read_numbers(&files, "request", &ScanOptions::default(), &mut |_| {}).unwrap();
        let handed = requested_from(set, &prepared, &summary.files, summary.threads);
        assert_eq!(handed.counts, read.counts);
        assert_eq!(handed.counts.placeholder, 1);
        assert_eq!(
            serde_json::to_value(&handed.inputs).unwrap(),
            serde_json::to_value(&read.inputs).unwrap()
        );
        let (mut a, mut b) = (Vec::new(), Vec::new());
        handed.set.for_each(|n| a.push(n));
        read.set.for_each(|n| b.push(n));
        assert_eq!(a, b);
        assert_eq!(a.len(), 5);
        // and reconciling with it writes the same files as reading the requests
        let resp = write(dir.path(), "resp.dat", "9434765919,\r\n1111111111,\r\n");
        let out = dir.path().join("out");
        let r = reconcile_with(
            handed,
            std::slice::from_ref(&resp),
            &ScanOptions::default(),
            &out,
            &mut |_| {},
        )
        .unwrap();
        let out2 = dir.path().join("out2");
        let r2 = reconcile(&files, &[resp], &ScanOptions::default(), &out2, &mut |_| {}).unwrap();
        assert_eq!(r.summary.opted_out, 3);
        assert_same_result(&r, &out, &r2, &out2);
    }

    /// Two reconciliations wrote the same files and the same summary (elapsed time aside).
    fn assert_same_result(r: &Reconciled, out: &Path, r2: &Reconciled, out2: &Path) {
        for file in [OPTED_OUT_FILE, UNEXPECTED_FILE] {
            assert_eq!(
                std::fs::read(out.join(file)).unwrap(),
                std::fs::read(out2.join(file)).unwrap(),
                "{file}"
            );
        }
        let (mut j1, mut j2) = (
            serde_json::to_value(&r.summary).unwrap(),
            serde_json::to_value(&r2.summary).unwrap(),
        );
        j1["elapsed_seconds"] = 0.into();
        j2["elapsed_seconds"] = 0.into();
        assert_eq!(j1, j2);
    }

    /// [`ReplyLines`] over `bytes` cut into blocks of `block` bytes.
    fn reply_lines(bytes: &[u8], block: usize) -> std::result::Result<u64, u64> {
        let mut lines = ReplyLines::new();
        for piece in bytes.chunks(block.max(1)) {
            lines.feed(piece)?;
        }
        lines.finish()
    }

    #[test]
    fn reply_lines_agree_with_the_line_rule_whatever_the_cut() {
        // many lines, so that the fast path takes most of them, with every ending
        let mut good = Vec::new();
        let endings: [&[u8]; 4] = [b",\r\n", b",\n", b"\r\n", b"\n"];
        let mut n = 0u64;
        let mut prefix = 943_476_591u64;
        while n < 500 {
            prefix = (prefix * 7 + 13) % 1_000_000_000;
            let Some(check) = crate::nhs::check_digit_of_prefix(prefix as u32) else {
                continue;
            };
            good.extend_from_slice(format!("{prefix:09}{check}").as_bytes());
            good.extend_from_slice(endings[(n as usize / 100) % 4]);
            n += 1;
        }
        for block in [1, 2, 3, 7, 13, 16, 17, 64, 4096, 1 << 20] {
            assert_eq!(reply_lines(&good, block), Ok(500), "{block}");
        }
        // the last line without its ending, and an empty reply
        assert_eq!(reply_lines(b"9434765919,\r\n9694116414", 5), Ok(2));
        assert_eq!(reply_lines(b"", 1), Ok(0));
        // a bad line found whatever the cut, by number
        let mut at_300 = good.clone();
        let line_300 = good
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .nth(298)
            .unwrap()
            .0
            + 1;
        at_300[line_300 + 9] ^= 1; // its check digit
        for bad in [
            (at_300.as_slice(), 300),
            (b"9434765919\n\n9694116414\n".as_slice(), 2),
            (b"9434765919\n94347659199434765919\n".as_slice(), 2),
            (b"9434765919\n943476591".as_slice(), 2),
            (b"9434765919\r\r\n".as_slice(), 1),
            (b"9434765919 \n".as_slice(), 1),
            (b"9434765919,,\n".as_slice(), 1),
            (&[b'9'; 5000][..], 1),
        ] {
            for block in [1, 2, 3, 7, 11, 13, 16, 64, 1 << 20] {
                assert_eq!(reply_lines(bad.0, block), Err(bad.1), "{block}");
            }
        }
    }

    /// The numbers [`ReplyLines::collecting`] gathers from `bytes` cut into `block`-byte blocks.
    fn gathered(bytes: &[u8], block: usize) -> std::result::Result<(u64, ReplyNumbers), u64> {
        let mut lines = ReplyLines::collecting();
        for piece in bytes.chunks(block.max(1)) {
            lines.feed(piece)?;
        }
        lines
            .finish_gathered(bytes.len() as u64)
            .map(|(n, numbers)| (n, numbers.unwrap()))
    }

    #[test]
    fn the_result_side_gathered_while_checking_is_what_reading_the_files_gives() {
        let dir = tempfile::tempdir().unwrap();
        // ascending with repeats, out of order, every ending, a placeholder, the last line
        // without its ending; a second reply sharing numbers with the first; an empty one
        let mut first = Vec::new();
        let endings: [&[u8]; 4] = [b",\r\n", b",\n", b"\r\n", b"\n"];
        let mut prefix = 999_000_000u32;
        let mut n = 0;
        while n < 3000 {
            prefix += 1 + n % 3;
            let Some(check) = crate::nhs::check_digit_of_prefix(prefix) else {
                continue;
            };
            let line = format!("{prefix:09}{check}");
            first.extend_from_slice(line.as_bytes());
            first.extend_from_slice(endings[n as usize % 4]);
            if n % 7 == 0 {
                // a repeat, and one far back
                first.extend_from_slice(line.as_bytes());
                first.extend_from_slice(b"\n");
                first.extend_from_slice(b"9434765919,\r\n");
            }
            n += 1;
        }
        first.extend_from_slice(b"1111111111,\r\n9694116414");
        let second = b"9694116414,\r\n9694116538,\r\n9434765919\n".to_vec();
        let replies = [first, second, Vec::new()];
        let paths: Vec<PathBuf> = replies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                let p = dir.path().join(format!("r{i}.dat"));
                std::fs::write(&p, body).unwrap();
                p
            })
            .collect();
        let read = read_numbers(&paths, "result", &ScanOptions::default(), &mut |_| {}).unwrap();
        let mut want = Vec::new();
        read.set.for_each(|n| want.push(n));
        for block in [1, 5, 13, 16, 17, 4096, 1 << 20] {
            let numbers: Vec<(PathBuf, ReplyNumbers)> = replies
                .iter()
                .zip(&paths)
                .map(|(body, p)| {
                    let (lines, numbers) = gathered(body, block).unwrap();
                    assert_eq!(Ok(lines), reply_lines(body, block));
                    (p.clone(), numbers)
                })
                .collect();
            let got = returned_from(numbers, &ScanOptions::default()).unwrap();
            assert_eq!(got.counts, read.counts, "{block}");
            assert_eq!(
                serde_json::to_value(&got.inputs).unwrap(),
                serde_json::to_value(&read.inputs).unwrap()
            );
            let mut have = Vec::new();
            got.set.for_each(|n| have.push(n));
            assert_eq!(have, want, "{block}");
        }
        assert_eq!(read.counts.placeholder, 1);
        // reading would refuse a placeholder under --reject-placeholders: no gathered answer
        let mut rejecting = ScanOptions::default();
        rejecting.rules.reject_placeholders = true;
        let numbers = vec![(paths[0].clone(), gathered(&replies[0], 4096).unwrap().1)];
        assert!(returned_from(numbers, &rejecting).is_none());
        assert!(read_numbers(&paths, "result", &rejecting, &mut |_| {}).is_err());
        // a bad line is still named, gathering or not
        assert_eq!(
            gathered(b"9434765919\n9434765918\n", 3).map(|(n, _)| n),
            Err(2)
        );
        assert_eq!(gathered(b"9434765919\n94347", 3).map(|(n, _)| n), Err(2));
        // and reconciling with both sides known writes what reconciling the files writes
        let req = write(dir.path(), "req.dat", "9434765919,\r\n9876543210,\r\n");
        let out = dir.path().join("out");
        let r = reconcile(
            std::slice::from_ref(&req),
            &paths,
            &ScanOptions::default(),
            &out,
            &mut |_| {},
        )
        .unwrap();
        let requested = read_numbers(&[req], "request", &ScanOptions::default(), &mut |_| {});
        let numbers = replies
            .iter()
            .zip(&paths)
            .map(|(body, p)| (p.clone(), gathered(body, 64).unwrap().1))
            .collect();
        let returned = returned_from(numbers, &ScanOptions::default()).unwrap();
        let out2 = dir.path().join("out2");
        let r2 = reconcile_known(requested.unwrap(), returned, &out2).unwrap();
        assert_same_result(&r, &out, &r2, &out2);
        assert_eq!((r.summary.returned, r.summary.unexpected), (3004, 3003));
    }

    #[test]
    fn an_empty_result_means_everyone_opted_out() {
        let dir = tempfile::tempdir().unwrap();
        let req = write(dir.path(), "req.dat", "9434765919,\n9694116414,\n");
        let resp = write(dir.path(), "resp.dat", "");
        let out = dir.path().join("out");
        let r = reconcile(&[req], &[resp], &ScanOptions::default(), &out, &mut |_| {}).unwrap();
        assert_eq!((r.summary.returned, r.summary.opted_out), (0, 2));
    }

    #[test]
    fn a_rejection_or_a_bad_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let req = write(dir.path(), "req.dat", "9434765919,\n");
        let rejected = write(dir.path(), "rej.dat", &format!("{REJECTION_LINE}\r\n"));
        let e = reconcile(
            std::slice::from_ref(&req),
            &[rejected],
            &ScanOptions::default(),
            &dir.path().join("a"),
            &mut |_| {},
        )
        .err()
        .unwrap();
        assert!(matches!(e, Error::PosRejected { .. }), "{e}");
        let bad = write(dir.path(), "bad.dat", "9434765919,\n9434765918,\n");
        let e = reconcile(
            &[req],
            &[bad],
            &ScanOptions::default(),
            &dir.path().join("b"),
            &mut |_| {},
        )
        .err()
        .unwrap();
        assert!(
            matches!(
                e,
                Error::NotPosFile {
                    invalid: 1,
                    role: "result",
                    ..
                }
            ),
            "{e}"
        );
        // The message names the file but never the number.
        assert!(!e.to_string().contains("9434765918"));
    }
}
