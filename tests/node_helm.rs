//! The chart on a real node (tests/cluster/up --node): `helm install` into a
//! namespace that enforces the restricted Pod Security Standard, the
//! operator Pod Ready through its own probes, an ImageJob Succeeded polled
//! from inside the Pod (in-cluster config, projected ServiceAccount token,
//! the `kubernetes` Service through kube-proxy) against ims-sim running as a
//! Deployment from the same image; then `helm upgrade` rolls the Pod without
//! losing or regressing any status, at no more than 1.2x the minimum
//! requests to the cloud (one per job per `spec.pollInterval`, as scripted,
//! not as the leader happened to poll). `helm test` checks /readyz from a Pod of the
//! same image through the chart's Service.

mod common;
#[path = "common/node.rs"]
mod node;

use std::time::{Duration, Instant};

use common::e2e::{self, PROJECT};
use imagejob_operator::crd::{ImageJob, Phase};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::json;

/// A job RUNNING from its first poll until `done_at`, then SUCCESS.
fn job(id: &str, done_at: &str) -> serde_json::Value {
    json!({"project_id": PROJECT, "job_id": id, "job_type": "imsCreateImageByInstance", "image_name": "node-e2e",
           "phases": [{"after": "0s", "status": "RUNNING", "progress": [0.0, 0.99]},
                      {"after": done_at, "status": "SUCCESS", "image_id": "49e9447f-7dff-41e0-8036-f66fe5488c8b"}]})
}

/// `e2e::imagejob`'s `spec.pollInterval`.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

fn phase_rank(phase: Option<Phase>) -> u8 {
    match phase {
        None => 0,
        Some(Phase::Pending) => 1,
        Some(Phase::Running) => 2,
        Some(_) => 3,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_install_runs_the_operator_in_a_pod_and_upgrade_rolls_it() {
    let node::Release { client, ns, run, release, cleanup: _cleanup } = node::release_setup("node-helm").await;

    // Short job: Succeeded. Long jobs: still running across the upgrade.
    let long: Vec<String> = (0..5).map(|i| format!("ff80808100000000000000000000{i:04x}")).collect();
    let mut jobs = vec![job("ff8080810000000000000000000000aa", "3s")];
    jobs.extend(long.iter().map(|id| job(id, "300s")));
    let sim = node::deploy_sim(&client, &ns, &node::scenario(json!(jobs), json!([]))).await;

    let started = Instant::now();
    node::helm_install(&release, &ns, &sim, &run, &[]);
    let selector = node::operator_selector(&release);
    let pods = node::wait_ready_pods(&client, &ns, &selector, 1, Duration::from_secs(180)).await;
    let ready_after = started.elapsed();
    eprintln!("node: operator Pod Ready {:.1}s after helm install", ready_after.as_secs_f64());
    let pod = &pods[0];
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.containers[0].image.as_deref(), Some(node::image().as_str()));
    let sc = spec.containers[0].security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    // The token the operator uses is the projected one, not a kubeconfig.
    assert!(spec.volumes.iter().flatten().any(|v| v.projected.is_some()), "projected ServiceAccount token");

    e2e::create_aksk_secret(&client, &ns, "otc", e2e::SK).await;
    let short = e2e::imagejob("short", &run, "ff8080810000000000000000000000aa", "otc");
    e2e::create(&client, &ns, &short).await;
    for (i, id) in long.iter().enumerate() {
        e2e::create(&client, &ns, &e2e::imagejob(&format!("long-{i}"), &run, id, "otc")).await;
    }
    let t = Instant::now();
    let s = e2e::wait_status(&client, &ns, "short", Duration::from_secs(60), "short Succeeded", |s| {
        s.phase == Some(Phase::Succeeded)
    })
    .await;
    eprintln!("node: ImageJob Succeeded {:.1}s after creation (in-Pod operator)", t.elapsed().as_secs_f64());
    assert_eq!(s.image_id.as_deref(), Some("49e9447f-7dff-41e0-8036-f66fe5488c8b"));
    helm_test_passes(&release, &ns);
    for i in 0..long.len() {
        e2e::wait_status(&client, &ns, &format!("long-{i}"), Duration::from_secs(30), "long Running", |s| {
            s.phase == Some(Phase::Running)
        })
        .await;
    }

    // The minimum rate is scripted: one request per job per pollInterval.
    // One leader polls at it (a counter over 10 s, not its own clock).
    let minimum = long.len() as f64 / POLL_INTERVAL.as_secs_f64();
    let c0 = total_requests(&sim, &long).await;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rate = (total_requests(&sim, &long).await - c0) as f64 / t.elapsed().as_secs_f64();
    eprintln!("node: one leader's steady rate {rate:.2}/s = {:.2}x the minimum {minimum:.1}/s", rate / minimum);
    assert!(rate <= 1.2 * minimum, "one leader polls at {rate:.2}/s, over 1.2x the minimum {minimum:.1}/s");

    // helm upgrade changing a value: a new ReplicaSet, the old Pod goes.
    let old_pod = pod.metadata.name.clone().unwrap();
    let upgrade_at = Instant::now();
    let c_upgrade = total_requests(&sim, &long).await;
    let p = node::published();
    node::helm_ok(&[
        "upgrade",
        &release,
        &p.chart,
        "--version",
        &p.version,
        "--plain-http",
        "-n",
        &ns,
        "--reuse-values",
        "--set",
        "logLevel=debug",
    ]);
    let pods_api = Api::<Pod>::namespaced(client.clone(), &ns);
    let ij_api = Api::<ImageJob>::namespaced(client.clone(), &ns);
    let mut last: Vec<(u8, i64)> = vec![(0, 0); long.len()];
    let mut rolled: Option<(Duration, u64)> = None;
    let resumed = loop {
        // No ImageJob may lose its status or go back (phase, then progress).
        let list = ij_api.list(&ListParams::default().labels(&format!("e2e-run={run}"))).await.unwrap();
        for ij in list.items {
            let Some(i) = ij.metadata.name.as_deref().and_then(|n| n.strip_prefix("long-")) else { continue };
            let i: usize = i.parse().unwrap();
            let st = ij.status.expect("status kept during the upgrade");
            let now = (phase_rank(st.phase), st.progress.unwrap_or(0) as i64);
            assert!(now >= last[i], "long-{i} regressed from {:?} to {now:?}", last[i]);
            last[i] = now;
        }
        let count = total_requests(&sim, &long).await;
        match rolled {
            None => {
                let pods = pods_api.list(&ListParams::default().labels(&selector)).await.unwrap();
                let names: Vec<String> = pods.items.iter().filter_map(|p| p.metadata.name.clone()).collect();
                let new_ready = pods.items.iter().any(|p| {
                    p.metadata.name.as_deref() != Some(old_pod.as_str())
                        && p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                });
                if new_ready && !names.contains(&old_pod) {
                    rolled = Some((upgrade_at.elapsed(), count));
                }
                assert!(upgrade_at.elapsed() < Duration::from_secs(120), "rollout not done in 120s: {names:?}");
            }
            // The new Pod polls: requests rise after the old Pod is gone.
            Some((_, at_roll)) if count > at_roll => break upgrade_at.elapsed(),
            Some(_) => assert!(upgrade_at.elapsed() < Duration::from_secs(60), "no polling 60s after the upgrade"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let (rolled_after, _) = rolled.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let window = upgrade_at.elapsed().as_secs_f64();
    let during = total_requests(&sim, &long).await - c_upgrade;
    let ratio = during as f64 / (minimum * window);
    eprintln!(
        "node: helm upgrade: new Pod Ready and old gone after {:.1}s, polling again after {:.1}s; \
         {during} requests in the {window:.1}s window for {} jobs = {ratio:.2}x the minimum ({minimum:.1}/s)",
        rolled_after.as_secs_f64(),
        resumed.as_secs_f64(),
        long.len()
    );
    assert!(ratio <= 1.2, "requests during the rollout: {ratio:.2}x the minimum");

    node::cleanup(&client, &release, &ns).await;
}

/// `helm test`: the chart's test Pod (same image, restricted Pod Security
/// Standard) GETs the operator's /readyz through its Service.
fn helm_test_passes(release: &str, ns: &str) {
    let t = Instant::now();
    let stdout = node::helm_ok(&["test", release, "-n", ns, "--timeout", "120s"]);
    eprintln!("node: helm test passed in {:.1}s", t.elapsed().as_secs_f64());
    assert!(stdout.contains("test-readyz") && stdout.contains("Succeeded"), "helm test output: {stdout}");
}

async fn total_requests(sim: &str, ids: &[String]) -> u64 {
    let mut sum = 0;
    for id in ids {
        sum += node::sim_requests(sim, id).await;
    }
    sum
}
