//! Credentials read from the Secret an ImageJob names, in the ImageJob's own
//! namespace. Parsed credentials are cached per Secret and resourceVersion;
//! a metadata-only watch of Secrets invalidates the cache and wakes the
//! ImageJobs that use a Secret when it is created, changed or deleted.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

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
}

pub struct SecretCache {
    client: Client,
    entries: Mutex<HashMap<SecretKey, Entry>>,
    users: Mutex<HashMap<SecretKey, HashSet<ObjectRef<ImageJob>>>>,
}

impl SecretCache {
    pub fn new(client: Client) -> Self {
        Self { client, entries: Mutex::default(), users: Mutex::default() }
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
            Ok(None) => return Err(SecretError::NotFound { namespace: key.0, name: key.1 }),
            Err(source) => return Err(SecretError::Kube { namespace: key.0, name: key.1, source }),
        };
        let data = secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
        let (credentials, project_id) = Credentials::from_secret_data(&data).map_err(|e| SecretError::Invalid {
            namespace: key.0.clone(),
            name: key.1.clone(),
            reason: e.to_string(),
        })?;
        let loaded = Arc::new(Loaded { credentials, project_id });
        let rv = secret.metadata.resource_version.unwrap_or_default();
        let mut entries = self.entries.lock().unwrap();
        let entry = entries.entry(key).or_default();
        entry.watched_rv.get_or_insert_with(|| rv.clone());
        entry.loaded = Some((rv, loaded.clone()));
        Ok(loaded)
    }

    fn cached(&self, key: &SecretKey) -> Option<Arc<Loaded>> {
        let entries = self.entries.lock().unwrap();
        let entry = entries.get(key)?;
        let (rv, loaded) = entry.loaded.as_ref()?;
        (entry.watched_rv.as_ref() == Some(rv)).then(|| loaded.clone())
    }

    /// Remembers that an ImageJob reads this Secret, so a change wakes it.
    pub fn register_user(&self, namespace: &str, name: &str, user: ObjectRef<ImageJob>) {
        let key = (namespace.to_owned(), name.to_owned());
        self.users.lock().unwrap().entry(key).or_default().insert(user);
    }

    pub fn unregister_user(&self, namespace: &str, name: &str, user: &ObjectRef<ImageJob>) {
        let key = (namespace.to_owned(), name.to_owned());
        let mut users = self.users.lock().unwrap();
        if let Some(set) = users.get_mut(&key) {
            set.remove(user);
            if set.is_empty() {
                users.remove(&key);
            }
        }
    }

    /// Applies one event of the metadata watch; returns the ImageJobs to wake.
    pub fn observe(&self, event: &watcher::Event<PartialObjectMeta<Secret>>) -> Vec<ObjectRef<ImageJob>> {
        match event {
            watcher::Event::Apply(meta) | watcher::Event::InitApply(meta) => self.changed(meta, false),
            watcher::Event::Delete(meta) => self.changed(meta, true),
            watcher::Event::Init | watcher::Event::InitDone => Vec::new(),
        }
    }

    fn changed(&self, meta: &PartialObjectMeta<Secret>, deleted: bool) -> Vec<ObjectRef<ImageJob>> {
        let key = (meta.namespace().unwrap_or_default(), meta.name_any());
        let rv = meta.resource_version();
        {
            let mut entries = self.entries.lock().unwrap();
            let entry = entries.entry(key.clone()).or_default();
            if !deleted && entry.watched_rv == rv {
                return Vec::new();
            }
            entry.watched_rv = if deleted { None } else { rv };
            if deleted {
                entry.loaded = None;
            }
        }
        self.users.lock().unwrap().get(&key).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }
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
    }

    #[tokio::test]
    async fn cache_hits_until_the_watch_shows_a_change() {
        let c = cache();
        let key = ("ns".to_string(), "creds".to_string());
        insert(&c, "ns", "creds", "5");
        assert!(c.cached(&key).is_some());
        c.observe(&watcher::Event::Apply(meta("ns", "creds", "5")));
        assert!(c.cached(&key).is_some(), "same resourceVersion keeps the entry");
        c.observe(&watcher::Event::Apply(meta("ns", "creds", "6")));
        assert!(c.cached(&key).is_none(), "a new resourceVersion invalidates");
        insert(&c, "ns", "creds", "6");
        assert!(c.cached(&key).is_some());
        c.observe(&watcher::Event::Delete(meta("ns", "creds", "6")));
        assert!(c.cached(&key).is_none(), "deletion invalidates");
    }

    #[tokio::test]
    async fn a_change_wakes_only_the_users_in_that_namespace() {
        let c = cache();
        let a = ObjectRef::<ImageJob>::new("a").within("team-a");
        let b = ObjectRef::<ImageJob>::new("b").within("team-b");
        c.register_user("team-a", "creds", a.clone());
        c.register_user("team-b", "creds", b.clone());
        assert_eq!(c.observe(&watcher::Event::Apply(meta("team-a", "creds", "1"))), vec![a.clone()]);
        assert!(c.observe(&watcher::Event::Apply(meta("team-a", "creds", "1"))).is_empty(), "no change");
        c.unregister_user("team-b", "creds", &b);
        assert!(c.observe(&watcher::Event::Apply(meta("team-b", "creds", "2"))).is_empty());
    }
}
