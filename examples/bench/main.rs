//! The benchmark runner behind `scripts/bench.sh`: swarm against plain
//! unicast, side by side, in nine sections (netbed, repair, loopback,
//! scaling, memory, versions, sources, pipeline, many). scripts/bench.sh
//! documents every section, flag and variable; it builds this example and
//! runs it:
//!
//! ```text
//! cargo run --release --example bench -- [--smoke]
//! ```
//!
//! One module per ported section (`loopback`, `scaling`, `memory`,
//! `pipeline`, `many`); the sections not ported yet (netbed, repair,
//! versions, sources) run in scripts/bench_legacy.sh (`legacy`), which
//! appends to the same bench.md and bench.csv. Shared: `common` (paths,
//! options, scripts, lock), `procs` (starting, waiting for and stopping
//! processes; CPU counters), `measure` (one case's runs and their median),
//! `timeline`, `stats` (medians, spreads, ratios, verdicts) and `report`
//! (the output files' header, CSV rows, chart and footer).
//! The network namespaces and shaping stay in scripts/netbed.sh.

mod common;
mod legacy;
mod loopback;
mod many;
mod measure;
mod memory;
mod pipeline;
mod procs;
mod report;
mod scaling;
mod stats;
mod timeline;

use std::path::PathBuf;
use std::time::Instant;

use common::{Ctx, Fatal, SECTIONS, WorkDir, check_interrupt, note, on_path};
use measure::Bench;

fn main() {
    if let Err(e) = run() {
        if !e.msg.is_empty() {
            note(&e.msg);
        }
        std::process::exit(e.code);
    }
}

fn run() -> Result<(), Fatal> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let via_wrapper = std::env::var_os("BENCH_ROOT");
    let root = via_wrapper
        .clone()
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print_help(&root);
        return Ok(());
    }
    common::trap_signals();
    let ctx = context(root, &args)?;
    // Every flag and variable is checked before anything runs.
    legacy::check(&ctx, &args)?;
    if via_wrapper.is_none() {
        build(&ctx)?;
    }
    let _lock = common::lock()?;
    let repeat = var_or("REPEAT", if ctx.smoke { "1" } else { "3" });
    report::begin(&ctx, &repeat)?;
    let started = Instant::now();
    let (_, run) = legacy::run(&ctx, &args, &legacy::BEFORE, 0)?;
    check_interrupt()?;
    let repeat_n: u32 = repeat.parse().unwrap_or(1);
    let mut bench = Bench::new(&ctx, run);
    if ctx.wants("loopback") {
        loopback::run(&mut bench, repeat_n)?;
    }
    if ctx.wants("scaling") {
        scaling::run(&mut bench, repeat_n)?;
    }
    if ctx.wants("memory") {
        memory::run(&mut bench)?;
    }
    let (versions_failed, _) = legacy::run(&ctx, &args, &legacy::AFTER, bench.run)?;
    check_interrupt()?;
    let pipeline_ok = !ctx.wants("pipeline") || pipeline::run(&ctx)?;
    check_interrupt()?;
    if ctx.wants("many") {
        many::run(&ctx)?;
    }
    report::finish(&ctx, started)?;
    // Smoke mode (CI) asserts that every peer took up every version
    // intact, and that the one-peer pipeline ran.
    if ctx.smoke && versions_failed {
        return Err(Fatal::new(
            "versions: a series failed (see the table and bench-out/logs/)",
        ));
    }
    if ctx.smoke && !pipeline_ok {
        return Err(Fatal::new("pipeline: the one-peer case failed"));
    }
    Ok(())
}

/// The flags, variables and paths every section reads.
fn context(root: PathBuf, args: &[String]) -> Result<Ctx, Fatal> {
    // This program is BUILD/release/examples/bench.
    let exe = std::env::current_exe()?;
    let build = exe
        .ancestors()
        .nth(3)
        .ok_or_else(|| Fatal::new("cannot tell the build folder from this program's path"))?
        .to_path_buf();
    let smoke = args.iter().any(|a| a == "--smoke") || var_or("SMOKE", "0") == "1";
    let out = match std::env::var("BENCH_OUT") {
        Ok(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => root.join("bench-out"),
    };
    let only = var_or("ONLY", &SECTIONS.join(","));
    let bed_why = if unsafe_euid() != 0 {
        Some("needs root")
    } else if !on_path("ip") || !on_path("tc") {
        Some("needs iproute2 (ip, tc)")
    } else {
        None
    };
    Ok(Ctx {
        root,
        build,
        out,
        smoke,
        // Checked by legacy::check (1024 to 60000) before it is used.
        base_port: var_or("BASE_PORT", "31000").parse().unwrap_or(31000),
        only: only.split(',').map(str::to_string).collect(),
        bed_why,
        work: WorkDir::new()?,
    })
}

/// Builds swarm and every example (release), as scripts/bench.sh does
/// before it starts this runner: `cargo run --example bench` alone builds
/// neither swarm nor the examples the sections run.
fn build(ctx: &Ctx) -> Result<(), Fatal> {
    println!("bench: building swarm and the examples (release)...");
    let built = std::process::Command::new("cargo")
        .args([
            "build",
            "--release",
            "--quiet",
            "--bins",
            "--examples",
            "--manifest-path",
        ])
        .arg(ctx.root.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &ctx.build)
        .status()
        .is_ok_and(|s| s.success());
    if built {
        Ok(())
    } else {
        Err(Fatal::new("cargo build failed"))
    }
}

fn unsafe_euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn var_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// scripts/bench.sh's first lines: what it runs and how long it takes.
fn print_help(root: &std::path::Path) {
    let text = std::fs::read_to_string(root.join("scripts/bench.sh")).unwrap_or_default();
    for line in text.lines().skip(1).take(5) {
        let line = line.strip_prefix('#').unwrap_or(line);
        println!("{}", line.strip_prefix(' ').unwrap_or(line));
    }
}
