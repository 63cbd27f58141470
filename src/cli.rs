//! Command-line interface (design §3.1). Flag names follow kube-apiserver's where one exists,
//! and every flag also reads from the environment (`KMB_...`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "kube-metrics-bridge",
    version,
    about = "Serves the Kubernetes Custom and External Metrics APIs from PromQL rules"
)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "KMB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API server.
    Serve(ServeArgs),
    /// Validate a rules file: TOML, regexes, templates, PromQL. Exits non-zero on any problem.
    Check {
        /// The rules file.
        file: PathBuf,
    },
    /// Convert a prometheus-adapter config (its config.yaml, a ConfigMap holding one, or the Helm
    /// chart's values) into a rules file. resourceRules are out of scope and reported.
    Convert {
        /// The prometheus-adapter YAML (`-` for stdin).
        file: PathBuf,
        /// Write the rules file here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// `[prometheus] url` to write (prometheus-adapter's --prometheus-url); else a placeholder.
        #[arg(long)]
        prometheus_url: Option<String>,
    },
    /// Check an installation in a cluster and explain what is wrong, one line a check.
    Doctor(crate::cmd::doctor::DoctorArgs),
    /// Print the PromQL that a request path would run (asks Prometheus which series exist).
    Explain {
        #[arg(long, env = "KMB_CONFIG")]
        config: PathBuf,
        /// Overrides `[prometheus] url`.
        #[arg(long, env = "KMB_PROMETHEUS_URL")]
        prometheus_url: Option<String>,
        /// A request path, e.g. `namespaces/default/pods/*/http_requests_per_second?labelSelector=app=web`
        /// (the `/apis/<group>/<version>/` prefix is optional; without it, custom v1beta2).
        path: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The rules file (TOML). Watched and hot-reloaded; SIGHUP reloads it too.
    #[arg(long, env = "KMB_CONFIG")]
    pub config: PathBuf,
    /// Overrides `[prometheus] url` from the rules file.
    #[arg(long, env = "KMB_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// HTTPS port for the metrics APIs.
    #[arg(long, env = "KMB_SECURE_PORT", default_value_t = 6443)]
    pub secure_port: u16,
    /// Address for the HTTPS port (default: all interfaces; loopback with --standalone).
    #[arg(long, env = "KMB_BIND_ADDRESS")]
    pub bind_address: Option<IpAddr>,
    /// Serving certificate (PEM, may include the chain). Reloaded when it changes.
    #[arg(long, env = "KMB_TLS_CERT_FILE", requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Serving key (PEM).
    #[arg(long, env = "KMB_TLS_PRIVATE_KEY_FILE", requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// Where a self-signed pair is kept when no certificate files are given.
    #[arg(
        long,
        env = "KMB_CERT_DIR",
        default_value = "apiserver.local.config/certificates"
    )]
    pub cert_dir: PathBuf,
    /// Extra names for the self-signed certificate (e.g. the Service's DNS name).
    #[arg(long, env = "KMB_TLS_SANS", value_delimiter = ',')]
    pub tls_sans: Vec<String>,
    /// kubeconfig for the cluster (else in-cluster config).
    #[arg(long, env = "KMB_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Run without Kubernetes: no authentication, loopback only, no label selectors.
    #[arg(long, env = "KMB_STANDALONE")]
    pub standalone: bool,
    /// Plain-HTTP address for /metrics, /healthz, /livez, /readyz. Empty disables it.
    #[arg(long, env = "KMB_METRICS_BIND_ADDRESS", default_value = "0.0.0.0:9464")]
    pub metrics_bind_address: String,
    /// Start even if ConfigMap kube-system/extension-apiserver-authentication cannot be read;
    /// client certificates (and so the front proxy) are then not trusted until it can be.
    #[arg(long, env = "KMB_AUTHENTICATION_TOLERATE_LOOKUP_FAILURE")]
    pub authentication_tolerate_lookup_failure: bool,
    /// Paths served without authorization.
    #[arg(
        long,
        env = "KMB_AUTHORIZATION_ALWAYS_ALLOW_PATHS",
        value_delimiter = ',',
        default_value = "/healthz,/readyz,/livez"
    )]
    pub authorization_always_allow_paths: Vec<String>,
    /// How often the cluster's API discovery (resource names, kinds, scopes) is re-read.
    #[arg(long, env = "KMB_API_DISCOVERY_INTERVAL", value_parser = humantime::parse_duration, default_value = "5m")]
    pub api_discovery_interval: std::time::Duration,
    /// How often the rules file is re-read even without a change event.
    #[arg(long, env = "KMB_RULES_POLL_INTERVAL", value_parser = humantime::parse_duration, default_value = "30s")]
    pub rules_poll_interval: std::time::Duration,
}

impl ServeArgs {
    /// The secure address: --standalone forces loopback, as it has no authentication.
    pub fn secure_address(&self) -> anyhow::Result<SocketAddr> {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        let ip = match (self.standalone, self.bind_address) {
            (true, Some(ip)) if !ip.is_loopback() => {
                anyhow::bail!("--standalone serves without authentication, so --bind-address must be a loopback address, not {ip}")
            }
            (true, ip) => ip.unwrap_or(loopback),
            (false, ip) => ip.unwrap_or(IpAddr::from([0, 0, 0, 0])),
        };
        Ok(SocketAddr::new(ip, self.secure_port))
    }
}
