//! The National Data Opt-out FHIR API (STU3, `ndop-fhir.md`) under `/STU3/`, one "mock Spine"
//! beside MESH: `metadata`, `GET Consent?patient=…` (searchset), `POST Consent` (201 +
//! `Location`; 405 with an id, 422 for a second Consent of the patient), `PUT Consent/{id}`
//! (a new version; 400/404/422), `GET Consent/_history?patient=…[&versionId=n]`,
//! `GET Consent/{id}[/_history[/{vid}]]`.
//!
//! Every request must carry `Accept` (FHIR JSON; XML is answered 406), the Spine proxy
//! headers and a JWT ([`jwt`]); refusals are `OperationOutcome`s ([`outcome`]); Consents are
//! checked against NDOP-Consent-1 ([`validate`]) and stored durably ([`consent`]). Mutual TLS
//! is the server's: with a client CA configured no connection gets this far without a
//! certificate. The POS reads the same opt-out state ([`consent::OptOuts`]).
//!
//! Logs carry the route pattern, status and duration; never a patient, a header or a body.

pub(crate) mod consent;
mod jwt;
mod outcome;
mod validate;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body;
use serde_json::{json, Value};

use crate::body::ResponseBody;
use crate::router::parse_query;
use crate::state::State;
pub(crate) use consent::ConsentStore;
use consent::Version;
use jwt::Access;
use outcome::{fhir_response, FhirError};

/// The route prefix.
pub(crate) const PREFIX: &str = "/STU3/";
/// Largest request body accepted (a Consent is about 1.5 kB).
const MAX_BODY: usize = 64 * 1024;

/// Which endpoint a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Metadata,
    Type,
    TypeHistory,
    Instance(String),
    InstanceHistory(String),
    Version(String, String),
}

impl Route {
    fn pattern(&self) -> &'static str {
        match self {
            Route::Metadata => "/STU3/metadata",
            Route::Type => "/STU3/Consent",
            Route::TypeHistory => "/STU3/Consent/_history",
            Route::Instance(_) => "/STU3/Consent/{id}",
            Route::InstanceHistory(_) => "/STU3/Consent/{id}/_history",
            Route::Version(..) => "/STU3/Consent/{id}/_history/{vid}",
        }
    }

    /// The scope the method needs here; `None`: method not allowed.
    fn access(&self, m: &Method) -> Option<Access> {
        match (self, m) {
            (Route::Metadata, &Method::GET) => Some(Access::Any),
            (Route::Type, &Method::POST) => Some(Access::Create),
            (Route::Instance(_), &Method::PUT) => Some(Access::Update),
            (_, &Method::GET) if *self != Route::Metadata => Some(Access::Read),
            _ => None,
        }
    }
}

fn resolve(path: &str) -> Option<Route> {
    let rest = path.strip_prefix(PREFIX)?.trim_end_matches('/');
    let segs: Vec<&str> = rest.split('/').collect();
    Some(match segs.as_slice() {
        ["metadata"] => Route::Metadata,
        ["Consent"] => Route::Type,
        ["Consent", "_history"] => Route::TypeHistory,
        ["Consent", id] if !id.is_empty() => Route::Instance(id.to_string()),
        ["Consent", id, "_history"] => Route::InstanceHistory(id.to_string()),
        ["Consent", id, "_history", vid] => Route::Version(id.to_string(), vid.to_string()),
        _ => return None,
    })
}

/// True for a path this module answers.
pub(crate) fn owns(path: &str) -> bool {
    path.starts_with(PREFIX)
}

/// Answers one request under `/STU3/`.
pub(crate) async fn handle<B>(state: &Arc<State>, req: Request<B>) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    let started = Instant::now();
    let method = req.method().clone();
    let route = resolve(req.uri().path());
    let pattern = route.as_ref().map(Route::pattern).unwrap_or("/STU3/-");
    let resp = match answer(state, req, route).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    tracing::debug!(
        method = %method,
        route = pattern,
        status = resp.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "fhir request"
    );
    resp
}

async fn answer<B>(
    state: &Arc<State>,
    req: Request<B>,
    route: Option<Route>,
) -> Result<Response<ResponseBody>, FhirError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    let route = route.ok_or_else(FhirError::no_route)?;
    let access = route
        .access(req.method())
        .ok_or_else(FhirError::method_not_allowed)?;
    let (parts, body) = req.into_parts();
    let query = parse_query(parts.uri.query());
    negotiate(&parts.headers, &query)?;
    let now = state.config.clock.now();
    jwt::check(
        &parts.headers,
        route == Route::Metadata,
        access,
        now.timestamp(),
    )?;
    let base = base_url(state, &parts.headers);
    let store = state.consents.clone();
    match (route, access) {
        (Route::Metadata, _) => Ok(fhir_response(StatusCode::OK, capability().to_string())),
        (Route::Type, Access::Create) => {
            let resource = read_json(state, body).await?;
            if resource.get("id").is_some() {
                return Err(FhirError::id_on_create());
            }
            let checked = validate::consent(&resource)?;
            let v = blocking(move || store.create(resource, checked, &rfc3339(now))).await?;
            Ok(written(StatusCode::CREATED, &base, &v))
        }
        (Route::Instance(id), Access::Update) => {
            let resource = read_json(state, body).await?;
            match resource.get("id").and_then(Value::as_str) {
                Some(i) if i == id => {}
                _ => {
                    return Err(FhirError::bad_request(
                        "Consent.id must be present and equal to the id in the URL: PUT the \
                         whole resource with its id",
                    ))
                }
            }
            let checked = validate::consent(&resource)?;
            let v = blocking(move || store.update(&id, resource, checked, &rfc3339(now))).await?;
            Ok(written(StatusCode::OK, &base, &v))
        }
        (Route::Type, _) => {
            let found: Vec<Version> = match (param(&query, "patient"), param(&query, "_id")) {
                (Some(p), _) => store.by_patient(patient_param(p)?).into_iter().collect(),
                (None, Some(id)) => store.read(id, None).into_iter().collect(),
                (None, None) => {
                    return Err(search_needs_patient());
                }
            };
            Ok(bundle(&base, "searchset", &found, &rfc3339(now)))
        }
        (Route::TypeHistory, _) => {
            let p = param(&query, "patient").ok_or_else(search_needs_patient)?;
            let mut versions = store.history_of_patient(patient_param(p)?);
            if let Some(want) = param(&query, "versionId") {
                versions.retain(|v| v.vid.to_string() == want);
            }
            Ok(bundle(&base, "history", &versions, &rfc3339(now)))
        }
        (Route::InstanceHistory(id), _) => {
            let versions = store.history(&id).ok_or_else(no_consent)?;
            Ok(bundle(&base, "history", &versions, &rfc3339(now)))
        }
        (Route::Instance(id), _) => {
            let v = store.read(&id, None).ok_or_else(no_consent)?;
            Ok(resource_response(StatusCode::OK, &base, &v))
        }
        (Route::Version(id, vid), _) => {
            let v = vid
                .parse::<u64>()
                .ok()
                .and_then(|n| store.read(&id, Some(n)))
                .ok_or_else(|| {
                    FhirError::not_found(
                        "No such version of this Consent: read Consent/{id}/_history for its \
                         versions",
                    )
                })?;
            Ok(resource_response(StatusCode::OK, &base, &v))
        }
    }
}

fn no_consent() -> FhirError {
    FhirError::not_found("No Consent has this id: search by patient with GET Consent?patient=...")
}

fn search_needs_patient() -> FhirError {
    FhirError {
        spine: "INVALID_PARAMETER",
        display: "Invalid parameter",
        ..FhirError::bad_request(format!(
            "Search by patient: GET Consent?patient={}{{NHS number}}",
            validate::PATIENT_BASE
        ))
    }
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The NHS number in a `patient` search parameter (the demographics URL).
fn patient_param(p: &str) -> Result<u64, FhirError> {
    validate::patient_number(p, "patient").map_err(|e| FhirError {
        status: StatusCode::BAD_REQUEST,
        spine: "INVALID_PARAMETER",
        display: "Invalid parameter",
        ..e
    })
}

/// Refuses a request that cannot take FHIR JSON back: `Accept` must be present and allow
/// JSON; `_format` must not ask for XML.
fn negotiate(headers: &http::HeaderMap, query: &[(String, String)]) -> Result<(), FhirError> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            FhirError::bad_request(
                "The Accept header is missing: send Accept: application/fhir+json",
            )
        })?
        .to_ascii_lowercase();
    let json_ok = accept.split(',').any(|t| {
        let t = t.split(';').next().unwrap_or_default().trim();
        matches!(
            t,
            "application/fhir+json"
                | "application/json+fhir"
                | "application/json"
                | "*/*"
                | "application/*"
        )
    });
    let xml_format = param(query, "_format").is_some_and(|f| f.contains("xml"));
    if !json_ok || xml_format {
        return Err(FhirError::not_acceptable());
    }
    if let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        if !ct.to_ascii_lowercase().contains("json") {
            return Err(FhirError::unsupported_media_type());
        }
    }
    Ok(())
}

/// The body as JSON: 400 if it is not (or is over [`MAX_BODY`], or arrives too slowly).
async fn read_json<B>(state: &State, body: B) -> Result<Value, FhirError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    let read = async move {
        let mut body = body;
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map(|f| f.into_data()) else {
                return None;
            };
            if let Ok(d) = data {
                if buf.len() + d.len() > MAX_BODY {
                    return None;
                }
                buf.extend_from_slice(&d);
            }
        }
        Some(buf)
    };
    let bytes = match tokio::time::timeout(state.config.limits.body_timeout, read).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            return Err(FhirError::bad_request(format!(
                "The request body could not be read or is over {MAX_BODY} bytes"
            )))
        }
        Err(_) => {
            return Err(FhirError::bad_request(
                "The request body arrived too slowly",
            ))
        }
    };
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| {
        FhirError::bad_request("The body is not JSON: send one Consent resource as FHIR JSON")
    })?;
    if !v.is_object() {
        return Err(FhirError::bad_request("The body is not a JSON object"));
    }
    Ok(v)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FhirError> + Send + 'static,
) -> Result<T, FhirError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(FhirError::storage(false)))
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+00:00").to_string()
}

/// `http(s)://host/STU3` from the request's `Host`.
fn base_url(state: &State, headers: &http::HeaderMap) -> String {
    let scheme = if state.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    format!("{scheme}://{host}/STU3")
}

fn version_url(base: &str, v: &Version) -> String {
    format!("{base}/Consent/{}/_history/{}", v.id, v.vid)
}

/// A single resource, with `ETag` and `Last-Modified`-style headers.
fn resource_response(status: StatusCode, base: &str, v: &Version) -> Response<ResponseBody> {
    let mut r = fhir_response(status, v.json.to_string());
    crate::response::set(r.headers_mut(), "etag", &format!("W/\"{}\"", v.vid));
    crate::response::set(r.headers_mut(), "content-location", &version_url(base, v));
    r
}

/// A create (201) or update (200): the stored resource plus `Location`.
fn written(status: StatusCode, base: &str, v: &Version) -> Response<ResponseBody> {
    let mut r = resource_response(status, base, v);
    crate::response::set(r.headers_mut(), "location", &version_url(base, v));
    r
}

/// A `searchset` or `history` Bundle, built by concatenating the stored JSON.
fn bundle(base: &str, kind: &str, versions: &[Version], now: &str) -> Response<ResponseBody> {
    let mut s =
        String::with_capacity(256 + versions.iter().map(|v| v.json.len() + 200).sum::<usize>());
    s.push_str(&format!(
        r#"{{"resourceType":"Bundle","id":"{}","meta":{{"lastUpdated":"{now}"}},"type":"{kind}","total":{},"entry":["#,
        uuid::Uuid::new_v4(),
        versions.len()
    ));
    for (i, v) in versions.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let full_url = format!("{base}/Consent/{}", v.id);
        s.push_str(&format!(r#"{{"fullUrl":"{full_url}","resource":"#));
        s.push_str(&v.json);
        if kind == "history" {
            let (method, url, status) = if v.vid == 1 {
                ("POST", "Consent".to_string(), "201 Created")
            } else {
                ("PUT", format!("Consent/{}", v.id), "200 OK")
            };
            s.push_str(&format!(
                r#","request":{{"method":"{method}","url":"{url}"}},"response":{{"status":"{status}","etag":"W/\"{}\"","lastModified":"{}"}}}}"#,
                v.vid, v.last_updated
            ));
        } else {
            s.push_str(r#","search":{"mode":"match"}}"#);
        }
    }
    s.push_str("]}");
    fhir_response(StatusCode::OK, s)
}

/// The CapabilityStatement (`ndop-fhir.md` §8), with search and history listed too.
fn capability() -> Value {
    json!({
        "resourceType": "CapabilityStatement",
        "id": "NDOP-CapabilityStatement-1",
        "url": "https://clinicals.spineservices.nhs.uk",
        "version": "1.0.0",
        "name": "NDOP FHIR API (mock-mesh)",
        "status": "draft",
        "date": "2019-01-02",
        "publisher": "mock-mesh",
        "description": "A mock of the National Data Opt-out Programme FHIR API (STU3 Consent) for offline testing",
        "kind": "instance",
        "implementation": {"description": "mock-mesh NDOP FHIR API"},
        "fhirVersion": "3.0.1",
        "acceptUnknown": "no",
        "format": ["application/fhir+json", "application/json+fhir"],
        "rest": [{
            "mode": "server",
            "resource": [{
                "type": "Consent",
                "profile": {"reference": validate::CONSENT_PROFILE},
                "interaction": [
                    {"code": "create"}, {"code": "read"}, {"code": "vread"}, {"code": "update"},
                    {"code": "search-type"}, {"code": "history-type"}, {"code": "history-instance"}
                ],
                "versioning": "versioned",
                "readHistory": true,
                "updateCreate": false,
                "conditionalCreate": false,
                "searchParam": [
                    {"name": "patient", "type": "reference"},
                    {"name": "_id", "type": "token"}
                ]
            }]
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_paths() {
        assert_eq!(resolve("/STU3/metadata"), Some(Route::Metadata));
        assert_eq!(resolve("/STU3/Consent"), Some(Route::Type));
        assert_eq!(resolve("/STU3/Consent/_history"), Some(Route::TypeHistory));
        assert_eq!(
            resolve("/STU3/Consent/abc/_history/2"),
            Some(Route::Version("abc".into(), "2".into()))
        );
        assert_eq!(resolve("/STU3/Patient/1"), None);
        assert_eq!(Route::Metadata.access(&Method::POST), None);
        assert_eq!(Route::Type.access(&Method::PUT), None);
        assert_eq!(
            Route::Instance("a".into()).access(&Method::PUT),
            Some(Access::Update)
        );
    }
}
