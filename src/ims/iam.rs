//! The IAM requests that buy a token (`auth` caches what they return):
//! - password: `POST /v3/auth/tokens` (`methods: ["password"]`);
//! - OIDC federation: `POST /v3.0/OS-AUTH/id-token/tokens` with
//!   `X-Idp-Id`, the ID token in the body;
//! - agency: `POST /v3/auth/tokens` (`methods: ["assume_role"]`, OTC's
//!   `xrole_name`), sent with the base identity's token or signed with its keys.
//!
//! Each is scoped to the project, or (empty project) to the identity itself.
//! `?nocatalog=true` spares the large service catalog this client never reads.

use serde_json::{Value, json};

use super::credentials::{Agency, AgencyDomain, Secret};
use super::error::{ImsError, Service};
use super::signer;
use super::transport::{HttpResponse, header_value, send, url_with_path};

const JSON: &str = "application/json;charset=utf8";

/// How an agency's base identity proves itself.
pub enum Auth {
    Token(Secret),
    Keys { access_key: String, secret_key: Secret, security_token: Option<Secret> },
}

/// Pure: the scope of a token (none for an empty project).
fn scope(project: &str) -> Option<Value> {
    (!project.is_empty()).then(|| json!({"project": {"id": project}}))
}

/// Pure: the body of a password request; without a project, the user's domain.
pub fn password_body(project: &str, user: &str, domain: &str, password: &str) -> Value {
    let scope = scope(project).unwrap_or_else(|| json!({"domain": {"name": domain}}));
    json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "password": password, "domain": {"name": domain}}}},
        "scope": scope,
    }})
}

/// Pure: the body of an ID token exchange (unscoped without a project).
pub fn id_token_body(project: &str, jwt: &str) -> Value {
    let mut auth = json!({"id_token": {"id": jwt}});
    if let Some(scope) = scope(project) {
        auth["scope"] = scope;
    }
    json!({ "auth": auth })
}

/// Pure: the body of an agency request.
pub fn assume_role_body(project: &str, agency: &Agency) -> Value {
    let mut role = json!({"xrole_name": agency.name});
    match &agency.domain {
        AgencyDomain::Name(name) => role["domain_name"] = json!(name),
        AgencyDomain::Id(id) => role["domain_id"] = json!(id),
    }
    let mut auth = json!({"identity": {"methods": ["assume_role"], "assume_role": role}});
    if let Some(scope) = scope(project) {
        auth["scope"] = scope;
    }
    json!({ "auth": auth })
}

pub(crate) async fn password_token(
    http: &reqwest::Client,
    iam: &str,
    project: &str,
    user: &str,
    domain: &str,
    password: &Secret,
) -> Result<HttpResponse, ImsError> {
    let body = password_body(project, user, domain, password.expose());
    post(http, iam, &["v3", "auth", "tokens"], &body, |r, _| Ok(r)).await
}

pub(crate) async fn exchange_id_token(
    http: &reqwest::Client,
    iam: &str,
    project: &str,
    idp_id: &str,
    jwt: &Secret,
) -> Result<HttpResponse, ImsError> {
    let body = id_token_body(project, jwt.expose());
    let idp = header_value(idp_id, "identity provider ID")?;
    post(http, iam, &["v3.0", "OS-AUTH", "id-token", "tokens"], &body, |r, _| Ok(r.header("X-Idp-Id", idp))).await
}

pub(crate) async fn assume_role(
    http: &reqwest::Client,
    iam: &str,
    project: &str,
    agency: &Agency,
    auth: &Auth,
) -> Result<HttpResponse, ImsError> {
    let body = assume_role_body(project, agency);
    post(http, iam, &["v3", "auth", "tokens"], &body, |request, (url, bytes)| match auth {
        Auth::Token(token) => Ok(request.header("X-Auth-Token", header_value(token.expose(), "token")?)),
        Auth::Keys { access_key, secret_key, security_token } => {
            sign(request, url, bytes, access_key, secret_key, security_token.as_ref())
        }
    })
    .await
}

type Prepare<'a> = (&'a reqwest::Url, &'a [u8]);

/// `POST {iam}/{path}?nocatalog=true` with a JSON body; `extra` adds the
/// headers of the method (given the URL and body, which a signature covers).
async fn post(
    http: &reqwest::Client,
    iam: &str,
    path: &[&str],
    body: &Value,
    extra: impl FnOnce(reqwest::RequestBuilder, Prepare<'_>) -> Result<reqwest::RequestBuilder, ImsError>,
) -> Result<HttpResponse, ImsError> {
    let mut url = url_with_path(iam, path)?;
    url.set_query(Some("nocatalog=true"));
    let bytes = serde_json::to_vec(body).expect("JSON values serialise");
    let request = http.post(url.clone()).header("Content-Type", JSON);
    let request = extra(request, (&url, &bytes))?.body(bytes);
    send(Service::Iam, "POST", &url, request).await
}

/// Signs a POST as the SDK does: `Content-Type`, `X-Sdk-Date` and, for
/// temporary keys, `X-Security-Token`, over the body's hash.
fn sign(
    request: reqwest::RequestBuilder,
    url: &reqwest::Url,
    body: &[u8],
    access_key: &str,
    secret_key: &Secret,
    security_token: Option<&Secret>,
) -> Result<reqwest::RequestBuilder, ImsError> {
    let date = signer::sdk_date(jiff::Timestamp::now());
    let mut headers: Vec<(&str, &str)> = vec![("Content-Type", JSON), (signer::HEADER_SDK_DATE, &date)];
    if let Some(token) = security_token {
        headers.push(("X-Security-Token", token.expose()));
    }
    let canonical = signer::canonical_request("POST", url.path(), url.query().unwrap_or(""), &headers, body);
    let signature = signer::signature(secret_key.expose(), &date, &canonical);
    let authorization = signer::authorization_header(access_key, &signer::signed_header_names(&headers), &signature);
    let mut request = request.header("Authorization", header_value(&authorization, "access key")?);
    for (name, value) in headers.into_iter().skip(1) {
        request = request.header(name, header_value(value, name)?);
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_follow_the_iam_docs() {
        let b = id_token_body("p1", "JWT");
        assert_eq!(b, json!({"auth": {"id_token": {"id": "JWT"}, "scope": {"project": {"id": "p1"}}}}));
        assert_eq!(id_token_body("", "JWT"), json!({"auth": {"id_token": {"id": "JWT"}}}));
        let agency = Agency { name: "ims-reader".into(), domain: AgencyDomain::Name("other".into()) };
        let b = assume_role_body("p2", &agency);
        assert_eq!(b["auth"]["identity"]["methods"], json!(["assume_role"]));
        assert_eq!(b["auth"]["identity"]["assume_role"], json!({"xrole_name": "ims-reader", "domain_name": "other"}));
        assert_eq!(b["auth"]["scope"]["project"]["id"], "p2");
        let by_id = Agency { domain: AgencyDomain::Id("d1".into()), ..agency };
        assert_eq!(assume_role_body("p2", &by_id)["auth"]["identity"]["assume_role"]["domain_id"], "d1");
        assert_eq!(password_body("", "u", "dom", "pw")["auth"]["scope"], json!({"domain": {"name": "dom"}}));
        assert_eq!(password_body("p", "u", "dom", "pw")["auth"]["scope"], json!({"project": {"id": "p"}}));
    }
}
