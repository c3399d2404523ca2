//! The command line, parsed by hand.
//!
//! [`parse`] takes the arguments after the program name and returns a
//! [`Command`] whose fields are already checked and typed, or a usage
//! error whose message is the one line `main` prints. It takes an
//! iterator so tests call it without starting a process, and reads the
//! environment only through [`parse_with_env`]'s lookup, so tests do not
//! depend on the environment they run in.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Limits, PeerConfig, Timeouts};
use crate::error::{Error, Result};
use crate::manifest::{
    Chunking, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MAX_CONTENT_CHUNK_SIZE, MIN_CHUNK_SIZE,
};
use crate::net::parse_addr;
use crate::wire;

/// What the user asked for.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// Serve a file to peers.
    Owner(OwnerArgs),
    /// Join the ring and fetch the file.
    Peer(PeerConfig),
    /// Ask the owner who is in its swarm.
    Status(StatusArgs),
    /// Print this help text and exit 0.
    Help(&'static str),
    /// Print the version and exit 0.
    Version,
}

/// Checked arguments of `swarm owner`.
#[derive(Debug, PartialEq)]
pub struct OwnerArgs {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where chunk files and the manifest go.
    pub dir: PathBuf,
    /// Bytes per chunk; the average, for content chunking.
    pub chunk_size: u32,
    /// How the file is cut into chunks.
    pub chunking: Chunking,
    /// How many peers share the seeding (each gets about 1/N).
    pub peers: u32,
    /// The file to distribute.
    pub file: PathBuf,
    /// How many peers may register at once.
    pub max_peers: u32,
    /// The file holding the swarm secret every peer must prove; `None`
    /// serves anyone who can connect.
    pub secret_file: Option<PathBuf>,
    /// Share exactly the file indexed at start, and stop if it changes,
    /// instead of following it to each new version.
    pub once: bool,
    /// How long each step of a connection may take.
    pub timeouts: Timeouts,
}

/// Checked arguments of `swarm status`.
#[derive(Debug, PartialEq)]
pub struct StatusArgs {
    /// The owner's address.
    pub owner: SocketAddr,
    /// Redraw every second until the swarm is complete.
    pub watch: bool,
    /// One JSON object instead of a table.
    pub json: bool,
    /// The file holding the swarm secret to prove to the owner.
    pub secret_file: Option<PathBuf>,
}

/// `swarm --help`.
pub const HELP: &str = "\
swarm: get one file from its owner onto many machines, verified chunk by chunk

Usage:
  swarm owner --port PORT [OPTIONS] FILE
  swarm peer --owner [HOST:]PORT --port PORT [--download-neighbor [HOST:]PORT]... [OPTIONS]
  swarm status --owner [HOST:]PORT [--watch] [--json] [--secret-file PATH]
  swarm --help | swarm owner --help | swarm peer --help | swarm status --help
  swarm --version

The owner splits FILE into chunk files and seeds each peer with a share.
Peers form a ring: each downloads from its download neighbour and uploads
to the peer that downloads from it, until every peer holds the whole file.
The owner is the swarm's tracker: it wires peers started without
--download-neighbor into the ring, repairs the ring when one dies, and
tells 'swarm status' who holds what.

A swarm is open to anyone who can reach the owner unless the owner and
every peer are given the same secret (--secret-file, or SWARM_SECRET_FILE).

Set RUST_LOG=debug (or warn) to change how much is logged.
";

/// `swarm owner --help`.
pub const OWNER_HELP: &str = "\
Usage: swarm owner --port PORT [OPTIONS] FILE

Splits FILE into chunk files, then serves peers until stopped (Ctrl-C).

Options:
  --port PORT          TCP port to listen on (required)
  --bind ADDR          address to listen on [default: 0.0.0.0]
  --dir DIR            where chunk files and the manifest go
                       [default: swarm-owner-PORT]
  --chunk-size BYTES   bytes per chunk, 1024..=16777216 (with --chunking
                       content the average, 1024..=4194304) [default: 102400]
  --chunking SCHEME    'fixed': every chunk --chunk-size bytes; 'content':
                       boundaries where the content says (FastCDC, chunks
                       of a quarter to 4 times --chunk-size), so a changed
                       version of FILE shares most chunks [default: fixed]
  --peers N            seed each of the first N peers about 1/N of the
                       chunks; later peers get theirs from the ring
                       [default: 5]
  --max-peers N        peers registered at once, at most [default: 5000]
  --secret-file PATH   serve only peers that prove the secret in PATH
                       [default: $SWARM_SECRET_FILE]; without one, anyone
                       who can reach PORT can fetch FILE
  --once               share FILE as it is at start and stop with an
                       error if it changes; without it, the owner follows
                       FILE: each time it changes (or on SIGHUP) it is
                       indexed again and peers switch to the new version,
                       fetching only the chunks they do not hold
  -h, --help           print this help
";

/// `swarm status --help`.
pub const STATUS_HELP: &str = "\
Usage: swarm status --owner [HOST:]PORT [OPTIONS]

Prints one line per peer the owner knows: its address, its download
neighbour, chunks held, receive rate and state, then a total line.

Options:
  --owner [HOST:]PORT   the owner's address (required)
  --watch               redraw every second until every peer is complete
  --json                print one JSON object instead of the table
  --secret-file PATH    prove the swarm secret in PATH to the owner
                        [default: $SWARM_SECRET_FILE]
  -h, --help            print this help
";

/// `swarm peer --help`.
pub const PEER_HELP: &str = "\
Usage: swarm peer --owner [HOST:]PORT --port PORT [OPTIONS]

Fetches the manifest and a share of the chunks from the owner, then trades
chunks around the ring until it holds them all, writes the verified file
and exits once its upload neighbour is complete too. Without
--download-neighbor the owner places the peer in the ring and re-wires it
when a neighbour dies.

A bare PORT means 127.0.0.1:PORT.

Options:
  --owner [HOST:]PORT              the owner's address (required)
  --port PORT                      TCP port to serve the upload neighbour on (required)
  --download-neighbor [HOST:]PORT  a peer to download from; up to --sources
                                   times [default: the ones the owner assigns]
  --sources K                      download from at most K neighbours at once,
                                   rarest chunks first, 1 to 4 [default: as the
                                   owner chooses: 1 (the ring) below 8 peers,
                                   3 from 8 on; 1 with --download-neighbor];
                                   in a small ring the owner wires K=2 as a ring
                                   plus the peer two back, so one slow or dead
                                   peer does not set the pace
  --advertise HOST:PORT            where other peers reach this one's upload
                                   port [default: PORT at the address the
                                   owner sees this peer connect from]
  --bind ADDR                      address to listen on [default: 0.0.0.0]
  --dir DIR                        where chunks, manifest and summary go
                                   [default: swarm-peer-PORT]; a restart
                                   with the same DIR resumes
  --out PATH                       where the file goes [default: DIR/<file name>,
                                   or DIR/files/<file name> for a file named like
                                   one of DIR's own entries]
  --linger SECS                    once complete, exit after SECS in which no one
                                   downloaded from this peer [default: 30, or at
                                   once when the owner reports every peer
                                   complete]
  --follow                         once complete, stay until stopped (Ctrl-C)
                                   and take up each new version the owner
                                   shares, fetching only the chunks of it
                                   that DIR does not hold
  --stall-timeout SECS             ask another source for a chunk not delivered
                                   within SECS; fetch from the owner while the
                                   download neighbour has delivered nothing for
                                   SECS [default: 10]
  --wait SECS                      give up after SECS without a way forward: the
                                   owner unreachable before the manifest, or no
                                   chunk from anyone after [default: 60]
  --secret-file PATH               prove the swarm secret in PATH to the owner
                                   and neighbours, and require it of them
                                   [default: $SWARM_SECRET_FILE]
  --verify-output                  also hash the whole output file and check it
                                   against the manifest's whole-file SHA-256
                                   before it takes its name [default: the file
                                   is verified chunk by chunk: every byte
                                   written was checked against its chunk's
                                   SHA-256 first]
  --record FILE                    on success, write one JSON object to FILE:
                                   the output, its SHA-256, why the peer left
                                   and the bytes from each source
  -h, --help                       print this help

For tests, SWARM_HANDSHAKE_TIMEOUT_MS and SWARM_IDLE_TIMEOUT_MS shorten the
handshake (10 s) and idle (30 s) timeouts of owner and peer.
";

fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
}

/// The environment variable that names the secret file when
/// `--secret-file` is not given.
pub const SECRET_FILE_ENV: &str = "SWARM_SECRET_FILE";

/// Parses the arguments that follow the program name, with the process's
/// environment.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command> {
    parse_with_env(args, |name| std::env::var_os(name))
}

/// [`parse`], with `env` looking up environment variables.
pub fn parse_with_env(
    args: impl IntoIterator<Item = OsString>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Command> {
    let mut args = args.into_iter();
    let Some(first) = args.next() else {
        return Err(usage(
            "missing subcommand: use 'owner', 'peer' or 'status' (see 'swarm --help')",
        ));
    };
    let first = text(first)?;
    let rest = args.map(text).collect::<Result<Vec<_>>>()?;
    match first.as_str() {
        "owner" => owner(Flags::parse(&rest, "owner", OWNER_HELP)?, &env),
        "peer" => peer(Flags::parse(&rest, "peer", PEER_HELP)?, &env),
        "status" => status(Flags::parse(&rest, "status", STATUS_HELP)?, &env),
        "-h" | "--help" | "help" => Ok(Command::Help(HELP)),
        "-V" | "--version" => Ok(Command::Version),
        other if other.starts_with('-') => Err(usage(format!(
            "unknown flag '{other}' (see 'swarm --help')"
        ))),
        other => Err(usage(format!(
            "unknown subcommand '{other}': use 'owner', 'peer' or 'status' (see 'swarm --help')"
        ))),
    }
}

fn text(arg: OsString) -> Result<String> {
    arg.into_string()
        .map_err(|raw| usage(format!("argument {raw:?} is not valid UTF-8")))
}

/// The flags of one subcommand: `--name VALUE` or `--name=VALUE` pairs and
/// the positional words, before any checking of values.
struct Flags {
    sub: &'static str,
    pairs: Vec<(String, String)>,
    words: Vec<String>,
    help: Option<&'static str>,
}

/// Flags each subcommand takes; all take a value.
const OWNER_FLAGS: &[&str] = &[
    "--port",
    "--bind",
    "--dir",
    "--chunk-size",
    "--chunking",
    "--peers",
    "--max-peers",
    "--secret-file",
    "--once",
];
const PEER_FLAGS: &[&str] = &[
    "--owner",
    "--port",
    "--download-neighbor",
    "--sources",
    "--bind",
    "--dir",
    "--out",
    "--linger",
    "--follow",
    "--wait",
    "--stall-timeout",
    "--advertise",
    "--secret-file",
    "--verify-output",
    "--record",
];
const STATUS_FLAGS: &[&str] = &["--owner", "--watch", "--json", "--secret-file"];
/// Flags that take no value.
const SWITCHES: &[&str] = &["--watch", "--json", "--once", "--follow", "--verify-output"];
/// Flags that may be given more than once.
const REPEATABLE: &[&str] = &["--download-neighbor"];

impl Flags {
    fn parse(args: &[String], sub: &'static str, help: &'static str) -> Result<Flags> {
        let known = match sub {
            "owner" => OWNER_FLAGS,
            "peer" => PEER_FLAGS,
            _ => STATUS_FLAGS,
        };
        let mut flags = Flags {
            sub,
            pairs: Vec::new(),
            words: Vec::new(),
            help: None,
        };
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            if arg == "-h" || arg == "--help" {
                flags.help = Some(help);
                continue;
            }
            if arg == "--" {
                flags.words.extend(iter.by_ref().cloned());
                break;
            }
            if !arg.starts_with('-') || arg == "-" {
                flags.words.push(arg.clone());
                continue;
            }
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (arg.as_str(), None),
            };
            if !known.contains(&name) {
                return Err(usage(format!(
                    "unknown flag '{name}' for 'swarm {sub}' (see 'swarm {sub} --help')"
                )));
            }
            let value = match inline {
                Some(_) if SWITCHES.contains(&name) => {
                    return Err(usage(format!("{name} takes no value")));
                }
                None if SWITCHES.contains(&name) => String::new(),
                Some(v) => v,
                None => iter
                    .next()
                    .cloned()
                    .ok_or_else(|| usage(format!("{name} needs a value")))?,
            };
            if !REPEATABLE.contains(&name) && flags.pairs.iter().any(|(n, _)| n == name) {
                return Err(usage(format!("{name} is given twice")));
            }
            flags.pairs.push((name.to_string(), value));
        }
        Ok(flags)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable flag, in order.
    fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.pairs
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn switch(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn required(&self, name: &str) -> Result<&str> {
        self.get(name)
            .ok_or_else(|| usage(format!("missing {name} (see 'swarm {} --help')", self.sub)))
    }

    fn port(&self) -> Result<u16> {
        let raw = self.required("--port")?;
        match raw.parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(usage(format!(
                "invalid --port '{raw}': expected a port number from 1 to 65535"
            ))),
        }
    }

    fn bind(&self, port: u16) -> Result<SocketAddr> {
        let raw = self.get("--bind").unwrap_or("0.0.0.0");
        let ip: IpAddr = raw
            .parse()
            .map_err(|_| usage(format!("invalid --bind '{raw}': expected an IP address")))?;
        Ok(SocketAddr::new(ip, port))
    }

    fn addr(&self, name: &str) -> Result<SocketAddr> {
        let raw = self.required(name)?;
        parse_addr(raw).map_err(|why| usage(format!("invalid {name}: {why}")))
    }

    fn number(&self, name: &str, default: u64, min: u64, max: u64) -> Result<u64> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        match raw.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(usage(format!(
                "invalid {name} '{raw}': expected a whole number from {min} to {max}"
            ))),
        }
    }

    fn path(&self, name: &str) -> Result<Option<PathBuf>> {
        match self.get(name) {
            Some("") => Err(usage(format!("{name} needs a non-empty path"))),
            other => Ok(other.map(PathBuf::from)),
        }
    }

    /// `--secret-file`, else a non-empty `SWARM_SECRET_FILE`. Only the
    /// path is ever an argument: a secret on the command line would be in
    /// every process listing.
    fn secret_file(&self, env: &dyn Fn(&str) -> Option<OsString>) -> Result<Option<PathBuf>> {
        if let Some(path) = self.path("--secret-file")? {
            return Ok(Some(path));
        }
        Ok(env(SECRET_FILE_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from))
    }
}

fn owner(flags: Flags, env: &dyn Fn(&str) -> Option<OsString>) -> Result<Command> {
    if let Some(help) = flags.help {
        return Ok(Command::Help(help));
    }
    let port = flags.port()?;
    let listen = flags.bind(port)?;
    let chunk_size = flags.number(
        "--chunk-size",
        u64::from(DEFAULT_CHUNK_SIZE),
        u64::from(MIN_CHUNK_SIZE),
        u64::from(MAX_CHUNK_SIZE),
    )? as u32;
    let chunking = match flags.get("--chunking") {
        None => Chunking::Fixed,
        Some(raw) => Chunking::from_name(raw).ok_or_else(|| {
            usage(format!(
                "invalid --chunking '{raw}': expected 'fixed' or 'content'"
            ))
        })?,
    };
    if chunking == Chunking::Content && chunk_size > MAX_CONTENT_CHUNK_SIZE {
        return Err(usage(format!(
            "invalid --chunk-size '{chunk_size}' with --chunking content: expected a \
             whole number from {MIN_CHUNK_SIZE} to {MAX_CONTENT_CHUNK_SIZE} (chunks may \
             be 4 times as long)"
        )));
    }
    let peers = flags.number("--peers", 5, 1, 10_000)? as u32;
    let max_peers = flags.number("--max-peers", 5000, 1, 60_000)? as u32;
    let dir = flags.path("--dir")?;
    let secret_file = flags.secret_file(env)?;
    let file = match flags.words.as_slice() {
        [file] if !file.is_empty() => PathBuf::from(file),
        [] => return Err(usage("missing FILE (see 'swarm owner --help')")),
        [_, extra, ..] => {
            return Err(usage(format!("unexpected argument '{extra}'")));
        }
        [_] => return Err(usage("FILE must not be empty")),
    };
    Ok(Command::Owner(OwnerArgs {
        listen,
        dir: dir.unwrap_or_else(|| PathBuf::from(format!("swarm-owner-{port}"))),
        chunk_size,
        chunking,
        peers,
        file,
        max_peers,
        secret_file,
        once: flags.switch("--once"),
        timeouts: Timeouts::from_env(env)?,
    }))
}

fn peer(flags: Flags, env: &dyn Fn(&str) -> Option<OsString>) -> Result<Command> {
    if let Some(help) = flags.help {
        return Ok(Command::Help(help));
    }
    if let Some(word) = flags.words.first() {
        return Err(usage(format!("unexpected argument '{word}'")));
    }
    let owner = flags.addr("--owner")?;
    let port = flags.port()?;
    let mut download_neighbors: Vec<SocketAddr> = Vec::new();
    for raw in flags.all("--download-neighbor") {
        let addr =
            parse_addr(raw).map_err(|why| usage(format!("invalid --download-neighbor: {why}")))?;
        if download_neighbors.contains(&addr) {
            return Err(usage(format!("--download-neighbor {addr} is given twice")));
        }
        download_neighbors.push(addr);
    }
    // Left out, a peer the owner wires takes as many as the owner gives
    // it; a hand-wired one keeps the card's one neighbour.
    let auto_sources = flags.get("--sources").is_none() && download_neighbors.is_empty();
    let default = if auto_sources { wire::MAX_SOURCES } else { 1 };
    let sources = flags.number("--sources", default.into(), 1, u64::from(wire::MAX_SOURCES))? as u8;
    if download_neighbors.len() > usize::from(sources) {
        return Err(usage(format!(
            "--download-neighbor is given {} times, but --sources {sources} takes at most {sources}",
            download_neighbors.len()
        )));
    }
    let advertise = flags.get("--advertise").map(advertised).transpose()?;
    let listen = flags.bind(port)?;
    let linger = flags.number("--linger", 30, 0, 86_400)?;
    let wait = flags.number("--wait", 60, 1, 86_400)?;
    let stall = flags.number("--stall-timeout", 10, 1, 86_400)?;
    Ok(Command::Peer(PeerConfig {
        owner,
        listen,
        download_neighbors,
        sources,
        auto_sources,
        advertise,
        dir: flags
            .path("--dir")?
            .unwrap_or_else(|| PathBuf::from(format!("swarm-peer-{port}"))),
        out: flags.path("--out")?,
        linger: Duration::from_secs(linger),
        linger_given: flags.get("--linger").is_some(),
        follow: flags.switch("--follow"),
        wait: Duration::from_secs(wait),
        stall_timeout: Duration::from_secs(stall),
        secret_file: flags.secret_file(env)?,
        verify_output: flags.switch("--verify-output"),
        timeouts: Timeouts::from_env(env)?,
        limits: Limits::default(),
        record: flags.path("--record")?,
    }))
}

/// Checks `--advertise HOST:PORT`: a host others can resolve or dial,
/// and a port.
fn advertised(raw: &str) -> Result<(String, u16)> {
    let bad = || {
        usage(format!(
            "invalid --advertise '{raw}': expected HOST:PORT, as other peers should dial it"
        ))
    };
    let (host, port) = raw.rsplit_once(':').ok_or_else(bad)?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(bad)?;
    let plain = host.trim_start_matches('[').trim_end_matches(']');
    if plain.is_empty()
        // Peers must be told HOST:PORT in at most 255 bytes, the port
        // written as a number.
        || host.len() + 1 + port.to_string().len() > crate::wire::MAX_ADDR_LEN
        || plain.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/')
        || (host.starts_with('[') != host.ends_with(']'))
    {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

fn status(flags: Flags, env: &dyn Fn(&str) -> Option<OsString>) -> Result<Command> {
    if let Some(help) = flags.help {
        return Ok(Command::Help(help));
    }
    if let Some(word) = flags.words.first() {
        return Err(usage(format!("unexpected argument '{word}'")));
    }
    Ok(Command::Status(StatusArgs {
        owner: flags.addr("--owner")?,
        watch: flags.switch("--watch"),
        json: flags.switch("--json"),
        secret_file: flags.secret_file(env)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> Result<Command> {
        run_env(line, None)
    }

    /// [`run`] in an environment where `SWARM_SECRET_FILE` is `secret`.
    fn run_env(line: &str, secret: Option<&str>) -> Result<Command> {
        // The test-only timeout variables are unset here.
        let env = |name: &str| (name == SECRET_FILE_ENV).then(|| secret.map(OsString::from))?;
        parse_with_env(line.split_whitespace().map(OsString::from), env)
    }

    fn err(line: &str) -> String {
        match run(line) {
            Err(Error::Usage(msg)) => msg,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    #[test]
    fn owner_defaults_and_flags() {
        let Command::Owner(a) = run("owner --port 9000 file.bin").unwrap() else {
            panic!()
        };
        assert_eq!(a.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(a.dir, PathBuf::from("swarm-owner-9000"));
        assert_eq!((a.chunk_size, a.peers), (102_400, 5));
        assert_eq!(a.chunking, Chunking::Fixed);
        assert_eq!(a.file, PathBuf::from("file.bin"));
        let line = "owner f --port=1 --bind 127.0.0.1 --dir d --chunk-size 4096 --peers 3";
        let Command::Owner(a) = run(line).unwrap() else {
            panic!()
        };
        assert_eq!(a.listen.to_string(), "127.0.0.1:1");
        assert_eq!((a.chunk_size, a.peers), (4096, 3));
        assert_eq!(a.dir, PathBuf::from("d"));
        for (line, chunking, size) in [
            (
                "owner f --port 1 --chunking content",
                Chunking::Content,
                102_400,
            ),
            (
                "owner f --port 1 --chunking=fixed --chunk-size 16777216",
                Chunking::Fixed,
                16 << 20,
            ),
            (
                "owner f --port 1 --chunking content --chunk-size 4194304",
                Chunking::Content,
                4 << 20,
            ),
        ] {
            let Command::Owner(a) = run(line).unwrap() else {
                panic!()
            };
            assert_eq!((a.chunking, a.chunk_size), (chunking, size), "{line}");
        }
    }

    #[test]
    fn peer_defaults_and_flags() {
        let line = "peer --owner 9000 --port 9001 --download-neighbor 9002";
        let Command::Peer(a) = run(line).unwrap() else {
            panic!()
        };
        assert_eq!(a.owner.to_string(), "127.0.0.1:9000");
        assert_eq!(a.listen.to_string(), "0.0.0.0:9001");
        assert_eq!(a.download_neighbors.len(), 1);
        assert_eq!(a.download_neighbors[0].to_string(), "127.0.0.1:9002");
        assert_eq!((a.sources, a.auto_sources), (1, false));
        assert_eq!(a.advertise, None);
        assert_eq!(a.dir, PathBuf::from("swarm-peer-9001"));
        assert_eq!(a.out, None);
        assert_eq!((a.linger, a.linger_given), (Duration::from_secs(30), false));
        assert_eq!(a.stall_timeout, Duration::from_secs(10));
        let line = "peer --owner 10.0.0.1:9000 --port 9001 --download-neighbor \
                    10.0.0.3:9002 --dir p --out o.bin --linger 0 --wait 5 --stall-timeout 2";
        let Command::Peer(a) = run(line).unwrap() else {
            panic!()
        };
        assert_eq!(a.owner.to_string(), "10.0.0.1:9000");
        assert_eq!(a.out, Some(PathBuf::from("o.bin")));
        assert_eq!((a.linger.as_secs(), a.wait.as_secs()), (0, 5));
        assert!(a.linger_given);
        assert_eq!(a.stall_timeout.as_secs(), 2);
        let long = format!("peer --owner 1 --port 2 --advertise {}:9", "h".repeat(250));
        let Command::Peer(a) = run(&long).unwrap() else {
            panic!()
        };
        assert_eq!(a.advertise.unwrap().0.len(), 250);
        let line = "peer --owner 9000 --port 9001 --advertise peer-1.lan:9101";
        let Command::Peer(a) = run(line).unwrap() else {
            panic!()
        };
        assert!(a.download_neighbors.is_empty());
        assert_eq!(a.advertise, Some(("peer-1.lan".to_string(), 9101)));
        let line = "peer --owner 9000 --port 9001 --sources 2 --download-neighbor 9002 \
                    --download-neighbor=10.0.0.4:9003";
        let Command::Peer(a) = run(line).unwrap() else {
            panic!()
        };
        assert_eq!(a.sources, 2);
        let given: Vec<String> = a.download_neighbors.iter().map(|a| a.to_string()).collect();
        assert_eq!(given, ["127.0.0.1:9002", "10.0.0.4:9003"]);
    }

    #[test]
    fn status_and_max_peers() {
        let Command::Status(a) = run("status --owner 9000 --watch").unwrap() else {
            panic!()
        };
        assert_eq!(a.owner.to_string(), "127.0.0.1:9000");
        assert!(a.watch && !a.json);
        assert_eq!(run("status --help").unwrap(), Command::Help(STATUS_HELP));
        let Command::Owner(a) = run("owner --port 1 f").unwrap() else {
            panic!()
        };
        assert_eq!(a.max_peers, 5000);
    }

    #[test]
    fn once_and_follow_are_switches_off_by_default() {
        let Command::Owner(a) = run("owner --port 1 f").unwrap() else {
            panic!()
        };
        assert!(!a.once);
        let Command::Owner(a) = run("owner --port 1 --once f").unwrap() else {
            panic!()
        };
        assert!(a.once);
        assert_eq!(a.file.to_str(), Some("f"));
        let Command::Peer(a) = run("peer --owner 1 --port 2").unwrap() else {
            panic!()
        };
        assert!(!a.follow);
        // Owner-wired without --sources: the owner chooses, up to four.
        assert_eq!((a.sources, a.auto_sources), (4, true));
        let Command::Peer(a) = run("peer --owner 1 --port 2 --sources 1").unwrap() else {
            panic!()
        };
        assert_eq!((a.sources, a.auto_sources), (1, false));
        let Command::Peer(a) = run("peer --owner 1 --port 2 --follow --linger 3").unwrap() else {
            panic!()
        };
        assert!(a.follow);
        assert_eq!(a.linger.as_secs(), 3);
    }

    #[test]
    fn verify_output_is_a_peer_switch_off_by_default() {
        let Command::Peer(a) = run("peer --owner 1 --port 2").unwrap() else {
            panic!()
        };
        assert!(!a.verify_output);
        let Command::Peer(a) = run("peer --owner 1 --port 2 --verify-output").unwrap() else {
            panic!()
        };
        assert!(a.verify_output);
        // A switch takes no value, and the owner has no such flag.
        assert!(matches!(
            run("peer --owner 1 --port 2 --verify-output=yes"),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            run("owner --port 1 --verify-output f"),
            Err(Error::Usage(_))
        ));
    }

    #[test]
    fn a_secret_file_comes_from_the_flag_else_the_environment() {
        let owner = |line: &str, env| match run_env(line, env).unwrap() {
            Command::Owner(a) => a.secret_file,
            other => panic!("{other:?}"),
        };
        let peer = |line: &str, env| match run_env(line, env).unwrap() {
            Command::Peer(a) => a.secret_file,
            other => panic!("{other:?}"),
        };
        let path = |p: &str| Some(PathBuf::from(p));
        assert_eq!(owner("owner --port 1 f", None), None);
        assert_eq!(owner("owner --port 1 --secret-file s f", None), path("s"));
        assert_eq!(owner("owner --port 1 f --secret-file=s", None), path("s"));
        assert_eq!(owner("owner --port 1 f", Some("e")), path("e"));
        assert_eq!(
            owner("owner --port 1 --secret-file s f", Some("e")),
            path("s")
        );
        // An empty variable is as good as none.
        assert_eq!(owner("owner --port 1 f", Some("")), None);
        let line = "peer --owner 1 --port 2 --download-neighbor 3";
        assert_eq!(peer(line, None), None);
        assert_eq!(peer(line, Some("e")), path("e"));
        let flagged = format!("{line} --secret-file /k/s");
        assert_eq!(peer(&flagged, Some("e")), path("/k/s"));
        assert!(OWNER_HELP.contains("--secret-file PATH"));
        assert!(PEER_HELP.contains("--secret-file PATH"));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(run("--help").unwrap(), Command::Help(HELP));
        assert_eq!(run("owner --help").unwrap(), Command::Help(OWNER_HELP));
        assert_eq!(run("peer -h --port x").unwrap(), Command::Help(PEER_HELP));
        assert_eq!(run("--version").unwrap(), Command::Version);
    }

    #[test]
    fn bad_arguments_give_one_line_each() {
        let cases = [
            (
                "",
                "missing subcommand: use 'owner', 'peer' or 'status' (see 'swarm --help')",
            ),
            (
                "fly",
                "unknown subcommand 'fly': use 'owner', 'peer' or 'status' (see 'swarm --help')",
            ),
            ("--fast", "unknown flag '--fast' (see 'swarm --help')"),
            ("owner f", "missing --port (see 'swarm owner --help')"),
            (
                "owner --port 9000",
                "missing FILE (see 'swarm owner --help')",
            ),
            ("owner --port 9000 a b", "unexpected argument 'b'"),
            ("owner --port", "--port needs a value"),
            (
                "owner --port x f",
                "invalid --port 'x': expected a port number from 1 to 65535",
            ),
            (
                "owner --port 0 f",
                "invalid --port '0': expected a port number from 1 to 65535",
            ),
            (
                "owner --port 70000 f",
                "invalid --port '70000': expected a port number from 1 to 65535",
            ),
            ("owner --port 1 --port 2 f", "--port is given twice"),
            (
                "owner --port 1 --speed 2 f",
                "unknown flag '--speed' for 'swarm owner' (see 'swarm owner --help')",
            ),
            (
                "owner --port 1 --bind nowhere f",
                "invalid --bind 'nowhere': expected an IP address",
            ),
            (
                "owner --port 1 --chunk-size 10 f",
                "invalid --chunk-size '10': expected a whole number from 1024 to 16777216",
            ),
            (
                "owner --port 1 --chunking rabin f",
                "invalid --chunking 'rabin': expected 'fixed' or 'content'",
            ),
            (
                "owner --port 1 --chunking content --chunk-size 4194305 f",
                "invalid --chunk-size '4194305' with --chunking content: expected a whole \
                 number from 1024 to 4194304 (chunks may be 4 times as long)",
            ),
            ("owner --port 1 f --chunking", "--chunking needs a value"),
            (
                "owner --port 1 --peers 0 f",
                "invalid --peers '0': expected a whole number from 1 to 10000",
            ),
            (
                "peer --port 1 --download-neighbor 2",
                "missing --owner (see 'swarm peer --help')",
            ),
            (
                "peer --owner 1 --port 2 --advertise nowhere",
                "invalid --advertise 'nowhere': expected HOST:PORT, as other peers should dial it",
            ),
            (
                "peer --owner 1 --port 2 --advertise :9",
                "invalid --advertise ':9': expected HOST:PORT, as other peers should dial it",
            ),
            ("status", "missing --owner (see 'swarm status --help')"),
            ("status --owner 1 --watch=yes", "--watch takes no value"),
            (
                "owner --port 1 --max-peers 0 f",
                "invalid --max-peers '0': expected a whole number from 1 to 60000",
            ),
            (
                "peer --owner x --port 2 --download-neighbor 3",
                "invalid --owner: 'x' is not a port or HOST:PORT",
            ),
            (
                "peer --owner 1 --port 2 --download-neighbor 3 extra",
                "unexpected argument 'extra'",
            ),
            (
                "peer --owner 1 --port 2 --download-neighbor 3 --linger -1",
                "invalid --linger '-1': expected a whole number from 0 to 86400",
            ),
            (
                "peer --owner 1 --port 2 --download-neighbor 3 --dir=",
                "--dir needs a non-empty path",
            ),
            (
                "owner --port 1 --secret-file= f",
                "--secret-file needs a non-empty path",
            ),
            (
                "owner --port 1 f --secret-file",
                "--secret-file needs a value",
            ),
            (
                "peer --owner 1 --port 2 --download-neighbor 3 --secret-file a --secret-file b",
                "--secret-file is given twice",
            ),
            (
                "peer --owner 1 --port 2 --download-neighbor 3 --download-neighbor 4",
                "--download-neighbor is given 2 times, but --sources 1 takes at most 1",
            ),
            (
                "peer --owner 1 --port 2 --sources 2 --download-neighbor 3 \
                 --download-neighbor 127.0.0.1:3",
                "--download-neighbor 127.0.0.1:3 is given twice",
            ),
            (
                "peer --owner 1 --port 2 --sources 5",
                "invalid --sources '5': expected a whole number from 1 to 4",
            ),
            (
                "peer --owner 1 --port 2 --sources 0",
                "invalid --sources '0': expected a whole number from 1 to 4",
            ),
            (
                "peer --owner 1 --port 2 --sources 2 --sources 2",
                "--sources is given twice",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(err(line), want, "for {line:?}");
        }
        // 250 bytes and ":9" fit the 255 NEIGHBOUR carries; ":65535" not.
        let long = format!("{}:65535", "h".repeat(250));
        assert_eq!(
            err(&format!("peer --owner 1 --port 2 --advertise {long}")),
            format!(
                "invalid --advertise '{long}': expected HOST:PORT, as other peers should dial it"
            )
        );
    }
}
