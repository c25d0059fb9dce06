//! Tracking: a watch on the bench's ImageJobs that records each status
//! change, when it was seen and how late after the cloud's change.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use imagejob_operator::crd::{ImageJob, ImageJobStatus, Phase};

use crate::log;
use crate::plans::{CloudJob, Group};

pub struct Tracked {
    pub job: Arc<CloudJob>,
    pub group: Group,
    pub created: Instant,
    pub last_hash: Option<u64>,
    pub last_visible_hash: Option<u64>,
    pub last_visible: Option<(String, Option<i32>)>,
    pub first_status: Option<Instant>,
    pub finished: Option<Instant>,
    /// Status updates seen (any field, times included).
    pub changes: u64,
    /// Updates that changed what a user sees (`visible`).
    pub visible_changes: u64,
    pub false_failure: bool,
    pub stalled: bool,
    pub retrying: bool,
}

#[derive(Default)]
pub struct Tracker {
    pub objs: HashMap<(String, String), Tracked>,
    /// (when seen, seconds late) per group.
    pub lateness: BTreeMap<Group, Vec<(Instant, f64)>>,
    pub unknown_events: u64,
    pub relists: u64,
    pub events: u64,
}

impl Tracked {
    pub fn new(job: Arc<CloudJob>, group: Group) -> Self {
        Tracked {
            job,
            group,
            created: Instant::now(),
            last_hash: None,
            last_visible_hash: None,
            last_visible: None,
            first_status: None,
            finished: None,
            changes: 0,
            visible_changes: 0,
            false_failure: false,
            stalled: false,
            retrying: false,
        }
    }
}

/// What a user sees of a status: phase, cloud status, progress, task,
/// image, codes, results, sub-jobs and the conditions' type, status and
/// reason. Not transition times, counters or messages.
fn visible(st: &ImageJobStatus) -> u64 {
    let mut conditions: Vec<_> = st.conditions.iter().map(|c| (&c.type_, &c.status, &c.reason)).collect();
    conditions.sort();
    let fields = serde_json::json!([
        st.phase,
        st.job_status,
        st.progress,
        st.current_task,
        st.image_id,
        st.image_name,
        st.error_code,
        st.fail_reason,
        st.results,
        st.sub_jobs,
        st.sub_job_ids,
        conditions,
    ]);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    fields.to_string().hash(&mut h);
    h.finish()
}

impl Tracked {
    /// Seconds from the cloud's SUCCESS/FAIL (or the create call, if later)
    /// to the watch showing it.
    pub fn end_lateness(&self) -> Option<f64> {
        let end = *self.job.t0.get()? + Duration::from_secs_f64(self.job.duration);
        Some(self.finished?.saturating_duration_since(end.max(self.created)).as_secs_f64())
    }
}

impl Tracker {
    pub fn observe(&mut self, ij: &ImageJob, now: Instant) {
        self.events += 1;
        let key = (ij.namespace().unwrap_or_default(), ij.name_any());
        let Some(t) = self.objs.get_mut(&key) else {
            self.unknown_events += 1;
            return;
        };
        // A new object reads the CRD's default `{observedGeneration: 0}`
        // until the operator's first write: not a status anyone wrote.
        let Some(st) = ij.status.as_ref().filter(|s| !s.conditions.is_empty()) else { return };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_vec(st).unwrap_or_default().hash(&mut h);
        let h = h.finish();
        if t.last_hash == Some(h) {
            return;
        }
        t.last_hash = Some(h);
        t.changes += 1;
        let v = visible(st);
        if t.last_visible_hash != Some(v) {
            t.last_visible_hash = Some(v);
            t.visible_changes += 1;
        }
        t.first_status.get_or_insert(now);
        let job_status = st.job_status.clone().unwrap_or_default();
        let is_true = |ty: &str| st.conditions.iter().any(|c| c.type_ == ty && c.status == "True");
        if (st.phase == Some(Phase::Failed) || is_true("Failed")) && !(t.job.fails && job_status == "FAIL") {
            t.false_failure = true;
        }
        t.stalled |= is_true("Stalled") && st.phase != Some(Phase::Failed);
        t.retrying |= st.conditions.iter().any(|c| c.reason == "RetryingAfterError");
        let visible = (job_status.clone(), st.progress);
        if job_status.is_empty() || t.last_visible.as_ref() == Some(&visible) {
            return;
        }
        t.last_visible = Some(visible);
        if let (Some(t0), Some(entered)) = (t.job.t0.get(), t.job.entered(&job_status, st.progress)) {
            let since = (*t0 + Duration::from_secs_f64(entered)).max(t.created);
            let late = now.saturating_duration_since(since).as_secs_f64();
            self.lateness.entry(t.group).or_default().push((now, late));
        }
        if job_status == "SUCCESS" || job_status == "FAIL" {
            t.finished.get_or_insert(now);
        }
    }

    /// Lateness samples of a group, optionally only those seen in a window.
    pub fn late(&self, group: Group, window: Option<(Instant, Instant)>) -> Vec<f64> {
        let all = self.lateness.get(&group).map(Vec::as_slice).unwrap_or_default();
        all.iter().filter(|(at, _)| window.is_none_or(|(a, b)| *at >= a && *at <= b)).map(|(_, l)| *l).collect()
    }

    /// Seconds from each create call to the first status, and how many of
    /// the group have none yet.
    pub fn first_status_latencies(&self, group: Group) -> (Vec<f64>, usize) {
        let mut lat = Vec::new();
        let mut missing = 0;
        for x in self.of(group) {
            match x.first_status {
                Some(f) => lat.push(f.saturating_duration_since(x.created).as_secs_f64()),
                None => missing += 1,
            }
        }
        (lat, missing)
    }

    pub fn of(&self, group: Group) -> impl Iterator<Item = &Tracked> {
        self.objs.values().filter(move |t| t.group == group)
    }

    pub fn unfinished(&self, group: Group) -> usize {
        self.of(group).filter(|t| t.finished.is_none()).count()
    }

    pub fn without_status(&self, group: Group) -> usize {
        self.of(group).filter(|t| t.first_status.is_none()).count()
    }
}

pub fn spawn_watch(client: &Client, run: &str, tracker: Arc<Mutex<Tracker>>) -> tokio::task::JoinHandle<()> {
    let api: Api<ImageJob> = Api::all(client.clone());
    let cfg = watcher::Config::default().labels(&format!("scale-bench={run}")).any_semantic();
    tokio::spawn(async move {
        let mut stream = watcher(api, cfg).default_backoff().boxed();
        while let Some(ev) = stream.next().await {
            let now = Instant::now();
            match ev {
                Ok(watcher::Event::Apply(ij) | watcher::Event::InitApply(ij)) => {
                    tracker.lock().unwrap().observe(&ij, now)
                }
                Ok(watcher::Event::InitDone) => tracker.lock().unwrap().relists += 1,
                Ok(_) => {}
                Err(e) => log(format!("bench watch error: {e}")),
            }
        }
    })
}
