//! Figures across cluster sizes from the compare bench's JSON files
//! (`$CARGO_TARGET_DIR/bench/compare-<time>.json`, one run per size): markdown tables per size
//! and a PNG of requests/s and peak RSS against cluster size for every server in them
//! (issue 12: the README's benchmark section).
//!
//! What it reads of a document (see the `document` at the end of `benches/compare.rs`): the
//! cluster size `settings.cluster_pods` (else `settings.pods + settings.other_namespace_pods`,
//! as older runs have it), `settings.namespaces` if present, `settings.http2` and
//! `settings.phase_seconds`, `machine`, `started`, `servers.<name>.startup_vm_rss_mib`, and
//! each of `phases[]`: `route` if present, `scenario`, `concurrency`,
//! `servers.<name>.{requests_per_second, latency_ms.p99, vm_hwm_mib}`. Every server present
//! is shown, keyed by name; `kube-metrics-bridge`, `prometheus-adapter` and `floor` (when
//! there) get the ratio columns. Two files of one size: the later (`started`) is used.
//!
//! The requests/s panel shows [`RPS_SCENARIO`] at the highest concurrency of each run, on
//! the `direct` route (the only one of older runs; the first route of a run without it).
//!
//! The PNG's text needs a TrueType font, read at run time: `$KMB_BENCH_FONT`, else
//! [`DEFAULT_FONT`] (Debian's `fonts-dejavu-core`). plotters draws it with ab_glyph: no
//! fontconfig or freetype.

// Each bench that includes this uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use plotters::prelude::*;
use serde_json::Value;

use super::report::{fmt_num, fmt_ratio};

/// The font the PNG's text uses when `$KMB_BENCH_FONT` is not set.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// The Debian package that ships [`DEFAULT_FONT`].
pub const FONT_PACKAGE: &str = "fonts-dejavu-core";
/// The PNG's size in pixels.
pub const SIZE: (u32, u32) = (1200, 500);
/// The scenario the requests/s panel shows (at the highest concurrency of each run).
pub const RPS_SCENARIO: &str = "pods-all";

pub const BRIDGE: &str = "kube-metrics-bridge";
pub const ADAPTER: &str = "prometheus-adapter";
pub const FLOOR: &str = "floor";
/// The route of runs that name none.
pub const DIRECT: &str = "direct";
/// Columns in compare's order (the pairs side by side), then the floor; others follow by name.
pub const ORDER: [&str; 5] = [
    ADAPTER,
    BRIDGE,
    "prometheus-adapter-unthrottled",
    "kube-metrics-bridge-ttl0",
    FLOOR,
];

/// Sorts server names as [`ORDER`], the rest after them by name. (The JSON's objects come
/// back in name order.)
pub fn sort_servers(names: &mut [String]) {
    names.sort_by_key(|n| {
        let rank = ORDER.iter().position(|o| o == n).unwrap_or(ORDER.len());
        (rank, n.clone())
    });
}

/// One compare run: its document and the cluster size it measured.
#[derive(Debug, Clone)]
pub struct Run {
    pub path: PathBuf,
    /// Pods in the cluster (the x axis).
    pub pods: u64,
    pub doc: Value,
}

impl Run {
    pub fn from_document(path: PathBuf, doc: Value) -> anyhow::Result<Run> {
        let settings = &doc["settings"];
        let pods = match settings["cluster_pods"].as_u64() {
            Some(total) => total,
            None => {
                settings["pods"]
                    .as_u64()
                    .with_context(|| format!("{}: no settings.pods", path.display()))?
                    + settings["other_namespace_pods"].as_u64().unwrap_or(0)
            }
        };
        anyhow::ensure!(
            doc["phases"].is_array(),
            "{}: no phases (not a compare-*.json?)",
            path.display()
        );
        Ok(Run { path, pods, doc })
    }

    /// Server names: those of [`ORDER`] first, in that order, then the rest by name.
    pub fn servers(&self) -> Vec<String> {
        let mut names: Vec<String> = self.doc["servers"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        // Servers that appear only in the phases (a column added without a `servers` entry).
        for phase in self.phases() {
            for name in phase["servers"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.keys())
            {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        sort_servers(&mut names);
        names
    }

    pub fn phases(&self) -> &[Value] {
        self.doc["phases"].as_array().map_or(&[], Vec::as_slice)
    }

    /// The figure `pointer` (e.g. `/requests_per_second`) of `server` in `phase`; NaN if absent.
    fn figure(phase: &Value, server: &str, pointer: &str) -> f64 {
        phase["servers"][server]
            .pointer(pointer)
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN)
    }

    /// The route a phase took (`direct` when the run has no routes).
    pub fn route(phase: &Value) -> &str {
        phase["route"].as_str().unwrap_or(DIRECT)
    }

    /// The route the requests/s panel shows: `direct` if the run has it, else its first.
    pub fn plotted_route(&self) -> &str {
        let routes: Vec<&str> = self.phases().iter().map(Run::route).collect();
        if routes.is_empty() || routes.contains(&DIRECT) {
            DIRECT
        } else {
            routes[0]
        }
    }

    /// Whether the run measured more than the direct route.
    fn has_routes(&self) -> bool {
        self.phases().iter().any(|p| Run::route(p) != DIRECT)
    }

    /// Requests/s of `server` in `scenario` on [`Run::plotted_route`] at the highest
    /// concurrency that scenario ran at there.
    pub fn top_rps(&self, scenario: &str, server: &str) -> Option<(u64, f64)> {
        let route = self.plotted_route();
        self.phases()
            .iter()
            .filter(|p| p["scenario"] == scenario && Run::route(p) == route)
            .filter_map(|p| Some((p["concurrency"].as_u64()?, p)))
            .max_by_key(|(c, _)| *c)
            .map(|(c, p)| (c, Run::figure(p, server, "/requests_per_second")))
            .filter(|(_, v)| !v.is_nan())
    }

    /// The highest VmHWM (MiB) of `server` after any phase.
    pub fn peak_rss_mib(&self, server: &str) -> Option<f64> {
        self.phases()
            .iter()
            .map(|p| Run::figure(p, server, "/vm_hwm_mib"))
            .filter(|v| !v.is_nan())
            .reduce(f64::max)
    }

    pub fn startup_rss_mib(&self, server: &str) -> f64 {
        self.doc["servers"][server]["startup_vm_rss_mib"]
            .as_f64()
            .unwrap_or(f64::NAN)
    }

    /// "10,000 pods (200 in `bench`, 9,800 in 9 other namespaces), HTTP/2, 3 s phases"
    pub fn describe(&self) -> String {
        let s = &self.doc["settings"];
        let mut out = format!("{} pods", thousands(self.pods));
        if let (Some(a), Some(b)) = (s["pods"].as_u64(), s["other_namespace_pods"].as_u64()) {
            let others = match s["namespaces"].as_u64() {
                Some(n) if n > 2 => format!("in {} other namespaces", thousands(n - 1)),
                Some(_) => "in 1 other namespace".to_owned(),
                None => "in `bench-other`".to_owned(),
            };
            if b > 0 {
                let _ = write!(
                    out,
                    " ({} in `bench`, {} {others})",
                    thousands(a),
                    thousands(b)
                );
            }
        }
        match s["http2"].as_bool() {
            Some(true) => out.push_str(", HTTP/2"),
            Some(false) => out.push_str(", HTTP/1.1"),
            None => {}
        }
        if let Some(secs) = s["phase_seconds"].as_f64() {
            let _ = write!(out, ", {} s phases", axis_num(secs));
        }
        out
    }
}

/// `cpus` and `cpu_model` of a document's `machine`: "2 CPUs, AMD EPYC 7B13".
pub fn machine_line(doc: &Value) -> String {
    let m = &doc["machine"];
    let model = m["cpu_model"].as_str().unwrap_or("").trim();
    match m["cpus"].as_u64() {
        Some(n) if model.is_empty() => format!("{n} CPUs"),
        Some(n) => format!("{n} CPUs, {model}"),
        None => model.to_owned(),
    }
}

/// Reads compare JSON files; one run per cluster size (the later `started` of two), smallest
/// first.
pub fn read_runs<P: AsRef<Path>>(paths: &[P]) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let doc: Value =
            serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
        runs.push(Run::from_document(path.to_owned(), doc)?);
    }
    Ok(one_per_size(runs))
}

/// Keeps the later run (by `started`, RFC 3339, so text order is time order) of each size.
pub fn one_per_size(runs: Vec<Run>) -> Vec<Run> {
    let mut by_size: BTreeMap<u64, Run> = BTreeMap::new();
    for run in runs {
        let started = |r: &Run| r.doc["started"].as_str().unwrap_or("").to_owned();
        match by_size.get(&run.pods) {
            Some(kept) if started(kept) >= started(&run) => {
                eprintln!(
                    "plot: {} pods twice; using {}, not {}",
                    thousands(run.pods),
                    kept.path.display(),
                    run.path.display()
                );
            }
            Some(kept) => {
                eprintln!(
                    "plot: {} pods twice; using {}, not {}",
                    thousands(run.pods),
                    run.path.display(),
                    kept.path.display()
                );
                by_size.insert(run.pods, run);
            }
            None => {
                by_size.insert(run.pods, run);
            }
        }
    }
    by_size.into_values().collect()
}

/// Every server of every run, in first-seen order.
pub fn all_servers(runs: &[Run]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for run in runs {
        for name in run.servers() {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    sort_servers(&mut names);
    names
}

/// 50000 -> "50,000".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The ratio columns a run has: (header, ours, theirs).
fn ratio_pairs(servers: &[String]) -> Vec<(String, &'static str, &'static str)> {
    let has = |n: &str| servers.iter().any(|s| s == n);
    let mut pairs = Vec::new();
    if has(BRIDGE) && has(ADAPTER) {
        pairs.push(("bridge / adapter".to_owned(), BRIDGE, ADAPTER));
    }
    if has(BRIDGE) && has(FLOOR) {
        pairs.push(("bridge / floor".to_owned(), BRIDGE, FLOOR));
    }
    pairs
}

/// Markdown: for each size, a table of requests/s and p99 latency per phase and server, with
/// the ratios kube-metrics-bridge / prometheus-adapter and kube-metrics-bridge / floor (when
/// both are there), and one of memory.
pub fn markdown(runs: &[Run]) -> String {
    let mut out = String::new();
    for run in runs {
        let servers = run.servers();
        let pairs = ratio_pairs(&servers);
        let _ = writeln!(out, "### {}\n", run.describe());
        let _ = writeln!(out, "{}\n", machine_line(&run.doc));
        // Header: phase | <server> req/s | <server> p99 ms | ... | <ratio> req/s | <ratio> p99
        let mut header = vec!["phase".to_owned()];
        for s in &servers {
            header.push(format!("{s} req/s"));
            header.push(format!("{s} p99 ms"));
        }
        for (name, _, _) in &pairs {
            header.push(format!("{name} req/s"));
            header.push(format!("{name} p99"));
        }
        let mut rows = Vec::new();
        let routes = run.has_routes();
        for phase in run.phases() {
            let mut label = format!(
                "{} c={}",
                phase["scenario"].as_str().unwrap_or("?"),
                phase["concurrency"]
            );
            if routes {
                let _ = write!(label, ", {}", Run::route(phase));
            }
            let mut row = vec![label];
            let rps = |s: &str| Run::figure(phase, s, "/requests_per_second");
            let p99 = |s: &str| Run::figure(phase, s, "/latency_ms/p99");
            for s in &servers {
                row.push(fmt_num(rps(s)));
                row.push(fmt_num(p99(s)));
            }
            for (_, ours, theirs) in &pairs {
                row.push(fmt_ratio(rps(ours), rps(theirs)));
                row.push(fmt_ratio(p99(ours), p99(theirs)));
            }
            rows.push(row);
        }
        write_table(&mut out, &header, &rows);

        let mut header = vec!["memory".to_owned()];
        header.extend(servers.iter().map(|s| format!("{s} MiB")));
        header.extend(pairs.iter().map(|(name, _, _)| name.clone()));
        type Figure<'a> = &'a dyn Fn(&str) -> f64;
        let memory: [(&str, Figure); 2] = [
            ("VmRSS after start-up", &|s| run.startup_rss_mib(s)),
            ("peak VmHWM over the phases", &|s| {
                run.peak_rss_mib(s).unwrap_or(f64::NAN)
            }),
        ];
        let rows: Vec<Vec<String>> = memory
            .iter()
            .map(|(label, f)| {
                let mut row = vec![(*label).to_owned()];
                row.extend(servers.iter().map(|s| fmt_num(f(s))));
                row.extend(
                    pairs
                        .iter()
                        .map(|(_, ours, theirs)| fmt_ratio(f(ours), f(theirs))),
                );
                row
            })
            .collect();
        write_table(&mut out, &header, &rows);
    }
    out
}

fn write_table(out: &mut String, header: &[String], rows: &[Vec<String>]) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let align: Vec<&str> = (0..header.len())
        .map(|i| if i == 0 { "---" } else { "---:" })
        .collect();
    let _ = writeln!(out, "|{}|", align.join("|"));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out.push('\n');
}

/// A server's colour: fixed for the known ones, so every PNG reads the same.
fn colour(name: &str, index: usize) -> RGBColor {
    match name {
        BRIDGE => RGBColor(31, 119, 180),
        "kube-metrics-bridge-ttl0" => RGBColor(120, 180, 230),
        ADAPTER => RGBColor(214, 39, 40),
        "prometheus-adapter-unthrottled" => RGBColor(255, 140, 60),
        FLOOR => RGBColor(90, 90, 90),
        _ => {
            const OTHERS: [RGBColor; 5] = [
                RGBColor(44, 160, 44),
                RGBColor(148, 103, 189),
                RGBColor(140, 86, 75),
                RGBColor(227, 119, 194),
                RGBColor(188, 189, 34),
            ];
            OTHERS[index % OTHERS.len()]
        }
    }
}

/// Loads the font for the PNG's text (once per process).
fn register_font() -> anyhow::Result<()> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let path = std::env::var_os("KMB_BENCH_FONT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_FONT));
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "reading the font {} ({e}): `apt-get install {FONT_PACKAGE}`, or point \
                 KMB_BENCH_FONT at a TrueType font",
                path.display()
            )
        })?;
        // plotters keeps fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{}: not a font plotters can read", path.display()))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// A number for an axis or a heading: "50,000", "2.5", "0".
pub fn axis_num(v: f64) -> String {
    if v >= 1.0 && v.fract().abs() < 1e-9 {
        thousands(v.round() as u64)
    } else if v == 0.0 {
        "0".to_owned()
    } else {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// The x axis: cluster size on a log scale, with a tick, a grid line and a label at each size
/// measured (plotters' log axis labels only powers of ten).
struct SizeAxis {
    sizes: Vec<f64>,
    range: std::ops::Range<f64>,
}

impl plotters::coord::ranged1d::Ranged for SizeAxis {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let (lo, hi) = (self.range.start.ln(), self.range.end.ln());
        let t = (value.ln() - lo) / (hi - lo);
        limit.0 + (t * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, hint: H) -> Vec<f64> {
        // Bold points (labels and grid lines) only; no light lines in between.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.sizes.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

/// One line of one panel: a server's points (cluster size, value).
struct Line {
    server: String,
    colour: RGBColor,
    points: Vec<(f64, f64)>,
}

/// Draws the two panels (requests/s of [`RPS_SCENARIO`] at each run's highest concurrency;
/// peak VmHWM) against cluster size into a [`SIZE`] PNG at `out`, with one legend for both.
pub fn render_png(runs: &[Run], out: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(!runs.is_empty(), "no runs to plot");
    register_font()?;
    let servers = all_servers(runs);
    let lines = |value: &dyn Fn(&Run, &str) -> Option<f64>| -> Vec<Line> {
        servers
            .iter()
            .enumerate()
            .map(|(i, s)| Line {
                server: s.clone(),
                colour: colour(s, i),
                points: runs
                    .iter()
                    .filter_map(|r| Some((r.pods as f64, value(r, s)?)))
                    .filter(|(_, v)| v.is_finite() && *v > 0.0)
                    .collect(),
            })
            .filter(|l| !l.points.is_empty())
            .collect()
    };
    let rps = lines(&|r, s| r.top_rps(RPS_SCENARIO, s).map(|(_, v)| v));
    let rss = lines(&|r, s| r.peak_rss_mib(s));
    let concurrency: Vec<u64> = runs
        .iter()
        .flat_map(|r| servers.iter().filter_map(|s| r.top_rps(RPS_SCENARIO, s)))
        .map(|(c, _)| c)
        .collect();
    let concurrency = match (concurrency.iter().min(), concurrency.iter().max()) {
        (Some(a), Some(b)) if a == b => format!("concurrency {a}"),
        (Some(a), Some(b)) => format!("concurrency {a} to {b}"),
        _ => "highest concurrency".to_owned(),
    };
    let mut machines: Vec<String> = runs.iter().map(|r| machine_line(&r.doc)).collect();
    machines.dedup();
    let title = format!(
        "kube-metrics-bridge and prometheus-adapter against cluster size, {}",
        machines.join(" / ")
    );

    let root = BitMapBackend::new(out, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let root = root
        .titled(&title, ("sans-serif", 20).into_font().color(&BLACK))
        .map_err(draw_error)?;
    let (legend_area, charts) = root.split_vertically(34);
    let legend: Vec<(&str, RGBColor)> = rps
        .iter()
        .chain(&rss)
        .map(|l| (l.server.as_str(), l.colour))
        .fold(Vec::new(), |mut v, (s, c)| {
            if !v.iter().any(|(n, _)| *n == s) {
                v.push((s, c));
            }
            v
        });
    draw_legend(&legend_area, &legend)?;
    let panels = charts.split_evenly((1, 2));
    let sizes: Vec<f64> = runs.iter().map(|r| r.pods as f64).collect();
    panel(
        &panels[0],
        &rps_caption(runs, &concurrency),
        "requests/s (log scale)",
        &sizes,
        &rps,
        true,
    )?;
    panel(
        &panels[1],
        "peak RSS (highest VmHWM after a load phase)",
        "MiB",
        &sizes,
        &rss,
        false,
    )?;
    root.present().map_err(draw_error)?;
    Ok(())
}

/// "requests/s, pods-all (the 200 pods of namespace bench), concurrency 32", and the route
/// when it is not `direct`.
fn rps_caption(runs: &[Run], concurrency: &str) -> String {
    let mut namespace_pods: Vec<u64> = runs
        .iter()
        .filter_map(|r| r.doc["settings"]["pods"].as_u64())
        .collect();
    namespace_pods.sort_unstable();
    namespace_pods.dedup();
    let what = match namespace_pods[..] {
        [n] => format!("the {} pods of namespace bench", thousands(n)),
        _ => "every pod of namespace bench".to_owned(),
    };
    let mut routes: Vec<&str> = runs.iter().map(Run::plotted_route).collect();
    routes.dedup();
    let mut caption = format!("requests/s, {RPS_SCENARIO} ({what}), {concurrency}");
    if routes != [DIRECT] {
        let _ = write!(caption, ", {}", routes.join(" / "));
    }
    caption
}

fn draw_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the PNG: {e:?}")
}

/// One row, centred: a coloured line and the server's name for each.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: &[(&str, RGBColor)],
) -> anyhow::Result<()> {
    const SWATCH: i32 = 26;
    const GAP: i32 = 8;
    const SPACING: i32 = 30;
    let style = ("sans-serif", 15).into_font().color(&BLACK);
    let widths: Vec<i32> = entries
        .iter()
        .map(|(name, _)| {
            area.estimate_text_size(name, &style)
                .map(|(w, _)| w as i32)
                .map_err(draw_error)
        })
        .collect::<anyhow::Result<_>>()?;
    let total: i32 = widths.iter().map(|w| SWATCH + GAP + w).sum::<i32>()
        + SPACING * (entries.len() as i32 - 1).max(0);
    let (width, height) = area.dim_in_pixel();
    let mut x = ((width as i32 - total) / 2).max(0);
    let y = height as i32 / 2;
    for ((name, colour), w) in entries.iter().zip(&widths) {
        area.draw(&PathElement::new(
            vec![(x, y), (x + SWATCH, y)],
            colour.stroke_width(3),
        ))
        .map_err(draw_error)?;
        area.draw(&Circle::new((x + SWATCH / 2, y), 4, colour.filled()))
            .map_err(draw_error)?;
        let style = style.pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Left,
            plotters::style::text_anchor::VPos::Center,
        ));
        area.draw_text(name, &style, (x + SWATCH + GAP, y))
            .map_err(draw_error)?;
        x += SWATCH + GAP + w + SPACING;
    }
    Ok(())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    sizes: &[f64],
    lines: &[Line],
    log_y: bool,
) -> anyhow::Result<()> {
    let x_min = sizes.iter().copied().fold(f64::INFINITY, f64::min);
    let x_max = sizes.iter().copied().fold(0.0, f64::max);
    let x_axis = SizeAxis {
        sizes: sizes.to_vec(),
        range: (x_min / 1.6)..(x_max * 1.6),
    };
    let values = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let y_max = values.clone().fold(0.0, f64::max).max(1.0);
    let y_min = values.fold(f64::INFINITY, f64::min).min(y_max);
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", 17))
        .margin(12)
        .margin_right(24)
        .x_label_area_size(45)
        .y_label_area_size(70);
    let x_fmt = |v: &f64| thousands(v.round() as u64);
    let y_fmt = |v: &f64| axis_num(*v);
    // The same drawing on either kind of y axis (their types differ).
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("cluster size (pods, log scale)")
                .y_desc(y_desc)
                .x_label_formatter(&x_fmt)
                .y_label_formatter(&y_fmt)
                .label_style(("sans-serif", 14))
                .axis_desc_style(("sans-serif", 15))
                .bold_line_style(RGBColor(200, 200, 200))
                .light_line_style(RGBColor(238, 238, 238))
                .draw()
                .map_err(draw_error)?;
            for line in lines {
                let colour = line.colour;
                chart
                    .draw_series(LineSeries::new(
                        line.points.iter().copied(),
                        colour.stroke_width(2),
                    ))
                    .map_err(draw_error)?;
                chart
                    .draw_series(
                        line.points
                            .iter()
                            .map(|&p| Circle::new(p, 4, colour.filled())),
                    )
                    .map_err(draw_error)?;
            }
        }};
    }
    if log_y {
        // A factor of 3 of room below and above.
        draw!(builder
            .build_cartesian_2d(x_axis, ((y_min / 3.0)..(y_max * 3.0)).log_scale())
            .map_err(draw_error)?);
    } else {
        // From 0, with 15 % headroom.
        draw!(builder
            .build_cartesian_2d(x_axis, 0.0..(y_max * 1.15))
            .map_err(draw_error)?);
    }
    Ok(())
}
