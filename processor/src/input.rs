//! Inputs as a sequence of blocks that end at line ends.
//!
//! Two paths give the same blocks' worth of lines: a memory map for regular files, and plain
//! reads for pipes and standard input (`-`). A block always ends just after a `\n`, except the
//! last one of an input whose final line has no line ending. A UTF-8 byte-order mark at the
//! start of an input is skipped.
//!
//! A line longer than a whole block on the read path is cut to the longest line inspected + 2 bytes
//! and the rest skipped up to its line end: such a line is quarantined as `line_too_long` from
//! its length alone, so both paths report it identically without holding it in memory.

use crate::error::{Error, Result};
use crate::mmap::MappedFile;
use memchr::{memchr, memrchr};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How inputs are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoMode {
    /// Memory-map regular files; read everything else.
    #[default]
    Auto,
    /// Memory-map (regular files only; others fall back to reading).
    Mmap,
    /// Plain reads for every input.
    Read,
}

impl std::str::FromStr for IoMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "auto" => Ok(IoMode::Auto),
            "mmap" => Ok(IoMode::Mmap),
            "read" => Ok(IoMode::Read),
            _ => Err(format!("expected auto, mmap or read, got {s:?}")),
        }
    }
}

enum Source {
    Mapped {
        map: MappedFile,
        pos: usize,
    },
    Stream {
        reader: Box<dyn Read + Send>,
        bufs: Vec<Vec<u8>>,
        carry: Vec<u8>,
        skipping: bool,
        eof: bool,
        bom_checked: bool,
    },
}

/// One input, delivered as waves of blocks of whole lines.
pub(crate) struct Blocks {
    path: PathBuf,
    source: Source,
    block_size: usize,
    max_line: usize,
}

impl Blocks {
    /// Opens `path` (`-` is standard input).
    pub(crate) fn open(
        path: &Path,
        mode: IoMode,
        block_size: usize,
        max_line: usize,
    ) -> Result<Blocks> {
        assert!(
            block_size > max_line + 2,
            "block size must exceed the longest line"
        );
        let stream = |reader: Box<dyn Read + Send>| Source::Stream {
            reader,
            bufs: Vec::new(),
            carry: Vec::new(),
            skipping: false,
            eof: false,
            bom_checked: false,
        };
        if path == Path::new("-") {
            return Ok(Blocks {
                path: path.to_path_buf(),
                source: stream(Box::new(io::stdin())),
                block_size,
                max_line,
            });
        }
        let file = File::open(path).map_err(|e| Error::read(path, e))?;
        let meta = file.metadata().map_err(|e| Error::read(path, e))?;
        let source = if meta.is_file() && meta.len() > 0 && mode != IoMode::Read {
            let map = MappedFile::open(&file).map_err(|e| Error::read(path, e))?;
            let pos = if map.bytes().starts_with(BOM) { 3 } else { 0 };
            Source::Mapped { map, pos }
        } else {
            stream(Box::new(file))
        };
        Ok(Blocks {
            path: path.to_path_buf(),
            source,
            block_size,
            max_line,
        })
    }

    /// Removes and returns the first line, with its line ending if it has one, for a CSV
    /// header. `None` when the input is empty.
    pub(crate) fn take_first_line(&mut self) -> Result<Option<Vec<u8>>> {
        let path = self.path.clone();
        match &mut self.source {
            Source::Mapped { map, pos } => {
                let data = &map.bytes()[*pos..];
                if data.is_empty() {
                    return Ok(None);
                }
                let end = memchr(b'\n', data).map_or(data.len(), |i| i + 1);
                let line = data[..end].to_vec();
                *pos += end;
                Ok(Some(line))
            }
            Source::Stream {
                reader,
                carry,
                eof,
                bom_checked,
                ..
            } => {
                let mut buf = std::mem::take(carry);
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    if !*bom_checked && (buf.len() >= 3 || *eof) {
                        if buf.starts_with(BOM) {
                            buf.drain(..3);
                        }
                        *bom_checked = true;
                    }
                    if *bom_checked {
                        if let Some(i) = memchr(b'\n', &buf) {
                            *carry = buf.split_off(i + 1);
                            return Ok(Some(buf));
                        }
                        if *eof {
                            return Ok((!buf.is_empty()).then_some(buf));
                        }
                        if buf.len() > self.max_line {
                            return Err(Error::BadHeader { path });
                        }
                    }
                    let n = read_some(reader.as_mut(), &mut chunk)
                        .map_err(|e| Error::read(&path, e))?;
                    if n == 0 {
                        *eof = true;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }

    /// The next wave of up to `n` blocks, in input order; empty when the input is exhausted.
    pub(crate) fn next_wave(&mut self, n: usize) -> Result<Vec<&[u8]>> {
        let (block_size, max_line) = (self.block_size, self.max_line);
        match &mut self.source {
            Source::Mapped { map, pos } => {
                let data = map.bytes();
                let mut wave = Vec::with_capacity(n);
                while wave.len() < n && *pos < data.len() {
                    let start = *pos;
                    let mut end = (start + block_size).min(data.len());
                    if end < data.len() {
                        end = memchr(b'\n', &data[end - 1..]).map_or(data.len(), |k| end + k);
                    }
                    wave.push(&data[start..end]);
                    *pos = end;
                }
                Ok(wave)
            }
            Source::Stream {
                reader,
                bufs,
                carry,
                skipping,
                eof,
                bom_checked,
            } => {
                if bufs.len() < n {
                    bufs.resize_with(n, Vec::new);
                }
                let mut filled = 0;
                for buf in bufs.iter_mut().take(n) {
                    let got = fill_block(
                        reader.as_mut(),
                        buf,
                        carry,
                        skipping,
                        eof,
                        bom_checked,
                        (block_size, max_line),
                    )
                    .map_err(|e| Error::read(&self.path, e))?;
                    if !got {
                        break;
                    }
                    filled += 1;
                }
                Ok(bufs[..filled].iter().map(|b| b.as_slice()).collect())
            }
        }
    }

    /// Lets go of what the previous waves used (drops scanned pages of a mapped file).
    pub(crate) fn release(&mut self) {
        if let Source::Mapped { map, pos } = &mut self.source {
            map.release_before(*pos);
        }
    }

    /// The input's path as given.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

pub(crate) fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn read_some(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Fills `buf` with whole lines (up to about `block_size` bytes); false when nothing is left.
fn fill_block(
    reader: &mut dyn Read,
    buf: &mut Vec<u8>,
    carry: &mut Vec<u8>,
    skipping: &mut bool,
    eof: &mut bool,
    bom_checked: &mut bool,
    (block_size, max_line): (usize, usize),
) -> io::Result<bool> {
    buf.clear();
    // Finish skipping the tail of an over-long line.
    while *skipping {
        if let Some(i) = memchr(b'\n', carry) {
            carry.drain(..=i);
            *skipping = false;
            break;
        }
        carry.clear();
        if *eof {
            return Ok(false);
        }
        carry.resize(64 * 1024, 0);
        let n = read_some(reader, carry)?;
        carry.truncate(n);
        if n == 0 {
            *eof = true;
        }
    }
    buf.append(carry);
    while buf.len() < block_size && !*eof {
        let old = buf.len();
        buf.resize(block_size, 0);
        let n = read_some(reader, &mut buf[old..])?;
        buf.truncate(old + n);
        if n == 0 {
            *eof = true;
        }
    }
    if !*bom_checked {
        if buf.starts_with(BOM) {
            buf.drain(..3);
        }
        *bom_checked = true;
    }
    if buf.is_empty() {
        return Ok(false);
    }
    if *eof {
        return Ok(true);
    }
    match memrchr(b'\n', buf) {
        Some(i) => {
            carry.extend_from_slice(&buf[i + 1..]);
            buf.truncate(i + 1);
        }
        None => {
            // One line fills the whole block: keep enough of it to classify it as too long.
            buf.truncate(max_line + 2);
            buf.push(b'\n');
            *skipping = true;
        }
    }
    Ok(true)
}
