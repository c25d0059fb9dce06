//! End-to-end harness: the real `ims-sim` and `imagejob-operator` binaries,
//! run as child processes against the local cluster.

use std::net::TcpListener;
use std::process::{Child, Command};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Client, CustomResourceExt};
use serde_json::{Value, json};

use imagejob_operator::crd::{ImageJob, ImageJobStatus};

pub const PROJECT: &str = "0b0a1e4b2c2d4e8f9a0b1c2d3e4f5a6b";
pub const AK: &str = "E2EACCESSKEY";
pub const SK: &str = "e2e-secret-key";

/// A running `ims-sim`, stopped on drop.
pub struct Sim {
    child: Child,
    pub url: String,
    http: reqwest::Client,
}

impl Sim {
    /// Starts the simulator with `jobs` (scenario job definitions) and
    /// the AK/SK pair and password user the tests use.
    pub fn start(jobs: Value) -> Self {
        Self::start_with(json!({
            "settings": {"clock": "first_query"},
            "projects": [{"id": PROJECT, "name": "eu-de_e2e"}],
            "users": [{"name": "e2e-user", "password": "e2e-password", "domain": "e2e-domain"}],
            "access_keys": [{"access": AK, "secret": SK}],
            "jobs": jobs,
        }))
    }

    pub fn start_with(scenario: Value) -> Self {
        let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
        std::fs::write(file.path(), scenario.to_string()).unwrap();
        let (_, path) = file.keep().unwrap();
        let (child, url) = super::sim_proc::spawn_ims_sim(&path).expect("start ims-sim");
        Sim { child, url, http: reqwest::Client::new() }
    }

    /// Requests the simulator has answered for one job (all statuses).
    pub async fn requests(&self, job_id: &str) -> u64 {
        let url = format!("{}/admin/jobs/{PROJECT}/{job_id}/requests", self.url);
        let body: Value = self.http.get(url).send().await.unwrap().json().await.unwrap();
        body["requests"].as_u64().unwrap_or(0)
    }

    pub async fn all_requests(&self) -> Value {
        self.http.get(format!("{}/admin/requests", self.url)).send().await.unwrap().json().await.unwrap()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running operator, killed on drop. Each test labels its ImageJobs with
/// a unique `e2e-run` value and the operator watches only those, so tests
/// running side by side never see each other's objects.
pub struct Operator {
    child: Child,
    pub metrics_url: String,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Operator {
    pub fn start(sim: &Sim, run_label: &str, extra: &[&str]) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_imagejob-operator"))
            .arg("run")
            .args(["--ims-endpoint", &sim.url, "--iam-endpoint", &sim.url])
            .args(["--poll-interval", "1s", "--http-addr", &format!("127.0.0.1:{port}")])
            .args(["--watch-label-selector", &format!("e2e-run={run_label}")])
            .args(extra)
            .env("KUBECONFIG", super::kubeconfig_path())
            .env("RUST_LOG", std::env::var("E2E_OPERATOR_LOG").unwrap_or_else(|_| "warn".into()))
            .spawn()
            .expect("start imagejob-operator");
        Operator { child, metrics_url: format!("http://127.0.0.1:{port}") }
    }

    /// The value of one metric (summed over its label sets); NaN when the
    /// operator does not answer (it exited).
    pub async fn metric(&self, name: &str) -> f64 {
        let url = format!("{}/metrics", self.metrics_url);
        match reqwest::get(url).await {
            Ok(r) => metric_sum(&r.text().await.unwrap_or_default(), name),
            Err(_) => f64::NAN,
        }
    }

    pub async fn ready(&self) -> bool {
        match reqwest::get(format!("{}/readyz", self.metrics_url)).await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// True once the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().is_ok_and(|status| status.is_some())
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        self.child.wait().unwrap()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn unique_label() -> String {
    format!("{:08x}", rand::random::<u32>())
}

pub async fn install_imagejob_crd(client: &Client) {
    super::install_crd(client, &ImageJob::crd()).await;
}

pub async fn create_aksk_secret(client: &Client, ns: &str, name: &str, secret_key: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": {"accessKey": AK, "secretKey": secret_key, "projectId": PROJECT}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns).create(&PostParams::default(), &secret).await.unwrap();
}

pub async fn create_password_secret(client: &Client, ns: &str, name: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": {"username": "e2e-user", "password": "e2e-password", "domainName": "e2e-domain"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns).create(&PostParams::default(), &secret).await.unwrap();
}

pub fn imagejob(name: &str, run_label: &str, job_id: &str, secret: &str) -> ImageJob {
    serde_json::from_value(json!({
        "apiVersion": "ims.otc.io/v1alpha1",
        "kind": "ImageJob",
        "metadata": {"name": name, "labels": {"e2e-run": run_label}},
        "spec": {"jobId": job_id, "projectId": PROJECT, "credentialsRef": {"name": secret}, "pollInterval": "1s"}
    }))
    .unwrap()
}

pub async fn create(client: &Client, ns: &str, ij: &ImageJob) {
    Api::<ImageJob>::namespaced(client.clone(), ns).create(&PostParams::default(), ij).await.unwrap();
}

pub async fn status(client: &Client, ns: &str, name: &str) -> Option<ImageJobStatus> {
    Api::<ImageJob>::namespaced(client.clone(), ns).get(name).await.ok()?.status
}

pub fn condition(status: &ImageJobStatus, type_: &str) -> Option<(String, String, String)> {
    let c = status.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the ImageJob's status satisfies `pred`; returns that status.
pub async fn wait_status(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&ImageJobStatus) -> bool,
) -> ImageJobStatus {
    super::eventually(timeout, what, || async { status(client, ns, name).await.filter(|s| pred(s)) }).await
}

/// A scenario job: INIT (unless it starts running at once), then RUNNING
/// with rising progress, then SUCCESS.
pub fn succeeding_job(job_id: &str, running_at: &str, done_at: &str) -> Value {
    let mut phases = Vec::new();
    if running_at != "0s" {
        phases.push(json!({"after": "0s", "status": "INIT"}));
    }
    phases.push(json!({"after": running_at, "status": "RUNNING", "progress": [0.1, 0.9],
                       "current_task": "CreateImageByInstanceTask"}));
    phases.push(json!({"after": done_at, "status": "SUCCESS", "image_id": "49e9447f-7dff-41e0-8036-f66fe5488c8b",
        "results": [{"image_id": "49e9447f-7dff-41e0-8036-f66fe5488c8b", "project_id": PROJECT, "status": "success"}]}));
    json!({
        "project_id": PROJECT, "job_id": job_id, "job_type": "imsCreateImageByInstance",
        "image_name": "e2e-image", "phases": phases
    })
}
