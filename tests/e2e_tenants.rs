//! A tenant's or a hostile cloud's text never reaches manifests or
//! terminals as sent, and a tenant's oversized annotation cannot force polls
//! (issue 21, cases 3 and 4): the operator binary against the local
//! kube-apiserver and `ims-sim`.

mod common;

use std::time::Duration;

use common::e2e::*;
use imagejob_operator::crd::{ImageJob, Phase, REQUESTED_AT_ANNOTATION};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// An image name with a line break, a YAML key and a bidi override: the
/// status shows it cleaned, and no ConfigMap carries it into a manifest.
#[tokio::test]
async fn ims_text_is_cleaned_and_an_unsafe_value_is_never_exported() {
    let (client, ns, run) = setup("tenant-text").await;
    let job = "ff8080814dbd65d7014dbe0d84df0001";
    let mut def = succeeding_job(job, "0s", "2s");
    def["image_name"] = json!("web\n  hostNetwork: true\u{202e}\u{200b}");
    let sim = Sim::start(json!([def]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let _op = Operator::start(&sim, &run, &[]);
    let mut ij: ImageJob = imagejob("injected", &run, job, "creds");
    ij.spec.output_config_map_ref = serde_json::from_value(json!({"name": "injected-out"})).unwrap();
    create(&client, &ns.name, &ij).await;

    let s = wait_status(&client, &ns.name, "injected", WAIT, "Succeeded with OutputReady", |s| {
        s.phase == Some(Phase::Succeeded) && condition(s, "OutputReady").is_some()
    })
    .await;
    let name = s.image_name.clone().unwrap();
    assert_eq!(name, "web   hostNetwork: true");
    assert!(!name.chars().any(|c| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{200b}')));
    let (ready, reason, message) = condition(&s, "OutputReady").unwrap();
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "OutputInvalid"), "{message}");
    assert!(message.contains("imageName"), "{message}");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(cms.get_opt("injected-out").await.unwrap().is_none(), "no ConfigMap with an unsafe value");
    assert_eq!(condition(&s, "Ready").unwrap().0, "True", "the job itself succeeded");
    ns.cleanup().await;
}

/// A 300-byte requestedAt is refused with a condition and forces no poll.
#[tokio::test]
async fn an_oversized_refresh_request_forces_no_poll() {
    let (client, ns, run) = setup("tenant-refresh").await;
    let job = "ff8080814dbd65d7014dbe0d84df0002";
    let sim = Sim::start(json!([succeeding_job(job, "0s", "600s")]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let _op = Operator::start(&sim, &run, &["--poll-interval", "10s"]);
    let mut ij = imagejob("refresh", &run, job, "creds");
    ij.spec.poll_interval = Some("10s".into());
    create(&client, &ns.name, &ij).await;
    wait_status(&client, &ns.name, "refresh", WAIT, "Running", |s| s.phase == Some(Phase::Running)).await;

    let long = "9".repeat(300);
    let patch = json!({"metadata": {"annotations": {REQUESTED_AT_ANNOTATION: long}}});
    let api: Api<ImageJob> = Api::namespaced(client.clone(), &ns.name);
    let before = sim.requests(job).await;
    api.patch("refresh", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let s = wait_status(&client, &ns.name, "refresh", Duration::from_secs(30), "RefreshRequest", |s| {
        condition(s, "RefreshRequest").is_some()
    })
    .await;
    let (state, reason, message) = condition(&s, "RefreshRequest").unwrap();
    assert_eq!((state.as_str(), reason.as_str()), ("False", "AnnotationTooLong"), "{message}");
    assert_eq!(s.last_handled_reconcile_at, None, "a refused value is never recorded");
    // Watch wakes (status writes, our own patches) must not turn into polls:
    // at a 10 s interval, a few in 12 s, never one per wake.
    for i in 0..6 {
        request_poll_noise(&api, i).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let polls = sim.requests(job).await - before;
    assert!(polls <= 3, "{polls} polls in ~25 s at a 10 s interval with a refused requestedAt");

    // A short value is honoured again, and the condition goes.
    request_poll(&client, &ns.name, "refresh", "now-1").await;
    let s = wait_status(&client, &ns.name, "refresh", Duration::from_secs(30), "requestedAt honoured", |s| {
        s.last_handled_reconcile_at.as_deref() == Some("now-1")
    })
    .await;
    assert!(condition(&s, "RefreshRequest").is_none(), "{:?}", s.conditions);
    ns.cleanup().await;
}

/// A label change wakes the ImageJob (as a tenant's edits would).
async fn request_poll_noise(api: &Api<ImageJob>, i: u32) {
    let patch = json!({"metadata": {"labels": {"noise": i.to_string()}}});
    api.patch("refresh", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

/// With `--require-credentials-label`, a Secret that does not opt in is
/// never used: a clear Stalled reason, no cloud request; labelled, it works.
#[tokio::test]
async fn only_secrets_that_opt_in_are_used() {
    use k8s_openapi::api::core::v1::Secret;
    let (client, ns, run) = setup("tenant-optin").await;
    let job = "ff8080814dbd65d7014dbe0d84df0003";
    let sim = Sim::start(json!([succeeding_job(job, "0s", "2s")]));
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let unlabelled: Secret = serde_json::from_value(json!({"metadata": {"name": "someone-elses"},
        "stringData": {"accessKey": AK, "secretKey": SK, "projectId": PROJECT}}))
    .unwrap();
    secrets.create(&Default::default(), &unlabelled).await.unwrap();
    let _op = Operator::start(&sim, &run, &["--require-credentials-label"]);
    create(&client, &ns.name, &imagejob("borrowed", &run, job, "someone-elses")).await;

    let s = wait_status(&client, &ns.name, "borrowed", WAIT, "Stalled CredentialsNotLabeled", |s| {
        condition(s, "Stalled").is_some_and(|c| c.0 == "True" && c.1 == "CredentialsNotLabeled")
    })
    .await;
    let message = condition(&s, "Stalled").unwrap().2;
    assert!(message.contains("ims.otc.io/credentials") && message.contains("someone-elses"), "{message}");
    assert_eq!(sim.counter("/total/requests").await, 0, "no cloud request with a Secret that did not opt in");

    // The owner opts in: the label's change wakes the ImageJob.
    let patch = json!({"metadata": {"labels": {OPT_IN.0: OPT_IN.1}}});
    secrets.patch("someone-elses", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_status(&client, &ns.name, "borrowed", Duration::from_secs(30), "Succeeded", |s| {
        s.phase == Some(Phase::Succeeded)
    })
    .await;
    ns.cleanup().await;
}

/// A tenant fills its namespace with ConfigMaps labelled as the operator's
/// (anyone may set the label) and ImageJobs with huge annotations: after a
/// restart the operator stays far below the chart's 256 Mi limit and still
/// serves another tenant's ImageJob (issue 21, case 1: 274 MiB before).
#[tokio::test]
async fn a_tenant_cannot_blow_up_the_operators_memory() {
    let (client, hostile, run) = setup("tenant-mem").await;
    let other = common::TestNamespace::new(&client, "tenant-mem-other").await;
    let job = "ff8080814dbd65d7014dbe0d84df0004";
    let sim = Sim::start(json!([succeeding_job(job, "0s", "3s")]));
    tenant_noise(&client, &hostile.name, &run, "ff8080814dbd65d7014dbe0d84e1", 30).await;
    create_aksk_secret(&client, &other.name, "creds", SK).await;

    let op = Operator::start(&sim, &run, &[]);
    create(&client, &other.name, &imagejob("innocent", &run, job, "creds")).await;
    wait_status(&client, &other.name, "innocent", WAIT, "the other tenant's job Succeeded", |s| {
        s.phase == Some(Phase::Succeeded)
    })
    .await;
    // Every noisy ImageJob was looked at (refused or stalled), none forced a poll.
    for i in 0..30 {
        wait_status(&client, &hostile.name, &format!("noisy-{i}"), WAIT, "a status", |s| !s.conditions.is_empty())
            .await;
    }
    let proc_status = std::fs::read_to_string(format!("/proc/{}/status", op.pid())).unwrap();
    let mib = |key: &str| -> u64 {
        let line = proc_status.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
    };
    let (peak, now) = (mib("VmHWM:"), mib("VmRSS:"));
    eprintln!(
        "E2E-NUMBERS tenant memory: 100 ConfigMaps of 900 KiB, 30 ImageJobs with 200 KiB annotations: peak {peak} MiB, now {now} MiB"
    );
    assert!(peak < 128, "peak RSS {peak} MiB: over half the chart's 256 Mi limit");
    other.cleanup().await;
    hostile.cleanup().await;
}

/// Anything that reaches the metrics port (a Pod in the monitoring
/// namespace, say) cannot hold it with idle connections: at most
/// `MAX_CONNECTIONS` are taken at once, each closed when it sends no request
/// within `HEADER_READ_TIMEOUT`, and the server answers after them.
#[tokio::test]
async fn idle_connections_cannot_pile_up_on_the_metrics_port() {
    use imagejob_operator::http::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS};
    use tokio::io::AsyncReadExt;

    let sim = Sim::start(json!([]));
    let op = Operator::start(&sim, &unique_label(), &[]);
    op.wait_ready(WAIT).await.expect("the operator became ready");
    let addr = op.metrics_url.trim_start_matches("http://").to_owned();
    let before = sockets(op.pid());

    let mut idle = Vec::new();
    for _ in 0..MAX_CONNECTIONS + 36 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = sockets(op.pid()).saturating_sub(before);
    eprintln!("{} idle connections opened; the operator holds {held} sockets more", idle.len());
    // A few kube client connections may come and go meanwhile.
    assert!(held <= MAX_CONNECTIONS + 4, "{held} sockets held for {} idle connections", idle.len());

    // The first one was accepted: the server closes it (EOF) unasked.
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(HEADER_READ_TIMEOUT + Duration::from_secs(5), idle[0].read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0))), "an idle connection kept open past the header timeout: {closed:?}");
    drop(idle);
    assert!(op.ready().await, "/readyz answers once the idle connections are gone");
}

/// Sockets the process has open (`/proc/PID/fd`).
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}
