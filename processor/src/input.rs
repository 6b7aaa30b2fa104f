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

/// An opened input: the map of a regular file, or a reader for anything else.
pub(crate) enum Input {
    Mapped(MappedFile),
    Stream(Option<Box<dyn Read + Send>>),
}

impl Input {
    /// Opens `path` (`-` is standard input).
    pub(crate) fn open(path: &Path, mode: IoMode) -> Result<Input> {
        if path == Path::new("-") {
            return Ok(Input::Stream(Some(Box::new(io::stdin()))));
        }
        let file = File::open(path).map_err(|e| Error::read(path, e))?;
        let meta = file.metadata().map_err(|e| Error::read(path, e))?;
        if meta.is_file() && meta.len() > 0 && mode != IoMode::Read {
            let map = MappedFile::open(&file).map_err(|e| Error::read(path, e))?;
            Ok(Input::Mapped(map))
        } else {
            Ok(Input::Stream(Some(Box::new(file))))
        }
    }
}

/// One block of whole lines: a slice of the map, or a buffer that was read into.
pub(crate) enum Chunk<'m> {
    Mapped(&'m [u8]),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Chunk<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Chunk::Mapped(b) => b,
            Chunk::Owned(v) => v,
        }
    }
}

enum Source<'m> {
    Mapped {
        map: &'m MappedFile,
        pos: usize,
    },
    Stream {
        reader: Box<dyn Read + Send>,
        /// Buffers handed back by [`Blocks::recycle`], for the next waves.
        spare: Vec<Vec<u8>>,
        carry: Vec<u8>,
        skipping: bool,
        eof: bool,
        bom_checked: bool,
    },
}

/// One input, delivered as waves of blocks of whole lines. Blocks of a mapped file borrow
/// the map, not the cursor, so a wave can be worked on while the next one is cut.
pub(crate) struct Blocks<'m> {
    path: PathBuf,
    source: Source<'m>,
    /// A byte-order mark was skipped at the start (settled by [`Blocks::skip_bom`]).
    bom: bool,
    block_size: usize,
    max_line: usize,
}

impl<'m> Blocks<'m> {
    /// The blocks of an opened input.
    pub(crate) fn new(
        path: &Path,
        input: &'m mut Input,
        block_size: usize,
        max_line: usize,
    ) -> Blocks<'m> {
        assert!(
            block_size > max_line + 2,
            "block size must exceed the longest line"
        );
        let mut bom = false;
        let source = match input {
            Input::Mapped(map) => {
                bom = map.bytes().starts_with(BOM);
                let pos = if bom { BOM.len() } else { 0 };
                Source::Mapped { map, pos }
            }
            Input::Stream(reader) => Source::Stream {
                reader: reader.take().unwrap_or_else(|| Box::new(io::empty())),
                spare: Vec::new(),
                carry: Vec::new(),
                skipping: false,
                eof: false,
                bom_checked: false,
            },
        };
        Blocks {
            path: path.to_path_buf(),
            source,
            bom,
            block_size,
            max_line,
        }
    }

    /// Reads as far as needed to know whether the input starts with a UTF-8 byte-order mark,
    /// skips it, and says whether there was one. The bytes read stay in the input.
    pub(crate) fn skip_bom(&mut self) -> Result<bool> {
        if let Source::Stream {
            reader,
            carry,
            eof,
            bom_checked,
            ..
        } = &mut self.source
        {
            let mut chunk = [0u8; 3];
            while !*bom_checked {
                if carry.len() >= BOM.len() || *eof {
                    if carry.starts_with(BOM) {
                        carry.drain(..BOM.len());
                        self.bom = true;
                    }
                    *bom_checked = true;
                    break;
                }
                let want = BOM.len() - carry.len();
                let n = read_some(reader.as_mut(), &mut chunk[..want])
                    .map_err(|e| Error::read(&self.path, e))?;
                *eof = n == 0;
                carry.extend_from_slice(&chunk[..n]);
            }
        }
        Ok(self.bom)
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
    pub(crate) fn next_wave(&mut self, n: usize) -> Result<Vec<Chunk<'m>>> {
        let (block_size, max_line) = (self.block_size, self.max_line);
        let mut wave = Vec::with_capacity(n);
        match &mut self.source {
            Source::Mapped { map, pos } => {
                let data: &'m [u8] = map.bytes();
                while wave.len() < n && *pos < data.len() {
                    let start = *pos;
                    let mut end = (start + block_size).min(data.len());
                    if end < data.len() {
                        end = memchr(b'\n', &data[end - 1..]).map_or(data.len(), |k| end + k);
                    }
                    wave.push(Chunk::Mapped(&data[start..end]));
                    *pos = end;
                }
            }
            Source::Stream {
                reader,
                spare,
                carry,
                skipping,
                eof,
                bom_checked,
            } => {
                while wave.len() < n {
                    let mut buf = spare.pop().unwrap_or_default();
                    let got = fill_block(
                        reader.as_mut(),
                        &mut buf,
                        carry,
                        skipping,
                        eof,
                        bom_checked,
                        (block_size, max_line),
                    )
                    .map_err(|e| Error::read(&self.path, e))?;
                    if !got {
                        spare.push(buf);
                        break;
                    }
                    wave.push(Chunk::Owned(buf));
                }
            }
        }
        Ok(wave)
    }

    /// Takes back a wave the caller is done with, and every wave before it: the map's pages
    /// up to its end are released, read buffers are kept for the next waves.
    pub(crate) fn recycle(&mut self, wave: Vec<Chunk<'m>>) {
        match &mut self.source {
            Source::Mapped { map, .. } => {
                if let Some(Chunk::Mapped(last)) = wave.last() {
                    let end = last.as_ptr() as usize + last.len() - map.bytes().as_ptr() as usize;
                    map.release_before(end);
                }
            }
            Source::Stream { spare, .. } => {
                spare.extend(wave.into_iter().filter_map(|c| match c {
                    Chunk::Owned(v) => Some(v),
                    Chunk::Mapped(_) => None,
                }))
            }
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
