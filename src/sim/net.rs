//! The simulator's network: hosts with an uplink and a downlink rate,
//! and connections that each carry one chunk at a time, in order.
//!
//! A connection is *active* while a chunk is on its wire. Its rate is a
//! max-min fair share of its sender's uplink and its receiver's
//! downlink, which is what TCP flows sharing those two bottlenecks come
//! to (without slow start, loss or queues), found by alternating
//! water-filling:
//!
//! - each receiver splits its downlink among its active incoming
//!   connections, each asking for its sender's current *level* (what the
//!   sender gives a connection its receiver does not hold back), so a
//!   slow sender's connection takes what it can and the others the rest;
//! - each sender splits its uplink among its active outgoing connections,
//!   each asking for what its receiver allotted it, so a slow receiver
//!   takes what it can and the others the rest; the share the others get
//!   is the sender's new level.
//!
//! A connection that starts or stops re-rates its two hosts, and the
//! change spreads from host to host while it matters: a level or an
//! allotment that moves by less than [`SLACK`] of the value in use is
//! not passed on, and the spreading stops after [`ROUNDS`] rounds (the
//! hosts reached are still rated consistently). So a host with ten
//! thousand connections (the owner seeding) does not re-rate the whole
//! network on each one, and rates are max-min fair to within about
//! `SLACK` wherever the spreading converged, which on the ring's sparse
//! graph is almost always.
//!
//! Small messages (requests, HAVE, NEIGHBOUR) are not here: they cost the
//! latency only, and the engine delivers them in order. Each host keeps
//! the time its next chunk leaves in one indexed heap, so the engine
//! finds the next chunk to finish in O(log hosts).

use std::collections::VecDeque;

/// Relative change of a rate below which it is not passed on.
pub const SLACK: f64 = 1.0 / 256.0;

/// How many times a change is passed from senders to receivers and back.
pub const ROUNDS: usize = 4;

/// What a connection carries, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    /// A chunk: its ID and length in bytes.
    Chunk(u32, u32),
    /// A marker that leaves as soon as everything before it has: the
    /// engine acts on it when the writer gets there (SEED_DONE, the
    /// owner's "seeds are out").
    Mark(u8),
}

/// A connection: its sender writes chunks to its receiver.
#[derive(Debug)]
pub struct Conn {
    pub from: u32,
    pub to: u32,
    pub open: bool,
    queue: VecDeque<Item>,
    /// Whether the head of `queue` is a chunk on the wire.
    active: bool,
    /// Bytes of the head chunk left at `upd`.
    rem: f64,
    upd: u64,
    /// Bytes per nanosecond.
    rate: f64,
    /// What the receiver allotted it (round 1), and the allotment the
    /// sender last rated it with.
    allot: f64,
    allot_used: f64,
    /// Chunk IDs to announce in the HAVE waiting behind the chunk on the
    /// wire (see [`Net::announce`]).
    have: Vec<u32>,
}

impl Conn {
    /// Chunks queued (the one on the wire included).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}

#[derive(Debug)]
struct Host {
    up: f64,
    down: f64,
    /// Active outgoing and incoming connections.
    out: Vec<u32>,
    inn: Vec<u32>,
    /// What the uplink gives a connection its receiver does not hold
    /// back, and the value last passed on to receivers.
    level: f64,
    level_used: f64,
    /// Which outgoing connection finishes next, and when.
    next: Option<(u64, u32)>,
}

/// What left a sender.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub conn: u32,
    pub item: Item,
}

/// Hosts, connections and the heap of next departures.
#[derive(Debug)]
pub struct Net {
    hosts: Vec<Host>,
    pub conns: Vec<Conn>,
    heap: Heap,
    /// Bytes that left each host as chunks.
    pub sent: Vec<u64>,
    /// Senders to re-rate, and receivers to re-allot, in this round.
    dirty: Vec<u32>,
    receivers: Vec<u32>,
}

impl Net {
    /// A network of hosts with these (uplink, downlink) rates in bytes
    /// per second.
    pub fn new(rates: &[(f64, f64)]) -> Net {
        Net {
            hosts: rates
                .iter()
                .map(|&(up, down)| Host {
                    up: up / 1e9,
                    down: down / 1e9,
                    out: Vec::new(),
                    inn: Vec::new(),
                    level: up / 1e9,
                    level_used: up / 1e9,
                    next: None,
                })
                .collect(),
            conns: Vec::new(),
            heap: Heap::new(rates.len()),
            sent: vec![0; rates.len()],
            dirty: Vec::new(),
            receivers: Vec::new(),
        }
    }

    /// Opens a connection on which `from` sends to `to`.
    pub fn open(&mut self, from: u32, to: u32) -> u32 {
        self.conns.push(Conn {
            from,
            to,
            open: true,
            queue: VecDeque::new(),
            active: false,
            rem: 0.0,
            upd: 0,
            rate: 0.0,
            allot: 0.0,
            allot_used: 0.0,
            have: Vec::new(),
        });
        (self.conns.len() - 1) as u32
    }

    /// Queues `item` on `conn` at `now`; markers that reach the head at
    /// once are appended to `out`.
    pub fn push(&mut self, conn: u32, item: Item, now: u64, out: &mut Vec<Sent>) {
        let c = &mut self.conns[conn as usize];
        if !c.open {
            return;
        }
        c.queue.push_back(item);
        if c.queue.len() == 1 {
            self.start_head(conn, now, out);
        }
    }

    /// Announces chunk `id` on `conn` with HAVE, as the real writer does:
    /// between chunks. On an idle connection the HAVE leaves now; behind
    /// a chunk on the wire it waits for that chunk to leave, and chunks
    /// gained meanwhile join the same HAVE. (The writer picks HAVE or the
    /// next queued chunk at random when both are ready; this takes HAVE
    /// first.) The marker `mark` that leaves carries no IDs: take them
    /// with [`Net::take_have`].
    pub fn announce(&mut self, conn: u32, id: u32, mark: u8, now: u64, out: &mut Vec<Sent>) {
        let c = &mut self.conns[conn as usize];
        if !c.open {
            return;
        }
        let waiting = !c.have.is_empty();
        c.have.push(id);
        if waiting {
            return;
        }
        if c.active {
            c.queue.insert(1, Item::Mark(mark));
        } else {
            c.queue.push_front(Item::Mark(mark));
            self.start_head(conn, now, out);
        }
    }

    /// The chunk IDs of the HAVE that just left `conn`.
    pub fn take_have(&mut self, conn: u32) -> Vec<u32> {
        std::mem::take(&mut self.conns[conn as usize].have)
    }

    /// Closes `conn`: what it had queued is dropped and returned (the
    /// chunk on the wire included).
    pub fn close(&mut self, conn: u32, now: u64) -> Vec<Item> {
        let c = &mut self.conns[conn as usize];
        if !c.open {
            return Vec::new();
        }
        c.open = false;
        c.have.clear();
        let dropped: Vec<Item> = c.queue.drain(..).collect();
        if c.active {
            self.deactivate(conn, now);
        }
        dropped
    }

    /// Drops the chunks queued on `conn` behind the one on the wire
    /// (markers stay); returns them.
    pub fn drop_queued(&mut self, conn: u32) -> Vec<Item> {
        let c = &mut self.conns[conn as usize];
        let keep = usize::from(c.active);
        let mut dropped = Vec::new();
        let mut i = keep;
        while i < c.queue.len() {
            if matches!(c.queue[i], Item::Chunk(..)) {
                dropped.extend(c.queue.remove(i));
            } else {
                i += 1;
            }
        }
        dropped
    }

    /// When the next chunk leaves its sender, if any is on a wire.
    pub fn next_time(&self) -> Option<u64> {
        self.heap.peek().map(|(t, _)| t)
    }

    /// Finishes the chunk that leaves next (at `now`, the time
    /// [`Net::next_time`] gave): it and any markers behind it go to
    /// `out`, and the next chunk on its connection starts.
    pub fn finish_next(&mut self, now: u64, out: &mut Vec<Sent>) {
        let Some((_, host)) = self.heap.peek() else {
            return;
        };
        let Some((_, conn)) = self.hosts[host as usize].next else {
            self.heap.set(host, u64::MAX);
            return;
        };
        let c = &mut self.conns[conn as usize];
        let item = c
            .queue
            .pop_front()
            .expect("an active connection has a head");
        if let Item::Chunk(_, len) = item {
            self.sent[host as usize] += u64::from(len);
        }
        out.push(Sent { conn, item });
        c.active = false;
        c.rem = 0.0;
        // Markers right behind it leave with it (a HAVE queued between
        // chunks): the writer does not pause for them, so the
        // connection stays on the wire if a chunk follows.
        let mut marks = false;
        while let Some(&Item::Mark(m)) = c.queue.front() {
            marks = true;
            c.queue.pop_front();
            out.push(Sent {
                conn,
                item: Item::Mark(m),
            });
        }
        let more = !c.queue.is_empty();
        if more && matches!(c.queue.front(), Some(Item::Chunk(..))) {
            // The same connection goes on: no share changes.
            let Some(&Item::Chunk(_, len)) = c.queue.front() else {
                unreachable!()
            };
            c.active = true;
            c.rem = f64::from(len);
            c.upd = now;
            if marks {
                let to = c.to;
                requeue(&mut self.hosts[host as usize].out, conn);
                requeue(&mut self.hosts[to as usize].inn, conn);
            }
            self.reschedule(host);
            return;
        }
        // It stops (perhaps for a moment, behind markers).
        c.active = true;
        self.deactivate(conn, now);
        if more {
            self.start_head(conn, now, out);
        }
    }

    /// Starts the head of `conn`'s queue: markers leave at once, a chunk
    /// makes the connection active.
    fn start_head(&mut self, conn: u32, now: u64, out: &mut Vec<Sent>) {
        loop {
            let c = &mut self.conns[conn as usize];
            match c.queue.front().copied() {
                None => return,
                Some(Item::Mark(m)) => {
                    c.queue.pop_front();
                    out.push(Sent {
                        conn,
                        item: Item::Mark(m),
                    });
                }
                Some(Item::Chunk(_, len)) => {
                    c.active = true;
                    c.rem = f64::from(len);
                    c.upd = now;
                    c.rate = 0.0;
                    let (from, to) = (c.from, c.to);
                    self.hosts[from as usize].out.push(conn);
                    self.hosts[to as usize].inn.push(conn);
                    self.changed(from, to, now);
                    return;
                }
            }
        }
    }

    /// `conn` leaves the wire (done or closed).
    fn deactivate(&mut self, conn: u32, now: u64) {
        let c = &mut self.conns[conn as usize];
        c.active = false;
        let (from, to) = (c.from, c.to);
        let out = &mut self.hosts[from as usize].out;
        if let Some(i) = out.iter().position(|&x| x == conn) {
            out.swap_remove(i);
        }
        let inn = &mut self.hosts[to as usize].inn;
        if let Some(i) = inn.iter().position(|&x| x == conn) {
            inn.swap_remove(i);
        }
        self.changed(from, to, now);
    }

    /// A connection from `from` to `to` started or stopped: re-rate what
    /// that changes.
    fn changed(&mut self, from: u32, to: u32, now: u64) {
        self.dirty.clear();
        self.dirty.push(from);
        self.refresh_in(to);
        for round in 0..ROUNDS {
            let mut dirty = std::mem::take(&mut self.dirty);
            dirty.sort_unstable();
            dirty.dedup();
            let mut receivers = std::mem::take(&mut self.receivers);
            receivers.clear();
            for &s in &dirty {
                self.refresh_out(s, now);
                let h = &mut self.hosts[s as usize];
                if far(h.level, h.level_used) && round + 1 < ROUNDS {
                    h.level_used = h.level;
                    receivers.extend(h.out.iter().map(|&c| self.conns[c as usize].to));
                }
            }
            dirty.clear();
            self.dirty = dirty;
            receivers.sort_unstable();
            receivers.dedup();
            for &r in &receivers {
                self.refresh_in(r);
            }
            self.receivers = receivers;
            if self.dirty.is_empty() {
                return;
            }
        }
        // Out of rounds: the senders last touched are rated with what
        // they were allotted, and the spreading stops here.
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for &s in &dirty {
            self.refresh_out(s, now);
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// At receiver `r`: its downlink split among its incoming connections,
    /// each asking for its sender's level; senders whose allotment moved
    /// are marked to re-rate.
    fn refresh_in(&mut self, r: u32) {
        let h = &self.hosts[r as usize];
        let demand = |c: &Conn, hosts: &[Host]| hosts[c.from as usize].level;
        let level = water_level(
            h.down,
            h.inn
                .iter()
                .map(|&c| demand(&self.conns[c as usize], &self.hosts)),
        );
        for i in 0..self.hosts[r as usize].inn.len() {
            let conn = self.hosts[r as usize].inn[i];
            let d = demand(&self.conns[conn as usize], &self.hosts);
            let c = &mut self.conns[conn as usize];
            c.allot = d.min(level);
            if far(c.allot, c.allot_used) {
                self.dirty.push(c.from);
            }
        }
    }

    /// At sender `s`: its uplink split among its outgoing connections,
    /// each asking for its allotment; its new level; when its next chunk
    /// leaves.
    fn refresh_out(&mut self, s: u32, now: u64) {
        let h = &self.hosts[s as usize];
        let level = water_level(h.up, h.out.iter().map(|&c| self.conns[c as usize].allot));
        for i in 0..self.hosts[s as usize].out.len() {
            let conn = self.hosts[s as usize].out[i];
            let c = &mut self.conns[conn as usize];
            c.rem = (c.rem - c.rate * (now - c.upd) as f64).max(0.0);
            c.upd = now;
            c.allot_used = c.allot;
            c.rate = c.allot.min(level);
        }
        let h = &mut self.hosts[s as usize];
        h.level = level.min(h.up);
        self.reschedule(s);
    }

    /// Works out when sender `s`'s next chunk leaves.
    fn reschedule(&mut self, s: u32) {
        let mut best: Option<(u64, u32)> = None;
        for &conn in &self.hosts[s as usize].out {
            let c = &self.conns[conn as usize];
            let at = if c.rate > 0.0 {
                c.upd + (c.rem / c.rate).ceil() as u64
            } else {
                u64::MAX
            };
            if best.is_none_or(|(t, _)| at < t) {
                best = Some((at, conn));
            }
        }
        self.hosts[s as usize].next = best;
        self.heap.set(s, best.map_or(u64::MAX, |(t, _)| t));
    }

    /// The rate of `conn` now, in bytes per second (0 when idle).
    pub fn rate(&self, conn: u32) -> f64 {
        let c = &self.conns[conn as usize];
        if c.active { c.rate * 1e9 } else { 0.0 }
    }
}

/// Moves `conn` to the end of `list`, as taking it off the wire and
/// putting it back would.
fn requeue(list: &mut Vec<u32>, conn: u32) {
    if let Some(i) = list.iter().position(|&x| x == conn) {
        list.swap_remove(i);
        list.push(conn);
    }
}

/// Whether `new` differs from `old` by more than [`SLACK`] of it.
fn far(new: f64, old: f64) -> bool {
    (new - old).abs() > SLACK * old.max(new)
}

/// The level that splits `capacity` max-min fairly among flows asking
/// for `demands`: each gets `min(demand, level)`.
fn water_level(capacity: f64, demands: impl Iterator<Item = f64> + Clone) -> f64 {
    let n = demands.clone().count();
    if n == 0 {
        return capacity;
    }
    let equal = capacity / n as f64;
    // Most of the time no flow asks for less than an equal share.
    if demands.clone().all(|d| d >= equal) {
        return equal;
    }
    let mut sorted: Vec<f64> = demands.collect();
    sorted.sort_unstable_by(f64::total_cmp);
    let mut left = capacity;
    for (i, &d) in sorted.iter().enumerate() {
        let level = left / (n - i) as f64;
        if d >= level {
            return level;
        }
        left -= d;
    }
    // Everyone got what it asked for; the rest is unused.
    f64::INFINITY
}

/// A binary min-heap of one time per host, updated in place.
#[derive(Debug)]
struct Heap {
    /// (time, host)
    items: Vec<(u64, u32)>,
    /// Where each host is in `items`.
    pos: Vec<usize>,
}

const ABSENT: usize = usize::MAX;

impl Heap {
    fn new(hosts: usize) -> Heap {
        Heap {
            items: Vec::new(),
            pos: vec![ABSENT; hosts],
        }
    }

    fn peek(&self) -> Option<(u64, u32)> {
        self.items.first().copied()
    }

    /// Sets host `h`'s time; `u64::MAX` takes it out.
    fn set(&mut self, h: u32, t: u64) {
        let at = self.pos[h as usize];
        if t == u64::MAX {
            if at != ABSENT {
                let last = self.items.len() - 1;
                self.swap(at, last);
                self.items.pop();
                self.pos[h as usize] = ABSENT;
                if at < self.items.len() {
                    self.down(at);
                    self.up(at);
                }
            }
            return;
        }
        if at == ABSENT {
            self.items.push((t, h));
            let i = self.items.len() - 1;
            self.pos[h as usize] = i;
            self.up(i);
        } else {
            self.items[at].0 = t;
            self.down(at);
            self.up(at);
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.items.swap(a, b);
        self.pos[self.items[a].1 as usize] = a;
        self.pos[self.items[b].1 as usize] = b;
    }

    fn up(&mut self, mut i: usize) {
        while i > 0 {
            let p = (i - 1) / 2;
            if self.items[p] <= self.items[i] {
                break;
            }
            self.swap(p, i);
            i = p;
        }
    }

    fn down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < self.items.len() && self.items[l] < self.items[m] {
                m = l;
            }
            if r < self.items.len() && self.items[r] < self.items[m] {
                m = r;
            }
            if m == i {
                break;
            }
            self.swap(m, i);
            i = m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: f64 = 1e6;

    /// Runs the network until nothing is on a wire; returns when each
    /// chunk left, by connection.
    fn drain(net: &mut Net) -> Vec<(u32, u64)> {
        let mut got = Vec::new();
        let mut out = Vec::new();
        while let Some(t) = net.next_time() {
            net.finish_next(t, &mut out);
            got.extend(out.drain(..).map(|s| (s.conn, t)));
        }
        got
    }

    #[test]
    fn two_flows_from_one_sender_each_get_half() {
        // 1 MB/s up; receivers with room to spare.
        let mut net = Net::new(&[(MB, MB), (MB, MB), (MB, MB)]);
        let a = net.open(0, 1);
        let b = net.open(0, 2);
        let mut out = Vec::new();
        net.push(a, Item::Chunk(0, 1_000_000), 0, &mut out);
        net.push(b, Item::Chunk(0, 1_000_000), 0, &mut out);
        assert_eq!(net.rate(a), 0.5 * MB);
        assert_eq!(net.rate(b), 0.5 * MB);
        // Both take two seconds.
        let got = drain(&mut net);
        assert_eq!(got.len(), 2);
        for (_, t) in got {
            assert!((t as f64 / 1e9 - 2.0).abs() < 1e-6, "{t}");
        }
    }

    #[test]
    fn a_lone_flow_then_gets_the_whole_uplink() {
        let mut net = Net::new(&[(MB, MB), (MB, MB), (MB, MB)]);
        let a = net.open(0, 1);
        let b = net.open(0, 2);
        let mut out = Vec::new();
        net.push(a, Item::Chunk(0, 500_000), 0, &mut out);
        net.push(b, Item::Chunk(0, 1_000_000), 0, &mut out);
        let got = drain(&mut net);
        // a: 1 s at half rate; b: 0.5 MB then, the rest alone in 0.5 s.
        assert_eq!(got[0].0, a);
        assert!((got[0].1 as f64 / 1e9 - 1.0).abs() < 1e-6);
        assert_eq!(got[1].0, b);
        assert!((got[1].1 as f64 / 1e9 - 1.5).abs() < 1e-6);
    }

    #[test]
    fn a_slow_receiver_leaves_the_rest_of_the_uplink_to_others() {
        // Receiver 1 takes 0.1 MB/s: the other flow gets 0.9.
        let mut net = Net::new(&[(MB, MB), (MB, 0.1 * MB), (MB, MB)]);
        let a = net.open(0, 1);
        let b = net.open(0, 2);
        let mut out = Vec::new();
        net.push(a, Item::Chunk(0, 1_000_000), 0, &mut out);
        net.push(b, Item::Chunk(0, 1_000_000), 0, &mut out);
        assert!((net.rate(a) - 0.1 * MB).abs() < 1.0);
        assert!((net.rate(b) - 0.9 * MB).abs() < 1.0);
    }

    #[test]
    fn a_slow_sender_leaves_the_rest_of_the_downlink_to_others() {
        // Sender 1 has 0.1 MB/s up; sender 2 fills the rest of host 0's
        // downlink.
        let mut net = Net::new(&[(MB, MB), (0.1 * MB, MB), (MB, MB)]);
        let a = net.open(1, 0);
        let b = net.open(2, 0);
        let mut out = Vec::new();
        net.push(a, Item::Chunk(0, 1_000_000), 0, &mut out);
        net.push(b, Item::Chunk(0, 1_000_000), 0, &mut out);
        assert!((net.rate(a) - 0.1 * MB).abs() < 1.0);
        assert!((net.rate(b) - 0.9 * MB).abs() < 1.0);
    }

    #[test]
    fn a_busy_sender_leaves_the_rest_of_a_downlink_to_another() {
        // Host 0 serves four receivers; host 1 also downloads from host
        // 5, which serves no one else and takes the rest of 1's downlink.
        let mut net = Net::new(&[(MB, MB); 6]);
        let mut out = Vec::new();
        let busy: Vec<u32> = (1..=4).map(|r| net.open(0, r)).collect();
        for &c in &busy {
            net.push(c, Item::Chunk(0, 1_000_000), 0, &mut out);
        }
        let lone = net.open(5, 1);
        net.push(lone, Item::Chunk(0, 1_000_000), 0, &mut out);
        for &c in &busy {
            assert!((net.rate(c) - 0.25 * MB).abs() < 1.0, "{}", net.rate(c));
        }
        assert!(
            (net.rate(lone) - 0.75 * MB).abs() < 1.0,
            "{}",
            net.rate(lone)
        );
    }

    #[test]
    fn markers_leave_behind_the_chunks_before_them() {
        let mut net = Net::new(&[(MB, MB), (MB, MB)]);
        let a = net.open(0, 1);
        let mut out = Vec::new();
        net.push(a, Item::Chunk(0, 1_000), 0, &mut out);
        net.push(a, Item::Mark(7), 0, &mut out);
        assert!(out.is_empty());
        let t = net.next_time().unwrap();
        net.finish_next(t, &mut out);
        let items: Vec<Item> = out.iter().map(|s| s.item).collect();
        assert_eq!(items, vec![Item::Chunk(0, 1_000), Item::Mark(7)]);
        assert_eq!(net.next_time(), None);
    }
}
