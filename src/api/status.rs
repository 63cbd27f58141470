//! Errors as Kubernetes `metav1.Status` objects: what kube-apiserver relays and the HPA shows.
//! The only place where the errors of the request path (parsing, authentication, answering)
//! become HTTP codes and reasons.

use serde::Serialize;

use crate::auth::AuthError;
use crate::bridge::AnswerError;
use crate::kube::objects::ResolveError;
use crate::not_found::NotFound;
use crate::prometheus::PrometheusError;
use crate::query::QueryError;
use crate::request::RequestError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    /// Every 404, worded by [`NotFound`].
    pub fn not_found(what: &NotFound) -> Self {
        ApiError::new(404, "NotFound", what.to_string())
    }

    pub fn method_not_allowed(method: &str) -> Self {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported; this API is read-only (GET)"),
        )
    }

    /// kube-apiserver's wording, with the types served here (YAML, which kube-apiserver
    /// also offers, is not).
    pub fn not_acceptable() -> Self {
        ApiError::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, \
             application/vnd.kubernetes.protobuf (YAML is not served)",
        )
    }

    /// Prometheus could not be reached or did not answer in time. The details go to the log.
    pub fn unavailable() -> Self {
        ApiError::new(
            503,
            "ServiceUnavailable",
            "unable to fetch metrics: the metrics backend is unavailable",
        )
    }

    /// Prometheus answered with an error or with something unreadable.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    /// kube-apiserver's answer when `--max-requests-inflight` is reached (its message).
    pub fn too_many_requests() -> Self {
        ApiError::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
        )
    }

    pub fn body(&self) -> String {
        self.body_with_details(None)
    }

    /// The Status JSON; `retry_after_seconds` goes into `details.retryAfterSeconds` as
    /// apimachinery's `NewTooManyRequests` puts it.
    fn body_with_details(&self, retry_after_seconds: Option<u32>) -> String {
        #[derive(Serialize)]
        struct Details {
            #[serde(rename = "retryAfterSeconds")]
            retry_after_seconds: u32,
        }
        #[derive(Serialize)]
        struct Status<'a> {
            kind: &'static str,
            #[serde(rename = "apiVersion")]
            api_version: &'static str,
            metadata: serde_json::Map<String, serde_json::Value>,
            status: &'static str,
            message: &'a str,
            reason: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            details: Option<Details>,
            code: u16,
        }
        serde_json::to_string(&Status {
            kind: "Status",
            api_version: "v1",
            metadata: serde_json::Map::new(),
            status: "Failure",
            message: &self.message,
            reason: self.reason,
            details: retry_after_seconds.map(|s| Details {
                retry_after_seconds: s,
            }),
            code: self.code,
        })
        .unwrap_or_default()
    }
}

/// A 429 TooManyRequests Status with `Retry-After` (seconds) in the header and in
/// `details.retryAfterSeconds`, as kube-apiserver answers when its in-flight limit is reached.
pub fn too_many_requests_response(retry_after_seconds: u32) -> http::Response<String> {
    let mut r = http::Response::new(
        ApiError::too_many_requests().body_with_details(Some(retry_after_seconds)),
    );
    *r.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
    let headers = r.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from(retry_after_seconds),
    );
    r
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::NotFound(what) => ApiError::not_found(&what),
            RequestError::BadRequest(message) => ApiError::bad_request(message),
            RequestError::WatchNotSupported(_) => {
                ApiError::new(405, "MethodNotAllowed", e.to_string())
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthorized => ApiError::new(401, "Unauthorized", e.to_string()),
            AuthError::Forbidden(message) => ApiError::new(403, "Forbidden", message),
            AuthError::Unavailable => ApiError::internal(e.to_string()),
        }
    }
}

impl From<AnswerError> for ApiError {
    fn from(e: AnswerError) -> Self {
        match e {
            AnswerError::NotFound(what) => ApiError::not_found(&what),
            AnswerError::BadRequest(message) => ApiError::bad_request(message),
            AnswerError::Query(e @ QueryError::Selector { .. }) => {
                ApiError::bad_request(e.to_string())
            }
            AnswerError::Query(e @ QueryError::NoNamespaceLabel { .. }) => {
                ApiError::internal(e.to_string())
            }
            AnswerError::Prometheus(PrometheusError::Unavailable(_)) => ApiError::unavailable(),
            AnswerError::Prometheus(
                PrometheusError::Query { .. } | PrometheusError::Malformed(_),
            ) => ApiError::internal("unable to fetch metrics"),
            // 500, not 503: asking again gets the same answer; the rule's query is too broad
            // or the limit too low, which the operator fixes, not time.
            AnswerError::Prometheus(
                PrometheusError::TooLarge { limit, .. } | PrometheusError::TooManyNames { limit },
            ) => {
                ApiError::internal(format!(
                    "unable to fetch metrics: the answer from the metrics backend is larger than prometheus.max_response_bytes ({limit})"
                ))
            }
            AnswerError::Objects(ResolveError::Unsupported(message)) => {
                ApiError::bad_request(message)
            }
            // 503, not 403: the caller may read the metric; the bridge's own RBAC lacks the
            // resource, which its operator can grant (no restart needed).
            AnswerError::Objects(ResolveError::Forbidden { resource }) => ApiError::new(
                503,
                "ServiceUnavailable",
                format!(
                    "unable to list {resource}: kube-metrics-bridge is not allowed to list {resource}; \
                     grant list and watch on {resource} to its ServiceAccount"
                ),
            ),
            AnswerError::Objects(ResolveError::Gone { resource }) => {
                ApiError::not_found(&NotFound::Resource { resource })
            }
            AnswerError::Objects(ResolveError::Unavailable { .. }) => ApiError::new(
                503,
                "ServiceUnavailable",
                "unable to list the selected objects",
            ),
            AnswerError::Internal(message) => ApiError::internal(message),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_shape() {
        let v: serde_json::Value = serde_json::from_str(
            &ApiError::not_found(&NotFound::Metric {
                metric: "qps".into(),
                resource: "pods".into(),
            })
            .body(),
        )
        .expect("json");
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NotFound");
        assert_eq!(v["code"], 404);
        assert_eq!(
            v["message"],
            "the server could not find the metric qps for pods"
        );
        assert_eq!(v["metadata"], serde_json::json!({}));
        assert!(v.get("details").is_none());
    }

    #[test]
    fn too_many_requests_carries_retry_after() {
        let r = too_many_requests_response(1);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(r.headers()["content-type"], "application/json");
        let v: serde_json::Value = serde_json::from_str(r.body()).expect("json");
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["reason"], "TooManyRequests");
        assert_eq!(v["code"], 429);
        assert_eq!(v["details"]["retryAfterSeconds"], 1);
        assert_eq!(v["message"], "Too many requests, please try again later.");
    }
}
