//! The chart's rendered objects used by a bridge on the host (no kubelet runs its pods): its
//! generated certificate written out, and its Service turned into an ExternalName to the
//! host's port, so kube-apiserver reaches the bridge as it would reach the pods.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

use super::controlplane::ControlPlane;

/// The keys of the chart's generated TLS Secret (`tls.crt`, `tls.key`, `ca.crt`) written as
/// files in `dir`, in that order.
pub fn tls_files(secret: &Value, dir: &Path) -> Vec<PathBuf> {
    ["tls.crt", "tls.key", "ca.crt"]
        .iter()
        .map(|key| {
            let path = dir.join(format!("chart-{key}"));
            let pem = base64::engine::general_purpose::STANDARD
                .decode(secret["data"][*key].as_str().unwrap_or_default())
                .unwrap_or_else(|e| panic!("{key} of the chart's Secret: {e}"));
            std::fs::write(&path, pem).expect("writing a certificate file");
            path
        })
        .collect()
}

/// Replaces Service `namespace/name` with an ExternalName to 127.0.0.1 on `port`.
pub async fn service_to_host(cp: &ControlPlane, namespace: &str, name: &str, port: u16) {
    cp.kubectl_ok(&["-n", namespace, "delete", "service", name])
        .await;
    cp.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec: {{type: ExternalName, externalName: 127.0.0.1, ports: [{{name: https, port: {port}}}]}}\n"
    ))
    .await;
}

/// The bridge on the host as the chart's pod would run: the chart's ServiceAccount, the
/// certificate of [`tls_files`] and `rules`, behind the chart's Service (pointed here).
pub async fn start_bridge(
    cp: &ControlPlane,
    rules: &str,
    files: &[PathBuf],
) -> super::bridge::Bridge {
    let (crt, key) = (
        files[0].display().to_string(),
        files[1].display().to_string(),
    );
    let bridge = super::bridge::Bridge::start_for_cluster(
        rules,
        &super::hpa::bridge_kubeconfig(cp),
        super::hpa::SERVICE_DNS,
        &["--tls-cert-file", &crt, "--tls-private-key-file", &key],
    )
    .await;
    service_to_host(cp, "custom-metrics", "kube-metrics-bridge", bridge.port).await;
    bridge
}
