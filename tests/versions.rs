//! New versions of a file: an owner that follows its file, and peers that
//! take each version up fetching only the chunks they do not hold.

use crate::common;

use std::fs;
use std::path::Path;
use std::thread;
use std::time::Duration;

use common::{Ring, audit_chunks, wait_until};
use swarm::manifest::{Chunking, Manifest};

const CHUNK: usize = 102_400;

/// The first 8 hex digits of the file ID `path` has now, as logs name a
/// version.
fn short_id(path: &Path) -> String {
    manifest_of(path, CHUNK as u32, Chunking::Fixed).1
}

/// The manifest `path` has now and its short ID.
fn manifest_of(path: &Path, chunk_size: u32, chunking: Chunking) -> (Manifest, String) {
    let m = swarm::store::index(path, chunk_size, chunking).unwrap();
    let id = swarm::peer::short_id(&m.id());
    (m, id)
}

/// What a peer's log says it took to get version `id`: chunk bytes from
/// the owner, from the ring, reused from its directory, and every byte it
/// received from the network since the version before was verified.
#[derive(Debug, PartialEq, Eq)]
struct Took {
    owner: u64,
    ring: u64,
    reused: u64,
    received: u64,
}

fn took(log: &str, id: &str) -> Option<Took> {
    let head = format!("version {id} in ");
    let line = log.lines().find(|l| l.contains(&head))?;
    let rest = &line[line.find("chunk bytes ")? + "chunk bytes ".len()..];
    let numbers: Vec<u64> = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    match numbers[..] {
        [owner, ring, reused, received] => Some(Took {
            owner,
            ring,
            reused,
            received,
        }),
        _ => panic!("unexpected line {line:?}"),
    }
}

/// Rewrites chunks `ids` of `data` in place with other bytes and writes
/// the file.
fn rewrite_chunks(path: &Path, data: &mut [u8], ids: &[usize], seed: u64) {
    for (n, &id) in ids.iter().enumerate() {
        let end = ((id + 1) * CHUNK).min(data.len());
        let fresh = common::random_bytes(end - id * CHUNK, seed + n as u64);
        data[id * CHUNK..end].copy_from_slice(&fresh);
    }
    fs::write(path, &*data).unwrap();
}

fn wait_for_version(ring: &mut Ring, i: usize, id: &str) -> Took {
    let mut found = None;
    wait_until(&format!("peer{i} to verify version {id}"), || {
        found = took(&ring.peer(i).log_text(), id);
        found.is_some()
    });
    found.unwrap()
}

/// An owner and `n` peers started with `--follow`, every peer holding
/// the first version, verified.
fn following_ring(name: &str, n: usize, len: usize, owner_args: &[&str]) -> Ring {
    let mut ring = Ring::new(name, n, len);
    ring.extra = vec!["--follow".into()];
    let peers = n.to_string();
    let mut args = vec!["--peers", peers.as_str()];
    args.extend_from_slice(owner_args);
    ring.start_owner(&args);
    for i in 0..n {
        ring.start_wired_peer(i);
    }
    let chunking = if owner_args.contains(&"content") {
        Chunking::Content
    } else {
        Chunking::Fixed
    };
    let size = owner_args
        .iter()
        .position(|&a| a == "--chunk-size")
        .map_or(CHUNK as u32, |i| owner_args[i + 1].parse().unwrap());
    let v1 = manifest_of(&ring.file, size, chunking).1;
    for i in 0..n {
        let first = wait_for_version(&mut ring, i, &v1);
        assert_eq!(first.reused, 0, "peer{i}");
        assert_eq!(first.owner + first.ring, len as u64, "peer{i}");
    }
    ring
}

#[test]
fn a_running_ring_takes_up_a_changed_file_fetching_only_changed_chunks() {
    let len = 60 * CHUNK + 123;
    let mut ring = following_ring("follow", 3, len, &[]);

    let changed = [5, 30, 60];
    let mut data = ring.data.clone();
    rewrite_chunks(&ring.file, &mut data, &changed, 77);
    let v2 = short_id(&ring.file);
    let changed_bytes = (2 * CHUNK + 123) as u64;
    for i in 0..3 {
        let second = wait_for_version(&mut ring, i, &v2);
        assert_eq!(
            second.owner + second.ring,
            changed_bytes,
            "peer{i} fetched exactly the changed chunks: {second:?}"
        );
        assert_eq!(second.reused, len as u64 - changed_bytes, "peer{i}");
        // The changed chunks, the manifest (61 digests) and the protocol,
        // and a chunk the end game may have had from two sources at once.
        assert!(
            second.received < changed_bytes + CHUNK as u64 + 16 * 1024,
            "peer{i} received {} bytes",
            second.received
        );
        let copy = fs::read(ring.peer_dir(i).join("input.bin")).unwrap();
        assert!(copy == data, "peer{i}: copy is not the new version");
        assert_eq!(audit_chunks(&ring.peer_dir(i)), (61, 0), "peer{i}");
    }
    let owner = ring.owner_log();
    assert!(
        owner.contains(&format!(
            "owner: version 2: file ID {v2}, 61 chunks; 58 of its 61 chunks were in the version before"
        )),
        "{owner}"
    );
    assert!(owner.contains("owner: now sharing version 2; told "));
    // The owner took its own chunk files over and wrote only the changed.
    ring.await_owner_log("(reused 58 unchanged chunk files)");
}

#[test]
fn a_peer_restarted_on_an_old_dir_catches_up_to_the_newest_version() {
    let len = 40 * CHUNK;
    let mut ring = Ring::new("catch-up", 2, len);
    ring.start_owner(&["--peers", "2"]);
    for i in 0..2 {
        ring.start_wired_peer(i);
    }
    ring.expect_identical_copies();
    ring.kill_peer(0);
    ring.kill_peer(1);

    // Two versions go by while the peer is away; it takes the newest.
    let mut data = ring.data.clone();
    rewrite_chunks(&ring.file, &mut data, &[3], 5);
    ring.await_owner_log("owner: now sharing version 2");
    rewrite_chunks(&ring.file, &mut data, &[20, 39], 6);
    ring.await_owner_log("owner: now sharing version 3");
    let v3 = short_id(&ring.file);

    ring.start_wired_peer(0);
    let got = wait_for_version(&mut ring, 0, &v3);
    let log = ring.peer(0).log_text();
    assert!(
        log.contains("resuming from peer0: 40 of 40 chunks verified on disk"),
        "{log}"
    );
    assert_eq!(got.owner + got.ring, 3 * CHUNK as u64, "{got:?}");
    assert_eq!(got.reused, 37 * CHUNK as u64);
    assert!(fs::read(ring.peer_dir(0).join("input.bin")).unwrap() == data);
    ring.peer(0).expect_success();
}

#[test]
fn a_file_that_changes_during_indexing_ends_on_its_newest_version() {
    // Large enough that indexing takes a while, so a change lands in it.
    let mut ring = following_ring("settle", 2, 640 * CHUNK, &[]);
    let mut data = ring.data.clone();
    rewrite_chunks(&ring.file, &mut data, &[1], 10);
    ring.await_owner_log("changed; indexing it again");
    // At once, while that indexing reads the file: three more changes.
    for (n, id) in [100, 300, 500].into_iter().enumerate() {
        rewrite_chunks(&ring.file, &mut data, &[id], 20 + n as u64);
        thread::sleep(Duration::from_millis(150));
    }
    let newest = short_id(&ring.file);
    for i in 0..2 {
        wait_for_version(&mut ring, i, &newest);
        let copy = fs::read(ring.peer_dir(i).join("input.bin")).unwrap();
        assert!(copy == data, "peer{i} did not end on the newest version");
    }
    let owner = ring.owner_log();
    eprintln!(
        "a change landed during indexing: {}",
        owner.contains("changed again while being indexed")
    );
    // Intermediate versions may have been shared, but the last is the
    // newest file, and nothing after it.
    let last = owner.lines().rfind(|l| l.contains(": file ID ")).unwrap();
    assert!(last.contains(&format!("file ID {newest}")), "{owner}");
}

#[test]
fn a_peer_killed_during_a_version_switch_resumes_keeping_nothing_unverified() {
    let mut ring = following_ring("switch-kill", 3, 200 * CHUNK, &[]);
    let old = ring.data.clone();
    let mut data = ring.data.clone();
    let changed: Vec<usize> = (0..200).step_by(4).collect();
    rewrite_chunks(&ring.file, &mut data, &changed, 40);
    let v2 = short_id(&ring.file);
    wait_until("peer0 to hear of the new version", || {
        ring.peer(0)
            .log_text()
            .contains("the owner announced version")
    });
    ring.kill_peer(0);
    // The output is the old version, whole, or the new one, whole.
    let out = fs::read(ring.peer_dir(0).join("input.bin")).unwrap();
    assert!(
        out == old || out == data,
        "a partial output under the final name"
    );

    ring.start_wired_peer(0);
    let got = wait_for_version(&mut ring, 0, &v2);
    assert!(got.owner + got.ring <= (50 * CHUNK) as u64, "{got:?}");
    assert!(fs::read(ring.peer_dir(0).join("input.bin")).unwrap() == data);
    assert_eq!(audit_chunks(&ring.peer_dir(0)), (200, 0));
    assert!(!ring.peer_dir(0).join("chunks/.reuse").exists());
}

#[test]
fn content_chunking_moves_only_the_chunks_around_an_insertion() {
    let len = 2 << 20;
    let mut ring = Ring::new("insert", 3, len);
    ring.extra = vec!["--follow".into()];
    let args = [
        "--peers",
        "3",
        "--chunking",
        "content",
        "--chunk-size",
        "4096",
    ];
    ring.start_owner(&args);
    for i in 0..3 {
        ring.start_wired_peer(i);
    }
    let (m1, v1) = manifest_of(&ring.file, 4096, Chunking::Content);
    for i in 0..3 {
        wait_for_version(&mut ring, i, &v1);
    }
    // 1000 bytes inserted at 10 %, the file replaced in one rename.
    let at = len / 10;
    let mut data = ring.data[..at].to_vec();
    data.extend(common::random_bytes(1000, 3));
    data.extend_from_slice(&ring.data[at..]);
    let next = ring.dir.join("next.bin");
    fs::write(&next, &data).unwrap();
    fs::rename(&next, &ring.file).unwrap();
    let (m2, v2) = manifest_of(&ring.file, 4096, Chunking::Content);
    // The chunks of the new version that the old one does not have.
    let old: std::collections::HashSet<_> = m1.chunk_hashes().iter().collect();
    let layout = m2.layout();
    let new: Vec<_> = layout
        .ids()
        .filter(|&id| !old.contains(m2.chunk_hash(id)))
        .collect();
    let new_bytes: u64 = new.iter().map(|&id| layout.chunk_len(id) as u64).sum();
    assert!(
        (1..=3).contains(&new.len()),
        "{} of {} chunks changed",
        new.len(),
        layout.count()
    );
    for i in 0..3 {
        let got = wait_for_version(&mut ring, i, &v2);
        assert_eq!(got.owner + got.ring, new_bytes, "peer{i}: {got:?}");
        assert_eq!(got.reused, data.len() as u64 - new_bytes, "peer{i}");
        let copy = fs::read(ring.peer_dir(i).join("input.bin")).unwrap();
        assert!(copy == data, "peer{i}: copy is not the new version");
    }
    let shared = layout.count() as usize - new.len();
    ring.await_owner_log(&format!(
        "{shared} of its {} chunks were in the version before",
        layout.count()
    ));
}

#[test]
fn with_once_a_changed_file_stops_the_owner_naming_the_chunk() {
    let mut ring = Ring::new("once", 1, 20 * CHUNK);
    ring.start_owner(&["--once"]);
    ring.await_owner_log("owner: wrote 20 of 20 chunk files");
    // Touched, same bytes: no change.
    fs::write(&ring.file, &ring.data).unwrap();
    ring.await_owner_log("changed; checking its bytes");
    ring.await_owner_log(" is unchanged");
    let owner = ring.owner.as_mut().unwrap();
    assert!(
        owner.wait_for(Duration::ZERO).is_none(),
        "the owner stopped"
    );
    let mut data = ring.data.clone();
    rewrite_chunks(&ring.file, &mut data, &[7, 12], 1);
    let status = owner
        .wait_for(common::patience())
        .expect("the owner did not stop");
    assert_eq!(status.code(), Some(1));
    let log = owner.log_text();
    let want = format!(
        "swarm: integrity check failed: {} changed while being shared (chunk 7 no longer \
         matches its digest); restart the owner to share the new version",
        ring.file.display()
    );
    assert_eq!(log.lines().last(), Some(want.as_str()), "{log}");
}

/// An XFS file system in an image file, mounted on a loop device.
struct Xfs {
    path: std::path::PathBuf,
}

impl Xfs {
    /// Mounts a fresh 320 MiB XFS image with reflinks at `path`, or
    /// `None` where that cannot be done (not root, no mkfs.xfs).
    fn mount(image: &Path, path: &Path) -> Option<Xfs> {
        use std::process::{Command, Stdio};
        let run = |cmd: &mut Command| {
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        fs::File::create(image).ok()?.set_len(320 << 20).ok()?;
        fs::create_dir_all(path).ok()?;
        let made = run(Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(image));
        let mounted = made
            && run(Command::new("mount")
                .arg("-o")
                .arg("loop")
                .arg(image)
                .arg(path));
        mounted.then(|| Xfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let done = std::process::Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !done {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.path)
                .status();
        }
    }
}

#[test]
fn on_a_file_system_with_reflinks_a_new_output_starts_as_a_clone_of_the_old() {
    let len = 40 * CHUNK;
    let mut ring = Ring::new("reflink", 2, len);
    let image = ring.dir.join("xfs.img");
    let Some(xfs) = Xfs::mount(&image, &ring.peer_dir(0)) else {
        eprintln!("skipped: needs root and mkfs.xfs to mount an XFS image");
        return;
    };
    ring.extra = vec!["--follow".into()];
    ring.start_owner(&["--peers", "2"]);
    for i in 0..2 {
        ring.start_wired_peer(i);
    }
    let v1 = short_id(&ring.file);
    for i in 0..2 {
        wait_for_version(&mut ring, i, &v1);
    }
    let mut data = ring.data.clone();
    rewrite_chunks(&ring.file, &mut data, &[4, 17], 9);
    let v2 = short_id(&ring.file);
    for i in 0..2 {
        let got = wait_for_version(&mut ring, i, &v2);
        assert_eq!(got.owner + got.ring, 2 * CHUNK as u64, "peer{i}");
        let copy = fs::read(ring.peer_dir(i).join("input.bin")).unwrap();
        assert!(copy == data, "peer{i}: copy is not the new version");
    }
    // Peer 0's folder is on XFS, peer 1's on the test folder's own.
    let on_xfs = ring.peer(0).log_text();
    assert!(
        on_xfs.contains("with the 38 chunks held (a clone of the earlier version's output)"),
        "{on_xfs}"
    );
    let elsewhere = ring.peer(1).log_text();
    assert!(
        elsewhere.contains("with the 38 chunks held ("),
        "{elsewhere}"
    );
    ring.kill_peer(0);
    ring.kill_peer(1);
    drop(xfs);
}

#[test]
fn a_hand_wired_follower_reconnects_to_a_restarted_owner_and_takes_its_new_file() {
    let len = 20 * CHUNK;
    let mut ring = Ring::new("hand-follow", 2, len);
    ring.extra = vec!["--follow".into()];
    ring.start_owner(&["--peers", "2"]);
    // Hand-wired: each downloads from the other.
    ring.start_peer(0);
    ring.start_peer(1);
    let v1 = short_id(&ring.file);
    for i in 0..2 {
        wait_for_version(&mut ring, i, &v1);
    }

    // The owner goes away, its file changes, and it comes back: a
    // follower's owner session has ended, and it must come back too.
    ring.owner.as_mut().unwrap().kill();
    let mut data = ring.data.clone();
    rewrite_chunks(&ring.file, &mut data, &[3, 17], 9);
    let v2 = short_id(&ring.file);
    ring.start_owner(&["--peers", "2"]);
    for i in 0..2 {
        let second = wait_for_version(&mut ring, i, &v2);
        assert_eq!(second.reused, len as u64 - 2 * CHUNK as u64, "peer{i}");
        let copy = fs::read(ring.peer_dir(i).join("input.bin")).unwrap();
        assert!(copy == data, "peer{i}: copy is not the new version");
    }
}
