//! An owner and a ring of peers in one process, through the library API.
//!
//!     cargo run --release --example ring -- [PEERS] [MIB]
//!
//! Writes a file of MIB (default 8) MiB of pseudo-random bytes, serves it
//! from an owner on a free loopback port, runs PEERS (default 5) peers on
//! their own threads, wired into a ring by the owner, and checks that
//! every copy has the owner's SHA-256.

use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use swarm::cli::OwnerArgs;
use swarm::config::{Limits, PeerConfig, Timeouts};
use swarm::manifest::{Chunking, DEFAULT_CHUNK_SIZE, to_hex};
use swarm::owner::Owner;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    quiet_logging();
    let mut args = std::env::args().skip(1);
    let peers: usize = args.next().map_or(Ok(5), |a| a.parse())?;
    let mib: usize = args.next().map_or(Ok(8), |a| a.parse())?;
    let work = std::env::temp_dir().join(format!("swarm-example-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let file = work.join("example.bin");
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let data: Vec<u8> = (0..mib << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&file, &data)?;

    // Free loopback ports: one for the owner, one per peer.
    let listeners: Vec<_> = (0..=peers)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    drop(listeners);
    let addr = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));

    let owner = Owner::bind(&OwnerArgs {
        listen: addr(ports[0]),
        dir: work.join("owner"),
        chunk_size: DEFAULT_CHUNK_SIZE,
        chunking: Chunking::Fixed,
        peers: peers as u32,
        file: file.clone(),
        max_peers: 5000,
        secret_file: None,
        once: true,
        timeouts: Timeouts::default(),
    })?;
    let want = *owner.manifest().file_hash();
    let stopper = owner.stopper();
    let owner = thread::spawn(move || owner.run());

    let started = Instant::now();
    let handles: Vec<_> = (1..=peers)
        .map(|i| {
            let args = PeerConfig {
                owner: addr(ports[0]),
                listen: addr(ports[i]),
                // The owner wires each peer into the ring.
                download_neighbors: Vec::new(),
                // As many as the owner chooses: one each in a ring this small.
                sources: swarm::wire::MAX_SOURCES,
                auto_sources: true,
                advertise: None,
                dir: work.join(format!("peer{i}")),
                out: Some(work.join(format!("copy{i}.bin"))),
                linger: Duration::from_secs(5),
                linger_given: true,
                follow: false,
                wait: Duration::from_secs(30),
                stall_timeout: Duration::from_secs(10),
                secret_file: None,
                verify_output: false,
                timeouts: Timeouts::default(),
                limits: Limits::default(),
                record: None,
            };
            thread::spawn(move || swarm::peer::run(&args))
        })
        .collect();
    let mut ok = true;
    for (i, handle) in handles.into_iter().enumerate() {
        let report = handle.join().expect("peer thread panicked")?;
        let same = report.digest == want && std::fs::read(&report.path)? == data;
        ok &= same;
        println!(
            "peer {}: {} in {:.2} s ({:.1} MiB from the owner), sha256 {}",
            i + 1,
            if same { "identical" } else { "DIFFERENT" },
            report.elapsed.as_secs_f64(),
            report.from_owner as f64 / 1048576.0,
            to_hex(&report.digest)
        );
    }
    println!(
        "{peers} peers, {mib} MiB, {:.2} s in all",
        started.elapsed().as_secs_f64()
    );
    stopper.stop();
    owner.join().expect("owner thread panicked")?;
    std::fs::remove_dir_all(&work)?;
    if ok {
        Ok(())
    } else {
        Err("a copy differs".into())
    }
}

/// Per-chunk lines would drown the summary; keep warnings only unless
/// RUST_LOG says otherwise.
fn quiet_logging() {
    if std::env::var_os("RUST_LOG").is_none() {
        env_logger::Builder::new()
            .filter_level(log::LevelFilter::Warn)
            .init();
    } else {
        swarm::init_logging();
    }
}
