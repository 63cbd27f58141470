//! `cargo bench --bench hpas` (or `hack/bench.sh hpas`): kube-metrics-bridge against
//! prometheus-adapter v0.12.0 serving real HPAs, measured in the same run on the same parts.
//!
//! What runs (all real, all on loopback; the integration harness in `integration/common/`):
//! - etcd, kube-apiserver and kube-controller-manager (`integration/controlplane/`), the
//!   controller manager with the HPA controller's defaults (15 s sync period, 5 workers, 5 m
//!   downscale stabilization), except `--kube-api-qps=100 --kube-api-burst=200` (its default
//!   20 per second per client would cap the scale reads below 500 HPAs per 15 s);
//!   kube-apiserver writes an audit log of every request the two servers' users make;
//! - the `demo-exporter`, scraped every second by Debian's Prometheus;
//! - for each HPA count in `KMB_BENCH_HPAS` (default `100,500`, ascending), Deployments and
//!   `autoscaling/v2` HPAs in 4 namespaces, a third each on a `Pods` metric (`pod_work`, a
//!   gauge per pod; the ReplicaSet controller creates the pods, which the bench marks
//!   Running and Ready as no kubelet runs), an `Object` metric (`service_requests` of a
//!   Service) and an `External` metric (`queue_messages_ready{queue=...}`). Every value is
//!   chosen so each HPA wants exactly the replicas it has (1 to 3), so nothing scales and
//!   every HPA's `status.desiredReplicas` is known;
//! - the two servers, one at a time, each on the host as the backend of the APIServices
//!   `v1beta1`/`v1beta2.custom.metrics.k8s.io` and `v1beta1.external.metrics.k8s.io`
//!   (deploy/'s objects; an ExternalName Service to 127.0.0.1 and the serving CA as
//!   caBundle), each as a ServiceAccount user with deploy/'s RBAC (resource reader,
//!   `system:auth-delegator`, the `extension-apiserver-authentication` reader): the bridge as
//!   `custom-metrics:kube-metrics-bridge`, prometheus-adapter as
//!   `custom-metrics:prometheus-adapter` bound to the same roles. So each authenticates the
//!   aggregator's front-proxy certificate and authorizes the HPA controller with
//!   SubjectAccessReviews as in production. They serve the same rules: the
//!   prometheus-adapter YAML below, and for the bridge the TOML `kube-metrics-bridge convert`
//!   makes of it. Both with their defaults, except prometheus-adapter's
//!   `--metrics-relist-interval=1m` (the bridge's discovery interval; theirs is 10m).
//!
//! For each server: start it, point the Service and the APIServices at it, then change every
//! HPA's spec (`maxReplicas` 10 <-> 11: the controller reconciles a new generation at once)
//! and wait until every HPA has `status.observedGeneration` equal to its generation,
//! `ScalingActive=True` and the designed `desiredReplicas`: a condition computed from the new
//! server's answers (the previous server is stopped first). Then, over
//! `KMB_BENCH_HPA_SECONDS` (default 180): the server's CPU time and memory (`/proc`), the
//! PromQL queries Prometheus answered, the requests the server made to kube-apiserver (audit
//! log), the metric requests it served (its own metrics), the HPA syncs (the controller
//! manager's own `horizontal_pod_autoscaler_controller_reconciliations_total`, with their
//! mean duration) and the CPU of kube-controller-manager, kube-apiserver and Prometheus. Every
//! 5 s one LIST of all HPAs records any HPA without `ScalingActive=True` or with another
//! `desiredReplicas` than designed.
//!
//! Nothing asserts on speed. The run fails (exit 1) if an HPA is not active at the start of a
//! window, any HPA wants other replicas than designed, or a server exits.
//!
//! Under `cargo test --all-targets` this binary runs without `--bench` and returns at once.

#[path = "shared/audit.rs"]
mod audit;
#[path = "../integration/common/mod.rs"]
mod common;
#[path = "shared/report.rs"]
mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use audit::{Audit, AuditLog};
use common::adapter::{
    adapter_args, adapter_bin, log_tail, serving_args, serving_pair_for, spawn_logged,
    write_both_configs,
};
use common::bridge::tls_client_with;
use common::controlplane::{ControlPlane, Options};
use common::hpa::{self, SERVICE_DNS};
use common::{free_port, send_ok, Exporter, Prometheus};
use futures::StreamExt as _;
use report::{fmt_num, fmt_ratio, machine, proc_sample, ProcSample};
use serde_json::{json, Value};
use tokio::process::Child;

/// HPAs go round-robin into this many namespaces, `hpas-0`..
const NAMESPACES: usize = 4;
/// The HPA controller's default sync period (kept: the controller manager runs with it).
const SYNC_PERIOD: Duration = Duration::from_secs(15);
/// How often the window checks every HPA (one LIST).
const POLL: Duration = Duration::from_secs(5);
/// Requests in flight while creating and patching objects.
const PARALLEL: usize = 8;
/// The ServiceAccount users the servers run as (the audit log's keys).
const BRIDGE_USER: &str = "system:serviceaccount:custom-metrics:kube-metrics-bridge";
const ADAPTER_USER: &str = "system:serviceaccount:custom-metrics:prometheus-adapter";
const SA_GROUPS: [&str; 2] = [
    "system:serviceaccounts",
    "system:serviceaccounts:custom-metrics",
];
const HPA_LIST: &str = "/apis/autoscaling/v2/horizontalpodautoscalers";

/// The rules both servers run, in prometheus-adapter's format; the bridge gets
/// `kube-metrics-bridge convert` of it.
const ADAPTER_CONFIG: &str = r#"rules:
- seriesQuery: 'pod_work{namespace!="",pod!=""}'
  resources:
    overrides:
      namespace: {resource: "namespace"}
      pod: {resource: "pod"}
  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
- seriesQuery: 'service_requests{namespace!="",service!=""}'
  resources:
    overrides:
      namespace: {resource: "namespace"}
      service: {resource: "service"}
  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
externalRules:
- seriesQuery: 'queue_messages_ready{namespace!="",queue!=""}'
  resources:
    overrides:
      namespace: {resource: "namespace"}
  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (queue)'
"#;

/// prometheus-adapter's RBAC as deploy/ ships the bridge's: the same roles, bound to its own
/// ServiceAccount (whose user its client certificate names).
const ADAPTER_RBAC: &str = r#"apiVersion: v1
kind: ServiceAccount
metadata: {name: prometheus-adapter, namespace: custom-metrics}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "prometheus-adapter:resource-reader"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "kube-metrics-bridge:resource-reader"}
subjects: [{kind: ServiceAccount, name: prometheus-adapter, namespace: custom-metrics}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "prometheus-adapter:system:auth-delegator"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:auth-delegator"}
subjects: [{kind: ServiceAccount, name: prometheus-adapter, namespace: custom-metrics}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: "prometheus-adapter:auth-reader", namespace: kube-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: extension-apiserver-authentication-reader}
subjects: [{kind: ServiceAccount, name: prometheus-adapter, namespace: custom-metrics}]
"#;

fn main() {
    report::bench_main(
        "hpas: a benchmark; run it with `cargo bench --bench hpas` or `hack/bench.sh hpas`",
        "an HPA was not active, wanted other replicas than designed, or a server exited",
        || run(Settings::from_env()),
    );
}

/// Knobs, from the environment (see `hack/bench/README.md`).
#[derive(Debug, Clone)]
struct Settings {
    /// HPA counts, ascending; each step adds HPAs to the previous ones.
    counts: Vec<usize>,
    window: Duration,
}

impl Settings {
    fn from_env() -> Settings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut counts: Vec<usize> = var("KMB_BENCH_HPAS")
            .unwrap_or_else(|| "100,500".into())
            .split(',')
            .map(|c| {
                c.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("KMB_BENCH_HPAS: bad number {c:?}"))
            })
            .collect();
        counts.sort_unstable();
        counts.dedup();
        assert!(
            counts.first().is_some_and(|&c| c >= 3),
            "KMB_BENCH_HPAS: every count must be at least 3 (one HPA of each metric type)"
        );
        let secs: f64 = var("KMB_BENCH_HPA_SECONDS").map_or(180.0, |v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("KMB_BENCH_HPA_SECONDS={v} is not a number"))
        });
        assert!(secs >= 5.0, "KMB_BENCH_HPA_SECONDS must be at least 5");
        Settings {
            counts,
            window: Duration::from_secs_f64(secs),
        }
    }
}

/// The HPA's metric type.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Pods,
    Object,
    External,
}

/// One Deployment and its HPA (and, for `Object`, its Service), with the values that make
/// the HPA want exactly the replicas it has.
#[derive(Debug, Clone)]
struct Target {
    kind: Kind,
    namespace: String,
    name: String,
    /// The Deployment's replicas, and so every HPA's designed `desiredReplicas`.
    replicas: u32,
    /// `Pods`: each pod's `pod_work` and the HPA's `averageValue` target.
    per_pod: u32,
}

impl Target {
    fn new(i: usize) -> Target {
        let kind = [Kind::Pods, Kind::Object, Kind::External][i % 3];
        let prefix = match kind {
            Kind::Pods => "pods",
            Kind::Object => "object",
            Kind::External => "external",
        };
        Target {
            kind,
            namespace: namespace(i % NAMESPACES),
            name: format!("{prefix}-{i}"),
            replicas: 1 + (i / 3 % 3) as u32,
            per_pod: 1 + (i % 5) as u32,
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The queue an `External` HPA selects.
    fn queue(&self) -> String {
        format!("queue-{}", self.name)
    }

    /// The HPA's metric (YAML list items, as [`hpa::autoscaler`] takes them). `Object` and
    /// `External` target an average of 1 per replica, and their series read `replicas`.
    fn metric(&self) -> String {
        match self.kind {
            Kind::Pods => format!(
                "  - type: Pods\n    pods:\n      metric: {{name: pod_work}}\n      \
                 target: {{type: AverageValue, averageValue: \"{}\"}}\n",
                self.per_pod
            ),
            Kind::Object => hpa::object_metric("Service", &self.name, "service_requests"),
            Kind::External => hpa::external_metric("queue_messages_ready", &self.queue()),
        }
    }
}

fn namespace(i: usize) -> String {
    format!("hpas-{i}")
}

/// YAML (one document, as the `hpa` helpers write them) as the JSON a POST takes.
fn yaml_to_json(yaml: &str) -> Value {
    yaml_serde::from_str(yaml).unwrap_or_else(|e| panic!("YAML {yaml}: {e}"))
}

/// POSTs each `(collection path, object)` as the admin, a few at a time.
async fn create_all(cp: &ControlPlane, objects: Vec<(String, Value)>) {
    let client = cp.admin_client();
    futures::stream::iter(objects)
        .map(|(path, body)| async move {
            let what = format!("POST {path} {}", body["metadata"]["name"]);
            send_ok(
                client
                    .post(format!("{}{path}", cp.server_url()))
                    .json(&body),
                &what,
            )
            .await;
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<()>>()
        .await;
}

/// The namespaces, once each has the `default` ServiceAccount the ReplicaSet controller's
/// pods need (it backs off for long when admission refuses a pod).
async fn create_namespaces(cp: &ControlPlane) {
    let objects = (0..NAMESPACES)
        .map(|i| {
            (
                "/api/v1/namespaces".to_owned(),
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace(i)}}),
            )
        })
        .collect();
    create_all(cp, objects).await;
    cp.wait_for(
        "the namespaces' default ServiceAccounts",
        Duration::from_secs(60),
        || async {
            for i in 0..NAMESPACES {
                let (status, _) = cp
                    .get(&format!(
                        "/api/v1/namespaces/{}/serviceaccounts/default",
                        namespace(i)
                    ))
                    .await;
                if status != 200 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

/// Creates `targets`' Deployments (and Services), marks their pods Running and Ready as a
/// kubelet would, gives every series its value, waits until Prometheus has them all, and
/// only then creates the HPAs (so their first computation sees every pod and series).
async fn create_targets(
    cp: &ControlPlane,
    exporter: &Exporter,
    prometheus: &Prometheus,
    targets: &[Target],
    all: &[Target],
) {
    let t0 = Instant::now();
    let mut objects = Vec::new();
    for t in targets {
        objects.push((
            format!("/apis/apps/v1/namespaces/{}/deployments", t.namespace),
            yaml_to_json(&hpa::deployment(&t.namespace, &t.name, t.replicas)),
        ));
        if t.kind == Kind::Object {
            objects.push((
                format!("/api/v1/namespaces/{}/services", t.namespace),
                json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": t.name, "namespace": t.namespace},
                    // Headless: no cluster IP to allocate from the small service range.
                    "spec": {"clusterIP": "None", "selector": {"app": t.name}, "ports": [{"port": 80}]},
                }),
            ));
        }
    }
    create_all(cp, objects).await;

    let pods = tend_pods(cp, all).await;
    for t in targets {
        let ns = t.namespace.as_str();
        match t.kind {
            Kind::Pods => {
                for pod in &pods[&t.key()] {
                    exporter
                        .set_gauge(
                            "pod_work",
                            &[("namespace", ns), ("pod", pod)],
                            t.per_pod.into(),
                        )
                        .await;
                }
            }
            Kind::Object => {
                exporter
                    .set_gauge(
                        "service_requests",
                        &[("namespace", ns), ("service", &t.name)],
                        t.replicas.into(),
                    )
                    .await;
            }
            Kind::External => {
                exporter
                    .set_gauge(
                        "queue_messages_ready",
                        &[("namespace", ns), ("queue", &t.queue())],
                        t.replicas.into(),
                    )
                    .await;
            }
        }
    }
    let want = |kind: Kind| -> usize {
        all.iter()
            .filter(|t| t.kind == kind)
            .map(|t| {
                if kind == Kind::Pods {
                    t.replicas as usize
                } else {
                    1
                }
            })
            .sum()
    };
    let (pod_series, objects, queues) =
        (want(Kind::Pods), want(Kind::Object), want(Kind::External));
    prometheus
        .wait_or_fail(
            "every series in Prometheus",
            Duration::from_secs(60),
            || async {
                let count = |q: &'static str| async move {
                    prometheus
                        .try_query(q)
                        .await
                        .ok()
                        .and_then(|r| r.first().map(|s| s.value as usize))
                        .unwrap_or(0)
                };
                (count("count(pod_work)").await == pod_series
                    && count("count(service_requests)").await == objects
                    && count("count(queue_messages_ready)").await == queues)
                    .then_some(())
            },
        )
        .await;

    let hpas = targets
        .iter()
        .map(|t| {
            (
                format!(
                    "/apis/autoscaling/v2/namespaces/{}/horizontalpodautoscalers",
                    t.namespace
                ),
                yaml_to_json(&hpa::autoscaler(&t.namespace, &t.name, 1, 10, &t.metric())),
            )
        })
        .collect();
    create_all(cp, hpas).await;
    eprintln!(
        "hpas: {} Deployments, their pods and HPAs created in {:.1?} ({} HPAs in all)",
        targets.len(),
        t0.elapsed(),
        all.len()
    );
}

/// Waits until every target's Deployment has exactly its replicas as pods, marking each pod
/// Running and Ready (with a start time) as a kubelet would; returns the pod names by target
/// key. One LIST per namespace per round.
async fn tend_pods(cp: &ControlPlane, all: &[Target]) -> BTreeMap<String, Vec<String>> {
    let client = cp.admin_client();
    let timeout = Duration::from_secs(90) + Duration::from_millis(200) * all.len() as u32;
    cp.wait_for("every Deployment's pods, Running", timeout, || async {
        let mut by_app: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut pending = Vec::new();
        for i in 0..NAMESPACES {
            let ns = namespace(i);
            let list = cp.get_json(&format!("/api/v1/namespaces/{ns}/pods")).await;
            for pod in list["items"].as_array().into_iter().flatten() {
                if pod["metadata"]["deletionTimestamp"].is_string() {
                    continue;
                }
                let name = pod["metadata"]["name"].as_str().unwrap_or("?").to_owned();
                let app = pod["metadata"]["labels"]["app"].as_str().unwrap_or("?");
                if pod["status"]["phase"] != "Running" {
                    pending.push((ns.clone(), name.clone()));
                }
                by_app.entry(format!("{ns}/{app}")).or_default().push(name);
            }
        }
        let now = "2000-01-01T00:00:00Z";
        let status = json!({"status": {
            "phase": "Running",
            "startTime": now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
            ],
        }})
        .to_string();
        let done = pending.is_empty();
        futures::stream::iter(pending)
            .map(|(ns, name)| {
                let status = status.clone();
                async move {
                    let url = format!(
                        "{}/api/v1/namespaces/{ns}/pods/{name}/status",
                        cp.server_url()
                    );
                    // A pod the ReplicaSet controller just deleted may be gone: next round.
                    let _ = client
                        .patch(url)
                        .header("Content-Type", "application/merge-patch+json")
                        .body(status)
                        .send()
                        .await;
                }
            })
            .buffer_unordered(PARALLEL)
            .collect::<Vec<()>>()
            .await;
        let complete = all.iter().all(|t| {
            by_app
                .get(&t.key())
                .is_some_and(|p| p.len() == t.replicas as usize)
        });
        if !(done && complete) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            return None;
        }
        for pods in by_app.values_mut() {
            pods.sort();
        }
        Some(by_app)
    })
    .await
}

/// What one LIST said about one HPA.
#[derive(Debug, Clone)]
struct HpaState {
    key: String,
    generation: i64,
    observed_generation: Option<i64>,
    max_replicas: i64,
    /// `ScalingActive`'s status and reason.
    active: (String, String),
    desired: Option<u64>,
}

impl HpaState {
    fn is_active(&self) -> bool {
        self.active.0 == "True"
    }

    fn describe(&self) -> String {
        format!(
            "{}: ScalingActive={} ({}), desiredReplicas {:?}, generation {} observed {:?}",
            self.key,
            self.active.0,
            self.active.1,
            self.desired,
            self.generation,
            self.observed_generation
        )
    }
}

/// Every HPA in the cluster, in one LIST.
async fn list_hpas(cp: &ControlPlane) -> Vec<HpaState> {
    let list = cp.get_json(HPA_LIST).await;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| HpaState {
            key: format!(
                "{}/{}",
                h["metadata"]["namespace"].as_str().unwrap_or("?"),
                h["metadata"]["name"].as_str().unwrap_or("?")
            ),
            generation: h["metadata"]["generation"].as_i64().unwrap_or(0),
            observed_generation: h["status"]["observedGeneration"].as_i64(),
            max_replicas: h["spec"]["maxReplicas"].as_i64().unwrap_or(0),
            active: hpa::condition(h, "ScalingActive"),
            desired: h["status"]["desiredReplicas"].as_u64(),
        })
        .collect()
}

/// Changes every HPA's spec (`maxReplicas` 10 <-> 11, far above any designed count): the
/// HPA controller reconciles each new generation at once and records it as
/// `status.observedGeneration`.
async fn bump_generations(cp: &ControlPlane) {
    let client = cp.admin_client();
    let hpas = list_hpas(cp).await;
    futures::stream::iter(hpas)
        .map(|h| async move {
            let (ns, name) = h.key.split_once('/').expect("namespace/name");
            let max = if h.max_replicas == 10 { 11 } else { 10 };
            send_ok(
                client
                    .patch(format!(
                        "{}/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/{name}",
                        cp.server_url()
                    ))
                    .header("Content-Type", "application/merge-patch+json")
                    .body(json!({"spec": {"maxReplicas": max}}).to_string()),
                &format!("PATCH HPA {}", h.key),
            )
            .await;
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<()>>()
        .await;
}

/// What is wrong with `hpas` against `design` (key -> replicas): HPAs missing, not active
/// (or not yet reconciled at their generation, when `fresh`), wanting other replicas.
fn problems(hpas: &[HpaState], design: &BTreeMap<String, u64>, fresh: bool) -> Vec<String> {
    let mut out = Vec::new();
    let seen: BTreeSet<&str> = hpas.iter().map(|h| h.key.as_str()).collect();
    for key in design.keys() {
        if !seen.contains(key.as_str()) {
            out.push(format!("{key}: missing"));
        }
    }
    for h in hpas {
        let want = design.get(&h.key).copied();
        let stale = fresh && h.observed_generation != Some(h.generation);
        if stale || !h.is_active() || h.desired != want {
            out.push(h.describe());
        }
    }
    out
}

/// The two servers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Which {
    Adapter,
    Bridge,
}

impl Which {
    const BOTH: [Which; 2] = [Which::Adapter, Which::Bridge];

    fn name(self) -> &'static str {
        match self {
            Which::Adapter => "prometheus-adapter",
            Which::Bridge => "kube-metrics-bridge",
        }
    }

    fn user(self) -> &'static str {
        match self {
            Which::Adapter => ADAPTER_USER,
            Which::Bridge => BRIDGE_USER,
        }
    }
}

/// A server under test, as a child process.
struct Server {
    which: Which,
    child: Child,
    port: u16,
    /// Where its own metrics are: the bridge's `--metrics-bind-address`, the adapter's
    /// secure port (authorized by SubjectAccessReview; read with the admin's certificate).
    metrics_url: String,
    log: PathBuf,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// `Some(why)` once it has exited.
    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "{} exited with {status}; its log ends:\n{}",
                self.which.name(),
                log_tail(&self.log, 30)
            )),
            _ => None,
        }
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// The metric requests (custom and external, not discovery) it has answered, by its
    /// own count.
    fn metric_requests(&self, text: &str) -> f64 {
        match self.which {
            Which::Bridge => [
                "route=\"custom_wildcard\"",
                "route=\"custom_object\"",
                "route=\"custom_namespace\"",
                "route=\"external\"",
            ]
            .iter()
            .map(|r| {
                report::prometheus_sum(
                    text,
                    "kube_metrics_bridge_request_duration_seconds_count",
                    r,
                )
            })
            .sum(),
            Which::Adapter => [
                "group=\"custom.metrics.k8s.io\"",
                "group=\"external.metrics.k8s.io\"",
            ]
            .iter()
            .map(|g| report::prometheus_sum(text, "apiserver_request_total", g))
            .sum(),
        }
    }
}

/// What the bench keeps around while it swaps servers.
struct Rig {
    cp: ControlPlane,
    prometheus: Prometheus,
    root: PathBuf,
    adapter_bin: PathBuf,
    bridge_bin: PathBuf,
    adapter_config: PathBuf,
    rules: PathBuf,
    tls: (PathBuf, PathBuf, PathBuf),
    bridge_kubeconfig: PathBuf,
    adapter_kubeconfig: PathBuf,
    /// Trusts the serving CA, presents the admin's certificate (the adapter's `/metrics`).
    server_client: reqwest::Client,
    plain: reqwest::Client,
    kcm_metrics_url: String,
    pids: BTreeMap<&'static str, u32>,
    audit: AuditLog,
}

impl Rig {
    async fn start(&self, which: Which) -> Server {
        let port = free_port();
        let log = self.root.join(format!("{}-{port}.log", which.name()));
        let mut args = serving_args(&self.tls, port);
        let (child, metrics_url) = match which {
            Which::Adapter => {
                args.extend(adapter_args(
                    &self.root,
                    &self.adapter_kubeconfig,
                    &self.prometheus.url(),
                    &self.adapter_config,
                ));
                // The bridge's default discovery interval (1m); theirs is 10m.
                args.push("--metrics-relist-interval=1m".to_owned());
                (
                    spawn_logged(&self.adapter_bin, &args, &[], &log),
                    format!("https://127.0.0.1:{port}/metrics"),
                )
            }
            Which::Bridge => {
                let metrics_port = free_port();
                let mut all = vec![
                    "serve".to_owned(),
                    format!("--config={}", self.rules.display()),
                    format!("--kubeconfig={}", self.bridge_kubeconfig.display()),
                    format!("--metrics-bind-address=127.0.0.1:{metrics_port}"),
                ];
                all.extend(args);
                (
                    spawn_logged(&self.bridge_bin, &all, &[], &log),
                    format!("http://127.0.0.1:{metrics_port}/metrics"),
                )
            }
        };
        let mut server = Server {
            which,
            child,
            port,
            metrics_url,
            log,
        };
        let ready = match which {
            Which::Adapter => format!("https://127.0.0.1:{port}/readyz"),
            Which::Bridge => server.metrics_url.replace("/metrics", "/readyz"),
        };
        let t = Instant::now();
        loop {
            if let Some(why) = server.exited() {
                panic!("{why}");
            }
            let client = match which {
                Which::Adapter => &self.server_client,
                Which::Bridge => &self.plain,
            };
            if let Ok(r) = client.get(&ready).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(90),
                "{} not ready after 90 s; its log ends:\n{}",
                which.name(),
                log_tail(&server.log, 30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("hpas: {} ready in {:.1?}", which.name(), t.elapsed());
        server
    }

    /// The server's own metrics text (empty when it does not answer).
    async fn server_metrics(&self, server: &Server) -> String {
        let client = match server.which {
            Which::Adapter => &self.server_client,
            Which::Bridge => &self.plain,
        };
        match client.get(&server.metrics_url).send().await {
            Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
            _ => String::new(),
        }
    }

    /// kube-controller-manager's own metrics text.
    async fn kcm_metrics(&self) -> String {
        let r = self
            .cp
            .admin_client()
            .get(&self.kcm_metrics_url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {}: {e}", self.kcm_metrics_url));
        assert!(
            r.status().is_success(),
            "GET {}: {}",
            self.kcm_metrics_url,
            r.status()
        );
        r.text().await.unwrap_or_default()
    }

    fn proc(&self, component: &str) -> ProcSample {
        self.pids
            .get(component)
            .map_or_else(ProcSample::default, |&p| proc_sample(p))
    }
}

/// Everything read at the start and the end of a window.
struct Snapshot {
    at: Instant,
    server: ProcSample,
    kcm: ProcSample,
    apiserver: ProcSample,
    prometheus: ProcSample,
    promql: f64,
    kcm_text: String,
    server_text: String,
}

/// The figures at one instant. The server's own metrics are read outside the audited and
/// timed part (before it at the start, after it at the end): reading prometheus-adapter's
/// costs it a SubjectAccessReview.
async fn snapshot(rig: &mut Rig, server: &Server, start: bool) -> (Snapshot, Audit) {
    let mut server_text = String::new();
    if start {
        server_text = rig.server_metrics(server).await;
        rig.audit.take();
    }
    let promql = report::prometheus_sum(
        &rig.prometheus.own_metrics().await,
        "prometheus_http_requests_total",
        "handler=\"/api/v1/query\"",
    );
    let mut snapshot = Snapshot {
        at: Instant::now(),
        server: proc_sample(server.pid()),
        kcm: rig.proc("kube-controller-manager"),
        apiserver: rig.proc("kube-apiserver"),
        prometheus: rig.proc("prometheus"),
        promql,
        kcm_text: rig.kcm_metrics().await,
        server_text,
    };
    let audit = rig.audit.take();
    if !start {
        snapshot.server_text = rig.server_metrics(server).await;
    }
    (snapshot, audit)
}

const RECONCILIATIONS: &str = "horizontal_pod_autoscaler_controller_reconciliations_total";
const RECONCILE_SECONDS: &str =
    "horizontal_pod_autoscaler_controller_reconciliation_duration_seconds";

/// One server's window at one HPA count.
#[derive(Debug, Default)]
struct Window {
    seconds: f64,
    syncs: f64,
    sync_errors: f64,
    sync_mean_ms: f64,
    served: f64,
    cpu_s: f64,
    rss_mib: f64,
    hwm_mib: f64,
    promql: f64,
    kube_requests: BTreeMap<String, u64>,
    kcm_cpu_s: f64,
    apiserver_cpu_s: f64,
    prometheus_cpu_s: f64,
    /// HPA key -> the first thing seen wrong with it (not `ScalingActive=True`).
    inactive: BTreeMap<String, String>,
    /// HPAs that wanted other replicas than designed (a failure).
    wrong_replicas: BTreeMap<String, String>,
    polls: usize,
    /// Seconds from the swap until every HPA was active on this server.
    activation_s: f64,
}

impl Window {
    fn kube_total(&self) -> f64 {
        self.kube_requests.values().sum::<u64>() as f64
    }

    fn per_sync(&self, v: f64) -> f64 {
        if self.syncs > 0.0 {
            v / self.syncs
        } else {
            f64::NAN
        }
    }

    fn to_json(&self, hpas: usize) -> Value {
        json!({
            "window_seconds": self.seconds,
            "seconds_until_every_hpa_active": self.activation_s,
            "hpa_syncs": self.syncs,
            "hpa_syncs_with_errors": self.sync_errors,
            "hpa_syncs_per_second": self.syncs / self.seconds,
            "mean_seconds_between_syncs_of_one_hpa": hpas as f64 * self.seconds / self.syncs,
            "hpa_sync_mean_ms": self.sync_mean_ms,
            "metric_requests_served": self.served,
            "cpu_seconds": self.cpu_s,
            "cpu_ms_per_hpa_sync": self.per_sync(self.cpu_s * 1000.0),
            "vm_rss_mib_after": self.rss_mib,
            "vm_hwm_mib": self.hwm_mib,
            "promql_queries": self.promql,
            "promql_queries_per_hpa_sync": self.per_sync(self.promql),
            "kube_apiserver_requests": self.kube_total(),
            "kube_apiserver_requests_per_hpa_sync": self.per_sync(self.kube_total()),
            "kube_apiserver_requests_by_kind": self.kube_requests,
            "kube_controller_manager_cpu_seconds": self.kcm_cpu_s,
            "kube_apiserver_cpu_seconds": self.apiserver_cpu_s,
            "prometheus_cpu_seconds": self.prometheus_cpu_s,
            "polls": self.polls,
            "hpas_that_lost_scaling_active": self.inactive.len(),
            "lost_scaling_active": self.inactive,
            "wrong_desired_replicas": self.wrong_replicas,
        })
    }
}

/// Runs one server at one HPA count: start, swap the backends to it, wait until every HPA is
/// active on it, measure the window, stop it.
async fn run_server(
    rig: &mut Rig,
    which: Which,
    design: &BTreeMap<String, u64>,
    window: Duration,
    failures: &mut Vec<String>,
) -> Window {
    let hpas = design.len();
    let mut server = rig.start(which).await;
    let ca = std::fs::read(&rig.tls.0).expect("serving CA");
    let t_swap = Instant::now();
    hpa::register(&rig.cp, &ca, server.port).await;
    rig.cp.wait_apiservices_available().await;
    bump_generations(&rig.cp).await;
    let deadline = SYNC_PERIOD * 8 + Duration::from_millis(300) * hpas as u32;
    let (active, last) = loop {
        if let Some(why) = server.exited() {
            panic!("{why}");
        }
        let last = problems(&list_hpas(&rig.cp).await, design, true);
        if last.is_empty() {
            break (true, last);
        }
        if t_swap.elapsed() > deadline {
            break (false, last);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let activation_s = t_swap.elapsed().as_secs_f64();
    if active {
        eprintln!(
            "hpas: all {hpas} HPAs active on {} {activation_s:.1} s after the swap",
            which.name()
        );
    } else {
        failures.push(format!(
            "{hpas} HPAs, {}: {} HPAs not active {activation_s:.0} s after the swap, e.g. {:?}",
            which.name(),
            last.len(),
            &last[..last.len().min(5)]
        ));
    }

    // The window.
    let (before, _) = snapshot(rig, &server, true).await;
    let mut w = Window {
        activation_s,
        ..Window::default()
    };
    let end = before.at + window;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        tokio::time::sleep((end - now).min(POLL)).await;
        if let Some(why) = server.exited() {
            failures.push(format!("{hpas} HPAs: {why}"));
            break;
        }
        let states = list_hpas(&rig.cp).await;
        w.polls += 1;
        for h in &states {
            if !h.is_active() {
                w.inactive
                    .entry(h.key.clone())
                    .or_insert_with(|| h.describe());
            }
            if h.desired != design.get(&h.key).copied() {
                w.wrong_replicas
                    .entry(h.key.clone())
                    .or_insert_with(|| h.describe());
            }
        }
    }
    let (after, audit) = snapshot(rig, &server, false).await;
    w.seconds = (after.at - before.at).as_secs_f64();
    let kcm = |name: &str, label: &str| {
        report::prometheus_sum(&after.kcm_text, name, label)
            - report::prometheus_sum(&before.kcm_text, name, label)
    };
    w.syncs = kcm(RECONCILIATIONS, "");
    w.sync_errors =
        kcm(RECONCILIATIONS, "error=\"internal\"") + kcm(RECONCILIATIONS, "error=\"spec\"");
    w.sync_mean_ms = 1000.0 * kcm(&format!("{RECONCILE_SECONDS}_sum"), "")
        / kcm(&format!("{RECONCILE_SECONDS}_count"), "");
    w.served =
        server.metric_requests(&after.server_text) - server.metric_requests(&before.server_text);
    w.cpu_s = (after.server.cpu.saturating_sub(before.server.cpu)).as_secs_f64();
    w.rss_mib = after.server.rss_kib as f64 / 1024.0;
    w.hwm_mib = after.server.hwm_kib as f64 / 1024.0;
    w.promql = after.promql - before.promql;
    w.kube_requests = audit.get(which.user()).cloned().unwrap_or_default();
    let cpu = |a: ProcSample, b: ProcSample| a.cpu.saturating_sub(b.cpu).as_secs_f64();
    w.kcm_cpu_s = cpu(after.kcm, before.kcm);
    w.apiserver_cpu_s = cpu(after.apiserver, before.apiserver);
    w.prometheus_cpu_s = cpu(after.prometheus, before.prometheus);
    if let Some(why) = server.exited() {
        if !failures.iter().any(|f| f.contains(&why)) {
            failures.push(format!("{hpas} HPAs: {why}"));
        }
    }
    if !w.wrong_replicas.is_empty() {
        failures.push(format!(
            "{hpas} HPAs, {}: {} HPAs wanted other replicas than designed, e.g. {:?}",
            which.name(),
            w.wrong_replicas.len(),
            w.wrong_replicas.values().take(5).collect::<Vec<_>>()
        ));
    }
    eprintln!(
        "hpas: {} at {hpas} HPAs: {:.0} syncs in {:.0} s, CPU {:.2} s, {} HPAs lost ScalingActive",
        which.name(),
        w.syncs,
        w.seconds,
        w.cpu_s,
        w.inactive.len()
    );
    server.stop().await;
    w
}

/// One table: a figure per row, the two servers in columns, the ratio bridge / adapter.
fn table(title: &str, rows: &[(&str, f64, f64)]) -> String {
    let mut out = format!("\n== {title}\n");
    let _ = writeln!(
        out,
        "{:<44} {:>20} {:>20} {:>7}",
        "metric", "prometheus-adapter", "kube-metrics-bridge", "ratio"
    );
    for (name, adapter, bridge) in rows {
        let _ = writeln!(
            out,
            "{name:<44} {:>20} {:>20} {:>7}",
            fmt_num(*adapter),
            fmt_num(*bridge),
            fmt_ratio(*bridge, *adapter)
        );
    }
    out
}

fn rows(hpas: usize, a: &Window, b: &Window) -> Vec<(&'static str, f64, f64)> {
    let both = |f: &dyn Fn(&Window) -> f64| (f(a), f(b));
    let mut v = Vec::new();
    let mut row = |name: &'static str, f: &dyn Fn(&Window) -> f64| {
        let (x, y) = both(f);
        v.push((name, x, y));
    };
    row("s until every HPA active after the swap", &|w| {
        w.activation_s
    });
    row("HPA syncs in the window", &|w| w.syncs);
    row("HPA syncs per second", &|w| w.syncs / w.seconds);
    row("s between syncs of one HPA (mean)", &|w| {
        hpas as f64 * w.seconds / w.syncs
    });
    row("HPA sync duration ms (mean)", &|w| w.sync_mean_ms);
    row("HPA syncs with errors", &|w| w.sync_errors);
    row("metric requests served per HPA sync", &|w| {
        w.per_sync(w.served)
    });
    row("server CPU s", &|w| w.cpu_s);
    row("server CPU ms per HPA sync", &|w| {
        w.per_sync(w.cpu_s * 1000.0)
    });
    row("server VmRSS after MiB", &|w| w.rss_mib);
    row("server VmHWM (peak) MiB", &|w| w.hwm_mib);
    row("PromQL queries", &|w| w.promql);
    row("PromQL queries per HPA sync", &|w| w.per_sync(w.promql));
    row("kube-apiserver requests", &|w| w.kube_total());
    row("kube-apiserver requests per HPA sync", &|w| {
        w.per_sync(w.kube_total())
    });
    row("HPAs that lost ScalingActive", &|w| w.inactive.len() as f64);
    row("kube-controller-manager CPU s", &|w| w.kcm_cpu_s);
    row("kube-apiserver CPU s", &|w| w.apiserver_cpu_s);
    row("Prometheus CPU s", &|w| w.prometheus_cpu_s);
    v
}

/// Below a table: what each server asked kube-apiserver and which HPAs lost ScalingActive.
fn details(a: &Window, b: &Window) -> String {
    let mut out = String::new();
    for (which, w) in [(Which::Adapter, a), (Which::Bridge, b)] {
        let kinds: Vec<String> = w
            .kube_requests
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "  {} kube-apiserver requests: {}",
            which.name(),
            if kinds.is_empty() {
                "none".to_owned()
            } else {
                kinds.join(", ")
            }
        );
        if !w.inactive.is_empty() {
            let _ = writeln!(out, "  {} HPAs lost ScalingActive, e.g.:", which.name());
            for d in w.inactive.values().take(3) {
                let _ = writeln!(out, "    {d}");
            }
        }
    }
    out
}

/// kube-controller-manager's `--secure-port` (the harness picks it), from its command line.
fn secure_port(pid: u32) -> u16 {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("kcm cmdline");
    cmdline
        .split(|&b| b == 0)
        .filter_map(|a| std::str::from_utf8(a).ok()?.strip_prefix("--secure-port="))
        .next_back()
        .and_then(|p| p.parse().ok())
        .expect("kube-controller-manager runs with --secure-port")
}

async fn run(settings: Settings) -> Vec<String> {
    let started = std::time::SystemTime::now();
    let t0 = Instant::now();
    let machine = machine();
    eprintln!("hpas: {settings:?}");
    let adapter_bin = adapter_bin().await;
    let bridge_bin = PathBuf::from(env!("CARGO_BIN_EXE_kube-metrics-bridge"));
    let dir = tempfile::Builder::new()
        .prefix("kmb-bench-hpas-")
        .tempdir()
        .expect("tempdir");
    let root = dir.path().to_path_buf();

    let exporter = Exporter::start_empty().await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;

    // One control plane for the whole run, auditing both servers' users.
    let (audit_flags, audit_path) = audit::apiserver_flags(&root, &[BRIDGE_USER, ADAPTER_USER]);
    let cp = ControlPlane::start_with(Options {
        apiserver_args: audit_flags,
        // The HPA controller's defaults (the harness runs it faster for the tests), and room
        // for its scale and metric reads at 500 HPAs per sync period.
        controller_manager_args: vec![
            format!(
                "--horizontal-pod-autoscaler-sync-period={}s",
                SYNC_PERIOD.as_secs()
            ),
            "--horizontal-pod-autoscaler-downscale-stabilization=5m0s".to_owned(),
            "--horizontal-pod-autoscaler-initial-readiness-delay=30s".to_owned(),
            "--horizontal-pod-autoscaler-cpu-initialization-period=5m0s".to_owned(),
            "--kube-api-qps=100".to_owned(),
            "--kube-api-burst=200".to_owned(),
        ],
        ..Options::default()
    })
    .await;
    let mut pids: BTreeMap<&'static str, u32> = cp.pids().into_iter().collect();
    if let Some(pid) = prometheus.pid() {
        pids.insert("prometheus", pid);
    }
    let kcm_pid = pids["kube-controller-manager"];
    let kcm_metrics_url = format!("https://127.0.0.1:{}/metrics", secure_port(kcm_pid));

    // What deploy/ ships (RBAC, APIServices), the adapter's identity with the same roles.
    cp.apply(&hpa::shipped_objects()).await;
    cp.apply(ADAPTER_RBAC).await;
    create_namespaces(&cp).await;

    let (adapter_config, rules) =
        write_both_configs(&root, ADAPTER_CONFIG, &bridge_bin, &prometheus.url());
    let tls = serving_pair_for(&root, &[SERVICE_DNS]);
    let pki = cp.dir().join("pki");
    let server_client = tls_client_with(
        &tls.0,
        false,
        Some((&pki.join("admin.crt"), &pki.join("admin.key"))),
    );
    let bridge_kubeconfig = hpa::bridge_kubeconfig(&cp);
    let adapter_kubeconfig = cp.client_kubeconfig(ADAPTER_USER, &SA_GROUPS);
    let mut rig = Rig {
        cp,
        prometheus,
        root: root.clone(),
        adapter_bin: adapter_bin.clone(),
        bridge_bin,
        adapter_config,
        rules,
        tls,
        bridge_kubeconfig,
        adapter_kubeconfig,
        server_client,
        plain: common::http_client(),
        kcm_metrics_url,
        pids,
        audit: AuditLog::new(audit_path),
    };
    // The controller manager's metrics must answer before anything is measured.
    let _ = rig.kcm_metrics().await;

    let mut failures = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    let mut report = String::new();
    let mut results = Vec::new();
    for &count in &settings.counts {
        let new: Vec<Target> = (targets.len()..count).map(Target::new).collect();
        targets.extend(new.iter().cloned());
        create_targets(&rig.cp, &exporter, &rig.prometheus, &new, &targets).await;
        let design: BTreeMap<String, u64> = targets
            .iter()
            .map(|t| (t.key(), t.replicas.into()))
            .collect();
        let mut windows = Vec::new();
        for which in Which::BOTH {
            windows
                .push(run_server(&mut rig, which, &design, settings.window, &mut failures).await);
        }
        let (a, b) = (&windows[0], &windows[1]);
        let by_kind = |k: Kind| targets.iter().filter(|t| t.kind == k).count();
        let title = format!(
            "{count} HPAs ({} Pods, {} Object, {} External; {} pods), {} s window (ratio: kube-metrics-bridge / prometheus-adapter)",
            by_kind(Kind::Pods),
            by_kind(Kind::Object),
            by_kind(Kind::External),
            targets.iter().map(|t| t.replicas as usize).sum::<usize>(),
            fmt_num(settings.window.as_secs_f64())
        );
        let t = table(&title, &rows(count, a, b)) + &details(a, b);
        print!("{t}");
        report.push_str(&t);
        results.push(json!({
            "hpas": count,
            "pods": targets.iter().map(|t| t.replicas as usize).sum::<usize>(),
            "pods_hpas": by_kind(Kind::Pods),
            "object_hpas": by_kind(Kind::Object),
            "external_hpas": by_kind(Kind::External),
            "servers": {
                Which::Adapter.name(): a.to_json(count),
                Which::Bridge.name(): b.to_json(count),
            },
        }));
    }

    let timestamp = humantime::format_rfc3339_seconds(started).to_string();
    let out_dir = common::target_dir().join("bench");
    std::fs::create_dir_all(&out_dir).expect("creating the bench output dir");
    let out = out_dir.join(format!("hpas-{}.json", timestamp.replace(':', "-")));
    let loadavg_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let document = json!({
        "started": timestamp,
        "wall_seconds": t0.elapsed().as_secs_f64(),
        "machine": machine,
        "loadavg_at_end": loadavg_end.trim(),
        "settings": {
            "hpas": settings.counts,
            "window_seconds": settings.window.as_secs_f64(),
            "poll_seconds": POLL.as_secs_f64(),
            "namespaces": NAMESPACES,
            "hpa_sync_period_seconds": SYNC_PERIOD.as_secs_f64(),
            "rules": ADAPTER_CONFIG,
            "adapter_args": ["--metrics-relist-interval=1m"],
            "kube_controller_manager_args": ["--kube-api-qps=100", "--kube-api-burst=200"],
        },
        "versions": report::versions(&adapter_bin),
        "results": results,
        "failures": failures,
        "report": report,
    });
    report::write_figures(&out, &document, t0, &loadavg_end);
    drop(rig);
    drop(exporter);
    drop(dir);
    failures
}
