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
    let sim = Sim::start(json!([succeeding_job(job, "1s", "40s")]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let lease = ["--leader-elect", "--leader-election-namespace", &ns.name, "--leader-election-lease", &run];
    let first = Operator::start(&sim, &run, &lease);
    let second = Operator::start(&sim, &run, &lease);
    create(&client, &ns.name, &imagejob("elected", &run, job, "creds")).await;
    wait_status(&client, &ns.name, "elected", WAIT, "Running", |s| s.phase == Some(Phase::Running)).await;

    // Under load a renewal can be late for a moment; exactly one leader must settle.
    let leaders = eventually(Duration::from_secs(15), "exactly one leader", || async {
        let l = (first.metric("imagejob_leader").await, second.metric("imagejob_leader").await);
        (l == (1.0, 0.0) || l == (0.0, 1.0)).then_some(l)
    })
    .await;
    let (mut leader, standby) = if leaders.0 == 1.0 { (first, second) } else { (second, first) };
    assert_eq!(standby.metric("imagejob_ims_requests_total").await, 0.0, "the standby must not poll");
    assert!(leader.metric("imagejob_ims_requests_total").await >= 1.0);

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
