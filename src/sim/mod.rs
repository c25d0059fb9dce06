//! `ims-sim`: a local IMS + IAM simulator for pipelines and tests.
//!
//! It serves `POST /v3/auth/tokens` (IAM password login and agency
//! tokens), `POST /v3.0/OS-AUTH/id-token/tokens` (OIDC federation), `GET
//! /openstack/latest/securitykey` (the node's temporary keys), the two IMS job
//! APIs `GET /v1/{project_id}/jobs/{job_id}` (status) and `GET
//! /v1/cloudimages/job/{job_id}` (progress; project from the token's scope
//! or a signed `X-Project-Id`), both with token or AK/SK authentication,
//! throttling and scripted faults, and an admin API under `/admin/` (see
//! [`server`]). Jobs follow the lifecycles of a [`Scenario`]; the answer at
//! any moment is computed from the job's age and the API asked by the pure
//! [`lifecycle`] module.
//!
//! In-process (tests):
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let sim = imagejob_operator::sim::spawn(imagejob_operator::sim::Scenario::demo()).await?;
//! let url = sim.url("/healthz"); // http://127.0.0.1:PORT/healthz
//! # Ok(()) }
//! ```

pub mod agency;
pub mod aksk;
pub mod counters;
pub mod iam;
pub mod lifecycle;
pub mod metadata;
pub mod oidc;
pub mod responses;
pub mod scenario;
pub mod server;
pub mod shapes;
pub mod state;
pub mod test_idp;
pub mod throttle;
pub mod tls;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use scenario::Scenario;
pub use state::Sim;

/// The HTTP application for a scenario.
pub fn router(scenario: Scenario) -> axum::Router {
    server::router(Arc::new(Sim::new(scenario)))
}

/// Serves until the listener fails.
pub async fn serve(listener: TcpListener, scenario: Scenario) -> io::Result<()> {
    serve_until(listener, scenario, std::future::pending()).await
}

/// Serves until `shutdown` completes, then finishes in-flight requests.
pub async fn serve_until(
    listener: TcpListener,
    scenario: Scenario,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_listeners(Listeners { ims: listener, iam: None, tls: None }, scenario, shutdown).await
}

/// Where the simulator listens: IMS (and IAM, unless `iam` is given, which
/// then alone serves IAM), plain HTTP or, with `tls`, HTTPS on both.
pub struct Listeners {
    pub ims: TcpListener,
    pub iam: Option<TcpListener>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Serves `listeners` with one state (a token from the IAM listener works
/// on the IMS listener) until `shutdown` completes.
pub async fn serve_listeners(
    listeners: Listeners,
    scenario: Scenario,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let sim = Arc::new(Sim::new(scenario));
    let stop = tokio_util::sync::CancellationToken::new();
    let trigger = stop.clone();
    let watcher = tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
    });
    let tls = listeners.tls;
    let served = match listeners.iam {
        None => serve_one(listeners.ims, tls, server::router(sim), stop.clone()).await,
        Some(iam) => {
            let ims = serve_one(listeners.ims, tls.clone(), server::ims_router(sim.clone()), stop.clone());
            let iam = serve_one(iam, tls, server::iam_router(sim), stop.clone());
            tokio::try_join!(ims, iam).map(|_| ())
        }
    };
    watcher.abort();
    served
}

async fn serve_one(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    stop: tokio_util::sync::CancellationToken,
) -> io::Result<()> {
    match tls {
        None => {
            // Small request/response pairs: do not let Nagle hold them back.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await
        }
        Some(config) => {
            let listener = tls::TlsListener::new(listener, config)?;
            axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await
        }
    }
}

/// A simulator running in the background of the current tokio runtime;
/// stops when dropped.
pub struct RunningSim {
    pub addr: SocketAddr,
    /// IAM's own listener (`spawn_split`); `None`: IAM is served on `addr`.
    pub iam_addr: Option<SocketAddr>,
    task: JoinHandle<io::Result<()>>,
}

impl RunningSim {
    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// IAM's base URL followed by `path`: its own listener, else `url`'s.
    pub fn iam_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.iam_addr.unwrap_or(self.addr))
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a simulator on a free loopback port.
pub async fn spawn(scenario: Scenario) -> io::Result<RunningSim> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(serve(listener, scenario));
    Ok(RunningSim { addr, iam_addr: None, task })
}

/// Starts a simulator serving IAM on a second free loopback port only (the
/// first answers IAM paths with the gateway's 404).
pub async fn spawn_split(scenario: Scenario) -> io::Result<RunningSim> {
    let ims = TcpListener::bind("127.0.0.1:0").await?;
    let iam = TcpListener::bind("127.0.0.1:0").await?;
    let (addr, iam_addr) = (ims.local_addr()?, iam.local_addr()?);
    let listeners = Listeners { ims, iam: Some(iam), tls: None };
    let task = tokio::spawn(serve_listeners(listeners, scenario, std::future::pending()));
    Ok(RunningSim { addr, iam_addr: Some(iam_addr), task })
}
