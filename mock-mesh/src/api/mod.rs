//! The endpoints, one group per file, all of the same shape: a function from a [`Ctx`] (and
//! the request body where there is one) to a response or an [`ApiError`].

pub(crate) mod handshake;
pub(crate) mod health;
pub(crate) mod inbox;
pub(crate) mod lookup;
pub(crate) mod outbox;
pub(crate) mod tracking;

use std::sync::Arc;

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::body::{empty, full, ResponseBody};
use crate::headers::ApiVersion;
use crate::server::AppState;

/// What an authenticated mailbox request carries.
pub(crate) struct Ctx<'a> {
    pub state: &'a Arc<AppState>,
    pub version: ApiVersion,
    /// The authenticated mailbox (path mailbox, upper-case).
    pub mailbox: String,
    pub headers: &'a HeaderMap,
    pub query: &'a [(String, String)],
}

impl Ctx<'_> {
    /// First value of a query parameter.
    pub(crate) fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
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
