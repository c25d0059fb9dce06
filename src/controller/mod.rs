//! The ImageJob controller: reads the Secret, asks IMS (through the
//! coalescer), maps the answer with the pure `status` module, writes the
//! status only when it changed, publishes Events, and decides when to look
//! again.

pub mod coalesce;
pub mod run;
pub mod schedule;
pub mod secrets;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tokio::sync::mpsc;
use tracing::{debug, info, instrument, warn};

use crate::config::{RunArgs, poll_interval};
use crate::crd::{ImageJob, ImageJobStatus, REQUESTED_AT_ANNOTATION};
use crate::ims::{ErrorKind, ImsError, JobSource, JobTarget, resolve_endpoint};
use crate::metrics::{Metrics, OutcomeLabels, ResultLabels};
use crate::status::{self, Outcome, StallReason};
use coalesce::Coalescer;
use schedule::Schedule;
use secrets::{SecretCache, SecretError};

pub const FIELD_MANAGER: &str = "imagejob-operator";

/// Backoff bounds per kind of trouble.
const TRANSIENT_MIN: Duration = Duration::from_secs(2);
const TRANSIENT_MAX: Duration = Duration::from_secs(300);
/// Authentication and permission failures retry slowly: the gateway locks an
/// access key after 5 bad signatures, and a fixed Secret wakes us anyway.
const STALLED_MIN: Duration = Duration::from_secs(300);
const STALLED_MAX: Duration = Duration::from_secs(3600);
/// Safety net for stalls that only a Secret or spec change can fix.
const CONFIG_RECHECK: Duration = Duration::from_secs(600);

/// Shared state of all reconciles.
pub struct Ctx<S> {
    pub client: kube::Client,
    pub args: RunArgs,
    pub coalescer: Coalescer<S>,
    pub secrets: SecretCache,
    pub schedule: Schedule,
    /// Who publishes Events. A `Recorder` is made per Event: a shared one
    /// keeps every Event for six minutes (series aggregation we do not
    /// need, as we publish on transitions only) and scans that cache on
    /// each publish, which at thousands of ImageJobs costs memory and CPU.
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
    /// ImageJobs to reconcile now (Secret changed, shared answer changed).
    pub wake: mpsc::UnboundedSender<ObjectRef<ImageJob>>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the status: {0}")]
    Patch(#[source] kube::Error),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("ImageJob has no namespace")]
    NoNamespace,
}

impl<S: JobSource> Ctx<S> {
    fn wake_all(&self, objects: Vec<ObjectRef<ImageJob>>) {
        for o in objects {
            self.schedule.wake(&o);
            let _ = self.wake.send(o);
        }
    }

    /// Shows a new shared answer on the other ImageJobs naming the job.
    fn wake_sharers(&self, objects: Vec<ObjectRef<ImageJob>>) {
        for o in objects {
            self.schedule.wake_shared(&o);
            let _ = self.wake.send(o);
        }
    }
}

/// The key of an ImageJob in our own maps: name and namespace only (not
/// the uid and resourceVersion `ObjectRef::from_obj` carries along).
pub fn key_of(ij: &ImageJob) -> ObjectRef<ImageJob> {
    let key = ObjectRef::new(&ij.name_any());
    match ij.metadata.namespace.as_deref() {
        Some(ns) => key.within(ns),
        None => key,
    }
}

/// The `ims.otc.io/requestedAt` value not yet honoured, if any.
pub fn pending_request(ij: &ImageJob) -> Option<&str> {
    let value = ij.annotations().get(REQUESTED_AT_ANNOTATION)?;
    let handled = ij.status.as_ref().and_then(|s| s.last_handled_reconcile_at.as_deref());
    (handled != Some(value.as_str())).then_some(value.as_str())
}

/// True when `activeDeadlineSeconds` has passed since the job began (as the
/// cloud reports it) or, before the first answer, since the ImageJob was made.
pub fn deadline_exceeded(ij: &ImageJob, now: Timestamp) -> Option<i64> {
    let seconds = ij.spec.active_deadline_seconds?;
    let status = ij.status.as_ref();
    let begin = status.and_then(|s| s.begin_time.as_ref()).or(ij.metadata.creation_timestamp.as_ref())?;
    (now.as_second() - begin.0.as_second() > seconds).then_some(seconds)
}

/// A region only of `[a-z0-9-]`: it is placed into a host name, and must
/// not be able to point the operator's credentials at another host.
pub fn valid_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 32
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Maps an IMS failure to what the status shows.
pub fn outcome_of_error(err: &ImsError) -> Outcome {
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
        (Some(status), Some(code), Some(msg)) => format!("IMS answered HTTP {status}: {code} {msg}"),
        (Some(status), None, Some(msg)) => format!("IMS answered HTTP {status}: {msg}"),
        (Some(status), Some(code), None) => format!("IMS answered HTTP {status}: {code}"),
        _ => err.to_string(),
    }
}

fn transient_message(err: &ImsError) -> String {
    format!("{}; retrying with backoff", stable_message(err))
}

fn outcome_label(err: Option<&ImsError>) -> &'static str {
    match err.map(ImsError::kind) {
        None => "success",
        Some(ErrorKind::Transient) => "transient",
        Some(ErrorKind::AuthenticationFailed) => "authentication_failed",
        Some(ErrorKind::Forbidden) => "forbidden",
        Some(ErrorKind::JobNotFound) => "job_not_found",
        Some(ErrorKind::BadRequest) => "bad_request",
    }
}

#[instrument(skip_all, fields(namespace = ij.namespace().unwrap_or_default(), name = ij.name_any(), job_id = ij.spec.job_id))]
pub async fn reconcile<S: JobSource>(ij: Arc<ImageJob>, ctx: Arc<Ctx<S>>) -> Result<Action, Error> {
    let timer = std::time::Instant::now();
    let result = reconcile_inner(&ij, &ctx).await;
    ctx.metrics.reconcile_duration.observe(timer.elapsed().as_secs_f64());
    let label = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics.reconciles.get_or_create(&ResultLabels { result: label }).inc();
    result
}

async fn reconcile_inner<S: JobSource>(ij: &ImageJob, ctx: &Ctx<S>) -> Result<Action, Error> {
    let key = key_of(ij);
    let requested = pending_request(ij);
    let prev = ij.status.as_ref();
    let finished = prev.and_then(|s| s.phase).is_some_and(|p| p.is_finished());

    // A finished job never changes: no cloud call, also after a restart.
    // A later spec edit is acknowledged so GitOps tools do not wait on it.
    if finished && requested.is_none() {
        if prev.and_then(|s| s.observed_generation) != ij.metadata.generation {
            write_status(ij, ctx, &Outcome::Observed, None).await?;
        }
        return Ok(Action::await_change());
    }
    if ij.spec.suspend == Some(true) {
        write_status(ij, ctx, &Outcome::Suspended, requested).await?;
        return Ok(Action::await_change());
    }
    // Woken by our own status write or a neighbour: not due yet.
    if requested.is_none()
        && let Some(left) = ctx.schedule.remaining(&key, ij.uid().as_deref(), ij.metadata.generation)
    {
        return Ok(Action::requeue(left));
    }
    if let Some(seconds) = deadline_exceeded(ij, Timestamp::now()) {
        write_status(ij, ctx, &Outcome::DeadlineExceeded { seconds }, requested).await?;
        return Ok(Action::await_change());
    }
    let answered = match poll(ij, &key, ctx, requested.is_some()).await? {
        Polled::Done(answered) => answered,
        Polled::Deferred(wait) => {
            // The project's token bucket reserved a later send time: give the
            // reconcile slot back and come again then.
            ctx.metrics.ims_deferred.inc();
            ctx.schedule.defer(&key, ij.uid().as_deref(), ij.metadata.generation, wait);
            return Ok(Action::requeue(wait));
        }
    };
    let written = write_status(ij, ctx, &answered.outcome, requested).await?;
    Ok(next_action(ij, ctx, &key, &answered, &written))
}

/// What `poll` learned, or when the rate limit lets it ask.
#[allow(clippy::large_enum_variant)] // one per reconcile, never stored
enum Polled {
    Done(Answered),
    Deferred(Duration),
}

struct Answered {
    outcome: Outcome,
    /// The cloud's Retry-After, if it sent one.
    retry_after: Option<Duration>,
    /// Age of an answer another ImageJob on the same job fetched.
    shared_age: Option<Duration>,
}

impl Answered {
    fn own(outcome: Outcome, retry_after: Option<Duration>) -> Self {
        Self { outcome, retry_after, shared_age: None }
    }
}

/// Reads the credentials and asks IMS. Configuration problems become a
/// Stalled outcome; only Kubernetes API failures are errors.
async fn poll<S: JobSource>(
    ij: &ImageJob,
    key: &ObjectRef<ImageJob>,
    ctx: &Ctx<S>,
    forced: bool,
) -> Result<Polled, Error> {
    let namespace = ij.namespace().ok_or(Error::NoNamespace)?;
    let secret_name = &ij.spec.credentials_ref.name;
    let loaded = match ctx.secrets.load(&namespace, secret_name).await {
        Ok(l) => l,
        Err(e @ (SecretError::NotFound { .. } | SecretError::Invalid { .. })) => {
            let outcome = Outcome::Stalled { reason: StallReason::CredentialsNotFound, message: e.to_string() };
            return Ok(Polled::Done(Answered::own(outcome, None)));
        }
        Err(e) => return Err(e.into()),
    };
    let target = match target_of(ij, &ctx.args, loaded.project_id.as_deref()) {
        Ok(t) => t,
        Err(message) => {
            let outcome = Outcome::Stalled { reason: StallReason::InvalidSpec, message };
            return Ok(Polled::Done(Answered::own(outcome, None)));
        }
    };
    let interval = poll_interval(ij.spec.poll_interval.as_deref(), ctx.args.poll_interval);
    // A forced poll must not be served from the shared cache.
    let max_age = if forced { Duration::ZERO } else { interval.mul_f64(0.8) };
    let started = std::time::Instant::now();
    let fetched = match ctx.coalescer.fetch_or_defer(key, &target, &loaded.credentials, max_age).await {
        Ok(fetched) => fetched,
        Err(wait) => return Ok(Polled::Deferred(wait)),
    };
    if fetched.sent() {
        ctx.metrics.ims_request_duration.observe(started.elapsed().as_secs_f64());
        let label = outcome_label(fetched.answer.as_ref().err().map(|e| e.as_ref()));
        ctx.metrics.ims_requests.get_or_create(&OutcomeLabels { outcome: label }).inc();
    } else {
        ctx.metrics.ims_coalesced.inc();
    }
    ctx.wake_sharers(fetched.wake);
    let (outcome, retry_after) = match fetched.answer {
        Ok(job) => {
            if job.status.is_some_and(|s| s.is_finished()) {
                ctx.coalescer.unsubscribe(&target, &loaded.credentials, key);
            }
            (Outcome::Job(job), None)
        }
        Err(err) => {
            debug!(error = %err, "IMS query failed");
            (outcome_of_error(&err), err.retry_after())
        }
    };
    Ok(Polled::Done(Answered { outcome, retry_after, shared_age: fetched.shared_age }))
}

/// The endpoints, project and job to query. Endpoints come only from the
/// operator's configuration; the ImageJob chooses at most the region.
pub fn target_of(ij: &ImageJob, args: &RunArgs, secret_project: Option<&str>) -> Result<JobTarget, String> {
    let region = ij.spec.region.as_deref().unwrap_or(&args.default_region);
    if !valid_region(region) {
        return Err(format!("region {region:?} may only contain a-z, 0-9 and '-'"));
    }
    let project_id = ij
        .spec
        .project_id
        .as_deref()
        .or(secret_project)
        .ok_or_else(|| "no project ID: set spec.projectId or add projectId to the credentials Secret".to_owned())?;
    Ok(JobTarget {
        ims_endpoint: resolve_endpoint(&args.endpoints.ims_endpoint, region),
        iam_endpoint: resolve_endpoint(&args.endpoints.iam_endpoint, region),
        project_id: project_id.to_owned(),
        job_id: ij.spec.job_id.clone(),
    })
}

/// Computes the new status, writes it if it changed (ignoring timestamps),
/// and publishes Events for transitions. Returns the status now in force.
async fn write_status<S: JobSource>(
    ij: &ImageJob,
    ctx: &Ctx<S>,
    outcome: &Outcome,
    requested: Option<&str>,
) -> Result<ImageJobStatus, Error> {
    let prev = ij.status.as_ref();
    let sctx = status::Context { generation: ij.metadata.generation, now: Timestamp::now(), requested_at: requested };
    let new = as_stored(status::next_status(prev, outcome, &sctx));
    if prev.is_some_and(|p| !status::differs(p, &new)) {
        return Ok(new);
    }
    // The cache may not show our own last write yet (e.g. woken by an
    // ImageJob sharing the job right after writing): do not write it twice.
    let key = key_of(ij);
    let uid = ij.uid();
    let print = fingerprint(&new);
    if ctx.schedule.recently_written(&key, uid.as_deref(), print, WRITE_ECHO_WINDOW) {
        return Ok(new);
    }
    let api: Api<ImageJob> = Api::namespaced(ctx.client.clone(), &ij.namespace().ok_or(Error::NoNamespace)?);
    let patch = serde_json::json!({
        "apiVersion": ImageJob::api_version(&()),
        "kind": ImageJob::kind(&()),
        "status": new,
    });
    api.patch_status(&ij.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(Error::Patch)?;
    ctx.schedule.written(&key, uid.as_deref(), print);
    ctx.metrics.status_patches.inc();
    info!(phase = ?new.phase, job_status = new.job_status.as_deref(), progress = new.progress, "status updated");
    for event in status::transition_events(prev, &new) {
        publish(ij, ctx, event).await;
    }
    Ok(new)
}

/// How long our own write may take to show in the watch cache.
pub(crate) const WRITE_ECHO_WINDOW: Duration = Duration::from_secs(5);

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

async fn publish<S: JobSource>(ij: &ImageJob, ctx: &Ctx<S>, event: status::EventSpec) {
    ctx.metrics.events.get_or_create(&crate::metrics::ReasonLabels { reason: event.reason.clone() }).inc();
    let ev = Event {
        type_: if event.warning { EventType::Warning } else { EventType::Normal },
        reason: event.reason,
        note: Some(event.message.chars().take(1000).collect()),
        action: "PollIMSJob".into(),
        secondary: None,
    };
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    if let Err(e) = recorder.publish(&ev, &ij.object_ref(&())).await {
        // An Event is a courtesy; failing to send one must not fail the reconcile.
        warn!(error = %e, "publishing an Event failed");
    }
}

/// Records the decision of `plan_next` and turns it into an Action.
fn next_action<S: JobSource>(
    ij: &ImageJob,
    ctx: &Ctx<S>,
    key: &ObjectRef<ImageJob>,
    answered: &Answered,
    written: &ImageJobStatus,
) -> Action {
    let outcome = &answered.outcome;
    let finished = written.phase.is_some_and(|p| p.is_finished());
    let interval = poll_interval(ij.spec.poll_interval.as_deref(), ctx.args.poll_interval);
    let failures = ctx.schedule.failures(key) + 1;
    let (uid, generation) = (ij.uid(), ij.metadata.generation);
    match plan_next(outcome, finished, interval, failures, answered.retry_after) {
        NextPoll::Never => {
            ctx.schedule.record(key, uid.as_deref(), generation, Duration::ZERO, false);
            Action::await_change()
        }
        NextPoll::After { delay, failed } => {
            // While the job runs, the jitter is drawn once (first poll, or
            // after a wake that may have lined ImageJobs up): later polls keep
            // that phase and come exactly one interval apart. Jitter on every
            // poll would cost up to 10 % more requests. An ImageJob that read
            // another's answer takes that one's phase instead.
            let delay = if !failed && matches!(outcome, Outcome::Job(_)) {
                let spread = ctx.schedule.spread(key, uid.as_deref());
                match answered.shared_age {
                    Some(age) => follow_delay(interval, age),
                    None if spread => interval,
                    None => delay,
                }
            } else {
                delay
            };
            ctx.schedule.record(key, uid.as_deref(), generation, delay, failed);
            Action::requeue(delay)
        }
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
        Outcome::Stalled { reason: StallReason::CredentialsNotFound | StallReason::InvalidSpec, .. } => {
            failed(CONFIG_RECHECK)
        }
        Outcome::Stalled { .. } => failed(schedule::backoff(failures, STALLED_MIN, STALLED_MAX, retry_after)),
        Outcome::DeadlineExceeded { .. } | Outcome::Suspended | Outcome::Observed => NextPoll::Never,
    }
}

/// Kubernetes API failures (status patch, Secret read) use the same backoff.
pub fn error_policy<S: JobSource>(ij: Arc<ImageJob>, error: &Error, ctx: Arc<Ctx<S>>) -> Action {
    let key = key_of(&ij);
    let failures = ctx.schedule.failures(&key) + 1;
    let next = schedule::backoff(failures, TRANSIENT_MIN, TRANSIENT_MAX, None);
    ctx.schedule.record(&key, ij.uid().as_deref(), ij.metadata.generation, next, true);
    warn!(namespace = ij.namespace(), name = ij.name_any(), error = %error, retry_in = ?next, "reconcile failed");
    Action::requeue(next)
}

#[cfg(test)]
mod tests;
