//! Interop: NHS England's own Python `mesh-client` drives the whole flow against mock-mesh.

mod common;
use common::*;

// ---------------------------------------------------------------------------------------------
// Interop: NHS England's own Python client against mock-mesh
// ---------------------------------------------------------------------------------------------

/// The venv python with `mesh-client==5.0.2`, made (once, under a lock) by `tools/python-env.sh`.
fn python() -> std::path::PathBuf {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/python-env.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run tools/python-env.sh");
    assert!(out.status.success(), "tools/python-env.sh failed");
    std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_mesh_client_drives_the_whole_flow() {
    let m = Mesh::default().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new(python())
        .arg(root.join("tests/interop/mesh_client_flow.py"))
        .arg(m.server.base_url())
        .arg(root.join("data/test-patients.csv"))
        .output()
        .await
        .expect("run the interop script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passes = stdout.lines().filter(|l| l.starts_with("PASS ")).count();
    assert_eq!(passes, 17, "every check ran and passed");
    m.server.stop().await;
}
