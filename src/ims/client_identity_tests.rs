//! The client with identities that are not static keys: an ID token
//! exchanged at IAM, an agency on top of another identity, the node's keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::ims::ErrorKind;
use crate::ims::credentials::{Agency, AgencyDomain, IdToken, IdTokenSource};
use crate::ims::testing::{FakeCloud, FakeReply, SeenRequest};

const RUNNING: &str = r#"{"status":"RUNNING","job_id":"job1","job_type":"imsImportImageJob","entities":{}}"#;

/// An ID token source that counts how often it is asked.
struct Jwt(AtomicUsize);

impl IdTokenSource for Jwt {
    fn subject(&self) -> &str {
        "system:serviceaccount:team-a:imagejobs"
    }
    fn fetch(&self) -> futures::future::BoxFuture<'_, Result<Secret, ImsError>> {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move { Ok(Secret::new(format!("jwt-{n}"))) })
    }
}

fn id_token(jwt: &Arc<Jwt>) -> Credentials {
    Credentials::IdToken(IdToken { idp_id: "k8s-cluster".into(), source: jwt.clone() })
}

fn target(cloud: &FakeCloud) -> JobTarget {
    JobTarget { ims_endpoint: cloud.url(), iam_endpoint: cloud.url(), project_id: "proj".into(), job_id: "job1".into() }
}

fn header(seen: &SeenRequest, name: &str) -> Option<String> {
    seen.headers.get(name).map(|v| v.to_str().unwrap().to_owned())
}

fn body(seen: &SeenRequest) -> serde_json::Value {
    serde_json::from_slice(&seen.body).unwrap()
}

#[tokio::test]
async fn an_id_token_is_exchanged_once_per_token_lifetime() {
    let cloud = FakeCloud::start().await;
    cloud.set_ims_reply(FakeReply::json(200, RUNNING));
    let jwt = Arc::new(Jwt(AtomicUsize::new(0)));
    let client = ImsClient::new(Duration::from_secs(5));
    for _ in 0..3 {
        client.get_job(&target(&cloud), &id_token(&jwt)).await.unwrap();
    }
    assert_eq!((cloud.iam_calls(), jwt.0.load(Ordering::SeqCst), cloud.ims_calls()), (1, 1, 3));
    let seen = &cloud.iam_requests()[0];
    assert_eq!(seen.path, "/v3.0/OS-AUTH/id-token/tokens");
    assert_eq!(header(seen, "x-idp-id").as_deref(), Some("k8s-cluster"));
    let expected = serde_json::json!({"auth": {"id_token": {"id": "jwt-1"}, "scope": {"project": {"id": "proj"}}}});
    assert_eq!(body(seen), expected);
    assert_eq!(header(&cloud.last_ims_request(), "x-auth-token").as_deref(), Some("token-1"));
}

#[tokio::test]
async fn a_short_token_is_renewed_before_it_expires() {
    let cloud = FakeCloud::start().await;
    cloud.set_ims_reply(FakeReply::json(200, RUNNING));
    cloud.set_token_lifetime(Duration::from_millis(1000));
    let jwt = Arc::new(Jwt(AtomicUsize::new(0)));
    let client = ImsClient::new(Duration::from_secs(5));
    client.get_job(&target(&cloud), &id_token(&jwt)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(950)).await;
    client.get_job(&target(&cloud), &id_token(&jwt)).await.unwrap();
    // Renewed at 90 % of its lifetime: a new ID token, a new IAM token.
    assert_eq!((cloud.iam_calls(), jwt.0.load(Ordering::SeqCst)), (2, 2));
    assert_eq!(header(&cloud.last_ims_request(), "x-auth-token").as_deref(), Some("token-2"));
}

#[tokio::test]
async fn a_refused_exchange_fails_authentication_and_never_reaches_ims() {
    let cloud = FakeCloud::start().await;
    cloud.set_iam_reply(FakeReply::json(401, r#"{"error_msg":"The token is invalid.","error_code":"IAM.0001"}"#));
    let jwt = Arc::new(Jwt(AtomicUsize::new(0)));
    let err = ImsClient::new(Duration::from_secs(5)).get_job(&target(&cloud), &id_token(&jwt)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthenticationFailed);
    assert_eq!(err.code(), Some("IAM.0001"));
    assert!(!err.to_string().contains("jwt-1"), "{err}");
    assert_eq!(cloud.ims_calls(), 0);
    cloud.set_iam_reply(FakeReply::json(403, r#"{"error_msg":"Forbidden.","error_code":"IAM.0003"}"#));
    let err = ImsClient::new(Duration::from_secs(5)).get_job(&target(&cloud), &id_token(&jwt)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthenticationFailed, "IAM's 403 refuses the identity");
}

#[tokio::test]
async fn identities_get_tokens_of_their_own() {
    let cloud = FakeCloud::start().await;
    cloud.set_ims_reply(FakeReply::json(200, RUNNING));
    let (a, b) = (Arc::new(Jwt(AtomicUsize::new(0))), Arc::new(Jwt(AtomicUsize::new(0))));
    let client = ImsClient::new(Duration::from_secs(5));
    client.get_job(&target(&cloud), &id_token(&a)).await.unwrap();
    let other = Credentials::IdToken(IdToken { idp_id: "another-idp".into(), source: b.clone() });
    client.get_job(&target(&cloud), &other).await.unwrap();
    let mut t = target(&cloud);
    t.project_id = "proj2".into();
    client.get_job(&t, &id_token(&a)).await.unwrap();
    assert_eq!(cloud.iam_calls(), 3, "per identity and per project");
}

fn agency() -> Agency {
    Agency { name: "ims-reader".into(), domain: AgencyDomain::Name("other-account".into()) }
}

#[tokio::test]
async fn an_agency_is_assumed_with_the_base_token_and_cached() {
    let cloud = FakeCloud::start().await;
    cloud.set_ims_reply(FakeReply::json(200, RUNNING));
    let jwt = Arc::new(Jwt(AtomicUsize::new(0)));
    let creds = id_token(&jwt).with_agency(Some(agency()));
    let client = ImsClient::new(Duration::from_secs(5));
    client.get_job(&target(&cloud), &creds).await.unwrap();
    client.get_job(&target(&cloud), &creds).await.unwrap();
    let iam = cloud.iam_requests();
    assert_eq!(iam.len(), 2, "one base token, one agency token");
    assert_eq!(
        body(&iam[0]),
        serde_json::json!({"auth": {"id_token": {"id": "jwt-1"}}}),
        "the base token is the identity's own"
    );
    assert_eq!(iam[1].path, "/v3/auth/tokens");
    assert_eq!(header(&iam[1], "x-auth-token").as_deref(), Some("token-1"));
    let role = &body(&iam[1])["auth"];
    assert_eq!(role["identity"]["assume_role"]["xrole_name"], "ims-reader");
    assert_eq!(role["identity"]["assume_role"]["domain_name"], "other-account");
    assert_eq!(role["scope"]["project"]["id"], "proj");
    assert_eq!(header(&cloud.last_ims_request(), "x-auth-token").as_deref(), Some("token-2"));
    // Another agency on the same base: its own token, the base token reused.
    let other = id_token(&jwt).with_agency(Some(Agency { name: "other".into(), ..agency() }));
    client.get_job(&target(&cloud), &other).await.unwrap();
    assert_eq!(cloud.iam_calls(), 3);
}

#[tokio::test]
async fn an_agency_on_access_keys_is_signed() {
    let cloud = FakeCloud::start().await;
    cloud.set_ims_reply(FakeReply::json(200, RUNNING));
    let base = Credentials::AkSk { access_key: "AK".into(), secret_key: "SK".into(), security_token: None };
    ImsClient::new(Duration::from_secs(5)).get_job(&target(&cloud), &base.with_agency(Some(agency()))).await.unwrap();
    let iam = cloud.iam_requests();
    assert_eq!(iam.len(), 1);
    let auth = header(&iam[0], "authorization").unwrap();
    let parsed = signer::parse_authorization(&auth).unwrap();
    assert_eq!((parsed.access.as_str(), parsed.signed_headers.as_str()), ("AK", "content-type;x-sdk-date"));
    let date = header(&iam[0], "x-sdk-date").unwrap();
    let headers = [("content-type", "application/json;charset=utf8"), ("x-sdk-date", date.as_str())];
    let canonical = signer::canonical_request("POST", &iam[0].path, "nocatalog=true", &headers, &iam[0].body);
    assert_eq!(parsed.signature, signer::signature("SK", &date, &canonical));
}

fn keys_answer(n: usize, lifetime_s: i64) -> FakeReply {
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(lifetime_s);
    let body = serde_json::json!({"credential": {"access": format!("AK{n}"), "secret": format!("SK{n}"),
        "securitytoken": format!("T{n}"), "expires_at": expires.to_string()}});
    FakeReply::json(200, &body.to_string())
}

#[tokio::test]
async fn metadata_keys_sign_with_their_security_token_and_rotate() {
    let cloud = FakeCloud::start().await;
    cloud.set_ims_reply(FakeReply::json(200, RUNNING));
    cloud.set_metadata_handler(|n| keys_answer(n, 2));
    let creds = Credentials::Metadata(Arc::new(super::super::metadata::MetadataKeys::new(&cloud.url())));
    let client = ImsClient::new(Duration::from_secs(5));
    client.get_job(&target(&cloud), &creds).await.unwrap();
    client.get_job(&target(&cloud), &creds).await.unwrap();
    assert_eq!(cloud.metadata_calls(), 1);
    let seen = cloud.last_ims_request();
    assert_eq!(header(&seen, "x-security-token").as_deref(), Some("T1"));
    assert!(header(&seen, "authorization").unwrap().contains("Access=AK1"));
    // Keys of 2 s are renewed once 1 s (half their life) is left.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client.get_job(&target(&cloud), &creds).await.unwrap();
    assert_eq!(cloud.metadata_calls(), 2);
    assert_eq!(header(&cloud.last_ims_request(), "x-security-token").as_deref(), Some("T2"));
}
