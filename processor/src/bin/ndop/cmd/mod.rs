//! One subcommand per file, all of the same shape: an args struct whose doc comments are the
//! help text, and a `run` that returns an exit code.

pub mod filter;
pub mod generate;
pub mod mesh;
pub mod prepare;
pub mod reconcile;
pub mod run;
pub mod validate;

use clap::Args;
use processor::csv::{Column, Delimiter};
use processor::nhs::Rules;
use processor::scan::{Format, ScanOptions};
use processor::IoMode;
use std::path::PathBuf;

/// Input options shared by every command that reads extracts.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// Extract files to read; `-` reads standard input. Any size: files are memory-mapped and
    /// scanned in parallel in constant memory.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,

    /// The input is CSV; take the NHS number from this column (a header name, matched
    /// ignoring case, spaces and underscores, or a 1-based position). Records follow RFC 4180:
    /// quoted fields may hold delimiters, doubled quotes and line breaks, and a record may
    /// span lines (up to 16 MiB a record). Records end at CRLF, LF or CR. Without --column,
    /// each line holds one number, optionally followed by a comma (the POS `.dat` form; lines
    /// up to 64 KiB).
    #[arg(long, value_name = "NAME|N")]
    pub column: Option<Column>,

    /// The CSV has no header row (bcp, sqlcmd exports): every record is data, and --column
    /// must be a position.
    #[arg(long, requires = "column")]
    pub no_header: bool,

    /// Skip this many lines at the start (title rows, report banners) before the header row.
    /// Skipped lines are not records and filter does not copy them.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub skip_lines: u64,

    /// CSV field separator: `,` `tab` `;` or `|`. Default: tab for .tsv and .tab files,
    /// else comma.
    #[arg(long, value_name = "D", requires = "column")]
    pub delimiter: Option<Delimiter>,

    /// Accept only ten bare digits: no surrounding whitespace, no `943 476 5919` or
    /// `943-476-5919` forms (by default those are normalised and counted).
    #[arg(long)]
    pub strict: bool,

    /// Quarantine repdigits such as 0000000000 and 9999999999 (they pass Modulus 11 but are
    /// usually placeholders). By default they are kept and counted as `placeholder`.
    #[arg(long)]
    pub reject_placeholders: bool,

    #[command(flatten)]
    pub engine: EngineArgs,
}

/// How the engine reads: shared by every command that scans files.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Worker threads (default: one per core).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub threads: usize,

    /// How to read inputs: auto (memory-map regular files), mmap, or read.
    #[arg(long, default_value = "auto", value_name = "MODE")]
    pub io: IoMode,
}

impl EngineArgs {
    /// Engine options for one-number-per-line files (POS requests and results).
    pub fn scan_options(&self) -> ScanOptions {
        ScanOptions {
            threads: self.threads,
            io: self.io,
            ..ScanOptions::default()
        }
    }
}

impl InputArgs {
    /// The engine options these arguments describe.
    pub fn scan_options(&self) -> ScanOptions {
        ScanOptions {
            format: match &self.column {
                Some(c) => Format::Csv(c.clone()),
                None => Format::Lines,
            },
            rules: Rules {
                strict: self.strict,
                reject_placeholders: self.reject_placeholders,
            },
            header: !self.no_header,
            skip_lines: self.skip_lines,
            delimiter: self.delimiter,
            ..self.engine.scan_options()
        }
    }
}

/// Formats 1234567 as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Parses a size such as `20GB`, `100MB`, `75MiB` or `1000`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("not a size: {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown unit in {s:?} (use B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size too large: {s:?}"))
}

/// The human summary of a validation, for standard error.
pub fn describe_counts(c: &processor::validate::Counts) -> String {
    let mut s = format!(
        "  valid      {:>14}  (unique {}, duplicates {}, normalised {}, placeholder {})\n",
        thousands(c.valid),
        thousands(c.unique),
        thousands(c.duplicates),
        thousands(c.normalised),
        thousands(c.placeholder)
    );
    s += &format!("  invalid    {:>14}", thousands(c.invalid));
    if !c.invalid_by_reason.is_empty() {
        let parts: Vec<String> = c
            .invalid_by_reason
            .iter()
            .map(|(r, n)| format!("{r} {}", thousands(*n)))
            .collect();
        s += &format!("  ({})", parts.join(", "));
    }
    s += &format!("\n  blank      {:>14}\n", thousands(c.blank));
    if c.unparseable > 0 {
        let parts: Vec<String> = c
            .unparseable_by_reason
            .iter()
            .map(|(r, n)| format!("{r} {}", thousands(*n)))
            .collect();
        s += &format!(
            "  unparseable{:>14}  ({})\n",
            thousands(c.unparseable),
            parts.join(", ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("20GB"), Ok(20_000_000_000));
        assert_eq!(parse_size("100 MB"), Ok(100_000_000));
        assert_eq!(parse_size("75MiB"), Ok(75 << 20));
        assert_eq!(parse_size("13"), Ok(13));
        assert!(parse_size("x").is_err());
        assert!(parse_size("5TB").is_err());
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }
}
