//! The cloud as it is today (issue 20), end to end: the operator binary
//! against the local kube-apiserver and `ims-sim` answering as the current
//! IMS docs describe (status API without progress, the progress API, images
//! of multi-image jobs only in sub-jobs, failure text in `entities.error`,
//! IMS errors as HTTP 400 with an IMG code). Each test is one of the five
//! ways the operator failed against such a cloud, plus what `auto` costs on
//! a cloud without the progress API.

mod common;

use std::time::{Duration, Instant};

use common::e2e::*;
use common::eventually;
use imagejob_operator::crd::{ImageJob, ImageJobStatus, Phase};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const SYSTEM_IMAGE: &str = "8e1f2a3b-4c5d-4e6f-8a7b-9c0d1e2f3a4b";
const DATA_IMAGE: &str = "5b7d3c1e-2f4a-4e6b-9c8d-1a2b3c4d5e6f";

fn running_job(job_id: &str) -> Value {
    json!({
        "project_id": PROJECT, "job_id": job_id, "job_type": "imsCreateImageByInstance", "image_name": "web",
        "phases": [
            {"after": "0s", "status": "RUNNING", "progress": [0.05, 0.95], "current_task": "CreateImageByInstanceTask"},
            {"after": "30s", "status": "SUCCESS", "image_id": SYSTEM_IMAGE}
        ]
    })
}

async fn wait_phase(client: &kube::Client, ns: &str, name: &str, phase: Phase, timeout: Duration) -> ImageJobStatus {
    wait_status(client, ns, name, timeout, &format!("{name} {phase:?}"), |s| s.phase == Some(phase)).await
}

/// 1. Today's status API carries no progress: the operator reads the
/// progress API, one request per poll, and shows progress and an ETA.
#[tokio::test]
async fn progress_comes_from_the_progress_api_one_request_per_poll() {
    let (client, ns, run) = setup("fid-progress").await;
    let job = "ff8080814dbd65d7014dbe0d84e20000";
    let sim = Sim::start(json!([running_job(job)]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let _op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &imagejob("web", &run, job, "creds")).await;

    let s = wait_status(&client, &ns.name, "web", WAIT, "progress between 0 and 100 and an ETA", |s| {
        s.phase == Some(Phase::Running)
            && s.progress.is_some_and(|p| p > 5 && p < 100)
            && s.estimated_completion_time.is_some()
    })
    .await;
    assert_eq!(s.current_task.as_deref(), Some("CreateImageByInstanceTask"));
    assert!(sim.api_requests(job, "progress").await >= 2);
    assert_eq!(sim.api_requests(job, "status").await, 0, "never both APIs for one poll");
    ns.cleanup().await;
}

/// 2. An OVA import names its images only in its sub-jobs: the system disk
/// image is `imageId`, both are in `images[]`, the ConfigMap hands both on.
#[tokio::test]
async fn an_ova_import_hands_on_its_system_and_data_image() {
    let (client, ns, run) = setup("fid-ova").await;
    let job = "ff8080814dbd65d7014dbe0d84e20001";
    let sub = |id: &str, t: &str, image: &str| {
        json!({"job_id": id, "job_type": t, "phases": [
            {"after": "0s", "status": "RUNNING"},
            {"after": "2s", "status": "SUCCESS", "image_id": image, "image_name": "appliance"}]})
    };
    let sim = Sim::start(json!([{
        "project_id": PROJECT, "job_id": job, "job_type": "imsImportOvaImageJob",
        "phases": [{"after": "0s", "status": "RUNNING", "progress": [0.1, 0.9]}, {"after": "3s", "status": "SUCCESS"}],
        "sub_jobs": [sub("ff8080814dbd65d7014dbe0d84e20002", "imsImportImageJob", SYSTEM_IMAGE),
                     sub("ff8080814dbd65d7014dbe0d84e20003", "imsImportDataImageJob", DATA_IMAGE)]
    }]));
    create_password_secret(&client, &ns.name, "creds").await;
    let _op = Operator::start(&sim, &run, &[]);
    let mut ij: ImageJob = imagejob("ova", &run, job, "creds");
    ij.spec.output_config_map_ref = serde_json::from_value(json!({"name": "ova-images"})).unwrap();
    create(&client, &ns.name, &ij).await;

    let s = wait_phase(&client, &ns.name, "ova", Phase::Succeeded, WAIT).await;
    assert_eq!(s.image_id.as_deref(), Some(SYSTEM_IMAGE));
    let images: Vec<(&str, &str)> = s.images.iter().map(|i| (i.id.as_str(), i.kind.as_str())).collect();
    assert_eq!(images, [(SYSTEM_IMAGE, "system"), (DATA_IMAGE, "data")]);
    assert!(s.images.iter().all(|i| i.sub_job_id.is_some()), "{:?}", s.images);
    let ready = condition(&s, "Ready").unwrap();
    assert!(ready.2.contains(SYSTEM_IMAGE), "Ready names the image: {}", ready.2);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let cm = eventually(Duration::from_secs(15), "ConfigMap ova-images", || async {
        cms.get_opt("ova-images").await.unwrap()
    })
    .await;
    let data = cm.data.unwrap();
    assert_eq!((data["imageId"].as_str(), data["dataImageIds"].as_str()), (SYSTEM_IMAGE, DATA_IMAGE));
    ns.cleanup().await;
}

/// 3. A FAIL whose reason is only in `entities.error` shows IMS's words.
#[tokio::test]
async fn a_failure_reason_in_entities_is_shown() {
    let (client, ns, run) = setup("fid-fail").await;
    let job = "ff8080814dbd65d7014dbe0d84e20004";
    let reason = "Failed to convert the image file.";
    let sim = Sim::start(json!([{
        "project_id": PROJECT, "job_id": job, "job_type": "imsImportImageJob",
        "phases": [{"after": "0s", "status": "RUNNING"},
                   {"after": "2s", "status": "FAIL", "error_code": "IMG.0014", "fail_reason": reason, "error_in": "entities",
                    "addition_error_code": "IMG.1047", "addition_error_msg": "The image file is damaged."}]
    }]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let _op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &imagejob("broken", &run, job, "creds")).await;

    let s = wait_phase(&client, &ns.name, "broken", Phase::Failed, WAIT).await;
    assert_eq!(s.error_code.as_deref(), Some("IMG.0014"));
    let shown = s.fail_reason.clone().unwrap_or_default();
    assert!(shown.contains(reason) && shown.contains("IMG.1047: The image file is damaged."), "{shown}");
    let failed = condition(&s, "Failed").unwrap();
    assert!(failed.2.starts_with(&format!("IMG.0014: {reason}")), "{}", failed.2);
    let event = wait_event(&client, &ns.name, "broken", "JobFailed", Duration::from_secs(15)).await;
    assert!(event.message.unwrap_or_default().contains(reason));
    ns.cleanup().await;
}

/// 4. Three `400 IMG.0023` before IMS answers: waited for like a young
/// job's 404 (seconds), never Stalled, then the job is followed to the end.
#[tokio::test]
async fn task_query_errors_before_the_first_answer_are_waited_for() {
    let (client, ns, run) = setup("fid-img0023").await;
    let job = "ff8080814dbd65d7014dbe0d84e20005";
    let mut def = running_job(job);
    def["faults"] = json!([{"fault": "error", "requests": "1-3", "code": "IMG.0023"}]);
    let sim = Sim::start(json!([def]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let _op = Operator::start(&sim, &run, &[]);
    let created = Instant::now();
    create(&client, &ns.name, &imagejob("young", &run, job, "creds")).await;

    let mut saw_waiting = false;
    let s = loop {
        let s = status(&client, &ns.name, "young").await.unwrap_or_default();
        let stalled = condition(&s, "Stalled").is_some_and(|c| c.0 == "True");
        assert!(!stalled, "a passing IMG.0023 must not stall the ImageJob: {:?}", s.conditions);
        saw_waiting |= condition(&s, "Reconciling").is_some_and(|c| c.2.contains("IMG.0023"));
        if s.phase == Some(Phase::Running) {
            break s;
        }
        assert!(created.elapsed() < Duration::from_secs(30), "not Running 30 s after creation: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(saw_waiting, "the IMG.0023 wait should show in Reconciling");
    assert!(s.progress.is_some());
    assert!(sim.requests(job).await >= 4, "three refusals, then the answer");
    ns.cleanup().await;
}

/// 5. `400 IMG.0030` (token invalid) with password credentials: one new
/// token, and the job is followed to the end.
#[tokio::test]
async fn an_invalid_token_is_renewed_once() {
    let (client, ns, run) = setup("fid-img0030").await;
    let job = "ff8080814dbd65d7014dbe0d84e20006";
    let mut def = succeeding_job(job, "0s", "4s");
    def["faults"] = json!([{"fault": "error", "requests": "2", "code": "IMG.0030"}]);
    let sim = Sim::start(json!([def]));
    create_password_secret(&client, &ns.name, "creds").await;
    let _op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &imagejob("renew", &run, job, "creds")).await;

    let s = wait_phase(&client, &ns.name, "renew", Phase::Succeeded, Duration::from_secs(30)).await;
    assert!(s.image_id.is_some());
    assert_eq!(sim.counter("/iam/token_requests").await, 2, "the first token, then one new one");
    ns.cleanup().await;
}

/// `auto` on a cloud without the progress API: one extra request for the
/// whole endpoint, then the status API, one request per poll.
#[tokio::test]
async fn auto_without_the_progress_api_costs_one_request_per_endpoint() {
    let (client, ns, run) = setup("fid-auto").await;
    let (a, b) = ("ff8080814dbd65d7014dbe0d84e20007", "ff8080814dbd65d7014dbe0d84e20008");
    let mut scenario = Sim::scenario(json!([succeeding_job(a, "0s", "6s"), succeeding_job(b, "0s", "6s")]));
    scenario["settings"]["progress_api"] = json!("absent");
    scenario["settings"]["status_api_progress"] = json!(true);
    let sim = Sim::start_with(scenario);
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let _op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &imagejob("first", &run, a, "creds")).await;
    wait_phase(&client, &ns.name, "first", Phase::Running, WAIT).await;
    create(&client, &ns.name, &imagejob("second", &run, b, "creds")).await;
    for name in ["first", "second"] {
        let s = wait_phase(&client, &ns.name, name, Phase::Succeeded, WAIT).await;
        assert_eq!(s.progress, Some(100));
    }
    let progress_api = sim.counter("/total/by_api/progress/requests").await;
    assert_eq!(progress_api, 1, "the progress API is asked once for the endpoint");
    let status_api = sim.counter("/total/by_api/status/requests").await;
    assert!(status_api >= 4, "then the status API answers: {status_api}");
    ns.cleanup().await;
}
