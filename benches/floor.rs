//! `cargo bench --bench floor`: the floor server (`benches/shared/floor.rs`) on its own, no
//! cluster: checks that it serves what it was given over the bridge's TLS settings, then
//! prints its requests/s and latency under a short load. A few seconds.
//!
//! Checks: the recorded answer's status, `Content-Type` and bytes over HTTP/2 and HTTP/1.1
//! with a client certificate of the client CA; the same without a certificate (optional, as
//! the bridge has it); a certificate of another CA refused by the handshake; 404 for another
//! path or another `Accept`; the `""` `Accept` entry answering any `Accept`.
//!
//! Under `cargo test --all-targets` it runs without `--bench` and returns at once.

#[path = "../integration/common/mod.rs"]
mod common;
#[path = "shared/floor.rs"]
mod floor;
#[path = "shared/report.rs"]
#[allow(dead_code)]
mod report;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::adapter::serving_pair;
use common::bridge::tls_client_with;
use floor::{Answer, Answers, FloorTls};
use report::{fmt_num, proc_sample};

const PATH: &str = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/bench/pods/%2A/m";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf, */*";

fn main() {
    floor::run_if_requested();
    report::bench_main(
        "floor: a benchmark; run it with `cargo bench --bench floor`",
        "the floor server answered wrong",
        run,
    );
}

/// A CA and a client certificate it signed: `(ca.crt, client.crt, client.key)` in `dir`.
fn client_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name}-ca"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("client key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("client parameters");
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{name}-user"));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).expect("client certificate");
    let paths = (
        dir.join(format!("{name}-ca.crt")),
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&paths.0, ca_cert.pem()).expect("writing the CA");
    std::fs::write(&paths.1, cert.pem()).expect("writing the client certificate");
    std::fs::write(&paths.2, key.serialize_pem()).expect("writing the client key");
    paths
}

async fn run() -> Vec<String> {
    let dir = tempfile::Builder::new()
        .prefix("kmb-floor-bench-")
        .tempdir()
        .expect("tempdir");
    let root = dir.path();
    let serving = serving_pair(root);
    let trusted = client_ca(root, "trusted");
    let stranger = client_ca(root, "stranger");
    let front_proxy = client_ca(root, "front-proxy");

    // About what the bridge answers for 200 pods as protobuf.
    let body: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let mut answers = Answers::new();
    let protobuf = Answer {
        status: 200,
        content_type: "application/vnd.kubernetes.protobuf".into(),
        body: body.clone().into(),
    };
    answers.insert(PATH, PROTOBUF, protobuf);
    answers.insert(
        "/healthz?verbose",
        "",
        Answer {
            status: 200,
            content_type: "text/plain".into(),
            body: "ok".into(),
        },
    );
    let tls = FloorTls::new(&serving, &trusted.0, Some(&front_proxy.0));
    let t = Instant::now();
    let floor = floor::start(&answers, &tls).await;
    println!(
        "floor server: pid {}, port {}, serving after {:.0?}, {} answers",
        floor.pid(),
        floor.port,
        t.elapsed(),
        answers.len()
    );

    let mut failures = Vec::new();
    let mut check = |what: &str, ok: bool| {
        println!("  {} {what}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            failures.push(what.to_owned());
        }
    };
    let ident = |p: &(PathBuf, PathBuf, PathBuf)| Some((p.1.clone(), p.2.clone()));
    let identities = [
        ("client CA certificate", ident(&trusted)),
        ("front-proxy CA certificate", ident(&front_proxy)),
        ("no certificate", None),
    ];
    for (who, identity) in &identities {
        for h2 in [true, false] {
            let client = tls_client_with(
                &serving.0,
                h2,
                identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            );
            let proto = if h2 { "HTTP/2" } else { "HTTP/1.1" };
            let response = client
                .get(floor.url(PATH))
                .header("accept", PROTOBUF)
                .send()
                .await;
            match response {
                Ok(r) => {
                    let version_ok = (r.version() == http::Version::HTTP_2) == h2;
                    let status = r.status().as_u16();
                    let ct = r.headers().get("content-type").cloned();
                    let bytes = r.bytes().await.unwrap_or_default();
                    check(
                        &format!("{proto}, {who}: 200, the Content-Type and the bytes"),
                        version_ok
                            && status == 200
                            && ct.as_ref().and_then(|v| v.to_str().ok())
                                == Some("application/vnd.kubernetes.protobuf")
                            && bytes[..] == body[..],
                    );
                }
                Err(e) => check(&format!("{proto}, {who}: {e}"), false),
            }
        }
    }
    let client = tls_client_with(&serving.0, true, Some((&trusted.1, &trusted.2)));
    let status = |path: &str, accept: &str| {
        let request = client.get(floor.url(path)).header("accept", accept);
        async move { request.send().await.map(|r| r.status().as_u16()).ok() }
    };
    check(
        "another Accept: 404",
        status(PATH, "application/json").await == Some(404),
    );
    check(
        "another path: 404",
        status("/apis/custom.metrics.k8s.io/v1beta2", PROTOBUF).await == Some(404),
    );
    check(
        "the \"\" Accept entry answers any Accept",
        status("/healthz?verbose", "text/html").await == Some(200),
    );
    let refused = tls_client_with(&serving.0, true, Some((&stranger.1, &stranger.2)))
        .get(floor.url(PATH))
        .send()
        .await;
    check("a certificate of another CA is refused", refused.is_err());

    // A short load, as compare's phases: workers sending back to back.
    for (concurrency, h2) in [(1, true), (8, true), (32, true), (8, false)] {
        let client = tls_client_with(&serving.0, h2, Some((&trusted.1, &trusted.2)));
        let url = floor.url(PATH);
        let before = proc_sample(floor.pid());
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let until = start + Duration::from_secs(2);
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let (client, url, latencies) = (client.clone(), url.clone(), latencies.clone());
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    let mut errors = 0u64;
                    while Instant::now() < until {
                        let t = Instant::now();
                        let ok = match client.get(&url).header("accept", PROTOBUF).send().await {
                            Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                            Err(_) => false,
                        };
                        if ok {
                            mine.push(t.elapsed());
                        } else {
                            errors += 1;
                        }
                    }
                    latencies.lock().unwrap().extend(mine);
                    errors
                })
            })
            .collect();
        let mut errors = 0;
        for w in workers {
            errors += w.await.unwrap_or(1);
        }
        let seconds = start.elapsed().as_secs_f64();
        let after = proc_sample(floor.pid());
        let mut l = std::mem::take(&mut *latencies.lock().unwrap());
        l.sort();
        let p99 = l
            .get((l.len() * 99 / 100).min(l.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
        println!(
            "  {} concurrency {concurrency}: {} requests/s, p99 {} ms, \
             floor CPU {} s, VmRSS {} MiB, {errors} errors",
            if h2 { "HTTP/2  " } else { "HTTP/1.1" },
            fmt_num(l.len() as f64 / seconds),
            fmt_num(p99),
            fmt_num((after.cpu - before.cpu).as_secs_f64()),
            fmt_num(after.rss_kib as f64 / 1024.0),
        );
        if errors > 0 {
            failures.push(format!("{errors} errors at concurrency {concurrency}"));
        }
    }
    drop(floor);
    failures
}
