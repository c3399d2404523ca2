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
//! The owner is also the swarm's tracker ([`crate::tracker`]): sessions
//! that register feed it, and the owner carries out what it decides
//! (telling a peer its download neighbour, re-seeding chunks that died
//! with a peer) and answers `swarm status`.

pub mod index;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::net::IpAddr;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::auth::Secret;
use crate::chunks::ChunkSet;
use crate::cli::OwnerArgs;
use crate::config::Timeouts;
use crate::conn::{
    self, ChunkSource, Conn, ConnId, Handle, Outgoing, Role, SendError, Setup, Then,
};
use crate::error::{Error, Result};
use crate::manifest::{self, ChunkId, Chunking, Digest, Layout, Manifest};
use crate::net::{self, Stats, Stopper};
use crate::store::{self, Store};
use crate::tracker::{self, Action, Tracker};
use crate::wire::{self, Decoder, Kind, Kinds, Message};

/// Connections served beyond `--max-peers` (each registered peer keeps
/// one open): room for handshakes, `swarm status` and strangers, which
/// make room for each other but never take a registered peer's slot.
pub const SPARE_CONNECTIONS: usize = 256;

/// How often the owner logs the registry while peers are downloading.
const TABLE_EVERY: Duration = Duration::from_secs(5);

/// Peer lines in the table the owner logs; the total line counts all.
const TABLE_ROWS: usize = 40;

/// Chooses which chunks to seed to each joining peer.
#[derive(Debug)]
pub struct Seeder {
    /// How many times each chunk has been handed out.
    handed: Vec<u32>,
    /// Chunks per peer: `count / N`, and one more for the first
    /// `count % N` of every N peers, so N shares add up to the file
    /// exactly (every extra chunk costs the owner's link, the one link
    /// every byte must cross).
    base: usize,
    extra: usize,
    peers: usize,
    joined: usize,
    /// Peers the owner wires that have registered, seeded or not.
    wired: usize,
    /// Whether a share is 1/N of what the peer lacks (see
    /// [`Seeder::share_what_is_lacking`]).
    relative: bool,
}

impl Seeder {
    /// A seeder for `count` chunks shared among `peers` peers.
    pub fn new(count: u32, peers: u32) -> Seeder {
        Seeder {
            handed: vec![0; count as usize],
            base: (count / peers.max(1)) as usize,
            extra: (count % peers.max(1)) as usize,
            peers: peers.max(1) as usize,
            joined: 0,
            wired: 0,
            relative: false,
        }
    }

    /// Picks this peer's share among the chunks it lacks, least handed out
    /// first (lowest ID among equals, so a share is a contiguous run when
    /// it can be), and counts them as handed out. One pass over the chunks
    /// per hand-out count in play, usually one or two, and a bitset out:
    /// a session costs no sort and no list of IDs.
    pub fn choose(&mut self, layout: &Layout, peer_has: &ChunkSet) -> ChunkSet {
        let share = if self.relative {
            let lacking = layout.count() - peer_has.len();
            (lacking as usize).div_ceil(self.peers)
        } else {
            self.base + usize::from(self.joined % self.peers < self.extra)
        };
        self.joined += 1;
        let mut chosen = ChunkSet::new(layout.count());
        let lacking = |id: &ChunkId| !peer_has.contains(*id);
        let mut level = layout
            .ids()
            .filter(lacking)
            .map(|id| self.handed[id.index()])
            .min();
        while let Some(now) = level {
            let mut next = None;
            for id in layout.ids().filter(lacking) {
                let handed = self.handed[id.index()];
                if handed == now && (chosen.len() as usize) < share {
                    chosen.insert(id);
                } else if handed > now {
                    next = Some(next.map_or(handed, |n: u32| n.min(handed)));
                }
            }
            level = if (chosen.len() as usize) < share {
                next
            } else {
                None
            };
        }
        for id in chosen.iter(layout) {
            self.handed[id.index()] += 1;
        }
        chosen
    }

    /// Readies the seeder of a new version: peers that held the version
    /// before lack only what changed, so each peer's share is 1/N of
    /// what it lacks (rounded up) rather than 1/N of the file. N such
    /// peers then split the changed chunks between them, and a peer that
    /// holds nothing still gets 1/N of the file.
    pub fn share_what_is_lacking(&mut self) {
        self.relative = true;
    }

    /// Counts a peer the owner wires and says whether it gets a share:
    /// the first N do, and no one after them. The owner's link carries
    /// the file about once; later joiners get everything from the swarm,
    /// whose wiring ([`crate::tracker`]) keeps every peer a few hops from
    /// every seed point however many join. (Shares went out again every
    /// hundred joiners while a chunk crossed the ring hop by hop: at a
    /// thousand peers the owner sent the file 16 times.)
    pub fn share_due(&mut self) -> bool {
        let due = self.wired < self.peers;
        self.wired += 1;
        due
    }
}

/// A bound, indexed owner, ready to serve.
#[derive(Debug)]
pub struct Owner {
    listener: TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
    stopper: Stopper,
    max_peers: usize,
}

/// One version of the file: what the owner serves while it is current.
/// A session keeps the version it started with; when a new one becomes
/// current, every older session is told (VERSION) and ends.
#[derive(Debug)]
struct Version {
    /// 1 for the file as indexed at start, then one more per change.
    number: u32,
    store: Store,
    file_id: [u8; 32],
    /// MANIFEST and HASHES, encoded once for every session.
    manifest_frames: Arc<[u8]>,
    seeder: Mutex<Seeder>,
    /// The registry and the ring: peers register again with each version.
    tracker: Mutex<Tracker>,
    /// Set when a newer version replaces this one: its split stops.
    retired: AtomicBool,
    /// Held by the split while it writes chunk files, so the next
    /// version takes over the chunk files only once this one's split has
    /// stopped.
    splitting: Mutex<()>,
}

impl Version {
    /// The version of `manifest`. With `before`, the version it replaces,
    /// whose chunk files this process wrote and verified: those the new
    /// one has too are taken over wherever they sit, without being read,
    /// and the split writes only the rest.
    fn new(
        number: u32,
        manifest: Manifest,
        args: &VersionSetup,
        before: Option<&Version>,
    ) -> Result<Version> {
        let m = &manifest;
        let mut seeder = Seeder::new(m.layout().count(), args.peers);
        if args.prev.is_some() {
            seeder.share_what_is_lacking();
        }
        let tracker = Tracker::new(m.layout().count(), args.max_peers);
        let file_id = m.id();
        let manifest_frames = encode_manifest(m).into();
        let store = match before {
            Some(before) => Store::open_after(&args.dir, manifest, &before.store)?,
            None => Store::open_owner(&args.dir, manifest)?,
        };
        Ok(Version {
            number,
            store,
            file_id,
            manifest_frames,
            seeder: Mutex::new(seeder),
            tracker: Mutex::new(tracker),
            retired: AtomicBool::new(false),
            splitting: Mutex::new(()),
        })
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What making a [`Version`] needs besides its manifest.
struct VersionSetup {
    dir: PathBuf,
    peers: u32,
    max_peers: usize,
    /// The manifest of the version before, if any.
    prev: Option<Manifest>,
}

#[derive(Debug)]
struct Shared {
    /// The version served to new sessions.
    current: Mutex<Arc<Version>>,
    /// The file being served; chunks not yet split are read from here.
    source: PathBuf,
    /// Where chunk files go.
    dir: PathBuf,
    chunk_size: u32,
    chunking: Chunking,
    peers: u32,
    max_peers: usize,
    /// Whether to stop, rather than follow, when the file changes.
    once: bool,
    /// Set when a read of the source found it no longer matching: the
    /// watcher indexes it again without waiting for its size or time to
    /// change.
    suspect: AtomicBool,
    /// What every connection must prove before it is served; `None`
    /// serves anyone.
    secret: Option<Arc<Secret>>,
    /// Live sessions: to tell each why the owner stops, and whether the
    /// owner is seeding.
    sessions: Mutex<Sessions>,
    /// Why the owner must stop, once it must.
    fatal: Mutex<Option<Error>>,
    /// Bytes of chunks read from the source file and not yet sent.
    source_reads: AtomicUsize,
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
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The version new sessions get.
    fn current(&self) -> Arc<Version> {
        Arc::clone(&self.current.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Carries out what the tracker decided. The caller still holds the
    /// tracker's lock, so decisions go out in the order they were made
    /// (nothing here blocks: messages are queued, not written).
    fn act(self: &Arc<Shared>, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Log(line) => log::info!("owner: {line}"),
                Action::Tell { conn, addrs } => {
                    let handle = self.sessions().live.get(&conn).map(|l| l.handle.clone());
                    if let Some(handle) = handle {
                        let shown = if addrs.is_empty() {
                            "no one".to_string()
                        } else {
                            addrs.join(", ")
                        };
                        log::info!("owner: told {} to download from {shown}", handle.who());
                        let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
                        let _ = handle.send_urgent(&Message::Neighbour(addrs));
                    }
                }
                Action::Release(conn) => {
                    let handle = self.sessions().live.get(&conn).map(|l| l.handle.clone());
                    if let Some(handle) = handle {
                        let _ = handle.send_message(&Message::Complete);
                    }
                }
                Action::Reseed { conn, chunks } => {
                    let handle = self.sessions().live.get(&conn).map(|l| l.handle.clone());
                    if let Some(handle) = handle {
                        self.push_seeds(&handle, chunks);
                    }
                }
            }
        }
    }

    /// Queues `seeds` on a session, then SEED_DONE, and counts the
    /// session as seeding until they are out.
    fn push_seeds(self: &Arc<Shared>, handle: &Handle, seeds: ChunkSet) {
        let mut done = Vec::new();
        wire::encode(&Message::SeedDone, &mut done);
        if seeds.is_empty() {
            // Nothing to seed: no reason to tell every other session that
            // seeding starts and stops.
            if let Some(busy) = self.sessions().seeded_nothing(handle.id()) {
                wire::encode(&Message::Seeding(busy), &mut done);
            }
            if handle.send(Outgoing::Frames(done)).is_err() {
                handle.close();
            }
            return;
        }
        self.sessions().seeding(handle.id());
        let (shared, id) = (Arc::clone(self), handle.id());
        let then = Then(Box::new(move || shared.sessions().seeds_out(id)));
        let queued = handle
            .send(Outgoing::Seeds(seeds))
            .and_then(|()| handle.send(Outgoing::Frames(done)))
            .and_then(|()| handle.send(Outgoing::Then(then)));
        if queued.is_err() {
            handle.close();
        }
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
            log::warn!(
                "owner: {} changed while version {} was being split (chunk {id}); indexing it again",
                self.source.display(),
                v.number
            );
        }
    }
}

/// What a session's writer sends chunks from: the version it serves.
struct Serving {
    shared: Arc<Shared>,
    v: Arc<Version>,
}

impl ChunkSource for Serving {
    /// Sends chunk `id`: from its chunk file once split, else straight
    /// from the source file, verified first like everything else sent. A
    /// source file that no longer matches has nothing right to serve:
    /// with `--once` that stops the owner, and otherwise it ends the
    /// session until the new version is ready.
    fn write_chunk(&self, id: ChunkId, w: &mut TcpStream) -> Result<()> {
        let (shared, v) = (&*self.shared, &*self.v);
        let layout = v.store.layout();
        let len = layout.chunk_len(id);
        // A chunk read from the file is held in memory until it is sent,
        // so such reads share a budget; over it, a session waits for the
        // split (which waits on no session) to write the chunk file.
        let _budget = loop {
            if v.store.has(id) {
                if v.store.send_chunk(id, w)? > 0 {
                    shared.sent.fetch_add(len as u64, Ordering::Relaxed);
                }
                return Ok(());
            }
            if let Some(taken) = Budget::take(&shared.source_reads, len) {
                break taken;
            }
            if v.retired.load(Ordering::Acquire) {
                return Err(Error::Integrity(format!(
                    "chunk {id} of version {}, which is no longer shared, is not on disk",
                    v.number
                )));
            }
            if shared.suspect.load(Ordering::Acquire) {
                return Err(Error::Integrity(format!(
                    "chunk {id} of version {} is not on disk and {} has changed",
                    v.number,
                    shared.source.display()
                )));
            }
            if shared
                .fatal
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
            {
                return Err(Error::Integrity("the owner is stopping".into()));
            }
            thread::sleep(Duration::from_millis(5));
        };
        let mut data = vec![0u8; len];
        File::open(&shared.source)
            .and_then(|f| f.read_exact_at(&mut data, layout.offset(id)))
            .map_err(|e| Error::io_path("read", &shared.source, e))?;
        if !v.store.manifest().verify(id, &data) {
            shared.source_changed(v, id);
            if shared.once {
                // This writer is between frames: tell the peer why at once.
                let _ = wire::send(w, &Message::Refuse(STOPPED));
            }
            return Err(Error::Integrity(format!(
                "chunk {id} of {} no longer matches its digest",
                shared.source.display()
            )));
        }
        wire::send(w, &Message::Chunk { id, data: &data })
            .map_err(|e| Error::io("send chunk", e))?;
        shared.sent.fetch_add(len as u64, Ordering::Relaxed);
        Ok(())
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
            catch_hangup();
        }
        let started = Instant::now();
        let manifest = store::index(&args.file, args.chunk_size, args.chunking)?;
        // A restart on a changed file: what the last run shared is what
        // its peers hold.
        let prev = store::read_manifest(&args.dir)
            .ok()
            .flatten()
            .filter(|m| m.id() != manifest.id());
        log_version(1, &manifest, prev.as_ref(), started.elapsed());
        let setup = VersionSetup {
            dir: args.dir.clone(),
            peers: args.peers,
            max_peers: args.max_peers as usize,
            prev,
        };
        let first = Arc::new(Version::new(1, manifest, &setup, None)?);
        let stopper = Stopper::new(addr);
        let shared = Arc::new(Shared {
            current: Mutex::new(Arc::clone(&first)),
            source: args.file.clone(),
            dir: args.dir.clone(),
            chunk_size: args.chunk_size,
            chunking: args.chunking,
            peers: args.peers,
            max_peers: args.max_peers as usize,
            once: args.once,
            suspect: AtomicBool::new(false),
            secret,
            sessions: Mutex::new(Sessions::default()),
            fatal: Mutex::new(None),
            source_reads: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            stopper: stopper.clone(),
            timeouts: args.timeouts,
        });
        start_split(&shared, first)?;
        Ok(Owner {
            listener,
            addr,
            shared,
            stopper,
            max_peers: args.max_peers as usize,
        })
    }

    /// The address the owner listens on.
    pub fn local_addr(&self) -> SocketAddr {
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
    pub fn run(self) -> Result<()> {
        log::info!("owner: listening on {}", self.addr);
        net::raise_fd_limit();
        if self.shared.secret.is_none() {
            log::warn!(
                "owner: no --secret-file: the swarm is open to anyone who can reach port {}",
                self.addr.port()
            );
        }
        let shared = Arc::clone(&self.shared);
        let ticker = Arc::clone(&self.shared);
        thread::Builder::new()
            .name("tracker".into())
            .spawn(move || track(&ticker))
            .map_err(|e| Error::io("start the tracker thread", e))?;
        let watcher = Arc::clone(&self.shared);
        thread::Builder::new()
            .name("watch".into())
            .spawn(move || watch(&watcher))
            .map_err(|e| Error::io("start the watch thread", e))?;
        let open = net::accept_loop(
            &self.listener,
            &self.stopper,
            "owner",
            self.max_peers + SPARE_CONNECTIONS,
            self.shared.timeouts,
            move |s, who, stats| serve(&shared, s, who, stats),
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
        let Some(err) = fatal else {
            log::info!("owner: stopped");
            open.close_all();
            return Ok(());
        };
        let sessions: Vec<Handle> = {
            let all = self.shared.sessions();
            all.live.values().map(|s| s.handle.clone()).collect()
        };
        for handle in &sessions {
            handle.refuse(STOPPED);
        }
        // Give the REFUSEs a moment to leave, and the sessions to end,
        // before the process exits.
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline && !self.shared.sessions().live.is_empty() {
            thread::sleep(Duration::from_millis(10));
        }
        open.close_all();
        Err(err)
    }
}

/// The most bytes of chunks read from the source file (before the split
/// has written them) held at once, whatever the number of sessions; one
/// chunk may always be read.
const SOURCE_READ_BUDGET: usize = 64 << 20;

/// A share of [`SOURCE_READ_BUDGET`], given back when dropped.
struct Budget<'a> {
    used: &'a AtomicUsize,
    len: usize,
}

impl<'a> Budget<'a> {
    fn take(used: &'a AtomicUsize, len: usize) -> Option<Budget<'a>> {
        used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
            (now == 0 || now + len <= SOURCE_READ_BUDGET).then_some(now + len)
        })
        .ok()
        .map(|_| Budget { used, len })
    }
}

impl Drop for Budget<'_> {
    fn drop(&mut self) {
        self.used.fetch_sub(self.len, Ordering::AcqRel);
    }
}

/// The owner's sessions and which of them are being seeded.
#[derive(Debug, Default)]
struct Sessions {
    live: HashMap<ConnId, Live>,
    /// Sessions whose seeds are not all sent yet.
    seeding: usize,
}

#[derive(Debug)]
struct Live {
    handle: Handle,
    state: SeedState,
    /// Seed batches queued and not yet out.
    batches: u32,
    /// The number of the version it serves.
    version: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SeedState {
    /// Its chunk-ID list has not arrived.
    Waiting,
    /// Its seeds are being sent.
    Seeding,
    /// Its seeds are out; it hears whether the owner is seeding.
    Seeded,
}

impl Sessions {
    /// Session `id` starts receiving a batch of seeds.
    fn seeding(&mut self, id: ConnId) {
        if let Some(live) = self.live.get_mut(&id) {
            live.batches += 1;
            if live.state == SeedState::Seeding {
                return;
            }
            live.state = SeedState::Seeding;
            self.seeding += 1;
            if self.seeding == 1 {
                self.tell_seeded(true);
            }
        }
    }

    /// Session `id` was given no seeds. Unless a batch is under way, its
    /// seeds are out at once; returns whether others are seeding, to
    /// tell it, if so.
    fn seeded_nothing(&mut self, id: ConnId) -> Option<bool> {
        let busy = self.seeding > 0;
        let live = self.live.get_mut(&id)?;
        if live.state == SeedState::Seeding {
            return None;
        }
        live.state = SeedState::Seeded;
        Some(busy)
    }

    /// Session `id` ended: whatever it was being seeded is over.
    fn ended(&mut self, id: ConnId) {
        if let Some(live) = self.live.get_mut(&id) {
            live.batches = live.batches.min(1);
        }
        self.seeds_out(id);
        self.live.remove(&id);
    }

    /// A batch of session `id`'s seeds is out. Once all are, tells it
    /// whether others are still seeding, and everyone when the last one
    /// is done.
    fn seeds_out(&mut self, id: ConnId) {
        let Some(live) = self.live.get_mut(&id) else {
            return;
        };
        if live.state != SeedState::Seeding {
            return;
        }
        live.batches = live.batches.saturating_sub(1);
        if live.batches > 0 {
            return;
        }
        live.state = SeedState::Seeded;
        self.seeding -= 1;
        if self.seeding == 0 {
            self.tell_seeded(false);
        } else {
            let _ = live.handle.send_message(&Message::Seeding(true));
        }
    }

    /// Sends SEEDING to every session whose own seeds are out.
    fn tell_seeded(&self, busy: bool) {
        for live in self.live.values() {
            if live.state == SeedState::Seeded {
                let _ = live.handle.send_message(&Message::Seeding(busy));
            }
        }
    }
}

/// What peers are told when the owner stops because its file changed.
const STOPPED: &str = "the owner's file changed while being shared; the owner has stopped";

/// One peer's session, as the wire module's "owner session" describes.
fn serve(shared: &Arc<Shared>, mut stream: TcpStream, addr: &str, stats: Arc<Stats>) -> Result<()> {
    let timeouts = shared.timeouts;
    net::configure_with(&stream, &timeouts).map_err(|e| Error::io("configure connection", e))?;
    let peer_ip = stream
        .peer_addr()
        .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip());
    let mut dec = Decoder::new();
    let secret = shared.secret.as_deref();
    let hello = conn::read_hello(&mut stream, &mut dec, addr, secret, &timeouts)?;
    let who = hello.name.clone();
    let v = shared.current();
    conn::answer_hello(
        &mut stream,
        v.file_id,
        "owner",
        &hello,
        shared.secret.as_deref(),
    )
    .map_err(|e| Error::wire(who.as_str(), e.into()))?;
    dec.set_layout(v.store.layout().clone());
    let source: Arc<dyn ChunkSource> = Arc::new(Serving {
        shared: Arc::clone(shared),
        v: Arc::clone(&v),
    });
    let conn = Conn::start(
        stream,
        dec,
        Setup {
            name: "owner".into(),
            who: who.clone(),
            source: Some(source),
            announce: None,
            stats: Some(stats),
            timeouts,
        },
    )?;
    let handle = conn.handle().clone();
    let _ = handle.send(Outgoing::Shared(Arc::clone(&v.manifest_frames)));
    shared.sessions().live.insert(
        handle.id(),
        Live {
            handle: handle.clone(),
            state: SeedState::Waiting,
            batches: 0,
            version: v.number,
        },
    );
    // A new version may have become current since this session took its
    // own, and missed this session when it told every session.
    let now = shared.current();
    if now.number != v.number {
        handle.leave_with(&Message::Version(now.file_id));
    }
    let mut role = Session {
        shared: Arc::clone(shared),
        v: Arc::clone(&v),
        phase: Phase::Waiting,
        peer_ip,
        registration: None,
    };
    let result = conn.run(&mut role);
    // Logged here, before the session leaves the map, so an owner that
    // stops has every session's last word out before its own.
    match &result {
        Ok(()) => log::info!("owner: {who} disconnected"),
        Err(e) => log::warn!("owner: {e}; connection closed"),
    }
    shared.sessions().ended(handle.id());
    if role.registration.is_some() {
        let mut tracker = v.tracker();
        let actions = tracker.link_down(handle.id(), Instant::now());
        shared.act(actions);
    }
    Ok(())
}

/// Where a session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Before the peer's chunk-ID list (or a status request).
    Waiting,
    /// A peer: seeded, then asking and reporting.
    Serving,
    /// `swarm status`: asks for the registry, nothing else.
    Status,
}

/// What a REGISTER said, until the chunk-ID list completes it.
struct Registration {
    addr: String,
    wired: bool,
    sources: u8,
    neighbour: String,
}

/// What the owner does with one peer's messages: register it, seed it
/// once its chunk-ID list is in, then answer its requests and take its
/// reports. Its writer serves seeds and answers in order; no session
/// ever waits on another.
struct Session {
    shared: Arc<Shared>,
    /// The version this session serves.
    v: Arc<Version>,
    phase: Phase,
    /// Where the session comes from: a registration without a host means
    /// this address.
    peer_ip: IpAddr,
    registration: Option<Registration>,
}

impl Role for Session {
    fn accepts(&self) -> Kinds {
        const WAITING: Kinds = Kinds::of(&[Kind::ChunkList, Kind::KeepAlive, Kind::StatusRequest]);
        const REGISTER: Kinds = Kinds::of(&[
            Kind::Register,
            Kind::ChunkList,
            Kind::KeepAlive,
            Kind::StatusRequest,
        ]);
        const SERVING: Kinds = Kinds::of(&[
            Kind::Request,
            Kind::Have,
            Kind::Progress,
            Kind::Unreachable,
            Kind::Complete,
            Kind::KeepAlive,
        ]);
        const STATUS: Kinds = Kinds::of(&[Kind::StatusRequest, Kind::KeepAlive]);
        match self.phase {
            Phase::Waiting if self.registration.is_some() => WAITING,
            Phase::Waiting => REGISTER,
            Phase::Serving => SERVING,
            Phase::Status => STATUS,
        }
    }

    fn on_message(&mut self, msg: Message<'_>, conn: &Handle) -> Result<()> {
        let who = conn.who();
        let (shared, v) = (&self.shared, &self.v);
        match msg {
            Message::Register {
                wired,
                sources,
                port,
                host,
                neighbour,
            } => {
                let addr = if host.is_empty() {
                    std::net::SocketAddr::new(self.peer_ip, port).to_string()
                } else {
                    format!("{host}:{port}")
                };

                self.registration = Some(Registration {
                    addr,
                    wired,
                    sources,
                    neighbour: neighbour.to_string(),
                });
            }
            Message::ChunkList(peer_has) => self.start(peer_has, conn),
            Message::Request(id) => {
                log::info!(target: "swarm::chunk", "owner: received request for chunk {id} from {who}");
                match conn.send(Outgoing::Chunk(id)) {
                    Ok(()) | Err(SendError::Closed) => {}
                    Err(SendError::Full) => {
                        return Err(Error::wire(who, wire::Error::Flood(conn::INBOX)));
                    }
                }
            }
            Message::Have(ids) => v.tracker().have(conn.id(), &ids),
            Message::Progress { rate } => v.tracker().progress(conn.id(), rate),
            Message::Unreachable(addr) => {
                let mut tracker = v.tracker();
                let actions = tracker.unreachable(conn.id(), addr);
                shared.act(actions);
            }
            Message::Complete => {
                let mut tracker = v.tracker();
                let actions = tracker.complete(conn.id());
                shared.act(actions);
            }
            Message::StatusRequest => {
                self.phase = Phase::Status;
                let peers = v.tracker().status();
                let mut buf = Vec::new();
                let limit = v.store.layout().frame_limit();
                wire::encode_status(shared.sent.load(Ordering::Relaxed), &peers, limit, &mut buf);
                if conn.send(Outgoing::Frames(buf)) == Err(SendError::Full) {
                    return Err(Error::wire(who, wire::Error::Flood(conn::INBOX)));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl Session {
    /// The peer's chunk-ID list is in: register it (if it registered),
    /// choose its seeds and send them.
    fn start(&mut self, peer_has: ChunkSet, conn: &Handle) {
        let (shared, v) = (&self.shared, &self.v);
        let who = conn.who();
        let layout = v.store.layout();
        log::info!(
            "owner: received chunk-ID list from {who} ({} of {} chunks)",
            peer_has.len(),
            layout.count()
        );
        self.phase = Phase::Serving;
        let mut known = false;
        let mut wired = false;
        let mut actions = Vec::new();
        // Held until the decisions are carried out: two sessions that
        // register at once must send their NEIGHBOURs in the order the
        // tracker decided them, or a peer keeps a stale neighbour.
        let mut tracker = v.tracker();
        if let Some(reg) = &self.registration {
            if reg.addr.len() > wire::MAX_ADDR_LEN {
                // NEIGHBOUR could not name it whole to other peers.
                let why = format!(
                    "{} is longer than {} bytes",
                    crate::tracker::BAD_ADDRESS,
                    wire::MAX_ADDR_LEN
                );
                log::warn!("owner: refused {who}: {why}");
                conn.refuse(&why);
                return;
            }
            let joined = tracker.register(
                conn.id(),
                &reg.addr,
                reg.wired,
                reg.sources,
                &reg.neighbour,
                peer_has.clone(),
            );
            match joined {
                Ok((joined, todo)) => {
                    known = joined.known;
                    wired = reg.wired;
                    actions = todo;
                    conn.stats().set_member();
                }
                Err(reason) => {
                    log::warn!("owner: refused {who}: {reason}");
                    conn.refuse(&reason);
                    return;
                }
            }
        }
        let seeds = {
            let mut seeder = v.seeder.lock().unwrap_or_else(|p| p.into_inner());
            // A peer the owner wires gets a share only once, and only if
            // its place in the join order is due one: the rest fill from
            // the ring.
            if wired && (known || !seeder.share_due()) {
                ChunkSet::new(layout.count())
            } else {
                seeder.choose(layout, &peer_has)
            }
        };
        log::info!("owner: seeding {} chunks to {who}", seeds.len());
        tracker.seeded(conn.id(), &seeds);
        // NEIGHBOUR goes before the seeds: a peer whose seeds are in and
        // who has no neighbour turns to the owner for the rest.
        shared.act(actions);
        drop(tracker);
        shared.push_seeds(conn, seeds);
    }
}

/// The tracker's clock: ends the grace of peers away too long, and logs
/// the registry every few seconds while peers are downloading.
fn track(shared: &Arc<Shared>) {
    let mut last_table = Instant::now();
    while !shared.stopper.stopped() {
        thread::sleep(Duration::from_millis(100));
        let now = Instant::now();
        let v = shared.current();
        let mut tracker = v.tracker();
        let actions = tracker.tick(now);
        shared.act(actions);
        drop(tracker);
        if now.saturating_duration_since(last_table) >= TABLE_EVERY {
            last_table = now;
            let (active, peers) = {
                let t = v.tracker();
                (t.active(), t.status())
            };
            if active {
                let layout = v.store.layout();
                let text = tracker::table(
                    &peers,
                    layout.count(),
                    layout.file_len(),
                    shared.sent.load(Ordering::Relaxed),
                    TABLE_ROWS,
                );
                log::info!("owner: swarm status\n{text}");
            }
        }
    }
}

/// Logs a version the owner is about to serve.
fn log_version(number: u32, m: &Manifest, prev: Option<&Manifest>, took: Duration) {
    let what = if number == 1 {
        "indexed".to_string()
    } else {
        format!("indexed version {number} of")
    };
    log::info!(
        "owner: {what} {} ({} bytes, {} chunks of {}) in {:.2} s; sha256 {}",
        m.name(),
        m.layout().file_len(),
        m.layout().count(),
        chunking_text(m.layout()),
        took.as_secs_f64(),
        manifest::to_hex(m.file_hash()),
    );
    let shared = prev.map(|prev| {
        let old: HashSet<&Digest> = prev.chunk_hashes().iter().collect();
        let same = m.chunk_hashes().iter().filter(|d| old.contains(d)).count();
        format!(
            "; {same} of its {} chunks were in the version before",
            m.layout().count()
        )
    });
    log::info!(
        "owner: version {number}: file ID {}, {} chunks{}",
        crate::peer::short_id(&m.id()),
        m.layout().count(),
        shared.unwrap_or_default()
    );
}

/// The first chunk `store` does not hold.
fn first_missing(store: &Store) -> Option<ChunkId> {
    let held = store.snapshot();
    store.layout().ids().find(|&id| !held.contains(id))
}

/// Writes version `v`'s chunk files on a thread of its own; sessions
/// read chunks from the source file (verified) until then.
fn start_split(shared: &Arc<Shared>, v: Arc<Version>) -> Result<()> {
    let splitter = Arc::clone(shared);
    thread::Builder::new()
        .name("split".into())
        .spawn(move || {
            let _splitting = v.splitting.lock().unwrap_or_else(|p| p.into_inner());
            let started = Instant::now();
            match v.store.split_from(&splitter.source, &v.retired) {
                Ok(_) if v.retired.load(Ordering::Acquire) => {
                    log::info!("owner: version {} is replaced; its split stopped", v.number);
                }
                Ok(kept) => log::info!(
                    "owner: wrote {} of {} chunk files under {} in {:.2} s (reused {kept} unchanged chunk files)",
                    v.store.layout().count() - kept,
                    v.store.layout().count(),
                    splitter.dir.display(),
                    started.elapsed().as_secs_f64()
                ),
                // The split goes in ID order, passing over the chunks held:
                // the first one not held is where it stopped.
                Err(Error::Integrity(_)) => match first_missing(&v.store) {
                    Some(id) => splitter.source_changed(&v, id),
                    None => splitter.fail(Error::Bug("split failed past the last chunk".into())),
                },
                // Cut short, or truncated, by a writer: a change to follow.
                Err(e @ Error::Io { .. }) if !splitter.once && !v.store.is_complete() => {
                    log::warn!("owner: {e}");
                    if let Some(id) = first_missing(&v.store) {
                        splitter.source_changed(&v, id);
                    }
                }
                Err(e) => splitter.fail(e),
            }
        })
        .map_err(|e| Error::io("start the split thread", e))?;
    Ok(())
}

/// How long the file must stay unchanged before it is indexed again: a
/// file being written is indexed once, when the writer is done.
const QUIET: Duration = Duration::from_secs(1);

/// How often the watcher looks at the file.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// Set by SIGHUP: index the file again now.
static HANGUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hangup(_: libc::c_int) {
    HANGUP.store(true, Ordering::SeqCst);
}

/// Makes SIGHUP ask for a new index instead of ending the process.
fn catch_hangup() {
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe.
    unsafe {
        libc::signal(libc::SIGHUP, on_hangup as *const () as libc::sighandler_t);
    }
}

/// What the watcher compares to notice a change: size, modification and
/// change times, and the inode (a file replaced by rename).
fn stamp(path: &std::path::Path) -> Option<(u64, i64, i64, i64, i64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.ino(),
    ))
}

/// Follows the source file: once it has changed and then stayed quiet
/// for [`QUIET`] (or on SIGHUP, or when a read found it changed), indexes
/// it while the current version is still served, and makes the result
/// the current version if it differs. With `--once`, a change stops the
/// owner instead.
fn watch(shared: &Arc<Shared>) {
    let mut seen = stamp(&shared.source);
    // When a change was last seen, while one is pending.
    let mut pending: Option<Instant> = None;
    while !shared.stopper.stopped() {
        thread::sleep(WATCH_EVERY);
        let now = Instant::now();
        let stamp_now = stamp(&shared.source);
        if stamp_now != seen {
            seen = stamp_now;
            pending = Some(now);
        }
        let asked = HANGUP.swap(false, Ordering::SeqCst);
        let suspect = shared.suspect.load(Ordering::Acquire);
        if asked || (suspect && pending.is_none()) {
            pending = Some(now.checked_sub(QUIET).unwrap_or(now));
        }
        let Some(since) = pending else { continue };
        if now.saturating_duration_since(since) < QUIET {
            continue;
        }
        let before = stamp(&shared.source);
        let doing = if shared.once {
            "checking its bytes"
        } else {
            "indexing it again"
        };
        log::info!("owner: {} changed; {doing}", shared.source.display());
        let started = Instant::now();
        let indexed = store::index(&shared.source, shared.chunk_size, shared.chunking);
        if stamp(&shared.source) != before {
            log::info!(
                "owner: {} changed again while being indexed; waiting for it to settle",
                shared.source.display()
            );
            seen = stamp(&shared.source);
            pending = Some(Instant::now());
            continue;
        }
        pending = None;
        shared.suspect.store(false, Ordering::Release);
        if shared.once {
            // Touched but the same bytes is no change.
            let v = shared.current();
            let changed = match &indexed {
                Ok(m) if m.id() == v.file_id => {
                    log::info!("owner: {} is unchanged", shared.source.display());
                    continue;
                }
                Ok(m) => first_difference(v.store.manifest(), m),
                Err(_) => None,
            };
            shared.fail(match changed.or_else(|| v.store.layout().ids().next()) {
                Some(id) => shared.changed(id),
                None => Error::Integrity(format!(
                    "{} changed while being shared; restart the owner to share the new version",
                    shared.source.display()
                )),
            });
            return;
        }
        match indexed {
            Ok(m) if m.id() == shared.current().file_id => {
                log::info!("owner: {} is unchanged", shared.source.display());
                let v = shared.current();
                // A split that a passing change cut short goes on.
                if !v.store.is_complete()
                    && v.splitting.try_lock().is_ok()
                    && let Err(e) = start_split(shared, v)
                {
                    shared.fail(e);
                    return;
                }
            }
            Ok(m) => {
                if let Err(e) = switch_to(shared, m, started.elapsed()) {
                    shared.fail(e);
                    return;
                }
            }
            Err(e) => {
                log::warn!("owner: cannot index the new version: {e}; serving the current one");
            }
        }
    }
}

/// The first chunk of `old` that `new` does not have at the same place.
fn first_difference(old: &Manifest, new: &Manifest) -> Option<ChunkId> {
    old.layout().ids().find(|&id| {
        let same = new.layout().chunk_id(id.get()).is_some_and(|at| {
            new.chunk_hash(at) == old.chunk_hash(id)
                && new.layout().chunk_len(at) == old.layout().chunk_len(id)
        });
        !same
    })
}

/// Makes `m` the current version: every session of an older one is told
/// VERSION and ends (its peer comes back for the new manifest), and the
/// new chunk files are written while the new version is served.
fn switch_to(shared: &Arc<Shared>, m: Manifest, took: Duration) -> Result<()> {
    let old = shared.current();
    let number = old.number + 1;
    log_version(number, &m, Some(old.store.manifest()), took);
    let setup = VersionSetup {
        dir: shared.dir.clone(),
        peers: shared.peers,
        max_peers: shared.max_peers,
        prev: Some(old.store.manifest().clone()),
    };
    let file_id = m.id();
    // The old version's sessions send nothing more after the frame they
    // are writing (VERSION goes next, then they stop), and its split
    // stops between two chunks; only then does the new version take over
    // the chunk files, some of which it moves.
    old.retired.store(true, Ordering::Release);
    let told = tell_older(shared, number, file_id);
    drop(old.splitting.lock().unwrap_or_else(|p| p.into_inner()));
    let next = Arc::new(Version::new(number, m, &setup, Some(&old))?);
    *shared.current.lock().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&next);
    // Sessions that began meanwhile got the old version.
    tell_older(shared, number, file_id);
    log::info!("owner: now sharing version {number}; told {told} sessions");
    start_split(shared, next)
}

/// Sends VERSION to every session of a version older than `number`, as
/// its last frame; returns how many there were.
fn tell_older(shared: &Shared, number: u32, file_id: [u8; 32]) -> usize {
    let older: Vec<Handle> = shared
        .sessions()
        .live
        .values()
        .filter(|l| l.version < number)
        .map(|l| l.handle.clone())
        .collect();
    for handle in &older {
        handle.leave_with(&Message::Version(file_id));
    }
    older.len()
}

const MIB: f64 = 1024.0 * 1024.0;

/// How the chunks are cut, for the "indexed" line: "102400 bytes, fixed
/// chunking", or the actual average and the scheme's bounds.
fn chunking_text(layout: &Layout) -> String {
    match layout.chunking() {
        Chunking::Fixed => format!("{} bytes, fixed chunking", layout.chunk_size()),
        Chunking::Content => {
            let (min, avg, max) = crate::manifest::content_sizes(layout.chunk_size());
            let mean = layout.file_len() / u64::from(layout.count().max(1));
            format!("{mean} bytes on average, content chunking of min/avg/max {min}/{avg}/{max}")
        }
    }
}

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
    use super::*;

    fn layout(count: u32) -> Layout {
        Layout::new(u64::from(count) * 1024 - 10, 1024).unwrap()
    }

    fn raw(set: &ChunkSet) -> Vec<u32> {
        let l = Layout::new(u64::from(set.capacity()) * 1024, 1024).unwrap();
        set.iter(&l).map(|id| id.get()).collect()
    }

    #[test]
    fn first_n_peers_between_them_get_every_chunk_once() {
        let l = layout(11);
        let mut seeder = Seeder::new(11, 5);
        let empty = ChunkSet::new(11);
        let shares: Vec<_> = (0..5).map(|_| raw(&seeder.choose(&l, &empty))).collect();
        // 11 chunks for 5 peers: 3 + 2 + 2 + 2 + 2, each chunk once.
        assert_eq!(
            shares,
            vec![
                vec![0, 1, 2],
                vec![3, 4],
                vec![5, 6],
                vec![7, 8],
                vec![9, 10]
            ]
        );
        // A sixth peer starts the next round.
        assert_eq!(raw(&seeder.choose(&l, &empty)), vec![0, 1, 2]);
    }

    #[test]
    fn only_the_first_n_wired_peers_get_shares() {
        let mut seeder = Seeder::new(50, 5);
        let due: Vec<usize> = (0..1000).filter(|_| seeder.share_due()).collect();
        assert_eq!(due, vec![0, 1, 2, 3, 4]);
        let mut many = Seeder::new(50, 150);
        assert_eq!((0..400).filter(|_| many.share_due()).count(), 150);
    }

    #[test]
    fn a_returning_peer_gets_least_handed_chunks_it_lacks() {
        let l = layout(10);
        let mut seeder = Seeder::new(10, 2);
        let empty = ChunkSet::new(10);
        assert_eq!(raw(&seeder.choose(&l, &empty)), vec![0, 1, 2, 3, 4]);
        let mut has = ChunkSet::new(10);
        for i in [5, 6] {
            has.insert(l.chunk_id(i).unwrap());
        }
        // 5 and 6 are held; 7, 8, 9 have never been handed out.
        assert_eq!(raw(&seeder.choose(&l, &has)), vec![0, 1, 7, 8, 9]);
        let mut full = ChunkSet::new(10);
        l.ids().for_each(|id| {
            full.insert(id);
        });
        assert!(seeder.choose(&l, &full).is_empty());
    }

    #[test]
    fn after_a_change_shares_split_what_peers_lack() {
        let l = layout(100);
        let mut seeder = Seeder::new(100, 5);
        seeder.share_what_is_lacking();
        // Five peers that hold all but the 10 changed chunks split them.
        let mut old = ChunkSet::new(100);
        l.ids().filter(|id| id.get() % 10 != 3).for_each(|id| {
            old.insert(id);
        });
        let shares: Vec<_> = (0..5).map(|_| raw(&seeder.choose(&l, &old))).collect();
        assert_eq!(
            shares,
            vec![
                vec![3, 13],
                vec![23, 33],
                vec![43, 53],
                vec![63, 73],
                vec![83, 93]
            ]
        );
        // One that holds nothing gets 1/N of the file, least handed first.
        let fresh = raw(&seeder.choose(&l, &ChunkSet::new(100)));
        let want: Vec<u32> = (0..).filter(|i| i % 10 != 3).take(20).collect();
        assert_eq!(fresh, want);
    }

    #[test]
    fn more_peers_than_chunks_seeds_each_chunk_once_per_round() {
        let l = layout(2);
        let mut seeder = Seeder::new(2, 5);
        let empty = ChunkSet::new(2);
        let shares: Vec<_> = (0..6).map(|_| raw(&seeder.choose(&l, &empty))).collect();
        // The ring carries chunks 0 and 1 to the three peers seeded none.
        assert_eq!(
            shares,
            vec![vec![0], vec![1], vec![], vec![], vec![], vec![0]]
        );
        assert!(
            Seeder::new(0, 5)
                .choose(&Layout::new(0, 1024).unwrap(), &ChunkSet::new(0))
                .is_empty()
        );
    }
}
