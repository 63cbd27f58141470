//! `serve`: wires the pieces together and runs until SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::sync::{watch, Notify};
use warp::Filter;

use crate::auth::{Auth, AuthConfigWatch, KubeReviews, TlsReload};
use crate::bridge::Bridge;
use crate::cli::ServeArgs;
use crate::discovery::{Discoverer, Registry};
use crate::kube::mapper::DiscoveryMapper;
use crate::kube::objects::{ObjectResolver, StandaloneResolver};
use crate::kube::resources::{ResourceMapper, StaticMapper};
use crate::kube::watch_cache::ClusterResolver;
use crate::metrics::{unix_now, Metrics};
use crate::reload::{backend_for, RulesReloader};
use crate::rules::{load_file, LoadError, Overrides, RuleSet};
use crate::{api, server, tls};

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    tls::install_crypto_provider();
    let secure_address = args.secure_address()?;
    let metrics = Arc::new(Metrics::new());
    let overrides = Overrides {
        prometheus_url: args.prometheus_url.clone(),
    };
    let rules = load_rules(&args, &overrides, &metrics)?;
    let cluster = if args.standalone {
        None
    } else {
        Some(Cluster::connect(&args, metrics.clone()).await?)
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let background = Background::start(
        &args,
        overrides,
        rules,
        cluster.as_ref(),
        &metrics,
        &shutdown_rx,
    )?;
    let bridge = background.bridge.clone();
    let certs = serving_certificate(&args, &metrics)?;
    let tls_config = Arc::new(ArcSwap::new(tls::server_config(
        certs.resolver(),
        tls::ClientAuth::None,
    )?));
    let (auth, _auth_watch) = match &cluster {
        None => (None, None),
        Some(c) => {
            let (auth, watch) = authentication(&args, c, &certs, &tls_config, &metrics).await?;
            (Some(auth), Some(watch))
        }
    };

    let listener = tokio::net::TcpListener::bind(secure_address)
        .await
        .with_context(|| format!("binding the secure port {secure_address}"))?;
    tracing::info!(address = %secure_address, standalone = args.standalone, "serving the metrics APIs over TLS");
    let metrics_server = start_metrics_port(&args, &metrics, &bridge, &shutdown_rx).await?;
    let signal_task = tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = shutdown_tx.send(true);
    });

    let result = server::serve_tls_with(
        listener,
        tls_config,
        api::routes(bridge, auth),
        wait_for(shutdown_rx.clone()),
        args.secure_server_options(metrics.listener("secure")),
    )
    .await;
    signal_task.abort();
    if let Some(task) = metrics_server {
        let _ = task.await;
    }
    background.stop();
    drop(certs);
    result
}

/// The rules file, loaded once before anything starts: a bad file is a clear error at startup
/// (a reload keeps the old rules instead).
fn load_rules(
    args: &ServeArgs,
    overrides: &Overrides,
    metrics: &Metrics,
) -> anyhow::Result<RuleSet> {
    let rules = match load_file(&args.config, overrides) {
        Ok(r) => r,
        Err(LoadError::Problems(p)) => {
            for problem in &p.0 {
                tracing::error!(path = %args.config.display(), %problem, "invalid rules");
            }
            anyhow::bail!(
                "{}: {} problem(s); run `kube-metrics-bridge check` for the list",
                args.config.display(),
                p.0.len()
            );
        }
        Err(e) => return Err(e.into()),
    };
    metrics
        .rules_loaded
        .set((rules.custom.len() + rules.external.len()) as i64);
    metrics.rules_last_reload_success.set(1);
    metrics.rules_last_reload_timestamp.set(unix_now());
    tracing::info!(path = %args.config.display(), custom = rules.custom.len(), external = rules.external.len(), upstreams = rules.upstreams.len(), backends = rules.backends.iter().count(), default_backend = %rules.backends.get(rules.backends.default_name()).map_or("", |b| b.url.as_str()), "rules loaded");
    for warning in &rules.warnings {
        tracing::warn!(path = %args.config.display(), %warning, "rules warning");
    }
    Ok(rules)
}

/// What runs beside the request path: series discovery and the rules reloader, and the
/// [`Bridge`] both of them keep current.
struct Background {
    bridge: Arc<Bridge>,
    discovery: tokio::task::JoinHandle<()>,
    reload: tokio::task::JoinHandle<()>,
}

impl Background {
    fn start(
        args: &ServeArgs,
        overrides: Overrides,
        rules: RuleSet,
        cluster: Option<&Cluster>,
        metrics: &Arc<Metrics>,
        shutdown: &watch::Receiver<bool>,
    ) -> anyhow::Result<Background> {
        let backend = Arc::new(ArcSwap::from_pointee(backend_for(&rules, metrics)?));
        // Built once to fail start-up on a TLS file that does not load; discovery builds
        // the running ones with its first registry.
        crate::upstream::Upstreams::new(&rules.upstreams, metrics)?;
        let rules = Arc::new(ArcSwap::from_pointee(rules));
        let registry = Arc::new(ArcSwap::from_pointee(Registry::empty(rules.load_full())));
        let (mapper, objects): (Arc<dyn ResourceMapper>, Arc<dyn ObjectResolver>) = match cluster {
            None => (
                Arc::new(StaticMapper::builtin()),
                Arc::new(StandaloneResolver),
            ),
            Some(c) => (c.mapper.clone(), c.objects.clone()),
        };
        let discover_now = Arc::new(Notify::new());
        let on_miss = Arc::new(crate::discovery::RediscoverOnMiss::new(
            discover_now.clone(),
            rules.clone(),
            metrics.clone(),
        ));
        let discoverer = Discoverer {
            rules: rules.clone(),
            backend: backend.clone(),
            registry: registry.clone(),
            mapper: mapper.clone(),
            objects: objects.clone(),
            metrics: metrics.clone(),
            wake: discover_now.clone(),
        };
        let reloader = RulesReloader {
            path: args.config.clone(),
            overrides,
            rules,
            backend: backend.clone(),
            metrics: metrics.clone(),
            discover_now,
            poll_interval: args.rules_poll_interval,
        };
        Ok(Background {
            discovery: tokio::spawn(discoverer.run(shutdown.clone())),
            reload: tokio::spawn(reloader.run(shutdown.clone())),
            bridge: Arc::new(Bridge {
                registry,
                backend,
                mapper,
                objects,
                metrics: metrics.clone(),
                on_miss: Some(on_miss),
            }),
        })
    }

    fn stop(self) {
        self.discovery.abort();
        self.reload.abort();
    }
}

/// The serving certificate: files (reloaded on change) or a self-signed pair in --cert-dir.
fn serving_certificate(
    args: &ServeArgs,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<tls::ServingCert> {
    let source = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(cert), Some(key)) => tls::CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => tls::CertSource::SelfSigned {
            dir: args.cert_dir.clone(),
            hosts: args.tls_sans.clone(),
        },
    };
    let cert_metrics = metrics.clone();
    tls::ServingCert::start(
        source,
        Arc::new(move |result: Result<(), String>| {
            cert_metrics.count(
                &cert_metrics.cert_reloads,
                if result.is_ok() { "success" } else { "failure" },
            );
        }),
    )
    .context("loading the serving certificate")
}

/// Delegated authentication and authorization (design §3.4): the ConfigMap is read before the
/// port opens, and its CAs go into the TLS configuration now and on every change. The watch
/// must live as long as the server.
async fn authentication(
    args: &ServeArgs,
    cluster: &Cluster,
    certs: &tls::ServingCert,
    tls_config: &Arc<ArcSwap<rustls::ServerConfig>>,
    metrics: &Metrics,
) -> anyhow::Result<(Arc<Auth>, AuthConfigWatch)> {
    let watch = AuthConfigWatch::start(
        cluster.client.clone(),
        Some(TlsReload {
            resolver: certs.resolver(),
            server_config: tls_config.clone(),
        }),
        args.authentication_tolerate_lookup_failure,
    )
    .await?;
    // TokenReviews are rate- and concurrency-limited (design §3.4).
    let reviews = crate::auth::reviews::LimitedReviews::new(
        Arc::new(KubeReviews::new(cluster.client.clone())),
        args.token_review_limits(),
        metrics.token_reviews.clone(),
    );
    let auth = Auth::with_defaults(
        watch.handle(),
        Arc::new(reviews),
        &args.authorization_always_allow_paths,
    )?;
    Ok((Arc::new(auth), watch))
}

/// `/metrics` and health over plain HTTP on --metrics-bind-address (none when it is empty).
async fn start_metrics_port(
    args: &ServeArgs,
    metrics: &Arc<Metrics>,
    bridge: &Arc<Bridge>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    if args.metrics_bind_address.is_empty() {
        return Ok(None);
    }
    let address: std::net::SocketAddr = args
        .metrics_bind_address
        .parse()
        .with_context(|| format!("--metrics-bind-address {:?}", args.metrics_bind_address))?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding --metrics-bind-address {address}"))?;
    tracing::info!(%address, "serving /metrics and health over plain HTTP");
    Ok(Some(tokio::spawn(server::serve_plain_with(
        listener,
        metrics_routes(metrics.clone(), bridge.clone()),
        wait_for(shutdown.clone()),
        args.metrics_server_options(metrics.listener("metrics")),
    ))))
}

/// `/metrics` (OpenMetrics text) and health on the plain port.
fn metrics_routes(
    metrics: Arc<Metrics>,
    bridge: Arc<Bridge>,
) -> impl Filter<Extract = (http::Response<String>,), Error = std::convert::Infallible>
       + Clone
       + Send
       + Sync
       + 'static {
    warp::path::full().map(move |path: warp::path::FullPath| match path.as_str() {
        "/metrics" => {
            let mut r = http::Response::new(metrics.encode());
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        "/readyz" => api::health_response("readyz", &bridge.readiness()),
        "/healthz" | "/livez" => api::health_response("healthz", &Default::default()),
        _ => {
            let mut r = http::Response::new("not found\n".to_string());
            *r.status_mut() = http::StatusCode::NOT_FOUND;
            r
        }
    })
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// What a cluster connection adds: API discovery for resource names, watch caches for
/// label selectors.
struct Cluster {
    client: kube::Client,
    mapper: Arc<DiscoveryMapper>,
    objects: Arc<ClusterResolver>,
    refresh: tokio::task::JoinHandle<()>,
}

impl Cluster {
    async fn connect(args: &ServeArgs, metrics: Arc<Metrics>) -> anyhow::Result<Cluster> {
        let client = crate::kube::client::connect(args.kubeconfig.as_deref()).await?;
        let mapper = Arc::new(DiscoveryMapper::new());
        // Read discovery before the first series discovery so CRD-backed metrics resolve at
        // once; if the API server is slow, the built-in table serves until the retry succeeds.
        match mapper.refresh(&client).await {
            Ok(n) => tracing::info!(resources = n, "API discovery read"),
            Err(e) => {
                tracing::warn!(error = %e, "API discovery failed; retrying in the background")
            }
        }
        let refresh = mapper.spawn_refresh(client.clone(), args.api_discovery_interval);
        Ok(Cluster {
            client: client.clone(),
            mapper,
            objects: Arc::new(ClusterResolver::new(client, metrics)),
            refresh,
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.refresh.abort();
    }
}
