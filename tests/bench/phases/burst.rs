//! Phase 3: `--burst` ImageJobs created at once, over all projects, then
//! (unless `--ci`) in one project: time from the create call to the first
//! status, and whether one busy project delays the others.

use std::time::{Duration, Instant};

use crate::cluster::Bench;
use crate::common::e2e::Sim;
use crate::log;
use crate::plans::{Group, project_id};
use crate::results::{Results, pct};

/// The operator's default outbound bucket per endpoint and project.
const RATE: f64 = 10.0;
const RATE_BURST: f64 = 20.0;
/// What a first status may take beyond the project's bucket: the
/// reconcile, one cloud request and one status write.
const FIRST_STATUS_SLACK: f64 = 5.0;

pub async fn run(
    bench: &Bench,
    res: &mut Results,
    sim: &Sim,
    projects: &[String],
    burst: usize,
    label: &str,
    late_goal: f64,
) -> anyhow::Result<()> {
    let args = &bench.args;
    let n_projects = projects.len();
    log(format!("phase 3: {burst} ImageJobs at once over {n_projects} projects"));
    let units = bench.plan(Group::BurstMulti, 2, burst, projects, 0, 1, label);
    let took = bench.create_units(sim, units, args.create_concurrency * 2).await?;
    let all_seen = bench
        .wait_for("first status of the burst", Duration::from_secs(120), |t| t.without_status(Group::BurstMulti))
        .await;
    let (mut lat, missing) = bench.tracker.lock().unwrap().first_status_latencies(Group::BurstMulti);
    // The bucket lets RATE_BURST polls through at once, then RATE per second.
    let per_project = burst.div_ceil(n_projects) as f64;
    // Latency counts from each create call: the later ones wait behind the
    // earlier ones, so the time creating took is part of the bound.
    let goal = (per_project - RATE_BURST).max(0.0) / RATE + took.as_secs_f64() + FIRST_STATUS_SLACK;
    let p99 = pct(&mut lat, 0.99);
    res.row(
        format!("{burst} ImageJobs created at once ({n_projects} projects): first status"),
        format!("p99 ≤ {goal:.1} s"),
        format!(
            "p50 {:.2} s, p99 {p99:.2} s, max {:.2} s after the create call (creating took {:.1} s{})",
            pct(&mut lat, 0.5),
            pct(&mut lat, 1.0),
            took.as_secs_f64(),
            if missing > 0 { format!("; {missing} without status") } else { String::new() }
        ),
        Some(p99 <= goal),
    );
    res.check(format!("burst: every ImageJob got a status ({missing} did not)"), all_seen && missing == 0);
    res.check(format!("burst: first status p99 {p99:.2} s ≤ {goal:.1} s"), p99 <= goal);
    if args.single_project_burst.unwrap_or(!args.ci) && n_projects > 1 {
        single_project(bench, res, sim, burst, label, late_goal).await?;
    }
    Ok(())
}

/// The first burst's jobs keep running: they are the neighbours whose
/// lateness shows whether one busy project delays others.
async fn single_project(
    bench: &Bench,
    res: &mut Results,
    sim: &Sim,
    burst: usize,
    label: &str,
    late_goal: f64,
) -> anyhow::Result<()> {
    log(format!("phase 3b: {burst} ImageJobs at once in one project"));
    let single = vec![project_id(bench.run_no, 0xffff)];
    let units = bench.plan(Group::BurstSingle, 3, burst, &single, 0, 1, label);
    let window_start = Instant::now();
    let took = bench.create_units(sim, units, bench.args.create_concurrency * 2).await?;
    let limit_wait = Duration::from_secs_f64(burst as f64 / 5.0 + 60.0);
    let all_seen = bench
        .wait_for("first status of the one-project burst", limit_wait, |t| t.without_status(Group::BurstSingle))
        .await;
    let window = (window_start, Instant::now());
    let (mut lat, missing) = bench.tracker.lock().unwrap().first_status_latencies(Group::BurstSingle);
    let mut neighbours = bench.tracker.lock().unwrap().late(Group::BurstMulti, Some(window));
    res.row(
        format!("{burst} ImageJobs created at once (1 project)"),
        "report",
        format!("p50 {:.2} s, p99 {:.2} s, max {:.2} s (creating took {:.1} s; bounded by the project's bucket, --ims-rate-limit){}",
            pct(&mut lat, 0.5), pct(&mut lat, 0.99), pct(&mut lat, 1.0), took.as_secs_f64(),
            if missing > 0 { format!("; {missing} without status") } else { String::new() }),
        None,
    );
    let neighbours_p99 = pct(&mut neighbours, 0.99);
    res.row(
        "meanwhile, lateness of the other projects' jobs",
        format!("p99 ≤ {late_goal:.0} s"),
        format!(
            "p50 {:.1} s, p99 {neighbours_p99:.1} s, max {:.1} s ({} changes of the {burst} jobs of phase 3)",
            pct(&mut neighbours, 0.5),
            pct(&mut neighbours, 1.0),
            neighbours.len()
        ),
        Some(neighbours_p99 <= late_goal),
    );
    res.check(format!("one-project burst: every ImageJob got a status ({missing} did not)"), all_seen && missing == 0);
    res.check(
        format!("one-project burst: other projects' lateness p99 {neighbours_p99:.1} s ≤ {late_goal:.1} s"),
        neighbours_p99 <= late_goal,
    );
    Ok(())
}
