//! STUB (replaced by the TLS module)
use std::sync::Arc;
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
pub enum CertSource {
    Files {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
    },
    SelfSigned {
        dir: std::path::PathBuf,
        hosts: Vec<String>,
    },
}
pub enum ClientAuth {
    None,
}
pub struct ServingCert;
impl ServingCert {
    pub fn start(
        _s: CertSource,
        _f: Arc<dyn Fn(Result<(), String>) + Send + Sync>,
    ) -> anyhow::Result<Self> {
        Ok(ServingCert)
    }
    pub fn resolver(&self) -> Arc<dyn rustls::server::ResolvesServerCert> {
        unimplemented!()
    }
}
pub fn server_config(
    _r: Arc<dyn rustls::server::ResolvesServerCert>,
    _c: ClientAuth,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    unimplemented!()
}
