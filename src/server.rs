//! Accept loops serving warp filters: TLS for the metrics APIs, plain HTTP for `/metrics` and
//! health.
//!
//! warp 0.4 has no TLS and `warp::serve` takes only a plain listener, so the loop is ours:
//! rustls handshake (under a deadline) in a task per connection, then `warp::service(filter)`
//! through hyper-util's auto builder, HTTP/2 or HTTP/1.1 as ALPN chose. Every request carries a
//! [`PeerInfo`] extension for authentication. On shutdown the listener closes (new connections
//! are refused), then for [`ServerOptions::close_grace`] open connections keep being served,
//! HTTP/1.1 answers carrying `Connection: close`; then connections are asked to finish
//! (HTTP/1.1 closes after the current response, HTTP/2 sends GOAWAY), and whatever is still
//! open after the drain deadline is aborted.
//!
//! Why the grace: an HTTP/1.1 connection idle at the signal would be closed at once, and a
//! client writing its next request on it at that moment sees "connection closed before
//! message completed" for a request it had already sent (measured under load: one or two
//! per SIGTERM). A `Connection: close` answer tells the client not to send another, so
//! under load every keep-alive connection is wound down without losing a request.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Who is on the other end of a connection. Inserted into every request; read it with
/// `warp::ext::get::<PeerInfo>()`.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: SocketAddr,
    /// The client's certificate chain, leaf first, already verified by rustls against the
    /// roots of [`crate::tls::ClientAuth::Optional`]; empty when none was sent (or asked for,
    /// or on the plain port).
    pub client_certs: Arc<Vec<CertificateDer<'static>>>,
}

/// Limits of the accept loops.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// A TLS handshake that takes longer is dropped, so idle sockets can't pile up.
    pub handshake_timeout: Duration,
    /// HTTP/1.1: time to receive a request's headers; also how long an idle keep-alive
    /// connection is kept (hyper starts the clock when it waits for the next request).
    pub header_read_timeout: Duration,
    /// HTTP/2 streams in flight per connection.
    pub max_concurrent_streams: u32,
    /// After shutdown starts, in-flight requests get this long before their connections are
    /// aborted.
    pub drain_timeout: Duration,
    /// After shutdown starts, how long open connections keep being served (HTTP/1.1 answers
    /// with `Connection: close`) before they are asked to finish; part of `drain_timeout`.
    pub close_grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            max_concurrent_streams: 250,
            drain_timeout: Duration::from_secs(20),
            close_grace: Duration::from_secs(1),
        }
    }
}

/// Connection builders: one for each ALPN outcome, so a client that negotiated a protocol
/// gets exactly that one, and a client without ALPN gets auto-detection.
struct Builders {
    auto: Builder<TokioExecutor>,
    http1: Builder<TokioExecutor>,
    http2: Builder<TokioExecutor>,
}

impl Builders {
    fn new(options: &ServerOptions) -> Arc<Builders> {
        let mut auto = Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_read_timeout);
        auto.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(options.max_concurrent_streams)
            // Finds peers that vanished without closing (half-open TCP after a node failure).
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        Arc::new(Builders {
            http1: auto.clone().http1_only(),
            http2: auto.clone().http2_only(),
            auto,
        })
    }

    fn for_alpn(&self, alpn: Option<&[u8]>) -> &Builder<TokioExecutor> {
        match alpn {
            Some(b"h2") => &self.http2,
            Some(b"http/1.1") => &self.http1,
            _ => &self.auto,
        }
    }
}

/// Serves `filter` over TLS until `shutdown` resolves, then drains (see [`ServerOptions`]).
/// The configuration is read per connection: storing a new one (new client CAs) applies to
/// every later handshake. Returns once every connection is closed.
pub async fn serve_tls<F>(
    listener: TcpListener,
    config: Arc<ArcSwap<ServerConfig>>,
    filter: F,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    F: warp::Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    serve_tls_with(listener, config, filter, shutdown, ServerOptions::default()).await
}

/// [`serve_tls`] with explicit limits.
pub async fn serve_tls_with<F>(
    listener: TcpListener,
    config: Arc<ArcSwap<ServerConfig>>,
    filter: F,
    shutdown: impl Future<Output = ()>,
    options: ServerOptions,
) -> anyhow::Result<()>
where
    F: warp::Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let builders = Builders::new(&options);
    let handshake_timeout = options.handshake_timeout;
    accept_loop(
        listener,
        shutdown,
        &options,
        move |tcp, remote_addr, watcher, closing| {
            let acceptor = tokio_rustls::TlsAcceptor::from(config.load_full());
            let (filter, builders) = (filter.clone(), builders.clone());
            async move {
                let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote_addr, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote_addr, "TLS handshake timed out");
                        return;
                    }
                };
                let session = tls.get_ref().1;
                let client_certs: Vec<CertificateDer<'static>> = session
                    .peer_certificates()
                    .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
                    .unwrap_or_default();
                let builder = builders.for_alpn(session.alpn_protocol());
                let peer = PeerInfo {
                    remote_addr,
                    client_certs: Arc::new(client_certs),
                };
                serve_connection(tls, peer, filter, builder, watcher, closing).await;
            }
        },
    )
    .await
}

/// Serves `filter` over plain HTTP (HTTP/1.1, or HTTP/2 with prior knowledge) until
/// `shutdown` resolves, then drains like [`serve_tls`]. Requests carry a [`PeerInfo`] without
/// certificates.
pub async fn serve_plain<F>(
    listener: TcpListener,
    filter: F,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    F: warp::Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    serve_plain_with(listener, filter, shutdown, ServerOptions::default()).await
}

/// [`serve_plain`] with explicit limits.
pub async fn serve_plain_with<F>(
    listener: TcpListener,
    filter: F,
    shutdown: impl Future<Output = ()>,
    options: ServerOptions,
) -> anyhow::Result<()>
where
    F: warp::Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let builders = Builders::new(&options);
    accept_loop(
        listener,
        shutdown,
        &options,
        move |tcp, remote_addr, watcher, closing| {
            let (filter, builders) = (filter.clone(), builders.clone());
            async move {
                let peer = PeerInfo {
                    remote_addr,
                    client_certs: Arc::new(Vec::new()),
                };
                serve_connection(tcp, peer, filter, &builders.auto, watcher, closing).await;
            }
        },
    )
    .await
}

/// Serves one connection's requests, each with `peer` as an extension, until it closes or
/// the graceful shutdown finishes it. Once `closing` is set, HTTP/1.x answers carry
/// `Connection: close`.
async fn serve_connection<I, F>(
    io: I,
    peer: PeerInfo,
    filter: F,
    builder: &Builder<TokioExecutor>,
    watcher: Watcher,
    closing: Arc<AtomicBool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: warp::Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let remote_addr = peer.remote_addr;
    let filtered = warp::service(filter);
    let service = tower::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(peer.clone());
        let http1 = request.version() < http::Version::HTTP_2;
        let (answer, closing) = (filtered.clone().oneshot(request), closing.clone());
        async move {
            let mut response = answer.await?;
            if http1 && closing.load(Ordering::SeqCst) {
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    if let Err(e) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(%remote_addr, error = %e, "connection ended with an error");
    }
}

/// Accepts until `shutdown`, one task a connection; then closes the listener, serves open
/// connections for the close grace (HTTP/1.1 answers saying `Connection: close`), signals
/// them to finish, waits out the rest of `drain_timeout` and aborts what is left.
async fn accept_loop<C, Fut>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    options: &ServerOptions,
    mut connection: C,
) -> anyhow::Result<()>
where
    C: FnMut(TcpStream, SocketAddr, Watcher, Arc<AtomicBool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let drain_timeout = options.drain_timeout;
    let closing = Arc::new(AtomicBool::new(false));
    let graceful = GracefulShutdown::new();
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut backoff = Backoff::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    if e.is_panic() {
                        tracing::error!(error = %e, "connection task panicked");
                    }
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote_addr)) => {
                    backoff.reset();
                    // Responses are small and latency matters more than packet count.
                    let _ = tcp.set_nodelay(true);
                    tasks.spawn(connection(tcp, remote_addr, graceful.watcher(), closing.clone()));
                }
                // The peer gave up before we accepted: nothing wrong with the listener.
                Err(e) if is_connection_error(&e) => {
                    tracing::debug!(error = %e, "connection dropped before accept");
                }
                // Out of file descriptors and the like: retrying at once would spin, and
                // returning would take the server down; wait, more each time, then retry.
                Err(e) => {
                    let delay = backoff.next();
                    tracing::warn!(error = %e, retry_in = ?delay, "accept failed");
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            },
        }
    }
    drop(listener);
    closing.store(true, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let open = tasks.len();
    if open > 0 {
        tracing::info!(connections = open, "draining connections");
        // Connections that close meanwhile (told to by `Connection: close`) are reaped here.
        let grace = tokio::time::sleep(options.close_grace.min(drain_timeout));
        tokio::pin!(grace);
        loop {
            tokio::select! {
                () = &mut grace => break,
                joined = tasks.join_next() => if joined.is_none() { break },
            }
        }
    }
    let left = drain_timeout.saturating_sub(started.elapsed());
    if tokio::time::timeout(left, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(connections = tasks.len(), timeout = ?drain_timeout, "connections still open after the drain timeout; closing them");
    }
    tasks.shutdown().await;
    Ok(())
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
    )
}

/// 5 ms doubling to 1 s, as Go's net/http does after accept errors.
#[derive(Debug, Default)]
struct Backoff {
    current: Option<Duration>,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let next = match self.current {
            None => Duration::from_millis(5),
            Some(d) => (d * 2).min(Duration::from_secs(1)),
        };
        self.current = Some(next);
        next
    }

    fn reset(&mut self) {
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant;

    use rustls::RootCertStore;
    use rustls_pki_types::pem::PemObject;
    use tokio::io::AsyncReadExt;
    use tokio::sync::{oneshot, Notify};
    use warp::Filter;

    use super::*;
    use crate::tls::{self, CertSource, ClientAuth, ReloadOptions, ServingCert};

    const DEADLINE: Duration = Duration::from_secs(15);

    fn routes(
        slow_started: Arc<Notify>,
        slow_for: Duration,
    ) -> impl warp::Filter<Extract = (impl warp::Reply,), Error = warp::Rejection>
           + Clone
           + Send
           + Sync
           + 'static {
        let hello = warp::path("hello")
            .and(warp::ext::get::<PeerInfo>())
            .map(|peer: PeerInfo| {
                format!(
                    "hello {} certs={}",
                    peer.remote_addr.ip(),
                    peer.client_certs.len()
                )
            });
        let slow = warp::path("slow").and_then(move || {
            let started = slow_started.clone();
            async move {
                started.notify_one();
                tokio::time::sleep(slow_for).await;
                Ok::<_, warp::Rejection>("slow done")
            }
        });
        hello.or(slow)
    }

    fn quick_routes() -> impl warp::Filter<Extract = (impl warp::Reply,), Error = warp::Rejection>
           + Clone
           + Send
           + Sync
           + 'static {
        routes(Arc::new(Notify::new()), Duration::from_secs(1))
    }

    struct Running {
        addr: SocketAddr,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    impl Running {
        fn url(&self, path: &str) -> String {
            format!("https://127.0.0.1:{}{path}", self.addr.port())
        }

        async fn stop(mut self) -> Duration {
            let started = Instant::now();
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            tokio::time::timeout(DEADLINE, self.task)
                .await
                .expect("server stops")
                .unwrap()
                .unwrap();
            started.elapsed()
        }
    }

    async fn start_tls<R>(config: Arc<ServerConfig>, filter: R, options: ServerOptions) -> Running
    where
        R: warp::Filter + Clone + Send + Sync + 'static,
        R::Extract: warp::Reply,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let config = Arc::new(ArcSwap::new(config));
        let task = tokio::spawn(serve_tls_with(
            listener,
            config,
            filter,
            async move {
                let _ = stopped.await;
            },
            options,
        ));
        Running {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn client(ca_pem: &[u8], http1: bool, identity: Option<&str>) -> reqwest::Client {
        tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca_pem).unwrap()])
            .timeout(Duration::from_secs(10));
        if http1 {
            builder = builder.http1_only();
        }
        if let Some(pem) = identity {
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }

    /// A GET of `/hello` on a fresh connection that trusts only `ca_pem`.
    async fn trusted_by(server: &Running, ca_pem: &str) -> bool {
        match client(ca_pem.as_bytes(), false, None)
            .get(server.url("/hello"))
            .send()
            .await
        {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    async fn eventually<Fut: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> Fut) {
        let deadline = Instant::now() + DEADLINE;
        while !check().await {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn pair(names: &[&str]) -> tls::Generated {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        tls::generate_ca_and_serving_cert(&names).unwrap()
    }

    fn local_pair() -> tls::Generated {
        pair(&["localhost", "127.0.0.1", "::1"])
    }

    /// A certificate resolver serving `pair`, loaded from files as `serve` loads it.
    fn resolver_for(pair: &tls::Generated) -> Arc<tls::CertResolver> {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, &pair.chain_pem).unwrap();
        std::fs::write(&key, &pair.key_pem).unwrap();
        Arc::new(tls::CertResolver::new(tls::load_pair(&cert, &key).unwrap()))
    }

    /// Writes through a temporary file and rename, as a careful operator or tool would.
    fn replace(path: &std::path::Path, text: &str) {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    type Reports = Arc<Mutex<Vec<Result<(), String>>>>;

    fn recording_hook() -> (tls::ReloadHook, Reports) {
        let reports: Reports = Arc::default();
        let r = reports.clone();
        (
            Arc::new(move |result| r.lock().unwrap().push(result)),
            reports,
        )
    }

    fn events_only() -> ReloadOptions {
        ReloadOptions {
            poll_interval: Duration::from_secs(3600),
            watch_directory: true,
        }
    }

    async fn serve_files(
        cert: &std::path::Path,
        key: &std::path::Path,
        options: ReloadOptions,
    ) -> (ServingCert, Running, Reports) {
        let (hook, reports) = recording_hook();
        let certs = ServingCert::start_with(
            CertSource::Files {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            },
            hook,
            options,
        )
        .unwrap();
        let config = tls::server_config(certs.resolver(), ClientAuth::None).unwrap();
        let server = start_tls(config, quick_routes(), ServerOptions::default()).await;
        (certs, server, reports)
    }

    #[tokio::test]
    async fn self_signed_serves_http1_and_http2_with_peer_info() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, _) = recording_hook();
        let certs = ServingCert::start(
            CertSource::SelfSigned {
                dir: dir.path().to_path_buf(),
                hosts: vec!["bridge.monitoring.svc".into()],
            },
            hook,
        )
        .unwrap();
        let config = tls::server_config(certs.resolver(), ClientAuth::None).unwrap();
        let server = start_tls(config, quick_routes(), ServerOptions::default()).await;
        let ca = std::fs::read(dir.path().join("ca.crt")).unwrap();

        for (http1, version) in [
            (true, http::Version::HTTP_11),
            (false, http::Version::HTTP_2),
        ] {
            let response = client(&ca, http1, None)
                .get(server.url("/hello"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.version(), version);
            assert_eq!(response.status(), 200);
            assert_eq!(response.text().await.unwrap(), "hello 127.0.0.1 certs=0");
        }
        // Also by name: the certificate covers localhost.
        let response = client(&ca, false, None)
            .get(format!("https://localhost:{}/hello", server.addr.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        server.stop().await;
    }

    #[tokio::test]
    async fn optional_client_certificates_reach_peer_info() {
        let serving = local_pair();
        let client_ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::default();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "front-proxy-ca");
        let client_ca = ca_params.self_signed(&client_ca_key).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca_params, &client_ca_key);
        let client_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "front-proxy-client");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = params.signed_by(&client_key, &issuer).unwrap();
        let identity = format!("{}{}", client_cert.pem(), client_key.serialize_pem());

        let resolver = resolver_for(&serving);
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(client_ca.pem().as_bytes()).unwrap())
            .unwrap();
        let config = tls::server_config(resolver, ClientAuth::Optional(Arc::new(roots))).unwrap();
        let server = start_tls(config, quick_routes(), ServerOptions::default()).await;

        let ca = serving.ca_pem.as_bytes();
        let with_cert = client(ca, false, Some(&identity))
            .get(server.url("/hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(with_cert.text().await.unwrap(), "hello 127.0.0.1 certs=1");
        let anonymous = client(ca, true, None)
            .get(server.url("/hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.text().await.unwrap(), "hello 127.0.0.1 certs=0");

        // A certificate from another CA is refused in the handshake.
        let other = local_pair();
        let stranger = format!("{}{}", other.chain_pem, other.key_pem);
        let refused = client(ca, false, Some(&stranger))
            .get(server.url("/hello"))
            .send()
            .await;
        assert!(refused.is_err(), "untrusted client certificate accepted");
        server.stop().await;
    }

    #[tokio::test]
    async fn renamed_files_are_reloaded_and_a_broken_pair_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let (a, b, c) = (local_pair(), local_pair(), local_pair());
        std::fs::write(&cert, &a.chain_pem).unwrap();
        std::fs::write(&key, &a.key_pem).unwrap();
        let (_certs, server, reports) = serve_files(&cert, &key, events_only()).await;
        assert!(trusted_by(&server, &a.ca_pem).await);
        assert!(!trusted_by(&server, &b.ca_pem).await);

        replace(&key, &b.key_pem);
        replace(&cert, &b.chain_pem);
        eventually("pair B served", || trusted_by(&server, &b.ca_pem)).await;
        assert!(!trusted_by(&server, &a.ca_pem).await);

        // Half an update: C's certificate with B's key. Refused; B keeps serving.
        replace(&cert, &c.chain_pem);
        eventually("the broken pair reported", || {
            let reports = reports.clone();
            async move {
                reports.lock().unwrap().iter().any(|r| {
                    r.as_ref()
                        .is_err_and(|e| e.contains("do not match") && e.contains("tls.crt"))
                })
            }
        })
        .await;
        assert!(trusted_by(&server, &b.ca_pem).await, "B keeps serving");
        assert!(!trusted_by(&server, &c.ca_pem).await);

        // The rest of the update arrives: C is served.
        replace(&key, &c.key_pem);
        eventually("pair C served", || trusted_by(&server, &c.ca_pem)).await;
        assert!(reports.lock().unwrap().last().unwrap().is_ok());
        server.stop().await;
    }

    /// The layout of a Kubernetes Secret volume: `tls.crt -> ..data/tls.crt`,
    /// `..data -> ..<timestamp>`, and an update swaps `..data` by renaming a new symlink over it.
    #[tokio::test]
    async fn kubernetes_secret_symlink_swaps_are_reloaded() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let publish = |generation: &str, pair: &tls::Generated| {
            let target = root.join(generation);
            std::fs::create_dir(&target).unwrap();
            std::fs::write(target.join("tls.crt"), &pair.chain_pem).unwrap();
            std::fs::write(target.join("tls.key"), &pair.key_pem).unwrap();
            let tmp = root.join("..data_tmp");
            symlink(generation, &tmp).unwrap();
            std::fs::rename(&tmp, root.join("..data")).unwrap();
        };
        let (a, b, c) = (local_pair(), local_pair(), local_pair());
        publish("..2026_01", &a);
        symlink("..data/tls.crt", root.join("tls.crt")).unwrap();
        symlink("..data/tls.key", root.join("tls.key")).unwrap();
        let (_certs, server, _) =
            serve_files(&root.join("tls.crt"), &root.join("tls.key"), events_only()).await;
        assert!(trusted_by(&server, &a.ca_pem).await);

        publish("..2026_02", &b);
        std::fs::remove_dir_all(root.join("..2026_01")).unwrap();
        eventually("pair B served", || trusted_by(&server, &b.ca_pem)).await;

        // A second swap: a watch on the first file would be dead by now.
        publish("..2026_03", &c);
        std::fs::remove_dir_all(root.join("..2026_02")).unwrap();
        eventually("pair C served", || trusted_by(&server, &c.ca_pem)).await;
        server.stop().await;
    }

    #[tokio::test]
    async fn the_poll_reloads_without_events() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let (a, b) = (local_pair(), local_pair());
        std::fs::write(&cert, &a.chain_pem).unwrap();
        std::fs::write(&key, &a.key_pem).unwrap();
        let options = ReloadOptions {
            poll_interval: Duration::from_millis(200),
            watch_directory: false,
        };
        let (_certs, server, reports) = serve_files(&cert, &key, options).await;
        // Unchanged files are not reloaded (nor reported) on every poll.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(reports.lock().unwrap().is_empty());
        replace(&key, &b.key_pem);
        replace(&cert, &b.chain_pem);
        eventually("pair B served", || trusted_by(&server, &b.ca_pem)).await;
        server.stop().await;
    }

    #[tokio::test]
    async fn shutdown_lets_an_in_flight_request_finish() {
        let serving = local_pair();
        let resolver = resolver_for(&serving);
        let config = tls::server_config(resolver, ClientAuth::None).unwrap();
        let started = Arc::new(Notify::new());
        let server = start_tls(
            config,
            routes(started.clone(), Duration::from_millis(1500)),
            ServerOptions::default(),
        )
        .await;
        let addr = server.addr;
        // Idle pooled connections (kept open until the end) must not hold the shutdown up.
        let mut idle = Vec::new();
        for http1 in [true, false] {
            let c = client(serving.ca_pem.as_bytes(), http1, None);
            c.get(server.url("/hello")).send().await.unwrap();
            idle.push(c);
        }
        let slow = client(serving.ca_pem.as_bytes(), false, None);
        let request = tokio::spawn(async move { slow.get(server_url(addr, "/slow")).send().await });
        tokio::time::timeout(DEADLINE, started.notified())
            .await
            .unwrap();
        let took = server.stop().await;
        let response = request.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "slow done");
        assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
        drop(idle);
        // The listener is closed.
        assert!(TcpStream::connect(addr).await.is_err());
    }

    /// A keep-alive HTTP/1.1 connection idle at the shutdown is not closed under the
    /// client's next request: it is answered, with `Connection: close`.
    #[tokio::test]
    async fn shutdown_answers_idle_keep_alive_connections_with_connection_close() {
        let serving = local_pair();
        let config = tls::server_config(resolver_for(&serving), ClientAuth::None).unwrap();
        let server = start_tls(config, quick_routes(), ServerOptions::default()).await;
        let url = server.url("/hello");
        let http1 = client(serving.ca_pem.as_bytes(), true, None);
        let first = http1.get(&url).send().await.unwrap();
        assert_eq!(first.status(), 200);
        assert!(first.headers().get(http::header::CONNECTION).is_none());
        first.text().await.unwrap();
        let stopping = tokio::spawn(server.stop());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let second = http1
            .get(&url)
            .send()
            .await
            .expect("answered on the pooled connection");
        assert_eq!(second.status(), 200);
        assert_eq!(second.headers()[http::header::CONNECTION], "close");
        let took = stopping.await.unwrap();
        assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    }

    fn server_url(addr: SocketAddr, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", addr.port())
    }

    #[tokio::test]
    async fn the_drain_is_bounded_and_stalled_handshakes_are_dropped() {
        let serving = local_pair();
        let resolver = resolver_for(&serving);
        let config = tls::server_config(resolver, ClientAuth::None).unwrap();
        let started = Arc::new(Notify::new());
        let options = ServerOptions {
            handshake_timeout: Duration::from_millis(300),
            drain_timeout: Duration::from_millis(500),
            ..ServerOptions::default()
        };
        let server = start_tls(
            config,
            routes(started.clone(), Duration::from_secs(3600)),
            options,
        )
        .await;

        // A client that connects and never says hello is cut off.
        let mut silent = TcpStream::connect(server.addr).await.unwrap();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(DEADLINE, silent.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");

        let hung = client(serving.ca_pem.as_bytes(), true, None);
        let url = server.url("/slow");
        let request = tokio::spawn(async move { hung.get(url).send().await });
        tokio::time::timeout(DEADLINE, started.notified())
            .await
            .unwrap();
        let took = server.stop().await;
        assert!(took < Duration::from_secs(5), "drain took {took:?}");
        assert!(
            request.await.unwrap().is_err(),
            "the hung request was cut off"
        );
    }

    #[tokio::test]
    async fn plain_http_serves_and_stops() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_plain(listener, quick_routes(), async move {
            let _ = stopped.await;
        }));
        let response = reqwest::Client::new()
            .get(format!("http://{addr}/hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_11);
        assert_eq!(response.text().await.unwrap(), "hello 127.0.0.1 certs=0");
        stop.send(()).unwrap();
        tokio::time::timeout(DEADLINE, task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[test]
    fn accept_backoff_grows_to_a_second_and_resets() {
        let mut b = Backoff::default();
        assert_eq!(b.next(), Duration::from_millis(5));
        assert_eq!(b.next(), Duration::from_millis(10));
        for _ in 0..20 {
            b.next();
        }
        assert_eq!(b.next(), Duration::from_secs(1));
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(5));
    }
}
