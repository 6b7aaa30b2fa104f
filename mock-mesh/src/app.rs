//! The application: the state plus the routing function, callable without a socket
//! ([`App::handle`]), with start-up (store recovery, POS job recovery, the expiry sweeper) and
//! shutdown of the background work.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Body;

use crate::body::ResponseBody;
use crate::config::{Config, StoreMode};
use crate::error::Error;
use crate::fhir::ConsentStore;
use crate::state::State;
use crate::store::Store;

/// The application: state plus the routing function. Cheap to clone.
#[derive(Clone)]
pub struct App {
    pub(crate) state: Arc<State>,
}

impl App {
    /// Opens the store (recovering a disk store) and restarts pending POS jobs. Must run inside
    /// a tokio runtime.
    pub async fn new(config: Config) -> Result<App, Error> {
        let now = config.clock.now().to_rfc3339();
        let (store, consents) = match &config.store {
            StoreMode::Memory => (
                Store::memory(config.inbox_expiry),
                ConsentStore::memory(&now),
            ),
            StoreMode::Disk(dir) => {
                let dir = dir.clone();
                let expiry = config.inbox_expiry;
                crate::store::blocking(move || {
                    let store = Store::open(&dir, expiry)?;
                    Ok((store, ConsentStore::open(&dir, &now)?))
                })
                .await?
            }
        };
        tracing::info!(
            consents = consents.len(),
            "NDOP FHIR API ready under /STU3/"
        );
        let state = Arc::new(State::new(config, store, consents));
        crate::pos::job::recover(&state);
        let sweeper = Arc::downgrade(&state);
        state.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                let Some(state) = sweeper.upgrade() else {
                    return;
                };
                state.expire().await;
            }
        });
        Ok(App { state })
    }

    /// Answers one request: the whole API as a plain async function, no socket needed.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: std::fmt::Display,
    {
        crate::router::handle(&self.state, req).await
    }

    /// Test hook (fault injection): the next `times` journal appends of a disk store write
    /// their first `torn_bytes` bytes and then fail as if the disk were full (`ENOSPC`), the
    /// torn-write sequence of a nearly full disk. No-op for a memory store.
    #[doc(hidden)]
    pub fn inject_journal_fault(&self, torn_bytes: usize, times: u32) {
        self.state.store.inject_journal_fault(torn_bytes, times);
    }

    /// Test hook: bytes in the disk store's journal (0 for a memory store).
    #[doc(hidden)]
    pub fn journal_len(&self) -> u64 {
        self.state.store.journal_len()
    }

    /// Cancels background work (POS jobs, expiry sweeper) and waits for it.
    pub async fn shutdown(&self) {
        let tasks = self.state.take_tasks();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}
