//! One cloud request per job and interval, however many ImageJobs name the
//! job, and an outbound rate limit per endpoint and project.
//!
//! Answers are shared only between ImageJobs that use the same credentials
//! (by fingerprint): naming a job ID must not reveal a job that another
//! tenant's credentials fetched.
//!
//! The rate limit is a token bucket (GCRA) that hands out *reservations*:
//! a request that finds the bucket empty is given the next free send time,
//! in arrival order. A short wait is slept in place; a longer one is handed
//! back to the controller (`fetch_or_defer` returns `Err(wait)`), which
//! requeues the ImageJob for that time. So a busy project never holds the
//! controller's reconcile slots, and other projects are not held up by it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::reflector::ObjectRef;
use tokio::time::Instant;

use super::gate::{Admission, CredentialGate, GateKey};
use crate::crd::ImageJob;
use crate::ims::credentials::{CacheKey, Credentials};
use crate::ims::model::Job;
use crate::ims::{ImsError, JobSource, JobTarget};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FetchKey {
    pub ims_endpoint: String,
    pub project_id: String,
    pub job_id: String,
    pub credentials: CacheKey,
}

impl FetchKey {
    pub fn new(target: &JobTarget, creds: &Credentials) -> Self {
        Self {
            ims_endpoint: target.ims_endpoint.clone(),
            project_id: target.project_id.clone(),
            job_id: target.job_id.clone(),
            credentials: creds.cache_key(),
        }
    }
}

pub type SharedAnswer = Result<Job, Arc<ImsError>>;

/// The result of one `fetch`.
pub struct Fetched {
    pub answer: SharedAnswer,
    /// The age of an answer another caller fetched; None when this call
    /// sent the request.
    pub shared_age: Option<Duration>,
    /// Other ImageJobs on the same job, to wake when the answer changed.
    pub wake: Vec<ObjectRef<ImageJob>>,
}

impl Fetched {
    /// True when this call sent the request.
    pub fn sent(&self) -> bool {
        self.shared_age.is_none()
    }
}

#[derive(Default)]
struct JobSlot {
    fetched: Option<(Instant, SharedAnswer)>,
    /// A send time reserved in the bucket for the next request of this key.
    reserved: Option<Instant>,
}

/// Waits up to this long for a reserved send time in place; longer waits
/// are handed back to the controller.
pub const MAX_INLINE_WAIT: Duration = Duration::from_millis(250);

pub struct Coalescer<S> {
    source: S,
    limiter: Buckets,
    gate: CredentialGate,
    slots: Mutex<HashMap<FetchKey, Arc<tokio::sync::Mutex<JobSlot>>>>,
    subscribers: Mutex<HashMap<FetchKey, HashSet<ObjectRef<ImageJob>>>>,
}

/// A bucket per endpoint, project and credential fingerprint: an ImageJob
/// naming someone else's project with other (or garbage) credentials cannot
/// use up or pause that tenant's budget.
type BucketKey = (String, String, CacheKey);

/// Token buckets per `BucketKey` as GCRA: the theoretical arrival
/// time of the next request, one `period` per request, `tolerance` of burst.
struct Buckets {
    period: Duration,
    tolerance: Duration,
    tat: Mutex<HashMap<BucketKey, Instant>>,
}

impl Buckets {
    fn new(quota: Quota) -> Self {
        let tolerance = quota.period * quota.burst.saturating_sub(1);
        Self { period: quota.period, tolerance, tat: Mutex::default() }
    }

    /// Takes the next token of `key`: the time the request may be sent
    /// (`now` when the bucket has one). Never fails; reservations queue.
    fn reserve(&self, key: &BucketKey, now: Instant) -> Instant {
        let mut tat = self.tat.lock().unwrap();
        let next = match tat.get_mut(key) {
            Some(t) => t,
            None => tat.entry(key.clone()).or_insert(now),
        };
        let due = (*next).max(now);
        let at = due.checked_sub(self.tolerance).map_or(now, |t| t.max(now));
        *next = due + self.period;
        at
    }

    /// Pushes the bucket's next free time to `until` at the earliest: the
    /// cloud said it is throttling this project.
    fn hold(&self, key: &BucketKey, until: Instant) {
        let mut tat = self.tat.lock().unwrap();
        let next = tat.entry(key.clone()).or_insert(until);
        *next = (*next).max(until + self.tolerance);
    }

    /// Forgets buckets that are full again.
    fn prune(&self, now: Instant) {
        self.tat.lock().unwrap().retain(|_, t| *t > now);
    }
}

/// A token bucket's size: one token every `period`, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub period: Duration,
    pub burst: u32,
}

/// A token bucket: `per_second` sustained (may be below 1), `burst` at once.
pub fn quota(per_second: f64, burst: u32) -> Quota {
    let period = Duration::from_secs_f64(1.0 / per_second.clamp(0.001, 1_000_000.0));
    Quota { period, burst: burst.max(1) }
}

impl<S: JobSource> Coalescer<S> {
    pub fn new(source: S, quota: Quota) -> Self {
        Self {
            source,
            limiter: Buckets::new(quota),
            gate: CredentialGate::default(),
            slots: Mutex::default(),
            subscribers: Mutex::default(),
        }
    }

    /// The job's answer: a shared one younger than `max_age`, else a new
    /// request (one at a time per key; concurrent callers wait and share),
    /// waiting for the rate limit however long it takes.
    pub async fn fetch(
        &self,
        me: &ObjectRef<ImageJob>,
        target: &JobTarget,
        creds: &Credentials,
        max_age: Duration,
    ) -> Fetched {
        loop {
            match self.fetch_or_defer(me, target, creds, max_age).await {
                Ok(fetched) => return fetched,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Like `fetch`, but when the rate limit lets the request go only in
    /// more than `MAX_INLINE_WAIT`, keeps that send time reserved for this
    /// job and returns `Err(wait)`: call again after `wait`.
    pub async fn fetch_or_defer(
        &self,
        me: &ObjectRef<ImageJob>,
        target: &JobTarget,
        creds: &Credentials,
        max_age: Duration,
    ) -> Result<Fetched, Duration> {
        let key = FetchKey::new(target, creds);
        {
            let mut subs = self.subscribers.lock().unwrap();
            match subs.get_mut(&key) {
                Some(set) => {
                    if !set.contains(me) {
                        set.insert(me.clone());
                    }
                }
                None => {
                    subs.insert(key.clone(), HashSet::from([me.clone()]));
                }
            }
        }
        let slot = self.slots.lock().unwrap().entry(key.clone()).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some((at, answer)) = &slot.fetched
            && at.elapsed() < max_age
        {
            return Ok(Fetched { answer: answer.clone(), shared_age: Some(at.elapsed()), wake: Vec::new() });
        }
        let bucket = (key.ims_endpoint.clone(), key.project_id.clone(), key.credentials);
        let now = Instant::now();
        let send_at = *slot.reserved.get_or_insert_with(|| self.limiter.reserve(&bucket, now));
        if send_at > now + MAX_INLINE_WAIT {
            return Err(send_at - now);
        }
        // One probe per credential: wait while it is being verified, and
        // send nothing with one that was refused.
        let gate_key =
            GateKey { endpoint: key.ims_endpoint.clone(), credentials: key.credentials, lock: creds.lock_key() };
        let ticket = match self.gate.admit(&gate_key).await {
            Admission::Send(ticket) => ticket,
            Admission::Refused(error) => {
                slot.reserved = None;
                return Ok(Fetched { answer: Err(error), shared_age: Some(Duration::ZERO), wake: Vec::new() });
            }
        };
        tokio::time::sleep_until(send_at).await;
        slot.reserved = None;
        let answer = self.source.get_job(target, creds).await.map_err(Arc::new);
        self.gate.report(&ticket, answer.as_ref().map(|_| ()));
        drop(ticket);
        if let Err(e) = &answer
            && e.status() == Some(429)
        {
            let pause = e.retry_after().unwrap_or(self.limiter.period).min(Duration::from_secs(60));
            self.limiter.hold(&bucket, Instant::now() + pause);
        }
        let changed = slot.fetched.as_ref().is_none_or(|(_, old)| !same_answer(old, &answer));
        slot.fetched = Some((Instant::now(), answer.clone()));
        let wake = if changed { self.others(&key, me) } else { Vec::new() };
        Ok(Fetched { answer, shared_age: None, wake })
    }

    fn others(&self, key: &FetchKey, me: &ObjectRef<ImageJob>) -> Vec<ObjectRef<ImageJob>> {
        let subs = self.subscribers.lock().unwrap();
        subs.get(key).map(|s| s.iter().filter(|o| *o != me).cloned().collect()).unwrap_or_default()
    }

    /// Stops waking `me` for this job (it finished or was deleted). When
    /// nobody is left, the answer is dropped too: a finished job is not
    /// asked again, and its answer would only take memory.
    pub fn unsubscribe(&self, target: &JobTarget, creds: &Credentials, me: &ObjectRef<ImageJob>) {
        let key = FetchKey::new(target, creds);
        let mut subs = self.subscribers.lock().unwrap();
        if let Some(set) = subs.get_mut(&key) {
            set.remove(me);
            if set.is_empty() {
                subs.remove(&key);
                let mut slots = self.slots.lock().unwrap();
                // Only an idle slot: a request in flight keeps its own.
                if slots.get(&key).is_some_and(|slot| slot.try_lock().is_ok_and(|s| s.reserved.is_none())) {
                    slots.remove(&key);
                }
            }
        }
    }

    /// Forgets answers older than `max_age` and subscribers that are gone.
    pub fn sweep(&self, max_age: Duration, alive: impl Fn(&ObjectRef<ImageJob>) -> bool) {
        self.slots.lock().unwrap().retain(|_, slot| match slot.try_lock() {
            Ok(s) => s.reserved.is_some() || s.fetched.as_ref().is_some_and(|(at, _)| at.elapsed() < max_age),
            Err(_) => true, // a request is in flight
        });
        self.limiter.prune(Instant::now());
        self.gate.sweep();
        let mut subs = self.subscribers.lock().unwrap();
        subs.values_mut().for_each(|set| set.retain(&alive));
        subs.retain(|_, set| !set.is_empty());
    }

    pub fn source(&self) -> &S {
        &self.source
    }
}

fn same_answer(a: &SharedAnswer, b: &SharedAnswer) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => a.kind() == b.kind() && a.status() == b.status(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ims::model::JobStatus;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts requests; answers RUNNING with the request number as progress.
    #[derive(Default)]
    struct CountingSource {
        calls: AtomicUsize,
    }

    impl JobSource for CountingSource {
        async fn get_job(&self, _: &JobTarget, _: &Credentials) -> Result<Job, ImsError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(Job { status: Some(JobStatus::Running), progress: Some(n as u8), ..Job::default() })
        }
    }

    fn target(job: &str) -> JobTarget {
        JobTarget {
            ims_endpoint: "http://ims".into(),
            iam_endpoint: "http://iam".into(),
            project_id: "p".into(),
            job_id: job.into(),
        }
    }

    fn creds(user: &str) -> Credentials {
        Credentials::Password {
            username: user.into(),
            password: crate::ims::credentials::Secret::new("pw"),
            domain_name: "d".into(),
        }
    }

    fn obj(name: &str) -> ObjectRef<ImageJob> {
        ObjectRef::new(name).within("ns")
    }

    #[tokio::test]
    async fn concurrent_callers_on_one_job_share_one_request() {
        let c = Arc::new(Coalescer::new(CountingSource::default(), quota(1000.0, 1000)));
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move {
                    c.fetch(&obj(&format!("ij{i}")), &target("j1"), &creds("u"), Duration::from_secs(10)).await.sent()
                })
            })
            .collect();
        let mut sent = 0;
        for h in handles {
            sent += usize::from(h.await.unwrap());
        }
        assert_eq!(sent, 1);
        assert_eq!(c.source().calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn different_credentials_never_share_an_answer() {
        let c = Coalescer::new(CountingSource::default(), quota(1000.0, 1000));
        c.fetch(&obj("a"), &target("j1"), &creds("tenant-a"), Duration::from_secs(10)).await;
        let b = c.fetch(&obj("b"), &target("j1"), &creds("tenant-b"), Duration::from_secs(10)).await;
        assert!(b.sent());
        assert_eq!(c.source().calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_changed_answer_wakes_the_other_subscribers() {
        let c = Coalescer::new(CountingSource::default(), quota(1000.0, 1000));
        let first = c.fetch(&obj("a"), &target("j1"), &creds("u"), Duration::ZERO).await;
        assert!(first.wake.is_empty());
        c.fetch(&obj("b"), &target("j1"), &creds("u"), Duration::from_secs(10)).await;
        let again = c.fetch(&obj("a"), &target("j1"), &creds("u"), Duration::ZERO).await;
        assert_eq!(again.wake, vec![obj("b")], "progress changed: b must see it now");
        c.unsubscribe(&target("j1"), &creds("u"), &obj("b"));
        let third = c.fetch(&obj("a"), &target("j1"), &creds("u"), Duration::ZERO).await;
        assert!(third.wake.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn reservations_queue_in_arrival_order_after_the_burst() {
        let b = Buckets::new(quota(10.0, 3));
        let key = ("http://ims".to_owned(), "p".to_owned(), creds("u").cache_key());
        let t = Instant::now();
        let at: Vec<Duration> = (0..6).map(|_| b.reserve(&key, t) - t).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(at, [ms(0), ms(0), ms(0), ms(100), ms(200), ms(300)]);
        // Another project has its own bucket.
        assert_eq!(b.reserve(&("http://ims".to_owned(), "q".to_owned(), creds("u").cache_key()), t), t);
        // So has another tenant's credential in the same project.
        assert_eq!(b.reserve(&("http://ims".to_owned(), "p".to_owned(), creds("other").cache_key()), t), t);
        // The cloud answered 429 with Retry-After 2 s: nothing before then.
        b.hold(&key, t + Duration::from_secs(2));
        assert!(b.reserve(&key, t) >= t + Duration::from_secs(2));
        b.prune(t + Duration::from_secs(10));
        assert!(b.tat.lock().unwrap().is_empty(), "full buckets are forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn a_far_reservation_is_handed_back_and_kept_for_the_retry() {
        let c = Coalescer::new(CountingSource::default(), quota(1.0, 1));
        let first = c.fetch_or_defer(&obj("a"), &target("j1"), &creds("u"), Duration::ZERO).await;
        assert!(first.is_ok_and(|f| f.sent()));
        // The bucket is empty for a second: the caller gets the wait back.
        let wait = c.fetch_or_defer(&obj("b"), &target("j2"), &creds("u"), Duration::ZERO).await.err().unwrap();
        assert!(wait > MAX_INLINE_WAIT && wait <= Duration::from_secs(1), "{wait:?}");
        // A second caller for that job neither takes another token nor jumps the queue.
        let again = c.fetch_or_defer(&obj("c"), &target("j2"), &creds("u"), Duration::ZERO).await.err().unwrap();
        assert!(again <= wait);
        tokio::time::advance(wait).await;
        let done = c.fetch_or_defer(&obj("b"), &target("j2"), &creds("u"), Duration::ZERO).await;
        assert!(done.is_ok_and(|f| f.sent()));
        assert_eq!(c.source().calls.load(Ordering::SeqCst), 2);
        // The reservation was used: the next one is a full period later.
        let next = c.fetch_or_defer(&obj("d"), &target("j3"), &creds("u"), Duration::ZERO).await.err().unwrap();
        assert!(next > Duration::from_millis(900), "{next:?}");
    }

    #[tokio::test]
    async fn the_rate_limit_spaces_requests() {
        let c = Coalescer::new(CountingSource::default(), quota(4.0, 1));
        let start = std::time::Instant::now();
        for i in 0..5 {
            c.fetch(&obj("a"), &target(&format!("j{i}")), &creds("u"), Duration::ZERO).await;
        }
        // One at once, then one every 0.25 s (the buckets run on the real clock).
        assert!(start.elapsed() >= Duration::from_millis(950), "{:?}", start.elapsed());
    }
}
