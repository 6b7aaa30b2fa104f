//! Exit codes, defined in one place and printed in `ndop --help`, and how an error becomes
//! one (and its message on standard error).

use pos_client::Error as PosError;
use processor::ErrorKind;

/// Success.
pub(crate) const OK: u8 = 0;
/// Invalid lines were found and `--fail-on-invalid` was given (the reports are still written).
pub(crate) const INVALID_LINES: u8 = 1;
/// Bad arguments.
pub(crate) const USAGE: u8 = 2;
/// An input could not be read, or a CSV column is missing.
pub(crate) const INPUT: u8 = 3;
/// An output could not be written (directory not empty, disk full, permissions).
pub(crate) const OUTPUT: u8 = 4;
/// MESH failed: connection, authentication, or a message refused.
pub(crate) const MESH: u8 = 5;
/// The POS did not answer as expected: a file rejected as invalid, replies missing after the
/// timeout, or numbers returned that were never sent.
pub(crate) const POS: u8 = 6;

/// The text appended to `ndop --help`.
pub(crate) const HELP: &str = "\
Exit codes:
  0  success
  1  invalid or unparseable records found and --fail-on-invalid given (reports still written)
  2  bad arguments
  3  an input could not be read or is refused (a missing or ambiguous CSV column, a header
     that looks like data, a blank header line, UTF-16, a record over 16 MiB: a quote never
     closed), or (run) the extract changed since the work directory was started
  4  an output could not be written (directory not empty, disk full, permissions)
  5  MESH failed: connection, authentication, or a message refused (folder mode: a file
     the MESH client moved to FAILED)
  6  the POS did not answer as expected (file rejected, replies missing, unexpected numbers)";

/// The exit code for a processor error.
pub(crate) fn for_kind(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Usage => USAGE,
        ErrorKind::Input => INPUT,
        ErrorKind::Output => OUTPUT,
        ErrorKind::Pos => POS,
    }
}

/// The exit code for an error: the first cause in its chain that this binary knows decides.
pub(crate) fn code_for(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(t) = cause.downcast_ref::<PosError>() {
            return match t {
                PosError::Local(p) => for_kind(p.kind()),
                PosError::Mesh { .. } | PosError::Refused(_) => MESH,
                PosError::BadAnswer(_) => POS,
                PosError::ExtractChanged { .. } => INPUT,
            };
        }
        if let Some(c) = cause.downcast_ref::<pos_cache::Error>() {
            return match c {
                pos_cache::Error::Journal(PosError::BadAnswer(_)) => POS,
                c => for_kind(c.kind()),
            };
        }
        if cause.downcast_ref::<mesh_client::Error>().is_some() {
            return MESH;
        }
        if let Some(p) = cause.downcast_ref::<processor::Error>() {
            return for_kind(p.kind());
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return OUTPUT;
        }
    }
    USAGE
}

/// The error and its causes, each cause only if the text so far does not already include it
/// (the processor's errors name their source in their own message).
pub(crate) fn message(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text += ": ";
        }
        text += &part;
    }
    text
}

/// Whether the error is a broken pipe on an output (a reader that stopped reading): not an
/// error for `ndop`.
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
