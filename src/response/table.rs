//! `meta.k8s.io/v1` Table answers for the Resource Metrics API, what `kubectl get
//! podmetrics` / `nodemetrics` ask for (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`),
//! with metrics-server's columns: Name, one column per usage resource (sorted: cpu, memory;
//! a pod's cells sum its containers), and Window.

use serde_json::{json, Value};

use super::resource::{go_duration, NodeMetrics, PodMetrics, ResourceVersion, Usage};
use crate::request::IncludeObject;

/// The columns of a table whose rows have `resources` usage columns.
fn columns(resources: &[&str]) -> Vec<Value> {
    let mut columns = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name of the resource", "priority": 0})];
    for resource in resources {
        columns.push(
            json!({"name": resource, "type": "string", "format": "quantity",
            "description": format!("{resource} usage"), "priority": 0}),
        );
    }
    columns.push(
        json!({"name": "Window", "type": "string", "format": "duration",
        "description": "Window over which usage was measured", "priority": 0}),
    );
    columns
}

/// The usage resources of a table: the keys of the first row, as metrics-server takes them.
fn resources_of(first: Option<&Usage>) -> Vec<&str> {
    first
        .map(|u| u.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// What a row carries as `object`: metadata only by default, the whole object with
/// `includeObject=Object`, nothing with `None`.
fn row_object(include: IncludeObject, metadata: Value, whole: impl FnOnce() -> Value) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Metadata => json!({"kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1", "metadata": metadata}),
        IncludeObject::Object => whole(),
    }
}

fn table(columns: Vec<Value>, rows: Vec<Value>) -> String {
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {},
        "columnDefinitions": columns, "rows": rows})
    .to_string()
}

fn metadata(
    name: &str,
    namespace: Option<&str>,
    labels: &std::collections::BTreeMap<String, String>,
) -> Value {
    let mut m = json!({"name": name, "creationTimestamp": null});
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    if !labels.is_empty() {
        m["labels"] = json!(labels);
    }
    m
}

/// A Table of pods: each row sums the pod's containers per resource. `version` names the
/// objects `includeObject=Object` embeds.
pub fn pods(items: &[PodMetrics], include: IncludeObject, version: ResourceVersion) -> String {
    let first = items
        .first()
        .and_then(|p| p.containers.first())
        .map(|c| &c.usage);
    let resources = resources_of(first);
    let rows = items
        .iter()
        .map(|pod| {
            let mut cells = vec![json!(pod.name)];
            for resource in &resources {
                let values = pod
                    .containers
                    .iter()
                    .filter_map(|c| c.usage.get(*resource).map(String::as_str));
                cells.push(json!(crate::quantity::sum(values).unwrap_or_default()));
            }
            cells.push(json!(go_duration(pod.window)));
            let object = row_object(
                include,
                metadata(&pod.name, Some(&pod.namespace), &pod.labels),
                || serde_json::from_str(&pod.to_json(version)).unwrap_or(Value::Null),
            );
            json!({"cells": cells, "object": object})
        })
        .collect();
    table(columns(&resources), rows)
}

/// A Table of nodes.
pub fn nodes(items: &[NodeMetrics], include: IncludeObject, version: ResourceVersion) -> String {
    let resources = resources_of(items.first().map(|n| &n.usage));
    let rows = items
        .iter()
        .map(|node| {
            let mut cells = vec![json!(node.name)];
            for resource in &resources {
                cells.push(json!(node
                    .usage
                    .get(*resource)
                    .cloned()
                    .unwrap_or_default()));
            }
            cells.push(json!(go_duration(node.window)));
            let object = row_object(include, metadata(&node.name, None, &node.labels), || {
                serde_json::from_str(&node.to_json(version)).unwrap_or(Value::Null)
            });
            json!({"cells": cells, "object": object})
        })
        .collect();
    table(columns(&resources), rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::resource::ContainerMetrics;
    use std::time::Duration;

    const V1BETA1: ResourceVersion = ResourceVersion::V1beta1;

    fn usage(cpu: &str, memory: &str) -> Usage {
        [
            ("cpu".to_string(), cpu.to_string()),
            ("memory".to_string(), memory.to_string()),
        ]
        .into()
    }

    #[test]
    fn pod_rows_sum_their_containers() {
        let pod = PodMetrics {
            name: "web-1".into(),
            namespace: "default".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            timestamp: 1_700_000_000.0,
            window: Duration::from_secs(30),
            containers: vec![
                ContainerMetrics {
                    name: "a".into(),
                    usage: usage("1234567n", "1000"),
                },
                ContainerMetrics {
                    name: "b".into(),
                    usage: usage("1234567n", "24"),
                },
            ],
        };
        let t: Value =
            serde_json::from_str(&pods(&[pod], IncludeObject::Metadata, V1BETA1)).expect("json");
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .expect("columns")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["Name", "cpu", "memory", "Window"]);
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["web-1", "2469134n", "1024", "30s"])
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["labels"]["app"], "web");
    }

    #[test]
    fn node_rows_and_object_choices() {
        let node = NodeMetrics {
            name: "node-a".into(),
            labels: Default::default(),
            timestamp: 1_700_000_000.0,
            window: Duration::from_secs(60),
            usage: usage("2", "4G"),
        };
        let none: Value = serde_json::from_str(&nodes(
            std::slice::from_ref(&node),
            IncludeObject::None,
            V1BETA1,
        ))
        .expect("json");
        assert_eq!(
            none["rows"][0]["cells"],
            json!(["node-a", "2", "4G", "1m0s"])
        );
        assert!(none["rows"][0]["object"].is_null());
        let whole: Value =
            serde_json::from_str(&nodes(&[node], IncludeObject::Object, ResourceVersion::V1))
                .expect("json");
        assert_eq!(whole["rows"][0]["object"]["kind"], "NodeMetrics");
        assert_eq!(
            whole["rows"][0]["object"]["apiVersion"],
            "metrics.k8s.io/v1"
        );
        let empty: Value =
            serde_json::from_str(&nodes(&[], IncludeObject::Metadata, V1BETA1)).expect("json");
        assert_eq!(empty["rows"], json!([]));
        assert_eq!(empty["columnDefinitions"].as_array().map(Vec::len), Some(2));
    }
}
