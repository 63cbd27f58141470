//! Serving certificates and the rustls server configuration.
//!
//! Two sources, as Kubernetes' own API servers have them:
//!
//! - files (`--tls-cert-file`/`--tls-private-key-file`), reloaded when they change. The
//!   *directory* is watched, not the files: a Secret mount replaces a `..data` symlink, and a
//!   watch on the old file dies with the first swap. A slow poll backs the watch up (events can
//!   be lost, and a symlinked file elsewhere produces none). A pair that does not load, such as
//!   a key written before its certificate, is refused and the previous pair keeps serving.
//! - `--cert-dir`: `apiserver.crt`/`apiserver.key` there are used when they load; otherwise a
//!   throw-away CA signs a serving certificate and the CA goes to `ca.crt`, which is what an
//!   APIService `caBundle` (or any rustls/webpki client) needs. The files are then watched like
//!   any others.
//!
//! One crypto provider only (ring): a second one makes rustls refuse to pick a default.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// How often certificate files are re-read even without a change event.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);
/// After a change event, wait this long for the writer to finish before reading.
const SETTLE: Duration = Duration::from_millis(200);
/// Generated certificates are valid this long.
const GENERATED_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A generated pair in `--cert-dir` that expires sooner than this is replaced at start.
const RENEW_MARGIN: Duration = Duration::from_secs(7 * 24 * 3600);

/// File names in `--cert-dir`, as kube-apiserver names them.
pub const CERT_DIR_CERT: &str = "apiserver.crt";
pub const CERT_DIR_KEY: &str = "apiserver.key";
pub const CERT_DIR_CA: &str = "ca.crt";

/// Installs ring as the process' rustls crypto provider. Idempotent: later calls (and a
/// provider installed earlier) are left alone.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The installed provider, or ring when none is installed yet.
fn provider() -> Arc<CryptoProvider> {
    install_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// PEM certificate chain (leaf first) and PEM private key (PKCS#8, PKCS#1 or SEC1).
    Files { cert: PathBuf, key: PathBuf },
    /// `--cert-dir`: reuse `apiserver.crt`/`apiserver.key` or generate them (plus `ca.crt`)
    /// for `localhost`, `127.0.0.1`, `::1` and `hosts`.
    SelfSigned { dir: PathBuf, hosts: Vec<String> },
}

/// Whether TLS clients are asked for certificates.
#[derive(Debug, Clone, Default)]
pub enum ClientAuth {
    /// No client certificates (standalone mode, bearer tokens only).
    #[default]
    None,
    /// Request but do not require a client certificate; one that is sent must chain to these
    /// roots (the front-proxy and client CAs), else the handshake fails.
    Optional(Arc<RootCertStore>),
}

/// Called after each reload attempt (not for unchanged files), e.g. to count in a metric.
/// The error text names the file and the reason.
pub type ReloadHook = Arc<dyn Fn(Result<(), String>) + Send + Sync>;

/// How certificate files are watched.
#[derive(Debug, Clone)]
pub struct ReloadOptions {
    /// Re-read the files this often even without a change event.
    pub poll_interval: Duration,
    /// Watch the files' directories for changes (inotify); without it only the poll runs.
    pub watch_directory: bool,
}

impl Default for ReloadOptions {
    fn default() -> Self {
        ReloadOptions {
            poll_interval: DEFAULT_POLL_INTERVAL,
            watch_directory: true,
        }
    }
}

/// Hands every TLS handshake the current certificate; swapped whole on reload, so a
/// handshake never sees a certificate from one pair and a key from another.
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    pub fn new(pair: CertifiedKey) -> CertResolver {
        CertResolver {
            current: ArcSwap::from_pointee(pair),
        }
    }

    /// The pair new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// Replaces the pair for new handshakes; open connections keep theirs.
    pub fn store(&self, pair: CertifiedKey) {
        self.current.store(Arc::new(pair));
    }
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The serving certificate and the thread that keeps it current. Dropping it stops the
/// reloads; the resolver keeps the last pair.
pub struct ServingCert {
    resolver: Arc<CertResolver>,
    cert: PathBuf,
    key: PathBuf,
    wake: mpsc::Sender<Wake>,
}

impl fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Drop for ServingCert {
    fn drop(&mut self) {
        let _ = self.wake.send(Wake::Stop);
    }
}

impl ServingCert {
    /// Loads (or generates) the certificate and starts reloading it, with the default poll.
    pub fn start(source: CertSource, on_reload: ReloadHook) -> anyhow::Result<ServingCert> {
        ServingCert::start_with(source, on_reload, ReloadOptions::default())
    }

    /// Like [`ServingCert::start`] with explicit watch settings. Needs no async runtime: the
    /// reloads run on their own thread, so blocking file reads stay off the executor.
    pub fn start_with(
        source: CertSource,
        on_reload: ReloadHook,
        options: ReloadOptions,
    ) -> anyhow::Result<ServingCert> {
        let (cert, key) = match source {
            CertSource::Files { cert, key } => (cert, key),
            CertSource::SelfSigned { dir, hosts } => ensure_self_signed(&dir, &hosts)?,
        };
        let bytes = read_pair_bytes(&cert, &key)?;
        let pair = parse_pair(&bytes, &cert, &key)?;
        let resolver = Arc::new(CertResolver::new(pair));
        tracing::info!(cert = %cert.display(), key = %key.display(), "serving certificate loaded");

        let (wake, wakes) = mpsc::channel();
        let watcher = if options.watch_directory {
            match watch_directories(&cert, &key, wake.clone()) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot watch the certificate directory; polling only");
                    None
                }
            }
        } else {
            None
        };
        let mut reloader = Reloader {
            cert: cert.clone(),
            key: key.clone(),
            resolver: resolver.clone(),
            on_reload,
            last_bytes: bytes,
            last_read_error: None,
        };
        let poll = options.poll_interval.max(Duration::from_millis(10));
        std::thread::Builder::new()
            .name("cert-reload".into())
            .spawn(move || {
                // Owned here so the inotify watch lives exactly as long as the loop.
                let _watcher = watcher;
                reloader.run(&wakes, poll);
            })
            .context("starting the certificate reload thread")?;
        Ok(ServingCert {
            resolver,
            cert,
            key,
            wake,
        })
    }

    /// The resolver to put into [`server_config`].
    pub fn resolver(&self) -> Arc<CertResolver> {
        self.resolver.clone()
    }

    /// The certificate and key files in use (for `--cert-dir`, the generated ones).
    pub fn paths(&self) -> (&Path, &Path) {
        (&self.cert, &self.key)
    }

    /// Re-reads the files now instead of waiting for an event or the poll.
    pub fn reload_now(&self) {
        let _ = self.wake.send(Wake::Changed);
    }
}

/// The rustls configuration: the resolver's certificate, optional client certificates,
/// ALPN `h2` then `http/1.1`.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    client_auth: ClientAuth,
) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let mut config = match client_auth {
        ClientAuth::None => builder.with_no_client_auth().with_cert_resolver(resolver),
        ClientAuth::Optional(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
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

/// Reads a PEM certificate chain and its key and checks that they belong together.
pub fn load_pair(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    parse_pair(&read_pair_bytes(cert, key)?, cert, key)
}

/// Both files' bytes, read once so the change check and the parse see the same contents.
type PairBytes = (Vec<u8>, Vec<u8>);

fn read_pair_bytes(cert: &Path, key: &Path) -> anyhow::Result<PairBytes> {
    let c =
        std::fs::read(cert).with_context(|| format!("reading certificate {}", cert.display()))?;
    let k = std::fs::read(key).with_context(|| format!("reading private key {}", key.display()))?;
    Ok((c, k))
}

fn parse_pair(
    (cert_pem, key_pem): &PairBytes,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificate {}", cert.display()))?;
    if chain.is_empty() {
        bail!("certificate {}: no CERTIFICATE block", cert.display());
    }
    let key_der = PrivateKeyDer::from_pem_slice(key_pem)
        .with_context(|| format!("parsing private key {}", key.display()))?;
    // from_der also compares the key's public half with the leaf's: this is what refuses a
    // pair caught between the writes of its two files.
    CertifiedKey::from_der(chain, key_der, &provider()).with_context(|| {
        format!(
            "certificate {} and private key {} do not match",
            cert.display(),
            key.display()
        )
    })
}

enum Wake {
    Changed,
    Stop,
}

/// Watches the (non-canonical) parent directories: their entries are what a Secret update or
/// a rename replaces. Reading the files ourselves produces open/close events; those are ignored.
fn watch_directories(
    cert: &Path,
    key: &Path,
    wake: mpsc::Sender<Wake>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    use notify::event::{AccessKind, AccessMode};
    use notify::{EventKind, RecursiveMode, Watcher};
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match event {
            Ok(e) => match e.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                EventKind::Access(_) => false,
                _ => true,
            },
            // An overflowed queue may have lost a real change.
            Err(_) => true,
        };
        if relevant {
            let _ = wake.send(Wake::Changed);
        }
    })
    .context("creating a file watcher")?;
    let mut dirs: Vec<PathBuf> = [cert, key].iter().map(|p| parent_dir(p)).collect();
    dirs.dedup();
    for dir in dirs {
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", dir.display()))?;
    }
    Ok(watcher)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Re-reads the pair on events and on the poll; acts only when the bytes changed, and reports
/// each distinct failure once instead of on every poll.
struct Reloader {
    cert: PathBuf,
    key: PathBuf,
    resolver: Arc<CertResolver>,
    on_reload: ReloadHook,
    /// The last contents tried, whether they loaded or not.
    last_bytes: PairBytes,
    last_read_error: Option<String>,
}

impl Reloader {
    fn run(&mut self, wakes: &mpsc::Receiver<Wake>, poll: Duration) {
        loop {
            match wakes.recv_timeout(poll) {
                Ok(Wake::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Ok(Wake::Changed) => {
                    // A writer usually touches several entries in a row; read once they are
                    // done. Events after this drain trigger another check.
                    std::thread::sleep(SETTLE);
                    loop {
                        match wakes.try_recv() {
                            Ok(Wake::Changed) => continue,
                            Ok(Wake::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                            Err(mpsc::TryRecvError::Empty) => break,
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            self.check();
        }
    }

    fn check(&mut self) {
        let bytes = match read_pair_bytes(&self.cert, &self.key) {
            Ok(b) => b,
            Err(e) => {
                let reason = format!("{e:#}");
                if self.last_read_error.as_deref() != Some(reason.as_str()) {
                    tracing::error!(cert = %self.cert.display(), key = %self.key.display(), error = %reason, "serving certificate not reloaded; the previous one keeps serving");
                    (self.on_reload)(Err(reason.clone()));
                    self.last_read_error = Some(reason);
                }
                return;
            }
        };
        self.last_read_error = None;
        if bytes == self.last_bytes {
            return;
        }
        let parsed = parse_pair(&bytes, &self.cert, &self.key);
        self.last_bytes = bytes;
        match parsed {
            Ok(pair) => {
                self.resolver.store(pair);
                tracing::info!(cert = %self.cert.display(), key = %self.key.display(), "serving certificate reloaded");
                (self.on_reload)(Ok(()));
            }
            Err(e) => {
                let reason = format!("{e:#}");
                tracing::error!(cert = %self.cert.display(), key = %self.key.display(), error = %reason, "serving certificate not reloaded; the previous one keeps serving");
                (self.on_reload)(Err(reason));
            }
        }
    }
}

/// `--cert-dir`: returns the certificate and key paths, generating them when absent or unusable.
///
/// An existing pair is reused when it loads. When `ca.crt` is there too (we generated the pair),
/// it must also chain to that CA, cover every requested name and stay valid for another week;
/// otherwise a new CA and pair replace it (the APIService `caBundle` must then be updated).
/// A pair without `ca.crt` was put there by someone else and is used as it is.
pub fn ensure_self_signed(dir: &Path, hosts: &[String]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert = dir.join(CERT_DIR_CERT);
    let key = dir.join(CERT_DIR_KEY);
    let ca = dir.join(CERT_DIR_CA);
    let names = serving_names(hosts);
    if cert.exists() || key.exists() {
        match reusable(&cert, &key, &ca, &names) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "using the existing certificate in --cert-dir");
                return Ok((cert, key));
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %format!("{e:#}"), "existing certificate in --cert-dir unusable; generating a new one")
            }
        }
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating --cert-dir {}", dir.display()))?;
    let generated = generate_ca_and_serving_cert(&names)?;
    // Key first and CA last: a crash in between leaves a set that fails `reusable`.
    write_file(&key, &generated.key_pem, 0o600)?;
    write_file(&cert, &generated.chain_pem, 0o644)?;
    write_file(&ca, &generated.ca_pem, 0o644)?;
    tracing::info!(dir = %dir.display(), names = ?names, ca = %ca.display(), "generated a CA and a serving certificate; put ca.crt into the APIService caBundle");
    Ok((cert, key))
}

/// `localhost`, `127.0.0.1`, `::1` and the given hosts, trimmed, without repeats.
fn serving_names(hosts: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for h in ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .chain(hosts.iter().map(String::as_str))
    {
        let h = h.trim();
        if !h.is_empty() && !names.iter().any(|n| n == h) {
            names.push(h.to_string());
        }
    }
    names
}

fn reusable(cert: &Path, key: &Path, ca: &Path, names: &[String]) -> anyhow::Result<()> {
    let pair = load_pair(cert, key)?;
    if !ca.exists() {
        return Ok(());
    }
    let mut roots = RootCertStore::empty();
    for c in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        let c = c.with_context(|| format!("parsing {}", ca.display()))?;
        roots
            .add(c)
            .with_context(|| format!("using {} as a CA", ca.display()))?;
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .with_context(|| format!("using {} as a CA", ca.display()))?;
    let (leaf, rest) = pair
        .cert
        .split_first()
        .with_context(|| format!("{} holds no certificate", cert.display()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock before 1970")?;
    let at = UnixTime::since_unix_epoch(now + RENEW_MARGIN);
    for name in names {
        // Wildcards and the like are not names a client connects to; skip what webpki can't check.
        let Ok(server_name) = ServerName::try_from(name.as_str()) else {
            continue;
        };
        verifier
            .verify_server_cert(leaf, rest, &server_name, &[], at)
            .with_context(|| {
                format!(
                    "{} for {name} (valid a week from now, signed by {})",
                    cert.display(),
                    ca.display()
                )
            })?;
    }
    Ok(())
}

/// A generated CA and serving certificate, PEM.
pub(crate) struct Generated {
    pub ca_pem: String,
    /// The serving certificate followed by the CA, as Kubernetes writes `apiserver.crt`.
    pub chain_pem: String,
    pub key_pem: String,
}

/// A CA (its key is discarded: it signs this one certificate) and a serving certificate for
/// `names` (IP addresses become IP SANs), both valid for a year, ECDSA P-256.
pub(crate) fn generate_ca_and_serving_cert(names: &[String]) -> anyhow::Result<Generated> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock before 1970")?;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    // Back-dated an hour for clocks slightly behind ours.
    let not_before = epoch + now.saturating_sub(Duration::from_secs(3600));
    let not_after = epoch + now + GENERATED_VALIDITY;
    let stamp = now.as_secs();

    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name.push(
        DnType::CommonName,
        format!("kube-metrics-bridge-ca@{stamp}"),
    );
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca = ca_params
        .self_signed(&ca_key)
        .context("signing the CA certificate")?;

    let key = KeyPair::generate().context("generating the serving key")?;
    let mut params = CertificateParams::new(names.to_vec()).context("serving certificate names")?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("kube-metrics-bridge@{stamp}"));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let leaf = params
        .signed_by(&key, &issuer)
        .context("signing the serving certificate")?;
    Ok(Generated {
        ca_pem: ca.pem(),
        chain_pem: format!("{}{}", leaf.pem(), ca.pem()),
        key_pem: key.serialize_pem(),
    })
}

/// Writes through a temporary file and a rename, so readers never see half a file; the
/// temporary file is created with `mode` so a key is never readable by others, even briefly.
fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A stale temporary file from a crash would keep its old mode under O_CREAT.
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(extra: &[&str]) -> Vec<String> {
        serving_names(&extra.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn generates_then_reuses_the_cert_dir_pair() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["bridge.monitoring.svc".to_string()];
        let (cert, key) = ensure_self_signed(dir.path(), &hosts).unwrap();
        assert_eq!(cert, dir.path().join("apiserver.crt"));
        let ca = dir.path().join("ca.crt");
        assert!(ca.exists());
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key is private");
        let pair = load_pair(&cert, &key).unwrap();
        assert_eq!(pair.cert.len(), 2, "leaf then CA");
        // The generated pair chains to ca.crt for every name, including the extra host.
        reusable(&cert, &key, &ca, &names(&["bridge.monitoring.svc"])).unwrap();

        let before = (std::fs::read(&cert).unwrap(), std::fs::read(&ca).unwrap());
        ensure_self_signed(dir.path(), &hosts).unwrap();
        let after = (std::fs::read(&cert).unwrap(), std::fs::read(&ca).unwrap());
        assert_eq!(before, after, "a second start reuses the pair");

        // A name the pair does not cover makes a new one.
        ensure_self_signed(dir.path(), &["other.example".to_string()]).unwrap();
        assert_ne!(std::fs::read(&cert).unwrap(), before.0);
        reusable(&cert, &key, &ca, &names(&["other.example"])).unwrap();
    }

    #[test]
    fn an_operator_pair_without_ca_is_used_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate_ca_and_serving_cert(&names(&[])).unwrap();
        std::fs::write(dir.path().join(CERT_DIR_CERT), &g.chain_pem).unwrap();
        std::fs::write(dir.path().join(CERT_DIR_KEY), &g.key_pem).unwrap();
        ensure_self_signed(dir.path(), &["not-covered.example".into()]).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CERT_DIR_CERT)).unwrap(),
            g.chain_pem
        );
        assert!(!dir.path().join(CERT_DIR_CA).exists());
    }

    #[test]
    fn a_broken_cert_dir_pair_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CERT_DIR_CERT), "garbage").unwrap();
        let (cert, key) = ensure_self_signed(dir.path(), &[]).unwrap();
        load_pair(&cert, &key).unwrap();
    }

    #[test]
    fn mismatched_or_missing_files_are_refused_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let a = generate_ca_and_serving_cert(&names(&[])).unwrap();
        let b = generate_ca_and_serving_cert(&names(&[])).unwrap();
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(&cert, &a.chain_pem).unwrap();
        std::fs::write(&key, &b.key_pem).unwrap();
        let err = format!("{:#}", load_pair(&cert, &key).unwrap_err());
        assert!(
            err.contains("do not match") && err.contains("tls.crt"),
            "{err}"
        );

        std::fs::write(&key, "").unwrap();
        let err = format!("{:#}", load_pair(&cert, &key).unwrap_err());
        assert!(
            err.contains("parsing private key") && err.contains("tls.key"),
            "{err}"
        );

        let err = format!(
            "{:#}",
            load_pair(&dir.path().join("missing.crt"), &key).unwrap_err()
        );
        assert!(
            err.contains("reading certificate") && err.contains("missing.crt"),
            "{err}"
        );

        std::fs::write(&key, &a.key_pem).unwrap();
        std::fs::write(&cert, "").unwrap();
        let err = format!("{:#}", load_pair(&cert, &key).unwrap_err());
        assert!(err.contains("no CERTIFICATE"), "{err}");
    }

    #[test]
    fn server_config_offers_h2_and_http11() {
        let g = generate_ca_and_serving_cert(&names(&[])).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c"), dir.path().join("k"));
        std::fs::write(&cert, &g.chain_pem).unwrap();
        std::fs::write(&key, &g.key_pem).unwrap();
        let resolver = Arc::new(CertResolver::new(load_pair(&cert, &key).unwrap()));
        let config = server_config(resolver.clone(), ClientAuth::None).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(g.ca_pem.as_bytes()).unwrap())
            .unwrap();
        server_config(resolver, ClientAuth::Optional(Arc::new(roots))).unwrap();
        install_crypto_provider();
        install_crypto_provider();
    }
}
