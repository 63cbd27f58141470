//! A real Kubernetes control plane for integration tests: etcd,
//! kube-apiserver and kube-controller-manager, built from upstream sources by
//! `integration/controlplane/build.sh` (versions pinned in its `go.mod`) and run
//! as child processes on loopback with fresh PKI in a tempdir.
//!
//! ```ignore
//! let cp = ControlPlane::start().await;
//! cp.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n").await;
//! let out = cp.kubectl_ok(&["get", "--raw", "/readyz"]).await;
//! ```
//!
//! What runs:
//! - etcd on two free loopback ports (plain HTTP, `--unsafe-no-fsync`), data in the tempdir.
//! - kube-apiserver on `https://127.0.0.1:<free port>`: client certificates from the
//!   cluster CA, RBAC authorization, service-account issuer and keys, a front-proxy CA
//!   with `--requestheader-*` flags (allowed name `front-proxy-client`,
//!   `X-Remote-User`/`X-Remote-Group`/`X-Remote-Extra-`) and the aggregator's
//!   `--proxy-client-*` certificate, so APIServices can be registered.
//! - kube-controller-manager with `--use-service-account-credentials` (each controller
//!   acts as its own service account, so e.g. the HPA controller's RBAC is real), no
//!   leader election, fast HPA timings, and only the controllers that make sense
//!   without a kubelet ([`KCM_CONTROLLERS`]).
//!
//! No kubelet and no scheduler run: pods stay unscheduled `Pending` until a test
//! marks them running ([`ControlPlane::set_pod_running`]).
//!
//! Logs go to `<dir>/logs/<component>.log`, never to the test's output; startup
//! failures panic with the end of the relevant log. On drop the components are
//! killed and reaped (controller manager, apiserver, etcd, in that order); when the
//! test is panicking, or `KMB_KEEP_CONTROLPLANE=1` is set, the tempdir (PKI,
//! kubeconfigs, logs; not etcd's data) is kept and its path printed. Each component
//! also runs under `setpriv --pdeathsig KILL`, so even a test process killed with
//! SIGKILL leaves nothing behind. Consequence: a `ControlPlane` belongs to the
//! thread that started it; do not park one in a `static` shared across tests.
//!
//! Binaries come from `$KMB_CONTROLPLANE_BIN` (a directory holding `etcd`,
//! `kube-apiserver` and `kube-controller-manager`), else from running `build.sh`,
//! which is a no-op when its cache is warm and takes ~6 minutes when cold.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use super::{free_port, http_client, wait_until};

/// Controllers kube-controller-manager runs. `*` would also start node
/// lifecycle and pod GC, which act on the nodes that do not exist here (pod GC
/// deletes pods bound to missing nodes). Add more with [`Options`].
pub const KCM_CONTROLLERS: &str = "serviceaccount-token,serviceaccount,namespace,\
garbagecollector,deployment,replicaset,horizontalpodautoscaling,\
root-ca-cert-publisher,clusterrole-aggregation";

/// The service CIDR; the `kubernetes` Service gets its first address.
pub const SERVICE_CIDR: &str = "10.0.0.0/24";

const ETCD_READY: Duration = Duration::from_secs(30);
const APISERVER_READY: Duration = Duration::from_secs(120);
const KCM_READY: Duration = Duration::from_secs(60);
/// Attempts per component when a `free_port()` port was taken meanwhile.
const PORT_ATTEMPTS: usize = 3;

/// Optional knobs for [`ControlPlane::start_with`]. Extra flags are appended
/// after the harness' own, so they override them (the last value wins).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Extra kube-apiserver flags, e.g. `--v=4`.
    pub apiserver_args: Vec<String>,
    /// Extra kube-controller-manager flags, e.g. `--controllers=*`.
    pub controller_manager_args: Vec<String>,
    /// Do not start kube-controller-manager (API-only tests start ~2 s faster).
    pub skip_controller_manager: bool,
}

/// A running control plane; see the module docs.
pub struct ControlPlane {
    // Stopped in this order by `Drop` (controller manager first).
    kcm: Option<Component>,
    apiserver: Option<Component>,
    etcd: Option<Component>,
    server_url: String,
    /// Signs client and serving certificates.
    ca: Issuer<'static, KeyPair>,
    /// The admin's client, trusting the cluster CA.
    client: reqwest::Client,
    admin_kubeconfig: PathBuf,
    kubectl: PathBuf,
    /// How kube-apiserver was started (binary, flags), to start it again after
    /// [`ControlPlane::stop_apiserver`].
    apiserver_command: (PathBuf, Vec<String>),
    /// Makes file names of minted credentials unique.
    minted: AtomicUsize,
    // Last: removed (or kept) after the processes are gone.
    dir: Option<tempfile::TempDir>,
}

/// One child process and its log file.
struct Component {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager and waits until
    /// each is healthy (apiserver `/readyz`, controller manager `/healthz`).
    /// Panics with the tail of the failing component's log.
    pub async fn start() -> ControlPlane {
        ControlPlane::start_with(Options::default()).await
    }

    /// [`ControlPlane::start`] with extra flags or without the controller manager.
    pub async fn start_with(opts: Options) -> ControlPlane {
        let bin = binaries().await;
        let dir = tempfile::Builder::new()
            .prefix("kmb-controlplane-")
            .tempdir()
            .expect("creating a tempdir for the control plane");
        let root = dir.path().to_path_buf();
        for sub in ["pki", "logs", "kubeconfig"] {
            mkdir(&root.join(sub));
        }
        let t0 = Instant::now();
        let pki = Pki::generate(&root);

        let mut cp = ControlPlane {
            kcm: None,
            apiserver: None,
            etcd: None,
            server_url: String::new(),
            admin_kubeconfig: PathBuf::new(),
            client: pki.admin_client(),
            ca: pki.ca,
            kubectl: find_kubectl(),
            apiserver_command: (PathBuf::new(), Vec::new()),
            minted: AtomicUsize::new(0),
            dir: Some(dir),
        };

        // etcd
        let mut etcd_url = String::new();
        cp.etcd = Some(
            start_component("etcd", &root, || {
                let (client_port, peer_port) = (free_port(), free_port());
                etcd_url = format!("http://127.0.0.1:{client_port}");
                let peer = format!("http://127.0.0.1:{peer_port}");
                let args = vec![
                    "--name=kmb".to_owned(),
                    format!("--data-dir={}", root.join("etcd").display()),
                    format!("--listen-client-urls={etcd_url}"),
                    format!("--advertise-client-urls={etcd_url}"),
                    format!("--listen-peer-urls={peer}"),
                    format!("--initial-advertise-peer-urls={peer}"),
                    format!("--initial-cluster=kmb={peer}"),
                    "--initial-cluster-state=new".to_owned(),
                    // Tests throw the data away; fsync only costs time.
                    "--unsafe-no-fsync=true".to_owned(),
                    "--log-outputs=stderr".to_owned(),
                ];
                let probe = Probe {
                    client: http_client(),
                    url: format!("{etcd_url}/health"),
                    etcd: true,
                };
                (bin.join("etcd"), args, probe, ETCD_READY)
            })
            .await,
        );

        // kube-apiserver
        let p = |name: &str| root.join("pki").join(name).display().to_string();
        let mut server_url = String::new();
        let mut apiserver_command = (PathBuf::new(), Vec::new());
        let client = cp.client.clone();
        cp.apiserver = Some(
            start_component("kube-apiserver", &root, || {
                let port = free_port();
                server_url = format!("https://127.0.0.1:{port}");
                let mut args = vec![
                    format!("--etcd-servers={etcd_url}"),
                    "--bind-address=127.0.0.1".to_owned(),
                    "--advertise-address=127.0.0.1".to_owned(),
                    // The reconciler refuses loopback addresses for the `kubernetes`
                    // Service endpoints; nothing here needs those endpoints.
                    "--endpoint-reconciler-type=none".to_owned(),
                    format!("--secure-port={port}"),
                    format!("--tls-cert-file={}", p("apiserver.crt")),
                    format!("--tls-private-key-file={}", p("apiserver.key")),
                    format!("--client-ca-file={}", p("ca.crt")),
                    "--authorization-mode=RBAC".to_owned(),
                    "--anonymous-auth=false".to_owned(),
                    format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local"
                        .to_owned(),
                    format!("--service-account-key-file={}", p("sa.pub")),
                    format!("--service-account-signing-key-file={}", p("sa.key")),
                    format!("--requestheader-client-ca-file={}", p("front-proxy-ca.crt")),
                    "--requestheader-allowed-names=front-proxy-client".to_owned(),
                    "--requestheader-username-headers=X-Remote-User".to_owned(),
                    "--requestheader-group-headers=X-Remote-Group".to_owned(),
                    "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_owned(),
                    format!("--proxy-client-cert-file={}", p("front-proxy-client.crt")),
                    format!("--proxy-client-key-file={}", p("front-proxy-client.key")),
                    "--profiling=false".to_owned(),
                ];
                args.extend(opts.apiserver_args.iter().cloned());
                let probe = Probe {
                    client: client.clone(),
                    url: format!("{server_url}/readyz"),
                    etcd: false,
                };
                apiserver_command = (bin.join("kube-apiserver"), args.clone());
                (bin.join("kube-apiserver"), args, probe, APISERVER_READY)
            })
            .await,
        );
        cp.server_url = server_url;
        cp.apiserver_command = apiserver_command;
        cp.admin_kubeconfig = cp.write_kubeconfig("admin", &p("admin.crt"), &p("admin.key"));
        let kcm_kubeconfig = cp.write_kubeconfig(
            "kube-controller-manager",
            &p("kube-controller-manager.crt"),
            &p("kube-controller-manager.key"),
        );

        // kube-controller-manager
        if !opts.skip_controller_manager {
            let kubeconfig = kcm_kubeconfig.display().to_string();
            cp.kcm = Some(
                start_component("kube-controller-manager", &root, || {
                    let port = free_port();
                    let mut args = vec![
                        format!("--kubeconfig={kubeconfig}"),
                        format!("--authentication-kubeconfig={kubeconfig}"),
                        format!("--authorization-kubeconfig={kubeconfig}"),
                        "--bind-address=127.0.0.1".to_owned(),
                        format!("--secure-port={port}"),
                        format!("--tls-cert-file={}", p("kcm-serving.crt")),
                        format!("--tls-private-key-file={}", p("kcm-serving.key")),
                        "--use-service-account-credentials=true".to_owned(),
                        format!("--service-account-private-key-file={}", p("sa.key")),
                        format!("--root-ca-file={}", p("ca.crt")),
                        "--leader-elect=false".to_owned(),
                        format!("--controllers={KCM_CONTROLLERS}"),
                        "--horizontal-pod-autoscaler-sync-period=2s".to_owned(),
                        "--horizontal-pod-autoscaler-downscale-stabilization=10s".to_owned(),
                        "--horizontal-pod-autoscaler-initial-readiness-delay=1s".to_owned(),
                        "--horizontal-pod-autoscaler-cpu-initialization-period=10s".to_owned(),
                        "--profiling=false".to_owned(),
                        // HPA decisions ("New size", errors fetching metrics) log at v=2.
                        "--v=2".to_owned(),
                    ];
                    args.extend(opts.controller_manager_args.iter().cloned());
                    let probe = Probe {
                        client: client.clone(),
                        url: format!("https://127.0.0.1:{port}/healthz"),
                        etcd: false,
                    };
                    (bin.join("kube-controller-manager"), args, probe, KCM_READY)
                })
                .await,
            );
        }
        eprintln!(
            "control plane at {} ready in {:.1?} (files in {})",
            cp.server_url,
            t0.elapsed(),
            root.display()
        );
        cp
    }

    /// `https://127.0.0.1:<port>` of kube-apiserver.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// Kubeconfig of a `system:masters` user.
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// The cluster CA (PEM): signs the apiserver's serving and all client certs.
    pub fn ca_pem_path(&self) -> PathBuf {
        self.pki_path("ca.crt")
    }

    /// The front-proxy CA (PEM) given to `--requestheader-client-ca-file`.
    pub fn front_proxy_ca_path(&self) -> PathBuf {
        self.pki_path("front-proxy-ca.crt")
    }

    /// The aggregator's client certificate and key (PEM, CN `front-proxy-client`),
    /// for tests that call an aggregated server the way kube-apiserver does.
    pub fn front_proxy_client_paths(&self) -> (PathBuf, PathBuf) {
        (
            self.pki_path("front-proxy-client.crt"),
            self.pki_path("front-proxy-client.key"),
        )
    }

    /// The tempdir holding `pki/`, `kubeconfig/`, `logs/` and `etcd/`.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir is set until drop").path()
    }

    /// Log file of `component` (`etcd`, `kube-apiserver`, `kube-controller-manager`).
    pub fn log_path(&self, component: &str) -> PathBuf {
        self.dir().join("logs").join(format!("{component}.log"))
    }

    /// The last `n` lines of `component`'s log.
    pub fn log_tail(&self, component: &str, n: usize) -> String {
        tail(&self.log_path(component), n)
    }

    /// `(component, pid)` of each running component.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        [&self.kcm, &self.apiserver, &self.etcd]
            .into_iter()
            .flatten()
            .filter_map(|c| Some((c.name, c.child.id()?)))
            .collect()
    }

    /// Stops kube-apiserver as the kubelet stops a static pod: SIGTERM, up to `grace` to
    /// exit, then SIGKILL. etcd and the controller manager keep running: an API outage in
    /// which the cluster's state survives. [`ControlPlane::start_apiserver`] brings it back.
    /// Returns whether it exited within the grace (kube-apiserver closes its listener at
    /// once, but holds open watch connections for up to a minute before it exits).
    pub async fn stop_apiserver(&mut self, grace: Duration) -> bool {
        let Some(mut c) = self.apiserver.take() else {
            return true;
        };
        if let Some(pid) = c.child.id() {
            // procps' kill with a positive pid: only this process.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let exited = tokio::time::timeout(grace, c.child.wait()).await.is_ok();
        drop(c); // kills (if still running) and reaps
        exited
    }

    /// Starts kube-apiserver again with the flags, port and certificates it first ran
    /// with (the same etcd, so every object is still there) and waits for `/readyz`.
    pub async fn start_apiserver(&mut self) {
        assert!(self.apiserver.is_none(), "kube-apiserver is running");
        let (bin, args) = self.apiserver_command.clone();
        let root = self.dir().to_path_buf();
        let log = self.log_path("kube-apiserver");
        let t0 = Instant::now();
        let mut comp = spawn("kube-apiserver", &bin, &args, &root, &log);
        let probe = Probe {
            client: self.client.clone(),
            url: format!("{}/readyz", self.server_url),
            etcd: false,
        };
        loop {
            if let Ok(Some(status)) = comp.child.try_wait() {
                panic!(
                    "kube-apiserver exited on restart with {status}\n--- last lines of {} ---\n{}",
                    log.display(),
                    tail(&log, 40)
                );
            }
            if probe.ok().await {
                eprintln!("kube-apiserver ready again in {:.1?}", t0.elapsed());
                break;
            }
            if t0.elapsed() > APISERVER_READY {
                drop(comp);
                panic!(
                    "kube-apiserver not ready within {APISERVER_READY:?} of its restart\n--- last lines of {} ---\n{}",
                    log.display(),
                    tail(&log, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.apiserver = Some(comp);
    }

    /// An HTTP client authenticated as the admin (`system:masters`) that
    /// trusts the cluster CA.
    pub fn admin_client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Mints a client certificate for `user` (CN) in `groups` (O, at most two:
    /// rcgen cannot write more Organization attributes) signed by the cluster
    /// CA, and returns a kubeconfig using it.
    pub fn client_kubeconfig(&self, user: &str, groups: &[&str]) -> PathBuf {
        let (crt, key_path) = self.client_certificate(user, groups);
        let stem = crt
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.write_kubeconfig(
            &stem,
            &crt.display().to_string(),
            &key_path.display().to_string(),
        )
    }

    /// Mints a client certificate for `user` in `groups` as [`ControlPlane::client_kubeconfig`]
    /// does; returns the (certificate, key) PEM files, for clients that are not kubectl.
    pub fn client_certificate(&self, user: &str, groups: &[&str]) -> (PathBuf, PathBuf) {
        let n = self.minted.fetch_add(1, Ordering::Relaxed);
        let stem: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let stem = format!("user-{n}-{stem}");
        let (cert, key) = leaf(&self.ca, user, groups, &[], Usage::Client);
        let crt = self.pki_path(&format!("{stem}.crt"));
        let key_path = self.pki_path(&format!("{stem}.key"));
        write(&crt, &cert);
        write(&key_path, &key);
        (crt, key_path)
    }

    /// Runs kubectl with the admin kubeconfig; never panics on kubectl's exit status.
    pub async fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_as(&self.admin_kubeconfig, args, None).await
    }

    /// Runs kubectl as the admin and returns stdout; panics with stderr on failure.
    pub async fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args).await;
        check_kubectl(args, &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl with `kubeconfig` (e.g. from [`ControlPlane::client_kubeconfig`]),
    /// feeding `stdin` if given.
    pub async fn kubectl_as(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Output {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!(
                "--cache-dir={}",
                self.dir().join("kubectl-cache").display()
            ))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", self.kubectl.display()));
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            pipe.write_all(input.as_bytes())
                .await
                .unwrap_or_else(|e| panic!("writing kubectl {args:?} stdin: {e}"));
        }
        let run = child.wait_with_output();
        match tokio::time::timeout(Duration::from_secs(60), run).await {
            Ok(out) => out.unwrap_or_else(|e| panic!("waiting for kubectl {args:?}: {e}")),
            Err(_) => panic!("kubectl {args:?} did not finish within 60 s"),
        }
    }

    /// `kubectl apply -f -` of `yaml` (one or more documents) as the admin;
    /// panics with kubectl's stderr on failure. Returns kubectl's stdout.
    pub async fn apply(&self, yaml: &str) -> String {
        let args = ["apply", "-f", "-"];
        let out = self
            .kubectl_as(&self.admin_kubeconfig, &args, Some(yaml))
            .await;
        check_kubectl(&args, &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// GET `path` (e.g. `/api/v1/namespaces/default/pods`) as the admin:
    /// the status and the body as JSON (`Null` if it is not JSON).
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let url = format!("{}{path}", self.server_url);
        let resp = self
            .client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("reading GET {url}: {e}"));
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// GET `path` as the admin; panics unless the answer is 200 with JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path} -> {status}: {body}");
        body
    }

    /// Marks pod `ns/name` as a kubelet would once its containers run: phase
    /// `Running`, condition `Ready`, a pod IP. (It stays unscheduled: no node.)
    pub async fn set_pod_running(&self, ns: &str, name: &str) {
        let n = self.minted.fetch_add(1, Ordering::Relaxed);
        let now = "2000-01-01T00:00:00Z";
        let status = serde_json::json!({
            "status": {
                "phase": "Running",
                "podIP": format!("10.1.{}.{}", (n / 250) % 250, n % 250 + 1),
                "startTime": now,
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                ],
            }
        })
        .to_string();
        self.kubectl_ok(&[
            "-n",
            ns,
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ])
        .await;
    }

    /// The bridge's three APIServices, as deploy/ registers them.
    pub const BRIDGE_APISERVICES: [&'static str; 3] = [
        "v1beta1.custom.metrics.k8s.io",
        "v1beta2.custom.metrics.k8s.io",
        "v1beta1.external.metrics.k8s.io",
    ];

    /// Waits until each of the bridge's APIServices reports `Available`.
    pub async fn wait_apiservices_available(&self) {
        for name in ControlPlane::BRIDGE_APISERVICES {
            self.wait_apiservice_available(name).await;
        }
    }

    /// Waits (90 s at most) until APIService `name` has `Available=True`.
    pub async fn wait_apiservice_available(&self, name: &str) {
        self.wait_for(
            &format!("APIService {name} Available"),
            Duration::from_secs(90),
            || async {
                let svc = self
                    .get_json(&format!(
                        "/apis/apiregistration.k8s.io/v1/apiservices/{name}"
                    ))
                    .await;
                let available = svc["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Available" && c["status"] == "True")
                });
                available.then_some(())
            },
        )
        .await;
    }

    /// Polls `f` like [`wait_until`]; on timeout the panic is preceded by the
    /// ends of the apiserver and controller-manager logs. For waits on cluster
    /// state, e.g. "the HPA scaled the Deployment to 3".
    pub async fn wait_for<T, F, Fut>(&self, what: &str, timeout: Duration, f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        struct LogsOnPanic<'a>(&'a ControlPlane);
        impl Drop for LogsOnPanic<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    for c in ["kube-apiserver", "kube-controller-manager"] {
                        eprintln!(
                            "--- last lines of {} ---\n{}",
                            self.0.log_path(c).display(),
                            self.0.log_tail(c, 30)
                        );
                    }
                }
            }
        }
        let _logs = LogsOnPanic(self);
        wait_until(what, timeout, f).await
    }

    fn pki_path(&self, name: &str) -> PathBuf {
        self.dir().join("pki").join(name)
    }

    fn write_kubeconfig(&self, name: &str, cert: &str, key: &str) -> PathBuf {
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmb", "cluster": {
                "server": self.server_url,
                "certificate-authority": self.ca_pem_path(),
            }}],
            "users": [{"name": name, "user": {
                "client-certificate": cert,
                "client-key": key,
            }}],
            "contexts": [{"name": "kmb", "context": {"cluster": "kmb", "user": name}}],
            "current-context": "kmb",
        });
        let path = self.dir().join("kubeconfig").join(format!("{name}.json"));
        write(&path, &config.to_string());
        path
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for c in [self.kcm.take(), self.apiserver.take(), self.etcd.take()]
            .into_iter()
            .flatten()
        {
            drop(c); // Component::drop kills and reaps
        }
        let keep = std::thread::panicking()
            || std::env::var_os("KMB_KEEP_CONTROLPLANE").is_some_and(|v| v == "1");
        if let (true, Some(dir)) = (keep, self.dir.take()) {
            let _ = std::fs::remove_dir_all(dir.path().join("etcd"));
            let path = dir.keep();
            eprintln!(
                "control plane files (logs, PKI, kubeconfigs) kept in {}",
                path.display()
            );
        }
    }
}

impl Drop for Component {
    /// SIGKILL and reap: the data is disposable, and speed matters.
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = self.child.start_kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                _ => return,
            }
        }
        eprintln!(
            "warning: {} (pid {:?}) did not exit 10 s after SIGKILL",
            self.name,
            self.child.id()
        );
    }
}

/// How [`start_component`] decides a component is up: `url` answers 200
/// (and, for etcd, says `"health":"true"`).
struct Probe {
    client: reqwest::Client,
    url: String,
    etcd: bool,
}

impl Probe {
    async fn ok(&self) -> bool {
        let Ok(resp) = self.client.get(&self.url).send().await else {
            return false;
        };
        if resp.status() != 200 {
            return false;
        }
        !self.etcd
            || resp
                .text()
                .await
                .is_ok_and(|t| t.replace(' ', "").contains("\"health\":\"true\""))
    }
}

/// Spawns the command `make()` describes and waits for its probe, retrying
/// with fresh ports (`make` is called again) if a port was taken. Panics with
/// the log tail if the process exits or the probe times out.
async fn start_component<F>(name: &'static str, root: &Path, mut make: F) -> Component
where
    F: FnMut() -> (PathBuf, Vec<String>, Probe, Duration),
{
    let log = root.join("logs").join(format!("{name}.log"));
    for attempt in 1..=PORT_ATTEMPTS {
        let (bin, args, probe, timeout) = make();
        let t0 = Instant::now();
        let mut comp = spawn(name, &bin, &args, root, &log);
        let err = loop {
            if let Ok(Some(status)) = comp.child.try_wait() {
                break format!("{name} exited during startup with {status}");
            }
            if probe.ok().await {
                eprintln!("{name} ready in {:.1?}", t0.elapsed());
                return comp;
            }
            if t0.elapsed() > timeout {
                break format!("{name} not ready within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        drop(comp); // kill and reap before reading the log or retrying
        let log_tail = tail(&log, 40);
        if attempt < PORT_ATTEMPTS && log_tail.contains("address already in use") {
            eprintln!("{name}: a port was taken ({err}); retrying with new ports");
            continue;
        }
        panic!(
            "{err}\ncommand: {} {}\n--- last lines of {} ---\n{log_tail}",
            bin.display(),
            args.join(" "),
            log.display()
        );
    }
    unreachable!("the last attempt returns or panics")
}

fn spawn(name: &'static str, bin: &Path, args: &[String], root: &Path, log: &Path) -> Component {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
    let file_err = file
        .try_clone()
        .unwrap_or_else(|e| panic!("duplicating the handle of {}: {e}", log.display()));
    let mut cmd = super::command_dying_with_parent(bin);
    let child = cmd
        .args(args)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file_err)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {name} ({}): {e}", bin.display()));
    Component {
        name,
        child,
        log: log.to_path_buf(),
    }
}

/// The directory holding the three binaries: `$KMB_CONTROLPLANE_BIN`, else
/// what `integration/controlplane/build.sh` prints (building if needed).
/// Resolved once per test binary.
async fn binaries() -> PathBuf {
    static BIN: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    let dir = BIN
        .get_or_init(|| {
            super::cached_build(
                "KMB_CONTROLPLANE_BIN",
                "integration/controlplane/build.sh",
                "the control plane binaries",
            )
        })
        .await;
    for b in ["etcd", "kube-apiserver", "kube-controller-manager"] {
        assert!(
            dir.join(b).is_file(),
            "{} has no {b}; set KMB_CONTROLPLANE_BIN to a directory with etcd, kube-apiserver \
             and kube-controller-manager, or unset it to build them with \
             integration/controlplane/build.sh",
            dir.display()
        );
    }
    dir.clone()
}

/// `$KUBECTL`, else `kubectl` on `PATH`, else `/usr/bin/kubectl`.
fn find_kubectl() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBECTL") {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("kubectl"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("/usr/bin/kubectl"))
}

fn check_kubectl(args: &[&str], out: &Output) {
    assert!(
        out.status.success(),
        "kubectl {args:?} failed with {}:\nstderr: {}\nstdout: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The certificates and keys the components use, written under `<root>/pki`.
struct Pki {
    ca: Issuer<'static, KeyPair>,
    ca_pem: String,
    admin_cert: CertificateDer<'static>,
    admin_key: Vec<u8>,
}

#[derive(Clone, Copy)]
enum Usage {
    Server,
    Client,
}

impl Pki {
    fn generate(root: &Path) -> Pki {
        let dir = root.join("pki");
        let put = |name: &str, pem: &str| write(&dir.join(name), pem);

        let (ca, ca_pem) = new_ca("kmb-test-cluster-ca");
        put("ca.crt", &ca_pem);
        put("ca.key", &ca.key().serialize_pem());

        let (crt, key) = leaf(
            &ca,
            "kube-apiserver",
            &[],
            &[
                "127.0.0.1",
                "::1",
                "localhost",
                "10.0.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            Usage::Server,
        );
        put("apiserver.crt", &crt);
        put("apiserver.key", &key);

        let (crt, key) = leaf(
            &ca,
            "kube-controller-manager",
            &[],
            &["127.0.0.1", "localhost"],
            Usage::Server,
        );
        put("kcm-serving.crt", &crt);
        put("kcm-serving.key", &key);

        let sa = KeyPair::generate().expect("generating the service-account key");
        put("sa.key", &sa.serialize_pem());
        put("sa.pub", &sa.public_key_pem());

        let (fp_ca, fp_ca_pem) = new_ca("kmb-test-front-proxy-ca");
        put("front-proxy-ca.crt", &fp_ca_pem);
        let (crt, key) = leaf(&fp_ca, "front-proxy-client", &[], &[], Usage::Client);
        put("front-proxy-client.crt", &crt);
        put("front-proxy-client.key", &key);

        let (crt, key) = leaf(
            &ca,
            "system:kube-controller-manager",
            &[],
            &[],
            Usage::Client,
        );
        put("kube-controller-manager.crt", &crt);
        put("kube-controller-manager.key", &key);

        let (admin_pem, admin_key_pem) =
            leaf(&ca, "kmb-admin", &["system:masters"], &[], Usage::Client);
        put("admin.crt", &admin_pem);
        put("admin.key", &admin_key_pem);
        let admin_cert = CertificateDer::from_pem_slice(admin_pem.as_bytes())
            .expect("parsing the admin certificate just generated");
        let admin_key = KeyPair::from_pem(&admin_key_pem)
            .expect("parsing the admin key just generated")
            .serialize_der();

        Pki {
            ca,
            ca_pem,
            admin_cert,
            admin_key,
        }
    }

    /// A client presenting the admin certificate and trusting only the cluster CA.
    fn admin_client(&self) -> reqwest::Client {
        let mut roots = rustls::RootCertStore::empty();
        let ca = CertificateDer::from_pem_slice(self.ca_pem.as_bytes())
            .expect("parsing the CA certificate just generated");
        roots
            .add(ca)
            .expect("adding the cluster CA to a root store");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.admin_key.clone()));
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![self.admin_cert.clone()], key)
            .expect("rustls accepts the admin certificate and key");
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("building the admin HTTP client")
    }
}

/// A self-signed CA: its issuer (key included) and certificate PEM.
fn new_ca(cn: &str) -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate().expect("generating a CA key");
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, cn.to_owned());
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params
        .self_signed(&key)
        .unwrap_or_else(|e| panic!("self-signing CA {cn}: {e}"));
    (Issuer::new(params, key), cert.pem())
}

/// A certificate for `cn` in `groups` (Organization, at most two) with `sans`,
/// signed by `ca`: `(certificate PEM, PKCS#8 key PEM)`.
fn leaf(
    ca: &Issuer<'static, KeyPair>,
    cn: &str,
    groups: &[&str],
    sans: &[&str],
    usage: Usage,
) -> (String, String) {
    assert!(
        groups.len() <= 2,
        "rcgen can put at most two Organization (group) attributes in a certificate, got {groups:?}"
    );
    let key = KeyPair::generate().expect("generating a key");
    let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(sans)
        .unwrap_or_else(|e| panic!("certificate parameters for {cn}: {e}"));
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, cn.to_owned());
    // rcgen keeps one value per attribute type; a custom type with the
    // Organization OID (2.5.4.10) carries a second group.
    let org_types = [
        DnType::OrganizationName,
        DnType::CustomDnType(vec![2, 5, 4, 10]),
    ];
    for (ty, group) in org_types.into_iter().zip(groups) {
        params.distinguished_name.push(ty, (*group).to_owned());
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match usage {
        Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, ca)
        .unwrap_or_else(|e| panic!("signing the certificate for {cn}: {e}"));
    (cert.pem(), key.serialize_pem())
}

fn mkdir(path: &Path) {
    std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The last `n` lines of the file at `path` (empty if unreadable).
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
