//! Pure decisions of the controller: no I/O, table-tested in `super::tests`.

use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;

use super::schedule;
use crate::config::RunArgs;
use crate::crd::{ImageJob, ImageJobStatus, PollPolicy, REQUESTED_AT_ANNOTATION};
use crate::ims::{ErrorKind, ImsError, JobTarget, target};
use crate::progress::Progress;
use crate::status::{Outcome, StallReason};

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
            reason: StallReason::CredentialsNotFound | StallReason::CredentialsNotLabeled | StallReason::InvalidSpec,
            ..
        } => failed(schedule::backoff(failures, CONFIG_RECHECK_MIN, CONFIG_RECHECK, None)),
        Outcome::Stalled { .. } => failed(schedule::backoff(failures, STALLED_MIN, STALLED_MAX, retry_after)),
        Outcome::DeadlineExceeded { .. } | Outcome::Suspended | Outcome::Observed => NextPoll::Never,
    }
}

#[cfg(test)]
mod tests;
