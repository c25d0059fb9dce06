//! Helpers for the node tests (tests/node_*.rs): a cluster with one real
//! node and its registry (`tests/cluster/up --node`), a release pushed there
//! (`tests/cluster/release --push`: the image by digest, the chart as an OCI
//! artifact), the chart installed from the registry as users do, and ims-sim
//! running as a Deployment from the same image behind a Service.
//! Used as `#[path = "common/node.rs"] mod node;` next to `mod common;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

use crate::common::e2e::{AK, PROJECT, SK};
use crate::common::run;

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster");
pub const SIM_PORT: u16 = 8081;

fn stdout_last_line(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_owned()
}

/// Starts (or reuses) the cluster with its node; the admin kubeconfig.
pub fn up_node() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let started = Instant::now();
        let out = Command::new("bash").arg(format!("{SCRIPTS}/up")).arg("--node").output().expect("run up --node");
        let path = PathBuf::from(stdout_last_line(&out, "tests/cluster/up --node"));
        eprintln!("node: up --node took {:.1}s", started.elapsed().as_secs_f64());
        path
    })
    .clone()
}

/// A release in the node's registry, as `dist/release.json` describes it.
pub struct Published {
    pub dir: PathBuf,
    pub version: String,
    /// `<registry>/imagejob-operator@sha256:…`
    pub image: String,
    pub digest: String,
    /// `oci://<registry>/charts/imagejob-operator`
    pub chart: String,
    /// Built by `cargo auditable` (crates in the SBOM), not from test binaries.
    pub auditable: bool,
}

/// The release the node tests install: `IMAGEJOB_TEST_RELEASE` names a
/// folder `tests/cluster/release --push` wrote (CI: dist/, release
/// binaries); otherwise one is built and pushed now from this test build's
/// binaries.
pub fn published() -> &'static Published {
    static RELEASE: OnceLock<Published> = OnceLock::new();
    RELEASE.get_or_init(|| {
        up_node();
        let dir = match std::env::var("IMAGEJOB_TEST_RELEASE").ok().filter(|d| !d.is_empty()) {
            Some(d) => PathBuf::from(d),
            None => release_from_test_binaries(),
        };
        let text = std::fs::read_to_string(dir.join("release.json")).expect("release.json");
        let r: Value = serde_json::from_str(&text).unwrap();
        let field = |k: &str| r[k].as_str().unwrap_or_else(|| panic!("release.json: {k}")).to_owned();
        Published {
            version: field("version"),
            image: field("image"),
            digest: field("digest"),
            chart: field("chart"),
            auditable: r["auditable"].as_bool() == Some(true),
            dir,
        }
    })
}

fn release_from_test_binaries() -> PathBuf {
    let started = Instant::now();
    let bins = stripped_binaries();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("node-release");
    let out = Command::new("bash")
        .arg(format!("{SCRIPTS}/release"))
        .args(["--push", "--bin-dir"])
        .arg(bins.path())
        .arg("--out-dir")
        .arg(&dir)
        .output()
        .expect("run tests/cluster/release");
    let image = stdout_last_line(&out, "tests/cluster/release --push");
    eprintln!("node: release {image} built and pushed in {:.1}s", started.elapsed().as_secs_f64());
    dir
}

/// The operator image by digest in the node's registry.
pub fn image() -> String {
    published().image.clone()
}

/// This test build's binaries without debug info (a tenth of the size: the
/// image is written and pushed in seconds, not minutes).
pub fn stripped_binaries() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let bins = [
        env!("CARGO_BIN_EXE_imagejob-operator"),
        env!("CARGO_BIN_EXE_ims-sim"),
        env!("CARGO_BIN_EXE_kubectl-imagejob"),
    ];
    for bin in bins {
        let name = Path::new(bin).file_name().unwrap();
        let status = Command::new("strip").arg("-o").arg(dir.path().join(name)).arg(bin).status().expect("strip");
        assert!(status.success(), "strip {bin}");
    }
    dir
}

pub fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    let out = run(Command::new(crate::common::tool("kubectl")).arg("--kubeconfig").arg(up_node()).args(args), stdin);
    assert!(out.status.success(), "kubectl {args:?}:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn helm(args: &[&str]) -> Output {
    run(Command::new(crate::common::tool("helm")).arg("--kubeconfig").arg(up_node()).args(args), None)
}

pub fn helm_ok(args: &[&str]) -> String {
    stdout_ok(helm(args), &format!("helm {args:?}"))
}

/// stdout of a command that must have succeeded (else both outputs shown).
pub fn stdout_ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A namespace that enforces the `restricted` Pod Security Standard.
/// What each node test starts with: the node up, a client, a fresh
/// restricted namespace named after the test, and a Helm release name
/// unique to this run.
pub struct Release {
    pub client: Client,
    pub ns: String,
    pub run: String,
    pub release: String,
    /// Bind it (`cleanup: _cleanup`) to keep it to the test's end.
    pub cleanup: CleanupOnPanic,
}

pub async fn release_setup(prefix: &str) -> Release {
    up_node();
    let client = crate::common::client().await;
    let ns = restricted_namespace(&client, prefix).await;
    let run = crate::common::e2e::unique_label();
    let release = format!("ij-{run}");
    let cleanup = CleanupOnPanic { release: release.clone(), ns: ns.clone() };
    Release { client, ns, run, release, cleanup }
}

/// A failing node test still removes its Helm release and namespace (a
/// passing one calls `cleanup`): an operator left polling on the shared
/// node would load the tests after it.
pub struct CleanupOnPanic {
    release: String,
    ns: String,
}

impl Drop for CleanupOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = helm(&["uninstall", &self.release, "-n", &self.ns, "--timeout", "60s"]);
            let delete = ["delete", "namespace", &self.ns, "--wait=false"];
            let _ =
                run(Command::new(crate::common::tool("kubectl")).arg("--kubeconfig").arg(up_node()).args(delete), None);
        }
    }
}

pub async fn restricted_namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{:08x}", rand::random::<u32>());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name, "labels": {
        "imagejob-operator/test": "true",
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}}))
    .unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
    name
}

/// The simulator's scenario with the e2e AK/SK pair (as tests/common/e2e.rs).
pub fn scenario(jobs: Value, job_sets: Value) -> Value {
    json!({
        "settings": {"clock": "first_query"},
        "projects": [{"id": PROJECT, "name": "eu-de_e2e"}],
        "access_keys": [{"access": AK, "secret": SK}],
        "jobs": jobs,
        "job_sets": job_sets,
    })
}

/// The restricted-profile security settings both Deployments use.
fn restricted_container() -> Value {
    json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "runAsNonRoot": true,
           "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}})
}

/// ims-sim as a Deployment from the operator image behind a Service; returns
/// its base URL (the Service's ClusterIP, reached through kube-proxy both
/// from Pods and from this test).
pub async fn deploy_sim(client: &Client, ns: &str, scenario: &Value) -> String {
    let manifests = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ims-sim-scenario"},
         "data": {"scenario.json": scenario.to_string()}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ims-sim"}, "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "ims-sim"}},
            "template": {"metadata": {"labels": {"app": "ims-sim"}}, "spec": {
                "automountServiceAccountToken": false,
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "ims-sim", "image": image(), "imagePullPolicy": "IfNotPresent",
                    "command": ["/usr/local/bin/ims-sim"],
                    "args": ["--listen", format!("0.0.0.0:{SIM_PORT}"), "--scenario", "/scenario/scenario.json"],
                    "env": [{"name": "RUST_LOG", "value": "warn"}],
                    "ports": [{"name": "http", "containerPort": SIM_PORT}],
                    "readinessProbe": {"tcpSocket": {"port": SIM_PORT}, "periodSeconds": 1},
                    "securityContext": restricted_container(),
                    "volumeMounts": [{"name": "scenario", "mountPath": "/scenario"}],
                }],
                "volumes": [{"name": "scenario", "configMap": {"name": "ims-sim-scenario"}}],
            }},
        }},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ims-sim"}, "spec": {
            "selector": {"app": "ims-sim"}, "ports": [{"name": "http", "port": SIM_PORT, "targetPort": "http"}]}},
    ]});
    kubectl(&["apply", "-n", ns, "-f", "-"], Some(&manifests.to_string()));
    wait_ready_pods(client, ns, "app=ims-sim", 1, Duration::from_secs(120)).await;
    let svc = Api::<Service>::namespaced(client.clone(), ns).get("ims-sim").await.unwrap();
    let ip = svc.spec.unwrap().cluster_ip.unwrap();
    let url = format!("http://{ip}:{SIM_PORT}");
    // Ready Pod and a programmed Service are two things: wait for kube-proxy.
    crate::common::eventually(Duration::from_secs(30), "ims-sim reachable through its Service", || async {
        reqwest::get(format!("{url}/admin/requests")).await.ok().filter(|r| r.status().is_success())
    })
    .await;
    url
}

/// `helm install oci://…/imagejob-operator --version V` from the node's
/// registry (the chart's own image, pinned by digest, and pull policy),
/// talking to the sim, watching only ImageJobs labelled `e2e-run=<run_label>`
/// (the cluster is shared with other tests); `extra` adds `--set` values.
pub fn helm_install(release: &str, ns: &str, sim_url: &str, run_label: &str, extra: &[&str]) {
    let p = published();
    let mut args: Vec<String> =
        ["install", release, &p.chart, "--version", &p.version, "--plain-http", "-n", ns].map(str::to_owned).into();
    for set in [
        format!("imsEndpoint={sim_url}"),
        format!("iamEndpoint={sim_url}"),
        format!("watchLabelSelector=e2e-run={run_label}"),
        // The in-cluster ims-sim is plain http:// at a Service IP.
        "allowInsecureHttp=true".to_owned(),
    ]
    .into_iter()
    .chain(extra.iter().map(|s| s.to_string()))
    {
        args.push("--set".into());
        args.push(set);
    }
    helm_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Removes the release (its cluster-scoped RBAC too) and the namespace.
pub async fn cleanup(client: &Client, release: &str, ns: &str) {
    let _ = helm(&["uninstall", release, "-n", ns, "--wait", "--timeout", "60s"]);
    let _ = Api::<Namespace>::all(client.clone()).delete(ns, &Default::default()).await;
}

fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until `n` Pods matching `selector` are Ready; returns them.
pub async fn wait_ready_pods(client: &Client, ns: &str, selector: &str, n: usize, timeout: Duration) -> Vec<Pod> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let deadline = Instant::now() + timeout;
    loop {
        let list = pods.list(&ListParams::default().labels(selector)).await.unwrap();
        let ready: Vec<Pod> = list.items.iter().filter(|p| pod_ready(p)).cloned().collect();
        if ready.len() >= n {
            return ready;
        }
        if Instant::now() > deadline {
            let out = kubectl(&["describe", "pods", "-n", ns, "-l", selector], None);
            panic!("{n} Ready pods for {selector} not within {timeout:?}:\n{out}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Lease's holder, if any.
pub async fn lease_holder(client: &Client, ns: &str, lease: &str) -> Option<String> {
    let l = Api::<Lease>::namespaced(client.clone(), ns).get_opt(lease).await.ok()??;
    l.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// The operator Pods' selector for a release (the chart's selector labels).
pub fn operator_selector(release: &str) -> String {
    format!("app.kubernetes.io/name=imagejob-operator,app.kubernetes.io/instance={release}")
}

/// Requests the in-cluster ims-sim answered for one job.
pub async fn sim_requests(sim_url: &str, job_id: &str) -> u64 {
    let url = format!("{sim_url}/admin/jobs/{PROJECT}/{job_id}/requests");
    let body: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    body["requests"].as_u64().unwrap_or_else(|| panic!("{url}: no request count in {body}"))
}

/// How many of the in-cluster ims-sim's jobs it has answered at least one
/// request for (`/admin/requests`, `jobs`); panics when it does not say.
pub async fn sim_jobs_polled(sim_url: &str) -> usize {
    let url = format!("{sim_url}/admin/requests");
    let body: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    let jobs = body["jobs"].as_object().unwrap_or_else(|| panic!("{url}: no jobs in {body}"));
    jobs.values().filter(|j| j["requests"].as_u64().is_some_and(|n| n > 0)).count()
}

/// The container's cgroup v1 memory directory on this node (by container id).
pub fn memory_cgroup(pod: &Pod, container: &str) -> PathBuf {
    let id = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == container))
        .and_then(|c| c.container_id.clone())
        .expect("container id");
    let id = id.rsplit("://").next().unwrap().to_owned();
    let out = Command::new("find").args(["/sys/fs/cgroup/memory", "-type", "d", "-name", &id]).output().unwrap();
    let dir = String::from_utf8_lossy(&out.stdout).lines().next().map(PathBuf::from);
    dir.unwrap_or_else(|| panic!("memory cgroup of container {id}"))
}

pub fn read_u64(path: &Path) -> u64 {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().parse().unwrap()
}
