//! What the `ndop` integration tests share: the binary, started without any `NDOP_*`
//! configuration from the environment the tests run in, and the fixtures in `testdata/`.
//! (A directory module, so that Cargo does not build it as a test of its own.)

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `ndop` binary under test, with the `NDOP_*` configuration variables removed.
pub(crate) fn ndop_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ndop"));
    for var in ["NDOP_CONFIG", "NDOP_MAILBOX", "NDOP_MESH_URL"] {
        command.env_remove(var);
    }
    command
}

/// A file in the workspace's `testdata/`.
pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name)
}
