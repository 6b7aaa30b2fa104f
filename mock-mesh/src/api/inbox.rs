//! Inbox: list with paging (`mesh-protocol.md` §5.4), HEAD and download of a message or chunk
//! (§5.5–5.7, headers §6, encoding §8), acknowledge (§5.8), count (§5.9).
//!
//! Lifecycle as the real service (§11, §17.7): only `accepted` messages are listed and can be
//! downloaded; an acknowledged message is gone (410) and its data is freed.
//!
//! Encoding: a gzip-stored chunk is passed through when the client accepts gzip and decoded on
//! the fly otherwise; an identity-stored chunk is always sent as stored (unlike the sandbox we
//! never gzip on the fly at level 9 — that made its downloads 20x slower; the spec lets the
//! server choose).

use flate2::read::MultiGzDecoder;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::json;

use super::Ctx;
use crate::body::{empty, full, stream_reader, ResponseBody};
use crate::error::{ApiError, ValidationItem};
use crate::headers::{accepts_gzip, ContentEncoding};
use crate::mapped::stream_file;
use crate::response::{compact_time, empty_ok, json, set, ApiVersion, JsonType};
use crate::store::{ChunkSource, Message, MessageType, Status, WorkflowFilter};

/// `GET /messageexchange/{mb}/inbox`.
pub(crate) fn list(ctx: &Ctx<'_>) -> Result<Response<ResponseBody>, ApiError> {
    let max = match ctx.query("max_results") {
        None => 500,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (10..=5000).contains(&n) => n,
            _ => {
                return Err(ApiError::Validation(vec![ValidationItem::invalid(
                    "query",
                    "max_results",
                    "Input should be between 10 and 5000",
                )]))
            }
        },
    };
    let filter_text = ctx.query("workflow_filter").filter(|s| !s.is_empty());
    let filter = filter_text.map(WorkflowFilter::parse);
    let after = ctx.query("continue_from").filter(|s| !s.is_empty());
    let (ids, more, count) = ctx
        .state
        .store
        .list_inbox(&ctx.mailbox, after, filter.as_ref(), max)
        .ok_or_else(|| {
            ApiError::Validation(vec![ValidationItem::invalid(
                "query",
                "continue_from",
                "Invalid continuation token",
            )])
        })?;
    Ok(match ctx.version {
        ApiVersion::V1 => json(StatusCode::OK, &json!({ "messages": ids }), JsonType::Plain),
        ApiVersion::V2 => {
            let mut params = Vec::new();
            if max != 500 {
                params.push(format!("max_results={max}"));
            }
            if let Some(f) = filter_text {
                params.push(format!("workflow_filter={}", encode(f)));
            }
            let base = format!("/messageexchange/{}/inbox", ctx.mailbox);
            let with = |extra: Option<String>| {
                let mut p = params.clone();
                p.extend(extra);
                if p.is_empty() {
                    base.clone()
                } else {
                    format!("{base}?{}", p.join("&"))
                }
            };
            let mut links = json!({ "self": with(None) });
            if more {
                if let Some(last) = ids.last() {
                    links["next"] = with(Some(format!("continue_from={}", encode(last)))).into();
                }
            }
            json(
                StatusCode::OK,
                &json!({"messages": ids, "links": links, "approx_inbox_count": count}),
                JsonType::MeshV2,
            )
        }
    })
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /messageexchange/{mb}/count` (deprecated).
pub(crate) fn count(ctx: &Ctx<'_>) -> Result<Response<ResponseBody>, ApiError> {
    let n = ctx
        .state
        .store
        .list_inbox(&ctx.mailbox, None, None, 0)
        .map(|r| r.2)
        .unwrap_or(0);
    let body = match ctx.version {
        ApiVersion::V1 => json!({
            "count": n,
            "internalID": uuid::Uuid::new_v4().simple().to_string(),
            "allResultsIncluded": true
        }),
        ApiVersion::V2 => json!({ "count": n }),
    };
    Ok(json(StatusCode::OK, &body, JsonType::Plain))
}

/// The metadata headers of a download / HEAD (§6).
fn message_headers(h: &mut HeaderMap, m: &Message, n: u32) {
    if let Some(s) = &m.sender {
        set(h, "mex-from", s);
    }
    set(h, "mex-to", &m.recipient);
    set(h, "mex-workflowid", &m.workflow_id);
    set(h, "mex-chunk-range", &format!("{n}:{}", m.total_chunks));
    set(h, "mex-total-chunks", &m.total_chunks.to_string());
    set(h, "mex-addresstype", "ALL");
    if let Some(v) = &m.local_id {
        set(h, "mex-localid", v);
    }
    if let Some(v) = &m.partner_id {
        set(h, "mex-partnerid", v);
    }
    match &m.file_name {
        Some(v) => set(h, "mex-filename", v),
        None => set(h, "mex-filename", &format!("{}.dat", m.id)),
    }
    if let Some(v) = &m.subject {
        set(h, "mex-subject", v);
    }
    set(h, "mex-version", "1.0");
    set(
        h,
        "mex-messagetype",
        match m.message_type {
            MessageType::Data => "DATA",
            MessageType::Report => "REPORT",
        },
    );
    set(h, "mex-messageid", &m.id);
    match &m.error {
        None if m.message_type == MessageType::Data => {
            set(h, "mex-statuscode", "00");
            set(h, "mex-statusevent", "TRANSFER");
            set(
                h,
                "mex-statusdescription",
                "Transferred to recipient mailbox",
            );
            set(h, "mex-statussuccess", "SUCCESS");
        }
        None => set(h, "mex-statussuccess", "ERROR"),
        Some(e) => {
            if let Some(l) = &e.linked_message_id {
                set(h, "mex-linkedmsgid", l);
            }
            set(h, "mex-statuscode", &e.code);
            set(h, "mex-statusevent", &e.event);
            set(h, "mex-statusdescription", &e.description);
            set(h, "mex-statussuccess", "ERROR");
        }
    }
    let accepted = m
        .accepted_us
        .map(crate::clock::from_us)
        .unwrap_or(m.created());
    set(h, "mex-statustimestamp", &compact_time(accepted));
    if m.compressed {
        set(h, "mex-content-compressed", "Y");
    }
    if m.encrypted {
        set(h, "mex-content-encrypted", "Y");
    }
    if let Some(v) = &m.checksum {
        set(h, "mex-content-checksum", v);
    }
    if m.message_type == MessageType::Data {
        set(
            h,
            "mex-content-type",
            m.content_type
                .as_deref()
                .unwrap_or("application/octet-stream"),
        );
    }
    set(
        h,
        "last-modified",
        &m.status_time()
            .format("%a, %d %b %Y %H:%M:%S UTC")
            .to_string(),
    );
}

/// `HEAD`/`GET /messageexchange/{mb}/inbox/{id}[/{n}]`.
pub(crate) fn download(
    ctx: &Ctx<'_>,
    id: &str,
    chunk: Option<&str>,
    head: bool,
) -> Result<Response<ResponseBody>, ApiError> {
    let n: u32 = match chunk {
        None => 1,
        Some(c) => match c.parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(ApiError::Validation(vec![ValidationItem::invalid(
                    "path",
                    "chunk_number",
                    "Input should be greater than or equal to 1",
                )]))
            }
        },
    };
    let m = ctx.state.store.get(id).ok_or(ApiError::NO_MESSAGE)?;
    let is_recipient = m.recipient == ctx.mailbox;
    let is_sender = m.sender.as_deref() == Some(ctx.mailbox.as_str());
    if head {
        if !is_recipient && !is_sender {
            return Err(ApiError::NO_MESSAGE);
        }
        if !is_sender && m.status != Status::Accepted {
            return Err(ApiError::GONE);
        }
    } else {
        if !is_recipient {
            return Err(ApiError::FORBIDDEN);
        }
        if m.status != Status::Accepted {
            return Err(ApiError::GONE);
        }
    }
    let mut resp = Response::new(empty());
    if m.message_type == MessageType::Report {
        message_headers(resp.headers_mut(), &m, 1);
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        return Ok(resp);
    }
    if n > m.total_chunks {
        return Err(ApiError::NO_MESSAGE);
    }
    message_headers(resp.headers_mut(), &m, n);
    if n < m.total_chunks {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    let content_type = match (ctx.version, m.total_chunks, &m.content_type) {
        (ApiVersion::V2, 1, Some(t)) => t.clone(),
        _ => "application/octet-stream".to_string(),
    };
    set(resp.headers_mut(), "content-type", &content_type);
    if head {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        return Ok(resp);
    }
    let size = m
        .chunks
        .get(n as usize - 1)
        .copied()
        .flatten()
        .ok_or(ApiError::NO_MESSAGE)?;
    let source = ctx
        .state
        .store
        .chunk_source(&m.id, n, size)
        .ok_or(ApiError::NO_MESSAGE)?;
    let pass_gzip = m.content_encoding == ContentEncoding::Gzip && accepts_gzip(ctx.headers);
    let decode = m.content_encoding == ContentEncoding::Gzip && !pass_gzip;
    if pass_gzip {
        resp.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    let timeout = ctx.state.config.limits.response_timeout;
    let body = match (source, decode) {
        (ChunkSource::Memory(b), false) => full(b),
        (ChunkSource::Memory(b), true) => stream_reader(
            Box::new(MultiGzDecoder::new(std::io::Cursor::new(b))),
            timeout,
        ),
        (ChunkSource::File { path, size }, false) => {
            let f = std::fs::File::open(&path).map_err(|_| ApiError::NO_MESSAGE)?;
            let stored = f.metadata().map_err(|_| ApiError::NO_MESSAGE)?.len();
            if stored != size {
                // never expected (chunk files are renamed in whole); serve no body that
                // disagrees with its record
                tracing::error!(message_id = %m.id, chunk = n, stored, size, "stored chunk size differs from its record");
                return Err(ApiError::Generic(StatusCode::INTERNAL_SERVER_ERROR));
            }
            stream_file(f, direct_io::open_direct_read(&path), size)
        }
        (ChunkSource::File { path, .. }, true) => {
            let f = std::fs::File::open(&path).map_err(|_| ApiError::NO_MESSAGE)?;
            let reader = MultiGzDecoder::new(std::io::BufReader::with_capacity(1 << 20, f));
            stream_reader(Box::new(reader), timeout)
        }
    };
    *resp.body_mut() = body;
    Ok(resp)
}

/// `PUT /messageexchange/{mb}/inbox/{id}/status/acknowledged`.
pub(crate) async fn acknowledge(
    ctx: &Ctx<'_>,
    id: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    let now = ctx.state.config.clock.now();
    let (m, changed) = ctx.state.store.acknowledge(id, &ctx.mailbox, now).await?;
    if changed {
        ctx.state.store.drop_data(&m).await;
    }
    Ok(match ctx.version {
        ApiVersion::V2 => empty_ok(),
        ApiVersion::V1 => json(StatusCode::OK, &json!({"messageId": m.id}), JsonType::Plain),
    })
}
