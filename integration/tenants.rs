//! Tenants from the request (issue 10 §3) against real parts: prom-label-proxy (built from
//! the Go module proxy by `integration/engines/prom-label-proxy/build.sh`) in front of a real
//! Prometheus, enforcing `namespace` from the `namespace` query parameter. The bridge's
//! backend sets that parameter to the request's namespace (`<<.Namespace>>`) and lists
//! series through the Prometheus itself (`discovery_backend`).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::adapter::{log_tail, spawn_logged};
use common::bridge::Bridge;
use common::{cached_build, free_port, Exporter, Prometheus};

async fn prom_label_proxy_bin() -> PathBuf {
    cached_build(
        "KMB_PROM_LABEL_PROXY_BIN",
        "integration/engines/prom-label-proxy/build.sh",
        "prom-label-proxy",
    )
    .await
}

fn external(namespace: &str, metric: &str, query: &str) -> String {
    format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}{query}")
}

/// Sum of the items' values of an external answer, or the code and reason.
async fn total(bridge: &Bridge, path: &str) -> String {
    let (code, body) = bridge.get(path).await;
    match body["items"].as_array() {
        Some(items) if code == 200 => {
            let sum: f64 = items
                .iter()
                .filter_map(|i| i["value"].as_str().and_then(common::quantity))
                .sum();
            format!("{sum}")
        }
        _ => format!("{code} {}", body["reason"].as_str().unwrap_or_default()),
    }
}

#[tokio::test]
async fn each_namespace_sees_only_its_own_series() {
    let exporter = Exporter::start_empty().await;
    for (namespace, value) in [("shop", 5.0), ("billing", 9.0)] {
        exporter
            .set_gauge(
                "queue_depth",
                &[("namespace", namespace), ("queue", "jobs")],
                value,
            )
            .await;
    }
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    prometheus
        .wait_for_series(
            "queue_depth{namespace=\"billing\"}",
            Duration::from_secs(30),
        )
        .await;

    let bin = prom_label_proxy_bin().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("prom-label-proxy.log");
    let port = free_port();
    let _proxy = spawn_logged(
        &bin,
        &[
            "-label".into(),
            "namespace".into(),
            "-upstream".into(),
            prometheus.url(),
            "-insecure-listen-address".into(),
            format!("127.0.0.1:{port}"),
        ],
        &[],
        &log,
    );
    let proxy = format!("http://127.0.0.1:{port}");
    let http = common::http_client();
    common::wait_until(
        "prom-label-proxy answers",
        Duration::from_secs(30),
        || async {
            let url = format!("{proxy}/api/v1/query?query=queue_depth&namespace=shop");
            let ok = http
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            ok.then_some(())
        },
    )
    .await;
    // Without the parameter the proxy refuses: the tenant is not optional.
    let bare = http
        .get(format!("{proxy}/api/v1/query?query=queue_depth"))
        .send()
        .await
        .expect("call");
    assert_eq!(bare.status(), 400, "{}", log_tail(&log, 20));

    // The external rule does not add the namespace to the query (namespaced = false): only
    // the proxy can keep one namespace's request from seeing the other's queue.
    let rule = |backend: &str, name: &str| {
        format!(
            r#"
[[external_rules]]
backend = "{backend}"
series_query = 'queue_depth{{namespace!=""}}'
name = {{ matches = "^queue_depth$", as = "{name}" }}
namespaced = false
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (queue)'
"#
        )
    };
    let rules = format!(
        r#"
[cache]
ttl = "1m"

[[backends]]
name = "tenants"
url = "{proxy}"
query_params = {{ namespace = "<<.Namespace>>" }}
discovery_backend = "cluster"

[[backends]]
name = "cluster"
url = "{}"
{}{}"#,
        prometheus.url(),
        rule("tenants", "queue_depth"),
        rule("cluster", "queue_depth_everywhere"),
    );
    let bridge = Bridge::start(&rules).await;

    // The same PromQL, two tenants: each its own value (and its own cache entry).
    assert_eq!(
        total(&bridge, &external("shop", "queue_depth", "")).await,
        "5"
    );
    assert_eq!(
        total(&bridge, &external("billing", "queue_depth", "")).await,
        "9"
    );
    assert_eq!(
        total(&bridge, &external("shop", "queue_depth", "")).await,
        "5"
    );
    // Without the proxy the same rule sees both namespaces.
    assert_eq!(
        total(&bridge, &external("shop", "queue_depth_everywhere", "")).await,
        "14"
    );
    // A request cannot pick the other tenant through its selector: the proxy enforces the
    // path's namespace whatever matchers the query carries.
    let sneaky = total(
        &bridge,
        &external("shop", "queue_depth", "?labelSelector=namespace%3Dbilling"),
    )
    .await;
    assert_ne!(sneaky, "9", "shop's request read billing's queue");
    assert_ne!(sneaky, "14");
    // A namespace with no series gets nothing from the other tenants.
    assert_eq!(
        total(&bridge, &external("empty", "queue_depth", "")).await,
        "404 NotFound"
    );
}
