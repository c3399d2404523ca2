//! Section 4, scaling on loopback: swarm at N = 5, 10, 20, 40 (3, 5 in
//! smoke mode), 32 MiB (4): wall time and time per delivered GiB (N × S).

use crate::common::{Ctx, Fatal};
use crate::measure::{Bench, Case, Tool};
use crate::report::Row;
use crate::stats::{ratio, verdict};

pub fn run(b: &mut Bench, repeat: u32) -> Result<(), Fatal> {
    let ctx: &Ctx = b.ctx;
    let (ns, s): (&[u32], u32) = if ctx.smoke {
        (&[3, 5], 4)
    } else {
        (&[5, 10, 20, 40], 32)
    };
    let (first, last) = (ns[0], ns[ns.len() - 1]);
    ctx.md(&format!(
        "\n## 4. scaling on loopback, S = {s} MiB\n\n\
         Time per GiB delivered counts N × S bytes. Target: N={last} within 1.5 × N={first}.\n\n\
         | N | swarm s | CPU % | GiB delivered | s per GiB | ÷ N={first} | CPU-s per GiB | |\n\
         |---|---|---|---|---|---|---|---|\n"
    ))?;
    let mut base_spg = String::new();
    for &n in ns {
        println!("bench: scaling N={n}, {s} MiB...");
        let case = Case {
            tool: Tool::Swarm,
            n,
            size: s,
            timeout: u64::from(60 + n * s / 4),
            mem: false,
            timeline: false,
        };
        let m = b.measure(&case, repeat)?;
        let gib = format!("{:.3}", f64::from(n * s) / 1024.0);
        let spg = if m.status == "ok" {
            ratio(&m.secs, &gib)
        } else {
            "-".into()
        };
        if base_spg.is_empty() && spg != "-" {
            base_spg = spg.clone();
        }
        let rel = ratio(&spg, &base_spg);
        let v = if n == last {
            verdict(ctx.smoke, &rel, 1.5)
        } else {
            String::new()
        };
        println!("bench:   {} s, {spg} s per GiB", m.shown());
        ctx.md(&format!(
            "| {n} | {} | {} | {gib} | {spg} | {rel} | {} | {v} |\n",
            m.shown(),
            m.cpu,
            m.cpu_gib(n, s)
        ))?;
        let (case_name, n_s, s_s) = (format!("n{n}"), n.to_string(), s.to_string());
        let f = [
            "scaling", &case_name, &n_s, "", &s_s, "swarm", &m.status, &m.secs, &m.runs, &m.cpu,
            "", &rel, &spg, "",
        ];
        Row {
            fields: &f,
            cpu: Some(m.csv_cpu(n, s)),
            timeline: None,
        }
        .write(ctx)?;
    }
    Ok(())
}
