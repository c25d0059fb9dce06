//! Two operator replicas on a real node (tests/cluster/up --node) with
//! leader election: deleting the leader Pod (graceful stop), killing the
//! leader's container (SIGKILL; kubelet restarts it under the same name) and
//! killing it with its Pod gone (the standby must wait for the Lease to
//! expire) all hand the work to another process.
//! Prints the measured times: process end after deletion, Lease handover,
//! and the first status write after it.

mod common;
#[path = "common/node.rs"]
mod node;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::e2e::{self, PROJECT};
use imagejob_operator::crd::{ImageJob, Phase};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;

const JOBS: usize = 12;

/// Jobs RUNNING for ten minutes, their clocks half a second apart, so some
/// job's progress (and so its status) changes about every half second.
fn jobs() -> serde_json::Value {
    json!(
        (0..JOBS)
            .map(|i| json!({
                "project_id": PROJECT, "job_id": job_id(i), "job_type": "imsCreateImageByInstance",
                "age_at_start": format!("{}ms", i * 500),
                "phases": [{"after": "0s", "status": "RUNNING", "progress": [0.0, 0.99]},
                           {"after": "600s", "status": "SUCCESS", "image_id": "49e9447f-7dff-41e0-8036-f66fe5488c8b"}]
            }))
            .collect::<Vec<_>>()
    )
}

fn job_id(i: usize) -> String {
    format!("ff80808200000000000000000000{i:04x}")
}

/// resourceVersion per ImageJob of this run.
async fn versions(api: &Api<ImageJob>, run: &str) -> BTreeMap<String, String> {
    let list = api.list(&ListParams::default().labels(&format!("e2e-run={run}"))).await.unwrap();
    list.items.into_iter().map(|ij| (ij.metadata.name.unwrap(), ij.metadata.resource_version.unwrap())).collect()
}

/// The operator process of a Pod, seen from the host (its cgroup).
fn main_pid(pod: &Pod) -> u32 {
    let procs = std::fs::read_to_string(node::memory_cgroup(pod, "operator").join("cgroup.procs")).unwrap();
    procs.lines().next().expect("a process in the container").parse().unwrap()
}

/// Waits for a process to end, polling /proc (20 ms resolution).
fn wait_exit(pid: u32, timeout: Duration) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The chart's Lease duration (`controller::election`).
const LEASE: Duration = Duration::from_secs(15);
/// Room for a loaded 2-core machine over what the design allows.
const SLACK: Duration = Duration::from_secs(5);

struct Handover {
    lease_after: Duration,
    new_holder: String,
    write_after: Duration,
}

/// From `t0`: when the Lease names someone other than `old` (or, with
/// `same_identity_ok`, is renewed by anyone), and the first status write
/// after that.
async fn watch_handover(
    client: &Client,
    ns: &str,
    lease: &str,
    run: &str,
    old: &str,
    t0: Instant,
    same_identity_ok: bool,
) -> Handover {
    let api = Api::<ImageJob>::namespaced(client.clone(), ns);
    let lease_api = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), ns);
    let start_renew = lease_api.get(lease).await.unwrap().spec.unwrap().renew_time;
    let mut lease_at = None;
    let mut holder = String::new();
    let mut seen = versions(&api, run).await;
    loop {
        assert!(t0.elapsed() < Duration::from_secs(90), "no handover within 90s");
        match lease_at {
            None => {
                let spec = lease_api.get(lease).await.unwrap().spec.unwrap();
                let h = spec.holder_identity.clone().unwrap_or_default();
                let renewed_by_old_identity = same_identity_ok && h == old && spec.renew_time != start_renew;
                if (!h.is_empty() && h != old) || renewed_by_old_identity {
                    lease_at = Some(t0.elapsed());
                    holder = h;
                    seen = versions(&api, run).await;
                }
            }
            Some(lease_after) => {
                let now = versions(&api, run).await;
                if now.iter().any(|(k, v)| seen.get(k) != Some(v)) {
                    return Handover { lease_after, new_holder: holder, write_after: t0.elapsed() };
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn leader_pod(client: &Client, ns: &str, release: &str, lease: &str) -> Pod {
    let pods = node::wait_ready_pods(client, ns, &node::operator_selector(release), 2, Duration::from_secs(180)).await;
    let holder =
        common::eventually(Duration::from_secs(60), "a Lease holder", || node::lease_holder(client, ns, lease)).await;
    pods.into_iter().find(|p| p.metadata.name.as_deref() == Some(holder.as_str())).expect("the leader is a Ready Pod")
}

/// SIGKILLs the leader's process (no graceful stop): its Pod name, and when.
async fn kill_leader(client: &Client, ns: &str, release: &str, lease: &str) -> (String, Instant) {
    let leader = leader_pod(client, ns, release, lease).await;
    let pid = main_pid(&leader);
    let t0 = Instant::now();
    let killed = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    assert!(killed.success(), "kill -KILL {pid}");
    (leader.metadata.name.unwrap(), t0)
}

#[tokio::test(flavor = "multi_thread")]
async fn standby_takes_over_when_the_leader_pod_is_deleted_or_killed() {
    let node::Release { client, ns, run, release, cleanup: _cleanup } = node::release_setup("node-failover").await;
    let lease = format!("{release}-imagejob-operator");
    let sim = node::deploy_sim(&client, &ns, &node::scenario(jobs(), json!([]))).await;
    node::helm_install(&release, &ns, &sim, &run, &["replicas=2"]);
    e2e::create_aksk_secret(&client, &ns, "otc", e2e::SK).await;
    for i in 0..JOBS {
        e2e::create(&client, &ns, &e2e::imagejob(&format!("job-{i}"), &run, &job_id(i), "otc")).await;
    }
    for i in 0..JOBS {
        e2e::wait_status(&client, &ns, &format!("job-{i}"), Duration::from_secs(60), "Running", |s| {
            s.phase == Some(Phase::Running)
        })
        .await;
    }
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);

    // 1. Delete the leader Pod: SIGTERM, the process releases the Lease.
    let leader = leader_pod(&client, &ns, &release, &lease).await;
    let name = leader.metadata.name.clone().unwrap();
    let grace = leader.spec.as_ref().unwrap().termination_grace_period_seconds.unwrap_or(30) as u64;
    let pid = main_pid(&leader);
    let t0 = Instant::now();
    pods.delete(&name, &DeleteParams::default()).await.unwrap();
    // The Lease as the process leaves it: released (no holder) or handed on.
    let on_exit = async {
        let exited = tokio::task::spawn_blocking(move || wait_exit(pid, Duration::from_secs(grace + 10))).await;
        let holder = node::lease_holder(&client, &ns, &lease).await;
        (exited.unwrap().expect("the deleted leader's process ended"), holder)
    };
    let (h, (exited, holder_at_exit)) =
        tokio::join!(watch_handover(&client, &ns, &lease, &run, &name, t0, false), on_exit);
    let stop = exited.duration_since(t0);
    eprintln!(
        "node: delete leader Pod: process ended after {:.2}s (grace {grace}s), Lease holder then {:?}; Lease to \
         {} after {:.2}s, next status write after {:.2}s (Lease duration 15s)",
        stop.as_secs_f64(),
        holder_at_exit,
        h.new_holder,
        h.lease_after.as_secs_f64(),
        h.write_after.as_secs_f64()
    );
    assert!(stop < Duration::from_secs(grace), "graceful stop within the grace period");
    assert_ne!(holder_at_exit.as_deref(), Some(name.as_str()), "the stopped leader released its Lease");
    // A standby reads the Lease every second (controller::election): it
    // claims a released Lease at once (1.8 s measured), not when the old one
    // would expire: renewed every ~3 s, a 15 s Lease outlives its holder by
    // at least 12 s. 8 s leaves room for a loaded machine.
    let after_exit = h.lease_after.saturating_sub(stop);
    assert!(after_exit < Duration::from_secs(8), "takeover {after_exit:?} after the leader ended; the Lease is 15 s");

    // 2. SIGKILL the leader's process: no release; the Lease must expire
    // (or the restarted container, same Pod name, renews it).
    let (name, t0) = kill_leader(&client, &ns, &release, &lease).await;
    let h = watch_handover(&client, &ns, &lease, &run, &name, t0, true).await;
    eprintln!(
        "node: SIGKILL leader container: Lease to {} ({}) after {:.2}s, next status write after {:.2}s",
        h.new_holder,
        if h.new_holder == name { "the restarted container of the same Pod" } else { "the standby" },
        h.lease_after.as_secs_f64(),
        h.write_after.as_secs_f64()
    );
    // The restarted container reclaims its own Lease (2.7 s measured), at
    // the latest the standby takes it when it expires: 15 s after the last
    // renewal, read every second; 5 s of room for a loaded machine.
    assert!(h.lease_after < LEASE + SLACK, "Lease taken {:?} after a SIGKILL; it lasts {LEASE:?}", h.lease_after);
    assert!(h.write_after < h.lease_after + SLACK, "first write {:?} after the Lease changed hands", h.write_after);

    // 3. SIGKILL and the Pod gone at once (as when a node dies): nobody
    // releases the Lease and no process with the old name comes back, so
    // the standby waits for the Lease to expire.
    let (name, t0) = kill_leader(&client, &ns, &release, &lease).await;
    pods.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    let h = watch_handover(&client, &ns, &lease, &run, &name, t0, false).await;
    eprintln!(
        "node: SIGKILL leader + Pod force-deleted: Lease to the standby {} after {:.2}s, next status write after \
         {:.2}s (Lease duration 15s)",
        h.new_holder,
        h.lease_after.as_secs_f64(),
        h.write_after.as_secs_f64()
    );
    // Renewed every ~3 s, the Lease ends 12–15 s after the kill (15.3 s
    // measured with the standby's 1 s read): never before it expired (a
    // standby that takes a live holder's Lease), never long after.
    assert!(
        h.lease_after >= LEASE - Duration::from_secs(5) && h.lease_after < LEASE + SLACK,
        "the standby took the Lease {:?} after the kill; it lasts {LEASE:?} from the last renewal",
        h.lease_after
    );
    assert!(h.write_after < h.lease_after + SLACK, "first write {:?} after the Lease changed hands", h.write_after);

    // No job lost its status through any of them.
    for i in 0..JOBS {
        let s = e2e::status(&client, &ns, &format!("job-{i}")).await.expect("status kept");
        assert_eq!(s.phase, Some(Phase::Running), "job-{i}");
    }
    node::cleanup(&client, &release, &ns).await;
}
