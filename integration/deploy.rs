//! What deploy/ ships is accepted by a real kube-apiserver (server-side dry-run of the
//! kustomize base and the Helm chart), and `doctor` explains a broken installation against
//! the same control plane.

mod common;

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::controlplane::{ControlPlane, Options};
use common::{Exporter, Prometheus};

fn render(flavour: &str) -> String {
    render_with(flavour, &[])
}

/// `deploy/render.sh flavour -- helm_args...`.
fn render_with(flavour: &str, helm_args: &[&str]) -> String {
    let mut cmd = Command::new("bash");
    cmd.arg("deploy/render.sh").arg(flavour);
    if !helm_args.is_empty() {
        cmd.arg("--").args(helm_args);
    }
    let out = cmd.output().expect("running deploy/render.sh");
    assert!(
        out.status.success(),
        "deploy/render.sh {flavour}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("YAML is UTF-8")
}

async fn control_plane() -> ControlPlane {
    let cp = ControlPlane::start_with(Options {
        skip_controller_manager: true,
        ..Options::default()
    })
    .await;
    cp.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: custom-metrics}\n")
        .await;
    cp
}

/// `kubectl apply --server-side --dry-run=server` of `yaml` as the cluster admin.
async fn server_side_dry_run(cp: &ControlPlane, yaml: &str) -> std::process::Output {
    // ServiceAccount admission looks up a Pod's ServiceAccount even in a dry-run, where the
    // ServiceAccount in the same YAML is not stored. Helm creates the `helm test` hook's
    // ServiceAccount (weight -10) before its Pod; do the same, for real.
    for doc in documents(yaml) {
        if doc["kind"] == "ServiceAccount"
            && doc["metadata"]["annotations"]["helm.sh/hook"] == "test"
        {
            cp.apply(&format!(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {}, namespace: {}}}\n",
                doc["metadata"]["name"].as_str().unwrap_or_default(),
                doc["metadata"]["namespace"].as_str().unwrap_or_default()
            ))
            .await;
        }
    }
    cp.kubectl_as(
        cp.admin_kubeconfig(),
        &["apply", "--server-side", "--dry-run=server", "-f", "-"],
        Some(yaml),
    )
    .await
}

#[tokio::test]
async fn shipped_manifests_pass_server_side_dry_run() {
    let cp = control_plane().await;
    for flavour in ["kustomize", "helm", "helm-test"] {
        let yaml = render(flavour);
        let out = server_side_dry_run(&cp, &yaml).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{flavour}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        for kind in [
            "apiservice.apiregistration.k8s.io/v1beta2.custom.metrics.k8s.io",
            "deployment.apps/kube-metrics-bridge",
            "clusterrolebinding.rbac.authorization.k8s.io",
        ] {
            assert!(
                stdout.contains(kind),
                "{flavour}: {kind} missing from\n{stdout}"
            );
        }
        // metrics.k8s.io only where the values turn it on (it would replace metrics-server).
        // Both versions: kubectl 1.37+ reads v1, HPAs read v1beta1.
        for version in ["v1", "v1beta1"] {
            let resource = format!("apiservice.apiregistration.k8s.io/{version}.metrics.k8s.io");
            assert_eq!(
                stdout.contains(&resource),
                flavour == "helm-test",
                "{flavour}: {resource}\n{stdout}"
            );
        }
    }
}

/// The chart's pod settings a platform team overrides (issue 11 §4): the PDB only with two
/// replicas or more and with `maxUnavailable` when set; the priority class; the pod's
/// securityContext without fixed ids (OpenShift's restricted SCC); probes replaced or turned
/// off; host network and DNS; the Service's port (which the APIServices follow); extra
/// volumes, mounts and containers; no RBAC objects with `rbac.create=false`; common labels;
/// a parent chart's `global` accepted; the NetworkPolicy. Each variant must also pass kube-apiserver's
/// server-side dry-run.
#[tokio::test]
async fn chart_pod_settings_render_and_apply() {
    let cp = control_plane().await;
    let variants: [(&[&str], &[&str], &[&str]); 7] = [
        (
            &[],
            &[
                "kind: PodDisruptionBudget",
                "minAvailable: 1",
                "priorityClassName: system-cluster-critical",
                "runAsUser: 65532",
                "startupProbe:",
                "path: /readyz",
            ],
            &["maxUnavailable: 1\n  selector", "kind: NetworkPolicy"],
        ),
        (
            &["--set", "replicaCount=1"],
            &["replicas: 1"],
            &["kind: PodDisruptionBudget"],
        ),
        (
            &[
                "--set",
                "podDisruptionBudget.maxUnavailable=1",
                "--set",
                "priorityClassName=",
                "--set",
                "startupProbe=null",
            ],
            &["kind: PodDisruptionBudget", "maxUnavailable: 1"],
            &["minAvailable:", "priorityClassName:", "startupProbe:"],
        ),
        (
            &[
                "--set",
                "podSecurityContext.runAsUser=null",
                "--set",
                "podSecurityContext.runAsGroup=null",
                "--set",
                "readinessProbe.periodSeconds=11",
            ],
            &[
                "runAsNonRoot: true",
                "periodSeconds: 11",
                "readOnlyRootFilesystem: true",
            ],
            &["runAsUser:", "runAsGroup:"],
        ),
        (
            &[
                "--set",
                "hostNetwork=true",
                "--set",
                "dnsPolicy=ClusterFirstWithHostNet",
                "--set",
                "service.port=8443",
                "--set",
                "extraVolumes[0].name=prometheus-ca",
                "--set",
                "extraVolumes[0].configMap.name=prometheus-ca",
                "--set",
                "extraVolumeMounts[0].name=prometheus-ca",
                "--set",
                "extraVolumeMounts[0].mountPath=/etc/prometheus-ca",
                "--set",
                "extraContainers[0].name=sidecar",
                "--set",
                "extraContainers[0].image=registry.invalid/sidecar:1",
            ],
            &[
                "hostNetwork: true",
                "dnsPolicy: ClusterFirstWithHostNet",
                "port: 8443",
                "mountPath: /etc/prometheus-ca",
                "name: prometheus-ca",
                "name: sidecar",
            ],
            &["port: 443\n"],
        ),
        (
            &[
                "--set",
                "rbac.create=false",
                "--set",
                "commonLabels.team=platform",
                "--set",
                "global.imageRegistry=registry.invalid",
            ],
            &["team: platform", "kind: ServiceAccount"],
            &["kind: ClusterRole", "kind: RoleBinding"],
        ),
        (
            &[
                "--set",
                "networkPolicy.enabled=true",
                "--set",
                "networkPolicy.apiFrom[0].ipBlock.cidr=10.0.0.0/24",
            ],
            &[
                "kind: NetworkPolicy",
                "port: https",
                "cidr: 10.0.0.0/24",
                "port: metrics",
                "kubernetes.io/metadata.name: monitoring",
            ],
            &[],
        ),
    ];
    for (args, present, absent) in variants {
        let yaml = render_with("helm", args);
        for want in present {
            assert!(
                yaml.contains(want),
                "{args:?}: {want:?} missing from\n{yaml}"
            );
        }
        for unwanted in absent {
            assert!(
                !yaml.contains(unwanted),
                "{args:?}: {unwanted:?} in\n{yaml}"
            );
        }
        let out = server_side_dry_run(&cp, &yaml).await;
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `upstreams` (issue 11 §1): the chart writes one `[[upstreams]]` table per entry with the
/// paths it mounts the CA and front-proxy Secrets at, the bridge's `check` accepts the
/// rules file it renders, and the whole passes a server-side dry-run. Without
/// `upstreamClientSecret` the chart refuses, saying why.
#[tokio::test]
async fn chart_upstreams_render_a_checked_rules_file() {
    let cp = control_plane().await;
    let set = [
        "--set",
        "upstreams[0].name=prometheus-adapter",
        "--set",
        "upstreams[0].url=https://prometheus-adapter.monitoring.svc:443",
        "--set",
        "upstreams[0].caSecret=prometheus-adapter-ca",
        "--set",
        "upstreams[0].apis={external.metrics.k8s.io/v1beta1}",
        "--set",
        "upstreams[1].name=vendor",
        "--set",
        "upstreams[1].url=https://vendor.example.svc",
        "--set",
        "upstreams[1].discoveryInterval=1m",
    ];
    let out =
        helm_template_bare(&[&["--set", "image.repository=localhost/kmb"], &set[..]].concat());
    assert!(
        !out.status.success(),
        "rendered without upstreamClientSecret"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("upstreams need upstreamClientSecret"),
        "{stderr}"
    );

    let mut args = set.to_vec();
    args.extend(["--set", "upstreamClientSecret=front-proxy-client"]);
    let yaml = render_with("helm", &args);
    let docs = documents(&yaml);
    let rules = find(&docs, "ConfigMap", "kube-metrics-bridge-rules")["data"]["rules.toml"]
        .as_str()
        .expect("rules.toml")
        .to_string();
    for want in [
        "[[upstreams]]\nname = \"prometheus-adapter\"\nurl = \"https://prometheus-adapter.monitoring.svc:443\"\napis = [\"external.metrics.k8s.io/v1beta1\"]\n",
        "ca_file = \"/var/run/secrets/kube-metrics-bridge/upstreams/prometheus-adapter/ca.crt\"",
        "client_cert_file = \"/var/run/secrets/kube-metrics-bridge/upstream-client/tls.crt\"",
        "name = \"vendor\"\nurl = \"https://vendor.example.svc\"\ndiscovery_interval = \"1m\"\nclient_cert_file",
    ] {
        assert!(rules.contains(want), "{want:?} missing from\n{rules}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, &rules).expect("rules");
    let check = Command::new(env!("CARGO_BIN_EXE_kube-metrics-bridge"))
        .arg("check")
        .arg(&path)
        .output()
        .expect("check");
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let deployment = find(&docs, "Deployment", "kube-metrics-bridge");
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(
        volumes
            .contains(r#"{"name":"upstream-client","secret":{"secretName":"front-proxy-client"}}"#),
        "{volumes}"
    );
    assert!(
        volumes.contains(
            r#"{"name":"upstream-ca-0","secret":{"secretName":"prometheus-adapter-ca"}}"#
        ),
        "{volumes}"
    );
    assert!(!volumes.contains("upstream-ca-1"), "{volumes}");
    let out = server_side_dry_run(&cp, &yaml).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The helm binary `deploy/render.sh` builds (once) and uses.
fn helm_bin() -> String {
    let out = Command::new("bash")
        .args(["deploy/render.sh", "helm-path"])
        .output()
        .expect("deploy/render.sh helm-path");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `helm template` of the chart with nothing but `args` (no image.repository from render.sh).
fn helm_template_bare(args: &[&str]) -> std::process::Output {
    Command::new(helm_bin())
        .args([
            "template",
            "kube-metrics-bridge",
            "deploy/chart/kube-metrics-bridge",
            "--namespace",
            "custom-metrics",
        ])
        .args(args)
        .output()
        .expect("running helm template")
}

/// The non-empty documents of a multi-document YAML stream, as JSON values.
fn documents(yaml: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize as _;
    yaml_serde::Deserializer::from_str(yaml)
        .map(|doc| serde_json::Value::deserialize(doc).expect("the chart renders valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The document of `kind` named `name`.
fn find<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among the rendered objects"))
}

/// What the chart refuses to render (issue 11 §4): an image repository without a registry
/// (the default has none), with a message that says how to build and push the image; and
/// rules that repeat the `[prometheus]`/`[cache]` tables the chart writes itself, or add
/// `[[backends]]`, with the value to use instead. Repositories with a registry render.
#[test]
fn chart_refuses_unpullable_images_and_tables_it_writes() {
    let refused = |args: &[&str], wants: &[&str]| {
        let out = helm_template_bare(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} rendered");
        for want in wants {
            assert!(stderr.contains(want), "{args:?}: {want:?} not in\n{stderr}");
        }
    };
    let image_help = ["hack/image.sh", "docker push", "image.repository=REGISTRY/"];
    refused(
        &[],
        &[&["image.repository is required"][..], &image_help].concat(),
    );
    for bare in ["kube-metrics-bridge", "myteam/kube-metrics-bridge"] {
        let set = format!("image.repository={bare}");
        let named = format!("image.repository \"{bare}\" names no registry");
        refused(
            &["--set", &set],
            &[&[named.as_str()][..], &image_help].concat(),
        );
    }
    for (repository, image) in [
        (
            "localhost:5000/kube-metrics-bridge",
            "image: \"localhost:5000/kube-metrics-bridge:0.1.0\"",
        ),
        (
            "registry.example.com/x/kmb",
            "image: \"registry.example.com/x/kmb:0.1.0\"",
        ),
        (
            "localhost/kube-metrics-bridge",
            "image: \"localhost/kube-metrics-bridge:0.1.0\"",
        ),
    ] {
        let out = helm_template_bare(&["--set", &format!("image.repository={repository}")]);
        let yaml = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{repository}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The bridge and the helm test pod.
        assert_eq!(yaml.matches(image).count(), 2, "{repository}:\n{yaml}");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let with_rules = |name: &str, rules: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, rules).expect("writing rules");
        format!("rules={}", path.display())
    };
    let rule = "[[rules]]\nseries_query = 'up'\nmetrics_query = 'up'\n";
    for (name, rules, wants) in [
        (
            "prometheus",
            format!("[prometheus]\nurl = \"http://other:9090\"\n{rule}"),
            &["remove the [prometheus] table", "prometheus.url"][..],
        ),
        (
            "headers",
            format!("{rule}\n[prometheus.headers]\nX-Scope-OrgID = \"a\"\n"),
            &["remove the [prometheus] table", "prometheus.*"][..],
        ),
        (
            "cache",
            format!("{rule}\n  [ cache ]\nttl = \"1s\"\n"),
            &["remove the [cache] table", "cache.ttl"][..],
        ),
        (
            "backends",
            format!("[[backends]]\nname = \"a\"\nurl = \"http://a:9090\"\n{rule}"),
            &["remove the [[backends]] tables", "prometheus.*"][..],
        ),
    ] {
        let file = with_rules(name, &rules);
        let out = helm_template_bare(&[
            "--set",
            "image.repository=localhost/kube-metrics-bridge",
            "--set-file",
            &file,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: rendered");
        for want in wants {
            assert!(stderr.contains(want), "{name}: {want:?} not in\n{stderr}");
        }
    }
    // A table whose name only starts like one of those is the user's own.
    let file = with_rules(
        "own",
        &format!("{rule}\n[resource_rules]\nwindow = \"2m\"\n# [cache] in a comment\n"),
    );
    let out = helm_template_bare(&[
        "--set",
        "image.repository=localhost/kube-metrics-bridge",
        "--set-file",
        &file,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every path of values.yaml and values.schema.json (down to what the table documents: a
/// documented `resources` covers `resources.limits.memory`) is in deploy/README.md's values
/// table, and every value the table names exists in the schema, so the table cannot rot.
#[test]
fn chart_values_table_lists_every_value() {
    let chart = std::path::Path::new("deploy/chart/kube-metrics-bridge");
    let values: serde_json::Value = yaml_serde::from_str(
        &std::fs::read_to_string(chart.join("values.yaml")).expect("values.yaml"),
    )
    .expect("values.yaml parses");
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(chart.join("values.schema.json")).expect("schema"),
    )
    .expect("schema parses");
    let readme = std::fs::read_to_string("deploy/README.md").expect("deploy/README.md");

    // The table's first column: `a.b`, `.c` (= a.c), `d`.
    let table: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| value | default |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert!(
        table.len() > 20,
        "values table not found in deploy/README.md"
    );
    let mut documented = std::collections::BTreeSet::new();
    for row in &table {
        let first = row.split('|').nth(1).unwrap_or_default();
        let mut parent = String::new();
        for name in first.split('`').skip(1).step_by(2) {
            let full = if let Some(rest) = name.strip_prefix('.') {
                format!("{parent}.{rest}")
            } else {
                name.to_string()
            };
            parent = full
                .rsplit_once('.')
                .map(|(p, _)| p.to_string())
                .unwrap_or_default();
            documented.insert(full);
        }
    }

    fn value_paths(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
        match v.as_object() {
            Some(map) if !map.is_empty() => {
                for (k, v) in map {
                    value_paths(v, &format!("{prefix}{k}."), out);
                }
            }
            _ => out.push(prefix.trim_end_matches('.').to_string()),
        }
    }
    fn schema_paths(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
        match v["properties"].as_object() {
            Some(props) => {
                for (k, v) in props {
                    schema_paths(v, &format!("{prefix}{k}."), out);
                }
            }
            None => out.push(prefix.trim_end_matches('.').to_string()),
        }
    }
    let mut paths = Vec::new();
    value_paths(&values, "", &mut paths);
    let mut in_schema = Vec::new();
    schema_paths(&schema, "", &mut in_schema);
    paths.extend(in_schema.iter().cloned());
    let covered = |path: &str| {
        let parts: Vec<&str> = path.split('.').collect();
        (1..=parts.len()).any(|n| documented.contains(&parts[..n].join(".")))
    };
    let missing: std::collections::BTreeSet<&String> = paths
        .iter()
        .filter(|p| !p.starts_with("__") && !covered(p))
        .collect();
    assert!(
        missing.is_empty(),
        "values missing from deploy/README.md's values table: {missing:?}"
    );
    let schema_has = |path: &str| {
        in_schema
            .iter()
            .any(|p| p == path || p.starts_with(&format!("{path}.")))
    };
    let stale: Vec<&String> = documented.iter().filter(|d| !schema_has(d)).collect();
    assert!(
        stale.is_empty(),
        "deploy/README.md documents values the chart does not have: {stale:?}"
    );
}

/// The chart's values for a platform team (issue 11 §4), each rendered and server-side
/// applied: `rbac.extraRules` appended to the bridge's ClusterRole; `commonAnnotations` on
/// every object next to the objects' own; `namespaceOverride`, `fullnameOverride` and
/// `nameOverride` followed by every object and every reference to the namespace (and the
/// NOTES of a server-side dry-run install); the `helm test` hook objects, and none with
/// `tests.enabled=false`.
#[tokio::test]
async fn chart_platform_values_render_and_apply() {
    let cp = control_plane().await;
    let dry_run_ok = |yaml: String, what: &'static str| {
        let cp = &cp;
        async move {
            let out = server_side_dry_run(cp, &yaml).await;
            assert!(
                out.status.success(),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };

    // rbac.extraRules: after the default resourceRules, verbatim.
    let yaml = render_with(
        "helm",
        &[
            "--set",
            "rbac.extraRules[0].apiGroups[0]=argoproj.io",
            "--set",
            "rbac.extraRules[0].resources[0]=rollouts",
            "--set",
            "rbac.extraRules[0].verbs={get,list,watch}",
            "--set",
            "rbac.extraRules[1].apiGroups[0]=apps",
            "--set",
            "rbac.extraRules[1].resources[0]=deployments",
            "--set",
            "rbac.extraRules[1].resourceNames[0]=web",
            "--set",
            "rbac.extraRules[1].verbs={get}",
        ],
    );
    let docs = documents(&yaml);
    let rules = find(&docs, "ClusterRole", "kube-metrics-bridge:resource-reader")["rules"]
        .as_array()
        .expect("rules")
        .clone();
    assert_eq!(
        rules.len(),
        6,
        "4 default resourceRules and 2 extra: {rules:#?}"
    );
    assert_eq!(
        rules[4],
        serde_json::json!({"apiGroups": ["argoproj.io"], "resources": ["rollouts"], "verbs": ["get", "list", "watch"]})
    );
    assert_eq!(
        rules[5],
        serde_json::json!({"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["web"], "verbs": ["get"]})
    );
    assert_eq!(
        rules[0]["resources"],
        serde_json::json!(["namespaces", "pods", "services", "nodes"])
    );
    dry_run_ok(yaml, "rbac.extraRules").await;

    // commonAnnotations on every object; the objects' own annotations kept (and winning).
    // helm-test: its values add the metrics.k8s.io objects (and a Prometheus Secret mount).
    let yaml = render_with(
        "helm-test",
        &[
            "--set",
            "commonAnnotations.example\\.com/owner=platform",
            "--set",
            "commonAnnotations.example\\.com/tier=common",
            "--set",
            "service.annotations.example\\.com/tier=service",
            "--set",
            "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/kmb",
        ],
    );
    let docs = documents(&yaml);
    find(&docs, "ClusterRole", "system:aggregated-metrics-reader");
    assert!(docs.len() >= 20, "{yaml}");
    for doc in &docs {
        let what = format!("{} {}", doc["kind"], doc["metadata"]["name"]);
        assert_eq!(
            doc["metadata"]["annotations"]["example.com/owner"], "platform",
            "{what}"
        );
    }
    let service = find(&docs, "Service", "kube-metrics-bridge");
    assert_eq!(
        service["metadata"]["annotations"]["example.com/tier"],
        "service"
    );
    let sa = find(&docs, "ServiceAccount", "kube-metrics-bridge");
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::1:role/kmb"
    );
    assert_eq!(sa["metadata"]["annotations"]["example.com/tier"], "common");
    let hook = find(&docs, "Pod", "kube-metrics-bridge-test");
    assert_eq!(hook["metadata"]["annotations"]["helm.sh/hook"], "test");
    // Not on the pods the Deployment makes (that is podAnnotations).
    let deployment = find(&docs, "Deployment", "kube-metrics-bridge");
    assert!(deployment["spec"]["template"]["metadata"]["annotations"].is_null());
    dry_run_ok(yaml, "commonAnnotations").await;

    // Names and namespace: nothing keeps the release's namespace or the default names.
    cp.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: team-metrics}\n")
        .await;
    let overrides = [
        "--set",
        "namespaceOverride=team-metrics",
        "--set",
        "fullnameOverride=kmb",
        "--set",
        "nameOverride=bridge",
    ];
    for mode in ["generate", "certManager"] {
        let mut args = overrides.to_vec();
        let set_mode = format!("certificates.mode={mode}");
        args.extend(["--set", &set_mode]);
        let yaml = render_with("helm", &args);
        assert!(
            !yaml.contains("custom-metrics"),
            "{mode}: the release's namespace is still named:\n{yaml}"
        );
        let docs = documents(&yaml);
        for doc in &docs {
            let meta = &doc["metadata"];
            let what = format!("{mode}: {} {}", doc["kind"], meta["name"]);
            let name = meta["name"].as_str().unwrap_or_default();
            assert!(name.starts_with("kmb") || name.starts_with("v1"), "{what}");
            if let Some(ns) = meta["namespace"].as_str() {
                let expected = if doc["kind"] == "RoleBinding" && name == "kmb:auth-reader" {
                    "kube-system"
                } else {
                    "team-metrics"
                };
                assert_eq!(ns, expected, "{what}");
            }
            let label = meta["labels"]["app.kubernetes.io/name"]
                .as_str()
                .unwrap_or_default();
            assert!(label.starts_with("bridge"), "{what}: label {label}");
            for subject in doc["subjects"].as_array().into_iter().flatten() {
                if subject["kind"] == "ServiceAccount"
                    && subject["name"] != "horizontal-pod-autoscaler"
                {
                    assert_eq!(subject["namespace"], "team-metrics", "{what}");
                }
            }
        }
        let api = find(&docs, "APIService", "v1beta2.custom.metrics.k8s.io");
        assert_eq!(
            api["spec"]["service"],
            serde_json::json!({"name": "kmb", "namespace": "team-metrics", "port": 443})
        );
        let pod = find(&docs, "Pod", "kmb-test");
        let args = pod["spec"]["containers"][0]["args"].to_string();
        assert!(
            args.contains("--namespace=team-metrics") && args.contains("--service=kmb"),
            "{args}"
        );
        if mode == "certManager" {
            assert_eq!(
                api["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
                "team-metrics/kmb-tls"
            );
            let cert = find(&docs, "Certificate", "kmb-tls");
            assert!(
                cert["spec"]["dnsNames"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|n| n == "kmb.team-metrics.svc")),
                "{cert:#}"
            );
        } else {
            // The generated serving certificate names the Service in its namespace.
            use base64::Engine as _;
            let secret = find(&docs, "Secret", "kmb-tls");
            let pem = base64::engine::general_purpose::STANDARD
                .decode(secret["data"]["tls.crt"].as_str().unwrap_or_default())
                .expect("tls.crt is base64");
            let text = String::from_utf8_lossy(&pem);
            let der = base64::engine::general_purpose::STANDARD
                .decode(
                    text.lines()
                        .filter(|l| !l.starts_with("-----"))
                        .collect::<String>(),
                )
                .expect("PEM");
            let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("certificate");
            let sans = format!("{:?}", cert.subject_alternative_name());
            assert!(sans.contains("kmb.team-metrics.svc"), "{sans}");
            let applied = dry_run_ok(yaml, "namespaceOverride").await;
            assert!(
                applied.contains("deployment.apps/kmb serverside-applied"),
                "{applied}"
            );
        }
    }
    // NOTES as `helm install` prints them, against the control plane.
    let out = Command::new(helm_bin())
        .args([
            "install",
            "kube-metrics-bridge",
            "deploy/chart/kube-metrics-bridge",
            "--namespace",
            "custom-metrics",
            "--dry-run=server",
            "--kubeconfig",
        ])
        .arg(cp.admin_kubeconfig())
        .args(overrides)
        .args(["--set", "image.repository=localhost/kube-metrics-bridge"])
        .output()
        .expect("helm install --dry-run=server");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let notes = stdout.split("NOTES:").nth(1).unwrap_or_default();
    for want in [
        "is installed in namespace team-metrics",
        "http://kmb.team-metrics.svc:9464/metrics",
        "helm test kube-metrics-bridge -n custom-metrics --logs",
    ] {
        assert!(notes.contains(want), "{want:?} not in NOTES:\n{notes}");
    }

    // The hook objects, and none without tests.
    let yaml = render("helm");
    let docs = documents(&yaml);
    for (kind, name) in [
        ("ServiceAccount", "kube-metrics-bridge-test"),
        ("ClusterRole", "kube-metrics-bridge:test"),
        ("ClusterRoleBinding", "kube-metrics-bridge:test"),
        ("Role", "kube-metrics-bridge:test"),
        ("RoleBinding", "kube-metrics-bridge:test"),
        ("Pod", "kube-metrics-bridge-test"),
    ] {
        let doc = find(&docs, kind, name);
        assert_eq!(
            doc["metadata"]["annotations"]["helm.sh/hook"], "test",
            "{kind} {name}"
        );
        // The test pod must not become an endpoint of the bridge's Service.
        assert_ne!(
            doc["metadata"]["labels"]["app.kubernetes.io/name"], "kube-metrics-bridge",
            "{kind} {name}"
        );
    }
    let pod = find(&docs, "Pod", "kube-metrics-bridge-test");
    assert_eq!(pod["spec"]["containers"][0]["args"][0], "doctor");
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        find(&docs, "Deployment", "kube-metrics-bridge")["spec"]["template"]["spec"]["containers"]
            [0]["image"]
    );
    let applied = dry_run_ok(yaml, "helm test hook").await;
    assert!(
        applied.contains("pod/kube-metrics-bridge-test serverside-applied"),
        "{applied}"
    );
    let yaml = render_with("helm", &["--set", "tests.enabled=false"]);
    assert!(!yaml.contains("helm.sh/hook"), "{yaml}");
    let yaml = render_with("helm", &["--set", "rbac.create=false"]);
    let docs = documents(&yaml);
    find(&docs, "ServiceAccount", "kube-metrics-bridge-test");
    assert!(!docs
        .iter()
        .any(|d| d["metadata"]["name"] == "kube-metrics-bridge:test"));
}

/// The ServiceMonitor and PrometheusRule against prometheus-operator's real CRDs (v0.94.1,
/// from its Go module through `integration/prometheus-operator/crds.sh`): absent by default,
/// server-side applied with their values set, the ServiceMonitor selecting the bridge's
/// Service on its metrics port, the alerts valid for `promtool check rules`, and every
/// `kube_metrics_bridge_*` name they use exported by a running bridge.
#[tokio::test]
async fn chart_monitoring_objects_apply_with_prometheus_operator_crds() {
    let crds = common::cached_build(
        "KMB_PROMETHEUS_OPERATOR_CRDS",
        "integration/prometheus-operator/crds.sh",
        "prometheus-operator's CRDs",
    )
    .await
    .join("crds");
    let default = render("helm");
    assert!(
        !default.contains("monitoring.coreos.com"),
        "ServiceMonitor or PrometheusRule by default"
    );
    let cp = control_plane().await;
    let crds_arg = crds.display().to_string();
    let out = cp
        .kubectl_as(
            cp.admin_kubeconfig(),
            &["apply", "--server-side", "-f", &crds_arg],
            None,
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cp.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com",
    ])
    .await;
    cp.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: monitoring}\n")
        .await;

    let yaml = render_with(
        "helm",
        &[
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "serviceMonitor.namespace=monitoring",
            "--set",
            "serviceMonitor.labels.release=kube-prometheus-stack",
            "--set",
            "serviceMonitor.interval=15s",
            "--set",
            "serviceMonitor.relabelings[0].targetLabel=cluster",
            "--set",
            "serviceMonitor.relabelings[0].replacement=prod-1",
            "--set",
            "serviceMonitor.metricRelabelings[0].action=drop",
            "--set",
            "serviceMonitor.metricRelabelings[0].sourceLabels[0]=__name__",
            "--set",
            "serviceMonitor.metricRelabelings[0].regex=kube_metrics_bridge_runtime_.*",
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "prometheusRule.labels.release=kube-prometheus-stack",
            "--set",
            "prometheusRule.alertLabels.team=platform",
        ],
    );
    let out = server_side_dry_run(&cp, &yaml).await;
    let applied = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for object in [
        "servicemonitor.monitoring.coreos.com/kube-metrics-bridge serverside-applied",
        "prometheusrule.monitoring.coreos.com/kube-metrics-bridge serverside-applied",
    ] {
        assert!(applied.contains(object), "{object} not in\n{applied}");
    }

    let docs = documents(&yaml);
    let monitor = find(&docs, "ServiceMonitor", "kube-metrics-bridge");
    assert_eq!(monitor["metadata"]["namespace"], "monitoring");
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        serde_json::json!(["custom-metrics"])
    );
    let service = find(&docs, "Service", "kube-metrics-bridge");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "the Service's label {k}"
        );
    }
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["interval"], "15s");
    assert_eq!(endpoint["relabelings"][0]["targetLabel"], "cluster");
    assert_eq!(endpoint["metricRelabelings"][0]["action"], "drop");
    let port = service["spec"]["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == endpoint["port"]))
        .expect("the ServiceMonitor's port is a port of the Service");
    assert_eq!(port["port"], 9464);

    // The alerts: valid rules, our job's selector, real metric names.
    let rule = find(&docs, "PrometheusRule", "kube-metrics-bridge");
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let groups = serde_json::json!({"groups": rule["spec"]["groups"]});
    let alerts = groups["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .clone();
    assert!(alerts.len() >= 10, "{alerts:#?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("alerts.yaml");
    std::fs::write(&file, yaml_serde::to_string(&groups).expect("YAML")).expect("writing");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool (Debian's prometheus package)");
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let names_re = regex::Regex::new(r"kube_metrics_bridge_[a-z_]+").expect("regex");
    let mut used = std::collections::BTreeSet::new();
    for alert in &alerts {
        let expr = alert["expr"].as_str().expect("expr");
        let name = alert["alert"].as_str().unwrap_or_default();
        assert!(
            expr.contains(r#"job="kube-metrics-bridge",namespace="custom-metrics""#),
            "{name}: {expr}"
        );
        assert_eq!(alert["labels"]["team"], "platform", "{name}");
        assert!(alert["labels"]["severity"].is_string(), "{name}");
        used.extend(names_re.find_iter(expr).map(|m| m.as_str().to_string()));
    }
    assert!(used.len() >= 8, "{used:?}");

    // The names src/metrics.rs registers, with their sample names by type. A family shows in
    // a scrape only once it has a series, so a running bridge cannot list them all; it checks
    // this reading of the source instead (every family it does export must be found here).
    let source = std::fs::read_to_string("src/metrics.rs").expect("src/metrics.rs");
    let fields: std::collections::BTreeMap<String, String> =
        regex::Regex::new(r"(?m)^\s*pub ([a-z_]+): ([A-Za-z0-9_<>, ]+),")
            .expect("regex")
            .captures_iter(&source)
            .map(|c| (c[1].to_string(), c[2].to_string()))
            .collect();
    let mut registered = std::collections::BTreeSet::new();
    let mut families = std::collections::BTreeSet::new();
    let register = regex::Regex::new(
        r#"register\(\s*"([a-z_]+)",\s*"(?:[^"\\]|\\.)*",\s*m\.([a-z_]+)\.clone\(\)"#,
    )
    .expect("regex");
    for c in register.captures_iter(&source) {
        let name = format!("kube_metrics_bridge_{}", &c[1]);
        let ty = fields.get(&c[2]).map(String::as_str).unwrap_or_default();
        let suffixes: &[&str] = if ty.contains("Histogram") {
            &["_count", "_sum", "_bucket"]
        } else if ty.contains("Counter") {
            &["_total"]
        } else {
            &[""]
        };
        registered.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        families.insert(name);
    }
    assert!(families.len() >= 20, "{families:?}");
    let unknown: Vec<&String> = used.iter().filter(|n| !registered.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "alerts use names src/metrics.rs does not register: {unknown:?}\nregistered: {registered:?}"
    );

    let exporter = Exporter::start().await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    let bridge = common::bridge::Bridge::start(&format!(
        "[prometheus]\nurl = \"{}\"\n[[rules]]\nseries_query = 'http_requests_total{{namespace!=\"\",pod!=\"\"}}'\n\
         resources.overrides = {{ namespace = {{ resource = \"namespace\" }}, pod = {{ resource = \"pod\" }} }}\n\
         metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (<<.GroupBy>>)'\n",
        prometheus.url()
    ))
    .await;
    let text = common::http_client()
        .get(format!("http://127.0.0.1:{}/metrics", bridge.metrics_port))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let mut exported = 0;
    for line in text.lines() {
        let mut parts = line.split(' ');
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        {
            let sample = match kind {
                "counter" => format!("{name}_total"),
                "histogram" => format!("{name}_count"),
                _ => name.to_string(),
            };
            assert!(
                registered.contains(&sample),
                "{sample} ({kind}) is exported but not found in src/metrics.rs by this test"
            );
            exported += 1;
        }
    }
    assert!(exported >= 10, "{text}");
}

/// `doctor` as the `helm test` pod runs it: the rendered pod's own arguments, in-cluster
/// config (a private mount namespace whose /var/run/secrets/kubernetes.io/serviceaccount holds
/// `token`, KUBERNETES_SERVICE_HOST/PORT set, no kubeconfig anywhere), and `rules` at the
/// path the pod mounts its ConfigMap. Needs root (unshare, mount), as CI has.
fn doctor_in_cluster(
    cp: &ControlPlane,
    token: &str,
    args: &[String],
    rules: &str,
) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sa = dir.path().join("serviceaccount");
    std::fs::create_dir(&sa).expect("mkdir");
    std::fs::write(sa.join("token"), token.trim()).expect("token");
    std::fs::copy(cp.ca_pem_path(), sa.join("ca.crt")).expect("ca.crt");
    std::fs::write(sa.join("namespace"), "custom-metrics").expect("namespace");
    let rules_dir = dir.path().join("rules");
    std::fs::create_dir(&rules_dir).expect("mkdir");
    std::fs::write(rules_dir.join("rules.toml"), rules).expect("rules");
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("mkdir");
    let port = cp
        .server_url()
        .rsplit(':')
        .next()
        .expect("a port in the server URL")
        .to_string();
    // /var/run is /run here: a tmpfs over it, seen by this process only, takes the
    // ServiceAccount directory; the ConfigMap's mount point gets the rules.
    let script = r#"set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/secrets/kubernetes.io /etc/kube-metrics-bridge
cp -r "$1" /run/secrets/kubernetes.io/serviceaccount
mount --bind "$2" /etc/kube-metrics-bridge
shift 2
exec "$@""#;
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "doctor-in-cluster",
        ])
        .arg(&sa)
        .arg(&rules_dir)
        .arg(env!("CARGO_BIN_EXE_kube-metrics-bridge"))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", &home)
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", &port)
        .output()
        .expect("unshare (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("doctor-in-cluster:") && !stderr.contains("mount:"),
        "setting up the pod's view failed (this test needs root): {stderr}"
    );
    (
        out.status.code().unwrap_or(-1),
        format!("{}{stderr}", String::from_utf8_lossy(&out.stdout)),
    )
}

/// The `helm test` hook (issue 11 §4) does its job: against an installation that works (the
/// chart applied for real, the bridge on the host serving the chart's generated certificate
/// behind an ExternalName Service, so kube-apiserver marks the APIServices Available), the
/// hook pod's `doctor` command, run with the pod's arguments, in-cluster config and a token
/// of the hook's ServiceAccount, passes: it reaches the APIs through kube-apiserver with
/// nothing but the hook's RBAC. Without the hook's ClusterRoleBinding it fails, saying so.
/// (No kubelet runs here, so the pod itself cannot.)
#[tokio::test]
async fn chart_helm_test_hook_runs_doctor_in_cluster() {
    let exporter = Exporter::start().await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    prometheus
        .wait_for_series("http_requests_total", Duration::from_secs(30))
        .await;
    let cp = control_plane().await;
    let url = format!("prometheus.url={}", prometheus.url());
    let yaml = render_with("helm", &["--set", &url]);
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
    let docs = documents(&yaml);

    // The bridge, as the chart's ServiceAccount, with the chart's certificate and rules.
    let dir = tempfile::tempdir().expect("tempdir");
    let files =
        common::chart::tls_files(find(&docs, "Secret", "kube-metrics-bridge-tls"), dir.path());
    let rules = find(&docs, "ConfigMap", "kube-metrics-bridge-rules")["data"]["rules.toml"]
        .as_str()
        .expect("rules.toml")
        .to_string();
    let bridge = common::chart::start_bridge(&cp, &rules, &files).await;
    let patch = format!(r#"{{"spec":{{"service":{{"port":{}}}}}}}"#, bridge.port);
    for name in ControlPlane::BRIDGE_APISERVICES {
        cp.kubectl_ok(&["patch", "apiservice", name, "--type", "merge", "-p", &patch])
            .await;
    }
    cp.wait_apiservices_available().await;

    let pod = find(&docs, "Pod", "kube-metrics-bridge-test");
    assert_eq!(
        pod["spec"]["serviceAccountName"],
        "kube-metrics-bridge-test"
    );
    let args: Vec<String> = pod["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string args").to_string())
        .collect();
    let token = cp
        .kubectl_ok(&[
            "-n",
            "custom-metrics",
            "create",
            "token",
            "kube-metrics-bridge-test",
        ])
        .await;
    let (code, report) = doctor_in_cluster(&cp, &token, &args, &rules);
    eprintln!("doctor {args:?} in cluster:\n{report}");
    assert_eq!(code, 0, "{report}\nbridge log:\n{}", bridge.log());
    for line in [
        "ok    APIService v1beta2.custom.metrics.k8s.io is Available",
        "ok    APIService v1beta1.external.metrics.k8s.io is Available",
        "ok    GET /apis/custom.metrics.k8s.io/v1beta2 through kube-apiserver: ",
        "ok    GET /apis/custom.metrics.k8s.io/v1beta1 through kube-apiserver: ",
        "ok    GET /apis/external.metrics.k8s.io/v1beta1 through kube-apiserver: ",
        "ok    GET /apis/custom.metrics.k8s.io/v1beta2/namespaces/custom-metrics/",
        "ok    system:serviceaccount:custom-metrics:kube-metrics-bridge may create TokenReviews",
        "ok    the HPA controller may read custom metrics",
        "ok    rules /etc/kube-metrics-bridge/rules.toml",
    ] {
        assert!(has(&report, line), "{line:?} missing:\n{report}");
    }
    assert!(
        report.contains(&format!(
            "ok    Prometheus at {} answers queries",
            prometheus.url()
        )),
        "{report}"
    );
    // Skipped on purpose: the test may not read the Secret that holds the serving key.
    assert!(!report.contains("serving certificate"), "{report}");

    // Its RBAC is what lets it work.
    cp.kubectl_ok(&["delete", "clusterrolebinding", "kube-metrics-bridge:test"])
        .await;
    let (code, report) = doctor_in_cluster(&cp, &token, &args, &rules);
    assert_eq!(code, 1, "{report}");
    assert!(
        has(
            &report,
            "FAIL  APIService v1beta2.custom.metrics.k8s.io: cannot read it"
        ) && report.contains("forbidden"),
        "{report}"
    );
    drop(bridge);
}

/// Sends SIGTERM to a process group when dropped.
struct KillGroup(u32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if self.0 > 1 {
            // bash's builtin, not procps' `kill`: Debian 12's procps-ng 4.0.2 turns
            // `kill -TERM -<pgid>` into kill(-1, SIGTERM), which signals every process
            // on the machine.
            let _ = Command::new("bash")
                .args(["-c", "kill -s TERM -- \"-$1\"", "kill-group"])
                .arg(self.0.to_string())
                .status();
        }
    }
}

fn doctor(cp: &ControlPlane, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kube-metrics-bridge"))
        .arg("doctor")
        .arg("--kubeconfig")
        .arg(cp.admin_kubeconfig())
        .args(extra)
        .output()
        .expect("running doctor");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn has(report: &str, line_start: &str) -> bool {
    report.lines().any(|l| l.starts_with(line_start))
}

#[tokio::test]
async fn doctor_explains_a_broken_installation() {
    let exporter = Exporter::start().await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    prometheus
        .wait_for_series("queue_messages_ready", Duration::from_secs(30))
        .await;
    let cp = control_plane().await;

    // Nothing installed; Prometheus pointed at a closed port.
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let (code, report) = doctor(
        &cp,
        &["--config", "rules/demo.toml", "--prometheus-url", &closed],
    );
    assert_eq!(code, 1, "{report}");
    assert!(
        has(
            &report,
            "FAIL  APIService v1beta2.custom.metrics.k8s.io: missing"
        ),
        "{report}"
    );
    assert!(
        has(
            &report,
            "FAIL  Service custom-metrics/kube-metrics-bridge: missing"
        ),
        "{report}"
    );
    assert!(
        has(&report, "FAIL  system:serviceaccount:custom-metrics:kube-metrics-bridge may create TokenReviews: denied"),
        "{report}"
    );
    assert!(
        has(&report, "ok    the HPA controller may read custom metrics"),
        "built-in RBAC:\n{report}"
    );
    assert!(
        has(
            &report,
            "warn  APIService v1beta1.metrics.k8s.io: missing: nothing serves kubectl top"
        ),
        "{report}"
    );
    assert!(
        has(
            &report,
            "ok    APIService v1.metrics.k8s.io is not registered (kubectl and HPAs use v1beta1)"
        ),
        "{report}"
    );
    assert!(
        report.contains(&format!("FAIL  Prometheus at {closed}")),
        "{report}"
    );

    // Install what deploy/ ships (no controller manager runs, so no pod becomes ready).
    let out = cp
        .kubectl_as(
            cp.admin_kubeconfig(),
            &["apply", "--server-side", "-f", "-"],
            Some(&render("kustomize")),
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, report) = doctor(
        &cp,
        &[
            "--config",
            "rules/demo.toml",
            "--prometheus-url",
            &prometheus.url(),
        ],
    );
    assert_eq!(code, 1, "{report}");
    for fixed in [
        "ok    system:serviceaccount:custom-metrics:kube-metrics-bridge may create TokenReviews",
        "ok    system:serviceaccount:custom-metrics:kube-metrics-bridge may read the authentication ConfigMap",
        // From the registry discovery builds, not a fixed table.
        "ok    system:serviceaccount:custom-metrics:kube-metrics-bridge may list pods (its rules tie metrics to them)",
        "ok    system:serviceaccount:custom-metrics:kube-metrics-bridge may watch pods (its rules tie metrics to them)",
        "ok    Service custom-metrics/kube-metrics-bridge exists",
        "ok    rules rules/demo.toml",
    ] {
        assert!(has(&report, fixed), "{fixed:?} missing:\n{report}");
    }
    assert!(
        has(
            &report,
            "FAIL  Service custom-metrics/kube-metrics-bridge endpoints: no ready endpoint"
        ),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "ok    Prometheus at {} answers queries",
            prometheus.url()
        )),
        "{report}"
    );
    assert!(
        report.contains("external metric(s) (queue_messages_ready)"),
        "{report}"
    );
    // The APIServices exist now but nothing answers behind them.
    assert!(
        !has(
            &report,
            "FAIL  APIService v1beta2.custom.metrics.k8s.io: missing"
        ),
        "{report}"
    );
    assert!(
        report.contains("APIService v1beta2.custom.metrics.k8s.io"),
        "{report}"
    );
    assert!(
        has(&report, "ok    serving certificate for APIService v1beta2.custom.metrics.k8s.io is trusted by its caBundle"),
        "{report}"
    );
    // A caBundle that did not sign the serving certificate is caught and explained.
    let other_ca = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(cp.ca_pem_path()).expect("cluster CA"));
    cp.kubectl_ok(&[
        "patch",
        "apiservice",
        "v1beta1.external.metrics.k8s.io",
        "--type",
        "merge",
        "-p",
        &format!(r#"{{"spec":{{"caBundle":"{other_ca}"}}}}"#),
    ])
    .await;
    let (_, report) = doctor(&cp, &[]);
    assert!(
        has(
            &report,
            "FAIL  serving certificate for APIService v1beta1.external.metrics.k8s.io"
        ),
        "{report}"
    );
    assert!(
        has(
            &report,
            "ok    serving certificate for APIService v1beta1.custom.metrics.k8s.io"
        ),
        "{report}"
    );

    // metrics.k8s.io owned by another server (metrics-server, not running here), while the
    // rules have [resource_rules] (the shipped example): doctor says which owns it and that
    // ours are unused.
    cp.apply(
        "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {name: v1beta1.metrics.k8s.io}\n\
         spec: {group: metrics.k8s.io, version: v1beta1, groupPriorityMinimum: 100, versionPriority: 100,\n\
         insecureSkipTLSVerify: true, service: {name: metrics-server, namespace: kube-system}}\n",
    )
    .await;
    let rules = "rules/resource-metrics.toml";
    let (_, report) = doctor(
        &cp,
        &["--config", rules, "--prometheus-url", &prometheus.url()],
    );
    assert!(
        has(
            &report,
            "warn  APIService v1beta1.metrics.k8s.io: owned by Service kube-system/metrics-server, so the rules' [resource_rules] are not in use"
        ),
        "{report}"
    );
    // The resource queries run once each; the demo exporter has no cAdvisor series.
    assert!(
        has(&report, "warn  resource_rules.cpu.container_query: "),
        "{report}"
    );
    assert!(
        has(&report, "warn  resource_rules.memory.node_query: "),
        "{report}"
    );
    let (_, report) = doctor(&cp, &[]);
    assert!(
        has(
            &report,
            "warn  APIService v1beta1.metrics.k8s.io: served by Service kube-system/metrics-server, which is not Available"
        ),
        "{report}"
    );

    // v1 given to the bridge while v1beta1 stays with metrics-server: kubectl and HPAs would
    // read different servers.
    cp.apply(
        "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {name: v1.metrics.k8s.io}\n\
         spec: {group: metrics.k8s.io, version: v1, groupPriorityMinimum: 100, versionPriority: 200,\n\
         insecureSkipTLSVerify: true, service: {name: kube-metrics-bridge, namespace: custom-metrics}}\n",
    )
    .await;
    let (_, report) = doctor(&cp, &["--config", rules]);
    assert!(
        has(
            &report,
            "warn  APIServices of metrics.k8s.io: v1beta1.metrics.k8s.io is served by Service kube-system/metrics-server but v1.metrics.k8s.io by Service custom-metrics/kube-metrics-bridge"
        ),
        "{report}"
    );
}

/// The hack/ workflow against a real control plane: develop.sh registers a bridge running on
/// this host, test.sh finds it healthy (and explains a failure), deploy.sh installs the
/// shipped manifests and remove.sh takes exactly them away again.
#[tokio::test]
async fn hack_scripts_work_against_a_control_plane() {
    let exporter = Exporter::start().await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    prometheus
        .wait_for_series("http_requests_total", Duration::from_secs(30))
        .await;
    let cp = ControlPlane::start_with(Options {
        skip_controller_manager: true,
        ..Options::default()
    })
    .await;
    let cache = tempfile::tempdir().expect("tempdir");
    let port = common::free_port().to_string();
    let mut develop = tokio::process::Command::new("bash")
        .arg("hack/develop.sh")
        .env("KUBECONFIG", cp.admin_kubeconfig())
        .env("KMB_DEV_PORT", &port)
        .env("KMB_PROMETHEUS_URL", prometheus.url())
        .env("KMB_BRIDGE_BIN", env!("CARGO_BIN_EXE_kube-metrics-bridge"))
        .env("XDG_CACHE_HOME", cache.path())
        .stdout(std::fs::File::create(cache.path().join("develop.log")).expect("log"))
        .stderr(std::fs::File::create(cache.path().join("develop.err")).expect("log"))
        .kill_on_drop(true)
        .process_group(0)
        .spawn()
        .expect("hack/develop.sh");
    // Whatever happens, the dev loop's whole process group goes when the test ends.
    let _group = KillGroup(develop.id().unwrap_or(0));
    let smoke = |args: Vec<String>| {
        let kubeconfig = cp.admin_kubeconfig().to_path_buf();
        async move {
            let out = tokio::process::Command::new("bash")
                .arg("hack/test.sh")
                .args(&args)
                .env("KUBECONFIG", kubeconfig)
                .output()
                .await
                .expect("hack/test.sh");
            (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let report = loop {
        let (ok, out) = smoke(vec!["namespace_active_sessions".into(), "demo".into()]).await;
        if ok {
            break out;
        }
        if tokio::time::Instant::now() > deadline {
            let log = |f: &str| std::fs::read_to_string(cache.path().join(f)).unwrap_or_default();
            panic!(
                "hack/test.sh never passed; last output:\n{out}\ndevelop.sh:\n{}\n{}",
                log("develop.log"),
                log("develop.err")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert!(
        report.contains("ok: APIService v1beta2.custom.metrics.k8s.io is Available"),
        "{report}"
    );
    assert!(report.contains("\"kind\":\"MetricValueList\""), "{report}");
    let (ok, out) = smoke(vec!["namespace_active_sessions".into(), "default".into()]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("no data"),
        "a clear message for a metric without data: {out}"
    );
    // Stop the dev loop (bash and the bridge it runs) before installing for real.
    drop(_group);
    let _ = develop.kill().await;

    let run = |script: &'static str| {
        let kubeconfig = cp.admin_kubeconfig().to_path_buf();
        async move {
            let out = tokio::process::Command::new("bash")
                .arg(script)
                .env("KUBECONFIG", kubeconfig)
                .output()
                .await
                .expect(script);
            assert!(
                out.status.success(),
                "{script}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    for name in [
        "v1beta1.custom.metrics.k8s.io",
        "v1beta2.custom.metrics.k8s.io",
        "v1beta1.external.metrics.k8s.io",
    ] {
        cp.kubectl_ok(&["delete", "apiservice", name]).await;
    }
    cp.kubectl_ok(&[
        "delete",
        "service",
        "kube-metrics-bridge",
        "-n",
        "custom-metrics",
    ])
    .await;
    run("hack/deploy.sh").await;
    let (code, deployment) = cp
        .get("/apis/apps/v1/namespaces/custom-metrics/deployments/kube-metrics-bridge")
        .await;
    assert_eq!(code, 200, "{deployment}");
    let (code, secret) = cp
        .get("/api/v1/namespaces/custom-metrics/secrets/kube-metrics-bridge-tls")
        .await;
    assert_eq!(code, 200, "{secret}");
    let (_, api) = cp
        .get("/apis/apiregistration.k8s.io/v1/apiservices/v1beta2.custom.metrics.k8s.io")
        .await;
    let ca = base64::engine::general_purpose::STANDARD.encode(
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["ca.crt"].as_str().unwrap_or(""))
            .expect("ca.crt"),
    );
    assert_eq!(
        api["spec"]["caBundle"].as_str(),
        Some(ca.as_str()),
        "the caBundle is the Secret's CA"
    );
    run("hack/remove.sh").await;
    for path in [
        "/apis/apps/v1/namespaces/custom-metrics/deployments/kube-metrics-bridge",
        "/apis/apiregistration.k8s.io/v1/apiservices/v1beta2.custom.metrics.k8s.io",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/kube-metrics-bridge:system:auth-delegator",
    ] {
        assert_eq!(cp.get(path).await.0, 404, "{path} should be gone");
    }
    // Not something deploy.sh created: left alone.
    assert_eq!(cp.get("/api/v1/namespaces/kube-system").await.0, 200);
}

/// The pid of a `kube-metrics-bridge` process whose command line has `--secure-port PORT`.
fn bridge_on_port(port: &str) -> Option<u32> {
    let needle = format!("--secure-port\0{port}\0");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.contains("kube-metrics-bridge\0serve\0") && cmdline.contains(&needle))
                .then_some(pid)
        })
}

/// develop.sh's loop for real: it builds the bridge from a copy of this checkout, rebuilds and
/// restarts it when a source file changes, and keeps the running one when a build fails.
#[tokio::test]
async fn develop_sh_rebuilds_and_restarts_on_change() {
    let exporter = Exporter::start().await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    let cp = ControlPlane::start_with(Options {
        skip_controller_manager: true,
        ..Options::default()
    })
    .await;
    // A fixed place, copied with mtimes kept, so cargo finds its earlier build of it fresh.
    let src = std::env::temp_dir().join("kube-metrics-bridge-develop-loop");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src).expect("mkdir");
    let copied = Command::new("cp")
        .args([
            "-a",
            "Cargo.toml",
            "Cargo.lock",
            "src",
            "rules",
            "hack",
            "integration",
            // convert --helm-values embeds the chart's values.yaml.
            "deploy",
        ])
        .arg(&src)
        .status()
        .expect("cp");
    assert!(copied.success());
    // Its own target dir: the copy's binary must not replace the one the other tests run.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("kube-metrics-bridge-develop-loop-target");
    let logs = tempfile::tempdir().expect("tempdir");
    let port = common::free_port().to_string();
    let log_path = logs.path().join("develop.log");
    let develop = tokio::process::Command::new("bash")
        .arg("hack/develop.sh")
        .current_dir(&src)
        .env("KUBECONFIG", cp.admin_kubeconfig())
        .env("KMB_DEV_PORT", &port)
        .env("KMB_PROMETHEUS_URL", prometheus.url())
        .env("XDG_CACHE_HOME", logs.path())
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("KMB_BRIDGE_BIN")
        .stdout(std::fs::File::create(&log_path).expect("log"))
        .stderr(std::fs::File::create(logs.path().join("develop.err")).expect("log"))
        .kill_on_drop(true)
        .process_group(0)
        .spawn()
        .expect("hack/develop.sh");
    let _group = KillGroup(develop.id().unwrap_or(0));
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let served = || async {
        let out = cp
            .kubectl(&["get", "--raw", "/apis/custom.metrics.k8s.io/v1beta2"])
            .await;
        out.status.success()
    };
    // On a timeout, show what develop.sh said.
    let until = |what: &'static str, secs: u64| {
        let err = logs.path().join("develop.err");
        move |found: bool| {
            let tail = std::fs::read_to_string(&err).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(30).collect();
            assert!(
                found,
                "no {what} within {secs}s; develop.sh stderr (last lines first):\n{}",
                tail.join("\n")
            );
        }
    };

    let check = until("bridge built, started and registered", 600);
    let first = common::poll(Duration::from_secs(600), || async {
        let pid = bridge_on_port(&port)?;
        (log().contains("== running") && served().await).then_some(pid)
    })
    .await;
    check(first.is_some());
    let first = first.unwrap_or_default();
    let exe = std::fs::read_link(format!("/proc/{first}/exe")).expect("exe");
    let built = std::fs::metadata(&exe)
        .and_then(|m| m.modified())
        .expect("mtime");

    // A change to the source: rebuilt, and the new binary restarted in place of the old.
    let main_rs = src.join("src/main.rs");
    let original = std::fs::read_to_string(&main_rs).expect("main.rs");
    std::fs::write(
        &main_rs,
        format!("{original}\n// changed by the develop loop test\n"),
    )
    .expect("editing main.rs");
    let check = until("rebuilt bridge in place of the first one", 600);
    let second = common::poll(Duration::from_secs(600), || async {
        let pid = bridge_on_port(&port).filter(|pid| *pid != first)?;
        served().await.then_some(pid)
    })
    .await;
    check(second.is_some());
    let second = second.unwrap_or_default();
    assert!(
        log().contains("== change detected: rebuilding"),
        "{}",
        log()
    );
    let rebuilt = std::fs::metadata(&exe)
        .and_then(|m| m.modified())
        .expect("mtime");
    assert!(rebuilt > built, "the binary was not rebuilt");

    // A change that does not compile: the running bridge stays and keeps answering.
    std::fs::write(&main_rs, format!("{original}\nfn broken(\n")).expect("editing main.rs");
    let check = until("report of the failed build", 300);
    let reported = common::poll(Duration::from_secs(300), || async {
        log()
            .contains("== build failed; the previous binary keeps running")
            .then_some(())
    })
    .await;
    check(reported.is_some());
    assert_eq!(bridge_on_port(&port), Some(second), "{}", log());
    assert!(served().await, "the previous bridge stopped answering");
    drop(_group);
    let _ = std::fs::remove_dir_all(&src);
}
