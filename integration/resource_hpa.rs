//! The Resource Metrics API (`metrics.k8s.io/v1beta1`) with real parts: etcd,
//! kube-apiserver and kube-controller-manager (built from official sources), a real
//! Prometheus scraping cAdvisor-shaped series from the demo exporter, and the bridge on the
//! host registered behind kube-apiserver's aggregator as APIServices `v1beta1.metrics.k8s.io` and `v1.metrics.k8s.io`
//! with a real caBundle.
//!
//! Shows, through the aggregator:
//! - `kubectl top node`, `kubectl top pod -A` and `kubectl top pod --containers -l` print
//!   the values the exporter's counters (`rate()` = cores) and gauges imply, with kubectl's
//!   own rounding; nodes are found by name (`node` label) and by address (`instance` label,
//!   `IP:port` or `hostname:port`, matched against `status.addresses`); the pod-level cgroup
//!   series and the `POD` sandbox series are ignored; a node with only cpu is `<unknown>`;
//! - pods that are not Running (Pending, or Running then Succeeded) never appear, a get of a
//!   Pending pod is a 404 and a labelSelector list returns exactly the selected Running pods;
//! - real HPAs (kube-controller-manager) scale Deployments up and down on a `Resource` cpu
//!   Utilization metric (pods with a native sidecar, whose usage and request count) and on
//!   a `ContainerResource` one (the `app` container of pods whose busy sidecar must not
//!   count), and report the utilization the rates imply.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use base64::Engine as _;
use common::bridge::Bridge;
use common::controlplane::ControlPlane;
use common::{poll, shipped_documents, Exporter, Prometheus};
use serde_json::Value;

const SERVICE_DNS: &str = "kube-metrics-bridge.custom-metrics.svc";
const BASE: &str = "/apis/metrics.k8s.io/v1beta1";

const TOP_NS: &str = "top-demo";
const OTHER_NS: &str = "top-other";
const HPA_NS: &str = "hpa-resource";

/// cAdvisor's series, as the kubelet exposes them.
const CPU: &str = "container_cpu_usage_seconds_total";
const MEMORY: &str = "container_memory_working_set_bytes";
const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

/// How far what kubectl prints for a `rate()` may be from the counter's rate, in
/// millicores: 2m, plus 0.2% of the value. Prometheus stamps a sample with the scrape's start
/// and the exporter computes the counter when it answers; the difference between two scrapes
/// (milliseconds, more on a loaded machine) over the 30s range is a relative error, and
/// kubectl rounds up. A wrong value is off by more: a counted `POD` sandbox by 20m, a lost
/// sidecar by 12m or more, a counted pod-level cgroup by 50m plus the pod's whole usage.
fn cpu_tolerance_m(expected_m: i64) -> i64 {
    2 + expected_m / 500
}

/// Mirrors kube-prometheus' mixed rules: cpu from `rate()` over cAdvisor counters (the
/// pod-level cgroup dropped by `container!=""`), node cpu keyed by `node`, node memory from
/// node-exporter keyed by `instance` (`IP:port`). Both rules map `node` and `instance` to
/// nodes, so either label finds a node by name or by address. The memory container query
/// deliberately keeps the pod-level cgroup (no `container!=""`): the bridge itself must
/// ignore what is not a container of the pod. The window is the `rate()` range.
fn rules(prometheus: &Prometheus) -> String {
    format!(
        r#"
[prometheus]
url = "{}"
timeout = "3s"

[cache]
ttl = "1s"
discovery_interval = "2s"
series_max_age = "10m"

[resource_rules]
window = "30s"

[resource_rules.cpu]
container_query = 'sum by (<<.GroupBy>>) (rate(container_cpu_usage_seconds_total{{<<.LabelMatchers>>,container!=""}}[30s]))'
node_query = 'sum by (<<.GroupBy>>) (rate(node_cpu_usage_seconds_total{{<<.LabelMatchers>>}}[30s]))'
resources.overrides = {{ namespace = {{ resource = "namespace" }}, pod = {{ resource = "pod" }}, node = {{ resource = "node" }}, instance = {{ resource = "node" }} }}
container_label = "container"

[resource_rules.memory]
container_query = 'sum by (<<.GroupBy>>) (container_memory_working_set_bytes{{<<.LabelMatchers>>}})'
node_query = 'sum by (<<.GroupBy>>) (node_memory_MemTotal_bytes{{<<.LabelMatchers>>}} - node_memory_MemAvailable_bytes{{<<.LabelMatchers>>}})'
resources.overrides = {{ namespace = {{ resource = "namespace" }}, pod = {{ resource = "pod" }}, node = {{ resource = "node" }}, instance = {{ resource = "node" }} }}
container_label = "container"
"#,
        prometheus.url()
    )
}

/// The shipped Namespace, ServiceAccount and RBAC (which let the bridge's ServiceAccount
/// list and watch pods and nodes), without the shipped APIServices: this test registers only
/// `v1beta1.metrics.k8s.io`, which deploy/'s kustomize base does not ship.
fn shipped_rbac() -> String {
    let docs = shipped_documents(&[
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ]);
    assert!(docs.len() >= 7, "the shipped RBAC: {docs:#?}");
    docs.join("\n---\n")
}

/// An ExternalName Service kube-apiserver routes to the bridge on loopback with, and the
/// APIServices of both versions (as the chart registers them) with the bridge's generated CA
/// as caBundle; waits until they are Available.
async fn register(cp: &ControlPlane, bridge: &Bridge) {
    let ca = std::fs::read(bridge.ca_path()).expect("generated CA");
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    let port = bridge.port;
    cp.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: kube-metrics-bridge, namespace: custom-metrics}}\n\
         spec: {{type: ExternalName, externalName: 127.0.0.1, ports: [{{name: https, port: {port}}}]}}\n"
    ))
    .await;
    for (version, priority) in [("v1", 200), ("v1beta1", 100)] {
        let name = format!("{version}.metrics.k8s.io");
        cp.apply(&format!(
            "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {{name: {name}}}\n\
             spec: {{group: metrics.k8s.io, version: {version}, groupPriorityMinimum: 100, versionPriority: {priority},\n  \
             caBundle: \"{ca}\", service: {{name: kube-metrics-bridge, namespace: custom-metrics, port: {port}}}}}\n"
        ))
        .await;
        let path = format!("/apis/apiregistration.k8s.io/v1/apiservices/{name}");
        cp.wait_for(
            &format!("APIService {name} Available"),
            Duration::from_secs(90),
            || async {
                let svc = cp.get_json(&path).await;
                svc["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Available" && c["status"] == "True")
                    })
                    .then_some(())
            },
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------
// Nodes

struct NodeCase {
    name: &'static str,
    internal_ip: &'static str,
    hostname: &'static str,
    /// `node_cpu_usage_seconds_total{node=<name>}` grows at this many cores.
    cpu_cores: Option<f64>,
    /// `node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes` with this `instance`.
    memory: Option<(&'static str, f64)>,
    allocatable_cpu_m: i64,
    allocatable_memory: f64,
}

const NODES: [NodeCase; 3] = [
    // Memory found through the InternalIP.
    NodeCase {
        name: "node-a",
        internal_ip: "10.0.0.5",
        hostname: "node-a.cluster.internal",
        cpu_cores: Some(1.25),
        memory: Some(("10.0.0.5:9100", 3.0 * GIB)),
        allocatable_cpu_m: 4000,
        allocatable_memory: 8.0 * GIB,
    },
    // Memory found through the Hostname address.
    NodeCase {
        name: "node-b",
        internal_ip: "10.0.0.6",
        hostname: "worker-b.internal",
        cpu_cores: Some(0.55),
        memory: Some(("worker-b.internal:9100", 1280.0 * MIB)),
        allocatable_cpu_m: 2000,
        allocatable_memory: 4.0 * GIB,
    },
    // cpu only: not served, so kubectl prints `<unknown>`.
    NodeCase {
        name: "node-c",
        internal_ip: "10.0.0.7",
        hostname: "node-c",
        cpu_cores: Some(0.1),
        memory: None,
        allocatable_cpu_m: 2000,
        allocatable_memory: 4.0 * GIB,
    },
];

async fn create_nodes(cp: &ControlPlane, exporter: &Exporter) {
    for n in &NODES {
        cp.apply(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {}, labels: {{pool: test}}}}\n",
            n.name
        ))
        .await;
        let status = serde_json::json!({"status": {
            "addresses": [
                {"type": "InternalIP", "address": n.internal_ip},
                {"type": "Hostname", "address": n.hostname},
            ],
            "capacity": {"cpu": format!("{}m", n.allocatable_cpu_m), "memory": format!("{}", n.allocatable_memory as i64), "pods": "110"},
            "allocatable": {"cpu": format!("{}m", n.allocatable_cpu_m), "memory": format!("{}", n.allocatable_memory as i64), "pods": "110"},
        }})
        .to_string();
        cp.kubectl_ok(&[
            "patch",
            "node",
            n.name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ])
        .await;
        if let Some(cores) = n.cpu_cores {
            // No `instance` of its own: Prometheus gives it the exporter's, which is no node.
            exporter
                .set_counter("node_cpu_usage_seconds_total", &[("node", n.name)], cores)
                .await;
        }
        if let Some((instance, used)) = n.memory {
            let labels = [("instance", instance)];
            exporter
                .set_gauge("node_memory_MemTotal_bytes", &labels, n.allocatable_memory)
                .await;
            exporter
                .set_gauge(
                    "node_memory_MemAvailable_bytes",
                    &labels,
                    n.allocatable_memory - used,
                )
                .await;
        }
    }
    // node-exporter on a machine that is no node: matched to nothing.
    let stray = [("instance", "10.9.9.9:9100")];
    exporter
        .set_gauge("node_memory_MemTotal_bytes", &stray, 2.0 * GIB)
        .await;
    exporter
        .set_gauge("node_memory_MemAvailable_bytes", &stray, GIB)
        .await;
}

// ---------------------------------------------------------------------------------------
// kubectl top's output

/// What kubectl prints for cpu: `Quantity.MilliValue()`, which rounds up.
fn milli(cores: f64) -> i64 {
    (cores * 1000.0 - 1e-9).ceil() as i64
}

/// What kubectl prints for memory: whole MiB, truncated.
fn mebi(bytes: f64) -> i64 {
    (bytes / MIB).floor() as i64
}

/// The rows of a `kubectl top` table, each a map from column header to cell.
fn table(out: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let columns: Vec<&str> = header.split_whitespace().collect();
    lines
        .map(|l| {
            columns
                .iter()
                .map(|c| c.to_string())
                .zip(l.split_whitespace().map(str::to_string))
                .collect()
        })
        .collect()
}

fn number(cell: Option<&String>, unit: &str) -> Option<i64> {
    cell?.strip_suffix(unit)?.parse().ok()
}

/// One expected row: its key cells, cpu in millicores (±[`cpu_tolerance_m`]), memory in MiB
/// (exact), and for nodes the allocatable the percentages are taken of.
#[derive(Debug, Clone)]
struct Row {
    key: Vec<(&'static str, String)>,
    cpu_m: i64,
    memory_mi: i64,
    allocatable: Option<(i64, f64)>,
}

impl Row {
    fn matches(&self, row: &BTreeMap<String, String>) -> bool {
        let Some(cpu) = number(row.get("CPU(cores)"), "m") else {
            return false;
        };
        let memory = number(row.get("MEMORY(bytes)"), "Mi");
        let percent_ok = match self.allocatable {
            None => true,
            Some((cpu_m, memory_bytes)) => {
                // kubectl: int64(MilliValue(usage) / MilliValue(allocatable) * 100).
                let tolerance = cpu_tolerance_m(self.cpu_m);
                let cpu_percents: Vec<i64> = (-tolerance..=tolerance)
                    .map(|d| ((self.cpu_m + d) as f64 / cpu_m as f64 * 100.0) as i64)
                    .collect();
                let memory_percent = (self.memory_mi as f64 * MIB / memory_bytes * 100.0) as i64;
                number(row.get("CPU(%)"), "%").is_some_and(|p| cpu_percents.contains(&p))
                    && number(row.get("MEMORY(%)"), "%") == Some(memory_percent)
            }
        };
        self.key
            .iter()
            .all(|(column, value)| row.get(*column) == Some(value))
            && (cpu - self.cpu_m).abs() <= cpu_tolerance_m(self.cpu_m)
            && memory == Some(self.memory_mi)
            && percent_ok
    }
}

/// Whether `out` has exactly the expected rows (in kubectl's order) and, for each node in
/// `unknown`, a row of `<unknown>` cells.
fn top_matches(out: &str, want: &[Row], unknown: &[&str]) -> bool {
    let rows = table(out);
    let (missing, known): (Vec<_>, Vec<_>) = rows
        .iter()
        .partition(|r| r.get("CPU(cores)").map(String::as_str) == Some("<unknown>"));
    let missing_names: Vec<&str> = missing
        .iter()
        .filter_map(|r| r.get("NAME").map(String::as_str))
        .collect();
    known.len() == want.len()
        && known.iter().zip(want).all(|(got, want)| want.matches(got))
        && missing_names == unknown
        && missing.iter().all(|r| {
            r.len() == 5
                && r.iter()
                    .filter(|(column, _)| *column != "NAME")
                    .all(|(_, cell)| cell == "<unknown>")
        })
}

/// Runs `kubectl <args>` until its output satisfies `check`; panics with the last output.
async fn kubectl_until(cp: &ControlPlane, args: &[&str], what: &str, check: impl Fn(&str) -> bool) {
    let last = RefCell::new(String::new());
    let last_ref = &last;
    let check = &check;
    let ok = poll(Duration::from_secs(120), || async move {
        let out = cp.kubectl(args).await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let good = out.status.success() && check(&String::from_utf8_lossy(&out.stdout));
        *last_ref.borrow_mut() = text;
        good.then_some(())
    })
    .await;
    assert!(
        ok.is_some(),
        "kubectl {args:?}: never printed {what}; last output:\n{}",
        last.borrow()
    );
}

// ---------------------------------------------------------------------------------------
// Pods for kubectl top

/// A container of a test pod: its name, whether it is a native sidecar (an init container
/// with `restartPolicy: Always`), its cpu rate in cores and its working set in bytes.
type ContainerCase = (&'static str, bool, f64, f64);

struct PodCase {
    ns: &'static str,
    name: &'static str,
    app: &'static str,
    containers: &'static [ContainerCase],
}

const WEB_0: PodCase = PodCase {
    ns: TOP_NS,
    name: "web-0",
    app: "web",
    containers: &[
        ("app", false, 0.25, 150.0 * MIB + 123.0),
        ("mesh", true, 0.0125, 20.0 * MIB),
    ],
};
const WEB_1: PodCase = PodCase {
    ns: TOP_NS,
    name: "web-1",
    app: "web",
    containers: &[("app", false, 0.1, 64.0 * MIB)],
};
const API_0: PodCase = PodCase {
    ns: TOP_NS,
    name: "api-0",
    app: "api",
    containers: &[("api", false, 1.5, GIB + 512.0 * 1024.0)],
};
const DB_0: PodCase = PodCase {
    ns: OTHER_NS,
    name: "db-0",
    app: "db",
    containers: &[
        ("db", false, 0.75, 300.0 * MIB),
        ("backup", false, 0.002, 5.0 * MIB + 1.0),
    ],
};
/// Never Running (no kubelet marks it): it has series, but never appears.
const WEB_PENDING: PodCase = PodCase {
    ns: TOP_NS,
    name: "web-pending",
    app: "web",
    containers: &[("app", false, 0.3, 10.0 * MIB)],
};
/// Running, then Succeeded: it appears, then disappears.
const WEB_DONE: PodCase = PodCase {
    ns: TOP_NS,
    name: "web-done",
    app: "web",
    containers: &[("app", false, 0.2, 12.0 * MIB)],
};

impl PodCase {
    fn manifest(&self) -> String {
        let entry = |(name, _, _, _): &ContainerCase| {
            format!("{{name: {name}, image: registry.invalid/{name}:1, restartPolicy: Always}}")
        };
        let init: Vec<String> = self.containers.iter().filter(|c| c.1).map(entry).collect();
        let main: Vec<String> = self
            .containers
            .iter()
            .filter(|c| !c.1)
            .map(|(name, _, _, _)| format!("{{name: {name}, image: registry.invalid/{name}:1}}"))
            .collect();
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: {}, labels: {{app: {}}}}}\n\
             spec: {{initContainers: [{}], containers: [{}]}}\n",
            self.name,
            self.ns,
            self.app,
            init.join(", "),
            main.join(", ")
        )
    }

    async fn feed(&self, exporter: &Exporter) {
        let series: Vec<(&str, f64, f64)> =
            self.containers.iter().map(|c| (c.0, c.2, c.3)).collect();
        feed_pod(exporter, self.ns, self.name, &series).await;
    }

    fn cpu_m(&self) -> i64 {
        milli(self.containers.iter().map(|c| c.2).sum())
    }

    fn memory_mi(&self) -> i64 {
        mebi(self.containers.iter().map(|c| c.3).sum())
    }

    /// Its row in `kubectl top pod -A`.
    fn row(&self) -> Row {
        Row {
            key: vec![
                ("NAMESPACE", self.ns.to_string()),
                ("NAME", self.name.to_string()),
            ],
            cpu_m: self.cpu_m(),
            memory_mi: self.memory_mi(),
            allocatable: None,
        }
    }

    /// Its rows in `kubectl top pod --containers` (containers sorted by name).
    fn container_rows(&self) -> Vec<Row> {
        let mut containers = self.containers.to_vec();
        containers.sort_by_key(|c| c.0);
        containers
            .iter()
            .map(|(name, _, cores, bytes)| Row {
                key: vec![("POD", self.name.to_string()), ("NAME", name.to_string())],
                cpu_m: milli(*cores),
                memory_mi: mebi(*bytes),
                allocatable: None,
            })
            .collect()
    }
}

/// The series cAdvisor has for a pod: one cpu counter and one working-set gauge per
/// container; the pod-level cgroup (no `container`), which holds all of them and a bit more;
/// and the `POD` sandbox. The last two are not containers of the pod and must not count.
async fn feed_pod(exporter: &Exporter, ns: &str, pod: &str, containers: &[(&str, f64, f64)]) {
    for (container, cores, bytes) in containers {
        let labels = [("namespace", ns), ("pod", pod), ("container", container)];
        exporter.set_counter(CPU, &labels, *cores).await;
        exporter.set_gauge(MEMORY, &labels, *bytes).await;
    }
    let pod_level = [("namespace", ns), ("pod", pod)];
    let cores: f64 = containers.iter().map(|c| c.1).sum();
    let bytes: f64 = containers.iter().map(|c| c.2).sum();
    exporter.set_counter(CPU, &pod_level, cores + 0.05).await;
    exporter.set_gauge(MEMORY, &pod_level, bytes + MIB).await;
    let sandbox = [("namespace", ns), ("pod", pod), ("container", "POD")];
    exporter.set_counter(CPU, &sandbox, 0.02).await;
    exporter.set_gauge(MEMORY, &sandbox, 700.0 * 1024.0).await;
}

/// `metadata.name` of each item of a PodMetricsList.
fn item_names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// HPAs

/// A Deployment scaled by an HPA on cpu Utilization 50%: `app` requests 200m, its sidecar
/// `mesh` 100m and uses `mesh_cores` in every pod whatever the load.
struct App {
    name: &'static str,
    /// `mesh` is a native sidecar (init container, `restartPolicy: Always`) rather than a
    /// second entry of `containers`. The Resource app also has a plain init container, which
    /// has finished and so has neither series nor a place in the answer.
    native_sidecar: bool,
    mesh_cores: f64,
    metric: &'static str,
    /// Where the HPA reports the utilization in `status.currentMetrics[0]`.
    current: &'static str,
    /// Whether the pod's usage and request include the sidecar (`Resource`) or only `app`
    /// (`ContainerResource`).
    whole_pod: bool,
}

const APP_REQUEST_M: i64 = 200;
const MESH_REQUEST_M: i64 = 100;
const TARGET_UTILIZATION: i64 = 50;

const RESOURCE_APP: App = App {
    name: "cpu-web",
    native_sidecar: true,
    mesh_cores: 0.01,
    metric: "  - type: Resource\n    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}",
    current: "/resource/current/averageUtilization",
    whole_pod: true,
};

/// Its sidecar is busier (250m) than its request: were it counted, the HPA would scale far
/// beyond what `app` alone asks for.
const CONTAINER_APP: App = App {
    name: "container-web",
    native_sidecar: false,
    mesh_cores: 0.25,
    metric: "  - type: ContainerResource\n    containerResource: {name: cpu, container: app, target: {type: Utilization, averageUtilization: 50}}",
    current: "/containerResource/current/averageUtilization",
    whole_pod: false,
};

impl App {
    fn manifests(&self) -> String {
        let name = self.name;
        let app = format!(
            "{{name: app, image: registry.invalid/app:1, resources: {{requests: {{cpu: {APP_REQUEST_M}m, memory: 64Mi}}}}}}"
        );
        let mesh = |extra: &str| {
            format!(
                "{{name: mesh, image: registry.invalid/mesh:1{extra}, resources: {{requests: {{cpu: {MESH_REQUEST_M}m, memory: 32Mi}}}}}}"
            )
        };
        let (init, containers) = if self.native_sidecar {
            (
                format!(
                    "[{{name: setup, image: registry.invalid/setup:1}}, {}]",
                    mesh(", restartPolicy: Always")
                ),
                format!("[{app}]"),
            )
        } else {
            ("[]".to_string(), format!("[{app}, {}]", mesh("")))
        };
        format!(
            r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {HPA_NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      initContainers: {init}
      containers: {containers}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: {name}, namespace: {HPA_NS}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}
  minReplicas: 1
  maxReplicas: 6
  behavior:
    scaleUp: {{stabilizationWindowSeconds: 0, policies: [{{type: Pods, value: 10, periodSeconds: 1}}]}}
    scaleDown: {{stabilizationWindowSeconds: 0, policies: [{{type: Pods, value: 10, periodSeconds: 1}}]}}
  metrics:
{}
"#,
            self.metric
        )
    }

    /// The utilization (%) the HPA computes for `replicas` pods sharing `load` cores, as
    /// kube-controller-manager does: the sum of the usages over the sum of the requests,
    /// truncated to an integer.
    fn utilization(&self, load: f64, replicas: u64) -> i64 {
        let n = replicas as f64;
        let (usage_m, request_m) = if self.whole_pod {
            (
                (load + n * self.mesh_cores) * 1000.0,
                n * (APP_REQUEST_M + MESH_REQUEST_M) as f64,
            )
        } else {
            (load * 1000.0, n * APP_REQUEST_M as f64)
        };
        (usage_m * 100.0 / request_m) as i64
    }

    /// The replicas the HPA settles at for `load`: the smallest count whose utilization is
    /// within its 10% tolerance of the target, or that the target would not change.
    fn replicas_for(&self, load: f64) -> u64 {
        (1..=6u64)
            .find(|&n| {
                let ratio = self.utilization(load, n) as f64 / TARGET_UTILIZATION as f64;
                (ratio - 1.0).abs() <= 0.1 || (ratio * n as f64).ceil() as u64 == n
            })
            .expect("a replica count within maxReplicas")
    }
}

/// The exporter's series, set only when they change (tending runs twice a second).
struct Feed<'a> {
    exporter: &'a Exporter,
    set: RefCell<HashMap<String, f64>>,
}

impl Feed<'_> {
    fn changed(&self, key: String, value: f64) -> bool {
        self.set.borrow_mut().insert(key, value) != Some(value)
    }

    /// Marks `app`'s new pods Running (no kubelet runs) and shares `load` cores evenly over
    /// its `app` containers, the way real load spreads over replicas; every `mesh` uses
    /// `mesh_cores`. Returns the live pods' names.
    async fn tend(&self, cp: &ControlPlane, app: &App, load: f64) -> Vec<String> {
        let list = cp
            .get_json(&format!(
                "/api/v1/namespaces/{HPA_NS}/pods?labelSelector=app%3D{}",
                app.name
            ))
            .await;
        let mut names = Vec::new();
        for pod in list["items"].as_array().cloned().unwrap_or_default() {
            if pod["metadata"]["deletionTimestamp"].is_string() {
                continue;
            }
            let name = pod["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if pod["status"]["phase"] != "Running" {
                cp.set_pod_running(HPA_NS, &name).await;
            }
            names.push(name);
        }
        let per_pod = load / names.len().max(1) as f64;
        for name in &names {
            if self.changed(format!("{}/{name}", app.name), per_pod) {
                feed_pod(
                    self.exporter,
                    HPA_NS,
                    name,
                    &[
                        ("app", per_pod, 80.0 * MIB),
                        ("mesh", app.mesh_cores, 30.0 * MIB),
                    ],
                )
                .await;
            }
        }
        names.sort();
        names
    }
}

async fn replicas(cp: &ControlPlane, name: &str) -> u64 {
    cp.get_json(&format!(
        "/apis/apps/v1/namespaces/{HPA_NS}/deployments/{name}"
    ))
    .await["spec"]["replicas"]
        .as_u64()
        .unwrap_or(0)
}

async fn hpa_status(cp: &ControlPlane, name: &str) -> Value {
    cp.get_json(&format!(
        "/apis/autoscaling/v2/namespaces/{HPA_NS}/horizontalpodautoscalers/{name}"
    ))
    .await["status"]
        .clone()
}

/// Puts `load` on each app and waits until every Deployment wants the replicas its HPA
/// should settle at and keeps them for five HPA sync periods, tending the pods meanwhile;
/// then until each HPA reports the utilization those replicas imply (±1% for the rates'
/// rounding).
async fn settle(cp: &ControlPlane, feed: &Feed<'_>, apps: &[(&App, f64)]) {
    let wants: Vec<u64> = apps
        .iter()
        .map(|(app, load)| app.replicas_for(*load))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let mut steady_since: Option<tokio::time::Instant> = None;
    loop {
        let mut all = true;
        let mut got = Vec::new();
        for ((app, load), want) in apps.iter().zip(&wants) {
            feed.tend(cp, app, *load).await;
            let n = replicas(cp, app.name).await;
            all &= n == *want;
            got.push(n);
        }
        if all {
            let since = *steady_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() > Duration::from_secs(10) {
                break;
            }
        } else {
            steady_since = None;
        }
        if tokio::time::Instant::now() > deadline {
            let mut report = String::new();
            for (app, _) in apps {
                report += &format!("\n{}: {:#}", app.name, hpa_status(cp, app.name).await);
            }
            panic!("replicas {got:?}, wanted {wants:?}; HPA statuses:{report}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for ((app, load), want) in apps.iter().zip(&wants) {
        let expected = app.utilization(*load, *want);
        let last = RefCell::new(Value::Null);
        let last_ref = &last;
        let reported = poll(Duration::from_secs(60), || async move {
            feed.tend(cp, app, *load).await;
            let status = hpa_status(cp, app.name).await;
            let got = status["currentMetrics"][0]
                .pointer(app.current)
                .and_then(Value::as_i64);
            *last_ref.borrow_mut() = status;
            got.is_some_and(|u| (u - expected).abs() <= 1).then_some(())
        })
        .await;
        assert!(
            reported.is_some(),
            "HPA {} at {want} replicas with {load} cores: {} never became {expected}(±1); status: {:#}",
            app.name,
            app.current,
            last.borrow()
        );
        assert_eq!(replicas(cp, app.name).await, *want, "{}", app.name);
    }
}

#[tokio::test]
async fn kubectl_top_and_resource_hpas_through_the_aggregator() {
    let t0 = std::time::Instant::now();
    let exporter = Exporter::start_empty().await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    let cp = ControlPlane::start().await;
    cp.apply(&shipped_rbac()).await;
    cp.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {TOP_NS}}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {{name: {OTHER_NS}}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {{name: {HPA_NS}}}\n"
    ))
    .await;
    create_nodes(&cp, &exporter).await;

    // Pods for kubectl top: every one has series, Running or not.
    let pods = [&WEB_0, &WEB_1, &API_0, &DB_0, &WEB_PENDING, &WEB_DONE];
    let manifests: String = pods.iter().map(|p| p.manifest()).collect();
    cp.apply(&manifests).await;
    for pod in pods {
        pod.feed(&exporter).await;
        if pod.name != WEB_PENDING.name {
            cp.set_pod_running(pod.ns, pod.name).await;
        }
    }
    prometheus
        .wait_for_series(
            &format!("{MEMORY}{{pod=\"{}\"}}", WEB_DONE.name),
            Duration::from_secs(30),
        )
        .await;

    // The bridge on the host acts as the shipped ServiceAccount (a client certificate for
    // the same user and groups), so the shipped RBAC is what lets it watch pods and nodes.
    let bridge_kubeconfig = cp.client_kubeconfig(
        "system:serviceaccount:custom-metrics:kube-metrics-bridge",
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:custom-metrics",
        ],
    );
    let bridge =
        Bridge::start_for_cluster(&rules(&prometheus), &bridge_kubeconfig, SERVICE_DNS, &[]).await;
    register(&cp, &bridge).await;
    // Discovery through the aggregator; this also refreshes kubectl's discovery cache, which
    // earlier commands filled before the group existed (kubectl top reads ServerGroups from
    // it and would say "Metrics API not available").
    kubectl_until(
        &cp,
        &["api-resources", "--api-group=metrics.k8s.io", "-o", "name"],
        "pods and nodes",
        |out| {
            let mut names: Vec<&str> = out.lines().collect();
            names.sort();
            names == ["nodes.metrics.k8s.io", "pods.metrics.k8s.io"]
        },
    )
    .await;
    eprintln!("[{:.0?}] APIService available", t0.elapsed());
    // metrics.k8s.io/v1 through the aggregator too (kubectl 1.37+ reads it; this kubectl
    // reads v1beta1): the same node, apiVersion v1.
    let v1 = cp
        .wait_for(
            "a v1 NodeMetrics through the aggregator",
            Duration::from_secs(60),
            || async {
                let (status, node) = cp.get("/apis/metrics.k8s.io/v1/nodes/node-a").await;
                (status == 200 && node["kind"] == "NodeMetrics").then_some(node)
            },
        )
        .await;
    assert_eq!(v1["apiVersion"], "metrics.k8s.io/v1", "{v1}");

    // kubectl top pod -A: the Running pods of every namespace, web-done included while it
    // runs; the counters must be a window (30s) old before rate() reads their full rate,
    // which the wait covers.
    let mut all = vec![
        API_0.row(),
        WEB_0.row(),
        WEB_1.row(),
        WEB_DONE.row(),
        DB_0.row(),
    ];
    all.sort_by_key(|r| (r.key[0].1.clone(), r.key[1].1.clone()));
    kubectl_until(
        &cp,
        &["top", "pod", "-A"],
        "every Running pod with its usage",
        |out| top_matches(out, &all, &[]),
    )
    .await;
    eprintln!("[{:.0?}] kubectl top pod -A with web-done", t0.elapsed());

    // web-done finishes: it leaves the Running-pod watch, so it leaves every answer.
    cp.kubectl_ok(&[
        "-n",
        TOP_NS,
        "patch",
        "pod",
        WEB_DONE.name,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Succeeded"}}"#,
    ])
    .await;
    all.retain(|r| r.key[1].1 != WEB_DONE.name);
    kubectl_until(
        &cp,
        &["top", "pod", "-A"],
        "the Running pods without web-done",
        |out| top_matches(out, &all, &[]),
    )
    .await;

    // --containers with a label selector: web-pending and web-done are selected by the label
    // but not Running; api-0 is Running but not selected.
    let containers: Vec<Row> = [&WEB_0, &WEB_1]
        .iter()
        .flat_map(|p| p.container_rows())
        .collect();
    kubectl_until(
        &cp,
        &["top", "pod", "--containers", "-l", "app=web", "-n", TOP_NS],
        "web-0's and web-1's containers",
        |out| top_matches(out, &containers, &[]),
    )
    .await;

    // kubectl top node: node-a by `node` (cpu) and InternalIP:port (memory), node-b by `node`
    // and Hostname:port, node-c (cpu only) unknown.
    let nodes: Vec<Row> = NODES
        .iter()
        .filter_map(|n| {
            let (_, memory) = n.memory?;
            Some(Row {
                key: vec![("NAME", n.name.to_string())],
                cpu_m: milli(n.cpu_cores?),
                memory_mi: mebi(memory),
                allocatable: Some((n.allocatable_cpu_m, n.allocatable_memory)),
            })
        })
        .collect();
    kubectl_until(
        &cp,
        &["top", "node"],
        "node-a and node-b with usage, node-c unknown",
        |out| top_matches(out, &nodes, &["node-c"]),
    )
    .await;
    eprintln!("[{:.0?}] kubectl top checked", t0.elapsed());

    // kubectl get --raw: a get of a Pending pod (or a finished one) is a 404, whatever
    // Prometheus holds for it; a labelSelector list is exactly the selected Running pods.
    for name in [WEB_PENDING.name, WEB_DONE.name] {
        let path = format!("{BASE}/namespaces/{TOP_NS}/pods/{name}");
        let out = cp.kubectl(&["get", "--raw", &path]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("(NotFound)"),
            "{path}: {stderr}{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let (code, status) = cp.get(&path).await;
        assert_eq!(code, 404, "{path}: {status:#}");
    }
    let (code, web0) = cp
        .get(&format!("{BASE}/namespaces/{TOP_NS}/pods/web-0"))
        .await;
    assert_eq!(code, 200, "{web0:#}");
    let container_names: Vec<&str> = web0["containers"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(container_names, ["app", "mesh"], "{web0:#}");
    for (selector, want) in [
        ("app%3Dweb", vec!["web-0", "web-1"]),
        (
            "app%20in%20%28web%2Capi%29",
            vec!["api-0", "web-0", "web-1"],
        ),
        ("app%21%3Dweb", vec!["api-0"]),
        ("app%3Dnone", vec![]),
    ] {
        let path = format!("{BASE}/namespaces/{TOP_NS}/pods?labelSelector={selector}");
        let out = cp.kubectl_ok(&["get", "--raw", &path]).await;
        let list: Value = serde_json::from_str(&out).expect("a PodMetricsList");
        assert_eq!(list["kind"], "PodMetricsList", "{list:#}");
        assert_eq!(item_names(&list), want, "{path}: {list:#}");
    }
    eprintln!("[{:.0?}] kubectl get --raw checked", t0.elapsed());

    // Real HPAs. The HPA's CPU readiness rule (replica_calculator.go groupPods): a pod whose
    // startTime is within --horizontal-pod-autoscaler-cpu-initialization-period (10s here)
    // counts only if Ready and its sample's timestamp is a window (30s) after the Ready
    // transition; an older pod counts unless it is not Ready. set_pod_running writes
    // startTime and Ready's lastTransitionTime as 2000-01-01 (backdated), so every pod this
    // test marks Running is past the initialization period and Ready: its CPU counts as
    // soon as the bridge has a sample for it, with no need to shorten the window. (With a
    // real kubelet's startTime, a new pod would be ignored for ~30s after becoming Ready,
    // which only slows a scale-up.) Pods not yet marked Running are Pending: unready to
    // the HPA; Running pods whose series Prometheus has not scraped twice are missing from
    // the answer (drop_pod), which the HPA treats conservatively.
    let feed = Feed {
        exporter: &exporter,
        set: RefCell::new(HashMap::new()),
    };
    let apps = [&RESOURCE_APP, &CONTAINER_APP];
    let (low, high) = (0.05, [0.39, 0.25]);
    cp.apply(&apps.iter().map(|a| a.manifests()).collect::<String>())
        .await;
    // Low load: one replica each, and the utilization the HPA reports is what the rates and
    // requests give (the Resource app's includes its native sidecar, the ContainerResource
    // app's excludes its busy one).
    settle(&cp, &feed, &[(&RESOURCE_APP, low), (&CONTAINER_APP, low)]).await;
    eprintln!("[{:.0?}] HPAs settled at low load", t0.elapsed());
    assert_eq!(RESOURCE_APP.replicas_for(low), 1);
    assert_eq!(CONTAINER_APP.replicas_for(low), 1);
    // High load: up.
    assert_eq!(RESOURCE_APP.replicas_for(high[0]), 3);
    assert_eq!(CONTAINER_APP.replicas_for(high[1]), 3);
    settle(
        &cp,
        &feed,
        &[(&RESOURCE_APP, high[0]), (&CONTAINER_APP, high[1])],
    )
    .await;
    eprintln!("[{:.0?}] HPAs scaled up", t0.elapsed());
    // Low again: down.
    settle(&cp, &feed, &[(&RESOURCE_APP, low), (&CONTAINER_APP, low)]).await;
    eprintln!("[{:.0?}] HPAs scaled down", t0.elapsed());
}
