//! Kubernetes protobuf against the real Go types (issue 9 §2): fixture objects of every kind
//! are encoded by our encoder, in protobuf and JSON, and `integration/protobuf-golden` (a Go
//! program over k8s.io/metrics and k8s.io/apimachinery v0.37.2) decodes both, requires them
//! to be one object, and re-encodes it with Go's protobuf serializer, requiring our bytes.
//! Then the running server: the HPA's Accept gets protobuf, the Accept matrix, and the
//! server's own answers through the same Go checker.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::bridge::Bridge;
use common::{Exporter, Prometheus};
use kube_metrics_bridge::request::CustomVersion;
use kube_metrics_bridge::response::resource::{
    self, ContainerMetrics, NodeMetrics, PodMetrics, ResourceVersion,
};
use kube_metrics_bridge::response::{
    CustomItem, CustomList, DescribedObject, ExternalList, ExternalValue,
};
use serde_json::{json, Value};

const HPA_ACCEPT: &str = "application/vnd.kubernetes.protobuf, */*";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: [u8; 4] = [0x6b, 0x38, 0x73, 0x00];

/// The Go checker, built (and cached) by its script unless `KMB_PROTOBUF_GOLDEN_BIN` is set.
async fn golden_checker() -> PathBuf {
    common::cached_build(
        "KMB_PROTOBUF_GOLDEN_BIN",
        "integration/protobuf-golden/build.sh",
        "the protobuf golden checker",
    )
    .await
}

/// Cases for the Go checker: `<name>.pb`, `<name>.json` and `cases.json` in a temp dir.
struct Cases {
    dir: tempfile::TempDir,
    list: Vec<Value>,
}

impl Cases {
    fn new() -> Cases {
        Cases {
            dir: tempfile::tempdir().expect("tempdir"),
            list: Vec::new(),
        }
    }

    fn add(&mut self, name: &str, api_version: &str, kind: &str, pb: &[u8], json: &[u8]) {
        self.add_expecting(name, api_version, kind, pb, json, "equal");
    }

    fn add_expecting(
        &mut self,
        name: &str,
        api_version: &str,
        kind: &str,
        pb: &[u8],
        json: &[u8],
        expect: &str,
    ) {
        let path = |ext: &str| self.dir.path().join(format!("{name}.{ext}"));
        std::fs::write(path("pb"), pb).expect("writing .pb");
        std::fs::write(path("json"), json).expect("writing .json");
        self.list.push(json!({
            "name": name, "apiVersion": api_version, "kind": kind, "expect": expect,
        }));
    }

    /// Runs the checker; every case must pass (its report is printed either way).
    async fn check(&self, checker: &Path) {
        std::fs::write(
            self.dir.path().join("cases.json"),
            serde_json::to_vec_pretty(&self.list).expect("cases.json"),
        )
        .expect("writing cases.json");
        let out = tokio::process::Command::new(checker)
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .unwrap_or_else(|e| panic!("running {}: {e}", checker.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{stdout}");
        assert!(
            out.status.success(),
            "the Go checker failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
        // Every case was run, not skipped.
        let summary = format!("{} passed, 0 failed", self.list.len());
        assert!(
            stdout.lines().any(|l| l == summary),
            "expected `{summary}` from the checker:\n{stdout}"
        );
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn object(kind: &str, namespace: Option<&str>, name: &str, api_version: &str) -> DescribedObject {
    DescribedObject {
        kind: kind.into(),
        namespace: namespace.map(Into::into),
        name: name.into(),
        api_version: api_version.into(),
    }
}

fn custom_items() -> Vec<CustomItem> {
    let item = |object, timestamp, value: &str| CustomItem {
        object,
        timestamp,
        value: value.into(),
    };
    vec![
        // A fraction of a second: both encodings drop it.
        item(
            object("Pod", Some("default"), "web-0", "v1"),
            1_700_000_000.9,
            "1500m",
        ),
        // The largest value the bridge writes (its clamp).
        item(
            object("Pod", Some("default"), "web-1", "v1"),
            1_700_000_001.0,
            "9223372036854775",
        ),
        item(
            object("Deployment", Some("default"), "web", "apps/v1"),
            1_700_000_002.0,
            "0",
        ),
        // Cluster-scoped: no namespace.
        item(object("Node", None, "node-1", "v1"), 1.0, "45500m"),
        item(
            object("Pod", Some("default"), "tiny", "v1"),
            1_700_000_003.0,
            "1n",
        ),
    ]
}

fn selector(text: &str) -> Option<kube_metrics_bridge::selector::LabelSelector> {
    kube_metrics_bridge::selector::parse(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .to_label_selector()
}

fn external_values() -> Vec<ExternalValue> {
    let mut several = BTreeMap::new();
    // Inserted unsorted; an empty value is written as Go writes it (`12 00`).
    for (k, v) in [
        ("queue", "orders"),
        ("namespace", "demo"),
        ("z", ""),
        ("a", "1"),
    ] {
        several.insert(k.to_string(), v.to_string());
    }
    vec![
        ExternalValue {
            labels: several,
            timestamp: 1_700_000_000.5,
            value: "42".into(),
        },
        ExternalValue {
            labels: BTreeMap::new(),
            timestamp: 1_700_000_000.0,
            value: "1k".into(),
        },
    ]
}

fn pods() -> Vec<PodMetrics> {
    vec![
        PodMetrics {
            name: "web-1".into(),
            namespace: "default".into(),
            labels: labels(&[
                ("app", "web"),
                ("app.kubernetes.io/name", "web"),
                ("blank", ""),
            ]),
            timestamp: 1_700_000_000.5,
            window: Duration::from_secs(15),
            containers: vec![
                ContainerMetrics {
                    name: "c".into(),
                    usage: labels(&[("cpu", "1234567n"), ("memory", "12345Ki")]),
                },
                ContainerMetrics {
                    name: "sidecar".into(),
                    usage: labels(&[("cpu", "0"), ("memory", "12641281")]),
                },
            ],
        },
        PodMetrics {
            name: "api-0".into(),
            namespace: "other".into(),
            labels: BTreeMap::new(),
            timestamp: 1_700_000_007.0,
            window: Duration::from_millis(10_866),
            containers: vec![ContainerMetrics {
                name: "api".into(),
                usage: labels(&[("cpu", "2"), ("memory", "100Mi")]),
            }],
        },
    ]
}

fn nodes() -> Vec<NodeMetrics> {
    vec![
        NodeMetrics {
            name: "node-a".into(),
            labels: labels(&[("kubernetes.io/hostname", "node-a"), ("zone", "a")]),
            timestamp: 1_700_000_000.0,
            window: Duration::from_secs(60),
            usage: labels(&[("cpu", "1500m"), ("memory", "8Gi")]),
        },
        NodeMetrics {
            name: "node-b".into(),
            labels: BTreeMap::new(),
            timestamp: 1_700_000_000.0,
            window: Duration::from_secs(300),
            usage: labels(&[("cpu", "9223372036854775"), ("memory", "1Ti")]),
        },
    ]
}

#[tokio::test]
async fn our_protobuf_is_what_go_writes() {
    let checker = golden_checker().await;
    let mut cases = Cases::new();

    let rich_selector =
        selector("app=web,tier=front,env in (prod,staging),zone notin (a),canary,!legacy,blank=");
    let minute = Some(Duration::from_secs(60));
    for (name, version, selector, window, items) in [
        (
            "custom-v1beta1",
            CustomVersion::V1beta1,
            rich_selector.clone(),
            minute,
            custom_items(),
        ),
        (
            "custom-v1beta1-plain",
            CustomVersion::V1beta1,
            None,
            None,
            custom_items(),
        ),
        (
            "custom-v1beta1-empty",
            CustomVersion::V1beta1,
            None,
            None,
            vec![],
        ),
        (
            "custom-v1beta2",
            CustomVersion::V1beta2,
            rich_selector.clone(),
            Some(Duration::from_secs(300)),
            custom_items(),
        ),
        (
            "custom-v1beta2-plain",
            CustomVersion::V1beta2,
            None,
            None,
            custom_items(),
        ),
        (
            "custom-v1beta2-empty",
            CustomVersion::V1beta2,
            selector("verb=GET"),
            minute,
            vec![],
        ),
    ] {
        let list = CustomList::new(version, "http_requests", selector, window, items);
        cases.add(
            name,
            &list.api_version(),
            "MetricValueList",
            &list.to_protobuf(),
            list.to_json().as_bytes(),
        );
    }

    for (name, window, items) in [
        (
            "external",
            Some(Duration::from_secs(120)),
            external_values(),
        ),
        ("external-no-window", None, external_values()),
        ("external-empty", None, vec![]),
    ] {
        let list = ExternalList::new("queue_messages_ready", window, items);
        cases.add(
            name,
            &ExternalList::api_version(),
            "ExternalMetricValueList",
            &list.to_protobuf(),
            list.to_json().as_bytes(),
        );
    }

    let (pods, nodes) = (pods(), nodes());
    // Both served versions: the same objects, each decoded by its own Go types.
    for version in ResourceVersion::ALL {
        let (metrics, v) = (version.api_version(), version.as_str());
        for (i, pod) in pods.iter().enumerate() {
            cases.add(
                &format!("{v}-pod-{i}"),
                metrics,
                "PodMetrics",
                &pod.to_protobuf(version),
                pod.to_json(version).as_bytes(),
            );
        }
        for (i, node) in nodes.iter().enumerate() {
            cases.add(
                &format!("{v}-node-{i}"),
                metrics,
                "NodeMetrics",
                &node.to_protobuf(version),
                node.to_json(version).as_bytes(),
            );
        }
        for (name, items) in [("pods", &pods[..]), ("pods-empty", &[][..])] {
            cases.add(
                &format!("{v}-{name}"),
                metrics,
                "PodMetricsList",
                &resource::pod_list_protobuf(items, version),
                resource::pod_list_json(items, version).as_bytes(),
            );
        }
        for (name, items) in [("nodes", &nodes[..]), ("nodes-empty", &[][..])] {
            cases.add(
                &format!("{v}-{name}"),
                metrics,
                "NodeMetricsList",
                &resource::node_list_protobuf(items, version),
                resource::node_list_json(items, version).as_bytes(),
            );
        }
    }

    // The checker's byte comparison can fail: our bytes without the envelope's trailer (the
    // empty contentEncoding and contentType, which a prost-style encoder would leave out)
    // decode to the same object, and only the bytes differ.
    let (metrics, v1beta1) = ("metrics.k8s.io/v1beta1", ResourceVersion::V1beta1);
    let full = resource::pod_list_protobuf(&pods, v1beta1);
    let trimmed = full
        .strip_suffix(&[0x1a, 0x00, 0x22, 0x00])
        .expect("the envelope ends with its trailer");
    cases.add_expecting(
        "pods-without-trailer",
        metrics,
        "PodMetricsList",
        trimmed,
        resource::pod_list_json(&pods, v1beta1).as_bytes(),
        "bytes-differ",
    );

    cases.check(&checker).await;
}

const RULES: &str = r#"
[prometheus]
url = "PROM_URL"
timeout = "2s"

[cache]
# Long, so that the JSON and protobuf answers compared below come from one query result.
ttl = "5m"
discovery_interval = "1s"
series_max_age = "10m"

[[rules]]
series_query = 'http_hits{namespace!="",pod!=""}'
resources.overrides = { namespace = { resource = "namespace" }, pod = { resource = "pod" } }
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
window = "1m"

[[external_rules]]
series_query = 'queue_messages_ready{namespace!=""}'
resources.overrides = { namespace = { resource = "namespace" } }
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>}) by (queue, tier)'
"#;

/// GET with an Accept header (`None`: reqwest's default, `*/*`): code, Content-Type, body.
async fn get(bridge: &Bridge, path: &str, accept: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut request = bridge.client().get(bridge.url(path));
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let code = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = response.bytes().await.expect("body").to_vec();
    (code, content_type, body)
}

/// GET with no Accept header at all, which reqwest cannot send (it adds `*/*`): curl with
/// its default Accept removed.
fn get_without_accept(bridge: &Bridge, path: &str) -> (u16, String, Vec<u8>) {
    let body_file = bridge.dir.path().join("curl-body");
    let out = std::process::Command::new("curl")
        .args(["-sS", "--http1.1", "-H", "Accept:", "--cacert"])
        .arg(bridge.ca_path())
        .arg("-o")
        .arg(&body_file)
        .args(["-w", "%{http_code} %{content_type}"])
        .arg(bridge.url(path))
        .output()
        .expect("running curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = String::from_utf8_lossy(&out.stdout).to_string();
    let (code, content_type) = written.split_once(' ').unwrap_or((&written, ""));
    (
        code.parse().unwrap_or(0),
        content_type.to_string(),
        std::fs::read(&body_file).expect("curl body"),
    )
}

fn assert_json(what: &str, (code, content_type, body): &(u16, String, Vec<u8>)) {
    assert_eq!(*code, 200, "{what}: {}", String::from_utf8_lossy(body));
    assert_eq!(content_type, "application/json", "{what}");
    serde_json::from_slice::<Value>(body)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body:?}"));
}

fn assert_protobuf(what: &str, (code, content_type, body): &(u16, String, Vec<u8>)) {
    assert_eq!(*code, 200, "{what}: {}", String::from_utf8_lossy(body));
    assert_eq!(content_type, PROTOBUF, "{what}");
    assert!(body.starts_with(&MAGIC), "{what}: {body:02x?}");
}

#[tokio::test]
async fn server_answers_protobuf_to_the_hpa_and_json_otherwise() {
    let checker = golden_checker().await;
    let exporter = Exporter::start_empty().await;
    for (pod, verb, value) in [
        ("web-0", "GET", 1.5),
        ("web-0", "POST", 3.0),
        ("web-1", "GET", 1000.0),
    ] {
        exporter
            .set_gauge(
                "http_hits",
                &[("namespace", "demo"), ("pod", pod), ("verb", verb)],
                value,
            )
            .await;
    }
    for (queue, tier, value) in [("orders", "gold", 42.0), ("emails", "", 7.0)] {
        let mut l = vec![("namespace", "demo"), ("queue", queue)];
        if !tier.is_empty() {
            l.push(("tier", tier));
        }
        exporter.set_gauge("queue_messages_ready", &l, value).await;
    }
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    prometheus
        .wait_for_series("queue_messages_ready", Duration::from_secs(30))
        .await;
    let bridge = Bridge::start(&RULES.replace("PROM_URL", &prometheus.url())).await;
    bridge
        .wait_for("/apis/custom.metrics.k8s.io/v1beta2", |v| {
            v["resources"]
                .as_array()
                .is_some_and(|r| r.iter().any(|e| e["name"] == "pods/http_hits"))
        })
        .await;

    const C1: &str = "/apis/custom.metrics.k8s.io/v1beta1/namespaces/demo/pods/%2A/http_hits?metricLabelSelector=verb%3DGET";
    const C2: &str = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/demo/pods/%2A/http_hits?metricLabelSelector=verb%3DGET";
    const E1: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/demo/queue_messages_ready";

    // The HPA's Accept: protobuf for every metrics API.
    let mut protobuf_answers = 0;
    for path in [C1, C2, E1] {
        assert_protobuf(path, &get(&bridge, path, Some(HPA_ACCEPT)).await);
        protobuf_answers += 1;
    }

    // The Accept matrix on one list.
    assert_json("no Accept", &get_without_accept(&bridge, C2));
    assert_json("*/*", &get(&bridge, C2, None).await);
    assert_json(
        "application/*",
        &get(&bridge, C2, Some("application/*")).await,
    );
    assert_json(
        "application/json",
        &get(&bridge, C2, Some("application/json")).await,
    );
    assert_json(
        "kubectl get's Table clauses fall through",
        &get(
            &bridge,
            C2,
            Some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"),
        )
        .await,
    );
    assert_protobuf("protobuf only", &get(&bridge, C2, Some(PROTOBUF)).await);
    assert_protobuf(
        "the generated clientset's default",
        &get(
            &bridge,
            C2,
            Some("application/vnd.kubernetes.protobuf,application/json"),
        )
        .await,
    );
    protobuf_answers += 2;
    let (code, content_type, body) = get(&bridge, C2, Some("application/yaml")).await;
    assert_eq!(code, 406, "{}", String::from_utf8_lossy(&body));
    assert_eq!(content_type, "application/json");
    let status: Value = serde_json::from_slice(&body).expect("406 Status JSON");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "NotAcceptable");
    assert_eq!(
        status["message"],
        "only the following media types are accepted: application/json, \
         application/vnd.kubernetes.protobuf (YAML is not served)"
    );

    // Discovery and errors stay JSON, whatever was asked.
    assert_json(
        "discovery with the HPA's Accept",
        &get(
            &bridge,
            "/apis/custom.metrics.k8s.io/v1beta2",
            Some(HPA_ACCEPT),
        )
        .await,
    );
    let (code, content_type, body) = get(
        &bridge,
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/demo/pods/%2A/no_such_metric",
        Some(HPA_ACCEPT),
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(content_type, "application/json");
    let status: Value = serde_json::from_slice(&body).expect("404 Status JSON");
    assert_eq!(status["reason"], "NotFound");

    // The server's own answers, protobuf and JSON of the same (cached) result, through the Go
    // checker; the JSON is also checked for what the request asked.
    let mut cases = Cases::new();
    for (name, path, api_version, kind) in [
        (
            "server-custom-v1beta1",
            C1,
            "custom.metrics.k8s.io/v1beta1",
            "MetricValueList",
        ),
        (
            "server-custom-v1beta2",
            C2,
            "custom.metrics.k8s.io/v1beta2",
            "MetricValueList",
        ),
        (
            "server-external",
            E1,
            "external.metrics.k8s.io/v1beta1",
            "ExternalMetricValueList",
        ),
    ] {
        let (_, _, pb) = get(&bridge, path, Some(HPA_ACCEPT)).await;
        let (_, _, json) = get(&bridge, path, Some("application/json")).await;
        protobuf_answers += 1;
        let value: Value = serde_json::from_slice(&json).expect("JSON");
        assert_eq!(
            value["items"].as_array().map(Vec::len),
            Some(2),
            "{name}: {value}"
        );
        cases.add(name, api_version, kind, &pb, &json);
    }
    cases.check(&checker).await;

    // The bridge counted its answers by encoding.
    let count = |route: &str, encoding: &str| {
        let series = format!(
            "kube_metrics_bridge_responses_total{{route=\"{route}\",encoding=\"{encoding}\"}}"
        );
        let bridge = &bridge;
        async move { bridge.self_metric(&series).await.unwrap_or(0.0) }
    };
    let custom_protobuf = count("custom_wildcard", "protobuf").await;
    let external_protobuf = count("external", "protobuf").await;
    assert_eq!(
        custom_protobuf + external_protobuf,
        protobuf_answers as f64,
        "protobuf answers counted"
    );
    assert_eq!(external_protobuf, 2.0);
    assert!(count("custom_wildcard", "json").await >= 7.0);
    assert!(count("discovery", "json").await >= 1.0);
}
