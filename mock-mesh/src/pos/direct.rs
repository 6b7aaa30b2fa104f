//! One result chunk file, written around the page cache where the filesystem allows
//! (`O_DIRECT`), so that writing the POS's result costs the writer almost no CPU.
//!
//! Why: a buffered `write(2)` copies every byte into newly allocated page-cache pages, and on
//! a VM whose free memory goes back to the host (virtio-balloon free page reporting, as on the
//! project's machine), each new page is first faulted in by the host: 4–6 ns a byte of the
//! writer's system time, against about 1 ns into pages freed a moment before
//! (`docs/PERFORMANCE.md`, "The mock POS job's write"). A direct write hands the device the
//! writer's own (reused) buffer instead; the download then reads the chunk from the disk the
//! same way, into reused buffers (`mapped.rs`). (It used to be read back into the page cache
//! with `POSIX_FADV_WILLNEED` once durable: Linux reads only the first `read_ahead_kb`, 8 MiB
//! here, of such advice, and the rest came in as fresh pages during the download.)
//!
//! Bytes go through one aligned staging buffer of [`STAGE`] bytes: full buffers are written
//! directly; the file's last partial block (a chunk need not be a multiple of the block size)
//! is written through the page cache, as are a file smaller than the stage and everything on
//! a filesystem that refuses direct I/O (the file is then written exactly as before). Durability is unchanged: the caller
//! fsyncs the file ([`ChunkFile::finish`] returns the handle) before the chunk is committed.

use std::fs::File;
use std::path::{Path, PathBuf};

use direct_io::{open_direct, write_all_at_blocks, AlignedBuf};

use crate::store::create_private;

/// Bytes staged before a direct write (a multiple of [`direct_io::DIRECT_ALIGN`]).
pub(super) const STAGE: usize = 4 << 20;

/// The staging buffer: aligned for direct I/O, [`STAGE`] bytes.
pub(super) struct Stage(AlignedBuf);

impl Stage {
    pub(super) fn new() -> Stage {
        Stage(AlignedBuf::new(STAGE))
    }
}

/// A result chunk being written: the ordinary handle (fsync, the unaligned tail, and the
/// fallback) and, where the filesystem allows, a direct handle to the same file.
pub(super) struct ChunkFile {
    file: File,
    direct: Option<File>,
    path: PathBuf,
    /// Bytes written to the file so far (the offset of the next write).
    written: u64,
}

impl ChunkFile {
    /// Creates the file (mode 0600, as every staged store file).
    pub(super) fn create(path: PathBuf) -> std::io::Result<ChunkFile> {
        let file = create_private(&path)?;
        let direct = open_direct(&path);
        Ok(ChunkFile {
            file,
            direct,
            path,
            written: 0,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `data`, through `stage` (which holds what is not yet written).
    pub(super) fn write(&mut self, stage: &mut Stage, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            data = &data[stage.0.fill(data)..];
            if stage.0.is_full() {
                self.flush(stage, false)?;
            }
        }
        Ok(())
    }

    /// Writes what `stage` holds: its whole blocks directly (if the file has a direct
    /// handle and is not `small`), the rest through the page cache; `stage` is empty after.
    fn flush(&mut self, stage: &mut Stage, small: bool) -> std::io::Result<()> {
        let bytes = stage.0.bytes();
        write_all_at_blocks(&mut self.direct, &self.file, bytes, self.written, !small)?;
        self.written += bytes.len() as u64;
        stage.0.clear();
        Ok(())
    }

    /// Writes what is staged; the ordinary handle (to fsync) and the path. A file smaller
    /// than the stage is written through the page cache, as before (a direct write waits for
    /// the device: worth it for the bulk of a large result, not for a small one).
    pub(super) fn finish(mut self, stage: &mut Stage) -> std::io::Result<(File, PathBuf)> {
        let small = self.written == 0;
        self.flush(stage, small)?;
        Ok((self.file, self.path))
    }

    /// Bytes in the file once what is staged is written.
    #[cfg(test)]
    pub(super) fn len(&self, stage: &Stage) -> u64 {
        self.written + stage.0.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use direct_io::DIRECT_ALIGN;

    /// Any sequence of appends gives the file exactly those bytes, whether it is written
    /// directly or not, for lengths that are and are not multiples of the block and the
    /// stage.
    #[test]
    fn a_chunk_file_holds_exactly_what_was_appended() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..STAGE * 2 + 3 * DIRECT_ALIGN + 77)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        for (k, pieces, may_direct) in [
            vec![data.len()],
            vec![DIRECT_ALIGN, STAGE, 1, STAGE - 1, 3 * DIRECT_ALIGN + 77],
            vec![13; data.len() / 13 + 1],
            vec![0],
        ]
        .into_iter()
        .enumerate()
        .flat_map(|(k, p)| [(k, p.clone(), true), (k + 10, p, false)])
        {
            let path = dir.path().join(format!("{k}"));
            let mut stage = Stage::new();
            let mut f = ChunkFile::create(path.clone()).unwrap();
            if !may_direct {
                f.direct = None; // as on a filesystem without direct I/O
            }
            let mut want = Vec::new();
            let mut rest = &data[..];
            for n in pieces {
                let (now, later) = rest.split_at(n.min(rest.len()));
                f.write(&mut stage, now).unwrap();
                want.extend_from_slice(now);
                rest = later;
                assert_eq!(f.len(&stage), want.len() as u64);
            }
            let direct = f.direct.is_some();
            let (file, p) = f.finish(&mut stage).unwrap();
            file.sync_all().unwrap();
            assert_eq!(p, path);
            let got = std::fs::read(&path).unwrap();
            assert!(got == want, "case {k}, direct {direct}: the same bytes");
        }
    }
}
