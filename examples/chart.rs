//! Draws the benchmark chart: time ÷ (S/B) against N, as an SVG, and
//! below it one panel per recorded per-peer timeline.
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
//! Failed runs have no ratio and are left out.
//!
//! Then, for every row that names a `timeline` file (found next to the
//! CSV; columns `seconds,peer,held,total`), a panel: one line per peer,
//! the share of all chunks it held against seconds since the owner's
//! start, with S/B (when the row has one) and the run's end as vertical
//! lines and the tail between them shaded. A timeline that cannot be read
//! gets a panel saying so. No dependencies: the SVG is written by hand.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 460.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 230.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
/// The heading above the timeline panels, and each panel's height.
const TIMELINE_HEAD: f64 = 36.0;
const PANEL: f64 = 250.0;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [csv, svg] = args.as_slice() else {
        eprintln!("chart: usage: chart BENCH.CSV OUT.SVG");
        return ExitCode::FAILURE;
    };
    // Timeline files are named relative to the CSV's folder.
    let dir = Path::new(csv).parent().unwrap_or(Path::new("."));
    let result = std::fs::read_to_string(csv)
        .map_err(|e| format!("cannot read {csv}: {e}"))
        .and_then(|text| Ok(draw(&points(&text)?, &timelines(&text, dir)?)))
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

/// The CSV's header, and a column's index by name.
fn header(text: &str) -> Result<Vec<&str>, String> {
    Ok(text
        .lines()
        .next()
        .ok_or("the CSV is empty")?
        .split(',')
        .collect())
}
fn column(header: &[&str], name: &str) -> Result<usize, String> {
    header
        .iter()
        .position(|h| *h == name)
        .ok_or_else(|| format!("the CSV has no '{name}' column"))
}

/// The successful netbed rows of the CSV.
fn points(text: &str) -> Result<Vec<Point>, String> {
    let header = header(text)?;
    let lines = text.lines().skip(1);
    let col = |name: &str| column(&header, name);
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

/// One recorded per-peer timeline and what its CSV row says about the run.
struct Timeline {
    section: String,
    case: String,
    tool: String,
    n: String,
    rate: String,
    size: String,
    status: String,
    /// Which run was recorded, "K/RUNS".
    run: String,
    /// S/B, when the row has one (the netbed's).
    ideal: Option<f64>,
    /// The recorded run's wall time, when it went well.
    seconds: Option<f64>,
    /// Per peer, (seconds since the owner's start, share of chunks held);
    /// or why there is none.
    peers: Result<BTreeMap<u32, Vec<(f64, f64)>>, String>,
}

/// The timelines the CSV's rows name, read from `dir`. A CSV without a
/// `timeline` column (an older one) has none.
fn timelines(text: &str, dir: &Path) -> Result<Vec<Timeline>, String> {
    let header = header(text)?;
    let Ok(timeline) = column(&header, "timeline") else {
        return Ok(Vec::new());
    };
    let col = |name: &str| column(&header, name);
    let (section, case, n, rate, size, tool, status, seconds, ideal, run) = (
        col("section")?,
        col("case")?,
        col("n")?,
        col("rate_mbit")?,
        col("size_mib")?,
        col("tool")?,
        col("status")?,
        col("seconds")?,
        col("ideal_seconds")?,
        col("timeline_run")?,
    );
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let get = |i: usize| f.get(i).copied().unwrap_or("").to_string();
        let file = get(timeline);
        if file.is_empty() {
            continue;
        }
        let status = get(status);
        // The file name is the bench's own, but do not wander off.
        let peers = if file.contains('/') {
            Err(format!("'{file}' is not a file name"))
        } else {
            read_timeline(&dir.join(&file))
        };
        if let Err(e) = &peers {
            eprintln!("chart: timeline {file}: {e}");
        }
        out.push(Timeline {
            section: get(section),
            case: get(case),
            tool: get(tool),
            n: get(n),
            rate: get(rate),
            size: get(size),
            run: get(run),
            ideal: get(ideal).parse().ok().filter(|&v: &f64| v > 0.0),
            seconds: get(seconds)
                .parse()
                .ok()
                .filter(|&v: &f64| v > 0.0 && status == "ok"),
            status,
            peers,
        });
    }
    Ok(out)
}

/// A timeline file: `seconds,peer,held,total` rows, in any order.
fn read_timeline(path: &Path) -> Result<BTreeMap<u32, Vec<(f64, f64)>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let header = header(&text)?;
    let col = |name: &str| column(&header, name);
    let (seconds, peer, held, total) = (col("seconds")?, col("peer")?, col("held")?, col("total")?);
    let mut peers: BTreeMap<u32, Vec<(f64, f64)>> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let get = |i: usize| f.get(i).copied().unwrap_or("");
        if let (Ok(t), Ok(p), Ok(h), Ok(c)) = (
            get(seconds).parse::<f64>(),
            get(peer).parse::<u32>(),
            get(held).parse::<f64>(),
            get(total).parse::<f64>(),
        ) && t.is_finite()
            && c > 0.0
        {
            peers
                .entry(p)
                .or_default()
                .push((t, (h / c).clamp(0.0, 1.0)));
        }
    }
    if peers.is_empty() {
        return Err("it holds no samples".into());
    }
    for line in peers.values_mut() {
        line.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Ok(peers)
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

fn draw(pts: &[Point], tls: &[Timeline]) -> String {
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
    let height = if tls.is_empty() {
        HEIGHT
    } else {
        HEIGHT + TIMELINE_HEAD + PANEL * tls.len() as f64
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{WIDTH}" height="{height}" fill="white"/><text x="{}" y="22" font-size="15" text-anchor="middle">Time to deliver the file to N hosts, ÷ S/B (netbed)</text>"#,
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
    if !tls.is_empty() {
        let _ = writeln!(
            s,
            r##"<line x1="10" y1="{HEIGHT}" x2="{}" y2="{HEIGHT}" stroke="#bbb"/><text x="{}" y="{}" font-size="15" text-anchor="middle">Chunks held by each peer over time, one run per case</text>"##,
            WIDTH - 10.0,
            (LEFT + WIDTH - RIGHT) / 2.0,
            HEIGHT + 24.0
        );
    }
    for (i, tl) in tls.iter().enumerate() {
        panel(&mut s, tl, HEIGHT + TIMELINE_HEAD + PANEL * i as f64);
    }
    s.push_str("</svg>\n");
    s
}

/// One timeline's panel, `top` pixels down: a line per peer, the share of
/// all chunks it held against time, S/B and the run's end marked.
fn panel(s: &mut String, tl: &Timeline, top: f64) {
    let wiring = if tl.tool.contains("owner-wired") {
        "owner-wired"
    } else {
        "hand-wired"
    };
    let link = if tl.rate.is_empty() {
        "no rate limit".to_string()
    } else {
        format!("{} Mbit/s", tl.rate)
    };
    let (k, runs) = tl.run.split_once('/').unwrap_or((&tl.run, ""));
    let which = match (tl.status == "ok", runs) {
        (true, "1") => "one run".to_string(),
        (true, _) => format!("median of {runs} runs (run {k})"),
        (false, _) => format!("run {k} of {runs}, which FAILED"),
    };
    let _ = writeln!(
        s,
        r#"<text x="20" y="{:.1}" font-size="13" font-weight="bold">{}</text>"#,
        top + 18.0,
        esc(&format!(
            "{} {}: N={}, {link}, S = {} MiB, {wiring}; {which}",
            tl.section, tl.case, tl.n, tl.size
        ))
    );
    let note = match (tl.ideal, tl.seconds) {
        (Some(ideal), Some(done)) => format!(
            "dashed: S/B = {ideal:.2} s; solid: the last peer exited at {done:.2} s = {:.2} × S/B; shaded: the tail after S/B",
            done / ideal
        ),
        (Some(ideal), None) => format!("dashed: S/B = {ideal:.2} s; {}", tl.status),
        (None, Some(done)) => {
            format!("solid: the last peer exited at {done:.2} s (no S/B without a rate limit)")
        }
        (None, None) => tl.status.clone(),
    };
    let _ = writeln!(
        s,
        r##"<text x="20" y="{:.1}" font-size="11" fill="#555">{}</text>"##,
        top + 34.0,
        esc(&note)
    );

    // The plot: seconds since the owner's start across, share held up.
    let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, top + PANEL - 42.0, top + 52.0);
    let peers = match &tl.peers {
        Ok(peers) => peers,
        Err(e) => {
            let _ = writeln!(
                s,
                r##"<rect x="{x0}" y="{y1:.1}" width="{}" height="{:.1}" fill="none" stroke="#333"/><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#a00">{}</text>"##,
                x1 - x0,
                y0 - y1,
                (x0 + x1) / 2.0,
                (y0 + y1) / 2.0,
                esc(&format!("no timeline: {e}"))
            );
            return;
        }
    };
    let last = peers
        .values()
        .filter_map(|line| line.last().map(|p| p.0))
        .fold(0.0, f64::max);
    let t_max = [Some(last), tl.ideal, tl.seconds]
        .into_iter()
        .flatten()
        .fold(0.1, f64::max);
    let step = nice_step(t_max / 8.0);
    let t_hi = (t_max / step).ceil() * step;
    let x = |t: f64| x0 + t / t_hi * (x1 - x0);
    // A little room above 1, so lines that reach it stay off the frame.
    let y = |share: f64| y0 - share / 1.05 * (y0 - y1);

    // The tail after S/B, under everything else.
    if let (Some(ideal), Some(done)) = (tl.ideal, tl.seconds)
        && done > ideal
    {
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{y1:.1}" width="{:.1}" height="{:.1}" fill="#f6dcdc"/>"##,
            x(ideal),
            x(done) - x(ideal),
            y0 - y1
        );
    }
    let digits = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    let mut i = 0.0;
    while i * step <= t_hi + step / 1e6 {
        let t = i * step;
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{y0:.1}" x2="{0:.1}" y2="{y1:.1}" stroke="#eee"/><text x="{0:.1}" y="{1:.1}" text-anchor="middle">{t:.digits$}</text>"##,
            x(t),
            y0 + 16.0
        );
        i += 1.0;
    }
    for share in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{0:.1}" x2="{x1}" y2="{0:.1}" stroke="#ddd"/><text x="{1}" y="{2:.1}" text-anchor="end">{share}</text>"##,
            y(share),
            x0 - 6.0,
            y(share) + 4.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{x0}" y="{y1:.1}" width="{}" height="{:.1}" fill="none" stroke="#333"/><text x="{}" y="{:.1}" text-anchor="middle">seconds since the owner's start</text><text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">held ÷ all chunks</text>"##,
        x1 - x0,
        y0 - y1,
        (x0 + x1) / 2.0,
        y0 + 32.0,
        (y0 + y1) / 2.0
    );
    if let Some(ideal) = tl.ideal {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{y0:.1}" x2="{0:.1}" y2="{y1:.1}" stroke="#444" stroke-width="1.5" stroke-dasharray="6 4"/><text x="{1:.1}" y="{2:.1}" text-anchor="end" fill="#444">S/B</text>"##,
            x(ideal),
            x(ideal) - 3.0,
            y1 + 12.0
        );
    }
    if let Some(done) = tl.seconds {
        // Right of the line when there is room, else left of it, a row
        // below S/B's tag.
        let (tx, anchor) = if x(done) + 36.0 < x1 {
            (x(done) + 3.0, "start")
        } else {
            (x(done) - 3.0, "end")
        };
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{y0:.1}" x2="{0:.1}" y2="{y1:.1}" stroke="#a00" stroke-width="1.5"/><text x="{tx:.1}" y="{1:.1}" text-anchor="{anchor}" fill="#a00">done</text>"##,
            x(done),
            y1 + 26.0
        );
    }

    // A line per peer, and the legend: columns of ten at the right.
    let n = peers.len();
    for (j, (peer, line)) in peers.iter().enumerate() {
        let color = peer_color(j, n);
        let coords: Vec<String> = line
            .iter()
            .map(|&(t, share)| format!("{:.1},{:.1}", x(t), y(share)))
            .collect();
        let when = match line.iter().find(|p| p.1 >= 1.0) {
            Some(p) => format!("every chunk at {:.2} s", p.0),
            None => format!(
                "{:.0} % at the end",
                100.0 * line.last().map_or(0.0, |p| p.1)
            ),
        };
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.5" stroke-opacity="0.9"><title>p{peer}: {when}</title></polyline>"#,
            coords.join(" ")
        );
        // More than forty peers: only the first and the last are named.
        if n > 40 && j != 0 && j != n - 1 {
            continue;
        }
        let slot = if n > 40 && j == n - 1 { 1 } else { j };
        let lx = WIDTH - RIGHT + 16.0 + 52.0 * (slot / 10) as f64;
        let ly = y1 + 4.0 + 15.0 * (slot % 10) as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}" font-size="11">p{peer}</text>"#,
            lx + 16.0,
            lx + 20.0,
            ly + 4.0
        );
    }
}

/// A step of 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    let r = raw / mag;
    mag * if r <= 1.0 {
        1.0
    } else if r <= 2.0 {
        2.0
    } else if r <= 5.0 {
        5.0
    } else {
        10.0
    }
}

/// Peer `j` of `n`'s colour: hues from blue to red in peer order, so ring
/// neighbours look alike.
fn peer_color(j: usize, n: usize) -> String {
    let h = if n > 1 {
        230.0 * (1.0 - j as f64 / (n - 1) as f64)
    } else {
        230.0
    };
    // HSL to RGB at saturation 0.75, lightness 0.42.
    let (sat, light) = (0.75, 0.42);
    let c = (1.0 - (2.0 * light - 1.0f64).abs()) * sat;
    let hp = h / 60.0;
    let xc = c * (1.0 - (hp % 2.0 - 1.0).abs());
    let (r, g, b) = match hp as u32 {
        0 => (c, xc, 0.0),
        1 => (xc, c, 0.0),
        2 => (0.0, c, xc),
        3 => (0.0, xc, c),
        _ => (xc, 0.0, c),
    };
    let m = light - c / 2.0;
    let byte = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    format!("#{:02x}{:02x}{:02x}", byte(r), byte(g), byte(b))
}

/// Text made safe for SVG.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
