//! Hot reload of the rules file (edit in place, ConfigMap-style symlink swap, SIGHUP) and of
//! the serving certificate, through the real binary.

mod common;

use std::path::Path;
use std::time::Duration;

use common::bridge::{tls_client, Bridge};
use common::{wait_until, Exporter, Prometheus};

fn rules(prometheus: &Prometheus, extra: &str) -> String {
    format!(
        r#"
[prometheus]
url = "{}"
timeout = "2s"

[cache]
ttl = "1s"
discovery_interval = "30s"
series_max_age = "10m"

[[rules]]
series_query = 'pod_load{{namespace!="",pod!=""}}'
resources.overrides = {{ namespace = {{ resource = "namespace" }}, pod = {{ resource = "pod" }} }}
metrics_query = 'sum(<<.Series>>{{<<.LabelMatchers>>}}) by (<<.GroupBy>>)'
{extra}
"#,
        prometheus.url()
    )
}

const SECOND_RULE: &str = r#"
[[rules]]
series_query = 'pod_memory{namespace!="",pod!=""}'
resources.overrides = { namespace = { resource = "namespace" }, pod = { resource = "pod" } }
name = { as = "memory_bytes" }
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
"#;

async fn fixture() -> (Exporter, Prometheus) {
    let exporter = Exporter::start_empty().await;
    exporter
        .set_gauge("pod_load", &[("namespace", "demo"), ("pod", "web-0")], 2.0)
        .await;
    exporter
        .set_gauge(
            "pod_memory",
            &[("namespace", "demo"), ("pod", "web-0")],
            1536.0,
        )
        .await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    prometheus
        .wait_for_series("pod_memory", Duration::from_secs(30))
        .await;
    (exporter, prometheus)
}

fn lists(list: &serde_json::Value, name: &str) -> bool {
    list["resources"]
        .as_array()
        .is_some_and(|r| r.iter().any(|e| e["name"] == name))
}

const DISCOVERY: &str = "/apis/custom.metrics.k8s.io/v1beta2";
const MEMORY: &str = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/demo/pods/web-0/memory_bytes";

/// Writes `text` to `path` the way an editor does: a new file renamed over the old one.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[tokio::test]
async fn rules_file_edits_apply_and_broken_files_keep_the_old_rules() {
    let (_exporter, prometheus) = fixture().await;
    let bridge = Bridge::start(&rules(&prometheus, "")).await;
    bridge
        .wait_for(DISCOVERY, |v| lists(v, "pods/pod_load"))
        .await;
    assert!(!lists(&bridge.get(DISCOVERY).await.1, "pods/memory_bytes"));

    // A new rule shows up in discovery and answers (discovery_interval is 30s: the reload
    // itself must trigger the relist).
    replace_file(&bridge.rules_path, &rules(&prometheus, SECOND_RULE));
    bridge
        .wait_for(DISCOVERY, |v| lists(v, "pods/memory_bytes"))
        .await;
    assert_eq!(bridge.get(MEMORY).await.1["items"][0]["value"], "1536");
    assert_eq!(
        bridge
            .self_metric("kube_metrics_bridge_rules_last_reload_success")
            .await,
        Some(1.0)
    );

    // A broken file: logged, counted, and the running rules keep serving.
    replace_file(
        &bridge.rules_path,
        &rules(
            &prometheus,
            "[[rules]]\nseries_query = 'x'\nmetrics_query = 'sum(<<.Sereis>>)'\n",
        ),
    );
    wait_until(
        "the failed reload to show in the metric",
        Duration::from_secs(20),
        || async {
            (bridge
                .self_metric("kube_metrics_bridge_rules_last_reload_success")
                .await
                == Some(0.0))
            .then_some(())
        },
    )
    .await;
    assert!(
        bridge.log().contains("rules file not reloaded"),
        "{}",
        bridge.log()
    );
    assert!(
        bridge.log().contains("rules[1].metrics_query"),
        "the log names rule and field:\n{}",
        bridge.log()
    );
    assert_eq!(bridge.get(MEMORY).await.1["items"][0]["value"], "1536");
    assert!(lists(&bridge.get(DISCOVERY).await.1, "pods/memory_bytes"));

    // Not even a TOML file.
    replace_file(&bridge.rules_path, "this is [not toml");
    wait_until(
        "the second failure to be counted",
        Duration::from_secs(20),
        || async {
            (bridge
                .self_metric("kube_metrics_bridge_rules_reloads_total{result=\"failure\"}")
                .await
                >= Some(2.0))
            .then_some(())
        },
    )
    .await;
    assert_eq!(bridge.get(MEMORY).await.0, 200);

    // Fixed again: back to one rule, memory_bytes goes away.
    replace_file(&bridge.rules_path, &rules(&prometheus, ""));
    bridge
        .wait_for(DISCOVERY, |v| !lists(v, "pods/memory_bytes"))
        .await;
    assert_eq!(bridge.get(MEMORY).await.0, 404);
}

/// A mounted ConfigMap: `rules.toml -> ..data/rules.toml`, `..data -> ..<timestamp>`; kubelet
/// swaps `..data` atomically and deletes the old directory. Twice, because a watch on the
/// file itself would die after the first swap. Then SIGHUP with no file change at all.
#[tokio::test]
async fn configmap_symlink_swaps_and_sighup() {
    let (_exporter, prometheus) = fixture().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mount = dir.path().join("mount");
    std::fs::create_dir(&mount).expect("mount dir");
    let publish = |generation: u32, text: &str| {
        let versioned = mount.join(format!("..2026_11_28_{generation}"));
        std::fs::create_dir(&versioned).expect("versioned dir");
        std::fs::write(versioned.join("rules.toml"), text).expect("write");
        let tmp = mount.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(versioned.file_name().expect("name"), &tmp).expect("symlink");
        std::fs::rename(&tmp, mount.join("..data")).expect("swap ..data");
        if generation > 0 {
            let _ = std::fs::remove_dir_all(mount.join(format!("..2026_11_28_{}", generation - 1)));
        }
    };
    publish(0, &rules(&prometheus, ""));
    std::os::unix::fs::symlink("..data/rules.toml", mount.join("rules.toml"))
        .expect("user-visible link");
    let bridge = Bridge::start_in(
        dir,
        mount.join("rules.toml"),
        &["--rules-poll-interval", "1h"],
    )
    .await;
    bridge
        .wait_for(DISCOVERY, |v| lists(v, "pods/pod_load"))
        .await;

    publish(1, &rules(&prometheus, SECOND_RULE));
    bridge
        .wait_for(DISCOVERY, |v| lists(v, "pods/memory_bytes"))
        .await;
    publish(2, &rules(&prometheus, ""));
    bridge
        .wait_for(DISCOVERY, |v| !lists(v, "pods/memory_bytes"))
        .await;

    // SIGHUP reloads even when nothing changed on disk.
    let before = bridge
        .self_metric("kube_metrics_bridge_rules_reloads_total{result=\"success\"}")
        .await
        .unwrap_or(0.0);
    bridge.signal("HUP");
    wait_until("SIGHUP to reload", Duration::from_secs(10), || async {
        let now = bridge
            .self_metric("kube_metrics_bridge_rules_reloads_total{result=\"success\"}")
            .await
            .unwrap_or(0.0);
        (now > before).then_some(())
    })
    .await;
}

/// Serving certificate files replaced while running: new connections get the new one.
#[tokio::test]
async fn serving_certificate_reload() {
    let (_exporter, prometheus) = fixture().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("tls");
    std::fs::create_dir(&certs).expect("dir");
    let (ca_a, cert_a, key_a) = issue("authority-a");
    let (ca_b, cert_b, key_b) = issue("authority-b");
    std::fs::write(certs.join("tls.crt"), &cert_a).expect("write");
    std::fs::write(certs.join("tls.key"), &key_a).expect("write");
    std::fs::write(dir.path().join("ca-a.pem"), &ca_a).expect("write");
    std::fs::write(dir.path().join("ca-b.pem"), &ca_b).expect("write");
    let rules_path = dir.path().join("rules.toml");
    std::fs::write(&rules_path, rules(&prometheus, "")).expect("rules");
    let cert_file = certs.join("tls.crt").display().to_string();
    let key_file = certs.join("tls.key").display().to_string();
    let ca_a_path = dir.path().join("ca-a.pem");
    let ca_b_path = dir.path().join("ca-b.pem");
    let mut bridge = Bridge::start_in(
        dir,
        rules_path,
        &[
            "--tls-cert-file",
            &cert_file,
            "--tls-private-key-file",
            &key_file,
        ],
    )
    .await;
    bridge.set_client(tls_client(&ca_a_path, false));
    assert_eq!(bridge.get("/healthz").await.0, 200);

    // Replace both files (key first, as a careful rotation would not; a half-written pair
    // must be refused, not served).
    let tmp = certs.join("new.key");
    std::fs::write(&tmp, &key_b).expect("write");
    std::fs::rename(&tmp, certs.join("tls.key")).expect("rename");
    let tmp = certs.join("new.crt");
    std::fs::write(&tmp, &cert_b).expect("write");
    std::fs::rename(&tmp, certs.join("tls.crt")).expect("rename");

    let trusts_b = tls_client(&ca_b_path, false);
    let url = bridge.url("/healthz");
    wait_until(
        "the new certificate to be served",
        Duration::from_secs(40),
        || async {
            trusts_b
                .get(&url)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        },
    )
    .await;
    let trusts_a = tls_client(&ca_a_path, false);
    assert!(
        trusts_a.get(&url).send().await.is_err(),
        "the old certificate is no longer served"
    );
    assert!(
        bridge
            .self_metric("kube_metrics_bridge_certificate_reloads_total{result=\"success\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
}

/// A CA and a serving certificate for 127.0.0.1/localhost it signed: (ca, cert, key) PEM.
fn issue(name: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.distinguished_name.push(DnType::CommonName, name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).expect("cert");
    (ca.pem(), cert.pem(), key.serialize_pem())
}
