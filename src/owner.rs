//! The file owner: splits the file, then seeds and serves peers.
//!
//! [`Owner::bind`] listens first (so a taken port fails at once), then
//! indexes the file (one read that hashes every chunk) and writes the
//! chunk files on a thread of its own: peers are served from the moment
//! the manifest exists, from chunk files once written and from the file
//! itself (verified) before. [`Owner::run`] accepts peers until stopped,
//! serving each on its own thread: handshake, manifest, the peer's share
//! of seeded chunks, then any chunk the peer asks for.
//!
//! Seeding hands each peer about 1/N of the chunks, choosing the chunks
//! handed out least so far ([`Seeder`]), so the first N peers between them
//! hold every chunk and the ring can finish even without the owner.
//! Peers the owner wires into the ring after those N get no seeds: the
//! swarm brings them everything, so the owner's link carries the file
//! about once however many peers join.
//!
//! The owner is also the swarm's tracker ([`crate::tracker`]). Its
//! threads and channels:
//!
//! ```text
//!  accept loop (caller of run) ──spawns──▶ session threads (one per connection: reader)
//!                                              │ Event::Opened / Input(..)     ▲ Handle::send
//!                                              ▼                               │ (frames, seeds,
//!  watch thread ──Retire / Current──▶  owner loop (shell: OwnerCore)  ────────┘  VERSION, REFUSE)
//!    └─ split threads (joined by it)   ▲ select!: events, seeds-out marks, tick │
//!                                      └────────── Outgoing::Written ◀── writer threads
//! ```
//!
//! - `owner/core.rs`: the decisions ([`OwnerCore`]: sessions, seeding,
//!   tracker), no I/O;
//! - `owner/shell.rs`: the owner's loop, which carries them out;
//! - `owner/session.rs`: a session's reader and its chunk source;
//! - `owner/version.rs`: versions, their split, and the watch thread.

pub mod index;

mod core;
mod session;
mod shell;
mod version;

pub use self::core::{Command, Input, OwnerCore, Registration, SeedState, Seeder};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use crate::auth::Secret;
use crate::cli::OwnerArgs;
use crate::config::Timeouts;
use crate::error::{Error, Result};
use crate::manifest::{ChunkId, Chunking, Manifest};
use crate::net::{self, Stopper};
use crate::store;
use crate::wire::{self, Message};

use self::shell::{Event, Shell};
use self::version::{Version, VersionSetup, Watcher};

/// Connections served beyond `--max-peers` (each registered peer keeps
/// one open): room for handshakes, `swarm status` and strangers, which
/// make room for each other but never take a registered peer's slot.
pub const SPARE_CONNECTIONS: usize = 256;

/// Peer lines in the table the owner logs; the total line counts all.
const TABLE_ROWS: usize = 40;

/// A bound, indexed owner, ready to serve.
#[derive(Debug)]
pub struct Owner {
    listener: std::net::TcpListener,
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    stopper: Stopper,
    max_peers: usize,
    /// `--peers`.
    peers: u32,
    /// Whether the first version follows one its peers held (a restart
    /// on a changed file): shares are then 1/N of what each peer lacks.
    relative: bool,
    /// The first version's split, until the watch thread takes it.
    split: Option<JoinHandle<()>>,
}

/// What the owner's threads share: settings, counters, the version new
/// sessions get, and why the owner stops. Decisions are not here: they
/// belong to the owner's loop.
#[derive(Debug)]
struct Shared {
    /// The version served to new sessions (swapped by the watch thread;
    /// read by a session once, at its HELLO).
    current: Mutex<Arc<Version>>,
    /// The file being served; chunks not yet split are read from here.
    source: PathBuf,
    /// Where chunk files go.
    dir: PathBuf,
    chunk_size: u32,
    chunking: Chunking,
    /// Whether to stop, rather than follow, when the file changes.
    once: bool,
    /// Set when a read of the source found it no longer matching: the
    /// watcher indexes it again without waiting for its size or time to
    /// change.
    suspect: AtomicBool,
    /// What every connection must prove before it is served; `None`
    /// serves anyone.
    secret: Option<Arc<Secret>>,
    /// Why the owner must stop, once it must.
    fatal: Mutex<Option<Error>>,
    /// Bytes of chunks read from the source file and not yet sent.
    source_reads: session::SourceReads,
    /// Chunk bytes sent to peers, seeds and answers alike.
    sent: AtomicU64,
    stopper: Stopper,
    /// How long each step of a connection may take.
    timeouts: Timeouts,
}

impl Shared {
    /// Stops the owner with `err` (the first such error wins).
    fn fail(&self, err: Error) {
        let mut fatal = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        if fatal.is_none() {
            log::error!("owner: {err}");
            *fatal = Some(err);
            self.stopper.stop();
        }
        drop(fatal);
        self.source_reads.wake();
    }

    /// Whether the owner is stopping on an error.
    fn failed(&self) -> bool {
        self.fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The version new sessions get.
    fn current(&self) -> Arc<Version> {
        Arc::clone(&self.current.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn changed(&self, id: ChunkId) -> Error {
        Error::Integrity(format!(
            "{} changed while being shared (chunk {id} no longer matches its digest); \
             restart the owner to share the new version",
            self.source.display()
        ))
    }

    /// The source no longer matches `v`: with `--once` the owner stops;
    /// otherwise the watcher indexes it again, and the new version
    /// replaces this one.
    fn source_changed(&self, v: &Version, id: ChunkId) {
        if self.once {
            self.fail(self.changed(id));
        } else if !self.suspect.swap(true, Ordering::AcqRel) {
            self.source_reads.wake();
            log::warn!(
                "owner: {} changed while version {} was being split (chunk {id}); indexing it again",
                self.source.display(),
                v.number
            );
        }
    }
}

impl Owner {
    /// Listens on `args.listen`, indexes `args.file` (one read, hashing
    /// every chunk) and starts writing its chunk files into `args.dir` on
    /// a thread of their own, so peers are served from the start.
    pub fn bind(args: &OwnerArgs) -> Result<Owner> {
        // First, so a bad secret file fails before anything else is done.
        let secret = match &args.secret_file {
            Some(path) => Some(Arc::new(Secret::load(path)?)),
            None => None,
        };
        let listener = net::listen(args.listen)?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("read the listening address", e))?;
        if !args.once {
            // Before the first index, which a SIGHUP must not end.
            version::catch_hangup();
        }
        let started = Instant::now();
        let manifest = store::index(&args.file, args.chunk_size, args.chunking)?;
        // A restart on a changed file: what the last run shared is what
        // its peers hold.
        let prev = store::read_manifest(&args.dir)
            .ok()
            .flatten()
            .filter(|m| m.id() != manifest.id());
        version::log_version(1, &manifest, prev.as_ref(), started.elapsed());
        let setup = VersionSetup {
            dir: args.dir.clone(),
        };
        let first = Arc::new(Version::new(1, manifest, &setup, None)?);
        let stopper = Stopper::new(addr);
        let shared = Arc::new(Shared {
            current: Mutex::new(Arc::clone(&first)),
            source: args.file.clone(),
            dir: args.dir.clone(),
            chunk_size: args.chunk_size,
            chunking: args.chunking,
            once: args.once,
            suspect: AtomicBool::new(false),
            secret,
            fatal: Mutex::new(None),
            source_reads: session::SourceReads::default(),
            sent: AtomicU64::new(0),
            stopper: stopper.clone(),
            timeouts: args.timeouts,
        });
        let split = version::start_split(&shared, first)?;
        Ok(Owner {
            listener,
            addr,
            shared,
            stopper,
            max_peers: args.max_peers as usize,
            peers: args.peers,
            relative: prev.is_some(),
            split: Some(split),
        })
    }

    /// The address the owner listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The manifest of the version being served now.
    pub fn manifest(&self) -> Manifest {
        self.shared.current().store.manifest().clone()
    }

    /// A handle that stops [`Owner::run`] from another thread.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Accepts and serves peers until stopped. Returns the error that
    /// stopped it, if one did, after telling every connected peer why.
    /// Every thread it starts (the loop, the watch thread and the splits
    /// it owns) is joined before it returns.
    pub fn run(mut self) -> Result<()> {
        log::info!("owner: listening on {}", self.addr);
        net::raise_fd_limit();
        if self.shared.secret.is_none() {
            log::warn!(
                "owner: no --secret-file: the swarm is open to anyone who can reach port {}",
                self.addr.port()
            );
        }
        let first = self.shared.current();
        let core = OwnerCore::new(
            first.number,
            first.store.layout().clone(),
            self.peers,
            self.max_peers,
            self.relative,
            Instant::now(),
        );
        let (events, inbox) = crossbeam_channel::unbounded();
        let shell = Shell::new(Arc::clone(&self.shared), core, first);
        let owner_loop = spawn("owner loop", move || shell.run(inbox))?;
        let (stop_watch, stopped) = crossbeam_channel::bounded::<()>(0);
        let watcher = Watcher::new(
            Arc::clone(&self.shared),
            events.clone(),
            stopped,
            self.split.take(),
        );
        let watcher = spawn("owner watch", move || watcher.run())?;
        let (shared, to_loop) = (Arc::clone(&self.shared), events.clone());
        let open = net::accept_loop(
            &self.listener,
            &self.stopper,
            "owner",
            self.max_peers + SPARE_CONNECTIONS,
            self.shared.timeouts,
            move |s, who, stats| session::serve(&shared, &to_loop, s, who, stats),
        );
        let sent = self.shared.sent.load(Ordering::Relaxed);
        log::info!(
            "owner: sent {:.2} MiB of chunks in all ({:.2} x the file)",
            sent as f64 / MIB,
            sent as f64 / (self.shared.current().store.layout().file_len().max(1)) as f64
        );
        let fatal = self
            .shared
            .fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if fatal.is_none() {
            log::info!("owner: stopped");
        }
        let _ = events.send(Event::Stop {
            refuse: fatal.is_some(),
            open,
        });
        drop(stop_watch);
        let looped = owner_loop.join();
        let watched = watcher.join();
        if looped.is_err() || watched.is_err() {
            return Err(Error::Bug("an owner thread panicked".into()));
        }
        match fatal {
            None => Ok(()),
            Some(err) => Err(err),
        }
    }
}

/// Starts a named thread.
fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| Error::io(format!("start the {name} thread"), e))
}

/// What peers are told when the owner stops because its file changed.
const STOPPED: &str = "the owner's file changed while being shared; the owner has stopped";

const MIB: f64 = 1024.0 * 1024.0;

/// MANIFEST and the HASHES frames that cover every chunk (with its
/// length, for content chunking), each within the frame limit.
pub fn encode_manifest(m: &Manifest) -> Vec<u8> {
    let layout = m.layout();
    let mut buf = Vec::new();
    wire::encode(
        &Message::Manifest {
            file_len: layout.file_len(),
            chunk_size: layout.chunk_size(),
            chunking: layout.chunking(),
            chunks: layout.count(),
            file_hash: *m.file_hash(),
            name: m.name(),
        },
        &mut buf,
    );
    let per_frame = wire::max_hashes(layout.shape());
    let id = |i: usize| {
        layout
            .chunk_id(i as u32)
            .expect("a digest exists only for a chunk in range")
    };
    for (n, hashes) in m.chunk_hashes().chunks(per_frame).enumerate() {
        let first = n * per_frame;
        let lens = match layout.chunking() {
            Chunking::Fixed => None,
            Chunking::Content => Some(
                (first..first + hashes.len())
                    .map(|i| layout.chunk_len(id(i)) as u32)
                    .collect(),
            ),
        };
        wire::encode(
            &Message::Hashes {
                first: id(first).get(),
                hashes: hashes.to_vec(),
                lens,
            },
            &mut buf,
        );
    }
    buf
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::chunks::ChunkSet;
    use crate::conn;
    use crate::testdir::TestDir;
    use crate::wire::Decoder;

    /// This process's threads that the owner names as its own.
    fn owner_threads() -> Vec<String> {
        let mut names = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            if let Ok(name) = std::fs::read_to_string(task.path().join("comm")) {
                let name = name.trim_end().to_string();
                if ["owner loop", "owner watch", "owner split"].contains(&name.as_str()) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// The next message off `stream`, as its name and, for SEEDING, its
    /// value.
    fn next(dec: &mut Decoder, stream: &mut std::net::TcpStream) -> (String, Option<bool>) {
        net::fill_within(dec, stream, Duration::from_secs(10)).expect("a frame within 10 s");
        let msg = dec.message().expect("a well-formed frame");
        let busy = match msg {
            Message::Seeding(busy) => Some(busy),
            _ => None,
        };
        (msg.name().to_string(), busy)
    }

    #[test]
    fn a_session_is_seeded_through_the_loop_and_a_stopped_owner_leaves_no_thread() {
        let dir = TestDir::new("owner-loop");
        let file = dir.join("file");
        let data: Vec<u8> = (0..10 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&file, &data).unwrap();
        let args = OwnerArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            dir: dir.join("chunks"),
            chunk_size: 1024,
            chunking: Chunking::Fixed,
            peers: 2,
            file,
            max_peers: 10,
            secret_file: None,
            once: true,
            timeouts: crate::config::Timeouts::default(),
        };
        let owner = Owner::bind(&args).unwrap();
        let (addr, stopper) = (owner.local_addr(), owner.stopper());
        let layout = owner.manifest().layout().clone();
        let running = thread::spawn(move || owner.run());

        // A peer that holds nothing and does not register: 1/2 of the file.
        let (mut stream, mut dec, _) = conn::dial(
            addr,
            [0; 32],
            "test",
            None,
            &crate::config::Timeouts::default(),
            &conn::Abort::default(),
        )
        .unwrap();
        dec.set_layout(layout.clone());
        let mut list = Vec::new();
        wire::encode(&Message::ChunkList(ChunkSet::new(10)), &mut list);
        std::io::Write::write_all(&mut stream, &list).unwrap();
        let mut got = Vec::new();
        loop {
            let (name, busy) = next(&mut dec, &mut stream);
            let seeding = busy.is_some();
            got.push((name, busy));
            if seeding {
                break;
            }
        }
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        let chunks = names.iter().filter(|n| **n == "chunk").count();
        assert_eq!(chunks, 5, "{names:?}");
        // The seeds, SEED_DONE, then (once the writer reports them out)
        // SEEDING false: no one is being seeded any more.
        let done = names.iter().position(|n| *n == "seed-done").unwrap();
        assert_eq!(done, names.len() - 2, "{names:?}");
        assert_eq!(got.last().unwrap().1, Some(false));

        // The check below is not vacuous: the loop and the watcher run.
        let live = owner_threads();
        assert!(live.contains(&"owner loop".to_string()), "{live:?}");
        assert!(live.contains(&"owner watch".to_string()), "{live:?}");
        stopper.stop();
        running.join().unwrap().unwrap();
        assert_eq!(owner_threads(), Vec::<String>::new());
    }
}
