//! Every route and version of the metrics APIs, against a real Prometheus scraping the demo
//! exporter, through the real binary over TLS.

mod common;

use std::time::{Duration, Instant};

use common::bridge::{tls_client, Bridge};
use common::{wait_until, Exporter, Prometheus};
use serde_json::{json, Value};

const RULES: &str = r#"
[prometheus]
url = "PROM_URL"
timeout = "2s"

[cache]
ttl = "1s"
discovery_interval = "1s"
series_max_age = "10m"

[[rules]]
series_query = '{__name__=~"pod_load|http_hits",namespace!="",pod!=""}'
resources.overrides = { namespace = { resource = "namespace" }, pod = { resource = "pod" }, service = { resource = "service" } }
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'

[[rules]]
series_query = 'namespace_active_sessions{namespace!=""}'
resources.overrides = { namespace = { resource = "namespace" } }
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'

[[rules]]
series_query = 'node_temperature_celsius'
resources.template = "<<.Resource>>"
metrics_query = 'max(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
window = "30s"

[[rules]]
series_query = 'pod_ratio{namespace!="",pod!=""}'
resources.overrides = { namespace = { resource = "namespace" }, pod = { resource = "pod" } }
name = { as = "ratio" }
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>) / sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'

[[rules]]
series_query = 'pod_load{namespace!="",pod!=""}'
resources.overrides = { namespace = { resource = "namespace" }, pod = { resource = "pod" } }
name = { matches = "^pod_load$", as = "pod_load_or_zero" }
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
on_missing = "zero"

[[external_rules]]
series_query = 'queue_messages_ready{namespace!=""}'
resources.overrides = { namespace = { resource = "namespace" } }
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>}) by (queue)'

[[external_rules]]
series_query = 'cluster_backlog'
namespaced = false
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>})'
on_missing = "zero"
"#;

async fn fixture() -> (Exporter, Prometheus) {
    let exporter = Exporter::start_empty().await;
    let web = [("namespace", "demo"), ("service", "web")];
    let with = |pod: &'static str| {
        let mut l = web.to_vec();
        l.push(("pod", pod));
        l
    };
    exporter.set_gauge("pod_load", &with("web-0"), 1.5).await;
    exporter.set_gauge("pod_load", &with("web-1"), 1000.0).await;
    exporter
        .set_gauge("pod_load", &with("web-2"), 0.1 + 0.2)
        .await;
    exporter
        .set_gauge("pod_load", &[("namespace", "demo"), ("pod", "huge")], 1e20)
        .await;
    exporter
        .set_gauge("pod_load", &[("namespace", "other"), ("pod", "api-0")], 7.0)
        .await;
    exporter
        .set_gauge(
            "http_hits",
            &[("namespace", "demo"), ("pod", "web-0"), ("verb", "GET")],
            2.0,
        )
        .await;
    exporter
        .set_gauge(
            "http_hits",
            &[("namespace", "demo"), ("pod", "web-0"), ("verb", "POST")],
            3.0,
        )
        .await;
    exporter
        .set_gauge("pod_ratio", &[("namespace", "demo"), ("pod", "web-0")], 4.0)
        .await;
    exporter
        .set_gauge("pod_ratio", &[("namespace", "demo"), ("pod", "idle")], 0.0)
        .await;
    exporter
        .set_gauge("namespace_active_sessions", &[("namespace", "demo")], 17.0)
        .await;
    exporter
        .set_gauge("node_temperature_celsius", &[("node", "node-1")], 45.5)
        .await;
    exporter
        .set_gauge(
            "queue_messages_ready",
            &[("namespace", "demo"), ("queue", "orders")],
            42.0,
        )
        .await;
    exporter
        .set_gauge(
            "queue_messages_ready",
            &[("namespace", "demo"), ("queue", "emails")],
            7.0,
        )
        .await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    prometheus
        .wait_for_series("queue_messages_ready", Duration::from_secs(30))
        .await;
    (exporter, prometheus)
}

fn rules_for(prometheus: &Prometheus) -> String {
    RULES.replace("PROM_URL", &prometheus.url())
}

async fn discovered(bridge: &Bridge) {
    bridge
        .wait_for("/apis/custom.metrics.k8s.io/v1beta2", |v| {
            v["resources"]
                .as_array()
                .is_some_and(|r| r.iter().any(|e| e["name"] == "pods/pod_load"))
        })
        .await;
}

fn values(list: &Value) -> Vec<(String, String)> {
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    (
                        i["describedObject"]["name"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                        i["value"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn serves_every_route_and_version() {
    let (_exporter, prometheus) = fixture().await;
    let bridge = Bridge::start(&rules_for(&prometheus)).await;
    discovered(&bridge).await;
    const C2: &str = "/apis/custom.metrics.k8s.io/v1beta2";
    const C1: &str = "/apis/custom.metrics.k8s.io/v1beta1";
    const E1: &str = "/apis/external.metrics.k8s.io/v1beta1";

    // Discovery documents.
    let (code, apis) = bridge.get("/apis").await;
    assert_eq!(code, 200);
    assert_eq!(
        apis["groups"][0]["preferredVersion"]["groupVersion"],
        "custom.metrics.k8s.io/v1beta2"
    );
    let (_, group) = bridge.get("/apis/external.metrics.k8s.io").await;
    assert_eq!(group["kind"], "APIGroup");
    for version in [C1, C2] {
        let (code, list) = bridge.get(version).await;
        assert_eq!(code, 200);
        let names: Vec<(&str, bool)> = list["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or(""),
                    r["namespaced"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        for expected in [
            ("pods/pod_load", true),
            ("namespaces/pod_load", false),
            ("services/pod_load", true),
            ("pods/http_hits", true),
            ("nodes/node_temperature_celsius", false),
            ("namespaces/namespace_active_sessions", false),
            ("pods/ratio", true),
        ] {
            assert!(
                names.contains(&expected),
                "{expected:?} missing from {names:?}"
            );
        }
    }
    let (_, ext) = bridge.get(E1).await;
    let ext_names: Vec<&str> = ext["resources"]
        .as_array()
        .expect("r")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(ext_names.contains(&"queue_messages_ready"), "{ext_names:?}");

    // Aggregated discovery, as kube-aggregator asks for it.
    let agg = bridge
        .client()
        .get(bridge.url("/apis"))
        .header(
            "Accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )
        .send()
        .await
        .expect("aggregated");
    assert!(agg.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .contains("as=APIGroupDiscoveryList"));
    let agg: Value = agg.json().await.expect("json");
    assert_eq!(agg["kind"], "APIGroupDiscoveryList");

    // Pods, wildcard, both versions; client-go's %2A; exact canonical values.
    let (code, v2) = bridge
        .get(&format!("{C2}/namespaces/demo/pods/%2A/pod_load"))
        .await;
    assert_eq!(code, 200, "{v2}");
    assert_eq!(v2["kind"], "MetricValueList");
    assert_eq!(v2["apiVersion"], "custom.metrics.k8s.io/v1beta2");
    assert_eq!(
        values(&v2),
        pairs(&[
            ("huge", "9223372036854775"),
            ("web-0", "1500m"),
            ("web-1", "1k"),
            ("web-2", "300m")
        ]),
        "float noise removed, huge clamped, other namespace absent"
    );
    let first = &v2["items"][1];
    assert_eq!(
        first["describedObject"],
        json!({"kind": "Pod", "namespace": "demo", "name": "web-0", "apiVersion": "v1"})
    );
    assert_eq!(
        first["metric"],
        json!({"name": "pod_load", "selector": null})
    );
    let ts = first["timestamp"].as_str().expect("timestamp");
    assert!(ts.ends_with('Z') && ts.len() == 20, "{ts}");
    let (_, v1) = bridge
        .get(&format!("{C1}/namespaces/demo/pods/*/pod_load"))
        .await;
    assert_eq!(v1["apiVersion"], "custom.metrics.k8s.io/v1beta1");
    assert_eq!(v1["items"][1]["metricName"], "pod_load");
    assert_eq!(v1["items"][1]["selector"], Value::Null);
    assert_eq!(values(&v1), values(&v2));

    // Named object; singular and short resource names.
    for resource in ["pods", "pod", "po"] {
        let (code, one) = bridge
            .get(&format!("{C2}/namespaces/demo/{resource}/web-1/pod_load"))
            .await;
        assert_eq!(code, 200, "{resource}: {one}");
        assert_eq!(values(&one), pairs(&[("web-1", "1k")]));
    }
    // Object metric on a Service; cluster-scoped node; namespace metric.
    let (_, svc) = bridge
        .get(&format!("{C2}/namespaces/demo/services/web/pod_load"))
        .await;
    assert_eq!(values(&svc), pairs(&[("web", "1001800m")]));
    assert_eq!(svc["items"][0]["describedObject"]["kind"], "Service");
    let (_, node) = bridge
        .get(&format!("{C1}/nodes/node-1/node_temperature_celsius"))
        .await;
    assert_eq!(values(&node), pairs(&[("node-1", "45500m")]));
    assert_eq!(node["items"][0]["window"], 30);
    assert!(node["items"][0]["describedObject"]
        .get("namespace")
        .is_none());
    let (_, nodes) = bridge
        .get(&format!("{C2}/nodes/*/node_temperature_celsius"))
        .await;
    assert_eq!(nodes["items"][0]["windowSeconds"], 30);
    let (code, ns) = bridge
        .get(&format!(
            "{C2}/namespaces/demo/metrics/namespace_active_sessions"
        ))
        .await;
    assert_eq!(code, 200, "{ns}");
    assert_eq!(
        ns["items"][0]["describedObject"],
        json!({"kind": "Namespace", "name": "demo", "apiVersion": "v1"})
    );
    assert_eq!(ns["items"][0]["value"], "17");

    // metricLabelSelector, echoed back as a LabelSelector.
    let (_, all) = bridge
        .get(&format!("{C2}/namespaces/demo/pods/web-0/http_hits"))
        .await;
    assert_eq!(values(&all), pairs(&[("web-0", "5")]));
    let (_, get) = bridge
        .get(&format!(
            "{C2}/namespaces/demo/pods/web-0/http_hits?metricLabelSelector=verb%3DGET"
        ))
        .await;
    assert_eq!(values(&get), pairs(&[("web-0", "2")]));
    assert_eq!(
        get["items"][0]["metric"]["selector"],
        json!({"matchLabels": {"verb": "GET"}})
    );
    let (_, set) = bridge
        .get(&format!(
            "{C1}/namespaces/demo/pods/web-0/http_hits?metricLabelSelector=verb+notin+%28GET%29"
        ))
        .await;
    assert_eq!(values(&set), pairs(&[("web-0", "3")]));
    assert_eq!(
        set["items"][0]["selector"]["matchExpressions"][0]["operator"],
        "NotIn"
    );
    let (_, exists) = bridge
        .get(&format!(
            "{C2}/namespaces/demo/pods/web-0/http_hits?metricLabelSelector=%21verb"
        ))
        .await;
    assert_eq!(exists["code"], 404, "no series lacks verb: {exists}");

    // NaN is missing: the wildcard leaves it out, the named object is a 404.
    let (_, ratio) = bridge
        .get(&format!("{C2}/namespaces/demo/pods/*/ratio"))
        .await;
    assert_eq!(values(&ratio), pairs(&[("web-0", "1")]));
    let (code, _) = bridge
        .get(&format!("{C2}/namespaces/demo/pods/idle/ratio"))
        .await;
    assert_eq!(code, 404);

    // on_missing: error gives 404, zero gives 0.
    let (code, missing) = bridge
        .get(&format!("{C2}/namespaces/demo/pods/ghost/pod_load"))
        .await;
    assert_eq!(code, 404);
    assert_eq!(missing["reason"], "NotFound");
    assert!(
        missing["message"]
            .as_str()
            .unwrap_or("")
            .contains("pod_load"),
        "{missing}"
    );
    let (code, zero) = bridge
        .get(&format!("{C2}/namespaces/demo/pods/ghost/pod_load_or_zero"))
        .await;
    assert_eq!(code, 200, "{zero}");
    assert_eq!(values(&zero), pairs(&[("ghost", "0")]));

    // External: namespace added, labelSelector applied; namespaced = false; zero.
    let (code, q) = bridge
        .get(&format!("{E1}/namespaces/demo/queue_messages_ready"))
        .await;
    assert_eq!(code, 200, "{q}");
    assert_eq!(q["kind"], "ExternalMetricValueList");
    let mut got: Vec<(String, String)> = q["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["metricLabels"]["queue"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                i["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, pairs(&[("emails", "7"), ("orders", "42")]));
    let (_, orders) = bridge
        .get(&format!(
            "{E1}/namespaces/demo/queue_messages_ready?labelSelector=queue%3Dorders"
        ))
        .await;
    assert_eq!(orders["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(orders["items"][0]["value"], "42");
    let (code, _) = bridge
        .get(&format!("{E1}/namespaces/other/queue_messages_ready"))
        .await;
    assert_eq!(code, 404, "no queue in namespace other");

    // Errors as Status objects with the right codes.
    let status = |v: &Value| {
        (
            v["kind"].as_str().unwrap_or("").to_string(),
            v["code"].as_u64().unwrap_or(0),
        )
    };
    for (path, code, reason) in [
        (format!("{C2}/namespaces/demo/pods/*/no_such_metric"), 404, "NotFound"),
        (format!("{C2}/namespaces/demo/widgets/*/pod_load"), 404, "NotFound"),
        (format!("{C2}/namespaces/demo/pods/*/pod_load?labelSelector=app%3Dweb"), 400, "BadRequest"),
        (format!("{C2}/namespaces/demo/pods/*/pod_load?metricLabelSelector=a%3D%3D%3Db"), 400, "BadRequest"),
        (format!("{C2}/namespaces/demo/pods/*/pod_load?metricLabelSelector=app.kubernetes.io%2Fname%3Dx"), 400, "BadRequest"),
        (format!("{C2}/namespaces/demo/foo"), 400, "BadRequest"),
        (format!("{C2}/nodes/foo"), 404, "NotFound"),
        (format!("{C2}/namespaces/demo/nodes/node-1/node_temperature_celsius"), 400, "BadRequest"),
        (format!("{E1}/namespaces/demo/nope"), 404, "NotFound"),
    ] {
        let (got, body) = bridge.get(&path).await;
        assert_eq!(got, code, "{path}: {body}");
        assert_eq!(status(&body), ("Status".to_string(), code as u64), "{path}: {body}");
        assert_eq!(body["reason"], reason, "{path}");
    }
    let (_, standalone) = bridge
        .get(&format!(
            "{C2}/namespaces/demo/pods/*/pod_load?labelSelector=app%3Dweb"
        ))
        .await;
    assert!(
        standalone["message"]
            .as_str()
            .unwrap_or("")
            .contains("needs a Kubernetes connection"),
        "{standalone}"
    );
    let post = bridge
        .client()
        .post(bridge.url(&format!("{C2}/namespaces/demo/pods/*/pod_load")))
        .send()
        .await
        .expect("post");
    assert_eq!(post.status().as_u16(), 405);

    // OpenAPI, health, version.
    let (code, v2spec) = bridge.get("/openapi/v2").await;
    assert_eq!(code, 200);
    assert_eq!(v2spec["swagger"], "2.0");
    let (_, index) = bridge.get("/openapi/v3").await;
    let url = index["paths"]["apis/custom.metrics.k8s.io/v1beta2"]["serverRelativeURL"]
        .as_str()
        .expect("v3 url")
        .to_string();
    let (code, v3) = bridge.get(&url).await;
    assert_eq!((code, v3["openapi"].as_str()), (200, Some("3.0.0")));
    for path in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(bridge.get_text(path).await, (200, "ok".to_string()));
    }
    let (_, version) = bridge.get("/version").await;
    assert!(version["gitVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with('v')));

    // HTTP/2 serves the same answer.
    let h2 = tls_client(&bridge.dir.path().join("certs").join("ca.crt"), true);
    let r = h2
        .get(bridge.url(&format!("{C2}/namespaces/demo/pods/web-1/pod_load")))
        .send()
        .await
        .expect("h2");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        values(&r.json().await.expect("json")),
        pairs(&[("web-1", "1k")])
    );

    // The bridge counted what it did.
    assert!(
        bridge
            .self_metric("kube_metrics_bridge_values_adjusted_total{kind=\"clamped\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        bridge
            .self_metric("kube_metrics_bridge_values_adjusted_total{kind=\"non_finite\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        bridge
            .self_metric("kube_metrics_bridge_discovered_metrics{api=\"custom\"}")
            .await
            .unwrap_or(0.0)
            >= 7.0
    );
    assert_eq!(
        bridge.stop().await.code(),
        Some(0),
        "graceful shutdown exits 0"
    );
}

/// Hostile request content never changes a query's structure: it is refused, or it stays
/// inside a quoted string and matches nothing.
#[tokio::test]
async fn hostile_input_cannot_inject_promql() {
    let (_exporter, prometheus) = fixture().await;
    let bridge = Bridge::start(&rules_for(&prometheus)).await;
    discovered(&bridge).await;
    const C2: &str = "/apis/custom.metrics.k8s.io/v1beta2";
    let hostile = [
        "%22%7D%20or%20vector(1)%20%23", // "} or vector(1) #
        "web-0%22,pod%3D~%22.%2A",       // web-0",pod=~".*
        "web-0%5C",                      // trailing backslash
        "a%0Ab",                         // newline
        "%E2%80%AE",                     // unicode override
    ];
    for name in hostile {
        let (code, body) = bridge
            .get(&format!("{C2}/namespaces/demo/pods/{name}/pod_load"))
            .await;
        assert_eq!(code, 400, "{name}: {body}");
    }
    for selector in [
        "verb%3D%22%7D%20or%20vector(1)", // verb="} or vector(1)
        "verb+in+(GET%2C%22)",            // verb in (GET,")
        "verb%3D%3D%5C",                  // verb==\
    ] {
        let (code, body) = bridge
            .get(&format!(
                "{C2}/namespaces/demo/pods/*/http_hits?metricLabelSelector={selector}"
            ))
            .await;
        assert_eq!(code, 400, "{selector}: {body}");
    }
    // A value that is a regex in PromQL terms matches only itself.
    let (code, body) = bridge
        .get(&format!(
            "{C2}/namespaces/demo/pods/*/http_hits?metricLabelSelector=verb+in+(G.T)"
        ))
        .await;
    assert_eq!(code, 404, "G.T must not match GET: {body}");
    let (code, body) = bridge.get("/apis/external.metrics.k8s.io/v1beta1/namespaces/demo/queue_messages_ready?labelSelector=queue+in+(ord.rs%2Cemails)").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["items"].as_array().map(Vec::len),
        Some(1),
        "only emails: {body}"
    );
}

/// Many identical concurrent requests cost one Prometheus query, counted by Prometheus itself.
#[tokio::test]
async fn concurrent_identical_requests_share_one_query() {
    let (_exporter, prometheus) = fixture().await;
    let rules = rules_for(&prometheus).replace("ttl = \"1s\"", "ttl = \"30s\"");
    let bridge = Bridge::start(&rules).await;
    discovered(&bridge).await;
    // Prometheus' own counter of /api/v1/query calls, read from its /metrics page (it does
    // not scrape itself here, so this read is not a query).
    let http = common::http_client();
    let metrics_url = format!("{}/metrics", prometheus.url());
    let query_count = || async {
        let text = http
            .get(&metrics_url)
            .send()
            .await
            .expect("prometheus /metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .filter(|l| {
                l.starts_with("prometheus_http_requests_total{")
                    && l.contains("handler=\"/api/v1/query\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = query_count().await;
    let path = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/demo/pods/*/pod_load";
    let answers = futures::future::join_all((0..20).map(|_| bridge.get(path))).await;
    assert!(answers.iter().all(|(code, _)| *code == 200));
    // Prometheus counts a request just after answering it: wait for the count to move, then
    // give stragglers a moment before reading it for good.
    wait_until(
        "Prometheus to count the query",
        Duration::from_secs(5),
        || async { (query_count().await > before).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = query_count().await;
    assert_eq!(
        after - before,
        1.0,
        "20 concurrent identical requests must cost one Prometheus query"
    );
    let misses = bridge.self_metric("kube_metrics_bridge_prometheus_request_duration_seconds_count{backend=\"default\",call=\"query\",outcome=\"ok\"}").await;
    assert_eq!(misses, Some(1.0));
    // Within the TTL, a later identical request is a cache hit.
    let (code, _) = bridge.get(path).await;
    assert_eq!(code, 200);
    assert_eq!(
        bridge.self_metric("kube_metrics_bridge_prometheus_request_duration_seconds_count{backend=\"default\",call=\"query\",outcome=\"ok\"}").await,
        Some(1.0)
    );
    assert!(
        bridge
            .self_metric("kube_metrics_bridge_cache_lookups_total{result=\"hit\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
}

/// Prometheus stopped mid-run: fast 503 Status errors while discovery keeps serving; after a
/// restart, answers again.
#[tokio::test]
async fn prometheus_outage_and_recovery() {
    let (_exporter, mut prometheus) = fixture().await;
    let bridge = Bridge::start(&rules_for(&prometheus)).await;
    discovered(&bridge).await;
    let path = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/demo/pods/web-0/pod_load";
    assert_eq!(bridge.get(path).await.0, 200);
    prometheus.stop().await;
    tokio::time::sleep(Duration::from_millis(1200)).await; // past the 1s cache TTL
    let started = Instant::now();
    let (code, body) = bridge.get(path).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["reason"], "ServiceUnavailable");
    assert!(
        !body["message"].as_str().unwrap_or("").contains("127.0.0.1"),
        "no internals leak: {body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "fails within the 2s deadline: {:?}",
        started.elapsed()
    );
    // Discovery still answers, from the last good registry.
    let (code, list) = bridge.get("/apis/custom.metrics.k8s.io/v1beta2").await;
    assert_eq!(code, 200);
    assert!(list["resources"]
        .as_array()
        .is_some_and(|r| r.iter().any(|e| e["name"] == "pods/pod_load")));
    // Counted as unavailable, or as not tried once discovery's failures opened the circuit.
    let mut failed = 0.0;
    for outcome in ["unavailable", "circuit_open"] {
        failed += bridge
            .self_metric(&format!("kube_metrics_bridge_prometheus_request_duration_seconds_count{{backend=\"default\",call=\"query\",outcome=\"{outcome}\"}}"))
            .await
            .unwrap_or(0.0);
    }
    assert!(failed >= 1.0, "{failed}");

    prometheus.restart().await;
    bridge
        .wait_for(path, |v| v["items"][0]["value"] == "1500m")
        .await;
}
