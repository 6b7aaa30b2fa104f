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
use crate::nhs::PrefixDigits;
use crate::seen::NumberSet;
use rayon::prelude::*;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::digest::generic_array::GenericArray;
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
    let mut digits = [0u8; 10];
    crate::nhs::write_digits(nhs, &mut digits);
    let mut buf = [0u8; 36];
    IdBlock::new().id(&digits, &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The .NET `Guid` text of the first 16 bytes of SHA-256 of `input` (first three groups
/// little-endian, as `new Guid(byte[])` reads them).
fn dotnet_guid(input: &[u8], out: &mut [u8; 36]) {
    let h = Sha256::digest(input);
    guid_text(h[..16].try_into().expect("SHA-256 has 32 bytes"), out);
}

/// The .NET `Guid` text of 16 bytes.
#[inline]
fn guid_text(h: &[u8; 16], out: &mut [u8; 36]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
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

/// The id input `Consent_X26_NDOP_{NHS number}` as one SHA-256 block, padded once: the 27
/// bytes fit one 64-byte block, so an id is one compression of this block with the ten digits
/// put in, with no hasher to set up and nothing allocated.
struct IdBlock([u8; 64]);

impl IdBlock {
    /// Where the ten digits go.
    const DIGITS: usize = 17;

    fn new() -> Self {
        const INPUT: &[u8; 27] = b"Consent_X26_NDOP_0000000000";
        let mut block = [0u8; 64];
        block[..27].copy_from_slice(INPUT);
        block[27] = 0x80;
        block[56..].copy_from_slice(&(INPUT.len() as u64 * 8).to_be_bytes());
        IdBlock(block)
    }

    /// Writes the id of the number with these ten ASCII digits.
    #[inline]
    fn id(&mut self, digits: &[u8; 10], out: &mut [u8; 36]) {
        const H0: [u32; 8] = [
            0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
            0x5be0cd19,
        ];
        self.0[Self::DIGITS..Self::DIGITS + 10].copy_from_slice(digits);
        let mut state = H0;
        sha2::compress256(
            &mut state,
            std::slice::from_ref(GenericArray::from_slice(&self.0)),
        );
        let mut h = [0u8; 16];
        for (bytes, word) in h.chunks_exact_mut(4).zip(state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        guid_text(&h, out);
    }
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

/// One Consent (with its separator in the output) as bytes, the id and the NHS number left
/// blank: both have a fixed length, so a record is one copy of the template with the two put in
/// at known offsets.
#[derive(Debug, Clone)]
struct Template {
    bytes: Vec<u8>,
    /// Offsets of the 36-byte id.
    ids: Vec<usize>,
    /// Offsets of the ten-digit NHS number.
    numbers: Vec<usize>,
}

impl Template {
    /// Serialises `value` with `status` in place of its placeholder, between `before` and
    /// `after`.
    fn new(value: &Value, status: &str, before: &[u8], after: &[u8]) -> Template {
        let text = value.to_string();
        let mut t = Template {
            bytes: before.to_vec(),
            ids: Vec::new(),
            numbers: Vec::new(),
        };
        let mut rest = text.as_str();
        while let Some((i, mark)) = [ID, STATUS, NHS]
            .into_iter()
            .filter_map(|mark| rest.find(mark).map(|i| (i, mark)))
            .min_by_key(|(i, _)| *i)
        {
            t.bytes.extend_from_slice(&rest.as_bytes()[..i]);
            match mark {
                ID => {
                    t.ids.push(t.bytes.len());
                    t.bytes.extend_from_slice(&[b'0'; 36]);
                }
                NHS => {
                    t.numbers.push(t.bytes.len());
                    t.bytes.extend_from_slice(&[b'0'; 10]);
                }
                _ => t.bytes.extend_from_slice(status.as_bytes()),
            }
            rest = &rest[i + mark.len()..];
        }
        t.bytes.extend_from_slice(rest.as_bytes());
        t.bytes.extend_from_slice(after);
        t
    }

    /// Appends the record of the number with these digits and this id.
    #[inline]
    fn put(&self, out: &mut Vec<u8>, id: &[u8; 36], digits: &[u8; 10]) {
        let at = out.len();
        out.extend_from_slice(&self.bytes);
        let record = &mut out[at..];
        for &i in &self.ids {
            record[i..i + 36].copy_from_slice(id);
        }
        for &i in &self.numbers {
            record[i..i + 10].copy_from_slice(digits);
        }
    }
}

/// Consents formatted by one task: enough that its bytes (about 1.2–2 MB) go to the kernel
/// in one write, straight from the task's buffer.
const CHUNK: usize = 2048;

/// One Consent to write: the number, the index of its check time, active or not.
type Entry = (u64, usize, bool);

/// Writes the records in order: numbers are gathered in batches, each batch formatted by the
/// rayon pool in chunks while the calling side writes the batch before.
struct Writer {
    out: Out,
    /// Per check time: the templates of an `inactive` and of an `active` Consent.
    templates: Vec<[Template; 2]>,
    batch: Vec<Entry>,
    /// Entries per batch.
    batch_len: usize,
    /// Formatted, not yet written.
    ready: Vec<Vec<u8>>,
}

/// The file and where in it the writing is.
struct Out {
    file: AtomicFile,
    /// True until the first record is written (a Bundle's first entry has no comma before it).
    first: bool,
    bundle: bool,
}

impl Out {
    fn write(&mut self, ready: &[Vec<u8>]) -> Result<()> {
        for bytes in ready.iter().filter(|b| !b.is_empty()) {
            let skip = usize::from(self.bundle && self.first);
            self.first = false;
            self.file.write(&bytes[skip..])?;
        }
        Ok(())
    }
}

impl Writer {
    #[inline]
    fn push(&mut self, entry: Entry) -> Result<()> {
        self.batch.push(entry);
        if self.batch.len() == self.batch_len {
            self.flush()?;
        }
        Ok(())
    }

    /// Formats the batch while writing what was formatted before.
    fn flush(&mut self) -> Result<()> {
        let ready = std::mem::take(&mut self.ready);
        let (out, templates, batch) = (&mut self.out, &self.templates, &self.batch);
        let (written, formatted) = rayon::join(
            || out.write(&ready),
            || {
                batch
                    .par_chunks(CHUNK)
                    .map(|chunk| format(templates, chunk))
                    .collect::<Vec<_>>()
            },
        );
        self.ready = formatted;
        self.batch.clear();
        written
    }

    /// Formats and writes what is left.
    fn finish(&mut self) -> Result<()> {
        self.flush()?;
        let ready = std::mem::take(&mut self.ready);
        self.out.write(&ready)
    }
}

/// The records of `chunk`, in order.
fn format(templates: &[[Template; 2]], chunk: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.len() * templates[0][0].bytes.len().max(1) + 64);
    let mut digits = PrefixDigits::new();
    let mut block = IdBlock::new();
    let mut id = [0u8; 36];
    for &(n, date, active) in chunk {
        let d = digits.digits((n / 10) as u32).unwrap_or_else(|| {
            let mut d = [0u8; 10];
            crate::nhs::write_digits(n, &mut d);
            d
        });
        block.id(&d, &mut id);
        templates[date][usize::from(active)].put(&mut out, &id, &d);
    }
    out
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
    let (before, after): (&[u8], &[u8]) = if bundle { (b",", b"") } else { (b"", b"\n") };
    let templates = texts
        .iter()
        .map(|t| {
            let mut value = resource(opts.fhir, t);
            if bundle {
                value = json!({"resource": value, "request": {"method": "PUT", "url": format!("Consent/{ID}")}});
            }
            ["inactive", "active"].map(|status| Template::new(&value, status, before, after))
        })
        .collect();
    let mut w = Writer {
        out: Out {
            file: AtomicFile::create(path)?,
            first: true,
            bundle,
        },
        templates,
        batch: Vec::new(),
        batch_len: CHUNK * (2 * rayon::current_num_threads()).max(2),
        ready: Vec::new(),
    };
    let mut failed: Option<Error> = None;
    if bundle {
        if let Err(e) = w
            .out
            .file
            .write(br#"{"resourceType":"Bundle","type":"transaction","entry":["#)
        {
            failed = Some(e);
        }
    }
    let (mut active, mut inactive) = (0u64, 0u64);
    let put = |w: &mut Writer, n: u64, active: bool| match date_of(n) {
        Some(i) if i < dates.len() => w.push((n, i, active)),
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
    let result = match failed {
        Some(e) => Err(e),
        None => w.finish().and_then(|()| {
            if bundle {
                w.out.file.write(b"]}\n")
            } else {
                Ok(())
            }
        }),
    };
    if let Err(e) = result {
        let _ = std::fs::remove_file(w.out.file.tmp());
        return Err(e);
    }
    w.out.file.commit()?;
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
