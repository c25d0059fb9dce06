//! A deposed leader writes nothing (issue 10, RELIABILITY.md), and each of
//! the two fences (the Lease read before a write, the status write's
//! resourceVersion precondition) is needed on its own (issue 25). In its own
//! test binary: Lease timing is sensitive to a loaded machine.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::e2e::*;
use common::{TestNamespace, client, eventually};
use imagejob_operator::crd::{ImageJob, Phase};
use kube::ResourceExt;
use serde_json::json;

fn signal(op: &Operator, sig: &str) {
    assert!(Command::new("kill").arg(sig).arg(op.pid().to_string()).status().unwrap().success());
}

/// Leader A is stopped (SIGSTOP) with polls in flight for longer than its
/// Lease; B takes over and finishes the job; A resumes (SIGCONT) and must
/// not write: the finished status stands, untouched.
#[tokio::test]
async fn a_paused_leader_does_not_overwrite_the_new_leaders_status() {
    let client = client().await;
    install_imagejob_crd(&client).await;
    let ns = TestNamespace::new(&client, "e2e-rel-fence").await;
    let run = unique_label();
    let job = "ff8080814dbd65d7014dbe0d84dbf001";
    // Slow answers keep a poll in flight most of the time.
    let mut definition = succeeding_job(job, "0s", "35s");
    definition["faults"] = json!([{"fault": "latency", "delay": "800ms"}]);
    let sim = Sim::start(json!([definition]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let lease = ["--leader-elect", "--leader-election-namespace", &ns.name, "--leader-election-lease", &run];
    let mut a = Operator::start(&sim, &run, &lease);
    eventually(Duration::from_secs(40), "A to lead", || async {
        (a.try_metric("imagejob_leader").await == Some(1.0)).then_some(())
    })
    .await;
    let b = Operator::start(&sim, &run, &lease);
    eventually(Duration::from_secs(40), "B to stand by", || async { b.ready().await.then_some(()) }).await;
    create(&client, &ns.name, &imagejob("fenced", &run, job, "creds")).await;
    wait_status(&client, &ns.name, "fenced", Duration::from_secs(30), "Running", |s| s.phase == Some(Phase::Running))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    signal(&a, "-STOP");
    let stopped = Instant::now();
    eventually(Duration::from_secs(60), "B to take the Lease", || async {
        (b.try_metric("imagejob_leader").await == Some(1.0)).then_some(())
    })
    .await;
    println!("E2E-NUMBERS fence-takeover: {:?}", stopped.elapsed());
    wait_status(&client, &ns.name, "fenced", Duration::from_secs(60), "Succeeded", |s| {
        s.phase == Some(Phase::Succeeded)
    })
    .await;
    let api = ns.api::<ImageJob>();
    let finished = api.get("fenced").await.unwrap();

    signal(&a, "-CONT");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = api.get("fenced").await.unwrap();
    assert_eq!(after.status.as_ref().and_then(|s| s.phase), Some(Phase::Succeeded), "{:?}", after.status);
    assert_eq!(
        after.resource_version(),
        finished.resource_version(),
        "nothing may write after the job finished (A resumed as a deposed leader)"
    );
    println!("E2E-NUMBERS fence-a-exited-after-resume: {}", a.exited());
    ns.cleanup().await;
}

/// A leader (lease in its own namespace) with one ImageJob Running, its
/// polls answered after 3 s; returned the moment a poll is in flight (1.5 s
/// after an answer, with a 1 s interval: the next request left ~0.5 s ago).
struct InFlight {
    client: kube::Client,
    ns: TestNamespace,
    run: String,
    sim: Sim,
    leader: Operator,
}

const JOB: &str = "ff8080814dbd65d7014dbe0d84dbf002";

async fn leader_with_a_poll_in_flight(prefix: &str) -> InFlight {
    let client = client().await;
    install_imagejob_crd(&client).await;
    let ns = TestNamespace::new(&client, prefix).await;
    let run = unique_label();
    let mut definition = succeeding_job(JOB, "0s", "120s");
    definition["faults"] = json!([{"fault": "latency", "delay": "3s"}]);
    let sim = Sim::start(json!([definition]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let lease = ["--leader-elect", "--leader-election-namespace", &ns.name, "--leader-election-lease", &run];
    let leader = Operator::start(&sim, &run, &lease);
    eventually(Duration::from_secs(40), "the operator to lead", || async {
        (leader.try_metric("imagejob_leader").await == Some(1.0)).then_some(())
    })
    .await;
    create(&client, &ns.name, &imagejob("fenced", &run, JOB, "creds")).await;
    wait_status(&client, &ns.name, "fenced", Duration::from_secs(30), "Running", |s| s.phase == Some(Phase::Running))
        .await;
    let answered = sim.requests(JOB).await;
    eventually(Duration::from_secs(20), "the next answer", || async {
        (sim.requests(JOB).await > answered).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    InFlight { client, ns, run, sim, leader }
}

/// Each fence alone, the Lease check: the leader is paused with a poll in
/// flight, another holder takes the Lease meanwhile, nobody writes the
/// ImageJob (so the paused leader's view is current and a resourceVersion
/// precondition would let its write through). Resumed, it must write
/// nothing and exit ("lost the leader Lease").
#[tokio::test]
async fn a_deposed_leader_with_a_current_view_writes_nothing() {
    let InFlight { client, ns, run, sim, mut leader } = leader_with_a_poll_in_flight("e2e-rel-lease").await;
    signal(&leader, "-STOP");
    // Whatever was sent before the pause lands before the snapshot.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let now = serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(jiff::Timestamp::now()))
        .unwrap();
    let intruder = json!({"spec": {"holderIdentity": "intruder", "renewTime": now, "leaseDurationSeconds": 3600}});
    ns.api::<k8s_openapi::api::coordination::v1::Lease>()
        .patch(&run, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&intruder))
        .await
        .unwrap();
    let api = ns.api::<ImageJob>();
    let before = api.get("fenced").await.unwrap();
    let events = events_about(&client, &ns.name, "fenced").await.len();
    let requests = sim.requests(JOB).await;
    // Its answer arrives while it is paused (and would differ from the status).
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(&leader, "-CONT");
    let resumed = Instant::now();
    while !leader.exited() {
        assert!(resumed.elapsed() < Duration::from_secs(30), "the deposed leader did not exit in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sim.requests(JOB).await > requests, "the poll in flight was answered");
    let after = api.get("fenced").await.unwrap();
    assert_eq!(
        after.resource_version(),
        before.resource_version(),
        "a leader that lost the Lease wrote the status (its view was current: only the Lease check stops it)\n\
         before: {:?}\nafter: {:?}",
        before.status.as_ref().map(|s| s.progress),
        after.status.as_ref().map(|s| s.progress)
    );
    assert_eq!(events_about(&client, &ns.name, "fenced").await.len(), events, "no Event from the deposed leader");
    assert!(leader.log().contains("lost the leader Lease"), "{}", leader.log());
    ns.cleanup().await;
}

/// Each fence alone, the resourceVersion precondition: the leader is paused
/// with a poll in flight while it still holds the Lease, and a newer status
/// (Succeeded, as a new leader would write in the moment between the Lease
/// check and the write) lands meanwhile. Resumed within its Lease, its
/// stale write must be refused: the newer status stands.
#[tokio::test]
async fn a_stale_view_never_replaces_a_newer_status() {
    let InFlight { client: _, ns, run: _, sim, leader } = leader_with_a_poll_in_flight("e2e-rel-rv").await;
    let reconciles = leader.metric("imagejob_reconciles_total").await;
    let errors = leader.metric_with("imagejob_reconciles_total", &[("result", "error")]).await;
    let requests = sim.requests(JOB).await;
    signal(&leader, "-STOP");
    let api = ns.api::<ImageJob>();
    let newer = json!({"status": {"phase": "Succeeded", "jobStatus": "SUCCESS", "progress": 100}});
    api.patch_status("fenced", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&newer)).await.unwrap();
    // Its answer arrives meanwhile; resumed well within its 15 s Lease.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(sim.requests(JOB).await > requests, "the poll in flight was answered");
    signal(&leader, "-CONT");
    eventually(Duration::from_secs(15), "the reconcile in flight to end", || async {
        (leader.metric("imagejob_reconciles_total").await > reconciles).then_some(())
    })
    .await;
    // A refused write comes again after 1 s with a fresh read.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = api.get("fenced").await.unwrap();
    assert_eq!(
        after.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Succeeded),
        "the paused leader's stale view replaced a newer status: {:?}",
        after.status
    );
    assert_eq!(leader.metric("imagejob_leader").await, 1.0, "still the leader: only the precondition fenced");
    let refused = leader.metric_with("imagejob_reconciles_total", &[("result", "error")]).await - errors;
    assert!(refused >= 1.0, "the stale write was refused (409: a reconcile error)");
    ns.cleanup().await;
}
