//! Discovery documents: `APIGroupList`, `APIGroup`, `APIResourceList`, and aggregated
//! discovery (`apidiscovery.k8s.io/v2`), shaped as kube-apiserver serves them.
//!
//! They are rendered once per registry (after each series discovery), so a discovery GET
//! never waits on Prometheus and costs a copy; the aggregator's availability probe gives us
//! five seconds. A list is never empty: client-go treats an empty resource list as an error,
//! so before anything is discovered a placeholder entry stands in (see README).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::kube::resources::ResourceInfo;
use crate::request::{CustomVersion, CUSTOM_GROUP, EXTERNAL_GROUP};
use crate::response::resource::{ResourceVersion, RESOURCE_GROUP};

/// The resource name listed while no metric has been discovered yet.
pub const PLACEHOLDER_METRIC: &str = "none_discovered_yet";

/// The media type parameters of aggregated discovery, v2.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// What the discovery documents list: the custom metrics of each version by resource, the
/// external metrics, and whether `metrics.k8s.io` is served. The bridge's own come from its
/// registry; an upstream's are merged in ([`crate::upstream`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    pub custom_v1beta1: CustomListing,
    pub custom_v1beta2: CustomListing,
    pub external: BTreeSet<String>,
    /// Whether `metrics.k8s.io` is served (the rules have `[resource_rules]`).
    pub resource_metrics: bool,
}

/// Resource (`pods`, `deployments.apps`) -> its scope and metrics, sorted for stable output.
pub type CustomListing = BTreeMap<String, CustomResource>;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomResource {
    pub namespaced: bool,
    pub metrics: BTreeSet<String>,
}

impl Listing {
    /// The bridge's own metrics: the same custom metrics in both versions.
    pub fn of<'a>(
        custom: impl Iterator<Item = (&'a ResourceInfo, &'a str)>,
        external: impl Iterator<Item = &'a str>,
        resource_metrics: bool,
    ) -> Self {
        let mut by_resource = CustomListing::new();
        for (info, metric) in custom {
            by_resource
                .entry(info.group_resource.to_string())
                .or_insert_with(|| CustomResource {
                    namespaced: info.namespaced,
                    metrics: BTreeSet::new(),
                })
                .metrics
                .insert(metric.to_string());
        }
        Listing {
            custom_v1beta2: by_resource.clone(),
            custom_v1beta1: by_resource,
            external: external.map(str::to_string).collect(),
            resource_metrics,
        }
    }

    pub fn custom(&self, version: CustomVersion) -> &CustomListing {
        match version {
            CustomVersion::V1beta1 => &self.custom_v1beta1,
            CustomVersion::V1beta2 => &self.custom_v1beta2,
        }
    }

    pub fn custom_mut(&mut self, version: CustomVersion) -> &mut CustomListing {
        match version {
            CustomVersion::V1beta1 => &mut self.custom_v1beta1,
            CustomVersion::V1beta2 => &mut self.custom_v1beta2,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Documents {
    pub custom_v1beta1: String,
    pub custom_v1beta2: String,
    pub external_v1beta1: String,
    /// `metrics.k8s.io/v1beta1`'s resource list, when `[resource_rules]` serve it.
    pub resource_v1beta1: Option<String>,
    /// `metrics.k8s.io/v1`'s, the same resources.
    pub resource_v1: Option<String>,
    /// `/apis`: the groups served.
    pub group_list: String,
    pub aggregated: String,
}

impl Documents {
    /// Without `resource_metrics` the `metrics.k8s.io` group is not listed at all, so kubectl
    /// and the HPA never mistake the bridge for a resource metrics server.
    pub fn render(listing: &Listing) -> Self {
        let resource_metrics = listing.resource_metrics;
        let placeholder = || {
            CustomListing::from([(
                "namespaces".to_string(),
                CustomResource {
                    namespaced: false,
                    metrics: BTreeSet::from([PLACEHOLDER_METRIC.to_string()]),
                },
            )])
        };
        let never_empty = |l: &CustomListing| {
            if l.is_empty() {
                placeholder()
            } else {
                l.clone()
            }
        };
        let v1beta1 = never_empty(&listing.custom_v1beta1);
        let v1beta2 = never_empty(&listing.custom_v1beta2);
        let by_version = |version: &str| {
            if version == "v1beta1" {
                &v1beta1
            } else {
                &v1beta2
            }
        };
        let mut external: Vec<&str> = listing.external.iter().map(String::as_str).collect();
        if external.is_empty() {
            external.push(PLACEHOLDER_METRIC);
        }

        let custom_list = |version: &str| {
            let resources: Vec<Value> = by_version(version)
                .iter()
                .flat_map(|(resource, r)| {
                    r.metrics.iter().map(move |m| {
                        json!({"name": format!("{resource}/{m}"), "singularName": "", "namespaced": r.namespaced,
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
            let resources: Vec<Value> = by_version(version)
                .iter()
                .map(|(resource, r)| {
                    json!({
                        "resource": resource,
                        "responseKind": {"group": "", "version": "", "kind": ""},
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": "",
                        "verbs": [],
                        "subresources": r.metrics.iter().map(|m| json!({
                            "subresource": m,
                            "responseKind": {"group": CUSTOM_GROUP, "version": version, "kind": "MetricValueList"},
                            "verbs": ["get"]
                        })).collect::<Vec<_>>()
                    })
                })
                .collect();
            json!({"version": version, "resources": resources, "freshness": "Current"})
        };
        let mut items = vec![
            json!({"metadata": {"name": CUSTOM_GROUP, "creationTimestamp": null},
                 "versions": [custom_version("v1beta2"), custom_version("v1beta1")]}),
            json!({"metadata": {"name": EXTERNAL_GROUP, "creationTimestamp": null},
                 "versions": [{"version": "v1beta1", "freshness": "Current",
                   "resources": external.iter().map(|m| json!({
                       "resource": m, "responseKind": {"group": EXTERNAL_GROUP, "version": "v1beta1", "kind": "ExternalMetricValueList"},
                       "scope": "Namespaced", "singularResource": "", "verbs": ["get"]})).collect::<Vec<_>>()}]}),
        ];
        let mut groups = vec![
            group(CUSTOM_GROUP, &["v1beta2", "v1beta1"]),
            group(EXTERNAL_GROUP, &["v1beta1"]),
        ];
        if resource_metrics {
            let resource_version = |version: ResourceVersion| {
                let version = version.as_str();
                json!({"version": version, "freshness": "Current",
                  "resources": RESOURCE_KINDS.iter().map(|(resource, kind, namespaced)| json!({
                      "resource": resource,
                      "responseKind": {"group": RESOURCE_GROUP, "version": version, "kind": kind},
                      "scope": if *namespaced { "Namespaced" } else { "Cluster" },
                      "singularResource": "", "verbs": ["get", "list"]})).collect::<Vec<_>>()})
            };
            items.push(
                json!({"metadata": {"name": RESOURCE_GROUP, "creationTimestamp": null},
                "versions": ResourceVersion::ALL.map(resource_version)}),
            );
            groups.push(group(RESOURCE_GROUP, &RESOURCE_VERSIONS));
        }
        let aggregated = json!({
            "kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {},
            "items": items
        })
        .to_string();

        Documents {
            custom_v1beta1: custom_list("v1beta1"),
            custom_v1beta2: custom_list("v1beta2"),
            external_v1beta1: external_list,
            resource_v1beta1: resource_metrics.then(|| resource_list(ResourceVersion::V1beta1)),
            resource_v1: resource_metrics.then(|| resource_list(ResourceVersion::V1)),
            group_list: json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
                .to_string(),
            aggregated,
        }
    }
}

/// The Resource Metrics API's resources: (plural, kind, namespaced), as metrics-server lists
/// them (sorted; `singularName` empty; verbs get and list, no watch).
const RESOURCE_KINDS: [(&str, &str, bool); 2] = [
    ("nodes", "NodeMetrics", false),
    ("pods", "PodMetrics", true),
];

/// `metrics.k8s.io`'s versions, preferred first.
const RESOURCE_VERSIONS: [&str; 2] = [
    ResourceVersion::ALL[0].as_str(),
    ResourceVersion::ALL[1].as_str(),
];

fn resource_list(version: ResourceVersion) -> String {
    json!({"kind": "APIResourceList", "apiVersion": "v1",
           "groupVersion": version.api_version(),
           "resources": RESOURCE_KINDS.iter().map(|(name, kind, namespaced)| json!({
               "name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
               "verbs": ["get", "list"]})).collect::<Vec<_>>()})
    .to_string()
}

fn group(name: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": versions, "preferredVersion": versions[0]})
}

/// `GET /apis/<group>`
pub fn api_group(name: &str) -> String {
    let versions: &[&str] = match name {
        CUSTOM_GROUP => &["v1beta2", "v1beta1"],
        RESOURCE_GROUP => &RESOURCE_VERSIONS,
        _ => &["v1beta1"],
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
        let docs = Documents::render(&Listing::default());
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
        let docs = Documents::render(&Listing::of(
            vec![(&pods, "b"), (&pods, "a"), (&ns, "a")].into_iter(),
            vec!["q"].into_iter(),
            false,
        ));
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

    fn on_contains_group() -> bool {
        let on = Documents::render(&Listing {
            resource_metrics: true,
            ..Listing::default()
        });
        on.group_list.contains(r#""name":"metrics.k8s.io""#)
            && on.aggregated.contains(r#""name":"metrics.k8s.io""#)
    }

    #[test]
    fn resource_metrics_are_listed_only_when_served() {
        let off = Documents::render(&Listing::default());
        assert!(off.resource_v1beta1.is_none() && off.resource_v1.is_none());
        assert!(!off.group_list.contains(r#""name":"metrics.k8s.io""#));
        assert!(!off.aggregated.contains(r#""name":"metrics.k8s.io""#));
        assert!(on_contains_group());
        let on = Documents::render(&Listing {
            resource_metrics: true,
            ..Listing::default()
        });
        let list: Value =
            serde_json::from_str(on.resource_v1beta1.as_deref().unwrap_or("")).expect("json");
        assert_eq!(
            list,
            json!({"kind":"APIResourceList","apiVersion":"v1","groupVersion":"metrics.k8s.io/v1beta1","resources":[
                {"name":"nodes","singularName":"","namespaced":false,"kind":"NodeMetrics","verbs":["get","list"]},
                {"name":"pods","singularName":"","namespaced":true,"kind":"PodMetrics","verbs":["get","list"]}]})
        );
        let groups: Value = serde_json::from_str(&on.group_list).expect("json");
        // v1 is preferred (kubectl asks the first version it knows); v1beta1 is listed too.
        assert_eq!(
            groups["groups"][2]["preferredVersion"]["groupVersion"],
            "metrics.k8s.io/v1"
        );
        assert_eq!(
            groups["groups"][2]["versions"][1]["groupVersion"],
            "metrics.k8s.io/v1beta1"
        );
        let v1: Value =
            serde_json::from_str(on.resource_v1.as_deref().unwrap_or("")).expect("json");
        assert_eq!(v1["groupVersion"], "metrics.k8s.io/v1");
        assert_eq!(v1["resources"], list["resources"]);
        let agg: Value = serde_json::from_str(&on.aggregated).expect("json");
        assert_eq!(agg["items"][2]["metadata"]["name"], RESOURCE_GROUP);
        for (i, version) in ["v1", "v1beta1"].into_iter().enumerate() {
            let v = &agg["items"][2]["versions"][i];
            assert_eq!(v["version"], version);
            assert_eq!(v["resources"][1]["responseKind"]["kind"], "PodMetrics");
            assert_eq!(v["resources"][1]["responseKind"]["version"], version);
        }
        let g: Value = serde_json::from_str(&api_group(RESOURCE_GROUP)).expect("json");
        assert_eq!(g["versions"][0]["version"], "v1");
        assert_eq!(g["versions"][1]["version"], "v1beta1");
    }

    #[test]
    fn group_documents() {
        let docs = Documents::render(&Listing::default());
        let v: Value = serde_json::from_str(&docs.group_list).expect("json");
        assert_eq!(v["groups"][0]["preferredVersion"]["version"], "v1beta2");
        let g: Value = serde_json::from_str(&api_group(EXTERNAL_GROUP)).expect("json");
        assert_eq!(g["kind"], "APIGroup");
        assert_eq!(
            g["versions"][0]["groupVersion"],
            "external.metrics.k8s.io/v1beta1"
        );
    }
}
