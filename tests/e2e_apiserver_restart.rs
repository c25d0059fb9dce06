//! The API server killed (SIGKILL) and restarted mid-job on the same etcd:
//! the operator keeps running, counts the broken ImageJob watch, and the job
//! completes (issue 10; RELIABILITY.md). The fault needs a control plane of
//! its own — killing the shared one would fail every test beside this one —
//! so `tests/cluster/up` starts a private etcd + kube-apiserver (own cache
//! directory and ports, the built tools linked from the shared cache) and
//! `tests/cluster/up` again is what restarts the killed API server: the path
//! that keeps etcd's data.

mod common;

use std::time::{Duration, Instant};

use common::TestNamespace;
use common::control_plane::PrivateControlPlane;
use common::e2e::{self, Operator, Sim};
use imagejob_operator::crd::Phase;

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_killed_and_restarted_mid_job_loses_nothing() {
    let started = Instant::now();
    let cp = tokio::task::spawn_blocking(PrivateControlPlane::up).await.unwrap();
    eprintln!("private control plane ready in {:.1}s", started.elapsed().as_secs_f64());
    let client = cp.client().await;
    e2e::install_imagejob_crd(&client).await;
    let ns = TestNamespace::new(&client, "e2e-apiserver-restart").await;
    let run_label = e2e::unique_label();

    // RUNNING with rising progress for 45 s: it ends after the API server is back.
    let sim = Sim::start(serde_json::json!([e2e::succeeding_job("ff8080817a0a0a0a017a0a0a0a0a0001", "0s", "45s")]));
    e2e::create_aksk_secret(&client, &ns.name, "creds", e2e::SK).await;
    let mut cmd = Operator::run_command(&sim, &run_label);
    cmd.env("KUBECONFIG", &cp.kubeconfig).args(["--poll-interval", "1s"]);
    let mut op = Operator::spawn(cmd, None).expect("start imagejob-operator");
    e2e::create(&client, &ns.name, &e2e::imagejob("survivor", &run_label, "ff8080817a0a0a0a017a0a0a0a0a0001", "creds"))
        .await;
    let running = e2e::wait_status(&client, &ns.name, "survivor", Duration::from_secs(30), "Running", |s| {
        s.phase == Some(Phase::Running)
    })
    .await;

    let down_at = Instant::now();
    cp.kill_apiserver();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(!op.exited(), "the operator exited while the API server was down:\n{}", op.log());

    let (_, up_log) = tokio::task::block_in_place(|| cp.script("up"));
    assert!(up_log.contains("data kept"), "up restarts only the API server, on the running etcd:\n{up_log}");
    let back_after = down_at.elapsed();
    let back_at = Instant::now();

    // Same etcd: the ImageJob and its status are still there.
    let kept = e2e::status(&client, &ns.name, "survivor").await.expect("the ImageJob survived the restart");
    assert!(kept.phase.is_some() && kept.observed_generation == running.observed_generation, "{kept:?}");
    let moved = e2e::wait_status(&client, &ns.name, "survivor", Duration::from_secs(30), "progress written", |s| {
        s.progress > kept.progress || s.phase == Some(Phase::Succeeded)
    })
    .await;
    let first_write_after = back_at.elapsed();
    // The watches come back within their 2–4 s backoff and their relist
    // reconciles at once (0.2–3.8 s measured); with kube's default watch
    // backoff (up to 30 s) it took 3–27 s. 10 s leaves room for a loaded machine.
    assert!(first_write_after < Duration::from_secs(10), "first status write {first_write_after:?} after the restart");
    eprintln!("progress {:?} -> {:?}", kept.progress, moved.progress);
    let done = e2e::wait_status(&client, &ns.name, "survivor", Duration::from_secs(90), "Succeeded", |s| {
        s.phase == Some(Phase::Succeeded)
    })
    .await;
    assert_eq!(done.image_id.as_deref(), Some("49e9447f-7dff-41e0-8036-f66fe5488c8b"));
    assert!(!op.exited(), "the operator is still running:\n{}", op.log());
    let watch_errors = op.metric_with("imagejob_watch_errors_total", &[("resource", "imagejobs")]).await;
    assert!(watch_errors >= 1.0, "the broken ImageJob watch is counted ({watch_errors})");
    eprintln!(
        "API server down for {:.1}s (SIGKILL to ready again); first status write {:.1}s and Succeeded \
         {:.1}s after it was back; {watch_errors} ImageJob watch errors counted; {} IMS requests",
        back_after.as_secs_f64(),
        first_write_after.as_secs_f64(),
        back_at.elapsed().as_secs_f64(),
        sim.requests("ff8080817a0a0a0a017a0a0a0a0a0001").await
    );
    ns.cleanup().await;
}
