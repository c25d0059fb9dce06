//! Pure status logic: (what we learned, previous status, generation, now) →
//! new status. No I/O here; the controller does the talking.
//!
//! The conditions (metav1.Condition, kstatus-compatible) for each state,
//! their reasons and the Events are listed in `docs/contract.md` (the one
//! table; `tests/docs_contract.rs` fails when a reason here is missing
//! there). In short: INIT/RUNNING is Reconciling, SUCCESS is Ready, FAIL
//! and the deadline are Stalled and Failed, configuration trouble is
//! Stalled with a [`StallReason`], a transient cloud error is Reconciling
//! (`RetryingAfterError`). On FAIL the message is `errorCode: failReason`. A
//! stall caused by configuration clears once it is fixed. A cloud error never
//! marks a job failed: only IMS saying FAIL, or the deadline, does.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{ImageJobStatus, ImageStatus, JobResultStatus, Phase, SubJobStatus};
use crate::ims::model::{Job, JobStatus};

pub mod bound;

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const FAILED: &str = "Failed";

/// Why polling cannot go on until someone fixes something. Each variant's
/// name is the condition reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallReason {
    CredentialsNotFound,
    /// The Secret does not carry the opt-in label (`--require-credentials-label`).
    CredentialsNotLabeled,
    /// The API server refused the operator the Secret (403): with
    /// `--read-secrets=namespaced`, the namespace has not granted it.
    CredentialsNotReadable,
    AuthenticationFailed,
    Forbidden,
    JobNotFound,
    /// The spec cannot be acted on (e.g. no project ID anywhere).
    InvalidSpec,
    /// The cloud refused the request as malformed (HTTP 400).
    BadRequest,
}

impl StallReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CredentialsNotFound => "CredentialsNotFound",
            Self::CredentialsNotLabeled => "CredentialsNotLabeled",
            Self::CredentialsNotReadable => "CredentialsNotReadable",
            Self::AuthenticationFailed => "AuthenticationFailed",
            Self::Forbidden => "Forbidden",
            Self::JobNotFound => "JobNotFound",
            Self::InvalidSpec => "InvalidSpec",
            Self::BadRequest => "BadRequest",
        }
    }
}

/// What one reconcile learned. Short-lived, one per reconcile: boxing the
/// job would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The cloud answered with the job.
    Job(Job),
    /// A passing failure (5xx, 429, timeout, garbled answer): keep what we
    /// know and retry.
    Transient { message: String },
    /// Nothing will change until the configuration is fixed.
    Stalled { reason: StallReason, message: String },
    /// The job ran longer than `activeDeadlineSeconds`; `last_error` is
    /// why IMS could not be asked at the deadline, if it could not.
    DeadlineExceeded { seconds: i64, last_error: Option<String> },
    /// IMS answered 404 for a job it never answered for, while the
    /// ImageJob is young: the job may not be visible yet. Retried soon.
    NotYetKnown { message: String },
    /// `spec.suspend` is true: no polling.
    Suspended,
    /// Nothing new to learn (the job finished): the spec was read, so only
    /// `observedGeneration` moves.
    Observed,
}

/// Everything besides the outcome that shapes the new status.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    pub generation: Option<i64>,
    pub now: Timestamp,
    /// The `ims.otc.io/requestedAt` annotation being honoured, if any.
    pub requested_at: Option<&'a str>,
    /// When the job should end, from its progress so far (`crate::progress`).
    pub eta: Option<Timestamp>,
}

/// The new status. Fields not touched by the outcome keep their previous
/// values, so a transient error never loses what was known. Always within
/// the bounds of [`bound`], whatever the answer.
pub fn next_status(prev: Option<&ImageJobStatus>, outcome: &Outcome, ctx: &Inputs) -> ImageJobStatus {
    let mut status = unbounded_status(prev, outcome, ctx);
    bound::bound(&mut status);
    status
}

fn unbounded_status(prev: Option<&ImageJobStatus>, outcome: &Outcome, ctx: &Inputs) -> ImageJobStatus {
    let mut status = prev.cloned().unwrap_or_default();
    status.observed_generation = ctx.generation;
    if let Some(value) = ctx.requested_at {
        status.last_handled_reconcile_at = Some(value.to_owned());
    }
    if let Some(message) = failed_refresh(prev, outcome) {
        // The job's result stands; only the refresh failed.
        let msg = format!("refreshing the finished job failed ({message}); the status shows the last answer");
        set_condition(&mut status.conditions, cond(RECONCILING, false, REFRESH_FAILED, msg), ctx);
        return status;
    }
    match outcome {
        Outcome::Job(job) => {
            let progress_before = status.progress;
            apply_job(&mut status, job);
            status.estimated_completion_time = estimate(&status, progress_before, ctx.eta);
        }
        Outcome::DeadlineExceeded { .. } => {
            status.phase = Some(Phase::Failed);
            status.estimated_completion_time = None;
        }
        _ => status.phase = Some(status.phase.unwrap_or_default()),
    }
    if *outcome == Outcome::Observed {
        status.conditions.iter_mut().for_each(|c| c.observed_generation = ctx.generation);
        return status;
    }
    for cond in conditions_for(&status, outcome) {
        set_condition(&mut status.conditions, cond, ctx);
    }
    status
}

const REFRESH_FAILED: &str = "RefreshFailed";
/// Shown only while `ims.otc.io/requestedAt` is refused.
pub const REFRESH_REQUEST: &str = "RefreshRequest";
pub const ANNOTATION_TOO_LONG: &str = "AnnotationTooLong";

/// `RefreshRequest=False` while the requestedAt annotation is too long to
/// honour (`oversized`: its length), absent otherwise.
pub fn refresh_request_condition(status: &mut ImageJobStatus, oversized: Option<usize>, max: usize, ctx: &Inputs) {
    match oversized {
        Some(_) => {
            let msg = format!(
                "the ims.otc.io/requestedAt annotation is longer than {max} bytes: it is not honoured and no poll was made"
            );
            set_condition(&mut status.conditions, cond(REFRESH_REQUEST, false, ANNOTATION_TOO_LONG, msg), ctx);
        }
        None => status.conditions.retain(|c| c.type_ != REFRESH_REQUEST),
    }
}
/// Reason while IMS does not know a young job yet.
pub const NOT_YET_KNOWN: &str = "WaitingForJob";
/// Condition type and Event reason when the API server refused the full status.
pub const STATUS_TOO_LARGE: &str = "StatusTooLarge";

/// The error of a forced poll (`requestedAt`) of a finished job.
fn failed_refresh<'a>(prev: Option<&ImageJobStatus>, outcome: &'a Outcome) -> Option<&'a str> {
    let finished = prev.is_some_and(ImageJobStatus::is_finished);
    match outcome {
        Outcome::Transient { message } | Outcome::Stalled { message, .. } if finished => Some(message),
        _ => None,
    }
}

/// Copies the cloud's view of the job into the status.
pub fn apply_job(status: &mut ImageJobStatus, job: &Job) {
    let job_status = job.status.unwrap_or(JobStatus::Init);
    status.phase = Some(phase_of(job_status));
    status.job_status = Some(job_status.as_str().to_owned());
    status.job_type = job.job_type.clone();
    status.current_task = job.current_task.clone();
    status.image_id = job.image_id.clone();
    status.image_name = job.image_name.clone();
    status.images = job.images.iter().map(image_status).collect();
    // A finished job is 100 % even when the cloud still says 0.2 (as the
    // API page's own SUCCESS example does).
    status.progress = match job_status {
        JobStatus::Success => Some(100),
        _ => job.progress.map(i32::from),
    };
    status.begin_time = job.begin_time.map(Time);
    status.end_time = job.end_time.map(Time);
    // An error code on a SUCCESS answer (seen in an SDK's fixture) is not a
    // failure: a Succeeded job shows none.
    let failure_text = |text: &Option<String>| text.clone().filter(|_| job_status != JobStatus::Success);
    status.error_code = failure_text(&job.error_code).or_else(|| first_sub_job_error(job, |s| &s.error_code));
    status.fail_reason = failure_text(&job.fail_reason).or_else(|| first_sub_job_error(job, |s| &s.fail_reason));
    status.results = job.results.iter().map(result_status).collect();
    status.sub_jobs = job.sub_jobs.iter().map(sub_job_status).collect();
    status.sub_job_ids = job.sub_job_ids.clone();
    // Set when the parser cut a list; `bound` sets them when it cuts.
    let total = |n: Option<usize>| n.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
    status.sub_jobs_total = total(job.sub_jobs_total);
    status.results_total = total(job.results_total);
}

/// The ETA shows only while the job runs, and moves only with the progress:
/// it never costs a status write of its own.
fn estimate(status: &ImageJobStatus, progress_before: Option<i32>, eta: Option<Timestamp>) -> Option<Time> {
    match status.phase {
        Some(Phase::Running) if status.progress != progress_before => eta.map(Time),
        Some(Phase::Running) => status.estimated_completion_time.clone(),
        _ => None,
    }
}

/// A FAIL answer may carry its reason only on the failed sub-job.
fn first_sub_job_error(job: &Job, field: impl Fn(&crate::ims::model::SubJob) -> &Option<String>) -> Option<String> {
    if job.status != Some(JobStatus::Fail) {
        return None;
    }
    job.sub_jobs.iter().filter(|s| s.status.as_deref() == Some("FAIL")).find_map(|s| field(s).clone())
}

pub fn phase_of(status: JobStatus) -> Phase {
    match status {
        JobStatus::Init => Phase::Pending,
        JobStatus::Running => Phase::Running,
        JobStatus::Success => Phase::Succeeded,
        JobStatus::Fail => Phase::Failed,
    }
}

fn image_status(i: &crate::ims::model::Image) -> ImageStatus {
    ImageStatus {
        id: i.id.clone(),
        name: i.name.clone(),
        kind: i.kind.as_str().to_owned(),
        sub_job_id: i.sub_job_id.clone(),
    }
}

fn result_status(r: &crate::ims::model::JobResult) -> JobResultStatus {
    JobResultStatus { image_id: r.image_id.clone(), project_id: r.project_id.clone(), status: r.status.clone() }
}

fn sub_job_status(s: &crate::ims::model::SubJob) -> SubJobStatus {
    SubJobStatus {
        job_id: s.job_id.clone(),
        job_type: s.job_type.clone(),
        status: s.status.clone(),
        begin_time: s.begin_time.map(Time),
        end_time: s.end_time.map(Time),
        error_code: s.error_code.clone(),
        fail_reason: s.fail_reason.clone(),
        image_id: s.image_id.clone(),
        image_name: s.image_name.clone(),
    }
}

/// A condition before timestamps and generation are filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Cond {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

fn cond(type_: &'static str, status: bool, reason: &str, message: impl Into<String>) -> Cond {
    Cond { type_, status, reason: reason.to_owned(), message: message.into() }
}

/// The four conditions for a status and outcome: the table in the module doc.
fn conditions_for(status: &ImageJobStatus, outcome: &Outcome) -> Vec<Cond> {
    match outcome {
        Outcome::Job(_) => job_conditions(status),
        Outcome::DeadlineExceeded { seconds, last_error } => {
            let mut msg = format!("the job ran longer than activeDeadlineSeconds ({seconds}s); polling stopped");
            if let Some(err) = last_error {
                msg.push_str(&format!("; IMS could not be asked at the deadline: {err}"));
            }
            terminal_failure("DeadlineExceeded", &msg)
        }
        Outcome::NotYetKnown { message } => vec![
            cond(READY, false, "Pending", message.clone()),
            cond(RECONCILING, true, NOT_YET_KNOWN, message.clone()),
            cond(STALLED, false, NOT_YET_KNOWN, message.clone()),
            cond(FAILED, false, NOT_YET_KNOWN, "the job itself has not failed"),
        ],
        Outcome::Stalled { reason, message } => vec![
            cond(READY, false, reason.as_str(), message.clone()),
            cond(RECONCILING, false, reason.as_str(), message.clone()),
            cond(STALLED, true, reason.as_str(), message.clone()),
            cond(FAILED, false, reason.as_str(), "the job itself has not failed"),
        ],
        Outcome::Transient { message } => {
            let mut conds = vec![
                cond(RECONCILING, true, "RetryingAfterError", message.clone()),
                cond(STALLED, false, "RetryingAfterError", "the error is transient"),
                cond(FAILED, false, "RetryingAfterError", "the job itself has not failed"),
            ];
            // Ready stays as it was; a first answer that fails still gets one.
            if !has_condition(status, READY) {
                conds.push(cond(READY, false, "Pending", "waiting for the first answer from IMS"));
            }
            conds
        }
        Outcome::Suspended => {
            let msg = "spec.suspend is true: polling is paused";
            let mut conds = vec![cond(RECONCILING, false, "Suspended", msg)];
            // Never polled: say so rather than leave Ready absent.
            if !has_condition(status, READY) {
                conds.push(cond(READY, false, "Suspended", msg));
            }
            conds
        }
        Outcome::Observed => Vec::new(),
    }
}

fn job_conditions(status: &ImageJobStatus) -> Vec<Cond> {
    let progress = status.progress.map(|p| format!(" ({p}%)")).unwrap_or_default();
    match status.phase.unwrap_or_default() {
        Phase::Pending => running_conditions("Pending", "the IMS job is being initialised".to_owned()),
        Phase::Running => running_conditions("JobRunning", format!("the IMS job is running{progress}")),
        Phase::Succeeded => {
            let image = status.image_id.as_deref().map(|i| format!(": image {i}")).unwrap_or_default();
            let msg = format!("the IMS job succeeded{image}");
            vec![
                cond(READY, true, "Succeeded", msg.clone()),
                cond(RECONCILING, false, "Succeeded", msg.clone()),
                cond(STALLED, false, "Succeeded", msg.clone()),
                cond(FAILED, false, "Succeeded", msg),
            ]
        }
        Phase::Failed => terminal_failure("JobFailed", &failure_message(status)),
    }
}

fn running_conditions(reason: &str, msg: String) -> Vec<Cond> {
    vec![
        cond(READY, false, reason, msg.clone()),
        cond(RECONCILING, true, reason, msg.clone()),
        cond(STALLED, false, reason, msg.clone()),
        cond(FAILED, false, reason, msg),
    ]
}

fn terminal_failure(reason: &str, msg: &str) -> Vec<Cond> {
    vec![
        cond(READY, false, reason, msg),
        cond(RECONCILING, false, reason, msg),
        cond(STALLED, true, reason, msg),
        cond(FAILED, true, reason, msg),
    ]
}

/// `errorCode: failReason`, as the module doc promises for FAIL.
pub fn failure_message(status: &ImageJobStatus) -> String {
    match (status.error_code.as_deref(), status.fail_reason.as_deref()) {
        (Some(code), Some(reason)) => format!("{code}: {reason}"),
        (Some(code), None) => format!("{code}: the IMS job failed"),
        (None, Some(reason)) => reason.to_owned(),
        (None, None) => "the IMS job failed without an error code".to_owned(),
    }
}

fn has_condition(status: &ImageJobStatus, type_: &str) -> bool {
    status.conditions.iter().any(|c| c.type_ == type_)
}

/// Upserts a condition; `lastTransitionTime` moves only when the status flips.
pub fn set_condition(conditions: &mut Vec<Condition>, new: Cond, ctx: &Inputs) {
    let status = if new.status { "True" } else { "False" }.to_owned();
    let existing = conditions.iter_mut().find(|c| c.type_ == new.type_);
    let transition = match &existing {
        Some(old) if old.status == status => old.last_transition_time.clone(),
        _ => Time(ctx.now),
    };
    let updated = Condition {
        type_: new.type_.to_owned(),
        status,
        reason: new.reason,
        message: new.message,
        observed_generation: ctx.generation,
        last_transition_time: transition,
    };
    match existing {
        Some(old) => *old = updated,
        None => conditions.push(updated),
    }
}

/// True when the two statuses differ in anything but condition timestamps:
/// a poll that learned nothing new must not write.
pub fn differs(a: &ImageJobStatus, b: &ImageJobStatus) -> bool {
    strip_times(a) != strip_times(b)
}

fn strip_times(s: &ImageJobStatus) -> ImageJobStatus {
    let mut s = s.clone();
    for c in &mut s.conditions {
        c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
    }
    s.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    s
}

/// The condition of one type, if present.
pub fn condition<'a>(status: &'a ImageJobStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// An Event to publish for a transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSpec {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

/// Events for what changed between two statuses: the job started running,
/// succeeded, failed, stalled, or hit a cloud error.
pub fn transition_events(prev: Option<&ImageJobStatus>, new: &ImageJobStatus) -> Vec<EventSpec> {
    let mut events = Vec::new();
    let old_phase = prev.and_then(|p| p.phase);
    if new.phase != old_phase {
        match new.phase {
            Some(Phase::Running) => events.push(normal("JobRunning", "the IMS job is running")),
            Some(Phase::Succeeded) => {
                let msg = condition(new, READY).map(|c| c.message.clone()).unwrap_or_default();
                events.push(normal("Succeeded", &msg));
            }
            Some(Phase::Failed) => {
                let c = condition(new, FAILED);
                let reason = c.map(|c| c.reason.as_str()).unwrap_or("JobFailed");
                events.push(warning(reason, &c.map(|c| c.message.clone()).unwrap_or_default()));
            }
            _ => {}
        }
    }
    if !new.is_finished() {
        push_if_flipped(&mut events, prev, new, STALLED);
    }
    if let Some(c) = condition(new, RECONCILING).filter(|c| c.reason == REFRESH_FAILED)
        && prev.map(|p| &p.last_handled_reconcile_at) != Some(&new.last_handled_reconcile_at)
    {
        events.push(warning(REFRESH_FAILED, &c.message));
    }
    if let Some(c) = condition(new, RECONCILING).filter(|c| c.reason == "RetryingAfterError") {
        let was = prev.and_then(|p| condition(p, RECONCILING)).map(|c| c.reason.as_str());
        if was != Some("RetryingAfterError") {
            events.push(warning("CloudError", &c.message));
        }
    }
    events
}

fn push_if_flipped(events: &mut Vec<EventSpec>, prev: Option<&ImageJobStatus>, new: &ImageJobStatus, type_: &str) {
    let Some(c) = condition(new, type_).filter(|c| c.status == "True") else { return };
    let old = prev.and_then(|p| condition(p, type_));
    if old.map(|o| (o.status.as_str(), o.reason.as_str())) != Some(("True", c.reason.as_str())) {
        events.push(warning(&c.reason, &c.message));
    }
}

fn normal(reason: &str, message: &str) -> EventSpec {
    EventSpec { warning: false, reason: reason.to_owned(), message: bound::cut(message, bound::MAX_MESSAGE) }
}

fn warning(reason: &str, message: &str) -> EventSpec {
    EventSpec { warning: true, reason: reason.to_owned(), message: bound::cut(message, bound::MAX_MESSAGE) }
}

/// What to write when the API server refused `intended` as too large
/// (it should never be, see `bound`; this is the last line): the phase and
/// the short fields, no lists, short messages, and a `StatusTooLarge`
/// condition that says what happened. Returns it with its Event.
pub fn minimal_status(intended: &ImageJobStatus, refusal: &str, ctx: &Inputs) -> (ImageJobStatus, EventSpec) {
    const SHORT: usize = 256;
    let short = |f: &Option<String>| f.as_deref().map(|t| bound::cut(t, SHORT));
    let count = |n: usize, total: Option<i32>| total.or((n > 0).then(|| i32::try_from(n).unwrap_or(i32::MAX)));
    let mut status = ImageJobStatus {
        phase: intended.phase,
        job_status: short(&intended.job_status),
        job_type: short(&intended.job_type),
        image_id: short(&intended.image_id),
        image_name: short(&intended.image_name),
        progress: intended.progress,
        begin_time: intended.begin_time.clone(),
        end_time: intended.end_time.clone(),
        error_code: short(&intended.error_code),
        fail_reason: short(&intended.fail_reason),
        sub_jobs_total: count(intended.sub_jobs.len(), intended.sub_jobs_total),
        results_total: count(intended.results.len(), intended.results_total),
        observed_generation: intended.observed_generation,
        last_handled_reconcile_at: short(&intended.last_handled_reconcile_at),
        conditions: intended.conditions.clone(),
        ..ImageJobStatus::default()
    };
    for c in &mut status.conditions {
        c.message = bound::cut(&c.message, SHORT);
    }
    let message = bound::cut(
        &format!("the API server refused the full status ({refusal}); lists and long texts are left out"),
        bound::MAX_MESSAGE,
    );
    set_condition(&mut status.conditions, cond(STATUS_TOO_LARGE, true, STATUS_TOO_LARGE, message.clone()), ctx);
    (status, warning(STATUS_TOO_LARGE, &message))
}

#[cfg(test)]
mod tests;
