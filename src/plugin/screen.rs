//! What `kubectl imagejob` prints: pure functions of an ImageJob, its Events
//! and the time, so every screen is testable without a cluster.

use std::fmt::Write as _;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;

use super::Fetched;
use crate::crd::{ImageJob, ImageJobStatus, Phase};
use crate::job_cmd::render::{clean, human, table};

/// How many Events the status screen shows (the newest).
pub const EVENTS_SHOWN: usize = 5;
const BAR_WIDTH: usize = 30;

/// `[==========>                   ]  34%`: plain characters, no escape codes.
pub fn bar(percent: i32) -> String {
    let percent = percent.clamp(0, 100) as usize;
    let filled = percent * BAR_WIDTH / 100;
    let head = if filled < BAR_WIDTH && percent > 0 { ">" } else { "" };
    let rest = BAR_WIDTH - filled - head.len();
    format!("[{}{head}{}] {percent:>3}%", "=".repeat(filled), " ".repeat(rest))
}

/// kubectl-like age: `42s`, `5m`, `3h`, `2d`.
pub fn age(now: Timestamp, then: Timestamp) -> String {
    let s = now.duration_since(then).as_secs().max(0);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// When an Event last happened, whichever field its writer filled in.
pub fn event_time(e: &Event) -> Option<Timestamp> {
    let series = e.series.as_ref().and_then(|s| s.last_observed_time.as_ref()).map(|t| t.0);
    series
        .or(e.last_timestamp.as_ref().map(|t| t.0))
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.first_timestamp.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn phase_name(status: &ImageJobStatus) -> &'static str {
    match status.phase {
        Some(Phase::Pending) | None => "Pending",
        Some(Phase::Running) => "Running",
        Some(Phase::Succeeded) => "Succeeded",
        Some(Phase::Failed) => "Failed",
    }
}

/// `Running 45% CreateImageByInstanceTask, ETA 3m 10s`: one line per ImageJob for `wait`.
pub fn state_line(f: &Fetched, now: Timestamp) -> String {
    let status = f.imagejob.status.clone().unwrap_or_default();
    let mut line = phase_name(&status).to_owned();
    if let Some(p) = status.progress {
        let _ = write!(line, " {p}%");
    }
    if let Some(task) = status.current_task.as_deref().filter(|t| !t.is_empty()) {
        let _ = write!(line, " {}", clean(task));
    }
    if let Some(left) = remaining(f, now) {
        let _ = write!(line, ", ETA {}", human(left));
    }
    if let Some(stalled) = stalled_reason(&status) {
        let _ = write!(line, " (stalled: {})", clean(&stalled));
    }
    line
}

/// The Stalled condition's reason and message, unless the job simply failed.
pub fn stalled_reason(status: &ImageJobStatus) -> Option<String> {
    if status.phase == Some(Phase::Failed) {
        return None;
    }
    let c = status.conditions.iter().find(|c| c.type_ == "Stalled" && c.status == "True")?;
    Some(format!("{}: {}", c.reason, c.message))
}

/// Time left to the operator's estimate, while the job runs.
fn remaining(f: &Fetched, now: Timestamp) -> Option<Duration> {
    let running = f.imagejob.status.as_ref().is_some_and(|s| s.phase == Some(Phase::Running));
    let left = f.eta.filter(|_| running)?.duration_since(now);
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
}

/// The whole `status` screen.
pub fn status_screen(f: &Fetched, events: &[Event], now: Timestamp) -> String {
    let ij: &ImageJob = &f.imagejob;
    let status = ij.status.clone().unwrap_or_default();
    let dash = || "-".to_owned();
    let mut rows: Vec<(&str, String)> = vec![
        ("Name", ij.metadata.name.clone().unwrap_or_else(dash)),
        ("Namespace", ij.metadata.namespace.clone().unwrap_or_else(dash)),
        ("Phase", format!("{} ({})", phase_name(&status), status.job_status.as_deref().unwrap_or("not polled yet"))),
        ("Progress", status.progress.map_or_else(dash, bar)),
    ];
    if let Some(eta) = f.eta.filter(|_| status.phase == Some(Phase::Running)) {
        let left = remaining(f, now).map(human).unwrap_or_default();
        rows.push(("ETA", format!("{} (in {left})", eta.round(jiff::Unit::Second).unwrap_or(eta))));
    }
    rows.push(("Current task", status.current_task.clone().filter(|t| !t.is_empty()).unwrap_or_else(dash)));
    let job = [Some(ij.spec.job_id.clone()), status.job_type.clone()].into_iter().flatten().collect::<Vec<_>>();
    rows.push(("Job", job.join("  ")));
    let image = match (&status.image_id, &status.image_name) {
        (Some(id), Some(name)) => format!("{id} ({name})"),
        (Some(x), None) | (None, Some(x)) => x.clone(),
        (None, None) => dash(),
    };
    rows.push(("Image", image));
    let data: Vec<&str> = status.images.iter().filter(|i| i.kind == "data").map(|i| i.id.as_str()).collect();
    if !data.is_empty() {
        rows.push(("Data images", data.join(", ")));
    }
    let time = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.as_ref().map_or_else(dash, |t| format!("{} ({} ago)", t.0, age(now, t.0)))
    };
    rows.push(("Began", time(&status.begin_time)));
    rows.push(("Ended", time(&status.end_time)));
    if status.error_code.is_some() || status.fail_reason.is_some() {
        let error = [status.error_code.as_deref(), status.fail_reason.as_deref()].into_iter().flatten();
        rows.push(("Error", error.collect::<Vec<_>>().join(": ")));
    }
    let mut out = String::new();
    for (key, value) in rows {
        let _ = writeln!(out, "{:<14}{}", format!("{key}:"), clean(&value));
    }
    if !status.sub_jobs.is_empty() {
        out.push_str("\nSub-jobs:\n");
        let rows = status.sub_jobs.iter().map(|s| {
            let error = [s.error_code.as_deref(), s.fail_reason.as_deref()].into_iter().flatten().collect::<Vec<_>>();
            vec![
                s.job_id.clone().unwrap_or_else(dash),
                s.job_type.clone().unwrap_or_else(dash),
                s.status.clone().unwrap_or_else(dash),
                s.image_id.clone().unwrap_or_else(dash),
                if error.is_empty() { dash() } else { error.join(": ") },
            ]
        });
        out.push_str(&table(&["JOB ID", "TYPE", "STATUS", "IMAGE ID", "ERROR"], rows.collect()));
    }
    if !status.conditions.is_empty() {
        out.push_str("\nConditions:\n");
        let rows = status.conditions.iter().map(|c| {
            vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                age(now, c.last_transition_time.0),
                c.message.clone(),
            ]
        });
        out.push_str(&table(&["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], rows.collect()));
    }
    let shown = &events[events.len().saturating_sub(EVENTS_SHOWN)..];
    let _ = write!(out, "\nEvents");
    if events.len() > shown.len() {
        let _ = write!(out, " (last {} of {})", shown.len(), events.len());
    }
    out.push_str(":\n");
    if shown.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let rows = shown.iter().map(|e| {
            let count = e.count.filter(|&c| c > 1).map(|c| format!(" (x{c})")).unwrap_or_default();
            vec![
                event_time(e).map_or_else(dash, |t| age(now, t)),
                e.type_.clone().unwrap_or_else(dash),
                e.reason.clone().unwrap_or_else(dash),
                format!("{}{count}", e.message.clone().unwrap_or_default()),
            ]
        });
        out.push_str(&table(&["AGE", "TYPE", "REASON", "MESSAGE"], rows.collect()));
    }
    out
}

#[cfg(test)]
mod tests;
