//! What the commands print: numbers with thousands separators, the human summaries on standard
//! error, and the JSON summaries on standard output. Sizes, counts and paths only, never an NHS
//! number.

use pos_client::{CollectReport, REPLY_DIR};
use std::io::Write;
use std::path::Path;

/// Formats 1234567 as `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The human summary of a validation, for standard error.
pub(crate) fn describe_counts(c: &processor::validate::Counts) -> String {
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

/// The human account of a collect, for standard error.
pub(crate) fn describe_collect(report: &CollectReport, work: &Path) {
    eprintln!(
        "ndop collect: {} replies stored in {} after {} polls; {} left in the inbox; {}",
        report.replies.len(),
        work.join(REPLY_DIR).display(),
        report.polls,
        report.unrecognised.len(),
        if report.complete {
            "every submission has its final reply".to_string()
        } else {
            format!(
                "{} submissions still waiting (run collect again later)",
                report.pending.len()
            )
        }
    );
    for u in &report.unrecognised {
        eprintln!("  left in inbox: {} ({})", u.message_id, u.reason);
    }
}

/// Prints a value as pretty JSON on standard output.
pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string_pretty(value)?)?;
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }
}
