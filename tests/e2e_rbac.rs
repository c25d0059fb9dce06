//! The chart's RBAC, proven on the local kube-apiserver (tests/cluster/up):
//! the ServiceAccount, (Cluster)Role and bindings that `helm template`
//! renders are applied for real, the operator binary runs with a token of
//! that ServiceAccount (TokenRequest API) and with the environment of the
//! chart's Deployment, and an ImageJob completes against `ims-sim`. Then the
//! same identity is shown to be refused what it does not need.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::e2e::*;
use common::{TestNamespace, client, tool};
use imagejob_operator::crd::{ImageJob, Phase};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

const JOB: &str = "ff8080814dbd65d7014dbe0d84db7001";
const WAIT: Duration = Duration::from_secs(90);

fn kubectl(args: &[&str], stdin: &str) {
    let mut child = Command::new(tool("kubectl"))
        .args(args)
        .env("KUBECONFIG", common::kubeconfig_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// One release's RBAC on the cluster. Cluster-scoped objects are deleted on
/// drop (namespaced ones go with the test namespaces).
struct Release {
    fullname: String,
    namespace: String,
    objects: Vec<Value>,
    cluster_scoped: Vec<String>,
}

impl Release {
    /// Renders the whole chart and applies exactly its ServiceAccount and
    /// RBAC objects, as `helm install` would create them.
    fn install(namespace: &str, sets: &[String]) -> Self {
        let release = format!("r{}", unique_label());
        let objects = common::helm_template(&release, namespace, sets);
        let rbac: Vec<&Value> = objects
            .iter()
            .filter(|o| {
                matches!(
                    o["kind"].as_str(),
                    Some(
                        "ServiceAccount"
                            | "ClusterRole"
                            | "ClusterRoleBinding"
                            | "Role"
                            | "RoleBinding"
                            | "ValidatingAdmissionPolicy"
                            | "ValidatingAdmissionPolicyBinding"
                    )
                )
            })
            .collect();
        let cluster_scoped = rbac
            .iter()
            .filter(|o| o["metadata"]["namespace"].is_null() && o["kind"] != "ServiceAccount")
            .map(|o| {
                format!("{}/{}", o["kind"].as_str().unwrap().to_lowercase(), o["metadata"]["name"].as_str().unwrap())
            })
            .collect();
        let yaml: String = rbac.iter().map(|o| format!("---\n{}", serde_yaml_ng::to_string(o).unwrap())).collect();
        let release = Release {
            fullname: format!("{release}-imagejob-operator"),
            namespace: namespace.to_owned(),
            objects,
            cluster_scoped,
        };
        kubectl(&["apply", "--server-side", "--field-manager=e2e-rbac", "-f", "-"], &yaml);
        release
    }

    fn deployment(&self) -> &Value {
        self.objects.iter().find(|o| o["kind"] == "Deployment").expect("a Deployment")
    }

    /// A kubeconfig that authenticates as the chart's ServiceAccount with a
    /// token from the TokenRequest API (as a pod's projected token would).
    async fn service_account_kubeconfig(&self, admin: &kube::Client) -> tempfile::NamedTempFile {
        let sa = self.deployment()["spec"]["template"]["spec"]["serviceAccountName"].as_str().unwrap();
        let request: TokenRequest =
            serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}})).unwrap();
        let token = Api::<ServiceAccount>::namespaced(admin.clone(), &self.namespace)
            .create_token_request(sa, &PostParams::default(), &request)
            .await
            .expect("TokenRequest for the chart's ServiceAccount")
            .status
            .expect("token")
            .token;
        let admin_cfg: Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(common::kubeconfig_path()).unwrap()).unwrap();
        let cluster = admin_cfg["clusters"][0]["cluster"].clone();
        let cfg = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "local", "cluster": cluster}],
            "users": [{"name": sa, "user": {"token": token}}],
            "contexts": [{"name": sa, "context": {"cluster": "local", "user": sa, "namespace": self.namespace}}],
            "current-context": sa,
        });
        let mut file = tempfile::Builder::new().suffix(".kubeconfig").tempfile().unwrap();
        file.write_all(serde_yaml_ng::to_string(&cfg).unwrap().as_bytes()).unwrap();
        file
    }

    /// Runs the operator binary as the Deployment's container would: its
    /// args and environment (downward API values filled in), with the
    /// ServiceAccount's kubeconfig, and a free loopback port for HTTP.
    fn start_operator(&self, kubeconfig: &Path, pod_name: &str) -> RunningOperator {
        self.start_operator_with(kubeconfig, pod_name, &[])
    }

    /// As `start_operator`, with some of the Deployment's environment
    /// variables set otherwise (`overrides`).
    fn start_operator_with(&self, kubeconfig: &Path, pod_name: &str, overrides: &[(&str, &str)]) -> RunningOperator {
        let container = &self.deployment()["spec"]["template"]["spec"]["containers"][0];
        let mut env = BTreeMap::new();
        for e in container["env"].as_array().unwrap() {
            let value = match (&e["value"], e["valueFrom"]["fieldRef"]["fieldPath"].as_str()) {
                (Value::String(v), _) => v.clone(),
                (_, Some("metadata.name")) => pod_name.to_owned(),
                (_, Some("metadata.namespace")) => self.namespace.clone(),
                other => panic!("unexpected env source {other:?}"),
            };
            env.insert(e["name"].as_str().unwrap().to_owned(), value);
        }
        for (name, value) in overrides {
            assert!(env.insert((*name).to_owned(), (*value).to_owned()).is_some(), "the chart sets no {name}");
        }
        let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        // The harness adds --http-addr on a free loopback port: the only
        // departure from the chart, whose 0.0.0.0:8080 would collide with
        // tests running side by side.
        let mut cmd = Operator::binary();
        cmd.args(&args).env_clear().envs(&env).env("KUBECONFIG", kubeconfig);
        let op = Operator::spawn(cmd, None).expect("start imagejob-operator");
        RunningOperator { op, env }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        for obj in &self.cluster_scoped {
            let _ = Command::new(tool("kubectl"))
                .args(["delete", obj, "--ignore-not-found", "--wait=false"])
                .env("KUBECONFIG", common::kubeconfig_path())
                .output();
        }
    }
}

/// The operator as the chart's Deployment runs it, and that environment.
struct RunningOperator {
    op: Operator,
    env: BTreeMap<String, String>,
}

impl RunningOperator {
    /// Stops the operator (SIGTERM, clean exit) and returns what it logged.
    fn stop(&mut self) -> String {
        let status = self.op.terminate();
        assert!(status.success(), "the operator should exit cleanly on SIGTERM: {status}");
        self.op.log()
    }
}

async fn client_from(kubeconfig: &Path) -> kube::Client {
    let kc = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

/// SelfSubjectAccessReview: may the client's identity do this?
async fn can(
    client: &kube::Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> bool {
    let (resource, subresource) = resource.split_once('/').map_or((resource, None), |(r, s)| (r, Some(s)));
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({
        "spec": {"resourceAttributes": {
            "verb": verb, "group": group, "resource": resource, "subresource": subresource,
            "namespace": namespace, "name": name,
        }}
    }))
    .unwrap();
    let answer =
        Api::<SelfSubjectAccessReview>::all(client.clone()).create(&PostParams::default(), &review).await.unwrap();
    answer.status.expect("SSAR status").allowed
}

fn is_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(ref e)) if e.code == 403)
}

/// Runs one ImageJob to Succeeded with the operator running as the chart's
/// ServiceAccount; asserts everything the operator did needed no other right.
async fn job_completes_as_the_service_account(release: &Release, jobs_ns: &str, run: &str, sim: &Sim) {
    let admin = client().await;
    let kubeconfig = release.service_account_kubeconfig(&admin).await;
    create_aksk_secret(&admin, jobs_ns, "creds", SK).await;
    // With an output ConfigMap, so that its RBAC is exercised too.
    let mut ij = imagejob("build", run, JOB, "creds");
    ij.spec.output_config_map_ref = serde_json::from_value(json!({"name": "build-output"})).unwrap();
    create(&admin, jobs_ns, &ij).await;
    let pod_name = format!("{}-7d4b9c-x2x4q", release.fullname);
    let mut op = release.start_operator(kubeconfig.path(), &pod_name);
    assert_eq!(op.env["LEADER_ELECT"], "true", "these tests run the chart's default, leader election on");

    let done = wait_status(&admin, jobs_ns, "build", WAIT, "Succeeded as the chart's ServiceAccount", |s| {
        s.phase.is_some_and(|p| p.is_finished())
    })
    .await;
    assert_eq!(done.phase, Some(Phase::Succeeded), "{done:?}");
    assert_eq!(condition(&done, "Ready").map(|c| c.0), Some("True".into()));
    assert!(sim.requests(JOB).await >= 2, "the job was polled through ims-sim");
    let cms = Api::<ConfigMap>::namespaced(admin.clone(), jobs_ns);
    let cm = common::eventually(Duration::from_secs(20), "the output ConfigMap", || async {
        cms.get_opt("build-output").await.unwrap()
    })
    .await;
    assert_eq!(cm.data.unwrap()["jobId"], JOB);
    // Deleted, it is restored through the ConfigMap watch (list/watch/create).
    cms.delete("build-output", &DeleteParams::default()).await.unwrap();
    common::eventually(Duration::from_secs(20), "the output ConfigMap restored", || async {
        cms.get_opt("build-output").await.unwrap()
    })
    .await;
    let done = wait_status(&admin, jobs_ns, "build", WAIT, "OutputReady", |s| {
        s.conditions.iter().any(|c| c.type_ == "OutputReady")
    })
    .await;
    assert_eq!(condition(&done, "OutputReady").map(|c| c.0), Some("True".into()), "{done:?}");

    // Leader election used only the Lease the Role names, in its namespace.
    let lease = Api::<Lease>::namespaced(admin.clone(), &release.namespace)
        .get(&op.env["LEADER_ELECTION_LEASE"])
        .await
        .unwrap();
    assert_eq!(lease.spec.and_then(|s| s.holder_identity).as_deref(), Some(pod_name.as_str()));

    // Events were published (events.k8s.io create/patch).
    let events = Api::<Event>::namespaced(admin.clone(), jobs_ns).list(&ListParams::default()).await.unwrap();
    let ours: Vec<_> = events
        .items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("build"))
        .filter_map(|e| e.reason.clone())
        .collect();
    assert!(ours.contains(&"Succeeded".to_owned()), "events for the ImageJob: {ours:?}");

    let metrics = op.op.metrics().await;
    assert!(metrics.value_with("imagejob_reconciles_total", &[("result", "ok")]) >= 1.0, "{}", metrics.0);
    let errors = metrics.value_with("imagejob_reconciles_total", &[("result", "error")]);
    assert_eq!(errors, 0.0, "Kubernetes API errors:\n{}", metrics.0);
    assert!(metrics.value("imagejob_status_patches_total") >= 2.0, "{}", metrics.0);
    let log = op.stop();
    let lower = log.to_lowercase();
    assert!(!lower.contains("forbidden") && !lower.contains(" 403"), "the operator was refused something:\n{log}");
    assert!(log.contains("acquired the leader Lease"), "{log}");
}

/// ClusterRole variant (watchNamespace empty): the operator in one namespace
/// completes a job in another.
#[tokio::test]
async fn cluster_role_lets_the_operator_complete_a_job() {
    let admin = client().await;
    install_imagejob_crd(&admin).await;
    let op_ns = TestNamespace::new(&admin, "rbac-op").await;
    let jobs_ns = TestNamespace::new(&admin, "rbac-jobs").await;
    let run = unique_label();
    let sim = Sim::start(json!([succeeding_job(JOB, "1s", "4s")]));
    let release = Release::install(
        &op_ns.name,
        &[
            format!("imsEndpoint={}", sim.url),
            format!("iamEndpoint={}", sim.url),
            "pollInterval=1s".into(),
            "outputs.enabled=true".into(),
            format!("watchLabelSelector=e2e-run={run}"),
        ],
    );
    assert!(release.objects.iter().any(|o| o["kind"] == "ClusterRoleBinding"), "ClusterRole variant");
    job_completes_as_the_service_account(&release, &jobs_ns.name, &run, &sim).await;
    op_ns.cleanup().await;
    jobs_ns.cleanup().await;
}

/// The same identity is refused what the operator never does: writing
/// Secrets, updating or deleting ConfigMaps, reading Pods, editing or
/// deleting ImageJobs, touching other Leases. ConfigMaps: only what
/// `spec.outputConfigMapRef` needs (get, list, watch, create, patch).
#[tokio::test]
async fn cluster_role_refuses_everything_else() {
    let admin = client().await;
    install_imagejob_crd(&admin).await;
    let op_ns = TestNamespace::new(&admin, "rbac-deny").await;
    let other = TestNamespace::new(&admin, "rbac-other").await;
    let release = Release::install(&op_ns.name, &["outputs.enabled=true".into()]);
    let kubeconfig = release.service_account_kubeconfig(&admin).await;
    let sa = client_from(kubeconfig.path()).await;
    let o = Some(other.name.as_str());
    let lease = release.fullname.as_str();
    let opns = Some(release.namespace.as_str());

    // What it needs (also proves the token authenticates as the ServiceAccount).
    for (verb, group, resource, ns, name) in [
        ("watch", "ims.otc.io", "imagejobs", None, None),
        ("patch", "ims.otc.io", "imagejobs/status", o, Some("x")),
        ("get", "", "secrets", o, Some("creds")),
        ("list", "", "secrets", None, None),
        ("create", "events.k8s.io", "events", o, None),
        ("get", "", "configmaps", o, Some("build-output")),
        ("list", "", "configmaps", None, None),
        ("watch", "", "configmaps", None, None),
        ("create", "", "configmaps", o, None),
        ("patch", "", "configmaps", o, Some("build-output")),
        ("update", "ims.otc.io", "imagejobs/finalizers", o, Some("x")),
        ("create", "coordination.k8s.io", "leases", opns, None),
        ("patch", "coordination.k8s.io", "leases", opns, Some(lease)),
    ] {
        assert!(
            can(&sa, verb, group, resource, ns, name).await,
            "should be allowed: {verb} {group}/{resource} in {ns:?} {name:?}"
        );
    }
    // What it must not do.
    for (verb, group, resource, ns, name) in [
        ("create", "", "secrets", o, None),
        ("update", "", "secrets", o, Some("creds")),
        ("create", "", "events", o, None),
        ("patch", "events.k8s.io", "events", o, Some("x")),
        ("delete", "", "secrets", o, Some("creds")),
        ("update", "", "configmaps", o, Some("build-output")),
        ("delete", "", "configmaps", o, Some("build-output")),
        ("deletecollection", "", "configmaps", o, None),
        ("list", "", "pods", None, None),
        ("create", "", "pods", o, None),
        ("create", "ims.otc.io", "imagejobs", o, None),
        ("update", "ims.otc.io", "imagejobs", o, Some("x")),
        ("patch", "ims.otc.io", "imagejobs", o, Some("x")),
        ("delete", "ims.otc.io", "imagejobs", o, Some("x")),
        ("update", "ims.otc.io", "imagejobs/status", o, Some("x")),
        ("get", "coordination.k8s.io", "leases", opns, Some("someone-elses-lease")),
        ("patch", "coordination.k8s.io", "leases", o, Some(lease)),
        ("delete", "coordination.k8s.io", "leases", opns, Some(lease)),
        ("list", "coordination.k8s.io", "leases", opns, None),
        ("create", "rbac.authorization.k8s.io", "rolebindings", opns, None),
        ("impersonate", "", "serviceaccounts", opns, None),
        ("create", "", "serviceaccounts/token", opns, None),
    ] {
        assert!(
            !can(&sa, verb, group, resource, ns, name).await,
            "should be refused: {verb} {group}/{resource} in {ns:?} {name:?}"
        );
    }

    // And directly: the API server answers 403.
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "planted"}, "stringData": {"a": "b"}})).unwrap();
    assert!(is_forbidden(
        Api::<Secret>::namespaced(sa.clone(), &other.name).create(&PostParams::default(), &secret).await
    ));
    let ca = Api::<ConfigMap>::namespaced(sa.clone(), &other.name);
    assert!(is_forbidden(ca.delete("kube-root-ca.crt", &DeleteParams::default()).await));
    create_aksk_secret(&admin, &other.name, "creds", SK).await;
    create(&admin, &other.name, &imagejob("victim", "none", JOB, "creds")).await;
    let ijs = Api::<ImageJob>::namespaced(sa.clone(), &other.name);
    assert!(ijs.get("victim").await.is_ok(), "reading ImageJobs is allowed");
    let spec_patch = json!({"spec": {"jobId": "ff8080814dbd65d7014dbe0d84dbffff"}});
    assert!(is_forbidden(ijs.patch("victim", &PatchParams::default(), &Patch::Merge(&spec_patch)).await));
    assert!(is_forbidden(ijs.delete("victim", &DeleteParams::default()).await));
    op_ns.cleanup().await;
    other.cleanup().await;
}

/// Role variant (watchNamespace set): the operator completes a job in the
/// watched namespace, and its identity cannot read Secrets anywhere else.
#[tokio::test]
async fn namespaced_role_confines_the_operator_to_its_namespace() {
    let admin = client().await;
    install_imagejob_crd(&admin).await;
    let op_ns = TestNamespace::new(&admin, "rbac-nsop").await;
    let watched = TestNamespace::new(&admin, "rbac-watched").await;
    let other = TestNamespace::new(&admin, "rbac-elsewhere").await;
    let run = unique_label();
    let sim = Sim::start(json!([succeeding_job(JOB, "1s", "4s")]));
    let release = Release::install(
        &op_ns.name,
        &[
            format!("imsEndpoint={}", sim.url),
            format!("iamEndpoint={}", sim.url),
            "pollInterval=1s".into(),
            "outputs.enabled=true".into(),
            format!("watchNamespace={}", watched.name),
            format!("watchLabelSelector=e2e-run={run}"),
        ],
    );
    let kinds: Vec<_> = release.objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert!(!kinds.contains(&"ClusterRoleBinding"), "Role variant has no ClusterRoleBinding: {kinds:?}");
    job_completes_as_the_service_account(&release, &watched.name, &run, &sim).await;

    let kubeconfig = release.service_account_kubeconfig(&admin).await;
    let sa = client_from(kubeconfig.path()).await;
    create_aksk_secret(&admin, &other.name, "creds", SK).await;
    assert!(can(&sa, "get", "", "secrets", Some(&watched.name), Some("creds")).await);
    assert!(!can(&sa, "get", "", "secrets", Some(&other.name), Some("creds")).await);
    assert!(!can(&sa, "list", "", "secrets", None, None).await, "cluster-wide Secret list");
    assert!(!can(&sa, "list", "ims.otc.io", "imagejobs", Some(&other.name), None).await);
    assert!(can(&sa, "create", "", "configmaps", Some(&watched.name), None).await);
    assert!(!can(&sa, "create", "", "configmaps", Some(&other.name), None).await);
    assert!(!can(&sa, "list", "", "configmaps", None, None).await, "cluster-wide ConfigMap list");
    assert!(!can(&sa, "patch", "ims.otc.io", "imagejobs/status", Some(&other.name), Some("x")).await);
    assert!(is_forbidden(Api::<Secret>::namespaced(sa.clone(), &other.name).get("creds").await));
    assert!(is_forbidden(Api::<Secret>::all(sa.clone()).list(&ListParams::default()).await));
    assert!(Api::<Secret>::namespaced(sa.clone(), &watched.name).get("creds").await.is_ok());
    op_ns.cleanup().await;
    watched.cleanup().await;
    other.cleanup().await;
}

/// Least privilege by default: without outputs the operator may not touch a
/// ConfigMap at all. With outputs it may, but the chart's
/// ValidatingAdmissionPolicy lets its ServiceAccount write only ConfigMaps
/// that carry its label and an ImageJob as controller: patching a
/// `coredns` ConfigMap with a stolen token is refused (issue 21, case 2).
#[tokio::test]
async fn configmap_writes_are_off_by_default_and_fenced_when_on() {
    let admin = client().await;
    install_imagejob_crd(&admin).await;
    let op_ns = TestNamespace::new(&admin, "rbac-cmfence").await;
    let victim_ns = TestNamespace::new(&admin, "rbac-kube-system").await;
    let o = Some(victim_ns.name.as_str());

    let default = Release::install(&op_ns.name, &[]);
    assert!(!default.objects.iter().any(|r| r["kind"] == "ValidatingAdmissionPolicy"), "no policy without outputs");
    let sa = client_from(default.service_account_kubeconfig(&admin).await.path()).await;
    for verb in ["get", "list", "watch", "create", "patch", "update", "delete"] {
        assert!(!can(&sa, verb, "", "configmaps", o, None).await, "default chart: {verb} configmaps must be refused");
    }
    drop(default);

    let release = Release::install(&op_ns.name, &["outputs.enabled=true".into()]);
    assert!(release.objects.iter().any(|r| r["kind"] == "ValidatingAdmissionPolicy"));
    let sa = client_from(release.service_account_kubeconfig(&admin).await.path()).await;
    let admin_cms = Api::<ConfigMap>::namespaced(admin.clone(), &victim_ns.name);
    let coredns: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "coredns"}, "data": {"Corefile": ".:53 { forward . 1.1.1.1 }"}}),
    )
    .unwrap();
    admin_cms.create(&PostParams::default(), &coredns).await.unwrap();
    create_aksk_secret(&admin, &victim_ns.name, "creds", SK).await;
    let owner = Api::<ImageJob>::namespaced(admin.clone(), &victim_ns.name)
        .create(&PostParams::default(), &imagejob("owner", "none", JOB, "creds"))
        .await
        .unwrap();
    let owner_ref = json!([{"apiVersion": "ims.otc.io/v1alpha1", "kind": "ImageJob", "name": "owner",
        "uid": owner.metadata.uid.unwrap(), "controller": true}]);
    let cms = Api::<ConfigMap>::namespaced(sa.clone(), &victim_ns.name);
    // A new policy is enforced within a second or so: probe with a harmless
    // unlabelled ConfigMap until it is refused.
    let plain = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "planted"}, "data": {"a": "b"}});
    let refused = common::eventually(Duration::from_secs(30), "the policy to be enforced", || async {
        match cms.patch("planted", &PatchParams::apply("stolen"), &Patch::Apply(&plain)).await {
            Err(kube::Error::Api(e)) if e.code == 422 || e.code == 403 => Some(e.message),
            _ => {
                let _ = admin_cms.delete("planted", &DeleteParams::default()).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                None
            }
        }
    })
    .await;
    assert!(refused.contains("labelled app.kubernetes.io/managed-by=imagejob-operator"), "{refused}");
    let takeover = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns",
        "labels": {"app.kubernetes.io/managed-by": "imagejob-operator"}, "ownerReferences": owner_ref},
        "data": {"Corefile": ".:53 { forward . 203.0.113.1 }"}});
    let err = cms.patch("coredns", &PatchParams::apply("stolen").force(), &Patch::Apply(&takeover)).await.unwrap_err();
    let kube::Error::Api(e) = err else { panic!("{err:?}") };
    assert!(e.message.contains("may not take over a ConfigMap that was not its own"), "{}", e.message);
    assert_eq!(admin_cms.get("coredns").await.unwrap().data.unwrap()["Corefile"], ".:53 { forward . 1.1.1.1 }");
    // What outputs need still works: labelled, controlled by an ImageJob.
    let ours = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner-output",
        "labels": {"app.kubernetes.io/managed-by": "imagejob-operator"}, "ownerReferences": owner_ref},
        "data": {"imageId": "x"}});
    cms.patch("owner-output", &PatchParams::apply("imagejob-operator"), &Patch::Apply(&ours)).await.unwrap();
    op_ns.cleanup().await;
    victim_ns.cleanup().await;
}

/// The keyless mode (workload identity on, `secretCredentials=false`): the
/// operator, as the chart's ServiceAccount, completes an ImageJob on a
/// ServiceAccount token of the job's namespace, may mint such tokens, and
/// may not read a single Secret.
#[tokio::test]
async fn keyless_mode_completes_a_job_without_any_secret_read() {
    let admin = client().await;
    install_imagejob_crd(&admin).await;
    let op_ns = TestNamespace::new(&admin, "rbac-keyless-op").await;
    let jobs_ns = TestNamespace::new(&admin, "rbac-keyless-jobs").await;
    let run = unique_label();
    let job = "ff8080814dbd65d7014dbe0d84db7041";
    let mut scenario = Sim::scenario(json!([succeeding_job(job, "1s", "4s")]));
    let subject = format!("system:serviceaccount:{}:builder", jobs_ns.name);
    scenario["identity_providers"] = json!([cluster_identity_provider(&admin, "k8s", "iam", &[subject]).await]);
    let sim = Sim::start_with(scenario);
    service_account(&admin, &jobs_ns.name, "builder").await;
    let keyless = ["workloadIdentity.idpId=k8s", "workloadIdentity.audience=iam", "secretCredentials=false"];
    let mut values = vec![format!("imsEndpoint={0}", sim.url), format!("iamEndpoint={0}", sim.url)];
    values.extend(keyless.iter().map(|v| v.to_string()));
    values.extend(["pollInterval=1s".to_owned(), format!("watchLabelSelector=e2e-run={run}")]);
    let release = Release::install(&op_ns.name, &values);
    let kubeconfig = release.service_account_kubeconfig(&admin).await;
    let as_operator = client_from(kubeconfig.path()).await;
    let ns = Some(jobs_ns.name.as_str());
    for verb in ["get", "list", "watch"] {
        assert!(!can(&as_operator, verb, "", "secrets", ns, None).await, "{verb} secrets");
    }
    assert!(can(&as_operator, "create", "", "serviceaccounts/token", ns, Some("builder")).await);
    assert!(!can(&as_operator, "get", "", "serviceaccounts", ns, Some("builder")).await, "nothing else on them");
    create(&admin, &jobs_ns.name, &workload_imagejob("keyless", &run, job, "builder")).await;
    let mut op = release.start_operator(kubeconfig.path(), &format!("{}-5c8d7-k3y1s", release.fullname));
    let done =
        wait_status(&admin, &jobs_ns.name, "keyless", WAIT, "finished", |s| s.phase.is_some_and(|p| p.is_finished()))
            .await;
    assert_eq!(done.phase, Some(Phase::Succeeded), "{done:?}");
    assert_eq!(sim.all_requests().await["iam"]["federation_tokens_issued"], 1);
    let log = op.stop();
    let lower = log.to_lowercase();
    assert!(!lower.contains("forbidden") && !lower.contains(" 403"), "the operator was refused something:\n{log}");
    assert!(!log.contains("eyJ"), "a token in the log:\n{log}");
    op_ns.cleanup().await;
    jobs_ns.cleanup().await;
}

/// Per-namespace Secret access (`secretCredentials=namespaced`): the chart
/// grants no Secret read; a team that binds the chart's unbound
/// `-read-credentials` ClusterRole in its namespace gets its ImageJob served,
/// a team that has not sees `CredentialsNotReadable` saying what to bind,
/// and is served once it binds it. No Secret is listed or watched.
#[tokio::test]
async fn secret_read_granted_per_namespace() {
    let admin = client().await;
    install_imagejob_crd(&admin).await;
    let op_ns = TestNamespace::new(&admin, "rbac-nsread-op").await;
    let granted = TestNamespace::new(&admin, "rbac-nsread-granted").await;
    let pending = TestNamespace::new(&admin, "rbac-nsread-pending").await;
    let run = unique_label();
    let (job_a, job_b) = ("ff8080814dbd65d7014dbe0d84db7051", "ff8080814dbd65d7014dbe0d84db7052");
    let sim = Sim::start(json!([succeeding_job(job_a, "1s", "3s"), succeeding_job(job_b, "1s", "3s")]));
    let release = Release::install(
        &op_ns.name,
        &[
            format!("imsEndpoint={}", sim.url),
            format!("iamEndpoint={}", sim.url),
            "pollInterval=1s".into(),
            "secretCredentials=namespaced".into(),
            format!("watchLabelSelector=e2e-run={run}"),
        ],
    );
    let reader = format!("{}-read-credentials", release.fullname);
    assert!(release.cluster_scoped.contains(&format!("clusterrole/{reader}")), "{:?}", release.cluster_scoped);
    let kubeconfig = release.service_account_kubeconfig(&admin).await;
    let as_operator = client_from(kubeconfig.path()).await;
    bind_reader(&release, &reader, &granted.name);
    let (a, b) = (Some(granted.name.as_str()), Some(pending.name.as_str()));
    assert!(can(&as_operator, "get", "", "secrets", a, Some("creds")).await, "bound: get");
    assert!(!can(&as_operator, "list", "", "secrets", a, None).await, "bound: get only");
    assert!(!can(&as_operator, "get", "", "secrets", b, Some("creds")).await, "not bound");
    assert!(!can(&as_operator, "list", "", "secrets", None, None).await, "no cluster-wide Secret list");

    for (ns, job) in [(&granted.name, job_a), (&pending.name, job_b)] {
        create_aksk_secret(&admin, ns, "creds", SK).await;
        create(&admin, ns, &imagejob("build", &run, job, "creds")).await;
    }
    let mut op = release.start_operator(kubeconfig.path(), &format!("{}-6f7d8-n5r3d", release.fullname));
    let done =
        wait_status(&admin, &granted.name, "build", WAIT, "Succeeded", |s| s.phase == Some(Phase::Succeeded)).await;
    assert_eq!(condition(&done, "Ready").map(|c| c.0), Some("True".into()));
    let refused = wait_status(&admin, &pending.name, "build", WAIT, "CredentialsNotReadable", |s| {
        condition(s, "Stalled").is_some_and(|c| c.1 == "CredentialsNotReadable")
    })
    .await;
    let (_, _, message) = condition(&refused, "Stalled").unwrap();
    assert!(message.contains("RoleBinding") && message.contains(&pending.name), "{message}");
    assert_eq!(sim.requests(job_b).await, 0, "no cloud request without credentials");

    // The team binds it: served on the next recheck, no restart.
    bind_reader(&release, &reader, &pending.name);
    let done = wait_status(&admin, &pending.name, "build", WAIT, "Succeeded after the RoleBinding", |s| {
        s.phase == Some(Phase::Succeeded)
    })
    .await;
    assert_eq!(condition(&done, "Stalled").map(|c| c.0), Some("False".into()), "{done:?}");
    let metrics = op.op.metrics().await;
    let secret_watch_errors = metrics.get_with("imagejob_watch_errors_total", &[("resource", "secrets")]);
    assert!(secret_watch_errors.unwrap_or(0.0) == 0.0, "a Secret watch was tried: {secret_watch_errors:?}");
    op.stop();
    for ns in [op_ns, granted, pending] {
        ns.cleanup().await;
    }
}

/// What a team runs to let the operator read its Secrets (NOTES.txt).
fn bind_reader(release: &Release, cluster_role: &str, namespace: &str) {
    let sa = release.deployment()["spec"]["template"]["spec"]["serviceAccountName"].as_str().unwrap();
    let subject = format!("--serviceaccount={}:{sa}", release.namespace);
    let role = format!("--clusterrole={cluster_role}");
    kubectl(&["create", "rolebinding", "imagejob-credentials", "-n", namespace, &role, &subject], "");
}

/// `imagejob_watch_errors_total{resource="secrets"}`: the chart installed
/// for per-namespace Secrets (no Secret list or watch) and the operator run
/// with `READ_SECRETS=true` (watched), a flag and RBAC that disagree: the
/// API server refuses the Secret watch (403) and the series counts each
/// retry (red with the label changed or the increment removed).
#[tokio::test]
async fn a_refused_secret_watch_is_counted() {
    let admin = client().await;
    install_imagejob_crd(&admin).await;
    let op_ns = TestNamespace::new(&admin, "rbac-watcherr").await;
    let run = unique_label();
    let sim = Sim::start(json!([]));
    let release = Release::install(
        &op_ns.name,
        &[
            format!("imsEndpoint={}", sim.url),
            format!("iamEndpoint={}", sim.url),
            "secretCredentials=namespaced".into(),
            format!("watchLabelSelector=e2e-run={run}"),
        ],
    );
    let kubeconfig = release.service_account_kubeconfig(&admin).await;
    assert!(!can(&client_from(kubeconfig.path()).await, "watch", "", "secrets", None, None).await);
    let pod_name = format!("{}-5c9d7-w4t3h", release.fullname);
    let mut op = release.start_operator_with(kubeconfig.path(), &pod_name, &[("READ_SECRETS", "true")]);
    let errors = || async {
        let m = op.op.try_metrics().await.ok()?;
        m.series("imagejob_watch_errors_total", &[("resource", "secrets")])
    };
    let first = common::eventually(Duration::from_secs(30), "a counted Secret watch error", || async {
        errors().await.filter(|n| *n >= 1.0)
    })
    .await;
    // The watch is retried (0.8-2 s apart) and each refusal counted.
    common::eventually(Duration::from_secs(20), "the Secret watch errors rising", || async {
        errors().await.filter(|n| *n > first)
    })
    .await;
    let metrics = op.op.metrics().await;
    let imagejob_errors = metrics.get_with("imagejob_watch_errors_total", &[("resource", "imagejobs")]);
    assert_eq!(imagejob_errors.unwrap_or(0.0), 0.0, "only the Secret watch is refused:\n{}", metrics.0);
    let log = op.stop();
    assert!(log.contains("Secret watch error") && log.contains("forbidden"), "{log}");
    op_ns.cleanup().await;
}
