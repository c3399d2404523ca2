//! Programs that speak the protocol correctly but lie, stall or squat:
//! fake peers, one fake download neighbour that answers in each of the
//! ways the tests need, and probes of a process's memory and CPU, for the
//! tests that attack swarm or watch it cope. Every fake is bounded in
//! time: reads time out, and threads stop when their fixture is dropped.

use std::collections::VecDeque;
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
#[derive(Clone, Debug)]
pub enum Answer {
    /// Never: it lists every chunk and sends nothing but KEEPALIVE (if
    /// its [`Manner`] has it send any).
    Never,
    /// Honestly, but one chunk per interval at most.
    OneEvery(Duration),
    /// Honestly, at one chunk per interval: the k-th chunk goes no sooner
    /// than k intervals after the first request, so the pace holds on a
    /// busy machine too (a late turn does not push back the ones after
    /// it, as with [`Answer::OneEvery`]).
    Paced(Duration),
    /// Honestly, but one byte per interval.
    ByteEvery(Duration),
    /// At once, with the chunk's length of wrong bytes.
    Lies,
    /// Honestly and at once, except `chunk`, which is held back until
    /// the fixture's `release` is set.
    HoldBack(u32),
    /// Honestly and at once, except the race's chunk, which it holds
    /// until every fake in the race has been asked for it; then the one
    /// asked first sends it, and each other one a few milliseconds after
    /// the one before it.
    Racing(Arc<Race>),
}

/// A chunk that several fakes hold back and then deliver together.
#[derive(Debug)]
pub struct Race {
    chunk: u32,
    /// How many fakes must be asked for it before it goes.
    runners: usize,
    /// How many have been asked.
    asked: AtomicUsize,
    /// How many have sent it.
    sent: AtomicUsize,
}

impl Race {
    pub fn new(chunk: u32, runners: usize) -> Race {
        Race {
            chunk,
            runners,
            asked: AtomicUsize::new(0),
            sent: AtomicUsize::new(0),
        }
    }

    /// How many runners have been asked for the chunk so far.
    pub fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }

    /// Waits until every runner has been asked for the chunk and it is
    /// the turn of the runner asked `place`-th; false if that takes too
    /// long (a runner was never asked).
    fn await_turn(&self, place: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.asked.load(Ordering::SeqCst) < self.runners
            || self.sent.load(Ordering::SeqCst) < place
        {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_micros(200));
        }
        if place > 0 {
            thread::sleep(Self::GAP);
        }
        true
    }

    /// How long after the runner before it each runner sends the chunk.
    const GAP: Duration = Duration::from_millis(5);
}

/// How a fake download neighbour presents itself, apart from how it
/// answers.
#[derive(Clone, Debug)]
pub struct Manner {
    /// The name its HELLO gives, which the peer's log lines call it by.
    pub name: &'static str,
    /// How often it sends KEEPALIVE, whatever else it sends; `None` for
    /// never. At one a second, the peer's reads from it never time out.
    pub keepalive: Option<Duration>,
    /// If set, it lists its chunks only once this counts something
    /// (another fake's requests), so the peer has that one connected
    /// first.
    pub gate: Option<Arc<AtomicUsize>>,
    /// On the downloader's COMPLETE, it sends half a CHUNK frame and
    /// closes, as a peer that leaves in the middle of a chunk does.
    pub cut_on_complete: bool,
}

impl Default for Manner {
    fn default() -> Manner {
        Manner {
            name: "fake",
            keepalive: Some(Duration::from_secs(2)),
            gate: None,
            cut_on_complete: false,
        }
    }
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
    /// A fake in the [`Manner::default`]: named "fake", with a KEEPALIVE
    /// every 2 s.
    pub fn start(manifest: Manifest, data: Arc<Vec<u8>>, answer: Answer) -> FakeNeighbour {
        FakeNeighbour::start_as(manifest, data, answer, Manner::default())
    }

    pub fn start_as(
        manifest: Manifest,
        data: Arc<Vec<u8>>,
        answer: Answer,
        manner: Manner,
    ) -> FakeNeighbour {
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
                    answer: &answer,
                    manner: &manner,
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

    /// Requests received so far, over all connections.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
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
    answer: &'a Answer,
    manner: &'a Manner,
    stop: &'a AtomicBool,
    release: &'a AtomicBool,
    requests: &'a AtomicUsize,
}

impl Serve<'_> {
    /// One ring session, as the uploader: HELLO both ways, the list of
    /// every chunk, then answers; until the downloader says COMPLETE or
    /// closes, or the fixture is dropped.
    fn serve(&self, mut stream: TcpStream) {
        stream.set_nonblocking(false).unwrap();
        // Short, so that a pace of a few tens of milliseconds is kept.
        stream
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let layout = self.manifest.layout();
        let mut dec = Decoder::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        if fill_by(&mut dec, &mut stream, deadline).is_err()
            || !matches!(dec.message(), Ok(Message::Hello { .. }))
        {
            return;
        }
        if wire::send(
            &mut stream,
            &hello_msg(self.manifest.id(), self.manner.name),
        )
        .is_err()
        {
            return;
        }
        if let Some(gate) = &self.manner.gate {
            while gate.load(Ordering::Relaxed) == 0 {
                if self.stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                    return;
                }
                thread::sleep(Duration::from_millis(5));
            }
        }
        if wire::send(&mut stream, &Message::ChunkList(all_chunks(layout))).is_err() {
            return;
        }
        dec.set_layout(layout.clone());
        let mut queue = VecDeque::<ChunkId>::new();
        let mut first_asked = None;
        let mut last_sent = Instant::now();
        let mut sent = 0u32;
        let mut held: Vec<ChunkId> = Vec::new();
        // This fake's place among those asked for the race's chunk.
        let mut place = None;
        let mut last_ping = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            match dec.fill(&mut stream) {
                Ok(true) => match dec.message() {
                    Ok(Message::Request(id)) => {
                        self.requests.fetch_add(1, Ordering::Relaxed);
                        first_asked.get_or_insert_with(Instant::now);
                        queue.push_back(id);
                    }
                    Ok(Message::Complete) if self.manner.cut_on_complete => {
                        let id = layout.chunk_id(0).unwrap();
                        let data = chunk_of(self.data, layout, id);
                        let mut frame = Vec::new();
                        wire::encode(&Message::Chunk { id, data }, &mut frame);
                        let _ = std::io::Write::write_all(&mut stream, &frame[..frame.len() / 2]);
                        return;
                    }
                    Ok(Message::Complete) | Err(_) => return,
                    Ok(_) => {}
                },
                Ok(false) => {}
                Err(_) => return,
            }
            if let Some(every) = self.manner.keepalive
                && last_ping.elapsed() >= every
            {
                if wire::send(&mut stream, &Message::KeepAlive).is_err() {
                    return;
                }
                last_ping = Instant::now();
            }
            let ok = match self.answer {
                Answer::Never => true,
                Answer::OneEvery(gap) => {
                    if last_sent.elapsed() >= *gap
                        && let Some(id) = queue.pop_front()
                    {
                        last_sent = Instant::now();
                        self.chunk(&mut stream, id)
                    } else {
                        true
                    }
                }
                Answer::Paced(gap) => match (queue.front(), first_asked) {
                    (Some(&id), Some(at)) if at.elapsed() >= *gap * (sent + 1) => {
                        queue.pop_front();
                        sent += 1;
                        self.chunk(&mut stream, id)
                    }
                    _ => true,
                },
                Answer::ByteEvery(gap) => match queue.pop_front() {
                    Some(id) => self.trickle(&mut stream, id, *gap),
                    None => true,
                },
                Answer::Lies => queue.drain(..).all(|id| {
                    let junk = vec![0xEE; layout.chunk_len(id)];
                    let lie = Message::Chunk { id, data: &junk };
                    wire::send(&mut stream, &lie).is_ok()
                }),
                Answer::HoldBack(raw) => {
                    let mut ok = true;
                    queue.extend(held.drain(..));
                    while let Some(id) = queue.pop_front() {
                        if id.get() == *raw && !self.release.load(Ordering::Relaxed) {
                            held.push(id);
                        } else {
                            ok &= self.chunk(&mut stream, id);
                        }
                    }
                    ok
                }
                Answer::Racing(race) => {
                    let mut ok = true;
                    for id in queue.drain(..) {
                        if id.get() == race.chunk {
                            place = Some(race.asked.fetch_add(1, Ordering::SeqCst));
                            continue;
                        }
                        ok &= self.chunk(&mut stream, id);
                    }
                    match place {
                        Some(n) if race.asked.load(Ordering::SeqCst) >= race.runners => {
                            place = None;
                            let id = layout.chunk_id(race.chunk).unwrap();
                            let sent = race.await_turn(n) && self.chunk(&mut stream, id);
                            race.sent.fetch_add(1, Ordering::SeqCst);
                            ok && sent
                        }
                        _ => ok,
                    }
                }
            };
            if !ok {
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
