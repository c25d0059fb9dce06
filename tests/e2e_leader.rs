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
    // standby; the test restarts it as a Deployment would.
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    let mut restarts = 0;
    let leader_index = loop {
        for op in ops.iter_mut() {
            if op.exited() {
                *op = Operator::start(&sim, &run, &lease);
                restarts += 1;
            }
        }
        match (ops[0].metric("imagejob_leader").await, ops[1].metric("imagejob_leader").await) {
            (1.0, 0.0) => break 0,
            (0.0, 1.0) => break 1,
            seen => assert!(std::time::Instant::now() < deadline, "no single leader settled: {seen:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("E2E-NUMBERS leader-restarts-before-settling: {restarts}");
    let [first, second] = ops;
    let (mut leader, standby) = if leader_index == 0 { (first, second) } else { (second, first) };
    assert_eq!(standby.metric("imagejob_ims_requests_total").await, 0.0, "the standby must not poll");
    let before = sim.requests(job).await;
    eventually(Duration::from_secs(15), "the leader to poll", || async {
        (sim.requests(job).await > before && leader.metric("imagejob_ims_requests_total").await >= 1.0).then_some(())
    })
    .await;

    leader.kill();
    let killed = std::time::Instant::now();
    eventually(Duration::from_secs(40), "the standby to take the Lease", || async {
        (standby.metric("imagejob_leader").await == 1.0).then_some(())
    })
    .await;
    let takeover = killed.elapsed();
    println!("E2E-NUMBERS leader-takeover: {takeover:?}");
    assert!(takeover <= Duration::from_secs(25), "takeover took {takeover:?}");
    let before = sim.requests(job).await;
    eventually(Duration::from_secs(15), "the new leader to poll", || async {
        (sim.requests(job).await > before).then_some(())
    })
    .await;
    ns.cleanup().await;
}
