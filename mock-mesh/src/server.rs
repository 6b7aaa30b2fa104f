//! The sockets: the accept loop with graceful shutdown over plain HTTP or TLS ([`serve`]), and
//! the embeddable handle ([`MockMesh`]) that binds `127.0.0.1:0`. Everything else is
//! [`App`]'s.

use std::convert::Infallible;
use std::future::Future;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Sleep;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::config::Config;
use crate::error::Error;
use crate::tls::TlsConfig;

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
    let app = App::new(config).await?;
    serve_app(listener, app, shutdown).await
}

/// [`serve`] for an [`App`] already started (its store recovered), so that a caller can bind
/// and announce the socket only once requests can be served.
pub async fn serve_app(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let tls = app
        .state
        .config
        .tls
        .as_ref()
        .map(TlsConfig::acceptor)
        .transpose()?;
    accept_loop(listener, app, tls, shutdown).await
}

/// Accepts connections until `shutdown`, at most `limits.max_connections` at once (the rest
/// wait in the listen backlog), then drains them and stops the app.
async fn accept_loop(
    listener: TcpListener,
    app: App,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let slots = Arc::new(Semaphore::new(
        app.state.config.limits.max_connections.max(1),
    ));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let app = app.clone();
                    let stop = stop_rx.clone();
                    let tls = tls.clone();
                    conns.spawn(async move {
                        let _slot = slot;
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
    let header_timeout = app.state.config.limits.body_timeout;
    let io = WriteTimeout::new(io, app.state.config.limits.response_timeout);
    let svc = service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.handle(req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(header_timeout)
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

/// A connection whose writes fail with `TimedOut` once the client has taken nothing for
/// `limit` (its receive window stays shut): hyper then closes the connection and drops the
/// response body, so a client that stops reading a download holds no file, mapping or
/// buffer, and its connection slot is freed, after `limits.response_timeout`.
struct WriteTimeout<I> {
    io: I,
    limit: Duration,
    /// Armed while a write waits for room; disarmed by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<I> WriteTimeout<I> {
    fn new(io: I, limit: Duration) -> WriteTimeout<I> {
        WriteTimeout {
            io,
            limit,
            stalled: None,
        }
    }

    /// What a write that found no room answers: still pending, or `TimedOut` once the
    /// stall has lasted `limit`.
    fn stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                tracing::info!("response cut off: the client took no data in time");
                Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Passes on a write's result, arming or disarming the stall timer.
    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Pending => self.stall(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteTimeout<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.progress(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.progress(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.progress(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.progress(cx, r)
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
        let task = tokio::spawn(accept_loop(listener, app.clone(), tls, async move {
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
