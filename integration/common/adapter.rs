//! prometheus-adapter v0.12.0 as a child process beside the bridge: the baseline of
//! `benches/compare.rs` and the other side of `integration/adapter_parity.rs`. Its binary is
//! built from the Go module proxy by `hack/bench/adapter/build.sh` (cached), or taken from
//! `KMB_BENCH_ADAPTER_BIN`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Child;

use super::{cached_build, command_dying_with_parent};

/// The prometheus-adapter binary (built on first use, a minute or two cold).
pub async fn adapter_bin() -> PathBuf {
    cached_build(
        "KMB_BENCH_ADAPTER_BIN",
        "hack/bench/adapter/build.sh",
        "prometheus-adapter",
    )
    .await
}

/// The TOML `kube-metrics-bridge convert` makes of prometheus-adapter's config file
/// `adapter_config`, querying `prometheus_url`: how both servers get the same rules.
pub fn convert_adapter_config(
    bridge_bin: &Path,
    adapter_config: &Path,
    prometheus_url: &str,
) -> String {
    let out = std::process::Command::new(bridge_bin)
        .arg("convert")
        .arg(adapter_config)
        .args(["--prometheus-url", prometheus_url])
        .output()
        .expect("kube-metrics-bridge convert");
    assert!(
        out.status.success(),
        "convert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("convert writes UTF-8")
}

/// Writes prometheus-adapter's config `yaml` to `dir/adapter.yaml` and the bridge's TOML
/// converted from it to `dir/rules.toml`; returns both paths (adapter's, bridge's).
pub fn write_both_configs(
    dir: &Path,
    yaml: &str,
    bridge_bin: &Path,
    prometheus_url: &str,
) -> (PathBuf, PathBuf) {
    let adapter_config = dir.join("adapter.yaml");
    std::fs::write(&adapter_config, yaml).expect("adapter config");
    let rules = dir.join("rules.toml");
    std::fs::write(
        &rules,
        convert_adapter_config(bridge_bin, &adapter_config, prometheus_url),
    )
    .expect("rules.toml");
    (adapter_config, rules)
}

/// A CA and a serving certificate for 127.0.0.1 signed by it, written to `dir`:
/// `(ca.crt, tls.crt, tls.key)`. Both servers serve it, so one client trusts both.
pub fn serving_pair(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    serving_pair_for(dir, &[])
}

/// [`serving_pair`] whose certificate also names `extra` (a Service's DNS name, for a server
/// kube-apiserver's aggregator calls).
pub fn serving_pair_for(dir: &Path, extra: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kmb-side-by-side-serving-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("serving key");
    let mut names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    names.extend(extra.iter().map(|n| n.to_string()));
    let mut params = CertificateParams::new(names).expect("serving certificate parameters");
    params
        .distinguished_name
        .push(DnType::CommonName, "kmb-side-by-side-server");
    let cert = params
        .signed_by(&key, &issuer)
        .expect("serving certificate");
    let paths = (dir.join("ca.crt"), dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&paths.0, ca_cert.pem()).expect("writing ca.crt");
    std::fs::write(&paths.1, cert.pem()).expect("writing tls.crt");
    std::fs::write(&paths.2, key.serialize_pem()).expect("writing tls.key");
    paths
}

/// The flags both servers take for serving `tls.crt`/`tls.key` on 127.0.0.1:`port`.
pub fn serving_args(tls: &(PathBuf, PathBuf, PathBuf), port: u16) -> Vec<String> {
    vec![
        format!("--tls-cert-file={}", tls.1.display()),
        format!("--tls-private-key-file={}", tls.2.display()),
        format!("--secure-port={port}"),
        "--bind-address=127.0.0.1".to_owned(),
    ]
}

/// prometheus-adapter's flags for acting as `kubeconfig`'s user against the cluster (lister,
/// authentication and authorization), reading `config`, querying `prometheus_url`; its own
/// certificate directory under `dir`.
pub fn adapter_args(
    dir: &Path,
    kubeconfig: &Path,
    prometheus_url: &str,
    config: &Path,
) -> Vec<String> {
    let k = kubeconfig.display();
    vec![
        format!("--cert-dir={}", dir.join("adapter-certs").display()),
        format!("--lister-kubeconfig={k}"),
        format!("--authentication-kubeconfig={k}"),
        format!("--authorization-kubeconfig={k}"),
        format!("--prometheus-url={prometheus_url}"),
        format!("--config={}", config.display()),
    ]
}

/// Spawns `bin args` so that it dies with the test, logging stdout and stderr to `log`. The
/// caller's `KMB_*` and `RUST_LOG` stay out (every bridge flag also reads `KMB_*`).
pub fn spawn_logged(bin: &Path, args: &[String], envs: &[(&str, &str)], log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("server log");
    let err = file.try_clone().expect("log handle");
    let mut cmd = command_dying_with_parent(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("KMB_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()))
}

/// The last `n` lines of a log file.
pub fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
