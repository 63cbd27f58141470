//! Outbound HTTPS clients whose TLS files (a CA bundle, a client certificate and its key)
//! are mounted Secrets: the client is rebuilt when one of them changes, so a rotated
//! certificate is used from the next call on, without a restart. Backends (Prometheus and
//! compatible engines) and upstream metrics servers both use it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;

use crate::prometheus::auth::FileStamp;

/// The TLS files of one client, as configured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> impl Iterator<Item = &Path> {
        [&self.ca_file, &self.client_cert_file, &self.client_key_file]
            .into_iter()
            .filter_map(|f| f.as_deref())
    }

    fn stamps(&self) -> Vec<Option<FileStamp>> {
        self.paths().map(|f| FileStamp::of(f).ok()).collect()
    }

    /// Adds the CA bundle and the client identity to `builder`; errors name `place` and the
    /// field.
    pub fn apply(
        &self,
        mut builder: reqwest::ClientBuilder,
        place: &str,
    ) -> anyhow::Result<reqwest::ClientBuilder> {
        if let Some(ca) = &self.ca_file {
            let pem =
                std::fs::read(ca).with_context(|| format!("{place}: ca_file {}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{place}: ca_file {}", ca.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&self.client_cert_file, &self.client_key_file) {
            let mut pem = std::fs::read(cert)
                .with_context(|| format!("{place}: client_cert_file {}", cert.display()))?;
            pem.extend(
                std::fs::read(key)
                    .with_context(|| format!("{place}: client_key_file {}", key.display()))?,
            );
            builder = builder.identity(
                reqwest::Identity::from_pem(&pem)
                    .with_context(|| format!("{place}: client certificate"))?,
            );
        }
        Ok(builder)
    }
}

type Build = Box<dyn Fn() -> anyhow::Result<reqwest::Client> + Send + Sync>;

/// A reqwest client rebuilt when its TLS files change.
pub struct ReloadingClient {
    /// What the client talks to, for logs: `backend "default"`.
    place: String,
    files: TlsFiles,
    build: Build,
    current: ArcSwap<Built>,
}

impl std::fmt::Debug for ReloadingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingClient")
            .field("place", &self.place)
            .finish_non_exhaustive()
    }
}

/// A client and the stamps of the files it was built from.
struct Built {
    http: reqwest::Client,
    stamps: Vec<Option<FileStamp>>,
}

impl ReloadingClient {
    /// Builds the client now (a file that does not load is an error here, at start or
    /// reload, never later). `build` makes the whole client, TLS files included.
    pub fn new(
        place: String,
        files: TlsFiles,
        build: impl Fn() -> anyhow::Result<reqwest::Client> + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        // reqwest is built without its own crypto provider; make sure ours is installed.
        crate::tls::install_crypto_provider();
        let stamps = files.stamps();
        let http = build()?;
        Ok(ReloadingClient {
            place,
            files,
            build: Box::new(build),
            current: ArcSwap::from_pointee(Built { http, stamps }),
        })
    }

    /// The client, rebuilt first if a TLS file changed since it was built. A file that does
    /// not load keeps the previous client (and is not retried until it changes again).
    pub fn get(&self) -> reqwest::Client {
        let current = self.current.load_full();
        if current.stamps.is_empty() {
            return current.http.clone();
        }
        let now = self.files.stamps();
        if now == current.stamps {
            return current.http.clone();
        }
        let next = match (self.build)() {
            Ok(http) => {
                tracing::info!(to = %self.place, "TLS files changed; new client");
                Built { http, stamps: now }
            }
            Err(e) => {
                tracing::warn!(to = %self.place, error = %format!("{e:#}"), "TLS files changed but do not load; keeping the previous ones");
                Built {
                    http: current.http.clone(),
                    stamps: now,
                }
            }
        };
        let http = next.http.clone();
        self.current.store(Arc::new(next));
        http
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let files = TlsFiles {
            ca_file: Some("/nonexistent/ca.crt".into()),
            ..TlsFiles::default()
        };
        let e = files
            .apply(reqwest::Client::builder(), "upstream \"old\"")
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(
            e.contains("upstream \"old\": ca_file /nonexistent/ca.crt"),
            "{e}"
        );
    }
}
