//! Consent resources from a reconciliation (`ndop-fhir.md` §9): the POS result as FHIR, for a
//! data exchange's own FHIR store.
//!
//! Per NHS number of a completed submission: sent and not returned (opted out) → `status`
//! `active`; sent and returned → nothing by default, `inactive` with [`ConsentState::Full`]
//! (Dorset ICS's full-state refresh), or `inactive` only for numbers that were opted out in a
//! previous reconciliation (incremental, [`write_consents`]'s `previous`). Numbers returned but
//! never sent are not written (reconcile reports them).
//!
//! Shapes: **R4 UK Core** Consent ([`FhirVersion::R4`], the default; Dorset's template shape,
//! `meta.source` its id of NHS England) or STU3 in the NDOP API's element layout
//! ([`FhirVersion::Stu3`]: demographics URL, X26, policy, purpose). A POS result does not say how
//! or by whom an opt-out was set, so the STU3 resource leaves out what NDOP-Consent-1 requires
//! for that (the opt-out source extension, `consentingParty`) and claims no profile: it records
//! a check, it is not for POSTing to Spine. `dateTime` is when the POS answered, so a reader can
//! apply its maximum cache age; nothing else about the patient is written.
//!
//! The id is deterministic per patient, Dorset's: the .NET `Guid` of the first 16 bytes of
//! SHA-256 of `Consent_X26_NDOP_{NHS number}` (Microsoft FHIR-Converter's `generate_uuid` over
//! `generate_id_input`), so re-running a batch, or Dorset's own loader, writes the same
//! resources. Output: NDJSON (one Consent per line) or a transaction `Bundle` of
//! `PUT Consent/{id}` entries; written under a temporary name (0600), synced, renamed.

use crate::error::{Error, Result};
use crate::files::AtomicFile;
use crate::seen::NumberSet;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::Path;

/// FHIR version of the resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FhirVersion {
    /// R4 UK Core Consent (what data exchanges store).
    R4,
    /// STU3, the NDOP FHIR API's element layout.
    Stu3,
}

/// File format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentFormat {
    /// One Consent per line.
    Ndjson,
    /// One transaction Bundle of `PUT Consent/{id}` entries.
    Bundle,
}

/// Which patients get a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsentState {
    /// `active` for each opted-out number (plus `inactive` for withdrawn ones with a previous
    /// reconciliation).
    OptedOut,
    /// Also `inactive` for every number sent and returned.
    Full,
}

/// What to write.
#[derive(Debug, Clone)]
pub struct ConsentOptions {
    /// FHIR version.
    pub fhir: FhirVersion,
    /// NDJSON or Bundle.
    pub format: ConsentFormat,
    /// Opted-out only, or the full state.
    pub state: ConsentState,
    /// When the POS answered (RFC 3339), written as every Consent's `dateTime`.
    pub checked_at: chrono::DateTime<chrono::FixedOffset>,
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct ConsentSummary {
    /// The file.
    pub path: String,
    /// FHIR version.
    pub fhir: FhirVersion,
    /// Format.
    pub format: ConsentFormat,
    /// Consents with `status` `active` (opted out).
    pub active: u64,
    /// Consents with `status` `inactive`.
    pub inactive: u64,
    /// The `dateTime` of every Consent (the newest, when they differ: see
    /// [`write_consents_dated`]).
    pub date_time: String,
    /// The oldest `dateTime` written (the same as `date_time` when there is one).
    pub oldest_date_time: String,
}

/// Dorset's deterministic Consent id for an NHS number (see the module docs).
pub fn consent_id(nhs: u64) -> String {
    let mut buf = [0u8; 36];
    dotnet_guid(format!("Consent_X26_NDOP_{nhs:010}").as_bytes(), &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The .NET `Guid` text of the first 16 bytes of SHA-256 of `input` (first three groups
/// little-endian, as `new Guid(byte[])` reads them).
fn dotnet_guid(input: &[u8], out: &mut [u8; 36]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let h = Sha256::digest(input);
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    let mut o = 0;
    for (i, &b) in order.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = HEX[(h[b] >> 4) as usize];
        out[o + 1] = HEX[(h[b] & 15) as usize];
        o += 2;
    }
}

/// One piece of a record template.
#[derive(Debug, Clone)]
enum Piece {
    Text(Vec<u8>),
    Id,
    Status,
    Nhs,
}

const ID: &str = "~~ID~~";
const STATUS: &str = "~~STATUS~~";
const NHS: &str = "~~NHS~~";

/// The resource with placeholders for id, status and NHS number.
fn resource(fhir: FhirVersion, date_time: &str) -> Value {
    let policy = json!([{
        "authority": "https://www.gov.uk/",
        "uri": "https://www.gov.uk/government/uploads/system/uploads/attachment_data/file/535024/data-security-review.PDF"
    }]);
    let display = "Limiting access to confidential patient information";
    match fhir {
        FhirVersion::R4 => {
            let mut source = [0u8; 36];
            dotnet_guid(b"Organization_X26_ODS_x26", &mut source);
            json!({
                "resourceType": "Consent",
                "id": ID,
                "meta": {
                    "profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Consent"],
                    "source": format!("Organization/{}", String::from_utf8_lossy(&source)),
                },
                "status": STATUS,
                "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy", "display": "Privacy Consent"}]},
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "INFA", "display": "information access"}]}],
                "patient": {"reference": format!("Patient/{NHS}")},
                "dateTime": date_time,
                "policy": policy,
                "provision": {"purpose": [{"system": "http://snomed.info/sct", "code": "370856009", "display": display}]},
            })
        }
        FhirVersion::Stu3 => json!({
            "resourceType": "Consent",
            "id": ID,
            "status": STATUS,
            "patient": {"reference": format!("https://demographics.spineservices.nhs.uk/STU3/Patient/{NHS}")},
            "dateTime": date_time,
            "organization": [{"reference": "https://directory.spineservices.nhs.uk/STU3/Organization/X26"}],
            "policy": policy,
            "purpose": [{"system": "https://snomed.info/sct", "code": "370856009", "display": display}],
        }),
    }
}

/// Splits the serialised `template` at the placeholders.
fn pieces(template: &Value) -> Vec<Piece> {
    let text = template.to_string();
    let mut out = Vec::new();
    let mut rest = text.as_str();
    loop {
        let next = [(ID, Piece::Id), (STATUS, Piece::Status), (NHS, Piece::Nhs)]
            .into_iter()
            .filter_map(|(mark, p)| rest.find(mark).map(|i| (i, mark, p)))
            .min_by_key(|(i, _, _)| *i);
        match next {
            Some((i, mark, p)) => {
                out.push(Piece::Text(rest.as_bytes()[..i].to_vec()));
                out.push(p);
                rest = &rest[i + mark.len()..];
            }
            None => {
                out.push(Piece::Text(rest.as_bytes().to_vec()));
                return out;
            }
        }
    }
}

/// Writes one record per patient from a template.
struct Writer {
    file: AtomicFile,
    /// The record template per check time.
    records: Vec<Vec<Piece>>,
    buf: Vec<u8>,
    first: bool,
    bundle: bool,
}

impl Writer {
    fn put(&mut self, nhs: u64, active: bool, date: usize) -> Result<()> {
        let mut id = [0u8; 36];
        let mut digits = [0u8; 10];
        crate::nhs::write_digits(nhs, &mut digits);
        let mut input = *b"Consent_X26_NDOP_0000000000";
        input[17..].copy_from_slice(&digits);
        dotnet_guid(&input, &mut id);
        if self.bundle && !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        for p in &self.records[date] {
            match p {
                Piece::Text(t) => self.buf.extend_from_slice(t),
                Piece::Id => self.buf.extend_from_slice(&id),
                Piece::Status => {
                    self.buf
                        .extend_from_slice(if active { b"active" } else { b"inactive" })
                }
                Piece::Nhs => self.buf.extend_from_slice(&digits),
            }
        }
        if !self.bundle {
            self.buf.push(b'\n');
        }
        if self.buf.len() >= 1 << 20 {
            self.file.write(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Writes the Consents of one reconciliation to `path` (which must not exist): `active` for
/// each number in `requested` and not in `returned`; `inactive` for each number in both when
/// `opts.state` is [`ConsentState::Full`], otherwise for each number in both that is in
/// `previous` (the opted-out numbers of an earlier reconciliation), if given.
pub fn write_consents(
    path: &Path,
    requested: &NumberSet,
    returned: &NumberSet,
    previous: Option<&NumberSet>,
    opts: &ConsentOptions,
) -> Result<ConsentSummary> {
    let dates = [opts.checked_at];
    write_consents_dated(path, requested, returned, previous, opts, &dates, |_| {
        Some(0)
    })
}

/// [`write_consents`] where numbers were checked at different times (a results cache, where
/// the newest check of each number decides): each Consent's `dateTime` is
/// `dates[date_of(number)]`, and `opts.checked_at` is not used. A number `date_of` gives no
/// time for is an error (nothing is left behind): a Consent must say when it was checked.
pub fn write_consents_dated(
    path: &Path,
    requested: &NumberSet,
    returned: &NumberSet,
    previous: Option<&NumberSet>,
    opts: &ConsentOptions,
    dates: &[chrono::DateTime<chrono::FixedOffset>],
    date_of: impl Fn(u64) -> Option<usize>,
) -> Result<ConsentSummary> {
    let (Some(oldest), Some(newest)) = (dates.iter().min(), dates.iter().max()) else {
        return Err(Error::Usage(
            "no check time to date the Consents with".into(),
        ));
    };
    let text_of = |d: &chrono::DateTime<chrono::FixedOffset>| {
        d.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string()
    };
    let (oldest_date_time, date_time) = (text_of(oldest), text_of(newest));
    let texts: Vec<String> = dates.iter().map(text_of).collect();
    let bundle = opts.format == ConsentFormat::Bundle;
    let records = texts
        .iter()
        .map(|t| {
            let template = resource(opts.fhir, t);
            if bundle {
                pieces(
                    &json!({"resource": template, "request": {"method": "PUT", "url": format!("Consent/{ID}")}}),
                )
            } else {
                pieces(&template)
            }
        })
        .collect();
    let mut w = Writer {
        file: AtomicFile::create(path)?,
        records,
        buf: Vec::with_capacity(2 << 20),
        first: true,
        bundle,
    };
    if bundle {
        w.buf
            .extend_from_slice(br#"{"resourceType":"Bundle","type":"transaction","entry":["#);
    }
    let mut failed: Option<Error> = None;
    let (mut active, mut inactive) = (0u64, 0u64);
    let put = |w: &mut Writer, n: u64, active: bool| match date_of(n) {
        Some(i) if i < dates.len() => w.put(n, active, i),
        _ => Err(Error::Usage(
            "a number has no check time to date its Consent with (the cache is inconsistent: \
             run ndop cache status)"
                .into(),
        )),
    };
    requested.for_each_not_in(returned, |n| {
        if failed.is_none() {
            match put(&mut w, n, true) {
                Ok(()) => active += 1,
                Err(e) => failed = Some(e),
            }
        }
    });
    if opts.state == ConsentState::Full || previous.is_some() {
        returned.for_each(|n| {
            let wanted = requested.contains(n)
                && (opts.state == ConsentState::Full || previous.is_some_and(|p| p.contains(n)));
            if wanted && failed.is_none() {
                match put(&mut w, n, false) {
                    Ok(()) => inactive += 1,
                    Err(e) => failed = Some(e),
                }
            }
        });
    }
    if bundle {
        w.buf.extend_from_slice(b"]}\n");
    }
    let result = match failed {
        Some(e) => Err(e),
        None => w.file.write(&w.buf),
    };
    if let Err(e) = result {
        let _ = std::fs::remove_file(w.file.tmp());
        return Err(e);
    }
    w.file.commit()?;
    crate::files::sync_dir(&crate::files::parent_dir(path))?;
    Ok(ConsentSummary {
        path: path.display().to_string(),
        fhir: opts.fhir,
        format: opts.format,
        active,
        inactive,
        date_time,
        oldest_date_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(numbers: &[u64]) -> NumberSet {
        let s = NumberSet::new();
        for &n in numbers {
            s.insert(n);
        }
        s
    }

    #[test]
    fn ids_are_dorsets() {
        // computed independently: Python uuid.UUID(bytes_le=sha256(b"Consent_X26_NDOP_…")[:16])
        assert_eq!(
            consent_id(9990000018),
            "cc0d640a-6fbb-aa76-1029-f38649acd5de"
        );
        assert_eq!(
            consent_id(9434765919),
            "220d1ca5-dff4-6bc5-30b3-3cbf40bc9089"
        );
        let mut org = [0u8; 36];
        dotnet_guid(b"Organization_X26_ODS_x26", &mut org);
        // Dorset's fixture (Consent-01.json) meta.source
        assert_eq!(&org, b"cec48f09-f30e-cb9f-adc1-50e79d71796d");
    }

    #[test]
    fn ndjson_bundle_full_and_incremental() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (9434765919, 9990000018, 9990000026);
        assert!(crate::nhs::check_digit_of_prefix((c / 10) as u32) == Some((c % 10) as u8));
        let requested = set(&[a, b, c]);
        let returned = set(&[b, c]);
        let opts = ConsentOptions {
            fhir: FhirVersion::R4,
            format: ConsentFormat::Ndjson,
            state: ConsentState::OptedOut,
            checked_at: chrono::DateTime::parse_from_rfc3339("2025-02-27T14:10:16Z").unwrap(),
        };
        let p = dir.path().join("c.ndjson");
        let s = write_consents(&p, &requested, &returned, None, &opts).unwrap();
        assert_eq!((s.active, s.inactive), (1, 0));
        let text = std::fs::read_to_string(&p).unwrap();
        let v: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["id"], consent_id(a));
        assert_eq!(v["status"], "active");
        assert_eq!(v["patient"]["reference"], "Patient/9434765919");
        assert_eq!(v["dateTime"], "2025-02-27T14:10:16.000+00:00");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // an existing file is never overwritten
        assert!(write_consents(&p, &requested, &returned, None, &opts).is_err());

        // incremental: b was opted out before and is returned now → inactive; c is untouched
        let p = dir.path().join("inc.json");
        let bundle = ConsentOptions {
            fhir: FhirVersion::Stu3,
            format: ConsentFormat::Bundle,
            ..opts.clone()
        };
        let s = write_consents(&p, &requested, &returned, Some(&set(&[b])), &bundle).unwrap();
        assert_eq!((s.active, s.inactive), (1, 1));
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["type"], "transaction");
        let e = &v["entry"][1];
        assert_eq!(e["resource"]["status"], "inactive");
        assert_eq!(e["request"]["url"], format!("Consent/{}", consent_id(b)));
        assert_eq!(
            e["resource"]["patient"]["reference"],
            "https://demographics.spineservices.nhs.uk/STU3/Patient/9990000018"
        );

        // full state: every number sent gets a resource
        let p = dir.path().join("full.ndjson");
        let full = ConsentOptions {
            state: ConsentState::Full,
            ..opts
        };
        let s = write_consents(&p, &requested, &returned, None, &full).unwrap();
        assert_eq!((s.active, s.inactive), (1, 2));
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 3);
    }
}
