//! Endpoint lookup and workflow search (`mesh-protocol.md` §5.12–5.13): no auth required
//! (a header, if sent, is ignored, like the sandbox).

use http::StatusCode;
use serde_json::json;

use crate::body::ResponseBody;
use crate::config::MailboxConfig;
use crate::response::{json, ApiVersion, JsonType};
use crate::state::State;

fn receivers<'a>(state: &'a State, workflow: &str) -> Vec<&'a MailboxConfig> {
    let mut out: Vec<&MailboxConfig> = Vec::new();
    for w in state.config.workflows.iter().filter(|w| w.id == workflow) {
        for r in &w.receivers {
            if let Some(m) = state.mailboxes.get(r) {
                if !out.iter().any(|x| x.id == m.id) {
                    out.push(m);
                }
            }
        }
    }
    out
}

/// `GET /messageexchange/endpointlookup/{ods_code}/{workflow_id}`.
pub(crate) fn endpoint_lookup(
    state: &State,
    version: ApiVersion,
    ods: &str,
    workflow: &str,
) -> http::Response<ResponseBody> {
    let hits: Vec<_> = receivers(state, workflow)
        .into_iter()
        .filter(|m| m.ods_code.eq_ignore_ascii_case(ods))
        .collect();
    let body = match version {
        ApiVersion::V1 => json!({
            "query_id": uuid::Uuid::new_v4().simple().to_string(),
            "results": hits.iter().map(|m| json!({"address": m.id, "description": m.name, "endpoint_type": "MESH"})).collect::<Vec<_>>(),
        }),
        ApiVersion::V2 => json!({
            "results": hits.iter().map(|m| json!({"mailbox_id": m.id, "mailbox_name": m.name})).collect::<Vec<_>>(),
        }),
    };
    json(StatusCode::OK, &body, JsonType::Plain)
}

/// `GET /messageexchange/workflowsearch/{workflow_id}` (always the v2 shape).
pub(crate) fn workflow_search(state: &State, workflow: &str) -> http::Response<ResponseBody> {
    let hits = receivers(state, workflow);
    let body = json!({
        "results": hits.iter().map(|m| json!({"mailbox_id": m.id, "mailbox_name": m.name})).collect::<Vec<_>>(),
    });
    json(StatusCode::OK, &body, JsonType::Plain)
}
