//! Phase 1: `--jobs` ImageJobs over their whole lifecycle on one operator:
//! requests per job against the fewest that show every change, status
//! writes against the visible changes the scripts make, lateness, and CPU
//! and memory in a steady-state window.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::Sizes;
use crate::cluster::{Bench, apiserver_status_patches};
use crate::common::e2e::Sim;
use crate::common::operator::Operator;
use crate::log;
use crate::plans::{CloudJob, Group};
use crate::processes::{SimCounts, cluster_pid, proc_kib, scrape, sim_requests};
use crate::results::{CpuSample, Results, cpu_sample, cpu_usage, fmt_pct, pct};

/// Requests per job may exceed the minimum by this much (a poll lands just
/// after a change) and fall short of it by this much (rounding of the last
/// interval); an operator that skipped intervals would be far below.
const RATIO_MAX: f64 = 1.10;
const RATIO_MIN: f64 = 0.95;

/// CPU, RSS before and after, window length and active ImageJobs.
type Steady = (Vec<(String, Option<f64>)>, Option<f64>, Option<f64>, Duration, usize);

/// Returns the lateness goal (later phases compare against it).
pub async fn run(
    bench: &Bench,
    res: &mut Results,
    sim: &Sim,
    op: &Operator,
    projects: &[String],
    sizes: &Sizes,
    label: &str,
) -> anyhow::Result<f64> {
    let args = &bench.args;
    let interval = args.interval;
    let patches_before = apiserver_status_patches(&bench.client).await?;
    let units = bench.plan(Group::Main, 1, args.jobs, projects, sizes.shared_groups, args.share_k, label);
    let main_jobs: Vec<Arc<CloudJob>> = units.iter().map(|u| u.job.clone()).collect();
    let shortest = main_jobs.iter().map(|j| j.duration).fold(f64::INFINITY, f64::min);
    log(format!("phase 1: creating {} ImageJobs on {} cloud jobs", args.jobs, main_jobs.len()));
    let create_start = Instant::now();
    let creation = bench.create_units(sim, units, args.create_concurrency).await?;
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

    let procs = vec![
        ("operator".to_owned(), Some(op.pid())),
        ("kube-apiserver".to_owned(), cluster_pid("kube-apiserver")),
        ("etcd".to_owned(), cluster_pid("etcd")),
        ("ims-sim".to_owned(), Some(sim.pid())),
        ("bench".to_owned(), Some(std::process::id())),
    ];
    // Steady state: one interval after the last create, while no job has finished.
    let win_start = create_end + interval;
    let latest_end = create_start + Duration::from_secs_f64((shortest - 0.5 * interval.as_secs_f64()).max(0.0));
    let steady = steady_state(bench, op, &procs, win_start, (win_start + 2 * interval).min(latest_end)).await;
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
    let settle_a = sim_requests(sim).await?;
    log(format!(
        "all finished; {} of quiet to check that no request follows",
        humantime::format_duration(2 * interval)
    ));
    tokio::time::sleep(2 * interval).await;
    let settle_b = sim_requests(sim).await?;
    let op_metrics = scrape(op).await.context("the main operator")?;
    let api_patches = apiserver_status_patches(&bench.client).await? - patches_before;
    let hwm_main = proc_kib(op.pid(), "VmHWM");

    report_requests(bench, res, &main_jobs, &settle_a, &settle_b, sizes.shared_groups);
    let op_patches = op_metrics.get("imagejob_status_patches_total").context("imagejob_status_patches_total")?;
    let op_requests = op_metrics.get("imagejob_ims_requests_total").context("imagejob_ims_requests_total")?;
    let coalesced =
        op_metrics.get("imagejob_ims_coalesced_reads_total").context("imagejob_ims_coalesced_reads_total")?;
    report_writes(bench, res, &main_jobs, api_patches, op_patches, op_requests + coalesced);
    let late_goal = report_lateness(bench, res);
    report_resources(res, args.jobs, steady, hwm_main, &phase_cpu_a, &phase_cpu_b);
    res.ctx("operator polls", format!("{op_requests:.0} cloud requests + {coalesced:.0} served by a shared answer"));
    let t = bench.tracker.lock().unwrap();
    res.ctx("bench watch", format!("{} events, {} (re)lists", t.events, t.relists));
    let (false_failures, stalled, unfinished) = (
        t.of(Group::Main).filter(|t| t.false_failure).count(),
        t.of(Group::Main).filter(|t| t.stalled).count(),
        t.unfinished(Group::Main),
    );
    res.check(format!("all main jobs finished ({unfinished} not)"), all_done && unfinished == 0);
    res.check(format!("no job shown failed that did not fail ({false_failures})"), false_failures == 0);
    res.check(format!("no job shown stalled ({stalled})"), stalled == 0);
    Ok(late_goal)
}

async fn steady_state(
    bench: &Bench,
    op: &Operator,
    procs: &[(String, Option<u32>)],
    win_start: Instant,
    win_end: Instant,
) -> Option<Steady> {
    if win_end <= win_start + bench.args.interval / 2 {
        log("no steady-state window: creating took longer than the shortest job (raise --lifetime)");
        return None;
    }
    tokio::time::sleep_until(win_start.into()).await;
    let a = cpu_sample(procs);
    let rss_a = proc_kib(op.pid(), "VmRSS");
    tokio::time::sleep_until(win_end.into()).await;
    let b = cpu_sample(procs);
    let active = bench.tracker.lock().unwrap().unfinished(Group::Main);
    Some((cpu_usage(&a, &b), rss_a, proc_kib(op.pid(), "VmRSS"), b.at.duration_since(a.at), active))
}

/// Requests per job against the minimum (both bounds), shared jobs, and
/// silence after the end.
fn report_requests(
    bench: &Bench,
    res: &mut Results,
    main_jobs: &[Arc<CloudJob>],
    settle_a: &SimCounts,
    settle_b: &SimCounts,
    groups: usize,
) {
    let args = &bench.args;
    let iv = args.interval.as_secs_f64();
    let (mut sum_r, mut sum_min, mut sum_r_shared, mut sum_min_shared) = (0.0, 0.0, 0.0, 0.0);
    let mut per_job_ratio = Vec::new();
    let mut after_finish = 0u64;
    for j in main_jobs {
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
    let p50_ratio = pct(&mut per_job_ratio, 0.5);
    let max_ratio = pct(&mut per_job_ratio, 1.0);
    let in_bounds = |r: f64| (RATIO_MIN..=RATIO_MAX).contains(&r);
    res.row(
        "cloud requests per running job",
        format!("{RATIO_MIN:.2}–{RATIO_MAX:.2} × (duration ÷ interval + 1)"),
        format!(
            "{ratio:.3} × ({sum_r:.0} requests, minimum {sum_min:.0}); per job p50 {p50_ratio:.2}, max {max_ratio:.2}"
        ),
        Some(in_bounds(ratio)),
    );
    res.check(format!("requests / minimum = {ratio:.3} within [{RATIO_MIN}, {RATIO_MAX}]"), in_bounds(ratio));
    res.row(
        "requests after SUCCESS/FAIL",
        "0",
        format!("{after_finish} in the {} after all finished", humantime::format_duration(2 * args.interval)),
        Some(after_finish == 0),
    );
    res.check(format!("requests after SUCCESS/FAIL = {after_finish}"), after_finish == 0);
    if groups > 0 {
        res.row(
            format!("{} ImageJobs on one job", args.share_k),
            "the requests of one",
            format!("{ratio_shared:.3} × the minimum of one ({sum_r_shared:.0} requests for {groups} jobs; {:.0} × {} ImageJobs would poll alone)", sum_min_shared, args.share_k),
            Some(ratio_shared <= RATIO_MAX),
        );
        res.check(
            format!("shared jobs: requests / minimum of one = {ratio_shared:.3} within [{RATIO_MIN}, {RATIO_MAX}]"),
            in_bounds(ratio_shared),
        );
    }
}

/// Status writes against the visible changes: those the watch saw (phase,
/// cloud status, progress, task, image, codes, results, sub-jobs, condition
/// reasons; not times, counters or messages), which in turn are bounded by
/// the states the scripts step through.
fn report_writes(
    bench: &Bench,
    res: &mut Results,
    main_jobs: &[Arc<CloudJob>],
    api_patches: f64,
    op_patches: f64,
    polls: f64,
) {
    let (visible, writes_seen, relists) = {
        let t = bench.tracker.lock().unwrap();
        let visible = t.of(Group::Main).map(|t| t.visible_changes).sum::<u64>() as f64;
        (visible, t.of(Group::Main).map(|t| t.changes).sum::<u64>() as f64, t.relists)
    };
    // Each ImageJob can show each scripted state once, plus a first status
    // written before the cloud answered.
    let scripted: f64 = main_jobs.iter().map(|j| (j.sharers * (j.steps.len() + 1)) as f64).sum();
    res.row(
        "status patches / visible status changes",
        "1.00",
        format!("{:.3} ({api_patches:.0} PATCH imagejobs/status at the API server, {op_patches:.0} by the operator's count, {visible:.0} visible changes and {writes_seen:.0} status updates seen by watch, {scripted:.0} scripted states)", api_patches / visible.max(1.0)),
        Some(op_patches <= visible),
    );
    res.check(
        format!("operator status patches {op_patches:.0} ≤ visible changes {visible:.0} ({relists} watch (re)lists)"),
        op_patches <= visible,
    );
    // The API server counts every client's patches: on a cluster shared
    // with other work the figure can only be an upper bound, so the check
    // allows 1 % (and is exact when the bench is alone, as in CI).
    res.check(
        format!("API server status patches {api_patches:.0} within [{visible:.0}, +1 %] of the visible changes"),
        api_patches >= visible - 0.5 && api_patches <= visible * 1.01 + 0.5,
    );
    res.check(
        format!("visible changes {visible:.0} ≤ the scripts' states {scripted:.0}"),
        visible <= scripted && visible > 0.0,
    );
    res.row(
        "patches on polls that changed nothing",
        "0",
        format!("{:.0} ({:.0} of {polls:.0} polls changed nothing)", (op_patches - visible).max(0.0), polls - visible),
        Some(op_patches <= visible),
    );
}

/// Lateness of each visible change after the cloud made it: a change is due
/// by the next poll, so the bound is one interval plus the machine's time
/// for a request and a write, whatever the machine.
fn report_lateness(bench: &Bench, res: &mut Results) -> f64 {
    let iv = bench.args.interval.as_secs_f64();
    let mut lateness = bench.tracker.lock().unwrap().late(Group::Main, None);
    let (l50, l99, lmax) = (pct(&mut lateness, 0.5), pct(&mut lateness, 0.99), pct(&mut lateness, 1.0));
    let late_goal = 1.1 * iv + 2.0;
    res.row(
        "lateness cloud change → CR status",
        format!("p99 ≤ {late_goal:.0} s"),
        format!("p50 {l50:.1} s, p99 {l99:.1} s, max {lmax:.1} s ({} changes)", lateness.len()),
        Some(l99 <= late_goal),
    );
    // Every ImageJob shows at least its end: fewer samples means the
    // figure above is not about these jobs.
    let enough = lateness.len() >= bench.args.jobs;
    res.check(
        format!("lateness p99 {l99:.1} s ≤ {late_goal:.1} s over {} changes (≥ {})", lateness.len(), bench.args.jobs),
        l99 <= late_goal && enough,
    );
    late_goal
}

fn report_resources(
    res: &mut Results,
    jobs: usize,
    steady: Option<Steady>,
    hwm_main: Option<f64>,
    phase_cpu_a: &CpuSample,
    phase_cpu_b: &CpuSample,
) {
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
        format!("{jobs} ImageJobs: operator peak RSS (VmHWM)"),
        "≤ 100 MiB",
        format!("{hwm:.1} MiB"),
        Some(hwm <= 100.0),
    );
    res.ctx(
        "CPU over the rest of phase 1 (% of one core)",
        cpu_usage(phase_cpu_a, phase_cpu_b)
            .iter()
            .map(|(n, c)| format!("{n} {}", fmt_pct(*c)))
            .collect::<Vec<_>>()
            .join(", "),
    );
}
