//! `imagejob-operator run`: wires the Kubernetes client, IMS client, watches,
//! leader election, the metrics server and the controller together.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::api::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::{Predicate, predicates};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::coalesce::{Coalescer, quota};
use super::election::{Elected, Election};
use super::fence::Fence;
use super::schedule::Schedule;
use super::secrets::{self, SecretCache};
use super::{Ctx, error_policy, reconcile};
use crate::config::{ReadSecrets, RunArgs};
use crate::crd::ImageJob;
use crate::crd::Phase;
use crate::http::{self, HttpState};
use crate::metrics::{Metrics, PhaseLabels, ResourceLabels};

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    args.validate().map_err(|e| anyhow::anyhow!(e))?;
    let client = Client::try_default().await.map_err(|e| anyhow::anyhow!("no Kubernetes configuration: {e}"))?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let addr = http::serve(args.http_addr, HttpState { metrics: metrics.clone(), ready: ready.clone() }).await?;
    info!(%addr, "serving /metrics, /healthz, /readyz");

    let shutdown = CancellationToken::new();
    tokio::spawn({
        let token = shutdown.clone();
        async move {
            crate::telemetry::shutdown_signal().await;
            info!("shutting down");
            token.cancel();
        }
    });
    if !args.leader_elect {
        metrics.leader.set(1);
        return run_controller(client, args, metrics, ready, Fence::none(), shutdown.cancelled_owned()).await;
    }
    let election = election(client.clone(), &args);
    // A standby is ready: it serves metrics and waits for the Lease.
    http::mark_ready(&ready);
    info!(lease = %election.lease, identity = %election.identity, "waiting for the leader Lease");
    let Some(Elected { leader, task: lease_task, fence }) = election.acquire(&shutdown).await? else {
        return Ok(());
    };
    info!("acquired the leader Lease");
    metrics.leader.set(1);
    let mut lost = leader.clone();
    let stop = async move {
        tokio::select! {
            _ = shutdown.cancelled() => {},
            _ = lost.wait_for(|is_leader| !is_leader) => warn!("lost the leader Lease"),
        }
    };
    let result = run_controller(client, args, metrics, ready, fence, stop).await;
    let still_leader = *leader.borrow();
    drop(leader);
    // Closing the channel makes the lease task release the Lease.
    let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
    if !still_leader {
        anyhow::bail!("lost the leader Lease; exiting so a restart rejoins as a standby");
    }
    result
}

/// The node's keys, shared by every ImageJob, when they are the default.
fn metadata_keys(args: &RunArgs) -> Option<Arc<crate::ims::metadata::MetadataKeys>> {
    let on = args.default_credentials == Some(crate::config::DefaultCredentials::Metadata);
    on.then(|| Arc::new(crate::ims::metadata::MetadataKeys::new(&args.metadata_endpoint)))
}

fn election(client: Client, args: &RunArgs) -> Election {
    let namespace = args
        .leader_election_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id()));
    Election { client, namespace, lease: args.leader_election_lease.clone(), identity }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "operator".into())
}

async fn run_controller(
    client: Client,
    args: RunArgs,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    fence: Fence,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let imagejobs: Api<ImageJob> = scoped(&client, &args);
    let secrets: Api<PartialObjectMeta<Secret>> = scoped(&client, &args);
    let mut wc = watcher::Config::default().any_semantic();
    if let Some(selector) = &args.watch_label_selector {
        wc = wc.labels(selector);
    }
    let (reader, writer) = reflector::store();
    let imagejob_stream = imagejob_changes(watcher(imagejobs, wc), writer, metrics.clone());

    let (outputs, outputs_writer) = reflector::store::<PartialObjectMeta<ConfigMap>>();
    let (wake_tx, mut wake_rx) = mpsc::unbounded_channel::<ObjectRef<ImageJob>>();
    let reporter = Reporter { controller: "imagejob-operator".into(), instance: std::env::var("POD_NAME").ok() };
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        coalescer: Coalescer::new(
            args.endpoints.client(args.ims_timeout)?,
            quota(args.ims_rate_limit, args.ims_rate_burst),
        ),
        secrets: SecretCache::new(client.clone())
            .requiring_label(args.require_credentials_label)
            .unwatched(args.read_secrets == ReadSecrets::Namespaced),
        schedule: Schedule::default(),
        reporter,
        metrics: metrics.clone(),
        outputs: args.outputs.then(|| super::output::Outputs::new(outputs)),
        wake: wake_tx,
        fence,
        metadata_keys: metadata_keys(&args),
        args,
    });

    // Only --read-secrets=true watches Secret metadata (namespaced: the
    // list would need cluster-wide rights; false: no Secret at all).
    let secret_watch: futures::future::BoxFuture<()> = if ctx.args.read_secrets == ReadSecrets::Watched {
        Box::pin(watch_secrets(secrets, reader.clone(), ctx.clone()))
    } else {
        Box::pin(futures::future::pending())
    };
    let output_watch = {
        let (api, imagejobs, ctx) = (scoped(&client, &ctx.args), reader.clone(), ctx.clone());
        async move {
            match ctx.args.outputs {
                true => watch_outputs(api, outputs_writer, imagejobs, ctx).await,
                // Without outputs no ConfigMap is read, cached or written.
                false => std::future::pending().await,
            }
        }
    };
    let housekeeping = housekeeping(reader.clone(), ctx.clone(), ready);
    let newcomers = count_newcomers(reader.clone(), ctx.clone());
    let api_return = retry_when_the_api_server_returns(client.clone(), ctx.clone());
    let wake_stream = futures::stream::poll_fn(move |cx| wake_rx.poll_recv(cx));
    let controller = Controller::for_stream(imagejob_stream, reader)
        .reconcile_on(wake_stream)
        .with_config(controller::Config::default().concurrency(ctx.args.concurrency))
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile error");
            }
            std::future::ready(())
        });
    tokio::select! {
        _ = controller => info!("controller stopped"),
        // Neither ends by itself; if one did, a restart is the honest answer.
        _ = secret_watch => anyhow::bail!("the Secret watch ended unexpectedly"),
        _ = output_watch => anyhow::bail!("the ConfigMap watch ended unexpectedly"),
        _ = housekeeping => anyhow::bail!("housekeeping ended unexpectedly"),
        _ = newcomers => anyhow::bail!("the newcomer count ended unexpectedly"),
        _ = api_return => anyhow::bail!("the API server check ended unexpectedly"),
    }
    Ok(())
}

/// The ImageJob watch as the controller's trigger: cached (`writer`), and
/// only changes of generation or annotations (status writes, ours among
/// them, change neither). Its errors (e.g. the API server restarting) are
/// logged and counted here and go no further: the controller would back off
/// all its triggers on them, requeues and wake-ups included, for up to 30 s
/// after the API server was back.
fn imagejob_changes(
    watch: impl futures::Stream<Item = watcher::Result<watcher::Event<ImageJob>>> + Send + 'static,
    writer: reflector::store::Writer<ImageJob>,
    metrics: Arc<Metrics>,
) -> impl futures::Stream<Item = watcher::Result<ImageJob>> + Send + 'static {
    watch
        .backoff(watch_backoff())
        .modify(slim)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation.combine(predicates::annotations), Default::default())
        .filter(move |result| {
            if let Err(e) = result {
                warn!(error = %e, "ImageJob watch error; retrying");
                metrics.watch_errors.get_or_create(&ResourceLabels { resource: "imagejobs" }).inc();
            }
            std::future::ready(result.is_ok())
        })
}

/// Drops what no reconcile reads before the object enters the cache:
/// managed fields, labels (selection happens at the API server), owner
/// references, finalizers and every annotation but `requestedAt` (a
/// `kubectl apply` copy of the whole object among them). At thousands of
/// ImageJobs this is a good part of the operator's memory; it also keeps
/// edits of other annotations from waking a reconcile.
fn slim(ij: &mut ImageJob) {
    let meta = &mut ij.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    meta.owner_references = None;
    meta.finalizers = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.retain(|k, _| k == crate::crd::REQUESTED_AT_ANNOTATION);
        // One too long is refused whatever its length: cache only enough to tell.
        for value in annotations.values_mut() {
            if value.len() > super::plan::MAX_REQUESTED_AT {
                *value = crate::status::bound::cut(value, super::plan::MAX_REQUESTED_AT + 4);
            }
        }
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// The watches' retry backoff: client-go's 0.8 s doubling with jitter, but
/// 2–4 s apart at most (not 30–60 s) and reset after 30 s without an error
/// (not 120 s). A restarted API server first answers the old watch with 410
/// Expired; client-go relists at once, kube-runtime backs off first, and
/// with the default that cost 6–27 s more after the API server was back
/// (status writes wait for the cache: they carry its resourceVersion).
/// Three watches retrying every few seconds cost an API server nothing.
fn watch_backoff() -> ResetTimerBackoff<watcher::ExponentialBackoff> {
    let exponential = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(800))
        .with_max_delay(Duration::from_secs(2))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(exponential.into(), Duration::from_secs(30))
}

fn scoped<K>(client: &Client, args: &RunArgs) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match &args.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Metadata-only watch of Secrets: invalidates cached credentials and wakes
/// the ImageJobs using a Secret that changed.
async fn watch_secrets<S: crate::ims::JobSource>(
    api: Api<PartialObjectMeta<Secret>>,
    imagejobs: Store<ImageJob>,
    ctx: Arc<Ctx<S>>,
) {
    let users = |namespace: &str, name: &str| {
        let all = imagejobs.state();
        all.iter().filter(|ij| secrets::reads(ij, namespace, name)).map(|ij| super::key_of(ij)).collect()
    };
    // The watcher retries with backoff by itself; an error (e.g. the API
    // server restarting) is reported and the watch goes on.
    let stream = watcher(api, watcher::Config::default().any_semantic()).backoff(watch_backoff());
    stream
        .for_each(|event| {
            match event {
                Ok(event) => ctx.wake_all(ctx.secrets.observe(&event, users)),
                Err(e) => {
                    warn!(error = %e, "Secret watch error; retrying");
                    ctx.metrics.watch_errors.get_or_create(&ResourceLabels { resource: "secrets" }).inc();
                }
            }
            std::future::ready(())
        })
        .await;
}

/// Watches the metadata of the operator's own output ConfigMaps, by label
/// (which anyone may set, so never their data): one deleted or edited by
/// someone else wakes the ImageJob that controls it, which writes it again.
async fn watch_outputs<S: crate::ims::JobSource>(
    api: Api<PartialObjectMeta<ConfigMap>>,
    writer: reflector::store::Writer<PartialObjectMeta<ConfigMap>>,
    imagejobs: Store<ImageJob>,
    ctx: Arc<Ctx<S>>,
) {
    let wc = watcher::Config::default().labels(&super::output::selector()).any_semantic();
    watcher(api, wc)
        .backoff(watch_backoff())
        .modify(|cm| cm.metadata.managed_fields = None)
        .reflect(writer)
        .touched_objects()
        .for_each(|event| {
            match event {
                Ok(cm) => {
                    if let Some(owner) = super::output::controller_of(&cm).filter(|o| imagejobs.get(o).is_some()) {
                        let _ = ctx.wake.send(owner);
                    }
                }
                Err(e) => warn!(error = %e, "ConfigMap watch error; retrying"),
            }
            std::future::ready(())
        })
        .await;
}

/// Readiness once synced, then every few seconds: the phase gauge and
/// pruning state of deleted ImageJobs.
async fn housekeeping<S: crate::ims::JobSource>(reader: Store<ImageJob>, ctx: Arc<Ctx<S>>, ready: Arc<AtomicBool>) {
    if reader.wait_until_ready().await.is_ok() {
        http::mark_ready(&ready);
        info!(imagejobs = reader.len(), "ImageJob cache synced");
    }
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let all = reader.state();
        count_phases(&all, &ctx.metrics);
        let alive = |o: &ObjectRef<ImageJob>| reader.get(o).is_some();
        let finished =
            |o: &ObjectRef<ImageJob>| reader.get(o).map(|ij| ij.status.as_ref().is_some_and(|s| s.is_finished()));
        ctx.schedule.retain(finished, super::WRITE_ECHO_WINDOW);
        ctx.coalescer.sweep(Duration::from_secs(2 * 3600), alive);
        ctx.secrets.retain(|namespace, name| all.iter().any(|ij| secrets::reads(ij, namespace, name)));
    }
}

/// Every second: how many ImageJobs this process never reconciled although
/// they were created at least 2 s ago (with free slots a reconcile starts
/// within milliseconds). Polls step back while there are any
/// (`plan::before_poll`); only the last 10 minutes' count, so that an
/// ImageJob the queue somehow lost cannot slow the others for longer.
async fn count_newcomers<S: crate::ims::JobSource>(reader: Store<ImageJob>, ctx: Arc<Ctx<S>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = jiff::Timestamp::now();
        let created = (now - jiff::SignedDuration::from_mins(10))..=(now - jiff::SignedDuration::from_secs(2));
        let waiting = reader
            .state()
            .iter()
            .filter(|ij| {
                is_newcomer(ij, &created) && !ctx.schedule.knows(&super::key_of(ij), ij.metadata.uid.as_deref())
            })
            .count();
        ctx.schedule.set_newcomers(waiting);
    }
}

fn is_newcomer(ij: &ImageJob, created: &std::ops::RangeInclusive<jiff::Timestamp>) -> bool {
    super::plan::awaits_first_status(ij)
        && ij.spec.suspend != Some(true)
        && ij.metadata.creation_timestamp.as_ref().is_some_and(|t| created.contains(&t.0))
}

/// While reconciles wait out a backoff because the API server was away,
/// asks its `/readyz` every second; once it is ready again after failing,
/// retries them at once. An outage of a minute would otherwise cost up to a
/// minute more of backoff after the API server is back.
async fn retry_when_the_api_server_returns<S: crate::ims::JobSource>(client: Client, ctx: Arc<Ctx<S>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut seen_away = false;
    loop {
        tick.tick().await;
        if !ctx.schedule.any_awaiting_api() {
            seen_away = false;
            continue;
        }
        // Only after an outage seen here: a write failing with a 5xx while
        // the API server answers (a broken webhook) keeps its backoff.
        match api_server_ready(&client).await {
            false => seen_away = true,
            true if seen_away => {
                seen_away = false;
                let waiting = ctx.schedule.take_awaiting_api();
                info!(imagejobs = waiting.len(), "the API server is back; retrying now");
                ctx.wake_all(waiting);
            }
            true => {}
        }
    }
}

/// `/readyz`, not `/version`: a restarted API server answers the version
/// seconds before it serves writes (503 meanwhile).
async fn api_server_ready(client: &Client) -> bool {
    let request = ::http::Request::get("/readyz").body(Vec::new()).expect("a static request");
    client.request_text(request).await.is_ok()
}

fn count_phases(imagejobs: &[Arc<ImageJob>], metrics: &Metrics) {
    let mut counts = [0i64; 4];
    for ij in imagejobs {
        let phase = ij.status.as_ref().and_then(|s| s.phase).unwrap_or_default();
        counts[phase as usize] += 1;
    }
    for (phase, count) in Phase::ALL.into_iter().zip(counts) {
        metrics.imagejobs.get_or_create(&PhaseLabels { phase }).set(count);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn watch_backoff_stays_under_four_seconds() {
        let delays: Vec<_> = super::watch_backoff().take(20).collect();
        // 0.8 s doubling to 2 s, plus up to as much again of jitter.
        assert!(delays[0].as_secs_f64() < 1.7, "{delays:?}");
        assert!(delays.iter().all(|d| d.as_secs_f64() <= 4.0), "{delays:?}");
    }
}
