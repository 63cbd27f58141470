//! Scale to zero without KEDA (issue 11 §2, docs/scale-to-zero.md): real HPAs with
//! `minReplicas: 0` in kube-controller-manager v1.37.2, where the HPAScaleToZero feature gate
//! is beta and on by default (so the control plane runs with its default gates), reading an
//! External metric (a queue's length) and an Object metric (a Service's request rate) from
//! the bridge behind the aggregator, with a real Prometheus scraping the test exporter.
//!
//! A queue worker goes 1 -> 0 while its queue has no series at all, 0 -> 4 when messages
//! arrive, back to 0 when the queue's series is removed (absent, not 0) and discovery has
//! forgotten the metric, 0 -> 3 and back on the Service's traffic. Beside it, the same queue
//! read through a rule with the default `on_missing = "error"` freezes its HPA
//! (`ScalingActive=False`, replicas kept), and a Deployment put at zero by hand is left alone
//! by its HPA (`ScalingDisabled`) until it is scaled to one.

mod common;

use std::time::Duration;

use common::controlplane::ControlPlane;
use common::hpa::{self, serve_through_aggregator};
use common::{Exporter, Prometheus};
use serde_json::Value;

const NS: &str = "queues";
/// Messages per replica (the HPAs' AverageValue target) and requests per second per replica.
const TARGET: u64 = 10;
/// Three HPA sync periods (controlplane.rs runs the HPA controller every 2 s): a Deployment
/// that kept its replicas this long is where its HPA wants it.
const STEADY: Duration = Duration::from_secs(7);
const SCALE_TIMEOUT: Duration = Duration::from_secs(120);

fn rules(prometheus: &Prometheus) -> String {
    format!(
        r#"
[prometheus]
url = "{}"
timeout = "3s"
# The series API honours series_max_age per series; Prometheus' label API keeps a name while
# its series is in the head block (hours). With it the queue would be forgotten only then.
discovery_api = "series"

[cache]
ttl = "1s"
discovery_interval = "2s"
# How far back discovery looks (by default the discovery interval, 1m): short here so the
# test sees a removed queue forgotten.
series_max_age = "5s"

# The queue's length; an absent series reads as 0.
[[external_rules]]
series_query = 'queue_messages_ready{{namespace!="",queue!=""}}'
resources.overrides = {{ namespace = {{ resource = "namespace" }} }}
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (queue)'
on_missing = "zero"

# The same series with the default on_missing = "error".
[[external_rules]]
series_query = 'queue_messages_ready{{namespace!="",queue!=""}}'
name = {{ matches = "^queue_messages_ready$", as = "queue_messages_ready_strict" }}
resources.overrides = {{ namespace = {{ resource = "namespace" }} }}
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (queue)'

# Requests per second of a Service, for Object metrics.
[[rules]]
series_query = 'http_requests_total{{namespace!="",service!=""}}'
resources.overrides = {{ namespace = {{ resource = "namespace" }}, service = {{ resource = "service" }} }}
name = {{ matches = "^(.*)_total$", as = "${{1}}_per_second" }}
metrics_query = 'sum(rate(<<.Series>>{{<<.LabelMatchers>>}}[5s])) by (<<.GroupBy>>)'
on_missing = "zero"
"#,
        prometheus.url()
    )
}

/// An HPA with `minReplicas: 0` on Deployment `name`; no stabilization, so each decision
/// shows at the next sync.
fn zero_hpa(name: &str, metrics: &[String]) -> String {
    format!(
        r#"---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: {name}, namespace: {NS}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}
  minReplicas: 0
  maxReplicas: 10
  behavior:
    scaleUp: {{stabilizationWindowSeconds: 0, policies: [{{type: Pods, value: 10, periodSeconds: 1}}]}}
    scaleDown: {{stabilizationWindowSeconds: 0, policies: [{{type: Pods, value: 10, periodSeconds: 1}}]}}
  metrics:
{}
"#,
        metrics.concat()
    )
}

fn queue_metric(metric: &str) -> String {
    format!(
        "  - type: External\n    external:\n      metric: {{name: {metric}, selector: {{matchLabels: {{queue: orders}}}}}}\n      target: {{type: AverageValue, averageValue: \"{TARGET}\"}}\n"
    )
}

fn service_metric() -> String {
    format!(
        "  - type: Object\n    object:\n      describedObject: {{apiVersion: v1, kind: Service, name: orders-api}}\n      metric: {{name: http_requests_per_second}}\n      target: {{type: AverageValue, averageValue: \"{TARGET}\"}}\n"
    )
}

async fn scaled_to(cp: &ControlPlane, name: &str, want: u64) {
    hpa::wait_replicas(cp, NS, name, want, STEADY, SCALE_TIMEOUT, || async {}).await;
}

/// Waits until HPA `name`'s condition `kind` has `status` and `reason` (any reason if empty).
async fn condition(cp: &ControlPlane, name: &str, kind: &str, status: &str, reason: &str) {
    let what = format!("HPA {name}: {kind}={status} {reason}");
    cp.wait_for(&what, Duration::from_secs(60), || async {
        let (got, why) = hpa::condition(&hpa::hpa(cp, NS, name).await, kind);
        (got == status && (reason.is_empty() || why == reason)).then_some(())
    })
    .await;
}

/// `kubectl get --raw` through kube-apiserver: the JSON on success, else stderr.
async fn raw(cp: &ControlPlane, path: &str) -> Result<Value, String> {
    let out = cp.kubectl(&["get", "--raw", path]).await;
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn external_path(metric: &str) -> String {
    format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/{metric}?labelSelector=queue%3Dorders")
}

/// The metrics the External Metrics API's discovery document lists.
async fn discovered_external(cp: &ControlPlane) -> Vec<String> {
    let doc = raw(cp, "/apis/external.metrics.k8s.io/v1beta1")
        .await
        .unwrap_or_else(|e| panic!("external discovery: {e}"));
    doc["resources"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|e| e["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The answer an HPA gets for the queue when it has no series: exactly one item of 0 (an
/// empty list would be an error to the HPA: "no metrics returned from external metrics API").
async fn assert_reads_one_zero(cp: &ControlPlane) {
    let list = raw(cp, &external_path("queue_messages_ready"))
        .await
        .unwrap_or_else(|e| panic!("queue_messages_ready through the aggregator: {e}"));
    let items = list["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{list:#}");
    assert_eq!(items[0]["value"], "0", "{list:#}");
}

#[tokio::test]
async fn hpas_scale_to_zero_and_back_on_external_and_object_metrics() {
    let exporter = Exporter::start_empty().await;
    let orders = [("namespace", NS), ("queue", "orders")];
    let api = [("namespace", NS), ("service", "orders-api")];
    // The Service's counter exists from the start, not moving; the queue has no series yet.
    exporter.set_counter("http_requests_total", &api, 0.0).await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    let cp = ControlPlane::start().await;
    prometheus
        .wait_for_series("http_requests_total", Duration::from_secs(30))
        .await;
    let _bridge = serve_through_aggregator(&cp, &rules(&prometheus), NS).await;

    cp.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: orders-api, namespace: {NS}}}\n\
         spec: {{selector: {{app: orders-worker}}, ports: [{{port: 80}}]}}\n"
    ))
    .await;
    // kube-apiserver v1.37 takes minReplicas: 0 with its default feature gates (it refuses it
    // when HPAScaleToZero is off).
    cp.apply(
        &[
            hpa::deployment(NS, "orders-worker", 1),
            zero_hpa(
                "orders-worker",
                &[queue_metric("queue_messages_ready"), service_metric()],
            ),
            hpa::deployment(NS, "strict-worker", 1),
            zero_hpa(
                "strict-worker",
                &[queue_metric("queue_messages_ready_strict")],
            ),
            // Put at zero by hand (or by KEDA before the move): the HPA must leave it there.
            hpa::deployment(NS, "paused-worker", 0),
            zero_hpa("paused-worker", &[queue_metric("queue_messages_ready")]),
        ]
        .concat(),
    )
    .await;
    assert_eq!(
        hpa::hpa(&cp, NS, "orders-worker").await["spec"]["minReplicas"],
        0
    );

    // Idle: the queue has never had a series, the Service no traffic.
    scaled_to(&cp, "orders-worker", 0).await;
    condition(&cp, "orders-worker", "ScaledToZero", "True", "ScaledToZero").await;
    condition(&cp, "orders-worker", "ScalingActive", "True", "").await;
    assert!(
        !discovered_external(&cp)
            .await
            .contains(&"queue_messages_ready".to_string()),
        "the queue has no series yet"
    );
    assert_reads_one_zero(&cp).await;
    // With on_missing = "error" the same absence is an error: the HPA holds its replicas.
    condition(
        &cp,
        "strict-worker",
        "ScalingActive",
        "False",
        "FailedGetExternalMetric",
    )
    .await;
    assert_eq!(hpa::replicas(&cp, NS, "strict-worker").await, 1);
    let err = raw(&cp, &external_path("queue_messages_ready_strict"))
        .await
        .expect_err("no series, on_missing = error");
    assert!(err.contains("NotFound"), "{err}");
    condition(
        &cp,
        "paused-worker",
        "ScalingActive",
        "False",
        "ScalingDisabled",
    )
    .await;

    // Messages arrive: 35 at 10 per replica, four replicas, from zero.
    exporter
        .set_gauge("queue_messages_ready", &orders, 35.0)
        .await;
    scaled_to(&cp, "orders-worker", 4).await;
    condition(
        &cp,
        "orders-worker",
        "ScaledToZero",
        "False",
        "NotScaledToZero",
    )
    .await;
    scaled_to(&cp, "strict-worker", 4).await;
    // The hand-scaled Deployment saw the same queue for as long and stayed at zero...
    assert_eq!(hpa::replicas(&cp, NS, "paused-worker").await, 0);
    assert_eq!(
        hpa::scaling_active(&cp, NS, "paused-worker").await,
        ("False".to_string(), "ScalingDisabled".to_string())
    );
    // ...until someone scales it to one: then its HPA takes over.
    cp.kubectl_ok(&[
        "-n",
        NS,
        "scale",
        "deployment/paused-worker",
        "--replicas=1",
    ])
    .await;
    scaled_to(&cp, "paused-worker", 4).await;

    // Drained, and the exporter drops the queue's series (absent, not 0).
    exporter.remove("queue_messages_ready", &orders).await;
    scaled_to(&cp, "orders-worker", 0).await;
    condition(&cp, "orders-worker", "ScaledToZero", "True", "ScaledToZero").await;
    condition(
        &cp,
        "strict-worker",
        "ScalingActive",
        "False",
        "FailedGetExternalMetric",
    )
    .await;
    assert_eq!(
        hpa::replicas(&cp, NS, "strict-worker").await,
        4,
        "on_missing = error: an absent queue freezes the HPA where it is"
    );
    // Past series_max_age discovery forgets the metric; the rule still answers 0.
    cp.wait_for(
        "discovery to forget queue_messages_ready",
        Duration::from_secs(60),
        || async {
            (!discovered_external(&cp)
                .await
                .contains(&"queue_messages_ready".to_string()))
            .then_some(())
        },
    )
    .await;
    assert_reads_one_zero(&cp).await;

    // Traffic on the Service, the queue still absent: 25 requests/s at 10 per replica, three
    // replicas, from zero, on the Object metric.
    exporter
        .set_counter("http_requests_total", &api, 25.0)
        .await;
    scaled_to(&cp, "orders-worker", 3).await;
    // Traffic stops (the counter stays, its rate is 0). Scaling down with a metric that fails
    // is refused, so reaching zero shows both metrics answered: the forgotten queue as 0.
    exporter.set_counter("http_requests_total", &api, 0.0).await;
    scaled_to(&cp, "orders-worker", 0).await;
    assert!(
        !discovered_external(&cp)
            .await
            .contains(&"queue_messages_ready".to_string()),
        "the queue was answered without discovery"
    );
    condition(&cp, "orders-worker", "ScalingActive", "True", "").await;
}
