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
    let out = Command::new("bash")
        .arg("deploy/render.sh")
        .arg(flavour)
        .output()
        .expect("running deploy/render.sh");
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

#[tokio::test]
async fn shipped_manifests_pass_server_side_dry_run() {
    let cp = control_plane().await;
    for flavour in ["kustomize", "helm", "helm-test"] {
        let yaml = render(flavour);
        let out = cp
            .kubectl_as(
                cp.admin_kubeconfig(),
                &["apply", "--server-side", "--dry-run=server", "-f", "-"],
                Some(&yaml),
            )
            .await;
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
    }
}

/// Sends SIGTERM to a process group when dropped.
struct KillGroup(u32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if self.0 != 0 {
            let _ = Command::new("kill")
                .args(["-TERM", &format!("-{}", self.0)])
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
        "ok    system:serviceaccount:custom-metrics:kube-metrics-bridge may list and watch pods",
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
