//! Draws the benchmark chart: time ÷ (S/B) against N, as an SVG.
//!
//! ```text
//! cargo run --release --example chart -- bench-out/bench.csv bench-out/bench.svg
//! ```
//!
//! Reads the CSV that `scripts/bench.sh` writes and plots its `netbed`
//! rows: one line per tool (swarm, unicast and the one-stream floor) and
//! link rate, plus the two ideals, S/B for swarm (the owner's link carries
//! the file once) and N × S/B for unicast (it carries the file N times). Both axes are logarithmic, so unicast's
//! ideal is a straight diagonal and a flat swarm line means it scales.
//! Failed runs have no ratio and are left out. No dependencies: the SVG is
//! written by hand.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 460.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 230.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [csv, svg] = args.as_slice() else {
        eprintln!("chart: usage: chart BENCH.CSV OUT.SVG");
        return ExitCode::FAILURE;
    };
    let result = std::fs::read_to_string(csv)
        .map_err(|e| format!("cannot read {csv}: {e}"))
        .and_then(|text| points(&text))
        .map(|pts| draw(&pts))
        .and_then(|doc| std::fs::write(svg, doc).map_err(|e| format!("cannot write {svg}: {e}")));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chart: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One measured point: which series it belongs to, N and time ÷ (S/B).
struct Point {
    tool: String,
    rate: u32,
    n: u32,
    ratio: f64,
}

/// The successful netbed rows of the CSV.
fn points(text: &str) -> Result<Vec<Point>, String> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or("the CSV is empty")?.split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("the CSV has no '{name}' column"))
    };
    let (section, n, rate, tool, status, ratio) = (
        col("section")?,
        col("n")?,
        col("rate_mbit")?,
        col("tool")?,
        col("status")?,
        col("ratio")?,
    );
    let mut pts = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let get = |i: usize| f.get(i).copied().unwrap_or("");
        if get(section) != "netbed" || get(status) != "ok" {
            continue;
        }
        // A row that does not parse is skipped rather than fatal: the
        // table is the result, the chart only illustrates it.
        if let (Ok(n), Ok(rate), Ok(ratio)) =
            (get(n).parse(), get(rate).parse(), get(ratio).parse::<f64>())
            && ratio > 0.0
        {
            pts.push(Point {
                tool: get(tool).to_string(),
                rate,
                n,
                ratio,
            });
        }
    }
    Ok(pts)
}

/// Log-log axes mapping N and ratio to pixels.
struct Axes {
    x_lo: f64,
    x_hi: f64,
    y_lo: f64,
    y_hi: f64,
}

impl Axes {
    fn x(&self, n: f64) -> f64 {
        LEFT + (n / self.x_lo).ln() / (self.x_hi / self.x_lo).ln() * (WIDTH - LEFT - RIGHT)
    }
    fn y(&self, r: f64) -> f64 {
        HEIGHT
            - BOTTOM
            - (r / self.y_lo).ln() / (self.y_hi / self.y_lo).ln() * (HEIGHT - TOP - BOTTOM)
    }
}

fn draw(pts: &[Point]) -> String {
    let mut ns: Vec<u32> = pts.iter().map(|p| p.n).collect();
    ns.sort_unstable();
    ns.dedup();
    let (n_min, n_max) = match (ns.first(), ns.last()) {
        (Some(&a), Some(&b)) => (f64::from(a), f64::from(b)),
        _ => (2.0, 20.0),
    };
    let r_max = pts.iter().map(|p| p.ratio).fold(n_max, f64::max).max(2.0);
    let ax = Axes {
        x_lo: n_min / 1.6,
        x_hi: n_max * 1.6,
        y_lo: 0.8,
        // The next power of two, so the top tick is labelled.
        y_hi: 2f64.powf(r_max.log2().ceil()) * 1.1,
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/><text x="{}" y="22" font-size="15" text-anchor="middle">Time to deliver the file to N hosts, ÷ S/B (netbed)</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0
    );
    // Grid and ticks.
    let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, ax.y(ax.y_lo), ax.y(ax.y_hi));
    let mut tick = 1.0;
    while tick <= ax.y_hi {
        let y = ax.y(tick);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{tick}</text>"##,
            x0 - 6.0,
            y + 4.0
        );
        tick *= 2.0;
    }
    for &n in &ns {
        let x = ax.x(f64::from(n));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{n}</text>"##,
            y0 + 18.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{x0}" y="{y1:.1}" width="{}" height="{:.1}" fill="none" stroke="#333"/>"##,
        x1 - x0,
        y0 - y1
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">N (peers), log scale</text><text transform="translate(18 {}) rotate(-90)" text-anchor="middle">time ÷ S/B, log scale</text>"#,
        (x0 + x1) / 2.0,
        HEIGHT - 15.0,
        (y0 + y1) / 2.0
    );

    // Series: the ideals first, then one line per tool and rate.
    let mut legend: Vec<(String, String, &str)> = Vec::new();
    let (a, b) = (ax.x_lo, ax.x_hi);
    let _ = writeln!(
        s,
        r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#666" stroke-dasharray="6 4"/>"##,
        ax.x(a),
        ax.y(1.0),
        ax.x(b),
        ax.y(1.0)
    );
    legend.push(("ideal for swarm: S/B".into(), "#666".into(), "6 4"));
    // N × S/B, clipped to the plot.
    let top_n = b.min(ax.y_hi);
    let _ = writeln!(
        s,
        r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#c77" stroke-dasharray="2 3"/>"##,
        ax.x(a.max(1.0)),
        ax.y(a.max(1.0)),
        ax.x(top_n),
        ax.y(top_n)
    );
    legend.push(("ideal for unicast: N × S/B".into(), "#c77".into(), "2 3"));

    let mut series: BTreeMap<(String, u32), Vec<(u32, f64)>> = BTreeMap::new();
    for p in pts {
        series
            .entry((p.tool.clone(), p.rate))
            .or_default()
            .push((p.n, p.ratio));
    }
    for (i, ((tool, rate), mut line)) in series.into_iter().enumerate() {
        line.sort_by_key(|&(n, _)| n);
        let color = match (tool.as_str(), i % 2) {
            ("swarm", 0) => "#1f6fd1",
            ("swarm", _) => "#12a0a0",
            ("unicast", 0) => "#d1521f",
            ("unicast", _) => "#a0461a",
            (_, 0) => "#3a9a3a",
            _ => "#7a9a2a",
        };
        let dash = if rate >= 100 { "none" } else { "8 3" };
        let coords: Vec<String> = line
            .iter()
            .map(|&(n, r)| format!("{:.1},{:.1}", ax.x(f64::from(n)), ax.y(r)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>"#,
            coords.join(" ")
        );
        for (&(_, r), c) in line.iter().zip(&coords) {
            let (cx, cy) = c.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                s,
                r#"<circle cx="{cx}" cy="{cy}" r="4" fill="{color}"><title>{tool} at {rate} Mbit/s: {r:.2}</title></circle>"#
            );
        }
        let label = if tool == "floor" {
            "floor (1 stream)"
        } else {
            &tool
        };
        legend.push((format!("{label}, {rate} Mbit/s"), color.into(), dash));
    }
    for (i, (label, color, dash)) in legend.iter().enumerate() {
        let y = TOP + 10.0 + 22.0 * i as f64;
        let x = WIDTH - RIGHT + 16.0;
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{}" y="{}">{label}</text>"#,
            x + 28.0,
            x + 34.0,
            y + 4.0
        );
    }
    if pts.is_empty() {
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#a00">no netbed results (needs root)</text>"##,
            (x0 + x1) / 2.0,
            (y0 + y1) / 2.0
        );
    }
    s.push_str("</svg>\n");
    s
}
