//! The owner as tracker: peers started without `--download-neighbor` are
//! wired into a ring in the order they register, routed around when one
//! dies, spliced in when they come late, and taken back when they restart;
//! `swarm status` lists them all. Every test ends by comparing the copies
//! with the input byte for byte. Wiring and deaths are read from the
//! owner's registry (`swarm status --json`); what it has no field for
//! (joins, seeds) from its log lines.

use crate::common;

use std::thread;
use std::time::Duration;

use common::{Finished, Ring, chunk_files, freeze, json_number, run_swarm, signal, wait_until};

const CHUNK: usize = 102_400;
const MIB: usize = 1024 * 1024;

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// `swarm status --owner PORT EXTRA...` against the ring's owner.
fn status(ring: &Ring, extra: &[&str]) -> Finished {
    let port = ring.owner_port.to_string();
    let mut args = vec!["status", "--owner", &port];
    args.extend_from_slice(extra);
    run_swarm(&args)
}

/// `swarm status --json`, which must succeed.
fn status_json(ring: &Ring) -> String {
    let out = status(ring, &["--json"]);
    assert_eq!(out.code, Some(0), "swarm status failed: {}", out.stderr);
    out.stdout
}

/// Starts peers `0..n` one at a time, each once the one before it has
/// registered. The owner splices each newcomer in right after the first
/// peer, so peer `i` downloads from peer `i + 1` and the last from peer
/// 0, as in the hand-wired ring of the design card.
fn start_in_order(ring: &mut Ring, n: usize) {
    ring.start_wired_in_order(n, "wired by the owner;");
}

/// Peer `i`'s row in `swarm status --json`, if the owner lists it.
fn status_row(ring: &Ring, i: usize) -> Option<String> {
    let json = status_json(ring);
    let at = json.find(&format!("{{\"addr\":\"{}\",", ring.addr(i)))?;
    let end = at + json[at..].find('}')?;
    Some(json[at..=end].to_string())
}

/// A string field of a `swarm status --json` row.
fn field(row: &str, name: &str) -> Option<String> {
    let head = format!("\"{name}\":\"");
    let at = row.find(&head)? + head.len();
    let len = row[at..].find('"')?;
    Some(row[at..at + len].to_string())
}

/// Peer `i`'s state in the owner's registry (`downloading`, `gone`, ...).
fn state(ring: &Ring, i: usize) -> Option<String> {
    field(&status_row(ring, i)?, "state")
}

/// Whom the owner has peer `i` download from, as `swarm status` says.
fn downloads_from(ring: &Ring, i: usize) -> Option<String> {
    field(&status_row(ring, i)?, "downloads_from")
}

/// Whether the owner's registry has peer `i` as gone (dead), however it
/// found out.
fn owner_saw_gone(ring: &Ring, i: usize) -> bool {
    state(ring, i).as_deref() == Some("gone")
}

/// Freezes peer `i` (SIGSTOP) once it holds at least `min` chunk files
/// and returns how many it holds, which must be fewer than `count`: the
/// peer is caught mid-transfer.
fn freeze_mid_transfer(ring: &mut Ring, i: usize, min: usize, count: usize) -> usize {
    let dir = ring.peer_dir(i);
    wait_until(&format!("peer {i} to hold {min} chunks"), || {
        chunk_files(&dir) >= min
    });
    freeze(ring.peer(i).pid());
    let held = chunk_files(&dir);
    assert!(
        held < count,
        "peer {i} held all {count} chunks before it was frozen"
    );
    held
}

/// Peer `addr`'s object in `swarm status --json` output.
fn row<'a>(json: &'a str, addr: &str) -> &'a str {
    let at = json
        .find(&format!("{{\"addr\":\"{addr}\","))
        .unwrap_or_else(|| panic!("{addr} is not listed in {json}"));
    &json[at..at + json[at..].find('}').unwrap() + 1]
}

/// The MiB a peer's closing line says came from the owner and from its
/// download neighbour.
fn sources(log: &str) -> (f64, f64) {
    let line = log
        .lines()
        .find(|l| l.contains(": complete in "))
        .unwrap_or_else(|| panic!("no closing line in:\n{log}"));
    let number_before = |tail: &str| -> f64 {
        let end = line.find(tail).unwrap();
        let start = line[..end].rfind(' ').unwrap() + 1;
        line[start..end].parse().unwrap()
    };
    (
        number_before(" MiB from the owner"),
        number_before(" MiB from the download neighbour"),
    )
}

#[test]
fn thirty_owner_wired_peers_all_get_identical_copies() {
    let n = 30;
    let mut ring = Ring::new("wired-30", n, 3 * MIB + 333);
    ring.extra = strings(&["--linger", "3"]);
    ring.start_owner(&[]);
    ring.await_owner_log("owner: listening on");
    for i in 0..n {
        ring.start_wired_peer(i);
    }
    // Asked while peers register, trade and leave, the owner answers.
    let early = status_json(&ring);
    assert!(early.contains("\"file\":\"input.bin\""), "{early}");
    ring.expect_identical_copies();

    let log = ring.owner_log();
    for i in 0..n {
        let joined = format!("owner: {} joined (wired by the owner;", ring.addr(i));
        assert_eq!(log.matches(&joined).count(), 1, "{joined}");
    }
    assert!(!log.contains("panicked"));
    // From the eighth on, the owner wires each (they left the number
    // to it) to several sources, and says so.
    let several = log
        .matches(" sources, the owner's default from 8 peers on)")
        .count();
    assert!(
        several >= n - 8,
        "{several} peers wired with several sources"
    );
    // The owner keeps peers that left in its registry: all 30 are listed,
    // each wired by the owner, none taken for dead.
    let json = status_json(&ring);
    for i in 0..n {
        let row = format!("{{\"addr\":\"{}\",", ring.addr(i));
        assert_eq!(json.matches(&row).count(), 1, "{row} in {json}");
    }
    assert_eq!(json.matches("\"addr\":").count(), n, "{json}");
    assert_eq!(json.matches("\"wired_by_owner\":true").count(), n);
    assert!(
        json.ends_with(
            "\"total\":{\"peers\":30,\"downloading\":0,\"complete\":0,\
             \"away\":0,\"gone\":0,\"left\":30}}\n"
        ),
        "{json}"
    );
    assert_eq!(json_number(&json, "file_bytes"), ring.data.len() as u64);
}

/// A peer that hangs and then dies mid-transfer is taken out of the ring:
/// the peer that downloaded from it is re-wired to the one before it, and
/// every other peer completes. `--stall-timeout 30` keeps the owner's
/// stand-in for a silent neighbour out of the picture.
#[test]
fn a_peer_killed_mid_transfer_is_routed_around() {
    let len = 40 * MIB;
    let count = len.div_ceil(CHUNK);
    let mut ring = Ring::new("routed-around", 6, len);
    ring.extra = strings(&["--stall-timeout", "30", "--linger", "5"]);
    ring.start_owner(&[]);
    start_in_order(&mut ring, 6);
    // Each newcomer went in after the first peer: peer i downloads from
    // peer i + 1, and the last from peer 0.
    for i in 0..6 {
        assert_eq!(
            downloads_from(&ring, i),
            Some(ring.addr((i + 1) % 6)),
            "peer {i}: {:?}",
            status_row(&ring, i)
        );
    }

    // 1. Peer 2 hangs (its upload neighbour, peer 1, stalls), then dies.
    let held = freeze_mid_transfer(&mut ring, 2, 10, count);
    thread::sleep(Duration::from_millis(500));
    ring.kill_peer(2);
    wait_until("the owner to find peer 2 gone", || owner_saw_gone(&ring, 2));

    // 2. Peer 1 now downloads from peer 3, and everyone else completes.
    let want = Some(ring.addr(3));
    wait_until("peer 1 re-wired to peer 3", || {
        downloads_from(&ring, 1) == want
    });
    ring.expect_identical_copies();

    // 3. What the owner sent in all, and to the dead peer.
    let json = status_json(&ring);
    let sent = json_number(&json, "owner_sent_bytes");
    let ratio = sent as f64 / len as f64;
    let to_dead = ring
        .owner_log()
        .lines()
        .filter(|l| {
            l.contains("owner: sent chunk ") && l.ends_with(&format!(" to peer {}", ring.ports[2]))
        })
        .count();
    let from_owner: Vec<String> = [0, 1, 3, 4, 5]
        .iter()
        .map(|&i| format!("{:.2}", sources(&ring.peer(i).log_text()).0))
        .collect();
    eprintln!(
        "routed-around: survivors got {} MiB from the owner",
        from_owner.join(", ")
    );
    eprintln!(
        "routed-around: owner sent {sent} bytes = {ratio:.3} x the file; \
         {to_dead} chunks ({:.3} x the file) to the dead peer, which held {held} of {count}",
        (to_dead * CHUNK) as f64 / len as f64
    );
    let dead = row(&json, &ring.addr(2));
    assert!(dead.contains("\"state\":\"gone\""), "{dead}");
    assert!(json.contains("\"gone\":1,\"left\":5}"), "{json}");
    assert!(
        ratio < MAX_OWNER_RATIO,
        "the owner sent {ratio:.3} x the file, over {MAX_OWNER_RATIO}"
    );
}

/// The bound on the owner's bytes, as a multiple of the file, with one of
/// six peers killed mid-transfer: the seeds (1.0), the dead peer's fifth
/// pushed again to the peer after it (0.2), and the tails the five seeded
/// peers fetch from the owner in the end game, which on a healthy ring of
/// six already come to 0.35 to 0.46 (five runs without a kill). With the
/// kill, 33 runs, some two at a time, gave 1.32 to 1.64 in all.
const MAX_OWNER_RATIO: f64 = 1.75;

/// A fourth peer that registers while the first three are mid-transfer
/// is spliced in after the first peer, and gets the file from the ring:
/// with `--peers 3` the owner seeds it nothing.
#[test]
fn a_late_joiner_is_spliced_in_and_downloads_from_the_ring() {
    let count = 60;
    let mut ring = Ring::new("late-joiner", 4, count * CHUNK - 9);
    ring.extra = strings(&["--stall-timeout", "30", "--linger", "5"]);
    ring.start_owner(&["--peers", "3"]);
    // Each of the first three is frozen once its seeds are in. Left
    // running, two of them finish the file between them (the owner
    // stands in for chunks no one in the ring offers) and leave before
    // the next one registers; a peer in a complete ring does not linger.
    for i in 0..3 {
        ring.start_wired_peer(i);
        wait_until(&format!("peer {i}'s seeds"), || {
            ring.peer(i)
                .log_text()
                .contains("the owner seeded 20 chunks")
        });
        freeze(ring.peer(i).pid());
    }
    ring.start_wired_peer(3);
    ring.await_owner_log(&format!(
        "owner: wired {} into the ring: it downloads from {}, and {} from it (4 in the ring)",
        ring.addr(3),
        ring.addr(0),
        ring.addr(2)
    ));
    ring.thaw();
    ring.expect_identical_copies();

    let log = ring.owner_log();
    let unseeded = format!("owner: seeding 0 chunks to peer {}", ring.ports[3]);
    assert!(log.contains(&unseeded), "no {unseeded:?} in:\n{log}");
    let (owner, neighbour) = sources(&ring.peer(3).log_text());
    eprintln!("late joiner: {owner:.2} MiB from the owner, {neighbour:.2} MiB from the ring");
    // Peer 0 held a third of the file when the newcomer was wired to it;
    // the closing line rounds to 0.01 MiB.
    assert!(
        neighbour >= (count / 3 * CHUNK) as f64 / MIB as f64 - 0.01,
        "the late joiner got only {neighbour:.2} MiB from its download neighbour"
    );
}

/// The table has a header, one line per peer (hand-wired ones marked)
/// and a total line; without an owner, `swarm status` fails with one line.
#[test]
fn status_lists_every_peer_and_fails_with_one_line_without_an_owner() {
    let mut ring = Ring::new("status", 5, 20 * CHUNK + 1);
    // Seeds go to the first five to register, across both rings, so
    // each ring lacks chunks and waits out a stall before the owner
    // stands in: one second, not the default ten.
    ring.extra = strings(&["--linger", "3", "--stall-timeout", "1"]);
    ring.start_owner(&[]);
    // Three peers the owner wires, and a hand-wired pair that downloads
    // from each other.
    for i in 0..3 {
        ring.start_wired_peer(i);
    }
    ring.start_peer_to(3, ring.ports[4]);
    ring.start_peer_to(4, ring.ports[3]);
    ring.expect_identical_copies();

    let out = status(&ring, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stderr, "");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1 + 5 + 1, "{}", out.stdout);
    assert!(lines[0].starts_with("PEER "), "{}", lines[0]);
    for i in 0..5 {
        let mine: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with(&format!("{} ", ring.addr(i))))
            .collect();
        assert_eq!(mine.len(), 1, "peer {i} in:\n{}", out.stdout);
        let want = if i < 3 { "left" } else { "left (hand-wired)" };
        assert!(mine[0].ends_with(&format!("  {want}")), "{}", mine[0]);
        assert!(mine[0].contains(" 21/21 "), "{}", mine[0]);
    }
    assert!(
        lines[6].starts_with("total: 5 peers: 0 downloading, 0 complete, 0 away, 0 gone, 5 left; "),
        "{}",
        lines[6]
    );

    // The owner stops; nothing listens on its port any more.
    ring.owner.as_mut().unwrap().kill();
    let out = status(&ring, &[]);
    assert_eq!(out.code, Some(1));
    assert_eq!(out.stdout, "");
    let want = format!(
        "swarm: cannot connect to the owner at 127.0.0.1:{}: connection refused\n",
        ring.owner_port
    );
    assert_eq!(out.stderr, want);
}

/// A peer killed mid-transfer and started again with the same port and
/// directory, after the owner declared it gone, rejoins the ring with the
/// chunks it kept and completes.
#[test]
fn a_peer_restarted_after_it_was_declared_gone_rejoins() {
    let len = 24 * MIB;
    let count = len.div_ceil(CHUNK);
    let mut ring = Ring::new("rejoin", 4, len);
    ring.extra = strings(&["--stall-timeout", "30", "--linger", "5"]);
    ring.start_owner(&[]);
    start_in_order(&mut ring, 4);
    let held = freeze_mid_transfer(&mut ring, 1, 10, count);
    ring.kill_peer(1);
    wait_until("the owner to find peer 1 gone", || owner_saw_gone(&ring, 1));

    ring.start_wired_peer(1);
    ring.await_owner_log(&format!(
        "owner: {} rejoined ({held} of {count} chunks)",
        ring.addr(1)
    ));
    ring.expect_identical_copies();
    let log = ring.peer(1).log_text();
    assert!(
        log.contains(&format!("{held} of {count} chunks verified on disk")),
        "{log}"
    );
    // Back in the ring, it is no longer counted as gone.
    let json = status_json(&ring);
    assert!(json.contains("\"gone\":0,\"left\":4}"), "{json}");
}

/// A peer restarted within the owner's 3 s grace keeps its place: its
/// upload neighbour, frozen meanwhile, cannot report it unreachable, so
/// the owner sees a reconnect rather than a death.
#[test]
fn a_peer_restarted_within_the_grace_keeps_its_place() {
    let len = 24 * MIB;
    let count = len.div_ceil(CHUNK);
    let mut ring = Ring::new("reconnect", 4, len);
    ring.extra = strings(&["--stall-timeout", "30", "--linger", "5"]);
    ring.start_owner(&[]);
    start_in_order(&mut ring, 4);
    let held = freeze_mid_transfer(&mut ring, 1, 10, count);
    freeze(ring.peer(0).pid());
    ring.kill_peer(1);
    ring.start_wired_peer(1);
    ring.await_owner_log(&format!(
        "owner: {} reconnected ({held} of {count} chunks)",
        ring.addr(1)
    ));
    signal(ring.peer(0).pid(), "CONT");
    ring.expect_identical_copies();
    // Listed, and never taken for dead.
    assert!(status_row(&ring, 1).is_some(), "{}", status_json(&ring));
    assert!(!owner_saw_gone(&ring, 1), "{}", status_json(&ring));
    let json = status_json(&ring);
    assert!(json.contains("\"gone\":0,\"left\":4}"), "{json}");
}

/// A peer past `--max-peers` is refused with the reason and stops at
/// once (retrying cannot help); the peers already in are not disturbed.
#[test]
fn a_peer_past_max_peers_is_refused_and_stops() {
    let mut ring = Ring::new("full", 3, 30 * CHUNK);
    ring.extra = strings(&["--linger", "5"]);
    ring.start_owner(&["--max-peers", "2"]);
    // Two peers register and are held still, links up, so the swarm
    // stays full while the third knocks.
    for i in 0..2 {
        ring.start_wired_peer(i);
        ring.await_owner_log(&format!(
            "owner: {} joined (wired by the owner;",
            ring.addr(i)
        ));
        freeze(ring.peer(i).pid());
    }
    ring.start_wired_peer(2);
    let status = ring
        .peer(2)
        .wait_for(common::patience())
        .expect("the third peer did not give up");
    assert_eq!(status.code(), Some(1));
    let log = ring.peer(2).log_text();
    let want = format!(
        "swarm: owner at 127.0.0.1:{}: refused: the swarm is full: \
         this owner takes at most 2 peers (--max-peers)",
        ring.owner_port
    );
    assert_eq!(log.lines().last(), Some(want.as_str()), "{log}");
    for i in 0..2 {
        signal(ring.peer(i).pid(), "CONT");
    }
    for i in 0..2 {
        let status = ring.peer(i).wait_for(common::patience());
        assert_eq!(status.and_then(|s| s.code()), Some(0));
    }
}
