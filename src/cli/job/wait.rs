//! `imagejob-operator job wait`: follow one job until it ends, for CI steps
//! outside Kubernetes.
//!
//! [`follow`] is the loop (query, retry, wait) and knows nothing about
//! terminals; what a person sees is a [`Watcher`] (in `view.rs`), and the
//! last words are [`summary`]. Transient errors (5xx, 429, timeouts, bad
//! bodies) are retried with exponential backoff and `Retry-After`; anything
//! else ends the wait at once, never retried (the gateway locks an access
//! key after five rejected signatures).

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use backon::BackoffBuilder;
use jiff::Timestamp;
use tokio::time::Instant;

use super::JobArgs;
use super::render::status_of;
use super::view::{BarView, LineView, Watcher};
use crate::cli::Exit;
use crate::cli::render::{clean, code_reason, dash, human, or_dash, status_json, table};
use crate::crd::{ImageJobStatus, Phase};
use crate::ims::{Credentials, ImsError, JobSource, JobTarget};
use crate::progress::Progress;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WaitOutput {
    /// A summary for people.
    Text,
    /// The final status as JSON (the field names of `job get -o json`).
    Json,
}

/// Follow one IMS job until it ends. Exit 0 SUCCESS, 1 FAIL, 2 timeout,
/// 3 stalled (credentials rejected, forbidden, job not found), 4 usage error.
#[derive(Clone, Debug, clap::Args)]
pub struct JobWaitArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Give up (exit 2) when the job has not ended after this long, e.g. 30m or 2h.
    #[arg(long, default_value = "1h", value_parser = at_least_a_second)]
    pub timeout: Duration,
    /// Time between two queries while the job runs (shorter near the estimated end).
    #[arg(long, default_value = "5s", value_parser = at_least_a_second)]
    pub interval: Duration,
    /// Timeout of each HTTP request.
    #[arg(long, default_value = "30s", value_parser = at_least_a_second)]
    pub request_timeout: Duration,
    /// Output: a summary for people, or the final status as JSON on stdout.
    #[arg(short = 'o', long, value_enum, default_value_t = WaitOutput::Text)]
    pub output: WaitOutput,
}

fn at_least_a_second(raw: &str) -> Result<Duration, String> {
    let d = crate::config::parse_duration(raw)?;
    if d < Duration::from_secs(1) { Err(format!("{raw:?} is shorter than 1s")) } else { Ok(d) }
}

/// Shortest and longest wait after a transient error (before `Retry-After`).
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How following a job ended.
#[derive(Debug)]
pub enum Ending {
    /// SUCCESS or FAIL: the final status.
    Finished(ImageJobStatus),
    /// The timeout passed; the last status seen, if any.
    TimedOut(Option<ImageJobStatus>),
    /// An error that retrying cannot fix; the last status seen, if any.
    Stalled(ImsError, Option<ImageJobStatus>),
}

impl Ending {
    pub fn exit(&self) -> Exit {
        match self {
            Ending::Finished(s) if s.phase == Some(Phase::Succeeded) => Exit::Succeeded,
            Ending::Finished(_) => Exit::Failed,
            Ending::TimedOut(_) => Exit::TimedOut,
            Ending::Stalled(..) => Exit::Stalled,
        }
    }

    pub fn last_status(&self) -> Option<&ImageJobStatus> {
        match self {
            Ending::Finished(s) => Some(s),
            Ending::TimedOut(s) | Ending::Stalled(_, s) => s.as_ref(),
        }
    }
}

/// What the wait cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Queries sent to IMS (each may include one IAM token request).
    pub requests: u32,
    /// Of those, the ones that failed transiently and were retried.
    pub retried: u32,
}

/// Queries the job every `interval` (sooner when its estimated end is
/// near) until it ends, a permanent error stops it, or `timeout` passes.
pub async fn follow<W: Watcher + ?Sized>(
    source: &impl JobSource,
    target: &JobTarget,
    creds: &Credentials,
    timeout: Duration,
    interval: Duration,
    watcher: &mut W,
) -> (Ending, Tally) {
    let deadline = Instant::now() + timeout;
    let mut tally = Tally::default();
    let mut last: Option<ImageJobStatus> = None;
    let mut progress = Progress::new();
    let mut failures = 0;
    let mut backoff = retry_backoff();
    loop {
        tally.requests += 1;
        let Ok(answer) = tokio::time::timeout_at(deadline, source.get_job(target, creds)).await else {
            return (Ending::TimedOut(last), tally);
        };
        let delay = match answer {
            Ok(job) => {
                let status = status_of(&job);
                if let Some(percent) = status.progress {
                    progress.observe(Timestamp::now(), percent.clamp(0, 100) as u8);
                }
                watcher.answered(&status, progress.eta());
                if matches!(status.phase, Some(Phase::Succeeded | Phase::Failed)) {
                    return (Ending::Finished(status), tally);
                }
                last = Some(status);
                (failures, backoff) = (0, retry_backoff());
                next_poll(interval, progress.remaining(Timestamp::now()))
            }
            Err(err) if err.is_transient() => {
                failures += 1;
                tally.retried += 1;
                let delay = backoff.next().unwrap_or(RETRY_MAX).max(err.retry_after().unwrap_or_default());
                watcher.retrying(&err, failures, delay);
                delay
            }
            Err(err) => return (Ending::Stalled(err, last), tally),
        };
        let wake = (Instant::now() + delay).min(deadline);
        tokio::time::sleep_until(wake).await;
        if wake >= deadline {
            return (Ending::TimedOut(last), tally);
        }
    }
}

fn retry_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(RETRY_MIN)
        .with_max_delay(RETRY_MAX)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The interval, or sooner when the estimate says the job ends sooner (but
/// not more often than every quarter interval, and never below a second).
pub fn next_poll(interval: Duration, remaining: Option<Duration>) -> Duration {
    let floor = (interval / 4).max(Duration::from_secs(1)).min(interval);
    remaining.map_or(interval, |left| left.clamp(floor, interval))
}

/// The last words: what happened, and what a person needs next (the image
/// ID; or the error code, reason and every failed sub-job).
pub fn summary(ending: &Ending, target: &JobTarget, tally: Tally, elapsed: Duration) -> String {
    let job = &target.job_id;
    let took = human(elapsed);
    let mut out = String::new();
    match ending {
        Ending::Finished(s) if s.phase == Some(Phase::Succeeded) => {
            let _ = writeln!(out, "Job {job} succeeded after {took}.");
            field(&mut out, "Image ID", s.image_id.as_deref());
            field(&mut out, "Image name", s.image_name.as_deref());
            for i in s.images.iter().filter(|i| i.kind == "data") {
                field(&mut out, "Data image", Some(&i.id));
            }
            for r in s.results.iter().filter(|r| r.image_id.is_some() && r.image_id != s.image_id) {
                field(&mut out, "Result image", r.image_id.as_deref());
            }
        }
        Ending::Finished(s) => {
            let _ = writeln!(out, "Job {job} failed after {took}.");
            field(&mut out, "Error code", s.error_code.as_deref());
            field(&mut out, "Reason", s.fail_reason.as_deref());
            failed_sub_jobs(&mut out, s);
        }
        Ending::TimedOut(s) => {
            let state = s.as_ref().map_or_else(|| "has not answered".to_owned(), describe_state);
            let _ = writeln!(out, "Timed out after {took}: job {job} {state}.");
        }
        Ending::Stalled(err, _) => {
            out.push_str(&super::get::describe_error(err, target));
            out.push_str("  not retried: this will not fix itself\n");
        }
    }
    let retried =
        if tally.retried > 0 { format!(" ({} retried after transient errors)", tally.retried) } else { String::new() };
    let _ = writeln!(out, "{:<14}{}{retried}", "Requests:", tally.requests);
    out
}

fn field(out: &mut String, name: &str, value: Option<&str>) {
    if let Some(value) = value {
        let _ = writeln!(out, "{:<14}{}", format!("{name}:"), clean(value));
    }
}

/// `is still RUNNING at 45 % (task X)`.
fn describe_state(s: &ImageJobStatus) -> String {
    let mut text = format!("is still {}", s.job_status.as_deref().unwrap_or("INIT"));
    if let Some(p) = s.progress {
        let _ = write!(text, " at {p}%");
    }
    if let Some(task) = s.current_task.as_deref().filter(|t| !t.is_empty()) {
        let _ = write!(text, " ({})", clean(task));
    }
    text
}

fn failed_sub_jobs(out: &mut String, s: &ImageJobStatus) {
    let failed: Vec<Vec<String>> = s
        .sub_jobs
        .iter()
        .filter(|j| j.status.as_deref() == Some("FAIL"))
        .map(|j| {
            let error = code_reason(j.error_code.as_deref(), j.fail_reason.as_deref());
            vec![or_dash(j.job_id.as_deref()), or_dash(j.job_type.as_deref()), error.unwrap_or_else(dash)]
        })
        .collect();
    if !failed.is_empty() {
        out.push_str("Failed sub-jobs:\n");
        out.push_str(&table(&["JOB ID", "TYPE", "ERROR"], failed));
    }
}

/// Runs the command with the environment's credentials, a bar on a
/// terminal and plain lines elsewhere (both on stderr), the summary or the
/// JSON status on stdout.
pub async fn run(args: JobWaitArgs) -> ExitCode {
    let (target, creds, client) = match args.job.prepare(args.request_timeout) {
        Ok(ready) => ready,
        Err(exit) => return exit.into(),
    };
    let started = Instant::now();
    let (ending, tally) = if std::io::stderr().is_terminal() {
        let mut bar = BarView::new(&target.job_id);
        let result = follow(&client, &target, &creds, args.timeout, args.interval, &mut bar).await;
        bar.finish();
        result
    } else {
        let mut lines = LineView::new(std::io::stderr());
        follow(&client, &target, &creds, args.timeout, args.interval, &mut lines).await
    };
    let text = summary(&ending, &target, tally, started.elapsed());
    match (args.output, &ending) {
        (WaitOutput::Json, _) => {
            eprint!("{text}");
            if let Some(status) = ending.last_status() {
                print!("{}", status_json(status));
            }
        }
        (WaitOutput::Text, Ending::Stalled(..)) => eprint!("{text}"),
        (WaitOutput::Text, _) => print!("{text}"),
    }
    ending.exit().into()
}

#[cfg(test)]
mod tests;
