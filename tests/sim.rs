//! ims-sim over real HTTP on 127.0.0.1: IAM tokens, AK/SK signatures
//! (computed with the operator's own signer), both job APIs, lifecycles,
//! faults, the throttle and the admin API. Plus the binary, started as
//! users start it.

use std::time::{Duration, Instant};

use imagejob_operator::ims::model::{Job, JobStatus};
use imagejob_operator::ims::signer;
use imagejob_operator::sim::{self, RunningSim, Scenario};
use jiff::{SignedDuration, Timestamp};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SCENARIO: &str = include_str!("fixtures/scenarios/short-lifecycles.yaml");
const PROJECT: &str = "11111111111111111111111111111111";
const OTHER_PROJECT: &str = "22222222222222222222222222222222";
const QUICK_JOB: &str = "ff8080814dbd65d7014dbe0d84db0001";
const OVA_JOB: &str = "ff8080814dbd65d7014dbe0d84db0002";
const FAULTY_JOB: &str = "ff8080814dbd65d7014dbe0d84db0005";
const ENTITIES_FAIL_JOB: &str = "ff8080814dbd65d7014dbe0d84db0006";
const IMS_ERRORS_JOB: &str = "ff8080814dbd65d7014dbe0d84db0007";
const MULTI_OVA_JOB: &str = "ff8080814dbd65d7014dbe0d84db0008";
const VOLUMES_JOB: &str = "ff8080814dbd65d7014dbe0d84db000b";
const NO_PROGRESS_API_JOB: &str = "ff8080814dbd65d7014dbe0d84db000d";
const API_NOT_FOUND: &str = "The API does not exist or has not been published in the environment";

async fn start(yaml: &str) -> RunningSim {
    sim::spawn(Scenario::parse(yaml).expect("test scenario")).await.expect("sim starts")
}

fn job_path(project: &str, job: &str) -> String {
    format!("/v1/{project}/jobs/{job}")
}

fn progress_path(job: &str) -> String {
    format!("/v1/cloudimages/job/{job}")
}

async fn login(sim: &RunningSim, user: &str, password: &str, scope: Value) -> reqwest::Response {
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "password": password, "domain": {"name": "test-domain"}}}},
        "scope": {"project": scope}}});
    reqwest::Client::new().post(sim.url("/v3/auth/tokens")).json(&body).send().await.unwrap()
}

async fn token(sim: &RunningSim, user: &str, password: &str, project: &str) -> String {
    let response = login(sim, user, password, json!({"id": project})).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.headers()["x-subject-token"].to_str().unwrap().to_owned()
}

async fn get_with_token(sim: &RunningSim, path: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new().get(sim.url(path)).header("X-Auth-Token", token).send().await.unwrap()
}

/// Signs a GET the way the operator's client does; `extra` are more
/// headers to sign and send.
fn signed_get(
    sim: &RunningSim,
    path: &str,
    ak: &str,
    sk: &str,
    date: Timestamp,
    extra: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    sign(reqwest::Client::new().get(sim.url(path)), "GET", path, (ak, sk), date, extra, b"")
}

/// Adds `X-Sdk-Date`, `extra` and the signature over them and `body`.
fn sign(
    mut request: reqwest::RequestBuilder,
    method: &str,
    path: &str,
    (ak, sk): (&str, &str),
    date: Timestamp,
    extra: &[(&str, &str)],
    body: &[u8],
) -> reqwest::RequestBuilder {
    let date = signer::sdk_date(date);
    let mut headers = vec![("X-Sdk-Date", date.as_str())];
    headers.extend_from_slice(extra);
    let canonical = signer::canonical_request(method, path, "", &headers, body);
    let signature = signer::signature(sk, &date, &canonical);
    let authorization = signer::authorization_header(ak, &signer::signed_header_names(&headers), &signature);
    request = request.header("Authorization", authorization);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

async fn admin(sim: &RunningSim, path: &str) -> Value {
    json_of(reqwest::get(sim.url(path)).await.unwrap()).await
}

#[tokio::test]
async fn token_is_issued_like_iam_and_opens_the_job() {
    let sim = start(SCENARIO).await;
    let response = login(&sim, "alice", "alice-password", json!({"name": "eu-de_test"})).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let token = response.headers()["x-subject-token"].to_str().unwrap().to_owned();
    let body = json_of(response).await;
    assert_eq!(body["token"]["project"]["id"], PROJECT);
    let expires_at = body["token"]["expires_at"].as_str().unwrap();
    // Microseconds and a Z, about 24 h from now.
    assert_eq!(expires_at.len(), "2015-11-09T01:42:57.527363Z".len(), "{expires_at}");
    let lifetime = expires_at.parse::<Timestamp>().unwrap().duration_since(Timestamp::now());
    assert!(lifetime > SignedDuration::from_hours(23), "{lifetime:?}");

    let response = get_with_token(&sim, &job_path(PROJECT, QUICK_JOB), &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-request-id"].len(), 32);
    let job = Job::parse(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(job.job_id.as_deref(), Some(QUICK_JOB));
}

#[tokio::test]
async fn wrong_password_and_foreign_project_are_refused_by_iam() {
    let sim = start(SCENARIO).await;
    let response = login(&sim, "alice", "wrong", json!({"id": PROJECT})).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_of(response).await,
        json!({"error": {"code": 401, "message": "The username or password is wrong.", "title": "Unauthorized"}})
    );
    let response = login(&sim, "alice", "alice-password", json!({"id": OTHER_PROJECT})).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let counters = admin(&sim, "/admin/requests").await;
    let iam = &counters["iam"];
    assert_eq!([&iam["token_requests"], &iam["tokens_issued"], &iam["failures"]], [2, 0, 2]);
    assert_eq!([&iam["agency_requests"], &iam["federation_requests"]], [0, 0], "password logins only");
}

#[tokio::test]
async fn token_checks_at_the_gateway() {
    let sim = start(SCENARIO).await;
    let path = job_path(PROJECT, QUICK_JOB);
    let missing = reqwest::get(sim.url(&path)).await.unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    let body = json_of(missing).await;
    assert_eq!(body["error_code"], "APIGW.0301");
    assert_eq!(body["request_id"].as_str().unwrap().len(), 32);

    let bogus = get_with_token(&sim, &path, "MIIbogus").await;
    assert_eq!(bogus.status(), StatusCode::UNAUTHORIZED);

    // bob may use every project, but his token is scoped to the other one.
    let other = token(&sim, "bob", "bob-password", OTHER_PROJECT).await;
    let response = get_with_token(&sim, &path, &other).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(response).await["error_code"], "APIGW.0301");
    let counters = admin(&sim, "/admin/requests").await;
    assert_eq!(counters["auth_failures"], json!({"token": 2, "aksk": 0, "missing": 1}));
}

#[tokio::test]
async fn tokens_expire() {
    let sim = start(&format!("{SCENARIO}\n").replace("settings:\n", "settings:\n  token_lifetime: 2s\n")).await;
    let token = token(&sim, "alice", "alice-password", PROJECT).await;
    let path = job_path(PROJECT, QUICK_JOB);
    assert_eq!(get_with_token(&sim, &path, &token).await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let response = get_with_token(&sim, &path, &token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(response).await["error_code"], "APIGW.0307");
}

#[tokio::test]
async fn tokens_are_revoked_per_user_or_all() {
    let sim = start(SCENARIO).await;
    let alice = token(&sim, "alice", "alice-password", PROJECT).await;
    let bob = token(&sim, "bob", "bob-password", PROJECT).await;
    let path = job_path(PROJECT, QUICK_JOB);
    let client = reqwest::Client::new();
    let revoked = client.post(sim.url("/admin/tokens/revoke")).json(&json!({"user": "alice"})).send().await.unwrap();
    assert_eq!(json_of(revoked).await, json!({"revoked": 1}));
    assert_eq!(get_with_token(&sim, &path, &alice).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(get_with_token(&sim, &path, &bob).await.status(), StatusCode::OK);
    let revoked = client.post(sim.url("/admin/tokens/revoke")).send().await.unwrap();
    assert_eq!(json_of(revoked).await, json!({"revoked": 1}));
    assert_eq!(get_with_token(&sim, &path, &bob).await.status(), StatusCode::UNAUTHORIZED);
    // A fresh login works again, as after a real revocation.
    let fresh = token(&sim, "bob", "bob-password", PROJECT).await;
    assert_eq!(get_with_token(&sim, &path, &fresh).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn aksk_signatures_from_the_operator_signer_are_accepted() {
    let sim = start(SCENARIO).await;
    let path = job_path(PROJECT, QUICK_JOB);
    let now = Timestamp::now();
    let plain = signed_get(&sim, &path, "TESTAK", "test-secret", now, &[]).send().await.unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
    let with_project = signed_get(&sim, &path, "TESTAK", "test-secret", now, &[("X-Project-Id", PROJECT)]);
    assert_eq!(with_project.send().await.unwrap().status(), StatusCode::OK);
    let temporary = signed_get(&sim, &path, "TEMPAK", "temp-secret", now, &[("X-Security-Token", "temp-token")]);
    assert_eq!(temporary.send().await.unwrap().status(), StatusCode::OK);
}

/// Signs a GET as the official OTC Go SDK (gophertelekomcloud) does: the
/// `Credential=AK/scope` form with a derived key, `accept;host;user-agent;
/// x-sdk-date` signed, `X-Project-Id` sent unsigned.
fn go_sdk_signed_get(sim: &RunningSim, path: &str, sk: &str, scope_day: Option<&str>) -> reqwest::RequestBuilder {
    let date = signer::sdk_date(Timestamp::now());
    let url = sim.url(path);
    let host = url.trim_start_matches("http://").split('/').next().unwrap().to_owned();
    let headers = [
        ("Accept", "application/json"),
        ("Host", host.as_str()),
        ("User-Agent", "golangsdk/2.0.0"),
        ("X-Sdk-Date", date.as_str()),
    ];
    let day = scope_day.unwrap_or(&date[..8]);
    let scope = signer::CredentialScope { date: day.into(), region: String::new(), service: String::new() };
    let canonical = signer::canonical_request("GET", path, "", &headers, b"");
    let signature = signer::scoped_signature(sk, &date, &scope, &canonical);
    let authorization = format!(
        "SDK-HMAC-SHA256 Credential=TESTAK/{}, SignedHeaders={}, Signature={signature}",
        scope.as_string(),
        signer::signed_header_names(&headers)
    );
    let mut request = reqwest::Client::new().get(url).header("Authorization", authorization);
    for (name, value) in headers.iter().filter(|(n, _)| *n != "Host") {
        request = request.header(*name, *value);
    }
    request.header("X-Project-Id", PROJECT)
}

#[tokio::test]
async fn aksk_signatures_of_the_otc_go_sdk_form_are_accepted() {
    let sim = start(SCENARIO).await;
    let path = job_path(PROJECT, QUICK_JOB);
    let response = go_sdk_signed_get(&sim, &path, "test-secret", None).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{:?}", response.text().await);
    // A scope of another day, or a wrong key, is refused like a bad signature.
    for (sk, day) in [("test-secret", Some("20000101")), ("wrong-secret", None)] {
        let response = go_sdk_signed_get(&sim, &path, sk, day).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(json_of(response).await["error_msg"].as_str().unwrap().contains("verify aksk signature fail"));
    }
    // The failures count towards the same lock as the other form's.
    for _ in 0..3 {
        go_sdk_signed_get(&sim, &path, "wrong-secret", None).send().await.unwrap();
    }
    let locked = go_sdk_signed_get(&sim, &path, "test-secret", None).send().await.unwrap();
    assert_eq!(locked.status(), StatusCode::UNAUTHORIZED);
    assert!(json_of(locked).await["error_msg"].as_str().unwrap().contains("locked"));
}

#[tokio::test]
async fn aksk_refusals() {
    let sim = start(SCENARIO).await;
    let path = job_path(PROJECT, QUICK_JOB);
    let now = Timestamp::now();
    let cases = [
        (signed_get(&sim, &path, "TESTAK", "test-secret", now, &[("X-Project-Id", OTHER_PROJECT)]), "project"),
        (signed_get(&sim, &path, "NOSUCHAK", "x", now, &[]), "ak not found"),
        (signed_get(&sim, &path, "TEMPAK", "temp-secret", now, &[]), "security token"),
        (signed_get(&sim, &path, "TEMPAK", "temp-secret", now, &[("X-Security-Token", "stale")]), "security token"),
        (
            signed_get(
                &sim,
                &job_path(OTHER_PROJECT, QUICK_JOB),
                "TEMPAK",
                "temp-secret",
                now,
                &[("X-Security-Token", "temp-token")],
            ),
            "project",
        ),
    ];
    for (request, want) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{want}");
        let body = json_of(response).await;
        assert_eq!(body["error_code"], "APIGW.0301");
        assert!(body["error_msg"].as_str().unwrap().contains(want), "{body}");
    }
}

#[tokio::test]
async fn sdk_date_must_be_within_fifteen_minutes() {
    let sim = start(SCENARIO).await;
    let path = job_path(PROJECT, QUICK_JOB);
    let minutes = |m: i64| Timestamp::now() + SignedDuration::from_mins(m);
    for (offset, want) in
        [(-14, StatusCode::OK), (14, StatusCode::OK), (-16, StatusCode::UNAUTHORIZED), (16, StatusCode::UNAUTHORIZED)]
    {
        let response = signed_get(&sim, &path, "TESTAK", "test-secret", minutes(offset), &[]).send().await.unwrap();
        assert_eq!(response.status(), want, "offset {offset} min");
    }
}

#[tokio::test]
async fn wrong_secret_is_refused_and_five_failures_lock_the_key() {
    let sim = start(SCENARIO).await;
    let path = job_path(PROJECT, QUICK_JOB);
    for _ in 0..5 {
        let response = signed_get(&sim, &path, "LOCKAK", "wrong-secret", Timestamp::now(), &[]).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body = json_of(response).await;
        assert_eq!(body["error_code"], "APIGW.0301");
        assert_eq!(body["error_msg"], "Incorrect IAM authentication information: verify aksk signature fail");
    }
    // Locked: even the right secret is refused until the lock ends (2 s here).
    let locked = signed_get(&sim, &path, "LOCKAK", "lock-secret", Timestamp::now(), &[]).send().await.unwrap();
    assert_eq!(locked.status(), StatusCode::UNAUTHORIZED);
    assert!(json_of(locked).await["error_msg"].as_str().unwrap().contains("locked"));
    // Other keys are not affected.
    let other = signed_get(&sim, &path, "TESTAK", "test-secret", Timestamp::now(), &[]).send().await.unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let unlocked = signed_get(&sim, &path, "LOCKAK", "lock-secret", Timestamp::now(), &[]).send().await.unwrap();
    assert_eq!(unlocked.status(), StatusCode::OK);
    assert_eq!(admin(&sim, "/admin/requests").await["auth_failures"]["aksk"], 6);
}

async fn poll(sim: &RunningSim, job: &str) -> Value {
    let response =
        signed_get(sim, &job_path(PROJECT, job), "TESTAK", "test-secret", Timestamp::now(), &[]).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    json_of(response).await
}

/// The progress API with AK/SK and a signed `X-Project-Id`.
fn progress_get(sim: &RunningSim, job: &str) -> reqwest::RequestBuilder {
    signed_get(sim, &progress_path(job), "TESTAK", "test-secret", Timestamp::now(), &[("X-Project-Id", PROJECT)])
}

async fn poll_progress(sim: &RunningSim, job: &str) -> Value {
    let response = progress_get(sim, job).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    json_of(response).await
}

#[tokio::test]
async fn lifecycle_progresses_from_init_to_success() {
    let sim = start(SCENARIO).await;
    let first = poll_progress(&sim, QUICK_JOB).await;
    assert_eq!(first["status"], "INIT");
    assert_eq!(first["end_time"], "");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let running = poll_progress(&sim, QUICK_JOB).await;
    assert_eq!(running["status"], "RUNNING");
    let fraction = running["entities"]["process_percent"].as_f64().unwrap();
    assert!((0.1..0.9).contains(&fraction), "{fraction}");
    assert_eq!(running["entities"]["current_task"], "CreateImageByInstanceTask");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let done = poll_progress(&sim, QUICK_JOB).await;
    assert_eq!(done["status"], "SUCCESS");
    assert_eq!(done["entities"]["process_percent"], json!(1));
    assert_eq!(done["error_code"], Value::Null);
    assert_eq!(done["entities"]["results"][0]["status"], "success");
    let job = Job::from_value(&done).unwrap();
    assert_eq!(job.progress, Some(100));
    assert_eq!(job.image_id.as_deref(), Some("49e9447f-7dff-41e0-8036-f66fe5488c8b"));
    let took = job.end_time.unwrap().duration_since(job.begin_time.unwrap());
    assert_eq!(took, SignedDuration::from_millis(1500));
}

#[tokio::test]
async fn failed_job_with_sub_jobs_and_legacy_times() {
    let sim = start(SCENARIO).await;
    let running = poll(&sim, OVA_JOB).await;
    assert_eq!(running["status"], "RUNNING");
    assert_eq!(running["entities"]["sub_jobs_result"].as_array().unwrap().len(), 2);
    let begin = running["begin_time"].as_str().unwrap();
    assert_eq!(begin.len(), "04-Jun-2015 18:11:06:586".len(), "{begin}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let failed = Job::from_value(&poll(&sim, OVA_JOB).await).unwrap();
    assert_eq!(failed.status, Some(JobStatus::Fail));
    assert_eq!(failed.error_code.as_deref(), Some("IMG.0014"));
    assert_eq!(failed.sub_job_ids.len(), 2);
    let statuses: Vec<_> = failed.sub_jobs.iter().map(|s| s.status.clone().unwrap()).collect();
    assert_eq!(statuses, ["SUCCESS", "FAIL"]);
    assert_eq!(failed.sub_jobs[1].error_code.as_deref(), Some("IMG.1075"));
    assert!(failed.end_time.is_some());
}

#[tokio::test]
async fn faults_by_request_number() {
    let sim = start(SCENARIO).await;
    // Through the progress API: its faults are the status API's.
    let get = || progress_get(&sim, FAULTY_JOB);

    let throttled = get().send().await.unwrap();
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.headers()["retry-after"], "2");
    let request_id = throttled.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = json_of(throttled).await;
    assert_eq!(body["error_code"], "APIG.0308");
    assert_eq!(body["request_id"], request_id.as_str());

    let throttled = get().send().await.unwrap();
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(throttled.headers().get("retry-after").is_none());
    assert_eq!(
        json_of(throttled).await["error_msg"],
        "The throttling threshold has been reached: policy user over ratelimit,limit:50,time:1 minute"
    );

    let nested = get().send().await.unwrap();
    assert_eq!(nested.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        json_of(nested).await,
        json!({"error": {"code": "IMG.0023", "message": "An exception occurred during task query."}})
    );

    let flat = get().send().await.unwrap();
    assert_eq!(flat.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = json_of(flat).await;
    assert_eq!(
        (body["error_code"].as_str(), body["request_id"].as_str().map(str::len)),
        (Some("APIGW.0201"), Some(32))
    );

    let text = get().send().await.unwrap();
    assert_eq!(text.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(text.headers()["content-type"], "text/plain");
    assert_eq!(text.text().await.unwrap(), "Service Unavailable");

    let html = get().send().await.unwrap();
    assert_eq!(html.status(), StatusCode::BAD_GATEWAY);
    assert!(html.text().await.unwrap().contains("<h1>502 Bad Gateway</h1>"));

    let malformed = get().send().await.unwrap();
    assert_eq!(malformed.status(), StatusCode::OK);
    assert!(Job::parse(&malformed.bytes().await.unwrap()).is_err());

    let started = Instant::now();
    let slow = get().send().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(Job::parse(&slow.bytes().await.unwrap()).unwrap().progress, Some(50));

    let counts = admin(&sim, &format!("/admin/jobs/{PROJECT}/{FAULTY_JOB}/requests")).await;
    let by_status = json!({"200": 2, "429": 2, "500": 1, "502": 1, "503": 2});
    assert_eq!(
        counts,
        json!({"requests": 8, "by_status": by_status, "by_api": {
            "status": {"requests": 0, "by_status": {}}, "progress": {"requests": 8, "by_status": by_status}}})
    );
}

#[tokio::test]
async fn unknown_job_and_unknown_api() {
    let sim = start(SCENARIO).await;
    let response = poll_raw(&sim, &job_path(PROJECT, "ff8080814dbd65d7014dbe0d84dbffff")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(response).await, json!({"error": {"code": "IMG.0027", "message": "The job does not exist."}}));
    let response = reqwest::get(sim.url("/v2/nothing")).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(response).await["error_code"], "APIGW.0101");
    assert_eq!(admin(&sim, "/admin/requests").await["unknown_jobs"], 1);
}

async fn poll_raw(sim: &RunningSim, path: &str) -> reqwest::Response {
    signed_get(sim, path, "TESTAK", "test-secret", Timestamp::now(), &[]).send().await.unwrap()
}

#[tokio::test]
async fn admin_adds_replaces_and_counts_jobs() {
    let sim = start(SCENARIO).await;
    let client = reqwest::Client::new();
    let job_id = "ff8080814dbd65d7014dbe0d84dbaaaa";
    let url = sim.url(&format!("/admin/jobs/{PROJECT}/{job_id}"));
    let definition =
        "job_type: imsImportImageJob\nphases: [{after: 0s, status: INIT}, {after: 300ms, status: SUCCESS}]";
    let created = client.put(&url).body(definition).send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let path = job_path(PROJECT, job_id);
    assert_eq!(json_of(poll_raw(&sim, &path).await).await["status"], "INIT");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(json_of(poll_raw(&sim, &path).await).await["status"], "SUCCESS");

    // Replacing restarts the clock and the counters.
    let replaced = client.put(&url).body(definition).send().await.unwrap();
    assert_eq!(replaced.status(), StatusCode::OK);
    assert_eq!(json_of(poll_raw(&sim, &path).await).await["status"], "INIT");
    let _ = poll_raw(&sim, &job_path(PROJECT, "ff8080814dbd65d7014dbe0d84dbffff")).await;
    let _ = reqwest::get(sim.url(&path)).await.unwrap(); // unauthenticated
    let counts = admin(&sim, &format!("/admin/jobs/{PROJECT}/{job_id}/requests")).await;
    assert_eq!((&counts["requests"], &counts["by_status"]), (&json!(2), &json!({"200": 1, "401": 1})));
    let all = admin(&sim, "/admin/requests").await;
    assert_eq!(
        (&all["total"]["requests"], &all["total"]["by_status"]),
        (&json!(5), &json!({"200": 3, "401": 1, "404": 1}))
    );
    assert_eq!(all["jobs"][format!("{PROJECT}/{job_id}")]["requests"], 2);

    let reset = client.post(sim.url("/admin/reset-counters")).send().await.unwrap();
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    assert_eq!(admin(&sim, "/admin/requests").await["total"]["requests"], 0);

    let invalid = client.put(&url).body("job_type: x\nphases: []").send().await.unwrap();
    assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
    assert!(json_of(invalid).await["error"].as_str().unwrap().contains("phase"));
    assert_eq!(client.delete(&url).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(poll_raw(&sim, &path).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn project_throttle_answers_429_beyond_the_burst() {
    let yaml = SCENARIO.replace("settings:\n", "settings:\n  throttle: {rate: 0.5, burst: 3}\n");
    let sim = start(&yaml).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(poll_raw(&sim, &job_path(PROJECT, QUICK_JOB)).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let body = json_of(poll_raw(&sim, &job_path(PROJECT, QUICK_JOB)).await).await;
    assert_eq!(body["error_code"], "APIG.0308");
    assert_eq!(
        body["error_msg"],
        "The throttling threshold has been reached: policy user over ratelimit,limit:30,time:1 minute"
    );
    // Another project has its own bucket (bob may use it; the job is unknown there).
    let other = signed_get(&sim, &job_path(OTHER_PROJECT, QUICK_JOB), "TESTAK", "test-secret", Timestamp::now(), &[]);
    assert_eq!(other.send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(admin(&sim, "/admin/requests").await["throttled"], 3);
}

#[tokio::test]
async fn healthz() {
    let sim = start(SCENARIO).await;
    assert_eq!(reqwest::get(sim.url("/healthz")).await.unwrap().text().await.unwrap(), "ok");
}

#[tokio::test]
async fn progress_api_with_a_token_scoped_to_the_project() {
    let sim = start(SCENARIO).await;
    let alice = token(&sim, "alice", "alice-password", PROJECT).await;
    let response = get_with_token(&sim, &progress_path(QUICK_JOB), &alice).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-request-id"].len(), 32);
    let first = json_of(response).await;
    assert_eq!((first["job_id"].as_str(), first["status"].as_str()), (Some(QUICK_JOB), Some("INIT")));
    assert_eq!(first["entities"]["current_task"], "", "always there on the progress API");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let running = json_of(get_with_token(&sim, &progress_path(QUICK_JOB), &alice).await).await;
    assert!(running["entities"]["process_percent"].as_f64().is_some(), "{running}");
    // A token of another project does not see the job: it is looked up there.
    let bob = token(&sim, "bob", "bob-password", OTHER_PROJECT).await;
    let elsewhere = get_with_token(&sim, &progress_path(QUICK_JOB), &bob).await;
    assert_eq!(elsewhere.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(elsewhere).await["error"]["code"], "IMG.0027");
    let anonymous = reqwest::get(sim.url(&progress_path(QUICK_JOB))).await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(anonymous).await["error_code"], "APIGW.0301");
}

#[tokio::test]
async fn progress_api_with_aksk_needs_a_signed_project_id() {
    let sim = start(SCENARIO).await;
    let signed = progress_get(&sim, QUICK_JOB).send().await.unwrap();
    assert_eq!(signed.status(), StatusCode::OK);
    assert_eq!(json_of(signed).await["job_id"], QUICK_JOB);

    let path = progress_path(QUICK_JOB);
    let without = signed_get(&sim, &path, "TESTAK", "test-secret", Timestamp::now(), &[]).send().await.unwrap();
    assert_eq!(without.status(), StatusCode::UNAUTHORIZED);
    let body = json_of(without).await;
    assert_eq!(body["error_code"], "APIGW.0301");
    assert_eq!(body["error_msg"], "Incorrect IAM authentication information: x-project-id not found");

    // Sent but not signed, as the OTC Go SDK sends it.
    let unsigned = signed_get(&sim, &path, "TESTAK", "test-secret", Timestamp::now(), &[])
        .header("X-Project-Id", PROJECT)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    let body = json_of(unsigned).await;
    assert_eq!(body["error_msg"], "Incorrect IAM authentication information: x-project-id must be a signed header");
    let go_sdk = go_sdk_signed_get(&sim, &path, "test-secret", None).send().await.unwrap();
    assert_eq!(go_sdk.status(), StatusCode::UNAUTHORIZED);

    // A key limited to one project cannot name another.
    let temp = [("X-Project-Id", OTHER_PROJECT), ("X-Security-Token", "temp-token")];
    let foreign = signed_get(&sim, &path, "TEMPAK", "temp-secret", Timestamp::now(), &temp).send().await.unwrap();
    assert_eq!(foreign.status(), StatusCode::UNAUTHORIZED);
    assert!(json_of(foreign).await["error_msg"].as_str().unwrap().contains("project"));
    assert_eq!(admin(&sim, "/admin/requests").await["auth_failures"]["aksk"], 4);
}

#[tokio::test]
async fn counters_tell_the_two_apis_apart() {
    let sim = start(SCENARIO).await;
    for _ in 0..2 {
        poll(&sim, QUICK_JOB).await;
    }
    for _ in 0..3 {
        poll_progress(&sim, QUICK_JOB).await;
    }
    let _ = signed_get(&sim, &progress_path(QUICK_JOB), "TESTAK", "test-secret", Timestamp::now(), &[])
        .header("X-Project-Id", PROJECT)
        .send()
        .await
        .unwrap(); // refused (unsigned project), still the job's
    let counts = admin(&sim, &format!("/admin/jobs/{PROJECT}/{QUICK_JOB}/requests")).await;
    assert_eq!(
        counts,
        json!({"requests": 6, "by_status": {"200": 5, "401": 1}, "by_api": {
            "status": {"requests": 2, "by_status": {"200": 2}},
            "progress": {"requests": 4, "by_status": {"200": 3, "401": 1}}}})
    );
    let all = admin(&sim, "/admin/requests").await;
    assert_eq!(all["total"]["requests"], 6);
    assert_eq!(all["total"]["by_api"]["progress"]["requests"], 4);
    assert_eq!(all["jobs"][format!("{PROJECT}/{QUICK_JOB}")], counts);
}

#[tokio::test]
async fn status_api_sends_no_progress_unless_the_scenario_is_legacy() {
    let sim = start(SCENARIO).await;
    poll(&sim, QUICK_JOB).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let running = poll(&sim, QUICK_JOB).await;
    assert_eq!(running["status"], "RUNNING");
    assert!(running["entities"].get("process_percent").is_none(), "{running}");
    assert!(running["entities"].get("current_task").is_none(), "{running}");
    assert_eq!(Job::from_value(&running).unwrap().progress, None);

    let legacy = start(&SCENARIO.replace("settings:\n", "settings:\n  api: legacy\n")).await;
    poll(&legacy, QUICK_JOB).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let running = poll(&legacy, QUICK_JOB).await;
    assert!(running["entities"]["process_percent"].as_f64().is_some(), "{running}");
    assert_eq!(running["entities"]["current_task"], "CreateImageByInstanceTask");
    // ... and, as the old sim, no progress API at all.
    let absent = progress_get(&legacy, QUICK_JOB).send().await.unwrap();
    assert_eq!(absent.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(absent).await["error_code"], "APIGW.0101");

    let only_status = start(&SCENARIO.replace("settings:\n", "settings:\n  status_api_progress: true\n")).await;
    let answer = poll(&only_status, NO_PROGRESS_API_JOB).await;
    assert_eq!(answer["entities"]["process_percent"], json!(0.5));
}

#[tokio::test]
async fn progress_api_absent_answers_the_gateways_404() {
    let sim = start(SCENARIO).await;
    let response = progress_get(&sim, NO_PROGRESS_API_JOB).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = json_of(response).await;
    assert_eq!(body, json!({"error_code": "APIGW.0101", "error_msg": API_NOT_FOUND, "request_id": request_id}));
    // The status API still answers, and the counters show the attempt.
    assert_eq!(poll(&sim, NO_PROGRESS_API_JOB).await["status"], "RUNNING");
    let counts = admin(&sim, &format!("/admin/jobs/{PROJECT}/{NO_PROGRESS_API_JOB}/requests")).await;
    assert_eq!(counts["by_api"]["progress"], json!({"requests": 1, "by_status": {"404": 1}}));

    // For a whole cloud: before authentication, as for any unknown path.
    let old_cloud = start(&SCENARIO.replace("settings:\n", "settings:\n  progress_api: absent\n")).await;
    let anonymous = reqwest::get(old_cloud.url(&progress_path(QUICK_JOB))).await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(anonymous).await["error_msg"], API_NOT_FOUND);
    assert_eq!(poll(&old_cloud, QUICK_JOB).await["status"], "INIT");
}

#[tokio::test]
async fn multi_image_jobs_have_their_images_only_in_sub_jobs() {
    let sim = start(SCENARIO).await;
    poll(&sim, MULTI_OVA_JOB).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    for body in [poll(&sim, MULTI_OVA_JOB).await, poll_progress(&sim, MULTI_OVA_JOB).await] {
        assert_eq!(body["status"], "SUCCESS");
        assert!(body["entities"].get("image_id").is_none(), "{body}");
        assert!(body["entities"].get("process_percent").is_none(), "{body}");
        let images: Vec<&str> = body["entities"]["sub_jobs_result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["entities"]["image_id"].as_str().unwrap())
            .collect();
        assert_eq!(images, ["img-ova-sys", "img-ova-data"]);
        // The operator's model takes the system disk image from the sub-jobs.
        let job = Job::from_value(&body).unwrap();
        assert_eq!(job.image_id.as_deref(), Some("img-ova-sys"));
        assert_eq!(job.data_image_ids().collect::<Vec<_>>(), ["img-ova-data"]);
        assert_eq!(job.sub_jobs.len(), 2);
    }
    let volumes = poll_progress(&sim, VOLUMES_JOB).await;
    assert_eq!(volumes["job_type"], "imsVolumesToSysDataImagesJob");
    assert_eq!(
        volumes["entities"],
        json!({"sub_jobs_list": ["ff8080814dbd65d7014dbe0d84db000c"], "sub_jobs_result": [{
            "status": "SUCCESS", "job_id": "ff8080814dbd65d7014dbe0d84db000c", "job_type": "imsCopyVolumeToImageJob",
            "begin_time": volumes["begin_time"], "end_time": volumes["end_time"],
            "error_code": null, "fail_reason": null,
            "entities": {"image_id": "img-vol-sys", "image_name": "vol-sys"}}]})
    );
}

#[tokio::test]
async fn failure_reason_in_entities_error() {
    let sim = start(SCENARIO).await;
    let failed = poll(&sim, ENTITIES_FAIL_JOB).await;
    assert_eq!(failed["status"], "FAIL");
    assert_eq!((&failed["error_code"], &failed["fail_reason"]), (&Value::Null, &Value::Null));
    assert_eq!(
        failed["entities"],
        json!({"error_code": "IMG.1075", "error": "Image file registration failed.",
               "addition_error_code": "IMG.1075.1", "addition_error_msg": "The image file is not a valid qcow2 file."})
    );
    // Without error_in, a FAIL has it in both places.
    poll(&sim, OVA_JOB).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let both = poll(&sim, OVA_JOB).await;
    assert_eq!(both["error_code"], "IMG.0014");
    assert_eq!(both["entities"]["error"], both["fail_reason"]);
    assert_eq!(both["entities"]["sub_jobs_result"][1]["entities"]["error"], "Image file registration failed.");
}

#[tokio::test]
async fn ims_errors_are_400_with_img_codes() {
    let sim = start(SCENARIO).await;
    let path = job_path(PROJECT, IMS_ERRORS_JOB);
    let first = poll_raw(&sim, &path).await;
    assert_eq!(first.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(first).await,
        json!({"error": {"code": "IMG.0030", "message": "The project ID and token in the request are invalid."}})
    );
    let forbidden = poll_raw(&sim, &path).await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    assert_eq!(json_of(forbidden).await["error"]["code"], "IMG.0026");
    let flat = progress_get(&sim, IMS_ERRORS_JOB).send().await.unwrap();
    assert_eq!(flat.status(), StatusCode::BAD_REQUEST);
    let body = json_of(flat).await;
    assert_eq!(body["error_code"], "IMG.0023");
    assert_eq!(body["error_msg"], "An exception occurred during task query.");
    assert_eq!(poll_raw(&sim, &path).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_job_can_be_a_task_query_error() {
    let sim = start(&SCENARIO.replace("settings:\n", "settings:\n  unknown_job: task_query_error\n")).await;
    let unknown = "ff8080814dbd65d7014dbe0d84dbffff";
    for response in
        [poll_raw(&sim, &job_path(PROJECT, unknown)).await, progress_get(&sim, unknown).send().await.unwrap()]
    {
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            json_of(response).await,
            json!({"error": {"code": "IMG.0023", "message": "An exception occurred during task query."}})
        );
    }
    assert_eq!(admin(&sim, "/admin/requests").await["unknown_jobs"], 2);
}

/// Kills the child process even when the test fails.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary as users run it: default scenario, port 0, address on stdout.
#[tokio::test]
async fn binary_serves_the_default_demo() {
    use std::io::BufRead;
    let mut child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_ims-sim"))
            .args(["--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().strip_prefix("ims-sim listening on ").expect(&line).to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    let client = reqwest::Client::new();
    let login = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "demo", "password": "demo-password", "domain": {"name": "demo-domain"}}}},
        "scope": {"project": {"id": "0b0a1e4b2c2d4e8f9a0b1c2d3e4f5a6b"}}}});
    let response = client.post(format!("{base}/v3/auth/tokens")).json(&login).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let token = response.headers()["x-subject-token"].to_str().unwrap().to_owned();
    let job = client
        .get(format!("{base}/v1/0b0a1e4b2c2d4e8f9a0b1c2d3e4f5a6b/jobs/ff8080814dbd65d7014dbe0d84db0013"))
        .header("X-Auth-Token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(job.status(), StatusCode::OK);
    let job = Job::parse(&job.bytes().await.unwrap()).unwrap();
    assert_eq!(job.status, Some(JobStatus::Init));
    assert_eq!(job.job_type.as_deref(), Some("imsCreateImageByInstance"));
}

#[test]
fn every_example_scenario_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scenarios");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let scenario = Scenario::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if path.ends_with("scale-10k.yaml") {
                assert_eq!(scenario.jobs.len(), 10_000);
            }
            seen += 1;
        }
    }
    assert!(seen >= 3);
}

/// A bounded loopback load test (20,000 AK/SK-signed requests over 10,000
/// jobs, 10 s at most). Run by hand:
/// `cargo test --release --test sim -- --ignored --nocapture load`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test; run by hand in release mode"]
async fn load_aksk_over_ten_thousand_jobs() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    const TOTAL: u64 = 20_000;
    let scale = include_str!("fixtures/scenarios/scale-10k.yaml");
    let sim = Arc::new(start(scale).await);
    let client = reqwest::Client::new();
    let issued = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    let started = Instant::now();
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let (sim, client, issued) = (Arc::clone(&sim), client.clone(), Arc::clone(&issued));
            tokio::spawn(async move {
                let mut bad = 0u64;
                loop {
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    if n >= TOTAL || Instant::now() > deadline {
                        return bad;
                    }
                    let path = job_path("0b0a1e4b2c2d4e8f9a0b1c2d3e4f5a6b", &format!("ff808081a0{:022x}", n % 9000));
                    let date = signer::sdk_date(Timestamp::now());
                    let headers = [("X-Sdk-Date", date.as_str())];
                    let canonical = signer::canonical_request("GET", &path, "", &headers, b"");
                    let signature = signer::signature("demo-secret-key", &date, &canonical);
                    let authorization = signer::authorization_header("DEMOACCESSKEY", "x-sdk-date", &signature);
                    let response = client
                        .get(sim.url(&path))
                        .header("X-Sdk-Date", &date)
                        .header("Authorization", authorization)
                        .send()
                        .await;
                    let ok = match response {
                        Ok(r) => r.status() == StatusCode::OK && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    bad += u64::from(!ok);
                }
            })
        })
        .collect();
    let mut bad = 0;
    for w in workers {
        bad += w.await.unwrap();
    }
    let done = issued.load(Ordering::Relaxed).min(TOTAL);
    let rate = done as f64 / started.elapsed().as_secs_f64();
    println!("ims-sim load: {done} AK/SK requests in {:?}: {rate:.0} requests/s", started.elapsed());
    assert_eq!(bad, 0);
    assert!(rate > 1000.0, "{rate:.0} requests/s");
}

// --- Identity (issue 22): OIDC federation, agencies, node metadata keys.

const IDENTITY: &str = include_str!("fixtures/scenarios/identity.yaml");
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const TEAM_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const TEAM_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const OTHER_ACCOUNT: &str = "cccccccccccccccccccccccccccccccc";
const TEAM_A_JOB: &str = "ff8080814dbd65d7014dbe0d84db0a01";
const TEAM_B_JOB: &str = "ff8080814dbd65d7014dbe0d84db0b01";
const OTHER_ACCOUNT_JOB: &str = "ff8080814dbd65d7014dbe0d84db0c01";

use imagejob_operator::sim::test_idp::{self, TestKey};

/// A ServiceAccount token of `namespace` for the scenario's provider.
fn sa_jwt(namespace: &str) -> String {
    test_idp::service_account_token(ISSUER, "iam-sim", namespace, "imagejobs", 600)
}

async fn exchange(sim: &RunningSim, idp: Option<&str>, jwt: &str, project: &str) -> reqwest::Response {
    let body = json!({"auth": {"id_token": {"id": jwt}, "scope": {"project": {"id": project}}}});
    let mut request = reqwest::Client::new()
        .post(sim.url("/v3.0/OS-AUTH/id-token/tokens"))
        .header("Content-Type", "application/json;charset=utf8")
        .body(body.to_string());
    if let Some(idp) = idp {
        request = request.header("X-Idp-Id", idp);
    }
    request.send().await.unwrap()
}

/// A refusal's status and flat IAM body `{"error_msg", "error_code"}`.
async fn flat_refusal(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    let body = json_of(response).await;
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["error_code", "error_msg"], "{body}");
    (status, body["error_code"].as_str().unwrap().into(), body["error_msg"].as_str().unwrap().into())
}

fn subject_token(response: &reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::CREATED);
    response.headers()["x-subject-token"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn federated_token_opens_its_projects_ims_apis_until_it_expires() {
    let sim = start(IDENTITY).await;
    let response = exchange(&sim, Some("k8s-test"), &sa_jwt("team-a"), TEAM_A).await;
    let token = subject_token(&response);
    let body = json_of(response).await;
    let t = &body["token"];
    assert_eq!(t["methods"], json!(["mapped"]));
    assert_eq!(t["project"]["id"], TEAM_A);
    assert_eq!(t["user"]["name"], "system:serviceaccount:team-a:imagejobs");
    let federation = &t["user"]["OS-FEDERATION"];
    assert_eq!(federation["identity_provider"]["id"], "k8s-test");
    assert_eq!(federation["protocol"]["id"], "oidc");
    assert_eq!(federation["groups"][0]["name"], "ims-team-a");
    let lifetime = t["expires_at"].as_str().unwrap().parse::<Timestamp>().unwrap().duration_since(Timestamp::now());
    assert!(lifetime <= SignedDuration::from_secs(3) && lifetime > SignedDuration::ZERO, "{lifetime:?}");

    assert_eq!(get_with_token(&sim, &job_path(TEAM_A, TEAM_A_JOB), &token).await.status(), StatusCode::OK);
    let progress = get_with_token(&sim, &progress_path(TEAM_A_JOB), &token).await;
    assert_eq!(progress.status(), StatusCode::OK);
    assert!(json_of(progress).await["entities"]["process_percent"].is_number());
    // Scoped to team-a: team-b's job stays closed.
    assert_eq!(get_with_token(&sim, &job_path(TEAM_B, TEAM_B_JOB), &token).await.status(), StatusCode::UNAUTHORIZED);
    // The second rule: team-b's account, scoped to its project by id; no user name in the rule.
    let team_b = exchange(&sim, Some("k8s-test"), &sa_jwt("team-b"), TEAM_B).await;
    let team_b_token = subject_token(&team_b);
    assert_eq!(json_of(team_b).await["token"]["user"]["name"], "FederationUser");
    assert_eq!(get_with_token(&sim, &job_path(TEAM_B, TEAM_B_JOB), &team_b_token).await.status(), StatusCode::OK);

    tokio::time::sleep(lifetime.unsigned_abs() + Duration::from_millis(100)).await;
    let expired = get_with_token(&sim, &job_path(TEAM_A, TEAM_A_JOB), &token).await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(expired).await["error_code"], "APIGW.0307");
    let iam = admin(&sim, "/admin/requests").await["iam"].clone();
    assert_eq!((iam["federation_requests"].as_u64(), iam["federation_tokens_issued"].as_u64()), (Some(2), Some(2)));
    assert_eq!((iam["federation_failures"].as_u64(), iam["token_requests"].as_u64()), (Some(0), Some(0)));
}

/// X-Idp-Id, JWT, project; then the status, code and a word of the message.
type RefusalCase<'a> = (Option<&'a str>, String, &'a str, StatusCode, &'a str, &'a str);

#[tokio::test]
async fn federation_refusals_have_iams_codes_and_say_why() {
    let sim = start(IDENTITY).await;
    let jwt = sa_jwt("team-a");
    let claims = |f: &dyn Fn(&mut Value)| {
        let mut c = test_idp::service_account_claims(ISSUER, "iam-sim", "team-a", "imagejobs", 600);
        f(&mut c);
        test_idp::sign(TestKey::Rsa, &c)
    };
    let cases: Vec<RefusalCase> = vec![
        (None, jwt.clone(), TEAM_A, StatusCode::BAD_REQUEST, "IAM.0011", "X-Idp-Id"),
        (Some("nope"), jwt.clone(), TEAM_A, StatusCode::NOT_FOUND, "IAM.0004", "nope"),
        (Some("k8s-test"), String::new(), TEAM_A, StatusCode::BAD_REQUEST, "IAM.0011", "id_token"),
        (Some("k8s-test"), jwt.clone(), "", StatusCode::BAD_REQUEST, "IAM.0011", "project scope"),
        (
            Some("k8s-test"),
            test_idp::sign_with(TestKey::Untrusted, test_idp::RSA_KID, &json!({"sub": "x"})),
            TEAM_A,
            StatusCode::UNAUTHORIZED,
            "IAM.0001",
            "signature",
        ),
        (
            Some("k8s-test"),
            claims(&|c| c["aud"] = json!(["kubernetes"])),
            TEAM_A,
            StatusCode::UNAUTHORIZED,
            "IAM.0001",
            "aud",
        ),
        (
            Some("k8s-test"),
            claims(&|c| c["iss"] = json!("https://other")),
            TEAM_A,
            StatusCode::UNAUTHORIZED,
            "IAM.0001",
            "iss",
        ),
        (Some("k8s-test"), claims(&|c| c["exp"] = json!(1)), TEAM_A, StatusCode::UNAUTHORIZED, "IAM.0001", "expired"),
        (Some("k8s-test"), jwt.clone(), TEAM_B, StatusCode::FORBIDDEN, "IAM.0003", "may not scope"),
        (Some("k8s-test"), sa_jwt("team-c"), TEAM_A, StatusCode::FORBIDDEN, "IAM.0003", "No conversion rule"),
    ];
    let n = cases.len() as u64;
    for (idp, jwt, project, status, code, why) in cases {
        let (got_status, got_code, message) = flat_refusal(exchange(&sim, idp, &jwt, project).await).await;
        assert_eq!((got_status, got_code.as_str()), (status, code), "{why}: {message}");
        assert!(message.contains(why), "{message:?} should say {why:?}");
    }
    // An ES256 token of the same provider passes.
    let es =
        test_idp::sign(TestKey::Ec, &test_idp::service_account_claims(ISSUER, "iam-sim", "team-a", "imagejobs", 60));
    subject_token(&exchange(&sim, Some("k8s-test"), &es, "eu-de_team-a").await);
    let iam = admin(&sim, "/admin/requests").await["iam"].clone();
    assert_eq!(iam["federation_requests"].as_u64(), Some(n + 1));
    assert_eq!((iam["federation_failures"].as_u64(), iam["federation_tokens_issued"].as_u64()), (Some(n), Some(1)));
}

fn assume_role_body(agency: &str, project: &str) -> Value {
    json!({"auth": {"identity": {"methods": ["assume_role"],
        "assume_role": {"domain_name": "other-account", "xrole_name": agency}},
        "scope": {"project": {"id": project}}}})
}

async fn assume_with_token(sim: &RunningSim, token: &str, body: &Value) -> reqwest::Response {
    let client = reqwest::Client::new().post(sim.url("/v3/auth/tokens")).header("X-Auth-Token", token);
    client.json(body).send().await.unwrap()
}

/// Signs a POST with its body the way the operator's client does.
fn signed_post(
    sim: &RunningSim,
    path: &str,
    ak: &str,
    sk: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    let request = reqwest::Client::new().post(sim.url(path)).header("Content-Type", "application/json");
    sign(request, "POST", path, (ak, sk), Timestamp::now(), extra, body).body(body.to_vec())
}

#[tokio::test]
async fn agencies_are_assumed_by_token_or_aksk_by_trusted_callers_only() {
    let sim = start(IDENTITY).await;
    let alice = token(&sim, "alice", "alice-password", TEAM_A).await;
    let response = assume_with_token(&sim, &alice, &assume_role_body("ims-reader", OTHER_ACCOUNT)).await;
    let agency_token = subject_token(&response);
    let t = json_of(response).await["token"].clone();
    assert_eq!(
        (t["methods"].clone(), t["user"]["name"].clone()),
        (json!(["assume_role"]), json!("other-account/ims-reader"))
    );
    assert_eq!(t["assumed_by"]["user"]["name"], "alice");
    let other = job_path(OTHER_ACCOUNT, OTHER_ACCOUNT_JOB);
    assert_eq!(get_with_token(&sim, &other, &agency_token).await.status(), StatusCode::OK);
    assert_eq!(get_with_token(&sim, &other, &alice).await.status(), StatusCode::UNAUTHORIZED);
    // Huawei's field name, with a federated token of a trusted ServiceAccount.
    let federated = subject_token(&exchange(&sim, Some("k8s-test"), &sa_jwt("team-a"), TEAM_A).await);
    let huawei = json!({"auth": {"identity": {"methods": ["assume_role"],
        "assume_role": {"domain_name": "other-account", "agency_name": "ims-reader"}},
        "scope": {"project": {"name": "eu-de_other-account"}}}});
    subject_token(&assume_with_token(&sim, &federated, &huawei).await);
    // AK/SK over the body; then the same body with a wrong secret.
    let body = assume_role_body("ims-reader", OTHER_ACCOUNT).to_string();
    let signed = signed_post(&sim, "/v3/auth/tokens", "CIAK", "ci-secret", body.as_bytes(), &[]);
    subject_token(&signed.send().await.unwrap());
    let bad = signed_post(&sim, "/v3/auth/tokens", "CIAK", "wrong", body.as_bytes(), &[]).send().await.unwrap();
    let (status, code, message) = flat_refusal(bad).await;
    assert_eq!((status, code.as_str()), (StatusCode::UNAUTHORIZED, "IAM.0001"), "{message}");

    let bob = token(&sim, "bob", "bob-password", TEAM_B).await;
    let refusals = [
        (
            assume_with_token(&sim, &bob, &assume_role_body("ims-reader", OTHER_ACCOUNT)).await,
            StatusCode::FORBIDDEN,
            "IAM.0003",
        ),
        (
            assume_with_token(&sim, &alice, &assume_role_body("ims-reader", TEAM_A)).await,
            StatusCode::FORBIDDEN,
            "IAM.0003",
        ),
        (
            assume_with_token(&sim, &alice, &assume_role_body("ims-admin", OTHER_ACCOUNT)).await,
            StatusCode::NOT_FOUND,
            "IAM.0004",
        ),
        (
            assume_with_token(&sim, "MIIbogus", &assume_role_body("ims-reader", OTHER_ACCOUNT)).await,
            StatusCode::UNAUTHORIZED,
            "IAM.0001",
        ),
        (
            assume_with_token(&sim, &alice, &json!({"auth": {"identity": {"methods": ["assume_role"]}}})).await,
            StatusCode::BAD_REQUEST,
            "IAM.0011",
        ),
    ];
    for (response, status, code) in refusals {
        let (got, got_code, message) = flat_refusal(response).await;
        assert_eq!((got, got_code.as_str()), (status, code), "{message}");
    }
    let iam = admin(&sim, "/admin/requests").await["iam"].clone();
    assert_eq!(
        (iam["agency_requests"].as_u64(), iam["agency_tokens_issued"].as_u64(), iam["agency_failures"].as_u64()),
        (Some(9), Some(3), Some(6))
    );
    assert_eq!(iam["token_requests"].as_u64(), Some(2), "password logins only");
}

async fn security_key(sim: &RunningSim) -> Value {
    let response = reqwest::get(sim.url("/openstack/latest/securitykey")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    json_of(response).await["credential"].clone()
}

/// A status-API GET signed with a metadata key pair.
async fn get_with_temporary_key(sim: &RunningSim, key: &Value, with_token: bool) -> reqwest::Response {
    let (ak, sk) = (key["access"].as_str().unwrap(), key["secret"].as_str().unwrap());
    let token = key["securitytoken"].as_str().unwrap();
    let extra: &[(&str, &str)] = if with_token { &[("X-Security-Token", token)] } else { &[] };
    signed_get(sim, &job_path(TEAM_A, TEAM_A_JOB), ak, sk, Timestamp::now(), extra).send().await.unwrap()
}

#[tokio::test]
async fn metadata_keys_rotate_overlap_and_expire() {
    let sim = start(IDENTITY).await;
    let session = reqwest::Client::new().put(sim.url("/meta-data/latest/api/token")).send().await.unwrap();
    assert_eq!(session.status(), StatusCode::NOT_FOUND, "no session tokens: SDKs fall back to the GET");
    let first = security_key(&sim).await;
    let expires_at: Timestamp = first["expires_at"].as_str().unwrap().parse().unwrap();
    let left = expires_at.duration_since(Timestamp::now());
    assert!(left > SignedDuration::from_secs(3) && left <= SignedDuration::from_secs(4), "{left:?}");
    assert_eq!(get_with_temporary_key(&sim, &first, true).await.status(), StatusCode::OK);
    let untokened = get_with_temporary_key(&sim, &first, false).await;
    assert_eq!(untokened.status(), StatusCode::UNAUTHORIZED);
    assert!(json_of(untokened).await["error_msg"].as_str().unwrap().contains("security token invalid"));
    // Only for the metadata's projects.
    let (ak, sk) = (first["access"].as_str().unwrap(), first["secret"].as_str().unwrap());
    let token = [("X-Security-Token", first["securitytoken"].as_str().unwrap())];
    let team_b =
        signed_get(&sim, &job_path(TEAM_B, TEAM_B_JOB), ak, sk, Timestamp::now(), &token).send().await.unwrap();
    assert_eq!(team_b.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(security_key(&sim).await, first, "more than half the lifetime left: the same pair");

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let second = security_key(&sim).await;
    assert_ne!(second["access"], first["access"]);
    assert_eq!(get_with_temporary_key(&sim, &first, true).await.status(), StatusCode::OK, "old and new overlap");
    assert_eq!(get_with_temporary_key(&sim, &second, true).await.status(), StatusCode::OK);

    tokio::time::sleep(expires_at.duration_since(Timestamp::now()).unsigned_abs() + Duration::from_millis(100)).await;
    let expired = get_with_temporary_key(&sim, &first, true).await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    let body = json_of(expired).await;
    assert_eq!(body["error_code"], "APIGW.0307", "{body}");
    assert!(body["error_msg"].as_str().unwrap().contains("temporary access key has expired"));
    assert_eq!(get_with_temporary_key(&sim, &second, true).await.status(), StatusCode::OK);
    let metadata = admin(&sim, "/admin/requests").await["metadata"].clone();
    assert_eq!(metadata, json!({"key_requests": 3, "keys_issued": 2}));
}

#[tokio::test]
async fn metadata_keys_assume_agencies_and_can_be_turned_off() {
    let sim = start(IDENTITY).await;
    let key = security_key(&sim).await;
    let body = assume_role_body("ims-reader", OTHER_ACCOUNT).to_string();
    let (ak, sk) = (key["access"].as_str().unwrap(), key["secret"].as_str().unwrap());
    let token = [("X-Security-Token", key["securitytoken"].as_str().unwrap())];
    let response = signed_post(&sim, "/v3/auth/tokens", ak, sk, body.as_bytes(), &token).send().await.unwrap();
    subject_token(&response);
    assert_eq!(json_of(response).await["token"]["assumed_by"]["user"]["name"], "node-agency");

    let off = start(&IDENTITY.replace("  key_lifetime: 4s\n", "  key_lifetime: 4s\n  served: false\n")).await;
    let response = reqwest::get(off.url("/openstack/latest/securitykey")).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
