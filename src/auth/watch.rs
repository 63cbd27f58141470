//! Keeps the [`AuthConfig`] current: read from ConfigMap
//! `kube-system/extension-apiserver-authentication` at start, then watched. Each change
//! swaps the config the authenticator reads and rebuilds the TLS server configuration so
//! the TLS layer asks for certificates of the new CAs: CA rotation needs no restart.
//! Connections already open keep the configuration they were accepted with, but their
//! chains are verified per request against the current CAs.
//!
//! Reading it needs `get`/`list`/`watch` on that ConfigMap (Role
//! `extension-apiserver-authentication-reader` in `kube-system`). An update that does not
//! parse is logged and the previous configuration kept.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use rustls::server::ResolvesServerCert;

use super::config::{AuthConfig, CONFIGMAP_NAME, CONFIGMAP_NAMESPACE};
use crate::tls;

/// The configuration authentication reads, shared with whatever keeps it current.
#[derive(Debug, Clone, Default)]
pub struct ConfigHandle {
    config: Arc<ArcSwap<AuthConfig>>,
    ready: Arc<AtomicBool>,
}

impl ConfigHandle {
    /// An empty configuration (no certificate trusted), not ready until one is stored.
    pub fn new() -> ConfigHandle {
        ConfigHandle::default()
    }

    /// A fixed, ready configuration (flags, tests).
    pub fn fixed(config: AuthConfig) -> ConfigHandle {
        let handle = ConfigHandle::new();
        handle.store(config);
        handle
    }

    pub fn config(&self) -> Arc<ArcSwap<AuthConfig>> {
        self.config.clone()
    }

    /// A configuration was loaded (or its absence tolerated).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn store(&self, config: AuthConfig) {
        self.config.store(Arc::new(config));
        self.ready.store(true, Ordering::Release);
    }
}

/// Where the TLS server configuration is rebuilt when the CAs change: the serving
/// certificate resolver and the `ArcSwap` the accept loop reads per connection.
#[derive(Clone)]
pub struct TlsReload {
    pub resolver: Arc<dyn ResolvesServerCert>,
    pub server_config: Arc<ArcSwap<rustls::ServerConfig>>,
}

impl std::fmt::Debug for TlsReload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsReload")
    }
}

impl TlsReload {
    /// Asks for client certificates of both CAs, or none when there is no CA.
    fn rebuild(&self, config: &AuthConfig) -> anyhow::Result<()> {
        let client_auth = match config.client_roots() {
            Some(roots) => tls::ClientAuth::Optional(roots),
            None => tls::ClientAuth::None,
        };
        let server_config = tls::server_config(self.resolver.clone(), client_auth)?;
        self.server_config.store(server_config);
        Ok(())
    }
}

/// The running watch; dropping it stops the watch.
#[derive(Debug)]
pub struct AuthConfigWatch {
    handle: ConfigHandle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AuthConfigWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AuthConfigWatch {
    /// Reads the ConfigMap (failing with a clear error if it cannot be read or used, unless
    /// `tolerate_lookup_failure`, in which case certificates are not trusted until it can
    /// be), applies it, then watches it in the background.
    pub async fn start(
        client: kube::Client,
        tls: Option<TlsReload>,
        tolerate_lookup_failure: bool,
    ) -> anyhow::Result<AuthConfigWatch> {
        let api: Api<ConfigMap> = Api::namespaced(client, CONFIGMAP_NAMESPACE);
        let handle = ConfigHandle::new();
        match api.get(CONFIGMAP_NAME).await {
            Ok(cm) => {
                let config = AuthConfig::from_configmap_data(&cm.data.unwrap_or_default())?;
                apply(&handle, tls.as_ref(), config)?;
            }
            Err(e) if tolerate_lookup_failure => {
                tracing::warn!(error = %e, configmap = %format!("{CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME}"),
                    "cannot read the authentication ConfigMap; client certificates and the front proxy are not trusted until it can be read");
                if let Some(t) = &tls {
                    t.rebuild(&AuthConfig::default())?;
                }
                handle.ready.store(true, Ordering::Release);
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "reading ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} (the service account needs Role \
                         extension-apiserver-authentication-reader in {CONFIGMAP_NAMESPACE}; \
                         --authentication-tolerate-lookup-failure starts without it)"
                    )
                })
            }
        }
        let task = tokio::spawn(watch(api, handle.clone(), tls));
        Ok(AuthConfigWatch { handle, task })
    }

    pub fn handle(&self) -> ConfigHandle {
        self.handle.clone()
    }
}

async fn watch(api: Api<ConfigMap>, handle: ConfigHandle, tls: Option<TlsReload>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP_NAME}"));
    let stream = watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                match AuthConfig::from_configmap_data(&cm.data.unwrap_or_default()) {
                    Ok(config) => {
                        if let Err(e) = apply(&handle, tls.as_ref(), config) {
                            tracing::error!(error = %format!("{e:#}"), "authentication configuration not applied; keeping the previous one");
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "authentication ConfigMap changed but cannot be used; keeping the previous configuration")
                    }
                }
            }
            Ok(watcher::Event::Delete(_)) => {
                tracing::warn!("authentication ConfigMap deleted; keeping the last configuration")
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(e) => {
                tracing::warn!(error = %e, "watching the authentication ConfigMap failed; retrying")
            }
        }
    }
}

/// Stores `config` (and rebuilds TLS) when it differs from the current one or none was
/// loaded yet; logs what changed. Returns the changes.
fn apply(
    handle: &ConfigHandle,
    tls: Option<&TlsReload>,
    config: AuthConfig,
) -> anyhow::Result<Vec<String>> {
    let first = !handle.is_ready();
    let changes = config.changes_from(&handle.config.load());
    if !first && changes.is_empty() {
        return Ok(changes);
    }
    if let Some(t) = tls {
        t.rebuild(&config)
            .context("rebuilding the TLS configuration for new client CAs")?;
    }
    handle.store(config);
    if first {
        tracing::info!(changes = ?changes, "authentication configuration loaded");
    } else {
        for change in &changes {
            tracing::info!(%change, "authentication configuration changed");
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::super::certs::testing::{configmap_data as data, TestCa};
    use super::super::config::{CLIENT_CA, REQUESTHEADER_CA};
    use super::*;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConnection};

    #[derive(Debug)]
    struct OneCert(Arc<rustls::sign::CertifiedKey>);
    impl ResolvesServerCert for OneCert {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    fn tls_target(server_ca: &TestCa) -> TlsReload {
        let (chain, key) = server_ca.server_pair("bridge.test");
        let provider = rustls::crypto::ring::default_provider();
        let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider).expect("pair");
        let resolver: Arc<dyn ResolvesServerCert> = Arc::new(OneCert(Arc::new(certified)));
        let initial = tls::server_config(resolver.clone(), tls::ClientAuth::None).expect("config");
        TlsReload {
            resolver,
            server_config: Arc::new(ArcSwap::new(initial)),
        }
    }

    /// A full in-memory handshake presenting `client` to the current server config.
    fn handshake(
        target: &TlsReload,
        server_ca: &TestCa,
        client: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    ) -> Result<Vec<CertificateDer<'static>>, rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add(first_cert(&server_ca.pem)).expect("server CA");
        let client_config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_client_auth_cert(client.0, client.1)
                .expect("client cert");
        let name = rustls::pki_types::ServerName::try_from("bridge.test").expect("name");
        let mut c = ClientConnection::new(Arc::new(client_config), name).expect("client");
        let mut s = ServerConnection::new(target.server_config.load_full()).expect("server");
        for _ in 0..20 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).expect("client write");
            }
            if !buf.is_empty() {
                s.read_tls(&mut buf.as_slice()).expect("server read");
                s.process_new_packets()?;
            }
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).expect("server write");
            }
            if !buf.is_empty() {
                c.read_tls(&mut buf.as_slice()).expect("client read");
                c.process_new_packets()?;
            }
            if !c.is_handshaking() && !s.is_handshaking() {
                break;
            }
        }
        Ok(s.peer_certificates()
            .map(|c| c.to_vec())
            .unwrap_or_default())
    }

    fn first_cert(pem: &str) -> CertificateDer<'static> {
        use rustls_pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem")
    }

    #[test]
    fn ca_rotation_rebuilds_tls_and_swaps_the_config() {
        let server_ca = TestCa::new("serving-ca");
        let proxy_ca = TestCa::new("front-proxy-ca");
        let new_proxy_ca = TestCa::new("front-proxy-ca-2");
        let client_ca = TestCa::new("client-ca");
        let target = tls_target(&server_ca);
        let handle = ConfigHandle::new();
        assert!(!handle.is_ready());

        let first = AuthConfig::from_configmap_data(&data(&[
            (CLIENT_CA, &client_ca.pem),
            (REQUESTHEADER_CA, &proxy_ca.pem),
        ]))
        .expect("first");
        apply(&handle, Some(&target), first.clone()).expect("apply");
        assert!(handle.is_ready());
        let presented = handshake(
            &target,
            &server_ca,
            proxy_ca.client_pair("front-proxy-client"),
        )
        .expect("old proxy CA accepted");
        assert_eq!(presented.len(), 1, "the chain reaches the request");
        handshake(&target, &server_ca, client_ca.client_pair("alice")).expect("client CA accepted");
        assert!(
            handshake(
                &target,
                &server_ca,
                new_proxy_ca.client_pair("front-proxy-client")
            )
            .is_err(),
            "a CA not yet published is refused at the handshake"
        );

        let before = target.server_config.load_full();
        assert!(apply(&handle, Some(&target), first)
            .expect("same")
            .is_empty());
        assert!(
            Arc::ptr_eq(&before, &target.server_config.load_full()),
            "no change, no rebuild"
        );

        let rotated = AuthConfig::from_configmap_data(&data(&[
            (CLIENT_CA, &client_ca.pem),
            (REQUESTHEADER_CA, &new_proxy_ca.pem),
        ]))
        .expect("rotated");
        let changes = apply(&handle, Some(&target), rotated.clone()).expect("apply");
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(changes[0].contains("front-proxy-ca-2"), "{changes:?}");
        handshake(
            &target,
            &server_ca,
            new_proxy_ca.client_pair("front-proxy-client"),
        )
        .expect("new CA accepted without a restart");
        assert!(handshake(
            &target,
            &server_ca,
            proxy_ca.client_pair("front-proxy-client")
        )
        .is_err());
        assert_eq!(**handle.config().load(), rotated);

        apply(&handle, Some(&target), AuthConfig::default()).expect("no CAs");
        let no_client_auth = handshake(&target, &server_ca, client_ca.client_pair("alice"))
            .expect("certificates are not asked for");
        assert!(no_client_auth.is_empty());
    }
}
