//! The record of one check that an information governance lead can read, print and file:
//! [`facts`] gathers what a work directory shows about a run into one document (`ndop report
//! --json`), [`html`] renders it as a single self-contained page (`WORK/report.html`).
//!
//! No NHS number appears in either: the facts are counts, names, ids, hashes and times, and
//! every string in them (file names and paths are user data) is scrubbed of anything that
//! reads as an NHS number ([`redact`]) before it is rendered.

pub(crate) mod facts;
pub(crate) mod html;

use anyhow::Context;
use std::path::{Path, PathBuf};

pub(crate) use facts::{gather, Facts};

/// The report's file name in the work directory.
pub(crate) const REPORT_HTML: &str = "report.html";
/// What stands in for an NHS number found in a name or path.
const REDACTED: &str = "[NHS number removed]";

/// Gathers the facts of the run in `work` and writes `WORK/report.html` (mode 0600, atomic);
/// returns its path.
pub(crate) fn write_report(work: &Path) -> anyhow::Result<PathBuf> {
    let facts = gather(work, true)?;
    let page = html::render(&facts);
    Ok(processor::files::write_atomic(
        work,
        REPORT_HTML,
        page.as_bytes(),
    )?)
}

/// What `ndop run` and `ndop demo` do at the end, however the run ended: write
/// `WORK/report.html` if the work directory holds a journal (a run that failed before it
/// began has nothing to report). A report that cannot be written is a warning naming the
/// retry, not an error: it must not hide how the run itself ended. `who` names the command.
pub(crate) fn report_run(work: &Path, who: &str) -> Option<PathBuf> {
    if !work.join(pos_client::journal::JOURNAL_FILE).exists() {
        return None;
    }
    match write_report(work) {
        Ok(path) => Some(path),
        Err(e) => {
            eprintln!(
                "{who}: warning: the report was not written ({}); run `ndop report {}` to try \
                 again",
                crate::exit::message(&e),
                work.display()
            );
            None
        }
    }
}

/// `facts` with [`redact`] applied to every string in it.
pub(crate) fn scrub(facts: Facts) -> anyhow::Result<Facts> {
    let mut value = serde_json::to_value(&facts).context("cannot serialise the report")?;
    scrub_value(&mut value);
    serde_json::from_value(value).context("cannot serialise the report")
}

/// Applies [`redact`] to every string in `v`.
fn scrub_value(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => {
            if let Some(r) = redact(s) {
                *s = r;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(scrub_value),
        serde_json::Value::Object(map) => map.values_mut().for_each(scrub_value),
        _ => {}
    }
}

/// `s` with each NHS number in it replaced, or `None` if it holds none. An NHS number here is
/// ten digits that pass Modulus 11, written bare or as `943 476 5919` / `943-476-5919`, not
/// part of a longer run of letters or digits (so a SHA-256 in hex, a MESH message id or a
/// timestamp is left alone).
pub(crate) fn redact(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        let at_boundary = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        if at_boundary && b[i].is_ascii_digit() {
            if let Some(len) = number_at(&b[i..]) {
                out.push_str(&s[copied..i]);
                out.push_str(REDACTED);
                i += len;
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&s[copied..]);
    Some(out)
}

/// The length of the NHS number `b` starts with, if it does (see [`redact`]).
fn number_at(b: &[u8]) -> Option<usize> {
    let ends = |len: usize| b.get(len).is_none_or(|c| !c.is_ascii_alphanumeric());
    let digits: Vec<u8> = b.iter().take(10).copied().collect();
    if digits.len() == 10 && ends(10) && processor::nhs::is_valid(&digits) {
        return Some(10);
    }
    // 3-3-4 with one kind of separator
    if b.len() >= 12 && (b[3] == b' ' || b[3] == b'-') && b[7] == b[3] && ends(12) {
        let mut d = Vec::with_capacity(10);
        d.extend_from_slice(&b[0..3]);
        d.extend_from_slice(&b[4..7]);
        d.extend_from_slice(&b[8..12]);
        if processor::nhs::is_valid(&d) {
            return Some(12);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_removes_nhs_numbers_and_nothing_else() {
        // 9434765919 is valid, 9434765918 is not
        assert_eq!(
            redact("/data/9434765919.csv").as_deref(),
            Some("/data/[NHS number removed].csv")
        );
        assert_eq!(
            redact("a 943 476 5919 b 943-476-5919").as_deref(),
            Some("a [NHS number removed] b [NHS number removed]")
        );
        assert_eq!(
            redact("x_9434765919_y").as_deref(),
            Some("x_[NHS number removed]_y")
        );
        for kept in [
            "/data/9434765918.csv",
            "a9434765919",
            "94347659190",
            "20261128070312711705_159749",
            "943 476-5919",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "2026-11-28T07:03:12.789Z",
            "",
        ] {
            assert_eq!(redact(kept), None, "{kept}");
        }
    }
}
