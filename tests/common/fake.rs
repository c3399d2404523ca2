//! Programs that speak the protocol correctly but lie, stall or squat:
//! fake peers, a fake download neighbour and probes of a process's memory
//! and CPU, for the tests that attack swarm. Every fake is bounded in
//! time: reads time out, and threads stop when their fixture is dropped.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use swarm::chunks::ChunkSet;
use swarm::manifest::{ChunkId, Chunking, Layout, Manifest, Shape};
use swarm::wire::{self, Decoder, Message};

/// The manifest a swarm directory caches (the owner's or a peer's).
pub fn manifest_of(dir: &Path) -> Manifest {
    let text = std::fs::read_to_string(dir.join("manifest")).unwrap();
    Manifest::from_text(&text).unwrap()
}

/// Every chunk of `layout`.
pub fn all_chunks(layout: &Layout) -> ChunkSet {
    let mut set = ChunkSet::new(layout.count());
    layout.ids().for_each(|id| {
        set.insert(id);
    });
    set
}

/// Chunk `id`'s bytes out of the whole file.
pub fn chunk_of<'a>(data: &'a [u8], layout: &Layout, id: ChunkId) -> &'a [u8] {
    let at = layout.offset(id) as usize;
    &data[at..at + layout.chunk_len(id)]
}

/// One connection made by a fake, after the HELLO exchange.
pub struct FakeConn {
    pub stream: TcpStream,
    pub dec: Decoder,
}

impl FakeConn {
    /// Connects to a peer's upload port as a downloader of `manifest`
    /// would: HELLO both ways.
    pub fn hello(port: u16, manifest: &Manifest, name: &str) -> FakeConn {
        FakeConn::hello_with(port, manifest.id(), manifest.layout().clone(), name)
    }

    /// [`FakeConn::hello`] with the file's ID and layout given apart.
    pub fn hello_with(port: u16, file_id: [u8; 32], layout: Layout, name: &str) -> FakeConn {
        let mut c = FakeConn::connect(port);
        send(&mut c.stream, &hello_msg(file_id, name));
        match c.read() {
            Message::Hello { .. } => {}
            other => panic!("expected HELLO, got {other:?}"),
        }
        c.dec.set_layout(layout);
        c
    }

    /// Connects to the owner as a new peer would and reads the manifest.
    pub fn join_owner(port: u16, name: &str) -> (FakeConn, Manifest) {
        let mut c = FakeConn::connect(port);
        send(&mut c.stream, &hello_msg([0; 32], name));
        assert!(matches!(c.read(), Message::Hello { .. }));
        let (shape, file_hash, fname) = match c.read() {
            Message::Manifest {
                file_len,
                chunk_size,
                chunking,
                chunks,
                file_hash,
                name,
            } => (
                Shape::new(file_len, chunk_size, chunking, chunks).unwrap(),
                file_hash,
                name.to_string(),
            ),
            other => panic!("expected MANIFEST, got {other:?}"),
        };
        c.dec.set_shape(shape);
        let (mut hashes, mut lens) = (Vec::new(), Vec::new());
        while hashes.len() < shape.count() as usize {
            match c.read() {
                Message::Hashes {
                    hashes: more,
                    lens: more_lens,
                    ..
                } => {
                    hashes.extend(more);
                    lens.extend(more_lens.into_iter().flatten());
                }
                other => panic!("expected HASHES, got {other:?}"),
            }
        }
        let layout = match shape.chunking() {
            Chunking::Fixed => Layout::new(shape.file_len(), shape.chunk_size()).unwrap(),
            Chunking::Content => {
                Layout::content(shape.file_len(), shape.chunk_size(), &lens).unwrap()
            }
        };
        c.dec.set_layout(layout.clone());
        let m = Manifest::new(fname, layout, file_hash, hashes).unwrap();
        (c, m)
    }

    fn connect(port: u16) -> FakeConn {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        FakeConn {
            stream,
            dec: Decoder::new(),
        }
    }

    /// Reads one message, failing the test if none arrives within
    /// [`super::patience`].
    pub fn read(&mut self) -> Message<'_> {
        let deadline = Instant::now() + super::patience();
        fill_by(&mut self.dec, &mut self.stream, deadline).expect("no message arrived");
        self.dec.message().unwrap()
    }

    pub fn send(&mut self, msg: &Message<'_>) {
        send(&mut self.stream, msg);
    }

    /// Sends a message, ignoring a connection the other side closed.
    pub fn try_send(&mut self, msg: &Message<'_>) -> bool {
        wire::send(&mut self.stream, msg).is_ok()
    }
}

/// Reads until `dec` holds a whole frame, failing once `deadline` passes.
/// The stream's read timeout must be short for the deadline to be kept.
pub fn fill_by(
    dec: &mut Decoder,
    stream: &mut TcpStream,
    deadline: Instant,
) -> Result<(), wire::Error> {
    while !dec.fill(stream)? {
        if Instant::now() >= deadline {
            return Err(wire::Error::Io(std::io::ErrorKind::TimedOut.into()));
        }
    }
    Ok(())
}

fn hello_msg(file_id: [u8; 32], name: &str) -> Message<'_> {
    Message::Hello {
        version: wire::VERSION,
        file_id,
        name,
    }
}

fn send(stream: &mut TcpStream, msg: &Message<'_>) {
    wire::send(stream, msg).unwrap();
}

/// Keeps connections open on a thread, sending KEEPALIVE every second
/// and discarding whatever arrives, until dropped.
pub struct Squatters {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// How many of the connections the other side has closed.
    pub closed: Arc<AtomicUsize>,
}

impl Squatters {
    pub fn start(conns: Vec<TcpStream>) -> Squatters {
        let stop = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicUsize::new(0));
        let (stop2, closed2) = (Arc::clone(&stop), Arc::clone(&closed));
        let thread = thread::spawn(move || {
            let mut live: Vec<TcpStream> = conns;
            for s in &live {
                s.set_nonblocking(true).unwrap();
            }
            let mut sink = vec![0u8; 64 * 1024];
            let mut next_ping = Instant::now();
            while !stop2.load(Ordering::Relaxed) {
                let ping = Instant::now() >= next_ping;
                if ping {
                    next_ping = Instant::now() + Duration::from_secs(1);
                }
                live.retain_mut(|s| {
                    let alive = loop {
                        match s.read(&mut sink) {
                            Ok(0) => break false,
                            Ok(_) => continue,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break true,
                            Err(_) => break false,
                        }
                    };
                    let alive = alive && (!ping || wire::send(s, &Message::KeepAlive).is_ok());
                    if !alive {
                        closed2.fetch_add(1, Ordering::Relaxed);
                    }
                    alive
                });
                thread::sleep(Duration::from_millis(20));
            }
        });
        Squatters {
            stop,
            thread: Some(thread),
            closed,
        }
    }
}

impl Drop for Squatters {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How a fake download neighbour answers requests.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    /// Never: it lists every chunk and only sends KEEPALIVE.
    Never,
    /// Honestly, but one chunk per interval at most.
    OneEvery(Duration),
    /// Honestly, but one byte per interval.
    ByteEvery(Duration),
    /// Honestly and at once, except `chunk`, which is held back until
    /// the fixture's `release` is set.
    HoldBack(u32),
}

/// A download neighbour that lists every chunk and answers requests as
/// told. Serves one connection at a time on a thread until dropped.
pub struct FakeNeighbour {
    pub port: u16,
    stop: Arc<AtomicBool>,
    /// Lets a held-back chunk go.
    pub release: Arc<AtomicBool>,
    /// Requests received, over all connections.
    pub requests: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl FakeNeighbour {
    pub fn start(manifest: Manifest, data: Arc<Vec<u8>>, answer: Answer) -> FakeNeighbour {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let (stop2, release2, requests2) = (
            Arc::clone(&stop),
            Arc::clone(&release),
            Arc::clone(&requests),
        );
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let ctx = Serve {
                    manifest: &manifest,
                    data: &data,
                    answer,
                    stop: &stop2,
                    release: &release2,
                    requests: &requests2,
                };
                ctx.serve(stream);
            }
        });
        FakeNeighbour {
            port,
            stop,
            release,
            requests,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeNeighbour {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Serve<'a> {
    manifest: &'a Manifest,
    data: &'a [u8],
    answer: Answer,
    stop: &'a AtomicBool,
    release: &'a AtomicBool,
    requests: &'a AtomicUsize,
}

impl Serve<'_> {
    fn serve(&self, mut stream: TcpStream) {
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let layout = self.manifest.layout();
        let mut dec = Decoder::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let hello = loop {
            match dec.fill(&mut stream) {
                Ok(true) => break dec.message().ok(),
                Ok(false) if Instant::now() < deadline => continue,
                _ => return,
            }
        };
        if !matches!(hello, Some(Message::Hello { .. })) {
            return;
        }
        let ok = wire::send(&mut stream, &hello_msg(self.manifest.id(), "fake")).is_ok()
            && wire::send(&mut stream, &Message::ChunkList(all_chunks(layout))).is_ok();
        if !ok {
            return;
        }
        dec.set_layout(layout.clone());
        let mut queue: std::collections::VecDeque<ChunkId> = Default::default();
        let mut held: Vec<ChunkId> = Vec::new();
        let mut last_sent = Instant::now();
        let mut last_ping = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            match dec.fill(&mut stream) {
                Ok(true) => match dec.message() {
                    Ok(Message::Request(id)) => {
                        self.requests.fetch_add(1, Ordering::Relaxed);
                        queue.push_back(id);
                    }
                    Ok(Message::Complete) => return,
                    Ok(_) => {}
                    Err(_) => return,
                },
                Ok(false) => {}
                Err(_) => return,
            }
            if last_ping.elapsed() >= Duration::from_secs(2) {
                if wire::send(&mut stream, &Message::KeepAlive).is_err() {
                    return;
                }
                last_ping = Instant::now();
            }
            let sent = match self.answer {
                Answer::Never => true,
                Answer::OneEvery(gap) => {
                    if last_sent.elapsed() >= gap
                        && let Some(id) = queue.pop_front()
                    {
                        last_sent = Instant::now();
                        self.chunk(&mut stream, id)
                    } else {
                        true
                    }
                }
                Answer::ByteEvery(gap) => match queue.pop_front() {
                    Some(id) => self.trickle(&mut stream, id, gap),
                    None => true,
                },
                Answer::HoldBack(raw) => {
                    let mut ok = true;
                    queue.extend(held.drain(..));
                    while let Some(id) = queue.pop_front() {
                        if id.get() == raw && !self.release.load(Ordering::Relaxed) {
                            held.push(id);
                        } else {
                            ok &= self.chunk(&mut stream, id);
                        }
                    }
                    ok
                }
            };
            if !sent {
                return;
            }
        }
    }

    fn chunk(&self, stream: &mut TcpStream, id: ChunkId) -> bool {
        let data = chunk_of(self.data, self.manifest.layout(), id);
        wire::send(stream, &Message::Chunk { id, data }).is_ok()
    }

    /// Sends one CHUNK frame a byte per `gap`, until stopped.
    fn trickle(&self, stream: &mut TcpStream, id: ChunkId, gap: Duration) -> bool {
        use std::io::Write;
        let data = chunk_of(self.data, self.manifest.layout(), id);
        let mut frame = Vec::new();
        wire::encode(&Message::Chunk { id, data }, &mut frame);
        for byte in frame {
            if self.stop.load(Ordering::Relaxed) || stream.write_all(&[byte]).is_err() {
                return false;
            }
            thread::sleep(gap);
        }
        true
    }
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    try_status_kib(pid, field).unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// [`status_kib`], or `None` once the process is gone (a zombie has no
/// memory lines).
pub fn try_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User plus system CPU time a process has used, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses.
    let rest = &text[text.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, counted in
    // clock ticks of 1/100 s on Linux.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}
