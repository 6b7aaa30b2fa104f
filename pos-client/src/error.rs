//! The one error of the POS client: a local problem (the engine's [`processor::Error`]), MESH
//! refusing or unreachable, or an extract that changed under a resumed run.

use std::path::PathBuf;

/// What can stop a send or a collect.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A local problem: a file, the journal, a malformed `.ctl`, a conflict.
    #[error(transparent)]
    Local(#[from] processor::Error),
    /// MESH refused or could not be reached (after the client's retries).
    #[error("{context}: {source}")]
    Mesh {
        /// What was being done, e.g. `sending X26ABC1-231126-0001.dat`.
        context: String,
        /// The client's error (carries the HTTP status and MESH error code).
        #[source]
        source: Box<mesh_client::Error>,
    },
    /// The POS did not answer as expected: its job failed, MESH reports the file undelivered,
    /// or it returned numbers that were never sent.
    #[error("{0}")]
    BadAnswer(String),
    /// The MESH client could not send a file and moved it to its FAILED folder (folder mode):
    /// each file with the status record that says why, and both readings of its code.
    #[error(
        "the MESH client moved {0} to its FAILED folder: fix the cause, then prepare the file \
         again and remove it from FAILED"
    )]
    Refused(String),
    /// A run was resumed on an extract that is not the file its work directory was started
    /// with (see [`crate::journal::Extract::verify`]).
    #[error(
        "{} is not the extract the work directory {} was started with ({changes}); put the \
         original back, or start again in a new work directory",
        path.display(),
        work.display()
    )]
    ExtractChanged {
        /// The extract as given now.
        path: PathBuf,
        /// The work directory.
        work: PathBuf,
        /// What differs: size, modification time, inode (never content).
        changes: String,
    },
}

impl Error {
    /// The MESH client error, if that is what this is.
    pub fn mesh_error(&self) -> Option<&mesh_client::Error> {
        match self {
            Error::Mesh { source, .. } => Some(source.as_ref()),
            Error::Local(_)
            | Error::BadAnswer(_)
            | Error::Refused(_)
            | Error::ExtractChanged { .. } => None,
        }
    }
}

pub(crate) fn mesh(context: impl Into<String>) -> impl FnOnce(mesh_client::Error) -> Error {
    let context = context.into();
    move |source| Error::Mesh {
        context,
        source: Box::new(source),
    }
}

pub(crate) fn usage(message: String) -> Error {
    Error::Local(processor::Error::Usage(message))
}
