//! CSV (RFC 4180) for extracts: the header row, record boundaries, and one field of a record.
//!
//! A record ends at LF, CRLF or a lone CR outside quotes. A field that starts with `"` is quoted:
//! inside it the delimiter, doubled quotes (`""`) and line breaks (LF, CRLF, CR) are data, so a
//! record may span many physical lines. A quote inside an unquoted field is an ordinary byte
//! (`5" wound`), as Python's `csv` module and spreadsheets read it. These are exactly the record
//! boundaries of Python's `csv.reader` on a file opened with `newline=''`.
//!
//! Two malformations are reported rather than guessed at: text after a closing quote
//! (`"ab"c`, [`Reason::BadQuoting`]; the record still ends where Python says it does), and a
//! quote still open at the end of the input ([`Reason::UnterminatedQuote`]). The grammar's
//! bytes are found 64 at a time (`Specials`), so a record costs a few bit operations per
//! delimiter, quote and line break.

use crate::nhs::Reason;
use memchr::memchr2;

/// Which column holds the NHS number: a header name, or a 1-based position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    /// Matches a header field exactly (after trimming), or else ignoring ASCII case and spaces.
    Name(String),
    /// 1-based position, as `cut -f` counts.
    Position(usize),
}

impl std::str::FromStr for Column {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("the column is empty".into());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            match s.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Column::Position(n)),
                _ => Err(format!("column positions start at 1, got {s}")),
            }
        } else {
            Ok(Column::Name(s.to_string()))
        }
    }
}

impl std::fmt::Display for Column {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Column::Name(n) => write!(f, "{n:?}"),
            Column::Position(p) => write!(f, "{p}"),
        }
    }
}

/// The field separator of a CSV input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delimiter {
    /// `,`
    #[default]
    Comma,
    /// A tab (TSV, Excel "Unicode text").
    Tab,
    /// `;` (spreadsheets in locales with a decimal comma).
    Semicolon,
    /// `|` (SQL tools, bcp).
    Pipe,
}

impl Delimiter {
    /// The byte.
    pub fn byte(self) -> u8 {
        match self {
            Delimiter::Comma => b',',
            Delimiter::Tab => b'\t',
            Delimiter::Semicolon => b';',
            Delimiter::Pipe => b'|',
        }
    }

    /// Its name in summaries: `comma`, `tab`, `semicolon` or `pipe`.
    pub fn name(self) -> &'static str {
        match self {
            Delimiter::Comma => "comma",
            Delimiter::Tab => "tab",
            Delimiter::Semicolon => "semicolon",
            Delimiter::Pipe => "pipe",
        }
    }

    /// Every delimiter, for hints about which one a file uses.
    pub const ALL: [Delimiter; 4] = [
        Delimiter::Comma,
        Delimiter::Tab,
        Delimiter::Semicolon,
        Delimiter::Pipe,
    ];

    /// The delimiter a file name implies: tab for `.tsv` and `.tab` (also gzipped), else comma.
    pub fn for_path(path: &std::path::Path) -> Delimiter {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".tsv") || name.ends_with(".tab") {
            Delimiter::Tab
        } else {
            Delimiter::Comma
        }
    }
}

impl std::str::FromStr for Delimiter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "," | "comma" => Ok(Delimiter::Comma),
            "tab" | "\\t" | "\t" => Ok(Delimiter::Tab),
            ";" | "semicolon" => Ok(Delimiter::Semicolon),
            "|" | "pipe" => Ok(Delimiter::Pipe),
            _ => Err(format!(
                "expected , tab ; or | (or comma, semicolon, pipe), got {s:?}"
            )),
        }
    }
}

impl std::fmt::Display for Delimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a scanned record ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// At a line break outside quotes (included in the record), or at the end of the input.
    Complete,
    /// The data ran out inside the record: more input is needed to know where it ends (or, at
    /// the end of the input, `quoted` says whether a quote is still open).
    Open {
        /// The data ran out inside a quoted field.
        quoted: bool,
    },
}

/// One record as [`scan_record`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Where the record ends: just after its line break (or the data's end).
    pub end: usize,
    /// Physical lines the record covers: line breaks inside quotes, plus its own ending.
    pub breaks: u32,
    /// The content of the wanted field (between the quotes of a quoted field, doubled quotes
    /// left as they are), as a range of the data; `None` when the record has fewer fields.
    pub field: Option<(usize, usize)>,
    /// Text after a closing quote somewhere in the record (`"ab"c`).
    pub bad_quoting: bool,
    /// How it ended.
    pub how: End,
}

/// Line breaks in `s`: LF, CRLF and lone CR count one each. `s` is whole (a CR at its end is a
/// break).
#[inline]
pub fn count_breaks(s: &[u8]) -> u32 {
    let mut n = 0;
    let mut at = 0;
    while let Some(k) = memchr2(b'\n', b'\r', &s[at..]) {
        let i = at + k;
        n += 1;
        at = if s[i] == b'\r' && s.get(i + 1) == Some(&b'\n') {
            i + 2
        } else {
            i + 1
        };
    }
    n
}

/// The positions of the bytes that matter to the CSV grammar (quote, delimiter, LF, CR) in a
/// block, found 64 bytes at a time ([`classes`]) and handed out in order: the exact reader's
/// cursor, byte by grammar byte (see [`Records`] for the fast one).
pub(crate) struct Specials<'a> {
    data: &'a [u8],
    delim: u8,
    /// Start of the current 64-byte window.
    base: usize,
    /// The window's delimiters.
    delims: u64,
    /// The window's quotes and line breaks.
    others: u64,
    /// The bits not handed out yet (all those from some position on).
    live: u64,
}

impl<'a> Specials<'a> {
    /// A cursor over `data` from `from`.
    pub(crate) fn new(data: &'a [u8], delim: u8, from: usize) -> Self {
        let mut s = Specials {
            data,
            delim,
            base: 0,
            delims: 0,
            others: 0,
            live: 0,
        };
        s.load(from);
        s
    }

    /// Makes the window holding `at` current, with the bits from `at` on live.
    #[inline(always)]
    fn load(&mut self, at: usize) {
        self.base = at & !63;
        let c = match self.data.get(self.base..self.base + 64) {
            Some(chunk) => classes(chunk.try_into().unwrap(), self.delim),
            None => classes_portable(self.data.get(self.base..).unwrap_or_default(), self.delim),
        };
        (self.delims, self.others) = (c.d, c.q | c.lf | c.cr);
        self.live = !0u64 << (at - self.base);
    }

    /// The next special byte's position (delimiters too unless `sparse`), consumed; `None` at
    /// the end of the data.
    #[inline(always)]
    fn next(&mut self, sparse: bool) -> Option<usize> {
        loop {
            let wanted = if sparse {
                self.others
            } else {
                self.others | self.delims
            };
            let m = wanted & self.live;
            if m != 0 {
                let i = m.trailing_zeros();
                self.live = !1u64 << i;
                return Some(self.base + i as usize);
            }
            if self.base + 64 >= self.data.len() {
                self.live = 0;
                return None;
            }
            self.load(self.base + 64);
        }
    }

    /// Drops the special bytes before `to` (which is at or after every one handed out).
    #[inline(always)]
    fn seek(&mut self, to: usize) {
        if to >= self.base + 64 {
            self.load(to);
        } else if to > self.base {
            self.live &= !0u64 << (to - self.base);
        }
    }
}

/// One bit a byte of a 64-byte chunk for each byte class of the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Classes {
    /// Quotes.
    pub(crate) q: u64,
    /// Delimiters.
    pub(crate) d: u64,
    /// LFs.
    pub(crate) lf: u64,
    /// CRs.
    pub(crate) cr: u64,
}

/// [`Classes`] of a chunk, 16 bytes at a time (SSE2, the x86-64 baseline) or a byte at a time
/// elsewhere.
#[inline(always)]
pub(crate) fn classes(chunk: &[u8; 64], delim: u8) -> Classes {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of the x86-64 baseline; each unaligned 16-byte load reads
        // `chunk[16 * i..16 * i + 16]`, inside the 64-byte array.
        unsafe {
            let splat = |b: u8| _mm_set1_epi8(b as i8);
            let (q, d, n, r) = (splat(b'"'), splat(delim), splat(b'\n'), splat(b'\r'));
            let mut c = Classes {
                q: 0,
                d: 0,
                lf: 0,
                cr: 0,
            };
            for i in 0..4 {
                let v = _mm_loadu_si128(chunk.as_ptr().add(16 * i) as *const __m128i);
                let m = |x| (_mm_movemask_epi8(_mm_cmpeq_epi8(v, x)) as u16 as u64) << (16 * i);
                c.q |= m(q);
                c.d |= m(d);
                c.lf |= m(n);
                c.cr |= m(r);
            }
            c
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        classes_portable(chunk, delim)
    }
}

/// [`classes`] a byte at a time (of at most 64 bytes), for other targets, the tail of a block
/// and the tests.
#[inline]
pub(crate) fn classes_portable(bytes: &[u8], delim: u8) -> Classes {
    let mut c = Classes {
        q: 0,
        d: 0,
        lf: 0,
        cr: 0,
    };
    for (i, &b) in bytes.iter().take(64).enumerate() {
        let bit = 1u64 << i;
        match b {
            b'"' => c.q |= bit,
            b'\n' => c.lf |= bit,
            b'\r' => c.cr |= bit,
            _ => {}
        }
        if b == delim {
            c.d |= bit;
        }
    }
    c
}

/// What the fast record cursor needs of one 64-byte chunk, read with the quote state carried
/// in from the bytes before it (see [`Records`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Masks {
    /// Delimiters outside quotes.
    delims: u64,
    /// Line breaks outside quotes, at their last byte (an LF, or a CR not followed by LF).
    ends: u64,
    /// Line breaks inside quotes, counted the same way.
    quoted_breaks: u64,
    /// Quotes where reading quotes by parity departs from the grammar, and (in the last chunk
    /// of the data) every byte past the data and its last byte unless that is an LF: a record
    /// that covers one of them is read by the exact reader instead.
    odd: u64,
    /// The quote state after the chunk's last byte: all ones inside quotes, else 0.
    carry: u64,
    /// 1 when the chunk's last byte lets a quote right after it open a field (a delimiter,
    /// quote, CR or LF), else 0.
    prev: u64,
}

/// Each bit the XOR of itself and every bit below it: the quote state (inside or not) after
/// each byte, given the quotes. Sixty-four-bit words only.
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// The masks of a chunk from its classes `c`, its quotes from the record start on (`q`) and
/// their prefix XOR (`inside`), the byte after the chunk (`next`; 0 when there is none), the
/// quote state before it (`carry`) and `prev`: the bits where a quote may open a field because
/// of what precedes it outside the chunk (bit 0 after a chunk whose last byte allows it; the
/// record's start when the chunk is read from there).
///
/// Reading quotes by parity (each quote toggles "inside") is the grammar exactly as long as
/// every quote that opens (parity goes to inside) follows a delimiter, quote, CR, LF or the
/// record's start, and every quote that closes is followed by a delimiter, quote, CR or LF:
/// then an opening quote starts a field (or continues one after `""`), and a closing quote ends
/// one (or is the first of a `""` pair). Any other quote (`5" wound`, `"ab"c`) is marked odd.
#[inline(always)]
fn finish(c: Classes, q: u64, inside: u64, next: u8, delim: u8, carry: u64, prev: u64) -> Masks {
    let inq = inside ^ carry;
    let grammar = c.q | c.d | c.lf | c.cr;
    let at_next = |b: bool| (b as u64) << 63;
    let lf_after = (c.lf >> 1) | at_next(next == b'\n');
    let grammar_after =
        (grammar >> 1) | at_next(next == b'"' || next == delim || next == b'\n' || next == b'\r');
    let breaks = c.lf | (c.cr & !lf_after);
    let opening = q & inq;
    let closing = q & !inq;
    Masks {
        delims: c.d & !inq,
        ends: breaks & !inq,
        quoted_breaks: breaks & inq,
        odd: (opening & !((grammar << 1) | prev)) | (closing & !grammar_after),
        carry: 0u64.wrapping_sub(inq >> 63),
        prev: grammar >> 63,
    }
}

/// How the masks of a chunk are computed: chosen once for the CPU at hand; all give the same
/// masks (tested).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// SSE2 compares (byte loop off x86-64) and a prefix XOR by shifts.
    Portable,
    /// SSE2 compares and the prefix XOR as one carry-less multiply (`pclmulqdq`).
    #[cfg(target_arch = "x86_64")]
    Clmul,
    /// AVX2 compares, 32 bytes at a time, and `pclmulqdq`.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    /// The fastest kernel this CPU runs (`std` caches the feature detection).
    #[inline]
    pub(crate) fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("pclmulqdq") {
                if std::arch::is_x86_feature_detected!("avx2") {
                    return Kernel::Avx2;
                }
                return Kernel::Clmul;
            }
        }
        Kernel::Portable
    }

    /// Every kernel this CPU can run, for the tests.
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Kernel> {
        let mut all = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("pclmulqdq") {
                all.push(Kernel::Clmul);
                if std::arch::is_x86_feature_detected!("avx2") {
                    all.push(Kernel::Avx2);
                }
            }
        }
        all
    }

    /// The masks of `chunk` (see [`finish`]), quotes below `qlive`'s bits ignored.
    #[inline(always)]
    fn masks(self, chunk: &[u8; 64], next: u8, delim: u8, st: (u64, u64, u64)) -> Masks {
        match self {
            Kernel::Portable => masks_portable(chunk, next, delim, st),
            // SAFETY: `detect` and `available` only choose these when the CPU has the features
            // they are compiled for.
            #[cfg(target_arch = "x86_64")]
            Kernel::Clmul => unsafe { masks_clmul(chunk, next, delim, st) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { masks_avx2(chunk, next, delim, st) },
        }
    }
}

/// Calls `f`, compiled for the CPU's mask kernel: with AVX2 and `pclmulqdq` when
/// [`Kernel::detect`] picks [`Kernel::Avx2`], so that a block walk built on [`Records`] (marked
/// `#[inline(always)]` down to the kernel) inlines the kernel into its loop: one dispatch a
/// block, not a call a 64-byte chunk. The same results either way.
#[inline(always)]
pub(crate) fn for_cpu<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if Kernel::detect() == Kernel::Avx2 {
        // SAFETY: the CPU has AVX2 and pclmulqdq (what `Kernel::Avx2` needs).
        return unsafe { with_avx2(f) };
    }
    f()
}

/// `f()` compiled for AVX2 and `pclmulqdq` (see [`for_cpu`]).
///
/// # Safety
/// The CPU must have AVX2 and `pclmulqdq`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,pclmulqdq")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// [`Kernel::Portable`]. `st` is `(carry, prev, qlive)`.
#[inline(always)]
fn masks_portable(chunk: &[u8; 64], next: u8, delim: u8, st: (u64, u64, u64)) -> Masks {
    let c = classes(chunk, delim);
    let q = c.q & st.2;
    finish(c, q, prefix_xor(q), next, delim, st.0, st.1)
}

/// The prefix XOR of `x` (see [`prefix_xor`]) as a carry-less multiply by all ones.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn clmul_prefix_xor(x: u64) -> u64 {
    use std::arch::x86_64::*;
    let v = _mm_clmulepi64_si128(_mm_set_epi64x(0, x as i64), _mm_set1_epi8(-1), 0);
    _mm_cvtsi128_si64(v) as u64
}

/// [`Kernel::Clmul`].
///
/// # Safety
/// The CPU must have `pclmulqdq`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq")]
unsafe fn masks_clmul(chunk: &[u8; 64], next: u8, delim: u8, st: (u64, u64, u64)) -> Masks {
    let c = classes(chunk, delim);
    let q = c.q & st.2;
    finish(c, q, clmul_prefix_xor(q), next, delim, st.0, st.1)
}

/// [`Kernel::Avx2`].
///
/// # Safety
/// The CPU must have AVX2 and `pclmulqdq`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,pclmulqdq")]
#[inline]
unsafe fn masks_avx2(chunk: &[u8; 64], next: u8, delim: u8, st: (u64, u64, u64)) -> Masks {
    use std::arch::x86_64::*;
    let lo = _mm256_loadu_si256(chunk.as_ptr() as *const __m256i);
    let hi = _mm256_loadu_si256(chunk.as_ptr().add(32) as *const __m256i);
    let m = |b: u8| {
        let x = _mm256_set1_epi8(b as i8);
        let l = _mm256_movemask_epi8(_mm256_cmpeq_epi8(lo, x)) as u32 as u64;
        let h = _mm256_movemask_epi8(_mm256_cmpeq_epi8(hi, x)) as u32 as u64;
        l | (h << 32)
    };
    let c = Classes {
        q: m(b'"'),
        d: m(delim),
        lf: m(b'\n'),
        cr: m(b'\r'),
    };
    let q = c.q & st.2;
    finish(c, q, clmul_prefix_xor(q), next, delim, st.0, st.1)
}

/// The fast record cursor over a block: where records end and where the wanted field is,
/// from per-chunk masks instead of byte by grammar byte.
///
/// For each 64-byte chunk it finds the quotes, delimiters and line breaks ([`Kernel`]), reads
/// the quote state after every byte as the prefix XOR of the quotes (carried from chunk to
/// chunk), and so has the delimiters and line breaks outside quotes as plain masks: a record
/// then costs a `tzcnt` for its end and one per delimiter up to the wanted field. Quotes the
/// parity reading gets wrong (malformed ones: see [`finish`]) are marked; a record that holds
/// one, or that reaches the data's end (where the reading may depend on what follows), is
/// read by the exact reader ([`scan_exact`]) instead, so the results are always the exact
/// reader's.
pub(crate) struct Records<'a> {
    data: &'a [u8],
    delim: u8,
    kernel: Kernel,
    /// Start of the chunk `m` describes.
    base: usize,
    m: Masks,
    /// Where a record must start for `m` to describe it (the end of the last record the fast
    /// path read, so outside quotes); `usize::MAX` when `m` must be read again.
    next: usize,
}

impl<'a> Records<'a> {
    /// A cursor over `data`, with the kernel for this CPU.
    pub(crate) fn new(data: &'a [u8], delim: u8) -> Self {
        Records::with_kernel(data, delim, Kernel::detect())
    }

    /// A cursor over `data` with the given kernel.
    pub(crate) fn with_kernel(data: &'a [u8], delim: u8, kernel: Kernel) -> Self {
        Records {
            data,
            delim,
            kernel,
            base: 0,
            m: Masks::default(),
            next: usize::MAX,
        }
    }

    /// Reads the masks of the chunk at `base` (which is inside the data) with the quote state
    /// `st` carried in.
    #[inline(always)]
    fn load(&mut self, base: usize, st: (u64, u64, u64)) {
        self.base = base;
        self.m = masks_at(self.data, self.delim, self.kernel, base, st);
    }

    /// The record at `start` by the masks; `None` when the exact reader must read it (a
    /// malformed quote, or the record reaches the last byte of the data).
    #[inline]
    fn fast(&mut self, start: usize, want: usize) -> Option<Scanned> {
        let data = self.data;
        if start >= data.len() {
            return None;
        }
        if start != self.next || start >= self.base + 64 {
            // Read afresh from the record's start: outside quotes, a quote there may open.
            let base = start & !63;
            let o = start - base;
            self.load(base, (0, 1 << o, !0 << o));
        }
        let mut live = !0u64 << (start - self.base);
        let mut quoted_breaks = 0;
        // The wanted field: `index` delimiters seen; its start once found, then its end.
        let mut index = 0usize;
        let mut fstart = if want == 0 { start } else { usize::MAX };
        let mut fend = usize::MAX;
        loop {
            let m = self.m;
            let e = m.ends & live;
            // The record's bits in this chunk: up to and including its line break.
            let span = if e != 0 { live & (e ^ (e - 1)) } else { live };
            if m.odd & span != 0 {
                return None;
            }
            let qb = m.quoted_breaks & span;
            if qb != 0 {
                quoted_breaks += qb.count_ones();
            }
            if fend == usize::MAX && want != usize::MAX {
                field_bounds(
                    m.delims & span,
                    self.base,
                    want,
                    &mut index,
                    &mut fstart,
                    &mut fend,
                );
            }
            if e != 0 {
                let at = self.base + e.trailing_zeros() as usize;
                self.next = at + 1;
                let field = (fstart != usize::MAX).then(|| {
                    let fend = if fend != usize::MAX {
                        fend
                    } else if data[at] == b'\n' && at > start && data[at - 1] == b'\r' {
                        at - 1
                    } else {
                        at
                    };
                    if fstart < fend && data[fstart] == b'"' {
                        // Well-formed: its closing quote is the field's last byte.
                        (fstart + 1, fend - 1)
                    } else {
                        (fstart, fend)
                    }
                });
                return Some(Scanned {
                    end: at + 1,
                    breaks: quoted_breaks + 1,
                    field,
                    bad_quoting: false,
                    how: End::Complete,
                });
            }
            // The chunk ended inside the record.
            if self.base + 64 >= data.len() {
                // At the data's end (inside quotes after a last LF).
                return None;
            }
            let (carry, prev) = (m.carry, m.prev);
            self.load(self.base + 64, (carry, prev, !0));
            live = !0;
        }
    }

    /// The fast path over a run of records, for a block walk's common case: from `*pos`, each
    /// record the masks read (as [`Records::fast`] would: well-formed, not reaching the data's
    /// last byte) that has a field `want` goes to `take(start, end, field_start, field_end)`
    /// (the field's content as [`Scanned::field`] gives it); `take` returns false to leave the
    /// record to [`scan_with`] instead. Stops before the first record not taken, with `*pos`
    /// at its start, and returns the line breaks inside quotes of the records taken.
    ///
    /// One loop without a [`Scanned`] a record: the caller's handling of a record compiles
    /// into it.
    #[inline(always)]
    pub(crate) fn run(
        &mut self,
        pos: &mut usize,
        want: usize,
        mut take: impl FnMut(usize, usize, usize, usize) -> bool,
    ) -> u64 {
        // The cursor's state in locals for the loop (registers, not the struct), put back on
        // the way out.
        let (data, delim, kernel) = (self.data, self.delim, self.kernel);
        let (mut base, mut m, mut next) = (self.base, self.m, self.next);
        let mut quoted = 0u64;
        let mut start = *pos;
        while start < data.len() {
            if start != next || start >= base + 64 {
                base = start & !63;
                let o = start - base;
                m = masks_at(data, delim, kernel, base, (0, 1 << o, !0 << o));
            }
            let mut live = !0u64 << (start - base);
            let mut breaks = 0u64;
            // The wanted field: `index` delimiters seen; its start once found, then its end.
            let mut index = 0usize;
            let mut fstart = if want == 0 { start } else { usize::MAX };
            let mut fend = usize::MAX;
            let at = loop {
                let e = m.ends & live;
                // The record's bits in this chunk: up to and including its line break.
                let span = if e != 0 { live & (e ^ (e - 1)) } else { live };
                if (m.odd | m.quoted_breaks) & span != 0 {
                    if m.odd & span != 0 {
                        break None;
                    }
                    breaks += (m.quoted_breaks & span).count_ones() as u64;
                }
                if fend == usize::MAX {
                    let delims = m.delims & span;
                    field_bounds(delims, base, want, &mut index, &mut fstart, &mut fend);
                }
                if e != 0 {
                    break Some(base + e.trailing_zeros() as usize);
                }
                if base + 64 >= data.len() {
                    // At the data's end (inside quotes after a last LF).
                    break None;
                }
                base += 64;
                m = masks_at(data, delim, kernel, base, (m.carry, m.prev, !0));
                live = !0;
            };
            // Not taken: a malformed quote, the data's end, fewer fields than wanted, or
            // `take` said no.
            let Some(at) = at else {
                next = usize::MAX;
                break;
            };
            if fstart == usize::MAX {
                next = usize::MAX;
                break;
            }
            if fend == usize::MAX {
                fend = if data[at] == b'\n' && at > start && data[at - 1] == b'\r' {
                    at - 1
                } else {
                    at
                };
            }
            let (a, b) = if fstart < fend && data[fstart] == b'"' {
                (fstart + 1, fend - 1)
            } else {
                (fstart, fend)
            };
            if !take(start, at + 1, a, b) {
                next = usize::MAX;
                break;
            }
            next = at + 1;
            start = at + 1;
            quoted += breaks;
        }
        *pos = start;
        (self.base, self.m, self.next) = (base, m, next);
        quoted
    }
}

/// The masks of the chunk of `data` at `base` (inside the data) with the quote state `st`
/// carried in (see [`Records`]); past the data's end, every bit is odd.
#[inline(always)]
fn masks_at(data: &[u8], delim: u8, kernel: Kernel, base: usize, st: (u64, u64, u64)) -> Masks {
    let tail = &data[base..];
    match tail.first_chunk::<65>() {
        // (No overflow check on `base + 65`, no bounds check on the chunk.)
        Some(c) => kernel.masks(c.first_chunk().unwrap(), c[64], delim, st),
        None => {
            let mut chunk = [0u8; 64];
            chunk[..tail.len()].copy_from_slice(tail);
            let mut m = kernel.masks(&chunk, 0, delim, st);
            // What follows decides a CR or quote at the data's end (an LF there ends a
            // record outside quotes whatever follows), and the record goes on past it.
            let known = tail.len() - (tail[tail.len() - 1] != b'\n') as usize;
            m.odd |= (!0u64).checked_shl(known as u32).unwrap_or(0);
            m
        }
    }
}

/// Walks a record's delimiters in one 64-byte chunk (`delims`, bit `i` at `base + i`), counting
/// fields in `index`: sets `fstart` just past the delimiter that opens field `want` and `fend`
/// at the one that closes it, stopping there.
#[inline(always)]
fn field_bounds(
    mut delims: u64,
    base: usize,
    want: usize,
    index: &mut usize,
    fstart: &mut usize,
    fend: &mut usize,
) {
    while delims != 0 {
        let p = base + delims.trailing_zeros() as usize;
        delims &= delims - 1;
        if *index == want {
            *fend = p;
            return;
        }
        *index += 1;
        if *index == want {
            *fstart = p + 1;
        }
    }
}

/// Scans the record that starts at `data[start]` and cuts out field `want` (0-based).
/// With `at_eof`, the data's end is the input's end: a record can then always be ended (a CR at
/// the very end is a whole line break); without it, a record that reaches the end of `data` is
/// [`End::Open`].
pub fn scan_record(data: &[u8], start: usize, want: usize, delim: u8, at_eof: bool) -> Scanned {
    scan_with(&mut Records::new(data, delim), start, want, at_eof)
}

/// [`scan_record`] with a cursor that the caller keeps from one record to the next.
#[inline]
pub(crate) fn scan_with(r: &mut Records, start: usize, want: usize, at_eof: bool) -> Scanned {
    if let Some(s) = r.fast(start, want) {
        return s;
    }
    r.next = usize::MAX;
    scan_exact(r.data, start, want, r.delim, at_eof)
}

/// [`scan_record`] by the exact reader alone, grammar byte by grammar byte: what [`Records`]
/// falls back on, and its oracle in the tests.
#[doc(hidden)]
pub fn scan_exact(data: &[u8], start: usize, want: usize, delim: u8, at_eof: bool) -> Scanned {
    exact_with(&mut Specials::new(data, delim, start), start, want, at_eof)
}

/// Every record of `data` from its start, read with one cursor as a block walk reads them (up
/// to the first that does not end): for the fuzz target, against [`scan_exact`].
#[doc(hidden)]
pub fn scan_all(data: &[u8], want: usize, delim: u8, at_eof: bool) -> Vec<Scanned> {
    let mut cursor = Records::new(data, delim);
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let s = scan_with(&mut cursor, pos, want, at_eof);
        out.push(s);
        if s.how != End::Complete {
            break;
        }
        pos = s.end;
    }
    out
}

/// Every record of `data` from its start as a block walk reads them with the fast record loop
/// ([`Records::run`], every record with a field `want` taken) and the exact reader for the
/// records it leaves, up to the first that does not end: `(start, end, field, fast)` a record
/// and the line breaks inside quotes of the records the loop took. For the fuzz target, against
/// [`scan_exact`].
#[doc(hidden)]
#[allow(clippy::type_complexity)]
pub fn run_all(
    data: &[u8],
    want: usize,
    delim: u8,
    at_eof: bool,
) -> (Vec<(usize, usize, Option<(usize, usize)>, bool)>, u64) {
    let mut cursor = Records::new(data, delim);
    let (mut out, mut quoted, mut pos) = (Vec::new(), 0, 0);
    while pos < data.len() {
        quoted += cursor.run(&mut pos, want, |start, end, a, b| {
            out.push((start, end, Some((a, b)), true));
            true
        });
        if pos >= data.len() {
            break;
        }
        let s = scan_with(&mut cursor, pos, want, at_eof);
        out.push((pos, s.end, s.field, false));
        if s.how != End::Complete {
            break;
        }
        pos = s.end;
    }
    (out, quoted)
}

/// The exact reader: follows the grammar from `start`, one special byte at a time.
fn exact_with(sp: &mut Specials, start: usize, want: usize, at_eof: bool) -> Scanned {
    let (data, delim) = (sp.data, sp.delim);
    let len = data.len();
    sp.seek(start);
    let mut s = Scanned {
        end: len,
        breaks: 0,
        field: None,
        bad_quoting: false,
        how: End::Open { quoted: false },
    };
    let finish = |s: &mut Scanned, i: usize| line_break(s, data, i, at_eof);
    let end_of_data = |s: &mut Scanned| end_of(s, len, at_eof);
    let mut index = 0usize;
    let mut fstart = start;
    'field: loop {
        if data.get(fstart) == Some(&b'"') {
            sp.seek(fstart + 1);
            let close = loop {
                let Some(p) = sp.next(true) else {
                    s.how = End::Open { quoted: true };
                    return s;
                };
                match data[p] {
                    b'"' => match data.get(p + 1) {
                        Some(b'"') => sp.seek(p + 2),
                        None if !at_eof => {
                            // Closing, or the first of a doubled pair: more data decides.
                            s.how = End::Open { quoted: true };
                            return s;
                        }
                        _ => break p,
                    },
                    b'\n' => s.breaks += 1,
                    // A CRLF counts once, at its LF.
                    b'\r' if data.get(p + 1) != Some(&b'\n') => s.breaks += 1,
                    _ => {}
                }
            };
            if index == want {
                s.field = Some((fstart + 1, close));
            }
            let p = close + 1;
            match data.get(p) {
                None => {
                    end_of_data(&mut s);
                    return s;
                }
                Some(&b) if b == delim => {
                    if index >= want {
                        rest_of_record(sp, &mut s, p + 1, at_eof);
                        return s;
                    }
                    sp.seek(p + 1);
                    index += 1;
                    fstart = p + 1;
                    continue 'field;
                }
                Some(b'\n' | b'\r') => {
                    finish(&mut s, p);
                    return s;
                }
                Some(_) => {
                    // Text after the closing quote: the field goes on unquoted.
                    s.bad_quoting = true;
                    sp.seek(p);
                }
            }
        }
        // An unquoted field (or the rest of one after a bad closing quote): a quote in it is
        // data.
        loop {
            let Some(p) = sp.next(false) else {
                if index == want {
                    s.field = Some((fstart, len));
                }
                end_of_data(&mut s);
                return s;
            };
            let b = data[p];
            if b == b'"' {
                continue;
            }
            if index == want {
                s.field = Some((fstart, p));
            }
            if b == delim {
                if index >= want {
                    rest_of_record(sp, &mut s, p + 1, at_eof);
                    return s;
                }
                index += 1;
                fstart = p + 1;
                continue 'field;
            }
            finish(&mut s, p);
            return s;
        }
    }
}

/// Ends a record whose wanted field is behind: from `from` (just after a delimiter), only
/// quotes and line breaks matter, and a quote opens a quoted field when a delimiter is just
/// before it.
#[inline]
fn rest_of_record(sp: &mut Specials, s: &mut Scanned, from: usize, at_eof: bool) {
    let (data, delim) = (sp.data, sp.delim);
    let len = data.len();
    sp.seek(from);
    let mut p = match sp.next(true) {
        Some(p) => p,
        None => return end_of(s, len, at_eof),
    };
    loop {
        match data[p] {
            b'"' if data[p - 1] == delim => {
                // A quoted field: to its closing quote.
                let close = loop {
                    let Some(q) = sp.next(true) else {
                        s.how = End::Open { quoted: true };
                        return;
                    };
                    match data[q] {
                        b'"' => match data.get(q + 1) {
                            Some(b'"') => sp.seek(q + 2),
                            None if !at_eof => {
                                s.how = End::Open { quoted: true };
                                return;
                            }
                            _ => break q,
                        },
                        b'\n' => s.breaks += 1,
                        _ if data.get(q + 1) != Some(&b'\n') => s.breaks += 1,
                        _ => {}
                    }
                };
                match data.get(close + 1) {
                    None => return end_of(s, len, at_eof),
                    Some(&b) if b == delim || b == b'\n' || b == b'\r' => {}
                    Some(_) => s.bad_quoting = true,
                }
            }
            b'"' => {}
            _ => return line_break(s, data, p, at_eof),
        }
        p = match sp.next(true) {
            Some(p) => p,
            None => return end_of(s, len, at_eof),
        };
    }
}

/// The data ran out outside quotes: at the end of the input that ends the record.
#[inline]
fn end_of(s: &mut Scanned, len: usize, at_eof: bool) {
    if at_eof {
        s.end = len;
        s.how = End::Complete;
    }
}

/// A line break at `i` (a CR or LF outside quotes) ends the record (a CR at the end of the
/// data does only at the end of the input: it may be the first half of a CRLF).
#[inline]
fn line_break(s: &mut Scanned, data: &[u8], i: usize, at_eof: bool) {
    if data[i] == b'\r' {
        match data.get(i + 1) {
            Some(b'\n') => s.end = i + 2,
            Some(_) => s.end = i + 1,
            None if at_eof => s.end = i + 1,
            None => return,
        }
    } else {
        s.end = i + 1;
    }
    s.breaks += 1;
    s.how = End::Complete;
}

/// Where the record that starts at `data[start]` ends, for a caller that wants no field.
pub fn record_end(data: &[u8], start: usize, delim: u8, at_eof: bool) -> Scanned {
    scan_record(data, start, usize::MAX, delim, at_eof)
}

/// Finds the 0-based index of `column` in a header row's cells: `Ok(index)`, or
/// `Err(positions)` with every 0-based position whose name matches when there is more than one
/// (`SELECT a.*, b.*`), an empty list when none matches or the position is past the last cell.
pub fn resolve(cells: &[String], column: &Column) -> Result<usize, Vec<usize>> {
    match column {
        Column::Position(p) => {
            if *p >= 1 && *p <= cells.len() {
                Ok(p - 1)
            } else {
                Err(Vec::new())
            }
        }
        Column::Name(name) => {
            let want = squash(name);
            let matches: Vec<usize> = (0..cells.len())
                .filter(|&i| squash(&cells[i]) == want)
                .collect();
            match matches.as_slice() {
                [one] => Ok(*one),
                _ => Err(if matches.len() > 1 {
                    matches
                } else {
                    Vec::new()
                }),
            }
        }
    }
}

/// A header name as names are compared: ASCII lower case, without spaces or underscores, so
/// `NHS Number`, `nhs_number` and `NHSNumber` match.
fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '_')
        .flat_map(|c| c.to_lowercase())
        .collect()
}

/// Every field of a header record (without its line ending), unquoted; `None` if the quoting
/// is malformed.
pub fn header_fields(record: &[u8], delim: u8) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let s = scan_record(record, pos, 0, delim, true);
        if s.bad_quoting || s.how != End::Complete {
            return None;
        }
        let (a, b) = s.field?;
        let quoted = a > pos;
        let text = String::from_utf8_lossy(&record[a..b]);
        out.push(if quoted {
            text.replace("\"\"", "\"")
        } else {
            text.into_owned()
        });
        let next = if quoted { b + 1 } else { b };
        if next >= record.len() || record[next] != delim {
            return Some(out);
        }
        pos = next + 1;
        if pos == record.len() {
            out.push(String::new());
            return Some(out);
        }
    }
}

/// The raw content of field `index` (0-based) of one record that has no line break outside
/// quotes: the bytes between the quotes for a quoted field (doubled quotes left as they are),
/// else the bytes between the delimiters.
pub fn field(record: &[u8], index: usize, delim: u8) -> Result<&[u8], Reason> {
    let s = scan_record(record, 0, index, delim, true);
    if s.bad_quoting {
        return Err(Reason::BadQuoting);
    }
    if s.how != End::Complete {
        return Err(Reason::UnterminatedQuote);
    }
    s.field
        .map(|(a, b)| &record[a..b])
        .ok_or(Reason::MissingField)
}

/// Appends one row of a quarantine report (`invalid.csv`, filter's rejects):
/// `file,record,line,reason`, then `,value` when one is given, and the line feed. `file` is
/// the file's field as [`write_field`] writes it (escaped once per input, not per row);
/// `value` is escaped here.
///
/// A row is built by hand, not with `write!`: `validate --out` writes a row for every invalid
/// line, on the thread that orders the blocks, and formatting machinery made that thread the
/// bottleneck of a dirty extract (docs/PERFORMANCE.md).
pub(crate) fn push_report_row(
    row: &mut Vec<u8>,
    file: &[u8],
    (record, line): (u64, u64),
    reason: Reason,
    value: Option<&[u8]>,
) {
    // `,record,line,reason` in one piece: two numbers of at most 20 digits and the longest
    // reason (23 bytes), with their commas.
    let mut middle = [0u8; 72];
    let mut at = 0;
    for n in [record, line] {
        middle[at] = b',';
        at += 1 + decimal(n, &mut middle[at + 1..at + 21]);
    }
    let reason = reason.as_str().as_bytes();
    middle[at] = b',';
    middle[at + 1..at + 1 + reason.len()].copy_from_slice(reason);
    at += 1 + reason.len();
    row.extend_from_slice(file);
    row.extend_from_slice(&middle[..at]);
    if let Some(value) = value {
        row.push(b',');
        // Writing into a vector cannot fail.
        let _ = write_field(row, value);
    }
    row.push(b'\n');
}

/// The two digits of each number below 100, in order: `00`, `01`, … `99`.
const DIGIT_PAIRS: [u8; 200] = {
    let mut pairs = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        pairs[2 * i] = b'0' + (i / 10) as u8;
        pairs[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    pairs
};

/// Writes `n` in decimal at the start of `out` (20 bytes: room for any `u64`); the number of
/// digits.
fn decimal(mut n: u64, out: &mut [u8]) -> usize {
    let len = n.checked_ilog10().map_or(1, |l| l as usize + 1);
    let mut at = len;
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        at -= 2;
        out[at] = DIGIT_PAIRS[pair];
        out[at + 1] = DIGIT_PAIRS[pair + 1];
    }
    if n >= 10 {
        out[0] = DIGIT_PAIRS[n as usize * 2];
        out[1] = DIGIT_PAIRS[n as usize * 2 + 1];
    } else {
        out[0] = b'0' + n as u8;
    }
    len
}

/// `value` as one CSV field ([`write_field`]): a report's file name, escaped once for all its
/// rows ([`push_report_row`]).
pub(crate) fn escaped(value: &[u8]) -> Vec<u8> {
    let mut field = Vec::with_capacity(value.len());
    // Writing into a vector cannot fail.
    let _ = write_field(&mut field, value);
    field
}

/// Writes one CSV field, quoted when it holds a comma, quote, CR or LF (RFC 4180).
pub fn write_field(out: &mut impl std::io::Write, value: &[u8]) -> std::io::Result<()> {
    if value
        .iter()
        .any(|&b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
    {
        out.write_all(b"\"")?;
        for part in value.split(|&b| b == b'"').enumerate() {
            if part.0 > 0 {
                out.write_all(b"\"\"")?;
            }
            out.write_all(part.1)?;
        }
        out.write_all(b"\"")
    } else {
        out.write_all(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_rows_as_write_would_make_them() {
        for n in [0u64, 7, 10, 99, 100, 101, 12_345, u64::MAX / 3, u64::MAX] {
            let mut out = [b'x'; 21];
            let len = decimal(n, &mut out);
            assert_eq!(out[..len], *n.to_string().as_bytes());
            assert_eq!(out[len..], [b'x'; 21][len..]);
        }
        let file = escaped(b"in, \"odd\".csv");
        let mut row = b"earlier\n".to_vec();
        let r = Reason::CheckDigitMismatch;
        push_report_row(&mut row, &file, (12, 340), r, Some(b"94\"34,x"));
        push_report_row(&mut row, &file, (1, 1), Reason::MissingField, Some(b""));
        push_report_row(&mut row, b"f", (9_999_999_999, 10_000_000_000), r, None);
        let want = "earlier\n\"in, \"\"odd\"\".csv\",12,340,check_digit_mismatch,\"94\"\"34,x\"\n\
                    \"in, \"\"odd\"\".csv\",1,1,missing_field,\n\
                    f,9999999999,10000000000,check_digit_mismatch\n";
        assert_eq!(String::from_utf8(row).unwrap(), want);
    }

    #[test]
    fn fields_plain_and_quoted() {
        let row = br#"1,"Smith, John","9434765919",x"#;
        fn f(r: &[u8], i: usize) -> Result<&[u8], Reason> {
            field(r, i, b',')
        }
        assert_eq!(f(row, 0), Ok(&b"1"[..]));
        assert_eq!(f(row, 1), Ok(&b"Smith, John"[..]));
        assert_eq!(f(row, 2), Ok(&b"9434765919"[..]));
        assert_eq!(f(row, 3), Ok(&b"x"[..]));
        assert_eq!(f(row, 4), Err(Reason::MissingField));
        assert_eq!(f(b"a,,c", 1), Ok(&b""[..]));
        assert_eq!(f(b"a,b,", 2), Ok(&b""[..]));
        assert_eq!(f(br#""say ""hi""",2"#, 1), Ok(&b"2"[..]));
        assert_eq!(field(b"a\tb\t9", 2, b'\t'), Ok(&b"9"[..]));
    }

    #[test]
    fn bad_quoting() {
        assert_eq!(
            field(br#""open,1"#, 1, b','),
            Err(Reason::UnterminatedQuote)
        );
        assert_eq!(field(br#""a"b,1"#, 1, b','), Err(Reason::BadQuoting));
        // A quote inside an unquoted field is data.
        assert_eq!(field(br#"5" wound,1"#, 1, b','), Ok(&b"1"[..]));
    }

    /// (raw, breaks, field, bad quoting, end) of each record.
    type Rec = (Vec<u8>, u32, Option<Vec<u8>>, bool, End);

    fn records(data: &[u8], want: usize) -> Vec<Rec> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let s = scan_record(data, pos, want, b',', true);
            out.push((
                data[pos..s.end].to_vec(),
                s.breaks,
                s.field.map(|(a, b)| data[a..b].to_vec()),
                s.bad_quoting,
                s.how,
            ));
            pos = s.end;
        }
        out
    }

    #[test]
    fn records_span_quoted_line_breaks() {
        let data = b"nhs,notes\r\n9434765919,ok\n9694116414,\"linked:\n9434765919, secret\"\r\n\
            1,\"a\r\nb\rc\",9\r2,x\r\n\r\n";
        let r = records(data, 0);
        let raws: Vec<&[u8]> = r.iter().map(|r| &r.0[..]).collect();
        assert_eq!(
            raws,
            vec![
                &b"nhs,notes\r\n"[..],
                b"9434765919,ok\n",
                b"9694116414,\"linked:\n9434765919, secret\"\r\n",
                b"1,\"a\r\nb\rc\",9\r",
                b"2,x\r\n",
                b"\r\n",
            ]
        );
        assert_eq!(
            r.iter().map(|r| r.1).collect::<Vec<_>>(),
            vec![1, 1, 2, 3, 1, 1]
        );
        assert_eq!(r[2].2.as_deref(), Some(&b"9694116414"[..]));
        assert!(r.iter().all(|r| r.4 == End::Complete && !r.3));
        // The field past a multi-line one.
        assert_eq!(records(data, 2)[3].2.as_deref(), Some(&b"9"[..]));
    }

    #[test]
    fn open_records_wait_for_more_data() {
        let open = |d: &[u8]| scan_record(d, 0, 0, b',', false).how;
        assert_eq!(open(b"1,\"abc\n"), End::Open { quoted: true });
        assert_eq!(open(b"1,\"abc\""), End::Open { quoted: true });
        assert_eq!(open(b"1,abc"), End::Open { quoted: false });
        assert_eq!(open(b"1,abc\r"), End::Open { quoted: false });
        assert_eq!(open(b"1,abc\r\n"), End::Complete);
        assert_eq!(open(b"1,abc\rx"), End::Complete);
        // At the end of the input.
        let end = |d: &[u8]| scan_record(d, 0, 0, b',', true);
        assert_eq!(end(b"1,\"abc\n").how, End::Open { quoted: true });
        assert_eq!(end(b"1,\"abc\"").how, End::Complete);
        assert_eq!(end(b"1,abc\r").end, 6);
    }

    #[test]
    fn text_after_a_closing_quote_is_bad_quoting() {
        let r = records(b"1,\"ab\"c,9\n2,\"x\" ,9\n3,\"ok\",9\n", 0);
        assert_eq!(r.len(), 3);
        assert_eq!(
            r.iter().map(|r| r.3).collect::<Vec<_>>(),
            vec![true, true, false]
        );
    }

    #[test]
    fn line_breaks_are_counted() {
        assert_eq!(count_breaks(b"a\r\nb\rc\nd"), 3);
        assert_eq!(count_breaks(b"\r\r\n\n"), 3);
        assert_eq!(count_breaks(b""), 0);
    }

    #[test]
    fn header_resolution() {
        let cells = header_fields(b"\"id\",NHS_Number , name,nhs number", b',').unwrap();
        assert_eq!(cells, vec!["id", "NHS_Number ", " name", "nhs number"]);
        let r = |c: &str| resolve(&cells, &c.parse().unwrap());
        assert_eq!(r("NHS_Number"), Err(vec![1, 3]));
        assert_eq!(r("nhs number"), Err(vec![1, 3]));
        assert_eq!(r("NHSNUMBER"), Err(vec![1, 3]));
        assert_eq!(r(" NAME "), Ok(2));
        assert_eq!(r("id"), Ok(0));
        assert_eq!(r("3"), Ok(2));
        assert_eq!(r("5"), Err(vec![]));
        assert_eq!(r("missing"), Err(vec![]));
        assert!("0".parse::<Column>().is_err());
        assert_eq!(header_fields(b"a,b,", b',').unwrap().len(), 3);
        assert_eq!(header_fields(b"a\tb", b'\t').unwrap(), vec!["a", "b"]);
        assert!(header_fields(b"\"a\"x,b", b',').is_none());
    }

    /// A small xorshift generator for the differential tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, from: &[&'a [u8]]) -> &'a [u8] {
            from[(self.next() % from.len() as u64) as usize]
        }
    }

    #[test]
    fn prefix_xor_is_the_quote_state() {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..1000 {
            let x = r.next() & r.next();
            let mut want = 0u64;
            let mut state = 0u64;
            for i in 0..64 {
                state ^= (x >> i) & 1;
                want |= state << i;
            }
            assert_eq!(prefix_xor(x), want);
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("pclmulqdq") {
                // SAFETY: the CPU has pclmulqdq.
                assert_eq!(unsafe { clmul_prefix_xor(x) }, want);
            }
        }
    }

    #[test]
    fn kernels_agree() {
        let kernels = Kernel::available();
        let mut r = Rng(0x2545_F491_4F6C_DD1D);
        let mut chunk = [0u8; 64];
        for round in 0..4000 {
            for b in chunk.iter_mut() {
                *b = b"\"\n\r,;\tab9 |"[(r.next() % 11) as usize];
            }
            let delim = [b',', b'\t', b';', b'|'][round % 4];
            let next = b"\"\n\r,a"[(r.next() % 5) as usize];
            let o = r.next() % 64;
            let st = if round % 2 == 0 {
                (0u64.wrapping_sub(r.next() & 1), r.next() & 1, !0)
            } else {
                (0, 1 << o, !0 << o)
            };
            let c = classes(&chunk, delim);
            assert_eq!(c, classes_portable(&chunk, delim));
            assert_eq!(
                c.d.count_ones() as usize,
                chunk.iter().filter(|&&b| b == delim).count()
            );
            let want = Kernel::Portable.masks(&chunk, next, delim, st);
            for k in &kernels {
                assert_eq!(k.masks(&chunk, next, delim, st), want, "{k:?}");
            }
        }
    }

    /// Random CSV-ish data: mostly well-formed records with quoted fields (delimiters, doubled
    /// quotes, CR, LF, CRLF inside), some malformed ones (`5" x`, `"ab"c`, an unclosed quote).
    fn random_csv(r: &mut Rng, records: usize, malformed: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..records {
            let fields = 1 + r.next() % 9;
            for f in 0..fields {
                if f > 0 {
                    out.push(b',');
                }
                match r.next() % 6 {
                    0 => {}
                    1 | 2 => {
                        out.extend_from_slice(r.pick(&[b"9434765919", b"abc", b"1.5", b" x "]))
                    }
                    _ => {
                        out.push(b'"');
                        for _ in 0..r.next() % 5 {
                            let part: &[u8] = r.pick(&[
                                b"text",
                                b",",
                                b"\"\"",
                                b"\r\n",
                                b"\n",
                                b"\r",
                                b"a long run of words",
                                b"9434765919",
                            ]);
                            out.extend_from_slice(part);
                        }
                        out.push(b'"');
                    }
                }
                if malformed > 0 && r.next().is_multiple_of(malformed) {
                    out.extend_from_slice(
                        r.pick(&[b"5\" x", b"\"ab\"c", b"\"open", b"\"", b"x\"\""]),
                    );
                }
            }
            out.extend_from_slice(r.pick(&[b"\r\n", b"\n", b"\r", b"\r\n", b"\r\n"]));
        }
        out
    }

    /// Reads `data` record after record with one cursor (as a block walk does) and checks each
    /// record against the exact reader; returns (records the fast path read, records).
    fn walk_both(data: &[u8], want: usize, at_eof: bool, kernel: Kernel) -> (usize, usize) {
        let mut cursor = Records::with_kernel(data, b',', kernel);
        let (mut pos, mut fast, mut records) = (0, 0, 0);
        while pos < data.len() {
            let exact = scan_exact(data, pos, want, b',', at_eof);
            let got = scan_with(&mut cursor, pos, want, at_eof);
            assert_eq!(
                got,
                exact,
                "record at {pos} of {:?}",
                String::from_utf8_lossy(data)
            );
            // `next` is left at the record's end only when the fast path read it.
            fast += (cursor.next == exact.end) as usize;
            records += 1;
            if exact.how != End::Complete {
                break;
            }
            pos = exact.end;
        }
        (fast, records)
    }

    #[test]
    fn the_fast_path_agrees_with_the_exact_reader() {
        let mut r = Rng(0xDEAD_BEEF_1234_5678);
        let (mut fast, mut records) = (0, 0);
        for round in 0..600u64 {
            let malformed = [0, 0, 3, 20, 200][(round % 5) as usize];
            let n = 1 + (r.next() % 40) as usize;
            let data = random_csv(&mut r, n, malformed);
            let want = [0, 1, 2, 5, usize::MAX][(r.next() % 5) as usize];
            // Also cut to whole chunks: the data's end then falls at a chunk's end.
            let whole = &data[..data.len() & !63];
            for k in Kernel::available() {
                for at_eof in [true, false] {
                    let (f, n) = walk_both(&data, want, at_eof, k);
                    fast += f;
                    records += n;
                    if !whole.is_empty() {
                        walk_both(whole, want, at_eof, k);
                    }
                }
                // From any byte, as `scan_record` may be asked.
                for _ in 0..4 {
                    let start = (r.next() % data.len() as u64) as usize;
                    let mut cursor = Records::with_kernel(&data, b',', k);
                    assert_eq!(
                        scan_with(&mut cursor, start, want, true),
                        scan_exact(&data, start, want, b',', true)
                    );
                }
            }
        }
        // The fast path did most of the work (not records at the data's end, nor malformed
        // ones).
        assert!(
            fast * 2 > records,
            "fast path read {fast} of {records} records"
        );
    }

    #[test]
    fn the_fast_record_loop_agrees_with_the_exact_reader() {
        let mut r = Rng(0x0123_4567_89AB_CDEF);
        let (mut fast, mut records) = (0, 0);
        for round in 0..400u64 {
            let malformed = [0, 0, 3, 20, 200][(round % 5) as usize];
            let n = 1 + (r.next() % 40) as usize;
            let data = random_csv(&mut r, n, malformed);
            let want = [0, 1, 2, 5][(r.next() % 4) as usize];
            for at_eof in [true, false] {
                let (all, quoted) = run_all(&data, want, b',', at_eof);
                let (mut pos, mut exact_quoted) = (0, 0);
                for (start, end, field, taken) in all {
                    assert_eq!(start, pos);
                    let s = scan_exact(&data, start, want, b',', at_eof);
                    assert_eq!((end, field), (s.end, s.field), "record at {start}");
                    if taken {
                        assert!(s.how == End::Complete && !s.bad_quoting);
                        exact_quoted += s.breaks as u64 - 1;
                        fast += 1;
                    }
                    records += 1;
                    pos = end;
                }
                assert_eq!(quoted, exact_quoted);
            }
        }
        assert!(
            fast * 2 > records,
            "the loop took {fast} of {records} records"
        );
    }

    #[test]
    fn the_fast_path_reads_well_formed_records() {
        let row = b"1,\"9434765919\",\"a, \"\"b\"\"\r\nc\",x\r\n";
        let data = row.repeat(40);
        for k in Kernel::available() {
            let mut cursor = Records::with_kernel(&data, b',', k);
            let mut pos = 0;
            for i in 0..39 {
                let s = cursor
                    .fast(pos, 1)
                    .unwrap_or_else(|| panic!("record {i}, {k:?}"));
                assert_eq!(&data[s.field.unwrap().0..s.field.unwrap().1], b"9434765919");
                assert_eq!((s.breaks, s.end - pos), (2, row.len()));
                pos = s.end;
            }
            // The last record reaches the data's end, but its LF ends it whatever follows.
            assert!(cursor.fast(pos, 1).is_some());
            // A quoted field still open after an LF that ends the data at a chunk's end.
            let open = [&b"1,\""[..], &[b'x'; 60], b"\n"].concat();
            let s = scan_with(&mut Records::with_kernel(&open, b',', k), 0, 1, false);
            assert_eq!(s.how, End::Open { quoted: true });
            // A stray quote sends a record to the exact reader, and the next one comes back.
            let odd = b"1,5\" x,9\r\n2,9434765919\r\n3,x\r\n";
            let mut cursor = Records::with_kernel(odd, b',', k);
            assert!(cursor.fast(0, 1).is_none());
            cursor.next = usize::MAX;
            assert!(cursor.fast(10, 1).is_some());
        }
    }

    #[test]
    fn delimiters_from_names_and_paths() {
        assert_eq!("tab".parse::<Delimiter>(), Ok(Delimiter::Tab));
        assert_eq!(";".parse::<Delimiter>(), Ok(Delimiter::Semicolon));
        assert!("x".parse::<Delimiter>().is_err());
        let p = |s: &str| Delimiter::for_path(std::path::Path::new(s));
        assert_eq!(p("a/x.TSV"), Delimiter::Tab);
        assert_eq!(p("x.tab.gz"), Delimiter::Tab);
        assert_eq!(p("x.csv"), Delimiter::Comma);
    }
}
