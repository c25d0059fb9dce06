//! `reconcile` against the real kube-apiserver with a scripted fake of IMS
//! (the `JobSource` trait): what it asks the cloud, what it writes, and
//! when it comes back.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use imagejob_operator::config::RunArgs;
use imagejob_operator::controller::coalesce::{Coalescer, quota};
use imagejob_operator::controller::schedule::Schedule;
use imagejob_operator::controller::secrets::SecretCache;
use imagejob_operator::controller::{Ctx, reconcile};
use imagejob_operator::crd::{ImageJob, Phase, REQUESTED_AT_ANNOTATION};
use imagejob_operator::ims::error::Service;
use imagejob_operator::ims::model::{Job, JobStatus};
use imagejob_operator::ims::{Credentials, ImsError, JobSource, JobTarget};
use imagejob_operator::metrics::Metrics;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use serde_json::json;

/// Answers from a script, one per call; counts calls.
#[derive(Default)]
struct ScriptedIms {
    answers: Mutex<VecDeque<Result<Job, ImsError>>>,
    calls: Mutex<usize>,
}

impl ScriptedIms {
    fn push(&self, answer: Result<Job, ImsError>) {
        self.answers.lock().unwrap().push_back(answer);
    }
    fn calls(&self) -> usize {
        *self.calls.lock().unwrap()
    }
}

/// The handle the controller owns; the test keeps another to script it.
struct Fake(Arc<ScriptedIms>);

impl JobSource for Fake {
    async fn get_job(&self, _: &JobTarget, _: &Credentials) -> Result<Job, ImsError> {
        *self.0.calls.lock().unwrap() += 1;
        self.0.answers.lock().unwrap().pop_front().expect("an unexpected cloud call")
    }
}

fn job(status: JobStatus, progress: u8) -> Result<Job, ImsError> {
    Ok(Job {
        status: Some(status),
        progress: Some(progress),
        job_type: Some("imsCreateImageByInstance".into()),
        ..Job::default()
    })
}

fn unavailable() -> Result<Job, ImsError> {
    Err(ImsError::Http {
        service: Service::Ims,
        status: 503,
        code: Some("APIGW.0201".into()),
        message: Some("busy".into()),
        request_id: Some("r-1".into()),
        retry_after: None,
    })
}

/// The requeue delay, or None for `await_change`. `Action` keeps it
/// private; its Debug form shows it as a `Duration` (`29.1s`, `500ms`).
fn requeue_of(action: &Action) -> Option<Duration> {
    if *action == Action::await_change() {
        return None;
    }
    let text = format!("{action:?}");
    let inner = text.split("Some(").nth(1).and_then(|s| s.split(')').next()).expect("requeue_after");
    let secs = match inner.strip_suffix("ms") {
        Some(ms) => ms.parse::<f64>().unwrap() / 1000.0,
        None => inner.trim_end_matches('s').parse::<f64>().unwrap(),
    };
    Some(Duration::from_secs_f64(secs))
}

struct Fixture {
    ims: Arc<ScriptedIms>,
    ctx: Arc<Ctx<Fake>>,
    api: Api<ImageJob>,
    ns: common::TestNamespace,
}

async fn fixture() -> Fixture {
    let client = common::client().await;
    common::e2e::install_imagejob_crd(&client).await;
    let ns = common::TestNamespace::new(&client, "reconcile").await;
    common::e2e::create_aksk_secret(&client, &ns.name, "creds", common::e2e::SK).await;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }
    let args = Cli::parse_from(["test", "--poll-interval", "30s"]).run;
    let ims = Arc::new(ScriptedIms::default());
    let (wake, _rx) = tokio::sync::mpsc::unbounded_channel();
    let reporter = Reporter { controller: "reconcile-test".into(), instance: None };
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        coalescer: Coalescer::new(Fake(ims.clone()), quota(1000.0, 1000)),
        secrets: SecretCache::new(client.clone()),
        schedule: Schedule::default(),
        reporter,
        metrics: Arc::new(Metrics::default()),
        outputs: None,
        wake,
        fence: imagejob_operator::controller::fence::Fence::none(),
        metadata_keys: None,
        args,
    });
    let api = Api::namespaced(client.clone(), &ns.name);
    Fixture { ims, ctx, api, ns }
}

impl Fixture {
    async fn create(&self) -> ImageJob {
        let ij = common::e2e::imagejob("ij", "reconcile", "ff8080814dbd65d7014dbe0d84dbe001", "creds");
        let mut ij = ij;
        ij.spec.poll_interval = None;
        self.api.create(&Default::default(), &ij).await.unwrap()
    }

    /// Sets `ims.otc.io/requestedAt`: the next reconcile polls now.
    async fn request_poll(&self, value: &str) {
        let patch = json!({"metadata": {"annotations": {REQUESTED_AT_ANNOTATION: value}}});
        self.api.patch("ij", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }

    async fn reconcile(&self) -> (Action, ImageJob) {
        let current = self.api.get("ij").await.unwrap();
        let action = reconcile(Arc::new(current), self.ctx.clone()).await.expect("reconcile");
        (action, self.api.get("ij").await.unwrap())
    }
}

#[tokio::test]
async fn polls_once_per_interval_and_never_after_success() {
    let f = fixture().await;
    f.create().await;

    f.ims.push(job(JobStatus::Running, 40));
    let (action, ij) = f.reconcile().await;
    let s = ij.status.unwrap();
    assert_eq!((s.phase, s.progress), (Some(Phase::Running), Some(40)));
    let next = requeue_of(&action).expect("requeue while running");
    assert!(next >= Duration::from_secs(27) && next <= Duration::from_secs(30), "{next:?}");

    // Woken early (e.g. by the watch event of our own write): no cloud call.
    let (action, _) = f.reconcile().await;
    assert_eq!(f.ims.calls(), 1);
    assert!(requeue_of(&action).unwrap() <= next);

    // requestedAt forces a poll now, and is recorded.
    f.request_poll("please").await;
    f.ims.push(job(JobStatus::Success, 20));
    let (action, ij) = f.reconcile().await;
    assert_eq!(f.ims.calls(), 2);
    assert_eq!(action, Action::await_change());
    let s = ij.status.unwrap();
    assert_eq!((s.phase, s.progress), (Some(Phase::Succeeded), Some(100)));
    assert_eq!(s.last_handled_reconcile_at.as_deref(), Some("please"));

    // Finished: never asks again (the restart case is in e2e_controller).
    let (action, _) = f.reconcile().await;
    assert_eq!((action, f.ims.calls()), (Action::await_change(), 2));
    f.ns.cleanup().await;
}

#[tokio::test]
async fn transient_errors_back_off_and_keep_the_status() {
    let f = fixture().await;
    f.create().await;
    f.ims.push(job(JobStatus::Running, 10));
    f.reconcile().await;
    let before = f.api.get("ij").await.unwrap().status.unwrap();

    f.ims.push(unavailable());
    // Force the poll now instead of waiting 30 s.
    f.request_poll("1").await;
    let (action, ij) = f.reconcile().await;
    let s = ij.status.unwrap();
    assert_eq!((s.phase, s.progress), (before.phase, before.progress), "nothing known is lost");
    let reconciling = s.conditions.iter().find(|c| c.type_ == "Reconciling").unwrap();
    assert_eq!(reconciling.reason, "RetryingAfterError");
    assert!(
        reconciling.message.contains("503") && reconciling.message.contains("APIGW.0201"),
        "{}",
        reconciling.message
    );
    assert!(!reconciling.message.contains("r-1"), "request IDs would make every retry a new write");
    let first = requeue_of(&action).unwrap();
    assert!(first >= Duration::from_secs(2) && first <= Duration::from_secs(4), "{first:?}");

    // `requestedAt` is honoured at most once per FORCED_POLL_GAP (issue 10).
    tokio::time::sleep(imagejob_operator::controller::plan::FORCED_POLL_GAP).await;
    f.request_poll("2").await;
    f.ims.push(unavailable());
    let (action, _) = f.reconcile().await;
    let second = requeue_of(&action).unwrap();
    assert!(second >= Duration::from_secs(4), "the backoff grows: {second:?}");
    assert_eq!(
        f.ctx.metrics.render().matches("imagejob_status_patches_total 3").count(),
        1,
        "{}",
        f.ctx.metrics.render()
    );
    f.ns.cleanup().await;
}

#[tokio::test]
async fn a_failed_refresh_of_a_finished_job_keeps_it_ready_and_stops() {
    let f = fixture().await;
    f.create().await;
    f.ims.push(job(JobStatus::Success, 100));
    f.reconcile().await;

    f.request_poll("refresh-1").await;
    f.ims.push(unavailable());
    let (action, ij) = f.reconcile().await;
    assert_eq!(f.ims.calls(), 2);
    assert_eq!(action, Action::await_change(), "the result stands; no retry loop");
    let s = ij.status.unwrap();
    let cond =
        |t: &str| s.conditions.iter().find(|c| c.type_ == t).map(|c| (c.status.clone(), c.reason.clone())).unwrap();
    assert_eq!(s.phase, Some(Phase::Succeeded));
    assert_eq!(cond("Ready"), ("True".into(), "Succeeded".into()));
    assert_eq!(cond("Reconciling"), ("False".into(), "RefreshFailed".into()));
    assert_eq!(s.last_handled_reconcile_at.as_deref(), Some("refresh-1"));

    // Handled: no further cloud call until the next request.
    let (action, _) = f.reconcile().await;
    assert_eq!((action, f.ims.calls()), (Action::await_change(), 2));
    f.ns.cleanup().await;
}
