//! `cargo bench --bench plot -- <out.png> <compare-*.json>...`: the compare bench's runs at
//! several cluster sizes (one JSON file each, `$CARGO_TARGET_DIR/bench/compare-<time>.json`)
//! as a PNG of requests/s and peak RSS against cluster size for every server, and markdown
//! tables per size on stdout (`benches/shared/plot.rs` says what it reads).
//!
//! The PNG's text needs a TrueType font: `$KMB_BENCH_FONT`, else Debian's
//! `fonts-dejavu-core` (`/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf`).
//!
//! Under `cargo test --all-targets` it runs without `--bench` and returns at once.

#[path = "shared/plot.rs"]
mod plot;
#[path = "shared/report.rs"]
#[allow(dead_code)]
mod report;

use std::path::PathBuf;

const USAGE: &str = "plot: cargo bench --bench plot -- <out.png> <compare-*.json>...";

fn main() {
    report::bench_main(USAGE, "plot", || async { run() });
}

fn run() -> Vec<String> {
    // cargo bench adds `--bench` to the arguments given after `--`.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (out, inputs) = match args.split_first() {
        Some((out, inputs)) if out.ends_with(".png") && !inputs.is_empty() => {
            (PathBuf::from(out), inputs)
        }
        _ => return vec![format!("usage: {USAGE}; got {args:?}")],
    };
    let runs = match plot::read_runs(inputs) {
        Ok(r) => r,
        Err(e) => return vec![format!("{e:#}")],
    };
    print!("{}", plot::markdown(&runs));
    if let Err(e) = plot::render_png(&runs, &out) {
        return vec![format!("{e:#}")];
    }
    let sizes: Vec<String> = runs.iter().map(|r| plot::thousands(r.pods)).collect();
    eprintln!(
        "plot: {} written ({} pods)",
        out.display(),
        sizes.join(", ")
    );
    Vec::new()
}
