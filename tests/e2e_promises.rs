//! End to end, the README's promises that only unit tests or fakes covered:
//! the operator binary against the local kube-apiserver and `ims-sim` over
//! real HTTP. Few tests with many assertions each, to keep CI short.

mod common;

use std::time::Duration;

use common::e2e::*;
use common::{eventually, leak};
use imagejob_operator::crd::{ImageJob, ImageJobStatus, Phase};
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

async fn secret(client: &kube::Client, ns: &str, name: &str, data: Value) {
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data})).unwrap();
    Api::<Secret>::namespaced(client.clone(), ns).create(&PostParams::default(), &secret).await.unwrap();
}

fn stalled_with(reason: &'static str) -> impl Fn(&ImageJobStatus) -> bool {
    move |s| condition(s, "Stalled").is_some_and(|c| c.0 == "True" && c.1 == reason)
}

/// `ims.otc.io/requestedAt` through the real watch path (the reflector's
/// trimming and the controller's annotation predicate): a finished job is
/// polled exactly once more and the value echoed; with the cloud failing,
/// the refresh says RefreshFailed and the result stands.
#[tokio::test]
async fn requested_at_forces_one_poll_of_a_finished_job() {
    let (client, ns, run) = setup("e2e-refresh").await;
    let job = "ff8080814dbd65d7014dbe0d84dd1001";
    let sim = Sim::start(json!([succeeding_job(job, "0s", "2s")]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let _op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &imagejob("forced", &run, job, "creds")).await;
    let done = wait_status(&client, &ns.name, "forced", WAIT, "Succeeded", |s| s.phase == Some(Phase::Succeeded)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = sim.requests(job).await;

    request_poll(&client, &ns.name, "forced", "1764421200").await;
    let s = wait_status(&client, &ns.name, "forced", Duration::from_secs(20), "requestedAt echoed", |s| {
        s.last_handled_reconcile_at.as_deref() == Some("1764421200")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.requests(job).await, before + 1, "one forced poll must send exactly one request");
    assert_eq!(s.phase, Some(Phase::Succeeded));
    assert_eq!(condition(&s, "Ready").map(|c| c.0), Some("True".into()));

    // From now on the cloud answers 503 for this job (the admin API restarts its counters).
    let mut failing = succeeding_job(job, "0s", "2s");
    failing["faults"] = json!([{"fault": "error", "requests": "1-", "status": 503, "body": "flat"}]);
    sim.put_job(PROJECT, job, &failing).await.unwrap();
    request_poll(&client, &ns.name, "forced", "1764421260").await;
    let s = wait_status(&client, &ns.name, "forced", Duration::from_secs(20), "RefreshFailed", |s| {
        s.last_handled_reconcile_at.as_deref() == Some("1764421260")
            && condition(s, "Reconciling").is_some_and(|c| c.1 == "RefreshFailed")
    })
    .await;
    let reconciling = condition(&s, "Reconciling").unwrap();
    assert_eq!(reconciling.0, "False", "{s:?}");
    assert!(reconciling.2.contains("503"), "the message says why: {}", reconciling.2);
    assert_eq!(s.phase, Some(Phase::Succeeded), "the result stands: {s:?}");
    assert_eq!(s.job_status.as_deref(), Some("SUCCESS"));
    assert_eq!(s.image_id, done.image_id);
    assert_eq!(condition(&s, "Ready").map(|c| (c.0, c.1)), Some(("True".into(), "Succeeded".into())));
    assert_eq!(condition(&s, "Failed").map(|c| c.0), Some("False".into()));
    let event = wait_event(&client, &ns.name, "forced", "RefreshFailed", Duration::from_secs(10)).await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.requests(job).await, 1, "a failed refresh waits for the next annotation");
    ns.cleanup().await;
}

/// Every stall reason where users meet it (status, Warning Event, metric),
/// the credential variants that must work (security token, projectId from
/// the Secret), and no credential anywhere in the operator's debug log, the
/// statuses or the Events.
#[tokio::test]
async fn stall_reasons_and_credentials_end_to_end() {
    let (client, ns, run) = setup("e2e-stalls").await;
    let n = &ns.name;
    let (never, from_secret, temporary, forbidden, gone) = (
        "ff8080814dbd65d7014dbe0d84dd2001",
        "ff8080814dbd65d7014dbe0d84dd2002",
        "ff8080814dbd65d7014dbe0d84dd2003",
        "ff8080814dbd65d7014dbe0d84dd2004",
        "ff8080814dbd65d7014dbe0d84dd2005",
    );
    let (token_ak, token_sk, token) = ("E2ETEMPORARYKEY", "e2e-temporary-secret-key", "e2e-security-token-value");
    let bad_password = "e2e-wrong-password-value";
    let bad_request = "ff8080814dbd65d7014dbe0d84dd2006";
    let refusing_with = |job: &str, status: u16| {
        let mut def = succeeding_job(job, "0s", "1h");
        def["faults"] = json!([{"fault": "error", "requests": "1-", "status": status, "body": "nested"}]);
        def
    };
    let mut scenario = Sim::scenario(json!([
        succeeding_job(never, "0s", "2s"),
        succeeding_job(from_secret, "0s", "2s"),
        succeeding_job(temporary, "0s", "2s"),
        refusing_with(forbidden, 403),
        refusing_with(bad_request, 400),
        succeeding_job(gone, "0s", "1h"),
    ]));
    scenario["access_keys"].as_array_mut().unwrap().push(json!({
        "access": token_ak, "secret": token_sk, "security_token": token
    }));
    let sim = Sim::start_with(scenario);

    secret(&client, n, "no-secret-key", json!({"accessKey": AK, "projectId": PROJECT})).await;
    secret(&client, n, "no-project", json!({"accessKey": AK, "secretKey": SK})).await;
    secret(&client, n, "with-project", json!({"accessKey": AK, "secretKey": SK, "projectId": PROJECT})).await;
    let temp = json!({"accessKey": token_ak, "secretKey": token_sk, "securityToken": token, "projectId": PROJECT});
    secret(&client, n, "temporary", temp).await;
    let password = json!({"username": "e2e-user", "password": bad_password, "domainName": "e2e-domain"});
    secret(&client, n, "bad-password", password).await;
    create_aksk_secret(&client, n, "creds", SK).await;

    let op = Operator::start_with(&sim, &run, &[], &[("RUST_LOG", "debug")]);
    let without_project = |name: &str, job: &str, secret: &str| {
        let mut ij = imagejob(name, &run, job, secret);
        ij.spec.project_id = None;
        ij
    };
    create(&client, n, &imagejob("no-secret-key", &run, never, "no-secret-key")).await;
    create(&client, n, &without_project("no-project", never, "no-project")).await;
    create(&client, n, &without_project("project-from-secret", from_secret, "with-project")).await;
    create(&client, n, &imagejob("security-token", &run, temporary, "temporary")).await;
    create(&client, n, &imagejob("bad-password", &run, never, "bad-password")).await;
    create(&client, n, &imagejob("forbidden", &run, forbidden, "creds")).await;
    create(&client, n, &imagejob("gone", &run, gone, "creds")).await;
    create(&client, n, &imagejob("bad-request", &run, bad_request, "creds")).await;

    // The credential variants that must work.
    let succeeded = |s: &ImageJobStatus| s.phase == Some(Phase::Succeeded);
    wait_status(&client, n, "project-from-secret", WAIT, "Succeeded (projectId from the Secret)", succeeded).await;
    wait_status(&client, n, "security-token", WAIT, "Succeeded (X-Security-Token sent)", succeeded).await;

    // A job IMS answered and then forgot: JobNotFound.
    wait_status(&client, n, "gone", WAIT, "Running", |s| s.phase == Some(Phase::Running)).await;
    let running = wait_event(&client, n, "gone", "JobRunning", Duration::from_secs(10)).await;
    assert_eq!(running.type_.as_deref(), Some("Normal"));
    sim.delete_job(gone).await;

    for (name, reason, says) in [
        ("no-secret-key", "CredentialsNotFound", "secretKey"),
        ("no-project", "InvalidSpec", "projectId"),
        ("bad-password", "AuthenticationFailed", ""),
        ("forbidden", "Forbidden", "403"),
        ("bad-request", "BadRequest", "400"),
        ("gone", "JobNotFound", "404"),
    ] {
        let s = wait_status(&client, n, name, WAIT, reason, stalled_with(reason)).await;
        let ready = condition(&s, "Ready").unwrap();
        assert_eq!((ready.0.as_str(), ready.1.as_str()), ("False", reason), "{name}: {s:?}");
        assert!(ready.2.contains(says), "{name}: the message should name {says:?}: {}", ready.2);
        assert_eq!(condition(&s, "Failed").map(|c| c.0), Some("False".into()), "{name}: not failed: {s:?}");
        assert_eq!(condition(&s, "Reconciling").map(|c| c.0), Some("False".into()), "{name}");
        assert_ne!(s.phase, Some(Phase::Failed), "{name}");
        let event = wait_event(&client, n, name, reason, Duration::from_secs(10)).await;
        assert_eq!(event.type_.as_deref(), Some("Warning"), "{name}: {event:?}");
    }
    let gone_status = status(&client, n, "gone").await.unwrap();
    assert_eq!(gone_status.job_status.as_deref(), Some("RUNNING"), "what IMS said last is kept");
    assert_eq!(sim.requests(never).await, 0, "stalled before asking IMS: no request");

    let m = op.metrics().await;
    let outcomes = [("success", 3.0), ("forbidden", 1.0), ("job_not_found", 1.0), ("bad_request", 1.0)];
    for (outcome, at_least) in outcomes {
        let got = m.value_with("imagejob_ims_requests_total", &[("outcome", outcome)]);
        assert!(got >= at_least, "imagejob_ims_requests_total{{outcome={outcome:?}}} = {got}");
    }
    let reasons =
        ["JobRunning", "Succeeded", "CredentialsNotFound", "InvalidSpec", "Forbidden", "JobNotFound", "BadRequest"];
    for reason in reasons {
        let got = m.value_with("imagejob_events_total", &[("reason", reason)]);
        assert!(got >= 1.0, "imagejob_events_total{{reason={reason:?}}} = {got}");
    }
    assert!(m.value("imagejob_ims_request_duration_seconds_count") >= 5.0, "{}", m.0);
    assert!(m.value("imagejob_reconcile_duration_seconds_count") >= 7.0, "{}", m.0);
    eventually(Duration::from_secs(20), "imagejob_imagejobs{phase=\"Succeeded\"} = 2", || async {
        let m = op.metrics().await;
        (m.value_with("imagejob_imagejobs", &[("phase", "Succeeded")]) == 2.0
            && m.value_with("imagejob_imagejobs", &[("phase", "Running")]) == 1.0)
            .then_some(())
    })
    .await;

    // No credential in the debug log, any status or any Event.
    let log = op.log();
    assert!(log.lines().count() > 20, "RUST_LOG=debug should log: {log}");
    let statuses = serde_json::to_string(
        &Api::<ImageJob>::namespaced(client.clone(), n).list(&ListParams::default()).await.unwrap().items,
    )
    .unwrap();
    let events = serde_json::to_string(
        &Api::<Event>::namespaced(client.clone(), n).list(&ListParams::default()).await.unwrap().items,
    )
    .unwrap();
    let metrics = op.metrics().await.0;
    let secrets = [("secret key", SK), ("temporary secret key", token_sk), ("security token", token)];
    let places = [("log", log.as_str()), ("ImageJobs", &statuses), ("Events", &events), ("metrics", &metrics)];
    leak::assert_nowhere(&[secrets.as_slice(), &[("password", bad_password)]].concat(), &places);

    // The API server refuses a region that could change the endpoint's host.
    let mut elsewhere = imagejob("elsewhere", &run, never, "creds");
    elsewhere.spec.region = Some("evil.example.com/".into());
    let err = Api::<ImageJob>::namespaced(client.clone(), n).create(&PostParams::default(), &elsewhere).await;
    let msg = match err {
        Err(kube::Error::Api(s)) => s.message,
        other => panic!("a region with dots and slashes must be refused, got {other:?}"),
    };
    assert!(msg.contains("spec.region"), "{msg}");
    ns.cleanup().await;
}

/// A working password login (IAM on its own listener) and an AK/SK
/// Secret side by side, at debug level: the IAM token the simulator issued
/// (read from its admin API), the password and the secret key appear in no
/// form (plain, base64 at any alignment, percent-encoded, hex) in the
/// operator's log, the ImageJobs, the Events or `/metrics`.
#[tokio::test]
async fn no_token_password_or_secret_key_in_any_output() {
    let (client, ns, run) = setup("e2e-leak").await;
    let n = &ns.name;
    let (by_password, by_key) = ("ff8080814dbd65d7014dbe0d84dd4001", "ff8080814dbd65d7014dbe0d84dd4002");
    let sim = Sim::start_split(Sim::scenario(json!([
        succeeding_job(by_password, "0s", "2s"),
        succeeding_job(by_key, "0s", "2s")
    ])));
    create_password_secret(&client, n, "password").await;
    create_aksk_secret(&client, n, "keys", SK).await;
    let op = Operator::start_with(&sim, &run, &[], &[("RUST_LOG", "debug")]);
    create(&client, n, &imagejob("by-password", &run, by_password, "password")).await;
    create(&client, n, &imagejob("by-key", &run, by_key, "keys")).await;
    for name in ["by-password", "by-key"] {
        wait_status(&client, n, name, WAIT, "Succeeded", |s| s.phase == Some(Phase::Succeeded)).await;
    }
    let tokens = sim.issued_tokens().await;
    assert!(!tokens.is_empty(), "the password login got a token from IAM");

    let log = op.log();
    assert!(log.lines().count() > 20, "RUST_LOG=debug should log: {log}");
    let list = |v: Vec<_>| serde_json::to_string(&v).unwrap();
    let statuses =
        list(Api::<ImageJob>::namespaced(client.clone(), n).list(&ListParams::default()).await.unwrap().items);
    let events = serde_json::to_string(
        &Api::<Event>::namespaced(client.clone(), n).list(&ListParams::default()).await.unwrap().items,
    )
    .unwrap();
    let metrics = op.metrics().await.0;
    let mut secrets = vec![("password", "e2e-password"), ("secret key", SK)];
    secrets.extend(tokens.iter().map(|t| ("IAM token", t.as_str())));
    let places = [("log", log.as_str()), ("ImageJobs", &statuses), ("Events", &events), ("metrics", &metrics)];
    leak::assert_nowhere(&secrets, &places);
    ns.cleanup().await;
}

/// The `run` flags users set, seen from outside: the default
/// `--poll-interval` and `spec.pollInterval` overriding it,
/// `--default-region` and `{region}` in the endpoint, `--ims-timeout`,
/// `--watch-label-selector`, `--log-format json`, and `--ims-rate-limit`
/// with `imagejob_ims_rate_limited_total`.
#[tokio::test]
async fn run_flags_reach_the_operator() {
    let (client, ns, run) = setup("e2e-flags").await;
    let n = &ns.name;
    let other_project = "1c1a1e4b2c2d4e8f9a0b1c2d3e4f5a6b";
    let (default_iv, fast, slow, unlabelled, regional) = (
        "ff8080814dbd65d7014dbe0d84dd3001",
        "ff8080814dbd65d7014dbe0d84dd3002",
        "ff8080814dbd65d7014dbe0d84dd3003",
        "ff8080814dbd65d7014dbe0d84dd3004",
        "ff8080814dbd65d7014dbe0d84dd3005",
    );
    let mut lagging = succeeding_job(slow, "0s", "1h");
    lagging["faults"] = json!([{"fault": "latency", "delay": "3s"}]);
    let mut jobs = vec![succeeding_job(default_iv, "0s", "1h"), succeeding_job(fast, "0s", "1h"), lagging];
    jobs.push(succeeding_job(unlabelled, "0s", "1h"));
    let busy: Vec<String> = (0..4).map(|i| format!("ff8080814dbd65d7014dbe0d84dd31{i:02}")).collect();
    for id in &busy {
        let mut j = succeeding_job(id, "0s", "1h");
        j["project_id"] = json!(other_project);
        jobs.push(j);
    }
    let mut scenario = Sim::scenario(json!(jobs));
    scenario["projects"].as_array_mut().unwrap().push(json!({"id": other_project}));
    let sim = Sim::start_with(scenario);
    // A second simulator on 127.0.0.2, same port: region "2" of the endpoint template.
    let port = sim.url.rsplit(':').next().unwrap().to_owned();
    let sim2 =
        Sim::start_on(&format!("127.0.0.2:{port}"), Sim::scenario(json!([succeeding_job(regional, "0s", "2s")])));
    create_aksk_secret(&client, n, "creds", SK).await;

    let endpoint = format!("http://127.0.0.{{region}}:{port}");
    let mut cmd = Operator::binary();
    cmd.arg("run")
        .args(["--ims-endpoint", &endpoint, "--iam-endpoint", &endpoint, "--default-region", "1"])
        // Regions "1" and "2" are not OTC's: allowed explicitly.
        .args(["--allowed-regions", "1,2"])
        .args(["--watch-label-selector", &format!("e2e-run={run}")])
        .args(["--ims-timeout", "1s", "--log-format", "json", "--ims-rate-limit", "2", "--ims-rate-burst", "2"])
        .env("RUST_LOG", "info");
    let op = Operator::spawn(cmd, None).expect("start imagejob-operator");

    let at = |name: &str, job: &str, interval: Option<&str>| {
        let mut ij = imagejob(name, &run, job, "creds");
        ij.spec.poll_interval = interval.map(str::to_owned);
        ij
    };
    create(&client, n, &at("default-interval", default_iv, None)).await;
    create(&client, n, &at("fast", fast, Some("1s"))).await;
    create(&client, n, &at("slow-cloud", slow, Some("1s"))).await;
    let mut regional_ij = at("regional", regional, Some("1s"));
    regional_ij.spec.region = Some("2".into());
    create(&client, n, &regional_ij).await;
    let mut ignored = at("unlabelled", unlabelled, Some("1s"));
    ignored.metadata.labels = None;
    create(&client, n, &ignored).await;
    for (i, id) in busy.iter().enumerate() {
        let mut ij = at(&format!("busy-{i}"), id, Some("1s"));
        ij.spec.project_id = Some(other_project.into());
        create(&client, n, &ij).await;
    }

    // Default interval (10 s) against spec.pollInterval 1s, over the same 12 s.
    let answered = |s: &ImageJobStatus| s.job_status.is_some();
    wait_status(&client, n, "default-interval", WAIT, "a first answer", answered).await;
    wait_status(&client, n, "fast", WAIT, "a first answer", answered).await;
    let (d0, f0) = (sim.requests(default_iv).await, sim.requests(fast).await);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (d1, f1) = (sim.requests(default_iv).await - d0, sim.requests(fast).await - f0);
    println!("E2E-NUMBERS intervals: {d1} requests at the default interval, {f1} at pollInterval 1s, in 12 s");
    assert_eq!(d1, 1, "the default --poll-interval is 10s: one poll in 12 s");
    assert!((8..=14).contains(&f1), "spec.pollInterval 1s overrides it: {f1} polls in 12 s");

    // {region}: the ImageJob's region picks the simulator on 127.0.0.2;
    // the others used --default-region 1, i.e. 127.0.0.1.
    wait_status(&client, n, "regional", WAIT, "Succeeded via region 2", |s| s.phase == Some(Phase::Succeeded)).await;
    assert!(sim2.requests(regional).await >= 1);

    // --ims-timeout 1s cuts the 3 s answers: transient, never a failure.
    let s = wait_status(&client, n, "slow-cloud", WAIT, "RetryingAfterError", |s| {
        condition(s, "Reconciling").is_some_and(|c| c.1 == "RetryingAfterError")
    })
    .await;
    let msg = condition(&s, "Reconciling").unwrap().2;
    assert!(msg.contains("did not answer in time"), "{msg}");
    assert_ne!(s.phase, Some(Phase::Failed));

    // --watch-label-selector: the unlabelled ImageJob is never touched.
    // Only the CRD's default (`observedGeneration: 0`) may be there.
    let untouched = status(&client, n, "unlabelled").await;
    let default_only = |s: &ImageJobStatus| s == &ImageJobStatus { observed_generation: Some(0), ..Default::default() };
    assert!(untouched.as_ref().is_none_or(default_only), "an unlabelled ImageJob got a status: {untouched:?}");
    assert_eq!(sim.requests(unlabelled).await, 0, "an unlabelled ImageJob was polled");

    // --ims-rate-limit 2/s against four ImageJobs polling every second in one project.
    let m = op.metrics().await;
    let deferred = m.value("imagejob_ims_rate_limited_total");
    assert!(deferred >= 1.0, "imagejob_ims_rate_limited_total = {deferred}");
    assert!(m.value_with("imagejob_ims_requests_total", &[("outcome", "transient")]) >= 1.0, "{}", m.0);

    // --log-format json: every line is a JSON object with a level and a message.
    let log = op.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "RUST_LOG=info should log: {log}");
    for line in lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
        assert!(v["message"].is_string(), "{line}");
    }
    ns.cleanup().await;
}

/// The StatusTooLarge fallback's I/O: the API server refuses every status
/// that carries sub-jobs (a ValidatingAdmissionPolicy on `imagejobs/status`
/// in this namespace, answering 413); the operator writes the phase and the
/// short fields, no lists, messages cut short, and says so in a
/// `StatusTooLarge` condition and Event. Red with the fallback write
/// skipped or writing the full status again (no status at all).
#[tokio::test]
async fn a_refused_status_is_written_short() {
    let (client, ns, run) = setup("e2e-toolarge").await;
    let n = &ns.name;
    let rule = json!({"apiGroups": ["ims.otc.io"], "apiVersions": ["*"], "operations": ["UPDATE"],
                      "resources": ["imagejobs/status"]});
    let expression = "!has(object.status) || !has(object.status.subJobs) || size(object.status.subJobs) == 0";
    let refusal = common::AdmissionRefusal::install(
        &client,
        n,
        rule,
        expression,
        "the test's policy refuses statuses with sub-jobs",
        Some("RequestEntityTooLarge"),
    )
    .await;
    // A probe ImageJob no operator watches: its status with a sub-job is refused.
    let api = Api::<ImageJob>::namespaced(client.clone(), n);
    create(&client, n, &imagejob("probe", "nobody", "ff8080814dbd65d7014dbe0d84dd6009", "creds")).await;
    let with_sub_job = json!({"status": {"subJobs": [{"jobId": "x"}]}});
    eventually(Duration::from_secs(30), "the policy to refuse a status", || async {
        let patched = api.patch_status("probe", &Default::default(), &kube::api::Patch::Merge(&with_sub_job)).await;
        matches!(patched, Err(kube::Error::Api(e)) if e.code == 413).then_some(())
    })
    .await;

    let job = "ff8080814dbd65d7014dbe0d84dd6001";
    let long_reason = "the disk image could not be converted. ".repeat(40);
    let fail = json!({"after": "0s", "status": "FAIL", "error_code": "IMG.0014", "fail_reason": long_reason});
    let sub_jobs: Vec<Value> = (1..=2)
        .map(|i| json!({"job_id": format!("ff8080814dbd65d7014dbe0d84dd61{i:02}"), "job_type": "imsImportImageJob", "phases": [fail]}))
        .collect();
    let failing = json!({"project_id": PROJECT, "job_id": job, "job_type": "imsImportImageJob",
                         "phases": [fail], "sub_jobs": sub_jobs});
    let sim = Sim::start(json!([failing]));
    create_aksk_secret(&client, n, "creds", SK).await;
    let _op = Operator::start(&sim, &run, &[]);
    create(&client, n, &imagejob("big", &run, job, "creds")).await;

    let s = wait_status(&client, n, "big", WAIT, "StatusTooLarge", |s| condition(s, "StatusTooLarge").is_some()).await;
    let (status, reason, message) = condition(&s, "StatusTooLarge").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "StatusTooLarge"), "{s:?}");
    assert!(message.contains("HTTP 413") && message.contains("refuses statuses with sub-jobs"), "{message}");
    assert_eq!(s.phase, Some(Phase::Failed), "the phase is written: {s:?}");
    assert_eq!((s.job_status.as_deref(), s.error_code.as_deref()), (Some("FAIL"), Some("IMG.0014")), "{s:?}");
    assert_eq!(condition(&s, "Failed").map(|c| (c.0, c.1)), Some(("True".into(), "JobFailed".into())));
    assert!(s.sub_jobs.is_empty() && s.sub_job_ids.is_empty() && s.results.is_empty() && s.images.is_empty(), "{s:?}");
    assert_eq!(s.sub_jobs_total, Some(2), "the lists' lengths stay: {s:?}");
    let fail_reason = s.fail_reason.as_deref().unwrap_or_default();
    assert!(fail_reason.starts_with("the disk image") && fail_reason.len() <= 256, "{fail_reason}");
    for c in &s.conditions {
        assert!(c.message.len() <= 256 || c.type_ == "StatusTooLarge", "{}: {} bytes", c.type_, c.message.len());
    }
    let event = wait_event(&client, n, "big", "StatusTooLarge", Duration::from_secs(10)).await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    refusal.remove().await;
    ns.cleanup().await;
}
