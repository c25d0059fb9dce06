//! The one operator-process harness (e2e tests, the RBAC test, the bench):
//! start the `imagejob-operator` binary, read its `/metrics`, stop it with
//! SIGTERM or kill it. A metric that is not there is an error, never 0.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running operator process, killed on drop. Its stderr (the log) goes to
/// a file; when a test panics, the log's tail is printed.
pub struct Operator {
    child: Child,
    /// `http://127.0.0.1:PORT` (the operator's `--http-addr`).
    pub metrics_url: String,
    log: PathBuf,
    _log_file: Option<tempfile::NamedTempFile>,
    spawned: Instant,
}

impl Operator {
    /// The operator binary with the test cluster's kubeconfig and `RUST_LOG`
    /// from `E2E_OPERATOR_LOG` (default `warn`): add args and env, then `spawn`.
    pub fn binary() -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagejob-operator"));
        cmd.env("KUBECONFIG", super::kubeconfig_path())
            .env("RUST_LOG", std::env::var("E2E_OPERATOR_LOG").unwrap_or_else(|_| "warn".into()));
        cmd
    }

    /// Starts `cmd` with `--http-addr` on a free loopback port; the log goes
    /// to `log` (or a temporary file).
    pub fn spawn(mut cmd: Command, log: Option<&Path>) -> std::io::Result<Self> {
        let port = free_port();
        let (log, temp) = match log {
            Some(p) => (p.to_owned(), None),
            None => {
                let t = tempfile::Builder::new().prefix("operator-").suffix(".log").tempfile()?;
                (t.path().to_owned(), Some(t))
            }
        };
        let child = cmd
            .args(["--http-addr", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .spawn()?;
        Ok(Operator {
            child,
            metrics_url: format!("http://127.0.0.1:{port}"),
            log,
            _log_file: temp,
            spawned: Instant::now(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the operator has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The scraped `/metrics`; `Err` when the operator does not answer.
    pub async fn try_metrics(&self) -> Result<Metrics, String> {
        let url = format!("{}/metrics", self.metrics_url);
        let resp = reqwest::get(&url).await.map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: {}", resp.status()));
        }
        Ok(Metrics(resp.text().await.map_err(|e| format!("GET {url}: {e}"))?))
    }

    /// The scraped `/metrics`; panics when the operator does not answer.
    pub async fn metrics(&self) -> Metrics {
        self.try_metrics().await.unwrap_or_else(|e| panic!("operator metrics unreadable: {e}"))
    }

    /// One metric summed over its label sets. Panics when the operator does
    /// not answer or does not export the metric.
    pub async fn metric(&self, name: &str) -> f64 {
        self.metrics().await.value(name)
    }

    /// One metric over the label sets that carry all `labels`.
    pub async fn metric_with(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metrics().await.value_with(name, labels)
    }

    /// For polling an operator that may have exited: `None` when it does
    /// not answer. Panics when it answers without the metric.
    pub async fn try_metric(&self, name: &str) -> Option<f64> {
        Some(self.try_metrics().await.ok()?.value(name))
    }

    pub async fn ready(&self) -> bool {
        match reqwest::get(format!("{}/readyz", self.metrics_url)).await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    /// Time from spawn until `/readyz` answered, or `None` after `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Option<Duration> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.ready().await {
                return Some(self.spawned.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// True once the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().is_ok_and(|status| status.is_some())
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then up to `timeout` for the process to exit; killed and
    /// `Err` when it ignores the signal.
    pub fn terminate_within(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let sent = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        if !sent.as_ref().is_ok_and(|s| s.success()) {
            return Err(format!("could not send SIGTERM to {}: {sent:?}", self.pid()));
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        Err(format!("operator {} ignored SIGTERM for {timeout:?}", self.pid()))
    }

    /// SIGTERM and wait (15 s at most) for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.terminate_within(Duration::from_secs(15)).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- operator {} log, last {} lines:", self.metrics_url, tail.len());
            tail.iter().rev().for_each(|l| eprintln!("{l}"));
        }
    }
}

/// Labelled counters that prometheus-client leaves out of `/metrics` until
/// their first series exists: absent, they read 0. Each is asserted > 0
/// somewhere (e2e_promises, e2e_rbac), so a rename still fails a test.
const FAMILIES_ABSENT_UNTIL_USED: [&str; 3] =
    ["imagejob_reconciles_total", "imagejob_ims_requests_total", "imagejob_events_total"];

/// A Prometheus text exposition (what `/metrics` answers).
#[derive(Clone, Debug)]
pub struct Metrics(pub String);

impl Metrics {
    /// The metric summed over the label sets carrying all `labels`; `None`
    /// when the exposition neither has a sample of that name nor declares
    /// its family (a family with no series yet counts as 0).
    pub fn get_with(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut declared = false;
        let mut sum = 0.0;
        for line in self.0.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split(' ');
                let (family, kind) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
                declared |= match kind {
                    "counter" => name.strip_suffix("_total") == Some(family),
                    "histogram" => ["_count", "_sum", "_bucket"].iter().any(|s| name.strip_suffix(s) == Some(family)),
                    _ => name == family,
                };
                continue;
            }
            if line.starts_with('#') || line.split(['{', ' ']).next() != Some(name) {
                continue;
            }
            declared = true;
            let has = |(k, v): &(&str, &str)| line.contains(&format!("{k}=\"{v}\""));
            if labels.iter().all(has)
                && let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok())
            {
                sum += v;
            }
        }
        (declared || FAMILIES_ABSENT_UNTIL_USED.contains(&name)).then_some(sum)
    }

    /// The sum over the samples named `name` that carry all `labels`;
    /// `None` when there is no such sample (a declared family or another
    /// label set is not this series): for a count that must really be there.
    pub fn series(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let samples: Vec<f64> = self
            .0
            .lines()
            .filter(|l| !l.starts_with('#') && l.split(['{', ' ']).next() == Some(name))
            .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .collect();
        (!samples.is_empty()).then(|| samples.iter().sum())
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.get_with(name, &[])
    }

    /// Like `get`, but a missing metric panics.
    pub fn value(&self, name: &str) -> f64 {
        self.value_with(name, &[])
    }

    pub fn value_with(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get_with(name, labels)
            .unwrap_or_else(|| panic!("metric {name} is not exported; the operator answered:\n{}", self.0))
    }
}

/// `name` summed over its label sets in a `/metrics` text; panics when absent.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    Metrics(text.to_owned()).value(name)
}

/// The operator's metrics exposition with one sample in every labelled
/// family (a family without label sets is not rendered), with label values
/// the alerts and the dashboard use: what chart and observability tests
/// compare the alerts' and dashboard's series against.
pub fn sampled_exposition() -> String {
    use imagejob_operator::crd::Phase;
    use imagejob_operator::metrics::{Metrics, OutcomeLabels, PhaseLabels, ReasonLabels, ResultLabels};
    let metrics = Metrics::default();
    metrics.imagejobs.get_or_create(&PhaseLabels { phase: Phase::Failed }).set(0);
    metrics.ims_requests.get_or_create(&OutcomeLabels { outcome: "success" }).inc();
    metrics.reconciles.get_or_create(&ResultLabels { result: "error" }).inc();
    metrics.events.get_or_create(&ReasonLabels { reason: "JobFailed".into() }).inc();
    metrics.render()
}

#[cfg(test)]
mod tests {
    const TEXT: &str = "# HELP imagejob_ims_requests IMS job queries.\n# TYPE imagejob_ims_requests counter\n\
        imagejob_ims_requests_total{outcome=\"success\"} 3\nimagejob_ims_requests_total{outcome=\"transient\"} 2\n\
        # TYPE imagejob_events counter\n# TYPE imagejob_leader gauge\n# TYPE imagejob_reconcile_duration_seconds histogram\n\
        imagejob_reconcile_duration_seconds_sum 0.5\nimagejob_reconcile_duration_seconds_count 4\n";

    #[test]
    fn sums_declares_and_refuses() {
        let m = super::Metrics(TEXT.into());
        assert_eq!(m.get("imagejob_ims_requests_total"), Some(5.0));
        assert_eq!(m.get_with("imagejob_ims_requests_total", &[("outcome", "transient")]), Some(2.0));
        assert_eq!(m.get("imagejob_events_total"), Some(0.0), "declared, no series yet");
        assert_eq!(m.get("imagejob_reconcile_duration_seconds_count"), Some(4.0));
        assert_eq!(m.get("imagejob_leader"), Some(0.0));
        assert_eq!(m.get("imagejob_renamed_total"), None);
        assert_eq!(m.get("imagejob_reconciles_total"), Some(0.0), "labelled, no series yet");
        assert_eq!(m.get("imagejob_ims_requests"), None, "the family name is not a sample");
    }

    #[test]
    fn a_series_must_be_there() {
        let m = super::Metrics(TEXT.into());
        assert_eq!(m.series("imagejob_ims_requests_total", &[("outcome", "success")]), Some(3.0));
        assert_eq!(m.series("imagejob_ims_requests_total", &[("outcome", "forbidden")]), None, "no such label set");
        assert_eq!(m.series("imagejob_events_total", &[]), None, "declared, no sample: not 0");
        let zero = super::Metrics("imagejob_imagejobs{phase=\"Running\"} 0\n".into());
        assert_eq!(zero.series("imagejob_imagejobs", &[("phase", "Running")]), Some(0.0), "a sample of 0 is there");
    }
}
