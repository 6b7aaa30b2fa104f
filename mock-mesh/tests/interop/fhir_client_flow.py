#!/usr/bin/env python3
"""Drives mock-mesh's NDOP FHIR API (STU3 Consent, under /STU3/) with a FHIR client nobody here
wrote: SMART on FHIR's `fhirclient` 3.2.0 (STU3 models) from PyPI, and checks every resource the
server returns with `fhir.resources` 8 (`fhir.resources.STU3`).

    python fhir_client_flow.py api http://127.0.0.1:8700 test-patients.csv
    python fhir_client_flow.py parse r4|stu3 FILE...     # Consent NDJSON or a Bundle, from ndop

`api`: capability statement, search (seeded INT opt-out, no Consent), create (201 + Location),
duplicate create refused (422 DUPLICATE_REJECTED), create with an id refused (405
MSG_RESOURCE_ID_FAIL), update (version 2), history, vread, NDOP-Consent-1 refusals naming the
element, unknown id (404), and the Spine header / JWT refusals. Prints `PASS name` or
`FAIL name: reason` per check and `N passed, M failed` last; exits 0 only if all passed.
`parse`: every line of an NDJSON file (or every entry of a Bundle) must parse as a Consent of
that FHIR version (R4 via `fhir.resources.R4B`); prints `PARSED n` and the status counts.
"""

import base64
import csv
import json
import sys
import time
import traceback
import uuid

import requests
from fhirclient import server as fhirserver
from fhirclient.models import bundle as fbundle
from fhirclient.models import consent as fconsent

PATIENT = "https://demographics.spineservices.nhs.uk/STU3/Patient/"
PREFIX = "urn:nhs:names:services:nationaldataoptout:fhir:rest:"
METADATA = PREFIX + "read:metadata"
AUD = "https://clinicals.spineservices.nhs.uk"

results = []
returned = []  # every resource the server answered with, for fhir.resources


def check(name):
    def wrap(fn):
        try:
            fn()
            results.append((name, None))
            print(f"PASS {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
            reason = f"{type(e).__name__}: {e}"
            results.append((name, reason))
            print(f"FAIL {name}: {reason}", flush=True)
            traceback.print_exc(file=sys.stderr)
        return fn

    return wrap


def b64(obj):
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def jwt(nhs="9434765919", scope="patient/consent.read patient/consent.write", **override):
    """A new unsigned JWT (alg none, empty signature) as the NDOP guide describes."""
    now = int(time.time())
    claims = {
        "iss": "https://citizen-id.nhs.uk",
        "sub": f"http://fhir.nhs.net/Id/nhs-number|{nhs}",
        "aud": AUD,
        "exp": now + 300,
        "iat": now,
        "reason_for_request": "patientaccess",
        "scope": scope,
        "requesting_system": "https://fhir.nhs.uk/Id/accredited-system|200000000205",
        "requesting_patient": f"http://fhir.nhs.net/Id/nhs-number|{nhs}",
    }
    claims.update(override)
    claims = {k: v for k, v in claims.items() if v is not None}
    return b64({"alg": "none", "typ": "JWT"}) + "." + b64(claims) + "."


def spine_headers(interaction, token=None, **drop):
    h = {
        "Ssp-TraceID": str(uuid.uuid4()),
        "Ssp-From": "200000000205",
        "Ssp-To": "200000001115",
        "Ssp-InteractionID": interaction,
        "Authorization": "Bearer " + (token or jwt()),
    }
    for k in drop:
        h.pop(k.replace("_", "-"), None)
    return h


def spine(srv, interaction, token=None):
    """Sets the headers of the next request: a new trace id and a new JWT every time."""
    srv.session.headers.clear()
    srv.session.headers.update(spine_headers(interaction, token))


def keep(obj):
    returned.append(obj)
    return obj


def valid_999(start):
    """The first NHS number from `start` upwards passing Modulus 11 (999 test range)."""
    n = start
    while True:
        d = [int(c) for c in f"{n:010d}"]
        check_digit = 11 - sum(x * w for x, w in zip(d[:9], range(10, 1, -1))) % 11
        check_digit = 0 if check_digit == 11 else check_digit
        if check_digit != 10 and check_digit == d[9]:
            return f"{n:010d}"
        n += 1


def consent_json(nhs, status="active", **extra):
    c = {
        "resourceType": "Consent",
        "meta": {"profile": ["https://fhir.nhs.uk/STU3/StructureDefinition/NDOP-Consent-1"]},
        "extension": [{
            "url": "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-NDOP-OptOutSource-1",
            "valueCodeableConcept": {"coding": [{
                "system": "https://fhir.nhs.uk/STU3/CodeSystem/NDOP-OptOutSource-1",
                "code": "OP", "display": "Online Process"}]},
        }],
        "status": status,
        "patient": {"reference": PATIENT + nhs},
        "dateTime": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "consentingParty": [{"reference": PATIENT + nhs}],
        "organization": [{"reference": "https://directory.spineservices.nhs.uk/STU3/Organization/X26"}],
        "policy": [{"authority": "https://www.gov.uk/",
                    "uri": "https://www.gov.uk/government/uploads/system/uploads/attachment_data/file/535024/data-security-review.PDF"}],
        "purpose": [{"system": "https://snomed.info/sct", "code": "370856009",
                     "display": "Limiting access to confidential patient information"}],
    }
    c.update(extra)
    return c


def refused(fn, status, spine_code, expression=None):
    """Runs fn, which must fail with HTTP `status` and an OperationOutcome naming spine_code."""
    try:
        fn()
    except (requests.HTTPError, fhirserver.FHIRPermissionDeniedException,
            fhirserver.FHIRNotFoundException, fhirserver.FHIRUnauthorizedException) as e:
        r = e.response
        assert r.status_code == status, f"HTTP {r.status_code}, expected {status}: {r.text}"
        assert r.headers["content-type"].startswith("application/fhir+json"), r.headers["content-type"]
        o = keep(r.json())
        assert o["resourceType"] == "OperationOutcome", o
        issue = o["issue"][0]
        assert issue["details"]["coding"][0]["code"] == spine_code, issue
        assert issue["diagnostics"], issue
        if expression:
            assert issue.get("expression") == [expression], issue
        return o
    raise AssertionError(f"no error, expected HTTP {status} {spine_code}")


def api(url, patients_csv):
    srv = fhirserver.FHIRServer(None, base_uri=url.rstrip("/") + "/STU3/")
    with open(patients_csv) as f:
        rows = list(csv.DictReader(f))
    opted_out = next(r["nhs_number"] for r in rows if r["environment"] == "int" and r["opted_out"] == "yes")
    new_patient = valid_999(9990000000 + int(time.time()) % 900000 * 10)
    state = {}

    @check("capability statement (fhirclient)")
    def _():
        spine(srv, METADATA)
        srv.get_capability(force=True)
        cs = srv.capabilityStatement
        # fhirclient 3.2.0 loads its own copy of the models module for this
        assert type(cs).__name__ == "CapabilityStatement", type(cs)
        assert cs.fhirVersion == "3.0.1", cs.fhirVersion
        assert cs.rest[0].resource[0].type == "Consent"
        keep(cs.as_json())

    @check("search finds the seeded INT opt-out (active)")
    def _():
        spine(srv, PREFIX + "search:consent")
        b = fconsent.Consent.where(struct={"patient": PATIENT + opted_out}).perform(srv)
        assert isinstance(b, fbundle.Bundle) and b.type == "searchset", b.type
        assert b.total == 1, b.total
        c = b.entry[0].resource
        assert c.status == "active" and c.patient.reference == PATIENT + opted_out
        keep(b.as_json())

    @check("search for a patient without a Consent is empty")
    def _():
        spine(srv, PREFIX + "search:consent")
        b = fconsent.Consent.where(struct={"patient": PATIENT + new_patient}).perform(srv)
        assert b.total == 0 and not b.entry, b.as_json()
        keep(b.as_json())

    @check("create: 201, Location, server id, version 1")
    def _():
        c = fconsent.Consent(consent_json(new_patient))  # fhirclient's STU3 model checks it
        spine(srv, PREFIX + "create:consent")
        r = srv.post_json("Consent", c.as_json())
        assert r.status_code == 201, r.status_code
        body = keep(r.json())
        loc = r.headers["location"]
        assert loc.endswith(f"/STU3/Consent/{body['id']}/_history/1"), loc
        assert body["meta"]["versionId"] == "1"
        uuid.UUID(body["id"])
        state["id"] = body["id"]

    @check("duplicate create refused: 422 DUPLICATE_REJECTED")
    def _():
        spine(srv, PREFIX + "create:consent")
        refused(lambda: fconsent.Consent(consent_json(new_patient)).create(srv), 422, "DUPLICATE_REJECTED")

    @check("create with an id refused: 405 MSG_RESOURCE_ID_FAIL")
    def _():
        spine(srv, PREFIX + "create:consent")
        refused(lambda: srv.post_json("Consent", consent_json(valid_999(int(new_patient) + 1), id="x")),
                405, "MSG_RESOURCE_ID_FAIL", "Consent.id")

    @check("update withdraws the opt-out: version 2, inactive")
    def _():
        spine(srv, PREFIX + "search:consent")
        c = fconsent.Consent.where(struct={"patient": PATIENT + new_patient}).perform_resources(srv)[0]
        c.status = "inactive"
        c.dateTime.origval = None
        c.dateTime = type(c.dateTime)(time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()))
        spine(srv, PREFIX + "update:consent")
        body = keep(c.update(srv))
        assert body["meta"]["versionId"] == "2" and body["status"] == "inactive", body

    @check("history by patient: two versions, newest first")
    def _():
        spine(srv, PREFIX + "history:consent")
        j = keep(srv.request_json(f"Consent/_history?patient={PATIENT}{new_patient}"))
        b = fbundle.Bundle(j)
        assert b.type == "history" and b.total == 2, (b.type, b.total)
        assert [e.resource.meta.versionId for e in b.entry] == ["2", "1"]
        assert [e.request.method for e in b.entry] == ["PUT", "POST"]

    @check("vread version 1 is still active")
    def _():
        spine(srv, PREFIX + "vread:consent")
        c = fconsent.Consent.read_from(f"Consent/{state['id']}/_history/1", srv)
        assert c.status == "active" and c.meta.versionId == "1"
        keep(c.as_json())

    @check("NDOP-Consent-1 refusals name the element")
    def _():
        other = valid_999(int(new_patient) + 2)
        for body, expr, code in [
            (consent_json(other, status="proposed"), "Consent.status", "INVALID_RESOURCE"),
            (consent_json(other, patient={"reference": other}), "Consent.patient.reference", "INVALID_RESOURCE"),
            (consent_json(other, dateTime="2025-02-27"), "Consent.dateTime", "INVALID_RESOURCE"),
            (consent_json(other, consentingParty=[]), "Consent.consentingParty", "INVALID_RESOURCE"),
            (consent_json(other, purpose=[]), "Consent.purpose", "INVALID_RESOURCE"),
        ]:
            spine(srv, PREFIX + "create:consent")
            refused(lambda: srv.post_json("Consent", body), 422, code, expr)

    @check("update of an unknown id: 404; id not matching the URL: 400")
    def _():
        body = consent_json(new_patient, id=str(uuid.uuid4()))
        spine(srv, PREFIX + "update:consent")
        refused(lambda: srv.put_json(f"Consent/{body['id']}", body), 404, "NO_RECORD_FOUND")
        spine(srv, PREFIX + "update:consent")
        refused(lambda: srv.put_json(f"Consent/{state['id']}", body), 400, "BAD_REQUEST")

    def raw(headers, path="Consent?patient=" + PATIENT + opted_out, accept="application/fhir+json"):
        r = requests.get(url.rstrip("/") + "/STU3/" + path, headers={"Accept": accept, **headers}, timeout=30)
        r.raise_for_status()
        return r

    @check("Spine header and JWT refusals")
    def _():
        search = PREFIX + "search:consent"
        now = int(time.time())
        refused(lambda: raw(spine_headers(search, Ssp_TraceID=1)), 400, "BAD_REQUEST")
        refused(lambda: raw(spine_headers(search, Ssp_InteractionID=1)), 400, "BAD_REQUEST")
        refused(lambda: raw(spine_headers(search, Authorization=1)), 400, "BAD_REQUEST")
        refused(lambda: raw(spine_headers(search, jwt(exp=now - 10, iat=now - 310))), 400, "BAD_REQUEST")
        refused(lambda: raw(spine_headers(search, jwt(aud="https://example.org"))), 400, "BAD_REQUEST")
        refused(lambda: raw(spine_headers(search, jwt(iss=None))), 400, "BAD_REQUEST")
        refused(lambda: raw(spine_headers(search, "not-a-jwt")), 400, "BAD_REQUEST")
        refused(lambda: raw(spine_headers(search, jwt(scope="patient/consent.write"))), 403, "ACCESS_DENIED")
        refused(lambda: raw(spine_headers(METADATA)), 400, "BAD_REQUEST")  # wrong interaction
        token = jwt(scope="patient/consent.read")
        spine(srv, PREFIX + "create:consent", token)
        refused(lambda: srv.post_json("Consent", consent_json(valid_999(int(new_patient) + 3))), 403, "ACCESS_DENIED")
        refused(lambda: raw(spine_headers(search), accept="application/fhir+xml"), 406, "UNSUPPORTED_MEDIA_TYPE")
        assert raw(spine_headers(search)).status_code == 200

    @check("fhir.resources (STU3) parses every resource the mock returned")
    def _():
        from fhir.resources.STU3 import get_fhir_model_class
        assert len(returned) >= 20, len(returned)
        kinds = set()
        for obj in returned:
            get_fhir_model_class(obj["resourceType"]).model_validate(obj)
            kinds.add(obj["resourceType"])
        assert kinds == {"CapabilityStatement", "Bundle", "Consent", "OperationOutcome"}, kinds


def parse(version, files):
    if version == "r4":
        from fhir.resources.R4B import get_fhir_model_class
    else:
        from fhir.resources.STU3 import get_fhir_model_class
    statuses = {}
    ids = set()
    n = 0
    for path in files:
        with open(path) as f:
            text = f.read()
        if text.lstrip().startswith('{"resourceType":"Bundle"') or '"type":"transaction"' in text[:300]:
            b = get_fhir_model_class("Bundle").model_validate(json.loads(text))
            assert b.type == "transaction", b.type
            items = []
            for e in json.loads(text)["entry"]:
                assert e["request"]["method"] == "PUT", e["request"]
                assert e["request"]["url"] == "Consent/" + e["resource"]["id"], e["request"]
                items.append(e["resource"])
        else:
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        for obj in items:
            c = get_fhir_model_class("Consent").model_validate(obj)
            statuses[c.status] = statuses.get(c.status, 0) + 1
            assert c.dateTime is not None, "every Consent carries the POS answer time"
            ids.add(c.id)
            n += 1
    assert len(ids) == n, "one Consent (one id) per patient"
    print(f"PARSED {n} {json.dumps(statuses, sort_keys=True)}")


def main():
    if sys.argv[1] == "parse":
        parse(sys.argv[2], sys.argv[3:])
        return
    api(sys.argv[2], sys.argv[3])
    failed = sum(1 for _, r in results if r)
    print(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
