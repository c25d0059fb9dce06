//! Shared helpers for end-to-end tests on the local cluster (tests/cluster/up).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// The admin kubeconfig: `KUBECONFIG` when set (as `.ci/run` does),
/// otherwise whatever `tests/cluster/up` prints (starting the cluster).
pub fn kubeconfig_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let up = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster/up");
        let out = Command::new("bash").arg(up).output().expect("run tests/cluster/up");
        assert!(out.status.success(), "tests/cluster/up failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(stdout.lines().last().expect("kubeconfig path").trim())
    })
    .clone()
}

/// A tool that tests/cluster/build puts into the cache (`helm`, `kubectl`):
/// the pinned version, so results do not depend on what is on PATH.
pub fn tool(name: &str) -> PathBuf {
    let cache = std::env::var_os("IMAGEJOB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/imagejob-operator"));
    let path = cache.join("bin").join(name);
    if !path.exists() {
        let build = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster/build");
        assert!(
            Command::new("bash").arg(build).status().expect("run tests/cluster/build").success(),
            "tests/cluster/build failed"
        );
    }
    path
}

pub async fn client() -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

/// A fresh namespace per test. The local cluster has no controller-manager,
/// so deleted namespaces stay Terminating: names are unique per run.
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let name = format!("{prefix}-{:08x}", rand::random::<u32>());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"imagejob-operator/test": "true"}}
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
        Self { name, client: client.clone() }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace (it stays Terminating; nothing waits for it).
    pub async fn cleanup(self) {
        let _ = Api::<Namespace>::all(self.client).delete(&self.name, &DeleteParams::default()).await;
    }
}

/// Applies a CRD by server-side apply and waits until it is Established.
pub async fn install_crd(client: &Client, crd: &CustomResourceDefinition) {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let name = crd.metadata.name.clone().unwrap();
    let pp = kube::api::PatchParams::apply("imagejob-operator-tests").force();
    api.patch(&name, &pp, &kube::api::Patch::Apply(crd)).await.expect("apply CRD");
    let established = kube::runtime::conditions::is_crd_established();
    let wait = kube::runtime::wait::await_condition(api, &name, established);
    tokio::time::timeout(Duration::from_secs(30), wait).await.expect("CRD established in 30s").unwrap();
}

/// Polls `check` until it returns Some or the timeout passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
/// A ValidatingAdmissionPolicy bound to one namespace: the API server
/// refuses the writes `rule` (one `resourceRules` entry) matches for which
/// the CEL `expression` is false, with `message` and, when given, `reason`
/// (`RequestEntityTooLarge` answers 413; the default is 403).
pub struct AdmissionRefusal {
    pub name: String,
    client: Client,
}

impl AdmissionRefusal {
    pub async fn install(
        client: &Client,
        namespace: &str,
        rule: serde_json::Value,
        expression: &str,
        message: &str,
        reason: Option<&str>,
    ) -> Self {
        use k8s_openapi::api::admissionregistration::v1::{
            ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
        };
        let name = format!("imagejob-test-{namespace}");
        let mut validation = serde_json::json!({"expression": expression, "message": message});
        if let Some(reason) = reason {
            validation["reason"] = reason.into();
        }
        let policy: ValidatingAdmissionPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [rule]}, "validations": [validation]}
        }))
        .unwrap();
        let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"],
                     "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}}
        }))
        .unwrap();
        Api::<ValidatingAdmissionPolicy>::all(client.clone()).create(&PostParams::default(), &policy).await.unwrap();
        Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
        Self { name, client: client.clone() }
    }

    /// Deletes the binding: the writes are accepted again.
    pub async fn lift(&self) {
        use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding;
        let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(self.client.clone());
        bindings.delete(&self.name, &DeleteParams::default()).await.unwrap();
    }

    /// Deletes the policy (and with it what the binding refers to).
    pub async fn remove(self) {
        use k8s_openapi::api::admissionregistration::v1::{
            ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
        };
        let dp = DeleteParams::default();
        let _ = Api::<ValidatingAdmissionPolicyBinding>::all(self.client.clone()).delete(&self.name, &dp).await;
        let _ = Api::<ValidatingAdmissionPolicy>::all(self.client.clone()).delete(&self.name, &dp).await;
    }
}

pub mod control_plane;
pub mod e2e;
pub mod leak;
pub mod operator;
pub mod sim_proc;
pub mod tls;

/// The Kubernetes version of the local cluster (tests/cluster/versions.env),
/// for `helm template/lint --kube-version`: results then do not depend on
/// helm's built-in default (v1.20 in a helm built without its Makefile's
/// flags, which the chart's kubeVersion refuses).
pub fn kube_version() -> String {
    let env = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster/versions.env")).unwrap();
    let line = env.lines().find_map(|l| l.strip_prefix("KUBE_VERSION=")).expect("KUBE_VERSION in versions.env");
    line.trim().to_owned()
}

/// The chart rendered by the pinned helm (`helm template RELEASE --namespace
/// NS --set ...`) as one JSON value per object.
pub fn helm_template<S: AsRef<str>>(release: &str, namespace: &str, sets: &[S]) -> Vec<serde_json::Value> {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/imagejob-operator");
    let mut cmd = Command::new(tool("helm"));
    cmd.args(["template", release, chart, "--namespace", namespace, "--kube-version", &kube_version()]);
    for s in sets {
        cmd.args(["--set", s.as_ref()]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    serde_yaml_ng::Deserializer::from_str(std::str::from_utf8(&out.stdout).unwrap())
        .map(|d| <serde_json::Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// Runs `cmd` to its end with `stdin` fed in (or none), capturing its output.
pub fn run(cmd: &mut Command, stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}
