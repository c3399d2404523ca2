//! What one peer's decisions cost: drives [`PeerCore`]s (no sockets, no
//! clock) through a 1 GiB file of 10,240 chunks of 100 KiB, each from K
//! download neighbours that answer every request at once, and prints
//! the CPU time per event and per file. The simulator runs 10,000 such
//! cores, so this is its floor.
//!
//! `cargo run --release --example core_cost -- [K] [half]`: K sources
//! (default 2; 1 asks first in, first out, more rarest first); with
//! `half`, the first source offers only the lower half of the file, so
//! the others' queues start with chunks two sources offer; with
//! `trickle`, the sources start with nothing and gain (and announce) one
//! chunk at a time, as in a ring.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use swarm::chunks::ChunkSet;
use swarm::manifest::{ChunkId, Layout};
use swarm::peer::machine::{CoreConfig, Input, Output, PeerCore, TICK};
use swarm::scheduler::{SourceId, SourceKind};
use swarm::store::Put;

const CHUNKS: u32 = 10_240;
const CHUNK: u32 = 102_400;
const FILES: u32 = 20;

fn main() {
    let k: u16 = std::env::args().nth(1).map_or(2, |s| s.parse().expect("K"));
    let half = std::env::args().nth(2).is_some_and(|s| s == "half");
    let trickle = std::env::args().nth(2).is_some_and(|s| s == "trickle");
    let layout = Layout::new(u64::from(CHUNKS) * u64::from(CHUNK), CHUNK).unwrap();
    let mut cfg = CoreConfig::new(CHUNK);
    cfg.sources = k as u8;
    cfg.notes = false;
    let addrs: Vec<_> = (0..k)
        .map(|i| std::net::SocketAddr::from(([127, 0, 0, 1], 9001 + i)))
        .collect();
    let mut events = 0u64;
    let cpu0 = cpu_seconds();
    for _ in 0..FILES {
        events += one_file(&layout, &cfg, &addrs, half, trickle);
    }
    let cpu = cpu_seconds() - cpu0;
    println!(
        "K = {k}{}: {FILES} files of {CHUNKS} chunks, {events} events: {:.3} s CPU, {:.2} us per event, {:.1} ms per file",
        if half {
            ", one source offering half"
        } else {
            ""
        },
        cpu,
        cpu * 1e6 / events as f64,
        cpu * 1e3 / f64::from(FILES)
    );
}

/// One core from nothing to leaving; returns how many events it took.
fn one_file(
    layout: &Layout,
    cfg: &CoreConfig,
    addrs: &[std::net::SocketAddr],
    half: bool,
    trickle: bool,
) -> u64 {
    let mut now = Instant::now();
    let mut core = PeerCore::new(layout.clone(), ChunkSet::new(CHUNKS), cfg.clone(), now);
    let named = addrs.iter().map(|a| (*a, a.to_string())).collect();
    core.handle(now, Input::Neighbours(named));
    core.handle(now, Input::OutputReady);
    for (i, addr) in addrs.iter().enumerate() {
        let src = SourceId(i as u64 + 1);
        let kind = SourceKind::Ring;
        core.handle(
            now,
            Input::SourceUp {
                src,
                kind,
                addr: Some(*addr),
            },
        );
        let mut chunks = ChunkSet::new(CHUNKS);
        for id in layout
            .ids()
            .filter(|id| !(half && i == 0) || id.get() < CHUNKS / 2)
        {
            chunks.insert(id);
        }
        core.handle(now, Input::Offered { src, chunks });
    }
    let mut queue: VecDeque<(SourceId, ChunkId)> = VecDeque::new();
    let mut next_tick = now + TICK;
    let mut events = 0;
    let mut gained = 0;
    loop {
        while let Some(output) = core.poll() {
            match output {
                Output::Request { src, ids } => queue.extend(ids.into_iter().map(|id| (src, id))),
                Output::Finish => core.handle(now, Input::Verified(Ok(()))),
                Output::Leave(_) => {
                    assert!(core.held().is_full());
                    return events;
                }
                _ => {}
            }
        }
        if trickle && queue.is_empty() && gained < CHUNKS {
            // The neighbours gain the next chunk and announce it.
            let id = layout.chunk_id(gained).unwrap();
            gained += 1;
            for i in 0..addrs.len() {
                let src = SourceId(i as u64 + 1);
                core.handle(now, Input::Have { src, ids: vec![id] });
                events += 1;
            }
            continue;
        }
        match queue.pop_front() {
            Some((src, id)) => {
                now += Duration::from_micros(500);
                let put = Put::Stored;
                core.handle(
                    now,
                    Input::Received {
                        src,
                        id,
                        put,
                        bytes: u64::from(CHUNK),
                    },
                );
            }
            None => now = next_tick,
        }
        events += 1;
        if now >= next_tick {
            core.handle(now, Input::Tick);
            events += 1;
            next_tick = now + TICK;
        }
    }
}

/// User plus system CPU time of this process.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given and nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
