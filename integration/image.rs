//! The container image the Dockerfile builds: its configuration, that it holds one static
//! binary and nothing else, and that the binary serves real metrics when it runs from the
//! image's own root filesystem, read-only, as 65532:65532.
//!
//! The archive comes from `$KMB_IMAGE_ARCHIVE` (hack/test-all.sh builds it with
//! hack/image.sh), else this test runs hack/image.sh itself. Running the image without a
//! container engine uses what a runtime would: a private mount namespace (`unshare`), the
//! image's layers unpacked and bind-mounted read-only, a writable /tmp (an emptyDir), /proc and
//! /dev, and `chroot --userspec` for the image's user. This needs root.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use common::bridge::Bridge;
use common::{Exporter, Prometheus};
use serde_json::Value;

const BINARY: &str = "usr/local/bin/kube-metrics-bridge";
/// Everything the image may contain (directories are implied by these).
const EXPECTED_FILES: &[&str] = &[
    "etc/group",
    "etc/passwd",
    "etc/ssl/certs/ca-certificates.crt",
    BINARY,
];
/// An image bigger than this has picked up something it should not carry.
const MAX_ARCHIVE_BYTES: u64 = 40 * 1024 * 1024;

/// The image archive: built by hack/image.sh unless the environment names one.
async fn archive() -> PathBuf {
    common::cached_build("KMB_IMAGE_ARCHIVE", "hack/image.sh", "the image archive").await
}

fn run(cmd: &mut StdCommand) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A docker-archive unpacked: its image configuration and its layers applied in order.
struct Unpacked {
    config: Value,
    layers: usize,
    rootfs: PathBuf,
}

fn unpack(archive: &Path, into: &Path) -> Unpacked {
    let raw = into.join("archive");
    let rootfs = into.join("rootfs");
    std::fs::create_dir_all(&raw).expect("mkdir");
    std::fs::create_dir_all(&rootfs).expect("mkdir");
    run(StdCommand::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&raw));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(raw.join("manifest.json")).expect("manifest.json"))
            .expect("manifest.json is JSON");
    let entry = &manifest[0];
    let config_file = entry["Config"].as_str().expect("manifest names a config");
    let config: Value =
        serde_json::from_slice(&std::fs::read(raw.join(config_file)).expect("image config"))
            .expect("image config is JSON");
    let layers = entry["Layers"].as_array().expect("manifest lists layers");
    for layer in layers {
        let layer = layer.as_str().expect("layer path");
        run(StdCommand::new("tar")
            .arg("-xf")
            .arg(raw.join(layer))
            .arg("-C")
            .arg(&rootfs));
    }
    Unpacked {
        config,
        layers: layers.len(),
        rootfs,
    }
}

/// Regular files and symlinks under `root`, relative, sorted.
fn files_under(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let entry = entry.expect("dir entry");
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                walk(root, &entry.path(), out);
            } else {
                let rel = entry
                    .path()
                    .strip_prefix(root)
                    .expect("under root")
                    .to_owned();
                out.insert(rel.display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// ELF program header types that mean "needs a dynamic loader or shared libraries".
fn elf_interpreter_or_needed(binary: &[u8]) -> Option<&'static str> {
    const PT_INTERP: u32 = 3;
    assert!(binary.starts_with(b"\x7fELF"), "not an ELF file");
    assert_eq!(binary[4], 2, "expected a 64-bit ELF");
    assert_eq!(binary[5], 1, "expected little-endian");
    let u16_at = |o: usize| u16::from_le_bytes([binary[o], binary[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(binary[o..o + 4].try_into().expect("4 bytes"));
    let u64_at =
        |o: usize| u64::from_le_bytes(binary[o..o + 8].try_into().expect("8 bytes")) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let header = phoff + i * phentsize;
        if u32_at(header) == PT_INTERP {
            return Some("PT_INTERP (a dynamic loader)");
        }
    }
    // A static-pie binary has a PT_DYNAMIC but no DT_NEEDED; the loader check above plus
    // running it in an otherwise empty root (below) cover what matters.
    None
}

const RULES: &str = r#"
[prometheus]
url = "PROM_URL"
timeout = "2s"

[cache]
ttl = "1s"
discovery_interval = "1s"

[[rules]]
series_query = '{__name__="pod_load",namespace!="",pod!=""}'
resources.overrides = { namespace = { resource = "namespace" }, pod = { resource = "pod" } }
metrics_query = 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_is_one_static_non_root_binary_that_serves_metrics() {
    assert!(
        running_as_root(),
        "this test runs the image with unshare/chroot and needs root (CI runs as root)"
    );
    let archive = archive().await;
    let size = std::fs::metadata(&archive).expect("archive").len();
    assert!(
        size <= MAX_ARCHIVE_BYTES,
        "image archive is {size} bytes, more than {MAX_ARCHIVE_BYTES}"
    );
    let work = tempfile::tempdir().expect("tempdir");
    let image = unpack(&archive, work.path());

    // The configuration a runtime reads.
    let config = &image.config["config"];
    assert_eq!(config["User"], "65532:65532", "{config:#}");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/kube-metrics-bridge"])
    );
    assert_eq!(
        config["Cmd"],
        serde_json::json!(["serve", "--config", "/etc/kube-metrics-bridge/rules.toml"])
    );
    let ports: BTreeSet<&str> = config["ExposedPorts"]
        .as_object()
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(ports, BTreeSet::from(["6443/tcp", "9464/tcp"]));
    assert_eq!(image.layers, 1, "one layer on scratch");

    // Nothing but the binary and the files it reads: no shell, no libc.
    let files = files_under(&image.rootfs);
    let expected: BTreeSet<String> = EXPECTED_FILES.iter().map(|f| f.to_string()).collect();
    assert_eq!(files, expected, "files in the image");
    let binary = std::fs::read(image.rootfs.join(BINARY)).expect("binary");
    assert_eq!(
        elf_interpreter_or_needed(&binary),
        None,
        "binary is not static"
    );
    let passwd = std::fs::read_to_string(image.rootfs.join("etc/passwd")).expect("passwd");
    assert!(passwd.contains(":65532:65532:"), "{passwd}");

    // Run it: the image's entrypoint and command, from its own root, against a real Prometheus
    // reached by a host name (so the static binary's name lookup is exercised too).
    let exporter = Exporter::start().await;
    exporter
        .set_gauge(
            "pod_load",
            &[("namespace", "default"), ("pod", "web-1")],
            3.5,
        )
        .await;
    let prometheus = Prometheus::start(&[exporter.target()]).await;
    prometheus
        .wait_for_series(
            "pod_load{pod=\"web-1\"}",
            std::time::Duration::from_secs(30),
        )
        .await;

    let rootfs = &image.rootfs;
    let rules = RULES.replace(
        "PROM_URL",
        &format!("http://prometheus.image-test:{}", prometheus.port()),
    );
    let rules_path = rootfs.join("etc/kube-metrics-bridge/rules.toml");
    std::fs::create_dir_all(rules_path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&rules_path, rules).expect("rules");
    // What the kubelet adds to every container: /etc/hosts and mount points.
    std::fs::write(
        rootfs.join("etc/hosts"),
        "127.0.0.1 localhost prometheus.image-test\n",
    )
    .expect("hosts");
    for dir in ["proc", "dev", "tmp"] {
        std::fs::create_dir_all(rootfs.join(dir)).expect("mount point");
    }
    let scratch = tempfile::tempdir().expect("tempdir"); // the writable /tmp
    run(StdCommand::new("chown")
        .arg("65532:65532")
        .arg(scratch.path()));

    let mut cmd = tokio::process::Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            r#"set -e; root=$1; tmp=$2; shift 2
mount --bind "$root" "$root"; mount -o remount,bind,ro "$root"
mount --bind "$tmp" "$root/tmp"; mount --bind /proc "$root/proc"; mount --rbind /dev "$root/dev"
exec chroot --userspec=65532:65532 "$root" "$@""#,
        )
        .arg("sh")
        .arg(rootfs)
        .arg(scratch.path());
    for part in config["Entrypoint"]
        .as_array()
        .into_iter()
        .chain(config["Cmd"].as_array())
        .flatten()
    {
        cmd.arg(part.as_str().expect("string"));
    }
    let bridge = Bridge::launch_program(
        scratch,
        rules_path,
        cmd,
        Path::new("/tmp"),
        vec!["--standalone".to_string()],
    )
    .await;

    let metrics = bridge
        .wait_for(
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/pods/web-1/pod_load",
            |v| v["items"][0]["value"] == "3500m",
        )
        .await;
    assert_eq!(metrics["items"][0]["describedObject"]["name"], "web-1");

    // The process really is the image's user, on a read-only root.
    let pid = bridge.pid().expect("bridge pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid");
    assert!(
        uid_line.split_whitespace().skip(1).all(|id| id == "65532"),
        "{uid_line}"
    );
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mounts")).expect("mounts");
    let root_mount = mounts
        .lines()
        .rfind(|l| l.split_whitespace().nth(1) == Some("/"))
        .expect("a mount at / in the bridge's namespace");
    assert!(
        root_mount
            .split_whitespace()
            .nth(3)
            .unwrap_or("")
            .split(',')
            .any(|o| o == "ro"),
        "root is not read-only: {root_mount}"
    );
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}
