//! Several sources per peer (`--sources K`, issue 11): a peer downloads
//! from up to K download neighbours at once, never asks two of them for
//! the same chunk, lets a source that does not answer lapse, drops one
//! that lies, and the owner wires each peer to its K ring predecessors.
//!
//! Every test ends by comparing copies with the input byte for byte, and
//! reads what moved from the peers' own lines: "received chunk N from Q"
//! for each chunk stored (a duplicate is logged otherwise, at debug), and
//! the closing "chunk bytes by source" line, which must account for every
//! byte of the file and agree with the chunk lines.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::sync::Arc;
use std::time::Duration;

use common::fake::{Answer, FakeNeighbour, Manner, Race, chunk_of, manifest_of};
use common::{Ring, chunk_files, freeze, wait_until};
use swarm::manifest::Manifest;

const CHUNK: usize = 102_400;

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Waits until the owner has split its file and written its manifest.
fn await_owner(ring: &Ring) {
    wait_until("the owner's manifest", || {
        ring.dir.join("owner/summary.txt").exists()
    });
}

/// The name a peer goes by in logs.
fn peer_name(port: u16) -> String {
    format!("peer {port}")
}

/// Starts peer `i` hand-wired to download from every port in `from`,
/// with the ring's `extra` flags.
fn start_peer_from(ring: &mut Ring, i: usize, from: &[u16]) {
    let saved = ring.extra.clone();
    for port in &from[1..] {
        ring.extra
            .extend(["--download-neighbor".to_string(), port.to_string()]);
    }
    ring.start_peer_to(i, from[0]);
    ring.extra = saved;
}

/// Fills peer `i`'s directory with the owner's manifest and every chunk
/// file, so the peer starts holding the whole file.
fn preload(ring: &Ring, i: usize) {
    let dir = ring.peer_dir(i);
    fs::create_dir_all(dir.join("chunks")).unwrap();
    fs::copy(ring.dir.join("owner/manifest"), dir.join("manifest")).unwrap();
    let m = manifest_of(&dir);
    for id in m.layout().ids() {
        let path = swarm::store::chunk_path(&dir, id);
        fs::write(path, chunk_of(&ring.data, m.layout(), id)).unwrap();
    }
}

/// The chunks peer `me` logged as stored, by source, in log order. Only
/// "received chunk N from Q" lines count: a copy that arrives when the
/// chunk is already held is logged as "was already held".
fn received_by_source(log: &str, me: &str) -> BTreeMap<String, Vec<u32>> {
    let tag = format!("{me}: received chunk ");
    let mut by = BTreeMap::<String, Vec<u32>>::new();
    for line in log.lines() {
        let Some(at) = line.find(&tag) else {
            continue;
        };
        let rest = &line[at + tag.len()..];
        let (id, who) = rest
            .split_once(" from ")
            .unwrap_or_else(|| panic!("odd chunk line: {line}"));
        by.entry(who.to_string()).or_default().push(
            id.parse()
                .unwrap_or_else(|_| panic!("odd chunk line: {line}")),
        );
    }
    by
}

/// Peer `i`'s chunk bytes by source, from its closing record, in the
/// order the sources first delivered.
fn bytes_by_source(ring: &Ring, i: usize) -> Vec<(String, u64)> {
    ring.record(i).sources
}

/// Bytes `who` delivered by the closing record; 0 if it is not named.
fn bytes_from(by: &[(String, u64)], who: &str) -> u64 {
    by.iter().find(|(w, _)| w == who).map_or(0, |(_, b)| *b)
}

/// The owner's seed shares (`--peers`) in the tests of one peer and its
/// neighbours: with 60 or fewer chunks, each share is one chunk (the
/// lowest not handed out yet), and peers that hold every chunk already
/// are seeded nothing.
const SHARES: u32 = 60;

/// Asserts the owner sent the peer no more than its one seed and the two
/// chunks the end game may ask of it (for chunks no neighbour connection
/// offered yet, the tail while the neighbours are still dialed), and was
/// never called in as a stand-in: a neighbour offering every chunk was
/// healthy throughout.
fn assert_owner_held_back(log: &str, by: &[(String, u64)]) {
    let owner = bytes_from(by, "the owner");
    assert!(
        owner <= 3 * CHUNK as u64,
        "the owner sent {owner} bytes: {by:?}"
    );
    assert!(
        !log.contains("fetching missing chunks from the owner"),
        "{log}"
    );
}

/// Checks what peer `me` logged against the file: every chunk stored
/// exactly once (so no chunk came from two sources), the closing
/// record's bytes by source (`by`) naming the same sources in the order they first delivered, with the
/// exact bytes of their chunks, adding up to the whole file. Returns the
/// chunks by source.
fn audit_sources(
    log: &str,
    me: &str,
    m: &Manifest,
    by: &[(String, u64)],
) -> BTreeMap<String, Vec<u32>> {
    let layout = m.layout();
    let got = received_by_source(log, me);
    let mut seen = vec![Vec::new(); layout.count() as usize];
    for (who, ids) in &got {
        for &id in ids {
            seen[id as usize].push(who.as_str());
        }
    }
    for (id, whos) in seen.iter().enumerate() {
        assert_eq!(whos.len(), 1, "{me}: chunk {id} was stored from {whos:?}");
    }
    let len_of = |ids: &[u32]| -> u64 {
        ids.iter()
            .map(|&id| layout.chunk_len(layout.chunk_id(id).unwrap()) as u64)
            .sum()
    };
    for (who, bytes) in by {
        let ids = got.get(who).map_or(&[][..], Vec::as_slice);
        assert_eq!(
            *bytes,
            len_of(ids),
            "{me}: the record gives {who} {bytes} bytes, but its {} \
             \"received chunk\" lines add up to {}",
            ids.len(),
            len_of(ids)
        );
    }
    assert_eq!(by.len(), got.len(), "{me}: {by:?} against {got:?}");
    // In the order they first delivered.
    let first = |who: &str| {
        let tag = format!("{me}: received chunk ");
        log.lines()
            .position(|l| l.contains(&tag) && l.ends_with(&format!(" from {who}")))
    };
    let order: Vec<Option<usize>> = by.iter().map(|(who, _)| first(who)).collect();
    assert!(order.is_sorted(), "{me}: {by:?} not in delivery order");
    let total: u64 = by.iter().map(|(_, b)| b).sum();
    assert_eq!(total, layout.file_len(), "{me}: {by:?}");
    got
}

/// Two real peers that hold the whole file serve a third with
/// `--sources 2 --download-neighbor A --download-neighbor B`: every chunk
/// is stored once, from one source (the two are never asked for the
/// same chunk), both deliver, and the closing record accounts
/// for every byte.
#[test]
fn two_sources_deliver_disjoint_chunks_and_the_peer_completes() {
    let mut ring = Ring::new("two-sources", 3, 60 * CHUNK - 11);
    ring.start_owner(&["--peers", &SHARES.to_string()]);
    await_owner(&ring);
    let m = manifest_of(&ring.dir.join("owner"));
    let [a, b, c] = [0, 1, 2].map(|i| ring.ports[i]);
    // A and B start with every chunk on disk and stay until a downloader
    // releases them; each names the other as its download neighbour.
    preload(&ring, 0);
    preload(&ring, 1);
    ring.extra = strings(&["--linger", "30"]);
    ring.start_peer_to(0, b);
    ring.start_peer_to(1, a);
    for i in 0..2 {
        wait_until(&format!("peer{i} to hold the file"), || ring.holds_copy(i));
    }
    ring.extra = strings(&["--linger", "1", "--sources", "2"]);
    start_peer_from(&mut ring, 2, &[a, b]);
    ring.expect_identical_copies();

    let log = ring.peer(2).log_text();
    let me = peer_name(c);
    assert!(
        log.contains(&format!(
            "{me}: listening on 127.0.0.1:{c}; owner 127.0.0.1:{}, download neighbours 127.0.0.1:{a}, 127.0.0.1:{b}",
            ring.owner_port
        )),
        "{log}"
    );
    let got = audit_sources(&log, &me, &m, &bytes_by_source(&ring, 2));
    let by = bytes_by_source(&ring, 2);
    eprintln!("two sources: {by:?}");
    for who in [peer_name(a), peer_name(b)] {
        assert!(bytes_from(&by, &who) > 0, "{who} delivered nothing: {by:?}");
    }
    for who in got.keys() {
        assert!(
            [peer_name(a), peer_name(b), "the owner".to_string()].contains(who),
            "chunks from {who}"
        );
    }
    assert_owner_held_back(&log, &by);
    // C's COMPLETE released both of its sources.
    for i in 0..2 {
        let log = ring.peer(i).log_text();
        assert!(
            log.contains(&format!("{me} reports it holds every chunk")),
            "peer{i}:\n{log}"
        );
        assert_eq!(ring.record(i).left, "released", "peer{i}");
    }
}

/// One peer with two fake download neighbours, each a name and how it
/// answers, over a file of `chunks` chunks. The second lists its chunks
/// only once the first has been asked for something, so the peer has
/// the first connected when the second misbehaves. Returns the ring (the
/// peer exited 0, its copy checked), the manifest and the fakes.
fn with_two_fakes(
    name: &str,
    chunks: usize,
    (a_name, how_a): (&'static str, Answer),
    (b_name, how_b): (&'static str, Answer),
) -> (Ring, Manifest, FakeNeighbour, FakeNeighbour) {
    let mut ring = Ring::new(name, 1, chunks * CHUNK - 5);
    ring.start_owner(&["--peers", &SHARES.to_string()]);
    await_owner(&ring);
    let m = manifest_of(&ring.dir.join("owner"));
    let data = Arc::new(ring.data.clone());
    // One that never answers sends KEEPALIVE each second, so the peer's
    // reads from it never time out and the stall must be found by the
    // clock; one that answers needs none.
    let manner = |name, how: &Answer, gate| Manner {
        name,
        keepalive: matches!(how, Answer::Never).then_some(Duration::from_secs(1)),
        gate,
        cut_on_complete: false,
    };
    let a_manner = manner(a_name, &how_a, None);
    let a = FakeNeighbour::start_as(m.clone(), Arc::clone(&data), how_a, a_manner);
    let b_manner = manner(b_name, &how_b, Some(Arc::clone(&a.requests)));
    let b = FakeNeighbour::start_as(m.clone(), data, how_b, b_manner);
    ring.extra = strings(&["--sources", "2", "--stall-timeout", "2", "--linger", "1"]);
    start_peer_from(&mut ring, 0, &[a.port, b.port]);
    ring.expect_identical_copies();
    (ring, m, a, b)
}

/// The seconds a peer reports for getting its verified copy.
/// The tests with fake neighbours run one at a time: each relies on a
/// pace (a fake's, against `--stall-timeout`), which four at once on two
/// cores did not always keep.
fn timed() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|p| p.into_inner())
}

fn completion_secs(log: &str) -> f64 {
    let at = log.find("complete in ").expect("the peer never completed");
    let rest = &log[at + "complete in ".len()..];
    rest[..rest.find(' ').unwrap()].parse().unwrap()
}

/// A neighbour that lists every chunk and then never answers holds its
/// requests only until `--stall-timeout` (2 s): they lapse, with a
/// warning naming it, and go to the other neighbour; the owner is not
/// called in, since one neighbour is healthy. The honest neighbour sends
/// a chunk every 60 ms, so it needs about 3.5 s for the file and the
/// silent one's first requests lapse before the honest one runs out of
/// other chunks and would take them over (the end game among
/// neighbours). At most one of those requests (chunk 0) can be answered
/// by the owner's single seed instead.
#[test]
fn a_source_that_stalls_is_abandoned_and_the_other_delivers() {
    let _one_at_a_time = timed();
    let gap = Duration::from_millis(60);
    let chunks = 60;
    let (mut ring, m, good, silent) = with_two_fakes(
        "stalling-source",
        chunks,
        ("honest", Answer::Paced(gap)),
        ("silent", Answer::Never),
    );
    let me = peer_name(ring.ports[0]);
    let log = ring.peer(0).log_text();
    assert!(
        silent.requests() > 0,
        "the silent neighbour was never asked"
    );
    assert!(good.requests() > 0, "the honest neighbour was never asked");
    let lapse = format!("{me}: silent did not deliver chunk ");
    let lapsed = log
        .lines()
        .find(|l| l.contains(&lapse))
        .unwrap_or_else(|| panic!("no {lapse:?} in:\n{log}"));
    assert!(
        lapsed.ends_with(" within 2 s; asking elsewhere"),
        "{lapsed}"
    );
    assert!(!log.contains("honest did not deliver"), "{log}");
    let got = audit_sources(&log, &me, &m, &bytes_by_source(&ring, 0));
    assert!(!got.contains_key("silent"), "{got:?}");
    // The chunk it named came from the honest neighbour instead.
    let id: u32 = lapsed[lapsed.find(&lapse).unwrap() + lapse.len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no chunk ID in {lapsed}"));
    assert!(got["honest"].contains(&id), "chunk {id}: {got:?}");
    let by = bytes_by_source(&ring, 0);
    eprintln!("stalling source: {by:?}");
    assert_eq!(bytes_from(&by, "silent"), 0, "{by:?}");
    assert_owner_held_back(&log, &by);
    // The honest neighbour's pace, plus a stall timeout for the lapse and
    // one more for everything else.
    let took = completion_secs(&log);
    let bound = gap.as_secs_f64() * chunks as f64 + 2.0 * 2.0;
    eprintln!("stalling source: complete in {took:.2} s (bound {bound:.2} s)");
    assert!(took <= bound, "complete in {took:.2} s, over {bound:.2} s");
}

/// A neighbour that lists every chunk and answers each request with the
/// right number of wrong bytes is disconnected on its third bad chunk
/// and delivers nothing; the honest neighbour brings the rest, and the
/// owner is not called in.
#[test]
fn a_source_that_lies_is_dropped_and_the_other_delivers() {
    let _one_at_a_time = timed();
    let (mut ring, m, good, liar) = with_two_fakes(
        "lying-source",
        40,
        ("honest", Answer::Paced(Duration::from_millis(20))),
        ("liar", Answer::Lies),
    );
    let me = peer_name(ring.ports[0]);
    let log = ring.peer(0).log_text();
    assert!(
        liar.requests() >= 3,
        "the liar was asked {}",
        liar.requests()
    );
    assert!(good.requests() > 0);
    let failed = log
        .lines()
        .filter(|l| {
            l.contains(&format!("{me}: chunk "))
                && l.contains(" from liar failed its SHA-256 check")
        })
        .count();
    assert!(failed >= 3, "{failed} SHA-256 failures logged:\n{log}");
    assert!(
        log.contains(" from liar failed its SHA-256 check; 3 bad chunks from it; disconnecting"),
        "{log}"
    );
    let got = audit_sources(&log, &me, &m, &bytes_by_source(&ring, 0));
    assert!(!got.contains_key("liar"), "{got:?}");
    let by = bytes_by_source(&ring, 0);
    eprintln!("lying source: {by:?}");
    assert_eq!(bytes_from(&by, "liar"), 0, "{by:?}");
    assert!(bytes_from(&by, "honest") > 0, "{by:?}");
    assert_owner_held_back(&log, &by);
}

/// The contrast to the test above: when every connected neighbour
/// fails, the ring is stalled and the owner is called in. Two neighbours
/// list every chunk and never answer; after `--stall-timeout` (2 s) the
/// peer says so naming both (as delivering nothing, or as letting a
/// request lapse: the two deadlines fall within milliseconds of each
/// other) and the owner brings the file.
#[test]
fn two_stalling_sources_call_in_the_owner() {
    let _one_at_a_time = timed();
    let (mut ring, m, a, b) = with_two_fakes(
        "two-stalling-sources",
        30,
        ("silent a", Answer::Never),
        ("silent b", Answer::Never),
    );
    let me = peer_name(ring.ports[0]);
    let log = ring.peer(0).log_text();
    assert!(a.requests() > 0 && b.requests() > 0, "{log}");
    let stalled = format!(
        "{me}: the download neighbours at 127.0.0.1:{}, 127.0.0.1:{} ",
        a.port, b.port
    );
    let line = log
        .lines()
        .find(|l| l.contains(&stalled))
        .unwrap_or_else(|| panic!("no {stalled:?} in:\n{log}"));
    let why = &line[line.find(&stalled).unwrap() + stalled.len()..];
    assert!(
        [
            "delivered nothing for 2 s; fetching missing chunks from the owner",
            "did not answer a request within 2 s; fetching missing chunks from the owner",
        ]
        .contains(&why),
        "{line}"
    );
    let got = audit_sources(&log, &me, &m, &bytes_by_source(&ring, 0));
    assert_eq!(got.keys().collect::<Vec<_>>(), ["the owner"], "{got:?}");
    let took = completion_secs(&log);
    eprintln!("two stalling sources: complete in {took:.2} s");
    assert!(took <= 3.0 * 2.0, "complete in {took:.2} s");
}

/// A chunk that both neighbours deliver at nearly the same moment is
/// counted once, for the one whose copy was stored. Both fakes answer
/// at once but hold back chunk 5 until the peer, that chunk the last it
/// lacks, has asked both for it (the end game takes it over from the
/// first); then one sends it and the other 5 ms later. The first copy
/// is stored, and its connection's thread then hashes the rest of the
/// file into the whole-file digest before it reports the chunk; the
/// second copy, arriving meanwhile, is a duplicate and reported first.
/// The closing record must still credit the first source and
/// add up to the file.
///
/// Fails (24 runs of 24 here) while the coordinator counts a chunk held
/// on its duplicate's report and finishes, by-source line and all,
/// before the stored copy's report is counted: the line comes out one
/// chunk short. (Seen once, too, in the first test above, whose end
/// game sends real duplicates.)
#[test]
fn a_chunk_both_sources_deliver_at_once_is_counted_for_the_one_stored() {
    let _one_at_a_time = timed();
    // A peer whose seeds are in before either fake is connected asks the
    // owner for a chunk or two meanwhile; if that takes chunk 5, there
    // is no race to run (seen 1 run in 10). Then it runs again.
    let mut attempt = 0;
    let (mut ring, m) = loop {
        attempt += 1;
        // Not one of the owner's seeds (chunks 0 to 3 of 200).
        let race = Arc::new(Race::new(5, 2));
        let (ring, m, _a, _b) = with_two_fakes(
            &format!("racing-sources-{attempt}"),
            200,
            ("runner a", Answer::Racing(Arc::clone(&race))),
            ("runner b", Answer::Racing(Arc::clone(&race))),
        );
        if race.asked() >= 2 {
            break (ring, m);
        }
        let owner_sent = ring.owner_log().contains("owner: sent chunk 5 to");
        assert!(
            owner_sent && attempt < 3,
            "no race was run in {attempt} attempts"
        );
    };
    let me = peer_name(ring.ports[0]);
    let log = ring.peer(0).log_text();
    let stored = format!("{me}: received chunk 5 from runner ");
    assert!(log.contains(&stored), "no {stored:?} in:\n{log}");
    eprintln!("racing sources: {:?}", bytes_by_source(&ring, 0));
    audit_sources(&log, &me, &m, &bytes_by_source(&ring, 0));
}

/// A ring of four wired by hand with chords: peer i downloads from peers
/// i+1 and i+2, each seeded a quarter. Every peer connects to both of its
/// neighbours, stores each chunk once, and gets an identical copy.
#[test]
fn hand_wiring_with_two_download_neighbors_works() {
    let n = 4;
    let mut ring = Ring::new("hand-wired-chords", n, 40 * CHUNK + 77);
    ring.start_owner(&["--peers", "4"]);
    await_owner(&ring);
    let m = manifest_of(&ring.dir.join("owner"));
    ring.extra = strings(&["--sources", "2", "--linger", "3", "--stall-timeout", "2"]);
    let ports = ring.ports.clone();
    for i in 0..n {
        start_peer_from(&mut ring, i, &[ports[(i + 1) % n], ports[(i + 2) % n]]);
    }
    ring.expect_identical_copies();
    let mut from_ring = Vec::new();
    for i in 0..n {
        let me = peer_name(ports[i]);
        let log = ring.peer(i).log_text();
        let neighbours = [ports[(i + 1) % n], ports[(i + 2) % n]];
        for port in neighbours {
            let up =
                format!("{me}: connected to download neighbour peer {port} at 127.0.0.1:{port}");
            assert!(log.contains(&up), "no {up:?} in:\n{log}");
        }
        let got = audit_sources(&log, &me, &m, &bytes_by_source(&ring, i));
        let allowed = neighbours.map(peer_name);
        for who in got.keys() {
            assert!(
                allowed.contains(who) || who == "the owner",
                "{me} stored chunks from {who}"
            );
        }
        let by = bytes_by_source(&ring, i);
        let ring_bytes: u64 = allowed.iter().map(|w| bytes_from(&by, w)).sum();
        assert!(ring_bytes > 0, "{me}: nothing from the ring: {by:?}");
        from_ring.push(format!("{me}: {by:?}"));
    }
    eprintln!("hand-wired chords:\n{}", from_ring.join("\n"));
}

/// Starts peers `0..n` wired by the owner, each once the one before it
/// has registered asking for two sources. The owner splices each
/// newcomer in after the first, so peer i ends up downloading from peers
/// i+1 and i+2.
fn start_in_order(ring: &mut Ring, n: usize) {
    ring.start_wired_in_order(n, "wired by the owner, 2 sources;");
}

/// The owner's exact line telling peer `i` of an `n`-ring its two ring
/// predecessors.
fn told_two(ring: &Ring, i: usize, n: usize) -> String {
    format!(
        "owner: told peer {} to download from {}, {}",
        ring.ports[i],
        ring.addr((i + 1) % n),
        ring.addr((i + 2) % n)
    )
}

/// Five peers with `--sources 2` and no `--download-neighbor`: the owner
/// tells each its two ring predecessors, each peer downloads from both,
/// and all five get identical copies.
#[test]
fn owner_wired_sources_two() {
    let n = 5;
    let mut ring = Ring::new("wired-sources-two", n, 40 * CHUNK + 5);
    ring.extra = strings(&["--sources", "2", "--linger", "3", "--stall-timeout", "2"]);
    ring.start_owner(&[]);
    await_owner(&ring);
    let m = manifest_of(&ring.dir.join("owner"));
    start_in_order(&mut ring, n);
    ring.expect_identical_copies();
    let owner = ring.owner_log();
    for i in 0..n {
        let told = told_two(&ring, i, n);
        assert!(
            owner.lines().any(|l| l.ends_with(&told)),
            "no {told:?} in:\n{owner}"
        );
        let me = peer_name(ring.ports[i]);
        let log = ring.peer(i).log_text();
        let assigned = format!(
            "{me}: the owner assigned download neighbours {}, {}",
            ring.addr((i + 1) % n),
            ring.addr((i + 2) % n)
        );
        assert!(log.contains(&assigned), "no {assigned:?} in:\n{log}");
        let got = audit_sources(&log, &me, &m, &bytes_by_source(&ring, i));
        eprintln!("{me}: {:?}", bytes_by_source(&ring, i));
        assert!(
            got.keys().any(|who| who != "the owner"),
            "{me} got nothing from the ring"
        );
    }
}

/// Six owner-wired peers with `--sources 2`; one hangs and is killed
/// (SIGKILL) mid-transfer. The owner declares it gone and re-wires the
/// peers that downloaded from it (those not complete by then) around
/// it, and the five others complete with identical copies.
#[test]
fn owner_wired_sources_two_survive_a_kill() {
    let n = 6;
    let victim = 2;
    let len: usize = 24 << 20;
    let count = len.div_ceil(CHUNK);
    let mut ring = Ring::new("wired-sources-kill", n, len);
    ring.extra = strings(&["--sources", "2", "--linger", "3", "--stall-timeout", "2"]);
    ring.start_owner(&[]);
    await_owner(&ring);
    start_in_order(&mut ring, n);
    let dir = ring.peer_dir(victim);
    wait_until("the victim to hold 10 chunks", || chunk_files(&dir) >= 10);
    freeze(ring.peer(victim).pid());
    let held = chunk_files(&dir);
    assert!(held < count, "the victim held all {count} chunks");
    ring.kill_peer(victim);
    let survivors: Vec<usize> = (0..n).filter(|&i| i != victim).collect();
    let done: Vec<usize> = survivors
        .iter()
        .copied()
        .filter(|&i| ring.holds_copy(i))
        .collect();
    // The peer that joined last was seeded nothing (`--peers 5`): it
    // needs the whole file from the ring.
    assert!(
        !done.contains(&(n - 1)),
        "the last peer was done before the kill: not mid-transfer"
    );
    let dead = ring.addr(victim);
    let gone = |l: &str| l.contains(&dead) && l.ends_with("it is gone");
    wait_until("the owner to find the victim gone", || {
        ring.owner_log().lines().any(gone)
    });
    ring.expect_identical_copies();

    let owner = ring.owner_log();
    let lines: Vec<&str> = owner.lines().collect();
    let at = lines.iter().position(|l| gone(l)).unwrap();
    let mut rewired = 0;
    for back in [1, 2] {
        // With `--sources 2` the two peers before the victim in join
        // order downloaded from it.
        let addr = ring.addr((victim + n - back) % n);
        let complete = format!("owner: {addr} is complete (");
        if lines[..at].iter().any(|l| l.contains(&complete)) {
            continue;
        }
        let tag = format!("owner: re-wired {addr}: it now downloads from ");
        let line = lines[at..]
            .iter()
            .find(|l| l.contains(&tag))
            .unwrap_or_else(|| panic!("no {tag:?} in:\n{owner}"));
        assert!(!line.contains(&dead), "{line}");
        rewired += 1;
    }
    // Nobody is told to download from the dead peer once it is gone.
    let told_dead = lines[at..]
        .iter()
        .find(|l| l.contains("owner: told ") && l.contains(&dead));
    assert!(told_dead.is_none(), "{told_dead:?}");
    eprintln!(
        "killed a peer holding {held} of {count} chunks; peers {done:?} were done by \
         then; {rewired} of its downloaders re-wired"
    );
}

/// A peer that names more download neighbours than its `--sources` is a
/// usage error, with two sources as with one (in tests/cli.rs).
#[test]
fn more_download_neighbors_than_sources_is_a_usage_error() {
    let out = common::run_swarm(&[
        "peer",
        "--owner",
        "1",
        "--port",
        "2",
        "--sources",
        "2",
        "--download-neighbor",
        "3",
        "--download-neighbor",
        "4",
        "--download-neighbor",
        "5",
    ]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "swarm: --download-neighbor is given 3 times, but --sources 2 takes at most 2\n"
    );
}
