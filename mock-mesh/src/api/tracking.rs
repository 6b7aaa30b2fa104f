//! Tracking (`mesh-protocol.md` §5.10–5.11): only the sender may track; anything else is 404
//! `Not Found`. By local id (deprecated) always answers with the v1 body; 300 when ambiguous.

use http::{Response, StatusCode};
use serde_json::{json, Map, Value};

use super::Ctx;
use crate::body::ResponseBody;
use crate::clock::from_us;
use crate::error::{ApiError, ValidationItem};
use crate::headers::ContentEncoding;
use crate::response::{compact_time, json, ApiVersion, JsonType};
use crate::state::State;
use crate::store::{Message, MessageType, Status};

fn iso(us: i64) -> String {
    from_us(us).format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

fn expiry_us(state: &State, m: &Message) -> i64 {
    let from = m.accepted_us.unwrap_or(m.created_us);
    from.saturating_add(state.config.inbox_expiry.as_micros().min(i64::MAX as u128) as i64)
}

fn v2_body(state: &State, m: &Message) -> Value {
    let rcpt = state.mailboxes.get(&m.recipient);
    let mut o = Map::new();
    o.insert("message_id".into(), m.id.clone().into());
    o.insert(
        "local_id".into(),
        m.local_id.clone().unwrap_or_default().into(),
    );
    o.insert("workflow_id".into(), m.workflow_id.clone().into());
    o.insert(
        "filename".into(),
        m.file_name
            .clone()
            .unwrap_or_else(|| format!("{}.dat", m.id))
            .into(),
    );
    o.insert("expiry_time".into(), iso(expiry_us(state, m)).into());
    o.insert("upload_timestamp".into(), iso(m.created_us).into());
    o.insert("recipient".into(), m.recipient.clone().into());
    if let Some(r) = rcpt {
        o.insert("recipient_name".into(), r.name.clone().into());
        o.insert("recipient_ods_code".into(), r.ods_code.clone().into());
        o.insert("recipient_org_code".into(), r.org_code.clone().into());
        o.insert("recipient_org_name".into(), r.org_name.clone().into());
    }
    let success = m.message_type == MessageType::Data && m.error.is_none();
    o.insert("status_success".into(), success.into());
    o.insert("status".into(), m.status.lower().into());
    if let Some(e) = &m.error {
        o.insert("status_event".into(), e.event.clone().into());
        o.insert("status_timestamp".into(), iso(m.status_us).into());
        o.insert("status_description".into(), e.description.clone().into());
        o.insert("status_code".into(), e.code.clone().into());
    }
    Value::Object(o)
}

fn v1_body(state: &State, m: &Message) -> Value {
    let rcpt = state.mailboxes.get(&m.recipient);
    let sender = m.sender.as_ref().and_then(|s| state.mailboxes.get(s));
    let field = |f: fn(&crate::config::MailboxConfig) -> &String,
                 mb: Option<&crate::config::MailboxConfig>| {
        mb.map(|x| f(x).clone()).unwrap_or_default()
    };
    let mut v = json!({
        "addressType": "ALL",
        "checksum": m.checksum.clone().unwrap_or_default(),
        "chunkCount": m.total_chunks,
        "compressFlag": if m.compressed { "Y" } else { "" },
        "contentEncoding": if m.content_encoding == ContentEncoding::Gzip { "gzip" } else { "" },
        "downloadTimestamp": m.acknowledged_us.map(|t| compact_time(from_us(t))).unwrap_or_default(),
        "dtsId": m.id,
        "encryptedFlag": if m.encrypted { "Y" } else { "" },
        "expiryTime": compact_time(from_us(expiry_us(state, m))),
        "fileName": m.file_name.clone().unwrap_or_else(|| format!("{}.dat", m.id)),
        "fileSize": m.file_size(),
        "isCompressed": if m.compressed { "Y" } else { "" },
        "localId": m.local_id.clone().unwrap_or_default(),
        "meshRecipientOdsCode": field(|x| &x.ods_code, rcpt),
        "messageId": m.id,
        "messageType": if m.message_type == MessageType::Data { "Data" } else { "Report" },
        "partnerId": m.partner_id.clone().unwrap_or_default(),
        "recipient": m.recipient,
        "recipientName": field(|x| &x.name, rcpt),
        "recipientOrgCode": field(|x| &x.org_code, rcpt),
        "recipientOrgName": field(|x| &x.org_name, rcpt),
        "recipientSmtp": "",
        "sender": m.sender.clone().unwrap_or_default(),
        "senderName": field(|x| &x.name, sender),
        "senderOdsCode": field(|x| &x.ods_code, sender),
        "senderOrgCode": field(|x| &x.org_code, sender),
        "senderOrgName": field(|x| &x.org_name, sender),
        "senderSmtp": "",
        "status": m.status.title(),
        "statusSuccess": if m.error.is_none() && m.status != Status::Undeliverable { "SUCCESS" } else { "ERROR" },
        "subject": m.subject.clone().unwrap_or_default(),
        "uploadTimestamp": compact_time(m.created()),
        "version": "1.0",
        "workflowId": m.workflow_id,
    });
    if let Some(e) = &m.error {
        v["failureDate"] = compact_time(m.status_time()).into();
        v["failureDiagnostic"] = e.description.clone().into();
        v["statusCode"] = e.code.clone().into();
        v["statusEvent"] = e.event.clone().into();
        if let Some(l) = &e.linked_message_id {
            v["linkedMsgId"] = l.clone().into();
        }
    }
    v
}

/// `GET /messageexchange/{mb}/outbox/tracking?messageID={id}`.
pub(crate) fn by_message_id(ctx: &Ctx<'_>) -> Result<Response<ResponseBody>, ApiError> {
    let id = ctx
        .query("messageID")
        .ok_or_else(|| ApiError::Validation(vec![ValidationItem::missing("query", "messageID")]))?;
    let m = ctx
        .state
        .store
        .get(&id.to_ascii_uppercase())
        .filter(|m| m.sender.as_deref() == Some(ctx.mailbox.as_str()))
        .ok_or(ApiError::NOT_FOUND)?;
    Ok(match ctx.version {
        ApiVersion::V2 => json(StatusCode::OK, &v2_body(ctx.state, &m), JsonType::MeshV2),
        ApiVersion::V1 => json(StatusCode::OK, &v1_body(ctx.state, &m), JsonType::Plain),
    })
}

/// `GET /messageexchange/{mb}/outbox/tracking/{local_id}`.
pub(crate) fn by_local_id(
    ctx: &Ctx<'_>,
    local_id: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    let found = ctx.state.store.by_local_id(&ctx.mailbox, local_id);
    match found.as_slice() {
        [] => Err(ApiError::NOT_FOUND),
        [m] => Ok(json(
            StatusCode::OK,
            &v1_body(ctx.state, m),
            JsonType::Plain,
        )),
        _ => Err(ApiError::MULTIPLE),
    }
}
