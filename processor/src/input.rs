//! Inputs as a sequence of blocks cut at line ends.
//!
//! Two paths give the same blocks' worth of lines: a memory map for regular files, and plain
//! reads for pipes, standard input (`-`) and gzip-compressed inputs (`.gz` or the gzip magic
//! bytes; decompressed as they are read, in constant memory). A UTF-8 byte-order mark at the
//! start of an input is skipped; a UTF-16 one is refused (see [`Error::Utf16`]).
//!
//! Where blocks are cut: after a line feed, and for CSV also after a lone carriage return
//! (old Mac files). A cut may still fall inside a CSV record (a quoted field with a line break);
//! the engine finds that out and carries the record's start over to the next block
//! (`scan::Engine::run`), so the cut only decides how the work is shared, never what a record is.
//!
//! In one-number-per-line files, a line longer than a whole block on the read path is cut to
//! the longest line inspected + 2 bytes and the rest skipped up to its line end: such a line is
//! quarantined as `line_too_long` from its length alone, so both paths report it identically
//! without holding it in memory.

use crate::error::{Error, Result};
use crate::mmap::MappedFile;
use memchr::{memchr, memchr2, memrchr, memrchr2};
use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

const BOM: &[u8] = b"\xEF\xBB\xBF";
const GZIP_MAGIC: &[u8] = b"\x1F\x8B";

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
pub(crate) struct Input {
    source: Opened,
    /// The input was gzip-compressed (and is decompressed as it is read).
    pub(crate) gzip: bool,
}

enum Opened {
    Mapped(MappedFile),
    Stream(Option<Box<dyn Read + Send>>),
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match read_some(reader, &mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

impl Input {
    /// Opens `path` (`-` is standard input), decompressing gzip.
    pub(crate) fn open(path: &Path, mode: IoMode) -> Result<Input> {
        let gunzip = |r: Box<dyn Read + Send>| -> Box<dyn Read + Send> {
            Box::new(flate2::read::MultiGzDecoder::new(
                io::BufReader::with_capacity(1 << 20, r),
            ))
        };
        if path == Path::new("-") {
            let mut stdin: Box<dyn Read + Send> = Box::new(io::stdin());
            let mut magic = [0u8; 2];
            let n = read_full(stdin.as_mut(), &mut magic).map_err(|e| Error::read(path, e))?;
            let reader: Box<dyn Read + Send> =
                Box::new(io::Cursor::new(magic[..n].to_vec()).chain(stdin));
            let gzip = &magic[..n] == GZIP_MAGIC;
            return Ok(Input {
                source: Opened::Stream(Some(if gzip { gunzip(reader) } else { reader })),
                gzip,
            });
        }
        let mut file = File::open(path).map_err(|e| Error::read(path, e))?;
        let meta = file.metadata().map_err(|e| Error::read(path, e))?;
        let mut gzip = false;
        if meta.is_file() {
            let mut magic = [0u8; 2];
            let n = read_full(&mut file, &mut magic).map_err(|e| Error::read(path, e))?;
            gzip = &magic[..n] == GZIP_MAGIC;
            file.rewind().map_err(|e| Error::read(path, e))?;
        }
        let source = if gzip {
            Opened::Stream(Some(gunzip(Box::new(file))))
        } else if meta.is_file() && meta.len() > 0 && mode != IoMode::Read {
            Opened::Mapped(MappedFile::open(&file).map_err(|e| Error::read(path, e))?)
        } else {
            Opened::Stream(Some(Box::new(file)))
        };
        Ok(Input { source, gzip })
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
        /// Buffers handed back by [`Blocks::recycle`], for the next blocks.
        spare: Vec<Vec<u8>>,
        carry: Vec<u8>,
        skipping: bool,
        eof: bool,
        bom_checked: bool,
    },
}

/// One input, delivered as blocks of whole lines. Blocks of a mapped file borrow the map, not
/// the cursor, so blocks can be worked on while the next ones are cut.
pub(crate) struct Blocks<'m> {
    path: PathBuf,
    source: Source<'m>,
    /// A byte-order mark was skipped at the start (settled by [`Blocks::skip_bom`]).
    bom: bool,
    block_size: usize,
    max_line: usize,
    /// A lone carriage return ends a line (CSV), not only a line feed.
    cr_breaks: bool,
}

/// Where the first line of `data` ends (just after its line break), when that is known:
/// `None` when `data` holds no whole line yet. With `at_eof` the end of `data` ends a line.
pub(crate) fn line_end(data: &[u8], cr_breaks: bool, at_eof: bool) -> Option<usize> {
    let found = if cr_breaks {
        memchr2(b'\n', b'\r', data)
    } else {
        memchr(b'\n', data)
    };
    match found {
        Some(i) if data[i] == b'\r' => match data.get(i + 1) {
            Some(b'\n') => Some(i + 2),
            Some(_) => Some(i + 1),
            None => at_eof.then_some(i + 1),
        },
        Some(i) => Some(i + 1),
        None => (at_eof && !data.is_empty()).then_some(data.len()),
    }
}

/// Where to cut a block of `data` at or after `target`: just after the first line break that
/// ends at or after it (so a block is never empty), or the end of `data`.
fn cut_at_or_after(data: &[u8], target: usize, cr_breaks: bool) -> usize {
    if target >= data.len() {
        return data.len();
    }
    let from = target.saturating_sub(1);
    line_end(&data[from..], cr_breaks, true).map_or(data.len(), |k| from + k)
}

/// Where to cut a block of `buf` read from a stream: after its last line break that is known to
/// be whole (a CR in the last byte may be the first half of a CRLF).
fn last_cut(buf: &[u8], cr_breaks: bool) -> Option<usize> {
    if !cr_breaks {
        return memrchr(b'\n', buf).map(|i| i + 1);
    }
    if buf.last() == Some(&b'\n') {
        return Some(buf.len());
    }
    let body = &buf[..buf.len().saturating_sub(1)];
    match memrchr2(b'\n', b'\r', body) {
        Some(i) if buf[i] == b'\r' && buf[i + 1] == b'\n' => Some(i + 2),
        Some(i) => Some(i + 1),
        None => None,
    }
}

impl<'m> Blocks<'m> {
    /// The blocks of an opened input.
    pub(crate) fn new(
        path: &Path,
        input: &'m mut Input,
        block_size: usize,
        max_line: usize,
        cr_breaks: bool,
    ) -> Blocks<'m> {
        assert!(
            block_size > max_line + 2,
            "block size must exceed the longest line"
        );
        let source = match &mut input.source {
            Opened::Mapped(map) => Source::Mapped { map, pos: 0 },
            Opened::Stream(reader) => Source::Stream {
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
            bom: false,
            block_size,
            max_line,
            cr_breaks,
        }
    }

    /// Reads as far as needed to know whether the input starts with a byte-order mark; skips a
    /// UTF-8 one and says whether there was one; refuses a UTF-16 one. The bytes read stay in
    /// the input.
    pub(crate) fn skip_bom(&mut self) -> Result<bool> {
        let utf16 = |b: &[u8]| b.starts_with(b"\xFF\xFE") || b.starts_with(b"\xFE\xFF");
        match &mut self.source {
            Source::Mapped { map, pos } => {
                let bytes = map.bytes();
                if utf16(bytes) {
                    return Err(Error::Utf16 {
                        path: self.path.clone(),
                    });
                }
                self.bom = bytes.starts_with(BOM);
                if self.bom {
                    *pos = BOM.len();
                }
            }
            Source::Stream {
                reader,
                carry,
                eof,
                bom_checked,
                ..
            } => {
                let mut chunk = [0u8; 3];
                while !*bom_checked {
                    if carry.len() >= BOM.len() || *eof {
                        if utf16(carry) {
                            return Err(Error::Utf16 {
                                path: self.path.clone(),
                            });
                        }
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
        }
        Ok(self.bom)
    }

    /// Removes and returns the start of the input that `end` measures: `end(data, at_eof)` is
    /// the length to take once it is known, `None` while more input is needed (with `at_eof`
    /// it must decide). `None` when the input is empty; an error when more than `limit` bytes
    /// would be needed.
    pub(crate) fn take_prefix(
        &mut self,
        limit: usize,
        end: impl Fn(&[u8], bool) -> Option<usize>,
    ) -> Result<Option<Vec<u8>>> {
        let path = self.path.clone();
        let too_long = || Error::RecordTooLong {
            path: path.clone(),
            line: 0,
            limit,
        };
        match &mut self.source {
            Source::Mapped { map, pos } => {
                let data = &map.bytes()[*pos..];
                if data.is_empty() {
                    return Ok(None);
                }
                let n = end(data, true).unwrap_or(data.len());
                if n > limit {
                    return Err(too_long());
                }
                *pos += n;
                Ok(Some(data[..n].to_vec()))
            }
            Source::Stream {
                reader, carry, eof, ..
            } => {
                let mut buf = std::mem::take(carry);
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    if let Some(n) = end(&buf, *eof) {
                        if n > limit {
                            return Err(too_long());
                        }
                        *carry = buf.split_off(n);
                        return Ok((n > 0).then_some(buf));
                    }
                    if *eof {
                        return Ok((!buf.is_empty()).then_some(buf));
                    }
                    if buf.len() > limit {
                        return Err(too_long());
                    }
                    let n = read_some(reader.as_mut(), &mut chunk)
                        .map_err(|e| Error::read(&path, e))?;
                    *eof = n == 0;
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }

    /// The next block, in input order; `None` when the input is exhausted.
    pub(crate) fn next_block(&mut self) -> Result<Option<Chunk<'m>>> {
        let (block_size, max_line, cr) = (self.block_size, self.max_line, self.cr_breaks);
        match &mut self.source {
            Source::Mapped { map, pos } => {
                let data: &'m [u8] = map.bytes();
                if *pos >= data.len() {
                    return Ok(None);
                }
                let start = *pos;
                let end = start + cut_at_or_after(&data[start..], block_size, cr);
                *pos = end;
                Ok(Some(Chunk::Mapped(&data[start..end])))
            }
            Source::Stream {
                reader,
                spare,
                carry,
                skipping,
                eof,
                bom_checked,
            } => {
                let mut buf = spare.pop().unwrap_or_default();
                let got = fill_block(
                    reader.as_mut(),
                    &mut buf,
                    Carry {
                        carry,
                        skipping,
                        eof,
                        bom_checked,
                    },
                    (block_size, max_line, cr),
                )
                .map_err(|e| Error::read(&self.path, e))?;
                if !got {
                    spare.push(buf);
                    return Ok(None);
                }
                Ok(Some(Chunk::Owned(buf)))
            }
        }
    }

    /// Takes back a block the caller is done with, and every block before it: the map's pages
    /// up to its end are released, a read buffer is kept for the next blocks.
    pub(crate) fn recycle(&mut self, block: Chunk<'m>) {
        match (&mut self.source, block) {
            (Source::Mapped { map, .. }, Chunk::Mapped(last)) => {
                let end = last.as_ptr() as usize + last.len() - map.bytes().as_ptr() as usize;
                map.release_before(end);
            }
            (Source::Stream { spare, .. }, Chunk::Owned(v)) => spare.push(v),
            _ => {}
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

/// What a stream keeps between blocks.
struct Carry<'a> {
    carry: &'a mut Vec<u8>,
    skipping: &'a mut bool,
    eof: &'a mut bool,
    bom_checked: &'a mut bool,
}

/// Fills `buf` with whole lines (up to about `block_size` bytes); false when nothing is left.
fn fill_block(
    reader: &mut dyn Read,
    buf: &mut Vec<u8>,
    c: Carry,
    (block_size, max_line, cr_breaks): (usize, usize, bool),
) -> io::Result<bool> {
    let Carry {
        carry,
        skipping,
        eof,
        bom_checked,
    } = c;
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
    match last_cut(buf, cr_breaks) {
        Some(i) => {
            carry.extend_from_slice(&buf[i..]);
            buf.truncate(i);
        }
        // CSV: a record longer than a block; the engine joins the pieces (within its bound).
        None if cr_breaks => {}
        None => {
            // One line fills the whole block: keep enough of it to classify it as too long.
            buf.truncate(max_line + 2);
            buf.push(b'\n');
            *skipping = true;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ends() {
        assert_eq!(line_end(b"ab\ncd", false, false), Some(3));
        assert_eq!(line_end(b"ab\rcd\n", false, false), Some(6));
        assert_eq!(line_end(b"ab\rcd\n", true, false), Some(3));
        assert_eq!(line_end(b"ab\r\ncd", true, false), Some(4));
        assert_eq!(line_end(b"ab\r", true, false), None);
        assert_eq!(line_end(b"ab\r", true, true), Some(3));
        assert_eq!(line_end(b"ab", true, false), None);
        assert_eq!(line_end(b"ab", true, true), Some(2));
        assert_eq!(line_end(b"", true, true), None);
    }

    #[test]
    fn cuts() {
        assert_eq!(cut_at_or_after(b"aaa\nbbb\nccc", 4, false), 4);
        assert_eq!(cut_at_or_after(b"aaa\nbbb\nccc", 5, false), 8);
        assert_eq!(cut_at_or_after(b"aaa\rbbb\rccc", 5, true), 8);
        assert_eq!(cut_at_or_after(b"aaa\rbbb\rccc", 5, false), 11);
        assert_eq!(cut_at_or_after(b"aaa\r\nbb", 4, true), 5);
        assert_eq!(last_cut(b"aa\nbb\r", true), Some(3));
        assert_eq!(last_cut(b"aa\rbb\r\n", true), Some(7));
        assert_eq!(last_cut(b"aa\rbb", true), Some(3));
        assert_eq!(last_cut(b"aabb", true), None);
        assert_eq!(last_cut(b"aa\n", true), Some(3));
    }
}
