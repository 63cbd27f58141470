//! Accept loops serving warp filters: TLS for the metrics APIs, plain HTTP for `/metrics` and
//! health.
//!
//! warp 0.4 has no TLS and `warp::serve` takes only a plain listener, so the loop is ours:
//! rustls handshake (under a deadline) in a task per connection, then `warp::service(filter)`
//! through hyper-util's auto builder, HTTP/2 or HTTP/1.1 as ALPN chose. Every request carries a
//! [`PeerInfo`] extension for authentication. On shutdown the listener closes, connections are
//! asked to finish (HTTP/1.1 closes after the current response, HTTP/2 sends GOAWAY), and
//! whatever is still open after the drain deadline is aborted.
//!
//! Nothing a client does can hold resources without bound (design §3.4; the pieces are in
//! [`limits`]): connections per listener are capped (beyond the cap they are accepted and
//! closed at once, and counted), a connection must send its first byte within a deadline after
//! the handshake (HTTP/1.1, HTTP/2 and ALPN-less alike), one with no request in flight for the
//! idle timeout is closed, HTTP/2 streams per connection are capped and their flow-control
//! windows kept small (we never read request bodies), and requests in flight per listener are
//! capped, the rest answered 429 with a Status and `Retry-After`, health paths exempt.

pub mod limits;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use warp::Reply;

use crate::backoff::Backoff;

use crate::metrics::ListenerMetrics;
use limits::{Activity, FirstByteDeadline, Guarded, InFlight};

/// Who is on the other end of a connection. Inserted into every request; read it with
/// `warp::ext::get::<PeerInfo>()`.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: SocketAddr,
    /// The client's certificate chain, leaf first, already verified by rustls against the
    /// roots of [`crate::tls::ClientAuth::Optional`]; empty when none was sent (or asked for,
    /// or on the plain port).
    pub client_certs: Arc<Vec<CertificateDer<'static>>>,
    /// What that chain proved, checked once for the connection's requests (see
    /// [`crate::auth::ChainMemo`]).
    pub chain_memo: Arc<crate::auth::ChainMemo>,
}

impl PeerInfo {
    /// A new connection from `remote_addr` that presented `client_certs`.
    pub fn new(remote_addr: SocketAddr, client_certs: Vec<CertificateDer<'static>>) -> PeerInfo {
        PeerInfo {
            remote_addr,
            client_certs: Arc::new(client_certs),
            chain_memo: Arc::default(),
        }
    }
}

/// Limits of the accept loops. The defaults are the `serve` flags' defaults for the secure
/// port (see the README's security section for why each).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// A TLS handshake that takes longer is dropped, so idle sockets can't pile up.
    pub handshake_timeout: Duration,
    /// After the TLS handshake (on the plain port: after accept), the client must send its
    /// first byte within this long, or the connection is closed. hyper's HTTP/2 handshake and
    /// hyper-util's protocol detection would wait forever. Zero: no deadline.
    pub first_byte_timeout: Duration,
    /// HTTP/1.1: time to receive a request's headers once they have started.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed: HTTP/1.1 keep-alive
    /// closes, HTTP/2 gets GOAWAY (and is dropped if it still has nothing in flight
    /// [`IDLE_CLOSE_GRACE`] later, e.g. a handshake that never finished). Zero: never.
    pub idle_timeout: Duration,
    /// HTTP/2 streams in flight per connection (`--http2-max-streams-per-connection`).
    pub max_concurrent_streams: u32,
    /// Connections open at once on this listener, handshakes included; more are accepted and
    /// closed at once (and counted). 0: no limit.
    pub max_connections: usize,
    /// Connections open at once from one client address, so that one client cannot take
    /// every slot of `max_connections`; more are closed at once (and counted). 0: no limit.
    pub max_connections_per_ip: usize,
    /// Requests being answered at once over all connections of this listener; more get 429
    /// TooManyRequests. Health paths are exempt. 0: no limit (`--max-requests-inflight`).
    pub max_requests_inflight: usize,
    /// After shutdown starts, in-flight requests get this long before their connections are
    /// aborted.
    pub drain_timeout: Duration,
    /// After shutdown starts, how long open connections keep being served (HTTP/1.1 answers
    /// with `Connection: close`) before they are asked to finish; part of `drain_timeout`.
    /// Without it, a request written on an idle HTTP/1.1 keep-alive connection just as
    /// shutdown closed it was lost ("connection closed before message completed": one or two
    /// per SIGTERM under load, `integration/load_faults.rs`).
    pub close_grace: Duration,
    /// Where this listener's counts go.
    pub metrics: ListenerMetrics,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            handshake_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            max_concurrent_streams: 250,
            max_connections: 1024,
            max_connections_per_ip: 256,
            max_requests_inflight: 400,
            drain_timeout: Duration::from_secs(20),
            close_grace: Duration::from_secs(1),
            metrics: ListenerMetrics::default(),
        }
    }
}

/// How long an idle connection asked to close may take before it is dropped.
pub const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What `idle_timeout: 0` means: a year, i.e. never, without overflowing an `Instant`.
const NO_IDLE_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Seconds a 429 asks the client to wait (kube-apiserver's `Retry-After: 1`).
const RETRY_AFTER_SECONDS: u32 = 1;

/// HTTP/2 flow-control windows (the protocol's defaults; hyper's are 1 MiB). Requests here
/// have no body worth reading, so a client may only park this much unread data per
/// connection.
const H2_WINDOW: u32 = 65_535;

/// Connection builders: one for each ALPN outcome, so a client that negotiated a protocol
/// gets exactly that one, and a client without ALPN gets auto-detection. Public so the
/// benchmark's floor server (benches/shared/floor.rs) serves with exactly these settings.
pub struct Builders {
    auto: Builder<TokioExecutor>,
    http1: Builder<TokioExecutor>,
    http2: Builder<TokioExecutor>,
}

impl Builders {
    pub fn new(options: &ServerOptions) -> Arc<Builders> {
        let mut auto = Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_read_timeout);
        auto.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(options.max_concurrent_streams)
            .initial_stream_window_size(H2_WINDOW)
            .initial_connection_window_size(H2_WINDOW)
            // Finds peers that vanished without closing (half-open TCP after a node failure).
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        Arc::new(Builders {
            http1: auto.clone().http1_only(),
            http2: auto.clone().http2_only(),
            auto,
        })
    }

    /// The builder for what the TLS handshake negotiated.
    pub fn for_alpn(&self, alpn: Option<&[u8]>) -> &Builder<TokioExecutor> {
        match alpn {
            Some(b"h2") => &self.http2,
            Some(b"http/1.1") => &self.http1,
            _ => &self.auto,
        }
    }
}

/// What every connection of a listener shares.
struct Shared {
    builders: Arc<Builders>,
    in_flight: InFlight,
    options: ServerOptions,
}

impl Shared {
    fn new(options: ServerOptions) -> Arc<Shared> {
        Arc::new(Shared {
            builders: Builders::new(&options),
            in_flight: InFlight::new(
                options.max_requests_inflight,
                options.metrics.requests_inflight.clone(),
                options.metrics.rejected_requests.clone(),
            ),
            options,
        })
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
    let shared = Shared::new(options);
    let loop_options = shared.options.clone();
    accept_loop(
        listener,
        shutdown,
        &loop_options,
        move |tcp, remote_addr, stop, closing| {
            let acceptor = tokio_rustls::TlsAcceptor::from(config.load_full());
            let (filter, shared) = (filter.clone(), shared.clone());
            async move {
                let handshake_timeout = shared.options.handshake_timeout;
                let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote_addr, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        shared.options.metrics.handshake_timeouts.inc();
                        tracing::debug!(%remote_addr, "TLS handshake timed out");
                        return;
                    }
                };
                let session = tls.get_ref().1;
                let client_certs: Vec<CertificateDer<'static>> = session
                    .peer_certificates()
                    .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
                    .unwrap_or_default();
                let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
                let peer = PeerInfo::new(remote_addr, client_certs);
                let builder = shared.builders.for_alpn(alpn.as_deref());
                serve_connection(tls, peer, filter, builder, &shared, stop, closing).await;
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
    let shared = Shared::new(options);
    let loop_options = shared.options.clone();
    accept_loop(
        listener,
        shutdown,
        &loop_options,
        move |tcp, remote_addr, stop, closing| {
            let (filter, shared) = (filter.clone(), shared.clone());
            async move {
                let peer = PeerInfo::new(remote_addr, Vec::new());
                serve_connection(
                    tcp,
                    peer,
                    filter,
                    &shared.builders.auto,
                    &shared,
                    stop,
                    closing,
                )
                .await;
            }
        },
    )
    .await
}

/// Serves one connection's requests, each with `peer` as an extension, until it closes, goes
/// idle, or the shutdown finishes it. Once `closing` is set (shutdown has begun), HTTP/1.x
/// answers carry `Connection: close`, so keep-alive clients stop sending on it.
async fn serve_connection<I, F>(
    io: I,
    peer: PeerInfo,
    filter: F,
    builder: &Builder<TokioExecutor>,
    shared: &Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    closing: Arc<AtomicBool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: warp::Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let remote_addr = peer.remote_addr;
    let options = &shared.options;
    let idle_timeout = match options.idle_timeout {
        d if d.is_zero() => NO_IDLE_TIMEOUT,
        d => d,
    };
    let io = FirstByteDeadline::new(
        io,
        options.first_byte_timeout,
        options.metrics.first_byte_timeouts.clone(),
    );
    let activity = Activity::new();
    let service = {
        let (activity, in_flight) = (activity.clone(), shared.in_flight.clone());
        let warp_service = warp::service(filter);
        hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(peer.clone());
            let http1 = request.version() < http::Version::HTTP_2;
            let closing = closing.clone();
            let active = activity.start();
            let exempt = limits::exempt_from_inflight_limit(request.uri().path());
            let admitted = if exempt {
                Ok(None)
            } else {
                in_flight.try_admit().map(Some).ok_or(())
            };
            let mut warp_service = warp_service.clone();
            async move {
                let mut response = match admitted {
                    Err(()) => {
                        tracing::debug!(%remote_addr, path = request.uri().path(), "too many requests in flight; 429");
                        crate::api::status::too_many_requests_response(RETRY_AFTER_SECONDS)
                            .into_response()
                            .map(|body| Guarded::new(body, None, active))
                    }
                    Ok(admitted) => {
                        let response = tower::Service::call(&mut warp_service, request).await?;
                        response.map(|body| Guarded::new(body, admitted, active))
                    }
                };
                if http1 && closing.load(Ordering::SeqCst) {
                    response.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut closing = false;
    // Set once idle: the connection was asked to close, and is dropped if it has not closed
    // by then (and nothing has been in flight for IDLE_CLOSE_GRACE).
    let mut idle_close_by: Option<tokio::time::Instant> = None;
    // When the idle clock next needs a look: `None` while a request is in flight (checked
    // again after `idle_timeout`, as the request may be long).
    let due = |idle_close_by: Option<tokio::time::Instant>| match (
        activity.idle_since(),
        idle_close_by,
    ) {
        (None, _) => None,
        (Some(since), None) => Some(since + idle_timeout),
        // A request that started before the GOAWAY gets its response flushed first.
        (Some(since), Some(by)) => Some(by.max(since + IDLE_CLOSE_GRACE)),
    };
    loop {
        let wake = due(idle_close_by).unwrap_or_else(|| tokio::time::Instant::now() + idle_timeout);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%remote_addr, error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !closing => {
                let _ = changed;
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(wake) => {
                let now = tokio::time::Instant::now();
                if due(idle_close_by).is_none_or(|at| now < at) {
                    continue;
                }
                if idle_close_by.is_some() {
                    tracing::debug!(%remote_addr, "idle connection did not close; dropping it");
                    return;
                }
                tracing::debug!(%remote_addr, "connection idle; closing it");
                options.metrics.idle_timeouts.inc();
                closing = true;
                idle_close_by = Some(now + IDLE_CLOSE_GRACE);
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Accepts until `shutdown`, one task a connection (at most `max_connections` at once);
/// then closes the listener, signals the connections to finish, waits up to `drain_timeout`
/// and aborts the rest.
async fn accept_loop<C, Fut>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    options: &ServerOptions,
    mut connection: C,
) -> anyhow::Result<()>
where
    C: FnMut(TcpStream, SocketAddr, watch::Receiver<bool>, Arc<AtomicBool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let closing = Arc::new(AtomicBool::new(false));
    let drain_timeout = options.drain_timeout;
    let slots = Arc::new(Semaphore::new(match options.max_connections {
        0 => Semaphore::MAX_PERMITS,
        n => n,
    }));
    let metrics = &options.metrics;
    let mut tasks: JoinSet<()> = JoinSet::new();
    // 5 ms doubling to 1 s, as Go's net/http does after accept errors.
    let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_secs(1));
    let per_ip = limits::PerIp::new(options.max_connections_per_ip);
    let mut last_full_warning: Option<tokio::time::Instant> = None;
    let mut last_per_ip_warning: Option<tokio::time::Instant> = None;
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
                    // Full: close at once. The next accept waits for a new connection, so
                    // this cannot spin; the client sees a closed connection.
                    let Some(per_ip_slot) = per_ip.try_acquire(remote_addr.ip()) else {
                        metrics.rejected_connections_per_ip.inc();
                        let now = tokio::time::Instant::now();
                        if last_per_ip_warning.is_none_or(|t| now - t >= Duration::from_secs(60)) {
                            last_per_ip_warning = Some(now);
                            tracing::warn!(limit = options.max_connections_per_ip, %remote_addr, "connection limit per client address reached; closing its new connections (warned at most once a minute)");
                        }
                        drop(tcp);
                        continue;
                    };
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        metrics.rejected_connections.inc();
                        let now = tokio::time::Instant::now();
                        if last_full_warning.is_none_or(|t| now - t >= Duration::from_secs(60)) {
                            last_full_warning = Some(now);
                            tracing::warn!(limit = options.max_connections, %remote_addr, "connection limit reached; closing new connections (warned at most once a minute)");
                        }
                        drop(tcp);
                        continue;
                    };
                    // Responses are small and latency matters more than packet count.
                    let _ = tcp.set_nodelay(true);
                    let open = OpenConnection::new(slot, per_ip_slot, metrics.open_connections.clone());
                    let serve = connection(tcp, remote_addr, stop_rx.clone(), closing.clone());
                    tasks.spawn(async move {
                        serve.await;
                        drop(open);
                    });
                }
                // The peer gave up before we accepted: nothing wrong with the listener.
                Err(e) if is_connection_error(&e) => {
                    tracing::debug!(error = %e, "connection dropped before accept");
                }
                // Out of file descriptors and the like: retrying at once would spin, and
                // returning would take the server down; wait, more each time, then retry.
                Err(e) => {
                    let delay = backoff.next_delay();
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
    let _ = stop_tx.send(true);
    let drained = async { while tasks.join_next().await.is_some() {} };
    let left = drain_timeout.saturating_sub(started.elapsed());
    if tokio::time::timeout(left, drained).await.is_err() {
        tracing::warn!(connections = tasks.len(), timeout = ?options.drain_timeout, "connections still open after the drain timeout; closing them");
    }
    tasks.shutdown().await;
    Ok(())
}

/// A connection's slot under the listener's cap, counted in the open-connections gauge until
/// its task ends (or is aborted).
struct OpenConnection {
    _slot: tokio::sync::OwnedSemaphorePermit,
    _per_ip_slot: limits::PerIpSlot,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl OpenConnection {
    fn new(
        slot: tokio::sync::OwnedSemaphorePermit,
        per_ip_slot: limits::PerIpSlot,
        gauge: prometheus_client::metrics::gauge::Gauge,
    ) -> Self {
        gauge.inc();
        OpenConnection {
            _slot: slot,
            _per_ip_slot: per_ip_slot,
            gauge,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
    )
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

    /// A TLS session to `server` trusting `ca_pem`, offering `alpn`, that sends nothing.
    async fn tls_session(
        server: &Running,
        ca_pem: &str,
        alpn: &[&[u8]],
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        connector
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap()
    }

    /// Reads (and discards, e.g. HTTP/2 SETTINGS) until the server closes; false if it is
    /// still open after [`DEADLINE`].
    async fn closed_by_server<R: AsyncRead + Unpin>(mut io: R) -> bool {
        let mut buf = [0u8; 1024];
        tokio::time::timeout(DEADLINE, async {
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    fn serving_config(serving: &tls::Generated) -> Arc<ServerConfig> {
        tls::server_config(resolver_for(serving), ClientAuth::None).unwrap()
    }

    #[tokio::test]
    async fn silent_connections_are_closed_after_the_first_byte_deadline() {
        let serving = local_pair();
        let metrics = ListenerMetrics::default();
        let options = ServerOptions {
            first_byte_timeout: Duration::from_millis(300),
            metrics: metrics.clone(),
            ..ServerOptions::default()
        };
        let server = start_tls(serving_config(&serving), quick_routes(), options).await;
        let alpns: [&[&[u8]]; 3] = [&[b"h2"], &[b"http/1.1"], &[]];
        for alpn in alpns {
            let session = tls_session(&server, &serving.ca_pem, alpn).await;
            assert!(closed_by_server(session).await, "ALPN {alpn:?} kept open");
        }
        assert_eq!(metrics.first_byte_timeouts.get(), 3);
        eventually("no connection open", || async {
            metrics.open_connections.get() == 0
        })
        .await;
        // A client that talks is served as before.
        let response = client(serving.ca_pem.as_bytes(), false, None)
            .get(server.url("/hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        server.stop().await;
    }

    /// One byte, then silence: past the first-byte deadline, but never a request. hyper's
    /// HTTP/2 handshake would wait for the rest of the preface forever, and a GOAWAY cannot
    /// be sent before it: the idle clock drops such connections.
    #[tokio::test]
    async fn a_connection_that_stalls_after_one_byte_is_dropped_when_idle() {
        use tokio::io::AsyncWriteExt;
        let serving = local_pair();
        let metrics = ListenerMetrics::default();
        let options = ServerOptions {
            idle_timeout: Duration::from_millis(300),
            metrics: metrics.clone(),
            ..ServerOptions::default()
        };
        let server = start_tls(serving_config(&serving), quick_routes(), options).await;
        let alpns: [(&[&[u8]], &[u8]); 3] = [(&[b"h2"], b"P"), (&[b"http/1.1"], b"G"), (&[], b"P")];
        let mut sessions = Vec::new();
        for (alpn, byte) in alpns {
            let mut session = tls_session(&server, &serving.ca_pem, alpn).await;
            session.write_all(byte).await.unwrap();
            session.flush().await.unwrap();
            sessions.push(session);
        }
        for session in sessions {
            assert!(closed_by_server(session).await, "a stalled connection kept");
        }
        assert_eq!(metrics.idle_timeouts.get(), 3);
        assert_eq!(metrics.first_byte_timeouts.get(), 0);
        server.stop().await;
    }

    #[tokio::test]
    async fn the_connection_cap_closes_extra_connections_until_one_ends() {
        let serving = local_pair();
        let metrics = ListenerMetrics::default();
        let options = ServerOptions {
            max_connections: 2,
            metrics: metrics.clone(),
            ..ServerOptions::default()
        };
        let server = start_tls(serving_config(&serving), quick_routes(), options).await;
        let first = tls_session(&server, &serving.ca_pem, &[b"h2"]).await;
        let _second = TcpStream::connect(server.addr).await.unwrap();
        eventually("two connections open", || async {
            metrics.open_connections.get() == 2
        })
        .await;
        let third = TcpStream::connect(server.addr).await.unwrap();
        assert!(closed_by_server(third).await, "a third connection was kept");
        assert_eq!(metrics.rejected_connections.get(), 1);
        drop(first);
        eventually("a slot freed", || async {
            metrics.open_connections.get() == 1
        })
        .await;
        let response = client(serving.ca_pem.as_bytes(), true, None)
            .get(server.url("/hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        server.stop().await;
    }

    #[tokio::test]
    async fn one_address_cannot_take_every_slot() {
        let serving = local_pair();
        let metrics = ListenerMetrics::default();
        let options = ServerOptions {
            max_connections: 10,
            max_connections_per_ip: 2,
            metrics: metrics.clone(),
            ..ServerOptions::default()
        };
        let server = start_tls(serving_config(&serving), quick_routes(), options).await;
        let from = |ip: [u8; 4]| {
            let addr = server.addr;
            async move {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind((ip, 0).into()).unwrap();
                socket.connect(addr).await.unwrap()
            }
        };
        let _a1 = from([127, 0, 0, 1]).await;
        let _a2 = from([127, 0, 0, 1]).await;
        eventually("two connections open", || async {
            metrics.open_connections.get() == 2
        })
        .await;
        let a3 = from([127, 0, 0, 1]).await;
        assert!(
            closed_by_server(a3).await,
            "a third from one address was kept"
        );
        assert_eq!(metrics.rejected_connections_per_ip.get(), 1);
        assert_eq!(metrics.rejected_connections.get(), 0);
        // Another address still gets in.
        let _b1 = from([127, 0, 0, 2]).await;
        eventually("three connections open", || async {
            metrics.open_connections.get() == 3
        })
        .await;
        server.stop().await;
    }

    #[tokio::test]
    async fn idle_connections_close_but_busy_ones_do_not() {
        let serving = local_pair();
        let metrics = ListenerMetrics::default();
        let started = Arc::new(Notify::new());
        let options = ServerOptions {
            idle_timeout: Duration::from_millis(400),
            metrics: metrics.clone(),
            ..ServerOptions::default()
        };
        let server = start_tls(
            serving_config(&serving),
            routes(started, Duration::from_millis(1500)),
            options,
        )
        .await;
        for http1 in [true, false] {
            let c = client(serving.ca_pem.as_bytes(), http1, None);
            // A request longer than the idle timeout is not cut off...
            let slow = c.get(server.url("/slow")).send().await.unwrap();
            assert_eq!(slow.text().await.unwrap(), "slow done");
            // ...and once nothing is in flight the pooled connection is closed.
            eventually("the idle connection closed", || async {
                metrics.open_connections.get() == 0
            })
            .await;
        }
        assert_eq!(metrics.idle_timeouts.get(), 2);
        server.stop().await;
    }

    #[tokio::test]
    async fn requests_beyond_the_inflight_limit_get_429_but_health_does_not() {
        let serving = local_pair();
        let metrics = ListenerMetrics::default();
        let started = Arc::new(Notify::new());
        let options = ServerOptions {
            max_requests_inflight: 1,
            metrics: metrics.clone(),
            ..ServerOptions::default()
        };
        let server = start_tls(
            serving_config(&serving),
            routes(started.clone(), Duration::from_secs(2)),
            options,
        )
        .await;
        let c = client(serving.ca_pem.as_bytes(), false, None);
        let slow = tokio::spawn(c.get(server.url("/slow")).send());
        tokio::time::timeout(DEADLINE, started.notified())
            .await
            .unwrap();
        assert_eq!(metrics.requests_inflight.get(), 1);
        let refused = c.get(server.url("/hello")).send().await.unwrap();
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.headers()["retry-after"], "1");
        let status: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(status["reason"], "TooManyRequests");
        assert_eq!(status["code"], 429);
        assert_eq!(metrics.rejected_requests.get(), 1);
        // Health paths are not counted against the limit (this filter has no such route:
        // 404, not 429).
        let health = c.get(server.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 404);
        assert_eq!(slow.await.unwrap().unwrap().status(), 200);
        eventually("the slot freed", || async {
            metrics.requests_inflight.get() == 0
        })
        .await;
        let ok = c.get(server.url("/hello")).send().await.unwrap();
        assert_eq!(ok.status(), 200);
        server.stop().await;
    }

    #[tokio::test]
    async fn plain_port_applies_the_first_byte_deadline_and_the_cap() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = ListenerMetrics::default();
        let options = ServerOptions {
            first_byte_timeout: Duration::from_millis(300),
            max_connections: 1,
            metrics: metrics.clone(),
            ..ServerOptions::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_plain_with(
            listener,
            quick_routes(),
            async move {
                let _ = stopped.await;
            },
            options,
        ));
        let silent = TcpStream::connect(addr).await.unwrap();
        eventually("one connection open", || async {
            metrics.open_connections.get() == 1
        })
        .await;
        let extra = TcpStream::connect(addr).await.unwrap();
        assert!(closed_by_server(extra).await);
        assert_eq!(metrics.rejected_connections.get(), 1);
        assert!(closed_by_server(silent).await);
        assert_eq!(metrics.first_byte_timeouts.get(), 1);
        eventually("the slot freed", || async {
            metrics.open_connections.get() == 0
        })
        .await;
        let response = reqwest::Client::new()
            .get(format!("http://{addr}/hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        stop.send(()).unwrap();
        tokio::time::timeout(DEADLINE, task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
