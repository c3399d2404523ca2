//! The sections not yet ported (1 netbed, 2 repair, 6 versions, 7
//! sources), handed to scripts/bench_legacy.sh in its part mode, in two
//! parts around the runner's 3-5: it appends its tables to bench.md and
//! its rows to bench.csv after the header the runner wrote, numbers its
//! runs on from the runner's, and leaves the rest to the runner.

use std::process::Command;

use crate::common::{Ctx, Fatal};

/// The sections scripts/bench_legacy.sh still runs: before the runner's
/// loopback, scaling and memory, and after them.
pub const BEFORE: [&str; 2] = ["netbed", "repair"];
pub const AFTER: [&str; 2] = ["versions", "sources"];

/// bench_legacy.sh's exit status when a smoke run's versions series
/// failed: the bench goes on and fails at the end, as before.
const VERSIONS_FAILED: i32 = 3;

fn command(ctx: &Ctx, args: &[String]) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(ctx.script("bench_legacy.sh"))
        .args(args)
        .env("BENCH_OUT", &ctx.out)
        .env("CARGO_TARGET_DIR", &ctx.build)
        .env("BENCH_PART", "1");
    cmd
}

/// Checks every flag and variable the bash bench checks (WIRING,
/// BED_CASES, SOURCES_K, ...) before anything runs.
pub fn check(ctx: &Ctx, args: &[String]) -> Result<(), Fatal> {
    let status = command(ctx, args).env("BENCH_CHECK", "1").status()?;
    match status.code() {
        Some(0) => Ok(()),
        code => Err(Fatal {
            msg: String::new(),
            code: code.unwrap_or(1),
        }),
    }
}

/// Runs the wanted ones of `sections`, numbering runs on from `run`;
/// whether a smoke run's versions series failed (reported at the end),
/// and the run count after them.
pub fn run(ctx: &Ctx, args: &[String], sections: &[&str], run: u32) -> Result<(bool, u32), Fatal> {
    let wanted: Vec<&str> = sections.iter().copied().filter(|s| ctx.wants(s)).collect();
    if wanted.is_empty() {
        return Ok((false, run));
    }
    let count_file = ctx.work.0.join("legacy-runs");
    let status = command(ctx, args)
        .env("ONLY", wanted.join(","))
        .env("BENCH_RUN0", run.to_string())
        .env("BENCH_RUN_FILE", &count_file)
        .status()?;
    let versions_failed = match status.code() {
        Some(0) => false,
        Some(VERSIONS_FAILED) => true,
        code => {
            return Err(Fatal {
                msg: String::new(),
                code: code.unwrap_or(130),
            });
        }
    };
    let text = std::fs::read_to_string(&count_file).unwrap_or_default();
    Ok((versions_failed, text.trim().parse().unwrap_or(run)))
}
