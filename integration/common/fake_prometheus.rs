//! A stand-in for Prometheus, for faults a real one cannot be made to show on demand: it
//! serves `/api/v1/series` properly (one series, `pod_load{namespace="demo",pod="web-0"}`, so
//! the metric is discovered) and answers `/api/v1/query` as its mode says: stalling,
//! garbage, a rejected query, a matrix, or a healthy `2.5` for `web-0`.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use warp::Filter;

pub const STALL: u8 = 0;
pub const GARBAGE: u8 = 1;
pub const REJECT: u8 = 2;
pub const MATRIX: u8 = 3;
pub const HEALTHY: u8 = 4;

/// Starts the stand-in; `mode` picks how `/api/v1/query` behaves.
pub async fn fake_prometheus(mode: Arc<AtomicU8>) -> String {
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
