//! Limits: a full disk, a file that changes under the owner, a whole-file
//! mismatch in a running peer, file names at the edge of what a
//! directory allows, a `--dir` full of traps, HAVE frames for thousands
//! of chunks and the per-connection cost of a huge manifest. Each test
//! runs the real binary and checks real outcomes: copies byte for byte,
//! exact error lines, exit codes, memory and CPU from /proc.

use crate::common;

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::fake::{self, Answer, FakeConn, FakeNeighbour, fill_by, try_status_kib};
use common::{Proc, Ring, TestDir, audit_chunks, chunk_files, free_port, patience, wait_until};
use swarm::chunks::ChunkSet;
use swarm::manifest::{ChunkId, Layout, Manifest};
use swarm::wire::{self, Decoder, Message};

const CHUNK: usize = 102_400;
const MIB: usize = 1024 * 1024;

/// `swarm owner` arguments: port on loopback, `--dir DIR`, then `extra`
/// and the file.
fn owner_args(port: u16, dir: &str, file: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["owner", "--port", &port.to_string(), "--bind", "127.0.0.1"]
        .map(String::from)
        .to_vec();
    args.extend(["--dir".to_string(), dir.to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(file.display().to_string());
    args
}

/// `swarm peer` arguments on loopback with `--dir DIR`, then `extra`.
fn peer_args(owner: u16, port: u16, neighbour: u16, dir: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "peer",
        "--owner",
        &owner.to_string(),
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--download-neighbor",
        &neighbour.to_string(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(["--dir".to_string(), dir.to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Whether something listens on 127.0.0.1:`port` (or on every IPv4
/// address), read from /proc/net/tcp so that checking opens no
/// connection.
fn is_listening(port: u16) -> bool {
    let text = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let want = [
        format!("0100007F:{port:04X}"),
        format!("00000000:{port:04X}"),
    ];
    text.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 3 && want.iter().any(|w| w == fields[1]) && fields[3] == "0A"
    })
}

/// The last line of a log.
fn last_line(log: &str) -> &str {
    log.lines().last().unwrap_or("")
}

/// Flips one bit of the byte at `at` in `path`, in place.
fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let file = File::options().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at).unwrap();
    byte[0] ^= 0x20;
    file.write_all_at(&byte, at).unwrap();
}

/// A tmpfs mounted for one test; unmounted when dropped, even when the
/// test panics.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` reads it) at `path`,
    /// or returns `None` when that is not allowed (not root).
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs {
            path: path.to_path_buf(),
        })
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(ok.success(), "remount of {} failed", self.path.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let done = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !done {
            // Something still holds it open: detach it anyway.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

#[test]
fn a_full_disk_stops_the_peer_at_once_and_it_resumes_after() {
    // Failure: the peer's --dir is too small (1 MiB tmpfs, 3 MiB file),
    // then fills up half way (4 MiB: the output is allocated whole when
    // assembly starts, and the chunk files take the rest).
    // Guarantee: the peer stops at once with one `no space left on
    // device` line and exit status 1 (it does not spin until --wait):
    // when the output cannot be allocated, before it fetches anything;
    // when the chunk files fill the disk, with every chunk file it left
    // whole and verified. Once there is room the same command resumes
    // from those chunks and finishes with a byte-identical copy.
    let dir = TestDir::new("full-disk");
    let disk = dir.join("disk");
    let Some(tmpfs) = Tmpfs::mount(&disk, "1m") else {
        eprintln!("skipped: needs root to mount tmpfs");
        return;
    };
    let file = dir.join("input.bin");
    let data = common::random_file(&file, 3 * MIB, 31);
    let [owner_port, port, dead] = [free_port(), free_port(), free_port()];
    let mut owner = Proc::start(
        "owner",
        &dir.path,
        &owner_args(owner_port, "owner", &file, &["--peers", "1"]),
    );
    let disk_str = disk.display().to_string();
    let args = peer_args(
        owner_port,
        port,
        dead,
        &disk_str,
        &["--wait", "60", "--linger", "1"],
    );
    let prefix = "swarm: no space left on device writing ";

    // Too small for the output: stopped before any chunk is fetched.
    let mut peer = Proc::start("peer", &dir.path, &args);
    let status = peer
        .wait_for(Duration::from_secs(15))
        .expect("the peer did not stop within 15 s on a disk too small for the file");
    assert_eq!(status.code(), Some(1), "{}", peer.log_text());
    let log = peer.log_text();
    let line = last_line(&log);
    assert_eq!(
        line,
        format!("{prefix}{disk_str}/.input.bin.swarm-partial"),
        "{log}"
    );
    assert_eq!(audit_chunks(&disk), (0, 0), "chunks fetched with no room");

    // Room for the output, not for the chunk files too.
    tmpfs.resize("4m");
    let started = Instant::now();
    let mut peer = Proc::start("peer-run2", &dir.path, &args);
    let status = peer
        .wait_for(Duration::from_secs(15))
        .expect("the peer did not stop within 15 s of filling its disk");
    assert_eq!(status.code(), Some(1), "{}", peer.log_text());
    let log = peer.log_text();
    let line = last_line(&log);
    let path = line
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("last line is not {prefix:?}...: {line:?}"));
    assert!(
        path.starts_with(&format!("{disk_str}/")),
        "{path} is not under {disk_str}"
    );

    // Whatever is on the full disk is whole and verified.
    let (good, bad) = audit_chunks(&disk);
    assert_eq!(bad, 0, "a chunk file on the full disk is damaged");
    assert!(good > 0, "no chunk reached the disk before it filled");
    eprintln!(
        "the peer stopped after {:.2} s with {good} verified chunks: {line}",
        started.elapsed().as_secs_f64()
    );

    // Room again: the same command resumes from the verified chunks.
    tmpfs.resize("16m");
    let mut again = Proc::start("peer-run3", &dir.path, &args);
    again.expect_success();
    let log = again.log_text();
    let count = data.len().div_ceil(CHUNK);
    let want = format!("{good} of {count} chunks verified on disk");
    assert!(log.contains(&want), "no {want:?} in:\n{log}");
    assert!(
        fs::read(disk.join("input.bin")).unwrap() == data,
        "the resumed copy differs from the input"
    );
    drop(again);
    owner.kill();
}

/// What a fake peer read from the owner after asking to be seeded.
#[derive(Debug)]
struct SeedOutcome {
    chunks: usize,
    refused: Option<String>,
    /// How the connection ended if not with REFUSE.
    ended: Option<String>,
}

#[test]
fn with_once_a_file_that_changes_while_the_owner_splits_it_stops_the_owner() {
    // Failure: with --once, the owner's file is overwritten (same size, other bytes at
    // the end) while the owner is still writing its chunk files and
    // seeding a peer from them.
    // Guarantee: the owner never serves the new bytes as the old file: it
    // stops with status 1 and one line naming the file and the chunk,
    // and a peer being seeded is told why with REFUSE.
    let mut ring = Ring::new("changing", 1, 128 * MIB);
    ring.start_owner(&["--peers", "1", "--once"]);
    let port = ring.owner_port;
    let fake = thread::spawn(move || {
        wait_until("the owner to listen", || is_listening(port));
        let (mut conn, m) = FakeConn::join_owner(port, "fake");
        conn.stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        conn.send(&Message::ChunkList(ChunkSet::new(m.layout().count())));
        let deadline = Instant::now() + patience();
        let mut out = SeedOutcome {
            chunks: 0,
            refused: None,
            ended: None,
        };
        loop {
            if let Err(e) = fill_by(&mut conn.dec, &mut conn.stream, deadline) {
                out.ended = Some(e.to_string());
                return out;
            }
            match conn.dec.message() {
                Ok(Message::Chunk { .. }) => out.chunks += 1,
                Ok(Message::Refuse(why)) => {
                    out.refused = Some(why.to_string());
                    return out;
                }
                Ok(_) => {}
                Err(e) => {
                    out.ended = Some(e.to_string());
                    return out;
                }
            }
        }
    });

    let owner_dir = ring.dir.join("owner");
    wait_until("the owner to index the file", || {
        ring.owner
            .as_ref()
            .unwrap()
            .log_text()
            .contains("owner: indexed")
    });
    let split_at_change = chunk_files(&owner_dir);
    let changed_at = Instant::now();
    {
        let mut f = File::options().write(true).open(&ring.file).unwrap();
        f.seek(SeekFrom::Start((ring.data.len() - CHUNK) as u64))
            .unwrap();
        f.write_all(&common::random_bytes(CHUNK, 99)).unwrap();
    }
    let count = ring.data.len().div_ceil(CHUNK);
    eprintln!(
        "file changed {:.3} s after 'indexed' was seen, with {split_at_change} of {count} chunk files written",
        changed_at.elapsed().as_secs_f64()
    );

    let owner = ring.owner.as_mut().unwrap();
    let status = owner.wait_for(patience()).expect("the owner did not stop");
    let log = owner.log_text();
    assert!(
        !log.contains("owner: wrote "),
        "the split finished before the file was changed: a race in this test; make the file larger"
    );
    eprintln!(
        "the owner stopped {:.3} s after the change; {} chunk files on disk",
        changed_at.elapsed().as_secs_f64(),
        chunk_files(&owner_dir)
    );
    assert_eq!(status.code(), Some(1), "{log}");
    let line = last_line(&log);
    let prefix = format!(
        "swarm: integrity check failed: {} changed while being shared (chunk ",
        ring.file.display()
    );
    let suffix = " no longer matches its digest); restart the owner to share the new version";
    let chunk = line
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(suffix))
        .unwrap_or_else(|| panic!("unexpected last line: {line:?}"));
    // The last 100 KiB cover the end of chunk count-2 and all of count-1.
    let chunk: usize = chunk.parse().unwrap();
    assert!(
        chunk == count - 2 || chunk == count - 1,
        "chunk {chunk} did not change"
    );

    let seen = fake.join().unwrap();
    eprintln!("the fake peer read {} chunks, then {seen:?}", seen.chunks);
    assert_eq!(
        seen.refused.as_deref(),
        Some("the owner's file changed while being shared; the owner has stopped"),
        "the fake peer was not told why ({} chunks, then {:?})",
        seen.chunks,
        seen.ended
    );
}

#[test]
fn a_whole_file_mismatch_is_repaired_in_a_running_peer() {
    // Failure: a chunk goes bad on disk, in its chunk file and in the
    // partly assembled output alike, after it was verified and while the
    // peer is still waiting for its last chunk.
    // Guarantee: with --verify-output, the whole-file SHA-256 catches
    // it, the damaged chunk is dropped and fetched again, and the peer
    // still ends with status 0 and a byte-identical copy. (By default the
    // output is verified chunk by chunk as it is written, and damage done
    // on disk afterwards is not looked for.)
    const COUNT: usize = 40;
    let mut ring = Ring::new("whole-file", 1, COUNT * CHUNK - 7);
    ring.extra = ["--stall-timeout", "60", "--linger", "1", "--verify-output"]
        .map(String::from)
        .to_vec();
    // Two shares: this peer, the first to join, is seeded 0..K.
    ring.start_owner(&["--peers", "2"]);
    let owner_dir = ring.dir.join("owner");
    wait_until("the owner's manifest", || {
        owner_dir.join("manifest").exists()
    });
    let manifest = fake::manifest_of(&owner_dir);
    let k = (COUNT / 2) as u32;
    let j = k + 10;
    let fake = FakeNeighbour::start(
        manifest.clone(),
        Arc::new(ring.data.clone()),
        Answer::HoldBack(k),
    );
    ring.ports.push(fake.port);
    ring.start_peer(0);
    let dir = ring.peer_dir(0);
    let got_j = format!("received chunk {j} from");
    let held_back = swarm::store::chunk_path(&dir, manifest.layout().chunk_id(k).unwrap());
    // Chunk j is in the partial file once its arrival is logged.
    wait_until("the peer to hold all chunks but one", || {
        held_back.exists()
            || chunk_files(&dir) == COUNT - 1 && ring.peer(0).log_text().contains(&got_j)
    });
    assert!(
        !held_back.exists(),
        "chunk {k} arrived although held back (the owner sent it?)"
    );

    let pid = ring.peer(0).pid();
    common::signal(pid, "STOP");
    let id_j = manifest.layout().chunk_id(j).unwrap();
    flip_byte(&swarm::store::chunk_path(&dir, id_j), 100);
    flip_byte(
        &dir.join(".input.bin.swarm-partial"),
        manifest.layout().offset(id_j) + 100,
    );
    common::signal(pid, "CONT");
    fake.release.store(true, Ordering::Relaxed);

    ring.expect_identical_copies();
    let log = ring.peer(0).log_text();
    assert!(log.contains("dropped 1 damaged chunks"), "{log}");
    assert!(
        log.contains(&format!("chunk {j} is damaged on disk; fetching it again")),
        "{log}"
    );
    assert_eq!(
        log.matches(&got_j).count(),
        2,
        "chunk {j} was not fetched again:\n{log}"
    );
    assert_eq!(log.matches("verified sha256").count(), 1, "{log}");
}

/// Runs an owner sharing `data` under `name` and a ring of two peers in
/// `dir`, checks both copies, then restarts peer 0 alone and checks it
/// resumes everything.
fn share_under_name(dir: &TestDir, name: &str, data: &[u8]) {
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    let file = src.join(name);
    fs::write(&file, data).unwrap();
    let [owner_port, p0, p1] = [free_port(), free_port(), free_port()];
    let mut owner = Proc::start(
        "owner",
        &dir.path,
        &owner_args(owner_port, "owner", &file, &["--peers", "2"]),
    );
    let started = Instant::now();
    // With four chunks the owner's end game may deliver everything, so
    // a peer may never download from its neighbour: --linger lets it go.
    let extra = ["--linger", "1", "--stall-timeout", "2"];
    let mut peers = [
        Proc::start(
            "peer0",
            &dir.path,
            &peer_args(owner_port, p0, p1, "peer0", &extra),
        ),
        Proc::start(
            "peer1",
            &dir.path,
            &peer_args(owner_port, p1, p0, "peer1", &extra),
        ),
    ];
    for (i, peer) in peers.iter_mut().enumerate() {
        peer.expect_success();
        let out = swarm::store::default_output(&dir.join(&format!("peer{i}")), name);
        let got = fs::read(&out)
            .unwrap_or_else(|e| panic!("{name:?}: peer{i}: cannot read {}: {e}", out.display()));
        assert!(got == data, "{name:?}: peer{i}'s copy differs");
    }

    let ring_took = started.elapsed();
    // Resume: the directory's own files survived the copy beside them.
    let dead = free_port();
    let mut again = Proc::start(
        "peer0-run2",
        &dir.path,
        &peer_args(owner_port, p0, dead, "peer0", &["--linger", "1"]),
    );
    again.expect_success();
    let count = data.len().div_ceil(CHUNK);
    let log = again.log_text();
    let want = format!("{count} of {count} chunks verified on disk");
    assert!(log.contains(&want), "{name:?}: no {want:?} in:\n{log}");
    // Not vacuous: the first run logged each chunk it received so.
    assert!(
        peers[0].log_text().contains("received chunk"),
        "{name:?}: the first run's log has no \"received chunk\" line"
    );
    assert!(!log.contains("received chunk"), "{name:?}: {log}");
    let out = swarm::store::default_output(&dir.join("peer0"), name);
    assert!(fs::read(&out).unwrap() == data, "{name:?}: copy changed");
    eprintln!(
        "{}: ring {:.2} s, restart {:.2} s",
        name.chars().take(20).collect::<String>(),
        ring_took.as_secs_f64(),
        (started.elapsed() - ring_took).as_secs_f64()
    );
    owner.kill();
}

#[test]
fn names_that_collide_with_the_directory_or_fill_255_bytes() {
    // Failure: the shared file is called like the directory's own files
    // (`chunks`, `manifest`, `summary.txt`) or has a name as long as a
    // file name can be (255 bytes of ASCII, or 254 bytes of two-byte
    // UTF-8 characters), so the copy, or the names made from it (the
    // partial file, temporary files), could overwrite the peer's
    // bookkeeping or be too long to create.
    // Guarantee: every copy lands at store::default_output, whole and
    // byte-identical, and a restart still finds every chunk verified.
    let names = [
        "chunks".to_string(),
        "manifest".to_string(),
        "summary.txt".to_string(),
        "n".repeat(255),
        "é".repeat(127),
    ];
    assert_eq!(names[3].len(), 255);
    assert_eq!(names[4].len(), 254);
    let data = common::random_bytes(3 * CHUNK + 1234, 4);
    // All at once: the files are small and the processes mostly wait.
    let dirs: Vec<TestDir> = (0..names.len())
        .map(|i| TestDir::new(&format!("names-{i}")))
        .collect();
    thread::scope(|s| {
        for (name, dir) in names.iter().zip(&dirs) {
            let data = &data;
            s.spawn(move || share_under_name(dir, name, data));
        }
    });
}

#[test]
fn nothing_in_the_directory_is_trusted_on_restart() {
    // Attack: while a peer is stopped, its --dir is rigged: one chunk
    // file becomes a symlink to /dev/zero, another a FIFO, the partial
    // output a symlink to a file outside the directory, and the copy is
    // deleted.
    // Guarantee: on restart the peer follows none of them: the two chunk
    // files count as damaged and are fetched again, the file outside is
    // untouched, memory stays small (an endless /dev/zero was not read)
    // and no read blocks on the FIFO; it ends with status 0 and a
    // byte-identical copy within 20 s.
    let mut ring = Ring::new("untrusted", 1, 10 * CHUNK + 5);
    ring.extra = ["--linger", "1"].map(String::from).to_vec();
    ring.ports.push(free_port()); // a download neighbour nobody runs
    ring.start_owner(&["--peers", "1"]);
    ring.start_peer(0);
    ring.expect_identical_copies();
    ring.kill_peer(0); // already gone: this only keeps its log apart

    let dir = ring.peer_dir(0);
    let chunks = dir.join("chunks");
    let zero = chunks.join("00000002.chunk");
    let fifo = chunks.join("00000005.chunk");
    fs::remove_file(&zero).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    fs::remove_file(&fifo).unwrap();
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo failed");
    let victim = ring.dir.join("victim.txt");
    let victim_data = b"not swarm's to write\n".repeat(100);
    fs::write(&victim, &victim_data).unwrap();
    let partial = dir.join(".input.bin.swarm-partial");
    std::os::unix::fs::symlink(&victim, &partial).unwrap();
    fs::remove_file(dir.join("input.bin")).unwrap();

    ring.start_peer(0);
    let pid = ring.peer(0).pid();
    let started = Instant::now();
    let (mut max_rss, mut hwm) = (0u64, 0u64);
    let status = loop {
        if let Some(status) = ring.peer(0).wait_for(Duration::ZERO) {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the restarted peer did not exit within 20 s"
        );
        if let Some(rss) = try_status_kib(pid, "VmRSS") {
            max_rss = max_rss.max(rss);
        }
        if let Some(h) = try_status_kib(pid, "VmHWM") {
            hwm = h;
        }
        thread::sleep(Duration::from_millis(10));
    };
    eprintln!(
        "restart took {:.2} s; max VmRSS {max_rss} KiB, last VmHWM {hwm} KiB",
        started.elapsed().as_secs_f64()
    );
    assert!(status.success(), "{}", ring.peer(0).log_text());
    assert!(hwm > 0, "never read the peer's memory");
    assert!(max_rss < 64 * 1024, "VmRSS reached {max_rss} KiB");
    assert!(hwm < 64 * 1024, "VmHWM reached {hwm} KiB");

    let log = ring.peer(0).log_text();
    for path in [&zero, &fifo] {
        // The peer names the file as its --dir (relative) gives it.
        let want = format!(
            "dropping damaged chunk file peer0/chunks/{}",
            path.file_name().unwrap().to_string_lossy()
        );
        assert!(log.contains(&want), "no {want:?} in:\n{log}");
    }
    assert_eq!(log.matches("dropping damaged chunk file").count(), 2);
    assert!(log.contains("9 of 11 chunks verified on disk"), "{log}");
    assert!(
        fs::read(dir.join("input.bin")).unwrap() == ring.data,
        "the copy differs from the input"
    );
    assert!(
        fs::read(&victim).unwrap() == victim_data,
        "the victim file was written"
    );
    assert!(
        fs::metadata("/dev/zero")
            .unwrap()
            .file_type()
            .is_char_device(),
        "/dev/zero is not a device any more"
    );
    for path in [&zero, &fifo] {
        let meta = fs::symlink_metadata(path).unwrap();
        assert!(
            meta.is_file(),
            "{} is not a regular file again",
            path.display()
        );
    }
    assert!(
        !fs::symlink_metadata(&partial).is_ok_and(|m| m.file_type().is_symlink()),
        "the partial-file symlink is still there"
    );
}

#[test]
fn have_frames_for_thousands_of_chunks_fit_the_frame_limit() {
    // Failure: with 1 KiB chunks an 8 MiB file has 8192 chunks; a peer
    // that gains many at once would announce them in one HAVE frame of
    // 32 KiB, far over the receiver's 1088-byte frame limit, and every
    // neighbour would cut it off.
    // Guarantee: HAVE is split into frames within the limit; a ring of
    // three finishes with identical copies and no frame is refused.
    let layout = Layout::new(8 * MIB as u64, 1024).unwrap();
    let ids: Vec<ChunkId> = layout.ids().collect();
    assert_eq!(ids.len(), 8192);
    let mut buf = Vec::new();
    wire::encode_have(&ids, &layout, &mut buf);
    let mut dec = Decoder::new();
    dec.set_layout(layout.clone());
    let mut r = &buf[..];
    let (mut got, mut frames) = (Vec::new(), 0);
    loop {
        match dec.read(&mut r) {
            Ok(Message::Have(part)) => {
                got.extend(part);
                frames += 1;
            }
            Err(wire::Error::Closed) => break,
            other => panic!("HAVE frame {frames} did not decode: {other:?}"),
        }
    }
    assert_eq!(got, ids, "the HAVE frames do not carry every ID once");
    assert!(frames > 1, "8192 IDs cannot fit one frame");

    // The ring, with a downloader of peer 0 that asks for chunks and does
    // not read them until peer 0's writer is stuck in a write; meanwhile
    // peer 0 gains a third of the file from peer 1, and all of that is
    // announced at once when the downloader reads again. (Left alone, a
    // ring announces at most about 80 chunks at a time: one frame.)
    let mut ring = Ring::new("have-frames", 3, 8 * MIB);
    ring.extra = ["--linger", "3", "--stall-timeout", "30"]
        .map(String::from)
        .to_vec();
    ring.start_owner(&["--chunk-size", "1024", "--peers", "3"]);
    ring.start_peer(0);
    wait_until("peer 0's seeds", || {
        ring.peer(0).log_text().contains("the owner seeded")
    });
    let seeded = chunk_files(&ring.peer_dir(0));
    let m = fake::manifest_of(&ring.peer_dir(0));
    let deadline = Instant::now() + patience();
    let mut slow = FakeConn::hello(ring.ports[0], &m, "slow reader");
    fill_by(&mut slow.dec, &mut slow.stream, deadline).unwrap();
    let held = match slow.dec.message() {
        Ok(Message::ChunkList(set)) => set,
        other => panic!("expected CHUNK_LIST, got {other:?}"),
    };
    // Ask in rounds of 200 (under the 256 a connection may queue) until
    // peer 0's writer stops getting rid of chunks: the socket buffers
    // between the two are full and the writer is blocked in a write.
    let ids: Vec<ChunkId> = held.iter(&layout).collect();
    let sent = |ring: &mut Ring| ring.peer(0).log_text().matches(" to slow reader\n").count();
    let (mut asked, mut stuck) = (0, false);
    while !stuck {
        assert!(
            asked < 20_000,
            "peer 0 took {asked} chunks without blocking"
        );
        let mut round = Vec::new();
        for n in 0..200 {
            let id = ids[(asked + n) % ids.len()];
            wire::encode(&Message::Request(id), &mut round);
        }
        slow.stream.write_all(&round).unwrap();
        asked += 200;
        let (mut seen, mut moved) = (sent(&mut ring), Instant::now());
        while seen < asked {
            assert!(Instant::now() < deadline, "timed out asking for chunks");
            thread::sleep(Duration::from_millis(20));
            let now = sent(&mut ring);
            if now != seen {
                (seen, moved) = (now, Instant::now());
            } else if moved.elapsed() >= Duration::from_secs(1) {
                stuck = true;
                break;
            }
        }
    }
    eprintln!(
        "peer 0's writer stuck after {} of {asked} chunks",
        sent(&mut ring)
    );
    ring.start_peer(1);
    wait_until("peer 0 to gain peer 1's share", || {
        chunk_files(&ring.peer_dir(0)) >= seeded + 2000
    });
    let (mut chunks, mut announced, mut biggest) = (0, 0, 0);
    while chunks < asked || announced < 2000 {
        fill_by(&mut slow.dec, &mut slow.stream, deadline)
            .unwrap_or_else(|e| panic!("after {chunks} chunks and {announced} announced IDs: {e}"));
        match slow.dec.message() {
            Ok(Message::Chunk { .. }) => chunks += 1,
            Ok(Message::Have(ids)) => {
                announced += ids.len();
                biggest = biggest.max(ids.len());
            }
            Ok(_) => {}
            Err(e) => panic!("a frame from peer 0 did not decode: {e}"),
        }
    }
    eprintln!("peer 0 announced {announced} chunks, at most {biggest} in one HAVE frame");
    assert_eq!(
        biggest,
        wire::max_have_ids(&layout),
        "no announcement needed more than one frame: the writer was never stuck"
    );
    drop(slow);

    let t = Instant::now();
    ring.start_peer(2);
    ring.expect_identical_copies();
    eprintln!(
        "ring finished {:.2} s after peer 2 started",
        t.elapsed().as_secs_f64()
    );
    let mut logs = vec![("owner".to_string(), ring.owner.as_ref().unwrap().log_text())];
    for i in 0..3 {
        logs.push((format!("peer{i}"), ring.peer(i).log_text()));
    }
    for (who, log) in logs {
        for bad in ["over the", "malformed"] {
            let line = log.lines().find(|l| l.contains(bad));
            assert!(line.is_none(), "{who}: {}", line.unwrap_or(""));
        }
    }
}

/// A fake owner for a manifest: HELLO, MANIFEST and HASHES, reads the
/// peer's chunk-ID list, SEED_DONE, then only KEEPALIVE every 2 s until
/// `stop` is set. Serves one session after another.
fn fake_owner(listener: TcpListener, m: &Manifest, file_id: [u8; 32], stop: &AtomicBool) {
    let frames = swarm::owner::encode_manifest(m);
    listener.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut s, _)) = listener.accept() else {
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let deadline = Instant::now() + patience();
        let mut dec = Decoder::new();
        if fill_by(&mut dec, &mut s, deadline).is_err()
            || !matches!(dec.message(), Ok(Message::Hello { .. }))
        {
            continue;
        }
        let hello = Message::Hello {
            version: wire::VERSION,
            file_id,
            name: "fake owner",
        };
        if wire::send(&mut s, &hello).is_err() || s.write_all(&frames).is_err() {
            continue;
        }
        dec.set_layout(m.layout().clone());
        if fill_by(&mut dec, &mut s, deadline).is_err()
            || !matches!(dec.message(), Ok(Message::ChunkList(_)))
            || wire::send(&mut s, &Message::SeedDone).is_err()
        {
            continue;
        }
        let mut ping = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            match dec.fill(&mut s) {
                Ok(_) => {}
                Err(_) => break,
            }
            if ping.elapsed() >= Duration::from_secs(2) {
                if wire::send(&mut s, &Message::KeepAlive).is_err() {
                    break;
                }
                ping = Instant::now();
            }
        }
    }
}

#[test]
fn per_connection_cost_does_not_grow_with_the_chunk_count() {
    // Attack: 16 strangers open connections to a peer sharing a file of
    // 4,194,304 chunks (the most a manifest allows) at once. Each HELLO
    // once rebuilt the manifest's 300 MB text form to compute its ID:
    // 4.3 s of CPU each, and 16 at once took the peer to 4 GiB.
    // Guarantee: a handshake costs what the chunk-ID list costs (512 KiB)
    // and no more: 16 together take under 2 s of the peer's CPU and add
    // under 64 MiB to its resident memory.
    let built = Instant::now();
    let layout = Layout::new(4 << 30, 1024).unwrap();
    assert_eq!(layout.count(), 4_194_304);
    let hashes = vec![[0u8; 32]; layout.count() as usize];
    let m = Manifest::new("big.bin".into(), layout.clone(), [7; 32], hashes).unwrap();
    let file_id = m.id();
    eprintln!(
        "built the 4,194,304-chunk manifest in {:.2} s",
        built.elapsed().as_secs_f64()
    );

    let dir = TestDir::new("per-conn");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let owner_port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let m = Arc::new(m);
    let owner = {
        let (m, stop) = (Arc::clone(&m), Arc::clone(&stop));
        thread::spawn(move || fake_owner(listener, &m, file_id, &stop))
    };
    /// Stops the fake owner even when an assertion fails.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop_owner = StopOnDrop(Arc::clone(&stop));

    let [port, dead] = [free_port(), free_port()];
    let args = peer_args(
        owner_port,
        port,
        dead,
        "peer",
        &["--stall-timeout", "600", "--wait", "600"],
    );
    let mut peer = Proc::start("peer", &dir.path, &args);
    wait_until("the manifest at the peer", || {
        peer.log_text().contains("received manifest from the owner")
    });
    let deadline = Instant::now() + patience();
    drop(FakeConn::hello_with(port, file_id, layout.clone(), "probe"));
    eprintln!(
        "the peer serves its upload port {:.2} s after the test started",
        built.elapsed().as_secs_f64()
    );

    let pid = peer.pid();
    let cpu_before = fake::cpu_secs(pid);
    let rss_before = fake::status_kib(pid, "VmRSS");
    let started = Instant::now();
    let conns: Vec<FakeConn> = thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let layout = layout.clone();
                s.spawn(move || {
                    let name = format!("stranger {i}");
                    let mut c = FakeConn::hello_with(port, file_id, layout, &name);
                    fill_by(&mut c.dec, &mut c.stream, deadline).expect("no chunk-ID list");
                    match c.dec.message() {
                        Ok(Message::ChunkList(set)) => {
                            assert_eq!(set.len(), 0);
                            assert_eq!(set.to_bitfield().len(), 524_288);
                        }
                        other => panic!("expected CHUNK_LIST, got {other:?}"),
                    }
                    c
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = started.elapsed();
    let cpu = fake::cpu_secs(pid) - cpu_before;
    let rss_after = fake::status_kib(pid, "VmRSS");
    let grew = rss_after.saturating_sub(rss_before);
    eprintln!(
        "16 handshakes: {:.2} s wall, {cpu:.2} s of the peer's CPU; VmRSS {rss_before} -> {rss_after} KiB (+{grew} KiB)",
        took.as_secs_f64()
    );
    assert_eq!(conns.len(), 16);
    assert!(cpu < 2.0, "16 handshakes took {cpu:.2} s of CPU");
    assert!(grew < 64 * 1024, "VmRSS grew by {grew} KiB");
    assert!(
        peer.wait_for(Duration::ZERO).is_none(),
        "the peer exited: {}",
        peer.log_text()
    );
    drop(conns);
    peer.kill();
    stop.store(true, Ordering::Relaxed);
    owner.join().unwrap();
}
