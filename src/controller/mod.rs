//! The ImageJob controller. Rooms:
//! - `plan`: pure decisions — the reconcile's two whole steps
//!   (`before_poll`: skip, write only or poll; `after_poll`: the verdict or
//!   the answer; then `after_write`), what an IMS failure means for the
//!   status, which endpoints to ask, when a status counts as new.
//! - `reconcile`: the I/O around them — gathers the facts, reads the
//!   Secret, asks IMS through the coalescer, writes the status when it
//!   changed, publishes Events, records the next poll.
//! - `coalesce`: one IMS request per job and interval, shared by the
//!   ImageJobs naming that job, behind a per-project token bucket.
//! - `schedule`: per-ImageJob timing (due time, backoff, own writes).
//! - `secrets`: parsed credentials cached per Secret, and who reads which.
//! - `gate`: one probe per credential: until a credential has worked, one
//!   request with it at a time, and a rejected one backs off for all.
//! - `fence`: fenced writes: no status or Event from a replica that does
//!   not hold the Lease.
//! - `output`: the result ConfigMap (`spec.outputConfigMapRef`).
//! - `election`: the leader Lease, claimed within a second of its release.
//! - `run`: wiring — watches, leader election, housekeeping, the HTTP server.
//!
//! The conditions, reasons and Events it writes: `docs/contract.md`.

pub mod coalesce;
pub(crate) mod election;
pub mod fence;
pub(crate) mod gate;
pub(crate) mod identity;
pub mod output;
pub mod plan;
pub mod reconcile;
pub mod run;
pub mod schedule;
pub mod secrets;

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;

use crate::config::RunArgs;
use crate::crd::ImageJob;
use crate::ims::JobSource;
use crate::metrics::Metrics;
use coalesce::Coalescer;
use schedule::Schedule;
use secrets::{SecretCache, SecretError};

pub use plan::{
    NextPoll, WRITE_ECHO_WINDOW, as_stored, deadline_exceeded, fingerprint, follow_delay, outcome_of_error,
    pending_request, plan_next, target_of,
};
pub use reconcile::{error_policy, reconcile};

pub const FIELD_MANAGER: &str = "imagejob-operator";

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
    /// The operator's own output ConfigMaps (`spec.outputConfigMapRef`), as
    /// the metadata-only ConfigMap watch caches them; without it each check
    /// is a GET.
    pub outputs: Option<output::Outputs>,
    /// ImageJobs to reconcile now (Secret changed, shared answer changed).
    pub wake: mpsc::UnboundedSender<ObjectRef<ImageJob>>,
    /// Writes only while this replica leads (see `fence`).
    pub fence: fence::Fence,
    /// The node's keys, with `--default-credentials metadata`.
    pub metadata_keys: Option<Arc<crate::ims::metadata::MetadataKeys>>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the status: {0}")]
    Patch(#[source] kube::Error),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("writing the output ConfigMap: {0}")]
    Output(#[source] kube::Error),
    #[error("ImageJob has no namespace")]
    NoNamespace,
    #[error("the ImageJob changed since it was read; reconciling again with a fresh read")]
    Conflict,
    #[error("not the leader: this replica writes nothing")]
    NotLeader,
    #[error("reading the leader Lease: {0}")]
    Lease(#[source] kube::Error),
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
