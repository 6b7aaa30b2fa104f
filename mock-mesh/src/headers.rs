//! Parsing of the request headers MESH reads: `Accept` (API version, `mesh-protocol.md` §4),
//! `Mex-Chunk-Range` (§7), the `mex-*` send headers with their validation rules (§5.2, §9), and
//! `Content-Encoding` / `Accept-Encoding` (§8). Pure functions over `http::HeaderMap`, exposed
//! publicly for the fuzz targets.

/// The header types of this module's signatures, re-exported for callers (the fuzz targets).
pub use http::{HeaderMap, HeaderName, HeaderValue};

use crate::error::{ApiError, ValidationItem};
pub use crate::response::ApiVersion;

/// Reads the API version from an `Accept` value (§4): split on `;` (not `,`); the first piece
/// containing `vnd.mesh` must be exactly `application/vnd.mesh.v<digits>+json`.
pub fn parse_api_version(accept: Option<&[u8]>) -> Result<ApiVersion, ApiError> {
    let Some(accept) = accept else {
        return Ok(ApiVersion::V1);
    };
    let Ok(accept) = std::str::from_utf8(accept) else {
        return Ok(ApiVersion::V1);
    };
    for piece in accept.split(';') {
        if !piece.contains("vnd.mesh") {
            continue;
        }
        let digits = piece
            .trim()
            .strip_prefix("application/vnd.mesh.v")
            .and_then(|rest| rest.strip_suffix("+json"))
            .ok_or(ApiError::BadAccept)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::BadAccept);
        }
        let version: u64 = digits.parse().unwrap_or(u64::MAX);
        return Ok(if version >= 2 {
            ApiVersion::V2
        } else {
            ApiVersion::V1
        });
    }
    Ok(ApiVersion::V1)
}

/// Parses `Mex-Chunk-Range: n:N` (§7): two base-10 integers around one `:`, whitespace
/// around each trimmed, `1 <= n <= N`, at most 20 characters. `None` if invalid.
pub fn parse_chunk_range(value: &str) -> Option<(u32, u32)> {
    if value.len() > 20 {
        return None;
    }
    let (a, b) = value.split_once(':')?;
    let n = parse_u32(a.trim())?;
    let total = parse_u32(b.trim())?;
    if n == 0 || n > total {
        return None;
    }
    Some((n, total))
}

fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Most chunks one message may have. MESH sets no number, only 100 MB per chunk and 20 GB per
/// message (mesh-client cuts 75 MiB chunks: 273 for 20 GB); a bound keeps a `1:4294967295`
/// header from making the server allocate a chunk table of gigabytes. 417 beyond it.
pub const MAX_CHUNKS: u32 = 100_000;

/// Transport encoding of an uploaded body (§8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
pub enum ContentEncoding {
    /// No `Content-Encoding` (or `identity`).
    #[default]
    Identity,
    /// `Content-Encoding: gzip`.
    Gzip,
}

/// Reads `Content-Encoding`: absent/empty/`identity` → identity, `gzip` → gzip, else 422.
pub fn parse_content_encoding(headers: &HeaderMap) -> Result<ContentEncoding, ApiError> {
    match headers.get(http::header::CONTENT_ENCODING) {
        None => Ok(ContentEncoding::Identity),
        Some(v) => {
            let v = v.to_str().map_err(|_| ApiError::BAD_ENCODING)?.trim();
            if v.is_empty() || v.eq_ignore_ascii_case("identity") {
                Ok(ContentEncoding::Identity)
            } else if v.eq_ignore_ascii_case("gzip") {
                Ok(ContentEncoding::Gzip)
            } else {
                Err(ApiError::BAD_ENCODING)
            }
        }
    }
}

/// True if `Accept-Encoding` lists gzip (with a non-zero q).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let zero_q = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
            });
            coding.eq_ignore_ascii_case("gzip") && !zero_q
        })
}

/// The metadata headers of a send request (chunk 1), validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendHeaders {
    /// Recipient mailbox, upper-cased and trimmed.
    pub to: String,
    /// Workflow id.
    pub workflow_id: String,
    /// `(n, N)` from `Mex-Chunk-Range`, `(1, 1)` when absent.
    pub chunk_range: (u32, u32),
    /// `Mex-Subject`.
    pub subject: Option<String>,
    /// `Mex-LocalID`.
    pub local_id: Option<String>,
    /// `Mex-PartnerID`.
    pub partner_id: Option<String>,
    /// `Mex-FileName`.
    pub file_name: Option<String>,
    /// `Mex-Content-Encrypted` flag.
    pub encrypted: bool,
    /// `Mex-Content-Compressed` flag.
    pub compressed: bool,
    /// `Mex-Content-Checksum`.
    pub checksum: Option<String>,
    /// `Mex-Content-Type`, else `Content-Type`.
    pub content_type: Option<String>,
    /// Transport encoding.
    pub content_encoding: ContentEncoding,
}

/// Maximum lengths the sandbox enforces (400 validation when exceeded).
const LIMITS: &[(&str, usize)] = &[
    ("mex-to", 100),
    ("mex-workflowid", 300),
    ("mex-chunk-range", 20),
    ("mex-subject", 500),
    ("mex-localid", 300),
    ("mex-partnerid", 500),
    ("mex-filename", 300),
    ("mex-content-encrypted", 20),
    ("mex-content-compressed", 20),
    ("mex-content-checksum", 100),
    ("mex-content-type", 100),
];

fn text(headers: &HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        // non-UTF-8 / obs-text bytes: treated like control characters (06)
        Some(v) => match std::str::from_utf8(v.as_bytes()) {
            Ok(s) => Ok(Some(s.to_string())),
            Err(_) => Err(ApiError::MALFORMED),
        },
    }
}

/// Python `strtobool`-style flag: y/yes/t/true/on/1 → true; anything else false.
fn flag(v: Option<&str>) -> bool {
    matches!(
        v.map(|s| s.trim().to_ascii_lowercase()).as_deref(),
        Some("y" | "yes" | "t" | "true" | "on" | "1")
    )
}

fn is_url(v: &str) -> bool {
    let l = v.trim_start().to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

/// Parses and validates the send headers in the sandbox's order (§5.2): missing/too long →
/// 400 validation; control characters or URLs → 400/06; bad checksum → 400; empty `Mex-To` →
/// 400/08; bad `Content-Encoding` → 422; bad chunk range → 417.
pub fn parse_send_headers(headers: &HeaderMap) -> Result<SendHeaders, ApiError> {
    let mut missing = Vec::new();
    for name in ["mex-to", "mex-workflowid"] {
        if headers.get(name).is_none() {
            missing.push(ValidationItem::missing("header", name));
        }
    }
    for (name, max) in LIMITS {
        if let Some(v) = headers.get(*name) {
            if v.len() > *max {
                missing.push(ValidationItem {
                    kind: "string_too_long",
                    location: "header",
                    name: (*name).to_string(),
                    msg: "String should have at most the allowed number of characters",
                });
            }
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::Validation(missing));
    }
    let mut values = Vec::with_capacity(LIMITS.len());
    for (name, _) in LIMITS {
        let v = text(headers, name)?;
        if let Some(s) = &v {
            if s.bytes().any(|b| b < 0x20) {
                return Err(ApiError::MALFORMED);
            }
        }
        values.push(v);
    }
    let get = |name: &str| -> Option<String> {
        LIMITS
            .iter()
            .position(|(n, _)| *n == name)
            .and_then(|i| values[i].clone())
    };
    let to = get("mex-to").unwrap_or_default();
    let workflow_id = get("mex-workflowid").unwrap_or_default();
    let checksum = get("mex-content-checksum");
    if is_url(&to) || is_url(&workflow_id) || checksum.as_deref().is_some_and(is_url) {
        return Err(ApiError::MALFORMED);
    }
    if let Some(c) = &checksum {
        if !c
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch.is_whitespace() || ":-/".contains(ch))
        {
            return Err(ApiError::BAD_CHECKSUM);
        }
    }
    let to = to.trim().to_ascii_uppercase();
    if to.is_empty() {
        return Err(ApiError::MISSING_TO);
    }
    let content_encoding = parse_content_encoding(headers)?;
    let chunk_range = match get("mex-chunk-range") {
        None => (1, 1),
        Some(v) => match parse_chunk_range(&v) {
            Some((1, total)) if total <= MAX_CHUNKS => (1, total),
            _ => return Err(ApiError::invalid_chunks(None)),
        },
    };
    let content_type = get("mex-content-type").or_else(|| {
        headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    Ok(SendHeaders {
        to,
        workflow_id,
        chunk_range,
        subject: nonempty(get("mex-subject")),
        local_id: nonempty(get("mex-localid")),
        partner_id: nonempty(get("mex-partnerid")),
        file_name: nonempty(get("mex-filename")),
        encrypted: flag(get("mex-content-encrypted").as_deref()),
        compressed: flag(get("mex-content-compressed").as_deref()),
        checksum: nonempty(checksum),
        content_type: nonempty(content_type),
        content_encoding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn chunk_ranges() {
        assert_eq!(parse_chunk_range("1:1"), Some((1, 1)));
        assert_eq!(parse_chunk_range("2:3"), Some((2, 3)));
        assert_eq!(parse_chunk_range(" 2 : 3 "), Some((2, 3)));
        assert_eq!(parse_chunk_range("0:3"), None);
        assert_eq!(parse_chunk_range("4:3"), None);
        assert_eq!(parse_chunk_range("1:0"), None);
        assert_eq!(parse_chunk_range("1"), None);
        assert_eq!(parse_chunk_range("1:2:3"), None);
        assert_eq!(parse_chunk_range("-1:3"), None);
        assert_eq!(parse_chunk_range("+1:3"), None);
        assert_eq!(parse_chunk_range("a:b"), None);
        assert_eq!(parse_chunk_range("1:99999999999"), None);
        assert_eq!(parse_chunk_range("1:4294967295"), Some((1, u32::MAX)));
        assert_eq!(parse_chunk_range("1:000000000000000000003"), None); // > 20 chars
    }

    #[test]
    fn accept_versions() {
        assert_eq!(parse_api_version(None), Ok(ApiVersion::V1));
        assert_eq!(parse_api_version(Some(b"*/*")), Ok(ApiVersion::V1));
        assert_eq!(
            parse_api_version(Some(b"application/vnd.mesh.v2+json")),
            Ok(ApiVersion::V2)
        );
        assert_eq!(
            parse_api_version(Some(b"application/vnd.mesh.v1+json")),
            Ok(ApiVersion::V1)
        );
        assert_eq!(
            parse_api_version(Some(b"application/vnd.mesh.v3+json")),
            Ok(ApiVersion::V2)
        );
        assert_eq!(
            parse_api_version(Some(b"application/vnd.mesh.vX+json")),
            Err(ApiError::BadAccept)
        );
        // the comma is not a separator (sandbox quirk, §4)
        assert_eq!(
            parse_api_version(Some(b"application/vnd.mesh.v2+json, application/json")),
            Err(ApiError::BadAccept)
        );
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn send_header_rules() {
        let ok = parse_send_headers(&map(&[
            ("mex-to", " x26abc2 "),
            ("mex-workflowid", "TEST_WORKFLOW"),
            ("mex-content-checksum", "sha256:b10a"),
            ("mex-content-compressed", "Y"),
            ("content-type", "text/plain"),
        ]))
        .unwrap();
        assert_eq!(ok.to, "X26ABC2");
        assert_eq!(ok.chunk_range, (1, 1));
        assert!(ok.compressed && !ok.encrypted);
        assert_eq!(ok.content_type.as_deref(), Some("text/plain"));
        assert!(matches!(
            parse_send_headers(&map(&[("mex-workflowid", "W")])),
            Err(ApiError::Validation(_))
        ));
        assert_eq!(
            parse_send_headers(&map(&[("mex-to", ""), ("mex-workflowid", "W")])),
            Err(ApiError::MISSING_TO)
        );
        assert_eq!(
            parse_send_headers(&map(&[("mex-to", "A"), ("mex-workflowid", "http://evil")])),
            Err(ApiError::MALFORMED)
        );
        assert_eq!(
            parse_send_headers(&map(&[
                ("mex-to", "A"),
                ("mex-workflowid", "W"),
                ("mex-content-checksum", "a;b")
            ])),
            Err(ApiError::BAD_CHECKSUM)
        );
        assert_eq!(
            parse_send_headers(&map(&[
                ("mex-to", "A"),
                ("mex-workflowid", "W"),
                ("content-encoding", "br")
            ])),
            Err(ApiError::BAD_ENCODING)
        );
        assert_eq!(
            parse_send_headers(&map(&[
                ("mex-to", "A"),
                ("mex-workflowid", "W"),
                ("mex-chunk-range", "2:3")
            ])),
            Err(ApiError::invalid_chunks(None))
        );
    }

    #[test]
    fn gzip_acceptance() {
        assert!(accepts_gzip(&map(&[("accept-encoding", "gzip")])));
        assert!(accepts_gzip(&map(&[("accept-encoding", "gzip, deflate")])));
        assert!(!accepts_gzip(&map(&[("accept-encoding", "identity")])));
        assert!(!accepts_gzip(&map(&[("accept-encoding", "gzip;q=0")])));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
