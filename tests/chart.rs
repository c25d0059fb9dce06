//! The Helm chart (charts/imagejob-operator) and the manifests rendered from
//! it (deploy/): drift checks, `helm lint`, what the templates produce for
//! each setting, and server-side dry-runs against the local kube-apiserver
//! (tests/cluster/up), including Pod Security admission at "restricted".

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use common::{run, tool};
use serde_json::{Value, json};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/imagejob-operator");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `helm template` with `--set` pairs; panics on failure.
fn template(release: &str, namespace: &str, sets: &[&str]) -> String {
    let out = template_result(release, namespace, sets);
    assert!(out.status.success(), "helm template {sets:?} failed:\n{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn template_result(release: &str, namespace: &str, sets: &[&str]) -> Output {
    let mut cmd = Command::new(tool("helm"));
    cmd.args(["template", release, CHART, "--namespace", namespace, "--kube-version", &common::kube_version()]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    run(&mut cmd, None)
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", kinds(objs)))
}

fn kinds(objs: &[Value]) -> Vec<String> {
    objs.iter()
        .map(|o| format!("{}/{}", o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap()))
        .collect()
}

fn env_of(deployment: &Value) -> BTreeMap<String, Value> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (e["name"].as_str().unwrap().to_owned(), e.get("value").cloned().unwrap_or_else(|| e["valueFrom"].clone()))
        })
        .collect()
}

/// Rules as comparable strings: "group/resource[names]: verbs".
fn rules(role: &Value) -> BTreeSet<String> {
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            let names = r.get("resourceNames").map(|n| n.to_string()).unwrap_or_default();
            let mut verbs: Vec<_> =
                r["verbs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
            verbs.sort();
            let groups = r["apiGroups"].as_array().unwrap().clone();
            let resources = r["resources"].as_array().unwrap().clone();
            groups.into_iter().flat_map(move |g| {
                let names = names.clone();
                let verbs = verbs.join(",");
                resources
                    .clone()
                    .into_iter()
                    .map(move |res| format!("{}/{}{}: {}", g.as_str().unwrap(), res.as_str().unwrap(), names, verbs))
            })
        })
        .collect()
}

/// The operator's own rules: what src/controller uses, nothing more.
const OPERATOR_RULES: [&str; 4] = [
    "/secrets: get,list,watch",
    "events.k8s.io/events: create",
    "ims.otc.io/imagejobs: get,list,watch",
    "ims.otc.io/imagejobs/status: patch",
];

/// With `outputs.enabled` only: ConfigMaps (create, patch by server-side
/// apply, get before writing, list+watch of its own) and
/// `imagejobs/finalizers: update` (for blockOwnerDeletion).
const OUTPUT_RULES: [&str; 2] = ["/configmaps: create,get,list,patch,watch", "ims.otc.io/imagejobs/finalizers: update"];

fn operator_rules() -> BTreeSet<String> {
    OPERATOR_RULES.iter().map(|r| r.to_string()).collect()
}

// ---------------------------------------------------------------- drift

#[test]
fn chart_crd_is_the_generated_crd() {
    let top = std::fs::read_to_string(root().join("crds/imagejob.yaml")).unwrap();
    let chart = std::fs::read_to_string(root().join("charts/imagejob-operator/crds/imagejob.yaml")).unwrap();
    assert!(
        top == chart,
        "charts/imagejob-operator/crds/imagejob.yaml differs from crds/imagejob.yaml: run deploy/render.sh"
    );
    // And that file is what the binary prints (also checked in src/crd.rs).
    assert_eq!(
        chart,
        imagejob_operator::crd::crd_yaml(),
        "crds/imagejob.yaml is stale: cargo run -- crd > crds/imagejob.yaml"
    );
}

#[test]
fn deploy_manifests_are_the_rendered_chart() {
    tool("helm");
    let out_dir = tempfile::tempdir().unwrap();
    let out = run(Command::new("bash").arg(root().join("deploy/render.sh")).arg(out_dir.path()), None);
    assert!(out.status.success(), "deploy/render.sh failed:\n{}", text(&out));
    let mut rendered = Vec::new();
    for entry in std::fs::read_dir(out_dir.path()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let fresh = std::fs::read_to_string(out_dir.path().join(&name)).unwrap();
        let checked_in = std::fs::read_to_string(root().join("deploy").join(&name)).unwrap_or_default();
        assert!(fresh == checked_in, "deploy/{name} is out of date with the chart: run deploy/render.sh");
        rendered.push(name);
    }
    rendered.sort();
    assert_eq!(rendered, ["00-namespace.yaml", "01-crd.yaml", "02-imagejob-operator.yaml", "Kustomization"]);
    // Nothing stale is left beside them (kubectl apply -f deploy/ reads every *.yaml).
    for entry in std::fs::read_dir(root().join("deploy")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json") {
            assert!(rendered.contains(&name), "deploy/{name} is not produced by deploy/render.sh");
        }
    }
}

/// Every property of the CRD's schema, nested ones included (sub-job and
/// result items, conditions), has a description: that is what `kubectl
/// explain imagejob.status.subJobs` shows.
#[test]
fn every_crd_field_has_a_description() {
    fn walk(path: &str, schema: &Value, missing: &mut Vec<String>) {
        if let Some(props) = schema["properties"].as_object() {
            for (name, prop) in props {
                let here = format!("{path}.{name}");
                let described = prop["description"].as_str().is_some_and(|d| !d.trim().is_empty());
                if !described {
                    missing.push(here.clone());
                }
                walk(&here, prop, missing);
            }
        }
        if schema["items"].is_object() {
            walk(&format!("{path}[]"), &schema["items"], missing);
        }
    }
    let crd: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(root().join("crds/imagejob.yaml")).unwrap()).unwrap();
    let mut missing = Vec::new();
    let mut seen = 0;
    for version in crd["spec"]["versions"].as_array().unwrap() {
        let schema = &version["schema"]["openAPIV3Schema"];
        walk("imagejob", schema, &mut missing);
        seen += 1;
    }
    assert!(seen > 0);
    assert!(missing.is_empty(), "schema properties without a description:\n{}", missing.join("\n"));
    // The walk reaches the nested fields (so an empty walk cannot pass).
    let status = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    assert!(status["subJobs"]["items"]["properties"]["failReason"]["description"].is_string());
    assert!(status["conditions"]["items"]["properties"]["reason"]["description"].is_string());
}

// ---------------------------------------------------------------- helm lint

#[test]
fn helm_lint_is_clean_for_each_configuration() {
    for sets in [
        vec![],
        vec!["watchNamespace=team-a", "leaderElection.enabled=false"],
        vec![
            "serviceMonitor.enabled=true",
            "prometheusRule.enabled=true",
            "podDisruptionBudget.enabled=true",
            "replicas=2",
        ],
        vec![
            "networkPolicy.enabled=true",
            "kubeStateMetrics.customResourceState.enabled=true",
            "kubeStateMetrics.serviceAccount.name=kube-state-metrics",
            "kubeStateMetrics.serviceAccount.namespace=monitoring",
            "grafanaDashboard.enabled=true",
        ],
        vec!["workloadIdentity.idpId=k8s", "workloadIdentity.audience=iam", "secretCredentials=false"],
    ] {
        let mut cmd = Command::new(tool("helm"));
        cmd.args(["lint", "--strict", CHART, "--kube-version", &common::kube_version()]);
        for s in &sets {
            cmd.args(["--set", s]);
        }
        let out = run(&mut cmd, None);
        let log = text(&out);
        assert!(out.status.success(), "helm lint {sets:?}:\n{log}");
        assert!(log.contains("1 chart(s) linted, 0 chart(s) failed"), "{log}");
        assert!(!log.contains("[WARNING]") && !log.contains("[ERROR]"), "helm lint {sets:?}:\n{log}");
    }
}

// ---------------------------------------------------------------- templates

#[test]
fn default_deployment_is_hardened() {
    let objs = docs(&template("imagejob-operator", "imagejob-system", &[]));
    let d = find(&objs, "Deployment", "imagejob-operator");
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(pod["serviceAccountName"], "imagejob-operator");
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    for kind in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(c["resources"][kind][res].is_string(), "resources.{kind}.{res} missing: {}", c["resources"]);
        }
    }
    assert_eq!(c["ports"], json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}]));
    assert_eq!(c["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "http"}));
    assert_eq!(c["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "http"}));
    assert_eq!(c["image"], format!("imagejob-operator:{}", chart_app_version()));
    let env = env_of(d);
    assert_eq!(env["POD_NAME"], json!({"fieldRef": {"fieldPath": "metadata.name"}}));
    assert_eq!(env["POD_NAMESPACE"], json!({"fieldRef": {"fieldPath": "metadata.namespace"}}));
    assert_eq!(env["HTTP_ADDR"], "0.0.0.0:8080");
    assert_eq!(env["LEADER_ELECT"], "true");
    assert_eq!(env["LEADER_ELECTION_NAMESPACE"], "imagejob-system");
    // Empty endpoints leave the operator's OTC defaults in force.
    assert!(!env.contains_key("IMS_ENDPOINT") && !env.contains_key("IAM_ENDPOINT"));
    assert!(!env.contains_key("WATCH_NAMESPACE") && !env.contains_key("WATCH_LABEL_SELECTOR"));
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");

    // The metrics Service reaches the container's `http` port; no monitoring
    // CRs by default (clusters without the Prometheus Operator reject them).
    let svc = find(&objs, "Service", "imagejob-operator-metrics");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(svc["spec"]["selector"], d["spec"]["selector"]["matchLabels"]);
    assert!(!objs.iter().any(|o| o["kind"] == "ServiceMonitor" || o["kind"] == "PrometheusRule"));
}

fn chart_app_version() -> String {
    let chart: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(Path::new(CHART).join("Chart.yaml")).unwrap()).unwrap();
    chart["appVersion"].as_str().unwrap().to_owned()
}

#[test]
fn every_setting_maps_to_the_operators_environment_variable() {
    let objs = docs(&template(
        "x",
        "ops",
        &[
            "imsEndpoint=https://ims.{region}.example.test",
            "iamEndpoint=https://iam.{region}.example.test",
            "defaultRegion=eu-nl",
            "pollInterval=45s",
            "imsRateLimit=2.5",
            "imsRateBurst=1000000",
            "imsTimeout=12s",
            "concurrency=8",
            "logFormat=text",
            "logLevel=debug",
            "watchNamespace=team-a",
            "watchLabelSelector=shard=a",
            "leaderElection.leaseName=my-lease",
            "workloadIdentity.idpId=k8s-cluster",
            "workloadIdentity.audience=iam.example",
            "defaultCredentials=metadata",
            "metadataEndpoint=http://169.254.169.254",
            "regionEndpoints.eu-ch2.ims=https://ims.ch.example",
            "regionEndpoints.eu-ch2.iam=https://iam.ch.example",
            "allowedRegions={eu-de,eu-ch2}",
            "caBundle.configMap=corp-ca",
            "extraEnv[0].name=HTTPS_PROXY",
            "extraEnv[0].value=http://proxy:3128",
            "image.digest=sha256:0123",
            "image.repository=registry.example.test/ijo",
        ],
    ));
    let d = find(&objs, "Deployment", "x-imagejob-operator");
    let env = env_of(d);
    let expected = [
        ("IMS_ENDPOINT", "https://ims.{region}.example.test"),
        ("IAM_ENDPOINT", "https://iam.{region}.example.test"),
        ("OTC_REGION", "eu-nl"),
        ("POLL_INTERVAL", "45s"),
        ("IMS_RATE_LIMIT", "2.5"),
        // Not 1e+06: Helm reads numbers as floats.
        ("IMS_RATE_BURST", "1000000"),
        ("IMS_TIMEOUT", "12s"),
        ("CONCURRENCY", "8"),
        ("LOG_FORMAT", "text"),
        ("RUST_LOG", "debug"),
        ("WATCH_NAMESPACE", "team-a"),
        ("WATCH_LABEL_SELECTOR", "shard=a"),
        ("LEADER_ELECT", "true"),
        ("LEADER_ELECTION_NAMESPACE", "ops"),
        ("LEADER_ELECTION_LEASE", "my-lease"),
        ("HTTPS_PROXY", "http://proxy:3128"),
        ("READ_SECRETS", "true"),
        ("OIDC_IDP_ID", "k8s-cluster"),
        ("OIDC_AUDIENCE", "iam.example"),
        ("DEFAULT_CREDENTIALS", "metadata"),
        ("METADATA_ENDPOINT", "http://169.254.169.254"),
        ("REGION_ENDPOINTS", "eu-ch2=https://ims.ch.example,https://iam.ch.example"),
        ("ALLOWED_REGIONS", "eu-de,eu-ch2"),
        ("OTC_CA_FILE", "/etc/imagejob-operator/ca/ca.crt"),
    ];
    for (name, value) in expected {
        assert_eq!(env.get(name), Some(&json!(value)), "{name}");
    }
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "registry.example.test/ijo@sha256:0123");
    // The CA bundle: the ConfigMap's key, mounted read-only where OTC_CA_FILE points.
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        json!([{"name": "ca-bundle", "configMap": {"name": "corp-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}])
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"],
        json!([{"name": "ca-bundle", "mountPath": "/etc/imagejob-operator/ca", "readOnly": true}])
    );
    // The Lease the Role names is the one the operator takes.
    let role = find(&objs, "Role", "x-imagejob-operator-leader-election");
    assert!(rules(role).contains("coordination.k8s.io/leases[\"my-lease\"]: get,patch"), "{:?}", rules(role));

    // Every variable the chart sets is one `imagejob-operator run` reads, and
    // every variable it reads can be set from values.
    let help = Command::new(env!("CARGO_BIN_EXE_imagejob-operator")).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let known: BTreeSet<String> =
        help.split("[env: ").skip(1).map(|s| s.split(['=', ']']).next().unwrap().to_owned()).collect();
    assert!(known.contains("IMS_ENDPOINT"), "could not read env names from --help:\n{help}");
    let not_flags = ["POD_NAME", "POD_NAMESPACE", "RUST_LOG", "HTTPS_PROXY"];
    let set: BTreeSet<String> = env.keys().filter(|k| !not_flags.contains(&k.as_str())).cloned().collect();
    assert_eq!(
        set, known,
        "the chart's env vars and `imagejob-operator run --help` disagree: add a value to charts/imagejob-operator for a new flag"
    );
}

#[test]
fn rbac_grants_only_what_the_operator_uses() {
    let objs = docs(&template("imagejob-operator", "imagejob-system", &[]));
    let cr = find(&objs, "ClusterRole", "imagejob-operator");
    assert_eq!(rules(cr), operator_rules());
    let crb = find(&objs, "ClusterRoleBinding", "imagejob-operator");
    assert_eq!(crb["roleRef"]["name"], "imagejob-operator");
    assert_eq!(
        crb["subjects"],
        json!([{"kind": "ServiceAccount", "name": "imagejob-operator", "namespace": "imagejob-system"}])
    );
    // Leases: only in the release namespace, get/patch only the one Lease.
    let le = find(&objs, "Role", "imagejob-operator-leader-election");
    assert_eq!(le["metadata"]["namespace"], "imagejob-system");
    assert_eq!(
        rules(le),
        BTreeSet::from([
            "coordination.k8s.io/leases: create".to_owned(),
            "coordination.k8s.io/leases[\"imagejob-operator\"]: get,patch".to_owned()
        ])
    );
    // No wildcard anywhere, and the operator's account can never write Secrets.
    for o in objs.iter().filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role") {
        for r in rules(o) {
            assert!(!r.contains('*'), "wildcard in {}: {r}", o["metadata"]["name"]);
        }
    }
    for r in rules(cr).iter().chain(rules(le).iter()) {
        assert!(
            !(r.starts_with("/secrets") && (r.contains("create") || r.contains("update") || r.contains("delete"))),
            "{r}"
        );
    }
    // No ConfigMap right and no admission policy unless outputs are on;
    // with them, both.
    assert!(!objs.iter().any(|o| o["kind"] == "ValidatingAdmissionPolicy"));
    let with_outputs = docs(&template("imagejob-operator", "imagejob-system", &["outputs.enabled=true"]));
    let mut want = operator_rules();
    want.extend(OUTPUT_RULES.iter().map(|r| r.to_string()));
    assert_eq!(rules(find(&with_outputs, "ClusterRole", "imagejob-operator")), want);
    let policy = find(&with_outputs, "ValidatingAdmissionPolicy", "imagejob-operator-outputs");
    assert_eq!(
        policy["spec"]["matchConditions"][0]["expression"],
        "request.userInfo.username == \"system:serviceaccount:imagejob-system:imagejob-operator\""
    );
    let binding = find(&with_outputs, "ValidatingAdmissionPolicyBinding", "imagejob-operator-outputs");
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    // The aggregated roles give users ImageJobs, never their status.
    let edit = find(&objs, "ClusterRole", "imagejob-operator-edit");
    assert_eq!(edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"], "true");
    assert!(rules(edit).iter().all(|r| r.starts_with("ims.otc.io/imagejobs:")), "{:?}", rules(edit));
}

/// What each credentials mode grants: Secrets only while Secrets are
/// read; `serviceaccounts/token` create only with workload identity; the
/// keyless mode (workload identity, no Secrets) reads no Secret at all.
#[test]
fn each_credentials_mode_grants_only_what_it_uses() {
    let secrets = "/secrets: get,list,watch";
    let token = "/serviceaccounts/token: create";
    let wi = ["workloadIdentity.idpId=k8s", "workloadIdentity.audience=iam"];
    let cases: [(&[&str], bool, bool); 4] = [
        (&[], true, false),
        (&wi, true, true),
        (&[wi[0], wi[1], "secretCredentials=false"], false, true),
        (&["secretCredentials=false", "defaultCredentials=metadata"], false, false),
    ];
    for (sets, reads_secrets, mints_tokens) in cases {
        let objs = docs(&template("imagejob-operator", "imagejob-system", sets));
        let granted: BTreeSet<String> =
            objs.iter().filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role").flat_map(rules).collect();
        assert_eq!(granted.iter().any(|r| r.starts_with("/secrets")), reads_secrets, "{sets:?}: {granted:?}");
        assert_eq!(granted.contains(token), mints_tokens, "{sets:?}: {granted:?}");
        let cr = find(&objs, "ClusterRole", "imagejob-operator");
        let mut want = operator_rules();
        if !reads_secrets {
            want.remove(secrets);
        }
        if mints_tokens {
            want.insert(token.to_owned());
        }
        assert_eq!(rules(cr), want, "{sets:?}");
        let env = env_of(find(&objs, "Deployment", "imagejob-operator"));
        assert_eq!(env["READ_SECRETS"], json!(reads_secrets.to_string()), "{sets:?}");
    }
}

#[test]
fn watch_namespace_switches_to_a_role_in_that_namespace() {
    let objs = docs(&template("imagejob-operator", "imagejob-system", &["watchNamespace=team-a"]));
    let role = find(&objs, "Role", "imagejob-operator");
    assert_eq!(role["metadata"]["namespace"], "team-a");
    assert_eq!(rules(role), operator_rules());
    let rb = find(&objs, "RoleBinding", "imagejob-operator");
    assert_eq!(rb["metadata"]["namespace"], "team-a");
    assert_eq!(
        rb["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "imagejob-operator"})
    );
    assert_eq!(rb["subjects"][0]["namespace"], "imagejob-system");
    // The only cluster-wide objects left are the aggregated user roles.
    let cluster: Vec<String> = objs
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "ClusterRoleBinding")
        .map(|o| format!("{}/{}", o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap()))
        .collect();
    assert_eq!(cluster, ["ClusterRole/imagejob-operator-view", "ClusterRole/imagejob-operator-edit"]);
    let env = env_of(find(&objs, "Deployment", "imagejob-operator"));
    assert_eq!(env["WATCH_NAMESPACE"], "team-a");
}

#[test]
fn leader_election_off_means_no_lease_rbac_and_no_overlapping_pods() {
    let objs = docs(&template("imagejob-operator", "imagejob-system", &["leaderElection.enabled=false"]));
    assert!(!objs.iter().any(|o| o["metadata"]["name"] == "imagejob-operator-leader-election"), "{:?}", kinds(&objs));
    let d = find(&objs, "Deployment", "imagejob-operator");
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    let env = env_of(d);
    assert_eq!(env["LEADER_ELECT"], "false");
    assert!(!env.contains_key("LEADER_ELECTION_LEASE"));
    // Two replicas without a Lease would both poll and write: refused.
    let out = template_result("imagejob-operator", "imagejob-system", &["leaderElection.enabled=false", "replicas=2"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("replicas > 1 needs leaderElection.enabled"), "{}", text(&out));
    let out = template_result("imagejob-operator", "imagejob-system", &["logFormat=xml"]);
    assert!(!out.status.success(), "logFormat=xml was accepted");
}

/// values.schema.json refuses misspelt keys and malformed values before
/// anything reaches the cluster (a typo would otherwise silently keep a default).
#[test]
fn values_schema_refuses_typos_and_bad_values() {
    for (set, complaint) in [
        ("pollIntervall=5s", "additional properties 'pollIntervall' not allowed"),
        ("pollInterval=45", "/pollInterval"),
        ("pollInterval=soon", "/pollInterval"),
        ("logFormat=xml", "/logFormat"),
        ("imsRateLimit=fast", "/imsRateLimit"),
        ("defaultRegion=eu.evil.example", "/defaultRegion"),
        ("imsEndpoint=ims.example.test", "/imsEndpoint"),
        ("leaderElection.enable=false", "additional properties 'enable' not allowed"),
    ] {
        let out = template_result("x", "ops", &[set]);
        assert!(!out.status.success(), "{set} was accepted");
        assert!(text(&out).contains(complaint), "{set}: {}", text(&out));
    }
    // What --set produces for valid input passes (2.5 arrives as a string).
    template(
        "x",
        "ops",
        &["imsRateLimit=2.5", "prometheusRule.imsErrorRatio=0.5", "imsEndpoint=http://127.0.0.1:8081"],
    );
}

#[test]
fn monitoring_objects_scrape_the_service_and_alert_on_real_metrics() {
    let objs = docs(&template(
        "imagejob-operator",
        "imagejob-system",
        &[
            "serviceMonitor.enabled=true",
            "prometheusRule.enabled=true",
            "prometheusRule.labels.release=kube-prometheus",
        ],
    ));
    let svc = find(&objs, "Service", "imagejob-operator-metrics");
    let sm = find(&objs, "ServiceMonitor", "imagejob-operator");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], svc["spec"]["ports"][0]["name"]);
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&svc["metadata"]["labels"][k], v, "ServiceMonitor selects label {k} the Service lacks");
    }

    let rule = find(&objs, "PrometheusRule", "imagejob-operator");
    assert_eq!(rule["metadata"]["labels"]["release"], "kube-prometheus");
    let alerts = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    let names: Vec<_> = alerts.iter().map(|a| a["alert"].as_str().unwrap()).collect();
    for wanted in
        ["ImageJobFailed", "ImageJobsStuckPending", "ImageJobsStalled", "ImageJobIMSErrors", "ImageJobOperatorDown"]
    {
        assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
    }
    let exprs: Vec<&str> = alerts.iter().map(|a| a["expr"].as_str().unwrap()).collect();
    assert!(exprs.iter().any(|e| e.contains(r#"imagejob_imagejobs{phase="Failed""#)));
    assert!(exprs.iter().any(|e| e.contains(r#"rate(imagejob_ims_requests_total{outcome!="success""#)));
    // Prometheus templates in annotations survive Helm's own templating.
    assert!(alerts[0]["annotations"]["summary"].as_str().unwrap().contains("{{ $value }}"));

    // Every metric an alert uses is one the operator exports.
    let exposition = common::operator::sampled_exposition();
    let families: BTreeSet<&str> =
        exposition.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
    assert!(families.contains("imagejob_imagejobs"), "{exposition}");
    for expr in exprs {
        for word in
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("imagejob_"))
        {
            let family = word.strip_suffix("_total").unwrap_or(word);
            assert!(families.contains(family), "alert uses {word}, which the operator does not export ({families:?})");
        }
        // Each expression is scoped to this release's series.
        assert!(expr.contains(r#"namespace="imagejob-system", job="imagejob-operator-metrics""#), "{expr}");
    }
}

#[test]
fn network_policy_allows_only_dns_the_api_server_the_cloud_and_metrics() {
    let objs = docs(&template("imagejob-operator", "imagejob-system", &[]));
    assert!(!objs.iter().any(|o| o["kind"] == "NetworkPolicy"), "off by default");
    let objs = docs(&template(
        "imagejob-operator",
        "imagejob-system",
        &[
            "networkPolicy.enabled=true",
            "networkPolicy.metrics.namespace=observability",
            "networkPolicy.apiServer.cidrs[0]=10.0.0.1/32",
            "iamEndpoint=https://iam.{region}.example.test:8443",
        ],
    ));
    let np = find(&objs, "NetworkPolicy", "imagejob-operator");
    let d = find(&objs, "Deployment", "imagejob-operator");
    assert_eq!(np["spec"]["podSelector"]["matchLabels"], d["spec"]["selector"]["matchLabels"]);
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    // Ingress: the metrics port, from the configured namespace and the
    // release's own `helm test` Pod only.
    let ingress = np["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 2);
    assert_eq!(ingress[0]["ports"], json!([{"port": "http", "protocol": "TCP"}]));
    assert_eq!(
        ingress[0]["from"],
        json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}])
    );
    let test_pod = find(&objs, "Pod", "imagejob-operator-test-readyz");
    assert_eq!(ingress[1]["ports"], ingress[0]["ports"]);
    assert_eq!(
        ingress[1]["from"],
        json!([{"podSelector": {"matchLabels": {
        "app.kubernetes.io/instance": "imagejob-operator", "app.kubernetes.io/component": "test"}}}])
    );
    for (k, v) in ingress[1]["from"][0]["podSelector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&test_pod["metadata"]["labels"][k], v, "the rule admits the test Pod");
    }
    // Egress: DNS, the API server (narrowed), IMS on 443 and IAM on its own port.
    let egress = np["spec"]["egress"].as_array().unwrap();
    let ports = |rule: &Value| -> Vec<(i64, String)> {
        rule["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["port"].as_i64().unwrap(), p["protocol"].as_str().unwrap().to_owned()))
            .collect()
    };
    assert_eq!(egress.len(), 3, "{egress:?}");
    assert_eq!(ports(&egress[0]), [(53, "UDP".into()), (53, "TCP".into())]);
    assert_eq!(egress[0]["to"][0]["podSelector"]["matchLabels"]["k8s-app"], "kube-dns");
    assert_eq!(ports(&egress[1]), [(443, "TCP".into()), (6443, "TCP".into())]);
    assert_eq!(egress[1]["to"], json!([{"ipBlock": {"cidr": "10.0.0.1/32"}}]));
    assert_eq!(ports(&egress[2]), [(443, "TCP".into()), (8443, "TCP".into())]);
    assert!(egress[2].get("to").is_none(), "no cidrs configured: any address, those ports only");
    // Plain http endpoints on loopback name their port.
    let objs = docs(&template(
        "x",
        "ops",
        &["networkPolicy.enabled=true", "imsEndpoint=http://127.0.0.1:18080", "iamEndpoint=http://127.0.0.1:18080"],
    ));
    let np = find(&objs, "NetworkPolicy", "x-imagejob-operator");
    assert_eq!(ports(&np["spec"]["egress"][2]), [(18080, "TCP".into())]);
}

/// `helm test`: a hook Pod from the operator's image, as hardened as the
/// operator, that GETs /readyz through the metrics Service without DNS.
#[test]
fn helm_test_pod_probes_readyz_through_the_service() {
    let objs = docs(&template("imagejob-operator", "imagejob-system", &[]));
    let pod = find(&objs, "Pod", "imagejob-operator-test-readyz");
    let d = find(&objs, "Deployment", "imagejob-operator");
    let svc = find(&objs, "Service", "imagejob-operator-metrics");
    assert_eq!(pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    let operator = &d["spec"]["template"]["spec"]["containers"][0];
    let probe = &pod["spec"]["containers"][0];
    assert_eq!(probe["image"], operator["image"]);
    assert_eq!(probe["securityContext"], operator["securityContext"]);
    assert_eq!(pod["spec"]["securityContext"], d["spec"]["template"]["spec"]["securityContext"]);
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    // The Service (and the PodDisruptionBudget) must not select the test Pod.
    let selector = svc["spec"]["selector"].as_object().unwrap();
    assert!(selector.iter().any(|(k, v)| &pod["metadata"]["labels"][k] != v), "{selector:?}");
    // The address comes from the Service's environment variables.
    let env = svc["metadata"]["name"].as_str().unwrap().to_uppercase().replace('-', "_");
    assert_eq!(
        probe["args"],
        json!(["probe", "--timeout", "10s", format!("http://$({env}_SERVICE_HOST):$({env}_SERVICE_PORT_HTTP)/readyz")])
    );
    assert_eq!(svc["spec"]["ports"][0]["name"], "http");
    let objs = docs(&template("imagejob-operator", "imagejob-system", &["tests.enabled=false"]));
    assert!(!objs.iter().any(|o| o["kind"] == "Pod"), "tests.enabled=false leaves the test out");
}

#[test]
fn chart_metadata_serves_catalogues() {
    let chart: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(Path::new(CHART).join("Chart.yaml")).unwrap()).unwrap();
    for key in ["kubeVersion", "home"] {
        assert!(chart[key].as_str().is_some_and(|v| !v.is_empty()), "Chart.yaml lacks {key}");
    }
    assert!(!chart["sources"].as_array().unwrap().is_empty());
    assert!(chart["maintainers"][0]["name"].is_string());
    let annotation = |key: &str| -> Value {
        let text = chart["annotations"][key].as_str().unwrap_or_else(|| panic!("annotation {key} missing"));
        serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("{key}: {e}"))
    };
    assert_eq!(chart["annotations"]["artifacthub.io/license"], "Apache-2.0");
    let images = annotation("artifacthub.io/images");
    assert_eq!(images[0]["image"], format!("imagejob-operator:{}", chart_app_version()), "the image the chart deploys");
    let crds = annotation("artifacthub.io/crds");
    assert_eq!(crds[0]["name"], "imagejobs.ims.otc.io");
    let changes = annotation("artifacthub.io/changes");
    let kinds = ["added", "changed", "deprecated", "removed", "fixed", "security"];
    for c in changes.as_array().unwrap() {
        assert!(kinds.contains(&c["kind"].as_str().unwrap()) && c["description"].is_string(), "{c}");
    }
    // The example is a valid ImageJob (the API server also checks it below).
    let examples = annotation("artifacthub.io/crdsExamples");
    let example: imagejob_operator::crd::ImageJob = serde_json::from_value(examples[0].clone()).unwrap();
    assert!(example.spec.output_config_map_ref.is_some());
    // kubeVersion is enforced: a too-old cluster is refused at install.
    let out = run(Command::new(tool("helm")).args(["template", "x", CHART, "--kube-version", "1.28.0"]), None);
    assert!(!out.status.success() && text(&out).contains("kubeVersion"), "{}", text(&out));
}

// ---------------------------------------------------------------- API server

fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(tool("kubectl"));
    cmd.args(args).env("KUBECONFIG", common::kubeconfig_path());
    run(&mut cmd, stdin)
}

fn dry_run_apply(manifests: &str, what: &str) -> String {
    let out = kubectl(
        // --force-conflicts: the CRD is also applied by other tests' field manager.
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "--validate=strict",
            "--field-manager=chart-test",
            "-f",
            "-",
        ],
        Some(manifests),
    );
    assert!(out.status.success(), "the API server rejected {what}:\n{}", text(&out));
    let log = text(&out);
    assert!(!log.contains("Warning:"), "the API server warned about {what}:\n{log}");
    log
}

/// Every object of the chart (all namespaced ones in a fresh namespace) is
/// accepted by the API server's validation and admission, for the default
/// values and for the namespaced-RBAC and PodDisruptionBudget variants.
#[tokio::test]
async fn api_server_accepts_the_rendered_chart() {
    let client = common::client().await;
    let ns = common::TestNamespace::new(&client, "chart").await;
    let watched = common::TestNamespace::new(&client, "chart-watched").await;
    let crd = std::fs::read_to_string(root().join("crds/imagejob.yaml")).unwrap();
    for sets in [
        vec![],
        vec![format!("watchNamespace={}", watched.name), "leaderElection.enabled=false".into()],
        vec![
            "outputs.enabled=true".into(),
            "podDisruptionBudget.enabled=true".into(),
            "replicas=2".into(),
            "image.digest=sha256:".to_owned() + &"a".repeat(64),
        ],
        vec![
            "networkPolicy.enabled=true".into(),
            "networkPolicy.apiServer.cidrs[0]=10.0.0.1/32".into(),
            "imsEndpoint=https://ims.{region}.example.test:8443".into(),
            "kubeStateMetrics.customResourceState.enabled=true".into(),
            "grafanaDashboard.enabled=true".into(),
        ],
    ] {
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        let rendered = template("chart-test", &ns.name, &sets);
        let log = dry_run_apply(&format!("{crd}\n---\n{rendered}"), &format!("the chart with {sets:?}"));
        for kind in [
            "deployment.apps/chart-test-imagejob-operator",
            "serviceaccount/chart-test-imagejob-operator",
            "service/chart-test-imagejob-operator-metrics",
        ] {
            assert!(log.contains(kind), "{kind} not applied:\n{log}");
        }
    }
    ns.cleanup().await;
    watched.cleanup().await;
}

/// `kubectl apply -f deploy/` as documented: the Namespace, then the CRD,
/// then the operator. The Namespace is created for real (a dry-run cannot
/// create the namespace the next objects need).
#[tokio::test]
async fn api_server_accepts_deploy_manifests() {
    let _ = common::client().await;
    let dir = root().join("deploy");
    let ns = std::fs::read_to_string(dir.join("00-namespace.yaml")).unwrap();
    let out = kubectl(&["apply", "--server-side", "--field-manager=chart-test", "-f", "-"], Some(&ns));
    assert!(out.status.success(), "{}", text(&out));
    let mut all = String::new();
    for f in ["01-crd.yaml", "02-imagejob-operator.yaml"] {
        all.push_str(&std::fs::read_to_string(dir.join(f)).unwrap());
        all.push_str("\n---\n");
    }
    let log = dry_run_apply(&all, "deploy/");
    assert!(log.contains("deployment.apps/imagejob-operator serverside-applied (server dry run)"), "{log}");
    // The Kustomization lists exactly those files.
    let out = kubectl(&["kustomize", dir.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out));
    let built = docs(&String::from_utf8(out.stdout).unwrap());
    let direct = docs(&format!("{ns}\n---\n{all}"));
    assert_eq!(built.len(), direct.len(), "kubectl kustomize deploy/ differs from the files");
}

/// The operator's pod passes Pod Security admission at "restricted": a Pod
/// made from the Deployment's template is created (dry-run) in a namespace
/// that enforces it, while the same Pod without its securityContext is
/// refused there (so the check can fail).
#[tokio::test]
async fn pod_meets_the_restricted_pod_security_standard() {
    let client = common::client().await;
    let ns = common::TestNamespace::new(&client, "chart-psa").await;
    let out = kubectl(&["label", "namespace", &ns.name, "pod-security.kubernetes.io/enforce=restricted"], None);
    assert!(out.status.success(), "{}", text(&out));
    // ServiceAccount admission (on, as in real clusters) wants the Pod's account to exist.
    let out = kubectl(&["create", "serviceaccount", "psa-imagejob-operator", "-n", &ns.name], None);
    assert!(out.status.success(), "{}", text(&out));

    let objs = docs(&template("psa", &ns.name, &[]));
    let template = &find(&objs, "Deployment", "psa-imagejob-operator")["spec"]["template"];
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "psa-check", "namespace": ns.name,
                     "labels": template["metadata"]["labels"]}, "spec": template["spec"]});
    let out = kubectl(&["create", "--dry-run=server", "-f", "-"], Some(&pod.to_string()));
    assert!(out.status.success(), "restricted PSA refused the operator's pod:\n{}", text(&out));

    let mut weak = pod.clone();
    weak["spec"]["containers"][0].as_object_mut().unwrap().remove("securityContext");
    weak["spec"].as_object_mut().unwrap().remove("securityContext");
    let out = kubectl(&["create", "--dry-run=server", "-f", "-"], Some(&weak.to_string()));
    assert!(!out.status.success(), "a pod without securityContext was admitted: PSA is not enforcing");
    assert!(text(&out).contains("violates PodSecurity"), "{}", text(&out));
    ns.cleanup().await;
}

// ---------------------------------------------------------------- examples

/// deploy/examples work against ims-sim's built-in scenario: the ImageJobs
/// name jobs it serves, the Secrets carry its demo credentials, and the API
/// server accepts them.
#[tokio::test]
async fn examples_match_the_default_scenario_and_validate() {
    let scenario: Value = serde_yaml_ng::from_str(imagejob_operator::sim::scenario::DEFAULT_SCENARIO_YAML).unwrap();
    let jobs: BTreeSet<&str> =
        scenario["jobs"].as_array().unwrap().iter().map(|j| j["job_id"].as_str().unwrap()).collect();
    let project = scenario["projects"][0]["id"].as_str().unwrap();
    let dir = root().join("deploy/examples");
    let mut all = String::new();
    let mut secrets = BTreeMap::new();
    let mut imagejobs = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for obj in docs(&text) {
            match obj["kind"].as_str().unwrap() {
                "Secret" => {
                    secrets.insert(obj["metadata"]["name"].as_str().unwrap().to_owned(), obj["stringData"].clone());
                }
                "ImageJob" => imagejobs.push(obj),
                other => panic!("unexpected {other} in deploy/examples"),
            }
        }
        all.push_str(&text);
        all.push_str("\n---\n");
    }
    assert_eq!(imagejobs.len(), jobs.len(), "one example ImageJob per scenario job");
    for ij in &imagejobs {
        let job = ij["spec"]["jobId"].as_str().unwrap();
        assert!(jobs.contains(job), "{job} is not in the default scenario");
        let secret = &secrets[ij["spec"]["credentialsRef"]["name"].as_str().unwrap()];
        let ij_project = ij["spec"]["projectId"].as_str().or(secret["projectId"].as_str());
        assert_eq!(ij_project, Some(project), "{}", ij["metadata"]["name"]);
    }
    let keys = &scenario["access_keys"][0];
    assert!(secrets.values().any(|s| s["accessKey"] == keys["access"] && s["secretKey"] == keys["secret"]));
    let user = &scenario["users"][0];
    assert!(secrets.values().any(|s| s["username"] == user["name"]
        && s["password"] == user["password"]
        && s["domainName"] == user["domain"]));

    let client = common::client().await;
    common::e2e::install_imagejob_crd(&client).await;
    let ns = common::TestNamespace::new(&client, "chart-examples").await;
    let out = kubectl(&["apply", "--dry-run=server", "--validate=strict", "-n", &ns.name, "-f", "-"], Some(&all));
    assert!(out.status.success(), "the API server rejected deploy/examples:\n{}", text(&out));
    ns.cleanup().await;
}

/// The Artifact Hub CRD example is accepted by the API server (schema and
/// validation rules), in a namespace of its own.
#[tokio::test]
async fn artifacthub_crd_example_validates() {
    let chart: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(Path::new(CHART).join("Chart.yaml")).unwrap()).unwrap();
    let examples: Vec<Value> =
        serde_yaml_ng::from_str(chart["annotations"]["artifacthub.io/crdsExamples"].as_str().unwrap()).unwrap();
    let client = common::client().await;
    common::e2e::install_imagejob_crd(&client).await;
    let ns = common::TestNamespace::new(&client, "chart-ahub").await;
    for mut example in examples {
        example["metadata"]["namespace"] = ns.name.clone().into();
        let out = kubectl(&["create", "--dry-run=server", "--validate=strict", "-f", "-"], Some(&example.to_string()));
        assert!(out.status.success(), "the API server rejected the Artifact Hub example:\n{}", text(&out));
    }
    ns.cleanup().await;
}
