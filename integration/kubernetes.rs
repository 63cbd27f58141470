//! End to end with a real control plane (etcd, kube-apiserver, kube-controller-manager built
//! from official sources), a real Prometheus and the bridge on the host, registered as
//! kube-apiserver expects: an ExternalName Service to loopback and three APIServices with a
//! real caBundle. Shows availability, `kubectl get --raw` through the aggregator, RBAC
//! denials, and real HPAs scaling Deployments on Pods, Object and External metrics.

mod common;

use std::cell::RefCell;
use std::time::Duration;

use common::bridge::{tls_client_with, Bridge};
use common::controlplane::ControlPlane;
use common::hpa::{self, register, serve_through_aggregator, shipped_objects, SERVICE_DNS};
use common::{poll, wait_until, Exporter, Prometheus};
use serde_json::Value;

const NS: &str = "hpa-demo";

fn rules(prometheus: &Prometheus) -> String {
    format!(
        r#"
[prometheus]
url = "{}"
timeout = "3s"

[cache]
ttl = "1s"
discovery_interval = "2s"
series_max_age = "10m"

[[rules]]
series_query = 'pod_work{{namespace!="",pod!=""}}'
resources.overrides = {{ namespace = {{ resource = "namespace" }}, pod = {{ resource = "pod" }} }}
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (<<.GroupBy>>)'

[[rules]]
series_query = 'service_requests{{namespace!="",service!=""}}'
resources.overrides = {{ namespace = {{ resource = "namespace" }}, service = {{ resource = "service" }} }}
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (<<.GroupBy>>)'

[[external_rules]]
series_query = 'queue_depth{{namespace!=""}}'
resources.overrides = {{ namespace = {{ resource = "namespace" }} }}
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (queue)'
"#,
        prometheus.url()
    )
}

fn hpa(name: &str, metric: &str) -> String {
    format!(
        r#"---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: {name}, namespace: {NS}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}
  minReplicas: 1
  maxReplicas: 6
  behavior:
    scaleUp: {{stabilizationWindowSeconds: 0, policies: [{{type: Pods, value: 10, periodSeconds: 1}}]}}
    scaleDown: {{stabilizationWindowSeconds: 0, policies: [{{type: Pods, value: 10, periodSeconds: 1}}]}}
  metrics:
{metric}
"#
    )
}

/// `describedObject.name` of every item of a MetricValueList.
fn described_names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["describedObject"]["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `request` and checks the HTTP status, showing the body when it differs.
async fn assert_status(request: reqwest::RequestBuilder, want: u16) {
    let r = request.send().await.expect("request to the bridge");
    let got = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    assert_eq!(got, want, "{body}");
}

/// Pods of `app` that kube-controller-manager created; marks new ones Running (no kubelet
/// runs) and, given a `total` load, shares it evenly as each pod's `pod_work` sample, the way
/// real load spreads over replicas (so the HPA settles instead of chasing its own tail).
async fn tend_pods(
    cp: &ControlPlane,
    exporter: &Exporter,
    app: &str,
    total: Option<f64>,
) -> Vec<String> {
    let list = cp
        .get_json(&format!(
            "/api/v1/namespaces/{NS}/pods?labelSelector=app%3D{app}"
        ))
        .await;
    let mut names = Vec::new();
    for pod in list["items"].as_array().cloned().unwrap_or_default() {
        if pod["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if pod["status"]["phase"] != "Running" {
            cp.set_pod_running(NS, &name).await;
        }
        names.push(name);
    }
    if let Some(total) = total {
        for name in &names {
            exporter
                .set_gauge(
                    "pod_work",
                    &[("namespace", NS), ("pod", name)],
                    total / names.len() as f64,
                )
                .await;
        }
    }
    names.sort();
    names
}

/// Waits until the Deployment wants `want` replicas and stays there for three HPA sync
/// periods, tending its pods meanwhile.
async fn scaled_to(
    cp: &ControlPlane,
    exporter: &Exporter,
    name: &str,
    want: u64,
    total_load: Option<f64>,
) {
    hpa::wait_replicas(
        cp,
        NS,
        name,
        want,
        Duration::from_secs(7),
        Duration::from_secs(120),
        || async {
            tend_pods(cp, exporter, name, total_load).await;
        },
    )
    .await;
}

#[tokio::test]
async fn aggregated_api_and_real_hpas() {
    let exporter = Exporter::start_empty().await;
    exporter
        .set_gauge(
            "service_requests",
            &[("namespace", NS), ("service", "object-web")],
            300.0,
        )
        .await;
    exporter
        .set_gauge("queue_depth", &[("namespace", NS), ("queue", "jobs")], 40.0)
        .await;
    exporter
        .set_gauge("pod_work", &[("namespace", NS), ("pod", "bootstrap")], 0.0)
        .await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    let cp = ControlPlane::start().await;
    prometheus
        .wait_for_series("queue_depth", Duration::from_secs(30))
        .await;
    let bridge = serve_through_aggregator(&cp, &rules(&prometheus), NS).await;

    // Workloads: pods come from kube-controller-manager; the test plays kubelet.
    cp.apply(
        &[
            hpa::deployment(NS, "pods-web", 1),
            hpa::deployment(NS, "object-web", 1),
            hpa::deployment(NS, "external-web", 1),
        ]
        .concat(),
    )
    .await;
    cp.apply(&format!("apiVersion: v1\nkind: Service\nmetadata: {{name: object-web, namespace: {NS}}}\nspec: {{selector: {{app: object-web}}, ports: [{{port: 80}}]}}\n")).await;
    let pods = wait_until("pods-web's first pod", Duration::from_secs(60), || async {
        let names = tend_pods(&cp, &exporter, "pods-web", Some(4.0)).await;
        (!names.is_empty()).then_some(names)
    })
    .await;
    prometheus
        .wait_for_series(
            &format!("pod_work{{pod=\"{}\"}}", pods[0]),
            Duration::from_secs(30),
        )
        .await;

    // kubectl get --raw through kube-apiserver and the aggregator.
    let raw = |path: String| {
        let cp = &cp;
        async move {
            let out = cp.kubectl(&["get", "--raw", &path]).await;
            (
                out.status.success(),
                serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let discovery = wait_until(
        "discovery to list pods/pod_work",
        Duration::from_secs(30),
        || async {
            let (ok, body, _) = raw("/apis/custom.metrics.k8s.io/v1beta2".into()).await;
            (ok && body["resources"]
                .as_array()
                .is_some_and(|r| r.iter().any(|e| e["name"] == "pods/pod_work")))
            .then_some(body)
        },
    )
    .await;
    assert_eq!(discovery["groupVersion"], "custom.metrics.k8s.io/v1beta2");
    let (ok, list, err) = raw(format!("/apis/custom.metrics.k8s.io/v1beta2/namespaces/{NS}/pods/%2A/pod_work?labelSelector=app%3Dpods-web")).await;
    assert!(ok, "{err}");
    assert_eq!(
        described_names(&list),
        pods,
        "only the Deployment's pods; not the bootstrap series"
    );
    assert_eq!(list["items"][0]["value"], "4");
    let (ok, obj, err) = raw(format!(
        "/apis/custom.metrics.k8s.io/v1beta1/namespaces/{NS}/services/object-web/service_requests"
    ))
    .await;
    assert!(ok, "{err}");
    assert_eq!(obj["items"][0]["value"], "300");
    let (ok, nsm, err) = raw(format!(
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{NS}/metrics/pod_work"
    ))
    .await;
    assert!(ok, "{err}");
    assert_eq!(nsm["items"][0]["describedObject"]["kind"], "Namespace");
    let (ok, ext, err) = raw(format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/queue_depth?labelSelector=queue%3Djobs")).await;
    assert!(ok, "{err}");
    assert_eq!(ext["items"][0]["value"], "40");

    // RBAC: through kube-apiserver a user with no rights is refused; the bridge itself
    // refuses a front-proxy request for a user without rights (its SubjectAccessReview),
    // answers one with rights, and does not believe X-Remote-User without the certificate.
    let nobody = cp.client_kubeconfig("nobody", &[]);
    let out = cp
        .kubectl_as(
            &nobody,
            &[
                "get",
                "--raw",
                &format!("/apis/custom.metrics.k8s.io/v1beta2/namespaces/{NS}/pods/%2A/pod_work"),
            ],
            None,
        )
        .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Forbidden")
            || String::from_utf8_lossy(&out.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (cert, key) = cp.front_proxy_client_paths();
    let proxy = tls_client_with(&bridge.ca_path(), false, Some((&cert, &key)));
    let direct = bridge.url(&format!(
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{NS}/pods/%2A/pod_work"
    ));
    assert_status(
        proxy
            .get(&direct)
            .header("X-Remote-User", "nobody")
            .header("X-Remote-Group", "system:authenticated"),
        403,
    )
    .await;
    assert_status(proxy.get(&direct).header("X-Remote-User", "reader"), 200).await;
    let forged = bridge
        .client()
        .get(&direct)
        .header("X-Remote-User", "admin")
        .header("X-Remote-Group", "system:masters")
        .send()
        .await
        .expect("forged");
    assert_eq!(
        forged.status().as_u16(),
        401,
        "forged headers without the front-proxy certificate"
    );
    // Authentication comes first: without credentials, every kind of bad request (unknown
    // path, wrong method, bad selector, bad name, unacceptable type) is the same 401, so
    // nothing about routes, methods or validation leaks.
    let unauthorized = bridge
        .client()
        .get(&direct)
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    let apis = "/apis/custom.metrics.k8s.io/v1beta2";
    for (method, path, accept) in [
        ("GET", "/no/such/path".to_string(), "*/*"),
        (
            "DELETE",
            format!("{apis}/namespaces/{NS}/pods/%2A/pod_work"),
            "*/*",
        ),
        ("POST", apis.to_string(), "*/*"),
        (
            "GET",
            format!("{apis}/namespaces/{NS}/pods/%2A/pod_work?labelSelector=app%3D%3D%3D"),
            "*/*",
        ),
        (
            "GET",
            format!("{apis}/namespaces/Bad_NS/pods/%2A/pod_work"),
            "*/*",
        ),
        (
            "GET",
            format!("{apis}/namespaces/{NS}/pods/%2A/no-such-metric"),
            "*/*",
        ),
        (
            "GET",
            format!("{apis}/namespaces/{NS}/pods/%2A/pod_work"),
            "application/yaml",
        ),
        ("GET", "/version".to_string(), "*/*"),
    ] {
        let r = bridge
            .client()
            .request(method.parse().expect("method"), bridge.url(&path))
            .header("Accept", accept)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), 401, "{method} {path}");
        assert_eq!(
            r.text().await.expect("body"),
            unauthorized,
            "{method} {path}"
        );
    }
    assert_eq!(
        bridge
            .client()
            .get(bridge.url("/healthz"))
            .send()
            .await
            .expect("healthz")
            .status()
            .as_u16(),
        200
    );

    // Bearer tokens go to TokenReview: a ServiceAccount's token with rights is served, one
    // without rights is refused by the SubjectAccessReview, a made-up token is 401.
    cp.apply(&format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: metrics-client, namespace: {NS}}}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: stranger, namespace: {NS}}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: metrics-client}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: \"kube-metrics-bridge:metrics-reader\"}}\n\
         subjects: [{{kind: ServiceAccount, name: metrics-client, namespace: {NS}}}]\n"
    ))
    .await;
    let token = |sa: &'static str| {
        let cp = &cp;
        async move {
            cp.kubectl_ok(&["create", "token", sa, "-n", NS])
                .await
                .trim()
                .to_string()
        }
    };
    let good = token("metrics-client").await;
    assert_status(bridge.client().get(&direct).bearer_auth(&good), 200).await;
    let stranger = token("stranger").await;
    assert_status(bridge.client().get(&direct).bearer_auth(&stranger), 403).await;
    assert_status(
        bridge.client().get(&direct).bearer_auth("made-up-token"),
        401,
    )
    .await;

    // Everything so far (kubectl get --raw, the direct requests) asked for JSON, so protobuf
    // answers from here on are the HPA controller's.
    for route in ["custom_wildcard", "custom_object", "external"] {
        let series = format!(
            "kube_metrics_bridge_responses_total{{route=\"{route}\",encoding=\"protobuf\"}}"
        );
        assert_eq!(
            bridge.self_metric(&series).await.unwrap_or(0.0),
            0.0,
            "{series}"
        );
    }
    // Real HPAs (kube-controller-manager with service-account credentials).
    cp.apply(&[
        hpa("pods-web", "  - type: Pods\n    pods: {metric: {name: pod_work}, target: {type: AverageValue, averageValue: \"10\"}}"),
        hpa("object-web", "  - type: Object\n    object: {metric: {name: service_requests}, describedObject: {apiVersion: v1, kind: Service, name: object-web}, target: {type: AverageValue, averageValue: \"100\"}}"),
        hpa("external-web", "  - type: External\n    external: {metric: {name: queue_depth, selector: {matchLabels: {queue: jobs}}}, target: {type: AverageValue, averageValue: \"10\"}}"),
    ]
    .concat())
    .await;
    // Pods: a load of 30 spread over the pods, target 10 per pod -> 3 replicas; then 5 -> 1.
    scaled_to(&cp, &exporter, "pods-web", 3, Some(30.0)).await;
    // Object: 300 / 100 -> 3; External: 40 / 10 -> 4.
    scaled_to(&cp, &exporter, "object-web", 3, None).await;
    scaled_to(&cp, &exporter, "external-web", 4, None).await;
    hpa_reports(&cp, "external-web", "/external/current/averageValue", "10").await;
    // The HPA controller asks with `Accept: application/vnd.kubernetes.protobuf, */*`, which
    // kube-aggregator passes on: each kind of HPA metric was answered in protobuf (the HPAs
    // have synced, as they scaled; the counter is read until it shows it).
    for route in ["custom_wildcard", "custom_object", "external"] {
        answered_in_protobuf(&bridge, route).await;
    }

    scaled_to(&cp, &exporter, "pods-web", 1, Some(5.0)).await;
    // The scaled-down pods are gone from the cluster but their series are still in
    // Prometheus (the exporter still serves them): they must not be named.
    let live = tend_pods(&cp, &exporter, "pods-web", None).await;
    // The watch cache sees the deletions a moment after kube-apiserver: wait for the answer to
    // name exactly the live pods (a ghost that lingers fails the wait).
    let path = format!("/apis/custom.metrics.k8s.io/v1beta1/namespaces/{NS}/pods/%2A/pod_work?labelSelector=app%3Dpods-web");
    let last = RefCell::new(Value::Null);
    let (last_ref, path, wanted) = (&last, &path, &live);
    let settled = poll(Duration::from_secs(30), || async move {
        let (ok, list, err) = raw(path.clone()).await;
        assert!(ok, "{err}");
        let names = described_names(&list);
        *last_ref.borrow_mut() = list;
        (&names == wanted).then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "deleted pods never appear: wanted {live:?}, last answer {:#}",
        last.borrow()
    );
    let series = prometheus.series("pod_work").await;
    assert!(
        series.len() > live.len() + 1,
        "Prometheus still has the deleted pods' series: {series:?}"
    );
    exporter
        .set_gauge(
            "service_requests",
            &[("namespace", NS), ("service", "object-web")],
            100.0,
        )
        .await;
    scaled_to(&cp, &exporter, "object-web", 1, None).await;
    exporter
        .set_gauge("queue_depth", &[("namespace", NS), ("queue", "jobs")], 20.0)
        .await;
    scaled_to(&cp, &exporter, "external-web", 2, None).await;
    hpa_reports(&cp, "pods-web", "/pods/current/averageValue", "5").await;
    hpa_reports(&cp, "object-web", "/object/current/averageValue", "100").await;
}

/// Waits until HPA `name` reports `want` at `pointer` (a JSON pointer into its first current
/// metric). The HPA writes its status on its own sync after scaling, so reading it once right
/// after the Deployment scaled can see the value from before.
async fn hpa_reports(cp: &ControlPlane, name: &str, pointer: &str, want: &str) {
    let path = format!("/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{name}");
    let last = RefCell::new(Value::Null);
    let (last_ref, path) = (&last, &path);
    let reported = poll(Duration::from_secs(30), || async move {
        let hpa = cp.get_json(path).await;
        let got = hpa["status"]["currentMetrics"][0].pointer(pointer).cloned();
        *last_ref.borrow_mut() = hpa["status"].clone();
        (got.as_ref().and_then(Value::as_str) == Some(want)).then_some(())
    })
    .await;
    assert!(
        reported.is_some(),
        "HPA {name}: {pointer} never became {want}; status: {:#}",
        last.borrow()
    );
}

/// Waits until the bridge has answered requests on `route` in protobuf.
async fn answered_in_protobuf(bridge: &Bridge, route: &str) {
    let series =
        format!("kube_metrics_bridge_responses_total{{route=\"{route}\",encoding=\"protobuf\"}}");
    wait_until(
        &format!("a protobuf answer on route {route}"),
        Duration::from_secs(60),
        || async { (bridge.self_metric(&series).await.unwrap_or(0.0) >= 1.0).then_some(()) },
    )
    .await;
}

/// Waits until the bridge reports `resource`'s watch cache in `state`.
async fn cache_state(bridge: &Bridge, resource: &str, state: &str) {
    let series = format!(
        "kube_metrics_bridge_watch_cache_state{{resource=\"{resource}\",state=\"{state}\"}}"
    );
    wait_until(
        &format!("the {resource} watch cache to be {state}"),
        Duration::from_secs(90),
        || async { (bridge.self_metric(&series).await == Some(1.0)).then_some(()) },
    )
    .await;
}

/// One resource RBAC forbids and one whose CRD is deleted must not take the API down
/// (issue 8 §1): the bridge becomes Ready, pod metrics are served through the aggregator,
/// the forbidden resource's metrics are a clear 503, the vanished one's a 404, a named
/// object that does not exist is a 404, and granting the RBAC later works without a restart.
#[tokio::test]
async fn readiness_survives_forbidden_and_vanished_resources() {
    const RNS: &str = "ready-demo";
    let exporter = Exporter::start_empty().await;
    for (name, labels) in [
        ("pod_work", [("namespace", RNS), ("pod", "web-0")]),
        // A deleted pod whose series lingers in Prometheus.
        ("pod_work", [("namespace", RNS), ("pod", "ghost-0")]),
        ("secret_bytes", [("namespace", RNS), ("secret", "s1")]),
        ("widget_depth", [("namespace", RNS), ("widget", "w1")]),
    ] {
        exporter.set_gauge(name, &labels, 7.0).await;
    }
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    let cp = ControlPlane::start().await;
    cp.apply(&shipped_objects()).await;
    cp.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {RNS}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: s1, namespace: {RNS}}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: web-0, namespace: {RNS}}}\n\
         spec: {{containers: [{{name: app, image: registry.invalid/app:1}}]}}\n---\n\
         apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
         metadata: {{name: widgets.example.com}}\n\
         spec: {{group: example.com, scope: Namespaced, names: {{plural: widgets, singular: widget, kind: Widget}},\n  \
         versions: [{{name: v1, served: true, storage: true, schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}}}]}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: test-widgets}}\n\
         rules: [{{apiGroups: [example.com], resources: [widgets], verbs: [get, list, watch]}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: test-widgets}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: test-widgets}}\n\
         subjects: [{{kind: ServiceAccount, name: kube-metrics-bridge, namespace: custom-metrics}}]\n"
    ))
    .await;
    cp.set_pod_running(RNS, "web-0").await;
    cp.wait_for("the Widget CRD served", Duration::from_secs(60), || async {
        (cp.get(&format!("/apis/example.com/v1/namespaces/{RNS}/widgets"))
            .await
            .0
            == 200)
            .then_some(())
    })
    .await;
    cp.apply(&format!(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: w1, namespace: {RNS}}}\n"
    ))
    .await;
    let bridge_kubeconfig = hpa::bridge_kubeconfig(&cp);
    for metric in ["pod_work", "secret_bytes", "widget_depth"] {
        prometheus
            .wait_for_series(metric, Duration::from_secs(30))
            .await;
    }
    // As prometheus-adapter's default rules: every label that names a resource becomes one.
    let rules = format!(
        r#"
[prometheus]
url = "{}"
timeout = "3s"

[cache]
ttl = "1s"
discovery_interval = "2s"

[[rules]]
series_query = '{{__name__=~"pod_work|secret_bytes|widget_depth",namespace!=""}}'
resources.template = "<<.Resource>>"
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (<<.GroupBy>>)'
"#,
        prometheus.url()
    );
    // Ready although the secrets watch is forbidden (start_for_cluster waits for /readyz).
    let bridge = Bridge::start_for_cluster(&rules, &bridge_kubeconfig, SERVICE_DNS, &[]).await;
    cache_state(&bridge, "secrets", "forbidden").await;
    cache_state(&bridge, "pods", "synced").await;
    cache_state(&bridge, "widgets.example.com", "synced").await;

    let ca = std::fs::read(bridge.ca_path()).expect("generated CA");
    register(&cp, &ca, bridge.port).await;
    cp.wait_apiservices_available().await;
    let pods_path =
        format!("/apis/custom.metrics.k8s.io/v1beta2/namespaces/{RNS}/pods/%2A/pod_work");
    let list = wait_until(
        "pods/*/pod_work through the aggregator",
        Duration::from_secs(30),
        || async {
            let out = cp.kubectl(&["get", "--raw", &pods_path]).await;
            let list: Value = serde_json::from_slice(&out.stdout).ok()?;
            out.status.success().then_some(list)
        },
    )
    .await;
    assert_eq!(described_names(&list), ["web-0"], "{list:#}");

    let (cert, key) = cp.front_proxy_client_paths();
    let reader = tls_client_with(&bridge.ca_path(), false, Some((&cert, &key)));
    let get = |path: String| {
        let (reader, url) = (reader.clone(), bridge.url(&path));
        async move {
            let r = reader
                .get(&url)
                .header("X-Remote-User", "reader")
                .send()
                .await
                .expect("GET");
            let code = r.status().as_u16();
            (code, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let custom =
        |rest: &str| format!("/apis/custom.metrics.k8s.io/v1beta1/namespaces/{RNS}/{rest}");

    let (code, status) = get(custom("secrets/%2A/secret_bytes")).await;
    assert_eq!(code, 503, "{status:#}");
    assert_eq!(status["kind"], "Status");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not allowed to list secrets")
            && message.contains("grant list and watch on secrets"),
        "{message}"
    );
    // A named object is answered from Prometheus where no cache can exist (documented)...
    let (code, body) = get(custom("secrets/s1/secret_bytes")).await;
    assert_eq!(
        (code, &body["items"][0]["value"]),
        (200, &Value::from("7")),
        "{body:#}"
    );
    // ...but where a synced cache exists, an object that is not there is a 404, whatever
    // Prometheus still holds.
    let (code, status) = get(custom("pods/ghost-0/pod_work")).await;
    assert_eq!(code, 404, "{status:#}");
    assert_eq!(status["message"], "pods \"ghost-0\" not found");
    let (code, _) = get(custom("pods/web-0/pod_work")).await;
    assert_eq!(code, 200);

    // The CRD goes away: its cache fails, readiness stays, its metrics are a 404, pods are
    // still served.
    let (code, body) = get(custom("widgets.example.com/%2A/widget_depth")).await;
    assert_eq!(described_names(&body), ["w1"], "{code} {body:#}");
    cp.kubectl_ok(&["delete", "crd", "widgets.example.com"])
        .await;
    cache_state(&bridge, "widgets.example.com", "failing").await;
    let (code, status) = get(custom("widgets.example.com/%2A/widget_depth")).await;
    assert_eq!(code, 404, "{status:#}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("widgets.example.com")),
        "{status:#}"
    );
    let (code, readyz) = bridge.get_text("/readyz").await;
    assert_eq!((code, readyz.as_str()), (200, "ok"));
    let out = cp.kubectl(&["get", "--raw", &pods_path]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // One log line for the change to forbidden, not one per retry.
    let log = std::fs::read_to_string(bridge.dir.path().join("bridge.log")).expect("bridge.log");
    let forbidden_lines = log
        .lines()
        .filter(|l| l.contains("watch forbidden") && l.contains("secrets"))
        .count();
    assert_eq!(forbidden_lines, 1, "{log}");

    // doctor names the resource the rules need and the RBAC lacks, from the live registry.
    let doctor = std::process::Command::new(env!("CARGO_BIN_EXE_kube-metrics-bridge"))
        .arg("doctor")
        .arg("--kubeconfig")
        .arg(cp.admin_kubeconfig())
        .arg("--config")
        .arg(&bridge.rules_path)
        .output()
        .expect("running doctor");
    let report = String::from_utf8_lossy(&doctor.stdout);
    let bridge_sa = "system:serviceaccount:custom-metrics:kube-metrics-bridge";
    for line in [
        format!("FAIL  {bridge_sa} may list secrets (its rules tie metrics to them): denied"),
        format!("FAIL  {bridge_sa} may watch secrets (its rules tie metrics to them): denied"),
        format!("ok    {bridge_sa} may list pods (its rules tie metrics to them)"),
        format!("ok    {bridge_sa} may watch pods (its rules tie metrics to them)"),
    ] {
        assert!(
            report.lines().any(|l| l.starts_with(&line)),
            "{line:?} missing:\n{report}"
        );
    }

    // Granting list/watch later works without a restart: at once per request, and the cache
    // catches up within its backoff.
    cp.apply(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: test-secrets}\n\
         rules: [{apiGroups: [\"\"], resources: [secrets], verbs: [get, list, watch]}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: test-secrets}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: test-secrets}\n\
         subjects: [{kind: ServiceAccount, name: kube-metrics-bridge, namespace: custom-metrics}]\n",
    )
    .await;
    let path = custom("secrets/%2A/secret_bytes");
    let list = wait_until(
        "secrets/*/secret_bytes once RBAC allows it",
        Duration::from_secs(30),
        || async {
            let (code, body) = get(path.clone()).await;
            (code == 200).then_some(body)
        },
    )
    .await;
    assert_eq!(list["items"][0]["value"], "7", "{list:#}");
    cache_state(&bridge, "secrets", "synced").await;
}

/// Issue 10 §4 with real HPAs: Prometheus is killed. The HPA on a rule with
/// `on_error = "stale"` keeps `ScalingActive=True` (and its replicas) until `max_stale` runs
/// out, then goes inactive; the HPA on a rule without the policy goes inactive at once, as
/// before. When Prometheus is back, both are active again.
#[tokio::test]
async fn stale_policy_keeps_hpas_active_through_a_prometheus_outage() {
    const MAX_STALE: Duration = Duration::from_secs(30);
    let exporter = Exporter::start_empty().await;
    exporter
        .set_gauge("queue_depth", &[("namespace", NS), ("queue", "jobs")], 20.0)
        .await;
    let mut prometheus = Prometheus::start(&[exporter.target()]).await;
    let cp = ControlPlane::start().await;
    prometheus
        .wait_for_series("queue_depth", Duration::from_secs(30))
        .await;
    let rules = format!(
        r#"
[prometheus]
url = "{}"
timeout = "2s"

[cache]
ttl = "1s"
discovery_interval = "5s"
series_max_age = "10m"

[[external_rules]]
series_query = 'queue_depth{{namespace!=""}}'
name = {{ matches = "^queue_depth$", as = "queue_depth_stale" }}
resources.overrides = {{ namespace = {{ resource = "namespace" }} }}
metrics_query = 'max(<<.Series>>{{<<.LabelMatchers>>}}) by (queue)'
on_error = "stale"
max_stale = "{}s"

[[external_rules]]
series_query = 'queue_depth{{namespace!=""}}'
name = {{ matches = "^queue_depth$", as = "queue_depth_strict" }}
resources.overrides = {{ namespace = {{ resource = "namespace" }} }}
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (queue)'
"#,
        prometheus.url(),
        MAX_STALE.as_secs()
    );
    let bridge = serve_through_aggregator(&cp, &rules, NS).await;

    let external = |metric: &str| {
        format!(
            "  - type: External\n    external:\n      metric: {{name: {metric}}}\n      target: {{type: AverageValue, averageValue: \"10\"}}"
        )
    };
    cp.apply(
        &[
            hpa::deployment(NS, "stale-web", 1),
            hpa::deployment(NS, "strict-web", 1),
            hpa("stale-web", &external("queue_depth_stale")),
            hpa("strict-web", &external("queue_depth_strict")),
        ]
        .concat(),
    )
    .await;
    // 20 queued at 10 per pod: two replicas each.
    scaled_to(&cp, &exporter, "stale-web", 2, None).await;
    scaled_to(&cp, &exporter, "strict-web", 2, None).await;
    for name in ["stale-web", "strict-web"] {
        assert_eq!(hpa::scaling_active(&cp, NS, name).await.0, "True", "{name}");
    }

    prometheus.stop().await;
    let stopped = tokio::time::Instant::now();
    // Without the policy: inactive at the next syncs (2 s period), as before.
    let strict = wait_until("strict-web inactive", Duration::from_secs(30), || async {
        let (status, reason) = hpa::scaling_active(&cp, NS, "strict-web").await;
        (status == "False").then_some(reason)
    })
    .await;
    assert_eq!(strict, "FailedGetExternalMetric");
    // With it: active, on the last good value, until max_stale has passed since that value.
    while stopped.elapsed() < MAX_STALE - Duration::from_secs(8) {
        let (status, reason) = hpa::scaling_active(&cp, NS, "stale-web").await;
        assert_eq!(
            status,
            "True",
            "stale-web went inactive ({reason}) {:?} into the outage; max_stale is {MAX_STALE:?}\n{}",
            stopped.elapsed(),
            bridge.log()
        );
        assert_eq!(hpa::replicas(&cp, NS, "stale-web").await, 2);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let reason = wait_until(
        "stale-web inactive past max_stale",
        Duration::from_secs(40),
        || async {
            let (status, reason) = hpa::scaling_active(&cp, NS, "stale-web").await;
            (status == "False").then_some(reason)
        },
    )
    .await;
    assert_eq!(reason, "FailedGetExternalMetric");
    assert!(
        stopped.elapsed() >= MAX_STALE - Duration::from_secs(3),
        "stale-web went inactive {:?} into the outage, before max_stale",
        stopped.elapsed()
    );
    assert!(
        bridge
            .self_metric("kube_metrics_bridge_stale_answers_total{backend=\"default\"}")
            .await
            .unwrap_or(0.0)
            >= 5.0
    );
    for name in ["stale-web", "strict-web"] {
        assert_eq!(
            hpa::replicas(&cp, NS, name).await,
            2,
            "{name} kept its replicas"
        );
    }

    // Back: both active again (after the breaker's next trial, at most 10 s).
    prometheus.restart().await;
    for name in ["stale-web", "strict-web"] {
        wait_until(
            &format!("{name} active again"),
            Duration::from_secs(60),
            || async { (hpa::scaling_active(&cp, NS, name).await.0 == "True").then_some(()) },
        )
        .await;
    }
}
