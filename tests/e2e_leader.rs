//! (j) Leader election end to end. In its own test binary so it runs alone:
//! Lease renewals are the most timing-sensitive thing the operator does, and
//! the other e2e tests run a dozen operators side by side.

mod common;

use std::time::Duration;

use common::e2e::*;
use common::{TestNamespace, client, eventually};
use imagejob_operator::crd::Phase;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// (j) Two operators with --leader-elect: only the leader polls; the
/// standby takes over when the leader is killed.
#[tokio::test]
async fn leader_election_fails_over() {
    let client = client().await;
    install_imagejob_crd(&client).await;
    let ns = TestNamespace::new(&client, "e2e-leader").await;
    let run = unique_label();
    let job = "ff8080814dbd65d7014dbe0d84dbc001";
    let sim = Sim::start(json!([succeeding_job(job, "1s", "120s")]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let lease = ["--leader-elect", "--leader-election-namespace", &ns.name, "--leader-election-lease", &run];
    let mut ops = [Operator::start(&sim, &run, &lease), Operator::start(&sim, &run, &lease)];
    create(&client, &ns.name, &imagejob("elected", &run, job, "creds")).await;
    wait_status(&client, &ns.name, "elected", WAIT, "Running", |s| s.phase == Some(Phase::Running)).await;

    // Exactly one leader must settle. A leader whose renewal came too late
    // (a loaded machine) exits by design so that a restart rejoins as a
    // standby; the test restarts it as a Deployment would, a few times at
    // most (a crash-looping operator must not pass).
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    let mut restarts = 0;
    let leader_index = loop {
        restarts += restart_exited(&mut ops, &sim, &run, &lease);
        assert!(restarts <= MAX_RESTARTS, "operators exited {restarts} times before a leader settled");
        match (ops[0].try_metric("imagejob_leader").await, ops[1].try_metric("imagejob_leader").await) {
            (Some(1.0), Some(0.0)) => break 0,
            (Some(0.0), Some(1.0)) => break 1,
            seen => assert!(std::time::Instant::now() < deadline, "no single leader settled: {seen:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("E2E-NUMBERS leader-restarts-before-settling: {restarts}");
    let [first, second] = ops;
    let (mut leader, standby) = if leader_index == 0 { (first, second) } else { (second, first) };
    only_one_polls(&sim, job, &leader, &standby).await;

    leader.kill();
    let killed = std::time::Instant::now();
    eventually(Duration::from_secs(40), "the standby to take the Lease", || async {
        (standby.metric("imagejob_leader").await == 1.0).then_some(())
    })
    .await;
    let takeover = killed.elapsed();
    println!("E2E-NUMBERS leader-takeover: {takeover:?}");
    assert!(takeover <= Duration::from_secs(25), "takeover took {takeover:?}");

    // The old leader comes back as a Deployment would restart it: it must
    // stay a standby, and the new leader alone polls.
    let rejoined = Operator::start(&sim, &run, &lease);
    assert!(rejoined.wait_ready(Duration::from_secs(20)).await.is_some(), "restarted operator not ready");
    only_one_polls(&sim, job, &standby, &rejoined).await;
    assert_eq!(rejoined.metric("imagejob_leader").await, 0.0, "the restarted operator took the Lease");
    ns.cleanup().await;
}

const MAX_RESTARTS: usize = 3;

/// Replaces exited operators with new ones; returns how many.
fn restart_exited(ops: &mut [Operator], sim: &Sim, run: &str, lease: &[&str]) -> usize {
    let mut n = 0;
    for op in ops.iter_mut().filter_map(|op| op.exited().then_some(op)) {
        *op = Operator::start(sim, run, lease);
        n += 1;
    }
    n
}

/// Over a few poll intervals the cloud sees exactly the leader's requests:
/// the simulator's count rises by what the leader counted, the standby
/// counts none (one request may be in flight at either reading).
async fn only_one_polls(sim: &Sim, job: &str, leader: &Operator, standby: &Operator) {
    let (sim_a, leader_a) = (sim.requests(job).await, leader.metric("imagejob_ims_requests_total").await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (sim_b, leader_b) = (sim.requests(job).await, leader.metric("imagejob_ims_requests_total").await);
    let (cloud, by_leader) = (sim_b - sim_a, leader_b - leader_a);
    println!("E2E-NUMBERS leader-polls: cloud saw {cloud}, the leader sent {by_leader} in 5 s");
    assert_eq!(standby.metric("imagejob_ims_requests_total").await, 0.0, "the standby polled");
    assert!(by_leader >= 3.0, "the leader should poll about every second: {by_leader} in 5 s");
    assert!((cloud as f64 - by_leader).abs() <= 1.0, "cloud saw {cloud} requests, the leader sent {by_leader}");
}

/// Without `--leader-election-namespace` the Lease lives in the Pod's
/// namespace (`POD_NAMESPACE`, as the chart sets it), held by `POD_NAME`.
#[tokio::test]
async fn the_lease_falls_back_to_the_pods_namespace() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-lease-ns").await;
    let run = unique_label();
    let sim = Sim::start(json!([]));
    let env = [("POD_NAMESPACE", ns.name.as_str()), ("POD_NAME", "operator-pod-0")];
    let op = Operator::start_with(&sim, &run, &["--leader-elect", "--leader-election-lease", &run], &env);
    let holder = eventually(Duration::from_secs(20), "the Lease in the Pod's namespace", || async {
        let lease = ns.api::<k8s_openapi::api::coordination::v1::Lease>().get_opt(&run).await.unwrap()?;
        lease.spec?.holder_identity.filter(|h| !h.is_empty())
    })
    .await;
    assert_eq!(holder, "operator-pod-0");
    assert_eq!(op.metric("imagejob_leader").await, 1.0);
    ns.cleanup().await;
}
