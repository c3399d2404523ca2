//! Section 5, peak resident memory of the owner and each peer (and of
//! unicast's sender and largest receiver), 1 GiB, N=5, loopback (16 MiB,
//! N=3 in smoke mode); needs /usr/bin/time.

use crate::common::{Ctx, Fatal, is_executable, note};
use crate::measure::{Bench, Case, Measured, Tool};
use crate::report::Row;
use crate::stats::{median_run, verdict};

pub fn run(b: &mut Bench) -> Result<(), Fatal> {
    let ctx: &Ctx = b.ctx;
    let (n, s) = if ctx.smoke { (3, 16) } else { (5, 1024) };
    ctx.md(&format!(
        "\n## 5. peak resident memory, {s} MiB, N={n}, loopback\n\n"
    ))?;
    if !is_executable(std::path::Path::new("/usr/bin/time")) {
        note("memory: skipped (needs /usr/bin/time; apt-get install time)");
        return ctx.md("SKIPPED: needs /usr/bin/time (package time).\n");
    }
    println!("bench: memory, {s} MiB, N={n}...");
    let case = |tool| Case {
        tool,
        n,
        size: s,
        timeout: u64::from(120 + n * s / 8),
        mem: true,
        timeline: false,
    };
    // One run each, shown without a spread.
    let sw = once(b, &case(Tool::Swarm))?;
    let uni = once(b, &case(Tool::Unicast))?;
    println!("bench:   swarm {} s, unicast {} s", sw.shown(), uni.shown());
    ctx.md(&format!(
        "Wall time: swarm {} s (CPU {} %), unicast {} s (CPU {} %). Target: every swarm process ≤ 32 MiB.\n\n\
         | process | peak RSS MiB | |\n|---|---|---|\n",
        sw.shown(),
        sw.cpu,
        uni.shown(),
        uni.cpu
    ))?;
    let procs = std::iter::once("owner".to_string()).chain((1..=n).map(|i| format!("p{i}")));
    for k in procs {
        rows(ctx, &sw, "swarm", &k, &k, n, s, |m| {
            format!(" {}", verdict(ctx.smoke, m, 32.0))
        })?;
    }
    for (k, label) in [("sender", "sender"), ("receiver", "receiver (largest)")] {
        rows(ctx, &uni, "unicast", k, label, n, s, |_| String::new())?;
    }
    Ok(())
}

fn once(b: &mut Bench, case: &Case) -> Result<Measured, Fatal> {
    let r = b.run_one(case)?;
    b.empty_trash()?;
    Ok(median_run(vec![r]))
}

/// One process's table row and CSV row.
#[allow(clippy::too_many_arguments)]
fn rows(
    ctx: &Ctx,
    m: &Measured,
    tool: &str,
    k: &str,
    label: &str,
    n: u32,
    s: u32,
    judge: impl Fn(&str) -> String,
) -> Result<(), Fatal> {
    let kib = m.rss.get(k).cloned().unwrap_or_default();
    let mib = kib
        .parse::<u64>()
        .map_or("-".to_string(), |v| format!("{:.1}", v as f64 / 1024.0));
    ctx.md(&format!("| {tool} {label} | {mib} |{} |\n", judge(&mib)))?;
    let (case, n_s, s_s) = (format!("{tool}-{k}"), n.to_string(), s.to_string());
    let f = [
        "memory", &case, &n_s, "", &s_s, &case, &m.status, &m.secs, &m.secs, &m.cpu, "", "", "",
        &kib,
    ];
    Row {
        fields: &f,
        cpu: None,
        timeline: None,
    }
    .write(ctx)
}
