//! The API server killed (SIGKILL) and restarted mid-job on the same etcd:
//! the operator keeps running, counts the broken ImageJob watch, and the job
//! completes (issue 10; RELIABILITY.md). The fault needs a control plane of
//! its own — killing the shared one would fail every test beside this one —
//! so `tests/cluster/up` starts a private etcd + kube-apiserver (own cache
//! directory and ports, the built tools linked from the shared cache) and
//! `tests/cluster/up` again is what restarts the killed API server: the path
//! that keeps etcd's data. Beside it, etcd stalled under a running API
//! server, on a second private control plane.

mod common;

use std::time::{Duration, Instant};

use common::TestNamespace;
use common::control_plane::PrivateControlPlane;
use common::e2e::{self, Operator, Sim};
use imagejob_operator::crd::Phase;
use kube::api::{Api, ListParams};

/// How long the API server stays killed: long enough that a watch backoff
/// past 4 s shows in the count of attempts (see below).
const OUTAGE: Duration = Duration::from_secs(24);
/// ImageJobs running through the outage, each on an IMS job of its own (a
/// shared job's answer would wake the others).
const SURVIVORS: usize = 8;
const NEWCOMER_JOB: &str = "ff8080817a0a0a0a017a0a0a0a0b0001";
const IMAGE_ID: &str = "49e9447f-7dff-41e0-8036-f66fe5488c8b";

fn survivor_job(i: usize) -> String {
    format!("ff8080817a0a0a0a017a0a0a0a0a{i:04}")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_killed_and_restarted_mid_job_loses_nothing() {
    let started = Instant::now();
    let cp = tokio::task::spawn_blocking(PrivateControlPlane::up).await.unwrap();
    eprintln!("private control plane ready in {:.1}s", started.elapsed().as_secs_f64());
    let client = cp.client().await;
    e2e::install_imagejob_crd(&client).await;
    let ns = TestNamespace::new(&client, "e2e-apiserver-restart").await;
    let run_label = e2e::unique_label();

    // RUNNING with rising progress for 45 s: they end after the API server is back.
    let mut jobs: Vec<_> = (0..SURVIVORS).map(|i| e2e::succeeding_job(&survivor_job(i), "0s", "45s")).collect();
    jobs.push(e2e::succeeding_job(NEWCOMER_JOB, "0s", "600s"));
    let sim = Sim::start(serde_json::Value::Array(jobs));
    e2e::create_aksk_secret(&client, &ns.name, "creds", e2e::SK).await;
    let mut cmd = Operator::run_command(&sim, &run_label);
    cmd.env("KUBECONFIG", &cp.kubeconfig).args(["--poll-interval", "1s"]);
    let mut op = Operator::spawn(cmd, None).expect("start imagejob-operator");
    for i in 0..SURVIVORS {
        let survivor = e2e::imagejob(&format!("survivor-{i}"), &run_label, &survivor_job(i), "creds");
        e2e::create(&client, &ns.name, &survivor).await;
    }
    let errors_before = imagejob_watch_errors(&mut op).await.unwrap_or(0.0);
    let before_kill = survivors_until(&client, &ns.name, "Running", |_, s| s.phase == Some(Phase::Running)).await;
    let down_at = Instant::now();
    cp.kill_apiserver();
    tokio::time::sleep(OUTAGE).await;
    assert!(!op.exited(), "the operator exited while the API server was down:\n{}", op.log());

    let (_, up_log) = tokio::task::block_in_place(|| cp.script("up"));
    assert!(up_log.contains("data kept"), "up restarts only the API server, on the running etcd:\n{up_log}");
    let back_after = down_at.elapsed();
    let back_at = Instant::now();
    // Every failed attempt to watch again is counted: retrying every 2–4 s,
    // at least 7 fall in 21 s (0, 1.6, 4.8, 8.8, 12.8, 16.8, 20.8 s at the
    // slowest); kube's default backoff (0.8 s doubling to 30 s) makes at most
    // 6 before 50 s. A counter, not a clock: the machine's load moves neither.
    let retries = imagejob_watch_errors(&mut op).await.expect("the broken ImageJob watch is counted") - errors_before;
    assert!(
        retries >= 7.0,
        "{retries} ImageJob watch attempts in an outage of {back_after:?}: the watch backs off past 4 s"
    );
    // An ImageJob created now is seen through the watch alone.
    e2e::create(&client, &ns.name, &e2e::imagejob("newcomer", &run_label, NEWCOMER_JOB, "creds")).await;

    // Same etcd: the ImageJobs and their statuses are still there.
    let kept = survivors_until(&client, &ns.name, "kept", |_, _| true).await;
    for (kept, before) in kept.iter().zip(&before_kill) {
        assert!(kept.phase.is_some() && kept.observed_generation == before.observed_generation, "{kept:?}");
    }
    // Progress rises 1.8 points a second: a status polled after the outage
    // shows 40 more than before it; one written just before the kill, 2 more.
    let polled_after = |i: usize, s: &imagejob_operator::crd::ImageJobStatus| {
        s.progress.zip(before_kill[i].progress).is_some_and(|(now, then)| now > then + 10)
            || s.phase == Some(Phase::Succeeded)
    };
    survivors_until(&client, &ns.name, "every survivor polled and written again", polled_after).await;
    let all_written_after = back_at.elapsed();
    // The retry on `/readyz` (asked every second) brings them: 0.5 s
    // measured. Without it each waits out a backoff grown over the outage
    // (one survivor alone was seen 3.5–27.8 s after the restart, the last of
    // eight 25.1–26.3 s). 5 s leaves room for a loaded machine.
    assert!(
        all_written_after < Duration::from_secs(5),
        "the last survivor written {all_written_after:?} after the restart"
    );
    e2e::wait_status(&client, &ns.name, "newcomer", Duration::from_secs(30), "a first status", |s| s.phase.is_some())
        .await;
    let newcomer_after = back_at.elapsed();
    // Up to two waits of at most 4 s (the restarted API server first answers
    // the watch 410 Expired, then the relist), then one poll: 2.7–5.6 s
    // measured; 15 s leaves room for a loaded machine.
    assert!(
        newcomer_after < Duration::from_secs(15),
        "a new ImageJob's first status {newcomer_after:?} after the restart"
    );
    let done = survivors_until(&client, &ns.name, "Succeeded", |_, s| s.phase == Some(Phase::Succeeded)).await;
    assert!(done.iter().all(|s| s.image_id.as_deref() == Some(IMAGE_ID)), "{done:?}");
    assert!(!op.exited(), "the operator is still running:\n{}", op.log());
    eprintln!(
        "API server down for {:.1}s (SIGKILL to ready again), {retries} ImageJob watch attempts meanwhile; all \
         {SURVIVORS} survivors written {:.1}s, a new ImageJob's first status {:.1}s and all Succeeded {:.1}s after \
         it was back",
        back_after.as_secs_f64(),
        all_written_after.as_secs_f64(),
        newcomer_after.as_secs_f64(),
        back_at.elapsed().as_secs_f64(),
    );
    ns.cleanup().await;
}

/// Waits (up to 90 s) until every survivor's status satisfies `pred`
/// (given its index); returns them in order.
async fn survivors_until(
    client: &kube::Client,
    ns: &str,
    what: &str,
    pred: impl Fn(usize, &imagejob_operator::crd::ImageJobStatus) -> bool,
) -> Vec<imagejob_operator::crd::ImageJobStatus> {
    let mut statuses = Vec::new();
    for i in 0..SURVIVORS {
        let name = format!("survivor-{i}");
        statuses.push(e2e::wait_status(client, ns, &name, Duration::from_secs(90), what, |s| pred(i, s)).await);
    }
    statuses
}

/// etcd stalled for 25 s under a running API server (SIGSTOP, as a disk
/// stall or a lost quorum does): the watches stay open and every status
/// write times out (504 after the API server's request timeout, 5 s here
/// rather than its default minute). Nothing is marked failed, the operator
/// keeps running, and once etcd answers again every ImageJob is written
/// within seconds, with no relist to bring it (kube's client retries the
/// 504s; the operator's own retry on `/readyz` covers the errors it passes on).
#[tokio::test(flavor = "multi_thread")]
async fn writes_resume_as_soon_as_a_stalled_etcd_answers() {
    const JOBS: usize = 8;
    let cp =
        tokio::task::spawn_blocking(|| PrivateControlPlane::up_with(&[("IMAGEJOB_APISERVER_REQUEST_TIMEOUT", "5s")]))
            .await
            .unwrap();
    let client = cp.client().await;
    e2e::install_imagejob_crd(&client).await;
    let ns = TestNamespace::new(&client, "e2e-etcd-stall").await;
    let run_label = e2e::unique_label();
    let job_id = |i: usize| format!("ff8080817a0a0a0a017a0a0a0b0b{i:04}");
    // Progress rises by a point every second or two: a poll a second has a
    // status to write all along.
    let jobs: Vec<_> = (0..JOBS).map(|i| e2e::succeeding_job(&job_id(i), "0s", "150s")).collect();
    let sim = Sim::start(serde_json::Value::Array(jobs));
    e2e::create_aksk_secret(&client, &ns.name, "creds", e2e::SK).await;
    let mut cmd = Operator::run_command(&sim, &run_label);
    cmd.env("KUBECONFIG", &cp.kubeconfig).args(["--poll-interval", "1s"]);
    let mut op = Operator::spawn(cmd, None).expect("start imagejob-operator");
    for i in 0..JOBS {
        e2e::create(&client, &ns.name, &e2e::imagejob(&format!("job-{i}"), &run_label, &job_id(i), "creds")).await;
    }
    for i in 0..JOBS {
        e2e::wait_status(&client, &ns.name, &format!("job-{i}"), Duration::from_secs(30), "Running", |s| {
            s.phase == Some(Phase::Running)
        })
        .await;
    }
    let watch_errors_before = imagejob_watch_errors(&mut op).await;

    let stall = cp.freeze("etcd");
    tokio::time::sleep(Duration::from_secs(25)).await;
    // From the API server's watch cache (resourceVersion 0): etcd answers nothing.
    let before_thaw = resource_versions(&client, &ns.name).await;
    drop(stall);
    let thawed_at = Instant::now();
    assert!(!op.exited(), "the operator exited while etcd stalled:\n{}", op.log());

    let written = common::eventually(Duration::from_secs(60), "every ImageJob written after the stall", || {
        let (client, ns, before) = (client.clone(), ns.name.clone(), before_thaw.clone());
        async move {
            let now = resource_versions(&client, &ns).await;
            now.iter().all(|(name, rv)| before.get(name) != Some(rv)).then_some(())
        }
    });
    written.await;
    let all_written_after = thawed_at.elapsed();
    eprintln!(
        "etcd stalled 25 s; every ImageJob written {:.1}s after it answered again",
        all_written_after.as_secs_f64()
    );
    // 0.6–4 s measured; 8 s leaves room for a loaded machine. Left to the
    // reconcile backoff they would come 16–64 s late.
    assert!(
        all_written_after < Duration::from_secs(8),
        "the last ImageJob written {all_written_after:?} after etcd answered again"
    );
    assert_eq!(imagejob_watch_errors(&mut op).await, watch_errors_before, "the ImageJob watch stayed open");
    for i in 0..JOBS {
        let status = e2e::status(&client, &ns.name, &format!("job-{i}")).await.unwrap();
        assert_eq!(status.phase, Some(Phase::Running), "job-{i} is still Running, not failed: {status:?}");
    }
    ns.cleanup().await;
}

/// The operator's count of ImageJob watch errors; a dead operator is named
/// with its log rather than as unreadable metrics.
async fn imagejob_watch_errors(op: &mut Operator) -> Option<f64> {
    assert!(!op.exited(), "the operator exited:\n{}", op.log());
    op.metrics().await.get_with("imagejob_watch_errors_total", &[("resource", "imagejobs")])
}

/// Every ImageJob's resourceVersion, as the API server's cache holds them.
async fn resource_versions(client: &kube::Client, ns: &str) -> std::collections::BTreeMap<String, String> {
    let api = Api::<imagejob_operator::crd::ImageJob>::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default().match_any()).await.expect("list from the watch cache");
    list.items.into_iter().map(|ij| (ij.metadata.name.unwrap(), ij.metadata.resource_version.unwrap())).collect()
}
