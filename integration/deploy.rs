//! What deploy/ ships is accepted by a real kube-apiserver (server-side dry-run of the
//! kustomize base and the Helm chart), and `doctor` explains a broken installation against
//! the same control plane.

mod common;

use std::process::Command;
use std::time::Duration;

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
}
