//! The memory map: the only `unsafe` in the engine's reading path.
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
    released: usize,
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
        Ok(MappedFile { map, released: 0 })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Drops the resident pages below `offset` (rounded down to a page). Requires `&mut self`,
    /// so no slice into the map can be alive while pages are discarded.
    pub(crate) fn release_before(&mut self, offset: usize) {
        let page = page_size();
        let end = offset / page * page;
        if end > self.released {
            // SAFETY: the range lies inside the map (end <= offset <= len) and is page-aligned;
            // MADV_DONTNEED on a read-only shared file mapping only drops our page-table entries;
            // a later access would re-read the page from the file, and `&mut self` proves no
            // reference into the map exists now.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    self.released,
                    end - self.released,
                )
            };
            self.released = end;
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}
