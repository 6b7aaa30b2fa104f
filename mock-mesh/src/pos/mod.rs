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
//!    `pos_chunk_bytes`; or, if any line is invalid, the single line
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
//! Nothing here logs an NHS number or file content: only ids, counts and sizes.

pub(crate) mod job;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use crate::config::{PosConfig, PosEnv};
use crate::store::{create_private, ChunkSource, Received};

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
    if digits.len() != 10 || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = digits[..9]
        .iter()
        .zip((2..=10).rev())
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        10 => return false,
        c => c,
    };
    u32::from(digits[9] - b'0') == check
}

/// Parses one POS line (with or without its terminator): `NNNNNNNNNN[,](\r\n|\n)?`.
/// Returns the number if the line is valid.
pub fn parse_pos_line(line: &[u8]) -> Option<u64> {
    let mut l = line;
    if let Some(rest) = l.strip_suffix(b"\n") {
        l = rest.strip_suffix(b"\r").unwrap_or(rest);
    }
    let l = l.strip_suffix(b",").unwrap_or(l);
    if !is_valid_nhs_number(l) {
        return None;
    }
    Some(l.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0')))
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
    /// Most bytes decoded from one submission (a gzip bomb is cut off here).
    max_decoded: u64,
    /// The FHIR API's opt-out state (INT): where a patient has a Consent, it decides.
    consents: Option<crate::fhir::consent::OptOuts>,
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
            max_decoded: u64::MAX,
            consents: None,
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

    /// The FHIR API's opt-out state now, for one job (INT only): a copy, so that a long job
    /// never holds up the API's writers and answers from one moment's state.
    fn consent_snapshot(&self, env: PosEnv) -> Option<HashMap<u64, bool>> {
        match (env, &self.consents) {
            (PosEnv::Int, Some(c)) => Some(c.read().unwrap_or_else(|p| p.into_inner()).clone()),
            _ => None,
        }
    }

    /// Whether `n` is opted out; a Consent in `consents` (see [`PosEngine::consent_snapshot`])
    /// decides first.
    pub(crate) fn opted_out(
        &self,
        env: PosEnv,
        n: u64,
        consents: Option<&HashMap<u64, bool>>,
    ) -> bool {
        if let Some(&active) = consents.and_then(|c| c.get(&n)) {
            return active;
        }
        let table = match env {
            PosEnv::Int => &self.int,
            PosEnv::Live => &self.live,
        };
        table.contains(&n) || self.extra.contains(&n) || opted_out_by_rate(n, self.seed, self.rate)
    }
}

/// Writes the result file into chunks of `chunk_bytes`.
struct ResultSink {
    chunk_bytes: u64,
    tmp_dir: Option<PathBuf>,
    done: Vec<Received>,
    mem: Vec<u8>,
    file: Option<(std::io::BufWriter<std::fs::File>, PathBuf)>,
    len: u64,
}

impl ResultSink {
    fn new(chunk_bytes: u64, tmp_dir: Option<PathBuf>) -> ResultSink {
        ResultSink {
            chunk_bytes,
            tmp_dir,
            done: Vec::new(),
            mem: Vec::new(),
            file: None,
            len: 0,
        }
    }

    fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let room = (self.chunk_bytes - self.len).min(data.len() as u64) as usize;
            let (now, rest) = data.split_at(room);
            match &self.tmp_dir {
                None => self.mem.extend_from_slice(now),
                Some(dir) => {
                    if self.file.is_none() {
                        let p = dir.join(uuid::Uuid::new_v4().simple().to_string());
                        let f = create_private(&p)?;
                        self.file = Some((std::io::BufWriter::with_capacity(1 << 20, f), p));
                    }
                    if let Some((w, _)) = &mut self.file {
                        w.write_all(now)?;
                    }
                }
            }
            self.len += room as u64;
            data = rest;
            if self.len == self.chunk_bytes {
                self.cut()?;
            }
        }
        Ok(())
    }

    fn cut(&mut self) -> std::io::Result<()> {
        match self.file.take() {
            Some((w, tmp)) => {
                let f = w.into_inner().map_err(|e| e.into_error())?;
                f.sync_all()?;
                self.done.push(Received::File {
                    tmp,
                    size: self.len,
                });
            }
            None => {
                let b = Bytes::from(std::mem::take(&mut self.mem));
                self.done.push(Received::Memory(b));
            }
        }
        self.len = 0;
        Ok(())
    }

    /// The chunks; at least one (an empty file is one empty chunk).
    fn finish(mut self) -> std::io::Result<Vec<Received>> {
        if self.len > 0 || self.done.is_empty() {
            if let (Some(dir), None) = (&self.tmp_dir, &self.file) {
                // an empty last chunk on disk still needs a file
                let p = dir.join(uuid::Uuid::new_v4().simple().to_string());
                let f = create_private(&p)?;
                self.file = Some((std::io::BufWriter::new(f), p));
            }
            self.cut()?;
        }
        Ok(self.done)
    }

    fn discard(self) {
        if let Some((_, p)) = self.file {
            let _ = std::fs::remove_file(p);
        }
        for r in self.done {
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
}

/// One streaming pass over a submission: hash, validate, and write the kept lines to `sink`.
/// An error (unreadable data, or more than the engine's decode limit) frees the sink's files.
fn analyse(
    mut reader: Box<dyn Read + Send>,
    engine: &PosEngine,
    env: PosEnv,
    mut sink: ResultSink,
) -> std::io::Result<Analysis> {
    match analyse_stream(&mut reader, engine, env, &mut sink) {
        Err(e) => {
            sink.discard();
            Err(e)
        }
        Ok(mut a) => {
            if a.invalid || a.size == 0 {
                sink.discard();
            } else {
                a.result = Some(sink);
            }
            Ok(a)
        }
    }
}

fn analyse_stream(
    reader: &mut Box<dyn Read + Send>,
    engine: &PosEngine,
    env: PosEnv,
    sink: &mut ResultSink,
) -> std::io::Result<Analysis> {
    let mut buf = vec![0u8; 4 << 20];
    let mut carry: Vec<u8> = Vec::new();
    let mut hasher = Sha256::new();
    let mut a = Analysis {
        size: 0,
        hash: String::new(),
        lines: 0,
        kept_lines: 0,
        invalid: false,
        line_ending: "",
        result: None,
    };
    let consents = engine.consent_snapshot(env);
    // judges one line; true = keep it
    let judge = |line: &[u8], a: &mut Analysis| -> bool {
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
            Some(n) if engine.opted_out(env, n, consents.as_ref()) => false,
            Some(_) => {
                a.kept_lines += 1;
                true
            }
        }
    };
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let data = &buf[..n];
        hasher.update(data);
        a.size += n as u64;
        if a.size > engine.max_decoded {
            return Err(std::io::Error::other(
                "the decoded submission is over the POS limit",
            ));
        }
        if a.invalid {
            continue; // only the hash matters now
        }
        let mut pos = 0;
        if !carry.is_empty() {
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    carry.extend_from_slice(&data[..=i]);
                    if judge(&carry, &mut a) {
                        sink.write(&carry)?;
                    }
                    carry.clear();
                    pos = i + 1;
                }
                None => {
                    carry.extend_from_slice(data);
                    if carry.len() > 64 {
                        a.invalid = true;
                    }
                    continue;
                }
            }
        }
        let mut run_start = pos;
        while let Some(i) = memchr::memchr(b'\n', &data[pos..]) {
            let end = pos + i + 1;
            if !judge(&data[pos..end], &mut a) {
                if a.invalid {
                    break;
                }
                sink.write(&data[run_start..pos])?;
                run_start = end;
            }
            pos = end;
        }
        if a.invalid {
            continue;
        }
        sink.write(&data[run_start..pos])?;
        carry.extend_from_slice(&data[pos..]);
        if carry.len() > 64 {
            a.invalid = true;
        }
    }
    if !a.invalid && !carry.is_empty() && judge(&carry, &mut a) {
        sink.write(&carry)?;
    }
    a.hash = hex::encode(hasher.finalize());
    if a.line_ending.is_empty() {
        a.line_ending = "\r\n";
    }
    Ok(a)
}

/// Opens the decoded content of a whole message.
fn open_message(sources: Vec<ChunkSource>, gzip: bool) -> std::io::Result<Box<dyn Read + Send>> {
    let mut reader: Box<dyn Read + Send> = Box::new(std::io::empty());
    for s in sources {
        let raw: Box<dyn Read + Send> = match s {
            ChunkSource::Memory(b) => Box::new(std::io::Cursor::new(b)),
            ChunkSource::File { path, .. } => Box::new(std::io::BufReader::with_capacity(
                1 << 20,
                std::fs::File::open(path)?,
            )),
        };
        let part: Box<dyn Read + Send> = if gzip {
            Box::new(MultiGzDecoder::new(raw))
        } else {
            raw
        };
        reader = Box::new(reader.chain(part));
    }
    Ok(reader)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let engine = PosEngine::new(
            &PosConfig {
                optout_rate: rate,
                ..PosConfig::default()
            },
            7,
        );
        let sink = ResultSink::new(7, None);
        let mut a = analyse(
            Box::new(std::io::Cursor::new(input.to_vec())),
            &engine,
            env,
            sink,
        )
        .unwrap();
        let mut out = Vec::new();
        if let Some(s) = a.result.take() {
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
}
