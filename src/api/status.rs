//! Errors as Kubernetes `metav1.Status` objects: what kube-apiserver relays and the HPA shows.

use serde::Serialize;

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

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(404, "NotFound", message)
    }

    /// An unknown route, worded as kube-apiserver words it.
    pub fn not_found_path() -> Self {
        ApiError::not_found("the server could not find the requested resource")
    }

    /// `the server could not find the metric http_requests for pods`
    pub fn metric_not_found(metric: &str, resource: &str) -> Self {
        ApiError::not_found(format!(
            "the server could not find the metric {metric} for {resource}"
        ))
    }

    pub fn method_not_allowed(method: &str) -> Self {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported; this API is read-only (GET)"),
        )
    }

    pub fn not_acceptable() -> Self {
        ApiError::new(406, "NotAcceptable", "only application/json is served")
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
        let v: serde_json::Value =
            serde_json::from_str(&ApiError::metric_not_found("qps", "pods").body()).expect("json");
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
