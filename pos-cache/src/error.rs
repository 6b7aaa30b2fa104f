//! The cache's errors: each names the cause and what to do.

use std::path::PathBuf;

/// An error from the cache.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad options (an age, a date, a refused maximum age, a mixed environment).
    #[error("{0}")]
    Usage(String),
    /// The database could not be opened, read or written.
    #[error("cache {}: {message}", path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// What failed, and what to do.
        message: String,
    },
    /// The cache was made by a version of ndop that this one cannot use.
    #[error(
        "cache {}: schema version {found}, this ndop reads versions 1 to {supported}; {hint}",
        path.display()
    )]
    Version {
        /// The database file.
        path: PathBuf,
        /// The version found.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
        /// What to do.
        hint: &'static str,
    },
    /// A work directory cannot be imported as it is.
    #[error("{}: {message}", path.display())]
    WorkDir {
        /// The work directory or the file in it.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// Reading or writing a file.
    #[error(transparent)]
    Files(#[from] processor::Error),
    /// From the journal.
    #[error(transparent)]
    Journal(#[from] pos_client::Error),
}

impl Error {
    /// The broad class of the error, for exit codes.
    pub fn kind(&self) -> processor::ErrorKind {
        use processor::ErrorKind;
        match self {
            Error::Usage(_) => ErrorKind::Usage,
            Error::Database { .. } | Error::Version { .. } | Error::WorkDir { .. } => {
                ErrorKind::Input
            }
            Error::Files(e) => e.kind(),
            Error::Journal(pos_client::Error::Local(e)) => e.kind(),
            Error::Journal(_) => ErrorKind::Pos,
        }
    }
}

/// Result with the cache's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
