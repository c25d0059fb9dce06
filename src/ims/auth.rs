//! IAM password authentication: a project-scoped token, cached and shared.
//!
//! One token per (IAM endpoint, domain, user, project, credential
//! fingerprint) is reused until shortly before it expires. Concurrent
//! callers for one key wait for a single IAM request (single flight), and
//! share its failure too, so an IAM outage costs one request, not one per
//! ImageJob.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Mutex as AsyncMutex;

use super::credentials::{CacheKey, Credentials, Secret};
use super::error::{ImsError, Service};
use super::iam;

/// Refresh this long before expiry at most (less for short-lived tokens).
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Used when IAM's body does not say when the token expires (tokens live
/// 24 h; a 401 would also trigger a refresh).
const FALLBACK_LIFETIME: Duration = Duration::from_secs(3600);

/// What a cached token belongs to: an identity (by fingerprint: a
/// password, an ID token's subject and provider, an agency on top of a base
/// identity), an IAM endpoint and a project. Holds no secret: a rotated
/// password gets a new token. An empty project asks for a token of the
/// identity itself (the base token an agency is assumed with).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub iam_endpoint: String,
    pub project_id: String,
    credentials: CacheKey,
}

impl TokenKey {
    /// None for keys (AK/SK, metadata), which sign instead of using a token.
    pub fn new(iam_endpoint: &str, project_id: &str, creds: &Credentials) -> Option<Self> {
        creds.uses_token().then(|| TokenKey {
            iam_endpoint: iam_endpoint.trim_end_matches('/').to_owned(),
            project_id: project_id.to_owned(),
            credentials: creds.cache_key(),
        })
    }
}

pub(crate) struct CachedToken {
    value: Secret,
    refresh_at: Instant,
}

#[derive(Default)]
struct TokenSlot {
    token: Option<CachedToken>,
    /// The last failed fetch, returned to callers that were already
    /// waiting when it happened.
    failure: Option<(ImsError, Instant)>,
}

/// The token cache shared by all callers of one [`super::ImsClient`].
#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<TokenKey, Arc<AsyncMutex<TokenSlot>>>>,
}

impl TokenCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// A valid token for `key` (made from `creds`), from the cache or from IAM.
    pub async fn token(&self, http: &reqwest::Client, key: &TokenKey, creds: &Credentials) -> Result<Secret, ImsError> {
        let waiting_since = Instant::now();
        let slot = self.slot(key);
        let mut slot = slot.lock().await;
        if let Some(token) = &slot.token
            && Instant::now() < token.refresh_at
        {
            return Ok(token.value.clone());
        }
        if let Some((err, at)) = &slot.failure
            && *at >= waiting_since
        {
            return Err(err.clone());
        }
        match Box::pin(self.fetch(http, key, creds)).await {
            Ok(token) => {
                let value = token.value.clone();
                *slot = TokenSlot { token: Some(token), failure: None };
                Ok(value)
            }
            Err(err) => {
                *slot = TokenSlot { token: None, failure: Some((err.clone(), Instant::now())) };
                Err(err)
            }
        }
    }

    /// Drops the cached token only if it is still `stale`: when another
    /// caller already refreshed it, its fresh token is kept.
    pub async fn invalidate_if(&self, key: &TokenKey, stale: &Secret) {
        let slot = self.slots.lock().expect("token map lock").get(key).cloned();
        if let Some(slot) = slot {
            let mut slot = slot.lock().await;
            if slot.token.as_ref().is_some_and(|t| t.value.expose() == stale.expose()) {
                slot.token = None;
            }
        }
    }

    /// Number of keys held, for tests and metrics.
    pub fn len(&self) -> usize {
        self.slots.lock().expect("token map lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&self, key: &TokenKey) -> Arc<AsyncMutex<TokenSlot>> {
        let mut slots = self.slots.lock().expect("token map lock");
        if let Some(slot) = slots.get(key) {
            return slot.clone();
        }
        // Forget keys nobody uses whose token is stale (e.g. after a
        // password rotation), so the map does not grow forever.
        let now = Instant::now();
        slots.retain(|_, slot| {
            Arc::strong_count(slot) > 1
                || slot.try_lock().map_or(true, |s| s.token.as_ref().is_some_and(|t| now < t.refresh_at))
        });
        slots.entry(key.clone()).or_default().clone()
    }
}

impl TokenCache {
    /// One IAM request for a token of `creds`; an agency first gets its
    /// base identity's own token (from this cache) or signs with its keys.
    async fn fetch(
        &self,
        http: &reqwest::Client,
        key: &TokenKey,
        creds: &Credentials,
    ) -> Result<CachedToken, ImsError> {
        let fetched_at = Instant::now();
        let (iam, project) = (&key.iam_endpoint, &key.project_id);
        let answer = match creds {
            Credentials::Password { username, password, domain_name } => {
                iam::password_token(http, iam, project, username, domain_name, password).await?
            }
            Credentials::IdToken(id) => {
                let jwt = id.source.fetch().await?;
                iam::exchange_id_token(http, iam, project, &id.idp_id, &jwt).await?
            }
            Credentials::Agency { base, agency } => {
                let auth = self.base_auth(http, iam, base).await?;
                iam::assume_role(http, iam, project, agency, &auth).await?
            }
            Credentials::AkSk { .. } | Credentials::Metadata(_) => {
                return Err(ImsError::InvalidRequest { detail: "access keys need no token".into() });
            }
        };
        token_from(answer, fetched_at)
    }

    /// How an agency's base identity proves itself to IAM.
    async fn base_auth(&self, http: &reqwest::Client, iam: &str, base: &Credentials) -> Result<iam::Auth, ImsError> {
        match base {
            Credentials::AkSk { access_key, secret_key, security_token } => Ok(iam::Auth::Keys {
                access_key: access_key.clone(),
                secret_key: secret_key.clone(),
                security_token: security_token.clone(),
            }),
            Credentials::Metadata(keys) => {
                let k = keys.keys(http).await?;
                Ok(iam::Auth::Keys {
                    access_key: k.access_key,
                    secret_key: k.secret_key,
                    security_token: Some(k.security_token),
                })
            }
            _ => {
                let key = TokenKey::new(iam, "", base).expect("a token identity");
                Ok(iam::Auth::Token(self.token(http, &key, base).await?))
            }
        }
    }
}

/// The token in an IAM answer: `X-Subject-Token`, refreshed at most 5
/// minutes (a tenth of its lifetime for short ones) before it expires.
fn token_from(answer: super::transport::HttpResponse, fetched_at: Instant) -> Result<CachedToken, ImsError> {
    if !(200..300).contains(&answer.status) {
        return Err(ImsError::from_response(Service::Iam, answer.status, &answer.headers, &answer.body));
    }
    let value = answer
        .headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .map(|v| Secret::new(v.trim()))
        .ok_or_else(|| ImsError::InvalidBody {
            service: Service::Iam,
            detail: "no X-Subject-Token header".into(),
            request_id: answer.request_id(),
        })?;
    let lifetime = lifetime(&answer.body).unwrap_or(FALLBACK_LIFETIME);
    Ok(CachedToken { value, refresh_at: fetched_at + lifetime.saturating_sub(refresh_margin(lifetime)) })
}

/// Pure: how long before expiry a token of `lifetime` is renewed.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    MAX_REFRESH_MARGIN.min(lifetime / 10)
}

/// `expires_at - issued_at` from the body, both by IAM's clock, so a skewed
/// local clock does not matter; `expires_at - now` without `issued_at`.
fn lifetime(body: &[u8]) -> Option<Duration> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let time = |field: &str| value["token"][field].as_str()?.parse::<jiff::Timestamp>().ok();
    let expires = time("expires_at")?;
    let issued = time("issued_at").unwrap_or_else(jiff::Timestamp::now);
    let secs = expires.as_millisecond().saturating_sub(issued.as_millisecond());
    Some(Duration::from_millis(secs.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ims::ErrorKind;
    use crate::ims::testing::{FakeCloud, FakeReply};

    fn password_creds(pw: &str) -> Credentials {
        Credentials::Password { username: "bob".into(), password: pw.into(), domain_name: "dom".into() }
    }

    fn key(cloud: &FakeCloud, pw: &str) -> TokenKey {
        TokenKey::new(&cloud.url(), "proj", &password_creds(pw)).unwrap()
    }

    #[test]
    fn lifetime_uses_iam_clock() {
        let body =
            br#"{"token":{"issued_at":"2015-11-08T01:42:57.527363Z","expires_at":"2015-11-09T01:42:57.527363Z"}}"#;
        assert_eq!(lifetime(body), Some(Duration::from_secs(86400)));
        assert_eq!(lifetime(b"{}"), None);
        assert_eq!(
            lifetime(br#"{"token":{"issued_at":"2015-11-09T01:42:57Z","expires_at":"2015-11-08T01:42:57Z"}}"#),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn aksk_has_no_token_key() {
        let creds = Credentials::AkSk { access_key: "a".into(), secret_key: "s".into(), security_token: None };
        assert_eq!(TokenKey::new("http://x", "p", &creds), None);
    }

    #[tokio::test]
    async fn token_is_reused_until_expiry() {
        let cloud = FakeCloud::start().await;
        let (cache, http) = (TokenCache::new(), reqwest::Client::new());
        let k = key(&cloud, "pw");
        let first = cache.token(&http, &k, &password_creds("pw")).await.unwrap();
        let second = cache.token(&http, &k, &password_creds("pw")).await.unwrap();
        assert_eq!(first.expose(), second.expose());
        assert_eq!(cloud.iam_calls(), 1);
        let body = cloud.last_iam_body();
        assert_eq!(body["auth"]["identity"]["password"]["user"]["name"], "bob");
        assert_eq!(body["auth"]["identity"]["password"]["user"]["domain"]["name"], "dom");
        assert_eq!(body["auth"]["scope"]["project"]["id"], "proj");
    }

    #[tokio::test]
    async fn expired_token_is_fetched_again() {
        let cloud = FakeCloud::start().await;
        cloud.set_token_lifetime(Duration::ZERO);
        let (cache, http) = (TokenCache::new(), reqwest::Client::new());
        let k = key(&cloud, "pw");
        let first = cache.token(&http, &k, &password_creds("pw")).await.unwrap();
        let second = cache.token(&http, &k, &password_creds("pw")).await.unwrap();
        assert_ne!(first.expose(), second.expose());
        assert_eq!(cloud.iam_calls(), 2);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_request() {
        let cloud = FakeCloud::start().await;
        cloud.set_iam_delay(Duration::from_millis(100));
        let cache = Arc::new(TokenCache::new());
        let http = reqwest::Client::new();
        let k = key(&cloud, "pw");
        let calls = (0..10).map(|_| {
            let (cache, http, k) = (cache.clone(), http.clone(), k.clone());
            tokio::spawn(
                async move { cache.token(&http, &k, &password_creds("pw")).await.map(|t| t.expose().to_owned()) },
            )
        });
        let tokens: Vec<String> =
            futures::future::join_all(calls).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
        assert!(tokens.iter().all(|t| t == &tokens[0]));
        assert_eq!(cloud.iam_calls(), 1);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_failure() {
        let cloud = FakeCloud::start().await;
        cloud.set_iam_delay(Duration::from_millis(100));
        cloud.set_iam_reply(FakeReply::json(
            401,
            r#"{"error":{"code":401,"message":"The username or password is wrong.","title":"Unauthorized"}}"#,
        ));
        let cache = Arc::new(TokenCache::new());
        let http = reqwest::Client::new();
        let k = key(&cloud, "wrong");
        let calls = (0..5).map(|_| {
            let (cache, http, k) = (cache.clone(), http.clone(), k.clone());
            tokio::spawn(async move { cache.token(&http, &k, &password_creds("wrong")).await })
        });
        for result in futures::future::join_all(calls).await {
            let err = result.unwrap().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::AuthenticationFailed);
            assert!(!err.to_string().contains("wrong\""), "{err}");
        }
        assert_eq!(cloud.iam_calls(), 1);
        // A later caller tries again.
        assert!(cache.token(&http, &k, &password_creds("wrong")).await.is_err());
        assert_eq!(cloud.iam_calls(), 2);
    }

    #[tokio::test]
    async fn invalidate_forces_a_new_token_but_keeps_a_fresher_one() {
        let cloud = FakeCloud::start().await;
        let (cache, http) = (TokenCache::new(), reqwest::Client::new());
        let k = key(&cloud, "pw");
        let first = cache.token(&http, &k, &password_creds("pw")).await.unwrap();
        cache.invalidate_if(&k, &first).await;
        let second = cache.token(&http, &k, &password_creds("pw")).await.unwrap();
        assert_eq!(cloud.iam_calls(), 2);
        cache.invalidate_if(&k, &first).await;
        let third = cache.token(&http, &k, &password_creds("pw")).await.unwrap();
        assert_eq!(second.expose(), third.expose());
        assert_eq!(cloud.iam_calls(), 2);
    }

    #[tokio::test]
    async fn rotated_password_gets_its_own_token_and_stale_keys_are_dropped() {
        let cloud = FakeCloud::start().await;
        cloud.set_token_lifetime(Duration::ZERO);
        let (cache, http) = (TokenCache::new(), reqwest::Client::new());
        cache.token(&http, &key(&cloud, "old"), &password_creds("old")).await.unwrap();
        cache.token(&http, &key(&cloud, "new"), &password_creds("new")).await.unwrap();
        assert_eq!(cloud.iam_calls(), 2);
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn missing_subject_token_is_transient() {
        let cloud = FakeCloud::start().await;
        cloud.set_iam_reply(FakeReply::json(201, r#"{"token":{}}"#));
        let (cache, http) = (TokenCache::new(), reqwest::Client::new());
        let err = cache.token(&http, &key(&cloud, "pw"), &password_creds("pw")).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
    }
}
