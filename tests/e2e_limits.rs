//! The operator's own limits on what it asks of the cloud, counted by
//! `ims-sim` (never timed): one forced poll per `FORCED_POLL_GAP`, the
//! credential gate's probes of a refused key (issue 25, item 8), and
//! `--concurrency`.

mod common;

use std::time::{Duration, Instant};

use common::e2e::*;
use imagejob_operator::crd::{ImageJobStatus, Phase};
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

/// The credential gate's real constants, on a refused access key:
/// - five Secrets naming one access key with five wrong secret keys send
///   three bad signatures (`MAX_REFUSED_PER_LOCK`), never the gateway's
///   five, and the two left wait out the window (`LOCK_WINDOW`, 5 min:
///   "next try in" close to 300 s);
/// - a refused key is probed again after `PROBE_MIN` (300 s, with jitter
///   up to twice that): forced polls meanwhile send nothing, and the
///   gate's debug line says when the next probe goes.
///
/// Red with `MAX_REFUSED_PER_LOCK` 5 (five bad signatures), `LOCK_WINDOW`
/// or `PROBE_MIN` a tenth.
#[tokio::test]
async fn a_refused_key_is_probed_as_the_gate_allows() {
    let (client, ns, run) = setup("e2e-gate").await;
    let n = &ns.name;
    let (lock_key, probe_key) = ("E2ELOCKKEY", "E2EPROBEKEY");
    let locked: Vec<String> = (1..=5).map(|i| format!("ff8080814dbd65d7014dbe0d84dd51{i:02}")).collect();
    let probed = "ff8080814dbd65d7014dbe0d84dd5201";
    let mut jobs: Vec<_> = locked.iter().map(|id| succeeding_job(id, "0s", "1h")).collect();
    jobs.push(succeeding_job(probed, "0s", "1h"));
    let mut scenario = Sim::scenario(json!(jobs));
    let keys = scenario["access_keys"].as_array_mut().unwrap();
    keys.push(json!({"access": lock_key, "secret": "lock-key-right-secret"}));
    keys.push(json!({"access": probe_key, "secret": "probe-key-right-secret"}));
    let sim = Sim::start_with(scenario);
    for (i, id) in locked.iter().enumerate() {
        let name = format!("lock-{i}");
        create_key_secret(&client, n, &name, lock_key, &format!("wrong-secret-{i}")).await;
        create(&client, n, &imagejob(&name, &run, id, &name)).await;
    }
    create_key_secret(&client, n, "probe", probe_key, "wrong-secret").await;
    create(&client, n, &imagejob("probe", &run, probed, "probe")).await;
    let env = [("RUST_LOG", "warn,imagejob_operator::controller::gate=debug")];
    let op = Operator::start_with(&sim, &run, &["--log-format", "json"], &env);

    let auth_failed = |s: &ImageJobStatus| condition(s, "Stalled").is_some_and(|c| c.1 == "AuthenticationFailed");
    wait_status(&client, n, "probe", WAIT, "AuthenticationFailed", auth_failed).await;
    let not_sent =
        |s: &ImageJobStatus| auth_failed(s) || condition(s, "Reconciling").is_some_and(|c| c.2.contains("not sent"));
    let mut held = Vec::new();
    for i in 0..locked.len() {
        let s = wait_status(&client, n, &format!("lock-{i}"), WAIT, "refused or held", not_sent).await;
        if !auth_failed(&s) {
            held.push(condition(&s, "Reconciling").unwrap().2);
        }
    }

    // Forced polls of the refused key over 12 s: each honoured, none sent.
    for value in ["probe-1", "probe-2", "probe-3"] {
        request_poll(&client, n, "probe", value).await;
        wait_status(&client, n, "probe", Duration::from_secs(20), "the forced poll honoured", |s| {
            s.last_handled_reconcile_at.as_deref() == Some(value) && auth_failed(s)
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut sent = 0;
    for id in &locked {
        sent += sim.requests(id).await;
    }
    assert_eq!(sent, 3, "bad signatures with one access key: at most MAX_REFUSED_PER_LOCK (3) of the gateway's 5");
    assert_eq!(held.len(), 2, "two Secrets of the access key wait for the window: {held:?}");
    for message in &held {
        let next_try =
            leading_number(message, "next try in ").unwrap_or_else(|| panic!("no 'next try in Ns': {message}"));
        assert!(message.contains("last 5 minutes"), "{message}");
        assert!((240..=300).contains(&next_try), "the 5-minute window: next try in {next_try}s ({message})");
    }
    assert_eq!(sim.requests(probed).await, 1, "a refused key is sent nothing before its probe backoff");
    assert_eq!(
        sim.counter("/auth_failures/aksk").await,
        4,
        "one bad signature per refused key, three of the shared one"
    );

    // PROBE_MIN (300 s, with jitter below twice that) for each refused key.
    let log = op.log();
    let waits: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("credential refused"))
        .map(|l| {
            let line: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            line["next_probe_in"].as_u64().unwrap_or_else(|| panic!("no next_probe_in: {l}"))
        })
        .collect();
    assert_eq!(waits.len(), 4, "one refusal per key sent:\n{log}");
    assert!(waits.iter().all(|w| (299..600).contains(w)), "next probes in {waits:?} s: PROBE_MIN is 300 s");
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
        let jobs: Vec<_> = ids.iter().map(|id| slow_job(id)).collect();
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

/// The number right after `label` in `text`.
fn leading_number(text: &str, label: &str) -> Option<u64> {
    let rest = text.split(label).nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Fairness under overload: behind a cloud that answers in 1 s, two
/// reconcile slots and ImageJobs polled every second, the running ones
/// would take every slot (kube-runtime picks waiting reconciles in hash
/// order, not arrival order) and some new ImageJobs never got a first
/// status. Those already showing a status step back while new ones wait.
///
/// Red without the step back (`plan::yields_to_newcomers` false): new
/// ImageJobs without a status after 30 s.
#[tokio::test]
async fn new_imagejobs_get_a_first_status_behind_a_saturated_queue() {
    let (client, ns, run) = setup("e2e-fairness").await;
    let n = &ns.name;
    let ids: Vec<String> = (0..12).map(|i| format!("ff8080814dbd65d7014dbe0d84d3{i:04}")).collect();
    let sim = Sim::start(json!(ids.iter().map(|id| slow_job(id)).collect::<Vec<_>>()));
    create_aksk_secret(&client, n, "creds", SK).await;
    let op = Operator::start(&sim, &run, &["--concurrency", "2"]);
    let (running, new) = ids.split_at(4);
    for (i, id) in running.iter().enumerate() {
        create(&client, n, &imagejob(&format!("running-{i}"), &run, id, "creds")).await;
    }
    for i in 0..running.len() {
        wait_status(&client, n, &format!("running-{i}"), WAIT, "Running", |s| s.phase == Some(Phase::Running)).await;
    }
    // Four ImageJobs due every second, each poll 1 s, two slots: saturated.
    let t = Instant::now();
    for (i, id) in new.iter().enumerate() {
        create(&client, n, &imagejob(&format!("new-{i}"), &run, id, "creds")).await;
    }
    let mut firsts = Vec::new();
    for i in 0..new.len() {
        wait_status(&client, n, &format!("new-{i}"), Duration::from_secs(30), "a first status", |s| s.phase.is_some())
            .await;
        firsts.push(t.elapsed().as_secs_f64());
    }
    println!("E2E-NUMBERS fairness: {} new ImageJobs had a first status after {firsts:.1?} s", new.len());
    drop(op);
    ns.cleanup().await;
}

/// Running for an hour, every answer 1 s late (a slow cloud).
fn slow_job(id: &str) -> serde_json::Value {
    let mut job = succeeding_job(id, "0s", "1h");
    job["faults"] = json!([{"fault": "latency", "delay": "1s"}]);
    job
}
