//! `--consent-out`: the POS result as FHIR Consent resources, from `ndop reconcile` on the demo's
//! files (checked against the published test table, parsed by `fhir.resources`: R4B for the R4
//! output, STU3 for the STU3 output), incrementally with `--previous`, and from `ndop run`
//! against a real mock-mesh.

mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use processor::consent::consent_id;
use serde_json::Value;

use util::ndop;

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

/// The published INT patients with an opt-out.
fn published_opted_out() -> Vec<String> {
    mock_mesh::pos::PUBLISHED_TEST_PATIENTS
        .lines()
        .filter_map(|l| match l.split(',').collect::<Vec<_>>().as_slice() {
            ["int", n, "yes"] => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

/// NHS number → status of every Consent in an NDJSON file or a Bundle, checking the id and
/// the `dateTime` of each.
fn statuses(path: &Path, date_time: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    let resources: Vec<Value> = if text.starts_with(r#"{"resourceType":"Bundle""#) {
        let b: Value = serde_json::from_str(&text).unwrap();
        b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"].clone())
            .collect()
    } else {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    resources
        .into_iter()
        .map(|r| {
            let reference = r["patient"]["reference"].as_str().unwrap();
            let nhs = reference.rsplit('/').next().unwrap().to_string();
            assert_eq!(r["id"], consent_id(nhs.parse().unwrap()));
            assert_eq!(r["dateTime"], date_time);
            (nhs, r["status"].as_str().unwrap().to_string())
        })
        .collect()
}

/// The venv python (`tools/python-env.sh`), parsing `file` as FHIR `version` Consents.
fn fhir_resources_parse(version: &str, file: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let env = std::process::Command::new("bash")
        .arg(root.join("tools/python-env.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(env.status.success(), "tools/python-env.sh failed");
    let python = String::from_utf8(env.stdout).unwrap();
    let out = ok(std::process::Command::new(python.trim())
        .arg(root.join("mock-mesh/tests/interop/fhir_client_flow.py"))
        .args(["parse", version])
        .arg(file)
        .output()
        .unwrap());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn reconcile_writes_consents_for_the_published_patients_and_increments() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    ok(ndop(&[
        "demo",
        "--work",
        work.to_str().unwrap(),
        "--patients",
        "200",
    ]));
    let requests = files(&work.join("prepared"), ".dat");
    let responses = files(&work.join("replies"), ".cleaned.dat");
    assert_eq!(responses.len(), 1);
    let when = "2025-02-27T14:10:16.000+00:00";
    let reconcile = |out: &str, response: &Path, extra: &[&str]| {
        let mut args = vec!["reconcile", "--request"];
        args.extend(requests.iter().map(|p| p.to_str().unwrap()));
        args.extend(["--response", response.to_str().unwrap()]);
        args.extend(["--out", out, "--checked-at", "2025-02-27T14:10:16Z"]);
        args.extend(extra);
        ok(ndop(&args))
    };
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();

    // R4 NDJSON: exactly the demo's opted-out patients (the published INT opt-outs among
    // them, none of the INT patients without one), active
    reconcile(&d("r1"), &responses[0], &["--consent-out", &d("r4.ndjson")]);
    let got = statuses(&dir.path().join("r4.ndjson"), when);
    let opted_out = std::fs::read_to_string(work.join("reconciled/opted-out.txt")).unwrap();
    let want: BTreeMap<String, String> = opted_out
        .lines()
        .map(|n| (n.to_string(), "active".to_string()))
        .collect();
    assert_eq!(got, want);
    for (env, n, out) in mock_mesh::pos::PUBLISHED_TEST_PATIENTS
        .lines()
        .filter_map(|l| match l.split(',').collect::<Vec<_>>().as_slice() {
            [e, n, o] => Some((e.to_string(), n.to_string(), *o == "yes")),
            _ => None,
        })
        .filter(|(e, _, _)| e == "int")
    {
        assert_eq!(got.contains_key(&n), out, "{env} patient {n}");
    }
    let parsed = fhir_resources_parse("r4", &dir.path().join("r4.ndjson"));
    assert!(
        parsed.starts_with(&format!("PARSED {} ", want.len())),
        "{parsed}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("r4.ndjson"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // STU3 Bundle, full state: every patient sent has a Consent
    reconcile(
        &d("r1b"),
        &responses[0],
        &[
            "--consent-out",
            &d("stu3.json"),
            "--consent-format",
            "bundle",
            "--fhir",
            "stu3",
            "--consent-state",
            "full",
        ],
    );
    let full = statuses(&dir.path().join("stu3.json"), when);
    assert_eq!(full.values().filter(|s| *s == "active").count(), want.len());
    let sent = std::fs::read_to_string(&requests[0])
        .unwrap()
        .lines()
        .count();
    assert_eq!(full.len(), sent);
    let parsed = fhir_resources_parse("stu3", &dir.path().join("stu3.json"));
    assert!(parsed.starts_with(&format!("PARSED {sent} ")), "{parsed}");

    // incremental: one opted-out patient is returned now → inactive; the rest stay active
    let withdrawn = &published_opted_out()[0];
    let mut returned = std::fs::read_to_string(&responses[0]).unwrap();
    returned.push_str(&format!("{withdrawn},\r\n"));
    let later = dir.path().join("later.dat");
    std::fs::write(&later, returned).unwrap();
    reconcile(
        &d("r2"),
        &later,
        &["--consent-out", &d("inc.ndjson"), "--previous", &d("r1")],
    );
    let inc = statuses(&dir.path().join("inc.ndjson"), when);
    assert_eq!(inc.len(), want.len());
    assert_eq!(inc[withdrawn], "inactive");
    assert_eq!(
        inc.values().filter(|s| *s == "active").count(),
        want.len() - 1
    );

    // refusals: an existing output, --previous without opted-out.txt, full with --previous
    let again = ndop(&[
        "reconcile",
        "--request",
        requests[0].to_str().unwrap(),
        "--response",
        responses[0].to_str().unwrap(),
        "--out",
        &d("r3"),
        "--consent-out",
        &d("r4.ndjson"),
    ]);
    assert!(!again.status.success());
    let bad = ndop(&[
        "reconcile",
        "--request",
        requests[0].to_str().unwrap(),
        "--response",
        responses[0].to_str().unwrap(),
        "--out",
        &d("r4"),
        "--consent-out",
        &d("x.ndjson"),
        "--previous",
        dir.path().to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("opted-out.txt"));
}

#[test]
fn run_passes_the_consent_flags_through() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mesh = rt
        .block_on(mock_mesh::MockMesh::start(mock_mesh::Config::default()))
        .unwrap();
    // the published INT patients as an extract
    let mut csv = String::from("id,nhs_number\n");
    for (i, l) in mock_mesh::pos::PUBLISHED_TEST_PATIENTS.lines().enumerate() {
        if let ["int", n, _] = l.split(',').collect::<Vec<_>>().as_slice() {
            csv.push_str(&format!("{i},{n}\n"));
        }
    }
    let extract = dir.path().join("extract.csv");
    std::fs::write(&extract, csv).unwrap();
    let work = dir.path().join("work");
    let consents = work.join("consents.ndjson");
    ok(ndop(&[
        "run",
        extract.to_str().unwrap(),
        "--column",
        "nhs_number",
        "--work",
        work.to_str().unwrap(),
        "--mesh",
        &mesh.base_url(),
        "--mailbox",
        "X26ABC1",
        "--interval",
        "0.05",
        "--timeout",
        "30",
        "--consent-out",
        consents.to_str().unwrap(),
        "--consent-state",
        "full",
        "--fhir",
        "stu3",
    ]));
    let text = std::fs::read_to_string(&consents).unwrap();
    let active: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["status"] == "active")
        .map(|r| {
            r["patient"]["reference"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(active, published_opted_out());
    assert_eq!(text.lines().count(), 20);
    rt.block_on(mesh.stop());
}
