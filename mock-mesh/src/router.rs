//! Routing: a plain function from state + request to response. Paths are under
//! `/messageexchange` (`mesh-protocol.md` §5.0); mailbox and message ids are upper-cased before
//! lookup, like the sandbox. Every request is logged with its route *pattern*, mailbox, status
//! and duration — never a local id, a header value or a body.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response};
use hyper::body::Body;

use crate::api::{self, Ctx};
use crate::body::ResponseBody;
use crate::error::ApiError;
use crate::headers::parse_api_version;
use crate::response::ApiVersion;
use crate::state::State;

/// Which endpoint a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Health,
    EndpointLookup { ods: String, workflow: String },
    WorkflowSearch { workflow: String },
    Handshake,
    Send,
    UploadChunk { id: String, chunk: String },
    TrackById,
    TrackByLocalId { local_id: String },
    Inbox,
    Message { id: String, chunk: Option<String> },
    Acknowledge { id: String },
    Count,
    Update,
}

impl Route {
    fn pattern(&self) -> &'static str {
        match self {
            Route::Health => "health",
            Route::EndpointLookup { .. } => "/endpointlookup/{ods}/{workflow}",
            Route::WorkflowSearch { .. } => "/workflowsearch/{workflow}",
            Route::Handshake => "/{mb}",
            Route::Send => "/{mb}/outbox",
            Route::UploadChunk { .. } => "/{mb}/outbox/{id}/{n}",
            Route::TrackById => "/{mb}/outbox/tracking",
            Route::TrackByLocalId { .. } => "/{mb}/outbox/tracking/{local_id}",
            Route::Inbox => "/{mb}/inbox",
            Route::Message { .. } => "/{mb}/inbox/{id}[/{n}]",
            Route::Acknowledge { .. } => "/{mb}/inbox/{id}/status/acknowledged",
            Route::Count => "/{mb}/count",
            Route::Update => "/{mb}/update",
        }
    }

    fn allows(&self, m: &Method) -> bool {
        match self {
            Route::Health
            | Route::EndpointLookup { .. }
            | Route::WorkflowSearch { .. }
            | Route::TrackById
            | Route::TrackByLocalId { .. }
            | Route::Inbox
            | Route::Count => m == Method::GET,
            Route::Handshake => m == Method::GET || m == Method::POST,
            Route::Send | Route::UploadChunk { .. } | Route::Update => m == Method::POST,
            Route::Message { .. } => m == Method::GET || m == Method::HEAD,
            Route::Acknowledge { .. } => m == Method::PUT,
        }
    }
}

/// Percent-decodes a path segment or query component (`+` → space in queries).
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a query string into decoded pairs.
pub(crate) fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Maps a path to `(mailbox, route)`.
fn resolve(path: &str) -> Option<(Option<String>, Route)> {
    if matches!(path, "/health" | "/_status" | "/_ping" | "/healthcheck") {
        return Some((None, Route::Health));
    }
    let rest = path.strip_prefix("/messageexchange/")?;
    let segs: Vec<String> = rest.split('/').map(|s| percent_decode(s, false)).collect();
    let seg: Vec<&str> = segs.iter().map(String::as_str).collect();
    let up = |s: &str| s.to_ascii_uppercase();
    let r = match seg.as_slice() {
        ["_ping"] | ["deepping"] => (None, Route::Health),
        ["endpointlookup", ods, wf] => (
            None,
            Route::EndpointLookup {
                ods: ods.to_string(),
                workflow: wf.to_string(),
            },
        ),
        ["workflowsearch", wf] => (
            None,
            Route::WorkflowSearch {
                workflow: wf.to_string(),
            },
        ),
        [mb] if !mb.is_empty() => (Some(up(mb)), Route::Handshake),
        [mb, "outbox"] => (Some(up(mb)), Route::Send),
        [mb, "outbox", "tracking"] => (Some(up(mb)), Route::TrackById),
        [mb, "outbox", "tracking", local] => (
            Some(up(mb)),
            Route::TrackByLocalId {
                local_id: local.to_string(),
            },
        ),
        [mb, "outbox", id, n] => (
            Some(up(mb)),
            Route::UploadChunk {
                id: up(id),
                chunk: n.to_string(),
            },
        ),
        [mb, "inbox"] => (Some(up(mb)), Route::Inbox),
        [mb, "inbox", id] => (
            Some(up(mb)),
            Route::Message {
                id: up(id),
                chunk: None,
            },
        ),
        [mb, "inbox", id, n] => (
            Some(up(mb)),
            Route::Message {
                id: up(id),
                chunk: Some(n.to_string()),
            },
        ),
        [mb, "inbox", id, "status", "acknowledged"] => {
            (Some(up(mb)), Route::Acknowledge { id: up(id) })
        }
        [mb, "count"] => (Some(up(mb)), Route::Count),
        [mb, "update"] => (Some(up(mb)), Route::Update),
        _ => return None,
    };
    Some(r)
}

/// Answers one request.
pub(crate) async fn handle<B>(state: &Arc<State>, req: Request<B>) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    if crate::fhir::owns(req.uri().path()) {
        return crate::fhir::handle(state, req).await;
    }
    let started = Instant::now();
    let method = req.method().clone();
    let resolved = resolve(req.uri().path());
    let pattern = resolved.as_ref().map(|(_, r)| r.pattern()).unwrap_or("-");
    let mailbox = resolved
        .as_ref()
        .and_then(|(m, _)| m.clone())
        .unwrap_or_default();
    let version = parse_api_version(
        req.headers()
            .get(http::header::ACCEPT)
            .map(|v| v.as_bytes()),
    );
    let resp = match (resolved, version) {
        (None, _) => ApiError::NoRoute.into_response(ApiVersion::V1),
        (Some((_, route)), _) if !route.allows(&method) => {
            ApiError::MethodNotAllowed.into_response(ApiVersion::V1)
        }
        (Some(_), Err(e)) => e.into_response(ApiVersion::V1),
        (Some((mb, route)), Ok(version)) => match dispatch(state, req, mb, route, version).await {
            Ok(r) => r,
            Err(e) => e.into_response(version),
        },
    };
    tracing::debug!(
        method = %method,
        route = pattern,
        mailbox = %mailbox,
        status = resp.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    resp
}

async fn dispatch<B>(
    state: &Arc<State>,
    req: Request<B>,
    mailbox: Option<String>,
    route: Route,
    version: ApiVersion,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    let (parts, body) = req.into_parts();
    let query = parse_query(parts.uri.query());
    // lookups and health need no mailbox
    let Some(mailbox) = mailbox else {
        return match route {
            Route::Health => Ok(api::health::ping(state)),
            Route::EndpointLookup { ods, workflow } => Ok(api::lookup::endpoint_lookup(
                state, version, &ods, &workflow,
            )),
            Route::WorkflowSearch { workflow } => {
                Ok(api::lookup::workflow_search(state, &workflow))
            }
            _ => Err(ApiError::NoRoute),
        };
    };
    state.auth.check(
        parts
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
        &mailbox,
        |id| state.password_of(id),
    )?;
    state.expire().await;
    let ctx = Ctx {
        state,
        version,
        mailbox,
        headers: &parts.headers,
        query: &query,
    };
    match route {
        Route::Handshake => api::handshake::handshake(&ctx),
        Route::Send => api::outbox::send(&ctx, body).await,
        Route::UploadChunk { id, chunk } => {
            api::outbox::upload_chunk(&ctx, &id, &chunk, body).await
        }
        Route::TrackById => api::tracking::by_message_id(&ctx),
        Route::TrackByLocalId { local_id } => api::tracking::by_local_id(&ctx, &local_id),
        Route::Inbox => api::inbox::list(&ctx),
        Route::Message { id, chunk } => {
            api::inbox::download(&ctx, &id, chunk.as_deref(), parts.method == Method::HEAD)
        }
        Route::Acknowledge { id } => api::inbox::acknowledge(&ctx, &id).await,
        Route::Count => api::inbox::count(&ctx),
        Route::Update => Ok(crate::response::empty_ok()),
        Route::Health | Route::EndpointLookup { .. } | Route::WorkflowSearch { .. } => {
            Err(ApiError::NoRoute)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_paths() {
        assert_eq!(
            resolve("/messageexchange/x26abc1").map(|r| r.1),
            Some(Route::Handshake)
        );
        assert_eq!(
            resolve("/messageexchange/X26ABC1/inbox/abc/2"),
            Some((
                Some("X26ABC1".into()),
                Route::Message {
                    id: "ABC".into(),
                    chunk: Some("2".into())
                }
            ))
        );
        assert_eq!(
            resolve("/messageexchange/X26ABC1/outbox/tracking/my%20id").map(|r| r.1),
            Some(Route::TrackByLocalId {
                local_id: "my id".into()
            })
        );
        assert!(resolve("/nope").is_none());
        assert!(resolve("/messageexchange/a/b/c/d/e/f/g").is_none());
    }

    #[test]
    fn decodes_queries() {
        let q = parse_query(Some(
            "max_results=10&continue_from=a%3D%3D&workflow_filter=%21A*",
        ));
        assert_eq!(q[1], ("continue_from".into(), "a==".into()));
        assert_eq!(q[2].1, "!A*");
        assert_eq!(percent_decode("%", false), "%");
        assert_eq!(percent_decode("%4", false), "%4");
        assert_eq!(percent_decode("%zz", false), "%zz");
    }
}
