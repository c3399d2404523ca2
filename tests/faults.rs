//! Fault injection: crashes, corruption, dead peers, a dead owner, lying
//! neighbours and hostile bytes. Every test ends by comparing the copies
//! with the input byte for byte, or by checking the exact error.

use crate::common;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use common::{Proc, Ring, TestDir, audit_chunks, chunk_files, free_ports, wait_until};
use swarm::manifest::{Chunking, Layout, Manifest, sha256};
use swarm::wire::{self, Decoder, Message};

const CHUNK: usize = 102_400;

/// Owner and peers with short timeouts, so faults resolve in seconds.
fn quick_ring(name: &str, n: usize, chunks: usize) -> Ring {
    let mut ring = Ring::new(name, n, chunks * CHUNK - 7);
    ring.extra = ["--stall-timeout", "1", "--linger", "3"]
        .map(String::from)
        .to_vec();
    ring
}

#[test]
fn kill_9_at_several_points_then_restart() {
    let mut ring = quick_ring("kill9", 5, 40);
    ring.start_owner(&[]);
    let dir = ring.peer_dir(2);

    // 1. Killed as soon as its manifest is cached, before or while the
    //    first seeded chunks land.
    ring.start_peer(2);
    wait_until("peer 2's manifest", || dir.join("manifest").exists());
    ring.kill_peer(2);
    assert_eq!(
        audit_chunks(&dir).1,
        0,
        "no chunk file may be partial or wrong"
    );

    // 2. Killed mid-run: peer 3 is up, peer 4 is not, so the two trade
    //    their seeds and then wait for a stall to call in the owner.
    ring.start_peer(2);
    ring.start_peer(3);
    wait_until("peer 2 to hold 16 chunks", || chunk_files(&dir) >= 16);
    ring.kill_peer(2);
    let (good, bad) = audit_chunks(&dir);
    assert_eq!(bad, 0);
    assert!(good >= 16);

    // 3. Killed once complete, while it waits for an upload neighbour.
    ring.start_peer(2);
    wait_until("peer 2's copy", || dir.join("input.bin").exists());
    ring.kill_peer(2);
    assert_eq!(audit_chunks(&dir), (40, 0));
    assert_eq!(fs::read(dir.join("input.bin")).unwrap(), ring.data);

    // 4. Everyone else joins; the twice-killed peer resumes with all 40.
    ring.start_peer(2);
    for i in [0, 1, 4] {
        ring.start_peer(i);
    }
    ring.expect_identical_copies();
    let record = ring.record(2);
    assert_eq!(
        record.reused,
        ring.data.len() as u64,
        "the peer did not resume from its 40 chunks: {record:?}"
    );
    assert_eq!(
        record.from_owner + record.from_ring,
        0,
        "a complete peer fetched chunks again: {record:?}"
    );
}

#[test]
fn damaged_chunk_files_are_dropped_and_fetched_again() {
    let mut ring = quick_ring("damaged", 5, 40);
    ring.start_owner(&[]);
    let dir = ring.peer_dir(2);
    ring.start_peer(2);
    ring.start_peer(3);
    wait_until("peer 2 to hold 16 chunks", || chunk_files(&dir) >= 16);
    ring.kill_peer(2);
    ring.kill_peer(3);
    let held = chunk_files(&dir);

    // While it is down: one chunk flipped, one cut short, one emptied.
    let mut files: Vec<_> = fs::read_dir(dir.join("chunks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut data = fs::read(&files[0]).unwrap();
    data[100] ^= 0x01;
    fs::write(&files[0], &data).unwrap();
    fs::write(&files[1], &fs::read(&files[1]).unwrap()[..1000]).unwrap();
    fs::write(&files[2], b"").unwrap();

    for i in 0..5 {
        ring.start_peer(i);
    }
    ring.expect_identical_copies();
    let log = ring.peer(2).log_text();
    assert_eq!(
        log.matches("dropping damaged chunk file").count(),
        3,
        "{log}"
    );
    assert!(
        log.contains(&format!("{} of 40 chunks verified on disk", held - 3)),
        "{log}"
    );
}

#[test]
fn a_ring_with_a_peer_killed_for_good_still_completes() {
    let mut ring = quick_ring("dead-peer", 5, 30);
    ring.start_owner(&[]);
    ring.start_peer(2);
    wait_until("peer 2 to hold a chunk", || {
        chunk_files(&ring.peer_dir(2)) >= 1
    });
    ring.kill_peer(2);
    for i in [0, 1, 3, 4] {
        ring.start_peer(i);
    }
    // Peer 1 downloads from the dead peer 2: the owner stands in.
    // Peer 3's upload neighbour is the dead peer 2: it leaves after
    // --linger.
    ring.expect_identical_copies();
    let record = ring.record(1);
    assert!(
        record.from_owner > 6 * CHUNK as u64,
        "peer 1 got only its 6 seeds from the owner: {record:?}"
    );
    assert_eq!(ring.record(3).left, "lingered");
}

#[test]
fn the_ring_completes_after_the_owner_dies_once_everything_is_seeded() {
    let mut ring = Ring::new("dead-owner", 4, 40 * CHUNK - 1);
    ring.start_owner(&["--peers", "4"]);
    // Each peer is frozen as soon as its seeds are in, so the owner dies
    // before the ring has finished; between them the four hold every
    // chunk once.
    ring.orphan_after_seeding(10);
    ring.thaw();
    ring.expect_all_identical();
    // Whatever the owner sent before it died, the ring carried the rest.
    for i in 0..4 {
        let record = ring.record(i);
        assert!(record.from_ring > 0, "peer{i}: {record:?}");
    }
}

/// A download neighbour that lists every chunk and answers every request
/// with the right number of wrong bytes.
fn lying_neighbour(listener: TcpListener, manifest: Manifest, stop: Arc<AtomicBool>) -> usize {
    listener.set_nonblocking(true).unwrap();
    let mut served = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut stream, _)) = listener.accept() else {
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let layout = manifest.layout();
        let mut dec = Decoder::new();
        if !matches!(dec.read(&mut stream), Ok(Message::Hello { .. })) {
            continue;
        }
        let hello = Message::Hello {
            version: wire::VERSION,
            file_id: manifest.id(),
            name: "liar",
        };
        let mut all = swarm::chunks::ChunkSet::new(layout.count());
        layout.ids().for_each(|id| {
            all.insert(id);
        });
        if wire::send(&mut stream, &hello).is_err()
            || wire::send(&mut stream, &Message::ChunkList(all)).is_err()
        {
            continue;
        }
        dec.set_layout(layout.clone());
        while let Ok(Message::Request(id)) = dec.read(&mut stream) {
            let junk = vec![0xEE; layout.chunk_len(id)];
            if wire::send(&mut stream, &Message::Chunk { id, data: &junk }).is_err() {
                break;
            }
            served += 1;
        }
    }
    served
}

#[test]
fn a_neighbour_serving_corrupt_chunks_is_dropped_for_the_owner() {
    let mut ring = quick_ring("liar", 1, 20);
    ring.start_owner(&["--peers", "4"]);
    wait_until("the owner's manifest", || {
        ring.dir.join("owner/summary.txt").exists()
    });
    let text = fs::read_to_string(ring.dir.join("owner/manifest")).unwrap();
    let manifest = Manifest::from_text(&text).unwrap();
    // The single peer's download neighbour is the liar.
    let liar = TcpListener::bind("127.0.0.1:0").unwrap();
    ring.ports.push(liar.local_addr().unwrap().port());
    let stop = Arc::new(AtomicBool::new(false));
    let liar = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || lying_neighbour(liar, manifest, stop))
    };
    ring.start_peer(0);
    ring.expect_identical_copies();
    stop.store(true, Ordering::Relaxed);
    assert!(liar.join().unwrap() >= 3);
    let log = ring.peer(0).log_text();
    assert!(
        log.matches("failed its SHA-256 check").count() >= 3,
        "{log}"
    );
    assert!(log.contains("3 bad chunks from it; disconnecting"), "{log}");
    assert!(
        log.contains("sent 3 corrupt chunks; fetching missing chunks from the owner"),
        "{log}"
    );
}

/// Opens connections that misbehave in every way the decoder knows, and
/// keeps the idle ones open until dropped.
fn hostile_connections(port: u16) -> Vec<TcpStream> {
    let hello = |magic: &[u8], version: u16| {
        let mut frame = Vec::new();
        wire::encode(
            &Message::Hello {
                version: 1,
                file_id: [0; 32],
                name: "x",
            },
            &mut frame,
        );
        frame[5..9].copy_from_slice(magic);
        frame[9..11].copy_from_slice(&version.to_be_bytes());
        frame
    };
    let attacks: Vec<Vec<u8>> = vec![
        vec![],                           // idle: says nothing
        common::random_bytes(4096, 7),    // noise
        vec![0xFF, 0xFF, 0xFF, 0xFF, 7],  // a 4 GiB frame
        vec![0, 0, 0, 1, 200],            // unknown type
        hello(b"HTTP", 1),                // wrong magic
        hello(b"SWRM", 9),                // wrong version
        hello(b"SWRM", 1)[..20].to_vec(), // truncated, then idle
    ];
    attacks
        .into_iter()
        .map(|bytes| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(&bytes).unwrap();
            s
        })
        .collect()
}

#[test]
fn garbage_and_idle_connections_do_not_disturb_a_ring() {
    let mut ring = Ring::new("hostile", 5, 30 * CHUNK + 3);
    ring.start_owner(&[]);
    wait_until("the owner's manifest", || {
        ring.dir.join("owner/summary.txt").exists()
    });
    let mut held = hostile_connections(ring.owner_port);
    ring.start_peer(1);
    wait_until("peer 1 listening", || {
        ring.peer(1).log_text().contains("listening")
    });
    held.extend(hostile_connections(ring.ports[1]));
    for i in [0, 2, 3, 4] {
        ring.start_peer(i);
    }
    ring.expect_all_identical();
    // A version refusal is drained for half a second before it is
    // logged, and the ring may finish sooner.
    wait_until("the version refusal to be logged", || {
        ring.owner
            .as_ref()
            .unwrap()
            .log_text()
            .contains("protocol version 9 is not supported")
            && ring
                .peer(1)
                .log_text()
                .contains("protocol version 9 is not supported")
    });
    for log in [
        ring.owner.as_ref().unwrap().log_text(),
        ring.peer(1).log_text(),
    ] {
        for want in [
            "not a swarm connection (bad magic)",
            "protocol version 9 is not supported",
            "frame of 4294967295 bytes is over the 1024-byte limit",
            "unknown message type 200",
        ] {
            assert!(log.contains(want), "no warning {want:?} in:\n{log}");
        }
        assert!(!log.contains("panicked"));
    }
    drop(held);
}

#[test]
fn idle_handshakes_time_out() {
    let mut ring = Ring::new("idle", 1, 1000);
    // A 1 s handshake timeout instead of the 10 s default, set the way
    // `swarm owner --help` documents for tests.
    ring.owner_env = vec![("SWARM_HANDSHAKE_TIMEOUT_MS".into(), "1000".into())];
    ring.start_owner(&[]);
    wait_until("the owner's manifest", || {
        ring.dir.join("owner/summary.txt").exists()
    });
    let mut idle = TcpStream::connect(("127.0.0.1", ring.owner_port)).unwrap();
    idle.set_read_timeout(Some(common::patience())).unwrap();
    // The owner hangs up after its handshake timeout, well within the
    // read timeout's patience.
    let asked = std::time::Instant::now();
    let mut buf = [0u8; 16];
    // A close, or a reset if the close raced the owner's shutdown.
    match common::read_some(&mut idle, &mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the owner should close the idle connection, not {other:?}"),
    }
    // The shortened timeout was the one applied, not the 10 s default.
    let waited = asked.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(8),
        "closed after {waited:?}"
    );
    // The warning is logged just after the close.
    wait_until("the owner's warning", || {
        ring.owner
            .as_ref()
            .unwrap()
            .log_text()
            .contains("timed out; connection closed")
    });
}

#[test]
fn a_request_flood_is_cut_off() {
    let mut ring = Ring::new("flood", 1, 3 * CHUNK);
    // The peer gets every chunk from the owner; its download neighbour
    // port is dead, so it lingers while the flood comes in.
    ring.extra = ["--linger", "2", "--stall-timeout", "60"]
        .map(String::from)
        .to_vec();
    ring.start_owner(&["--peers", "1"]);
    let dead = free_ports(1)[0];
    ring.ports.push(dead);
    ring.start_peer(0);
    wait_until("the peer's copy", || {
        ring.peer_dir(0).join("input.bin").exists()
    });
    let text = fs::read_to_string(ring.peer_dir(0).join("manifest")).unwrap();
    let manifest = Manifest::from_text(&text).unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", ring.ports[0])).unwrap();
    let hello = Message::Hello {
        version: wire::VERSION,
        file_id: manifest.id(),
        name: "flood",
    };
    wire::send(&mut s, &hello).unwrap();
    // Ask for chunk 0 a thousand times and never read the answers.
    let id = manifest.layout().chunk_id(0).unwrap();
    let mut frames = Vec::new();
    for _ in 0..1000 {
        wire::encode(&Message::Request(id), &mut frames);
    }
    let _ = s.write_all(&frames);
    ring.peer(0).expect_success();
    let log = ring.peer(0).log_text();
    assert!(
        log.contains("more than 256 requests queued (request flood)"),
        "{log}"
    );
}

/// A downloader that reports holding every chunk gets nothing more: the
/// chunks it asked for and the peer has not yet written are dropped, so
/// its leaving does not wait behind them. The peer follows its file, so
/// this COMPLETE does not also make it leave (which would cut the
/// connection anyway).
#[test]
fn complete_drops_the_chunks_still_queued_for_a_downloader() {
    const ASKED: u32 = 250;
    let mut ring = Ring::new("drop-queued", 1, ASKED as usize * CHUNK);
    ring.extra = ["--follow", "--stall-timeout", "60"]
        .map(String::from)
        .to_vec();
    ring.start_owner(&["--peers", "1"]);
    ring.ports.push(free_ports(1)[0]);
    ring.start_peer(0);
    wait_until("the peer's copy", || {
        ring.peer_dir(0).join("input.bin").exists()
    });
    let text = fs::read_to_string(ring.peer_dir(0).join("manifest")).unwrap();
    let manifest = Manifest::from_text(&text).unwrap();
    let layout = manifest.layout().clone();
    let mut s = TcpStream::connect(("127.0.0.1", ring.ports[0])).unwrap();
    s.set_read_timeout(Some(common::patience())).unwrap();
    small_receive_buffer(&s);
    let hello = Message::Hello {
        version: wire::VERSION,
        file_id: manifest.id(),
        name: "done early",
    };
    let mut frames = Vec::new();
    wire::encode(&hello, &mut frames);
    for i in 0..ASKED {
        wire::encode(&Message::Request(layout.chunk_id(i).unwrap()), &mut frames);
    }
    s.write_all(&frames).unwrap();
    // Unread, the socket buffers fill with a few MiB of chunks (the
    // peer's send buffer, and a receive buffer kept small so a busy
    // machine's autotuning cannot take in most of the file) and the
    // peer's writer waits with the rest queued.
    wait_until("the peer's writer to be sending", || {
        ring.peer(0)
            .log_text()
            .contains("sent chunk 10 to done early")
    });
    wire::send(&mut s, &Message::Complete).unwrap();
    let mut dec = Decoder::new();
    dec.set_layout(layout);
    let mut chunks = 0;
    let end = loop {
        match dec.read(&mut s) {
            Ok(Message::Chunk { .. }) => chunks += 1,
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert!(
        matches!(end, wire::Error::Closed),
        "the peer should close, not {end}"
    );
    assert!(
        chunks < ASKED - 100,
        "{chunks} of {ASKED} asked chunks still came after COMPLETE"
    );
}

/// Caps the kernel's receive buffer of `s` at 64 KiB (which also turns its
/// autotuning off), so what a peer can push into an unread connection is
/// bounded by its own send buffer.
fn small_receive_buffer(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 64 * 1024;
    // SAFETY: a valid socket and a pointer to a c_int of the given length.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt SO_RCVBUF: {}",
        std::io::Error::last_os_error()
    );
}

/// Arguments for a peer in directory `peer` with the given owner port
/// and a download neighbour port that nobody listens on.
fn lone_peer_args(owner_port: u16, extra: &[&str]) -> Vec<String> {
    let ports = free_ports(2);
    let mut args: Vec<String> = ["peer", "--owner", &owner_port.to_string(), "--port"]
        .map(String::from)
        .to_vec();
    args.push(ports[0].to_string());
    args.extend(["--download-neighbor".to_string(), ports[1].to_string()]);
    args.extend(["--dir", "peer"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A fake owner that serves a 3000-byte file under a hostile name.
fn hostile_owner(listener: TcpListener, raw_name: &str, data: &[u8], chunk_size: u32) {
    lying_owner(listener, raw_name, data, chunk_size, sha256(data));
}

/// [`hostile_owner`], announcing `file_hash` as the whole file's digest.
fn lying_owner(
    listener: TcpListener,
    raw_name: &str,
    data: &[u8],
    chunk_size: u32,
    file_hash: swarm::manifest::Digest,
) {
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut dec = Decoder::new();
    dec.read(&mut s).unwrap();
    let layout = Layout::new(data.len() as u64, 1024).unwrap();
    let hashes: Vec<_> = data.chunks(1024).map(sha256).collect();
    let plain = swarm::manifest::plain_name(raw_name);
    let m = Manifest::new(plain, layout.clone(), file_hash, hashes.clone()).unwrap();
    let hello = Message::Hello {
        version: wire::VERSION,
        file_id: m.id(),
        name: "owner",
    };
    wire::send(&mut s, &hello).unwrap();
    let manifest = Message::Manifest {
        file_len: data.len() as u64,
        chunk_size,
        chunking: Chunking::Fixed,
        chunks: layout.count(),
        file_hash,
        name: raw_name,
    };
    wire::send(&mut s, &manifest).unwrap();
    if chunk_size != 1024 {
        return;
    }
    let hashes = Message::Hashes {
        first: 0,
        hashes,
        lens: None,
    };
    wire::send(&mut s, &hashes).unwrap();
    dec.set_layout(layout.clone());
    // A peer that rejects the manifest closes instead of listing.
    if dec.read(&mut s).is_err() {
        return;
    }
    for id in layout.ids() {
        let at = layout.offset(id) as usize;
        let chunk = &data[at..at + layout.chunk_len(id)];
        wire::send(&mut s, &Message::Chunk { id, data: chunk }).unwrap();
    }
    wire::send(&mut s, &Message::SeedDone).unwrap();
    let _ = common::read_some(&mut s, &mut [0u8; 64]);
}

/// A name that is not plain (a path, `..`) cannot come from an honest
/// owner, which makes its name plain before hashing the manifest: the
/// peer gives up, and nothing is written anywhere.
#[test]
fn a_malicious_manifest_writes_nothing_outside_the_directory() {
    let dir = refused(
        "traversal",
        |owner| {
            hostile_owner(
                owner,
                "../../escape.bin",
                &common::random_bytes(3000, 3),
                1024,
            )
        },
        r#"swarm: bad manifest: owner at 127.0.0.1:PORT sent a file name that is not a plain name ("../../escape.bin")"#,
    );
    assert!(!dir.join("escape.bin").exists() && !dir.join("peer/escape.bin").exists());
    assert!(!dir.join("peer/manifest").exists());
}

/// Runs a lone peer against the fake owner `serve` and returns its
/// directory once it has exited 1, asserting its last line is `want`.
fn refused(name: &str, serve: impl FnOnce(TcpListener) + Send + 'static, want: &str) -> TestDir {
    refused_with(name, &[], serve, want)
}

/// [`refused`] with `extra` flags for the peer.
fn refused_with(
    name: &str,
    extra: &[&str],
    serve: impl FnOnce(TcpListener) + Send + 'static,
    want: &str,
) -> TestDir {
    let dir = TestDir::new(name);
    let owner = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = owner.local_addr().unwrap().port();
    let args = lone_peer_args(port, extra);
    // `want` may name the fake owner's port as PORT.
    let want = want.replace("PORT", &port.to_string());
    let want = want.as_str();
    let fake = thread::spawn(move || serve(owner));
    let mut peer = Proc::start("peer", &dir.path, &args);
    let status = peer
        .wait_for(common::patience())
        .expect("peer did not exit");
    fake.join().unwrap();
    assert_eq!(status.code(), Some(1));
    let log = peer.log_text();
    assert_eq!(log.lines().last(), Some(want), "{log}");
    dir
}

#[test]
fn an_impossible_manifest_is_refused_with_one_line() {
    let dir = refused(
        "bad-manifest",
        |owner| hostile_owner(owner, "x.bin", &[1, 2, 3], 0),
        "swarm: bad manifest: chunk size 0 is outside 1024..=16777216 bytes",
    );
    assert!(!dir.join("peer/manifest").exists());
}

/// Content-defined chunk lengths come from the owner; lengths that do not
/// add up to the file's size cannot be an honest owner's.
#[test]
fn content_chunk_lengths_that_do_not_add_up_are_refused_with_one_line() {
    let dir = refused(
        "bad-lengths",
        |listener| {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            Decoder::new().read(&mut s).unwrap();
            let hello = Message::Hello {
                version: wire::VERSION,
                file_id: [3; 32],
                name: "owner",
            };
            let manifest = Message::Manifest {
                file_len: 3000,
                chunk_size: 1024,
                chunking: Chunking::Content,
                chunks: 2,
                file_hash: [1; 32],
                name: "x.bin",
            };
            let hashes = Message::Hashes {
                first: 0,
                hashes: vec![[2; 32]; 2],
                lens: Some(vec![1000, 1000]),
            };
            for msg in [hello, manifest, hashes] {
                wire::send(&mut s, &msg).unwrap();
            }
            let _ = common::read_some(&mut s, &mut [0u8; 64]);
        },
        "swarm: bad manifest: the chunk lengths add up to 2000 bytes, not the file's 3000",
    );
    assert!(!dir.join("peer/manifest").exists());
}

/// An owner whose whole-file digest does not fit its chunk digests made a
/// peer re-hash and re-join the file for ever. Once a rebuilt file fails
/// again with every chunk intact, the peer stops with one line. (Only
/// --verify-output hashes the whole file; by default every chunk matches
/// its digest and the file is whole.)
#[test]
fn a_manifest_whose_digests_disagree_is_refused_with_one_line() {
    let data = common::random_bytes(3000, 5);
    let dir = refused_with(
        "inconsistent-manifest",
        &["--verify-output"],
        move |owner| lying_owner(owner, "x.bin", &data, 1024, [7; 32]),
        "swarm: bad manifest: the whole-file SHA-256 does not match the chunks, \
         though every chunk matches its own",
    );
    assert!(!dir.join("peer/x.bin").exists(), "no unverified output");
}

#[test]
fn a_restarted_owner_reuses_unchanged_chunks_and_resplits_a_changed_file() {
    let mut ring = Ring::new("owner-restart", 3, 12 * CHUNK + 5);
    ring.start_owner(&["--peers", "3"]);
    wait_until("the split", || {
        ring.owner
            .as_ref()
            .unwrap()
            .log_text()
            .contains("reused 0 unchanged")
    });
    ring.owner.as_mut().unwrap().kill();
    ring.start_owner(&["--peers", "3"]);
    wait_until("the second split", || {
        ring.owner
            .as_ref()
            .unwrap()
            .log_text()
            .contains("(reused 13 unchanged")
    });
    ring.owner.as_mut().unwrap().kill();
    // Change one byte in chunk 5 and the owner re-splits what changed.
    ring.data[5 * CHUNK + 10] ^= 0xFF;
    fs::write(&ring.file, &ring.data).unwrap();
    ring.start_owner(&["--peers", "3"]);
    wait_until("the third split", || {
        ring.owner
            .as_ref()
            .unwrap()
            .log_text()
            .contains("(reused 12 unchanged")
    });
    for i in 0..3 {
        ring.start_peer(i);
    }
    ring.expect_all_identical();
}

/// A build of swarm that speaks another protocol version is told why it
/// is turned away, not just disconnected: REFUSE is the same frame in
/// every version.
#[test]
fn another_protocol_version_is_refused_with_the_reason() {
    let mut ring = Ring::new("version", 1, 3 * CHUNK);
    ring.start_owner(&[]);
    wait_until("the owner's manifest", || {
        ring.dir.join("owner/summary.txt").exists()
    });
    let mut stream = TcpStream::connect(("127.0.0.1", ring.owner_port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut frame = Vec::new();
    wire::encode(
        &Message::Hello {
            version: 2,
            file_id: [0; 32],
            name: "old swarm",
        },
        &mut frame,
    );
    stream.write_all(&frame).unwrap();
    // The decoder of this build would reject the version itself, so the
    // REFUSE is read as raw bytes: length, kind 11, reason.
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let reason = format!(
        "protocol version 2 is not supported (this is version {})",
        wire::VERSION
    );
    assert_eq!(raw[4], 11, "{raw:?}");
    assert_eq!(&raw[5..], reason.as_bytes());
}
