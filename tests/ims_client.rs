//! The IMS client against the in-process simulator: both auth methods, the
//! failures a person meets first (wrong key, wrong password, unknown job).

use std::time::Duration;

use imagejob_operator::ims::{Credentials, ErrorKind, ImsClient, JobTarget, Secret};
use imagejob_operator::sim::{self, Scenario};

const PROJECT: &str = "0b0a1e4b2c2d4e8f9a0b1c2d3e4f5a6b";
const JOB: &str = "ff8080814dbd65d7014dbe0d84db0013";

fn target(sim: &sim::RunningSim, job: &str) -> JobTarget {
    JobTarget {
        ims_endpoint: sim.url(""),
        iam_endpoint: sim.url(""),
        project_id: PROJECT.into(),
        job_id: job.into(),
    }
}

fn aksk(access: &str, secret: &str, token: Option<&str>) -> Credentials {
    Credentials::AkSk {
        access_key: access.into(),
        secret_key: secret.into(),
        security_token: token.map(Secret::from),
    }
}

fn password(pw: &str) -> Credentials {
    Credentials::Password {
        username: "demo".into(),
        password: pw.into(),
        domain_name: "demo-domain".into(),
    }
}

fn client() -> ImsClient {
    ImsClient::new(Duration::from_secs(10))
}

#[tokio::test]
async fn aksk_signature_is_accepted_by_the_simulator() {
    let sim = sim::spawn(Scenario::demo()).await.unwrap();
    let job = client()
        .get_job(&target(&sim, JOB), &aksk("DEMOACCESSKEY", "demo-secret-key", None))
        .await
        .unwrap();
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

#[tokio::test]
async fn wrong_secret_is_authentication_failed() {
    let sim = sim::spawn(Scenario::demo()).await.unwrap();
    let err = client()
        .get_job(&target(&sim, JOB), &aksk("DEMOACCESSKEY", "wrong", None))
        .await
        .unwrap_err();
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
