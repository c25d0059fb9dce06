//! The operator's own limits on what it asks of the cloud, counted by
//! `ims-sim` (never timed): one forced poll per `FORCED_POLL_GAP`, the
//! credential gate's probes of a refused key (issue 25, item 8), and
//! `--concurrency`.

mod common;

use std::time::{Duration, Instant};

use common::e2e::*;
use imagejob_operator::crd::Phase;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);
/// The promised gap between forced polls (`FORCED_POLL_GAP`), written out:
/// the test must not follow the constant it checks.
const FORCED_POLL_GAP: Duration = Duration::from_secs(5);

/// An annotation loop cannot burn the quota: four different
/// `ims.otc.io/requestedAt` values within 2 s cost one cloud request; the
/// last is honoured once the gap has passed, with one more. Red with
/// `FORCED_POLL_GAP` 0 (a request per value).
#[tokio::test]
async fn requested_at_values_within_the_gap_cost_one_request() {
    let (client, ns, run) = setup("e2e-gap").await;
    let job = "ff8080814dbd65d7014dbe0d84dd5001";
    let sim = Sim::start(json!([succeeding_job(job, "0s", "1s")]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let _op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &imagejob("gap", &run, job, "creds")).await;
    wait_status(&client, &ns.name, "gap", WAIT, "Succeeded", |s| s.phase == Some(Phase::Succeeded)).await;
    let before = sim.requests(job).await;

    let started = Instant::now();
    for value in ["burst-1", "burst-2", "burst-3", "burst-4"] {
        request_poll(&client, &ns.name, "gap", value).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let burst = started.elapsed();
    assert!(burst < FORCED_POLL_GAP, "the four annotations took {burst:?}: the test needs them within the gap");
    let within = sim.requests(job).await - before;
    assert_eq!(within, 1, "four requestedAt values in {burst:?}: {within} cloud requests, the gap allows one");

    wait_status(&client, &ns.name, "gap", Duration::from_secs(20), "the last value honoured", |s| {
        s.last_handled_reconcile_at.as_deref() == Some("burst-4")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim.requests(job).await - before, 2, "the last value after the gap: one request more, no other");
    ns.cleanup().await;
}
