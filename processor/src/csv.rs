//! CSV (RFC 4180) for extracts: the header row and one field of a record.
//!
//! Records are lines: a quoted field may contain commas and doubled quotes (`""`), but not a
//! line break; a record whose quote is not closed on its line is quarantined as
//! [`Reason::BadQuoting`]. Only the fields up to the NHS-number column are parsed, so wide rows
//! cost little.

use crate::nhs::Reason;
use memchr::memchr;

/// Which column holds the NHS number: a header name, or a 1-based position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    /// Matches a header field exactly (after trimming), or else ignoring ASCII case.
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

/// Finds the 0-based index of `column` in a header row.
pub fn resolve(header: &[u8], column: &Column) -> Option<usize> {
    match column {
        Column::Position(p) => {
            let width = header_fields(header)?.len();
            (*p >= 1 && *p <= width).then(|| p - 1)
        }
        Column::Name(name) => {
            let names = header_fields(header)?;
            let name = name.trim();
            names.iter().position(|h| h.trim() == name).or_else(|| {
                names
                    .iter()
                    .position(|h| h.trim().eq_ignore_ascii_case(name))
            })
        }
    }
}

/// Every field of a header row, unquoted; `None` if the quoting is malformed.
pub fn header_fields(line: &[u8]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let (value, next) = next_field(line, pos).ok()?;
        let text = String::from_utf8_lossy(value).replace("\"\"", "\"");
        out.push(text);
        if next >= line.len() {
            return Some(out);
        }
        pos = next + 1;
    }
}

/// The raw content of field `index` (0-based) of a record: the bytes between the quotes for a
/// quoted field (doubled quotes left as they are), else the bytes between the commas.
#[inline]
pub fn field(line: &[u8], index: usize) -> Result<&[u8], Reason> {
    let mut pos = 0;
    let mut i = 0;
    loop {
        let (value, next) = next_field(line, pos)?;
        if i == index {
            return Ok(value);
        }
        if next >= line.len() {
            return Err(Reason::MissingField);
        }
        pos = next + 1;
        i += 1;
    }
}

/// Parses the field starting at `pos`; returns its content and the position of the comma
/// that ends it (or `line.len()`).
#[inline]
fn next_field(line: &[u8], pos: usize) -> Result<(&[u8], usize), Reason> {
    if line.get(pos) == Some(&b'"') {
        let mut j = pos + 1;
        loop {
            let Some(k) = memchr(b'"', &line[j..]) else {
                return Err(Reason::BadQuoting);
            };
            let q = j + k;
            if line.get(q + 1) == Some(&b'"') {
                j = q + 2;
                continue;
            }
            let next = q + 1;
            if next < line.len() && line[next] != b',' {
                return Err(Reason::BadQuoting);
            }
            return Ok((&line[pos + 1..q], next));
        }
    }
    let end = memchr(b',', &line[pos.min(line.len())..]).map_or(line.len(), |k| pos + k);
    Ok((&line[pos.min(line.len())..end], end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_plain_and_quoted() {
        let row = br#"1,"Smith, John","9434765919",x"#;
        assert_eq!(field(row, 0), Ok(&b"1"[..]));
        assert_eq!(field(row, 1), Ok(&b"Smith, John"[..]));
        assert_eq!(field(row, 2), Ok(&b"9434765919"[..]));
        assert_eq!(field(row, 3), Ok(&b"x"[..]));
        assert_eq!(field(row, 4), Err(Reason::MissingField));
        assert_eq!(field(b"a,,c", 1), Ok(&b""[..]));
        assert_eq!(field(b"a,b,", 2), Ok(&b""[..]));
        assert_eq!(field(br#""say ""hi""",2"#, 1), Ok(&b"2"[..]));
    }

    #[test]
    fn bad_quoting() {
        assert_eq!(field(br#""open,1"#, 1), Err(Reason::BadQuoting));
        assert_eq!(field(br#""a"b,1"#, 1), Err(Reason::BadQuoting));
    }

    #[test]
    fn header_resolution() {
        let h = b"\"id\",NHS_Number , name";
        assert_eq!(resolve(h, &"NHS_Number".parse().unwrap()), Some(1));
        assert_eq!(resolve(h, &"nhs_number".parse().unwrap()), Some(1));
        assert_eq!(resolve(h, &"id".parse().unwrap()), Some(0));
        assert_eq!(resolve(h, &"3".parse().unwrap()), Some(2));
        assert_eq!(resolve(h, &"missing".parse().unwrap()), None);
        assert!("0".parse::<Column>().is_err());
    }
}
