//! The owner's decisions, without I/O: which sessions are live and which
//! version each serves, which chunks each joining peer is seeded
//! ([`Seeder`]), whether the owner is seeding (SEEDING), and the swarm's
//! registry and ring ([`Tracker`]).
//!
//! [`OwnerCore`] takes `now` and one [`Input`] at a time (what a session
//! heard, that a session's seeds are out, that it ended, a tick, a new
//! version) and returns the [`Command`]s the owner's loop carries out on
//! the sessions' writers, in order. It never touches a socket, so the
//! unit tests below drive it as the tracker's tests drive the tracker.
//!
//! Its rules:
//! - a session is seeded once its chunk-ID list is in: a peer the owner
//!   wires gets a share only if it is among the first N wired peers and
//!   was not registered before; any other peer (a hand-wired one, or one
//!   that did not register) gets 1/N of what it lacks ([`Seeder::choose`]);
//! - NEIGHBOUR goes before the seeds: a peer whose seeds are in and who
//!   has no neighbour turns to the owner for the rest;
//! - the owner is "seeding" while any session's seeds are not all
//!   written; a session whose seeds are out hears SEEDING when that
//!   changes, and SEEDING true once its own are out while others' are
//!   not; a session that ends mid-seed counts as done;
//! - only sessions of the current version feed the tracker and are
//!   seeded; a session of an older version is told VERSION once, and
//!   leaves.
//!
//! Invariant: `seeding` is the number of live sessions in
//! [`SeedState::Seeding`], and such a session has `batches >= 1`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::chunks::ChunkSet;
use crate::conn::ConnId;
use crate::manifest::{ChunkId, Layout};
use crate::tracker::{Action, Tracker};
use crate::wire::{self, PeerStatus};

/// How often the owner logs the registry while peers are downloading.
pub const TABLE_EVERY: Duration = Duration::from_secs(5);

/// What a REGISTER said, until the chunk-ID list completes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Where other peers reach it: `host:port`.
    pub addr: String,
    /// Whether the owner wires it into the ring.
    pub wired: bool,
    /// How many download neighbours it asked for.
    pub sources: u8,
    /// A hand-wired peer's own neighbour(s).
    pub neighbour: String,
}

/// What happened, as the owner's loop tells the core.
#[derive(Debug)]
pub enum Input {
    /// Session `conn` began, serving version `version`.
    Opened { conn: ConnId, version: u32 },
    /// Session `conn`'s chunk-ID list is in, after its REGISTER if any.
    ChunkList {
        conn: ConnId,
        registration: Option<Registration>,
        has: ChunkSet,
    },
    /// HAVE from session `conn`.
    Have { conn: ConnId, ids: Vec<ChunkId> },
    /// PROGRESS from session `conn`.
    Progress { conn: ConnId, rate: u64 },
    /// UNREACHABLE from session `conn`.
    Unreachable { conn: ConnId, addr: String },
    /// COMPLETE from session `conn`.
    Complete(ConnId),
    /// STATUS_REQUEST from session `conn`.
    StatusRequest(ConnId),
    /// Session `conn`'s writer has written a batch of seeds and its
    /// SEED_DONE.
    SeedsOut(ConnId),
    /// Session `conn` ended.
    Ended(ConnId),
}

/// What the owner's loop must do, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Send NEIGHBOUR ahead of whatever is queued: session `conn`
    /// downloads from `addrs` (none: no one).
    Neighbour { conn: ConnId, addrs: Vec<String> },
    /// Log that session `conn` is seeded `count` chunks.
    Share { conn: ConnId, count: u32 },
    /// Queue `chunks` as seeds, then SEED_DONE, then a mark that comes
    /// back as [`Input::SeedsOut`] once written.
    Seed { conn: ConnId, chunks: ChunkSet },
    /// Queue SEED_DONE (nothing to seed), then SEEDING `busy` if given.
    SeedDone { conn: ConnId, busy: Option<bool> },
    /// Queue SEEDING `busy`.
    Seeding { conn: ConnId, busy: bool },
    /// Queue COMPLETE: every live peer holds the file.
    Release(ConnId),
    /// Send REFUSE `why` and close.
    Refuse { conn: ConnId, why: String },
    /// Session `conn` is a registered member: its slot is never taken
    /// for a newcomer.
    Member(ConnId),
    /// Send VERSION (the current file ID) as the last word.
    Version(ConnId),
    /// Answer STATUS_REQUEST with the registry.
    Status {
        conn: ConnId,
        peers: Vec<PeerStatus>,
    },
    /// Log the registry as a table.
    Table(Vec<PeerStatus>),
    /// Log a line about the swarm.
    Log(String),
}

/// Where a session's seeds stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeedState {
    /// Its chunk-ID list has not arrived.
    Waiting,
    /// Its seeds are being sent.
    Seeding,
    /// Its seeds are out; it hears whether the owner is seeding.
    Seeded,
}

#[derive(Debug)]
struct Live {
    state: SeedState,
    /// Seed batches queued and not yet out.
    batches: u32,
    /// The number of the version it serves.
    version: u32,
    /// Whether it was told VERSION.
    told: bool,
}

/// The owner's state: sessions, seeder and tracker of the current
/// version. See the module docs.
#[derive(Debug)]
pub struct OwnerCore {
    /// `--peers`: the N of the first N wired peers.
    peers: u32,
    /// `--max-peers`.
    max_peers: usize,
    version: u32,
    layout: Layout,
    tracker: Tracker,
    seeder: Seeder,
    live: HashMap<ConnId, Live>,
    /// Sessions in [`SeedState::Seeding`].
    seeding: usize,
    /// When the registry was last logged.
    last_table: Instant,
}

impl OwnerCore {
    /// The core of an owner serving version `version` of a file cut as
    /// `layout`, seeding `peers` peers, with at most `max_peers` members.
    /// `relative`: peers held the version before, so a share is 1/N of
    /// what a peer lacks ([`Seeder::share_what_is_lacking`]).
    pub fn new(
        version: u32,
        layout: Layout,
        peers: u32,
        max_peers: usize,
        relative: bool,
        now: Instant,
    ) -> OwnerCore {
        let mut seeder = Seeder::new(layout.count(), peers);
        if relative {
            seeder.share_what_is_lacking();
        }
        OwnerCore {
            peers,
            max_peers,
            version,
            tracker: Tracker::new(layout.count(), max_peers),
            layout,
            seeder,
            live: HashMap::new(),
            seeding: 0,
            last_table: now,
        }
    }

    /// The version whose sessions are seeded and tracked.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Live sessions, of any version.
    pub fn sessions(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.live.keys().copied()
    }

    /// How many sessions are live.
    pub fn session_count(&self) -> usize {
        self.live.len()
    }

    /// Where session `conn`'s seeds stand, if it is live.
    pub fn seed_state(&self, conn: ConnId) -> Option<SeedState> {
        self.live.get(&conn).map(|l| l.state)
    }

    /// Whether any session's seeds are not all out.
    pub fn is_seeding(&self) -> bool {
        self.seeding > 0
    }

    /// The registry, as the answer to STATUS_REQUEST lists it (the
    /// simulator reports it at the end of a run).
    pub fn status(&self) -> Vec<PeerStatus> {
        self.tracker.status()
    }

    /// Takes one input; returns what to do, in order.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Command> {
        let mut out = Vec::new();
        match input {
            Input::Opened { conn, version } => {
                self.live.insert(
                    conn,
                    Live {
                        state: SeedState::Waiting,
                        batches: 0,
                        version,
                        told: false,
                    },
                );
                // A new version may have become current since this
                // session took its own.
                self.tell_older(&mut out);
            }
            Input::ChunkList {
                conn,
                registration,
                has,
            } => {
                if self.current(conn) {
                    self.start(conn, registration, has, &mut out);
                }
            }
            Input::Have { conn, ids } => {
                if self.current(conn) {
                    self.tracker.have(conn, &ids);
                }
            }
            Input::Progress { conn, rate } => {
                if self.current(conn) {
                    self.tracker.progress(conn, rate);
                }
            }
            Input::Unreachable { conn, addr } => {
                if self.current(conn) {
                    let actions = self.tracker.unreachable(conn, &addr);
                    self.act(actions, &mut out);
                }
            }
            Input::Complete(conn) => {
                if self.current(conn) {
                    let actions = self.tracker.complete(conn);
                    self.act(actions, &mut out);
                }
            }
            Input::StatusRequest(conn) => out.push(Command::Status {
                conn,
                peers: self.tracker.status(),
            }),
            Input::SeedsOut(conn) => self.seeds_out(conn, &mut out),
            Input::Ended(conn) => {
                let current = self.current(conn);
                if let Some(live) = self.live.get_mut(&conn) {
                    live.batches = live.batches.min(1);
                }
                self.seeds_out(conn, &mut out);
                // It hears nothing more.
                out.retain(|c| !matches!(c, Command::Seeding { conn: to, .. } if *to == conn));
                self.live.remove(&conn);
                if current {
                    let actions = self.tracker.link_down(conn, now);
                    self.act(actions, &mut out);
                }
            }
        }
        out
    }

    /// The tracker's clock: ends the grace of peers away too long,
    /// seeds chunks no live member holds, and logs the registry every
    /// `TABLE_EVERY` (5 s) while peers are downloading.
    pub fn tick(&mut self, now: Instant) -> Vec<Command> {
        let mut out = Vec::new();
        let actions = self.tracker.tick(now);
        self.act(actions, &mut out);
        if now.saturating_duration_since(self.last_table) >= TABLE_EVERY {
            self.last_table = now;
            if self.tracker.active() {
                out.push(Command::Table(self.tracker.status()));
            }
        }
        out
    }

    /// A version numbered `number` is about to replace the current one:
    /// every session of an older one is told VERSION. The tracker and the
    /// seeder stay until [`OwnerCore::switch`].
    pub fn retire(&mut self, number: u32) -> Vec<Command> {
        let mut out = Vec::new();
        self.tell_below(number, &mut out);
        out
    }

    /// Version `number`, cut as `layout`, is current: a new registry and
    /// a seeder whose shares are 1/N of what each peer lacks (its peers
    /// held the version before). Sessions of older versions that were not
    /// told yet are told now.
    pub fn switch(&mut self, number: u32, layout: Layout, now: Instant) -> Vec<Command> {
        let live = std::mem::take(&mut self.live);
        let seeding = self.seeding;
        *self = OwnerCore::new(number, layout, self.peers, self.max_peers, true, now);
        self.live = live;
        self.seeding = seeding;
        self.retire(number)
    }

    /// Whether session `conn` is live and serves the current version.
    fn current(&self, conn: ConnId) -> bool {
        self.live
            .get(&conn)
            .is_some_and(|l| l.version == self.version)
    }

    fn tell_older(&mut self, out: &mut Vec<Command>) {
        self.tell_below(self.version, out);
    }

    fn tell_below(&mut self, number: u32, out: &mut Vec<Command>) {
        let mut told: Vec<ConnId> = self
            .live
            .iter_mut()
            .filter(|(_, l)| l.version < number && !l.told)
            .map(|(&conn, l)| {
                l.told = true;
                conn
            })
            .collect();
        told.sort();
        out.extend(told.into_iter().map(Command::Version));
    }

    /// The peer's chunk-ID list is in: register it (if it registered),
    /// choose its seeds and send them.
    fn start(
        &mut self,
        conn: ConnId,
        registration: Option<Registration>,
        has: ChunkSet,
        out: &mut Vec<Command>,
    ) {
        let mut known = false;
        let mut wired = false;
        let mut actions = Vec::new();
        if let Some(reg) = registration {
            if reg.addr.len() > wire::MAX_ADDR_LEN {
                // NEIGHBOUR could not name it whole to other peers.
                let why = format!(
                    "{} is longer than {} bytes",
                    crate::tracker::BAD_ADDRESS,
                    wire::MAX_ADDR_LEN
                );
                out.push(Command::Refuse { conn, why });
                return;
            }
            match self.tracker.register(
                conn,
                &reg.addr,
                reg.wired,
                reg.sources,
                &reg.neighbour,
                has.clone(),
            ) {
                Ok((joined, todo)) => {
                    known = joined.known;
                    wired = reg.wired;
                    actions = todo;
                    out.push(Command::Member(conn));
                }
                Err(why) => {
                    out.push(Command::Refuse { conn, why });
                    return;
                }
            }
        }
        // A peer the owner wires gets a share only once, and only if its
        // place in the join order is due one: the rest fill from the ring.
        let seeds = if wired && (known || !self.seeder.share_due()) {
            ChunkSet::new(self.layout.count())
        } else {
            self.seeder.choose(&self.layout, &has)
        };
        out.push(Command::Share {
            conn,
            count: seeds.len(),
        });
        self.tracker.seeded(conn, &seeds);
        // NEIGHBOUR goes before the seeds: a peer whose seeds are in and
        // who has no neighbour turns to the owner for the rest.
        self.act(actions, out);
        self.push_seeds(conn, seeds, out);
    }

    /// Turns the tracker's actions into commands.
    fn act(&mut self, actions: Vec<Action>, out: &mut Vec<Command>) {
        for action in actions {
            match action {
                Action::Log(line) => out.push(Command::Log(line)),
                Action::Tell { conn, addrs } => {
                    if self.live.contains_key(&conn) {
                        out.push(Command::Neighbour { conn, addrs });
                    }
                }
                Action::Release(conn) => {
                    if self.live.contains_key(&conn) {
                        out.push(Command::Release(conn));
                    }
                }
                Action::Reseed { conn, chunks } => self.push_seeds(conn, chunks, out),
            }
        }
    }

    /// Seeds `seeds` to session `conn`, then SEED_DONE, and counts the
    /// session as seeding until they are out.
    fn push_seeds(&mut self, conn: ConnId, seeds: ChunkSet, out: &mut Vec<Command>) {
        let busy = self.seeding > 0;
        let Some(live) = self.live.get_mut(&conn) else {
            return;
        };
        if seeds.is_empty() {
            // Nothing to seed: no reason to tell every other session that
            // seeding starts and stops. Unless a batch is under way, its
            // seeds are out at once.
            let busy = (live.state != SeedState::Seeding).then(|| {
                live.state = SeedState::Seeded;
                busy
            });
            out.push(Command::SeedDone { conn, busy });
            return;
        }
        live.batches += 1;
        if live.state != SeedState::Seeding {
            live.state = SeedState::Seeding;
            self.seeding += 1;
            if self.seeding == 1 {
                self.tell_seeded(true, out);
            }
        }
        out.push(Command::Seed {
            conn,
            chunks: seeds,
        });
    }

    /// A batch of session `conn`'s seeds is out. Once all are, tells it
    /// whether others are still seeding, and everyone when the last one
    /// is done.
    fn seeds_out(&mut self, conn: ConnId, out: &mut Vec<Command>) {
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
            self.tell_seeded(false, out);
        } else {
            out.push(Command::Seeding { conn, busy: true });
        }
    }

    /// SEEDING to every session whose own seeds are out.
    fn tell_seeded(&self, busy: bool, out: &mut Vec<Command>) {
        let mut seeded: Vec<ConnId> = self
            .live
            .iter()
            .filter(|(_, l)| l.state == SeedState::Seeded)
            .map(|(&conn, _)| conn)
            .collect();
        seeded.sort();
        out.extend(
            seeded
                .into_iter()
                .map(|conn| Command::Seeding { conn, busy }),
        );
    }
}

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

    // The core, driven by inputs as the owner's loop drives it.

    fn c(n: u64) -> ConnId {
        ConnId::from_raw(n)
    }

    fn reg(port: u16) -> Option<Registration> {
        Some(Registration {
            addr: format!("127.0.0.1:{port}"),
            wired: true,
            sources: 1,
            neighbour: String::new(),
        })
    }

    /// A core for 10 chunks seeding the first 2 wired peers.
    fn core(now: Instant) -> OwnerCore {
        OwnerCore::new(1, layout(10), 2, 100, false, now)
    }

    /// Opens session `n` and sends its chunk-ID list (empty).
    fn join(core: &mut OwnerCore, now: Instant, n: u64, r: Option<Registration>) -> Vec<Command> {
        let mut out = core.handle(
            now,
            Input::Opened {
                conn: c(n),
                version: 1,
            },
        );
        out.extend(core.handle(
            now,
            Input::ChunkList {
                conn: c(n),
                registration: r,
                has: ChunkSet::new(10),
            },
        ));
        out
    }

    fn seeds_of(out: &[Command], n: u64) -> Option<Vec<u32>> {
        out.iter().find_map(|cmd| match cmd {
            Command::Seed { conn, chunks } if *conn == c(n) => Some(raw(chunks)),
            _ => None,
        })
    }

    fn position(out: &[Command], want: impl Fn(&Command) -> bool) -> usize {
        out.iter().position(want).expect("command missing")
    }

    #[test]
    fn a_registered_peer_is_a_member_told_its_neighbour_before_its_seeds() {
        let now = Instant::now();
        let mut core = core(now);
        let first = join(&mut core, now, 1, reg(9001));
        assert!(first.contains(&Command::Member(c(1))));
        assert_eq!(seeds_of(&first, 1), Some(vec![0, 1, 2, 3, 4]));
        let second = join(&mut core, now, 2, reg(9002));
        // The second member downloads from the first, and the first is
        // re-wired to the second; both hear it before their seeds.
        let told = position(
            &second,
            |cmd| matches!(cmd, Command::Neighbour { conn, addrs } if *conn == c(2) && addrs == &["127.0.0.1:9001".to_string()]),
        );
        let seeded = position(
            &second,
            |cmd| matches!(cmd, Command::Seed { conn, .. } if *conn == c(2)),
        );
        let logged = position(
            &second,
            |cmd| matches!(cmd, Command::Share { conn, count: 5 } if *conn == c(2)),
        );
        assert!(logged < told && told < seeded, "{second:?}");
        assert_eq!(seeds_of(&second, 2), Some(vec![5, 6, 7, 8, 9]));
        assert!(
            second
                .iter()
                .any(|cmd| matches!(cmd, Command::Neighbour { conn, .. } if *conn == c(1)))
        );
    }

    #[test]
    fn only_the_first_n_wired_peers_are_seeded_each_chunk_once() {
        let now = Instant::now();
        let mut core = core(now);
        let mut all = Vec::new();
        for n in 1..=4 {
            let out = join(&mut core, now, n, reg(9000 + n as u16));
            if let Some(seeds) = seeds_of(&out, n) {
                all.push((n, seeds));
            } else {
                assert!(out.contains(&Command::Share {
                    conn: c(n),
                    count: 0
                }));
                assert!(
                    out.iter()
                        .any(|cmd| matches!(cmd, Command::SeedDone { conn, .. } if *conn == c(n)))
                );
            }
        }
        assert_eq!(
            all,
            vec![(1, vec![0, 1, 2, 3, 4]), (2, vec![5, 6, 7, 8, 9])]
        );
        // A peer that did not register (not wired) still gets a share.
        let out = join(&mut core, now, 5, None);
        assert_eq!(seeds_of(&out, 5), Some(vec![0, 1, 2, 3, 4]));
        assert!(!out.contains(&Command::Member(c(5))));
    }

    #[test]
    fn a_member_that_registers_again_is_not_seeded_again() {
        let now = Instant::now();
        let mut core = OwnerCore::new(1, layout(10), 5, 100, false, now);
        assert!(seeds_of(&join(&mut core, now, 1, reg(9001)), 1).is_some());
        assert!(seeds_of(&join(&mut core, now, 2, reg(9002)), 2).is_some());
        // Peer 2 holds everything, so nothing dies with peer 1's link.
        let all: Vec<ChunkId> = layout(10).ids().collect();
        core.handle(
            now,
            Input::Have {
                conn: c(2),
                ids: all,
            },
        );
        core.handle(now, Input::Ended(c(1)));
        // Peer 1 comes back within its grace: the third wired peer, due a
        // share by its place, but a member known before.
        let again = join(&mut core, now, 3, reg(9001));
        assert_eq!(seeds_of(&again, 3), None, "{again:?}");
        assert!(again.contains(&Command::Share {
            conn: c(3),
            count: 0
        }));
    }

    #[test]
    fn refusals_queue_nothing_else() {
        let now = Instant::now();
        let mut core = OwnerCore::new(1, layout(10), 2, 1, false, now);
        let long = Registration {
            addr: format!("{}:1", "h".repeat(300)),
            ..reg(1).unwrap()
        };
        let out = join(&mut core, now, 1, Some(long));
        assert!(matches!(&out[..], [Command::Refuse { conn, why }]
            if *conn == c(1) && why.starts_with(crate::tracker::BAD_ADDRESS)));
        assert!(seeds_of(&join(&mut core, now, 2, reg(9002)), 2).is_some());
        // --max-peers 1: the swarm is full.
        let out = join(&mut core, now, 3, reg(9003));
        assert!(
            matches!(&out[..], [Command::Refuse { conn, .. }] if *conn == c(3)),
            "{out:?}"
        );
    }

    #[test]
    fn seeding_is_told_when_it_starts_and_when_the_last_seeds_are_out() {
        let now = Instant::now();
        let mut core = core(now);
        // Session 1 holds everything: seeded nothing, and no one seeds.
        core.handle(
            now,
            Input::Opened {
                conn: c(1),
                version: 1,
            },
        );
        let mut full = ChunkSet::new(10);
        layout(10).ids().for_each(|id| {
            full.insert(id);
        });
        let out = core.handle(
            now,
            Input::ChunkList {
                conn: c(1),
                registration: None,
                has: full,
            },
        );
        assert!(out.contains(&Command::SeedDone {
            conn: c(1),
            busy: Some(false)
        }));
        // Session 2's seeds start: session 1 hears the owner is seeding.
        let out = join(&mut core, now, 2, None);
        let busy = position(&out, |cmd| {
            *cmd == Command::Seeding {
                conn: c(1),
                busy: true,
            }
        });
        let seed = position(&out, |cmd| matches!(cmd, Command::Seed { .. }));
        assert!(busy < seed);
        assert!(core.is_seeding());
        // Session 3's seeds start too: nobody is told again.
        let out = join(&mut core, now, 3, None);
        assert!(!out.iter().any(|cmd| matches!(cmd, Command::Seeding { .. })));
        // Session 2's are out while 3's are not: 2 hears it alone.
        let out = core.handle(now, Input::SeedsOut(c(2)));
        assert_eq!(
            out,
            vec![Command::Seeding {
                conn: c(2),
                busy: true
            }]
        );
        // The last seeds are out: everyone seeded hears it.
        let out = core.handle(now, Input::SeedsOut(c(3)));
        assert_eq!(
            out,
            vec![
                Command::Seeding {
                    conn: c(1),
                    busy: false
                },
                Command::Seeding {
                    conn: c(2),
                    busy: false
                },
                Command::Seeding {
                    conn: c(3),
                    busy: false
                },
            ]
        );
        assert!(!core.is_seeding());
        // A mark seen twice changes nothing.
        assert!(core.handle(now, Input::SeedsOut(c(3))).is_empty());
    }

    #[test]
    fn a_session_that_ends_mid_seed_stops_counting() {
        let now = Instant::now();
        let mut core = core(now);
        join(&mut core, now, 1, None);
        core.handle(now, Input::SeedsOut(c(1)));
        join(&mut core, now, 2, None);
        assert_eq!(core.seed_state(c(2)), Some(SeedState::Seeding));
        let out = core.handle(now, Input::Ended(c(2)));
        assert_eq!(
            out,
            vec![Command::Seeding {
                conn: c(1),
                busy: false
            }]
        );
        assert!(!core.is_seeding());
        assert_eq!(core.seed_state(c(2)), None);
        // Its mark arriving late is ignored.
        assert!(core.handle(now, Input::SeedsOut(c(2))).is_empty());
    }

    #[test]
    fn two_batches_are_out_only_when_both_are() {
        let now = Instant::now();
        let mut core = core(now);
        join(&mut core, now, 1, None);
        let mut out = Vec::new();
        core.push_seeds(c(1), raw_set(&[7]), &mut out);
        assert_eq!(
            out.len(),
            1,
            "no SEEDING while a batch is under way: {out:?}"
        );
        assert!(core.handle(now, Input::SeedsOut(c(1))).is_empty());
        assert!(core.is_seeding());
        assert_eq!(
            core.handle(now, Input::SeedsOut(c(1))),
            vec![Command::Seeding {
                conn: c(1),
                busy: false
            }]
        );
    }

    fn raw_set(ids: &[u32]) -> ChunkSet {
        let l = layout(10);
        let mut set = ChunkSet::new(10);
        for &i in ids {
            set.insert(l.chunk_id(i).unwrap());
        }
        set
    }

    #[test]
    fn a_new_version_tells_older_sessions_once_and_tracks_only_its_own() {
        let now = Instant::now();
        let mut core = core(now);
        join(&mut core, now, 1, reg(9001));
        join(&mut core, now, 2, reg(9002));
        assert_eq!(
            core.retire(2),
            vec![Command::Version(c(1)), Command::Version(c(2))]
        );
        // A session that began meanwhile got version 1 too.
        assert!(
            core.handle(
                now,
                Input::Opened {
                    conn: c(3),
                    version: 1
                }
            )
            .is_empty()
        );
        let out = core.switch(2, layout(10), now);
        assert_eq!(out, vec![Command::Version(c(3))]);
        // One that takes version 1 after the switch is told at once.
        let out = core.handle(
            now,
            Input::Opened {
                conn: c(4),
                version: 1,
            },
        );
        assert_eq!(out, vec![Command::Version(c(4))]);
        // Old sessions neither register nor feed the new registry.
        let out = core.handle(
            now,
            Input::ChunkList {
                conn: c(3),
                registration: reg(9003),
                has: ChunkSet::new(10),
            },
        );
        assert!(out.is_empty());
        core.handle(now, Input::Complete(c(1)));
        assert!(core.tracker.status().is_empty());
        // The new version's sessions do; peers that held the version
        // before are seeded 1/N of what they lack.
        core.handle(
            now,
            Input::Opened {
                conn: c(5),
                version: 2,
            },
        );
        let out = core.handle(
            now,
            Input::ChunkList {
                conn: c(5),
                registration: reg(9001),
                has: raw_set(&[0, 1, 2, 3, 4, 5]),
            },
        );
        assert_eq!(seeds_of(&out, 5), Some(vec![6, 7]));
        assert_eq!(core.tracker.status().len(), 1);
        // Ending an old session mid-seed still settles the count.
        assert_eq!(core.session_count(), 5);
    }

    #[test]
    fn ticks_end_the_grace_and_log_the_table_while_peers_download() {
        let t0 = Instant::now();
        let mut core = core(t0);
        join(&mut core, t0, 1, reg(9001));
        let out = core.handle(t0, Input::Ended(c(1)));
        assert!(
            out.iter()
                .any(|cmd| matches!(cmd, Command::Log(l) if l.contains("lost its link")))
        );
        let out = core.tick(t0 + Duration::from_secs(1));
        assert!(out.is_empty(), "{out:?}");
        let out = core.tick(t0 + crate::tracker::GRACE);
        assert!(
            out.iter()
                .any(|cmd| matches!(cmd, Command::Log(l) if l.contains("did not come back")))
        );
        join(&mut core, t0, 2, reg(9002));
        let out = core.tick(t0 + TABLE_EVERY);
        assert!(
            out.iter()
                .any(|cmd| matches!(cmd, Command::Table(peers) if !peers.is_empty()))
        );
        // Not again before another TABLE_EVERY.
        let out = core.tick(t0 + TABLE_EVERY + Duration::from_secs(1));
        assert!(!out.iter().any(|cmd| matches!(cmd, Command::Table(_))));
    }

    #[test]
    fn status_and_completion_answer_the_asking_session() {
        let now = Instant::now();
        let mut core = core(now);
        join(&mut core, now, 1, reg(9001));
        core.handle(
            now,
            Input::Opened {
                conn: c(2),
                version: 1,
            },
        );
        let out = core.handle(now, Input::StatusRequest(c(2)));
        assert!(
            matches!(&out[..], [Command::Status { conn, peers }] if *conn == c(2) && peers.len() == 1)
        );
        // The accessor lists what the answer does.
        assert!(matches!(&out[..], [Command::Status { peers, .. }] if *peers == core.status()));
        core.handle(
            now,
            Input::Have {
                conn: c(1),
                ids: layout(10).ids().collect(),
            },
        );
        let out = core.handle(now, Input::Complete(c(1)));
        assert!(out.contains(&Command::Release(c(1))), "{out:?}");
    }
}
