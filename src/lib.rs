//! swarm: get one file from its owner onto many machines, verified chunk
//! by chunk, over a ring of peers.
//!
//! The binary is a thin shell over this library; the example and the
//! tests drive the same API. The modules, roughly from the wire up:
//!
//! - [`wire`]: the protocol, and its specification;
//! - [`auth`]: admission by a swarm secret;
//! - [`manifest`], [`chunks`]: what a file is, and sets of its chunks;
//! - [`net`], [`conn`]: sockets, deadlines, and one connection type for
//!   every role; [`config`]: timeouts and limits as values;
//! - [`store`]: chunk files on disk, verified before they are kept;
//! - [`scheduler`], [`tracker`]: decisions with no I/O (which chunk from
//!   whom; the owner's registry and the rings it wires);
//! - [`owner`], [`peer`]: the two sides, each a shell around its
//!   decisions;
//! - [`status`], [`cli`], [`error`]: `swarm status`, the command line, the
//!   one error type;
//! - [`sim`]: the decision code over a modelled network.
//!
//! docs/DESIGN.md draws the threads and channels; README.md is the user's
//! guide.

pub mod auth;
pub mod chunks;
pub mod cli;
pub mod config;
pub mod conn;
pub mod error;
pub mod manifest;
pub mod net;
pub mod owner;
pub mod peer;
pub mod scheduler;
pub mod sim;
pub mod status;
pub mod store;
#[cfg(test)]
mod testdir;
pub mod tracker;
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
