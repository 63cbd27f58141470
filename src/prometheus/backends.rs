//! The backends of a rule set as clients, and failover between them.
//!
//! Each call names the backend its rule uses; the call goes to that backend and, when it is
//! unavailable (unreachable, past its deadline, 5xx, 429, or answering something that is not
//! Prometheus' API, such as a proxy's error page), to the backends of its `failover` list in
//! order. A query error (bad PromQL, an execution error) or an answer over the size limit is
//! the same on every replica, so it is returned at once rather than tried elsewhere.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::config::DiscoveryApi;

use super::breaker::{Breaker, Change, Outcome, Permit, FAILURES_TO_OPEN};
use super::client::{PrometheusClient, PrometheusError, QueryAnswer};
use super::series::SeriesSet;
use crate::metrics::{BackendLabels, FailoverLabels, Metrics};
use crate::rules::backends::{name_of, BackendSet};

#[derive(Debug)]
pub struct Backends {
    clients: BTreeMap<String, Arc<PrometheusClient>>,
    /// Backends whose chain holds a per-namespace (tenant) backend.
    per_namespace: std::collections::BTreeSet<String>,
    breakers: BTreeMap<String, Breaker>,
    /// Each backend's name with its clients in the order a call tries them.
    chains: BTreeMap<String, Vec<Arc<PrometheusClient>>>,
    default: String,
}

impl PrometheusError {
    /// Whether another backend might answer: the backend, not the query, is at fault.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            PrometheusError::Unavailable(_) | PrometheusError::Malformed(_)
        )
    }

    fn circuit_open(retry_in: std::time::Duration) -> Self {
        PrometheusError::Unavailable(format!(
            "{CIRCUIT_OPEN}: {FAILURES_TO_OPEN} or more calls in a row found the backend unavailable; next try in {}ms",
            retry_in.as_millis()
        ))
    }

    /// A call not made because the backend's circuit is open.
    pub fn is_circuit_open(&self) -> bool {
        matches!(self, PrometheusError::Unavailable(m) if m.starts_with(CIRCUIT_OPEN))
    }
}

const CIRCUIT_OPEN: &str = "circuit open";

/// An unavailable answer faster than this does not count toward opening the circuit.
const SLOW_FAILURE: std::time::Duration = std::time::Duration::from_millis(250);

/// Label-API calls in flight at once for one listing.
const LABEL_CALLS: usize = 8;

/// A listing by the label API: the names `selector` finds, then each name's label names.
/// The answers are as large as the distinct names, not the series. A name whose own listing
/// finds no labels is left out: a backend that ignores `match[]` on label values lists every
/// name, and this drops the ones the selector does not match.
async fn by_labels(
    client: &PrometheusClient,
    selector: &str,
    start: SystemTime,
) -> Result<SeriesSet, PrometheusError> {
    use futures::StreamExt;
    let names = client.label_values("__name__", selector, start).await?;
    let mut set = SeriesSet::default();
    let mut valid = Vec::with_capacity(names.len());
    for name in names {
        if crate::promql::is_metric_name(&name) {
            valid.push(name);
        } else {
            // Counted and remembered as dropped, never put into a selector.
            set.add(&name, std::iter::empty::<String>());
        }
    }
    let mut answers = futures::stream::iter(valid.into_iter().map(|name| async move {
        let one = with_name(selector, &name);
        (name, client.label_names(&one, start).await)
    }))
    .buffer_unordered(LABEL_CALLS);
    while let Some((name, labels)) = answers.next().await {
        let labels: Vec<String> = labels?.into_iter().filter(|l| l != "__name__").collect();
        if !labels.is_empty() {
            set.add(&name, labels);
        }
    }
    Ok(set)
}

/// `selector` narrowed to series named `name` (a valid metric name): its matchers with
/// `__name__="name"` added, in the all-braces form (a selector's name becomes a `__name__`
/// matcher, as Prometheus refuses a name and a `__name__` matcher together).
pub fn with_name(selector: &str, name: &str) -> String {
    let selector = selector.trim();
    let (fixed, rest) = match selector.find('{') {
        Some(i) => (selector[..i].trim(), &selector[i + 1..]),
        None => (selector, "}"),
    };
    let rest = rest.trim_start();
    let mut out = format!("{{__name__=\"{name}\"");
    if !fixed.is_empty() {
        out.push_str(&format!(",__name__=\"{fixed}\""));
    }
    if !rest.starts_with('}') {
        out.push(',');
    }
    out.push_str(rest);
    out
}

/// Ends a permitted call as abandoned if its future is dropped before it finished.
struct Attempt<'a> {
    breaker: &'a Breaker,
    permit: Permit,
    finished: bool,
}

impl Attempt<'_> {
    fn finish(mut self, outcome: Outcome) -> Change {
        self.finished = true;
        self.breaker.record(self.permit, outcome)
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.breaker.record(self.permit, Outcome::Abandoned);
        }
    }
}

/// Runs `call` if `breaker` lets it, records what it found, and logs and counts the
/// breaker's changes.
async fn guarded<T, F, Fut>(
    breaker: &Breaker,
    client: &PrometheusClient,
    metrics: &Metrics,
    call: F,
) -> Result<T, PrometheusError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, PrometheusError>>,
{
    let permit = breaker.permit();
    if let Permit::Refused(retry_in) = permit {
        return Err(PrometheusError::circuit_open(retry_in));
    }
    let attempt = Attempt {
        breaker,
        permit,
        finished: false,
    };
    let started = Instant::now();
    let result = call().await;
    let outcome = match &result {
        // A refused connection fails in milliseconds: it costs a request nothing, and
        // counting it would keep a restarted backend unused for a backoff. Only failures
        // that made the caller wait count.
        Err(e) if e.is_unavailable() && started.elapsed() < SLOW_FAILURE => Outcome::Abandoned,
        Err(e) if e.is_unavailable() => Outcome::Unavailable,
        _ => Outcome::Up,
    };
    let gauge = || {
        metrics.backend_circuit_open.get_or_create(&BackendLabels {
            backend: client.name().to_string(),
        })
    };
    match attempt.finish(outcome) {
        Change::Opened { retry_in } => {
            gauge().set(1);
            tracing::warn!(
                backend = client.name(),
                retry_in_ms = retry_in.as_millis() as u64,
                "backend circuit opened: calls fail at once until a trial call finds it back"
            );
        }
        Change::Closed => {
            gauge().set(0);
            tracing::info!(backend = client.name(), "backend back: circuit closed");
        }
        Change::None => {}
    }
    result
}

impl Backends {
    /// One client per backend of the set.
    pub fn new(set: &BackendSet) -> anyhow::Result<Self> {
        let mut clients = BTreeMap::new();
        for backend in set.iter() {
            clients.insert(
                name_of(backend).to_string(),
                Arc::new(PrometheusClient::new(backend)?),
            );
        }
        let chains: BTreeMap<String, Vec<Arc<PrometheusClient>>> = set
            .iter()
            .map(|backend| {
                let name = name_of(backend);
                let chain = set
                    .chain(name)
                    .into_iter()
                    .filter_map(|b| clients.get(name_of(b)).cloned())
                    .collect();
                (name.to_string(), chain)
            })
            .collect();
        let per_namespace = chains
            .iter()
            .filter(|(_, chain)| chain.iter().any(|c| c.is_per_namespace()))
            .map(|(name, _)| name.clone())
            .collect();
        Ok(Backends {
            per_namespace,
            breakers: clients
                .keys()
                .map(|name| (name.clone(), Breaker::default()))
                .collect(),
            clients,
            chains,
            default: set.default_name().to_string(),
        })
    }

    /// The client of `name` (without its failover).
    pub fn client(&self, name: &str) -> Option<&Arc<PrometheusClient>> {
        self.clients.get(name)
    }

    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// Every backend's client, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<PrometheusClient>> {
        self.clients.values()
    }

    /// An instant query on `backend`, failing over when it is unavailable; `tenant` is the
    /// request's namespace, for per-namespace backends.
    pub async fn query(
        &self,
        backend: &str,
        promql: &str,
        tenant: Option<&str>,
        metrics: &Metrics,
    ) -> Result<QueryAnswer, PrometheusError> {
        self.call(backend, "query", metrics, |client| async move {
            client.query(promql, tenant).await
        })
        .await
    }

    /// Whether any backend of `backend`'s chain needs the request's namespace (asked per
    /// request; decided when the backends are built).
    pub fn is_per_namespace(&self, backend: &str) -> bool {
        self.per_namespace.contains(backend)
    }

    /// Discovery's listing of `selector` on `backend` (names and label names), failing over
    /// when it is unavailable; by the label API or the series API as the backend's
    /// `discovery_api` says.
    pub async fn series(
        &self,
        backend: &str,
        selector: &str,
        start: SystemTime,
        metrics: &Metrics,
    ) -> Result<SeriesSet, PrometheusError> {
        self.call(backend, "series", metrics, |client| async move {
            match client.discovery_api() {
                DiscoveryApi::Series => client.series(selector, start).await,
                DiscoveryApi::Labels => by_labels(client, selector, start).await,
                DiscoveryApi::Auto => match by_labels(client, selector, start).await {
                    // Down is down; anything else (a 404 for the endpoint, an answer this
                    // backend's label API gives in another shape) means "not here".
                    Err(e) if !matches!(e, PrometheusError::Unavailable(_)) => {
                        tracing::warn!(backend = client.name(), series_query = selector, error = %e, "the label API did not answer a discovery listing; this backend is listed with the series API from now on (discovery_api = \"series\" says so up front)");
                        client.label_api_failed();
                        client.series(selector, start).await
                    }
                    other => other,
                },
            }
        })
        .await
    }

    /// Runs `attempt` on each client of `backend`'s chain until one is not unavailable;
    /// returns the last error when none answers.
    async fn call<'a, T, F, Fut>(
        &'a self,
        backend: &str,
        call: &'static str,
        metrics: &Metrics,
        attempt: F,
    ) -> Result<T, PrometheusError>
    where
        F: Fn(&'a PrometheusClient) -> Fut,
        Fut: Future<Output = Result<T, PrometheusError>>,
    {
        let Some(chain) = self.chains.get(backend) else {
            // Rules are checked against the backends they were loaded with; a rule naming
            // another one is a bug.
            return Err(PrometheusError::Unavailable(format!(
                "no backend named {backend:?}"
            )));
        };
        let mut last = None;
        for (i, client) in chain.iter().enumerate() {
            let started = Instant::now();
            let result = match self.breakers.get(client.name()) {
                Some(breaker) => guarded(breaker, client, metrics, || attempt(client)).await,
                None => attempt(client).await,
            };
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) if e.is_circuit_open() => "circuit_open",
                Err(e) => e.kind(),
            };
            metrics.observe_prometheus(client.name(), call, outcome, started.elapsed());
            match result {
                Err(e) if e.is_unavailable() => {
                    if let Some(next) = chain.get(i + 1) {
                        metrics
                            .backend_failovers
                            .get_or_create(&FailoverLabels {
                                backend: client.name().to_string(),
                                to: next.name().to_string(),
                            })
                            .inc();
                        tracing::warn!(backend = client.name(), next = next.name(), call, error = %e, "backend unavailable; failing over");
                    }
                    last = Some(e);
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| {
            PrometheusError::Unavailable(format!("backend {backend:?} has no clients"))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(text: &str) -> Backends {
        let file = crate::config::parse(text, std::path::Path::new("t.toml")).expect("parses");
        let mut problems = Vec::new();
        let set = BackendSet::compile(&file, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        Backends::new(&set).expect("clients")
    }

    /// A port nothing listens on (bound, then released).
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    }

    #[test]
    fn selectors_narrowed_to_one_name_stay_valid_promql() {
        for (selector, want) in [
            ("{namespace!=\"\"}", "{__name__=\"x\",namespace!=\"\"}"),
            (
                "{ namespace!=\"\", pod=~\".+\" }",
                "{__name__=\"x\",namespace!=\"\", pod=~\".+\" }",
            ),
            ("up", "{__name__=\"x\",__name__=\"up\"}"),
            ("up{}", "{__name__=\"x\",__name__=\"up\"}"),
            (
                "http_requests_total{namespace!=\"\",pod!=\"\"}",
                "{__name__=\"x\",__name__=\"http_requests_total\",namespace!=\"\",pod!=\"\"}",
            ),
            ("{a=\"{\"}", "{__name__=\"x\",a=\"{\"}"),
        ] {
            let got = with_name(selector, "x");
            assert_eq!(got, want, "{selector}");
            crate::promql::parse(&got).unwrap_or_else(|e| panic!("{got}: {e}"));
        }
    }

    #[tokio::test]
    async fn unreachable_backend_fails_over_and_is_counted() {
        let (a, b) = (closed_port(), closed_port());
        let all = backends(&format!(
            "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:{a}\"\nfailover = [\"b\"]\n\
             [[backends]]\nname = \"b\"\nurl = \"http://127.0.0.1:{b}\"\n"
        ));
        let metrics = Metrics::new();
        let err = all
            .query("a", "up", None, &metrics)
            .await
            .expect_err("both down");
        assert!(err.is_unavailable(), "{err}");
        let failovers = metrics
            .backend_failovers
            .get_or_create(&FailoverLabels {
                backend: "a".into(),
                to: "b".into(),
            })
            .get();
        assert_eq!(failovers, 1);
        // Both were tried, each once.
        let text = metrics.encode();
        for backend in ["a", "b"] {
            let line = format!(
                "kube_metrics_bridge_prometheus_request_duration_seconds_count{{backend=\"{backend}\",call=\"query\",outcome=\"unavailable\"}} 1"
            );
            assert!(text.contains(&line), "{line} not in\n{text}");
        }
        // b has no failover of its own.
        all.query("b", "up", None, &metrics)
            .await
            .expect_err("down");
        assert_eq!(
            metrics
                .backend_failovers
                .get_or_create(&FailoverLabels {
                    backend: "b".into(),
                    to: "a".into(),
                })
                .get(),
            0
        );
        assert_eq!(all.default_name(), "a");
        assert!(all.client("b").is_some() && all.client("c").is_none());
    }
}
