//! A peer of the ring: fetch, trade, reassemble, verify, leave.
//!
//! [`run`] binds the upload port first (a taken port fails at once),
//! resumes from a cached manifest and chunk files if `--dir` has them,
//! and starts one thread per side, each running [`crate::conn`]
//! connections with a role of its own:
//!
//! - the owner link ([`owner_link`]) fetches the manifest and this peer's
//!   seeded chunks, registers the peer with the owner (who wires it into
//!   the ring unless `--download-neighbor` did), and stays on as a source
//!   the coordinator may ask and as the channel for the coordinator's
//!   progress reports and the owner's re-wiring;
//! - the upload side ([`upload`]) serves whoever downloads from this peer;
//! - the download side ([`download`]) connects to the download neighbours
//!   (`--sources` of them at most), those given or those the owner last
//!   assigned.
//!
//! Connections store the chunks they receive (the store verifies each
//! one first) and report everything to the coordinator on one channel of
//! [`Event`]s. The coordinator alone owns the [`Scheduler`]: it decides
//! which source is asked for which chunk (with several download
//! neighbours, the chunks fewest of them hold first), lets requests that are not
//! answered in time lapse so another source can be asked, calls in the
//! owner for the tail of the file (the end game) or while the ring stalls,
//! reassembles and verifies the file, and decides when to leave.

mod download;
mod intake;
mod owner_link;
mod upload;

pub(crate) use owner_link::{NEW_VERSION, receive_manifest};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use crate::auth::Secret;
use crate::chunks::ChunkSet;
use crate::cli::PeerArgs;
use crate::conn::{ConnId, Handle, Outgoing, id_list};
use crate::error::{Error, Result};
use crate::manifest::{ChunkId, Digest, Manifest, to_hex};
use crate::net::{self, Stopper};
use crate::scheduler::{Arrival, Order, Scheduler, SourceId, SourceKind};
use crate::store::{self, Put, Store};
use crate::wire::{self, Message};

/// Connections the upload port serves at once; past it, the one that has
/// done least is closed to make room.
pub const MAX_UPLOAD_CONNECTIONS: usize = 16;

/// Corrupt chunks a source may send before it is dropped.
pub const MAX_BAD_CHUNKS: u32 = 3;

/// Requests in flight to the owner in the end game: enough to keep a
/// chunk coming, few enough not to take chunks the ring is about to bring.
const ENDGAME_WINDOW: usize = 2;

/// The end game asks the owner for at most this fraction (1 / n) of what
/// it seeded this peer, so the owner sends at most about 1 + 1 / n times
/// the file in all.
const ENDGAME_BUDGET: u32 = 5;

/// How many times slower per chunk than the owner a busy download
/// neighbour may be before the owner helps out.
const SLOW_FACTOR: u32 = 4;

/// Requests in flight at most to a download neighbour that fails beside
/// others that do not.
const FAILING_WINDOW: usize = 2;

/// How old a request to one download neighbour must be at least before
/// another with room takes it over in the end game.
const STEAL_AFTER: Duration = Duration::from_millis(500);

/// How long a peer the owner wires waits without a download neighbour,
/// once its seeds are in, before it fetches the rest from the owner.
const ALONE_GRACE: Duration = Duration::from_secs(1);

/// Events queued for the coordinator at most.
const EVENTS: usize = 4096;

/// How often the coordinator checks deadlines.
const TICK: Duration = Duration::from_millis(100);

/// What the peer's threads tell the coordinator.
#[derive(Debug)]
pub(crate) enum Event {
    /// The manifest is known and the store is open.
    Store(Arc<Store>),
    /// A connection to a source (a download neighbour, the owner) is up.
    /// For a ring source, the download neighbour's address it was dialed
    /// for.
    SourceUp(SourceKind, Handle, Option<SocketAddr>),
    /// A source listed every chunk it holds.
    Offered(ConnId, ChunkSet),
    /// A source gained chunks.
    Have(ConnId, Vec<ChunkId>),
    /// A chunk arrived from a source and the store dealt with it.
    Received {
        from: ConnId,
        id: ChunkId,
        put: Put,
        bytes: u64,
    },
    /// The owner has sent every seed.
    SeedDone(ConnId),
    /// Whether the owner is seeding any peer now.
    OwnerSeeding(bool),
    /// A source's connection ended.
    SourceDown(ConnId),
    /// An upload connection asked for a chunk: it downloads from us.
    Downloader(Handle),
    /// A downloader reports it holds every chunk.
    DownloaderComplete(ConnId),
    /// A downloader's connection ended.
    DownloaderGone(ConnId),
    /// The chunks the owner link listed to the owner in a new session.
    OwnerListed(ChunkSet),
    /// The owner assigned download neighbours, nearest first, each with
    /// its address as the owner wrote it (none: no one yet).
    Neighbour(Vec<(SocketAddr, String)>),
    /// The download side cannot reach a neighbour at this address.
    Unreachable(SocketAddr),
    /// The owner reports every peer it knows holds the whole file.
    SwarmComplete,
    /// The owner shares another version of the file, with this manifest.
    NewVersion(Manifest),
    /// The output file is started: every chunk held is in it, and every
    /// chunk stored from now on goes in as it is stored.
    Assembling(Result<()>),
    /// A thread hit an error the peer cannot get past.
    Fatal(Error),
}

/// State the peer's threads share: flags and counters, and the event
/// channel. Nothing here needs a lock.
#[derive(Debug)]
pub(crate) struct Shared {
    /// This peer's name in logs, "peer PORT".
    pub name: String,
    started: Instant,
    /// Set when the peer is leaving; every loop checks it.
    stop: AtomicBool,
    /// Set once the file is verified; the dialers then only deliver
    /// COMPLETE.
    verified: AtomicBool,
    /// Set once the output file's blocks are allocated: the owner link
    /// registers (and so is seeded) only then, so a disk too small for
    /// the file stops the peer before anything is fetched.
    pub output_ready: AtomicBool,
    /// Set while the coordinator wants the owner as a source (the end
    /// game, or a stalled ring): the owner link reconnects only then.
    need_owner: AtomicBool,
    /// Per download neighbour that sent corrupt chunks, milliseconds
    /// after `started` before which it must not be dialed again.
    shunned: Mutex<HashMap<SocketAddr, u64>>,
    /// Whether the owner wires this peer into the ring.
    pub wired: bool,
    /// How many download neighbours this peer has at most (`--sources`).
    pub sources: u8,
    /// The download neighbours: given, or assigned by the owner (none
    /// until they are, or while the peer is alone in the ring).
    targets: Mutex<Vec<SocketAddr>>,
    /// What this peer proves, and requires, on every connection; `None`
    /// for an open swarm.
    pub secret: Option<Arc<Secret>>,
    pub events: Sender<Event>,
}

impl Shared {
    /// Whether the peer is leaving.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Whether the file is verified.
    pub fn verified(&self) -> bool {
        self.verified.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The download neighbours now, nearest first.
    pub fn targets(&self) -> Vec<SocketAddr> {
        self.targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether `addr` is one of the download neighbours now.
    pub fn is_target(&self, addr: SocketAddr) -> bool {
        self.targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&addr)
    }

    fn set_targets(&self, addrs: Vec<SocketAddr>) {
        *self.targets.lock().unwrap_or_else(|p| p.into_inner()) = addrs;
    }

    /// Until when (milliseconds after the start) the neighbour at `addr`
    /// is not to be dialed.
    pub fn shunned_until(&self, addr: SocketAddr) -> u64 {
        let shunned = self.shunned.lock().unwrap_or_else(|p| p.into_inner());
        shunned.get(&addr).copied().unwrap_or(0)
    }

    fn shun(&self, addr: SocketAddr, until_ms: u64) {
        let mut shunned = self.shunned.lock().unwrap_or_else(|p| p.into_inner());
        shunned.insert(addr, until_ms);
    }

    /// Tells the coordinator; it is gone only when the peer is leaving.
    pub fn report(&self, event: Event) {
        let _ = self.events.send(event);
    }
}

/// What a finished peer reports.
#[derive(Debug, Clone)]
pub struct Report {
    /// Where the verified file was written.
    pub path: PathBuf,
    /// Its whole-file SHA-256: computed over the file with
    /// `--verify-output`, else the manifest's (every chunk in the file was
    /// checked against its own digest before it was written).
    pub digest: Digest,
    /// Chunk bytes received from the owner.
    pub from_owner: u64,
    /// Chunk bytes received from the download neighbours.
    pub from_ring: u64,
    /// Chunk bytes received from each source, by name ("the owner",
    /// "peer 9002"), in the order they first delivered.
    pub by_source: Vec<(String, u64)>,
    /// Chunk bytes found in `--dir` (resumed, or from an earlier version).
    pub reused: u64,
    /// Time from start until the file was verified.
    pub elapsed: Duration,
}

/// The most chunk requests one link may have in flight: about 4 MiB
/// worth, at least 4. Within it each source's window is sized to the
/// link it shows.
pub fn request_window(chunk_size: u32) -> usize {
    ((4 << 20) / chunk_size as usize).clamp(4, 64)
}

/// Runs a peer until it has the verified file and may leave. When the
/// owner shares a new version meanwhile, the peer takes it up at once:
/// every chunk of the new version it holds is reused from its directory,
/// and only the rest is fetched.
pub fn run(args: &PeerArgs) -> Result<Report> {
    // First, so a bad secret file fails before anything else is done.
    let secret = match &args.secret_file {
        Some(path) => Some(Arc::new(Secret::load(path)?)),
        None => None,
    };
    let listener = net::listen(args.listen)?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("read the listening address", e))?;
    let name = format!("peer {}", local.port());
    match args.download_neighbors.as_slice() {
        [] if args.sources == 1 => log::info!(
            "{name}: listening on {local}; owner {}, which assigns the download neighbour",
            args.owner
        ),
        [] => log::info!(
            "{name}: listening on {local}; owner {}, which assigns {} download neighbours",
            args.owner,
            args.sources
        ),
        [addr] => log::info!(
            "{name}: listening on {local}; owner {}, download neighbour {addr}",
            args.owner
        ),
        addrs => log::info!(
            "{name}: listening on {local}; owner {}, download neighbours {}",
            args.owner,
            addr_list(addrs)
        ),
    }
    // Resume: a cached manifest lets the ring start before the owner is
    // reachable, with every chunk file re-hashed first.
    let cached = match store::read_manifest(&args.dir) {
        Ok(m) => m,
        Err(e) => {
            log::warn!("{name}: ignoring the cached manifest: {e}");
            None
        }
    };
    let mut store = None;
    if let Some(m) = cached {
        let s = Arc::new(Store::open(&args.dir, m)?);
        log::info!(
            "{name}: resuming from {}: {} of {} chunks verified on disk",
            args.dir.display(),
            s.held(),
            s.layout().count()
        );
        store = Some(s);
    }
    let started = Instant::now();
    // Where this version's distribution is counted from: the start, then
    // the moment the version before was verified (or left unfinished).
    let mut mark = Mark {
        at: started,
        received: 0,
    };
    // The manifest of the version last verified and written to the
    // output, which the next version's output may start as a clone of.
    let mut before = None;
    loop {
        let listener = listener
            .try_clone()
            .map_err(|e| Error::io("share the listening socket", e))?;
        match round(
            args,
            listener,
            &secret,
            started,
            mark,
            store.take(),
            before.take(),
        )? {
            Ending::Left(report) => return Ok(report),
            Ending::Switch(prev, manifest, since, verified) => {
                mark = since;
                before = verified.then(|| prev.manifest().clone());
                log::info!(
                    "{name}: the owner now shares version {} of {}; switching to it",
                    short_id(&manifest.id()),
                    manifest.name()
                );
                let opening = Instant::now();
                let next = Store::open_after(&args.dir, manifest, &prev)?;
                drop(prev);
                let reused = next.reused();
                log::info!(
                    "{name}: reused {} chunks ({:.2} MiB) of the earlier version from {} in {:.2} s: {} in place, {} moved; {} to fetch",
                    reused.in_place + reused.moved,
                    reused.bytes as f64 / MIB,
                    args.dir.display(),
                    opening.elapsed().as_secs_f64(),
                    reused.in_place,
                    reused.moved,
                    next.layout().count() - next.held(),
                );
                store = Some(Arc::new(next));
            }
        }
    }
}

/// How a round of the peer ended.
enum Ending {
    /// The file is verified and the peer may leave.
    Left(Report),
    /// The owner shares a new version: the store of the old one (to take
    /// its verified chunks from), the new manifest, where the new
    /// version's distribution is counted from, and whether the old one
    /// was verified and written to the output.
    Switch(Arc<Store>, Manifest, Mark, bool),
}

/// Where a version's distribution is counted from: its time from the
/// moment the peer took it up, its bytes from the moment the version
/// before was verified (announcements and manifests included).
#[derive(Clone, Copy, Debug)]
struct Mark {
    at: Instant,
    received: u64,
}

impl Mark {
    fn now() -> Mark {
        Mark {
            at: Instant::now(),
            received: wire::bytes_received(),
        }
    }
}

/// The first 8 hex digits of a file ID, as logs name a version.
pub fn short_id(id: &Digest) -> String {
    to_hex(id)[..8].to_string()
}

/// One version of the file, from an open store (or none yet: the owner's
/// manifest opens it) until the peer may leave or the owner shares
/// another version.
fn round(
    args: &PeerArgs,
    listener: std::net::TcpListener,
    secret: &Option<Arc<Secret>>,
    started: Instant,
    mark: Mark,
    store: Option<Arc<Store>>,
    before: Option<Manifest>,
) -> Result<Ending> {
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("read the listening address", e))?;
    // Bounded: a connection that floods us with messages waits for the
    // coordinator instead of growing the queue. Nothing the coordinator
    // does waits on a connection, so this cannot deadlock.
    let (events, event_rx) = crossbeam_channel::bounded(EVENTS);
    let shared = Arc::new(Shared {
        name: format!("peer {}", local.port()),
        started,
        stop: AtomicBool::new(false),
        verified: AtomicBool::new(false),
        output_ready: AtomicBool::new(false),
        need_owner: AtomicBool::new(false),
        shunned: Mutex::new(HashMap::new()),
        wired: args.download_neighbors.is_empty(),
        sources: args.sources,
        targets: Mutex::new(args.download_neighbors.clone()),
        secret: secret.clone(),
        events,
    });

    let mut threads = Vec::new();
    let link = owner_link::OwnerLink {
        addr: args.owner,
        advertise: args
            .advertise
            .clone()
            .unwrap_or_else(|| (String::new(), local.port())),
        dir: args.dir.clone(),
        store: store.clone(),
        shared: Arc::clone(&shared),
        wait: args.wait,
        seeded_once: false,
        version_due: false,
        follow: args.follow,
    };
    threads.push(spawn("owner link", move || link.run())?);

    let store = match store {
        Some(s) => s,
        None => wait_for_store(&event_rx, args.wait)?,
    };

    // The output grows as chunks arrive, so little is left to do at the
    // end; it takes its final name only once whole and verified.
    let out = output_path(args, &store);
    // On a thread of its own: a peer that holds most of the file (resuming,
    // or taking up a new version) copies it while it downloads the rest.
    // Its blocks are allocated first, so a disk too small for the file
    // stops the peer before it fetches anything.
    let check = if args.verify_output {
        store::OutputCheck::WholeFile
    } else {
        store::OutputCheck::Chunks
    };
    let assembly = store.start_assembly(&out, before.as_ref(), check)?;
    shared.output_ready.store(true, Ordering::Release);
    let (assembler, assembly_store, assembly_out) =
        (Arc::clone(&shared), Arc::clone(&store), out.clone());
    let assembling = spawn("assembly", move || {
        let started = Instant::now();
        let held = assembly_store.held();
        let result = assembly_store.fill_assembly(assembly);
        if let (Ok(how), true) = (&result, held > 0) {
            log::info!(
                "{}: started {} with the {held} chunks held ({how}) in {:.2} s",
                assembler.name,
                assembly_out.display(),
                started.elapsed().as_secs_f64()
            );
        }
        let result = result.map(|_| ());
        assembler.report(Event::Assembling(result));
    })?;

    let stopper = Stopper::new(local);
    let up = upload::Upload {
        listener,
        store: Arc::clone(&store),
        shared: Arc::clone(&shared),
        stopper: stopper.clone(),
    };
    threads.push(spawn("upload", move || up.run())?);
    let down = download::Download {
        store: Arc::clone(&store),
        shared: Arc::clone(&shared),
    };
    threads.push(spawn("download", move || down.run())?);

    let mut coordinator = Coordinator::new(args, Arc::clone(&store), &shared, out);
    coordinator.mark = mark;
    let result = coordinator.run(&event_rx);
    if let Ok(Ending::Left(_)) = result {
        // Let the download side deliver COMPLETE before the process exit
        // resets the connection; that neighbour may be waiting for
        // exactly that message to leave.
        coordinator.await_complete_delivered(&event_rx);
    }
    shared.stop.store(true, Ordering::Relaxed);
    coordinator.close_all();
    stopper.stop();
    drop(coordinator);
    if let Ok(Ending::Switch(..)) = result {
        // The next version's store takes over the directory: nothing of
        // this one may write there from now on, its assembly included
        // (it stops between two chunks; no event of it is awaited).
        store.retire();
        drop(event_rx);
        let _ = assembling.join();
    } else {
        threads.push(assembling);
    }
    join_within(threads, Duration::from_secs(1));
    result
}

/// Joins the threads that end within `grace`; a dialer stuck in a
/// connect or handshake is left to end on its own timeout.
fn join_within(threads: Vec<thread::JoinHandle<()>>, grace: Duration) {
    let deadline = Instant::now() + grace;
    for thread in threads {
        while !thread.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map_err(|e| Error::io(format!("start the {name} thread"), e))
}

/// Where the verified file goes: `--out`, or the store's default place
/// for the file's name inside `--dir`.
fn output_path(args: &PeerArgs, store: &Store) -> PathBuf {
    args.out
        .clone()
        .unwrap_or_else(|| store::default_output(&args.dir, store.manifest().name()))
}

/// Waits for the owner link to open the store.
fn wait_for_store(events: &Receiver<Event>, wait: Duration) -> Result<Arc<Store>> {
    // The owner link gives up after `wait` itself; the margin covers its
    // last connect attempt and handshake.
    let deadline = wait + net::CONNECT_TIMEOUT + net::HANDSHAKE_TIMEOUT;
    loop {
        match events.recv_timeout(deadline) {
            Ok(Event::Store(store)) => return Ok(store),
            Ok(Event::Fatal(e)) => return Err(e),
            Ok(_) => {}
            Err(_) => {
                return Err(Error::Timeout("no manifest from the owner".into()));
            }
        }
    }
}

/// The one thread that owns the scheduler and every decision.
struct Coordinator<'a> {
    args: &'a PeerArgs,
    store: Arc<Store>,
    shared: &'a Shared,
    out: PathBuf,
    sched: Scheduler,
    /// Live source connections, with the address a ring source was
    /// dialed at.
    sources: HashMap<ConnId, (SourceKind, Handle, Option<SocketAddr>)>,
    /// Source connections that ended, for the reports still queued from
    /// them.
    ended: HashMap<ConnId, (SourceKind, String, Option<SocketAddr>)>,
    /// Open connections that have downloaded from this peer and not
    /// reported holding every chunk.
    downloaders: HashMap<ConnId, Handle>,
    /// Whether a downloader has reported holding every chunk.
    released: bool,
    /// When a downloader that has since gone last asked for a chunk.
    last_contact: Option<Instant>,
    from_owner: u64,
    from_ring: u64,
    /// Chunk bytes stored from each source, by name, in the order they
    /// first delivered.
    by_source: Vec<(String, Option<SocketAddr>, u64)>,
    /// Chunks the owner pushed as seeds in this run, and in its current
    /// session.
    seeded: u32,
    session_seeds: u32,
    /// When the owner link came up and when its last seed arrived, to
    /// measure the time the owner takes per chunk.
    owner_up: Option<Instant>,
    last_seed: Option<Instant>,
    /// What the owner has shown it takes per chunk, once measured.
    owner_chunk_time: Option<Duration>,
    /// Whether the owner is seeding some peer (assumed until it says
    /// otherwise): the end game waits for its link to be free.
    owner_seeding: bool,
    /// When the ring last delivered a chunk (or the coordinator started).
    ring_progress: Instant,
    stalled: bool,
    report: Option<Report>,
    verified_at: Option<Instant>,
    /// When a chunk last arrived from anyone, for `--wait`.
    progress_at: Instant,
    /// Whole-file mismatches in a row in which no chunk was damaged.
    clean_mismatches: u32,
    /// When a lapse was last logged, per source, so a source that keeps
    /// letting requests lapse is named once per `--stall-timeout`.
    lapse_logged: HashMap<SourceId, Instant>,
    last_held: u32,
    last_bytes: u64,
    last_line: Instant,
    /// The live session with the owner, for reports.
    owner_link: Option<Handle>,
    /// Chunks the owner has been told this peer holds.
    reported: ChunkSet,
    /// The download neighbours as the owner named them, for UNREACHABLE.
    assigned: HashMap<SocketAddr, String>,
    /// Whether the owner has sent all of a session's seeds.
    seed_done: bool,
    /// Since when this peer has had no download neighbour, if it has none.
    alone_since: Option<Instant>,
    /// Whether the owner reported every peer complete.
    swarm_complete: bool,
    /// Chunks asked of the owner in the end game.
    endgame_asked: u32,
    /// Which chunk of the longest missing run this peer asks the owner
    /// for in the end game (see [`Scheduler::reserve_tail`]): random with
    /// several sources, so peers ask for different chunks and pass them
    /// on; 0 (the top) in a ring.
    spread: u64,
    /// Where this version's distribution is counted from, then when it
    /// was verified.
    mark: Mark,
    verified_mark: Option<Mark>,
    /// Whether the output file is started (see [`Event::Assembling`]).
    assembling: bool,
}

impl<'a> Coordinator<'a> {
    fn new(args: &'a PeerArgs, store: Arc<Store>, shared: &'a Shared, out: PathBuf) -> Self {
        let now = Instant::now();
        let sched = Scheduler::new(store.layout().clone(), store.snapshot(), args.stall_timeout);
        let last_held = sched.held().len();
        let last_count = store.layout().count();
        Coordinator {
            args,
            store,
            shared,
            out,
            sched,
            sources: HashMap::new(),
            ended: HashMap::new(),
            downloaders: HashMap::new(),
            released: false,
            last_contact: None,
            from_owner: 0,
            from_ring: 0,
            by_source: Vec::new(),
            seeded: 0,
            session_seeds: 0,
            owner_up: None,
            last_seed: None,
            owner_chunk_time: None,
            owner_seeding: true,
            ring_progress: now,
            stalled: false,
            report: None,
            verified_at: None,
            progress_at: now,
            clean_mismatches: 0,
            lapse_logged: HashMap::new(),
            last_held,
            last_bytes: 0,
            last_line: now,
            owner_link: None,
            reported: ChunkSet::new(last_count),
            assigned: HashMap::new(),
            seed_done: false,
            alone_since: shared.targets().is_empty().then_some(now),
            swarm_complete: false,
            endgame_asked: 0,
            spread: if args.sources > 1 { random_u64() } else { 0 },
            mark: Mark::now(),
            verified_mark: None,
            assembling: false,
        }
    }

    fn name(&self) -> &str {
        &self.shared.name
    }

    /// The coordinator loop: events, deadlines, progress and the exit rule.
    fn run(&mut self, events: &Receiver<Event>) -> Result<Ending> {
        let ticker = crossbeam_channel::tick(TICK);
        let mut second = Instant::now();
        // Chunks stored before the scheduler was made are held in it
        // already; their events, queued, still say where they came from.
        while let Ok(ev) = events.try_recv() {
            if let Event::NewVersion(manifest) = ev {
                return Ok(Ending::Switch(
                    Arc::clone(&self.store),
                    manifest,
                    Mark::now(),
                    false,
                ));
            }
            self.on_event(ev)?;
        }
        loop {
            if self.report.is_none() && self.sched.is_complete() && self.assembling {
                self.finish()?;
            }
            if let Some(report) = self.may_leave() {
                return Ok(Ending::Left(report));
            }
            select! {
                recv(events) -> ev => match ev {
                    Ok(Event::NewVersion(manifest)) => {
                        // Timed from now; bytes counted from the end of
                        // the version before, if it ended.
                        let since = Mark {
                            at: Instant::now(),
                            received: self.verified_mark.unwrap_or_else(Mark::now).received,
                        };
                        let verified = self.report.is_some();
                        return Ok(Ending::Switch(
                            Arc::clone(&self.store),
                            manifest,
                            since,
                            verified,
                        ));
                    }
                    Ok(ev) => self.on_event(ev)?,
                    Err(_) => return Err(Error::Bug("the event channel closed".into())),
                },
                recv(ticker) -> _ => {
                    let now = Instant::now();
                    self.expire(now);
                    if second.elapsed() >= Duration::from_secs(1) {
                        second = now;
                        self.every_second()?;
                    }
                }
            }
            self.refill();
        }
    }

    fn on_event(&mut self, ev: Event) -> Result<()> {
        let now = Instant::now();
        match ev {
            Event::Store(_) => {}
            Event::SourceUp(kind, handle, addr) => {
                if kind == SourceKind::Ring && !addr.is_some_and(|a| self.shared.is_target(a)) {
                    // Dialed for a neighbour the owner has since replaced
                    // (two NEIGHBOURs in a row): its dialer ends.
                    handle.close();
                    return Ok(());
                }
                let max = request_window(self.store.layout().chunk_size());
                self.sched.add_source(source(handle.id()), kind, max);
                // (A ring source that reconnects does not reset the stall
                // clock: one that connects and drops again and again
                // delivers nothing all the same.)
                if kind == SourceKind::Owner {
                    self.owner_up = Some(now);
                    self.session_seeds = 0;
                    self.owner_seeding = true;
                    self.owner_link = Some(handle.clone());
                }
                if self.report.is_some() {
                    self.tell_complete(kind, &handle);
                }
                self.sources.insert(handle.id(), (kind, handle, addr));
            }
            Event::Offered(from, set) => {
                let who = self.who(from);
                log::info!(
                    target: "swarm::chunk",
                    "{}: received chunk-ID list from {who} ({} chunks)",
                    self.name(),
                    set.len()
                );
                self.sched.offer(source(from), set);
            }
            Event::Have(from, ids) => {
                log::info!(
                    target: "swarm::chunk",
                    "{}: received chunk-ID update from {}: {}",
                    self.name(),
                    self.who(from),
                    id_list(&ids)
                );
                self.sched.offer_more(source(from), &ids);
            }
            Event::Received {
                from,
                id,
                put,
                bytes,
            } => self.on_received(from, id, put, bytes, now),
            Event::SeedDone(from) => {
                self.seed_done = true;
                self.sched.stop_pushing(source(from));
                // Too few seeds say little about the owner's link.
                if let (Some(up), Some(last), n @ 4..) =
                    (self.owner_up, self.last_seed, self.session_seeds)
                {
                    self.owner_chunk_time = Some(last.saturating_duration_since(up) / n);
                }
                log::info!("{}: the owner seeded {} chunks", self.name(), self.seeded);
            }
            Event::OwnerSeeding(busy) => self.owner_seeding = busy,
            Event::SourceDown(from) => {
                self.drop_source(from);
            }
            Event::OwnerListed(set) => self.reported = set,
            Event::SwarmComplete => self.swarm_complete = true,
            // Taken by the loop in `run` before it gets here.
            Event::NewVersion(_) => {}
            Event::Assembling(result) => {
                result?;
                self.assembling = true;
            }
            Event::Neighbour(assigned) => self.rewire(assigned),
            Event::Unreachable(addr) => {
                if let (Some(link), Some(text)) = (&self.owner_link, self.assigned.get(&addr))
                    && self.shared.wired
                    && self.shared.is_target(addr)
                {
                    let _ = link.send_message(&Message::Unreachable(text));
                }
            }
            Event::Downloader(handle) => {
                self.downloaders.insert(handle.id(), handle);
            }
            Event::DownloaderComplete(from) => {
                if let Some(handle) = self.forget_downloader(from) {
                    self.released = true;
                    self.last_contact = Some(now);
                    log::info!(
                        "{}: {} reports it holds every chunk",
                        self.shared.name,
                        handle.who()
                    );
                }
            }
            Event::DownloaderGone(from) => {
                self.forget_downloader(from);
            }
            Event::Fatal(e) => return Err(e),
        }
        Ok(())
    }

    /// The owner assigned download neighbours: ring connections to any
    /// other make way for connections to the new ones.
    fn rewire(&mut self, assigned: Vec<(SocketAddr, String)>) {
        let name = self.shared.name.clone();
        let addrs: Vec<SocketAddr> = assigned.iter().map(|(a, _)| *a).collect();
        self.assigned = assigned.into_iter().collect();
        if addrs == self.shared.targets() {
            return;
        }
        match addrs.as_slice() {
            [] => log::info!("{name}: the owner has no download neighbour for this peer yet"),
            [addr] => log::info!("{name}: the owner assigned download neighbour {addr}"),
            addrs => log::info!(
                "{name}: the owner assigned download neighbours {}",
                addr_list(addrs)
            ),
        }
        self.shared.set_targets(addrs.clone());
        self.alone_since = addrs.is_empty().then(Instant::now);
        for (kind, handle, addr) in self.sources.values() {
            if *kind == SourceKind::Ring && !addr.is_some_and(|a| addrs.contains(&a)) {
                handle.close();
            }
        }
        // A new neighbour gets a fair start before the owner stands in.
        self.ring_progress = Instant::now();
    }

    /// Tells the owner what this peer gained since the last report and
    /// how fast it receives.
    fn report_progress(&mut self, rate: u64) {
        let Some(link) = &self.owner_link else {
            return;
        };
        let mut gained = self.sched.held().clone();
        gained.subtract(&self.reported);
        let layout = self.store.layout();
        let mut buf = Vec::new();
        if !gained.is_empty() {
            let ids: Vec<ChunkId> = gained.iter(layout).collect();
            wire::encode_have(&ids, layout, &mut buf);
        }
        wire::encode(&Message::Progress { rate }, &mut buf);
        if link.send(Outgoing::Frames(buf)).is_ok() {
            self.reported.union_with(&gained);
        }
    }

    /// Drops a downloader's handle (its connection ended or it is
    /// complete), keeping only when it last asked for a chunk.
    fn forget_downloader(&mut self, from: ConnId) -> Option<Handle> {
        let handle = self.downloaders.remove(&from)?;
        if let Some(at) = handle.stats().last_asked() {
            self.last_contact = self.last_contact.max(Some(at));
        }
        Some(handle)
    }

    fn who(&self, from: ConnId) -> String {
        self.sources.get(&from).map_or_else(
            || "a closed connection".into(),
            |(_, h, _)| h.who().to_string(),
        )
    }

    fn on_received(&mut self, from: ConnId, id: ChunkId, put: Put, bytes: u64, now: Instant) {
        let Some((kind, handle, addr)) = self.sources.get(&from).cloned() else {
            // Its connection is gone; what the store kept is held, and
            // counted for the source that sent it.
            if put == Put::Stored {
                self.sched.on_chunk(source(from), id, now);
                if let Some((kind, who, addr)) = self.ended.get(&from).cloned() {
                    self.count_stored(kind, &who, addr, bytes, now);
                }
            }
            return;
        };
        let src = source(from);
        let name = self.shared.name.clone();
        if put == Put::Corrupt {
            let bad = self.sched.on_bad_chunk(src, id, now);
            if bad > MAX_BAD_CHUNKS {
                // Still in flight when it was disconnected.
                return;
            }
            if bad == MAX_BAD_CHUNKS {
                log::warn!(
                    "{name}: chunk {id} from {} failed its SHA-256 check; \
                     {MAX_BAD_CHUNKS} bad chunks from it; disconnecting",
                    handle.who()
                );
                handle.close();
                // Gone from now on, not when its thread says so: the
                // stall rule must not count it as connected meanwhile.
                self.drop_source(from);
                if let (SourceKind::Ring, Some(addr)) = (kind, addr) {
                    self.shun_ring(addr);
                }
            } else {
                log::warn!(
                    "{name}: chunk {id} from {} failed its SHA-256 check; discarded, asking again",
                    handle.who()
                );
            }
            return;
        }
        let pushing = self.sched.is_pushing(src);
        // A duplicate may be of a copy from another source that the store
        // has taken but whose report is still on its way: that report
        // makes the chunk held (and counts its bytes for its source), so
        // the peer cannot finish before it is counted.
        let arrival = if put == Put::Duplicate {
            self.sched.on_duplicate(src, id, now)
        } else {
            self.sched.on_chunk(src, id, now)
        };
        match arrival {
            Arrival::Unasked => {
                log::warn!(
                    "{name}: {} sent chunk {id}, which was not asked of it; disconnecting",
                    handle.who()
                );
                handle.close();
                self.drop_source(from);
                return;
            }
            Arrival::Late => {}
            Arrival::Fresh => {}
        }
        if put == Put::Stored {
            self.count_stored(kind, handle.who(), addr, bytes, now);
            if kind == SourceKind::Owner && pushing {
                self.seeded += 1;
                self.session_seeds += 1;
                self.last_seed = Some(now);
            }
        }
    }

    /// Forgets a source whose connection ended or is closed: its claims
    /// go back to wanted. Reports still queued from it are counted for it.
    fn drop_source(&mut self, from: ConnId) {
        self.sched.remove_source(source(from));
        if let Some((kind, handle, addr)) = self.sources.remove(&from) {
            // Reports queued from a connection arrive just after its end:
            // the last thousand are plenty.
            if self.ended.len() >= 1024 {
                self.ended.clear();
            }
            self.ended
                .insert(from, (kind, handle.who().to_string(), addr));
        }
        if self.owner_link.as_ref().is_some_and(|h| h.id() == from) {
            self.owner_link = None;
        }
    }

    /// Counts a chunk's `bytes` stored from source `who`, a ring source
    /// dialed at `addr`.
    fn count_stored(
        &mut self,
        kind: SourceKind,
        who: &str,
        addr: Option<SocketAddr>,
        bytes: u64,
        now: Instant,
    ) {
        self.progress_at = now;
        match self
            .by_source
            .iter_mut()
            .find(|(w, a, _)| w == who && *a == addr)
        {
            Some((_, _, total)) => *total += bytes,
            None => self.by_source.push((who.to_string(), addr, bytes)),
        }
        match kind {
            SourceKind::Owner => self.from_owner += bytes,
            SourceKind::Ring => {
                self.from_ring += bytes;
                self.ring_progress = now;
            }
        }
    }

    /// Keeps the download side away from the neighbour at `addr` for a
    /// while. Its requests go to the other neighbours; with none
    /// connected, the owner stands in at once (the ring counts as having
    /// delivered nothing for `--stall-timeout`) until a neighbour delivers.
    fn shun_ring(&mut self, addr: SocketAddr) {
        let limit = self.args.stall_timeout;
        let until = self.shared.now_ms() + 3 * limit.as_millis() as u64;
        self.shared.shun(addr, until);
        let others = self
            .sources
            .values()
            .any(|(kind, h, a)| *kind == SourceKind::Ring && *a != Some(addr) && !h.is_closed());
        if others {
            log::warn!(
                "{}: not dialing download neighbour {addr} again for {} s",
                self.shared.name,
                3 * limit.as_secs()
            );
            return;
        }
        let now = Instant::now();
        self.ring_progress = now.checked_sub(limit).unwrap_or(self.ring_progress);
        if self.stalled {
            return;
        }
        if self.shared.targets().len() > 1 {
            log::warn!(
                "{}: download neighbour {addr} sent {MAX_BAD_CHUNKS} corrupt chunks and no other is connected; fetching missing chunks from the owner",
                self.shared.name
            );
            self.stalled = true;
        } else {
            self.set_stalled(true, &format!("sent {MAX_BAD_CHUNKS} corrupt chunks"));
        }
    }

    /// Lets lapsed requests go back to wanted, so another source is asked
    /// (the next refill calls in the owner if the source is in the ring).
    fn expire(&mut self, now: Instant) {
        let lapsed = self.sched.expire(now);
        for (id, src) in lapsed {
            let Some((_, handle, _)) = self.sources.get(&ConnId::from_raw(src.0)) else {
                continue;
            };
            let logged = self.lapse_logged.get(&src).copied();
            if logged.is_none_or(|at| now.saturating_duration_since(at) >= self.args.stall_timeout)
            {
                self.lapse_logged.insert(src, now);
                log::warn!(
                    "{}: {} did not deliver chunk {id} within {} s; asking elsewhere",
                    self.shared.name,
                    handle.who(),
                    self.args.stall_timeout.as_secs()
                );
            }
        }
    }

    /// Whether the ring should have the owner's help now, and why: no
    /// ring source delivered for `--stall-timeout`, or every connected
    /// one is failing (see [`Coordinator::failing`]). With several
    /// download neighbours one that fails is only passed over: the others
    /// take its chunks, and the owner those that only it holds.
    /// `failing` is each ring source with how it fails, if it does.
    fn ring_stalled(&self, now: Instant, failing: &[(SourceId, Option<String>)]) -> Option<String> {
        let limit = self.args.stall_timeout;
        if self.shared.targets().is_empty() {
            // Alone in the ring: once its seeds are in, only the owner
            // has what it lacks; a moment's grace lets the peers started
            // beside it join first.
            let alone = self
                .alone_since
                .is_some_and(|at| now.saturating_duration_since(at) >= ALONE_GRACE);
            return (self.seed_done && alone)
                .then(|| "is none: this peer is alone in the ring".to_string());
        }
        if now.saturating_duration_since(self.ring_progress) >= limit {
            // In a ring the owner wires, a neighbour that is up is given
            // time: one that holds nothing this peer lacks is waiting for
            // its own neighbour, and one that does but does not answer
            // lets requests lapse (below). The owner re-wires around a
            // dead one and seeds chunks missing from the whole ring, so
            // only a peer with no neighbour connection calls it in here:
            // at a thousand peers on two cores, every peer whose busy
            // neighbour sent nothing for a while pulled the file from
            // the owner.
            let connected = !failing.is_empty();
            if !(self.shared.wired && connected) {
                return Some(format!("delivered nothing for {} s", limit.as_secs()));
            }
        }
        let mut why = Vec::new();
        for (src, failing) in failing {
            match failing {
                Some(failing) => why.push((*src, failing)),
                None => return None,
            }
        }
        match why.as_slice() {
            [] => None,
            [(_, why)] if self.args.sources == 1 || self.shared.targets().len() == 1 => {
                Some((*why).clone())
            }
            [(src, why)] => Some(format!(
                "(the one connected): {} {why}",
                self.who(ConnId::from_raw(src.0))
            )),
            several => {
                let each: Vec<String> = several
                    .iter()
                    .map(|(src, why)| format!("{} {why}", self.who(ConnId::from_raw(src.0))))
                    .collect();
                Some(format!("all fail: {}", each.join("; ")))
            }
        }
    }

    /// Whether ring source `src` is failing this peer, and how: it let a
    /// request lapse within `--stall-timeout`; with several sources, it
    /// takes far longer per chunk than another neighbour that is
    /// delivering (its chunks wait behind its link); or it has requests
    /// to answer and takes far longer per chunk than the owner did (a
    /// neighbour that delivers just enough never to lapse).
    fn failing(&self, src: SourceId, now: Instant) -> Option<String> {
        let limit = self.args.stall_timeout;
        if self.lapsed_recently(src, now) {
            return Some(format!(
                "did not answer a request within {} s",
                limit.as_secs()
            ));
        }
        if self.args.sources > 1 && self.hung(src, now) {
            // Its window is full of lapsed requests, so nothing new lapses.
            return Some(format!(
                "has not answered a request for {} s",
                limit.as_secs()
            ));
        }
        let ring = self.sched.chunk_time(src)?;
        if self.args.sources > 1 {
            // Only neighbours delivering now count: a hung one's old pace,
            // or an idle one's, says nothing of the link this one has.
            let best_other = self
                .sched
                .sources(SourceKind::Ring)
                .filter(|&other| other != src && self.sched.outstanding(other) > 0)
                .filter(|&other| !self.lapsed_recently(other, now) && !self.hung(other, now))
                .filter_map(|other| self.sched.chunk_time(other))
                .min();
            if let Some(other) = best_other
                && ring > (other * SLOW_FACTOR).max(limit / 100)
            {
                return Some(format!(
                    "takes {} ms per chunk where another neighbour takes {} ms",
                    ring.as_millis(),
                    other.as_millis()
                ));
            }
        }
        if self.sched.outstanding(src) == 0 {
            return None;
        }
        let owner = self.owner_chunk_time?;
        (ring > (owner * SLOW_FACTOR).max(limit / 10)).then(|| {
            format!(
                "takes {} ms per chunk where the owner took {} ms",
                ring.as_millis(),
                owner.as_millis()
            )
        })
    }

    /// Whether ring source `src` has left a request unanswered for
    /// `--stall-timeout`.
    fn hung(&self, src: SourceId, now: Instant) -> bool {
        self.sched
            .oldest_outstanding(src)
            .is_some_and(|at| now.saturating_duration_since(at) >= self.args.stall_timeout)
    }

    /// Whether a request to ring source `src` lapsed within
    /// `--stall-timeout`.
    fn lapsed_recently(&self, src: SourceId, now: Instant) -> bool {
        self.sched
            .last_expiry(src)
            .is_some_and(|at| now.saturating_duration_since(at) < self.args.stall_timeout)
    }

    fn set_stalled(&mut self, stalled: bool, why: &str) {
        let name = &self.shared.name;
        let targets = self.shared.targets();
        let at = if targets.is_empty() {
            String::new()
        } else {
            format!(" at {}", addr_list(&targets))
        };
        let who = if targets.len() > 1 {
            "download neighbours"
        } else {
            "download neighbour"
        };
        match (self.stalled, stalled) {
            // Alone is no fault of a neighbour's: not worth a warning.
            (false, true) if at.is_empty() => {
                log::info!("{name}: the {who} {why}; fetching missing chunks from the owner")
            }
            (false, true) => {
                log::warn!("{name}: the {who}{at} {why}; fetching missing chunks from the owner")
            }
            (true, false) => {
                let are = if targets.len() > 1 { "are" } else { "is" };
                log::info!("{name}: the {who}{at} {are} delivering again; back to the ring")
            }
            _ => {}
        }
        self.stalled = stalled;
    }

    /// Tops up every source's requests: ring sources first in, first out
    /// (in the order they offered the chunks; with several, rarest first),
    /// within the window their link shows; the owner from the highest
    /// ID down, two at a time in the end game and a full window while the
    /// ring stalls. With several ring sources, one with room and nothing
    /// left to ask for takes over the others' oldest requests in the end
    /// game.
    fn refill(&mut self) {
        if self.sched.is_complete() {
            self.shared.need_owner.store(false, Ordering::Relaxed);
            return;
        }
        let now = Instant::now();
        // How each ring source fails, if it does: once per refill, for the
        // stall rule and for which sources count as healthy below.
        let failing: Vec<(SourceId, Option<String>)> = self
            .sched
            .sources(SourceKind::Ring)
            .map(|src| (src, self.failing(src, now)))
            .collect();
        let why = self.ring_stalled(now, &failing);
        let stalled = why.is_some();
        if stalled != self.stalled {
            self.set_stalled(stalled, why.as_deref().unwrap_or(""));
        }
        // The end game begins as soon as the owner seeds no one: its link,
        // idle from then on, brings the chunks the ring would bring last,
        // which would otherwise cross the most hops after the last seed.
        // (It used to wait until half a share was missing: at twenty
        // peers the owner's link then stood idle for 6 s of a 19 s run.)
        // Not while the owner seeds: seeds are chunks no peer has, and a
        // chunk asked for may be one still on its way as a seed. A fifth
        // of what the owner seeded us at most, so its link carries about
        // 1.2 times the file in all. A peer the owner seeded nothing (one
        // wired in after the first N) has no end game: were a thousand
        // such peers to ask for their last chunks, the owner's link would
        // carry them a thousand times.
        let mut endgame_left = (self.seeded / ENDGAME_BUDGET)
            .max(ENDGAME_WINDOW as u32)
            .saturating_sub(self.endgame_asked);
        let endgame = !self.owner_seeding && self.seeded > 0 && endgame_left > 0;
        let full = request_window(self.store.layout().chunk_size());
        let owner_window = if stalled {
            full
        } else if endgame {
            ENDGAME_WINDOW
        } else {
            0
        };
        self.shared
            .need_owner
            .store(owner_window > 0, Ordering::Relaxed);
        let ring: Vec<SourceId> = failing.iter().map(|(src, _)| *src).collect();
        let healthy: Vec<SourceId> = failing
            .iter()
            .filter(|(_, why)| why.is_none())
            .map(|(src, _)| *src)
            .collect();
        let ring_order = if self.args.sources > 1 {
            Order::Rarest
        } else {
            Order::Arrival
        };
        let links: Vec<(SourceKind, Handle)> = self
            .sources
            .values()
            .map(|(kind, handle, _)| (*kind, handle.clone()))
            .collect();
        for (kind, handle) in links {
            let src = source(handle.id());
            let (room, order) = match kind {
                // A neighbour that fails beside others that do not is
                // asked for two chunks at a time: what only it holds comes
                // out first, instead of queueing behind what others hold
                // (two, so that its pace is still measured).
                SourceKind::Ring if self.args.sources > 1 && !healthy.contains(&src) => (
                    self.sched
                        .room(src)
                        .min(FAILING_WINDOW.saturating_sub(self.sched.outstanding(src))),
                    ring_order,
                ),
                SourceKind::Ring => (self.sched.room(src), ring_order),
                SourceKind::Owner if self.sched.is_pushing(src) => continue,
                SourceKind::Owner => {
                    let policy = owner_window.saturating_sub(self.sched.outstanding(src));
                    (self.sched.room(src).min(policy), Order::Highest)
                }
            };
            // In the end game the owner is asked only for chunks no
            // download neighbour that is not failing offers yet: its link
            // stands in for what no neighbour holds in time, not for what
            // is on its way; of those, the ones farthest away.
            let mut ids = if kind == SourceKind::Owner && !stalled {
                let room = room.min(endgame_left as usize);
                let ids = self
                    .sched
                    .reserve_tail(src, room, now, self.spread, |s| healthy.contains(&s));
                self.endgame_asked += ids.len() as u32;
                endgame_left -= ids.len() as u32;
                ids
            } else {
                self.sched.reserve(src, room, order, now)
            };
            if kind == SourceKind::Owner && stalled && ids.len() < room {
                // What the stalling ring has claimed would otherwise wait
                // for its deadline.
                let more = room - ids.len();
                ids.extend(
                    self.sched
                        .steal(src, more, now, Duration::ZERO, |s| ring.contains(&s)),
                );
            }
            if kind == SourceKind::Ring
                && self.args.sources > 1
                && ring.len() > 1
                && ids.len() < room
                && self.sched.missing() as usize <= full
            {
                // The end game among neighbours: the last chunks are not
                // left to wait on a slow one. A request taken over stays
                // outstanding at its first source, whose reply is still
                // taken; only one old enough that this source would
                // likely deliver first is taken.
                let after = self
                    .sched
                    .chunk_time(src)
                    .map_or(STEAL_AFTER, |t| (t * 4).max(STEAL_AFTER));
                let more = room - ids.len();
                ids.extend(
                    self.sched
                        .steal(src, more, now, after, |s| s != src && ring.contains(&s)),
                );
            }
            if ids.is_empty() {
                continue;
            }
            let mut buf = Vec::with_capacity(9 * ids.len());
            for &id in &ids {
                wire::encode(&Message::Request(id), &mut buf);
            }
            log::info!(
                target: "swarm::chunk",
                "{}: requested {} from {}",
                self.shared.name,
                id_list(&ids),
                handle.who()
            );
            if handle.send(Outgoing::Frames(buf)).is_err() {
                // The connection is closing; its SourceDown releases them.
                handle.close();
            }
        }
    }

    /// Progress line, summary, output flush and the `--wait` watchdog.
    fn every_second(&mut self) -> Result<()> {
        if let Err(e) = self.store.flush_summary() {
            if matches!(e, Error::NoSpace(_)) {
                return Err(e);
            }
            log::warn!("{}: {e}", self.shared.name);
        }
        if self.report.is_some() {
            return Ok(());
        }
        self.store.sync_partial();
        let held = self.sched.held().len();
        if held != self.last_held {
            self.last_held = held;
        } else if self.progress_at.elapsed() >= self.args.wait {
            return Err(Error::Timeout(format!(
                "no chunk arrived from the owner or a download neighbour for {} s",
                self.args.wait.as_secs()
            )));
        }
        let total = self.store.layout().count();
        let bytes = self.from_owner + self.from_ring;
        let secs = self.last_line.elapsed().as_secs_f64().max(1e-3);
        let rate = (bytes - self.last_bytes) as f64 / secs;
        log::info!(
            "{}: {held}/{total} chunks ({:.1}%), {:.1} MiB/s",
            self.shared.name,
            crate::tracker::percent(held, total),
            rate / MIB,
        );
        self.report_progress(rate as u64);
        self.last_bytes = bytes;
        self.last_line = Instant::now();
        Ok(())
    }

    /// Gives the output its final name and prints the closing lines. The
    /// file is verified chunk by chunk (every byte written was checked
    /// against its chunk's SHA-256 first); with `--verify-output` it is
    /// also re-hashed whole, and on a whole-file mismatch the damaged
    /// chunks are fetched again.
    fn finish(&mut self) -> Result<()> {
        let name = self.shared.name.clone();
        self.store.flush_summary()?;
        let finishing = Instant::now();
        let digest = match self.store.finish_assembly() {
            Ok(digest) => digest,
            Err(Error::Integrity(msg)) => {
                log::warn!("{name}: {msg}");
                // The store dropped the damaged chunks: want them again.
                let on_disk = self.store.snapshot();
                let dropped: Vec<ChunkId> = self
                    .sched
                    .held()
                    .iter(self.store.layout())
                    .filter(|&id| !on_disk.contains(id))
                    .collect();
                if dropped.is_empty() {
                    // Every chunk file matched: the partial file was
                    // damaged and is now rebuilt from them. If the rebuilt
                    // one fails too, the manifest's whole-file digest does
                    // not fit its chunk digests, and no refetch can help.
                    self.clean_mismatches += 1;
                    if self.clean_mismatches >= 2 {
                        return Err(Error::Manifest(
                            "the whole-file SHA-256 does not match the chunks, \
                             though every chunk matches its own"
                                .into(),
                        ));
                    }
                } else {
                    self.clean_mismatches = 0;
                }
                self.sched.drop_held(&dropped);
                self.progress_at = Instant::now();
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let elapsed = self.shared.started.elapsed();
        let reused = self.store.reused().bytes;
        log::info!(
            "{name}: complete in {:.2} s: {:.2} MiB from the owner, {:.2} MiB from the download neighbour, {:.2} MiB reused from {}",
            elapsed.as_secs_f64(),
            self.from_owner as f64 / MIB,
            self.from_ring as f64 / MIB,
            reused as f64 / MIB,
            self.args.dir.display(),
        );
        log::info!(
            "{name}: version {} in {:.2} s (the last {:.2} s {} the output): chunk bytes {} from the owner, {} from the ring, {} reused; {} bytes received from the network",
            short_id(&self.store.manifest().id()),
            self.mark.at.elapsed().as_secs_f64(),
            finishing.elapsed().as_secs_f64(),
            if self.args.verify_output {
                "checking and flushing"
            } else {
                "flushing"
            },
            self.from_owner,
            self.from_ring,
            reused,
            wire::bytes_received() - self.mark.received,
        );
        let by_source = self.by_source_named();
        if self.args.sources > 1 || by_source.len() > 2 {
            let each: Vec<String> = by_source
                .iter()
                .map(|(who, bytes)| format!("{who} {bytes}"))
                .collect();
            log::info!(
                "{name}: chunk bytes by source: {}",
                if each.is_empty() {
                    "none".to_string()
                } else {
                    each.join(", ")
                }
            );
        }
        self.verified_mark = Some(Mark::now());
        if self.args.verify_output {
            log::info!(
                "{name}: verified sha256 {}  {}",
                to_hex(&digest),
                self.out.display()
            );
        } else {
            // Every byte of the output was checked against its chunk's
            // SHA-256 before it was written; the whole-file digest is
            // the manifest's, not computed here (--verify-output does).
            log::info!(
                "{name}: verified chunk by chunk ({} chunks, SHA-256 each); whole-file SHA-256 per manifest: {}  {}",
                self.store.layout().count(),
                to_hex(&digest),
                self.out.display()
            );
        }
        self.report = Some(Report {
            path: self.out.clone(),
            digest,
            from_owner: self.from_owner,
            from_ring: self.from_ring,
            by_source,
            reused,
            elapsed,
        });
        self.verified_at = Some(Instant::now());
        self.shared.verified.store(true, Ordering::Relaxed);
        self.shared.need_owner.store(false, Ordering::Relaxed);
        let links: Vec<(SourceKind, Handle)> = self
            .sources
            .values()
            .map(|(kind, handle, _)| (*kind, handle.clone()))
            .collect();
        for (kind, handle) in links {
            self.tell_complete(kind, &handle);
        }
        Ok(())
    }

    /// Bytes per source, each named as it named itself, and by its
    /// address too where two sources share a name (peers on different
    /// machines listening on the same port).
    fn by_source_named(&self) -> Vec<(String, u64)> {
        self.by_source
            .iter()
            .map(|(who, addr, bytes)| {
                let shared = self.by_source.iter().any(|(w, a, _)| w == who && a != addr);
                match addr {
                    Some(addr) if shared => (format!("{who} at {addr}"), *bytes),
                    _ => (who.clone(), *bytes),
                }
            })
            .collect()
    }

    /// Tells a download neighbour we hold every chunk and lets it go;
    /// tells the owner too, but keeps its link: the owner counts a peer
    /// whose link drops as gone, and this one still serves the ring.
    fn tell_complete(&mut self, kind: SourceKind, handle: &Handle) {
        if kind == SourceKind::Owner {
            self.report_progress(0);
        }
        if kind == SourceKind::Ring {
            let _ = handle.send_last(&Message::Complete);
            log::info!(
                "{}: holds every chunk; told {}",
                self.shared.name,
                handle.who()
            );
        } else {
            let _ = handle.send_message(&Message::Complete);
        }
    }

    /// The exit rule: the file is verified, and either a peer that
    /// downloaded from this one reports holding every chunk while no other
    /// downloader still needs us, or no downloader has asked for anything
    /// for `--linger`. A connection that never asked for a chunk counts
    /// for neither: a stranger can neither release nor hold a peer.
    fn may_leave(&self) -> Option<Report> {
        let report = self.report.as_ref()?;
        if self.args.follow {
            return None;
        }
        let verified_at = self.verified_at?;
        let now = Instant::now();
        if self.swarm_complete {
            log::info!(
                "{}: the owner reports every peer holds the file; exiting",
                self.shared.name
            );
            return Some(report.clone());
        }
        let linger = self.args.linger;
        let last_asked = |h: &Handle| h.stats().last_asked().unwrap_or(verified_at);
        let still_served = self
            .downloaders
            .values()
            .any(|h| !h.is_closed() && now.saturating_duration_since(last_asked(h)) < linger);
        if self.released && !still_served {
            log::info!(
                "{}: upload neighbour holds every chunk; exiting",
                self.shared.name
            );
            return Some(report.clone());
        }
        let contact = self
            .downloaders
            .values()
            .map(last_asked)
            .chain(self.last_contact)
            .fold(verified_at, Instant::max);
        if now.saturating_duration_since(contact) >= linger {
            log::info!(
                "{}: no upload neighbour in contact for {} s; exiting",
                self.shared.name,
                linger.as_secs()
            );
            return Some(report.clone());
        }
        None
    }

    /// After leaving is decided: waits a little for the download side to
    /// deliver COMPLETE and end its connection in order.
    fn await_complete_delivered(&mut self, events: &Receiver<Event>) {
        // The owner link ends in order too, so the owner reads COMPLETE
        // before it sees the link drop (a drop alone reads as a death).
        if let Some(link) = &self.owner_link {
            let _ = link.send(Outgoing::Finish);
        }
        // An honest neighbour closes within a round trip of reading it.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.sources.values().any(|(_, h, _)| !h.is_closed()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match events.recv_timeout(left.min(TICK)) {
                Ok(Event::SourceDown(from)) => {
                    self.sources.remove(&from);
                }
                Ok(_) | Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(_) => return,
            }
            if Instant::now() >= deadline {
                return;
            }
        }
    }

    /// Closes every connection the coordinator knows of.
    fn close_all(&self) {
        for (_, handle, _) in self.sources.values() {
            handle.close();
        }
        for handle in self.downloaders.values() {
            handle.close();
        }
    }
}

/// A random number from the standard library's per-process hash keys:
/// enough to make peers differ, and no crate for it.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
}

/// Addresses as a log names them: "A, B".
fn addr_list(addrs: &[SocketAddr]) -> String {
    let each: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    each.join(", ")
}

fn source(id: ConnId) -> SourceId {
    SourceId(id.get())
}

const MIB: f64 = 1024.0 * 1024.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_covers_about_four_mib() {
        assert_eq!(request_window(102_400), 40);
        assert_eq!(request_window(1024), 64);
        assert_eq!(request_window(16 << 20), 4);
    }
}
