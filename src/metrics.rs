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
pub struct ResponseLabels {
    /// as in [`RequestLabels`]
    pub route: &'static str,
    /// json or protobuf (as negotiated from Accept; discovery, OpenAPI and Status errors are
    /// always json), text for health
    pub encoding: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrometheusCallLabels {
    /// The backend's name (`default` for `[prometheus]`)
    pub backend: String,
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
pub struct ListenerLabels {
    /// secure (the metrics APIs over TLS) or metrics (plain `/metrics` and health)
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub listener: &'static str,
    /// total (`--max-connections`) or per_ip (`--max-connections-per-ip`)
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimeoutLabels {
    pub listener: &'static str,
    /// handshake (TLS), first_byte (nothing sent after the handshake or accept), idle (no
    /// request in flight for `--idle-timeout`)
    pub timeout: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailoverLabels {
    /// The backend that was unavailable
    pub backend: String,
    /// The backend tried next
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamRequestLabels {
    /// The upstream's name in `[[upstreams]]`
    pub upstream: String,
    /// Its HTTP status, 0 when it could not be reached or did not answer in time
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamResultLabels {
    pub upstream: String,
    /// success, or failure when a discovery document could not be read
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// invalid_metric_name or invalid_label_name
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Histogram>,
    pub responses: Family<ResponseLabels, Counter>,
    pub prometheus_calls: Family<PrometheusCallLabels, Histogram>,
    pub backend_failovers: Family<FailoverLabels, Counter>,
    pub backend_circuit_open: Family<BackendLabels, Gauge>,
    pub stale_answers: Family<BackendLabels, Counter>,
    pub cache_lookups: Family<ResultLabels, Counter>,
    pub rules_reloads: Family<ResultLabels, Counter>,
    pub rules_last_reload_success: Gauge,
    pub rules_last_reload_timestamp: Gauge<f64, AtomicU64>,
    pub rules_loaded: Gauge,
    pub discovered_metrics: Family<ApiLabels, Gauge>,
    pub discovery_runs: Family<ResultLabels, Counter>,
    pub discovery_on_miss: Counter,
    pub upstream_requests: Family<UpstreamRequestLabels, Histogram>,
    pub upstream_discovery_runs: Family<UpstreamResultLabels, Counter>,
    pub discovery_last_success_timestamp: Gauge<f64, AtomicU64>,
    pub values: Family<ValueLabels, Counter>,
    pub series_dropped: Family<ReasonLabels, Counter>,
    pub resource_metrics_omitted: Family<ReasonLabels, Counter>,
    pub cert_reloads: Family<ResultLabels, Counter>,
    pub open_connections: Family<ListenerLabels, Gauge>,
    pub rejected_connections: Family<RejectLabels, Counter>,
    pub connection_timeouts: Family<TimeoutLabels, Counter>,
    pub requests_inflight: Family<ListenerLabels, Gauge>,
    pub rejected_requests: Family<ListenerLabels, Counter>,
    /// authenticated, unauthenticated, error, throttled
    pub token_reviews: Family<ResultLabels, Counter>,
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
        let upstream_requests =
            Family::<UpstreamRequestLabels, Histogram>::new_with_constructor(latency);
        let m = Metrics {
            requests,
            responses: Family::default(),
            prometheus_calls,
            backend_failovers: Family::default(),
            backend_circuit_open: Family::default(),
            stale_answers: Family::default(),
            cache_lookups: Family::default(),
            rules_reloads: Family::default(),
            rules_last_reload_success: Gauge::default(),
            rules_last_reload_timestamp: Gauge::default(),
            rules_loaded: Gauge::default(),
            discovered_metrics: Family::default(),
            discovery_runs: Family::default(),
            discovery_on_miss: Counter::default(),
            upstream_requests,
            upstream_discovery_runs: Family::default(),
            discovery_last_success_timestamp: Gauge::default(),
            values: Family::default(),
            series_dropped: Family::default(),
            resource_metrics_omitted: Family::default(),
            cert_reloads: Family::default(),
            open_connections: Family::default(),
            rejected_connections: Family::default(),
            connection_timeouts: Family::default(),
            requests_inflight: Family::default(),
            rejected_requests: Family::default(),
            token_reviews: Family::default(),
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
            "responses",
            "API responses by route and body encoding: json or protobuf as the Accept header asked (discovery, OpenAPI and Status errors are always json), text for health",
            m.responses.clone(),
        );
        registry.register(
            "prometheus_request_duration_seconds",
            "Calls to each backend (Prometheus or a compatible engine) by call and outcome",
            m.prometheus_calls.clone(),
        );
        registry.register(
            "backend_failovers",
            "Calls that found a backend unavailable and went on to the next one of its failover list",
            m.backend_failovers.clone(),
        );
        registry.register(
            "backend_circuit_open",
            "1 while the backend's circuit breaker is open: calls to it fail at once (and fail over) until a trial call finds it back",
            m.backend_circuit_open.clone(),
        );
        registry.register(
            "stale_answers",
            "Answers served from the last good result because the backend was unavailable (rules with on_error = \"stale\")",
            m.stale_answers.clone(),
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
            "discovery_on_miss",
            "Discovery runs started early because a request asked for a metric discovery had not seen (at most one per cache.rediscover_on_miss)",
            m.discovery_on_miss.clone(),
        );
        registry.register(
            "upstream_request_duration_seconds",
            "Requests forwarded to an upstream metrics server ([[upstreams]]), by its HTTP status (0: unreachable or past its timeout)",
            m.upstream_requests.clone(),
        );
        registry.register(
            "upstream_discovery_runs",
            "Reads of an upstream's discovery documents, by result",
            m.upstream_discovery_runs.clone(),
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
            "resource_metrics_omitted",
            "Pods and nodes left out of metrics.k8s.io answers (a container or resource without a sample, under the rule's missing_containers policy) and usage samples that were NaN, infinite or negative, by reason",
            m.resource_metrics_omitted.clone(),
        );
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads by result",
            m.cert_reloads.clone(),
        );
        registry.register(
            "open_connections",
            "Connections open now, by listener (TLS handshakes included)",
            m.open_connections.clone(),
        );
        registry.register(
            "rejected_connections",
            "Connections closed at accept because a connection limit of the listener was reached: total or per_ip",
            m.rejected_connections.clone(),
        );
        registry.register(
            "connection_timeouts",
            "Connections closed by a deadline: handshake, first_byte or idle",
            m.connection_timeouts.clone(),
        );
        registry.register(
            "requests_inflight",
            "Requests being answered now (response still being sent included), health paths excluded",
            m.requests_inflight.clone(),
        );
        registry.register(
            "rejected_requests",
            "Requests answered 429 TooManyRequests because --max-requests-inflight was reached",
            m.rejected_requests.clone(),
        );
        registry.register(
            "token_reviews",
            "TokenReviews by result: authenticated, unauthenticated, error, or throttled (not sent: rate or concurrency limit)",
            m.token_reviews.clone(),
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

    /// The counters and gauges one listener updates (see [`crate::server::ServerOptions`]).
    pub fn listener(&self, listener: &'static str) -> ListenerMetrics {
        // One statement per handle: a family's guard lives to the end of its statement, and a
        // second get_or_create on the same family within it would deadlock.
        let labels = ListenerLabels { listener };
        let timeout = |timeout| {
            let handle = self
                .connection_timeouts
                .get_or_create(&TimeoutLabels { listener, timeout })
                .clone();
            handle
        };
        let rejected = |limit| {
            let handle = self
                .rejected_connections
                .get_or_create(&RejectLabels { listener, limit })
                .clone();
            handle
        };
        let open_connections = self.open_connections.get_or_create(&labels).clone();
        let requests_inflight = self.requests_inflight.get_or_create(&labels).clone();
        let rejected_requests = self.rejected_requests.get_or_create(&labels).clone();
        ListenerMetrics {
            open_connections,
            rejected_connections: rejected("total"),
            rejected_connections_per_ip: rejected("per_ip"),
            handshake_timeouts: timeout("handshake"),
            first_byte_timeouts: timeout("first_byte"),
            idle_timeouts: timeout("idle"),
            requests_inflight,
            rejected_requests,
        }
    }

    pub fn observe_request(&self, route: &str, code: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                code,
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn count_response(&self, route: &'static str, encoding: &'static str) {
        self.responses
            .get_or_create(&ResponseLabels { route, encoding })
            .inc();
    }

    pub fn observe_prometheus(
        &self,
        backend: &str,
        call: &'static str,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        self.prometheus_calls
            .get_or_create(&PrometheusCallLabels {
                backend: backend.to_string(),
                call,
                outcome,
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn observe_upstream_request(&self, upstream: &str, code: u16, elapsed: Duration) {
        self.upstream_requests
            .get_or_create(&UpstreamRequestLabels {
                upstream: upstream.to_string(),
                code,
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn count_upstream_discovery(&self, upstream: &str, result: &'static str) {
        self.upstream_discovery_runs
            .get_or_create(&UpstreamResultLabels {
                upstream: upstream.to_string(),
                result,
            })
            .inc();
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

/// One listener's handles into [`Metrics`]; cheap to clone (they share the registered values).
/// The default is a set registered nowhere, for servers run without metrics (tests).
#[derive(Clone, Debug, Default)]
pub struct ListenerMetrics {
    pub open_connections: Gauge,
    pub rejected_connections: Counter,
    pub rejected_connections_per_ip: Counter,
    pub handshake_timeouts: Counter,
    pub first_byte_timeouts: Counter,
    pub idle_timeouts: Counter,
    pub requests_inflight: Gauge,
    pub rejected_requests: Counter,
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
        m.count_response("custom_wildcard", "protobuf");
        let text = m.encode();
        assert!(
            text.contains("kube_metrics_bridge_responses_total{route=\"custom_wildcard\",encoding=\"protobuf\"} 1"),
            "{text}"
        );
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

    #[test]
    fn listener_handles_update_the_registered_families() {
        let m = Metrics::new();
        let secure = m.listener("secure");
        secure.open_connections.inc();
        secure.rejected_connections.inc();
        secure.first_byte_timeouts.inc();
        m.listener("secure").rejected_requests.inc();
        let text = m.encode();
        for line in [
            "kube_metrics_bridge_open_connections{listener=\"secure\"} 1",
            "kube_metrics_bridge_rejected_connections_total{listener=\"secure\",limit=\"total\"} 1",
            "kube_metrics_bridge_rejected_connections_total{listener=\"secure\",limit=\"per_ip\"} 0",
            "kube_metrics_bridge_connection_timeouts_total{listener=\"secure\",timeout=\"first_byte\"} 1",
            "kube_metrics_bridge_connection_timeouts_total{listener=\"secure\",timeout=\"idle\"} 0",
            "kube_metrics_bridge_rejected_requests_total{listener=\"secure\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
