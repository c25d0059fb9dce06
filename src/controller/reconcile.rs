//! The reconcile: I/O around the pure decisions of `plan` and `status`:
//! facts → `plan::before_poll` → poll → `plan::after_poll` → write →
//! `plan::after_write` → record.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{debug, info, instrument, warn};

use super::plan::{
    self, AfterPoll, BeforePoll, Facts, MAX_REQUESTED_AT, NextPoll, TRANSIENT_MAX, TRANSIENT_MIN, WRITE_ECHO_WINDOW,
    Written, as_stored, fingerprint, outcome_for, outcome_label, oversized_request,
};
use super::{Ctx, Error, FIELD_MANAGER, key_of, output, schedule};
use crate::config::poll_interval;
use crate::crd::{ImageJob, ImageJobStatus};
use crate::ims::JobSource;
use crate::metrics::{OutcomeLabels, ResultLabels};
use crate::status::{self, Outcome, StallReason};

#[instrument(skip_all, fields(namespace = ij.namespace().unwrap_or_default(), name = ij.name_any(), job_id = ij.spec.job_id))]
pub async fn reconcile<S: JobSource>(ij: Arc<ImageJob>, ctx: Arc<Ctx<S>>) -> Result<Action, Error> {
    let timer = std::time::Instant::now();
    let result = reconcile_inner(&ij, &ctx).await;
    ctx.metrics.reconcile_duration.observe(timer.elapsed().as_secs_f64());
    let label = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics.reconciles.get_or_create(&ResultLabels { result: label }).inc();
    result
}

/// Gather the facts → decide before the poll → poll → decide after it →
/// write and schedule. Every decision is `plan`'s; this is the I/O.
async fn reconcile_inner<S: JobSource>(ij: &ImageJob, ctx: &Ctx<S>) -> Result<Action, Error> {
    let key = key_of(ij);
    let facts = facts(ij, ctx, &key);
    ctx.schedule.started(&key, ij.uid().as_deref());
    let (forced, requested, deadline) = match plan::before_poll(ij, &facts) {
        BeforePoll::Skip(action) => return Ok(action),
        BeforePoll::WriteOnly { outcome, requested, recheck_output } => {
            let written = write_status(ij, ctx, &outcome, requested, None).await?;
            let recheck = output::recheck(&written).filter(|_| recheck_output);
            return Ok(recheck.map_or_else(Action::await_change, Action::requeue));
        }
        BeforePoll::Poll { forced, requested, deadline } => (forced, requested, deadline),
    };
    let Answered { outcome, retry_after, shared_age } = match poll(ij, &key, ctx, forced, facts.interval).await? {
        Polled::Done(answered) => answered,
        Polled::Deferred(wait) => {
            // The project's token bucket reserved a later send time: give the
            // reconcile slot back and come again then.
            ctx.metrics.ims_rate_limited.inc();
            ctx.schedule.defer(&key, ij.uid().as_deref(), ij.metadata.generation, wait);
            return Ok(Action::requeue(wait));
        }
    };
    let answered_at = Timestamp::now();
    let (outcome, seen) = match plan::after_poll(outcome, shared_age, deadline, answered_at) {
        AfterPoll::Verdict(verdict) => {
            write_status(ij, ctx, &verdict, requested, None).await?;
            return Ok(Action::await_change());
        }
        AfterPoll::Answer { outcome, seen } => (outcome, seen),
    };
    let progress = ctx.schedule.progress(&key, ij.uid().as_deref(), seen);
    let written = write_status(ij, ctx, &outcome, requested, progress.eta()).await?;
    let done = Written {
        outcome: &outcome,
        finished: written.is_finished(),
        progress: &progress,
        interval: facts.interval,
        failures: ctx.schedule.failures(&key) + 1,
        retry_after,
        shared_age,
        answered_at,
        now: Timestamp::now(),
    };
    let next = plan::after_write(ij, &done, || ctx.schedule.spread(&key, ij.uid().as_deref()));
    let next = schedule_next(ij, ctx, &key, next);
    Ok(output::recheck(&written).map_or(next, Action::requeue))
}

/// What the reconcile knows before it asks anything.
fn facts<S: JobSource>(ij: &ImageJob, ctx: &Ctx<S>, key: &ObjectRef<ImageJob>) -> Facts {
    Facts {
        not_due_for: ctx.schedule.remaining(key, ij.uid().as_deref(), ij.metadata.generation),
        last_forced: ctx.schedule.last_forced(key),
        interval: poll_interval(ij.spec.poll_interval.as_deref(), ctx.args.poll_interval),
        now: Timestamp::now(),
        clock: tokio::time::Instant::now(),
        newcomers_waiting: ctx.schedule.newcomers_waiting(),
    }
}

/// Records the next poll and turns it into an Action.
fn schedule_next<S: JobSource>(ij: &ImageJob, ctx: &Ctx<S>, key: &ObjectRef<ImageJob>, next: NextPoll) -> Action {
    let (uid, generation) = (ij.uid(), ij.metadata.generation);
    match next {
        NextPoll::Never => {
            ctx.schedule.record(key, uid.as_deref(), generation, Duration::ZERO, false);
            Action::await_change()
        }
        NextPoll::After { delay, failed } => {
            ctx.schedule.record(key, uid.as_deref(), generation, delay, failed);
            Action::requeue(delay)
        }
    }
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
    interval: Duration,
) -> Result<Polled, Error> {
    let (credentials, secret_project) = match super::identity::credentials_for(ij, ctx).await? {
        Ok(found) => found,
        Err(outcome) => return Ok(Polled::Done(Answered::own(outcome, None))),
    };
    let (target, max_age) = match plan::request_of(ij, &ctx.args, secret_project.as_deref(), forced, interval) {
        Ok(request) => request,
        Err(message) => {
            let outcome = Outcome::Stalled { reason: StallReason::InvalidSpec, message };
            return Ok(Polled::Done(Answered::own(outcome, None)));
        }
    };
    let started = std::time::Instant::now();
    if forced {
        ctx.schedule.mark_forced(key);
    }
    let fetched = match ctx.coalescer.fetch_or_defer(key, &target, &credentials, max_age).await {
        Ok(fetched) => fetched,
        Err(wait) => return Ok(Polled::Deferred(wait)),
    };
    if fetched.sent() {
        ctx.metrics.ims_request_duration.observe(started.elapsed().as_secs_f64());
        let label = outcome_label(fetched.answer.as_ref().err().map(|e| e.as_ref()));
        ctx.metrics.ims_requests.get_or_create(&OutcomeLabels { outcome: label }).inc();
    } else {
        ctx.metrics.ims_coalesced_reads.inc();
    }
    ctx.wake_sharers(fetched.wake);
    let (outcome, retry_after) = match fetched.answer {
        Ok(job) => {
            if job.status.is_some_and(|s| s.is_finished()) {
                ctx.coalescer.unsubscribe(&target, &credentials, key);
            }
            (Outcome::Job(job), None)
        }
        Err(err) => {
            debug!(error = %err, "IMS query failed");
            (outcome_for(ij, &err, Timestamp::now()), err.retry_after())
        }
    };
    Ok(Polled::Done(Answered { outcome, retry_after, shared_age: fetched.shared_age }))
}

/// Computes the new status, writes it if it changed (ignoring timestamps),
/// and publishes Events for transitions. Returns the status now in force.
async fn write_status<S: JobSource>(
    ij: &ImageJob,
    ctx: &Ctx<S>,
    outcome: &Outcome,
    requested: Option<&str>,
    eta: Option<Timestamp>,
) -> Result<ImageJobStatus, Error> {
    let prev = ij.status.as_ref();
    let sctx =
        status::Inputs { generation: ij.metadata.generation, now: Timestamp::now(), requested_at: requested, eta };
    let mut new = as_stored(status::next_status(prev, outcome, &sctx));
    status::refresh_request_condition(&mut new, oversized_request(ij), MAX_REQUESTED_AT, &sctx);
    // The result ConfigMap first, then the status that reports it; a failed
    // export is shown in the status and retried with backoff. Fenced like
    // the status: a deposed leader writes no ConfigMap either.
    if output::wanted(ij, &new).is_some() {
        ctx.fence.check().await?;
    }
    let exported = output::export(ij, ctx, &mut new, &sctx).await;
    let new = write_if_changed(ij, ctx, prev, new, &sctx).await?;
    exported.map_err(Error::Output)?;
    Ok(new)
}

/// Writes `new` unless it equals `prev` (ignoring timestamps) or was just
/// written; publishes Events for transitions.
async fn write_if_changed<S: JobSource>(
    ij: &ImageJob,
    ctx: &Ctx<S>,
    prev: Option<&ImageJobStatus>,
    new: ImageJobStatus,
    sctx: &status::Inputs<'_>,
) -> Result<ImageJobStatus, Error> {
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
    ctx.fence.check().await?;
    let (new, extra_event) = match patch_status(ij, ctx, &new).await {
        Err(Error::Patch(e)) if too_large(&e) => {
            // Never loop on a status the API server will not store: write
            // the short one and say so.
            warn!(error = %e, bytes = status::bound::serialised_len(&new), "the API server refused the status; writing a minimal one");
            let (minimal, event) = status::minimal_status(&new, &refusal(&e), sctx);
            patch_status(ij, ctx, &minimal).await?;
            (minimal, Some(event))
        }
        other => (other.map(|()| new)?, None),
    };
    ctx.schedule.written(&key, uid.as_deref(), fingerprint(&new));
    ctx.metrics.status_patches.inc();
    info!(phase = ?new.phase, job_status = new.job_status.as_deref(), progress = new.progress, "status updated");
    let events = status::transition_events(prev, &new).into_iter().chain(output::transition_events(prev, &new));
    for event in extra_event.into_iter().chain(events) {
        publish(ij, ctx, event).await;
    }
    Ok(new)
}

/// Server-side apply of the status, fenced by the resourceVersion we read:
/// if anyone wrote since (e.g. a new leader), the API server answers 409
/// and the reconcile comes again with a fresh read, so an old view never
/// overwrites a newer one.
async fn patch_status<S: JobSource>(ij: &ImageJob, ctx: &Ctx<S>, new: &ImageJobStatus) -> Result<(), Error> {
    let api: Api<ImageJob> = Api::namespaced(ctx.client.clone(), &ij.namespace().ok_or(Error::NoNamespace)?);
    let patch = serde_json::json!({
        "apiVersion": ImageJob::api_version(&()),
        "kind": ImageJob::kind(&()),
        "metadata": {"resourceVersion": ij.resource_version()},
        "status": new,
    });
    match api.patch_status(&ij.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Conflict),
        Err(e) => Err(Error::Patch(e)),
    }
}

/// 413, 422 or etcd's "request is too large": the status itself is refused.
fn too_large(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            s.code == 413 || s.code == 422 || s.message.contains("too large") || s.message.contains("Too long")
        }
        _ => false,
    }
}

fn refusal(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("HTTP {}: {}", s.code, status::bound::cut(&s.message, 300)),
        other => status::bound::cut(&other.to_string(), 300),
    }
}

async fn publish<S: JobSource>(ij: &ImageJob, ctx: &Ctx<S>, event: status::EventSpec) {
    if ctx.fence.check().await.is_err() {
        return;
    }
    ctx.metrics.events.get_or_create(&crate::metrics::ReasonLabels { reason: event.reason.clone() }).inc();
    let ev = Event {
        type_: if event.warning { EventType::Warning } else { EventType::Normal },
        reason: event.reason,
        note: Some(status::bound::cut(&event.message, status::bound::MAX_MESSAGE)),
        action: "PollIMSJob".into(),
        secondary: None,
    };
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    if let Err(e) = recorder.publish(&ev, &ij.object_ref(&())).await {
        // An Event is a courtesy; failing to send one must not fail the reconcile.
        warn!(error = %e, "publishing an Event failed");
    }
}

const CONFLICT_RETRY: Duration = Duration::from_secs(1);

/// Kubernetes API failures (status patch, Secret read) use the same backoff.
pub fn error_policy<S: JobSource>(ij: Arc<ImageJob>, error: &Error, ctx: Arc<Ctx<S>>) -> Action {
    match error {
        // Someone wrote since we read: come again soon with a fresh read.
        Error::Conflict => return Action::requeue(CONFLICT_RETRY),
        // Not the leader: the new leader writes; nothing to retry here.
        Error::NotLeader => return Action::await_change(),
        _ => {}
    }
    let key = key_of(&ij);
    let failures = ctx.schedule.failures(&key) + 1;
    let next = schedule::backoff(failures, TRANSIENT_MIN, TRANSIENT_MAX, None);
    ctx.schedule.record(&key, ij.uid().as_deref(), ij.metadata.generation, next, true);
    if super::plan::api_unavailable(error) {
        ctx.schedule.await_api(&key);
    }
    warn!(namespace = ij.namespace(), name = ij.name_any(), error = %error, retry_in = ?next, "reconcile failed");
    Action::requeue(next)
}
