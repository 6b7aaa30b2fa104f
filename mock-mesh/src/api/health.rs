//! Ping / health (`mesh-protocol.md` §5.15): no auth.

use http::StatusCode;
use serde_json::json;

use crate::body::ResponseBody;
use crate::response::{json, JsonType};
use crate::state::State;

/// `GET /messageexchange/_ping`, `/health`, `/_status`, `/_ping`, `/healthcheck`, `/messageexchange/deepping`.
pub(crate) fn ping(_state: &State) -> http::Response<ResponseBody> {
    json(
        StatusCode::OK,
        &json!({"env": "local", "build_label": env!("CARGO_PKG_VERSION"), "status": "running", "outcome": "Yes"}),
        JsonType::Plain,
    )
}
