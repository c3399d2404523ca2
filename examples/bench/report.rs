//! The output files around the sections: bench.md's title and run
//! description, bench.csv's header, the chart (examples/chart, from the
//! CSV) and bench.md's closing lines. The sections append between them.

use std::fs;
use std::io::Write;
use std::process::Command;
use std::time::Instant;

use crate::common::{CSV_HEAD, Ctx, Fatal, capture, is_executable, note};

/// Clears the last run's logs and timelines, and starts bench.md and
/// bench.csv (the header; the rows are the sections').
pub fn begin(ctx: &Ctx, repeat: &str) -> Result<(), Fatal> {
    fs::create_dir_all(&ctx.out)?;
    let _ = fs::remove_dir_all(ctx.out.join("logs"));
    for entry in fs::read_dir(&ctx.out)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("timeline-") && name.ends_with(".csv") {
            let _ = fs::remove_file(entry.path());
        }
    }
    fs::write(ctx.csv_path(), format!("{CSV_HEAD}\n"))?;
    fs::write(ctx.md_path(), title(ctx, repeat))?;
    Ok(())
}

/// bench.md's first lines: when, where, which mode and commit, the load.
fn title(ctx: &Ctx, repeat: &str) -> String {
    let mode = if ctx.smoke {
        "smoke (tiny files, no targets)".to_string()
    } else {
        format!("full, swarm runs repeated {repeat}× (median, min–max)")
    };
    let root = ctx.root.to_string_lossy();
    let commit = capture(
        "git",
        &["-C", &root, "rev-parse", "--short", "HEAD"],
        "unknown",
    );
    let clean = Command::new("git")
        .args(["-C", &root, "diff", "--quiet", "HEAD", "--", "src"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let modified = if clean { "" } else { " (src modified)" };
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split(' ').take(3).collect();
    format!(
        "# swarm benchmark\n\n\
         {}, {} cores, Linux {}, mode: {mode},\n\
         commit {commit}{modified}.\n\
         Times are wall seconds from the owner's (sender's) start until every peer has exited\n\
         and its copy matched the input. CPU is the share of all cores busy during the run\n\
         (anything else running counts too; load average at the start: {}).\n",
        capture("date", &["-u", "+%Y-%m-%d %H:%M UTC"], "?"),
        capture("nproc", &[], "?"),
        kernel.trim(),
        load.join(" "),
    )
}

/// Draws bench.svg from bench.csv, writes bench.md's last lines and
/// prints bench.md.
pub fn finish(ctx: &Ctx, started: Instant) -> Result<(), Fatal> {
    let chart = ctx.build.join("release/examples/chart");
    if is_executable(&chart) {
        let drawn = Command::new(&chart)
            .arg(ctx.csv_path())
            .arg(ctx.out.join("bench.svg"))
            .status()
            .is_ok_and(|s| s.success());
        if !drawn {
            note("the chart could not be drawn");
        }
    } else {
        note(&format!("no chart: {} is missing", chart.display()));
    }
    ctx.md(&format!(
        "\nTotal bench time: {} s. CSV: bench.csv; chart: bench.svg, with each\n\
         peer's chunks held over time below it (timeline-*.csv: the median run of each netbed\n\
         case and wiring and of loopback, sampled from the peers' summary.txt every 0.25 s).\n",
        started.elapsed().as_secs()
    ))?;
    println!();
    print!("{}", fs::read_to_string(ctx.md_path())?);
    Ok(())
}

/// One bench.csv row: the first 23 columns from `fields` (section, case,
/// n, rate, size, tool, status, seconds, runs, cpu %, ideal, ratio, s per
/// GiB, peak RSS, owner sent ÷ S, its runs, ...; missing ones empty),
/// then the CPU columns, the timeline's and the versions section's.
pub struct Row<'a> {
    pub fields: &'a [&'a str],
    pub cpu: Option<[String; 4]>,
    pub timeline: Option<(String, String)>,
}

impl Row<'_> {
    pub fn write(&self, ctx: &Ctx) -> Result<(), Fatal> {
        let mut cols: Vec<String> = self.fields.iter().map(|f| f.to_string()).collect();
        if let Some(status) = cols.get_mut(6) {
            *status = status.replace(',', ";");
        }
        cols.resize(23, String::new());
        cols.extend(self.cpu.clone().unwrap_or_default());
        let (file, run) = self.timeline.clone().unwrap_or_default();
        cols.extend([file, run]);
        cols.resize(cols.len() + 6, String::new());
        let mut f = fs::OpenOptions::new().append(true).open(ctx.csv_path())?;
        writeln!(f, "{}", cols.join(","))?;
        Ok(())
    }
}

/// Keeps a measurement's timeline as BENCH_OUT/timeline-NAME.csv; its
/// CSV columns (file, "run/runs"), or none (only noted: the chart then
/// leaves its panel out).
pub fn keep_timeline(
    ctx: &Ctx,
    m: &crate::measure::Measured,
    name: &str,
) -> Option<(String, String)> {
    let file = format!("timeline-{name}.csv");
    let kept = m
        .timeline
        .as_ref()
        .filter(|(p, _)| fs::metadata(p).is_ok_and(|md| md.len() > 0));
    match kept.map(|(p, run)| (fs::copy(p, ctx.out.join(&file)), run)) {
        Some((Ok(_), run)) => Some((file, run.clone())),
        _ => {
            note(&format!("no timeline for {name}"));
            None
        }
    }
}
