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

/// A Deployment `namespace/name` of `replicas` pods labelled `app: name` (no kubelet runs
/// them; the HPA only needs the scale subresource).
pub fn deployment(namespace: &str, name: &str, replicas: u32) -> String {
    format!(
        r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: app, image: registry.invalid/app:1}}]
"#
    )
}

/// An HPA `namespace/name` on Deployment `name`, `min..=max` replicas, no stabilization (each
/// decision shows at the next sync), with `metrics` (YAML list items indented two spaces).
pub fn autoscaler(namespace: &str, name: &str, min: u32, max: u32, metrics: &str) -> String {
    format!(
        r#"---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}
  minReplicas: {min}
  maxReplicas: {max}
  behavior:
    scaleUp: {{stabilizationWindowSeconds: 0}}
    scaleDown: {{stabilizationWindowSeconds: 0}}
  metrics:
{metrics}"#
    )
}

/// An Object metric of a core `kind` named `name`, one replica per `1` of its value.
pub fn object_metric(kind: &str, name: &str, metric: &str) -> String {
    format!(
        "  - type: Object\n    object:\n      describedObject: {{apiVersion: v1, kind: {kind}, name: {name}}}\n      \
         metric: {{name: {metric}}}\n      target: {{type: AverageValue, averageValue: \"1\"}}\n"
    )
}

/// An External metric selected by `queue=<queue>`, one replica per `1` of its value.
pub fn external_metric(metric: &str, queue: &str) -> String {
    format!(
        "  - type: External\n    external:\n      metric: {{name: {metric}, selector: {{matchLabels: {{queue: {queue}}}}}}}\n      \
         target: {{type: AverageValue, averageValue: \"1\"}}\n"
    )
}

/// Checks every second, until finished, that each watched HPA keeps wanting its replicas and
/// (while strict) has `ScalingActive=True`, and that each watched path answers 200 through
/// the aggregator; what it saw wrong is kept with the phase it happened in. For migrations:
/// "no HPA ever lost its metric".
pub struct Watcher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    strict: std::sync::Arc<std::sync::atomic::AtomicBool>,
    phase: std::sync::Arc<std::sync::Mutex<String>>,
    problems: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    /// `hpas`: (name, replicas it must keep wanting) in `namespace`; `paths`: GETs that must
    /// answer 200.
    pub fn start(
        cp: &ControlPlane,
        namespace: &str,
        hpas: Vec<(String, u64)>,
        paths: Vec<String>,
    ) -> Watcher {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let stop = Arc::new(AtomicBool::new(false));
        let strict = Arc::new(AtomicBool::new(true));
        let phase = Arc::new(Mutex::new(String::from("start")));
        let problems = Arc::new(Mutex::new(Vec::new()));
        let (client, server) = (cp.admin_client().clone(), cp.server_url().to_string());
        let namespace = namespace.to_string();
        let (s, st, ph, pr) = (
            stop.clone(),
            strict.clone(),
            phase.clone(),
            problems.clone(),
        );
        let task = tokio::spawn(async move {
            let get = |path: String| {
                let (client, url) = (client.clone(), format!("{server}{path}"));
                async move {
                    match client.get(url).send().await {
                        Ok(r) => {
                            let code = r.status().as_u16();
                            (code, r.json::<Value>().await.unwrap_or(Value::Null))
                        }
                        Err(e) => (0, Value::String(e.to_string())),
                    }
                }
            };
            let note = |what: String| {
                let now = ph.lock().map(|p| p.clone()).unwrap_or_default();
                if let Ok(mut p) = pr.lock() {
                    p.push(format!("[{now}] {what}"));
                }
            };
            while !s.load(Ordering::SeqCst) {
                for path in &paths {
                    let (code, body) = get(path.clone()).await;
                    if code != 200 {
                        note(format!("{path}: HTTP {code}: {}", body["message"]));
                    }
                }
                for (name, want) in &hpas {
                    let (_, obj) = get(format!(
                        "/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{name}"
                    ))
                    .await;
                    let (status, reason) = condition(&obj, "ScalingActive");
                    let desired = obj["status"]["desiredReplicas"].as_u64();
                    let inactive = status != "True" && st.load(Ordering::SeqCst);
                    if inactive || desired != Some(*want) {
                        note(format!("HPA {name}: ScalingActive={status} ({reason}), desired {desired:?}, wanted {want}"));
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Watcher {
            stop,
            strict,
            phase,
            problems,
            task,
        }
    }

    /// Names what happens from now on, for the problems seen.
    pub fn phase(&self, phase: &str) {
        if let Ok(mut p) = self.phase.lock() {
            *p = phase.to_string();
        }
    }

    /// Off while HPAs may briefly see no metrics (then only their replicas must hold).
    pub fn strict(&self, strict: bool) {
        self.strict
            .store(strict, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stops watching; what was wrong, if anything.
    pub async fn finish(self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.task.await;
        let problems = self.problems.lock().map(|p| p.clone()).unwrap_or_default();
        problems
    }
}
