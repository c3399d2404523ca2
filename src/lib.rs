//! swarm: get one file from its owner onto many machines, verified chunk
//! by chunk, over a ring of peers.
//!
//! The binary is a thin shell over this library; the example and the
//! tests drive the same API.

/// Admission by a swarm secret: the secret, nonces, challenge-response.
pub mod auth;
/// Sets of chunks as bitsets.
pub mod chunks;
/// The command line, parsed by hand.
pub mod cli;
/// One connection, whatever its role: handshake, reader, writer, inbox.
pub mod conn;
/// The one error type.
pub mod error;
/// File layout, chunk IDs, digests and the manifest.
pub mod manifest;
/// Socket options, addresses, connects and stoppable listeners.
pub mod net;
/// The file owner: split, seed, serve.
pub mod owner;
/// A ring peer: fetch, trade, reassemble, verify.
pub mod peer;
/// Which chunk is held, wanted, requested from whom and since when.
pub mod scheduler;
/// A simulator that runs the tracker, seeder and scheduler over a
/// modelled network.
pub mod sim;
/// `swarm status`: the owner's registry, as a table or JSON.
pub mod status;
// Chunk files on disk, verified before they are kept.
pub mod store;
#[cfg(test)]
mod testdir;
/// The owner's registry of peers and the ring it wires.
pub mod tracker;
/// The wire protocol: one message enum, one encoder, one decoder.
pub mod wire;

pub use error::{Error, Result};

/// Sets up `env_logger` with swarm's format: `info` unless `RUST_LOG`
/// says otherwise, one line per event on stderr with a timestamp.
pub fn init_logging() {
    use std::io::Write;
    let env = env_logger::Env::default().default_filter_or("info");
    let _ = env_logger::Builder::from_env(env)
        .format(|buf, record| {
            let ts = buf.timestamp_millis();
            let level = record.level();
            let style = buf.default_level_style(level);
            writeln!(buf, "[{ts} {style}{level:<5}{style:#}] {}", record.args())
        })
        .try_init();
}
