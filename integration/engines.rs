//! The core cases against Prometheus-compatible engines other than Prometheus (issue 10 §6):
//! discovery (label API and series API), `pods/*`, an external metric and failover, with
//! single-node VictoriaMetrics v1.151.0 built from the Go module proxy
//! (`integration/engines/victoriametrics/build.sh`) scraping the same exporter a Prometheus
//! scrapes, and Thanos Query v0.42.4 (`integration/engines/thanos/build.sh`) over two
//! Prometheus replicas with a sidecar each, deduplicating on the `replica` label.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::adapter::{log_tail, spawn_logged};
use common::bridge::Bridge;
use common::{cached_build, free_port, Exporter, Prometheus};

async fn victoriametrics_bin() -> PathBuf {
    cached_build(
        "KMB_VICTORIAMETRICS_BIN",
        "integration/engines/victoriametrics/build.sh",
        "VictoriaMetrics",
    )
    .await
}

/// A running single-node VictoriaMetrics scraping `targets` every second.
struct VictoriaMetrics {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
    log: PathBuf,
    url: String,
}

impl VictoriaMetrics {
    async fn start(targets: &[String]) -> VictoriaMetrics {
        let bin = victoriametrics_bin().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let scrape = dir.path().join("scrape.yml");
        // VictoriaMetrics reads Prometheus' scrape config strictly: no evaluation_interval.
        let mut yaml =
            String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
        for (i, target) in targets.iter().enumerate() {
            yaml.push_str(&format!(
                "  - job_name: target-{i}\n    honor_labels: true\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ));
        }
        std::fs::write(&scrape, yaml).expect("scrape config");
        let log = dir.path().join("victoria-metrics.log");
        let port = free_port();
        let child = spawn_logged(
            &bin,
            &[
                format!("-storageDataPath={}", dir.path().join("data").display()),
                format!("-httpListenAddr=127.0.0.1:{port}"),
                format!("-promscrape.config={}", scrape.display()),
                // Samples younger than 30 s are hidden from queries by default.
                "-search.latencyOffset=0s".into(),
            ],
            &[],
            &log,
        );
        let vm = VictoriaMetrics {
            _child: child,
            _dir: dir,
            log,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = common::http_client();
        let health = format!("{}/health", vm.url);
        let healthy = common::poll(Duration::from_secs(30), || async {
            let ok = http
                .get(&health)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            ok.then_some(())
        })
        .await;
        assert!(
            healthy.is_some(),
            "VictoriaMetrics did not become healthy\n{}",
            log_tail(&vm.log, 30)
        );
        vm
    }

    async fn wait_for(&self, selector: &str) {
        wait_for_sample(&self.url, selector, &self.log).await;
    }
}

async fn thanos_bin() -> PathBuf {
    cached_build(
        "KMB_THANOS_BIN",
        "integration/engines/thanos/build.sh",
        "Thanos",
    )
    .await
}

/// Two Prometheus replicas of the same scrape, a Thanos sidecar beside each and a Thanos
/// Query over both that deduplicates on `replica`.
struct ThanosQuery {
    _replicas: Vec<Prometheus>,
    _children: Vec<tokio::process::Child>,
    _dir: tempfile::TempDir,
    log: PathBuf,
    url: String,
}

impl ThanosQuery {
    async fn start(targets: &[String]) -> ThanosQuery {
        let bin = thanos_bin().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut replicas = Vec::new();
        let mut children = Vec::new();
        let mut endpoints = Vec::new();
        for replica in ["a", "b"] {
            let prometheus = Prometheus::start_replica(targets, replica).await;
            let grpc = free_port();
            children.push(spawn_logged(
                &bin,
                &[
                    "sidecar".into(),
                    format!("--prometheus.url={}", prometheus.url()),
                    format!("--tsdb.path={}", prometheus.data_dir().display()),
                    format!("--grpc-address=127.0.0.1:{grpc}"),
                    format!("--http-address=127.0.0.1:{}", free_port()),
                ],
                &[],
                &dir.path().join(format!("sidecar-{replica}.log")),
            ));
            endpoints.push(format!("--endpoint=127.0.0.1:{grpc}"));
            replicas.push(prometheus);
        }
        let http_port = free_port();
        let mut args = vec![
            "query".to_string(),
            "--query.replica-label=replica".into(),
            format!("--grpc-address=127.0.0.1:{}", free_port()),
            format!("--http-address=127.0.0.1:{http_port}"),
        ];
        args.extend(endpoints);
        let log = dir.path().join("query.log");
        children.push(spawn_logged(&bin, &args, &[], &log));
        ThanosQuery {
            _replicas: replicas,
            _children: children,
            _dir: dir,
            log,
            url: format!("http://127.0.0.1:{http_port}"),
        }
    }
}

/// Waits until an instant query for `selector` on the engine at `url` returns a sample.
async fn wait_for_sample(url: &str, selector: &str, log: &std::path::Path) {
    let http = common::http_client();
    let url =
        reqwest::Url::parse_with_params(&format!("{url}/api/v1/query"), &[("query", selector)])
            .expect("url");
    let found = common::poll(Duration::from_secs(90), || async {
        let body: serde_json::Value = http.get(url.clone()).send().await.ok()?.json().await.ok()?;
        body["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
            .then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "{url} never had {selector}\n{}",
        log_tail(log, 30)
    );
}

fn rules(url: &str, discovery_api: &str, dead: &str) -> String {
    format!(
        r#"
[cache]
ttl = "1ms"

[[backends]]
name = "vm"
url = "{url}"
discovery_api = "{discovery_api}"
default = true

[[backends]]
name = "dead"
url = "{dead}"
timeout = "1s"
failover = ["vm"]

[[rules]]
series_query = '{{namespace!="",pod!=""}}'
resources.overrides = {{ namespace = {{ resource = "namespace" }}, pod = {{ resource = "pod" }} }}
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (<<.GroupBy>>)'

[[rules]]
backend = "dead"
series_query = 'pod_load{{namespace!="",pod!=""}}'
name = {{ matches = "^pod_load$", as = "pod_load_failover" }}
resources.overrides = {{ namespace = {{ resource = "namespace" }}, pod = {{ resource = "pod" }} }}
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (<<.GroupBy>>)'

[[external_rules]]
series_query = 'queue_depth{{namespace!=""}}'
resources.overrides = {{ namespace = {{ resource = "namespace" }} }}
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (queue)'
"#
    )
}

/// The exporter both engines scrape: two pods' load and a queue.
async fn exporter() -> Exporter {
    let exporter = Exporter::start_empty().await;
    for pod in ["web-0", "web-1"] {
        exporter
            .set_gauge("pod_load", &[("namespace", "demo"), ("pod", pod)], 7.0)
            .await;
    }
    exporter
        .set_gauge(
            "queue_depth",
            &[("namespace", "demo"), ("queue", "jobs")],
            4.0,
        )
        .await;
    exporter
}

/// Discovery, `pods/*`, an external metric and failover from a dead backend, on the engine at
/// `url`, with each discovery API. `pods/*` sums by pod: a pod's value is 7 only if every
/// sample is counted once (Thanos' deduplication of the two replicas).
async fn core_cases(engine: &str, url: &str, label_api: bool) {
    let dead = format!("http://127.0.0.1:{}", free_port());
    for api in ["labels", "series", "auto"] {
        let bridge = Bridge::start(&rules(url, api, &dead)).await;
        let (code, list) = bridge.get("/apis/custom.metrics.k8s.io/v1beta2").await;
        assert_eq!(code, 200);
        let names: Vec<&str> = list["resources"]
            .as_array()
            .map(|r| r.iter().filter_map(|e| e["name"].as_str()).collect())
            .unwrap_or_default();
        for want in [
            "pods/pod_load",
            "namespaces/pod_load",
            "pods/pod_load_failover",
        ] {
            assert!(
                names.contains(&want),
                "{engine} {api}: {want} not in {names:?}"
            );
        }
        let (code, body) = bridge
            .get("/apis/custom.metrics.k8s.io/v1beta2/namespaces/demo/pods/*/pod_load")
            .await;
        assert_eq!(code, 200, "{engine} {api}: {body}");
        let values: Vec<(&str, &str)> = body["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| {
                        (
                            i["describedObject"]["name"].as_str().unwrap_or_default(),
                            i["value"].as_str().unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(values, [("web-0", "7"), ("web-1", "7")], "{engine} {api}");
        let (code, body) = bridge
            .get("/apis/external.metrics.k8s.io/v1beta1/namespaces/demo/queue_depth")
            .await;
        assert_eq!(
            (code, body["items"][0]["value"].as_str()),
            (200, Some("4")),
            "{engine} {api}: {body}"
        );
        let (code, body) = bridge
            .get("/apis/custom.metrics.k8s.io/v1beta2/namespaces/demo/pods/web-1/pod_load_failover")
            .await;
        assert_eq!(
            (code, body["items"][0]["value"].as_str()),
            (200, Some("7")),
            "{engine} {api}: {body}"
        );
        assert_eq!(
            bridge.log().contains("the label API did not answer"),
            api == "auto" && !label_api,
            "{engine} {api}\n{}",
            bridge.log()
        );
    }
}

#[tokio::test]
async fn victoriametrics_serves_the_core_cases() {
    let exporter = exporter().await;
    let vm = VictoriaMetrics::start(&[exporter.target()]).await;
    vm.wait_for("queue_depth").await;
    vm.wait_for("pod_load").await;
    core_cases("VictoriaMetrics", &vm.url, true).await;
}

#[tokio::test]
async fn thanos_query_over_two_replicas_serves_the_core_cases() {
    let exporter = exporter().await;
    let thanos = ThanosQuery::start(&[exporter.target()]).await;
    wait_for_sample(&thanos.url, "queue_depth", &thanos.log).await;
    // Both replicas' samples, deduplicated into one series per pod.
    wait_for_sample(&thanos.url, "count(pod_load) == 2", &thanos.log).await;
    core_cases("Thanos Query", &thanos.url, true).await;
}
