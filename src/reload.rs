//! Hot reload of the rules file: on change (including the `..data` symlink swap a mounted
//! ConfigMap does) and on SIGHUP. A file that does not load leaves the running rules in
//! place, says why in the log, and shows in `kube_metrics_bridge_rules_last_reload_success`.
//!
//! The directory is watched, not the file: a ConfigMap update replaces the directory the file
//! lives in, and a watch on the old file dies with it. A slow poll backs the watch up.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify_debouncer_full::notify::RecursiveMode;
use tokio::sync::{mpsc, watch, Notify};

use crate::metrics::{unix_now, Metrics};
use crate::prometheus::{Backends, QueryCache};
use crate::rules::{load_file, LoadError, Overrides, RuleSet};
use crate::upstream::Upstreams;

pub struct RulesReloader {
    pub path: PathBuf,
    pub overrides: Overrides,
    pub rules: Arc<ArcSwap<RuleSet>>,
    pub backend: Arc<ArcSwap<QueryCache>>,
    pub metrics: Arc<Metrics>,
    /// Tells discovery to relist now.
    pub discover_now: Arc<Notify>,
    pub poll_interval: Duration,
}

/// Builds the backends' clients and the value cache for a rule set.
pub fn backend_for(rules: &RuleSet, metrics: &Arc<Metrics>) -> anyhow::Result<QueryCache> {
    let backends = Arc::new(Backends::new(&rules.backends)?);
    Ok(QueryCache::new(
        backends,
        rules.cache.ttl,
        rules.cache.max_entries,
        rules.cache.max_bytes,
        rules.longest_stale(),
        metrics.clone(),
    ))
}

impl RulesReloader {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let _watcher = self.watch_directory(tx.clone());
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; relying on the file watch");
                None
            }
        };
        let mut last = std::fs::read(&self.path).ok();
        let mut poll = tokio::time::interval(self.poll_interval);
        poll.tick().await;
        loop {
            let forced = tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = rx.recv() => false,
                _ = poll.tick() => false,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    tracing::info!(path = %self.path.display(), "SIGHUP: reloading rules");
                    true
                }
            };
            let now = std::fs::read(&self.path).ok();
            if !forced && now == last {
                continue;
            }
            last = now;
            self.reload();
        }
    }

    /// Loads the file and swaps it in, or keeps the running rules.
    pub fn reload(&self) {
        self.metrics.rules_last_reload_timestamp.set(unix_now());
        match load_file(&self.path, &self.overrides) {
            Ok(new_rules) => {
                let old = self.rules.load_full();
                if old.backends != new_rules.backends
                    || old.cache != new_rules.cache
                    || old.longest_stale() != new_rules.longest_stale()
                {
                    match backend_for(&new_rules, &self.metrics) {
                        Ok(backend) => self.backend.store(Arc::new(backend)),
                        Err(e) => {
                            self.fail(&format!("{e:#}"));
                            return;
                        }
                    }
                }
                if old.upstreams != new_rules.upstreams {
                    // Built here only to refuse a file whose TLS files do not load; the
                    // next registry starts them (so metrics move between an upstream and
                    // the rules in one swap).
                    if let Err(e) = Upstreams::new(&new_rules.upstreams, &self.metrics) {
                        self.fail(&format!("{e:#}"));
                        return;
                    }
                }
                self.metrics
                    .rules_loaded
                    .set((new_rules.custom.len() + new_rules.external.len()) as i64);
                tracing::info!(
                    path = %self.path.display(),
                    custom = new_rules.custom.len(),
                    external = new_rules.external.len(),
                    upstreams = new_rules.upstreams.len(),
                    "rules reloaded"
                );
                for warning in &new_rules.warnings {
                    tracing::warn!(path = %self.path.display(), %warning, "rules warning");
                }
                self.rules.store(Arc::new(new_rules));
                self.metrics.rules_last_reload_success.set(1);
                self.metrics.count(&self.metrics.rules_reloads, "success");
                self.discover_now.notify_one();
            }
            Err(LoadError::Problems(p)) => {
                let lines: Vec<String> = p.0.iter().map(|p| p.to_string()).collect();
                self.fail(&lines.join("; "));
            }
            Err(LoadError::File(e)) => self.fail(&e.to_string()),
        }
    }

    fn fail(&self, why: &str) {
        self.metrics.rules_last_reload_success.set(0);
        self.metrics.count(&self.metrics.rules_reloads, "failure");
        tracing::error!(path = %self.path.display(), problems = %why, "rules file not reloaded; the previous rules keep serving");
    }

    fn watch_directory(
        &self,
        tx: mpsc::Sender<()>,
    ) -> Option<
        notify_debouncer_full::Debouncer<
            notify_debouncer_full::notify::RecommendedWatcher,
            notify_debouncer_full::RecommendedCache,
        >,
    > {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let debouncer = notify_debouncer_full::new_debouncer(
            Duration::from_millis(250),
            None,
            move |result: notify_debouncer_full::DebounceEventResult| {
                if result.is_ok() {
                    // A full channel already means "reload pending"; bursts coalesce.
                    let _ = tx.try_send(());
                }
            },
        );
        match debouncer {
            Ok(mut d) => match d.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => Some(d),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the rules directory; polling only");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a file watcher; polling only");
                None
            }
        }
    }
}
