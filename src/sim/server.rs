//! HTTP: the axum handlers. They only read the request, ask the state and
//! the pure modules what to answer, and write the answer.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use jiff::Timestamp;
use serde_json::{Value, json};

use super::aksk::{AkskError, ProjectScope, SignedRequest};
use super::iam::{self, FlatRefusal};
use super::lifecycle::{DEFAULT_THROTTLE_LIMIT, JobApi};
use super::responses::{self, SimResponse};
use super::scenario::{JobDef, ProgressApi};
use super::state::{AuthFailure, LiveJob, Sim};
use super::{agency, oidc};

pub fn router(sim: Arc<Sim>) -> Router {
    iam_routes(ims_routes(Router::new())).fallback(unknown_api).with_state(sim)
}

/// Everything but IAM: what the IMS listener serves when IAM has a
/// listener of its own (`--iam-listen`); IAM paths get the gateway's 404.
pub fn ims_router(sim: Arc<Sim>) -> Router {
    ims_routes(Router::new()).fallback(unknown_api).with_state(sim)
}

/// IAM only (`--iam-listen`): token requests and the health check.
pub fn iam_router(sim: Arc<Sim>) -> Router {
    iam_routes(Router::new()).route("/healthz", get(|| async { "ok" })).fallback(unknown_api).with_state(sim)
}

fn iam_routes(router: Router<Arc<Sim>>) -> Router<Arc<Sim>> {
    router.route("/v3/auth/tokens", post(issue_token)).route("/v3.0/OS-AUTH/id-token/tokens", post(federated_token))
}

/// IMS, the metadata service, the admin API and the health check.
fn ims_routes(router: Router<Arc<Sim>>) -> Router<Arc<Sim>> {
    router
        .route("/openstack/latest/securitykey", get(metadata_securitykey))
        .route("/meta-data/latest/api/token", put(metadata_session_token))
        .route("/v1/{project_id}/jobs/{job_id}", get(get_job))
        .route("/v1/cloudimages/job/{job_id}", get(get_job_progress))
        .route("/admin/jobs/{project_id}/{job_id}", put(put_job).delete(delete_job))
        .route("/admin/jobs/{project_id}/{job_id}/requests", get(job_requests))
        .route("/admin/requests", get(all_requests))
        .route("/admin/tokens", get(issued_tokens))
        .route("/admin/tokens/revoke", post(revoke_tokens))
        .route("/admin/reset-counters", post(reset_counters))
        .route("/healthz", get(|| async { "ok" }))
}

/// `GET /v1/{project_id}/jobs/{job_id}`: the status API.
async fn get_job(
    State(sim): State<Arc<Sim>>,
    Path((project_id, job_id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let req = signed_request(&method, &uri, &headers, ProjectScope::Path(&project_id));
    query_job(&sim, JobApi::Status, &req, &job_id).await
}

/// `GET /v1/cloudimages/job/{job_id}`: the progress API, project from the
/// credentials. Where it is absent, the gateway knows no such API and
/// answers before any authentication.
async fn get_job_progress(
    State(sim): State<Arc<Sim>>,
    Path(job_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let req = signed_request(&method, &uri, &headers, ProjectScope::Credentials);
    let job = sim.claimed_project(&req).and_then(|project| sim.job(&project, &job_id));
    if sim.scenario.settings.progress_api(job.as_deref().map(|j| &j.def)) == ProgressApi::Absent {
        let request_id = sim.next_request_id();
        let answer = responses::api_not_found(&request_id);
        record(&sim, JobApi::Progress, job.as_deref(), answer.status);
        return to_http(answer, &request_id);
    }
    query_job(&sim, JobApi::Progress, &req, &job_id).await
}

fn signed_request<'a>(
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    scope: ProjectScope<'a>,
) -> SignedRequest<'a> {
    SignedRequest {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers,
        body: b"",
        scope,
    }
}

/// Either job API: gateway checks, then the job.
async fn query_job(sim: &Sim, api: JobApi, req: &SignedRequest<'_>, job_id: &str) -> Response {
    let _in_flight = sim.counters.in_flight.enter();
    let request_id = sim.next_request_id();
    let job = sim.claimed_project(req).and_then(|project| sim.job(&project, job_id));
    let answer = match sim.authenticate(req) {
        Err(failure) => {
            sim.count_auth_failure(failure);
            auth_refusal(failure, &request_id)
        }
        Ok(project) if !sim.throttles.admit(&project, Instant::now()) => {
            sim.counters.throttled.inc();
            project_throttled(sim, &request_id)
        }
        Ok(_) => match &job {
            None => {
                sim.counters.unknown_jobs.inc();
                responses::unknown_job(sim.scenario.settings.unknown_job)
            }
            Some(job) => {
                let answer = job.answer(&sim.scenario.settings, api);
                if !answer.delay.is_zero() {
                    tokio::time::sleep(answer.delay).await;
                }
                responses::reply(&answer.reply, &request_id)
            }
        },
    };
    tracing::debug!(api = api.name(), %job_id, status = answer.status, %request_id, "job query");
    record(sim, api, job.as_deref(), answer.status);
    to_http(answer, &request_id)
}

/// Counts a job query, in all and for its job when the request named one.
fn record(sim: &Sim, api: JobApi, job: Option<&LiveJob>, status: u16) {
    sim.counters.jobs_total.record(api, status);
    if let Some(job) = job {
        job.counters.record(api, status);
    }
}

fn project_throttled(sim: &Sim, request_id: &str) -> SimResponse {
    let cfg = sim.throttles.config();
    // The message's limit is per minute, as the gateway words it.
    let limit = cfg.map_or(DEFAULT_THROTTLE_LIMIT, |c| (c.rate * 60.0).round().max(1.0) as u32);
    responses::throttled(limit, cfg.and_then(|c| c.retry_after), request_id)
}

/// The gateway's 401s. Codes: `APIGW.0301` "Incorrect IAM authentication
/// information" (documented) for every refusal, except an
/// expired token, which gets `APIGW.0307` "The token must be updated." as
/// Huawei's API gateway documents. A token scoped to another project is
/// also a 401 here; the real cloud may answer 403 from IMS instead.
fn auth_refusal(failure: AuthFailure, request_id: &str) -> SimResponse {
    use super::iam::TokenProblem::*;
    let detail = match failure {
        AuthFailure::Missing => "x-auth-token not found",
        AuthFailure::Token(Unknown) => "decrypt token fail",
        AuthFailure::Token(Revoked) => "the token has been revoked",
        AuthFailure::Token(OtherProject) => "the token is not scoped to this project",
        AuthFailure::Token(Expired) => {
            return responses::gateway(401, "APIGW.0307", "The token must be updated.", request_id);
        }
        AuthFailure::Aksk(AkskError::KeyExpired) => {
            let message = format!("The token must be updated: {}", AkskError::KeyExpired.detail());
            return responses::gateway(401, "APIGW.0307", &message, request_id);
        }
        AuthFailure::Aksk(e) => e.detail(),
    };
    let message = format!("Incorrect IAM authentication information: {detail}");
    responses::gateway(401, "APIGW.0301", &message, request_id)
}

/// `POST /v3/auth/tokens`: password login scoped to a project, or an
/// agency token (`assume_role`).
async fn issue_token(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Ok(value) = serde_json::from_slice::<Value>(&body)
        && agency::is_assume_role(&value)
    {
        let req = SignedRequest { body: &body, ..signed_request(&method, &uri, &headers, ProjectScope::Credentials) };
        return agency_token(&sim, &req, &value);
    }
    password_token(&sim, &body)
}

fn password_token(sim: &Sim, body: &[u8]) -> Response {
    let request_id = sim.next_request_id();
    sim.counters.token_requests.inc();
    let login = iam::parse_request(body).and_then(|auth| iam::login(&sim.scenario, &auth));
    let (user, project) = match login {
        Ok(found) => found,
        Err((status, message)) => {
            sim.counters.token_failures.inc();
            return to_http(responses::iam_error(status, message), &request_id);
        }
    };
    let now = Timestamp::now();
    let (token, expires_at) = sim.tokens.issue(&user.name, &project.id, now, sim.scenario.settings.token_lifetime.0);
    sim.counters.tokens_issued.inc();
    let body = iam::token_body(user, &project, now, expires_at);
    subject_token(to_http(SimResponse::json(201, &body), &request_id), &token)
}

/// Adds the issued token as `X-Subject-Token`.
fn subject_token(mut response: Response, token: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(token) {
        response.headers_mut().insert("x-subject-token", value);
    }
    response
}

fn flat_refusal(refusal: &FlatRefusal, request_id: &str) -> Response {
    tracing::debug!(status = refusal.status, code = refusal.code, message = %refusal.message, "IAM refusal");
    to_http(responses::iam_flat(refusal), request_id)
}

/// `assume_role`: the caller (token or AK/SK), then the agency.
fn agency_token(sim: &Sim, req: &SignedRequest<'_>, body: &Value) -> Response {
    let request_id = sim.next_request_id();
    sim.counters.agency_requests.inc();
    let decided = agency::parse(body).and_then(|ask| {
        let caller = sim.caller(req)?;
        agency::assume(&sim.scenario, &ask, &caller).map(|(agency, project)| (agency, project, caller))
    });
    let (agency, project, caller) = match decided {
        Ok(found) => found,
        Err(refusal) => {
            sim.counters.agency_failures.inc();
            return flat_refusal(&refusal, &request_id);
        }
    };
    let now = Timestamp::now();
    let user_name = agency.user_name();
    let (token, expires_at) = sim.tokens.issue(&user_name, &project.id, now, sim.scenario.settings.token_lifetime.0);
    sim.counters.agency_tokens_issued.inc();
    let domain = json!({"id": agency.domain_id(), "name": agency.domain_name});
    let user = json!({"id": iam::fake_id("agency", &user_name), "name": user_name, "domain": domain});
    let mut body = iam::scoped_token_body("assume_role", user, &project, now, expires_at);
    body["token"]["assumed_by"] = json!({"user": {"name": caller, "id": iam::fake_id("user", &caller)}});
    subject_token(to_http(SimResponse::json(201, &body), &request_id), &token)
}

/// `POST /v3.0/OS-AUTH/id-token/tokens`: an OIDC ID token of the
/// provider `X-Idp-Id` for a token scoped to a project.
async fn federated_token(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let request_id = sim.next_request_id();
    sim.counters.federation_requests.inc();
    let now = Timestamp::now();
    let idp_id = headers.get("x-idp-id").and_then(|v| v.to_str().ok());
    let decided = federate(&sim, idp_id, &body, now);
    let (idp, mapped, project) = match decided {
        Ok(found) => found,
        Err(refusal) => {
            sim.counters.federation_failures.inc();
            return flat_refusal(&refusal, &request_id);
        }
    };
    let lifetime = sim.scenario.settings.federated_token_lifetime();
    let (token, expires_at) = sim.tokens.issue(&mapped.sub, &project.id, now, lifetime);
    sim.counters.federation_tokens_issued.inc();
    let groups: Vec<Value> = mapped.groups.iter().map(|g| json!({"id": iam::fake_id("group", g), "name": g})).collect();
    let user = json!({
        "OS-FEDERATION": {"identity_provider": {"id": idp.id}, "protocol": {"id": "oidc"}, "groups": groups},
        "domain": iam::domain_json(&idp.domain),
        "name": mapped.user_name,
        "id": iam::fake_id("federated", &mapped.sub),
    });
    let body = iam::scoped_token_body("mapped", user, &project, now, expires_at);
    subject_token(to_http(SimResponse::json(201, &body), &request_id), &token)
}

/// The exchange's checks in IAM's order: provider, body, token, rules, scope.
fn federate<'a>(
    sim: &'a Sim,
    idp_id: Option<&str>,
    body: &[u8],
    now: Timestamp,
) -> Result<(&'a oidc::IdentityProvider, oidc::Mapped, crate::sim::scenario::Project), FlatRefusal> {
    let idp_id = idp_id.ok_or_else(|| FlatRefusal::bad_body("the X-Idp-Id header is required"))?;
    let idp = sim
        .scenario
        .identity_providers
        .iter()
        .find(|p| p.id == idp_id)
        .ok_or_else(|| FlatRefusal::not_found(format!("Could not find identity provider {idp_id:?}")))?;
    let exchange = oidc::parse_exchange(body)?;
    let claims = oidc::verify(idp, &exchange.id_token, now.as_second())?;
    let mapped = oidc::map_claims(idp, &claims)?;
    let project = iam::permitted_project(&sim.scenario, &mapped.projects, &exchange.project).ok_or_else(|| {
        FlatRefusal::forbidden(format!("{:?} may not scope to project {:?}", mapped.sub, exchange.project))
    })?;
    Ok((idp, mapped, project))
}

/// `GET /openstack/latest/securitykey`: the node's temporary keys.
async fn metadata_securitykey(State(sim): State<Arc<Sim>>) -> Response {
    if !sim.scenario.metadata.served {
        return StatusCode::NOT_FOUND.into_response();
    }
    sim.counters.metadata_key_requests.inc();
    axum::Json(sim.metadata_key().to_json()).into_response()
}

/// `PUT /meta-data/latest/api/token`: no session tokens here; SDKs fall
/// back to the plain GET on 404.
async fn metadata_session_token() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// `PUT /admin/jobs/{project_id}/{job_id}`: a job definition in YAML or
/// JSON; the ids of the path win over those of the body.
async fn put_job(
    State(sim): State<Arc<Sim>>,
    Path((project_id, job_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let text = String::from_utf8_lossy(&body);
    let def = JobDef::parse(&text).and_then(|mut def| {
        def.project_id = project_id.clone();
        def.job_id = job_id.clone();
        def.validate().map(|()| def)
    });
    match def {
        Ok(def) => {
            let replaced = sim.put_job(def);
            let status = if replaced { StatusCode::OK } else { StatusCode::CREATED };
            (status, axum::Json(json!({"project_id": project_id, "job_id": job_id, "replaced": replaced})))
                .into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, axum::Json(json!({"error": e.0}))).into_response(),
    }
}

async fn delete_job(State(sim): State<Arc<Sim>>, Path((project_id, job_id)): Path<(String, String)>) -> StatusCode {
    if sim.remove_job(&project_id, &job_id) { StatusCode::NO_CONTENT } else { StatusCode::NOT_FOUND }
}

async fn job_requests(State(sim): State<Arc<Sim>>, Path((project_id, job_id)): Path<(String, String)>) -> Response {
    match sim.job(&project_id, &job_id) {
        Some(job) => axum::Json(job.counters.to_json()).into_response(),
        None => (StatusCode::NOT_FOUND, axum::Json(json!({"error": "no such job"}))).into_response(),
    }
}

async fn all_requests(State(sim): State<Arc<Sim>>) -> axum::Json<Value> {
    axum::Json(sim.requests_json())
}

async fn issued_tokens(State(sim): State<Arc<Sim>>) -> axum::Json<Value> {
    axum::Json(json!({"tokens": sim.tokens.list()}))
}

/// Body `{"user": "name"}` revokes one user's tokens; no body revokes all.
async fn revoke_tokens(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let user = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => v.get("user").and_then(Value::as_str).map(str::to_owned),
            Err(e) => {
                return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": e.to_string()}))).into_response();
            }
        }
    };
    axum::Json(json!({"revoked": sim.tokens.revoke(user.as_deref())})).into_response()
}

async fn reset_counters(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.reset_counters();
    StatusCode::NO_CONTENT
}

/// Any other path: the gateway's "no such API".
async fn unknown_api(State(sim): State<Arc<Sim>>) -> Response {
    let request_id = sim.next_request_id();
    to_http(responses::api_not_found(&request_id), &request_id)
}

fn to_http(r: SimResponse, request_id: &str) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Body::from(r.body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(r.content_type));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", id);
    }
    if let Some(seconds) = r.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
