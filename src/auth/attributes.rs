//! Authorization attributes of a request: what kube-apiserver's `RequestInfoFactory`
//! (`k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`) makes of the same URL, and so
//! what a SubjectAccessReview is asked.
//!
//! | URL (after `/apis/<group>/<version>/`) | attributes |
//! |---|---|
//! | `namespaces/{ns}/{resource}/{name}/{metric}` | `get` `{resource}` (as written, e.g. `deployments.apps`), subresource `{metric}`, name `{name}` (`*` for all), namespace `{ns}` |
//! | `{resource}/{name}/{metric}` | the same without a namespace |
//! | `namespaces/{ns}/metrics/{metric}` | `get` `metrics` named `{metric}` in namespace `{ns}` |
//! | external `namespaces/{ns}/{metric}` | `list` `{metric}` in namespace `{ns}` (no name, so RequestInfo turns `get` into `list`) |
//! | `metrics.k8s.io/{v1,v1beta1}/[namespaces/{ns}/]pods`, `.../nodes` | `list` `pods`/`nodes` (group `metrics.k8s.io`), in `{ns}`; named by `fieldSelector=metadata.name=x` if given, as RequestInfo does |
//! | `metrics.k8s.io/{v1,v1beta1}/namespaces/{ns}/pods/{name}`, `.../nodes/{name}` | `get` that object |
//! | `/apis`, `/apis/<g>`, `/apis/<g>/<v>`, `/openapi/*`, `/version`, health | non-resource `get` on the path |
//!
//! The attributes are derived from the parsed [`Route`], i.e. from what will be served, so
//! what is authorized is always what is answered. Two RequestInfo quirks are therefore not
//! copied (neither can name a metric a user could not otherwise read): an external metric
//! named `status` or `finalize` is authorized as that metric, not as the namespace
//! subresource RequestInfo would see; and `?watch=true` / `fieldSelector=metadata.name=`
//! do not change the verb or name, since no watch is served.

use crate::field_selector::Field;
use crate::request::{
    CustomRequest, ResourceMetricsRequest, Route, Target, CUSTOM_GROUP, EXTERNAL_GROUP,
};
use crate::response::resource::RESOURCE_GROUP;

/// What is being done to what; the fields of `authorizer.Attributes` that reach a review.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RequestAttributes {
    Resource(ResourceAttributes),
    NonResource { verb: String, path: String },
}

/// `resourceAttributes` of a SubjectAccessReview; empty strings are "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ResourceAttributes {
    pub verb: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

impl RequestAttributes {
    pub fn verb(&self) -> &str {
        match self {
            RequestAttributes::Resource(r) => &r.verb,
            RequestAttributes::NonResource { verb, .. } => verb,
        }
    }

    pub fn is_resource_request(&self) -> bool {
        matches!(self, RequestAttributes::Resource(_))
    }
}

/// The attributes of a GET of `path` (the URL path, percent-encoded or not) that parsed as
/// `route`.
pub fn attributes_for(route: &Route, path: &str) -> RequestAttributes {
    match route {
        Route::Custom(c) => RequestAttributes::Resource(custom(c)),
        Route::External(e) => RequestAttributes::Resource(ResourceAttributes {
            verb: "list".into(),
            group: EXTERNAL_GROUP.into(),
            version: "v1beta1".into(),
            resource: e.metric.clone(),
            namespace: e.namespace.clone(),
            ..ResourceAttributes::default()
        }),
        Route::ResourceMetrics(r) => RequestAttributes::Resource(resource_metrics(r)),
        Route::RootDiscovery
        | Route::GroupDiscovery(_)
        | Route::CustomResources(_)
        | Route::ExternalResources
        | Route::ResourceMetricsResources(_)
        | Route::OpenApiV2
        | Route::OpenApiV3Index
        | Route::OpenApiV3(..)
        | Route::Health(_)
        | Route::Version => non_resource(path),
    }
}

fn custom(c: &CustomRequest) -> ResourceAttributes {
    let base = ResourceAttributes {
        verb: "get".into(),
        group: CUSTOM_GROUP.into(),
        version: c.version.as_str().into(),
        ..ResourceAttributes::default()
    };
    if c.namespace_metric {
        // The parser rewrote `namespaces/{ns}/metrics/{m}` to the root-scoped namespace
        // object; RequestInfo saw resource `metrics` named `{m}` in namespace `{ns}`
        // (`namespaces/*/metrics/m` parses as the wildcard target: namespace `*`).
        let ns = match &c.target {
            Target::Named(ns) => ns.clone(),
            Target::All(_) => "*".into(),
        };
        return ResourceAttributes {
            resource: "metrics".into(),
            name: c.metric.clone(),
            namespace: ns,
            ..base
        };
    }
    ResourceAttributes {
        resource: c.resource.clone(),
        subresource: c.metric.clone(),
        name: match &c.target {
            Target::Named(n) => n.clone(),
            Target::All(_) => "*".into(),
        },
        namespace: c.namespace.clone().unwrap_or_default(),
        ..base
    }
}

fn resource_metrics(r: &ResourceMetricsRequest) -> ResourceAttributes {
    // RequestInfo names a list by its `metadata.name=` field selector (only an equality).
    let selected_name = || {
        r.field_selector
            .requirements
            .iter()
            .find(|q| q.field == Field::Name && q.equals)
            .map(|q| q.value.clone())
    };
    let (verb, name) = match &r.name {
        Some(name) => ("get", name.clone()),
        None => ("list", selected_name().unwrap_or_default()),
    };
    ResourceAttributes {
        verb: verb.into(),
        group: RESOURCE_GROUP.into(),
        version: r.version.as_str().into(),
        resource: r.kind.as_str().into(),
        namespace: r.namespace.clone().unwrap_or_default(),
        name,
        ..ResourceAttributes::default()
    }
}

/// `req.URL.Path`: Go's URL parser has decoded the escapes (`%2A` is `*`).
/// The attributes of a GET of `path` as a non-resource request: what an unrouted request is
/// checked against (the always-allowed paths).
pub fn non_resource(path: &str) -> RequestAttributes {
    RequestAttributes::NonResource {
        verb: "get".into(),
        path: decoded_path(path),
    }
}

fn decoded_path(path: &str) -> String {
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request;

    fn res(
        verb: &str,
        group: &str,
        version: &str,
        resource: &str,
        sub: &str,
        ns: &str,
        name: &str,
    ) -> RequestAttributes {
        RequestAttributes::Resource(ResourceAttributes {
            verb: verb.into(),
            group: group.into(),
            version: version.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
        })
    }

    fn non(path: &str) -> RequestAttributes {
        RequestAttributes::NonResource {
            verb: "get".into(),
            path: path.into(),
        }
    }

    /// Every route kind, with the attributes kube-apiserver's RequestInfo gives the same URL
    /// (reference §1.2 and `requestinfo.go`).
    #[test]
    fn attributes_for_every_route_kind() {
        const C: &str = CUSTOM_GROUP;
        const E: &str = EXTERNAL_GROUP;
        const M: &str = RESOURCE_GROUP;
        let table: Vec<(&str, &str, RequestAttributes)> =
            vec![
            (
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/pods/%2A/http_requests",
                "labelSelector=app%3Dweb",
                res("get", C, "v1beta2", "pods", "http_requests", "default", "*"),
            ),
            (
                "/apis/custom.metrics.k8s.io/v1beta1/namespaces/default/pods/*/m",
                "",
                res("get", C, "v1beta1", "pods", "m", "default", "*"),
            ),
            (
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/deployments.apps/web/qps",
                "",
                res("get", C, "v1beta2", "deployments.apps", "qps", "default", "web"),
            ),
            (
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/pod/web-1/qps",
                "",
                res("get", C, "v1beta2", "pod", "qps", "default", "web-1"),
            ),
            (
                "/apis/custom.metrics.k8s.io/v1beta2/nodes/%2A/node_temp",
                "",
                res("get", C, "v1beta2", "nodes", "node_temp", "", "*"),
            ),
            (
                "/apis/custom.metrics.k8s.io/v1beta1/nodes/node-1/node_temp",
                "",
                res("get", C, "v1beta1", "nodes", "node_temp", "", "node-1"),
            ),
            (
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/demo/metrics/queue_length",
                "",
                res("get", C, "v1beta2", "metrics", "", "demo", "queue_length"),
            ),
            (
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/queue_ready",
                "labelSelector=queue%3Dw",
                res("list", E, "v1beta1", "queue_ready", "", "default", ""),
            ),
            (
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/%2A/metrics/m",
                "",
                res("get", C, "v1beta2", "metrics", "", "*", "m"),
            ),
            (
                "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
                "labelSelector=app%3Dweb",
                res("list", M, "v1beta1", "pods", "", "default", ""),
            ),
            (
                "/apis/metrics.k8s.io/v1beta1/pods",
                "fieldSelector=metadata.name%3Dweb-1",
                res("list", M, "v1beta1", "pods", "", "", "web-1"),
            ),
            (
                "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web-1",
                "",
                res("get", M, "v1beta1", "pods", "", "default", "web-1"),
            ),
            (
                "/apis/metrics.k8s.io/v1beta1/nodes",
                "",
                res("list", M, "v1beta1", "nodes", "", "", ""),
            ),
            (
                "/apis/metrics.k8s.io/v1beta1/nodes/node-a",
                "",
                res("get", M, "v1beta1", "nodes", "", "", "node-a"),
            ),
            (
                "/apis/metrics.k8s.io/v1/nodes/node-a",
                "",
                res("get", M, "v1", "nodes", "", "", "node-a"),
            ),
            (
                "/apis/metrics.k8s.io/v1beta1",
                "",
                non("/apis/metrics.k8s.io/v1beta1"),
            ),
            ("/apis", "", non("/apis")),
            ("/apis/custom.metrics.k8s.io", "", non("/apis/custom.metrics.k8s.io")),
            (
                "/apis/custom.metrics.k8s.io/v1beta2",
                "",
                non("/apis/custom.metrics.k8s.io/v1beta2"),
            ),
            (
                "/apis/external.metrics.k8s.io/v1beta1/",
                "",
                non("/apis/external.metrics.k8s.io/v1beta1/"),
            ),
            ("/openapi/v2", "", non("/openapi/v2")),
            ("/openapi/v3", "", non("/openapi/v3")),
            (
                "/openapi/v3/apis/custom.metrics.k8s.io/v1beta2",
                "",
                non("/openapi/v3/apis/custom.metrics.k8s.io/v1beta2"),
            ),
            ("/version", "", non("/version")),
            ("/healthz", "", non("/healthz")),
            ("/readyz/ping", "", non("/readyz/ping")),
            ("/livez", "", non("/livez")),
        ];
        for (path, query, want) in table {
            let route = request::parse(path, query).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(attributes_for(&route, path), want, "{path}");
        }
    }

    #[test]
    fn verbs_and_kinds() {
        let a = res("list", "g", "v", "r", "", "ns", "");
        assert_eq!(a.verb(), "list");
        assert!(a.is_resource_request());
        assert!(!non("/apis").is_resource_request());
        assert_eq!(non("/apis").verb(), "get");
    }
}
