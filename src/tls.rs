//! Serving certificates: loaded from files and reloaded when they change, or generated into
//! `--cert-dir` like Kubernetes' own servers do; and the rustls server configuration.
//!
//! Files are watched through their directory (a Kubernetes Secret mount swaps a `..data`
//! symlink, which kills a watch on the file itself), backed by a slow poll. A pair that does
//! not load, such as a key replaced before its certificate, is refused and the previous pair
//! keeps serving until the next change completes it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use notify_debouncer_full::notify::RecursiveMode;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;

/// How often certificate files are re-read even without a change event.
const POLL: Duration = Duration::from_secs(10);

/// Installs ring as the process' rustls crypto provider (once; later calls do nothing).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// PEM certificate (chain) and key files, reloaded when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// `apiserver.crt`/`apiserver.key` in `dir`, generated with a CA (`ca.crt`) if absent.
    SelfSigned { dir: PathBuf, hosts: Vec<String> },
}

/// Whether clients are asked for certificates.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    None,
    /// Request (not require) a client certificate and verify it against these roots.
    Optional(Arc<RootCertStore>),
}

/// Called after each reload attempt, for metrics.
pub type ReloadHook = Arc<dyn Fn(Result<(), String>) + Send + Sync>;

/// The serving certificate in use, and the watch that keeps it current.
pub struct ServingCert {
    current: Arc<ArcSwap<CertifiedKey>>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingCert").finish_non_exhaustive()
    }
}

impl Drop for ServingCert {
    fn drop(&mut self) {
        if let Some(task) = self.watcher.take() {
            task.abort();
        }
    }
}

impl ServingCert {
    /// Loads the certificate; for files, starts watching them (needs a tokio runtime).
    pub fn start(source: CertSource, on_reload: ReloadHook) -> anyhow::Result<ServingCert> {
        install_crypto_provider();
        match source {
            CertSource::SelfSigned { dir, hosts } => {
                let (cert, key) = ensure_self_signed(&dir, &hosts)?;
                let pair = load_pair(&cert, &key)?;
                Ok(ServingCert {
                    current: Arc::new(ArcSwap::from_pointee(pair)),
                    watcher: None,
                })
            }
            CertSource::Files { cert, key } => {
                let pair = load_pair(&cert, &key)?;
                let current = Arc::new(ArcSwap::from_pointee(pair));
                let watcher = tokio::spawn(watch_files(cert, key, current.clone(), on_reload));
                Ok(ServingCert {
                    current,
                    watcher: Some(watcher),
                })
            }
        }
    }

    pub fn resolver(&self) -> Arc<dyn ResolvesServerCert> {
        Arc::new(Resolver(self.current.clone()))
    }
}

/// Hands every handshake the current certificate.
struct Resolver(Arc<ArcSwap<CertifiedKey>>);

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The rustls configuration: our certificate, optional client certificates, h2 and http/1.1.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    client_auth: ClientAuth,
) -> anyhow::Result<Arc<ServerConfig>> {
    install_crypto_provider();
    let builder = ServerConfig::builder();
    let mut config = match client_auth {
        ClientAuth::None => builder.with_no_client_auth().with_cert_resolver(resolver),
        ClientAuth::Optional(roots) => {
            let verifier = WebPkiClientVerifier::builder(roots)
                .allow_unauthenticated()
                .build()
                .context("client certificate verifier")?;
            builder
                .with_client_cert_verifier(verifier)
                .with_cert_resolver(resolver)
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads a certificate chain and its key, checking that they belong together.
pub fn load_pair(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificate {}", cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", cert.display());
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading private key {}", key.display()))?;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    CertifiedKey::from_der(chain, key_der, &provider).with_context(|| {
        format!(
            "certificate {} and key {} do not form a pair",
            cert.display(),
            key.display()
        )
    })
}

/// Reuses `dir/apiserver.{crt,key}` when they load; otherwise generates a CA and a serving
/// certificate signed by it, so `dir/ca.crt` can go into an APIService `caBundle`.
fn ensure_self_signed(dir: &Path, hosts: &[String]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert = dir.join("apiserver.crt");
    let key = dir.join("apiserver.key");
    if cert.exists() && key.exists() {
        match load_pair(&cert, &key) {
            Ok(_) => return Ok((cert, key)),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "existing certificate in --cert-dir unusable; generating a new one")
            }
        }
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating --cert-dir {}", dir.display()))?;
    let (ca_pem, cert_pem, key_pem) = generate(hosts)?;
    write_file(&dir.join("ca.crt"), &ca_pem, 0o644)?;
    write_file(&key, &key_pem, 0o600)?;
    write_file(&cert, &cert_pem, 0o644)?;
    tracing::info!(dir = %dir.display(), "generated a self-signed CA and serving certificate");
    Ok((cert, key))
}

fn generate(hosts: &[String]) -> anyhow::Result<(String, String, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kube-metrics-bridge self-signed CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).context("signing the CA")?;

    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    names.extend(hosts.iter().filter(|h| !h.is_empty()).cloned());
    names.dedup();
    let key = KeyPair::generate().context("generating the serving key")?;
    let mut params = CertificateParams::new(names).context("serving certificate names")?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-metrics-bridge");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the serving certificate")?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Reloads the pair on directory events and on a slow poll, when the bytes changed.
async fn watch_files(
    cert: PathBuf,
    key: PathBuf,
    current: Arc<ArcSwap<CertifiedKey>>,
    on_reload: ReloadHook,
) {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let mut dirs: Vec<PathBuf> = [&cert, &key]
        .iter()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .map(|d| {
            if d.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                d
            }
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    let _debouncer = notify_debouncer_full::new_debouncer(Duration::from_millis(200), None, move |r: notify_debouncer_full::DebounceEventResult| {
        if r.is_ok() {
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "cannot watch certificate files; polling only"))
    .ok()
    .map(|mut d| {
        for dir in &dirs {
            if let Err(e) = d.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch certificate directory; polling only");
            }
        }
        d
    });
    let read = || (std::fs::read(&cert).ok(), std::fs::read(&key).ok());
    let mut loaded = read();
    let mut poll = tokio::time::interval(POLL);
    poll.tick().await;
    loop {
        tokio::select! {
            Some(()) = rx.recv() => {}
            _ = poll.tick() => {}
        }
        let now = read();
        if now == loaded {
            continue;
        }
        match load_pair(&cert, &key) {
            Ok(pair) => {
                current.store(Arc::new(pair));
                loaded = now;
                tracing::info!(cert = %cert.display(), "serving certificate reloaded");
                on_reload(Ok(()));
            }
            Err(e) => {
                let why = format!("{e:#}");
                tracing::error!(error = %why, "serving certificate not reloaded; the previous one keeps serving");
                on_reload(Err(why));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_then_reuses_self_signed_pair() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = ensure_self_signed(dir.path(), &["bridge.custom-metrics.svc".into()])
            .expect("generate");
        assert!(dir.path().join("ca.crt").exists());
        let first = std::fs::read(&cert).expect("read");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        load_pair(&cert, &key).expect("loads");
        ensure_self_signed(dir.path(), &[]).expect("reuse");
        assert_eq!(
            std::fs::read(&cert).expect("read"),
            first,
            "an existing pair is reused"
        );
    }

    #[test]
    fn mismatched_pair_is_refused() {
        let a = tempfile::tempdir().expect("a");
        let b = tempfile::tempdir().expect("b");
        let (cert_a, _) = ensure_self_signed(a.path(), &[]).expect("a");
        let (_, key_b) = ensure_self_signed(b.path(), &[]).expect("b");
        let err = load_pair(&cert_a, &key_b).expect_err("mismatch");
        assert!(format!("{err:#}").contains("do not form a pair"), "{err:#}");
        let err = load_pair(&a.path().join("missing.crt"), &key_b).expect_err("missing");
        assert!(format!("{err:#}").contains("missing.crt"), "{err:#}");
    }
}
