//! Refusals as `OperationOutcome` resources conforming to `Spine-OperationOutcome-1`
//! (`ndop-fhir.md` §7): HTTP status, FHIR issue code, Spine error code and display, a
//! diagnostic that names the cause and the fix, and (for a resource that breaks a rule) the
//! element as a FHIRPath `expression`. Diagnostics never carry an NHS number or a header value.

use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

use crate::body::{full, ResponseBody};

/// Profile of every error body.
const OUTCOME_PROFILE: &str =
    "https://fhir.nhs.uk/STU3/StructureDefinition/Spine-OperationOutcome-1";
/// Code system of the Spine error codes.
const SPINE_CODES: &str = "https://fhir.nhs.uk/STU3/CodeSystem/Spine-ErrorOrWarningCode-1";
/// Media type of every FHIR body this server writes.
pub(crate) const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// A refusal: everything an `OperationOutcome` answer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FhirError {
    pub(crate) status: StatusCode,
    /// FHIR `IssueType` code (`invalid`, `forbidden`, `duplicate`, …).
    pub(crate) issue: &'static str,
    /// Spine error code (`BAD_REQUEST`, `DUPLICATE_REJECTED`, …).
    pub(crate) spine: &'static str,
    pub(crate) display: &'static str,
    pub(crate) diagnostics: String,
    /// The offending element, as FHIRPath (`Consent.status`).
    pub(crate) expression: Option<String>,
}

impl FhirError {
    fn new(
        status: StatusCode,
        issue: &'static str,
        spine: &'static str,
        display: &'static str,
        diagnostics: impl Into<String>,
    ) -> FhirError {
        FhirError {
            status,
            issue,
            spine,
            display,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }

    /// 400 `BAD_REQUEST`: a malformed request (missing or invalid header, bad JWT, body that is
    /// not JSON). Spine's convention (GP Connect), since the NDOP guide documents none.
    pub(crate) fn bad_request(diagnostics: impl Into<String>) -> FhirError {
        FhirError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "BAD_REQUEST",
            "Bad request",
            diagnostics,
        )
    }

    /// 403 `ACCESS_DENIED`: the JWT's scope does not cover the interaction.
    pub(crate) fn access_denied(diagnostics: impl Into<String>) -> FhirError {
        FhirError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "ACCESS_DENIED",
            "Access has been denied to process this request",
            diagnostics,
        )
    }

    /// 404 `NO_RECORD_FOUND`: no such Consent or version.
    pub(crate) fn not_found(diagnostics: impl Into<String>) -> FhirError {
        FhirError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "NO_RECORD_FOUND",
            "No record found",
            diagnostics,
        )
    }

    /// 404 `NOT_IMPLEMENTED`-style answer for a path this API does not have.
    pub(crate) fn no_route() -> FhirError {
        FhirError::new(
            StatusCode::NOT_FOUND,
            "not-supported",
            "NOT_IMPLEMENTED",
            "Not implemented",
            "No such endpoint: this API serves metadata, Consent, Consent/{id}, \
             Consent/_history and Consent/{id}/_history/{vid} under /STU3/",
        )
    }

    /// 405 on a route that exists but not with this method.
    pub(crate) fn method_not_allowed() -> FhirError {
        FhirError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            "NOT_IMPLEMENTED",
            "Method not allowed",
            "This method is not supported on this path: search and read with GET, create with \
             POST Consent, update with PUT Consent/{id}",
        )
    }

    /// 405 `MSG_RESOURCE_ID_FAIL` (`ndop-fhir.md` §5, §7): a create that carries an id.
    pub(crate) fn id_on_create() -> FhirError {
        FhirError {
            expression: Some("Consent.id".into()),
            ..FhirError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "forbidden",
                "MSG_RESOURCE_ID_FAIL",
                "Client is not permitted to assign an id",
                "An attempt has been made to create a new consent record that includes an id; \
                 remove Consent.id (the server assigns it) or use PUT Consent/{id} to update",
            )
        }
    }

    /// 422 `DUPLICATE_REJECTED` (§5): a second Consent for the same patient.
    pub(crate) fn duplicate() -> FhirError {
        FhirError {
            expression: Some("Consent.patient".into()),
            ..FhirError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "duplicate",
                "DUPLICATE_REJECTED",
                "Consent already exists for this patient/policy/purpose",
                "A Consent already exists for this patient: search with \
                 GET Consent?patient=... and update it with PUT Consent/{id}",
            )
        }
    }

    /// 422 `INVALID_RESOURCE`: the resource breaks an NDOP-Consent-1 rule at `element`.
    pub(crate) fn invalid(element: &str, issue: &'static str, diagnostics: String) -> FhirError {
        FhirError {
            expression: Some(element.to_string()),
            ..FhirError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                issue,
                "INVALID_RESOURCE",
                "Invalid validation of resource",
                diagnostics,
            )
        }
    }

    /// 422 `INVALID_NHS_NUMBER`: the patient reference's NHS number fails Modulus 11.
    pub(crate) fn invalid_nhs_number(element: &str) -> FhirError {
        FhirError {
            expression: Some(element.to_string()),
            ..FhirError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "value",
                "INVALID_NHS_NUMBER",
                "Invalid NHS number",
                format!("{element}: the NHS number fails the Modulus 11 check; send the patient's 10-digit NHS number"),
            )
        }
    }

    /// 406: the client asked for XML (or another type this mock does not write).
    pub(crate) fn not_acceptable() -> FhirError {
        FhirError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not-supported",
            "UNSUPPORTED_MEDIA_TYPE",
            "Unsupported media type",
            "This server answers application/fhir+json only: send Accept: application/fhir+json \
             (and no _format=xml)",
        )
    }

    /// 415: a body that is not JSON.
    pub(crate) fn unsupported_media_type() -> FhirError {
        FhirError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            "UNSUPPORTED_MEDIA_TYPE",
            "Unsupported media type",
            "Send the resource as JSON with Content-Type: application/fhir+json",
        )
    }

    /// 500 (507 on a full disk): the change could not be made durable; nothing changed.
    pub(crate) fn storage(full: bool) -> FhirError {
        let status = if full {
            StatusCode::INSUFFICIENT_STORAGE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        FhirError::new(
            status,
            "exception",
            "INTERNAL_SERVER_ERROR",
            "Unexpected internal server error",
            "The change could not be stored and was not made; retry later",
        )
    }

    /// The `OperationOutcome` resource.
    pub(crate) fn to_resource(&self) -> Value {
        let mut issue = json!({
            "severity": "error",
            "code": self.issue,
            "details": {"coding": [{
                "system": SPINE_CODES,
                "code": self.spine,
                "display": self.display,
            }]},
            "diagnostics": self.diagnostics,
        });
        if let Some(e) = &self.expression {
            issue["expression"] = json!([e]);
        }
        json!({
            "resourceType": "OperationOutcome",
            "id": uuid::Uuid::new_v4().to_string(),
            "meta": {"profile": [OUTCOME_PROFILE]},
            "issue": [issue],
        })
    }

    /// The HTTP answer.
    pub(crate) fn into_response(self) -> Response<ResponseBody> {
        fhir_response(self.status, self.to_resource().to_string())
    }
}

/// A FHIR JSON answer.
pub(crate) fn fhir_response(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_refusal_matches_the_guide() {
        let o = FhirError::id_on_create().to_resource();
        assert_eq!(o["issue"][0]["code"], "forbidden");
        assert_eq!(
            o["issue"][0]["details"]["coding"][0]["code"],
            "MSG_RESOURCE_ID_FAIL"
        );
        assert_eq!(o["issue"][0]["expression"][0], "Consent.id");
        assert_eq!(FhirError::id_on_create().status, 405);
        assert_eq!(FhirError::duplicate().status, 422);
    }
}
