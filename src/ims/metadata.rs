//! The node's temporary keys, from the metadata service
//! (`GET {endpoint}/openstack/latest/securitykey`): an AK/SK with a
//! security token of the node's agency, valid about an hour. One fetch
//! serves every ImageJob until the keys are near their end; the service
//! issues new keys before the old ones expire, so the two overlap.

use std::time::Duration;

use jiff::Timestamp;
use serde::Deserialize;
use tokio::sync::Mutex as AsyncMutex;

use super::credentials::Secret;
use super::error::{ImsError, Service};
use super::transport::{send, url_with_path};

/// The metadata service's address on every ECS node (link-local, plain http).
pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
/// Refresh this long before expiry at most (less for short-lived keys).
const MAX_MARGIN: Duration = Duration::from_secs(60);

/// One set of temporary keys.
#[derive(Clone)]
pub struct TempKeys {
    pub access_key: String,
    pub secret_key: Secret,
    pub security_token: Secret,
    pub expires_at: Timestamp,
    /// When this process first got them.
    pub fetched_at: Timestamp,
}

/// The keys of one metadata endpoint, shared by all callers.
pub struct MetadataKeys {
    endpoint: String,
    current: AsyncMutex<Option<TempKeys>>,
}

impl std::fmt::Debug for MetadataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MetadataKeys({})", self.endpoint)
    }
}

/// Pure: keys are renewed when less than min(60 s, half their lifetime)
/// remains, so short-lived keys are not fetched on every use.
pub fn due(fetched_at: Timestamp, expires_at: Timestamp, now: Timestamp) -> bool {
    let lifetime = Duration::try_from(expires_at.duration_since(fetched_at)).unwrap_or_default();
    let margin = MAX_MARGIN.min(lifetime / 2);
    let left = Duration::try_from(expires_at.duration_since(now)).unwrap_or_default();
    left <= margin
}

impl MetadataKeys {
    pub fn new(endpoint: &str) -> Self {
        Self { endpoint: endpoint.trim_end_matches('/').to_owned(), current: AsyncMutex::new(None) }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Valid keys: the cached ones, or new ones when they are due (one
    /// fetch at a time; the others wait for it).
    pub async fn keys(&self, http: &reqwest::Client) -> Result<TempKeys, ImsError> {
        let mut current = self.current.lock().await;
        if let Some(keys) = current.as_ref()
            && !due(keys.fetched_at, keys.expires_at, Timestamp::now())
        {
            return Ok(keys.clone());
        }
        let keys = self.fetch(http).await?;
        *current = Some(keys.clone());
        Ok(keys)
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<TempKeys, ImsError> {
        let url = url_with_path(&self.endpoint, &["openstack", "latest", "securitykey"])?;
        let answer = send(Service::Metadata, "GET", &url, http.get(url.clone())).await?;
        if !(200..300).contains(&answer.status) {
            return Err(ImsError::from_response(Service::Metadata, answer.status, &answer.headers, &answer.body));
        }
        parse(&answer.body, Timestamp::now()).map_err(|detail| ImsError::InvalidBody {
            service: Service::Metadata,
            detail,
            request_id: None,
        })
    }
}

#[derive(Deserialize)]
struct Answer {
    credential: Credential,
}

#[derive(Deserialize)]
struct Credential {
    access: String,
    secret: String,
    securitytoken: String,
    expires_at: String,
}

/// Pure: the keys in a `securitykey` answer (never echoed in the error).
pub fn parse(body: &[u8], now: Timestamp) -> Result<TempKeys, String> {
    let answer: Answer = serde_json::from_slice(body).map_err(|_| "not a securitykey answer".to_owned())?;
    let c = answer.credential;
    if c.access.trim().is_empty() || c.secret.trim().is_empty() || c.securitytoken.trim().is_empty() {
        return Err("empty access, secret or securitytoken".into());
    }
    let expires_at = c.expires_at.parse::<Timestamp>().map_err(|_| format!("bad expires_at {:?}", c.expires_at))?;
    Ok(TempKeys {
        access_key: c.access.trim().to_owned(),
        secret_key: Secret::new(c.secret.trim()),
        security_token: Secret::new(c.securitytoken.trim()),
        expires_at,
        fetched_at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ims::testing::{FakeCloud, FakeReply};

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn renewal_is_due_at_min_of_a_minute_and_half_the_lifetime() {
        let fetched = at("2026-12-06T09:00:00Z");
        let cases = [
            // (expires, now, due)
            ("2026-12-06T10:00:00Z", "2026-12-06T09:58:59Z", false),
            ("2026-12-06T10:00:00Z", "2026-12-06T09:59:00Z", true),
            ("2026-12-06T09:00:12Z", "2026-12-06T09:00:05Z", false),
            ("2026-12-06T09:00:12Z", "2026-12-06T09:00:06Z", true),
            ("2026-12-06T09:00:12Z", "2026-12-06T09:00:30Z", true),
            ("2026-12-06T08:00:00Z", "2026-12-06T09:00:00Z", true),
        ];
        for (expires, now, want) in cases {
            assert_eq!(due(fetched, at(expires), at(now)), want, "{expires} {now}");
        }
    }

    #[test]
    fn parse_reads_the_documented_shape_and_never_echoes_secrets() {
        let body = br#"{"credential":{"access":"AK","secret":"SK","securitytoken":"T","expires_at":"2026-12-06T10:00:00.000000Z"}}"#;
        let keys = parse(body, at("2026-12-06T09:00:00Z")).unwrap();
        assert_eq!(
            (keys.access_key.as_str(), keys.secret_key.expose(), keys.security_token.expose()),
            ("AK", "SK", "T")
        );
        let err = parse(
            br#"{"credential":{"access":"AK","secret":"hunter2","securitytoken":"","expires_at":"x"}}"#,
            at("2026-12-06T09:00:00Z"),
        )
        .err()
        .unwrap();
        assert!(!err.contains("hunter2"), "{err}");
    }

    fn answer(n: usize, lifetime_s: i64) -> FakeReply {
        let expires = Timestamp::now() + jiff::SignedDuration::from_secs(lifetime_s);
        let body = serde_json::json!({"credential": {"access": format!("AK{n}"), "secret": "SK",
            "securitytoken": format!("T{n}"), "expires_at": expires.to_string()}});
        FakeReply::json(200, &body.to_string())
    }

    #[tokio::test]
    async fn keys_are_fetched_once_until_due() {
        let cloud = FakeCloud::start().await;
        cloud.set_metadata_handler(|n| answer(n, 3600));
        let keys = MetadataKeys::new(&cloud.url());
        let http = reqwest::Client::new();
        for _ in 0..5 {
            assert_eq!(keys.keys(&http).await.unwrap().access_key, "AK1");
        }
        assert_eq!(cloud.metadata_calls(), 1);
        // Keys already expired are due at once: each use fetches anew.
        cloud.set_metadata_handler(|n| answer(n, 0));
        *keys.current.lock().await = None;
        keys.keys(&http).await.unwrap();
        assert_eq!(keys.keys(&http).await.unwrap().access_key, "AK3");
    }

    #[tokio::test]
    async fn a_refusal_is_an_authentication_failure_and_an_outage_transient() {
        let cloud = FakeCloud::start().await;
        let keys = MetadataKeys::new(&cloud.url());
        let http = reqwest::Client::new();
        cloud.set_metadata_handler(|_| FakeReply::json(404, r#"{"error_msg":"no agency"}"#));
        let err = keys.keys(&http).await.err().unwrap();
        assert_eq!(err.kind(), crate::ims::ErrorKind::AuthenticationFailed, "{err}");
        cloud.set_metadata_handler(|_| FakeReply::json(503, "{}"));
        assert!(keys.keys(&http).await.err().unwrap().is_transient());
    }
}
