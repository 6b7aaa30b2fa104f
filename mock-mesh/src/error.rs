//! Errors: [`Error`] for the library (configuration, storage, start-up) and [`ApiError`], the
//! one place where a failed request becomes an HTTP status and a MESH v1/v2 error body.
//!
//! Body shapes follow `mesh-protocol.md` section 10.1:
//! * v1 `{"errorEvent","errorCode","errorDescription"[,"messageID"]}` (`application/json`);
//! * v2 `{["message_id",]"detail":[{"event","code","msg"}]}` (`application/vnd.mesh.v2+json`);
//! * generic `{"message":"An internal error occurred.\n\nPlease contact support."}` (423, 406, 500);
//! * validation `{"detail":[{"type","loc","msg"}]}` (400, always `application/json`);
//! * routing `{"detail":"Not Found"}` / `{"detail":"Method Not Allowed"}`.
//!
//! Auth failures never say more than MESH says (section 3.4): malformed, mailbox mismatch,
//! unknown mailbox, or "Invalid Authentication Token" for every HMAC, clock and replay failure.

use std::path::PathBuf;

use http::{Response, StatusCode};
use serde_json::json;

use crate::body::ResponseBody;
use crate::response::{json as json_response, ApiVersion, JsonType};

/// Library-level errors (start-up, configuration, storage).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A socket error (bind, local_addr).
    #[error("network: {0}")]
    Net(#[source] std::io::Error),
    /// The TOML configuration could not be parsed or is inconsistent.
    #[error("config {path}: {message}")]
    Config {
        /// Configuration file (or `<built-in>`).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The opt-out file has a line that is not an NHS number.
    #[error("opt-out file {path} line {line}: not a 10-digit number")]
    OptOutFile {
        /// File path.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A TLS certificate, key or client CA is unreadable, not PEM, or unusable.
    #[error("TLS {what}: {message}")]
    Tls {
        /// Which PEM, with its path when read from a file (e.g. `private key server.key`).
        what: String,
        /// What is wrong.
        message: String,
    },
    /// A file that would have been overwritten; nothing was written (`pki`, `--tls-generate`).
    #[error("{path}: already exists; not overwritten (choose an empty directory)")]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// The on-disk store is unreadable.
    #[error("store {path}: {message}")]
    Store {
        /// Store file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// True for a full disk (or quota): an I/O error with `ENOSPC` / `EDQUOT`.
    pub(crate) fn is_storage_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => {
                source.kind() == std::io::ErrorKind::StorageFull
                    || source.kind() == std::io::ErrorKind::QuotaExceeded
                    || source.raw_os_error() == Some(28)
            }
            _ => false,
        }
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// One FastAPI-style validation item (`loc` is e.g. `["header","mex-to"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationItem {
    /// `missing`, `string_too_long`, `greater_than_equal`, ...
    pub kind: &'static str,
    /// `header`, `query` or `path`.
    pub location: &'static str,
    /// Parameter name, lower-case.
    pub name: String,
    /// Human text, e.g. `Field required`.
    pub msg: &'static str,
}

/// FastAPI reports header names lower-case, query and path names as declared (`messageID`).
fn param_name(location: &str, name: &str) -> String {
    if location == "header" {
        name.to_ascii_lowercase()
    } else {
        name.to_string()
    }
}

impl ValidationItem {
    pub(crate) fn missing(location: &'static str, name: &str) -> ValidationItem {
        ValidationItem {
            kind: "missing",
            location,
            name: param_name(location, name),
            msg: "Field required",
        }
    }
    pub(crate) fn invalid(location: &'static str, name: &str, msg: &'static str) -> ValidationItem {
        ValidationItem {
            kind: "value_error",
            location,
            name: param_name(location, name),
            msg,
        }
    }
}

/// A failed request. Converted to a response by [`ApiError::into_response`] only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// A MESH-shaped error (v1 or v2 body depending on the request's `Accept`).
    Mesh {
        /// HTTP status.
        status: StatusCode,
        /// `errorEvent` / `event`.
        event: &'static str,
        /// `errorCode` / `code`.
        code: &'static str,
        /// `errorDescription` / `msg`.
        msg: &'static str,
        /// Message id the error is tied to, if any.
        message_id: Option<String>,
    },
    /// The generic "internal error" body with the given status (423, 406, 500).
    Generic(StatusCode),
    /// 400 with a FastAPI validation body.
    Validation(Vec<ValidationItem>),
    /// 400 `Accept header api format incorrect` (always the v1 shape).
    BadAccept,
    /// 404 `{"detail":"Not Found"}` for an unknown route.
    NoRoute,
    /// 405 `{"detail":"Method Not Allowed"}`.
    MethodNotAllowed,
}

const fn mesh(
    status: StatusCode,
    event: &'static str,
    code: &'static str,
    msg: &'static str,
) -> ApiError {
    ApiError::Mesh {
        status,
        event,
        code,
        msg,
        message_id: None,
    }
}

impl ApiError {
    /// 403: header missing, blank or malformed.
    pub const AUTH_HEADER: ApiError = mesh(
        StatusCode::FORBIDDEN,
        "",
        "",
        "Error reading from Authorization header",
    );
    /// 403: token mailbox differs from the path mailbox.
    pub const MAILBOX_MISMATCH: ApiError = mesh(
        StatusCode::FORBIDDEN,
        "",
        "",
        "Mailbox id does not match token",
    );
    /// 403: unknown mailbox (EPL-151).
    pub const NO_MAILBOX: ApiError = mesh(
        StatusCode::FORBIDDEN,
        "SEND",
        "EPL-151",
        "No mailbox matched",
    );
    /// 403: HMAC, password, shared key, timestamp or replay failure.
    pub const INVALID_TOKEN: ApiError = mesh(
        StatusCode::FORBIDDEN,
        "",
        "",
        "Invalid Authentication Token",
    );
    /// 403 without a MESH code.
    pub const FORBIDDEN: ApiError = mesh(StatusCode::FORBIDDEN, "", "", "Forbidden");
    /// 404 without a MESH code (tracking, chunk upload to an unknown message).
    pub const NOT_FOUND: ApiError = mesh(StatusCode::NOT_FOUND, "", "", "Not Found");
    /// 404 RECEIVE/20.
    pub const NO_MESSAGE: ApiError = mesh(
        StatusCode::NOT_FOUND,
        "RECEIVE",
        "20",
        "Message does not exist",
    );
    /// 410: not (or no longer) downloadable.
    pub const GONE: ApiError = mesh(
        StatusCode::GONE,
        "SEND",
        "Message already accepted",
        "Message no longer available for download",
    );
    /// 300 for tracking by local id with several matches.
    pub const MULTIPLE: ApiError = mesh(StatusCode::MULTIPLE_CHOICES, "", "", "Multiple Choices");
    /// 400 SEND/08.
    pub const MISSING_TO: ApiError = mesh(StatusCode::BAD_REQUEST, "SEND", "08", "TO_DTS missing");
    /// 400 TRANSFER/06.
    pub const MALFORMED: ApiError = mesh(
        StatusCode::BAD_REQUEST,
        "TRANSFER",
        "06",
        "MalformedControlFile",
    );
    /// 400 invalid checksum characters.
    pub const BAD_CHECKSUM: ApiError = mesh(
        StatusCode::BAD_REQUEST,
        "SEND",
        "Invalid checksum",
        "Invalid checksum",
    );
    /// 422 Content-Encoding other than gzip.
    pub const BAD_ENCODING: ApiError = mesh(
        StatusCode::UNPROCESSABLE_ENTITY,
        "SEND",
        "UnsupportedContentEncoding",
        "Unsupported content encoding",
    );
    /// 417 unknown recipient.
    pub const UNREGISTERED: ApiError = mesh(
        StatusCode::EXPECTATION_FAILED,
        "SEND",
        "12",
        "Unregistered to address",
    );
    /// 417 workflow not registered (real MESH code 17).
    pub const WORKFLOW_NOT_REGISTERED: ApiError = mesh(
        StatusCode::EXPECTATION_FAILED,
        "SEND",
        "17",
        "Workflow ID not registered for mailbox",
    );
    /// 417 COLLECT/02 empty body.
    pub const EMPTY_BODY: ApiError = mesh(
        StatusCode::EXPECTATION_FAILED,
        "COLLECT",
        "02",
        "Data file is missing or inaccessible.",
    );
    /// 417 Content-Encoding differs from chunk 1.
    pub const ENCODING_CHANGED: ApiError = mesh(
        StatusCode::EXPECTATION_FAILED,
        "",
        "",
        "cannot change content encoding",
    );
    /// 413: more than the per-request (100 MB) or per-message (20 GB) limit.
    pub const TOO_LARGE: ApiError = mesh(
        StatusCode::PAYLOAD_TOO_LARGE,
        "SEND",
        "",
        "Request entity too large",
    );
    /// 400 for a request body that could not be read (client went away, bad chunked framing).
    pub const BAD_BODY: ApiError = mesh(
        StatusCode::BAD_REQUEST,
        "COLLECT",
        "02",
        "Data file is missing or inaccessible.",
    );
    /// 423: chunk upload to a finished message.
    pub const LOCKED: ApiError = ApiError::Generic(StatusCode::LOCKED);
    /// 406: chunk number beyond the total.
    pub const NOT_ACCEPTABLE: ApiError = ApiError::Generic(StatusCode::NOT_ACCEPTABLE);
    /// 507 Insufficient Storage: the disk is full; nothing was stored.
    pub const INSUFFICIENT_STORAGE: ApiError = ApiError::Generic(StatusCode::INSUFFICIENT_STORAGE);
    /// 408: the client sent nothing for longer than the body timeout.
    pub const TIMEOUT: ApiError = ApiError::Generic(StatusCode::REQUEST_TIMEOUT);
    /// 500.
    pub const INTERNAL: ApiError = ApiError::Generic(StatusCode::INTERNAL_SERVER_ERROR);

    /// 417 InvalidHeaderChunks, optionally tied to a message id.
    pub fn invalid_chunks(message_id: Option<String>) -> ApiError {
        ApiError::Mesh {
            status: StatusCode::EXPECTATION_FAILED,
            event: "SEND",
            code: "InvalidHeaderChunks",
            msg: "Invalid chunk values sent in mex-Chunk-Range header",
            message_id,
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Mesh { status, .. } => *status,
            ApiError::Generic(status) => *status,
            ApiError::Validation(_) | ApiError::BadAccept => StatusCode::BAD_REQUEST,
            ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// Renders the error for a request made with `version`.
    pub fn into_response(self, version: ApiVersion) -> Response<ResponseBody> {
        let status = self.status();
        let (body, v2) = match self {
            ApiError::Mesh {
                event,
                code,
                msg,
                message_id,
                ..
            } => match version {
                ApiVersion::V1 => {
                    let mut v =
                        json!({"errorEvent": event, "errorCode": code, "errorDescription": msg});
                    if let Some(id) = message_id {
                        v["messageID"] = id.into();
                    }
                    (v, false)
                }
                ApiVersion::V2 => {
                    let detail = json!([{"event": event, "code": code, "msg": msg}]);
                    let v = match message_id {
                        Some(id) => json!({"message_id": id, "detail": detail}),
                        None => json!({ "detail": detail }),
                    };
                    (v, true)
                }
            },
            ApiError::Generic(_) => (
                json!({"message": "An internal error occurred.\n\nPlease contact support."}),
                false,
            ),
            ApiError::Validation(items) => {
                let detail: Vec<_> = items
                    .iter()
                    .map(|i| json!({"type": i.kind, "loc": [i.location, i.name], "msg": i.msg}))
                    .collect();
                (json!({ "detail": detail }), false)
            }
            ApiError::BadAccept => (
                json!({"errorEvent": "", "errorCode": "", "errorDescription": "Accept header api format incorrect"}),
                false,
            ),
            ApiError::NoRoute => (json!({"detail": "Not Found"}), false),
            ApiError::MethodNotAllowed => (json!({"detail": "Method Not Allowed"}), false),
        };
        let content_type = if v2 {
            JsonType::MeshV2
        } else {
            JsonType::Plain
        };
        json_response(status, &body, content_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(e: ApiError, v: ApiVersion) -> (StatusCode, String) {
        let r = e.into_response(v);
        let s = r.status();
        let b = r.into_body().collect().await.unwrap().to_bytes();
        (s, String::from_utf8(b.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn shapes_match_the_captured_exchanges() {
        // E20 / E21
        assert_eq!(
            body_of(ApiError::UNREGISTERED, ApiVersion::V2).await.1,
            r#"{"detail":[{"code":"12","event":"SEND","msg":"Unregistered to address"}]}"#
        );
        let (s, b) = body_of(ApiError::UNREGISTERED, ApiVersion::V1).await;
        assert_eq!(s, StatusCode::EXPECTATION_FAILED);
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["errorCode"], "12");
        // E35 carries the message id
        let (_, b) = body_of(ApiError::invalid_chunks(Some("X".into())), ApiVersion::V2).await;
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["message_id"], "X");
        assert_eq!(v["detail"][0]["code"], "InvalidHeaderChunks");
        // E34 generic
        let (s, b) = body_of(ApiError::LOCKED, ApiVersion::V2).await;
        assert_eq!(s, StatusCode::LOCKED);
        assert!(b.contains("Please contact support."));
        // E22 validation
        let (_, b) = body_of(
            ApiError::Validation(vec![ValidationItem::missing("header", "Mex-To")]),
            ApiVersion::V2,
        )
        .await;
        assert_eq!(
            b,
            r#"{"detail":[{"loc":["header","mex-to"],"msg":"Field required","type":"missing"}]}"#
        );
    }
}
