//! The IMS HTTP client: one GET of a job, signed with AK/SK or sent with an
//! IAM token, from the status or the progress API.
//!
//! The client makes exactly one IMS request per call, plus at most one
//! token refresh after IMS refused a token (401, or 400 IMG.0030) with
//! password credentials, and in `auto` mode one status-API request when an
//! endpoint turns out to have no progress API (then remembered for an
//! hour). It never retries transient errors: the controller owns backoff.
//! A refusal with AK/SK is never retried either, as the gateway locks an AK
//! after five signature failures in a row.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use reqwest::Url;

use super::auth::{TokenCache, TokenKey};
use super::ca::CaBundle;
use super::credentials::{Credentials, Secret};
use super::error::{API_NOT_FOUND, ImsError, Service};
use super::model::Job;
use super::signer;
use super::target::JobTarget;
use super::transport::{HttpResponse, MAX_BODY_BYTES, header_value, send, url_with_path};

const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `auto` keeps to the status API on an endpoint without the
/// progress API before asking the progress API again.
const NO_PROGRESS_API_RECHECK: Duration = Duration::from_secs(3600);

/// Which IMS API answers a poll (`--ims-job-api`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum JobApi {
    /// The progress API, or the status API where the progress API is missing.
    #[default]
    Auto,
    /// `GET /v1/{project_id}/jobs/{job_id}`: no progress in today's answers.
    Status,
    /// `GET /v1/cloudimages/job/{job_id}`: the job plus its progress.
    Progress,
}

impl JobApi {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Status => "status",
            Self::Progress => "progress",
        }
    }
}

/// The two job APIs, as one poll sends them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    Status,
    Progress,
}

/// What the controller needs from the cloud; a fake can stand in for tests.
pub trait JobSource: Send + Sync + 'static {
    fn get_job(
        &self,
        target: &JobTarget,
        creds: &Credentials,
    ) -> impl std::future::Future<Output = Result<Job, ImsError>> + Send;
}

/// One connection pool and one token cache for all jobs. Cheap to clone.
#[derive(Clone)]
pub struct ImsClient {
    http: reqwest::Client,
    tokens: Arc<TokenCache>,
    job_api: JobApi,
    /// `auto`: IMS endpoints found without the progress API, and when.
    no_progress_api: Arc<DashMap<String, Instant>>,
}

impl ImsClient {
    /// `timeout` bounds each HTTP request, body included.
    ///
    /// # Panics
    /// Only if the TLS backend cannot start, which `try_new` reports instead.
    pub fn new(timeout: Duration) -> Self {
        Self::try_new(timeout).expect("the HTTP client (rustls) cannot be built")
    }

    pub fn try_new(timeout: Duration) -> Result<Self, ImsError> {
        Self::try_with_ca(timeout, None)
    }

    /// As `try_new`, trusting `ca`'s certificates as well as the built-in
    /// roots (`--ca-file`).
    pub fn try_with_ca(timeout: Duration, ca: Option<&CaBundle>) -> Result<Self, ImsError> {
        let mut builder = reqwest::Client::builder();
        for cert in ca.map(CaBundle::certificates).unwrap_or_default() {
            builder = builder.add_root_certificate(cert.clone());
        }
        let http = builder
            .use_rustls_tls()
            .user_agent(concat!("imagejob-operator/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
            .pool_idle_timeout(Duration::from_secs(90))
            // Never follow a redirect: credentials go only to configured hosts.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ImsError::InvalidRequest { detail: format!("HTTP client: {e}") })?;
        Ok(ImsClient {
            http,
            tokens: Arc::new(TokenCache::new()),
            job_api: JobApi::default(),
            no_progress_api: Arc::new(DashMap::new()),
        })
    }

    /// Polls through `api` (default `auto`).
    pub fn with_job_api(mut self, api: JobApi) -> Self {
        self.job_api = api;
        self
    }

    pub fn token_cache(&self) -> &TokenCache {
        &self.tokens
    }

    /// One poll of the job, from the API `--ims-job-api` chose.
    pub async fn get_job(&self, target: &JobTarget, creds: &Credentials) -> Result<Job, ImsError> {
        if target.project_id.trim().is_empty() || target.job_id.trim().is_empty() {
            return Err(ImsError::InvalidRequest { detail: "project ID and job ID must not be empty".into() });
        }
        let api = self.api_for(&target.ims_endpoint);
        let answer = self.query(api, target, creds).await?;
        if self.job_api == JobApi::Auto && api == Api::Progress && progress_api_missing(&answer) {
            return self.fall_back_to_status_api(target, creds).await;
        }
        job_from(answer)
    }

    fn api_for(&self, ims_endpoint: &str) -> Api {
        match self.job_api {
            JobApi::Status => Api::Status,
            JobApi::Progress => Api::Progress,
            JobApi::Auto => match self.no_progress_api.get(ims_endpoint).map(|since| since.elapsed()) {
                Some(age) if age < NO_PROGRESS_API_RECHECK => Api::Status,
                _ => Api::Progress,
            },
        }
    }

    /// The endpoint has no progress API: this poll asks the status API, and
    /// so do the next ones for an hour, once the status API knows the job
    /// (a gateway 404 for an unknown job must not switch every job over).
    async fn fall_back_to_status_api(&self, target: &JobTarget, creds: &Credentials) -> Result<Job, ImsError> {
        let job = job_from(self.query(Api::Status, target, creds).await?)?;
        if self.no_progress_api.insert(target.ims_endpoint.clone(), Instant::now()).is_none() {
            tracing::info!(
                endpoint = %target.ims_endpoint,
                "IMS has no progress API here; polling the status API (answers may carry no progress)"
            );
        }
        Ok(job)
    }

    async fn query(&self, api: Api, target: &JobTarget, creds: &Credentials) -> Result<HttpResponse, ImsError> {
        let url = match api {
            Api::Status => url_with_path(&target.ims_endpoint, &["v1", &target.project_id, "jobs", &target.job_id])?,
            Api::Progress => url_with_path(&target.ims_endpoint, &["v1", "cloudimages", "job", &target.job_id])?,
        };
        let answer = match creds {
            Credentials::AkSk { access_key, secret_key, security_token } => {
                let request =
                    self.signed_get(&url, &target.project_id, access_key, secret_key, security_token.as_ref())?;
                send(Service::Ims, "GET", &url, request).await?
            }
            Credentials::Metadata(keys) => {
                let k = keys.keys(&self.http).await?;
                let request =
                    self.signed_get(&url, &target.project_id, &k.access_key, &k.secret_key, Some(&k.security_token))?;
                send(Service::Ims, "GET", &url, request).await?
            }
            _ => {
                let key = TokenKey::new(&target.iam_endpoint, &target.project_id, creds)
                    .expect("token credentials have a token key");
                self.get_with_token(&url, &key, creds).await?
            }
        };
        Ok(answer)
    }

    /// A token may be revoked before it expires (password or permission
    /// change), so one refusal (401, or 400 IMG.0030) earns one fresh token;
    /// a second is final.
    async fn get_with_token(&self, url: &Url, key: &TokenKey, creds: &Credentials) -> Result<HttpResponse, ImsError> {
        let token = self.tokens.token(&self.http, key, creds).await?;
        let answer = send(Service::Ims, "GET", url, self.token_get(url, &token)?).await?;
        if !token_refused(&answer) {
            return Ok(answer);
        }
        tracing::debug!(path = url.path(), "IMS rejected the cached token; fetching a new one once");
        self.tokens.invalidate_if(key, &token).await;
        let token = self.tokens.token(&self.http, key, creds).await?;
        send(Service::Ims, "GET", url, self.token_get(url, &token)?).await
    }

    fn token_get(&self, url: &Url, token: &Secret) -> Result<reqwest::RequestBuilder, ImsError> {
        Ok(self.http.get(url.clone()).header("X-Auth-Token", header_value(token.expose(), "token")?))
    }

    /// Signs as huaweicloud-sdk-go-v3 does: every header it sets before
    /// signing is signed, which for this GET is `X-Sdk-Date`, `X-Project-Id`
    /// and, for temporary keys, `X-Security-Token` (the SDK adds that
    /// header before `signer.Sign`, so it ends up signed). `Host` is not
    /// signed: the SDK signs it only when the caller sets it explicitly.
    fn signed_get(
        &self,
        url: &Url,
        project_id: &str,
        access_key: &str,
        secret_key: &Secret,
        security_token: Option<&Secret>,
    ) -> Result<reqwest::RequestBuilder, ImsError> {
        let date = signer::sdk_date(jiff::Timestamp::now());
        let mut headers: Vec<(&str, &str)> = vec![(signer::HEADER_SDK_DATE, &date), ("X-Project-Id", project_id)];
        if let Some(token) = security_token {
            headers.push(("X-Security-Token", token.expose()));
        }
        let canonical = signer::canonical_request("GET", url.path(), url.query().unwrap_or(""), &headers, b"");
        let signature = signer::signature(secret_key.expose(), &date, &canonical);
        let authorization =
            signer::authorization_header(access_key, &signer::signed_header_names(&headers), &signature);
        let mut request =
            self.http.get(url.clone()).header("Authorization", header_value(&authorization, "access key")?);
        for (name, value) in headers {
            request = request.header(name, header_value(value, name)?);
        }
        Ok(request)
    }
}

impl JobSource for ImsClient {
    fn get_job(
        &self,
        target: &JobTarget,
        creds: &Credentials,
    ) -> impl std::future::Future<Output = Result<Job, ImsError>> + Send {
        ImsClient::get_job(self, target, creds)
    }
}

fn error_of(answer: &HttpResponse) -> Option<ImsError> {
    (!(200..300).contains(&answer.status))
        .then(|| ImsError::from_response(Service::Ims, answer.status, &answer.headers, &answer.body))
}

fn token_refused(answer: &HttpResponse) -> bool {
    error_of(answer).is_some_and(|e| e.rejects_token())
}

/// A 404 that names no IMS code (the gateway's "API not found", or a bare
/// 404 of a proxy) says the path is unknown, not the job.
fn progress_api_missing(answer: &HttpResponse) -> bool {
    answer.status == 404 && error_of(answer).is_some_and(|e| e.code().is_none_or(|c| c == API_NOT_FOUND))
}

fn job_from(answer: HttpResponse) -> Result<Job, ImsError> {
    if let Some(err) = error_of(&answer) {
        return Err(err);
    }
    if answer.truncated {
        return Err(ImsError::InvalidBody {
            service: Service::Ims,
            detail: format!("answer larger than {MAX_BODY_BYTES} bytes"),
            request_id: answer.request_id(),
        });
    }
    Job::parse(&answer.body).map_err(|e| ImsError::InvalidBody {
        service: Service::Ims,
        detail: e.to_string(),
        request_id: answer.request_id(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ims::ErrorKind;
    use crate::ims::model::JobStatus;
    use crate::ims::target::resolve_endpoint;
    use crate::ims::testing::{FakeCloud, FakeReply};

    const RUNNING: &str =
        r#"{"status":"RUNNING","job_id":"job1","job_type":"imsImportImageJob","entities":{"process_percent":0.5}}"#;

    fn aksk(token: Option<&str>) -> Credentials {
        Credentials::AkSk { access_key: "AK".into(), secret_key: "SK".into(), security_token: token.map(Secret::from) }
    }

    fn password() -> Credentials {
        Credentials::Password { username: "bob".into(), password: "pw".into(), domain_name: "dom".into() }
    }

    fn target(cloud: &FakeCloud) -> JobTarget {
        JobTarget {
            ims_endpoint: cloud.url(),
            iam_endpoint: cloud.url(),
            project_id: "proj".into(),
            job_id: "job1".into(),
        }
    }

    fn client() -> ImsClient {
        ImsClient::new(Duration::from_secs(5))
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            resolve_endpoint("https://ims.{region}.otc.t-systems.com", "eu-nl"),
            "https://ims.eu-nl.otc.t-systems.com"
        );
        let url = url_with_path("http://127.0.0.1:9/prefix/", &["v1", "p 1", "jobs", "a/b"]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9/prefix/v1/p%201/jobs/a%2Fb");
        assert_eq!(url_with_path("https://ims.example", &["v1"]).unwrap().as_str(), "https://ims.example/v1");
        for bad in ["ims.example", "ftp://x", "https://u:p@x", "https://x/?a=b", "https://ims.{region}.x"] {
            let err = url_with_path(bad, &["v1"]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::BadRequest, "{bad}");
            assert!(!err.to_string().contains(":p@"), "{err}");
        }
    }

    #[tokio::test]
    async fn aksk_request_is_signed_like_the_sdk() {
        let cloud = FakeCloud::start().await;
        cloud.set_ims_reply(FakeReply::json(200, RUNNING));
        let job = client().get_job(&target(&cloud), &aksk(Some("temp-token"))).await.unwrap();
        assert_eq!(job.status, Some(JobStatus::Running));
        assert_eq!(job.progress, Some(50));
        let seen = cloud.last_ims_request();
        // The progress API has no project in its path: X-Project-Id, signed, names it.
        assert_eq!(seen.path, "/v1/cloudimages/job/job1");
        let h = |n: &str| seen.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(h("x-project-id").as_deref(), Some("proj"));
        assert_eq!(h("x-security-token").as_deref(), Some("temp-token"));
        assert!(h("user-agent").unwrap().starts_with("imagejob-operator/"));
        assert_eq!(h("x-auth-token"), None);
        let signer::Authorization { access, signed_headers: signed, signature, .. } =
            signer::parse_authorization(&h("authorization").unwrap()).unwrap();
        assert_eq!(access, "AK");
        assert_eq!(signed, "x-project-id;x-sdk-date;x-security-token");
        let date = h("x-sdk-date").unwrap();
        let age = jiff::Timestamp::now().duration_since(signer::parse_sdk_date(&date).unwrap());
        assert!(age.as_secs().abs() < 60);
        let headers: Vec<(String, String)> = signed.split(';').map(|n| (n.to_owned(), h(n).unwrap())).collect();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let canonical = signer::canonical_request("GET", &seen.path, "", &headers, b"");
        assert_eq!(signature, signer::signature("SK", &date, &canonical));
    }

    #[tokio::test]
    async fn aksk_401_is_never_retried() {
        let cloud = FakeCloud::start().await;
        cloud.set_ims_reply(FakeReply::json(401, r#"{"error_msg":"Incorrect IAM authentication information: verify aksk signature fail","error_code":"APIGW.0301","request_id":"r1"}"#));
        let err = client().get_job(&target(&cloud), &aksk(None)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AuthenticationFailed);
        assert_eq!(err.request_id(), Some("r1"));
        assert_eq!(cloud.ims_calls(), 1);
        assert_eq!(cloud.iam_calls(), 0);
        assert!(!err.to_string().contains("SK"), "{err}");
    }

    #[tokio::test]
    async fn password_uses_a_cached_token() {
        let cloud = FakeCloud::start().await;
        cloud.set_ims_reply(FakeReply::json(200, RUNNING));
        let client = client();
        for _ in 0..3 {
            client.get_job(&target(&cloud), &password()).await.unwrap();
        }
        assert_eq!(cloud.iam_calls(), 1);
        assert_eq!(cloud.ims_calls(), 3);
        let seen = cloud.last_ims_request();
        assert_eq!(seen.headers.get("x-auth-token").unwrap(), "token-1");
        assert!(seen.headers.get("authorization").is_none());
    }

    #[tokio::test]
    async fn password_401_refreshes_the_token_exactly_once() {
        let cloud = FakeCloud::start().await;
        // The first token is "revoked"; the second works.
        cloud.set_ims_handler(|req| {
            if req.headers.get("x-auth-token").is_some_and(|t| t == "token-1") {
                FakeReply::json(401, r#"{"error":{"code":"IMG.0030","message":"The project ID or token is invalid"}}"#)
            } else {
                FakeReply::json(200, RUNNING)
            }
        });
        let job = client().get_job(&target(&cloud), &password()).await.unwrap();
        assert_eq!(job.status, Some(JobStatus::Running));
        assert_eq!((cloud.iam_calls(), cloud.ims_calls()), (2, 2));
    }

    #[tokio::test]
    async fn password_400_img0030_refreshes_the_token_once() {
        let cloud = FakeCloud::start().await;
        cloud.set_ims_handler(|req| {
            if req.headers.get("x-auth-token").is_some_and(|t| t == "token-1") {
                FakeReply::json(400, TOKEN_INVALID_BODY)
            } else {
                FakeReply::json(200, RUNNING)
            }
        });
        let client = client();
        assert!(client.get_job(&target(&cloud), &password()).await.is_ok());
        assert!(client.get_job(&target(&cloud), &password()).await.is_ok());
        assert_eq!((cloud.iam_calls(), cloud.ims_calls()), (2, 3), "one new token, kept for the next poll");

        cloud.set_ims_reply(FakeReply::json(400, TOKEN_INVALID_BODY));
        let err = client.get_job(&target(&cloud), &password()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AuthenticationFailed);
        assert_eq!((cloud.iam_calls(), cloud.ims_calls()), (3, 5), "one more token, then the refusal is final");
    }

    #[tokio::test]
    async fn aksk_img0030_is_not_retried() {
        let cloud = FakeCloud::start().await;
        cloud.set_ims_reply(FakeReply::json(400, TOKEN_INVALID_BODY));
        let err = client().get_job(&target(&cloud), &aksk(None)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AuthenticationFailed);
        assert_eq!((cloud.iam_calls(), cloud.ims_calls()), (0, 1));
    }

    const TOKEN_INVALID_BODY: &str =
        r#"{"error":{"code":"IMG.0030","message":"The project ID and token in the request are invalid."}}"#;
    const NO_SUCH_API: &str = r#"{"error_code":"APIGW.0101","error_msg":"The API does not exist or has not been published in the environment","request_id":"r"}"#;

    /// A cloud whose gateway has no progress API; the status API answers `status_api`.
    fn without_progress_api(cloud: &FakeCloud, status_api: FakeReply) {
        cloud.set_ims_handler(move |req| {
            if req.path.starts_with("/v1/cloudimages/") {
                FakeReply::json(404, NO_SUCH_API)
            } else {
                status_api.clone()
            }
        });
    }

    #[tokio::test]
    async fn job_api_modes_choose_the_path() {
        let cloud = FakeCloud::start().await;
        cloud.set_ims_reply(FakeReply::json(200, RUNNING));
        for (api, path) in [
            (JobApi::Auto, "/v1/cloudimages/job/job1"),
            (JobApi::Progress, "/v1/cloudimages/job/job1"),
            (JobApi::Status, "/v1/proj/jobs/job1"),
        ] {
            let client = client().with_job_api(api);
            for creds in [aksk(None), password()] {
                client.get_job(&target(&cloud), &creds).await.unwrap();
                assert_eq!(cloud.last_ims_request().path, path, "{api:?}");
            }
        }
        assert_eq!(cloud.ims_calls(), 6, "one request per poll");
    }

    #[tokio::test]
    async fn auto_falls_back_to_the_status_api_once_per_endpoint() {
        let cloud = FakeCloud::start().await;
        without_progress_api(&cloud, FakeReply::json(200, RUNNING));
        let client = client();
        let job = client.get_job(&target(&cloud), &aksk(None)).await.unwrap();
        assert_eq!(job.status, Some(JobStatus::Running));
        assert_eq!(cloud.ims_calls(), 2, "the progress API, then the status API");
        for _ in 0..3 {
            client.get_job(&target(&cloud), &password()).await.unwrap();
            assert_eq!(cloud.last_ims_request().path, "/v1/proj/jobs/job1");
        }
        assert_eq!(cloud.ims_calls(), 5, "then one request per poll");
        // A client told to use the progress API reports the missing API.
        let err = client.clone().with_job_api(JobApi::Progress).get_job(&target(&cloud), &aksk(None)).await;
        assert_eq!(err.unwrap_err().code(), Some("APIGW.0101"));
    }

    #[tokio::test]
    async fn auto_learns_nothing_from_an_unknown_job() {
        let cloud = FakeCloud::start().await;
        without_progress_api(&cloud, FakeReply::json(404, r#"{"error":{"code":"IMG.0027","message":"no job"}}"#));
        let client = client();
        for _ in 0..2 {
            let err = client.get_job(&target(&cloud), &aksk(None)).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::JobNotFound);
            assert_eq!(cloud.last_ims_request().path, "/v1/proj/jobs/job1");
        }
        assert_eq!(cloud.ims_calls(), 4, "each poll asks the progress API first again");
        // A job IMS knows on the progress API is never asked twice.
        cloud.set_ims_reply(FakeReply::json(404, r#"{"error":{"code":"IMG.0027","message":"no job"}}"#));
        let err = client.get_job(&target(&cloud), &aksk(None)).await.unwrap_err();
        assert_eq!((err.kind(), cloud.ims_calls()), (ErrorKind::JobNotFound, 5));
    }

    #[tokio::test]
    async fn password_second_401_is_authentication_failed() {
        let cloud = FakeCloud::start().await;
        cloud.set_ims_reply(FakeReply::json(
            401,
            r#"{"error":{"code":"IMG.0030","message":"The project ID or token is invalid"}}"#,
        ));
        let err = client().get_job(&target(&cloud), &password()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AuthenticationFailed);
        assert_eq!(err.code(), Some("IMG.0030"));
        assert_eq!((cloud.iam_calls(), cloud.ims_calls()), (2, 2));
    }

    #[tokio::test]
    async fn iam_rejection_is_authentication_failed_and_ims_is_not_called() {
        let cloud = FakeCloud::start().await;
        cloud.set_iam_reply(FakeReply::json(
            401,
            r#"{"error":{"code":401,"message":"The username or password is wrong.","title":"Unauthorized"}}"#,
        ));
        let err = client().get_job(&target(&cloud), &password()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AuthenticationFailed);
        assert!(err.to_string().starts_with("IAM token request failed: HTTP 401"), "{err}");
        assert!(!err.to_string().contains("pw"), "{err}");
        assert_eq!(cloud.ims_calls(), 0);
    }

    #[tokio::test]
    async fn malformed_200_is_transient() {
        let cloud = FakeCloud::start().await;
        for body in ["<html>oops</html>", r#"{"status":"PAUSED"}"#, ""] {
            cloud.set_ims_reply(FakeReply::json(200, body).with_header("x-request-id", "rid"));
            let err = client().get_job(&target(&cloud), &aksk(None)).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Transient, "{body:?}");
            assert_eq!(err.request_id(), Some("rid"));
        }
        assert_eq!(cloud.ims_calls(), 3);
    }

    #[tokio::test]
    async fn throttled_429_with_retry_after_is_transient_and_not_retried() {
        let cloud = FakeCloud::start().await;
        cloud.set_ims_reply(
            FakeReply::json(429, r#"{"error_code":"APIG.0308","error_msg":"The throttling threshold has been reached: policy user over ratelimit,limit:5,time:1 minute"}"#)
                .with_header("retry-after", "3"),
        );
        let err = client().get_job(&target(&cloud), &aksk(None)).await.unwrap_err();
        assert!(err.is_transient());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(err.code(), Some("APIG.0308"));
        assert_eq!(cloud.ims_calls(), 1);
    }

    #[tokio::test]
    async fn statuses_map_to_kinds() {
        let cloud = FakeCloud::start().await;
        for (status, kind) in [
            (403, ErrorKind::Forbidden),
            (404, ErrorKind::JobNotFound),
            (400, ErrorKind::BadRequest),
            (503, ErrorKind::Transient),
            (301, ErrorKind::BadRequest),
        ] {
            cloud.set_ims_reply(
                FakeReply::json(status, r#"{"error":{"code":"IMG.0001","message":"m"}}"#)
                    .with_header("location", "http://elsewhere.invalid/"),
            );
            let err = client().get_job(&target(&cloud), &aksk(None)).await.unwrap_err();
            assert_eq!(err.kind(), kind, "HTTP {status}");
            assert_eq!(err.status(), Some(status));
        }
        assert_eq!(cloud.ims_calls(), 5);
    }

    #[tokio::test]
    async fn timeout_and_connection_failure_are_transient() {
        let cloud = FakeCloud::start().await;
        cloud.set_ims_delay(Duration::from_millis(500));
        let err = ImsClient::new(Duration::from_millis(100)).get_job(&target(&cloud), &aksk(None)).await.unwrap_err();
        assert!(matches!(err, ImsError::Timeout { .. }), "{err:?}");
        assert!(err.is_transient());

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let t = JobTarget { ims_endpoint: closed, ..target(&cloud) };
        let err = client().get_job(&t, &aksk(None)).await.unwrap_err();
        assert!(matches!(err, ImsError::Connect { .. }), "{err:?}");
        assert!(err.is_transient());
    }

    #[tokio::test]
    async fn empty_ids_are_rejected_without_a_request() {
        let cloud = FakeCloud::start().await;
        let t = JobTarget { job_id: " ".into(), ..target(&cloud) };
        let err = client().get_job(&t, &aksk(None)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest);
        assert_eq!(cloud.ims_calls(), 0);
    }

    #[tokio::test]
    async fn works_through_the_trait() {
        async fn poll(source: &impl JobSource, t: &JobTarget) -> Result<Job, ImsError> {
            source.get_job(t, &aksk(None)).await
        }
        let cloud = FakeCloud::start().await;
        cloud.set_ims_reply(FakeReply::json(200, RUNNING));
        assert!(poll(&client(), &target(&cloud)).await.is_ok());
    }
}

#[cfg(test)]
#[path = "client_identity_tests.rs"]
mod identity_tests;
