//! A deposed leader writes nothing (issue 10, RELIABILITY.md). In its own
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
