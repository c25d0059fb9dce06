//! The simulator's shared state. Everything a request touches is either
//! immutable, a `DashMap` entry locked only for a few instructions, or an
//! atomic: no lock is ever held across an await.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use dashmap::DashMap;
use jiff::Timestamp;
use serde_json::{Map, Value};

use super::aksk::{AkskError, AkskVerifier, ProjectScope, SignedRequest};
use super::counters::{GlobalCounters, JobCounters};
use super::iam::{FlatRefusal, TokenProblem, TokenStore};
use super::lifecycle::{self, BodyStyle, JobApi, JobTime, ScriptedAnswer};
use super::metadata::TemporaryKey;
use super::scenario::{ClockStart, JobDef, Scenario, Settings};
use super::throttle::Throttles;

pub struct Sim {
    /// Settings, projects, users and keys; its `jobs` moved into `jobs`.
    pub scenario: Scenario,
    jobs: DashMap<String, Arc<LiveJob>>,
    pub tokens: TokenStore,
    aksk: AkskVerifier,
    pub throttles: Throttles,
    pub counters: GlobalCounters,
    request_seed: u64,
    request_seq: AtomicU64,
}

/// A job definition plus its running clock and counters.
pub struct LiveJob {
    pub def: JobDef,
    clock: OnceLock<JobClock>,
    pub counters: JobCounters,
    /// Numbers authenticated requests, for faults by request number.
    authenticated: AtomicU64,
}

#[derive(Clone, Copy)]
struct JobClock {
    started: Instant,
    created_at: Timestamp,
}

impl LiveJob {
    fn new(def: JobDef, default_clock: ClockStart) -> Self {
        let clock = OnceLock::new();
        if def.clock.unwrap_or(default_clock) == ClockStart::SimStart {
            let _ = clock.set(JobClock::start_now(&def));
        }
        Self { def, clock, counters: JobCounters::default(), authenticated: AtomicU64::new(0) }
    }

    /// Numbers this request (either API: one sequence for faults) and
    /// computes its answer; starts the clock of a `first_query` job.
    pub fn answer(&self, settings: &Settings, api: JobApi) -> ScriptedAnswer {
        let request_no = self.authenticated.fetch_add(1, Relaxed) + 1;
        let clock = self.clock.get_or_init(|| JobClock::start_now(&self.def));
        let at = JobTime { created_at: clock.created_at, age: clock.started.elapsed() + self.def.age_at_start.0 };
        lifecycle::answer(&self.def, at, request_no, &BodyStyle::new(settings, &self.def, api))
    }
}

impl JobClock {
    fn start_now(def: &JobDef) -> Self {
        Self { started: Instant::now(), created_at: lifecycle::created_at(Timestamp::now(), def.age_at_start.0) }
    }
}

/// Why a request did not authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Token(TokenProblem),
    Aksk(AkskError),
}

fn aksk_authorization<'a>(req: &SignedRequest<'a>) -> Option<&'a str> {
    req.header("authorization").filter(|a| a.trim_start().starts_with("SDK-HMAC-SHA256"))
}

/// The key of a job: its two ids.
fn job_key(project_id: &str, job_id: &str) -> String {
    format!("{project_id}/{job_id}")
}

impl Sim {
    /// Takes the jobs out of the scenario: the live map is their only copy.
    pub fn new(mut scenario: Scenario) -> Self {
        let jobs = DashMap::new();
        for def in std::mem::take(&mut scenario.jobs) {
            let key = job_key(&def.project_id, &def.job_id);
            jobs.insert(key, Arc::new(LiveJob::new(def, scenario.settings.clock)));
        }
        Self {
            aksk: AkskVerifier::new(&scenario),
            throttles: Throttles::new(scenario.settings.throttle.clone()),
            tokens: TokenStore::default(),
            counters: GlobalCounters::default(),
            request_seed: rand::random(),
            request_seq: AtomicU64::new(0),
            jobs,
            scenario,
        }
    }

    /// 32 hex characters, like the gateway's request ids.
    pub fn next_request_id(&self) -> String {
        let n = self.request_seq.fetch_add(1, Relaxed);
        format!("{:016x}{:016x}", self.request_seed, n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    pub fn job(&self, project_id: &str, job_id: &str) -> Option<Arc<LiveJob>> {
        self.jobs.get(&job_key(project_id, job_id)).map(|e| Arc::clone(e.value()))
    }

    /// Adds or replaces a job (already validated); its clock and counters
    /// start afresh. Returns true when a job was replaced.
    pub fn put_job(&self, def: JobDef) -> bool {
        let key = job_key(&def.project_id, &def.job_id);
        let live = Arc::new(LiveJob::new(def, self.scenario.settings.clock));
        self.jobs.insert(key, live).is_some()
    }

    pub fn remove_job(&self, project_id: &str, job_id: &str) -> bool {
        self.jobs.remove(&job_key(project_id, job_id)).is_some()
    }

    /// AK/SK when an `SDK-HMAC-SHA256` Authorization header is present,
    /// else the IAM token; the project the request may act in.
    pub fn authenticate(&self, req: &SignedRequest<'_>) -> Result<String, AuthFailure> {
        if let Some(authorization) = aksk_authorization(req) {
            let project = self.aksk.verify(req, authorization, Timestamp::now(), Instant::now());
            return project.map(str::to_owned).map_err(AuthFailure::Aksk);
        }
        let token = req.header("x-auth-token").ok_or(AuthFailure::Missing)?;
        let now = Timestamp::now();
        match req.scope {
            ProjectScope::Path(project) => self.tokens.check(token, project, now).map(|()| project.to_owned()),
            ProjectScope::Credentials => self.tokens.scope(token, now),
        }
        .map_err(AuthFailure::Token)
    }

    /// The project a request names, before any check: whose job it meant,
    /// for the counters of a refused request.
    pub fn claimed_project(&self, req: &SignedRequest<'_>) -> Option<String> {
        match req.scope {
            ProjectScope::Path(project) => Some(project.to_owned()),
            ProjectScope::Credentials if aksk_authorization(req).is_some() => {
                req.header("x-project-id").map(str::to_owned)
            }
            ProjectScope::Credentials => self.tokens.project_of(req.header("x-auth-token")?),
        }
    }

    /// Who calls an IAM API that needs a caller (`assume_role`): the
    /// holder of a valid `X-Auth-Token`, or the user of an AK/SK signer.
    pub fn caller(&self, req: &SignedRequest<'_>) -> Result<String, FlatRefusal> {
        let now = Timestamp::now();
        if let Some(authorization) = aksk_authorization(req) {
            return self
                .aksk
                .verify_caller(req, authorization, now, Instant::now())
                .map_err(|e| FlatRefusal::unauthenticated(format!("The AK/SK signature is refused: {}", e.detail())));
        }
        let token =
            req.header("x-auth-token").ok_or_else(|| FlatRefusal::unauthenticated("X-Auth-Token is missing"))?;
        self.tokens.holder(token, now).map_err(|problem| {
            FlatRefusal::unauthenticated(format!("The X-Auth-Token is not valid ({problem:?})").to_lowercase())
        })
    }

    /// The metadata service's current key pair; counts new ones.
    pub fn metadata_key(&self) -> TemporaryKey {
        let (key, fresh) = self.aksk.temporary.current(Timestamp::now(), self.scenario.metadata.key_lifetime.0);
        if fresh {
            self.counters.metadata_keys_issued.inc();
        }
        key
    }

    pub fn count_auth_failure(&self, failure: AuthFailure) {
        match failure {
            AuthFailure::Missing => self.counters.auth_failures_missing.inc(),
            AuthFailure::Token(_) => self.counters.auth_failures_token.inc(),
            AuthFailure::Aksk(_) => self.counters.auth_failures_aksk.inc(),
        }
    }

    /// Everything `/admin/requests` shows.
    pub fn requests_json(&self) -> Value {
        let mut all = self.counters.to_json();
        let jobs: Map<String, Value> =
            self.jobs.iter().map(|e| (e.key().clone(), e.value().counters.to_json())).collect();
        all["jobs"] = Value::Object(jobs);
        all
    }

    pub fn reset_counters(&self) {
        self.counters.reset();
        self.jobs.iter().for_each(|e| e.value().counters.reset());
    }

    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }
}
