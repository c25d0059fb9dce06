//! Credentials read from the Secret an ImageJob names, in the ImageJob's own
//! namespace. Parsed credentials are cached per Secret and resourceVersion;
//! a metadata-only watch of Secrets invalidates the cache and wakes the
//! ImageJobs that use a Secret when it is created, changed or deleted.
//!
//! Which ImageJobs use a Secret is asked of the ImageJob cache when a
//! Secret changes, not kept here: a map per ImageJob would cost memory at
//! every ImageJob and grow with every one ever deleted. Only Secrets that
//! ImageJobs use get an entry; the watch sees every Secret in scope.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::crd::ImageJob;
use crate::ims::credentials::Credentials;

/// Credentials plus the Secret's optional `projectId`.
#[derive(Debug)]
pub struct Loaded {
    pub credentials: Credentials,
    pub project_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("Secret {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("Secret {namespace}/{name} is not usable: {reason}")]
    Invalid { namespace: String, name: String, reason: String },
    #[error(
        "Secret {namespace}/{name} is not labelled {CREDENTIALS_LABEL}: \"true\"; the operator only uses Secrets that opt in (add the label)"
    )]
    NotLabeled { namespace: String, name: String },
    #[error(
        "the operator may not read Secret {namespace}/{name} (403): grant its ServiceAccount `get` on Secrets in {namespace} with a RoleBinding to the chart's Secret-reader ClusterRole (README, \"Secrets per namespace\")"
    )]
    Forbidden { namespace: String, name: String },
    #[error("reading Secret {namespace}/{name}: {source}")]
    Kube { namespace: String, name: String, source: kube::Error },
}

type SecretKey = (String, String);

#[derive(Default)]
struct Entry {
    /// The newest resourceVersion the watch has shown, if any.
    watched_rv: Option<String>,
    /// What a GET returned, with that object's resourceVersion.
    loaded: Option<(String, Arc<Loaded>)>,
    /// When that GET was (unwatched caches expire by it).
    loaded_at: Option<Instant>,
}

/// How long an unwatched cache trusts a read: a rotated Secret is used
/// within a minute, at one GET per Secret per minute.
pub const UNWATCHED_REREAD: Duration = Duration::from_secs(60);

/// The label by which a Secret opts in to being read by the operator
/// (`--require-credentials-label`): an ImageJob cannot make the operator
/// read, and act with, a Secret that was never meant for it.
pub const CREDENTIALS_LABEL: &str = "ims.otc.io/credentials";

pub struct SecretCache {
    client: Client,
    entries: Mutex<HashMap<SecretKey, Entry>>,
    require_label: bool,
    /// No watch reports changes (`--read-secrets=namespaced`).
    unwatched: bool,
}

/// How a Secret event came: a live change, or one of the (re)list that
/// shows every Secret in scope.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Changed,
    Listed,
    Deleted,
}

impl SecretCache {
    pub fn new(client: Client) -> Self {
        Self { client, entries: Mutex::default(), require_label: false, unwatched: false }
    }

    /// No Secret watch runs: a read is trusted for `UNWATCHED_REREAD`.
    pub fn unwatched(mut self, unwatched: bool) -> Self {
        self.unwatched = unwatched;
        self
    }

    /// Uses only Secrets labelled `ims.otc.io/credentials: "true"`.
    pub fn requiring_label(mut self, require: bool) -> Self {
        self.require_label = require;
        self
    }

    /// The credentials in `namespace/name`; a GET only when the watch has
    /// shown a change since the last read (or nothing is cached).
    pub async fn load(&self, namespace: &str, name: &str) -> Result<Arc<Loaded>, SecretError> {
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(hit) = self.cached(&key) {
            return Ok(hit);
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = match api.get_opt(name).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                // Keep an entry, so that its creation is noticed even when
                // it comes with a relist.
                self.entries.lock().unwrap().entry(key.clone()).or_default();
                return Err(SecretError::NotFound { namespace: key.0, name: key.1 });
            }
            Err(kube::Error::Api(status)) if status.code == 403 => {
                return Err(SecretError::Forbidden { namespace: key.0, name: key.1 });
            }
            Err(source) => return Err(SecretError::Kube { namespace: key.0, name: key.1, source }),
        };
        let opted_in = secret.labels().get(CREDENTIALS_LABEL).is_some_and(|v| v == "true");
        let rv = secret.metadata.resource_version.clone().unwrap_or_default();
        if self.require_label && !opted_in {
            // Not parsed, not cached: the label's arrival changes the
            // resourceVersion, which the watch reports.
            self.entries.lock().unwrap().entry(key.clone()).or_default().watched_rv.get_or_insert(rv);
            return Err(SecretError::NotLabeled { namespace: key.0, name: key.1 });
        }
        let data = secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
        let parsed = Credentials::from_secret_data(&data);
        let mut entries = self.entries.lock().unwrap();
        let entry = entries.entry(key.clone()).or_default();
        entry.watched_rv.get_or_insert_with(|| rv.clone());
        let (credentials, project_id) =
            parsed.map_err(|e| SecretError::Invalid { namespace: key.0, name: key.1, reason: e.to_string() })?;
        let loaded = Arc::new(Loaded { credentials, project_id });
        entry.loaded = Some((rv, loaded.clone()));
        entry.loaded_at = Some(Instant::now());
        Ok(loaded)
    }

    fn cached(&self, key: &SecretKey) -> Option<Arc<Loaded>> {
        let entries = self.entries.lock().unwrap();
        let entry = entries.get(key)?;
        let (rv, loaded) = entry.loaded.as_ref()?;
        let current = match self.unwatched {
            true => entry.loaded_at.is_some_and(|at| at.elapsed() < UNWATCHED_REREAD),
            false => entry.watched_rv.as_ref() == Some(rv),
        };
        current.then(|| loaded.clone())
    }

    /// Applies one event of the metadata watch; returns the ImageJobs to
    /// wake. `users` names the ImageJobs that read a Secret.
    pub fn observe(
        &self,
        event: &watcher::Event<PartialObjectMeta<Secret>>,
        users: impl Fn(&str, &str) -> Vec<ObjectRef<ImageJob>>,
    ) -> Vec<ObjectRef<ImageJob>> {
        match event {
            watcher::Event::Apply(meta) => self.changed(meta, Seen::Changed, users),
            watcher::Event::InitApply(meta) => self.changed(meta, Seen::Listed, users),
            watcher::Event::Delete(meta) => self.changed(meta, Seen::Deleted, users),
            watcher::Event::Init | watcher::Event::InitDone => Vec::new(),
        }
    }

    fn changed(
        &self,
        meta: &PartialObjectMeta<Secret>,
        seen: Seen,
        users: impl Fn(&str, &str) -> Vec<ObjectRef<ImageJob>>,
    ) -> Vec<ObjectRef<ImageJob>> {
        let key = (meta.namespace().unwrap_or_default(), meta.name_any());
        let rv = if seen == Seen::Deleted { None } else { meta.resource_version() };
        match self.entries.lock().unwrap().get_mut(&key) {
            Some(entry) if entry.watched_rv == rv && seen != Seen::Deleted => return Vec::new(),
            Some(entry) => {
                entry.watched_rv = rv.clone();
                if seen == Seen::Deleted {
                    entry.loaded = None;
                }
            }
            // Not read by any ImageJob so far: a (re)list shows every Secret
            // in scope, and none of them is ours.
            None if seen == Seen::Listed => return Vec::new(),
            None => {}
        }
        let users = users(&key.0, &key.1);
        if !users.is_empty() {
            self.entries.lock().unwrap().entry(key).or_default().watched_rv = rv;
        }
        users
    }

    /// Forgets the Secrets no ImageJob reads any more.
    pub fn retain(&self, in_use: impl Fn(&str, &str) -> bool) {
        self.entries.lock().unwrap().retain(|(namespace, name), _| in_use(namespace, name));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// True when `ij` reads the Secret `namespace/name`.
pub fn reads(ij: &ImageJob, namespace: &str, name: &str) -> bool {
    ij.metadata.namespace.as_deref() == Some(namespace)
        && ij.spec.credentials_ref.as_ref().is_some_and(|r| r.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ns: &str, name: &str, rv: &str) -> PartialObjectMeta<Secret> {
        let mut m = PartialObjectMeta::<Secret>::default();
        m.metadata.namespace = Some(ns.into());
        m.metadata.name = Some(name.into());
        m.metadata.resource_version = Some(rv.into());
        m
    }

    fn cache() -> SecretCache {
        // Never contacted: these tests only exercise the cache bookkeeping.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        SecretCache::new(Client::try_from(config).unwrap())
    }

    fn insert(c: &SecretCache, ns: &str, name: &str, rv: &str) {
        let creds = Credentials::Password {
            username: "u".into(),
            password: crate::ims::credentials::Secret::new("p"),
            domain_name: "d".into(),
        };
        let mut entries = c.entries.lock().unwrap();
        let e = entries.entry((ns.into(), name.into())).or_default();
        e.watched_rv.get_or_insert_with(|| rv.into());
        e.loaded = Some((rv.into(), Arc::new(Loaded { credentials: creds, project_id: None })));
        e.loaded_at = Some(Instant::now());
    }

    fn nobody(_: &str, _: &str) -> Vec<ObjectRef<ImageJob>> {
        Vec::new()
    }

    #[tokio::test]
    async fn cache_hits_until_the_watch_shows_a_change() {
        let c = cache();
        let key = ("ns".to_string(), "creds".to_string());
        insert(&c, "ns", "creds", "5");
        assert!(c.cached(&key).is_some());
        c.observe(&watcher::Event::Apply(meta("ns", "creds", "5")), nobody);
        assert!(c.cached(&key).is_some(), "same resourceVersion keeps the entry");
        c.observe(&watcher::Event::Apply(meta("ns", "creds", "6")), nobody);
        assert!(c.cached(&key).is_none(), "a new resourceVersion invalidates");
        insert(&c, "ns", "creds", "6");
        assert!(c.cached(&key).is_some());
        c.observe(&watcher::Event::Delete(meta("ns", "creds", "6")), nobody);
        assert!(c.cached(&key).is_none(), "deletion invalidates");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unwatched_cache_reads_again_after_a_minute() {
        let c = cache().unwatched(true);
        let key = ("ns".to_string(), "creds".to_string());
        insert(&c, "ns", "creds", "5");
        tokio::time::advance(UNWATCHED_REREAD - Duration::from_secs(1)).await;
        assert!(c.cached(&key).is_some(), "trusted for a minute without a watch");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(c.cached(&key).is_none(), "then read again");
    }

    #[tokio::test]
    async fn a_change_wakes_the_users_the_cache_names() {
        let c = cache();
        let a = ObjectRef::<ImageJob>::new("a").within("team-a");
        let users = |ns: &str, name: &str| {
            if (ns, name) == ("team-a", "creds") { vec![a.clone()] } else { Vec::new() }
        };
        assert_eq!(c.observe(&watcher::Event::Apply(meta("team-a", "creds", "1")), users), vec![a.clone()]);
        assert!(c.observe(&watcher::Event::Apply(meta("team-a", "creds", "1")), users).is_empty(), "no change");
        assert_eq!(c.observe(&watcher::Event::Apply(meta("team-a", "creds", "2")), users), vec![a.clone()]);
        assert!(c.observe(&watcher::Event::Apply(meta("team-b", "creds", "2")), users).is_empty());
        assert_eq!(c.len(), 1, "only Secrets that ImageJobs read get an entry");
    }

    #[tokio::test]
    async fn a_relist_skips_secrets_nobody_reads_but_shows_awaited_ones() {
        let c = cache();
        let a = ObjectRef::<ImageJob>::new("a").within("ns");
        let users = |_: &str, _: &str| vec![a.clone()];
        // Thousands of unrelated Secrets on a relist: no lookup, no entry.
        assert!(c.observe(&watcher::Event::InitApply(meta("ns", "other", "1")), |_, _| panic!("looked up")).is_empty());
        assert!(c.is_empty());
        // An ImageJob found its Secret missing; a relist then shows it.
        c.entries.lock().unwrap().entry(("ns".into(), "creds".into())).or_default();
        assert_eq!(c.observe(&watcher::Event::InitApply(meta("ns", "creds", "7")), users), vec![a.clone()]);
        c.retain(|_, name| name != "creds");
        assert!(c.is_empty(), "Secrets nobody reads any more are forgotten");
    }
}
