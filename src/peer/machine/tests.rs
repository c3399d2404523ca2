//! Unit tests of `machine`, against events, with no I/O.

//! The decisions driven by events alone, with a small model of
//! sources that serve their requests one chunk per gap.

use super::*;

const OWNER: SourceId = SourceId(1);
const A: SourceId = SourceId(2);
const B: SourceId = SourceId(3);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A core of `count` chunks of 1 KiB with `--stall-timeout 2` and
/// `--linger 3`, and the outputs it gave.
struct Bed {
    core: PeerCore,
    t0: Instant,
    layout: Layout,
}

impl Bed {
    fn new(count: u32, config: impl FnOnce(&mut CoreConfig)) -> Bed {
        let layout = Layout::new(u64::from(count) * 1024, 1024).unwrap();
        let mut c = CoreConfig::new(1024);
        c.stall_timeout = Duration::from_secs(2);
        c.linger = Duration::from_secs(3);
        config(&mut c);
        let t0 = Instant::now();
        let core = PeerCore::new(layout.clone(), ChunkSet::new(count), c, t0);
        Bed { core, t0, layout }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn id(&self, raw: u32) -> ChunkId {
        self.layout.chunk_id(raw).unwrap()
    }

    fn set(&self, raw: impl IntoIterator<Item = u32>) -> ChunkSet {
        let mut set = ChunkSet::new(self.layout.count());
        for i in raw {
            set.insert(self.id(i));
        }
        set
    }

    /// Handles `input` at `ms` and returns all the core then does.
    fn feed(&mut self, ms: u64, input: Input) -> Vec<Output> {
        self.core.handle(self.at(ms), input);
        std::iter::from_fn(|| self.core.poll()).collect()
    }

    fn up(&mut self, ms: u64, src: SourceId, kind: SourceKind, port: u16) -> Vec<Output> {
        let addr = (kind == SourceKind::Ring).then(|| addr(port));
        self.feed(ms, Input::SourceUp { src, kind, addr })
    }

    fn stored(&mut self, ms: u64, src: SourceId, raw: u32) -> Vec<Output> {
        let id = self.id(raw);
        self.feed(
            ms,
            Input::Received {
                src,
                id,
                put: Put::Stored,
                bytes: 1024,
            },
        )
    }
}

/// The chunks requested of `src` in `outs`.
fn asked(outs: &[Output], src: SourceId) -> Vec<u32> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Request { src: s, ids } if *s == src => Some(ids),
            _ => None,
        })
        .flatten()
        .map(|id| id.get())
        .collect()
}

/// Sources that answer their requests in order, one chunk every
/// `gap` ms (`None`: never), stepped 10 ms at a time with a tick
/// every 100 ms; records every output with its time.
struct Model {
    links: Vec<(SourceId, Option<u64>, VecDeque<u32>, u64)>,
    outs: Vec<(u64, Output)>,
}

impl Model {
    fn new(links: &[(SourceId, Option<u64>)]) -> Model {
        Model {
            links: links
                .iter()
                .map(|&(s, g)| (s, g, VecDeque::new(), 0))
                .collect(),
            outs: Vec::new(),
        }
    }

    /// Takes in outputs given at `ms`: requests join their source's
    /// queue.
    fn take(&mut self, ms: u64, outs: Vec<Output>) {
        for o in outs {
            if let Output::Request { src, ids } = &o
                && let Some(link) = self.links.iter_mut().find(|l| l.0 == *src)
            {
                if link.2.is_empty()
                    && let Some(gap) = link.1
                {
                    link.3 = link.3.max(ms + gap);
                }
                link.2.extend(ids.iter().map(|id| id.get()));
            }
            self.outs.push((ms, o));
        }
    }

    /// Runs from `from` to `until` ms, or until the file is held.
    fn run(&mut self, bed: &mut Bed, from: u64, until: u64) {
        let mut ms = from;
        while ms < until && !bed.core.held().is_full() {
            ms += 10;
            for i in 0..self.links.len() {
                let (src, gap, ready) = (self.links[i].0, self.links[i].1, self.links[i].3);
                let Some(gap) = gap else { continue };
                if ms < ready {
                    continue;
                }
                if let Some(raw) = self.links[i].2.pop_front() {
                    self.links[i].3 = ms + gap;
                    let outs = bed.stored(ms, src, raw);
                    self.take(ms, outs);
                }
            }
            if ms.is_multiple_of(100) {
                let outs = bed.feed(ms, Input::Tick);
                self.take(ms, outs);
            }
        }
    }

    /// Chunks requested of `src` from `from` ms on.
    fn asked_since(&self, src: SourceId, from: u64) -> Vec<u32> {
        let outs: Vec<&Output> = self
            .outs
            .iter()
            .filter(|(ms, _)| *ms >= from)
            .map(|(_, o)| o)
            .collect();
        outs.iter()
            .filter_map(|o| match o {
                Output::Request { src: s, ids } if *s == src => Some(ids),
                _ => None,
            })
            .flatten()
            .map(|id| id.get())
            .collect()
    }

    fn any(&self, f: impl Fn(&Output) -> bool) -> bool {
        self.outs.iter().any(|(_, o)| f(o))
    }
}

/// An owner-wired peer with one download neighbour, at port 9001,
/// that lists every chunk; the owner connected and done seeding
/// (nothing: no end game).
fn wired_with_neighbour(count: u32, sources: u8) -> (Bed, Vec<Output>) {
    let mut bed = Bed::new(count, |c| c.sources = sources);
    bed.feed(
        0,
        Input::Neighbours(vec![(addr(9001), "127.0.0.1:9001".into())]),
    );
    bed.up(0, OWNER, SourceKind::Owner, 0);
    bed.feed(0, Input::SeedDone { src: OWNER });
    bed.feed(0, Input::OwnerSeeding(false));
    bed.up(0, A, SourceKind::Ring, 9001);
    let all = bed.set(0..count);
    let outs = bed.feed(
        0,
        Input::Offered {
            src: A,
            chunks: all,
        },
    );
    (bed, outs)
}

#[test]
fn a_neighbour_that_stops_answering_lapses_and_the_owner_stands_in() {
    let (mut bed, outs) = wired_with_neighbour(40, 1);
    assert_eq!(asked(&outs, A), [0, 1, 2, 3], "first in, first out");
    assert!(asked(&outs, OWNER).is_empty(), "the ring is not stalled");
    let mut model = Model::new(&[(A, None), (OWNER, Some(10))]);
    model.take(0, outs);
    model.run(&mut bed, 0, 1990);
    assert!(model.asked_since(OWNER, 0).is_empty(), "{:?}", model.outs);
    assert!(!bed.core.is_stalled());
    // At the stall timeout the four requests lapse: the neighbour is
    // failing, the only one connected, so the owner stands in for
    // the whole file, from the top down, while the neighbour is asked
    // for nothing more.
    model.run(&mut bed, 1990, 10_000);
    let lapsed = model.any(|o| matches!(o, Output::Note(Note::Lapsed { src: A, .. })));
    assert!(lapsed, "{:?}", model.outs);
    let stalled = Output::Note(Note::Stalled(Stall::Failing(vec![(A, Failing::Lapsed)])));
    assert!(model.any(|o| *o == stalled), "{:?}", model.outs);
    assert!(model.any(|o| *o == Output::NeedOwner(true)));
    assert_eq!(model.asked_since(OWNER, 2000)[..4], [39, 38, 37, 36]);
    assert!(bed.core.held().is_full(), "the owner brought the rest");
    assert_eq!(model.asked_since(A, 1), Vec::<u32>::new());
    for raw in 0..4 {
        assert!(model.asked_since(OWNER, 2000).contains(&raw), "chunk {raw}");
    }
    assert_eq!(bed.core.from_owner(), 40 * 1024);
}

/// A peer with neighbours A (9001) and B (9002), both listing every
/// chunk and neither answering; wired by the owner or by hand.
fn two_silent_neighbours(wired: bool, until_ms: u64) -> (Bed, Model) {
    let count = 40;
    let mut bed = Bed::new(count, |c| {
        c.sources = 2;
        c.wired = wired;
        if !wired {
            c.targets = vec![addr(9001), addr(9002)];
        }
    });
    let mut model = Model::new(&[(A, None), (B, None), (OWNER, Some(10))]);
    if wired {
        bed.feed(
            0,
            Input::Neighbours(vec![
                (addr(9001), "127.0.0.1:9001".into()),
                (addr(9002), "127.0.0.1:9002".into()),
            ]),
        );
    }
    bed.up(0, OWNER, SourceKind::Owner, 0);
    bed.feed(0, Input::SeedDone { src: OWNER });
    bed.feed(0, Input::OwnerSeeding(false));
    for (src, port) in [(A, 9001), (B, 9002)] {
        let outs = bed.up(0, src, SourceKind::Ring, port);
        model.take(0, outs);
        let all = bed.set(0..count);
        let outs = bed.feed(0, Input::Offered { src, chunks: all });
        model.take(0, outs);
    }
    model.run(&mut bed, 0, until_ms);
    (bed, model)
}

#[test]
fn owner_wired_with_several_neighbours_a_peer_leaves_failing_ones_to_the_owner_s_repair() {
    // Both neighbours fail (their requests lapse). Hand-wired, the
    // owner stands in, as in a ring.
    let (bed, model) = two_silent_neighbours(false, 8000);
    assert!(bed.core.held().is_full(), "the owner brought the file");
    assert!(model.any(|o| *o == Output::NeedOwner(true)));
    // Owner-wired, the peer waits for them or for the owner to
    // re-wire it: the owner's link is asked for nothing...
    let silence = 2000 * u64::from(RING_SILENCE);
    let (bed, model) = two_silent_neighbours(true, silence - 100);
    assert!(model.any(|o| matches!(o, Output::Note(Note::Lapsed { .. }))));
    assert!(model.asked_since(OWNER, 0).is_empty(), "{:?}", model.outs);
    assert!(!bed.core.is_stalled());
    assert!(bed.core.held().is_empty());
    // ...until nothing has come from either for RING_SILENCE x T.
    let (bed, model) = two_silent_neighbours(true, silence + 8000);
    assert!(model.asked_since(OWNER, 0).len() >= 40, "{:?}", model.outs);
    assert!(bed.core.held().is_full(), "the owner brought the file");
}

#[test]
fn the_owner_s_word_beats_the_default_linger_but_not_a_given_one() {
    for given in [false, true] {
        let mut bed = Bed::new(1, |c| c.linger_given = given);
        bed.up(0, OWNER, SourceKind::Owner, 0);
        bed.stored(10, OWNER, 0);
        bed.feed(20, Input::OutputReady);
        bed.feed(30, Input::Verified(Ok(())));
        let outs = bed.feed(40, Input::SwarmComplete);
        let left = outs.contains(&Output::Leave(LeaveWhy::SwarmComplete));
        assert_eq!(left, !given, "--linger given: {given}: {outs:?}");
    }
}

#[test]
fn with_two_neighbours_a_silent_ones_chunks_go_to_the_other_not_the_owner() {
    let (mut bed, outs) = wired_with_neighbour(400, 2);
    bed.feed(
        0,
        Input::Neighbours(vec![
            (addr(9001), "127.0.0.1:9001".into()),
            (addr(9002), "127.0.0.1:9002".into()),
        ]),
    );
    assert_eq!(asked(&outs, A), [0, 1, 2, 3]);
    let mut model = Model::new(&[(A, None), (B, Some(10)), (OWNER, Some(10))]);
    model.take(0, outs);
    let outs = bed.up(0, B, SourceKind::Ring, 9002);
    model.take(0, outs);
    let all = bed.set(0..400);
    let outs = bed.feed(
        0,
        Input::Offered {
            src: B,
            chunks: all,
        },
    );
    assert_eq!(asked(&outs, B), [4, 5, 6, 7], "a claim is never shared");
    model.take(0, outs);
    // (Too early for the end game's taking over of old requests.)
    model.run(&mut bed, 0, 1990);
    for raw in 0..4 {
        assert!(!model.asked_since(B, 0).contains(&raw), "chunk {raw}");
    }
    model.run(&mut bed, 1990, 2300);
    // Lapsed at 2 s, A's four chunks went to B, the healthy one, and
    // the owner was not called in.
    let b = model.asked_since(B, 2000);
    for raw in 0..4 {
        assert!(b.contains(&raw), "chunk {raw} not asked of B: {b:?}");
    }
    assert!(!bed.core.is_stalled());
    assert!(!model.any(|o| *o == Output::NeedOwner(true)));
    assert!(model.asked_since(OWNER, 0).is_empty());
    model.run(&mut bed, 2300, 20_000);
    assert!(bed.core.held().is_full());
    assert_eq!(model.asked_since(A, 1), Vec::<u32>::new());
    assert_eq!(bed.core.from_ring(), 400 * 1024);
}

/// An owner-wired peer the owner seeded `seeds` chunks (the lowest),
/// whose neighbour holds chunks below `offered`.
fn end_game(count: u32, seeds: u32, offered: u32) -> (Bed, Model) {
    let mut bed = Bed::new(count, |_| {});
    let mut model = Model::new(&[(A, Some(10)), (OWNER, Some(10))]);
    bed.feed(
        0,
        Input::Neighbours(vec![(addr(9001), "127.0.0.1:9001".into())]),
    );
    bed.up(0, OWNER, SourceKind::Owner, 0);
    for raw in 0..seeds {
        let outs = bed.stored(0, OWNER, raw);
        assert!(asked(&outs, OWNER).is_empty(), "a seed is pushed");
    }
    let outs = bed.feed(0, Input::SeedDone { src: OWNER });
    assert!(
        asked(&outs, OWNER).is_empty(),
        "the owner still seeds others"
    );
    model.take(0, bed.up(0, A, SourceKind::Ring, 9001));
    let offer = bed.set(0..offered);
    model.take(
        0,
        bed.feed(
            0,
            Input::Offered {
                src: A,
                chunks: offer,
            },
        ),
    );
    (bed, model)
}

#[test]
fn the_end_game_asks_the_owner_for_the_tail_within_its_budget() {
    // 20 seeds: a budget of 4 chunks, two at a time, of those no
    // neighbour offers (30 to 39), from the top down.
    let (mut bed, mut model) = end_game(40, 20, 30);
    model.run(&mut bed, 0, 500);
    assert!(model.asked_since(OWNER, 0).is_empty(), "not while it seeds");
    let outs = bed.feed(500, Input::OwnerSeeding(false));
    assert_eq!(asked(&outs, OWNER), [39, 38]);
    assert!(outs.contains(&Output::NeedOwner(true)));
    model.take(500, outs);
    model.run(&mut bed, 500, 3000);
    assert_eq!(model.asked_since(OWNER, 0), [39, 38, 37, 36]);
    assert_eq!(bed.core.endgame_asked(), 4);
    assert!(model.any(|o| *o == Output::NeedOwner(false)));
    // The neighbour offers the rest as it gets it; the owner is not
    // asked again.
    let more: Vec<ChunkId> = (30..36).map(|i| bed.id(i)).collect();
    model.take(3000, bed.feed(3000, Input::Have { src: A, ids: more }));
    model.run(&mut bed, 3000, 6000);
    assert!(bed.core.held().is_full());
    assert_eq!(model.asked_since(OWNER, 0).len(), 4);
    assert_eq!(bed.core.from_owner(), (20 + 4) * 1024);
}

#[test]
fn a_peer_the_owner_seeded_nothing_has_no_end_game() {
    let (mut bed, mut model) = end_game(40, 0, 30);
    let outs = bed.feed(500, Input::OwnerSeeding(false));
    model.take(500, outs);
    model.run(&mut bed, 500, 1500);
    assert!(model.asked_since(OWNER, 0).is_empty());
}

#[test]
fn several_neighbours_are_asked_rarest_first() {
    let mut bed = Bed::new(40, |c| c.sources = 2);
    bed.feed(
        0,
        Input::Neighbours(vec![
            (addr(9001), "127.0.0.1:9001".into()),
            (addr(9002), "127.0.0.1:9002".into()),
        ]),
    );
    bed.up(0, A, SourceKind::Ring, 9001);
    bed.up(0, B, SourceKind::Ring, 9002);
    // Both hold 0 to 19; only B holds 20 to 39. B is asked for what
    // only it holds, A for the rest.
    let low = bed.set(0..20);
    let outs = bed.feed(
        0,
        Input::Offered {
            src: A,
            chunks: low,
        },
    );
    assert_eq!(asked(&outs, A), [0, 1, 2, 3]);
    let all = bed.set(0..40);
    let outs = bed.feed(
        0,
        Input::Offered {
            src: B,
            chunks: all,
        },
    );
    assert_eq!(asked(&outs, B), [20, 21, 22, 23]);
}

#[test]
fn a_slow_neighbour_beside_a_fast_one_is_held_to_a_small_window() {
    let (mut bed, outs) = wired_with_neighbour(400, 2);
    bed.feed(
        0,
        Input::Neighbours(vec![
            (addr(9001), "127.0.0.1:9001".into()),
            (addr(9002), "127.0.0.1:9002".into()),
        ]),
    );
    // A delivers a chunk every 10 ms, B every 200 ms.
    let mut model = Model::new(&[(A, Some(10)), (B, Some(200))]);
    model.take(0, outs);
    model.take(0, bed.up(0, B, SourceKind::Ring, 9002));
    let all = bed.set(0..400);
    model.take(
        0,
        bed.feed(
            0,
            Input::Offered {
                src: B,
                chunks: all,
            },
        ),
    );
    // Once B's pace is measured (three gaps), it is failing and asked
    // only when fewer than two requests are out there.
    model.run(&mut bed, 0, 1500);
    let queued = |m: &Model| m.links.iter().find(|l| l.0 == B).unwrap().2.len();
    let before = model.asked_since(B, 0).len();
    for step in 15..60 {
        assert!(
            queued(&model) <= FAILING_WINDOW,
            "{} requests out at the slow neighbour at {step}00 ms",
            queued(&model)
        );
        model.run(&mut bed, step * 100, (step + 1) * 100);
    }
    // It still gets requests (so its pace is still measured), and
    // the fast one took the bulk; the owner was never called in.
    assert!(model.asked_since(B, 0).len() > before);
    assert!(bed.core.held().is_full(), "done within 6 s");
    assert_eq!(bed.core.from_ring(), 400 * 1024);
    let from_b = bed
        .core
        .by_source()
        .iter()
        .find(|(s, _)| *s == B)
        .unwrap()
        .1;
    assert!(from_b <= 40 * 1024, "B delivered {from_b} bytes");
    assert!(!model.any(|o| *o == Output::NeedOwner(true)));
}

/// A peer that holds the whole file once the output is ready, with
/// one neighbour and the owner connected.
fn verified(config: impl FnOnce(&mut CoreConfig)) -> (Bed, Vec<Output>) {
    let mut bed = Bed::new(4, config);
    bed.feed(
        0,
        Input::Neighbours(vec![(addr(9001), "127.0.0.1:9001".into())]),
    );
    bed.up(0, OWNER, SourceKind::Owner, 0);
    for raw in 0..4 {
        bed.stored(0, OWNER, raw);
    }
    bed.feed(0, Input::SeedDone { src: OWNER });
    bed.up(0, A, SourceKind::Ring, 9001);
    let outs = bed.feed(10, Input::Tick);
    assert!(
        !outs.contains(&Output::Finish),
        "not before the output is ready"
    );
    let outs = bed.feed(20, Input::OutputReady);
    assert!(outs.contains(&Output::Finish), "{outs:?}");
    let outs = bed.feed(30, Input::Verified(Ok(())));
    (bed, outs)
}

#[test]
fn a_verified_peer_tells_its_sources_and_leaves_when_released() {
    let (mut bed, outs) = verified(|_| {});
    assert!(outs.contains(&Output::TellComplete { src: A }), "{outs:?}");
    assert!(outs.contains(&Output::ToOwner {
        src: OWNER,
        msg: ToOwner::Complete
    }));
    // A downloader asks, another asks and reports complete: the first
    // still needs us for `--linger` after it last asked.
    let (d1, d2) = (DownloaderId(7), DownloaderId(8));
    bed.feed(100, Input::Downloader { conn: d1 });
    let asked_at = Some(bed.at(100));
    let activity = Input::DownloaderActivity {
        conn: d1,
        last_asked: asked_at,
        closed: false,
    };
    bed.feed(100, activity);
    bed.feed(200, Input::Downloader { conn: d2 });
    let outs = bed.feed(
        300,
        Input::DownloaderComplete {
            conn: d2,
            last_asked: Some(bed.at(300)),
        },
    );
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Leave(_))),
        "{outs:?}"
    );
    let outs = bed.feed(3000, Input::Tick);
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Leave(_))),
        "{outs:?}"
    );
    let outs = bed.feed(3100, Input::Tick);
    assert!(
        outs.contains(&Output::Leave(LeaveWhy::Released)),
        "{outs:?}"
    );
    assert_eq!(bed.core.next_deadline(), None);
    assert!(bed.feed(3200, Input::Tick).is_empty(), "left is left");
}

#[test]
fn a_verified_peer_no_one_downloads_from_leaves_after_linger() {
    let (mut bed, _) = verified(|_| {});
    let outs = bed.feed(3020, Input::Tick);
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Leave(_))),
        "{outs:?}"
    );
    let outs = bed.feed(3030, Input::Tick);
    assert!(
        outs.contains(&Output::Leave(LeaveWhy::Lingered)),
        "{outs:?}"
    );
}

#[test]
fn a_complete_swarm_lets_the_peer_leave_at_once_but_not_with_follow() {
    let (mut bed, _) = verified(|_| {});
    let outs = bed.feed(40, Input::SwarmComplete);
    assert!(outs.contains(&Output::Leave(LeaveWhy::SwarmComplete)));
    let (mut bed, _) = verified(|c| c.follow = true);
    let mut outs = bed.feed(40, Input::SwarmComplete);
    outs.extend(bed.feed(60_000, Input::Tick));
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Leave(_))),
        "{outs:?}"
    );
}

#[test]
fn a_whole_file_mismatch_fetches_the_dropped_chunks_again() {
    let mut bed = Bed::new(4, |_| {});
    bed.feed(
        0,
        Input::Neighbours(vec![(addr(9001), "127.0.0.1:9001".into())]),
    );
    bed.up(0, A, SourceKind::Ring, 9001);
    let all = bed.set(0..4);
    bed.feed(
        0,
        Input::Offered {
            src: A,
            chunks: all,
        },
    );
    bed.feed(0, Input::OutputReady);
    for raw in 0..3 {
        assert!(!bed.stored(10, A, raw).contains(&Output::Finish));
    }
    assert!(bed.stored(10, A, 3).contains(&Output::Finish));
    let dropped = vec![bed.id(2)];
    let outs = bed.feed(20, Input::Verified(Err(dropped)));
    assert_eq!(asked(&outs, A), [2]);
    assert!(bed.stored(30, A, 2).contains(&Output::Finish));
}

#[test]
fn a_neighbour_that_sends_corrupt_chunks_is_dropped_and_shunned() {
    let (mut bed, _) = wired_with_neighbour(40, 1);
    let id = bed.id(0);
    let corrupt = || Input::Received {
        src: A,
        id,
        put: Put::Corrupt,
        bytes: 1024,
    };
    bed.feed(10, corrupt());
    bed.feed(20, corrupt());
    let outs = bed.feed(30, corrupt());
    assert!(outs.contains(&Output::Close {
        src: A,
        why: CloseWhy::Corrupt
    }));
    assert!(outs.contains(&Output::Shun {
        addr: addr(9001),
        wait: Duration::from_secs(6)
    }));
    // The only neighbour: the owner stands in at once.
    assert!(outs.contains(&Output::NeedOwner(true)), "{outs:?}");
    assert!(!asked(&outs, OWNER).is_empty());
}

#[test]
fn a_peer_alone_in_the_ring_fetches_from_the_owner_after_a_grace() {
    let mut bed = Bed::new(40, |_| {});
    bed.up(0, OWNER, SourceKind::Owner, 0);
    bed.stored(0, OWNER, 0);
    bed.feed(0, Input::SeedDone { src: OWNER });
    let outs = bed.feed(900, Input::Tick);
    assert!(asked(&outs, OWNER).is_empty(), "within the grace: {outs:?}");
    let outs = bed.feed(1000, Input::Tick);
    assert!(outs.contains(&Output::Note(Note::Stalled(Stall::Alone))));
    assert_eq!(asked(&outs, OWNER), [39, 38, 37, 36]);
    // A neighbour assigned: the owner steps back (its requests out
    // stay), and the new neighbour gets a fair start.
    let outs = bed.feed(
        1100,
        Input::Neighbours(vec![(addr(9001), "127.0.0.1:9001".into())]),
    );
    assert!(outs.contains(&Output::SetTargets(vec![addr(9001)])));
    assert!(outs.contains(&Output::NeedOwner(false)), "{outs:?}");
}

#[test]
fn a_new_neighbour_replaces_the_old_connection_and_only_it_is_reported() {
    let (mut bed, _) = wired_with_neighbour(40, 1);
    let outs = bed.feed(
        100,
        Input::Neighbours(vec![(addr(9002), "host-b:9002".into())]),
    );
    assert!(outs.contains(&Output::SetTargets(vec![addr(9002)])));
    assert!(outs.contains(&Output::Close {
        src: A,
        why: CloseWhy::NotATarget
    }));
    // A dialer still connecting to the old neighbour is closed too.
    let outs = bed.up(110, SourceId(9), SourceKind::Ring, 9001);
    assert_eq!(
        outs,
        [Output::Close {
            src: SourceId(9),
            why: CloseWhy::NotATarget
        }]
    );
    // Only the neighbour assigned now is reported unreachable, as the
    // owner named it.
    assert!(bed.feed(120, Input::Unreachable(addr(9001))).is_empty());
    let outs = bed.feed(130, Input::Unreachable(addr(9002)));
    assert_eq!(
        outs,
        [Output::ToOwner {
            src: OWNER,
            msg: ToOwner::Unreachable("host-b:9002".into())
        }]
    );
}

#[test]
fn a_quiet_core_allocates_no_notes_and_wants_a_tick_within_100_ms() {
    let (mut bed, _) = wired_with_neighbour(40, 1);
    bed.core.cfg.notes = false;
    let outs = bed.feed(2000, Input::Tick);
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Note(_))),
        "{outs:?}"
    );
    assert_eq!(bed.core.next_deadline(), Some(bed.at(2100)));
}
