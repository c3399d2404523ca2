//! The owner in the simulator: the real [`Tracker`] and [`Seeder`],
//! wired as `src/owner.rs` wires them.
//!
//! Each peer's session follows the owner's `serve` and `Session`: the
//! peer's REGISTER and chunk-ID list make the owner register it with the
//! tracker, choose its seeds (a wired peer only if `Seeder::share_due`
//! says so, and only once), carry out the tracker's actions (NEIGHBOUR
//! first), then queue the seeds, SEED_DONE and the "seeds are out" mark
//! on the session's writer. Requests are queued behind them in order;
//! HAVE, PROGRESS, UNREACHABLE and COMPLETE go to the tracker; a session
//! that ends is a link down. Every [`TRACK_EVERY`] the tracker ticks.
//! SEEDING is told as `Sessions` in `src/owner.rs` tells it.

use std::collections::HashMap;

use super::{Config, Io, MARK_SEED_DONE, MARK_SEEDS_OUT, Msg, Plan, addr, host_of};
use crate::chunks::ChunkSet;
use crate::conn::ConnId;
use crate::manifest::Layout;
use crate::owner::Seeder;
use crate::tracker::{Action, Tracker};

/// How often the owner's tracker thread ticks.
pub const TRACK_EVERY: u64 = 100_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SeedState {
    Waiting,
    Seeding,
    Seeded,
}

#[derive(Debug)]
struct Live {
    state: SeedState,
    batches: u32,
    registered: bool,
}

/// The owner: sessions, tracker, seeder, and what it sent.
pub struct Owner {
    layout: Layout,
    tracker: Tracker,
    seeder: Seeder,
    live: HashMap<u32, Live>,
    /// Sessions whose seeds are not all out.
    seeding: usize,
    /// The peers' `--sources`.
    sources: u8,
    /// What the owner's bytes went to.
    pub plan: Plan,
}

impl Owner {
    pub fn new(config: &Config, layout: &Layout) -> Owner {
        Owner {
            layout: layout.clone(),
            tracker: Tracker::new(layout.count(), config.peers as usize + 1),
            seeder: Seeder::new(layout.count(), config.owner_peers),
            live: HashMap::new(),
            seeding: 0,
            sources: config.sources,
            plan: Plan::default(),
        }
    }

    /// A peer connected: its session is open and sends MANIFEST.
    pub fn accept(&mut self, conn: u32, io: &mut Io) {
        self.live.insert(
            conn,
            Live {
                state: SeedState::Waiting,
                batches: 0,
                registered: false,
            },
        );
        io.send(Msg::Manifest { conn });
    }

    pub fn on_msg(&mut self, msg: Msg, io: &mut Io) {
        let now = io.instant();
        match msg {
            Msg::Register { conn, held } => self.start(conn, *held, io),
            Msg::Request { conn, ids } if self.live.contains_key(&conn) => {
                for id in ids {
                    self.plan.asked += self.len(id);
                    io.push_chunk(conn, id);
                }
            }
            Msg::Report { conn, ids, rate } => {
                let ids: Vec<_> = ids
                    .iter()
                    .filter_map(|&i| self.layout.chunk_id(i))
                    .collect();
                self.tracker.have(ConnId::from_raw(conn.into()), &ids);
                self.tracker.progress(ConnId::from_raw(conn.into()), rate);
            }
            Msg::Unreachable { conn, addr: host } => {
                let actions = self
                    .tracker
                    .unreachable(ConnId::from_raw(conn.into()), &addr(host));
                self.act(actions, io);
            }
            Msg::Complete { conn } => {
                let actions = self.tracker.complete(ConnId::from_raw(conn.into()));
                self.act(actions, io);
            }
            Msg::Closed { conn, .. } => {
                io.close(conn, 0);
                self.ended(conn, io);
                if self.live.remove(&conn).is_some_and(|l| l.registered) {
                    let actions = self.tracker.link_down(ConnId::from_raw(conn.into()), now);
                    self.act(actions, io);
                }
            }
            _ => {}
        }
    }

    /// The registry, as `swarm status` shows it.
    pub fn status(&self) -> Vec<crate::wire::PeerStatus> {
        self.tracker.status()
    }

    /// The tracker's clock.
    pub fn tick(&mut self, io: &mut Io) {
        let actions = self.tracker.tick(io.instant());
        self.act(actions, io);
    }

    fn len(&self, id: u32) -> u64 {
        self.layout
            .chunk_id(id)
            .map_or(0, |c| self.layout.chunk_len(c) as u64)
    }

    /// `Session::start`: register, choose seeds, act, push them.
    fn start(&mut self, conn: u32, held: ChunkSet, io: &mut Io) {
        let Some(live) = self.live.get_mut(&conn) else {
            return;
        };
        let peer = io.net.conns[conn as usize].to;
        let joined = self.tracker.register(
            ConnId::from_raw(conn.into()),
            &addr(peer),
            true,
            self.sources,
            "",
            held.clone(),
        );
        let (known, actions) = match joined {
            Ok((joined, actions)) => (joined.known, actions),
            Err(_) => {
                io.close(conn, 0);
                self.live.remove(&conn);
                return;
            }
        };
        live.registered = true;
        let seeds = if known || !self.seeder.share_due() {
            ChunkSet::new(self.layout.count())
        } else {
            self.seeder.choose(&self.layout, &held)
        };
        self.tracker.seeded(ConnId::from_raw(conn.into()), &seeds);
        self.act(actions, io);
        for id in seeds.iter(&self.layout) {
            self.plan.seeded += self.len(id.get());
        }
        self.push_seeds(conn, seeds, io);
    }

    /// `Shared::act`.
    fn act(&mut self, actions: Vec<Action>, io: &mut Io) {
        for action in actions {
            match action {
                Action::Log(line) => log::debug!("owner: {line}"),
                Action::Tell { conn, addrs } => {
                    let conn = conn.get() as u32;
                    if self.live.contains_key(&conn) {
                        let addrs: Box<[u32]> = addrs.iter().filter_map(|a| host_of(a)).collect();
                        io.send(Msg::Neighbour { conn, addrs });
                    }
                }
                Action::Release(conn) => {
                    let conn = conn.get() as u32;
                    if self.live.contains_key(&conn) {
                        io.send(Msg::Release { conn });
                    }
                }
                Action::Reseed { conn, chunks } => {
                    let conn = conn.get() as u32;
                    if self.live.contains_key(&conn) {
                        for id in chunks.iter(&self.layout) {
                            self.plan.reseeded += self.len(id.get());
                        }
                        self.push_seeds(conn, chunks, io);
                    }
                }
            }
        }
    }

    /// `Shared::push_seeds`.
    fn push_seeds(&mut self, conn: u32, seeds: ChunkSet, io: &mut Io) {
        if seeds.is_empty() {
            if let Some(busy) = self.seeded_nothing(conn) {
                io.push_mark(conn, MARK_SEED_DONE);
                io.send(Msg::Seeding { conn, busy });
            } else {
                io.push_mark(conn, MARK_SEED_DONE);
            }
            return;
        }
        self.start_seeding(conn, io);
        for id in seeds.iter(&self.layout) {
            io.push_chunk(conn, id.get());
        }
        io.push_mark(conn, MARK_SEED_DONE);
        io.push_mark(conn, MARK_SEEDS_OUT);
    }

    fn start_seeding(&mut self, conn: u32, io: &mut Io) {
        let Some(live) = self.live.get_mut(&conn) else {
            return;
        };
        live.batches += 1;
        if live.state == SeedState::Seeding {
            return;
        }
        live.state = SeedState::Seeding;
        self.seeding += 1;
        if self.seeding == 1 {
            self.tell_seeded(true, io);
        }
    }

    fn seeded_nothing(&mut self, conn: u32) -> Option<bool> {
        let busy = self.seeding > 0;
        let live = self.live.get_mut(&conn)?;
        if live.state == SeedState::Seeding {
            return None;
        }
        live.state = SeedState::Seeded;
        Some(busy)
    }

    fn ended(&mut self, conn: u32, io: &mut Io) {
        if let Some(live) = self.live.get_mut(&conn) {
            live.batches = live.batches.min(1);
        }
        self.seeds_out(conn, io);
    }

    /// A batch of seeds has left the owner's writer on `conn`.
    pub fn seeds_out(&mut self, conn: u32, io: &mut Io) {
        let Some(live) = self.live.get_mut(&conn) else {
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
            self.tell_seeded(false, io);
        } else {
            io.send(Msg::Seeding { conn, busy: true });
        }
    }

    fn tell_seeded(&self, busy: bool, io: &mut Io) {
        let mut conns: Vec<u32> = self
            .live
            .iter()
            .filter(|(_, l)| l.state == SeedState::Seeded)
            .map(|(&c, _)| c)
            .collect();
        conns.sort_unstable();
        for conn in conns {
            io.send(Msg::Seeding { conn, busy });
        }
    }
}
