//! The `check` and `explain` subcommands, as a user runs them.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Exporter, Prometheus};

/// `kube-metrics-bridge check FILE`.
fn check(file: impl AsRef<std::ffi::OsStr>) -> std::process::Output {
    bridge_cmd()
        .arg("check")
        .arg(file)
        .output()
        .expect("run check")
}

fn bridge_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kube-metrics-bridge"))
}

#[test]
fn check_accepts_the_shipped_rules() {
    let mut files: Vec<_> = std::fs::read_dir("rules")
        .expect("rules/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let out = check(&file);
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    }
}

#[test]
fn check_reports_every_problem_with_rule_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[prometheus]
url = "not a url"

[[rules]]
series_query = 'http_requests_total{namespace!=""'
resources.overrides = { pod = { resource = "pod" } }
name = { matches = "^(.*)_total$", as = "$1_per_second" }
metrics_query = 'sum(rate(<<.Series>>{<<.LabelMatchers>>}[2m])) by (<<.GroupBy>>)'

[[rules]]
series_query = 'up'
series_filters = [{ is = "(" }]
resources.template = "kube_<<.Group>>"
metrics_query = 'sum(<<.Sereis>>{<<.LabelMatchers>>})'

[[external_rules]]
series_query = 'queue'
metrics_query = 'rate(<<.Series>>{<<.LabelMatchers>>}[1m]'
"#,
    )
    .expect("write");
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "prometheus.url",
        "rules[0].series_query",
        "rules[0].name.as",
        "rules[1].series_filters[0]",
        "rules[1].resources.template",
        "rules[1].metrics_query: unknown field .Sereis",
        "external_rules[0].metrics_query",
        "external_rules[0].resources",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }

    // Not TOML at all, and a typo in a key.
    std::fs::write(&path, "[[rules]]\nseries_query = 'x'\nmetric_query = 'y'\n").expect("write");
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rules[0]") && stderr.contains("metric_query"),
        "{stderr}"
    );
    let out = bridge_cmd()
        .arg("check")
        .arg(dir.path().join("missing.toml"))
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(1));
}

fn explain(prometheus: &Prometheus, path: &str) -> std::process::Output {
    explain_with("rules/demo.toml", prometheus, path)
}

fn explain_with(config: &str, prometheus: &Prometheus, path: &str) -> std::process::Output {
    bridge_cmd()
        .args([
            "explain",
            "--config",
            config,
            "--prometheus-url",
            &prometheus.url(),
            path,
        ])
        .output()
        .expect("run explain")
}

#[tokio::test]
async fn explain_prints_the_query() {
    let exporter = Exporter::start().await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    prometheus
        .wait_for_series("http_requests_total", Duration::from_secs(30))
        .await;
    let out = explain(
        &prometheus,
        "namespaces/demo/pods/*/http_requests_per_second?metricLabelSelector=service%3Dweb",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(r#"promql:   sum(rate(http_requests_total{service="web",namespace="demo",pod!=""}[30s])) by (pod)"#),
        "{stdout}"
    );
    assert!(stdout.contains("rules[0]"), "{stdout}");

    let out = explain(&prometheus, "/apis/external.metrics.k8s.io/v1beta1/namespaces/demo/queue_messages_ready?labelSelector=queue%3Dorders");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(r#"sum(queue_messages_ready{queue="orders",namespace="demo"}) by (queue)"#),
        "{stdout}"
    );

    let out = explain(&prometheus, "namespaces/demo/pods/*/no_such_metric");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("could not find the metric no_such_metric")
    );

    // The Resource Metrics API: without [resource_rules] it is not served; with them, the
    // two queries of a namespace's pods and of the nodes.
    let out = explain(
        &prometheus,
        "/apis/metrics.k8s.io/v1beta1/namespaces/demo/pods",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [resource_rules]"));
    // The shipped example of resource rules.
    let rules = "rules/resource-metrics.toml";
    let out = explain_with(
        rules,
        &prometheus,
        "/apis/metrics.k8s.io/v1beta1/namespaces/demo/pods?labelSelector=app%3Dweb",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(r#"promql:   sum by (namespace,pod,container) (rate(container_cpu_usage_seconds_total{namespace="demo",container!="",container!="POD"}[2m]))"#),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"promql:   sum by (namespace,pod,container) (container_memory_working_set_bytes{namespace="demo",container!="",container!="POD"})"#),
        "{stdout}"
    );
    let out = explain_with(rules, &prometheus, "/apis/metrics.k8s.io/v1beta1/nodes");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("rate(node_cpu_usage_seconds_total{"),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"["instance", "node"]"#) || stdout.contains(r#"["node", "instance"]"#),
        "{stdout}"
    );
}

/// With `[[upstreams]]`, explain names where a metric the rules lack would go; a zero rule
/// claims its metric even before discovery lists it (so it is not forwarded).
#[tokio::test]
async fn explain_names_the_upstream_and_zero_rules() {
    let exporter = Exporter::start_empty().await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        r#"
[[external_rules]]
series_query = 'jobs_waiting{namespace!=""}'
resources.overrides = { namespace = { resource = "namespace" } }
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>})'
on_missing = "zero"

[[upstreams]]
name = "old-adapter"
url = "https://prometheus-adapter.monitoring.svc"
client_cert_file = "/front-proxy/tls.crt"
client_key_file = "/front-proxy/tls.key"
apis = ["custom.metrics.k8s.io/v1beta2"]
"#,
    )
    .expect("rules");
    let rules = rules.display().to_string();
    let out = explain_with(&rules, &prometheus, "namespaces/shop/pods/*/http_requests");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("upstream: old-adapter"), "{stdout}");
    // Not a version the upstream answers: the bridge's own 404.
    let out = explain_with(
        &rules,
        &prometheus,
        "/apis/custom.metrics.k8s.io/v1beta1/namespaces/shop/pods/*/http_requests",
    );
    assert!(!out.status.success());
    let out = explain_with(
        &rules,
        &prometheus,
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/jobs_waiting",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("rule:     external_rules[0]"), "{stdout}");
    assert!(
        stdout.contains(r#"sum(jobs_waiting{namespace="shop"})"#),
        "{stdout}"
    );
}

#[test]
fn convert_writes_a_file_check_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("converted.toml");
    let out = bridge_cmd()
        .args([
            "convert",
            "integration/testdata/adapter/helm-values.yaml",
            "--prometheus-url",
            "http://prometheus:9090",
            "-o",
        ])
        .arg(&out_path)
        .output()
        .expect("run convert");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&out_path).expect("converted file");
    assert!(
        text.contains("[[rules]]") && text.contains("http://prometheus:9090"),
        "{text}"
    );
    let check = check(&out_path);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
