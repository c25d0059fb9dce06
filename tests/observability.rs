//! Per-ImageJob observability, proven with the real tools:
//! - the chart's PrometheusRule under `promtool check rules` and `promtool
//!   test rules` (tests/prometheus/alerts_test.yaml: each alert fires on the
//!   series that should fire it and stays quiet otherwise);
//! - kube-state-metrics v2.15.0 with the chart's CustomResourceState
//!   configuration, against the local cluster, serving series for real
//!   ImageJobs that the operator drives through `ims-sim`;
//! - Prometheus 2.42 (Debian) scraping the operator and kube-state-metrics:
//!   every query of the Grafana dashboard returns data, every alert
//!   expression is accepted.
//!
//! Tools: tests/cluster/build-observability (run on first use).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::e2e::*;
use common::{TestNamespace, client, eventually, tool};
use imagejob_operator::crd::Phase;
use serde_json::{Value, json};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/imagejob-operator");
const WAIT: Duration = Duration::from_secs(60);

fn chart_file(path: &str) -> PathBuf {
    Path::new(CHART).join(path)
}

/// kube-state-metrics from the cache, prometheus/promtool from PATH;
/// tests/cluster/build-observability provides both.
fn observability_tool(name: &str) -> PathBuf {
    let ready = |p: &Path| p.is_file();
    let cached = tool("helm").with_file_name(name);
    let installed = PathBuf::from("/usr/bin").join(name);
    if !ready(&cached) && !ready(&installed) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster/build-observability");
        let ok = Command::new("bash").arg(script).status().expect("run build-observability").success();
        assert!(ok, "tests/cluster/build-observability failed");
    }
    if ready(&cached) { cached } else { installed }
}

fn helm_template(sets: &[&str]) -> Vec<Value> {
    common::helm_template("imagejob-operator", "imagejob-system", sets)
}

/// The PrometheusRule's groups as a Prometheus rules file, with every alert.
fn rule_groups() -> Value {
    let objs = helm_template(&["prometheusRule.enabled=true", "kubeStateMetrics.customResourceState.enabled=true"]);
    let rule = objs.iter().find(|o| o["kind"] == "PrometheusRule").expect("a PrometheusRule");
    json!({"groups": rule["spec"]["groups"]})
}

fn alerts(groups: &Value) -> Vec<(String, String)> {
    groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| (r["alert"].as_str().unwrap().to_owned(), r["expr"].as_str().unwrap().to_owned()))
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(chart_file("dashboards/imagejob-operator.json")).unwrap()).unwrap()
}

/// Every `expr` of every panel, with the panel's title.
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap().to_owned();
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_owned()))
        })
        .collect()
}

// ---------------------------------------------------------------- promtool

#[test]
fn alert_rules_pass_promtool_unit_tests() {
    let promtool = observability_tool("promtool");
    let dir = tempfile::tempdir().unwrap();
    let mut groups = rule_groups();
    // Descriptions are prose; the summaries (with their templates) are tested.
    for g in groups["groups"].as_array_mut().unwrap() {
        for r in g["rules"].as_array_mut().unwrap() {
            r["annotations"].as_object_mut().unwrap().remove("description");
        }
    }
    std::fs::write(dir.path().join("rules.yaml"), serde_yaml_ng::to_string(&groups).unwrap()).unwrap();
    let tests = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/prometheus/alerts_test.yaml");
    std::fs::copy(tests, dir.path().join("alerts_test.yaml")).unwrap();

    let check = Command::new(&promtool).args(["check", "rules"]).arg(dir.path().join("rules.yaml")).output().unwrap();
    assert!(check.status.success(), "promtool check rules:\n{}", String::from_utf8_lossy(&check.stdout));
    let out =
        Command::new(&promtool).args(["test", "rules", "alerts_test.yaml"]).current_dir(dir.path()).output().unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool test rules:\n{log}");
    assert!(log.contains("SUCCESS"), "{log}");

    // Each alert is tested both firing and quiet.
    let text = std::fs::read_to_string(tests).unwrap();
    let cases: Value = serde_yaml_ng::from_str(&text).unwrap();
    for (alert, _) in alerts(&groups) {
        let checks: Vec<&Value> = cases["tests"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
            .filter(|c| c["alertname"] == alert.as_str())
            .collect();
        let fires = checks.iter().any(|c| !c["exp_alerts"].as_array().unwrap().is_empty());
        let quiet = checks.iter().any(|c| c["exp_alerts"].as_array().unwrap().is_empty());
        assert!(fires && quiet, "{alert}: needs a case where it fires and one where it stays quiet");
    }
}

/// The dashboard and the alerts use only series that exist: the operator's
/// metric families and the ones the kube-state-metrics configuration defines.
#[test]
fn dashboard_and_alerts_use_known_series() {
    let exposition = common::operator::sampled_exposition();
    let mut known: BTreeSet<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .flat_map(|l| {
            let mut parts = l.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap_or_default());
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            suffixes.iter().map(move |s| format!("{name}{s}")).collect::<Vec<_>>()
        })
        .collect();
    let ksm: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart_file("monitoring/kube-state-metrics.yaml")).unwrap())
            .unwrap();
    for r in ksm["spec"]["resources"].as_array().unwrap() {
        let prefix = r["metricNamePrefix"].as_str().unwrap();
        for m in r["metrics"].as_array().unwrap() {
            known.insert(format!("{prefix}_{}", m["name"].as_str().unwrap()));
        }
    }
    let d = dashboard();
    let mut exprs: Vec<(String, String)> = dashboard_queries(&d);
    exprs.extend(alerts(&rule_groups()));
    for (what, expr) in &exprs {
        let words = expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        for word in words.filter(|w| w.starts_with("imagejob_") || w.starts_with("kube_imagejob_")) {
            assert!(known.contains(word), "{what}: {word} is neither an operator metric nor a configured series");
        }
    }
    // The dashboard's variables come from those series too.
    for v in d["templating"]["list"].as_array().unwrap().iter().filter(|v| v["type"] == "query") {
        let q = v["query"]["query"].as_str().unwrap();
        let series = q.trim_start_matches("label_values(").split(',').next().unwrap();
        assert!(known.contains(series), "variable {}: {q}", v["name"]);
    }
}

#[test]
fn chart_ships_the_configuration_and_dashboard_as_configmaps() {
    let objs = helm_template(&[
        "kubeStateMetrics.customResourceState.enabled=true",
        "kubeStateMetrics.serviceAccount.name=kube-state-metrics",
        "kubeStateMetrics.serviceAccount.namespace=monitoring",
        "grafanaDashboard.enabled=true",
    ]);
    let find = |kind: &str, name: &str| {
        objs.iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name}"))
    };
    let ksm = find("ConfigMap", "imagejob-operator-kube-state-metrics");
    let file = std::fs::read_to_string(chart_file("monitoring/kube-state-metrics.yaml")).unwrap();
    assert_eq!(ksm["data"]["config.yaml"].as_str().unwrap().trim_end(), file.trim_end());
    let dash = find("ConfigMap", "imagejob-operator-dashboard");
    assert_eq!(dash["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value = serde_json::from_str(dash["data"]["imagejob-operator.json"].as_str().unwrap()).unwrap();
    assert_eq!(shipped, dashboard());
    let role = find("ClusterRole", "imagejob-operator-kube-state-metrics");
    assert_eq!(
        role["rules"][0],
        json!({"apiGroups": ["ims.otc.io"], "resources": ["imagejobs"], "verbs": ["list", "watch"]})
    );
    let binding = find("ClusterRoleBinding", "imagejob-operator-kube-state-metrics");
    assert_eq!(
        binding["subjects"][0],
        json!({"kind": "ServiceAccount", "name": "kube-state-metrics", "namespace": "monitoring"})
    );
    // Off by default.
    let defaults = helm_template(&[]);
    assert!(!defaults.iter().any(|o| o["metadata"]["name"].as_str().unwrap().ends_with("-dashboard")));
    assert!(!defaults.iter().any(|o| o["metadata"]["name"].as_str().unwrap().ends_with("-kube-state-metrics")));
}

// ---------------------------------------------------------------- live

/// A child process killed on drop, with its log in a temporary file.
struct Proc {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Self {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = cmd
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        Proc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get_text(url: &str) -> Option<String> {
    reqwest::get(url).await.ok()?.text().await.ok()
}

/// The samples of one ImageJob in a metrics exposition, sorted.
fn series_of(exposition: &str, namespace: &str, name: &str) -> Vec<String> {
    let needle = format!("imagejob=\"{name}\"");
    let ns = format!("namespace=\"{namespace}\"");
    let mut lines: Vec<String> = exposition
        .lines()
        .filter(|l| l.starts_with("kube_imagejob_") && l.contains(&needle) && l.contains(&ns))
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// One instant query; panics unless Prometheus accepts it.
async fn query(prom: &str, expr: &str) -> Vec<Value> {
    let http = reqwest::Client::new();
    let resp = http.get(format!("{prom}/api/v1/query")).query(&[("query", expr)]).send().await.unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "success", "Prometheus refused {expr}: {body}");
    body["data"]["result"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn kube_state_metrics_and_prometheus_serve_every_query_for_real_imagejobs() {
    let ksm_bin = observability_tool("kube-state-metrics");
    let prometheus_bin = observability_tool("prometheus");
    let client = client().await;
    install_imagejob_crd(&client).await;
    let ns = TestNamespace::new(&client, "obs").await;
    let run = unique_label();
    let (done, failed, running) =
        ("ff8080814dbd65d7014dbe0d84dd0001", "ff8080814dbd65d7014dbe0d84dd0002", "ff8080814dbd65d7014dbe0d84dd0003");
    let sim = Sim::start(json!([
        succeeding_job(done, "0s", "2s"),
        {"project_id": PROJECT, "job_id": failed, "job_type": "imsImportImageJob",
         "phases": [{"after": "0s", "status": "RUNNING", "progress": 0.2},
                    {"after": "2s", "status": "FAIL", "error_code": "IMG.0014", "fail_reason": "IaaS error"}]},
        succeeding_job(running, "0s", "1h"),
    ]));
    create_aksk_secret(&client, &ns.name, "creds", SK).await;
    let op = Operator::start(&sim, &run, &[]);
    for (name, job) in [("built", done), ("broken", failed), ("busy", running)] {
        create(&client, &ns.name, &imagejob(name, &run, job, "creds")).await;
    }
    for (name, phase) in [("built", Phase::Succeeded), ("broken", Phase::Failed), ("busy", Phase::Running)] {
        // The running one once it has reported progress.
        let progressed = |s: &imagejob_operator::crd::ImageJobStatus| phase != Phase::Running || s.progress.is_some();
        wait_status(&client, &ns.name, name, WAIT, "its phase", |s| s.phase == Some(phase) && progressed(s)).await;
    }

    // kube-state-metrics with the chart's configuration, on this namespace.
    let (ksm_port, ksm_telemetry) = (free_port(), free_port());
    let ksm = Proc::spawn(
        Command::new(&ksm_bin)
            .arg(format!("--kubeconfig={}", common::kubeconfig_path().display()))
            .arg("--custom-resource-state-only")
            .arg(format!(
                "--custom-resource-state-config-file={}",
                chart_file("monitoring/kube-state-metrics.yaml").display()
            ))
            .arg(format!("--namespaces={}", ns.name))
            .args(["--host=127.0.0.1", "--telemetry-host=127.0.0.1"])
            .arg(format!("--port={ksm_port}"))
            .arg(format!("--telemetry-port={ksm_telemetry}")),
    );
    let ksm_url = format!("http://127.0.0.1:{ksm_port}/metrics");
    let exposition =
        eventually(Duration::from_secs(60), "kube-state-metrics series for the three ImageJobs", || async {
            let text = get_text(&ksm_url).await?;
            let all = ["built", "broken", "busy"].iter().all(|n| text.contains(&format!("imagejob=\"{n}\"")));
            all.then_some(text)
        })
        .await;
    let built = series_of(&exposition, &ns.name, "built");
    println!("KSM-SERIES for ImageJob {}/built:\n{}", ns.name, built.join("\n"));
    let has = |name: &str, needles: &[&str], value: &str| {
        let lines = series_of(&exposition, &ns.name, name);
        assert!(
            lines.iter().any(|l| needles.iter().all(|n| l.contains(n)) && l.ends_with(&format!(" {value}"))),
            "no {needles:?} = {value} for {name}:\n{}\n(kube-state-metrics log: {})",
            lines.join("\n"),
            ksm.log()
        );
    };
    has("built", &["kube_imagejob_status_phase{", "phase=\"Succeeded\""], "1");
    has("built", &["kube_imagejob_status_phase{", "phase=\"Running\""], "0");
    has("built", &["kube_imagejob_status_progress_percent{"], "100");
    has("built", &["kube_imagejob_status_condition{", "type=\"Ready\"", "reason=\"Succeeded\""], "1");
    has("built", &["kube_imagejob_info{", "job_type=\"imsCreateImageByInstance\"", &format!("job_id=\"{done}\"")], "1");
    has("broken", &["kube_imagejob_status_phase{", "phase=\"Failed\""], "1");
    has("broken", &["kube_imagejob_status_condition{", "type=\"Ready\"", "reason=\"JobFailed\""], "0");
    has("broken", &["kube_imagejob_status_condition{", "type=\"Stalled\"", "reason=\"JobFailed\""], "1");
    has("busy", &["kube_imagejob_status_phase{", "phase=\"Running\""], "1");
    has("busy", &["kube_imagejob_status_condition{", "type=\"Ready\"", "reason=\"JobRunning\""], "0");

    // Prometheus scraping both, labelled as the chart's ServiceMonitor would
    // label the operator (so the alerts' release selector matches).
    let dir = tempfile::tempdir().unwrap();
    let operator_target = op.metrics_url.trim_start_matches("http://");
    let config = json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "imagejob-operator-metrics",
             "static_configs": [{"targets": [operator_target], "labels": {"namespace": "imagejob-system"}}]},
            {"job_name": "kube-state-metrics", "honor_labels": true,
             "static_configs": [{"targets": [format!("127.0.0.1:{ksm_port}")]}]}
        ]
    });
    std::fs::write(dir.path().join("prometheus.yml"), serde_yaml_ng::to_string(&config).unwrap()).unwrap();
    let prom_port = free_port();
    let prometheus = Proc::spawn(
        Command::new(&prometheus_bin)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}")),
    );
    let prom = format!("http://127.0.0.1:{prom_port}");
    eventually(Duration::from_secs(60), "Prometheus scraping both targets", || async {
        let http = reqwest::Client::new();
        let resp = http.get(format!("{prom}/api/v1/query")).query(&[("query", "sum(up)")]).send().await.ok()?;
        let body: Value = resp.json().await.ok()?;
        (body["data"]["result"][0]["value"][1] == "2").then_some(())
    })
    .await;
    // Enough samples for rate() over the dashboard's interval.
    tokio::time::sleep(Duration::from_secs(12)).await;

    let d = dashboard();
    let mut empty = Vec::new();
    for (title, expr) in dashboard_queries(&d) {
        let expr = expr
            .replace("$__rate_interval", "10s")
            .replace("$namespace", &ns.name)
            .replace("$job", "imagejob-operator-metrics");
        let result = query(&prom, &expr).await;
        if result.is_empty() {
            empty.push(format!("{title}: {expr}"));
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}\n(prometheus log: {})",
        empty.join("\n"),
        prometheus.log()
    );
    let namespaces = query(&prom, "count by (namespace) (kube_imagejob_info)").await;
    assert!(namespaces.iter().any(|r| r["metric"]["namespace"] == ns.name.as_str()), "{namespaces:?}");

    // Every alert expression is accepted; those whose condition holds here
    // return the series that would fire.
    let groups = rule_groups();
    for (alert, expr) in alerts(&groups) {
        let result = query(&prom, &expr).await;
        match alert.as_str() {
            "ImageJobFailed" => assert_eq!(result.len(), 1, "{alert}: {result:?}"),
            "ImageJobStalled" => {
                let names: Vec<&str> = result.iter().filter_map(|r| r["metric"]["imagejob"].as_str()).collect();
                assert_eq!(names, ["broken"], "{alert}: {result:?}");
            }
            "ImageJobOperatorDown" => assert!(result.is_empty(), "the operator is up: {result:?}"),
            _ => {}
        }
    }
    ns.cleanup().await;
}
