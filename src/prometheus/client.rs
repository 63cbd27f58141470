//! The Prometheus HTTP API client: `/api/v1/query` and `/api/v1/series`, every call under the
//! configured deadline, errors sorted into "unavailable" (503 for clients) and "the query
//! failed" (500), so a request never hangs and never leaks Prometheus' details.
//!
//! Prometheus' answers are untrusted input too: bodies are capped at
//! `prometheus.max_response_bytes` (checked against `Content-Length` first, then counted while
//! reading), sample times are clamped to what RFC 3339 can write, and the series answer is
//! decoded as a stream into a [`SeriesSet`] that keeps only valid names and label names, so
//! discovery's memory follows the distinct names, not the number of series (there the limit
//! bounds what is kept, not the body; see [`super::series`]).

use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::StatusCode;
use serde::Deserialize;

use super::auth::Auth;
use super::series::{decode_series, Decoded, SeriesSet};
use crate::config::{BackendConfig, ByteSize, DiscoveryApi, HttpMethod};
use crate::http_client::{ReloadingClient, TlsFiles};
use crate::response::MAX_TIMESTAMP;

/// One sample of an instant vector (or a scalar, with no labels).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    /// Unix seconds, as Prometheus reports it.
    pub timestamp: f64,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum QueryResult {
    Vector(Vec<Sample>),
    Scalar(Sample),
}

impl QueryResult {
    pub fn samples(&self) -> &[Sample] {
        match self {
            QueryResult::Vector(v) => v,
            QueryResult::Scalar(s) => std::slice::from_ref(s),
        }
    }

    /// Roughly the heap and inline bytes this result holds, for the cache's byte budget.
    pub fn estimated_bytes(&self) -> usize {
        const NODE: usize = 16; // B-tree bookkeeping per entry, roughly
        let sample = |s: &Sample| {
            std::mem::size_of::<Sample>()
                + s.labels
                    .iter()
                    .map(|(k, v)| 2 * std::mem::size_of::<String>() + k.len() + v.len() + NODE)
                    .sum::<usize>()
        };
        std::mem::size_of::<QueryResult>() + self.samples().iter().map(sample).sum::<usize>()
    }
}

/// An instant query's answer with what the client had to correct in it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryAnswer {
    pub result: QueryResult,
    /// Samples whose time was before 1970 or after 9999-12-31T23:59:59Z and was clamped.
    pub timestamps_clamped: usize,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PrometheusError {
    /// Could not get an answer: connection refused, deadline passed, 5xx, 429.
    #[error("prometheus unavailable: {0}")]
    Unavailable(String),
    /// Prometheus answered that the query is wrong or failed to run.
    #[error("prometheus rejected the query ({kind}): {message}")]
    Query { kind: String, message: String },
    /// Prometheus (or something in its place) answered with something we cannot read.
    #[error("unreadable answer from prometheus: {0}")]
    Malformed(String),
    /// The answer was larger than `prometheus.max_response_bytes`; it was not read on. Not
    /// transient: the same query gets the same answer until the rule or the limit changes.
    #[error("answer from prometheus is larger than prometheus.max_response_bytes ({limit}){}", match .declared { Some(n) => format!(": Content-Length is {n} bytes"), None => String::new() })]
    TooLarge {
        limit: ByteSize,
        /// The size the answer announced, when it did.
        declared: Option<u64>,
    },
    /// A series answer named more distinct series names and label names than
    /// `prometheus.max_response_bytes` holds (the answer itself is streamed, never held).
    /// Not transient either: the query is broader than meant, or the backend sends garbage.
    #[error("series answer from prometheus names more distinct series names and label names than prometheus.max_response_bytes ({limit}) holds")]
    TooManyNames { limit: ByteSize },
}

impl PrometheusError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PrometheusError::Unavailable(_) => "unavailable",
            PrometheusError::Query { .. } => "query",
            PrometheusError::Malformed(_) => "malformed",
            PrometheusError::TooLarge { .. } | PrometheusError::TooManyNames { .. } => "too_large",
        }
    }
}

pub struct PrometheusClient {
    /// The backend's name, for metrics and logs.
    name: String,
    /// The HTTP client, rebuilt when a TLS file (CA, client certificate or key) changes.
    http: ReloadingClient,
    base: reqwest::Url,
    method: HttpMethod,
    timeout: Duration,
    discovery_timeout: Duration,
    auth: Auth,
    discovery_api: DiscoveryApi,
    /// Set when `discovery_api = "auto"` found the label API unusable: later listings go to
    /// the series API at once (until the next reload builds a new client).
    label_api_failed: std::sync::atomic::AtomicBool,
    /// Whether calls need the request's namespace (decided once: it is asked per request).
    per_namespace: bool,
    /// Headers and query parameters that hold `<<.Namespace>>`, rendered per call.
    tenant_headers: Vec<(HeaderName, String)>,
    query_params: Vec<(String, String)>,
    max_response_bytes: ByteSize,
}

impl std::fmt::Debug for PrometheusClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the config: a proxy_url may hold credentials.
        f.debug_struct("PrometheusClient")
            .field("name", &self.name)
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// The TLS files of a backend.
fn tls_files(cfg: &BackendConfig) -> TlsFiles {
    TlsFiles {
        ca_file: cfg.ca_file.clone(),
        client_cert_file: cfg.client_cert_file.clone(),
        client_key_file: cfg.client_key_file.clone(),
    }
}

/// The reqwest client for a backend: default headers, deadlines, TLS and proxy.
fn build_http(cfg: &BackendConfig, place: &str) -> anyhow::Result<reqwest::Client> {
    use anyhow::Context;
    let mut headers = HeaderMap::new();
    // Per-namespace headers are added per call.
    let fixed = cfg
        .headers
        .iter()
        .filter(|(_, v)| !v.contains(crate::rules::backends::NAMESPACE_VARIABLE));
    for (header, value) in fixed {
        headers.insert(
            HeaderName::from_bytes(header.as_bytes())
                .with_context(|| format!("{place}: headers: {header:?}"))?,
            HeaderValue::from_str(value).with_context(|| format!("{place}: headers.{header}"))?,
        );
    }
    let mut builder = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(Duration::from_secs(3)))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("kube-metrics-bridge/", env!("CARGO_PKG_VERSION")));
    builder = tls_files(cfg).apply(builder, place)?;
    if cfg.insecure_skip_verify {
        builder = builder.danger_accept_invalid_certs(true);
    }
    if let Some(proxy) = &cfg.proxy_url {
        // The URL may carry credentials: the error names the field, not the value.
        builder = builder.proxy(
            reqwest::Proxy::all(proxy)
                .map_err(|_| anyhow::anyhow!("{place}: proxy_url is not a proxy URL"))?,
        );
    }
    builder
        .build()
        .with_context(|| format!("{place}: building the HTTP client"))
}

impl PrometheusClient {
    /// A client for one backend (named as in a [`crate::rules::backends::BackendSet`]).
    pub fn new(cfg: &BackendConfig) -> anyhow::Result<Self> {
        use anyhow::Context;
        let name = crate::rules::backends::name_of(cfg).to_string();
        let place = format!("backend {name:?}");
        let mut base =
            reqwest::Url::parse(&cfg.url).with_context(|| format!("{place}: url {:?}", cfg.url))?;
        // Keep a path prefix (Thanos/Mimir often live under one) and join API paths below it.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = {
            let cfg = cfg.clone();
            let place = place.clone();
            ReloadingClient::new(place.clone(), tls_files(&cfg), move || {
                build_http(&cfg, &place)
            })?
        };
        let mut tenant_headers = Vec::new();
        for (header, value) in &cfg.headers {
            if value.contains(crate::rules::backends::NAMESPACE_VARIABLE) {
                tenant_headers.push((
                    HeaderName::from_bytes(header.as_bytes())
                        .with_context(|| format!("{place}: headers: {header:?}"))?,
                    value.clone(),
                ));
            }
        }
        Ok(PrometheusClient {
            name,
            http,
            base,
            method: cfg.method,
            timeout: cfg.timeout,
            discovery_timeout: cfg.discovery_timeout,
            auth: Auth::new(cfg),
            discovery_api: cfg.discovery_api,
            label_api_failed: std::sync::atomic::AtomicBool::new(false),
            per_namespace: crate::rules::backends::is_per_namespace(cfg),
            tenant_headers,
            query_params: cfg
                .query_params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            max_response_bytes: cfg.max_response_bytes,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn base_url(&self) -> &reqwest::Url {
        &self.base
    }

    /// The discovery API to use now: `auto` becomes `series` once the label API failed.
    pub fn discovery_api(&self) -> DiscoveryApi {
        use std::sync::atomic::Ordering;
        match self.discovery_api {
            DiscoveryApi::Auto if self.label_api_failed.load(Ordering::Relaxed) => {
                DiscoveryApi::Series
            }
            other => other,
        }
    }

    /// `auto` found the label API unusable on this backend.
    pub fn label_api_failed(&self) {
        self.label_api_failed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether calls need the request's namespace (`<<.Namespace>>` in headers or params).
    pub fn is_per_namespace(&self) -> bool {
        self.per_namespace
    }

    /// An instant query at the current time; `tenant` is the request's namespace, for a
    /// per-namespace backend.
    pub async fn query(
        &self,
        promql: &str,
        tenant: Option<&str>,
    ) -> Result<QueryAnswer, PrometheusError> {
        let timeout = format!("{}ms", self.timeout.as_millis());
        let response = self
            .send(
                "api/v1/query",
                &[("query", promql), ("timeout", &timeout)],
                tenant,
                self.timeout,
            )
            .await?;
        let status = response.status();
        let body = self.read_capped(response).await?;
        let envelope = serde_json::from_slice::<Envelope<QueryData>>(&body);
        settle(status, envelope, &body)?.into_answer()
    }

    /// Values of label `label` over the series matching `selector` since `start`
    /// (`/api/v1/label/<label>/values`): for `__name__`, the metric names a selector finds.
    pub async fn label_values(
        &self,
        label: &str,
        selector: &str,
        start: SystemTime,
    ) -> Result<Vec<String>, PrometheusError> {
        let path = format!("api/v1/label/{label}/values");
        self.string_list(&path, selector, start).await
    }

    /// Label names of the series matching `selector` since `start` (`/api/v1/labels`).
    pub async fn label_names(
        &self,
        selector: &str,
        start: SystemTime,
    ) -> Result<Vec<String>, PrometheusError> {
        self.string_list("api/v1/labels", selector, start).await
    }

    async fn string_list(
        &self,
        path: &str,
        selector: &str,
        start: SystemTime,
    ) -> Result<Vec<String>, PrometheusError> {
        let start = unix_seconds(start);
        let response = self
            .send(
                path,
                &[("match[]", selector), ("start", &start)],
                None,
                self.discovery_timeout,
            )
            .await?;
        let status = response.status();
        let body = self.read_capped(response).await?;
        let envelope = serde_json::from_slice::<Envelope<Vec<String>>>(&body);
        settle(status, envelope, &body)
    }

    /// Series matching `selector` seen since `start`, decoded as the body arrives (see
    /// [`SeriesSet`]): the body is never held whole, so its size is not capped; what is kept
    /// of it is, at `max_response_bytes`.
    pub async fn series(
        &self,
        selector: &str,
        start: SystemTime,
    ) -> Result<SeriesSet, PrometheusError> {
        let start = unix_seconds(start);
        let mut response = self
            .send(
                "api/v1/series",
                &[("match[]", selector), ("start", &start)],
                None,
                self.discovery_timeout,
            )
            .await?;
        let status = response.status();
        let limit = self.max_response_bytes;
        // serde_json reads from a blocking `Read`; feed it chunks through a small channel so
        // at most a few chunks are in memory besides the set being built.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let decoder = tokio::task::spawn_blocking(move || {
            let mut reader = ChunkReader::new(rx);
            // serde_json reads byte by byte; BufReader serves those from its buffer.
            let decoded = decode_series(
                std::io::BufReader::with_capacity(64 * 1024, &mut reader),
                usize::try_from(limit.bytes()).unwrap_or(usize::MAX),
            );
            (decoded, reader.head)
        });
        let fed = loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if tx.send(chunk).await.is_err() {
                        // The decoder stopped early (bad JSON, or the limit): its result says why.
                        break Ok(());
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(PrometheusError::Unavailable(describe_reqwest(&e))),
            }
        };
        // Closing the channel ends the decoder's input; on an error above, its result is moot.
        drop(tx);
        drop(response);
        let (decoded, head) = decoder
            .await
            .map_err(|e| PrometheusError::Malformed(format!("series decoder failed: {e}")))?;
        match decoded {
            Decoded::KeptTooMuch => Err(PrometheusError::TooManyNames { limit }),
            Decoded::Answer(parsed) => {
                fed?;
                settle(status, parsed, &head)
            }
        }
    }

    /// One call under `deadline` (connecting, the answer and its whole body).
    async fn send(
        &self,
        path: &str,
        params: &[(&str, &str)],
        tenant: Option<&str>,
        deadline: Duration,
    ) -> Result<reqwest::Response, PrometheusError> {
        use crate::rules::backends::{render_tenant, NAMESPACE_VARIABLE};
        let url = self
            .base
            .join(path)
            .map_err(|e| PrometheusError::Malformed(format!("url: {e}")))?;
        let render = |value: &str| -> Result<String, PrometheusError> {
            match (value.contains(NAMESPACE_VARIABLE), tenant) {
                (false, _) => Ok(value.to_string()),
                (true, Some(namespace)) => Ok(render_tenant(value, namespace)),
                // Requests without a namespace are refused before they get here.
                (true, None) => Err(PrometheusError::Query {
                    kind: "tenant".into(),
                    message: format!(
                        "backend {:?} needs the request's namespace, and this call has none",
                        self.name
                    ),
                }),
            }
        };
        let mut extra = Vec::with_capacity(self.query_params.len());
        for (name, value) in &self.query_params {
            extra.push((name.as_str(), render(value)?));
        }
        let http = self.http.get();
        // The backend's own parameters go in the URL for POST too (prom-label-proxy reads them
        // from either).
        let builder = match self.method {
            HttpMethod::Get => http.get(url).query(&extra).query(params),
            HttpMethod::Post => http.post(url).query(&extra).form(params),
        };
        let mut builder = builder.timeout(deadline);
        for (name, value) in &self.tenant_headers {
            let value = HeaderValue::from_str(&render(value)?).map_err(|_| {
                PrometheusError::Malformed(format!("header {name}: not a valid value"))
            })?;
            builder = builder.header(name, value);
        }
        let mut request = builder
            .build()
            .map_err(|e| PrometheusError::Malformed(format!("building the request: {e}")))?;
        self.auth.authorize(&http, &mut request).await?;
        let response = http
            .execute(request)
            .await
            .map_err(|e| PrometheusError::Unavailable(describe_reqwest(&e)))?;
        if response.status() == StatusCode::UNAUTHORIZED {
            self.auth.rejected();
        }
        Ok(response)
    }

    /// Refuses an answer that announces more than the limit, before reading any of it.
    fn check_declared_length(&self, response: &reqwest::Response) -> Result<(), PrometheusError> {
        match response.content_length() {
            Some(n) if n > self.max_response_bytes.bytes() => Err(PrometheusError::TooLarge {
                limit: self.max_response_bytes,
                declared: Some(n),
            }),
            _ => Ok(()),
        }
    }

    /// The whole body, or `TooLarge` as soon as it passes the limit (chunked answers have no
    /// length to check up front). The count is of the bytes `chunk()` yields, which are the
    /// decoded ones should reqwest's gzip feature ever be turned on (it is off: no
    /// `Accept-Encoding` is sent), so a compressed bomb would be cut off too.
    async fn read_capped(
        &self,
        mut response: reqwest::Response,
    ) -> Result<Vec<u8>, PrometheusError> {
        self.check_declared_length(&response)?;
        let limit = self.max_response_bytes;
        let expected = response.content_length().unwrap_or(0).min(1 << 20) as usize;
        let mut body = Vec::with_capacity(expected);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| PrometheusError::Unavailable(describe_reqwest(&e)))?
        {
            if (body.len() + chunk.len()) as u64 > limit.bytes() {
                return Err(PrometheusError::TooLarge {
                    limit,
                    declared: None,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn unix_seconds(at: SystemTime) -> String {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .to_string()
}

/// Turns a decoded (or undecodable) answer into data or an error: unreadable 5xx/429 answers
/// and Prometheus' `timeout`/`unavailable` errors mean "try again later"; the rest are the
/// query's fault or garbage.
fn settle<T>(
    status: StatusCode,
    parsed: Result<Envelope<T>, serde_json::Error>,
    head: &[u8],
) -> Result<T, PrometheusError> {
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        // The backend (or a proxy in front of it) refuses our credentials: nothing about the
        // query, and another backend with its own credentials may answer.
        return Err(PrometheusError::Unavailable(format!(
            "HTTP {status}: the backend refused the credentials (check its auth settings and secret files)"
        )));
    }
    let envelope = match parsed {
        Ok(env) => env,
        Err(e) if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
            return Err(PrometheusError::Unavailable(format!(
                "HTTP {status}: {}",
                snippet(head, e)
            )))
        }
        Err(e) => {
            return Err(PrometheusError::Malformed(format!(
                "HTTP {status}: {}",
                snippet(head, e)
            )))
        }
    };
    match envelope {
        Envelope {
            status: s,
            data: Some(data),
            ..
        } if s == "success" => Ok(data),
        Envelope {
            error_type, error, ..
        } => {
            let kind = error_type.unwrap_or_else(|| "unknown".into());
            let message = error.unwrap_or_else(|| format!("HTTP {status}"));
            // `timeout`/`unavailable` error types and 5xx mean "try again later".
            if matches!(kind.as_str(), "timeout" | "unavailable" | "canceled")
                || status.is_server_error() && kind != "execution"
            {
                Err(PrometheusError::Unavailable(format!("{kind}: {message}")))
            } else {
                Err(PrometheusError::Query { kind, message })
            }
        }
    }
}

/// A blocking `Read` over body chunks sent from the async side; remembers the first bytes
/// for error messages.
struct ChunkReader<B> {
    rx: tokio::sync::mpsc::Receiver<B>,
    current: Option<B>,
    pos: usize,
    head: Vec<u8>,
}

const HEAD: usize = 200;

impl<B: AsRef<[u8]>> ChunkReader<B> {
    fn new(rx: tokio::sync::mpsc::Receiver<B>) -> Self {
        ChunkReader {
            rx,
            current: None,
            pos: 0,
            head: Vec::new(),
        }
    }
}

impl<B: AsRef<[u8]>> Read for ChunkReader<B> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(chunk) = &self.current {
                let rest = &chunk.as_ref()[self.pos..];
                if !rest.is_empty() {
                    let n = rest.len().min(buf.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    self.pos += n;
                    return Ok(n);
                }
            }
            // Runs on a blocking thread (spawn_blocking), where blocking_recv is allowed.
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    let bytes = chunk.as_ref();
                    let room = HEAD.saturating_sub(self.head.len());
                    self.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
                    self.current = Some(chunk);
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
    }
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "deadline exceeded"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut msg = format!("{what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

fn snippet(body: &[u8], e: serde_json::Error) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(HEAD)]);
    format!("{e} (body starts {text:?})")
}

/// The envelope of every Prometheus API answer.
#[derive(Debug, Deserialize)]
pub(super) struct Envelope<T> {
    pub(super) status: String,
    pub(super) data: Option<T>,
    #[serde(rename = "errorType")]
    pub(super) error_type: Option<String>,
    pub(super) error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum QueryData {
    Vector(Vec<RawSample>),
    Scalar(RawPoint),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Debug, Deserialize)]
struct RawSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: RawPoint,
}

/// `[1700000000.123, "42"]`
#[derive(Debug, Deserialize)]
struct RawPoint(f64, String);

impl RawPoint {
    fn value(&self) -> Result<f64, PrometheusError> {
        parse_sample_value(&self.1).ok_or_else(|| {
            PrometheusError::Malformed(format!("sample value {:?} is not a number", self.1))
        })
    }
}

/// Prometheus writes values as Go's strconv does: `"1.5"`, `"NaN"`, `"+Inf"`, `"-Inf"`.
fn parse_sample_value(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        other => other.parse::<f64>().ok().filter(|v| v.is_finite()),
    }
}

/// A sample time as RFC 3339 can write it: before 1970 becomes 1970-01-01T00:00:00Z, after
/// 9999-12-31T23:59:59Z (up to `u64::MAX` seconds, which used to panic the formatter on every
/// request for as long as the answer was cached) becomes that. The bool says it was clamped.
pub fn clamp_timestamp(t: f64) -> (f64, bool) {
    if t.is_nan() || t < 0.0 {
        (0.0, true)
    } else if t > MAX_TIMESTAMP {
        (MAX_TIMESTAMP, true)
    } else {
        (t, false)
    }
}

impl QueryData {
    fn into_answer(self) -> Result<QueryAnswer, PrometheusError> {
        let mut clamped = 0;
        let mut time = |t: f64| {
            let (t, was) = clamp_timestamp(t);
            clamped += usize::from(was);
            t
        };
        let result = match self {
            QueryData::Vector(samples) => samples
                .into_iter()
                .map(|s| {
                    Ok(Sample {
                        value: s.value.value()?,
                        timestamp: time(s.value.0),
                        labels: s.metric,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(QueryResult::Vector),
            QueryData::Scalar(p) => Ok(QueryResult::Scalar(Sample {
                value: p.value()?,
                timestamp: time(p.0),
                labels: BTreeMap::new(),
            })),
            QueryData::Matrix(_) => Err(PrometheusError::Query {
                kind: "bad_result".into(),
                message:
                    "the query returned a range vector; metrics_query must give an instant vector"
                        .into(),
            }),
            QueryData::String(_) => Err(PrometheusError::Query {
                kind: "bad_result".into(),
                message: "the query returned a string; metrics_query must give an instant vector"
                    .into(),
            }),
        }?;
        Ok(QueryAnswer {
            result,
            timestamps_clamped: clamped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vector_and_special_values() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"pod":"a"},"value":[1700000000.5,"1.5"]},
            {"metric":{"pod":"b"},"value":[1700000000.5,"NaN"]},
            {"metric":{"pod":"c"},"value":[1700000000.5,"+Inf"]},
            {"metric":{"pod":"d"},"value":[1700000000.5,"-Inf"]}]}}"#;
        let env: Envelope<QueryData> = serde_json::from_str(body).expect("json");
        let answer = env.data.expect("data").into_answer().expect("result");
        assert_eq!(answer.timestamps_clamped, 0);
        let s = answer.result.samples();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].value, 1.5);
        assert_eq!(s[0].labels["pod"], "a");
        assert!(s[1].value.is_nan());
        assert_eq!(s[2].value, f64::INFINITY);
        assert_eq!(s[3].value, f64::NEG_INFINITY);
        assert_eq!(s[0].timestamp, 1700000000.5);
    }

    #[test]
    fn parses_scalar_and_rejects_matrix() {
        let env: Envelope<QueryData> = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"scalar","result":[1.0,"7"]}}"#,
        )
        .expect("json");
        assert_eq!(
            env.data
                .expect("d")
                .into_answer()
                .expect("r")
                .result
                .samples()[0]
                .value,
            7.0
        );
        let env: Envelope<QueryData> = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
        )
        .expect("json");
        assert!(matches!(
            env.data.expect("d").into_answer(),
            Err(PrometheusError::Query { .. })
        ));
    }

    #[test]
    fn garbage_values_are_malformed() {
        let env: Envelope<QueryData> =
            serde_json::from_str(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"abc"]}]}}"#).expect("json");
        assert!(matches!(
            env.data.expect("d").into_answer(),
            Err(PrometheusError::Malformed(_))
        ));
        assert_eq!(
            parse_sample_value("inf"),
            None,
            "only Prometheus' own spellings"
        );
    }

    #[test]
    fn out_of_range_timestamps_are_clamped() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"pod":"a"},"value":[18446744073709551615,"1"]},
            {"metric":{"pod":"b"},"value":[253402300800,"1"]},
            {"metric":{"pod":"c"},"value":[1e300,"1"]},
            {"metric":{"pod":"d"},"value":[-86400,"1"]},
            {"metric":{"pod":"e"},"value":[253402300799,"1"]}]}}"#;
        let env: Envelope<QueryData> = serde_json::from_str(body).expect("json");
        let answer = env.data.expect("data").into_answer().expect("answer");
        assert_eq!(answer.timestamps_clamped, 4);
        let times: Vec<f64> = answer
            .result
            .samples()
            .iter()
            .map(|s| s.timestamp)
            .collect();
        assert_eq!(
            times,
            [
                MAX_TIMESTAMP,
                MAX_TIMESTAMP,
                MAX_TIMESTAMP,
                0.0,
                MAX_TIMESTAMP
            ]
        );
        for s in answer.result.samples() {
            // What used to panic on every request while the answer was cached.
            crate::response::timestamp(s.timestamp);
        }
        let env: Envelope<QueryData> = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"scalar","result":[1e19,"7"]}}"#,
        )
        .expect("json");
        assert_eq!(
            env.data
                .expect("d")
                .into_answer()
                .expect("a")
                .timestamps_clamped,
            1
        );
    }

    fn series_body(series: &[&str]) -> String {
        format!(r#"{{"status":"success","data":[{}]}}"#, series.join(","))
    }

    /// A series answer read without a limit, as `settle` takes it.
    fn parse_series(reader: impl Read) -> Result<Envelope<SeriesSet>, serde_json::Error> {
        match decode_series(reader, usize::MAX) {
            Decoded::Answer(parsed) => parsed,
            Decoded::KeptTooMuch => unreachable!("no limit"),
        }
    }

    #[test]
    fn series_answer_errors_and_garbage() {
        let env = parse_series(
            br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#.as_slice(),
        )
        .expect("json");
        assert!(matches!(
            settle(StatusCode::BAD_REQUEST, Ok(env), b""),
            Err(PrometheusError::Query { .. })
        ));
        for garbage in [
            "<html>proxy</html>",
            r#"{"status":"success","data":[{"__name__":"a"}]} trailing"#,
            r#"{"status":"success","data":{"not":"a list"}}"#,
            r#"{"status":"success","data":[{"__name__":"a","pod":"#,
        ] {
            let parsed = parse_series(garbage.as_bytes());
            assert!(
                matches!(
                    settle(StatusCode::OK, parsed, garbage.as_bytes()),
                    Err(PrometheusError::Malformed(_))
                ),
                "{garbage}"
            );
        }
    }

    #[test]
    fn chunk_reader_reassembles_chunks() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        let body = series_body(&[r#"{"__name__":"a","pod":"p"}"#, r#"{"__name__":"b"}"#]);
        for piece in body.as_bytes().chunks(7) {
            tx.try_send(piece.to_vec()).expect("room");
        }
        drop(tx);
        let mut reader = ChunkReader::new(rx);
        let set = settle(StatusCode::OK, parse_series(&mut reader), b"").expect("decodes");
        assert_eq!(set.name_count(), 2);
        assert_eq!(reader.head, body.as_bytes()[..body.len().min(HEAD)]);
    }
}
