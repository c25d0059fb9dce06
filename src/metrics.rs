//! Prometheus metrics (names follow the `_total` / `_seconds` conventions).

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: Phase,
}

impl EncodeLabelValue for Phase {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub ims_requests: Family<OutcomeLabels, Counter>,
    pub ims_request_duration: Histogram,
    pub ims_coalesced_reads: Counter,
    pub ims_rate_limited: Counter,
    pub status_patches: Counter,
    pub events: Family<ReasonLabels, Counter>,
    pub imagejobs: Family<PhaseLabels, Gauge>,
    pub leader: Gauge,
    /// Errors of the ImageJob and Secret watches (they retry by themselves).
    pub watch_errors: Family<ResourceLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("imagejob");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register("reconciles", "Reconciles by result (ok, error)", reconciles.clone());
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register("reconcile_duration_seconds", "Time spent in one reconcile", reconcile_duration.clone());
        let ims_requests = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "ims_requests",
            "IMS job queries sent, by outcome (success, transient, authentication_failed, forbidden, job_not_found, bad_request)",
            ims_requests.clone(),
        );
        let ims_request_duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register("ims_request_duration_seconds", "Latency of IMS job queries", ims_request_duration.clone());
        let ims_coalesced_reads = Counter::default();
        registry.register(
            "ims_coalesced_reads",
            "Reconciles served by a fresh answer fetched for another ImageJob naming the same job",
            ims_coalesced_reads.clone(),
        );
        let ims_rate_limited = Counter::default();
        registry.register(
            "ims_rate_limited",
            "Polls postponed because the outbound token bucket of their endpoint and project (--ims-rate-limit) was empty",
            ims_rate_limited.clone(),
        );
        let status_patches = Counter::default();
        registry.register("status_patches", "Status subresource patches written", status_patches.clone());
        let events = Family::<ReasonLabels, Counter>::default();
        registry.register("events", "Kubernetes Events published, by reason", events.clone());
        let imagejobs = Family::<PhaseLabels, Gauge>::default();
        registry.register("imagejobs", "ImageJobs known to this operator, by phase", imagejobs.clone());
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease (or runs without election)",
            leader.clone(),
        );
        let watch_errors = Family::<ResourceLabels, Counter>::default();
        registry.register(
            "watch_errors",
            "Errors of the Kubernetes watches, by resource (imagejobs, secrets); each is retried with backoff",
            watch_errors.clone(),
        );
        Self {
            watch_errors,
            registry,
            reconciles,
            reconcile_duration,
            ims_requests,
            ims_request_duration,
            ims_coalesced_reads,
            ims_rate_limited,
            status_patches,
            events,
            imagejobs,
            leader,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
