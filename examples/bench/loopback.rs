//! Section 3, loopback with no rate limit: swarm against unicast, N=5
//! and 256 MiB (N=3, 8 MiB in smoke mode), wall time and CPU-seconds.

use crate::common::{Ctx, Fatal};
use crate::measure::{Bench, Case, Measured, Tool};
use crate::report::{Row, keep_timeline};
use crate::stats::{ratio, verdict};

pub fn run(b: &mut Bench, repeat: u32) -> Result<(), Fatal> {
    let ctx: &Ctx = b.ctx;
    let (n, s) = if ctx.smoke { (3, 8) } else { (5, 256) };
    println!("bench: loopback N={n}, {s} MiB...");
    let case = |tool, timeline| Case {
        tool,
        n,
        size: s,
        timeout: u64::from(60 + n * s / 8),
        mem: false,
        timeline,
    };
    let sw = b.measure(&case(Tool::Swarm, true), repeat)?;
    let tl = keep_timeline(ctx, &sw, &format!("loopback-n{n}"));
    let uni = b.measure(&case(Tool::Unicast, false), repeat)?;
    let r = ratio(&sw.secs, &uni.secs);
    let rc = ratio(&sw.cpu_s, &uni.cpu_s);
    println!(
        "bench:   swarm {} s, unicast {} s (swarm ÷ unicast {r})",
        sw.shown(),
        uni.shown()
    );
    println!(
        "bench:   CPU-seconds swarm {}; unicast {} (swarm ÷ unicast {rc})",
        sw.cpu_shown(),
        uni.cpu_shown()
    );
    write(ctx, n, s, &sw, &uni, tl)
}

/// The section's table and its two CSV rows.
fn write(
    ctx: &Ctx,
    n: u32,
    s: u32,
    sw: &Measured,
    uni: &Measured,
    tl: Option<(String, String)>,
) -> Result<(), Fatal> {
    let r = ratio(&sw.secs, &uni.secs);
    let rc = ratio(&sw.cpu_s, &uni.cpu_s);
    ctx.md(&format!(
        "\n## 3. loopback, no rate limit\n\n\
         CPU-seconds are user + system time of the run's own processes (getrusage of the reaped children), median of the runs with min–max; per GiB counts N × S delivered.\n\n\
         | N | S MiB | swarm s | unicast s | swarm ÷ unicast (wall) | target | | swarm CPU-s | per GiB | unicast CPU-s | per GiB | swarm ÷ unicast (CPU) | target | |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n\
         | {n} | {s} | {} | {} | {r} | ≤ 1.3 | {} | {} | {} | {} | {} | {rc} | ≤ 2 | {} |\n",
        sw.shown(),
        uni.shown(),
        verdict(ctx.smoke, &r, 1.3),
        sw.cpu_shown(),
        sw.cpu_gib(n, s),
        uni.cpu_shown(),
        uni.cpu_gib(n, s),
        verdict(ctx.smoke, &rc, 2.0),
    ))?;
    let (case_name, ns, ss) = (format!("n{n}"), n.to_string(), s.to_string());
    let head = ["loopback", &case_name, &ns, "", &ss];
    let f = [
        &head[..],
        &[
            "swarm",
            &sw.status,
            &sw.secs,
            &sw.runs,
            &sw.cpu,
            "",
            &r,
            "",
            "",
            &sw.sent,
            &sw.sent_runs,
        ],
    ]
    .concat();
    Row {
        fields: &f,
        cpu: Some(sw.csv_cpu(n, s)),
        timeline: tl,
    }
    .write(ctx)?;
    let f = [
        &head[..],
        &[
            "unicast",
            &uni.status,
            &uni.secs,
            &uni.runs,
            &uni.cpu,
            "",
            "",
            "",
            "",
        ],
    ]
    .concat();
    Row {
        fields: &f,
        cpu: Some(uni.csv_cpu(n, s)),
        timeline: None,
    }
    .write(ctx)
}
