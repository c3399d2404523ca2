//! Shared fixtures for the integration tests: a temporary directory per
//! test, free ports, files of pseudo-random bytes, and swarm processes
//! that are killed when the fixture is dropped, so a failed assertion
//! never leaves one running. Each process's stderr goes to a log file;
//! when a test panics the logs' last lines are printed.

#![allow(dead_code)]

pub mod fake;

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub const SWARM: &str = env!("CARGO_BIN_EXE_swarm");

/// One `read`, tried again while it is interrupted. A socket with a
/// read timeout returns `EINTR` when the test process is stopped and
/// continued (signal(7)), which a CI machine may do; that is no answer
/// from the other side.
pub fn read_some(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// How long any one wait in a test may take before it fails.
pub fn patience() -> Duration {
    let secs = std::env::var("SWARM_TEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok());
    Duration::from_secs(secs.unwrap_or(120))
}

/// A fresh directory for one test, removed when dropped unless the test
/// failed.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        // Directly under the temp dir: a shared parent would be left
        // behind (or raced for) once the last test removed its own.
        let path = std::env::temp_dir().join(format!(
            "swarm-tests-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TestDir { path }
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A port that was free a moment ago and that no other test in this
/// process has been given. Ports come from below the kernel's ephemeral
/// range (32768 and up), so no outgoing connection can take one between
/// this call and the process that binds it; each test binary starts at its
/// own offset.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let offset = (std::process::id() as usize % 100) * 200;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (10_000 + (offset + n) % 22_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `n` distinct free ports.
pub fn free_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| free_port()).collect()
}

/// Deterministic pseudo-random bytes (xorshift), different per `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `len` pseudo-random bytes to `path` and returns them.
pub fn random_file(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let data = random_bytes(len, seed);
    fs::write(path, &data).unwrap();
    data
}

/// A running swarm process.
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// Starts `swarm ARGS` in `cwd` with stderr to `cwd/NAME.log`.
    pub fn start(name: &str, cwd: &Path, args: &[String]) -> Proc {
        Proc::start_with(name, cwd, args, &[])
    }

    /// As [`Proc::start`], with `env` added to the environment.
    pub fn start_with(name: &str, cwd: &Path, args: &[String], env: &[(String, String)]) -> Proc {
        let log = cwd.join(format!("{name}.log"));
        let err = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(SWARM)
            .args(args)
            .current_dir(cwd)
            .env("RUST_LOG", "debug")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap();
        Proc {
            name: name.into(),
            log,
            child: Some(child),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a zero exit status, failing the test otherwise.
    pub fn expect_success(&mut self) {
        match self.wait_for(patience()) {
            Some(status) if status.success() => {}
            Some(status) => panic!("{} exited with {status}", self.name),
            None => panic!("{} did not exit within {:?}", self.name, patience()),
        }
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process's stderr so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
            eprintln!("---- last lines of {} ----", self.name);
            for line in tail {
                eprintln!("[{}] {line}", self.name);
            }
        }
    }
}

/// Whether a peer's log holds its closing line: the file verified chunk
/// by chunk (the default) or re-hashed whole (`--verify-output`).
pub fn verified(log: &str) -> bool {
    log.contains("verified chunk by chunk (") || log.contains("verified sha256 ")
}

/// Polls `cond` every 20 ms until it holds, failing after [`patience`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience();
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a signal (`"STOP"`, `"CONT"`, ...) to a process.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{sig} {pid} failed");
}

/// Checks every chunk file of a swarm directory against its manifest:
/// returns (good, bad) counts. Temporary files are not chunk files.
pub fn audit_chunks(dir: &Path) -> (usize, usize) {
    let text = fs::read_to_string(dir.join("manifest")).unwrap();
    let m = swarm::manifest::Manifest::from_text(&text).unwrap();
    let (mut good, mut bad) = (0, 0);
    for entry in fs::read_dir(dir.join("chunks")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(raw) = name.strip_suffix(".chunk") else {
            continue;
        };
        let id = m.layout().chunk_id(raw.parse().unwrap()).unwrap();
        if m.verify(id, &fs::read(&path).unwrap()) {
            good += 1;
        } else {
            bad += 1;
        }
    }
    (good, bad)
}

/// How many chunk files a swarm directory holds.
pub fn chunk_files(dir: &Path) -> usize {
    fs::read_dir(dir.join("chunks"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".chunk"))
                .count()
        })
        .unwrap_or(0)
}

/// An owner and a ring of peers on loopback.
pub struct Ring {
    pub dir: TestDir,
    pub owner_port: u16,
    pub ports: Vec<u16>,
    pub file: PathBuf,
    pub data: Vec<u8>,
    pub owner: Option<Proc>,
    pub peers: Vec<Option<Proc>>,
    pub extra: Vec<String>,
    /// Added to the owner's environment (e.g. `SWARM_HANDSHAKE_TIMEOUT_MS`).
    pub owner_env: Vec<(String, String)>,
}

impl Ring {
    /// Prepares a ring of `n` peers for a file of `len` bytes; starts
    /// nothing yet.
    pub fn new(name: &str, n: usize, len: usize) -> Ring {
        let dir = TestDir::new(name);
        let file = dir.join("input.bin");
        let data = random_file(&file, len, len as u64 + n as u64);
        let mut ports = free_ports(n + 1);
        let owner_port = ports.remove(0);
        Ring {
            dir,
            owner_port,
            ports,
            file,
            data,
            owner: None,
            peers: (0..n).map(|_| None).collect(),
            extra: Vec::new(),
            owner_env: Vec::new(),
        }
    }

    pub fn start_owner(&mut self, extra: &[&str]) {
        let mut args = vec![
            "owner".to_string(),
            "--port".into(),
            self.owner_port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            "owner".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(self.file.display().to_string());
        self.owner = Some(Proc::start_with(
            "owner",
            &self.dir.path,
            &args,
            &self.owner_env,
        ));
    }

    /// Peer `i`'s directory.
    pub fn peer_dir(&self, i: usize) -> PathBuf {
        self.dir.join(&format!("peer{i}"))
    }

    /// Where peer `i` writes its closing record.
    fn record_path(&self, i: usize) -> PathBuf {
        self.dir.join(&format!("peer{i}.record.json"))
    }

    /// Peer `i`'s closing record; fails the test if it wrote none.
    pub fn record(&self, i: usize) -> Record {
        let path = self.record_path(i);
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("peer{i} wrote no record {}: {e}", path.display()));
        Record::parse(&text)
    }

    /// Whether peer `i`'s output is a whole, verified copy of the input:
    /// the output takes its name only once verified.
    pub fn holds_copy(&self, i: usize) -> bool {
        fs::read(self.peer_dir(i).join("input.bin")).is_ok_and(|got| got == self.data)
    }

    /// Starts peer `i` (0-based), which downloads from peer `i + 1`.
    pub fn start_peer(&mut self, i: usize) {
        let next = self.ports[(i + 1) % self.ports.len()];
        self.start_peer_to(i, next);
    }

    /// Starts peer `i` with `neighbour` as its download neighbour's port.
    pub fn start_peer_to(&mut self, i: usize, neighbour: u16) {
        self.launch_peer(i, Some(neighbour));
    }

    /// Starts peer `i`, hand-wired to `neighbour` or, without one, wired
    /// by the owner.
    fn launch_peer(&mut self, i: usize, neighbour: Option<u16>) {
        let mut args = vec![
            "peer".to_string(),
            "--owner".into(),
            self.owner_port.to_string(),
            "--port".into(),
            self.ports[i].to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            format!("peer{i}"),
        ];
        if let Some(port) = neighbour {
            args.extend(["--download-neighbor".into(), port.to_string()]);
        }
        // How the run ended, as data (see [`Record`]); a run that fails
        // writes none, so a stale one from an earlier run goes first.
        let record = self.record_path(i);
        let _ = fs::remove_file(&record);
        args.extend(["--record".into(), record.display().to_string()]);
        args.extend(self.extra.iter().cloned());
        let name = format!("peer{i}");
        self.peers[i] = Some(Proc::start(&name, &self.dir.path, &args));
    }

    /// Starts every peer, freezing each (SIGSTOP) as soon as the owner
    /// has seeded it `seeds` chunks, then kills the owner: the ring must
    /// finish from what the peers hold between them. [`Ring::thaw`]
    /// lets them go on.
    pub fn orphan_after_seeding(&mut self, seeds: usize) {
        let want = format!("the owner seeded {seeds} chunks");
        for i in 0..self.peers.len() {
            self.start_peer(i);
            wait_until("seeding", || self.peer(i).log_text().contains(&want));
            signal(self.peer(i).pid(), "STOP");
        }
        self.owner.as_mut().unwrap().kill();
    }

    /// Lets every frozen peer go on (SIGCONT).
    pub fn thaw(&mut self) {
        for i in 0..self.peers.len() {
            signal(self.peer(i).pid(), "CONT");
        }
    }

    /// Kills peer `i` with SIGKILL, keeping its log as `peerI-runN.log`.
    pub fn kill_peer(&mut self, i: usize) {
        if let Some(mut p) = self.peers[i].take() {
            p.kill();
            let mut n = 1;
            while self.dir.join(&format!("peer{i}-run{n}.log")).exists() {
                n += 1;
            }
            fs::rename(&p.log, self.dir.join(&format!("peer{i}-run{n}.log"))).unwrap();
        }
    }

    pub fn peer(&mut self, i: usize) -> &mut Proc {
        self.peers[i].as_mut().expect("peer not started")
    }

    /// Waits for every peer to exit 0 and checks every copy is
    /// byte-identical to the input, and that each peer left because its
    /// upload neighbour was complete or the owner reported every peer
    /// complete, not because `--linger` ran out.
    pub fn expect_all_identical(&mut self) {
        self.expect_identical_copies();
        for i in 0..self.peers.len() {
            let left = self.record(i).left;
            assert!(
                left == "released" || left == "swarm_complete",
                "peer{i} did not leave through the ring's exit rule: {left}"
            );
        }
    }

    /// Waits for every started peer to exit 0 and checks its copy.
    pub fn expect_identical_copies(&mut self) {
        let started: Vec<usize> = (0..self.peers.len())
            .filter(|&i| self.peers[i].is_some())
            .collect();
        for &i in &started {
            self.peer(i).expect_success();
        }
        for i in started {
            let copy = self.peer_dir(i).join("input.bin");
            let got = fs::read(&copy)
                .unwrap_or_else(|e| panic!("peer{i}: cannot read {}: {e}", copy.display()));
            assert!(
                got == self.data,
                "peer{i}: copy differs from the input ({} vs {} bytes)",
                got.len(),
                self.data.len()
            );
        }
    }
}

/// Peers the owner wires: started without `--download-neighbor`, so the
/// owner places each in its ring in the order they register.
impl Ring {
    /// Starts peer `i` with no download neighbour: the owner assigns one.
    pub fn start_wired_peer(&mut self, i: usize) {
        self.launch_peer(i, None);
    }

    /// Starts peers `0..n` wired by the owner, one at a time, each once
    /// the owner has logged the one before it joining ("owner: ADDR
    /// joined (" then `how`): the owner places peers in the order they
    /// register, so this order fixes who downloads from whom.
    pub fn start_wired_in_order(&mut self, n: usize, how: &str) {
        for i in 0..n {
            self.start_wired_peer(i);
            self.await_owner_log(&format!("owner: {} joined ({how}", self.addr(i)));
        }
    }

    /// The owner's log so far.
    pub fn owner_log(&self) -> String {
        self.owner.as_ref().map(Proc::log_text).unwrap_or_default()
    }

    /// Waits until the owner has logged `text`.
    pub fn await_owner_log(&self, text: &str) {
        wait_until(&format!("the owner to log {text:?}"), || {
            self.owner_log().contains(text)
        });
    }

    /// The address the owner knows peer `i` by.
    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }
}

/// How a `swarm` command that ran to its end went.
pub struct Finished {
    /// The exit code; `None` if a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `swarm ARGS` to its end, killing it and failing the test if it
/// takes longer than [`patience`].
pub fn run_swarm(args: &[&str]) -> Finished {
    use std::io::Read;
    let mut child = Command::new(SWARM)
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + patience();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "swarm {} did not exit within {:?}",
                args.join(" "),
                patience()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Finished {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A peer's closing record (`swarm peer --record FILE`): how its run
/// ended, from data rather than from its log's wording.
#[derive(Debug)]
pub struct Record {
    /// `released`, `swarm_complete` or `lingered`.
    pub left: String,
    /// The whole-file SHA-256, in hex.
    pub sha256: String,
    pub from_owner: u64,
    pub from_ring: u64,
    pub reused: u64,
    /// Chunk bytes by source name, in the order they first delivered.
    pub sources: Vec<(String, u64)>,
}

impl Record {
    pub fn parse(json: &str) -> Record {
        assert!(json.starts_with("{\"event\":\"done\","), "{json}");
        let (head, list) = json
            .split_once("\"sources\":[")
            .unwrap_or_else(|| panic!("no sources in {json}"));
        let sources = list
            .split("{\"name\":")
            .skip(1)
            .map(|entry| (json_string(entry, None), json_number(entry, "bytes")))
            .collect();
        Record {
            left: json_string(head, Some("left")),
            sha256: json_string(head, Some("sha256")),
            from_owner: json_number(head, "from_owner"),
            from_ring: json_number(head, "from_ring"),
            reused: json_number(head, "reused"),
            sources,
        }
    }

    /// Bytes `who` delivered; 0 if it is not named.
    pub fn bytes_from(&self, who: &str) -> u64 {
        self.sources
            .iter()
            .find(|(w, _)| w == who)
            .map_or(0, |(_, b)| *b)
    }
}

/// The string after `"key":` (or at the start, without a key), unescaped
/// for the quotes and backslashes swarm escapes.
fn json_string(json: &str, key: Option<&str>) -> String {
    let at = match key {
        Some(key) => {
            let tag = format!("\"{key}\":");
            json.find(&tag)
                .unwrap_or_else(|| panic!("no {tag} in {json}"))
                + tag.len()
        }
        None => 0,
    };
    let rest = json[at..]
        .strip_prefix('"')
        .unwrap_or_else(|| panic!("no string at {at} in {json}"));
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return out,
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    panic!("unterminated string in {json}")
}

/// The whole number after `"key":` in a JSON text, the first time `key`
/// appears.
pub fn json_number(json: &str, key: &str) -> u64 {
    let tag = format!("\"{key}\":");
    let at = json
        .find(&tag)
        .unwrap_or_else(|| panic!("no {tag} in {json}"))
        + tag.len();
    let digits: String = json[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{tag} is not followed by a number in {json}"))
}

/// Stops a process (SIGSTOP) and waits until every one of its threads
/// is stopped: `kill` returns before a thread running on another core
/// has stopped, and a chunk it was writing could land afterwards.
pub fn freeze(pid: u32) {
    signal(pid, "STOP");
    let stopped = |task: &Path| {
        let stat = fs::read_to_string(task.join("stat")).unwrap_or_default();
        // The state follows the command name, which is in parentheses.
        stat.rfind(')')
            .and_then(|at| stat[at + 1..].split_whitespace().next())
            .is_none_or(|state| state == "T")
    };
    wait_until(&format!("process {pid} to stop"), || {
        fs::read_dir(format!("/proc/{pid}/task")).map_or(true, |tasks| {
            tasks.filter_map(|t| t.ok()).all(|t| stopped(&t.path()))
        })
    });
}
