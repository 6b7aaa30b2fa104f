//! The processor's one error type. Every variant names the file it concerns; none carries an
//! NHS number or line content (those are personal data and only go to files the user asked for).

use std::io;
use std::path::PathBuf;

/// What went wrong, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input could not be opened, mapped or read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The input (`-` for standard input).
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A CSV input has no header row, or its header row is malformed.
    #[error("{}: the CSV header row is missing or malformed", path.display())]
    BadHeader {
        /// The input.
        path: PathBuf,
    },
    /// The `--column` named is not in a CSV input's header row.
    #[error("{}: no column {column} in the header row{hint}", path.display())]
    NoSuchColumn {
        /// The input.
        path: PathBuf,
        /// The column as the user gave it.
        column: String,
        /// What was found instead, and what to try (starts with `; ` when not empty).
        hint: String,
    },
    /// The `--column` name matches more than one header cell.
    #[error(
        "{}: column {column} matches header cells {positions}; name the one to use by its \
         position (--column N)",
        path.display()
    )]
    AmbiguousColumn {
        /// The input.
        path: PathBuf,
        /// The column as the user gave it.
        column: String,
        /// The 1-based positions that match, e.g. `2 and 5`.
        positions: String,
    },
    /// The header cell of the chosen column is a valid NHS number, or holds six digits or more
    /// (an invalid or mangled one): the file has no header row, and its first record would be
    /// taken as one and copied unchecked.
    #[error(
        "{}: the header row's cell {position} holds an NHS number (or as many digits as one), so \
         the first line looks like data, not a header; if the file has no header row, use \
         --no-header",
        path.display()
    )]
    HeaderLooksLikeData {
        /// The input.
        path: PathBuf,
        /// The 1-based column position.
        position: usize,
    },
    /// The line taken as the header row is blank.
    #[error(
        "{}: line {line}, taken as the header row, is blank; if the header is on line N, use \
         --skip-lines N-1 (or --no-header if there is none)",
        path.display()
    )]
    BlankHeader {
        /// The input.
        path: PathBuf,
        /// The 1-based line.
        line: u64,
    },
    /// The input is UTF-16 (Excel's "Unicode text"), not UTF-8 or ASCII.
    #[error(
        "{}: the file is UTF-16 (Excel \"Unicode text\"); save as CSV UTF-8 (or convert it, \
         e.g. iconv -f UTF-16 -t UTF-8)",
        path.display()
    )]
    Utf16 {
        /// The input.
        path: PathBuf,
    },
    /// A CSV record longer than the bound: most often a quote that is never closed, which
    /// would otherwise swallow the rest of the file.
    #[error(
        "{}: the record starting on line {line} runs for more than {} MiB (a quote that is never \
         closed?); fix the quoting: nothing was written",
        path.display(),
        limit >> 20
    )]
    RecordTooLong {
        /// The input.
        path: PathBuf,
        /// The 1-based line where the record starts (0: the header).
        line: u64,
        /// The bound in bytes ([`crate::MAX_RECORD`]).
        limit: usize,
    },
    /// The output directory exists and is not empty.
    #[error("output directory {} is not empty; name a new or empty directory", path.display())]
    OutputNotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// An output file could not be created, written, synced or renamed (a full disk lands here).
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Options that cannot work together, or a value out of range.
    #[error("{0}")]
    Usage(String),
    /// A POS reply says the request was rejected because a line was not a valid NHS number.
    #[error(
        "{}: the POS rejected the request: \"{}\"",
        path.display(),
        crate::pos::REJECTION_LINE
    )]
    PosRejected {
        /// The reply file.
        path: PathBuf,
    },
    /// A file that should hold only NHS numbers (a request sent to, or a result from, the POS)
    /// has lines that are not valid NHS numbers.
    #[error(
        "{}: {invalid} lines are not valid NHS numbers, so this is not a POS {role} file",
        path.display()
    )]
    NotPosFile {
        /// The file.
        path: PathBuf,
        /// `request` or `result`.
        role: &'static str,
        /// How many lines are invalid.
        invalid: u64,
    },
}

impl Error {
    /// An input could not be read: [`Error::Read`].
    pub fn read(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Read {
            path: path.into(),
            source,
        }
    }

    /// An output could not be written: [`Error::Write`].
    pub fn write(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Write {
            path: path.into(),
            source,
        }
    }

    /// The broad class of the error, for mapping to exit codes.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Read { .. }
            | Error::BadHeader { .. }
            | Error::NoSuchColumn { .. }
            | Error::AmbiguousColumn { .. }
            | Error::HeaderLooksLikeData { .. }
            | Error::BlankHeader { .. }
            | Error::Utf16 { .. }
            | Error::RecordTooLong { .. } => ErrorKind::Input,
            Error::OutputNotEmpty { .. } | Error::Write { .. } => ErrorKind::Output,
            Error::Usage(_) => ErrorKind::Usage,
            Error::PosRejected { .. } | Error::NotPosFile { .. } => ErrorKind::Pos,
        }
    }
}

/// The broad class of an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad options.
    Usage,
    /// An input problem.
    Input,
    /// An output problem.
    Output,
    /// The POS rejected a request, or its reply is not what it should be.
    Pos,
}

/// Result with the processor's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
