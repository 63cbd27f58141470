//! `cargo bench --bench compare` (or `hack/bench.sh`): kube-metrics-bridge against
//! prometheus-adapter v0.12.0, measured in the same run, on the same parts and the same load.
//!
//! What runs (all real, all on loopback; the integration harness in `integration/common/`):
//! - the `demo-exporter` with an `http_requests_total` counter for each of `KMB_BENCH_PODS`
//!   pods in namespace `bench` (and a quarter as many in `bench-other`), scraped every second
//!   by Debian's Prometheus;
//! - etcd and kube-apiserver from `integration/controlplane/` holding those Pods, with an
//!   audit log that records every request made by the servers' users;
//! - prometheus-adapter's own server binary (`hack/bench/adapter/build.sh`) and the bridge's
//!   release binary, both with their defaults; and (unless `KMB_BENCH_VARIANTS=0`) each again
//!   with the knob that limits it most turned off: prometheus-adapter with client-go's
//!   5 requests/s throttle to kube-apiserver lifted (`--client-qps`), the bridge with its
//!   value cache off (`ttl = 0`). They run the same rule: the prometheus-adapter YAML below,
//!   and the TOML `kube-metrics-bridge convert` makes of it.
//!
//! Each server is called directly over TLS with a client certificate of a `system:masters`
//! user, so each does its normal authentication (the client CA from
//! `kube-system/extension-apiserver-authentication`) and authorization. Requests are what an
//! HPA controller sends (`Accept: application/vnd.kubernetes.protobuf, */*`): `pods/*` for the
//! whole namespace, `pods/*` with a `labelSelector`, and a single named pod (cycling through
//! every pod, as many Object/Pods HPAs would). For each scenario and concurrency level every
//! server gets a warm-up and then a timed phase, one server after the other; figures come from
//! the processes themselves (`/proc`), from Prometheus' own counters and from the audit log.
//!
//! Nothing here asserts on speed. It fails (non-zero exit) when a server errors, answers with
//! the wrong number of items under load, or names the wrong pods or values (each pod's counter
//! grows at a known rate) when asked the same requests before the load.
//!
//! Under `cargo test --all-targets` this binary runs without `--bench` and returns at once.

#[path = "shared/audit.rs"]
mod audit;
#[path = "../integration/common/mod.rs"]
mod common;
#[path = "shared/floor.rs"]
mod floor;
#[path = "shared/report.rs"]
mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audit::AuditLog;
use common::adapter::{
    adapter_args, adapter_bin, log_tail, serving_args, serving_pair_for, spawn_logged,
    write_both_configs,
};
use common::bridge::tls_client_builder;
use common::controlplane::{ControlPlane, Options};
use common::{free_port, send_ok, Exporter, Prometheus};
use report::{fmt_num, fmt_ratio, machine, proc_sample, ProcSample};
use serde_json::{json, Value};
use tokio::process::Child;

const NS: &str = "bench";
/// The other namespaces are `bench-other-<k>`: cluster size that no `pods/*` request asks
/// for, but `kubectl top pod -A`, discovery and every watch cache see.
const OTHER_NS_PREFIX: &str = "bench-other";
const METRIC: &str = "http_requests_per_second";
const RESOURCE_BASE: &str = "/apis/metrics.k8s.io/v1beta1";
/// The Service the bench's APIServices name (an ExternalName to 127.0.0.1; every server's
/// serving certificate names it).
const AGGREGATED_NAMESPACE: &str = "kmb-bench";
const AGGREGATED_SERVICE: &str = "bench-server";
const AGGREGATED_SERVICE_DNS: &str = "bench-server.kmb-bench.svc";
/// The identity kube-controller-manager's HPA controller calls the metrics APIs with
/// (`--use-service-account-credentials`); the bootstrap RBAC lets it read them.
const HPA_CONTROLLER_USER: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";
const HPA_CONTROLLER_GROUPS: [&str; 2] = [
    "system:serviceaccounts",
    "system:serviceaccounts:kube-system",
];
/// What the HPA controller's client-go sends.
const HPA_ACCEPT: &str = "application/vnd.kubernetes.protobuf, */*";
/// The label selector scenario picks one shard of four.
const SELECTOR: &str = "shard=1";
/// Every n-th successful answer under load is checked for its item count.
const CHECK_EVERY: u64 = 8;

/// The rule both servers run, in prometheus-adapter's format; the bridge gets
/// `kube-metrics-bridge convert` of it.
const ADAPTER_CONFIG: &str = r#"rules:
- seriesQuery: 'http_requests_total{namespace!="",pod!=""}'
  resources:
    overrides:
      namespace: {resource: "namespace"}
      pod: {resource: "pod"}
  name:
    matches: "^(.*)_total$"
    as: "${1}_per_second"
  metricsQuery: 'sum(rate(<<.Series>>{<<.LabelMatchers>>}[15s])) by (<<.GroupBy>>)'
- seriesQuery: 'connections_active{namespace!="",pod!=""}'
  resources:
    overrides:
      namespace: {resource: "namespace"}
      pod: {resource: "pod"}
  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
externalRules:
- seriesQuery: 'queue_messages_ready{namespace!="",queue!=""}'
  resources:
    overrides:
      namespace: {resource: "namespace"}
  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (queue)'
resourceRules:
  cpu:
    containerQuery: sum(rate(container_cpu_usage_seconds_total{<<.LabelMatchers>>, container!=""}[15s])) by (<<.GroupBy>>)
    nodeQuery: sum(rate(node_cpu_usage_seconds_total{<<.LabelMatchers>>}[15s])) by (<<.GroupBy>>)
    resources:
      overrides:
        node: {resource: node}
        namespace: {resource: namespace}
        pod: {resource: pod}
    containerLabel: container
  memory:
    containerQuery: sum(container_memory_working_set_bytes{<<.LabelMatchers>>, container!=""}) by (<<.GroupBy>>)
    nodeQuery: sum(node_memory_working_set_bytes{<<.LabelMatchers>>}) by (<<.GroupBy>>)
    resources:
      overrides:
        node: {resource: node}
        namespace: {resource: namespace}
        pod: {resource: pod}
    containerLabel: container
  window: 15s
"#;
/// The rule's rate window: 15 samples per series at the 1 s scrape interval (what a `[2m]`
/// window holds at an 8 s interval). The servers start once every series covers it, so the
/// values are steady and the same whenever they are read.
const WINDOW_SECS: u64 = 15;
/// Series per demo exporter: what Prometheus scrapes from one within its 1 s interval here.
const SERIES_PER_EXPORTER: usize = 20_000;

fn main() {
    // The floor server is this binary run again (benches/shared/floor.rs).
    floor::run_if_requested();
    report::bench_main(
        "compare: a benchmark; run it with `cargo bench --bench compare` or hack/bench.sh",
        "a server errored or answered wrong",
        || run(Settings::from_env()),
    );
}

/// Knobs, from the environment (see `hack/bench/README.md`).
#[derive(Debug, Clone)]
struct Settings {
    pods: usize,
    /// Pods outside `bench`, spread over `namespaces - 1` other namespaces.
    other_pods: usize,
    namespaces: usize,
    routes: Vec<Route>,
    /// Also measure the floor: a minimal server answering the bridge's own bytes.
    floor: bool,
    duration: Duration,
    warmup: Duration,
    concurrency: Vec<usize>,
    http2: bool,
    variants: bool,
    adapter_args: Vec<String>,
    scenarios: Vec<Scenario>,
}

impl Settings {
    fn from_env() -> Settings {
        fn var(name: &str) -> Option<String> {
            std::env::var(name).ok().filter(|v| !v.trim().is_empty())
        }
        fn num<T: std::str::FromStr>(name: &str, default: T) -> T {
            var(name).map_or(default, |v| {
                v.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
            })
        }
        let secs = |name: &str, default: f64| Duration::from_secs_f64(num(name, default));
        let pods: usize = num("KMB_BENCH_PODS", 200);
        assert!(pods >= 4, "KMB_BENCH_PODS must be at least 4");
        let namespaces: usize = num("KMB_BENCH_NAMESPACES", 2);
        assert!(namespaces >= 1, "KMB_BENCH_NAMESPACES must be at least 1");
        let cluster_pods: usize = num(
            "KMB_BENCH_CLUSTER_PODS",
            if namespaces > 1 {
                pods + pods / 4
            } else {
                pods
            },
        );
        assert!(
            cluster_pods >= pods && (namespaces > 1 || cluster_pods == pods),
            "KMB_BENCH_CLUSTER_PODS={cluster_pods} must be at least KMB_BENCH_PODS={pods}, \
             and equal to it with one namespace"
        );
        Settings {
            pods,
            other_pods: cluster_pods - pods,
            namespaces,
            floor: var("KMB_BENCH_FLOOR").is_none_or(|v| v != "0"),
            routes: var("KMB_BENCH_ROUTES").map_or(vec![Route::Direct], |v| {
                v.split(',')
                    .map(|k| {
                        Route::ALL
                            .into_iter()
                            .find(|r| r.key() == k.trim())
                            .unwrap_or_else(|| panic!("KMB_BENCH_ROUTES: no route {k:?}"))
                    })
                    .collect()
            }),
            duration: secs("KMB_BENCH_DURATION", 3.0),
            warmup: secs("KMB_BENCH_WARMUP", 1.0),
            concurrency: var("KMB_BENCH_CONCURRENCY")
                .unwrap_or_else(|| "1,8,32".into())
                .split(',')
                .map(|c| {
                    c.trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("KMB_BENCH_CONCURRENCY: bad number {c:?}"))
                })
                .collect(),
            http2: var("KMB_BENCH_HTTP").is_none_or(|v| v != "1"),
            variants: var("KMB_BENCH_VARIANTS").is_none_or(|v| v != "0"),
            adapter_args: var("KMB_BENCH_ADAPTER_ARGS")
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            scenarios: var("KMB_BENCH_SCENARIOS").map_or(Scenario::ALL.to_vec(), |v| {
                v.split(',')
                    .map(|k| {
                        Scenario::ALL
                            .into_iter()
                            .find(|s| s.key() == k.trim())
                            .unwrap_or_else(|| panic!("KMB_BENCH_SCENARIOS: no scenario {k:?}"))
                    })
                    .collect()
            }),
        }
    }
}

/// How a request reaches the server under test.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Route {
    /// Straight to the server, as a `system:masters` client certificate: no
    /// SubjectAccessReview.
    Direct,
    /// Through kube-apiserver's aggregator as the HPA controller's identity
    /// (`system:serviceaccount:kube-system:horizontal-pod-autoscaler`, not `system:masters`):
    /// the server authenticates the aggregator's front-proxy certificate and asks
    /// kube-apiserver a SubjectAccessReview for the user (each caches the answers).
    Aggregated,
}

impl Route {
    const ALL: [Route; 2] = [Route::Direct, Route::Aggregated];

    fn key(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Aggregated => "aggregated",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Aggregated => "through kube-apiserver's aggregator as the HPA controller",
        }
    }
}

/// The pods outside `bench`: (namespace, name, index), `api-<j>` round-robin over the other
/// namespaces.
fn other_pods(settings: &Settings) -> Vec<(String, String, usize)> {
    let spaces = settings.namespaces.saturating_sub(1).max(1);
    (0..settings.other_pods)
        .map(|j| {
            (
                format!("{OTHER_NS_PREFIX}-{}", j % spaces),
                format!("api-{j}"),
                j,
            )
        })
        .collect()
}

/// The request kinds, as an HPA (client-go writes `*` as `%2A`) or kubectl sends them.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scenario {
    All,
    /// `All` asked for JSON (`kubectl get --raw`), against `All`'s protobuf: what each
    /// encoding costs.
    AllJson,
    Selector,
    Named,
    /// `kubectl top pod -A`: every pod's PodMetrics (metrics.k8s.io), in JSON.
    TopPodsAll,
    /// A `type: Resource` HPA's list: the PodMetrics of its pods, in protobuf.
    HpaResource,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Scenario::All,
        Scenario::AllJson,
        Scenario::Selector,
        Scenario::Named,
        Scenario::TopPodsAll,
        Scenario::HpaResource,
    ];

    fn key(self) -> &'static str {
        match self {
            Scenario::All => "pods-all",
            Scenario::AllJson => "pods-all-json",
            Scenario::Selector => "pods-selector",
            Scenario::Named => "pod-named",
            Scenario::TopPodsAll => "top-pods-all",
            Scenario::HpaResource => "hpa-resource",
        }
    }

    /// What the client asks for: kubectl reads JSON, the HPA controller protobuf first.
    fn accept(self) -> &'static str {
        match self {
            Scenario::TopPodsAll | Scenario::AllJson => "application/json",
            _ => HPA_ACCEPT,
        }
    }

    fn is_resource(self) -> bool {
        matches!(self, Scenario::TopPodsAll | Scenario::HpaResource)
    }

    fn describe(self, settings: &Settings) -> String {
        let pods = settings.pods;
        match self {
            Scenario::All => format!("pods/* ({pods} pods)"),
            Scenario::AllJson => format!("pods/* ({pods} pods), JSON"),
            Scenario::Selector => format!(
                "pods/*?labelSelector={SELECTOR} ({} pods)",
                self.expected_items(pods)
            ),
            Scenario::Named => format!("pods/<name> (1 pod, cycling through {pods})"),
            Scenario::TopPodsAll => format!(
                "metrics.k8s.io pods, all namespaces, JSON ({} pods)",
                pods + settings.other_pods
            ),
            Scenario::HpaResource => {
                format!("metrics.k8s.io pods?labelSelector=app=web in {NS}, protobuf ({pods} pods)")
            }
        }
    }

    /// The request path; `i` picks the pod of a named request.
    fn path(self, i: usize, pods: usize) -> String {
        let base = format!("/apis/custom.metrics.k8s.io/v1beta1/namespaces/{NS}/pods");
        match self {
            Scenario::All | Scenario::AllJson => format!("{base}/%2A/{METRIC}"),
            Scenario::Selector => format!("{base}/%2A/{METRIC}?labelSelector=shard%3D1"),
            Scenario::Named => format!("{base}/{}/{METRIC}", pod_name(i % pods)),
            Scenario::TopPodsAll => format!("{RESOURCE_BASE}/pods"),
            Scenario::HpaResource => {
                format!("{RESOURCE_BASE}/namespaces/{NS}/pods?labelSelector=app%3Dweb")
            }
        }
    }

    /// The `web-<i>` pods an answer names (`kubectl top pod -A` also names the other
    /// namespace's `api-<i>` pods, which [`count_items`] does not count).
    fn expected_items(self, pods: usize) -> usize {
        match self {
            Scenario::All | Scenario::AllJson | Scenario::TopPodsAll | Scenario::HpaResource => {
                pods
            }
            // Pods with i % 4 == 1.
            Scenario::Selector => (pods + 2) / 4,
            Scenario::Named => 1,
        }
    }
}

fn pod_name(i: usize) -> String {
    format!("web-{i}")
}

/// Requests per second each pod's counter grows by: 0.5 to 4.25 in steps of 0.25.
fn pod_rate(i: usize) -> f64 {
    0.5 + (i % 16) as f64 * 0.25
}

/// The cores each pod's `app` container uses: 0.125 to 1.0625.
fn pod_cores(i: usize) -> f64 {
    pod_rate(i) / 4.0
}

/// The working set of each pod's `app` container: 64 to 184 MiB, whole bytes.
fn pod_memory(i: usize) -> f64 {
    ((64 + (i % 16) * 8) * 1024 * 1024) as f64
}

/// A server's process: one of the servers under test, or the floor.
enum Process {
    Child(Child),
    Floor(floor::Floor),
}

/// One of the servers under test, as a child process.
struct Server {
    name: &'static str,
    process: Process,
    port: u16,
    /// The Kubernetes user it acts as (its kubeconfig's certificate CN); audit-log key.
    kube_user: String,
    /// The CA of its serving certificate (its own: see [`Route::Aggregated`]).
    ca_pem: Vec<u8>,
    log: PathBuf,
    startup: Duration,
}

impl Server {
    fn pid(&self) -> u32 {
        match &self.process {
            Process::Child(child) => child.id().expect("server is running"),
            Process::Floor(floor) => floor.pid(),
        }
    }

    fn is_floor(&self) -> bool {
        matches!(self.process, Process::Floor(_))
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn log_tail(&self) -> String {
        log_tail(&self.log, 30)
    }

    fn assert_running(&mut self) {
        let exited = match &mut self.process {
            Process::Child(child) => child.try_wait().ok().flatten(),
            Process::Floor(floor) => floor.try_wait(),
        };
        if let Some(status) = exited {
            panic!(
                "{} exited with {status}; its log ends:\n{}",
                self.name,
                self.log_tail()
            );
        }
    }
}

/// Prometheus' own count of instant queries it has answered.
async fn prometheus_queries(prometheus: &Prometheus) -> f64 {
    let text = prometheus.own_metrics().await;
    report::prometheus_sum(
        &text,
        "prometheus_http_requests_total",
        "handler=\"/api/v1/query\"",
    )
}

/// What a timed phase produced on the client side.
#[derive(Default)]
struct Load {
    latencies_us: Vec<u64>,
    ok: u64,
    errors: u64,
    error_samples: Vec<String>,
    checked: u64,
    elapsed: Duration,
    /// Of the first successful answer.
    content_type: Option<String>,
    /// Body bytes of the successful answers.
    bytes: u64,
}

/// `concurrency` workers send `scenario` requests to `server` until `duration` has passed;
/// each finishes the request it has in flight.
async fn load(
    client: &reqwest::Client,
    base: &str,
    scenario: Scenario,
    pods: usize,
    concurrency: usize,
    duration: Duration,
) -> Load {
    let start = Instant::now();
    let deadline = start + duration;
    let next_pod = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(Mutex::new(Load::default()));
    let expected = scenario.expected_items(pods);
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, next_pod, answered, shared) = (
            client.clone(),
            next_pod.clone(),
            answered.clone(),
            shared.clone(),
        );
        let base = base.to_owned();
        workers.push(tokio::spawn(async move {
            let mut mine = Load::default();
            while Instant::now() < deadline {
                let i = next_pod.fetch_add(1, Ordering::Relaxed);
                let url = format!("{base}{}", scenario.path(i, pods));
                let t0 = Instant::now();
                let result = async {
                    let resp = client
                        .get(&url)
                        .header("Accept", scenario.accept())
                        .send()
                        .await
                        .map_err(|e| format!("{e:#}"))?;
                    let status = resp.status();
                    let content_type = resp
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let body = resp.bytes().await.map_err(|e| format!("{e:#}"))?;
                    if !status.is_success() {
                        return Err(format!(
                            "{status}: {}",
                            String::from_utf8_lossy(&body[..body.len().min(300)])
                        ));
                    }
                    Ok((body, content_type))
                }
                .await;
                let took = t0.elapsed();
                match result {
                    Ok((body, content_type)) => {
                        mine.ok += 1;
                        mine.bytes += body.len() as u64;
                        if mine.content_type.is_none() {
                            mine.content_type = content_type;
                        }
                        mine.latencies_us.push(took.as_micros() as u64);
                        if answered.fetch_add(1, Ordering::Relaxed) % CHECK_EVERY == 0 {
                            mine.checked += 1;
                            let items = count_items(&body);
                            if items != expected {
                                mine.errors += 1;
                                if mine.error_samples.len() < 3 {
                                    mine.error_samples
                                        .push(format!("{url}: {items} items, expected {expected}"));
                                }
                            }
                        }
                    }
                    Err(e) => {
                        mine.errors += 1;
                        if mine.error_samples.len() < 3 {
                            mine.error_samples.push(format!("{url}: {e}"));
                        }
                    }
                }
            }
            let mut all = shared.lock().expect("load results");
            all.latencies_us.extend(mine.latencies_us);
            all.ok += mine.ok;
            all.bytes += mine.bytes;
            all.errors += mine.errors;
            all.checked += mine.checked;
            all.error_samples.extend(mine.error_samples);
            if all.content_type.is_none() {
                all.content_type = mine.content_type;
            }
        }));
    }
    for w in workers {
        w.await.expect("load worker");
    }
    let mut result = std::mem::take(&mut *shared.lock().expect("load results"));
    result.elapsed = start.elapsed();
    result.latencies_us.sort_unstable();
    result
}

/// Items in a `MetricValueList`, JSON or protobuf: each names one `web-<i>` pod, and nothing
/// else in the answer contains `web-`.
fn count_items(body: &[u8]) -> usize {
    body.windows(4).filter(|w| w == b"web-").count()
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

/// Everything measured about one server in one phase.
#[derive(Debug, Clone)]
struct Phase {
    requests: u64,
    errors: u64,
    checked: u64,
    seconds: f64,
    rps: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    promql_queries: f64,
    kube_requests: u64,
    kube_breakdown: BTreeMap<String, u64>,
    cpu_s: f64,
    prometheus_cpu_s: f64,
    apiserver_cpu_s: f64,
    loadgen_cpu_s: f64,
    rss_mib: f64,
    hwm_mib: f64,
    content_type: Option<String>,
    answer_bytes: f64,
    error_samples: Vec<String>,
}

impl Phase {
    fn to_json(&self) -> Value {
        json!({
            "requests": self.requests, "errors": self.errors, "checked_answers": self.checked,
            "seconds": self.seconds, "requests_per_second": self.rps,
            "latency_ms": {"p50": self.p50_ms, "p95": self.p95_ms, "p99": self.p99_ms, "max": self.max_ms},
            "promql_queries": self.promql_queries,
            "kube_apiserver_requests": self.kube_requests,
            "kube_apiserver_requests_by_kind": self.kube_breakdown,
            "cpu_seconds": self.cpu_s,
            "cpu_us_per_request": self.cpu_per_request_us(),
            "prometheus_cpu_seconds": self.prometheus_cpu_s,
            "kube_apiserver_cpu_seconds": self.apiserver_cpu_s,
            "load_generator_cpu_seconds": self.loadgen_cpu_s,
            "vm_rss_mib": self.rss_mib, "vm_hwm_mib": self.hwm_mib,
            "content_type": self.content_type,
            "mean_answer_bytes": self.answer_bytes,
            "error_samples": self.error_samples,
        })
    }

    fn cpu_per_request_us(&self) -> f64 {
        if self.requests == 0 {
            f64::NAN
        } else {
            self.cpu_s * 1e6 / self.requests as f64
        }
    }
}

/// The shared parts every phase reads from.
struct Rig {
    prometheus: Prometheus,
    apiserver_pid: u32,
    audit: AuditLog,
    /// Calls the servers directly (a `system:masters` client certificate).
    client: reqwest::Client,
    /// Calls kube-apiserver as the HPA controller's ServiceAccount.
    aggregated_client: reqwest::Client,
    apiserver_url: String,
    settings: Settings,
}

impl Rig {
    /// Warm-up, then a timed phase of `scenario` at `concurrency` against `server`.
    async fn phase(
        &mut self,
        server: &mut Server,
        route: Route,
        scenario: Scenario,
        concurrency: usize,
    ) -> Phase {
        let pods = self.settings.pods;
        let (client, base) = match route {
            Route::Direct => (&self.client, server.url("")),
            Route::Aggregated => (&self.aggregated_client, self.apiserver_url.clone()),
        };
        if !self.settings.warmup.is_zero() {
            load(
                client,
                &base,
                scenario,
                pods,
                concurrency,
                self.settings.warmup,
            )
            .await;
        }
        server.assert_running();
        let queries0 = prometheus_queries(&self.prometheus).await;
        let prom_pid = self.prometheus.pid().expect("Prometheus runs");
        let (s0, p0, a0, l0) = (
            proc_sample(server.pid()),
            proc_sample(prom_pid),
            proc_sample(self.apiserver_pid),
            proc_sample(std::process::id()),
        );
        self.audit.take();
        let run = load(
            client,
            &base,
            scenario,
            pods,
            concurrency,
            self.settings.duration,
        )
        .await;
        let (s1, p1, a1, l1) = (
            proc_sample(server.pid()),
            proc_sample(prom_pid),
            proc_sample(self.apiserver_pid),
            proc_sample(std::process::id()),
        );
        let queries1 = prometheus_queries(&self.prometheus).await;
        // The audit log backend writes as requests complete; give it a moment.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let kube_breakdown = self
            .audit
            .take()
            .remove(&server.kube_user)
            .unwrap_or_default();
        server.assert_running();
        let lat = &run.latencies_us;
        let seconds = run.elapsed.as_secs_f64();
        Phase {
            requests: run.ok + run.errors,
            errors: run.errors,
            checked: run.checked,
            seconds,
            rps: run.ok as f64 / seconds,
            p50_ms: percentile(lat, 50.0),
            p95_ms: percentile(lat, 95.0),
            p99_ms: percentile(lat, 99.0),
            max_ms: lat.last().map_or(f64::NAN, |v| *v as f64 / 1000.0),
            // This process asks Prometheus nothing during a phase.
            promql_queries: queries1 - queries0,
            kube_requests: kube_breakdown.values().sum(),
            kube_breakdown,
            cpu_s: (s1.cpu.saturating_sub(s0.cpu)).as_secs_f64(),
            prometheus_cpu_s: (p1.cpu.saturating_sub(p0.cpu)).as_secs_f64(),
            apiserver_cpu_s: (a1.cpu.saturating_sub(a0.cpu)).as_secs_f64(),
            loadgen_cpu_s: (l1.cpu.saturating_sub(l0.cpu)).as_secs_f64(),
            rss_mib: s1.rss_kib as f64 / 1024.0,
            hwm_mib: s1.hwm_kib as f64 / 1024.0,
            content_type: run.content_type,
            answer_bytes: run.bytes as f64 / run.ok.max(1) as f64,
            error_samples: run.error_samples,
        }
    }
}

/// The APIServices the bench registers: every API both servers serve.
const APISERVICES: [(&str, &str); 4] = [
    ("custom.metrics.k8s.io", "v1beta1"),
    ("custom.metrics.k8s.io", "v1beta2"),
    ("external.metrics.k8s.io", "v1beta1"),
    ("metrics.k8s.io", "v1beta1"),
];

/// Points the bench's APIServices at `server` (its port, its own serving CA) and waits until
/// the aggregator reaches it: a request through kube-apiserver answered 200 and a
/// SubjectAccessReview by `server`'s user in the audit log (only the server answering the HPA
/// controller's requests asks about them). Panics after a minute.
async fn route_to(cp: &ControlPlane, rig: &mut Rig, server: &Server) {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(&server.ca_pem);
    let port = server.port;
    let mut yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {AGGREGATED_NAMESPACE}}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: {AGGREGATED_SERVICE}, namespace: {AGGREGATED_NAMESPACE}}}\n\
         spec: {{type: ExternalName, externalName: 127.0.0.1, ports: [{{name: https, port: {port}}}]}}\n"
    );
    for (group, version) in APISERVICES {
        let _ = write!(
            yaml,
            "---\napiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {{name: {version}.{group}}}\n\
             spec: {{group: {group}, version: {version}, groupPriorityMinimum: 100, versionPriority: 100, \
             service: {{name: {AGGREGATED_SERVICE}, namespace: {AGGREGATED_NAMESPACE}, port: {port}}}, caBundle: {ca}}}\n"
        );
    }
    cp.apply(&yaml).await;
    for (group, version) in APISERVICES {
        cp.wait_apiservice_available(&format!("{version}.{group}"))
            .await;
    }
    rig.audit.take();
    let path = Scenario::All.path(0, rig.settings.pods);
    let url = format!("{}{path}", rig.apiserver_url);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut reviews = 0;
    loop {
        let last;
        let ok = match rig.aggregated_client.get(&url).send().await {
            Ok(r) => {
                last = format!("HTTP {}", r.status());
                r.status().is_success()
            }
            Err(e) => {
                last = format!("{e:#}");
                false
            }
        };
        // The audit backend writes as requests complete.
        tokio::time::sleep(Duration::from_millis(300)).await;
        reviews += rig
            .audit
            .take()
            .get(&server.kube_user)
            .and_then(|m| m.get("create subjectaccessreviews").copied())
            .unwrap_or(0);
        if ok && reviews > 0 {
            eprintln!("compare: the aggregator routes to {}", server.name);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the aggregator did not reach {} within 60 s (last answer: {last}, its \
             SubjectAccessReviews: {reviews}); its log ends:\n{}",
            server.name,
            server.log_tail()
        );
    }
}

/// A client trusting `ca` with a client certificate; a request fails after a minute (what
/// kube-apiserver allows a proxied request), not the harness' usual 15 s: at 10,000 pods
/// prometheus-adapter takes longer than that for `kubectl top pod -A` under load.
fn load_client(
    ca: &std::path::Path,
    http2: bool,
    identity: Option<(&PathBuf, &PathBuf)>,
) -> reqwest::Client {
    tls_client_builder(ca, http2, identity.map(|(c, k)| (c.as_path(), k.as_path())))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("load client")
}

/// Creates the namespaces and Pods through the API, a few at a time.
async fn create_pods(cp: &ControlPlane, settings: &Settings) {
    let client = cp.admin_client();
    let others = other_pods(settings);
    let namespaces: BTreeSet<String> = std::iter::once(NS.to_owned())
        .chain(others.iter().map(|(ns, _, _)| ns.clone()))
        .collect();
    for ns in &namespaces {
        let url = format!("{}/api/v1/namespaces", cp.server_url());
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        let r = client
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("POST namespace");
        assert!(r.status().is_success(), "namespace {ns}: {}", r.status());
        // No controller manager runs to make it, and admission wants it for every pod.
        let url = format!("{}/api/v1/namespaces/{ns}/serviceaccounts", cp.server_url());
        let body =
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
        let r = client
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("POST serviceaccount");
        assert!(
            r.status().is_success(),
            "serviceaccount {ns}/default: {}",
            r.status()
        );
    }
    let mut pods: Vec<(String, String, usize)> = (0..settings.pods)
        .map(|i| (NS.to_owned(), pod_name(i), i))
        .collect();
    pods.extend(others);
    let create = |(ns, name, i): (String, String, usize)| async move {
        let url = format!("{}/api/v1/namespaces/{ns}/pods", cp.server_url());
        let body = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "web", "shard": (i % 4).to_string()}},
            "spec": {
                "automountServiceAccountToken": false,
                "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
            },
        });
        send_ok(
            client.post(&url).json(&body),
            &format!("POST pod {ns}/{name}"),
        )
        .await;
        // Running, as a kubelet would say: both servers serve resource metrics of Running
        // pods only.
        let running = client
            .patch(format!("{url}/{name}/status"))
            .header("Content-Type", "application/merge-patch+json")
            .body(json!({"status": {"phase": "Running"}}).to_string());
        send_ok(running, &format!("PATCH pod {ns}/{name} status")).await;
    };
    use futures::StreamExt as _;
    futures::stream::iter(pods)
        .map(create)
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
}

/// `describedObject.name` -> value of a JSON `MetricValueList`.
fn values_of(list: &Value) -> BTreeMap<String, f64> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| {
            let name = item["describedObject"]["name"].as_str().unwrap_or("?");
            let value = item["value"].as_str().unwrap_or("?");
            let milli = kube_metrics_bridge::quantity::parse_milli(value)
                .unwrap_or_else(|| panic!("{name}: value {value:?} is not a quantity"));
            (name.to_owned(), milli as f64 / 1000.0)
        })
        .collect()
}

async fn get_json(client: &reqwest::Client, server: &Server, path: &str) -> (u16, Value) {
    let resp = client
        .get(server.url(path))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: GET {path}: {e:#}", server.name));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Waits until `server` answers `pods/*` with every pod, and `kubectl top pod -A` with every
/// pod of both namespaces; adds the time to its startup.
async fn wait_serving(client: &reqwest::Client, server: &mut Server, settings: &Settings) {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(300);
    let pods = settings.pods;
    let checks = [
        (Scenario::All.path(0, pods), pods),
        (
            Scenario::TopPodsAll.path(0, pods),
            pods + settings.other_pods,
        ),
    ];
    for (path, want) in checks {
        loop {
            server.assert_running();
            let ready = client
                .get(server.url(&path))
                .header("Accept", "application/json")
                .send()
                .await
                .ok();
            if let Some(resp) = ready {
                if resp.status() == 200 {
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    if body["items"].as_array().map_or(0, Vec::len) == want {
                        break;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer {path} with {want} pods within 300 s; its log ends:\n{}",
                server.name,
                server.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    server.startup += t0.elapsed();
}

/// `namespace/name` -> (cpu cores, memory bytes) of the `app` container, from a JSON
/// `PodMetricsList`.
fn usage_of(list: &Value) -> BTreeMap<String, (f64, f64)> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| {
            let m = &item["metadata"];
            let key = format!(
                "{}/{}",
                m["namespace"].as_str().unwrap_or("?"),
                m["name"].as_str().unwrap_or("?")
            );
            let app = item["containers"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["name"] == "app"))
                .map(|c| &c["usage"]);
            let read = |r: &str| {
                app.and_then(|u| u[r].as_str())
                    .and_then(common::quantity)
                    .unwrap_or(f64::NAN)
            };
            (key, (read("cpu"), read("memory")))
        })
        .collect()
}

/// Asks every server the resource scenarios' requests (JSON) and compares: the pods named
/// must be the expected ones, memory exact, and cpu the container's true rate within 1m plus
/// 0.5% (prometheus-adapter truncates to millicores; `rate()` adds float noise).
async fn resource_agreement(
    client: &reqwest::Client,
    servers: &[Server],
    settings: &Settings,
    failures: &mut Vec<String>,
) -> Vec<String> {
    let pods = settings.pods;
    let mut report = Vec::new();
    for scenario in [Scenario::TopPodsAll, Scenario::HpaResource] {
        let path = scenario.path(0, pods);
        let mut want: BTreeMap<String, usize> = (0..pods)
            .map(|i| (format!("{NS}/{}", pod_name(i)), i))
            .collect();
        if scenario == Scenario::TopPodsAll {
            want.extend(
                other_pods(settings)
                    .into_iter()
                    .map(|(ns, name, i)| (format!("{ns}/{name}"), i)),
            );
        }
        for server in servers {
            let (status, body) = get_json(client, server, &path).await;
            if status != 200 {
                failures.push(format!("{}: GET {path} -> {status}: {body}", server.name));
                continue;
            }
            let usage = usage_of(&body);
            let got: BTreeSet<&String> = usage.keys().collect();
            let expected: BTreeSet<&String> = want.keys().collect();
            if got != expected {
                failures.push(format!(
                    "{}: GET {path} named {} pods, expected {}",
                    server.name,
                    got.len(),
                    expected.len()
                ));
            }
            for (key, (cpu, memory)) in &usage {
                let Some(&i) = want.get(key) else { continue };
                let (cores, bytes) = (pod_cores(i), pod_memory(i));
                if (cpu - cores).abs() > 0.001 + 0.005 * cores || *memory != bytes {
                    failures.push(format!(
                        "{}: GET {path}: {key} uses {cpu} cores, {memory} bytes; true: {cores}, {bytes}",
                        server.name
                    ));
                }
            }
        }
        report.push(format!(
            "{:<60} {} pods",
            path.trim_start_matches("/apis/"),
            want.len()
        ));
    }
    report
}

/// The bridge's answers to every request the load phases send (each named pod's too), as the
/// floor serves them.
async fn floor_answers(
    client: &reqwest::Client,
    bridge: &Server,
    settings: &Settings,
) -> floor::Answers {
    let mut answers = floor::Answers::new();
    let base = bridge.url("");
    for &scenario in &settings.scenarios {
        let paths: Vec<String> = match scenario {
            Scenario::Named => (0..settings.pods)
                .map(|i| scenario.path(i, settings.pods))
                .collect(),
            _ => vec![scenario.path(0, settings.pods)],
        };
        for path in paths {
            let answer = answers
                .record(client, &base, &path, scenario.accept())
                .await
                .unwrap_or_else(|e| panic!("recording the bridge's answer for the floor: {e:#}"));
            assert_eq!(
                answer.status, 200,
                "the bridge answered {path} with {}",
                answer.status
            );
        }
    }
    answers
}

/// Bytes of one answer to `path` from each server, asked for JSON and for protobuf.
async fn answer_sizes(
    client: &reqwest::Client,
    servers: &[Server],
    scenarios: &[Scenario],
    pods: usize,
) -> Vec<(String, Vec<f64>)> {
    let mut rows = Vec::new();
    for &scenario in scenarios {
        for (encoding, accept) in [("JSON", "application/json"), ("protobuf", HPA_ACCEPT)] {
            let mut sizes = Vec::new();
            for server in servers {
                let path = scenario.path(0, pods);
                let resp = client
                    .get(server.url(&path))
                    .header("Accept", accept)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{}: GET {path}: {e:#}", server.name));
                let ok = resp.status().is_success();
                let bytes = resp.bytes().await.map_or(0, |b| b.len());
                sizes.push(if ok { bytes as f64 } else { f64::NAN });
            }
            rows.push((format!("{} {encoding} bytes", scenario.key()), sizes));
        }
    }
    rows
}

/// Asks every server the same requests (JSON) and compares the answers: the pods named must be
/// the expected ones, and every value must be the pod's true rate within 1% (prometheus-adapter
/// truncates to milli-units; the counters are linear, so `rate()` over a covered window is
/// exact up to float noise).
async fn agreement(
    client: &reqwest::Client,
    servers: &[Server],
    settings: &Settings,
) -> Vec<String> {
    let pods = settings.pods;
    let mut report = Vec::new();
    let mut failures = Vec::new();
    let mut worst = 0f64;
    // AllJson asks what All asks: its answer is compared there.
    for scenario in Scenario::ALL
        .into_iter()
        .filter(|s| !s.is_resource() && *s != Scenario::AllJson)
    {
        let probes: Vec<usize> = match scenario {
            Scenario::Named => vec![0, 1, pods / 2, pods - 1],
            _ => vec![0],
        };
        for i in probes {
            let path = scenario.path(i, pods);
            let want: BTreeSet<String> = (0..pods)
                .filter(|p| match scenario {
                    Scenario::Selector => p % 4 == 1,
                    Scenario::Named => *p == i % pods,
                    // Resource scenarios: resource_agreement.
                    Scenario::All
                    | Scenario::AllJson
                    | Scenario::TopPodsAll
                    | Scenario::HpaResource => true,
                })
                .map(pod_name)
                .collect();
            for server in servers {
                let (status, body) = get_json(client, server, &path).await;
                if status != 200 {
                    failures.push(format!("{}: GET {path} -> {status}: {body}", server.name));
                    continue;
                }
                let values = values_of(&body);
                let got: BTreeSet<String> = values.keys().cloned().collect();
                if got != want {
                    failures.push(format!(
                        "{}: GET {path} named {} pods, expected {}; missing {:?}, extra {:?}",
                        server.name,
                        got.len(),
                        want.len(),
                        want.difference(&got).take(5).collect::<Vec<_>>(),
                        got.difference(&want).take(5).collect::<Vec<_>>()
                    ));
                }
                for (pod, v) in &values {
                    let Some(n) = pod.strip_prefix("web-").and_then(|n| n.parse().ok()) else {
                        continue;
                    };
                    let truth = pod_rate(n);
                    let diff = (v - truth).abs() / truth;
                    worst = worst.max(diff);
                    if diff > 0.01 {
                        failures.push(format!(
                            "{}: GET {path}: {pod} is {v}, its counter grows by {truth}/s",
                            server.name
                        ));
                    }
                }
            }
            report.push(format!(
                "{:<60} {} pods",
                path.trim_start_matches("/apis/custom.metrics.k8s.io/v1beta1/"),
                want.len()
            ));
        }
    }
    report.extend(resource_agreement(client, servers, settings, &mut failures).await);
    println!("\n== agreement: the same requests to every server, JSON answers compared");
    for line in &report {
        println!("  {line}");
    }
    println!(
        "  every server named exactly these pods; largest difference from a pod's true rate: {:.3}% (allowed: 1%);\n  \
         resource usage: memory exact, cpu within 1m + 0.5% of the true rate",
        worst * 100.0
    );
    if failures.len() > 10 {
        let more = failures.len() - 10;
        failures.truncate(10);
        failures.push(format!("... and {more} more disagreements"));
    }
    failures
}

/// The header of a table: the first column `width` wide, then the servers in pairs, each
/// pair followed by a ratio column.
fn header_line(width: usize, first: &str, headers: &[&str]) -> String {
    let mut line = format!("{first:<width$}");
    for pair in headers.chunks(2) {
        for h in pair {
            let _ = write!(line, " {h:>20}");
        }
        if pair.len() == 2 {
            let _ = write!(line, " {:>7}", "ratio");
        } else if headers.len() > 1 {
            let _ = write!(line, " {:>12}", "bridge/floor");
        }
        line.push_str("  ");
    }
    line
}

/// One table: a metric per row; the servers in pairs (prometheus-adapter, kube-metrics-bridge),
/// each pair followed by the ratio bridge / adapter.
fn table(title: &str, headers: &[&str], rows: &[(&str, Vec<f64>)]) -> String {
    let mut out = format!("\n== {title}\n");
    let line = header_line(34, "metric", headers);
    out.push_str(line.trim_end());
    out.push('\n');
    for (metric, values) in rows {
        let mut line = format!("{metric:<34}");
        for pair in values.chunks(2) {
            for v in pair {
                let _ = write!(line, " {:>20}", fmt_num(*v));
            }
            match pair {
                [adapter, bridge] => {
                    let _ = write!(line, " {:>7}", fmt_ratio(*bridge, *adapter));
                }
                // The floor, last: the bridge (second column) against it.
                [floor] if values.len() > 1 => {
                    let _ = write!(line, " {:>12}", fmt_ratio(values[1], *floor));
                }
                _ => {}
            }
            line.push_str("  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn phase_rows(phases: &[Phase]) -> Vec<(&'static str, Vec<f64>)> {
    let col = |f: &dyn Fn(&Phase) -> f64| phases.iter().map(f).collect::<Vec<f64>>();
    vec![
        ("requests/s (higher is better)", col(&|p| p.rps)),
        ("latency p50 ms", col(&|p| p.p50_ms)),
        ("latency p95 ms", col(&|p| p.p95_ms)),
        ("latency p99 ms", col(&|p| p.p99_ms)),
        (
            "requests answered",
            col(&|p| (p.requests - p.errors) as f64),
        ),
        ("errors", col(&|p| p.errors as f64)),
        ("answer size bytes (mean)", col(&|p| p.answer_bytes)),
        (
            "PromQL queries sent to Prometheus",
            col(&|p| p.promql_queries),
        ),
        (
            "PromQL queries per request",
            col(&|p| p.promql_queries / p.requests.max(1) as f64),
        ),
        (
            "requests to kube-apiserver",
            col(&|p| p.kube_requests as f64),
        ),
        ("server CPU s", col(&|p| p.cpu_s)),
        (
            "server CPU us per request",
            col(&|p| p.cpu_per_request_us()),
        ),
        ("Prometheus CPU s", col(&|p| p.prometheus_cpu_s)),
        ("kube-apiserver CPU s", col(&|p| p.apiserver_cpu_s)),
        ("load generator CPU s", col(&|p| p.loadgen_cpu_s)),
        ("VmRSS after MiB", col(&|p| p.rss_mib)),
        ("VmHWM (peak RSS so far) MiB", col(&|p| p.hwm_mib)),
    ]
}

/// One server to measure: which program, as which Kubernetes user, with what changed.
struct Variant {
    /// Key in the JSON figures.
    name: &'static str,
    /// Column header.
    header: &'static str,
    /// Its kubeconfig's user (certificate CN): how the audit log tells them apart.
    user: &'static str,
    adapter: bool,
    args: Vec<String>,
    envs: Vec<(&'static str, &'static str)>,
}

/// Columns come in pairs (prometheus-adapter, kube-metrics-bridge): first as shipped, then
/// each without the knob that limits it most.
fn variants(settings: &Settings) -> Vec<Variant> {
    let mut v = vec![
        Variant {
            name: "prometheus-adapter",
            header: "prometheus-adapter",
            user: "bench-adapter",
            adapter: true,
            args: settings.adapter_args.clone(),
            envs: vec![],
        },
        Variant {
            name: "kube-metrics-bridge",
            header: "kube-metrics-bridge",
            user: "bench-bridge",
            adapter: false,
            args: vec![],
            envs: vec![],
        },
    ];
    if settings.variants {
        let mut args = settings.adapter_args.clone();
        args.extend(["--client-qps=10000".into(), "--client-burst=10000".into()]);
        v.push(Variant {
            name: "prometheus-adapter-unthrottled",
            header: "adapter, qps=10000",
            user: "bench-adapter-unthrottled",
            adapter: true,
            args,
            envs: vec![],
        });
        v.push(Variant {
            name: "kube-metrics-bridge-ttl0",
            header: "bridge, ttl=0",
            user: "bench-bridge-ttl0",
            adapter: false,
            args: vec![],
            envs: vec![("KMB_CONFIG_CACHE__TTL", "0s")],
        });
    }
    v
}

async fn run(settings: Settings) -> Vec<String> {
    let started = std::time::SystemTime::now();
    let t0 = Instant::now();
    let machine = machine();
    eprintln!("compare: {settings:?}");
    let adapter_bin = adapter_bin().await;
    let bridge_bin = PathBuf::from(env!("CARGO_BIN_EXE_kube-metrics-bridge"));
    let variants = variants(&settings);
    let dir = tempfile::Builder::new()
        .prefix("kmb-bench-")
        .tempdir()
        .expect("tempdir");
    let root = dir.path();

    // Series: two metrics per pod (a counter the requests ask for, and a gauge both servers
    // discover and serve), and cAdvisor's series of each pod's one container, for the
    // resource scenarios: 40,000 series at 10,000 pods, 200,000 at 50,000. Spread over
    // exporters of SERIES_PER_EXPORTER each, as a scrape must end within the 1 s interval
    // (one exporter of 200,000 series did not, and `rate()` came out 6% low).
    let total_series = 4 * (settings.pods + settings.other_pods);
    let exporters: Vec<Exporter> = futures::future::join_all(
        (0..total_series.div_ceil(SERIES_PER_EXPORTER).max(1))
            .map(|_| Exporter::start_empty_holding(SERIES_PER_EXPORTER + 100)),
    )
    .await;
    let t_series = Instant::now();
    let pods: Vec<(String, String, usize)> = (0..settings.pods)
        .map(|i| (NS.to_owned(), pod_name(i), i))
        .chain(other_pods(&settings))
        .collect();
    let exporters_ref = &exporters;
    let set_series = |(k, (ns, pod, i)): (usize, (String, String, usize))| async move {
        // A pod's four series on one exporter.
        let exporter_ref = &exporters_ref[k % exporters_ref.len()];
        let labels = [("namespace", ns.as_str()), ("pod", pod.as_str())];
        exporter_ref
            .set_counter("http_requests_total", &labels, pod_rate(i))
            .await;
        exporter_ref
            .set_gauge("connections_active", &labels, (i % 16 + 1) as f64)
            .await;
        let labels = [
            ("namespace", ns.as_str()),
            ("pod", pod.as_str()),
            ("container", "app"),
        ];
        exporter_ref
            .set_counter("container_cpu_usage_seconds_total", &labels, pod_cores(i))
            .await;
        exporter_ref
            .set_gauge("container_memory_working_set_bytes", &labels, pod_memory(i))
            .await;
    };
    {
        use futures::StreamExt as _;
        futures::stream::iter(pods.into_iter().enumerate())
            .map(set_series)
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
    }
    // An external metric, so both servers serve external.metrics.k8s.io (prometheus-adapter
    // answers 404 for the group without one, and the aggregator marks it unavailable).
    exporters[0]
        .set_gauge(
            "queue_messages_ready",
            &[("namespace", NS), ("queue", "work")],
            42.0,
        )
        .await;
    eprintln!(
        "compare: {} series in {} exporters ({:.1?})",
        total_series + 1,
        exporters.len(),
        t_series.elapsed()
    );
    let targets: Vec<String> = exporters.iter().map(Exporter::target).collect();
    let prometheus = Prometheus::start(&targets).await;

    // The cluster, auditing what the servers' users ask of it.
    let users: Vec<&str> = variants.iter().map(|v| v.user).collect();
    let (audit_flags, audit_path) = audit::apiserver_flags(root, &users);
    let cp = ControlPlane::start_with(Options {
        apiserver_args: audit_flags,
        skip_controller_manager: true,
        ..Options::default()
    })
    .await;
    let apiserver_pid = cp
        .pids()
        .into_iter()
        .find(|(name, _)| *name == "kube-apiserver")
        .map(|(_, pid)| pid)
        .expect("kube-apiserver pid");
    create_pods(&cp, &settings).await;

    // Rules: prometheus-adapter's YAML, and the bridge's TOML converted from it.
    let (adapter_config, rules) =
        write_both_configs(root, ADAPTER_CONFIG, &bridge_bin, &prometheus.url());
    // A serving CA of its own for each server: the aggregator, given one server's CA, can
    // only reach that server. The direct client trusts them all.
    let serving: Vec<(PathBuf, PathBuf, PathBuf)> = variants
        .iter()
        .map(|v| {
            let dir = root.join(v.name);
            std::fs::create_dir_all(&dir).expect("server dir");
            serving_pair_for(&dir, &[AGGREGATED_SERVICE_DNS])
        })
        .collect();
    let floor_serving = {
        let dir = root.join("floor");
        std::fs::create_dir_all(&dir).expect("floor dir");
        serving_pair_for(&dir, &[])
    };
    let ca_bundle = root.join("serving-cas.crt");
    let bundle: Vec<u8> = serving
        .iter()
        .chain(std::iter::once(&floor_serving))
        .flat_map(|t| std::fs::read(&t.0).expect("serving CA"))
        .collect();
    std::fs::write(&ca_bundle, bundle).expect("CA bundle");
    let pki = cp.dir().join("pki");
    let client = load_client(
        &ca_bundle,
        settings.http2,
        Some((&pki.join("admin.crt"), &pki.join("admin.key"))),
    );

    // Every series must cover the rule's window before the servers start: then both discover
    // the metric on their first relist and every answer is the steady rate.
    let t_wait = Instant::now();
    prometheus
        .wait_or_fail(
            "every pod's series to cover the rate window",
            Duration::from_secs(90),
            || async {
                let q = format!(
                    "count(count_over_time(http_requests_total{{namespace=\"{NS}\"}}[{}s]) >= {})",
                    WINDOW_SECS + 10,
                    WINDOW_SECS + 2
                );
                let n = prometheus.try_query(&q).await.ok()?.first()?.value;
                (n as usize == settings.pods).then_some(())
            },
        )
        .await;
    eprintln!(
        "compare: series cover the {WINDOW_SECS} s window (waited {:.1?})",
        t_wait.elapsed()
    );

    // One at a time, so no start-up competes with another for the CPUs.
    let mut servers = Vec::new();
    for (variant, tls) in variants.iter().zip(&serving) {
        let kubeconfig = cp.client_kubeconfig(variant.user, &["system:masters"]);
        let port = free_port();
        let log = root.join(format!("{}.log", variant.name));
        let mut args = serving_args(tls, port);
        let t = Instant::now();
        let child = if variant.adapter {
            args.extend(adapter_args(
                root,
                &kubeconfig,
                &prometheus.url(),
                &adapter_config,
            ));
            // The bridge's default discovery interval (1m); theirs is 10m.
            args.push("--metrics-relist-interval=1m".to_owned());
            args.extend(variant.args.iter().cloned());
            spawn_logged(&adapter_bin, &args, &variant.envs, &log)
        } else {
            let mut all = vec![
                "serve".to_owned(),
                format!("--config={}", rules.display()),
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--metrics-bind-address=127.0.0.1:{}", free_port()),
            ];
            all.extend(args);
            all.extend(variant.args.iter().cloned());
            spawn_logged(&bridge_bin, &all, &variant.envs, &log)
        };
        let mut server = Server {
            name: variant.name,
            process: Process::Child(child),
            port,
            kube_user: variant.user.to_owned(),
            ca_pem: std::fs::read(&tls.0).expect("serving CA"),
            log,
            startup: t.elapsed(),
        };
        wait_serving(&client, &mut server, &settings).await;
        servers.push(server);
    }
    let mut failures = agreement(&client, &servers, &settings).await;

    let hpa_identity = cp.client_certificate(HPA_CONTROLLER_USER, &HPA_CONTROLLER_GROUPS);
    let aggregated_client = load_client(
        &cp.ca_pem_path(),
        settings.http2,
        Some((&hpa_identity.0, &hpa_identity.1)),
    );
    let mut rig = Rig {
        prometheus,
        apiserver_pid,
        audit: AuditLog::new(audit_path),
        client,
        aggregated_client,
        apiserver_url: cp.server_url().to_owned(),
        settings: settings.clone(),
    };
    // Start-up: memory and what each did on its own until now.
    let setup_audit = rig.audit.take();
    let idle: Vec<ProcSample> = servers.iter().map(|s| proc_sample(s.pid())).collect();
    let headers: Vec<&str> = variants.iter().map(|v| v.header).collect();
    let startup_kube = |s: &Server| {
        setup_audit
            .get(&s.kube_user)
            .map_or(0, |m| m.values().sum::<u64>()) as f64
    };
    let general = vec![
        (
            "time to first answer s",
            servers.iter().map(|s| s.startup.as_secs_f64()).collect(),
        ),
        (
            "CPU s used until then",
            idle.iter().map(|s| s.cpu.as_secs_f64()).collect(),
        ),
        (
            "VmRSS after start-up MiB",
            idle.iter().map(|s| s.rss_kib as f64 / 1024.0).collect(),
        ),
        (
            "kube-apiserver requests until then",
            servers.iter().map(startup_kube).collect(),
        ),
    ];
    let mut report = table(
        "start-up (ratio: kube-metrics-bridge / prometheus-adapter)",
        &headers,
        &general,
    );
    print!("{report}");

    let sizes = answer_sizes(&rig.client, &servers, &settings.scenarios, settings.pods).await;
    let mut headers = headers;
    if settings.floor {
        let bridge = servers
            .iter()
            .find(|s| s.name == "kube-metrics-bridge")
            .expect("the bridge runs");
        let t = Instant::now();
        let answers = floor_answers(&rig.client, bridge, &settings).await;
        let tls = floor::FloorTls::new(
            &floor_serving,
            &cp.ca_pem_path(),
            Some(&cp.front_proxy_ca_path()),
        );
        let floor = floor::start(&answers, &tls).await;
        eprintln!(
            "compare: the floor serves the bridge's {} answers ({:.1?})",
            answers.len(),
            t.elapsed()
        );
        servers.push(Server {
            name: "floor",
            port: floor.port,
            kube_user: String::new(),
            ca_pem: std::fs::read(&floor_serving.0).expect("floor CA"),
            log: floor.log_path().to_owned(),
            startup: Duration::ZERO,
            process: Process::Floor(floor),
        });
        headers.push("floor (same bytes)");
    }
    let t = table(
        "bytes of one answer, asked for JSON and for protobuf",
        &headers,
        &sizes
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect::<Vec<_>>(),
    );
    print!("{t}");
    report.push_str(&t);

    let mut results = Vec::new();
    for &route in &settings.routes {
        let cells: Vec<(Scenario, usize)> = settings
            .scenarios
            .iter()
            .flat_map(|&s| settings.concurrency.iter().map(move |&c| (s, c)))
            .collect();
        let mut measured: Vec<Vec<Option<Phase>>> = vec![vec![None; servers.len()]; cells.len()];
        // Direct: every server in turn for each phase, so a drift of the machine touches all
        // alike. Aggregated: server by server, as the APIServices name one at a time.
        // The floor answers directly only (the aggregator's own cost is the same for all).
        let on_route: Vec<usize> = (0..servers.len())
            .filter(|&i| route == Route::Direct || !servers[i].is_floor())
            .collect();
        let route_headers: Vec<&str> = on_route.iter().map(|&i| headers[i]).collect();
        let order: Vec<(usize, usize)> = match route {
            Route::Direct => (0..cells.len())
                .flat_map(|k| on_route.iter().map(move |&s| (k, s)))
                .collect(),
            Route::Aggregated => on_route
                .iter()
                .flat_map(|&s| (0..cells.len()).map(move |k| (k, s)))
                .collect(),
        };
        let mut routed_to = None;
        for (k, si) in order {
            let (scenario, c) = cells[k];
            if route == Route::Aggregated && routed_to != Some(si) {
                route_to(&cp, &mut rig, &servers[si]).await;
                routed_to = Some(si);
            }
            let server = &mut servers[si];
            let phase = rig.phase(server, route, scenario, c).await;
            if phase.errors > 0 {
                failures.push(format!(
                    "{} {} {} concurrency {c}: {} errors of {} requests, e.g. {:?}",
                    server.name,
                    route.key(),
                    scenario.key(),
                    phase.errors,
                    phase.requests,
                    phase.error_samples
                ));
            }
            measured[k][si] = Some(phase);
        }
        for (k, &(scenario, c)) in cells.iter().enumerate() {
            let phases: Vec<Phase> = measured[k].iter().flatten().cloned().collect();
            let title = format!(
                "{}{}, concurrency {c}, {} s",
                match route {
                    Route::Direct => String::new(),
                    Route::Aggregated => format!("{}: ", route.describe()),
                },
                scenario.describe(&settings),
                fmt_num(settings.duration.as_secs_f64())
            );
            let t = table(&title, &route_headers, &phase_rows(&phases));
            print!("{t}");
            report.push_str(&t);
            results.push(json!({
                "route": route.key(),
                "scenario": scenario.key(),
                "description": scenario.describe(&settings),
                "concurrency": c,
                "servers": on_route
                    .iter()
                    .map(|&i| servers[i].name.to_owned())
                    .zip(&phases)
                    .map(|(name, p)| (name, p.to_json()))
                    .collect::<serde_json::Map<_, _>>(),
            }));
        }
    }

    // Summary: requests/s per phase, with the PromQL queries each request cost.
    let mut summary = String::from(
        "\n== summary: requests/s (PromQL queries per request), ratio bridge / adapter\n",
    );
    let line = header_line(46, "phase", &headers);
    summary.push_str(line.trim_end());
    summary.push('\n');
    for r in &results {
        let mut line = format!(
            "{:<46}",
            format!(
                "{}{} c={}",
                if r["route"] == "aggregated" {
                    "aggregated "
                } else {
                    ""
                },
                r["scenario"].as_str().unwrap_or(""),
                r["concurrency"]
            )
        );
        let cells: Vec<(f64, f64)> = servers
            .iter()
            .map(|s| {
                let p = &r["servers"][s.name];
                let num = |k: &str| p[k].as_f64().unwrap_or(f64::NAN);
                (
                    num("requests_per_second"),
                    num("promql_queries") / num("requests").max(1.0),
                )
            })
            .collect();
        for pair in cells.chunks(2) {
            for (rps, q) in pair {
                let _ = write!(
                    line,
                    " {:>20}",
                    format!("{} ({})", fmt_num(*rps), fmt_num(*q))
                );
            }
            match pair {
                [(a, _), (b, _)] => {
                    let _ = write!(line, " {:>7}", fmt_ratio(*b, *a));
                }
                [(floor, _)] if cells.len() > 1 => {
                    let _ = write!(line, " {:>12}", fmt_ratio(cells[1].0, *floor));
                }
                _ => {}
            }
            line.push_str("  ");
        }
        summary.push_str(line.trim_end());
        summary.push('\n');
    }
    print!("{summary}");

    let timestamp = humantime::format_rfc3339_seconds(started).to_string();
    let out_dir = common::target_dir().join("bench");
    std::fs::create_dir_all(&out_dir).expect("creating the bench output dir");
    let out = std::env::var_os("KMB_BENCH_OUT").map_or_else(
        || out_dir.join(format!("compare-{}.json", timestamp.replace(':', "-"))),
        PathBuf::from,
    );
    let loadavg_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let document = json!({
        "started": timestamp,
        "wall_seconds": t0.elapsed().as_secs_f64(),
        "machine": machine,
        "loadavg_at_end": loadavg_end.trim(),
        "settings": {
            "pods": settings.pods,
            "other_namespace_pods": settings.other_pods,
            "namespaces": settings.namespaces,
            "cluster_pods": settings.pods + settings.other_pods,
            "routes": settings.routes.iter().map(|r| r.key()).collect::<Vec<_>>(),
            "phase_seconds": settings.duration.as_secs_f64(),
            "warmup_seconds": settings.warmup.as_secs_f64(),
            "concurrency": settings.concurrency,
            "http2": settings.http2,
            "accept": HPA_ACCEPT,
            "accept_kubectl_top": Scenario::TopPodsAll.accept(),
            "scenarios": settings.scenarios.iter().map(|s| s.key()).collect::<Vec<_>>(),
            "rule": ADAPTER_CONFIG,
        },
        "versions": report::versions(&adapter_bin),
        "servers": variants
            .iter()
            .zip(&servers)
            .zip(&idle)
            .map(|((v, s), i)| {
                let info = json!({
                    "column": v.header,
                    "extra_args": v.args,
                    "env": v.envs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
                    "seconds_to_first_answer": s.startup.as_secs_f64(),
                    "startup_cpu_seconds": i.cpu.as_secs_f64(),
                    "startup_vm_rss_mib": i.rss_kib as f64 / 1024.0,
                    "startup_kube_apiserver_requests": setup_audit.get(&s.kube_user).cloned().unwrap_or_default(),
                });
                (v.name.to_owned(), info)
            })
            .collect::<serde_json::Map<_, _>>(),
        "phases": results,
        "answer_bytes": sizes
            .iter()
            .map(|(k, v)| {
                let by_server = servers
                    .iter()
                    .zip(v)
                    .map(|(s, b)| (s.name.to_owned(), json!(b)))
                    .collect::<serde_json::Map<_, _>>();
                (k.clone(), Value::Object(by_server))
            })
            .collect::<serde_json::Map<_, _>>(),
        "failures": failures,
        "report": report + &summary,
    });
    report::write_figures(&out, &document, t0, &loadavg_end);
    drop(servers);
    drop(rig);
    drop(cp);
    drop(exporters);
    failures
}
