//! The shared state every request handler and background job reads: configuration, mailboxes,
//! the authenticator, the message store and the POS engine, plus the background tasks that
//! [`App::shutdown`](crate::App::shutdown) cancels. Cheap to share behind an `Arc`; the std
//! mutex here is never held across an `.await`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::auth::Authenticator;
use crate::config::{Config, MailboxConfig};
use crate::fhir::ConsentStore;
use crate::pos::PosEngine;
use crate::store::Store;

/// POS jobs that read their submission at the same time; the rest wait, so POS work can never
/// take every blocking thread from the uploads and downloads.
const POS_READERS: usize = 2;

/// Everything a request handler needs.
pub(crate) struct State {
    pub(crate) config: Config,
    pub(crate) mailboxes: HashMap<String, MailboxConfig>,
    pub(crate) auth: Authenticator,
    pub(crate) store: Store,
    pub(crate) pos: PosEngine,
    /// The NDOP FHIR API's Consents; the POS reads their opt-out state.
    pub(crate) consents: std::sync::Arc<ConsentStore>,
    /// POS jobs reading a submission at once (each holds a blocking thread while it reads).
    pub(crate) pos_readers: Semaphore,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl State {
    /// The state over an opened store and Consent store.
    pub(crate) fn new(config: Config, store: Store, consents: ConsentStore) -> State {
        let mailboxes = config
            .mailboxes
            .iter()
            .map(|m| (m.id.clone(), m.clone()))
            .collect();
        State {
            auth: Authenticator::new(
                config.shared_key.clone(),
                config.auth.clone(),
                config.clock.clone(),
            ),
            pos: PosEngine::new(&config.pos, config.pos_chunk_bytes)
                .with_max_decoded(config.limits.pos_max_decoded_bytes)
                .with_consents(consents.optouts()),
            consents: std::sync::Arc::new(consents),
            pos_readers: Semaphore::new(POS_READERS),
            mailboxes,
            store,
            config,
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Password of a known mailbox.
    pub(crate) fn password_of(&self, id: &str) -> Option<&str> {
        self.mailboxes.get(id).map(|m| m.password.as_str())
    }

    /// Runs `f` as a background task that [`App::shutdown`](crate::App::shutdown) cancels.
    pub(crate) fn spawn(&self, f: impl Future<Output = ()> + Send + 'static) {
        let h = tokio::spawn(f);
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(h);
    }

    /// Takes every background task (for cancellation at shutdown).
    pub(crate) fn take_tasks(&self) -> Vec<JoinHandle<()>> {
        let mut t = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        t.drain(..).collect()
    }

    /// Applies the upload expiry (unfinished uploads abandoned) and the inbox expiry
    /// (undeliverable + NDR), persisting the changes.
    pub(crate) async fn expire(&self) {
        let now = self.config.clock.now();
        let abandoned = self
            .store
            .abandon_uploads(now, self.config.limits.upload_expiry);
        if !abandoned.is_empty() {
            for m in &abandoned {
                tracing::info!(message_id = %m.id, "unfinished upload expired; its data is freed");
                self.store.drop_data(m).await;
            }
            if let Err(e) = self.store.persist(abandoned).await {
                tracing::error!(error = %e, "could not persist upload expiry");
            }
        }
        let days = (self.config.inbox_expiry.as_secs() / 86_400).max(1);
        let changed = self.store.expire_due(now, days);
        if changed.is_empty() {
            return;
        }
        for m in changed.iter().filter(|m| m.sender.is_some()) {
            tracing::info!(message_id = %m.id, "message expired undelivered; non-delivery report sent");
            self.store.drop_data(m).await;
        }
        if let Err(e) = self.store.persist(changed).await {
            tracing::error!(error = %e, "could not persist expiry");
        }
    }
}
