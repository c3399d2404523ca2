//! The owner in the simulator: the real [`OwnerCore`] (and through it
//! the tracker and the seeder), driven as the owner's loop
//! (`src/owner/shell.rs`) drives it.
//!
//! Each peer's session feeds the core what the real session's reader
//! reports: `Opened` on accept, the REGISTER with the chunk-ID list,
//! HAVE and PROGRESS, UNREACHABLE, COMPLETE, and `Ended` when the
//! connection closes; the session's writer reaching the "seeds are out"
//! mark is `SeedsOut`, and every [`TRACK_EVERY`] the core ticks. The
//! core's commands are carried out in order as the shell carries them
//! out: seeds go on the session's writer followed by SEED_DONE and the
//! mark, NEIGHBOUR leaves at once (the shell sends it urgent, between
//! frames), and a refusal closes the connection. SEEDING and COMPLETE
//! also leave at once here, as the simulator has always sent them,
//! where the real writer queues them behind the chunks it holds: a
//! simplification of the model, not of the decisions. What is modelled
//! here is only the I/O: requests are queued on the writer behind
//! whatever is there, as the session's reader queues them, since
//! answering one is no decision.

use super::{Config, Io, MARK_SEED_DONE, MARK_SEEDS_OUT, Msg, Plan, addr, host_of};
use crate::conn::ConnId;
use crate::manifest::Layout;
use crate::owner::{Command, Input, OwnerCore, Registration};

/// How often the owner's loop ticks the core: 100 ms, as
/// `TICK_EVERY` in `src/owner/shell.rs`.
pub const TRACK_EVERY: u64 = 100_000_000;

/// The owner: its core, and what its bytes went to.
pub struct Owner {
    layout: Layout,
    core: OwnerCore,
    /// The peers' `--sources`.
    sources: u8,
    /// The session whose share (a `Command::Share` with chunks) awaits
    /// its `Command::Seed`: that one is counted as seeded, any other as
    /// re-seeded.
    share: Option<ConnId>,
    /// What the owner's bytes went to.
    pub plan: Plan,
}

fn id(conn: u32) -> ConnId {
    ConnId::from_raw(conn.into())
}

impl Owner {
    pub fn new(config: &Config, layout: &Layout, base: std::time::Instant) -> Owner {
        Owner {
            layout: layout.clone(),
            // One version, seeded 1/N of the file per share; room for
            // every peer (the binary's default --max-peers is 5,000).
            core: OwnerCore::new(
                1,
                layout.clone(),
                config.owner_peers,
                config.peers as usize + 1,
                false,
                base,
            ),
            sources: config.sources,
            share: None,
            plan: Plan::default(),
        }
    }

    /// A peer connected: its session is open and sends MANIFEST.
    pub fn accept(&mut self, conn: u32, io: &mut Io) {
        self.input(
            Input::Opened {
                conn: id(conn),
                version: 1,
            },
            io,
        );
        io.send(Msg::Manifest { conn });
    }

    pub fn on_msg(&mut self, msg: Msg, io: &mut Io) {
        match msg {
            Msg::Register { conn, held } => {
                let peer = io.net.conns[conn as usize].to;
                let registration = Registration {
                    addr: addr(peer),
                    wired: true,
                    sources: self.sources,
                    neighbour: String::new(),
                };
                self.input(
                    Input::ChunkList {
                        conn: id(conn),
                        registration: Some(registration),
                        has: *held,
                    },
                    io,
                );
            }
            Msg::Request { conn, ids } if self.core.seed_state(id(conn)).is_some() => {
                for chunk in ids {
                    self.plan.asked += self.len(chunk);
                    io.push_chunk(conn, chunk);
                }
            }
            Msg::Report { conn, ids, rate } => {
                let ids = ids
                    .iter()
                    .filter_map(|&i| self.layout.chunk_id(i))
                    .collect();
                self.input(
                    Input::Have {
                        conn: id(conn),
                        ids,
                    },
                    io,
                );
                self.input(
                    Input::Progress {
                        conn: id(conn),
                        rate,
                    },
                    io,
                );
            }
            Msg::Unreachable { conn, addr: host } => {
                let addr = addr(host);
                self.input(
                    Input::Unreachable {
                        conn: id(conn),
                        addr,
                    },
                    io,
                );
            }
            Msg::Complete { conn } => self.input(Input::Complete(id(conn)), io),
            Msg::Closed { conn, .. } => {
                io.close(conn, 0);
                self.input(Input::Ended(id(conn)), io);
            }
            _ => {}
        }
    }

    /// The registry, as `swarm status` shows it.
    pub fn status(&self) -> Vec<crate::wire::PeerStatus> {
        self.core.status()
    }

    /// The owner loop's tick.
    pub fn tick(&mut self, io: &mut Io) {
        let commands = self.core.tick(io.instant());
        self.carry_out(commands, io);
    }

    /// The writer on `conn` has written a batch of seeds and SEED_DONE.
    pub fn seeds_out(&mut self, conn: u32, io: &mut Io) {
        self.input(Input::SeedsOut(id(conn)), io);
    }

    fn input(&mut self, input: Input, io: &mut Io) {
        let commands = self.core.handle(io.instant(), input);
        self.carry_out(commands, io);
    }

    fn len(&self, chunk: u32) -> u64 {
        self.layout
            .chunk_id(chunk)
            .map_or(0, |c| self.layout.chunk_len(c) as u64)
    }

    /// `Shell::carry`, over the modelled network.
    fn carry_out(&mut self, commands: Vec<Command>, io: &mut Io) {
        for command in commands {
            match command {
                Command::Log(line) => log::debug!("owner: {line}"),
                Command::Neighbour { conn, addrs } => {
                    let addrs: Box<[u32]> = addrs.iter().filter_map(|a| host_of(a)).collect();
                    io.send(Msg::Neighbour {
                        conn: conn.get() as u32,
                        addrs,
                    });
                }
                Command::Share { conn, count } => {
                    self.share = (count > 0).then_some(conn);
                }
                Command::Seed { conn, chunks } => {
                    let bytes: u64 = chunks
                        .iter(&self.layout)
                        .map(|c| self.layout.chunk_len(c) as u64)
                        .sum();
                    if self.share.take_if(|s| *s == conn).is_some() {
                        self.plan.seeded += bytes;
                    } else {
                        self.plan.reseeded += bytes;
                    }
                    let conn = conn.get() as u32;
                    for c in chunks.iter(&self.layout) {
                        io.push_chunk(conn, c.get());
                    }
                    io.push_mark(conn, MARK_SEED_DONE);
                    io.push_mark(conn, MARK_SEEDS_OUT);
                }
                Command::SeedDone { conn, busy } => {
                    let conn = conn.get() as u32;
                    io.push_mark(conn, MARK_SEED_DONE);
                    if let Some(busy) = busy {
                        io.send(Msg::Seeding { conn, busy });
                    }
                }
                Command::Seeding { conn, busy } => io.send(Msg::Seeding {
                    conn: conn.get() as u32,
                    busy,
                }),
                Command::Release(conn) => io.send(Msg::Release {
                    conn: conn.get() as u32,
                }),
                Command::Refuse { conn, why } => {
                    log::debug!("owner: refused {conn:?}: {why}");
                    // The session ends with its connection; the core
                    // hears it as the shell's session would tell it.
                    let raw = conn.get() as u32;
                    io.close(raw, 0);
                    let commands = self.core.handle(io.instant(), Input::Ended(conn));
                    self.carry_out(commands, io);
                }
                Command::Member(_)
                | Command::Version(_)
                | Command::Status { .. }
                | Command::Table(_) => {}
            }
        }
    }
}
