//! A peer of the ring: fetch, trade, reassemble, verify, leave.
//!
//! [`run`] binds the upload port first (a taken port fails at once),
//! resumes from a cached manifest and chunk files if `--dir` has them,
//! and starts one thread per side, each running [`crate::conn`]
//! connections with a role of its own:
//!
//! - the owner link (`owner_link`) fetches the manifest and this peer's
//!   seeded chunks, registers the peer with the owner (who wires it into
//!   the ring unless `--download-neighbor` did), and stays on as a source
//!   the coordinator may ask and as the channel for the coordinator's
//!   progress reports and the owner's re-wiring;
//! - the upload side (`upload`) serves whoever downloads from this peer;
//! - the download side (`download`) connects to the download neighbours
//!   (`--sources` of them at most), those given or those the owner last
//!   assigned.
//!
//! Connections store the chunks they receive (the store verifies each
//! one first) and report everything to the coordinator on one channel of
//! `Event`s. Every decision is made by [`machine::PeerCore`], a state
//! machine with no I/O that owns the [`crate::scheduler::Scheduler`]:
//! which source is asked for which chunk (with several download
//! neighbours, the chunks fewest of them hold first), when requests that
//! are not answered in time lapse so another source can be asked, when
//! the owner is called in for the tail of the file (the end game) or
//! while the ring stalls, what the owner is told, when the file is
//! complete and when to leave. The coordinator thread is its shell: it
//! turns events and ticks into the core's inputs and carries out its
//! outputs (requests and COMPLETE over the connections, the download
//! neighbours and shunned addresses the dialers read, log lines), and
//! does the file's I/O: it reassembles and verifies the file when the
//! core says every chunk is held.
//!
//! The threads share no flags: the coordinator steers the owner link and
//! the download side with commands on channels of their own
//! (`LinkCmd`, `DownloadCmd`), and each waits
//! on its channel (with a timeout for backoff) instead of polling. On the
//! way out it sends them `Stop`, fires their [`Abort`]s (which shut down a
//! handshake or session in progress), stops the upload side's accept
//! loop, and joins every thread.

mod download;
mod intake;
pub mod machine;
mod notes;
mod owner_link;
mod record;
mod upload;

use download::DownloadCmd;
use owner_link::LinkCmd;
pub(crate) use owner_link::{NEW_VERSION, receive_manifest};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use crate::auth::Secret;
use crate::chunks::ChunkSet;
use crate::config::{Limits, PeerConfig, Timeouts};
use crate::conn::{Abort, ConnId, Handle, Outgoing, id_list};
use crate::error::{Error, Result};
use crate::manifest::{ChunkId, Digest, Manifest, to_hex};
use crate::net::{self, Stopper};
use crate::scheduler::{SourceId, SourceKind};
use crate::store::{self, Put, Store};
use crate::wire::{self, Message};
use machine::{CoreConfig, DownloaderId, Input, LeaveWhy, Output, PeerCore, TICK, ToOwner};

/// Connections the upload port serves at once by default
/// ([`Limits::upload_connections`]); past it, the one that has done least
/// is closed to make room.
pub const MAX_UPLOAD_CONNECTIONS: usize = 16;

pub use machine::MAX_BAD_CHUNKS;

/// Events queued for the coordinator at most.
const EVENTS: usize = 4096;

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

/// What the peer's threads share, all of it fixed for the round, and the
/// event channel. Nothing here changes, so nothing needs a lock; what
/// does change reaches each thread as a command.
#[derive(Debug)]
pub(crate) struct Shared {
    /// This peer's name in logs, "peer PORT".
    pub name: String,
    started: Instant,
    /// Whether the owner wires this peer into the ring.
    pub wired: bool,
    /// How many download neighbours this peer has at most (`--sources`).
    pub sources: u8,
    /// Whether the owner chooses how many (no `--sources`): REGISTER
    /// then says 0.
    pub auto_sources: bool,
    /// What this peer proves, and requires, on every connection; `None`
    /// for an open swarm.
    pub secret: Option<Arc<Secret>>,
    /// How long each step of a connection may take.
    pub timeouts: Timeouts,
    /// How much the peer takes on at once.
    pub limits: Limits,
    pub events: Sender<Event>,
}

impl Shared {
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
    /// Why the peer left (`None` until it does).
    pub left: Option<LeaveWhy>,
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
pub fn run(args: &PeerConfig) -> Result<Report> {
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
        [] if args.auto_sources => log::info!(
            "{name}: listening on {local}; owner {}, which assigns the download neighbours",
            args.owner
        ),
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
    args: &PeerConfig,
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
        wired: args.download_neighbors.is_empty(),
        sources: args.sources,
        auto_sources: args.auto_sources,
        secret: secret.clone(),
        timeouts: args.timeouts,
        limits: args.limits,
        events,
    });

    // Every thread of the round, stopped and joined however it ends.
    let mut crew = Crew::default();
    let (link_tx, link_rx) = crossbeam_channel::unbounded();
    let link = owner_link::OwnerLink {
        addr: args.owner,
        given: args.download_neighbors.clone(),
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
        cmds: link_rx,
        abort: crew.link_abort.clone(),
        told: Default::default(),
    };
    crew.threads.push(spawn("owner link", move || link.run())?);
    crew.link = Some(link_tx);

    let store = match store {
        Some(s) => s,
        None => match wait_for_store(&event_rx, args) {
            Ok(s) => s,
            Err(e) => {
                crew.stop_and_join(event_rx, None);
                return Err(e);
            }
        },
    };
    let result = run_round(
        args,
        listener,
        &shared,
        &mut crew,
        &event_rx,
        (mark, before),
        &store,
    );
    // The next version's store takes over the directory: nothing of this
    // one may write there from now on, its assembly included (it stops
    // between two chunks). After an error the assembly stops too, so the
    // peer leaves at once.
    let retire = !matches!(result, Ok(Ending::Left(_)));
    crew.stop_and_join(event_rx, retire.then_some(&store));
    result
}

/// The rest of a round, once the store is open: the output, the upload
/// and download sides, and the coordinator until it is done.
fn run_round(
    args: &PeerConfig,
    listener: std::net::TcpListener,
    shared: &Arc<Shared>,
    crew: &mut Crew,
    event_rx: &Receiver<Event>,
    (mark, before): (Mark, Option<Manifest>),
    store: &Arc<Store>,
) -> Result<Ending> {
    // The output grows as chunks arrive, so little is left to do at the
    // end; it takes its final name only once whole and verified.
    let out = output_path(args, store);
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
    let link = crew
        .link
        .clone()
        .ok_or_else(|| Error::Bug("no owner link".into()))?;
    let _ = link.send(owner_link::LinkCmd::OutputReady);
    let (assembler, assembly_store, assembly_out) =
        (Arc::clone(shared), Arc::clone(store), out.clone());
    crew.threads.push(spawn("assembly", move || {
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
    })?);

    let local = listener
        .local_addr()
        .map_err(|e| Error::io("read the listening address", e))?;
    let stopper = Stopper::new(local);
    let up = upload::Upload {
        listener,
        store: Arc::clone(store),
        shared: Arc::clone(shared),
        stopper: stopper.clone(),
    };
    crew.threads.push(spawn("upload", move || up.run())?);
    crew.stopper = Some(stopper);
    let (download_tx, download_rx) = crossbeam_channel::unbounded();
    let down = download::Download {
        store: Arc::clone(store),
        shared: Arc::clone(shared),
        targets: args.download_neighbors.clone(),
    };
    crew.threads
        .push(spawn("download", move || down.run(download_rx))?);
    crew.download = Some(download_tx.clone());

    let steer = Steer {
        link,
        download: download_tx,
    };
    let mut coordinator = Coordinator::new(args, Arc::clone(store), shared, out, steer);
    coordinator.mark = mark;
    let result = coordinator.run(event_rx);
    if let Ok(Ending::Left(_)) = result {
        // Let the download side deliver COMPLETE before the process exit
        // resets the connection; that neighbour may be waiting for
        // exactly that message to leave.
        coordinator.await_complete_delivered(event_rx);
    }
    coordinator.close_all();
    result
}

/// The threads of a round, and how to stop each: the owner link and the
/// download side by command (and an [`Abort`] for the link's socket), the
/// upload side's accept loop by its [`Stopper`]; the assembly ends on its
/// own, or between two chunks once its store is retired.
#[derive(Default)]
struct Crew {
    link: Option<Sender<owner_link::LinkCmd>>,
    link_abort: Abort,
    download: Option<Sender<download::DownloadCmd>>,
    stopper: Option<Stopper>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Crew {
    /// Tells every thread to stop and joins each. `events` is dropped
    /// first, so no thread waits to report to a coordinator that is gone.
    fn stop_and_join(&mut self, events: Receiver<Event>, retire: Option<&Arc<Store>>) {
        if let Some(link) = self.link.take() {
            let _ = link.send(owner_link::LinkCmd::Stop);
        }
        self.link_abort.fire();
        if let Some(download) = self.download.take() {
            let _ = download.send(download::DownloadCmd::Stop);
        }
        if let Some(stopper) = self.stopper.take() {
            stopper.stop();
        }
        if let Some(store) = retire {
            store.retire();
        }
        drop(events);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The commands the coordinator steers the other threads with.
struct Steer {
    link: Sender<owner_link::LinkCmd>,
    download: Sender<download::DownloadCmd>,
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map_err(|e| Error::io(format!("start the {name} thread"), e))
}

/// Where the verified file goes: `--out`, or the store's default place
/// for the file's name inside `--dir`.
fn output_path(args: &PeerConfig, store: &Store) -> PathBuf {
    args.out
        .clone()
        .unwrap_or_else(|| store::default_output(&args.dir, store.manifest().name()))
}

/// Waits for the owner link to open the store.
fn wait_for_store(events: &Receiver<Event>, args: &PeerConfig) -> Result<Arc<Store>> {
    // The owner link gives up after `wait` itself; the margin covers its
    // last connect attempt and handshake.
    let deadline = args.wait + args.timeouts.connect + args.timeouts.handshake;
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

/// The one thread that drives the peer's [`PeerCore`]: it turns the
/// threads' events into inputs and carries out the core's outputs over
/// the connections, the store and the commands to the other threads.
struct Coordinator<'a> {
    args: &'a PeerConfig,
    /// The owner link's and the download side's command channels.
    steer: Steer,
    store: Arc<Store>,
    shared: &'a Shared,
    out: PathBuf,
    core: PeerCore,
    /// Live source connections, with the address a ring source was
    /// dialed at (closed ones too, until their connection reports its
    /// end).
    sources: HashMap<ConnId, (SourceKind, Handle, Option<SocketAddr>)>,
    /// Every source's name and address, for logs and for the bytes by
    /// source (kept while the core counts bytes for it).
    names: HashMap<SourceId, (String, Option<SocketAddr>)>,
    /// Open connections that have downloaded from this peer and not
    /// reported holding every chunk, with what the core last heard of
    /// them (when each last asked, whether it is closed).
    downloaders: HashMap<ConnId, (Handle, Option<Activity>)>,
    report: Option<Report>,
    /// Whole-file mismatches in a row in which no chunk was damaged.
    clean_mismatches: u32,
    /// The live session with the owner, to end in order on the way out.
    owner_link: Option<Handle>,
    /// Where this version's distribution is counted from, then when it
    /// was verified.
    mark: Mark,
    verified_mark: Option<Mark>,
}

impl<'a> Coordinator<'a> {
    fn new(
        args: &'a PeerConfig,
        store: Arc<Store>,
        shared: &'a Shared,
        out: PathBuf,
        steer: Steer,
    ) -> Self {
        let layout = store.layout().clone();
        let config = CoreConfig {
            sources: args.sources,
            wired: shared.wired,
            targets: args.download_neighbors.clone(),
            stall_timeout: args.stall_timeout,
            linger: args.linger,
            linger_given: args.linger_given,
            wait: args.wait,
            follow: args.follow,
            window: request_window(layout.chunk_size()),
            spread: random_u64(),
            notes: true,
        };
        let core = PeerCore::new(layout, store.snapshot(), config, Instant::now());
        Coordinator {
            args,
            steer,
            store,
            shared,
            out,
            core,
            sources: HashMap::new(),
            names: HashMap::new(),
            downloaders: HashMap::new(),
            report: None,
            clean_mismatches: 0,
            owner_link: None,
            mark: Mark::now(),
            verified_mark: None,
        }
    }

    fn name(&self) -> &str {
        &self.shared.name
    }

    /// The coordinator loop: events and ticks into the core, its outputs
    /// carried out, until it decides to leave.
    fn run(&mut self, events: &Receiver<Event>) -> Result<Ending> {
        let ticker = crossbeam_channel::tick(TICK);
        let mut second = Instant::now();
        // Chunks stored before the core was made are held in it already;
        // their events, queued, still say where they came from.
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
            if let Some(report) = self.pump()? {
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
                    if second.elapsed() >= Duration::from_secs(1) {
                        second = now;
                        self.every_second()?;
                    }
                    self.core.handle(now, Input::Tick);
                }
            }
        }
    }

    /// Turns an event into the core's input (logging what it says).
    fn on_event(&mut self, ev: Event) -> Result<()> {
        let now = Instant::now();
        let input = match ev {
            Event::Store(_) | Event::NewVersion(_) => return Ok(()),
            Event::SourceUp(kind, handle, addr) => {
                let src = source(handle.id());
                if self.names.len() >= 1024 {
                    // Names of sources long gone that delivered nothing.
                    let (sources, core) = (&self.sources, &self.core);
                    self.names.retain(|s, _| {
                        sources.contains_key(&ConnId::from_raw(s.0))
                            || core.by_source().iter().any(|(b, _)| b == s)
                    });
                }
                self.names.insert(src, (handle.who().to_string(), addr));
                if kind == SourceKind::Owner {
                    self.owner_link = Some(handle.clone());
                }
                self.sources.insert(handle.id(), (kind, handle, addr));
                Input::SourceUp { src, kind, addr }
            }
            Event::Offered(from, chunks) => {
                log::info!(
                    target: "swarm::chunk",
                    "{}: received chunk-ID list from {} ({} chunks)",
                    self.name(),
                    self.who(source(from)),
                    chunks.len()
                );
                Input::Offered {
                    src: source(from),
                    chunks,
                }
            }
            Event::Have(from, ids) => {
                log::info!(
                    target: "swarm::chunk",
                    "{}: received chunk-ID update from {}: {}",
                    self.name(),
                    self.who(source(from)),
                    id_list(&ids)
                );
                Input::Have {
                    src: source(from),
                    ids,
                }
            }
            Event::Received {
                from,
                id,
                put,
                bytes,
            } => Input::Received {
                src: source(from),
                id,
                put,
                bytes,
            },
            Event::SeedDone(from) => Input::SeedDone { src: source(from) },
            Event::OwnerSeeding(busy) => Input::OwnerSeeding(busy),
            Event::SourceDown(from) => {
                self.sources.remove(&from);
                if self.owner_link.as_ref().is_some_and(|h| h.id() == from) {
                    self.owner_link = None;
                }
                Input::SourceDown { src: source(from) }
            }
            Event::OwnerListed(set) => Input::OwnerListed(set),
            Event::SwarmComplete => Input::SwarmComplete,
            Event::Assembling(result) => {
                result?;
                Input::OutputReady
            }
            Event::Neighbour(assigned) => Input::Neighbours(assigned),
            Event::Unreachable(addr) => Input::Unreachable(addr),
            Event::Downloader(handle) => {
                let conn = downloader(handle.id());
                self.downloaders.insert(handle.id(), (handle, None));
                Input::Downloader { conn }
            }
            Event::DownloaderComplete(from) => {
                let Some((handle, _)) = self.downloaders.remove(&from) else {
                    return Ok(());
                };
                log::info!(
                    "{}: {} reports it holds every chunk",
                    self.shared.name,
                    handle.who()
                );
                Input::DownloaderComplete {
                    conn: downloader(from),
                    last_asked: handle.stats().last_asked(),
                }
            }
            Event::DownloaderGone(from) => {
                let Some((handle, _)) = self.downloaders.remove(&from) else {
                    return Ok(());
                };
                Input::DownloaderGone {
                    conn: downloader(from),
                    last_asked: handle.stats().last_asked(),
                }
            }
            Event::Fatal(e) => return Err(e),
        };
        self.core.handle(now, input);
        Ok(())
    }

    /// Carries out what the core decided; the report once it decides to
    /// leave.
    fn pump(&mut self) -> Result<Option<Report>> {
        // The exit rule reads when each downloader last asked for a
        // chunk, which its connection keeps.
        let now = Instant::now();
        for (id, (handle, told)) in self.downloaders.iter_mut() {
            let seen = (handle.stats().last_asked(), handle.is_closed());
            if *told != Some(seen) {
                *told = Some(seen);
                self.core.handle(
                    now,
                    Input::DownloaderActivity {
                        conn: downloader(*id),
                        last_asked: seen.0,
                        closed: seen.1,
                    },
                );
            }
        }
        while let Some(output) = self.core.poll() {
            if let Some(why) = self.carry_out(output)? {
                let name = self.name();
                match why {
                    LeaveWhy::SwarmComplete => {
                        log::info!("{name}: the owner reports every peer holds the file; exiting")
                    }
                    LeaveWhy::Released => {
                        log::info!("{name}: upload neighbour holds every chunk; exiting")
                    }
                    LeaveWhy::Lingered => log::info!(
                        "{name}: no upload neighbour in contact for {} s; exiting",
                        self.args.linger.as_secs()
                    ),
                }
                let left = Some(why);
                return Ok(self.report.clone().map(|r| Report { left, ..r }));
            }
        }
        Ok(None)
    }

    fn handle_of(&self, src: SourceId) -> Option<&Handle> {
        self.sources
            .get(&ConnId::from_raw(src.0))
            .map(|(_, handle, _)| handle)
    }

    /// One output of the core.
    fn carry_out(&mut self, output: Output) -> Result<Option<LeaveWhy>> {
        match output {
            Output::Request { src, ids } => {
                let Some(handle) = self.handle_of(src) else {
                    return Ok(None);
                };
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
                    // The connection is closing; its SourceDown releases
                    // them.
                    handle.close();
                }
            }
            Output::Close { src, .. } => {
                if let Some(handle) = self.handle_of(src) {
                    handle.close();
                }
            }
            Output::SetTargets(addrs) => {
                let name = self.name();
                match addrs.as_slice() {
                    [] => {
                        log::info!("{name}: the owner has no download neighbour for this peer yet")
                    }
                    [addr] => log::info!("{name}: the owner assigned download neighbour {addr}"),
                    addrs => log::info!(
                        "{name}: the owner assigned download neighbours {}",
                        addr_list(addrs)
                    ),
                }
                let _ = self.steer.download.send(DownloadCmd::Targets(addrs));
            }
            Output::Shun { addr, wait } => {
                let until = Instant::now() + wait;
                let _ = self.steer.download.send(DownloadCmd::Shun(addr, until));
            }
            Output::NeedOwner(need) => {
                let _ = self.steer.link.send(LinkCmd::WantOwner(need));
            }
            Output::ToOwner { src, msg } => {
                let Some(link) = self.handle_of(src) else {
                    return Ok(None);
                };
                match msg {
                    ToOwner::Report { have, rate } => {
                        let mut buf = Vec::new();
                        if !have.is_empty() {
                            wire::encode_have(&have, self.store.layout(), &mut buf);
                        }
                        wire::encode(&Message::Progress { rate }, &mut buf);
                        let _ = link.send(Outgoing::Frames(buf));
                    }
                    ToOwner::Unreachable(text) => {
                        let _ = link.send_message(&Message::Unreachable(&text));
                    }
                    ToOwner::Complete => {
                        let _ = link.send_message(&Message::Complete);
                    }
                }
            }
            Output::TellComplete { src } => {
                if let Some(handle) = self.handle_of(src) {
                    let _ = handle.send_last(&Message::Complete);
                    log::info!(
                        "{}: holds every chunk; told {}",
                        self.shared.name,
                        handle.who()
                    );
                }
            }
            Output::Finish => self.finish()?,
            Output::Leave(why) => return Ok(Some(why)),
            Output::Stuck(wait) => {
                return Err(Error::Timeout(format!(
                    "no chunk arrived from the owner or a download neighbour for {} s",
                    wait.as_secs()
                )));
            }
            Output::Note(note) => self.log_note(note),
        }
        Ok(None)
    }

    /// A source as logs name it.
    fn who(&self, src: SourceId) -> String {
        match self.handle_of(src) {
            Some(handle) => handle.who().to_string(),
            None => "a closed connection".into(),
        }
    }

    /// The summary and the output flushed, once a second.
    fn every_second(&mut self) -> Result<()> {
        if let Err(e) = self.store.flush_summary() {
            if matches!(e, Error::NoSpace(_)) {
                return Err(e);
            }
            log::warn!("{}: {e}", self.shared.name);
        }
        if self.report.is_none() {
            self.store.sync_partial();
        }
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
                    .core
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
                self.core
                    .handle(Instant::now(), Input::Verified(Err(dropped)));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let elapsed = self.shared.started.elapsed();
        let reused = self.store.reused().bytes;
        let (from_owner, from_ring) = (self.core.from_owner(), self.core.from_ring());
        log::info!(
            "{name}: complete in {:.2} s: {:.2} MiB from the owner, {:.2} MiB from the download neighbour, {:.2} MiB reused from {}",
            elapsed.as_secs_f64(),
            from_owner as f64 / MIB,
            from_ring as f64 / MIB,
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
            from_owner,
            from_ring,
            reused,
            wire::bytes_received() - self.mark.received,
        );
        let by_source = self.by_source_named();
        if self.core.targets().len() > 1 || by_source.len() > 2 {
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
            from_owner,
            from_ring,
            by_source,
            reused,
            elapsed,
            left: None,
        });
        // Before COMPLETE goes out (the core's next outputs), so each
        // thread knows by the time its connection ends.
        let _ = self.steer.link.send(LinkCmd::Verified);
        let _ = self.steer.download.send(DownloadCmd::Verified);
        self.core.handle(Instant::now(), Input::Verified(Ok(())));
        Ok(())
    }

    /// Bytes per source, each named as it named itself (sources that
    /// share a name and address, such as one neighbour reconnecting, are
    /// one), and by its address too where two sources share a name (peers
    /// on different machines listening on the same port).
    fn by_source_named(&self) -> Vec<(String, u64)> {
        let mut merged: Vec<(String, Option<SocketAddr>, u64)> = Vec::new();
        for &(src, bytes) in self.core.by_source() {
            let Some((who, addr)) = self.names.get(&src) else {
                continue;
            };
            match merged.iter_mut().find(|(w, a, _)| w == who && a == addr) {
                Some((_, _, total)) => *total += bytes,
                None => merged.push((who.clone(), *addr, bytes)),
            }
        }
        merged
            .iter()
            .map(|(who, addr, bytes)| {
                let shared = merged.iter().any(|(w, a, _)| w == who && a != addr);
                match addr {
                    Some(addr) if shared => (format!("{who} at {addr}"), *bytes),
                    _ => (who.clone(), *bytes),
                }
            })
            .collect()
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
        for (handle, _) in self.downloaders.values() {
            handle.close();
        }
    }
}

/// What the core last heard of a downloader: when it last asked for a
/// chunk, and whether its connection is closed.
type Activity = (Option<Instant>, bool);

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

fn downloader(id: ConnId) -> DownloaderId {
    DownloaderId(id.get())
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
