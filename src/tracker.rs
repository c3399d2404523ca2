//! The owner's registry of peers and the ring it wires.
//!
//! Every peer registers over its owner link (REGISTER, then its chunk-ID
//! list) and reports what it gains (HAVE) and its receive rate (PROGRESS).
//! The [`Tracker`] keeps that registry and, for peers started without a
//! `--download-neighbor`, the wiring itself: a ring, a list in data-flow
//! order in which each member downloads from the one before it (the first
//! from the last) and, with `--sources K`, from the K members before it:
//! for K = 2 the ring plus a chord to the member two back. A newcomer goes
//! in after the first member; a member that dies or leaves is taken out,
//! and the members after it are told their new download neighbours.
//! Hand-wired peers keep their neighbours and are only listed.
//!
//! A ring is N hops around: at a thousand peers a chunk seeded at one
//! point takes a thousand hops to reach everyone. So from [`RINGS_FROM`]
//! members on, the tracker also keeps three other rings over the same
//! members, each in a random order of its own (a shuffle when the ring
//! reaches that size; then each newcomer goes in after a member drawn at
//! random), and a member downloads from the member before it in the ring
//! and in the first K - 1 other rings. The union of a few random rings
//! has a diameter of about log N (ten hops at a thousand), every member
//! serves about K downloaders, and each ring is repaired as the ring is:
//! a member taken out is closed over in every ring. A peer that leaves K
//! to the owner (no `--sources`) gets one source in a small ring, the
//! card's ring, and [`AUTO_SOURCES`] in a large one. A ring that was
//! large stays large as members leave: the last peers still downloading
//! keep several sources (dropped back to the one ring, one was left to
//! download from a slow peer alone).
//!
//! A member whose link drops is *away*; it keeps its place for
//! [`GRACE`], so a reconnect costs nothing. Past that, or at once when
//! the member after it reports it unreachable while its link is down, it
//! is *gone*: the ring closes over the gap, and the chunks that no live
//! member holds or is being seeded are pushed to the member that
//! downloaded from it, the one place they re-enter the ring.
//!
//! The tracker does no I/O: each call returns the [`Action`]s the owner
//! carries out (messages to sessions), so every state change is made
//! under one lock, in one order, and is testable without sockets.
//!
//! # Seed shares
//!
//! The owner's seed shares (`Seeder` in `src/owner.rs`; the wire
//! specification leaves them to the owner). With `N = --peers` and `C = chunks`,
//! let `base = C / N` and `extra = C % N` (integer division). The owner
//! numbers the shares it computes, `k = 0, 1, 2, ...`, in the order it
//! handles CHUNK_LISTs: every session not refused gets one (a reconnecting,
//! unregistered or hand-wired peer, and one that lacks nothing, included),
//! except that a wired registration gets one only for a new address and
//! only if `w < N`, where `w` counts the wired registrations of new
//! addresses before it (so the first N: later joiners get everything from
//! the swarm, and the owner's link carries the file about once); otherwise
//! it is seeded nothing (SEED_DONE at once) and `k` stays. Share `k` is `base + 1` chunks if `k % N < extra`, else `base`:
//! the chunks not in the session's CHUNK_LIST that have been handed out the
//! fewest times so far, the lowest ID first among equals (fewer if it lacks
//! fewer); each chosen chunk's count goes up by one. So the first N shares
//! of empty peers between them hold every chunk exactly once, and share N
//! starts a new round from the least handed-out chunks. Seeds go out in ID
//! order.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::chunks::ChunkSet;
use crate::conn::ConnId;
use crate::manifest::ChunkId;
use crate::wire::{PeerState, PeerStatus};

/// How the owner's refusal of a peer past `--max-peers` begins; a peer
/// that reads it stops, as retrying cannot help.
pub const FULL: &str = "the swarm is full";

/// How the owner's refusal of a peer whose address other peers could not
/// be told begins; as final as [`FULL`].
pub const BAD_ADDRESS: &str = "the address to reach this peer at";

/// How long a member whose link dropped keeps its place in the ring.
pub const GRACE: Duration = Duration::from_secs(3);

/// Gone and left members kept for `swarm status` at most, beyond the
/// live ones.
const KEEP_GONE: usize = 1000;

/// What the owner must do after a tracker call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send NEIGHBOUR: session `conn` downloads from `addrs`, nearest
    /// first (none: no one).
    Tell { conn: ConnId, addrs: Vec<String> },
    /// Push `chunks` as seeds to session `conn`: no live member holds them.
    Reseed { conn: ConnId, chunks: ChunkSet },
    /// Send COMPLETE to session `conn`: every live peer holds the file,
    /// so this one may leave without waiting out its linger.
    Release(ConnId),
    /// Log a line about the swarm.
    Log(String),
}

/// How a registration went.
#[derive(Debug, PartialEq, Eq)]
pub struct Joined {
    /// Whether the address was registered before (a reconnect or a
    /// restart): such a member is not seeded again.
    pub known: bool,
}

/// One registered peer.
#[derive(Debug)]
struct Member {
    addr: String,
    wired: bool,
    /// How many download neighbours it asked for (`--sources`).
    sources: u8,
    /// A hand-wired member's own download neighbours.
    hand_neighbour: String,
    /// The download neighbours it was last told, nearest first (wired
    /// members; `None` before the first).
    assigned: Option<Vec<String>>,
    /// Its live session, if any.
    link: Option<ConnId>,
    held: ChunkSet,
    /// Seeds its session was given: they count as held while it lives.
    promised: ChunkSet,
    rate: u64,
    complete: bool,
    /// When its link dropped, while it is away.
    away_since: Option<Instant>,
    /// Gone (dead) or left (complete) for good.
    ended: bool,
    /// The member after it when it went, to rejoin at its old place.
    old_successor: Option<String>,
    /// Its neighbours in each of the other rings of a large ring.
    links: [Link; EXTRA_RINGS],
}

/// A member's place in one of the other rings: the members before and
/// after it, by index ([`NONE`] while it is in none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Link {
    prev: usize,
    next: usize,
}

impl Link {
    const NONE: Link = Link {
        prev: NONE,
        next: NONE,
    };
}

/// No member.
const NONE: usize = usize::MAX;

impl Member {
    fn state(&self) -> PeerState {
        match (self.ended, self.complete, self.away_since.is_some()) {
            (true, true, _) => PeerState::Left,
            (true, false, _) => PeerState::Gone,
            (false, _, true) => PeerState::Away,
            (false, true, false) => PeerState::Complete,
            (false, false, false) => PeerState::Downloading,
        }
    }

    fn live(&self) -> bool {
        !self.ended
    }
}

/// The registry and the ring; see the module docs.
#[derive(Debug)]
pub struct Tracker {
    count: u32,
    max_peers: usize,
    /// Members in registration order.
    members: Vec<Member>,
    by_addr: HashMap<String, usize>,
    by_conn: HashMap<ConnId, usize>,
    /// Wired, live members in data-flow order: each downloads from the
    /// one before it.
    ring: Vec<usize>,
    /// Since when some chunk has been held by no member of the ring.
    unheld_since: Option<Instant>,
    /// Whether the ring is large enough for the other rings (see
    /// [`RINGS_FROM`]); each member's place in them is in its `links`.
    large: bool,
    /// The state of [`Tracker::draw`].
    rng: u64,
}

/// How long chunks may be missing from the whole ring before the owner
/// seeds them (see `Tracker::seed_unheld`).
pub const QUIET: Duration = Duration::from_secs(2);

/// Ring size from which newcomers are placed at spread positions.
const SPREAD_FROM: usize = 16;

/// Ring size from which members download from their predecessors in
/// several rings: a chunk that has to cross a ring hop by hop takes N hops
/// to reach everyone, while the union of a few rings, each in a random
/// order, has a diameter of about log N. Measured on the netbed (docs/
/// scale.md): at 5 peers the rings and the ring take the same time, at
/// 10 and 20 the rings are faster (1.25 against 1.35, and 1.24 against
/// 1.50 × S/B) and one slow peer costs far less (1.49 against 4.83).
pub const RINGS_FROM: usize = 8;

/// In a large ring this small, a member downloads from the members
/// before it in the ring, as many as it gets: the other rings, a few
/// members each, would often put one member before it twice and leave it
/// fewer sources than there are others. Every member is re-wired on each
/// change at this size.
const FEW: usize = 5;

/// Rings besides the ring itself: enough for the most sources a member
/// may ask for.
const EXTRA_RINGS: usize = crate::wire::MAX_SOURCES as usize - 1;

/// Download neighbours the owner gives a member that leaves the number to
/// it (REGISTER `sources` 0, no `--sources`), once the ring is large.
/// Three rings of 1000 members in random orders put every member within
/// about 10 hops of every other; each member serves about three.
pub const AUTO_SOURCES: u8 = 3;

/// Members at most that share a batch of chunks missing from the ring.
const SPREAD: usize = 8;

impl Tracker {
    /// A tracker for a file of `count` chunks and at most `max_peers`
    /// live members.
    pub fn new(count: u32, max_peers: usize) -> Tracker {
        Tracker {
            count,
            max_peers,
            members: Vec::new(),
            by_addr: HashMap::new(),
            by_conn: HashMap::new(),
            ring: Vec::new(),
            unheld_since: None,
            large: false,
            rng: 0x5EED,
        }
    }

    /// Live members (not gone or left).
    pub fn live(&self) -> usize {
        self.members.iter().filter(|m| m.live()).count()
    }

    /// Whether any live member is still downloading.
    pub fn active(&self) -> bool {
        self.members.iter().any(|m| m.live() && !m.complete)
    }

    /// Session `conn` registers the peer reachable at `addr`, holding
    /// `held`, which downloads from `sources` neighbours at once. Wired
    /// members get their place in the ring. Fails with the reason to
    /// refuse it when the swarm is full.
    pub fn register(
        &mut self,
        conn: ConnId,
        addr: &str,
        wired: bool,
        sources: u8,
        hand_neighbour: &str,
        held: ChunkSet,
    ) -> Result<(Joined, Vec<Action>), String> {
        let mut actions = Vec::new();
        let known = self.by_addr.get(addr).copied();
        if let Some(i) = known {
            // A reconnect, a restart, or the same address registering
            // again: the new session takes over.
            let m = &mut self.members[i];
            if let Some(old) = m.link.replace(conn) {
                self.by_conn.remove(&old);
            }
            let was_ended = m.ended;
            if was_ended && self.live() >= self.max_peers {
                self.members[i].link = None;
                return Err(self.full());
            }
            let m = &mut self.members[i];
            m.away_since = None;
            m.ended = false;
            m.complete = held.is_full();
            m.held = held;
            m.promised = ChunkSet::new(self.count);
            m.wired = wired;
            m.sources = sources;
            m.hand_neighbour = hand_neighbour.to_string();
            self.by_conn.insert(conn, i);
            let what = if was_ended { "rejoined" } else { "reconnected" };
            actions.push(Action::Log(format!(
                "{addr} {what} ({} of {} chunks)",
                self.members[i].held.len(),
                self.count
            )));
            if wired {
                if was_ended || !self.ring.contains(&i) {
                    let before = self.members[i]
                        .old_successor
                        .take()
                        .filter(|_| !self.members[i].held.is_empty())
                        .and_then(|s| self.by_addr.get(&s).copied())
                        .and_then(|s| self.ring.iter().position(|&r| r == s));
                    let at = before.unwrap_or_else(|| self.place());
                    self.insert(i, at, &mut actions);
                } else if let Some(at) = self.ring.iter().position(|&r| r == i) {
                    // Same place; the new session needs telling, complete
                    // or not. (Should it ask for another number of sources
                    // than before, only its own neighbours change.)
                    let addrs = self.sources_of(at);
                    self.members[i].assigned = Some(addrs.clone());
                    actions.push(Action::Tell { conn, addrs });
                }
                // A peer back without what it held (another --dir, a lost
                // disk) may have taken chunks no one else has.
                self.reseed_lost(i, &mut actions);
            } else if let Some(at) = self.ring.iter().position(|&r| r == i) {
                self.remove_at(at, &mut actions);
                // Hand-wired now: its ring neighbours are no longer its
                // (status shows its own; UNREACHABLE is not its to send).
                self.members[i].assigned = None;
            }
            return Ok((Joined { known: true }, actions));
        }
        if self.live() >= self.max_peers {
            return Err(self.full());
        }
        let i = self.members.len();
        self.members.push(Member {
            addr: addr.to_string(),
            wired,
            sources,
            hand_neighbour: hand_neighbour.to_string(),
            assigned: None,
            link: Some(conn),
            complete: held.is_full(),
            held,
            promised: ChunkSet::new(self.count),
            rate: 0,
            away_since: None,
            ended: false,
            old_successor: None,
            links: [Link::NONE; EXTRA_RINGS],
        });
        self.by_addr.insert(addr.to_string(), i);
        self.by_conn.insert(conn, i);
        let how = if wired && sources > 1 {
            format!("wired by the owner, {sources} sources")
        } else if wired {
            "wired by the owner".to_string()
        } else {
            format!("downloads from {hand_neighbour}")
        };
        actions.push(Action::Log(format!(
            "{addr} joined ({how}; {} of {} chunks; {} peers)",
            self.members[i].held.len(),
            self.count,
            self.live()
        )));
        if wired {
            let at = self.place();
            self.insert(i, at, &mut actions);
        }
        self.forget_old();
        Ok((Joined { known: false }, actions))
    }

    /// Where a newcomer goes in the ring. While the ring is small, right
    /// after the first member: the member there is re-wired to the
    /// newcomer, so each member is re-wired once as the ring grows, and
    /// peer `i` downloads from peer `i + 1` as in the card's ring. In a
    /// larger ring, at a position spread by Fibonacci hashing of the join
    /// count: a thousand peers joining after the same member would each
    /// open their first ring connection to it and fill its upload slots.
    fn place(&self) -> usize {
        let n = self.ring.len();
        if n < SPREAD_FROM {
            return n.min(1);
        }
        let hash = (self.members.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        1 + (hash as usize) % n
    }

    fn full(&self) -> String {
        format!(
            "{FULL}: this owner takes at most {} peers (--max-peers)",
            self.max_peers
        )
    }

    /// Session `conn` was given `chunks` as seeds.
    pub fn seeded(&mut self, conn: ConnId, chunks: &ChunkSet) {
        if let Some(&i) = self.by_conn.get(&conn) {
            self.members[i].promised.union_with(chunks);
        }
    }

    /// Session `conn`'s peer gained `ids`.
    pub fn have(&mut self, conn: ConnId, ids: &[ChunkId]) {
        if let Some(&i) = self.by_conn.get(&conn) {
            let m = &mut self.members[i];
            for &id in ids {
                m.held.insert(id);
            }
        }
    }

    /// Session `conn`'s peer receives `rate` bytes per second.
    pub fn progress(&mut self, conn: ConnId, rate: u64) {
        if let Some(&i) = self.by_conn.get(&conn) {
            self.members[i].rate = rate;
        }
    }

    /// Session `conn`'s peer holds the whole verified file. Once every
    /// live peer does, all are released.
    pub fn complete(&mut self, conn: ConnId) -> Vec<Action> {
        let Some(&i) = self.by_conn.get(&conn) else {
            return Vec::new();
        };
        let m = &mut self.members[i];
        m.complete = true;
        m.rate = 0;
        let done = self
            .members
            .iter()
            .filter(|m| m.live() && m.complete)
            .count();
        let mut actions = vec![Action::Log(format!(
            "{} is complete ({done} of {} peers complete)",
            self.members[i].addr,
            self.live()
        ))];
        if !self.active() {
            // No one needs anything from anyone: no peer need wait out
            // --linger for a downloader that left, wired or hand-wired
            // (a hand-wired ring of a tiny file took its 30 s).
            actions.extend(
                self.members
                    .iter()
                    .filter(|m| m.live())
                    .filter_map(|m| m.link.map(Action::Release)),
            );
        }
        actions
    }

    /// Session `conn` ended. A complete member has left; any other is
    /// away until it reconnects or [`GRACE`] passes.
    pub fn link_down(&mut self, conn: ConnId, now: Instant) -> Vec<Action> {
        let Some(i) = self.by_conn.remove(&conn) else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        self.members[i].link = None;
        if self.members[i].complete {
            actions.push(Action::Log(format!("{} left", self.members[i].addr)));
            // A complete peer leaves once the peer after it is complete or
            // has stopped asking: nothing needs re-seeding on its account
            // (and the registry may not have heard of the last chunks its
            // neighbours gained). A real loss is caught by `tick`.
            self.end(i, false, &mut actions);
        } else {
            self.members[i].away_since = Some(now);
            actions.push(Action::Log(format!(
                "{} lost its link to the owner; it keeps its place for {} s",
                self.members[i].addr,
                GRACE.as_secs()
            )));
        }
        actions
    }

    /// Session `conn`'s peer cannot reach its download neighbour at
    /// `addr`. Believed only if the registry agrees: that member's own
    /// link is down too.
    pub fn unreachable(&mut self, conn: ConnId, addr: &str) -> Vec<Action> {
        let Some(&reporter) = self.by_conn.get(&conn) else {
            return Vec::new();
        };
        let Some(&i) = self.by_addr.get(addr) else {
            return Vec::new();
        };
        // Only a member told to download from it has reason to know.
        if !self.members[reporter]
            .assigned
            .as_ref()
            .is_some_and(|a| a.iter().any(|x| x == addr))
        {
            return Vec::new();
        }
        let m = &self.members[i];
        if m.ended || m.link.is_some() || m.complete {
            // Gone already (the reporter will hear its new neighbour),
            // or alive by its own link: nothing to repair.
            return Vec::new();
        }
        let mut actions = vec![Action::Log(format!(
            "{} cannot reach {addr}, whose link to the owner is down too: it is gone",
            self.members[reporter].addr
        ))];
        self.end(i, true, &mut actions);
        actions
    }

    /// Ends the grace of members away too long.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let late: Vec<usize> = (0..self.members.len())
            .filter(|&i| {
                let m = &self.members[i];
                m.live()
                    && m.away_since
                        .is_some_and(|at| now.saturating_duration_since(at) >= GRACE)
            })
            .collect();
        for i in late {
            actions.push(Action::Log(format!(
                "{} did not come back within {} s: it is gone",
                self.members[i].addr,
                GRACE.as_secs()
            )));
            self.end(i, true, &mut actions);
        }
        self.seed_unheld(now, &mut actions);
        actions
    }

    /// Member `i` is gone or has left: out of the ring, which closes
    /// over the gap, and its chunks no longer count.
    fn end(&mut self, i: usize, reseed: bool, actions: &mut Vec<Action>) {
        let m = &mut self.members[i];
        m.ended = true;
        m.away_since = None;
        m.rate = 0;
        m.assigned = None;
        if let Some(conn) = m.link.take() {
            self.by_conn.remove(&conn);
        }
        let Some(at) = self.ring.iter().position(|&r| r == i) else {
            return;
        };
        let next = self.ring[(at + 1) % self.ring.len()];
        self.members[i].old_successor = (next != i).then(|| self.members[next].addr.clone());
        self.remove_at(at, actions);
        if next == i || self.members[next].complete || !reseed {
            return;
        }
        // Chunks no live wired member holds or is being seeded re-enter
        // the ring where the gap was.
        self.reseed_lost(next, actions);
    }

    /// The chunks no wired member in the ring holds or is being seeded.
    fn unheld(&self) -> ChunkSet {
        let mut present = ChunkSet::new(self.count);
        for &r in &self.ring {
            let m = &self.members[r];
            present.union_with(&m.held);
            if m.link.is_some() {
                present.union_with(&m.promised);
            }
        }
        present.complement()
    }

    /// The safety net: chunks that no member of the ring has held or been
    /// promised for [`QUIET`] (shares never handed out because fewer than
    /// `--peers` peers came, or a loss nothing else caught) are seeded to
    /// a few members spread around the ring. Reports are at most a second
    /// old, so a chunk missing that long is really missing.
    fn seed_unheld(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let lost = if self.ring.is_empty() {
            ChunkSet::new(self.count)
        } else {
            self.unheld()
        };
        if lost.is_empty() {
            self.unheld_since = None;
            return;
        }
        let since = *self.unheld_since.get_or_insert(now);
        if now.saturating_duration_since(since) < QUIET {
            return;
        }
        self.unheld_since = None;
        // Up to SPREAD members, evenly spaced, each a slice: every chunk
        // then crosses at most a fraction of the ring.
        let linked: Vec<usize> = self
            .ring
            .iter()
            .copied()
            .filter(|&r| self.members[r].link.is_some() && !self.members[r].complete)
            .collect();
        if linked.is_empty() {
            return;
        }
        let parts = linked.len().min(SPREAD);
        let ids: Vec<u32> = (0..self.count).filter(|&c| lost.contains_raw(c)).collect();
        let parts = parts.min(ids.len());
        for p in 0..parts {
            let slice = &ids[p * ids.len() / parts..(p + 1) * ids.len() / parts];
            let to = linked[p * linked.len() / parts];
            let mut chunks = ChunkSet::new(self.count);
            for &c in slice {
                chunks.insert_raw(c);
            }
            let Some(conn) = self.members[to].link else {
                continue;
            };
            actions.push(Action::Log(format!(
                "{} chunks are held by no peer in the ring; seeding them to {}",
                chunks.len(),
                self.members[to].addr
            )));
            self.members[to].promised.union_with(&chunks);
            actions.push(Action::Reseed { conn, chunks });
        }
    }

    /// Pushes to member `to` the chunks that no wired member in the ring
    /// holds or is being seeded: without them the ring could never
    /// finish, and every peer would fetch them from the owner.
    fn reseed_lost(&mut self, to: usize, actions: &mut Vec<Action>) {
        let Some(conn) = self.members[to].link else {
            return;
        };
        let lost = self.unheld();
        if !lost.is_empty() {
            actions.push(Action::Log(format!(
                "{} chunks are held by no live peer; seeding them to {}",
                lost.len(),
                self.members[to].addr
            )));
            self.members[to].promised.union_with(&lost);
            actions.push(Action::Reseed { conn, chunks: lost });
        }
    }

    /// Puts member `i` into the ring at position `at`: it downloads from
    /// the members before it, and the members after it from it. In a
    /// large ring it also goes into each other ring, after a member drawn
    /// at random.
    fn insert(&mut self, i: usize, at: usize, actions: &mut Vec<Action>) {
        // New to the ring, it needs telling whatever it was last told (a
        // member back from hand wiring may be assigned what it had).
        self.members[i].assigned = None;
        self.ring.insert(at, i);
        let n = self.ring.len();
        let went_large = !self.large && n >= RINGS_FROM;
        if self.large && n == 1 {
            // Alone in a ring that was large: its own neighbour in each.
            self.members[i].links = [Link { prev: i, next: i }; EXTRA_RINGS];
        } else if self.large {
            for j in 0..EXTRA_RINGS {
                let pick = (self.draw() % n as u64) as usize;
                let after = self.ring[pick];
                let after = if after == i {
                    self.ring[(at + 1) % n]
                } else {
                    after
                };
                self.link_after(j, i, after);
            }
        } else if went_large {
            self.go_large();
        }
        let mut changed = Vec::new();
        if went_large {
            // Everyone's neighbours change: told in ring order from here.
            let all: Vec<usize> = (0..n).map(|step| self.ring[(at + step) % n]).collect();
            self.rewire(&all, &mut changed, actions);
        } else if self.large && n <= FEW + 1 {
            // So few that every member may gain a source (or download from
            // its other rings again; see FEW).
            let all: Vec<usize> = (0..n).map(|step| self.ring[(at + step) % n]).collect();
            self.rewire(&all, &mut changed, actions);
        } else if self.large {
            let mut affected = vec![i, self.ring[(at + 1) % n]];
            affected.extend(self.after(i));
            self.rewire(&affected, &mut changed, actions);
        } else {
            self.rewire_from(at, &mut changed, actions);
        }
        let (addr, from) = (&self.members[i].addr, self.members[i].assigned.clone());
        // The members it serves: those whose download neighbours now
        // include it.
        let serves: Vec<&str> = changed
            .iter()
            .filter(|&&r| r != i)
            .filter(|&&r| {
                self.members[r]
                    .assigned
                    .as_ref()
                    .is_some_and(|a| a.iter().any(|x| x == addr))
            })
            .map(|&r| self.members[r].addr.as_str())
            .collect();
        let auto = self.members[i].sources == 0 && from.as_ref().is_some_and(|f| f.len() > 1);
        actions.push(Action::Log(match from {
            Some(from) if !from.is_empty() => format!(
                "wired {addr} into the ring: it downloads from {}{}, and {} from it ({n} in the ring)",
                from.join(", "),
                if auto {
                    format!(" ({} sources, the owner's default from {RINGS_FROM} peers on)", from.len())
                } else {
                    String::new()
                },
                serves.join(", ")
            ),
            _ => format!("{addr} is alone in the ring for now"),
        }));
    }

    /// Takes the member at ring position `at` out: the members after it
    /// now download from the ones before it.
    fn remove_at(&mut self, at: usize, actions: &mut Vec<Action>) {
        let i = self.ring.remove(at);
        let mut affected = Vec::new();
        if self.large {
            affected = self.after(i);
            for j in 0..EXTRA_RINGS {
                self.unlink(j, i);
            }
        }
        if self.ring.is_empty() {
            return;
        }
        let at = at % self.ring.len();
        let mut changed = Vec::new();
        if self.large && self.ring.len() <= FEW {
            // So few that every member may lose a source (or download from
            // the ones before it in the ring again; see FEW).
            let all = self.ring.clone();
            self.rewire(&all, &mut changed, actions);
        } else if self.large {
            affected.push(self.ring[at]);
            affected.retain(|&r| r != i);
            self.rewire(&affected, &mut changed, actions);
        } else {
            self.rewire_from(at, &mut changed, actions);
        }
        for r in changed {
            let m = &self.members[r];
            if m.complete {
                continue;
            }
            let from = m.assigned.clone().unwrap_or_default();
            actions.push(Action::Log(format!(
                "re-wired {}: it now downloads from {}",
                m.addr,
                if from.is_empty() {
                    "no one".to_string()
                } else {
                    from.join(", ")
                }
            )));
        }
    }

    /// How many download neighbours member `i` gets: what it asked for,
    /// or, if it left that to the owner (0), one in a small ring (the
    /// card's ring) and [`AUTO_SOURCES`] in a large one.
    fn wanted(&self, i: usize) -> usize {
        match (self.members[i].sources, self.large) {
            (0, false) => 1,
            (0, true) => usize::from(AUTO_SOURCES),
            (k, _) => usize::from(k),
        }
    }

    /// The download neighbours of the member at ring position `p`,
    /// nearest first, as many as it gets ([`Tracker::wanted`]). In a
    /// small ring (or a large one down to [`FEW`]), the members before it;
    /// in a large one, the member
    /// before it in the ring, then the one before it in each other ring
    /// (one that is already a neighbour is not counted twice).
    fn sources_of(&self, p: usize) -> Vec<String> {
        let n = self.ring.len();
        let i = self.ring[p];
        let k = self.wanted(i).min(n - 1);
        if !self.large || n <= FEW {
            return (1..=k)
                .map(|back| self.members[self.ring[(p + n - back) % n]].addr.clone())
                .collect();
        }
        let mut from = vec![self.ring[(p + n - 1) % n]];
        for j in 0..k.saturating_sub(1) {
            let before = self.members[i].links[j].prev;
            if before != i && !from.contains(&before) {
                from.push(before);
            }
        }
        from.into_iter()
            .map(|r| self.members[r].addr.clone())
            .collect()
    }

    /// Gives every member of the ring its download neighbours, from
    /// position `at` on around the ring, telling those whose neighbours
    /// changed: a change at `at` moves the neighbours of the members just
    /// after it, and so they are told first.
    fn rewire_from(&mut self, at: usize, changed: &mut Vec<usize>, actions: &mut Vec<Action>) {
        let n = self.ring.len();
        // Past the K members after `at`, every member's K before it are
        // the ones they were.
        let reach = self.ring.iter().map(|&r| self.wanted(r)).max().unwrap_or(1);
        for step in 0..n.min(reach + 1) {
            let p = (at + step) % n;
            let addrs = self.sources_of(p);
            if self.assign(self.ring[p], addrs, actions) {
                changed.push(self.ring[p]);
            }
        }
    }

    /// Works out the download neighbours of the members `affected` (in a
    /// large ring, those next to a change in any of the rings).
    fn rewire(&mut self, affected: &[usize], changed: &mut Vec<usize>, actions: &mut Vec<Action>) {
        for (n, &i) in affected.iter().enumerate() {
            if affected[..n].contains(&i) {
                continue;
            }
            let Some(p) = self.ring.iter().position(|&r| r == i) else {
                continue;
            };
            let addrs = self.sources_of(p);
            if self.assign(i, addrs, actions) {
                changed.push(i);
            }
        }
    }

    /// The members right after member `i` in the other rings: those that
    /// may download from it there.
    fn after(&self, i: usize) -> Vec<usize> {
        self.members[i]
            .links
            .iter()
            .map(|l| l.next)
            .filter(|&r| r != i && r != NONE)
            .collect()
    }

    /// The ring reached [`RINGS_FROM`] members: the other rings are laid,
    /// each in an order of its own (a shuffle of the ring), and every
    /// member is given its neighbours anew.
    fn go_large(&mut self) {
        self.large = true;
        for j in 0..EXTRA_RINGS {
            let mut order = self.ring.clone();
            for k in (1..order.len()).rev() {
                let pick = (self.draw() % (k as u64 + 1)) as usize;
                order.swap(k, pick);
            }
            let n = order.len();
            for (k, &r) in order.iter().enumerate() {
                self.members[r].links[j] = Link {
                    prev: order[(k + n - 1) % n],
                    next: order[(k + 1) % n],
                };
            }
        }
    }

    /// Puts member `i` after member `after` in other ring `j`.
    fn link_after(&mut self, j: usize, i: usize, after: usize) {
        let next = self.members[after].links[j].next;
        self.members[i].links[j] = Link { prev: after, next };
        self.members[after].links[j].next = i;
        self.members[next].links[j].prev = i;
    }

    /// Takes member `i` out of other ring `j`.
    fn unlink(&mut self, j: usize, i: usize) {
        let Link { prev, next } = self.members[i].links[j];
        if prev != NONE && next != NONE {
            self.members[prev].links[j].next = next;
            self.members[next].links[j].prev = prev;
        }
        self.members[i].links[j] = Link::NONE;
    }

    /// The next number of the tracker's own generator (splitmix64): the
    /// other rings' orders need only be unrelated to the join order, and
    /// a fixed seed makes the wiring the same in every run.
    fn draw(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Tells member `i` to download from `addrs` (none: no one). Returns
    /// whether they changed.
    fn assign(&mut self, i: usize, addrs: Vec<String>, actions: &mut Vec<Action>) -> bool {
        let m = &mut self.members[i];
        if m.assigned.as_ref() == Some(&addrs) {
            return false;
        }
        m.assigned = Some(addrs.clone());
        // A complete member downloads nothing: no need to tell it.
        if let Some(conn) = m.link.filter(|_| !m.complete) {
            actions.push(Action::Tell { conn, addrs });
        }
        true
    }

    /// Drops the oldest gone and left members past [`KEEP_GONE`].
    fn forget_old(&mut self) {
        let ended = self.members.iter().filter(|m| m.ended).count();
        if ended <= KEEP_GONE {
            return;
        }
        let mut drop = ended - KEEP_GONE;
        let keep: Vec<bool> = self
            .members
            .iter()
            .map(|m| {
                let gone = m.ended && drop > 0;
                drop -= usize::from(gone);
                !gone
            })
            .collect();
        let old = std::mem::take(&mut self.members);
        let mut map = vec![usize::MAX; old.len()];
        for (i, m) in old.into_iter().enumerate() {
            if keep[i] {
                map[i] = self.members.len();
                self.members.push(m);
            }
        }
        self.by_addr = self
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.addr.clone(), i))
            .collect();
        self.by_conn = self
            .members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.link.map(|c| (c, i)))
            .collect();
        for r in &mut self.ring {
            *r = map[*r];
        }
        for m in &mut self.members {
            for l in &mut m.links {
                if *l != Link::NONE {
                    *l = Link {
                        prev: map[l.prev],
                        next: map[l.next],
                    };
                }
            }
        }
    }

    /// Every member as `swarm status` shows it, in registration order.
    pub fn status(&self) -> Vec<PeerStatus> {
        self.members
            .iter()
            .map(|m| PeerStatus {
                state: m.state(),
                wired: m.wired,
                held: m.held.len(),
                rate: m.rate,
                addr: m.addr.clone(),
                neighbour: if m.wired {
                    m.assigned.clone().unwrap_or_default().join(", ")
                } else {
                    m.hand_neighbour.clone()
                },
            })
            .collect()
    }

    /// The addresses in the ring, in data-flow order.
    pub fn ring(&self) -> Vec<&str> {
        self.ring
            .iter()
            .map(|&i| self.members[i].addr.as_str())
            .collect()
    }
}

/// The registry as a table: one line per peer, then a total line.
/// `rows` caps the peer lines (the total line always counts them all).
pub fn table(peers: &[PeerStatus], count: u32, file_len: u64, sent: u64, rows: usize) -> String {
    let mut out = String::new();
    let width = peers
        .iter()
        .map(|p| p.addr.len().max(p.neighbour.len()))
        .max()
        .unwrap_or(4)
        .max(14);
    let _ = writeln!(
        out,
        "{:<width$}  {:<width$}  {:>15}  {:>7}  {:>11}  STATE",
        "PEER", "DOWNLOADS FROM", "CHUNKS", "%", "RATE"
    );
    for p in peers.iter().take(rows) {
        let from = if p.neighbour.is_empty() {
            "-"
        } else {
            &p.neighbour
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:<width$}  {:>15}  {:>6.1}%  {:>11}  {}{}",
            p.addr,
            from,
            format!("{}/{count}", p.held),
            percent(p.held, count),
            rate(p.rate),
            p.state.name(),
            if p.wired { "" } else { " (hand-wired)" }
        );
    }
    if peers.len() > rows {
        let _ = writeln!(out, "... and {} more", peers.len() - rows);
    }
    let by = |s: PeerState| peers.iter().filter(|p| p.state == s).count();
    let live: Vec<&PeerStatus> = peers
        .iter()
        .filter(|p| !matches!(p.state, PeerState::Gone | PeerState::Left))
        .collect();
    let held: u64 = live.iter().map(|p| u64::from(p.held)).sum();
    let wanted = u64::from(count) * live.len() as u64;
    let _ = write!(
        out,
        "total: {} peers: {} downloading, {} complete, {} away, {} gone, {} left; \
         {held}/{wanted} chunks ({:.1}%); {}; owner sent {:.1} MiB ({:.2} x the file)",
        peers.len(),
        by(PeerState::Downloading),
        by(PeerState::Complete),
        by(PeerState::Away),
        by(PeerState::Gone),
        by(PeerState::Left),
        if wanted == 0 {
            100.0
        } else {
            100.0 * held as f64 / wanted as f64
        },
        rate(live.iter().map(|p| p.rate).sum()),
        sent as f64 / MIB,
        if file_len == 0 {
            0.0
        } else {
            sent as f64 / file_len as f64
        },
    );
    out
}

const MIB: f64 = 1024.0 * 1024.0;

/// `held` as a percentage of `count` (100 for an empty file).
pub fn percent(held: u32, count: u32) -> f64 {
    if count == 0 {
        100.0
    } else {
        100.0 * f64::from(held) / f64::from(count)
    }
}

fn rate(bytes_per_sec: u64) -> String {
    format!("{:.1} MiB/s", bytes_per_sec as f64 / MIB)
}

#[cfg(test)]
mod tests;
