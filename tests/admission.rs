//! Admission by a swarm secret, end to end: a ring that shares a secret
//! finishes; peers without it, or with another, are refused by the owner
//! and by peers and take nothing; a stranger is sent one REFUSE and
//! nothing else; a peer refuses an owner that cannot prove the secret; a
//! secret file others may read is warned about; and the secret appears in
//! no log and no process argument.

use crate::common;

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::fake::{fill_by, manifest_of};
use common::{
    Proc, Ring, SWARM, TestDir, chunk_files, free_port, free_ports, patience, wait_until,
};
use swarm::auth::{self, Secret};
use swarm::manifest::{Layout, Manifest, sha256};
use swarm::wire::{self, Decoder, Message};

const CHUNK: usize = 102_400;

/// The swarm's secret; tests look for it in every log.
const SECRET: &str = "correct horse battery staple 7f3a9c";
/// A secret of another swarm.
const OTHER: &str = "another swarm entirely 51d2e8";

/// How long a refused peer may take to give up: well under `--wait`, so
/// a refusal is seen to be final rather than waited out.
const PROMPTLY: Duration = Duration::from_secs(10);

/// Writes `text` to `path` with file mode `mode` and returns the path as
/// an argument.
fn secret_file(path: &Path, text: &str, mode: u32) -> String {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    path.display().to_string()
}

/// Fails the test if any of `logs` holds either secret's text.
fn assert_secret_unseen(logs: &[String]) {
    for log in logs {
        for secret in [SECRET, OTHER] {
            assert!(!log.contains(secret), "a log shows a secret:\n{log}");
        }
    }
}

/// Fails the test unless `dir`, a refused peer's `--dir`, holds nothing
/// of the file: no manifest, no chunk, no output.
fn assert_nothing_stored(dir: &Path) {
    assert!(
        !dir.join("manifest").exists(),
        "{} has a manifest",
        dir.display()
    );
    assert_eq!(chunk_files(dir), 0, "{} has chunks", dir.display());
    let files = fs::read_dir(dir).map_or(0, |d| d.count());
    assert_eq!(files, 0, "{} is not empty", dir.display());
}

/// Waits for `peer` to exit and checks it exited 1, promptly, with `line`
/// as its last line.
fn assert_refused(peer: &mut Proc, line: &str) {
    let status = peer
        .wait_for(PROMPTLY)
        .unwrap_or_else(|| panic!("{} did not give up within {PROMPTLY:?}", peer.name));
    let log = peer.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert_eq!(log.lines().last(), Some(line), "{log}");
}

/// Every frame `stream` receives until the other side closes, as
/// `REFUSE <reason>` or the kind's name in capitals. A reset counts as a
/// close: a side that quits with our frames unread resets the connection.
fn frames_until_closed(stream: &mut TcpStream) -> Vec<String> {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + patience();
    let mut dec = Decoder::new();
    let mut got = Vec::new();
    loop {
        match fill_by(&mut dec, stream, deadline) {
            Ok(()) => got.push(match dec.message().unwrap() {
                Message::Refuse(why) => format!("REFUSE {why}"),
                other => other.name().to_uppercase(),
            }),
            Err(wire::Error::Closed) => return got,
            Err(wire::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return got;
            }
            Err(e) => panic!("{e} after {got:?}"),
        }
    }
}

/// Connects to `port` as a stranger without the secret would: a HELLO
/// for `file_id`. Returns everything it is sent.
fn stranger_hello(port: u16, file_id: [u8; 32]) -> Vec<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let hello = Message::Hello {
        version: wire::VERSION,
        file_id,
        name: "stranger",
    };
    wire::send(&mut s, &hello).unwrap();
    frames_until_closed(&mut s)
}

/// Connects to `port` as a stranger that guesses: a CHALLENGE, then a
/// made-up PROOF and a HELLO. Returns everything it is sent.
fn stranger_guess(port: u16) -> Vec<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    wire::send(&mut s, &Message::Challenge([7; 32])).unwrap();
    let deadline = Instant::now() + patience();
    let mut dec = Decoder::new();
    let mut got = Vec::new();
    for _ in 0..2 {
        fill_by(&mut dec, &mut s, deadline).unwrap();
        got.push(dec.message().unwrap().name().to_uppercase());
    }
    wire::send(&mut s, &Message::Proof([0; 32])).unwrap();
    let hello = Message::Hello {
        version: wire::VERSION,
        file_id: [0; 32],
        name: "guesser",
    };
    let _ = wire::send(&mut s, &hello);
    got.extend(frames_until_closed(&mut s));
    got
}

/// Accepts one connection on `listener`, or fails the test after
/// [`patience`].
fn accept_within(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + patience();
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                swarm::net::configure(&s).unwrap();
                return s;
            }
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("no connection: {e}"),
        }
    }
}

/// A ring of three that shares a secret finishes with identical copies.
/// The peers' copy of the secret ends in CRLF and may be read by others:
/// the same secret, with a warning. The secret is in no log and no
/// process's arguments.
#[test]
fn a_ring_that_shares_a_secret_completes() {
    let mut ring = Ring::new("secret-ring", 3, 12 * CHUNK + 7);
    let private = secret_file(
        &ring.dir.join("swarm.secret"),
        &format!("{SECRET}\n"),
        0o600,
    );
    let loose = secret_file(
        &ring.dir.join("loose.secret"),
        &format!("{SECRET}\r\n"),
        0o644,
    );
    ring.start_owner(&["--secret-file", &private]);
    ring.extra = vec!["--secret-file".into(), loose.clone()];
    for i in 0..3 {
        ring.start_peer(i);
    }
    ring.expect_all_identical();
    let owner = ring.owner.as_ref().unwrap();
    let cmdline = fs::read(format!("/proc/{}/cmdline", owner.pid())).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains(&private));
    let owner_log = owner.log_text();
    assert!(!owner_log.contains("open to anyone"), "{owner_log}");
    assert!(!owner_log.contains("readable by others"), "{owner_log}");
    let mut logs = vec![owner_log, String::from_utf8_lossy(&cmdline).into_owned()];
    let warning = format!("secret file {loose} is readable by others; `chmod 600` it");
    for i in 0..3 {
        let log = ring.peer(i).log_text();
        assert_eq!(log.matches(&warning).count(), 1, "peer{i}: {log}");
        assert!(!log.contains("could not prove"), "peer{i}: {log}");
        logs.push(log);
    }
    assert_secret_unseen(&logs);
}

/// The owner refuses a peer with another secret and one with none: each
/// exits 1 at once with one line saying why, holding nothing, and the
/// owner says why it closed each connection.
#[test]
fn peers_without_the_secret_or_with_another_are_refused_by_the_owner() {
    let mut ring = Ring::new("secret-refused", 2, 4 * CHUNK);
    let right = secret_file(&ring.dir.join("swarm.secret"), SECRET, 0o600);
    let wrong = secret_file(&ring.dir.join("other.secret"), OTHER, 0o600);
    ring.start_owner(&["--secret-file", &right]);
    wait_until("the owner's manifest", || {
        ring.dir.join("owner/summary.txt").exists()
    });
    ring.extra = vec!["--secret-file".into(), wrong];
    ring.start_peer(0);
    ring.extra = Vec::new();
    ring.start_peer(1);
    let owner = ring.owner_port;
    assert_refused(
        ring.peer(0),
        &format!(
            "swarm: owner at 127.0.0.1:{owner} could not prove the swarm secret \
             (a different secret, or an impostor)"
        ),
    );
    assert_refused(
        ring.peer(1),
        &format!(
            "swarm: owner at 127.0.0.1:{owner}: refused: \
             this swarm needs its secret: start with --secret-file"
        ),
    );
    assert_nothing_stored(&ring.peer_dir(0));
    assert_nothing_stored(&ring.peer_dir(1));
    for want in [
        "could not prove the swarm secret (a different secret, or an impostor); connection closed",
        "offered no proof of the swarm secret; connection closed",
    ] {
        wait_until(want, || {
            ring.owner.as_ref().unwrap().log_text().contains(want)
        });
    }
    let owner_log = ring.owner.as_ref().unwrap().log_text();
    let logs = [owner_log, ring.peer(0).log_text(), ring.peer(1).log_text()];
    assert_secret_unseen(&logs);
}

/// A connection without the secret gets exactly one REFUSE from the
/// owner and then the close: no HELLO, no MANIFEST. One that guesses a
/// proof gets the owner's CHALLENGE and PROOF, then REFUSE.
#[test]
fn a_stranger_gets_one_refuse_from_the_owner_and_nothing_else() {
    let mut ring = Ring::new("secret-stranger", 1, 3 * CHUNK);
    let right = secret_file(&ring.dir.join("swarm.secret"), SECRET, 0o600);
    ring.start_owner(&["--secret-file", &right]);
    wait_until("the owner's manifest", || {
        ring.dir.join("owner/summary.txt").exists()
    });
    let m = manifest_of(&ring.dir.join("owner"));
    for file_id in [[0; 32], m.id()] {
        assert_eq!(
            stranger_hello(ring.owner_port, file_id),
            vec![format!("REFUSE {}", auth::NEEDS_SECRET)]
        );
    }
    assert_eq!(
        stranger_guess(ring.owner_port),
        vec![
            "CHALLENGE".to_string(),
            "PROOF".into(),
            format!("REFUSE {}", auth::WRONG_SECRET)
        ]
    );
}

/// A downloader without the secret at a peer's upload port gets REFUSE
/// and no chunk list; one that guesses gets REFUSE after the proofs.
#[test]
fn a_downloader_without_the_secret_gets_no_chunk_list_from_a_peer() {
    let mut ring = Ring::new("secret-upload", 1, 4 * CHUNK + 1);
    let right = secret_file(&ring.dir.join("swarm.secret"), SECRET, 0o600);
    ring.start_owner(&["--secret-file", &right, "--peers", "1"]);
    // An explicit --linger keeps it up to be probed: the owner, whose only
    // peer it is, would otherwise release it as soon as it is complete.
    ring.extra = ["--secret-file", &right, "--linger", "30"]
        .map(String::from)
        .to_vec();
    ring.start_peer_to(0, free_port());
    wait_until("the peer's manifest", || {
        ring.peer(0)
            .log_text()
            .contains("received manifest from the owner")
    });
    let m = manifest_of(&ring.dir.join("owner"));
    let port = ring.ports[0];
    assert_eq!(
        stranger_hello(port, m.id()),
        vec![format!("REFUSE {}", auth::NEEDS_SECRET)]
    );
    assert_eq!(
        stranger_guess(port),
        vec![
            "CHALLENGE".to_string(),
            "PROOF".into(),
            format!("REFUSE {}", auth::WRONG_SECRET)
        ]
    );
    wait_until("the peer's warnings", || {
        let log = ring.peer(0).log_text();
        log.contains("offered no proof of the swarm secret; connection closed")
            && log.contains("could not prove the swarm secret (a different secret, or an impostor); connection closed")
    });
    let logs = [
        ring.owner.as_ref().unwrap().log_text(),
        ring.peer(0).log_text(),
    ];
    assert_secret_unseen(&logs);
}

/// A download neighbour that cannot prove the secret is not fatal: the
/// peer warns, tries again, and finishes from the owner.
#[test]
fn a_neighbour_that_cannot_prove_the_secret_is_retried_not_fatal() {
    let mut ring = Ring::new("secret-neighbour", 1, 4 * CHUNK + 3);
    let right = secret_file(&ring.dir.join("swarm.secret"), SECRET, 0o600);
    let wrong = secret_file(&ring.dir.join("other.secret"), OTHER, 0o600);
    ring.start_owner(&["--secret-file", &right, "--peers", "1"]);
    // A neighbour of another swarm: it proves its own secret, every time.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let neighbour = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let tries = Arc::new(AtomicUsize::new(0));
    let (stop2, tries2) = (Arc::clone(&stop), Arc::clone(&tries));
    let fake = thread::spawn(move || {
        let other = Secret::load(Path::new(&wrong)).unwrap();
        while !stop2.load(Ordering::Relaxed) {
            let Ok((mut s, _)) = listener.accept() else {
                thread::sleep(Duration::from_millis(10));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            swarm::net::configure(&s).unwrap();
            tries2.fetch_add(1, Ordering::Relaxed);
            let deadline = Instant::now() + Duration::from_secs(5);
            let admitted = auth::admit(&mut s, &mut Decoder::new(), Some(&other), "p", deadline);
            assert!(admitted.is_err(), "a peer of another swarm was admitted");
        }
    });
    // --follow: it stays once complete (the owner, knowing it is the only
    // peer, would otherwise release it at once), so the retries can be
    // counted.
    ring.extra = ["--secret-file", &right, "--follow"]
        .map(String::from)
        .to_vec();
    ring.start_peer_to(0, neighbour);
    wait_until("two tries at the neighbour", || {
        tries.load(Ordering::Relaxed) >= 2
    });
    let copy = ring.peer_dir(0).join("input.bin");
    wait_until("the copy", || {
        fs::read(&copy).is_ok_and(|got| got == ring.data)
    });
    ring.peer(0).kill();
    stop.store(true, Ordering::Relaxed);
    fake.join().unwrap();
    let log = ring.peer(0).log_text();
    let warning = format!(
        "download neighbour at 127.0.0.1:{neighbour}: 127.0.0.1:{neighbour} could not prove \
         the swarm secret (a different secret, or an impostor); retrying"
    );
    assert!(log.contains(&warning), "{log}");
    assert!(tries.load(Ordering::Relaxed) >= 2, "{log}");
    assert_secret_unseen(&[log]);
}

/// A lone peer with the secret against the owner at `owner` (a port),
/// downloading from nobody; returns the peer and its `--dir`.
fn lone_peer(dir: &TestDir, owner: u16, secret: &str) -> (Proc, PathBuf) {
    let ports = free_ports(2);
    let args: Vec<String> = [
        "peer",
        "--owner",
        &owner.to_string(),
        "--port",
        &ports[0].to_string(),
        "--bind",
        "127.0.0.1",
        "--download-neighbor",
        &ports[1].to_string(),
        "--dir",
        "peer",
        "--secret-file",
        secret,
        // It stays to be probed: the owner, whose only peer it is, would
        // otherwise release it as soon as it is complete.
        "--linger",
        "30",
    ]
    .map(String::from)
    .to_vec();
    (Proc::start("peer", &dir.path, &args), dir.join("peer"))
}

/// An impostor owner is refused by a peer that holds the secret, and
/// nothing it offers is stored: one of another swarm (it proves the wrong
/// secret), one that skips admission and offers a manifest at once, and
/// a real owner that runs without a secret.
#[test]
fn an_impostor_owner_is_refused_by_a_peer() {
    let dir = TestDir::new("secret-impostor");
    let right = secret_file(&dir.join("swarm.secret"), SECRET, 0o600);
    let wrong = secret_file(&dir.join("other.secret"), OTHER, 0o600);
    let unproven = "could not prove the swarm secret (a different secret, or an impostor)";

    // 1. Another swarm's owner: it proves its own secret.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let other = Secret::load(Path::new(&wrong)).unwrap();
    let fake = thread::spawn(move || {
        let mut s = accept_within(&listener);
        let deadline = Instant::now() + patience();
        auth::admit(
            &mut s,
            &mut Decoder::new(),
            Some(&other),
            "the peer",
            deadline,
        )
    });
    let (mut peer, peer_dir) = lone_peer(&dir, port, &right);
    assert_refused(
        &mut peer,
        &format!("swarm: owner at 127.0.0.1:{port} {unproven}"),
    );
    let seen = fake.join().unwrap().unwrap_err().to_string();
    assert_eq!(
        seen,
        format!("the peer {unproven}"),
        "the peer gave its proof"
    );
    assert_nothing_stored(&peer_dir);
    let mut logs = vec![peer.log_text()];
    drop(peer);

    // 2. An impostor that skips admission: HELLO and a manifest at once.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = thread::spawn(move || {
        let mut s = accept_within(&listener);
        let mut dec = Decoder::new();
        let first = dec.read(&mut s).unwrap().name();
        let data = common::random_bytes(3000, 9);
        let layout = Layout::new(3000, 1024).unwrap();
        let hashes = data.chunks(1024).map(sha256).collect();
        let m = Manifest::new("bait.bin".into(), layout, sha256(&data), hashes).unwrap();
        let hello = Message::Hello {
            version: wire::VERSION,
            file_id: m.id(),
            name: "owner",
        };
        let _ = wire::send(&mut s, &hello);
        let _ = std::io::Write::write_all(&mut s, &swarm::owner::encode_manifest(&m));
        (first, frames_until_closed(&mut s))
    });
    let (mut peer, peer_dir) = lone_peer(&dir, port, &right);
    assert_refused(
        &mut peer,
        &format!("swarm: owner at 127.0.0.1:{port} {unproven}"),
    );
    let (first, after) = fake.join().unwrap();
    assert_eq!(first, "challenge");
    assert_eq!(
        after,
        Vec::<String>::new(),
        "the peer sent more than its CHALLENGE"
    );
    assert_nothing_stored(&peer_dir);
    logs.push(peer.log_text());
    drop(peer);

    // 3. A real owner without a secret.
    let mut ring = Ring::new("secret-open-owner", 1, 2 * CHUNK);
    ring.start_owner(&[]);
    let (mut peer, peer_dir) = lone_peer(&ring.dir, ring.owner_port, &right);
    assert_refused(
        &mut peer,
        &format!(
            "swarm: owner at 127.0.0.1:{} could not prove the swarm secret: it runs without one",
            ring.owner_port
        ),
    );
    assert_nothing_stored(&peer_dir);
    let open = format!(
        "owner: no --secret-file: the swarm is open to anyone who can reach port {}",
        ring.owner_port
    );
    wait_until("the owner's refusal", || {
        let log = ring.owner.as_ref().unwrap().log_text();
        log.contains("offered a swarm secret, but this side has none; connection closed")
    });
    let owner_log = ring.owner.as_ref().unwrap().log_text();
    assert_eq!(owner_log.matches(&open).count(), 1, "{owner_log}");
    logs.extend([peer.log_text(), owner_log]);
    assert_secret_unseen(&logs);
}

/// A secret file that cannot serve stops the owner or a peer at once
/// with one line that names it, from the flag or from the environment.
#[test]
fn a_bad_secret_file_stops_owner_and_peer_at_once() {
    let dir = TestDir::new("secret-bad");
    let file = dir.join("input.bin");
    fs::write(&file, b"some bytes").unwrap();
    let empty = secret_file(&dir.join("empty.secret"), " \n", 0o600);
    let missing = dir.join("missing.secret").display().to_string();
    let port = free_port().to_string();
    let owner = |secret: Option<&str>, env: Option<&str>| {
        let mut cmd = Command::new(SWARM);
        cmd.args(["owner", "--port", &port, "--bind", "127.0.0.1"]);
        if let Some(path) = secret {
            cmd.args(["--secret-file", path]);
        }
        cmd.arg(&file)
            .current_dir(&dir.path)
            .env("RUST_LOG", "warn");
        cmd.env_remove(swarm::cli::SECRET_FILE_ENV);
        if let Some(path) = env {
            cmd.env(swarm::cli::SECRET_FILE_ENV, path);
        }
        cmd.output().unwrap()
    };
    let cases = [
        (
            owner(Some(&empty), None),
            format!("swarm: secret file {empty} is empty"),
        ),
        (
            owner(None, Some(&missing)),
            format!("swarm: cannot read secret file {missing}: no such file or directory"),
        ),
        // The flag wins over the environment.
        (
            owner(Some(&empty), Some(&missing)),
            format!("swarm: secret file {empty} is empty"),
        ),
    ];
    for (out, want) in cases {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.trim_end(), want);
    }
    let out = Command::new(SWARM)
        .args([
            "peer",
            "--owner",
            &port,
            "--port",
            &port,
            "--download-neighbor",
            &port,
        ])
        .args(["--dir", "peer", "--secret-file", &missing])
        .current_dir(&dir.path)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!("swarm: cannot read secret file {missing}: no such file or directory")
    );
    assert!(!dir.join("peer").exists());
}

/// Reads one raw frame (length and all) from `s`.
fn raw_frame(s: &mut TcpStream) -> Vec<u8> {
    use std::io::Read;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut frame = len.to_vec();
    frame.resize(4 + u32::from_be_bytes(len) as usize, 0);
    s.read_exact(&mut frame[4..]).unwrap();
    frame
}

/// A relay between a peer and the real owner passes admission by handing
/// each side the other's challenge and proof, then answers with a file ID
/// of its own. The owner's HELLO carries a proof bound to the
/// connection's nonces and its file ID, which the relay cannot make for
/// another ID, so the peer takes nothing from it.
#[test]
fn a_relay_that_swaps_the_owners_file_id_is_refused() {
    use std::io::Write;
    let mut ring = Ring::new("secret-relay", 1, 2 * CHUNK);
    let right = secret_file(&ring.dir.join("swarm.secret"), SECRET, 0o600);
    ring.start_owner(&["--secret-file", &right]);
    let owner_port = ring.owner_port;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let relay = thread::spawn(move || {
        let mut peer = accept_within(&listener);
        peer.set_read_timeout(Some(PROMPTLY)).unwrap();
        let mut owner = TcpStream::connect(("127.0.0.1", owner_port)).unwrap();
        owner.set_read_timeout(Some(PROMPTLY)).unwrap();
        // CHALLENGE from the peer; CHALLENGE and PROOF from the owner;
        // PROOF and HELLO from the peer: all passed on untouched.
        let f = raw_frame(&mut peer);
        owner.write_all(&f).unwrap();
        for _ in 0..2 {
            let f = raw_frame(&mut owner);
            peer.write_all(&f).unwrap();
        }
        for _ in 0..2 {
            let f = raw_frame(&mut peer);
            owner.write_all(&f).unwrap();
        }
        // The owner's HELLO is swapped for one with another file ID; its
        // proof is passed on as it is.
        let hello = raw_frame(&mut owner);
        assert_eq!(hello[4], 1, "the owner answers with HELLO");
        let proof = raw_frame(&mut owner);
        assert_eq!(proof[4], 14, "the owner proves its HELLO");
        let mut fake = Vec::new();
        wire::encode(
            &Message::Hello {
                version: wire::VERSION,
                file_id: [9; 32],
                name: "owner",
            },
            &mut fake,
        );
        peer.write_all(&fake).unwrap();
        peer.write_all(&proof).unwrap();
        frames_until_closed(&mut peer)
    });
    let (mut peer, peer_dir) = lone_peer(&ring.dir, port, &right);
    assert_refused(
        &mut peer,
        &format!(
            "swarm: owner at 127.0.0.1:{port} could not prove the swarm secret \
             (a different secret, or an impostor)"
        ),
    );
    assert_eq!(relay.join().unwrap(), Vec::<String>::new());
    assert_nothing_stored(&peer_dir);
}
