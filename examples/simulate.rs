//! Runs swarm's tracker, seeder and peer decisions over a modelled
//! network (see `src/sim/mod.rs` and docs/simulator.md).
//!
//!     cargo run --release --example simulate -- --peers N --rate-mbit R --size-mib S
//!         [--sources K] [--slow PEER:MBIT]... [--kill PEER@SECONDS]... [--json]
//!
//! Prints the completion time of every peer not killed as p50, p99 and
//! max over S/B (S the file size, B the per-host rate), and the owner's
//! bytes over S. Bad flags give a one-line error and exit code 2.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use swarm::sim::{self, Config};

const HELP: &str = "\
usage: simulate --peers N --rate-mbit R --size-mib S [options]

  --peers N            peers that join (1 to 100000)
  --rate-mbit R        every host's uplink and downlink, Mbit/s
  --size-mib S         the file's size in MiB (may be fractional)
  --sources K          download neighbours per peer (1 to 4; default: as
                       many as the owner assigns, as a peer without --sources)
  --down-mbit D        every host's downlink, Mbit/s (default R; the netbed
                       limits egress only, which --down-mbit 100000 models)
  --slow PEER:MBIT     peer PEER (1..N) has MBIT up and down; repeatable
  --slow-up PEER:MBIT  peer PEER has MBIT up only (the netbed's slow case)
  --kill PEER@SECONDS  peer PEER dies at SECONDS; repeatable
  --chunk-kib C        chunk size in KiB (default 100, as swarm's)
  --latency-ms L       one-way latency of every message (default 0.5)
  --goodput F          share of a link's rate that carries chunk bytes
                       (default 0.9564: TCP/IPv4/Ethernet headers)
  --owner-peers P      the owner's --peers (default 5, the owner's default;
                       the bench starts the owner with --peers N)
  --join-secs J        peers join spread over J seconds (default 0.1 ms each, at most 1)
  --json               print one JSON object instead of text
  --progress           a line on stderr every simulated second
";

fn main() -> ExitCode {
    match parse(std::env::args().skip(1)) {
        Ok(Some((config, json, progress))) => {
            run(&config, json, progress);
            ExitCode::SUCCESS
        }
        Ok(None) => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("simulate: {e}");
            ExitCode::from(2)
        }
    }
}

/// The flags, or `None` for `--help`.
fn parse(args: impl Iterator<Item = String>) -> Result<Option<(Config, bool, bool)>, String> {
    let mut args = args.peekable();
    let (mut peers, mut rate, mut size) = (None, None, None);
    let mut sources = 0u8;
    let (mut slow, mut slow_up, mut kill) = (Vec::new(), Vec::new(), Vec::new());
    let mut down = None;
    let mut goodput = sim::GOODPUT;
    let mut chunk_kib = 100.0;
    let mut latency_ms = 0.5;
    let mut owner_peers = None;
    let mut join = None;
    let mut json = false;
    let mut progress = false;
    while let Some(flag) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--json" => json = true,
            "--progress" => progress = true,
            "--peers" => peers = Some(whole(&flag, &value(&flag)?, 1, 100_000)?),
            "--rate-mbit" => rate = Some(number(&flag, &value(&flag)?, 0.001, 1e6)?),
            "--size-mib" => size = Some(number(&flag, &value(&flag)?, 1e-6, 1e6)?),
            "--sources" => sources = whole(&flag, &value(&flag)?, 1, 4)? as u8,
            "--chunk-kib" => chunk_kib = number(&flag, &value(&flag)?, 1.0, 16384.0)?,
            "--latency-ms" => latency_ms = number(&flag, &value(&flag)?, 0.0, 10_000.0)?,
            "--owner-peers" => owner_peers = Some(whole(&flag, &value(&flag)?, 1, 100_000)?),
            "--join-secs" => join = Some(number(&flag, &value(&flag)?, 0.0, 3600.0)?),
            "--down-mbit" => down = Some(number(&flag, &value(&flag)?, 0.001, 1e6)?),
            "--goodput" => goodput = number(&flag, &value(&flag)?, 0.01, 1.0)?,
            "--slow" | "--slow-up" => {
                let v = value(&flag)?;
                let (p, m) = v
                    .split_once(':')
                    .ok_or_else(|| format!("invalid {flag} '{v}': expected PEER:MBIT"))?;
                let p = whole(&flag, p, 1, 100_000)?;
                let m = number(&flag, m, 0.001, 1e6)?;
                if flag == "--slow" {
                    slow.push((p, m));
                } else {
                    slow_up.push((p, m));
                }
            }
            "--kill" => {
                let v = value(&flag)?;
                let (p, s) = v
                    .split_once('@')
                    .ok_or_else(|| format!("invalid --kill '{v}': expected PEER@SECONDS"))?;
                let p = whole("--kill", p, 1, 100_000)?;
                kill.push((p, number("--kill", s, 0.0, 1e6)?));
            }
            other => return Err(format!("unknown flag '{other}' (try --help)")),
        }
    }
    let peers = peers.ok_or("--peers is required")?;
    let rate = rate.ok_or("--rate-mbit is required")?;
    let size = size.ok_or("--size-mib is required")?;
    for &(p, _) in slow.iter().chain(&slow_up).chain(&kill) {
        if p > peers {
            return Err(format!("peer {p} is not one of the {peers} peers"));
        }
    }
    let mut config = Config::new(
        peers,
        rate,
        (size * 1024.0 * 1024.0).round().max(1.0) as u64,
    );
    config.sources = sources;
    config.chunk = (chunk_kib * 1024.0) as u32;
    config.slow = slow;
    config.slow_up = slow_up;
    config.down_mbit = down;
    config.goodput = goodput;
    config.kill = kill;
    config.latency = Duration::from_secs_f64(latency_ms / 1e3);
    if let Some(p) = owner_peers {
        config.owner_peers = p;
    }
    if let Some(j) = join {
        config.join_over = Duration::from_secs_f64(j);
    }
    if swarm::manifest::Layout::new(config.size, config.chunk).is_err() {
        return Err(format!(
            "a file of {} bytes in chunks of {} bytes is not one swarm can share",
            config.size, config.chunk
        ));
    }
    Ok(Some((config, json, progress)))
}

fn whole(flag: &str, text: &str, min: u32, max: u32) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(format!(
            "invalid {flag} '{text}': expected a whole number from {min} to {max}"
        )),
    }
}

fn number(flag: &str, text: &str, min: f64, max: f64) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && (min..=max).contains(&v) => Ok(v),
        _ => Err(format!(
            "invalid {flag} '{text}': expected a number from {min} to {max}"
        )),
    }
}

fn run(config: &Config, json: bool, progress: bool) {
    let started = Instant::now();
    let cpu0 = cpu_secs();
    let out = sim::run_with(config, |p| {
        if progress {
            eprintln!(
                "simulate: {:.0} s simulated, {} of {} complete, {} events, {:.1} s wall, {:.1} s CPU",
                p.secs,
                p.complete,
                config.peers,
                p.events,
                started.elapsed().as_secs_f64(),
                cpu_secs() - cpu0
            );
        }
    });
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let complete = out.complete.iter().filter(|c| **c).count();
    let killed = out.killed.iter().filter(|k| **k).count();
    let (p50, p99, max) = (out.quantile(0.5), out.quantile(0.99), out.quantile(1.0));
    let slow = out.ratios(true);
    let slow_max = if slow.is_empty() {
        f64::NAN
    } else {
        sim::quantile(&slow, 1.0)
    };
    if json {
        println!(
            "{{\"peers\":{},\"rate_mbit\":{},\"size_bytes\":{},\"chunk_bytes\":{},\"sources\":{},\
             \"p50\":{},\"p99\":{},\"max\":{},\"owner_sent\":{},\"owner_sent_bytes\":{},\
             \"slow_max\":{},\"complete\":{complete},\"killed\":{killed},\"sim_secs\":{:.3},\"events\":{},\
             \"times_digest\":\"{:016x}\",\"wall_secs\":{wall:.2},\"cpu_secs\":{cpu:.2}}}",
            config.peers,
            config.rate_mbit,
            config.size,
            config.chunk,
            config.sources,
            num(p50),
            num(p99),
            num(max),
            num(out.owner_ratio()),
            out.owner_sent,
            num(slow_max),
            out.sim_secs,
            out.events,
            times_digest(&out),
        );
        return;
    }
    println!(
        "{} peers, {} Mbit/s each, {:.1} MiB in chunks of {} KiB, sources {}; S/B = {:.3} s",
        config.peers,
        config.rate_mbit,
        config.size as f64 / 1048576.0,
        config.chunk / 1024,
        match config.sources {
            0 => "as the owner assigns".to_string(),
            k => k.to_string(),
        },
        config.ideal()
    );
    let others = if config.slow.is_empty() && config.slow_up.is_empty() {
        String::new()
    } else {
        format!(" (slow peers: max {slow_max:.3})")
    };
    println!(
        "complete: {complete} of {} ({killed} killed); x S/B, peers neither killed nor slow: \
         p50 {p50:.3}  p99 {p99:.3}  max {max:.3}{others}",
        config.peers
    );
    println!(
        "owner sent {:.3} x S ({} bytes: seeded {}, re-seeded {}, asked {}, dropped {})",
        out.owner_ratio(),
        out.owner_sent,
        out.plan.seeded,
        out.plan.reseeded,
        out.plan.asked,
        out.plan.dropped
    );
    println!(
        "simulated {:.3} s in {wall:.2} s wall, {cpu:.2} s CPU ({} events)",
        out.sim_secs, out.events
    );
}

/// A JSON number (JSON has no infinity: a peer that never finished is null).
fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "null".into()
    }
}

/// This process's user and system CPU time so far.
/// An FNV-1a digest of every peer's completion time (to the
/// nanosecond) and state: two runs with the same digest finished every
/// peer at the same instant, which is how a change meant to leave the
/// simulation as it was (a faster engine) is checked.
fn times_digest(out: &sim::Outcome) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for (i, done) in out.done.iter().enumerate() {
        let ns = done.map_or(u64::MAX, |d| (d * 1e9).round() as u64);
        let flags = u64::from(out.killed[i]) | u64::from(out.complete[i]) << 1;
        for b in ns.to_le_bytes().into_iter().chain(flags.to_le_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn cpu_secs() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}
