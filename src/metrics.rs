//! The bridge's own Prometheus metrics, served on the plain `--metrics-bind-address` port so
//! they are always scrapeable (prometheus-adapter hides its own behind authorization).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// discovery, custom_object, custom_wildcard, custom_namespace, external, openapi, health, other
    pub route: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrometheusCallLabels {
    /// query or series
    pub call: &'static str,
    /// ok, unavailable, query, malformed, too_large
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchCacheLabels {
    /// `pods`, `deployments.apps`
    pub resource: String,
    /// starting, synced, forbidden, failing
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ValueLabels {
    /// clamped (beyond what the HPA can hold), non_finite (NaN/Inf, treated as missing) or
    /// timestamp_clamped (a sample time before 1970 or after year 9999)
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// invalid_metric_name or invalid_label_name
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Histogram>,
    pub prometheus_calls: Family<PrometheusCallLabels, Histogram>,
    pub cache_lookups: Family<ResultLabels, Counter>,
    pub rules_reloads: Family<ResultLabels, Counter>,
    pub rules_last_reload_success: Gauge,
    pub rules_last_reload_timestamp: Gauge<f64, AtomicU64>,
    pub rules_loaded: Gauge,
    pub discovered_metrics: Family<ApiLabels, Gauge>,
    pub discovery_runs: Family<ResultLabels, Counter>,
    pub discovery_last_success_timestamp: Gauge<f64, AtomicU64>,
    pub values: Family<ValueLabels, Counter>,
    pub series_dropped: Family<ReasonLabels, Counter>,
    pub cert_reloads: Family<ResultLabels, Counter>,
    pub watch_caches: Family<WatchCacheLabels, Gauge>,
    /// Tasks alive in the async runtime, read when the metrics are encoded: a leak of
    /// connections, watches or requests shows here first (the soak benchmark watches it).
    pub runtime_tasks: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let latency = || Histogram::new(exponential_buckets(0.0005, 2.5, 12));
        let mut registry = Registry::with_prefix("kube_metrics_bridge");
        let requests = Family::<RequestLabels, Histogram>::new_with_constructor(latency);
        let prometheus_calls =
            Family::<PrometheusCallLabels, Histogram>::new_with_constructor(latency);
        let m = Metrics {
            requests,
            prometheus_calls,
            cache_lookups: Family::default(),
            rules_reloads: Family::default(),
            rules_last_reload_success: Gauge::default(),
            rules_last_reload_timestamp: Gauge::default(),
            rules_loaded: Gauge::default(),
            discovered_metrics: Family::default(),
            discovery_runs: Family::default(),
            discovery_last_success_timestamp: Gauge::default(),
            values: Family::default(),
            series_dropped: Family::default(),
            cert_reloads: Family::default(),
            watch_caches: Family::default(),
            runtime_tasks: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "request_duration_seconds",
            "API request latency by route and HTTP code",
            m.requests.clone(),
        );
        registry.register(
            "prometheus_request_duration_seconds",
            "Calls to Prometheus by call and outcome",
            m.prometheus_calls.clone(),
        );
        registry.register(
            "cache_lookups",
            "Value cache lookups by result (hit or miss)",
            m.cache_lookups.clone(),
        );
        registry.register(
            "rules_reloads",
            "Rules file reloads by result (success or failure)",
            m.rules_reloads.clone(),
        );
        registry.register(
            "rules_last_reload_success",
            "1 if the last rules file (re)load succeeded, 0 if the running rules are older than the file",
            m.rules_last_reload_success.clone(),
        );
        registry.register(
            "rules_last_reload_timestamp_seconds",
            "Unix time of the last rules file (re)load attempt",
            m.rules_last_reload_timestamp.clone(),
        );
        registry.register(
            "rules_loaded",
            "Rules in the running rule set",
            m.rules_loaded.clone(),
        );
        registry.register(
            "discovered_metrics",
            "Metrics found by series discovery, by API",
            m.discovered_metrics.clone(),
        );
        registry.register(
            "discovery_runs",
            "Series discovery runs by result",
            m.discovery_runs.clone(),
        );
        registry.register(
            "discovery_last_success_timestamp_seconds",
            "Unix time of the last discovery run in which every series query answered",
            m.discovery_last_success_timestamp.clone(),
        );
        registry.register(
            "values_adjusted",
            "Sample values that were clamped to what the HPA can hold, or were NaN/Inf and treated as missing; sample times clamped to 1970..9999",
            m.values.clone(),
        );
        registry.register(
            "series_dropped",
            "Series (or their labels) in discovery answers left out because their name cannot stand unquoted in PromQL, by reason",
            m.series_dropped.clone(),
        );
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads by result",
            m.cert_reloads.clone(),
        );
        registry.register(
            "watch_cache_state",
            "1 for the state each resource's watch cache is in (starting, synced, forbidden, failing), 0 for the others",
            m.watch_caches.clone(),
        );
        registry.register(
            "runtime_alive_tasks",
            "Tasks alive in the async runtime (connections, requests, watches, background loops)",
            m.runtime_tasks.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn observe_request(&self, route: &str, code: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                code,
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn observe_prometheus(&self, call: &'static str, outcome: &'static str, elapsed: Duration) {
        self.prometheus_calls
            .get_or_create(&PrometheusCallLabels { call, outcome })
            .observe(elapsed.as_secs_f64());
    }

    pub fn count(&self, family: &Family<ResultLabels, Counter>, result: &'static str) {
        family.get_or_create(&ResultLabels { result }).inc();
    }

    /// The gauge of one watch cache state.
    pub fn watch_cache_state(&self, resource: &str, state: &'static str) -> Gauge {
        self.watch_caches
            .get_or_create(&WatchCacheLabels {
                resource: resource.to_string(),
                state,
            })
            .clone()
    }

    /// Drops a watch cache state series (the resource is no longer tracked).
    pub fn forget_watch_cache_state(&self, resource: &str, state: &'static str) {
        self.watch_caches.remove(&WatchCacheLabels {
            resource: resource.to_string(),
            state,
        });
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> String {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.runtime_tasks
                .set(runtime.metrics().num_alive_tasks() as i64);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_registered_families() {
        let m = Metrics::new();
        m.observe_request("discovery", 200, Duration::from_millis(3));
        m.count(&m.cache_lookups, "hit");
        let text = m.encode();
        assert!(
            text.contains("kube_metrics_bridge_request_duration_seconds_bucket{"),
            "{text}"
        );
        assert!(
            text.contains("kube_metrics_bridge_cache_lookups_total{result=\"hit\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
