//! The floor: the least a server can do to answer the benchmark's requests over the bridge's
//! TLS, measured in the same run as the servers (issue 12: the bridge's cached answers should
//! be within 2x of it in requests/s and p99).
//!
//! It answers each request from a map built before it starts: path-and-query, then the
//! `Accept` header, to a status, a `Content-Type` and the body bytes (recorded from a real
//! server with [`Answers::record`], so they are the same bytes); anything else is a 404 with no
//! body. No authentication beyond the TLS handshake, no authorization, no logging, no limits.
//!
//! What it shares with the bridge (`src/tls.rs`, `src/server.rs`):
//! - the rustls `ServerConfig`, built by the bridge's own `tls::server_config` from the same
//!   kind of certificate resolver (`tls::CertResolver` over `tls::load_pair`), with the client
//!   roots `auth::AuthConfig::client_roots` makes of the `client-ca-file` (and
//!   `requestheader-client-ca-file`) the bridge reads from
//!   `kube-system/extension-apiserver-authentication`: ring, rustls' safe default protocol
//!   versions, ALPN `h2` then `http/1.1`, client certificates requested but optional
//!   (`WebPkiClientVerifier` with `allow_unauthenticated`), one that is sent must chain to
//!   those roots; session resumption as rustls' defaults have it (the bridge sets none);
//! - hyper-util's builders from the bridge's own `server::Builders`: HTTP/1.1 with the header read timeout, HTTP/2 with the maximum of
//!   concurrent streams of `server::ServerOptions::default()` (the `serve` default, 250), 64 KiB
//!   flow-control windows and the same keep-alive pings; the builder ALPN chose (HTTP/2 or
//!   HTTP/1.1 only, auto-detection without ALPN); the handshake under the same deadline;
//!   `TCP_NODELAY`; tokio's multi-thread runtime with its default workers, as `main.rs`.
//!
//! What it leaves out, being the floor: the connection caps, the first-byte deadline and idle
//! clock, the in-flight limit, graceful shutdown, warp's routing, authentication (the client
//! certificate is verified by the handshake, nothing reads it after), authorization, logging.
//!
//! It runs as its own process so that its CPU time and memory come from `/proc` like the
//! servers': the bench binary runs itself again (`--floor-server <spec.json>`). A bench that
//! includes this module calls [`run_if_requested`] first thing in `main`, and [`start`] when
//! it wants the server. The child exits when the bench process goes away: it is killed when
//! the [`Floor`] is dropped, and it watches its standard input, a pipe the bench holds, so it
//! also exits when the bench is killed before any `Drop` runs.

// Each bench that includes this uses a different part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper_util::rt::TokioIo;
use kube_metrics_bridge::auth::AuthConfig;
use kube_metrics_bridge::server::{Builders, ServerOptions};
use kube_metrics_bridge::tls::{self, CertResolver, ClientAuth};
use rustls_pki_types::pem::PemObject;
use serde_json::{json, Value};
use tokio::process::{Child, ChildStdin};

/// The argument that makes a bench binary serve as the floor.
pub const ARG: &str = "--floor-server";
/// How long [`start`] waits for the child to serve.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One pre-serialized answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

/// What the floor answers: path-and-query (`/apis/...?labelSelector=...`, as sent), then the
/// `Accept` header value exactly as sent (`""`: any `Accept`, including none, when there is no
/// exact match), to the answer.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    map: BTreeMap<String, BTreeMap<String, Answer>>,
}

impl Answers {
    pub fn new() -> Answers {
        Answers::default()
    }

    pub fn insert(&mut self, path_and_query: &str, accept: &str, answer: Answer) {
        self.map
            .entry(path_and_query.to_owned())
            .or_default()
            .insert(accept.to_owned(), answer);
    }

    /// Asks `client` for `base` + `path_and_query` with `Accept: accept` and keeps the status,
    /// `Content-Type` and body it gets (whatever the status), under that path and `Accept`.
    pub async fn record(
        &mut self,
        client: &reqwest::Client,
        base: &str,
        path_and_query: &str,
        accept: &str,
    ) -> anyhow::Result<&Answer> {
        let url = format!("{}{path_and_query}", base.trim_end_matches('/'));
        let response = client
            .get(&url)
            .header(http::header::ACCEPT, accept)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = response
            .bytes()
            .await
            .map_err(|e| anyhow::anyhow!("GET {url}: reading the body: {e}"))?;
        self.insert(
            path_and_query,
            accept,
            Answer {
                status,
                content_type,
                body,
            },
        );
        Ok(&self.map[path_and_query][accept])
    }

    pub fn get(&self, path_and_query: &str, accept: &str) -> Option<&Answer> {
        let by_accept = self.map.get(path_and_query)?;
        by_accept.get(accept).or_else(|| by_accept.get(""))
    }

    /// How many answers (path and `Accept` pairs).
    pub fn len(&self) -> usize {
        self.map.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn to_json(&self) -> Value {
        let b64 = &base64::engine::general_purpose::STANDARD;
        Value::Array(
            self.map
                .iter()
                .flat_map(|(path, by_accept)| {
                    by_accept.iter().map(move |(accept, a)| {
                        json!({
                            "path": path,
                            "accept": accept,
                            "status": a.status,
                            "content_type": a.content_type,
                            "body_base64": b64.encode(&a.body),
                        })
                    })
                })
                .collect(),
        )
    }

    fn from_json(v: &Value) -> anyhow::Result<Answers> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut answers = Answers::new();
        for a in v
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("answers: not a list"))?
        {
            let text = |k: &str| {
                a[k].as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow::anyhow!("answer without {k}: {a}"))
            };
            let status = a["status"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .ok_or_else(|| anyhow::anyhow!("answer without status"))?;
            let body = b64.decode(text("body_base64")?)?;
            answers.insert(
                &text("path")?,
                &text("accept")?,
                Answer {
                    status,
                    content_type: text("content_type")?,
                    body: Bytes::from(body),
                },
            );
        }
        Ok(answers)
    }
}

/// The files the floor serves TLS with: the same the bridge gets.
#[derive(Debug, Clone)]
pub struct FloorTls {
    /// The CA that signed `cert`: [`start`] checks the floor's handshake with it.
    pub serving_ca: PathBuf,
    /// PEM certificate chain (leaf first) and its key, as `--tls-cert-file` and
    /// `--tls-private-key-file`.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The ConfigMap's `client-ca-file`: client certificates must chain to it.
    pub client_ca: PathBuf,
    /// The ConfigMap's `requestheader-client-ca-file`, trusted for client certificates too.
    pub requestheader_client_ca: Option<PathBuf>,
}

impl FloorTls {
    /// From `common::adapter::serving_pair`'s `(ca.crt, tls.crt, tls.key)` and the CAs the
    /// bridge reads from the ConfigMap: with `common::controlplane::ControlPlane`,
    /// `cp.ca_pem_path()` and `Some(&cp.front_proxy_ca_path())`.
    pub fn new(
        serving: &(PathBuf, PathBuf, PathBuf),
        client_ca: &Path,
        requestheader_client_ca: Option<&Path>,
    ) -> FloorTls {
        FloorTls {
            serving_ca: serving.0.clone(),
            cert: serving.1.clone(),
            key: serving.2.clone(),
            client_ca: client_ca.to_owned(),
            requestheader_client_ca: requestheader_client_ca.map(Path::to_owned),
        }
    }
}

/// The running floor server; dropping it kills the process.
#[derive(Debug)]
pub struct Floor {
    pub port: u16,
    child: Child,
    /// Held open: the child exits when it reads end-of-file.
    _stdin: ChildStdin,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Floor {
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the floor server has exited")
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// Its standard error (empty unless it failed).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `None` while it runs; its exit status once it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// Writes the spec and starts this executable again as the floor server, then waits until it
/// completes a TLS handshake (ALPN `h2`, without a client certificate, which the bridge's
/// settings allow). Panics, with its log, if it does not within 30 s.
pub async fn start(answers: &Answers, tls: &FloorTls) -> Floor {
    let dir = tempfile::Builder::new()
        .prefix("kmb-floor-")
        .tempdir()
        .expect("floor tempdir");
    let spec_path = dir.path().join("spec.json");
    let port_path = dir.path().join("port");
    let log = dir.path().join("floor.log");
    let spec = json!({
        "cert": tls.cert,
        "key": tls.key,
        "client_ca": tls.client_ca,
        "requestheader_client_ca": tls.requestheader_client_ca,
        "port_file": port_path,
        "answers": answers.to_json(),
    });
    std::fs::write(
        &spec_path,
        serde_json::to_vec(&spec).expect("floor spec JSON"),
    )
    .expect("writing the floor spec");
    let exe = std::env::current_exe().expect("the bench executable");
    let stderr = std::fs::File::create(&log).expect("floor log");
    let mut child = tokio::process::Command::new(&exe)
        .arg(ARG)
        .arg(&spec_path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {} {ARG}: {e}", exe.display()));
    let stdin = child.stdin.take().expect("floor stdin");
    let mut floor = Floor {
        port: 0,
        child,
        _stdin: stdin,
        log,
        _dir: dir,
    };
    let deadline = Instant::now() + START_TIMEOUT;
    let fail = |floor: &Floor, why: String| -> ! {
        let log = std::fs::read_to_string(&floor.log).unwrap_or_default();
        panic!("the floor server did not start: {why}; its log:\n{log}")
    };
    loop {
        if let Some(status) = floor.try_wait() {
            fail(&floor, format!("it exited with {status}"));
        }
        if floor.port == 0 {
            floor.port = std::fs::read_to_string(&port_path)
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(0);
        }
        if floor.port != 0 {
            match handshake(floor.port, &tls.serving_ca).await {
                Ok(()) => return floor,
                Err(e) if Instant::now() >= deadline => fail(
                    &floor,
                    format!("no TLS handshake on port {}: {e}", floor.port),
                ),
                Err(_) => {}
            }
        } else if Instant::now() >= deadline {
            fail(&floor, format!("no port after {START_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One TLS handshake with the floor, trusting `ca`, no client certificate.
async fn handshake(port: u16, ca: &Path) -> anyhow::Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp)).await??;
    anyhow::ensure!(
        tls.get_ref().1.alpn_protocol() == Some(b"h2"),
        "ALPN h2 not chosen"
    );
    Ok(())
}

/// When this process was started as the floor server (`<exe> --floor-server <spec.json>`),
/// serves until killed or until its standard input closes, and exits; else returns at once.
/// Call it first thing in `main`.
pub fn run_if_requested() {
    let args: Vec<String> = std::env::args().collect();
    let Some(i) = args.iter().position(|a| a == ARG) else {
        return;
    };
    let Some(spec) = args.get(i + 1) else {
        eprintln!("{ARG}: the spec file is missing");
        std::process::exit(2);
    };
    // The bench holds the other end of stdin: end-of-file means it has gone.
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    tls::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(serve(Path::new(spec))) {
        eprintln!("floor server: {e:#}");
        std::process::exit(1);
    }
    std::process::exit(0);
}

/// A ready answer: what the service hands out per request.
struct Prepared {
    status: http::StatusCode,
    content_type: Option<http::HeaderValue>,
    body: Bytes,
}

type Table = HashMap<String, HashMap<String, Arc<Prepared>>>;

async fn serve(spec_path: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let spec: Value = serde_json::from_slice(
        &std::fs::read(spec_path).with_context(|| format!("reading {}", spec_path.display()))?,
    )
    .context("parsing the spec")?;
    let path = |k: &str| spec[k].as_str().map(PathBuf::from);
    let cert = path("cert").context("spec: cert")?;
    let key = path("key").context("spec: key")?;
    let port_file = path("port_file").context("spec: port_file")?;

    // TLS exactly as the bridge: its resolver, its client roots, its server_config.
    let pair = tls::load_pair(&cert, &key)?;
    let mut data = BTreeMap::new();
    let mut read_ca = |key: &str, file: Option<PathBuf>| -> anyhow::Result<()> {
        if let Some(file) = file {
            let pem = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            data.insert(key.to_owned(), pem);
        }
        Ok(())
    };
    read_ca(
        "client-ca-file",
        Some(path("client_ca").context("spec: client_ca")?),
    )?;
    read_ca(
        "requestheader-client-ca-file",
        path("requestheader_client_ca"),
    )?;
    let roots = AuthConfig::from_configmap_data(&data)?
        .client_roots()
        .context("no client CA")?;
    let config = tls::server_config(
        Arc::new(CertResolver::new(pair)),
        ClientAuth::Optional(roots),
    )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);

    let mut table: Table = HashMap::new();
    for (path, by_accept) in Answers::from_json(&spec["answers"])?.map {
        let entry = table.entry(path).or_default();
        for (accept, a) in by_accept {
            let prepared = Prepared {
                status: http::StatusCode::from_u16(a.status)?,
                content_type: (!a.content_type.is_empty())
                    .then(|| http::HeaderValue::from_str(&a.content_type))
                    .transpose()?,
                body: a.body,
            };
            entry.insert(accept, Arc::new(prepared));
        }
    }
    let table = Arc::new(table);
    let builders = Builders::new(&ServerOptions::default());
    let handshake_timeout = ServerOptions::default().handshake_timeout;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let tmp = port_file.with_extension("tmp");
    std::fs::write(&tmp, port.to_string())?;
    std::fs::rename(&tmp, &port_file)?;
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(a) => a,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, table, builders) = (acceptor.clone(), table.clone(), builders.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await
            else {
                return;
            };
            let builder = builders.for_alpn(tls.get_ref().1.alpn_protocol());
            let service = hyper::service::service_fn(move |request| {
                let response = answer(&table, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

fn answer<B>(table: &Table, request: &http::Request<B>) -> http::Response<OneFrame> {
    let found = request
        .uri()
        .path_and_query()
        .and_then(|pq| table.get(pq.as_str()))
        .and_then(|by_accept| {
            let accept = request
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            by_accept.get(accept).or_else(|| by_accept.get(""))
        });
    let mut response = http::Response::new(OneFrame(None));
    match found {
        Some(p) => {
            *response.status_mut() = p.status;
            if let Some(ct) = &p.content_type {
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_TYPE, ct.clone());
            }
            if !p.body.is_empty() {
                *response.body_mut() = OneFrame(Some(p.body.clone()));
            }
        }
        None => *response.status_mut() = http::StatusCode::NOT_FOUND,
    }
    response
}

/// A body of one frame of shared bytes (or none), with its exact length (`Content-Length`).
struct OneFrame(Option<Bytes>);

impl http_body::Body for OneFrame {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}
