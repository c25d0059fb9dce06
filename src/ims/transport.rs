//! HTTP plumbing shared by the IMS client and the IAM token cache: URLs
//! built from configured endpoints only, sensitive header values, and whole
//! responses read with a size cap and logged without headers or bodies.

use std::time::Instant;

use reqwest::Url;
use reqwest::header::HeaderMap;

use super::error::{ImsError, Service};

/// A job answer is small; anything bigger than this is not one.
pub(crate) const MAX_BODY_BYTES: usize = 4 << 20;

/// Bodies up to this size are read freely; a bigger one (a hostile answer)
/// first takes one of `LARGE_BODIES_AT_ONCE` permits, held until it is
/// parsed. 32 reconciles each reading 4 MiB would otherwise hold 32 bodies
/// and 32 parse trees at once (about 20 MiB each).
const SMALL_BODY_BYTES: usize = 256 << 10;
const LARGE_BODIES_AT_ONCE: usize = 2;

fn large_bodies() -> &'static std::sync::Arc<tokio::sync::Semaphore> {
    static PERMITS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| std::sync::Arc::new(tokio::sync::Semaphore::new(LARGE_BODIES_AT_ONCE)))
}

/// The value is never put in the error: it may be a secret.
pub(crate) fn header_value(value: &str, what: &str) -> Result<reqwest::header::HeaderValue, ImsError> {
    let mut value = reqwest::header::HeaderValue::from_str(value).map_err(|_| ImsError::InvalidRequest {
        detail: format!("the {what} contains characters not allowed in an HTTP header"),
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// `base` with `segments` appended, each percent-encoded; keeps a path
/// prefix of `base` (e.g. a proxy's `/ims`).
pub(crate) fn url_with_path(base: &str, segments: &[&str]) -> Result<Url, ImsError> {
    // User info may hold a password: then the endpoint is not echoed.
    let shown = if base.contains('@') { "with user info".to_owned() } else { format!("{base:?}") };
    let invalid = |why: &str| ImsError::InvalidRequest { detail: format!("endpoint {shown} {why}") };
    if base.contains(['{', '}']) {
        return Err(invalid("has an unresolved placeholder such as {region}"));
    }
    let mut url = Url::parse(base.trim()).map_err(|e| invalid(&format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid("must be an http:// or https:// URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err(invalid("must not carry user info or a query"));
    }
    url.set_fragment(None);
    url.path_segments_mut().map_err(|()| invalid("cannot have a path"))?.pop_if_empty().extend(segments);
    Ok(url)
}

/// A whole response, read into memory (bodies here are small).
pub(crate) struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The body was cut at `MAX_BODY_BYTES`.
    pub truncated: bool,
    /// Held while a large body is in memory (see `SMALL_BODY_BYTES`).
    _large: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl HttpResponse {
    pub fn request_id(&self) -> Option<String> {
        let id = self.headers.get("x-request-id")?.to_str().ok()?.trim();
        (!id.is_empty()).then(|| id.to_owned())
    }
}

/// Sends one request and reads its answer; logs method, path, status,
/// latency and request ID at debug (never headers or bodies).
pub(crate) async fn send(
    service: Service,
    method: &str,
    url: &Url,
    request: reqwest::RequestBuilder,
) -> Result<HttpResponse, ImsError> {
    let started = Instant::now();
    let result = receive(service, request).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    match &result {
        Ok(a) => {
            tracing::debug!(%service, method, path = url.path(), status = a.status, latency_ms,
            request_id = a.request_id().as_deref().unwrap_or(""), "cloud request")
        }
        Err(e) => {
            tracing::debug!(%service, method, path = url.path(), latency_ms, error = %e, "cloud request failed")
        }
    }
    result
}

async fn receive(service: Service, request: reqwest::RequestBuilder) -> Result<HttpResponse, ImsError> {
    let mut response = request.send().await.map_err(|e| ImsError::from_reqwest(service, e))?;
    let status = response.status().as_u16();
    let headers = std::mem::take(response.headers_mut());
    let mut body = Vec::new();
    let mut truncated = false;
    let mut large = None;
    while let Some(chunk) = response.chunk().await.map_err(|e| ImsError::from_reqwest(service, e))? {
        if large.is_none() && body.len() + chunk.len() > SMALL_BODY_BYTES {
            large = Some(large_bodies().clone().acquire_owned().await.expect("the semaphore is never closed"));
        }
        let room = MAX_BODY_BYTES - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(HttpResponse { status, headers, body, truncated, _large: large })
}
