//! The National Data Opt-out "Check for National Data Opt-outs Service" (POS) behind the POS
//! mailboxes (`ndop-domain.md` §2.3, §3, §4).
//!
//! When a complete DATA message with workflow `SPINE_NTT_UPHOLDING` reaches a POS mailbox:
//! 1. the POS collects it (the submission becomes `acknowledged` in the sender's tracking);
//! 2. it reads the file once, streaming (gzip transport encoding decoded), computing its
//!    SHA-256 and validating every line: ten ASCII digits passing Modulus 11, optionally followed
//!    by a comma, terminated by CRLF or LF (the last line may be unterminated);
//! 3. it sends the sender a "job created" message (`Mex-Subject: SUCCESS`, JSON body) whose
//!    stages are `validate_non_empty_file` (the file has at least one byte),
//!    `validate_is_unique_upload` (this sender has not submitted the same content to this POS
//!    mailbox before) and `validate_in_order` (always passes); if a stage fails the job's
//!    `status` is `failed` and nothing else is sent;
//! 4. after [`PosConfig::delay`](crate::PosConfig::delay) it sends the result: the submitted
//!    lines minus the opted-out numbers, byte for byte (same line endings), split into chunks of
//!    `pos_chunk_bytes` of content, each stored as one gzip member if
//!    [`PosConfig::result_encoding`](crate::PosConfig::result_encoding) says gzip; or, if any
//!    line is invalid, the single line
//!    `The file contains one or more invalid NHS Numbers.` followed by the file's first line
//!    ending (CRLF if it has none).
//!
//! Opted out: for an INT POS mailbox, a patient with a Consent in the NDOP FHIR API (`/STU3/`)
//! is opted out exactly when the Consent is `active` (the API is seeded with the INT table,
//! so both interfaces answer from one truth); otherwise
//! the published test patients with an opt-out ([`PUBLISHED_TEST_PATIENTS`]: INT
//! table for INT POS mailboxes, LIVE table for LIVE ones), plus
//! [`PosConfig::optout_numbers`](crate::PosConfig::optout_numbers), plus a fraction
//! [`PosConfig::optout_rate`](crate::PosConfig::optout_rate) of every other number chosen by
//! [`opted_out_by_rate`] — a hash of the number and the seed, so the answer for a number never
//! depends on the file it is in or its position.
//!
//! A chunked submission is read while it uploads (`pos/early.rs`): the pass of step 2 runs over
//! each chunk once it is committed, and the job uses it at acceptance only if it read exactly
//! the accepted chunks with the same answers; nothing is sent before acceptance.
//!
//! Nothing here logs an NHS number or file content: only ids, counts and sizes.

mod direct;
mod early;
mod fixed;
pub(crate) mod job;
mod scan;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use line_gzip::GzipLines;

use crate::config::{PosConfig, PosEnv};
use crate::headers::ContentEncoding;
use crate::store::{ChunkSource, Received};

/// The POS's whole answer to a file with any invalid line.
pub const INVALID_FILE_LINE: &str = "The file contains one or more invalid NHS Numbers.";

/// The published NHS test patients, as CSV with the header `environment,nhs_number,opted_out`:
/// one row per patient, `environment` `int` or `live` (which POS table the patient is in),
/// `opted_out` `yes` or `no`. The POS opts out the `yes` rows of its environment's table; the
/// `ndop` demo builds its sample extract from the same rows.
pub const PUBLISHED_TEST_PATIENTS: &str = include_str!("../../data/test-patients.csv");

/// NHS Data Dictionary Modulus 11 check of ten ASCII digits (`ndop-domain.md` §1.1): weights
/// 10..2 on the first nine digits; check = 11 − (sum mod 11); 11 → 0; 10 → never valid.
pub fn is_valid_nhs_number(digits: &[u8]) -> bool {
    nhs_number_value(digits).is_some()
}

/// The number of ten ASCII digits passing Modulus 11. Branch-light, as the POS runs it on
/// every line of a national file: see [`digits_value`].
#[inline]
fn nhs_number_value(digits: &[u8]) -> Option<u64> {
    let d: &[u8; 10] = digits.try_into().ok()?;
    let word = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    digits_value(word, d[8], d[9])
}

/// The number whose first eight digits are the bytes of `word` (little-endian: byte `i` is
/// digit `i`) and whose last two are `d8`, `d9`, if all ten are ASCII digits passing Modulus
/// 11. The eight are checked and converted as one 64-bit word (SWAR), and the check is the
/// equivalent form "the sum of digit × weight, with weights 10..1 (the check digit's weight
/// 1), is a multiple of 11": the check digit `c` must make `S + c ≡ 0 (mod 11)` for the first
/// nine digits' sum `S`, and a required 10 is no digit. The first eight digits' part of the
/// sum is two multiplications: the even and the odd digits in 16-bit lanes, each multiplied by
/// its weights in reverse, so that the top lane collects the four products (at most 360 a
/// lane: nothing carries between lanes).
#[inline(always)]
fn digits_value(word: u64, d8: u8, d9: u8) -> Option<u64> {
    // every byte 0x30..=0x39: high nibble 3, and adding 6 carries into no high nibble
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    const LANES: u64 = 0x00FF_00FF_00FF_00FF;
    // weights of digits 0, 2, 4, 6 (10, 8, 6, 4) and 1, 3, 5, 7 (9, 7, 5, 3), top lane first
    const EVEN: u64 = (10 << 48) | (8 << 32) | (6 << 16) | 4;
    const ODD: u64 = (9 << 48) | (7 << 32) | (5 << 16) | 3;
    let (d8, d9) = (d8.wrapping_sub(b'0'), d9.wrapping_sub(b'0'));
    if (word & HIGH != ZEROS)
        | ((word.wrapping_add(0x0606_0606_0606_0606)) & HIGH != ZEROS)
        | (d8 > 9)
        | (d9 > 9)
    {
        return None;
    }
    let v = word - ZEROS; // byte i = digit i
    let sum = ((v & LANES).wrapping_mul(EVEN) >> 48)
        + (((v >> 8) & LANES).wrapping_mul(ODD) >> 48)
        + u64::from(d8) * 2
        + u64::from(d9);
    if !sum.is_multiple_of(11) {
        return None;
    }
    // eight digits to their value: pairs, then fours, then the eight
    let pairs = (v * 10 + (v >> 8)) & 0x00FF_00FF_00FF_00FF;
    let fours = (pairs.wrapping_mul(1 + (100 << 16)) >> 16) & 0x0000_FFFF_0000_FFFF;
    let eight = fours.wrapping_mul(1 + (10_000 << 32)) >> 32;
    Some(eight * 100 + u64::from(d8) * 10 + u64::from(d9))
}

/// The number of the `.dat` line `NNNNNNNNNN,\r\n` (ndop's, and the POS documentation's
/// shape) at the start of `l`, if it is one with a valid number.
#[inline(always)]
fn crlf_line_value(l: &[u8; 13]) -> Option<u64> {
    if l[10..] != *b",\r\n" {
        return None;
    }
    let word = u64::from_le_bytes([l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7]]);
    digits_value(word, l[8], l[9])
}

/// Parses one POS line (with or without its terminator): `NNNNNNNNNN[,](\r\n|\n)?`.
/// Returns the number if the line is valid.
pub fn parse_pos_line(line: &[u8]) -> Option<u64> {
    let mut l = line;
    if let Some(rest) = l.strip_suffix(b"\n") {
        l = rest.strip_suffix(b"\r").unwrap_or(rest);
    }
    let l = l.strip_suffix(b",").unwrap_or(l);
    nhs_number_value(l)
}

/// SplitMix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Deterministic 64-bit hash of an NHS number under a seed.
pub fn optout_hash(number: u64, seed: u64) -> u64 {
    mix(number ^ mix(seed))
}

/// True if `number` falls in the opted-out fraction `rate` for `seed`: the top 53 bits of
/// [`optout_hash`] as a fraction of 2^53 are below `rate`.
pub fn opted_out_by_rate(number: u64, seed: u64, rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    let unit = (optout_hash(number, seed) >> 11) as f64 / (1u64 << 53) as f64;
    unit < rate
}

/// [`opted_out_by_rate`]'s comparison in integers: `(hash >> 11) < rate_threshold(rate)`.
/// `rate × 2^53` is exact (a power of two), and an integer is below a real exactly when it is
/// below its ceiling; a rate of 0 (or NaN) gives 0, opting nobody out.
fn rate_threshold(rate: f64) -> u64 {
    if rate > 0.0 {
        (rate * (1u64 << 53) as f64).ceil() as u64 // saturates above 1
    } else {
        0
    }
}

/// A [`Hasher`] for NHS numbers in the POS's per-job map: one [`mix`] of the number, where
/// the standard SipHash took a fifth of a national job's time. The keys are the POS's own
/// tables and Consents, not input an attacker controls.
#[derive(Default)]
struct NumberHasher(u64);

impl Hasher for NumberHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = mix(self.0 ^ n);
    }
}

/// One job's opt-out answers ([`PosEngine::decider`]): every number with an explicit answer in
/// one map (a Consent decides first; then the environment's published table and the extra
/// numbers say "opted out"), every other number by the rate.
#[derive(PartialEq)]
pub(crate) struct Decider {
    known: HashMap<u64, bool, BuildHasherDefault<NumberHasher>>,
    /// Bit `n mod 2^16` is set for every `n` in `known`: almost every number of a national
    /// file skips the map's lookup (8 KiB, stays in the L1 cache).
    maybe_known: Box<[u64; 1024]>,
    seed_mix: u64,
    threshold: u64,
}

impl Decider {
    /// Whether `n` is opted out.
    #[inline]
    pub(crate) fn opted_out(&self, n: u64) -> bool {
        let bit = (n & 0xFFFF) as usize;
        if (self.maybe_known[bit >> 6] >> (bit & 63)) & 1 != 0 {
            if let Some(&out) = self.known.get(&n) {
                return out;
            }
        }
        (mix(n ^ self.seed_mix) >> 11) < self.threshold
    }
}

/// The opt-out decision for each POS mailbox.
#[derive(Debug)]
pub(crate) struct PosEngine {
    int: HashSet<u64>,
    live: HashSet<u64>,
    extra: HashSet<u64>,
    rate: f64,
    seed: u64,
    delay: Duration,
    chunk_bytes: u64,
    /// Whether results are stored gzip'd ([`PosConfig::result_encoding`]).
    result_gzip: bool,
    /// Most bytes decoded from one submission (a gzip bomb is cut off here).
    max_decoded: u64,
    /// The FHIR API's opt-out state (INT): where a patient has a Consent, it decides.
    consents: Option<crate::fhir::consent::OptOuts>,
    /// Submissions analysed while they upload.
    early: early::Registry,
}

impl PosEngine {
    pub(crate) fn new(c: &PosConfig, chunk_bytes: u64) -> PosEngine {
        let mut int = HashSet::new();
        let mut live = HashSet::new();
        for line in PUBLISHED_TEST_PATIENTS.lines().skip(1) {
            let f: Vec<&str> = line.trim().split(',').collect();
            if let [env, number, "yes"] = f.as_slice() {
                if let Ok(n) = number.parse::<u64>() {
                    match *env {
                        "int" => int.insert(n),
                        "live" => live.insert(n),
                        _ => false,
                    };
                }
            }
        }
        PosEngine {
            int,
            live,
            extra: c.optout_numbers.iter().copied().collect(),
            rate: c.optout_rate,
            seed: c.optout_seed,
            delay: c.delay,
            chunk_bytes: chunk_bytes.max(1),
            result_gzip: c.result_encoding == ContentEncoding::Gzip,
            max_decoded: u64::MAX,
            consents: None,
            early: early::Registry::default(),
        }
    }

    /// Caps the bytes decoded from one submission; a larger one is rejected as unreadable.
    pub(crate) fn with_max_decoded(mut self, bytes: u64) -> PosEngine {
        self.max_decoded = bytes;
        self
    }

    /// Answers INT submissions from the FHIR API's Consents first (one truth for both).
    pub(crate) fn with_consents(mut self, consents: crate::fhir::consent::OptOuts) -> PosEngine {
        self.consents = Some(consents);
        self
    }

    /// Where a job writes its result: chunks of the engine's size, gzip'd or not as configured,
    /// in files in `tmp_dir` (else in memory).
    fn result_sink(&self, tmp_dir: Option<PathBuf>) -> ResultSink {
        ResultSink::new(self.chunk_bytes, self.result_gzip, tmp_dir)
    }

    /// The answers for one job in `env`. The FHIR API's opt-out state (INT) is copied as it is
    /// now, so that a long job never holds up the API's writers and answers from one moment's
    /// state.
    pub(crate) fn decider(&self, env: PosEnv) -> Decider {
        let mut known: HashMap<u64, bool, BuildHasherDefault<NumberHasher>> = HashMap::default();
        if let (PosEnv::Int, Some(c)) = (env, &self.consents) {
            let c = c.read().unwrap_or_else(|p| p.into_inner());
            known.extend(c.iter().map(|(&n, &active)| (n, active)));
        }
        let table = match env {
            PosEnv::Int => &self.int,
            PosEnv::Live => &self.live,
        };
        for &n in table.iter().chain(&self.extra) {
            known.entry(n).or_insert(true);
        }
        let mut maybe_known = Box::new([0u64; 1024]);
        for &n in known.keys() {
            let bit = (n & 0xFFFF) as usize;
            maybe_known[bit >> 6] |= 1 << (bit & 63);
        }
        Decider {
            known,
            maybe_known,
            seed_mix: mix(self.seed),
            threshold: rate_threshold(self.rate),
        }
    }
}

/// Fsyncs of finished result chunks that may run behind the writer at once.
const SYNCS_BEHIND: usize = 2;

/// Writes the result file into chunks of `chunk_bytes` of content. A finished chunk's fsync
/// runs on its own thread behind the writer (at most [`SYNCS_BEHIND`] at once), so the disk
/// works while the next chunk is judged and written; [`ResultSink::finish`] returns once every
/// chunk is durable. On disk the chunks are written around the page cache where the filesystem
/// allows ([`direct`]).
///
/// Gzip'd (if [`PosConfig::result_encoding`] says so): each chunk is stored as one gzip
/// member of its content, made as it is written by the line encoder ([`GzipLines`]: a `.dat`
/// result to about 15 %, in bounded memory), as a MESH sender uploading with
/// `Content-Encoding: gzip` stores it; the message is then marked gzip'd, and the download
/// passes it through or decodes it (`api/inbox.rs`).
struct ResultSink {
    chunk_bytes: u64,
    tmp_dir: Option<PathBuf>,
    done: Vec<Received>,
    mem: Vec<u8>,
    file: Option<direct::ChunkFile>,
    /// What the current chunk file has not written yet (made with the first file).
    stage: Option<direct::Stage>,
    /// Content bytes of the current chunk.
    len: u64,
    /// Bytes stored of the current chunk (its gzip so far, or `len`).
    stored: u64,
    /// The current chunk's gzip member, if results are gzip'd, and its bytes not yet stored.
    gzip: Option<(Box<GzipLines>, Vec<u8>)>,
    syncing: std::collections::VecDeque<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl ResultSink {
    fn new(chunk_bytes: u64, gzip: bool, tmp_dir: Option<PathBuf>) -> ResultSink {
        ResultSink {
            chunk_bytes,
            tmp_dir,
            done: Vec::new(),
            mem: Vec::new(),
            file: None,
            stage: None,
            len: 0,
            stored: 0,
            gzip: gzip.then(|| (Box::new(GzipLines::new()), Vec::new())),
            syncing: std::collections::VecDeque::new(),
        }
    }

    /// How the chunks are stored.
    fn encoding(&self) -> ContentEncoding {
        if self.gzip.is_some() {
            ContentEncoding::Gzip
        } else {
            ContentEncoding::Identity
        }
    }

    /// Opens the next chunk file in `dir` (a fresh name in the store's `tmp/`).
    fn open_file(&mut self, dir: &std::path::Path) -> std::io::Result<()> {
        let p = dir.join(uuid::Uuid::new_v4().simple().to_string());
        self.file = Some(direct::ChunkFile::create(p)?);
        self.stage.get_or_insert_with(direct::Stage::new);
        Ok(())
    }

    /// Appends `data` to the content (the writer gets it in [`scan::BUF`] pieces).
    fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let room = (self.chunk_bytes - self.len).min(data.len() as u64) as usize;
            let (now, rest) = data.split_at(room);
            if self.gzip.is_some() {
                self.gzip_step(|z, out| z.write(now, out))?;
            } else {
                self.store(now)?;
            }
            self.len += room as u64;
            data = rest;
            if self.len == self.chunk_bytes {
                self.cut(false)?;
            }
        }
        Ok(())
    }

    /// Gzip'd results: runs `step` on the current chunk's gzip member and stores the compressed
    /// bytes it gives. Nothing for plain results.
    fn gzip_step(
        &mut self,
        step: impl FnOnce(&mut GzipLines, &mut Vec<u8>),
    ) -> std::io::Result<()> {
        let Some((mut z, mut out)) = self.gzip.take() else {
            return Ok(());
        };
        step(&mut z, &mut out);
        let stored = self.store(&out);
        out.clear();
        self.gzip = Some((z, out));
        stored
    }

    /// Appends `bytes` to what is stored of the current chunk.
    fn store(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.tmp_dir.is_none() {
            self.mem.extend_from_slice(bytes);
        } else {
            if self.file.is_none() {
                if let Some(dir) = self.tmp_dir.clone() {
                    self.open_file(&dir)?; // the path cloned once a chunk, not per call
                }
            }
            if let (Some(f), Some(stage)) = (&mut self.file, &mut self.stage) {
                f.write(stage, bytes)?;
            }
        }
        self.stored += bytes.len() as u64;
        Ok(())
    }

    /// Ends the current chunk (its gzip member's end stored); its fsync runs behind unless
    /// `now`.
    fn cut(&mut self, now: bool) -> std::io::Result<()> {
        self.gzip_step(|z, out| z.finish(out))?;
        if let (Some(dir), None) = (self.tmp_dir.clone(), &self.file) {
            // an empty chunk on disk still needs a file
            self.open_file(&dir)?;
        }
        match self.file.take() {
            Some(f) => {
                let stage = self.stage.get_or_insert_with(direct::Stage::new);
                let (f, tmp) = f.finish(stage)?;
                self.done.push(Received::File {
                    tmp,
                    size: self.stored,
                });
                if now {
                    f.sync_all()?;
                } else {
                    if self.syncing.len() >= SYNCS_BEHIND {
                        self.wait_one()?;
                    }
                    let h = std::thread::Builder::new()
                        .name("pos-fsync".into())
                        .spawn(move || f.sync_all())?;
                    self.syncing.push_back(h);
                }
            }
            None => {
                let b = Bytes::from(std::mem::take(&mut self.mem));
                self.done.push(Received::Memory(b));
            }
        }
        self.len = 0;
        self.stored = 0;
        Ok(())
    }

    /// Waits for the oldest fsync running behind.
    fn wait_one(&mut self) -> std::io::Result<()> {
        match self.syncing.pop_front() {
            None => Ok(()),
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("an fsync thread failed"))),
        }
    }

    /// The chunks, every one durable; at least one (an empty file is one empty chunk).
    fn finish(mut self) -> std::io::Result<Vec<Received>> {
        if self.len > 0 || self.done.is_empty() {
            self.cut(true)?;
        }
        while !self.syncing.is_empty() {
            self.wait_one()?;
        }
        Ok(std::mem::take(&mut self.done))
    }

    fn discard(mut self) {
        while !self.syncing.is_empty() {
            let _ = self.wait_one();
        }
        if let Some(f) = self.file.take() {
            let _ = std::fs::remove_file(f.path());
        }
        for r in std::mem::take(&mut self.done) {
            if let Received::File { tmp, .. } = r {
                let _ = std::fs::remove_file(tmp);
            }
        }
    }
}

/// What one pass over a submitted file found.
struct Analysis {
    size: u64,
    hash: String,
    lines: u64,
    kept_lines: u64,
    invalid: bool,
    line_ending: &'static str,
    result: Option<ResultSink>,
    /// What each stage of the pass cost.
    cpu: scan::StageCpu,
}

/// One streaming pass over a submission: hash, validate, and write the kept lines to `sink`
/// (decoding, judging and writing pipelined: [`scan`]). An error (unreadable data, or more
/// than the engine's decode limit) frees the sink's files.
fn analyse(
    parts: Box<dyn scan::Parts>,
    engine: &PosEngine,
    env: PosEnv,
    sink: ResultSink,
) -> std::io::Result<Analysis> {
    analyse_with(parts, &engine.decider(env), engine.max_decoded, sink)
}

/// [`analyse`] with the job's answers and decode limit.
fn analyse_with(
    parts: Box<dyn scan::Parts>,
    decider: &Decider,
    max: u64,
    mut sink: ResultSink,
) -> std::io::Result<Analysis> {
    match scan::pipeline(parts, &mut sink, |input, out| {
        judge_all(input, out, decider, max)
    }) {
        Err(e) => {
            sink.discard();
            Err(e)
        }
        Ok((mut a, hash, cpu)) => {
            a.hash = hash;
            a.cpu = cpu;
            if a.invalid || a.size == 0 {
                sink.discard();
            } else {
                a.result = Some(sink);
            }
            Ok(a)
        }
    }
}

/// Judges one line (with its terminator, if any) and counts it; true = keep it.
#[inline]
fn judge(line: &[u8], a: &mut Analysis, decider: &Decider) -> bool {
    a.lines += 1;
    if a.line_ending.is_empty() && line.ends_with(b"\n") {
        a.line_ending = if line.ends_with(b"\r\n") {
            "\r\n"
        } else {
            "\n"
        };
    }
    match parse_pos_line(line) {
        None => {
            a.invalid = true;
            false
        }
        Some(n) => keep_number(n, a, decider),
    }
}

/// Whether the line of valid number `n` is kept (counted).
#[inline]
fn keep_number(n: u64, a: &mut Analysis, decider: &Decider) -> bool {
    let keep = !decider.opted_out(n);
    a.kept_lines += u64::from(keep);
    keep
}

/// The judging stage: counts every decoded byte, judges every line, and hands each buffer to
/// `out` with the ranges of its kept lines (a line split across two buffers is carried over,
/// and handed on with the next buffer; one longer than 64 bytes cannot be valid). After the
/// first invalid line only the hash is computed.
fn judge_all(
    input: &mut scan::Input,
    out: &mut scan::Out,
    decider: &Decider,
    max_decoded: u64,
) -> std::io::Result<Analysis> {
    let mut carry: Vec<u8> = Vec::with_capacity(128);
    let mut a = Analysis {
        size: 0,
        hash: String::new(),
        lines: 0,
        kept_lines: 0,
        invalid: false,
        line_ending: "",
        result: None,
        cpu: scan::StageCpu::default(),
    };
    let mut counts = fixed::Counts::default();
    while let Some(data) = input.next() {
        a.size += data.len() as u64;
        if a.size > max_decoded {
            return Err(std::io::Error::other(
                "the decoded submission is over the POS limit",
            ));
        }
        if a.invalid {
            input.recycle(data);
            continue; // only the hash (the decoder's) matters now
        }
        let mut kept = out.take();
        let mut pos = 0;
        if !carry.is_empty() {
            match memchr::memchr(b'\n', &data) {
                Some(i) => {
                    carry.extend_from_slice(&data[..=i]);
                    if judge(&carry, &mut a, decider) {
                        kept.head.extend_from_slice(&carry);
                    }
                    carry.clear();
                    pos = i + 1;
                }
                None => {
                    carry.extend_from_slice(&data);
                    if carry.len() > 64 {
                        a.invalid = true;
                    }
                    input.recycle(data);
                    continue;
                }
            }
        }
        let mut run_start = pos;
        let mut line_start = pos;
        loop {
            // a stretch of `.dat` lines, vectorised where the CPU allows
            let at = line_start;
            line_start = fixed::judge_lines(
                &data,
                at,
                decider,
                &mut kept.runs,
                &mut run_start,
                &mut counts,
            );
            if line_start > at && a.line_ending.is_empty() {
                a.line_ending = "\r\n";
            }
            let Some(rest) = data.get(line_start..).filter(|r| !r.is_empty()) else {
                break;
            };
            // the `.dat` line `NNNNNNNNNN,\r\n` of ndop and the POS's documentation, judged
            // without looking for its end; any other line as it comes
            let fixed = rest.first_chunk::<13>().and_then(crlf_line_value);
            let (end, keep) = match fixed {
                Some(n) => {
                    a.lines += 1;
                    if a.line_ending.is_empty() {
                        a.line_ending = "\r\n";
                    }
                    (line_start + 13, keep_number(n, &mut a, decider))
                }
                None => match memchr::memchr(b'\n', rest) {
                    Some(i) => (line_start + i + 1, judge(&rest[..=i], &mut a, decider)),
                    None => break,
                },
            };
            if !keep {
                if a.invalid {
                    break;
                }
                if run_start < line_start {
                    kept.runs.push(run_start..line_start);
                }
                run_start = end;
            }
            line_start = end;
        }
        if a.invalid {
            input.recycle(data);
            continue;
        }
        if run_start < line_start {
            kept.runs.push(run_start..line_start);
        }
        carry.extend_from_slice(&data[line_start..]);
        if carry.len() > 64 {
            a.invalid = true;
        }
        kept.buf = data;
        out.send(kept)?;
    }
    if !a.invalid && !carry.is_empty() && judge(&carry, &mut a, decider) {
        let mut kept = out.take();
        kept.head.extend_from_slice(&carry);
        out.send(kept)?;
    }
    if a.line_ending.is_empty() {
        a.line_ending = "\r\n";
    }
    a.lines += counts.lines;
    a.kept_lines += counts.kept;
    Ok(a)
}

/// Opens the decoded content of a whole message, chunk by chunk.
fn open_message(sources: Vec<ChunkSource>, gzip: bool) -> std::io::Result<Box<dyn scan::Parts>> {
    let mut parts = std::collections::VecDeque::new();
    for s in sources {
        let (part, _) = open_chunk(s, gzip)?;
        parts.push_back(part);
    }
    Ok(Box::new(parts))
}

/// Opens the decoded content of one stored chunk, and what was opened (kept open: see
/// [`early::Held`]).
fn open_chunk(s: ChunkSource, gzip: bool) -> std::io::Result<(Box<dyn Read + Send>, early::Held)> {
    // buffered readers, so that the gzip decoder reads from their buffers (its `bufread` form)
    // rather than copying through one more buffer of its own
    let (raw, held): (Box<dyn std::io::BufRead + Send>, _) = match s {
        ChunkSource::Memory(b) => (
            Box::new(std::io::Cursor::new(b.clone())),
            early::Held::Memory(b),
        ),
        ChunkSource::File { path, .. } => {
            let f = std::fs::File::open(path)?;
            let held = early::Held::File(f.try_clone()?);
            (
                Box::new(std::io::BufReader::with_capacity(1 << 20, f)),
                held,
            )
        }
    };
    let part: Box<dyn Read + Send> = if gzip {
        Box::new(flate2::bufread::MultiGzDecoder::new(raw))
    } else {
        Box::new(raw)
    };
    Ok((part, held))
}

#[cfg(test)]
mod tests {
    use super::*;
    use scan::Parts;
    use sha2::{Digest, Sha256};
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn modulus_11() {
        assert!(is_valid_nhs_number(b"9434765919"));
        assert!(!is_valid_nhs_number(b"9434765918"));
        assert!(!is_valid_nhs_number(b"9991234560")); // remainder 1: never valid
        assert!(is_valid_nhs_number(b"0000000000"));
        assert!(!is_valid_nhs_number(b"943476591"));
        assert!(!is_valid_nhs_number(b"94347659a9"));
        for line in PUBLISHED_TEST_PATIENTS.lines().skip(1) {
            let n = line.split(',').nth(1).unwrap();
            assert!(is_valid_nhs_number(n.as_bytes()), "{n}");
        }
    }

    /// The Data Dictionary's words, digit by digit.
    fn naive_value(d: &[u8]) -> Option<u64> {
        if d.len() != 10 || !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let sum: u32 = (0..9)
            .map(|i| u32::from(d[i] - b'0') * (10 - i as u32))
            .sum();
        let check = match 11 - sum % 11 {
            11 => 0,
            10 => return None,
            c => c,
        };
        (u32::from(d[9] - b'0') == check).then(|| std::str::from_utf8(d).unwrap().parse().unwrap())
    }

    /// The vectorised `.dat` line's answer for `line` followed by three bytes of `x` (the next
    /// line's, which it must not look at); `crlf_line_value`'s where the CPU lacks the vectors.
    fn vector_line_value(line: &[u8; 13], x: u64) -> Option<u64> {
        let mut v = [0u8; 16];
        v[..13].copy_from_slice(line);
        v[13..].copy_from_slice(&x.to_le_bytes()[..3]);
        #[cfg(target_arch = "x86_64")]
        if fixed::simd_available() {
            // SAFETY: 16 bytes readable at the pointer; the features were checked.
            return unsafe { fixed::x86::line_value(v.as_ptr()) };
        }
        crlf_line_value(line)
    }

    #[test]
    fn modulus_11_fast_form_agrees_with_the_definition() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut valid = 0;
        for i in 0..300_000u64 {
            x = mix(x);
            let mut d = format!("{:010}", x % 10_000_000_000).into_bytes();
            if i % 7 == 0 {
                // the bytes either side of the digits, anywhere
                d[(x >> 40) as usize % 10] = if x & 1 == 0 { b'/' } else { b':' };
            }
            let want = naive_value(&d);
            valid += usize::from(want.is_some());
            assert_eq!(
                nhs_number_value(&d),
                want,
                "{}",
                String::from_utf8_lossy(&d)
            );
            // the `.dat` line's own path: the same answer, and none if its end is not `,\r\n`
            let mut line = [0u8; 13];
            line[..10].copy_from_slice(&d);
            line[10..].copy_from_slice(b",\r\n");
            assert_eq!(crlf_line_value(&line), want);
            assert_eq!(vector_line_value(&line, x), want);
            line[10 + (x >> 20) as usize % 3] = b'0' + (x >> 8) as u8 % 10;
            assert_eq!(crlf_line_value(&line), None);
            assert_eq!(vector_line_value(&line, x), None);
        }
        assert!(valid > 20_000, "{valid}"); // about 1 in 11 random numbers passes
        for d in [
            &b"0000000000"[..],
            b"9999999999",
            b"999999999",
            b"99999999999",
            b"",
        ] {
            assert_eq!(nhs_number_value(d), naive_value(d));
        }
    }

    #[test]
    fn pos_lines() {
        assert_eq!(parse_pos_line(b"9434765919,\r\n"), Some(9434765919));
        assert_eq!(parse_pos_line(b"9434765919\n"), Some(9434765919));
        assert_eq!(parse_pos_line(b"9434765919"), Some(9434765919));
        assert_eq!(parse_pos_line(b"9434765919,"), Some(9434765919));
        assert_eq!(parse_pos_line(b"9434765919,,\n"), None);
        assert_eq!(parse_pos_line(b" 9434765919\n"), None);
        assert_eq!(parse_pos_line(b"\n"), None);
        assert_eq!(parse_pos_line(b"943 476 5919\n"), None);
    }

    #[test]
    fn optout_hash_is_deterministic_and_near_the_rate() {
        assert_eq!(optout_hash(9434765919, 7), optout_hash(9434765919, 7));
        assert_ne!(optout_hash(9434765919, 7), optout_hash(9434765919, 8));
        let hits = (0..100_000u64)
            .filter(|i| opted_out_by_rate(9_000_000_000 + i, 42, 0.05))
            .count();
        assert!((4_500..5_500).contains(&hits), "{hits}");
        assert!(!opted_out_by_rate(1, 1, 0.0));
        assert!(opted_out_by_rate(1, 1, 1.0));
        // pinned: changing the hash changes every synthetic answer
        assert_eq!(optout_hash(0, 0), mix(mix(0)));
    }

    fn run(input: &[u8], env: PosEnv, rate: f64) -> (Analysis, Vec<u8>) {
        let engine = engine_at(rate, 7);
        let (a, out) = run_reader(
            scan::one(std::io::Cursor::new(input.to_vec())),
            &engine,
            env,
            7,
        );
        (a.unwrap(), out)
    }

    /// [`analyse`] of `reader` into memory chunks of `chunk` bytes: the analysis (or its
    /// error) and the result's bytes.
    fn run_reader(
        parts: Box<dyn scan::Parts>,
        engine: &PosEngine,
        env: PosEnv,
        chunk: u64,
    ) -> (std::io::Result<Analysis>, Vec<u8>) {
        let mut a = analyse(parts, engine, env, ResultSink::new(chunk, false, None));
        let mut out = Vec::new();
        if let Some(s) = a.as_mut().ok().and_then(|a| a.result.take()) {
            for c in s.finish().unwrap() {
                if let Received::Memory(b) = c {
                    out.extend_from_slice(&b);
                }
            }
        }
        (a, out)
    }

    #[test]
    fn int_patients_filtered_with_line_endings_kept() {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for line in PUBLISHED_TEST_PATIENTS
            .lines()
            .filter(|l| l.starts_with("int,"))
        {
            let f: Vec<&str> = line.split(',').collect();
            let l = format!("{},\r\n", f[1]);
            input.extend_from_slice(l.as_bytes());
            if f[2] == "no" {
                expected.extend_from_slice(l.as_bytes());
            }
        }
        let (a, out) = run(&input, PosEnv::Int, 0.0);
        assert!(!a.invalid);
        assert_eq!(a.lines, 20);
        assert_eq!(a.kept_lines, 10);
        assert_eq!(out, expected);
        // LIVE table does not opt out INT patients
        let (a, out) = run(&input, PosEnv::Live, 0.0);
        assert_eq!(a.kept_lines, 20);
        assert_eq!(out, input);
    }

    #[test]
    fn invalid_and_unterminated_lines() {
        let (a, _) = run(b"9434765919,\n123\n", PosEnv::Int, 0.0);
        assert!(a.invalid);
        assert_eq!(a.line_ending, "\n");
        let (a, out) = run(b"9434765919\n9434765919", PosEnv::Int, 0.0);
        assert!(!a.invalid);
        assert_eq!(out, b"9434765919\n9434765919");
        let (a, _) = run(&[b'1'; 1000], PosEnv::Int, 0.0);
        assert!(a.invalid);
        let (a, _) = run(b"", PosEnv::Int, 0.0);
        assert_eq!(a.size, 0);
        let (_, out) = run(b"9434765919\n", PosEnv::Int, 1.0);
        assert!(out.is_empty());
    }

    /// The judging loop (a fast path for `NNNNNNNNNN,\r\n` lines, any other line found by its
    /// end) against the rules line by line, on files of random line shapes, some invalid.
    #[test]
    fn judging_agrees_with_the_rules_line_by_line() {
        let shapes: [&dyn Fn(u64) -> String; 9] = [
            &|n| format!("{n},\r\n"),
            &|n| format!("{n}\n"),
            &|n| format!("{n},\n"),
            &|n| format!("{n}\r\n"),
            &|n| format!("{},\r\n", n + 1), // bad check digit (or 11 digits)
            &|n| format!("{}\n{},\r\n", n / 1000, n % 1000), // short line, then a short one
            &|n| format!("{n}x\r\n"),
            &|n| format!("{n},,\r\n"),
            &|_| "\n".to_string(),
        ];
        let mut x = 7u64;
        for case in 0..300 {
            let (mut file, mut want) = (Vec::new(), Vec::new());
            let lines = 1 + case % 40;
            for _ in 0..lines {
                x = mix(x);
                let n = test_number(x % 1000);
                // mostly valid lines; one case in three gets invalid shapes too
                let pick = if case % 3 == 0 {
                    x >> 60
                } else {
                    (x >> 62) & 3
                } as usize;
                file.extend_from_slice(shapes[pick % shapes.len()](n).as_bytes());
            }
            if case % 5 == 0 {
                file.truncate(file.len() - 1); // an unterminated last line
            }
            let rate = 0.3;
            let (mut invalid, mut kept_lines, mut ending) = (false, 0, "");
            for line in file.split_inclusive(|&b| b == b'\n') {
                if ending.is_empty() && line.ends_with(b"\n") {
                    ending = if line.ends_with(b"\r\n") {
                        "\r\n"
                    } else {
                        "\n"
                    };
                }
                match parse_pos_line(line) {
                    None => invalid = true,
                    Some(n) if opted_out_by_rate(n, 0, rate) => {}
                    Some(_) => {
                        kept_lines += 1;
                        want.extend_from_slice(line);
                    }
                }
            }
            let (a, out) = run(&file, PosEnv::Live, rate);
            let shown = String::from_utf8_lossy(&file);
            assert_eq!(a.invalid, invalid, "{shown:?}");
            assert_eq!(
                a.line_ending,
                if ending.is_empty() { "\r\n" } else { ending }
            );
            if !invalid {
                assert_eq!(a.kept_lines, kept_lines, "{shown:?}");
                assert_eq!(out, want, "{shown:?}");
            }
        }
    }

    /// The `i`th number of the 999 test range that passes Modulus 11 (about 10 in 11 do).
    fn test_number(i: u64) -> u64 {
        (i * 10 / 9..)
            .map(|k| 999_000_000 + k % 1_000_000)
            .find_map(|stem| {
                let digits = stem.to_string();
                let sum: u32 = digits
                    .bytes()
                    .zip((2..=10).rev())
                    .map(|(d, w)| u32::from(d - b'0') * w)
                    .sum();
                match 11 - sum % 11 {
                    10 => None,
                    11 => Some(stem * 10),
                    c => Some(stem * 10 + u64::from(c)),
                }
            })
            .unwrap()
    }

    #[test]
    fn the_decider_answers_as_the_rules_say() {
        let int: Vec<u64> = PUBLISHED_TEST_PATIENTS
            .lines()
            .filter(|l| l.starts_with("int,") && l.ends_with(",yes"))
            .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
            .collect();
        let extra: Vec<u64> = (0..50).map(|i| test_number(i * 7)).collect();
        // Consents: some withdraw a table or extra opt-out, some add one
        let consents: HashMap<u64, bool> = [
            (int[0], false),
            (extra[0], false),
            (test_number(1000), true),
            (test_number(1001), false),
        ]
        .into_iter()
        .collect();
        let shared = std::sync::Arc::new(std::sync::RwLock::new(consents.clone()));
        for rate in [0.0, 1e-300, 0.05, 0.3, 0.999_999, 1.0] {
            let c = PosConfig {
                optout_rate: rate,
                optout_seed: 11,
                optout_numbers: extra.clone(),
                ..PosConfig::default()
            };
            let engine = PosEngine::new(&c, 7).with_consents(shared.clone());
            for env in [PosEnv::Int, PosEnv::Live] {
                let d = engine.decider(env);
                let table = match env {
                    PosEnv::Int => &engine.int,
                    PosEnv::Live => &engine.live,
                };
                let candidates = (0..20_000u64)
                    .map(test_number)
                    .chain(int.iter().copied())
                    .chain(extra.iter().copied())
                    .chain(consents.keys().copied())
                    .chain([0, 9_999_999_999, u64::MAX]);
                for n in candidates {
                    let want = match (env, consents.get(&n)) {
                        (PosEnv::Int, Some(&active)) => active,
                        _ => {
                            table.contains(&n)
                                || extra.contains(&n)
                                || opted_out_by_rate(n, 11, rate)
                        }
                    };
                    assert_eq!(d.opted_out(n), want, "rate {rate} {env:?}");
                }
            }
        }
    }

    /// Hands out at most `step` bytes per read, as a socket or a decoder may.
    struct Dribble<'a>(&'a [u8], usize);

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// About `bytes` of valid lines (CRLF and LF, with and without the comma) and those of them
    /// not `opted_out`.
    /// What an analysis says of a file: size, hash, lines, kept lines, invalid, line ending.
    fn summary(a: &Analysis) -> (u64, String, u64, u64, bool, &'static str) {
        (
            a.size,
            a.hash.clone(),
            a.lines,
            a.kept_lines,
            a.invalid,
            a.line_ending,
        )
    }

    /// An engine opting out `rate` of the numbers it does not know, writing result chunks of
    /// `chunk_bytes`.
    fn engine_at(rate: f64, chunk_bytes: u64) -> PosEngine {
        PosEngine::new(
            &PosConfig {
                optout_rate: rate,
                ..PosConfig::default()
            },
            chunk_bytes,
        )
    }

    fn big_file(bytes: usize, opted_out: impl Fn(u64) -> bool) -> (Vec<u8>, Vec<u8>) {
        let (mut input, mut kept) = (Vec::new(), Vec::new());
        let mut i = 0;
        while input.len() < bytes {
            let n = test_number(i % 500_000);
            let line = match i % 3 {
                0 => format!("{n},\r\n"),
                1 => format!("{n}\n"),
                _ => format!("{n},\n"),
            };
            input.extend_from_slice(line.as_bytes());
            if !opted_out(n) {
                kept.extend_from_slice(line.as_bytes());
            }
            i += 1;
        }
        (input, kept)
    }

    /// A result chunk's content: the file's bytes, or the one gzip member it holds (flate2
    /// checks its CRC-32 and length; no bytes may follow it).
    fn chunk_content(stored: Vec<u8>, gzip: bool) -> Vec<u8> {
        if !gzip {
            return stored;
        }
        let mut rest = &stored[..];
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&mut rest)
            .read_to_end(&mut out)
            .unwrap();
        assert!(rest.is_empty(), "one gzip member a chunk");
        out
    }

    /// A result over many buffers is cut into chunks of exactly `chunk_bytes` of content but
    /// the last, whose contents are the kept lines byte for byte; plain, or each chunk one gzip
    /// member (the line encoder's: far smaller), on disk and in memory.
    #[test]
    fn a_file_of_many_buffers_is_one_pass_cut_into_exact_chunks() {
        let engine = engine_at(0.3, 3_000_001);
        let (input, kept) = big_file(scan::BUF + 100_000, |n| {
            engine.live.contains(&n) || opted_out_by_rate(n, 0, 0.3)
        });
        for (gzip, on_disk) in [(false, true), (true, true), (true, false)] {
            let dir = tempfile::tempdir().unwrap();
            let sink = ResultSink::new(3_000_001, gzip, on_disk.then(|| dir.path().to_path_buf()));
            let reader = scan::one(Dribble(
                Box::leak(input.clone().into_boxed_slice()),
                999_983,
            ));
            let mut a = analyse(reader, &engine, PosEnv::Live, sink).unwrap();
            assert!(!a.invalid);
            assert_eq!(a.size, input.len() as u64);
            assert_eq!(a.hash, hex::encode(Sha256::digest(&input)));
            assert_eq!(
                a.lines,
                input.iter().filter(|&&b| b == b'\n').count() as u64
            );
            assert_eq!(a.line_ending, "\r\n");
            let sink = a.result.take().unwrap();
            let want_encoding = if gzip {
                ContentEncoding::Gzip
            } else {
                ContentEncoding::Identity
            };
            assert_eq!(sink.encoding(), want_encoding);
            let chunks = sink.finish().unwrap();
            let (mut out, mut stored_total) = (Vec::new(), 0);
            for (i, c) in chunks.iter().enumerate() {
                let stored = match c {
                    Received::File { tmp, size } => {
                        let bytes = std::fs::read(tmp).unwrap();
                        assert_eq!(bytes.len() as u64, *size, "the recorded size is stored");
                        bytes
                    }
                    Received::Memory(b) => {
                        assert!(!on_disk, "a disk sink writes files");
                        b.to_vec()
                    }
                };
                stored_total += stored.len();
                let content = chunk_content(stored, gzip);
                if i + 1 < chunks.len() {
                    assert_eq!(content.len(), 3_000_001, "every chunk but the last is full");
                }
                out.extend_from_slice(&content);
            }
            assert_eq!(out.len(), kept.len());
            assert!(out == kept, "the kept lines, byte for byte (gzip {gzip})");
            if gzip {
                // (lines of three shapes in turn: the line encoder's one distance fits a third)
                assert!(
                    stored_total < kept.len() / 2,
                    "{stored_total} of {}",
                    kept.len()
                );
            }
            let files = if on_disk { chunks.len() } else { 0 };
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), files);
        }
    }

    /// An empty result is one chunk, on disk or not, plain or one empty gzip member.
    #[test]
    fn an_empty_result_is_one_empty_chunk() {
        for (gzip, on_disk) in [(false, true), (true, true), (false, false), (true, false)] {
            let dir = tempfile::tempdir().unwrap();
            let sink = ResultSink::new(1000, gzip, on_disk.then(|| dir.path().to_path_buf()));
            let chunks = sink.finish().unwrap();
            assert_eq!(chunks.len(), 1);
            let stored = match &chunks[0] {
                Received::File { tmp, size } => {
                    let b = std::fs::read(tmp).unwrap();
                    assert_eq!(b.len() as u64, *size);
                    b
                }
                Received::Memory(b) => b.to_vec(),
            };
            assert!(chunk_content(stored, gzip).is_empty());
        }
    }

    #[test]
    fn a_submission_over_the_decode_limit_leaves_no_file() {
        let input = b"9434765919,\r\n".repeat(scan::BUF * 3 / 13);
        let engine =
            PosEngine::new(&PosConfig::default(), 1_000_000).with_max_decoded(scan::BUF as u64 + 1);
        let dir = tempfile::tempdir().unwrap();
        let sink = ResultSink::new(1_000_000, true, Some(dir.path().to_path_buf()));
        let r = analyse(
            scan::one(std::io::Cursor::new(input)),
            &engine,
            PosEnv::Live,
            sink,
        );
        assert!(r.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// A reader that fails after some bytes, as a corrupt gzip stream does.
    struct Broken(usize);

    impl Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("corrupt deflate stream"));
            }
            let n = buf.len().min(self.0);
            buf[..n].copy_from_slice(&b"9434765919\n".repeat(n / 11 + 1)[..n]);
            self.0 -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_read_error_mid_file_is_the_answer_and_leaves_no_file() {
        let engine = PosEngine::new(&PosConfig::default(), 1_000_000);
        let dir = tempfile::tempdir().unwrap();
        let sink = ResultSink::new(1_000_000, true, Some(dir.path().to_path_buf()));
        let r = analyse(
            scan::one(Broken(scan::BUF * 2 + 11 * 1000)),
            &engine,
            PosEnv::Live,
            sink,
        );
        assert_eq!(r.err().unwrap().to_string(), "corrupt deflate stream");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
    /// `data` as one gzip member; with a file name in its header if `named`.
    fn gz(data: &[u8], named: bool) -> Vec<u8> {
        let b = flate2::GzBuilder::new();
        let b = if named { b.filename("x.dat") } else { b };
        let mut e = b.write(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Stored gzip'd chunks give the same analysis and result as their content: single
    /// members, two members in one chunk, the same member twice (its trailer then matches the
    /// first member's), a header with a file name, an empty member; on disk and in memory. A
    /// corrupt member or one over the decode limit is an error. (Pins the decoder's answers
    /// for any faster one: a whole-member libdeflate path was tried and measured slower.)
    #[test]
    fn gzip_chunks_decode_whole_or_streaming_to_the_same_answer() {
        let engine = engine_at(0.3, 1_000_003);
        let (content, _) = big_file(scan::BUF + 12_345, |_| false);
        let third = content.len() / 3;
        let (a, b, c) = (
            &content[..third],
            &content[third..2 * third + 7],
            &content[2 * third + 7..],
        );
        let (want, want_out) = run_reader(
            scan::one(std::io::Cursor::new(content.clone())),
            &engine,
            PosEnv::Live,
            1_000_003,
        );
        let want = summary(&want.unwrap());
        assert!(!want.4 && want.3 < want.2, "valid, some lines opted out");
        let half = b.len() / 2;
        let twice = [gz(&a[..1000], false), gz(&a[..1000], false)].concat();
        // (what, the stored chunks, their decoded content)
        type Shape<'a> = (&'a str, Vec<Vec<u8>>, Vec<u8>);
        let shapes: Vec<Shape> = vec![
            (
                "one member each",
                vec![gz(a, false), gz(b, false), gz(c, false)],
                content.clone(),
            ),
            (
                "two members in a chunk",
                vec![
                    gz(a, false),
                    [gz(&b[..half], false), gz(&b[half..], false)].concat(),
                    gz(c, false),
                ],
                content.clone(),
            ),
            (
                "a named header",
                vec![gz(a, true), gz(b, false), gz(c, true)],
                content.clone(),
            ),
            (
                "an empty member",
                vec![gz(a, false), gz(b"", false), gz(b, false), gz(c, false)],
                content.clone(),
            ),
            (
                "one member twice",
                vec![twice, gz(&a[1000..], false), gz(b, false), gz(c, false)],
                [&a[..1000], a, b, c].concat(),
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (what, chunks, decoded) in shapes {
            let (want, want_out) = if decoded == content {
                (want.clone(), want_out.clone())
            } else {
                let (w, o) = run_reader(
                    scan::one(std::io::Cursor::new(decoded.clone())),
                    &engine,
                    PosEnv::Live,
                    1_000_003,
                );
                (summary(&w.unwrap()), o)
            };
            assert_eq!(want.1, hex::encode(Sha256::digest(&decoded)));
            for on_disk in [false, true] {
                let sources: Vec<ChunkSource> = chunks
                    .iter()
                    .enumerate()
                    .map(|(i, bytes)| {
                        if on_disk {
                            let path = dir.path().join(format!("{i}"));
                            std::fs::write(&path, bytes).unwrap();
                            let size = bytes.len() as u64;
                            ChunkSource::File { path, size }
                        } else {
                            ChunkSource::Memory(Bytes::from(bytes.clone()))
                        }
                    })
                    .collect();
                let (got, out) = run_reader(
                    open_message(sources, true).unwrap(),
                    &engine,
                    PosEnv::Live,
                    1_000_003,
                );
                assert_eq!(summary(&got.unwrap()), want, "{what}, on disk {on_disk}");
                assert!(
                    out == want_out,
                    "{what}, on disk {on_disk}: the same result"
                );
            }
        }
        // a corrupt CRC-32, and a member over the decode limit: errors, no result
        let mut bad = gz(a, false);
        let at = bad.len() - 6;
        bad[at] ^= 1;
        let small =
            PosEngine::new(&PosConfig::default(), 1_000_003).with_max_decoded(a.len() as u64 - 1);
        for (chunk, engine) in [(bad, &engine), (gz(a, false), &small)] {
            let source = ChunkSource::Memory(Bytes::from(chunk));
            let (got, out) = run_reader(
                open_message(vec![source], true).unwrap(),
                engine,
                PosEnv::Live,
                1_000_003,
            );
            assert!(got.is_err());
            assert!(out.is_empty());
        }
    }

    /// The parts of a submission one at a time: the next is never there before the one
    /// before has been decoded.
    struct Serial(std::collections::VecDeque<Box<dyn Read + Send>>);

    impl Parts for Serial {
        fn next_part(&mut self, wait: bool) -> std::io::Result<scan::Next> {
            if !wait {
                return Ok(scan::Next::NotYet);
            }
            self.0.next_part(true)
        }
    }

    /// A part that notes when it is first read (`started`), and before it ends waits (10 s
    /// at most) for `other` to be started, noting in `overlapped` whether it was.
    struct Probe {
        inner: Box<dyn Read + Send>,
        started: Arc<AtomicBool>,
        other: Option<Arc<AtomicBool>>,
        overlapped: Arc<AtomicBool>,
    }

    impl Read for Probe {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.started.store(true, Ordering::SeqCst);
            let n = self.inner.read(buf)?;
            if let Some(other) = self.other.take_if(|_| n == 0) {
                let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while !other.load(Ordering::SeqCst) && std::time::Instant::now() < until {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                self.overlapped
                    .store(other.load(Ordering::SeqCst), Ordering::SeqCst);
            }
            Ok(n)
        }
    }

    /// A chunked submission (each chunk a gzip member of several decode buffers, lines
    /// spanning the chunk borders) decoded two chunks at a time gives the same analysis and
    /// result as one chunk at a time and as its content read whole; a corrupt middle chunk
    /// is the same error either way, with no result.
    #[test]
    fn chunks_decoded_two_at_a_time_give_the_same_answer_as_one_at_a_time() {
        let engine = engine_at(0.3, 1_000_003);
        let (content, _) = big_file(4 * scan::BUF + 3 * 54_321, |_| false);
        let quarter = content.len() / 4;
        let cuts = [
            0,
            quarter + 5,
            2 * quarter + 6,
            3 * quarter + 7,
            content.len(),
        ];
        assert!(
            cuts[1..4].iter().all(|&c| content[c - 1] != b'\n'),
            "lines span the borders"
        );
        let chunks: Vec<Vec<u8>> = cuts
            .windows(2)
            .map(|w| gz(&content[w[0]..w[1]], false))
            .collect();
        let (whole, whole_out) = run_reader(
            scan::one(std::io::Cursor::new(content.clone())),
            &engine,
            PosEnv::Live,
            1_000_003,
        );
        let whole = summary(&whole.unwrap());
        assert!(!whole.4 && whole.3 < whole.2, "valid, some lines opted out");
        let open = |chunks: &[Vec<u8>]| -> std::collections::VecDeque<Box<dyn Read + Send>> {
            chunks
                .iter()
                .map(|c| {
                    open_chunk(ChunkSource::Memory(Bytes::from(c.clone())), true)
                        .unwrap()
                        .0
                })
                .collect()
        };
        // two at a time: the first chunk does not end before the second has started
        let started: Vec<Arc<AtomicBool>> = (0..4).map(|_| Arc::default()).collect();
        let overlapped = Arc::new(AtomicBool::new(false));
        let probed: std::collections::VecDeque<Box<dyn Read + Send>> = open(&chunks)
            .into_iter()
            .enumerate()
            .map(|(i, inner)| {
                Box::new(Probe {
                    inner,
                    started: started[i].clone(),
                    other: (i == 0).then(|| started[1].clone()),
                    overlapped: overlapped.clone(),
                }) as Box<dyn Read + Send>
            })
            .collect();
        let (two, two_out) = run_reader(Box::new(probed), &engine, PosEnv::Live, 1_000_003);
        assert!(
            overlapped.load(Ordering::SeqCst),
            "two chunks decoded at once"
        );
        let (serial, serial_out) = run_reader(
            Box::new(Serial(open(&chunks))),
            &engine,
            PosEnv::Live,
            1_000_003,
        );
        assert_eq!(summary(&two.unwrap()), whole);
        assert_eq!(summary(&serial.unwrap()), whole);
        assert!(
            two_out == whole_out && serial_out == whole_out,
            "the same result"
        );
        // a corrupt middle chunk (its CRC-32): the same error both ways, no result
        let mut bad = chunks.clone();
        let at = bad[2].len() - 6;
        bad[2][at] ^= 1;
        let (two, two_out) = run_reader(Box::new(open(&bad)), &engine, PosEnv::Live, 1_000_003);
        let (serial, serial_out) = run_reader(
            Box::new(Serial(open(&bad))),
            &engine,
            PosEnv::Live,
            1_000_003,
        );
        let (two, serial) = (two.err().unwrap(), serial.err().unwrap());
        assert_eq!(two.to_string(), serial.to_string());
        assert!(two_out.is_empty() && serial_out.is_empty());
    }
}
