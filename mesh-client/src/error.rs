//! The one error type of the crate.
//!
//! MESH reports failures as an HTTP status plus, usually, a JSON body naming an *event*, a
//! *code* and a *description* (mesh-protocol.md section 10). The body has two shapes depending
//! on the API version (v1 `errorEvent`/`errorCode`/`errorDescription`, v2
//! `detail[0].event/code/msg`); both are parsed here into [`MeshErrorDetail`] so callers can
//! match on the code (`"12"` unregistered recipient, `"20"` unknown message, …) whatever the
//! server speaks. Errors never contain passwords, keys or message bodies.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong while talking to MESH.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The [`ClientConfig`](crate::ClientConfig) or [`SendOptions`](crate::SendOptions) are not
    /// usable (bad URL, plain HTTP to a non-loopback host, chunk size over 100 MB, unreadable
    /// certificate, header value with control characters, …).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Reading or writing a local file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The server answered with an error status.
    #[error("{request}: HTTP {status}{mesh}")]
    Api {
        /// Method and path of the failed request, e.g. `GET /messageexchange/X26ABC1/inbox`.
        request: String,
        /// The HTTP status code.
        status: u16,
        /// The MESH error event/code/description parsed from the body (all `None` if absent).
        mesh: MeshErrorDetail,
    },

    /// The request did not complete: connection refused or reset, TLS failure, timeout, or the
    /// connection dropped while a body was streaming.
    #[error("{request}: {source}")]
    Transport {
        /// Method and path of the failed request.
        request: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },

    /// The server answered with a success status but something the protocol does not allow
    /// (no message id after a send, a malformed `Mex-Chunk-Range`, a corrupt gzip chunk, …).
    #[error("{request}: unexpected response: {reason}")]
    Protocol {
        /// Method and path of the request.
        request: String,
        /// What was wrong.
        reason: String,
    },

    /// A chunked upload stopped after the message was created: chunk 1 was accepted, a later
    /// chunk failed (after retries). Call
    /// [`MeshClient::resume_send`](crate::MeshClient::resume_send) with `message_id` and
    /// `next_chunk` to finish the message instead of sending it again.
    #[error(
        "message {message_id}: upload stopped at chunk {next_chunk} of {total_chunks} \
         (resume from there): {source}"
    )]
    PartialSend {
        /// The id MESH gave the message when chunk 1 was accepted.
        message_id: String,
        /// The first chunk (1-based) that has not been uploaded.
        next_chunk: u32,
        /// Total number of chunks of the message.
        total_chunks: u32,
        /// Why the upload stopped.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// The HTTP status of an [`Error::Api`] (also looked up through [`Error::PartialSend`]).
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            Error::PartialSend { source, .. } => source.status(),
            _ => None,
        }
    }

    /// The MESH error code of an [`Error::Api`] (e.g. `"12"`, `"20"`, `"EPL-151"`), if the body
    /// had one.
    pub fn mesh_code(&self) -> Option<&str> {
        match self {
            Error::Api { mesh, .. } => mesh.code.as_deref(),
            Error::PartialSend { source, .. } => source.mesh_code(),
            _ => None,
        }
    }

    /// Whether repeating the same request may succeed: connection problems, 5xx, 425 (too
    /// early) and 429 (too many requests). Callers decide whether the request is safe to repeat.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Error::Transport { source, .. } => !source.is_builder(),
            Error::Api { status, .. } => *status >= 500 || *status == 425 || *status == 429,
            _ => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The MESH part of an error response (mesh-protocol.md section 10.1).
///
/// Filled from a v1 body (`errorEvent`, `errorCode`, `errorDescription`, `messageID`), a v2 body
/// (`detail[0].event`, `.code`, `.msg`, `message_id`), a FastAPI validation body
/// (`detail[0].msg`) or a generic `{"message": …}`; empty strings count as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MeshErrorDetail {
    /// Where in MESH the error arose, e.g. `SEND`, `RECEIVE`, `TRANSFER`, `COLLECT`.
    pub event: Option<String>,
    /// The MESH error code, e.g. `12` (unregistered recipient) or `20` (no such message).
    pub code: Option<String>,
    /// The human-readable description, e.g. `Invalid Authentication Token`.
    pub description: Option<String>,
    /// The message the error is about, when the server says.
    pub message_id: Option<String>,
}

impl MeshErrorDetail {
    /// Parses an error body of any known shape; unknown shapes give a short text excerpt as the
    /// description (error bodies come from the server, never from message content).
    pub(crate) fn parse(body: &[u8]) -> MeshErrorDetail {
        let non_empty = |v: Option<&serde_json::Value>| {
            v.and_then(|v| v.as_str())
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let description = (!text.is_empty()).then(|| text.chars().take(200).collect());
            return MeshErrorDetail {
                description,
                ..MeshErrorDetail::default()
            };
        };
        let message_id = non_empty(json.get("message_id")).or(non_empty(json.get("messageID")));
        // v2: {"detail":[{"event","code","msg"}]}; FastAPI validation: {"detail":[{"msg","loc"}]}
        if let Some(first) = json
            .get("detail")
            .and_then(|d| d.as_array())
            .and_then(|d| d.first())
        {
            return MeshErrorDetail {
                event: non_empty(first.get("event")),
                code: non_empty(first.get("code")),
                description: non_empty(first.get("msg")),
                message_id,
            };
        }
        // Starlette routing: {"detail":"Not Found"}
        if let Some(detail) = non_empty(json.get("detail")) {
            return MeshErrorDetail {
                description: Some(detail),
                message_id,
                ..MeshErrorDetail::default()
            };
        }
        // v1: {"errorEvent","errorCode","errorDescription"}; generic: {"message"}
        MeshErrorDetail {
            event: non_empty(json.get("errorEvent")),
            code: non_empty(json.get("errorCode")),
            description: non_empty(json.get("errorDescription"))
                .or_else(|| non_empty(json.get("message"))),
            message_id,
        }
    }
}

impl fmt::Display for MeshErrorDetail {
    /// Formats as ` (SEND 12: Unregistered to address)`, or nothing when all parts are absent.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = [&self.event, &self.code]
            .into_iter()
            .filter_map(|p| p.as_deref())
            .collect();
        match (&self.description, parts.is_empty()) {
            (None, true) => Ok(()),
            (None, false) => write!(f, " ({})", parts.join(" ")),
            (Some(d), true) => write!(f, " ({d})"),
            (Some(d), false) => write!(f, " ({}: {d})", parts.join(" ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v2_body() {
        let d = MeshErrorDetail::parse(
            br#"{"detail":[{"event":"SEND","code":"12","msg":"Unregistered to address"}]}"#,
        );
        assert_eq!(d.event.as_deref(), Some("SEND"));
        assert_eq!(d.code.as_deref(), Some("12"));
        assert_eq!(d.description.as_deref(), Some("Unregistered to address"));
        assert_eq!(d.to_string(), " (SEND 12: Unregistered to address)");
    }

    #[test]
    fn parses_v1_body_and_treats_empty_strings_as_absent() {
        let d = MeshErrorDetail::parse(
            br#"{"errorEvent":"","errorCode":"","errorDescription":"Invalid Authentication Token"}"#,
        );
        assert_eq!(d.event, None);
        assert_eq!(d.code, None);
        assert_eq!(
            d.description.as_deref(),
            Some("Invalid Authentication Token")
        );
        assert_eq!(d.to_string(), " (Invalid Authentication Token)");

        let d = MeshErrorDetail::parse(
            br#"{"messageID":"ABC","errorEvent":"SEND","errorCode":"InvalidHeaderChunks","errorDescription":"x"}"#,
        );
        assert_eq!(d.code.as_deref(), Some("InvalidHeaderChunks"));
        assert_eq!(d.message_id.as_deref(), Some("ABC"));
    }

    #[test]
    fn parses_other_shapes() {
        let d = MeshErrorDetail::parse(br#"{"detail":"Not Found"}"#);
        assert_eq!(d.description.as_deref(), Some("Not Found"));
        let d = MeshErrorDetail::parse(br#"{"message":"An internal error occurred."}"#);
        assert_eq!(
            d.description.as_deref(),
            Some("An internal error occurred.")
        );
        let d = MeshErrorDetail::parse(
            br#"{"detail":[{"type":"missing","loc":["header","mex-to"],"msg":"Field required"}]}"#,
        );
        assert_eq!(d.description.as_deref(), Some("Field required"));
        let d = MeshErrorDetail::parse(b"");
        assert_eq!(d, MeshErrorDetail::default());
        assert_eq!(d.to_string(), "");
        let d = MeshErrorDetail::parse(b"<html>bad gateway</html>");
        assert_eq!(d.description.as_deref(), Some("<html>bad gateway</html>"));
    }

    #[test]
    fn status_and_code_are_reachable_through_partial_send() {
        let api = Error::Api {
            request: "POST /x".into(),
            status: 503,
            mesh: MeshErrorDetail {
                code: Some("99".into()),
                ..Default::default()
            },
        };
        assert!(api.is_transient());
        let partial = Error::PartialSend {
            message_id: "M".into(),
            next_chunk: 2,
            total_chunks: 3,
            source: Box::new(api),
        };
        assert_eq!(partial.status(), Some(503));
        assert_eq!(partial.mesh_code(), Some("99"));
        assert!(!partial.is_transient());
    }
}
