//! Handshake (`mesh-protocol.md` §5.1): `POST` (or `GET`) `/messageexchange/{mb}`; requires
//! `mex-ClientVersion`, `mex-OSName`, `mex-OSVersion` (400 validation listing each missing one).

use http::StatusCode;
use serde_json::json;

use super::Ctx;
use crate::body::ResponseBody;
use crate::error::{ApiError, ValidationItem};
use crate::response::{empty_ok, json, ApiVersion, JsonType};

/// v2: empty 200; v1: `{"mailboxId": ...}`.
pub(crate) fn handshake(ctx: &Ctx<'_>) -> Result<http::Response<ResponseBody>, ApiError> {
    let missing: Vec<_> = ["mex-clientversion", "mex-osname", "mex-osversion"]
        .into_iter()
        .filter(|h| ctx.headers.get(*h).is_none())
        .map(|h| ValidationItem::missing("header", h))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::Validation(missing));
    }
    tracing::debug!(mailbox = %ctx.mailbox, "handshake");
    Ok(match ctx.version {
        ApiVersion::V2 => empty_ok(),
        ApiVersion::V1 => json(
            StatusCode::OK,
            &json!({"mailboxId": ctx.mailbox}),
            JsonType::Plain,
        ),
    })
}
