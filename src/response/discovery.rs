//! Discovery documents: `APIGroupList`, `APIGroup`, `APIResourceList`, and aggregated
//! discovery (`apidiscovery.k8s.io/v2`), shaped as kube-apiserver serves them.
//!
//! They are rendered once per registry (after each series discovery), so a discovery GET
//! never waits on Prometheus and costs a copy; the aggregator's availability probe gives us
//! five seconds. A list is never empty: client-go treats an empty resource list as an error,
//! so before anything is discovered a placeholder entry stands in (see README).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::kube::resources::ResourceInfo;
use crate::request::{CUSTOM_GROUP, EXTERNAL_GROUP};

/// The resource name listed while no metric has been discovered yet.
pub const PLACEHOLDER_METRIC: &str = "none_discovered_yet";

/// The media type parameters of aggregated discovery, v2.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

#[derive(Debug, Clone, Default)]
pub struct Documents {
    pub custom_v1beta1: String,
    pub custom_v1beta2: String,
    pub external_v1beta1: String,
    pub aggregated: String,
}

impl Documents {
    pub fn render<'a>(
        custom: impl Iterator<Item = (&'a ResourceInfo, &'a str)>,
        external: impl Iterator<Item = &'a str>,
    ) -> Self {
        // resource ("pods", "deployments.apps") -> (namespaced, metrics), sorted for stable output.
        let mut by_resource: BTreeMap<String, (bool, Vec<String>)> = BTreeMap::new();
        for (info, metric) in custom {
            let entry = by_resource
                .entry(info.group_resource.to_string())
                .or_insert_with(|| (info.namespaced, Vec::new()));
            entry.1.push(metric.to_string());
        }
        if by_resource.is_empty() {
            by_resource.insert(
                "namespaces".into(),
                (false, vec![PLACEHOLDER_METRIC.into()]),
            );
        }
        for (_, metrics) in by_resource.values_mut() {
            metrics.sort();
        }
        let mut external: Vec<String> = external.map(str::to_string).collect();
        external.sort();
        if external.is_empty() {
            external.push(PLACEHOLDER_METRIC.into());
        }

        let custom_list = |version: &str| {
            let resources: Vec<Value> = by_resource
                .iter()
                .flat_map(|(resource, (namespaced, metrics))| {
                    metrics.iter().map(move |m| {
                        json!({"name": format!("{resource}/{m}"), "singularName": "", "namespaced": namespaced,
                               "kind": "MetricValueList", "verbs": ["get"]})
                    })
                })
                .collect();
            json!({"kind": "APIResourceList", "apiVersion": "v1",
                   "groupVersion": format!("{CUSTOM_GROUP}/{version}"), "resources": resources})
            .to_string()
        };
        let external_list = json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{EXTERNAL_GROUP}/v1beta1"),
            "resources": external.iter().map(|m| json!({"name": m, "singularName": "", "namespaced": true,
                "kind": "ExternalMetricValueList", "verbs": ["get"]})).collect::<Vec<_>>()
        })
        .to_string();

        let custom_version = |version: &str| {
            let resources: Vec<Value> = by_resource
                .iter()
                .map(|(resource, (namespaced, metrics))| {
                    json!({
                        "resource": resource,
                        "responseKind": {"group": "", "version": "", "kind": ""},
                        "scope": if *namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": "",
                        "verbs": [],
                        "subresources": metrics.iter().map(|m| json!({
                            "subresource": m,
                            "responseKind": {"group": CUSTOM_GROUP, "version": version, "kind": "MetricValueList"},
                            "verbs": ["get"]
                        })).collect::<Vec<_>>()
                    })
                })
                .collect();
            json!({"version": version, "resources": resources, "freshness": "Current"})
        };
        let aggregated = json!({
            "kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {},
            "items": [
                {"metadata": {"name": CUSTOM_GROUP, "creationTimestamp": null},
                 "versions": [custom_version("v1beta2"), custom_version("v1beta1")]},
                {"metadata": {"name": EXTERNAL_GROUP, "creationTimestamp": null},
                 "versions": [{"version": "v1beta1", "freshness": "Current",
                   "resources": external.iter().map(|m| json!({
                       "resource": m, "responseKind": {"group": EXTERNAL_GROUP, "version": "v1beta1", "kind": "ExternalMetricValueList"},
                       "scope": "Namespaced", "singularResource": "", "verbs": ["get"]})).collect::<Vec<_>>()}]}
            ]
        })
        .to_string();

        Documents {
            custom_v1beta1: custom_list("v1beta1"),
            custom_v1beta2: custom_list("v1beta2"),
            external_v1beta1: external_list,
            aggregated,
        }
    }
}

fn group(name: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": versions, "preferredVersion": versions[0]})
}

/// `GET /apis`
pub fn group_list() -> String {
    json!({"kind": "APIGroupList", "apiVersion": "v1",
           "groups": [group(CUSTOM_GROUP, &["v1beta2", "v1beta1"]), group(EXTERNAL_GROUP, &["v1beta1"])]})
    .to_string()
}

/// `GET /apis/<group>`
pub fn api_group(name: &str) -> String {
    let versions: &[&str] = if name == CUSTOM_GROUP {
        &["v1beta2", "v1beta1"]
    } else {
        &["v1beta1"]
    };
    let mut g = group(name, versions);
    if let Value::Object(map) = &mut g {
        map.insert("kind".into(), json!("APIGroup"));
        map.insert("apiVersion".into(), json!("v1"));
    }
    g.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::{ResourceMapper, StaticMapper};

    #[test]
    fn never_empty() {
        let docs = Documents::render(std::iter::empty(), std::iter::empty());
        let v: Value = serde_json::from_str(&docs.custom_v1beta2).expect("json");
        assert_eq!(v["resources"].as_array().map(Vec::len), Some(1));
        let e: Value = serde_json::from_str(&docs.external_v1beta1).expect("json");
        assert_eq!(e["resources"][0]["name"], PLACEHOLDER_METRIC);
    }

    #[test]
    fn lists_metrics_per_resource_with_consistent_scope() {
        let m = StaticMapper::builtin();
        let pods = m.lookup("pods").expect("pods");
        let ns = m.lookup("namespaces").expect("ns");
        let docs = Documents::render(
            vec![(&pods, "b"), (&pods, "a"), (&ns, "a")].into_iter(),
            vec!["q"].into_iter(),
        );
        let v: Value = serde_json::from_str(&docs.custom_v1beta1).expect("json");
        assert_eq!(v["groupVersion"], "custom.metrics.k8s.io/v1beta1");
        let names: Vec<_> = v["resources"]
            .as_array()
            .expect("arr")
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or("").to_string(),
                    r["namespaced"].clone(),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                ("namespaces/a".into(), json!(false)),
                ("pods/a".into(), json!(true)),
                ("pods/b".into(), json!(true))
            ]
        );
        let agg: Value = serde_json::from_str(&docs.aggregated).expect("json");
        assert_eq!(
            agg["items"][0]["versions"][0]["resources"][1]["scope"],
            "Namespaced"
        );
        assert_eq!(
            agg["items"][0]["versions"][0]["resources"][1]["subresources"][0]["subresource"],
            "a"
        );
    }

    #[test]
    fn group_documents() {
        let v: Value = serde_json::from_str(&group_list()).expect("json");
        assert_eq!(v["groups"][0]["preferredVersion"]["version"], "v1beta2");
        let g: Value = serde_json::from_str(&api_group(EXTERNAL_GROUP)).expect("json");
        assert_eq!(g["kind"], "APIGroup");
        assert_eq!(
            g["versions"][0]["groupVersion"],
            "external.metrics.k8s.io/v1beta1"
        );
    }
}
