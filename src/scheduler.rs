//! Which chunk is held, wanted, requested from whom and since when.
//!
//! [`Scheduler`] is a peer's one picture of its chunks and of the sources
//! it can get them from (its download neighbour, the owner). It does no
//! I/O and takes the time as an argument; the peer's coordinator thread
//! owns it and is its only user, so every change is serialized there and
//! policy (who is asked for what) is a question of which source
//! [`Scheduler::reserve`] is called for, not of plumbing.
//!
//! Invariants:
//!
//! - Every chunk is in exactly one of three states: **held** (verified and
//!   stored), **claimed** (requested from one source, which has until its
//!   deadline to deliver it) or **wanted** (free for any source).
//! - A source's *outstanding* list holds every request sent to it and not
//!   yet answered, oldest first. A claim that passes its deadline returns
//!   the chunk to wanted ([`Scheduler::expire`]) but stays outstanding at
//!   its source: the reply may still come, and is accepted then. So a
//!   chunk may be outstanding at several sources, but claimed by at most
//!   one, and never asked of the same source twice.
//! - Outstanding requests, expired or not, count against a source's
//!   window: a source that does not answer is asked for nothing more.
//! - `offers[i]` is how many live sources offer chunk `i`.
//! - A ring source's `ranks[k]` is how many chunks it offers that are not
//!   held and are offered by `k` live sources: what lets a rarest-first
//!   scan stop as soon as nothing later in its queue can be rarer. Its
//!   `unique` queue holds, in arrival order, every chunk of its arrival
//!   queue that no other ring source offers and is not held, and maybe
//!   some that are (they are skipped and dropped as met): the rarest
//!   chunks, found without scanning the whole queue.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use crate::chunks::ChunkSet;
use crate::manifest::{ChunkId, Layout};

/// A source of chunks: one connection to a download neighbour or the
/// owner, named by its connection's number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(pub u64);

/// What kind of source it is; policies treat the owner apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A download neighbour: offers what it lists.
    Ring,
    /// The owner: offers every chunk, and pushes its seeds unasked.
    Owner,
}

/// Where [`Scheduler::reserve`] starts looking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Lowest ID first.
    Lowest,
    /// In the order the source came to offer them (its list in ID order,
    /// then its HAVEs as they arrived), then lowest ID first: the ring's
    /// order. First in, first out keeps every chunk moving around the
    /// ring: asked lowest first, the chunks of the highest shares waited
    /// at every hop behind lower ones and made the tail.
    Arrival,
    /// Highest ID first: the owner's, so the two meet in the middle.
    Highest,
    /// Offered by the fewest live sources first, in arrival order among
    /// equals: for a peer with several sources. What only this source
    /// holds is fetched from it while it is there (asked of another it
    /// would wait until that one has it), what several hold is left for
    /// whichever has room; and as a claim is never shared, two sources
    /// asked in turn take different chunks. With one source it is
    /// [`Order::Arrival`].
    Rarest,
}

/// How a chunk that arrived fits what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Asked of this source (or pushed by it), and new.
    Fresh,
    /// Asked of this source, but already held: a late reply.
    Late,
    /// Never asked of this source: a protocol violation.
    Unasked,
}

#[derive(Debug)]
struct Source {
    kind: SourceKind,
    /// What it offers; `None` means every chunk.
    offered: Option<ChunkSet>,
    /// Whether it may send chunks unasked (the owner while seeding).
    pushing: bool,
    /// Requests sent and not answered, oldest first, with when sent.
    outstanding: VecDeque<(ChunkId, Instant)>,
    /// What it offers, in the order it came to offer it; entries already
    /// held are dropped from the front as they are met.
    arrivals: VecDeque<ChunkId>,
    /// About how many entries of `arrivals` are held by now: chunks taken
    /// out of order (rarest first, or from another source) stay behind the
    /// front, and are swept out once they are half the queue.
    stale: usize,
    /// The same chunks as `outstanding`, for word-wise exclusion.
    asked: ChunkSet,
    pacer: Pacer,
    /// Chunks that failed their SHA-256 check.
    bad: u32,
    /// By offer count, how many chunks it offers that are not held (see
    /// the module docs); empty for the owner.
    ranks: Vec<u32>,
    /// The chunks of `arrivals` only it offers among ring sources (see
    /// the module docs).
    unique: VecDeque<ChunkId>,
    last_expiry: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct Claim {
    source: SourceId,
    deadline: Instant,
}

/// The state of every chunk and every source; see the module docs.
#[derive(Debug)]
pub struct Scheduler {
    layout: Layout,
    held: ChunkSet,
    /// The chunks in `claims`, for word-wise exclusion.
    claimed: ChunkSet,
    claims: HashMap<ChunkId, Claim, BuildHasherDefault<IdHasher>>,
    sources: BTreeMap<SourceId, Source>,
    offers: Vec<u16>,
    /// How many live sources offer every chunk (owners).
    owners: usize,
    /// How long a source has to answer a request before its claim lapses.
    timeout: Duration,
    /// Whether a held chunk was ever dropped ([`Scheduler::drop_held`]):
    /// until then every chunk a ring source offers and this peer lacks
    /// is in its arrival queue, and the by-ID scan after the queue (a
    /// pass over every word of five sets, on every refill of a source
    /// with room) can find nothing.
    dropped: bool,
}

impl Scheduler {
    /// A scheduler for `layout` that already holds `held`; a request
    /// lapses after `timeout`.
    pub fn new(layout: Layout, held: ChunkSet, timeout: Duration) -> Scheduler {
        Scheduler {
            claimed: ChunkSet::new(layout.count()),
            offers: vec![0; layout.count() as usize],
            layout,
            held,
            owners: 0,
            claims: HashMap::default(),
            sources: BTreeMap::new(),
            timeout,
            dropped: false,
        }
    }

    /// Adds a source that keeps at most `max_window` requests in flight.
    /// The owner offers every chunk and starts out pushing its seeds.
    pub fn add_source(&mut self, id: SourceId, kind: SourceKind, max_window: usize) {
        self.remove_source(id);
        let owner = kind == SourceKind::Owner;
        if owner {
            self.offers
                .iter_mut()
                .for_each(|n| *n = n.saturating_add(1));
        }
        self.sources.insert(
            id,
            Source {
                kind,
                offered: (!owner).then(|| ChunkSet::new(self.layout.count())),
                pushing: owner,
                outstanding: VecDeque::new(),
                arrivals: VecDeque::new(),
                stale: 0,
                asked: ChunkSet::new(self.layout.count()),
                pacer: Pacer::new(max_window),
                bad: 0,
                ranks: Vec::new(),
                unique: VecDeque::new(),
                last_expiry: None,
            },
        );
        if owner {
            self.recount();
        }
    }

    /// Removes a source (its connection ended): its claims go back to
    /// wanted and its offers are forgotten. Returns how many claims it
    /// held.
    pub fn remove_source(&mut self, id: SourceId) -> usize {
        let Some(source) = self.sources.remove(&id) else {
            return 0;
        };
        match &source.offered {
            Some(set) => {
                for chunk in set.iter(&self.layout) {
                    self.offers[chunk.index()] -= 1;
                }
            }
            None => self.offers.iter_mut().for_each(|n| *n -= 1),
        }
        self.recount();
        let mut released = 0;
        for &(chunk, _) in &source.outstanding {
            if self.claims.get(&chunk).is_some_and(|c| c.source == id) {
                self.unclaim(chunk);
                released += 1;
            }
        }
        released
    }

    /// Replaces what a ring source offers with its full list.
    pub fn offer(&mut self, id: SourceId, set: ChunkSet) {
        let Some(source) = self.sources.get_mut(&id) else {
            return;
        };
        let Some(old) = source.offered.as_mut() else {
            return;
        };
        for chunk in old.iter(&self.layout) {
            self.offers[chunk.index()] -= 1;
        }
        source.arrivals.clear();
        source.stale = 0;
        for chunk in set.iter(&self.layout) {
            self.offers[chunk.index()] += 1;
            if !self.held.contains(chunk) {
                source.arrivals.push_back(chunk);
            }
        }
        *old = set;
        self.recount();
    }

    /// Adds chunks a ring source announced it gained. A chunk it was
    /// asked for earlier, whose claim lapsed, is no longer counted as
    /// outstanding there: it had dropped the chunk (an uploader does not
    /// answer for a chunk it no longer holds) and may be asked again.
    pub fn offer_more(&mut self, id: SourceId, chunks: &[ChunkId]) {
        let Some(source) = self.sources.get_mut(&id) else {
            return;
        };
        let Some(set) = source.offered.as_mut() else {
            return;
        };
        let floor = 1 + self.owners;
        let mut gained = Vec::new();
        for &chunk in chunks {
            if set.insert(chunk) {
                self.offers[chunk.index()] += 1;
                if !self.held.contains(chunk) {
                    source.arrivals.push_back(chunk);
                    if usize::from(self.offers[chunk.index()]) == floor {
                        source.unique.push_back(chunk);
                    }
                    gained.push(chunk);
                }
            }
            // (The claim is looked up only for a chunk asked of it.)
            if source.asked.contains(chunk)
                && self.claims.get(&chunk).is_none_or(|c| c.source != id)
            {
                source.asked.remove(chunk);
                source.outstanding.retain(|&(c, _)| c != chunk);
            }
        }
        // Each chunk gained is offered once more: it moves up a rank at
        // the sources that offered it, and enters this one's.
        for chunk in gained {
            let k = usize::from(self.offers[chunk.index()]);
            for (&sid, source) in self.sources.iter_mut() {
                if source.offered.as_ref().is_some_and(|s| s.contains(chunk)) {
                    if sid != id {
                        rank_add(&mut source.ranks, k - 1, -1);
                    }
                    rank_add(&mut source.ranks, k, 1);
                }
            }
        }
    }

    /// The owner has sent all its seeds: from now on it sends only what
    /// it is asked for.
    pub fn stop_pushing(&mut self, id: SourceId) {
        if let Some(source) = self.sources.get_mut(&id) {
            source.pushing = false;
        }
    }

    /// Claims up to `max` wanted chunks that source `id` offers and has
    /// not been asked for, in `order`, and records them as requested from
    /// it at `now`. The caller sends the requests.
    pub fn reserve(
        &mut self,
        id: SourceId,
        max: usize,
        order: Order,
        now: Instant,
    ) -> Vec<ChunkId> {
        self.reserve_except(id, max, order, now, None)
    }

    /// Claims for source `id` up to `max` wanted chunks that no source for
    /// which `counts` holds offers, each in the longest run of chunks not
    /// held: the highest such chunk with `spread` 0, else the one `spread`
    /// places below it (modulo how many there are). For the owner in the
    /// end game: shares are runs of IDs and travel the ring one hop at a
    /// time, so the longest run still missing is the share that started
    /// farthest away, and its top is the chunk the ring would bring last.
    /// Peers with several sources pass each a spread of its own, so that
    /// between them they ask the owner for different chunks of that run
    /// and pass them on to each other, instead of all asking for its top.
    pub fn reserve_tail(
        &mut self,
        id: SourceId,
        max: usize,
        now: Instant,
        spread: u64,
        counts: impl Fn(SourceId) -> bool,
    ) -> Vec<ChunkId> {
        if max == 0 || !self.sources.contains_key(&id) {
            return Vec::new();
        }
        let mut offered = ChunkSet::new(self.layout.count());
        for (_, source) in self.sources.iter().filter(|(s, _)| counts(**s)) {
            if let Some(set) = &source.offered {
                offered.union_with(set);
            }
        }
        let mut chunks = Vec::new();
        while chunks.len() < max {
            let source = &self.sources[&id];
            let exclude = [&self.held, &self.claimed, &source.asked, &offered];
            // Word-wise first: the chunk-by-chunk scan below runs only
            // when it will claim something.
            if ChunkSet::pick(&self.layout, None, &exclude, 1, true).is_empty() {
                break;
            }
            let wanted = |c: ChunkId| !exclude.iter().any(|set| set.contains(c));
            // (length, first chunk, wanted chunks) of the best run so far,
            // and of the run being read.
            let mut best: Option<(u32, u32, u32)> = None;
            let mut run: (u32, u32, u32) = (0, 0, 0);
            // `None` ends the last run.
            for c in self.layout.ids().map(Some).chain([None]) {
                if let Some(c) = c
                    && !self.held.contains(c)
                {
                    if run.0 == 0 {
                        run.1 = c.get();
                    }
                    run.0 += 1;
                    run.2 += u32::from(wanted(c));
                    continue;
                }
                if run.2 > 0 && best.is_none_or(|(longest, _, _)| run.0 > longest) {
                    best = Some(run);
                }
                run = (0, 0, 0);
            }
            let Some((len, first, n)) = best else { break };
            let skip = (spread % u64::from(n)) as usize;
            let Some(chunk) = (first..first + len)
                .rev()
                .filter_map(|raw| self.layout.chunk_id(raw))
                .filter(|&c| wanted(c))
                .nth(skip)
            else {
                break;
            };
            self.claim(id, chunk, now);
            chunks.push(chunk);
        }
        chunks
    }

    /// Records `chunk` as asked of source `id` at `now` and claimed by it.
    fn claim(&mut self, id: SourceId, chunk: ChunkId, now: Instant) {
        let deadline = now + self.timeout;
        if let Some(source) = self.sources.get_mut(&id) {
            source.outstanding.push_back((chunk, now));
            source.asked.insert(chunk);
        }
        self.claimed.insert(chunk);
        self.claims.insert(
            chunk,
            Claim {
                source: id,
                deadline,
            },
        );
    }

    fn reserve_except(
        &mut self,
        id: SourceId,
        max: usize,
        order: Order,
        now: Instant,
        except: Option<&ChunkSet>,
    ) -> Vec<ChunkId> {
        // The rarest a chunk of this source can be: offered by it and by
        // every owner.
        let floor = 1 + self.owners;
        let Some(source) = self.sources.get_mut(&id) else {
            return Vec::new();
        };
        if max == 0 {
            return Vec::new();
        }
        let mut exclude = vec![&self.held, &self.claimed, &source.asked];
        exclude.extend(except);
        let mut chunks = Vec::new();
        if matches!(order, Order::Arrival | Order::Rarest) {
            if source.stale > 32 && source.stale * 2 > source.arrivals.len() {
                source.arrivals.retain(|&c| !self.held.contains(c));
                source.stale = 0;
            }
            while source
                .arrivals
                .front()
                .is_some_and(|&c| self.held.contains(c))
            {
                source.arrivals.pop_front();
                source.stale = source.stale.saturating_sub(1);
            }
        }
        match order {
            Order::Arrival => chunks.extend(
                source
                    .arrivals
                    .iter()
                    .copied()
                    .filter(|&c| !exclude.iter().any(|set| set.contains(c)))
                    .take(max),
            ),
            Order::Rarest => {
                // Buckets by offer count, each in arrival order and cut at
                // `max`: no sort. The scan stops once the buckets up to
                // the lowest count some chunk not yet seen may have hold
                // `max` chunks: nothing later in the queue can come
                // before them. (`unseen` is the source's ranks, less the
                // chunks the scan has passed; the queue holds each chunk
                // once.)
                let mut unseen = source.ranks.clone();
                let mut buckets: Vec<Vec<ChunkId>> = vec![Vec::new()];
                // The rarest first, from the unique queue, dropping what
                // is held or no longer unique.
                let offers = &self.offers;
                let valid =
                    |c: ChunkId| !self.held.contains(c) && usize::from(offers[c.index()]) == floor;
                while source.unique.front().is_some_and(|&c| !valid(c)) {
                    source.unique.pop_front();
                }
                let mut skipped = 0;
                for &c in &source.unique {
                    if !valid(c) {
                        skipped += 1;
                    } else if !exclude.iter().any(|set| set.contains(c)) {
                        buckets[0].push(c);
                        if buckets[0].len() == max {
                            break;
                        }
                    }
                }
                if skipped > 32 && skipped * 2 > source.unique.len() {
                    source.unique.retain(|&c| valid(c));
                }
                // Every unique chunk is seen: then the rest of the queue
                // by rank.
                if buckets[0].len() < max
                    && let Some(n) = unseen.get_mut(floor)
                {
                    *n = 0;
                }
                for &c in &source.arrivals {
                    if buckets[0].len() == max {
                        break;
                    }
                    let k = usize::from(self.offers[c.index()]);
                    if k == floor || self.held.contains(c) {
                        continue;
                    }
                    if let Some(n) = unseen.get_mut(k) {
                        *n = n.saturating_sub(1);
                    }
                    if !exclude.iter().any(|set| set.contains(c)) {
                        let rank = k.saturating_sub(floor);
                        if buckets.len() <= rank {
                            buckets.resize_with(rank + 1, Vec::new);
                        }
                        if buckets[rank].len() < max {
                            buckets[rank].push(c);
                        }
                    }
                    let Some(low) = unseen.iter().position(|&n| n > 0) else {
                        break;
                    };
                    let low = low.saturating_sub(floor);
                    if buckets.iter().take(low + 1).map(Vec::len).sum::<usize>() >= max {
                        break;
                    }
                }
                chunks.extend(buckets.into_iter().flatten().take(max));
            }
            _ => {}
        }
        // Whatever the order, anything else offered (a chunk dropped and
        // wanted again is offered but no longer queued) comes by ID.
        let queue_is_all = matches!(order, Order::Arrival | Order::Rarest)
            && source.offered.is_some()
            && !self.dropped;
        if chunks.len() < max && !queue_is_all {
            let mut picked = ChunkSet::new(self.layout.count());
            chunks.iter().for_each(|&c| {
                picked.insert(c);
            });
            exclude.push(&picked);
            chunks.extend(ChunkSet::pick(
                &self.layout,
                source.offered.as_ref(),
                &exclude,
                max - chunks.len(),
                order == Order::Highest,
            ));
        }
        for &chunk in &chunks {
            self.claim(id, chunk, now);
        }
        chunks
    }

    /// Takes over up to `max` chunks claimed by sources for which
    /// `from` holds at least `older_than` ago, oldest claim first, for
    /// source `id`: each is claimed
    /// by `id` from `now` and recorded as asked of it. It stays
    /// outstanding at its old source, whose late reply is accepted. For a
    /// source that stalls: its claims would otherwise block the chunks
    /// until their deadline.
    pub fn steal(
        &mut self,
        id: SourceId,
        max: usize,
        now: Instant,
        older_than: Duration,
        from: impl Fn(SourceId) -> bool,
    ) -> Vec<ChunkId> {
        let Some(source) = self.sources.get(&id) else {
            return Vec::new();
        };
        // A claim's deadline is its time plus the timeout.
        let Some(latest) = (now + self.timeout).checked_sub(older_than) else {
            return Vec::new();
        };
        let mut victims: Vec<(Instant, ChunkId)> = self
            .claims
            .iter()
            .filter(|(chunk, claim)| {
                claim.source != id
                    && claim.deadline <= latest
                    && from(claim.source)
                    && !source.asked.contains(**chunk)
                    && source
                        .offered
                        .as_ref()
                        .is_none_or(|set| set.contains(**chunk))
            })
            .map(|(&chunk, claim)| (claim.deadline, chunk))
            .collect();
        victims.sort();
        victims.truncate(max);
        let deadline = now + self.timeout;
        let source = self.sources.get_mut(&id).expect("checked above");
        let mut chunks = Vec::with_capacity(victims.len());
        for (_, chunk) in victims {
            source.outstanding.push_back((chunk, now));
            source.asked.insert(chunk);
            self.claims.insert(
                chunk,
                Claim {
                    source: id,
                    deadline,
                },
            );
            chunks.push(chunk);
        }
        chunks
    }

    /// A verified chunk arrived from source `id` and is stored. It is
    /// held whatever the answer: even an unasked chunk was verified.
    pub fn on_chunk(&mut self, id: SourceId, chunk: ChunkId, now: Instant) -> Arrival {
        let Some(source) = self.sources.get_mut(&id) else {
            // The source was removed while the chunk was on its way.
            return self.hold(chunk);
        };
        // The owner may push at any time: its seeds, and later the chunks
        // that died with a peer.
        if !take_outstanding(source, chunk, now)
            && !source.pushing
            && source.kind != SourceKind::Owner
        {
            self.hold(chunk);
            return Arrival::Unasked;
        }
        self.hold(chunk)
    }

    /// A copy of a chunk the store already had arrived from source `id`:
    /// the request is answered, but the chunk becomes held only with the
    /// [`Scheduler::on_chunk`] of the copy that was stored (its report may
    /// still be on its way), and a claim on it stays until then.
    pub fn on_duplicate(&mut self, id: SourceId, chunk: ChunkId, now: Instant) -> Arrival {
        let Some(source) = self.sources.get_mut(&id) else {
            return Arrival::Late;
        };
        if !take_outstanding(source, chunk, now)
            && !source.pushing
            && source.kind != SourceKind::Owner
        {
            return Arrival::Unasked;
        }
        Arrival::Late
    }

    /// A chunk from source `id` failed its SHA-256 check: it is wanted
    /// again. Returns how many bad chunks the source has sent.
    pub fn on_bad_chunk(&mut self, id: SourceId, chunk: ChunkId, now: Instant) -> u32 {
        let Some(source) = self.sources.get_mut(&id) else {
            return 0;
        };
        take_outstanding(source, chunk, now);
        source.bad += 1;
        let bad = source.bad;
        if self.claims.get(&chunk).is_some_and(|c| c.source == id) {
            self.unclaim(chunk);
        }
        bad
    }

    /// Lets every claim past its deadline lapse: the chunk is wanted
    /// again, for another source to be asked, while the request stays
    /// outstanding at its source. Returns the lapsed chunks and sources.
    pub fn expire(&mut self, now: Instant) -> Vec<(ChunkId, SourceId)> {
        let mut lapsed: Vec<(ChunkId, SourceId)> = self
            .claims
            .iter()
            .filter(|(_, claim)| claim.deadline <= now)
            .map(|(&chunk, claim)| (chunk, claim.source))
            .collect();
        lapsed.sort();
        for &(chunk, source) in &lapsed {
            self.unclaim(chunk);
            if let Some(s) = self.sources.get_mut(&source) {
                s.last_expiry = Some(now);
            }
        }
        lapsed
    }

    /// Makes chunks that were held wanted again (they failed the
    /// whole-file check and were dropped from disk).
    pub fn drop_held(&mut self, chunks: &[ChunkId]) {
        self.dropped |= !chunks.is_empty();
        for &chunk in chunks {
            self.held.remove(chunk);
        }
        // Rare (a whole-file mismatch): a chunk wanted again may be
        // unique again.
        self.recount();
    }

    /// Counts every ring source's ranks and unique chunks afresh: after a
    /// change to many offer counts at once (a source came or went, or
    /// listed all it holds).
    fn recount(&mut self) {
        self.owners = self
            .sources
            .values()
            .filter(|s| s.offered.is_none())
            .count();
        let floor = 1 + self.owners;
        for source in self.sources.values_mut() {
            source.ranks.clear();
            source.unique.clear();
            let Some(set) = &source.offered else {
                continue;
            };
            for chunk in set.iter(&self.layout) {
                if !self.held.contains(chunk) {
                    rank_add(
                        &mut source.ranks,
                        usize::from(self.offers[chunk.index()]),
                        1,
                    );
                }
            }
            let unique = source.arrivals.iter().filter(|&&c| {
                !self.held.contains(c) && usize::from(self.offers[c.index()]) == floor
            });
            source.unique.extend(unique);
        }
    }

    fn hold(&mut self, chunk: ChunkId) -> Arrival {
        if self.claimed.contains(chunk) {
            self.unclaim(chunk);
        }
        if !self.held.insert(chunk) {
            return Arrival::Late;
        }
        let k = usize::from(self.offers[chunk.index()]);
        for source in self.sources.values_mut() {
            if source
                .offered
                .as_ref()
                .is_some_and(|set| set.contains(chunk))
            {
                source.stale += 1;
                rank_add(&mut source.ranks, k, -1);
            }
        }
        Arrival::Fresh
    }

    fn unclaim(&mut self, chunk: ChunkId) {
        self.claims.remove(&chunk);
        self.claimed.remove(chunk);
    }

    /// The file's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The chunks held.
    pub fn held(&self) -> &ChunkSet {
        &self.held
    }

    /// How many chunks are not held.
    pub fn missing(&self) -> u32 {
        self.layout.count() - self.held.len()
    }

    /// Whether every chunk is held.
    pub fn is_complete(&self) -> bool {
        self.held.is_full()
    }

    /// Whether chunk `id` is claimed by some source now.
    pub fn is_claimed(&self, chunk: ChunkId) -> bool {
        self.claimed.contains(chunk)
    }

    /// How many sources offer chunk `id`.
    pub fn offer_count(&self, chunk: ChunkId) -> u16 {
        self.offers[chunk.index()]
    }

    /// How many more requests source `id` may be sent now: its window,
    /// sized to the link it has shown, less what is outstanding there.
    pub fn room(&self, id: SourceId) -> usize {
        self.sources
            .get(&id)
            .map_or(0, |s| s.pacer.window().saturating_sub(s.outstanding.len()))
    }

    /// When the oldest request to source `id` not answered yet was sent.
    pub fn oldest_outstanding(&self, id: SourceId) -> Option<Instant> {
        let source = self.sources.get(&id)?;
        source.outstanding.front().map(|&(_, sent)| sent)
    }

    /// Requests sent to source `id` and not answered.
    pub fn outstanding(&self, id: SourceId) -> usize {
        self.sources.get(&id).map_or(0, |s| s.outstanding.len())
    }

    /// The time source `id` takes per chunk while it has requests to
    /// answer, once at least three gaps between chunks were seen: its
    /// delivery rate, whatever its round trip.
    pub fn chunk_time(&self, id: SourceId) -> Option<Duration> {
        let s = self.sources.get(&id)?;
        (s.pacer.gaps >= 3).then_some(s.pacer.gap?)
    }

    /// When a claim of source `id` last lapsed.
    pub fn last_expiry(&self, id: SourceId) -> Option<Instant> {
        self.sources.get(&id).and_then(|s| s.last_expiry)
    }

    /// The live sources of `kind`.
    pub fn sources(&self, kind: SourceKind) -> impl Iterator<Item = SourceId> + '_ {
        self.sources
            .iter()
            .filter(move |(_, s)| s.kind == kind)
            .map(|(&id, _)| id)
    }

    /// Whether source `id` offers some chunk not held yet.
    pub fn offers_wanted(&self, id: SourceId) -> bool {
        self.sources.get(&id).is_some_and(|source| {
            !ChunkSet::pick(
                &self.layout,
                source.offered.as_ref(),
                &[&self.held],
                1,
                false,
            )
            .is_empty()
        })
    }

    /// Whether source `id` is still pushing seeds.
    pub fn is_pushing(&self, id: SourceId) -> bool {
        self.sources.get(&id).is_some_and(|s| s.pushing)
    }
}

/// Removes `chunk` from the source's outstanding requests and feeds the
/// pacer; returns whether it was outstanding.
fn take_outstanding(source: &mut Source, chunk: ChunkId, now: Instant) -> bool {
    if !source.asked.remove(chunk) {
        return false;
    }
    if let Some(at) = source.outstanding.iter().position(|&(c, _)| c == chunk)
        && let Some((_, sent)) = source.outstanding.remove(at)
    {
        let busy = !source.outstanding.is_empty();
        source
            .pacer
            .arrived(now.saturating_duration_since(sent), now, busy);
    }
    true
}

/// Hashes a chunk ID for the claims map with one multiply, not SipHash:
/// the keys are IDs this peer chose to ask for, not input an attacker
/// picks, and the map is read on every chunk and HAVE. (Nothing depends
/// on its order: what is read out of it is sorted.)
#[derive(Clone, Copy, Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        // The high bits are the well-mixed ones; the table indexes by
        // the low bits.
        self.0 ^ (self.0 >> 32)
    }
}

/// Adds `delta` to `ranks[k]`, growing `ranks` as needed.
fn rank_add(ranks: &mut Vec<u32>, k: usize, delta: i32) {
    if ranks.len() <= k {
        ranks.resize(k + 1, 0);
    }
    ranks[k] = ranks[k].saturating_add_signed(delta);
}

/// Sizes a source's request window from what its link shows.
///
/// A chunk asked for on an idle link arrives after a round trip plus its
/// own transmission; on a busy link, chunks arrive one transmission time
/// apart. Keeping `round trip / transmission + 1` requests in flight keeps
/// the link busy with at most about one chunk waiting at the sender,
/// because in a ring every chunk queued at a sender delays the chunks
/// behind it, hop after hop.
#[derive(Debug)]
struct Pacer {
    /// The fastest request-to-chunk time seen: round trip plus one
    /// transmission, with nothing queued ahead.
    min_latency: Option<Duration>,
    /// Smoothed gap between chunks while the link was busy: one
    /// transmission time.
    gap: Option<Duration>,
    last_arrival: Option<Instant>,
    /// Whether requests were still outstanding after the last arrival,
    /// which makes the next gap a transmission time, not idle time.
    busy: bool,
    /// How many gaps `gap` has seen.
    gaps: u32,
    max: usize,
}

impl Pacer {
    /// The fewest requests in flight: one arriving, one on the wire, and
    /// one to cover the requester's own turnaround (store, tell the
    /// coordinator, send the next REQUEST, and the uploader's reading it).
    /// With two, measured on twenty peers at 25 Mbit/s sharing two busy
    /// cores, a request took about 90 ms to be answered against 34 ms on
    /// the wire per chunk, and ring links carried 22 chunks a second of
    /// the 29 they could.
    const MIN: usize = 3;

    fn new(max: usize) -> Pacer {
        Pacer {
            min_latency: None,
            gap: None,
            last_arrival: None,
            busy: false,
            gaps: 0,
            max,
        }
    }

    fn arrived(&mut self, latency: Duration, now: Instant, still_busy: bool) {
        self.min_latency = Some(self.min_latency.map_or(latency, |m| m.min(latency)));
        if let (true, Some(last)) = (self.busy, self.last_arrival) {
            let gap = now.saturating_duration_since(last);
            self.gap = Some(self.gap.map_or(gap, |g| (g * 7 + gap) / 8));
            self.gaps += 1;
        }
        self.last_arrival = Some(now);
        self.busy = still_busy;
    }

    /// How many requests may be in flight.
    fn window(&self) -> usize {
        match (self.min_latency, self.gap) {
            (Some(latency), Some(gap)) if !gap.is_zero() => {
                let cover = latency.as_secs_f64() / gap.as_secs_f64();
                (cover.ceil() as usize + 1).clamp(Self::MIN.min(self.max), self.max)
            }
            // Nothing measured yet: start modestly.
            _ => 4.min(self.max),
        }
    }
}

#[cfg(test)]
mod tests;
