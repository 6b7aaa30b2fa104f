//! Send a message and upload its further chunks (`mesh-protocol.md` §5.2, §5.3, §7).
//!
//! Bodies (with `Content-Length` or `Transfer-Encoding: chunked`) are streamed: in the disk
//! store to a temporary file by a blocking writer fed through a small bounded channel, then
//! fsynced and renamed into place; the 202 is sent only after the chunk and the metadata are
//! durable. More than `max_request_bytes` in one request, or more than `max_message_bytes` in
//! one message, is refused with 413.

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Body;
use serde_json::{json, Value};
use std::io::Write;

use super::Ctx;
use crate::body::ResponseBody;
use crate::config::MailboxConfig;
use crate::error::ApiError;
use crate::headers::{parse_chunk_range, parse_content_encoding, parse_send_headers};
use crate::pos;
use crate::response::{json, ApiVersion, JsonType};
use crate::store::{create_private, Message, MessageType, Place, Received, Status};

/// Streams a request body into the store's staging area, refusing more than `limit` bytes.
async fn receive_body<B>(ctx: &Ctx<'_>, mut body: B, limit: u64) -> Result<Received, ApiError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    if let Some(len) = ctx
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit {
            return Err(ApiError::TOO_LARGE);
        }
    }
    let store = &ctx.state.store;
    let Some(tmp) = store.tmp_path() else {
        // memory store
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| ApiError::BAD_BODY)?;
            if let Ok(data) = frame.into_data() {
                if buf.len() as u64 + data.len() as u64 > limit {
                    return Err(ApiError::TOO_LARGE);
                }
                buf.extend_from_slice(&data);
            }
        }
        return Ok(Received::Memory(buf.freeze()));
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(32);
    let path = tmp.clone();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let f = create_private(&path)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        let mut size = 0u64;
        while let Some(data) = rx.blocking_recv() {
            w.write_all(&data)?;
            size += data.len() as u64;
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(size)
    });
    let mut total = 0u64;
    let mut failure = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            failure = Some(ApiError::BAD_BODY);
            break;
        };
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            if total > limit {
                failure = Some(ApiError::TOO_LARGE);
                break;
            }
            if tx.send(data).await.is_err() {
                failure = Some(ApiError::INTERNAL);
                break;
            }
        }
    }
    drop(tx);
    let written = writer.await;
    let received = match (failure, written) {
        (None, Ok(Ok(size))) => return Ok(Received::File { tmp, size }),
        (Some(e), _) => e,
        (None, Ok(Err(e))) => {
            tracing::error!(error = %e, "could not stage a chunk");
            ApiError::INTERNAL
        }
        (None, Err(_)) => ApiError::INTERNAL,
    };
    let _ = tokio::fs::remove_file(&tmp).await;
    Err(received)
}

/// Real MESH error 17: a mailbox restricted to registered workflows.
fn workflow_allowed(
    ctx: &Ctx<'_>,
    sender: &MailboxConfig,
    recipient: &MailboxConfig,
    wf: &str,
) -> bool {
    let registered = |f: &dyn Fn(&crate::config::WorkflowConfig) -> bool| {
        ctx.state
            .config
            .workflows
            .iter()
            .any(|w| w.id == wf && f(w))
    };
    (sender.any_workflow || registered(&|w| w.senders.contains(&sender.id)))
        && (recipient.any_workflow || registered(&|w| w.receivers.contains(&recipient.id)))
}

/// `POST /messageexchange/{mb}/outbox`.
pub(crate) async fn send<B>(
    ctx: &Ctx<'_>,
    body: B,
) -> Result<http::Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    let state = ctx.state;
    let h = parse_send_headers(ctx.headers)?;
    let recipient = state.mailboxes.get(&h.to).ok_or(ApiError::UNREGISTERED)?;
    let sender = state
        .mailboxes
        .get(&ctx.mailbox)
        .ok_or(ApiError::NO_MAILBOX)?;
    if !workflow_allowed(ctx, sender, recipient, &h.workflow_id) {
        return Err(ApiError::WORKFLOW_NOT_REGISTERED);
    }
    let limit = state
        .config
        .max_request_bytes
        .min(state.config.max_message_bytes);
    let received = receive_body(ctx, body, limit).await?;
    if received.size() == 0 {
        state.store.discard(received).await;
        return Err(ApiError::EMPTY_BODY);
    }
    let now = state.config.clock.now();
    let id = state.store.new_id(now);
    let size = received.size();
    let total = h.chunk_range.1;
    let mut chunks = vec![None; total as usize];
    chunks[0] = Some(size);
    let complete = total == 1;
    let now_us = now.timestamp_micros();
    let m = Message {
        subject: h.subject,
        local_id: h.local_id,
        partner_id: h.partner_id,
        file_name: h.file_name,
        checksum: h.checksum,
        content_type: h.content_type,
        encrypted: h.encrypted,
        compressed: h.compressed,
        content_encoding: h.content_encoding,
        total_chunks: total,
        chunks,
        status: if complete {
            Status::Accepted
        } else {
            Status::Uploading
        },
        accepted_us: complete.then_some(now_us),
        ..Message::new(
            id.clone(),
            MessageType::Data,
            Some(ctx.mailbox.clone()),
            recipient.id.clone(),
            h.workflow_id,
            now_us,
        )
    };
    let place = Place {
        id: id.clone(),
        n: 1,
        body: received,
    };
    let m = state
        .store
        .commit(Some(place), move |inner| Ok(vec![inner.new_message(m)?]))
        .await?
        .remove(0);
    tracing::debug!(message_id = %id, chunks = total, "message created");
    if complete {
        pos::job::on_accepted(state, &m);
    }
    let body = match ctx.version {
        ApiVersion::V1 => json!({"messageID": id}),
        ApiVersion::V2 => json!({"message_id": id}),
    };
    Ok(json(StatusCode::ACCEPTED, &body, JsonType::Plain))
}

/// `POST /messageexchange/{mb}/outbox/{id}/{n}`.
pub(crate) async fn upload_chunk<B>(
    ctx: &Ctx<'_>,
    id: &str,
    chunk: &str,
    body: B,
) -> Result<http::Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    let state = ctx.state;
    let invalid = || ApiError::invalid_chunks(Some(id.to_string()));
    let range = ctx
        .headers
        .get("mex-chunk-range")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_chunk_range)
        .ok_or_else(invalid)?;
    let n: u32 = chunk.parse().map_err(|_| invalid())?;
    if range.0 != n {
        return Err(invalid());
    }
    let encoding = parse_content_encoding(ctx.headers).map_err(|_| ApiError::ENCODING_CHANGED)?;
    let m = state
        .store
        .check_chunk_upload(id, &ctx.mailbox, n, encoding)?;
    let already = m.file_size() - m.chunks.get(n as usize - 1).copied().flatten().unwrap_or(0);
    let limit = state
        .config
        .max_request_bytes
        .min(state.config.max_message_bytes.saturating_sub(already));
    let received = receive_body(ctx, body, limit).await?;
    let size = received.size();
    let now_us = state.config.clock.now().timestamp_micros();
    let max = state.config.max_message_bytes;
    let place = Place {
        id: id.to_string(),
        n,
        body: received,
    };
    let owned_id = id.to_string();
    let m = state
        .store
        .commit(Some(place), move |inner| {
            Ok(vec![inner.with_chunk(&owned_id, n, size, max, now_us)?])
        })
        .await?
        .remove(0);
    if m.status == Status::Accepted {
        pos::job::on_accepted(state, &m);
    }
    let body = match ctx.version {
        ApiVersion::V1 => json!({"messageID": id, "blockID": n}),
        ApiVersion::V2 => Value::Null,
    };
    Ok(json(StatusCode::ACCEPTED, &body, JsonType::Plain))
}
