//! The Resource Metrics API (`metrics.k8s.io/v1beta1` and `v1`) of a `--standalone` bridge, against a
//! real Prometheus scraping the demo exporter: routes, discovery, exact values, the
//! container policy, node matching, selectors and their errors, and one query per resource
//! per namespace shared by every caller. Pods and nodes from the cluster (Running pods,
//! addresses, labelSelector, kubectl top, Resource HPAs) are in `kubernetes.rs`.

mod common;

use std::time::Duration;

use common::bridge::Bridge;
use common::{Exporter, Prometheus};
use serde_json::{json, Value};

/// Gauges stand in for `rate()` results, so every value is exact. The cpu rule keeps its
/// container filter as the shipped rules do (`container!=""`); the pod-level series below is
/// there to prove the bridge ignores it even where a rule does not.
const RULES: &str = r#"
[prometheus]
url = "PROM_URL"
timeout = "2s"

[cache]
ttl = "30s"
discovery_interval = "1s"
series_max_age = "10m"

[resource_rules]
window = "30s"

[resource_rules.cpu]
container_query = 'sum by (<<.GroupBy>>) (test_container_cpu_cores{<<.LabelMatchers>>})'
node_query = 'sum by (<<.GroupBy>>) (test_node_cpu_cores{<<.LabelMatchers>>})'
resources.overrides = { namespace = { resource = "namespace" }, pod = { resource = "pod" }, node = { resource = "node" } }
container_label = "container"

[resource_rules.memory]
container_query = 'sum by (<<.GroupBy>>) (test_container_memory_bytes{<<.LabelMatchers>>})'
node_query = 'sum by (<<.GroupBy>>) (test_node_memory_bytes{<<.LabelMatchers>>})'
resources.overrides = { namespace = { resource = "namespace" }, pod = { resource = "pod" }, node = { resource = "node" } }
container_label = "container"
"#;

const BASE: &str = "/apis/metrics.k8s.io/v1beta1";

async fn fixture() -> (Exporter, Prometheus) {
    let exporter = Exporter::start_empty().await;
    let cpu = "test_container_cpu_cores";
    let mem = "test_container_memory_bytes";
    let c = |ns: &'static str, pod: &'static str, container: &'static str| {
        vec![("namespace", ns), ("pod", pod), ("container", container)]
    };
    exporter
        .set_gauge(cpu, &c("demo", "web-0", "app"), 0.0012345678)
        .await;
    exporter
        .set_gauge(mem, &c("demo", "web-0", "app"), 104857600.5)
        .await;
    exporter
        .set_gauge(cpu, &c("demo", "web-0", "mesh"), 0.25)
        .await;
    exporter
        .set_gauge(mem, &c("demo", "web-0", "mesh"), 1e9)
        .await;
    // The pod-level cgroup (no container label, as cAdvisor writes it): never a container.
    let pod_level = [("namespace", "demo"), ("pod", "web-0")];
    exporter.set_gauge(cpu, &pod_level, 9.0).await;
    exporter.set_gauge(mem, &pod_level, 9e9).await;
    exporter
        .set_gauge(cpu, &c("demo", "web-1", "app"), 1.5)
        .await;
    exporter
        .set_gauge(mem, &c("demo", "web-1", "app"), 2048.0)
        .await;
    // A container with cpu but no memory: the pod is incomplete.
    exporter
        .set_gauge(cpu, &c("demo", "half", "app"), 0.5)
        .await;
    exporter
        .set_gauge(cpu, &c("demo", "half", "sidecar"), 0.5)
        .await;
    exporter
        .set_gauge(mem, &c("demo", "half", "app"), 10.0)
        .await;
    // A negative (irate's extrapolation can give one) is missing, not 0.
    exporter
        .set_gauge(cpu, &c("demo", "negative", "app"), -0.2)
        .await;
    exporter
        .set_gauge(mem, &c("demo", "negative", "app"), 10.0)
        .await;
    exporter
        .set_gauge(cpu, &c("other", "api-0", "api"), 2.0)
        .await;
    exporter
        .set_gauge(mem, &c("other", "api-0", "api"), 3e9)
        .await;
    exporter
        .set_gauge("test_node_cpu_cores", &[("node", "node-a")], 3.5)
        .await;
    exporter
        .set_gauge("test_node_memory_bytes", &[("node", "node-a")], 8e9)
        .await;
    exporter
        .set_gauge("test_node_cpu_cores", &[("node", "node-b")], 0.5)
        .await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    prometheus
        .wait_for_series("test_node_cpu_cores", Duration::from_secs(30))
        .await;
    prometheus
        .wait_for_series("test_container_memory_bytes", Duration::from_secs(30))
        .await;
    (exporter, prometheus)
}

/// `namespace/pod: container=cpu/memory ...` for each item, to compare lists at a glance.
fn pods(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .map(|items| items.iter().map(pod).collect())
        .unwrap_or_default()
}

fn pod(item: &Value) -> String {
    let containers: Vec<String> = item["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    format!(
                        "{}={}/{}",
                        c["name"].as_str().unwrap_or("?"),
                        c["usage"]["cpu"].as_str().unwrap_or("?"),
                        c["usage"]["memory"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{}/{}: {}",
        item["metadata"]["namespace"].as_str().unwrap_or("?"),
        item["metadata"]["name"].as_str().unwrap_or("?"),
        containers.join(" ")
    )
}

async fn status(bridge: &Bridge, path: &str) -> (u16, String) {
    let (code, body) = bridge.get(path).await;
    (code, body["message"].as_str().unwrap_or("").to_string())
}

#[tokio::test]
async fn serves_pods_and_nodes_from_prometheus() {
    let (_exporter, prometheus) = fixture().await;
    let bridge = Bridge::start(&RULES.replace("PROM_URL", &prometheus.url())).await;

    // Discovery names the group only because [resource_rules] exist.
    let groups = bridge.wait_for("/apis", |v| v["groups"].is_array()).await;
    assert!(
        groups["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g["name"] == "metrics.k8s.io")),
        "{groups}"
    );
    let (code, list) = bridge.get(BASE).await;
    assert_eq!(code, 200);
    assert_eq!(
        list["resources"],
        json!([
            {"name":"nodes","singularName":"","namespaced":false,"kind":"NodeMetrics","verbs":["get","list"]},
            {"name":"pods","singularName":"","namespaced":true,"kind":"PodMetrics","verbs":["get","list"]}
        ])
    );

    // Every pod with complete data, exact values, containers sorted, the pod-level cgroup
    // ignored; `half` (a container without memory) and `negative` left out.
    let all = bridge
        .wait_for(&format!("{BASE}/pods"), |v| {
            v["items"].as_array().is_some_and(|i| i.len() == 3)
        })
        .await;
    assert_eq!(all["kind"], "PodMetricsList");
    assert_eq!(all["apiVersion"], "metrics.k8s.io/v1beta1");
    assert_eq!(
        pods(&all),
        [
            "demo/web-0: app=1234568n/104857601 mesh=250m/1G",
            "demo/web-1: app=1500m/2048",
            "other/api-0: api=2/3G",
        ]
    );
    let item = &all["items"][0];
    assert_eq!(item["window"], "30s");
    let stamp = item["timestamp"].as_str().unwrap_or("");
    assert!(
        stamp.len() == 20 && stamp.ends_with('Z'),
        "timestamp {stamp:?}"
    );

    // The two queries of that answer are shared: asking again (all, and per namespace, once
    // each) within the TTL runs only the two per-namespace queries.
    let queries = "kube_metrics_bridge_prometheus_request_duration_seconds_count{backend=\"default\",call=\"query\",outcome=\"ok\"}";
    let before = bridge.self_metric(queries).await.unwrap_or(0.0);
    for _ in 0..3 {
        let (code, _) = bridge.get(&format!("{BASE}/pods")).await;
        assert_eq!(code, 200);
        let (code, _) = bridge.get(&format!("{BASE}/namespaces/demo/pods")).await;
        assert_eq!(code, 200);
    }
    let after = bridge.self_metric(queries).await.unwrap_or(0.0);
    assert_eq!(after - before, 2.0, "one cpu and one memory query for demo");

    // One namespace, a field selector, a get.
    let (_, demo) = bridge.get(&format!("{BASE}/namespaces/demo/pods")).await;
    assert_eq!(pods(&demo).len(), 2);
    let (_, one) = bridge
        .get(&format!(
            "{BASE}/namespaces/demo/pods?fieldSelector=metadata.name%3Dweb-1"
        ))
        .await;
    assert_eq!(pods(&one), ["demo/web-1: app=1500m/2048"]);
    let (_, not_web1) = bridge
        .get(&format!(
            "{BASE}/pods?fieldSelector=metadata.name!%3Dweb-1,metadata.namespace%3Ddemo"
        ))
        .await;
    assert_eq!(pods(&not_web1).len(), 1);
    let (code, got) = bridge
        .get(&format!("{BASE}/namespaces/demo/pods/web-0"))
        .await;
    assert_eq!(code, 200);
    assert_eq!(got["kind"], "PodMetrics");
    assert_eq!(pod(&got), "demo/web-0: app=1234568n/104857601 mesh=250m/1G");

    // Errors, each its own Status.
    assert_eq!(
        status(&bridge, &format!("{BASE}/namespaces/demo/pods/half")).await,
        (
            404,
            r#"podmetrics.metrics.k8s.io "demo/half" not found"#.to_string()
        )
    );
    assert_eq!(
        status(&bridge, &format!("{BASE}/pods?fieldSelector=spec.nodeName%3Dn")).await,
        (
            400,
            r#""spec.nodeName" is not a known field selector: only "metadata.name", "metadata.namespace""#
                .to_string()
        )
    );
    assert_eq!(
        status(
            &bridge,
            &format!("{BASE}/namespaces/demo/pods/web-0?fieldSelector=metadata.name%3Dweb-1")
        )
        .await,
        (
            400,
            "fieldSelector metadata.name doesn't match requested name".to_string()
        )
    );
    let (code, _) = status(&bridge, &format!("{BASE}/pods?labelSelector=app%3Dweb")).await;
    assert_eq!(code, 400, "a labelSelector needs a cluster");
    let (code, _) = status(&bridge, &format!("{BASE}/pods?watch=1")).await;
    assert_eq!(code, 405);

    // Nodes: node-b has cpu only, so it is not listed.
    let (code, nodes) = bridge.get(&format!("{BASE}/nodes")).await;
    assert_eq!(code, 200, "{nodes}");
    assert_eq!(nodes["kind"], "NodeMetricsList");
    let usage: Vec<(String, Value)> = nodes["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|n| {
                    (
                        n["metadata"]["name"].as_str().unwrap_or("").to_string(),
                        n["usage"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        usage,
        [(
            "node-a".to_string(),
            json!({"cpu": "3500m", "memory": "8G"})
        )]
    );
    let (code, node) = bridge.get(&format!("{BASE}/nodes/node-a")).await;
    assert_eq!((code, node["kind"].as_str()), (200, Some("NodeMetrics")));
    assert_eq!(
        status(&bridge, &format!("{BASE}/nodes/node-b")).await,
        (
            404,
            r#"nodemetrics.metrics.k8s.io "node-b" not found"#.to_string()
        )
    );

    // kubectl get's Accept gets a Table (JSON); the HPA's gets protobuf.
    let table: Value = bridge
        .client()
        .get(bridge.url(&format!("{BASE}/namespaces/demo/pods")))
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
        )
        .send()
        .await
        .expect("table request")
        .json()
        .await
        .expect("table json");
    assert_eq!(table["kind"], "Table", "{table}");
    assert_eq!(
        table["rows"][0]["cells"],
        json!(["web-0", "251234568n", "1104857601", "30s"])
    );
    let proto = bridge
        .client()
        .get(bridge.url(&format!("{BASE}/namespaces/demo/pods")))
        .header("Accept", "application/vnd.kubernetes.protobuf, */*")
        .send()
        .await
        .expect("protobuf request");
    assert_eq!(
        proto
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/vnd.kubernetes.protobuf")
    );
    let bytes = proto.bytes().await.expect("protobuf body");
    assert!(bytes.starts_with(&[0x6b, 0x38, 0x73, 0x00]), "{bytes:?}");

    // metrics.k8s.io/v1 (what kubectl 1.37+ asks when discovery lists it): the same objects,
    // only the apiVersion differs; it has its own resource list.
    let (code, v1_list) = bridge.get("/apis/metrics.k8s.io/v1").await;
    assert_eq!(code, 200);
    assert_eq!(v1_list["groupVersion"], "metrics.k8s.io/v1");
    assert_eq!(v1_list["resources"], list["resources"]);
    let (code, v1beta1_pods) = bridge.get(&format!("{BASE}/namespaces/demo/pods")).await;
    let (v1_code, v1_pods) = bridge
        .get("/apis/metrics.k8s.io/v1/namespaces/demo/pods")
        .await;
    assert_eq!((code, v1_code), (200, 200));
    assert_eq!(v1_pods["apiVersion"], "metrics.k8s.io/v1");
    // Timestamps aside: the two requests may straddle a cache refresh (the gauges are constant).
    let comparable = |answer: &Value| {
        let mut a = answer.clone();
        a["apiVersion"] = json!("");
        for item in a["items"].as_array_mut().into_iter().flatten() {
            item["timestamp"] = json!("");
        }
        a
    };
    assert_eq!(
        comparable(&v1_pods),
        comparable(&v1beta1_pods),
        "v1 and v1beta1 answers differ"
    );
    let (code, v1_node) = bridge.get("/apis/metrics.k8s.io/v1/nodes/node-a").await;
    assert_eq!((code, v1_node["kind"].as_str()), (200, Some("NodeMetrics")));
    assert_eq!(v1_node["apiVersion"], "metrics.k8s.io/v1");
    let (code, _) = bridge.get("/apis/metrics.k8s.io/v1alpha1/nodes").await;
    assert_eq!(code, 404, "v1alpha1 is not served");

    // What was left out is counted.
    let omitted = bridge
        .self_metric(
            "kube_metrics_bridge_resource_metrics_omitted_total{reason=\"incomplete_pod\"}",
        )
        .await
        .unwrap_or(0.0);
    assert!(omitted >= 1.0, "incomplete pods counted: {omitted}");
}

#[tokio::test]
async fn the_group_is_absent_without_resource_rules() {
    let (_exporter, prometheus) = fixture().await;
    let rules = format!(
        r#"
[prometheus]
url = "{}"

[[external_rules]]
series_query = 'test_node_cpu_cores'
namespaced = false
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}})'
"#,
        prometheus.url()
    );
    let bridge = Bridge::start(&rules).await;
    let groups = bridge.wait_for("/apis", |v| v["groups"].is_array()).await;
    assert!(
        groups["groups"]
            .as_array()
            .is_some_and(|g| g.iter().all(|g| g["name"] != "metrics.k8s.io")),
        "{groups}"
    );
    for path in [
        "/apis/metrics.k8s.io".to_string(),
        BASE.to_string(),
        format!("{BASE}/pods"),
        format!("{BASE}/nodes/node-a"),
        "/apis/metrics.k8s.io/v1/pods".to_string(),
        "/openapi/v3/apis/metrics.k8s.io/v1beta1".to_string(),
        "/openapi/v3/apis/metrics.k8s.io/v1".to_string(),
    ] {
        let (code, _) = bridge.get(&path).await;
        assert_eq!(code, 404, "{path}");
    }
}
