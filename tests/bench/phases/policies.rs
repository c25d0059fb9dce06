//! Phase 5: poll policies. Twin sets of ImageJobs, `spec.pollPolicy: Fixed`
//! and `Adaptive`, track the same scripts (the progress shapes of
//! `sim::shapes`, time compressed) against one simulator, each set on its
//! own operator so that CPU and status writes are its own: requests per job,
//! lateness from the cloud's SUCCESS to the watch showing it, status writes
//! and operator CPU, per shape and policy.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use imagejob_operator::crd::PollPolicy;
use imagejob_operator::sim::shapes::Shape;

use crate::cluster::{Bench, scenario};
use crate::common::e2e::Sim;
use crate::common::operator::Operator;
use crate::log;
use crate::plans::{Group, project_id};
use crate::processes::{SimCounts, scrape, sim_requests, start_operator, start_sim};
use crate::results::{CpuSample, Results, cpu_sample, pct};

const POLICIES: [PollPolicy; 2] = [PollPolicy::Fixed, PollPolicy::Adaptive];
/// Shapes whose progress foretells the end: where Adaptive must save.
const FORETOLD: [Shape; 5] = [Shape::Linear, Shape::Phases, Shape::LateSpeedup, Shape::LateSlowdown, Shape::Plateau];
/// Shapes the model cannot read (steps, no progress): Adaptive polls as Fixed does.
const UNREAD: [Shape; 2] = [Shape::Jumps, Shape::NoProgress];

/// `--ci` bounds, chosen with margin from measured runs (BENCHMARKS.md).
/// Adaptive requests / Fixed over the foretold shapes.
const MAX_REQUEST_RATIO: f64 = 0.77;
/// Mean lateness Fixed − Adaptive, in intervals. A difference, not a
/// ratio: the write path's delay under load adds to both and cancels out.
/// The mean, not the median: Fixed's lateness is uniform over [0, T), and
/// the median of 48 such samples strays by ±0.07 T, the mean by ±0.04 T.
/// Fixed's mean is T/2, so 0.2 T means Adaptive ≤ 0.6 × Fixed's.
const MIN_MEAN_GAIN: f64 = 0.2;
/// p99 lateness Adaptive − Fixed, in intervals, over the foretold shapes.
/// At CI size the p99 is one of the two latest jobs, so one write delayed by
/// load moves it: half an interval of slack.
const MAX_P99_LOSS: f64 = 0.5;
/// Adaptive requests / Fixed on the shapes it cannot read.
const MAX_UNREAD_RATIO: f64 = 1.10;
/// Adaptive status writes may exceed Fixed's by this share.
const WRITE_SLACK: f64 = 0.03;

/// What one policy did on a set of jobs.
#[derive(Default, Clone)]
struct Figures {
    jobs: usize,
    requests: u64,
    writes: u64,
    /// Seconds from SUCCESS to the watch showing it, per job.
    lateness: Vec<f64>,
}

impl Figures {
    fn requests_per_job(&self) -> f64 {
        self.requests as f64 / self.jobs.max(1) as f64
    }
    /// This policy's requests as a multiple of `other`'s.
    fn requests_against(&self, other: &Figures) -> f64 {
        self.requests as f64 / other.requests.max(1) as f64
    }
    fn writes_per_job(&self) -> f64 {
        self.writes as f64 / self.jobs.max(1) as f64
    }
    /// p50, p99 and max lateness.
    fn late(&self) -> (f64, f64, f64) {
        let mut l = self.lateness.clone();
        (pct(&mut l, 0.5), pct(&mut l, 0.99), pct(&mut l, 1.0))
    }
    /// NaN without samples: a figure that cannot be read fails its check.
    fn mean_late(&self) -> f64 {
        self.lateness.iter().sum::<f64>() / self.lateness.len() as f64
    }
    fn late_cell(&self) -> String {
        let (p50, p99, max) = self.late();
        format!("{p50:.2} / {p99:.2} / {max:.2}")
    }
}

/// Figures per (index in `POLICIES`, shape).
type ByShape = BTreeMap<(usize, Shape), Figures>;

/// The poll interval T of this phase.
pub fn interval(args: &crate::Args) -> Duration {
    args.policy_interval.unwrap_or((args.interval / 4).min(Duration::from_secs(10)))
}

/// `count` ImageJobs per policy.
pub async fn run(bench: &Bench, res: &mut Results, count: usize) -> anyhow::Result<()> {
    let args = &bench.args;
    let iv = interval(args);
    let per_project = (4.0 * iv.as_secs_f64()).clamp(1.0, 100.0) as usize;
    let projects: [Vec<String>; 2] = [0, 1]
        .map(|i| (0..count.div_ceil(per_project)).map(|p| project_id(bench.run_no, 0xb000 + 0x1000 * i + p)).collect());
    let sim = start_sim(bench.dir.path(), "sim-policies", scenario(None, &projects.concat()))?;
    let labels = POLICIES.map(|p| format!("{}-{p:?}", bench.run).to_lowercase());
    let ops = start_operators(bench, &sim, &labels, iv).await?;
    let units = bench.plan_policies(
        count,
        iv.as_secs_f64(),
        args.policy_lifetime,
        [&projects[0], &projects[1]],
        [&labels[0], &labels[1]],
    );
    let longest = units.iter().map(|u| u.job.duration).fold(0.0, f64::max);
    log(format!(
        "phase 5: poll policies, {count} ImageJobs each on the same {} shapes, interval {}, jobs up to {longest:.0} s",
        Shape::ALL.len(),
        humantime::format_duration(iv)
    ));
    let procs: Vec<(String, Option<u32>)> = ops.iter().map(|o| (String::new(), Some(o.pid()))).collect();
    let cpu_a = cpu_sample(&procs);
    bench.create_units(&sim, units, args.create_concurrency).await?;
    let timeout = Duration::from_secs_f64(longest) + 4 * iv + Duration::from_secs(60);
    let unfinished =
        |t: &crate::tracking::Tracker| t.unfinished(Group::PolicyFixed) + t.unfinished(Group::PolicyAdaptive);
    let done = bench.wait_for("policy jobs to finish", timeout, unfinished).await;
    let cpu_b = cpu_sample(&procs);
    let settle_a = sim_requests(&sim).await?;
    tokio::time::sleep(2 * iv).await;
    let settle_b = sim_requests(&sim).await?;
    let by = collect(bench, &settle_b);
    let patches = status_patches(&ops).await?;
    shape_table(res, &by, iv);
    report_foretold(res, &by, iv);
    report_rest(res, &by);
    check_outcomes(bench, res, count, done);
    report_after_end(bench, res, (&settle_a, &settle_b), iv);
    report_costs(res, &by, patches, (&cpu_a, &cpu_b));
    Ok(())
}

async fn start_operators(
    bench: &Bench,
    sim: &Sim,
    labels: &[String; 2],
    iv: Duration,
) -> anyhow::Result<Vec<Operator>> {
    let mut ops = Vec::new();
    for label in labels {
        let name = format!("operator-{label}");
        ops.push(start_operator(
            bench.dir.path(),
            &name,
            sim,
            &format!("scale-op={label}"),
            iv,
            &bench.args.operator_arg,
        )?);
    }
    for op in &ops {
        op.wait_ready(Duration::from_secs(60)).await.context("operator not ready")?;
    }
    Ok(ops)
}

/// Each operator's own count of status patches.
async fn status_patches(ops: &[Operator]) -> anyhow::Result<[f64; 2]> {
    let mut out = [0.0; 2];
    for (o, op) in out.iter_mut().zip(ops) {
        *o = scrape(op).await?.get("imagejob_status_patches_total").context("imagejob_status_patches_total")?;
    }
    Ok(out)
}

/// Figures per policy and shape.
fn collect(bench: &Bench, counts: &SimCounts) -> ByShape {
    let t = bench.tracker.lock().unwrap();
    let mut by = ByShape::new();
    for (i, policy) in POLICIES.into_iter().enumerate() {
        for x in t.of(Group::of_policy(policy)) {
            let Some((shape, _)) = x.job.shape else { continue };
            let f = by.entry((i, shape)).or_default();
            f.jobs += 1;
            f.requests += counts.of(&x.job);
            f.writes += x.changes;
            f.lateness.extend(x.end_lateness());
        }
    }
    by
}

/// One policy's figures over a set of shapes.
fn over(by: &ByShape, policy: usize, shapes: &[Shape]) -> Figures {
    let mut sum = Figures::default();
    for f in shapes.iter().filter_map(|s| by.get(&(policy, *s))) {
        sum.jobs += f.jobs;
        sum.requests += f.requests;
        sum.writes += f.writes;
        sum.lateness.extend(&f.lateness);
    }
    sum
}

fn row(name: &str, fixed: &Figures, adaptive: &Figures) -> Vec<String> {
    vec![
        name.to_owned(),
        fixed.jobs.to_string(),
        format!("{:.1}", fixed.requests_per_job()),
        format!("{:.1}", adaptive.requests_per_job()),
        format!("{:.2}", adaptive.requests_against(fixed)),
        fixed.late_cell(),
        adaptive.late_cell(),
        format!("{:.1} / {:.1}", fixed.writes_per_job(), adaptive.writes_per_job()),
    ]
}

/// The table per shape, and over the foretold, the unread and all shapes.
fn shape_table(res: &mut Results, by: &ByShape, iv: Duration) {
    let header = [
        "shape",
        "jobs per policy",
        "Fixed req/job",
        "Adaptive req/job",
        "ratio",
        "Fixed lateness p50 / p99 / max (s)",
        "Adaptive lateness p50 / p99 / max (s)",
        "status writes/job Fixed / Adaptive",
    ];
    let mut rows: Vec<Vec<String>> =
        Shape::ALL.iter().map(|&s| row(s.name(), &over(by, 0, &[s]), &over(by, 1, &[s]))).collect();
    for (name, shapes) in [
        ("**progress foretells the end** (first five)", &FORETOLD[..]),
        ("**steps, no progress**", &UNREAD[..]),
        ("**all**", &Shape::ALL[..]),
    ] {
        rows.push(row(name, &over(by, 0, shapes), &over(by, 1, shapes)));
    }
    let title = format!(
        "Poll policies per progress shape (T = {}; lateness: the cloud's SUCCESS → the watch shows Succeeded)",
        humantime::format_duration(iv)
    );
    res.tables.push((title, header.map(String::from).to_vec(), rows));
}

/// The targets over the shapes whose progress foretells the end.
fn report_foretold(res: &mut Results, by: &ByShape, iv: Duration) {
    let t = iv.as_secs_f64();
    let (fixed, adaptive) = (over(by, 0, &FORETOLD), over(by, 1, &FORETOLD));
    let ratio = adaptive.requests_against(&fixed);
    let ((f50, f99, _), (a50, a99, _)) = (fixed.late(), adaptive.late());
    res.row(
        "Adaptive requests, shapes whose progress foretells the end",
        "≤ 0.6 × Fixed's",
        format!("{ratio:.2} × ({:.1} against {:.1} per job)", adaptive.requests_per_job(), fixed.requests_per_job()),
        Some(ratio <= 0.6),
    );
    res.row(
        "Adaptive median lateness SUCCESS → Succeeded, same shapes",
        "≤ 0.5 × Fixed's",
        format!(
            "{:.2} × ({a50:.2} s against {f50:.2} s; mean {:.2} s against {:.2} s)",
            a50 / f50,
            adaptive.mean_late(),
            fixed.mean_late()
        ),
        Some(a50 <= 0.5 * f50),
    );
    res.row(
        "Adaptive p99 lateness, same shapes",
        "≤ 1.1 × Fixed's",
        format!("{:.2} × ({a99:.2} s against {f99:.2} s)", a99 / f99),
        Some(a99 <= 1.1 * f99),
    );
    res.check(
        format!("policies: foretold shapes: Adaptive requests {ratio:.2} × Fixed's ≤ {MAX_REQUEST_RATIO}"),
        ratio <= MAX_REQUEST_RATIO,
    );
    let gain = (fixed.mean_late() - adaptive.mean_late()) / t;
    res.check(
        format!("policies: foretold shapes: mean lateness Fixed − Adaptive = {gain:.2} T ≥ {MIN_MEAN_GAIN} T"),
        gain >= MIN_MEAN_GAIN,
    );
    let loss = (a99 - f99) / t;
    res.check(
        format!("policies: foretold shapes: p99 lateness Adaptive − Fixed = {loss:.2} T ≤ {MAX_P99_LOSS} T"),
        loss <= MAX_P99_LOSS,
    );
}

/// Shapes the model cannot read, and the worst shape.
fn report_rest(res: &mut Results, by: &ByShape) {
    let (fixed, adaptive) = (over(by, 0, &UNREAD), over(by, 1, &UNREAD));
    let ratio = adaptive.requests_against(&fixed);
    res.row(
        "Adaptive requests, steps and no progress",
        format!("≤ {MAX_UNREAD_RATIO} × Fixed's"),
        format!("{ratio:.2} ×"),
        Some(ratio <= MAX_UNREAD_RATIO),
    );
    res.check(
        format!("policies: steps and no progress: Adaptive requests {ratio:.2} × Fixed's ≤ {MAX_UNREAD_RATIO}"),
        ratio <= MAX_UNREAD_RATIO,
    );
    let worst = Shape::ALL
        .into_iter()
        .max_by(|a, b| p99_ratio(by, *a).total_cmp(&p99_ratio(by, *b)))
        .unwrap_or(Shape::EndsEarly);
    let (f, a) = (over(by, 0, &[worst]), over(by, 1, &[worst]));
    res.row(
        "worst shape for Adaptive (p99 lateness against Fixed's)",
        "report",
        format!(
            "{}: p50 / p99 / max {} s against {} s; requests {:.2} ×",
            worst.name(),
            a.late_cell(),
            f.late_cell(),
            a.requests_against(&f)
        ),
        None,
    );
}

fn p99_ratio(by: &ByShape, shape: Shape) -> f64 {
    over(by, 1, &[shape]).late().1 / over(by, 0, &[shape]).late().1
}

/// Every ImageJob showed Succeeded, none Failed or Stalled.
fn check_outcomes(bench: &Bench, res: &mut Results, count: usize, done: bool) {
    let t = bench.tracker.lock().unwrap();
    for policy in POLICIES {
        let g = Group::of_policy(policy);
        let seen = t.of(g).filter(|x| x.end_lateness().is_some()).count();
        let wrong = t.of(g).filter(|x| x.false_failure || x.stalled).count();
        res.check(
            format!("policies: {policy:?}: {seen} of {count} ImageJobs showed Succeeded, {wrong} Failed or Stalled"),
            done && seen == count && wrong == 0,
        );
    }
}

/// Requests in the two intervals after every job had finished.
fn report_after_end(bench: &Bench, res: &mut Results, (a, b): (&SimCounts, &SimCounts), iv: Duration) {
    let t = bench.tracker.lock().unwrap();
    let after = POLICIES.map(|p| t.of(Group::of_policy(p)).map(|x| b.of(&x.job) - a.of(&x.job)).sum::<u64>());
    let quiet = humantime::format_duration(2 * iv);
    res.row(
        "poll policies: requests after SUCCESS",
        "0",
        format!("Fixed {}, Adaptive {} in the {quiet} after all finished", after[0], after[1]),
        Some(after == [0, 0]),
    );
    res.check(format!("policies: requests after SUCCESS: Fixed {}, Adaptive {}", after[0], after[1]), after == [0, 0]);
}

/// Status writes (each operator's count, and the watch's) and operator CPU.
fn report_costs(res: &mut Results, by: &ByShape, patches: [f64; 2], (a, b): (&CpuSample, &CpuSample)) {
    let watched = [0, 1].map(|i| over(by, i, &Shape::ALL));
    let (f, ad) = (patches[0], patches[1]);
    let bound = f * (1.0 + WRITE_SLACK);
    res.row(
        "poll policies: status writes",
        "Adaptive ≤ Fixed's",
        format!(
            "{:.2} × ({ad:.0} against {f:.0} by the operators' counts; {} against {} status updates seen by watch)",
            ad / f,
            watched[1].writes,
            watched[0].writes
        ),
        Some(ad <= f),
    );
    res.check(
        format!("policies: Adaptive status writes {ad:.0} ≤ Fixed's {f:.0} + {}%", 100.0 * WRITE_SLACK),
        ad <= bound,
    );
    let wall = b.at.duration_since(a.at).as_secs_f64();
    let cpu = [0, 1].map(|i| a.per_pid[i].1.zip(b.per_pid[i].1).map(|(x, y)| y - x));
    let cell = |i: usize| match cpu[i] {
        Some(s) => format!(
            "{:.1} % of one core ({s:.1} s, {:.2} ms per request)",
            100.0 * s / wall,
            1000.0 * s / watched[i].requests.max(1) as f64
        ),
        None => "n/a".into(),
    };
    res.row(
        "poll policies: operator CPU over the phase",
        "report",
        format!("Fixed {}, Adaptive {} over {wall:.0} s", cell(0), cell(1)),
        None,
    );
}
