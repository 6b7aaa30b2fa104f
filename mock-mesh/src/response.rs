//! Response shaping shared by the endpoints and the errors: the API version a request asked
//! for, JSON bodies with their content type, empty `200`s, header insertion that never fails,
//! and the compact MESH timestamp. A leaf: it knows nothing of the store or the routes.

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::body::{empty, full, ResponseBody};

/// The API version a request asked for through its `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// `application/json`, `application/vnd.mesh.v1+json`, or no vnd type at all.
    V1,
    /// `application/vnd.mesh.v2+json` (or any higher number).
    V2,
}

/// Content type of a JSON body.
#[derive(Clone, Copy)]
pub(crate) enum JsonType {
    /// `application/json`
    Plain,
    /// `application/vnd.mesh.v2+json`
    MeshV2,
}

/// A JSON response.
pub(crate) fn json(
    status: StatusCode,
    value: &serde_json::Value,
    t: JsonType,
) -> Response<ResponseBody> {
    let mut r = Response::new(full(value.to_string()));
    *r.status_mut() = status;
    let ct = match t {
        JsonType::Plain => "application/json",
        JsonType::MeshV2 => "application/vnd.mesh.v2+json",
    };
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

/// `200` with an empty body and no content type.
pub(crate) fn empty_ok() -> Response<ResponseBody> {
    Response::new(empty())
}

/// Inserts a header if the value is representable; user-supplied values that are not are
/// skipped rather than failing the response.
pub(crate) fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_bytes(value.as_bytes()) {
        headers.insert(name, v);
    }
}

/// `yyyyMMddHHmmss`.
pub(crate) fn compact_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y%m%d%H%M%S").to_string()
}
