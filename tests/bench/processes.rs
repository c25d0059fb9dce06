//! Processes: ims-sim and the operator (through the tests' one harness,
//! `tests/common`), and what `/proc` says about them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

use crate::common::e2e::Sim;
use crate::common::operator::{Metrics, Operator};
use crate::plans::CloudJob;

/// Starts ims-sim with `scenario`, kept as `dir/name.json`.
pub fn start_sim(dir: &Path, name: &str, scenario: Value) -> anyhow::Result<Sim> {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, scenario.to_string())?;
    Sim::spawn(&path).context("start ims-sim")
}

/// Starts the operator as the Helm chart runs it (`--log-format json`,
/// `RUST_LOG=info` unless `SCALE_OPERATOR_LOG` says otherwise), logging to
/// `dir/name.log`.
pub fn start_operator(
    dir: &Path,
    name: &str,
    sim: &Sim,
    selector: &str,
    interval: Duration,
    extra: &[String],
) -> anyhow::Result<Operator> {
    let mut cmd = Operator::binary();
    cmd.arg("run")
        .args(["--ims-endpoint", &sim.url, "--iam-endpoint", &sim.url])
        .args(["--poll-interval", &humantime::format_duration(interval).to_string()])
        .args(["--watch-label-selector", selector])
        .args(["--log-format", "json"])
        .args(extra)
        .env("RUST_LOG", std::env::var("SCALE_OPERATOR_LOG").unwrap_or_else(|_| "info".into()));
    Operator::spawn(cmd, Some(&dir.join(format!("{name}.log")))).context("start imagejob-operator")
}

/// The operator's `/metrics`; an error when it does not answer.
pub async fn scrape(op: &Operator) -> anyhow::Result<Metrics> {
    op.try_metrics().await.map_err(anyhow::Error::msg)
}

/// The simulator's request counters (`/admin/requests`).
pub async fn sim_requests(sim: &Sim) -> anyhow::Result<SimCounts> {
    let v = sim.try_all_requests().await.map_err(anyhow::Error::msg)?;
    SimCounts::parse(&v)
}

/// Requests per `project/job` and by status code, plus the total.
pub struct SimCounts {
    pub total: u64,
    pub throttled: u64,
    per_job: HashMap<String, u64>,
    throttled_per_job: HashMap<String, u64>,
}

impl SimCounts {
    fn parse(v: &Value) -> anyhow::Result<Self> {
        let number = |p: &str| v.pointer(p).and_then(Value::as_u64).with_context(|| format!("no {p} in {v}"));
        let mut per_job = HashMap::new();
        let mut throttled_per_job = HashMap::new();
        for (k, c) in v["jobs"].as_object().with_context(|| format!("no jobs in {v}"))? {
            per_job.insert(k.clone(), c["requests"].as_u64().with_context(|| format!("no requests in {c}"))?);
            throttled_per_job.insert(k.clone(), c["by_status"]["429"].as_u64().unwrap_or(0));
        }
        Ok(SimCounts {
            total: number("/total/requests")?,
            throttled: number("/throttled")?,
            per_job,
            throttled_per_job,
        })
    }

    /// Requests for one job; 0 only when the simulator lists the job
    /// without any (a job it does not list is a bench bug).
    pub fn of(&self, job: &CloudJob) -> u64 {
        let key = format!("{}/{}", job.project, job.job_id);
        *self.per_job.get(&key).unwrap_or_else(|| panic!("ims-sim does not list job {key}"))
    }

    pub fn throttled_of(&self, job: &CloudJob) -> u64 {
        self.throttled_per_job.get(&format!("{}/{}", job.project, job.job_id)).copied().unwrap_or(0)
    }
}

/// utime + stime in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clk_tck())
}

fn clk_tck() -> f64 {
    static T: OnceLock<f64> = OnceLock::new();
    *T.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `/proc/PID/status` field in KiB (VmHWM, VmRSS).
pub fn proc_kib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn cluster_pid(name: &str) -> Option<u32> {
    let cache = std::env::var_os("IMAGEJOB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/imagejob-operator"));
    std::fs::read_to_string(cache.join("cluster").join(format!("{name}.pid"))).ok()?.trim().parse().ok()
}
