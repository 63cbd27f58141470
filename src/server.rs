//! The accept loops: TLS (HTTP/1.1 and HTTP/2 by ALPN) for the APIs and plain HTTP for
//! `/metrics`, both serving warp filters through `warp::service` (warp 0.4 has no TLS of its
//! own), with deadlines on handshakes and headers and a bounded graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// A TLS handshake that takes longer is dropped (slowloris guard).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// In-flight requests get this long to finish after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Who is on the other end of the connection; every request carries it as an extension for
/// authentication.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: SocketAddr,
    /// The client's certificate chain as presented (verified by rustls when client
    /// certificates are requested); empty without one.
    pub client_certs: Arc<Vec<CertificateDer<'static>>>,
}

fn connection_builder() -> Arc<Builder<TokioExecutor>> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(250)
        .keep_alive_interval(Duration::from_secs(30));
    Arc::new(builder)
}

/// Serves `filter` over TLS until `shutdown` resolves, then drains.
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
    let builder = connection_builder();
    accept_loop(listener, shutdown, move |tcp, remote_addr, watcher| {
        // The config is read per connection so a swapped one (new client CAs) applies to
        // every later handshake.
        let acceptor = tokio_rustls::TlsAcceptor::from(config.load_full());
        let (filter, builder) = (filter.clone(), builder.clone());
        async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
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
            let client_certs = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                .unwrap_or_default();
            let peer = PeerInfo {
                remote_addr,
                client_certs: Arc::new(client_certs),
            };
            let service = warp::service(filter).map_request(
                move |mut req: http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(peer.clone());
                    req
                },
            );
            let conn =
                builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%remote_addr, error = %e, "connection ended with an error");
            }
        }
    })
    .await
}

/// Serves `filter` over plain HTTP until `shutdown` resolves, then drains.
pub async fn serve_plain<F>(
    listener: TcpListener,
    filter: F,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    F: warp::Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let builder = connection_builder();
    accept_loop(listener, shutdown, move |tcp, remote_addr, watcher| {
        let (filter, builder) = (filter.clone(), builder.clone());
        async move {
            let service = TowerToHyperService::new(warp::service(filter));
            let conn = builder.serve_connection(TokioIo::new(tcp), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%remote_addr, error = %e, "connection ended with an error");
            }
        }
    })
    .await
}

/// Accepts until `shutdown`, one task a connection, then drains them (bounded).
async fn accept_loop<C, Fut>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    mut connection: C,
) -> anyhow::Result<()>
where
    C: FnMut(TcpStream, SocketAddr, Watcher) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote_addr)) => {
                    tokio::spawn(connection(tcp, remote_addr, graceful.watcher()));
                }
                Err(e) => backoff(&e).await,
            },
            _ = &mut shutdown => break,
        }
    }
    drain(graceful).await;
    Ok(())
}

/// An accept error (e.g. out of file descriptors) must neither end the server nor spin.
async fn backoff(e: &std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn drain(graceful: GracefulShutdown) {
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}
