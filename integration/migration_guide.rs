//! docs/migration.md's "Cut-over, step by step", followed on the test control plane as a
//! prometheus-adapter Helm user would: the adapter (v0.12.0, from its chart's values) owns the
//! APIServices and real HPAs scale on its metrics; then
//!
//! 1. inventory through the aggregator,
//! 2. `convert --helm-values` on the adapter chart's values, `check` on the rules it wrote,
//! 3. this chart installed from the converted values without APIServices (applied for real;
//!    the bridge runs on the host with the chart's certificate and rules, as a pod would),
//! 4. `compare` between the two: no differences,
//! 5. the APIServices switched: install.sh's server-side apply over the adapter's refused
//!    without `--force-conflicts` and accepted with it (dry run), then the Helm path: the
//!    adapter's deleted and this chart's created at once, HPAs holding their replicas,
//! 6. the HPAs watched: `ScalingActive=True`, their replicas held,
//! 7. the adapter removed,
//!
//! with a watcher checking every second from step 2 on that no HPA changes its mind.
//! The rule-by-rule path with `[[upstreams]]` is integration/upstreams.rs. The guide's
//! "Cutting over `metrics.k8s.io`" is the second test here.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::adapter::{
    adapter_args, adapter_bin, log_tail, serving_args, serving_pair_for, spawn_logged,
};
use common::bridge::Bridge;
use common::controlplane::{ControlPlane, Options};
use common::{chart, free_port, hpa, wait_until, Exporter, Prometheus};
use serde_json::Value;

const NS: &str = "shop";
const APISERVICES: [&str; 3] = [
    "v1beta1.custom.metrics.k8s.io",
    "v1beta2.custom.metrics.k8s.io",
    "v1beta1.external.metrics.k8s.io",
];

/// The prometheus-community chart's rules as a user writes them in its values.
const ADAPTER_RULES: &str = r#"  default: false
  custom:
  - seriesQuery: 'svc_inflight{namespace!="",service!=""}'
    resources:
      overrides:
        namespace: {resource: namespace}
        service: {resource: service}
    metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
  external:
  - seriesQuery: 'queue_messages_ready{namespace!=""}'
    resources:
      overrides:
        namespace: {resource: namespace}
    metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (queue)'
"#;

/// What the adapter's chart renders into its ConfigMap from those rules (`config.yaml`).
const ADAPTER_CONFIG: &str = r#"rules:
- seriesQuery: 'svc_inflight{namespace!="",service!=""}'
  resources:
    overrides:
      namespace: {resource: namespace}
      service: {resource: service}
  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
externalRules:
- seriesQuery: 'queue_messages_ready{namespace!=""}'
  resources:
    overrides:
      namespace: {resource: namespace}
  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (queue)'
"#;

const OBJECT_PATH: &str =
    "/apis/custom.metrics.k8s.io/v1beta1/namespaces/shop/services/web/svc_inflight";
const EXTERNAL_PATH: &str =
    "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/queue_messages_ready?labelSelector=queue%3Dorders";

/// The chart's Service, as the APIServices and its certificate name it.
const SERVICE: &str = common::hpa::SERVICE_DNS;

fn bridge_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_kube-metrics-bridge"))
}

fn run(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().expect("running a command of the guide");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `helm template` of this chart as `deploy/render.sh helm` does, with `args`.
fn render(args: &[&str]) -> String {
    let out = Command::new("bash")
        .args(["deploy/render.sh", "helm", "--"])
        .args(args)
        .output()
        .expect("render");
    assert!(
        out.status.success(),
        "render: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    yaml_serde::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Objects as one `v1` List kubectl applies (JSON documents cannot be separated by `---`).
fn as_list(docs: &[&Value]) -> String {
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": docs}).to_string()
}

/// prometheus-adapter as its chart runs it with `config`: its own serving certificate (for
/// its Service `monitoring/prometheus-adapter`), cluster access as an admin, `extra` flags;
/// answering `probe` before this returns (else its log is shown).
struct Adapter {
    child: tokio::process::Child,
    /// The CA of its serving certificate.
    ca: PathBuf,
    port: u16,
}

async fn start_adapter(
    cp: &ControlPlane,
    root: &Path,
    prometheus: &Prometheus,
    config: &str,
    extra: &[&str],
    probe: &str,
) -> Adapter {
    let bin = adapter_bin().await;
    let config_path = root.join("adapter-config.yaml");
    std::fs::write(&config_path, config).expect("adapter config");
    let tls = serving_pair_for(root, &["prometheus-adapter.monitoring.svc"]);
    let port = free_port();
    let log = root.join("prometheus-adapter.log");
    let mut args = serving_args(&tls, port);
    args.extend(adapter_args(
        root,
        &cp.client_kubeconfig("prometheus-adapter", &["system:masters"]),
        &prometheus.url(),
        &config_path,
    ));
    args.extend(extra.iter().map(|a| a.to_string()));
    let child = spawn_logged(&bin, &args, &[], &log);
    let pki = cp.dir().join("pki");
    let client = common::bridge::tls_client_with(
        &tls.0,
        false,
        Some((&pki.join("admin.crt"), &pki.join("admin.key"))),
    );
    let ready = common::poll(Duration::from_secs(90), || async {
        let r = client
            .get(format!("https://127.0.0.1:{port}{probe}"))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "prometheus-adapter does not answer:\n{}",
        log_tail(&log, 30)
    );
    Adapter {
        child,
        ca: tls.0,
        port,
    }
}

/// `convert --helm-values` on the adapter chart's values: this chart's values file and what
/// it holds.
fn convert_helm_values(adapter_values: &Path, root: &Path) -> (PathBuf, Value) {
    let out = root.join("bridge-values.yaml");
    let (code, text) = run(Command::new(bridge_bin())
        .arg("convert")
        .arg("--helm-values")
        .arg(adapter_values)
        .arg("-o")
        .arg(&out));
    assert_eq!(code, 0, "convert --helm-values: {text}");
    let values = yaml_serde::from_str(&std::fs::read_to_string(&out).expect("values"))
        .expect("converted values are YAML");
    (out, values)
}

/// The chart installed (`helm install -n custom-metrics --create-namespace`, applied for
/// real) and, as no kubelet runs here, the bridge on the host as its pod would run: the
/// chart's ServiceAccount, certificate and rules (`rules` edits them), behind its Service.
struct Installed {
    /// The chart's TLS Secret.
    secret: Value,
    /// tls.crt, tls.key, ca.crt of that Secret.
    files: Vec<PathBuf>,
    rules: String,
    bridge: Bridge,
}

async fn install_chart(
    cp: &ControlPlane,
    root: &Path,
    args: &[&str],
    rules: impl Fn(&str) -> String,
) -> Installed {
    let yaml = render(args);
    let docs = documents(&yaml);
    assert!(
        !docs.iter().any(|d| d["kind"] == "APIService"),
        "installed without APIServices"
    );
    cp.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: custom-metrics}\n")
        .await;
    let out = cp
        .kubectl_as(
            cp.admin_kubeconfig(),
            &["apply", "--server-side", "-f", "-"],
            Some(&yaml),
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let find = |kind: &str, name: &str| -> Value {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let secret = find("Secret", "kube-metrics-bridge-tls");
    let files = chart::tls_files(&secret, root);
    let rules = rules(
        find("ConfigMap", "kube-metrics-bridge-rules")["data"]["rules.toml"]
            .as_str()
            .expect("rules.toml"),
    );
    let bridge = chart::start_bridge(cp, &rules, &files).await;
    Installed {
        secret,
        files,
        rules,
        bridge,
    }
}

/// The chart's APIServices as `helm upgrade` with `args` gives them: their caBundle the
/// installed certificate's CA (the chart looks its Secret up; `helm template` cannot), and
/// the Service port the bridge's (its Service here is an ExternalName to the host).
fn chart_apiservices(args: &[&str], installed: &Installed) -> Vec<Value> {
    let port = format!("service.port={}", installed.bridge.port);
    let mut all = args.to_vec();
    all.extend(["--set", &port]);
    documents(&render(&all))
        .into_iter()
        .filter(|d| d["kind"] == "APIService")
        .map(|mut d| {
            d["spec"]["caBundle"] = installed.secret["data"]["ca.crt"].clone();
            d
        })
        .collect()
}

/// Who answered an object metric: prometheus-adapter's framework writes a core object's
/// `describedObject.apiVersion` as `/v1`, the bridge as `v1`.
fn object_answered_by(list: &Value) -> &'static str {
    match list["items"][0]["describedObject"]["apiVersion"].as_str() {
        Some("/v1") => "adapter",
        Some("v1") => "bridge",
        _ => "nobody",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_guide_cut_over_works_as_written() {
    let exporter = Exporter::start_empty().await;
    exporter
        .set_gauge(
            "svc_inflight",
            &[("namespace", NS), ("service", "web")],
            2.0,
        )
        .await;
    exporter
        .set_gauge(
            "queue_messages_ready",
            &[("namespace", NS), ("queue", "orders")],
            3.0,
        )
        .await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    for series in ["svc_inflight", "queue_messages_ready"] {
        prometheus
            .wait_for_series(series, Duration::from_secs(60))
            .await;
    }
    let cp = ControlPlane::start_with(Options::default()).await;
    let dir = tempfile::Builder::new()
        .prefix("kmb-guide-")
        .tempdir()
        .expect("tempdir");
    let root = dir.path();

    // Before: prometheus-adapter from its chart, owning the APIServices (as plain manifests
    // would create them: client-side apply), and HPAs on an Object and an External metric.
    let adapter_values = root.join("adapter-values.yaml");
    let prometheus_port = prometheus
        .url()
        .rsplit(':')
        .next()
        .unwrap_or("")
        .to_string();
    std::fs::write(
        &adapter_values,
        format!(
            "prometheus:\n  url: http://127.0.0.1\n  port: {prometheus_port}\n  path: \"\"\n\
             metricsRelistInterval: 5s\nreplicas: 2\nrules:\n{ADAPTER_RULES}"
        ),
    )
    .expect("adapter values");
    let Adapter {
        child: mut adapter,
        ca: adapter_ca,
        port: adapter_port,
    } = start_adapter(
        &cp,
        root,
        &prometheus,
        ADAPTER_CONFIG,
        &["--metrics-relist-interval=5s"],
        "/apis/custom.metrics.k8s.io/v1beta1",
    )
    .await;
    let ca = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(&adapter_ca).expect("serving CA"));
    let mut adapter_objects = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: monitoring}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: prometheus-adapter, namespace: monitoring}}\n\
         spec: {{type: ExternalName, externalName: 127.0.0.1, ports: [{{name: https, port: {adapter_port}}}]}}\n"
    );
    for name in APISERVICES {
        let (version, group) = name.split_once('.').expect("version.group");
        adapter_objects.push_str(&format!(
            "---\napiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {{name: {name}}}\n\
             spec: {{group: {group}, version: {version}, groupPriorityMinimum: 100, versionPriority: 100,\n  \
             caBundle: {ca}, service: {{name: prometheus-adapter, namespace: monitoring, port: {adapter_port}}}}}\n"
        ));
    }
    let out = cp
        .kubectl_as(
            cp.admin_kubeconfig(),
            &["apply", "-f", "-"],
            Some(&adapter_objects),
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cp.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {NS}}}\nspec: {{ports: [{{port: 80}}]}}\n"
    ))
    .await;
    cp.wait_apiservices_available().await;
    for (name, metric) in [
        ("web", hpa::object_metric("Service", "web", "svc_inflight")),
        (
            "worker",
            hpa::external_metric("queue_messages_ready", "orders"),
        ),
    ] {
        cp.apply(&format!(
            "{}{}",
            hpa::deployment(NS, name, 1),
            hpa::autoscaler(NS, name, 1, 6, &metric)
        ))
        .await;
    }
    for (name, want) in [("web", 2), ("worker", 3)] {
        hpa::wait_replicas(
            &cp,
            NS,
            name,
            want,
            Duration::from_secs(5),
            Duration::from_secs(120),
            || async {},
        )
        .await;
    }
    let (code, before) = cp.get(OBJECT_PATH).await;
    assert_eq!(
        (code, object_answered_by(&before)),
        (200, "adapter"),
        "{before}\n{}",
        log_tail(&root.join("prometheus-adapter.log"), 20)
    );

    // 1. Inventory: what the adapter serves, through the API server.
    let (_, inventory) = cp.get("/apis/custom.metrics.k8s.io/v1beta1").await;
    let names: Vec<&str> = inventory["resources"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(names.contains(&"services/svc_inflight"), "{inventory}");

    let watcher = hpa::Watcher::start(
        &cp,
        NS,
        vec![("web".into(), 2), ("worker".into(), 3)],
        Vec::new(),
    );
    watcher.phase("2: convert");

    // 2. Convert the adapter chart's values, and check the rules they carry.
    let (bridge_values, values) = convert_helm_values(&adapter_values, root);
    assert_eq!(
        values["prometheus"]["url"],
        format!("http://127.0.0.1:{prometheus_port}"),
        "{values}"
    );
    assert_eq!(values["replicaCount"], 2, "{values}");
    let rules_only = root.join("rules-only.toml");
    std::fs::write(&rules_only, values["rules"].as_str().expect("rules value")).expect("rules");
    let (code, text) = run(Command::new(bridge_bin()).arg("check").arg(&rules_only));
    assert_eq!(code, 0, "check: {text}");

    // 3. Install the bridge without APIServices (the guide's helm install, applied for real).
    watcher.phase("3: install without APIServices");
    let values_arg = bridge_values.display().to_string();
    let install = [
        "-f",
        &values_arg,
        "--set",
        "image.repository=localhost/kube-metrics-bridge",
        "--set",
        "apiServices.custom=false",
        "--set",
        "apiServices.external=false",
        "--set",
        "apiServices.resource=false",
    ];
    let installed = install_chart(&cp, root, &install, |rules| {
        rules.replace("discovery_interval = \"5s\"", "discovery_interval = \"2s\"")
    })
    .await;
    let (bridge, files) = (&installed.bridge, &installed.files);
    // The adapter still answers through the API server.
    let (code, still) = cp.get(OBJECT_PATH).await;
    assert_eq!(
        (code, object_answered_by(&still)),
        (200, "adapter"),
        "{still}"
    );

    // 4. Compare the two, directly, as the cluster admin.
    watcher.phase("4: compare");
    let pki = cp.dir().join("pki");
    let compare = |extra: &[&str]| {
        let mut cmd = Command::new(bridge_bin());
        cmd.arg("compare")
            .args(["--old-url", &format!("https://127.0.0.1:{adapter_port}")])
            .args(["--new-url", &format!("https://127.0.0.1:{}", bridge.port)])
            .arg("--old-ca-file")
            .arg(&adapter_ca)
            .arg("--new-ca-file")
            .arg(&files[2])
            .arg("--new-tls-server-name")
            .arg("kube-metrics-bridge.custom-metrics.svc")
            .arg("--client-cert-file")
            .arg(pki.join("admin.crt"))
            .arg("--client-key-file")
            .arg(pki.join("admin.key"))
            .args(["-n", NS])
            .args(extra);
        run(&mut cmd)
    };
    // Until the bridge's first discovery and the adapter's relist both saw the series.
    let mut last = String::new();
    let same = common::poll(Duration::from_secs(60), || {
        let (code, text) = compare(&[]);
        last = text.clone();
        async move { (code == 0).then_some(text) }
    })
    .await
    .unwrap_or_else(|| panic!("compare never agreed:\n{last}"));
    assert!(same.contains("no differences"), "{same}");

    // 5. Switch the APIServices. For plain manifests the guide says deploy/install.sh needs
    // --force-conflicts over the adapter's (its field manager does not own them): checked
    // with a server-side dry run under install.sh's field manager.
    watcher.phase("5: switch the APIServices");
    let mut enabled = install[..4].to_vec();
    enabled.extend([
        "--set",
        "apiServices.custom=true",
        "--set",
        "apiServices.external=true",
    ]);
    let ours = chart_apiservices(&enabled, &installed);
    let apiservices: Vec<&Value> = ours.iter().collect();
    assert_eq!(apiservices.len(), 3, "the chart's APIServices");
    let list = as_list(&apiservices);
    let install_sh = [
        "apply",
        "--server-side",
        "--field-manager=kube-metrics-bridge-install",
        "--dry-run=server",
        "-f",
        "-",
    ];
    let refused = cp
        .kubectl_as(cp.admin_kubeconfig(), &install_sh, Some(&list))
        .await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("conflict"),
        "without --force-conflicts: {stderr}"
    );
    let forced = cp
        .kubectl_as(
            cp.admin_kubeconfig(),
            &[&install_sh[..], &["--force-conflicts"]].concat(),
            Some(&list),
        )
        .await;
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    // With this chart the guide deletes the adapter's APIServices and runs `helm upgrade`
    // with them enabled at once; HPAs may see a few seconds without metrics and must hold
    // their replicas.
    watcher.strict(false);
    let mut delete = vec!["delete", "apiservice"];
    delete.extend(APISERVICES);
    cp.kubectl_ok(&delete).await;
    let out = cp
        .kubectl_as(cp.admin_kubeconfig(), &["create", "-f", "-"], Some(&list))
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cp.wait_apiservices_available().await;
    let served = wait_until(
        "the bridge answering through the API server",
        Duration::from_secs(60),
        || async {
            let (code, list) = cp.get(OBJECT_PATH).await;
            (code == 200 && object_answered_by(&list) == "bridge").then_some(list)
        },
    )
    .await;
    assert_eq!(served["items"][0]["value"], "2", "{served}");

    // 6. Watch the HPAs: active again within a sync period or two, then several sync periods
    // (2 s here) on the bridge alone.
    watcher.phase("6: watch the HPAs");
    for name in ["web", "worker"] {
        cp.wait_for(
            &format!("HPA {name} active on the bridge"),
            Duration::from_secs(60),
            || async { (hpa::scaling_active(&cp, NS, name).await.0 == "True").then_some(()) },
        )
        .await;
    }
    watcher.strict(true);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (code, external) = cp.get(EXTERNAL_PATH).await;
    assert_eq!(code, 200, "{external}");
    assert_eq!(external["items"][0]["value"], "3", "{external}");

    // 7. Clean up: the adapter goes; nothing depends on it any more.
    watcher.phase("7: adapter removed");
    adapter.kill().await.expect("stopping prometheus-adapter");
    cp.kubectl_ok(&[
        "-n",
        "monitoring",
        "delete",
        "service",
        "prometheus-adapter",
    ])
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let problems = watcher.finish().await;
    assert!(
        problems.is_empty(),
        "HPAs changed their mind during the cut-over: {problems:#?}\nbridge log:\n{}",
        bridge.log()
    );
    for (name, want) in [("web", 2), ("worker", 3)] {
        assert_eq!(hpa::replicas(&cp, NS, name).await, want, "{name}");
        assert_eq!(hpa::scaling_active(&cp, NS, name).await.0, "True", "{name}");
    }
}

/// prometheus-adapter's resource rules (the chart's `rules.resource`), node keys by `node`.
const RESOURCE_RULES: &str = r#"  resource:
    cpu:
      containerQuery: sum(rate(container_cpu_usage_seconds_total{<<.LabelMatchers>>, container!=""}[30s])) by (<<.GroupBy>>)
      nodeQuery: sum(rate(node_cpu_usage_seconds_total{<<.LabelMatchers>>}[30s])) by (<<.GroupBy>>)
      resources:
        overrides:
          node: {resource: node}
          namespace: {resource: namespace}
          pod: {resource: pod}
      containerLabel: container
    memory:
      containerQuery: sum(container_memory_working_set_bytes{<<.LabelMatchers>>, container!=""}) by (<<.GroupBy>>)
      nodeQuery: sum(node_memory_working_set_bytes{<<.LabelMatchers>>}) by (<<.GroupBy>>)
      resources:
        overrides:
          node: {resource: node}
          namespace: {resource: namespace}
          pod: {resource: pod}
      containerLabel: container
    window: 30s
"#;

/// `doctor`'s report against the control plane, for the chart's release.
fn doctor(cp: &ControlPlane, rules: &Path) -> String {
    let (_, report) = run(Command::new(bridge_bin())
        .arg("doctor")
        .arg("--kubeconfig")
        .arg(cp.admin_kubeconfig())
        .arg("--config")
        .arg(rules));
    report
}

/// docs/migration.md's "Cutting over `metrics.k8s.io`", followed for prometheus-adapter with
/// `rules.resource`: the bridge deployed with `[resource_rules]` and `apiServices.resource`
/// false, its answers checked directly against what the adapter serves through the API
/// server, `doctor` naming the owners, the adapter's APIService taken away and the chart's two
/// (v1beta1 and v1) given to the bridge, then `kubectl top` reading the bridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_k8s_io_cut_over_moves_last_on_its_own() {
    let exporter = Exporter::start_empty().await;
    let labels = [("namespace", NS), ("pod", "web-0"), ("container", "app")];
    exporter
        .set_counter("container_cpu_usage_seconds_total", &labels, 0.25)
        .await;
    exporter
        .set_gauge(
            "container_memory_working_set_bytes",
            &labels,
            100.0 * 1024.0 * 1024.0,
        )
        .await;
    exporter
        .set_counter("node_cpu_usage_seconds_total", &[("node", "node-a")], 1.5)
        .await;
    exporter
        .set_gauge(
            "node_memory_working_set_bytes",
            &[("node", "node-a")],
            2048.0 * 1024.0 * 1024.0,
        )
        .await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    let cp = ControlPlane::start_with(Options {
        skip_controller_manager: true,
        ..Options::default()
    })
    .await;
    cp.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {{name: monitoring}}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: default, namespace: {NS}}}\n---\n\
         apiVersion: v1\nkind: Node\nmetadata: {{name: node-a}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: web-0, namespace: {NS}}}\n\
         spec: {{automountServiceAccountToken: false, nodeName: node-a, containers: [{{name: app, image: registry.invalid/app:1}}]}}\n"
    ))
    .await;
    cp.set_pod_running(NS, "web-0").await;
    let dir = tempfile::Builder::new()
        .prefix("kmb-guide-top-")
        .tempdir()
        .expect("tempdir");
    let root = dir.path();

    // Before: prometheus-adapter (rules.resource only, as the guide expects by this point)
    // owns v1beta1.metrics.k8s.io; `kubectl top` reads it.
    let prometheus_port = prometheus
        .url()
        .rsplit(':')
        .next()
        .unwrap_or("")
        .to_string();
    let adapter_values = root.join("adapter-values.yaml");
    std::fs::write(
        &adapter_values,
        format!(
            "prometheus:\n  url: http://127.0.0.1\n  port: {prometheus_port}\n  path: \"\"\n\
             rules:\n  default: false\n{RESOURCE_RULES}"
        ),
    )
    .expect("adapter values");
    // What the adapter's chart renders into its config.yaml from rules.resource.
    let config: String = RESOURCE_RULES
        .lines()
        .skip(1)
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect();
    let Adapter {
        child: mut adapter,
        ca: adapter_ca,
        port: adapter_port,
    } = start_adapter(
        &cp,
        root,
        &prometheus,
        &format!("resourceRules:\n{config}"),
        &[],
        "/apis/metrics.k8s.io/v1beta1",
    )
    .await;
    let ca = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(&adapter_ca).expect("serving CA"));
    let out = cp
        .kubectl_as(
            cp.admin_kubeconfig(),
            &["apply", "-f", "-"],
            Some(&format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: prometheus-adapter, namespace: monitoring}}\n\
                 spec: {{type: ExternalName, externalName: 127.0.0.1, ports: [{{name: https, port: {adapter_port}}}]}}\n---\n\
                 apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {{name: v1beta1.metrics.k8s.io}}\n\
                 spec: {{group: metrics.k8s.io, version: v1beta1, groupPriorityMinimum: 100, versionPriority: 100,\n  \
                 caBundle: {ca}, service: {{name: prometheus-adapter, namespace: monitoring, port: {adapter_port}}}}}\n"
            )),
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cp.wait_apiservice_available("v1beta1.metrics.k8s.io").await;
    let pods = "/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods";
    cp.wait_for(
        "the adapter's pod metrics",
        Duration::from_secs(120),
        || async {
            let (code, list) = cp.get(pods).await;
            (code == 200 && list["items"][0]["metadata"]["name"] == "web-0").then_some(())
        },
    )
    .await;

    // 1. The bridge with [resource_rules] and apiServices.resource false (the converted
    // values set it true: the guide overrides it), its answers checked directly.
    let (bridge_values, values) = convert_helm_values(&adapter_values, root);
    assert_eq!(values["apiServices"]["resource"], true, "{values}");
    let values_arg = bridge_values.display().to_string();
    let install = [
        "-f",
        &values_arg,
        "--set",
        "image.repository=localhost/kube-metrics-bridge",
        "--set",
        "apiServices.resource=false",
    ];
    let installed = install_chart(&cp, root, &install, str::to_string).await;
    let (bridge, files, rules_text) = (&installed.bridge, &installed.files, &installed.rules);
    assert!(rules_text.contains("[resource_rules]"), "{rules_text}");
    let rules_file = root.join("rules.toml");
    std::fs::write(&rules_file, rules_text).expect("rules");
    let (code, text) = run(Command::new(bridge_bin())
        .args(["explain", "--config"])
        .arg(&rules_file)
        .arg("/apis/metrics.k8s.io/v1beta1/pods"));
    assert_eq!(code, 0, "explain: {text}");
    let pki = cp.dir().join("pki");
    // The chart's certificate names the Service: resolve it to the host, as a port-forward
    // with --tls-server-name would.
    let direct = common::bridge::tls_client_builder(
        &files[2],
        false,
        Some((&pki.join("admin.crt"), &pki.join("admin.key"))),
    )
    .resolve(SERVICE, ([127, 0, 0, 1], bridge.port).into())
    .build()
    .expect("client");
    let url = format!("https://{SERVICE}:{}{pods}", bridge.port);
    let ours: Value = wait_until(
        "the bridge's pod metrics",
        Duration::from_secs(60),
        || async {
            let r = direct.get(&url).send().await.ok()?;
            let list: Value = r.json().await.ok()?;
            (list["items"][0]["metadata"]["name"] == "web-0").then_some(list)
        },
    )
    .await;
    assert_eq!(ours["items"][0]["containers"][0]["name"], "app", "{ours}");

    // 2. doctor names the owners: v1beta1 the adapter, v1 nobody.
    let report = doctor(&cp, &rules_file);
    assert!(
        report.contains("warn  APIService v1beta1.metrics.k8s.io: owned by Service monitoring/prometheus-adapter"),
        "{report}"
    );
    assert!(
        report.contains("ok    APIService v1.metrics.k8s.io is not registered"),
        "{report}"
    );

    // 3. The adapter's APIService away (its release uninstalled), then the chart's two.
    adapter.kill().await.expect("stopping prometheus-adapter");
    cp.kubectl_ok(&["delete", "apiservice", "v1beta1.metrics.k8s.io"])
        .await;
    let mut upgrade = install[..4].to_vec();
    upgrade.extend(["--set", "apiServices.resource=true"]);
    let ours = chart_apiservices(&upgrade, &installed);
    let apiservices: Vec<&Value> = ours.iter().collect();
    let names: Vec<&str> = apiservices
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, ["v1.metrics.k8s.io", "v1beta1.metrics.k8s.io"]);
    let out = cp
        .kubectl_as(
            cp.admin_kubeconfig(),
            &["create", "-f", "-"],
            Some(&as_list(&apiservices)),
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in names {
        cp.wait_apiservice_available(name).await;
    }

    // 4. kubectl top (v1, now served) and the HPAs' v1beta1 both read the bridge.
    // kube-apiserver lists a new aggregated group in its discovery a moment after the
    // APIService turns Available, and kubectl caches discovery: ask with a fresh cache until
    // it sees the group.
    for (what, want) in [
        (&["top", "pod", "-n", NS][..], "web-0"),
        (&["top", "node"][..], "node-a"),
    ] {
        let out = cp
            .wait_for(
                &format!("kubectl {what:?}"),
                Duration::from_secs(60),
                || async {
                    let cache = tempfile::tempdir().ok()?;
                    let cache = format!("--cache-dir={}", cache.path().display());
                    let args: Vec<&str> = what.iter().copied().chain([cache.as_str()]).collect();
                    let out = cp.kubectl(&args).await;
                    out.status
                        .success()
                        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
                },
            )
            .await;
        assert!(out.contains(want), "{out}");
    }
    let (code, list) = cp.get(pods).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["items"][0]["metadata"]["name"], "web-0", "{list}");
    let report = doctor(&cp, &rules_file);
    for name in ["v1beta1", "v1"] {
        let line =
            format!("ok    APIService {name}.metrics.k8s.io is served by the bridge and Available");
        assert!(report.contains(&line), "{line} missing:\n{report}");
    }
    assert!(
        !report.contains("kubectl top and HPAs read different servers"),
        "{report}"
    );
}
