//! End-to-end harness: the real `ims-sim` and `imagejob-operator` binaries,
//! run as child processes against the local cluster.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Client, CustomResourceExt};
use serde_json::{Value, json};

use imagejob_operator::crd::{ImageJob, ImageJobStatus};

use super::sim_proc::SimOptions;

pub const PROJECT: &str = "0b0a1e4b2c2d4e8f9a0b1c2d3e4f5a6b";
pub const AK: &str = "E2EACCESSKEY";
pub const SK: &str = "e2e-secret-key";

/// A running `ims-sim`, stopped on drop.
pub struct Sim {
    child: Child,
    pub url: String,
    /// IAM's base URL: `url`, unless IAM listens on its own (`start_split`).
    pub iam_url: String,
    http: reqwest::Client,
}

impl Sim {
    /// Starts the simulator with `jobs` (scenario job definitions) and
    /// the AK/SK pair and password user the tests use.
    pub fn start(jobs: Value) -> Self {
        Self::start_with(Self::scenario(jobs))
    }

    /// The scenario `start` uses, for tests that add settings to it.
    pub fn scenario(jobs: Value) -> Value {
        json!({
            "settings": {"clock": "first_query"},
            "projects": [{"id": PROJECT, "name": "eu-de_e2e"}],
            "users": [{"name": "e2e-user", "password": "e2e-password", "domain": "e2e-domain"}],
            "access_keys": [{"access": AK, "secret": SK}],
            "jobs": jobs,
        })
    }

    pub fn start_with(scenario: Value) -> Self {
        Self::start_on("127.0.0.1:0", scenario)
    }

    /// As `start_with`, listening on `listen` (a loopback address).
    pub fn start_on(listen: &str, scenario: Value) -> Self {
        let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
        std::fs::write(file.path(), scenario.to_string()).unwrap();
        let sim = Self::spawn_on(listen, file.path()).expect("start ims-sim");
        drop(file);
        sim
    }

    /// Starts ims-sim with a scenario file (read once at start).
    pub fn spawn(scenario: &Path) -> std::io::Result<Self> {
        Self::spawn_on("127.0.0.1:0", scenario)
    }

    pub fn spawn_on(listen: &str, scenario: &Path) -> std::io::Result<Self> {
        let options = SimOptions { listen, ..SimOptions::default() };
        Self::spawn_with(scenario, &options, None)
    }

    /// As `start_with`, IAM served only on a second port (`--iam-listen`):
    /// `iam_url` differs from `url`, which answers IAM paths with a 404.
    pub fn start_split(scenario: Value) -> Self {
        let options = SimOptions { iam_listen: Some("127.0.0.1:0"), ..SimOptions::default() };
        Self::launch(scenario, &options, None)
    }

    /// Starts ims-sim on a scenario as `options` say; `ca_pem` is what the
    /// admin client trusts (HTTPS).
    pub fn launch(scenario: Value, options: &SimOptions<'_>, ca_pem: Option<&[u8]>) -> Self {
        let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
        std::fs::write(file.path(), scenario.to_string()).unwrap();
        let sim = Self::spawn_with(file.path(), options, ca_pem).expect("start ims-sim");
        drop(file);
        sim
    }

    pub fn spawn_with(scenario: &Path, options: &SimOptions<'_>, ca_pem: Option<&[u8]>) -> std::io::Result<Self> {
        let spawned = super::sim_proc::spawn_ims_sim_with(scenario, options)?;
        let mut http = reqwest::Client::builder().pool_max_idle_per_host(64);
        if let Some(pem) = ca_pem {
            http = http.add_root_certificate(reqwest::Certificate::from_pem(pem).map_err(std::io::Error::other)?);
        }
        let http = http.build().map_err(std::io::Error::other)?;
        Ok(Sim { child: spawned.child, url: spawned.url, iam_url: spawned.iam_url, http })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Requests the simulator has answered for one job (all statuses);
    /// `None` when it knows no such job.
    pub async fn try_requests(&self, job_id: &str) -> Option<u64> {
        let url = format!("{}/admin/jobs/{PROJECT}/{job_id}/requests", self.url);
        let resp = self.http.get(&url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
        let body: Value = resp.json().await.unwrap();
        Some(body["requests"].as_u64().unwrap_or_else(|| panic!("no request count in {body}")))
    }

    /// Requests answered for one job through one API (`status`, `progress`).
    pub async fn api_requests(&self, job_id: &str, api: &str) -> u64 {
        let url = format!("{}/admin/jobs/{PROJECT}/{job_id}/requests", self.url);
        let body: Value = self.http.get(&url).send().await.unwrap().json().await.unwrap();
        body["by_api"][api]["requests"].as_u64().unwrap_or_else(|| panic!("no by_api.{api}.requests in {body}"))
    }

    /// Requests answered for one job; panics when the simulator knows no
    /// such job (a wrong ID must not read as "no requests").
    pub async fn requests(&self, job_id: &str) -> u64 {
        self.try_requests(job_id).await.unwrap_or_else(|| panic!("ims-sim knows no job {PROJECT}/{job_id}"))
    }

    /// `/admin/requests`: totals, per job, throttled, IAM and auth failures.
    pub async fn all_requests(&self) -> Value {
        self.try_all_requests().await.unwrap_or_else(|e| panic!("{e}"))
    }

    pub async fn try_all_requests(&self) -> Result<Value, String> {
        let url = format!("{}/admin/requests", self.url);
        let resp = self.http.get(&url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: {}", resp.status()));
        }
        resp.json().await.map_err(|e| format!("GET {url}: {e}"))
    }

    /// One number from `/admin/requests` by JSON pointer (`/total/requests`,
    /// `/unknown_jobs`, `/iam/token_requests`); panics when it is not there.
    pub async fn counter(&self, pointer: &str) -> u64 {
        let all = self.all_requests().await;
        all.pointer(pointer).and_then(Value::as_u64).unwrap_or_else(|| panic!("no {pointer} in {all}"))
    }

    /// Every IAM token the simulator issued (`/admin/tokens`).
    pub async fn issued_tokens(&self) -> Vec<String> {
        let url = format!("{}/admin/tokens", self.url);
        let body: Value = self.http.get(&url).send().await.unwrap().json().await.unwrap();
        let tokens = body["tokens"].as_array().unwrap_or_else(|| panic!("no tokens in {body}"));
        tokens.iter().map(|t| t["token"].as_str().expect("a token").to_owned()).collect()
    }

    /// Adds or replaces a job through the admin API.
    pub async fn put_job(&self, project: &str, job_id: &str, def: &Value) -> Result<(), String> {
        let url = format!("{}/admin/jobs/{project}/{job_id}", self.url);
        let resp = self.http.put(&url).body(def.to_string()).send().await.map_err(|e| format!("PUT {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("ims-sim refused job {job_id}: {}", resp.text().await.unwrap_or_default()));
        }
        Ok(())
    }

    /// Forgets a job (IMS answers 404 for it from now on).
    pub async fn delete_job(&self, job_id: &str) {
        let url = format!("{}/admin/jobs/{PROJECT}/{job_id}", self.url);
        let resp = self.http.delete(&url).send().await.unwrap_or_else(|e| panic!("DELETE {url}: {e}"));
        assert!(resp.status().is_success(), "DELETE {url}: {}", resp.status());
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(unused_imports)] // each test binary uses some
pub use super::operator::{Metrics, Operator, free_port, metric_sum};

/// Each test labels its ImageJobs with a unique `e2e-run` value and the
/// operator watches only those, so tests running side by side never see
/// each other's objects.
impl Operator {
    /// `run` against `sim` at a 1 s poll interval, watching `e2e-run=<run_label>`.
    pub fn start(sim: &Sim, run_label: &str, extra: &[&str]) -> Self {
        Self::start_with(sim, run_label, extra, &[])
    }

    /// As `start`, with extra environment variables (e.g. `RUST_LOG`).
    /// `--poll-interval 1s` unless `extra` names another.
    pub fn start_with(sim: &Sim, run_label: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Self::run_command(sim, run_label);
        if !extra.iter().any(|a| a.starts_with("--poll-interval")) {
            cmd.args(["--poll-interval", "1s"]);
        }
        cmd.args(extra).envs(env.iter().copied());
        Self::spawn(cmd, None).expect("start imagejob-operator")
    }

    /// `imagejob-operator run` against `sim`, watching `e2e-run=<run_label>`,
    /// with nothing else set (the defaults apply).
    pub fn run_command(sim: &Sim, run_label: &str) -> std::process::Command {
        let mut cmd = Self::binary();
        cmd.arg("run")
            .args(["--ims-endpoint", &sim.url, "--iam-endpoint", &sim.iam_url])
            .args(["--watch-label-selector", &format!("e2e-run={run_label}")]);
        cmd
    }
}

/// The cluster client, the ImageJob CRD installed, a fresh namespace and
/// a unique run label.
pub async fn setup(prefix: &str) -> (Client, super::TestNamespace, String) {
    let client = super::client().await;
    install_imagejob_crd(&client).await;
    let ns = super::TestNamespace::new(&client, prefix).await;
    (client, ns, unique_label())
}

pub fn unique_label() -> String {
    format!("{:08x}", rand::random::<u32>())
}

pub async fn install_imagejob_crd(client: &Client) {
    super::install_crd(client, &ImageJob::crd()).await;
}

/// The label by which a Secret opts in (the chart requires it).
pub const OPT_IN: (&str, &str) = ("ims.otc.io/credentials", "true");

pub async fn create_aksk_secret(client: &Client, ns: &str, name: &str, secret_key: &str) {
    create_key_secret(client, ns, name, AK, secret_key).await;
}

/// An opted-in AK/SK Secret for `access_key` (one the scenario may list).
pub async fn create_key_secret(client: &Client, ns: &str, name: &str, access_key: &str, secret_key: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {OPT_IN.0: OPT_IN.1}},
        "stringData": {"accessKey": access_key, "secretKey": secret_key, "projectId": PROJECT}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns).create(&PostParams::default(), &secret).await.unwrap();
}

pub async fn create_password_secret(client: &Client, ns: &str, name: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {OPT_IN.0: OPT_IN.1}},
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

/// Events (core/v1, which events.k8s.io writes too) about one object.
pub async fn events_about(client: &Client, ns: &str, name: &str) -> Vec<k8s_openapi::api::core::v1::Event> {
    let lp = kube::api::ListParams::default().fields(&format!("involvedObject.name={name}"));
    Api::namespaced(client.clone(), ns).list(&lp).await.unwrap().items
}

/// Waits for an Event with this reason about `name`; returns it.
pub async fn wait_event(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
    timeout: Duration,
) -> k8s_openapi::api::core::v1::Event {
    super::eventually(timeout, &format!("a {reason} Event about {name}"), || async {
        events_about(client, ns, name).await.into_iter().find(|e| e.reason.as_deref() == Some(reason))
    })
    .await
}

/// Sets `ims.otc.io/requestedAt` (what `kubectl annotate` does).
pub async fn request_poll(client: &Client, ns: &str, name: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {imagejob_operator::crd::REQUESTED_AT_ANNOTATION: value}}});
    Api::<ImageJob>::namespaced(client.clone(), ns)
        .patch(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .unwrap();
}

/// GET a raw path of the API server (the JWKS, the OIDC discovery document).
pub async fn raw_json(client: &Client, path: &str) -> Value {
    let request = http::Request::get(path).body(Vec::new()).unwrap();
    serde_json::from_str(&client.request_text(request).await.unwrap()).unwrap()
}

/// An ims-sim identity provider trusting this cluster's ServiceAccount
/// tokens (its issuer and JWKS, as an admin uploads them), mapping only
/// `subjects` (`system:serviceaccount:NS:NAME`).
pub async fn cluster_identity_provider(client: &Client, id: &str, audience: &str, subjects: &[String]) -> Value {
    let issuer = raw_json(client, "/.well-known/openid-configuration").await["issuer"].clone();
    json!({
        "id": id, "issuer": issuer, "client_id": audience,
        "jwks": raw_json(client, "/openid/v1/jwks").await,
        "rules": [{"remote": [{"type": "sub", "any_one_of": subjects}], "local": [{"user": {"name": "{0}"}}]}],
    })
}

pub async fn service_account(client: &Client, ns: &str, name: &str) {
    let sa: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::namespaced(client.clone(), ns).create(&PostParams::default(), &sa).await.unwrap();
}

/// An ImageJob on workload identity: the ServiceAccount `sa` of its namespace.
pub fn workload_imagejob(name: &str, run_label: &str, job_id: &str, sa: &str) -> ImageJob {
    serde_json::from_value(json!({
        "apiVersion": "ims.otc.io/v1alpha1", "kind": "ImageJob",
        "metadata": {"name": name, "labels": {"e2e-run": run_label}},
        "spec": {"jobId": job_id, "projectId": PROJECT, "serviceAccountRef": {"name": sa}, "pollInterval": "1s"}
    }))
    .unwrap()
}

/// What a hostile tenant leaves for the operator to watch (issue 21): 100
/// ConfigMaps of 900 KiB labelled as the operator's outputs, and `noisy`
/// ImageJobs `noisy-N` (job IDs `{job_prefix}NNNN`) carrying a 200 KiB
/// `ims.otc.io/requestedAt`, naming no Secret that exists.
pub async fn tenant_noise(client: &Client, ns: &str, run_label: &str, job_prefix: &str, noisy: usize) {
    use imagejob_operator::controller::output::{MANAGED_BY, MANAGED_BY_LABEL};
    use imagejob_operator::crd::REQUESTED_AT_ANNOTATION;
    use k8s_openapi::api::core::v1::ConfigMap;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let filler = "x".repeat(900 * 1024);
    for i in 0..100 {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": format!("fake-{i}"), "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
            "data": {"blob": filler}
        }))
        .unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    let huge = "7".repeat(200 * 1024);
    for i in 0..noisy {
        let mut ij = imagejob(&format!("noisy-{i}"), run_label, &format!("{job_prefix}{i:04}"), "none");
        ij.metadata.annotations = Some([(REQUESTED_AT_ANNOTATION.to_owned(), huge.clone())].into());
        create(client, ns, &ij).await;
    }
}
