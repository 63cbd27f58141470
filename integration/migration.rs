//! `convert --helm-values` as a user runs it (docs/migration.md):
//!
//! - on a realistic prometheus-adapter chart values file
//!   (`testdata/helm/prometheus-adapter-values.yaml`: the chart's values.yaml copied and
//!   edited), rendered with the real Helm and this project's chart, and on the adapter chart's
//!   untouched defaults;
//! - every flag prometheus-adapter v0.12.0 itself lists (`--help` of the real binary) is
//!   mapped or explained.
//!
//! `compare` is tested in integration/compare.rs.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use common::adapter::adapter_bin;
use yaml_serde::Value;

fn bridge_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_kube-metrics-bridge"))
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---- convert --helm-values + helm -------------------------------------------------------

/// `deploy/render.sh helm -- -f values` (with an image repository that has a registry, which
/// the chart may require).
fn helm_render(values: &Path) -> String {
    let out = Command::new("bash")
        .arg("deploy/render.sh")
        .arg("helm")
        .arg("--")
        .arg("-f")
        .arg(values)
        .args([
            "--set",
            "image.repository=localhost:5000/kube-metrics-bridge",
        ])
        .output()
        .expect("running deploy/render.sh");
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "helm refused the converted values: {stderr}\n{}",
        std::fs::read_to_string(values).unwrap_or_default()
    );
    stdout
}

/// The rendered documents by `Kind/name`.
fn documents(yaml: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for doc in yaml_serde::Deserializer::from_str(yaml) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("rendered YAML");
        if let (Some(kind), Some(name)) = (
            v["kind"].as_str().map(str::to_string),
            v["metadata"]["name"].as_str().map(str::to_string),
        ) {
            out.insert(format!("{kind}/{name}"), v);
        }
    }
    out
}

fn yaml(text: &str) -> Value {
    yaml_serde::from_str(text).expect("test YAML")
}

fn convert_helm_values(values: &Path, out: &Path) -> (String, String) {
    let run = Command::new(bridge_bin())
        .args(["convert", "--helm-values"])
        .arg(values)
        .arg("-o")
        .arg(out)
        .output()
        .expect("kube-metrics-bridge convert --helm-values");
    let (stdout, stderr) = text(&run);
    assert!(run.status.success(), "convert --helm-values: {stderr}");
    (stdout, stderr)
}

#[test]
fn helm_values_convert_and_render_with_the_real_helm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = Path::new("integration/testdata/helm/prometheus-adapter-values.yaml");
    let converted = dir.path().join("values.yaml");
    let (_, stderr) = convert_helm_values(input, &converted);
    // The notes that matter for this file, on stderr (and as comments in the file).
    let file = std::fs::read_to_string(&converted).expect("converted values");
    // The comments as one text (notes are wrapped over several lines).
    let comments = file
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| {
            l.trim()
                .trim_start_matches("NOTE:")
                .trim_start_matches("- ")
                .trim()
        })
        .collect::<Vec<_>>()
        .join(" ");
    for needle in [
        "names the adapter's Service",
        "--tls-min-version=VersionTLS12: no equivalent",
        "--disable-http2: no equivalent",
        "--client-qps=20: no equivalent",
        "readinessProbe: not carried over",
        "image.repository registry.example.com/mirror/prometheus-adapter",
        "ConfigMap prometheus-ca, Secret prometheus-adapter-token",
        "cronjobs.batch",
    ] {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
        assert!(
            comments.contains(needle),
            "the file's comments lack {needle:?}:\n{file}"
        );
    }
    let input_values = yaml(&std::fs::read_to_string(input).expect("testdata"));

    let docs = documents(&helm_render(&converted));
    let deployment = &docs["Deployment/kube-metrics-bridge"];
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(deployment["spec"]["replicas"], yaml("3"));
    // Pod placement and resources: the adapter's, exactly.
    for (ours, theirs) in [
        (&pod["affinity"], &input_values["affinity"]),
        (&pod["nodeSelector"], &input_values["nodeSelector"]),
        (&pod["tolerations"], &input_values["tolerations"]),
        (&container["resources"], &input_values["resources"]),
    ] {
        assert_eq!(ours, theirs);
    }
    assert_eq!(pod["priorityClassName"], yaml("platform-critical"));
    assert_eq!(
        pod["imagePullSecrets"],
        yaml("[{name: registry-example-com}]")
    );
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"],
        yaml("monitoring")
    );
    assert_eq!(
        deployment["metadata"]["labels"]["team"],
        yaml("platform"),
        "customLabels -> commonLabels"
    );
    // customAnnotations: on every object and on the pods, as the adapter chart puts them.
    for doc in [
        &docs["Service/kube-metrics-bridge"],
        deployment,
        &deployment["spec"]["template"],
    ] {
        assert_eq!(
            doc["metadata"]["annotations"]["owner"],
            yaml("platform-team"),
            "{doc:?}"
        );
    }
    // extraArguments, flag by flag: allowed paths as a serve flag, the Prometheus files as
    // rules-file variables with the adapter's paths, on the adapter's volumes.
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.contains(&"--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics"),
        "{args:?}"
    );
    let env: BTreeMap<&str, &str> = container["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    assert_eq!(
        env.get("KMB_CONFIG_PROMETHEUS__CA_FILE"),
        Some(&"/etc/prometheus-tls/ca.crt")
    );
    assert_eq!(
        env.get("KMB_CONFIG_PROMETHEUS__BEARER_TOKEN_FILE"),
        Some(&"/etc/prometheus-auth/token")
    );
    assert_eq!(
        env.get("RUST_LOG"),
        Some(&"info,kube_metrics_bridge=debug"),
        "logLevel 6"
    );
    let mounts = serde_json::to_string(&container["volumeMounts"]).expect("JSON");
    assert!(mounts.contains("/etc/prometheus-auth"), "{mounts}");
    let volumes = serde_json::to_string(&pod["volumes"]).expect("JSON");
    assert!(volumes.contains("prometheus-adapter-token"), "{volumes}");
    // The PodDisruptionBudget as the adapter's.
    let pdb = &docs["PodDisruptionBudget/kube-metrics-bridge"];
    assert_eq!(pdb["spec"]["maxUnavailable"], yaml("1"));
    assert!(pdb["spec"].get("minAvailable").is_none(), "{pdb:?}");
    // The APIServices the adapter chart registered for these rules (resource metrics too),
    // with a caBundle of this release's CA.
    for name in [
        "v1beta1.custom.metrics.k8s.io",
        "v1beta2.custom.metrics.k8s.io",
        "v1beta1.external.metrics.k8s.io",
        "v1beta1.metrics.k8s.io",
        "v1.metrics.k8s.io",
    ] {
        let api = docs
            .get(&format!("APIService/{name}"))
            .unwrap_or_else(|| panic!("APIService {name} not rendered"));
        assert!(api["spec"]["caBundle"]
            .as_str()
            .is_some_and(|c| !c.is_empty()));
        assert!(api["spec"].get("insecureSkipTLSVerify").is_none());
    }
    // RBAC: the cronjobs the kafka rule names.
    let rbac = serde_json::to_string(
        &docs
            .iter()
            .filter(|(k, _)| k.starts_with("ClusterRole/"))
            .map(|(_, v)| v)
            .collect::<Vec<_>>(),
    )
    .expect("JSON");
    assert!(rbac.contains("cronjobs"), "{rbac}");

    // The rules file the chart renders: the adapter's Prometheus, relist interval and max
    // age, and the rules, which `check` accepts.
    let rules = docs["ConfigMap/kube-metrics-bridge-rules"]["data"]["rules.toml"]
        .as_str()
        .expect("rules.toml")
        .to_string();
    for needle in [
        "url = \"http://prometheus-operated.monitoring.svc:9090/prometheus\"",
        "headers = { \"X-Scope-OrgID\" = \"platform\" }",
        "discovery_interval = \"30s\"",
        "series_max_age = \"5m\"",
        "[[external_rules]]",
        "[resource_rules.memory]",
    ] {
        assert!(rules.contains(needle), "{needle:?} not in:\n{rules}");
    }
    let rules_path = dir.path().join("rules.toml");
    std::fs::write(&rules_path, &rules).expect("writing rules.toml");
    let check = Command::new(bridge_bin())
        .arg("check")
        .arg(&rules_path)
        .env_remove("KMB_CONFIG_PROMETHEUS__URL")
        .output()
        .expect("kube-metrics-bridge check");
    assert!(
        check.status.success(),
        "check of the rendered rules: {}\n{rules}",
        text(&check).1
    );
}

/// The adapter chart's own defaults (its values.yaml unedited) and an empty values file
/// render as well: the six default rules, the custom APIServices only.
#[test]
fn the_adapter_charts_defaults_render_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, input) in [
        ("defaults.yaml", "src/convert/adapter_chart_values.yaml"),
        ("empty.yaml", "/dev/null"),
    ] {
        let converted = dir.path().join(name);
        convert_helm_values(Path::new(input), &converted);
        let docs = documents(&helm_render(&converted));
        let apis: Vec<&String> = docs
            .keys()
            .filter(|k| k.starts_with("APIService/"))
            .collect();
        assert_eq!(
            apis,
            [
                "APIService/v1beta1.custom.metrics.k8s.io",
                "APIService/v1beta2.custom.metrics.k8s.io"
            ],
            "{input}"
        );
        let rules = docs["ConfigMap/kube-metrics-bridge-rules"]["data"]["rules.toml"]
            .as_str()
            .expect("rules.toml");
        assert_eq!(rules.matches("[[rules]]").count(), 6, "{rules}");
        assert!(
            rules.contains("url = \"http://prometheus.default.svc:9090\""),
            "{rules}"
        );
    }
}

/// Every flag the real prometheus-adapter v0.12.0 lists in `--help` is either mapped or noted
/// with why it has no equivalent by `convert --helm-values`; none is "no such flag".
#[tokio::test]
async fn every_prometheus_adapter_flag_is_mapped_or_explained() {
    let adapter = adapter_bin().await;
    let help = Command::new(&adapter)
        .arg("--help")
        .output()
        .expect("prometheus-adapter --help");
    let (stdout, stderr) = text(&help);
    let mut flags: Vec<(String, bool)> = Vec::new();
    for line in stdout.lines().chain(stderr.lines()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (name, kind) = match words.as_slice() {
            [short, long, rest @ ..] if short.len() == 3 && short.starts_with('-') => {
                (*long, rest.first().copied())
            }
            [long, rest @ ..] => (*long, rest.first().copied()),
            [] => continue,
        };
        let Some(name) = name.strip_prefix("--") else {
            continue;
        };
        // A flag with a value is followed by its type (`string`, `duration`, ...); a
        // boolean by its description, which starts with a capital or a lowercase word.
        let typed = kind.is_some_and(|k| {
            [
                "string",
                "strings",
                "stringArray",
                "int",
                "float32",
                "duration",
                "Level",
                "moduleSpec",
                "namedCertKey",
                "ip",
            ]
            .contains(&k)
        });
        if name != "help" {
            flags.push((name.to_string(), !typed));
        }
    }
    assert!(
        flags.len() > 70,
        "prometheus-adapter --help lists {} flags: {flags:?}",
        flags.len()
    );
    let mut args = String::from("extraArguments:\n");
    for (name, boolean) in &flags {
        if name == "config" {
            continue; // would make the rules come from a file (tested in unit tests)
        }
        let value = match name.as_str() {
            _ if *boolean => String::new(),
            "prometheus-url" => "=http://p:9090".into(),
            "secure-port" | "client-burst" | "http2-max-streams-per-connection" => "=100".into(),
            "v" => "=6".into(),
            "prometheus-verb" => "=POST".into(),
            "prometheus-header" => "=X-A=b".into(),
            n if n.contains("interval") || n.contains("max-age") || n.contains("ttl") => {
                "=5m".into()
            }
            _ => "=/etc/x".into(),
        };
        args.push_str(&format!("- '--{name}{value}'\n"));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, &args).expect("values");
    let converted = dir.path().join("out.yaml");
    let (_, notes) = convert_helm_values(&values, &converted);
    let out = std::fs::read_to_string(&converted).expect("converted");
    assert!(!notes.contains("no such flag"), "{notes}");
    let mut unaccounted = Vec::new();
    for (name, _) in &flags {
        let mentioned = notes.contains(&format!("--{name}"))
            || out.contains(&format!("--{name}"))
            || match name.as_str() {
                // Mapped to values, not flags.
                "prometheus-url" => out.contains("url: http://p:9090"),
                "prometheus-header" => out.contains("X-A: b"),
                "prometheus-verb" => out.contains("method: POST"),
                "secure-port" => out.contains("securePort: 100"),
                "v" => out.contains("logLevel: info,kube_metrics_bridge=debug"),
                "metrics-relist-interval" => out.contains("discoveryInterval: 5m"),
                "metrics-max-age" => out.contains("seriesMaxAge: 5m"),
                "prometheus-ca-file" => out.contains("KMB_CONFIG_PROMETHEUS__CA_FILE"),
                "prometheus-token-file" => out.contains("KMB_CONFIG_PROMETHEUS__BEARER_TOKEN_FILE"),
                "prometheus-client-tls-cert-file" => {
                    out.contains("KMB_CONFIG_PROMETHEUS__CLIENT_CERT_FILE")
                }
                "prometheus-client-tls-key-file" => {
                    out.contains("KMB_CONFIG_PROMETHEUS__CLIENT_KEY_FILE")
                }
                "lister-kubeconfig" | "authentication-kubeconfig" | "authorization-kubeconfig" => {
                    out.contains("--kubeconfig=/etc/x")
                }
                "discovery-interval" => out.contains("--api-discovery-interval=5m"),
                _ => false,
            };
        if !mentioned {
            unaccounted.push(name.clone());
        }
    }
    assert!(
        unaccounted.is_empty(),
        "flags neither mapped nor explained: {unaccounted:?}\nnotes:\n{notes}\nvalues:\n{out}"
    );
    // And the result is values Helm takes.
    helm_render(&converted);
}
