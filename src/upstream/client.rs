//! One upstream metrics API server: its HTTPS client (the front-proxy client certificate,
//! its CA), its discovery documents fetched and kept, and requests forwarded to it with the
//! caller's identity.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Response, StatusCode};
use serde::Deserialize;

use crate::api::status::ApiError;
use crate::auth::headers::front_proxy_headers;
use crate::auth::user::{User, AUTHENTICATED};
use crate::config::UpstreamConfig;
use crate::http_client::{ReloadingClient, TlsFiles};
use crate::metrics::Metrics;
use crate::request::{CustomVersion, CUSTOM_GROUP, EXTERNAL_GROUP};
use crate::response::discovery::PLACEHOLDER_METRIC;

/// Who the bridge says it is when it reads an upstream's discovery documents (no caller is
/// behind those calls): the name kube-apiserver's aggregator uses for its own discovery
/// calls, in `system:authenticated` only, which default RBAC (`system:discovery`) lets read
/// `/apis/*`.
pub const DISCOVERY_USER: &str = "system:kube-aggregator";

/// A group version an upstream may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UpstreamApi {
    Custom(CustomVersion),
    External,
}

impl UpstreamApi {
    pub fn parse(text: &str) -> Option<UpstreamApi> {
        match text {
            "custom.metrics.k8s.io/v1beta1" => Some(UpstreamApi::Custom(CustomVersion::V1beta1)),
            "custom.metrics.k8s.io/v1beta2" => Some(UpstreamApi::Custom(CustomVersion::V1beta2)),
            "external.metrics.k8s.io/v1beta1" => Some(UpstreamApi::External),
            _ => None,
        }
    }

    fn path(self) -> String {
        match self {
            UpstreamApi::Custom(v) => format!("apis/{CUSTOM_GROUP}/{}", v.as_str()),
            UpstreamApi::External => format!("apis/{EXTERNAL_GROUP}/v1beta1"),
        }
    }
}

impl std::fmt::Display for UpstreamApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.path().trim_start_matches("apis/"))
    }
}

/// What an upstream lists for one group version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiListing {
    /// Custom: `resource -> (namespaced, metrics)`; external: `"" -> (true, metrics)`.
    pub resources: BTreeMap<String, (bool, BTreeSet<String>)>,
}

impl ApiListing {
    pub fn has(&self, resource: &str, metric: &str) -> bool {
        self.resources
            .get(resource)
            .is_some_and(|(_, metrics)| metrics.contains(metric))
    }

    /// Reads an `APIResourceList`: custom entries are `<resource>/<metric>`, external ones
    /// `<metric>`. A bridge's own placeholder (listed before its first discovery) is not a
    /// metric.
    fn parse(api: UpstreamApi, body: &[u8]) -> Result<ApiListing, String> {
        #[derive(Deserialize)]
        struct ResourceList {
            #[serde(default)]
            resources: Vec<Resource>,
        }
        #[derive(Deserialize)]
        struct Resource {
            name: String,
            #[serde(default)]
            namespaced: bool,
        }
        let list: ResourceList =
            serde_json::from_slice(body).map_err(|e| format!("not an APIResourceList: {e}"))?;
        let mut resources: BTreeMap<String, (bool, BTreeSet<String>)> = BTreeMap::new();
        for r in list.resources {
            let (resource, metric) = match api {
                UpstreamApi::External => (String::new(), r.name),
                UpstreamApi::Custom(_) => match r.name.split_once('/') {
                    Some((resource, metric)) if !resource.is_empty() && !metric.is_empty() => {
                        (resource.to_string(), metric.to_string())
                    }
                    _ => continue,
                },
            };
            if metric == PLACEHOLDER_METRIC {
                continue;
            }
            resources
                .entry(resource)
                .or_insert_with(|| (r.namespaced, BTreeSet::new()))
                .1
                .insert(metric);
        }
        Ok(ApiListing { resources })
    }
}

/// The last discovery documents read from an upstream, per group version. A group version
/// whose fetch failed keeps what it listed before.
#[derive(Debug, Clone, Default)]
pub struct UpstreamListing {
    pub apis: BTreeMap<UpstreamApi, ApiListing>,
}

pub struct Upstream {
    pub name: String,
    /// The URL with a trailing `/`, so API paths join below a prefix.
    base: reqwest::Url,
    pub apis: Vec<UpstreamApi>,
    /// None for `explain`, which only routes (its TLS files may not exist where it runs).
    http: Option<ReloadingClient>,
    timeout: Duration,
    pub discovery_interval: Duration,
    max_response_bytes: usize,
    listing: ArcSwap<UpstreamListing>,
    /// Bumped when the listing changes, so merged documents are rendered again.
    generation: AtomicU64,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// The client for `cfg` (already checked by [`crate::rules::upstreams`]).
    pub fn new(cfg: &UpstreamConfig, metrics: Arc<Metrics>) -> anyhow::Result<Upstream> {
        use anyhow::Context;
        let place = format!("upstream {:?}", cfg.name);
        let files = TlsFiles {
            ca_file: cfg.ca_file.clone(),
            client_cert_file: cfg.client_cert_file.clone(),
            client_key_file: cfg.client_key_file.clone(),
        };
        let (timeout, insecure) = (cfg.timeout, cfg.insecure_skip_verify);
        let http = ReloadingClient::new(place.clone(), files.clone(), move || {
            let builder = reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(3)))
                .pool_idle_timeout(Duration::from_secs(60))
                .danger_accept_invalid_certs(insecure)
                .user_agent(concat!("kube-metrics-bridge/", env!("CARGO_PKG_VERSION")));
            files
                .apply(builder, &place)?
                .build()
                .with_context(|| format!("{place}: building the HTTP client"))
        })?;
        Ok(Upstream {
            http: Some(http),
            ..Upstream::unconnected(cfg, metrics)?
        })
    }

    /// Where requests would go, without a client: nothing can be sent.
    pub fn unconnected(cfg: &UpstreamConfig, metrics: Arc<Metrics>) -> anyhow::Result<Upstream> {
        use anyhow::Context;
        let mut base = reqwest::Url::parse(&cfg.url)
            .with_context(|| format!("upstream {:?}: url {:?}", cfg.name, cfg.url))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(Upstream {
            name: cfg.name.clone(),
            base,
            apis: cfg
                .apis
                .iter()
                .filter_map(|a| UpstreamApi::parse(a))
                .collect(),
            http: None,
            timeout: cfg.timeout,
            discovery_interval: cfg.discovery_interval,
            max_response_bytes: usize::try_from(cfg.max_response_bytes.bytes())
                .unwrap_or(usize::MAX),
            listing: ArcSwap::from_pointee(UpstreamListing::default()),
            generation: AtomicU64::new(0),
            metrics,
        })
    }

    pub fn serves(&self, api: UpstreamApi) -> bool {
        self.apis.contains(&api)
    }

    pub fn listing(&self) -> Arc<UpstreamListing> {
        self.listing.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether its last discovery documents list `metric` (for `resource`; external: "").
    pub fn lists(&self, api: UpstreamApi, resource: &str, metric: &str) -> bool {
        self.listing
            .load()
            .apis
            .get(&api)
            .is_some_and(|l| l.has(resource, metric))
    }

    #[cfg(test)]
    pub fn set_listing_for_test(&self, listing: UpstreamListing) {
        self.listing.store(Arc::new(listing));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Reads every group version's discovery document; keeps the old listing of one that
    /// fails. Counted in `kube_metrics_bridge_upstream_discovery_runs_total`.
    pub async fn refresh(&self) {
        let mut next = (*self.listing.load_full()).clone();
        let mut failed = false;
        for &api in &self.apis {
            let identity = User::new(DISCOVERY_USER, vec![AUTHENTICATED.to_string()]);
            let fetched = self
                .send_method(
                    &Method::GET,
                    &format!("/{}", api.path()),
                    "",
                    &identity,
                    None,
                )
                .await
                .and_then(|(status, _, body)| {
                    if status.is_success() {
                        ApiListing::parse(api, &body)
                    } else {
                        Err(format!(
                            "HTTP {status}: {}",
                            String::from_utf8_lossy(&body[..body.len().min(300)])
                        ))
                    }
                });
            match fetched {
                Ok(listing) => {
                    next.apis.insert(api, listing);
                }
                Err(e) => {
                    failed = true;
                    tracing::warn!(upstream = %self.name, %api, error = %e, "reading the upstream's discovery document failed; keeping what it listed before");
                }
            }
        }
        let result = if failed { "failure" } else { "success" };
        self.metrics.count_upstream_discovery(&self.name, result);
        let current = self.listing.load_full();
        if current.apis != next.apis {
            for (api, l) in &next.apis {
                let n: usize = l.resources.values().map(|(_, m)| m.len()).sum();
                tracing::info!(upstream = %self.name, %api, metrics = n, "upstream discovery changed");
            }
            self.listing.store(Arc::new(next));
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Sends one GET (or HEAD) to the upstream as `user`; the status, Content-Type and
    /// body (at most `max_response_bytes`), or why not.
    async fn send_method(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        user: &User,
        accept: Option<&http::HeaderValue>,
    ) -> Result<(StatusCode, Option<http::HeaderValue>, Bytes), String> {
        let mut url = self
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|e| format!("url: {e}"))?;
        // The query goes on as the caller wrote it (the aggregator already re-encoded it).
        url.set_query((!query.is_empty()).then_some(query));
        let mut headers = HeaderMap::new();
        for (name, value) in front_proxy_headers(user) {
            headers.append(name, value);
        }
        if let Some(accept) = accept {
            headers.insert(http::header::ACCEPT, accept.clone());
        }
        let http = self.http.as_ref().ok_or("no client (explain)")?;
        let mut response = http
            .get()
            .request(method.clone(), url)
            .headers(headers)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        let content_type = response.headers().get(http::header::CONTENT_TYPE).cloned();
        if response
            .content_length()
            .is_some_and(|n| n > self.max_response_bytes as u64)
        {
            return Err(format!(
                "its answer is larger than max_response_bytes ({} bytes)",
                self.max_response_bytes
            ));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(format!(
                    "its answer is larger than max_response_bytes ({} bytes)",
                    self.max_response_bytes
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, content_type, body.freeze()))
    }

    /// Forwards a caller's request and returns the upstream's answer unchanged (status,
    /// Content-Type, body): its errors are its own Status. Only when it cannot be reached,
    /// does not answer in time or answers too much is the Status ours (503).
    pub async fn forward(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        user: &User,
        accept: Option<&http::HeaderValue>,
    ) -> Result<Response<Bytes>, ApiError> {
        let started = Instant::now();
        let result = self.send_method(method, path, query, user, accept).await;
        let code = match &result {
            Ok((status, _, _)) => status.as_u16(),
            Err(_) => 0,
        };
        self.metrics
            .observe_upstream_request(&self.name, code, started.elapsed());
        match result {
            Ok((status, content_type, body)) => {
                let mut r = Response::new(body);
                *r.status_mut() = status;
                if let Some(ct) = content_type {
                    r.headers_mut().insert(http::header::CONTENT_TYPE, ct);
                }
                Ok(r)
            }
            Err(e) => {
                tracing::warn!(upstream = %self.name, %path, error = %e, "forwarding to the upstream failed");
                Err(ApiError::new(
                    503,
                    "ServiceUnavailable",
                    format!(
                        "the metrics server this metric is forwarded to ({}) is unavailable",
                        self.name
                    ),
                ))
            }
        }
    }
}

/// A reqwest error with its causes, for the log.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_timeout() {
        text.push_str(" (deadline)");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_custom_and_external_resource_lists() {
        let custom = br#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"custom.metrics.k8s.io/v1beta1","resources":[
            {"name":"pods/http_requests","singularName":"","namespaced":true,"kind":"MetricValueList","verbs":["get"]},
            {"name":"namespaces/http_requests","singularName":"","namespaced":false,"kind":"MetricValueList","verbs":["get"]},
            {"name":"jobs.batch/queue","namespaced":true},
            {"name":"namespaces/none_discovered_yet","namespaced":false},
            {"name":"broken"}]}"#;
        let l =
            ApiListing::parse(UpstreamApi::Custom(CustomVersion::V1beta1), custom).expect("parses");
        assert!(l.has("pods", "http_requests"));
        assert!(l.has("namespaces", "http_requests"));
        assert!(l.has("jobs.batch", "queue"));
        assert!(!l.has("namespaces", PLACEHOLDER_METRIC));
        assert!(!l.resources["namespaces"].0);
        assert_eq!(l.resources.len(), 3);
        let external = br#"{"resources":[{"name":"queue_depth","namespaced":true}]}"#;
        let l = ApiListing::parse(UpstreamApi::External, external).expect("parses");
        assert!(l.has("", "queue_depth"));
        assert!(ApiListing::parse(UpstreamApi::External, b"<html>").is_err());
        // prometheus-adapter lists nothing as `"resources": []` (or leaves it out).
        let empty = ApiListing::parse(UpstreamApi::External, br#"{"kind":"APIResourceList"}"#);
        assert_eq!(empty, Ok(ApiListing::default()));
    }

    #[test]
    fn api_names() {
        for text in crate::config::UPSTREAM_APIS {
            let api = UpstreamApi::parse(text).expect("known");
            assert_eq!(api.to_string(), text);
        }
        assert_eq!(UpstreamApi::parse("metrics.k8s.io/v1beta1"), None);
    }
}
