//! End-to-end runs of the real binary: an owner and a ring of peers on
//! loopback, checked by comparing every copy with the input byte for
//! byte.

use crate::common;

use std::fs;

use common::{Ring, chunk_files, run_swarm, wait_until};

const CHUNK: usize = 102_400;

#[test]
fn five_peers_share_a_multi_mib_file() {
    let mut ring = Ring::new("five", 5, 6 * 1024 * 1024 + 777);
    ring.start_owner(&[]);
    // Peers 3 and 4 also re-hash their whole output (--verify-output);
    // the others take it as verified chunk by chunk, the default.
    for i in 0..5 {
        if i == 3 {
            ring.extra = vec!["--verify-output".into()];
        }
        ring.start_peer(i);
    }
    ring.expect_all_identical();
    // Every peer got a share from the owner and the rest from the ring,
    // and reports the input's SHA-256 (computed over its output by the two
    // with --verify-output, the manifest's for the others).
    for i in 0..5 {
        let record = ring.record(i);
        assert!(record.from_owner > 0, "peer{i}: {record:?}");
        assert!(record.from_ring > 0, "peer{i}: {record:?}");
        assert_eq!(
            record.from_owner + record.from_ring,
            ring.data.len() as u64,
            "peer{i}"
        );
        assert_eq!(record.sha256, sha256_hex(&ring.data), "peer{i}");
        let log = ring.peer(i).log_text();
        // The runtime's own wording for a panic on any thread.
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

/// A hand-wired ring of a one-byte file: the owner seeds the first peer
/// the one chunk, so no one downloads from that peer's upload neighbour,
/// which would wait out the default --linger (30 s) for a downloader
/// that never comes. The owner knows every registered peer is complete and says so
/// to all of them, wired or not.
#[test]
fn a_tiny_file_in_a_hand_wired_ring_is_released_by_the_owner() {
    let mut ring = Ring::new("tiny", 3, 1);
    ring.start_owner(&["--peers", "3"]);
    for i in 0..3 {
        ring.start_peer(i);
    }
    // Each leaves as its downloader or the owner releases it, none by
    // --linger; the one whose downloader was seeded by the owner is
    // released by the owner.
    ring.expect_all_identical();
    let by_owner = (0..3)
        .filter(|&i| ring.record(i).left == "swarm_complete")
        .count();
    assert!(by_owner >= 1, "no peer was released by the owner");
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
    let held_bytes: u64 = fs::read_dir(peer2.join("chunks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "chunk"))
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    fs::rename(ring.peer(2).log.clone(), ring.dir.join("peer2-first.log")).unwrap();

    ring.start_peer(2);
    for i in [0, 1, 4] {
        ring.start_peer(i);
    }
    ring.expect_all_identical();
    let record = ring.record(2);
    assert_eq!(
        record.reused, held_bytes,
        "the restarted peer did not resume from its {held} chunks"
    );
    // What it already held was not fetched again: the rest came over
    // the ring and from the owner, at most the bytes it lacked.
    let fetched = record.from_owner + record.from_ring;
    assert!(
        fetched <= ring.data.len() as u64 - held_bytes,
        "refetched: {fetched} bytes received after restart"
    );
}

/// An owner that cuts its file where the content says (`--chunking
/// content`): the chunks vary in length, the lengths travel in the
/// manifest, and three peers the owner wires finish with identical
/// copies; `swarm status` reads the same manifest.
#[test]
fn content_defined_chunks_reach_three_peers_intact() {
    // About 3 MiB in chunks of 1 to 16 KiB: several hundred chunks, whose
    // digests and lengths take more than one HASHES frame.
    let mut ring = Ring::new("content", 3, 3 * 1024 * 1024 + 11);
    ring.start_owner(&[
        "--chunking",
        "content",
        "--chunk-size",
        "4096",
        "--peers",
        "3",
    ]);
    ring.await_owner_log("owner: listening on");
    let owner_port = ring.owner_port.to_string();
    let status = run_swarm(&["status", "--owner", &owner_port, "--json"]);
    assert_eq!(
        status.code,
        Some(0),
        "swarm status failed: {}",
        status.stderr
    );
    for i in 0..3 {
        ring.start_wired_peer(i);
    }
    ring.expect_identical_copies();

    let text = fs::read_to_string(ring.dir.join("owner/manifest")).unwrap();
    assert!(
        text.contains("\nchunk-size 4096\nchunking fastcdc-2020 1024 4096 16384\nchunks "),
        "{}",
        &text[..300]
    );
    let count: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("chunks "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(count > 16384 / 36, "{count} chunks fit one HASHES frame");
    assert!(
        status.stdout.contains(&format!("\"chunks\":{count},")),
        "{}",
        status.stdout
    );
    let lens: std::collections::HashSet<&str> = text
        .lines()
        .skip(7)
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    assert!(
        lens.len() > 50,
        "only {} distinct chunk lengths",
        lens.len()
    );
    for i in 0..3 {
        let copy = fs::read_to_string(ring.peer_dir(i).join("manifest")).unwrap();
        assert!(copy == text, "peer{i} cached another manifest");
        assert_eq!(chunk_files(&ring.peer_dir(i)), count, "peer{i}");
        let log = ring.peer(i).log_text();
        assert!(!log.contains("panicked"), "peer{i} panicked");
    }
    assert!(ring.owner_log().contains(&format!(
        "chunks of {} bytes on average, content chunking of min/avg/max 1024/4096/16384)",
        ring.data.len() / count
    )));
}

fn sha256_hex(data: &[u8]) -> String {
    swarm::manifest::to_hex(&swarm::manifest::sha256(data))
}
