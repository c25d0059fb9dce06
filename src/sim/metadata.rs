//! The node metadata service's temporary keys (`GET
//! /openstack/latest/securitykey`): short-lived AK/SK pairs with a
//! security token. A new pair is issued when less than half the lifetime
//! of the newest remains, so old and new overlap; every pair stays valid
//! until its own `expires_at`.

use std::sync::Mutex;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::{Value, json};

use super::iam::iam_time;
use super::scenario::Dur;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    /// false: the metadata paths answer 404, as off a cloud node.
    pub served: bool,
    /// Validity of each key pair (at least 2s).
    pub key_lifetime: Dur,
    /// Project ids or names the keys may sign for; empty = every project.
    pub projects: Vec<String>,
    /// Who signs with these keys, for agencies' `trusted`.
    pub user: String,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        Self { served: true, key_lifetime: Dur::secs(3600), projects: vec![], user: "node-agency".into() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemporaryKey {
    pub access: String,
    pub secret: String,
    pub security_token: String,
    pub expires_at: Timestamp,
}

impl TemporaryKey {
    fn new(now: Timestamp, lifetime: Duration) -> Self {
        let hex = |n: u128| format!("{n:032x}");
        Self {
            access: format!("SIMTMP{}", &hex(rand::random::<u128>()).to_uppercase()[..20]),
            secret: hex(rand::random()) + &hex(rand::random())[..8],
            security_token: format!("gQpjbi1ub3J0aC00{}{}", hex(rand::random()), hex(rand::random())),
            expires_at: now + SignedDuration::try_from(lifetime).unwrap_or(SignedDuration::MAX),
        }
    }

    /// The metadata service's answer.
    pub fn to_json(&self) -> Value {
        json!({"credential": {
            "access": self.access,
            "secret": self.secret,
            "securitytoken": self.security_token,
            "expires_at": iam_time(self.expires_at),
        }})
    }
}

/// Whether the newest key has less than half its lifetime left (or there
/// is none).
pub fn needs_new_key(newest: Option<&TemporaryKey>, now: Timestamp, lifetime: Duration) -> bool {
    newest.is_none_or(|k| k.expires_at.duration_since(now).unsigned_abs() < lifetime / 2 || k.expires_at <= now)
}

/// Every key pair handed out, newest last. Expired pairs are kept so a
/// late request gets "expired", not "unknown key".
#[derive(Default)]
pub struct KeyRing {
    keys: Mutex<Vec<TemporaryKey>>,
}

impl KeyRing {
    /// The newest pair, issued afresh when due; true when it is new.
    pub fn current(&self, now: Timestamp, lifetime: Duration) -> (TemporaryKey, bool) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = needs_new_key(keys.last(), now, lifetime);
        if fresh {
            keys.push(TemporaryKey::new(now, lifetime));
        }
        (keys.last().cloned().expect("a key was just ensured"), fresh)
    }

    pub fn find(&self, access: &str) -> Option<TemporaryKey> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|k| k.access == access).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_rotate_at_half_life_and_overlap() {
        let ring = KeyRing::default();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let life = Duration::from_secs(12);
        let at = |s: i64| t0 + SignedDuration::from_secs(s);
        let (first, new) = ring.current(t0, life);
        assert!(new);
        assert_eq!(first.expires_at, at(12));
        assert_eq!(ring.current(at(5), life), (first.clone(), false), "more than half left: same key");
        let (second, new) = ring.current(at(7), life);
        assert!(new && second.access != first.access && second.security_token != first.security_token);
        assert_eq!(second.expires_at, at(19));
        // The old pair is still known (valid until its own expiry).
        assert_eq!(ring.find(&first.access), Some(first));
        assert!(ring.find("NOPE").is_none());
        // Long after everything expired: a new pair at once.
        let (third, new) = ring.current(at(100), life);
        assert!(new && third.expires_at == at(112));
    }

    #[test]
    fn answer_shape() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let key = TemporaryKey::new(t0, Duration::from_secs(3600));
        let body = key.to_json();
        assert_eq!(body["credential"]["expires_at"], "2026-01-01T01:00:00.000000Z");
        assert_eq!(body["credential"]["access"], key.access.as_str());
        assert_eq!(body["credential"]["securitytoken"], key.security_token.as_str());
        assert!(key.secret.len() >= 40);
    }
}
