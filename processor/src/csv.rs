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
/// block, found 64 bytes at a time ([`crate::swar::csv_specials`]) and handed out in order, so
/// a record costs a few bit operations per delimiter or quote instead of a search per field.
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
        (self.delims, self.others) = match self.data.get(self.base..self.base + 64) {
            Some(chunk) => crate::swar::csv_specials(chunk.try_into().unwrap(), self.delim),
            None => crate::swar::csv_specials_portable(
                self.data.get(self.base..).unwrap_or_default(),
                self.delim,
            ),
        };
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

/// Scans the record that starts at `data[start]` and cuts out field `want` (0-based).
/// With `at_eof`, the data's end is the input's end: a record can then always be ended (a CR at
/// the very end is a whole line break); without it, a record that reaches the end of `data` is
/// [`End::Open`].
pub fn scan_record(data: &[u8], start: usize, want: usize, delim: u8, at_eof: bool) -> Scanned {
    scan_with(&mut Specials::new(data, delim, start), start, want, at_eof)
}

/// [`scan_record`] with a cursor that the caller keeps from one record to the next.
#[inline]
pub(crate) fn scan_with(sp: &mut Specials, start: usize, want: usize, at_eof: bool) -> Scanned {
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
