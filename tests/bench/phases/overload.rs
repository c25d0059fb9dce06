//! Phase 6 (`--overload N`, alone): N running ImageJobs behind a cloud that
//! answers slowly, so that more polls are due than the reconcile slots can
//! serve; then N new ImageJobs. Reports how long the new ones wait for their
//! first status: without priority they queue behind every late poll.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::cluster::{Bench, scenario};
use crate::log;
use crate::plans::{CloudJob, Group, Unit, job_id, project_id};
use crate::processes::{start_operator, start_sim};
use crate::results::{Results, pct};

/// Projects enough that the per-project bucket (10/s) never binds: the
/// slow answers do.
const PROJECTS: usize = 50;

pub async fn run(bench: &Bench, res: &mut Results, n: usize) -> anyhow::Result<()> {
    let args = &bench.args;
    let (iv, latency) = (args.interval, args.overload_latency);
    let projects: Vec<String> = (0..PROJECTS).map(|p| project_id(bench.run_no, 0xb000 + p)).collect();
    let sim = start_sim(bench.dir.path(), "sim-overload", scenario(None, &projects))?;
    let label = format!("{}-overload", bench.run);
    let op = start_operator(
        bench.dir.path(),
        "operator-overload",
        &sim,
        &format!("scale-op={label}"),
        iv,
        &args.operator_arg,
    )?;
    op.wait_ready(Duration::from_secs(60)).await.context("operator not ready")?;
    log(format!(
        "phase 6: {n} running ImageJobs at {} behind a cloud answering in {}, then {n} new ones",
        humantime::format_duration(iv),
        humantime::format_duration(latency)
    ));

    let old = units(bench, Group::OverloadOld, 0x0b, n, &projects, &label);
    bench.create_units(&sim, old, args.create_concurrency).await?;
    let settle = Duration::from_secs_f64(n as f64 * latency.as_secs_f64() / 4.0 + 120.0);
    bench.wait_for("first status of the running ones", settle, |t| t.without_status(Group::OverloadOld)).await;
    // Two intervals more: every running one is due again, and late.
    tokio::time::sleep(iv * 2).await;

    let new = units(bench, Group::OverloadNew, 0x0c, n, &projects, &label);
    let took = bench.create_units(&sim, new, args.create_concurrency).await?;
    let all_seen =
        bench.wait_for("first status of the new ones", settle * 2, |t| t.without_status(Group::OverloadNew)).await;
    let (mut lat, missing) = bench.tracker.lock().unwrap().first_status_latencies(Group::OverloadNew);
    let mut late = bench.tracker.lock().unwrap().late(Group::OverloadOld, None);
    res.row(
        format!(
            "{n} new ImageJobs behind {n} running ones and a cloud answering in {}: first status",
            humantime::format_duration(latency)
        ),
        "report",
        format!(
            "p50 {:.1} s, p99 {:.1} s, max {:.1} s after the create call (creating took {:.1} s; interval {}){}",
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99),
            pct(&mut lat, 1.0),
            took.as_secs_f64(),
            humantime::format_duration(iv),
            if missing > 0 { format!("; {missing} without status") } else { String::new() }
        ),
        None,
    );
    res.row(
        "meanwhile, lateness of the running ones' changes",
        "report",
        format!("p50 {:.1} s, p99 {:.1} s ({} changes)", pct(&mut late, 0.5), pct(&mut late, 0.99), late.len()),
        None,
    );
    res.check(format!("overload: every new ImageJob got a status ({missing} did not)"), all_seen && missing == 0);
    drop(op);
    drop(sim);
    Ok(())
}

/// `n` ImageJobs on jobs that run for an hour (none ends in the phase),
/// every answer `--overload-latency` late.
fn units(bench: &Bench, group: Group, tag: u8, n: usize, projects: &[String], label: &str) -> Vec<Unit> {
    let iv = bench.args.interval.as_secs_f64();
    (0..n)
        .map(|j| {
            let project = projects[j % projects.len()].clone();
            let mut job = CloudJob::new(project, job_id(bench.run_no, tag, j), 3600.0, iv, j % 2 == 0, false, group);
            job.latency = Some(bench.args.overload_latency);
            let ns = bench.namespaces[j % bench.namespaces.len()].clone();
            Unit {
                job: Arc::new(job),
                objects: vec![(ns, format!("ij-{tag:02x}-{j:05}"))],
                group,
                op_label: label.to_owned(),
                policy: None,
            }
        })
        .collect()
}
