//! The figures' arithmetic and text, as the bash bench printed them: the
//! median with its min–max spread, ratios to two places, verdicts against
//! a target, and the cells built from a measurement.

use crate::measure::{Measured, Run};

/// The median (the lower one of an even count) and "min–max" of
/// `values` (numbers as text); empty strings when there are none, no
/// spread for one.
pub fn spread_of(values: &[String]) -> (String, String) {
    let mut v: Vec<&String> = values.iter().collect();
    v.sort_by(|a, b| num(a).total_cmp(&num(b)));
    match v.len() {
        0 => (String::new(), String::new()),
        1 => (v[0].clone(), String::new()),
        n => (
            v[n.div_ceil(2) - 1].clone(),
            format!("{}–{}", v[0], v[n - 1]),
        ),
    }
}

fn num(s: &str) -> f64 {
    s.parse().unwrap_or(0.0)
}

/// A ÷ B to two places, or "-" when either is missing or B is not > 0.
pub fn ratio(a: &str, b: &str) -> String {
    if a.is_empty() || b.is_empty() || a == "-" || b == "-" {
        return "-".into();
    }
    fx(num(a), num(b))
}

pub fn fx(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

/// "meets" or "MISSES" against `limit`, "-" in smoke mode or without a value.
pub fn verdict(smoke: bool, value: &str, limit: f64) -> String {
    if smoke || value.is_empty() || value == "-" {
        return "-".into();
    }
    if num(value) <= limit {
        "meets"
    } else {
        "MISSES"
    }
    .into()
}

/// The machine's busy share in %, or "-".
pub fn cpu_pct(busy: u64, total: u64) -> String {
    if total > 0 {
        format!("{:.0}", 100.0 * busy as f64 / total as f64)
    } else {
        "-".into()
    }
}

/// The first whole number given for "KEY" in a JSON text.
pub fn json_num(json: &str, key: &str) -> Option<u64> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = json[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The measurement of REPEAT runs: the median run by time (its CPU share
/// and timeline), or FAILED with how many failed and the first failure.
pub fn median_run(runs: Vec<Run>) -> Measured {
    let reps = runs.len();
    let ok: Vec<(usize, &Run)> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status == "ok")
        .collect();
    let col = |f: &dyn Fn(&Run) -> Option<String>| {
        ok.iter().filter_map(|(_, r)| f(r)).collect::<Vec<_>>()
    };
    let times = col(&|r| Some(r.secs.clone()));
    let sents = col(&|r| r.sent_x.clone());
    // As the bash bench: user and sys to two places each, then their sum.
    let two = |v: f64| (v * 100.0).round() / 100.0;
    let cpu_s = col(&|r| Some(format!("{:.2}", two(r.cpu_user) + two(r.cpu_sys))));
    let mut m = Measured {
        runs: times.join(";"),
        sent_runs: sents.join(";"),
        ..Measured::default()
    };
    (m.sent, m.sent_spread) = spread_of(&sents);
    (m.cpu_s, m.cpu_s_spread) = spread_of(&cpu_s);
    m.cpu_user = spread_of(&col(&|r| Some(format!("{:.2}", r.cpu_user)))).0;
    m.cpu_sys = spread_of(&col(&|r| Some(format!("{:.2}", r.cpu_sys)))).0;
    m.rss = runs.last().map(|r| r.rss.clone()).unwrap_or_default();
    if let Some((k, first)) = runs.iter().enumerate().find(|(_, r)| r.status != "ok") {
        let failed = reps - ok.len();
        let many = if reps > 1 {
            format!(" {failed} of {reps} runs:")
        } else {
            String::new()
        };
        m.status = format!(
            "FAILED{many} {}",
            first.status.trim_start_matches("FAILED: ")
        );
        m.timeline = first
            .timeline
            .clone()
            .map(|t| (t, format!("{}/{reps}", k + 1)));
        return m;
    }
    let mut by_time: Vec<(usize, &Run)> = ok.clone();
    by_time.sort_by(|a, b| num(&a.1.secs).total_cmp(&num(&b.1.secs)));
    let (k, mid) = by_time[reps.div_ceil(2) - 1];
    m.status = "ok".into();
    (m.secs, m.cpu) = (mid.secs.clone(), mid.cpu.clone());
    m.timeline = mid
        .timeline
        .clone()
        .map(|t| (t, format!("{}/{reps}", k + 1)));
    if reps > 1 {
        m.spread = format!("{}–{}", by_time[0].1.secs, by_time[reps - 1].1.secs);
    }
    m
}

impl Measured {
    /// The time with its spread, or the failure (the bash `shown`).
    pub fn shown(&self) -> String {
        match (self.status.as_str(), self.spread.is_empty()) {
            ("ok", true) => self.secs.clone(),
            ("ok", false) => format!("{} ({})", self.secs, self.spread),
            (status, _) => status.to_string(),
        }
    }

    /// CPU-seconds per delivered GiB (N × S), or "-".
    pub fn cpu_gib(&self, n: u32, size: u32) -> String {
        if self.status != "ok" || self.cpu_s.is_empty() {
            return "-".into();
        }
        format!(
            "{:.2}",
            num(&self.cpu_s) * 1024.0 / (f64::from(n) * f64::from(size))
        )
    }

    /// CPU-seconds with spread and user/sys, or "-" (the bash `cpu_shown`).
    pub fn cpu_shown(&self) -> String {
        if self.status != "ok" || self.cpu_s.is_empty() {
            return "-".into();
        }
        let spread = if self.cpu_s_spread.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.cpu_s_spread)
        };
        format!(
            "{}{spread}, user {}, sys {}",
            self.cpu_s, self.cpu_user, self.cpu_sys
        )
    }

    /// bench.csv's CPU columns: seconds, user, sys, per GiB.
    pub fn csv_cpu(&self, n: u32, size: u32) -> [String; 4] {
        let gib = self.cpu_gib(n, size);
        let gib = if gib == "-" { String::new() } else { gib };
        [
            self.cpu_s.clone(),
            self.cpu_user.clone(),
            self.cpu_sys.clone(),
            gib,
        ]
    }
}
