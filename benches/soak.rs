//! Soak benchmark (issue 8 §6): the release bridge at saturation for a long time (10 minutes
//! by default) against a real control plane and Prometheus, with pods churning, sampling the
//! bridge's RSS, open file descriptors, threads, runtime tasks and latency every window. What
//! a leak looks like is a column that grows; the summary compares the first full window with
//! the last and fits a slope per hour. Not part of the test suite: `hack/soak.sh`.
//!
//! Knobs (environment): KMB_SOAK_SECONDS=600, KMB_SOAK_WINDOW=30 (seconds per row),
//! KMB_SOAK_PODS=200, KMB_SOAK_CONCURRENCY=32, KMB_SOAK_CHURN=2 (seconds between a pod
//! deleted and one created; 0 = none).

#[path = "../integration/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::bridge::{tls_client_with, Bridge};
use common::controlplane::ControlPlane;
use common::{Exporter, Prometheus};
use serde_json::json;

const NS: &str = "soak";
const SERVICE_DNS: &str = "kube-metrics-bridge.custom-metrics.svc";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("soak: a benchmark; run it with hack/soak.sh (cargo bench --bench soak)");
        return;
    }
    let settings = Settings::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(settings));
}

#[derive(Debug, Clone)]
struct Settings {
    duration: Duration,
    window: Duration,
    pods: usize,
    concurrency: usize,
    churn: Duration,
}

impl Settings {
    fn from_env() -> Settings {
        let num = |key: &str, default: u64| {
            std::env::var(key)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(default)
        };
        Settings {
            duration: Duration::from_secs(num("KMB_SOAK_SECONDS", 600)),
            window: Duration::from_secs(num("KMB_SOAK_WINDOW", 30).max(1)),
            pods: num("KMB_SOAK_PODS", 200).max(4) as usize,
            concurrency: num("KMB_SOAK_CONCURRENCY", 32).max(1) as usize,
            churn: Duration::from_secs(num("KMB_SOAK_CHURN", 2)),
        }
    }
}

fn rules(prometheus: &Prometheus) -> String {
    format!(
        r#"
[prometheus]
url = "{}"
timeout = "3s"

[cache]
ttl = "2s"
discovery_interval = "30s"

[[rules]]
series_query = 'pod_work{{namespace!="",pod!=""}}'
resources.overrides = {{ namespace = {{ resource = "namespace" }}, pod = {{ resource = "pod" }} }}
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (<<.GroupBy>>)'

[[external_rules]]
series_query = 'queue_depth{{namespace!=""}}'
resources.overrides = {{ namespace = {{ resource = "namespace" }} }}
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (queue)'
"#,
        prometheus.url()
    )
}

/// One row: what the process looked like at the end of a window, and what the load saw in it.
#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    at_s: f64,
    requests: u64,
    errors: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    rss_mib: f64,
    fds: u64,
    threads: u64,
    tasks: f64,
}

/// Latencies and outcomes of the current window, shared by the load workers.
#[derive(Default)]
struct Window {
    latencies_us: Mutex<Vec<u64>>,
    errors: AtomicU64,
    error_sample: Mutex<Option<String>>,
}

impl Window {
    /// Takes the window's figures and starts a new one.
    fn take(&self) -> (Vec<u64>, u64, Option<String>) {
        let mut lat = std::mem::take(&mut *self.latencies_us.lock().expect("lock"));
        lat.sort_unstable();
        let errors = self.errors.swap(0, Ordering::Relaxed);
        (lat, errors, self.error_sample.lock().expect("lock").take())
    }
}

fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn proc_figures(pid: u32) -> (f64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    (field("VmRSS:") as f64 / 1024.0, fds, field("Threads:"))
}

async fn create_pod(cp: &ControlPlane, exporter: &Exporter, name: &str) {
    cp.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {NS}, labels: {{app: web}}}}\n\
         spec: {{containers: [{{name: app, image: registry.invalid/app:1}}]}}\n"
    ))
    .await;
    cp.set_pod_running(NS, name).await;
    exporter
        .set_gauge("pod_work", &[("namespace", NS), ("pod", name)], 3.0)
        .await;
}

async fn run(settings: Settings) {
    eprintln!("soak settings: {settings:?}");
    let exporter = Exporter::start_empty().await;
    exporter
        .set_gauge("queue_depth", &[("namespace", NS), ("queue", "jobs")], 40.0)
        .await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    let cp = ControlPlane::start().await;
    cp.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: soak-reader}}\n\
         rules: [{{apiGroups: [custom.metrics.k8s.io, external.metrics.k8s.io], resources: [\"*\"], verbs: [get, list]}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: soak-reader}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: soak-reader}}\n\
         subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: soak}}]\n"
    ))
    .await;
    let t0 = Instant::now();
    for i in 0..settings.pods {
        create_pod(&cp, &exporter, &format!("web-{i}")).await;
    }
    eprintln!("{} pods in {:.1?}", settings.pods, t0.elapsed());
    prometheus
        .wait_for_series(
            &format!("pod_work{{pod=\"web-{}\"}}", settings.pods - 1),
            Duration::from_secs(60),
        )
        .await;
    // The bridge acts as an admin (its RBAC is not what is measured); its callers are a
    // front-proxied user whose access goes through SubjectAccessReviews (cached).
    let bridge =
        Bridge::start_for_cluster(&rules(&prometheus), cp.admin_kubeconfig(), SERVICE_DNS, &[])
            .await;
    let pid = bridge.pid().expect("bridge pid");
    let (cert, key) = cp.front_proxy_client_paths();
    let client = tls_client_with(&bridge.ca_path(), true, Some((&cert, &key)));
    let base = bridge.url("");
    let stable = settings.pods / 2;
    let paths: Arc<Vec<String>> = Arc::new(
        (0..10)
            .map(|i| match i {
                0..=6 => format!("/apis/custom.metrics.k8s.io/v1beta2/namespaces/{NS}/pods/%2A/pod_work?labelSelector=app%3Dweb"),
                7 | 8 => format!("/apis/custom.metrics.k8s.io/v1beta1/namespaces/{NS}/pods/web-{}/pod_work", i % stable),
                _ => format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/queue_depth"),
            })
            .collect(),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let window = Arc::new(Window::default());
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..settings.concurrency {
        let (client, base, paths, stop, window, next) = (
            client.clone(),
            base.clone(),
            paths.clone(),
            stop.clone(),
            window.clone(),
            next.clone(),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let path = &paths[next.fetch_add(1, Ordering::Relaxed) % paths.len()];
                let started = Instant::now();
                let outcome = client
                    .get(format!("{base}{path}"))
                    .header("X-Remote-User", "soak")
                    .send()
                    .await;
                let ok = match outcome {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    Ok(r) => {
                        let status = r.status();
                        let body = r.text().await.unwrap_or_default();
                        window
                            .error_sample
                            .lock()
                            .expect("lock")
                            .get_or_insert(format!("{status} {path}: {body}"));
                        false
                    }
                    Err(e) => {
                        window
                            .error_sample
                            .lock()
                            .expect("lock")
                            .get_or_insert(format!("{path}: {e:#}"));
                        false
                    }
                };
                if ok {
                    let us = started.elapsed().as_micros() as u64;
                    window.latencies_us.lock().expect("lock").push(us);
                } else {
                    window.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    // Pod churn in the second half of the pods: the watch cache keeps changing underneath.
    let churn = {
        let (stop, settings) = (stop.clone(), settings.clone());
        let cp = &cp;
        let exporter = &exporter;
        async move {
            if settings.churn.is_zero() {
                return 0usize;
            }
            let mut generation = 0usize;
            let mut victim = stable;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(settings.churn).await;
                let old = if generation < settings.pods - stable {
                    format!("web-{victim}")
                } else {
                    format!("churn-{}", generation - (settings.pods - stable))
                };
                cp.kubectl_ok(&["-n", NS, "delete", "pod", &old, "--wait=false"])
                    .await;
                exporter
                    .remove("pod_work", &[("namespace", NS), ("pod", &old)])
                    .await;
                create_pod(cp, exporter, &format!("churn-{generation}")).await;
                generation += 1;
                victim += 1;
            }
            generation
        }
    };

    let sampler = async {
        let mut rows: Vec<Row> = Vec::new();
        let started = Instant::now();
        println!(
            "{:>7} {:>9} {:>7} {:>9} {:>8} {:>8} {:>9} {:>6} {:>8} {:>7}",
            "t (s)",
            "requests",
            "errors",
            "req/s",
            "p50 ms",
            "p99 ms",
            "RSS MiB",
            "fds",
            "threads",
            "tasks"
        );
        while started.elapsed() < settings.duration {
            let left = settings.duration.saturating_sub(started.elapsed());
            tokio::time::sleep(settings.window.min(left)).await;
            let (lat, errors, sample) = window.take();
            let (rss_mib, fds, threads) = proc_figures(pid);
            let tasks = bridge
                .self_metric("kube_metrics_bridge_runtime_alive_tasks")
                .await
                .unwrap_or(f64::NAN);
            let row = Row {
                at_s: started.elapsed().as_secs_f64(),
                requests: lat.len() as u64 + errors,
                errors,
                rps: lat.len() as f64 / settings.window.as_secs_f64(),
                p50_ms: percentile_ms(&lat, 50.0),
                p99_ms: percentile_ms(&lat, 99.0),
                rss_mib,
                fds,
                threads,
                tasks,
            };
            println!(
                "{:>7.0} {:>9} {:>7} {:>9.0} {:>8.2} {:>8.2} {:>9.1} {:>6} {:>8} {:>7.0}",
                row.at_s,
                row.requests,
                row.errors,
                row.rps,
                row.p50_ms,
                row.p99_ms,
                row.rss_mib,
                row.fds,
                row.threads,
                row.tasks
            );
            if let Some(s) = sample {
                println!("        first error in this window: {s}");
            }
            rows.push(row);
        }
        rows
    };
    let (rows, churned) = tokio::join!(
        async {
            let rows = sampler.await;
            stop.store(true, Ordering::Relaxed);
            rows
        },
        churn
    );
    for w in workers {
        let _ = w.await;
    }
    summarize(&settings, &rows, churned);
    drop(bridge);
}

/// One figure of a row.
type Column = fn(&Row) -> f64;

/// Least-squares slope of `y` over time, per hour.
fn slope_per_hour(rows: &[Row], y: impl Fn(&Row) -> f64) -> f64 {
    // A window whose figure could not be read (NaN) is left out, not allowed to poison the fit.
    let rows: Vec<&Row> = rows.iter().filter(|r| y(r).is_finite()).collect();
    let n = rows.len() as f64;
    if rows.len() < 2 {
        return 0.0;
    }
    let mx = rows.iter().map(|r| r.at_s).sum::<f64>() / n;
    let my = rows.iter().map(|r| y(r)).sum::<f64>() / n;
    let sxy: f64 = rows.iter().map(|r| (r.at_s - mx) * (y(r) - my)).sum();
    let sxx: f64 = rows.iter().map(|r| (r.at_s - mx).powi(2)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx * 3600.0
    }
}

fn summarize(settings: &Settings, rows: &[Row], churned: usize) {
    // The first window holds the warm-up (caches filling, connections opening).
    let steady: Vec<Row> = rows.iter().skip(1).cloned().collect();
    let (Some(first), Some(last)) = (steady.first(), steady.last()) else {
        println!("soak: too short for a summary (need at least two windows)");
        return;
    };
    let total: u64 = rows.iter().map(|r| r.requests).sum();
    let errors: u64 = rows.iter().map(|r| r.errors).sum();
    println!(
        "\n{} requests, {} errors, {} pods churned, over {:.0} s at concurrency {}",
        total,
        errors,
        churned,
        rows.last().map_or(0.0, |r| r.at_s),
        settings.concurrency
    );
    println!(
        "{:<10} {:>12} {:>12} {:>14}",
        "", "first window", "last window", "slope per hour"
    );
    let columns: [(&str, Column); 5] = [
        ("RSS MiB", |r| r.rss_mib),
        ("fds", |r| r.fds as f64),
        ("threads", |r| r.threads as f64),
        ("tasks", |r| r.tasks),
        ("p99 ms", |r| r.p99_ms),
    ];
    let mut summary = serde_json::Map::new();
    for (name, y) in columns {
        let slope = slope_per_hour(&steady, y);
        println!(
            "{:<10} {:>12.1} {:>12.1} {:>14.2}",
            name,
            y(first),
            y(last),
            slope
        );
        summary.insert(
            name.into(),
            json!({"first": y(first), "last": y(last), "slope_per_hour": slope}),
        );
    }
    let out = common::target_dir().join("bench");
    let _ = std::fs::create_dir_all(&out);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let path = out.join(format!("soak-{stamp}.json"));
    let doc = json!({
        "settings": {"seconds": settings.duration.as_secs(), "window": settings.window.as_secs(),
                     "pods": settings.pods, "concurrency": settings.concurrency, "churn": settings.churn.as_secs()},
        "requests": total, "errors": errors, "churned": churned,
        "rows": rows, "summary": summary,
    });
    if std::fs::write(&path, doc.to_string()).is_ok() {
        println!("figures: {}", path.display());
    }
}
