//! The IMS client against the in-process simulator: both auth methods, the
//! failures a person meets first (wrong key, wrong password, unknown job).

use std::time::Duration;

use imagejob_operator::ims::{Credentials, ErrorKind, ImsClient, JobTarget, Secret};
use imagejob_operator::sim::{self, Scenario};

const PROJECT: &str = "0b0a1e4b2c2d4e8f9a0b1c2d3e4f5a6b";
const JOB: &str = "ff8080814dbd65d7014dbe0d84db0013";

fn target(sim: &sim::RunningSim, job: &str) -> JobTarget {
    JobTarget { ims_endpoint: sim.url(""), iam_endpoint: sim.url(""), project_id: PROJECT.into(), job_id: job.into() }
}

fn aksk(access: &str, secret: &str, token: Option<&str>) -> Credentials {
    Credentials::AkSk { access_key: access.into(), secret_key: secret.into(), security_token: token.map(Secret::from) }
}

fn password(pw: &str) -> Credentials {
    Credentials::Password { username: "demo".into(), password: pw.into(), domain_name: "demo-domain".into() }
}

fn client() -> ImsClient {
    ImsClient::new(Duration::from_secs(10))
}

#[tokio::test]
async fn aksk_signature_is_accepted_by_the_simulator() {
    let sim = sim::spawn(Scenario::demo()).await.unwrap();
    let job = client().get_job(&target(&sim, JOB), &aksk("DEMOACCESSKEY", "demo-secret-key", None)).await.unwrap();
    assert_eq!(job.job_id.as_deref(), Some(JOB));
    assert!(job.status.is_some());
}

#[tokio::test]
async fn temporary_keys_send_their_security_token() {
    let yaml = format!(
        "access_keys:\n  - {{access: TEMPAK, secret: temp-sk, security_token: temp-token}}\n\
         projects:\n  - {{id: {PROJECT}}}\n\
         jobs:\n  - project_id: {PROJECT}\n    job_id: {JOB}\n    job_type: imsImportImageJob\n    phases:\n      - {{after: 0s, status: RUNNING}}\n"
    );
    let sim = sim::spawn(Scenario::parse(&yaml).unwrap()).await.unwrap();
    let t = target(&sim, JOB);
    client().get_job(&t, &aksk("TEMPAK", "temp-sk", Some("temp-token"))).await.unwrap();
    let err = client().get_job(&t, &aksk("TEMPAK", "temp-sk", None)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthenticationFailed, "{err}");
}

#[tokio::test]
async fn password_token_is_accepted_by_the_simulator() {
    let sim = sim::spawn(Scenario::demo()).await.unwrap();
    let client = client();
    for _ in 0..2 {
        let job = client.get_job(&target(&sim, JOB), &password("demo-password")).await.unwrap();
        assert_eq!(job.job_id.as_deref(), Some(JOB));
    }
    assert_eq!(client.token_cache().len(), 1);
}

/// IAM on a host of its own, as in the cloud: the token request goes to
/// `iam_endpoint` (the IMS listener answers IAM paths with the gateway's
/// 404), and the token works on IMS.
#[tokio::test]
async fn password_token_comes_from_the_iam_endpoint_not_the_ims_one() {
    let sim = sim::spawn_split(Scenario::demo()).await.unwrap();
    assert_ne!(sim.url(""), sim.iam_url(""));
    let t = JobTarget { iam_endpoint: sim.iam_url(""), ..target(&sim, JOB) };
    let job = client().get_job(&t, &password("demo-password")).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(job.job_id.as_deref(), Some(JOB));
    // The IMS listener knows no IAM: a client asking it for a token fails.
    let wrong = JobTarget { iam_endpoint: sim.url(""), ..target(&sim, JOB) };
    let err = client().get_job(&wrong, &password("demo-password")).await.unwrap_err();
    assert_eq!(err.code(), Some("APIGW.0101"), "{err}");
}

#[tokio::test]
async fn wrong_secret_is_authentication_failed() {
    let sim = sim::spawn(Scenario::demo()).await.unwrap();
    let err = client().get_job(&target(&sim, JOB), &aksk("DEMOACCESSKEY", "wrong", None)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthenticationFailed, "{err}");
    assert_eq!(err.code(), Some("APIGW.0301"));
    assert!(err.request_id().is_some(), "{err}");
}

#[tokio::test]
async fn wrong_password_is_authentication_failed() {
    let sim = sim::spawn(Scenario::demo()).await.unwrap();
    let err = client().get_job(&target(&sim, JOB), &password("nope")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthenticationFailed, "{err}");
    assert!(!err.to_string().contains("nope"), "{err}");
}

#[tokio::test]
async fn unknown_job_is_job_not_found() {
    let sim = sim::spawn(Scenario::demo()).await.unwrap();
    let err = client()
        .get_job(&target(&sim, "no-such-job"), &aksk("DEMOACCESSKEY", "demo-secret-key", None))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::JobNotFound, "{err}");
}

fn scenario(settings: &str, faults: &str) -> Scenario {
    let yaml = format!(
        "settings: {{{settings}}}\n\
         projects:\n  - {{id: {PROJECT}, name: eu-de_demo}}\n\
         users:\n  - {{name: demo, password: demo-password, domain: demo-domain}}\n\
         access_keys:\n  - {{access: DEMOACCESSKEY, secret: demo-secret-key}}\n\
         jobs:\n  - project_id: {PROJECT}\n    job_id: {JOB}\n    job_type: imsCreateImageByInstance\n\
         \x20   phases:\n      - {{after: 0s, status: RUNNING, progress: 0.5}}\n\
         \x20   faults: {faults}\n"
    );
    Scenario::parse(&yaml).unwrap()
}

async fn iam_token_requests(sim: &sim::RunningSim) -> u64 {
    let counters: serde_json::Value = reqwest::get(sim.url("/admin/requests")).await.unwrap().json().await.unwrap();
    counters["iam"]["token_requests"].as_u64().unwrap()
}

#[tokio::test]
async fn revoked_token_is_replaced_once() {
    let sim = sim::spawn(scenario("", "[]")).await.unwrap();
    let (c, t, creds) = (client(), target(&sim, JOB), password("demo-password"));
    c.get_job(&t, &creds).await.unwrap();
    c.get_job(&t, &creds).await.unwrap();
    assert_eq!(iam_token_requests(&sim).await, 1, "the token is cached");
    reqwest::Client::new().post(sim.url("/admin/tokens/revoke")).send().await.unwrap();
    c.get_job(&t, &creds).await.expect("a 401 after revocation gets one new token");
    assert_eq!(iam_token_requests(&sim).await, 2);
}

#[tokio::test]
async fn expired_token_is_renewed_before_use() {
    let sim = sim::spawn(scenario("token_lifetime: 2s", "[]")).await.unwrap();
    let (c, t, creds) = (client(), target(&sim, JOB), password("demo-password"));
    c.get_job(&t, &creds).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    c.get_job(&t, &creds).await.unwrap();
    assert_eq!(iam_token_requests(&sim).await, 2);
    let jobs: serde_json::Value = reqwest::get(sim.url("/admin/requests")).await.unwrap().json().await.unwrap();
    assert_eq!(jobs["total"]["by_status"]["401"], serde_json::Value::Null, "no request went out with an expired token");
}

#[tokio::test]
async fn throttling_server_errors_and_garbage_are_transient_with_details() {
    let faults = "[{fault: throttle, requests: 1, retry_after: 3}, \
                   {fault: error, requests: 2, status: 503, body: flat, code: APIGW.0201, message: busy}, \
                   {fault: error, requests: 3, status: 500, body: nested, code: IMG.0023, message: query failed}, \
                   {fault: error, requests: 4, status: 502, body: html}, \
                   {fault: malformed, requests: 5}]";
    let sim = sim::spawn(scenario("", faults)).await.unwrap();
    let (c, t, creds) = (client(), target(&sim, JOB), aksk("DEMOACCESSKEY", "demo-secret-key", None));

    let throttled = c.get_job(&t, &creds).await.unwrap_err();
    assert_eq!(
        (throttled.kind(), throttled.status(), throttled.code()),
        (ErrorKind::Transient, Some(429), Some("APIG.0308"))
    );
    assert_eq!(throttled.retry_after(), Some(Duration::from_secs(3)));
    let flat = c.get_job(&t, &creds).await.unwrap_err();
    assert_eq!(
        (flat.kind(), flat.status(), flat.code(), flat.message()),
        (ErrorKind::Transient, Some(503), Some("APIGW.0201"), Some("busy"))
    );
    assert!(flat.request_id().is_some(), "the gateway's request id is kept");
    let nested = c.get_job(&t, &creds).await.unwrap_err();
    assert_eq!((nested.status(), nested.code()), (Some(500), Some("IMG.0023")));
    let html = c.get_job(&t, &creds).await.unwrap_err();
    assert_eq!((html.kind(), html.status()), (ErrorKind::Transient, Some(502)));
    let garbage = c.get_job(&t, &creds).await.unwrap_err();
    assert_eq!((garbage.kind(), garbage.status()), (ErrorKind::Transient, None));
    let job = c.get_job(&t, &creds).await.expect("the sixth request is answered");
    assert_eq!(job.progress, Some(50));
}
