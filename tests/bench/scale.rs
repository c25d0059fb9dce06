//! Scale benchmark: thousands of ImageJobs on one operator, against the local
//! cluster (tests/cluster/up) and the `ims-sim` binary, with the release build.
//!
//! ```sh
//! cargo bench --bench scale -- --jobs 10000            # the full run (about 20 min)
//! cargo bench --bench scale -- --jobs 300 --interval 5s --ci   # CI-sized, asserts ratios
//! ```
//!
//! What it does, in phases (each bounded in time and count, all on 127.0.0.1):
//! 1. main: starts ims-sim and the operator, creates `--jobs` ImageJobs over
//!    `--projects` projects and `--namespaces` namespaces (one AK/SK Secret
//!    each), `--shared-groups` of them in groups of `--share-k` naming the same
//!    cloud job. Each cloud job is added to the simulator through its admin
//!    API just before its ImageJob is created (clock `sim_start`), so the bench
//!    knows when every scripted change happens: INIT, RUNNING with stepped
//!    progress (every half interval for half the jobs, every two intervals for
//!    the others), then SUCCESS (or FAIL for one in ten) after 0.8–1.2 ×
//!    `--lifetime` intervals. Measures CPU and RSS in a steady-state window
//!    while all jobs are active, waits until all are finished, then checks
//!    that no request follows for two intervals.
//! 2. restart: SIGTERM, a new operator over the finished ImageJobs: time to
//!    /readyz and requests in the next two intervals.
//! 3. burst: `--burst` ImageJobs created at once (over all projects, then in
//!    one project): time from the create call to the first status.
//! 4. throttle: a simulator that throttles each project (429), one operator
//!    whose token bucket is above the cloud's limit and one below it.
//!
//! Numbers come from the simulator's counters (`/admin/requests`), the
//! operator's `/metrics`, the API server's `/metrics`
//! (`apiserver_request_total`), a watch on the ImageJobs (each status change
//! seen, and when) and `/proc` (VmHWM, utime+stime).

#[path = "../common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use imagejob_operator::crd::{ImageJob, Phase};

const AK: &str = "SCALEBENCHACCESSKEY";
const SK: &str = "scale-bench-secret-key";
const IMAGE_ID: &str = "49e9447f-7dff-41e0-8036-f66fe5488c8b";

#[derive(Parser, Debug, Clone)]
#[command(about = "ImageJob scale benchmark on the local cluster")]
struct Args {
    /// ImageJobs in the main phase.
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// Poll interval of the operator (--poll-interval).
    #[arg(long, default_value = "30s", value_parser = parse_dur)]
    interval: Duration,
    /// Job lifetime in intervals; each job lasts 0.8–1.2 × this.
    #[arg(long, default_value_t = 10.0)]
    lifetime: f64,
    /// Cloud projects (default: one per 100 ImageJobs).
    #[arg(long)]
    projects: Option<usize>,
    /// Namespaces, one AK/SK Secret each (default: min(20, jobs/10)).
    #[arg(long)]
    namespaces: Option<usize>,
    /// ImageJobs per shared cloud job.
    #[arg(long, default_value_t = 5)]
    share_k: usize,
    /// Groups of `share-k` ImageJobs naming one cloud job (default: jobs/100).
    #[arg(long)]
    shared_groups: Option<usize>,
    /// ImageJobs created at once in the burst phase (default: min(1000, jobs); 0 skips).
    #[arg(long)]
    burst: Option<usize>,
    /// Also run the burst in a single project (bounded by --ims-rate-limit);
    /// default: on, except with --ci.
    #[arg(long, action = clap::ArgAction::Set)]
    single_project_burst: Option<bool>,
    /// Run the 429-throttling phase.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    throttle: bool,
    /// Create calls in flight.
    #[arg(long, default_value_t = 32)]
    create_concurrency: usize,
    /// Assert the machine-independent ratios; exit non-zero when one fails.
    #[arg(long)]
    ci: bool,
    /// Extra argument for the operator (repeatable), e.g. --operator-arg=--concurrency=64.
    #[arg(long, allow_hyphen_values = true)]
    operator_arg: Vec<String>,
    /// Keep the namespaces (default: delete them at the end).
    #[arg(long)]
    keep: bool,
    /// Keep the operators' logs and the scenarios (printed at the end).
    #[arg(long)]
    keep_logs: bool,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[scale {:>7.1}s] {}", started().elapsed().as_secs_f64(), msg.as_ref());
}

fn started() -> Instant {
    static T: OnceLock<Instant> = OnceLock::new();
    *T.get_or_init(Instant::now)
}

// ---------------------------------------------------------------- plans

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Group {
    Main,
    BurstMulti,
    BurstSingle,
    ThrottleOver,
    ThrottleUnder,
}

#[derive(Clone, Debug)]
struct Step {
    after: f64,
    status: &'static str,
    progress: Option<i32>,
}

/// One cloud job: its script and when its clock started.
#[derive(Debug)]
struct CloudJob {
    project: String,
    job_id: String,
    steps: Vec<Step>,
    fails: bool,
    /// Seconds from the clock start to SUCCESS/FAIL.
    duration: f64,
    t0: OnceLock<Instant>,
    sharers: usize,
    group: Group,
}

impl CloudJob {
    fn new(
        project: String,
        job_id: String,
        duration: f64,
        interval: f64,
        fast: bool,
        fails: bool,
        group: Group,
    ) -> Self {
        let end = duration;
        let run_at = (0.1 * duration).min(interval);
        let step = if fast { interval / 2.0 } else { interval * 2.0 };
        let n = (((end - run_at) / step).ceil().max(1.0) as usize).min(90);
        let mut steps = vec![Step { after: 0.0, status: "INIT", progress: None }];
        for k in 0..n {
            let after = run_at + k as f64 * step;
            if after >= end - 0.01 {
                break;
            }
            let progress = 5 + (90 * k / n) as i32;
            steps.push(Step { after, status: "RUNNING", progress: Some(progress) });
        }
        steps.push(Step { after: end, status: if fails { "FAIL" } else { "SUCCESS" }, progress: None });
        CloudJob { project, job_id, steps, fails, duration, t0: OnceLock::new(), sharers: 1, group }
    }

    /// The scenario job definition for the simulator's admin API.
    fn sim_def(&self) -> Value {
        let phases: Vec<Value> = self
            .steps
            .iter()
            .map(|s| match s.status {
                "INIT" => json!({"after": s.after, "status": "INIT"}),
                "RUNNING" => json!({"after": s.after, "status": "RUNNING",
                    "progress": f64::from(s.progress.unwrap_or(0)) / 100.0,
                    "current_task": "CreateImageByInstanceTask"}),
                "SUCCESS" => json!({"after": s.after, "status": "SUCCESS", "image_id": IMAGE_ID,
                    "results": [{"image_id": IMAGE_ID, "project_id": self.project, "status": "success"}]}),
                _ => json!({"after": s.after, "status": "FAIL", "error_code": "IMG.0014",
                    "fail_reason": "An exception occurred when IaaS OpenStack was executing the task."}),
            })
            .collect();
        json!({"job_type": "imsCreateImageByInstance", "clock": "sim_start", "image_name": "scale-image", "phases": phases})
    }

    /// When the cloud started showing what this status shows.
    fn entered(&self, job_status: &str, progress: Option<i32>) -> Option<f64> {
        match job_status {
            "INIT" => Some(0.0),
            "SUCCESS" | "FAIL" => Some(self.duration),
            "RUNNING" => {
                let p = progress?;
                self.steps
                    .iter()
                    .filter(|s| s.status == "RUNNING")
                    .min_by_key(|s| ((s.progress.unwrap_or(0) - p).abs(), (s.after * 1000.0) as i64))
                    .map(|s| s.after)
            }
            _ => None,
        }
    }

    /// The fewest polls that show the whole lifecycle: one per interval, plus the last.
    fn min_requests(&self, interval: f64) -> f64 {
        self.duration / interval + 1.0
    }
}

/// Deterministic spread in [0, 1).
fn frac(i: usize) -> f64 {
    (i as f64 * 0.618_033_988_749_895).fract()
}

fn project_id(run: u32, p: usize) -> String {
    format!("{run:08x}{:024x}", p)
}

fn job_id(run: u32, tag: u8, j: usize) -> String {
    format!("{run:08x}{tag:02x}{j:022x}")
}

// ---------------------------------------------------------------- tracking

struct Tracked {
    job: Arc<CloudJob>,
    group: Group,
    created: Instant,
    last_hash: Option<u64>,
    last_visible: Option<(String, Option<i32>)>,
    first_status: Option<Instant>,
    finished: Option<Instant>,
    changes: u64,
    false_failure: bool,
    stalled: bool,
    retrying: bool,
}

#[derive(Default)]
struct Tracker {
    objs: HashMap<(String, String), Tracked>,
    /// (when seen, seconds late) per group.
    lateness: BTreeMap<Group, Vec<(Instant, f64)>>,
    unknown_events: u64,
    relists: u64,
    events: u64,
}

impl Tracker {
    fn observe(&mut self, ij: &ImageJob, now: Instant) {
        self.events += 1;
        let key = (ij.namespace().unwrap_or_default(), ij.name_any());
        let Some(t) = self.objs.get_mut(&key) else {
            self.unknown_events += 1;
            return;
        };
        let Some(st) = &ij.status else { return };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_vec(st).unwrap_or_default().hash(&mut h);
        let h = h.finish();
        if t.last_hash == Some(h) {
            return;
        }
        t.last_hash = Some(h);
        t.changes += 1;
        t.first_status.get_or_insert(now);
        let job_status = st.job_status.clone().unwrap_or_default();
        let is_true = |ty: &str| st.conditions.iter().any(|c| c.type_ == ty && c.status == "True");
        if (st.phase == Some(Phase::Failed) || is_true("Failed")) && !(t.job.fails && job_status == "FAIL") {
            t.false_failure = true;
        }
        t.stalled |= is_true("Stalled") && st.phase != Some(Phase::Failed);
        t.retrying |= st.conditions.iter().any(|c| c.reason == "RetryingAfterError");
        let visible = (job_status.clone(), st.progress);
        if job_status.is_empty() || t.last_visible.as_ref() == Some(&visible) {
            return;
        }
        t.last_visible = Some(visible);
        if let (Some(t0), Some(entered)) = (t.job.t0.get(), t.job.entered(&job_status, st.progress)) {
            let since = (*t0 + Duration::from_secs_f64(entered)).max(t.created);
            let late = now.saturating_duration_since(since).as_secs_f64();
            self.lateness.entry(t.group).or_default().push((now, late));
        }
        if job_status == "SUCCESS" || job_status == "FAIL" {
            t.finished.get_or_insert(now);
        }
    }

    /// Lateness samples of a group, optionally only those seen in a window.
    fn late(&self, group: Group, window: Option<(Instant, Instant)>) -> Vec<f64> {
        let all = self.lateness.get(&group).map(Vec::as_slice).unwrap_or_default();
        all.iter().filter(|(at, _)| window.is_none_or(|(a, b)| *at >= a && *at <= b)).map(|(_, l)| *l).collect()
    }

    fn of(&self, group: Group) -> impl Iterator<Item = &Tracked> {
        self.objs.values().filter(move |t| t.group == group)
    }

    fn unfinished(&self, group: Group) -> usize {
        self.of(group).filter(|t| t.finished.is_none()).count()
    }

    fn without_status(&self, group: Group) -> usize {
        self.of(group).filter(|t| t.first_status.is_none()).count()
    }
}

fn spawn_watch(client: &Client, run: &str, tracker: Arc<Mutex<Tracker>>) -> tokio::task::JoinHandle<()> {
    let api: Api<ImageJob> = Api::all(client.clone());
    let cfg = watcher::Config::default().labels(&format!("scale-bench={run}")).any_semantic();
    tokio::spawn(async move {
        let mut stream = watcher(api, cfg).default_backoff().boxed();
        while let Some(ev) = stream.next().await {
            let now = Instant::now();
            match ev {
                Ok(watcher::Event::Apply(ij) | watcher::Event::InitApply(ij)) => {
                    tracker.lock().unwrap().observe(&ij, now)
                }
                Ok(watcher::Event::InitDone) => tracker.lock().unwrap().relists += 1,
                Ok(_) => {}
                Err(e) => log(format!("bench watch error: {e}")),
            }
        }
    })
}

// ---------------------------------------------------------------- processes

struct Proc {
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn terminate(&mut self) -> anyhow::Result<()> {
        Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status()?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!("process {} ignored SIGTERM for 15 s", self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
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
fn proc_kib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn cluster_pid(name: &str) -> Option<u32> {
    let cache = std::env::var_os("IMAGEJOB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/imagejob-operator"));
    std::fs::read_to_string(cache.join("cluster").join(format!("{name}.pid"))).ok()?.trim().parse().ok()
}

struct SimProc {
    proc: Proc,
    url: String,
    http: reqwest::Client,
}

impl SimProc {
    fn start(dir: &std::path::Path, name: &str, scenario: Value) -> anyhow::Result<Self> {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, scenario.to_string())?;
        let (child, url) = common::sim_proc::spawn_ims_sim(&path).context("start ims-sim")?;
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
        Ok(SimProc { proc: Proc { child }, url, http })
    }

    async fn put_job(&self, job: &CloudJob) -> anyhow::Result<()> {
        let url = format!("{}/admin/jobs/{}/{}", self.url, job.project, job.job_id);
        let resp = self.http.put(url).body(job.sim_def().to_string()).send().await?;
        if !resp.status().is_success() {
            bail!("ims-sim refused job {}: {}", job.job_id, resp.text().await.unwrap_or_default());
        }
        Ok(())
    }

    /// Requests per `project/job` and by status code, plus the total.
    async fn requests(&self) -> anyhow::Result<SimCounts> {
        let v: Value = self.http.get(format!("{}/admin/requests", self.url)).send().await?.json().await?;
        let mut per_job = HashMap::new();
        let mut throttled_per_job = HashMap::new();
        if let Some(jobs) = v["jobs"].as_object() {
            for (k, c) in jobs {
                per_job.insert(k.clone(), c["requests"].as_u64().unwrap_or(0));
                throttled_per_job.insert(k.clone(), c["by_status"]["429"].as_u64().unwrap_or(0));
            }
        }
        Ok(SimCounts {
            total: v["total"]["requests"].as_u64().unwrap_or(0),
            throttled: v["throttled"].as_u64().unwrap_or(0),
            per_job,
            throttled_per_job,
        })
    }
}

struct SimCounts {
    total: u64,
    throttled: u64,
    per_job: HashMap<String, u64>,
    throttled_per_job: HashMap<String, u64>,
}

impl SimCounts {
    fn of(&self, job: &CloudJob) -> u64 {
        self.per_job.get(&format!("{}/{}", job.project, job.job_id)).copied().unwrap_or(0)
    }
    fn throttled_of(&self, job: &CloudJob) -> u64 {
        self.throttled_per_job.get(&format!("{}/{}", job.project, job.job_id)).copied().unwrap_or(0)
    }
}

struct OperatorProc {
    proc: Proc,
    metrics_url: String,
    spawned: Instant,
}

impl OperatorProc {
    fn start(
        dir: &std::path::Path,
        name: &str,
        sim: &SimProc,
        selector: &str,
        interval: Duration,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        let port = common::e2e::free_port();
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = Command::new(env!("CARGO_BIN_EXE_imagejob-operator"))
            .arg("run")
            .args(["--ims-endpoint", &sim.url, "--iam-endpoint", &sim.url])
            .args(["--poll-interval", &humantime::format_duration(interval).to_string()])
            .args(["--http-addr", &format!("127.0.0.1:{port}")])
            .args(["--watch-label-selector", selector])
            .args(["--log-format", "json"])
            .args(extra)
            .env("KUBECONFIG", common::kubeconfig_path())
            // What the Helm chart runs with (logLevel: info, logFormat: json).
            .env("RUST_LOG", std::env::var("SCALE_OPERATOR_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start imagejob-operator")?;
        Ok(OperatorProc {
            proc: Proc { child },
            metrics_url: format!("http://127.0.0.1:{port}"),
            spawned: Instant::now(),
        })
    }

    async fn metrics(&self) -> String {
        match reqwest::get(format!("{}/metrics", self.metrics_url)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn wait_ready(&self, timeout: Duration) -> Option<Duration> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(r) = reqwest::get(format!("{}/readyz", self.metrics_url)).await
                && r.status().is_success()
            {
                return Some(self.spawned.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

fn metric(text: &str, name: &str) -> f64 {
    common::e2e::metric_sum(text, name) + 0.0
}

fn metric_with(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.split(['{', ' ']).next() == Some(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0
}

/// `apiserver_request_total` for imagejobs/status patches, summed over codes.
/// Server-side apply is counted as verb="APPLY", other patches as "PATCH".
async fn apiserver_status_patches(client: &Client) -> anyhow::Result<f64> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await.context("API server /metrics")?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| {
            l.contains(r#"resource="imagejobs""#)
                && l.contains(r#"subresource="status""#)
                && (l.contains(r#"verb="PATCH""#) || l.contains(r#"verb="APPLY""#))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0)
}

// ---------------------------------------------------------------- cluster objects

struct Bench {
    args: Args,
    client: Client,
    run: String,
    run_no: u32,
    tracker: Arc<Mutex<Tracker>>,
    namespaces: Vec<String>,
    dir: tempfile::TempDir,
}

struct Unit {
    job: Arc<CloudJob>,
    objects: Vec<(String, String)>,
    group: Group,
    op_label: String,
}

impl Bench {
    async fn create_namespaces(&mut self, n: usize) -> anyhow::Result<()> {
        let api = Api::<Namespace>::all(self.client.clone());
        for i in 0..n {
            let name = format!("scale-{}-{i:02}", self.run);
            let ns: Namespace = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"imagejob-operator/test": "true", "scale-bench": self.run}}
            }))?;
            api.create(&PostParams::default(), &ns).await?;
            let secret: Secret = serde_json::from_value(json!({
                "metadata": {"name": "otc-credentials"},
                "stringData": {"accessKey": AK, "secretKey": SK}
            }))?;
            Api::<Secret>::namespaced(self.client.clone(), &name).create(&PostParams::default(), &secret).await?;
            self.namespaces.push(name);
        }
        Ok(())
    }

    async fn cleanup(&self) {
        if self.args.keep {
            log(format!("keeping namespaces scale-{}-*", self.run));
            return;
        }
        let api = Api::<Namespace>::all(self.client.clone());
        for ns in &self.namespaces {
            let _ = api.delete(ns, &DeleteParams::default()).await;
        }
    }

    /// PUTs each cloud job into the simulator (its clock starts), then
    /// creates its ImageJobs; `concurrency` units in flight.
    async fn create_units(&self, sim: &SimProc, units: Vec<Unit>, concurrency: usize) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(units)
            .map(|u| async move {
                sim.put_job(&u.job).await?;
                let _ = u.job.t0.set(Instant::now());
                for (ns, name) in &u.objects {
                    let ij: ImageJob = serde_json::from_value(json!({
                        "apiVersion": "ims.otc.io/v1alpha1", "kind": "ImageJob",
                        "metadata": {"name": name, "labels": {"scale-bench": self.run, "scale-op": u.op_label}},
                        "spec": {"jobId": u.job.job_id, "projectId": u.job.project, "credentialsRef": {"name": "otc-credentials"}}
                    }))?;
                    self.tracker.lock().unwrap().objs.insert(
                        (ns.clone(), name.clone()),
                        Tracked {
                            job: u.job.clone(),
                            group: u.group,
                            created: Instant::now(),
                            last_hash: None,
                            last_visible: None,
                            first_status: None,
                            finished: None,
                            changes: 0,
                            false_failure: false,
                            stalled: false,
                            retrying: false,
                        },
                    );
                    Api::<ImageJob>::namespaced(self.client.clone(), ns).create(&PostParams::default(), &ij).await?;
                }
                Ok(())
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for r in results {
            r?;
        }
        Ok(start.elapsed())
    }

    /// Cloud jobs for `count` ImageJobs, `groups` of them shared by `k`.
    #[allow(clippy::too_many_arguments)]
    fn plan(
        &self,
        group: Group,
        tag: u8,
        count: usize,
        projects: &[String],
        groups: usize,
        k: usize,
        op_label: &str,
    ) -> Vec<Unit> {
        let interval = self.args.interval.as_secs_f64();
        let lifetime =
            if matches!(group, Group::ThrottleOver | Group::ThrottleUnder) { 6.0 } else { self.args.lifetime };
        let interval = if matches!(group, Group::ThrottleOver | Group::ThrottleUnder) {
            throttle_interval(&self.args).as_secs_f64()
        } else {
            interval
        };
        let mut units = Vec::new();
        let mut made = 0;
        let mut j = 0;
        while made < count {
            let sharers = if j < groups { k.min(count - made) } else { 1 };
            let duration = lifetime * interval * (0.8 + 0.4 * frac(j));
            let project = projects[j % projects.len()].clone();
            let mut job =
                CloudJob::new(project, job_id(self.run_no, tag, j), duration, interval, j % 2 == 0, j % 10 == 9, group);
            job.sharers = sharers;
            let objects = (0..sharers)
                .map(|c| {
                    let ns = self.namespaces[(j + c) % self.namespaces.len()].clone();
                    (ns, format!("ij-{tag:02x}-{j:05}-{c}"))
                })
                .collect();
            units.push(Unit { job: Arc::new(job), objects, group, op_label: op_label.to_owned() });
            made += sharers;
            j += 1;
        }
        units
    }

    async fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&Tracker) -> usize) -> bool {
        let deadline = Instant::now() + timeout;
        let mut last_report = Instant::now();
        loop {
            let left = done(&self.tracker.lock().unwrap());
            if left == 0 {
                return true;
            }
            if Instant::now() > deadline {
                log(format!("timed out waiting for {what}: {left} left"));
                return false;
            }
            if last_report.elapsed() > Duration::from_secs(30) {
                log(format!("waiting for {what}: {left} left"));
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn throttle_interval(args: &Args) -> Duration {
    args.interval.min(Duration::from_secs(10))
}

// ---------------------------------------------------------------- results

#[derive(Default)]
struct Results {
    rows: Vec<Row>,
    context: Vec<(String, String)>,
    checks: Vec<(String, bool)>,
}

struct Row {
    target: String,
    goal: String,
    measured: String,
    met: Option<bool>,
}

impl Results {
    fn row(
        &mut self,
        target: impl Into<String>,
        goal: impl Into<String>,
        measured: impl Into<String>,
        met: Option<bool>,
    ) {
        self.rows.push(Row { target: target.into(), goal: goal.into(), measured: measured.into(), met });
    }
    fn ctx(&mut self, k: impl Into<String>, v: impl Into<String>) {
        self.context.push((k.into(), v.into()));
    }
    /// A machine-independent assertion (checked with --ci).
    fn check(&mut self, what: impl Into<String>, ok: bool) {
        self.checks.push((what.into(), ok));
    }
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next()?.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kib| format!("{:.0} GiB", kib / 1048576.0))
        .unwrap_or_default();
    format!("{cores} cores ({model}), {mem} RAM")
}

struct CpuSample {
    at: Instant,
    per_pid: Vec<(String, Option<f64>)>,
}

fn cpu_sample(procs: &[(String, Option<u32>)]) -> CpuSample {
    CpuSample { at: Instant::now(), per_pid: procs.iter().map(|(n, p)| (n.clone(), p.and_then(cpu_seconds))).collect() }
}

fn cpu_usage(a: &CpuSample, b: &CpuSample) -> Vec<(String, Option<f64>)> {
    let wall = b.at.duration_since(a.at).as_secs_f64();
    a.per_pid
        .iter()
        .zip(&b.per_pid)
        .map(|((n, x), (_, y))| (n.clone(), x.zip(*y).map(|(x, y)| 100.0 * (y - x) / wall)))
        .collect()
}

fn fmt_pct(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.1} %"))
}

// ---------------------------------------------------------------- phases

#[tokio::main]
async fn main() {
    started();
    let args = Args::parse();
    let client = common::client().await;
    common::e2e::install_imagejob_crd(&client).await;
    let run_no: u32 = rand::random();
    let mut bench = Bench {
        args: args.clone(),
        client,
        run: format!("{run_no:08x}"),
        run_no,
        tracker: Arc::default(),
        namespaces: Vec::new(),
        dir: tempfile::Builder::new().prefix("scale-bench-").tempdir().expect("temp dir"),
    };
    let mut results = Results::default();
    let outcome = run(&mut bench, &mut results).await;
    bench.cleanup().await;
    print_results(&bench, &results);
    if args.keep_logs {
        let _ = bench.dir.keep();
    }
    if let Err(e) = &outcome {
        eprintln!("scale: the benchmark did not complete: {e:#}");
    }
    if args.ci {
        let failed = results.checks.iter().filter(|c| !c.1).count() + usize::from(outcome.is_err());
        let passed = results.checks.len() - results.checks.iter().filter(|c| !c.1).count();
        for (what, ok) in &results.checks {
            println!("{} {what}", if *ok { "ok  " } else { "FAIL" });
        }
        println!("scale-ci: {passed} passed, {failed} failed");
        if failed > 0 {
            std::process::exit(1);
        }
    } else if outcome.is_err() {
        std::process::exit(1);
    }
}

async fn run(bench: &mut Bench, res: &mut Results) -> anyhow::Result<()> {
    let args = bench.args.clone();
    let interval = args.interval;
    let iv = interval.as_secs_f64();
    // One project per 100 ImageJobs, and at most 4 polls/s per project on
    // average (the default bucket allows 10/s).
    let per_project = (4.0 * iv).clamp(1.0, 100.0) as usize;
    let n_projects = args.projects.unwrap_or(args.jobs.div_ceil(per_project).max(1));
    let n_ns = args.namespaces.unwrap_or((args.jobs / 10).clamp(1, 20));
    let groups = args.shared_groups.unwrap_or(args.jobs / 100);
    let burst = args.burst.unwrap_or(args.jobs.min(1000));
    res.ctx("machine", machine());
    res.ctx("run", format!("{} ImageJobs ({} groups of {} share a cloud job), {} projects, {} namespaces, interval {}, lifetime {:.1}–{:.1} intervals",
        args.jobs, groups, args.share_k, n_projects, n_ns, humantime::format_duration(interval), 0.8 * args.lifetime, 1.2 * args.lifetime));

    bench.create_namespaces(n_ns).await?;
    let projects: Vec<String> = (0..n_projects).map(|p| project_id(bench.run_no, p)).collect();
    let scenario = |throttle: Option<Value>, projects: &[String]| {
        let mut s = json!({
            "settings": {"clock": "sim_start", "time_format": "rfc3339"},
            "projects": projects.iter().map(|p| json!({"id": p})).collect::<Vec<_>>(),
            "access_keys": [{"access": AK, "secret": SK}],
        });
        if let Some(t) = throttle {
            s["settings"]["throttle"] = t;
        }
        s
    };
    let sim = SimProc::start(bench.dir.path(), "sim-main", scenario(None, &projects))?;
    let main_label = format!("{}-main", bench.run);
    let mut op = OperatorProc::start(
        bench.dir.path(),
        "operator-main",
        &sim,
        &format!("scale-op={main_label}"),
        interval,
        &args.operator_arg,
    )?;
    let watch = spawn_watch(&bench.client, &bench.run, bench.tracker.clone());
    op.wait_ready(Duration::from_secs(60)).await.context("operator not ready")?;
    let others = |op: &OperatorProc, sim: &SimProc| {
        vec![
            ("operator".to_owned(), Some(op.proc.pid())),
            ("kube-apiserver".to_owned(), cluster_pid("kube-apiserver")),
            ("etcd".to_owned(), cluster_pid("etcd")),
            ("ims-sim".to_owned(), Some(sim.proc.pid())),
            ("bench".to_owned(), Some(std::process::id())),
        ]
    };

    // ---- phase 1: main
    let patches_before = apiserver_status_patches(&bench.client).await?;
    let units = bench.plan(Group::Main, 1, args.jobs, &projects, groups, args.share_k, &main_label);
    let main_jobs: Vec<Arc<CloudJob>> = units.iter().map(|u| u.job.clone()).collect();
    let shortest = main_jobs.iter().map(|j| j.duration).fold(f64::INFINITY, f64::min);
    log(format!("phase 1: creating {} ImageJobs on {} cloud jobs", args.jobs, main_jobs.len()));
    let create_start = Instant::now();
    let creation = bench.create_units(&sim, units, args.create_concurrency).await?;
    let create_end = Instant::now();
    log(format!("created in {:.1} s", creation.as_secs_f64()));
    res.ctx(
        "creating the main ImageJobs",
        format!(
            "{:.1} s ({:.0}/s, {} in flight)",
            creation.as_secs_f64(),
            args.jobs as f64 / creation.as_secs_f64(),
            args.create_concurrency
        ),
    );

    // Steady state: one interval after the last create, while no job has finished.
    let win_start = create_end + interval;
    let latest_end = create_start + Duration::from_secs_f64((shortest - 0.5 * iv).max(0.0));
    let win_end = (win_start + 2 * interval).min(latest_end);
    let procs = others(&op, &sim);
    let steady = if win_end > win_start + interval / 2 {
        tokio::time::sleep_until(win_start.into()).await;
        let a = cpu_sample(&procs);
        let rss_a = proc_kib(op.proc.pid(), "VmRSS");
        tokio::time::sleep_until(win_end.into()).await;
        let b = cpu_sample(&procs);
        let active = bench.tracker.lock().unwrap().unfinished(Group::Main);
        Some((cpu_usage(&a, &b), rss_a, proc_kib(op.proc.pid(), "VmRSS"), b.at.duration_since(a.at), active))
    } else {
        log("no steady-state window: creating took longer than the shortest job (raise --lifetime)");
        None
    };
    let phase_cpu_a = cpu_sample(&procs);

    let last_end = main_jobs
        .iter()
        .filter_map(|j| j.t0.get().map(|t| *t + Duration::from_secs_f64(j.duration)))
        .max()
        .unwrap_or(create_end);
    let timeout = last_end.saturating_duration_since(Instant::now()) + 4 * interval + Duration::from_secs(60);
    log("waiting until every main job is finished");
    let all_done = bench.wait_for("main jobs to finish", timeout, |t| t.unfinished(Group::Main)).await;
    let phase_cpu_b = cpu_sample(&procs);
    let settle_a = sim.requests().await?;
    log(format!(
        "all finished; {} of quiet to check that no request follows",
        humantime::format_duration(2 * interval)
    ));
    tokio::time::sleep(2 * interval).await;
    let settle_b = sim.requests().await?;
    let op_metrics = op.metrics().await;
    let patches_after = apiserver_status_patches(&bench.client).await?;
    let hwm_main = proc_kib(op.proc.pid(), "VmHWM");

    // requests per job versus the minimum
    let (mut sum_r, mut sum_min, mut sum_r_shared, mut sum_min_shared) = (0.0, 0.0, 0.0, 0.0);
    let mut per_job_ratio = Vec::new();
    let mut after_finish = 0u64;
    for j in &main_jobs {
        let r = settle_b.of(j) as f64;
        let m = j.min_requests(iv);
        after_finish += settle_b.of(j) - settle_a.of(j);
        if j.sharers > 1 {
            sum_r_shared += r;
            sum_min_shared += m;
        } else {
            sum_r += r;
            sum_min += m;
            per_job_ratio.push(r / m);
        }
    }
    let ratio = sum_r / sum_min;
    let ratio_shared = sum_r_shared / sum_min_shared;
    let (changes, false_failures, stalled, unfinished) = {
        let t = bench.tracker.lock().unwrap();
        (
            t.of(Group::Main).map(|t| t.changes).sum::<u64>(),
            t.of(Group::Main).filter(|t| t.false_failure).count(),
            t.of(Group::Main).filter(|t| t.stalled).count(),
            t.unfinished(Group::Main),
        )
    };
    let api_patches = patches_after - patches_before;
    let op_patches = metric(&op_metrics, "imagejob_status_patches_total");
    let op_requests = metric(&op_metrics, "imagejob_ims_requests_total");
    let coalesced = metric(&op_metrics, "imagejob_ims_coalesced_reads_total");
    let polls = op_requests + coalesced;
    let mut lateness = bench.tracker.lock().unwrap().late(Group::Main, None);
    let (l50, l99, lmax) = (pct(&mut lateness, 0.5), pct(&mut lateness, 0.99), pct(&mut lateness, 1.0));
    let late_goal = 1.1 * iv + 2.0;
    let p50_ratio = pct(&mut per_job_ratio, 0.5);
    let max_ratio = pct(&mut per_job_ratio, 1.0);

    res.row(
        "cloud requests per running job",
        "≤ 1.10 × (duration ÷ interval + 1)",
        format!(
            "{ratio:.3} × ({sum_r:.0} requests, minimum {sum_min:.0}); per job p50 {p50_ratio:.2}, max {max_ratio:.2}"
        ),
        Some(ratio <= 1.10),
    );
    res.check(format!("requests / minimum = {ratio:.3} ≤ 1.10"), ratio <= 1.10);
    res.row(
        "requests after SUCCESS/FAIL",
        "0",
        format!("{after_finish} in the {} after all finished", humantime::format_duration(2 * interval)),
        Some(after_finish == 0),
    );
    res.check(format!("requests after SUCCESS/FAIL = {after_finish}"), after_finish == 0);
    if groups > 0 {
        res.row(
            format!("{} ImageJobs on one job", args.share_k),
            "the requests of one",
            format!("{ratio_shared:.3} × the minimum of one ({sum_r_shared:.0} requests for {groups} jobs; {:.0} × {} ImageJobs would poll alone)", sum_min_shared, args.share_k),
            Some(ratio_shared <= 1.10),
        );
        res.check(format!("shared jobs: requests / minimum of one = {ratio_shared:.3} ≤ 1.10"), ratio_shared <= 1.10);
    }
    let patch_ratio = api_patches / changes.max(1) as f64;
    res.row(
        "status patches / distinct status changes",
        "1.00",
        format!("{patch_ratio:.3} ({api_patches:.0} PATCH imagejobs/status at the API server, {op_patches:.0} by the operator's count, {changes} changes seen by watch)"),
        Some((api_patches - changes as f64).abs() < 0.5),
    );
    // The API server counts every client's patches: on a cluster shared
    // with other work the figure can only be an upper bound, so the check
    // allows 1 % (and is exact when the bench is alone, as in CI).
    let api_ok = api_patches >= changes as f64 - 0.5 && api_patches <= changes as f64 * 1.01 + 0.5;
    res.check(
        format!("API server status patches {api_patches:.0} = changes {changes} (±1 % for other clients)"),
        api_ok,
    );
    res.check(
        format!("operator status patches {op_patches:.0} = changes {changes}"),
        (op_patches - changes as f64).abs() < 0.5,
    );
    let unchanged_polls = polls - changes as f64;
    res.row(
        "patches on polls that changed nothing",
        "0",
        format!(
            "{:.0} ({unchanged_polls:.0} of {polls:.0} polls changed nothing)",
            (api_patches - changes as f64).max(0.0)
        ),
        Some(api_patches <= changes as f64),
    );
    res.row(
        "lateness cloud change → CR status",
        format!("p99 ≤ {late_goal:.0} s"),
        format!("p50 {l50:.1} s, p99 {l99:.1} s, max {lmax:.1} s ({} changes)", lateness.len()),
        Some(l99 <= late_goal),
    );
    match &steady {
        Some((cpu, rss_a, rss_b, wall, active)) => {
            let op_cpu = cpu[0].1;
            res.row(
                format!("{} active ImageJobs: operator CPU (steady state)", active),
                "≤ 25 % of one core",
                format!("{} over {:.0} s", fmt_pct(op_cpu), wall.as_secs_f64()),
                op_cpu.map(|c| c <= 25.0),
            );
            res.ctx(
                "steady-state RSS of the operator",
                format!("{:.1} → {:.1} MiB", rss_a.unwrap_or(0.0) / 1024.0, rss_b.unwrap_or(0.0) / 1024.0),
            );
            res.ctx(
                "steady-state CPU (% of one core)",
                cpu.iter().map(|(n, c)| format!("{n} {}", fmt_pct(*c))).collect::<Vec<_>>().join(", "),
            );
        }
        None => res.row("operator CPU (steady state)", "≤ 25 % of one core", "no window (raise --lifetime)", None),
    }
    let hwm = hwm_main.unwrap_or(f64::NAN) / 1024.0;
    res.row(
        format!("{} ImageJobs: operator peak RSS (VmHWM)", args.jobs),
        "≤ 100 MiB",
        format!("{hwm:.1} MiB"),
        Some(hwm <= 100.0),
    );
    res.ctx(
        "CPU over the rest of phase 1 (% of one core)",
        cpu_usage(&phase_cpu_a, &phase_cpu_b)
            .iter()
            .map(|(n, c)| format!("{n} {}", fmt_pct(*c)))
            .collect::<Vec<_>>()
            .join(", "),
    );
    res.ctx("operator polls", format!("{op_requests:.0} cloud requests + {coalesced:.0} served by a shared answer"));
    res.ctx("bench watch", {
        let t = bench.tracker.lock().unwrap();
        format!("{} events, {} (re)lists", t.events, t.relists)
    });
    res.check(format!("all main jobs finished ({unfinished} not)"), all_done && unfinished == 0);
    res.check(format!("no job shown failed that did not fail ({false_failures})"), false_failures == 0);
    res.check(format!("no job shown stalled ({stalled})"), stalled == 0);

    // ---- phase 2: restart over finished ImageJobs
    log("phase 2: restarting the operator over the finished ImageJobs");
    op.proc.terminate()?;
    let before = sim.requests().await?;
    let op2 = OperatorProc::start(
        bench.dir.path(),
        "operator-restarted",
        &sim,
        &format!("scale-op={main_label}"),
        interval,
        &args.operator_arg,
    )?;
    let ready = op2.wait_ready(Duration::from_secs(120)).await;
    tokio::time::sleep(2 * interval).await;
    let after = sim.requests().await?;
    let restart_requests = after.total - before.total;
    let op2_metrics = op2.metrics().await;
    let op2_requests = metric(&op2_metrics, "imagejob_ims_requests_total");
    let reconciles = metric(&op2_metrics, "imagejob_reconciles_total");
    res.row(
        format!("restart with {} finished ImageJobs: cloud requests", args.jobs),
        "0",
        format!("{restart_requests} at the simulator, {op2_requests:.0} by the operator's count, in {} ({reconciles:.0} reconciles)", humantime::format_duration(2 * interval)),
        Some(restart_requests == 0),
    );
    res.check(format!("requests after a restart = {restart_requests}"), restart_requests == 0 && op2_requests == 0.0);
    let ready_s = ready.map_or(f64::NAN, |d| d.as_secs_f64());
    res.row("restart: ready (/readyz)", "≤ 10 s", format!("{ready_s:.2} s after start"), Some(ready_s <= 10.0));
    res.ctx(
        "restarted operator VmHWM",
        format!("{:.1} MiB", proc_kib(op2.proc.pid(), "VmHWM").unwrap_or(f64::NAN) / 1024.0),
    );

    // ---- phase 3: bursts
    if burst > 0 {
        log(format!("phase 3: {burst} ImageJobs at once over {n_projects} projects"));
        let units = bench.plan(Group::BurstMulti, 2, burst, &projects, 0, 1, &main_label);
        let took = bench.create_units(&sim, units, args.create_concurrency * 2).await?;
        bench
            .wait_for("first status of the burst", Duration::from_secs(120), |t| t.without_status(Group::BurstMulti))
            .await;
        let (mut lat, missing) = first_status_latencies(&bench.tracker.lock().unwrap(), Group::BurstMulti);
        res.row(
            format!("{burst} ImageJobs created at once ({n_projects} projects): first status"),
            "report",
            format!(
                "p50 {:.2} s, p99 {:.2} s, max {:.2} s after the create call (creating took {:.1} s{})",
                pct(&mut lat, 0.5),
                pct(&mut lat, 0.99),
                pct(&mut lat, 1.0),
                took.as_secs_f64(),
                if missing > 0 { format!("; {missing} without status") } else { String::new() }
            ),
            None,
        );
        if args.single_project_burst.unwrap_or(!args.ci) && n_projects > 1 {
            // The first burst's jobs keep running: they are the neighbours
            // whose lateness shows whether one busy project delays others.
            log(format!("phase 3b: {burst} ImageJobs at once in one project"));
            let single = vec![project_id(bench.run_no, 0xffff)];
            let units = bench.plan(Group::BurstSingle, 3, burst, &single, 0, 1, &main_label);
            let window_start = Instant::now();
            let took = bench.create_units(&sim, units, args.create_concurrency * 2).await?;
            let limit_wait = Duration::from_secs_f64(burst as f64 / 5.0 + 60.0);
            bench
                .wait_for("first status of the one-project burst", limit_wait, |t| t.without_status(Group::BurstSingle))
                .await;
            let window = (window_start, Instant::now());
            let (mut lat, missing) = first_status_latencies(&bench.tracker.lock().unwrap(), Group::BurstSingle);
            let mut neighbours = bench.tracker.lock().unwrap().late(Group::BurstMulti, Some(window));
            res.row(
                format!("{burst} ImageJobs created at once (1 project)"),
                "report",
                format!("p50 {:.2} s, p99 {:.2} s, max {:.2} s (creating took {:.1} s; bounded by the project's bucket, --ims-rate-limit){}",
                    pct(&mut lat, 0.5), pct(&mut lat, 0.99), pct(&mut lat, 1.0), took.as_secs_f64(),
                    if missing > 0 { format!("; {missing} without status") } else { String::new() }),
                None,
            );
            res.row(
                "meanwhile, lateness of the other projects' jobs",
                format!("p99 ≤ {late_goal:.0} s"),
                format!(
                    "p50 {:.1} s, p99 {:.1} s, max {:.1} s ({} changes of the {burst} jobs of phase 3)",
                    pct(&mut neighbours, 0.5),
                    pct(&mut neighbours, 0.99),
                    pct(&mut neighbours, 1.0),
                    neighbours.len()
                ),
                Some(pct(&mut neighbours, 0.99) <= late_goal),
            );
        }
    }
    drop(op2);
    drop(sim);

    // ---- phase 4: 429 throttling
    if args.throttle {
        throttle_phase(bench, res, &scenario).await?;
    }
    watch.abort();
    Ok(())
}

fn first_status_latencies(t: &Tracker, group: Group) -> (Vec<f64>, usize) {
    let mut lat = Vec::new();
    let mut missing = 0;
    for x in t.of(group) {
        match x.first_status {
            Some(f) => lat.push(f.saturating_duration_since(x.created).as_secs_f64()),
            None => missing += 1,
        }
    }
    (lat, missing)
}

async fn throttle_phase(
    bench: &Bench,
    res: &mut Results,
    scenario: &dyn Fn(Option<Value>, &[String]) -> Value,
) -> anyhow::Result<()> {
    let args = bench.args.clone();
    let iv = throttle_interval(&args);
    // The simulated gateway allows 5 requests/s per project (burst 5). Each
    // project gets 4 × interval-seconds jobs: 4 polls/s on average, but
    // created together, so their first polls come as one burst.
    let (rate, sim_burst) = (5.0, 5);
    let per_project = ((4.0 * iv.as_secs_f64()) as usize).max(10);
    let over = project_id(bench.run_no, 0xa001);
    let under = project_id(bench.run_no, 0xa002);
    let sim = SimProc::start(
        bench.dir.path(),
        "sim-throttle",
        scenario(Some(json!({"rate": rate, "burst": sim_burst, "retry_after": 1})), &[over.clone(), under.clone()]),
    )?;
    log(format!(
        "phase 4: gateway throttling at {rate}/s per project; {per_project} jobs each for an operator above and one below that limit"
    ));
    let label_over = format!("{}-tover", bench.run);
    let label_under = format!("{}-tunder", bench.run);
    let op_over = OperatorProc::start(
        bench.dir.path(),
        "operator-throttle-over",
        &sim,
        &format!("scale-op={label_over}"),
        iv,
        &args.operator_arg,
    )?;
    let mut under_args = args.operator_arg.clone();
    under_args.extend(["--ims-rate-limit".into(), "4.5".into(), "--ims-rate-burst".into(), "5".into()]);
    let op_under = OperatorProc::start(
        bench.dir.path(),
        "operator-throttle-under",
        &sim,
        &format!("scale-op={label_under}"),
        iv,
        &under_args,
    )?;
    op_over.wait_ready(Duration::from_secs(60)).await.context("operator not ready")?;
    op_under.wait_ready(Duration::from_secs(60)).await.context("operator not ready")?;
    let mut units = bench.plan(Group::ThrottleOver, 4, per_project, &[over], 0, 1, &label_over);
    units.extend(bench.plan(Group::ThrottleUnder, 5, per_project, &[under], 0, 1, &label_under));
    let jobs: Vec<Arc<CloudJob>> = units.iter().map(|u| u.job.clone()).collect();
    bench.create_units(&sim, units, args.create_concurrency).await?;
    let longest = jobs.iter().map(|j| j.duration).fold(0.0, f64::max);
    let timeout = Duration::from_secs_f64(longest) + 10 * iv + Duration::from_secs(60);
    bench
        .wait_for("throttled jobs to finish", timeout, |t| {
            t.unfinished(Group::ThrottleOver) + t.unfinished(Group::ThrottleUnder)
        })
        .await;
    let counts = sim.requests().await?;
    for (group, name, op, limit) in [
        (Group::ThrottleOver, "above", &op_over, "10/s burst 20 (default)"),
        (Group::ThrottleUnder, "below", &op_under, "4.5/s burst 5"),
    ] {
        let js: Vec<&Arc<CloudJob>> = jobs.iter().filter(|j| j.group == group).collect();
        let throttled: u64 = js.iter().map(|j| counts.throttled_of(j)).sum();
        let requests: u64 = js.iter().map(|j| counts.of(j)).sum();
        let min: f64 = js.iter().map(|j| j.min_requests(iv.as_secs_f64())).sum();
        let (false_failures, unfinished, retrying) = {
            let t = bench.tracker.lock().unwrap();
            (
                t.of(group).filter(|t| t.false_failure).count(),
                t.unfinished(group),
                t.of(group).filter(|t| t.retrying).count(),
            )
        };
        let m = op.metrics().await;
        let transient = metric_with(&m, "imagejob_ims_requests_total", r#"outcome="transient""#);
        let mut lat = bench.tracker.lock().unwrap().late(group, None);
        res.row(
            format!("429-throttling ims-sim ({rate}/s per project), operator bucket {name} it: jobs shown failed"),
            "0",
            format!(
                "{false_failures} of {} ({throttled} × 429, {transient:.0} transient outcomes, {retrying} ImageJobs showed RetryingAfterError; {unfinished} unfinished; requests {:.2} × minimum; lateness p99 {:.1} s at {})",
                js.len(), requests as f64 / min, pct(&mut lat, 0.99), humantime::format_duration(iv)
            ),
            Some(false_failures == 0 && unfinished == 0),
        );
        res.ctx(
            format!("operator bucket {name} the cloud's limit"),
            format!("--ims-rate-limit {limit}: {throttled} requests answered 429"),
        );
        res.check(
            format!("throttled ({name}): no job shown failed ({false_failures}), all finished ({unfinished} not)"),
            false_failures == 0 && unfinished == 0,
        );
        if group == Group::ThrottleUnder {
            res.check(format!("bucket below the cloud's limit: no 429 ({throttled})"), throttled == 0);
        }
    }
    res.ctx("throttle phase", format!("{} 429s in all", counts.throttled));
    Ok(())
}

fn print_results(bench: &Bench, res: &Results) {
    println!();
    println!("## imagejob-operator scale benchmark ({} ImageJobs)", bench.args.jobs);
    println!();
    println!("| target | goal | measured | met |");
    println!("|---|---|---|---|");
    for r in &res.rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        println!("| {} | {} | {} | {} |", r.target, r.goal, r.measured, met);
    }
    println!();
    for (k, v) in &res.context {
        println!("- {k}: {v}");
    }
    if bench.args.keep_logs {
        println!("- operator logs and scenarios: {}", bench.dir.path().display());
    }
    println!();
}
