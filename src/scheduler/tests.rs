//! Unit tests of `scheduler`, against events, with no I/O.

use super::*;

const RING: SourceId = SourceId(1);
const OWNER: SourceId = SourceId(2);
const OTHER: SourceId = SourceId(3);

fn layout(count: u32) -> Layout {
    Layout::new(u64::from(count) * 1024, 1024).unwrap()
}

fn ids(l: &Layout, raw: &[u32]) -> Vec<ChunkId> {
    raw.iter().map(|&i| l.chunk_id(i).unwrap()).collect()
}

fn all(l: &Layout) -> ChunkSet {
    let mut set = ChunkSet::new(l.count());
    l.ids().for_each(|id| {
        set.insert(id);
    });
    set
}

fn sched(count: u32) -> (Scheduler, Layout, Instant) {
    let l = layout(count);
    let s = Scheduler::new(l.clone(), ChunkSet::new(count), Duration::from_secs(3));
    (s, l, Instant::now())
}

/// Checks the three-state invariant by brute force.
fn check(s: &Scheduler) {
    for id in s.layout.ids() {
        let held = s.held.contains(id);
        let claimed = s.claims.contains_key(&id);
        assert!(!(held && claimed), "chunk {id} is both held and claimed");
        assert_eq!(claimed, s.claimed.contains(id), "chunk {id}");
    }
    for (sid, src) in &s.sources {
        assert_eq!(src.asked.len() as usize, src.outstanding.len(), "{sid:?}");
        let mut ranks = Vec::new();
        if let Some(set) = &src.offered {
            for c in set.iter(&s.layout).filter(|&c| !s.held.contains(c)) {
                rank_add(&mut ranks, usize::from(s.offers[c.index()]), 1);
            }
        }
        let trim = |r: &[u32]| r.iter().rposition(|&n| n > 0).map_or(0, |i| i + 1);
        assert_eq!(
            src.ranks[..trim(&src.ranks)],
            ranks[..trim(&ranks)],
            "{sid:?}"
        );
        let floor = 1 + s.sources.values().filter(|x| x.offered.is_none()).count();
        assert_eq!(s.owners + 1, floor);
        let valid = |c: &ChunkId| !s.held.contains(*c) && usize::from(s.offers[c.index()]) == floor;
        let queued: Vec<ChunkId> = src.arrivals.iter().copied().filter(valid).collect();
        let unique: Vec<ChunkId> = src.unique.iter().copied().filter(valid).collect();
        assert_eq!(unique, queued, "{sid:?}: the unique queue");
    }
}

/// What [`Order::Rarest`] picks by brute force: every chunk queued at
/// `id` and not excluded, by offer count, then in arrival order.
fn rarest_by_brute_force(s: &Scheduler, id: SourceId, max: usize) -> Vec<ChunkId> {
    let floor = 1 + s.sources.values().filter(|x| x.offered.is_none()).count();
    let source = &s.sources[&id];
    let mut queued: Vec<(usize, ChunkId)> = source
        .arrivals
        .iter()
        .copied()
        .filter(|&c| !s.held.contains(c) && !s.claimed.contains(c))
        .filter(|&c| !source.asked.contains(c))
        .map(|c| (usize::from(s.offers[c.index()]).saturating_sub(floor), c))
        .collect();
    queued.sort_by_key(|&(rank, _)| rank);
    queued.into_iter().map(|(_, c)| c).take(max).collect()
}

#[test]
fn rarest_first_stops_early_yet_picks_what_a_full_scan_would() {
    // Three ring sources and sometimes the owner, offering at random
    // and gaining chunks as the run goes; each pick is checked
    // against a full scan, and the ranks against a recount.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for round in 0..40 {
        let count = 50 + rand(300) as u32;
        let (mut s, l, mut now) = sched(count);
        let ring = [RING, OTHER, SourceId(4)];
        for &src in &ring {
            s.add_source(src, SourceKind::Ring, 64);
            let mut set = ChunkSet::new(count);
            let share = 1 + rand(4);
            for id in l.ids().filter(|_| rand(share) == 0) {
                set.insert(id);
            }
            s.offer(src, set);
        }
        if round % 2 == 0 {
            s.add_source(OWNER, SourceKind::Owner, 64);
        }
        check(&s);
        for step in 0..200 {
            now += Duration::from_millis(10);
            let src = ring[rand(3) as usize];
            match rand(5) {
                0 => {
                    let more: Vec<ChunkId> = (0..1 + rand(8))
                        .filter_map(|_| l.chunk_id(rand(u64::from(count)) as u32))
                        .collect();
                    s.offer_more(src, &more);
                }
                1 => {
                    if let Some(c) = l.chunk_id(rand(u64::from(count)) as u32) {
                        s.on_chunk(src, c, now);
                    }
                }
                2 if step % 50 == 0 => {
                    let held: Vec<ChunkId> = s.held.iter(&l).take(3).collect();
                    s.drop_held(&held);
                }
                2 if step % 7 == 0 => {
                    // The source reconnects and lists what it holds.
                    s.add_source(src, SourceKind::Ring, 64);
                    let mut set = ChunkSet::new(count);
                    for id in l.ids().filter(|_| rand(3) == 0) {
                        set.insert(id);
                    }
                    s.offer(src, set);
                }
                _ => {
                    let max = 1 + rand(16) as usize;
                    let want = rarest_by_brute_force(&s, src, max);
                    let got = s.reserve(src, max, Order::Rarest, now);
                    assert_eq!(got[..want.len()], want[..], "round {round} step {step}");
                }
            }
            check(&s);
        }
        s.remove_source(OTHER);
        check(&s);
    }
}

#[test]
fn rarest_first_takes_what_fewest_sources_offer_and_never_twice() {
    // Chunk:    0 1 2 3 4 5 6 7
    // RING:     x x x x . . x x
    // OTHER:    x . x . x x x .
    // Offered by both: 0, 2, 6; by one: 1, 3, 7 (RING), 4, 5 (OTHER).
    // The owner offers everything, so it shifts every count alike.
    let (mut s, l, now) = sched(8);
    s.add_source(RING, SourceKind::Ring, 40);
    s.add_source(OTHER, SourceKind::Ring, 40);
    s.add_source(OWNER, SourceKind::Owner, 40);
    let set = |raw: &[u32]| {
        let mut set = ChunkSet::new(8);
        ids(&l, raw).into_iter().for_each(|id| {
            set.insert(id);
        });
        set
    };
    s.offer(RING, set(&[0, 1, 2, 3, 6, 7]));
    // OTHER came to offer 6 before the rest: arrival order among equals.
    s.offer_more(OTHER, &ids(&l, &[6, 5]));
    s.offer_more(OTHER, &ids(&l, &[0, 2, 4]));
    assert_eq!(s.offer_count(l.chunk_id(0).unwrap()), 3);
    assert_eq!(s.offer_count(l.chunk_id(1).unwrap()), 2);
    // RING's rarest are those only it has, then the shared ones.
    assert_eq!(
        s.reserve(RING, 4, Order::Rarest, now),
        ids(&l, &[1, 3, 7, 0])
    );
    // OTHER gets its own rare ones, then what RING has not claimed.
    assert_eq!(
        s.reserve(OTHER, 8, Order::Rarest, now),
        ids(&l, &[5, 4, 6, 2])
    );
    assert_eq!(s.reserve(RING, 8, Order::Rarest, now), vec![]);
    check(&s);
    // A source that leaves makes what only it offered rarer for none,
    // and what it shared rare for the one left.
    let (mut s, l, now) = sched(8);
    s.add_source(RING, SourceKind::Ring, 40);
    s.add_source(OTHER, SourceKind::Ring, 40);
    s.offer(RING, set(&[0, 1, 2]));
    s.offer(OTHER, set(&[0, 1]));
    assert_eq!(s.reserve(RING, 1, Order::Rarest, now), ids(&l, &[2]));
    s.remove_source(OTHER);
    assert_eq!(s.offer_count(l.chunk_id(0).unwrap()), 1);
    assert_eq!(s.reserve(RING, 5, Order::Rarest, now), ids(&l, &[0, 1]));
    check(&s);
}

#[test]
fn the_end_game_takes_over_only_claims_older_than_asked() {
    let (mut s, l, now) = sched(4);
    s.add_source(RING, SourceKind::Ring, 40);
    s.add_source(OTHER, SourceKind::Ring, 40);
    s.offer(RING, all(&l));
    s.offer(OTHER, all(&l));
    assert_eq!(s.reserve(RING, 2, Order::Rarest, now), ids(&l, &[0, 1]));
    let later = now + Duration::from_millis(300);
    assert_eq!(s.reserve(RING, 2, Order::Rarest, later), ids(&l, &[2, 3]));
    let at = later + Duration::from_millis(300);
    // Claims at least 0.5 s old: the first two only.
    assert_eq!(
        s.steal(OTHER, 4, at, Duration::from_millis(500), |src| src == RING),
        ids(&l, &[0, 1])
    );
    // Never asked of the same source twice, and never claimed twice.
    assert!(
        s.steal(OTHER, 4, at, Duration::from_millis(500), |_| true)
            .is_empty()
    );
    assert!(
        s.steal(RING, 4, at, Duration::from_millis(500), |_| true)
            .is_empty()
    );
    assert!(s.is_claimed(l.chunk_id(0).unwrap()));
    check(&s);
}

#[test]
fn the_ring_and_the_owner_never_claim_the_same_chunk() {
    let (mut s, l, now) = sched(10);
    s.add_source(RING, SourceKind::Ring, 40);
    s.add_source(OWNER, SourceKind::Owner, 40);
    s.offer(RING, all(&l));
    assert_eq!(
        s.reserve(RING, 4, Order::Lowest, now),
        ids(&l, &[0, 1, 2, 3])
    );
    assert_eq!(s.reserve(OWNER, 2, Order::Highest, now), ids(&l, &[9, 8]));
    assert_eq!(
        s.reserve(RING, 10, Order::Lowest, now),
        ids(&l, &[4, 5, 6, 7])
    );
    assert!(s.reserve(OWNER, 2, Order::Highest, now).is_empty());
    check(&s);
}

#[test]
fn the_ring_is_asked_first_in_first_out() {
    let (mut s, l, now) = sched(10);
    s.add_source(RING, SourceKind::Ring, 40);
    // Its list comes in ID order, then its HAVEs as they arrive.
    s.offer(RING, {
        let mut set = ChunkSet::new(10);
        set.insert(l.chunk_id(5).unwrap());
        set.insert(l.chunk_id(2).unwrap());
        set
    });
    s.offer_more(RING, &ids(&l, &[9, 0]));
    s.offer_more(RING, &ids(&l, &[7]));
    assert_eq!(s.reserve(RING, 2, Order::Arrival, now), ids(&l, &[2, 5]));
    // Chunk 0 came from elsewhere meanwhile: skipped.
    s.add_source(OWNER, SourceKind::Owner, 40);
    s.on_chunk(OWNER, l.chunk_id(0).unwrap(), now);
    assert_eq!(s.reserve(RING, 5, Order::Arrival, now), ids(&l, &[9, 7]));
    // A chunk it announces that is already held is not queued.
    s.offer_more(RING, &ids(&l, &[0, 4]));
    assert_eq!(s.reserve(RING, 5, Order::Arrival, now), ids(&l, &[4]));
    check(&s);
}

#[test]
fn a_chunk_wanted_again_is_asked_for_in_id_order_after_the_queue() {
    let (mut s, l, now) = sched(6);
    s.add_source(RING, SourceKind::Ring, 40);
    s.offer_more(RING, &ids(&l, &[4, 1, 3]));
    let got = s.reserve(RING, 3, Order::Arrival, now);
    assert_eq!(got, ids(&l, &[4, 1, 3]));
    for &c in &got {
        s.on_chunk(RING, c, now);
    }
    assert!(s.reserve(RING, 5, Order::Arrival, now).is_empty());
    // Chunk 1 failed the whole-file check: wanted again, offered
    // still, though no longer queued.
    s.drop_held(&ids(&l, &[1]));
    s.offer_more(RING, &ids(&l, &[5]));
    assert_eq!(s.reserve(RING, 5, Order::Arrival, now), ids(&l, &[5, 1]));
    check(&s);
}

#[test]
fn the_owner_s_end_game_takes_the_top_of_the_longest_missing_run() {
    let (mut s, l, now) = sched(20);
    s.add_source(RING, SourceKind::Ring, 40);
    s.add_source(OWNER, SourceKind::Owner, 40);
    s.stop_pushing(OWNER);
    // Held: 0-3, 8-9, 16-19. Missing runs: 4-7 (4 long) and 10-15
    // (6 long), the ring already offering 14.
    for c in [0, 1, 2, 3, 8, 9, 16, 17, 18, 19] {
        s.on_chunk(OWNER, l.chunk_id(c).unwrap(), now);
    }
    s.offer_more(RING, &ids(&l, &[14]));
    assert_eq!(
        s.reserve_tail(OWNER, 1, now, 0, |src| src != OWNER),
        ids(&l, &[15])
    );
    // Claimed chunks still count as missing: 10-15 stays the longest.
    assert_eq!(
        s.reserve_tail(OWNER, 2, now, 0, |src| src != OWNER),
        ids(&l, &[13, 12])
    );
    // A run with nothing left to ask for is passed over.
    s.reserve(RING, 1, Order::Lowest, now);
    for c in [10, 11] {
        s.on_chunk(OWNER, l.chunk_id(c).unwrap(), now);
    }
    assert_eq!(
        s.reserve_tail(OWNER, 1, now, 0, |src| src != OWNER),
        ids(&l, &[7])
    );
    assert!(
        s.reserve_tail(OWNER, 0, now, 0, |src| src != OWNER)
            .is_empty()
    );
    // Spread: the same run, chunks further down it, wrapping around
    // what may be asked (12 and 13 are claimed, 14 the ring offers).
    let (mut s, l, now) = sched(20);
    s.add_source(RING, SourceKind::Ring, 40);
    s.add_source(OWNER, SourceKind::Owner, 40);
    for c in [0, 1, 2, 3, 8, 9, 16, 17, 18, 19] {
        s.on_chunk(OWNER, l.chunk_id(c).unwrap(), now);
    }
    s.offer_more(RING, &ids(&l, &[14]));
    assert_eq!(
        s.reserve_tail(OWNER, 1, now, 2, |src| src != OWNER),
        ids(&l, &[12])
    );
    assert_eq!(
        s.reserve_tail(OWNER, 1, now, 1, |src| src != OWNER),
        ids(&l, &[13])
    );
    // Wanted in 10-15 now: 15, 11, 10; spread 4 is 4 mod 3 = 1.
    assert_eq!(
        s.reserve_tail(OWNER, 1, now, 4, |src| src != OWNER),
        ids(&l, &[11])
    );
    check(&s);
    check(&s);
}

#[test]
fn a_ring_source_is_asked_only_for_what_it_offers() {
    let (mut s, l, now) = sched(10);
    s.add_source(RING, SourceKind::Ring, 40);
    assert!(s.reserve(RING, 4, Order::Lowest, now).is_empty());
    s.offer_more(RING, &ids(&l, &[7, 3]));
    assert_eq!(s.offer_count(l.chunk_id(7).unwrap()), 1);
    assert_eq!(s.reserve(RING, 4, Order::Lowest, now), ids(&l, &[3, 7]));
}

#[test]
fn chunks_arrive_fresh_late_or_unasked() {
    let (mut s, l, now) = sched(4);
    s.add_source(RING, SourceKind::Ring, 40);
    s.add_source(OWNER, SourceKind::Owner, 40);
    s.offer(RING, all(&l));
    let c = ids(&l, &[0, 1, 2, 3]);
    // The owner pushes seeds unasked, and may push again after it
    // said it was done (chunks that died with a peer).
    assert_eq!(s.on_chunk(OWNER, c[3], now), Arrival::Fresh);
    s.stop_pushing(OWNER);
    assert_eq!(s.on_chunk(OWNER, c[1], now), Arrival::Fresh);
    assert_eq!(s.on_chunk(RING, c[2], now), Arrival::Unasked);
    s.reserve(RING, 2, Order::Lowest, now);
    assert_eq!(s.on_chunk(RING, c[0], now), Arrival::Fresh);
    assert_eq!(
        s.on_chunk(RING, c[0], now),
        Arrival::Unasked,
        "asked once, answered once"
    );
    // Chunk 2 was unasked but verified, so it is held all the same.
    assert_eq!(s.missing(), 0);
    check(&s);
}

#[test]
fn a_lapsed_claim_goes_to_another_source_and_a_late_reply_is_accepted() {
    let (mut s, l, now) = sched(4);
    s.add_source(RING, SourceKind::Ring, 40);
    s.add_source(OWNER, SourceKind::Owner, 40);
    s.offer(RING, all(&l));
    s.stop_pushing(OWNER);
    assert_eq!(s.reserve(RING, 2, Order::Lowest, now), ids(&l, &[0, 1]));
    assert!(s.expire(now + Duration::from_secs(2)).is_empty());
    let later = now + Duration::from_secs(3);
    assert_eq!(
        s.expire(later),
        vec![
            (l.chunk_id(0).unwrap(), RING),
            (l.chunk_id(1).unwrap(), RING)
        ]
    );
    assert_eq!(s.last_expiry(RING), Some(later));
    // Still outstanding at the ring: it gets nothing it was already
    // asked for, and its window stays full of what it owes.
    assert_eq!(s.outstanding(RING), 2);
    assert_eq!(s.reserve(RING, 10, Order::Lowest, later), ids(&l, &[2, 3]));
    // The owner may now take the lapsed chunks.
    assert_eq!(s.reserve(OWNER, 10, Order::Lowest, later), ids(&l, &[0, 1]));
    assert_eq!(
        s.on_chunk(OWNER, l.chunk_id(0).unwrap(), later),
        Arrival::Fresh
    );
    // The ring's late reply is no violation.
    assert_eq!(
        s.on_chunk(RING, l.chunk_id(0).unwrap(), later),
        Arrival::Late
    );
    // And a late reply before the other source's wins the chunk.
    assert_eq!(
        s.on_chunk(RING, l.chunk_id(1).unwrap(), later),
        Arrival::Fresh
    );
    assert!(!s.is_claimed(l.chunk_id(1).unwrap()));
    assert_eq!(
        s.on_chunk(OWNER, l.chunk_id(1).unwrap(), later),
        Arrival::Late
    );
    check(&s);
}

#[test]
fn a_stalling_source_s_claims_can_be_taken_over() {
    let (mut s, l, now) = sched(6);
    s.add_source(RING, SourceKind::Ring, 40);
    s.add_source(OWNER, SourceKind::Owner, 40);
    s.offer(RING, all(&l));
    s.stop_pushing(OWNER);
    assert_eq!(s.reserve(RING, 2, Order::Lowest, now), ids(&l, &[0, 1]));
    let later = now + Duration::from_secs(1);
    assert_eq!(s.reserve(RING, 1, Order::Lowest, later), ids(&l, &[2]));
    // Only sources the caller names are stolen from, oldest first.
    assert!(
        s.steal(OWNER, 5, later, Duration::ZERO, |src| src == OTHER)
            .is_empty()
    );
    assert_eq!(
        s.steal(OWNER, 2, later, Duration::ZERO, |src| src == RING),
        ids(&l, &[0, 1])
    );
    assert_eq!(
        s.steal(OWNER, 5, later, Duration::ZERO, |src| src == RING),
        ids(&l, &[2])
    );
    // The ring's replies are late, not unasked; the owner's are fresh.
    assert_eq!(
        s.on_chunk(OWNER, l.chunk_id(0).unwrap(), later),
        Arrival::Fresh
    );
    assert_eq!(
        s.on_chunk(RING, l.chunk_id(0).unwrap(), later),
        Arrival::Late
    );
    assert_eq!(
        s.on_chunk(RING, l.chunk_id(1).unwrap(), later),
        Arrival::Fresh
    );
    assert_eq!(
        s.on_chunk(OWNER, l.chunk_id(1).unwrap(), later),
        Arrival::Late
    );
    check(&s);
}

#[test]
fn a_lapsed_request_for_a_chunk_announced_again_can_be_repeated() {
    let (mut s, l, now) = sched(4);
    s.add_source(RING, SourceKind::Ring, 40);
    s.offer(RING, all(&l));
    let c1 = l.chunk_id(1).unwrap();
    assert_eq!(s.reserve(RING, 2, Order::Lowest, now), ids(&l, &[0, 1]));
    // Chunk 0 arrives; chunk 1 never does and its claim lapses.
    s.on_chunk(RING, l.chunk_id(0).unwrap(), now);
    s.expire(now + Duration::from_secs(3));
    assert_eq!(s.outstanding(RING), 1);
    // The source announces it has chunk 1 again: ask again.
    s.offer_more(RING, &[c1]);
    assert_eq!(s.outstanding(RING), 0);
    let later = now + Duration::from_secs(4);
    assert_eq!(s.reserve(RING, 1, Order::Lowest, later), vec![c1]);
    // A HAVE for a chunk still claimed here changes nothing.
    s.offer_more(RING, &[c1]);
    assert_eq!(s.outstanding(RING), 1);
    check(&s);
}

#[test]
fn a_removed_source_releases_its_claims_and_offers() {
    let (mut s, l, now) = sched(6);
    s.add_source(RING, SourceKind::Ring, 40);
    s.add_source(OTHER, SourceKind::Ring, 40);
    s.offer(RING, all(&l));
    s.offer(OTHER, all(&l));
    assert_eq!(s.offer_count(l.chunk_id(5).unwrap()), 2);
    s.reserve(RING, 3, Order::Lowest, now);
    assert_eq!(s.remove_source(RING), 3);
    assert_eq!(s.offer_count(l.chunk_id(5).unwrap()), 1);
    assert_eq!(s.reserve(OTHER, 10, Order::Lowest, now).len(), 6);
    check(&s);
}

#[test]
fn a_bad_chunk_is_wanted_again_and_counted() {
    let (mut s, l, now) = sched(3);
    s.add_source(RING, SourceKind::Ring, 40);
    s.offer(RING, all(&l));
    s.reserve(RING, 1, Order::Lowest, now);
    let c0 = l.chunk_id(0).unwrap();
    assert_eq!(s.on_bad_chunk(RING, c0, now), 1);
    assert!(!s.is_claimed(c0) && !s.held().contains(c0));
    assert_eq!(s.reserve(RING, 1, Order::Lowest, now), vec![c0]);
    check(&s);
}

#[test]
fn dropped_chunks_are_wanted_again() {
    let (mut s, l, now) = sched(3);
    s.add_source(OWNER, SourceKind::Owner, 40);
    for c in l.ids() {
        s.on_chunk(OWNER, c, now);
    }
    assert!(s.is_complete());
    s.drop_held(&ids(&l, &[1]));
    s.stop_pushing(OWNER);
    assert_eq!(s.reserve(OWNER, 5, Order::Highest, now), ids(&l, &[1]));
}

#[test]
fn the_window_covers_the_round_trip_and_no_more() {
    let pace = |latency_ms, gap_ms| {
        let mut p = Pacer::new(40);
        p.min_latency = Some(Duration::from_millis(latency_ms));
        p.gap = Some(Duration::from_millis(gap_ms));
        p.window()
    };
    // A LAN: the round trip is small next to a chunk's transmission,
    // and the floor covers the requester's turnaround.
    assert_eq!(pace(34, 33), 3);
    assert_eq!(pace(33, 33), 3);
    assert_eq!(pace(100, 33), 5);
    // A long fat link: 100 ms round trip, 8 ms per chunk.
    assert_eq!(pace(108, 8), 15);
    // Never past the byte cap.
    assert_eq!(pace(1000, 1), 40);
    assert_eq!(Pacer::new(40).window(), 4);
    assert_eq!(Pacer::new(2).window(), 2);
}

#[test]
fn chunk_time_is_the_gap_between_chunks_while_busy() {
    let (mut s, l, now) = sched(10);
    s.add_source(RING, SourceKind::Ring, 40);
    s.offer(RING, all(&l));
    let asked = s.reserve(RING, 5, Order::Lowest, now);
    let ms = Duration::from_millis;
    for (n, &c) in asked.iter().enumerate().take(4) {
        assert_eq!(s.chunk_time(RING), None, "after {n} chunks");
        s.on_chunk(RING, c, now + ms(500 + 100 * n as u64));
    }
    // Three gaps of 100 ms each with requests still outstanding; the
    // half second before the first chunk is not a gap.
    assert_eq!(s.chunk_time(RING), Some(ms(100)));
}

#[test]
fn the_window_shrinks_by_what_is_outstanding() {
    let (mut s, l, now) = sched(10);
    s.add_source(RING, SourceKind::Ring, 40);
    s.offer(RING, all(&l));
    assert_eq!(s.room(RING), 4);
    s.reserve(RING, 3, Order::Lowest, now);
    assert_eq!(s.room(RING), 1);
    // Lapsed requests still count: a silent source gets no more.
    s.expire(now + Duration::from_secs(10));
    assert_eq!(s.room(RING), 1);
}
