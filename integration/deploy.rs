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
