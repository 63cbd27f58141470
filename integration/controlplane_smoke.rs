//! Smoke test of the real control plane harness (`common::controlplane`):
//! the apiserver serves, the controller manager runs controllers with their
//! own service-account credentials, the aggregation layer is configured, and
//! teardown leaves no process behind.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::controlplane::ControlPlane;
use serde_json::Value;

const NS: &str = "kmb-smoke";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_serves_runs_controllers_and_tears_down() {
    let t0 = Instant::now();
    let cp = ControlPlane::start().await;

    // The apiserver answers through kubectl with the admin kubeconfig.
    let readyz = cp.kubectl_ok(&["get", "--raw", "/readyz"]).await;
    assert_eq!(readyz.trim(), "ok");
    let version: Value = serde_json::from_str(&cp.kubectl_ok(&["get", "--raw", "/version"]).await)
        .expect("/version is JSON");
    let git_version = version["gitVersion"].as_str().unwrap_or_default();
    assert!(
        git_version.starts_with("v1.") && version["major"] == "1",
        "unexpected /version: {version}"
    );
    eprintln!("kube-apiserver {git_version}");

    // A Deployment is turned into a ReplicaSet and Pods by the controller
    // manager, which needs the `default` ServiceAccount (serviceaccount
    // controller) before pods pass admission.
    cp.apply(&format!(
        r#"
apiVersion: v1
kind: Namespace
metadata:
  name: {NS}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {NS}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
        - name: web
          image: registry.invalid/web:1
"#
    ))
    .await;
    let pods = cp
        .wait_for(
            "the Deployment's ReplicaSet to create 2 pods",
            Duration::from_secs(60),
            || async {
                let (_, list) = cp
                    .get(&format!(
                        "/api/v1/namespaces/{NS}/pods?labelSelector=app%3Dweb"
                    ))
                    .await;
                let items = list["items"].as_array()?.clone();
                (items.len() == 2).then_some(items)
            },
        )
        .await;
    let rs = cp
        .get_json(&format!("/apis/apps/v1/namespaces/{NS}/replicasets"))
        .await;
    let rs = &rs["items"][0];
    assert_eq!(rs["metadata"]["ownerReferences"][0]["name"], "web", "{rs}");
    for pod in &pods {
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "ReplicaSet", "{pod}");
        assert_eq!(owner["name"], rs["metadata"]["name"], "{pod}");
    }
    eprintln!(
        "deployment -> replicaset -> 2 pods after {:.1?}",
        t0.elapsed()
    );

    // --use-service-account-credentials: each controller got its own
    // ServiceAccount in kube-system, and it is what they act as.
    for sa in [
        "deployment-controller",
        "replicaset-controller",
        "horizontal-pod-autoscaler",
        "namespace-controller",
    ] {
        cp.get_json(&format!(
            "/api/v1/namespaces/kube-system/serviceaccounts/{sa}"
        ))
        .await;
    }
    // ... and the HPA controller's own RBAC lets it read custom metrics.
    let sar = r#"{
  "apiVersion": "authorization.k8s.io/v1",
  "kind": "SubjectAccessReview",
  "spec": {
    "user": "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
    "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system"],
    "resourceAttributes": {"group": "custom.metrics.k8s.io", "resource": "pods",
      "subresource": "http_requests_per_second", "name": "*", "namespace": "kmb-smoke",
      "verb": "get"}
  }
}"#;
    let out = cp
        .kubectl_as(
            cp.admin_kubeconfig(),
            &["create", "-f", "-", "-o", "json"],
            Some(sar),
        )
        .await;
    let review: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("SubjectAccessReview answer is not JSON ({e}): {out:?}"));
    assert_eq!(review["status"]["allowed"], true, "{review}");

    // Tests stand in for the kubelet: a pod can be marked Running and Ready.
    let pod0 = pods[0]["metadata"]["name"].as_str().expect("pod name");
    cp.set_pod_running(NS, pod0).await;
    let pod = cp
        .get_json(&format!("/api/v1/namespaces/{NS}/pods/{pod0}"))
        .await;
    assert_eq!(pod["status"]["phase"], "Running", "{pod}");

    // The aggregation layer's front-proxy settings are published for
    // extension apiservers.
    let cm = cp
        .get_json("/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication")
        .await;
    let data = &cm["data"];
    let fp_ca = std::fs::read_to_string(cp.front_proxy_ca_path()).expect("reading front-proxy CA");
    assert_eq!(
        data["requestheader-client-ca-file"].as_str().map(str::trim),
        Some(fp_ca.trim()),
        "{cm}"
    );
    for (key, want) in [
        ("requestheader-allowed-names", r#"["front-proxy-client"]"#),
        ("requestheader-username-headers", r#"["X-Remote-User"]"#),
        ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
        (
            "requestheader-extra-headers-prefix",
            r#"["X-Remote-Extra-"]"#,
        ),
    ] {
        let got: Value = serde_json::from_str(data[key].as_str().unwrap_or("null"))
            .unwrap_or_else(|e| panic!("{key} is not JSON: {e}\n{cm}"));
        let want: Value = serde_json::from_str(want).expect("test literal is JSON");
        assert_eq!(got, want, "{key} in {cm}");
    }
    assert!(data["client-ca-file"].is_string(), "{cm}");

    // An APIService backed by an ExternalName Service is accepted; nothing
    // listens behind it, so the availability controller marks it unavailable.
    let port = common::free_port();
    cp.apply(&format!(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: kmb-smoke
  namespace: {NS}
spec:
  type: ExternalName
  externalName: localhost
  ports:
    - name: https
      port: {port}
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.smoke.kmb.example.com
spec:
  group: smoke.kmb.example.com
  version: v1beta1
  service:
    name: kmb-smoke
    namespace: {NS}
    port: {port}
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
"#
    ))
    .await;
    let path = "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.smoke.kmb.example.com";
    let cond = cp
        .wait_for(
            "the APIService's Available condition",
            Duration::from_secs(30),
            || async {
                let (_, svc) = cp.get(path).await;
                svc["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "Available")
                    .cloned()
            },
        )
        .await;
    assert_eq!(cond["status"], "False", "{cond}");
    eprintln!(
        "APIService accepted; Available=False ({}: {})",
        cond["reason"], cond["message"]
    );

    // Teardown kills and reaps everything and removes the tempdir.
    let pids = cp.pids();
    assert_eq!(pids.len(), 3, "{pids:?}");
    let dir = cp.dir().to_path_buf();
    let t_stop = Instant::now();
    drop(cp);
    eprintln!("teardown took {:.1?}", t_stop.elapsed());
    for (name, pid) in pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(name),
            "{name} (pid {pid}) still runs after drop"
        );
    }
    if std::env::var_os("KMB_KEEP_CONTROLPLANE").is_none_or(|v| v != "1") {
        assert!(
            !Path::new(&dir).exists(),
            "{} was not removed",
            dir.display()
        );
    }
    eprintln!("smoke test took {:.1?}", t0.elapsed());
}
