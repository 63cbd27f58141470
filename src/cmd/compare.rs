//! `compare`: asks two metrics API servers (typically prometheus-adapter and the bridge, side
//! by side before a cut-over) the same questions and prints what differs.
//!
//! Both are asked for discovery (`custom.metrics.k8s.io` `v1beta1` and `v1beta2`,
//! `external.metrics.k8s.io` `v1beta1`), then, for every metric both list, its values: a
//! custom metric of a namespaced resource as `namespaces/<ns>/<resource>/*/<metric>` in each
//! namespace, a namespace metric as `namespaces/<ns>/metrics/<metric>`, a cluster-scoped
//! resource's as `<resource>/*/<metric>`, an external metric as `namespaces/<ns>/<metric>`.
//! The namespaces are `--namespace`, else every namespace of the cluster (`--kubeconfig`).
//! What counts as a difference, and what does not, is in [`diff`].
//!
//! The servers are called directly (a port-forward, or their Service addresses), each with
//! its own TLS and credentials, as kube-apiserver's aggregator would call them; `--old-*` and
//! `--new-*` flags override the shared ones for one side. Exit code: 0 when nothing differs,
//! 1 when something does, 2 when the comparison could not be made (a server unreachable,
//! credentials refused, bad flags).

pub mod diff;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;

use diff::{
    compare_answers, compare_listings, listing, Answer, Difference, Listing, Side, Tolerance,
};

/// What to compare and how to reach the two servers.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// The reference server (e.g. prometheus-adapter): `https://HOST:PORT`, a path prefix
    /// allowed.
    #[arg(long, env = "KMB_COMPARE_OLD_URL", value_name = "URL")]
    pub old_url: String,
    /// The server compared with it (e.g. the bridge).
    #[arg(long, env = "KMB_COMPARE_NEW_URL", value_name = "URL")]
    pub new_url: String,
    /// CA bundle (PEM) to verify both servers' certificates with.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) to present to both (with --client-key-file).
    #[arg(long, value_name = "FILE")]
    pub client_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub client_key_file: Option<PathBuf>,
    /// A file holding a bearer token to send to both (e.g.
    /// `<(kubectl -n kube-system create token horizontal-pod-autoscaler)`).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Do not verify the servers' certificates.
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,
    /// The name to verify the servers' certificates for (and send as SNI and Host), when the
    /// URL's host is not in them: a port-forward to `https://127.0.0.1:8443` with
    /// `kube-metrics-bridge.custom-metrics.svc` (kubectl's --tls-server-name).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// --ca-file for the old server only.
    #[arg(long, value_name = "FILE")]
    pub old_ca_file: Option<PathBuf>,
    /// --client-cert-file for the old server only.
    #[arg(long, value_name = "FILE")]
    pub old_client_cert_file: Option<PathBuf>,
    /// --client-key-file for the old server only.
    #[arg(long, value_name = "FILE")]
    pub old_client_key_file: Option<PathBuf>,
    /// --token-file for the old server only.
    #[arg(long, value_name = "FILE")]
    pub old_token_file: Option<PathBuf>,
    /// --insecure-skip-tls-verify for the old server only.
    #[arg(long)]
    pub old_insecure_skip_tls_verify: bool,
    /// --tls-server-name for the old server only.
    #[arg(long, value_name = "NAME")]
    pub old_tls_server_name: Option<String>,
    /// --ca-file for the new server only.
    #[arg(long, value_name = "FILE")]
    pub new_ca_file: Option<PathBuf>,
    /// --client-cert-file for the new server only.
    #[arg(long, value_name = "FILE")]
    pub new_client_cert_file: Option<PathBuf>,
    /// --client-key-file for the new server only.
    #[arg(long, value_name = "FILE")]
    pub new_client_key_file: Option<PathBuf>,
    /// --token-file for the new server only.
    #[arg(long, value_name = "FILE")]
    pub new_token_file: Option<PathBuf>,
    /// --insecure-skip-tls-verify for the new server only.
    #[arg(long)]
    pub new_insecure_skip_tls_verify: bool,
    /// --tls-server-name for the new server only.
    #[arg(long, value_name = "NAME")]
    pub new_tls_server_name: Option<String>,
    /// Namespaces to ask for values (repeatable, or comma-separated); default: every
    /// namespace of the cluster.
    #[arg(long, short = 'n', value_delimiter = ',', value_name = "NAMESPACE")]
    pub namespace: Vec<String>,
    /// kubeconfig to list the cluster's namespaces with, when --namespace is not given (else
    /// `KUBECONFIG` or `~/.kube/config` when present, then in-cluster config).
    #[arg(long, env = "KMB_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Only metrics whose name (without the resource) matches this regex.
    #[arg(long, value_name = "REGEX")]
    pub metrics: Option<String>,
    /// Values this far apart, as a fraction of the larger, are equal (0.01: 1%).
    #[arg(long, default_value_t = 0.01, value_parser = non_negative)]
    pub relative_tolerance: f64,
    /// Values this far apart, in the metric's unit, are equal (prometheus-adapter truncates
    /// values to milli-units: 0.001).
    #[arg(long, default_value_t = 0.001, value_parser = non_negative)]
    pub absolute_tolerance: f64,
    /// Requests in flight at once to each server.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Deadline of each request.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number >= 0")),
    }
}

/// The group versions asked for discovery, and whether each is the external API.
const APIS: [(&str, bool); 3] = [
    ("custom.metrics.k8s.io/v1beta1", false),
    ("custom.metrics.k8s.io/v1beta2", false),
    ("external.metrics.k8s.io/v1beta1", true),
];
/// Where values are asked: the version every server of the custom API serves.
const CUSTOM_VALUES: &str = "custom.metrics.k8s.io/v1beta1";
const EXTERNAL_VALUES: &str = "external.metrics.k8s.io/v1beta1";

/// How one side is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Connection {
    url: String,
    ca_file: Option<PathBuf>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
    insecure: bool,
    tls_server_name: Option<String>,
}

impl CompareArgs {
    /// The connection of one side: its own flags over the shared ones.
    fn connection(&self, side: Side) -> Connection {
        let (url, ca, cert, key, token, insecure, name) = match side {
            Side::Old => (
                &self.old_url,
                &self.old_ca_file,
                &self.old_client_cert_file,
                &self.old_client_key_file,
                &self.old_token_file,
                self.old_insecure_skip_tls_verify,
                &self.old_tls_server_name,
            ),
            Side::New => (
                &self.new_url,
                &self.new_ca_file,
                &self.new_client_cert_file,
                &self.new_client_key_file,
                &self.new_token_file,
                self.new_insecure_skip_tls_verify,
                &self.new_tls_server_name,
            ),
        };
        Connection {
            url: url.trim_end_matches('/').to_string(),
            ca_file: ca.clone().or_else(|| self.ca_file.clone()),
            client_cert_file: cert.clone().or_else(|| self.client_cert_file.clone()),
            client_key_file: key.clone().or_else(|| self.client_key_file.clone()),
            token_file: token.clone().or_else(|| self.token_file.clone()),
            insecure: insecure || self.insecure_skip_tls_verify,
            tls_server_name: name.clone().or_else(|| self.tls_server_name.clone()),
        }
    }
}

/// One server: its HTTP client (TLS and credentials built in) and base URL.
struct Server {
    side: Side,
    /// The base URL requests go to (with --tls-server-name, that name as its host).
    url: String,
    /// How to name it in the output: the URL given, and the name verified.
    shown: String,
    http: reqwest::Client,
}

impl Server {
    /// `tokens` holds token files already read (a `<(...)` pipe can be read only once).
    fn new(
        side: Side,
        c: &Connection,
        timeout: Duration,
        tokens: &mut HashMap<PathBuf, String>,
    ) -> anyhow::Result<Server> {
        let place = format!("{side} server");
        let mut parsed = reqwest::Url::parse(&c.url)
            .with_context(|| format!("{place}: --{side}-url {:?}", c.url))?;
        if !matches!(parsed.scheme(), "https" | "http") {
            anyhow::bail!("{place}: --{side}-url {:?} is not an https:// URL", c.url);
        }
        // --tls-server-name: connect to the URL's address, but ask for (and verify) the name.
        let mut resolve = None;
        if let Some(name) = &c.tls_server_name {
            let addrs = parsed
                .socket_addrs(|| None)
                .with_context(|| format!("{place}: resolving {:?}", c.url))?;
            parsed
                .set_host(Some(name))
                .with_context(|| format!("{place}: --tls-server-name {name:?}"))?;
            resolve = Some((name.clone(), addrs));
        }
        crate::tls::install_crypto_provider();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT,
            reqwest::header::HeaderValue::from_static("application/json"),
        );
        if let Some(path) = &c.token_file {
            let token = match tokens.get(path) {
                Some(t) => t.clone(),
                None => {
                    let t = std::fs::read_to_string(path)
                        .with_context(|| format!("{place}: token file {}", path.display()))?
                        .trim()
                        .to_string();
                    tokens.insert(path.clone(), t.clone());
                    t
                }
            };
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "{place}: token file {} does not hold a token",
                        path.display()
                    )
                })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .no_proxy()
            .user_agent(concat!(
                "kube-metrics-bridge-compare/",
                env!("CARGO_PKG_VERSION")
            ));
        if let Some(ca) = &c.ca_file {
            let pem =
                std::fs::read(ca).with_context(|| format!("{place}: CA file {}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{place}: CA file {}", ca.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        match (&c.client_cert_file, &c.client_key_file) {
            (Some(cert), Some(key)) => {
                let mut pem = std::fs::read(cert)
                    .with_context(|| format!("{place}: client certificate {}", cert.display()))?;
                pem.push(b'\n');
                pem.extend(
                    std::fs::read(key)
                        .with_context(|| format!("{place}: client key {}", key.display()))?,
                );
                builder = builder.identity(
                    reqwest::Identity::from_pem(&pem)
                        .with_context(|| format!("{place}: client certificate and key"))?,
                );
            }
            (None, None) => {}
            _ => anyhow::bail!(
                "{place}: a client certificate needs both --client-cert-file and --client-key-file"
            ),
        }
        if c.insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        if let Some((name, addrs)) = &resolve {
            builder = builder.resolve_to_addrs(name, addrs);
        }
        let shown = match &c.tls_server_name {
            Some(name) => format!("{} (certificate name {name})", c.url),
            None => c.url.clone(),
        };
        Ok(Server {
            side,
            shown,
            url: parsed.as_str().trim_end_matches('/').to_string(),
            http: builder
                .build()
                .with_context(|| format!("{place}: building the HTTP client"))?,
        })
    }

    /// GET `/apis/<path>`: the status and body, or why there is none.
    async fn get(&self, path: &str) -> Result<(u16, String), String> {
        let url = format!("{}/apis/{path}", self.url);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{url}: {}", error_chain(&e)))?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|e| format!("{url}: reading the answer: {}", error_chain(&e)))?;
        Ok((status, body))
    }

    /// A discovery document: `None` when the group version is not served (404).
    async fn discovery(&self, api: &str) -> anyhow::Result<Option<Listing>> {
        let (status, body) = self
            .get(api)
            .await
            .map_err(|e| anyhow::anyhow!("{} server: {e}", self.side))?;
        match status {
            200 => {
                let doc: serde_json::Value = serde_json::from_str(&body)
                    .with_context(|| format!("{} server: /apis/{api} is not JSON", self.side))?;
                listing(&doc)
                    .map(Some)
                    .map_err(|e| anyhow::anyhow!("{} server: /apis/{api}: {e}", self.side))
            }
            404 => Ok(None),
            401 | 403 => anyhow::bail!(
                "{} server: /apis/{api}: {status}: {}; give it credentials it accepts \
                 (--{}-token-file or --{}-client-cert-file and key, or the shared flags)",
                self.side,
                status_message(&body),
                self.side,
                self.side
            ),
            _ => anyhow::bail!(
                "{} server: /apis/{api}: {status}: {}",
                self.side,
                status_message(&body)
            ),
        }
    }

    async fn answer(&self, path: &str, external: bool) -> Answer {
        match self.get(path).await {
            Ok((status, body)) => Answer::from_response(status, &body, external),
            Err(e) => Answer::Failed {
                status: 0,
                message: e,
            },
        }
    }
}

fn status_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

/// An error and its causes on one line (reqwest's own message leaves out why a connection
/// failed).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// One value request: the group version and the path below it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Request {
    api: &'static str,
    path: String,
    external: bool,
}

/// The value requests for the metrics both servers list.
fn value_requests(
    custom: &Listing,
    external: &Listing,
    namespaces: &[String],
    wanted: &dyn Fn(&str) -> bool,
) -> Vec<Request> {
    let mut out = Vec::new();
    for (name, namespaced) in custom {
        let Some((resource, metric)) = name.split_once('/') else {
            continue;
        };
        if !wanted(metric) {
            continue;
        }
        let mut push = |path: String| {
            out.push(Request {
                api: CUSTOM_VALUES,
                path,
                external: false,
            })
        };
        if resource == "namespaces" && !namespaced {
            for ns in namespaces {
                push(format!("namespaces/{ns}/metrics/{metric}"));
            }
        } else if *namespaced {
            for ns in namespaces {
                push(format!("namespaces/{ns}/{resource}/*/{metric}"));
            }
        } else {
            push(format!("{resource}/*/{metric}"));
        }
    }
    for metric in external.keys().filter(|m| wanted(m)) {
        for ns in namespaces {
            out.push(Request {
                api: EXTERNAL_VALUES,
                path: format!("namespaces/{ns}/{metric}"),
                external: true,
            });
        }
    }
    out
}

/// The names both listings have (with the old one's scope).
fn common(old: &Option<Listing>, new: &Option<Listing>) -> Listing {
    match (old, new) {
        (Some(o), Some(n)) => o
            .iter()
            .filter(|(k, _)| n.contains_key(*k))
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        _ => Listing::new(),
    }
}

/// The cluster's namespaces, for when --namespace is not given.
async fn cluster_namespaces(kubeconfig: Option<&Path>) -> anyhow::Result<Vec<String>> {
    let client = crate::kube::client::connect(kubeconfig).await?;
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    let list = api
        .list_metadata(&kube::api::ListParams::default())
        .await
        .context("listing the cluster's namespaces")?;
    let mut names: Vec<String> = list
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    names.sort();
    Ok(names)
}

/// Runs the comparison; the exit code (0 same, 1 different, 2 not compared).
pub async fn run(args: CompareArgs) -> anyhow::Result<i32> {
    match compare(&args).await {
        Ok(differences) => Ok(if differences == 0 { 0 } else { 1 }),
        Err(e) => {
            eprintln!("error: {e:#}");
            eprintln!("not compared");
            Ok(2)
        }
    }
}

/// Prints the differences as found and a summary; how many there were.
async fn compare(args: &CompareArgs) -> anyhow::Result<usize> {
    let tolerance = Tolerance {
        relative: args.relative_tolerance,
        absolute: args.absolute_tolerance,
    };
    let filter = match &args.metrics {
        Some(re) => Some(regex::Regex::new(re).with_context(|| format!("--metrics {re:?}"))?),
        None => None,
    };
    let wanted = |metric: &str| filter.as_ref().is_none_or(|re| re.is_match(metric));
    let mut tokens = HashMap::new();
    let old = Server::new(
        Side::Old,
        &args.connection(Side::Old),
        args.timeout,
        &mut tokens,
    )?;
    let new = Server::new(
        Side::New,
        &args.connection(Side::New),
        args.timeout,
        &mut tokens,
    )?;
    println!("old: {}", old.shown);
    println!("new: {}", new.shown);

    let mut differences: Vec<Difference> = Vec::new();
    let mut listings: BTreeMap<&str, (Option<Listing>, Option<Listing>)> = BTreeMap::new();
    for (api, _) in APIS {
        let (o, n) = futures::join!(old.discovery(api), new.discovery(api));
        let keep = |l: Option<Listing>| {
            l.map(|l| {
                l.into_iter()
                    .filter(|(name, _)| wanted(name.rsplit('/').next().unwrap_or(name)))
                    .collect::<Listing>()
            })
        };
        let (o, n) = (keep(o?), keep(n?));
        println!(
            "{api}: {} metric(s) on old, {} on new",
            o.as_ref()
                .map_or("not served".to_string(), |l| l.len().to_string()),
            n.as_ref()
                .map_or("not served".to_string(), |l| l.len().to_string()),
        );
        differences.extend(compare_listings(api, o.as_ref(), n.as_ref()));
        listings.insert(api, (o, n));
    }
    for d in &differences {
        println!("DIFF  {d}");
    }

    let namespaces = if args.namespace.is_empty() {
        cluster_namespaces(args.kubeconfig.as_deref())
            .await
            .context("no --namespace given, and the cluster's namespaces could not be listed")?
    } else {
        args.namespace.clone()
    };
    let (custom_old, custom_new) = &listings[CUSTOM_VALUES];
    let (external_old, external_new) = &listings[EXTERNAL_VALUES];
    let requests = value_requests(
        &common(custom_old, custom_new),
        &common(external_old, external_new),
        &namespaces,
        &wanted,
    );
    let mut answers: Vec<(Request, Vec<Difference>)> = futures::stream::iter(requests)
        .map(|r| {
            let (old, new) = (&old, &new);
            async move {
                let path = format!("{}/{}", r.api, r.path);
                let (a, b) =
                    futures::join!(old.answer(&path, r.external), new.answer(&path, r.external));
                let d = compare_answers(&path, &a, &b, tolerance);
                (r, d)
            }
        })
        .buffer_unordered(usize::from(args.concurrency))
        .collect()
        .await;
    answers.sort_by(|a, b| a.0.cmp(&b.0));
    let asked = answers.len();
    for (_, ds) in answers {
        for d in ds {
            println!("DIFF  {d}");
            differences.push(d);
        }
    }
    let n = differences.len();
    println!(
        "{} across {asked} value request(s) per server in {} namespace(s) \
         (tolerance {}% or {}): {}",
        if n == 0 { "same" } else { "different" },
        namespaces.len(),
        tolerance.relative * 100.0,
        tolerance.absolute,
        if n == 0 {
            "no differences".to_string()
        } else {
            format!("{n} difference(s)")
        }
    );
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> Result<CompareArgs, clap::Error> {
        let mut argv = vec![
            "kube-metrics-bridge",
            "compare",
            "--old-url",
            "https://127.0.0.1:6443/",
            "--new-url",
            "https://127.0.0.1:8443",
        ];
        argv.extend_from_slice(extra);
        crate::cli::Cli::try_parse_from(argv).map(|cli| match cli.command {
            crate::cli::Command::Compare(a) => *a,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn per_side_flags_override_the_shared_ones() {
        let a = args(&[
            "--ca-file=/ca",
            "--token-file=/t",
            "--new-token-file=/t2",
            "--old-insecure-skip-tls-verify",
            "--client-cert-file=/c",
            "--client-key-file=/k",
            "--new-ca-file=/ca2",
            "--tls-server-name=kube-metrics-bridge.custom-metrics.svc",
            "--old-tls-server-name=prometheus-adapter.monitoring.svc",
            "-n",
            "a,b",
            "--namespace=c",
        ])
        .expect("flags");
        let old = a.connection(Side::Old);
        let new = a.connection(Side::New);
        assert_eq!(old.url, "https://127.0.0.1:6443");
        assert_eq!(old.ca_file.as_deref(), Some(Path::new("/ca")));
        assert_eq!(new.ca_file.as_deref(), Some(Path::new("/ca2")));
        assert_eq!(old.token_file.as_deref(), Some(Path::new("/t")));
        assert_eq!(new.token_file.as_deref(), Some(Path::new("/t2")));
        assert!(old.insecure && !new.insecure);
        assert_eq!(new.client_cert_file.as_deref(), Some(Path::new("/c")));
        assert_eq!(
            old.tls_server_name.as_deref(),
            Some("prometheus-adapter.monitoring.svc")
        );
        assert_eq!(
            new.tls_server_name.as_deref(),
            Some("kube-metrics-bridge.custom-metrics.svc")
        );
        let mut tokens = HashMap::new();
        let server = Server::new(Side::New, &new, Duration::from_secs(1), &mut tokens);
        assert!(server.is_err(), "its token and CA files do not exist");
        let mut plain = new.clone();
        plain.ca_file = None;
        plain.token_file = None;
        plain.client_cert_file = None;
        plain.client_key_file = None;
        let server =
            Server::new(Side::New, &plain, Duration::from_secs(1), &mut tokens).expect("server");
        assert_eq!(
            server.url, "https://kube-metrics-bridge.custom-metrics.svc:8443",
            "requests name the server, connections go to 127.0.0.1"
        );
        assert!(server
            .shown
            .starts_with("https://127.0.0.1:8443 (certificate name"));
        assert_eq!(a.namespace, ["a", "b", "c"]);
        assert_eq!((a.relative_tolerance, a.absolute_tolerance), (0.01, 0.001));
        for bad in [
            "--relative-tolerance=-1",
            "--absolute-tolerance=NaN",
            "--concurrency=0",
            "--timeout=soon",
        ] {
            assert!(args(&[bad]).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn value_requests_follow_each_metrics_scope() {
        let custom = Listing::from([
            ("pods/http_requests_per_second".to_string(), true),
            ("namespaces/http_requests_per_second".to_string(), false),
            ("nodes/node_load".to_string(), false),
            ("jobs.batch/queue_lag".to_string(), true),
        ]);
        let external = Listing::from([("queue_messages_ready".to_string(), true)]);
        let ns = ["a".to_string(), "b".to_string()];
        let mut paths: Vec<String> = value_requests(&custom, &external, &ns, &|_| true)
            .into_iter()
            .map(|r| format!("{}/{}", r.api, r.path))
            .collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "custom.metrics.k8s.io/v1beta1/namespaces/a/jobs.batch/*/queue_lag",
                "custom.metrics.k8s.io/v1beta1/namespaces/a/metrics/http_requests_per_second",
                "custom.metrics.k8s.io/v1beta1/namespaces/a/pods/*/http_requests_per_second",
                "custom.metrics.k8s.io/v1beta1/namespaces/b/jobs.batch/*/queue_lag",
                "custom.metrics.k8s.io/v1beta1/namespaces/b/metrics/http_requests_per_second",
                "custom.metrics.k8s.io/v1beta1/namespaces/b/pods/*/http_requests_per_second",
                "custom.metrics.k8s.io/v1beta1/nodes/*/node_load",
                "external.metrics.k8s.io/v1beta1/namespaces/a/queue_messages_ready",
                "external.metrics.k8s.io/v1beta1/namespaces/b/queue_messages_ready",
            ]
        );
        let only_http = value_requests(&custom, &external, &ns, &|m| m.starts_with("http"));
        assert_eq!(only_http.len(), 4);
    }

    #[test]
    fn bad_connections_are_errors_that_name_the_side() {
        let mut tokens = HashMap::new();
        let mut c = args(&[]).expect("flags").connection(Side::New);
        c.client_cert_file = Some("/c".into());
        let e = Server::new(Side::New, &c, Duration::from_secs(1), &mut tokens)
            .err()
            .expect("cert without key");
        assert!(e.to_string().contains("new server"), "{e}");
        c.client_cert_file = None;
        c.token_file = Some("/nonexistent/token".into());
        let e = Server::new(Side::New, &c, Duration::from_secs(1), &mut tokens)
            .err()
            .expect("no token file");
        assert!(format!("{e:#}").contains("/nonexistent/token"), "{e:#}");
        c.token_file = None;
        c.url = "ftp://x".into();
        assert!(Server::new(Side::New, &c, Duration::from_secs(1), &mut tokens).is_err());
    }

    /// A server that refuses connections: not compared, exit 2.
    #[tokio::test]
    async fn an_unreachable_server_is_exit_two() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let mut a = args(&["-n", "default"]).expect("flags");
        a.old_url = format!("https://127.0.0.1:{port}");
        a.new_url = format!("https://127.0.0.1:{port}");
        a.timeout = Duration::from_secs(2);
        assert_eq!(run(a).await.expect("runs"), 2);
    }
}
