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
    Serve(Box<ServeArgs>),
    /// Validate a rules file: TOML, regexes, templates, PromQL. Exits non-zero on any problem.
    Check {
        /// The rules file.
        file: PathBuf,
    },
    /// Convert a prometheus-adapter config (its config.yaml, a ConfigMap holding one, or the Helm
    /// chart's values) into a rules file, resourceRules included; with --helm-values, the
    /// prometheus-adapter chart's values into this project's chart values.
    Convert {
        /// The prometheus-adapter YAML (`-` for stdin). With --helm-values: where the rules
        /// are when not in the values (the ConfigMap `rules.existing` names, or the file
        /// `--config` in `extraArguments` names).
        #[arg(required_unless_present = "helm_values")]
        file: Option<PathBuf>,
        /// The prometheus-community prometheus-adapter chart's values file (`-` for stdin):
        /// write values for deploy/chart/kube-metrics-bridge (YAML) instead of a rules file.
        #[arg(long, value_name = "FILE")]
        helm_values: Option<PathBuf>,
        /// Write the rules file (with --helm-values: the values) here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// `[prometheus] url` to write (prometheus-adapter's --prometheus-url; with
        /// --helm-values, over what the values say); else a placeholder.
        #[arg(long)]
        prometheus_url: Option<String>,
    },
    /// Check an installation in a cluster and explain what is wrong, one line a check.
    Doctor(crate::cmd::doctor::DoctorArgs),
    /// Ask two metrics API servers (e.g. prometheus-adapter and the bridge) the same discovery
    /// and value requests and print what differs. Exits 1 when something does, 2 when the
    /// comparison could not be made.
    Compare(Box<crate::cmd::compare::CompareArgs>),
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
    /// kubeconfig for the cluster (else `KUBECONFIG` or `~/.kube/config` when present, then
    /// in-cluster config).
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
    /// Requests answered at once on the secure port; more get 429 TooManyRequests with
    /// Retry-After. /healthz, /livez, /readyz are exempt. 0: no limit.
    #[arg(long, env = "KMB_MAX_REQUESTS_INFLIGHT", default_value_t = 400)]
    pub max_requests_inflight: usize,
    /// Connections open at once on the secure port (TLS handshakes included); more are closed
    /// at accept. 0: no limit.
    #[arg(long, env = "KMB_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Connections open at once on the secure port from one client address, so one client
    /// cannot take every slot. 0: no limit.
    #[arg(long, env = "KMB_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,
    /// Connections open at once on the plain metrics port. 0: no limit.
    #[arg(long, env = "KMB_METRICS_MAX_CONNECTIONS", default_value_t = 256)]
    pub metrics_max_connections: usize,
    /// Connections open at once on the metrics port from one client address (scrapers and
    /// probes need a few). 0: no limit.
    #[arg(long, env = "KMB_METRICS_MAX_CONNECTIONS_PER_IP", default_value_t = 16)]
    pub metrics_max_connections_per_ip: usize,
    /// A connection that sends nothing this long after the TLS handshake (or, on the metrics
    /// port, after accept) is closed. HTTP/1.1, HTTP/2 and connections without ALPN alike.
    /// 0: no deadline.
    #[arg(long, env = "KMB_FIRST_BYTE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub first_byte_timeout: std::time::Duration,
    /// A connection with no request in flight this long is closed (HTTP/1.1 keep-alive and
    /// HTTP/2 alike; kube-apiserver's idle timeout). 0: never.
    #[arg(long, env = "KMB_IDLE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "90s")]
    pub idle_timeout: std::time::Duration,
    /// HTTP/2 streams a client may have open at once on one connection.
    #[arg(long, env = "KMB_HTTP2_MAX_STREAMS_PER_CONNECTION", default_value_t = 250, value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_streams_per_connection: u32,
    /// TokenReviews sent to kube-apiserver per second on average (bearer tokens not in the
    /// cache); beyond it and its burst a token is not reviewed and the request gets 401.
    /// 0: no rate limit.
    #[arg(
        long,
        env = "KMB_AUTHENTICATION_TOKEN_REVIEW_QPS",
        default_value_t = 20.0,
        value_parser = non_negative_rate
    )]
    pub authentication_token_review_qps: f64,
    /// TokenReviews that may be sent back to back after a quiet spell.
    #[arg(
        long,
        env = "KMB_AUTHENTICATION_TOKEN_REVIEW_BURST",
        default_value_t = 40
    )]
    pub authentication_token_review_burst: u32,
    /// TokenReviews waiting for kube-apiserver at once; a review that cannot start within a
    /// second is not sent (401). 0: no limit.
    #[arg(
        long,
        env = "KMB_AUTHENTICATION_TOKEN_REVIEW_MAX_INFLIGHT",
        default_value_t = 8
    )]
    pub authentication_token_review_max_inflight: usize,
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

    /// Limits of the secure port; `metrics` is where its counts go.
    pub fn secure_server_options(
        &self,
        metrics: crate::metrics::ListenerMetrics,
    ) -> crate::server::ServerOptions {
        crate::server::ServerOptions {
            first_byte_timeout: self.first_byte_timeout,
            idle_timeout: self.idle_timeout,
            max_concurrent_streams: self.http2_max_streams_per_connection,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_requests_inflight: self.max_requests_inflight,
            metrics,
            ..crate::server::ServerOptions::default()
        }
    }

    /// Limits of the plain metrics port: the same deadlines, its own connection cap, and a
    /// small fixed in-flight limit for `/metrics` (health is exempt), as only scrapers and
    /// probes call it.
    pub fn metrics_server_options(
        &self,
        metrics: crate::metrics::ListenerMetrics,
    ) -> crate::server::ServerOptions {
        crate::server::ServerOptions {
            max_connections: self.metrics_max_connections,
            max_connections_per_ip: self.metrics_max_connections_per_ip,
            max_requests_inflight: METRICS_PORT_MAX_REQUESTS_INFLIGHT,
            ..self.secure_server_options(metrics)
        }
    }

    pub fn token_review_limits(&self) -> crate::auth::reviews::ReviewLimits {
        crate::auth::reviews::ReviewLimits {
            qps: self.authentication_token_review_qps,
            burst: self.authentication_token_review_burst,
            max_inflight: self.authentication_token_review_max_inflight,
            ..crate::auth::reviews::ReviewLimits::default()
        }
    }
}

fn non_negative_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a rate (a number >= 0)")),
    }
}

/// `/metrics` requests answered at once on the metrics port (health paths are not counted).
pub const METRICS_PORT_MAX_REQUESTS_INFLIGHT: usize = 16;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    fn serve(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let mut argv = vec!["kube-metrics-bridge", "serve", "--config", "rules.toml"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Serve(args) => *args,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn limits_have_defaults_and_reach_the_server_options() {
        let args = serve(&[]).expect("defaults");
        let secure = args.secure_server_options(Default::default());
        assert_eq!(secure.max_connections, 1024);
        assert_eq!(secure.max_requests_inflight, 400);
        assert_eq!(secure.first_byte_timeout, Duration::from_secs(10));
        assert_eq!(secure.idle_timeout, Duration::from_secs(90));
        assert_eq!(secure.max_concurrent_streams, 250);
        assert_eq!(secure.max_connections_per_ip, 256);
        let plain = args.metrics_server_options(Default::default());
        assert_eq!(plain.max_connections, 256);
        assert_eq!(plain.max_connections_per_ip, 16);
        assert_eq!(
            plain.max_requests_inflight,
            METRICS_PORT_MAX_REQUESTS_INFLIGHT
        );
        assert_eq!(plain.first_byte_timeout, Duration::from_secs(10));
        let reviews = args.token_review_limits();
        assert_eq!(
            (reviews.qps, reviews.burst, reviews.max_inflight),
            (20.0, 40, 8)
        );

        let args = serve(&[
            "--max-connections=10",
            "--metrics-max-connections=3",
            "--max-requests-inflight=0",
            "--first-byte-timeout=2s",
            "--idle-timeout=0s",
            "--http2-max-streams-per-connection=16",
            "--authentication-token-review-qps=0.5",
        ])
        .expect("flags");
        let secure = args.secure_server_options(Default::default());
        assert_eq!(
            (
                secure.max_connections,
                secure.max_requests_inflight,
                secure.max_concurrent_streams
            ),
            (10, 0, 16)
        );
        assert_eq!(secure.first_byte_timeout, Duration::from_secs(2));
        assert_eq!(secure.idle_timeout, Duration::ZERO);
        assert_eq!(
            args.metrics_server_options(Default::default())
                .max_connections,
            3
        );
        assert_eq!(args.token_review_limits().qps, 0.5);
    }

    #[test]
    fn nonsense_limits_are_refused() {
        for bad in [
            "--authentication-token-review-qps=-1",
            "--authentication-token-review-qps=NaN",
            "--http2-max-streams-per-connection=0",
            "--first-byte-timeout=soon",
            "--max-connections=-5",
        ] {
            assert!(serve(&[bad]).is_err(), "{bad} accepted");
        }
    }
}
