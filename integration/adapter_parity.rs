//! The Resource Metrics API side by side with prometheus-adapter v0.12.0: the same
//! `resourceRules` (the bridge's converted from the adapter's YAML by `convert`), the same
//! Prometheus scraping cAdvisor-shaped series, the same control plane (etcd and
//! kube-apiserver built from source) with the same Nodes and Pods. Both servers are asked
//! the same requests directly (TLS, a `system:masters` client certificate).
//!
//! Where both have an answer, the objects and values agree: names, namespaces, labels,
//! containers, window, memory exactly, cpu within prometheus-adapter's milli truncation
//! (plus the drift of a `rate()` evaluated at two instants). Every other difference is one
//! of the deliberate ones docs/migration.md lists, and each is asserted here as such:
//!
//! 1. prometheus-adapter lists whatever `container` values the series carry (the dockershim
//!    `POD` sandbox here); the bridge lists the containers of the pod's spec.
//! 2. prometheus-adapter finds a node by the value of one label compared with its name; the
//!    bridge also by its addresses (`instance="10.0.0.6:9100"` is node-b's InternalIP).
//! 3. prometheus-adapter truncates cpu to whole millicores; the bridge's are exact.
//!
//! Both serve Running pods only (a Pending pod with series is in neither list, and a get of
//! it is a 404 from both), and neither serves series of pods the cluster does not have. The
//! container with cpu but no memory series gets memory 0 from both: `convert` keeps
//! prometheus-adapter's answer there with `missing_containers = "zero"`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::adapter::{
    adapter_args, adapter_bin, log_tail, serving_args, serving_pair, spawn_logged,
};
use common::bridge::{tls_client_with, Bridge};
use common::controlplane::{ControlPlane, Options};
use common::{free_port, poll, Exporter, Prometheus};
use serde_json::Value;

const BASE: &str = "/apis/metrics.k8s.io/v1beta1";
const NS: &str = "parity-a";
const OTHER_NS: &str = "parity-b";
const CPU: &str = "container_cpu_usage_seconds_total";
const MEMORY: &str = "container_memory_working_set_bytes";
const MIB: f64 = 1024.0 * 1024.0;

/// prometheus-adapter's Helm chart's default resource rules (cAdvisor series, `container!=""`
/// dropping the pod-level cgroup), with kube-prometheus' node keys: cpu by `node`, memory by
/// `instance` (node-exporter).
const ADAPTER_CONFIG: &str = r#"resourceRules:
  cpu:
    containerQuery: sum(rate(container_cpu_usage_seconds_total{<<.LabelMatchers>>, container!=""}[30s])) by (<<.GroupBy>>)
    nodeQuery: sum(rate(node_cpu_usage_seconds_total{<<.LabelMatchers>>}[30s])) by (<<.GroupBy>>)
    resources:
      overrides:
        node: {resource: node}
        namespace: {resource: namespace}
        pod: {resource: pod}
    containerLabel: container
  memory:
    containerQuery: sum(container_memory_working_set_bytes{<<.LabelMatchers>>, container!=""}) by (<<.GroupBy>>)
    nodeQuery: sum(node_memory_MemTotal_bytes{<<.LabelMatchers>>} - node_memory_MemAvailable_bytes{<<.LabelMatchers>>}) by (<<.GroupBy>>)
    resources:
      overrides:
        instance: {resource: node}
        namespace: {resource: namespace}
        pod: {resource: pod}
    containerLabel: container
  window: 30s
"#;

/// A pod: namespace, name, `app` label, Running or Pending, and its containers' cpu (cores,
/// a counter's rate) and memory (bytes; None: no memory series).
struct PodCase {
    ns: &'static str,
    name: &'static str,
    app: &'static str,
    running: bool,
    containers: &'static [(&'static str, f64, Option<f64>)],
    /// dockershim's `POD` sandbox series too.
    sandbox: bool,
}

const PODS: [PodCase; 5] = [
    PodCase {
        ns: NS,
        name: "web-0",
        app: "web",
        running: true,
        containers: &[
            ("app", 0.2505, Some(150.0 * MIB + 123.0)),
            ("mesh", 0.0125, Some(20.0 * MIB)),
        ],
        sandbox: false,
    },
    PodCase {
        ns: NS,
        name: "web-1",
        app: "web",
        running: true,
        containers: &[("app", 0.1, Some(64.0 * MIB))],
        sandbox: true,
    },
    PodCase {
        ns: NS,
        name: "api-0",
        app: "api",
        running: true,
        containers: &[("api", 1.5, Some(1024.0 * MIB)), ("agent", 0.003, None)],
        sandbox: false,
    },
    PodCase {
        ns: NS,
        name: "web-pending",
        app: "web",
        running: false,
        containers: &[("app", 0.3, Some(10.0 * MIB))],
        sandbox: false,
    },
    PodCase {
        ns: OTHER_NS,
        name: "db-0",
        app: "db",
        running: true,
        containers: &[("db", 0.75, Some(300.0 * MIB))],
        sandbox: false,
    },
];

/// node-exporter's memory series of a node: its `instance` label and the bytes used.
type NodeMemory = Option<(&'static str, f64)>;

/// Nodes: name, InternalIP, cpu cores (by `node`), memory (None: no memory series).
const NODES: [(&str, &str, f64, NodeMemory); 3] = [
    ("node-a", "10.0.0.5", 1.25, Some(("node-a", 3072.0 * MIB))),
    // By address: only the bridge finds it.
    (
        "node-b",
        "10.0.0.6",
        0.55,
        Some(("10.0.0.6:9100", 1280.0 * MIB)),
    ),
    // cpu only: neither serves it.
    ("node-c", "10.0.0.7", 0.1, None),
];

async fn create_objects(cp: &ControlPlane, exporter: &Exporter) {
    // No controller manager makes `default` ServiceAccounts: the pods' admission needs one.
    for ns in [NS, OTHER_NS] {
        cp.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n\
             apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: default, namespace: {ns}}}\n"
        ))
        .await;
    }
    for (name, ip, cores, memory) in NODES {
        cp.apply(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}, labels: {{pool: parity}}}}\n"
        ))
        .await;
        let status = serde_json::json!({"status": {"addresses": [
            {"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name},
        ]}})
        .to_string();
        cp.kubectl_ok(&[
            "patch",
            "node",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ])
        .await;
        exporter
            .set_counter("node_cpu_usage_seconds_total", &[("node", name)], cores)
            .await;
        if let Some((instance, used)) = memory {
            let labels = [("instance", instance)];
            let total = 8192.0 * MIB;
            exporter
                .set_gauge("node_memory_MemTotal_bytes", &labels, total)
                .await;
            exporter
                .set_gauge("node_memory_MemAvailable_bytes", &labels, total - used)
                .await;
        }
    }
    for pod in &PODS {
        let containers: Vec<String> = pod
            .containers
            .iter()
            .map(|(c, _, _)| format!("{{name: {c}, image: registry.invalid/{c}:1}}"))
            .collect();
        cp.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: {}, labels: {{app: {}}}}}\n\
             spec: {{automountServiceAccountToken: false, containers: [{}]}}\n",
            pod.name,
            pod.ns,
            pod.app,
            containers.join(", ")
        ))
        .await;
        if pod.running {
            cp.set_pod_running(pod.ns, pod.name).await;
        }
        let mut total_cpu = 0.0;
        let mut total_mem = 0.0;
        for (container, cores, bytes) in pod.containers {
            let labels = [
                ("namespace", pod.ns),
                ("pod", pod.name),
                ("container", container),
            ];
            exporter.set_counter(CPU, &labels, *cores).await;
            total_cpu += cores;
            if let Some(bytes) = bytes {
                exporter.set_gauge(MEMORY, &labels, *bytes).await;
                total_mem += bytes;
            }
        }
        // The pod-level cgroup: both queries drop it (`container!=""`).
        let pod_level = [("namespace", pod.ns), ("pod", pod.name)];
        exporter
            .set_counter(CPU, &pod_level, total_cpu + 0.05)
            .await;
        exporter
            .set_gauge(MEMORY, &pod_level, total_mem + MIB)
            .await;
        if pod.sandbox {
            let sandbox = [
                ("namespace", pod.ns),
                ("pod", pod.name),
                ("container", "POD"),
            ];
            exporter.set_counter(CPU, &sandbox, 0.02).await;
            exporter.set_gauge(MEMORY, &sandbox, 700.0 * 1024.0).await;
        }
    }
    // Series of a pod the cluster does not have: neither serves it.
    let ghost = [("namespace", NS), ("pod", "ghost-0"), ("container", "app")];
    exporter.set_counter(CPU, &ghost, 0.4).await;
    exporter.set_gauge(MEMORY, &ghost, 40.0 * MIB).await;
}

// ---------------------------------------------------------------------------------------
// Reading answers

/// A Kubernetes Quantity as a number.
fn quantity(text: &str) -> f64 {
    common::quantity(text).unwrap_or_else(|| panic!("not a quantity: {text:?}"))
}

/// One object of an answer: labels, window, timestamp (Unix seconds) and usage per
/// container (`""` for a node's own usage): (cpu cores, memory bytes, cpu as written).
#[derive(Debug)]
struct Object {
    labels: BTreeMap<String, String>,
    window: String,
    timestamp: i64,
    usage: BTreeMap<String, (f64, f64, String)>,
}

fn usage_of(u: &Value) -> (f64, f64, String) {
    let cpu = u["cpu"].as_str().expect("usage.cpu");
    let memory = u["memory"].as_str().expect("usage.memory");
    (quantity(cpu), quantity(memory), cpu.to_string())
}

fn object(item: &Value) -> Object {
    let labels = item["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let ts = item["timestamp"].as_str().expect("timestamp");
    let timestamp = humantime::parse_rfc3339_weak(ts)
        .unwrap_or_else(|e| panic!("timestamp {ts:?}: {e}"))
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a timestamp after 1970")
        .as_secs() as i64;
    let usage = match item["containers"].as_array() {
        Some(containers) => containers
            .iter()
            .map(|c| {
                let name = c["name"].as_str().expect("container name").to_string();
                (name, usage_of(&c["usage"]))
            })
            .collect(),
        None => BTreeMap::from([(String::new(), usage_of(&item["usage"]))]),
    };
    Object {
        labels,
        window: item["window"].as_str().unwrap_or_default().to_string(),
        timestamp,
        usage,
    }
}

/// A list answer keyed by `namespace/name` (`name` for nodes).
fn objects(list: &Value) -> BTreeMap<String, Object> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|item| {
            let m = &item["metadata"];
            let name = m["name"].as_str().expect("name");
            let key = match m["namespace"].as_str() {
                Some(ns) => format!("{ns}/{name}"),
                None => name.to_string(),
            };
            (key, object(item))
        })
        .collect()
}

/// How far the two servers' cpu may be apart, in cores: prometheus-adapter's truncation
/// (under 1m) plus 0.3% of the value for a `rate()` evaluated at two instants over scrapes
/// a few milliseconds apart. A real difference (a counted sandbox or cgroup) is 20m or more.
fn cpu_tolerance(cores: f64) -> f64 {
    0.001 + 0.003 * cores
}

/// Where `ours` and `theirs` (both present) differ beyond what the servers' documented
/// behaviour allows; empty when they agree.
fn disagreements(key: &str, ours: &Object, theirs: &Object) -> Vec<String> {
    let mut out = Vec::new();
    if ours.labels != theirs.labels {
        out.push(format!(
            "{key}: labels {:?} vs {:?}",
            ours.labels, theirs.labels
        ));
    }
    if ours.window != theirs.window {
        out.push(format!(
            "{key}: window {} vs {}",
            ours.window, theirs.window
        ));
    }
    if (ours.timestamp - theirs.timestamp).abs() > 60 {
        out.push(format!(
            "{key}: timestamps {} vs {}",
            ours.timestamp, theirs.timestamp
        ));
    }
    let names = |o: &Object| o.usage.keys().cloned().collect::<Vec<_>>();
    if names(ours) != names(theirs) {
        out.push(format!(
            "{key}: containers {:?} vs {:?}",
            names(ours),
            names(theirs)
        ));
    }
    for (name, (cpu, memory, _)) in &ours.usage {
        let Some((their_cpu, their_memory, their_text)) = theirs.usage.get(name) else {
            continue;
        };
        if (cpu - their_cpu).abs() > cpu_tolerance(*cpu) {
            out.push(format!(
                "{key} {name:?}: cpu {cpu} vs {their_cpu} ({their_text})"
            ));
        }
        if memory != their_memory {
            out.push(format!("{key} {name:?}: memory {memory} vs {their_memory}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The two servers

struct Servers {
    client: reqwest::Client,
    bridge: Bridge,
    adapter: tokio::process::Child,
    adapter_port: u16,
    adapter_log: PathBuf,
}

impl Servers {
    async fn get(&self, url: String) -> (u16, Value) {
        let r = self
            .client
            .get(&url)
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e:#}"));
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// The same path from (the bridge, prometheus-adapter).
    async fn both(&mut self, path: &str) -> ((u16, Value), (u16, Value)) {
        if let Ok(Some(status)) = self.adapter.try_wait() {
            panic!(
                "prometheus-adapter exited with {status}:\n{}",
                log_tail(&self.adapter_log, 40)
            );
        }
        let ours = self.get(self.bridge.url(path)).await;
        let theirs = self
            .get(format!("https://127.0.0.1:{}{path}", self.adapter_port))
            .await;
        (ours, theirs)
    }

    /// Both lists of `path`, each 200.
    async fn lists(&mut self, path: &str) -> (BTreeMap<String, Object>, BTreeMap<String, Object>) {
        let ((s1, ours), (s2, theirs)) = self.both(path).await;
        assert_eq!(
            (s1, s2),
            (200, 200),
            "{path}: bridge {ours}\nprometheus-adapter {theirs}\nadapter log:\n{}",
            log_tail(&self.adapter_log, 20)
        );
        for list in [&ours, &theirs] {
            let kind = if path.contains("/nodes") {
                "NodeMetricsList"
            } else {
                "PodMetricsList"
            };
            assert_eq!(list["kind"], kind, "{path}: {list}");
            assert_eq!(
                list["apiVersion"], "metrics.k8s.io/v1beta1",
                "{path}: {list}"
            );
        }
        (objects(&ours), objects(&theirs))
    }
}

fn keys(m: &BTreeMap<String, Object>) -> Vec<&str> {
    m.keys().map(String::as_str).collect()
}

/// The keys both lists have must agree; returns the disagreements.
fn compare_common(
    path: &str,
    ours: &BTreeMap<String, Object>,
    theirs: &BTreeMap<String, Object>,
) -> Vec<String> {
    ours.iter()
        .filter_map(|(k, o)| {
            theirs
                .get(k)
                .map(|t| disagreements(&format!("{path} {k}"), o, t))
        })
        .flatten()
        .collect()
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_metrics_agree_with_prometheus_adapter() {
    let adapter_bin = adapter_bin().await;
    let exporter = Exporter::start_empty().await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    let cp = ControlPlane::start_with(Options {
        skip_controller_manager: true,
        ..Options::default()
    })
    .await;
    create_objects(&cp, &exporter).await;

    let dir = tempfile::Builder::new()
        .prefix("kmb-parity-")
        .tempdir()
        .expect("tempdir");
    let root = dir.path();
    let adapter_config = write_file(root, "adapter.yaml", ADAPTER_CONFIG);
    let rules = common::adapter::convert_adapter_config(
        Path::new(env!("CARGO_BIN_EXE_kube-metrics-bridge")),
        &adapter_config,
        &prometheus.url(),
    );
    assert!(
        rules.contains("missing_containers = \"zero\""),
        "convert keeps prometheus-adapter's zero for a missing resource:\n{rules}"
    );

    // Every series must cover the 30s rate window before anything is compared: until then
    // rate() extrapolates from fewer samples and the two instants differ more.
    prometheus
        .wait_or_fail(
            "every container's cpu series to cover the rate window",
            Duration::from_secs(120),
            || async {
                let q = format!("count(count_over_time({CPU}{{container!=\"\"}}[40s]) >= 32)");
                let n = prometheus.try_query(&q).await.ok()?.first()?.value;
                (n as usize == 9).then_some(())
            },
        )
        .await;

    // Both serve the same certificate, so one client (the cluster admin, system:masters)
    // trusts both and both authenticate it from the cluster's client CA.
    let tls = serving_pair(root);
    let pki = cp.dir().join("pki");
    let client = tls_client_with(
        &tls.0,
        false,
        Some((&pki.join("admin.crt"), &pki.join("admin.key"))),
    );
    let bridge_kubeconfig = cp.client_kubeconfig("parity-bridge", &["system:masters"]);
    let (crt, key) = (tls.1.display().to_string(), tls.2.display().to_string());
    let mut bridge = Bridge::start_for_cluster(
        &rules,
        &bridge_kubeconfig,
        "localhost",
        &["--tls-cert-file", &crt, "--tls-private-key-file", &key],
    )
    .await;
    bridge.set_client(client.clone());
    let adapter_port = free_port();
    let adapter_log = root.join("prometheus-adapter.log");
    let mut args = serving_args(&tls, adapter_port);
    args.extend(adapter_args(
        root,
        &cp.client_kubeconfig("parity-adapter", &["system:masters"]),
        &prometheus.url(),
        &adapter_config,
    ));
    let adapter = spawn_logged(&adapter_bin, &args, &[], &adapter_log);
    let mut servers = Servers {
        client,
        bridge,
        adapter,
        adapter_port,
        adapter_log,
    };

    // Wait until both serve every pod they will serve (their pod caches are filled).
    let all = format!("{BASE}/pods");
    let ready = poll(Duration::from_secs(90), || {
        let (bridge, adapter_port, client) =
            (&servers.bridge, servers.adapter_port, &servers.client);
        let all = all.clone();
        async move {
            let get = |url: String| async move {
                let r = client.get(url).send().await.ok()?;
                if !r.status().is_success() {
                    return None;
                }
                let v: Value = r.json().await.ok()?;
                Some(v["items"].as_array().map_or(0, Vec::len))
            };
            let ours = get(bridge.url(&all)).await?;
            let theirs = get(format!("https://127.0.0.1:{adapter_port}{all}")).await?;
            (ours == 4 && theirs == 4).then_some(())
        }
    })
    .await;
    if ready.is_none() {
        let (ours, theirs) = servers.both(&all).await;
        panic!(
            "the servers never served the 4 Running pods: bridge {ours:?}\n\
             prometheus-adapter {theirs:?}\nbridge log:\n{}\nadapter log:\n{}",
            servers.bridge.log(),
            log_tail(&servers.adapter_log, 40)
        );
    }

    let mut failures = Vec::new();

    // Every pod of every namespace: the Running ones with series. Difference 1 (and 3,
    // checked below).
    let (ours, theirs) = servers.lists(&all).await;
    let running = [
        "parity-a/api-0",
        "parity-a/web-0",
        "parity-a/web-1",
        "parity-b/db-0",
    ];
    assert_eq!(keys(&ours), running, "the bridge: Running pods with series");
    assert_eq!(
        keys(&theirs),
        running,
        "prometheus-adapter: Running pods with series"
    );
    let web_1 = |m: &BTreeMap<String, Object>| -> Vec<String> {
        m["parity-a/web-1"].usage.keys().cloned().collect()
    };
    assert_eq!(web_1(&ours), ["app"], "the bridge: the spec's containers");
    assert_eq!(
        web_1(&theirs),
        ["POD", "app"],
        "prometheus-adapter: the series' containers, the sandbox too (difference 1)"
    );
    let agent = |m: &BTreeMap<String, Object>| m["parity-a/api-0"].usage["agent"].1;
    assert_eq!(
        (agent(&ours), agent(&theirs)),
        (0.0, 0.0),
        "a container without memory series: 0 from both"
    );
    failures.extend(
        compare_common(&all, &ours, &theirs)
            .into_iter()
            .filter(|d| {
                // The sandbox is difference 1, asserted above.
                !d.contains("parity-a/web-1: containers")
            }),
    );
    // Difference 3: theirs are whole millicores, ours are not where the rate is not.
    for (key, o) in &theirs {
        for (name, (cpu, _, text)) in &o.usage {
            let millis = cpu * 1000.0;
            if (millis - millis.round()).abs() > 1e-6 {
                failures.push(format!(
                    "prometheus-adapter {key} {name:?}: cpu {text} is not whole millicores"
                ));
            }
        }
    }
    let fractional = ours
        .values()
        .flat_map(|o| o.usage.values())
        .filter(|(cpu, _, _)| {
            let m = cpu * 1000.0;
            (m - m.round()).abs() > 1e-6
        })
        .count();
    assert!(
        fractional > 0,
        "the bridge's cpu is exact, so some of it is not whole millicores: {ours:#?}"
    );

    // One namespace, and a label selector: the Running pods it selects.
    let path = format!("{BASE}/namespaces/{NS}/pods?labelSelector=app%3Dweb");
    let (ours, theirs) = servers.lists(&path).await;
    assert_eq!(keys(&ours), ["parity-a/web-0", "parity-a/web-1"]);
    assert_eq!(keys(&theirs), ["parity-a/web-0", "parity-a/web-1"]);
    failures.extend(
        compare_common(&path, &ours, &theirs)
            .into_iter()
            .filter(|d| !d.contains("parity-a/web-1: containers")),
    );

    // A get: the same object; the Pending pod is a 404 from both.
    let path = format!("{BASE}/namespaces/{NS}/pods/web-0");
    let ((s1, ours), (s2, theirs)) = servers.both(&path).await;
    assert_eq!((s1, s2), (200, 200), "{path}: {ours} / {theirs}");
    assert_eq!(
        (&ours["kind"], &theirs["kind"]),
        (&"PodMetrics".into(), &"PodMetrics".into())
    );
    failures.extend(disagreements(&path, &object(&ours), &object(&theirs)));
    let path = format!("{BASE}/namespaces/{NS}/pods/web-pending");
    let ((s1, ours), (s2, theirs)) = servers.both(&path).await;
    assert_eq!((s1, s2), (404, 404), "{path}: {ours} / {theirs}");
    assert_eq!(
        (&ours["kind"], &theirs["kind"]),
        (&"Status".into(), &"Status".into())
    );

    // Nodes. Difference 2: node-b's memory is keyed by its InternalIP.
    let path = format!("{BASE}/nodes");
    let (ours, theirs) = servers.lists(&path).await;
    assert_eq!(
        keys(&ours),
        ["node-a", "node-b"],
        "the bridge: by name and by address"
    );
    assert_eq!(
        keys(&theirs),
        ["node-a"],
        "prometheus-adapter: by name only (difference 2)"
    );
    failures.extend(compare_common(&path, &ours, &theirs));
    let path = format!("{BASE}/nodes/node-a");
    let ((s1, ours), (s2, theirs)) = servers.both(&path).await;
    assert_eq!((s1, s2), (200, 200), "{path}: {ours} / {theirs}");
    failures.extend(disagreements(&path, &object(&ours), &object(&theirs)));

    assert!(
        failures.is_empty(),
        "the servers disagree beyond the documented differences:\n{}",
        failures.join("\n")
    );
}
