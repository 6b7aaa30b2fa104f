//! The NDOP-Consent-1 rules (`ndop-fhir.md` §3, §8) a created or updated Consent must meet.
//! Each refusal names the element (FHIRPath) and what a valid value looks like. Where the guide
//! contradicts itself the mock accepts both readings: the proxy extension under either URL, its
//! role coding's system as the CodeSystem or the ValueSet, the SNOMED system with `http` or
//! `https`, any organisation code that is not a GP practice code.

use serde_json::Value;

use super::outcome::FhirError;
use crate::pos::is_valid_nhs_number;

/// The profile a Consent claims (if it claims any).
pub(crate) const CONSENT_PROFILE: &str =
    "https://fhir.nhs.uk/STU3/StructureDefinition/NDOP-Consent-1";
/// The prefix of every patient reference.
pub(crate) const PATIENT_BASE: &str = "https://demographics.spineservices.nhs.uk/STU3/Patient/";
const ORG_BASE: &str = "https://directory.spineservices.nhs.uk/STU3/Organization/";
const SOURCE_EXT: &str =
    "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-NDOP-OptOutSource-1";
const SOURCE_SYSTEM: &str = "https://fhir.nhs.uk/STU3/CodeSystem/NDOP-OptOutSource-1";
const PROXY_EXTS: [&str; 2] = [
    "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-NDOP-Proxy-1",
    "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-NDOP-ProxyRole-1",
];
const PROXY_SYSTEMS: [&str; 2] = [
    "https://fhir.nhs.uk/STU3/CodeSystem/NDOP-ProxyRole-1",
    "https://fhir.nhs.uk/STU3/ValueSet/NDOP-ProxyRole-1",
];
const NIC_EXT: &str = "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-NDOP-NICReference-1";
const SOURCE_CODES: [&str; 5] = ["OP", "PFSP", "FN", "CC", "PP"];
const PROXY_CODES: [&str; 3] = ["GUARDIAN", "POA", "COURTDEP"];
/// SNOMED CT "Limiting access to confidential patient information".
pub(crate) const PURPOSE_CODE: &str = "370856009";

/// What the server needs from a valid Consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checked {
    /// The patient's NHS number.
    pub(crate) nhs: u64,
    /// `status` `active`: opted out.
    pub(crate) active: bool,
}

fn invalid(element: &str, issue: &'static str, what: &str) -> FhirError {
    FhirError::invalid(element, issue, format!("{element}: {what}"))
}

fn missing(element: &str, what: &str) -> FhirError {
    invalid(element, "required", &format!("missing; {what}"))
}

/// The NHS number of a patient reference `https://demographics.spineservices.nhs.uk/STU3/Patient/{nhs}`.
pub(crate) fn patient_number(reference: &str, element: &str) -> Result<u64, FhirError> {
    let digits = reference.strip_prefix(PATIENT_BASE).ok_or_else(|| {
        invalid(
            element,
            "value",
            &format!("incorrect format; use {PATIENT_BASE}{{NHS number}}"),
        )
    })?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            element,
            "value",
            "incorrect format; the NHS number is 10 digits with no spaces or hyphens",
        ));
    }
    if !is_valid_nhs_number(digits.as_bytes()) {
        return Err(FhirError::invalid_nhs_number(element));
    }
    Ok(digits.parse().unwrap_or_default())
}

/// The codes of a `CodeableConcept`'s codings whose system is one of `systems`.
fn codes<'a>(cc: &'a Value, systems: &[&str]) -> Vec<&'a str> {
    cc.get("coding")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| {
            c.get("system")
                .and_then(Value::as_str)
                .is_some_and(|s| systems.contains(&s))
        })
        .filter_map(|c| c.get("code").and_then(Value::as_str))
        .collect()
}

fn reference_of(v: &Value) -> Option<&str> {
    v.get("reference").and_then(Value::as_str)
}

/// Checks `c` against NDOP-Consent-1. The `id` rules (absent on create, equal to the path on
/// update) are the caller's.
pub(crate) fn consent(c: &Value) -> Result<Checked, FhirError> {
    if c.get("resourceType").and_then(Value::as_str) != Some("Consent") {
        return Err(invalid(
            "Consent.resourceType",
            "structure",
            "must be \"Consent\"",
        ));
    }
    if let Some(profiles) = c.pointer("/meta/profile") {
        let ok = profiles
            .as_array()
            .is_some_and(|p| p.iter().any(|x| x.as_str() == Some(CONSENT_PROFILE)));
        if !ok {
            return Err(invalid(
                "Consent.meta.profile",
                "value",
                &format!("must list {CONSENT_PROFILE} (or be left out)"),
            ));
        }
    }
    let active = match c.get("status").and_then(Value::as_str) {
        Some("active") => true,
        Some("inactive") => false,
        Some(_) => {
            return Err(invalid(
                "Consent.status",
                "code-invalid",
                "must be \"active\" (opted out) or \"inactive\" (opt-out withdrawn)",
            ))
        }
        None => return Err(missing("Consent.status", "\"active\" or \"inactive\"")),
    };
    let patient = c
        .get("patient")
        .and_then(reference_of)
        .ok_or_else(|| missing("Consent.patient.reference", "a reference to the patient"))?;
    let nhs = patient_number(patient, "Consent.patient.reference")?;
    match c.get("dateTime").and_then(Value::as_str) {
        None => {
            return Err(missing(
                "Consent.dateTime",
                "date, time with seconds and zone",
            ))
        }
        Some(t) if chrono::DateTime::parse_from_rfc3339(t).is_err() => {
            return Err(invalid(
                "Consent.dateTime",
                "value",
                "must be a date, a time with seconds and a time zone (2025-02-27T14:10:16+00:00)",
            ))
        }
        Some(_) => {}
    }
    extensions(c)?;
    organization(c)?;
    policy(c)?;
    purpose(c)?;
    Ok(Checked { nhs, active })
}

/// The opt-out source (mandatory), the proxy (exactly one of it and `consentingParty`) and the
/// NIC reference.
fn extensions(c: &Value) -> Result<(), FhirError> {
    let exts: Vec<&Value> = c
        .get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let url = |e: &Value| {
        e.get("url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let source = exts.iter().find(|e| url(e) == SOURCE_EXT).ok_or_else(|| {
        missing(
            "Consent.extension:optOutSource",
            &format!("an extension {SOURCE_EXT} says how the preference was set"),
        )
    })?;
    let src = source.get("valueCodeableConcept").unwrap_or(&Value::Null);
    if !codes(src, &[SOURCE_SYSTEM])
        .iter()
        .any(|c| SOURCE_CODES.contains(c))
    {
        return Err(invalid(
            "Consent.extension:optOutSource.valueCodeableConcept",
            "code-invalid",
            &format!("needs a coding from {SOURCE_SYSTEM}: OP, PFSP, FN, CC or PP"),
        ));
    }
    let proxy = exts.iter().find(|e| PROXY_EXTS.contains(&url(e).as_str()));
    if let Some(p) = proxy {
        let role = p
            .get("extension")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|e| e.get("url").and_then(Value::as_str) == Some("role"));
        let ok = role
            .and_then(|r| r.get("valueCodeableConcept"))
            .is_some_and(|cc| {
                codes(cc, &PROXY_SYSTEMS)
                    .iter()
                    .any(|c| PROXY_CODES.contains(c))
            });
        if !ok {
            return Err(invalid(
                "Consent.extension:proxy.extension:role",
                "code-invalid",
                "needs a role coding GUARDIAN, POA or COURTDEP (NDOP-ProxyRole-1)",
            ));
        }
    }
    if let Some(n) = exts.iter().find(|e| url(e) == NIC_EXT) {
        if !n.get("valueString").is_some_and(Value::is_string) {
            return Err(invalid(
                "Consent.extension:nicReference.valueString",
                "value",
                "must be a string (the contact-centre case reference)",
            ));
        }
    }
    let parties = c.get("consentingParty").and_then(Value::as_array);
    let has_party = parties.is_some_and(|p| !p.is_empty());
    if let Some(p) = parties {
        if p.iter().any(|x| reference_of(x).is_none()) {
            return Err(invalid(
                "Consent.consentingParty",
                "value",
                "each consenting party is a reference (usually the patient's demographics URL)",
            ));
        }
    }
    match (has_party, proxy.is_some()) {
        (true, true) => Err(invalid(
            "Consent.consentingParty",
            "business-rule",
            "must not be present together with the proxy extension: send one of them",
        )),
        (false, false) => Err(invalid(
            "Consent.consentingParty",
            "business-rule",
            "missing; send consentingParty (the patient) or, for a proxy, the proxy extension",
        )),
        _ => Ok(()),
    }
}

fn organization(c: &Value) -> Result<(), FhirError> {
    let orgs = c.get("organization").and_then(Value::as_array);
    let Some(reference) = orgs.and_then(|o| o.first()).and_then(reference_of) else {
        return Err(missing(
            "Consent.organization",
            &format!("a reference {ORG_BASE}X26 (the custodian)"),
        ));
    };
    let code = reference.strip_prefix(ORG_BASE).unwrap_or_default();
    let b = code.as_bytes();
    let gp_practice =
        b.len() == 6 && b[0].is_ascii_uppercase() && b[1..].iter().all(u8::is_ascii_digit);
    if code.is_empty() || gp_practice {
        return Err(invalid(
            "Consent.organization.reference",
            "value",
            &format!("must be {ORG_BASE}{{ODS code}} (X26), and cannot be a GP practice code"),
        ));
    }
    Ok(())
}

fn policy(c: &Value) -> Result<(), FhirError> {
    let ok = c.get("policy").and_then(Value::as_array).is_some_and(|p| {
        !p.is_empty()
            && p.iter().all(|x| {
                x.get("uri")
                    .and_then(Value::as_str)
                    .is_some_and(|u| !u.is_empty())
            })
    });
    if !ok {
        return Err(missing(
            "Consent.policy.uri",
            "the policy (authority https://www.gov.uk/, uri of the National Data Guardian review)",
        ));
    }
    Ok(())
}

fn purpose(c: &Value) -> Result<(), FhirError> {
    let ok = c
        .get("purpose")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|p| {
            matches!(
                p.get("system").and_then(Value::as_str),
                Some("https://snomed.info/sct" | "http://snomed.info/sct")
            ) && p.get("code").and_then(Value::as_str) == Some(PURPOSE_CODE)
        });
    if !ok {
        return Err(missing(
            "Consent.purpose",
            "SNOMED CT 370856009 \"Limiting access to confidential patient information\"",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn example() -> Value {
        super::super::consent::seed_resource(9434765919, true, "2025-02-27T14:10:16+00:00")
    }

    #[test]
    fn the_guide_example_is_valid() {
        assert_eq!(
            consent(&example()),
            Ok(Checked {
                nhs: 9434765919,
                active: true
            })
        );
    }

    #[test]
    fn each_rule_names_its_element() {
        type Edit = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Edit)> = vec![
            (
                "Consent.status",
                Box::new(|c| c["status"] = json!("proposed")),
            ),
            (
                "Consent.status",
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("status");
                }),
            ),
            (
                "Consent.patient.reference",
                Box::new(|c| c["patient"]["reference"] = json!("9434765919")),
            ),
            (
                "Consent.patient.reference",
                Box::new(|c| {
                    c["patient"]["reference"] = json!(format!("{PATIENT_BASE}9434765918"))
                }),
            ),
            (
                "Consent.dateTime",
                Box::new(|c| c["dateTime"] = json!("2025-02-27")),
            ),
            (
                "Consent.consentingParty",
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("consentingParty");
                }),
            ),
            (
                "Consent.consentingParty",
                Box::new(|c| {
                    c["extension"].as_array_mut().unwrap().push(json!({
                    "url": PROXY_EXTS[0],
                    "extension": [{"url": "role", "valueCodeableConcept": {"coding": [{"system": PROXY_SYSTEMS[1], "code": "POA"}]}}]
                }))
                }),
            ),
            (
                "Consent.extension:optOutSource.valueCodeableConcept",
                Box::new(|c| {
                    c["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] = json!("XX")
                }),
            ),
            (
                "Consent.organization.reference",
                Box::new(|c| {
                    c["organization"][0]["reference"] = json!(format!("{ORG_BASE}A81001"))
                }),
            ),
            ("Consent.policy.uri", Box::new(|c| c["policy"] = json!([]))),
            (
                "Consent.purpose",
                Box::new(|c| c["purpose"][0]["code"] = json!("1")),
            ),
        ];
        for (element, edit) in cases {
            let mut c = example();
            edit(&mut c);
            let e = consent(&c).unwrap_err();
            assert_eq!(e.status, 422, "{element}");
            assert_eq!(e.expression.as_deref(), Some(element));
        }
        // a proxy instead of the consenting party is valid
        let mut c = example();
        c.as_object_mut().unwrap().remove("consentingParty");
        c["extension"].as_array_mut().unwrap().push(json!({
            "url": PROXY_EXTS[0],
            "extension": [{"url": "role", "valueCodeableConcept": {"coding": [{"system": PROXY_SYSTEMS[1], "code": "POA"}]}},
                          {"url": "NIC", "valueString": "12345-C"}]
        }));
        assert!(consent(&c).is_ok());
    }
}
