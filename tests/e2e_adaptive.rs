//! End to end: the ETA in the status and the Adaptive poll policy, with the
//! operator binary, the local kube-apiserver and the `ims-sim` binary.

mod common;

use std::time::{Duration, Instant};

use common::e2e::*;
use common::{TestNamespace, client};
use imagejob_operator::crd::{ImageJob, Phase, PollPolicy};
use imagejob_operator::sim::shapes::Shape;
use serde_json::json;

const FIXED_JOB: &str = "ff8080814dbd65d7014dbe0d84dba001";
const ADAPTIVE_JOB: &str = "ff8080814dbd65d7014dbe0d84dba002";
/// Both cloud jobs: INIT 2 s, then 40 s of linear progress, then SUCCESS.
const INIT: Duration = Duration::from_secs(2);
const RUNNING: Duration = Duration::from_secs(40);

fn scripted(job_id: &str) -> serde_json::Value {
    json!({
        "project_id": PROJECT, "job_id": job_id, "job_type": "imsCreateImageByInstance",
        "phases": Shape::Linear.phases(INIT, RUNNING, "49e9447f-7dff-41e0-8036-f66fe5488c8b"),
    })
}

fn with_policy(mut ij: ImageJob, policy: PollPolicy) -> ImageJob {
    ij.spec.poll_policy = Some(policy);
    ij
}

/// What the test saw of one ImageJob while it ran.
#[derive(Default)]
struct Seen {
    /// (seconds since the ImageJob was created, progress, ETA in seconds since then).
    etas: Vec<(f64, i32, Option<f64>)>,
    done_at: Option<f64>,
    cleared_on_success: Option<bool>,
}

/// One long scripted job tracked twice, by a Fixed and by an Adaptive
/// ImageJob at the same 1 s interval: the Adaptive one shows an ETA close to
/// the real end while the job runs (none before progress rises, none after
/// SUCCESS), sees SUCCESS as soon, and asks the cloud less.
#[tokio::test]
async fn adaptive_polling_needs_fewer_requests_and_the_eta_is_shown_while_running() {
    let client = client().await;
    install_imagejob_crd(&client).await;
    let ns = TestNamespace::new(&client, "e2e-adaptive").await;
    let run = unique_label();
    let sim = Sim::start_with(json!({
        // Both clocks start with the simulator: the two jobs are one job, twice.
        "settings": {"clock": "sim_start"},
        "projects": [{"id": PROJECT}],
        "access_keys": [{"access": AK, "secret": SK}],
        "jobs": [scripted(FIXED_JOB), scripted(ADAPTIVE_JOB)],
    }));
    let sim_started = Instant::now();
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &with_policy(imagejob("fixed", &run, FIXED_JOB, "creds"), PollPolicy::Fixed)).await;
    create(&client, &ns.name, &with_policy(imagejob("adaptive", &run, ADAPTIVE_JOB, "creds"), PollPolicy::Adaptive))
        .await;

    let end = (INIT + RUNNING).as_secs_f64();
    let mut seen = [Seen::default(), Seen::default()];
    let deadline = sim_started + INIT + RUNNING + Duration::from_secs(30);
    while seen.iter().any(|s| s.done_at.is_none()) {
        assert!(Instant::now() < deadline, "not both Succeeded in time");
        for (name, s) in ["fixed", "adaptive"].iter().zip(&mut seen) {
            let Some(st) = status(&client, &ns.name, name).await else { continue };
            let t = sim_started.elapsed().as_secs_f64();
            if st.phase == Some(Phase::Succeeded) {
                s.done_at.get_or_insert(t);
                s.cleared_on_success.get_or_insert(st.estimated_completion_time.is_none());
            } else if st.phase == Some(Phase::Running) {
                let eta = st.estimated_completion_time.map(|e| {
                    let now = jiff::Timestamp::now();
                    t + e.0.duration_since(now).as_secs_f64()
                });
                s.etas.push((t, st.progress.unwrap_or(0), eta));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fixed_requests = sim.requests(FIXED_JOB).await;
    let adaptive_requests = sim.requests(ADAPTIVE_JOB).await;
    let late = |s: &Seen| s.done_at.unwrap() - end;
    println!(
        "E2E-NUMBERS adaptive: requests fixed={fixed_requests} adaptive={adaptive_requests} ratio={:.2}; \
         SUCCESS seen after fixed={:.2}s adaptive={:.2}s",
        adaptive_requests as f64 / fixed_requests as f64,
        late(&seen[0]),
        late(&seen[1])
    );

    for (name, s) in ["fixed", "adaptive"].iter().zip(&seen) {
        assert_eq!(s.cleared_on_success, Some(true), "{name}: estimatedCompletionTime cleared on SUCCESS");
        let shown: Vec<_> = s.etas.iter().filter_map(|(t, p, eta)| eta.map(|e| (*t, *p, e))).collect();
        assert!(!shown.is_empty(), "{name}: an ETA while RUNNING: {:?}", s.etas);
        assert!(s.etas.iter().all(|(_, p, eta)| eta.is_none() || *p > 0), "{name}: no ETA before progress rose");
        // From the middle of the job on, the ETA is within 15 % of the job's length.
        for (t, p, eta) in shown.iter().filter(|(_, p, _)| *p >= 50) {
            assert!((eta - end).abs() < 0.15 * end, "{name}: at {t:.1}s ({p}%) ETA {eta:.1}s, end {end:.1}s");
        }
    }
    assert!(
        (adaptive_requests as f64) < 0.8 * fixed_requests as f64,
        "Adaptive asked {adaptive_requests} times, Fixed {fixed_requests}"
    );
    assert!(late(&seen[1]) < 2.0, "Adaptive saw SUCCESS {:.2}s late", late(&seen[1]));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.requests(ADAPTIVE_JOB).await, adaptive_requests, "no requests after SUCCESS");
    drop(op);
    ns.cleanup().await;
}
