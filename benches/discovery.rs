//! `cargo bench --bench discovery` (or `hack/bench.sh discovery`): series discovery at
//! 100,000 and 1,000,000 matching series, kube-metrics-bridge against prometheus-adapter
//! v0.12.0 on the same Prometheus, the same control plane and the same rule.
//!
//! Series get into Debian's Prometheus through its remote-write receiver (one sample each,
//! written in batches), `KMB_BENCH_METRICS` metric names spread over pods in 100 namespaces.
//! Then, for each size, each server is started alone and timed from spawn until its
//! `custom.metrics.k8s.io` discovery document lists every metric (a pods and a namespaces
//! entry per name): its CPU and peak RSS (VmHWM) until then, its RSS a few seconds later,
//! and what Prometheus did for it (discovery calls, bytes sent, time spent answering, from
//! Prometheus' own `/metrics`). The servers:
//! - prometheus-adapter, which lists every matching series (`/api/v1/series`);
//! - the bridge as shipped (`discovery_api = "auto"`: the label API, names then each name's
//!   label names);
//! - the bridge forced onto `/api/v1/series` (`discovery_api = "series"`, the fallback for an
//!   engine without the label API), which decodes the answer as it streams in.
//!
//! All three wait for the whole answer (the bridge's `discovery_timeout` is 10 minutes, as
//! prometheus-adapter has none; its `max_response_bytes` stays at the default, which bounds
//! what a series answer keeps, not its size) and list series seen in the last 10 minutes
//! (both relist every 10 minutes, so one discovery run per start). Nothing asserts on speed:
//! the run fails only when a server does not list exactly the expected metrics.
//!
//! Under `cargo test --all-targets` this binary runs without `--bench` and returns at once.

#[path = "../integration/common/mod.rs"]
mod common;
#[path = "shared/report.rs"]
mod report;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::adapter::{
    adapter_args, adapter_bin, log_tail, serving_args, serving_pair, spawn_logged,
    write_both_configs,
};
use common::bridge::tls_client_with;
use common::controlplane::{ControlPlane, Options};
use common::{free_port, Prometheus};
use futures::StreamExt;
use report::{fmt_num, fmt_ratio, machine, proc_sample, ProcSample};
use serde_json::{json, Value};

const NAMESPACES: usize = 100;
/// Series per remote-write request, and requests in flight.
const WRITE_BATCH: usize = 10_000;
const WRITES_IN_FLIGHT: usize = 2;
/// How long one server may take to list every metric.
const DISCOVERY_DEADLINE: Duration = Duration::from_secs(900);
/// How long after listing the resident memory is read again (what is held between runs).
const SETTLE: Duration = Duration::from_secs(5);
/// Both servers list series seen this long ago or later, and relist this often.
const RELIST: &str = "10m";

/// The rule both servers run, in prometheus-adapter's format; the bridge gets
/// `kube-metrics-bridge convert` of it.
const ADAPTER_CONFIG: &str = r#"rules:
- seriesQuery: '{__name__=~"bench_metric_.*",namespace!="",pod!=""}'
  resources:
    overrides:
      namespace: {resource: "namespace"}
      pod: {resource: "pod"}
  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
"#;

/// The Prometheus API handlers discovery calls.
const DISCOVERY_HANDLERS: [&str; 3] = [
    "handler=\"/api/v1/series\"",
    "handler=\"/api/v1/labels\"",
    "handler=\"/api/v1/label/:name/values\"",
];

fn main() {
    report::bench_main(
        "discovery: a benchmark; run it with `cargo bench --bench discovery` or `hack/bench.sh discovery`",
        "a server did not list the expected metrics",
        || run(Settings::from_env()),
    );
}

/// Knobs, from the environment (see `hack/bench/README.md`).
#[derive(Debug, Clone)]
struct Settings {
    /// Matching series at each step, ascending.
    sizes: Vec<usize>,
    /// Distinct metric names.
    metrics: usize,
}

impl Settings {
    fn from_env() -> Settings {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let mut sizes: Vec<usize> = var("KMB_BENCH_SERIES")
            .unwrap_or_else(|| "100000,1000000".into())
            .split(',')
            .map(|s| {
                s.trim()
                    .replace('_', "")
                    .parse()
                    .unwrap_or_else(|e| panic!("KMB_BENCH_SERIES: {s:?}: {e}"))
            })
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        let metrics = var("KMB_BENCH_METRICS")
            .map(|v| v.parse().expect("KMB_BENCH_METRICS: a number"))
            .unwrap_or(50);
        assert!(metrics > 0 && sizes.first().is_some_and(|&s| s >= metrics));
        Settings { sizes, metrics }
    }
}

fn metric_name(m: usize) -> String {
    format!("bench_metric_{m:03}")
}

/// Series `i`: metric `i % metrics` of pod `i / metrics`, pods spread over the namespaces.
fn series_labels(i: usize, metrics: usize) -> Vec<(&'static str, String)> {
    let pod = i / metrics;
    vec![
        ("__name__", metric_name(i % metrics)),
        ("namespace", format!("bench-{:02}", pod % NAMESPACES)),
        ("pod", format!("worker-{pod}")),
        ("container", "app".into()),
        (
            "instance",
            format!(
                "10.{}.{}.{}:8080",
                pod >> 16 & 255,
                pod >> 8 & 255,
                pod & 255
            ),
        ),
        ("job", "bench".into()),
    ]
}

/// Writes series `from..to` through remote write.
async fn ingest(prometheus: &Prometheus, from: usize, to: usize, metrics: usize) {
    let batches = (from..to).step_by(WRITE_BATCH).map(|start| {
        let end = (start + WRITE_BATCH).min(to);
        async move {
            let series: Vec<_> = (start..end).map(|i| series_labels(i, metrics)).collect();
            prometheus.remote_write_many(&series, 1.0).await;
        }
    });
    futures::stream::iter(batches)
        .buffer_unordered(WRITES_IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
}

/// One server to measure.
struct Variant {
    name: &'static str,
    header: &'static str,
    adapter: bool,
    envs: Vec<(&'static str, &'static str)>,
}

fn variants() -> Vec<Variant> {
    let bridge_envs = |api: &'static str| {
        vec![
            ("KMB_CONFIG_CACHE__DISCOVERY_INTERVAL", RELIST),
            ("KMB_CONFIG_PROMETHEUS__DISCOVERY_TIMEOUT", "600s"),
            ("KMB_CONFIG_PROMETHEUS__DISCOVERY_API", api),
        ]
    };
    vec![
        Variant {
            name: "prometheus-adapter",
            header: "prometheus-adapter",
            adapter: true,
            envs: vec![],
        },
        Variant {
            name: "kube-metrics-bridge",
            header: "bridge (label API)",
            adapter: false,
            envs: bridge_envs("auto"),
        },
        Variant {
            name: "kube-metrics-bridge-series-api",
            header: "bridge (series API)",
            adapter: false,
            envs: bridge_envs("series"),
        },
    ]
}

/// What Prometheus' discovery handlers have done so far.
#[derive(Debug, Clone, Copy, Default)]
struct HandlerTotals {
    calls: f64,
    seconds: f64,
    bytes: f64,
}

async fn handler_totals(prometheus: &Prometheus) -> HandlerTotals {
    let text = prometheus.own_metrics().await;
    let sum = |name: &str| {
        DISCOVERY_HANDLERS
            .iter()
            .map(|h| report::prometheus_sum(&text, name, h))
            .sum::<f64>()
    };
    HandlerTotals {
        calls: sum("prometheus_http_request_duration_seconds_count"),
        seconds: sum("prometheus_http_request_duration_seconds_sum"),
        bytes: sum("prometheus_http_response_size_bytes_sum"),
    }
}

/// The series in Prometheus' head block, from its own `/metrics`.
async fn head_series(prometheus: &Prometheus) -> f64 {
    let text = prometheus.own_metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix("prometheus_tsdb_head_series "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// One server's discovery at one size.
#[derive(Debug, Clone)]
struct Measured {
    seconds: f64,
    cpu_s: f64,
    hwm_mib: f64,
    rss_mib: f64,
    rss_settled_mib: f64,
    prometheus_calls: f64,
    prometheus_mib: f64,
    prometheus_seconds: f64,
    prometheus_cpu_s: f64,
}

impl Measured {
    /// A server that did not list every metric: no figures.
    fn failed() -> Measured {
        let nan = f64::NAN;
        Measured {
            seconds: nan,
            cpu_s: nan,
            hwm_mib: nan,
            rss_mib: nan,
            rss_settled_mib: nan,
            prometheus_calls: nan,
            prometheus_mib: nan,
            prometheus_seconds: nan,
            prometheus_cpu_s: nan,
        }
    }

    fn json(&self) -> Value {
        json!({
            "seconds_to_list_every_metric": self.seconds,
            "cpu_seconds": self.cpu_s,
            "vmhwm_mib": self.hwm_mib,
            "vmrss_at_listing_mib": self.rss_mib,
            "vmrss_settled_mib": self.rss_settled_mib,
            "prometheus_discovery_calls": self.prometheus_calls,
            "prometheus_bytes_sent_mib": self.prometheus_mib,
            "prometheus_seconds_answering": self.prometheus_seconds,
            "prometheus_cpu_seconds": self.prometheus_cpu_s,
        })
    }
}

/// The metric names (`pods/<name>` and `namespaces/<name>` entries) a discovery document lists.
fn listed(doc: &Value) -> BTreeSet<String> {
    doc["resources"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|e| e["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn expected(metrics: usize) -> BTreeSet<String> {
    (0..metrics)
        .flat_map(|m| {
            let name = metric_name(m);
            [format!("pods/{name}"), format!("namespaces/{name}")]
        })
        .collect()
}

/// Everything a server start needs.
struct Rig<'a> {
    prometheus: &'a Prometheus,
    cp: &'a ControlPlane,
    root: &'a Path,
    client: reqwest::Client,
    tls: (PathBuf, PathBuf, PathBuf),
    adapter_bin: PathBuf,
    adapter_config: PathBuf,
    bridge_bin: PathBuf,
    rules: PathBuf,
}

impl Rig<'_> {
    /// Starts `variant`, waits until it lists `want`, measures, stops it.
    async fn measure(
        &self,
        variant: &Variant,
        size: usize,
        want: &BTreeSet<String>,
    ) -> Result<Measured, String> {
        let kubeconfig = self
            .cp
            .client_kubeconfig(&format!("bench-{}", variant.name), &["system:masters"]);
        let port = free_port();
        let log = self.root.join(format!("{}-{size}.log", variant.name));
        let mut args = serving_args(&self.tls, port);
        let prom_pid = self.prometheus.pid().expect("Prometheus runs");
        let before = handler_totals(self.prometheus).await;
        let prom_before = proc_sample(prom_pid);
        let t0 = Instant::now();
        let mut child = if variant.adapter {
            args.extend(adapter_args(
                self.root,
                &kubeconfig,
                &self.prometheus.url(),
                &self.adapter_config,
            ));
            args.push(format!("--metrics-relist-interval={RELIST}"));
            spawn_logged(&self.adapter_bin, &args, &variant.envs, &log)
        } else {
            let mut all = vec![
                "serve".to_owned(),
                format!("--config={}", self.rules.display()),
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--metrics-bind-address=127.0.0.1:{}", free_port()),
            ];
            all.extend(args);
            spawn_logged(&self.bridge_bin, &all, &variant.envs, &log)
        };
        let pid = child.id().expect("server is running");
        let url = format!("https://127.0.0.1:{port}/apis/custom.metrics.k8s.io/v1beta1");
        let mut last = BTreeSet::new();
        let outcome = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Err(format!("exited with {status}"));
            }
            if t0.elapsed() > DISCOVERY_DEADLINE {
                break Err(format!(
                    "listed {} of {} entries after {DISCOVERY_DEADLINE:?}",
                    last.len(),
                    want.len()
                ));
            }
            let get = self
                .client
                .get(&url)
                .header("Accept", "application/json")
                .timeout(Duration::from_secs(10))
                .send();
            if let Ok(resp) = get.await {
                if resp.status().is_success() {
                    last = listed(&resp.json().await.unwrap_or(Value::Null));
                    if last.len() >= want.len() {
                        break Ok(());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let seconds = t0.elapsed().as_secs_f64();
        let at_listing: ProcSample = proc_sample(pid);
        let prom_after = proc_sample(prom_pid);
        let after = handler_totals(self.prometheus).await;
        let result = match outcome {
            Err(e) => Err(format!(
                "{} at {size} series: {e}; its log ends:\n{}",
                variant.name,
                log_tail(&log, 20)
            )),
            Ok(()) if &last != want => Err(format!(
                "{} at {size} series listed {} entries, expected {}; missing {:?}, unexpected {:?}",
                variant.name,
                last.len(),
                want.len(),
                want.difference(&last).take(5).collect::<Vec<_>>(),
                last.difference(want).take(5).collect::<Vec<_>>(),
            )),
            Ok(()) => {
                tokio::time::sleep(SETTLE).await;
                let settled = proc_sample(pid);
                Ok(Measured {
                    seconds,
                    cpu_s: at_listing.cpu.as_secs_f64(),
                    hwm_mib: settled.hwm_kib as f64 / 1024.0,
                    rss_mib: at_listing.rss_kib as f64 / 1024.0,
                    rss_settled_mib: settled.rss_kib as f64 / 1024.0,
                    prometheus_calls: after.calls - before.calls,
                    prometheus_mib: (after.bytes - before.bytes) / (1024.0 * 1024.0),
                    prometheus_seconds: after.seconds - before.seconds,
                    prometheus_cpu_s: prom_after.cpu.saturating_sub(prom_before.cpu).as_secs_f64(),
                })
            }
        };
        let _ = child.kill().await;
        result
    }
}

/// A table with the baseline (prometheus-adapter) first and every other column followed by
/// its ratio to it.
fn table(title: &str, headers: &[&str], rows: &[(&str, Vec<f64>)]) -> String {
    let mut out = format!("\n== {title}\n");
    let mut line = format!("{:<44}", "metric");
    for (i, h) in headers.iter().enumerate() {
        let _ = write!(line, " {h:>20}");
        if i > 0 {
            let _ = write!(line, " {:>7}", "ratio");
        }
    }
    out.push_str(&line);
    out.push('\n');
    for (metric, values) in rows {
        let mut line = format!("{metric:<44}");
        for (i, v) in values.iter().enumerate() {
            let _ = write!(line, " {:>20}", fmt_num(*v));
            if i > 0 {
                let _ = write!(line, " {:>7}", fmt_ratio(*v, values[0]));
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn rows(measured: &[Measured]) -> Vec<(&'static str, Vec<f64>)> {
    let col = |f: &dyn Fn(&Measured) -> f64| measured.iter().map(f).collect::<Vec<f64>>();
    vec![
        ("spawn to every metric listed s", col(&|m| m.seconds)),
        ("server CPU s until then", col(&|m| m.cpu_s)),
        ("peak RSS (VmHWM) MiB", col(&|m| m.hwm_mib)),
        ("VmRSS when listed MiB", col(&|m| m.rss_mib)),
        ("VmRSS 5 s later MiB", col(&|m| m.rss_settled_mib)),
        (
            "discovery calls to Prometheus",
            col(&|m| m.prometheus_calls),
        ),
        ("bytes Prometheus sent MiB", col(&|m| m.prometheus_mib)),
        (
            "Prometheus time answering s",
            col(&|m| m.prometheus_seconds),
        ),
        ("Prometheus CPU s", col(&|m| m.prometheus_cpu_s)),
    ]
}

async fn run(settings: Settings) -> Vec<String> {
    let started = std::time::SystemTime::now();
    let t0 = Instant::now();
    let machine = machine();
    eprintln!("discovery: {settings:?}");
    let adapter_bin = adapter_bin().await;
    let bridge_bin = PathBuf::from(env!("CARGO_BIN_EXE_kube-metrics-bridge"));
    let dir = tempfile::Builder::new()
        .prefix("kmb-bench-discovery-")
        .tempdir()
        .expect("tempdir");
    let root = dir.path();
    let prometheus =
        Prometheus::start_with_flags(&[], &["--web.enable-remote-write-receiver"]).await;
    let cp = ControlPlane::start_with(Options {
        skip_controller_manager: true,
        ..Options::default()
    })
    .await;

    let (adapter_config, rules) =
        write_both_configs(root, ADAPTER_CONFIG, &bridge_bin, &prometheus.url());
    let tls = serving_pair(root);
    let pki = cp.dir().join("pki");
    let rig = Rig {
        prometheus: &prometheus,
        cp: &cp,
        root,
        client: tls_client_with(
            &tls.0,
            true,
            Some((&pki.join("admin.crt"), &pki.join("admin.key"))),
        ),
        tls,
        adapter_bin: adapter_bin.clone(),
        adapter_config,
        bridge_bin,
        rules,
    };

    let variants = variants();
    let headers: Vec<&str> = variants.iter().map(|v| v.header).collect();
    let want = expected(settings.metrics);
    let mut failures = Vec::new();
    let mut report = String::new();
    let mut results = Vec::new();
    let mut written = 0;
    for &size in &settings.sizes {
        let t_ingest = Instant::now();
        ingest(&prometheus, written, size, settings.metrics).await;
        written = size;
        // Prometheus scrapes nothing here, so its head holds exactly the series written (a
        // PromQL count over a million series would outlast the client's deadline).
        let stored = head_series(&prometheus).await;
        assert_eq!(
            stored as usize, size,
            "prometheus_tsdb_head_series after remote write"
        );
        let prom = proc_sample(prometheus.pid().expect("Prometheus runs"));
        eprintln!(
            "discovery: {size} series in Prometheus (written in {:.1?}; its RSS {:.0} MiB)",
            t_ingest.elapsed(),
            prom.rss_kib as f64 / 1024.0
        );
        let mut measured = Vec::new();
        for variant in &variants {
            match rig.measure(variant, size, &want).await {
                Ok(m) => {
                    eprintln!(
                        "discovery: {} listed every metric in {:.1} s, peak RSS {:.0} MiB",
                        variant.name, m.seconds, m.hwm_mib
                    );
                    measured.push(m);
                }
                Err(e) => {
                    eprintln!("discovery: {e}");
                    failures.push(e);
                    measured.push(Measured::failed());
                }
            }
        }
        let t = table(
            &format!(
                "discovery of {size} series ({} names; ratio: bridge / prometheus-adapter)",
                settings.metrics
            ),
            &headers,
            &rows(&measured),
        );
        print!("{t}");
        report.push_str(&t);
        results.push(json!({
            "series": size,
            "prometheus_vmrss_mib": prom.rss_kib as f64 / 1024.0,
            "servers": variants.iter().zip(&measured)
                .map(|(v, m)| (v.name.to_owned(), m.json()))
                .collect::<serde_json::Map<_, _>>(),
        }));
    }

    let timestamp = humantime::format_rfc3339_seconds(started).to_string();
    let out_dir = common::target_dir().join("bench");
    std::fs::create_dir_all(&out_dir).expect("creating the bench output dir");
    let out = out_dir.join(format!("discovery-{}.json", timestamp.replace(':', "-")));
    let loadavg_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let document = json!({
        "started": timestamp,
        "wall_seconds": t0.elapsed().as_secs_f64(),
        "machine": machine,
        "loadavg_at_end": loadavg_end.trim(),
        "settings": {
            "series": settings.sizes,
            "metric_names": settings.metrics,
            "namespaces": NAMESPACES,
            "relist": RELIST,
            "rule": ADAPTER_CONFIG,
        },
        "versions": report::versions(&adapter_bin),
        "results": results,
        "failures": failures,
        "report": report,
    });
    report::write_figures(&out, &document, t0, &loadavg_end);
    failures
}
