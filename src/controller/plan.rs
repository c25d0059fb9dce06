//! Pure decisions of the controller: no I/O, table-tested in `super::tests`.
//!
//! A reconcile makes two whole-step decisions around its one cloud call:
//! [`before_poll`] (skip, write only, or poll) from what it knows before,
//! then [`after_poll`] from the answer, and, once the status is written,
//! [`after_write`] for when to come again.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::{output, schedule};
use crate::config::RunArgs;
use crate::crd::{ImageJob, ImageJobStatus, PollPolicy, REQUESTED_AT_ANNOTATION};
use crate::ims::model::JobStatus;
use crate::ims::{ErrorKind, ImsError, JobTarget, target};
use crate::progress::Progress;
use crate::status::{self, Outcome, StallReason};

/// Backoff bounds per kind of trouble.
pub(super) const TRANSIENT_MIN: Duration = Duration::from_secs(2);
pub(super) const TRANSIENT_MAX: Duration = Duration::from_secs(300);
/// Authentication and permission failures retry slowly: the gateway locks an
/// access key after 5 bad signatures, and a fixed Secret wakes us anyway.
const STALLED_MIN: Duration = Duration::from_secs(300);
const STALLED_MAX: Duration = Duration::from_secs(3600);
/// Stalls that a change of configuration fixes: a Secret's change wakes the
/// ImageJob at once, but a ServiceAccount or RBAC change (workload identity)
/// is not watched, so these are looked at again from seconds up to this
/// safety net. A recheck costs no cloud request.
const CONFIG_RECHECK_MIN: Duration = Duration::from_secs(5);
const CONFIG_RECHECK: Duration = Duration::from_secs(600);

/// What a reconcile knows before it asks anything: the schedule's memory
/// of the ImageJob, the clocks and the interval.
#[derive(Clone, Debug)]
pub struct Facts {
    /// How long until the next poll is due, if it is not yet.
    pub not_due_for: Option<Duration>,
    /// When this ImageJob's last forced poll went, if one did.
    pub last_forced: Option<tokio::time::Instant>,
    /// The ImageJob's poll interval (`spec.pollInterval` or the operator's).
    pub interval: Duration,
    pub now: Timestamp,
    pub clock: tokio::time::Instant,
    /// Some ImageJob created seconds ago was never reconciled: the queue
    /// holds more than the reconcile slots serve (a slow cloud).
    pub newcomers_waiting: bool,
}

/// How long a poll steps back for ImageJobs without a first status.
pub const YIELD_TO_NEWCOMERS: Duration = Duration::from_secs(1);

/// The first decision of a reconcile. `requested` is the
/// `ims.otc.io/requestedAt` not yet honoured ([`pending_request`]).
#[allow(clippy::large_enum_variant)] // one per reconcile, never stored
#[derive(Clone, Debug, PartialEq)]
pub enum BeforePoll<'a> {
    /// Nothing to ask or write: return this.
    Skip(Action),
    /// No cloud call, only the status to write: a finished job's (a spec
    /// edit acknowledged, the output ConfigMap checked, the refresh refusal
    /// shown or cleared; then `recheck_output`), or a suspended one's.
    WriteOnly { outcome: Outcome, requested: Option<&'a str>, recheck_output: bool },
    /// Ask IMS; `forced` bypasses the shared answers; `deadline` is
    /// (`activeDeadlineSeconds`, when it ran out) if it has.
    Poll { forced: bool, requested: Option<&'a str>, deadline: Option<(i64, Timestamp)> },
}

/// Before the cloud call: whether to skip, only write, or poll.
pub fn before_poll<'a>(ij: &'a ImageJob, facts: &Facts) -> BeforePoll<'a> {
    let requested = pending_request(ij);
    let prev = ij.status.as_ref();
    // A finished job never changes: no cloud call, also after a restart.
    // A later spec edit is acknowledged so GitOps tools do not wait on it.
    if prev.is_some_and(ImageJobStatus::is_finished) && requested.is_none() {
        // The output ConfigMap is checked (from the cache) and repaired here
        // too: its watch wakes the ImageJob when it is deleted or edited.
        let stale = prev.and_then(|s| s.observed_generation) != ij.metadata.generation;
        if stale || output::involved(ij, prev) || refusal_unshown(ij) {
            return BeforePoll::WriteOnly { outcome: Outcome::Observed, requested, recheck_output: true };
        }
        return BeforePoll::Skip(Action::await_change());
    }
    if ij.spec.suspend == Some(true) {
        return BeforePoll::WriteOnly { outcome: Outcome::Suspended, requested, recheck_output: false };
    }
    // Woken by our own status write or a neighbour: not due yet. An
    // annotation loop must not burn the quota: one forced poll per few seconds.
    let wait = match requested {
        None => facts.not_due_for,
        Some(_) => forced_poll_wait(facts.last_forced, facts.clock),
    };
    if let Some(left) = wait {
        return BeforePoll::Skip(Action::requeue(left));
    }
    // At the deadline, ask IMS once before deciding: a job that ended in time wins.
    let deadline = deadline_exceeded(ij, facts.now).zip(deadline_of(ij));
    let forced = requested.is_some() || deadline.is_some();
    if !forced && !awaits_first_status(ij) && yields_to_newcomers(facts) {
        return BeforePoll::Skip(Action::requeue(YIELD_TO_NEWCOMERS));
    }
    BeforePoll::Poll { forced, requested, deadline }
}

/// Overloaded, an ImageJob that already shows a status lets those that
/// show nothing go first. kube-runtime hands out waiting reconciles in hash
/// order, not arrival order: behind a slow cloud some new ImageJobs would
/// never be picked (613 of 1,000 had no status after two minutes).
fn yields_to_newcomers(facts: &Facts) -> bool {
    facts.newcomers_waiting
}

/// No phase shown yet (the API server's schema default gives a new
/// ImageJob `status.observedGeneration: 0` before the operator writes).
pub fn awaits_first_status(ij: &ImageJob) -> bool {
    ij.status.as_ref().is_none_or(|s| s.phase.is_none())
}

/// What to ask and how old a shared answer may be: the target
/// ([`target_of`]) and, unless the poll is forced (never served from the
/// shared cache), [`max_shared_age`].
pub fn request_of(
    ij: &ImageJob,
    args: &RunArgs,
    secret_project: Option<&str>,
    forced: bool,
    interval: Duration,
) -> Result<(JobTarget, Duration), String> {
    let target = target_of(ij, args, secret_project)?;
    Ok((target, if forced { Duration::ZERO } else { max_shared_age(ij.spec.poll_policy, interval) }))
}

/// A too long requestedAt not yet reported, or one reported that is gone.
fn refusal_unshown(ij: &ImageJob) -> bool {
    let shown = ij.status.as_ref().and_then(|s| status::condition(s, status::REFRESH_REQUEST)).is_some();
    shown != oversized_request(ij).is_some()
}

/// The second decision: what the answer becomes.
#[allow(clippy::large_enum_variant)] // one per reconcile, never stored
#[derive(Clone, Debug, PartialEq)]
pub enum AfterPoll {
    /// Polled at the deadline: this verdict is written, and only a change
    /// wakes the ImageJob again.
    Verdict(Outcome),
    /// The answer to write, and what it adds to the progress model
    /// ([`progress_seen`]); when to come again follows from what was
    /// written ([`after_write`]).
    Answer { outcome: Outcome, seen: Option<(Timestamp, u8)> },
}

/// After the cloud call: the verdict at the deadline, or the answer.
pub fn after_poll(
    outcome: Outcome,
    shared_age: Option<Duration>,
    deadline: Option<(i64, Timestamp)>,
    now: Timestamp,
) -> AfterPoll {
    match deadline {
        Some((seconds, at)) => AfterPoll::Verdict(at_deadline(outcome, at, seconds)),
        None => AfterPoll::Answer { seen: progress_seen(&outcome, shared_age, now), outcome },
    }
}

/// What a RUNNING answer adds to the progress model: its percent at the
/// time it was fetched (`shared_age` before `now` for a shared answer).
pub fn progress_seen(outcome: &Outcome, shared_age: Option<Duration>, now: Timestamp) -> Option<(Timestamp, u8)> {
    let seen = match outcome {
        Outcome::Job(job) if job.status == Some(JobStatus::Running) => job.progress,
        _ => None,
    };
    let age = shared_age.and_then(|a| SignedDuration::try_from(a).ok()).unwrap_or_default();
    seen.map(|p| (now.checked_sub(age).unwrap_or(now), p))
}

/// What is known once the answer is written, for [`after_write`].
#[derive(Clone, Debug)]
pub struct Written<'a> {
    pub outcome: &'a Outcome,
    /// The status now in force is Succeeded or Failed.
    pub finished: bool,
    /// The ImageJob's progress model, with this answer.
    pub progress: &'a Progress,
    /// The ImageJob's poll interval.
    pub interval: Duration,
    /// Consecutive failures, this one included if it is one.
    pub failures: u32,
    /// The cloud's Retry-After, if it sent one.
    pub retry_after: Option<Duration>,
    /// Age of an answer another ImageJob on the same job fetched.
    pub shared_age: Option<Duration>,
    /// When the answer was taken in (the progress model's clock).
    pub answered_at: Timestamp,
    /// Now, after the write.
    pub now: Timestamp,
}

/// When to poll again, once the answer is written: [`plan_next`] with the
/// running delay of the poll policy ([`running_delay`]), then, while the
/// job runs, the phase kept (the jitter is drawn once, on the first poll or
/// after a wake that may have lined ImageJobs up: later polls come exactly
/// one interval apart, as jitter on every poll would cost up to 10 % more
/// requests) or a sharer's phase taken; never past the deadline. `spread`
/// says whether the jitter was drawn already (and records that it now is):
/// asked only for an answer of a running job.
pub fn after_write(ij: &ImageJob, w: &Written, spread: impl FnOnce() -> bool) -> NextPoll {
    let running = running_delay(ij.spec.poll_policy, w.interval, w.progress, w.answered_at);
    let NextPoll::After { delay, failed } = plan_next(w.outcome, w.finished, running, w.failures, w.retry_after) else {
        return NextPoll::Never;
    };
    let delay = if !failed && matches!(w.outcome, Outcome::Job(_)) {
        let spread = spread();
        match w.shared_age {
            Some(age) => follow_delay(running, age),
            None if spread => running,
            None => delay,
        }
    } else {
        delay
    };
    // Poll once at the deadline rather than an interval after it.
    let delay = match deadline_of(ij).map(|d| d.duration_since(w.now)) {
        Some(left) => delay.min(left.try_into().unwrap_or(Duration::ZERO) + Duration::from_millis(200)),
        None => delay,
    };
    NextPoll::After { delay, failed }
}

/// The longest `ims.otc.io/requestedAt` honoured: a timestamp fits many
/// times over. A longer one would be stored cut, never match, and force a
/// poll on every wake.
pub const MAX_REQUESTED_AT: usize = 64;

/// The length of an `ims.otc.io/requestedAt` too long to honour, if any.
pub fn oversized_request(ij: &ImageJob) -> Option<usize> {
    ij.annotations().get(REQUESTED_AT_ANNOTATION).map(String::len).filter(|n| *n > MAX_REQUESTED_AT)
}

/// The `ims.otc.io/requestedAt` value not yet honoured, if any (never one
/// over `MAX_REQUESTED_AT`).
pub fn pending_request(ij: &ImageJob) -> Option<&str> {
    let value = ij.annotations().get(REQUESTED_AT_ANNOTATION).filter(|v| v.len() <= MAX_REQUESTED_AT)?;
    let handled = ij.status.as_ref().and_then(|s| s.last_handled_reconcile_at.as_deref());
    (handled != Some(value.as_str())).then_some(value.as_str())
}

/// True when `activeDeadlineSeconds` has passed since the job began (as the
/// cloud reports it) or, before the first answer, since the ImageJob was made.
pub fn deadline_exceeded(ij: &ImageJob, now: Timestamp) -> Option<i64> {
    let seconds = ij.spec.active_deadline_seconds?;
    (now > deadline_of(ij)?).then_some(seconds)
}

/// When `activeDeadlineSeconds` runs out, if set.
pub fn deadline_of(ij: &ImageJob) -> Option<Timestamp> {
    let seconds = ij.spec.active_deadline_seconds?;
    let status = ij.status.as_ref();
    let begin = status.and_then(|s| s.begin_time.as_ref()).or(ij.metadata.creation_timestamp.as_ref())?;
    begin.0.checked_add(jiff::SignedDuration::from_secs(seconds)).ok()
}

/// The verdict at the deadline, from the one poll made there: a job that
/// IMS says ended (before the deadline, or without an end time) is shown as
/// IMS says; otherwise DeadlineExceeded, naming the error if IMS could not
/// be asked.
pub fn at_deadline(answer: Outcome, deadline: Timestamp, seconds: i64) -> Outcome {
    match answer {
        Outcome::Job(job)
            if job.status.is_some_and(|s| s.is_finished()) && job.end_time.is_none_or(|end| end <= deadline) =>
        {
            Outcome::Job(job)
        }
        Outcome::Transient { message } | Outcome::Stalled { message, .. } | Outcome::NotYetKnown { message } => {
            Outcome::DeadlineExceeded { seconds, last_error: Some(message) }
        }
        _ => Outcome::DeadlineExceeded { seconds, last_error: None },
    }
}

/// How long a never-answered job's 404 is read as "not visible yet".
pub const YOUNG_JOB_GRACE: Duration = Duration::from_secs(60);
/// Backoff while waiting for a young job to appear.
const YOUNG_MIN: Duration = Duration::from_secs(1);
const YOUNG_MAX: Duration = Duration::from_secs(10);

/// True while a 404 may only mean IMS does not show the job yet: IMS never
/// answered for it and the ImageJob is younger than `YOUNG_JOB_GRACE`.
pub fn in_young_grace(ij: &ImageJob, now: Timestamp) -> bool {
    let created = ij.metadata.creation_timestamp.as_ref().map(|t| t.0);
    never_answered(ij)
        && created.is_some_and(|c| now.duration_since(c) < jiff::SignedDuration::try_from(YOUNG_JOB_GRACE).unwrap())
}

/// A forced poll (`requestedAt`) is honoured at most this often per
/// ImageJob, so an annotation loop cannot burn the project's quota.
pub const FORCED_POLL_GAP: Duration = Duration::from_secs(5);

/// Pure: how long before a forced poll may go, given the last one.
pub fn forced_poll_wait(last_forced: Option<tokio::time::Instant>, now: tokio::time::Instant) -> Option<Duration> {
    let left = FORCED_POLL_GAP.checked_sub(now.checked_duration_since(last_forced?)?)?;
    (!left.is_zero()).then_some(left)
}
/// Maps an IMS failure for this ImageJob to what the status shows: a 404
/// (or IMG.0023) of a young, never-answered job is waited for, not stalled;
/// an IMG.0023 that outlasts the grace of a never-answered job is
/// `JobNotFound`; for a job IMS has answered before it is transient.
pub fn outcome_for(ij: &ImageJob, err: &ImsError, now: Timestamp) -> Outcome {
    if !err.may_mean_unknown_job() || !never_answered(ij) {
        return outcome_of_error(err);
    }
    if in_young_grace(ij, now) {
        let message = format!(
            "IMS does not know job {} yet ({}); it may not be visible for a few seconds after its creation: retrying",
            ij.spec.job_id,
            stable_message(err)
        );
        return Outcome::NotYetKnown { message };
    }
    Outcome::Stalled { reason: StallReason::JobNotFound, message: stable_message(err) }
}

fn never_answered(ij: &ImageJob) -> bool {
    ij.status.as_ref().is_none_or(|s| s.job_status.is_none())
}

/// Pure: a reconcile failed because the API server could not be reached or
/// was not serving (connection errors, 5xx) — not for a refusal (403, 422,
/// 429), which a retry as soon as the API server answers again would not mend.
pub fn api_unavailable(error: &super::Error) -> bool {
    use super::Error;
    let kube_error = match error {
        Error::Patch(e) | Error::Output(e) | Error::Lease(e) => e,
        Error::Secret(super::SecretError::Kube { source, .. }) => source,
        _ => return false,
    };
    match kube_error {
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        kube::Error::Api(status) => status.code >= 500,
        _ => false,
    }
}

/// Maps an IMS failure to what the status shows.
pub fn outcome_of_error(err: &ImsError) -> Outcome {
    if let ImsError::IdentityUnavailable { detail } = err {
        return Outcome::Stalled { reason: StallReason::CredentialsNotFound, message: detail.clone() };
    }
    let reason = match err.kind() {
        ErrorKind::Transient => return Outcome::Transient { message: transient_message(err) },
        ErrorKind::AuthenticationFailed => StallReason::AuthenticationFailed,
        ErrorKind::Forbidden => StallReason::Forbidden,
        ErrorKind::JobNotFound => StallReason::JobNotFound,
        ErrorKind::BadRequest => StallReason::BadRequest,
    };
    Outcome::Stalled { reason, message: stable_message(err) }
}

/// Error text without the request ID, so that repeated identical failures
/// leave the status unchanged (no write per retry).
fn stable_message(err: &ImsError) -> String {
    match (err.status(), err.code(), err.message()) {
        (Some(status), Some(code), Some(msg)) => format!("{} answered HTTP {status}: {code} {msg}", who(err)),
        (Some(status), None, Some(msg)) => format!("{} answered HTTP {status}: {msg}", who(err)),
        (Some(status), Some(code), None) => format!("{} answered HTTP {status}: {code}", who(err)),
        _ => err.to_string(),
    }
}

/// The service that answered (IAM refusing an ID token must not read as IMS).
fn who(err: &ImsError) -> crate::ims::error::Service {
    err.service().unwrap_or(crate::ims::error::Service::Ims)
}

fn transient_message(err: &ImsError) -> String {
    format!("{}; retrying with backoff", stable_message(err))
}

pub(super) fn outcome_label(err: Option<&ImsError>) -> &'static str {
    match err.map(ImsError::kind) {
        None => "success",
        Some(ErrorKind::Transient) => "transient",
        Some(ErrorKind::AuthenticationFailed) => "authentication_failed",
        Some(ErrorKind::Forbidden) => "forbidden",
        Some(ErrorKind::JobNotFound) => "job_not_found",
        Some(ErrorKind::BadRequest) => "bad_request",
    }
}

/// The endpoints, project and job to query. Endpoints come only from the
/// operator's configuration; the ImageJob chooses at most the region.
pub fn target_of(ij: &ImageJob, args: &RunArgs, secret_project: Option<&str>) -> Result<JobTarget, String> {
    let region = ij.spec.region.as_deref().unwrap_or(&args.default_region);
    if let Some(refusal) = crate::regions::refuse(region, &args.allowed_regions()) {
        return Err(refusal);
    }
    let project_id = ij
        .spec
        .project_id
        .as_deref()
        .or(secret_project)
        .ok_or_else(|| "no project ID: set spec.projectId or add projectId to the credentials Secret".to_owned())?;
    let mut target = target::resolve(&args.endpoints(), region, project_id, &ij.spec.job_id)?;
    // A region with its own endpoints (checked at start) uses them.
    (target.ims_endpoint, target.iam_endpoint) =
        args.region_endpoints.resolve(region, &args.endpoints.ims_endpoint, &args.endpoints.iam_endpoint);
    Ok(target)
}

/// How long our own write may take to show in the watch cache.
pub const WRITE_ECHO_WINDOW: Duration = Duration::from_secs(5);

/// Identifies a status up to what `status::differs` ignores (condition
/// transition times and order).
pub fn fingerprint(status: &ImageJobStatus) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut conditions: Vec<_> =
        status.conditions.iter().map(|c| (&c.type_, &c.status, &c.reason, &c.message, c.observed_generation)).collect();
    conditions.sort();
    let rest = ImageJobStatus { conditions: Vec::new(), ..status.clone() };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&rest).unwrap_or_default().hash(&mut h);
    conditions.hash(&mut h);
    h.finish()
}

/// The status as the API server stores it: `metav1.Time` keeps whole
/// seconds, while IMS sends milliseconds. Comparing the stored status with
/// an unrounded one would see a change on every poll and write (a no-op
/// patch) every time.
pub fn as_stored(status: ImageJobStatus) -> ImageJobStatus {
    match serde_json::to_value(&status).and_then(serde_json::from_value) {
        Ok(stored) => stored,
        Err(_) => status,
    }
}

/// When an ImageJob that read a shared answer polls next: just after the
/// ImageJob that fetched it is due again, so that it reads that one's next
/// answer. With its own jitter it would often come first, find the answer
/// too old and ask the cloud a moment before the other does the same.
pub fn follow_delay(interval: Duration, age: Duration) -> Duration {
    let margin = (interval / 20).clamp(Duration::from_millis(50), Duration::from_secs(2));
    interval.saturating_sub(age) + margin
}

/// The time between polls of a running job: the interval (Fixed), or from
/// its progress (Adaptive: between ¼ and 2× the interval, see `progress::poll`).
pub fn running_delay(policy: Option<PollPolicy>, interval: Duration, progress: &Progress, now: Timestamp) -> Duration {
    match policy.unwrap_or_default() {
        PollPolicy::Fixed => interval,
        PollPolicy::Adaptive => progress.poll_delay(interval, now),
    }
}

/// How old a shared answer may be and still serve a poll: under the
/// policy's shortest delay, so that a poll never reads its own last answer.
pub fn max_shared_age(policy: Option<PollPolicy>, interval: Duration) -> Duration {
    let shortest = match policy.unwrap_or_default() {
        PollPolicy::Fixed => interval,
        PollPolicy::Adaptive => interval / 4,
    };
    shortest.mul_f64(0.8)
}

/// What to do after a reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextPoll {
    /// Finished, suspended or past its deadline: only a change wakes it.
    Never,
    /// Poll again after `delay`; `failed` counts towards the backoff.
    After { delay: Duration, failed: bool },
}

/// When to look again, by what happened: the poll interval (jittered; the
/// controller keeps the first jitter's phase afterwards) while the job runs,
/// exponential backoff after errors (slow for credential and permission
/// trouble), nothing once the job is finished.
pub fn plan_next(
    outcome: &Outcome,
    finished: bool,
    interval: Duration,
    failures: u32,
    retry_after: Option<Duration>,
) -> NextPoll {
    let failed = |delay| NextPoll::After { delay, failed: true };
    match outcome {
        // A failed refresh of a finished job is not retried: the result stands.
        _ if finished => NextPoll::Never,
        Outcome::Job(_) => NextPoll::After { delay: schedule::jittered(interval), failed: false },
        Outcome::Transient { .. } => failed(schedule::backoff(failures, TRANSIENT_MIN, TRANSIENT_MAX, retry_after)),
        Outcome::NotYetKnown { .. } => failed(schedule::backoff(failures, YOUNG_MIN, YOUNG_MAX, retry_after)),
        Outcome::Stalled {
            reason:
                StallReason::CredentialsNotFound
                | StallReason::CredentialsNotLabeled
                | StallReason::CredentialsNotReadable
                | StallReason::InvalidSpec,
            ..
        } => failed(schedule::backoff(failures, CONFIG_RECHECK_MIN, CONFIG_RECHECK, None)),
        Outcome::Stalled { .. } => failed(schedule::backoff(failures, STALLED_MIN, STALLED_MAX, retry_after)),
        Outcome::DeadlineExceeded { .. } | Outcome::Suspended | Outcome::Observed => NextPoll::Never,
    }
}

#[cfg(test)]
mod tests;
