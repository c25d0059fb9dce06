//! The chart's memory limit is real: 1,000 running ImageJobs against the
//! operator in a Pod with the chart's default resources on a real node
//! (tests/cluster/up --node). Reads the container's peak memory from its
//! cgroup, prints it, and asserts it stays under the limit with room. The
//! same for a hostile tenant's objects (issue 21): 100 ConfigMaps of 900 KiB
//! with the operator's label and 30 ImageJobs with 200 KiB annotations.

mod common;
#[path = "common/node.rs"]
mod node;

use std::time::{Duration, Instant};

use common::e2e::{self, PROJECT};
use futures::{StreamExt, TryStreamExt};
use imagejob_operator::crd::ImageJob;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

const JOBS: usize = 1000;
const PREFIX: &str = "ff808083a0";

fn job_id(i: usize) -> String {
    // As ims-sim's job_sets: the index in hex fills the id up to 32 characters.
    format!("{PREFIX}{i:0width$x}", width = 32 - PREFIX.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_running_imagejobs_stay_under_the_pods_memory_limit() {
    let node::Release { client, ns, run, release, cleanup: _cleanup } = node::release_setup("node-memory").await;
    let sets = json!([{
        "count": JOBS, "project_id": PROJECT, "job_id_prefix": PREFIX, "age_spread": "60s",
        "template": {"job_type": "imsCreateImageByInstance", "clock": "sim_start", "image_name": "node-memory",
                     "phases": [{"after": "0s", "status": "RUNNING", "progress": [0.0, 0.99],
                                 "current_task": "CreateImageByInstanceTask"},
                                {"after": "3600s", "status": "SUCCESS"}]}
    }]);
    let sim = node::deploy_sim(&client, &ns, &node::scenario(json!([]), sets)).await;
    // Default resources (the point); a higher IMS rate so the first round of
    // 1,000 polls takes seconds, not the 100 s the default 10/s would.
    node::helm_install(&release, &ns, &sim, &run, &["imsRateLimit=100", "imsRateBurst=200"]);
    let pod = node::wait_ready_pods(&client, &ns, &node::operator_selector(&release), 1, Duration::from_secs(180))
        .await
        .remove(0);
    let limits = pod.spec.as_ref().unwrap().containers[0].resources.clone().unwrap().limits.unwrap();
    eprintln!("node: operator limits {:?}", limits.iter().map(|(k, v)| format!("{k}={}", v.0)).collect::<Vec<_>>());
    let cgroup = node::memory_cgroup(&pod, "operator");
    let limit = node::read_u64(&cgroup.join("memory.limit_in_bytes"));
    let idle = node::read_u64(&cgroup.join("memory.usage_in_bytes"));

    e2e::create_aksk_secret(&client, &ns, "otc", e2e::SK).await;
    let api = Api::<ImageJob>::namespaced(client.clone(), &ns);
    let started = Instant::now();
    futures::stream::iter(0..JOBS)
        .map(|i| {
            let api = api.clone();
            let run = run.clone();
            async move {
                let ij: ImageJob = serde_json::from_value(json!({
                    "apiVersion": "ims.otc.io/v1alpha1", "kind": "ImageJob",
                    "metadata": {"name": format!("job-{i:04}"), "labels": {"e2e-run": run}},
                    "spec": {"jobId": job_id(i), "projectId": PROJECT, "credentialsRef": {"name": "otc"},
                             "pollInterval": "30s"}
                }))
                .unwrap();
                api.create(&PostParams::default(), &ij).await.map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    eprintln!("node: created {JOBS} ImageJobs in {:.1}s", started.elapsed().as_secs_f64());

    // Every ImageJob in the operator's cache, then as many polled as this
    // machine manages in four minutes (all of them with release binaries;
    // a debug build on a loaded 2-core machine falls behind).
    let svc = Api::<Service>::namespaced(client.clone(), &ns);
    let metrics_ip = svc.get(&format!("{release}-imagejob-operator-metrics")).await.unwrap().spec.unwrap().cluster_ip;
    let metrics_url = format!("http://{}:8080/metrics", metrics_ip.unwrap());
    // Running only once polled: a missing series is no count (never 0).
    let seen = || async {
        let text = reqwest::get(&metrics_url).await.ok()?.text().await.ok()?;
        let running = running_series(&text);
        Some((e2e::metric_sum(&text, "imagejob_imagejobs") as usize, running))
    };
    let lp = ListParams::default().labels(&format!("e2e-run={run}"));
    let deadline = Instant::now() + Duration::from_secs(240);
    let (cached, running) = loop {
        let (cached, running) = seen().await.unwrap_or_default();
        if (cached == JOBS && running == Some(JOBS)) || Instant::now() > deadline {
            break (cached, running);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let polled = node::sim_jobs_polled(&sim).await;
    let listed = api.list(&lp).await.unwrap().items.len();
    eprintln!(
        "node: {cached} ImageJobs in the operator's cache ({listed} listed), {running:?} Running, {polled} jobs \
         polled, {:.1}s after the first was created",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(cached, JOBS, "the operator holds every ImageJob");
    assert_polled(running, polled);
    // A few more poll rounds at the steady state.
    tokio::time::sleep(Duration::from_secs(30)).await;

    let peak = node::read_u64(&cgroup.join("memory.max_usage_in_bytes"));
    let now = node::read_u64(&cgroup.join("memory.usage_in_bytes"));
    let stat = std::fs::read_to_string(cgroup.join("memory.stat")).unwrap();
    let rss = stat.lines().find_map(|l| l.strip_prefix("total_rss ")).unwrap_or("0").parse::<u64>().unwrap();
    let failcnt = node::read_u64(&cgroup.join("memory.failcnt"));
    let restarts = pod_restarts(&client, &ns, &release).await;
    let mib = |b: u64| b as f64 / 1048576.0;
    eprintln!(
        "node: operator container memory at {JOBS} ImageJobs, all Running: peak {:.1} MiB, now {:.1} MiB (rss {:.1} MiB), \
         idle before {:.1} MiB, limit {:.0} MiB, failcnt {failcnt}, restarts {restarts}",
        mib(peak),
        mib(now),
        mib(rss),
        mib(idle),
        mib(limit)
    );
    assert_eq!(restarts, 0, "the operator was never restarted (no OOM kill)");
    assert!(peak < limit / 2, "peak {:.1} MiB leaves room under the {:.0} MiB limit", mib(peak), mib(limit));
    node::cleanup(&client, &release, &ns).await;
}

/// A tenant fills its namespace with what the operator watches (ConfigMaps
/// labelled as its outputs, ImageJobs with huge annotations) before the
/// operator starts, outputs on: the container's cgroup peak stays under half
/// the chart's limit, no restart, and another ImageJob is served.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenants_objects_do_not_blow_up_the_pods_memory() {
    use imagejob_operator::crd::Phase;
    let node::Release { client, ns, run, release, cleanup: _cleanup } = node::release_setup("node-tenant-mem").await;
    let job = "ff8080814dbd65d7014dbe0d84df0014";
    let sim =
        node::deploy_sim(&client, &ns, &node::scenario(json!([e2e::succeeding_job(job, "0s", "3s")]), json!([]))).await;
    e2e::tenant_noise(&client, &ns, &run, "ff8080814dbd65d7014dbe0d84e2", 30).await;
    node::helm_install(&release, &ns, &sim, &run, &["outputs.enabled=true"]);
    let pod = node::wait_ready_pods(&client, &ns, &node::operator_selector(&release), 1, Duration::from_secs(180))
        .await
        .remove(0);
    let cgroup = node::memory_cgroup(&pod, "operator");
    e2e::create_aksk_secret(&client, &ns, "otc", e2e::SK).await;
    e2e::create(&client, &ns, &e2e::imagejob("innocent", &run, job, "otc")).await;
    e2e::wait_status(&client, &ns, "innocent", Duration::from_secs(120), "Succeeded", |s| {
        s.phase == Some(Phase::Succeeded)
    })
    .await;
    for i in 0..30 {
        e2e::wait_status(&client, &ns, &format!("noisy-{i}"), Duration::from_secs(60), "a status", |s| {
            !s.conditions.is_empty()
        })
        .await;
    }
    let peak = node::read_u64(&cgroup.join("memory.max_usage_in_bytes"));
    let limit = node::read_u64(&cgroup.join("memory.limit_in_bytes"));
    let restarts = pod_restarts(&client, &ns, &release).await;
    let mib = |b: u64| b as f64 / 1048576.0;
    eprintln!(
        "node: tenant memory (100 ConfigMaps of 900 KiB, 30 ImageJobs with 200 KiB annotations, outputs on): \
         container peak {:.1} MiB of {:.0} MiB, restarts {restarts}",
        mib(peak),
        mib(limit)
    );
    assert_eq!(restarts, 0, "no OOM kill");
    assert!(peak < limit / 2, "peak {:.1} MiB: over half the {:.0} MiB limit", mib(peak), mib(limit));
    node::cleanup(&client, &release, &ns).await;
}

/// `imagejob_imagejobs{phase="Running"}`; `None` when the series is not
/// there (no ImageJob was ever seen Running), never 0.
fn running_series(metrics: &str) -> Option<usize> {
    e2e::Metrics(metrics.to_owned()).series("imagejob_imagejobs", &[("phase", "Running")]).map(|v| v as usize)
}

/// The memory figure counts only when every ImageJob was polled: the
/// operator shows all Running, and ims-sim answered a request for each.
fn assert_polled(running: Option<usize>, polled: usize) {
    let running = running.expect("imagejob_imagejobs{phase=\"Running\"} is exported: the ImageJobs were polled");
    assert_eq!(running, JOBS, "every ImageJob was polled and is Running");
    assert_eq!(polled, JOBS, "ims-sim answered a request for every job");
}

#[test]
fn a_missing_running_series_fails_the_measurement() {
    let missing = "# TYPE imagejob_imagejobs gauge\nimagejob_imagejobs{phase=\"Pending\"} 1000\n";
    assert_eq!(running_series(missing), None, "no Running series is no count, not 0");
    let all = format!("imagejob_imagejobs{{phase=\"Running\"}} {JOBS}\n");
    assert_eq!(running_series(&all), Some(JOBS));
    assert!(std::panic::catch_unwind(|| assert_polled(running_series(missing), JOBS)).is_err());
    assert!(std::panic::catch_unwind(|| assert_polled(Some(JOBS), JOBS - 1)).is_err());
    assert_polled(running_series(&all), JOBS);
}

async fn pod_restarts(client: &kube::Client, ns: &str, release: &str) -> i32 {
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns);
    let list = pods.list(&ListParams::default().labels(&node::operator_selector(release))).await.unwrap();
    list.items
        .iter()
        .flat_map(|p| p.status.iter().flat_map(|s| s.container_statuses.iter().flatten()))
        .map(|c| c.restart_count)
        .sum()
}
