//! The bodies the cloud sends, as plain data: status, content type, extra
//! header and body. The axum layer only copies these onto the wire.

use serde_json::json;

use super::lifecycle::ScriptedReply;
use super::scenario::{ErrorShape, UnknownJob};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub retry_after: Option<u64>,
    pub body: String,
}

const JSON: &str = "application/json;charset=UTF-8";

impl SimResponse {
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Self { status, content_type: JSON, retry_after: None, body: body.to_string() }
    }
}

/// Turns a lifecycle reply into what goes on the wire.
pub fn reply(reply: &ScriptedReply, request_id: &str) -> SimResponse {
    match reply {
        ScriptedReply::Job(body) => SimResponse::json(200, body),
        ScriptedReply::Throttled { retry_after, limit } => throttled(*limit, *retry_after, request_id),
        ScriptedReply::Error { status, shape, code, message } => error(*status, *shape, code, message, request_id),
        ScriptedReply::Malformed(body) => {
            SimResponse { status: 200, content_type: JSON, retry_after: None, body: body.clone() }
        }
    }
}

/// The API gateway's 429 (`APIG.0308`, `APIG` not `APIGW`).
pub fn throttled(limit: u32, retry_after: Option<u64>, request_id: &str) -> SimResponse {
    let message =
        format!("The throttling threshold has been reached: policy user over ratelimit,limit:{limit},time:1 minute");
    let body = json!({"error_code": "APIG.0308", "error_msg": message, "request_id": request_id});
    SimResponse { retry_after, ..SimResponse::json(429, &body) }
}

pub fn error(status: u16, shape: ErrorShape, code: &str, message: &str, request_id: &str) -> SimResponse {
    match shape {
        ErrorShape::Nested => SimResponse::json(status, &json!({"error": {"code": code, "message": message}})),
        ErrorShape::Flat => gateway(status, code, message, request_id),
        ErrorShape::Text => {
            SimResponse { status, content_type: "text/plain", retry_after: None, body: reason_phrase(status).into() }
        }
        ErrorShape::Html => SimResponse { status, content_type: "text/html", retry_after: None, body: html(status) },
        ErrorShape::Empty => SimResponse { status, content_type: "text/plain", retry_after: None, body: String::new() },
    }
}

/// The flat gateway shape, also used for its authentication failures.
pub fn gateway(status: u16, code: &str, message: &str, request_id: &str) -> SimResponse {
    SimResponse::json(status, &json!({"error_code": code, "error_msg": message, "request_id": request_id}))
}

/// The gateway's 404 for a path it has no API for (flat, as all its
/// errors).
pub fn api_not_found(request_id: &str) -> SimResponse {
    let message = "The API does not exist or has not been published in the environment";
    gateway(404, "APIGW.0101", message, request_id)
}

/// IMS's own body for a job it does not know. IMS documents none, so
/// both guesses can be served: 404 with IMG.0027 (the IMG codes near it
/// are about jobs), or the 400 IMG.0023 "exception during task query".
pub fn unknown_job(answer: UnknownJob) -> SimResponse {
    let (status, code, message) = match answer {
        UnknownJob::NotFound => (404, "IMG.0027", "The job does not exist."),
        UnknownJob::TaskQueryError => (400, "IMG.0023", "An exception occurred during task query."),
    };
    SimResponse::json(status, &json!({"error": {"code": code, "message": message}}))
}

/// IAM's error body: a numeric code and a title.
pub fn iam_error(status: u16, message: &str) -> SimResponse {
    let body = json!({"error": {"code": status, "message": message, "title": reason_phrase(status)}});
    SimResponse::json(status, &body)
}

/// IAM's flat error body, as its federation and agency APIs document it.
pub fn iam_flat(refusal: &super::iam::FlatRefusal) -> SimResponse {
    SimResponse::json(refusal.status, &json!({"error_msg": refusal.message, "error_code": refusal.code}))
}

/// What an nginx in front of a backend shows when that backend is down.
fn html(status: u16) -> String {
    let title = format!("{status} {}", reason_phrase(status));
    format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n\
         <hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
}

fn reason_phrase(status: u16) -> &'static str {
    axum::http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn body(r: &SimResponse) -> Value {
        serde_json::from_str(&r.body).unwrap()
    }

    #[test]
    fn throttle_body_and_header() {
        let r = throttled(20, Some(2), "req-1");
        assert_eq!(r.status, 429);
        assert_eq!(r.retry_after, Some(2));
        assert_eq!(body(&r)["error_code"], "APIG.0308");
        assert_eq!(
            body(&r)["error_msg"],
            "The throttling threshold has been reached: policy user over ratelimit,limit:20,time:1 minute"
        );
        assert_eq!(body(&r)["request_id"], "req-1");
    }

    #[test]
    fn error_shapes() {
        let nested = error(500, ErrorShape::Nested, "IMG.0023", "m", "r");
        assert_eq!(body(&nested), json!({"error": {"code": "IMG.0023", "message": "m"}}));
        let flat = error(503, ErrorShape::Flat, "APIGW.0201", "m", "r");
        assert_eq!(body(&flat), json!({"error_code": "APIGW.0201", "error_msg": "m", "request_id": "r"}));
        let text = error(503, ErrorShape::Text, "c", "m", "r");
        assert_eq!((text.content_type, text.body.as_str()), ("text/plain", "Service Unavailable"));
        let page = error(502, ErrorShape::Html, "c", "m", "r");
        assert!(page.body.contains("<title>502 Bad Gateway</title>"));
        assert_eq!(error(500, ErrorShape::Empty, "c", "m", "r").body, "");
    }

    #[test]
    fn unknown_job_answers() {
        let not_found = unknown_job(UnknownJob::NotFound);
        assert_eq!(not_found.status, 404);
        assert_eq!(body(&not_found), json!({"error": {"code": "IMG.0027", "message": "The job does not exist."}}));
        let query_error = unknown_job(UnknownJob::TaskQueryError);
        assert_eq!(query_error.status, 400);
        assert_eq!(
            body(&query_error),
            json!({"error": {"code": "IMG.0023", "message": "An exception occurred during task query."}})
        );
        let absent = api_not_found("r");
        assert_eq!(absent.status, 404);
        assert_eq!(
            body(&absent),
            json!({"error_code": "APIGW.0101",
                   "error_msg": "The API does not exist or has not been published in the environment",
                   "request_id": "r"})
        );
    }

    #[test]
    fn iam_error_shape() {
        let r = iam_error(401, "The username or password is wrong.");
        assert_eq!(
            body(&r),
            json!({"error": {"code": 401, "message": "The username or password is wrong.", "title": "Unauthorized"}})
        );
    }
}
