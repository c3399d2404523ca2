//! The peer's decisions as a state machine: which source is asked for
//! which chunk, when a source is failing, when the owner stands in, when
//! to tell the owner what this peer holds, when the file is complete and
//! when to leave.
//!
//! [`PeerCore`] does no I/O, in the manner of quinn-proto and of
//! [`crate::tracker`]: it owns the [`Scheduler`] and every decision, but
//! no socket, file, thread, lock or clock. Its driver (the coordinator
//! thread in [`crate::peer`], or a network simulator) feeds it
//! [`Input`]s, each with the time, and carries out the [`Output`]s it
//! polls. Everything is named by number ([`SourceId`] for a connection
//! to a source, [`DownloaderId`] for one that downloads from this peer):
//! names and log text are the driver's, made only when a [`Note`] is
//! logged.
//!
//! # API
//!
//! ```text
//! PeerCore::new(layout, held: ChunkSet, config: CoreConfig, now) -> PeerCore
//! core.handle(now, Input)          // an event, at `now`
//! core.poll() -> Option<Output>    // what to do, until None
//! core.next_deadline() -> Option<Instant>  // when to send Input::Tick
//! core.held(), from_owner(), from_ring(), by_source(), is_verified(), ...
//! ```
//!
//! Inputs: a source's connection is up ([`Input::SourceUp`]), offers
//! chunks ([`Input::Offered`], [`Input::Have`]), delivered one
//! ([`Input::Received`], after the store verified it), finished seeding
//! ([`Input::SeedDone`]) or ended ([`Input::SourceDown`]); the owner
//! seeds some peer or none ([`Input::OwnerSeeding`]), listed this peer's
//! chunks in a new session ([`Input::OwnerListed`]), assigned download
//! neighbours ([`Input::Neighbours`]) or reports the swarm complete
//! ([`Input::SwarmComplete`]); the download side cannot reach a
//! neighbour ([`Input::Unreachable`]); downloaders come, ask, complete
//! and go ([`Input::Downloader`], [`Input::DownloaderActivity`],
//! [`Input::DownloaderComplete`], [`Input::DownloaderGone`]); the output
//! file is started ([`Input::OutputReady`]) and the file checked
//! ([`Input::Verified`]); and time passes ([`Input::Tick`]).
//!
//! Outputs: send requests ([`Output::Request`]), close a source
//! ([`Output::Close`]), the download neighbours to dial
//! ([`Output::SetTargets`]) and not to dial for a while
//! ([`Output::Shun`]), whether the owner is wanted as a source
//! ([`Output::NeedOwner`]), messages to the owner ([`Output::ToOwner`]),
//! COMPLETE to a download neighbour ([`Output::TellComplete`]), check the
//! file ([`Output::Finish`]), leave ([`Output::Leave`]), give up
//! ([`Output::Stuck`]) and what is worth a log line ([`Output::Note`],
//! only with [`CoreConfig::notes`]).
//!
//! `handle` only records; `poll` first brings the decisions up to date
//! (tops up requests, says when the file is complete, checks the exit
//! rule), then hands out what is queued. A driver may handle several
//! events and poll once. Calling `handle` while carrying out an output
//! (the driver checks the file on [`Output::Finish`] and handles
//! [`Input::Verified`]) is fine: the next `poll` sees it.
//!
//! # Policy
//!
//! With `T` = `--stall-timeout` ([`CoreConfig::stall_timeout`]), `K` =
//! the number of download neighbours the peer has (given by hand, or as
//! many as the owner assigned, at most `--sources`) and `W` =
//! [`CoreConfig::window`]:
//!
//! - **Requests.** Each ring source is asked for chunks it offers, up to
//!   the window its link shows (at most `W`): first in, first out with
//!   one source; rarest first (offered by the fewest live sources) with
//!   `K > 1`. A request not answered within `T` lapses: the chunk is
//!   wanted again and goes to another source first.
//! - **Failing.** A ring source is failing when a request to it lapsed
//!   within the last `T`; with `K > 1`, also when it has left a request
//!   unanswered for `T` (hung), or when it takes more than
//!   [`SLOW_FACTOR`] times as long per chunk (and more than `T / 100`)
//!   as the fastest other neighbour that is delivering now (has
//!   requests out, neither lapsed nor hung); and, while it has requests
//!   out, when it takes more than [`SLOW_FACTOR`] times as long per chunk
//!   as the owner took per seed (and more than `T / 10`). With `K > 1` a
//!   failing neighbour is held to [`FAILING_WINDOW`] requests in flight.
//! - **Stall rule.** The ring is stalled, and the owner asked for a full
//!   window from the highest chunk down (taking over the ring's claims at
//!   once), when: with no download neighbour, the seeds are in and the
//!   peer has been alone for [`ALONE_GRACE`]; or no ring chunk arrived
//!   for `T` and the peer is hand-wired or has no ring connection; or
//!   every connected ring source is failing, unless the owner wired the
//!   peer with `K > 1`: such a peer passes a failing neighbour over and
//!   leaves a dead one to the owner's re-wiring, for the owner's link
//!   stands in for no one in a large swarm; only once no ring chunk has
//!   arrived for [`RING_SILENCE`] `x T` with every connected one failing
//!   does the owner stand in (neighbours hung with their owner links up
//!   would never be re-wired). A neighbour dropped for
//!   [`MAX_BAD_CHUNKS`] corrupt chunks is shunned for `3 T`; with no other
//!   connected, the ring counts as silent for `T` at once.
//! - **End game.** Once the owner seeds no one and has seeded this peer
//!   `s > 0` chunks, the owner is asked for at most
//!   `max(s / ENDGAME_BUDGET, ENDGAME_WINDOW)` chunks in all
//!   ([`ENDGAME_BUDGET`] = 5, so the owner sends about 1.2 times the file),
//!   [`ENDGAME_WINDOW`] at a time, and only chunks no healthy neighbour
//!   offers: in the longest run still missing, its top (`K = 1`) or a
//!   chunk a random `spread` below it (`K > 1`, so peers ask for
//!   different chunks). A peer seeded nothing has no end game.
//! - **Steal.** With `K > 1` and at least two ring sources, once at most
//!   `W` chunks are missing, a ring source with room takes over another
//!   ring source's requests older than `max(4 x its own chunk time,
//!   STEAL_AFTER)` ([`STEAL_AFTER`] = 0.5 s); the first source's reply is
//!   still taken.
//! - **Reports.** Every second until verified the owner is told the
//!   chunks gained since the last report and the receive rate; once
//!   verified, the owner link and every ring source hear COMPLETE.
//! - **Give up.** No chunk for `--wait` ([`CoreConfig::wait`]) before the
//!   file is verified gives [`Output::Stuck`].
//! - **Leave** (not with `--follow`), once verified: at once when the
//!   owner reports the swarm complete, unless `--linger` was given; when a downloader reported holding
//!   every chunk and no other open one asked for a chunk within
//!   `--linger`; or when none has asked for `--linger`. A connection that
//!   never asked counts for neither.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::chunks::ChunkSet;
use crate::manifest::{ChunkId, Layout};
use crate::scheduler::{Arrival, Order, Scheduler, SourceId, SourceKind};
use crate::store::Put;

/// Corrupt chunks a source may send before it is dropped.
pub const MAX_BAD_CHUNKS: u32 = 3;

/// Requests in flight to the owner in the end game: enough to keep a
/// chunk coming, few enough not to take chunks the ring is about to bring.
pub const ENDGAME_WINDOW: usize = 2;

/// The end game asks the owner for at most this fraction (1 / n) of what
/// it seeded this peer, so the owner sends at most about 1 + 1 / n times
/// the file in all.
pub const ENDGAME_BUDGET: u32 = 5;

/// How many times slower per chunk than the owner (or, with several
/// sources, than another neighbour) a busy download neighbour may be
/// before it counts as failing.
pub const SLOW_FACTOR: u32 = 4;

/// Requests in flight at most to a download neighbour that fails beside
/// others that do not.
pub const FAILING_WINDOW: usize = 2;

/// How old a request to one download neighbour must be at least before
/// another with room takes it over in the end game.
pub const STEAL_AFTER: Duration = Duration::from_millis(500);

/// How many stall timeouts an owner-wired peer with several connected
/// neighbours, every one of them failing, waits for a ring chunk before
/// the owner stands in.
pub const RING_SILENCE: u32 = 3;

/// How long a peer the owner wires waits without a download neighbour,
/// once its seeds are in, before it fetches the rest from the owner.
pub const ALONE_GRACE: Duration = Duration::from_secs(1);

/// How often the core wants a [`Input::Tick`] at most: the real
/// coordinator's ticker. Lapses and the stall rule are judged at ticks.
pub const TICK: Duration = Duration::from_millis(100);

/// How often progress is reported to the owner (and `--wait` checked).
const SECOND: Duration = Duration::from_secs(1);

/// A connection that downloads from this peer (its upload side).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DownloaderId(pub u64);

/// What the core needs to know of the peer's flags: no `PeerArgs`, no
/// store.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// The most download neighbours at once (`--sources`, K).
    pub sources: u8,
    /// Whether the owner wires this peer (no `--download-neighbor`).
    pub wired: bool,
    /// The download neighbours given by hand (none when wired).
    pub targets: Vec<SocketAddr>,
    /// How long a source has to answer a request (`--stall-timeout`).
    pub stall_timeout: Duration,
    /// How long to stay once verified with no downloader (`--linger`).
    pub linger: Duration,
    /// Whether `--linger` was given: then the owner's word that the
    /// swarm is complete does not cut it short.
    pub linger_given: bool,
    /// How long to go without a chunk before giving up (`--wait`).
    pub wait: Duration,
    /// Stay once verified (`--follow`): never [`Output::Leave`].
    pub follow: bool,
    /// The most requests in flight to one source (see
    /// [`crate::peer::request_window`]).
    pub window: usize,
    /// Which chunk of the longest missing run the end game asks the
    /// owner for while the peer has several neighbours: a random draw
    /// per peer (with one neighbour it asks for the top).
    pub spread: u64,
    /// Whether to queue [`Output::Note`]s (a simulator turns them off).
    pub notes: bool,
}

impl CoreConfig {
    /// A wired peer with one source and the command line's defaults
    /// (`--stall-timeout 10`, `--linger 30`, `--wait 60`), for a file of
    /// chunks of `chunk_size` bytes.
    pub fn new(chunk_size: u32) -> CoreConfig {
        CoreConfig {
            sources: 1,
            wired: true,
            targets: Vec::new(),
            stall_timeout: Duration::from_secs(10),
            linger: Duration::from_secs(30),
            linger_given: false,
            wait: Duration::from_secs(60),
            follow: false,
            window: crate::peer::request_window(chunk_size),
            spread: 0,
            notes: true,
        }
    }
}

/// An event, from the connections, the owner or the clock.
#[derive(Debug)]
pub enum Input {
    /// A connection to a source is up; for a ring source, the download
    /// neighbour's address it was dialed for.
    SourceUp {
        src: SourceId,
        kind: SourceKind,
        addr: Option<SocketAddr>,
    },
    /// A source listed every chunk it holds.
    Offered { src: SourceId, chunks: ChunkSet },
    /// A source gained chunks.
    Have { src: SourceId, ids: Vec<ChunkId> },
    /// A chunk of `bytes` arrived from a source and the store dealt with
    /// it (verified it first).
    Received {
        src: SourceId,
        id: ChunkId,
        put: Put,
        bytes: u64,
    },
    /// The owner has sent every seed of this session.
    SeedDone { src: SourceId },
    /// Whether the owner is seeding any peer now.
    OwnerSeeding(bool),
    /// A source's connection ended.
    SourceDown { src: SourceId },
    /// A connection asked this peer for a chunk: it downloads from us.
    Downloader { conn: DownloaderId },
    /// When a downloader last asked for a chunk, and whether its
    /// connection is closed; for the exit rule, given whenever it changes
    /// once the file is verified.
    DownloaderActivity {
        conn: DownloaderId,
        last_asked: Option<Instant>,
        closed: bool,
    },
    /// A downloader reports it holds every chunk.
    DownloaderComplete {
        conn: DownloaderId,
        last_asked: Option<Instant>,
    },
    /// A downloader's connection ended.
    DownloaderGone {
        conn: DownloaderId,
        last_asked: Option<Instant>,
    },
    /// The chunks the owner link listed to the owner in a new session.
    OwnerListed(ChunkSet),
    /// The owner assigned download neighbours, nearest first, each with
    /// its address as the owner wrote it (none: no one yet).
    Neighbours(Vec<(SocketAddr, String)>),
    /// The download side cannot reach the neighbour at this address.
    Unreachable(SocketAddr),
    /// The owner reports every peer it knows holds the whole file.
    SwarmComplete,
    /// The output file is started: the file can be finished once every
    /// chunk is held.
    OutputReady,
    /// The answer to [`Output::Finish`]: verified, or the chunks that
    /// failed the whole-file check and were dropped (none if only the
    /// output was damaged and is rebuilt).
    Verified(Result<(), Vec<ChunkId>>),
    /// Time passed: lapse requests past their deadline, report progress.
    Tick,
}

/// Something for the driver to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Send these requests to a source.
    Request { src: SourceId, ids: Vec<ChunkId> },
    /// Close a source's connection.
    Close { src: SourceId, why: CloseWhy },
    /// The download neighbours the download side dials now.
    SetTargets(Vec<SocketAddr>),
    /// Do not dial the neighbour at `addr` for this long.
    Shun { addr: SocketAddr, wait: Duration },
    /// Whether the owner is wanted as a source (the end game, or a
    /// stalled ring): the owner link reconnects only then.
    NeedOwner(bool),
    /// Send to the owner, on source `src` (its link).
    ToOwner { src: SourceId, msg: ToOwner },
    /// Tell a download neighbour this peer holds every chunk: the last
    /// word on its connection.
    TellComplete { src: SourceId },
    /// Every chunk is held: check the file, and answer with
    /// [`Input::Verified`].
    Finish,
    /// The peer may leave.
    Leave(LeaveWhy),
    /// No chunk arrived for `--wait`: give up.
    Stuck(Duration),
    /// Worth a log line.
    Note(Note),
}

/// Why a source's connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseWhy {
    /// It was dialed for a neighbour the owner has since replaced.
    NotATarget,
    /// It sent [`MAX_BAD_CHUNKS`] corrupt chunks.
    Corrupt,
    /// It sent a chunk it was not asked for.
    Unasked,
}

/// A message to the owner.
#[derive(Debug, PartialEq, Eq)]
pub enum ToOwner {
    /// The chunks gained since the last report (HAVE) and the receive
    /// rate in bytes per second (PROGRESS).
    Report { have: Vec<ChunkId>, rate: u64 },
    /// The assigned neighbour, as the owner wrote it, cannot be reached.
    Unreachable(String),
    /// This peer holds every chunk.
    Complete,
}

/// Why the peer may leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveWhy {
    /// The owner reports every peer holds the file.
    SwarmComplete,
    /// A downloader holds every chunk and no other still needs us.
    Released,
    /// No downloader asked for anything for `--linger`.
    Lingered,
}

/// How a ring source fails this peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failing {
    /// A request to it lapsed within `--stall-timeout`.
    Lapsed,
    /// It has left a request unanswered for `--stall-timeout`.
    Hung,
    /// It takes `mine` per chunk where another neighbour takes `other`.
    SlowerThanNeighbour { mine: Duration, other: Duration },
    /// It takes `mine` per chunk where the owner took `owner`.
    SlowerThanOwner { mine: Duration, owner: Duration },
}

/// Why the ring is stalled and the owner stands in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stall {
    /// No download neighbour: this peer is alone in the ring.
    Alone,
    /// No ring chunk arrived for `--stall-timeout`.
    Silent,
    /// The only neighbour sent [`MAX_BAD_CHUNKS`] corrupt chunks.
    Corrupt,
    /// Every connected ring source is failing, each as said.
    Failing(Vec<(SourceId, Failing)>),
}

/// What is worth a log line; the driver words it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// A request to `src` for `id` lapsed (once per source per
    /// `--stall-timeout`).
    Lapsed { src: SourceId, id: ChunkId },
    /// The ring stalled: the owner stands in.
    Stalled(Stall),
    /// One of several neighbours, at `addr`, was dropped for corrupt
    /// chunks and no other is connected: the owner stands in.
    CorruptAlone { addr: SocketAddr },
    /// The ring delivers again.
    Delivering,
    /// Chunk `id` from `src` failed its SHA-256 check; `bad` so far. At
    /// [`MAX_BAD_CHUNKS`] the source is dropped.
    Corrupt {
        src: SourceId,
        id: ChunkId,
        bad: u32,
    },
    /// `src` sent chunk `id` unasked and is dropped.
    Unasked { src: SourceId, id: ChunkId },
    /// The neighbour at `addr` is not dialed for `wait` (others are
    /// connected).
    Shunned { addr: SocketAddr, wait: Duration },
    /// The owner has seeded `seeded` chunks in all and is done.
    Seeded { seeded: u32 },
    /// Progress: `held` of `total` chunks, receiving `rate` bytes/s.
    Progress { held: u32, total: u32, rate: u64 },
}

/// A live source.
#[derive(Debug)]
struct Source {
    id: SourceId,
    kind: SourceKind,
    /// For a ring source, the address it was dialed at.
    addr: Option<SocketAddr>,
    /// Whether the core has closed it (its SourceDown is still to come).
    closing: bool,
    /// When a lapse was last noted, so a source that keeps letting
    /// requests lapse is named once per `--stall-timeout`.
    lapse_noted: Option<Instant>,
}

/// An open connection that downloads from this peer.
#[derive(Debug)]
struct Downloader {
    id: DownloaderId,
    last_asked: Option<Instant>,
    closed: bool,
}

/// The peer's decisions; see the module docs.
#[derive(Debug)]
pub struct PeerCore {
    cfg: CoreConfig,
    sched: Scheduler,
    out: VecDeque<Output>,
    /// The time of the latest input.
    now: Instant,
    /// Whether an input came since the decisions were last brought up to
    /// date.
    dirty: bool,
    /// Live sources, in the order they came up.
    sources: Vec<Source>,
    /// Kinds of sources that ended, for chunks still reported from them.
    ended: HashMap<SourceId, SourceKind>,
    /// Open downloaders that have not reported holding every chunk.
    downloaders: Vec<Downloader>,
    /// Whether a downloader has reported holding every chunk.
    released: bool,
    /// When a downloader that has since gone last asked for a chunk.
    last_contact: Option<Instant>,
    from_owner: u64,
    from_ring: u64,
    /// Chunk bytes stored from each source, in the order they first
    /// delivered.
    by_source: Vec<(SourceId, u64)>,
    /// Chunks the owner pushed as seeds, in all and in its session.
    seeded: u32,
    session_seeds: u32,
    /// When the owner link came up and its last seed arrived.
    owner_up: Option<Instant>,
    last_seed: Option<Instant>,
    /// What the owner has shown it takes per chunk, once measured.
    owner_chunk_time: Option<Duration>,
    /// Whether the owner is seeding some peer (assumed until it says
    /// otherwise): the end game waits for its link to be free.
    owner_seeding: bool,
    /// When the ring last delivered a chunk (or the core started, or the
    /// neighbours changed).
    ring_progress: Instant,
    stalled: bool,
    /// Whether [`Output::Finish`] is out and not yet answered.
    finishing: bool,
    verified_at: Option<Instant>,
    left: bool,
    /// When a chunk last arrived from anyone, for `--wait`.
    progress_at: Instant,
    last_held: u32,
    last_bytes: u64,
    last_line: Instant,
    next_second: Instant,
    /// The owner's live link.
    owner: Option<SourceId>,
    /// Chunks the owner has been told this peer holds.
    reported: ChunkSet,
    /// The download neighbours now, nearest first.
    targets: Vec<SocketAddr>,
    /// The download neighbours as the owner named them, for UNREACHABLE.
    assigned: Vec<(SocketAddr, String)>,
    /// Whether the owner has sent all of a session's seeds.
    seed_done: bool,
    /// Since when this peer has had no download neighbour, if it has none.
    alone_since: Option<Instant>,
    swarm_complete: bool,
    /// Chunks asked of the owner in the end game.
    endgame_asked: u32,
    /// Whether the output file is started.
    output_ready: bool,
    /// Whether the owner is wanted, as last said.
    need_owner: bool,
    /// How each ring source fails, reused by every refill.
    failing: Vec<(SourceId, Option<Failing>)>,
    /// What the failing rule reads of each ring source, reused by every
    /// refill.
    paces: Vec<Pace>,
}

/// What the failing rule reads of one ring source.
#[derive(Clone, Copy, Debug)]
struct Pace {
    src: SourceId,
    outstanding: usize,
    /// A claim of it lapsed within `T`.
    lapsed: bool,
    /// It has left a request unanswered for `T`.
    hung: bool,
    chunk_time: Option<Duration>,
}

impl PeerCore {
    /// A core for a file of `layout` that already holds `held`, at `now`.
    pub fn new(layout: Layout, held: ChunkSet, cfg: CoreConfig, now: Instant) -> PeerCore {
        let count = layout.count();
        let last_held = held.len();
        let sched = Scheduler::new(layout, held, cfg.stall_timeout);
        PeerCore {
            alone_since: cfg.targets.is_empty().then_some(now),
            targets: cfg.targets.clone(),
            cfg,
            sched,
            out: VecDeque::new(),
            now,
            dirty: false,
            sources: Vec::new(),
            ended: HashMap::new(),
            downloaders: Vec::new(),
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
            finishing: false,
            verified_at: None,
            left: false,
            progress_at: now,
            last_held,
            last_bytes: 0,
            last_line: now,
            next_second: now + SECOND,
            owner: None,
            reported: ChunkSet::new(count),
            assigned: Vec::new(),
            seed_done: false,
            swarm_complete: false,
            endgame_asked: 0,
            output_ready: false,
            need_owner: false,
            failing: Vec::new(),
            paces: Vec::new(),
        }
    }

    /// Takes an event at `now`.
    pub fn handle(&mut self, now: Instant, input: Input) {
        self.now = self.now.max(now);
        let now = self.now;
        self.dirty = true;
        match input {
            Input::SourceUp { src, kind, addr } => self.on_source_up(src, kind, addr, now),
            Input::Offered { src, chunks } => self.sched.offer(src, chunks),
            Input::Have { src, ids } => self.sched.offer_more(src, &ids),
            Input::Received {
                src,
                id,
                put,
                bytes,
            } => self.on_received(src, id, put, bytes, now),
            Input::SeedDone { src } => {
                self.seed_done = true;
                self.sched.stop_pushing(src);
                // Too few seeds say little about the owner's link.
                if let (Some(up), Some(last), n @ 4..) =
                    (self.owner_up, self.last_seed, self.session_seeds)
                {
                    self.owner_chunk_time = Some(last.saturating_duration_since(up) / n);
                }
                self.note(Note::Seeded {
                    seeded: self.seeded,
                });
            }
            Input::OwnerSeeding(busy) => self.owner_seeding = busy,
            Input::SourceDown { src } => self.drop_source(src),
            Input::Downloader { conn } => {
                if !self.downloaders.iter().any(|d| d.id == conn) {
                    self.downloaders.push(Downloader {
                        id: conn,
                        last_asked: None,
                        closed: false,
                    });
                }
            }
            Input::DownloaderActivity {
                conn,
                last_asked,
                closed,
            } => {
                if let Some(d) = self.downloaders.iter_mut().find(|d| d.id == conn) {
                    d.last_asked = last_asked;
                    d.closed = closed;
                }
            }
            Input::DownloaderComplete { conn, last_asked } => {
                if self.forget_downloader(conn, last_asked) {
                    self.released = true;
                    self.last_contact = Some(now);
                }
            }
            Input::DownloaderGone { conn, last_asked } => {
                self.forget_downloader(conn, last_asked);
            }
            Input::OwnerListed(set) => self.reported = set,
            Input::Neighbours(assigned) => self.rewire(assigned, now),
            Input::Unreachable(addr) => {
                if let (Some(owner), Some((_, text))) =
                    (self.owner, self.assigned.iter().find(|(a, _)| *a == addr))
                    && self.cfg.wired
                    && self.targets.contains(&addr)
                {
                    self.out.push_back(Output::ToOwner {
                        src: owner,
                        msg: ToOwner::Unreachable(text.clone()),
                    });
                }
            }
            Input::SwarmComplete => self.swarm_complete = true,
            Input::OutputReady => self.output_ready = true,
            Input::Verified(result) => self.on_verified(result, now),
            Input::Tick => self.on_tick(now),
        }
    }

    /// The next thing to do, once the decisions are brought up to date.
    pub fn poll(&mut self) -> Option<Output> {
        if self.dirty {
            self.dirty = false;
            self.settle();
        }
        self.out.pop_front()
    }

    /// When the core next wants an [`Input::Tick`]: within [`TICK`] of
    /// the latest input while the file is being fetched or the peer
    /// lingers, else at the next second. `None` once it has left.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.left {
            return None;
        }
        if self.verified_at.is_some() && self.cfg.follow {
            return Some(self.next_second);
        }
        Some((self.now + TICK).min(self.next_second))
    }

    /// The chunks held.
    pub fn held(&self) -> &ChunkSet {
        self.sched.held()
    }

    /// The scheduler, to read.
    pub fn scheduler(&self) -> &Scheduler {
        &self.sched
    }

    /// Chunk bytes stored from the owner.
    pub fn from_owner(&self) -> u64 {
        self.from_owner
    }

    /// Chunk bytes stored from the download neighbours.
    pub fn from_ring(&self) -> u64 {
        self.from_ring
    }

    /// Chunk bytes stored from each source, in the order they first
    /// delivered.
    pub fn by_source(&self) -> &[(SourceId, u64)] {
        &self.by_source
    }

    /// Whether the file is verified.
    pub fn is_verified(&self) -> bool {
        self.verified_at.is_some()
    }

    /// Whether the owner stands in for a stalled ring now.
    pub fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// The download neighbours now, nearest first.
    pub fn targets(&self) -> &[SocketAddr] {
        &self.targets
    }

    /// The config it runs with.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// Chunks asked of the owner in the end game so far.
    pub fn endgame_asked(&self) -> u32 {
        self.endgame_asked
    }

    fn note(&mut self, note: Note) {
        if self.cfg.notes {
            self.out.push_back(Output::Note(note));
        }
    }

    fn source(&self, src: SourceId) -> Option<&Source> {
        self.sources.iter().find(|s| s.id == src)
    }

    fn close(&mut self, src: SourceId, why: CloseWhy) {
        if let Some(s) = self.sources.iter_mut().find(|s| s.id == src) {
            s.closing = true;
        }
        self.out.push_back(Output::Close { src, why });
    }

    fn on_source_up(
        &mut self,
        src: SourceId,
        kind: SourceKind,
        addr: Option<SocketAddr>,
        now: Instant,
    ) {
        if kind == SourceKind::Ring && !addr.is_some_and(|a| self.targets.contains(&a)) {
            // Dialed for a neighbour the owner has since replaced (two
            // NEIGHBOURs in a row): its dialer ends.
            self.out.push_back(Output::Close {
                src,
                why: CloseWhy::NotATarget,
            });
            return;
        }
        self.sched.add_source(src, kind, self.cfg.window);
        // (A ring source that reconnects does not reset the stall clock:
        // one that connects and drops again and again delivers nothing
        // all the same.)
        if kind == SourceKind::Owner {
            self.owner_up = Some(now);
            self.session_seeds = 0;
            self.owner_seeding = true;
            self.owner = Some(src);
        }
        self.sources.retain(|s| s.id != src);
        self.sources.push(Source {
            id: src,
            kind,
            addr,
            closing: false,
            lapse_noted: None,
        });
        if self.verified_at.is_some() {
            self.tell_complete(src, kind);
        }
    }

    fn on_received(&mut self, src: SourceId, id: ChunkId, put: Put, bytes: u64, now: Instant) {
        let Some(source) = self.source(src) else {
            // Its connection is gone; what the store kept is held, and
            // counted for the source that sent it.
            if put == Put::Stored {
                self.sched.on_chunk(src, id, now);
                if let Some(&kind) = self.ended.get(&src) {
                    self.count_stored(src, kind, bytes, now);
                }
            }
            return;
        };
        let (kind, addr) = (source.kind, source.addr);
        if put == Put::Corrupt {
            let bad = self.sched.on_bad_chunk(src, id, now);
            if bad > MAX_BAD_CHUNKS {
                // Still in flight when it was disconnected.
                return;
            }
            self.note(Note::Corrupt { src, id, bad });
            if bad == MAX_BAD_CHUNKS {
                self.close(src, CloseWhy::Corrupt);
                // Gone from now on, not when its connection says so: the
                // stall rule must not count it as connected meanwhile.
                self.drop_source(src);
                if let (SourceKind::Ring, Some(addr)) = (kind, addr) {
                    self.shun_ring(addr, now);
                }
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
        if arrival == Arrival::Unasked {
            self.note(Note::Unasked { src, id });
            self.close(src, CloseWhy::Unasked);
            self.drop_source(src);
            return;
        }
        if put == Put::Stored {
            self.count_stored(src, kind, bytes, now);
            if kind == SourceKind::Owner && pushing {
                self.seeded += 1;
                self.session_seeds += 1;
                self.last_seed = Some(now);
            }
        }
    }

    /// Forgets a source whose connection ended or is closed: its claims
    /// go back to wanted. Chunks still reported from it are counted for
    /// it.
    fn drop_source(&mut self, src: SourceId) {
        self.sched.remove_source(src);
        if let Some(at) = self.sources.iter().position(|s| s.id == src) {
            let gone = self.sources.remove(at);
            // Reports queued from a connection arrive just after its end:
            // the last thousand are plenty.
            if self.ended.len() >= 1024 {
                self.ended.clear();
            }
            self.ended.insert(src, gone.kind);
        }
        if self.owner == Some(src) {
            self.owner = None;
        }
    }

    fn count_stored(&mut self, src: SourceId, kind: SourceKind, bytes: u64, now: Instant) {
        self.progress_at = now;
        match self.by_source.iter_mut().find(|(s, _)| *s == src) {
            Some((_, total)) => *total += bytes,
            None => self.by_source.push((src, bytes)),
        }
        match kind {
            SourceKind::Owner => self.from_owner += bytes,
            SourceKind::Ring => {
                self.from_ring += bytes;
                self.ring_progress = now;
            }
        }
    }

    /// Keeps the download side away from the neighbour at `addr` for
    /// `3 T`. Its requests go to the other neighbours; with none
    /// connected, the owner stands in at once (the ring counts as having
    /// delivered nothing for `T`) until a neighbour delivers.
    fn shun_ring(&mut self, addr: SocketAddr, now: Instant) {
        let limit = self.cfg.stall_timeout;
        let wait = 3 * limit;
        self.out.push_back(Output::Shun { addr, wait });
        let others = self
            .sources
            .iter()
            .any(|s| s.kind == SourceKind::Ring && s.addr != Some(addr) && !s.closing);
        if others {
            self.note(Note::Shunned { addr, wait });
            return;
        }
        self.ring_progress = now.checked_sub(limit).unwrap_or(self.ring_progress);
        if self.stalled {
            return;
        }
        if self.targets.len() > 1 {
            self.note(Note::CorruptAlone { addr });
        } else {
            self.note(Note::Stalled(Stall::Corrupt));
        }
        self.stalled = true;
    }

    fn forget_downloader(&mut self, conn: DownloaderId, last_asked: Option<Instant>) -> bool {
        let Some(at) = self.downloaders.iter().position(|d| d.id == conn) else {
            return false;
        };
        self.downloaders.remove(at);
        if let Some(at) = last_asked {
            self.last_contact = self.last_contact.max(Some(at));
        }
        true
    }

    /// The owner assigned download neighbours: ring connections to any
    /// other make way for connections to the new ones.
    fn rewire(&mut self, assigned: Vec<(SocketAddr, String)>, now: Instant) {
        let addrs: Vec<SocketAddr> = assigned.iter().map(|(a, _)| *a).collect();
        self.assigned = assigned;
        if addrs == self.targets {
            return;
        }
        self.targets = addrs.clone();
        self.out.push_back(Output::SetTargets(addrs));
        self.alone_since = self.targets.is_empty().then_some(now);
        let stale: Vec<SourceId> = self
            .sources
            .iter()
            .filter(|s| {
                s.kind == SourceKind::Ring && !s.addr.is_some_and(|a| self.targets.contains(&a))
            })
            .map(|s| s.id)
            .collect();
        for src in stale {
            self.close(src, CloseWhy::NotATarget);
        }
        // A new neighbour gets a fair start before the owner stands in.
        self.ring_progress = now;
    }

    fn on_verified(&mut self, result: Result<(), Vec<ChunkId>>, now: Instant) {
        self.finishing = false;
        match result {
            Ok(()) => {
                self.verified_at = Some(now);
                let links: Vec<(SourceId, SourceKind)> =
                    self.sources.iter().map(|s| (s.id, s.kind)).collect();
                for (src, kind) in links {
                    self.tell_complete(src, kind);
                }
            }
            Err(dropped) => {
                self.sched.drop_held(&dropped);
                self.progress_at = now;
            }
        }
    }

    /// Tells a download neighbour we hold every chunk; tells the owner
    /// too (with a last report), but keeps its link: the owner counts a
    /// peer whose link drops as gone, and this one still serves the ring.
    fn tell_complete(&mut self, src: SourceId, kind: SourceKind) {
        match kind {
            SourceKind::Owner => {
                self.report_progress(0);
                self.out.push_back(Output::ToOwner {
                    src,
                    msg: ToOwner::Complete,
                });
            }
            SourceKind::Ring => self.out.push_back(Output::TellComplete { src }),
        }
    }

    /// Tells the owner what this peer gained since the last report and
    /// how fast it receives.
    fn report_progress(&mut self, rate: u64) {
        let Some(owner) = self.owner else {
            return;
        };
        let mut gained = self.sched.held().clone();
        gained.subtract(&self.reported);
        let have: Vec<ChunkId> = gained.iter(self.sched.layout()).collect();
        self.reported.union_with(&gained);
        self.out.push_back(Output::ToOwner {
            src: owner,
            msg: ToOwner::Report { have, rate },
        });
    }

    fn on_tick(&mut self, now: Instant) {
        // Lapsed requests go back to wanted, so another source is asked
        // (the next refill calls in the owner if the source is in the
        // ring).
        let lapsed = self.sched.expire(now);
        for (id, src) in lapsed {
            let limit = self.cfg.stall_timeout;
            let Some(source) = self.sources.iter_mut().find(|s| s.id == src) else {
                continue;
            };
            if source
                .lapse_noted
                .is_none_or(|at| now.saturating_duration_since(at) >= limit)
            {
                source.lapse_noted = Some(now);
                self.note(Note::Lapsed { src, id });
            }
        }
        if now < self.next_second {
            return;
        }
        self.next_second = now + SECOND;
        if self.verified_at.is_some() {
            return;
        }
        let held = self.sched.held().len();
        if held != self.last_held {
            self.last_held = held;
        } else if now.saturating_duration_since(self.progress_at) >= self.cfg.wait {
            self.out.push_back(Output::Stuck(self.cfg.wait));
            return;
        }
        let bytes = self.from_owner + self.from_ring;
        let secs = now
            .saturating_duration_since(self.last_line)
            .as_secs_f64()
            .max(1e-3);
        let rate = ((bytes - self.last_bytes) as f64 / secs) as u64;
        self.note(Note::Progress {
            held,
            total: self.sched.layout().count(),
            rate,
        });
        self.report_progress(rate);
        self.last_bytes = bytes;
        self.last_line = now;
    }

    /// Brings the decisions up to date: requests, finishing, leaving.
    fn settle(&mut self) {
        if self.left {
            return;
        }
        self.refill();
        if self.verified_at.is_none()
            && !self.finishing
            && self.output_ready
            && self.sched.is_complete()
        {
            self.finishing = true;
            self.out.push_back(Output::Finish);
        }
        if let Some(why) = self.may_leave() {
            self.left = true;
            self.out.push_back(Output::Leave(why));
        }
    }

    /// Whether this peer downloads from several neighbours at once (as
    /// many as it was given or the owner assigned): the rules for several
    /// sources apply, whatever `--sources` allows (without it, the owner
    /// chooses how many).
    fn several(&self) -> bool {
        self.targets.len() > 1
    }

    /// The exit rule; see the module docs.
    fn may_leave(&self) -> Option<LeaveWhy> {
        let verified_at = self.verified_at?;
        if self.cfg.follow {
            return None;
        }
        let now = self.now;
        // The owner's word beats the default --linger, which is a guess
        // at how long a downloader may still need us; not one the user
        // gave.
        if self.swarm_complete && !self.cfg.linger_given {
            return Some(LeaveWhy::SwarmComplete);
        }
        let linger = self.cfg.linger;
        let last_asked = |d: &Downloader| d.last_asked.unwrap_or(verified_at);
        let still_served = self
            .downloaders
            .iter()
            .any(|d| !d.closed && now.saturating_duration_since(last_asked(d)) < linger);
        if self.released && !still_served {
            return Some(LeaveWhy::Released);
        }
        let contact = self
            .downloaders
            .iter()
            .map(last_asked)
            .chain(self.last_contact)
            .fold(verified_at, Instant::max);
        (now.saturating_duration_since(contact) >= linger).then_some(LeaveWhy::Lingered)
    }

    fn set_need_owner(&mut self, need: bool) {
        if need != self.need_owner {
            self.need_owner = need;
            self.out.push_back(Output::NeedOwner(need));
        }
    }

    /// Whether the ring should have the owner's help now, and why; see
    /// the stall rule in the module docs. `self.failing` holds each ring
    /// source with how it fails, if it does.
    fn ring_stalled(&self, now: Instant) -> Option<Stall> {
        let limit = self.cfg.stall_timeout;
        if self.targets.is_empty() {
            // Alone in the ring: once its seeds are in, only the owner
            // has what it lacks; a moment's grace lets the peers started
            // beside it join first.
            let alone = self
                .alone_since
                .is_some_and(|at| now.saturating_duration_since(at) >= ALONE_GRACE);
            return (self.seed_done && alone).then_some(Stall::Alone);
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
            let connected = !self.failing.is_empty();
            if !(self.cfg.wired && connected) {
                return Some(Stall::Silent);
            }
        }
        if self.cfg.wired && self.several() && !self.failing.is_empty() {
            // Several neighbours the owner wired, some connected: one that
            // fails is passed over and the others take its chunks, and the
            // owner re-wires around a dead one and seeds what no one
            // holds. Its link, the one every byte must cross, stands in
            // for no one else's: at a thousand peers on two cores every
            // peer's three busy neighbours looked failing at once, and the
            // owner sent the file 180 times. Unless every one fails and
            // none has delivered anything for RING_SILENCE stall timeouts:
            // neighbours hung with their owner links up are never re-wired.
            let silent = now.saturating_duration_since(self.ring_progress)
                >= self.cfg.stall_timeout * RING_SILENCE;
            if !(silent && self.failing.iter().all(|(_, f)| f.is_some())) {
                return None;
            }
        }
        if self.failing.is_empty() || self.failing.iter().any(|(_, f)| f.is_none()) {
            return None;
        }
        Some(Stall::Failing(
            self.failing
                .iter()
                .filter_map(|&(src, f)| f.map(|f| (src, f)))
                .collect(),
        ))
    }

    /// Whether ring source `me` is failing this peer, and how; see the
    /// failing rule in the module docs. `ring` is every ring source's
    /// pace, `me` among them.
    fn failing(&self, me: &Pace, ring: &[Pace]) -> Option<Failing> {
        let limit = self.cfg.stall_timeout;
        let several = self.several();
        if me.lapsed {
            return Some(Failing::Lapsed);
        }
        if several && me.hung {
            // Its window is full of lapsed requests, so nothing new lapses.
            return Some(Failing::Hung);
        }
        let mine = me.chunk_time?;
        if several {
            // Only neighbours delivering now count: a hung one's old pace,
            // or an idle one's, says nothing of the link this one has.
            let best_other = ring
                .iter()
                .filter(|other| other.src != me.src && other.outstanding > 0)
                .filter(|other| !other.lapsed && !other.hung)
                .filter_map(|other| other.chunk_time)
                .min();
            if let Some(other) = best_other
                && mine > (other * SLOW_FACTOR).max(limit / 100)
            {
                return Some(Failing::SlowerThanNeighbour { mine, other });
            }
        }
        if me.outstanding == 0 {
            return None;
        }
        let owner = self.owner_chunk_time?;
        (mine > (owner * SLOW_FACTOR).max(limit / 10))
            .then_some(Failing::SlowerThanOwner { mine, owner })
    }

    /// Whether ring source `src` has left a request unanswered for `T`.
    fn hung(&self, src: SourceId, now: Instant) -> bool {
        self.sched
            .oldest_outstanding(src)
            .is_some_and(|at| now.saturating_duration_since(at) >= self.cfg.stall_timeout)
    }

    /// Whether a request to ring source `src` lapsed within `T`.
    fn lapsed_recently(&self, src: SourceId, now: Instant) -> bool {
        self.sched
            .last_expiry(src)
            .is_some_and(|at| now.saturating_duration_since(at) < self.cfg.stall_timeout)
    }

    /// Tops up every source's requests; see the module docs.
    fn refill(&mut self) {
        if self.sched.is_complete() {
            self.set_need_owner(false);
            return;
        }
        let now = self.now;
        // How each ring source fails, if it does: once per refill, for the
        // stall rule and for which sources count as healthy below.
        // (What the rule reads of each is gathered first: one look-up
        // per source, not one per pair.)
        let several = self.several();
        let mut paces = std::mem::take(&mut self.paces);
        paces.clear();
        paces.extend(self.sched.sources(SourceKind::Ring).map(|src| Pace {
            src,
            outstanding: self.sched.outstanding(src),
            lapsed: self.lapsed_recently(src, now),
            // (Read only with several neighbours.)
            hung: several && self.hung(src, now),
            chunk_time: self.sched.chunk_time(src),
        }));
        let mut failing = std::mem::take(&mut self.failing);
        failing.clear();
        failing.extend(paces.iter().map(|me| (me.src, self.failing(me, &paces))));
        self.failing = failing;
        self.paces = paces;
        let why = self.ring_stalled(now);
        let stalled = why.is_some();
        if stalled != self.stalled {
            self.note(match why {
                Some(why) => Note::Stalled(why),
                None => Note::Delivering,
            });
            self.stalled = stalled;
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
        let full = self.cfg.window;
        let owner_window = if stalled {
            full
        } else if endgame {
            ENDGAME_WINDOW
        } else {
            0
        };
        self.set_need_owner(owner_window > 0);
        let several = self.several();
        // A random chunk of the missing run with several neighbours, so
        // peers ask the owner for different ones and pass them on; the
        // top in a ring.
        let spread = if several { self.cfg.spread } else { 0 };
        let ring_order = if several {
            Order::Rarest
        } else {
            Order::Arrival
        };
        let ring_count = self.failing.len();
        for i in 0..self.sources.len() {
            let (src, kind) = (self.sources[i].id, self.sources[i].kind);
            let in_ring =
                |s: SourceId, f: &[(SourceId, Option<Failing>)]| f.iter().any(|&(r, _)| r == s);
            let healthy = |s: SourceId, f: &[(SourceId, Option<Failing>)]| {
                f.iter().any(|&(r, why)| r == s && why.is_none())
            };
            let (room, order) = match kind {
                // A neighbour that fails beside others that do not is
                // asked for two chunks at a time: what only it holds comes
                // out first, instead of queueing behind what others hold
                // (two, so that its pace is still measured).
                SourceKind::Ring if several && !healthy(src, &self.failing) => (
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
                let failing = &self.failing;
                let ids = self
                    .sched
                    .reserve_tail(src, room, now, spread, |s| healthy(s, failing));
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
                let failing = &self.failing;
                ids.extend(
                    self.sched
                        .steal(src, more, now, Duration::ZERO, |s| in_ring(s, failing)),
                );
            }
            if kind == SourceKind::Ring
                && several
                && ring_count > 1
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
                let failing = &self.failing;
                ids.extend(
                    self.sched
                        .steal(src, more, now, after, |s| s != src && in_ring(s, failing)),
                );
            }
            if !ids.is_empty() {
                self.out.push_back(Output::Request { src, ids });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The decisions driven by events alone, with a small model of
    //! sources that serve their requests one chunk per gap.

    use super::*;

    const OWNER: SourceId = SourceId(1);
    const A: SourceId = SourceId(2);
    const B: SourceId = SourceId(3);

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// A core of `count` chunks of 1 KiB with `--stall-timeout 2` and
    /// `--linger 3`, and the outputs it gave.
    struct Bed {
        core: PeerCore,
        t0: Instant,
        layout: Layout,
    }

    impl Bed {
        fn new(count: u32, config: impl FnOnce(&mut CoreConfig)) -> Bed {
            let layout = Layout::new(u64::from(count) * 1024, 1024).unwrap();
            let mut c = CoreConfig::new(1024);
            c.stall_timeout = Duration::from_secs(2);
            c.linger = Duration::from_secs(3);
            config(&mut c);
            let t0 = Instant::now();
            let core = PeerCore::new(layout.clone(), ChunkSet::new(count), c, t0);
            Bed { core, t0, layout }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        fn id(&self, raw: u32) -> ChunkId {
            self.layout.chunk_id(raw).unwrap()
        }

        fn set(&self, raw: impl IntoIterator<Item = u32>) -> ChunkSet {
            let mut set = ChunkSet::new(self.layout.count());
            for i in raw {
                set.insert(self.id(i));
            }
            set
        }

        /// Handles `input` at `ms` and returns all the core then does.
        fn feed(&mut self, ms: u64, input: Input) -> Vec<Output> {
            self.core.handle(self.at(ms), input);
            std::iter::from_fn(|| self.core.poll()).collect()
        }

        fn up(&mut self, ms: u64, src: SourceId, kind: SourceKind, port: u16) -> Vec<Output> {
            let addr = (kind == SourceKind::Ring).then(|| addr(port));
            self.feed(ms, Input::SourceUp { src, kind, addr })
        }

        fn stored(&mut self, ms: u64, src: SourceId, raw: u32) -> Vec<Output> {
            let id = self.id(raw);
            self.feed(
                ms,
                Input::Received {
                    src,
                    id,
                    put: Put::Stored,
                    bytes: 1024,
                },
            )
        }
    }

    /// The chunks requested of `src` in `outs`.
    fn asked(outs: &[Output], src: SourceId) -> Vec<u32> {
        outs.iter()
            .filter_map(|o| match o {
                Output::Request { src: s, ids } if *s == src => Some(ids),
                _ => None,
            })
            .flatten()
            .map(|id| id.get())
            .collect()
    }

    /// Sources that answer their requests in order, one chunk every
    /// `gap` ms (`None`: never), stepped 10 ms at a time with a tick
    /// every 100 ms; records every output with its time.
    struct Model {
        links: Vec<(SourceId, Option<u64>, VecDeque<u32>, u64)>,
        outs: Vec<(u64, Output)>,
    }

    impl Model {
        fn new(links: &[(SourceId, Option<u64>)]) -> Model {
            Model {
                links: links
                    .iter()
                    .map(|&(s, g)| (s, g, VecDeque::new(), 0))
                    .collect(),
                outs: Vec::new(),
            }
        }

        /// Takes in outputs given at `ms`: requests join their source's
        /// queue.
        fn take(&mut self, ms: u64, outs: Vec<Output>) {
            for o in outs {
                if let Output::Request { src, ids } = &o
                    && let Some(link) = self.links.iter_mut().find(|l| l.0 == *src)
                {
                    if link.2.is_empty()
                        && let Some(gap) = link.1
                    {
                        link.3 = link.3.max(ms + gap);
                    }
                    link.2.extend(ids.iter().map(|id| id.get()));
                }
                self.outs.push((ms, o));
            }
        }

        /// Runs from `from` to `until` ms, or until the file is held.
        fn run(&mut self, bed: &mut Bed, from: u64, until: u64) {
            let mut ms = from;
            while ms < until && !bed.core.held().is_full() {
                ms += 10;
                for i in 0..self.links.len() {
                    let (src, gap, ready) = (self.links[i].0, self.links[i].1, self.links[i].3);
                    let Some(gap) = gap else { continue };
                    if ms < ready {
                        continue;
                    }
                    if let Some(raw) = self.links[i].2.pop_front() {
                        self.links[i].3 = ms + gap;
                        let outs = bed.stored(ms, src, raw);
                        self.take(ms, outs);
                    }
                }
                if ms.is_multiple_of(100) {
                    let outs = bed.feed(ms, Input::Tick);
                    self.take(ms, outs);
                }
            }
        }

        /// Chunks requested of `src` from `from` ms on.
        fn asked_since(&self, src: SourceId, from: u64) -> Vec<u32> {
            let outs: Vec<&Output> = self
                .outs
                .iter()
                .filter(|(ms, _)| *ms >= from)
                .map(|(_, o)| o)
                .collect();
            outs.iter()
                .filter_map(|o| match o {
                    Output::Request { src: s, ids } if *s == src => Some(ids),
                    _ => None,
                })
                .flatten()
                .map(|id| id.get())
                .collect()
        }

        fn any(&self, f: impl Fn(&Output) -> bool) -> bool {
            self.outs.iter().any(|(_, o)| f(o))
        }
    }

    /// An owner-wired peer with one download neighbour, at port 9001,
    /// that lists every chunk; the owner connected and done seeding
    /// (nothing: no end game).
    fn wired_with_neighbour(count: u32, sources: u8) -> (Bed, Vec<Output>) {
        let mut bed = Bed::new(count, |c| c.sources = sources);
        bed.feed(
            0,
            Input::Neighbours(vec![(addr(9001), "127.0.0.1:9001".into())]),
        );
        bed.up(0, OWNER, SourceKind::Owner, 0);
        bed.feed(0, Input::SeedDone { src: OWNER });
        bed.feed(0, Input::OwnerSeeding(false));
        bed.up(0, A, SourceKind::Ring, 9001);
        let all = bed.set(0..count);
        let outs = bed.feed(
            0,
            Input::Offered {
                src: A,
                chunks: all,
            },
        );
        (bed, outs)
    }

    #[test]
    fn a_neighbour_that_stops_answering_lapses_and_the_owner_stands_in() {
        let (mut bed, outs) = wired_with_neighbour(40, 1);
        assert_eq!(asked(&outs, A), [0, 1, 2, 3], "first in, first out");
        assert!(asked(&outs, OWNER).is_empty(), "the ring is not stalled");
        let mut model = Model::new(&[(A, None), (OWNER, Some(10))]);
        model.take(0, outs);
        model.run(&mut bed, 0, 1990);
        assert!(model.asked_since(OWNER, 0).is_empty(), "{:?}", model.outs);
        assert!(!bed.core.is_stalled());
        // At the stall timeout the four requests lapse: the neighbour is
        // failing, the only one connected, so the owner stands in for
        // the whole file, from the top down, while the neighbour is asked
        // for nothing more.
        model.run(&mut bed, 1990, 10_000);
        let lapsed = model.any(|o| matches!(o, Output::Note(Note::Lapsed { src: A, .. })));
        assert!(lapsed, "{:?}", model.outs);
        let stalled = Output::Note(Note::Stalled(Stall::Failing(vec![(A, Failing::Lapsed)])));
        assert!(model.any(|o| *o == stalled), "{:?}", model.outs);
        assert!(model.any(|o| *o == Output::NeedOwner(true)));
        assert_eq!(model.asked_since(OWNER, 2000)[..4], [39, 38, 37, 36]);
        assert!(bed.core.held().is_full(), "the owner brought the rest");
        assert_eq!(model.asked_since(A, 1), Vec::<u32>::new());
        for raw in 0..4 {
            assert!(model.asked_since(OWNER, 2000).contains(&raw), "chunk {raw}");
        }
        assert_eq!(bed.core.from_owner(), 40 * 1024);
    }

    /// A peer with neighbours A (9001) and B (9002), both listing every
    /// chunk and neither answering; wired by the owner or by hand.
    fn two_silent_neighbours(wired: bool, until_ms: u64) -> (Bed, Model) {
        let count = 40;
        let mut bed = Bed::new(count, |c| {
            c.sources = 2;
            c.wired = wired;
            if !wired {
                c.targets = vec![addr(9001), addr(9002)];
            }
        });
        let mut model = Model::new(&[(A, None), (B, None), (OWNER, Some(10))]);
        if wired {
            bed.feed(
                0,
                Input::Neighbours(vec![
                    (addr(9001), "127.0.0.1:9001".into()),
                    (addr(9002), "127.0.0.1:9002".into()),
                ]),
            );
        }
        bed.up(0, OWNER, SourceKind::Owner, 0);
        bed.feed(0, Input::SeedDone { src: OWNER });
        bed.feed(0, Input::OwnerSeeding(false));
        for (src, port) in [(A, 9001), (B, 9002)] {
            let outs = bed.up(0, src, SourceKind::Ring, port);
            model.take(0, outs);
            let all = bed.set(0..count);
            let outs = bed.feed(0, Input::Offered { src, chunks: all });
            model.take(0, outs);
        }
        model.run(&mut bed, 0, until_ms);
        (bed, model)
    }

    #[test]
    fn owner_wired_with_several_neighbours_a_peer_leaves_failing_ones_to_the_owner_s_repair() {
        // Both neighbours fail (their requests lapse). Hand-wired, the
        // owner stands in, as in a ring.
        let (bed, model) = two_silent_neighbours(false, 8000);
        assert!(bed.core.held().is_full(), "the owner brought the file");
        assert!(model.any(|o| *o == Output::NeedOwner(true)));
        // Owner-wired, the peer waits for them or for the owner to
        // re-wire it: the owner's link is asked for nothing...
        let silence = 2000 * u64::from(RING_SILENCE);
        let (bed, model) = two_silent_neighbours(true, silence - 100);
        assert!(model.any(|o| matches!(o, Output::Note(Note::Lapsed { .. }))));
        assert!(model.asked_since(OWNER, 0).is_empty(), "{:?}", model.outs);
        assert!(!bed.core.is_stalled());
        assert!(bed.core.held().is_empty());
        // ...until nothing has come from either for RING_SILENCE x T.
        let (bed, model) = two_silent_neighbours(true, silence + 8000);
        assert!(model.asked_since(OWNER, 0).len() >= 40, "{:?}", model.outs);
        assert!(bed.core.held().is_full(), "the owner brought the file");
    }

    #[test]
    fn the_owner_s_word_beats_the_default_linger_but_not_a_given_one() {
        for given in [false, true] {
            let mut bed = Bed::new(1, |c| c.linger_given = given);
            bed.up(0, OWNER, SourceKind::Owner, 0);
            bed.stored(10, OWNER, 0);
            bed.feed(20, Input::OutputReady);
            bed.feed(30, Input::Verified(Ok(())));
            let outs = bed.feed(40, Input::SwarmComplete);
            let left = outs.contains(&Output::Leave(LeaveWhy::SwarmComplete));
            assert_eq!(left, !given, "--linger given: {given}: {outs:?}");
        }
    }

    #[test]
    fn with_two_neighbours_a_silent_ones_chunks_go_to_the_other_not_the_owner() {
        let (mut bed, outs) = wired_with_neighbour(400, 2);
        bed.feed(
            0,
            Input::Neighbours(vec![
                (addr(9001), "127.0.0.1:9001".into()),
                (addr(9002), "127.0.0.1:9002".into()),
            ]),
        );
        assert_eq!(asked(&outs, A), [0, 1, 2, 3]);
        let mut model = Model::new(&[(A, None), (B, Some(10)), (OWNER, Some(10))]);
        model.take(0, outs);
        let outs = bed.up(0, B, SourceKind::Ring, 9002);
        model.take(0, outs);
        let all = bed.set(0..400);
        let outs = bed.feed(
            0,
            Input::Offered {
                src: B,
                chunks: all,
            },
        );
        assert_eq!(asked(&outs, B), [4, 5, 6, 7], "a claim is never shared");
        model.take(0, outs);
        // (Too early for the end game's taking over of old requests.)
        model.run(&mut bed, 0, 1990);
        for raw in 0..4 {
            assert!(!model.asked_since(B, 0).contains(&raw), "chunk {raw}");
        }
        model.run(&mut bed, 1990, 2300);
        // Lapsed at 2 s, A's four chunks went to B, the healthy one, and
        // the owner was not called in.
        let b = model.asked_since(B, 2000);
        for raw in 0..4 {
            assert!(b.contains(&raw), "chunk {raw} not asked of B: {b:?}");
        }
        assert!(!bed.core.is_stalled());
        assert!(!model.any(|o| *o == Output::NeedOwner(true)));
        assert!(model.asked_since(OWNER, 0).is_empty());
        model.run(&mut bed, 2300, 20_000);
        assert!(bed.core.held().is_full());
        assert_eq!(model.asked_since(A, 1), Vec::<u32>::new());
        assert_eq!(bed.core.from_ring(), 400 * 1024);
    }

    /// An owner-wired peer the owner seeded `seeds` chunks (the lowest),
    /// whose neighbour holds chunks below `offered`.
    fn end_game(count: u32, seeds: u32, offered: u32) -> (Bed, Model) {
        let mut bed = Bed::new(count, |_| {});
        let mut model = Model::new(&[(A, Some(10)), (OWNER, Some(10))]);
        bed.feed(
            0,
            Input::Neighbours(vec![(addr(9001), "127.0.0.1:9001".into())]),
        );
        bed.up(0, OWNER, SourceKind::Owner, 0);
        for raw in 0..seeds {
            let outs = bed.stored(0, OWNER, raw);
            assert!(asked(&outs, OWNER).is_empty(), "a seed is pushed");
        }
        let outs = bed.feed(0, Input::SeedDone { src: OWNER });
        assert!(
            asked(&outs, OWNER).is_empty(),
            "the owner still seeds others"
        );
        model.take(0, bed.up(0, A, SourceKind::Ring, 9001));
        let offer = bed.set(0..offered);
        model.take(
            0,
            bed.feed(
                0,
                Input::Offered {
                    src: A,
                    chunks: offer,
                },
            ),
        );
        (bed, model)
    }

    #[test]
    fn the_end_game_asks_the_owner_for_the_tail_within_its_budget() {
        // 20 seeds: a budget of 4 chunks, two at a time, of those no
        // neighbour offers (30 to 39), from the top down.
        let (mut bed, mut model) = end_game(40, 20, 30);
        model.run(&mut bed, 0, 500);
        assert!(model.asked_since(OWNER, 0).is_empty(), "not while it seeds");
        let outs = bed.feed(500, Input::OwnerSeeding(false));
        assert_eq!(asked(&outs, OWNER), [39, 38]);
        assert!(outs.contains(&Output::NeedOwner(true)));
        model.take(500, outs);
        model.run(&mut bed, 500, 3000);
        assert_eq!(model.asked_since(OWNER, 0), [39, 38, 37, 36]);
        assert_eq!(bed.core.endgame_asked(), 4);
        assert!(model.any(|o| *o == Output::NeedOwner(false)));
        // The neighbour offers the rest as it gets it; the owner is not
        // asked again.
        let more: Vec<ChunkId> = (30..36).map(|i| bed.id(i)).collect();
        model.take(3000, bed.feed(3000, Input::Have { src: A, ids: more }));
        model.run(&mut bed, 3000, 6000);
        assert!(bed.core.held().is_full());
        assert_eq!(model.asked_since(OWNER, 0).len(), 4);
        assert_eq!(bed.core.from_owner(), (20 + 4) * 1024);
    }

    #[test]
    fn a_peer_the_owner_seeded_nothing_has_no_end_game() {
        let (mut bed, mut model) = end_game(40, 0, 30);
        let outs = bed.feed(500, Input::OwnerSeeding(false));
        model.take(500, outs);
        model.run(&mut bed, 500, 1500);
        assert!(model.asked_since(OWNER, 0).is_empty());
    }

    #[test]
    fn several_neighbours_are_asked_rarest_first() {
        let mut bed = Bed::new(40, |c| c.sources = 2);
        bed.feed(
            0,
            Input::Neighbours(vec![
                (addr(9001), "127.0.0.1:9001".into()),
                (addr(9002), "127.0.0.1:9002".into()),
            ]),
        );
        bed.up(0, A, SourceKind::Ring, 9001);
        bed.up(0, B, SourceKind::Ring, 9002);
        // Both hold 0 to 19; only B holds 20 to 39. B is asked for what
        // only it holds, A for the rest.
        let low = bed.set(0..20);
        let outs = bed.feed(
            0,
            Input::Offered {
                src: A,
                chunks: low,
            },
        );
        assert_eq!(asked(&outs, A), [0, 1, 2, 3]);
        let all = bed.set(0..40);
        let outs = bed.feed(
            0,
            Input::Offered {
                src: B,
                chunks: all,
            },
        );
        assert_eq!(asked(&outs, B), [20, 21, 22, 23]);
    }

    #[test]
    fn a_slow_neighbour_beside_a_fast_one_is_held_to_a_small_window() {
        let (mut bed, outs) = wired_with_neighbour(400, 2);
        bed.feed(
            0,
            Input::Neighbours(vec![
                (addr(9001), "127.0.0.1:9001".into()),
                (addr(9002), "127.0.0.1:9002".into()),
            ]),
        );
        // A delivers a chunk every 10 ms, B every 200 ms.
        let mut model = Model::new(&[(A, Some(10)), (B, Some(200))]);
        model.take(0, outs);
        model.take(0, bed.up(0, B, SourceKind::Ring, 9002));
        let all = bed.set(0..400);
        model.take(
            0,
            bed.feed(
                0,
                Input::Offered {
                    src: B,
                    chunks: all,
                },
            ),
        );
        // Once B's pace is measured (three gaps), it is failing and asked
        // only when fewer than two requests are out there.
        model.run(&mut bed, 0, 1500);
        let queued = |m: &Model| m.links.iter().find(|l| l.0 == B).unwrap().2.len();
        let before = model.asked_since(B, 0).len();
        for step in 15..60 {
            assert!(
                queued(&model) <= FAILING_WINDOW,
                "{} requests out at the slow neighbour at {step}00 ms",
                queued(&model)
            );
            model.run(&mut bed, step * 100, (step + 1) * 100);
        }
        // It still gets requests (so its pace is still measured), and
        // the fast one took the bulk; the owner was never called in.
        assert!(model.asked_since(B, 0).len() > before);
        assert!(bed.core.held().is_full(), "done within 6 s");
        assert_eq!(bed.core.from_ring(), 400 * 1024);
        let from_b = bed
            .core
            .by_source()
            .iter()
            .find(|(s, _)| *s == B)
            .unwrap()
            .1;
        assert!(from_b <= 40 * 1024, "B delivered {from_b} bytes");
        assert!(!model.any(|o| *o == Output::NeedOwner(true)));
    }

    /// A peer that holds the whole file once the output is ready, with
    /// one neighbour and the owner connected.
    fn verified(config: impl FnOnce(&mut CoreConfig)) -> (Bed, Vec<Output>) {
        let mut bed = Bed::new(4, config);
        bed.feed(
            0,
            Input::Neighbours(vec![(addr(9001), "127.0.0.1:9001".into())]),
        );
        bed.up(0, OWNER, SourceKind::Owner, 0);
        for raw in 0..4 {
            bed.stored(0, OWNER, raw);
        }
        bed.feed(0, Input::SeedDone { src: OWNER });
        bed.up(0, A, SourceKind::Ring, 9001);
        let outs = bed.feed(10, Input::Tick);
        assert!(
            !outs.contains(&Output::Finish),
            "not before the output is ready"
        );
        let outs = bed.feed(20, Input::OutputReady);
        assert!(outs.contains(&Output::Finish), "{outs:?}");
        let outs = bed.feed(30, Input::Verified(Ok(())));
        (bed, outs)
    }

    #[test]
    fn a_verified_peer_tells_its_sources_and_leaves_when_released() {
        let (mut bed, outs) = verified(|_| {});
        assert!(outs.contains(&Output::TellComplete { src: A }), "{outs:?}");
        assert!(outs.contains(&Output::ToOwner {
            src: OWNER,
            msg: ToOwner::Complete
        }));
        // A downloader asks, another asks and reports complete: the first
        // still needs us for `--linger` after it last asked.
        let (d1, d2) = (DownloaderId(7), DownloaderId(8));
        bed.feed(100, Input::Downloader { conn: d1 });
        let asked_at = Some(bed.at(100));
        let activity = Input::DownloaderActivity {
            conn: d1,
            last_asked: asked_at,
            closed: false,
        };
        bed.feed(100, activity);
        bed.feed(200, Input::Downloader { conn: d2 });
        let outs = bed.feed(
            300,
            Input::DownloaderComplete {
                conn: d2,
                last_asked: Some(bed.at(300)),
            },
        );
        assert!(
            !outs.iter().any(|o| matches!(o, Output::Leave(_))),
            "{outs:?}"
        );
        let outs = bed.feed(3000, Input::Tick);
        assert!(
            !outs.iter().any(|o| matches!(o, Output::Leave(_))),
            "{outs:?}"
        );
        let outs = bed.feed(3100, Input::Tick);
        assert!(
            outs.contains(&Output::Leave(LeaveWhy::Released)),
            "{outs:?}"
        );
        assert_eq!(bed.core.next_deadline(), None);
        assert!(bed.feed(3200, Input::Tick).is_empty(), "left is left");
    }

    #[test]
    fn a_verified_peer_no_one_downloads_from_leaves_after_linger() {
        let (mut bed, _) = verified(|_| {});
        let outs = bed.feed(3020, Input::Tick);
        assert!(
            !outs.iter().any(|o| matches!(o, Output::Leave(_))),
            "{outs:?}"
        );
        let outs = bed.feed(3030, Input::Tick);
        assert!(
            outs.contains(&Output::Leave(LeaveWhy::Lingered)),
            "{outs:?}"
        );
    }

    #[test]
    fn a_complete_swarm_lets_the_peer_leave_at_once_but_not_with_follow() {
        let (mut bed, _) = verified(|_| {});
        let outs = bed.feed(40, Input::SwarmComplete);
        assert!(outs.contains(&Output::Leave(LeaveWhy::SwarmComplete)));
        let (mut bed, _) = verified(|c| c.follow = true);
        let mut outs = bed.feed(40, Input::SwarmComplete);
        outs.extend(bed.feed(60_000, Input::Tick));
        assert!(
            !outs.iter().any(|o| matches!(o, Output::Leave(_))),
            "{outs:?}"
        );
    }

    #[test]
    fn a_whole_file_mismatch_fetches_the_dropped_chunks_again() {
        let mut bed = Bed::new(4, |_| {});
        bed.feed(
            0,
            Input::Neighbours(vec![(addr(9001), "127.0.0.1:9001".into())]),
        );
        bed.up(0, A, SourceKind::Ring, 9001);
        let all = bed.set(0..4);
        bed.feed(
            0,
            Input::Offered {
                src: A,
                chunks: all,
            },
        );
        bed.feed(0, Input::OutputReady);
        for raw in 0..3 {
            assert!(!bed.stored(10, A, raw).contains(&Output::Finish));
        }
        assert!(bed.stored(10, A, 3).contains(&Output::Finish));
        let dropped = vec![bed.id(2)];
        let outs = bed.feed(20, Input::Verified(Err(dropped)));
        assert_eq!(asked(&outs, A), [2]);
        assert!(bed.stored(30, A, 2).contains(&Output::Finish));
    }

    #[test]
    fn a_neighbour_that_sends_corrupt_chunks_is_dropped_and_shunned() {
        let (mut bed, _) = wired_with_neighbour(40, 1);
        let id = bed.id(0);
        let corrupt = || Input::Received {
            src: A,
            id,
            put: Put::Corrupt,
            bytes: 1024,
        };
        bed.feed(10, corrupt());
        bed.feed(20, corrupt());
        let outs = bed.feed(30, corrupt());
        assert!(outs.contains(&Output::Close {
            src: A,
            why: CloseWhy::Corrupt
        }));
        assert!(outs.contains(&Output::Shun {
            addr: addr(9001),
            wait: Duration::from_secs(6)
        }));
        // The only neighbour: the owner stands in at once.
        assert!(outs.contains(&Output::NeedOwner(true)), "{outs:?}");
        assert!(!asked(&outs, OWNER).is_empty());
    }

    #[test]
    fn a_peer_alone_in_the_ring_fetches_from_the_owner_after_a_grace() {
        let mut bed = Bed::new(40, |_| {});
        bed.up(0, OWNER, SourceKind::Owner, 0);
        bed.stored(0, OWNER, 0);
        bed.feed(0, Input::SeedDone { src: OWNER });
        let outs = bed.feed(900, Input::Tick);
        assert!(asked(&outs, OWNER).is_empty(), "within the grace: {outs:?}");
        let outs = bed.feed(1000, Input::Tick);
        assert!(outs.contains(&Output::Note(Note::Stalled(Stall::Alone))));
        assert_eq!(asked(&outs, OWNER), [39, 38, 37, 36]);
        // A neighbour assigned: the owner steps back (its requests out
        // stay), and the new neighbour gets a fair start.
        let outs = bed.feed(
            1100,
            Input::Neighbours(vec![(addr(9001), "127.0.0.1:9001".into())]),
        );
        assert!(outs.contains(&Output::SetTargets(vec![addr(9001)])));
        assert!(outs.contains(&Output::NeedOwner(false)), "{outs:?}");
    }

    #[test]
    fn a_new_neighbour_replaces_the_old_connection_and_only_it_is_reported() {
        let (mut bed, _) = wired_with_neighbour(40, 1);
        let outs = bed.feed(
            100,
            Input::Neighbours(vec![(addr(9002), "host-b:9002".into())]),
        );
        assert!(outs.contains(&Output::SetTargets(vec![addr(9002)])));
        assert!(outs.contains(&Output::Close {
            src: A,
            why: CloseWhy::NotATarget
        }));
        // A dialer still connecting to the old neighbour is closed too.
        let outs = bed.up(110, SourceId(9), SourceKind::Ring, 9001);
        assert_eq!(
            outs,
            [Output::Close {
                src: SourceId(9),
                why: CloseWhy::NotATarget
            }]
        );
        // Only the neighbour assigned now is reported unreachable, as the
        // owner named it.
        assert!(bed.feed(120, Input::Unreachable(addr(9001))).is_empty());
        let outs = bed.feed(130, Input::Unreachable(addr(9002)));
        assert_eq!(
            outs,
            [Output::ToOwner {
                src: OWNER,
                msg: ToOwner::Unreachable("host-b:9002".into())
            }]
        );
    }

    #[test]
    fn a_quiet_core_allocates_no_notes_and_wants_a_tick_within_100_ms() {
        let (mut bed, _) = wired_with_neighbour(40, 1);
        bed.core.cfg.notes = false;
        let outs = bed.feed(2000, Input::Tick);
        assert!(
            !outs.iter().any(|o| matches!(o, Output::Note(_))),
            "{outs:?}"
        );
        assert_eq!(bed.core.next_deadline(), Some(bed.at(2100)));
    }
}
