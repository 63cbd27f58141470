//! Series discovery: run every rule's `series_query` against `/api/v1/series`, keep what its
//! filters keep, name the metrics and tie them to resources. The result, a `Registry`, is what
//! requests and discovery documents read; it is swapped whole, so a request always sees one
//! consistent pair of rules and metrics.
//!
//! Relisted every `discovery_interval` and right after a rules reload. A series query that
//! fails keeps the series it found last time, so a Prometheus hiccup does not empty the API.
//!
//! What is kept between runs is a [`SeriesSet`] per query: distinct series names and their
//! label names, never label values. Series whose name (or label names) could not stand
//! unquoted in PromQL are dropped as the answer is read, counted in
//! `kube_metrics_bridge_series_dropped_total` and logged once per name: `<<.Series>>` is
//! rendered as bare text, so such a name would inject PromQL into its rule's queries.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use futures::future::join_all;
use tokio::sync::{watch, Notify};

use crate::kube::objects::ObjectResolver;
use crate::kube::resources::{GroupResource, ResourceInfo, ResourceMapper};
use crate::metrics::{unix_now, ApiLabels, Metrics, ReasonLabels};
use crate::prometheus::{Backends, PrometheusError, QueryCache, SeriesSet};
use crate::response::discovery::{Documents, Listing};
use crate::rules::{RuleId, RuleSet};
use crate::upstream::Upstreams;

/// A custom metric for one resource.
#[derive(Debug, Clone)]
pub struct CustomMetric {
    pub rule: RuleId,
    /// The Prometheus series name (`<<.Series>>`).
    pub series: String,
    pub resource: ResourceInfo,
    /// The series label that names the objects (`pod`).
    pub resource_label: String,
}

#[derive(Debug, Clone)]
pub struct ExternalMetric {
    pub rule: RuleId,
    pub series: String,
}

/// What the running rules found in Prometheus.
#[derive(Debug)]
pub struct Registry {
    pub rules: Arc<RuleSet>,
    custom: HashMap<(GroupResource, String), CustomMetric>,
    external: BTreeMap<String, ExternalMetric>,
    /// What the discovery documents list, kept so upstreams' metrics can be merged in.
    pub listing: Listing,
    /// Discovery documents rendered once per registry; discovery GETs only copy bytes.
    pub documents: Arc<Documents>,
    /// False until one discovery run has finished (successfully or not).
    pub discovered: bool,
    /// The metrics servers that answer what this registry lacks (`[[upstreams]]` of
    /// `rules`), swapped with it so a request sees one consistent pair.
    pub upstreams: Arc<Upstreams>,
}

impl Registry {
    pub fn new(
        rules: Arc<RuleSet>,
        custom: HashMap<(GroupResource, String), CustomMetric>,
        external: BTreeMap<String, ExternalMetric>,
        discovered: bool,
    ) -> Self {
        let listing = Listing::of(
            custom
                .iter()
                .map(|((_, metric), m)| (&m.resource, metric.as_str())),
            external.keys().map(String::as_str),
            rules.resource_rules.is_some(),
        );
        Registry {
            rules,
            custom,
            external,
            documents: Arc::new(Documents::render(&listing)),
            listing,
            discovered,
            upstreams: Arc::new(Upstreams::none()),
        }
    }

    /// This registry with `upstreams` (built from `rules.upstreams`).
    pub fn with_upstreams(mut self, upstreams: Arc<Upstreams>) -> Self {
        self.upstreams = upstreams;
        self
    }

    /// Before the first discovery: rules, no metrics.
    pub fn empty(rules: Arc<RuleSet>) -> Self {
        Registry::new(rules, HashMap::new(), BTreeMap::new(), false)
    }

    pub fn custom_metric(&self, resource: &GroupResource, metric: &str) -> Option<&CustomMetric> {
        self.custom.get(&(resource.clone(), metric.to_string()))
    }

    pub fn external_metric(&self, metric: &str) -> Option<&ExternalMetric> {
        self.external.get(metric)
    }

    pub fn custom_count(&self) -> usize {
        self.custom.len()
    }

    pub fn external_count(&self) -> usize {
        self.external.len()
    }

    /// Every custom metric, sorted, for `explain` and logs.
    pub fn custom_metrics(&self) -> Vec<(&GroupResource, &str)> {
        let mut all: Vec<_> = self.custom.keys().map(|(gr, m)| (gr, m.as_str())).collect();
        all.sort();
        all
    }

    /// The resources that have at least one metric (namespaces aside: a namespace metric
    /// always names its namespace), for the object caches.
    pub fn resources(&self) -> Vec<ResourceInfo> {
        let mut out: Vec<ResourceInfo> = Vec::new();
        for m in self.custom.values() {
            if m.resource.group_resource != GroupResource::namespaces()
                && !out
                    .iter()
                    .any(|r| r.group_resource == m.resource.group_resource)
            {
                out.push(m.resource.clone());
            }
        }
        out.sort_by(|a, b| a.group_resource.cmp(&b.group_resource));
        out
    }

    pub fn external_metrics(&self) -> impl Iterator<Item = &str> {
        self.external.keys().map(String::as_str)
    }
}

/// Where a rule's series come from: its series query on its backend. Two rules with the same
/// query on the same backend share one listing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesSource {
    pub backend: String,
    pub query: String,
}

impl SeriesSource {
    pub fn new(backend: &str, query: &str) -> Self {
        SeriesSource {
            backend: backend.to_string(),
            query: query.to_string(),
        }
    }

    pub fn of(rule: &crate::rules::Rule) -> Self {
        SeriesSource::new(&rule.discovery_backend, &rule.series_query)
    }
}

/// What each series query found (names and label names), from the last run that answered.
pub type SeriesByQuery = HashMap<SeriesSource, Arc<SeriesSet>>;

/// Names already warned about, so a hostile series is logged once, not every run. Bounded:
/// past this many distinct names only the counts are logged.
const WARNED_NAMES: usize = 1024;

fn warn_about_dropped(query: &str, set: &SeriesSet, metrics: &Metrics) {
    if set.invalid_names == 0 && set.invalid_label_names == 0 {
        return;
    }
    for (reason, n) in [
        ("invalid_metric_name", set.invalid_names),
        ("invalid_label_name", set.invalid_label_names),
    ] {
        if n > 0 {
            metrics
                .series_dropped
                .get_or_create(&ReasonLabels { reason })
                .inc_by(n);
        }
    }
    static WARNED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let mut warned = WARNED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut fresh = |examples: &[String], kind: &str| -> Vec<String> {
        let mut new = Vec::new();
        for name in examples {
            if warned.len() < WARNED_NAMES && warned.insert(format!("{kind}:{name}")) {
                new.push(name.clone());
            }
        }
        new
    };
    let names = fresh(&set.invalid_examples, "name");
    let label_names = fresh(&set.invalid_label_examples, "label");
    if names.is_empty() && label_names.is_empty() {
        tracing::debug!(series_query = %query, dropped_series = set.invalid_names, dropped_label_names = set.invalid_label_names, "series with names that are not classic PromQL names left out again");
        return;
    }
    // `?` shows the names escaped, so they cannot forge log lines either.
    tracing::warn!(
        series_query = %query,
        dropped_series = set.invalid_names,
        dropped_label_names = set.invalid_label_names,
        names = ?names,
        label_names = ?label_names,
        "series whose name or label names are not classic PromQL names were left out of discovery: they would be pasted into queries unquoted (logged once per name)"
    );
}

/// Lists the series of every distinct series query (concurrently), keeping the previous
/// answer for a query that fails. Returns the merged map and the errors.
pub async fn list_series(
    rules: &RuleSet,
    backends: &Backends,
    previous: &SeriesByQuery,
    metrics: &Metrics,
) -> (SeriesByQuery, Vec<(SeriesSource, PrometheusError)>) {
    let start = SystemTime::now()
        .checked_sub(rules.cache.series_max_age())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut sources: Vec<SeriesSource> = rules.all_rules().map(SeriesSource::of).collect();
    sources.sort();
    sources.dedup();
    let answers = join_all(sources.into_iter().map(|source| async move {
        let result = backends
            .series(&source.backend, &source.query, start, metrics)
            .await;
        (source, result)
    }))
    .await;
    let mut out = SeriesByQuery::new();
    let mut errors = Vec::new();
    for (source, result) in answers {
        match result {
            Ok(series) => {
                warn_about_dropped(&source.query, &series, metrics);
                out.insert(source, Arc::new(series));
            }
            Err(e) => {
                if let Some(old) = previous.get(&source) {
                    out.insert(source.clone(), old.clone());
                }
                errors.push((source, e));
            }
        }
    }
    (out, errors)
}

/// Builds the registry from listed series. Later rules win a name collision, as in
/// prometheus-adapter.
pub fn build_registry(
    rules: Arc<RuleSet>,
    series: &SeriesByQuery,
    mapper: &dyn ResourceMapper,
) -> Registry {
    let mut custom = HashMap::new();
    let mut resource_cache: HashMap<(usize, String), Option<ResourceInfo>> = HashMap::new();
    for rule in &rules.custom {
        let Some(list) = series.get(&SeriesSource::of(rule)) else {
            continue;
        };
        for (name, labels) in list.names().filter(|(n, _)| rule.keeps_series(n)) {
            let Some(metric) = rule
                .metric_name(name)
                .filter(|m| crate::names::is_metric_name(m))
            else {
                tracing::debug!(rule = %rule.id, series = %name, "series gives no usable metric name; skipped");
                continue;
            };
            for label in labels {
                let info = resource_cache
                    .entry((rule.id.index, label.clone()))
                    .or_insert_with(|| rule.resources.resource_for_label(label, mapper))
                    .clone();
                if let Some(resource) = info {
                    custom.insert(
                        (resource.group_resource.clone(), metric.clone()),
                        CustomMetric {
                            rule: rule.id,
                            series: name.to_string(),
                            resource,
                            resource_label: label.clone(),
                        },
                    );
                }
            }
        }
    }
    let mut external = BTreeMap::new();
    for rule in &rules.external {
        let Some(list) = series.get(&SeriesSource::of(rule)) else {
            continue;
        };
        for (name, _) in list.names().filter(|(n, _)| rule.keeps_series(n)) {
            if let Some(metric) = rule
                .metric_name(name)
                .filter(|m| crate::names::is_metric_name(m))
            {
                external.insert(
                    metric,
                    ExternalMetric {
                        rule: rule.id,
                        series: name.to_string(),
                    },
                );
            }
        }
    }
    Registry::new(rules, custom, external, true)
}

/// Starts a discovery run when a request asks for a metric the registry does not have, at
/// most once per `min_interval`: a new exporter's metric is then served within seconds of
/// the first request for it instead of up to a `discovery_interval` later. The request
/// itself gets its 404 at once; it does not wait for the run.
pub struct RediscoverOnMiss {
    wake: Arc<Notify>,
    rules: Arc<ArcSwap<RuleSet>>,
    last: std::sync::Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
}

impl RediscoverOnMiss {
    pub fn new(wake: Arc<Notify>, rules: Arc<ArcSwap<RuleSet>>, metrics: Arc<Metrics>) -> Self {
        RediscoverOnMiss {
            wake,
            rules,
            last: std::sync::Mutex::new(None),
            metrics,
        }
    }

    /// A request missed `metric`; returns whether a run was started.
    pub fn missed(&self, metric: &str) -> bool {
        let min_interval = self.rules.load().cache.rediscover_on_miss;
        if min_interval.is_zero() {
            return false;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < min_interval) {
            return false;
        }
        *last = Some(Instant::now());
        drop(last);
        tracing::info!(%metric, "a request asked for a metric discovery has not seen; rediscovering now");
        self.metrics.discovery_on_miss.inc();
        self.wake.notify_one();
        true
    }
}

/// What the discovery loop needs.
pub struct Discoverer {
    pub rules: Arc<ArcSwap<RuleSet>>,
    /// The backends (with the value cache), swapped when the rules' backends change.
    pub backend: Arc<ArcSwap<QueryCache>>,
    pub registry: Arc<ArcSwap<Registry>>,
    pub mapper: Arc<dyn ResourceMapper>,
    /// Told which resources have metrics, so it can cache them.
    pub objects: Arc<dyn ObjectResolver>,
    pub metrics: Arc<Metrics>,
    /// Wakes the loop early: a rules reload.
    pub wake: Arc<Notify>,
}

impl Discoverer {
    /// Runs until `shutdown` changes; one run right away.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut previous = SeriesByQuery::new();
        loop {
            self.run_once(&mut previous).await;
            let interval = self.rules.load().cache.discovery_interval;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    pub async fn run_once(&self, previous: &mut SeriesByQuery) {
        let rules = self.rules.load_full();
        let cache = self.backend.load_full();
        let started = Instant::now();
        let (series, errors) = list_series(&rules, cache.backends(), previous, &self.metrics).await;
        for (source, error) in &errors {
            tracing::warn!(backend = %source.backend, series_query = %source.query, %error, "series discovery failed for this query; keeping its previous series");
        }
        let upstreams = self.upstreams_for(&rules);
        let registry =
            build_registry(rules, &series, self.mapper.as_ref()).with_upstreams(upstreams);
        self.metrics
            .discovered_metrics
            .get_or_create(&ApiLabels { api: "custom" })
            .set(registry.custom_count() as i64);
        self.metrics
            .discovered_metrics
            .get_or_create(&ApiLabels { api: "external" })
            .set(registry.external_count() as i64);
        if errors.is_empty() {
            self.metrics.count(&self.metrics.discovery_runs, "success");
            self.metrics
                .discovery_last_success_timestamp
                .set(unix_now());
        } else {
            self.metrics.count(&self.metrics.discovery_runs, "failure");
        }
        tracing::info!(
            custom = registry.custom_count(),
            external = registry.external_count(),
            failed_queries = errors.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "series discovery finished"
        );
        self.objects.track(&registry.resources());
        self.objects
            .serve_resource_metrics(registry.rules.resource_rules.is_some());
        self.registry.store(Arc::new(registry));
        *previous = series;
    }

    /// The running upstreams when `rules` name the same ones, else new ones (whose discovery
    /// starts now; the old ones' tasks end when the old registry is dropped).
    fn upstreams_for(&self, rules: &RuleSet) -> Arc<Upstreams> {
        let current = self.registry.load().upstreams.clone();
        if current.configs() == rules.upstreams.as_slice() {
            return current;
        }
        match Upstreams::new(&rules.upstreams, &self.metrics) {
            Ok(upstreams) => {
                upstreams.start();
                Arc::new(upstreams)
            }
            Err(e) => {
                // The reloader built them before accepting the file; a TLS file that
                // vanished since keeps the running upstreams.
                tracing::error!(error = %format!("{e:#}"), "cannot build the upstreams; keeping the running ones");
                current
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::StaticMapper;

    fn set(series: &[(&str, &[&str])]) -> Arc<SeriesSet> {
        let mut set = SeriesSet::default();
        for (name, labels) in series {
            set.add(name, labels.iter().copied());
        }
        Arc::new(set)
    }

    #[test]
    fn builds_custom_and_external_metrics() {
        let rules = Arc::new(crate::rules::fixtures::example());
        let mut by_query = SeriesByQuery::new();
        by_query.insert(
            SeriesSource::new("default", r#"http_requests_total{namespace!="",pod!=""}"#),
            set(&[
                ("http_requests_total", &["namespace", "pod", "container"]),
                ("http_requests_bucket", &["namespace", "pod"]),
            ]),
        );
        by_query.insert(
            SeriesSource::new("default", r#"queue_messages_ready{namespace!=""}"#),
            set(&[("queue_messages_ready", &["queue"])]),
        );
        let reg = build_registry(rules, &by_query, &StaticMapper::builtin());
        let pods = reg
            .custom_metric(&GroupResource::new("", "pods"), "http_requests_per_second")
            .expect("pods metric");
        assert_eq!(pods.resource_label, "pod");
        assert_eq!(pods.series, "http_requests_total");
        assert!(reg
            .custom_metric(&GroupResource::namespaces(), "http_requests_per_second")
            .is_some());
        assert_eq!(reg.custom_count(), 2, "{:?}", reg.custom_metrics());
        assert!(reg.external_metric("queue_messages_ready").is_some());
        assert!(reg.discovered);
    }

    /// A hostile series name matching a broad series query never becomes a metric, so it
    /// never reaches `<<.Series>>`; nor does a hostile label name reach `<<.GroupBy>>`.
    #[test]
    fn hostile_series_names_never_reach_a_query() {
        let rules = Arc::new(
            crate::rules::fixtures::compile(
                r#"
[[rules]]
series_query = '{namespace!=""}'
resources.overrides = { namespace = { resource = "namespace" }, pod = { resource = "pod" } }
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'

[[external_rules]]
series_query = '{namespace!=""}'
resources.overrides = { namespace = { resource = "namespace" } }
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>})'
"#,
            )
            .expect("compiles"),
        );
        let hostile = r#"x{a="1"} or vector(1)"#;
        let mut by_query = SeriesByQuery::new();
        let source = SeriesSource::new("default", r#"{namespace!=""}"#);
        by_query.insert(
            source.clone(),
            set(&[
                ("pod_load", &["namespace", "pod"]),
                (hostile, &["namespace", "pod"]),
                ("other", &["namespace", "pod) or vector(1"]),
            ]),
        );
        let metrics = Metrics::new();
        warn_about_dropped(&source.query, &by_query[&source], &metrics);
        let reg = build_registry(rules, &by_query, &StaticMapper::builtin());
        let all: Vec<String> = reg
            .custom_metrics()
            .iter()
            .map(|(gr, m)| format!("{gr}/{m}"))
            .chain(reg.external_metrics().map(String::from))
            .collect();
        assert_eq!(
            all,
            [
                "namespaces/other",
                "namespaces/pod_load",
                "pods/pod_load",
                "other",
                "pod_load"
            ]
        );
        assert!(all.iter().all(|m| !m.contains("vector")), "{all:?}");
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"kube_metrics_bridge_series_dropped_total{reason="invalid_metric_name"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"kube_metrics_bridge_series_dropped_total{reason="invalid_label_name"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn misses_wake_discovery_at_most_once_per_interval() {
        let rules = Arc::new(ArcSwap::from_pointee(crate::rules::fixtures::example()));
        let wake = Arc::new(Notify::new());
        let metrics = Arc::new(Metrics::new());
        let miss = RediscoverOnMiss::new(wake.clone(), rules.clone(), metrics);
        assert!(miss.missed("new_metric"));
        assert!(!miss.missed("new_metric"), "rate limited");
        assert!(!miss.missed("other"), "rate limited across metrics too");
        let mut off = crate::rules::fixtures::example();
        off.cache.rediscover_on_miss = std::time::Duration::ZERO;
        rules.store(Arc::new(off));
        *miss.last.lock().expect("lock") = None;
        assert!(!miss.missed("new_metric"), "0s turns it off");
    }

    #[test]
    fn metric_names_must_fit_a_path_segment() {
        use crate::names::is_metric_name;
        assert!(is_metric_name("request_count:rate1m"));
        assert!(!is_metric_name("a/b"));
        assert!(!is_metric_name(".."));
        assert!(!is_metric_name(""));
    }
}
