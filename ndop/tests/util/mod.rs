//! What the `ndop` integration tests share: the binary, started without any `NDOP_*`
//! configuration from the environment the tests run in, and the fixtures in `testdata/`.
//! (A directory module, so that Cargo does not build it as a test of its own.)

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// `ndop` with `args`, with the mock's password and shared key in the environment.
pub(crate) fn ndop(args: &[&str]) -> Output {
    ndop_command()
        .args(args)
        .env("NDOP_MESH_PASSWORD", "password")
        .env("NDOP_MESH_SHARED_KEY", "TestKey")
        .output()
        .expect("ndop runs")
}

/// Starts a mock MESH on a runtime of its own.
pub(crate) fn start_mesh(
    config: mock_mesh::Config,
) -> (tokio::runtime::Runtime, mock_mesh::MockMesh) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mesh = rt.block_on(mock_mesh::MockMesh::start(config)).unwrap();
    (rt, mesh)
}

/// `ndop run` on `extract` in `work` against the mock at `url`, waiting up to `timeout`
/// seconds, in files of at most 1500 records.
pub(crate) fn run_in(extract: &Path, work: &Path, url: &str, timeout: &str) -> Output {
    ndop(&[
        "run",
        extract.to_str().unwrap(),
        "--column",
        "nhs_number",
        "--work",
        work.to_str().unwrap(),
        "--mesh",
        url,
        "--mailbox",
        "X26ABC1",
        "--max-records",
        "1500",
        "--interval",
        "0.05",
        "--timeout",
        timeout,
    ])
}

/// `ndop generate` a `.dat` extract of `lines` 999-range lines (all valid) into `out`.
pub(crate) fn generate_dat(out: &Path, lines: &str, seed: &str) {
    generate(out, lines, seed, &[]);
}

/// `ndop generate` a CSV extract of `lines` 999-range records (1% invalid) into `out`.
pub(crate) fn generate_csv(out: &Path, lines: &str, seed: &str) {
    generate(
        out,
        lines,
        seed,
        &["--format", "csv", "--invalid-frac", "0.01"],
    );
}

/// `ndop generate --lines LINES --seed SEED [EXTRA...] --out OUT`, which must succeed.
fn generate(out: &Path, lines: &str, seed: &str, extra: &[&str]) {
    let mut args = vec!["generate", "--lines", lines, "--seed", seed];
    args.extend_from_slice(extra);
    args.extend(["--out", out.to_str().unwrap()]);
    let gen = ndop(&args);
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
}
