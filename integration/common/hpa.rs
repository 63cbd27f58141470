//! The bridge behind a real control plane's aggregator, for real HPAs: what deploy/ ships
//! (RBAC, APIServices) applied as users apply it, the bridge on the host registered through an
//! ExternalName Service, and readers of the Deployment and HPA state tests wait on.

use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use super::bridge::Bridge;
use super::controlplane::ControlPlane;
use super::shipped_documents;

/// The Service name the APIServices point at (in the bridge's serving certificate).
pub const SERVICE_DNS: &str = "kube-metrics-bridge.custom-metrics.svc";

/// What deploy/ ships, minus what runs the bridge in a pod (here it runs on the host): the
/// Namespace, ServiceAccount, RBAC and APIServices, exactly as users apply them.
pub fn shipped_objects() -> String {
    let docs = shipped_documents(&[
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "APIService",
    ]);
    assert!(
        docs.len() >= 10,
        "the shipped RBAC and APIServices: {docs:#?}"
    );
    docs.join("\n---\n")
}

/// The test-only parts: a Service kube-apiserver can route to the host with, the caBundle of
/// the bridge's generated CA and its loopback port in the shipped APIServices, and a user
/// `reader` bound to the shipped metrics-reader role.
pub async fn register(cp: &ControlPlane, ca_pem: &[u8], port: u16) {
    cp.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: kube-metrics-bridge, namespace: custom-metrics}}\n\
         spec: {{type: ExternalName, externalName: 127.0.0.1, ports: [{{name: https, port: {port}}}]}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: test-reader}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: \"kube-metrics-bridge:metrics-reader\"}}\n\
         subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: reader}}]\n"
    ))
    .await;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let patch = format!(r#"{{"spec":{{"caBundle":"{ca}","service":{{"port":{port}}}}}}}"#);
    for name in ControlPlane::BRIDGE_APISERVICES {
        cp.kubectl_ok(&["patch", "apiservice", name, "--type", "merge", "-p", &patch])
            .await;
    }
}

/// A kubeconfig acting as the bridge's ServiceAccount (the shipped RBAC binds it): a
/// certificate for the same user and groups.
pub fn bridge_kubeconfig(cp: &ControlPlane) -> std::path::PathBuf {
    cp.client_kubeconfig(
        "system:serviceaccount:custom-metrics:kube-metrics-bridge",
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:custom-metrics",
        ],
    )
}

/// Applies what deploy/ ships, starts the bridge on the host as its ServiceAccount, registers
/// it, creates `namespace` and waits for every APIService to be Available.
pub async fn serve_through_aggregator(cp: &ControlPlane, rules: &str, namespace: &str) -> Bridge {
    cp.apply(&shipped_objects()).await;
    let bridge = Bridge::start_for_cluster(rules, &bridge_kubeconfig(cp), SERVICE_DNS, &[]).await;
    let ca = std::fs::read(bridge.ca_path()).expect("generated CA");
    register(cp, &ca, bridge.port).await;
    cp.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n"
    ))
    .await;
    cp.wait_apiservices_available().await;
    bridge
}

/// `spec.replicas` of Deployment `namespace/name` (what the HPA last set).
pub async fn replicas(cp: &ControlPlane, namespace: &str, name: &str) -> u64 {
    cp.get_json(&format!(
        "/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
    ))
    .await["spec"]["replicas"]
        .as_u64()
        .unwrap_or(0)
}

/// HPA `namespace/name` as kube-apiserver has it.
pub async fn hpa(cp: &ControlPlane, namespace: &str, name: &str) -> Value {
    cp.get_json(&format!(
        "/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{name}"
    ))
    .await
}

/// The status ("True"/"False") and reason of condition `kind` of an HPA object; empty
/// strings when it has none.
pub fn condition(hpa: &Value, kind: &str) -> (String, String) {
    hpa["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .unwrap_or_default()
}

/// The HPA's `ScalingActive` condition status and reason.
pub async fn scaling_active(cp: &ControlPlane, namespace: &str, name: &str) -> (String, String) {
    condition(&hpa(cp, namespace, name).await, "ScalingActive")
}

/// Waits until Deployment `namespace/name` wants `want` replicas and has kept that for
/// `steady` (a few HPA sync periods, so a decision still under way shows); panics with the
/// HPA's status after `timeout`. Between polls `between` runs (tending pods, say).
pub async fn wait_replicas<F, Fut>(
    cp: &ControlPlane,
    namespace: &str,
    name: &str,
    want: u64,
    steady: Duration,
    timeout: Duration,
    mut between: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut steady_since: Option<tokio::time::Instant> = None;
    loop {
        between().await;
        let got = replicas(cp, namespace, name).await;
        if got == want {
            let since = *steady_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() > steady {
                return;
            }
        } else {
            steady_since = None;
        }
        if tokio::time::Instant::now() > deadline {
            let hpa = hpa(cp, namespace, name).await;
            panic!(
                "{name}: {got} replicas, wanted {want}; HPA status: {}",
                hpa["status"]
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
