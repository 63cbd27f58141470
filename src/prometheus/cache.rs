//! The value cache: query results keyed by the backend and the rendered PromQL, kept for the
//! configured TTL.
//!
//! Every HPA in a namespace that asks about the same metric renders the same query, so one
//! Prometheus round trip serves them all; concurrent misses for one query are coalesced
//! into a single call (moka's `try_get_with`). Errors are never cached. The same PromQL on two
//! backends is two entries: they hold different data. An answer that came from a failover
//! backend is kept under the rule's own backend, so the next requests do not wait on the dead
//! one again within the TTL.
//!
//! Bounded by bytes as well as by entries: each entry weighs its estimated size (key, labels
//! and values), and the cache holds at most `cache.max_bytes` of them and at most
//! `cache.max_entries`. A few huge answers (a broad query over a big namespace) evict small
//! ones instead of growing memory past the budget; an answer larger than the whole budget
//! is served to the requests waiting for it and not kept.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;

use super::backends::Backends;
use super::client::{PrometheusError, QueryResult};
use crate::config::ByteSize;
use crate::metrics::{BackendLabels, Metrics, ValueLabels};

/// One query as a rule asks for it.
#[derive(Debug, Clone, Copy)]
pub struct RuleQuery<'a> {
    /// The rule's backend.
    pub backend: &'a str,
    pub promql: &'a str,
    /// The request's namespace: the tenant of a per-namespace backend (ignored by others).
    pub namespace: Option<&'a str>,
    /// The rule's `on_error = "stale"` bound.
    pub max_stale: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct QueryCache {
    backends: Arc<Backends>,
    values: Cache<String, Arc<QueryResult>>,
    /// The last good answer of each query of a rule with `on_error = "stale"`, kept for the
    /// longest `max_stale`; None when no rule has that policy.
    last_good: Option<Cache<String, (Arc<QueryResult>, Instant)>>,
    metrics: Arc<Metrics>,
}

/// The weight of one entry: its estimated bytes, but never less than `max_bytes / max_entries`,
/// so that a total weight within `max_bytes` also means at most `max_entries` entries.
fn weight(key: &str, value: &QueryResult, floor: u64) -> u32 {
    let bytes = (key.len() + value.estimated_bytes()) as u64;
    u32::try_from(bytes.max(floor)).unwrap_or(u32::MAX)
}

/// The moka cache with both bounds and the TTL.
fn build_values(
    ttl: Duration,
    max_entries: u64,
    max_bytes: ByteSize,
) -> Cache<String, Arc<QueryResult>> {
    let floor = (max_bytes.bytes() / max_entries.max(1)).max(1);
    Cache::builder()
        .max_capacity(max_bytes.bytes())
        .weigher(move |key: &String, value: &Arc<QueryResult>| weight(key, value, floor))
        .time_to_live(ttl)
        .build()
}

/// The last-good store: the same bounds as the value cache (a budget of its own), kept as
/// long as the longest `max_stale`.
fn build_last_good(
    keep: Duration,
    max_entries: u64,
    max_bytes: ByteSize,
) -> Cache<String, (Arc<QueryResult>, Instant)> {
    let floor = (max_bytes.bytes() / max_entries.max(1)).max(1);
    Cache::builder()
        .max_capacity(max_bytes.bytes())
        .weigher(
            move |key: &String, (value, _): &(Arc<QueryResult>, Instant)| weight(key, value, floor),
        )
        .time_to_live(keep)
        .build()
}

impl QueryCache {
    pub fn new(
        backends: Arc<Backends>,
        ttl: Duration,
        max_entries: u64,
        max_bytes: ByteSize,
        keep_last_good: Option<Duration>,
        metrics: Arc<Metrics>,
    ) -> Self {
        // A zero TTL still coalesces concurrent identical queries; results expire at once.
        let ttl = ttl.max(Duration::from_millis(1));
        QueryCache {
            backends,
            values: build_values(ttl, max_entries, max_bytes),
            last_good: keep_last_good.map(|keep| build_last_good(keep, max_entries, max_bytes)),
            metrics,
        }
    }

    pub fn backends(&self) -> &Arc<Backends> {
        &self.backends
    }

    /// The result of a rule's query, from the cache or from one call (with failover). With
    /// `max_stale` (the rule's `on_error = "stale"`), an unavailable backend is answered with
    /// the last good result if it is at most that old.
    pub async fn query(&self, ask: RuleQuery<'_>) -> Result<Arc<QueryResult>, PrometheusError> {
        let RuleQuery {
            backend,
            promql,
            max_stale,
            ..
        } = ask;
        // A per-namespace backend answers each namespace (tenant) with its own data.
        let tenant = ask
            .namespace
            .filter(|_| self.backends.is_per_namespace(backend));
        // Backend names and namespaces are DNS labels (no newline), so this key is
        // unambiguous.
        let key = format!("{backend}\n{}\n{promql}", tenant.unwrap_or_default());
        if let Some(hit) = self.values.get(&key).await {
            self.metrics.count(&self.metrics.cache_lookups, "hit");
            return Ok(hit);
        }
        let store = self.last_good.as_ref().filter(|_| max_stale.is_some());
        match (
            self.fetch(backend, promql, tenant, key.clone()).await,
            store,
            max_stale,
        ) {
            (Ok(fresh), Some(store), _) => {
                store.insert(key, (fresh.clone(), Instant::now())).await;
                Ok(fresh)
            }
            (Err(e), Some(store), Some(max_stale)) if e.is_unavailable() => {
                match store.get(&key).await {
                    Some((last, at)) if at.elapsed() <= max_stale => {
                        self.metrics
                            .stale_answers
                            .get_or_create(&BackendLabels {
                                backend: backend.to_string(),
                            })
                            .inc();
                        tracing::warn!(%backend, promql = %promql, age_s = at.elapsed().as_secs(), max_stale_s = max_stale.as_secs(), error = %e, "backend unavailable; serving the last good answer (on_error = \"stale\")");
                        Ok(last)
                    }
                    // Kept no longer than the longest max_stale: gone means too old too.
                    _ => {
                        tracing::warn!(%backend, promql = %promql, max_stale_s = max_stale.as_secs(), error = %e, "backend unavailable and no answer younger than max_stale to serve");
                        Err(e)
                    }
                }
            }
            (result, _, _) => result,
        }
    }

    /// A miss: one call (with failover) shared by every concurrent caller of the key.
    async fn fetch(
        &self,
        backend: &str,
        promql: &str,
        tenant: Option<&str>,
        key: String,
    ) -> Result<Arc<QueryResult>, PrometheusError> {
        self.metrics.count(&self.metrics.cache_lookups, "miss");
        let backends = self.backends.clone();
        let metrics = self.metrics.clone();
        let backend = backend.to_string();
        let query = promql.to_string();
        let tenant = tenant.map(str::to_string);
        self.values
            .try_get_with(key, async move {
                let started = Instant::now();
                let result = backends
                    .query(&backend, &query, tenant.as_deref(), &metrics)
                    .await;
                match &result {
                    Ok(_) => tracing::debug!(%backend, promql = %query, elapsed_ms = started.elapsed().as_millis() as u64, "prometheus query"),
                    Err(e) => tracing::warn!(%backend, promql = %query, error = %e, "prometheus query failed"),
                }
                let answer = result?;
                if answer.timestamps_clamped > 0 {
                    metrics
                        .values
                        .get_or_create(&ValueLabels {
                            kind: "timestamp_clamped",
                        })
                        .inc_by(answer.timestamps_clamped as u64);
                    tracing::warn!(%backend, promql = %query, samples = answer.timestamps_clamped, "sample times before 1970 or after year 9999 clamped");
                }
                Ok(Arc::new(answer.result))
            })
            .await
            .map_err(|e: Arc<PrometheusError>| (*e).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::Sample;

    fn answer(pods: usize, label_bytes: usize) -> Arc<QueryResult> {
        Arc::new(QueryResult::Vector(
            (0..pods)
                .map(|i| Sample {
                    labels: [
                        ("pod".to_string(), format!("web-{i}")),
                        ("padding".to_string(), "x".repeat(label_bytes)),
                    ]
                    .into(),
                    timestamp: 1.0,
                    value: 1.0,
                })
                .collect(),
        ))
    }

    /// Before, the cache counted entries only: 10,000 answers of any size. Now 100 answers of
    /// ~100 KiB each stay within a 1 MiB budget.
    #[tokio::test]
    async fn bounded_by_bytes() {
        let cache = build_values(Duration::from_secs(60), 10_000, ByteSize::mib(1));
        let big = answer(100, 1000);
        let one = weight("q", &big, 0) as u64;
        assert!(one > 100_000, "{one}");
        for i in 0..100 {
            cache.insert(format!("query {i}"), big.clone()).await;
        }
        cache.run_pending_tasks().await;
        assert!(
            cache.weighted_size() <= 1 << 20,
            "{}",
            cache.weighted_size()
        );
        assert!(cache.entry_count() <= 10, "{}", cache.entry_count());
        assert!(cache.entry_count() >= 1, "the budget still holds some");
    }

    #[tokio::test]
    async fn still_bounded_by_entries() {
        let cache = build_values(Duration::from_secs(60), 10, ByteSize::mib(64));
        let small = answer(1, 1);
        for i in 0..100 {
            cache.insert(format!("query {i}"), small.clone()).await;
        }
        cache.run_pending_tasks().await;
        assert!(cache.entry_count() <= 10, "{}", cache.entry_count());
    }

    #[tokio::test]
    async fn an_answer_larger_than_the_budget_is_not_kept() {
        let cache = build_values(Duration::from_secs(60), 10_000, ByteSize(64 * 1024));
        cache.insert("small".into(), answer(1, 1)).await;
        cache.insert("huge".into(), answer(100, 1000)).await;
        cache.run_pending_tasks().await;
        assert!(cache.get("huge").await.is_none());
        assert!(cache.get("small").await.is_some());
    }
}
