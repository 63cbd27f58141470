//! The rules file: its TOML shape and how it is loaded.
//!
//! One file carries the Prometheus connection, the cache settings and the rules, with the
//! same meaning as prometheus-adapter's `rules` and `externalRules` spelled in snake_case.
//! Loading is layered with figment (defaults < file < `KMB_CONFIG_*` environment) so that a
//! Deployment can override, say, the Prometheus URL without editing the ConfigMap. This module
//! only reads and type-checks; `rules::RuleSet::compile` checks meaning (regexes, templates,
//! PromQL) and reports every problem with its rule and field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Environment prefix for overriding file settings: `KMB_CONFIG_PROMETHEUS__URL=...`.
pub const ENV_PREFIX: &str = "KMB_CONFIG_";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// The one-backend shorthand: a backend named `default`. Not together with `[[backends]]`.
    pub prometheus: Option<BackendConfig>,
    /// Named backends (Prometheus, Thanos, Mimir, VictoriaMetrics...); rules pick one with
    /// `backend = "name"`, the rest use the default one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendConfig>,
    pub cache: CacheConfig,
    pub rules: Vec<RuleConfig>,
    pub external_rules: Vec<RuleConfig>,
    /// The resource metrics API (`metrics.k8s.io`): prometheus-adapter's `resourceRules`.
    /// Absent: that API is not served.
    pub resource_rules: Option<ResourceRulesConfig>,
    /// Other metrics API servers (prometheus-adapter, a vendor adapter) that answer the
    /// custom and external metrics these rules do not have: the bridge forwards to them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<UpstreamConfig>,
}

/// `[[upstreams]]`: another metrics API server the bridge sits in front of.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// What logs and metrics call it.
    pub name: String,
    /// Its Service, `https://prometheus-adapter.monitoring.svc:443` (a path prefix is kept).
    pub url: String,
    /// The group versions it may answer, of `custom.metrics.k8s.io/v1beta1`,
    /// `custom.metrics.k8s.io/v1beta2` and `external.metrics.k8s.io/v1beta1` (default: all).
    pub apis: Vec<String>,
    /// Deadline for each forwarded request and each discovery call.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How often its discovery documents are fetched again.
    #[serde(with = "humantime_serde")]
    pub discovery_interval: Duration,
    /// The CA that signed its serving certificate.
    pub ca_file: Option<PathBuf>,
    /// A front-proxy client certificate the upstream trusts (signed by the CA of
    /// `requestheader-client-ca-file`, with a name in `requestheader-allowed-names`): with it
    /// the upstream believes the caller identity the bridge passes on.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Do not verify its serving certificate (what an APIService with
    /// `insecureSkipTLSVerify: true` did). Logged as a warning.
    pub insecure_skip_verify: bool,
    /// Largest answer body read from it.
    pub max_response_bytes: ByteSize,
}

/// The group versions an upstream may answer.
pub const UPSTREAM_APIS: [&str; 3] = [
    "custom.metrics.k8s.io/v1beta1",
    "custom.metrics.k8s.io/v1beta2",
    "external.metrics.k8s.io/v1beta1",
];

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            name: String::new(),
            url: String::new(),
            apis: UPSTREAM_APIS.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_secs(10),
            discovery_interval: Duration::from_secs(30),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            insecure_skip_verify: false,
            max_response_bytes: ByteSize::mib(64),
        }
    }
}

/// How to reach one engine with Prometheus' HTTP API: `[prometheus]` or one `[[backends]]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// `[[backends]]` only, and required there: what rules, logs and metrics call it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `[[backends]]` only: rules without `backend` use this one (else the first listed).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// `[[backends]]` only: backends tried in order when this one is unavailable
    /// (unreachable, deadline, 5xx, 429, an unreadable answer), never on a query error.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<String>,
    pub url: String,
    /// Deadline for every query to Prometheus; requests never wait longer.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Deadline for discovery's calls (the label and series APIs). They list everything a
    /// rule's series query finds, which on a large backend takes far longer than a query
    /// (a million series: 15 to 22 s by the series API), and no request waits on them.
    #[serde(with = "humantime_serde")]
    pub discovery_timeout: Duration,
    /// Extra headers on every call, e.g. `X-Scope-OrgID` for Mimir/Cortex tenants. A value
    /// may hold `<<.Namespace>>`: the request's namespace (the tenant), per call.
    pub headers: BTreeMap<String, String>,
    /// Extra query parameters on every call (`namespace = "<<.Namespace>>"` for
    /// prom-label-proxy); templated like `headers`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, String>,
    /// Where this backend's rules list their series, when this one cannot: a backend whose
    /// headers or parameters hold `<<.Namespace>>` has no tenant outside a request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_backend: Option<String>,
    /// How discovery lists series names and their label names on this backend.
    #[serde(skip_serializing_if = "DiscoveryApi::is_default")]
    pub discovery_api: DiscoveryApi,
    /// `Authorization: Bearer` with the file's content (re-read when the file changes).
    pub bearer_token_file: Option<PathBuf>,
    /// `Authorization: Basic` with a username and a password read from a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuthConfig>,
    /// OAuth2 client credentials: a token from `token_url`, cached until it expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2Config>,
    /// AWS Signature Version 4 (Amazon Managed Service for Prometheus).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigv4: Option<SigV4Config>,
    /// An HTTP proxy every call (and the OAuth2 token request) goes through: `http://host:port`
    /// or `https://...`; credentials in it are never logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    pub method: HttpMethod,
    /// Largest answer body read from Prometheus (queries and the label API); a larger one is
    /// refused, not read on. For `/api/v1/series`, which is streamed and never held, the most
    /// distinct names and label names its answer may keep. `64MiB`, or a number of bytes.
    pub max_response_bytes: ByteSize,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            name: None,
            default: false,
            failover: Vec::new(),
            url: "http://127.0.0.1:9090".into(),
            timeout: Duration::from_secs(5),
            discovery_timeout: Duration::from_secs(60),
            headers: BTreeMap::new(),
            query_params: BTreeMap::new(),
            discovery_backend: None,
            discovery_api: DiscoveryApi::Auto,
            bearer_token_file: None,
            basic_auth: None,
            oauth2: None,
            sigv4: None,
            proxy_url: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            insecure_skip_verify: false,
            method: HttpMethod::Get,
            max_response_bytes: ByteSize::mib(64),
        }
    }
}

/// `basic_auth = { username = "...", password_file = "..." }`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BasicAuthConfig {
    pub username: String,
    /// The password, read from a file (a mounted Secret) and re-read when it changes.
    pub password_file: PathBuf,
}

/// OAuth2 client credentials grant (RFC 6749 §4.4).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OAuth2Config {
    pub token_url: String,
    pub client_id: String,
    /// The client secret, read from a file and re-read when it changes.
    pub client_secret_file: PathBuf,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Extra form parameters of the token request (e.g. `audience`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoint_params: BTreeMap<String, String>,
}

/// AWS Signature Version 4, with credentials from files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SigV4Config {
    /// e.g. `us-east-1`.
    pub region: String,
    /// The signing name: `aps` for Amazon Managed Service for Prometheus.
    pub service: String,
    pub access_key_id_file: PathBuf,
    pub secret_access_key_file: PathBuf,
    /// Temporary credentials' session token, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_token_file: Option<PathBuf>,
}

impl Default for SigV4Config {
    fn default() -> Self {
        SigV4Config {
            region: String::new(),
            service: "aps".into(),
            access_key_id_file: PathBuf::new(),
            secret_access_key_file: PathBuf::new(),
            session_token_file: None,
        }
    }
}

/// The calls discovery lists series with.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum DiscoveryApi {
    /// The label API, falling back to the series API where it fails (not where the backend
    /// is down).
    #[default]
    Auto,
    /// `/api/v1/label/__name__/values` for the names, then `/api/v1/labels` per name: answers
    /// the size of the distinct names, whatever the number of series.
    Labels,
    /// `/api/v1/series`: every matching series (decoded as a stream), as prometheus-adapter.
    Series,
}

impl DiscoveryApi {
    pub fn is_default(&self) -> bool {
        *self == DiscoveryApi::Auto
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Get,
    Post,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// How long a query result is reused. Zero disables the value cache (requests still coalesce).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How often the series queries are relisted to discover metrics.
    #[serde(with = "humantime_serde")]
    pub discovery_interval: Duration,
    /// How far back discovery looks for series (prometheus-adapter's `--metrics-max-age`);
    /// defaults to the discovery interval.
    #[serde(with = "humantime_serde")]
    pub series_max_age: Option<Duration>,
    /// A request for a metric discovery has not seen starts a discovery run now, at most
    /// this often (a new exporter's metric is served within seconds). Zero turns it off.
    #[serde(with = "humantime_serde")]
    pub rediscover_on_miss: Duration,
    /// Upper bound on cached query results, a memory guard.
    pub max_entries: u64,
    /// Upper bound on the estimated memory of cached query results (labels, values and keys).
    pub max_bytes: ByteSize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl: Duration::from_secs(10),
            discovery_interval: Duration::from_secs(60),
            series_max_age: None,
            rediscover_on_miss: Duration::from_secs(10),
            max_entries: 10_000,
            max_bytes: ByteSize::mib(64),
        }
    }
}

impl CacheConfig {
    pub fn series_max_age(&self) -> Duration {
        self.series_max_age.unwrap_or(self.discovery_interval)
    }
}

/// A size in bytes: a TOML integer (`1048576`) or a string with a unit (`"64MiB"`, `"512KiB"`,
/// `"1GiB"`, `"10MB"`; Kubernetes' `"64Mi"` too). Written back as an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Parses `64MiB`, `64 Mi`, `10MB`, `1024`, `1024B` (units are case-insensitive).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().map_err(|_| {
            format!("{text:?} is not a size: expected a whole number and a unit like 64MiB")
        })?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "m" | "mb" => 1_000_000,
            "g" | "gb" => 1_000_000_000,
            "ki" | "kib" => 1 << 10,
            "mi" | "mib" => 1 << 20,
            "gi" | "gib" => 1 << 30,
            other => {
                return Err(format!(
                    "{text:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, KB, MB or GB)"
                ))
            }
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0;
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if n >= size && n.is_multiple_of(size) {
                return write!(f, "{}{unit}", n / size);
            }
        }
        write!(f, "{n}B")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size: a number of bytes or a string like \"64MiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("{v} is negative")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One discovery rule, for `[[rules]]` (custom metrics) and `[[external_rules]]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    pub series_query: String,
    pub series_filters: Vec<SeriesFilter>,
    pub resources: ResourceMapping,
    pub name: NameMapping,
    pub metrics_query: String,
    pub on_missing: OnMissing,
    /// External rules only: whether the request's namespace becomes a matcher (default true).
    pub namespaced: Option<bool>,
    /// Reported to the HPA as the sample window (`windowSeconds`); omitted when unset.
    #[serde(with = "humantime_serde")]
    pub window: Option<Duration>,
    /// The `[[backends]]` entry this rule's series and metrics queries go to; else the default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// What a request gets when its backend is unavailable.
    #[serde(skip_serializing_if = "OnError::is_default")]
    pub on_error: OnError,
    /// With `on_error = "stale"`: the oldest answer that may still be served.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub max_stale: Option<Duration>,
}

/// What a request gets when the backend cannot answer (after failover).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// 503 ServiceUnavailable: the HPA keeps its replicas and marks ScalingActive=False.
    #[default]
    Unavailable,
    /// The last good answer for the same query, up to `max_stale` old; then 503.
    Stale,
}

impl OnError {
    pub fn is_default(&self) -> bool {
        *self == OnError::Unavailable
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SeriesFilter {
    pub is: Option<String>,
    pub is_not: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceMapping {
    pub template: Option<String>,
    pub overrides: BTreeMap<String, GroupResourceConfig>,
    /// prometheus-adapter spells the external rules' switch here; accepted as an alias.
    pub namespaced: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct GroupResourceConfig {
    pub group: String,
    pub resource: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NameMapping {
    pub matches: Option<String>,
    #[serde(rename = "as")]
    pub as_: Option<String>,
}

/// What an answer holds for an object that has no (finite) sample.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnMissing {
    /// Leave it out; a request that ends with no items gets 404 NotFound.
    #[default]
    Error,
    /// Report 0 for every object the request named (or selected) that has no sample.
    Zero,
}

/// `[resource_rules]`: CPU and memory for `kubectl top` and `Resource` HPAs, with
/// prometheus-adapter's `resourceRules` meaning (`rules::resource_metrics` compiles it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceRulesConfig {
    /// The interval the usage covers, reported as `window` and used by the HPA's CPU
    /// readiness check. Unset: the range of the CPU container query's `rate()` (or
    /// `increase()`, `*_over_time()`).
    #[serde(with = "humantime_serde")]
    pub window: Option<Duration>,
    /// What a pod gets when some of its containers have no sample for a resource.
    pub missing_containers: MissingContainers,
    /// The `[[backends]]` entry the cpu and memory queries go to; else the default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// As in `[[rules]]`: what `kubectl top` and the HPA get when the backend is down.
    #[serde(skip_serializing_if = "OnError::is_default")]
    pub on_error: OnError,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub max_stale: Option<Duration>,
    /// Required; `Option` so that a missing table is a problem named by `check`.
    pub cpu: Option<ResourceRuleConfig>,
    pub memory: Option<ResourceRuleConfig>,
}

/// `[resource_rules.cpu]` / `[resource_rules.memory]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceRuleConfig {
    /// Per-container usage; rendered once per namespace (or once for the cluster).
    pub container_query: String,
    /// Per-node usage; rendered once for all nodes.
    pub node_query: String,
    /// Which labels name namespaces, pods and nodes (as in `[[rules]]`).
    pub resources: ResourceMapping,
    /// The label that names the container, e.g. `container` for cAdvisor series.
    pub container_label: String,
}

/// What the resource metrics API answers for a pod some of whose containers have no sample
/// for cpu or memory.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum MissingContainers {
    /// Leave the pod out, as metrics-server does: `kubectl top` does not list it and the HPA
    /// counts it as missing (conservatively).
    #[default]
    DropPod,
    /// Report 0 for the missing resource of that container, as prometheus-adapter does for a
    /// container with only one of the two resources.
    Zero,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("rules file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rules file {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// Reads and type-checks a rules file, applying `KMB_CONFIG_*` overrides.
pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
    // figment's Toml::file silently ignores a missing file; we want a clear error instead.
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses rules-file text (the path only labels errors).
pub fn parse(text: &str, path: &Path) -> Result<ConfigFile, ConfigError> {
    Figment::from(Serialized::defaults(ConfigFile::default()))
        .merge(Toml::string(text))
        .merge(Env::prefixed(ENV_PREFIX).split("__"))
        .extract::<ConfigFile>()
        .map_err(|err| ConfigError::Parse {
            path: path.to_path_buf(),
            message: describe_figment_error(err),
        })
}

/// Turns figment's errors (it may carry several) into lines that name the field, e.g.
/// `rules[0].metrics_query: invalid type: found integer, expected a string`.
fn describe_figment_error(err: figment::Error) -> String {
    err.into_iter()
        .map(|e| {
            let path = field_path(&e.path);
            let kind = e.kind.to_string();
            if path.is_empty() {
                kind
            } else {
                format!("{path}: {kind}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn field_path(parts: &[String]) -> String {
    let mut out = String::new();
    for part in parts {
        if part.chars().all(|c| c.is_ascii_digit()) && !out.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<ConfigFile, ConfigError> {
        parse(text, Path::new("test.toml"))
    }

    #[test]
    fn parses_design_example() {
        let cfg = parse_str(
            r#"
[prometheus]
url = "http://127.0.0.1:9090"
timeout = "5s"
headers = { "X-Scope-OrgID" = "team-a" }

[cache]
ttl = "10s"
discovery_interval = "1m"

[[rules]]
series_query = 'http_requests_total{namespace!="",pod!=""}'
series_filters = [{ is_not = "^.*_bucket$" }]
resources.overrides = { namespace = { resource = "namespace" }, pod = { resource = "pod" } }
name = { matches = "^(.*)_total$", as = "${1}_per_second" }
metrics_query = 'sum(rate(<<.Series>>{<<.LabelMatchers>>}[2m])) by (<<.GroupBy>>)'
on_missing = "zero"

[[external_rules]]
series_query = 'queue_messages_ready{namespace!=""}'
resources.overrides = { namespace = { resource = "namespace" } }
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
namespaced = false
"#,
        )
        .expect("parses");
        let prometheus = cfg.prometheus.as_ref().expect("[prometheus]");
        assert_eq!(prometheus.timeout, Duration::from_secs(5));
        assert_eq!(prometheus.discovery_timeout, Duration::from_secs(60));
        assert_eq!(cfg.cache.discovery_interval, Duration::from_secs(60));
        assert_eq!(cfg.rules.len(), 1);
        assert_eq!(cfg.rules[0].on_missing, OnMissing::Zero);
        assert_eq!(cfg.rules[0].name.as_.as_deref(), Some("${1}_per_second"));
        assert_eq!(cfg.rules[0].resources.overrides["pod"].resource, "pod");
        assert_eq!(cfg.external_rules[0].namespaced, Some(false));
        assert_eq!(prometheus.headers["X-Scope-OrgID"], "team-a");
    }

    #[test]
    fn parses_named_backends() {
        let cfg = parse_str(
            r#"
[[backends]]
name = "thanos"
url = "http://thanos-query:9090"
failover = ["replica"]

[[backends]]
name = "replica"
url = "http://prometheus:9090"
default = true
method = "POST"

[[rules]]
series_query = 'up'
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
backend = "thanos"

[resource_rules]
backend = "replica"
"#,
        )
        .expect("parses");
        assert_eq!(cfg.prometheus, None);
        assert_eq!(cfg.backends.len(), 2);
        assert_eq!(cfg.backends[0].name.as_deref(), Some("thanos"));
        assert_eq!(cfg.backends[0].failover, ["replica"]);
        assert!(cfg.backends[1].default);
        assert_eq!(cfg.backends[1].method, HttpMethod::Post);
        assert_eq!(cfg.backends[1].timeout, Duration::from_secs(5));
        assert_eq!(cfg.rules[0].backend.as_deref(), Some("thanos"));
        let resource = cfg.resource_rules.as_ref().expect("[resource_rules]");
        assert_eq!(resource.backend.as_deref(), Some("replica"));
    }

    #[test]
    fn defaults_apply_to_empty_file() {
        let cfg = parse_str("").expect("parses");
        assert_eq!(cfg, ConfigFile::default());
        assert_eq!(cfg.cache.series_max_age(), Duration::from_secs(60));
    }

    #[test]
    fn unknown_field_names_the_rule() {
        let err = parse_str("[[rules]]\nseries_query = 'x'\nmetric_query = 'y'\n")
            .expect_err("typo must fail")
            .to_string();
        assert!(err.contains("metric_query"), "{err}");
        assert!(err.contains("rules[0]"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let err = parse_str("[[rules]]\nseries_query = 3\n")
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("rules[0].series_query"), "{err}");
    }

    #[test]
    fn bad_duration_names_the_field() {
        let err = parse_str("[cache]\nttl = \"ten seconds\"\n")
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("cache.ttl"), "{err}");
    }

    #[test]
    fn sizes_take_units_and_bad_ones_name_the_field() {
        let cfg = parse_str(
            "[prometheus]\nmax_response_bytes = \"8MiB\"\n[cache]\nmax_bytes = 1048576\n",
        )
        .expect("parses");
        let prometheus = cfg.prometheus.expect("[prometheus]");
        assert_eq!(prometheus.max_response_bytes, ByteSize(8 << 20));
        assert_eq!(cfg.cache.max_bytes, ByteSize(1 << 20));
        let d = ConfigFile::default();
        assert_eq!(
            BackendConfig::default().max_response_bytes,
            ByteSize(64 << 20)
        );
        assert_eq!(d.cache.max_bytes, ByteSize(64 << 20));
        for (text, bytes) in [
            ("64Mi", 64 << 20),
            ("10 MB", 10_000_000),
            ("1gib", 1 << 30),
            ("512", 512),
            ("2KiB", 2048),
        ] {
            assert_eq!(ByteSize::parse(text), Ok(ByteSize(bytes)), "{text}");
        }
        for bad in [
            "",
            "MiB",
            "1.5MiB",
            "-1",
            "5 parsecs",
            "99999999999999999999GiB",
        ] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
        let err = parse_str("[prometheus]\nmax_response_bytes = \"lots\"\n")
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("prometheus.max_response_bytes"), "{err}");
        let err = parse_str("[cache]\nmax_bytes = -3\n")
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("cache.max_bytes"), "{err}");
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn parses_resource_rules() {
        let cfg = parse_str(
            r#"
[resource_rules]
window = "2m"
missing_containers = "zero"
[resource_rules.cpu]
container_query = 'sum by (<<.GroupBy>>) (rate(container_cpu_usage_seconds_total{<<.LabelMatchers>>,container!=""}[2m]))'
node_query = 'sum by (<<.GroupBy>>) (rate(node_cpu_usage_seconds_total{<<.LabelMatchers>>}[2m]))'
resources.overrides = { namespace = { resource = "namespace" }, pod = { resource = "pod" }, node = { resource = "node" } }
container_label = "container"
[resource_rules.memory]
container_query = 'sum by (<<.GroupBy>>) (container_memory_working_set_bytes{<<.LabelMatchers>>,container!=""})'
node_query = 'sum by (<<.GroupBy>>) (node_memory_working_set_bytes{<<.LabelMatchers>>})'
resources.template = "<<.Resource>>"
container_label = "container"
"#,
        )
        .expect("parses");
        let rr = cfg.resource_rules.expect("resource_rules");
        assert_eq!(rr.window, Some(Duration::from_secs(120)));
        assert_eq!(rr.missing_containers, MissingContainers::Zero);
        let cpu = rr.cpu.expect("cpu");
        assert_eq!(cpu.container_label, "container");
        assert_eq!(cpu.resources.overrides["node"].resource, "node");
        assert!(cpu.node_query.contains("node_cpu_usage_seconds_total"));
        let memory = rr.memory.expect("memory");
        assert_eq!(memory.resources.template.as_deref(), Some("<<.Resource>>"));

        let defaults = parse_str("[resource_rules]\n").expect("parses");
        let rr = defaults.resource_rules.expect("present");
        assert_eq!(rr.window, None);
        assert_eq!(rr.missing_containers, MissingContainers::DropPod);
        assert!(rr.cpu.is_none() && rr.memory.is_none());
        assert_eq!(ConfigFile::default().resource_rules, None);
    }

    #[test]
    fn resource_rules_errors_name_section_and_field() {
        for (text, needle) in [
            (
                "[resource_rules]\nwindw = \"2m\"\n",
                "resource_rules.windw: unknown field: found `windw`",
            ),
            (
                "[resource_rules.cpu]\ncontainer_querry = 'x'\n",
                "resource_rules.cpu.container_querry: unknown field",
            ),
            (
                "[resource_rules.memory]\nresources.overides = {}\n",
                "resource_rules.memory.resources.overides: unknown field",
            ),
            (
                "[resource_rules]\nwindow = \"two minutes\"\n",
                "resource_rules.window",
            ),
            (
                "[resource_rules]\nmissing_containers = \"drop\"\n",
                "resource_rules.missing_containers",
            ),
            (
                "[resource_rules.cpu]\ncontainer_label = 3\n",
                "resource_rules.cpu.container_label",
            ),
        ] {
            let err = parse_str(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = load(Path::new("/nonexistent/rules.toml")).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/rules.toml"));
    }
}
