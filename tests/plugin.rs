//! `kubectl-imagejob` against the local cluster, with the operator binary
//! polling `ims-sim` over real HTTP: the plugin sees what a person would.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::e2e::*;
use common::{TestNamespace, client, kubeconfig_path};
use imagejob_operator::crd::{ImageJob, Phase, REQUESTED_AT_ANNOTATION};
use kube::api::Api;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

async fn setup(prefix: &str) -> (kube::Client, TestNamespace, String) {
    let client = client().await;
    install_imagejob_crd(&client).await;
    let ns = TestNamespace::new(&client, prefix).await;
    create_aksk_secret(&client, &ns.name, "otc", SK).await;
    (client, ns, unique_label())
}

fn plugin(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-imagejob"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("run kubectl-imagejob")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// An OVA import with two sub-jobs, succeeding after `done_at`.
fn ova_job(job_id: &str, done_at: &str) -> Value {
    json!({
        "project_id": PROJECT, "job_id": job_id, "job_type": "imsImportOvaImageJob", "sub_jobs_list": true,
        "image_name": "appliance",
        "phases": [
            {"after": "0s", "status": "RUNNING", "progress": [0.1, 0.9], "current_task": "ImportImageTask"},
            {"after": done_at, "status": "SUCCESS", "image_id": "img-ova"}
        ],
        "sub_jobs": [
            {"job_id": "sub-sys", "job_type": "imsImportImageJob",
             "phases": [{"after": "0s", "status": "SUCCESS", "image_id": "img-sys"}]},
            {"job_id": "sub-data", "job_type": "imsImportDataImageJob",
             "phases": [{"after": "0s", "status": "RUNNING"}, {"after": "1s", "status": "SUCCESS", "image_id": "img-data"}]}
        ]
    })
}

fn failing_job(job_id: &str, fail_at: &str) -> Value {
    json!({
        "project_id": PROJECT, "job_id": job_id, "job_type": "imsCreateImageByInstance",
        "phases": [
            {"after": "0s", "status": "RUNNING", "progress": [0.1, 0.5], "current_task": "CreateImageByInstanceTask"},
            {"after": fail_at, "status": "FAIL", "error_code": "IMG.0014", "fail_reason": "OpenStack failed"}
        ]
    })
}

#[tokio::test]
async fn status_shows_sub_jobs_conditions_and_events() {
    let (client, ns, run) = setup("plugin-status").await;
    let job = "ff8080814dbd65d7014dbe0d84dc0001";
    let sim = Sim::start(json!([ova_job(job, "3s")]));
    let _operator = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &imagejob("appliance", &run, job, "otc")).await;
    wait_status(&client, &ns.name, "appliance", WAIT, "Succeeded", |s| s.phase == Some(Phase::Succeeded)).await;

    let out = plugin(&kubeconfig_path(), &["status", "appliance", "-n", &ns.name]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    println!("{stdout}");
    assert!(stdout.contains("Phase:        Succeeded (SUCCESS)\n"), "{stdout}");
    assert!(stdout.contains("Progress:     [==============================] 100%\n"), "{stdout}");
    assert!(stdout.contains("Image:        img-ova (appliance)\n"), "{stdout}");
    let sub_jobs = stdout.split("Sub-jobs:\n").nth(1).expect("a sub-jobs table");
    for (id, image) in [("sub-sys", "img-sys"), ("sub-data", "img-data")] {
        let row = sub_jobs.lines().find(|l| l.contains(id)).unwrap_or_else(|| panic!("{id} listed: {stdout}"));
        assert!(row.contains("SUCCESS") && row.contains(image), "{row}");
    }
    let conditions = stdout.split("Conditions:\n").nth(1).expect("conditions");
    assert!(conditions.lines().any(|l| l.trim_start().starts_with("Ready") && l.contains("True")), "{stdout}");
    let events = stdout.split("Events").nth(1).expect("events");
    assert!(events.contains("Normal") && events.contains("Succeeded"), "the operator's Events: {stdout}");
    assert!(!stdout.chars().any(|c| c.is_control() && c != '\n'), "plain text");
    ns.cleanup().await;
}

#[tokio::test]
async fn wait_on_one_succeeded_and_one_failed_exits_1_and_names_the_failed() {
    let (client, ns, run) = setup("plugin-wait").await;
    let (good, bad) = ("ff8080814dbd65d7014dbe0d84dc0002", "ff8080814dbd65d7014dbe0d84dc0003");
    let sim = Sim::start(json!([succeeding_job(good, "0s", "4s"), failing_job(bad, "2s")]));
    let _operator = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &imagejob("good", &run, good, "otc")).await;
    create(&client, &ns.name, &imagejob("bad", &run, bad, "otc")).await;

    let out = plugin(&kubeconfig_path(), &["wait", "good", "bad", "-n", &ns.name, "--timeout", "60s"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    println!("{stderr}{stdout}");
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("bad: Failed: IMG.0014: OpenStack failed\n"), "{stdout}");
    assert!(stdout.contains("good: Succeeded, image 49e9447f-7dff-41e0-8036-f66fe5488c8b\n"), "{stdout}");
    assert!(stderr.ends_with("failed: bad\n"), "{stderr}");
    assert!(stderr.lines().any(|l| l.contains("] good: Running")), "a line per change while running: {stderr}");
    for line in stderr.lines().chain(stdout.lines()) {
        assert!(!line.chars().any(char::is_control), "{line:?}");
    }

    let out = plugin(&kubeconfig_path(), &["wait", "good", "-n", &ns.name]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    ns.cleanup().await;
}

#[tokio::test]
async fn wait_times_out_with_2() {
    let (client, ns, run) = setup("plugin-timeout").await;
    let job = "ff8080814dbd65d7014dbe0d84dc0004";
    let sim = Sim::start(json!([succeeding_job(job, "0s", "1h")]));
    let _operator = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &imagejob("slow", &run, job, "otc")).await;
    let out = plugin(&kubeconfig_path(), &["wait", "slow", "-n", &ns.name, "--timeout", "3s"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("slow: not finished: "), "{}", text(&out.stdout));
    ns.cleanup().await;
}

#[tokio::test]
async fn refresh_returns_once_the_status_echoes_the_request() {
    let (client, ns, run) = setup("plugin-refresh").await;
    let job = "ff8080814dbd65d7014dbe0d84dc0005";
    let sim = Sim::start(json!([succeeding_job(job, "0s", "2s")]));
    let _operator = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &imagejob("img", &run, job, "otc")).await;
    wait_status(&client, &ns.name, "img", WAIT, "Succeeded", |s| s.phase == Some(Phase::Succeeded)).await;
    let before = sim.requests(job).await;

    let out = plugin(&kubeconfig_path(), &["refresh", "img", "-n", &ns.name, "--timeout", "30s"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let ij = Api::<ImageJob>::namespaced(client.clone(), &ns.name).get("img").await.unwrap();
    let requested = ij.metadata.annotations.as_ref().and_then(|a| a.get(REQUESTED_AT_ANNOTATION)).cloned();
    let handled = ij.status.as_ref().and_then(|s| s.last_handled_reconcile_at.clone());
    assert!(requested.is_some() && requested == handled, "{requested:?} echoed as {handled:?}");
    assert!(stderr.contains(requested.as_deref().unwrap()), "{stderr}");
    assert!(stdout.starts_with("Name:         img\n"), "then the status screen: {stdout}");
    assert_eq!(sim.requests(job).await, before + 1, "one poll for one refresh");
    ns.cleanup().await;
}

#[tokio::test]
async fn clear_errors_for_a_missing_imagejob_and_a_forbidden_namespace() {
    let (_client, ns, _) = setup("plugin-errors").await;
    let out = plugin(&kubeconfig_path(), &["status", "nope", "-n", &ns.name]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(stderr, format!("error: imagejobs.ims.otc.io \"nope\" not found in namespace {}\n", ns.name));

    // The same cluster as a user with no permissions at all (impersonated).
    let admin: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(kubeconfig_path()).unwrap()).unwrap();
    let mut nobody = admin.clone();
    for user in nobody["users"].as_array_mut().unwrap() {
        user["user"]["as"] = json!("plugin-test-nobody");
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_yaml_ng::to_string(&nobody).unwrap()).unwrap();
    let out = plugin(file.path(), &["wait", "anything", "-n", &ns.name]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.starts_with("error: forbidden: ") && stderr.contains("plugin-test-nobody"), "{stderr}");
    assert!(stderr.contains(&ns.name), "names the namespace: {stderr}");

    let out = plugin(Path::new("/nonexistent/kubeconfig"), &["status", "x"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).starts_with("error: kubeconfig: "));
    let out = plugin(&kubeconfig_path(), &["wait"]);
    assert_eq!(out.status.code(), Some(4), "a name is required");
    ns.cleanup().await;
}

/// A cluster that lacks the CRD (a private control plane of this test, as
/// a person pointing at the wrong context would meet it): said in one line,
/// exit 3, not "ImageJob not found".
#[tokio::test]
async fn a_cluster_without_the_crd_is_named() {
    let cp = tokio::task::spawn_blocking(common::control_plane::PrivateControlPlane::up).await.unwrap();
    let out = plugin(&cp.kubeconfig, &["status", "img", "-n", "default"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(
        stderr,
        "error: the ImageJob CRD (imagejobs.ims.otc.io) is not installed in this cluster: apply crds/imagejob.yaml \
         or install the chart\n"
    );
    tokio::task::spawn_blocking(move || drop(cp)).await.unwrap();
}
