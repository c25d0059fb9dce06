//! `spec.outputConfigMapRef` end to end: the operator binary against the
//! local kube-apiserver and `ims-sim`. The ConfigMap appears with the
//! contract's keys once the job has Succeeded (not before, never for
//! Failed), is owned by the ImageJob, comes back after a deletion or an
//! edit without any cloud request, and a foreign ConfigMap of that name is
//! left alone and reported. Also: `kubectl explain` teaches the API.

mod common;

use std::time::{Duration, Instant};

use common::e2e::*;
use common::{AdmissionRefusal, TestNamespace, client, eventually, tool};
use imagejob_operator::crd::{ImageJob, Phase};
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const IMAGE: &str = "49e9447f-7dff-41e0-8036-f66fe5488c8b";

async fn setup(prefix: &str) -> (kube::Client, TestNamespace, String) {
    let client = client().await;
    install_imagejob_crd(&client).await;
    let ns = TestNamespace::new(&client, prefix).await;
    (client, ns, unique_label())
}

fn with_output(mut ij: ImageJob, name: &str) -> ImageJob {
    ij.spec.output_config_map_ref = serde_json::from_value(json!({"name": name})).unwrap();
    ij
}

/// Waits until `OutputReady` has this reason.
async fn wait_output(
    client: &kube::Client,
    ns: &str,
    name: &str,
    reason: &str,
    timeout: Duration,
) -> imagejob_operator::crd::ImageJobStatus {
    wait_status(client, ns, name, timeout, reason, |s| condition(s, "OutputReady").is_some_and(|c| c.1 == reason)).await
}

async fn events_for(client: &kube::Client, ns: &str, name: &str) -> Vec<Event> {
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    Api::<Event>::namespaced(client.clone(), ns).list(&lp).await.unwrap().items
}

async fn wait_event(client: &kube::Client, ns: &str, name: &str, reason: &str) -> Event {
    eventually(Duration::from_secs(15), &format!("Event {reason}"), || async {
        events_for(client, ns, name).await.into_iter().find(|e| e.reason.as_deref() == Some(reason))
    })
    .await
}

/// Appears only after Succeeded, with every key, owned by the ImageJob.
#[tokio::test]
async fn configmap_appears_after_success_with_the_contract_keys() {
    let (client, ns, run) = setup("out-success").await;
    let job = "ff8080814dbd65d7014dbe0d84de0001";
    let sim = Sim::start(json!([succeeding_job(job, "1s", "5s")]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let _op = Operator::start(&sim, &run, &[]);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    create(&client, &ns.name, &with_output(imagejob("build", &run, job, "creds"), "build-output")).await;

    // Not while the job runs. The operator writes the ConfigMap just before
    // the Succeeded status, so a status read a moment earlier may still say
    // Running: the proof is that the ConfigMap was created after IMS's end.
    let deadline = Instant::now() + WAIT;
    let mut saw_running_without_output = false;
    let done = loop {
        assert!(Instant::now() < deadline, "not Succeeded in {WAIT:?}");
        let s = status(&client, &ns.name, "build").await;
        if s.as_ref().is_some_and(|s| s.phase == Some(Phase::Succeeded)) {
            break s.unwrap();
        }
        let running = s.as_ref().is_some_and(|s| s.phase == Some(Phase::Running));
        saw_running_without_output |= running && cms.get_opt("build-output").await.unwrap().is_none();
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    assert!(saw_running_without_output, "the job should have been seen running, without a ConfigMap");

    let cm = eventually(Duration::from_secs(10), "the output ConfigMap", || async {
        cms.get_opt("build-output").await.unwrap()
    })
    .await;
    let created = cm.metadata.creation_timestamp.clone().expect("creationTimestamp").0;
    let ended = done.end_time.clone().expect("endTime of a Succeeded job").0;
    assert!(created >= ended, "ConfigMap created at {created}, before IMS ended the job at {ended}");
    let data = cm.data.clone().unwrap();
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, ["dataImageIds", "imageId", "imageName", "jobId", "jobType", "projectId", "region"]);
    assert_eq!(data["imageId"], IMAGE);
    assert_eq!(data["imageName"], "e2e-image");
    assert_eq!(data["jobId"], job);
    assert_eq!(data["jobType"], "imsCreateImageByInstance");
    assert_eq!(data["projectId"], PROJECT);
    assert_eq!(data["region"], "eu-de");
    let results: Value = serde_json::from_slice(&cm.binary_data.as_ref().unwrap()["results.json"].0).unwrap();
    assert_eq!(results, json!([{"imageId": IMAGE, "projectId": PROJECT, "status": "SUCCESS"}]));
    assert_eq!(results, serde_json::to_value(&done.results).unwrap(), "results.json is status.results");

    // Owned by the ImageJob: garbage-collected with it, found by its labels.
    let ij = Api::<ImageJob>::namespaced(client.clone(), &ns.name).get("build").await.unwrap();
    let owners = cm.owner_references();
    assert_eq!(owners.len(), 1, "{owners:?}");
    let o = &owners[0];
    assert_eq!(
        (o.api_version.as_str(), o.kind.as_str(), o.name.as_str()),
        ("ims.otc.io/v1alpha1", "ImageJob", "build")
    );
    assert_eq!(Some(&o.uid), ij.metadata.uid.as_ref());
    assert_eq!((o.controller, o.block_owner_deletion), (Some(true), Some(true)));
    assert_eq!(cm.labels()["app.kubernetes.io/managed-by"], "imagejob-operator");
    assert_eq!(cm.labels()["ims.otc.io/imagejob"], "build");
    let found = cms.list(&ListParams::default().labels("ims.otc.io/imagejob=build")).await.unwrap();
    assert_eq!(found.items.len(), 1);

    let s =
        wait_status(&client, &ns.name, "build", WAIT, "OutputReady", |s| condition(s, "OutputReady").is_some()).await;
    let (st, reason, message) = condition(&s, "OutputReady").unwrap();
    assert_eq!((st.as_str(), reason.as_str()), ("True", "OutputWritten"), "{message}");
    assert_eq!(condition(&s, "Ready").map(|c| c.0), Some("True".into()));
    let event = wait_event(&client, &ns.name, "build", "OutputWritten").await;
    assert_eq!(event.type_.as_deref(), Some("Normal"));
    ns.cleanup().await;
}

/// A Failed job never gets a ConfigMap, nor an OutputReady condition.
#[tokio::test]
async fn failed_job_gets_no_configmap() {
    let (client, ns, run) = setup("out-failed").await;
    let job = "ff8080814dbd65d7014dbe0d84de0002";
    let sim = Sim::start(json!([{
        "project_id": PROJECT, "job_id": job, "job_type": "imsCreateImageByInstance",
        "phases": [{"after": "0s", "status": "RUNNING", "progress": 0.3},
                   {"after": "2s", "status": "FAIL", "error_code": "IMG.0014", "fail_reason": "IaaS error"}]
    }]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let _op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &with_output(imagejob("doomed", &run, job, "creds"), "doomed-output")).await;
    let s = wait_status(&client, &ns.name, "doomed", WAIT, "Failed", |s| s.phase == Some(Phase::Failed)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(cms.get_opt("doomed-output").await.unwrap().is_none(), "a ConfigMap for a Failed job");
    let s = status(&client, &ns.name, "doomed").await.unwrap_or(s);
    assert_eq!(condition(&s, "OutputReady"), None, "{s:?}");
    ns.cleanup().await;
}

/// Deleted or edited by someone else, it is written again, with no cloud
/// request; keys others add are theirs and stay.
#[tokio::test]
async fn deleted_or_edited_configmap_is_restored_without_cloud_calls() {
    let (client, ns, run) = setup("out-restore").await;
    let job = "ff8080814dbd65d7014dbe0d84de0003";
    let sim = Sim::start(json!([succeeding_job(job, "0s", "2s")]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &with_output(imagejob("kept", &run, job, "creds"), "kept-output")).await;
    wait_status(&client, &ns.name, "kept", WAIT, "Succeeded", |s| s.phase == Some(Phase::Succeeded)).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let first = eventually(WAIT, "the output ConfigMap", || async { cms.get_opt("kept-output").await.unwrap() }).await;
    let requests = sim.requests(job).await;
    let patches = op.metric("imagejob_status_patches_total").await;

    // Deleted: back within seconds, same content, new object.
    cms.delete("kept-output", &DeleteParams::default()).await.unwrap();
    let deleted = Instant::now();
    let back = eventually(Duration::from_secs(20), "the ConfigMap restored", || async {
        cms.get_opt("kept-output").await.unwrap().filter(|cm| cm.metadata.uid != first.metadata.uid)
    })
    .await;
    println!("E2E-NUMBERS output-restore: deleted ConfigMap back after {:?}", deleted.elapsed());
    assert_eq!(back.data, first.data);
    assert_eq!(back.binary_data, first.binary_data);
    assert_eq!(back.owner_references(), first.owner_references());

    // Edited: our key restored, someone else's extra key kept.
    let edit = json!({"data": {"imageId": "tampered", "note": "added by hand"}});
    cms.patch("kept-output", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    let fixed = eventually(Duration::from_secs(20), "the edited key restored", || async {
        cms.get_opt("kept-output").await.unwrap().filter(|cm| cm.data.as_ref().unwrap()["imageId"] == IMAGE)
    })
    .await;
    assert_eq!(fixed.data.as_ref().unwrap()["note"], "added by hand");

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.requests(job).await, requests, "restoring the ConfigMap asked the cloud");
    assert_eq!(op.metric("imagejob_status_patches_total").await, patches, "restoring rewrote the status");
    ns.cleanup().await;
}

/// A ConfigMap of that name that the ImageJob does not control is left
/// exactly as it was; the ImageJob says so in OutputReady and an Event, and
/// looks again every minute: once it is gone, its own is written.
#[tokio::test]
async fn foreign_configmap_is_left_alone_and_reported() {
    let (client, ns, run) = setup("out-foreign").await;
    let job = "ff8080814dbd65d7014dbe0d84de0004";
    let sim = Sim::start(json!([succeeding_job(job, "0s", "2s")]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    // Even carrying the operator's label, it is not the ImageJob's.
    let foreign: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "taken", "labels": {"app.kubernetes.io/managed-by": "imagejob-operator"}},
        "data": {"imageId": "someone-elses-image", "owner": "team-b"}
    }))
    .unwrap();
    let before = cms.create(&PostParams::default(), &foreign).await.unwrap();
    let op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &with_output(imagejob("claimer", &run, job, "creds"), "taken")).await;

    let s = wait_output(&client, &ns.name, "claimer", "OutputConflict", WAIT).await;
    let conflicted = Instant::now();
    let (st, _, message) = condition(&s, "OutputReady").unwrap();
    assert_eq!(st, "False");
    assert!(message.contains("taken") && message.contains("not owned by this ImageJob"), "{message}");
    assert_eq!(s.phase, Some(Phase::Succeeded), "the job itself succeeded");
    assert_eq!(condition(&s, "Ready").map(|c| c.0), Some("True".into()));
    let event = wait_event(&client, &ns.name, "claimer", "OutputConflict").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));

    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = cms.get("taken").await.unwrap();
    assert_eq!(after.metadata.resource_version, before.metadata.resource_version, "the foreign ConfigMap was written");
    assert_eq!(after.data, before.data);
    assert!(after.owner_references().is_empty());

    // Looked at again every minute (a foreign ConfigMap is not watched):
    // once it is gone, the ImageJob's own appears within that minute, and
    // the wait in between costs no reconciles.
    let reconciles = op.metric("imagejob_reconciles_total").await;
    cms.delete("taken", &DeleteParams::default()).await.unwrap();
    let rechecked = wait_output(&client, &ns.name, "claimer", "OutputWritten", Duration::from_secs(70)).await;
    eprintln!("conflict rechecked {:.1}s after it was reported", conflicted.elapsed().as_secs_f64());
    assert_eq!(condition(&rechecked, "OutputReady").map(|c| c.0), Some("True".into()));
    assert_eq!(cms.get("taken").await.unwrap().data.unwrap()["imageId"], IMAGE);
    let spent = op.metric("imagejob_reconciles_total").await - reconciles;
    assert!(spent <= 3.0, "{spent} reconciles while waiting for the recheck: not once a minute");
    ns.cleanup().await;
}

/// `OutputFailed`: the API server refuses the ConfigMap (a
/// ValidatingAdmissionPolicy bound to this namespace), then accepts it
/// (the binding deleted). The write is retried with backoff (2 s doubling,
/// with jitter: at most 3 attempts in 8 s, where a hot loop makes dozens),
/// and the ConfigMap is written once allowed.
#[tokio::test]
async fn a_refused_configmap_write_is_retried_with_backoff() {
    let (client, ns, run) = setup("out-failed").await;
    let rule = json!({"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["configmaps"]});
    let expression = "!object.metadata.name.startsWith('blocked')";
    let message = "blocked ConfigMaps are refused by the test's policy";
    let refusal = AdmissionRefusal::install(&client, &ns.name, rule, expression, message, None).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    eventually(Duration::from_secs(30), "the policy to refuse a ConfigMap", || async {
        let probe: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "blocked-probe"}})).unwrap();
        match cms.create(&PostParams::default(), &probe).await {
            Ok(_) => {
                cms.delete("blocked-probe", &DeleteParams::default()).await.unwrap();
                None
            }
            Err(_) => Some(()),
        }
    })
    .await;

    let job = "ff8080814dbd65d7014dbe0d84de0007";
    let sim = Sim::start(json!([succeeding_job(job, "0s", "1s")]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let op = Operator::start(&sim, &run, &[]);
    create(&client, &ns.name, &with_output(imagejob("refused", &run, job, "creds"), "blocked-out")).await;
    let s = wait_output(&client, &ns.name, "refused", "OutputFailed", WAIT).await;
    assert!(condition(&s, "OutputReady").unwrap().2.contains("refused by the test's policy"), "{s:?}");
    assert_eq!(s.phase, Some(Phase::Succeeded), "the job itself succeeded");
    let failed = || async { op.metric_with("imagejob_reconciles_total", &[("result", "error")]).await };
    let first = failed().await;
    assert!(first >= 1.0, "the refused write is a failed reconcile");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let retries = failed().await - first;
    assert!((1.0..=3.0).contains(&retries), "{retries} attempts in 8 s: retried with backoff, not hot-looping");

    refusal.lift().await;
    let allowed = Instant::now();
    let s = wait_output(&client, &ns.name, "refused", "OutputWritten", Duration::from_secs(40)).await;
    eprintln!("written {:.1}s after the refusal ended", allowed.elapsed().as_secs_f64());
    assert_eq!(condition(&s, "OutputReady").map(|c| c.0), Some("True".into()));
    assert_eq!(cms.get("blocked-out").await.unwrap().data.unwrap()["imageId"], IMAGE);
    refusal.remove().await;
    ns.cleanup().await;
}

/// `kubectl explain` teaches the API: the status' nested fields carry
/// descriptions.
#[tokio::test]
async fn kubectl_explain_describes_nested_status_fields() {
    let (client, ns, _) = setup("out-explain").await;
    let explain = |path: &str| {
        let out = std::process::Command::new(tool("kubectl"))
            .args(["explain", path])
            .env("KUBECONFIG", common::kubeconfig_path())
            .output()
            .unwrap();
        assert!(out.status.success(), "kubectl explain {path}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    // The API server publishes a new CRD's schema to OpenAPI after a moment.
    let sub_jobs = eventually(Duration::from_secs(60), "explain to know the status fields", || async {
        let out = explain("imagejob.status.subJobs");
        out.contains("failReason").then_some(out)
    })
    .await;
    for field in ["jobId", "jobType", "status", "beginTime", "endTime", "errorCode", "failReason", "imageId"] {
        let line = sub_jobs.lines().position(|l| l.trim_start().starts_with(&format!("{field}\t")));
        let line = line.unwrap_or_else(|| panic!("{field} not listed:\n{sub_jobs}"));
        // A described field is followed by its text; an undescribed one by the next field.
        let next = sub_jobs.lines().nth(line + 1).unwrap_or_default();
        assert!(!next.trim().is_empty() && !next.contains('\t'), "{field} has no description:\n{sub_jobs}");
    }
    let status = explain("imagejob.status");
    for field in ["imageId", "errorCode", "failReason", "conditions", "results", "observedGeneration"] {
        let line = status.lines().position(|l| l.trim_start().starts_with(&format!("{field}\t"))).unwrap();
        let next = status.lines().nth(line + 1).unwrap_or_default();
        assert!(!next.trim().is_empty() && !next.contains('\t'), "{field} has no description:\n{status}");
    }
    let conditions = explain("imagejob.status.conditions");
    assert!(conditions.contains("Ready") && conditions.contains("OutputReady"), "{conditions}");
    ns.cleanup().await;
    drop(client);
}

/// `projectId` comes from the Secret when the spec names none, and
/// `region` from the spec (issue 25, item 5: both were only ever defaults).
#[tokio::test]
async fn configmap_takes_the_secrets_project_and_the_specs_region() {
    let (client, ns, run) = setup("out-origin").await;
    let job = "ff8080814dbd65d7014dbe0d84de0009";
    let sim = Sim::start(json!([succeeding_job(job, "0s", "2s")]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await; // carries projectId
    let _op = Operator::start(&sim, &run, &[]);
    let mut ij = with_output(imagejob("origin", &run, job, "creds"), "origin-output");
    ij.spec.project_id = None;
    ij.spec.region = Some("eu-nl".into());
    create(&client, &ns.name, &ij).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let cm = eventually(WAIT, "the output ConfigMap", || async { cms.get_opt("origin-output").await.unwrap() }).await;
    let data = cm.data.unwrap();
    assert_eq!((data["projectId"].as_str(), data["region"].as_str()), (PROJECT, "eu-nl"));
    ns.cleanup().await;
}
