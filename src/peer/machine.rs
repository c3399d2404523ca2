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
//!
//! # The exact rules
//!
//! Moved here from the wire specification (`src/wire.rs`), which they do
//! not belong to: nothing on the wire depends on them, and another peer
//! may choose otherwise. `seeded`, `busy` and SEED_DONE are as the
//! specification's Seeding section defines them.
//!
//! A peer's end game (evaluated after every event and every
//! [`TICK`]):
//!
//! - `seeded`: new chunks it stored that the owner pushed before the first
//!   SEED_DONE of a session, summed over its owner sessions in this run
//!   (not chunks resumed from disk, nor repairs pushed after it).
//! - `owner_busy`: the `busy` of the last SEEDING on the current owner
//!   session; true from the start of each owner session until a SEEDING
//!   says 0.
//! - `endgame = !owner_busy && seeded > 0 && asked < max(seeded / 5, 2)`,
//!   where `asked` counts the chunks it has asked of the owner in the end
//!   game in this run: the owner's link, idle once it seeds no one, brings
//!   each seeded peer at most a fifth of its share more, so the owner sends
//!   about 1.2 times the file in all; a peer seeded nothing has no tail of
//!   its own to fetch.
//! - `stalled` (the ring needs help). Without a download neighbour (none
//!   named yet, or NEIGHBOUR empty): once it has received a SEED_DONE and
//!   has had no neighbour for 1 s. With some, when: no new chunk came
//!   from the ring for `--stall-timeout` (counted from the coordinator's
//!   start or the last change of neighbours), and, for a wired peer, no ring
//!   connection is up (a wired peer's connected neighbour is given time:
//!   the owner re-wires around a dead one and seeds what the whole ring
//!   lacks); or every ring connection up is *failing*. A ring source is
//!   failing when a request to it lapsed within the last
//!   `--stall-timeout`; with `--sources` above 1, when a request to it has
//!   gone unanswered for `--stall-timeout`, or when its time per chunk
//!   is over `max(4 × t, --stall-timeout / 100)`, `t` the least time per
//!   chunk of the other ring sources that have requests outstanding, let
//!   none lapse within `--stall-timeout` and have left none unanswered
//!   that long; or when it has requests
//!   outstanding and takes longer per chunk than `max(4 × t_owner,
//!   --stall-timeout / 10)`.
//!   `t_owner` is (arrival of the last new seed − start of the owner
//!   session) / new seeds in it, taken at a SEED_DONE of a session that
//!   brought at least 4; a source's time per chunk is the gap between
//!   chunks arriving while requests remain outstanding, smoothed as
//!   `gap = (7·gap + new) / 8`, used after 3 gaps.
//!
//! Each source has a window: `ceil(min latency / gap) + 1` clamped to
//! `3..=W` (min latency: the fastest REQUEST-to-CHUNK time seen), 4 until
//! both are measured, `W = clamp(4 MiB / chunk_size, 4, 64)`. The owner is
//! asked, never before its session's first SEED_DONE: while `stalled`, for
//! a full window of any chunks lacking (also taking over chunks the ring
//! has claimed, earliest deadline first), from the highest wanted ID down;
//! else in the end game, for at most 2 outstanding (and no more than
//! `max(seeded / 5, 2) - asked`), and only chunks that no ring connection
//! now up and not failing has offered (listed or HAVE'd): one at a time, the highest such
//! chunk in the longest run of consecutive chunks not held (the first such
//! run on a tie; a run counts chunks claimed from any source, and is passed
//! over if none of its chunks may be asked), or with `--sources` above 1
//! the one `s mod m` places below it among the `m` such chunks of that
//! run, `s` a random number the peer draws at its start (so peers ask for
//! different chunks and pass them on to each other); else for nothing. Shares are
//! runs of IDs that travel the ring a hop at a time, so that is the tail of
//! the share that started farthest away. The ring is asked first in, first
//! out: the chunks it listed in ID order, then those it announced in HAVE,
//! in the order they arrived (any other chunk it offers and this peer wants
//! again, lowest ID first, after those). With `--sources` above 1 a
//! failing ring source, while another is not failing, has at most 2
//! requests outstanding (what only it holds then comes out first), and
//! each ring source is asked rarest first: among the chunks it offers, those
//! offered by the fewest live sources (the owner counting as one that
//! offers every chunk) first, in the order above among equals. And in the
//! end game among them (at most `W` chunks not held), a ring source with
//! room that has nothing left to ask for takes over the requests of the
//! other ring sources that are at least `max(4 × its time per chunk, 0.5
//! s)` old, earliest deadline first, never one asked of it before: the
//! request stays outstanding at its first source, whose CHUNK is still
//! taken. A chunk is claimed by one source at a time until its request
//! lapses or is taken over. Until verified, a wired peer keeps
//! its owner session up, reconnecting whenever it drops; a hand-wired one,
//! after its first session, reconnects only while `stalled` or in the end
//! game, since each of its sessions is seeded again.
//!
//! `W` is taken from the MANIFEST's `chunk_size` whatever the chunking:
//! with content chunking that is the average chunk length, not `max_len`,
//! so a window of `W` chunks is about 4 MiB on average, and up to 16 MiB
//! of the longest chunks (`request_window` in `src/peer/mod.rs`). `W` is
//! at most 64, the most REQUESTs this implementation leaves unanswered
//! at one source.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::chunks::ChunkSet;
use crate::manifest::{ChunkId, Layout};
use crate::scheduler::{Arrival, Order, Scheduler, SourceId, SourceKind};
use crate::store::Put;

mod events;

pub use events::{
    CloseWhy, CoreConfig, DownloaderId, Failing, Input, LeaveWhy, Note, Output, Stall, ToOwner,
};

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
mod tests;
