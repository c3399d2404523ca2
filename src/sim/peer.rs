//! A peer in the simulator: the coordinator's decisions over the real
//! [`Scheduler`], with its sockets and threads replaced by messages.
//!
//! The policy is `src/peer/mod.rs`'s `Coordinator` as of this writing,
//! carried over call by call (refill, lapses, the stall rule and how a
//! source fails, the owner's end game within its budget, stealing among
//! several sources, the progress reports, the exit rule); its threads
//! are modelled as messages: the owner link (MANIFEST, REGISTER, seeds,
//! NEIGHBOUR, SEEDING), the download side (a dial per neighbour, retried
//! with the real backoff, UNREACHABLE to the owner when it fails) and the
//! upload side (the chunk-ID list, a HAVE per chunk gained, requests
//! answered in order, a downloader's COMPLETE). The store is the
//! scheduler's held set: chunks are not hashed or written.

use std::time::{Duration, Instant};

use super::{Config, Io, Msg, Timer};
use crate::chunks::ChunkSet;
use crate::manifest::ChunkId;
use crate::peer::request_window;
use crate::scheduler::{Arrival, Order, Scheduler, SourceId, SourceKind};

/// The coordinator's tick.
const TICK: u64 = 100_000_000;
/// As in `src/peer/mod.rs`.
const ENDGAME_WINDOW: usize = 2;
const ENDGAME_BUDGET: u32 = 5;
const SLOW_FACTOR: u32 = 4;
const FAILING_WINDOW: usize = 2;
const STEAL_AFTER: Duration = Duration::from_millis(500);
const ALONE_GRACE: Duration = Duration::from_secs(1);
/// The download side's first retry delay and its cap (`net::Backoff`).
const BACKOFF_FIRST: u64 = 25_000_000;
const BACKOFF_MAX: u64 = 2_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not started yet.
    Idle,
    Running,
    /// Left after completing.
    Left,
    Killed,
}

/// A connection to a download neighbour, dialed or up.
#[derive(Debug)]
struct Ring {
    conn: u32,
    target: u32,
    up: bool,
}

/// One peer.
pub struct Peer {
    host: u32,
    state: State,
    sources_k: u8,
    stall_timeout: Duration,
    linger: Duration,
    sched: Option<Scheduler>,
    owner: Option<u32>,
    targets: Vec<u32>,
    ring: Vec<Ring>,
    /// Backoff per download neighbour being redialled.
    backoff: Vec<(u32, u64)>,
    /// Open upload connections: every one hears HAVE.
    uploads: Vec<u32>,
    /// Upload connections that asked for a chunk, with when they last did.
    downloaders: Vec<(u32, u64)>,
    released: bool,
    last_contact: Option<u64>,
    seeded: u32,
    session_seeds: u32,
    owner_up: Option<u64>,
    last_seed: Option<u64>,
    owner_chunk_time: Option<Duration>,
    owner_seeding: bool,
    ring_progress: u64,
    stalled: bool,
    seed_done: bool,
    alone_since: Option<u64>,
    swarm_complete: bool,
    endgame_asked: u32,
    spread: u64,
    reported: Option<ChunkSet>,
    done_at: Option<u64>,
    ticks: u32,
    /// Chunk bytes received, and at the last progress report.
    received: u64,
    last_received: u64,
}

impl Peer {
    pub fn new(host: u32, config: &Config) -> Peer {
        Peer {
            host,
            state: State::Idle,
            sources_k: config.sources,
            stall_timeout: config.stall_timeout,
            linger: config.linger,
            sched: None,
            owner: None,
            targets: Vec::new(),
            ring: Vec::new(),
            backoff: Vec::new(),
            uploads: Vec::new(),
            downloaders: Vec::new(),
            released: false,
            last_contact: None,
            seeded: 0,
            session_seeds: 0,
            owner_up: None,
            last_seed: None,
            owner_chunk_time: None,
            owner_seeding: true,
            ring_progress: 0,
            stalled: false,
            seed_done: false,
            alone_since: None,
            swarm_complete: false,
            endgame_asked: 0,
            // Several sources: each peer its own spread, as the real one
            // draws a random one.
            spread: if config.sources > 1 {
                u64::from(host).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            } else {
                0
            },
            reported: None,
            done_at: None,
            ticks: 0,
            received: 0,
            last_received: 0,
        }
    }

    /// Whether it still has to finish: not complete and not killed.
    pub fn running(&self) -> bool {
        self.done_at.is_none() && self.state != State::Killed
    }

    pub fn killed(&self) -> bool {
        self.state == State::Killed
    }

    /// When it held every chunk.
    pub fn done_at(&self) -> Option<u64> {
        self.done_at
    }

    /// The process starts: it connects to the owner.
    pub fn join(&mut self, io: &mut Io, owner: &mut super::owner::Owner) {
        if self.state != State::Idle {
            return;
        }
        self.state = State::Running;
        let conn = io.net.open(0, self.host);
        self.owner = Some(conn);
        self.alone_since = Some(io.now);
        owner.accept(conn, io);
        let phase = u64::from(self.host) * 7_919_000 % TICK;
        io.at(io.now + TICK + phase, Timer::Tick(self.host));
    }

    fn sched(&mut self) -> &mut Scheduler {
        self.sched.as_mut().expect("the store is open")
    }

    fn src(conn: u32) -> SourceId {
        SourceId(conn.into())
    }

    pub fn on_timer(&mut self, timer: Timer, io: &mut Io) {
        if !matches!(self.state, State::Running) {
            return;
        }
        match timer {
            Timer::Kill(_) => self.die(io),
            Timer::Tick(_) => {
                io.at(io.now + TICK, Timer::Tick(self.host));
                if self.sched.is_none() {
                    return;
                }
                let now = io.instant();
                self.sched().expire(now);
                self.ticks += 1;
                if self.ticks % 10 == 0 && self.done_at.is_none() {
                    let rate = (self.received - self.last_received) as u64;
                    self.last_received = self.received;
                    self.report_progress(rate, io);
                }
                self.after_event(io);
            }
            Timer::Redial(_, target) => {
                if self.targets.contains(&target) && !self.ring.iter().any(|r| r.target == target) {
                    self.dial(target, io);
                }
            }
            _ => {}
        }
    }

    /// Killed: every connection drops at once.
    fn die(&mut self, io: &mut Io) {
        self.state = State::Killed;
        self.close_all(io);
        self.sched = None;
    }

    fn close_all(&mut self, io: &mut Io) {
        if let Some(c) = self.owner.take() {
            io.close(c, self.host);
        }
        for r in std::mem::take(&mut self.ring) {
            io.close(r.conn, self.host);
        }
        for c in std::mem::take(&mut self.uploads) {
            io.close(c, self.host);
        }
        self.downloaders.clear();
    }

    pub fn on_msg(&mut self, msg: Msg, io: &mut Io) {
        if self.state != State::Running {
            // A dial to a peer that is gone is refused; anything else is
            // lost.
            if let Msg::Dial { conn } = msg {
                io.send(Msg::Refused { conn });
                io.net.close(conn, io.now);
            }
            return;
        }
        match msg {
            Msg::Manifest { conn } => {
                if Some(conn) != self.owner {
                    return;
                }
                let layout = io.layout.clone();
                let held = ChunkSet::new(layout.count());
                let mut sched = Scheduler::new(layout.clone(), held.clone(), self.stall_timeout);
                sched.add_source(
                    Self::src(conn),
                    SourceKind::Owner,
                    request_window(layout.chunk_size()),
                );
                self.sched = Some(sched);
                self.reported = Some(held.clone());
                self.owner_up = Some(io.now);
                self.ring_progress = io.now;
                io.send(Msg::Register {
                    conn,
                    held: Box::new(held),
                });
            }
            Msg::Neighbour { conn, addrs } => {
                if Some(conn) == self.owner {
                    self.rewire(addrs.to_vec(), io);
                }
            }
            Msg::SeedDone { conn } => {
                if Some(conn) != self.owner {
                    return;
                }
                self.seed_done = true;
                self.sched().stop_pushing(Self::src(conn));
                if let (Some(up), Some(last), n @ 4..) =
                    (self.owner_up, self.last_seed, self.session_seeds)
                {
                    self.owner_chunk_time = Some(Duration::from_nanos(last.saturating_sub(up)) / n);
                }
            }
            Msg::Seeding { conn, busy } => {
                if Some(conn) == self.owner {
                    self.owner_seeding = busy;
                }
            }
            Msg::Release { conn } => {
                if Some(conn) == self.owner {
                    self.swarm_complete = true;
                }
            }
            Msg::Chunk { conn, id } => self.on_chunk(conn, id, io),
            Msg::Offer { conn, held } => {
                let Some(r) = self.ring.iter_mut().find(|r| r.conn == conn) else {
                    return;
                };
                r.up = true;
                self.backoff.retain(|(t, _)| *t != r.target);
                let layout = io.layout.clone();
                let sched = self.sched();
                sched.add_source(
                    Self::src(conn),
                    SourceKind::Ring,
                    request_window(layout.chunk_size()),
                );
                sched.offer(Self::src(conn), *held);
                if self.done_at.is_some() {
                    io.send(Msg::Complete { conn });
                }
            }
            Msg::Have { conn, ids } => {
                if self.ring.iter().any(|r| r.conn == conn && r.up) {
                    let layout = io.layout.clone();
                    let ids: Vec<ChunkId> =
                        ids.iter().filter_map(|&i| layout.chunk_id(i)).collect();
                    self.sched().offer_more(Self::src(conn), &ids);
                }
            }
            Msg::Refused { conn } => {
                let Some(at) = self.ring.iter().position(|r| r.conn == conn) else {
                    return;
                };
                let r = self.ring.swap_remove(at);
                self.redial_later(r.target, true, io);
            }
            Msg::Closed { conn, .. } => {
                io.net.close(conn, io.now);
                if let Some(at) = self.ring.iter().position(|r| r.conn == conn) {
                    let r = self.ring.swap_remove(at);
                    if r.up {
                        self.sched().remove_source(Self::src(conn));
                    }
                    self.redial_later(r.target, false, io);
                } else if Some(conn) == self.owner {
                    self.owner = None;
                    self.sched().remove_source(Self::src(conn));
                } else {
                    self.uploads.retain(|&c| c != conn);
                    self.forget_downloader(conn);
                }
            }
            // The upload side.
            Msg::Dial { conn } => {
                let held = self
                    .sched
                    .as_ref()
                    .map_or_else(|| ChunkSet::new(io.layout.count()), |s| s.held().clone());
                self.uploads.push(conn);
                io.send(Msg::Offer {
                    conn,
                    held: Box::new(held),
                });
            }
            Msg::Request { conn, id } => {
                if !self.uploads.contains(&conn) {
                    return;
                }
                let held = self
                    .sched
                    .as_ref()
                    .is_some_and(|s| s.held().contains_raw(id));
                if held {
                    io.push_chunk(conn, id);
                }
                match self.downloaders.iter_mut().find(|(c, _)| *c == conn) {
                    Some((_, at)) => *at = io.now,
                    None => self.downloaders.push((conn, io.now)),
                }
            }
            Msg::Complete { conn } => {
                if self.forget_downloader(conn) {
                    self.released = true;
                    self.last_contact = Some(io.now);
                    io.net.drop_queued(conn);
                    self.uploads.retain(|&c| c != conn);
                    io.close(conn, self.host);
                }
            }
            _ => {}
        }
        self.after_event(io);
    }

    fn forget_downloader(&mut self, conn: u32) -> bool {
        let Some(at) = self.downloaders.iter().position(|(c, _)| *c == conn) else {
            return false;
        };
        let (_, asked) = self.downloaders.swap_remove(at);
        self.last_contact = self.last_contact.max(Some(asked));
        true
    }

    /// The end of every event: top up requests, then see whether to leave.
    fn after_event(&mut self, io: &mut Io) {
        if self.state != State::Running || self.sched.is_none() {
            return;
        }
        self.refill(io);
        if self.may_leave(io) {
            self.state = State::Left;
            self.close_all(io);
            self.sched = None;
        }
    }

    fn on_chunk(&mut self, conn: u32, id: u32, io: &mut Io) {
        let Some(chunk) = io.layout.chunk_id(id) else {
            return;
        };
        let now = io.instant();
        let from_owner = Some(conn) == self.owner;
        let from_ring = self.ring.iter().any(|r| r.conn == conn);
        if !from_owner && !from_ring {
            // Its connection is gone (it arrived after the close).
            return;
        }
        let src = Self::src(conn);
        let sched = self.sched();
        let fresh = !sched.held().contains(chunk);
        let pushing = sched.is_pushing(src);
        let arrival = if fresh {
            sched.on_chunk(src, chunk, now)
        } else {
            sched.on_duplicate(src, chunk, now)
        };
        if arrival == Arrival::Unasked {
            // Cannot happen with honest peers; the real one disconnects.
            return;
        }
        if !fresh {
            return;
        }
        let len = io.layout.chunk_len(chunk) as u64;
        self.received += len;
        if from_owner {
            if pushing {
                self.seeded += 1;
                self.session_seeds += 1;
                self.last_seed = Some(io.now);
            }
        } else {
            self.ring_progress = io.now;
        }
        // The store's feed: HAVE on every upload connection.
        for &c in &self.uploads {
            io.send(Msg::Have {
                conn: c,
                ids: Box::new([id]),
            });
        }
        if self.sched().is_complete() && self.done_at.is_none() {
            self.finish(io);
        }
    }

    /// Every chunk is held (and, in the real peer, verified): tell the
    /// owner and every download neighbour.
    fn finish(&mut self, io: &mut Io) {
        self.done_at = Some(io.now);
        self.report_progress(0, io);
        if let Some(conn) = self.owner {
            io.send(Msg::Complete { conn });
        }
        for r in &self.ring {
            if r.up {
                io.send(Msg::Complete { conn: r.conn });
            }
        }
    }

    fn report_progress(&mut self, rate: u64, io: &mut Io) {
        let Some(conn) = self.owner else {
            return;
        };
        let (Some(sched), Some(reported)) = (&self.sched, &mut self.reported) else {
            return;
        };
        let mut gained = sched.held().clone();
        gained.subtract(reported);
        reported.union_with(&gained);
        let ids: Box<[u32]> = gained.iter(&io.layout).map(|c| c.get()).collect();
        io.send(Msg::Report { conn, ids, rate });
    }

    /// NEIGHBOUR: connections to any other download neighbour close, new
    /// ones are dialed.
    fn rewire(&mut self, addrs: Vec<u32>, io: &mut Io) {
        if addrs == self.targets {
            return;
        }
        self.alone_since = addrs.is_empty().then_some(io.now);
        let mut keep = Vec::new();
        for r in std::mem::take(&mut self.ring) {
            if addrs.contains(&r.target) {
                keep.push(r);
            } else {
                if r.up {
                    self.sched().remove_source(Self::src(r.conn));
                }
                io.close(r.conn, self.host);
            }
        }
        self.ring = keep;
        self.targets = addrs;
        self.backoff.retain(|(t, _)| self.targets.contains(t));
        for t in self.targets.clone() {
            if !self.ring.iter().any(|r| r.target == t) {
                self.dial(t, io);
            }
        }
        self.ring_progress = io.now;
    }

    fn dial(&mut self, target: u32, io: &mut Io) {
        if self.done_at.is_some() && self.ring.is_empty() && !self.targets.contains(&target) {
            return;
        }
        let conn = io.net.open(target, self.host);
        self.ring.push(Ring {
            conn,
            target,
            up: false,
        });
        io.send(Msg::Dial { conn });
    }

    /// A dial failed or a connection ended: the dialer tries again after
    /// its backoff while the neighbour is still assigned; a failed dial
    /// is reported to the owner.
    fn redial_later(&mut self, target: u32, failed: bool, io: &mut Io) {
        if failed
            && let Some(conn) = self.owner
            && self.targets.contains(&target)
        {
            io.send(Msg::Unreachable { conn, addr: target });
        }
        if !self.targets.contains(&target) || self.done_at.is_some() {
            return;
        }
        let delay = match self.backoff.iter_mut().find(|(t, _)| *t == target) {
            Some((_, d)) => {
                let now = *d;
                *d = (*d * 2).min(BACKOFF_MAX);
                now
            }
            None => {
                self.backoff.push((target, BACKOFF_FIRST * 2));
                BACKOFF_FIRST
            }
        };
        let delay = if failed { delay } else { 0 };
        io.at(io.now + delay, Timer::Redial(self.host, target));
    }

    fn since(&self, io: &Io, t: u64) -> Duration {
        Duration::from_nanos(io.now.saturating_sub(t))
    }

    /// `Coordinator::failing`.
    fn failing(&self, src: SourceId, now: Instant) -> bool {
        let sched = self.sched.as_ref().expect("open");
        let limit = self.stall_timeout;
        let lapsed = |s: SourceId| {
            sched
                .last_expiry(s)
                .is_some_and(|at| now.saturating_duration_since(at) < limit)
        };
        let hung = |s: SourceId| {
            sched
                .oldest_outstanding(s)
                .is_some_and(|at| now.saturating_duration_since(at) >= limit)
        };
        if lapsed(src) {
            return true;
        }
        if self.sources_k > 1 && hung(src) {
            return true;
        }
        let Some(ring) = sched.chunk_time(src) else {
            return false;
        };
        if self.sources_k > 1 {
            let best_other = sched
                .sources(SourceKind::Ring)
                .filter(|&o| o != src && sched.outstanding(o) > 0)
                .filter(|&o| !lapsed(o) && !hung(o))
                .filter_map(|o| sched.chunk_time(o))
                .min();
            if let Some(other) = best_other
                && ring > (other * SLOW_FACTOR).max(limit / 100)
            {
                return true;
            }
        }
        if sched.outstanding(src) == 0 {
            return false;
        }
        let Some(owner) = self.owner_chunk_time else {
            return false;
        };
        ring > (owner * SLOW_FACTOR).max(limit / 10)
    }

    /// `Coordinator::ring_stalled`, without the reasons.
    fn ring_stalled(&self, io: &Io, failing: &[(SourceId, bool)]) -> bool {
        if self.targets.is_empty() {
            let alone = self
                .alone_since
                .is_some_and(|at| self.since(io, at) >= ALONE_GRACE);
            return self.seed_done && alone;
        }
        if self.since(io, self.ring_progress) >= self.stall_timeout && failing.is_empty() {
            return true;
        }
        !failing.is_empty() && failing.iter().all(|(_, f)| *f)
    }

    /// `Coordinator::refill`.
    fn refill(&mut self, io: &mut Io) {
        if self.sched().is_complete() {
            return;
        }
        let now = io.instant();
        let ring_ids: Vec<SourceId> = self.sched().sources(SourceKind::Ring).collect();
        let failing: Vec<(SourceId, bool)> = ring_ids
            .iter()
            .map(|&s| (s, self.failing(s, now)))
            .collect();
        self.stalled = self.ring_stalled(io, &failing);
        let stalled = self.stalled;
        let mut endgame_left = (self.seeded / ENDGAME_BUDGET)
            .max(ENDGAME_WINDOW as u32)
            .saturating_sub(self.endgame_asked);
        let endgame = !self.owner_seeding && self.seeded > 0 && endgame_left > 0;
        let full = request_window(io.layout.chunk_size());
        let owner_window = if stalled {
            full
        } else if endgame {
            ENDGAME_WINDOW
        } else {
            0
        };
        let healthy: Vec<SourceId> = failing
            .iter()
            .filter(|(_, f)| !f)
            .map(|(s, _)| *s)
            .collect();
        let ring_order = if self.sources_k > 1 {
            Order::Rarest
        } else {
            Order::Arrival
        };
        let k = self.sources_k;
        let spread = self.spread;
        let mut links: Vec<(SourceKind, u32)> = self
            .ring
            .iter()
            .filter(|r| r.up)
            .map(|r| (SourceKind::Ring, r.conn))
            .collect();
        if let Some(o) = self.owner {
            links.push((SourceKind::Owner, o));
        }
        for (kind, conn) in links {
            let src = Self::src(conn);
            let sched = self.sched.as_mut().expect("open");
            let (room, order) = match kind {
                SourceKind::Ring if k > 1 && !healthy.contains(&src) => (
                    sched
                        .room(src)
                        .min(FAILING_WINDOW.saturating_sub(sched.outstanding(src))),
                    ring_order,
                ),
                SourceKind::Ring => (sched.room(src), ring_order),
                SourceKind::Owner if sched.is_pushing(src) => continue,
                SourceKind::Owner => {
                    let policy = owner_window.saturating_sub(sched.outstanding(src));
                    (sched.room(src).min(policy), Order::Highest)
                }
            };
            if room == 0 {
                continue;
            }
            let mut ids = if kind == SourceKind::Owner && !stalled {
                let room = room.min(endgame_left as usize);
                let ids = sched.reserve_tail(src, room, now, spread, |s| healthy.contains(&s));
                self.endgame_asked += ids.len() as u32;
                endgame_left -= ids.len() as u32;
                ids
            } else {
                sched.reserve(src, room, order, now)
            };
            if kind == SourceKind::Owner && stalled && ids.len() < room {
                let more = room - ids.len();
                ids.extend(sched.steal(src, more, now, Duration::ZERO, |s| ring_ids.contains(&s)));
            }
            if kind == SourceKind::Ring
                && k > 1
                && ring_ids.len() > 1
                && ids.len() < room
                && sched.missing() as usize <= full
            {
                let after = sched
                    .chunk_time(src)
                    .map_or(STEAL_AFTER, |t| (t * 4).max(STEAL_AFTER));
                let more = room - ids.len();
                ids.extend(
                    sched.steal(src, more, now, after, |s| s != src && ring_ids.contains(&s)),
                );
            }
            for id in ids {
                io.send(Msg::Request { conn, id: id.get() });
            }
        }
    }

    /// `Coordinator::may_leave`.
    fn may_leave(&self, io: &Io) -> bool {
        let Some(done) = self.done_at else {
            return false;
        };
        if self.swarm_complete {
            return true;
        }
        let still_served = self
            .downloaders
            .iter()
            .any(|&(_, asked)| self.since(io, asked.max(done)) < self.linger);
        if self.released && !still_served {
            return true;
        }
        let contact = self
            .downloaders
            .iter()
            .map(|&(_, a)| a)
            .chain(self.last_contact)
            .fold(done, u64::max);
        self.since(io, contact) >= self.linger
    }
}
