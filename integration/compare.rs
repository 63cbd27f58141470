//! `compare` as a user runs it (docs/migration.md, "Compare"): prometheus-adapter v0.12.0
//! and the bridge side by side, both serving the same rules (the bridge's converted from the
//! adapter's YAML by `convert`) from the same Prometheus for the same control plane (etcd and
//! kube-apiserver built from source), both called directly over TLS with the cluster admin's
//! client certificate, as in integration/adapter_parity.rs.
//!
//! 1. The same rules: `compare` finds no difference (exit 0), in every namespace of the
//!    cluster (listed through the kubeconfig; where there is no data, the bridge's 404 and
//!    prometheus-adapter's empty list are the same), and the gauges agree exactly.
//! 2. The bridge's rules changed: a metric only on one side, an object only on one side and
//!    values beyond the tolerance are each reported (exit 1), and nothing else; a wider
//!    tolerance hides the values only.
//! 3. Credentials a server refuses: not compared (exit 2).

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::adapter::{
    adapter_args, adapter_bin, log_tail, serving_args, serving_pair, spawn_logged,
};
use common::bridge::{tls_client_with, Bridge};
use common::controlplane::{ControlPlane, Options};
use common::{free_port, poll, Exporter, Prometheus};

fn bridge_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_kube-metrics-bridge"))
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The rules both servers serve: requests per second of pods (and namespaces), and queue
/// depths as external metrics.
const ADAPTER_CONFIG: &str = r#"rules:
- seriesQuery: 'http_requests_total{namespace!="",pod!=""}'
  resources:
    overrides:
      namespace: {resource: namespace}
      pod: {resource: pod}
  name: {matches: "^(.*)_total$", as: "${1}_per_second"}
  metricsQuery: 'sum(rate(<<.Series>>{<<.LabelMatchers>>}[30s])) by (<<.GroupBy>>)'
externalRules:
- seriesQuery: 'queue_messages_ready{namespace!="",queue!=""}'
  resources:
    overrides:
      namespace: {resource: namespace}
  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (queue)'
"#;

/// Pods with an `http_requests_total` counter: namespace, name, requests per second.
const PODS: [(&str, &str, f64); 3] = [
    ("shop", "web-0", 2.0),
    ("shop", "web-1", 4.0),
    ("jobs", "worker-0", 1.5),
];
/// Queues: namespace, queue, messages ready.
const QUEUES: [(&str, &str, f64); 3] = [
    ("shop", "orders", 42.0),
    ("shop", "emails", 7.0),
    ("jobs", "batch", 3.0),
];

/// `kube-metrics-bridge compare` between the two servers, as the cluster admin (the client
/// certificate both authenticate from the cluster's client CA); the exit code and stdout.
fn compare(old: &str, new: &str, tls: &Path, pki: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(bridge_bin())
        .arg("compare")
        .args(["--old-url", old, "--new-url", new])
        .arg("--ca-file")
        .arg(tls)
        .arg("--client-cert-file")
        .arg(pki.join("admin.crt"))
        .arg("--client-key-file")
        .arg(pki.join("admin.key"))
        .args(extra)
        .env_remove("KMB_KUBECONFIG")
        .output()
        .expect("kube-metrics-bridge compare");
    let (stdout, stderr) = text(&out);
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

/// The DIFF lines of compare's output.
fn diffs(out: &str) -> Vec<&str> {
    out.lines()
        .filter_map(|l| l.strip_prefix("DIFF  "))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_finds_no_difference_then_each_kind_of_difference() {
    let adapter = adapter_bin().await;
    let exporter = Exporter::start_empty().await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    let cp = ControlPlane::start_with(Options {
        skip_controller_manager: true,
        ..Options::default()
    })
    .await;
    for ns in ["shop", "jobs"] {
        cp.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n\
             apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: default, namespace: {ns}}}\n"
        ))
        .await;
    }
    for (ns, pod, rate) in PODS {
        cp.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {ns}}}\n\
             spec: {{automountServiceAccountToken: false, containers: [{{name: app, image: registry.invalid/app:1}}]}}\n"
        ))
        .await;
        exporter
            .set_counter(
                "http_requests_total",
                &[("namespace", ns), ("pod", pod)],
                rate,
            )
            .await;
    }
    for (ns, queue, depth) in QUEUES {
        let labels = [("namespace", ns), ("queue", queue)];
        exporter
            .set_gauge("queue_messages_ready", &labels, depth)
            .await;
        // Only the bridge's second set of rules serves this one.
        exporter.set_gauge("queue_consumers", &labels, 2.0).await;
    }
    // Both servers list series once at start (prometheus-adapter then every 10 minutes):
    // every series must exist first, and be older than the rules' 30s rate window, or the
    // rates still grow from one second to the next (rate() of a counter younger than its
    // window is extrapolated from fewer samples) and the two servers' queries, moments
    // apart, differ by more than the tolerance.
    prometheus
        .wait_or_fail(
            "every pod's request counter to be 40s old",
            Duration::from_secs(120),
            || async {
                let q = "count(count_over_time(http_requests_total[45s]) >= 40)";
                let n = prometheus.try_query(q).await.ok()?.first()?.value;
                (n as usize == PODS.len()).then_some(())
            },
        )
        .await;

    let dir = tempfile::Builder::new()
        .prefix("kmb-compare-")
        .tempdir()
        .expect("tempdir");
    let root = dir.path();
    let adapter_config = root.join("adapter.yaml");
    std::fs::write(&adapter_config, ADAPTER_CONFIG).expect("adapter config");
    let rules =
        common::adapter::convert_adapter_config(bridge_bin(), &adapter_config, &prometheus.url())
            .replace("[cache]\n", "[cache]\ndiscovery_interval = \"2s\"\n");
    let tls = serving_pair(root);
    let pki = cp.dir().join("pki");
    let (crt, key) = (tls.1.display().to_string(), tls.2.display().to_string());
    let mut bridge = Bridge::start_for_cluster(
        &rules,
        &cp.client_kubeconfig("compare-bridge", &["system:masters"]),
        "localhost",
        &["--tls-cert-file", &crt, "--tls-private-key-file", &key],
    )
    .await;
    bridge.set_client(tls_client_with(
        &tls.0,
        false,
        Some((&pki.join("admin.crt"), &pki.join("admin.key"))),
    ));
    let adapter_port = free_port();
    let adapter_log = root.join("prometheus-adapter.log");
    let mut args = serving_args(&tls, adapter_port);
    args.extend(adapter_args(
        root,
        &cp.client_kubeconfig("compare-adapter", &["system:masters"]),
        &prometheus.url(),
        &adapter_config,
    ));
    let mut adapter_child = spawn_logged(&adapter, &args, &[], &adapter_log);
    let old = format!("https://127.0.0.1:{adapter_port}");
    let new = bridge.url("");

    // Both up, both listing the metrics (compare itself is the probe: it fails with 2 until
    // a server answers discovery).
    let ready = poll(Duration::from_secs(90), || {
        let (old, new, tls, pki) = (&old, &new, &tls.0, &pki);
        async move {
            let (code, out) = compare(old, new, tls, pki, &["-n", "shop"]);
            (code != 2
                && out.contains("custom.metrics.k8s.io/v1beta1: 2 metric(s) on old, 2 on new")
                && out.contains("external.metrics.k8s.io/v1beta1: 1 metric(s) on old, 1 on new"))
            .then_some(())
        }
    })
    .await;
    if ready.is_none() {
        let (_, out) = compare(&old, &new, &tls.0, &pki, &["-n", "shop"]);
        panic!(
            "the servers never both listed the metrics:\n{out}\nadapter: {:?}\n{}\nbridge:\n{}",
            adapter_child.try_wait(),
            log_tail(&adapter_log, 30),
            bridge.log()
        );
    }

    // 1. The same rules: no differences, in every namespace of the cluster (found through
    //    the kubeconfig; most have no data, a 404 from the bridge and an empty list from
    //    prometheus-adapter, which are the same).
    let kubeconfig = cp.admin_kubeconfig().display().to_string();
    let (code, out) = compare(&old, &new, &tls.0, &pki, &["--kubeconfig", &kubeconfig]);
    assert_eq!(
        code,
        0,
        "the same rules differ:\n{out}\nadapter log:\n{}",
        log_tail(&adapter_log, 20)
    );
    assert!(out.contains("no differences"), "{out}");
    let namespaces = out
        .lines()
        .find_map(|l| {
            l.split(" in ")
                .nth(1)?
                .split(" namespace(s)")
                .next()?
                .parse::<usize>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no summary line:\n{out}"));
    assert!(namespaces >= 6, "every namespace of the cluster: {out}");
    // The values were really compared: a strict tolerance still agrees on the gauges' exact
    // values, one namespace at a time. And the bridge is reached through a name its
    // certificate has and the URL does not (a port-forward's case: --tls-server-name).
    let (code, out) = compare(
        &old,
        &new,
        &tls.0,
        &pki,
        &[
            "-n",
            "shop",
            "--metrics",
            "^queue_",
            "--relative-tolerance",
            "0",
            "--absolute-tolerance",
            "0",
            "--new-tls-server-name",
            "localhost",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("across 1 value request(s)"), "{out}");
    assert!(out.contains("(certificate name localhost)"), "{out}");

    // 2. The bridge's rules change: pod web-1 left out of the request rates, the external
    //    values doubled, and a metric only the bridge serves.
    let changed = rules
        .replace(
            "sum(rate(<<.Series>>{<<.LabelMatchers>>}[30s])) by (<<.GroupBy>>)",
            "sum(rate(<<.Series>>{<<.LabelMatchers>>,pod!=\"web-1\"}[30s])) by (<<.GroupBy>>)",
        )
        .replace(
            "sum(<<.Series>>{<<.LabelMatchers>>}) by (queue)",
            "sum(<<.Series>>{<<.LabelMatchers>>}) by (queue) * 2",
        )
        + "\n[[external_rules]]\nseries_query = 'queue_consumers{namespace!=\"\",queue!=\"\"}'\n\
           resources.overrides = { namespace = { resource = \"namespace\" } }\n\
           metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>}) by (queue)'\n";
    assert_ne!(changed, rules);
    std::fs::write(&bridge.rules_path, &changed).expect("rewriting the bridge's rules");
    bridge
        .wait_for("/apis/external.metrics.k8s.io/v1beta1", |v| {
            v.to_string().contains("queue_consumers")
        })
        .await;
    let (code, out) = compare(&old, &new, &tls.0, &pki, &["-n", "shop,jobs"]);
    eprintln!("compare after the bridge's rules changed:\n{out}");
    assert_eq!(code, 1, "{out}");
    let found = diffs(&out);
    for needle in [
        "external.metrics.k8s.io/v1beta1: metric queue_consumers only on new",
        "custom.metrics.k8s.io/v1beta1/namespaces/shop/pods/*/http_requests_per_second: Pod shop/web-1 only on old",
        "external.metrics.k8s.io/v1beta1/namespaces/shop/queue_messages_ready: {queue=orders}: old 42 (42), new 84 (84), 50.000% apart",
        "external.metrics.k8s.io/v1beta1/namespaces/jobs/queue_messages_ready: {queue=batch}: old 3 (3), new 6 (6)",
        "custom.metrics.k8s.io/v1beta1/namespaces/shop/metrics/http_requests_per_second: Namespace shop: old ",
    ] {
        assert!(
            found.iter().any(|d| d.starts_with(needle)),
            "{needle:?} not reported:\n{out}"
        );
    }
    // What did not change is not reported: the jobs namespace's pods and request rate.
    assert!(
        !found
            .iter()
            .any(|d| d.contains("namespaces/jobs/pods") || d.contains("namespaces/jobs/metrics")),
        "{out}"
    );
    assert!(out.contains("difference(s)"), "{out}");
    // A tolerance wide enough for the doubled values leaves the objects and the metric.
    let (code, out) = compare(
        &old,
        &new,
        &tls.0,
        &pki,
        &["-n", "shop,jobs", "--relative-tolerance", "0.7"],
    );
    assert_eq!(code, 1, "{out}");
    let found = diffs(&out);
    assert!(!found.iter().any(|d| d.contains("apart")), "{out}");
    assert!(
        found
            .iter()
            .any(|d| d.contains("Pod shop/web-1 only on old")),
        "{out}"
    );
    assert!(
        found
            .iter()
            .any(|d| d.contains("queue_consumers only on new")),
        "{out}"
    );

    // 3. Credentials the servers refuse: not compared (2), not "same".
    let out = Command::new(bridge_bin())
        .args([
            "compare",
            "--old-url",
            &old,
            "--new-url",
            &new,
            "-n",
            "shop",
        ])
        .arg("--ca-file")
        .arg(&tls.0)
        .output()
        .expect("compare without credentials");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    // A name the certificate does not have: refused, not compared.
    let (code, out) = compare(
        &old,
        &new,
        &tls.0,
        &pki,
        &[
            "-n",
            "shop",
            "--tls-server-name",
            "kube-metrics-bridge.custom-metrics.svc",
        ],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("not compared") && out.contains("certificate"),
        "{out}"
    );
    // prometheus-adapter lets anonymous requests through to a 403; the bridge says 401.
    assert!(
        stderr.contains("old server: /apis/custom.metrics.k8s.io/v1beta1: 403")
            && stderr.contains("give it credentials")
            && stderr.contains("not compared"),
        "{stderr}"
    );
    drop(adapter_child);
}
