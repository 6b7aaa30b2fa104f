//! The header row of a CSV input: which cell holds the NHS number, and the refusals that keep
//! a wrong header from silently choosing the wrong column (or from hiding a data row).
//!
//! Refused, each with a message that names the cause and what to do: a blank header line, a
//! UTF-16 file, a name that matches several cells, a missing column (with what the header holds
//! instead and a hint about the delimiter or a title row), and a chosen cell that is itself a
//! valid NHS number (the file has no header row).

use crate::csv::{self, Column, Delimiter};
use crate::error::{Error, Result};
use crate::input::strip_eol;
use crate::nhs::{self, Field, Rules};
use std::path::Path;

/// The 0-based column of `column` in the header record `raw` (with its line ending), which
/// starts on line `line` of `path`.
pub(crate) fn column_of(
    path: &Path,
    raw: &[u8],
    column: &Column,
    delimiter: Delimiter,
    line: u64,
) -> Result<usize> {
    let path = path.to_path_buf();
    let text = strip_eol(raw);
    if text.iter().all(|&b| b == b' ' || b == b'\t') {
        return Err(Error::BlankHeader { path, line });
    }
    if text.contains(&0) {
        return Err(Error::Utf16 { path });
    }
    let cells = csv::header_fields(text, delimiter.byte())
        .ok_or_else(|| Error::BadHeader { path: path.clone() })?;
    let col = match csv::resolve(&cells, column) {
        Ok(col) => col,
        Err(positions) if positions.len() > 1 => {
            let names: Vec<String> = positions.iter().map(|p| (p + 1).to_string()).collect();
            return Err(Error::AmbiguousColumn {
                path,
                column: column.to_string(),
                positions: names.join(" and "),
            });
        }
        Err(_) => {
            return Err(Error::NoSuchColumn {
                hint: header_hint(&cells, text, delimiter),
                path,
                column: column.to_string(),
            })
        }
    };
    // A valid number, or anything holding as many digits as one might (an invalid or mangled
    // number): such a row is data, and taken as the header it would be copied unchecked.
    let cell = cells[col].as_bytes();
    let digits = cell.iter().filter(|b| b.is_ascii_digit()).count();
    if digits >= 6 || matches!(nhs::classify(cell, Rules::default()), Field::Valid { .. }) {
        return Err(Error::HeaderLooksLikeData {
            path,
            position: col + 1,
        });
    }
    Ok(col)
}

/// What a header row that lacks the wanted column holds instead, and what to try. Digits are
/// shown as `#`: the row may be a patient's record.
fn header_hint(cells: &[String], text: &[u8], delimiter: Delimiter) -> String {
    let others: Vec<String> = Delimiter::ALL
        .iter()
        .filter(|d| **d != delimiter)
        .map(|d| (d, text.iter().filter(|&&b| b == d.byte()).count()))
        .filter(|(_, n)| *n > 0)
        .map(|(d, n)| format!("{n} {d}"))
        .collect();
    if cells.len() == 1 {
        let mut hint = format!(
            "; the header row (delimiter: {delimiter}) has a single cell, {}",
            show_cell(&cells[0])
        );
        if !others.is_empty() {
            hint += &format!(
                " holding {} characters: is the file separated by another delimiter \
                 (--delimiter tab, ';' or '|')?",
                others.join(", ")
            );
        } else {
            hint += ": if it is a title row, skip it with --skip-lines N";
        }
        return hint;
    }
    let shown: Vec<String> = cells.iter().take(20).map(|c| show_cell(c)).collect();
    format!(
        "; the header row (delimiter: {delimiter}) has {} cells: {}{}",
        cells.len(),
        shown.join(", "),
        if cells.len() > 20 { ", ..." } else { "" }
    )
}

fn show_cell(cell: &str) -> String {
    let short: String = cell
        .chars()
        .take(40)
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect();
    format!("{short:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(header: &str, column: &str) -> Result<usize> {
        let column = column.parse().unwrap();
        column_of(
            Path::new("x.csv"),
            header.as_bytes(),
            &column,
            Delimiter::Comma,
            1,
        )
    }

    #[test]
    fn refusals_name_the_cause() {
        assert_eq!(col("id,NHS Number\r\n", "nhs_number").unwrap(), 1);
        assert!(matches!(
            col(" \r\n", "1"),
            Err(Error::BlankHeader { line: 1, .. })
        ));
        assert!(matches!(
            col("9434765919,x\n", "1"),
            Err(Error::HeaderLooksLikeData { position: 1, .. })
        ));
        // An invalid or mangled number is data too: it must not be copied through as a header.
        for cell in ["9434765918", "943 476 591", "9.43477E+09", "'9434765919"] {
            assert!(
                matches!(
                    col(&format!("x,{cell}\n"), "2"),
                    Err(Error::HeaderLooksLikeData { position: 2, .. })
                ),
                "{cell}"
            );
        }
        let e = col("nhs,x,NHS\n", "nhs").unwrap_err().to_string();
        assert!(e.contains("cells 1 and 3"), "{e}");
        let e = col("id\tnhs_number\n", "nhs_number")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--delimiter"), "{e}");
        let e = col("Extract of 2026-11-01 for 9434765919\n", "2")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--skip-lines") && !e.contains("9434765919"),
            "{e}"
        );
        assert!(e.contains("####-##-##"), "{e}");
    }
}
