//! IAM: password login scoped to a project, and the tokens it hands out.

use std::time::Duration;

use dashmap::DashMap;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::scenario::{Project, Scenario, User};

/// What a password-auth request asks for (as IAM does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordAuth {
    pub user: String,
    pub password: String,
    pub domain: String,
    /// `scope.project.id` or, failing that, `scope.project.name`.
    pub project: String,
}

/// Why a token request is refused: (status, IAM message).
pub type IamRefusal = (u16, &'static str);

const BAD_BODY: IamRefusal = (400, "The request body is invalid.");
// Domain-scoped or unscoped tokens cannot call IMS; the simulator refuses
// them rather than issue a useless token.
const NO_PROJECT_SCOPE: IamRefusal = (400, "The request you have made requires a project scope.");
const WRONG_PASSWORD: IamRefusal = (401, "The username or password is wrong.");
// IAM answers a scope the user has no role in with this generic 401.
const PROJECT_NOT_ALLOWED: IamRefusal = (401, "The request you have made requires authentication.");

/// Reads a request body: JSON, then the password-auth fields.
pub fn parse_request(body: &[u8]) -> Result<PasswordAuth, IamRefusal> {
    let value: Value = serde_json::from_slice(body).map_err(|_| BAD_BODY)?;
    parse_password_auth(&value)
}

/// Reads the documented request body; a domain may be given by name or id.
pub fn parse_password_auth(body: &Value) -> Result<PasswordAuth, IamRefusal> {
    let identity = &body["auth"]["identity"];
    let uses_password = identity["methods"].as_array().is_some_and(|m| m.iter().any(|v| v == "password"));
    let user = &identity["password"]["user"];
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let (Some(name), Some(password), Some(domain), true) = (
        text(&user["name"]),
        text(&user["password"]),
        text(&user["domain"]["name"]).or(text(&user["domain"]["id"])),
        uses_password,
    ) else {
        return Err(BAD_BODY);
    };
    let scope = &body["auth"]["scope"]["project"];
    let project = text(&scope["id"]).or(text(&scope["name"])).ok_or(NO_PROJECT_SCOPE)?;
    Ok(PasswordAuth { user: name, password, domain, project })
}

/// Checks the credentials and the scope against the scenario.
pub fn login<'a>(scenario: &'a Scenario, auth: &PasswordAuth) -> Result<(&'a User, Project), IamRefusal> {
    let user = scenario
        .users
        .iter()
        .find(|u| u.name == auth.user && u.domain == auth.domain && u.password == auth.password)
        .ok_or(WRONG_PASSWORD)?;
    let project = permitted_project(scenario, &user.projects, &auth.project).ok_or(PROJECT_NOT_ALLOWED)?;
    Ok((user, project))
}

/// The project `requested` (an id or a name) names, when `allowed` (ids
/// or names; empty = every project) lets the caller scope to it. A project
/// that the scenario does not list is accepted by id when every project is
/// allowed, so ad-hoc jobs need no project entry.
pub fn permitted_project(scenario: &Scenario, allowed: &[String], requested: &str) -> Option<Project> {
    let project = scenario
        .resolve_project(requested)
        .cloned()
        .or_else(|| allowed.is_empty().then(|| Project { id: requested.to_owned(), name: None }))?;
    let permitted = allowed.is_empty() || allowed.iter().any(|p| *p == project.id || Some(p) == project.name.as_ref());
    permitted.then_some(project)
}

/// A refusal in the flat shape IAM uses for federation and agencies:
/// `{"error_msg", "error_code"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlatRefusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl FlatRefusal {
    /// 400 `IAM.0011`.
    pub fn bad_body(detail: &str) -> Self {
        Self { status: 400, code: "IAM.0011", message: format!("Request body is invalid: {detail}") }
    }
    /// 401 `IAM.0001`.
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self { status: 401, code: "IAM.0001", message: detail.into() }
    }
    /// 403 `IAM.0003`.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self { status: 403, code: "IAM.0003", message: detail.into() }
    }
    /// 404 `IAM.0004`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self { status: 404, code: "IAM.0004", message: detail.into() }
    }
}

/// `scope.project.id` or `.name` of a token request, for the flat-error APIs.
pub fn scoped_project(body: &Value) -> Result<String, FlatRefusal> {
    let scope = &body["auth"]["scope"]["project"];
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    // Unscoped and domain-scoped tokens cannot call IMS: refused, as for passwords.
    text(&scope["id"]).or(text(&scope["name"])).ok_or_else(|| FlatRefusal::bad_body("a project scope is required"))
}

#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub user: String,
    pub project_id: String,
    pub expires_at: Timestamp,
    pub revoked: bool,
}

/// Why a presented token is not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenProblem {
    Unknown,
    Expired,
    Revoked,
    OtherProject,
}

#[derive(Default)]
pub struct TokenStore {
    tokens: DashMap<String, IssuedToken>,
}

impl TokenStore {
    /// Issues a new token; returns it with its expiry.
    pub fn issue(&self, user: &str, project_id: &str, now: Timestamp, lifetime: Duration) -> (String, Timestamp) {
        let token = new_token();
        let expires_at = now + SignedDuration::try_from(lifetime).unwrap_or(SignedDuration::MAX);
        let issued = IssuedToken { user: user.into(), project_id: project_id.into(), expires_at, revoked: false };
        self.tokens.insert(token.clone(), issued);
        (token, expires_at)
    }

    /// The project a valid token is scoped to.
    pub fn scope(&self, token: &str, now: Timestamp) -> Result<String, TokenProblem> {
        let issued = self.tokens.get(token).ok_or(TokenProblem::Unknown)?;
        if issued.revoked {
            Err(TokenProblem::Revoked)
        } else if now >= issued.expires_at {
            Err(TokenProblem::Expired)
        } else {
            Ok(issued.project_id.clone())
        }
    }

    /// A valid token scoped to `project_id`.
    pub fn check(&self, token: &str, project_id: &str, now: Timestamp) -> Result<(), TokenProblem> {
        if self.scope(token, now)? == project_id { Ok(()) } else { Err(TokenProblem::OtherProject) }
    }

    /// Who holds a valid token (any project): a user, a federated
    /// subject or an agency.
    pub fn holder(&self, token: &str, now: Timestamp) -> Result<String, TokenProblem> {
        self.scope(token, now)?;
        self.tokens.get(token).map(|t| t.user.clone()).ok_or(TokenProblem::Unknown)
    }

    /// The project a token names, valid or not: whose job a request meant.
    pub fn project_of(&self, token: &str) -> Option<String> {
        self.tokens.get(token).map(|t| t.project_id.clone())
    }

    /// Every token issued (revoked and expired ones too): what tests look
    /// for in what a client logged or stored.
    pub fn list(&self) -> Vec<Value> {
        self.tokens
            .iter()
            .map(|t| json!({"token": t.key(), "user": t.user, "project_id": t.project_id, "revoked": t.revoked}))
            .collect()
    }

    /// Revokes every token, or those of one user; returns how many.
    pub fn revoke(&self, user: Option<&str>) -> usize {
        let mut count = 0;
        for mut t in self.tokens.iter_mut() {
            if !t.revoked && user.is_none_or(|u| u == t.user) {
                t.revoked = true;
                count += 1;
            }
        }
        count
    }
}

/// Real tokens are long opaque strings starting with `MII`.
fn new_token() -> String {
    format!("MIIsim{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>())
}

/// The 201 body, trimmed to what clients read (`expires_at`, `project`).
pub fn token_body(user: &User, project: &Project, issued_at: Timestamp, expires_at: Timestamp) -> Value {
    let domain = domain_json(&user.domain);
    let user =
        json!({"id": fake_id("user", &user.name), "name": user.name, "domain": domain, "password_expires_at": ""});
    scoped_token_body("password", user, project, issued_at, expires_at)
}

/// `{"id", "name"}` of a domain known by name.
pub fn domain_json(name: &str) -> Value {
    json!({"id": fake_id("domain", name), "name": name})
}

/// A project-scoped token's body for any method, around its `user`.
pub fn scoped_token_body(
    method: &str,
    user: Value,
    project: &Project,
    issued_at: Timestamp,
    expires_at: Timestamp,
) -> Value {
    let domain = user["domain"].clone();
    json!({"token": {
        "methods": [method],
        "expires_at": iam_time(expires_at),
        "issued_at": iam_time(issued_at),
        "catalog": [],
        "roles": [{"id": "0", "name": "te_admin"}],
        "project": {"id": project.id, "name": project.name.as_deref().unwrap_or(&project.id), "domain": domain},
        "user": user,
    }})
}

/// `2015-11-09T01:42:57.527363Z`: microseconds, as IAM writes them.
pub fn iam_time(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

// Stable fake ids, so repeated logins show the same user and domain.
pub(super) fn fake_id(kind: &str, name: &str) -> String {
    let h = fnv(kind).rotate_left(7) ^ fnv(name);
    format!("{h:016x}{:016x}", h.rotate_left(29))
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(password: &str, scope: Value) -> Value {
        json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "demo", "password": password, "domain": {"name": "demo-domain"}}}},
            "scope": {"project": scope}}})
    }

    #[test]
    fn login_by_project_id_or_name() {
        let s = Scenario::demo();
        let by_id = parse_password_auth(&request("demo-password", json!({"id": s.projects[0].id}))).unwrap();
        assert_eq!(login(&s, &by_id).unwrap().1.id, s.projects[0].id);
        let by_name = parse_password_auth(&request("demo-password", json!({"name": "eu-de_demo"}))).unwrap();
        assert_eq!(login(&s, &by_name).unwrap().1.id, s.projects[0].id);
    }

    #[test]
    fn refusals() {
        let s = Scenario::demo();
        let wrong = parse_password_auth(&request("nope", json!({"id": s.projects[0].id}))).unwrap();
        assert_eq!(login(&s, &wrong).unwrap_err(), WRONG_PASSWORD);
        let other = parse_password_auth(&request("demo-password", json!({"id": "ffff"}))).unwrap();
        assert_eq!(login(&s, &other).unwrap_err(), PROJECT_NOT_ALLOWED);
        assert_eq!(parse_password_auth(&request("x", json!(null))).unwrap_err(), NO_PROJECT_SCOPE);
        assert_eq!(parse_password_auth(&json!({"auth": {}})).unwrap_err(), BAD_BODY);
    }

    #[test]
    fn token_checks() {
        let store = TokenStore::default();
        let now: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let (t, exp) = store.issue("demo", "p1", now, Duration::from_secs(60));
        assert_eq!(iam_time(exp), "2024-01-01T00:01:00.000000Z");
        assert_eq!(store.check(&t, "p1", now), Ok(()));
        assert_eq!(store.check(&t, "p2", now), Err(TokenProblem::OtherProject));
        assert_eq!(store.check(&t, "p1", exp), Err(TokenProblem::Expired));
        assert_eq!(store.check("MIIbogus", "p1", now), Err(TokenProblem::Unknown));
        assert_eq!(store.scope(&t, now), Ok("p1".to_owned()));
        assert_eq!(store.scope(&t, exp), Err(TokenProblem::Expired));
        assert_eq!(store.project_of(&t).as_deref(), Some("p1"));
        let (t2, _) = store.issue("other", "p1", now, Duration::from_secs(60));
        assert_eq!(store.revoke(Some("demo")), 1);
        assert_eq!(store.check(&t, "p1", now), Err(TokenProblem::Revoked));
        assert_eq!(store.check(&t2, "p1", now), Ok(()));
        assert_eq!(store.revoke(None), 1);
    }
}
