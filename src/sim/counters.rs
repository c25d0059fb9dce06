//! Request counters, readable through the admin API. Lock-free on the hot
//! path: one atomic add per request for the status codes the simulator
//! normally sends; rarer codes go to a small locked map.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde_json::{Map, Value, json};

use super::lifecycle::JobApi;

/// Codes with their own atomic slot.
const COMMON: [u16; 11] = [200, 201, 400, 401, 403, 404, 429, 500, 502, 503, 504];

/// Requests by HTTP status.
#[derive(Default)]
pub struct StatusCounts {
    common: [AtomicU64; COMMON.len()],
    rare: Mutex<BTreeMap<u16, u64>>,
}

impl StatusCounts {
    pub fn record(&self, status: u16) {
        match COMMON.iter().position(|&c| c == status) {
            Some(i) => {
                self.common[i].fetch_add(1, Relaxed);
            }
            None => *self.rare.lock().unwrap_or_else(|e| e.into_inner()).entry(status).or_default() += 1,
        }
    }

    pub fn by_status(&self) -> BTreeMap<u16, u64> {
        let mut map = self.rare.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (code, count) in COMMON.iter().zip(&self.common) {
            let n = count.load(Relaxed);
            if n > 0 {
                map.insert(*code, n);
            }
        }
        map
    }

    pub fn reset(&self) {
        self.common.iter().for_each(|c| c.store(0, Relaxed));
        self.rare.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// `{"requests": N, "by_status": {"200": n, ...}}`
    pub fn to_json(&self) -> Value {
        counts_json(self.by_status())
    }
}

fn counts_json(by_status: BTreeMap<u16, u64>) -> Value {
    let total: u64 = by_status.values().sum();
    let by_status: Map<String, Value> = by_status.into_iter().map(|(k, v)| (k.to_string(), v.into())).collect();
    json!({"requests": total, "by_status": by_status})
}

/// Job queries by HTTP status, through either job API.
#[derive(Default)]
pub struct JobCounters {
    status_api: StatusCounts,
    progress_api: StatusCounts,
}

impl JobCounters {
    pub fn record(&self, api: JobApi, status: u16) {
        self.of(api).record(status);
    }

    fn of(&self, api: JobApi) -> &StatusCounts {
        match api {
            JobApi::Status => &self.status_api,
            JobApi::Progress => &self.progress_api,
        }
    }

    pub fn reset(&self) {
        self.status_api.reset();
        self.progress_api.reset();
    }

    /// Both APIs together on top (what `requests` always meant: every job
    /// query), then `by_api`: `{"status": {...}, "progress": {...}}`.
    pub fn to_json(&self) -> Value {
        let mut all = self.status_api.by_status();
        for (code, n) in self.progress_api.by_status() {
            *all.entry(code).or_default() += n;
        }
        let mut json = counts_json(all);
        json["by_api"] = [JobApi::Status, JobApi::Progress]
            .into_iter()
            .map(|api| (api.name().to_owned(), self.of(api).to_json()))
            .collect::<Map<String, Value>>()
            .into();
        json
    }
}

/// A plain event counter.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
    pub fn reset(&self) {
        self.0.store(0, Relaxed);
    }
}

/// Job queries being answered now, and the most ever at once (since the
/// last reset): what an operator's `--concurrency` and token bucket allow.
#[derive(Default)]
pub struct InFlight {
    now: AtomicU64,
    max: AtomicU64,
}

/// One job query in flight; counted down when dropped.
pub struct InFlightGuard<'a>(&'a InFlight);

impl InFlight {
    pub fn enter(&self) -> InFlightGuard<'_> {
        let now = self.now.fetch_add(1, Relaxed) + 1;
        self.max.fetch_max(now, Relaxed);
        InFlightGuard(self)
    }
    pub fn max(&self) -> u64 {
        self.max.load(Relaxed)
    }
    /// The maximum starts again from the queries in flight now.
    pub fn reset(&self) {
        self.max.store(self.now.load(Relaxed), Relaxed);
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Relaxed);
    }
}

/// Counters that are not per job.
#[derive(Default)]
pub struct GlobalCounters {
    /// Every IMS job request, whatever the answer.
    pub jobs_total: JobCounters,
    pub unknown_jobs: Counter,
    pub throttled: Counter,
    pub token_requests: Counter,
    pub tokens_issued: Counter,
    pub token_failures: Counter,
    pub auth_failures_token: Counter,
    pub auth_failures_aksk: Counter,
    pub auth_failures_missing: Counter,
    pub federation_requests: Counter,
    pub federation_tokens_issued: Counter,
    pub federation_failures: Counter,
    pub agency_requests: Counter,
    pub agency_tokens_issued: Counter,
    pub agency_failures: Counter,
    pub metadata_key_requests: Counter,
    pub metadata_keys_issued: Counter,
    /// Job queries (either API, any answer) in flight at once.
    pub in_flight: InFlight,
}

impl GlobalCounters {
    pub fn reset(&self) {
        self.jobs_total.reset();
        self.in_flight.reset();
        for c in [
            &self.unknown_jobs,
            &self.throttled,
            &self.token_requests,
            &self.tokens_issued,
            &self.token_failures,
            &self.auth_failures_token,
            &self.auth_failures_aksk,
            &self.auth_failures_missing,
            &self.federation_requests,
            &self.federation_tokens_issued,
            &self.federation_failures,
            &self.agency_requests,
            &self.agency_tokens_issued,
            &self.agency_failures,
            &self.metadata_key_requests,
            &self.metadata_keys_issued,
        ] {
            c.reset();
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "total": self.jobs_total.to_json(),
            "unknown_jobs": self.unknown_jobs.get(),
            "throttled": self.throttled.get(),
            "max_in_flight": self.in_flight.max(),
            "iam": {
                "token_requests": self.token_requests.get(),
                "tokens_issued": self.tokens_issued.get(),
                "failures": self.token_failures.get(),
                "federation_requests": self.federation_requests.get(),
                "federation_tokens_issued": self.federation_tokens_issued.get(),
                "federation_failures": self.federation_failures.get(),
                "agency_requests": self.agency_requests.get(),
                "agency_tokens_issued": self.agency_tokens_issued.get(),
                "agency_failures": self.agency_failures.get(),
            },
            "metadata": {
                "key_requests": self.metadata_key_requests.get(),
                "keys_issued": self.metadata_keys_issued.get(),
            },
            "auth_failures": {
                "token": self.auth_failures_token.get(),
                "aksk": self.auth_failures_aksk.get(),
                "missing": self.auth_failures_missing.get(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_common_and_rare_codes() {
        let c = StatusCounts::default();
        for s in [200, 200, 429, 418, 503] {
            c.record(s);
        }
        assert_eq!(c.to_json(), json!({"requests": 5, "by_status": {"200": 2, "418": 1, "429": 1, "503": 1}}));
        c.reset();
        assert_eq!(c.to_json(), json!({"requests": 0, "by_status": {}}));
    }

    #[test]
    fn job_counters_add_up_both_apis() {
        let c = JobCounters::default();
        for (api, s) in [(JobApi::Status, 200), (JobApi::Progress, 200), (JobApi::Progress, 404)] {
            c.record(api, s);
        }
        assert_eq!(
            c.to_json(),
            json!({"requests": 3, "by_status": {"200": 2, "404": 1}, "by_api": {
                "status": {"requests": 1, "by_status": {"200": 1}},
                "progress": {"requests": 2, "by_status": {"200": 1, "404": 1}}}})
        );
        c.reset();
        assert_eq!(c.to_json()["requests"], 0);
    }

    #[test]
    fn in_flight_keeps_its_maximum_until_reset() {
        let c = InFlight::default();
        let (a, b) = (c.enter(), c.enter());
        drop(a);
        let d = c.enter();
        assert_eq!(c.max(), 2);
        drop((b, d));
        c.reset();
        assert_eq!(c.max(), 0, "none in flight at the reset");
        let _e = c.enter();
        assert_eq!(c.max(), 1);
    }
}
