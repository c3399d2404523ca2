//! End-to-end runs of the real binary: an owner and a ring of peers on
//! loopback, checked by comparing every copy with the input byte for
//! byte.

mod common;

use std::fs;

use common::{Ring, chunk_files, wait_until};

const CHUNK: usize = 102_400;

#[test]
fn five_peers_share_a_multi_mib_file() {
    let mut ring = Ring::new("five", 5, 6 * 1024 * 1024 + 777);
    ring.start_owner(&[]);
    for i in 0..5 {
        ring.start_peer(i);
    }
    ring.expect_all_identical();
    // Every peer got a share from the owner and the rest from the ring.
    for i in 0..5 {
        let log = ring.peer(i).log_text();
        assert!(log.contains("MiB from the download neighbour"), "peer{i}");
        let want = format!("verified sha256 {}", sha256_hex(&ring.data));
        assert!(log.contains(&want), "peer{i} did not print {want}");
        assert!(!log.contains("panicked"), "peer{i} panicked");
        // A healthy ring warns about nothing but a first connect that
        // came before the other side listened: no connection is cut, none
        // to the owner dropped and redialled.
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") && !l.contains("cannot connect: connection refused"))
            .collect();
        assert!(
            warnings.is_empty(),
            "peer{i} warned:\n{}",
            warnings.join("\n")
        );
        let summary = fs::read_to_string(ring.peer_dir(i).join("summary.txt")).unwrap();
        assert_eq!(summary.lines().count(), ring.data.len().div_ceil(CHUNK));
    }
}

#[test]
fn odd_file_sizes_arrive_intact() {
    for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1] {
        let mut ring = Ring::new(&format!("odd-{len}"), 5, len);
        // With a chunk or two, some peers get everything from the owner
        // and never download from their neighbour, so that neighbour is
        // released by --linger, not by their COMPLETE.
        ring.extra = vec!["--linger".into(), "1".into()];
        ring.start_owner(&[]);
        for i in 0..5 {
            ring.start_peer(i);
        }
        ring.expect_identical_copies();
        assert_eq!(
            chunk_files(&ring.peer_dir(0)),
            len.div_ceil(CHUNK),
            "len {len}"
        );
    }
}

#[test]
fn peers_started_before_the_owner_in_reverse_order() {
    let mut ring = Ring::new("reverse", 5, 3 * 1024 * 1024 + 5);
    for i in (0..5).rev() {
        ring.start_peer(i);
    }
    // Every peer is up and waiting for the owner before it starts.
    wait_until("peers retrying the owner", || {
        (0..5).all(|i| ring.peer(i).log_text().contains("listening on"))
    });
    ring.start_owner(&[]);
    ring.expect_all_identical();
}

#[test]
fn a_peer_killed_mid_run_resumes_from_its_directory() {
    // 40 chunks of 100 KiB; each of 5 peers is seeded 8.
    let mut ring = Ring::new("resume", 5, 40 * CHUNK - 3);
    ring.start_owner(&[]);
    // Peers 2 and 3 alone: peer 2 gets its 8 seeded chunks and peer 3's
    // 8, then stalls because peer 4 (peer 3's download neighbour) is not
    // up. That is mid-run, whatever the machine's speed.
    ring.start_peer(3);
    ring.start_peer(2);
    let peer2 = ring.peer_dir(2);
    wait_until("peer 2 to hold 16 chunks", || chunk_files(&peer2) >= 16);
    ring.peer(2).kill();
    let held = chunk_files(&peer2);
    assert!(
        (16..40).contains(&held),
        "peer 2 held {held} chunks when killed"
    );
    fs::rename(ring.peer(2).log.clone(), ring.dir.join("peer2-first.log")).unwrap();

    ring.start_peer(2);
    for i in [0, 1, 4] {
        ring.start_peer(i);
    }
    ring.expect_all_identical();
    let log = ring.peer(2).log_text();
    assert!(
        log.contains(&format!("{held} of 40 chunks verified on disk")),
        "the restarted peer did not resume from its {held} chunks"
    );
    // What it already held was not fetched again: the rest came over
    // the ring and from the owner, at most the 40 - held it lacked.
    let fetched = log.matches("received chunk ").count();
    assert!(
        fetched <= 40 - held,
        "refetched: {fetched} chunks received after restart"
    );
}

fn sha256_hex(data: &[u8]) -> String {
    swarm::manifest::to_hex(&swarm::manifest::sha256(data))
}
