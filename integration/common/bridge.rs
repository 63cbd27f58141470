//! Runs the real `kube-metrics-bridge` binary for black-box tests: rules in a temp dir, a
//! generated certificate, a client that trusts exactly that certificate's CA.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{free_port, wait_until};

pub struct Bridge {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub metrics_port: u16,
    pub rules_path: PathBuf,
    client: reqwest::Client,
    plain: reqwest::Client,
}

/// An HTTPS client trusting only the PEM CA at `ca` (HTTP/2 when `h2`).
pub fn tls_client(ca: &Path, h2: bool) -> reqwest::Client {
    tls_client_with(ca, h2, None)
}

/// Like [`tls_client`], presenting the client certificate (chain, key) PEM files.
pub fn tls_client_with(ca: &Path, h2: bool, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    tls_client_builder(ca, h2, identity)
        .build()
        .expect("TLS test client")
}

/// The builder behind [`tls_client_with`], for tests that need more (default headers, no
/// connection pool).
pub fn tls_client_builder(
    ca: &Path,
    h2: bool,
    identity: Option<(&Path, &Path)>,
) -> reqwest::ClientBuilder {
    let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("reading {}: {e}", ca.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("CA PEM")).expect("adding CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let mut tls = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = rustls_pki_types::CertificateDer::pem_file_iter(cert)
                .expect("client cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("client cert PEM");
            let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).expect("client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client identity")
        }
    };
    tls.alpn_protocols = if h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .timeout(Duration::from_secs(15));
    if !h2 {
        builder = builder.http1_only();
    }
    builder
}

use rustls_pki_types::pem::PemObject;

impl Bridge {
    /// Writes `rules` and starts `serve --standalone` with a generated certificate.
    pub async fn start(rules: &str) -> Bridge {
        Bridge::start_with(rules, &[]).await
    }

    pub async fn start_with(rules: &str, extra: &[&str]) -> Bridge {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules_path = dir.path().join("rules.toml");
        std::fs::write(&rules_path, rules).expect("writing rules");
        Bridge::start_in(dir, rules_path, extra).await
    }

    /// Starts with an existing rules path (e.g. a ConfigMap-style symlink).
    pub async fn start_in(dir: tempfile::TempDir, rules_path: PathBuf, extra: &[&str]) -> Bridge {
        let mut args = vec!["--standalone"];
        args.extend_from_slice(extra);
        Bridge::launch(dir, rules_path, &args).await
    }

    /// Starts connected to a cluster through `kubeconfig` (no `--standalone`), on loopback,
    /// with the Service name kube-aggregator will check in the generated certificate.
    pub async fn start_for_cluster(
        rules: &str,
        kubeconfig: &Path,
        service_dns: &str,
        extra: &[&str],
    ) -> Bridge {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules_path = dir.path().join("rules.toml");
        std::fs::write(&rules_path, rules).expect("writing rules");
        let kubeconfig = kubeconfig.display().to_string();
        let mut args = vec![
            "--kubeconfig",
            &kubeconfig,
            "--bind-address",
            "127.0.0.1",
            "--tls-sans",
            service_dns,
        ];
        args.extend_from_slice(extra);
        Bridge::launch(dir, rules_path, &args).await
    }

    async fn launch(dir: tempfile::TempDir, rules_path: PathBuf, extra: &[&str]) -> Bridge {
        let program = Command::new(env!("CARGO_BIN_EXE_kube-metrics-bridge"));
        let dir_inside = dir.path().to_path_buf();
        let mut args: Vec<String> = vec!["serve".into(), "--config".into()];
        args.push(rules_path.display().to_string());
        args.extend(extra.iter().map(|a| a.to_string()));
        Bridge::launch_program(dir, rules_path, program, &dir_inside, args).await
    }

    /// Starts `program args...` as the bridge, adding ports, log level and (unless given) a
    /// certificate directory. `dir_inside` is where the process sees `dir` (they differ when
    /// it runs in another root filesystem); the generated CA is read from `dir` either way.
    pub async fn launch_program(
        dir: tempfile::TempDir,
        rules_path: PathBuf,
        mut cmd: Command,
        dir_inside: &Path,
        args: Vec<String>,
    ) -> Bridge {
        let port = free_port();
        let metrics_port = free_port();
        let log = std::fs::File::create(dir.path().join("bridge.log")).expect("log file");
        let given = |flag: &str| args.iter().any(|a| a == flag);
        let rules_poll = !given("--rules-poll-interval");
        let cert_dir = !given("--tls-cert-file");
        cmd.args(&args)
            .arg("--secure-port")
            .arg(port.to_string())
            .arg("--metrics-bind-address")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .env("RUST_LOG", "kube_metrics_bridge=debug,info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        if rules_poll {
            cmd.arg("--rules-poll-interval").arg("1s");
        }
        if cert_dir {
            cmd.arg("--cert-dir").arg(dir_inside.join("certs"));
        }
        let child = cmd.spawn().expect("starting kube-metrics-bridge");
        let plain = super::http_client();
        let mut bridge = Bridge {
            child,
            port,
            metrics_port,
            rules_path,
            client: plain.clone(),
            plain,
            dir,
        };
        bridge.wait_ready().await;
        let ca = bridge.dir.path().join("certs").join("ca.crt");
        if ca.exists() {
            bridge.client = tls_client(&ca, false);
        }
        bridge
    }

    /// The process id of what was started (the bridge itself when wrappers `exec` it).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Replaces the client, e.g. to trust a CA a test made.
    pub fn set_client(&mut self, client: reqwest::Client) {
        self.client = client;
    }

    async fn wait_ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.metrics_port);
        let plain = self.plain.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("kube-metrics-bridge exited with {status}:\n{}", self.log());
            }
            if let Ok(r) = plain.get(&url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if tokio::time::Instant::now() > deadline {
                panic!("kube-metrics-bridge not ready after 60s:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The generated CA (PEM) that signed the serving certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("certs").join("ca.crt")
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("bridge.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// GET over TLS; the body parsed as JSON (Null if it is not JSON).
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, body) = self.get_text(path).await;
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:#}\n{}", self.log()));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Waits until `path` answers 200 and `check` accepts the JSON.
    pub async fn wait_for(
        &self,
        path: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_until(
            &format!("GET {path} to satisfy the check"),
            Duration::from_secs(45),
            || async {
                let (status, body) = self.get(path).await;
                (status == 200 && check(&body)).then_some(body)
            },
        )
        .await
    }

    /// The bridge's own metric (first sample whose line starts with `series`).
    pub async fn self_metric(&self, series: &str) -> Option<f64> {
        let text = self
            .plain
            .get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("bridge pid");
        let status = std::process::Command::new("kill")
            .arg("-s")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -s {signal} {pid}");
    }

    /// SIGTERM and wait: the exit status.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("bridge exits within 30s of SIGTERM")
            .expect("wait")
    }
}
