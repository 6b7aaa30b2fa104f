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
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use super::Ctx;
use crate::body::ResponseBody;
use crate::config::MailboxConfig;
use crate::error::ApiError;
use crate::headers::{parse_chunk_range, parse_content_encoding, parse_send_headers};
use crate::pos;
use crate::response::{json, ApiVersion, JsonType};
use crate::store::{create_private, Message, MessageType, Place, Received, Status};

/// Write size of the staging writer: frames are gathered into buffers of this size, each
/// written by a short blocking call while the next one fills.
const STAGE_BUF: usize = 1 << 20;

/// A staged file that is deleted when dropped unless kept: a client that disconnects
/// mid-upload (hyper drops the handler's future) leaves nothing in `tmp/`.
struct Staged {
    path: Option<PathBuf>,
}

impl Staged {
    fn keep(mut self) -> PathBuf {
        self.path.take().unwrap_or_default()
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The next data frame of a request body; `None` at the end. A client that sends nothing for
/// `timeout` is refused (408).
async fn next_data<B>(body: &mut B, timeout: Duration) -> Result<Option<Bytes>, ApiError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    loop {
        match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return Err(ApiError::TIMEOUT),
            Ok(None) => return Ok(None),
            Ok(Some(Err(_))) => return Err(ApiError::BAD_BODY),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

type Write = tokio::task::JoinHandle<std::io::Result<(std::fs::File, BytesMut)>>;

/// Writes `buf` to `file` on a blocking thread (one short call, never a thread per upload).
fn write_in_background(mut file: std::fs::File, buf: BytesMut) -> Write {
    tokio::task::spawn_blocking(move || {
        file.write_all(&buf)?;
        Ok((file, buf))
    })
}

async fn finish_write(w: Write) -> std::io::Result<(std::fs::File, BytesMut)> {
    w.await.map_err(std::io::Error::other)?
}

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
    let timeout = ctx.state.config.limits.body_timeout;
    let store = &ctx.state.store;
    let Some(tmp) = store.tmp_path() else {
        // memory store
        let mut buf = BytesMut::new();
        while let Some(data) = next_data(&mut body, timeout).await? {
            if buf.len() as u64 + data.len() as u64 > limit {
                return Err(ApiError::TOO_LARGE);
            }
            buf.extend_from_slice(&data);
        }
        return Ok(Received::Memory(buf.freeze()));
    };
    let staged = Staged {
        path: Some(tmp.clone()),
    };
    let stage_err = |e: std::io::Error| {
        let e = crate::error::Error::io(&tmp, e);
        if e.is_storage_full() {
            tracing::error!(error = %e, "store full; upload refused");
            ApiError::INSUFFICIENT_STORAGE
        } else {
            tracing::error!(error = %e, "could not stage a chunk");
            ApiError::INTERNAL
        }
    };
    let mut file = Some(create_private(&tmp).map_err(stage_err)?);
    let mut buf = BytesMut::with_capacity(STAGE_BUF);
    let mut spare = BytesMut::new();
    let mut writing: Option<Write> = None;
    let mut total = 0u64;
    while let Some(data) = next_data(&mut body, timeout).await? {
        total += data.len() as u64;
        if total > limit {
            return Err(ApiError::TOO_LARGE);
        }
        buf.extend_from_slice(&data);
        if buf.len() >= STAGE_BUF {
            if let Some(w) = writing.take() {
                let (f, mut old) = finish_write(w).await.map_err(stage_err)?;
                old.clear();
                spare = old;
                file = Some(f);
            }
            let next = std::mem::replace(&mut buf, std::mem::take(&mut spare));
            buf.reserve(STAGE_BUF);
            let f = file.take().ok_or(ApiError::INTERNAL)?;
            writing = Some(write_in_background(f, next));
        }
    }
    if let Some(w) = writing.take() {
        let (f, _) = finish_write(w).await.map_err(stage_err)?;
        file = Some(f);
    }
    let mut f = file.take().ok_or(ApiError::INTERNAL)?;
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        f.write_all(&buf)?;
        f.sync_all()
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r)
    .map_err(stage_err)?;
    Ok(Received::File {
        tmp: staged.keep(),
        size: total,
    })
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
    if h.chunk_range.1 > state.config.limits.max_chunks {
        // a declared chunk count costs journal space and memory up front: bounded
        return Err(ApiError::invalid_chunks(None));
    }
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
    let max_uploads = state.config.limits.max_uploads_per_mailbox;
    let m = state
        .store
        .commit(Some(place), move |inner| {
            // checked under the store's lock, so concurrent first chunks cannot overshoot
            if !complete && inner.uploads_from(&m.sender.clone().unwrap_or_default()) >= max_uploads
            {
                return Err(TOO_MANY_UPLOADS);
            }
            Ok(vec![inner.new_message(m)?])
        })
        .await?
        .remove(0);
    tracing::debug!(message_id = %id, chunks = total, "message created");
    pos::job::on_chunk(state, &m);
    if complete {
        pos::job::on_accepted(state, &m);
    }
    let body = match ctx.version {
        ApiVersion::V1 => json!({"messageID": id}),
        ApiVersion::V2 => json!({"message_id": id}),
    };
    Ok(json(StatusCode::ACCEPTED, &body, JsonType::Plain))
}

/// 429 for chunk 1 of a chunked message when the sender already has
/// `limits.max_uploads_per_mailbox` unfinished: each holds staged data until it completes or
/// expires. Real MESH documents no such limit; the mock's body names the cause.
const TOO_MANY_UPLOADS: ApiError = ApiError::Mesh {
    status: StatusCode::TOO_MANY_REQUESTS,
    event: "SEND",
    code: "TooManyUploads",
    msg: "Too many unfinished chunked uploads from this mailbox; finish them or let them expire",
    message_id: None,
};

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
    pos::job::on_chunk(state, &m);
    if m.status == Status::Accepted {
        pos::job::on_accepted(state, &m);
    }
    let body = match ctx.version {
        ApiVersion::V1 => json!({"messageID": id, "blockID": n}),
        ApiVersion::V2 => Value::Null,
    };
    Ok(json(StatusCode::ACCEPTED, &body, JsonType::Plain))
}
