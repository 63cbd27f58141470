//! The Prometheus HTTP API client: `/api/v1/query` and `/api/v1/series`, every call under the
//! configured deadline, errors sorted into "unavailable" (503 for clients) and "the query
//! failed" (500), so a request never hangs and never leaks Prometheus' details.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use serde::Deserialize;

use crate::config::{HttpMethod, PrometheusConfig};

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
}

/// A series as `/api/v1/series` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
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
}

impl PrometheusError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PrometheusError::Unavailable(_) => "unavailable",
            PrometheusError::Query { .. } => "query",
            PrometheusError::Malformed(_) => "malformed",
        }
    }
}

#[derive(Debug)]
pub struct PrometheusClient {
    http: reqwest::Client,
    base: reqwest::Url,
    method: HttpMethod,
    timeout: Duration,
    token: Option<TokenFile>,
}

/// A bearer token file, re-read now and then so a rotated token is picked up.
#[derive(Debug)]
struct TokenFile {
    path: PathBuf,
    cached: Mutex<Option<(Instant, String)>>,
}

const TOKEN_REFRESH: Duration = Duration::from_secs(60);

impl TokenFile {
    fn token(&self) -> Result<String, PrometheusError> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, token)) = cached.as_ref() {
            if at.elapsed() < TOKEN_REFRESH {
                return Ok(token.clone());
            }
        }
        let token = std::fs::read_to_string(&self.path)
            .map_err(|e| {
                PrometheusError::Unavailable(format!(
                    "reading bearer_token_file {}: {e}",
                    self.path.display()
                ))
            })?
            .trim()
            .to_string();
        *cached = Some((Instant::now(), token.clone()));
        Ok(token)
    }
}

impl PrometheusClient {
    pub fn new(cfg: &PrometheusConfig) -> anyhow::Result<Self> {
        use anyhow::Context;
        // reqwest is built without its own crypto provider; make sure ours is installed.
        crate::tls::install_crypto_provider();
        let mut base = reqwest::Url::parse(&cfg.url)
            .with_context(|| format!("prometheus.url {:?}", cfg.url))?;
        // Keep a path prefix (Thanos/Mimir often live under one) and join API paths below it.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &cfg.headers {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes())
                    .with_context(|| format!("prometheus.headers: {name:?}"))?,
                HeaderValue::from_str(value)
                    .with_context(|| format!("prometheus.headers.{name}"))?,
            );
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(3)))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("kube-metrics-bridge/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca)
                .with_context(|| format!("prometheus.ca_file {}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("prometheus.ca_file {}", ca.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&cfg.client_cert_file, &cfg.client_key_file) {
            let mut pem = std::fs::read(cert)
                .with_context(|| format!("prometheus.client_cert_file {}", cert.display()))?;
            pem.extend(
                std::fs::read(key)
                    .with_context(|| format!("prometheus.client_key_file {}", key.display()))?,
            );
            builder = builder.identity(
                reqwest::Identity::from_pem(&pem).context("prometheus client certificate")?,
            );
        }
        if cfg.insecure_skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        Ok(PrometheusClient {
            http: builder
                .build()
                .context("building the Prometheus HTTP client")?,
            base,
            method: cfg.method,
            timeout: cfg.timeout,
            token: cfg.bearer_token_file.clone().map(|path| TokenFile {
                path,
                cached: Mutex::new(None),
            }),
        })
    }

    pub fn base_url(&self) -> &reqwest::Url {
        &self.base
    }

    /// An instant query at the current time.
    pub async fn query(&self, promql: &str) -> Result<QueryResult, PrometheusError> {
        let timeout = format!("{}ms", self.timeout.as_millis());
        let data: QueryData = self
            .call("api/v1/query", &[("query", promql), ("timeout", &timeout)])
            .await?;
        data.into_result()
    }

    /// Series matching `selector` seen since `start`.
    pub async fn series(
        &self,
        selector: &str,
        start: SystemTime,
    ) -> Result<Vec<Series>, PrometheusError> {
        let start = start
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string();
        let data: Vec<BTreeMap<String, String>> = self
            .call("api/v1/series", &[("match[]", selector), ("start", &start)])
            .await?;
        Ok(data
            .into_iter()
            .map(|mut labels| Series {
                name: labels.remove("__name__").unwrap_or_default(),
                labels,
            })
            .collect())
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<T, PrometheusError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| PrometheusError::Malformed(format!("url: {e}")))?;
        let mut request = match self.method {
            HttpMethod::Get => self.http.get(url).query(params),
            HttpMethod::Post => self.http.post(url).form(params),
        };
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {}", token.token()?));
        }
        let response = request
            .send()
            .await
            .map_err(|e| PrometheusError::Unavailable(describe_reqwest(&e)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| PrometheusError::Unavailable(describe_reqwest(&e)))?;
        let envelope: Envelope<T> = match serde_json::from_slice(&body) {
            Ok(env) => env,
            Err(e)
                if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS =>
            {
                return Err(PrometheusError::Unavailable(format!(
                    "HTTP {status}: {}",
                    snippet(&body, e)
                )))
            }
            Err(e) => {
                return Err(PrometheusError::Malformed(format!(
                    "HTTP {status}: {}",
                    snippet(&body, e)
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
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    format!("{e} (body starts {text:?})")
}

#[derive(Debug, Deserialize)]
struct Envelope<T> {
    status: String,
    data: Option<T>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
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

impl QueryData {
    fn into_result(self) -> Result<QueryResult, PrometheusError> {
        match self {
            QueryData::Vector(samples) => samples
                .into_iter()
                .map(|s| {
                    Ok(Sample {
                        value: s.value.value()?,
                        timestamp: s.value.0,
                        labels: s.metric,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(QueryResult::Vector),
            QueryData::Scalar(p) => Ok(QueryResult::Scalar(Sample {
                value: p.value()?,
                timestamp: p.0,
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
        }
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
        let result = env.data.expect("data").into_result().expect("result");
        let s = result.samples();
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
            env.data.expect("d").into_result().expect("r").samples()[0].value,
            7.0
        );
        let env: Envelope<QueryData> = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
        )
        .expect("json");
        assert!(matches!(
            env.data.expect("d").into_result(),
            Err(PrometheusError::Query { .. })
        ));
    }

    #[test]
    fn garbage_values_are_malformed() {
        let env: Envelope<QueryData> =
            serde_json::from_str(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"abc"]}]}}"#).expect("json");
        assert!(matches!(
            env.data.expect("d").into_result(),
            Err(PrometheusError::Malformed(_))
        ));
        assert_eq!(
            parse_sample_value("inf"),
            None,
            "only Prometheus' own spellings"
        );
    }
}
