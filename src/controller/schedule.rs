//! When each ImageJob is next due for a cloud poll, and how many times in a
//! row it failed. Kept in memory: after a restart every unfinished job is
//! polled once, finished ones never.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backon::BackoffBuilder;
use jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use tokio::time::Instant;

use crate::crd::ImageJob;
use crate::progress::Progress;

#[derive(Debug, Default)]
struct Entry {
    uid: Option<String>,
    generation: Option<i64>,
    next_poll: Option<Instant>,
    failures: u32,
    /// The poll phase was jittered since the entry was made or last woken.
    spread: bool,
    /// Fingerprint of the status we last wrote, and when.
    written: Option<(u64, Instant)>,
    /// When a `requestedAt` poll last went out.
    forced: Option<Instant>,
    /// Its last reconcile failed because the API server was away: retry as
    /// soon as it is back, not when the backoff ends.
    awaits_api: bool,
    /// The job's progress as this ImageJob saw it (the ETA, Adaptive polling).
    /// In memory only: after a restart it is learned again from the next rises.
    progress: Progress,
}

/// The ImageJob's entry, made fresh when there is none or it belonged to an
/// earlier object of the same name (another uid): what a deleted and
/// recreated ImageJob learned before never carries over.
fn entry_of<'a>(
    entries: &'a mut HashMap<ObjectRef<ImageJob>, Entry>,
    key: &ObjectRef<ImageJob>,
    uid: Option<&str>,
) -> &'a mut Entry {
    let entry = entries.entry(key.clone()).or_default();
    if entry.uid.as_deref() != uid {
        *entry = Entry { uid: uid.map(str::to_owned), ..Entry::default() };
    }
    entry
}

#[derive(Debug, Default)]
pub struct Schedule {
    entries: Mutex<HashMap<ObjectRef<ImageJob>, Entry>>,
    /// ImageJobs never reconciled yet, waiting for a first status
    /// (`run::count_newcomers`).
    newcomers: AtomicUsize,
}

impl Schedule {
    /// Marks the ImageJob as reconciled at least once by this process.
    pub fn started(&self, key: &ObjectRef<ImageJob>, uid: Option<&str>) {
        entry_of(&mut self.entries.lock().unwrap(), key, uid);
    }

    /// True when this process has reconciled the ImageJob (this uid).
    pub fn knows(&self, key: &ObjectRef<ImageJob>, uid: Option<&str>) -> bool {
        self.entries.lock().unwrap().get(key).is_some_and(|e| e.uid.as_deref() == uid)
    }

    pub fn set_newcomers(&self, n: usize) {
        self.newcomers.store(n, Ordering::Relaxed);
    }

    /// True while some ImageJob waits in the queue for its first status.
    pub fn newcomers_waiting(&self) -> bool {
        self.newcomers.load(Ordering::Relaxed) > 0
    }

    /// Time left before the next poll, or None when a poll is due: never
    /// polled, woken, recreated (new uid) or its spec changed (generation).
    pub fn remaining(&self, key: &ObjectRef<ImageJob>, uid: Option<&str>, generation: Option<i64>) -> Option<Duration> {
        let entries = self.entries.lock().unwrap();
        let entry = entries.get(key)?;
        if entry.uid.as_deref() != uid || entry.generation != generation {
            return None;
        }
        let left = entry.next_poll?.checked_duration_since(Instant::now())?;
        (!left.is_zero()).then_some(left)
    }

    /// Records the next poll; `failed` counts consecutive failures (reset
    /// on success). Returns the failure count.
    pub fn record(
        &self,
        key: &ObjectRef<ImageJob>,
        uid: Option<&str>,
        generation: Option<i64>,
        next: Duration,
        failed: bool,
    ) -> u32 {
        let mut entries = self.entries.lock().unwrap();
        let entry = entry_of(&mut entries, key, uid);
        entry.generation = generation;
        entry.next_poll = Some(Instant::now() + next);
        entry.failures = if failed { entry.failures.saturating_add(1) } else { 0 };
        entry.awaits_api &= failed;
        entry.failures
    }

    /// Postpones the next poll (the rate limit reserved a later send time)
    /// without counting a failure.
    pub fn defer(&self, key: &ObjectRef<ImageJob>, uid: Option<&str>, generation: Option<i64>, wait: Duration) {
        let mut entries = self.entries.lock().unwrap();
        let entry = entry_of(&mut entries, key, uid);
        entry.generation = generation;
        entry.next_poll = Some(Instant::now() + wait);
    }

    /// True when this ImageJob's polls were already spread by a jittered
    /// interval (and have not been lined up by a wake since); marks it
    /// spread either way, as the caller is about to use a jittered delay
    /// when this returns false.
    pub fn spread(&self, key: &ObjectRef<ImageJob>, uid: Option<&str>) -> bool {
        let mut entries = self.entries.lock().unwrap();
        std::mem::replace(&mut entry_of(&mut entries, key, uid).spread, true)
    }

    /// Remembers that we wrote a status with this fingerprint.
    pub fn written(&self, key: &ObjectRef<ImageJob>, uid: Option<&str>, fingerprint: u64) {
        let mut entries = self.entries.lock().unwrap();
        entry_of(&mut entries, key, uid).written = Some((fingerprint, Instant::now()));
    }

    /// True when we wrote exactly this status within `window`: a cache that
    /// shows something else has not caught up with our write yet.
    pub fn recently_written(
        &self,
        key: &ObjectRef<ImageJob>,
        uid: Option<&str>,
        fingerprint: u64,
        window: Duration,
    ) -> bool {
        let entries = self.entries.lock().unwrap();
        entries.get(key).is_some_and(|e| {
            e.uid.as_deref() == uid && e.written.is_some_and(|(f, at)| f == fingerprint && at.elapsed() < window)
        })
    }

    /// When a forced (`requestedAt`) poll of this ImageJob last went out.
    pub fn last_forced(&self, key: &ObjectRef<ImageJob>) -> Option<Instant> {
        self.entries.lock().unwrap().get(key).and_then(|e| e.forced)
    }

    pub fn mark_forced(&self, key: &ObjectRef<ImageJob>) {
        self.entries.lock().unwrap().entry(key.clone()).or_default().forced = Some(Instant::now());
    }

    /// Adds what a poll saw (`Some((when, percent))`) to the ImageJob's
    /// progress model, and returns the model.
    pub fn progress(&self, key: &ObjectRef<ImageJob>, uid: Option<&str>, seen: Option<(Timestamp, u8)>) -> Progress {
        let mut entries = self.entries.lock().unwrap();
        let entry = entry_of(&mut entries, key, uid);
        if let Some((at, percent)) = seen {
            entry.progress.observe(at, percent);
        }
        entry.progress.clone()
    }

    /// Marks the ImageJob to be retried when the API server is back.
    pub fn await_api(&self, key: &ObjectRef<ImageJob>) {
        if let Some(e) = self.entries.lock().unwrap().get_mut(key) {
            e.awaits_api = true;
        }
    }

    pub fn any_awaiting_api(&self) -> bool {
        self.entries.lock().unwrap().values().any(|e| e.awaits_api)
    }

    /// The ImageJobs waiting for the API server, unmarked.
    pub fn take_awaiting_api(&self) -> Vec<ObjectRef<ImageJob>> {
        let mut entries = self.entries.lock().unwrap();
        let mut taken = Vec::new();
        for (key, entry) in entries.iter_mut().filter(|(_, e)| e.awaits_api) {
            entry.awaits_api = false;
            taken.push(key.clone());
        }
        taken
    }

    /// Consecutive failures so far.
    pub fn failures(&self, key: &ObjectRef<ImageJob>) -> u32 {
        self.entries.lock().unwrap().get(key).map_or(0, |e| e.failures)
    }

    /// Makes the next reconcile poll (e.g. a Secret changed). Many
    /// ImageJobs woken together line up, so their next interval is
    /// jittered again.
    pub fn wake(&self, key: &ObjectRef<ImageJob>) {
        if let Some(e) = self.entries.lock().unwrap().get_mut(key) {
            e.next_poll = None;
            e.spread = false;
        }
    }

    /// Makes the next reconcile poll because another ImageJob fetched a
    /// new answer for the same job; it keeps its phase, which now follows
    /// that fetch.
    pub fn wake_shared(&self, key: &ObjectRef<ImageJob>) {
        if let Some(e) = self.entries.lock().unwrap().get_mut(key) {
            e.next_poll = None;
        }
    }

    /// Drops the state of ImageJobs that are gone (`finished` is None) or
    /// finished and not written within `window`: a finished ImageJob is
    /// never polled, so after that nothing reads its entry. Most ImageJobs
    /// in a long-lived cluster are finished; they cost nothing here.
    pub fn retain(&self, finished: impl Fn(&ObjectRef<ImageJob>) -> Option<bool>, window: Duration) {
        self.entries.lock().unwrap().retain(|k, e| match finished(k) {
            None => false,
            Some(false) => true,
            Some(true) => e.written.is_some_and(|(_, at)| at.elapsed() < window),
        });
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The poll interval shortened by up to 10 % at random, so that jobs
/// created together spread out, and never later than the interval. The
/// controller draws it once per job and keeps that phase.
pub fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(1.0 - rand::random::<f64>() * 0.1)
}

/// How long to wait after the `failures`-th consecutive failure: exponential
/// with jitter between `min` and `max`, and never before `Retry-After`
/// (which `ImsError::retry_after` already caps).
pub fn backoff(failures: u32, min: Duration, max: Duration, retry_after: Option<Duration>) -> Duration {
    let delay = backon::ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(failures.saturating_sub(1).min(30) as usize)
        .unwrap_or(max)
        .min(max);
    retry_after.map_or(delay, |ra| delay.max(ra))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectRef<ImageJob> {
        ObjectRef::new(name).within("ns")
    }

    #[tokio::test(start_paused = true)]
    async fn due_until_recorded_then_waits() {
        let s = Schedule::default();
        let k = key("a");
        assert_eq!(s.remaining(&k, Some("u1"), Some(1)), None);
        s.record(&k, Some("u1"), Some(1), Duration::from_secs(10), false);
        assert_eq!(s.remaining(&k, Some("u1"), Some(1)), Some(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(s.remaining(&k, Some("u1"), Some(1)), Some(Duration::from_secs(6)));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(s.remaining(&k, Some("u1"), Some(1)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn those_awaiting_the_api_server_are_taken_once_and_a_success_clears_them() {
        let s = Schedule::default();
        let (a, b, c) = (key("a"), key("b"), key("c"));
        for k in [&a, &b, &c] {
            s.record(k, Some("u"), Some(1), Duration::from_secs(60), true);
        }
        s.await_api(&a);
        s.await_api(&b);
        s.record(&b, Some("u"), Some(1), Duration::from_secs(10), false); // wrote after all
        assert!(s.any_awaiting_api());
        assert_eq!(s.take_awaiting_api(), vec![a.clone()]);
        assert!(!s.any_awaiting_api() && s.take_awaiting_api().is_empty());
        s.await_api(&key("unknown")); // no entry: nothing to retry
        assert!(!s.any_awaiting_api());
    }

    #[tokio::test(start_paused = true)]
    async fn spec_change_recreation_and_wake_make_it_due() {
        let s = Schedule::default();
        let k = key("a");
        s.record(&k, Some("u1"), Some(1), Duration::from_secs(10), false);
        assert_eq!(s.remaining(&k, Some("u1"), Some(2)), None, "new generation");
        assert_eq!(s.remaining(&k, Some("u2"), Some(1)), None, "recreated");
        s.wake(&k);
        assert_eq!(s.remaining(&k, Some("u1"), Some(1)), None, "woken");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_count_and_reset() {
        let s = Schedule::default();
        let k = key("a");
        assert_eq!(s.record(&k, Some("u"), None, Duration::ZERO, true), 1);
        assert_eq!(s.record(&k, Some("u"), None, Duration::ZERO, true), 2);
        assert_eq!(s.failures(&k), 2);
        assert_eq!(s.record(&k, Some("u"), None, Duration::ZERO, false), 0);
        s.retain(|_| None, Duration::from_secs(5));
        assert!(s.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_is_drawn_once_until_a_wake_lines_jobs_up() {
        let s = Schedule::default();
        let k = key("a");
        assert!(!s.spread(&k, Some("u1")), "first poll: jitter");
        s.record(&k, Some("u1"), Some(1), Duration::from_secs(28), false);
        assert!(s.spread(&k, Some("u1")), "then keep the phase");
        s.wake_shared(&k);
        assert!(s.spread(&k, Some("u1")), "a shared answer keeps the phase");
        s.wake(&k);
        assert!(!s.spread(&k, Some("u1")), "a wake (Secret change) jitters again");
        assert!(!s.spread(&k, Some("u2")), "a recreated object jitters again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_deferral_postpones_without_counting_a_failure() {
        let s = Schedule::default();
        let k = key("a");
        s.record(&k, Some("u"), Some(1), Duration::ZERO, true);
        s.defer(&k, Some("u"), Some(1), Duration::from_secs(3));
        assert_eq!(s.failures(&k), 1);
        assert_eq!(s.remaining(&k, Some("u"), Some(1)), Some(Duration::from_secs(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn our_own_write_is_remembered_briefly() {
        let s = Schedule::default();
        let k = key("a");
        let window = Duration::from_secs(5);
        assert!(!s.recently_written(&k, Some("u"), 7, window));
        s.written(&k, Some("u"), 7);
        assert!(s.recently_written(&k, Some("u"), 7, window));
        assert!(!s.recently_written(&k, Some("u"), 8, window), "another status");
        assert!(!s.recently_written(&k, Some("u2"), 7, window), "another object");
        tokio::time::advance(window).await;
        assert!(!s.recently_written(&k, Some("u"), 7, window), "the cache has caught up by now");
    }

    #[tokio::test(start_paused = true)]
    async fn gone_and_settled_finished_imagejobs_are_forgotten() {
        let s = Schedule::default();
        let window = Duration::from_secs(5);
        for name in ["running", "finished", "gone"] {
            s.record(&key(name), Some("u"), Some(1), Duration::from_secs(30), false);
            s.written(&key(name), Some("u"), 7);
        }
        let state = |k: &ObjectRef<ImageJob>| match k.name.as_str() {
            "running" => Some(false),
            "finished" => Some(true),
            _ => None,
        };
        s.retain(state, window);
        assert_eq!(s.len(), 2, "a gone ImageJob is dropped at once");
        tokio::time::advance(window).await;
        s.retain(state, window);
        assert_eq!(s.len(), 1, "a finished one once its last write has settled");
        assert!(s.remaining(&key("running"), Some("u"), Some(1)).is_some());
    }

    #[test]
    fn the_progress_model_is_kept_per_object_and_starts_afresh_when_recreated() {
        let s = Schedule::default();
        let k = key("a");
        let at = |sec: i64| Timestamp::from_second(1_800_000_000 + sec).unwrap();
        assert_eq!(s.progress(&k, Some("u1"), None).percent(), None);
        s.progress(&k, Some("u1"), Some((at(0), 10)));
        let seen = s.progress(&k, Some("u1"), Some((at(10), 20)));
        assert_eq!(seen.percent(), Some(20));
        assert!(seen.eta().is_some(), "two values that rose: an estimate");
        assert_eq!(s.progress(&k, Some("u1"), None), seen, "nothing new seen: the same model");
        assert_eq!(s.progress(&k, Some("u2"), None).percent(), None, "a recreated object starts afresh");
    }

    #[test]
    fn jitter_stays_within_ten_percent_below() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_secs(30));
            assert!(d <= Duration::from_secs(30) && d >= Duration::from_secs(27), "{d:?}");
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let (min, max) = (Duration::from_secs(2), Duration::from_secs(300));
        for _ in 0..200 {
            let first = backoff(1, min, max, None);
            assert!(first >= min && first <= min * 2, "{first:?}");
            let fifth = backoff(5, min, max, None);
            assert!(fifth >= Duration::from_secs(32) && fifth <= Duration::from_secs(64), "{fifth:?}");
            assert!(backoff(40, min, max, None) <= max);
            let ra = backoff(1, min, max, Some(Duration::from_secs(30)));
            assert!(ra >= Duration::from_secs(30), "{ra:?}");
        }
    }
}
