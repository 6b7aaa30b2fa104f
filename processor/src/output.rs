//! POS-ready output: `.dat` files of unique numbers, split under the MESH limits, each with a
//! DTSControl `.ctl` beside it, written atomically with mode 0600.
//!
//! Format (NHS "Check for National Data Opt-outs Service", "create the .dat file"): one
//! `NNNNNNNNNN,` line per number, CRLF by default, the last line terminated, no header. Names
//! follow the NHS convention `MAILBOX-DDMMYY-NNNN.dat`. Each file is written under a temporary
//! name, synced and renamed; the `.dat` is renamed before its `.ctl`, so a MESH client watching
//! the folder never picks up a control file whose data is incomplete.

use crate::error::{Error, Result};
use crate::nhs::digits_of_prefix;
use crate::seen::NumberSet;
use chrono::NaiveDate;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The POS workflow id ("SPINE NDOP External Upholding").
pub const WORKFLOW_ID: &str = "SPINE_NTT_UPHOLDING";

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

/// The Spine environment, which fixes the POS mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Integration: POS mailbox `X26OT154`.
    #[default]
    Int,
    /// Live: POS mailbox `X26HC065`.
    Live,
}

impl Environment {
    /// The POS mailbox of this environment.
    pub fn pos_mailbox(self) -> &'static str {
        match self {
            Environment::Int => "X26OT154",
            Environment::Live => "X26HC065",
        }
    }
}

impl std::str::FromStr for Environment {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "int" => Ok(Environment::Int),
            "live" => Ok(Environment::Live),
            _ => Err(format!("expected int or live, got {s:?}")),
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
    pub env: Environment,
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
    /// DTSControl LocalId (unique per content: it ends with 8 hex digits of the SHA-256).
    pub local_id: String,
}

/// Checks a MESH mailbox id: 1 to 20 letters and digits (upper-cased).
pub fn check_mailbox(mailbox: &str) -> Result<String> {
    let m = mailbox.trim().to_ascii_uppercase();
    if m.is_empty() || m.len() > 20 || !m.bytes().all(|b| b.is_ascii_alphanumeric()) {
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

/// Makes `dir` if needed; fails unless it ends up an empty directory.
pub fn ensure_empty_dir(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::OutputNotEmpty {
                    path: dir.to_path_buf(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))
        }
        Err(e) => Err(Error::write(dir, e)),
    }
}

/// Creates a new file with mode 0600; fails if it exists.
pub fn create_private(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::write(path, e))
}

/// Writes `content` to `dir/name` atomically (temporary name, sync, rename), mode 0600.
pub fn write_atomic(dir: &Path, name: &str, content: &[u8]) -> Result<PathBuf> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let r = (|| {
        let mut f = create_private(&tmp)?;
        f.write_all(content).map_err(|e| Error::write(&tmp, e))?;
        f.sync_all().map_err(|e| Error::write(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::write(&path, e))
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map(|_| path)
}

/// Syncs a directory so that renames in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::write(dir, e))
}

/// The DTSControl file for one `.dat` (element names are case-sensitive).
pub fn control_file(from: &str, to: &str, subject: &str, local_id: &str) -> String {
    format!(
        "<DTSControl>\r\n\
         \x20 <Version>1.0</Version>\r\n\
         \x20 <AddressType>DTS</AddressType>\r\n\
         \x20 <MessageType>Data</MessageType>\r\n\
         \x20 <WorkflowId>{WORKFLOW_ID}</WorkflowId>\r\n\
         \x20 <From_DTS>{from}</From_DTS>\r\n\
         \x20 <To_DTS>{to}</To_DTS>\r\n\
         \x20 <Subject>{subject}</Subject>\r\n\
         \x20 <LocalId>{local_id}</LocalId>\r\n\
         \x20 <DTSId></DTSId>\r\n\
         \x20 <PartnerId></PartnerId>\r\n\
         \x20 <Compress>Y</Compress>\r\n\
         \x20 <Encrypted>N</Encrypted>\r\n\
         \x20 <IsCompressed>N</IsCompressed>\r\n\
         \x20 <AllowChunking>Y</AllowChunking>\r\n\
         </DTSControl>\r\n"
    )
}

/// Reads one element's text from a DTSControl file (`None` if absent).
pub fn control_field<'a>(ctl: &'a str, element: &str) -> Option<&'a str> {
    let open = format!("<{element}>");
    let close = format!("</{element}>");
    let start = ctl.find(&open)? + open.len();
    let end = start + ctl[start..].find(&close)?;
    Some(ctl[start..end].trim())
}

/// Writes the members of `set` in ascending order into `.dat` + `.ctl` pairs. Every path
/// created (temporary or final) is pushed to `created`, so the caller can remove them all if a
/// later step fails.
pub fn write_dat_files(
    set: &NumberSet,
    opts: &DatOptions,
    created: &mut Vec<PathBuf>,
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
    let mut files = Vec::new();
    let mut current: Option<DatWriter> = None;
    let mut err: Option<Error> = None;
    let mut seq = opts.seq;
    set.for_each_prefix(|prefix| {
        if err.is_some() {
            return;
        }
        let r = (|| {
            if current.as_ref().is_some_and(|w| w.records == per_file) {
                if let Some(w) = current.take() {
                    files.push(w.finish(opts, created)?);
                }
            }
            if current.is_none() {
                let stem = file_stem(opts, seq)?;
                seq += 1;
                current = Some(DatWriter::create(&opts.dir, stem, created)?);
            }
            let w = current.as_mut().expect("opened above");
            // Only valid numbers are in the set, so a check digit exists.
            let digits = digits_of_prefix(prefix).unwrap_or([b'0'; 10]);
            let mut line = [0u8; 13];
            line[..10].copy_from_slice(&digits);
            line[10] = b',';
            line[11..11 + eol.len()].copy_from_slice(eol);
            w.push(&line, 11 + eol.len())
        })();
        if let Err(e) = r {
            err = Some(e);
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    if let Some(w) = current.take() {
        files.push(w.finish(opts, created)?);
    }
    sync_dir(&opts.dir)?;
    Ok(files)
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

/// Bytes of `.dat` lines gathered before each write: small enough to stay in the L2 cache.
const WRITE_BUF: usize = 128 << 10;

struct DatWriter {
    stem: String,
    tmp: PathBuf,
    file: File,
    buf: Vec<u8>,
    hasher: Sha256,
    records: u64,
    bytes: u64,
}

impl DatWriter {
    fn create(dir: &Path, stem: String, created: &mut Vec<PathBuf>) -> Result<Self> {
        let tmp = dir.join(format!(".{stem}.dat.tmp"));
        let file = create_private(&tmp)?;
        created.push(tmp.clone());
        Ok(DatWriter {
            stem,
            tmp,
            file,
            buf: Vec::with_capacity(WRITE_BUF),
            hasher: Sha256::new(),
            records: 0,
            bytes: 0,
        })
    }

    /// Appends the first `len` bytes of `line`. The whole fixed-size line is copied and the
    /// rest cut off again: a copy of known size compiles to two moves, not a `memmove` call.
    #[inline]
    fn push(&mut self, line: &[u8; 13], len: usize) -> Result<()> {
        self.buf.extend_from_slice(line);
        self.buf.truncate(self.buf.len() - (13 - len));
        self.records += 1;
        self.bytes += len as u64;
        if self.buf.len() >= WRITE_BUF - 16 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.hasher.update(&self.buf);
        self.file
            .write_all(&self.buf)
            .map_err(|e| Error::write(&self.tmp, e))?;
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self, opts: &DatOptions, created: &mut Vec<PathBuf>) -> Result<DatFile> {
        self.flush()?;
        self.file
            .sync_all()
            .map_err(|e| Error::write(&self.tmp, e))?;
        let sha256 = hex::encode(self.hasher.finalize());
        let name = format!("{}.dat", self.stem);
        let path = opts.dir.join(&name);
        std::fs::rename(&self.tmp, &path).map_err(|e| Error::write(&path, e))?;
        created.push(path);
        let subject = match &opts.tag {
            Some(tag) => format!("{tag}_{}", self.stem),
            None => self.stem.clone(),
        };
        let local_id = format!("{subject}_{}", &sha256[..8]);
        let ctl = format!("{}.ctl", self.stem);
        let text = control_file(&opts.mailbox, opts.env.pos_mailbox(), &subject, &local_id);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_file_round_trip() {
        let ctl = control_file("X26ABC1", "X26OT154", "X26ABC1-231126-0001", "id_1");
        assert_eq!(control_field(&ctl, "To_DTS"), Some("X26OT154"));
        assert_eq!(control_field(&ctl, "WorkflowId"), Some(WORKFLOW_ID));
        assert_eq!(control_field(&ctl, "LocalId"), Some("id_1"));
        assert_eq!(control_field(&ctl, "DTSId"), Some(""));
        assert_eq!(control_field(&ctl, "Nope"), None);
    }

    #[test]
    fn names_and_checks() {
        assert_eq!(check_mailbox(" x26abc1 ").unwrap(), "X26ABC1");
        assert!(check_mailbox("X26:1").is_err());
        assert!(check_tag("proj-1_a").is_ok());
        assert!(check_tag("a:b").is_err());
        assert!(check_tag("").is_err());
    }
}
