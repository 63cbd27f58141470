//! The errors of authentication and authorization, worded as kube-apiserver words them
//! (`apierrors.NewUnauthorized("Unauthorized")`, `responsewriters.ForbiddenStatusError`). The
//! HTTP layer turns each into its Status (401, 403, 500).

use super::attributes::RequestAttributes;
use super::user::User;

/// Why a request may not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// 401: no credentials were believed (bad token, certificate not allowed, ...). The
    /// message never says why; the log does.
    #[error("Unauthorized")]
    Unauthorized,
    /// 403, with kube-apiserver's message.
    #[error("{0}")]
    Forbidden(String),
    /// 500: a SubjectAccessReview could not be had. Go answers `Internal Server Error` here
    /// too (never a 403 nor an allow); the cause goes to the log, not to the client.
    #[error("the request could not be authorized: the API server did not answer")]
    Unavailable,
}

pub fn unauthorized() -> AuthError {
    AuthError::Unauthorized
}

/// 403, e.g. `pods.custom.metrics.k8s.io "*" is forbidden: User "x" cannot get resource
/// "pods/m" in API group "custom.metrics.k8s.io" in the namespace "default"`, then
/// `: <reason>` when the reviewer gave one.
pub fn forbidden(user: &User, attrs: &RequestAttributes, reason: &str) -> AuthError {
    let mut msg = sanitize(&forbidden_message(user, attrs));
    if !reason.is_empty() {
        msg.push_str(": ");
        msg.push_str(reason);
    }
    let message = match attrs {
        RequestAttributes::Resource(r) => {
            let qualified = if r.group.is_empty() {
                r.resource.clone()
            } else {
                format!("{}.{}", r.resource, r.group)
            };
            if qualified.is_empty() {
                format!("forbidden: {msg}")
            } else if r.name.is_empty() {
                format!("{qualified} is forbidden: {msg}")
            } else {
                format!("{qualified} {} is forbidden: {msg}", go_quote(&r.name))
            }
        }
        RequestAttributes::NonResource { .. } => format!("forbidden: {msg}"),
    };
    AuthError::Forbidden(message)
}

pub fn authorization_unavailable() -> AuthError {
    AuthError::Unavailable
}

fn forbidden_message(user: &User, attrs: &RequestAttributes) -> String {
    let name = go_quote(&user.name);
    match attrs {
        RequestAttributes::NonResource { verb, path } => {
            format!("User {name} cannot {verb} path {}", go_quote(path))
        }
        RequestAttributes::Resource(r) => {
            let resource = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let head = format!(
                "User {name} cannot {} resource {} in API group {}",
                r.verb,
                go_quote(&resource),
                go_quote(&r.group)
            );
            if r.namespace.is_empty() {
                format!("{head} at the cluster scope")
            } else {
                format!("{head} in the namespace {}", go_quote(&r.namespace))
            }
        }
    }
}

/// Go's `sanitizer`: nothing in the message may look like HTML.
fn sanitize(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Go's `%q` (`strconv.Quote`) for the strings that reach these messages: user names come
/// from headers and tokens, so quotes, backslashes and control characters are escaped.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::super::attributes::ResourceAttributes;
    use super::*;

    fn resource(
        verb: &str,
        group: &str,
        res: &str,
        sub: &str,
        ns: &str,
        name: &str,
    ) -> RequestAttributes {
        RequestAttributes::Resource(ResourceAttributes {
            verb: verb.into(),
            group: group.into(),
            version: "v1beta2".into(),
            resource: res.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
        })
    }

    fn body(e: &AuthError) -> serde_json::Value {
        let status = crate::api::status::ApiError::from(e.clone());
        serde_json::from_str(&status.body()).expect("json")
    }

    #[test]
    fn unauthorized_status_body() {
        assert_eq!(
            body(&unauthorized()),
            serde_json::json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                "message":"Unauthorized","reason":"Unauthorized","code":401})
        );
    }

    #[test]
    fn forbidden_namespaced_pods_metric() {
        let attrs = resource(
            "get",
            "custom.metrics.k8s.io",
            "pods",
            "http_requests",
            "default",
            "*",
        );
        let e = forbidden(&User::anonymous(), &attrs, "");
        assert_eq!(
            body(&e),
            serde_json::json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                "message": "pods.custom.metrics.k8s.io \"*\" is forbidden: User \"system:anonymous\" cannot get resource \"pods/http_requests\" in API group \"custom.metrics.k8s.io\" in the namespace \"default\"",
                "reason":"Forbidden","code":403})
        );
    }

    #[test]
    fn forbidden_with_reason_cluster_scope_external_and_paths() {
        let u = User::new("jane", vec![]);
        let nodes = resource(
            "get",
            "custom.metrics.k8s.io",
            "nodes",
            "node_temp",
            "",
            "node-1",
        );
        assert_eq!(
            forbidden(&u, &nodes, "no RBAC policy matched").to_string(),
            "nodes.custom.metrics.k8s.io \"node-1\" is forbidden: User \"jane\" cannot get resource \"nodes/node_temp\" in API group \"custom.metrics.k8s.io\" at the cluster scope: no RBAC policy matched"
        );
        let ext = resource(
            "list",
            "external.metrics.k8s.io",
            "queue_ready",
            "",
            "demo",
            "",
        );
        assert_eq!(
            forbidden(&u, &ext, "").to_string(),
            "queue_ready.external.metrics.k8s.io is forbidden: User \"jane\" cannot list resource \"queue_ready\" in API group \"external.metrics.k8s.io\" in the namespace \"demo\""
        );
        let path = RequestAttributes::NonResource {
            verb: "get".into(),
            path: "/apis/custom.metrics.k8s.io/v1beta2".into(),
        };
        let e = body(&forbidden(&u, &path, ""));
        assert_eq!(
            (&e["code"], &e["reason"]),
            (&403.into(), &"Forbidden".into())
        );
        assert_eq!(
            e["message"],
            "forbidden: User \"jane\" cannot get path \"/apis/custom.metrics.k8s.io/v1beta2\""
        );
    }

    #[test]
    fn hostile_user_names_are_quoted_and_sanitized() {
        let u = User::new("<b>\"x\"\n", vec![]);
        let path = RequestAttributes::NonResource {
            verb: "get".into(),
            path: "/version".into(),
        };
        assert_eq!(
            forbidden(&u, &path, "").to_string(),
            "forbidden: User \"&lt;b&gt;\\\"x\\\"\\n\" cannot get path \"/version\""
        );
        assert_eq!(body(&authorization_unavailable())["code"], 500);
    }
}
