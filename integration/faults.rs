//! Faults a real Prometheus cannot be made to show on demand: a backend that stalls, answers
//! garbage, or rejects the query. A small stand-in serves `/api/v1/series` properly (so the
//! metric is discovered) and misbehaves on `/api/v1/query`. Every case must end in a fast,
//! clear Status, never a hang.

mod common;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bridge::Bridge;
use warp::Filter;

const STALL: u8 = 0;
const GARBAGE: u8 = 1;
const REJECT: u8 = 2;
const MATRIX: u8 = 3;
const HEALTHY: u8 = 4;

/// Starts the stand-in; `mode` picks how `/api/v1/query` behaves.
async fn fake_prometheus(mode: Arc<AtomicU8>) -> String {
    let series = warp::path!("api" / "v1" / "series").map(|| {
        warp::reply::json(&serde_json::json!({"status": "success", "data": [
            {"__name__": "pod_load", "namespace": "demo", "pod": "web-0"}]}))
    });
    let query = warp::path!("api" / "v1" / "query").then(move || {
        let mode = mode.load(Ordering::SeqCst);
        async move {
            let (code, body) = match mode {
                STALL => {
                    tokio::time::sleep(Duration::from_secs(120)).await;
                    (200, String::new())
                }
                GARBAGE => (200, "<html>proxy error</html>".to_string()),
                REJECT => (400, r#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#.to_string()),
                MATRIX => (200, r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#.to_string()),
                _ => (200, r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"web-0"},"value":[1700000000,"2.5"]}]}}"#.to_string()),
            };
            warp::reply::with_status(body, warp::http::StatusCode::from_u16(code).unwrap_or_default())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(warp::serve(series.or(query)).incoming(listener).run());
    format!("http://{addr}")
}

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
    assert!(bridge.self_metric("kube_metrics_bridge_prometheus_request_duration_seconds_count{call=\"query\",outcome=\"malformed\"}").await.unwrap_or(0.0) >= 1.0);
}
