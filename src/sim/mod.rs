//! `ims-sim`: a local IMS + IAM simulator for pipelines and tests.
//!
//! It serves `POST /v3/auth/tokens` (IAM password login), the two IMS job
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
    // Small request/response pairs: do not let Nagle hold them back.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(scenario)).with_graceful_shutdown(shutdown).await
}

/// A simulator running in the background of the current tokio runtime;
/// stops when dropped.
pub struct RunningSim {
    pub addr: SocketAddr,
    task: JoinHandle<io::Result<()>>,
}

impl RunningSim {
    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
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
    Ok(RunningSim { addr, task })
}
