//! The endpoints, one group per file, all of the same shape: a function from a [`Ctx`] (and
//! the request body where there is one) to a response or an [`ApiError`].

pub(crate) mod handshake;
pub(crate) mod health;
pub(crate) mod inbox;
pub(crate) mod lookup;
pub(crate) mod outbox;
pub(crate) mod tracking;

use std::sync::Arc;

use http::HeaderMap;

use crate::response::ApiVersion;
use crate::state::State;

/// What an authenticated mailbox request carries.
pub(crate) struct Ctx<'a> {
    pub state: &'a Arc<State>,
    pub version: ApiVersion,
    /// The authenticated mailbox (path mailbox, upper-case).
    pub mailbox: String,
    pub headers: &'a HeaderMap,
    pub query: &'a [(String, String)],
}

impl Ctx<'_> {
    /// First value of a query parameter.
    pub(crate) fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}
