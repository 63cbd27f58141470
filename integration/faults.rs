//! Faults a real Prometheus cannot be made to show on demand: a backend that stalls, answers
//! garbage, or rejects the query. A small stand-in serves `/api/v1/series` properly (so the
//! metric is discovered) and misbehaves on `/api/v1/query`. Every case must end in a fast,
//! clear Status, never a hang.
//!
//! And answers that are hostile rather than broken (issue 8 §4, "data from Prometheus is
//! untrusted too"): series names that would inject PromQL, sample times past year 9999,
//! bodies without end. The hostile name is shown by a real Prometheus too: Debian's 2.42
//! refuses it from a scrape ("invalid metric name") but stores it from remote write.

mod common;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bridge::Bridge;
use common::fake_prometheus::{fake_prometheus, GARBAGE, HEALTHY, MATRIX, REJECT, STALL};
use common::Prometheus;
use warp::Filter;

const PATH: &str = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/demo/pods/web-0/pod_load";

#[tokio::test]
async fn stalls_garbage_and_rejections_become_fast_status_errors() {
    let mode = Arc::new(AtomicU8::new(HEALTHY));
    let url = fake_prometheus(mode.clone()).await;
    let rules = format!(
        r#"
[prometheus]
url = "{url}"
timeout = "1s"

[cache]
ttl = "1ms"
discovery_interval = "1m"

[[rules]]
series_query = 'pod_load'
resources.overrides = {{ namespace = {{ resource = "namespace" }}, pod = {{ resource = "pod" }} }}
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (<<.GroupBy>>)'
"#
    );
    let bridge = Bridge::start(&rules).await;
    let (code, body) = bridge.get(PATH).await;
    assert_eq!(
        (code, body["items"][0]["value"].as_str()),
        (200, Some("2500m")),
        "{body}"
    );

    for (m, code, reason) in [
        (STALL, 503, "ServiceUnavailable"),
        (GARBAGE, 500, "InternalError"),
        (REJECT, 500, "InternalError"),
        (MATRIX, 500, "InternalError"),
    ] {
        mode.store(m, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await; // past the 1ms cache TTL
        let started = Instant::now();
        let (got, body) = bridge.get(PATH).await;
        assert_eq!(got, code, "mode {m}: {body}");
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["reason"], reason, "mode {m}");
        let message = body["message"].as_str().unwrap_or("");
        assert!(
            !message.contains("parse error") && !message.contains("html"),
            "no backend details leak: {message}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "mode {m} took {:?}; the deadline is 1s",
            started.elapsed()
        );
    }
    // Discovery and health never wait on the backend.
    mode.store(STALL, Ordering::SeqCst);
    let started = Instant::now();
    assert_eq!(
        bridge.get("/apis/custom.metrics.k8s.io/v1beta2").await.0,
        200
    );
    assert_eq!(bridge.get("/healthz").await.0, 200);
    assert!(started.elapsed() < Duration::from_millis(500));
    // And the bridge recovers when the backend does.
    mode.store(HEALTHY, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (code, _) = bridge.get(PATH).await;
    assert_eq!(code, 200);
    assert!(bridge.self_metric("kube_metrics_bridge_prometheus_request_duration_seconds_count{backend=\"default\",call=\"query\",outcome=\"malformed\"}").await.unwrap_or(0.0) >= 1.0);
}

const SERIES_OK: u8 = 0;
const SERIES_ENDLESS: u8 = 1;

const Q_HEALTHY: u8 = 0;
const Q_FAR_FUTURE: u8 = 1;
const Q_LARGE: u8 = 2;
const Q_ENDLESS: u8 = 3;

/// A JSON answer that starts well and never ends: a body with no length and no end.
fn endless(prefix: &'static str) -> impl warp::Reply {
    let start = futures::stream::iter([Ok::<Vec<u8>, std::io::Error>(prefix.as_bytes().to_vec())]);
    let rest = futures::stream::repeat_with(|| Ok(vec![b' '; 64 * 1024]));
    warp::reply::stream(futures::StreamExt::chain(start, rest))
}

/// A series answer without end in which every series has a new name: what discovery keeps
/// of it grows until `max_response_bytes`.
fn endless_names() -> impl warp::Reply {
    let start = futures::stream::iter([Ok::<Vec<u8>, std::io::Error>(
        br#"{"status":"success","data":[{"__name__":"pod_load","namespace":"demo","pod":"web-0"}"#
            .to_vec(),
    )]);
    let mut n = 0u64;
    let rest = futures::stream::repeat_with(move || {
        let mut chunk = String::new();
        for _ in 0..512 {
            n += 1;
            chunk.push_str(&format!(r#",{{"__name__":"endless_{n}","pod":"x"}}"#));
        }
        Ok(chunk.into_bytes())
    });
    warp::reply::stream(futures::StreamExt::chain(start, rest))
}

/// A stand-in whose series answer carries hostile names and whose query answers are
/// out of range or too large, as `series_mode` and `query_mode` say.
async fn hostile_prometheus(series_mode: Arc<AtomicU8>, query_mode: Arc<AtomicU8>) -> String {
    let series = warp::path!("api" / "v1" / "series").map(move || -> Box<dyn warp::Reply> {
        if series_mode.load(Ordering::SeqCst) == SERIES_ENDLESS {
            return Box::new(endless_names());
        }
        Box::new(warp::reply::json(&serde_json::json!({"status": "success", "data": [
            {"__name__": "pod_load", "namespace": "demo", "pod": "web-0"},
            {"__name__": "pod_load{namespace=\"demo\"} or vector(1)", "namespace": "demo", "pod": "web-0"},
            {"__name__": "caf\u{e9}_total", "namespace": "demo", "pod": "web-0"},
            {"__name__": "spoofed", "namespace": "demo", "pod) or vector(1": "x"},
        ]})))
    });
    let query = warp::path!("api" / "v1" / "query").map(move || -> Box<dyn warp::Reply> {
        match query_mode.load(Ordering::SeqCst) {
            Q_FAR_FUTURE => Box::new(
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"web-0"},"value":[18446744073709551615,"2.5"]}]}}"#,
            ),
            // Valid JSON with a Content-Length, just big: 200 KiB of label value.
            Q_LARGE => Box::new(format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"pod":"web-0","pad":"{}"}},"value":[1700000000,"2.5"]}}]}}}}"#,
                "x".repeat(200 * 1024)
            )),
            Q_ENDLESS => Box::new(endless(
                r#"{"status":"success","data":{"resultType":"vector","result":["#,
            )),
            _ => Box::new(
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"web-0"},"value":[1700000000,"2.5"]}]}}"#,
            ),
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(warp::serve(series.or(query)).incoming(listener).run());
    format!("http://{addr}")
}

/// Names of the custom metrics resources in discovery.
async fn discovered(bridge: &Bridge) -> Vec<String> {
    let (code, body) = bridge.get("/apis/custom.metrics.k8s.io/v1beta2").await;
    assert_eq!(code, 200, "{body}");
    let mut names: Vec<String> = body["resources"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|r| r["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn hostile_answers_are_dropped_clamped_and_capped() {
    let series_mode = Arc::new(AtomicU8::new(SERIES_OK));
    let query_mode = Arc::new(AtomicU8::new(Q_HEALTHY));
    let url = hostile_prometheus(series_mode.clone(), query_mode.clone()).await;
    let rules = format!(
        r#"
[prometheus]
url = "{url}"
timeout = "3s"
max_response_bytes = "64KiB"

[cache]
ttl = "1ms"
discovery_interval = "1s"

[[rules]]
series_query = '{{namespace!=""}}'
resources.overrides = {{ namespace = {{ resource = "namespace" }}, pod = {{ resource = "pod" }} }}
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (<<.GroupBy>>)'
"#
    );
    let bridge = Bridge::start(&rules).await;

    // 1. Hostile series names (and label names) are not discovered, so never rendered.
    assert_eq!(
        discovered(&bridge).await,
        ["namespaces/pod_load", "namespaces/spoofed", "pods/pod_load"]
    );
    let dropped = |reason: &'static str| {
        let bridge = &bridge;
        async move {
            bridge
                .self_metric(&format!(
                    "kube_metrics_bridge_series_dropped_total{{reason=\"{reason}\"}}"
                ))
                .await
                .unwrap_or(0.0)
        }
    };
    assert!(dropped("invalid_metric_name").await >= 2.0);
    assert!(dropped("invalid_label_name").await >= 1.0);
    let log = bridge.log();
    let warnings = log
        .lines()
        .filter(|l| l.contains("were left out of discovery") && l.contains("or vector(1)"))
        .count();
    assert_eq!(
        warnings, 1,
        "logged once, though relisted every second:\n{log}"
    );

    // 2. A sample time of u64::MAX seconds: clamped, not a panic, on every request.
    query_mode.store(Q_FAR_FUTURE, Ordering::SeqCst);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (code, body) = bridge.get(PATH).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["items"][0]["timestamp"], "9999-12-31T23:59:59Z");
    }
    assert!(
        bridge
            .self_metric("kube_metrics_bridge_values_adjusted_total{kind=\"timestamp_clamped\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );

    // 3. Answers past max_response_bytes: a fast 500 that names the limit, whether the body
    //    announces its length or streams without end.
    for mode in [Q_LARGE, Q_ENDLESS] {
        query_mode.store(mode, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        let (code, body) = bridge.get(PATH).await;
        assert_eq!(
            (code, &body["reason"]),
            (500, &serde_json::json!("InternalError")),
            "mode {mode}: {body}"
        );
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("max_response_bytes (64KiB)"), "{message}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "mode {mode} took {:?}: reading should stop at the limit, not at the 3s deadline",
            started.elapsed()
        );
    }
    assert!(
        bridge
            .self_metric("kube_metrics_bridge_prometheus_request_duration_seconds_count{backend=\"default\",call=\"query\",outcome=\"too_large\"}")
            .await
            .unwrap_or(0.0)
            >= 2.0
    );
    query_mode.store(Q_HEALTHY, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(bridge.get(PATH).await.0, 200);

    // 4. A series answer naming endless distinct series fails that discovery run when what it
    //    keeps passes max_response_bytes (counted) and keeps what the last good run found.
    series_mode.store(SERIES_ENDLESS, Ordering::SeqCst);
    let series_too_large = "kube_metrics_bridge_prometheus_request_duration_seconds_count{backend=\"default\",call=\"series\",outcome=\"too_large\"}";
    common::wait_until(
        "a too_large series answer",
        Duration::from_secs(10),
        || async {
            (bridge.self_metric(series_too_large).await.unwrap_or(0.0) >= 1.0).then_some(())
        },
    )
    .await;
    assert_eq!(
        discovered(&bridge).await,
        ["namespaces/pod_load", "namespaces/spoofed", "pods/pod_load"]
    );
    assert_eq!(bridge.get(PATH).await.0, 200);
}

/// The same hostile name, held by a real Prometheus (Debian's 2.42 stores it from remote
/// write) and matched by a broad series query: left out of discovery, and the good series
/// beside it still served with a real value.
#[tokio::test]
async fn hostile_series_name_in_a_real_prometheus_is_never_queried() {
    let prometheus =
        Prometheus::start_with_flags(&[], &["--web.enable-remote-write-receiver"]).await;
    let hostile = r#"pod_load{namespace="demo"} or vector(1)"#;
    let labels = [("namespace", "demo"), ("pod", "web-0")];
    prometheus.remote_write("pod_load", &labels, 2.5).await;
    prometheus.remote_write(hostile, &labels, 1.0).await;
    let stored = prometheus.series(r#"{namespace="demo"}"#).await;
    assert!(
        stored
            .iter()
            .any(|s| s.get("__name__").map(String::as_str) == Some(hostile)),
        "Prometheus should hold the hostile name: {stored:?}"
    );
    let rules = format!(
        r#"
[prometheus]
url = "{}"
timeout = "3s"

[cache]
ttl = "1ms"
discovery_interval = "1m"
series_max_age = "10m"

[[rules]]
series_query = '{{namespace="demo"}}'
resources.overrides = {{ namespace = {{ resource = "namespace" }}, pod = {{ resource = "pod" }} }}
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (<<.GroupBy>>)'
"#,
        prometheus.url()
    );
    let bridge = Bridge::start(&rules).await;
    assert_eq!(
        discovered(&bridge).await,
        ["namespaces/pod_load", "pods/pod_load"]
    );
    let (code, body) = bridge.get(PATH).await;
    assert_eq!(
        (code, body["items"][0]["value"].as_str()),
        (200, Some("2500m")),
        "{body}"
    );
    assert_eq!(
        bridge
            .self_metric("kube_metrics_bridge_series_dropped_total{reason=\"invalid_metric_name\"}")
            .await,
        Some(1.0)
    );
}
