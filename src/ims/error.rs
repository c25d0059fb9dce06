//! Errors of IMS and IAM calls, classified for the controller.
//!
//! An error keeps what a person needs to act or to open a support ticket:
//! HTTP status, cloud error code, message and request ID. It never holds
//! credentials or tokens: only response bodies (truncated) and statuses.

use std::fmt;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{Map, Value};

/// How the controller should react to an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 5xx, 408, 429, timeout, connection failure, unusable 200 body: retry later.
    Transient,
    /// 401, IAM rejecting the password, APIGW.0301 bad signature.
    AuthenticationFailed,
    /// 403.
    Forbidden,
    /// 404.
    JobNotFound,
    /// Any other 4xx, or a request that could not be built.
    BadRequest,
}

impl ErrorKind {
    pub fn is_transient(self) -> bool {
        self == ErrorKind::Transient
    }
}

/// Which cloud service answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    Ims,
    Iam,
    /// The node's metadata service (temporary keys).
    Metadata,
    /// The Kubernetes API server (ServiceAccount tokens).
    Kubernetes,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Ims => "IMS",
            Service::Iam => "IAM",
            Service::Metadata => "the metadata service",
            Service::Kubernetes => "the Kubernetes API",
        })
    }
}

/// The API gateway's code for a rejected AK/SK signature.
pub const SIGNATURE_REJECTED: &str = "APIGW.0301";
/// IMS answers every error of its own as HTTP 400 (but IMG.0026, 403), so
/// the code, not the status, says what happened. "An exception occurred
/// during task query": a fault of this very query, or a job IMS cannot find.
pub const TASK_QUERY_FAILED: &str = "IMG.0023";
/// "The project ID and token in the request are invalid": an expired or
/// revoked token; a fresh one may work.
pub const TOKEN_INVALID: &str = "IMG.0030";
/// IMS's "no permission" (the one IMG code sent as 403).
pub const IMS_FORBIDDEN: &str = "IMG.0026";
/// The gateway's "API not found": the progress API is not published there.
pub const API_NOT_FOUND: &str = "APIGW.0101";

const MAX_MESSAGE_CHARS: usize = 500;
const MAX_EXCERPT_CHARS: usize = 200;
/// A Retry-After beyond this is taken as this: the controller must not go
/// silent for hours because of one odd header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImsError {
    /// The service answered with a status that is not success.
    #[error("{}", display_http(*.service, *.status, .code, .message, .request_id))]
    Http {
        service: Service,
        status: u16,
        code: Option<String>,
        /// The cloud message, or a short excerpt of a body without one.
        message: Option<String>,
        request_id: Option<String>,
        retry_after: Option<Duration>,
    },
    #[error("{service} did not answer in time")]
    Timeout { service: Service },
    #[error("cannot connect to {service}: {detail}")]
    Connect { service: Service, detail: String },
    #[error("{service} request failed: {detail}")]
    Transport { service: Service, detail: String },
    /// A success status whose body cannot be used (garbled, truncated, HTML).
    #[error("{service} answered with an unusable body: {detail}{}", request_suffix(.request_id))]
    InvalidBody { service: Service, detail: String, request_id: Option<String> },
    /// The request could not be built (bad endpoint URL, bad header value).
    #[error("invalid request: {detail}")]
    InvalidRequest { detail: String },
    /// The identity to act as cannot be had here (a ServiceAccount that does
    /// not exist, a token file that cannot be read, no right to request a
    /// token): a configuration problem; nothing went to the cloud.
    #[error("{detail}")]
    IdentityUnavailable { detail: String },
}

impl ImsError {
    /// Builds the error for a non-success response from its status,
    /// headers and body.
    pub fn from_response(service: Service, status: u16, headers: &HeaderMap, body: &[u8]) -> Self {
        let parsed = parse_error_body(body);
        let request_id = header(headers, "x-request-id").or(parsed.request_id);
        // Keystone repeats the status as a numeric code: drop the echo.
        let code = parsed.code.filter(|c| c != &status.to_string());
        let message = parsed.message.or_else(|| excerpt(body));
        ImsError::Http {
            service,
            status,
            code,
            message,
            request_id,
            retry_after: headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, jiff::Timestamp::now())),
        }
    }

    /// Maps a transport error. The URL is dropped from the text: an
    /// endpoint could carry user info.
    pub fn from_reqwest(service: Service, err: reqwest::Error) -> Self {
        let (timeout, connect, builder) = (err.is_timeout(), err.is_connect(), err.is_builder());
        let err = err.without_url();
        if let Some(detail) = super::ca::tls_failure(&err) {
            return ImsError::Connect { service, detail };
        }
        let detail = chain(&err);
        if timeout {
            // A timeout while connecting also counts here.
            ImsError::Timeout { service }
        } else if connect {
            ImsError::Connect { service, detail }
        } else if builder {
            ImsError::InvalidRequest { detail }
        } else {
            ImsError::Transport { service, detail }
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            ImsError::Http { service, status, code, .. } => http_kind(*service, *status, code.as_deref()),
            ImsError::Timeout { .. }
            | ImsError::Connect { .. }
            | ImsError::Transport { .. }
            | ImsError::InvalidBody { .. } => ErrorKind::Transient,
            ImsError::InvalidRequest { .. } | ImsError::IdentityUnavailable { .. } => ErrorKind::BadRequest,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.kind().is_transient()
    }

    /// An answer that may only mean IMS does not show the job (yet): a 404,
    /// or IMG.0023, which nothing public tells apart from an unknown job.
    pub fn may_mean_unknown_job(&self) -> bool {
        self.kind() == ErrorKind::JobNotFound
            || (self.service() == Some(Service::Ims) && self.code() == Some(TASK_QUERY_FAILED))
    }

    /// IMS refused the token itself (401, or 400 IMG.0030): a fresh token may work.
    pub fn rejects_token(&self) -> bool {
        matches!(self, ImsError::Http { service: Service::Ims, status: 401, .. }) || self.code() == Some(TOKEN_INVALID)
    }

    /// The server's Retry-After, if it sent one (IMS documents none).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ImsError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ImsError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The cloud error code, e.g. `IMG.0030` or `APIG.0308`.
    pub fn code(&self) -> Option<&str> {
        match self {
            ImsError::Http { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    pub fn message(&self) -> Option<&str> {
        match self {
            ImsError::Http { message, .. } => message.as_deref(),
            _ => None,
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            ImsError::Http { request_id, .. } | ImsError::InvalidBody { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    pub fn service(&self) -> Option<Service> {
        match self {
            ImsError::Http { service, .. }
            | ImsError::Timeout { service }
            | ImsError::Connect { service, .. }
            | ImsError::Transport { service, .. }
            | ImsError::InvalidBody { service, .. } => Some(*service),
            ImsError::InvalidRequest { .. } | ImsError::IdentityUnavailable { .. } => None,
        }
    }
}

/// The cloud's error code first (a table test in `tests` covers each row),
/// then the HTTP status.
fn http_kind(service: Service, status: u16, code: Option<&str>) -> ErrorKind {
    match code {
        Some(SIGNATURE_REJECTED | TOKEN_INVALID) => return ErrorKind::AuthenticationFailed,
        Some(IMS_FORBIDDEN) => return ErrorKind::Forbidden,
        Some(TASK_QUERY_FAILED) if service == Service::Ims => return ErrorKind::Transient,
        _ => {}
    }
    match status {
        408 | 429 | 500..=599 => ErrorKind::Transient,
        // IAM refusing a token (bad password, unknown project, locked user).
        // The metadata service refusing keys (no agency on the node).
        400..=499 if matches!(service, Service::Iam | Service::Metadata) => ErrorKind::AuthenticationFailed,
        401 => ErrorKind::AuthenticationFailed,
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::JobNotFound,
        // Other 4xx, and 1xx/3xx: redirects are not followed, so that
        // credentials never go to a host that was not configured.
        _ => ErrorKind::BadRequest,
    }
}

/// Code, message and request ID found in an error body.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: Option<String>,
    pub message: Option<String>,
    pub request_id: Option<String>,
}

/// Reads the shapes the Huawei SDK accepts (core/sdkerr/errors.go): flat
/// `error_code`/`error_msg`, flat `code`/`message`, either one nested in an
/// object such as `{"error":{...}}`. `request_id` may sit at the top.
pub fn parse_error_body(body: &[u8]) -> ErrorBody {
    let Ok(Value::Object(top)) = serde_json::from_slice::<Value>(body) else {
        return ErrorBody::default();
    };
    let mut found = code_and_message(&top).unwrap_or_default();
    found.request_id = text(&top, "request_id");
    found
}

fn code_and_message(obj: &Map<String, Value>) -> Option<ErrorBody> {
    for (code_key, msg_key) in [("error_code", "error_msg"), ("code", "message")] {
        let (code, message) = (text(obj, code_key), text(obj, msg_key));
        if code.is_some() || message.is_some() {
            let message = message.map(|m| truncate(&m, MAX_MESSAGE_CHARS));
            return Some(ErrorBody { code, message, request_id: None });
        }
    }
    obj.values().filter_map(Value::as_object).find_map(code_and_message)
}

fn text(obj: &Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key)? {
        Value::String(s) => Some(crate::text::clean(s)).filter(|t| !t.is_empty()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = crate::text::clean(headers.get(name)?.to_str().ok()?);
    (!value.is_empty()).then_some(value)
}

/// A one-line, short piece of a body that had no error fields.
fn excerpt(body: &[u8]) -> Option<String> {
    let text = crate::text::clean(&String::from_utf8_lossy(body));
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!line.is_empty()).then(|| truncate(&line, MAX_EXCERPT_CHARS))
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

/// Delay seconds or an HTTP date (RFC 9110), capped at an hour.
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
        let secs = at.as_second().saturating_sub(now.as_second());
        Duration::from_secs(secs.max(0) as u64)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

fn request_suffix(request_id: &Option<String>) -> String {
    request_id.as_ref().map(|id| format!(" (request {id})")).unwrap_or_default()
}

/// `HTTP 403 Forbidden: IMG.0030 The project ID or token is invalid (request 8f1c…)`
fn display_http(
    service: Service,
    status: u16,
    code: &Option<String>,
    message: &Option<String>,
    request_id: &Option<String>,
) -> String {
    let mut out = String::new();
    if service == Service::Iam {
        out.push_str("IAM token request failed: ");
    }
    out.push_str(&format!("HTTP {status}"));
    if let Some(reason) = reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()) {
        out.push(' ');
        out.push_str(reason);
    }
    let detail: Vec<&str> = [code, message].into_iter().flatten().map(String::as_str).collect();
    if !detail.is_empty() {
        out.push_str(": ");
        out.push_str(&detail.join(" "));
    }
    out.push_str(&request_suffix(request_id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (reqwest::header::HeaderName::from_static(k), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    fn ims(status: u16, body: &str) -> ImsError {
        ImsError::from_response(Service::Ims, status, &HeaderMap::new(), body.as_bytes())
    }

    #[test]
    fn nested_error_shape() {
        let h = headers(&[("x-request-id", "8f1c2a")]);
        let body = br#"{"error":{"code":"IMG.0024","message":"The imagetype is invalid."}}"#;
        let err = ImsError::from_response(Service::Ims, 400, &h, body);
        assert_eq!(err.code(), Some("IMG.0024"));
        assert_eq!(err.request_id(), Some("8f1c2a"));
        assert_eq!(err.kind(), ErrorKind::BadRequest);
        assert_eq!(err.to_string(), "HTTP 400 Bad Request: IMG.0024 The imagetype is invalid. (request 8f1c2a)");
    }

    /// IMS sends its own errors as HTTP 400 (IMG.0026 as 403): the code decides.
    #[test]
    fn kinds_by_ims_code() {
        let nested = |code: &str| format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
        let flat = |code: &str| format!(r#"{{"error_code":"{code}","error_msg":"m","request_id":"r"}}"#);
        let cases = [
            (400, "IMG.0023", ErrorKind::Transient, false, true),
            (400, "IMG.0030", ErrorKind::AuthenticationFailed, true, false),
            (401, "IMG.0030", ErrorKind::AuthenticationFailed, true, false),
            (403, "IMG.0026", ErrorKind::Forbidden, false, false),
            (400, "IMG.0026", ErrorKind::Forbidden, false, false),
            (400, "IMG.0014", ErrorKind::BadRequest, false, false),
            (400, "IMG.0027", ErrorKind::BadRequest, false, false),
            (400, "IMG.0024", ErrorKind::BadRequest, false, false),
            (404, "IMG.0027", ErrorKind::JobNotFound, false, true),
            (401, "APIGW.0301", ErrorKind::AuthenticationFailed, true, false),
            (400, "APIGW.0301", ErrorKind::AuthenticationFailed, false, false),
            (429, "APIG.0308", ErrorKind::Transient, false, false),
            (500, "IMG.0023", ErrorKind::Transient, false, true),
        ];
        for (status, code, kind, renews, unknown) in cases {
            for body in [nested(code), flat(code)] {
                let err = ims(status, &body);
                assert_eq!(err.code(), Some(code), "{body}");
                assert_eq!(err.kind(), kind, "HTTP {status} {code}");
                assert_eq!(err.rejects_token(), renews, "HTTP {status} {code}: token renewal");
                assert_eq!(err.may_mean_unknown_job(), unknown, "HTTP {status} {code}: unknown job");
            }
        }
        // IAM's own answers are about the credentials, whatever the code.
        let iam = ImsError::from_response(Service::Iam, 400, &HeaderMap::new(), nested("IMG.0023").as_bytes());
        assert_eq!(iam.kind(), ErrorKind::AuthenticationFailed);
        assert!(!iam.may_mean_unknown_job() && !iam.rejects_token());
    }

    #[test]
    fn flat_gateway_shape_with_request_id_in_body() {
        let body = r#"{"error_msg":"Incorrect IAM authentication information: verify aksk signature fail","error_code":"APIGW.0301","request_id":"abc"}"#;
        let err = ims(401, body);
        assert_eq!(err.code(), Some("APIGW.0301"));
        assert_eq!(err.request_id(), Some("abc"));
        assert_eq!(err.kind(), ErrorKind::AuthenticationFailed);
        // The signature code wins whatever the status.
        assert_eq!(ims(400, body).kind(), ErrorKind::AuthenticationFailed);
    }

    #[test]
    fn header_request_id_wins_over_body() {
        let h = headers(&[("x-request-id", "from-header")]);
        let err = ImsError::from_response(
            Service::Ims,
            500,
            &h,
            br#"{"error_code":"X","error_msg":"m","request_id":"from-body"}"#,
        );
        assert_eq!(err.request_id(), Some("from-header"));
    }

    #[test]
    fn keystone_shape_drops_numeric_status_echo() {
        let body = r#"{"error":{"code":401,"message":"The username or password is wrong.","title":"Unauthorized"}}"#;
        let err = ImsError::from_response(Service::Iam, 401, &HeaderMap::new(), body.as_bytes());
        assert_eq!(err.code(), None);
        assert_eq!(err.kind(), ErrorKind::AuthenticationFailed);
        assert_eq!(
            err.to_string(),
            "IAM token request failed: HTTP 401 Unauthorized: The username or password is wrong."
        );
        let err = ImsError::from_response(Service::Iam, 404, &HeaderMap::new(), b"{}");
        assert_eq!(err.kind(), ErrorKind::AuthenticationFailed);
        let err = ImsError::from_response(Service::Iam, 503, &HeaderMap::new(), b"");
        assert_eq!(err.kind(), ErrorKind::Transient);
    }

    #[test]
    fn other_bodies_keep_a_short_excerpt() {
        let err = ims(502, "<html>\n  <body>Bad   Gateway</body>\n</html>");
        assert_eq!(err.message(), Some("<html> <body>Bad Gateway</body> </html>"));
        assert_eq!(err.to_string(), "HTTP 502 Bad Gateway: <html> <body>Bad Gateway</body> </html>");
        let long = "é".repeat(1000);
        let msg = ims(500, &long).message().unwrap().to_owned();
        assert_eq!(msg.chars().count(), MAX_EXCERPT_CHARS + 1);
        assert!(msg.ends_with('…'));
        assert_eq!(ims(503, "").to_string(), "HTTP 503 Service Unavailable");
        assert_eq!(ims(500, "[1]").message(), Some("[1]"));
    }

    #[test]
    fn kinds_by_status() {
        let cases = [
            (400, ErrorKind::BadRequest),
            (401, ErrorKind::AuthenticationFailed),
            (403, ErrorKind::Forbidden),
            (404, ErrorKind::JobNotFound),
            (408, ErrorKind::Transient),
            (409, ErrorKind::BadRequest),
            (429, ErrorKind::Transient),
            (500, ErrorKind::Transient),
            (503, ErrorKind::Transient),
            (302, ErrorKind::BadRequest),
        ];
        for (status, kind) in cases {
            assert_eq!(ims(status, "").kind(), kind, "HTTP {status}");
            assert_eq!(ims(status, "").is_transient(), kind == ErrorKind::Transient);
        }
        assert!(ImsError::Timeout { service: Service::Ims }.is_transient());
        assert!(ImsError::InvalidBody { service: Service::Ims, detail: "x".into(), request_id: None }.is_transient());
        assert_eq!(ImsError::InvalidRequest { detail: "x".into() }.kind(), ErrorKind::BadRequest);
    }

    #[test]
    fn throttling_with_retry_after() {
        let h = headers(&[("retry-after", "7")]);
        let body = br#"{"error_code":"APIG.0308","error_msg":"The throttling threshold has been reached: policy user over ratelimit,limit:10,time:1 minute"}"#;
        let err = ImsError::from_response(Service::Ims, 429, &h, body);
        assert!(err.is_transient());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(ims(429, "").retry_after(), None);
    }

    #[test]
    fn retry_after_forms() {
        let now: jiff::Timestamp = "2015-10-21T07:28:00Z".parse().unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn body_shapes() {
        assert_eq!(
            parse_error_body(br#"{"code":"IMG.0001","message":"m"}"#),
            ErrorBody { code: Some("IMG.0001".into()), message: Some("m".into()), request_id: None }
        );
        assert_eq!(parse_error_body(b"not json"), ErrorBody::default());
        assert_eq!(parse_error_body(br#"{"error":"flat string"}"#), ErrorBody::default());
        let long = format!(r#"{{"error":{{"code":"C","message":"{}"}}}}"#, "x".repeat(2000));
        let parsed = parse_error_body(long.as_bytes());
        assert_eq!(parsed.message.unwrap().chars().count(), MAX_MESSAGE_CHARS + 1);
    }
}
