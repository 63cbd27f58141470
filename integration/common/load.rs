//! A small load generator for fault tests: N tokio client tasks on loopback, each sending
//! GETs one after another (with an optional pause) until the run's duration or request
//! budget is spent or it is stopped. Every request is recorded (start and end since the
//! run began, HTTP status or transport error, and the body), and [`Report`] sums them up:
//! ok, failed by kind, max latency, first recovery after a point in time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How much load, and for how long at most.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Stop after this long even if never stopped (the test's own safety bound).
    pub max_duration: Duration,
    /// Stop after this many requests in all.
    pub max_requests: usize,
    /// Pause between a client's requests.
    pub pause: Duration,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            max_duration: Duration::from_secs(120),
            max_requests: 200_000,
            pause: Duration::from_millis(20),
        }
    }
}

/// What became of a request that got no HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// No connection: refused, or closed during the TLS handshake, before any byte of
    /// the request reached a handler (a clean refusal).
    Connect,
    /// The client's own deadline passed.
    Timeout,
    /// The connection ended after the request was sent and before the response head.
    Request,
    /// The response head arrived, then the body broke: a reset mid-response.
    Body,
    Other,
}

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    Error(ErrorKind, String),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Status(200))
    }

    /// "200", "503", "connect", "timeout", ... for summaries.
    pub fn label(&self) -> String {
        match self {
            Outcome::Status(s) => s.to_string(),
            Outcome::Error(k, _) => format!("{k:?}").to_lowercase(),
        }
    }
}

/// One request as the client saw it.
#[derive(Debug, Clone)]
pub struct Record {
    pub client: usize,
    pub url: String,
    /// Since the run's start.
    pub start: Duration,
    pub end: Duration,
    pub outcome: Outcome,
    /// The body (empty on transport errors).
    pub body: String,
}

impl Record {
    pub fn latency(&self) -> Duration {
        self.end.saturating_sub(self.start)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Picks the URL of a client's `seq`th request.
pub type UrlFor = Arc<dyn Fn(usize, u64) -> String + Send + Sync>;

/// A running load.
pub struct Load {
    t0: Instant,
    stop: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<Record>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts one task per client in `clients`, each sending GETs to `url(client, seq)`.
    pub fn start(clients: Vec<reqwest::Client>, url: UrlFor, config: LoadConfig) -> Load {
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Vec::new()));
        let budget = Arc::new(AtomicUsize::new(config.max_requests));
        let tasks = clients
            .into_iter()
            .enumerate()
            .map(|(i, client)| {
                let (stop, records, budget) = (stop.clone(), records.clone(), budget.clone());
                let (url, config) = (url.clone(), config.clone());
                tokio::spawn(async move {
                    let mut seq = 0u64;
                    while !stop.load(Ordering::SeqCst)
                        && t0.elapsed() < config.max_duration
                        && budget
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok()
                    {
                        let target = url(i, seq);
                        seq += 1;
                        let start = t0.elapsed();
                        let (outcome, body) = one(&client, &target).await;
                        let end = t0.elapsed();
                        let failed_fast = matches!(outcome, Outcome::Error(..))
                            && end - start < Duration::from_millis(10);
                        records.lock().unwrap().push(Record {
                            client: i,
                            url: target,
                            start,
                            end,
                            outcome,
                            body,
                        });
                        // A refused connection comes back at once: do not spin on it.
                        let pause = if failed_fast {
                            config.pause.max(Duration::from_millis(10))
                        } else {
                            config.pause
                        };
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                })
            })
            .collect();
        Load {
            t0,
            stop,
            records,
            tasks,
        }
    }

    /// Time since the run started, on the records' clock.
    pub fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Requests recorded so far (a copy).
    pub fn snapshot(&self) -> Vec<Record> {
        self.records.lock().unwrap().clone()
    }

    /// Stops the clients (each finishes its current request) and returns every record.
    pub async fn finish(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            let _ = task.await;
        }
        let mut records = std::mem::take(&mut *self.records.lock().unwrap());
        records.sort_by_key(|r| r.start);
        Report { records }
    }
}

async fn one(client: &reqwest::Client, url: &str) -> (Outcome, String) {
    let response = match client.get(url).send().await {
        Ok(r) => r,
        Err(e) => return (Outcome::Error(kind(&e, false), chain(&e)), String::new()),
    };
    let status = response.status().as_u16();
    match response.text().await {
        Ok(body) => (Outcome::Status(status), body),
        Err(e) => (Outcome::Error(kind(&e, true), chain(&e)), String::new()),
    }
}

fn kind(e: &reqwest::Error, in_body: bool) -> ErrorKind {
    if e.is_timeout() {
        ErrorKind::Timeout
    } else if in_body || e.is_body() || e.is_decode() {
        ErrorKind::Body
    } else if e.is_connect() {
        ErrorKind::Connect
    } else if e.is_request() {
        ErrorKind::Request
    } else {
        ErrorKind::Other
    }
}

/// The error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Every request of a run, sorted by start.
pub struct Report {
    pub records: Vec<Record>,
}

impl Report {
    pub fn sent(&self) -> usize {
        self.records.len()
    }

    pub fn ok(&self) -> usize {
        self.records.iter().filter(|r| r.outcome.is_ok()).count()
    }

    pub fn failed(&self) -> usize {
        self.sent() - self.ok()
    }

    /// Non-200 outcomes by label ("503", "connect", ...).
    pub fn failed_by_kind(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in self.records.iter().filter(|r| !r.outcome.is_ok()) {
            *out.entry(r.outcome.label()).or_default() += 1;
        }
        out
    }

    pub fn max_latency(&self) -> Duration {
        self.records
            .iter()
            .map(Record::latency)
            .max()
            .unwrap_or_default()
    }

    /// Requests that started in `[from, to)`.
    pub fn between(&self, from: Duration, to: Duration) -> impl Iterator<Item = &Record> {
        self.records
            .iter()
            .filter(move |r| r.start >= from && r.start < to)
    }

    /// The end of the first request that started at or after `after` and was answered 200:
    /// when service came back, on the run's clock.
    pub fn first_ok_after(&self, after: Duration) -> Option<Duration> {
        self.records
            .iter()
            .filter(|r| r.start >= after && r.outcome.is_ok())
            .map(|r| r.end)
            .min()
    }

    /// The end of the last request that failed, if any did.
    pub fn last_failure_end(&self) -> Option<Duration> {
        self.records
            .iter()
            .filter(|r| !r.outcome.is_ok())
            .map(|r| r.end)
            .max()
    }

    /// A one-line summary for the test log.
    pub fn summary(&self, name: &str) -> String {
        format!(
            "{name}: {} requests from {} clients, {} ok, {} failed {:?}, max latency {:.0?}",
            self.sent(),
            self.records
                .iter()
                .map(|r| r.client)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            self.ok(),
            self.failed(),
            self.failed_by_kind(),
            self.max_latency()
        )
    }

    /// Up to `n` failed records, for assertion messages.
    pub fn failures(&self, n: usize) -> Vec<&Record> {
        self.records
            .iter()
            .filter(|r| !r.outcome.is_ok())
            .take(n)
            .collect()
    }
}
