//! POS-ready `.dat` files of unique numbers, split under the MESH limits, each with a
//! DTSControl `.ctl` beside it, written atomically with mode 0600.
//!
//! Format (NHS "Check for National Data Opt-outs Service", "create the .dat file"): one
//! `NNNNNNNNNN,` line per number, CRLF by default, the last line terminated, no header. Names
//! follow the NHS convention `MAILBOX-DDMMYY-NNNN.dat`. Each file is written under a temporary
//! name, synced and renamed; the `.dat` is renamed before its `.ctl`, so a MESH client watching
//! the folder never picks up a control file whose data is incomplete.

use crate::ctl;
use crate::error::{Error, Result};
use crate::files::{sync_dir, write_atomic, AtomicFile, ThreadedOut};
use crate::nhs::PrefixDigits;
use crate::pos::{is_mailbox_id, PosEnv};
use crate::seen::{NumberSet, SLICES};
use chrono::NaiveDate;
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// Line ending of written `.dat` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineEnding {
    /// `\r\n`, as the NHS service page shows.
    #[default]
    Crlf,
    /// `\n`.
    Lf,
}

impl LineEnding {
    /// The bytes.
    pub fn bytes(self) -> &'static [u8] {
        match self {
            LineEnding::Crlf => b"\r\n",
            LineEnding::Lf => b"\n",
        }
    }
}

impl std::str::FromStr for LineEnding {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "crlf" => Ok(LineEnding::Crlf),
            "lf" => Ok(LineEnding::Lf),
            _ => Err(format!("expected crlf or lf, got {s:?}")),
        }
    }
}

/// Where and how to write the `.dat`/`.ctl` pairs.
#[derive(Debug, Clone)]
pub struct DatOptions {
    /// Output directory (must be new or empty; checked by the caller).
    pub dir: PathBuf,
    /// Our MESH mailbox id (From_DTS, and the file-name prefix).
    pub mailbox: String,
    /// Production date in the file names.
    pub date: NaiveDate,
    /// First 4-digit sequence number.
    pub seq: u32,
    /// INT or LIVE.
    pub env: PosEnv,
    /// Optional project tag for Subject and LocalId.
    pub tag: Option<String>,
    /// Line ending.
    pub line_ending: LineEnding,
    /// Largest `.dat` in bytes.
    pub max_bytes: u64,
    /// Most records in one `.dat`.
    pub max_records: Option<u64>,
}

/// One written `.dat` (and its `.ctl`).
#[derive(Debug, Clone, Serialize)]
pub struct DatFile {
    /// File name of the `.dat`, e.g. `X26ABC1-231126-0001.dat`.
    pub name: String,
    /// Numbers in it.
    pub records: u64,
    /// Its size.
    pub bytes: u64,
    /// Lower-case hex SHA-256 of its content.
    pub sha256: String,
    /// File name of the `.ctl`.
    pub ctl: String,
    /// DTSControl Subject.
    pub subject: String,
    /// DTSControl LocalId, unique per pair and per prepare run: the Subject, 8 hex digits of
    /// the SHA-256, and 8 hex digits drawn once per process ([`run_tag`]). `ndop send` looks
    /// LocalIds up in MESH to adopt a message an interrupted run sent, so the same file prepared
    /// again (another run, another work directory) must not share one.
    pub local_id: String,
}

/// Checks a MESH mailbox id: 1 to 20 letters and digits (upper-cased).
pub fn check_mailbox(mailbox: &str) -> Result<String> {
    let m = mailbox.trim().to_ascii_uppercase();
    if !is_mailbox_id(&m) {
        return Err(Error::Usage(format!(
            "mailbox must be 1 to 20 letters and digits, got {mailbox:?}"
        )));
    }
    Ok(m)
}

/// Checks a project tag: 1 to 40 of `[A-Za-z0-9_-]` (the POS silently ignores files whose
/// Subject holds other characters such as `:`).
pub fn check_tag(tag: &str) -> Result<()> {
    if tag.is_empty()
        || tag.len() > 40
        || !tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Error::Usage(format!(
            "tag must be 1 to 40 of A-Z a-z 0-9 _ -, got {tag:?}"
        )));
    }
    Ok(())
}

/// Writes the members of `set` in ascending order into `.dat` + `.ctl` pairs. Every path
/// created (temporary or final) is pushed to `created`, so the caller can remove them all if a
/// later step fails.
///
/// The work is split across the current rayon pool by prefix range, in waves of fixed slices
/// of the prefixes (`NumberSet::for_each_word_in_slice`). While the calling thread computes the
/// SHA-256 of the wave formatted before (sequential by nature: one stream per file, and the
/// longest single task), the rest of the pool hands that wave to the files' writing threads
/// (direct I/O: see `DatWriter`) and formats the next one into the buffers of the wave
/// before it (reused: no fresh pages to fault in and zero). Every line has the same length,
/// so where a file ends is a matter of counting; the bytes of every file are the same
/// whatever the number of threads. Each file's size is known before its first line (the
/// members are counted first), so its disk space is allocated ahead in one call
/// (`fallocate`): ext4 then maps blocks that exist as the writes come.
pub fn write_dat_files(
    set: &NumberSet,
    opts: &DatOptions,
    created: &mut Vec<PathBuf>,
) -> Result<Vec<DatFile>> {
    let mut no_spare_work = || false;
    let set = (set, set.len());
    write_dat_files_by(set, opts, created, DatWrite::Direct, &mut no_spare_work)
}

/// How the `.dat` bytes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatWrite {
    /// Direct I/O (see `DatWriter`): not copied into the page cache, which costs more than the
    /// hashing on this project's VM. For files read again later, if at all (`ndop prepare`).
    Direct,
    /// Through the page cache (with writeback started as the file grows), for a caller that
    /// reads the files again at once: `ndop run` sends them right after, and reading 845 MB
    /// back from the disk cost its send stage more than direct I/O saved (docs/PERFORMANCE.md).
    Cached,
}

/// [`write_dat_files`] of a set whose number of members the caller knows (validation counted
/// them: no pass over the set to count them again), the bytes written as `how` says, and
/// `spare` given the time a thread of the pool has left while the SHA-256 (on another) still
/// runs: it is called again and again then, to do a little of the caller's own work each time
/// (`prepare` writes its `invalid.csv` rows), until it returns false (nothing left).
///
/// The number of members sizes only the files' allocation ahead: the bytes and where the
/// files end come from the set itself, and a file allocated longer than its lines is cut to
/// them.
pub fn write_dat_files_by(
    (set, members): (&NumberSet, u64),
    opts: &DatOptions,
    created: &mut Vec<PathBuf>,
    how: DatWrite,
    spare: &mut (dyn FnMut() -> bool + Send),
) -> Result<Vec<DatFile>> {
    let eol = opts.line_ending.bytes();
    let line_len = 11 + eol.len() as u64;
    let per_file = (opts.max_bytes / line_len).min(opts.max_records.unwrap_or(u64::MAX));
    if per_file == 0 {
        return Err(Error::Usage(format!(
            "a limit of {} bytes / {} records leaves no room for one record",
            opts.max_bytes,
            opts.max_records.map_or("no".into(), |r| r.to_string())
        )));
    }
    let cut = Cutter {
        per_file,
        line_len: line_len as usize,
        file: 0,
        records: 0,
    };
    let mut out = Splitter {
        opts,
        members,
        cut: cut.clone(),
        files: Vec::new(),
        created,
        how,
    };
    let mut hash = Hashes {
        cut,
        hashers: Vec::new(),
    };
    // Slices formatted per wave: enough to keep the pool busy, bounded so that two waves in
    // memory stay small (a slice of a dense set is at most about 12 MB of lines).
    let wave = (rayon::current_num_threads() * 2).clamp(2, 16);
    let (mut ready, mut used): (Vec<Vec<u8>>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
    let mut next = 0;
    let mut more = true;
    loop {
        let end = (next + wave).min(SLICES);
        let mut fresh = std::mem::take(&mut used);
        fresh.resize_with(end - next, Vec::new);
        let hashing = AtomicBool::new(true);
        let ((), written) = rayon::join(
            || {
                ready.iter().for_each(|lines| hash.update(lines));
                hashing.store(false, Relaxed);
            },
            || {
                let written = ready.iter().try_for_each(|lines| out.write_lines(lines));
                fresh
                    .par_iter_mut()
                    .zip(next..end)
                    .for_each(|(lines, slice)| format_slice(set, slice, eol, lines));
                // The hash is the longer of the two (docs/PERFORMANCE.md): what is left of
                // its time is spare on this thread (none when it runs after the hash).
                while more && hashing.load(Relaxed) {
                    more = spare();
                }
                written
            },
        );
        written?;
        if next == SLICES {
            break;
        }
        used = std::mem::replace(&mut ready, fresh);
        next = end;
    }
    let mut files = Vec::with_capacity(out.files.len());
    for (w, hasher) in out.files.into_iter().zip(hash.hashers) {
        files.push(w.finish(opts, hasher, out.created)?);
    }
    sync_dir(&opts.dir)?;
    Ok(files)
}

/// Formats the `.dat` lines of the members in one slice of the prefixes, in order, into
/// `lines` (cleared first; its capacity is reused).
///
/// Each line is built as 16 bytes (ten digits from [`PrefixDigits::halves`], the comma and
/// the line ending) and stored whole, `len` bytes after the one before: the next line
/// overwrites the spare bytes. Room for a whole word's lines is reserved once per word of the
/// set, so the stores need no check of their own.
fn format_slice(set: &NumberSet, slice: usize, eol: &[u8], lines: &mut Vec<u8>) {
    let len = 11 + eol.len();
    let mut end = [0u8; 16];
    end[10] = b',';
    end[11..len].copy_from_slice(eol);
    // The comma and the line ending, in the second half of a line's 16 bytes.
    let end_high = u64::from_le_bytes(end[8..].try_into().unwrap_or_default());
    lines.clear();
    let mut digits = PrefixDigits::new();
    set.for_each_word_in_slice(slice, |first, mut bits| {
        // A word holds at most 64 members: 64 lines, the last one's store 16 bytes wide.
        lines.reserve(64 * len + 16);
        let start = lines.len();
        let out = lines.spare_capacity_mut().as_mut_ptr().cast::<u8>();
        let mut at = 0;
        while bits != 0 {
            let prefix = first + bits.trailing_zeros();
            bits &= bits - 1;
            // Only valid numbers are in the set, so a check digit exists.
            let (low, high) = digits.halves(prefix);
            // SAFETY: at most 64 lines are stored for one word, the k-th at `k * len` in two
            // 8-byte stores, so the last store ends by `63 * len + 16`, inside the
            // `64 * len + 16` bytes reserved above, past the initialised part of `lines`.
            unsafe {
                out.add(at).cast::<u64>().write_unaligned(low.to_le());
                out.add(at + 8)
                    .cast::<u64>()
                    .write_unaligned((high | end_high).to_le());
            };
            at += len;
        }
        // SAFETY: the first `at` bytes of the spare capacity were written above (whole lines;
        // the last store's spare bytes beyond `at` are left out).
        unsafe { lines.set_len(start + at) };
    });
}

/// Where a stream of whole lines is cut into files of at most `per_file` records: the writing
/// and the hashing side each keep one and agree, since they see the same lines in order.
#[derive(Clone)]
struct Cutter {
    per_file: u64,
    line_len: usize,
    /// The file (0-based) the next line goes into.
    file: usize,
    /// Records already in that file.
    records: u64,
}

impl Cutter {
    /// Calls `f` with each run of `lines` that goes into one file, the file's index and the
    /// number of records in the run, in order.
    fn cut(
        &mut self,
        mut lines: &[u8],
        mut f: impl FnMut(usize, &[u8], u64) -> Result<()>,
    ) -> Result<()> {
        while !lines.is_empty() {
            if self.records == self.per_file {
                (self.file, self.records) = (self.file + 1, 0);
            }
            let room = (self.per_file - self.records).min((lines.len() / self.line_len) as u64);
            let (now, rest) = lines.split_at(room as usize * self.line_len);
            f(self.file, now, room)?;
            self.records += room;
            lines = rest;
        }
        Ok(())
    }
}

/// The SHA-256 of each file, fed the same lines as the [`Splitter`].
struct Hashes {
    cut: Cutter,
    hashers: Vec<Sha256>,
}

impl Hashes {
    fn update(&mut self, lines: &[u8]) {
        let hashers = &mut self.hashers;
        let _ = self.cut.cut(lines, |file, now, _| {
            if file == hashers.len() {
                hashers.push(Sha256::new());
            }
            if let Some(h) = hashers.get_mut(file) {
                h.update(now);
            }
            Ok(())
        });
    }
}

/// Cuts the stream of formatted lines into files of at most `per_file` records and writes them.
struct Splitter<'a> {
    opts: &'a DatOptions,
    /// Records in all the files together.
    members: u64,
    cut: Cutter,
    files: Vec<DatWriter>,
    created: &'a mut Vec<PathBuf>,
    how: DatWrite,
}

impl Splitter<'_> {
    /// Appends whole lines, starting a new file whenever the current one is full.
    fn write_lines(&mut self, lines: &[u8]) -> Result<()> {
        let (opts, files, created, how) =
            (self.opts, &mut self.files, &mut *self.created, self.how);
        let (members, per_file, line_len) = (self.members, self.cut.per_file, self.cut.line_len);
        self.cut.cut(lines, |file, now, records| {
            if file == files.len() {
                if let Some(full) = files.last_mut() {
                    full.close()?;
                }
                let stem = file_stem(opts, opts.seq.saturating_add(file as u32))?;
                // The records before this file fill the files before it.
                let records =
                    per_file.min(members.saturating_sub((file as u64).saturating_mul(per_file)));
                let size = records.saturating_mul(line_len as u64);
                files.push(DatWriter::create(&opts.dir, stem, size, how, created)?);
            }
            match files.get_mut(file) {
                Some(w) => {
                    w.write(now, records);
                    Ok(())
                }
                None => Ok(()),
            }
        })
    }
}

fn file_stem(opts: &DatOptions, seq: u32) -> Result<String> {
    if seq > 9999 {
        return Err(Error::Usage(
            "the 4-digit sequence number ran past 9999; start lower with --seq or split less"
                .into(),
        ));
    }
    Ok(format!(
        "{}-{}-{seq:04}",
        opts.mailbox,
        opts.date.format("%d%m%y")
    ))
}

/// One `.dat` being written: its lines go to a [`ThreadedOut`], whose thread writes them with
/// direct I/O (`O_DIRECT`, 8 MiB a write from reused aligned buffers, the last partial block
/// through the page cache) while the pool formats and hashes the next ones. Buffered writes
/// copied every byte into fresh page-cache pages, which on this project's VM cost more than
/// the SHA-256 (docs/PERFORMANCE.md), and left all of it for the final sync; direct writes
/// reach the disk as they go, so the sync has only the tail and the metadata left. A
/// filesystem that refuses direct I/O gets the same bytes through the page cache.
struct DatWriter {
    stem: String,
    /// Being written until the file is full or the output ends ([`DatWriter::close`]).
    open: Option<ThreadedOut>,
    /// Closed: every byte written, the sync and rename still to come.
    closed: Option<AtomicFile>,
    records: u64,
    bytes: u64,
}

impl DatWriter {
    /// Creates the file under its temporary name, its `size` bytes allocated ahead where the
    /// filesystem can.
    fn create(
        dir: &Path,
        stem: String,
        size: u64,
        how: DatWrite,
        created: &mut Vec<PathBuf>,
    ) -> Result<Self> {
        let mut file = AtomicFile::create(&dir.join(format!("{stem}.dat")))?;
        created.push(file.tmp().to_path_buf());
        file.reserve(size);
        Ok(DatWriter {
            stem,
            open: Some(ThreadedOut::new(file, how == DatWrite::Direct, false)),
            closed: None,
            records: 0,
            bytes: 0,
        })
    }

    /// Writes `records` whole lines.
    fn write(&mut self, lines: &[u8], records: u64) {
        if let Some(out) = self.open.as_mut() {
            out.write(lines);
        }
        self.records += records;
        self.bytes += lines.len() as u64;
    }

    /// Writes what is left and ends the file's writing thread (once the file is full).
    fn close(&mut self) -> Result<()> {
        if let Some(out) = self.open.take() {
            self.closed = Some(out.close()?.0);
        }
        Ok(())
    }

    /// Syncs and renames the file into place and writes its `.ctl`; `hasher` has seen every
    /// byte of it.
    fn finish(
        mut self,
        opts: &DatOptions,
        hasher: Sha256,
        created: &mut Vec<PathBuf>,
    ) -> Result<DatFile> {
        self.close()?;
        if let Some(file) = self.closed.take() {
            file.commit()?;
        }
        let sha256 = hex::encode(hasher.finalize());
        let name = format!("{}.dat", self.stem);
        let path = opts.dir.join(&name);
        created.push(path);
        let subject = match &opts.tag {
            Some(tag) => format!("{tag}_{}", self.stem),
            None => self.stem.clone(),
        };
        let local_id = format!("{subject}_{}_{}", &sha256[..8], run_tag());
        let ctl = format!("{}.ctl", self.stem);
        let text = ctl::render(&opts.mailbox, opts.env.pos_mailbox(), &subject, &local_id);
        created.push(opts.dir.join(format!(".{ctl}.tmp")));
        created.push(write_atomic(&opts.dir, &ctl, text.as_bytes())?);
        Ok(DatFile {
            name,
            records: self.records,
            bytes: self.bytes,
            sha256,
            ctl,
            subject,
            local_id,
        })
    }
}

/// 8 hex digits that differ between runs (time and process id, mixed), the same for every file
/// of one run.
pub fn run_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = nanos ^ u64::from(std::process::id()).rotate_left(32);
        format!("{:08x}", crate::generate::Rng(seed).next_u64() as u32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_checks() {
        assert_eq!(check_mailbox(" x26abc1 ").unwrap(), "X26ABC1");
        assert!(check_mailbox("X26:1").is_err());
        assert!(check_tag("proj-1_a").is_ok());
        assert!(check_tag("a:b").is_err());
        assert!(check_tag("").is_err());
    }

    /// Files cut by record count, each allocated ahead at the size counted for it: every file
    /// holds exactly its lines (no allocated tail left over), the last one too, and their
    /// hashes are of what they hold; whatever the caller does in the spare time, and whatever
    /// number of members it says (only the allocation ahead follows it).
    #[test]
    fn split_files_are_exactly_their_lines() {
        let set = NumberSet::new();
        let mut want = Vec::new();
        // Valid numbers of the 999 test range, over two slices of the prefixes.
        for prefix in (0..2_000u32).map(|i| 999_000_000 + i * 499) {
            if let Some(check) = crate::nhs::check_digit_of_prefix(prefix) {
                let number = u64::from(prefix) * 10 + u64::from(check);
                assert!(set.insert(number));
                want.push(number);
            }
        }
        want.sort_unstable();
        // Direct I/O and the page cache, with and without work of the caller's in the spare
        // time, told the right number of members or a wrong one: the same files.
        let members = want.len() as u64;
        for (how, busy, said) in [
            (DatWrite::Direct, false, members),
            (DatWrite::Cached, false, members),
            (DatWrite::Direct, true, members),
            (DatWrite::Direct, false, members + 1_000),
            (DatWrite::Direct, false, members - 500),
            (DatWrite::Cached, false, 0),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let opts = DatOptions {
                dir: dir.path().to_path_buf(),
                mailbox: "X26ABC1".into(),
                date: NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
                seq: 1,
                env: PosEnv::Int,
                tag: None,
                line_ending: LineEnding::Crlf,
                max_bytes: 20_000_000_000,
                max_records: Some(700),
            };
            let mut created = Vec::new();
            let mut turns = 0u32;
            let mut spare = || {
                turns += 1;
                std::hint::black_box((0..1_000u32).sum::<u32>());
                busy && turns < 10_000
            };
            let set = (&set, said);
            let files = write_dat_files_by(set, &opts, &mut created, how, &mut spare).unwrap();
            assert_eq!(files.len(), want.len().div_ceil(700));
            let mut all = Vec::new();
            for (i, f) in files.iter().enumerate() {
                let bytes = std::fs::read(dir.path().join(&f.name)).unwrap();
                let records = (want.len() - i * 700).min(700) as u64;
                assert_eq!((f.records, f.bytes), (records, records * 13));
                assert_eq!(bytes.len() as u64, f.bytes);
                assert_eq!(f.sha256, hex::encode(Sha256::digest(&bytes)));
                all.extend_from_slice(&bytes);
            }
            let expected: Vec<u8> = want
                .iter()
                .flat_map(|n| format!("{n:010},\r\n").into_bytes())
                .collect();
            assert_eq!(all, expected);
        }
    }
}
