//! Verifying `SDK-HMAC-SHA256` signatures the way the API gateway does:
//! the signature itself in both forms the gateway accepts (`Access=` with
//! the secret key as HMAC key, as huaweicloud-sdk-go-v3 signs, and
//! `Credential=AK/scope` with a derived key, as the official OTC Go SDK
//! gophertelekomcloud signs; computed by the operator's own signer), the
//! `X-Sdk-Date` window, temporary keys' security token, and the lock of an
//! access key after repeated signature failures (5 in a row lock it for 5
//! minutes, whichever form they used).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use dashmap::DashMap;
use jiff::Timestamp;

use super::metadata::KeyRing;
use super::scenario::{AccessKey, Scenario};
use crate::ims::signer;

/// The parts of a request that a signature covers.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub scope: ProjectScope<'a>,
}

/// Where a request names its project.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProjectScope<'a> {
    /// The URL path (the status API).
    Path(&'a str),
    /// The credentials (the progress API): the token's scope, or a signed
    /// `X-Project-Id` with AK/SK.
    Credentials,
}

impl<'a> SignedRequest<'a> {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AkskError {
    BadAuthorization,
    UnknownKey,
    Locked,
    MissingDate,
    DateSkew,
    BadSecurityToken,
    /// A temporary key (metadata service) past its `expires_at`.
    KeyExpired,
    BadSignature,
    ProjectNotAllowed,
    MissingProjectId,
    UnsignedProjectId,
}

impl AkskError {
    /// The gateway's message after `Incorrect IAM authentication information: `.
    /// Only the signature failure's wording is documented.
    pub fn detail(self) -> &'static str {
        match self {
            Self::BadAuthorization => "Authorization format incorrect",
            Self::UnknownKey => "ak not found",
            Self::Locked => "the access key is locked after too many signature failures",
            Self::MissingDate => "x-sdk-date not found",
            Self::DateSkew => "the request time differs from the server time by more than 15 minutes",
            Self::BadSecurityToken => "security token invalid",
            Self::KeyExpired => "the temporary access key has expired",
            Self::BadSignature => "verify aksk signature fail",
            Self::ProjectNotAllowed => "the project is not allowed for this access key",
            Self::MissingProjectId => "x-project-id not found",
            Self::UnsignedProjectId => "x-project-id must be a signed header",
        }
    }
}

/// Consecutive signature failures of one access key.
#[derive(Clone, Copy, Debug, Default)]
pub struct FailureTracker {
    consecutive: u32,
    locked_until: Option<Instant>,
}

impl FailureTracker {
    pub fn is_locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }

    /// Counts a failure; the `limit`-th in a row locks the key for `lock_for`.
    pub fn failed(&mut self, now: Instant, limit: u32, lock_for: Duration) {
        self.consecutive += 1;
        if self.consecutive >= limit {
            self.locked_until = Some(now + lock_for);
            self.consecutive = 0;
        }
    }

    pub fn succeeded(&mut self) {
        self.consecutive = 0;
    }
}

pub struct AkskVerifier {
    keys: HashMap<String, AccessKey>,
    /// Project ids each key may use; empty = any.
    allowed_projects: HashMap<String, Vec<String>>,
    failures: DashMap<String, FailureTracker>,
    date_window: Duration,
    lock_after: u32,
    lock_for: Duration,
    /// The metadata service's keys, their project ids and their user.
    pub temporary: KeyRing,
    temporary_projects: Vec<String>,
    temporary_user: String,
}

/// What verification needs of a key, static or temporary.
struct KeyView {
    secret: String,
    security_token: Option<String>,
    user: String,
}

impl AkskVerifier {
    pub fn new(scenario: &Scenario) -> Self {
        let resolve = |p: &String| scenario.resolve_project(p).map_or_else(|| p.clone(), |proj| proj.id.clone());
        Self {
            keys: scenario.access_keys.iter().map(|k| (k.access.clone(), k.clone())).collect(),
            allowed_projects: scenario
                .access_keys
                .iter()
                .map(|k| (k.access.clone(), k.projects.iter().map(resolve).collect()))
                .collect(),
            failures: DashMap::new(),
            date_window: scenario.settings.sdk_date_window.0,
            lock_after: scenario.settings.lock_after_failures.max(1),
            lock_for: scenario.settings.lock_duration.0,
            temporary: KeyRing::default(),
            temporary_projects: scenario.metadata.projects.iter().map(resolve).collect(),
            temporary_user: scenario.metadata.user.clone(),
        }
    }

    /// A scenario key, else a metadata key that has not expired.
    fn key(&self, access: &str, now: Timestamp) -> Result<KeyView, AkskError> {
        if let Some(k) = self.keys.get(access) {
            let user = k.user.clone().unwrap_or_else(|| k.access.clone());
            return Ok(KeyView { secret: k.secret.clone(), security_token: k.security_token.clone(), user });
        }
        let k = self.temporary.find(access).ok_or(AkskError::UnknownKey)?;
        if now >= k.expires_at {
            return Err(AkskError::KeyExpired);
        }
        Ok(KeyView { secret: k.secret, security_token: Some(k.security_token), user: self.temporary_user.clone() })
    }

    /// Who signed a request (the key's user), checked like [`Self::verify`]
    /// but for no project: IAM's own APIs.
    pub fn verify_caller(
        &self,
        req: &SignedRequest<'_>,
        authorization: &str,
        now: Timestamp,
        clock: Instant,
    ) -> Result<String, AkskError> {
        self.verify_signature(req, authorization, now, clock).map(|(_, key)| key.user)
    }

    /// Checks in the gateway's order: header, key, lock, date, token,
    /// signature, then the project, which it returns. Only a wrong
    /// signature counts towards the lock; a locked key is refused even with
    /// a good signature.
    pub fn verify<'a>(
        &self,
        req: &SignedRequest<'a>,
        authorization: &str,
        now: Timestamp,
        clock: Instant,
    ) -> Result<&'a str, AkskError> {
        let (auth, _) = self.verify_signature(req, authorization, now, clock)?;
        let project = request_project(req, &auth)?;
        self.check_project(&auth.access, project)
    }

    fn verify_signature(
        &self,
        req: &SignedRequest<'_>,
        authorization: &str,
        now: Timestamp,
        clock: Instant,
    ) -> Result<(signer::Authorization, KeyView), AkskError> {
        let auth = signer::parse_authorization(authorization).ok_or(AkskError::BadAuthorization)?;
        let access = auth.access.clone();
        let key = self.key(&access, now)?;
        if self.failures.get(&access).is_some_and(|f| f.is_locked(clock)) {
            return Err(AkskError::Locked);
        }
        let date = req.header("x-sdk-date").ok_or(AkskError::MissingDate)?;
        let signed_at = signer::parse_sdk_date(date).ok_or(AkskError::MissingDate)?;
        if now.duration_since(signed_at).unsigned_abs() > self.date_window {
            return Err(AkskError::DateSkew);
        }
        if let Some(expected) = &key.security_token
            && req.header("x-security-token") != Some(expected.as_str())
        {
            return Err(AkskError::BadSecurityToken);
        }
        if !signature_matches(req, &auth, &key.secret, date) {
            self.failures.entry(access).or_default().failed(clock, self.lock_after, self.lock_for);
            return Err(AkskError::BadSignature);
        }
        if let Some(mut f) = self.failures.get_mut(&access) {
            f.succeeded();
        }
        Ok((auth, key))
    }

    fn check_project<'a>(&self, access: &str, project: &'a str) -> Result<&'a str, AkskError> {
        let allowed = self.allowed_projects.get(access).unwrap_or(&self.temporary_projects);
        if allowed.is_empty() || allowed.iter().any(|p| p == project) {
            Ok(project)
        } else {
            Err(AkskError::ProjectNotAllowed)
        }
    }
}

/// The project of a signed request. On the status API, `X-Project-Id`,
/// when sent (signed or not, as the OTC Go SDK sends it), must name the
/// project of the path. On the progress API it is the only place the
/// project is named, so it must be there and signed: unsigned, anyone on
/// the way could move the request to another project.
fn request_project<'a>(req: &SignedRequest<'a>, auth: &signer::Authorization) -> Result<&'a str, AkskError> {
    let header = req.header("x-project-id");
    match req.scope {
        ProjectScope::Path(project) if header.is_some_and(|p| p != project) => Err(AkskError::ProjectNotAllowed),
        ProjectScope::Path(project) => Ok(project),
        ProjectScope::Credentials => {
            let project = header.ok_or(AkskError::MissingProjectId)?;
            let signed = auth.signed_headers.split(';').any(|n| n.eq_ignore_ascii_case("x-project-id"));
            if signed { Ok(project) } else { Err(AkskError::UnsignedProjectId) }
        }
    }
}

/// Recomputes the signature over the headers the client says it signed,
/// in the form the client used. A signed header missing from the request is
/// signed as empty, which cannot match, as at the gateway; so is a scope
/// whose day is not the day of `X-Sdk-Date`.
fn signature_matches(req: &SignedRequest<'_>, auth: &signer::Authorization, secret: &str, date: &str) -> bool {
    let headers: Vec<(&str, &str)> = auth
        .signed_headers
        .split(';')
        .filter(|n| !n.is_empty())
        .map(|name| (name, req.header(name).unwrap_or("")))
        .collect();
    let canonical = signer::canonical_request(req.method, req.path, req.query, &headers, req.body);
    let expected = match &auth.scope {
        None => signer::signature(secret, date, &canonical),
        Some(scope) if scope.matches_date(date) => signer::scoped_signature(secret, date, scope, &canonical),
        Some(_) => return false,
    };
    expected.eq_ignore_ascii_case(&auth.signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_after_consecutive_failures_and_expiry() {
        let t0 = Instant::now();
        let lock = Duration::from_secs(300);
        let mut f = FailureTracker::default();
        for _ in 0..4 {
            f.failed(t0, 5, lock);
        }
        assert!(!f.is_locked(t0));
        f.succeeded();
        for _ in 0..4 {
            f.failed(t0, 5, lock);
        }
        assert!(!f.is_locked(t0), "a success in between resets the count");
        f.failed(t0, 5, lock);
        assert!(f.is_locked(t0 + Duration::from_secs(299)));
        assert!(!f.is_locked(t0 + lock));
    }
}
