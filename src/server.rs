//! STUB
use std::sync::Arc;
pub async fn serve_tls<F>(
    _l: tokio::net::TcpListener,
    _c: Arc<arc_swap::ArcSwap<rustls::ServerConfig>>,
    _f: F,
    _s: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()>
where
    F: warp::Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    Ok(())
}
pub async fn serve_plain<F>(
    _l: tokio::net::TcpListener,
    _f: F,
    _s: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()>
where
    F: warp::Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    Ok(())
}
