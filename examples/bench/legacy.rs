//! The sections not yet ported (1-7: netbed, repair, loopback, scaling,
//! memory, versions, sources), handed to scripts/bench_legacy.sh in its
//! part mode: it appends its tables to bench.md and its rows to bench.csv
//! after the header the runner wrote, and leaves the rest to the runner.

use std::process::Command;

use crate::common::{Ctx, Fatal};

/// The sections scripts/bench_legacy.sh still runs.
pub const SECTIONS: [&str; 7] = [
    "netbed", "repair", "loopback", "scaling", "memory", "versions", "sources",
];

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

/// Runs the wanted legacy sections; `Ok(true)` when a smoke run's
/// versions series failed (reported at the end).
pub fn run(ctx: &Ctx, args: &[String]) -> Result<bool, Fatal> {
    let wanted: Vec<&str> = SECTIONS.into_iter().filter(|s| ctx.wants(s)).collect();
    if wanted.is_empty() {
        return Ok(false);
    }
    let status = command(ctx, args).env("ONLY", wanted.join(",")).status()?;
    match status.code() {
        Some(0) => Ok(false),
        Some(VERSIONS_FAILED) => Ok(true),
        code => Err(Fatal {
            msg: String::new(),
            code: code.unwrap_or(130),
        }),
    }
}
