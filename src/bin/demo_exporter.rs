//! `demo-exporter`: a tiny Prometheus exporter whose series are set over a
//! JSON control API, so integration tests can drive a real Prometheus with
//! known, changeable data. It deliberately uses nothing from the main crate:
//! it stands in for a third-party workload.
//!
//! CLI: `demo-exporter --listen 127.0.0.1:PORT [--empty]` (`--listen` also from
//! `DEMO_EXPORTER_LISTEN`; port 0 picks a free port). The first stdout line is
//! `listening on http://ADDR` with the bound address; tests read it.
//!
//! API:
//! - `GET /metrics`: text exposition format 0.0.4, series sorted.
//! - `PUT /series`: create or update one series, e.g.
//!   `{"name":"queue_messages_ready","labels":{"queue":"orders"},"type":"gauge","value":42}` or
//!   `{"name":"http_requests_total","labels":{..},"type":"counter","rate":2.5}`
//!   (a counter may also give `value`: its start value, or a new value that is
//!   not below the current one). Counters grow at `rate`/s; changing the rate
//!   keeps the value continuous.
//! - `DELETE /series` with `{"name":..,"labels":{..}}`: remove one series.
//! - `GET /series`: list as JSON. `DELETE /series/all`: remove all.
//! - Bad input gets 400 with `{"error":".."}`.
//!
//! Demo scenario (unless `--empty`), all counters starting at 0:
//! - `http_requests_total{namespace="demo",service="web",pod="web-0"}` counter, 1.5/s
//! - `http_requests_total{namespace="demo",service="web",pod="web-1"}` counter, 3/s
//! - `http_requests_total{namespace="demo",service="web",pod="web-2"}` counter, 0.25/s
//! - `http_requests_total{namespace="other",service="api",pod="api-0"}` counter, 0.5/s
//! - `namespace_active_sessions{namespace="demo"}` gauge 17, `{namespace="other"}` gauge 4
//! - `queue_messages_ready{namespace="demo",queue="orders"}` gauge 42,
//!   `{namespace="demo",queue="emails"}` gauge 7
//! - `nginx_ingress_controller_requests_total{namespace="demo",ingress="web",status="200"}` counter, 5/s

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use serde::{Deserialize, Serialize};
use warp::http::StatusCode;
use warp::hyper::body::Bytes;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

/// Largest accepted control request; series are small.
const MAX_BODY: u64 = 64 * 1024;
/// Bounds memory if a test (or anyone) loops on PUT; `--max-series` raises it (the cluster-scale
/// benchmark holds four series per pod).
const MAX_SERIES: usize = 10_000;

#[derive(Parser, Debug)]
#[command(
    name = "demo-exporter",
    about = "Prometheus demo exporter with a JSON control API"
)]
struct Args {
    /// Address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, env = "DEMO_EXPORTER_LISTEN", default_value = "127.0.0.1:9899")]
    listen: SocketAddr,
    /// Start with no series instead of the demo scenario.
    #[arg(long)]
    empty: bool,
    /// Most series the control API may create.
    #[arg(long, default_value_t = MAX_SERIES)]
    max_series: usize,
}

type Labels = BTreeMap<String, String>;

/// Identity of a series; ordering gives the stable, grouped exposition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesKey {
    name: String,
    labels: Labels,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SeriesType {
    Gauge,
    Counter,
}

impl SeriesType {
    fn as_str(self) -> &'static str {
        match self {
            SeriesType::Gauge => "gauge",
            SeriesType::Counter => "counter",
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Sample {
    Gauge {
        value: f64,
    },
    /// Stored as a line so the value is computed at scrape time, exactly.
    Counter {
        base: f64,
        rate: f64,
        since: Instant,
    },
}

impl Sample {
    fn value_at(&self, now: Instant) -> f64 {
        match *self {
            Sample::Gauge { value } => value,
            Sample::Counter { base, rate, since } => {
                base + rate * now.saturating_duration_since(since).as_secs_f64()
            }
        }
    }

    fn series_type(&self) -> SeriesType {
        match self {
            Sample::Gauge { .. } => SeriesType::Gauge,
            Sample::Counter { .. } => SeriesType::Counter,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutRequest {
    name: String,
    #[serde(default)]
    labels: Labels,
    #[serde(rename = "type")]
    kind: SeriesType,
    value: Option<f64>,
    rate: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    name: String,
    #[serde(default)]
    labels: Labels,
}

#[derive(Debug, Serialize)]
struct SeriesView {
    name: String,
    labels: Labels,
    #[serde(rename = "type")]
    kind: SeriesType,
    value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate: Option<f64>,
}

/// Name, labels and sample of one demo series.
type DemoEntry = (
    &'static str,
    &'static [(&'static str, &'static str)],
    Sample,
);

#[derive(Debug)]
struct Store {
    series: BTreeMap<SeriesKey, Sample>,
    max_series: usize,
}

impl Default for Store {
    fn default() -> Store {
        Store {
            series: BTreeMap::new(),
            max_series: MAX_SERIES,
        }
    }
}

impl Store {
    /// The scenario from the module docs: pod-, namespace- and external-style data.
    fn demo(now: Instant) -> Store {
        let mut store = Store::default();
        let counter = |rate| Sample::Counter {
            base: 0.0,
            rate,
            since: now,
        };
        let gauge = |value| Sample::Gauge { value };
        let entries: [DemoEntry; 9] = [
            (
                "http_requests_total",
                &[("namespace", "demo"), ("service", "web"), ("pod", "web-0")],
                counter(1.5),
            ),
            (
                "http_requests_total",
                &[("namespace", "demo"), ("service", "web"), ("pod", "web-1")],
                counter(3.0),
            ),
            (
                "http_requests_total",
                &[("namespace", "demo"), ("service", "web"), ("pod", "web-2")],
                counter(0.25),
            ),
            (
                "http_requests_total",
                &[("namespace", "other"), ("service", "api"), ("pod", "api-0")],
                counter(0.5),
            ),
            (
                "namespace_active_sessions",
                &[("namespace", "demo")],
                gauge(17.0),
            ),
            (
                "namespace_active_sessions",
                &[("namespace", "other")],
                gauge(4.0),
            ),
            (
                "queue_messages_ready",
                &[("namespace", "demo"), ("queue", "orders")],
                gauge(42.0),
            ),
            (
                "queue_messages_ready",
                &[("namespace", "demo"), ("queue", "emails")],
                gauge(7.0),
            ),
            (
                "nginx_ingress_controller_requests_total",
                &[("namespace", "demo"), ("ingress", "web"), ("status", "200")],
                counter(5.0),
            ),
        ];
        for (name, labels, sample) in entries {
            let key = SeriesKey {
                name: name.to_owned(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            };
            store.series.insert(key, sample);
        }
        store
    }

    fn put(&mut self, req: PutRequest, now: Instant) -> Result<(), String> {
        let key = validate_key(req.name, req.labels)?;
        for (name, v) in [("value", req.value), ("rate", req.rate)] {
            if let Some(v) = v {
                if !v.is_finite() {
                    return Err(format!("{name} must be a finite number"));
                }
            }
        }
        // One `# TYPE` line per metric name, so all its series must agree. They all do already,
        // so one other series of the name tells (scanning them all made creating a family of
        // n series take n^2 steps: minutes for the benchmark's 50,000 pods).
        if let Some((other, sample)) = self
            .series
            .range(family_start(&key.name)..)
            .take_while(|(k, _)| k.name == key.name)
            .find(|(k, _)| k.labels != key.labels)
            .filter(|(_, s)| s.series_type() != req.kind)
        {
            return Err(format!(
                "metric {} already has {} series ({:?}); one name has one type",
                key.name,
                sample.series_type().as_str(),
                other.labels
            ));
        }
        let sample = match req.kind {
            SeriesType::Gauge => {
                if req.rate.is_some() {
                    return Err("a gauge takes `value`, not `rate`".into());
                }
                let value = req.value.ok_or("a gauge needs `value`")?;
                Sample::Gauge { value }
            }
            SeriesType::Counter => {
                let rate = req.rate.ok_or("a counter needs `rate` (per second)")?;
                if rate < 0.0 {
                    return Err("counter rate must be >= 0 (counters never decrease)".into());
                }
                let current = match self.series.get(&key) {
                    Some(old @ Sample::Counter { .. }) => Some(old.value_at(now)),
                    _ => None,
                };
                let base = match (req.value, current) {
                    (Some(v), _) if v < 0.0 => return Err("counter value must be >= 0".into()),
                    (Some(v), Some(cur)) if v < cur => {
                        return Err(format!(
                            "counter value {v} is below its current value {cur}; counters never decrease"
                        ))
                    }
                    (Some(v), _) => v,
                    (None, Some(cur)) => cur,
                    (None, None) => 0.0,
                };
                Sample::Counter {
                    base,
                    rate,
                    since: now,
                }
            }
        };
        if !self.series.contains_key(&key) && self.series.len() >= self.max_series {
            return Err(format!("too many series (limit {})", self.max_series));
        }
        self.series.insert(key, sample);
        Ok(())
    }

    fn remove(&mut self, req: KeyRequest) -> Result<bool, String> {
        let key = validate_key(req.name, req.labels)?;
        Ok(self.series.remove(&key).is_some())
    }

    fn clear(&mut self) -> usize {
        let n = self.series.len();
        self.series.clear();
        n
    }

    fn list(&self, now: Instant) -> Vec<SeriesView> {
        self.series
            .iter()
            .map(|(key, sample)| SeriesView {
                name: key.name.clone(),
                labels: key.labels.clone(),
                kind: sample.series_type(),
                value: sample.value_at(now),
                rate: match sample {
                    Sample::Counter { rate, .. } => Some(*rate),
                    Sample::Gauge { .. } => None,
                },
            })
            .collect()
    }

    /// Text format 0.0.4; the map's order groups each family and sorts series.
    fn render(&self, now: Instant) -> String {
        let mut out = String::new();
        let mut family: Option<&str> = None;
        for (key, sample) in &self.series {
            if family != Some(key.name.as_str()) {
                family = Some(key.name.as_str());
                let _ = writeln!(out, "# TYPE {} {}", key.name, sample.series_type().as_str());
            }
            out.push_str(&key.name);
            if !key.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in key.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label_value(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", sample.value_at(now));
        }
        out
    }
}

/// Smallest key with this name, to range over one family.
fn family_start(name: &str) -> SeriesKey {
    SeriesKey {
        name: name.to_owned(),
        labels: Labels::new(),
    }
}

fn validate_key(name: String, labels: Labels) -> Result<SeriesKey, String> {
    if !is_metric_name(&name) {
        return Err(format!(
            "invalid metric name {name:?}: must match [a-zA-Z_:][a-zA-Z0-9_:]*"
        ));
    }
    for (k, v) in &labels {
        if !is_label_name(k) {
            return Err(format!(
                "invalid label name {k:?}: must match [a-zA-Z_][a-zA-Z0-9_]*"
            ));
        }
        if k.starts_with("__") {
            return Err(format!("label name {k:?} is reserved (starts with __)"));
        }
        if v.is_empty() {
            // Prometheus treats an empty value as an absent label: two keys could collide.
            return Err(format!("label {k:?} has an empty value"));
        }
    }
    Ok(SeriesKey { name, labels })
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Escapes per the text format: backslash, double quote and line feed.
fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

type Shared = Arc<Mutex<Store>>;

/// A panic elsewhere must not take the exporter down with poisoned state.
fn lock(store: &Shared) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|e| e.into_inner())
}

fn json_reply<T: Serialize>(status: StatusCode, body: &T) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

fn error_reply(status: StatusCode, msg: impl Into<String>) -> Response {
    json_reply(status, &serde_json::json!({ "error": msg.into() }))
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

fn routes(
    store: Shared,
) -> impl Filter<Extract = (Response,), Error = std::convert::Infallible> + Clone {
    // Paths before methods, so an unknown path is 404 rather than 405.
    let with_store = warp::any().map(move || store.clone());
    let body = warp::body::content_length_limit(MAX_BODY).and(warp::body::bytes());

    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_store.clone())
        .map(|store: Shared| {
            let text = lock(&store).render(Instant::now());
            warp::reply::with_header(
                text,
                "content-type",
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .into_response()
        });

    let list = warp::path!("series")
        .and(warp::get())
        .and(with_store.clone())
        .map(|store: Shared| json_reply(StatusCode::OK, &lock(&store).list(Instant::now())));

    let put = warp::path!("series")
        .and(warp::put())
        .and(with_store.clone())
        .and(body)
        .map(|store: Shared, body: Bytes| {
            let req: PutRequest = match parse_json(&body) {
                Ok(r) => r,
                Err(e) => return error_reply(StatusCode::BAD_REQUEST, e),
            };
            match lock(&store).put(req, Instant::now()) {
                Ok(()) => json_reply(StatusCode::OK, &serde_json::json!({ "ok": true })),
                Err(e) => error_reply(StatusCode::BAD_REQUEST, e),
            }
        });

    let clear = warp::path!("series" / "all")
        .and(warp::delete())
        .and(with_store.clone())
        .map(|store: Shared| {
            let removed = lock(&store).clear();
            json_reply(StatusCode::OK, &serde_json::json!({ "removed": removed }))
        });

    let delete = warp::path!("series")
        .and(warp::delete())
        .and(with_store)
        .and(body)
        .map(|store: Shared, body: Bytes| {
            let req: KeyRequest = match parse_json(&body) {
                Ok(r) => r,
                Err(e) => return error_reply(StatusCode::BAD_REQUEST, e),
            };
            // Idempotent, so test cleanup never fails on a missing series.
            match lock(&store).remove(req) {
                Ok(removed) => {
                    json_reply(StatusCode::OK, &serde_json::json!({ "removed": removed }))
                }
                Err(e) => error_reply(StatusCode::BAD_REQUEST, e),
            }
        });

    metrics
        .or(list)
        .unify()
        .or(put)
        .unify()
        .or(clear)
        .unify()
        .or(delete)
        .unify()
        .recover(handle_rejection)
        .unify()
}

/// Control clients get JSON errors, not warp's plain-text defaults.
async fn handle_rejection(err: Rejection) -> Result<Response, std::convert::Infallible> {
    let (status, msg) = if err.is_not_found() {
        (StatusCode::NOT_FOUND, "not found".to_owned())
    } else if err.find::<warp::reject::PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {MAX_BODY} bytes"),
        )
    } else if err.find::<warp::reject::LengthRequired>().is_some() {
        (
            StatusCode::LENGTH_REQUIRED,
            "content-length required".to_owned(),
        )
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed".to_owned(),
        )
    } else {
        (StatusCode::BAD_REQUEST, format!("{err:?}"))
    };
    Ok(error_reply(status, msg))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                eprintln!("demo-exporter: cannot watch SIGTERM ({e}); only ctrl-c stops it");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut store = if args.empty {
        Store::default()
    } else {
        Store::demo(Instant::now())
    };
    store.max_series = args.max_series;
    let store = Arc::new(Mutex::new(store));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading bound address")?;
    {
        // Tests parse this line to learn the port, so flush it now.
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}").context("writing to stdout")?;
        out.flush().context("flushing stdout")?;
    }

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = warp::serve(routes(store))
        .incoming(listener)
        .graceful(async {
            let _ = stop_rx.await;
        })
        .run();
    let mut server = tokio::spawn(server);
    tokio::select! {
        _ = shutdown_signal() => {}
        res = &mut server => {
            anyhow::bail!("server stopped unexpectedly: {res:?}");
        }
    }
    let _ = stop_tx.send(());
    // Keep-alive scrape connections could hold graceful shutdown open; bound it.
    if tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .is_err()
    {
        eprintln!("demo-exporter: connections still open after 5s; exiting anyway");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn gauge(name: &str, l: &[(&str, &str)], value: f64) -> PutRequest {
        PutRequest {
            name: name.into(),
            labels: labels(l),
            kind: SeriesType::Gauge,
            value: Some(value),
            rate: None,
        }
    }

    fn counter(name: &str, l: &[(&str, &str)], rate: f64) -> PutRequest {
        PutRequest {
            name: name.into(),
            labels: labels(l),
            kind: SeriesType::Counter,
            value: None,
            rate: Some(rate),
        }
    }

    #[test]
    fn renders_sorted_families_with_type_lines_and_escapes() {
        let now = Instant::now();
        let mut s = Store::default();
        s.put(gauge("b_gauge", &[("z", "1"), ("a", "2")], 1.5), now)
            .unwrap();
        s.put(
            gauge("a_gauge", &[("v", "back\\slash \"q\"\nnl")], 42.0),
            now,
        )
        .unwrap();
        s.put(gauge("b_gauge", &[("a", "1")], -3.0), now).unwrap();
        s.put(gauge("no_labels", &[], 0.0), now).unwrap();
        assert_eq!(
            s.render(now),
            "# TYPE a_gauge gauge\n\
             a_gauge{v=\"back\\\\slash \\\"q\\\"\\nnl\"} 42\n\
             # TYPE b_gauge gauge\n\
             b_gauge{a=\"1\"} -3\n\
             b_gauge{a=\"2\",z=\"1\"} 1.5\n\
             # TYPE no_labels gauge\n\
             no_labels 0\n"
        );
    }

    #[test]
    fn one_name_keeps_one_type_among_many_series() {
        let mut s = Store::default();
        let now = Instant::now();
        for i in 0..1000 {
            let pod = i.to_string();
            s.put(gauge("g", &[("pod", pod.as_str())], 1.0), now)
                .unwrap();
        }
        let err = s
            .put(counter("g", &[("pod", "new")], 1.0), now)
            .unwrap_err();
        assert!(err.contains("one name has one type"), "{err}");
        // The only series of its name may change its type.
        s.put(gauge("alone", &[("pod", "a")], 1.0), now).unwrap();
        s.put(counter("alone", &[("pod", "a")], 1.0), now).unwrap();
    }

    #[test]
    fn counter_grows_linearly_and_stays_continuous_on_rate_change() {
        let t0 = Instant::now();
        let mut s = Store::default();
        s.put(counter("c_total", &[("p", "x")], 2.0), t0).unwrap();
        let t1 = t0 + Duration::from_secs(10);
        let key = SeriesKey {
            name: "c_total".into(),
            labels: labels(&[("p", "x")]),
        };
        assert_eq!(s.series[&key].value_at(t1), 20.0);
        s.put(counter("c_total", &[("p", "x")], 0.5), t1).unwrap();
        assert_eq!(s.series[&key].value_at(t1), 20.0);
        assert_eq!(s.series[&key].value_at(t1 + Duration::from_secs(4)), 22.0);
        assert!(s
            .render(t1)
            .contains("# TYPE c_total counter\nc_total{p=\"x\"} 20\n"));
        // Lowering the value would be a counter reset: refused.
        let mut lower = counter("c_total", &[("p", "x")], 1.0);
        lower.value = Some(5.0);
        assert!(s.put(lower, t1).unwrap_err().contains("never decrease"));
        assert!(s.put(counter("c_total", &[("p", "x")], -1.0), t1).is_err());
    }

    #[test]
    fn rejects_bad_names_labels_and_numbers() {
        let now = Instant::now();
        let mut s = Store::default();
        for bad in ["", "1abc", "a-b", "a b", "é"] {
            assert!(s.put(gauge(bad, &[], 1.0), now).is_err(), "{bad:?}");
        }
        for ok in ["a", "_a", ":a:b_c9", "ns:metric_total"] {
            assert!(s.put(gauge(ok, &[], 1.0), now).is_ok(), "{ok:?}");
        }
        for bad in ["", "1a", "a:b", "a-b", "__name__", "__x"] {
            assert!(
                s.put(gauge("m", &[(bad, "v")], 1.0), now).is_err(),
                "{bad:?}"
            );
        }
        assert!(s.put(gauge("m", &[("a", "")], 1.0), now).is_err());
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(s.put(gauge("m", &[], bad), now).is_err());
            assert!(s.put(counter("m_total", &[], bad), now).is_err());
        }
        let mut no_value = gauge("m", &[], 1.0);
        no_value.value = None;
        assert!(s.put(no_value, now).is_err());
        // One type per metric name.
        s.put(gauge("mixed", &[("a", "1")], 1.0), now).unwrap();
        assert!(s.put(counter("mixed", &[("a", "2")], 1.0), now).is_err());
    }

    #[test]
    fn demo_scenario_has_expected_series() {
        let s = Store::demo(Instant::now());
        let text = s.render(Instant::now());
        assert_eq!(s.series.len(), 9);
        assert!(text.contains("# TYPE http_requests_total counter\n"));
        assert!(text.contains("namespace_active_sessions{namespace=\"demo\"} 17\n"));
        assert!(text.contains("queue_messages_ready{namespace=\"demo\",queue=\"orders\"} 42\n"));
        assert_eq!(text.matches("# TYPE").count(), 4);
    }

    async fn call(
        store: &Shared,
        method: &str,
        path: &str,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let resp = warp::test::request()
            .method(method)
            .path(path)
            .body(body)
            .reply(&routes(store.clone()))
            .await;
        let json = serde_json::from_slice(resp.body()).unwrap_or(serde_json::Value::Null);
        (resp.status(), json)
    }

    #[tokio::test]
    async fn http_api_validates_and_round_trips() {
        let store: Shared = Arc::default();
        let (st, _) = call(
            &store,
            "PUT",
            "/series",
            r#"{"name":"queue_messages_ready","labels":{"queue":"orders"},"type":"gauge","value":42}"#,
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        for bad in [
            "not json",
            r#"{"name":"x","type":"gauge"}"#,
            r#"{"name":"x","type":"histogram","value":1}"#,
            r#"{"name":"x","type":"gauge","value":1e999}"#,
            r#"{"name":"x y","type":"gauge","value":1}"#,
            r#"{"name":"x","type":"gauge","value":1,"extra":true}"#,
        ] {
            let (st, json) = call(&store, "PUT", "/series", bad).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
            assert!(json["error"].is_string(), "{bad}: {json}");
        }
        let (st, json) = call(&store, "GET", "/series", "").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(json[0]["value"], 42.0);
        assert_eq!(json[0]["type"], "gauge");
        let (st, json) = call(
            &store,
            "DELETE",
            "/series",
            r#"{"name":"queue_messages_ready","labels":{"queue":"orders"}}"#,
        )
        .await;
        assert_eq!(
            (st, json["removed"].as_bool()),
            (StatusCode::OK, Some(true))
        );
        let (st, _) = call(&store, "GET", "/nope", "").await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, json) = call(&store, "DELETE", "/series/all", "").await;
        assert_eq!((st, json["removed"].as_u64()), (StatusCode::OK, Some(0)));
    }

    #[tokio::test]
    async fn metrics_endpoint_sets_text_format_content_type() {
        let store: Shared = Arc::new(Mutex::new(Store::demo(Instant::now())));
        let resp = warp::test::request()
            .path("/metrics")
            .reply(&routes(store))
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
    }
}
