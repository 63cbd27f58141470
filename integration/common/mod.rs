//! Integration-test harness: runs the real `demo-exporter` binary and a real
//! Prometheus (Debian's `prometheus` package) as child processes on loopback,
//! so tests exercise actual scrapes and PromQL instead of mocks.
//!
//! Children are killed and reaped when their handle drops (also on panic);
//! tokio's `kill_on_drop` is set as a second line of defence.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// How long a child gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Prometheus readiness deadline (it is typically ready in well under 1 s).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A Kubernetes Quantity as a number: decimal (`n` to `P`) and binary (`Ki` to `Ti`) suffixes,
/// no exponent forms (neither the bridge nor prometheus-adapter writes them for usage).
pub fn quantity(text: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    let (number, scale) = SUFFIXES
        .iter()
        .find_map(|(s, f)| text.strip_suffix(s).map(|n| (n, *f)))
        .unwrap_or((text, 1.0));
    Some(number.parse::<f64>().ok()? * scale)
}

/// What one of the repository's caching build scripts produces: `$ENV` when it is set, else
/// the last line `SCRIPT` (relative to the repository) prints; the script builds on first use
/// and reuses its cache after, and its progress and errors show on stderr.
pub async fn cached_build(env: &str, script: &str, what: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    eprintln!(
        "resolving {what} with {} (set {env} to skip; a cold build takes minutes)",
        script.display()
    );
    // spawn + wait_with_output, not output(): tokio's output() pipes stderr whatever was set.
    let out = Command::new("bash")
        .arg(&script)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()))
        .wait_with_output()
        .await
        .unwrap_or_else(|e| panic!("waiting for {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed with {} (its output is above); stdout:\n{stdout}",
        script.display(),
        out.status
    );
    PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
}

/// A command for `bin` that the kernel SIGKILLs when the thread that spawned it dies (through
/// `setpriv --pdeathsig`, which execs, so the pid is `bin`'s), even if this process is killed
/// before any Drop runs. Plain `bin` where there is no setpriv.
pub fn command_dying_with_parent(bin: &Path) -> Command {
    let setpriv = Path::new("/usr/bin/setpriv");
    if setpriv.is_file() {
        let mut c = Command::new(setpriv);
        c.args(["--pdeathsig", "KILL", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

/// The documents of what deploy/'s kustomize base ships (`deploy/render.sh base`: the
/// placeholder caBundle, no certificate Secret) whose `kind` is one of `kinds`, in order.
pub fn shipped_documents(kinds: &[&str]) -> Vec<String> {
    let out = std::process::Command::new("bash")
        .args(["deploy/render.sh", "base"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("deploy/render.sh base");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).expect("UTF-8");
    yaml.split("\n---\n")
        .filter(|doc| {
            doc.lines().any(|l| {
                l.strip_prefix("kind: ")
                    .is_some_and(|k| kinds.contains(&k.trim()))
            })
        })
        .map(str::to_string)
        .collect()
}

/// Where cargo builds (benchmarks write their figures under it): `$CARGO_TARGET_DIR`, else
/// worked out from this executable (`<target>/<profile>/deps/<name>`).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Sends `request`; panics unless it is answered 2xx (`what` names it in the message).
pub async fn send_ok(request: reqwest::RequestBuilder, what: &str) {
    let r = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:#}"));
    let status = r.status();
    assert!(
        status.is_success(),
        "{what}: {status}: {}",
        r.text().await.unwrap_or_default()
    );
}

/// A free loopback port. Racy by nature (released before use); callers that
/// can, like [`Prometheus::start`], retry on "address already in use".
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0 to find a free port")
        .port()
}

/// Polls `f` until it returns `Some`, backing off from 20 ms to 250 ms.
/// Panics with `what` if `timeout` passes first (a hung attempt counts too).
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll(timeout, f).await {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// The polling loop shared by [`wait_until`] and [`Prometheus::wait_or_fail`]: `Some` as soon
/// as `f` gives it, `None` after `timeout`.
pub async fn poll<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(20);
    loop {
        if let Ok(Some(v)) = tokio::time::timeout_at(deadline, f()).await {
            return Some(v);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return None;
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

/// HTTP client for loopback test traffic.
///
/// The crate enables reqwest's `rustls-no-provider`, where building a client
/// panics unless a rustls crypto provider exists. We hand reqwest an explicit
/// ring-backed config instead of installing a process-wide default, so tests
/// cannot mask production code that forgets to install one.
pub fn http_client() -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("building the test HTTP client")
}

/// Kills and reaps a child synchronously (usable from `Drop`).
fn kill_and_reap(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = child.start_kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            _ => return,
        }
    }
}

/// Sends SIGTERM and waits for exit, escalating to SIGKILL after [`STOP_GRACE`].
async fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Some(pid) = child.id() {
        // No libc in the dependency set; procps' `kill` is always present on Debian.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

fn labels_json(labels: &[(&str, &str)]) -> serde_json::Value {
    serde_json::Value::Object(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect(),
    )
}

/// A running `demo-exporter`; see its doc comment for the demo scenario.
pub struct Exporter {
    child: Child,
    /// Kept open so the exporter never hits EPIPE writing to stdout.
    _stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
    client: reqwest::Client,
}

impl Exporter {
    /// Starts the package's `demo-exporter` with the demo scenario.
    pub async fn start() -> Exporter {
        Exporter::start_bin(env!("CARGO_BIN_EXE_demo-exporter"), false).await
    }

    /// Starts the package's `demo-exporter` with no series.
    pub async fn start_empty() -> Exporter {
        Exporter::start_bin(env!("CARGO_BIN_EXE_demo-exporter"), true).await
    }

    /// [`Exporter::start_empty`] taking up to `max_series` series (its default is 10,000).
    pub async fn start_empty_holding(max_series: usize) -> Exporter {
        Exporter::start_bin_with(
            env!("CARGO_BIN_EXE_demo-exporter"),
            true,
            &[format!("--max-series={max_series}")],
        )
        .await
    }

    /// Starts the exporter binary at `bin` on a kernel-chosen loopback port and
    /// learns the port from its `listening on http://ADDR` line.
    pub async fn start_bin(bin: impl AsRef<Path>, empty: bool) -> Exporter {
        Exporter::start_bin_with(bin, empty, &[]).await
    }

    /// [`Exporter::start_bin`] with extra flags.
    pub async fn start_bin_with(bin: impl AsRef<Path>, empty: bool, flags: &[String]) -> Exporter {
        let bin = bin.as_ref();
        let mut cmd = Command::new(bin);
        cmd.args(flags);
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .env_remove("DEMO_EXPORTER_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if empty {
            cmd.arg("--empty");
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning demo-exporter {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(15), stdout.read_line(&mut line)).await;
        let addr = match read {
            Ok(Ok(n)) if n > 0 => line
                .trim()
                .strip_prefix("listening on http://")
                .and_then(|a| a.parse::<SocketAddr>().ok()),
            _ => None,
        };
        let Some(addr) = addr else {
            kill_and_reap(&mut child);
            panic!(
                "demo-exporter {} did not print `listening on http://ADDR` (read {read:?}, line {line:?}, exit {:?})",
                bin.display(),
                child.try_wait()
            );
        };
        Exporter {
            child,
            _stdout: stdout,
            addr,
            client: http_client(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `host:port` as Prometheus' `static_configs` wants it.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    pub async fn set_gauge(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        let body = serde_json::json!({
            "name": name, "labels": labels_json(labels), "type": "gauge", "value": value,
        });
        self.control(reqwest::Method::PUT, "/series", Some(body))
            .await;
    }

    /// Creates or re-rates a counter that grows by `rate` per second.
    pub async fn set_counter(&self, name: &str, labels: &[(&str, &str)], rate: f64) {
        let body = serde_json::json!({
            "name": name, "labels": labels_json(labels), "type": "counter", "rate": rate,
        });
        self.control(reqwest::Method::PUT, "/series", Some(body))
            .await;
    }

    /// Removes one series (no error if it does not exist).
    pub async fn remove(&self, name: &str, labels: &[(&str, &str)]) {
        let body = serde_json::json!({ "name": name, "labels": labels_json(labels) });
        self.control(reqwest::Method::DELETE, "/series", Some(body))
            .await;
    }

    /// Removes every series.
    pub async fn clear(&self) {
        self.control(reqwest::Method::DELETE, "/series/all", None)
            .await;
    }

    /// The current exposition text, as Prometheus would scrape it.
    pub async fn metrics_text(&self) -> String {
        let url = format!("{}/metrics", self.url());
        let resp = self
            .client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        resp.text()
            .await
            .unwrap_or_else(|e| panic!("reading {url}: {e}"))
    }

    async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let url = format!("{}{path}", self.url());
        let mut req = self.client.request(method.clone(), &url);
        if let Some(body) = &body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "{method} {url} with {body:?} -> {status}: {text}"
        );
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// One element of an instant-vector result.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A real Prometheus server with its own config and TSDB in a tempdir.
pub struct Prometheus {
    child: Option<Child>,
    bin: PathBuf,
    port: u16,
    /// Extra command-line flags, e.g. `--web.enable-remote-write-receiver`.
    flags: Vec<String>,
    /// `http`, or `https` when its web config serves TLS.
    scheme: &'static str,
    // Declared last: dropped after `Drop::drop` has reaped the process.
    dir: tempfile::TempDir,
    client: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus scraping each of `targets` (`host:port`, optionally
    /// with `http://`) every second as its own job (`target-0`, `target-1`, ..),
    /// and waits until ready. Ready comes in ~0.1 s, but 2.42's discovery
    /// manager hands targets over on a 5 s tick, so the first scrape lands
    /// ~5-6 s later (after `restart` too): use [`Prometheus::wait_for_series`].
    pub async fn start(targets: &[String]) -> Prometheus {
        Prometheus::start_with_flags(targets, &[]).await
    }

    /// [`Prometheus::start`] with extra command-line flags.
    pub async fn start_with_flags(targets: &[String], flags: &[&str]) -> Prometheus {
        Prometheus::start_guarded(targets, flags, None, "http", http_client()).await
    }

    /// One of a pair of replicas scraping the same targets, told apart by
    /// `global.external_labels` `{cluster: test, replica: <replica>}` (as Thanos sidecars
    /// need them).
    pub async fn start_replica(targets: &[String], replica: &str) -> Prometheus {
        let labels = format!("  external_labels:\n    cluster: test\n    replica: {replica}\n");
        Prometheus::start_guarded(targets, &[], Some(("", &labels)), "http", http_client()).await
    }

    /// Starts Prometheus behind `--web.config.file` (written into its directory): basic auth
    /// or TLS with client certificates. `client` must pass that config (the harness uses it
    /// for readiness and its own queries); `scheme` is `https` when the config serves TLS.
    pub async fn start_with_web_config(
        targets: &[String],
        web_config_yaml: &str,
        scheme: &'static str,
        client: reqwest::Client,
    ) -> Prometheus {
        Prometheus::start_guarded(targets, &[], Some((web_config_yaml, "")), scheme, client).await
    }

    /// Where its web config lives, for tests that rotate it (only with a web config).
    pub fn web_config_path(&self) -> Option<PathBuf> {
        self.flags
            .iter()
            .find_map(|f| f.strip_prefix("--web.config.file="))
            .map(PathBuf::from)
    }

    async fn start_guarded(
        targets: &[String],
        flags: &[&str],
        // The web config (empty: none) and lines for the config's `global` section.
        extra: Option<(&str, &str)>,
        scheme: &'static str,
        client: reqwest::Client,
    ) -> Prometheus {
        let bin = find_prometheus();
        let dir = tempfile::Builder::new()
            .prefix("kmb-prometheus-")
            .tempdir()
            .expect("creating a tempdir for Prometheus");
        let (web_config, global) = extra.unwrap_or_default();
        let config = config_yaml(targets).replacen(
            "scrape_configs:\n",
            &format!("{global}scrape_configs:\n"),
            1,
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("writing prometheus.yml");
        let mut flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        if let Some(yaml) = Some(web_config).filter(|y| !y.is_empty()) {
            let path = dir.path().join("web.yml");
            std::fs::write(&path, yaml).expect("writing web.yml");
            flags.push(format!("--web.config.file={}", path.display()));
        }
        let mut prom = Prometheus {
            child: None,
            bin,
            port: 0,
            flags,
            scheme,
            dir,
            client,
        };
        // free_port() can race with other tests; retry a few ports.
        for attempt in 1..=3 {
            prom.port = free_port();
            prom.spawn();
            match prom.try_wait_ready(READY_TIMEOUT).await {
                Ok(()) => return prom,
                Err(e) if attempt < 3 && prom.log_tail(20).contains("address already in use") => {
                    eprintln!("prometheus port {} was taken ({e}); retrying", prom.port);
                    if let Some(mut c) = prom.child.take() {
                        kill_and_reap(&mut c);
                    }
                }
                Err(e) => prom.fail(&format!("prometheus did not become ready: {e}")),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The running process' id; `None` while stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Its TSDB directory (what a Thanos sidecar reads).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.log")
    }

    /// The last `n` lines of Prometheus' log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Stops Prometheus (SIGTERM, then wait) to simulate an outage; the port
    /// and data dir are kept for [`Prometheus::restart`].
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child).await;
        }
    }

    /// Starts Prometheus again on the same port and data dir; waits until ready.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn();
        if let Err(e) = self.try_wait_ready(READY_TIMEOUT).await {
            self.fail(&format!(
                "prometheus did not become ready after restart: {e}"
            ));
        }
    }

    /// Waits until `selector` matches at least one series; returns their labels.
    pub async fn wait_for_series(
        &self,
        selector: &str,
        timeout: Duration,
    ) -> Vec<BTreeMap<String, String>> {
        let what = format!("a series matching {selector} in prometheus {}", self.url());
        self.wait_or_fail(&what, timeout, || async {
            self.try_series(selector)
                .await
                .ok()
                .filter(|s| !s.is_empty())
        })
        .await
    }

    /// Series currently matching `selector` (over the default lookback of `/api/v1/series`).
    pub async fn series(&self, selector: &str) -> Vec<BTreeMap<String, String>> {
        self.try_series(selector)
            .await
            .unwrap_or_else(|e| self.fail(&format!("series {selector}: {e}")))
    }

    /// Instant query at "now"; panics (with the log tail) on error or a
    /// non-vector result.
    pub async fn query(&self, promql: &str) -> Vec<Sample> {
        self.try_query(promql)
            .await
            .unwrap_or_else(|e| self.fail(&format!("query {promql}: {e}")))
    }

    /// Pushes one sample (`value` now) through the remote-write receiver (start with
    /// `--web.enable-remote-write-receiver`). Remote write is how a series name that no
    /// scrape would accept gets into Prometheus 2.x: its receiver stores names as they come.
    pub async fn remote_write(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        let mut all = vec![("__name__", name)];
        all.extend_from_slice(labels);
        self.remote_write_many(&[all], value).await;
    }

    /// Pushes one sample (`value` now) for each of `series` (label pairs, `__name__`
    /// included) in one remote-write request.
    pub async fn remote_write_many<K: AsRef<str>, V: AsRef<str>>(
        &self,
        series: &[Vec<(K, V)>],
        value: f64,
    ) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let body = snappy_literal(&remote_write_request(series, value, now_ms));
        let url = format!("{}/api/v1/write", self.url());
        let resp = self
            .client
            .post(&url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| self.fail(&format!("POST {url}: {e}")));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            self.fail(&format!(
                "remote write of {} series -> {status}: {text}",
                series.len()
            ));
        }
    }

    /// Prometheus' own `/metrics` text (its request counters, head series, ...).
    pub async fn own_metrics(&self) -> String {
        let url = format!("{}/metrics", self.url());
        let resp = self
            .client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| self.fail(&format!("GET {url}: {e}")));
        resp.text()
            .await
            .unwrap_or_else(|e| self.fail(&format!("GET {url} body: {e}")))
    }

    /// Polls `f` like [`wait_until`], but a timeout panic also shows the log tail.
    pub async fn wait_or_fail<T, F, Fut>(&self, what: &str, timeout: Duration, f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        match poll(timeout, f).await {
            Some(v) => v,
            None => self.fail(&format!("timed out after {timeout:?} waiting for {what}")),
        }
    }

    pub async fn try_query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let data = self.api_get("/api/v1/query", &[("query", promql)]).await?;
        if data["resultType"] != "vector" {
            return Err(format!("expected a vector result, got {data}"));
        }
        let result = data["result"].as_array().cloned().unwrap_or_default();
        result
            .iter()
            .map(|r| {
                let labels = serde_json::from_value(r["metric"].clone())
                    .map_err(|e| format!("bad metric labels in {r}: {e}"))?;
                let value = r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .ok_or_else(|| format!("bad sample value in {r}"))?;
                Ok(Sample { labels, value })
            })
            .collect()
    }

    pub async fn try_series(
        &self,
        selector: &str,
    ) -> Result<Vec<BTreeMap<String, String>>, String> {
        let data = self
            .api_get("/api/v1/series", &[("match[]", selector)])
            .await?;
        serde_json::from_value(data).map_err(|e| format!("bad series response: {e}"))
    }

    /// GET a Prometheus API path and return its `data` member.
    async fn api_get(
        &self,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<serde_json::Value, String> {
        // reqwest's `query` feature is off in this crate; build the URL directly.
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.url()), params)
            .map_err(|e| format!("bad URL for {path}: {e}"))?;
        let resp = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| format!("GET {url} ({status}): bad JSON: {e}"))?;
        if body["status"] != "success" {
            return Err(format!("GET {url} {params:?} -> {status}: {body}"));
        }
        Ok(body["data"].clone())
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.log_path()).expect("creating prometheus.log");
        let log_err = log.try_clone().expect("cloning the log file handle");
        let dir = self.dir.path();
        let child = Command::new(&self.bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .args(&self.flags)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", self.bin.display()));
        self.child = Some(child);
    }

    async fn try_wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let url = format!("{}/-/ready", self.url());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("prometheus exited early with {status}"));
                }
            }
            if let Ok(resp) = self.client.get(&url).send().await {
                if resp.status() == reqwest::StatusCode::OK {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("{url} not 200 within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Panics with `msg` plus the end of Prometheus' log.
    fn fail(&self, msg: &str) -> ! {
        panic!(
            "{msg}\n--- last lines of {} ---\n{}",
            self.log_path().display(),
            self.log_tail(30)
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }
}

/// A protobuf varint.
fn varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A length-delimited protobuf field.
fn pb_bytes(field: u64, payload: &[u8], out: &mut Vec<u8>) {
    varint(field << 3 | 2, out);
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// `prometheus.WriteRequest{timeseries: [{labels, samples: [{value, timestamp}]}, ...]}`,
/// encoded by hand (three messages; not worth a protobuf dependency). Labels are sent sorted
/// by name, as the receiver expects.
fn remote_write_request<K: AsRef<str>, V: AsRef<str>>(
    series: &[Vec<(K, V)>],
    value: f64,
    timestamp_ms: u64,
) -> Vec<u8> {
    let mut sample = vec![1 << 3 | 1];
    sample.extend_from_slice(&value.to_le_bytes());
    varint(2 << 3, &mut sample);
    varint(timestamp_ms, &mut sample);
    let mut request = Vec::new();
    let mut one = Vec::new();
    let mut label = Vec::new();
    for labels in series {
        let mut sorted: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_ref()))
            .collect();
        sorted.sort();
        one.clear();
        for (k, v) in sorted {
            label.clear();
            pb_bytes(1, k.as_bytes(), &mut label);
            pb_bytes(2, v.as_bytes(), &mut label);
            pb_bytes(1, &label, &mut one);
        }
        pb_bytes(2, &sample, &mut one);
        pb_bytes(1, &one, &mut request);
    }
    request
}

/// Snappy's block format with literals only (valid, just not compressed).
fn snappy_literal(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 60 + 8);
    varint(data.len() as u64, &mut out);
    for chunk in data.chunks(60) {
        out.push(((chunk.len() - 1) as u8) << 2);
        out.extend_from_slice(chunk);
    }
    out
}

fn config_yaml(targets: &[String]) -> String {
    // scrape_timeout must not exceed scrape_interval, so set both.
    let mut yaml = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
    );
    for (i, target) in targets.iter().enumerate() {
        let target = target.trim_start_matches("http://").trim_end_matches('/');
        // honor_labels: the exporter's own namespace/pod labels are the truth.
        yaml.push_str(&format!(
            "  - job_name: target-{i}\n    honor_labels: true\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ));
    }
    yaml
}

/// `$PROMETHEUS_BIN`, else `prometheus` on `PATH`, else `/usr/bin/prometheus`.
fn find_prometheus() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMETHEUS_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "PROMETHEUS_BIN={} is not a file", p.display());
        return p;
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("prometheus"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    if let Some(p) = on_path {
        return p;
    }
    let fallback = PathBuf::from("/usr/bin/prometheus");
    if fallback.is_file() {
        return fallback;
    }
    panic!(
        "no `prometheus` binary found (checked $PROMETHEUS_BIN, PATH, /usr/bin/prometheus). \
         Run the project's test script (`bash .ci/run`), which installs it \
         (`apt-get install -y prometheus`), or set PROMETHEUS_BIN."
    )
}
pub mod adapter;
pub mod bridge;
pub mod chart;
pub mod controlplane;
pub mod fake_prometheus;
pub mod hpa;
pub mod load;
