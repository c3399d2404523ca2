//! SHA-256's rate on one core, with the implementation swarm uses (sha2,
//! SHA-NI where the CPU has it): the baseline that a peer's receive rate
//! is set beside in `scripts/bench_pipeline.sh`.
//!
//! ```text
//! sha256_rate FILE [PIECE_BYTES]
//! ```
//!
//! Reads FILE in pieces of PIECE_BYTES (default 102400, swarm's default
//! chunk size) and hashes each piece as a chunk, as a peer does. Only the
//! hashing is timed, so a file on tmpfs or in the page cache and one on a
//! disk give the same figure. Prints one line:
//! `sha256_rate: BYTES bytes in SECS s of hashing: MB/s MB/s (one core)`.
//!
//! Run through cargo: `cargo run --release --example sha256_rate -- FILE`.

use std::fs::File;
use std::io::Read;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, piece) = match args.as_slice() {
        [path] => (path, 102_400),
        [path, piece] => match piece.parse::<usize>() {
            Ok(p) if p > 0 => (path, p),
            _ => {
                eprintln!("sha256_rate: PIECE_BYTES must be a positive number, not '{piece}'");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: sha256_rate FILE [PIECE_BYTES]");
            return ExitCode::from(2);
        }
    };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("sha256_rate: open {path}: {e}");
            return ExitCode::from(1);
        }
    };
    let mut buf = vec![0u8; piece];
    let mut hashing = Duration::ZERO;
    let mut total = 0u64;
    let mut sink = 0u8;
    loop {
        let mut filled = 0;
        while filled < piece {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("sha256_rate: read {path}: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        if filled == 0 {
            break;
        }
        let started = Instant::now();
        let digest = Sha256::digest(&buf[..filled]);
        hashing += started.elapsed();
        // Keeps the digest from being optimised away.
        sink ^= digest[0];
        total += filled as u64;
    }
    let secs = hashing.as_secs_f64();
    let rate = if secs > 0.0 {
        total as f64 / secs / 1e6
    } else {
        0.0
    };
    println!(
        "sha256_rate: {total} bytes in {secs:.3} s of hashing: {rate:.0} MB/s (one core; {sink:02x})"
    );
    ExitCode::SUCCESS
}
