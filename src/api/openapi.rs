//! `/openapi/v2` and `/openapi/v3`: what kube-aggregator downloads to publish our types.
//! Small hand-written specs of the served paths and the list types.

use serde_json::{json, Value};

use crate::request::{CUSTOM_GROUP, EXTERNAL_GROUP};
use crate::response::resource::{ResourceVersion, RESOURCE_GROUP};

fn definitions() -> Value {
    let object_ref = json!({"type": "object", "properties": {
        "kind": {"type": "string"}, "namespace": {"type": "string"}, "name": {"type": "string"}, "apiVersion": {"type": "string"}}});
    let quantity = json!({"type": "string", "description": "Kubernetes Quantity, canonical form (e.g. 1500m, 2k)"});
    let selector =
        json!({"type": "object", "x-nullable": true, "description": "metav1.LabelSelector"});
    json!({
        "custom.v1beta2.MetricValue": {"type": "object", "required": ["describedObject", "metric", "timestamp", "value"], "properties": {
            "describedObject": object_ref, "metric": {"type": "object", "properties": {"name": {"type": "string"}, "selector": selector}},
            "timestamp": {"type": "string", "format": "date-time"}, "windowSeconds": {"type": "integer", "format": "int64"}, "value": quantity}},
        "custom.v1beta1.MetricValue": {"type": "object", "required": ["describedObject", "metricName", "timestamp", "value"], "properties": {
            "describedObject": object_ref, "metricName": {"type": "string"}, "timestamp": {"type": "string", "format": "date-time"},
            "window": {"type": "integer", "format": "int64"}, "value": quantity, "selector": selector}},
        "external.v1beta1.ExternalMetricValue": {"type": "object", "required": ["metricName", "metricLabels", "timestamp", "value"], "properties": {
            "metricName": {"type": "string"}, "metricLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "timestamp": {"type": "string", "format": "date-time"}, "window": {"type": "integer", "format": "int64"}, "value": quantity}},
        "custom.v1beta1.MetricValueList": list("custom.v1beta1.MetricValue"),
        "custom.v1beta2.MetricValueList": list("custom.v1beta2.MetricValue"),
        "external.v1beta1.ExternalMetricValueList": list("external.v1beta1.ExternalMetricValue"),
        "metrics.v1beta1.PodMetrics": {"type": "object", "required": ["metadata", "timestamp", "window", "containers"], "properties": {
            "kind": {"type": "string"}, "apiVersion": {"type": "string"}, "metadata": object_meta(),
            "timestamp": {"type": "string", "format": "date-time"}, "window": duration(),
            "containers": {"type": "array", "items": {"type": "object", "required": ["name", "usage"], "properties": {
                "name": {"type": "string"}, "usage": usage()}}}}},
        "metrics.v1beta1.NodeMetrics": {"type": "object", "required": ["metadata", "timestamp", "window", "usage"], "properties": {
            "kind": {"type": "string"}, "apiVersion": {"type": "string"}, "metadata": object_meta(),
            "timestamp": {"type": "string", "format": "date-time"}, "window": duration(), "usage": usage()}},
        "metrics.v1beta1.PodMetricsList": list("metrics.v1beta1.PodMetrics"),
        "metrics.v1beta1.NodeMetricsList": list("metrics.v1beta1.NodeMetrics"),
    })
}

fn object_meta() -> Value {
    json!({"type": "object", "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}}}})
}

fn duration() -> Value {
    json!({"type": "string", "description": "Go duration (e.g. 30s, 1m0s): the range the usage was measured over"})
}

fn usage() -> Value {
    json!({"type": "object", "description": "cpu (cores) and memory (bytes) as canonical Quantities",
        "additionalProperties": {"type": "string"}})
}

/// A list type whose items are `item`.
fn list(item: &str) -> Value {
    json!({"type": "object", "required": ["kind", "apiVersion", "metadata", "items"], "properties": {
        "kind": {"type": "string"}, "apiVersion": {"type": "string"}, "metadata": {"type": "object"},
        "items": {"type": "array", "items": {"$ref": format!("#/definitions/{item}")}}}})
}

fn param(name: &str, location: &str, description: &str) -> Value {
    json!({"name": name, "in": location, "required": location == "path", "type": "string", "description": description})
}

fn get(summary: &str, params: Vec<Value>, schema: &str) -> Value {
    // The metric lists are served in both encodings (api::accept); errors are JSON.
    json!({"get": {"summary": summary, "produces": ["application/json", "application/vnd.kubernetes.protobuf"], "parameters": params,
        "responses": {"200": {"description": "OK", "schema": {"$ref": format!("#/definitions/{schema}")}},
                      "400": {"description": "bad selector or path"}, "401": {"description": "no credentials believed"},
                      "403": {"description": "not allowed"}, "404": {"description": "unknown metric or object"},
                      "406": {"description": "Accept names no served type (application/json, application/vnd.kubernetes.protobuf)"},
                      "429": {"description": "too many requests in flight"},
                      "503": {"description": "metrics backend unavailable"}}}})
}

fn paths(group: &str, version: &str) -> serde_json::Map<String, Value> {
    let p = |n: &str, d: &str| param(n, "path", d);
    let q = |n: &str, d: &str| param(n, "query", d);
    let mut out = serde_json::Map::new();
    let base = format!("/apis/{group}/{version}");
    let list = format!("custom.{version}.MetricValueList");
    let list = list.as_str();
    if group == RESOURCE_GROUP {
        let selectors = || {
            vec![
                q("labelSelector", "selects objects by their labels"),
                q("fieldSelector", "metadata.name and metadata.namespace only"),
            ]
        };
        let named = |scope: Vec<Value>| {
            let mut params = scope;
            params.push(p("name", ""));
            params
        };
        out.insert(
            format!("{base}/nodes"),
            get(
                "usage of the nodes selected",
                selectors(),
                "metrics.v1beta1.NodeMetricsList",
            ),
        );
        out.insert(
            format!("{base}/nodes/{{name}}"),
            get(
                "usage of one node",
                named(vec![]),
                "metrics.v1beta1.NodeMetrics",
            ),
        );
        out.insert(
            format!("{base}/pods"),
            get(
                "usage of the Running pods selected in every namespace",
                selectors(),
                "metrics.v1beta1.PodMetricsList",
            ),
        );
        let mut in_namespace = vec![p("namespace", "")];
        in_namespace.extend(selectors());
        out.insert(
            format!("{base}/namespaces/{{namespace}}/pods"),
            get(
                "usage of the Running pods selected in a namespace",
                in_namespace,
                "metrics.v1beta1.PodMetricsList",
            ),
        );
        out.insert(
            format!("{base}/namespaces/{{namespace}}/pods/{{name}}"),
            get(
                "usage of one Running pod, per container",
                named(vec![p("namespace", "")]),
                "metrics.v1beta1.PodMetrics",
            ),
        );
    } else if group == CUSTOM_GROUP {
        out.insert(
            format!("{base}/namespaces/{{namespace}}/{{resource}}/{{name}}/{{metric}}"),
            get("metric for a namespaced object, or all objects selected by labelSelector when name is *",
                vec![p("namespace", ""), p("resource", "plural, singular, short or group-qualified"), p("name", "object name or *"), p("metric", ""),
                     q("labelSelector", "selects the objects (with name *)"), q("metricLabelSelector", "selects series by their labels")],
                list),
        );
        out.insert(
            format!("{base}/{{resource}}/{{name}}/{{metric}}"),
            get(
                "metric for a cluster-scoped object",
                vec![
                    p("resource", ""),
                    p("name", ""),
                    p("metric", ""),
                    q("labelSelector", ""),
                    q("metricLabelSelector", ""),
                ],
                list,
            ),
        );
        out.insert(
            format!("{base}/namespaces/{{namespace}}/metrics/{{metric}}"),
            get(
                "metric about the namespace itself",
                vec![
                    p("namespace", ""),
                    p("metric", ""),
                    q("metricLabelSelector", ""),
                ],
                list,
            ),
        );
    } else {
        out.insert(
            format!("{base}/namespaces/{{namespace}}/{{metric}}"),
            get(
                "external metric",
                vec![
                    p("namespace", ""),
                    p("metric", ""),
                    q("labelSelector", "selects series by their labels"),
                ],
                "external.v1beta1.ExternalMetricValueList",
            ),
        );
    }
    out
}

fn info() -> Value {
    json!({"title": "kube-metrics-bridge", "version": env!("CARGO_PKG_VERSION")})
}

/// The group-versions served: the Resource Metrics API only with `[resource_rules]`, so the
/// spec kube-aggregator merges never claims paths another server (metrics-server) owns.
fn served(resource_metrics: bool) -> Vec<(&'static str, &'static str)> {
    let mut served = vec![
        (CUSTOM_GROUP, "v1beta1"),
        (CUSTOM_GROUP, "v1beta2"),
        (EXTERNAL_GROUP, "v1beta1"),
    ];
    if resource_metrics {
        served.extend(ResourceVersion::ALL.map(|v| (RESOURCE_GROUP, v.as_str())));
    }
    served
}

/// Swagger 2.0 for everything served.
pub fn v2(resource_metrics: bool) -> String {
    let mut all = serde_json::Map::new();
    for (g, v) in served(resource_metrics) {
        all.extend(paths(g, v));
    }
    json!({"swagger": "2.0", "info": info(), "paths": all, "definitions": definitions()})
        .to_string()
}

/// The v3 index: one spec per group-version.
pub fn v3_index(resource_metrics: bool) -> String {
    let mut paths = serde_json::Map::new();
    for (g, v) in served(resource_metrics) {
        paths.insert(
            format!("apis/{g}/{v}"),
            json!({"serverRelativeURL": format!("/openapi/v3/apis/{g}/{v}")}),
        );
    }
    json!({"paths": paths}).to_string()
}

/// OpenAPI 3.0 for one group-version.
pub fn v3(group: &str, version: &str) -> String {
    json!({"openapi": "3.0.0", "info": info(), "paths": paths(group, version),
           "components": {"schemas": definitions()}})
    .to_string()
    .replace("#/definitions/", "#/components/schemas/")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` names a defined schema, and each path returns its own version's list.
    #[test]
    fn references_resolve_to_the_served_list_types() {
        let spec: Value = serde_json::from_str(&v2(true)).expect("json");
        let defined = spec["definitions"].as_object().expect("definitions");
        let text = spec.to_string();
        for reference in text.split("#/definitions/").skip(1) {
            let name = reference.split('"').next().unwrap_or_default();
            assert!(defined.contains_key(name), "{name} is not defined");
        }
        let schema =
            |path: &str| spec["paths"][path]["get"]["responses"]["200"]["schema"]["$ref"].clone();
        assert_eq!(
            schema("/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}"),
            "#/definitions/external.v1beta1.ExternalMetricValueList"
        );
        assert_eq!(
            schema("/apis/custom.metrics.k8s.io/v1beta2/namespaces/{namespace}/metrics/{metric}"),
            "#/definitions/custom.v1beta2.MetricValueList"
        );
        assert_eq!(
            schema("/apis/custom.metrics.k8s.io/v1beta1/{resource}/{name}/{metric}"),
            "#/definitions/custom.v1beta1.MetricValueList"
        );
        assert_eq!(
            schema("/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods"),
            "#/definitions/metrics.v1beta1.PodMetricsList"
        );
        assert_eq!(
            schema("/apis/metrics.k8s.io/v1beta1/nodes/{name}"),
            "#/definitions/metrics.v1beta1.NodeMetrics"
        );
        let without: Value = serde_json::from_str(&v2(false)).expect("json");
        assert!(!without["paths"]
            .to_string()
            .contains("/apis/metrics.k8s.io/"));
        assert!(!v3_index(false).contains("apis/metrics.k8s.io"));
        assert!(v3_index(true).contains("/openapi/v3/apis/metrics.k8s.io/v1beta1"));
        let v3: Value = serde_json::from_str(&v3(EXTERNAL_GROUP, "v1beta1")).expect("json");
        assert!(!v3.to_string().contains("#/definitions/"));
        assert!(
            v3["components"]["schemas"]["external.v1beta1.ExternalMetricValueList"].is_object()
        );
    }
}
