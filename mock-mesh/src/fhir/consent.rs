//! The Consent store: every version of every Consent, one Consent per patient, and the
//! opt-out state the POS reads ([`OptOuts`]).
//!
//! Durable like the MESH messages: with a disk store every new version is appended to
//! `consent.jsonl` in the store directory and fsynced *before* it becomes visible (a failed
//! append is cut back and answered 507 or 500, and nothing changes); recovery reads every
//! version back, skipping a torn fragment. On first start (no journal yet) the store is seeded
//! with the published INT test patients' state: an `active` Consent for each INT patient with
//! an opt-out (`ndop-fhir.md` §0: no Consent means no opt-out).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::outcome::FhirError;
use super::validate::{Checked, CONSENT_PROFILE, PATIENT_BASE, PURPOSE_CODE};
use crate::error::Error;
use crate::pos::PUBLISHED_TEST_PATIENTS;
use crate::store::{parse_lines, Journal};

/// The journal's file name in the store directory.
pub(crate) const JOURNAL_FILE: &str = "consent.jsonl";
/// What every journal record starts with.
const RECORD_START: &[u8] = br#"{"consent":"#;
/// `dateTime` of the seeded Consents (the national data opt-out's launch).
const SEED_TIME: &str = "2018-05-25T00:00:00+00:00";

/// The opt-out state by NHS number (`true` = an `active` Consent: opted out), shared with the
/// POS so that both interfaces answer from one truth.
pub(crate) type OptOuts = Arc<RwLock<HashMap<u64, bool>>>;

/// One stored version, as the journal holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// The Consent's id.
    consent: String,
    vid: u64,
    nhs: u64,
    active: bool,
    /// The resource with `id`, `meta.versionId` and `meta.lastUpdated` set.
    resource: Value,
}

/// One version in memory: the resource pre-serialised (answers are built by concatenation).
#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub(crate) id: Arc<str>,
    pub(crate) vid: u64,
    pub(crate) json: Arc<str>,
    pub(crate) last_updated: Arc<str>,
}

#[derive(Default)]
struct Inner {
    /// id → versions, oldest first (version n at index n-1).
    by_id: HashMap<Arc<str>, Vec<Version>>,
    /// NHS number → the patient's Consent id.
    by_patient: HashMap<u64, Arc<str>>,
}

/// Every Consent version; see the module docs.
pub(crate) struct ConsentStore {
    inner: RwLock<Inner>,
    /// Held across check, journal append and apply, so two writes never interleave; `None`
    /// inside for a memory store.
    writer: Mutex<Option<Journal>>,
    optouts: OptOuts,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A Consent built from the guide's example (`ndop-fhir.md` §4) for patient `nhs`.
pub(crate) fn seed_resource(nhs: u64, active: bool, date_time: &str) -> Value {
    let patient = format!("{PATIENT_BASE}{nhs:010}");
    json!({
        "resourceType": "Consent",
        "meta": {"profile": [CONSENT_PROFILE]},
        "extension": [{
            "url": "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-NDOP-OptOutSource-1",
            "valueCodeableConcept": {"coding": [{
                "system": "https://fhir.nhs.uk/STU3/CodeSystem/NDOP-OptOutSource-1",
                "code": "OP",
                "display": "Online Process"
            }]}
        }],
        "status": if active { "active" } else { "inactive" },
        "patient": {"reference": patient},
        "dateTime": date_time,
        "consentingParty": [{"reference": patient}],
        "organization": [{"reference": "https://directory.spineservices.nhs.uk/STU3/Organization/X26"}],
        "policy": [{
            "authority": "https://www.gov.uk/",
            "uri": "https://www.gov.uk/government/uploads/system/uploads/attachment_data/file/535024/data-security-review.PDF"
        }],
        "purpose": [{
            "system": "https://snomed.info/sct",
            "code": PURPOSE_CODE,
            "display": "Limiting access to confidential patient information"
        }]
    })
}

/// The INT test patients with an opt-out, as version-1 records.
fn seed(now: &str) -> Vec<Record> {
    PUBLISHED_TEST_PATIENTS
        .lines()
        .skip(1)
        .filter_map(
            |l| match l.trim().split(',').collect::<Vec<_>>().as_slice() {
                ["int", n, "yes"] => n.parse::<u64>().ok(),
                _ => None,
            },
        )
        .map(|nhs| {
            let id = uuid::Uuid::new_v4().to_string();
            Record {
                resource: stamp(seed_resource(nhs, true, SEED_TIME), &id, 1, now),
                consent: id,
                vid: 1,
                nhs,
                active: true,
            }
        })
        .collect()
}

/// Sets the server's elements: `id`, `meta.versionId`, `meta.lastUpdated`.
fn stamp(mut r: Value, id: &str, vid: u64, now: &str) -> Value {
    r["id"] = json!(id);
    if !r.get("meta").is_some_and(Value::is_object) {
        r["meta"] = json!({});
    }
    r["meta"]["versionId"] = json!(vid.to_string());
    r["meta"]["lastUpdated"] = json!(now);
    r
}

impl ConsentStore {
    fn with_records(records: Vec<Record>, writer: Option<Journal>) -> ConsentStore {
        let store = ConsentStore {
            inner: RwLock::new(Inner::default()),
            writer: Mutex::new(writer),
            optouts: Arc::new(RwLock::new(HashMap::new())),
        };
        for r in records {
            store.apply(&r);
        }
        store
    }

    /// A memory store, seeded.
    pub(crate) fn memory(now: &str) -> ConsentStore {
        ConsentStore::with_records(seed(now), None)
    }

    /// Opens (or creates and seeds) `dir/consent.jsonl`. Blocking; call from start-up.
    pub(crate) fn open(dir: &Path, now: &str) -> Result<ConsentStore, Error> {
        let path = dir.join(JOURNAL_FILE);
        let (mut records, clean_len): (Vec<Record>, Option<u64>) = match std::fs::read(&path) {
            Ok(data) => {
                let records: Vec<Record> = parse_lines(&data, RECORD_START);
                let lines = data
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count();
                // every line a whole record and the last one terminated: append as it is
                let clean = lines == records.len() && data.last().is_none_or(|&b| b == b'\n');
                (records, clean.then_some(data.len() as u64))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (seed(now), None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        // a version is only ever appended after its predecessor, but keep the order safe
        records.sort_by_key(|r| r.vid);
        let journal = match clean_len {
            Some(len) => Journal::open_existing(dir, JOURNAL_FILE, len, records.len())?,
            // new, or with a torn fragment: rewritten whole (temporary file, fsync, rename)
            None => Journal::open_file(dir, JOURNAL_FILE, &records)?,
        };
        Ok(ConsentStore::with_records(records, Some(journal)))
    }

    /// The opt-out state the POS reads.
    pub(crate) fn optouts(&self) -> OptOuts {
        self.optouts.clone()
    }

    /// Makes `r` visible (the newest version of its Consent unless an equal or newer one is).
    fn apply(&self, r: &Record) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let id: Arc<str> = match inner.by_id.get_key_value(r.consent.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(r.consent.as_str()),
        };
        let versions = inner.by_id.entry(id.clone()).or_default();
        if versions.last().is_some_and(|v| v.vid >= r.vid) {
            return;
        }
        versions.push(Version {
            id: id.clone(),
            vid: r.vid,
            json: Arc::from(r.resource.to_string()),
            last_updated: Arc::from(
                r.resource
                    .pointer("/meta/lastUpdated")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            ),
        });
        inner.by_patient.insert(r.nhs, id);
        drop(inner);
        self.optouts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(r.nhs, r.active);
    }

    fn read_inner(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The current version of patient `nhs`'s Consent.
    pub(crate) fn by_patient(&self, nhs: u64) -> Option<Version> {
        let inner = self.read_inner();
        let id = inner.by_patient.get(&nhs)?;
        inner.by_id.get(id)?.last().cloned()
    }

    /// Every version of patient `nhs`'s Consent, newest first.
    pub(crate) fn history_of_patient(&self, nhs: u64) -> Vec<Version> {
        let inner = self.read_inner();
        let Some(id) = inner.by_patient.get(&nhs) else {
            return Vec::new();
        };
        inner
            .by_id
            .get(id)
            .map(|v| v.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// Every version of Consent `id`, newest first (`None`: no such Consent).
    pub(crate) fn history(&self, id: &str) -> Option<Vec<Version>> {
        let inner = self.read_inner();
        inner
            .by_id
            .get(id)
            .map(|v| v.iter().rev().cloned().collect())
    }

    /// Version `vid` of Consent `id` (`None` for the current one).
    pub(crate) fn read(&self, id: &str, vid: Option<u64>) -> Option<Version> {
        let inner = self.read_inner();
        let versions = inner.by_id.get(id)?;
        match vid {
            None => versions.last().cloned(),
            Some(n) => versions.iter().find(|v| v.vid == n).cloned(),
        }
    }

    /// Stores a new version (durably first), under the writer lock.
    fn write(&self, record: Record, journal: &mut Option<Journal>) -> Result<(), FhirError> {
        if let Some(j) = journal {
            if let Err(e) = j.append(std::slice::from_ref(&record)) {
                tracing::error!(error = %e, "could not store a Consent version");
                return Err(FhirError::storage(e.is_storage_full()));
            }
        }
        self.apply(&record);
        Ok(())
    }

    /// Creates a Consent (`checked` from a valid resource without an id). Refused with 422
    /// `DUPLICATE_REJECTED` if the patient has one. Blocking (fsync).
    pub(crate) fn create(
        &self,
        resource: Value,
        checked: Checked,
        now: &str,
    ) -> Result<Version, FhirError> {
        let mut writer = lock(&self.writer);
        if self.read_inner().by_patient.contains_key(&checked.nhs) {
            return Err(FhirError::duplicate());
        }
        let id = uuid::Uuid::new_v4().to_string();
        let record = Record {
            resource: stamp(resource, &id, 1, now),
            consent: id.clone(),
            vid: 1,
            nhs: checked.nhs,
            active: checked.active,
        };
        self.write(record, &mut writer)?;
        self.read(&id, None)
            .ok_or_else(|| FhirError::storage(false))
    }

    /// Adds a version to Consent `id`: 404 if there is none; 422 if the resource names another
    /// patient. Blocking (fsync).
    pub(crate) fn update(
        &self,
        id: &str,
        resource: Value,
        checked: Checked,
        now: &str,
    ) -> Result<Version, FhirError> {
        let mut writer = lock(&self.writer);
        let (vid, nhs) = {
            let inner = self.read_inner();
            let Some(v) = inner.by_id.get(id).and_then(|v| v.last()) else {
                return Err(FhirError::not_found(
                    "No Consent has this id: search by patient for the id, or POST Consent to \
                     create one",
                ));
            };
            let nhs = inner
                .by_patient
                .iter()
                .find(|(_, i)| i.as_ref() == id)
                .map(|(n, _)| *n);
            (v.vid, nhs)
        };
        if nhs != Some(checked.nhs) {
            return Err(FhirError::invalid(
                "Consent.patient.reference",
                "business-rule",
                "Consent.patient.reference: a Consent's patient cannot change; keep the \
                 patient of the stored Consent"
                    .into(),
            ));
        }
        let record = Record {
            resource: stamp(resource, id, vid + 1, now),
            consent: id.to_string(),
            vid: vid + 1,
            nhs: checked.nhs,
            active: checked.active,
        };
        self.write(record, &mut writer)?;
        self.read(id, None).ok_or_else(|| FhirError::storage(false))
    }

    /// Number of Consents (for the tests and the log).
    pub(crate) fn len(&self) -> usize {
        self.read_inner().by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(nhs: u64, active: bool) -> Checked {
        Checked { nhs, active }
    }

    #[test]
    fn seeded_created_updated_and_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let now = "2026-01-01T00:00:00+00:00";
        let s = ConsentStore::open(dir.path(), now).unwrap();
        assert_eq!(s.len(), 10);
        let n = 9434765919;
        let v = s
            .create(seed_resource(n, true, now), checked(n, true), now)
            .unwrap();
        assert_eq!(v.vid, 1);
        assert_eq!(
            s.create(seed_resource(n, true, now), checked(n, true), now)
                .unwrap_err()
                .spine,
            "DUPLICATE_REJECTED"
        );
        let v2 = s
            .update(&v.id, seed_resource(n, false, now), checked(n, false), now)
            .unwrap();
        assert_eq!(v2.vid, 2);
        assert!(v2.json.contains(r#""versionId":"2""#));
        assert_eq!(s.optouts().read().unwrap().get(&n), Some(&false));
        let ids: Vec<Arc<str>> = s.read_inner().by_id.keys().cloned().collect();
        drop(s);
        // a torn fragment at the end is skipped
        let p = dir.path().join(JOURNAL_FILE);
        let mut data = std::fs::read(&p).unwrap();
        data.extend_from_slice(br#"{"consent":"x","vid":1,"#);
        std::fs::write(&p, data).unwrap();
        let s = ConsentStore::open(dir.path(), now).unwrap();
        assert_eq!(s.len(), 11);
        assert_eq!(s.history_of_patient(n).len(), 2);
        assert_eq!(s.read(&v.id, Some(1)).unwrap().vid, 1);
        assert_eq!(s.optouts().read().unwrap().get(&n), Some(&false));
        for id in ids {
            assert!(s.read(&id, None).is_some(), "seeded ids survive a restart");
        }
        // a clean journal is appended to as it is, and the appends survive the next restart
        drop(s);
        let s = ConsentStore::open(dir.path(), now).unwrap();
        let m = 9990000018;
        s.create(seed_resource(m, true, now), checked(m, true), now)
            .unwrap();
        drop(s);
        let s = ConsentStore::open(dir.path(), now).unwrap();
        assert_eq!(s.len(), 12);
        assert_eq!(s.history_of_patient(n).len(), 2);
    }
}
