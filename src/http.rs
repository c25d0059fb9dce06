//! `/metrics`, `/healthz` and `/readyz`, and the probe that checks them.

pub mod probe;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    /// True once the ImageJob cache has synced (or this replica is a standby).
    pub ready: Arc<AtomicBool>,
}

pub fn router(state: HttpState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.render())
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: ImageJob cache not synced")
    }
}

/// At most this many connections are served at once; more wait in the
/// listen backlog. Probes and one Prometheus need three.
pub const MAX_CONNECTIONS: usize = 64;
/// A client that has not sent its request headers by then is dropped, so
/// idle or slow connections (slowloris) cannot hold the slots.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A kept-alive connection is closed (between requests) after this long.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Binds the address (failing early and clearly) and serves in the background.
pub async fn serve(addr: SocketAddr, state: HttpState) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (--http-addr): {e}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(accept_loop(listener, router(state)));
    Ok(bound)
}

/// axum::serve has neither a connection cap nor header timeouts: this is
/// its loop with both (hyper's own HTTP/1 settings).
async fn accept_loop(listener: tokio::net::TcpListener, router: axum::Router) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: pause, do not spin.
                tracing::warn!(error = %e, "metrics server: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(serve_connection(stream, router.clone(), slot));
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, router: axum::Router, _slot: OwnedSemaphorePermit) {
    let service = hyper_util::service::TowerToHyperService::new(router);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(conn);
    if tokio::time::timeout(CONNECTION_LIFETIME, conn.as_mut()).await.is_err() {
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(HEADER_READ_TIMEOUT, conn).await;
    }
}

pub fn mark_ready(flag: &AtomicBool) {
    flag.store(true, Ordering::Relaxed);
}
