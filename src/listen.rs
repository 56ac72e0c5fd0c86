//! Listeners, as every role of a process opens them: bind and announce
//! (`listening <name> <addr>`), `[auth]` keys and the `[tls]` acceptor, a
//! router served until the process stops, behind the API-key check of its
//! listener. A leaf of the binary: [`crate::serve`] and [`crate::roles`]
//! use it.

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use futures::TryFutureExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracelake_routes::Routes;
use tracelake_routes::timing::RequestMetrics;

use crate::config::Config;
use tracelake_auth::{Keys, Listener};

pub(crate) async fn bind(name: &str, address: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {name} on {address}"))
}

pub(crate) fn announce(name: &str, address: std::net::SocketAddr) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening {name} {address}")?;
    stdout.flush()?;
    Ok(())
}

/// Tells every server and background task of a process to stop.
pub(crate) struct StopSignal {
    sender: watch::Sender<bool>,
}

impl StopSignal {
    pub(crate) fn new() -> Self {
        Self {
            sender: watch::channel(false).0,
        }
    }

    /// Resolves once [`StopSignal::stop`] is called.
    pub(crate) fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut receiver = self.sender.subscribe();
        async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        }
    }

    pub(crate) fn stop(&self) {
        self.sender.send_replace(true);
    }
}

/// `[auth]` keys and the `[tls]` acceptor, loaded at start-up.
pub(crate) fn keys_and_tls(
    config: &Config,
) -> anyhow::Result<(Option<Arc<Keys>>, Option<TlsAcceptor>)> {
    let keys = tracelake_auth::Keys::load(&config.auth, &config.xray.udp_tenant)
        .context("loading [auth] keys")?;
    let tls = config.tls.acceptor().context("loading [tls]")?;
    Ok((keys, tls))
}

/// A server's run to its graceful end.
pub(crate) type ServerFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Serves `routes` on `listener`, over TLS when given an acceptor, until `stop`.
pub(crate) fn serve_http(
    listener: TcpListener,
    routes: axum::Router,
    tls: Option<TlsAcceptor>,
    name: &'static str,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ServerFuture> {
    fn run<L>(
        listener: L,
        routes: axum::Router,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> ServerFuture
    where
        L: axum::serve::Listener,
        L::Addr: std::fmt::Debug,
    {
        Box::pin(
            axum::serve(listener, routes)
                .with_graceful_shutdown(stop)
                .into_future()
                .map_err(anyhow::Error::from),
        )
    }
    Ok(match tls {
        None => run(listener, routes, stop),
        Some(acceptor) => {
            let local = listener.local_addr()?;
            let connections = tracelake_auth::tls::accept(listener, acceptor, name);
            run(
                tracelake_auth::tls::TlsListener { connections, local },
                routes,
                stop,
            )
        }
    })
}

/// Whether `serve --print-routes` asked for every listener's routes.
pub(crate) static PRINT_ROUTES: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// `routes` behind the API-key check of `listener`, when keys are
/// configured: each request is checked against the access its route
/// declared, and a path no route declared is refused. Every request,
/// refused or answered, is timed in `requests` by its route template.
pub(crate) fn authenticated(
    routes: Routes,
    keys: &Option<Arc<Keys>>,
    listener: Listener,
    requests: &RequestMetrics,
) -> axum::Router {
    let timed = requests.layer(listener.name());
    let (router, declared) = routes.into_parts();
    if PRINT_ROUTES.load(std::sync::atomic::Ordering::Relaxed) {
        let mut stdout = std::io::stdout().lock();
        for (pattern, access) in declared.routes() {
            // Best effort: a closed stdout does not stop the server.
            let _ = writeln!(
                stdout,
                "route {} {} {pattern}",
                listener.name(),
                tracelake_auth::describe(*access)
            );
        }
        let _ = stdout.flush();
    }
    let Some(keys) = keys else {
        return router.layer(timed);
    };
    let keys = Arc::clone(keys);
    let declared = Arc::new(declared.matcher());
    router
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                tracelake_auth::check(
                    Arc::clone(&keys),
                    Arc::clone(&declared),
                    listener,
                    request,
                    next,
                )
            },
        ))
        .layer(timed)
}

/// SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
