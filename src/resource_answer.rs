//! The Resource Metrics API's answer, assembled from the samples of one cpu and one memory
//! query: samples matched to Running pods and their containers, or to nodes by name or
//! address, with exact quantities and the samples' own timestamps.
//!
//! Where prometheus-adapter differs (reference §3.3), on purpose:
//! - values are exact canonical quantities (cpu in cores down to nanocores, memory in whole
//!   bytes), not truncated through int64 milli; NaN, ±Inf and negative samples are missing
//!   values, never a fake 0;
//! - a pod's containers come from its spec: series of containers it does not run (the
//!   pod-level cgroup with `container=""`, the `POD` sandbox) are ignored instead of counted
//!   twice (prometheus-adapter#211), and a pod missing a container's cpu or memory follows
//!   the rule's [`MissingContainers`] policy instead of a silent drop;
//! - a node is found by its name or by any of its addresses, through every label the rule
//!   maps to nodes (`instance="10.0.0.5:9100"` finds the node with that InternalIP).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::bridge::{AnswerError, Bridge};
pub use crate::config::MissingContainers;
use crate::field_selector::FieldSelector;
use crate::kube::objects::ResolveError;
use crate::kube::resource_objects::{NodeInfo, RunningPod};
use crate::metrics::ReasonLabels;
use crate::not_found::NotFound;
use crate::prometheus::Sample;
use crate::request::{ResourceKind, ResourceMetricsRequest};
use crate::response::resource::{ContainerMetrics, NodeMetrics, PodMetrics, Usage};
use crate::rules::resource_metrics::{ComputeResource, ResourceRules};

/// The two resources, in the order they appear in `usage`.
pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";

/// Which labels of the pod query's samples name what.
#[derive(Debug, Clone, Copy)]
pub struct PodLabels<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub container: &'a str,
}

/// One value: the canonical quantity and the sample's time.
#[derive(Debug, Clone, PartialEq)]
struct Value {
    quantity: String,
    timestamp: f64,
}

/// What was left out of an answer and why, for the log and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Omitted {
    /// Pods left out because a container lacked cpu or memory (`drop_pod`), or had no sample.
    pub incomplete_pods: usize,
    /// Samples that were NaN, infinite or negative.
    pub invalid_samples: usize,
    /// Nodes with a sample for only one of the two resources, or none.
    pub incomplete_nodes: usize,
}

/// The Quantity of a usage sample: cpu in cores, memory in whole bytes (rounded up, so a
/// non-zero working set never reads 0). None for NaN, ±Inf and negative values.
fn usage_quantity(resource: &str, v: f64) -> Option<String> {
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    let v = if resource == MEMORY { v.ceil() } else { v };
    crate::quantity::from_f64(v).map(|q| q.into_string())
}

/// namespace -> pod -> container -> resource -> value.
type PodSamples =
    BTreeMap<String, BTreeMap<String, BTreeMap<String, BTreeMap<&'static str, Value>>>>;

fn index_pod_samples(
    by_resource: [(&'static str, &[Sample], PodLabels<'_>); 2],
    omitted: &mut Omitted,
) -> PodSamples {
    let mut index = PodSamples::new();
    for (resource, samples, labels) in by_resource {
        for sample in samples {
            let (Some(ns), Some(pod)) = (
                sample.labels.get(labels.namespace),
                sample.labels.get(labels.pod),
            ) else {
                continue;
            };
            let container = sample
                .labels
                .get(labels.container)
                .cloned()
                .unwrap_or_default();
            let Some(quantity) = usage_quantity(resource, sample.value) else {
                omitted.invalid_samples += 1;
                continue;
            };
            // A query that does not group by container may repeat a key: the first wins.
            index
                .entry(ns.clone())
                .or_default()
                .entry(pod.clone())
                .or_default()
                .entry(container)
                .or_default()
                .entry(resource)
                .or_insert(Value {
                    quantity,
                    timestamp: sample.timestamp,
                });
        }
    }
    index
}

/// The containers a pod without a spec (`--standalone`) is taken to run: every container with
/// a sample except the pod-level cgroup (`""`) and the sandbox (`POD`).
fn containers_from_samples(
    containers: &BTreeMap<String, BTreeMap<&'static str, Value>>,
) -> Vec<String> {
    containers
        .keys()
        .filter(|c| !c.is_empty() && c.as_str() != "POD")
        .cloned()
        .collect()
}

/// One pod's answer, or None if the policy leaves it out.
fn pod_answer(
    namespace: &str,
    name: &str,
    labels: BTreeMap<String, String>,
    containers: &[String],
    samples: Option<&BTreeMap<String, BTreeMap<&'static str, Value>>>,
    window: Duration,
    missing: MissingContainers,
) -> Option<PodMetrics> {
    let samples = samples?;
    if containers.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(containers.len());
    let mut timestamp = f64::INFINITY;
    let mut any_value = false;
    for container in containers {
        let values = samples.get(container);
        let mut usage = Usage::new();
        for resource in [CPU, MEMORY] {
            match values.and_then(|v| v.get(resource)) {
                Some(v) => {
                    any_value = true;
                    timestamp = timestamp.min(v.timestamp);
                    usage.insert(resource.to_string(), v.quantity.clone());
                }
                None if missing == MissingContainers::Zero => {
                    usage.insert(resource.to_string(), "0".to_string());
                }
                None => return None,
            }
        }
        out.push(ContainerMetrics {
            name: container.clone(),
            usage,
        });
    }
    if !any_value {
        return None;
    }
    Some(PodMetrics {
        name: name.to_string(),
        namespace: namespace.to_string(),
        labels,
        timestamp,
        window,
        containers: out,
    })
}

/// Where a pod answer's pods come from.
pub enum PodSource<'a> {
    /// The cluster's Running pods the request selected (labels, fields, namespace applied).
    Cluster(&'a [RunningPod]),
    /// No cluster (`--standalone`): every pod with a sample in `namespace` (all for None)
    /// that the field selector picks.
    Samples {
        namespace: Option<&'a str>,
        fields: &'a FieldSelector,
    },
}

/// The `PodMetrics` of an answer, sorted by namespace and name. Each resource's samples are
/// read through its own rule's labels.
pub fn pod_metrics(
    cpu: (&[Sample], PodLabels<'_>),
    memory: (&[Sample], PodLabels<'_>),
    source: PodSource<'_>,
    window: Duration,
    missing: MissingContainers,
) -> (Vec<PodMetrics>, Omitted) {
    let mut omitted = Omitted::default();
    let index = index_pod_samples(
        [(CPU, cpu.0, cpu.1), (MEMORY, memory.0, memory.1)],
        &mut omitted,
    );
    let mut items = Vec::new();
    match source {
        PodSource::Cluster(pods) => {
            for pod in pods {
                let samples = index.get(&pod.namespace).and_then(|p| p.get(&pod.name));
                match pod_answer(
                    &pod.namespace,
                    &pod.name,
                    (*pod.labels).clone(),
                    &pod.containers,
                    samples,
                    window,
                    missing,
                ) {
                    Some(item) => items.push(item),
                    None => omitted.incomplete_pods += 1,
                }
            }
        }
        PodSource::Samples { namespace, fields } => {
            for (ns, pods) in &index {
                if namespace.is_some_and(|want| want != ns) {
                    continue;
                }
                for (name, containers) in pods {
                    if !fields.matches(ns, name) {
                        continue;
                    }
                    let names = containers_from_samples(containers);
                    match pod_answer(
                        ns,
                        name,
                        BTreeMap::new(),
                        &names,
                        Some(containers),
                        window,
                        missing,
                    ) {
                        Some(item) => items.push(item),
                        None => omitted.incomplete_pods += 1,
                    }
                }
            }
        }
    }
    (items, omitted)
}

/// `10.0.0.5:9100` -> `10.0.0.5`, `[fd00::5]:9100` -> `fd00::5`; anything else as it is.
fn host_of(value: &str) -> &str {
    if let Some(rest) = value.strip_prefix('[') {
        if let Some((host, _)) = rest.split_once(']') {
            return host;
        }
    }
    match value.rsplit_once(':') {
        // One colon: host:port. More: a bare IPv6 address.
        Some((host, port))
            if !host.contains(':')
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            host
        }
        _ => value,
    }
}

/// Finds the node a sample is about: through each node label in order, by name, then by
/// address (with any port removed). Without a cluster, the first non-empty label value is
/// the node's name.
struct NodeMatcher<'a> {
    by_name: HashMap<&'a str, &'a NodeInfo>,
    by_address: HashMap<&'a str, &'a NodeInfo>,
    known: bool,
}

impl<'a> NodeMatcher<'a> {
    fn new(nodes: Option<&'a [NodeInfo]>) -> Self {
        let mut by_name = HashMap::new();
        let mut by_address = HashMap::new();
        for node in nodes.into_iter().flatten() {
            by_name.insert(node.name.as_str(), node);
            for address in node.addresses.iter() {
                by_address.entry(address.as_str()).or_insert(node);
            }
        }
        NodeMatcher {
            by_name,
            by_address,
            known: nodes.is_some(),
        }
    }

    fn node_of(&self, sample: &'a Sample, labels: &[String]) -> Option<String> {
        for label in labels {
            let Some(value) = sample.labels.get(label).filter(|v| !v.is_empty()) else {
                continue;
            };
            if !self.known {
                return Some(value.clone());
            }
            if let Some(node) = self
                .by_name
                .get(value.as_str())
                .or_else(|| self.by_address.get(value.as_str()))
                .or_else(|| self.by_address.get(host_of(value)))
            {
                return Some(node.name.clone());
            }
        }
        None
    }
}

/// Where a node answer's nodes come from.
pub enum NodeSource<'a> {
    /// The cluster's nodes the request selected.
    Cluster(&'a [NodeInfo]),
    /// No cluster: every node with a sample that the field selector picks.
    Samples { fields: &'a FieldSelector },
}

/// The `NodeMetrics` of an answer, sorted by name. A node needs both resources. Each
/// resource's samples are matched through its own rule's node labels (kube-prometheus maps
/// `instance` to nodes for memory and `node` for cpu).
pub fn node_metrics(
    cpu: (&[Sample], &[String]),
    memory: (&[Sample], &[String]),
    source: NodeSource<'_>,
    window: Duration,
) -> (Vec<NodeMetrics>, Omitted) {
    let mut omitted = Omitted::default();
    let nodes = match &source {
        NodeSource::Cluster(nodes) => Some(*nodes),
        NodeSource::Samples { .. } => None,
    };
    let matcher = NodeMatcher::new(nodes);
    // node -> resource -> value; the first sample for a node wins.
    let mut values: BTreeMap<String, BTreeMap<&'static str, Value>> = BTreeMap::new();
    for (resource, (samples, node_labels)) in [(CPU, cpu), (MEMORY, memory)] {
        for sample in samples {
            let Some(node) = matcher.node_of(sample, node_labels) else {
                continue;
            };
            let Some(quantity) = usage_quantity(resource, sample.value) else {
                omitted.invalid_samples += 1;
                continue;
            };
            values
                .entry(node)
                .or_default()
                .entry(resource)
                .or_insert(Value {
                    quantity,
                    timestamp: sample.timestamp,
                });
        }
    }
    let answer = |name: &str, labels: BTreeMap<String, String>, omitted: &mut Omitted| {
        let found = values.get(name);
        let (Some(cpu), Some(memory)) = (
            found.and_then(|v| v.get(CPU)),
            found.and_then(|v| v.get(MEMORY)),
        ) else {
            omitted.incomplete_nodes += 1;
            return None;
        };
        Some(NodeMetrics {
            name: name.to_string(),
            labels,
            timestamp: cpu.timestamp.min(memory.timestamp),
            window,
            usage: [
                (CPU.to_string(), cpu.quantity.clone()),
                (MEMORY.to_string(), memory.quantity.clone()),
            ]
            .into(),
        })
    };
    let items = match source {
        NodeSource::Cluster(nodes) => nodes
            .iter()
            .filter_map(|n| answer(&n.name, (*n.labels).clone(), &mut omitted))
            .collect(),
        NodeSource::Samples { fields } => values
            .keys()
            .filter(|name| fields.matches("", name))
            .filter_map(|name| answer(name, BTreeMap::new(), &mut omitted))
            .collect(),
    };
    (items, omitted)
}

/// The cpu and memory queries a request runs: per namespace for pods in one namespace, for
/// the cluster for pods everywhere, and for all nodes.
pub fn queries(
    rules: &ResourceRules,
    req: &ResourceMetricsRequest,
) -> Result<[(ComputeResource, String); 2], crate::query::QueryError> {
    let render =
        |resource: ComputeResource| -> Result<(ComputeResource, String), crate::query::QueryError> {
            let rule = rules.rule(resource);
            let query = match req.kind {
                ResourceKind::Pods => rule.pod_query(req.namespace.as_deref())?,
                ResourceKind::Nodes => rule.node_query(),
            };
            Ok((resource, query))
        };
    Ok([
        render(ComputeResource::Cpu)?,
        render(ComputeResource::Memory)?,
    ])
}

/// A Resource Metrics API answer, before it is encoded.
#[derive(Debug, Clone, PartialEq)]
pub enum ResourceAnswer {
    Pod(PodMetrics),
    Pods(Vec<PodMetrics>),
    Node(NodeMetrics),
    Nodes(Vec<NodeMetrics>),
}

impl Bridge {
    /// Answers a `metrics.k8s.io` get or list: the selected Running pods (or nodes) from the
    /// watch caches, one cpu and one memory query for the namespace (or the cluster) through
    /// the value cache, so every caller in a TTL shares them, and the samples matched up.
    pub async fn resource_metrics(
        &self,
        req: &ResourceMetricsRequest,
    ) -> Result<ResourceAnswer, AnswerError> {
        let registry = self.registry.load_full();
        let Some(rules) = registry.rules.resource_rules.as_ref() else {
            // Without [resource_rules] the group is not served at all.
            return Err(AnswerError::NotFound(NotFound::Path));
        };
        let answer = match req.kind {
            ResourceKind::Pods => self.pod_answer(rules, req).await?,
            ResourceKind::Nodes => self.node_answer(rules, req).await?,
        };
        Ok(answer)
    }

    /// What the selected objects say before any query: a labelSelector needs a cluster, and a
    /// get of an object the cluster does not hold (not Running, or gone) is its 404.
    /// `selected_none`: whether the cluster's selection is empty (None without a cluster).
    fn check_selection(
        req: &ResourceMetricsRequest,
        resource: &str,
        selected_none: Option<bool>,
    ) -> Result<(), AnswerError> {
        match (selected_none, &req.name) {
            (None, _) if !req.label_selector.is_empty() => Err(AnswerError::BadRequest(format!(
                "labelSelector needs a cluster to select {resource}; this bridge runs --standalone"
            ))),
            (Some(true), Some(name)) => Err(AnswerError::NotFound(NotFound::Object {
                resource: resource.to_string(),
                name: name.clone(),
            })),
            _ => Ok(()),
        }
    }

    async fn pod_answer(
        &self,
        rules: &ResourceRules,
        req: &ResourceMetricsRequest,
    ) -> Result<ResourceAnswer, AnswerError> {
        let fields = &req.field_selector;
        let namespace = req.namespace.as_deref();
        let pods = self
            .objects
            .running_pods(namespace, &req.label_selector, fields)
            .map_err(|e| resource_objects_error(e, "pods"))?;
        Self::check_selection(req, "pods", pods.as_ref().map(Vec::is_empty))?;
        let (cpu, memory) = (
            rules.rule(ComputeResource::Cpu),
            rules.rule(ComputeResource::Memory),
        );
        let [(_, cpu_query), (_, memory_query)] = queries(rules, req)?;
        let (cpu_samples, memory_samples) = futures::try_join!(
            self.query(rules.query(&cpu_query, req.namespace.as_deref())),
            self.query(rules.query(&memory_query, req.namespace.as_deref()))
        )?;
        let source = match &pods {
            Some(pods) => PodSource::Cluster(pods),
            None => PodSource::Samples { namespace, fields },
        };
        let (items, omitted) = pod_metrics(
            (cpu_samples.samples(), pod_labels(cpu)),
            (memory_samples.samples(), pod_labels(memory)),
            source,
            rules.window,
            rules.missing_containers,
        );
        self.count_omitted(&omitted);
        match &req.name {
            Some(name) => items
                .into_iter()
                .next()
                .map(ResourceAnswer::Pod)
                .ok_or_else(|| {
                    AnswerError::NotFound(NotFound::ResourceMetrics {
                        kind: "podmetrics",
                        name: format!("{}/{name}", namespace.unwrap_or_default()),
                    })
                }),
            None => Ok(ResourceAnswer::Pods(items)),
        }
    }

    async fn node_answer(
        &self,
        rules: &ResourceRules,
        req: &ResourceMetricsRequest,
    ) -> Result<ResourceAnswer, AnswerError> {
        let fields = &req.field_selector;
        let nodes = self
            .objects
            .nodes(&req.label_selector, fields)
            .map_err(|e| resource_objects_error(e, "nodes"))?;
        Self::check_selection(req, "nodes", nodes.as_ref().map(Vec::is_empty))?;
        let (cpu, memory) = (
            rules.rule(ComputeResource::Cpu),
            rules.rule(ComputeResource::Memory),
        );
        let [(_, cpu_query), (_, memory_query)] = queries(rules, req)?;
        let (cpu_samples, memory_samples) = futures::try_join!(
            self.query(rules.query(&cpu_query, req.namespace.as_deref())),
            self.query(rules.query(&memory_query, req.namespace.as_deref()))
        )?;
        let source = match &nodes {
            Some(nodes) => NodeSource::Cluster(nodes),
            None => NodeSource::Samples { fields },
        };
        let (items, omitted) = node_metrics(
            (cpu_samples.samples(), cpu.node_labels()),
            (memory_samples.samples(), memory.node_labels()),
            source,
            rules.window,
        );
        self.count_omitted(&omitted);
        match &req.name {
            Some(name) => items
                .into_iter()
                .next()
                .map(ResourceAnswer::Node)
                .ok_or_else(|| {
                    AnswerError::NotFound(NotFound::ResourceMetrics {
                        kind: "nodemetrics",
                        name: name.clone(),
                    })
                }),
            None => Ok(ResourceAnswer::Nodes(items)),
        }
    }

    fn count_omitted(&self, omitted: &Omitted) {
        for (reason, n) in [
            ("incomplete_pod", omitted.incomplete_pods),
            ("incomplete_node", omitted.incomplete_nodes),
            ("invalid_sample", omitted.invalid_samples),
        ] {
            if n > 0 {
                self.metrics
                    .resource_metrics_omitted
                    .get_or_create(&ReasonLabels { reason })
                    .inc_by(n as u64);
            }
        }
        if omitted != &Omitted::default() {
            tracing::debug!(?omitted, "resource metrics left out of an answer");
        }
    }
}

fn pod_labels(rule: &crate::rules::resource_metrics::ResourceQuery) -> PodLabels<'_> {
    PodLabels {
        namespace: rule.namespace_label(),
        pod: rule.pod_label(),
        container: rule.container_label(),
    }
}

/// The pod and node caches could not answer: 403 and outages keep their Status.
fn resource_objects_error(e: ResolveError, resource: &str) -> AnswerError {
    tracing::warn!(%resource, error = %e, "cannot select objects for metrics.k8s.io");
    AnswerError::Objects(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const LABELS: PodLabels<'static> = PodLabels {
        namespace: "namespace",
        pod: "pod",
        container: "container",
    };

    fn sample(labels: &[(&str, &str)], value: f64, timestamp: f64) -> Sample {
        Sample {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            timestamp,
            value,
        }
    }

    fn c(ns: &str, pod: &str, container: &str, value: f64, ts: f64) -> Sample {
        sample(
            &[("namespace", ns), ("pod", pod), ("container", container)],
            value,
            ts,
        )
    }

    fn running(ns: &str, name: &str, containers: &[&str]) -> RunningPod {
        RunningPod {
            namespace: ns.into(),
            name: name.into(),
            labels: Arc::new([("app".to_string(), "web".to_string())].into()),
            containers: containers.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn usage(pod: &PodMetrics) -> Vec<(String, String, String)> {
        pod.containers
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    c.usage.get(CPU).cloned().unwrap_or_default(),
                    c.usage.get(MEMORY).cloned().unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn pods_take_exact_values_their_containers_and_oldest_timestamp() {
        let cpu = [
            c("default", "web-1", "app", 0.0012345678, 100.0),
            c("default", "web-1", "mesh", 0.25, 99.0),
            // The pod-level cgroup and the sandbox are not containers of the pod.
            c("default", "web-1", "", 0.5, 100.0),
            c("default", "web-1", "POD", 0.1, 100.0),
        ];
        let memory = [
            c("default", "web-1", "app", 104857600.5, 101.0),
            c("default", "web-1", "mesh", 1e9, 100.0),
        ];
        let pods = [running("default", "web-1", &["app", "mesh"])];
        let (items, omitted) = pod_metrics(
            (&cpu, LABELS),
            (&memory, LABELS),
            PodSource::Cluster(&pods),
            Duration::from_secs(60),
            MissingContainers::DropPod,
        );
        assert_eq!(omitted, Omitted::default());
        assert_eq!(items.len(), 1);
        assert_eq!(
            usage(&items[0]),
            [
                ("app".into(), "1234568n".into(), "104857601".into()),
                ("mesh".into(), "250m".into(), "1G".into())
            ]
        );
        assert_eq!(items[0].timestamp, 99.0);
        assert_eq!(items[0].labels.get("app").map(String::as_str), Some("web"));
    }

    #[test]
    fn a_pod_missing_a_container_follows_the_policy() {
        let cpu = [
            c("default", "web-1", "app", 0.5, 100.0),
            c("default", "web-1", "mesh", 0.1, 100.0),
        ];
        let memory = [c("default", "web-1", "app", 1024.0, 100.0)];
        let pods = [
            running("default", "web-1", &["app", "mesh"]),
            running("default", "web-2", &["app"]),
        ];
        let run = |missing| {
            pod_metrics(
                (&cpu, LABELS),
                (&memory, LABELS),
                PodSource::Cluster(&pods),
                Duration::from_secs(60),
                missing,
            )
        };
        let (dropped, omitted) = run(MissingContainers::DropPod);
        assert!(dropped.is_empty());
        assert_eq!(omitted.incomplete_pods, 2);
        let (zeroed, omitted) = run(MissingContainers::Zero);
        // web-2 has no sample at all: never reported as zero usage.
        assert_eq!(omitted.incomplete_pods, 1);
        assert_eq!(
            usage(&zeroed[0]),
            [
                ("app".into(), "500m".into(), "1024".into()),
                ("mesh".into(), "100m".into(), "0".into())
            ]
        );
    }

    #[test]
    fn invalid_samples_are_missing_not_zero() {
        let cpu = [c("default", "web-1", "app", f64::NAN, 100.0)];
        let memory = [c("default", "web-1", "app", -5.0, 100.0)];
        let pods = [running("default", "web-1", &["app"])];
        let (items, omitted) = pod_metrics(
            (&cpu, LABELS),
            (&memory, LABELS),
            PodSource::Cluster(&pods),
            Duration::from_secs(60),
            MissingContainers::Zero,
        );
        assert!(items.is_empty());
        assert_eq!(omitted.invalid_samples, 2);
    }

    #[test]
    fn without_a_cluster_pods_come_from_samples() {
        let cpu = [
            c("default", "web-1", "app", 0.5, 100.0),
            c("default", "web-1", "", 0.9, 100.0),
            c("other", "db-0", "db", 1.0, 100.0),
        ];
        let memory = [
            c("default", "web-1", "app", 10.0, 100.0),
            c("other", "db-0", "db", 20.0, 100.0),
        ];
        let fields = FieldSelector::default();
        let (items, _) = pod_metrics(
            (&cpu, LABELS),
            (&memory, LABELS),
            PodSource::Samples {
                namespace: None,
                fields: &fields,
            },
            Duration::from_secs(60),
            MissingContainers::DropPod,
        );
        let names: Vec<String> = items
            .iter()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        assert_eq!(names, ["default/web-1", "other/db-0"]);
        assert_eq!(
            usage(&items[0]),
            [("app".into(), "500m".into(), "10".into())]
        );
        let (only_default, _) = pod_metrics(
            (&cpu, LABELS),
            (&memory, LABELS),
            PodSource::Samples {
                namespace: Some("default"),
                fields: &fields,
            },
            Duration::from_secs(60),
            MissingContainers::DropPod,
        );
        assert_eq!(only_default.len(), 1);
    }

    fn node(name: &str, addresses: &[&str]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            labels: Arc::default(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn nodes_are_found_by_name_or_address() {
        let labels = ["node".to_string(), "instance".to_string()];
        let cpu = [
            sample(&[("node", "node-a")], 1.5, 100.0),
            sample(&[("instance", "10.0.0.6:9100")], 0.25, 100.0),
            sample(&[("instance", "[fd00::7]:9100")], 2.0, 100.0),
            sample(&[("instance", "10.9.9.9:9100")], 9.0, 100.0),
        ];
        let memory = [
            sample(&[("instance", "10.0.0.5:9100")], 2e9, 98.0),
            sample(&[("node", "node-b")], 1e9, 100.0),
            sample(&[("instance", "fd00::7")], 3e9, 100.0),
        ];
        let nodes = [
            node("node-a", &["10.0.0.5"]),
            node("node-b", &["10.0.0.6"]),
            node("node-c", &["fd00::7"]),
            node("node-d", &["10.0.0.8"]),
        ];
        let (items, omitted) = node_metrics(
            (&cpu, &labels),
            (&memory, &labels),
            NodeSource::Cluster(&nodes),
            Duration::from_secs(30),
        );
        let got: Vec<(String, String, String, f64)> = items
            .iter()
            .map(|n| {
                (
                    n.name.clone(),
                    n.usage[CPU].clone(),
                    n.usage[MEMORY].clone(),
                    n.timestamp,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("node-a".into(), "1500m".into(), "2G".into(), 98.0),
                ("node-b".into(), "250m".into(), "1G".into(), 100.0),
                ("node-c".into(), "2".into(), "3G".into(), 100.0),
            ]
        );
        assert_eq!(omitted.incomplete_nodes, 1);
    }

    #[test]
    fn hosts_lose_their_ports() {
        assert_eq!(host_of("10.0.0.5:9100"), "10.0.0.5");
        assert_eq!(host_of("[fd00::5]:9100"), "fd00::5");
        assert_eq!(host_of("fd00::5"), "fd00::5");
        assert_eq!(host_of("node-a"), "node-a");
        assert_eq!(host_of("node-a:"), "node-a:");
    }
}
