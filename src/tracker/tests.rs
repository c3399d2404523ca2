//! Unit tests of `tracker`, against events, with no I/O.

use super::*;
use crate::manifest::Layout;

const COUNT: u32 = 10;

fn conn(n: u64) -> ConnId {
    ConnId::from_raw(n)
}

fn none() -> ChunkSet {
    ChunkSet::new(COUNT)
}

fn some(ids: &[u32]) -> ChunkSet {
    let l = Layout::new(u64::from(COUNT) * 1024, 1024).unwrap();
    let mut s = none();
    for &i in ids {
        s.insert(l.chunk_id(i).unwrap());
    }
    s
}

fn tells(actions: &[Action]) -> Vec<(u64, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Tell { conn, addrs } => Some((conn.get(), addrs.join(","))),
            _ => None,
        })
        .collect()
}

fn join(t: &mut Tracker, n: u64) -> Vec<Action> {
    let addr = format!("h:{n}");
    t.register(conn(n), &addr, true, 1, "", none()).unwrap().1
}

#[test]
fn newcomers_are_spliced_in_after_the_first_member() {
    let mut t = Tracker::new(COUNT, 100);
    assert_eq!(tells(&join(&mut t, 1)), vec![(1, String::new())]);
    assert_eq!(
        tells(&join(&mut t, 2)),
        vec![(2, "h:1".into()), (1, "h:2".into())]
    );
    // 3 goes between 1 and 2: it downloads from 1, and 2 from it; 1
    // keeps downloading from 2.
    assert_eq!(
        tells(&join(&mut t, 3)),
        vec![(3, "h:1".into()), (2, "h:3".into())]
    );
    assert_eq!(t.ring(), vec!["h:1", "h:3", "h:2"]);
}

fn reseeds(actions: &[Action]) -> Vec<(u64, ChunkSet)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reseed { conn, chunks } => Some((conn.get(), chunks.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_dead_member_is_routed_around_and_its_lost_chunks_reseeded() {
    let mut t = Tracker::new(COUNT, 100);
    for n in 1..=4 {
        join(&mut t, n);
    }
    // Data flows 1 -> 4 -> 3 -> 2 -> 1.
    assert_eq!(t.ring(), vec!["h:1", "h:4", "h:3", "h:2"]);
    t.have(
        conn(1),
        &some(&[0, 1, 2]).iter(&layout()).collect::<Vec<_>>(),
    );
    t.have(conn(3), &some(&[3, 4]).iter(&layout()).collect::<Vec<_>>());
    t.seeded(conn(4), &some(&[5, 6]));
    t.seeded(conn(2), &some(&[7, 8, 9]));
    let now = Instant::now();
    // 2 drops: away, nothing re-wired yet.
    let a = t.link_down(conn(2), now);
    assert!(tells(&a).is_empty());
    // 1 downloads from 2 and finds it unreachable: 2 is gone, 1 now
    // downloads from 3 and gets 2's seeds, which no one else holds.
    let a = t.unreachable(conn(1), "h:2");
    assert_eq!(tells(&a), vec![(1, "h:3".into())]);
    assert_eq!(reseeds(&a), vec![(1, some(&[7, 8, 9]))]);
    assert_eq!(t.ring(), vec!["h:1", "h:4", "h:3"]);
    // It restarts with chunks on disk: back in front of 1.
    let (j, a) = t.register(conn(5), "h:2", true, 1, "", some(&[7])).unwrap();
    assert!(j.known);
    assert_eq!(tells(&a), vec![(5, "h:3".into()), (1, "h:2".into())]);
    assert!(reseeds(&a).is_empty());
    assert_eq!(t.ring(), vec!["h:2", "h:1", "h:4", "h:3"]);
}

#[test]
fn with_two_sources_each_member_downloads_from_the_two_before_it() {
    let mut t = Tracker::new(COUNT, 100);
    let join2 = |t: &mut Tracker, n: u64| {
        let addr = format!("h:{n}");
        t.register(conn(n), &addr, true, 2, "", none()).unwrap().1
    };
    // Alone, then one source while the ring has two members.
    assert_eq!(tells(&join2(&mut t, 1)), vec![(1, String::new())]);
    assert_eq!(
        tells(&join2(&mut t, 2)),
        vec![(2, "h:1".into()), (1, "h:2".into())]
    );
    // 3 goes after 1: it downloads from 1 and 2; 2 from 3 and 1; 1
    // from 2 and 3. Members are told in ring order from the change.
    assert_eq!(
        tells(&join2(&mut t, 3)),
        vec![
            (3, "h:1,h:2".into()),
            (2, "h:3,h:1".into()),
            (1, "h:2,h:3".into())
        ]
    );
    // Data flows 1 -> 4 -> 3 -> 2 -> 1, with chords two ahead. A
    // member with one source keeps the ring's one neighbour.
    let a = t.register(conn(4), "h:4", true, 1, "", none()).unwrap().1;
    assert_eq!(t.ring(), vec!["h:1", "h:4", "h:3", "h:2"]);
    assert_eq!(
        tells(&a),
        vec![
            (4, "h:1".into()),
            (3, "h:4,h:1".into()),
            (2, "h:3,h:4".into())
        ]
    );
    assert!(
        a.contains(&Action::Log(
            "wired h:4 into the ring: it downloads from h:1, and h:3, h:2 from it (4 in the ring)"
                .into()
        ))
    );
    // Every member serves at most two; with 3 dead, 2 still had 4 and
    // 1 still had 2, and both get their second source back.
    let now = Instant::now();
    t.link_down(conn(3), now);
    let a = t.unreachable(conn(2), "h:3");
    assert_eq!(t.ring(), vec!["h:1", "h:4", "h:2"]);
    assert_eq!(
        tells(&a),
        vec![(2, "h:4,h:1".into()), (1, "h:2,h:4".into())]
    );
    assert!(a.contains(&Action::Log(
        "re-wired h:2: it now downloads from h:4, h:1".into()
    )));
    // A member back in the same place is told, complete or not, and
    // one that now asks for two sources gets them.
    t.complete(conn(4));
    let (_, a) = t.register(conn(7), "h:4", true, 2, "", none()).unwrap();
    assert_eq!(tells(&a), vec![(7, "h:1,h:2".into())]);
    let status = t.status();
    let four = status.iter().find(|p| p.addr == "h:4").unwrap();
    assert_eq!(four.neighbour, "h:1, h:2");
}

fn layout() -> Layout {
    Layout::new(u64::from(COUNT) * 1024, 1024).unwrap()
}

#[test]
fn a_member_back_within_grace_keeps_its_place() {
    let mut t = Tracker::new(COUNT, 100);
    for n in 1..=3 {
        join(&mut t, n);
    }
    let now = Instant::now();
    t.link_down(conn(2), now);
    assert!(t.tick(now + Duration::from_secs(1)).is_empty());
    let (j, a) = t.register(conn(9), "h:2", true, 1, "", none()).unwrap();
    assert!(j.known);
    assert_eq!(tells(&a), vec![(9, "h:3".into())]);
    // An unreachable report while its link is up again is ignored.
    assert!(t.unreachable(conn(1), "h:2").is_empty());
    // Nor is one from a member that does not download from it.
    t.link_down(conn(9), now);
    assert!(t.unreachable(conn(3), "h:2").is_empty());
    t.register(conn(10), "h:2", true, 1, "", none()).unwrap();
    assert!(tells(&t.tick(now + GRACE * 2)).is_empty());
    assert_eq!(t.ring(), vec!["h:1", "h:3", "h:2"]);
}

#[test]
fn chunks_missing_from_the_whole_ring_are_seeded_after_a_quiet_spell() {
    let mut t = Tracker::new(COUNT, 100);
    for n in 1..=3 {
        join(&mut t, n);
    }
    // Shares for five were planned; three came.
    t.seeded(conn(1), &some(&[0, 1]));
    t.seeded(conn(2), &some(&[2, 3]));
    t.seeded(conn(3), &some(&[4, 5]));
    let now = Instant::now();
    assert!(reseeds(&t.tick(now)).is_empty());
    assert!(reseeds(&t.tick(now + QUIET / 2)).is_empty());
    let got = reseeds(&t.tick(now + QUIET));
    // 6..9 in slices, spread over the three.
    let mut all = none();
    for (_, chunks) in &got {
        all.union_with(chunks);
    }
    assert_eq!(all, some(&[6, 7, 8, 9]));
    assert_eq!(got.len(), 3);
    // Promised now: nothing more to seed.
    assert!(reseeds(&t.tick(now + QUIET * 3)).is_empty());
}

#[test]
fn a_member_back_without_its_seeds_is_seeded_them_again() {
    let mut t = Tracker::new(COUNT, 100);
    for n in 1..=2 {
        join(&mut t, n);
    }
    t.seeded(conn(1), &some(&[0, 1, 2, 3, 4]));
    t.seeded(conn(2), &some(&[5, 6, 7, 8, 9]));
    t.have(conn(2), &some(&[5, 6]).iter(&layout()).collect::<Vec<_>>());
    let now = Instant::now();
    t.link_down(conn(2), now);
    // Back within its grace, holding only chunk 5: 6 to 9 are lost.
    let (_, a) = t.register(conn(3), "h:2", true, 1, "", some(&[5])).unwrap();
    assert_eq!(reseeds(&a), vec![(3, some(&[6, 7, 8, 9]))]);
}

#[test]
fn members_are_released_once_every_live_peer_is_complete() {
    let mut t = Tracker::new(COUNT, 100);
    join(&mut t, 1);
    join(&mut t, 2);
    t.register(conn(3), "h:3", false, 1, "h:9", none()).unwrap();
    let released = |a: &[Action]| -> Vec<u64> {
        a.iter()
            .filter_map(|a| match a {
                Action::Release(c) => Some(c.get()),
                _ => None,
            })
            .collect()
    };
    assert!(released(&t.complete(conn(1))).is_empty());
    assert!(released(&t.complete(conn(3))).is_empty());
    // The last one: every member may go, hand-wired or not.
    let mut got = released(&t.complete(conn(2)));
    got.sort();
    assert_eq!(got, vec![1, 2, 3]);
}

#[test]
fn a_large_ring_spreads_newcomers_so_no_member_serves_them_all() {
    let mut t = Tracker::new(COUNT, 2000);
    let mut first_neighbour = HashMap::new();
    for n in 1..=1000 {
        let a = join(&mut t, n);
        if let Some((_, from)) = tells(&a).into_iter().find(|(c, _)| *c == n) {
            *first_neighbour.entry(from).or_insert(0) += 1;
        }
    }
    assert_eq!(t.ring().len(), 1000);
    let busiest = first_neighbour.values().max().copied().unwrap_or(0);
    assert!(
        busiest <= 20,
        "one member was the first neighbour of {busiest} newcomers"
    );
    // Still one ring: following download neighbours visits everyone.
    let ring = t.ring();
    let mut seen = std::collections::HashSet::new();
    for p in t.status() {
        assert!(ring.contains(&p.neighbour.as_str()), "{}", p.neighbour);
        seen.insert(p.neighbour.clone());
    }
    assert_eq!(seen.len(), 1000);
}

fn join_auto(t: &mut Tracker, n: u64) -> Vec<Action> {
    let addr = format!("h:{n}");
    t.register(conn(n), &addr, true, 0, "", none()).unwrap().1
}

/// Every live wired member's download neighbours as the tracker last
/// assigned them, checked against a fresh computation (so no change
/// left a member with stale neighbours), by address.
fn graph(t: &Tracker) -> HashMap<String, Vec<String>> {
    let mut g = HashMap::new();
    for (p, &i) in t.ring.iter().enumerate() {
        let m = &t.members[i];
        let assigned = m.assigned.clone().unwrap_or_default();
        assert_eq!(assigned, t.sources_of(p), "{} is stale", m.addr);
        g.insert(m.addr.clone(), assigned);
    }
    g
}

/// The most hops a chunk held by any one member takes to reach every
/// other, following who downloads from whom.
fn diameter(g: &HashMap<String, Vec<String>>) -> usize {
    let mut serves: HashMap<&str, Vec<&str>> = HashMap::new();
    for (to, froms) in g {
        for from in froms {
            serves.entry(from.as_str()).or_default().push(to.as_str());
        }
    }
    let mut worst = 0;
    for start in g.keys() {
        let mut seen = std::collections::HashSet::from([start.as_str()]);
        let mut front = vec![start.as_str()];
        let mut hops = 0;
        while !front.is_empty() {
            let mut next = Vec::new();
            for a in front {
                for &b in serves.get(a).map_or(&[][..], |v| v.as_slice()) {
                    if seen.insert(b) {
                        next.push(b);
                    }
                }
            }
            if !next.is_empty() {
                hops += 1;
            }
            front = next;
        }
        assert_eq!(seen.len(), g.len(), "not everyone is reached from {start}");
        worst = worst.max(hops);
    }
    worst
}

#[test]
fn a_large_swarm_is_wired_as_several_rings_with_a_small_diameter() {
    let mut t = Tracker::new(COUNT, 5000);
    // Small: the card's ring, one source each, even when the owner
    // chooses.
    for n in 1..RINGS_FROM as u64 {
        join_auto(&mut t, n);
    }
    let g = graph(&t);
    assert!(g.values().all(|f| f.len() == 1));
    assert_eq!(diameter(&g), RINGS_FROM - 2);
    // The eighth: every member downloads from three, told so.
    let a = join_auto(&mut t, RINGS_FROM as u64);
    assert_eq!(tells(&a).len(), RINGS_FROM);
    for n in RINGS_FROM as u64 + 1..=1000 {
        join_auto(&mut t, n);
    }
    let g = graph(&t);
    let three = g.values().filter(|f| f.len() == 3).count();
    assert!(three >= 990, "{three} of 1000 have three sources");
    assert!(g.values().all(|f| f.len() >= 2));
    let mut serves: HashMap<&str, usize> = HashMap::new();
    for f in g.values() {
        for from in f {
            *serves.entry(from).or_default() += 1;
        }
    }
    let busiest = serves.values().max().copied().unwrap_or(0);
    assert!(busiest <= 3, "one member serves {busiest}");
    // A ring of 1000 is 999 hops across; these rings about ten.
    let d = diameter(&g);
    assert!(d <= 16, "diameter {d}");
    let status = t.status();
    assert_eq!(status[500].neighbour.split(", ").count(), 3);
}

#[test]
fn a_large_swarm_repairs_every_ring_and_keeps_them_as_it_shrinks() {
    let mut t = Tracker::new(COUNT, 5000);
    for n in 1..=200 {
        join_auto(&mut t, n);
    }
    // A hundred and ninety die, in an order unrelated to any ring.
    let now = Instant::now();
    for k in 0..190u64 {
        let n = 1 + (k * 37) % 200;
        t.link_down(conn(n), now);
        t.tick(now + GRACE);
        if k % 10 == 0 {
            let g = graph(&t);
            assert!(diameter(&g) < t.ring.len().max(4), "{} left", t.ring.len());
        }
    }
    // Ten left: still the rings.
    let g = graph(&t);
    assert_eq!(g.len(), 10);
    assert!(g.values().all(|f| f.len() >= 2), "{g:?}");
    // Down to three, two and one: the last downloaders keep every
    // other member they can have as a source.
    let mut n = 1;
    for left in [3, 2, 1] {
        while t.ring.len() > left {
            t.link_down(conn(n), now);
            t.tick(now + GRACE);
            n += 1;
        }
        let g = graph(&t);
        assert!(g.values().all(|f| f.len() == left - 1), "{g:?}");
        check_links(&t);
    }
    // And newcomers go into all the rings again.
    for n in 500..510 {
        join_auto(&mut t, n);
        check_links(&t);
    }
    let g = graph(&t);
    assert!(g.values().all(|f| f.len() >= 2), "{g:?}");
    assert!(diameter(&g) <= 10);
    // Members who asked for a number keep it: two, in a large ring.
    for n in 1000..1020 {
        t.register(conn(n), &format!("h:{n}"), true, 2, "", none())
            .unwrap();
    }
    let g = graph(&t);
    let (asked, auto): (Vec<_>, Vec<_>) = g.iter().partition(|(a, _)| a.len() > 5);
    assert!(asked.iter().all(|(_, f)| f.len() == 2 || f.len() == 1));
    assert!(asked.iter().filter(|(_, f)| f.len() == 2).count() >= 15);
    assert!(auto.iter().all(|(_, f)| f.len() >= 2), "{auto:?}");
    assert!(auto.iter().any(|(_, f)| f.len() == 3), "{auto:?}");
}

#[test]
fn grace_expiry_and_leaving_close_the_ring() {
    let mut t = Tracker::new(COUNT, 100);
    for n in 1..=3 {
        join(&mut t, n);
    }
    let now = Instant::now();
    t.link_down(conn(3), now);
    let a = t.tick(now + GRACE);
    assert_eq!(tells(&a), vec![(2, "h:1".into())]);
    // A complete member leaves: the other is alone.
    t.complete(conn(2));
    let a = t.link_down(conn(2), now);
    assert_eq!(tells(&a), vec![(1, String::new())]);
    assert!(reseeds(&a).is_empty());
    let states: Vec<_> = t.status().iter().map(|p| p.state).collect();
    assert_eq!(
        states,
        vec![PeerState::Downloading, PeerState::Left, PeerState::Gone]
    );
}

#[test]
fn hand_wired_members_are_listed_not_wired_and_the_cap_holds() {
    let mut t = Tracker::new(COUNT, 2);
    let (_, a) = t.register(conn(1), "h:1", false, 1, "h:7", none()).unwrap();
    assert!(tells(&a).is_empty());
    join(&mut t, 2);
    assert_eq!(
        t.register(conn(3), "h:3", true, 1, "", none()).unwrap_err(),
        "the swarm is full: this owner takes at most 2 peers (--max-peers)"
    );
    assert_eq!(t.ring(), vec!["h:2"]);
    assert_eq!(t.status()[0].neighbour, "h:7");
    let text = table(&t.status(), COUNT, u64::from(COUNT) * 1024, 5 * 1024, 10);
    assert!(text.contains("h:1"), "{text}");
    assert!(
        text.ends_with(
            "total: 2 peers: 2 downloading, 0 complete, 0 away, 0 gone, 0 left; \
             0/20 chunks (0.0%); 0.0 MiB/s; owner sent 0.0 MiB (0.50 x the file)"
        ),
        "{text}"
    );
}

/// Checks the other rings against the ring: each is one cycle over
/// exactly the ring's members, and no one else is linked.
fn check_links(t: &Tracker) {
    for (i, m) in t.members.iter().enumerate() {
        let in_ring = t.ring.contains(&i);
        for j in 0..EXTRA_RINGS {
            if !(t.large && in_ring) {
                assert_eq!(m.links[j], Link::NONE, "{} linked in ring {j}", m.addr);
            }
        }
    }
    if !t.large || t.ring.is_empty() {
        return;
    }
    for j in 0..EXTRA_RINGS {
        let start = t.ring[0];
        let mut seen = std::collections::HashSet::new();
        let mut r = start;
        loop {
            assert!(r != NONE && t.ring.contains(&r), "ring {j} reaches {r}");
            assert!(seen.insert(r), "ring {j} loops early at {r}");
            let next = t.members[r].links[j].next;
            assert_eq!(t.members[next].links[j].prev, r, "ring {j} prev of {next}");
            r = next;
            if r == start {
                break;
            }
        }
        assert_eq!(seen.len(), t.ring.len(), "ring {j} misses members");
    }
}

/// Random churn, checked after every step: every member's neighbours
/// are what a fresh computation gives, the other rings are whole, and
/// every member with a session was last told what it was assigned.
#[test]
fn random_churn_keeps_wiring_fresh_and_links_whole() {
    // Joins, drops, completions, ticks past GRACE, UNREACHABLEs and
    // re-registrations (wired or hand-wired, sources 0 to 4, holding
    // none, some or all), among few addresses (rings of 1 and 2, and
    // across the 6/8 threshold) and brand-new ones that come and go.
    let steps = 1500;
    for seed in 0..9u64 {
        let peers = [4, 9, 14][seed as usize % 3];
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut t = Tracker::new(COUNT, 10_000);
        let mut now = Instant::now();
        let mut conns: HashMap<u64, u64> = HashMap::new(); // peer -> conn
        let mut told: HashMap<u64, String> = HashMap::new(); // conn -> addrs
        let mut fresh = 1000u64;
        let mut log = Vec::new();
        for _ in 0..steps {
            let p = next(peers);
            let addr = format!("h:{p}");
            let op = next(10);
            let actions = match op {
                0..=3 => {
                    fresh += 1;
                    let wired = next(4) != 0;
                    let sources = next(5) as u8;
                    let held = match next(3) {
                        0 => none(),
                        1 => some(&[next(10) as u32]),
                        _ => some(&(0..COUNT).collect::<Vec<_>>()),
                    };
                    log.push(format!(
                        "register {addr} conn {fresh} wired {wired} sources {sources} held {}",
                        held.len()
                    ));
                    let r = t.register(conn(fresh), &addr, wired, sources, "x:1", held);
                    conns.insert(p, fresh);
                    r.map(|r| r.1).unwrap_or_default()
                }
                4 | 5 => {
                    let Some(c) = conns.remove(&p) else { continue };
                    log.push(format!("link_down {addr} conn {c}"));
                    t.link_down(conn(c), now)
                }
                6 => {
                    let Some(&c) = conns.get(&p) else { continue };
                    log.push(format!("complete {addr}"));
                    t.complete(conn(c))
                }
                7 => {
                    now += Duration::from_millis(1000 * (1 + next(3)));
                    log.push("tick".to_string());
                    t.tick(now)
                }
                8 => {
                    let q = next(peers);
                    let Some(&c) = conns.get(&p) else { continue };
                    log.push(format!("unreachable {addr} reports h:{q}"));
                    t.unreachable(conn(c), &format!("h:{q}"))
                }
                _ => {
                    // A brand-new address, to grow the registry.
                    fresh += 1;
                    let a = format!("n:{fresh}");
                    log.push(format!("register {a} conn {fresh}"));
                    let r = t.register(conn(fresh), &a, true, next(5) as u8, "", none());
                    if next(2) == 0 {
                        let mut a2 = r.map(|r| r.1).unwrap_or_default();
                        a2.extend(t.link_down(conn(fresh), now));
                        a2.extend(t.complete(conn(fresh)));
                        a2
                    } else {
                        r.map(|r| r.1).unwrap_or_default()
                    }
                }
            };
            for a in &actions {
                if let Action::Tell { conn, addrs } = a {
                    told.insert(conn.get(), addrs.join(","));
                }
            }
            let ctx = || format!("seed {seed}, steps:\n{}", log.join("\n"));
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                graph(&t);
                check_links(&t);
            }));
            if r.is_err() {
                panic!("{}", ctx());
            }
            for &i in &t.ring {
                let m = &t.members[i];
                if let (Some(c), false) = (m.link, m.complete) {
                    let want = m.assigned.clone().unwrap_or_default().join(",");
                    assert_eq!(
                        told.get(&c.get()),
                        Some(&want),
                        "{} not told; {}",
                        m.addr,
                        ctx()
                    );
                }
            }
            for (c, &i) in &t.by_conn {
                assert_eq!(t.members[i].link, Some(*c));
            }
        }
    }
}

#[test]
fn a_member_back_from_hand_wiring_is_told_its_neighbours() {
    let mut t = Tracker::new(COUNT, 100);
    join(&mut t, 1);
    join(&mut t, 2);
    // h:2 restarts hand-wired, then owner-wired again, in new sessions.
    t.register(conn(3), "h:2", false, 1, "h:1", none()).unwrap();
    let (_, actions) = t.register(conn(4), "h:2", true, 1, "", none()).unwrap();
    assert!(
        tells(&actions).iter().any(|(c, _)| *c == 4),
        "the new session was never told: {actions:?}"
    );
}
