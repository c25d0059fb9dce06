//! A local fake of IMS and IAM for unit tests: counts requests, records
//! the last one, answers as each test says.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

#[derive(Clone, Debug)]
pub struct FakeReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl FakeReply {
    pub fn json(status: u16, body: &str) -> Self {
        let headers = vec![("content-type".into(), "application/json".into())];
        FakeReply { status, headers, body: body.into() }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

type Handler = Arc<dyn Fn(&SeenRequest) -> FakeReply + Send + Sync>;
/// Answers the metadata service by call number.
type MetadataHandler = Arc<dyn Fn(usize) -> FakeReply + Send + Sync>;

#[derive(Default)]
struct Inner {
    iam_calls: AtomicUsize,
    ims_calls: AtomicUsize,
    metadata_calls: AtomicUsize,
    metadata: Mutex<Option<MetadataHandler>>,
    ims: Mutex<Option<Handler>>,
    iam: Mutex<Option<Handler>>,
    iam_delay: Mutex<Duration>,
    ims_delay: Mutex<Duration>,
    token_lifetime: Mutex<Option<Duration>>,
    last_ims: Mutex<Option<SeenRequest>>,
    last_iam: Mutex<Option<SeenRequest>>,
    iam_requests: Mutex<Vec<SeenRequest>>,
}

pub struct FakeCloud {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl FakeCloud {
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let app = axum::Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        FakeCloud { addr, inner }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn iam_calls(&self) -> usize {
        self.inner.iam_calls.load(Ordering::SeqCst)
    }

    pub fn ims_calls(&self) -> usize {
        self.inner.ims_calls.load(Ordering::SeqCst)
    }

    pub fn set_ims_reply(&self, reply: FakeReply) {
        self.set_ims_handler(move |_| reply.clone());
    }

    pub fn set_ims_handler(&self, f: impl Fn(&SeenRequest) -> FakeReply + Send + Sync + 'static) {
        *self.inner.ims.lock().unwrap() = Some(Arc::new(f));
    }

    pub fn set_iam_reply(&self, reply: FakeReply) {
        *self.inner.iam.lock().unwrap() = Some(Arc::new(move |_| reply.clone()));
    }

    /// Answers of `/openstack/latest/securitykey`, by call number (from 1).
    pub fn set_metadata_handler(&self, f: impl Fn(usize) -> FakeReply + Send + Sync + 'static) {
        *self.inner.metadata.lock().unwrap() = Some(Arc::new(f));
    }

    pub fn metadata_calls(&self) -> usize {
        self.inner.metadata_calls.load(Ordering::SeqCst)
    }

    /// Every IAM request seen, in order.
    pub fn iam_requests(&self) -> Vec<SeenRequest> {
        self.inner.iam_requests.lock().unwrap().clone()
    }

    pub fn set_iam_delay(&self, d: Duration) {
        *self.inner.iam_delay.lock().unwrap() = d;
    }

    pub fn set_ims_delay(&self, d: Duration) {
        *self.inner.ims_delay.lock().unwrap() = d;
    }

    /// Lifetime of the tokens the default IAM issues (24 h otherwise).
    pub fn set_token_lifetime(&self, d: Duration) {
        *self.inner.token_lifetime.lock().unwrap() = Some(d);
    }

    pub fn last_ims_request(&self) -> SeenRequest {
        self.inner.last_ims.lock().unwrap().clone().expect("no IMS request seen")
    }

    pub fn last_iam_body(&self) -> serde_json::Value {
        let seen = self.inner.last_iam.lock().unwrap().clone().expect("no IAM request seen");
        serde_json::from_slice(&seen.body).unwrap()
    }
}

async fn handle(State(inner): State<Arc<Inner>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let seen = SeenRequest { path: uri.path().to_owned(), headers, body };
    if seen.path == "/openstack/latest/securitykey" {
        let n = inner.metadata_calls.fetch_add(1, Ordering::SeqCst) + 1;
        let handler = inner.metadata.lock().unwrap().clone();
        let reply = handler.map_or_else(|| FakeReply::json(404, "{}"), |h| h(n));
        return (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    }
    let is_iam = seen.path == "/v3/auth/tokens" || seen.path == "/v3.0/OS-AUTH/id-token/tokens";
    let (delay, handler) = if is_iam {
        let n = inner.iam_calls.fetch_add(1, Ordering::SeqCst) + 1;
        *inner.last_iam.lock().unwrap() = Some(seen.clone());
        inner.iam_requests.lock().unwrap().push(seen.clone());
        let lifetime = inner.token_lifetime.lock().unwrap().unwrap_or(Duration::from_secs(86400));
        let default: Handler = Arc::new(move |_| default_token(n, lifetime));
        (*inner.iam_delay.lock().unwrap(), inner.iam.lock().unwrap().clone().unwrap_or(default))
    } else {
        inner.ims_calls.fetch_add(1, Ordering::SeqCst);
        *inner.last_ims.lock().unwrap() = Some(seen.clone());
        let default: Handler =
            Arc::new(|_| FakeReply::json(404, r#"{"error":{"code":"IMG.0404","message":"no job"}}"#));
        (*inner.ims_delay.lock().unwrap(), inner.ims.lock().unwrap().clone().unwrap_or(default))
    };
    tokio::time::sleep(delay).await;
    let reply = handler(&seen);
    let mut headers = HeaderMap::new();
    for (name, value) in &reply.headers {
        headers.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    (StatusCode::from_u16(reply.status).unwrap(), headers, reply.body).into_response()
}

fn default_token(n: usize, lifetime: Duration) -> FakeReply {
    let issued = jiff::Timestamp::now();
    let expires = issued + jiff::SignedDuration::try_from(lifetime).unwrap();
    let body = serde_json::json!({"token": {"issued_at": issued.to_string(), "expires_at": expires.to_string()}});
    FakeReply::json(201, &body.to_string()).with_header("x-subject-token", &format!("token-{n}"))
}
