//! A simulator that runs swarm's own decision code over a modelled
//! network, in simulated time, on one thread.
//!
//! What is real: the owner's [`OwnerCore`](crate::owner::OwnerCore)
//! and through it the [`Tracker`](crate::tracker::Tracker) (the
//! registry, the ring, the repair after a death) and the
//! [`Seeder`](crate::owner::Seeder) (which chunks each joiner is
//! seeded), fed the inputs and ticked every 100 ms as the owner's loop
//! (`src/owner/shell.rs`) feeds and ticks it; and each peer's
//! [`PeerCore`](crate::peer::machine::PeerCore) and through it the
//! [`Scheduler`](crate::scheduler::Scheduler). What is modelled:
//!
//! - **The network** ([`net`]): every host has an uplink and a downlink
//!   rate; a connection carries one chunk at a time, in order, at a
//!   max-min fair share of its sender's uplink and its receiver's
//!   downlink (TCP-like sharing, without slow start, loss or buffers);
//!   every message (requests, HAVE, NEIGHBOUR, the chunk-ID list) and the
//!   last byte of every chunk take one latency (`--latency-ms`) to arrive.
//!   Messages other than chunks cost no bandwidth.
//! - **The owner's I/O** (`owner`): its sessions' writers, which carry
//!   out the core's commands in order (NEIGHBOUR, then seeds, then
//!   SEED_DONE, then answers to requests), and what it counts as sent.
//! - **The peer** (`peer`): the coordinator's decisions (which source
//!   is asked for what, the owner's end game and stand-in, lapses, the
//!   exit rule) over the real scheduler; the store is a bitset (no disk,
//!   no hashing: every chunk is taken as verified), and connecting takes
//!   one round trip.
//!
//! Time is a `u64` of nanoseconds from the start; the real code is given
//! `base + offset` as its `Instant`. Nothing sleeps and nothing is
//! threaded: one event loop takes, in time order, the next chunk to
//! leave a sender, the next message to arrive (all messages take the same
//! latency, so a FIFO keeps them in order) and the next timer.
//!
//! Limits, besides the above: no CPU or disk limits (a peer stores and
//! forwards at once); a peer's upload slots are not capped; no TCP
//! handshake cost beyond a round trip; a killed peer is gone at once and
//! its sockets close at once (as a process killed with SIGKILL).

pub mod net;
mod owner;
mod peer;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use crate::chunks::ChunkSet;
use crate::manifest::Layout;
use net::{Item, Net, Sent};

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Config {
    /// How many peers join.
    pub peers: u32,
    /// Every host's uplink and downlink, in Mbit/s.
    pub rate_mbit: f64,
    /// The file's size in bytes.
    pub size: u64,
    /// Bytes per chunk.
    pub chunk: u32,
    /// Download neighbours per peer (`--sources`); 0 leaves it to the
    /// owner, as a peer started without `--sources` does.
    pub sources: u8,
    /// Every host's downlink, in Mbit/s (`rate_mbit` unless set; the
    /// netbed limits only egress unless told otherwise).
    pub down_mbit: Option<f64>,
    /// Peers (1-based) whose uplink and downlink are this many Mbit/s.
    pub slow: Vec<(u32, f64)>,
    /// Peers (1-based) whose uplink only is this many Mbit/s (the
    /// netbed's slow case).
    pub slow_up: Vec<(u32, f64)>,
    /// The share of a link's rate that carries chunk bytes: what TCP/IP
    /// and Ethernet headers leave (see [`GOODPUT`]).
    pub goodput: f64,
    /// Peers (1-based) killed at this many seconds.
    pub kill: Vec<(u32, f64)>,
    /// One-way latency of every message.
    pub latency: Duration,
    /// The owner's `--peers`: how many peers share the seeding.
    pub owner_peers: u32,
    /// The peers' `--linger`.
    pub linger: Duration,
    /// The peers' `--stall-timeout`.
    pub stall_timeout: Duration,
    /// Peers join evenly spread over this time from the start.
    pub join_over: Duration,
    /// Simulated time after which the run stops, finished or not.
    pub limit: Duration,
}

impl Config {
    /// The defaults for `peers` peers at `rate_mbit` with a file of
    /// `size` bytes, with swarm's defaults: 100 KiB chunks, sources as
    /// the owner chooses, the owner's `--peers` of [`OWNER_PEERS`] (the
    /// bench passes `--peers N`; set `owner_peers` to compare with it),
    /// 0.5 ms latency, and peers joining over 0.1 ms each (at most a
    /// second), as `scripts/run_many_peers.sh` starts them.
    pub fn new(peers: u32, rate_mbit: f64, size: u64) -> Config {
        Config {
            peers,
            rate_mbit,
            size,
            chunk: 100 * 1024,
            sources: 0,
            down_mbit: None,
            slow: Vec::new(),
            slow_up: Vec::new(),
            goodput: GOODPUT,
            kill: Vec::new(),
            latency: Duration::from_micros(500),
            owner_peers: OWNER_PEERS,
            linger: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(10),
            join_over: Duration::from_micros(100 * u64::from(peers)).min(Duration::from_secs(1)),
            limit: Duration::from_secs(3600),
        }
    }

    /// Whether peer `p` (1-based) was made slow.
    pub fn is_slow(&self, p: u32) -> bool {
        self.slow.iter().chain(&self.slow_up).any(|&(q, _)| q == p)
    }

    /// The file's size over one host's rate: the time one copy takes at
    /// the owner's link speed, in seconds.
    pub fn ideal(&self) -> f64 {
        self.size as f64 * 8.0 / (self.rate_mbit * 1e6)
    }
}

/// The owner's `--peers` by default.
pub const OWNER_PEERS: u32 = 5;

/// The share of a link's bit rate that carries payload with TCP over
/// IPv4 on Ethernet, as a token bucket on the interface counts it: 1448
/// bytes of payload (1500 less 20 of IP, 20 of TCP, 12 of timestamps)
/// per 1514-byte frame. swarm's own framing (9 bytes per 100 KiB chunk)
/// is left out.
pub const GOODPUT: f64 = 1448.0 / 1514.0;

/// What the owner's bytes went to, as the owner model counts them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Seeds the seeder chose for joiners.
    pub seeded: u64,
    /// Seeds the tracker pushed again (chunks that died with a peer, or
    /// that no peer held).
    pub reseeded: u64,
    /// Chunks peers asked the owner for (end game, stand-in).
    pub asked: u64,
    /// Queued chunks never sent (the session ended first).
    pub dropped: u64,
}

impl Plan {
    /// The bytes the plan makes the owner send.
    pub fn total(&self) -> u64 {
        self.seeded + self.reseeded + self.asked - self.dropped
    }
}

/// How a run went.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub config: Config,
    /// When each peer held every chunk, in seconds from the start (`None`:
    /// killed first, or never).
    pub done: Vec<Option<f64>>,
    /// Whether each peer was killed.
    pub killed: Vec<bool>,
    /// Whether each peer's store held every chunk when it finished.
    pub complete: Vec<bool>,
    /// The owner's registry at the end, as `swarm status` would show it.
    pub status: Vec<crate::wire::PeerStatus>,
    /// Chunk bytes the network carried from the owner.
    pub owner_sent: u64,
    /// What the owner model counted it as.
    pub plan: Plan,
    /// Simulated time at the end, in seconds.
    pub sim_secs: f64,
    /// Events handled.
    pub events: u64,
}

impl Outcome {
    /// Completion times over S/B, sorted, of the peers neither killed
    /// nor slow (`slow` false), or of the slow ones not killed (`slow`
    /// true). A peer that never finished counts as infinite.
    pub fn ratios(&self, slow: bool) -> Vec<f64> {
        let ideal = self.config.ideal();
        let mut r: Vec<f64> = (0..self.done.len())
            .filter(|&i| !self.killed[i])
            .filter(|&i| self.config.is_slow(i as u32 + 1) == slow)
            .map(|i| self.done[i].map_or(f64::INFINITY, |d| d / ideal))
            .collect();
        r.sort_by(f64::total_cmp);
        r
    }

    /// The `q` quantile (0 to 1), nearest rank, of the completion times
    /// over S/B of the peers neither killed nor slow.
    pub fn quantile(&self, q: f64) -> f64 {
        quantile(&self.ratios(false), q)
    }

    /// What the owner sent over the file's size.
    pub fn owner_ratio(&self) -> f64 {
        self.owner_sent as f64 / self.config.size.max(1) as f64
    }
}

/// The `q` quantile (0 to 1) of sorted `r`, nearest rank (0 if empty).
pub fn quantile(r: &[f64], q: f64) -> f64 {
    {
        if r.is_empty() {
            return 0.0;
        }
        let rank = ((q * r.len() as f64).ceil() as usize).clamp(1, r.len());
        r[rank - 1]
    }
}

/// A message on its way; it arrives one latency after it was sent.
#[derive(Debug)]
pub(crate) enum Msg {
    // To the receiving end of `conn` (the side chunks flow to).
    /// A chunk's last byte.
    Chunk { conn: u32, id: u32 },
    /// SEED_DONE.
    SeedDone { conn: u32 },
    /// The uploader's chunk-ID list: the connection is up.
    Offer { conn: u32, held: Box<ChunkSet> },
    /// HAVE.
    Have { conn: u32, ids: Box<[u32]> },
    /// The dial found no one listening.
    Refused { conn: u32 },
    /// The owner's MANIFEST: the session is up.
    Manifest { conn: u32 },
    /// NEIGHBOUR: download from these hosts.
    Neighbour { conn: u32, addrs: Box<[u32]> },
    /// SEEDING.
    Seeding { conn: u32, busy: bool },
    /// The owner's COMPLETE: every peer holds the file.
    Release { conn: u32 },
    // To the sending end of `conn`.
    /// A dial reaches the uploader.
    Dial { conn: u32 },
    /// REQUESTs sent together.
    Request { conn: u32, ids: Box<[u32]> },
    /// COMPLETE from the downloading side.
    Complete { conn: u32 },
    /// REGISTER and the chunk-ID list.
    Register { conn: u32, held: Box<ChunkSet> },
    /// HAVE and PROGRESS to the owner.
    Report {
        conn: u32,
        ids: Box<[u32]>,
        rate: u64,
    },
    /// UNREACHABLE.
    Unreachable { conn: u32, addr: u32 },
    // To either end.
    /// The other end closed `conn`; `to` is this end.
    Closed { conn: u32, to: u32 },
}

impl Msg {
    /// The connection it travels on.
    fn conn(&self) -> u32 {
        use Msg::*;
        match *self {
            Chunk { conn, .. }
            | SeedDone { conn }
            | Offer { conn, .. }
            | Have { conn, .. }
            | Refused { conn }
            | Manifest { conn }
            | Neighbour { conn, .. }
            | Seeding { conn, .. }
            | Release { conn }
            | Dial { conn }
            | Request { conn, .. }
            | Complete { conn }
            | Register { conn, .. }
            | Report { conn, .. }
            | Unreachable { conn, .. }
            | Closed { conn, .. } => conn,
        }
    }

    /// The host it is for.
    fn host(&self, net: &Net) -> u32 {
        use Msg::*;
        match *self {
            Chunk { conn, .. }
            | SeedDone { conn }
            | Offer { conn, .. }
            | Have { conn, .. }
            | Refused { conn }
            | Manifest { conn }
            | Neighbour { conn, .. }
            | Seeding { conn, .. }
            | Release { conn } => net.conns[conn as usize].to,
            Dial { conn }
            | Request { conn, .. }
            | Complete { conn }
            | Register { conn, .. }
            | Report { conn, .. }
            | Unreachable { conn, .. } => net.conns[conn as usize].from,
            Closed { to, .. } => to,
        }
    }
}

/// Timers, in the order they fire at the same instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    Join(u32),
    Kill(u32),
    /// The owner's tracker tick.
    Track,
    /// A peer's coordinator tick.
    Tick(u32),
    /// A peer dials its download neighbour again.
    Redial(u32, u32),
}

/// Markers on a connection's queue.
pub(crate) const MARK_SEED_DONE: u8 = 1;
pub(crate) const MARK_SEEDS_OUT: u8 = 2;
pub(crate) const MARK_HAVE: u8 = 3;

/// What the owner and the peers act through: the network, the message
/// FIFO and the timers.
pub(crate) struct Io {
    pub now: u64,
    pub latency: u64,
    pub base: Instant,
    pub net: Net,
    pub layout: Layout,
    msgs: VecDeque<(u64, Msg)>,
    timers: BinaryHeap<Reverse<(u64, Timer)>>,
    /// What left senders and still needs handling.
    sent: Vec<Sent>,
    /// Chunk bytes queued at the owner and dropped unsent.
    pub owner_dropped: u64,
}

impl Io {
    /// The real code's clock now.
    pub fn instant(&self) -> Instant {
        self.base + Duration::from_nanos(self.now)
    }

    /// Sends a message; it arrives one latency from now.
    pub fn send(&mut self, msg: Msg) {
        self.msgs.push_back((self.now + self.latency, msg));
    }

    /// Sets a timer.
    pub fn at(&mut self, t: u64, timer: Timer) {
        self.timers.push(Reverse((t, timer)));
    }

    /// Queues chunk `id` on `conn`.
    pub fn push_chunk(&mut self, conn: u32, id: u32) {
        let len = self
            .layout
            .chunk_id(id)
            .map_or(0, |c| self.layout.chunk_len(c)) as u32;
        self.net
            .push(conn, Item::Chunk(id, len), self.now, &mut self.sent);
    }

    /// Announces chunk `id` on `conn` (see [`Net::announce`]).
    pub fn announce(&mut self, conn: u32, id: u32) {
        self.net
            .announce(conn, id, MARK_HAVE, self.now, &mut self.sent);
    }

    /// Queues a marker on `conn`.
    pub fn push_mark(&mut self, conn: u32, mark: u8) {
        self.net
            .push(conn, Item::Mark(mark), self.now, &mut self.sent);
    }

    /// Closes `conn` from host `by`'s end; the other end hears of it one
    /// latency later. Returns the chunks it had queued.
    pub fn close(&mut self, conn: u32, by: u32) -> Vec<Item> {
        let c = &self.net.conns[conn as usize];
        if !c.open {
            return Vec::new();
        }
        let other = if c.from == by { c.to } else { c.from };
        let from = c.from;
        self.send(Msg::Closed { conn, to: other });
        let dropped = self.net.close(conn, self.now);
        if from == 0 {
            for item in &dropped {
                if let Item::Chunk(_, len) = item {
                    self.owner_dropped += u64::from(*len);
                }
            }
        }
        dropped
    }
}

/// Where a run stands, as [`run_with`] reports it.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Simulated seconds.
    pub secs: f64,
    /// Peers complete so far.
    pub complete: u32,
    /// Events handled so far.
    pub events: u64,
}

/// Runs the simulation described by `config` to its end: every peer
/// not killed is complete (or `config.limit` has passed).
pub fn run(config: &Config) -> Outcome {
    run_with(config, |_| {})
}

/// [`run`], calling `progress` every simulated second.
pub fn run_with(config: &Config, mut progress: impl FnMut(Progress)) -> Outcome {
    let layout = Layout::new(config.size, config.chunk).expect("a valid layout");
    let n = config.peers;
    let bytes = |mbit: f64| mbit * 1e6 / 8.0 * config.goodput;
    let down = config.down_mbit.unwrap_or(config.rate_mbit);
    let mut rates = vec![(bytes(config.rate_mbit), bytes(down)); n as usize + 1];
    for &(p, mbit) in &config.slow {
        if let Some(r) = rates.get_mut(p as usize) {
            *r = (bytes(mbit), bytes(mbit));
        }
    }
    for &(p, mbit) in &config.slow_up {
        if let Some(r) = rates.get_mut(p as usize) {
            r.0 = bytes(mbit);
        }
    }
    let mut io = Io {
        now: 0,
        latency: config.latency.as_nanos() as u64,
        base: Instant::now(),
        net: Net::new(&rates),
        layout: layout.clone(),
        msgs: VecDeque::new(),
        timers: BinaryHeap::new(),
        sent: Vec::new(),
        owner_dropped: 0,
    };
    let mut owner = owner::Owner::new(config, &layout, io.base);
    let mut peers: Vec<peer::Peer> = (0..=n)
        .map(|h| peer::Peer::new(h, config, config.chunk))
        .collect();
    for p in 1..=n {
        let at = config.join_over.as_nanos() as u64 * u64::from(p - 1) / u64::from(n.max(1));
        io.at(at, Timer::Join(p));
    }
    for &(p, secs) in &config.kill {
        if (1..=n).contains(&p) {
            io.at((secs * 1e9) as u64, Timer::Kill(p));
        }
    }
    io.at(owner::TRACK_EVERY, Timer::Track);
    let limit = config.limit.as_nanos() as u64;
    let mut events = 0u64;
    let mut running = n;
    let mut drain = None;
    let mut next_report = 1_000_000_000u64;
    let mut sent = Vec::new();
    loop {
        let t_net = io.net.next_time().unwrap_or(u64::MAX);
        let t_msg = io.msgs.front().map_or(u64::MAX, |(t, _)| *t);
        let t_timer = io.timers.peek().map_or(u64::MAX, |Reverse((t, _))| *t);
        let t = t_net.min(t_msg).min(t_timer);
        // Once every peer is done, what is on its way still arrives (the
        // last COMPLETE, for the owner's registry), and nothing more.
        let end = if running == 0 {
            *drain.get_or_insert(io.now + io.latency)
        } else {
            limit
        };
        if t == u64::MAX || t > end {
            break;
        }
        if t >= next_report {
            next_report += 1_000_000_000;
            progress(Progress {
                secs: t as f64 / 1e9,
                complete: peers.iter().filter(|p| p.done_at().is_some()).count() as u32,
                events,
            });
        }
        io.now = t;
        events += 1;
        if t_net == t {
            io.net.finish_next(t, &mut io.sent);
        } else if t_msg == t {
            prefetch_ahead(&io, &peers);
            let (_, msg) = io.msgs.pop_front().expect("peeked");
            let host = msg.host(&io.net);
            if host == 0 {
                owner.on_msg(msg, &mut io);
            } else {
                let was = peers[host as usize].running();
                peers[host as usize].on_msg(msg, &mut io);
                running -= u32::from(was && !peers[host as usize].running());
            }
        } else {
            let Reverse((_, timer)) = io.timers.pop().expect("peeked");
            match timer {
                Timer::Track => {
                    owner.tick(&mut io);
                    io.at(t + owner::TRACK_EVERY, Timer::Track);
                }
                Timer::Join(p) => peers[p as usize].join(&mut io, &mut owner),
                Timer::Kill(p) | Timer::Tick(p) | Timer::Redial(p, _) => {
                    let was = peers[p as usize].running();
                    peers[p as usize].on_timer(timer, &mut io);
                    running -= u32::from(was && !peers[p as usize].running());
                }
            }
        }
        // What left a sender: chunks and markers arrive one latency
        // later; the owner's "seeds are out" is its own writer's doing.
        while !io.sent.is_empty() {
            std::mem::swap(&mut sent, &mut io.sent);
            for s in sent.drain(..) {
                match s.item {
                    Item::Chunk(id, _) => io.send(Msg::Chunk { conn: s.conn, id }),
                    Item::Mark(MARK_SEED_DONE) => io.send(Msg::SeedDone { conn: s.conn }),
                    Item::Mark(MARK_HAVE) => {
                        let ids = io.net.take_have(s.conn).into_boxed_slice();
                        io.send(Msg::Have { conn: s.conn, ids });
                    }
                    Item::Mark(_) => owner.seeds_out(s.conn, &mut io),
                }
            }
        }
    }
    let ideal_done = |p: &peer::Peer| p.done_at().map(|t| t as f64 / 1e9);
    Outcome {
        config: config.clone(),
        done: peers[1..].iter().map(ideal_done).collect(),
        killed: peers[1..].iter().map(|p| p.killed()).collect(),
        complete: peers[1..].iter().map(|p| p.held_all()).collect(),
        status: owner.status(),
        owner_sent: io.net.sent[0],
        plan: Plan {
            dropped: io.owner_dropped,
            ..owner.plan.clone()
        },
        sim_secs: io.now as f64 / 1e9,
        events,
    }
}

/// How many messages ahead the engine starts fetching a message's
/// connection into the cache, and its host's state.
const AHEAD_CONN: usize = 8;
const AHEAD_HOST: usize = 4;

/// Asks the CPU to fetch what messages a few places down the FIFO will
/// touch: the connection of the one `AHEAD_CONN` ahead, and the host
/// state of the one `AHEAD_HOST` ahead (whose connection was fetched
/// earlier). At ten thousand peers the simulator's state is far larger
/// than the cache, and most of an event's time was these misses. It
/// changes no result: a prefetch only warms the cache.
fn prefetch_ahead(io: &Io, peers: &[peer::Peer]) {
    if let Some((_, msg)) = io.msgs.get(AHEAD_CONN)
        && let Some(c) = io.net.conns.get(msg.conn() as usize)
    {
        prefetch(
            c as *const net::Conn as *const u8,
            std::mem::size_of::<net::Conn>(),
        );
    }
    if let Some((_, msg)) = io.msgs.get(AHEAD_HOST)
        && let Some(p) = peers.get(msg.host(&io.net) as usize)
    {
        prefetch(
            p as *const peer::Peer as *const u8,
            std::mem::size_of::<peer::Peer>(),
        );
    }
}

/// Prefetches the cache lines of `len` bytes at `at`.
pub(crate) fn prefetch(at: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let mut off = 0;
        while off < len {
            // SAFETY: SSE is part of every x86_64 CPU, and a prefetch
            // never faults and changes nothing the program can see.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(off) as *const i8) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, len);
}

/// The address a host registers with (see [`peer::sockaddr`]).
pub(crate) fn addr(host: u32) -> String {
    peer::sockaddr(host).to_string()
}

/// The host an address names.
pub(crate) fn host_of(addr: &str) -> Option<u32> {
    addr.parse().ok().and_then(peer::host_at)
}
