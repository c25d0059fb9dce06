//! Plans: the cloud jobs the bench scripts into ims-sim (when each one
//! changes, and to what), and the ImageJobs that name them.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use imagejob_operator::crd::PollPolicy;
use imagejob_operator::sim::shapes::Shape;
use serde_json::{Value, json};

use crate::Args;
use crate::cluster::Bench;

pub const IMAGE_ID: &str = "49e9447f-7dff-41e0-8036-f66fe5488c8b";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Main,
    BurstMulti,
    BurstSingle,
    ThrottleOver,
    ThrottleUnder,
    PolicyFixed,
    PolicyAdaptive,
    OverloadOld,
    OverloadNew,
}

impl Group {
    /// The group whose ImageJobs carry `spec.pollPolicy: policy`.
    pub fn of_policy(policy: PollPolicy) -> Self {
        match policy {
            PollPolicy::Fixed => Group::PolicyFixed,
            PollPolicy::Adaptive => Group::PolicyAdaptive,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Step {
    pub after: f64,
    pub status: &'static str,
    pub progress: Option<i32>,
}

/// One cloud job: its script and when its clock started.
#[derive(Debug)]
pub struct CloudJob {
    pub project: String,
    pub job_id: String,
    pub steps: Vec<Step>,
    pub fails: bool,
    /// Seconds from the clock start to SUCCESS/FAIL.
    pub duration: f64,
    pub t0: OnceLock<Instant>,
    pub sharers: usize,
    pub group: Group,
    /// A progress shape from `sim::shapes` and its INIT time (s), instead of `steps`' progress.
    pub shape: Option<(Shape, f64)>,
    /// Every answer delayed this long (a slow cloud).
    pub latency: Option<Duration>,
}

impl CloudJob {
    pub fn new(
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
        CloudJob {
            project,
            job_id,
            steps,
            fails,
            duration,
            t0: OnceLock::new(),
            sharers: 1,
            group,
            shape: None,
            latency: None,
        }
    }

    /// A job whose progress follows `shape`: INIT for `init`, RUNNING for
    /// `running`, then SUCCESS. Its steps are only INIT and SUCCESS (the
    /// tracker measures when the end is seen, not each percent).
    pub fn shaped(project: String, job_id: String, shape: Shape, init: f64, running: f64, group: Group) -> Self {
        let duration = init + running;
        let steps = vec![
            Step { after: 0.0, status: "INIT", progress: None },
            Step { after: duration, status: "SUCCESS", progress: None },
        ];
        let shape = Some((shape, init));
        CloudJob {
            project,
            job_id,
            steps,
            fails: false,
            duration,
            t0: OnceLock::new(),
            sharers: 1,
            group,
            shape,
            latency: None,
        }
    }

    /// The scenario job definition for the simulator's admin API.
    pub fn sim_def(&self) -> Value {
        let phases = match self.shape {
            Some((shape, init)) => {
                let running = Duration::from_secs_f64(self.duration - init);
                shape.phases(Duration::from_secs_f64(init), running, IMAGE_ID)
            }
            None => self.step_phases(),
        };
        let mut def = json!({"job_type": "imsCreateImageByInstance", "clock": "sim_start", "image_name": "scale-image", "phases": phases});
        if let Some(delay) = self.latency {
            def["faults"] = json!([{"fault": "latency", "delay": humantime::format_duration(delay).to_string()}]);
        }
        def
    }

    fn step_phases(&self) -> Vec<Value> {
        self.steps
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
            .collect()
    }

    /// When the cloud started showing what this status shows.
    pub fn entered(&self, job_status: &str, progress: Option<i32>) -> Option<f64> {
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
    pub fn min_requests(&self, interval: f64) -> f64 {
        self.duration / interval + 1.0
    }
}

/// Deterministic spread in [0, 1).
pub fn frac(i: usize) -> f64 {
    (i as f64 * 0.618_033_988_749_895).fract()
}

pub fn project_id(run: u32, p: usize) -> String {
    format!("{run:08x}{:024x}", p)
}

pub fn job_id(run: u32, tag: u8, j: usize) -> String {
    format!("{run:08x}{tag:02x}{j:022x}")
}

pub struct Unit {
    pub job: Arc<CloudJob>,
    pub objects: Vec<(String, String)>,
    pub group: Group,
    pub op_label: String,
    /// `spec.pollPolicy` of its ImageJobs (none: the operator's default).
    pub policy: Option<PollPolicy>,
}

impl Bench {
    /// Cloud jobs for `count` ImageJobs, `groups` of them shared by `k`.
    #[allow(clippy::too_many_arguments)]
    pub fn plan(
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
            units.push(Unit { job: Arc::new(job), objects, group, op_label: op_label.to_owned(), policy: None });
            made += sharers;
            j += 1;
        }
        units
    }
}

impl Bench {
    /// Twin cloud jobs for the poll-policy comparison, `count` per policy,
    /// the shapes in turn: INIT for 0.5–3 intervals, then RUNNING for 0.6–1.0
    /// × `lifetime` intervals. The twins share a script but not a job ID (so
    /// nothing coalesces their requests) nor a project (nor a bucket); they
    /// come out in pairs, so both policies' jobs start at the same moments.
    pub fn plan_policies(
        &self,
        count: usize,
        interval: f64,
        lifetime: f64,
        projects: [&[String]; 2],
        labels: [&str; 2],
    ) -> Vec<Unit> {
        let mut units = Vec::with_capacity(2 * count);
        for j in 0..count {
            let shape = Shape::ALL[j % Shape::ALL.len()];
            let running = lifetime * interval * (0.6 + 0.4 * frac(j));
            // √2 − 1, not `frac`'s golden ratio: INIT and running times
            // spread independently instead of rising together.
            let init = interval * (0.5 + 2.5 * (j as f64 * 0.414_213_562_373_095).fract());
            for (i, policy) in [PollPolicy::Fixed, PollPolicy::Adaptive].into_iter().enumerate() {
                let tag = 6 + i as u8;
                let group = Group::of_policy(policy);
                let project = projects[i][j % projects[i].len()].clone();
                let job = CloudJob::shaped(project, job_id(self.run_no, tag, j), shape, init, running, group);
                let ns = self.namespaces[j % self.namespaces.len()].clone();
                let objects = vec![(ns, format!("ij-{tag:02x}-{j:05}-0"))];
                units.push(Unit {
                    job: Arc::new(job),
                    objects,
                    group,
                    op_label: labels[i].to_owned(),
                    policy: Some(policy),
                });
            }
        }
        units
    }
}

pub fn throttle_interval(args: &Args) -> Duration {
    args.interval.min(Duration::from_secs(10))
}
