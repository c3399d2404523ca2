//! A peer in the simulator: the real [`PeerCore`] (every decision the
//! peer makes) driven by messages instead of sockets and threads.
//!
//! This module is the simulator's stand-in for the peer's shell
//! (`src/peer/mod.rs` and its connection roles): it turns messages into
//! [`Input`]s and carries out the [`Output`]s, as the coordinator does.
//! What the shell's threads do is modelled here: the owner link
//! (MANIFEST, then REGISTER once the output is "ready", which is at
//! once), the download side (a dial per assigned neighbour, retried with
//! the real backoff, each failure reported as [`Input::Unreachable`]) and
//! the upload side (the chunk-ID list on accept, a HAVE per chunk the
//! store gains on every upload connection, requests answered in order
//! when the chunk is held, a downloader's COMPLETE dropping what is still
//! queued for it). The store is a bitset: a chunk is stored (and counted
//! verified) the moment its last byte arrives, and the whole-file check
//! answers [`Output::Finish`] at once.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use super::{Config, Io, Msg, Timer};
use crate::chunks::ChunkSet;
use crate::manifest::ChunkId;
use crate::peer::machine::{CoreConfig, DownloaderId, Input, Output, PeerCore, ToOwner};
use crate::peer::request_window;
use crate::scheduler::{SourceId, SourceKind};
use crate::store::Put;

/// The coordinator's tick.
const TICK: u64 = 100_000_000;
/// The download side's first retry delay and its cap (`net::Backoff`).
const BACKOFF_FIRST: u64 = 25_000_000;
const BACKOFF_MAX: u64 = 2_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not started yet.
    Idle,
    Running,
    /// Left (after completing, or stuck).
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
    cfg: CoreConfig,
    core: Option<PeerCore>,
    /// What the store holds.
    store: Option<ChunkSet>,
    owner: Option<u32>,
    targets: Vec<u32>,
    ring: Vec<Ring>,
    /// Backoff per download neighbour being redialled.
    backoff: Vec<(u32, u64)>,
    /// Open upload connections: every one hears HAVE.
    uploads: Vec<u32>,
    /// Upload connections that asked for a chunk, and when they last did.
    downloaders: Vec<(u32, u64)>,
    done_at: Option<u64>,
    /// Whether the store held every chunk when the core said so.
    held_all: bool,
    stuck: bool,
}

/// The address a host listens at: 10.x.y.z, port 9000.
pub(crate) fn sockaddr(host: u32) -> SocketAddr {
    let [_, a, b, c] = host.to_be_bytes();
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, a, b, c)), 9000)
}

/// The host listening at `addr`.
pub(crate) fn host_at(addr: SocketAddr) -> Option<u32> {
    match addr.ip() {
        IpAddr::V4(ip) => {
            let [_, a, b, c] = ip.octets();
            Some(u32::from_be_bytes([0, a, b, c]))
        }
        IpAddr::V6(_) => None,
    }
}

fn src(conn: u32) -> SourceId {
    SourceId(conn.into())
}

impl Peer {
    pub fn new(host: u32, config: &Config, layout_chunk: u32) -> Peer {
        let mut cfg = CoreConfig::new(layout_chunk);
        // No --sources: as many as the owner assigns.
        cfg.sources = match config.sources {
            0 => crate::wire::MAX_SOURCES,
            k => k,
        };
        cfg.stall_timeout = config.stall_timeout;
        cfg.linger = config.linger;
        cfg.window = request_window(layout_chunk);
        // Each peer its own spread, as the real one draws a random one
        // (used while it has several neighbours).
        cfg.spread = u64::from(host).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        cfg.notes = false;
        Peer {
            host,
            state: State::Idle,
            cfg,
            core: None,
            store: None,
            owner: None,
            targets: Vec::new(),
            ring: Vec::new(),
            backoff: Vec::new(),
            uploads: Vec::new(),
            downloaders: Vec::new(),
            done_at: None,
            held_all: false,
            stuck: false,
        }
    }

    /// Whether it still has to finish: not complete, not killed, not
    /// given up.
    pub fn running(&self) -> bool {
        self.done_at.is_none() && self.state != State::Killed && !self.stuck
    }

    pub fn killed(&self) -> bool {
        self.state == State::Killed
    }

    /// When it held every chunk.
    pub fn done_at(&self) -> Option<u64> {
        self.done_at
    }

    /// Whether its store held every chunk when it finished.
    pub fn held_all(&self) -> bool {
        self.held_all
    }

    /// The process starts: it connects to the owner.
    pub fn join(&mut self, io: &mut Io, owner: &mut super::owner::Owner) {
        if self.state != State::Idle {
            return;
        }
        self.state = State::Running;
        let conn = io.net.open(0, self.host);
        self.owner = Some(conn);
        owner.accept(conn, io);
        let phase = u64::from(self.host) * 7_919_000 % TICK;
        io.at(io.now + TICK + phase, Timer::Tick(self.host));
    }

    /// Feeds the core one input at the current time and carries out
    /// what it decides.
    fn input(&mut self, input: Input, io: &mut Io) {
        let Some(core) = self.core.as_mut() else {
            return;
        };
        core.handle(io.instant(), input);
        self.drain(io);
    }

    fn drain(&mut self, io: &mut Io) {
        while let Some(out) = self.core.as_mut().and_then(PeerCore::poll) {
            self.act(out, io);
            if self.state != State::Running {
                return;
            }
        }
    }

    fn act(&mut self, out: Output, io: &mut Io) {
        match out {
            Output::Request { src, ids } => io.send(Msg::Request {
                conn: src.0 as u32,
                ids: ids.iter().map(|c| c.get()).collect(),
            }),
            Output::Close { src, .. } => {
                let conn = src.0 as u32;
                if let Some(at) = self.ring.iter().position(|r| r.conn == conn) {
                    self.ring.swap_remove(at);
                }
                io.close(conn, self.host);
                self.input(Input::SourceDown { src }, io);
            }
            Output::SetTargets(addrs) => {
                self.targets = addrs.into_iter().filter_map(host_at).collect();
                // Dialers for neighbours no longer assigned end.
                let targets = &self.targets;
                let (keep, stale): (Vec<Ring>, Vec<Ring>) = std::mem::take(&mut self.ring)
                    .into_iter()
                    .partition(|r| r.up || targets.contains(&r.target));
                self.ring = keep;
                for r in stale {
                    io.close(r.conn, self.host);
                }
                self.backoff.retain(|(t, _)| self.targets.contains(t));
                for t in self.targets.clone() {
                    if !self.ring.iter().any(|r| r.target == t) {
                        self.dial(t, io);
                    }
                }
            }
            Output::Shun { .. } | Output::NeedOwner(_) | Output::Note(_) => {}
            Output::ToOwner { src, msg } => {
                let conn = src.0 as u32;
                match msg {
                    ToOwner::Report { have, rate } => io.send(Msg::Report {
                        conn,
                        ids: have.iter().map(|c| c.get()).collect(),
                        rate,
                    }),
                    ToOwner::Unreachable(text) => {
                        if let Some(host) = text.parse().ok().and_then(host_at) {
                            io.send(Msg::Unreachable { conn, addr: host });
                        }
                    }
                    ToOwner::Complete => io.send(Msg::Complete { conn }),
                }
            }
            Output::TellComplete { src } => io.send(Msg::Complete { conn: src.0 as u32 }),
            Output::Finish => {
                self.done_at = Some(io.now);
                self.held_all = self.store.as_ref().is_some_and(ChunkSet::is_full);
                if let Some(core) = self.core.as_mut() {
                    core.handle(io.instant(), Input::Verified(Ok(())));
                }
                // Downloaders' activity matters from now on.
                let now = io.instant();
                let base = io.base;
                for &(conn, at) in &self.downloaders {
                    if let Some(core) = self.core.as_mut() {
                        core.handle(
                            now,
                            Input::DownloaderActivity {
                                conn: DownloaderId(conn.into()),
                                last_asked: Some(base + std::time::Duration::from_nanos(at)),
                                closed: false,
                            },
                        );
                    }
                }
            }
            Output::Leave(_) => self.leave(State::Left, io),
            Output::Stuck(_) => {
                self.stuck = true;
                self.leave(State::Left, io);
            }
        }
    }

    fn leave(&mut self, state: State, io: &mut Io) {
        self.state = state;
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
        self.core = None;
        self.store = None;
    }

    pub fn on_timer(&mut self, timer: Timer, io: &mut Io) {
        if self.state != State::Running {
            return;
        }
        match timer {
            Timer::Kill(_) => self.leave(State::Killed, io),
            Timer::Tick(_) => {
                io.at(io.now + TICK, Timer::Tick(self.host));
                self.input(Input::Tick, io);
            }
            Timer::Redial(_, target)
                if self.targets.contains(&target)
                    && !self.ring.iter().any(|r| r.target == target) =>
            {
                self.dial(target, io);
            }
            _ => {}
        }
    }

    fn last_asked(&self, conn: u32, io: &Io) -> Option<Instant> {
        self.downloaders
            .iter()
            .find(|(c, _)| *c == conn)
            .map(|&(_, at)| io.base + std::time::Duration::from_nanos(at))
    }

    pub fn on_msg(&mut self, msg: Msg, io: &mut Io) {
        if self.state != State::Running {
            // A dial to a peer that is not running is refused; anything
            // else is lost.
            if let Msg::Dial { conn } = msg {
                io.send(Msg::Refused { conn });
                io.net.close(conn, io.now);
            }
            return;
        }
        match msg {
            Msg::Manifest { conn } => {
                if Some(conn) != self.owner || self.core.is_some() {
                    return;
                }
                let layout = io.layout.clone();
                let held = ChunkSet::new(layout.count());
                let now = io.instant();
                let mut core = PeerCore::new(layout, held.clone(), self.cfg.clone(), now);
                core.handle(
                    now,
                    Input::SourceUp {
                        src: src(conn),
                        kind: SourceKind::Owner,
                        addr: None,
                    },
                );
                core.handle(now, Input::OutputReady);
                core.handle(now, Input::OwnerListed(held.clone()));
                self.core = Some(core);
                self.store = Some(held.clone());
                io.send(Msg::Register {
                    conn,
                    held: Box::new(held),
                });
                self.drain(io);
            }
            Msg::Neighbour { conn, addrs } if Some(conn) == self.owner => {
                let assigned = addrs
                    .iter()
                    .map(|&h| (sockaddr(h), sockaddr(h).to_string()))
                    .collect();
                self.input(Input::Neighbours(assigned), io);
            }
            Msg::SeedDone { conn } if Some(conn) == self.owner => {
                self.input(Input::SeedDone { src: src(conn) }, io);
            }
            Msg::Seeding { conn, busy } if Some(conn) == self.owner => {
                self.input(Input::OwnerSeeding(busy), io);
            }
            Msg::Release { conn } if Some(conn) == self.owner => {
                self.input(Input::SwarmComplete, io);
            }
            Msg::Chunk { conn, id } => self.on_chunk(conn, id, io),
            Msg::Offer { conn, held } => {
                let Some(r) = self.ring.iter_mut().find(|r| r.conn == conn) else {
                    return;
                };
                r.up = true;
                let target = r.target;
                self.backoff.retain(|(t, _)| *t != target);
                let (now, s) = (io.instant(), src(conn));
                if let Some(core) = self.core.as_mut() {
                    core.handle(
                        now,
                        Input::SourceUp {
                            src: s,
                            kind: SourceKind::Ring,
                            addr: Some(sockaddr(target)),
                        },
                    );
                    core.handle(
                        now,
                        Input::Offered {
                            src: s,
                            chunks: *held,
                        },
                    );
                }
                self.drain(io);
            }
            Msg::Have { conn, ids } if self.ring.iter().any(|r| r.conn == conn && r.up) => {
                let ids: Vec<ChunkId> = ids.iter().filter_map(|&i| io.layout.chunk_id(i)).collect();
                self.input(
                    Input::Have {
                        src: src(conn),
                        ids,
                    },
                    io,
                );
            }
            Msg::Refused { conn } => {
                let Some(at) = self.ring.iter().position(|r| r.conn == conn) else {
                    return;
                };
                let r = self.ring.swap_remove(at);
                self.input(Input::Unreachable(sockaddr(r.target)), io);
                self.redial_later(r.target, io);
            }
            Msg::Closed { conn, .. } => {
                io.net.close(conn, io.now);
                if let Some(at) = self.ring.iter().position(|r| r.conn == conn) {
                    let r = self.ring.swap_remove(at);
                    if r.up {
                        self.input(Input::SourceDown { src: src(conn) }, io);
                    }
                    self.redial_later(r.target, io);
                } else if Some(conn) == self.owner {
                    self.owner = None;
                    self.input(Input::SourceDown { src: src(conn) }, io);
                } else if let Some(at) = self.uploads.iter().position(|&c| c == conn) {
                    self.uploads.swap_remove(at);
                    let last_asked = self.last_asked(conn, io);
                    self.downloaders.retain(|(c, _)| *c != conn);
                    self.input(
                        Input::DownloaderGone {
                            conn: DownloaderId(conn.into()),
                            last_asked,
                        },
                        io,
                    );
                }
            }
            // The upload side.
            Msg::Dial { conn } => {
                let held = self
                    .store
                    .clone()
                    .unwrap_or_else(|| ChunkSet::new(io.layout.count()));
                self.uploads.push(conn);
                io.send(Msg::Offer {
                    conn,
                    held: Box::new(held),
                });
            }
            Msg::Request { conn, ids } => {
                if !self.uploads.contains(&conn) {
                    return;
                }
                for &id in &ids {
                    if self.store.as_ref().is_some_and(|s| s.contains_raw(id)) {
                        io.push_chunk(conn, id);
                    }
                }
                let first = match self.downloaders.iter_mut().find(|(c, _)| *c == conn) {
                    Some((_, at)) => {
                        *at = io.now;
                        false
                    }
                    None => {
                        self.downloaders.push((conn, io.now));
                        true
                    }
                };
                let d = DownloaderId(conn.into());
                if first {
                    self.input(Input::Downloader { conn: d }, io);
                }
                if self.done_at.is_some() {
                    let last_asked = self.last_asked(conn, io);
                    self.input(
                        Input::DownloaderActivity {
                            conn: d,
                            last_asked,
                            closed: false,
                        },
                        io,
                    );
                }
            }
            Msg::Complete { conn } => {
                if !self.uploads.contains(&conn) {
                    return;
                }
                let downloaded = self.downloaders.iter().any(|(c, _)| *c == conn);
                let last_asked = self.last_asked(conn, io);
                self.downloaders.retain(|(c, _)| *c != conn);
                self.uploads.retain(|&c| c != conn);
                // Nothing more to send it; it closes once it reads our
                // close.
                io.net.drop_queued(conn);
                io.close(conn, self.host);
                if downloaded {
                    self.input(
                        Input::DownloaderComplete {
                            conn: DownloaderId(conn.into()),
                            last_asked,
                        },
                        io,
                    );
                }
            }
            _ => {}
        }
    }

    fn on_chunk(&mut self, conn: u32, id: u32, io: &mut Io) {
        let Some(chunk) = io.layout.chunk_id(id) else {
            return;
        };
        let known = Some(conn) == self.owner || self.ring.iter().any(|r| r.conn == conn);
        let Some(store) = self.store.as_mut() else {
            return;
        };
        if !known {
            // Its connection is gone (it arrived after the close).
            return;
        }
        let put = if store.insert(chunk) {
            Put::Stored
        } else {
            Put::Duplicate
        };
        if put == Put::Stored {
            // The store's feed: HAVE on every upload connection.
            for &c in &self.uploads {
                io.announce(c, id);
            }
        }
        let bytes = io.layout.chunk_len(chunk) as u64;
        self.input(
            Input::Received {
                src: src(conn),
                id: chunk,
                put,
                bytes,
            },
            io,
        );
    }

    fn dial(&mut self, target: u32, io: &mut Io) {
        let conn = io.net.open(target, self.host);
        self.ring.push(Ring {
            conn,
            target,
            up: false,
        });
        io.send(Msg::Dial { conn });
    }

    /// A dial failed or a connection ended: the dialer tries again after
    /// its backoff while the neighbour is still assigned.
    fn redial_later(&mut self, target: u32, io: &mut Io) {
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
        io.at(io.now + delay, Timer::Redial(self.host, target));
    }
}
