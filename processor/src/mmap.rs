//! The memory map: with the SSE2 load in `swar`, the only `unsafe` in the engine's reading path.
//!
//! A regular file is mapped read-only and scanned in place. Pages that have been scanned are
//! handed back to the kernel (`madvise(MADV_DONTNEED)`), so the resident set stays bounded by the
//! blocks in flight whatever the file's size. The plain-read path in [`crate::input`] gives
//! byte-identical results; tests check both.

use std::fs::File;
use std::io;

/// A read-only map of a whole file with a moving "released up to" mark.
pub(crate) struct MappedFile {
    map: memmap2::Mmap,
    released: std::cell::Cell<usize>,
}

impl MappedFile {
    /// Maps `file` read-only.
    ///
    /// # Safety (why this is sound enough to offer safely)
    /// A mapping is undefined behaviour if another process truncates or rewrites the file while
    /// it is mapped. The engine only maps inputs the user names as finished extracts, never its
    /// own outputs, and `--io read` is available for files that may change underneath.
    pub(crate) fn open(file: &File) -> io::Result<Self> {
        // SAFETY: see the doc comment above; the map is private to this struct and read-only.
        let map = unsafe { memmap2::MmapOptions::new().map(file)? };
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(MappedFile {
            map,
            released: std::cell::Cell::new(0),
        })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Drops the resident pages below `offset` (rounded down to a page), which the caller
    /// has finished with, once at least [`RELEASE_STEP`] bytes have gathered: one `madvise`
    /// (and one TLB flush across the threads) for many blocks.
    ///
    /// Slices into the map may still be alive, here or ahead of `offset`: that is sound because
    /// `MADV_DONTNEED` on a read-only shared file mapping only drops page-table entries. The
    /// memory stays mapped and readable, and a later access reads the same bytes back from the
    /// file (the same condition as the map itself: the file must not change underneath).
    pub(crate) fn release_before(&self, offset: usize) {
        let page = page_size();
        let end = offset.min(self.map.len()) / page * page;
        let released = self.released.get();
        if end >= released + RELEASE_STEP {
            // SAFETY: the range lies inside the map and is page-aligned; see above for why live
            // slices stay valid.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    released,
                    end - released,
                )
            };
            self.released.set(end);
        }
    }
}

/// How much finished input [`MappedFile::release_before`] lets gather before it drops it.
const RELEASE_STEP: usize = 32 << 20;

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}
