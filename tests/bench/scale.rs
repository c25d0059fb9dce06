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
//! 5. policies: the progress shapes of `sim::shapes` tracked twice, by
//!    `--policy-jobs` ImageJobs with `pollPolicy: Fixed` and as many with
//!    `Adaptive` (twin cloud jobs, one operator per policy): requests,
//!    lateness from SUCCESS to Succeeded, status writes and CPU per shape.
//! 6. overload (`--overload N`, run alone instead of 1–5): N running
//!    ImageJobs behind a cloud that answers in `--overload-latency`, more
//!    polls due than the reconcile slots serve; then N new ImageJobs: time
//!    from their create call to their first status.
//!
//! Numbers come from the simulator's counters (`/admin/requests`), the
//! operator's `/metrics`, the API server's `/metrics`
//! (`apiserver_request_total`), a watch on the ImageJobs (each status change
//! seen, and when) and `/proc` (VmHWM, utime+stime). A number that cannot be
//! read fails the run; it never counts as 0.
//!
//! Rooms: `plans` (the scripted cloud jobs), `tracking` (the watch),
//! `processes` (ims-sim, the operator, `/proc`), `cluster` (namespaces,
//! Secrets, ImageJobs, the API server's counters), `results` (the table and
//! the `--ci` checks), `phases/` (one file per phase).

mod cluster;
#[path = "../common/mod.rs"]
mod common;
mod phases;
mod plans;
mod processes;
mod results;
mod tracking;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;

use cluster::Bench;
use results::{Results, print_results};

#[derive(Parser, Debug, Clone)]
#[command(about = "ImageJob scale benchmark on the local cluster")]
pub struct Args {
    /// ImageJobs in the main phase.
    #[arg(long, default_value_t = 1000)]
    pub jobs: usize,
    /// Poll interval of the operator (--poll-interval).
    #[arg(long, default_value = "30s", value_parser = parse_dur)]
    pub interval: Duration,
    /// Job lifetime in intervals; each job lasts 0.8–1.2 × this.
    #[arg(long, default_value_t = 10.0)]
    pub lifetime: f64,
    /// Cloud projects (default: one per 100 ImageJobs).
    #[arg(long)]
    pub projects: Option<usize>,
    /// Namespaces, one AK/SK Secret each (default: min(20, jobs/10)).
    #[arg(long)]
    pub namespaces: Option<usize>,
    /// ImageJobs per shared cloud job.
    #[arg(long, default_value_t = 5)]
    pub share_k: usize,
    /// Groups of `share-k` ImageJobs naming one cloud job (default: jobs/100).
    #[arg(long)]
    pub shared_groups: Option<usize>,
    /// ImageJobs created at once in the burst phase (default: min(1000, jobs); 0 skips).
    #[arg(long)]
    pub burst: Option<usize>,
    /// Also run the burst in a single project (bounded by --ims-rate-limit);
    /// default: on, except with --ci.
    #[arg(long, action = clap::ArgAction::Set)]
    pub single_project_burst: Option<bool>,
    /// Run the 429-throttling phase.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub throttle: bool,
    /// ImageJobs per poll policy in the policy phase (default: a quarter of --jobs, at most 500; 0 skips it).
    #[arg(long)]
    pub policy_jobs: Option<usize>,
    /// Poll interval of the policy phase (default: a quarter of --interval, at most 10s).
    #[arg(long, value_parser = parse_dur)]
    pub policy_interval: Option<Duration>,
    /// Running time of the policy phase's longest jobs, in its intervals (each runs 0.6–1.0 × this).
    #[arg(long, default_value_t = 100.0)]
    pub policy_lifetime: f64,
    /// Run only the overload phase: this many ImageJobs polled behind a
    /// slow cloud, then as many new ones; their first status (0: skip).
    #[arg(long, default_value_t = 0)]
    pub overload: usize,
    /// The slow cloud's answer time in the overload phase.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub overload_latency: Duration,
    /// Create calls in flight.
    #[arg(long, default_value_t = 32)]
    pub create_concurrency: usize,
    /// Assert the machine-independent ratios; exit non-zero when one fails.
    #[arg(long)]
    pub ci: bool,
    /// Extra argument for the operator (repeatable), e.g. --operator-arg=--concurrency=64.
    #[arg(long, allow_hyphen_values = true)]
    pub operator_arg: Vec<String>,
    /// Keep the namespaces (default: delete them at the end).
    #[arg(long)]
    pub keep: bool,
    /// Keep the operators' logs and the scenarios (printed at the end).
    #[arg(long)]
    pub keep_logs: bool,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    pub bench: bool,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

pub fn log(msg: impl AsRef<str>) {
    eprintln!("[scale {:>7.1}s] {}", started().elapsed().as_secs_f64(), msg.as_ref());
}

fn started() -> Instant {
    static T: OnceLock<Instant> = OnceLock::new();
    *T.get_or_init(Instant::now)
}

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
    let outcome = phases::run(&mut bench, &mut results).await;
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
