//! The bridge in front of prometheus-adapter v0.12.0 (`[[upstreams]]`), on a real control
//! plane: one APIService per group (the bridge's), both servers' metrics listed and served
//! through the aggregator, real HPAs on metrics of each, the caller's identity reaching the
//! adapter (whose authorization decides), and a migration rule by rule — all rules on the
//! adapter -> half moved to the bridge -> all moved and the upstream removed, the adapter
//! stopped — while a watcher checks every second that no HPA lost its metric.
//!
//! Who answered is visible in the answers: prometheus-adapter's framework writes a core
//! object's `describedObject.apiVersion` as `/v1`, the bridge as `v1`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::adapter::{
    adapter_args, adapter_bin, convert_adapter_config, log_tail, serving_args, serving_pair,
    spawn_logged,
};
use common::bridge::tls_client_with;
use common::controlplane::ControlPlane;
use common::{free_port, hpa, poll, wait_until, Exporter, Prometheus};
use serde_json::Value;

const NS: &str = "migration";
const CUSTOM: &str = "/apis/custom.metrics.k8s.io/v1beta1";
const EXTERNAL: &str = "/apis/external.metrics.k8s.io/v1beta1";

/// prometheus-adapter's rules, one YAML list item each, so they can move one at a time.
const ALPHA: &str = r#"- seriesQuery: '{__name__=~"^(alpha|epsilon)_load$",namespace!="",service!=""}'
  resources: {overrides: {namespace: {resource: namespace}, service: {resource: service}}}
  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
"#;
const BETA: &str = r#"- seriesQuery: 'beta_load{namespace!="",service!=""}'
  resources: {overrides: {namespace: {resource: namespace}, service: {resource: service}}}
  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
"#;
const GAMMA: &str = r#"- seriesQuery: 'gamma_queue{namespace!=""}'
  resources: {overrides: {namespace: {resource: namespace}}}
  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>})'
"#;
/// The bridge's own from the start of phase 2: a metric the adapter never had.
const DELTA: &str = r#"- seriesQuery: 'delta_queue{namespace!=""}'
  resources: {overrides: {namespace: {resource: namespace}}}
  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>})'
"#;

fn adapter_yaml(rules: &[&str], external: &[&str]) -> String {
    format!(
        "rules:\n{}externalRules:\n{}",
        rules.concat(),
        external.concat()
    )
}

/// Every metric, its HPA, the value it carries (= the replicas its HPA settles on, targets
/// are 1 per replica), and its path through the aggregator.
struct Metric {
    name: &'static str,
    value: f64,
    path: String,
    hpa_metric: String,
}

fn metrics() -> Vec<Metric> {
    let object = |name: &'static str, service: &str, value: f64| Metric {
        name,
        value,
        path: format!("{CUSTOM}/namespaces/{NS}/services/{service}/{name}"),
        hpa_metric: hpa::object_metric("Service", service, name),
    };
    let external = |name: &'static str, value: f64| Metric {
        name,
        value,
        path: format!("{EXTERNAL}/namespaces/{NS}/{name}?labelSelector=queue%3Djobs"),
        hpa_metric: hpa::external_metric(name, "jobs"),
    };
    vec![
        object("alpha_load", "web-alpha", 2.0),
        object("beta_load", "web-beta", 3.0),
        external("gamma_queue", 4.0),
        external("delta_queue", 2.0),
    ]
}

fn deployment_and_hpa(m: &Metric) -> String {
    let name = m.name.replace('_', "-");
    format!(
        "{}{}",
        hpa::deployment(NS, &name, 1),
        hpa::autoscaler(NS, &name, 1, 8, &m.hpa_metric)
    )
}

/// The bridge's rules file: `convert`'s output for the adapter rules moved so far (exactly
/// what a user migrating rule by rule would write), fast discovery for the test, and the
/// adapter as upstream while `upstream` is set.
fn bridge_rules(
    bridge_bin: &Path,
    dir: &Path,
    prometheus: &Prometheus,
    moved: (&[&str], &[&str]),
    upstream: Option<&str>,
) -> String {
    let text = if moved.0.is_empty() && moved.1.is_empty() {
        format!("[prometheus]\nurl = \"{}\"\n\n[cache]\n", prometheus.url())
    } else {
        let yaml = dir.join("moved.yaml");
        std::fs::write(&yaml, adapter_yaml(moved.0, moved.1)).expect("writing moved rules");
        convert_adapter_config(bridge_bin, &yaml, &prometheus.url())
    };
    let text = text.replacen(
        "[cache]\n",
        "[cache]\nttl = \"1s\"\ndiscovery_interval = \"2s\"\n",
        1,
    );
    format!("{text}\n{}", upstream.unwrap_or_default())
}

/// Who answered a metric request: `adapter` (`describedObject.apiVersion` `/v1`), `bridge`
/// (`v1`), or what went wrong.
fn answered_by(list: &Value) -> &'static str {
    let versions: Vec<&str> = list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["describedObject"]["apiVersion"].as_str())
                .collect()
        })
        .unwrap_or_default();
    match versions.as_slice() {
        ["/v1"] => "adapter",
        ["v1"] => "bridge",
        _ if list["kind"] == "ExternalMetricValueList" => "external",
        _ => "unknown",
    }
}

/// Discovery through the aggregator: the names of a group version's resources.
async fn listed(cp: &ControlPlane, group_version: &str) -> Vec<String> {
    let (_, doc) = cp.get(group_version).await;
    doc["resources"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|r| r["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_from_prometheus_adapter_behind_the_bridge() {
    let adapter_bin = adapter_bin().await;
    let bridge_bin = PathBuf::from(env!("CARGO_BIN_EXE_kube-metrics-bridge"));
    let exporter = Exporter::start_empty().await;
    let all = metrics();
    for m in &all {
        let labels: &[(&str, &str)] = if m.name.ends_with("_queue") {
            &[("namespace", NS), ("queue", "jobs")]
        } else if m.name == "alpha_load" {
            &[("namespace", NS), ("service", "web-alpha")]
        } else {
            &[("namespace", NS), ("service", "web-beta")]
        };
        exporter.set_gauge(m.name, labels, m.value).await;
    }
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    for m in &all {
        prometheus
            .wait_for_series(
                &format!("{}{{namespace=\"{NS}\"}}", m.name),
                Duration::from_secs(60),
            )
            .await;
    }
    let cp = ControlPlane::start().await;
    let dir = tempfile::Builder::new()
        .prefix("kmb-upstreams-")
        .tempdir()
        .expect("tempdir");
    let root = dir.path();

    // prometheus-adapter with every rule but the bridge-only delta, as it ran before the
    // migration: its own serving certificate, cluster access as an admin (its lister,
    // TokenReviews and SubjectAccessReviews), relisting every 5 s.
    let adapter_config = root.join("adapter.yaml");
    std::fs::write(&adapter_config, adapter_yaml(&[ALPHA, BETA], &[GAMMA])).expect("config");
    let tls = serving_pair(root);
    let adapter_port = free_port();
    let adapter_log = root.join("prometheus-adapter.log");
    let mut args = serving_args(&tls, adapter_port);
    args.extend(adapter_args(
        root,
        &cp.client_kubeconfig("old-adapter", &["system:masters"]),
        &prometheus.url(),
        &adapter_config,
    ));
    args.push("--metrics-relist-interval=5s".into());
    let mut adapter = spawn_logged(&adapter_bin, &args, &[], &adapter_log);
    let pki = cp.dir().join("pki");
    let admin = (pki.join("admin.crt"), pki.join("admin.key"));
    let to_adapter = tls_client_with(&tls.0, false, Some((&admin.0, &admin.1)));
    let adapter_url = format!("https://127.0.0.1:{adapter_port}");
    wait_until(
        "prometheus-adapter lists its metrics",
        Duration::from_secs(90),
        || async {
            let r = to_adapter
                .get(format!("{adapter_url}{CUSTOM}"))
                .send()
                .await
                .ok()?;
            let text = r.text().await.ok()?;
            text.contains("services/beta_load").then_some(())
        },
    )
    .await;

    // Phase 1: the bridge owns the APIServices and forwards everything to the adapter,
    // presenting the aggregator's front-proxy client certificate (the adapter trusts its CA
    // through kube-system/extension-apiserver-authentication, as it trusts kube-apiserver).
    let (fp_crt, fp_key) = cp.front_proxy_client_paths();
    let upstream = format!(
        "[[upstreams]]\nname = \"prometheus-adapter\"\nurl = \"{adapter_url}\"\nca_file = \"{}\"\n\
         client_cert_file = \"{}\"\nclient_key_file = \"{}\"\ndiscovery_interval = \"2s\"\n",
        tls.0.display(),
        fp_crt.display(),
        fp_key.display()
    );
    let rules = bridge_rules(&bridge_bin, root, &prometheus, (&[], &[]), Some(&upstream));
    let bridge = hpa::serve_through_aggregator(&cp, &rules, NS).await;
    cp.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web-alpha, namespace: {NS}}}\nspec: {{ports: [{{port: 80}}]}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: web-beta, namespace: {NS}}}\nspec: {{ports: [{{port: 80}}]}}\n"
    ))
    .await;

    // Discovery through the aggregator lists the adapter's metrics (read from the adapter
    // by the bridge, not by kube-apiserver: it only knows the bridge).
    cp.wait_for(
        "the adapter's metrics listed through the bridge",
        Duration::from_secs(60),
        || async {
            let custom = listed(&cp, CUSTOM).await;
            let external = listed(&cp, EXTERNAL).await;
            (custom.contains(&"services/alpha_load".to_string())
                && custom.contains(&"services/beta_load".to_string())
                && external.contains(&"gamma_queue".to_string()))
            .then_some(())
        },
    )
    .await;
    let (code, alpha) = cp.get(&all[0].path).await;
    assert_eq!(code, 200, "{alpha}");
    assert_eq!(answered_by(&alpha), "adapter", "{alpha}");

    // The upstream's discovery is refreshed: a new series the adapter picks up shows.
    exporter
        .set_gauge(
            "epsilon_load",
            &[("namespace", NS), ("service", "web-alpha")],
            1.0,
        )
        .await;
    cp.wait_for(
        "a metric new at the adapter listed through the bridge",
        Duration::from_secs(90),
        || async {
            listed(&cp, CUSTOM)
                .await
                .contains(&"services/epsilon_load".to_string())
                .then_some(())
        },
    )
    .await;

    // The answer comes back as the adapter wrote it, in the encoding negotiated with it.
    let to_bridge = tls_client_with(&bridge.ca_path(), false, Some((&admin.0, &admin.1)));
    let protobuf = "application/vnd.kubernetes.protobuf, */*";
    let direct = to_adapter
        .get(format!("{adapter_url}{}", all[0].path))
        .header("Accept", protobuf)
        .send()
        .await
        .expect("adapter answers");
    let through = to_bridge
        .get(bridge.url(&all[0].path))
        .header("Accept", protobuf)
        .send()
        .await
        .expect("bridge answers");
    assert_eq!(through.status(), 200);
    assert_eq!(
        through.headers().get("content-type"),
        direct.headers().get("content-type"),
        "the bridge passes the upstream's Content-Type on"
    );

    // The caller's identity reaches the adapter, whose authorization decides: a user allowed
    // one metric by RBAC gets it and is refused the other, in the adapter's own words.
    cp.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: alpha-reader, namespace: {NS}}}\n\
         rules: [{{apiGroups: [custom.metrics.k8s.io], resources: [services/alpha_load], verbs: [get]}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: alpha-reader, namespace: {NS}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: alpha-reader}}\n\
         subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: alpha-reader}}]\n"
    ))
    .await;
    let as_front_proxy = tls_client_with(&bridge.ca_path(), false, Some((&fp_crt, &fp_key)));
    let as_user = |user: &'static str, path: String| {
        let (client, url) = (as_front_proxy.clone(), bridge.url(&path));
        async move {
            let r = client
                .get(url)
                .header("X-Remote-User", user)
                .header("X-Remote-Group", "system:authenticated")
                .send()
                .await
                .expect("bridge answers");
            let code = r.status().as_u16();
            (code, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let allowed = poll(Duration::from_secs(20), || async {
        let (code, body) = as_user("alpha-reader", all[0].path.clone()).await;
        (code == 200).then_some(body)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "alpha-reader never allowed; adapter log:\n{}",
            log_tail(&adapter_log, 30)
        )
    });
    assert_eq!(answered_by(&allowed), "adapter", "{allowed}");
    let (code, refused) = as_user("alpha-reader", all[1].path.clone()).await;
    assert_eq!(code, 403, "{refused}");
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("\"alpha-reader\"") && message.contains("beta_load"),
        "{message}"
    );
    let forbidden_upstream = "kube_metrics_bridge_upstream_request_duration_seconds_count{upstream=\"prometheus-adapter\",code=\"403\"}";
    assert!(
        bridge.self_metric(forbidden_upstream).await.unwrap_or(0.0) >= 1.0,
        "the 403 came from the adapter"
    );

    // Real HPAs on the adapter's metrics, through the bridge.
    for m in &all[..3] {
        cp.apply(&deployment_and_hpa(m)).await;
    }
    for m in &all[..3] {
        let name = m.name.replace('_', "-");
        hpa::wait_replicas(
            &cp,
            NS,
            &name,
            m.value as u64,
            Duration::from_secs(5),
            Duration::from_secs(120),
            || async {},
        )
        .await;
    }
    let watch = |ms: &[Metric]| {
        let hpas = ms
            .iter()
            .map(|m| (m.name.replace('_', "-"), m.value as u64))
            .collect();
        hpa::Watcher::start(&cp, NS, hpas, ms.iter().map(|m| m.path.clone()).collect())
    };
    let watcher = watch(&all[..3]);
    watcher.phase("1: all rules on prometheus-adapter");
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Phase 2: half moved. beta moves to the bridge (the adapter still has it too: the
    // bridge wins the clash), and the bridge serves delta, which the adapter never had.
    watcher.phase("2: beta and delta on the bridge");
    let rules = bridge_rules(
        &bridge_bin,
        root,
        &prometheus,
        (&[BETA], &[DELTA]),
        Some(&upstream),
    );
    std::fs::write(&bridge.rules_path, rules).expect("rules");
    let by_bridge = |path: String| {
        let (client, url) = (to_bridge.clone(), bridge.url(&path));
        async move {
            let r = client.get(url).send().await.ok()?;
            let body: Value = r.json().await.ok()?;
            (answered_by(&body) == "bridge").then_some(())
        }
    };
    wait_until(
        "beta served by the bridge itself",
        Duration::from_secs(30),
        || by_bridge(all[1].path.clone()),
    )
    .await;
    cp.apply(&deployment_and_hpa(&all[3])).await;
    hpa::wait_replicas(
        &cp,
        NS,
        "delta-queue",
        2,
        Duration::from_secs(5),
        Duration::from_secs(120),
        || async {},
    )
    .await;
    let (code, alpha) = cp.get(&all[0].path).await;
    assert_eq!((code, answered_by(&alpha)), (200, "adapter"), "{alpha}");
    let custom = listed(&cp, CUSTOM).await;
    let external = listed(&cp, EXTERNAL).await;
    for want in [
        "services/alpha_load",
        "services/beta_load",
        "services/epsilon_load",
    ] {
        assert!(custom.contains(&want.to_string()), "{want} in {custom:?}");
    }
    for want in ["gamma_queue", "delta_queue"] {
        assert!(
            external.contains(&want.to_string()),
            "{want} in {external:?}"
        );
    }
    assert!(
        bridge
            .log()
            .contains("an upstream lists a metric that is served elsewhere"),
        "the beta_load clash is logged"
    );
    let watcher = {
        let problems = watcher.finish().await;
        assert!(problems.is_empty(), "phase 1-2: {problems:#?}");
        let w = watch(&all);
        w.phase("2: beta and delta on the bridge");
        w
    };
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Phase 3: all moved; the upstream removed in the same reload, then the adapter stopped.
    watcher.phase("3: all on the bridge, upstream removed");
    let rules = bridge_rules(
        &bridge_bin,
        root,
        &prometheus,
        (&[ALPHA, BETA], &[GAMMA, DELTA]),
        None,
    );
    std::fs::write(&bridge.rules_path, rules).expect("rules");
    for m in &all[..2] {
        wait_until(
            &format!("{} served by the bridge itself", m.name),
            Duration::from_secs(30),
            || by_bridge(m.path.clone()),
        )
        .await;
    }
    let forwarded_before = bridge
        .self_metric("kube_metrics_bridge_upstream_request_duration_seconds_count{upstream=\"prometheus-adapter\",code=\"200\"}")
        .await
        .unwrap_or(0.0);
    adapter.kill().await.expect("stopping prometheus-adapter");
    watcher.phase("3: adapter stopped");
    // Long enough for several HPA syncs (every 2 s here) on the bridge alone.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let problems = watcher.finish().await;
    assert!(problems.is_empty(), "phase 2-3: {problems:#?}");
    let forwarded_after = bridge
        .self_metric("kube_metrics_bridge_upstream_request_duration_seconds_count{upstream=\"prometheus-adapter\",code=\"200\"}")
        .await
        .unwrap_or(0.0);
    // A request forwarded after the adapter stopped would count as code 0 (unreachable).
    assert_eq!(
        forwarded_before, forwarded_after,
        "nothing went to the adapter after it was removed"
    );
    assert_eq!(
        bridge
            .self_metric("kube_metrics_bridge_upstream_request_duration_seconds_count{upstream=\"prometheus-adapter\",code=\"0\"}")
            .await,
        None,
        "nothing was forwarded to the stopped adapter"
    );
    for m in &all {
        let name = m.name.replace('_', "-");
        assert_eq!(
            hpa::replicas(&cp, NS, &name).await,
            m.value as u64,
            "{name}"
        );
        let (code, body) = cp.get(&m.path).await;
        assert_eq!(code, 200, "{body}");
        if !m.name.ends_with("_queue") {
            assert_eq!(answered_by(&body), "bridge", "{body}");
        }
    }
    drop(bridge);
}
