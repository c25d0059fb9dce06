//! Phase 4: a simulator that throttles each project (429) and two
//! operators, one whose token bucket is above the cloud's limit (it must
//! meet 429s and still show no job failed) and one below it (it must meet
//! none, because its own bucket held polls back).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use crate::cluster::{Bench, scenario};
use crate::log;
use crate::plans::{CloudJob, Group, project_id, throttle_interval};
use crate::processes::{scrape, sim_requests, start_operator, start_sim};
use crate::results::{Results, pct};

pub async fn run(bench: &Bench, res: &mut Results) -> anyhow::Result<()> {
    let args = bench.args.clone();
    let iv = throttle_interval(&args);
    // The simulated gateway allows 5 requests/s per project (burst 5). Each
    // project gets 4 × interval-seconds jobs: 4 polls/s on average, but
    // created together, so their first polls come as one burst.
    let (rate, sim_burst) = (5.0, 5);
    let per_project = ((4.0 * iv.as_secs_f64()) as usize).max(10);
    let over = project_id(bench.run_no, 0xa001);
    let under = project_id(bench.run_no, 0xa002);
    let throttle = json!({"rate": rate, "burst": sim_burst, "retry_after": 1});
    let sim = start_sim(bench.dir.path(), "sim-throttle", scenario(Some(throttle), &[over.clone(), under.clone()]))?;
    log(format!(
        "phase 4: gateway throttling at {rate}/s per project; {per_project} jobs each for an operator above and one below that limit"
    ));
    let label_over = format!("{}-tover", bench.run);
    let label_under = format!("{}-tunder", bench.run);
    let dir = bench.dir.path();
    let op_over =
        start_operator(dir, "operator-throttle-over", &sim, &format!("scale-op={label_over}"), iv, &args.operator_arg)?;
    let mut under_args = args.operator_arg.clone();
    under_args.extend(["--ims-rate-limit".into(), "4.5".into(), "--ims-rate-burst".into(), "5".into()]);
    let op_under =
        start_operator(dir, "operator-throttle-under", &sim, &format!("scale-op={label_under}"), iv, &under_args)?;
    op_over.wait_ready(Duration::from_secs(60)).await.context("operator not ready")?;
    op_under.wait_ready(Duration::from_secs(60)).await.context("operator not ready")?;
    let mut units = bench.plan(Group::ThrottleOver, 4, per_project, &[over], 0, 1, &label_over);
    units.extend(bench.plan(Group::ThrottleUnder, 5, per_project, &[under], 0, 1, &label_under));
    let jobs: Vec<Arc<CloudJob>> = units.iter().map(|u| u.job.clone()).collect();
    bench.create_units(&sim, units, args.create_concurrency).await?;
    let longest = jobs.iter().map(|j| j.duration).fold(0.0, f64::max);
    let timeout = Duration::from_secs_f64(longest) + iv * 10 + Duration::from_secs(60);
    bench
        .wait_for("throttled jobs to finish", timeout, |t| {
            t.unfinished(Group::ThrottleOver) + t.unfinished(Group::ThrottleUnder)
        })
        .await;
    let counts = sim_requests(&sim).await?;
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
        let m = scrape(op).await.with_context(|| format!("the operator {name} the limit"))?;
        let transient = m
            .get_with("imagejob_ims_requests_total", &[("outcome", "transient")])
            .context("imagejob_ims_requests_total")?;
        let deferred = m.get("imagejob_ims_rate_limited_total").context("imagejob_ims_rate_limited_total")?;
        let mut lat = bench.tracker.lock().unwrap().late(group, None);
        res.row(
            format!("429-throttling ims-sim ({rate}/s per project), operator bucket {name} it: jobs shown failed"),
            "0",
            format!(
                "{false_failures} of {} ({throttled} × 429, {transient:.0} transient outcomes, {deferred:.0} polls deferred by the bucket, {retrying} ImageJobs showed RetryingAfterError; {unfinished} unfinished; requests {:.2} × minimum; lateness p99 {:.1} s at {})",
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
        if group == Group::ThrottleOver {
            // Without 429s this phase would prove nothing.
            res.check(
                format!(
                    "bucket above the cloud's limit: met 429s ({throttled}) and counted them transient ({transient:.0})"
                ),
                throttled > 0 && transient > 0.0,
            );
        } else {
            res.check(
                format!("bucket below the cloud's limit: no 429 ({throttled}), its own bucket deferred polls ({deferred:.0})"),
                throttled == 0 && deferred > 0.0,
            );
        }
    }
    res.ctx("throttle phase", format!("{} 429s in all", counts.throttled));
    Ok(())
}
