//! The server: shared state ([`App`]), the accept loop with graceful shutdown over plain HTTP or
//! TLS ([`serve`]), and the embeddable handle ([`MockMesh`]) that binds `127.0.0.1:0`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Body;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::auth::Authenticator;
use crate::body::ResponseBody;
use crate::config::{Config, MailboxConfig, StoreMode};
use crate::error::Error;
use crate::pos::PosEngine;
use crate::store::{Message, Store};
use crate::tls::TlsConfig;

/// Everything a request handler needs.
pub(crate) struct AppState {
    pub config: Config,
    pub mailboxes: HashMap<String, MailboxConfig>,
    pub auth: Authenticator,
    pub store: Store,
    pub pos: PosEngine,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl AppState {
    /// Password of a known mailbox.
    pub(crate) fn password_of(&self, id: &str) -> Option<&str> {
        self.mailboxes.get(id).map(|m| m.password.as_str())
    }

    /// Runs `f` as a background task that [`App::shutdown`] cancels.
    pub(crate) fn spawn(&self, f: impl Future<Output = ()> + Send + 'static) {
        let h = tokio::spawn(f);
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(h);
    }

    /// Applies the inbox expiry (undeliverable + NDR), persisting the changes.
    pub(crate) async fn expire(&self) {
        let days = (self.config.inbox_expiry.as_secs() / 86_400).max(1);
        let changed = self.store.expire_due(self.config.clock.now(), days);
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

    /// Called once a message is complete and in its recipient's inbox.
    pub(crate) fn on_accepted(self: &Arc<Self>, m: &Message) {
        tracing::info!(
            message_id = %m.id,
            chunks = m.total_chunks,
            bytes = m.file_size(),
            "message accepted into inbox"
        );
        crate::pos::maybe_start(self, m);
    }
}

/// The application: state plus the routing function. Cheap to clone.
#[derive(Clone)]
pub struct App {
    pub(crate) state: Arc<AppState>,
}

impl App {
    /// Opens the store (recovering a disk store) and restarts pending POS jobs. Must run inside
    /// a tokio runtime.
    pub async fn new(config: Config) -> Result<App, Error> {
        let store = match &config.store {
            StoreMode::Memory => Store::memory(config.inbox_expiry),
            StoreMode::Disk(dir) => {
                let dir = dir.clone();
                let expiry = config.inbox_expiry;
                crate::store::blocking(move || Store::open(&dir, expiry)).await?
            }
        };
        let mailboxes = config
            .mailboxes
            .iter()
            .map(|m| (m.id.clone(), m.clone()))
            .collect();
        let state = Arc::new(AppState {
            auth: Authenticator::new(
                config.shared_key.clone(),
                config.auth.clone(),
                config.clock.clone(),
            ),
            pos: PosEngine::new(&config.pos, config.pos_chunk_bytes),
            mailboxes,
            store,
            config,
            tasks: Mutex::new(Vec::new()),
        });
        crate::pos::recover(&state);
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

    /// Cancels background work (POS jobs, expiry sweeper) and waits for it.
    pub async fn shutdown(&self) {
        let tasks: Vec<_> = {
            let mut t = self.state.tasks.lock().unwrap_or_else(|p| p.into_inner());
            t.drain(..).collect()
        };
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Longest a client may take over the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the MESH API on `listener` until `shutdown` completes, then stops accepting, lets
/// in-flight requests finish, cancels background work and returns. Speaks HTTPS when
/// `config.tls` is set (refusing clients without an accepted certificate if it has a client
/// CA), plain HTTP otherwise.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let tls = config.tls.as_ref().map(TlsConfig::acceptor).transpose()?;
    let app = App::new(config).await?;
    serve_app(listener, app, tls, shutdown).await
}

async fn serve_app(
    listener: TcpListener,
    app: App,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let app = app.clone();
                    let stop = stop_rx.clone();
                    let tls = tls.clone();
                    conns.spawn(async move {
                        match tls {
                            None => serve_connection(stream, app, stop).await,
                            Some(tls) => {
                                if let Some(stream) = accept_tls(&tls, stream, peer, stop.clone()).await {
                                    serve_connection(stream, app, stop).await;
                                }
                            }
                        }
                    });
                }
                Err(e) => {
                    // e.g. EMFILE: back off briefly instead of spinning
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
    app.shutdown().await;
    tracing::info!("server stopped");
    Ok(())
}

/// The TLS handshake of one connection; `None` (logged, connection dropped) if it fails, times
/// out or the server stops meanwhile. A missing or untrusted client certificate fails here.
async fn accept_tls(
    tls: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> Option<TlsStream<TcpStream>> {
    tokio::select! {
        done = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream)) => match done {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::info!(%peer, "TLS handshake timed out");
                None
            }
        },
        _ = stop.wait_for(|stopping| *stopping) => None,
    }
}

/// HTTP/1.1 with keep-alive on one connection until the client closes it or the server stops
/// (then in-flight requests finish first).
async fn serve_connection<I>(io: I, app: App, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.handle(req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    if *stop.borrow() {
        conn.as_mut().graceful_shutdown();
    }
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A running server on `127.0.0.1:<ephemeral port>`, for tests and `ndop demo`.
pub struct MockMesh {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), Error>>,
    app: App,
    https: bool,
}

impl MockMesh {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime (HTTPS if `config.tls` is
    /// set; its certificate must then name `127.0.0.1` for clients to accept it).
    pub async fn start(config: Config) -> Result<MockMesh, Error> {
        let tls = config.tls.as_ref().map(TlsConfig::acceptor).transpose()?;
        let https = tls.is_some();
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(Error::Net)?;
        let addr = listener.local_addr().map_err(Error::Net)?;
        let app = App::new(config).await?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_app(listener, app.clone(), tls, async move {
            let _ = rx.await;
        }));
        Ok(MockMesh {
            addr,
            stop: Some(tx),
            task,
            app,
            https,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, or `https://…` with TLS.
    pub fn base_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The application behind the socket (call [`App::handle`] directly).
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Graceful shutdown; returns once the server task has finished.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for MockMesh {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
