//! The Helm chart's `certificates.mode=certManager` against a real cert-manager: the test
//! control plane (etcd + kube-apiserver built from source), cert-manager's CRDs, and
//! cert-manager's own controllers and CA injector (built from its library packages by
//! `integration/certmanager/build.sh`) running on the host. The chart is rendered and applied
//! for real; the test then checks that
//!
//! 1. the chart's issuer chain (self-signed Issuer -> CA Certificate -> CA Issuer) issues the
//!    serving Certificate, which becomes Ready;
//! 2. its Secret holds a certificate for `kube-metrics-bridge.custom-metrics.svc` that the
//!    Secret's `ca.crt` (the chart's CA) signed (`openssl verify`);
//! 3. cainjector puts exactly that CA into the caBundle of all three APIServices;
//! 4. the bridge on the host, serving the Secret's certificate and key, is trusted by that
//!    caBundle under the Service's name (a rustls handshake, and kube-apiserver marking the
//!    three APIServices Available), and answers `kubectl get --raw` through the aggregator.
//!
//! No kubelet runs, so the chart's Deployment never gets pods; as in `kubernetes.rs` the
//! bridge runs on the host and the Service is replaced by an ExternalName Service to
//! loopback (and the APIServices' port set to the bridge's).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::bridge::Bridge;
use common::controlplane::{ControlPlane, Options};
use common::{wait_until, Exporter, Prometheus};
use serde_json::Value;
use tokio::process::{Child, Command};

const NS: &str = "custom-metrics";
const SERVICE_DNS: &str = "kube-metrics-bridge.custom-metrics.svc";
const TLS_SECRET: &str = "kube-metrics-bridge-tls";
const APISERVICES: [&str; 3] = ControlPlane::BRIDGE_APISERVICES;
/// cert-manager issues a chain of three certificates; each step takes a few seconds.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(120);

/// The directory `integration/certmanager/build.sh` fills: `$KMB_CERTMANAGER_BIN`, else what
/// the script prints (building on first use: a few minutes cold).
async fn certmanager_bin() -> PathBuf {
    let dir = common::cached_build(
        "KMB_CERTMANAGER_BIN",
        "integration/certmanager/build.sh",
        "cert-manager's binaries and CRDs",
    )
    .await;
    for f in [
        "cert-manager-controller",
        "cert-manager-cainjector",
        "crds/cert-manager.io_certificates.yaml",
    ] {
        assert!(
            dir.join(f).is_file(),
            "{} has no {f}; set KMB_CERTMANAGER_BIN to what integration/certmanager/build.sh \
             prints, or unset it to let the test run the script",
            dir.display()
        );
    }
    dir
}

/// cert-manager's controller and CA injector as child processes, logging to files; killed on
/// drop, and their logs' ends printed when the test is failing.
struct CertManager {
    /// A mutex so that polling closures can check on them through `&self`.
    procs: Mutex<Vec<(&'static str, Child)>>,
    logs: tempfile::TempDir,
}

impl CertManager {
    async fn start(bin: &Path, kubeconfig: &Path) -> CertManager {
        let logs = tempfile::Builder::new()
            .prefix("kmb-certmanager-")
            .tempdir()
            .expect("tempdir for cert-manager logs");
        let mut procs = Vec::new();
        for name in ["cert-manager-controller", "cert-manager-cainjector"] {
            let log = logs.path().join(format!("{name}.log"));
            let file = std::fs::File::create(&log)
                .unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
            let file_err = file.try_clone().expect("duplicating a log file handle");
            // setpriv (util-linux): the kernel kills the component if the thread that started
            // it dies, even when this process is killed before Drop runs.
            let setpriv = Path::new("/usr/bin/setpriv");
            let mut cmd = if setpriv.is_file() {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(bin.join(name));
                c
            } else {
                Command::new(bin.join(name))
            };
            cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
                // v=2: cert-manager's "info" level (issuing, readiness, injection).
                .arg("--v=2")
                .stdin(Stdio::null())
                .stdout(file)
                .stderr(file_err)
                .kill_on_drop(true);
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("starting {name}: {e}"));
            procs.push((name, child));
        }
        CertManager {
            procs: Mutex::new(procs),
            logs,
        }
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.logs.path().join(format!("{name}.log"))
    }

    /// Panics if a component has exited (with its log).
    fn assert_running(&self) {
        let mut procs = self.procs.lock().expect("not poisoned");
        for (name, child) in procs.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
                panic!("{name} exited with {status}:\n{log}");
            }
        }
    }

    fn print_logs(&self) {
        for name in ["cert-manager-controller", "cert-manager-cainjector"] {
            let path = self.log_path(name);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- last lines of {} ---\n{}",
                path.display(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

impl Drop for CertManager {
    fn drop(&mut self) {
        let procs = self.procs.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, child) in procs.iter_mut() {
            let _ = child.start_kill();
        }
        for (name, child) in procs.iter_mut() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!("warning: {name} did not exit 10 s after SIGKILL");
            }
        }
        if std::thread::panicking() {
            self.print_logs();
            let dir = std::mem::replace(
                &mut self.logs,
                tempfile::tempdir().expect("a throwaway tempdir"),
            );
            eprintln!("cert-manager logs kept in {}", dir.keep().display());
        }
    }
}

/// `deploy/render.sh helm` with `certificates.mode=certManager`.
fn render_chart() -> String {
    let out = std::process::Command::new("bash")
        .args([
            "deploy/render.sh",
            "helm",
            "--",
            "--set",
            "certificates.mode=certManager",
        ])
        .output()
        .expect("running deploy/render.sh");
    assert!(
        out.status.success(),
        "deploy/render.sh helm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the rendered chart is UTF-8")
}

/// `kubectl apply --server-side` of `yaml` (or of the files under a path given as `-f` args).
async fn apply_server_side(cp: &ControlPlane, args: &[&str], yaml: Option<&str>) -> String {
    let mut all = vec!["apply", "--server-side", "--force-conflicts"];
    all.extend_from_slice(args);
    let out = cp.kubectl_as(cp.admin_kubeconfig(), &all, yaml).await;
    assert!(
        out.status.success(),
        "kubectl {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn condition_true(obj: &Value, kind: &str) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == kind && c["status"] == "True"))
}

/// The base64-decoded `key` of Secret `name` in [`NS`], if present.
async fn secret_data(cp: &ControlPlane, name: &str, key: &str) -> Option<Vec<u8>> {
    let (status, secret) = cp
        .get(&format!("/api/v1/namespaces/{NS}/secrets/{name}"))
        .await;
    if status != 200 {
        return None;
    }
    let b64 = secret["data"][key].as_str()?;
    Some(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_else(|e| panic!("secret {name} key {key} is not base64: {e}")),
    )
}

fn pem_to_der(pem: &[u8]) -> Vec<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.expect("a PEM certificate").to_vec())
        .collect()
}

/// `openssl verify -CAfile ca -purpose sslserver cert`: the chain is signed and valid now.
fn openssl_verify(dir: &Path, ca_pem: &[u8], cert_pem: &[u8]) {
    let ca = dir.join("verify-ca.crt");
    let cert = dir.join("verify-leaf.crt");
    std::fs::write(&ca, ca_pem).expect("writing the CA");
    std::fs::write(&cert, cert_pem).expect("writing the certificate");
    let out = std::process::Command::new("openssl")
        .args(["verify", "-purpose", "sslserver", "-CAfile"])
        .arg(&ca)
        .arg(&cert)
        .output()
        .expect("running openssl verify");
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TLS handshake with the bridge as kube-aggregator makes it: trusting only `ca_pem`,
/// checking the name [`SERVICE_DNS`]. Returns the leaf certificate the bridge presented.
async fn handshake(port: u16, ca_pem: &[u8]) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for der in pem_to_der(ca_pem) {
        roots
            .add(der.into())
            .expect("adding the CA to a root store");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connecting to the bridge");
    let name = rustls_pki_types::ServerName::try_from(SERVICE_DNS).expect("a DNS name");
    let tls = connector
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake as {SERVICE_DNS} trusting the caBundle: {e}"));
    let (_, conn) = tls.get_ref();
    conn.peer_certificates()
        .and_then(|c| c.first())
        .expect("the bridge presented a certificate")
        .to_vec()
}

fn rules(prometheus: &Prometheus) -> String {
    format!(
        r#"
[prometheus]
url = "{}"
timeout = "3s"

[cache]
ttl = "1s"
discovery_interval = "2s"

[[external_rules]]
series_query = 'queue_depth{{namespace!=""}}'
resources.overrides = {{ namespace = {{ resource = "namespace" }} }}
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (queue)'
"#,
        prometheus.url()
    )
}

#[tokio::test]
async fn chart_cert_manager_mode_issues_injects_and_serves() {
    let t0 = Instant::now();
    let bin = certmanager_bin().await;
    let exporter = Exporter::start_empty().await;
    exporter
        .set_gauge("queue_depth", &[("namespace", NS), ("queue", "jobs")], 40.0)
        .await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    // Nothing here needs kube-controller-manager: cert-manager writes the Secrets itself.
    let cp = ControlPlane::start_with(Options {
        skip_controller_manager: true,
        ..Options::default()
    })
    .await;

    // cert-manager's CRDs, then its controller and CA injector.
    let crds = bin.join("crds").display().to_string();
    apply_server_side(&cp, &["-f", &crds], None).await;
    cp.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/certificates.cert-manager.io",
        "crd/certificaterequests.cert-manager.io",
        "crd/issuers.cert-manager.io",
    ])
    .await;
    let cm = CertManager::start(&bin, cp.admin_kubeconfig()).await;

    // The chart as users install it (`helm install --create-namespace`).
    cp.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n"
    ))
    .await;
    let applied = apply_server_side(&cp, &["-f", "-"], Some(&render_chart())).await;
    for object in [
        "issuer.cert-manager.io/kube-metrics-bridge-selfsigned",
        "certificate.cert-manager.io/kube-metrics-bridge-ca",
        "issuer.cert-manager.io/kube-metrics-bridge-ca",
        "certificate.cert-manager.io/kube-metrics-bridge-tls",
        "apiservice.apiregistration.k8s.io/v1beta2.custom.metrics.k8s.io",
    ] {
        assert!(applied.contains(object), "{object} not in:\n{applied}");
    }
    let t_applied = t0.elapsed();

    // 1. The serving Certificate is issued: Ready, and the first issuance finished. cert-manager
    // can report Ready while that issuance is still running (`Issuing: True`, no `revision`
    // yet), so wait for all three rather than asserting on a state that may not be reached.
    let certificate = cp
        .wait_for(
            "Certificate kube-metrics-bridge-tls Ready with its first issuance done",
            ISSUE_TIMEOUT,
            || async {
                cm.assert_running();
                let cert = cp
                    .get_json(&format!(
                        "/apis/cert-manager.io/v1/namespaces/{NS}/certificates/kube-metrics-bridge-tls"
                    ))
                    .await;
                (condition_true(&cert, "Ready")
                    && !condition_true(&cert, "Issuing")
                    && cert["status"]["revision"].is_u64())
                .then_some(cert)
            },
        )
        .await;
    let t_ready = t0.elapsed();
    for issuer in ["kube-metrics-bridge-selfsigned", "kube-metrics-bridge-ca"] {
        cp.wait_for(&format!("Issuer {issuer} Ready"), ISSUE_TIMEOUT, || async {
            let obj = cp
                .get_json(&format!(
                    "/apis/cert-manager.io/v1/namespaces/{NS}/issuers/{issuer}"
                ))
                .await;
            condition_true(&obj, "Ready").then_some(())
        })
        .await;
    }
    assert_eq!(
        certificate["status"]["revision"], 1,
        "one issuance, not a re-issue: {certificate:#}"
    );

    // 2. The Secret: a serving certificate for the Service, signed by the chart's CA.
    let dir = tempfile::tempdir().expect("tempdir");
    let tls_crt = secret_data(&cp, TLS_SECRET, "tls.crt")
        .await
        .expect("tls.crt in the Secret");
    let tls_key = secret_data(&cp, TLS_SECRET, "tls.key")
        .await
        .expect("tls.key in the Secret");
    let ca_crt = secret_data(&cp, TLS_SECRET, "ca.crt")
        .await
        .expect("ca.crt in the Secret");
    let chart_ca = secret_data(&cp, "kube-metrics-bridge-ca", "tls.crt")
        .await
        .expect("the CA Certificate's Secret");
    assert_eq!(
        pem_to_der(&ca_crt),
        pem_to_der(&chart_ca),
        "ca.crt of the serving Secret is the chart's CA certificate"
    );
    let leaf_der = pem_to_der(&tls_crt)
        .into_iter()
        .next()
        .expect("a certificate in tls.crt");
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).expect("tls.crt parses");
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .expect("a valid SAN extension")
        .expect("a SAN extension")
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
        .collect();
    for name in [
        "kube-metrics-bridge",
        "kube-metrics-bridge.custom-metrics",
        SERVICE_DNS,
    ] {
        assert!(
            sans.iter().any(|s| s == name),
            "{name} not in SANs {sans:?}"
        );
    }
    let ca_der = pem_to_der(&ca_crt).remove(0);
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).expect("ca.crt parses");
    assert!(ca.is_ca(), "ca.crt is a CA certificate");
    assert_eq!(
        leaf.issuer(),
        ca.subject(),
        "tls.crt is issued by the CA in ca.crt"
    );
    assert_ne!(leaf.issuer(), leaf.subject(), "tls.crt is not self-signed");
    openssl_verify(dir.path(), &ca_crt, &tls_crt);

    // 3. cainjector copies that CA into every APIService's caBundle.
    for name in APISERVICES {
        let bundle = cp
            .wait_for(
                &format!("the caBundle of APIService {name} to be exactly the chart's CA"),
                Duration::from_secs(60),
                || async {
                    cm.assert_running();
                    let svc = cp
                        .get_json(&format!(
                            "/apis/apiregistration.k8s.io/v1/apiservices/{name}"
                        ))
                        .await;
                    let b64 = svc["spec"]["caBundle"].as_str()?;
                    let bundle = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
                    // Exactly the serving certificate's CA, once injection has settled.
                    (pem_to_der(&bundle) == vec![ca_der.clone()]).then_some(bundle)
                },
            )
            .await;
        openssl_verify(dir.path(), &bundle, &tls_crt);
    }
    let t_injected = t0.elapsed();

    // 4. The bridge on the host serves the Secret's pair; the aggregator reaches it through an
    // ExternalName Service to loopback, trusting the injected caBundle.
    let crt_path = dir.path().join("tls.crt");
    let key_path = dir.path().join("tls.key");
    std::fs::write(&crt_path, &tls_crt).expect("writing tls.crt");
    std::fs::write(&key_path, &tls_key).expect("writing tls.key");
    let bridge_kubeconfig = cp.client_kubeconfig(
        "system:serviceaccount:custom-metrics:kube-metrics-bridge",
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:custom-metrics",
        ],
    );
    prometheus
        .wait_for_series("queue_depth", Duration::from_secs(30))
        .await;
    let crt_arg = crt_path.display().to_string();
    let key_arg = key_path.display().to_string();
    let bridge = Bridge::start_for_cluster(
        &rules(&prometheus),
        &bridge_kubeconfig,
        SERVICE_DNS,
        &[
            "--tls-cert-file",
            &crt_arg,
            "--tls-private-key-file",
            &key_arg,
        ],
    )
    .await;
    let served = handshake(bridge.port, &ca_crt).await;
    assert_eq!(
        served, leaf_der,
        "the bridge serves cert-manager's certificate"
    );

    cp.kubectl_ok(&["-n", NS, "delete", "service", "kube-metrics-bridge"])
        .await;
    cp.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: kube-metrics-bridge, namespace: {NS}}}\n\
         spec: {{type: ExternalName, externalName: 127.0.0.1, ports: [{{name: https, port: {}}}]}}\n",
        bridge.port
    ))
    .await;
    let patch = format!(r#"{{"spec":{{"service":{{"port":{}}}}}}}"#, bridge.port);
    for name in APISERVICES {
        cp.kubectl_ok(&["patch", "apiservice", name, "--type", "merge", "-p", &patch])
            .await;
    }
    cp.wait_apiservices_available().await;
    let t_available = t0.elapsed();

    // Through kube-apiserver and the aggregator.
    let discovery: Value = serde_json::from_str(
        &cp.kubectl_ok(&["get", "--raw", "/apis/custom.metrics.k8s.io/v1beta2"])
            .await,
    )
    .expect("discovery is JSON");
    assert_eq!(discovery["groupVersion"], "custom.metrics.k8s.io/v1beta2");
    assert_eq!(discovery["kind"], "APIResourceList");
    let path = format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/queue_depth");
    let list = wait_until(
        "the external metric through the aggregator",
        Duration::from_secs(30),
        || async {
            let out = cp.kubectl(&["get", "--raw", &path]).await;
            let list: Value = serde_json::from_slice(&out.stdout).ok()?;
            (out.status.success() && list["items"][0]["value"] == "40").then_some(list)
        },
    )
    .await;
    assert_eq!(list["kind"], "ExternalMetricValueList", "{list:#}");
    eprintln!(
        "chart applied at {t_applied:.1?}, Certificate Ready at {t_ready:.1?}, \
         caBundles injected at {t_injected:.1?}, APIServices Available at {t_available:.1?}, \
         done at {:.1?}",
        t0.elapsed()
    );
    drop(bridge);
}
