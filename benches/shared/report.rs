//! What the benchmarks share: process figures from `/proc`, the machine they ran on, and how
//! numbers and ratios are printed.

use std::future::Future;
use std::time::Duration;

use serde_json::{json, Value};

/// A benchmark binary's `main`: without `--bench` (as under `cargo test --all-targets`) it
/// says how to run it and returns; else it runs `bench` and exits 1 listing what it returned
/// (each a server that errored or answered wrong) under `failed`.
pub fn bench_main<F: Future<Output = Vec<String>>>(
    usage: &str,
    failed: &str,
    bench: impl FnOnce() -> F,
) {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("{usage}");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let failures = runtime.block_on(bench());
    drop(runtime);
    if !failures.is_empty() {
        eprintln!("\nBENCHMARK FAILED: {failed}:");
        for f in &failures {
            eprintln!("  - {f}");
        }
        std::process::exit(1);
    }
}

/// CPU time (user + system) and memory of one process, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    pub cpu: Duration,
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

pub fn proc_sample(pid: u32) -> ProcSample {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may hold spaces: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let ticks = tick(11) + tick(12);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    ProcSample {
        cpu: Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64),
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    }
}

/// Prometheus' own counter or histogram sum `name`, summed over the series whose labels
/// contain `label` (e.g. `handler=\"/api/v1/query\"`), from its `/metrics` text.
pub fn prometheus_sum(metrics_text: &str, name: &str, label: &str) -> f64 {
    metrics_text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{'))
                && l.contains(label)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The machine a run measured: cores, CPU model, load average when it started.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu,
        "loadavg_at_start": load.trim(),
    })
}

/// Both servers' versions, for a run's JSON (prometheus-adapter's from the BUILD-INFO its
/// build script writes beside the binary).
pub fn versions(adapter_bin: &std::path::Path) -> Value {
    json!({
        "prometheus_adapter": std::fs::read_to_string(adapter_bin.with_file_name("BUILD-INFO"))
            .unwrap_or_default(),
        "kube_metrics_bridge": env!("CARGO_PKG_VERSION"),
    })
}

/// Writes a run's JSON `document` to `out` and says where, with how long the run took and the
/// load average at its start (`document.machine`) and at its end.
pub fn write_figures(
    out: &std::path::Path,
    document: &Value,
    started: std::time::Instant,
    loadavg_end: &str,
) {
    std::fs::write(out, serde_json::to_string_pretty(document).expect("JSON"))
        .expect("writing the results");
    println!(
        "\nfigures written to {} ({:.0} s in all; load average at the start {}, now {})",
        out.display(),
        started.elapsed().as_secs_f64(),
        document["machine"]["loadavg_at_start"]
            .as_str()
            .unwrap_or("?"),
        loadavg_end.trim()
    );
}

/// A figure with as many decimals as its size deserves; `-` for NaN.
pub fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A ratio `ours / theirs`, `=` when both are zero.
pub fn fmt_ratio(ours: f64, theirs: f64) -> String {
    if ours.is_nan() || theirs.is_nan() || theirs == 0.0 {
        if ours == 0.0 && theirs == 0.0 {
            "=".into()
        } else {
            "-".into()
        }
    } else {
        let r = ours / theirs;
        if r >= 10.0 {
            format!("{r:.0}x")
        } else if r >= 0.1 {
            format!("{r:.2}x")
        } else {
            format!("{r:.3}x")
        }
    }
}
