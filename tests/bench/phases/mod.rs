//! The phases, in the order they run; each file is one phase. Only this
//! file knows the order and what one phase hands to the next.

mod burst;
mod lifecycle;
mod overload;
mod policies;
mod restart;
mod throttle;

use std::time::Duration;

use anyhow::Context as _;

use crate::cluster::{Bench, scenario};
use crate::plans::project_id;
use crate::processes::{start_operator, start_sim};
use crate::results::{Results, machine};
use crate::tracking::spawn_watch;

/// Sizes derived from the arguments.
pub struct Sizes {
    pub projects: usize,
    pub namespaces: usize,
    pub shared_groups: usize,
    pub burst: usize,
    /// ImageJobs per poll policy in phase 5.
    pub policy_jobs: usize,
}

impl Sizes {
    fn of(args: &crate::Args) -> Self {
        // One project per 100 ImageJobs, and at most 4 polls/s per project on
        // average (the default bucket allows 10/s).
        let per_project = (4.0 * args.interval.as_secs_f64()).clamp(1.0, 100.0) as usize;
        Sizes {
            projects: args.projects.unwrap_or(args.jobs.div_ceil(per_project).max(1)),
            namespaces: args.namespaces.unwrap_or((args.jobs / 10).clamp(1, 20)),
            shared_groups: args.shared_groups.unwrap_or(args.jobs / 100),
            burst: args.burst.unwrap_or(args.jobs.min(1000)),
            policy_jobs: args.policy_jobs.unwrap_or((args.jobs / 4).min(500)),
        }
    }
}

pub async fn run(bench: &mut Bench, res: &mut Results) -> anyhow::Result<()> {
    let args = bench.args.clone();
    res.ctx("machine", machine());
    if args.overload > 0 {
        bench.create_namespaces(args.namespaces.unwrap_or(10)).await?;
        let watch = spawn_watch(&bench.client, &bench.run, bench.tracker.clone());
        overload::run(bench, res, args.overload).await?;
        watch.abort();
        return Ok(());
    }
    let sizes = Sizes::of(&args);
    res.ctx("run", format!("{} ImageJobs ({} groups of {} share a cloud job), {} projects, {} namespaces, interval {}, lifetime {:.1}–{:.1} intervals",
        args.jobs, sizes.shared_groups, args.share_k, sizes.projects, sizes.namespaces, humantime::format_duration(args.interval), 0.8 * args.lifetime, 1.2 * args.lifetime));

    bench.create_namespaces(sizes.namespaces).await?;
    let projects: Vec<String> = (0..sizes.projects).map(|p| project_id(bench.run_no, p)).collect();
    let sim = start_sim(bench.dir.path(), "sim-main", scenario(None, &projects))?;
    let label = format!("{}-main", bench.run);
    let selector = format!("scale-op={label}");
    let op = start_operator(bench.dir.path(), "operator-main", &sim, &selector, args.interval, &args.operator_arg)?;
    let watch = spawn_watch(&bench.client, &bench.run, bench.tracker.clone());
    op.wait_ready(Duration::from_secs(60)).await.context("operator not ready")?;

    let late_goal = lifecycle::run(bench, res, &sim, &op, &projects, &sizes, &label).await?;
    let restarted = restart::run(bench, res, op, &sim, &selector).await?;
    if sizes.burst > 0 {
        burst::run(bench, res, &sim, &projects, sizes.burst, &label, late_goal).await?;
    }
    drop(restarted);
    drop(sim);
    if args.throttle {
        throttle::run(bench, res).await?;
    }
    if sizes.policy_jobs > 0 {
        policies::run(bench, res, sizes.policy_jobs).await?;
    }
    watch.abort();
    Ok(())
}
