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

/// `--concurrency 2`: ten ImageJobs whose cloud answers take a second each
/// never have more than two requests in flight (ims-sim's `max_in_flight`),
/// where the default (32) has more. Red with the flag ignored.
#[tokio::test]
async fn concurrency_bounds_the_requests_in_flight() {
    let (client, ns, run) = setup("e2e-concurrency").await;
    let (run_default, n) = (unique_label(), &ns.name);
    let slow_jobs = |prefix: &str| -> (Vec<String>, Sim) {
        let ids: Vec<String> = (0..10).map(|i| format!("ff8080814dbd65d7014dbe0d84d{prefix}{i:02}")).collect();
        let jobs: Vec<_> = ids
            .iter()
            .map(|id| {
                let mut j = succeeding_job(id, "0s", "1h");
                j["faults"] = json!([{"fault": "latency", "delay": "1s"}]);
                j
            })
            .collect();
        (ids, Sim::start(json!(jobs)))
    };
    let (bounded_ids, bounded) = slow_jobs("c10");
    let (default_ids, default) = slow_jobs("c20");
    create_aksk_secret(&client, n, "creds", SK).await;
    let _bounded_op = Operator::start(&bounded, &run, &["--concurrency", "2"]);
    let _default_op = Operator::start(&default, &run_default, &[]);
    // Polled every 30 s: each ImageJob asks once in the test, so requeues do
    // not compete with the first polls for the two slots.
    let slow = |name: String, label: &str, id: &str| {
        let mut ij = imagejob(&name, label, id, "creds");
        ij.spec.poll_interval = Some("30s".into());
        ij
    };
    for (i, (a, b)) in bounded_ids.iter().zip(&default_ids).enumerate() {
        create(&client, n, &slow(format!("bounded-{i}"), &run, a)).await;
        create(&client, n, &slow(format!("default-{i}"), &run_default, b)).await;
    }
    for (sim, ids) in [(&bounded, &bounded_ids), (&default, &default_ids)] {
        common::eventually(WAIT, "every job asked", || async {
            for id in ids {
                if sim.requests(id).await == 0 {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }
    let (most_bounded, most_default) =
        (bounded.counter("/max_in_flight").await, default.counter("/max_in_flight").await);
    println!(
        "E2E-NUMBERS concurrency: at most {most_bounded} in flight with --concurrency 2, {most_default} by default"
    );
    assert_eq!(most_bounded, 2, "--concurrency 2: at most two requests at once, and two were");
    assert!(most_default >= 5, "the default allows more: {most_default} at once");
    ns.cleanup().await;
}
