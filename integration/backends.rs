//! Several backends in one rules file (issue 10 §1), against a real Prometheus: rules pick
//! their backend, the backend is part of the cache key, an unavailable backend fails over to
//! the next of its list (for discovery and for values), and a query error does not.
//!
//! The stand-in (`common::fake_prometheus`) plays the backend that misbehaves or that holds
//! other data than the real Prometheus for the same PromQL.

mod common;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bridge::Bridge;
use common::fake_prometheus::{fake_prometheus, GARBAGE, HEALTHY, REJECT, STALL};
use common::{Exporter, Prometheus};

/// The real Prometheus' data: the same series as the stand-in, with another value.
async fn real_prometheus() -> (Exporter, Prometheus) {
    let exporter = Exporter::start_empty().await;
    exporter
        .set_gauge("pod_load", &[("namespace", "demo"), ("pod", "web-0")], 7.0)
        .await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    prometheus
        .wait_for_series("pod_load", Duration::from_secs(30))
        .await;
    (exporter, prometheus)
}

/// A rule over `pod_load` on `backend`, served as `metric`. Every such rule renders the same
/// PromQL for the same request.
fn rule(backend: &str, metric: &str) -> String {
    format!(
        r#"
[[rules]]
backend = "{backend}"
series_query = 'pod_load'
name = {{ matches = "^pod_load$", as = "{metric}" }}
resources.overrides = {{ namespace = {{ resource = "namespace" }}, pod = {{ resource = "pod" }} }}
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (<<.GroupBy>>)'
"#
    )
}

fn path(metric: &str) -> String {
    format!("/apis/custom.metrics.k8s.io/v1beta2/namespaces/demo/pods/web-0/{metric}")
}

async fn value(bridge: &Bridge, metric: &str) -> (u16, String) {
    let (code, body) = bridge.get(&path(metric)).await;
    let value = body["items"][0]["value"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string());
    (code, value)
}

fn counter(backend: &str, to: &str) -> String {
    format!("kube_metrics_bridge_backend_failovers_total{{backend=\"{backend}\",to=\"{to}\"}}")
}

#[tokio::test]
async fn rules_pick_backends_and_a_dead_one_fails_over() {
    let (_exporter, prometheus) = real_prometheus().await;
    let other = fake_prometheus(Arc::new(AtomicU8::new(HEALTHY))).await;
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let rules = format!(
        r#"
[cache]
ttl = "1m"

[[backends]]
name = "dead"
url = "{dead}"
timeout = "1s"
failover = ["real"]

[[backends]]
name = "real"
url = "{real}"
default = true

[[backends]]
name = "other"
url = "{other}"
{a}{b}{c}"#,
        real = prometheus.url(),
        a = rule("real", "load_real"),
        b = rule("other", "load_other"),
        c = rule("dead", "load_failover"),
    );
    let bridge = Bridge::start(&rules).await;

    // Same PromQL, two backends: two cache entries, each with its own backend's value.
    assert_eq!(value(&bridge, "load_real").await, (200, "7".to_string()));
    assert_eq!(
        value(&bridge, "load_other").await,
        (200, "2500m".to_string())
    );
    assert_eq!(value(&bridge, "load_real").await, (200, "7".to_string()));

    // The dead backend's rule was discovered through the failover and is answered by it.
    assert_eq!(
        value(&bridge, "load_failover").await,
        (200, "7".to_string())
    );
    let failovers = bridge.self_metric(&counter("dead", "real")).await;
    assert!(
        failovers.unwrap_or(0.0) >= 2.0,
        "one series listing and one query failed over: {failovers:?}"
    );
    let dead_series = bridge
        .self_metric("kube_metrics_bridge_prometheus_request_duration_seconds_count{backend=\"dead\",call=\"series\",outcome=\"unavailable\"}")
        .await;
    assert!(dead_series.unwrap_or(0.0) >= 1.0, "{dead_series:?}");
    let other_queries = bridge
        .self_metric("kube_metrics_bridge_prometheus_request_duration_seconds_count{backend=\"other\",call=\"query\",outcome=\"ok\"}")
        .await;
    assert_eq!(other_queries, Some(1.0));

    // explain and doctor say where each rule's queries go.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rules.toml");
    std::fs::write(&file, &rules).expect("write rules");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kube-metrics-bridge"))
        .args(["explain", "--config"])
        .arg(&file)
        .arg("namespaces/demo/pods/web-0/load_failover")
        .output()
        .expect("explain");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "backend:  \"dead\" ({dead}), failover to \"real\""
        )),
        "{text}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kube-metrics-bridge"))
        // No cluster here: doctor says so and still checks the rules and backends.
        .args(["doctor", "--kubeconfig"])
        .arg(dir.path().join("no-kubeconfig"))
        .arg("--config")
        .arg(&file)
        .output()
        .expect("doctor");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!(
            "ok    backend \"real\" at {} answers queries",
            prometheus.url()
        )),
        "{report}"
    );
    assert!(
        report.contains(&format!("FAIL  backend \"dead\" at {dead}")),
        "{report}"
    );
}

#[tokio::test]
async fn failover_on_unavailability_never_on_a_query_error() {
    let (_exporter, prometheus) = real_prometheus().await;
    let mode = Arc::new(AtomicU8::new(HEALTHY));
    let flaky = fake_prometheus(mode.clone()).await;
    let rules = format!(
        r#"
[cache]
ttl = "1ms"

[[backends]]
name = "flaky"
url = "{flaky}"
timeout = "1s"
failover = ["real"]

[[backends]]
name = "real"
url = "{real}"
{rule}"#,
        real = prometheus.url(),
        rule = rule("flaky", "load"),
    );
    let bridge = Bridge::start(&rules).await;
    assert_eq!(value(&bridge, "load").await, (200, "2500m".to_string()));

    // The query is wrong: every replica would say so. Not tried elsewhere.
    mode.store(REJECT, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await; // past the 1ms TTL
    let (code, _) = value(&bridge, "load").await;
    assert_eq!(code, 500);
    assert_eq!(bridge.self_metric(&counter("flaky", "real")).await, None);

    // Garbage (a proxy's error page) and a stall are the backend's fault: the next answers.
    for (m, what) in [(GARBAGE, "garbage"), (STALL, "a stall")] {
        mode.store(m, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        assert_eq!(
            value(&bridge, "load").await,
            (200, "7".to_string()),
            "{what}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{what}: the failover waited {:?}; the flaky backend's deadline is 1s",
            started.elapsed()
        );
    }
    assert_eq!(
        bridge.self_metric(&counter("flaky", "real")).await,
        Some(2.0)
    );

    mode.store(HEALTHY, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(value(&bridge, "load").await, (200, "2500m".to_string()));
}

/// `on_error = "stale"` (issue 10 §4) with a stalled backend: the rule with the policy keeps
/// its last good value until `max_stale` runs out, the rule without gets 503 as before; after
/// three unavailable calls in a row the circuit opens and calls fail at once instead of
/// waiting for the deadline; when the backend is back a trial call closes it.
#[tokio::test]
async fn stale_answers_until_max_stale_and_a_circuit_breaker() {
    let mode = Arc::new(AtomicU8::new(HEALTHY));
    let url = fake_prometheus(mode.clone()).await;
    let rules = format!(
        r#"
[prometheus]
url = "{url}"
timeout = "1s"

[cache]
ttl = "1ms"

[[rules]]
series_query = 'pod_load'
name = {{ matches = "^pod_load$", as = "load_stale" }}
resources.overrides = {{ namespace = {{ resource = "namespace" }}, pod = {{ resource = "pod" }} }}
metrics_query = 'max(<<.Series>>{{<<.LabelMatchers>>}}) by (<<.GroupBy>>)'
on_error = "stale"
max_stale = "6s"

[[rules]]
series_query = 'pod_load'
name = {{ matches = "^pod_load$", as = "load_strict" }}
resources.overrides = {{ namespace = {{ resource = "namespace" }}, pod = {{ resource = "pod" }} }}
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (<<.GroupBy>>)'
"#
    );
    let bridge = Bridge::start(&rules).await;
    assert_eq!(value(&bridge, "load_stale").await, (200, "2500m".into()));
    assert_eq!(value(&bridge, "load_strict").await, (200, "2500m".into()));
    let last_good = Instant::now();

    mode.store(STALL, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await; // past the 1ms TTL
    assert_eq!(value(&bridge, "load_strict").await.0, 503);
    assert_eq!(value(&bridge, "load_stale").await, (200, "2500m".into()));
    assert_eq!(value(&bridge, "load_strict").await.0, 503);
    // Three calls in a row found it unavailable: the circuit is open, calls fail at once.
    let open = "kube_metrics_bridge_backend_circuit_open{backend=\"default\"}";
    assert_eq!(bridge.self_metric(open).await, Some(1.0));
    let started = Instant::now();
    assert_eq!(value(&bridge, "load_strict").await.0, 503);
    assert_eq!(value(&bridge, "load_stale").await, (200, "2500m".into()));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "with the circuit open, calls do not wait for the 1s deadline: {:?}",
        started.elapsed()
    );
    assert!(
        bridge
            .self_metric("kube_metrics_bridge_stale_answers_total{backend=\"default\"}")
            .await
            .unwrap_or(0.0)
            >= 2.0
    );
    assert!(bridge.log().contains("serving the last good answer"));

    // Past max_stale the stale rule fails too.
    tokio::time::sleep(
        (last_good + Duration::from_secs(6)).saturating_duration_since(Instant::now()),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(value(&bridge, "load_stale").await.0, 503);
    assert!(bridge.log().contains("no answer younger than max_stale"));

    // Back: a trial call (within the breaker's backoff, at most 10 s) closes the circuit.
    mode.store(HEALTHY, Ordering::SeqCst);
    common::wait_until("the circuit closes", Duration::from_secs(20), || async {
        (value(&bridge, "load_strict").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(bridge.self_metric(open).await, Some(0.0));
    assert_eq!(value(&bridge, "load_stale").await, (200, "2500m".into()));
    assert!(bridge.log().contains("circuit closed"));
}

/// Discovery by the label API (names, then each name's label names) finds what the series
/// API finds on a real Prometheus; `auto` falls back to the series API on a backend without
/// the label API (the stand-in serves only `/api/v1/series`) and says so once.
#[tokio::test]
async fn label_api_discovery_matches_the_series_api() {
    let exporter = Exporter::start_empty().await;
    for (name, labels) in [
        ("pod_load", vec![("namespace", "demo"), ("pod", "web-0")]),
        (
            "queue_depth",
            vec![("namespace", "demo"), ("queue", "jobs")],
        ),
        ("node_temp", vec![("node", "n1")]),
    ] {
        exporter.set_gauge(name, &labels, 1.0).await;
    }
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    prometheus
        .wait_for_series("node_temp", Duration::from_secs(30))
        .await;
    let rules = |api: &str, url: &str| {
        format!(
            r#"
[prometheus]
url = "{url}"
discovery_api = "{api}"

[[rules]]
series_query = '{{namespace!=""}}'
resources.overrides = {{ namespace = {{ resource = "namespace" }}, pod = {{ resource = "pod" }} }}
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (<<.GroupBy>>)'

[[external_rules]]
series_query = 'queue_depth'
resources.overrides = {{ namespace = {{ resource = "namespace" }} }}
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (queue)'
"#
        )
    };
    let by_labels = Bridge::start(&rules("labels", &prometheus.url())).await;
    let by_series = Bridge::start(&rules("series", &prometheus.url())).await;
    let found = discovered(&by_labels).await;
    assert_eq!(found, discovered(&by_series).await);
    assert_eq!(
        found,
        [
            "custom.metrics.k8s.io/v1beta2 namespaces/pod_load",
            "custom.metrics.k8s.io/v1beta2 namespaces/queue_depth",
            "custom.metrics.k8s.io/v1beta2 pods/pod_load",
            "external.metrics.k8s.io/v1beta1 queue_depth",
        ]
    );
    assert_eq!(value(&by_labels, "pod_load").await, (200, "1".into()));

    let stand_in = fake_prometheus(Arc::new(AtomicU8::new(HEALTHY))).await;
    let auto = Bridge::start(&rules("auto", &stand_in)).await;
    assert_eq!(value(&auto, "pod_load").await, (200, "2500m".into()));
    assert!(
        auto.log().contains("the label API did not answer"),
        "{}",
        auto.log()
    );
}

/// Every metric a bridge's discovery documents list, as `group/version name`, sorted.
async fn discovered(bridge: &Bridge) -> Vec<String> {
    let mut names = Vec::new();
    for group in [
        "custom.metrics.k8s.io/v1beta2",
        "external.metrics.k8s.io/v1beta1",
    ] {
        let (_, list) = bridge.get(&format!("/apis/{group}")).await;
        for r in list["resources"].as_array().cloned().unwrap_or_default() {
            names.push(format!(
                "{group} {}",
                r["name"].as_str().unwrap_or_default()
            ));
        }
    }
    names.sort();
    names
}

/// A metric that appears after discovery ran is served within seconds of the first request
/// for it (that request gets its 404 at once and starts a rediscovery), not a
/// `discovery_interval` (here ten minutes) later.
#[tokio::test]
async fn a_new_metric_is_discovered_on_the_first_miss() {
    let exporter = Exporter::start_empty().await;
    exporter
        .set_gauge("pod_load", &[("namespace", "demo"), ("pod", "web-0")], 1.0)
        .await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    prometheus
        .wait_for_series("pod_load", Duration::from_secs(30))
        .await;
    let rules = format!(
        r#"
[prometheus]
url = "{}"

[cache]
discovery_interval = "10m"
rediscover_on_miss = "1s"

[[rules]]
series_query = '{{namespace!="",pod!=""}}'
resources.overrides = {{ namespace = {{ resource = "namespace" }}, pod = {{ resource = "pod" }} }}
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (<<.GroupBy>>)'
"#,
        prometheus.url()
    );
    let bridge = Bridge::start(&rules).await;
    assert_eq!(value(&bridge, "pod_load").await, (200, "1".into()));
    exporter
        .set_gauge(
            "new_metric",
            &[("namespace", "demo"), ("pod", "web-0")],
            3.0,
        )
        .await;
    prometheus
        .wait_for_series("new_metric", Duration::from_secs(30))
        .await;
    let first_miss = Instant::now();
    assert_eq!(value(&bridge, "new_metric").await.0, 404);
    common::wait_until("the new metric served", Duration::from_secs(15), || async {
        (value(&bridge, "new_metric").await == (200, "3".into())).then_some(())
    })
    .await;
    eprintln!("served {:?} after the first miss", first_miss.elapsed());
    assert!(
        bridge
            .self_metric("kube_metrics_bridge_discovery_on_miss_total")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
}
