//! End to end: the operator binary against the local kube-apiserver and the
//! `ims-sim` binary over real HTTP. Each test runs its own simulator and
//! operator, scoped to its own label and namespace.

mod common;

use std::time::Duration;

use common::e2e::*;
use common::{TestNamespace, eventually};
use imagejob_operator::crd::{ImageJob, Phase};
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

async fn events_for(client: &kube::Client, ns: &str, name: &str) -> Vec<Event> {
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    Api::<Event>::namespaced(client.clone(), ns).list(&lp).await.unwrap().items
}

/// (a) INIT → RUNNING with rising progress → SUCCESS, and the cost of it.
#[tokio::test]
async fn job_runs_to_success_with_progress_and_minimal_cloud_calls() {
    let (client, ns, run) = setup("e2e-success").await;
    let job = "ff8080814dbd65d7014dbe0d84db1001";
    // INIT for 3 s: polls that change nothing, which must not write.
    let sim = Sim::start(json!([succeeding_job(job, "3s", "8s")]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &imagejob("build", &run, job, "creds")).await;

    // Watch the status as it moves; record the progress values seen and
    // each visible change (writes are at least a poll interval apart, the
    // status is read every 100 ms).
    let mut seen_progress = Vec::new();
    let mut seen_phases = Vec::new();
    let mut visible = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    let done = loop {
        assert!(std::time::Instant::now() < deadline, "not Succeeded in {WAIT:?}");
        if let Some(s) = status(&client, &ns.name, "build").await {
            if let Some(p) = s.progress.filter(|p| seen_progress.last() != Some(p)) {
                seen_progress.push(p);
            }
            if let Some(p) = s.phase.filter(|p| seen_phases.last() != Some(p)) {
                seen_phases.push(p);
            }
            let shown = (s.phase, s.job_status.clone(), s.progress, s.current_task.clone(), s.image_id.clone());
            if visible.last() != Some(&shown) {
                visible.push(shown);
            }
            if s.phase == Some(Phase::Succeeded) {
                break s;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let seen_at = jiff::Timestamp::now();

    assert_eq!(condition(&done, "Ready").map(|c| (c.0, c.1)), Some(("True".into(), "Succeeded".into())));
    assert_eq!(condition(&done, "Reconciling").map(|c| c.0), Some("False".into()));
    assert_eq!(done.progress, Some(100));
    assert_eq!(done.job_status.as_deref(), Some("SUCCESS"));
    assert_eq!(done.image_id.as_deref(), Some("49e9447f-7dff-41e0-8036-f66fe5488c8b"));
    assert_eq!(done.image_name.as_deref(), Some("e2e-image"));
    assert_eq!(done.results.len(), 1);
    assert_eq!(done.results[0].status.as_deref(), Some("SUCCESS"));
    assert!(done.begin_time.is_some() && done.end_time.is_some(), "{done:?}");
    assert!(seen_phases.contains(&Phase::Running), "phases seen: {seen_phases:?}");
    let rising: Vec<_> = seen_progress.iter().filter(|p| **p > 0 && **p < 100).collect();
    assert!(rising.len() >= 2, "progress should rise while running, saw {seen_progress:?}");
    assert!(seen_progress.windows(2).all(|w| w[0] <= w[1]), "progress went backwards: {seen_progress:?}");

    // The job lasted 8 s at a 1 s interval: about 9 polls are needed.
    let requests = sim.requests(job).await;
    let patches = op.metric("imagejob_status_patches_total").await;
    // The simulator's job began (second precision) at its first query and succeeds 8 s later.
    let cloud_success = done.begin_time.as_ref().unwrap().0 + jiff::SignedDuration::from_secs(8);
    let lateness = seen_at.duration_since(cloud_success);
    println!(
        "E2E-NUMBERS success: requests={requests} polls_needed=9 patches={patches} distinct_progress={} lateness={lateness:#}",
        seen_progress.len()
    );
    assert!(lateness < jiff::SignedDuration::from_secs(5), "status lagged the cloud by {lateness:#}");
    assert!((6..=12).contains(&requests), "requests for an 8 s job at 1 s: {requests}");
    // Each write showed something new; a poll that changed nothing wrote nothing.
    assert!(patches >= 3.0, "Pending, Running and Succeeded each need a write: {patches}");
    assert!(patches <= visible.len() as f64, "{patches} status writes for {} visible changes", visible.len());
    assert!(patches < requests as f64, "{patches} writes for {requests} polls, 3 s of them INIT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.requests(job).await, requests, "no requests after SUCCESS");
    let events = events_for(&client, &ns.name, "build").await;
    assert!(events.iter().any(|e| e.reason.as_deref() == Some("Succeeded")), "{events:?}");
    ns.cleanup().await;
}

/// (b) An OVA import with two sub-jobs shows both.
#[tokio::test]
async fn ova_import_shows_both_sub_jobs() {
    let (client, ns, run) = setup("e2e-ova").await;
    let job = "ff8080814dbd65d7014dbe0d84db2001";
    let sim = Sim::start(json!([{
        "project_id": PROJECT, "job_id": job, "job_type": "imsImportOvaImageJob",
        "time_format": "legacy", "sub_jobs_list": true,
        "phases": [
            {"after": "0s", "status": "RUNNING", "progress": [0.1, 0.9]},
            {"after": "3s", "status": "SUCCESS", "image_id": "img-sys"}
        ],
        "sub_jobs": [
            {"job_id": "sub-1", "job_type": "imsImportImageJob",
             "phases": [{"after": "0s", "status": "RUNNING"}, {"after": "2s", "status": "SUCCESS", "image_id": "img-sys", "image_name": "ova-disk-0"}]},
            {"job_id": "sub-2", "job_type": "imsImportDataImageJob",
             "phases": [{"after": "0s", "status": "RUNNING"}, {"after": "3s", "status": "SUCCESS", "image_id": "img-data", "image_name": "ova-disk-1"}]}
        ]
    }]));
    create_password_secret(&client, &ns.name, "creds").await;
    let _op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &imagejob("ova", &run, job, "creds")).await;
    let s = wait_status(&client, &ns.name, "ova", WAIT, "Succeeded", |s| s.phase == Some(Phase::Succeeded)).await;
    assert_eq!(s.sub_jobs.len(), 2, "{s:?}");
    assert_eq!(s.sub_job_ids, vec!["sub-1", "sub-2"]);
    let ids: Vec<_> = s.sub_jobs.iter().map(|j| j.image_id.clone().unwrap_or_default()).collect();
    assert_eq!(ids, vec!["img-sys", "img-data"]);
    assert!(s.sub_jobs.iter().all(|j| j.status.as_deref() == Some("SUCCESS") && j.begin_time.is_some()));
    assert_eq!(s.job_type.as_deref(), Some("imsImportOvaImageJob"));
    ns.cleanup().await;
}

/// (c) FAIL: Ready=False, Stalled=True, Failed=True with `code: reason`, and a Warning Event.
#[tokio::test]
async fn failed_job_raises_conditions_and_a_warning_event() {
    let (client, ns, run) = setup("e2e-fail").await;
    let job = "ff8080814dbd65d7014dbe0d84db3001";
    let sim = Sim::start(json!([{
        "project_id": PROJECT, "job_id": job, "job_type": "imsCreateImageByInstance",
        "phases": [
            {"after": "0s", "status": "RUNNING", "progress": 0.3},
            {"after": "2s", "status": "FAIL", "error_code": "IMG.0014",
             "fail_reason": "An exception occurred when IaaS OpenStack was executing the task."}
        ]
    }]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let _op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &imagejob("doomed", &run, job, "creds")).await;
    let s = wait_status(&client, &ns.name, "doomed", WAIT, "Failed", |s| s.phase == Some(Phase::Failed)).await;
    let msg = "IMG.0014: An exception occurred when IaaS OpenStack was executing the task.";
    assert_eq!(condition(&s, "Ready"), Some(("False".into(), "JobFailed".into(), msg.into())));
    assert_eq!(condition(&s, "Stalled").map(|c| (c.0, c.1)), Some(("True".into(), "JobFailed".into())));
    assert_eq!(condition(&s, "Failed"), Some(("True".into(), "JobFailed".into(), msg.into())));
    assert_eq!(s.error_code.as_deref(), Some("IMG.0014"));
    let events = eventually(Duration::from_secs(10), "a Warning Event", || {
        let (client, ns) = (client.clone(), ns.name.clone());
        async move {
            let evs = events_for(&client, &ns, "doomed").await;
            evs.into_iter().find(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some("JobFailed"))
        }
    })
    .await;
    assert_eq!(events.message.as_deref(), Some(msg));
    ns.cleanup().await;
}

/// (d) 503, 429 and malformed answers mid-job: no false failure, and the job completes.
#[tokio::test]
async fn cloud_faults_cause_no_false_failure() {
    let (client, ns, run) = setup("e2e-faults").await;
    let job = "ff8080814dbd65d7014dbe0d84db4001";
    let mut def = succeeding_job(job, "0s", "6s");
    def["faults"] = json!([
        {"fault": "error", "requests": "2", "status": 503, "body": "flat"},
        {"fault": "throttle", "requests": "4", "retry_after": 1},
        {"fault": "malformed", "requests": "6"},
        {"fault": "error", "requests": "8", "status": 500, "body": "html"}
    ]);
    let sim = Sim::start(json!([def]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let _op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &imagejob("flaky", &run, job, "creds")).await;

    let mut saw_retrying = false;
    let deadline = std::time::Instant::now() + WAIT;
    let done = loop {
        assert!(std::time::Instant::now() < deadline, "not Succeeded in {WAIT:?}");
        if let Some(s) = status(&client, &ns.name, "flaky").await {
            assert_ne!(s.phase, Some(Phase::Failed), "a cloud fault marked the job failed: {s:?}");
            assert_ne!(condition(&s, "Failed").map(|c| c.0), Some("True".into()), "{s:?}");
            saw_retrying |= condition(&s, "Reconciling").is_some_and(|c| c.1 == "RetryingAfterError");
            if s.phase == Some(Phase::Succeeded) {
                break s;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(saw_retrying, "the faults should show as Reconciling=True/RetryingAfterError");
    assert_eq!(condition(&done, "Ready").map(|c| c.0), Some("True".into()));
    let events = events_for(&client, &ns.name, "flaky").await;
    assert!(events.iter().any(|e| e.reason.as_deref() == Some("CloudError")), "{events:?}");
    ns.cleanup().await;
}

/// (e) A missing Secret gives CredentialsNotFound and recovers as soon as it exists.
#[tokio::test]
async fn missing_secret_stalls_then_recovers_when_created() {
    let (client, ns, run) = setup("e2e-nosecret").await;
    let job = "ff8080814dbd65d7014dbe0d84db5001";
    let sim = Sim::start(json!([succeeding_job(job, "0s", "2s")]));
    let _op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &imagejob("waiting", &run, job, "late-creds")).await;
    let s = wait_status(&client, &ns.name, "waiting", WAIT, "CredentialsNotFound", |s| {
        condition(s, "Stalled").is_some_and(|c| c.0 == "True" && c.1 == "CredentialsNotFound")
    })
    .await;
    assert_eq!(condition(&s, "Ready").map(|c| c.0), Some("False".into()));
    assert_eq!(condition(&s, "Failed").map(|c| c.0), Some("False".into()));
    assert_eq!(sim.requests(job).await, 0);

    // The safety recheck is 10 minutes away: only the Secret watch can make this quick.
    let created = std::time::Instant::now();
    create_aksk_secret(&client, &ns.name, "late-creds", SK).await;
    wait_status(&client, &ns.name, "waiting", Duration::from_secs(30), "Succeeded", |s| {
        s.phase == Some(Phase::Succeeded)
    })
    .await;
    println!("E2E-NUMBERS secret-recovery: {:?} from Secret creation to Succeeded (job takes 2 s)", created.elapsed());
    ns.cleanup().await;
}

/// (f) Wrong credentials give AuthenticationFailed after a handful of requests
/// at most, and fixing the Secret recovers at once.
#[tokio::test]
async fn wrong_secret_key_stalls_with_few_requests() {
    let (client, ns, run) = setup("e2e-badkey").await;
    let job = "ff8080814dbd65d7014dbe0d84db6001";
    let sim = Sim::start(json!([succeeding_job(job, "0s", "2s")]));
    create_aksk_secret(&client, &ns.name, "creds", "not-the-secret-key").await;
    let op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &imagejob("badkey", &run, job, "creds")).await;
    let s = wait_status(&client, &ns.name, "badkey", WAIT, "AuthenticationFailed", |s| {
        condition(s, "Stalled").is_some_and(|c| c.0 == "True" && c.1 == "AuthenticationFailed")
    })
    .await;
    assert!(condition(&s, "Ready").unwrap().2.contains("APIGW.0301"), "{s:?}");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let all = sim.all_requests().await;
    let total = all["total"]["requests"].as_u64().expect("total.requests");
    println!("E2E-NUMBERS bad-key: {total} cloud requests in ~10 s");
    assert!(total <= 3, "a rejected signature must not be retried quickly: {all}");
    // The series the chart's ImageJobsStalled alert reads for rejected credentials.
    let rejected = op.metric_with("imagejob_ims_requests_total", &[("outcome", "authentication_failed")]).await;
    assert!(rejected >= 1.0 && rejected <= total as f64, "authentication_failed requests: {rejected}");

    // The backoff is minutes now: only the Secret watch can make this quick.
    let fixed = std::time::Instant::now();
    let patch = json!({"stringData": {"secretKey": SK}});
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns.name);
    secrets.patch("creds", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_status(&client, &ns.name, "badkey", Duration::from_secs(30), "an answer", |s| s.job_status.is_some()).await;
    println!("E2E-NUMBERS secret-fixed: {:?} from the fix to the first answer", fixed.elapsed());
    wait_status(&client, &ns.name, "badkey", WAIT, "Succeeded", |s| s.phase == Some(Phase::Succeeded)).await;
    ns.cleanup().await;
}

/// (g) After SUCCESS, an operator restart makes zero further requests for that job.
#[tokio::test]
async fn restart_after_success_makes_no_requests() {
    let (client, ns, run) = setup("e2e-restart").await;
    let job = "ff8080814dbd65d7014dbe0d84db7001";
    let sim = Sim::start(json!([succeeding_job(job, "0s", "2s")]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let mut op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &imagejob("done", &run, job, "creds")).await;
    wait_status(&client, &ns.name, "done", WAIT, "Succeeded", |s| s.phase == Some(Phase::Succeeded)).await;
    let status = op.terminate();
    assert!(status.success(), "SIGTERM should stop the operator cleanly: {status}");
    let before = sim.requests(job).await;

    let op2 = Operator::start(&sim, &run, &[]);
    eventually(Duration::from_secs(20), "restarted operator ready", || async { op2.ready().await.then_some(()) }).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(sim.requests(job).await, before, "a finished job must not be polled after a restart");
    assert_eq!(op2.metric("imagejob_ims_requests_total").await, 0.0);

    // A spec edit of a finished job is acknowledged without asking the cloud.
    let api: Api<ImageJob> = Api::namespaced(client.clone(), &ns.name);
    let patch = json!({"spec": {"pollInterval": "5s"}});
    let edited = api.patch("done", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    let generation = edited.metadata.generation;
    wait_status(&client, &ns.name, "done", WAIT, "observedGeneration to follow", |s| {
        s.observed_generation == generation && s.phase == Some(Phase::Succeeded)
    })
    .await;
    assert_eq!(sim.requests(job).await, before);
    ns.cleanup().await;
}

/// (h) `kubectl get imagejobs` shows the columns, and `kubectl wait` returns on success.
#[tokio::test]
async fn kubectl_get_columns_and_wait() {
    let (client, ns, run) = setup("e2e-kubectl").await;
    let job = "ff8080814dbd65d7014dbe0d84db8001";
    let sim = Sim::start(json!([succeeding_job(job, "0s", "3s")]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let _op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &imagejob("shown", &run, job, "creds")).await;

    let wait = kubectl(&["wait", "-n", &ns.name, "--for=condition=Ready", "imagejob/shown", "--timeout=60s"]);
    assert!(wait.0, "kubectl wait failed: {}", wait.1);
    let (ok, out) = kubectl(&["get", "imagejobs", "-n", &ns.name]);
    assert!(ok, "{out}");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "PROGRESS", "JOB-ID", "TYPE", "IMAGE", "AGE"]);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..6],
        ["shown", "Succeeded", "100", job, "imsCreateImageByInstance", "49e9447f-7dff-41e0-8036-f66fe5488c8b"]
    );
    let (ok, wide) = kubectl(&["get", "ij", "-n", &ns.name, "-o", "wide"]);
    assert!(ok && wide.lines().next().unwrap().contains("REASON") && wide.contains("Succeeded"), "{wide}");
    let (ok, by_category) = kubectl(&["get", "otc", "-n", &ns.name]);
    assert!(ok && by_category.contains("shown"), "{by_category}");
    ns.cleanup().await;
}

fn kubectl(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(kubectl_path())
        .args(args)
        .env("KUBECONFIG", common::kubeconfig_path())
        .output()
        .expect("run kubectl");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn kubectl_path() -> std::path::PathBuf {
    let cache = std::env::var_os("IMAGEJOB_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/imagejob-operator"));
    let built = cache.join("bin/kubectl");
    if built.exists() { built } else { "kubectl".into() }
}

/// (i) The API server refuses an empty jobId, a changed jobId and `pollInterval: banana`.
#[tokio::test]
async fn api_server_refuses_invalid_imagejobs() {
    let (client, ns, run) = setup("e2e-invalid").await;
    let api: Api<ImageJob> = Api::namespaced(client.clone(), &ns.name);
    let pp = kube::api::PostParams::default();
    let refuse = |e: kube::Error| match e {
        kube::Error::Api(s) => s.message,
        other => panic!("expected an API refusal, got {other}"),
    };

    let mut empty = imagejob("empty", &run, "", "creds");
    let msg = refuse(api.create(&pp, &empty).await.unwrap_err());
    assert!(msg.contains("spec.jobId") && msg.contains("at least 1 chars"), "{msg}");

    empty.spec.job_id = "ff8080814dbd65d7014dbe0d84db9001".into();
    empty.spec.poll_interval = Some("banana".into());
    let msg = refuse(api.create(&pp, &empty).await.unwrap_err());
    assert!(msg.contains("spec.pollInterval"), "{msg}");

    empty.spec.poll_interval = Some("2h".into());
    let msg = refuse(api.create(&pp, &empty).await.unwrap_err());
    assert!(msg.contains("pollInterval must be between 1s and 1h"), "{msg}");

    empty.spec.poll_interval = Some("30s".into());
    api.create(&pp, &empty).await.unwrap();
    let patch = json!({"spec": {"jobId": "ff8080814dbd65d7014dbe0d84db9002"}});
    let msg = refuse(
        api.patch("empty", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.unwrap_err(),
    );
    assert!(msg.contains("jobId is immutable"), "{msg}");
    ns.cleanup().await;
}

/// (k) A Secret of the same name in another namespace is never used.
#[tokio::test]
async fn secret_in_another_namespace_is_never_used() {
    let (client, ns, run) = setup("e2e-tenant-a").await;
    let other = TestNamespace::new(&client, "e2e-tenant-b").await;
    let job = "ff8080814dbd65d7014dbe0d84dba001";
    let sim = Sim::start(json!([succeeding_job(job, "0s", "2s")]));
    create_aksk_secret(&client, &other.name, "creds", SK).await;
    let _op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &imagejob("borrower", &run, job, "creds")).await;
    wait_status(&client, &ns.name, "borrower", WAIT, "CredentialsNotFound", |s| {
        condition(s, "Stalled").is_some_and(|c| c.1 == "CredentialsNotFound")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.requests(job).await, 0, "another namespace's Secret was used");
    ns.cleanup().await;
    other.cleanup().await;
}

/// Several ImageJobs naming the same job (same endpoint, project, job and
/// credentials) share one cloud request per interval.
#[tokio::test]
async fn imagejobs_on_one_job_share_requests() {
    let (client, ns, run) = setup("e2e-coalesce").await;
    let job = "ff8080814dbd65d7014dbe0d84dbb001";
    let sim = Sim::start(json!([succeeding_job(job, "1s", "6s")]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let op = Operator::start(&sim, &run, &[]);
    for i in 0..5 {
        create(&client, &ns.name, &imagejob(&format!("copy-{i}"), &run, job, "creds")).await;
    }
    for i in 0..5 {
        wait_status(&client, &ns.name, &format!("copy-{i}"), WAIT, "Succeeded", |s| {
            s.phase == Some(Phase::Succeeded) && s.progress == Some(100)
        })
        .await;
    }
    let requests = sim.requests(job).await;
    let coalesced = op.metric("imagejob_ims_coalesced_reads_total").await;
    println!(
        "E2E-NUMBERS coalescing: 5 ImageJobs, 6 s job, 1 s interval: requests={requests} coalesced_reads={coalesced}"
    );
    // One ImageJob needs about 7; five separate pollers would need about 35.
    assert!(requests <= 11, "five ImageJobs on one job sent {requests} requests");
    assert!(coalesced >= 4.0, "coalesced reads: {coalesced}");
    ns.cleanup().await;
}

/// --watch-namespace: ImageJobs elsewhere are not touched.
#[tokio::test]
async fn watch_namespace_limits_the_operator() {
    let (client, ns, run) = setup("e2e-watched").await;
    let elsewhere = TestNamespace::new(&client, "e2e-unwatched").await;
    let job = "ff8080814dbd65d7014dbe0d84dbf001";
    let sim = Sim::start(json!([succeeding_job(job, "0s", "2s")]));
    for n in [&ns.name, &elsewhere.name] {
        create_aksk_secret(&client, n, "creds", SK).await;
        create(&client, n, &imagejob("scoped", &run, job, "creds")).await;
    }
    let _op = Operator::start(&sim, &run, &["--watch-namespace", &ns.name]);
    wait_status(&client, &ns.name, "scoped", WAIT, "Succeeded", |s| s.phase == Some(Phase::Succeeded)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Only the CRD's default (`observedGeneration: 0`) may be there.
    let untouched = status(&client, &elsewhere.name, "scoped").await;
    assert!(
        untouched.as_ref().is_none_or(|s| s.phase.is_none() && s.conditions.is_empty()),
        "an unwatched namespace was reconciled"
    );
    ns.cleanup().await;
    elsewhere.cleanup().await;
}

/// activeDeadlineSeconds marks a job that runs too long failed and stops
/// polling; suspend stops polling while true.
#[tokio::test]
async fn deadline_and_suspend_stop_polling() {
    let (client, ns, run) = setup("e2e-deadline").await;
    let (slow, paused) = ("ff8080814dbd65d7014dbe0d84dc0001", "ff8080814dbd65d7014dbe0d84dc0002");
    let sim = Sim::start(json!([succeeding_job(slow, "0s", "1h"), succeeding_job(paused, "0s", "1h")]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let _op = Operator::start(&sim, &run, &[]);
    let mut late = imagejob("late", &run, slow, "creds");
    late.spec.active_deadline_seconds = Some(3);
    create(&client, &ns.name, &late).await;
    let s = wait_status(&client, &ns.name, "late", WAIT, "DeadlineExceeded", |s| s.phase == Some(Phase::Failed)).await;
    assert_eq!(condition(&s, "Failed").map(|c| (c.0, c.1)), Some(("True".into(), "DeadlineExceeded".into())));
    assert_eq!(condition(&s, "Ready").map(|c| (c.0, c.1)), Some(("False".into(), "DeadlineExceeded".into())));
    assert_eq!(condition(&s, "Stalled").map(|c| (c.0, c.1)), Some(("True".into(), "DeadlineExceeded".into())));
    assert_eq!(condition(&s, "Reconciling").map(|c| c.0), Some("False".into()));
    let event = wait_event(&client, &ns.name, "late", "DeadlineExceeded", Duration::from_secs(10)).await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(s.job_status.as_deref(), Some("RUNNING"), "the cloud's own status is kept");
    let after_deadline = sim.requests(slow).await;

    let mut held = imagejob("held", &run, paused, "creds");
    held.spec.suspend = Some(true);
    create(&client, &ns.name, &held).await;
    let s = wait_status(&client, &ns.name, "held", WAIT, "Suspended", |s| {
        condition(s, "Reconciling").is_some_and(|c| c.1 == "Suspended")
    })
    .await;
    assert_eq!(s.job_status, None);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.requests(paused).await, 0, "a suspended ImageJob must not poll");
    assert_eq!(sim.requests(slow).await, after_deadline, "no polls after the deadline");

    let api: Api<ImageJob> = Api::namespaced(client.clone(), &ns.name);
    let resume = json!({"spec": {"suspend": false}});
    api.patch("held", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&resume)).await.unwrap();
    wait_status(&client, &ns.name, "held", WAIT, "Running after resume", |s| s.phase == Some(Phase::Running)).await;
    ns.cleanup().await;
}
