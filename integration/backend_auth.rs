//! Backend authentication against real parts (issue 10 §2): a real Prometheus behind
//! `--web.config.file` with bcrypt basic auth and with TLS client certificates, each rotated
//! while the bridge keeps running; OAuth2 client credentials from a small local token
//! endpoint (a test double: no OAuth2 server is packaged here) guarding the real Prometheus;
//! and `proxy_url` through a small forward proxy. SigV4 is checked against AWS's published
//! test-suite vectors in `src/prometheus/sigv4.rs`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::bridge::Bridge;
use common::{Exporter, Prometheus};
use warp::Filter;

const PATH: &str = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/demo/pods/web-0/pod_load";

const RULE: &str = r#"
[cache]
ttl = "1ms"

[[rules]]
series_query = 'pod_load'
resources.overrides = { namespace = { resource = "namespace" }, pod = { resource = "pod" } }
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
"#;

async fn exporter(value: f64) -> Exporter {
    let exporter = Exporter::start_empty().await;
    set_load(&exporter, value).await;
    exporter
}

async fn set_load(exporter: &Exporter, value: f64) {
    exporter
        .set_gauge(
            "pod_load",
            &[("namespace", "demo"), ("pod", "web-0")],
            value,
        )
        .await;
}

/// The value the bridge answers, or the Status reason.
async fn value(bridge: &Bridge) -> String {
    let (code, body) = bridge.get(PATH).await;
    match body["items"][0]["value"].as_str() {
        Some(v) if code == 200 => v.to_string(),
        _ => format!("{code} {}", body["reason"].as_str().unwrap_or_default()),
    }
}

/// Polls until the bridge answers `want` (each poll is a new query: the TTL is 1ms).
async fn wait_value(bridge: &Bridge, want: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = value(bridge).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {got:?}, want {want:?}\n{}",
            bridge.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// reqwest is built without a crypto provider of its own.
fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn client_with_header(value: &str) -> reqwest::Client {
    install_crypto();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        value.parse().expect("header"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

#[tokio::test]
async fn basic_auth_with_a_rotated_password() {
    let exporter = exporter(7.0).await;
    let hash = |password: &str| bcrypt::hash(password, 4).expect("bcrypt");
    let prometheus = Prometheus::start_with_web_config(
        &[exporter.target()],
        &format!("basic_auth_users:\n  bridge: {}\n", hash("first-pass")),
        "http",
        client_with_header(&basic("bridge", "first-pass")),
    )
    .await;
    prometheus
        .wait_for_series("pod_load", Duration::from_secs(30))
        .await;
    // Prometheus really refuses a call without the password.
    install_crypto();
    let bare = reqwest::get(format!("{}/api/v1/query?query=up", prometheus.url()))
        .await
        .expect("call");
    assert_eq!(bare.status(), 401);

    let dir = tempfile::tempdir().expect("tempdir");
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "first-pass\n").expect("write");
    let rules = format!(
        "[prometheus]\nurl = \"{}\"\nbasic_auth = {{ username = \"bridge\", password_file = \"{}\" }}\n{RULE}",
        prometheus.url(),
        password_file.display()
    );
    let bridge = Bridge::start(&rules).await;
    assert_eq!(value(&bridge).await, "7");

    // Prometheus' password changes first (its web config is read on every request): the
    // bridge's calls are refused, as unavailable (503), and the log says why.
    let web = prometheus.web_config_path().expect("web config");
    std::fs::write(
        &web,
        format!("basic_auth_users:\n  bridge: {}\n", hash("second-pass")),
    )
    .expect("rotate web config");
    wait_value(
        &bridge,
        "503 ServiceUnavailable",
        "after Prometheus' rotation",
    )
    .await;
    assert!(
        bridge.log().contains("the backend refused the credentials"),
        "{}",
        bridge.log()
    );
    // Then the Secret: a new file swapped in, as a Secret volume does. No restart.
    let pid = bridge.pid();
    let next = dir.path().join("password.next");
    std::fs::write(&next, "second-pass\n").expect("write");
    std::fs::rename(&next, &password_file).expect("swap");
    set_load(&exporter, 8.0).await;
    wait_value(&bridge, "8", "after the password file's rotation").await;
    assert_eq!(bridge.pid(), pid);
    assert!(
        !bridge.log().contains("second-pass") && !bridge.log().contains("first-pass"),
        "no password in the log"
    );
}

/// A CA and the issuer for certificates signed by it.
fn ca(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert.pem(), Issuer::new(params, key))
}

/// A certificate (PEM) and its key (PEM) for `names`, signed by `issuer`.
fn leaf(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    let cert = params.signed_by(&key, issuer).expect("certificate");
    (cert.pem(), key.serialize_pem())
}

/// Writes a client certificate pair into a new directory and points `link` at it: a Secret
/// volume's `..data` swap, so both files change at once.
fn swap_client_pair(root: &Path, generation: u32, pair: &(String, String)) {
    let dir = root.join(format!("gen-{generation}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("tls.crt"), &pair.0).expect("write cert");
    std::fs::write(dir.join("tls.key"), &pair.1).expect("write key");
    let tmp = root.join("..data.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&dir, &tmp).expect("symlink");
    std::fs::rename(&tmp, root.join("..data")).expect("swap");
}

fn tls_client(server_ca: &str, pair: &(String, String)) -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(server_ca.as_bytes()).expect("ca"))
        .identity(
            reqwest::Identity::from_pem(format!("{}{}", pair.0, pair.1).as_bytes())
                .expect("identity"),
        )
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

#[tokio::test]
async fn client_certificates_rotated_to_a_new_ca() {
    let exporter = exporter(7.0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| -> PathBuf { dir.path().join(name) };
    let (server_ca, server_issuer) = ca("kmb-prometheus-server-ca");
    let server = leaf(&server_issuer, &["127.0.0.1"]);
    let (client_ca_1, client_issuer_1) = ca("kmb-client-ca-1");
    let client_1 = leaf(&client_issuer_1, &["kube-metrics-bridge"]);
    for (name, text) in [
        ("server-ca.crt", &server_ca),
        ("server.crt", &server.0),
        ("server.key", &server.1),
        ("client-ca.crt", &client_ca_1),
    ] {
        std::fs::write(path(name), text).expect("write");
    }
    let web = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
        path("server.crt").display(),
        path("server.key").display(),
        path("client-ca.crt").display()
    );
    let prometheus = Prometheus::start_with_web_config(
        &[exporter.target()],
        &web,
        "https",
        tls_client(&server_ca, &client_1),
    )
    .await;
    prometheus
        .wait_for_series("pod_load", Duration::from_secs(30))
        .await;

    let secret = path("client-secret");
    std::fs::create_dir_all(&secret).expect("mkdir");
    swap_client_pair(&secret, 1, &client_1);
    let rules = format!(
        "[prometheus]\nurl = \"{}\"\nca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n{RULE}",
        prometheus.url(),
        path("server-ca.crt").display(),
        secret.join("..data/tls.crt").display(),
        secret.join("..data/tls.key").display(),
    );
    let bridge = Bridge::start(&rules).await;
    assert_eq!(value(&bridge).await, "7");

    // A new client CA: Prometheus trusts only it from now on (its TLS config is read on each
    // handshake), and the bridge's Secret gets a certificate from it.
    let (client_ca_2, client_issuer_2) = ca("kmb-client-ca-2");
    let client_2 = leaf(&client_issuer_2, &["kube-metrics-bridge"]);
    std::fs::write(path("client-ca.crt"), &client_ca_2).expect("rotate CA");
    swap_client_pair(&secret, 2, &client_2);
    set_load(&exporter, 8.0).await;
    let pid = bridge.pid();
    wait_value(&bridge, "8", "after the client certificate's rotation").await;
    assert_eq!(bridge.pid(), pid);
    assert!(
        bridge.log().contains("TLS files changed; new client"),
        "{}",
        bridge.log()
    );
    // The rotation was real: the old certificate is refused now.
    let old = tls_client(&server_ca, &client_1)
        .get(format!("{}/api/v1/query?query=up", prometheus.url()))
        .send()
        .await;
    assert!(
        old.is_err(),
        "the old client certificate still works: {old:?}"
    );
}

/// The token endpoint's state: the client secret it accepts and the tokens it issued.
#[derive(Default)]
struct TokenServer {
    secret: Mutex<String>,
    issued: Mutex<HashMap<String, Instant>>,
    requests: AtomicUsize,
    scopes: Mutex<Vec<String>>,
}

/// Short, so the test sees refreshes; long enough that the first queries share one token
/// (the bridge refreshes at 3/4 of a token's life).
const TOKEN_LIFETIME: Duration = Duration::from_secs(6);

/// An OAuth2 token endpoint (client credentials, client authenticated with HTTP basic) and a
/// guard in front of the real Prometheus that lets only its unexpired tokens through.
async fn oauth2_pair(state: Arc<TokenServer>, prometheus: String) -> (String, String) {
    install_crypto();
    let issue = {
        let state = state.clone();
        warp::path("token")
            .and(warp::post())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::body::form::<HashMap<String, String>>())
            .map(move |auth: Option<String>, form: HashMap<String, String>| {
                state.requests.fetch_add(1, Ordering::SeqCst);
                let secret = state.secret.lock().expect("lock").clone();
                if auth.as_deref() != Some(basic("bridge", &secret).as_str())
                    || form.get("grant_type").map(String::as_str) != Some("client_credentials")
                {
                    return warp::reply::with_status(
                        warp::reply::json(&serde_json::json!({"error": "invalid_client"})),
                        warp::http::StatusCode::UNAUTHORIZED,
                    );
                }
                state
                    .scopes
                    .lock()
                    .expect("lock")
                    .push(form.get("scope").cloned().unwrap_or_default());
                let token = format!("tok-{}", state.requests.load(Ordering::SeqCst));
                state
                    .issued
                    .lock()
                    .expect("lock")
                    .insert(token.clone(), Instant::now() + TOKEN_LIFETIME);
                warp::reply::with_status(
                    warp::reply::json(&serde_json::json!({
                        "access_token": token, "token_type": "Bearer",
                        "expires_in": TOKEN_LIFETIME.as_secs()})),
                    warp::http::StatusCode::OK,
                )
            })
    };
    let guard = {
        let state = state.clone();
        let http = reqwest::Client::new();
        warp::path::full()
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::optional::<String>("authorization"))
            .then(
                move |path: warp::path::FullPath, query: String, auth: Option<String>| {
                    let state = state.clone();
                    let http = http.clone();
                    let prometheus = prometheus.clone();
                    async move {
                        let valid = auth
                            .as_deref()
                            .and_then(|a| a.strip_prefix("Bearer "))
                            .and_then(|t| state.issued.lock().expect("lock").get(t).copied())
                            .is_some_and(|until| Instant::now() < until);
                        if !valid {
                            return warp::reply::with_status(
                                "Unauthorized".to_string(),
                                warp::http::StatusCode::UNAUTHORIZED,
                            );
                        }
                        let url = format!("{prometheus}{}?{query}", path.as_str());
                        match http.get(url).send().await {
                            Ok(r) => warp::reply::with_status(
                                r.text().await.unwrap_or_default(),
                                warp::http::StatusCode::OK,
                            ),
                            Err(e) => warp::reply::with_status(
                                e.to_string(),
                                warp::http::StatusCode::BAD_GATEWAY,
                            ),
                        }
                    }
                },
            )
    };
    let token_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let guard_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let token_url = format!(
        "http://{}/token",
        token_listener.local_addr().expect("addr")
    );
    let guard_url = format!("http://{}", guard_listener.local_addr().expect("addr"));
    tokio::spawn(warp::serve(issue).incoming(token_listener).run());
    tokio::spawn(warp::serve(guard).incoming(guard_listener).run());
    (token_url, guard_url)
}

#[tokio::test]
async fn oauth2_client_credentials_refreshed_and_rotated() {
    let exporter = exporter(7.0).await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    prometheus
        .wait_for_series("pod_load", Duration::from_secs(30))
        .await;
    let state = Arc::new(TokenServer::default());
    *state.secret.lock().expect("lock") = "client-secret-1".into();
    let (token_url, guard_url) = oauth2_pair(state.clone(), prometheus.url()).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, "client-secret-1\n").expect("write");
    let rules = format!(
        "[prometheus]\nurl = \"{guard_url}\"\n\
         oauth2 = {{ token_url = \"{token_url}\", client_id = \"bridge\", client_secret_file = \"{}\", scopes = [\"metrics.read\", \"series.read\"] }}\n{RULE}",
        secret_file.display()
    );
    let bridge = Bridge::start(&rules).await;
    // Discovery and several queries share one token.
    for _ in 0..5 {
        assert_eq!(value(&bridge).await, "7");
    }
    assert_eq!(state.requests.load(Ordering::SeqCst), 1);
    assert_eq!(
        state.scopes.lock().expect("lock").as_slice(),
        ["metrics.read series.read"]
    );

    // Past the token's refresh point: a new token, no failed request.
    tokio::time::sleep(TOKEN_LIFETIME).await;
    assert_eq!(value(&bridge).await, "7");
    assert_eq!(state.requests.load(Ordering::SeqCst), 2);

    // The client secret rotates at the endpoint and in the Secret; the next token uses it.
    *state.secret.lock().expect("lock") = "client-secret-2".into();
    let next = dir.path().join("client-secret.next");
    std::fs::write(&next, "client-secret-2\n").expect("write");
    std::fs::rename(&next, &secret_file).expect("swap");
    tokio::time::sleep(TOKEN_LIFETIME).await;
    set_load(&exporter, 8.0).await;
    wait_value(&bridge, "8", "after the client secret's rotation").await;

    // Tokens revoked at the guard: the 401 drops the bridge's token and the next call
    // fetches a new one.
    let before = state.requests.load(Ordering::SeqCst);
    state.issued.lock().expect("lock").clear();
    assert_eq!(value(&bridge).await, "503 ServiceUnavailable");
    assert_eq!(value(&bridge).await, "8");
    assert_eq!(state.requests.load(Ordering::SeqCst), before + 1);
    assert!(
        !bridge.log().contains("client-secret-"),
        "no secret in the log"
    );
}

#[tokio::test]
async fn calls_go_through_proxy_url() {
    install_crypto();
    let exporter = exporter(7.0).await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    prometheus
        .wait_for_series("pod_load", Duration::from_secs(30))
        .await;
    // A forward proxy: requests arrive in absolute form; it passes them on to their host.
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let proxy = {
        let seen = seen.clone();
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        warp::filters::host::optional()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::optional::<String>("proxy-authorization"))
            .then(
                move |host: Option<warp::host::Authority>,
                      path: warp::path::FullPath,
                      query: String,
                      credentials: Option<String>| {
                    let seen = seen.clone();
                    let http = http.clone();
                    async move {
                        let host = host.map(|h| h.to_string()).unwrap_or_default();
                        seen.lock().expect("lock").push(format!(
                            "{host}{} {}",
                            path.as_str(),
                            credentials.unwrap_or_default()
                        ));
                        let url = format!("http://{host}{}?{query}", path.as_str());
                        let body = match http.get(url).send().await {
                            Ok(r) => r.text().await.unwrap_or_default(),
                            Err(e) => e.to_string(),
                        };
                        warp::reply::with_status(body, warp::http::StatusCode::OK)
                    }
                },
            )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy_url = format!(
        "http://kmb:proxy-pw@{}",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(warp::serve(proxy).incoming(listener).run());

    let rules = format!(
        "[prometheus]\nurl = \"{}\"\nproxy_url = \"{proxy_url}\"\n{RULE}",
        prometheus.url()
    );
    let bridge = Bridge::start(&rules).await;
    assert_eq!(value(&bridge).await, "7");
    let seen = seen.lock().expect("lock").clone();
    let target = prometheus.url().trim_start_matches("http://").to_string();
    let expected_credentials = basic("kmb", "proxy-pw");
    // Discovery (by the label API) and the query.
    for call in [
        "/api/v1/label/__name__/values",
        "/api/v1/labels",
        "/api/v1/query",
    ] {
        assert!(
            seen.contains(&format!("{target}{call} {expected_credentials}")),
            "{call} did not go through the proxy with its credentials: {seen:?}"
        );
    }
    assert!(
        !bridge.log().contains("proxy-pw"),
        "no proxy password in the log"
    );
}
