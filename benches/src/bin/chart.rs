//! Turns criterion's results of the engine bench into the report's tables
//! (Markdown, on stdout) and its chart (`docs/benchmarks.svg`): how fast
//! each shredkv backend (and sled with one store-wide key) is relative to
//! the plain store of the same backend, workload by workload, and how much
//! faster shredkv erases a subject than range removal and SQLite.
//!
//! ```text
//! cargo run --release -p shredkv-benches --bin chart -- [CRITERION_DIR] [--svg PATH]
//! ```
//!
//! `CRITERION_DIR` defaults to `$CARGO_TARGET_DIR/criterion` (or
//! `target/criterion`); it reads `<group>/<bench>/new/estimates.json`.
//! Erase results are read for the full run's sizes, or the quick ones with
//! `--quick` (or `SHREDKV_BENCH_QUICK=1`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use shredkv_benches::workload::Sizes;
use shredkv_benches::{Peer, Result};

/// The throughput workloads: criterion group, label, and the design's
/// target for shredkv relative to its plain backend (if it has one).
const WORKLOADS: [(&str, &str, Option<f64>); 4] = [
    ("engine-put", "put", Some(0.95)),
    ("engine-get", "get", Some(0.90)),
    ("engine-scan", "scan", Some(0.60)),
    ("engine-mixed", "mixed 50/50", None),
];

/// The erase group; its benches are `<peer>/<records>`.
const ERASE: &str = "engine-erase";
/// How many times faster than range removal and SQLite shredkv must erase
/// the largest subject.
const ERASE_TARGET: f64 = 1000.0;
/// How much slower erasing the largest subject may be than the smallest.
const ERASE_FLATNESS: f64 = 2.0;

/// Comparisons drawn for each throughput workload: (peer, against).
const PAIRS: [(Peer, Peer); 5] = [
    (Peer::ShredkvSled, Peer::Sled),
    (Peer::ShredkvRedb, Peer::Redb),
    (Peer::SledAes, Peer::Sled),
    (Peer::SledFloor, Peer::Sled),
    (Peer::RedbFloor, Peer::Redb),
];

/// Each shredkv peer with its floor: the same layout and cryptography on
/// the plain backend, without the engine.
const FLOORS: [(Peer, Peer); 2] = [
    (Peer::ShredkvSled, Peer::SledFloor),
    (Peer::ShredkvRedb, Peer::RedbFloor),
];

/// Comparisons drawn for each erased size.
const ERASE_PAIRS: [(Peer, Peer); 4] = [
    (Peer::ShredkvSled, Peer::Sled),
    (Peer::ShredkvRedb, Peer::Redb),
    (Peer::ShredkvSled, Peer::Sqlite),
    (Peer::ShredkvRedb, Peer::Sqlite),
];

/// One benchmark's result.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    /// Median time of one iteration, ns, and its 95% confidence bounds.
    /// The median, not the mean: on a shared machine an fsync now and then
    /// waits behind another process's I/O, and one such outlier would move
    /// the mean of a ten-sample erase benchmark.
    median: f64,
    low: f64,
    high: f64,
    /// Elements per iteration (criterion's `Throughput::Elements`).
    elements: f64,
}

fn read_estimate(dir: &Path) -> Option<Estimate> {
    let estimates: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("new/estimates.json")).ok()?).ok()?;
    let benchmark: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("new/benchmark.json")).ok()?).ok()?;
    let median = estimates.get("median")?;
    let interval = median.get("confidence_interval")?;
    Some(Estimate {
        median: median.get("point_estimate")?.as_f64()?,
        low: interval.get("lower_bound")?.as_f64()?,
        high: interval.get("upper_bound")?.as_f64()?,
        elements: benchmark
            .get("throughput")
            .and_then(|t| t.get("Elements"))
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(1.0),
    })
}

/// Every result found.
struct Results {
    /// (group, peer) → estimate, for the throughput workloads.
    workloads: Vec<(&'static str, Peer, Estimate)>,
    /// (records, peer) → estimate, for erasure; sizes ascending.
    erase: Vec<(u64, Peer, Estimate)>,
}

impl Results {
    /// Reads the results of a run with `sizes` (their erase sizes: a run
    /// with other sizes leaves its own directories behind).
    fn read(root: &Path, sizes: &Sizes) -> Results {
        let mut workloads = Vec::new();
        for (group, _, _) in WORKLOADS {
            for peer in Peer::ALL {
                if let Some(e) = read_estimate(&root.join(group).join(peer.name())) {
                    workloads.push((group, peer, e));
                }
            }
        }
        let mut erase = Vec::new();
        for size in sizes.erase {
            for peer in Peer::ALL {
                let dir = root.join(ERASE).join(peer.name()).join(size.to_string());
                if let Some(e) = read_estimate(&dir) {
                    erase.push((size, peer, e));
                }
            }
        }
        erase.sort_by_key(|(size, peer, _)| (*size, *peer));
        Results { workloads, erase }
    }

    fn workload(&self, group: &str, peer: Peer) -> Option<Estimate> {
        self.workloads
            .iter()
            .find(|(g, p, _)| *g == group && *p == peer)
            .map(|(_, _, e)| *e)
    }

    fn erase(&self, size: u64, peer: Peer) -> Option<Estimate> {
        self.erase
            .iter()
            .find(|(s, p, _)| *s == size && *p == peer)
            .map(|(_, _, e)| *e)
    }

    fn erase_sizes(&self) -> Vec<u64> {
        let mut sizes: Vec<u64> = self.erase.iter().map(|(s, _, _)| *s).collect();
        sizes.dedup();
        sizes
    }
}

/// How many times faster `peer` is than `base` (their time ratio).
fn speedup(peer: Option<Estimate>, base: Option<Estimate>) -> Option<f64> {
    Some(base?.median / peer?.median)
}

fn format_time(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn format_rate(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.2} M/s", per_sec / 1e6)
    } else if per_sec >= 1e3 {
        format!("{:.1} k/s", per_sec / 1e3)
    } else {
        format!("{per_sec:.1} /s")
    }
}

fn format_ratio(ratio: Option<f64>) -> String {
    match ratio {
        Some(r) if r >= 100.0 => format!("{r:.0}×"),
        Some(r) if r >= 10.0 => format!("{r:.1}×"),
        Some(r) => format!("{r:.2}×"),
        None => "–".into(),
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

/// The Markdown tables: one per workload, then the targets.
fn markdown(results: &Results) -> String {
    let mut out = String::new();
    let mut row = |line: String| {
        out.push_str(&line);
        out.push('\n');
    };
    for (group, label, _) in WORKLOADS {
        row(format!("#### {label}\n"));
        row(
            "| peer | median time per op (95% CI) | throughput | vs plain backend | vs SQLite |"
                .into(),
        );
        row("|---|---:|---:|---:|---:|".into());
        for peer in Peer::ALL {
            let Some(e) = results.workload(group, peer) else {
                continue;
            };
            row(format!(
                "| {peer} | {} ({}–{}) | {} | {} | {} |",
                format_time(e.median),
                format_time(e.low),
                format_time(e.high),
                format_rate(e.elements * 1e9 / e.median),
                format_ratio(speedup(Some(e), results.workload(group, peer.baseline()))),
                format_ratio(speedup(Some(e), results.workload(group, Peer::Sqlite))),
            ));
        }
        row(String::new());
    }
    let sizes = results.erase_sizes();
    if !sizes.is_empty() {
        row("#### erase one subject, until durable\n".into());
        let mut header = "| peer |".to_string();
        let mut rule = "|---|".to_string();
        for size in &sizes {
            let _ = write!(header, " {size} records |");
            rule.push_str("---:|");
        }
        row(header);
        row(rule);
        for peer in Peer::ALL {
            let mut line = format!("| {peer} |");
            for size in &sizes {
                let cell = results.erase(*size, peer).map_or("–".into(), |e| {
                    let mut cell = format_time(e.median);
                    if matches!(peer, Peer::ShredkvSled | Peer::ShredkvRedb) {
                        let plain = speedup(Some(e), results.erase(*size, peer.baseline()));
                        let sqlite = speedup(Some(e), results.erase(*size, Peer::Sqlite));
                        let _ = write!(
                            cell,
                            " ({} vs plain, {} vs SQLite)",
                            format_ratio(plain),
                            format_ratio(sqlite)
                        );
                    }
                    cell
                });
                let _ = write!(line, " {cell} |");
            }
            row(line);
        }
        row(String::new());
    }
    row("#### the design's floor\n".into());
    row(
        "| workload | floor / plain, sled | shredkv / floor, sled | floor / plain, redb | shredkv / floor, redb |"
            .into(),
    );
    row("|---|---:|---:|---:|---:|".into());
    for (group, label, _) in WORKLOADS {
        let mut line = format!("| {label} |");
        for (peer, floor) in FLOORS {
            let design = speedup(
                results.workload(group, floor),
                results.workload(group, floor.baseline()),
            );
            let engine = speedup(
                results.workload(group, peer),
                results.workload(group, floor),
            );
            let _ = write!(
                line,
                " {} | {} |",
                format_ratio(design),
                format_ratio(engine)
            );
        }
        row(line);
    }
    row(String::new());
    row("#### targets\n".into());
    row("| target | shredkv-sled | shredkv-redb |".into());
    row("|---|---|---|".into());
    for (group, label, target) in WORKLOADS {
        let Some(target) = target else { continue };
        let cells: Vec<String> = [Peer::ShredkvSled, Peer::ShredkvRedb]
            .iter()
            .map(|&peer| {
                speedup(
                    results.workload(group, peer),
                    results.workload(group, peer.baseline()),
                )
                .map_or("–".into(), |r| {
                    format!("{r:.2}× {}", verdict(r >= target))
                })
            })
            .collect();
        row(format!(
            "| {label} ≥ {target:.2}× plain | {} |",
            cells.join(" | ")
        ));
    }
    if let (Some(&small), Some(&large)) = (sizes.first(), sizes.last()) {
        for (against, name) in [
            (None, "plain range removal"),
            (Some(Peer::Sqlite), "SQLite"),
        ] {
            let cells: Vec<String> = [Peer::ShredkvSled, Peer::ShredkvRedb]
                .iter()
                .map(|&peer| {
                    let base = against.unwrap_or(peer.baseline());
                    speedup(results.erase(large, peer), results.erase(large, base))
                        .map_or("–".into(), |r| {
                            format!("{r:.0}× {}", verdict(r >= ERASE_TARGET))
                        })
                })
                .collect();
            row(format!(
                "| erase {large} records ≥ {ERASE_TARGET:.0}× faster than {name} | {} |",
                cells.join(" | ")
            ));
        }
        let cells: Vec<String> = [Peer::ShredkvSled, Peer::ShredkvRedb]
            .iter()
            .map(|&peer| {
                // Time for the largest subject over time for the smallest.
                speedup(results.erase(small, peer), results.erase(large, peer))
                    .map_or("–".into(), |r| {
                        format!("{r:.2}× {}", verdict(r <= ERASE_FLATNESS))
                    })
            })
            .collect();
        row(format!(
            "| erase {large} vs {small} records within {ERASE_FLATNESS:.0}× | {} |",
            cells.join(" | ")
        ));
    }
    out
}

/// One bar of the chart.
struct Bar {
    label: String,
    ratio: f64,
    target: Option<f64>,
    /// The heading the bar is drawn under.
    section: &'static str,
}

fn bars(results: &Results) -> Vec<Bar> {
    let mut bars = Vec::new();
    for (group, label, target) in WORKLOADS {
        for (peer, base) in PAIRS {
            if let Some(ratio) =
                speedup(results.workload(group, peer), results.workload(group, base))
            {
                bars.push(Bar {
                    label: format!("{label}: {peer} / {base}"),
                    ratio,
                    target: if matches!(peer, Peer::ShredkvSled | Peer::ShredkvRedb) {
                        target
                    } else {
                        None
                    },
                    section: "throughput relative to the plain backend (higher is better)",
                });
            }
        }
    }
    let sizes = results.erase_sizes();
    let largest = sizes.last().copied();
    for size in sizes {
        for (peer, base) in ERASE_PAIRS {
            if let Some(ratio) = speedup(results.erase(size, peer), results.erase(size, base)) {
                bars.push(Bar {
                    label: format!("erase {size}: {peer} vs {base}"),
                    ratio,
                    target: (Some(size) == largest).then_some(ERASE_TARGET),
                    section: "erasing one subject until durable: times faster (higher is better)",
                });
            }
        }
    }
    bars
}

/// A horizontal bar chart of ratios on a log scale, with target marks.
fn svg(bars: &[Bar]) -> String {
    const ROW: f64 = 22.0;
    const LEFT: f64 = 300.0;
    const WIDTH: f64 = 560.0;
    const TOP: f64 = 40.0;
    let (min_exp, max_exp) = (-1i32, 5i32);
    let x = |ratio: f64| {
        let clamped = ratio.clamp(10f64.powi(min_exp), 10f64.powi(max_exp));
        LEFT + (clamped.log10() - f64::from(min_exp)) / f64::from(max_exp - min_exp) * WIDTH
    };
    let mut sections = 0.0;
    let mut previous = "";
    for bar in bars {
        if bar.section != previous {
            sections += 1.0;
            previous = bar.section;
        }
    }
    let rows = bars.len() as f64 + sections * 1.5;
    let height = TOP + rows * ROW + 50.0;
    let total_width = LEFT + WIDTH + 90.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{total_width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r##"<rect width="100%" height="100%" fill="#fff"/><text x="10" y="20" font-size="15" font-weight="bold">shredkv engine benchmarks: ratios to peers (log scale)</text>"##
    );
    let bottom = height - 40.0;
    for exp in min_exp..=max_exp {
        let gx = x(10f64.powi(exp));
        let label = if exp < 0 {
            "0.1×".to_string()
        } else {
            format!("{}×", 10u64.pow(exp.unsigned_abs()))
        };
        let stroke = if exp == 0 { "#444" } else { "#ddd" };
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{bottom}" stroke="{stroke}"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle" fill="#444">{label}</text>"##,
            bottom + 15.0
        );
    }
    let mut y = TOP;
    let mut previous = "";
    for bar in bars {
        if bar.section != previous {
            previous = bar.section;
            y += ROW * 0.5;
            let _ = writeln!(
                s,
                r#"<text x="10" y="{:.1}" font-weight="bold">{}</text>"#,
                y + 10.0,
                bar.section
            );
            y += ROW;
        }
        let met = bar.target.map(|t| bar.ratio >= t);
        let fill = match met {
            Some(true) => "#3a8f4b",
            Some(false) => "#c8553d",
            None => "#7a8ba8",
        };
        let x0 = x(10f64.powi(min_exp));
        let x1 = x(bar.ratio);
        // The value goes right of the bar and of its target mark.
        let text_x = bar.target.map_or(x1, |t| x1.max(x(t))) + 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{fill}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT - 6.0,
            y + 14.0,
            bar.label,
            y + 4.0,
            (x1 - x0).max(1.0),
            ROW - 8.0,
            text_x,
            y + 14.0,
            format_ratio(Some(bar.ratio))
        );
        if let Some(target) = bar.target {
            let tx = x(target);
            let _ = writeln!(
                s,
                r##"<line x1="{tx:.1}" y1="{:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#000" stroke-width="2" stroke-dasharray="3,2"/>"##,
                y + 1.0,
                y + ROW - 1.0
            );
        }
        y += ROW;
    }
    let _ = writeln!(
        s,
        r##"<text x="10" y="{:.1}" fill="#444">green: design target met; red: missed; grey: no target; dashed mark: the target</text>"##,
        height - 8.0
    );
    s.push_str("</svg>\n");
    s
}

fn main() -> Result<()> {
    let mut root: Option<PathBuf> = None;
    let mut svg_path = PathBuf::from("docs/benchmarks.svg");
    let mut sizes = if Sizes::quick_from_env() {
        Sizes::QUICK
    } else {
        Sizes::FULL
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--svg" => svg_path = PathBuf::from(args.next().ok_or("--svg needs a path")?),
            "--quick" => sizes = Sizes::QUICK,
            other => root = Some(PathBuf::from(other)),
        }
    }
    let root = root.unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| PathBuf::from("target"), PathBuf::from)
            .join("criterion")
    });
    let results = Results::read(&root, &sizes);
    if results.workloads.is_empty() && results.erase.is_empty() {
        return Err(format!("no engine bench results under {}", root.display()).into());
    }
    print!("{}", markdown(&results));
    std::fs::write(&svg_path, svg(&bars(&results)))?;
    eprintln!("wrote {}", svg_path.display());
    Ok(())
}
