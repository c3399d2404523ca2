//! The store's unit tests: every job of the store (hardened I/O, the
//! held set and its summary, reuse across versions, assembly) through the
//! [`Store`]'s own API, in directories that remove themselves.

use super::chunks::{REUSE_DIR, list_chunk_files};
use super::fs::{side_name, write_atomic};
use super::*;
use crate::manifest::{Chunking, Layout};
use crate::testdir::{self, TestDir, pattern};
use crate::wire;
use sha2::{Digest as _, Sha256};
use std::ffi::CString;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read};
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::symlink;
use std::process::Command;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

/// A fresh directory under the system temp dir, removed on drop.
fn temp_dir(name: &str) -> TestDir {
    TestDir::new(&format!("store-{name}"))
}

fn split_sample(len: usize) -> (TestDir, Vec<u8>, Store) {
    testdir::split_sample("store-split", len)
}

#[test]
fn put_verifies_stores_and_notifies() {
    let (dir, data, owner) = split_sample(2500);
    let peer = Store::open(&dir.join("peer"), owner.manifest().clone()).unwrap();
    let (held, rx) = peer.subscribe();
    assert!(held.is_empty());
    let l = peer.layout();
    let id1 = l.chunk_id(1).unwrap();
    let mut bad = data[1024..2048].to_vec();
    bad[5] ^= 1;
    assert_eq!(peer.put(id1, &bad).unwrap(), Put::Corrupt);
    assert_eq!(peer.put(id1, &data[1024..2047]).unwrap(), Put::Corrupt);
    assert!(!chunk_path(peer.dir(), id1).exists());
    assert_eq!(peer.put(id1, &data[1024..2048]).unwrap(), Put::Stored);
    assert_eq!(peer.put(id1, &data[1024..2048]).unwrap(), Put::Duplicate);
    assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![id1]);
    assert!(
        fs::read_dir(peer.dir())
            .unwrap()
            .all(|e| { !e.unwrap().file_name().to_string_lossy().ends_with(".tmp") })
    );
    // Written at most every 200 ms; a flush catches up.
    peer.flush_summary().unwrap();
    let summary = fs::read_to_string(peer.dir().join(SUMMARY_FILE)).unwrap();
    assert_eq!(summary, "1\n");
    let id0 = l.chunk_id(0).unwrap();
    assert_eq!(peer.put(id0, &data[..1024]).unwrap(), Put::Stored);
    peer.flush_summary().unwrap();
    let summary = fs::read_to_string(peer.dir().join(SUMMARY_FILE)).unwrap();
    assert_eq!(summary, "0\n1\n");
    let mut buf = Vec::new();
    peer.read_chunk(id1, &mut buf).unwrap();
    assert_eq!(buf, &data[1024..2048]);
}

/// `retire` waits for a `put` under way (here held up in its summary
/// rewrite, the last thing it writes) and turns later ones away.
#[test]
fn retire_waits_for_a_put_under_way_and_stops_later_ones() {
    let (dir, data, owner) = split_sample(2500);
    let peer = Arc::new(Store::open(&dir.join("peer"), owner.manifest().clone()).unwrap());
    let (paused_tx, paused) = crossbeam_channel::unbounded();
    let (go, go_rx) = crossbeam_channel::unbounded();
    peer.summary_pause.set((paused_tx, go_rx)).unwrap();
    // Due at once, so the put rewrites the summary itself.
    peer.lock().summary.written = None;
    let l = peer.layout().clone();
    let (id0, id1) = (l.chunk_id(0).unwrap(), l.chunk_id(1).unwrap());
    let put = {
        let peer = Arc::clone(&peer);
        let chunk = data[..1024].to_vec();
        thread::spawn(move || peer.put(id0, &chunk).unwrap())
    };
    paused.recv().unwrap();
    let (retired_tx, retired) = crossbeam_channel::unbounded();
    let retire = {
        let peer = Arc::clone(&peer);
        thread::spawn(move || {
            peer.retire();
            retired_tx.send(()).unwrap();
        })
    };
    // Were it not waiting, it would be done long before this.
    assert!(
        retired.recv_timeout(Duration::from_millis(300)).is_err(),
        "retire returned with a put under way"
    );
    go.send(()).unwrap();
    drop(go);
    assert_eq!(put.join().unwrap(), Put::Stored);
    retired.recv().unwrap();
    retire.join().unwrap();
    assert_eq!(peer.put(id1, &data[1024..2048]).unwrap(), Put::Duplicate);
    assert!(!chunk_path(peer.dir(), id1).exists());
    assert_eq!(
        fs::read_to_string(peer.dir().join(SUMMARY_FILE)).unwrap(),
        "0\n"
    );
}

/// A chunk stored while the summary is being rewritten is in the
/// summary after the next flush (it was lost: the store gave up on
/// the busy summary before noting the change).
#[test]
fn a_chunk_stored_during_a_summary_rewrite_reaches_the_summary() {
    let (dir, data, owner) = split_sample(2500);
    let peer = Arc::new(Store::open(&dir.join("peer"), owner.manifest().clone()).unwrap());
    let (paused_tx, paused) = crossbeam_channel::unbounded();
    let (go, go_rx) = crossbeam_channel::unbounded();
    peer.summary_pause.set((paused_tx, go_rx)).unwrap();
    let l = peer.layout().clone();
    let (id0, id1) = (l.chunk_id(0).unwrap(), l.chunk_id(1).unwrap());
    let rewrite = {
        let peer = Arc::clone(&peer);
        let chunk = data[..1024].to_vec();
        thread::spawn(move || {
            assert_eq!(peer.put(id0, &chunk).unwrap(), Put::Stored);
            peer.flush_summary().unwrap();
        })
    };
    // The rewrite has its snapshot ({0}) and has not written it yet.
    paused.recv().unwrap();
    assert_eq!(peer.put(id1, &data[1024..2048]).unwrap(), Put::Stored);
    go.send(()).unwrap();
    rewrite.join().unwrap();
    drop(go);
    peer.flush_summary().unwrap();
    let summary = fs::read_to_string(peer.dir().join(SUMMARY_FILE)).unwrap();
    assert_eq!(summary, "0\n1\n");
}

#[test]
fn open_keeps_good_chunks_and_drops_damaged_ones() {
    let (dir, data, owner) = split_sample(3000);
    let m = owner.manifest().clone();
    let l = m.layout();
    let peer_dir = dir.join("peer");
    let peer = Store::open(&peer_dir, m.clone()).unwrap();
    for id in l.ids() {
        let at = l.offset(id) as usize;
        peer.put(id, &data[at..at + l.chunk_len(id)]).unwrap();
    }
    drop(peer);
    let id0 = l.chunk_id(0).unwrap();
    let id2 = l.chunk_id(2).unwrap();
    fs::write(chunk_path(&peer_dir, id0), b"garbage").unwrap();
    let tmp = peer_dir.join(CHUNKS_DIR).join(".00000001.chunk.1-1.tmp");
    fs::write(&tmp, b"partial").unwrap();
    let peer = Store::open(&peer_dir, m).unwrap();
    assert!(!peer.has(id0) && peer.has(id2) && peer.held() == 2);
    assert!(!tmp.exists() && !chunk_path(&peer_dir, id0).exists());
    let summary = fs::read_to_string(peer_dir.join(SUMMARY_FILE)).unwrap();
    assert_eq!(summary, "1\n2\n");
}

/// Version 1 of a file held whole in `dir/peer`, and version 2: its
/// chunks 0 and 2 swapped, chunk 1 twice (at 1 and 3) and a new
/// chunk 4.
fn two_versions() -> (TestDir, Store, Vec<u8>, Manifest) {
    let dir = temp_dir("versions");
    let v1 = pattern(4 * 1024);
    let file = dir.join("input.bin");
    fs::write(&file, &v1).unwrap();
    let m1 = index(&file, 1024, Chunking::Fixed).unwrap();
    let peer = Store::open(&dir.join("peer"), m1.clone()).unwrap();
    for id in m1.layout().ids() {
        let at = m1.layout().offset(id) as usize;
        peer.put(id, &v1[at..at + 1024]).unwrap();
    }
    let part = |i: usize| &v1[i * 1024..(i + 1) * 1024];
    let v2 = [part(2), part(1), part(0), part(1), &[7u8; 500][..]].concat();
    fs::write(&file, &v2).unwrap();
    let m2 = index(&file, 1024, Chunking::Fixed).unwrap();
    (dir, peer, v2, m2)
}

#[test]
fn a_new_version_reuses_chunk_files_wherever_they_sit() {
    // Re-hashed from disk (a restart), and taken on trust from the
    // store this process verified them in.
    for trusted in [false, true] {
        let (dir, v1, v2, m2) = two_versions();
        let peer_dir = dir.join("peer");
        let stray = peer_dir.join(CHUNKS_DIR).join("00000007.chunk");
        fs::write(&stray, b"junk").unwrap();
        let peer = if trusted {
            Store::open_after(&peer_dir, m2.clone(), &v1).unwrap()
        } else {
            drop(v1);
            Store::open(&peer_dir, m2.clone()).unwrap()
        };
        let reused = peer.reused();
        assert_eq!((reused.in_place, reused.moved), (1, 3), "trusted {trusted}");
        assert_eq!(reused.bytes, 4 * 1024);
        let last = m2.layout().chunk_id(4).unwrap();
        assert_eq!(peer.held(), 4);
        assert!(!peer.has(last));
        peer.put(last, &v2[4096..]).unwrap();
        let out = dir.join("v2.bin");
        peer.assemble(&out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), v2);
        assert!(!stray.exists() && !peer_dir.join(CHUNKS_DIR).join(REUSE_DIR).exists());
    }
}

#[test]
fn old_chunk_files_are_deleted_on_a_thread_the_store_joins_and_the_next_open_finishes() {
    let (dir, v1, _v2, m2) = two_versions();
    let peer_dir = dir.join("peer");
    drop(v1);
    // A trash folder an earlier process left, with many files in it.
    let left = peer_dir.join(CHUNKS_DIR).join(".trash-1-0");
    fs::create_dir(&left).unwrap();
    for n in 0..2000 {
        fs::write(left.join(format!("{n}")), b"old").unwrap();
    }
    // Dropped at once: its deletion stops between two files and its
    // thread is joined (drop returns), whatever is left stays.
    let store = Store::open(&peer_dir, m2.clone()).unwrap();
    assert!(store.trash.is_some(), "the open took up the trash folder");
    drop(store);
    // The next open takes up what is left, and finishes it.
    let mut store = Store::open(&peer_dir, m2.clone()).unwrap();
    if let Some(trash) = store.trash.take() {
        trash.wait();
    }
    let trash_left: Vec<_> = fs::read_dir(peer_dir.join(CHUNKS_DIR))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".trash-"))
        .collect();
    assert!(trash_left.is_empty(), "{trash_left:?}");
}

#[test]
fn an_interrupted_reuse_is_finished_by_the_next_open() {
    let (dir, v1, v2, m2) = two_versions();
    let peer_dir = dir.join("peer");
    drop(v1);
    // As if a crash came after the files were moved aside: one good,
    // one whose bytes do not match its name.
    let reuse = peer_dir.join(CHUNKS_DIR).join(REUSE_DIR);
    fs::create_dir(&reuse).unwrap();
    for (n, lie) in [(1, false), (2, true)] {
        let from = peer_dir.join(CHUNKS_DIR).join(format!("{n:08}.chunk"));
        let digest = manifest::sha256(&v2[n * 1024..(n + 1) * 1024]);
        let name = if lie {
            manifest::sha256(b"other")
        } else {
            digest
        };
        fs::rename(from, reuse.join(manifest::to_hex(&name))).unwrap();
    }
    let peer = Store::open(&peer_dir, m2.clone()).unwrap();
    // Chunk 1 of v1 is chunk 1 and 3 of v2; v1's chunk 2 was lost.
    let held: Vec<u32> = peer
        .snapshot()
        .iter(m2.layout())
        .map(|id| id.get())
        .collect();
    assert_eq!(held, [1, 2, 3]);
    assert!(!reuse.exists());
    let ids = m2.layout().ids().collect::<Vec<_>>();
    for id in [ids[0], ids[4]] {
        let at = m2.layout().offset(id) as usize;
        peer.put(id, &v2[at..at + m2.layout().chunk_len(id)])
            .unwrap();
    }
    peer.assemble(&dir.join("v2.bin")).unwrap();
    assert_eq!(fs::read(dir.join("v2.bin")).unwrap(), v2);
}

#[test]
fn assemble_writes_the_verified_file_or_drops_bad_chunks() {
    let (dir, data, owner) = split_sample(2100);
    let out = dir.join("out").join("copy.bin");
    let digest = owner.assemble(&out).unwrap();
    assert_eq!(fs::read(&out).unwrap(), data);
    assert_eq!(digest, manifest::sha256(&data));
    let id1 = owner.layout().chunk_id(1).unwrap();
    fs::write(chunk_path(owner.dir(), id1), vec![0u8; 1024]).unwrap();
    let out2 = dir.join("out").join("copy2.bin");
    let err = owner.assemble(&out2).unwrap_err().to_string();
    assert!(err.contains("dropped 1 damaged chunks"), "{err}");
    assert!(!out2.exists());
    assert!(!owner.has(id1));
    let mut left: Vec<_> = fs::read_dir(dir.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    // Assembly starts over; the only new file is clearly partial.
    assert_eq!(left, [".copy2.bin.swarm-partial", "copy.bin"]);
}

#[test]
fn assembly_grows_as_chunks_arrive_in_any_order() {
    let (dir, data, owner) = split_sample(5000);
    let m = owner.manifest().clone();
    let l = m.layout().clone();
    let peer = Store::open(&dir.join("peer"), m).unwrap();
    let put = |i: u32| {
        let id = l.chunk_id(i).unwrap();
        let at = l.offset(id) as usize;
        assert_eq!(
            peer.put(id, &data[at..at + l.chunk_len(id)]).unwrap(),
            Put::Stored
        );
    };
    // One chunk before assembly starts, the rest out of order after.
    put(3);
    let out = dir.join("got.bin");
    peer.begin_assembly(&out).unwrap();
    for i in [4, 1, 0, 2] {
        put(i);
    }
    assert!(
        !out.exists(),
        "nothing under the final name before the check"
    );
    assert_eq!(peer.finish_assembly().unwrap(), manifest::sha256(&data));
    assert_eq!(fs::read(&out).unwrap(), data);
    assert!(!dir.join(".got.bin.swarm-partial").exists());
}

#[test]
fn the_chunk_that_closes_a_gap_hashes_only_a_few_held_chunks_under_the_lock() {
    let (dir, data, owner) = split_sample(20 * 1024);
    let m = owner.manifest().clone();
    let l = m.layout().clone();
    let peer = Store::open(&dir.join("peer"), m).unwrap();
    let put = |i: u32| {
        let id = l.chunk_id(i).unwrap();
        let at = l.offset(id) as usize;
        peer.put(id, &data[at..at + l.chunk_len(id)]).unwrap()
    };
    let out = dir.join("got.bin");
    peer.begin_assembly_checked(&out, OutputCheck::WholeFile)
        .unwrap();
    // A run held out of order, as a seed share arrives.
    for i in 1..20 {
        assert_eq!(put(i), Put::Stored);
    }
    let cursor = || peer.lock().assembly.as_ref().unwrap().cursor;
    assert_eq!(cursor(), 0);
    // Chunk 0 closes the gap: it and CATCH_UP_UNDER_LOCK more, not all 20.
    assert_eq!(put(0), Put::Stored);
    assert_eq!(cursor(), 1 + super::assembly::CATCH_UP_UNDER_LOCK);
    // The finish hashes the rest, and the digest is the file's.
    assert_eq!(peer.finish_assembly().unwrap(), manifest::sha256(&data));
    assert_eq!(fs::read(&out).unwrap(), data);
}

#[test]
fn an_output_checked_chunk_by_chunk_appears_only_whole() {
    let (dir, data, owner) = split_sample(5000);
    let m = owner.manifest().clone();
    let l = m.layout().clone();
    let peer = Store::open(&dir.join("peer"), m).unwrap();
    let put = |i: u32| {
        let id = l.chunk_id(i).unwrap();
        let at = l.offset(id) as usize;
        peer.put(id, &data[at..at + l.chunk_len(id)]).unwrap()
    };
    assert_eq!(put(3), Put::Stored);
    let out = dir.join("got.bin");
    peer.begin_assembly_checked(&out, OutputCheck::Chunks)
        .unwrap();
    for i in [4, 1, 0] {
        assert_eq!(put(i), Put::Stored);
    }
    // A corrupt chunk is neither stored nor written into the output.
    let id2 = l.chunk_id(2).unwrap();
    assert_eq!(
        peer.put(id2, &vec![0u8; l.chunk_len(id2)]).unwrap(),
        Put::Corrupt
    );
    let err = peer.finish_assembly().unwrap_err().to_string();
    assert!(err.contains("assembly holds 4 of 5 chunks"), "{err}");
    assert!(
        !out.exists(),
        "nothing under the final name while a chunk is missing"
    );
    assert_eq!(put(2), Put::Stored);
    // The manifest's digest: no pass over the file.
    assert_eq!(peer.finish_assembly().unwrap(), manifest::sha256(&data));
    assert_eq!(fs::read(&out).unwrap(), data);
    assert!(!dir.join(".got.bin.swarm-partial").exists());
}

/// Runs `f` on a thread and fails the test if it takes over 10 s: a
/// hang (a FIFO opened for reading) must fail, not stall the suite.
fn quickly<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what} hung"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{what} was slow"
    );
    out
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the whole call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Puts chunk `i` of `data` into `store`.
fn put_chunk(store: &Store, data: &[u8], i: u32) -> Result<Put> {
    let l = store.layout();
    let id = l.chunk_id(i).unwrap();
    let at = l.offset(id) as usize;
    store.put(id, &data[at..at + l.chunk_len(id)])
}

#[test]
fn a_chunk_stored_over_a_planted_link_replaces_it_and_is_sent_whole() {
    let (dir, data, owner) = split_sample(3000);
    let peer = Store::open(&dir.join("peer"), owner.manifest().clone()).unwrap();
    let id1 = peer.layout().chunk_id(1).unwrap();
    let path = chunk_path(peer.dir(), id1);
    let victim = dir.join("victim");
    fs::write(&victim, b"not to be touched").unwrap();
    symlink(&victim, &path).unwrap();
    assert_eq!(put_chunk(&peer, &data, 1).unwrap(), Put::Stored);
    let meta = fs::symlink_metadata(&path).unwrap();
    assert!(
        meta.file_type().is_file(),
        "a regular file replaces the link"
    );
    assert_eq!(fs::read(&path).unwrap(), &data[1024..2048]);
    assert_eq!(fs::read(&victim).unwrap(), b"not to be touched");
    // Nothing but chunk files: no temporary name was left behind.
    assert_eq!(names_in(&peer.dir().join(CHUNKS_DIR)), ["00000001.chunk"]);
    // Sent from the file kept open, and from a fresh open once that
    // file is no longer among the recent ones.
    for _ in 0..2 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut far, _) = listener.accept().unwrap();
        assert_eq!(peer.send_chunk(id1, &stream).unwrap(), 1024);
        drop(stream);
        let mut got = Vec::new();
        far.read_to_end(&mut got).unwrap();
        assert_eq!(&got[9..], &data[1024..2048]);
        peer.lock().recent.clear();
    }
}

#[test]
fn the_same_chunk_stored_by_many_threads_at_once_is_stored_once_without_error() {
    // Copies of one chunk can arrive together (a seed in flight and a
    // ring copy, a lapsed request asked again); all but one find the
    // name taken, and none may fail or leave the name missing.
    let (dir, data, owner) = split_sample(8 * 1024);
    for round in 0..500 {
        let peer = Arc::new(
            Store::open(&dir.join(format!("peer{round}")), owner.manifest().clone()).unwrap(),
        );
        let gate = Arc::new(std::sync::Barrier::new(8));
        let puts: Vec<_> = (0..8)
            .map(|_| {
                let (peer, gate, data) = (Arc::clone(&peer), Arc::clone(&gate), data.clone());
                thread::spawn(move || {
                    gate.wait();
                    put_chunk(&peer, &data, 5)
                })
            })
            .collect();
        let mut stored = 0;
        for put in puts {
            match put.join().unwrap() {
                Ok(Put::Stored) => stored += 1,
                Ok(Put::Duplicate) => {}
                other => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(stored, 1, "round {round}");
        let id5 = peer.layout().chunk_id(5).unwrap();
        assert_eq!(
            fs::read(chunk_path(peer.dir(), id5)).unwrap(),
            &data[5120..6144]
        );
        assert_eq!(names_in(&peer.dir().join(CHUNKS_DIR)), ["00000005.chunk"]);
    }
}

#[test]
fn open_drops_links_fifos_directories_and_wrong_sizes_posing_as_chunks() {
    let (dir, data, owner) = split_sample(7 * 1024);
    let m = owner.manifest().clone();
    let l = m.layout().clone();
    let peer_dir = dir.join("peer");
    fs::create_dir_all(peer_dir.join(CHUNKS_DIR)).unwrap();
    let at = |i: u32| chunk_path(&peer_dir, l.chunk_id(i).unwrap());
    // A valid chunk file outside the directory, linked to.
    let outside = dir.join("outside.chunk");
    fs::write(&outside, &data[2048..3072]).unwrap();
    symlink("/dev/zero", at(0)).unwrap();
    mkfifo(&at(1));
    symlink(&outside, at(2)).unwrap();
    fs::create_dir(at(3)).unwrap();
    fs::write(at(3).join("inside"), b"x").unwrap();
    fs::write(at(4), &data[4096..5120]).unwrap();
    // An oversized stray: sparse, so it costs no disk, but reading it
    // whole would take 1 TiB of memory (or hours).
    File::create(at(5)).unwrap().set_len(1 << 40).unwrap();
    fs::write(at(6), &data[6144..7000]).unwrap();

    let open_dir = peer_dir.clone();
    let peer = quickly("Store::open", move || Store::open(&open_dir, m).unwrap());
    let held: Vec<u32> = peer.snapshot().iter(&l).map(ChunkId::get).collect();
    assert_eq!(held, [4], "only the good chunk file is kept");
    for i in [0, 1, 2, 3, 5, 6] {
        assert!(fs::symlink_metadata(at(i)).is_err(), "chunk {i} dropped");
    }
    assert_eq!(fs::read(&outside).unwrap(), &data[2048..3072]);
    assert!(
        fs::metadata("/dev/zero")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    // The dropped chunks are fetched again into real files.
    for i in 0..7 {
        put_chunk(&peer, &data, i).unwrap();
    }
    assert!(peer.is_complete());
    assert!(fs::symlink_metadata(at(2)).unwrap().is_file());
    assert_eq!(fs::read(&outside).unwrap(), &data[2048..3072]);
}

/// One end of a loopback TCP connection whose other end is gone
/// once its bytes are read; enough to send a chunk into.
fn socket() -> TcpStream {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut far, _) = listener.accept().unwrap();
    thread::spawn(move || io::copy(&mut far, &mut io::sink()));
    stream
}

#[test]
fn send_chunk_writes_one_chunk_frame() {
    let (_dir, data, owner) = split_sample(3000);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut far, _) = listener.accept().unwrap();
    let id2 = owner.layout().chunk_id(2).unwrap();
    assert_eq!(owner.send_chunk(id2, &stream).unwrap(), 952);
    drop(stream);
    let mut got = Vec::new();
    far.read_to_end(&mut got).unwrap();
    let mut want = wire::chunk_header(id2, 952).to_vec();
    want.extend_from_slice(&data[2048..]);
    assert_eq!(got, want);
}

#[test]
fn reads_of_held_chunks_refuse_links_and_wrong_sizes() {
    let (dir, data, owner) = split_sample(3000);
    let owner = Arc::new(owner);
    let id1 = owner.layout().chunk_id(1).unwrap();
    let path = chunk_path(owner.dir(), id1);
    let victim = dir.join("victim");
    fs::write(&victim, &data[1024..2048]).unwrap();
    fs::remove_file(&path).unwrap();
    symlink(&victim, &path).unwrap();
    let mut buf = Vec::new();
    let err = owner.read_chunk(id1, &mut buf).unwrap_err().to_string();
    let want = format!("cannot read {}: is a symbolic link", path.display());
    assert!(err.starts_with(&want), "{err}");
    let err = owner.send_chunk(id1, &socket()).unwrap_err().to_string();
    assert!(err.contains(&*path.to_string_lossy()), "{err}");
    fs::remove_file(&path).unwrap();
    fs::write(&path, vec![0u8; 2000]).unwrap();
    let err = owner.open_chunk(id1).unwrap_err().to_string();
    assert!(err.ends_with("holds 2000 bytes instead of 1024"), "{err}");
    fs::remove_file(&path).unwrap();
    mkfifo(&path);
    let err = quickly("send_chunk on a FIFO", {
        let owner = Arc::clone(&owner);
        move || {
            let err = owner.send_chunk(id1, &socket()).unwrap_err();
            err.to_string()
        }
    });
    assert!(err.ends_with("is a FIFO, not a regular file"), "{err}");
    fs::remove_file(&path).unwrap();
    symlink(&victim, &path).unwrap();
    assert_eq!(owner.recheck(), 1);
    assert!(!owner.has(id1));
    assert!(fs::symlink_metadata(&path).is_err(), "the link is removed");
    assert_eq!(fs::read(&victim).unwrap(), &data[1024..2048]);
}

#[test]
fn a_chunks_folder_that_is_a_link_is_replaced_by_a_real_one() {
    let (dir, data, owner) = split_sample(2500);
    let elsewhere = dir.join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::write(elsewhere.join("keep.txt"), b"mine").unwrap();
    let peer_dir = dir.join("peer");
    fs::create_dir(&peer_dir).unwrap();
    symlink(&elsewhere, peer_dir.join(CHUNKS_DIR)).unwrap();
    let peer = Store::open(&peer_dir, owner.manifest().clone()).unwrap();
    for i in 0..3 {
        assert_eq!(put_chunk(&peer, &data, i).unwrap(), Put::Stored);
    }
    let chunks = fs::symlink_metadata(peer_dir.join(CHUNKS_DIR)).unwrap();
    assert!(chunks.is_dir() && !chunks.is_symlink());
    assert_eq!(names_in(&elsewhere), ["keep.txt"]);
    assert_eq!(fs::read(elsewhere.join("keep.txt")).unwrap(), b"mine");
    assert_eq!(names_in(&peer_dir.join(CHUNKS_DIR)).len(), 3);
}

#[test]
fn a_partial_file_planted_as_a_link_is_replaced_not_written_through() {
    let (dir, data, owner) = split_sample(2100);
    let out_dir = dir.join("out");
    fs::create_dir(&out_dir).unwrap();
    let victim = dir.join("victim.txt");
    fs::write(&victim, b"precious").unwrap();
    symlink(&victim, out_dir.join(".copy.bin.swarm-partial")).unwrap();
    // The output's own name as a link: the rename replaces the link.
    let other = dir.join("other.txt");
    fs::write(&other, b"also precious").unwrap();
    symlink(&other, out_dir.join("copy.bin")).unwrap();
    let out = out_dir.join("copy.bin");
    assert_eq!(owner.assemble(&out).unwrap(), manifest::sha256(&data));
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert_eq!(fs::read(&other).unwrap(), b"also precious");
    assert!(!fs::symlink_metadata(&out).unwrap().is_symlink());
    assert_eq!(fs::read(&out).unwrap(), data);
    assert_eq!(names_in(&out_dir), ["copy.bin"]);
}

#[test]
fn read_manifest_refuses_links_fifos_and_oversized_files_quickly() {
    let (dir, _, owner) = split_sample(2000);
    let path = owner.dir().join(MANIFEST_FILE);
    let read = |what: &str| {
        let d = owner.dir().to_path_buf();
        quickly(what, move || read_manifest(&d).unwrap_err().to_string())
    };
    fs::remove_file(&path).unwrap();
    symlink("/dev/zero", &path).unwrap();
    let err = read("read_manifest of a link to /dev/zero");
    let want = format!("cannot read {}: is a symbolic link", path.display());
    assert!(err.starts_with(&want), "{err}");
    fs::remove_file(&path).unwrap();
    mkfifo(&path);
    let err = read("read_manifest of a FIFO");
    assert!(err.ends_with("is a FIFO, not a regular file"), "{err}");
    fs::remove_file(&path).unwrap();
    File::create(&path)
        .unwrap()
        .set_len(manifest::MAX_TEXT_LEN + 1)
        .unwrap();
    let err = read("read_manifest of a huge sparse file");
    let want = format!("bytes, more than the {} allowed", manifest::MAX_TEXT_LEN);
    assert!(err.ends_with(&want), "{err}");
    // Store::open replaces whatever is there with the real manifest.
    fs::remove_file(&path).unwrap();
    symlink(dir.join("input.bin"), &path).unwrap();
    let again = Store::open(owner.dir(), owner.manifest().clone()).unwrap();
    assert!(!fs::symlink_metadata(&path).unwrap().is_symlink());
    assert_eq!(
        read_manifest(again.dir()).unwrap().unwrap(),
        *owner.manifest()
    );
    assert_eq!(fs::read(dir.join("input.bin")).unwrap(), pattern(2000));
}

#[test]
fn write_atomic_replaces_a_link_instead_of_writing_through_it() {
    let dir = temp_dir("link");
    let target = dir.join("target");
    fs::write(&target, b"untouched").unwrap();
    let path = dir.join("file");
    symlink(&target, &path).unwrap();
    write_atomic(&path, b"new", true).unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"untouched");
    assert!(!fs::symlink_metadata(&path).unwrap().is_symlink());
    assert_eq!(fs::read(&path).unwrap(), b"new");
    assert_eq!(names_in(dir.path()), ["file", "target"]);
}

#[test]
fn default_output_moves_the_directory_s_own_names_into_files() {
    let dir = Path::new("/d");
    for name in [
        "manifest",
        "summary.txt",
        "chunks",
        "files",
        ".summary.txt.123-4.tmp",
        ".manifest.1-1.tmp",
        "..tmp",
    ] {
        assert_eq!(
            default_output(dir, name),
            Path::new("/d/files").join(name),
            "{name}"
        );
    }
    for name in ["movie.mkv", "manifest.txt", "x.tmp", ".hidden", "Chunks"] {
        assert_eq!(default_output(dir, name), dir.join(name), "{name}");
    }
}

#[test]
fn reserved_names_download_and_resume() {
    for name in ["manifest", "summary.txt", "chunks", ".summary.txt.1-2.tmp"] {
        let dir = temp_dir("reserved");
        let data = pattern(3000);
        let file = dir.join(name);
        fs::write(&file, &data).unwrap();
        let (owner, _) = split(&file, &dir.join("owner"), 1024, Chunking::Fixed).unwrap();
        let peer_dir = dir.join("peer");
        let peer = Store::open(&peer_dir, owner.manifest().clone()).unwrap();
        for i in 0..3 {
            put_chunk(&peer, &data, i).unwrap();
        }
        let out = default_output(&peer_dir, name);
        assert_eq!(peer.assemble(&out).unwrap(), manifest::sha256(&data));
        assert_eq!(fs::read(&out).unwrap(), data, "{name}");
        drop(peer);
        // Resume: the bookkeeping survived the output.
        let m = read_manifest(&peer_dir).unwrap().unwrap();
        let again = Store::open(&peer_dir, m).unwrap();
        assert!(again.is_complete(), "{name}");
    }
}

#[test]
fn side_names_fit_in_255_bytes_and_stay_distinct() {
    let short = side_name(OsStr::new("a.bin"), ".", ".swarm-partial");
    assert_eq!(short, ".a.bin.swarm-partial");
    let fits = "f".repeat(240);
    let name = side_name(OsStr::new(&fits), ".", ".swarm-partial");
    assert_eq!(name.len(), 255);
    assert_eq!(name, OsString::from(format!(".{fits}.swarm-partial")));
    let a = format!("{}a", "x".repeat(254));
    let b = format!("{}b", "x".repeat(254));
    let (pa, pb) = (
        side_name(OsStr::new(&a), ".", ".swarm-partial"),
        side_name(OsStr::new(&b), ".", ".swarm-partial"),
    );
    assert_ne!(pa, pb);
    assert!(pa.len() <= 255 && pb.len() <= 255);
    let wide = "é".repeat(127);
    let p = side_name(OsStr::new(&wide), ".", ".123456-99.tmp");
    assert!(p.len() <= 255);
    let text = p.to_str().expect("cut at a char boundary");
    assert!(text.starts_with(".éé") && text.ends_with(".123456-99.tmp"));
}

#[test]
fn names_of_up_to_255_bytes_assemble_under_their_full_name() {
    let ascii = "a".repeat(255);
    let wide = "é".repeat(127);
    assert_eq!((ascii.len(), wide.len()), (255, 254));
    for name in [ascii, wide] {
        let dir = temp_dir("long");
        let data = pattern(2500);
        let file = dir.join(&name);
        fs::write(&file, &data).unwrap();
        let (owner, _) = split(&file, &dir.join("owner"), 1024, Chunking::Fixed).unwrap();
        assert_eq!(owner.manifest().name(), name);
        let out_dir = dir.join("out");
        let out = out_dir.join(&name);
        let peer = Store::open(&dir.join("peer"), owner.manifest().clone()).unwrap();
        put_chunk(&peer, &data, 1).unwrap();
        peer.begin_assembly(&out).unwrap();
        put_chunk(&peer, &data, 0).unwrap();
        put_chunk(&peer, &data, 2).unwrap();
        assert_eq!(peer.finish_assembly().unwrap(), manifest::sha256(&data));
        assert_eq!(fs::read(&out).unwrap(), data);
        assert_eq!(
            names_in(&out_dir),
            vec![name.clone()],
            "nothing left behind"
        );
        // write_atomic's temporary name fits as well.
        write_atomic(&out, b"again", false).unwrap();
        assert_eq!(names_in(&out_dir), vec![name.clone()]);
    }
}

#[test]
fn finish_assembly_keeps_its_state_after_io_errors() {
    let (dir, data, owner) = split_sample(3000);
    let out_dir = dir.join("out");
    let out = out_dir.join("copy.bin");
    owner.begin_assembly(&out).unwrap();
    let partial = out_dir.join(".copy.bin.swarm-partial");
    // Rewind the hash and make reading back fail: a write-only handle.
    {
        let mut held = owner.lock();
        let a = held.assembly.as_mut().unwrap();
        a.cursor = 0;
        a.whole = Some(Sha256::new());
        a.file = File::options().write(true).open(&partial).unwrap();
    }
    let err = owner.finish_assembly().unwrap_err().to_string();
    assert!(err.starts_with("cannot read "), "{err}");
    assert!(owner.lock().assembly.is_some(), "kept after a read error");
    owner.lock().assembly.as_mut().unwrap().file = File::options()
        .read(true)
        .write(true)
        .open(&partial)
        .unwrap();
    // A directory in the way of the rename.
    fs::create_dir_all(out.join("in-the-way")).unwrap();
    let err = owner.finish_assembly().unwrap_err().to_string();
    assert!(err.starts_with("cannot rename to "), "{err}");
    assert!(owner.lock().assembly.is_some(), "kept after a rename error");
    fs::remove_dir_all(&out).unwrap();
    assert_eq!(owner.finish_assembly().unwrap(), manifest::sha256(&data));
    assert_eq!(fs::read(&out).unwrap(), data);
    assert!(owner.lock().assembly.is_none());
    let err = owner.finish_assembly().unwrap_err().to_string();
    assert!(err.contains("without begin_assembly"), "{err}");
}

/// Unmounts a test's tmpfs even when the test fails.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_no_space_and_leaves_only_whole_chunk_files() {
    let mnt = temp_dir("tmpfs");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(mnt.path())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipping the full-disk test: cannot mount a tmpfs (not root?)");
        return;
    }
    let _guard = Mounted(mnt.path().to_path_buf());
    // 1 KiB chunks each take a 4 KiB page: 256 KiB holds fewer than
    // 64 of the 200.
    let data = pattern(200 * 1024);
    let layout = Layout::new(data.len() as u64, 1024).unwrap();
    let hashes = data.chunks(1024).map(manifest::sha256).collect();
    let m = Manifest::new(
        "big.bin".into(),
        layout.clone(),
        manifest::sha256(&data),
        hashes,
    )
    .unwrap();
    let peer = Store::open(&mnt.join("peer"), m.clone()).unwrap();
    let mut failed = None;
    for i in 0..layout.count() {
        if let Err(e) = put_chunk(&peer, &data, i) {
            failed = Some((i, e));
            break;
        }
    }
    let (i, err) = failed.expect("the tmpfs fills up");
    assert!(i > 10, "failed early, at chunk {i}: {err}");
    let path = chunk_path(peer.dir(), layout.chunk_id(i).unwrap());
    assert!(err.is_fatal_storage());
    assert_eq!(
        err.to_string(),
        format!("no space left on device writing {}", path.display())
    );
    // Every chunk file on disk is whole and verified; no temporary
    // file is left.
    let mut on_disk = 0;
    for (file, raw) in list_chunk_files(peer.dir()).unwrap() {
        let id = raw
            .and_then(|r| layout.chunk_id(r))
            .expect("a chunk file name");
        assert!(
            m.verify(id, &fs::read(&file).unwrap()),
            "{}",
            file.display()
        );
        on_disk += 1;
    }
    assert_eq!(on_disk, i);
    assert_eq!(peer.held(), i);
    // The summary cannot be rewritten either, and flush says why.
    peer.lock().summary.dirty = true;
    let err = peer.flush_summary().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no space left on device writing {}",
            peer.dir().join(SUMMARY_FILE).display()
        )
    );
    // Nor can the output be assembled on the same file system.
    let out = mnt.join("out").join("big.bin");
    let err = peer.begin_assembly(&out).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no space left on device writing {}",
            mnt.join("out").join(".big.bin.swarm-partial").display()
        )
    );
    assert_eq!(names_in(&mnt.join("out")), Vec::<String>::new());
}
