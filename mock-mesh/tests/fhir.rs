//! The NDOP FHIR API under `/STU3/`: driven by a FHIR client nobody here wrote (Python
//! `fhirclient` 3.2.0, resources checked with `fhir.resources` 8), and one truth with the POS:
//! Consents set through the API decide what the INT POS returns, before and after a restart.

mod common;
use common::*;

/// The venv python (`tools/python-env.sh`: fhirclient 3.2.0 and fhir.resources 8.3.0).
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
async fn fhirclient_drives_the_ndop_consent_api() {
    let m = Mesh::default().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new(python())
        .arg(root.join("tests/interop/fhir_client_flow.py"))
        .arg("api")
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
    assert_eq!(passes, 13, "every check ran and passed");
    m.server.stop().await;
}

const PATIENT: &str = "https://demographics.spineservices.nhs.uk/STU3/Patient/";

fn b64url(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = c.iter().fold(0u32, |a, &x| (a << 8) | u32::from(x)) << (8 * (3 - c.len()));
        for i in 0..=c.len() {
            out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// An NDOP request: Spine headers and a new unsigned JWT.
fn fhir(m: &Mesh, method: Method, path: &str) -> RequestBuilder {
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "iss": "https://citizen-id.nhs.uk", "sub": "tests", "aud": "https://clinicals.spineservices.nhs.uk",
        "exp": now + 300, "iat": now, "reason_for_request": "patientaccess",
        "scope": "patient/consent.read patient/consent.write",
        "requesting_system": "https://fhir.nhs.uk/Id/accredited-system|200000000205",
    });
    let jwt = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    );
    m.http
        .request(method, m.url(&format!("/STU3/{path}")))
        .header("accept", "application/fhir+json")
        .header("ssp-traceid", uuid::Uuid::new_v4().to_string())
        .header("ssp-from", "200000000205")
        .header("ssp-to", "200000001115")
        .header(
            "ssp-interactionid",
            "urn:nhs:names:services:nationaldataoptout:fhir:rest:consent",
        )
        .header("authorization", format!("Bearer {jwt}"))
}

/// The patient's Consent (search), if any.
async fn consent_of(m: &Mesh, nhs: &str) -> Option<Value> {
    let r = fhir(m, Method::GET, &format!("Consent?patient={PATIENT}{nhs}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let b = json(r).await;
    assert_eq!(b["type"], "searchset");
    b["entry"][0].get("resource").cloned()
}

/// Sets the patient's opt-out through the API: creates or updates their Consent.
async fn set_opt_out(m: &Mesh, nhs: &str, active: bool) {
    let status = if active { "active" } else { "inactive" };
    let (method, path, mut body) = match consent_of(m, nhs).await {
        Some(c) => (
            Method::PUT,
            format!("Consent/{}", c["id"].as_str().unwrap()),
            c,
        ),
        None => {
            let reference = serde_json::json!({"reference": format!("{PATIENT}{nhs}")});
            let c = serde_json::json!({
                "resourceType": "Consent",
                "extension": [{"url": "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-NDOP-OptOutSource-1",
                    "valueCodeableConcept": {"coding": [{"system": "https://fhir.nhs.uk/STU3/CodeSystem/NDOP-OptOutSource-1", "code": "CC"}]}}],
                "patient": reference, "consentingParty": [reference],
                "organization": [{"reference": "https://directory.spineservices.nhs.uk/STU3/Organization/X26"}],
                "policy": [{"authority": "https://www.gov.uk/", "uri": "https://www.gov.uk/government/uploads/system/uploads/attachment_data/file/535024/data-security-review.PDF"}],
                "purpose": [{"system": "https://snomed.info/sct", "code": "370856009"}],
            });
            (Method::POST, "Consent".to_string(), c)
        }
    };
    body["status"] = status.into();
    body["dateTime"] = chrono::Utc::now().to_rfc3339().into();
    let r = fhir(m, method.clone(), &path)
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let want = if method == Method::POST { 201 } else { 200 };
    assert_eq!(r.status().as_u16(), want, "{}", r.text().await.unwrap());
}

/// Submits `numbers` to the INT POS and returns the numbers in its result, in order.
async fn pos_answer(m: &Mesh, numbers: &[&str], local_id: &str) -> Vec<String> {
    let file: String = numbers.iter().map(|n| format!("{n},\r\n")).collect();
    submit(m, POS_INT, file.into_bytes(), local_id, false).await;
    let ids = m.wait_for(A, 2).await;
    let _job = collect(m, A, &ids[0]).await;
    let (_, result) = collect(m, A, &ids[1]).await;
    String::from_utf8(result)
        .unwrap()
        .lines()
        .map(|l| l.trim_end_matches(',').to_string())
        .collect()
}

fn test_number(from: u64) -> String {
    (from..)
        .map(|n| n.to_string())
        .find(|s| mock_mesh::pos::is_valid_nhs_number(s.as_bytes()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pos_answers_from_the_consents_the_api_sets_before_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mesh::start(Config::default().with_store_dir(dir.path())).await;
    let int = patients("int");
    let seeded_out = int.iter().find(|(_, out)| *out).unwrap().0;
    let never_out = int.iter().find(|(_, out)| !out).unwrap().0;
    let new_out = test_number(9_990_000_100);
    let no_consent = test_number(9_990_000_200);
    // the published state is in the API from the start
    assert_eq!(
        consent_of(&m, seeded_out).await.unwrap()["status"],
        "active"
    );
    assert!(consent_of(&m, &no_consent).await.is_none());

    set_opt_out(&m, &new_out, true).await; // a new opt-out
    set_opt_out(&m, seeded_out, false).await; // a withdrawn one
    let sent = [new_out.as_str(), seeded_out, never_out, no_consent.as_str()];
    assert_eq!(
        pos_answer(&m, &sent, "FHIR-1").await,
        [seeded_out, never_out, no_consent.as_str()]
    );

    m.server.stop().await;
    let m = Mesh::start(Config::default().with_store_dir(dir.path())).await;
    let c = consent_of(&m, &new_out).await.unwrap();
    assert_eq!(c["status"], "active");
    let c = consent_of(&m, seeded_out).await.unwrap();
    assert_eq!(
        (c["status"].as_str(), c["meta"]["versionId"].as_str()),
        (Some("inactive"), Some("2"))
    );
    let mut again = sent;
    again.reverse(); // other content: not refused as a duplicate upload
    assert_eq!(
        pos_answer(&m, &again, "FHIR-2").await,
        [no_consent.as_str(), never_out, seeded_out]
    );
    // withdrawing the new opt-out brings the number back in the next answer
    set_opt_out(&m, &new_out, false).await;
    assert_eq!(
        pos_answer(&m, &[new_out.as_str()], "FHIR-3").await,
        [new_out.as_str()]
    );
    m.server.stop().await;
}
