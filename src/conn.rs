//! One connection, whatever its role.
//!
//! Every swarm connection has the same shape, so the owner's sessions,
//! the peer's owner link, its upload side and its download side each
//! supply only what they do with a message (a [`Role`]):
//!
//! - the HELLO exchange, under the handshake deadline ([`dial`],
//!   [`read_hello`], [`send_hello`]), after admission by the swarm secret
//!   when there is one ([`crate::auth`]), so no role sends anything to a
//!   side that has not proved it;
//! - a reader, on the caller's thread ([`Conn::run`]): it checks each
//!   frame's kind against what the role accepts in its current state and
//!   its length against the kind's bounds from the five header bytes,
//!   before a buffer is sized, then hands the message to the role; a
//!   connection silent for the idle timeout ([`Timeouts::idle`]) or whose
//!   writer has been stuck on one frame past its deadline is closed;
//! - a writer thread fed by a bounded inbox ([`Handle::send`]), which
//!   other threads use too; it reads a chunk from disk only when the chunk
//!   is about to be sent, turns the store's new chunks into HAVE frames
//!   that fit the frame limit, and sends KEEPALIVE when it has been idle
//!   for [`Timeouts::keepalive`];
//! - one idempotent close ([`Handle::close`]) that ends both;
//! - an [`Abort`], with which another thread shuts down the socket of a
//!   dial in progress or of the session it became, so a thread that owns
//!   connections can be stopped and joined at once.
//!
//! Nothing here knows what a chunk is for; that is the roles' business.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, select};

use crate::auth::{self, Secret};
use crate::chunks::ChunkSet;
use crate::config::Timeouts;
use crate::error::{Error, Result};
use crate::manifest::{ChunkId, Digest, Layout};
use crate::net::{self, Stats};
use crate::wire::{self, Decoder, Kind, Kinds, Message};

/// Items a connection's inbox holds at most. A full inbox is an error for
/// the sender (a request flood, or a connection that stopped reading), not
/// a reason to block.
pub const INBOX: usize = 256;

/// How fast, at the least, the other side must take a frame we write: a
/// frame gets [`Timeouts::write`] plus its size at this rate.
const MIN_READ_RATE: u64 = 16 * 1024;

/// How often the reader wakes while nothing arrives, to check deadlines.
const READ_TICK: Duration = Duration::from_secs(1);

/// Identifies one connection for the life of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    /// The number behind the ID.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The ID whose number is `raw`.
    pub fn from_raw(raw: u64) -> ConnId {
        ConnId(raw)
    }

    fn next() -> ConnId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// What a connection's writer sends, in inbox order.
#[derive(Debug)]
pub enum Outgoing {
    /// Frames already encoded.
    Frames(Vec<u8>),
    /// Encoded frames shared by many connections (the owner's manifest).
    Shared(Arc<[u8]>),
    /// One chunk, read from the connection's [`ChunkSource`] when sent.
    Chunk(ChunkId),
    /// Chunks in ID order, unasked (the owner's seeds).
    Seeds(ChunkSet),
    /// This encoded frame (REFUSE, VERSION), then stop writing.
    LastWord(Vec<u8>),
    /// Everything queued before it, then stop writing; the reader goes on
    /// until the other side closes too, so the last frames are not lost
    /// to a reset.
    Finish,
    /// Once everything queued before it is written, the connection's
    /// ID goes to this channel (the owner's loop learns that a session's
    /// seeds are out). A mark, not a decision: the writer does nothing
    /// else with it.
    Written(Sender<ConnId>),
}

/// Where a writer gets the chunks it sends.
pub trait ChunkSource: Send + Sync {
    /// Writes chunk `id` to `w` as one CHUNK frame.
    fn write_chunk(&self, id: ChunkId, w: &mut TcpStream) -> Result<()>;
}

/// What a role does with the messages of one connection.
pub trait Role {
    /// The kinds acceptable in the current state; any other kind ends
    /// the connection from its header.
    fn accepts(&self) -> Kinds;
    /// Handles one message. An error ends the connection.
    fn on_message(&mut self, msg: Message<'_>, conn: &Handle) -> Result<()>;
    /// Where CHUNK frames go whole, if this role verifies and stores
    /// them on other threads; `None` (the default) has each decoded and
    /// passed to [`Role::on_message`] like any other message.
    fn chunk_sink(&mut self) -> Option<&mut dyn ChunkSink> {
        None
    }
}

/// Takes CHUNK frames whole from a connection's reader (see
/// [`Role::chunk_sink`]), so the reader can go back to the socket while
/// the chunk is verified and stored elsewhere.
pub trait ChunkSink {
    /// A buffer for the decoder's next frame: one handed back by the
    /// threads that took earlier frames, or a new one.
    fn spare(&mut self) -> Vec<u8>;
    /// Takes chunk `id`'s frame, as checked by the decoder. An error ends
    /// the connection.
    fn take(&mut self, id: ChunkId, frame: wire::Frame, conn: &Handle) -> Result<()>;
}

/// Why a send into a connection's inbox failed.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The inbox is full: the writer is far behind.
    Full,
    /// The connection is closed.
    Closed,
}

/// The other side's HELLO.
#[derive(Clone, Debug)]
pub struct Hello {
    /// The file it shares, or zeros if it knows none yet.
    pub file_id: Digest,
    /// Its name for logs; the remote address if it gave none.
    pub name: String,
    /// The admitted connection's nonces, when a secret is in use.
    pub session: Option<auth::Session>,
}

/// Answers `theirs` with our HELLO and, on an admitted connection, the
/// proof that binds the file ID in it to this connection's nonces: the
/// one thing a relay between two members could otherwise change.
pub fn answer_hello(
    stream: &mut TcpStream,
    file_id: Digest,
    name: &str,
    theirs: &Hello,
    secret: Option<&Secret>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(128);
    wire::encode(
        &Message::Hello {
            version: wire::VERSION,
            file_id,
            name,
        },
        &mut buf,
    );
    if let (Some(secret), Some(session)) = (secret, &theirs.session) {
        let proof = secret.prove_hello(session, &file_id);
        wire::encode(&Message::Proof(proof), &mut buf);
    }
    stream.write_all(&buf)
}

/// Sends our HELLO.
pub fn send_hello(stream: &mut TcpStream, file_id: Digest, name: &str) -> std::io::Result<()> {
    let hello = Message::Hello {
        version: wire::VERSION,
        file_id,
        name,
    };
    wire::send(stream, &hello)
}

/// Reads the HELLO that opens a session on an accepted connection,
/// within the handshake deadline, once the other side has proved the
/// swarm `secret` if there is one (it is refused otherwise, and sent
/// nothing else). `addr` names the other side in errors.
pub fn read_hello(
    stream: &mut TcpStream,
    dec: &mut Decoder,
    addr: &str,
    secret: Option<&Secret>,
    timeouts: &Timeouts,
) -> Result<Hello> {
    let deadline = Instant::now() + timeouts.handshake;
    let hello = auth::admit(stream, dec, secret, addr, deadline).and_then(|session| {
        let mut hello = hello_in(dec, addr)?;
        hello.session = session;
        Ok(hello)
    });
    if let Err(Error::Wire {
        err: wire::Error::BadVersion(v),
        ..
    }) = &hello
    {
        // Two builds of swarm that cannot talk say why: REFUSE is the
        // same frame in every version.
        let why = format!(
            "protocol version {v} is not supported (this is version {})",
            wire::VERSION
        );
        let _ = wire::send(stream, &Message::Refuse(&why));
        net::close_gracefully(stream, net::READ_TICK);
    }
    hello
}

/// The HELLO that `dec` has read.
fn hello_in(dec: &Decoder, addr: &str) -> Result<Hello> {
    let fail = |err| Error::wire(addr, err);
    match dec.message().map_err(fail)? {
        Message::Hello { file_id, name, .. } => Ok(Hello {
            session: None,
            file_id,
            name: if name.is_empty() {
                addr.to_string()
            } else {
                name.to_string()
            },
        }),
        Message::Refuse(why) => Err(auth::refused(addr, why)),
        other => Err(fail(wire::Error::Unexpected(other.name()))),
    }
}

/// Connects to `addr` and exchanges HELLOs, ours first; with a swarm
/// `secret`, only once each side has proved it to the other. Once
/// connected the socket is armed in `abort`, which stays armed (through
/// the session that follows) until the caller disarms it.
pub fn dial(
    addr: SocketAddr,
    file_id: Digest,
    name: &str,
    secret: Option<&Secret>,
    timeouts: &Timeouts,
    abort: &Abort,
) -> Result<(TcpStream, Decoder, Hello)> {
    let mut stream = net::connect(addr, timeouts).map_err(|e| Error::io("connect", e))?;
    abort.arm(&stream).map_err(|e| Error::io("connect", e))?;
    let deadline = Instant::now() + timeouts.handshake;
    let who = addr.to_string();
    let mut dec = Decoder::new();
    let session = match secret {
        Some(secret) => Some(auth::connect(
            &mut stream,
            &mut dec,
            secret,
            &who,
            deadline,
        )?),
        None => None,
    };
    send_hello(&mut stream, file_id, name).map_err(|e| Error::wire(&who, e.into()))?;
    let left = deadline.saturating_duration_since(Instant::now());
    net::fill_within(&mut dec, &mut stream, left).map_err(|e| Error::wire(&who, e))?;
    let hello = hello_in(&dec, &who)?;
    if let (Some(secret), Some(session)) = (secret, session) {
        // The file ID it answered with must be proven too (see
        // `answer_hello`).
        dec.set_accepts(Kinds::of(&[Kind::Proof]));
        let left = deadline.saturating_duration_since(Instant::now());
        let proven = net::fill_within(&mut dec, &mut stream, left).is_ok()
            && matches!(dec.message(), Ok(Message::Proof(p))
                if secret.check_hello(&session, &hello.file_id, &p));
        if !proven {
            return Err(Error::Admission {
                peer: who,
                failure: auth::Failure::Unproven,
            });
        }
        dec.set_accepts(Kinds::ALL);
    }
    Ok((stream, dec, hello))
}

/// What a connection needs besides its socket.
#[derive(Default)]
pub struct Setup {
    /// This side's name for logs ("peer 9001", "owner").
    pub name: String,
    /// The other side's name for logs.
    pub who: String,
    /// Where chunks to send come from; `None` if this side sends none.
    pub source: Option<Arc<dyn ChunkSource>>,
    /// Chunks this side gains, to announce as HAVE; `None` for none.
    pub announce: Option<Receiver<ChunkId>>,
    /// Activity counters, shared with an accept loop's slot if any.
    pub stats: Option<Arc<Stats>>,
    /// The idle, write, keepalive and closing deadlines it runs under.
    pub timeouts: Timeouts,
}

/// Shuts down, from another thread, the socket of a dial in progress
/// and of the session it became: a blocked handshake read or a running
/// [`Conn::run`] then ends at once. Fired once, it stays fired: a later
/// dial with it fails as soon as it connects. (The connect itself is
/// bounded by [`Timeouts::connect`] only.)
#[derive(Clone, Debug, Default)]
pub struct Abort {
    inner: Arc<Mutex<Armed>>,
}

#[derive(Debug, Default)]
struct Armed {
    fired: bool,
    stream: Option<TcpStream>,
}

impl Abort {
    /// Shuts the armed socket down, and any armed later.
    pub fn fire(&self) {
        let mut armed = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        armed.fired = true;
        if let Some(stream) = armed.stream.take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Whether [`Abort::fire`] was called.
    pub fn fired(&self) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).fired
    }

    /// Keeps a second handle on `stream` to shut down on fire; fails if
    /// already fired.
    pub fn arm(&self, stream: &TcpStream) -> std::io::Result<()> {
        let mut armed = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if armed.fired {
            let _ = stream.shutdown(Shutdown::Both);
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "this side is leaving",
            ));
        }
        armed.stream = Some(stream.try_clone()?);
        Ok(())
    }

    /// Lets go of the armed socket (its session is over).
    pub fn disarm(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).stream = None;
    }
}

/// A handle on a connection that any thread may hold: send into its
/// inbox, read its counters, close it.
#[derive(Clone, Debug)]
pub struct Handle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    id: ConnId,
    who: String,
    tx: Sender<Outgoing>,
    /// A second handle on the socket, to shut it down.
    stream: TcpStream,
    closed: AtomicBool,
    /// Whether this side has queued its last word (FINISH, a last
    /// frame): from then on the other side may end the connection
    /// however it likes.
    ending: AtomicBool,
    /// Dropped on close, which wakes the writer.
    wake: Mutex<Option<Sender<()>>>,
    /// When the writer stopped, if it has.
    finished: Mutex<Option<Instant>>,
    /// A last frame (REFUSE, VERSION) to send before anything still
    /// queued, encoded.
    last_word: Mutex<Option<Vec<u8>>>,
    /// Frames to send before anything still queued (see
    /// [`Handle::send_urgent`]).
    urgent: Mutex<Vec<u8>>,
    stats: Arc<Stats>,
}

impl Handle {
    /// This connection's ID.
    pub fn id(&self) -> ConnId {
        self.inner.id
    }

    /// The other side's name for logs.
    pub fn who(&self) -> &str {
        &self.inner.who
    }

    /// The connection's activity counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Queues `out` for the writer without blocking.
    pub fn send(&self, out: Outgoing) -> std::result::Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        if matches!(out, Outgoing::Finish | Outgoing::LastWord(_)) {
            self.inner.ending.store(true, Ordering::SeqCst);
        }
        self.inner.tx.try_send(out).map_err(|e| match e {
            TrySendError::Full(_) => SendError::Full,
            TrySendError::Disconnected(_) => SendError::Closed,
        })
    }

    /// Encodes and queues one message.
    pub fn send_message(&self, msg: &Message<'_>) -> std::result::Result<(), SendError> {
        let mut buf = Vec::with_capacity(16);
        wire::encode(msg, &mut buf);
        self.send(Outgoing::Frames(buf))
    }

    /// Queues `msg` as this side's last word: it goes after whatever is
    /// queued, then the writer stops. From now on, the other side's close
    /// ends the connection in order, even one that cuts a frame short.
    pub fn send_last(&self, msg: &Message<'_>) -> std::result::Result<(), SendError> {
        self.inner.ending.store(true, Ordering::SeqCst);
        self.send_message(msg)?;
        self.send(Outgoing::Finish)
    }

    /// Closes the connection: both threads stop, and the other side sees
    /// the socket close. Closing twice does nothing.
    pub fn close(&self) {
        if !self.inner.closed.swap(true, Ordering::SeqCst) {
            let _ = self.inner.stream.shutdown(Shutdown::Both);
            self.inner
                .wake
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
        }
    }

    /// Sends REFUSE with `reason` ahead of whatever is still queued (the
    /// writer sends it between two frames), then closes.
    pub fn refuse(&self, reason: &str) {
        self.leave_with(&Message::Refuse(reason));
    }

    /// Sends `msg` ahead of whatever is still queued (between two
    /// frames), drops the rest and stops writing; the connection then
    /// reads on until the other side closes, as after a REFUSE.
    pub fn leave_with(&self, msg: &Message<'_>) {
        let mut frame = Vec::new();
        wire::encode(msg, &mut frame);
        self.leave_after(frame);
    }

    /// Drops whatever is still queued and stops writing once the frame
    /// being written is out; the connection then reads on until the other
    /// side closes. For a downloader that holds every chunk: the chunks it
    /// asked for before it knew would only delay its leaving.
    pub fn finish_now(&self) {
        self.leave_after(Vec::new());
    }

    fn leave_after(&self, frame: Vec<u8>) {
        self.inner.ending.store(true, Ordering::SeqCst);
        *self
            .inner
            .last_word
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(frame.clone());
        // Wakes an idle writer; a busy one sees it between frames.
        let _ = self.send(Outgoing::LastWord(frame));
    }

    /// Sends `msg` ahead of whatever is still queued: the writer sends it
    /// between two frames. For control messages that must not wait
    /// behind a batch of seeds (NEIGHBOUR: a peer told late whom to
    /// download from spends the whole seeding on the wrong neighbour).
    pub fn send_urgent(&self, msg: &Message<'_>) -> std::result::Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        wire::encode(
            msg,
            &mut self.inner.urgent.lock().unwrap_or_else(|p| p.into_inner()),
        );
        // Wakes an idle writer; a busy one sees it between frames.
        match self.send(Outgoing::Frames(Vec::new())) {
            Err(SendError::Closed) => Err(SendError::Closed),
            _ => Ok(()),
        }
    }

    fn take_urgent(&self) -> Vec<u8> {
        std::mem::take(&mut *self.inner.urgent.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn take_last_word(&self) -> Option<Vec<u8>> {
        self.inner
            .last_word
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Notes that this side has stopped writing.
    fn finishing(&self) {
        let mut at = self
            .inner
            .finished
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        at.get_or_insert_with(Instant::now);
    }

    fn finished_at(&self) -> Option<Instant> {
        *self
            .inner
            .finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this side queued its last word (COMPLETE, FINISH, a
    /// REFUSE) before the connection ended.
    pub fn sent_last_word(&self) -> bool {
        self.inner.ending.load(Ordering::SeqCst)
    }

    /// Whether [`Handle::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }
}

/// A connection after its HELLO exchange: [`Conn::run`] reads on the
/// caller's thread while a writer thread drains the inbox.
pub struct Conn {
    stream: TcpStream,
    dec: Decoder,
    handle: Handle,
    writer: JoinHandle<Result<()>>,
    timeouts: Timeouts,
}

impl Conn {
    /// Starts the writer thread. `dec` must be the decoder that read the
    /// handshake, with the file's layout set if it is known.
    pub fn start(stream: TcpStream, dec: Decoder, setup: Setup) -> Result<Conn> {
        let fail = |e| Error::io("set up connection", e);
        // Short enough that a shortened idle timeout is still kept.
        let tick = READ_TICK
            .min(setup.timeouts.idle / 4)
            .max(Duration::from_millis(1));
        stream.set_read_timeout(Some(tick)).map_err(fail)?;
        let (tx, rx) = crossbeam_channel::bounded(INBOX);
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(0);
        let stats = setup.stats.unwrap_or_default();
        let timeouts = setup.timeouts;
        let handle = Handle {
            inner: Arc::new(Inner {
                id: ConnId::next(),
                who: setup.who.clone(),
                tx,
                stream: stream.try_clone().map_err(fail)?,
                closed: AtomicBool::new(false),
                ending: AtomicBool::new(false),
                wake: Mutex::new(Some(wake_tx)),
                finished: Mutex::new(None),
                last_word: Mutex::new(None),
                urgent: Mutex::new(Vec::new()),
                stats: Arc::clone(&stats),
            }),
        };
        let writer = Writer {
            stream: stream.try_clone().map_err(fail)?,
            name: setup.name,
            who: setup.who,
            layout: dec.layout().cloned(),
            source: setup.source,
            stats,
            handle: handle.clone(),
            timeouts,
        };
        let announce = setup.announce.unwrap_or_else(crossbeam_channel::never);
        let writer = thread::Builder::new()
            .name(format!("writer {}", handle.who()))
            .spawn(move || writer.run(rx, wake_rx, announce))
            .map_err(|e| Error::io("start a writer thread", e))?;
        Ok(Conn {
            stream,
            dec,
            handle,
            writer,
            timeouts,
        })
    }

    /// A handle on this connection.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Reads and dispatches messages until the connection ends, then
    /// closes it and waits for the writer. Returns `Ok` when either side
    /// closed it in order, and the first error otherwise.
    pub fn run(mut self, role: &mut dyn Role) -> Result<()> {
        let result = self.read_loop(role);
        self.handle.close();
        let written = self
            .writer
            .join()
            .unwrap_or_else(|_| Err(Error::Bug("a connection writer panicked".into())));
        match result {
            // The reader saw the close; a write error usually says why.
            Ok(()) => written,
            Err(e) => Err(e),
        }
    }

    fn read_loop(&mut self, role: &mut dyn Role) -> Result<()> {
        let who = self.handle.who().to_string();
        let fail = |err| Error::wire(who.as_str(), err);
        let stats = Arc::clone(&self.handle.inner.stats);
        let mut buffered = 0;
        loop {
            self.dec.set_accepts(role.accepts());
            match self.dec.fill(&mut self.stream) {
                Ok(true) => {
                    stats.heard();
                    buffered = 0;
                    let msg = self.dec.message().map_err(fail)?;
                    let chunk = match msg {
                        Message::Chunk { id, .. } => Some(id),
                        _ => None,
                    };
                    if chunk.is_some() {
                        stats.chunk_moved(true);
                    }
                    let sunk = chunk.is_some() && role.chunk_sink().is_some();
                    if let (Some(id), true) = (chunk, sunk)
                        && let Some(sink) = role.chunk_sink()
                    {
                        let spare = sink.spare();
                        let Some(frame) = self.dec.take_frame(spare) else {
                            return Err(Error::Bug("a decoded frame went missing".into()));
                        };
                        sink.take(id, frame, &self.handle)?;
                    } else {
                        role.on_message(msg, &self.handle)?;
                    }
                }
                Ok(false) => {
                    // Part of a frame arrived: a slow link, not silence.
                    if self.dec.buffered() > buffered {
                        buffered = self.dec.buffered();
                        stats.heard();
                    }
                    let lingered = self
                        .handle
                        .finished_at()
                        .is_some_and(|at| at.elapsed() >= self.timeouts.handshake);
                    if self.handle.is_closed() || lingered {
                        return Ok(());
                    }
                }
                // A close from either side between frames is an orderly end.
                Err(wire::Error::Closed) => return Ok(()),
                Err(_) if self.handle.is_closed() => return Ok(()),
                // So is any end after our last word (COMPLETE, REFUSE):
                // an uploader released by our COMPLETE may leave in the
                // middle of a chunk we no longer need.
                Err(wire::Error::Truncated { .. } | wire::Error::Io(_))
                    if self.handle.inner.ending.load(Ordering::SeqCst) =>
                {
                    return Ok(());
                }
                Err(e) => return Err(fail(e)),
            }
            // Checked after every frame too: a peer that sends a KEEPALIVE
            // each second never lets a read time out.
            self.check_deadlines(&stats).map_err(fail)?;
        }
    }

    /// Fails a connection that has been silent too long, or whose other
    /// side takes a frame we write far too slowly.
    fn check_deadlines(&self, stats: &Stats) -> std::result::Result<(), wire::Error> {
        let now = Instant::now();
        let idle = self.timeouts.idle;
        if now.saturating_duration_since(stats.last_heard()) >= idle {
            return Err(wire::Error::Silent(idle.as_secs()));
        }
        if let Some((since, deadline)) = stats.writing()
            && now > deadline
        {
            let took = deadline.saturating_duration_since(since);
            return Err(wire::Error::SlowReader(took.as_secs()));
        }
        Ok(())
    }
}

/// How long writing `len` bytes may take, given the write timeout.
fn write_deadline(write: Duration, len: usize) -> Duration {
    write + Duration::from_secs(len as u64 / MIN_READ_RATE)
}

/// The writing half of a connection.
struct Writer {
    stream: TcpStream,
    name: String,
    who: String,
    layout: Option<Layout>,
    source: Option<Arc<dyn ChunkSource>>,
    stats: Arc<Stats>,
    handle: Handle,
    timeouts: Timeouts,
}

impl Writer {
    fn run(
        mut self,
        inbox: Receiver<Outgoing>,
        wake: Receiver<()>,
        announce: Receiver<ChunkId>,
    ) -> Result<()> {
        let result = self.serve(&inbox, &wake, &announce);
        match result {
            // A write cut short by the connection's own close (the reader
            // saw the other side leave) is no error.
            Err(_) if self.handle.is_closed() => Ok(()),
            Err(e) => {
                // Wake the reader so the connection ends as one.
                self.handle.close();
                Err(e)
            }
            Ok(()) => {
                // After REFUSE or FINISH the reader waits for the other
                // side to close, but not for ever.
                self.handle.finishing();
                Ok(())
            }
        }
    }

    fn serve(
        &mut self,
        inbox: &Receiver<Outgoing>,
        wake: &Receiver<()>,
        announce: &Receiver<ChunkId>,
    ) -> Result<()> {
        loop {
            select! {
                recv(inbox) -> out => {
                    let Ok(out) = out else { return Ok(()) };
                    if !self.write(out)? {
                        return Ok(());
                    }
                }
                recv(announce) -> id => {
                    let Ok(id) = id else { return Ok(()) };
                    self.announce(id, announce)?;
                }
                recv(wake) -> _ => return Ok(()),
                default(self.timeouts.keepalive) => {
                    self.frame(|buf| wire::encode(&Message::KeepAlive, buf))?;
                }
            }
        }
    }

    /// Writes one inbox item; returns whether to go on writing.
    fn write(&mut self, out: Outgoing) -> Result<bool> {
        if let Some(frame) = self.handle.take_last_word() {
            return self.write(Outgoing::LastWord(frame));
        }
        self.urgent()?;
        match out {
            Outgoing::Frames(buf) => self.bytes(&buf)?,
            Outgoing::Shared(buf) => self.bytes(&buf)?,
            Outgoing::Chunk(id) => self.chunk(id, true)?,
            Outgoing::Seeds(set) => {
                let Some(layout) = self.layout.clone() else {
                    return Err(Error::Bug("seeds on a connection without a layout".into()));
                };
                for id in set.iter(&layout) {
                    if let Some(frame) = self.handle.take_last_word() {
                        return self.write(Outgoing::LastWord(frame));
                    }
                    self.urgent()?;
                    self.chunk(id, false)?;
                }
            }
            Outgoing::LastWord(frame) => {
                self.bytes(&frame)?;
                let _ = self.stream.shutdown(Shutdown::Write);
                return Ok(false);
            }
            Outgoing::Finish => {
                let _ = self.stream.shutdown(Shutdown::Write);
                return Ok(false);
            }
            Outgoing::Written(to) => {
                let _ = to.send(self.handle.id());
            }
        }
        Ok(true)
    }

    /// Writes the urgent frames queued since the last frame, if any.
    fn urgent(&mut self) -> Result<()> {
        let urgent = self.handle.take_urgent();
        if urgent.is_empty() {
            return Ok(());
        }
        self.bytes(&urgent)
    }

    /// Sends one chunk; `asked` when it answers a request.
    fn chunk(&mut self, id: ChunkId, asked: bool) -> Result<()> {
        let Some(source) = self.source.as_ref() else {
            return Err(Error::Bug(
                "a chunk queued on a connection that sends none".into(),
            ));
        };
        let len = self
            .layout
            .as_ref()
            .map_or(0, |l| l.max_chunk_len() as usize);
        self.stats
            .start_writing(write_deadline(self.timeouts.write, len));
        let sent = source.write_chunk(id, &mut self.stream);
        self.stats.done_writing();
        sent?;
        self.stats.chunk_moved(asked);
        log::info!(target: "swarm::chunk", "{}: sent chunk {id} to {}", self.name, self.who);
        Ok(())
    }

    /// Sends HAVE for `first` and every other chunk already announced,
    /// in frames that fit the frame limit.
    fn announce(&mut self, first: ChunkId, announce: &Receiver<ChunkId>) -> Result<()> {
        let Some(layout) = self.layout.clone() else {
            return Err(Error::Bug("HAVE on a connection without a layout".into()));
        };
        let mut ids = vec![first];
        ids.extend(announce.try_iter());
        ids.sort();
        log::info!(
            target: "swarm::chunk",
            "{}: sent chunk-ID update to {}: {}",
            self.name,
            self.who,
            id_list(&ids)
        );
        self.frame(|buf| wire::encode_have(&ids, &layout, buf))
    }

    fn frame(&mut self, fill: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
        let mut buf = Vec::with_capacity(64);
        fill(&mut buf);
        self.bytes(&buf)
    }

    fn bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.stats
            .start_writing(write_deadline(self.timeouts.write, buf.len()));
        let written = self.stream.write_all(buf);
        self.stats.done_writing();
        written.map_err(|e| Error::wire(self.who.as_str(), e.into()))
    }
}

/// "chunk 7" or "3 chunks (4, 5, 9)", eliding long lists.
pub fn id_list(ids: &[ChunkId]) -> String {
    if let [one] = ids {
        return format!("chunk {one}");
    }
    let shown: Vec<String> = ids.iter().take(8).map(|id| id.to_string()).collect();
    let more = if ids.len() > 8 { ", ..." } else { "" };
    format!("{} chunks ({}{more})", ids.len(), shown.join(", "))
}

#[cfg(test)]
mod tests;
