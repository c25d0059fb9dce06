//! What `kubectl imagejob` prints: pure functions of an ImageJob, its Events
//! and the time, so every screen is testable without a cluster.

use std::fmt::Write as _;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::Fetched;
use crate::cli::render::{Sheet, SubJobColumns, clean, dash, human, key_values, or_dash, section};
use crate::crd::{ImageJobStatus, Phase};

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
    crate::cli::render::code_reason(Some(&c.reason), Some(&c.message))
}

/// Time left to the operator's estimate, while the job runs.
fn remaining(f: &Fetched, now: Timestamp) -> Option<Duration> {
    let running = f.imagejob.status.as_ref().is_some_and(|s| s.phase == Some(Phase::Running));
    let left = f.eta.filter(|_| running)?.duration_since(now);
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
}

/// The whole `status` screen: the job's sheet, its conditions and the
/// newest Events.
pub fn status_screen(f: &Fetched, events: &[Event], now: Timestamp) -> String {
    let status = f.imagejob.status.clone().unwrap_or_default();
    let sheet = Sheet::new(&status);
    let mut rows = where_rows(f, &status, now);
    rows.extend(what_rows(f, &sheet));
    rows.extend(when_rows(&sheet, now));
    let mut out = key_values(&rows);
    out.push_str(&sheet.sub_jobs(SubJobColumns::Short));
    out.push_str(&conditions(&status, now));
    out.push_str(&events_section(events, now));
    out
}

/// Name, namespace, phase, progress, ETA and current task.
fn where_rows(f: &Fetched, status: &ImageJobStatus, now: Timestamp) -> Vec<(&'static str, String)> {
    let meta = &f.imagejob.metadata;
    let polled = status.job_status.as_deref().unwrap_or("not polled yet");
    let mut rows = vec![
        ("Name", or_dash(meta.name.as_deref())),
        ("Namespace", or_dash(meta.namespace.as_deref())),
        ("Phase", format!("{} ({polled})", phase_name(status))),
        ("Progress", status.progress.map_or_else(dash, bar)),
    ];
    if let Some(eta) = f.eta.filter(|_| status.phase == Some(Phase::Running)) {
        let left = remaining(f, now).map(human).unwrap_or_default();
        rows.push(("ETA", format!("{} (in {left})", eta.round(jiff::Unit::Second).unwrap_or(eta))));
    }
    rows.push(("Current task", or_dash(status.current_task.as_deref().filter(|t| !t.is_empty()))));
    rows
}

/// The IMS job and what it made.
fn what_rows(f: &Fetched, sheet: &Sheet) -> Vec<(&'static str, String)> {
    let status = sheet.status;
    let job = [Some(f.imagejob.spec.job_id.clone()), status.job_type.clone()].into_iter().flatten();
    let image = match (&status.image_id, &status.image_name) {
        (Some(id), Some(name)) => format!("{id} ({name})"),
        (Some(x), None) | (None, Some(x)) => x.clone(),
        (None, None) => dash(),
    };
    let mut rows = vec![("Job", job.collect::<Vec<_>>().join("  ")), ("Image", image)];
    rows.extend(sheet.data_images().map(|ids| ("Data images", ids)));
    rows
}

/// When it began and ended, and why it failed.
fn when_rows(sheet: &Sheet, now: Timestamp) -> Vec<(&'static str, String)> {
    let time = |t: &Option<Time>| t.as_ref().map_or_else(dash, |t| format!("{} ({} ago)", t.0, age(now, t.0)));
    let mut rows = vec![("Began", time(&sheet.status.begin_time)), ("Ended", time(&sheet.status.end_time))];
    rows.extend(sheet.error().map(|error| ("Error", error)));
    rows
}

/// `Conditions:` and their table, or nothing.
fn conditions(status: &ImageJobStatus, now: Timestamp) -> String {
    let rows = status.conditions.iter().map(|c| {
        let age = age(now, c.last_transition_time.0);
        vec![c.type_.clone(), c.status.clone(), c.reason.clone(), age, c.message.clone()]
    });
    section("Conditions", &["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], rows.collect())
}

/// `Events:` (the newest [`EVENTS_SHOWN`], saying so when there are more)
/// and their table, or `<none>`.
fn events_section(events: &[Event], now: Timestamp) -> String {
    let shown = &events[events.len().saturating_sub(EVENTS_SHOWN)..];
    let mut out = "\nEvents".to_owned();
    if events.len() > shown.len() {
        let _ = write!(out, " (last {} of {})", shown.len(), events.len());
    }
    out.push_str(":\n");
    if shown.is_empty() {
        out.push_str("  <none>\n");
        return out;
    }
    let rows = shown.iter().map(|e| event_row(e, now)).collect();
    out.push_str(&crate::cli::render::table(&["AGE", "TYPE", "REASON", "MESSAGE"], rows));
    out
}

fn event_row(e: &Event, now: Timestamp) -> Vec<String> {
    let count = e.count.filter(|&c| c > 1).map(|c| format!(" (x{c})")).unwrap_or_default();
    vec![
        event_time(e).map_or_else(dash, |t| age(now, t)),
        or_dash(e.type_.as_deref()),
        or_dash(e.reason.as_deref()),
        format!("{}{count}", e.message.as_deref().unwrap_or_default()),
    ]
}

#[cfg(test)]
mod tests;
