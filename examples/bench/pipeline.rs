//! Section 8, one peer's pipeline: scripts/bench_pipeline.sh measures an
//! owner and one peer on tmpfs and prints its own tables, which go into
//! bench.md as they are.

use std::fs;
use std::process::Command;

use crate::common::{Ctx, Fatal, note, run_to};

/// Runs the section; `Ok(false)` when the script failed (the table says
/// FAILED; a smoke run then fails at the end).
pub fn run(ctx: &Ctx) -> Result<bool, Fatal> {
    note("pipeline: one peer on tmpfs (scripts/bench_pipeline.sh)");
    ctx.md("\n## 8. one peer's pipeline: owner and one peer on tmpfs\n\n")?;
    let table = ctx.work.0.join("pipeline.md");
    let mut cmd = Command::new(ctx.script("bench_pipeline.sh"));
    cmd.env("SMOKE", if ctx.smoke { "1" } else { "0" })
        // Below Linux's ephemeral ports (32768 on): a port there may be
        // some connection's local end, which a listener cannot take.
        .env(
            "BASE_PORT",
            u32::from(ctx.base_port).saturating_sub(8000).to_string(),
        )
        .env("CARGO_TARGET_DIR", &ctx.build);
    if run_to(&mut cmd, Some(&table), false)?.success() {
        ctx.md(&fs::read_to_string(&table)?)?;
        Ok(true)
    } else {
        ctx.md("FAILED (scripts/bench_pipeline.sh; see its error above)\n")?;
        Ok(false)
    }
}
