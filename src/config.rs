//! Configuration as values: the timeouts every connection runs under,
//! the peer's limits, and the peer's whole configuration.
//!
//! The command line ([`crate::cli`]) builds these; the library takes
//! them as values, so a caller (an example, a test) can run a peer or an
//! owner with shorter timeouts instead of waiting out the real ones.
//! [`Timeouts::default`] and [`Limits::default`] are the values the
//! binary uses.
//!
//! Integration tests spawn the binary, so two environment variables,
//! meant for tests and left out of `--help`, shorten the two timeouts
//! tests otherwise wait out (both in milliseconds, from 1 to 3,600,000):
//!
//! - `SWARM_HANDSHAKE_TIMEOUT_MS`: how long the other side has to complete
//!   its HELLO (and admission), and how long a connection that sent its
//!   last word waits for the other side to close [default: 10,000];
//! - `SWARM_IDLE_TIMEOUT_MS`: how long a connection may stay silent before
//!   it is dropped [default: 30,000]. KEEPALIVE then goes out every sixth
//!   of it (at most every 5 s), so a live connection never looks silent.
//!
//! Neither changes the wire protocol: each side applies its own.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// The environment variable that shortens [`Timeouts::handshake`].
pub const HANDSHAKE_TIMEOUT_ENV: &str = "SWARM_HANDSHAKE_TIMEOUT_MS";
/// The environment variable that shortens [`Timeouts::idle`].
pub const IDLE_TIMEOUT_ENV: &str = "SWARM_IDLE_TIMEOUT_MS";

/// How long each step of a connection may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a TCP connect may take.
    pub connect: Duration,
    /// How long the other side has to complete its HELLO (admission
    /// included), and how long a connection that sent its last word
    /// waits for the other side to close.
    pub handshake: Duration,
    /// How long a connection may stay silent before it is dropped.
    pub idle: Duration,
    /// How long a write may block before the other side counts as dead
    /// (a frame gets this plus its size at the least read rate).
    pub write: Duration,
    /// How often an otherwise idle side sends KEEPALIVE; well under the
    /// other side's `idle`.
    pub keepalive: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(5),
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(30),
            write: Duration::from_secs(30),
            keepalive: Duration::from_secs(5),
        }
    }
}

impl Timeouts {
    /// The defaults, with [`HANDSHAKE_TIMEOUT_ENV`] and
    /// [`IDLE_TIMEOUT_ENV`] applied where `env` has them. A value that is
    /// not a whole number of milliseconds from 1 to 3,600,000 is a usage
    /// error.
    pub fn from_env(env: &dyn Fn(&str) -> Option<OsString>) -> Result<Timeouts> {
        let mut t = Timeouts::default();
        if let Some(ms) = millis(env, HANDSHAKE_TIMEOUT_ENV)? {
            t.handshake = ms;
        }
        if let Some(ms) = millis(env, IDLE_TIMEOUT_ENV)? {
            t.idle = ms;
            // A sixth of the idle timeout, as 5 s is of 30 s.
            t.keepalive = t.keepalive.min(ms / 6).max(Duration::from_millis(1));
        }
        Ok(t)
    }
}

fn millis(env: &dyn Fn(&str) -> Option<OsString>, name: &str) -> Result<Option<Duration>> {
    let Some(raw) = env(name).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match raw.to_str().and_then(|s| s.parse::<u64>().ok()) {
        Some(ms) if (1..=3_600_000).contains(&ms) => Ok(Some(Duration::from_millis(ms))),
        _ => Err(Error::Usage(format!(
            "invalid {name} {raw:?}: expected a whole number of milliseconds from 1 to 3600000"
        ))),
    }
}

/// How much the peer takes on at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections the upload port serves at once; past it, the one that
    /// has done least is closed to make room.
    pub upload_connections: usize,
    /// How long a complete peer keeps trying to reach a download
    /// neighbour to tell it so.
    pub give_up_when_complete: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            upload_connections: crate::peer::MAX_UPLOAD_CONNECTIONS,
            give_up_when_complete: Duration::from_secs(3),
        }
    }
}

/// Everything a peer is run with: the checked `swarm peer` command line,
/// plus the timeouts and limits (see [`crate::peer::run`]).
#[derive(Clone, Debug, PartialEq)]
pub struct PeerConfig {
    /// The owner's address.
    pub owner: SocketAddr,
    /// Where to listen for the upload neighbour.
    pub listen: SocketAddr,
    /// The download neighbours' addresses, as given (at most `sources`);
    /// none lets the owner wire the peer into the ring.
    pub download_neighbors: Vec<SocketAddr>,
    /// The most download neighbours to download from at once.
    pub sources: u8,
    /// Whether `--sources` was left out of a peer the owner wires: the
    /// owner then chooses how many (one in a small ring, more in a large
    /// one), up to `sources`.
    pub auto_sources: bool,
    /// Where others reach the upload port, as HOST and PORT, if not at
    /// the listening port of the address the owner sees us from.
    pub advertise: Option<(String, u16)>,
    /// Where chunk files, the manifest and the summary go.
    pub dir: PathBuf,
    /// Where the reassembled file goes; `None` means `DIR/<file name>`.
    pub out: Option<PathBuf>,
    /// How long to stay, once complete, while no one downloads from us.
    pub linger: Duration,
    /// Whether `--linger` was given: then the owner's word that every
    /// peer is complete does not cut it short.
    pub linger_given: bool,
    /// Stay once complete, until stopped, and take up each new version
    /// the owner shares.
    pub follow: bool,
    /// How long to go on without a way forward (no owner before the
    /// manifest, no chunk from anyone after) before giving up.
    pub wait: Duration,
    /// How long a source has to answer a request before another is
    /// asked, and the download neighbour to deliver anything before the
    /// owner stands in.
    pub stall_timeout: Duration,
    /// The file holding the swarm secret this peer proves to, and requires
    /// of, the owner and its neighbours; `None` for an open swarm.
    pub secret_file: Option<PathBuf>,
    /// Re-hash the whole output against the manifest's whole-file SHA-256
    /// before it takes its final name, on top of every chunk's own check.
    pub verify_output: bool,
    /// `--record FILE`: where to write the closing record (JSON) on success.
    pub record: Option<PathBuf>,
    /// How long each step of a connection may take.
    pub timeouts: Timeouts,
    /// How much the peer takes on at once.
    pub limits: Limits,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn no_variables_give_the_defaults() {
        assert_eq!(
            Timeouts::from_env(&env_of(&[])).unwrap(),
            Timeouts::default()
        );
        assert_eq!(Timeouts::default().handshake, Duration::from_secs(10));
        assert_eq!(Timeouts::default().idle, Duration::from_secs(30));
    }

    #[test]
    fn variables_shorten_handshake_and_idle_and_keepalive_follows() {
        let env = env_of(&[(HANDSHAKE_TIMEOUT_ENV, "300"), (IDLE_TIMEOUT_ENV, "1200")]);
        let t = Timeouts::from_env(&env).unwrap();
        assert_eq!(t.handshake, Duration::from_millis(300));
        assert_eq!(t.idle, Duration::from_millis(1200));
        assert_eq!(t.keepalive, Duration::from_millis(200));
        assert_eq!(t.connect, Timeouts::default().connect);
        // A long idle timeout keeps the 5 s keepalive.
        let t = Timeouts::from_env(&env_of(&[(IDLE_TIMEOUT_ENV, "600000")])).unwrap();
        assert_eq!(t.keepalive, Duration::from_secs(5));
    }

    #[test]
    fn a_bad_value_is_a_usage_error() {
        for bad in ["0", "abc", "-5", "3600001"] {
            let pairs: &'static [(&str, &str)] =
                Box::leak(vec![(HANDSHAKE_TIMEOUT_ENV, bad)].into_boxed_slice());
            let err = Timeouts::from_env(&env_of(pairs)).unwrap_err();
            assert!(matches!(err, Error::Usage(_)), "{bad}: {err}");
            assert!(
                err.to_string()
                    .starts_with("invalid SWARM_HANDSHAKE_TIMEOUT_MS")
            );
        }
    }
}
