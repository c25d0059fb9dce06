//! Phase 2: SIGTERM, then a new operator over the finished ImageJobs: it
//! must be ready quickly, reconcile each once, and ask the cloud nothing.

use std::time::Duration;

use anyhow::Context as _;

use crate::cluster::Bench;
use crate::common::e2e::Sim;
use crate::common::operator::Operator;
use crate::log;
use crate::processes::{proc_kib, scrape, sim_requests, start_operator};
use crate::results::Results;

/// Returns the restarted operator (it serves the burst phase).
pub async fn run(
    bench: &Bench,
    res: &mut Results,
    mut op: Operator,
    sim: &Sim,
    selector: &str,
) -> anyhow::Result<Operator> {
    let args = &bench.args;
    let interval = args.interval;
    log("phase 2: restarting the operator over the finished ImageJobs");
    let exit = op.terminate_within(Duration::from_secs(15)).map_err(anyhow::Error::msg)?;
    res.check(format!("SIGTERM: the operator exits cleanly ({exit})"), exit.success());
    let before = sim_requests(sim).await?;
    let mut op2 = start_operator(bench.dir.path(), "operator-restarted", sim, selector, interval, &args.operator_arg)?;
    let ready = op2.wait_ready(Duration::from_secs(120)).await;
    tokio::time::sleep(2 * interval).await;
    let after = sim_requests(sim).await?;
    let restart_requests = after.total - before.total;
    let m = scrape(&op2).await.context("the restarted operator")?;
    let op2_requests = m.get("imagejob_ims_requests_total").context("imagejob_ims_requests_total")?;
    let reconciles = m.get("imagejob_reconciles_total").context("imagejob_reconciles_total")?;
    res.row(
        format!("restart with {} finished ImageJobs: cloud requests", args.jobs),
        "0",
        format!("{restart_requests} at the simulator, {op2_requests:.0} by the operator's count, in {} ({reconciles:.0} reconciles)", humantime::format_duration(2 * interval)),
        Some(restart_requests == 0),
    );
    res.check(
        format!("requests after a restart = {restart_requests} (operator: {op2_requests:.0})"),
        restart_requests == 0 && op2_requests == 0.0,
    );
    // Each finished ImageJob is reconciled once on the initial list, and
    // not again: nothing changes them.
    let jobs = args.jobs as f64;
    res.check(
        format!(
            "restart: reconciles {reconciles:.0} within [{jobs:.0}, {:.0}] (each ImageJob once)",
            1.05 * jobs + 5.0
        ),
        reconciles >= jobs && reconciles <= 1.05 * jobs + 5.0,
    );
    res.check(
        format!("restart: the operator still runs after {}", humantime::format_duration(2 * interval)),
        !op2.exited(),
    );
    let ready_s = ready.map_or(f64::NAN, |d| d.as_secs_f64());
    res.row("restart: ready (/readyz)", "≤ 10 s", format!("{ready_s:.2} s after start"), Some(ready_s <= 10.0));
    res.check(format!("restart: ready after {ready_s:.2} s ≤ 10 s"), ready_s <= 10.0);
    res.ctx(
        "restarted operator VmHWM",
        format!("{:.1} MiB", proc_kib(op2.pid(), "VmHWM").unwrap_or(f64::NAN) / 1024.0),
    );
    Ok(op2)
}
