//! Request parsing: a metrics API path and query string become a typed request, or a
//! [`RequestError`] (the HTTP layer makes it a 400 or 404 Status). Nothing here trusts its
//! input: names and selectors are validated before any of them can reach a query.

use crate::field_selector::{self, FieldSelector};
use crate::names;
use crate::not_found::NotFound;
use crate::response::resource::{ResourceVersion, RESOURCE_GROUP};
use crate::selector::Selector;

/// Why a path and query are not a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No such route (404).
    #[error("{0}")]
    NotFound(NotFound),
    /// A route, but malformed: a bad name, selector or encoding (400).
    #[error("{0}")]
    BadRequest(String),
    /// `?watch=true` on a resource that can only be read (405, as kube-apiserver answers
    /// for a storage without a watcher).
    #[error("watch is not supported on {0}")]
    WatchNotSupported(String),
}

fn bad_request(message: impl Into<String>) -> RequestError {
    RequestError::BadRequest(message.into())
}

const NO_ROUTE: RequestError = RequestError::NotFound(NotFound::Path);

pub const CUSTOM_GROUP: &str = "custom.metrics.k8s.io";
pub const EXTERNAL_GROUP: &str = "external.metrics.k8s.io";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CustomVersion {
    V1beta1,
    V1beta2,
}

impl CustomVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            CustomVersion::V1beta1 => "v1beta1",
            CustomVersion::V1beta2 => "v1beta2",
        }
    }
}

/// Which object(s) a custom-metrics request is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `.../{resource}/{name}/{metric}`
    Named(String),
    /// `.../{resource}/*/{metric}`: the objects the labelSelector picks.
    All(Selector),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomRequest {
    pub version: CustomVersion,
    /// None for cluster-scoped objects and for namespace metrics.
    pub namespace: Option<String>,
    /// As written in the URL: `pods`, `pod`, `deployments.apps`; `namespaces` for C3.
    pub resource: String,
    pub target: Target,
    pub metric: String,
    pub metric_selector: Selector,
    /// `namespaces/{ns}/metrics/{metric}`: a metric about the namespace itself.
    pub namespace_metric: bool,
}

impl CustomRequest {
    /// The namespace the request is about: its path's namespace, or for
    /// `namespaces/{ns}/metrics/{metric}` the namespace named. The tenant of a
    /// per-namespace backend.
    pub fn tenant(&self) -> Option<&str> {
        match (&self.namespace, &self.target) {
            (Some(ns), _) => Some(ns),
            (None, Target::Named(ns)) if self.namespace_metric => Some(ns),
            _ => None,
        }
    }
}

/// The two kinds the Resource Metrics API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Pods,
    Nodes,
}

impl ResourceKind {
    /// The URL plural.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Pods => "pods",
            ResourceKind::Nodes => "nodes",
        }
    }
}

/// What a Table row carries as `object` (`includeObject`; the default is `Metadata`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

/// A `metrics.k8s.io` get (`name` set) or list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceMetricsRequest {
    /// The version asked for: it names the answer's `apiVersion`, nothing else.
    pub version: ResourceVersion,
    pub kind: ResourceKind,
    /// None: nodes, or pods across all namespaces.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub label_selector: Selector,
    /// For a get, `metadata.name=<name>`.
    pub field_selector: FieldSelector,
    /// For Table answers only.
    pub include_object: IncludeObject,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRequest {
    pub namespace: String,
    pub metric: String,
    pub selector: Selector,
}

/// Everything the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    RootDiscovery,
    GroupDiscovery(&'static str),
    CustomResources(CustomVersion),
    ExternalResources,
    /// `/apis/metrics.k8s.io/<version>`.
    ResourceMetricsResources(ResourceVersion),
    Custom(CustomRequest),
    External(ExternalRequest),
    ResourceMetrics(ResourceMetricsRequest),
    OpenApiV2,
    OpenApiV3Index,
    OpenApiV3(&'static str, &'static str),
    Health(&'static str),
    Version,
}

impl Route {
    /// A short name for logs and the latency metric.
    pub fn label(&self) -> &'static str {
        match self {
            Route::RootDiscovery
            | Route::GroupDiscovery(_)
            | Route::CustomResources(_)
            | Route::ExternalResources
            | Route::ResourceMetricsResources(_) => "discovery",
            Route::ResourceMetrics(r) => match (r.kind, &r.name) {
                (ResourceKind::Pods, Some(_)) => "resource_pod",
                (ResourceKind::Pods, None) => "resource_pods",
                (ResourceKind::Nodes, Some(_)) => "resource_node",
                (ResourceKind::Nodes, None) => "resource_nodes",
            },
            Route::Custom(c) if c.namespace_metric => "custom_namespace",
            Route::Custom(CustomRequest {
                target: Target::Named(_),
                ..
            }) => "custom_object",
            Route::Custom(_) => "custom_wildcard",
            Route::External(_) => "external",
            Route::OpenApiV2 | Route::OpenApiV3Index | Route::OpenApiV3(..) => "openapi",
            Route::Health(_) => "health",
            Route::Version => "version",
        }
    }
}

/// Parses `path` (still percent-encoded) and `query` (form-encoded: `+` is a space).
pub fn parse(path: &str, query: &str) -> Result<Route, RequestError> {
    let segments = decode_segments(path)?;
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let params = QueryParams::parse(query);
    match segs.as_slice() {
        ["apis"] => Ok(Route::RootDiscovery),
        ["apis", CUSTOM_GROUP] => Ok(Route::GroupDiscovery(CUSTOM_GROUP)),
        ["apis", EXTERNAL_GROUP] => Ok(Route::GroupDiscovery(EXTERNAL_GROUP)),
        ["apis", RESOURCE_GROUP] => Ok(Route::GroupDiscovery(RESOURCE_GROUP)),
        ["apis", RESOURCE_GROUP, version, rest @ ..] => {
            let version = ResourceVersion::parse(version).ok_or(NO_ROUTE)?;
            if rest.is_empty() {
                return Ok(Route::ResourceMetricsResources(version));
            }
            parse_resource_metrics(version, rest, &params).map(Route::ResourceMetrics)
        }
        ["apis", CUSTOM_GROUP, version, rest @ ..] => {
            let version = match *version {
                "v1beta1" => CustomVersion::V1beta1,
                "v1beta2" => CustomVersion::V1beta2,
                _ => return Err(NO_ROUTE),
            };
            if rest.is_empty() {
                return Ok(Route::CustomResources(version));
            }
            parse_custom(version, rest, &params).map(Route::Custom)
        }
        ["apis", EXTERNAL_GROUP, "v1beta1"] => Ok(Route::ExternalResources),
        ["apis", EXTERNAL_GROUP, "v1beta1", "namespaces", namespace, metric] => {
            validate_namespace(namespace)?;
            validate_metric(metric)?;
            Ok(Route::External(ExternalRequest {
                namespace: namespace.to_string(),
                metric: metric.to_string(),
                selector: params.selector("labelSelector")?,
            }))
        }
        ["openapi", "v2"] => Ok(Route::OpenApiV2),
        ["openapi", "v3"] => Ok(Route::OpenApiV3Index),
        ["openapi", "v3", "apis", CUSTOM_GROUP, "v1beta1"] => {
            Ok(Route::OpenApiV3(CUSTOM_GROUP, "v1beta1"))
        }
        ["openapi", "v3", "apis", CUSTOM_GROUP, "v1beta2"] => {
            Ok(Route::OpenApiV3(CUSTOM_GROUP, "v1beta2"))
        }
        ["openapi", "v3", "apis", EXTERNAL_GROUP, "v1beta1"] => {
            Ok(Route::OpenApiV3(EXTERNAL_GROUP, "v1beta1"))
        }
        ["openapi", "v3", "apis", RESOURCE_GROUP, version] => {
            let version = ResourceVersion::parse(version).ok_or(NO_ROUTE)?;
            Ok(Route::OpenApiV3(RESOURCE_GROUP, version.as_str()))
        }
        ["healthz", ..] => Ok(Route::Health("healthz")),
        ["livez", ..] => Ok(Route::Health("livez")),
        ["readyz", ..] => Ok(Route::Health("readyz")),
        ["version"] => Ok(Route::Version),
        _ => Err(NO_ROUTE),
    }
}

fn parse_custom(
    version: CustomVersion,
    rest: &[&str],
    params: &QueryParams,
) -> Result<CustomRequest, RequestError> {
    let metric_selector = params.selector("metricLabelSelector")?;
    let (namespace, resource, name, metric, namespace_metric) = match rest {
        ["namespaces", ns, "metrics", metric] => (None, "namespaces", *ns, *metric, true),
        // The Go framework reads `namespaces/{ns}/x` as a namespaced request without enough parts.
        ["namespaces", _, _] | ["namespaces", _] => {
            return Err(bad_request("invalid request path"))
        }
        ["namespaces", ns, resource, name, metric] => (Some(*ns), *resource, *name, *metric, false),
        [resource, name, metric] => (None, *resource, *name, *metric, false),
        _ => return Err(NO_ROUTE),
    };
    if let Some(ns) = namespace {
        validate_namespace(ns)?;
    }
    validate_metric(metric)?;
    if resource.is_empty()
        || resource.contains(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
    {
        return Err(bad_request(format!("invalid resource name {resource:?}")));
    }
    let target = if name == "*" {
        Target::All(params.selector("labelSelector")?)
    } else {
        validate_object_name(name)?;
        Target::Named(name.to_string())
    };
    Ok(CustomRequest {
        version,
        namespace: namespace.map(str::to_string),
        resource: resource.to_string(),
        target,
        metric: metric.to_string(),
        metric_selector,
        namespace_metric,
    })
}

/// `nodes`, `nodes/{name}`, `pods`, `namespaces/{ns}/pods`, `namespaces/{ns}/pods/{name}`.
fn parse_resource_metrics(
    version: ResourceVersion,
    rest: &[&str],
    params: &QueryParams,
) -> Result<ResourceMetricsRequest, RequestError> {
    let (kind, namespace, name) = match rest {
        ["nodes"] => (ResourceKind::Nodes, None, None),
        ["nodes", name] => (ResourceKind::Nodes, None, Some(*name)),
        ["pods"] => (ResourceKind::Pods, None, None),
        ["namespaces", ns, "pods"] => (ResourceKind::Pods, Some(*ns), None),
        ["namespaces", ns, "pods", name] => (ResourceKind::Pods, Some(*ns), Some(*name)),
        _ => return Err(NO_ROUTE),
    };
    if let Some(ns) = namespace {
        validate_namespace(ns)?;
    }
    if let Some(name) = name {
        validate_object_name(name)?;
    }
    if params
        .get("watch")
        .is_some_and(|w| w == "1" || w.eq_ignore_ascii_case("true"))
    {
        return Err(RequestError::WatchNotSupported(format!(
            "{}.{RESOURCE_GROUP}",
            kind.as_str()
        )));
    }
    let field_selector = match params.get("fieldSelector") {
        None => FieldSelector::default(),
        Some(text) => field_selector::parse(text).map_err(|e| bad_request(e.to_string()))?,
    };
    // A get selects its name; a field selector may only repeat it.
    let field_selector = match name {
        Some(name) if !field_selector.allows_get_of(name) => {
            return Err(bad_request(
                "fieldSelector metadata.name doesn't match requested name",
            ))
        }
        Some(name) => FieldSelector::name(name),
        None => field_selector,
    };
    let include_object = match params.get("includeObject") {
        None | Some("") | Some("Metadata") => IncludeObject::Metadata,
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        Some(other) => {
            return Err(bad_request(format!(
                "invalid includeObject {other:?}: must be None, Metadata or Object"
            )))
        }
    };
    Ok(ResourceMetricsRequest {
        version,
        kind,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        label_selector: params.selector("labelSelector")?,
        field_selector,
        include_object,
    })
}

/// Splits the path and percent-decodes each segment: client-go sends `*` as `%2A`.
fn decode_segments(path: &str) -> Result<Vec<String>, RequestError> {
    path.trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| bad_request("request path is not valid UTF-8"))
        })
        .collect()
}

/// The query string, form-decoded (the aggregator re-encodes spaces as `+`).
struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    fn parse(query: &str) -> Self {
        QueryParams(
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn selector(&self, key: &str) -> Result<Selector, RequestError> {
        match self.get(key) {
            None => Ok(Selector::default()),
            Some(text) => crate::selector::parse(text)
                .map_err(|e| bad_request(format!("invalid {key} {text:?}: {e}"))),
        }
    }
}

/// Kubernetes object names: DNS-1123 subdomains, at most 253 characters. Anything else
/// cannot exist, so it is a bad request rather than a lookup.
pub fn validate_object_name(name: &str) -> Result<(), RequestError> {
    if names::is_dns_subdomain(name) {
        Ok(())
    } else {
        Err(bad_request(format!(
            "invalid object name {name:?}: must be a lowercase RFC 1123 subdomain"
        )))
    }
}

/// Namespaces are DNS-1123 labels (at most 63 characters, no dots).
fn validate_namespace(ns: &str) -> Result<(), RequestError> {
    if names::is_dns_label(ns) {
        Ok(())
    } else {
        Err(bad_request(format!(
            "invalid namespace {ns:?}: must be a lowercase RFC 1123 label"
        )))
    }
}

fn validate_metric(metric: &str) -> Result<(), RequestError> {
    if names::is_metric_name(metric) {
        Ok(())
    } else {
        Err(bad_request(format!("invalid metric name {metric:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn custom(path: &str, query: &str) -> CustomRequest {
        match parse(path, query) {
            Ok(Route::Custom(c)) => c,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn wildcard_pods_with_encoded_star_and_plus_spaces() {
        let c = custom(
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/pods/%2A/http_requests",
            "labelSelector=app+in+%28web%2Capi%29&metricLabelSelector=verb%3DGET",
        );
        assert_eq!(c.version, CustomVersion::V1beta2);
        assert_eq!(c.namespace.as_deref(), Some("default"));
        assert_eq!(c.resource, "pods");
        assert_eq!(c.metric, "http_requests");
        match &c.target {
            Target::All(sel) => assert_eq!(sel.to_string(), "app in (api,web)"),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.metric_selector.to_string(), "verb=GET");
        assert!(!c.namespace_metric);
    }

    #[test]
    fn named_object_root_scoped_and_namespace_metric() {
        let c = custom(
            "/apis/custom.metrics.k8s.io/v1beta1/namespaces/default/deployments.apps/web/qps",
            "",
        );
        assert_eq!(c.target, Target::Named("web".into()));
        assert_eq!(c.resource, "deployments.apps");
        let n = custom("/apis/custom.metrics.k8s.io/v1beta1/nodes/*/node_temp", "");
        assert_eq!(n.namespace, None);
        assert!(matches!(n.target, Target::All(_)));
        let ns = custom(
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/demo/metrics/sessions",
            "",
        );
        assert!(ns.namespace_metric);
        assert_eq!(ns.resource, "namespaces");
        assert_eq!(ns.target, Target::Named("demo".into()));
        assert_eq!(ns.namespace, None);
    }

    #[test]
    fn discovery_and_misc_routes() {
        assert_eq!(parse("/apis", ""), Ok(Route::RootDiscovery));
        assert_eq!(
            parse("/apis/custom.metrics.k8s.io/v1beta2", ""),
            Ok(Route::CustomResources(CustomVersion::V1beta2))
        );
        assert_eq!(
            parse("/apis/external.metrics.k8s.io/v1beta1/", ""),
            Ok(Route::ExternalResources)
        );
        assert_eq!(parse("/healthz", ""), Ok(Route::Health("healthz")));
        assert_eq!(parse("/openapi/v2", ""), Ok(Route::OpenApiV2));
    }

    #[test]
    fn external() {
        match parse(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/demo/queue_messages_ready",
            "labelSelector=queue%3Dorders",
        ) {
            Ok(Route::External(e)) => {
                assert_eq!(e.namespace, "demo");
                assert_eq!(e.metric, "queue_messages_ready");
                assert_eq!(e.selector.to_string(), "queue=orders");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_have_the_framework_codes() {
        let code = |p: &str, q: &str| {
            parse(p, q).err().map(|e| match e {
                RequestError::NotFound(_) => 404,
                RequestError::BadRequest(_) => 400,
                RequestError::WatchNotSupported(_) => 405,
            })
        };
        assert_eq!(
            code("/apis/custom.metrics.k8s.io/v1beta1/nodes/foo", ""),
            Some(404)
        );
        assert_eq!(
            code("/apis/custom.metrics.k8s.io/v1beta1/blah", ""),
            Some(404)
        );
        assert_eq!(
            code(
                "/apis/custom.metrics.k8s.io/v1beta1/namespaces/default/foo",
                ""
            ),
            Some(400)
        );
        assert_eq!(
            code(
                "/apis/external.metrics.k8s.io/v1beta1/nonexistent-metric",
                ""
            ),
            Some(404)
        );
        assert_eq!(
            code("/apis/external.metrics.k8s.io/v1beta1/namespaces/foo", ""),
            Some(404)
        );
        assert_eq!(
            code(
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/foo/group/metric",
                ""
            ),
            Some(404)
        );
        assert_eq!(
            code("/apis/custom.metrics.k8s.io/v1beta3/pods/x/y", ""),
            Some(404)
        );
        assert_eq!(
            code(
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/pods/*/m",
                "labelSelector=a%3D%3D%3Db"
            ),
            Some(400)
        );
        assert_eq!(
            code(
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/pods/*/m",
                "metricLabelSelector=%21%21"
            ),
            Some(400)
        );
        assert_eq!(
            code(
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/pods/Web%22%7D/m",
                ""
            ),
            Some(400)
        );
        assert_eq!(
            code(
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/De%22fault/pods/x/m",
                ""
            ),
            Some(400)
        );
        assert_eq!(code("/nope", ""), Some(404));
    }

    proptest::proptest! {
        /// Untrusted paths and query strings never panic, and anything accepted as a metric
        /// request carries only validated names.
        #[test]
        fn arbitrary_requests_never_panic(path in "(/[a-z0-9.%*\\-]{0,12}){0,8}", query in "[ -~]{0,40}") {
            let full = format!("/apis/custom.metrics.k8s.io/v1beta2{path}");
            if let Ok(Route::Custom(c)) = parse(&full, &query) {
                if let Target::Named(name) = &c.target {
                    proptest::prop_assert!(validate_object_name(name).is_ok());
                }
                proptest::prop_assert!(crate::names::is_metric_name(&c.metric));
            }
            let _ = parse(&path, &query);
        }
    }

    fn resource_metrics(path: &str, query: &str) -> ResourceMetricsRequest {
        match parse(path, query) {
            Ok(Route::ResourceMetrics(r)) => r,
            other => panic!("{path}?{query}: {other:?}"),
        }
    }

    #[test]
    fn resource_metrics_routes() {
        let base = "/apis/metrics.k8s.io/v1beta1";
        assert_eq!(
            parse(base, ""),
            Ok(Route::ResourceMetricsResources(ResourceVersion::V1beta1))
        );
        assert_eq!(
            parse("/apis/metrics.k8s.io", ""),
            Ok(Route::GroupDiscovery(RESOURCE_GROUP))
        );
        let all = resource_metrics(&format!("{base}/pods"), "labelSelector=app%3Dweb");
        assert_eq!(
            (all.kind, all.namespace, all.name),
            (ResourceKind::Pods, None, None)
        );
        assert_eq!(all.label_selector.to_string(), "app=web");
        let ns = resource_metrics(
            &format!("{base}/namespaces/default/pods"),
            "fieldSelector=metadata.name%3Dweb-1",
        );
        assert_eq!(ns.namespace.as_deref(), Some("default"));
        assert!(ns.field_selector.matches("default", "web-1"));
        assert!(!ns.field_selector.matches("default", "web-2"));
        let one = resource_metrics(&format!("{base}/namespaces/default/pods/web-1"), "");
        assert_eq!(one.name.as_deref(), Some("web-1"));
        let node = resource_metrics(&format!("{base}/nodes/node-a"), "");
        assert_eq!(
            (node.kind, node.name.as_deref()),
            (ResourceKind::Nodes, Some("node-a"))
        );
        assert_eq!(
            resource_metrics(&format!("{base}/nodes"), "").kind,
            ResourceKind::Nodes
        );
        assert_eq!(
            parse("/openapi/v3/apis/metrics.k8s.io/v1beta1", ""),
            Ok(Route::OpenApiV3(RESOURCE_GROUP, "v1beta1"))
        );
        assert_eq!(all.version, ResourceVersion::V1beta1);
        // v1: the same routes, the version carried to the answer.
        let v1 = resource_metrics("/apis/metrics.k8s.io/v1/namespaces/default/pods/web-1", "");
        assert_eq!(
            (v1.version, v1.name.as_deref()),
            (ResourceVersion::V1, Some("web-1"))
        );
        assert_eq!(
            parse("/apis/metrics.k8s.io/v1", ""),
            Ok(Route::ResourceMetricsResources(ResourceVersion::V1))
        );
        assert_eq!(
            parse("/openapi/v3/apis/metrics.k8s.io/v1", ""),
            Ok(Route::OpenApiV3(RESOURCE_GROUP, "v1"))
        );
        for unknown in [
            "/apis/metrics.k8s.io/v1alpha1/nodes",
            "/apis/metrics.k8s.io/v2",
        ] {
            assert_eq!(parse(unknown, ""), Err(NO_ROUTE), "{unknown}");
        }
    }

    #[test]
    fn resource_metrics_errors() {
        let base = "/apis/metrics.k8s.io/v1beta1";
        assert_eq!(
            parse(&format!("{base}/pods"), "fieldSelector=spec.nodeName%3Dn"),
            Err(RequestError::BadRequest(
                r#""spec.nodeName" is not a known field selector: only "metadata.name", "metadata.namespace""#.into()
            ))
        );
        assert_eq!(
            parse(
                &format!("{base}/namespaces/default/pods/a"),
                "fieldSelector=metadata.name%3Db"
            ),
            Err(RequestError::BadRequest(
                "fieldSelector metadata.name doesn't match requested name".into()
            ))
        );
        assert!(matches!(
            parse(&format!("{base}/pods"), "watch=1"),
            Err(RequestError::WatchNotSupported(_))
        ));
        assert!(matches!(
            parse(&format!("{base}/namespaces/Bad_NS/pods"), ""),
            Err(RequestError::BadRequest(_))
        ));
        assert_eq!(parse(&format!("{base}/services"), ""), Err(NO_ROUTE));
        assert_eq!(parse("/apis/metrics.k8s.io/v2", ""), Err(NO_ROUTE));
    }
}
