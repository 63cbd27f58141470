//! The value cache: query results keyed by the rendered PromQL, kept for the configured TTL.
//!
//! Every HPA in a namespace that asks about the same metric renders the same query, so one
//! Prometheus round trip serves them all; concurrent misses for one query are coalesced
//! into a single call (moka's `try_get_with`). Errors are never cached.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;

use super::client::{PrometheusClient, PrometheusError, QueryResult};
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct QueryCache {
    client: Arc<PrometheusClient>,
    values: Cache<String, Arc<QueryResult>>,
    metrics: Arc<Metrics>,
}

impl QueryCache {
    pub fn new(
        client: Arc<PrometheusClient>,
        ttl: Duration,
        max_entries: u64,
        metrics: Arc<Metrics>,
    ) -> Self {
        // A zero TTL still coalesces concurrent identical queries; results expire at once.
        let ttl = ttl.max(Duration::from_millis(1));
        QueryCache {
            client,
            values: Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .build(),
            metrics,
        }
    }

    pub fn client(&self) -> &Arc<PrometheusClient> {
        &self.client
    }

    /// The result of `promql`, from the cache or from one Prometheus call.
    pub async fn query(&self, promql: &str) -> Result<Arc<QueryResult>, PrometheusError> {
        if let Some(hit) = self.values.get(promql).await {
            self.metrics.count(&self.metrics.cache_lookups, "hit");
            return Ok(hit);
        }
        self.metrics.count(&self.metrics.cache_lookups, "miss");
        let client = self.client.clone();
        let metrics = self.metrics.clone();
        let query = promql.to_string();
        self.values
            .try_get_with(query.clone(), async move {
                let started = Instant::now();
                let result = client.query(&query).await;
                let outcome = match &result {
                    Ok(_) => "ok",
                    Err(e) => e.kind(),
                };
                metrics.observe_prometheus("query", outcome, started.elapsed());
                match &result {
                    Ok(_) => tracing::debug!(promql = %query, elapsed_ms = started.elapsed().as_millis() as u64, "prometheus query"),
                    Err(e) => tracing::warn!(promql = %query, error = %e, "prometheus query failed"),
                }
                result.map(Arc::new)
            })
            .await
            .map_err(|e: Arc<PrometheusError>| (*e).clone())
    }
}
