//! Section 9, many peers as processes on this machine
//! (scripts/run_many_peers.sh): on loopback, then (with root) with the
//! owner's uplink shaped in a namespace of its own. One table row each,
//! the script's own summary line.

use std::fs;
use std::process::Command;

use crate::common::{Ctx, Fatal, capture, check_interrupt, lines_after, run_to};

/// The section's size: peers and the owner's rate when shaped (MANY_N,
/// MANY_RATE_MBIT), smaller in smoke mode.
struct Case {
    n: String,
    rate: String,
}

impl Case {
    fn of(ctx: &Ctx) -> Self {
        let (n, rate) = if ctx.smoke {
            ("20", "10")
        } else {
            ("1000", "1")
        };
        Case {
            n: std::env::var("MANY_N").unwrap_or_else(|_| n.into()),
            rate: std::env::var("MANY_RATE_MBIT").unwrap_or_else(|_| rate.into()),
        }
    }
}

pub fn run(ctx: &Ctx) -> Result<(), Fatal> {
    let case = Case::of(ctx);
    let target = if ctx.smoke {
        ""
    } else {
        "Target: the owner sends ≤ 1.3 × the file; every copy verified.\n"
    };
    ctx.md(&format!(
        "\n## 9. many peers on this machine (scripts/run_many_peers.sh {}), 4 MiB, owner-wired\n\n\
         Every peer a process of its own, all on this machine's {} cores: a test of the wiring and of\n\
         what the owner sends, not of speed. shaped: the owner alone behind a token bucket at\n\
         {} Mbit/s (a namespace of its own), the peers in another; S/B at that rate.\n\
         {target}\n| case | summary |\n|---|---|\n",
        case.n,
        capture("nproc", &[], "?"),
        case.rate
    ))?;
    for shaped in [false, true] {
        if let (true, Some(why)) = (shaped, ctx.bed_why) {
            ctx.md(&format!("| shaped | SKIPPED ({why}) |\n"))?;
            continue;
        }
        let row = one(ctx, &case, shaped)?;
        ctx.md(&row)?;
        check_interrupt()?;
    }
    Ok(())
}

/// One run, loopback or shaped: its bench.md row.
fn one(ctx: &Ctx, case: &Case, shaped: bool) -> Result<String, Fatal> {
    let rate_text = if shaped {
        format!(", owner at {} Mbit/s", case.rate)
    } else {
        String::new()
    };
    println!("bench: many, N={}{rate_text}...", case.n);
    let log = ctx.work.0.join(format!("many-{}.log", u8::from(shaped)));
    let mut cmd = Command::new(ctx.script("run_many_peers.sh"));
    cmd.arg(&case.n)
        .env("SIZE_MIB", "4")
        // Below the ephemeral ports, as the pipeline's (many peers need
        // up to N + 1 ports from here).
        .env(
            "BASE_PORT",
            u32::from(ctx.base_port).saturating_sub(10000).to_string(),
        )
        .env("TIMEOUT", "900");
    if shaped {
        cmd.env("OWNER_RATE_MBIT", &case.rate);
    }
    let status = if run_to(&mut cmd, Some(&log), true)?.success() {
        "ok"
    } else {
        ctx.keep_log(&log);
        "FAILED"
    };
    let text = fs::read_to_string(&log).unwrap_or_default();
    let mut line = lines_after(&text, "summary: ");
    if shaped {
        line = format!("{line} {}", lines_after(&text, "shaped: "));
    }
    println!("bench:   {status}: {line}");
    let name = if shaped { "shaped" } else { "loopback" };
    Ok(format!("| {name} | {status}: {line} |\n"))
}
