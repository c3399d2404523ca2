//! TCP plumbing shared by the owner and the peers.
//!
//! One place sets the socket options every connection gets (read and
//! write timeouts, no Nagle delay), resolves `[HOST:]PORT` addresses,
//! connects with a timeout, and runs accept loops that can be stopped.
//! Nothing here knows the protocol.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::Timeouts;
use crate::error::{Error, Result};
use crate::wire::{self, Decoder, Message};

/// How long one blocking read waits during a handshake, and how long an
/// accept loop rests after a failed accept.
pub const READ_TICK: Duration = Duration::from_millis(500);

/// Sets the options every swarm connection uses, with the default
/// [`Timeouts`]. Called right after each connect and accept.
pub fn configure(stream: &TcpStream) -> io::Result<()> {
    configure_with(stream, &Timeouts::default())
}

/// [`configure`] with the write timeout of `timeouts`.
pub fn configure_with(stream: &TcpStream, timeouts: &Timeouts) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(READ_TICK))?;
    stream.set_write_timeout(Some(timeouts.write))?;
    Ok(())
}

/// Sends `header`, then the first `len` bytes of `file`, on `stream`; the
/// file's bytes go by `sendfile(2)`, from the page cache to the socket
/// without a copy through user space, and the header is held back
/// (`MSG_MORE`) so it leaves in the same segment as the first of them.
/// Returns how many of the file's bytes were sent: fewer than `len` only
/// if the file is shorter. The stream's write timeout bounds each call, as
/// it does a plain write.
pub fn send_file(stream: &TcpStream, header: &[u8], file: &File, len: u64) -> io::Result<u64> {
    let sock = stream.as_raw_fd();
    let mut rest = header;
    while !rest.is_empty() {
        // SAFETY: `rest` is valid for its length; send reads no further.
        let n = unsafe {
            libc::send(
                sock,
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_MORE | libc::MSG_NOSIGNAL,
            )
        };
        match n {
            n if n >= 0 => rest = &rest[n as usize..],
            _ => retry_or(io::Error::last_os_error())?,
        }
    }
    let mut offset: libc::off_t = 0;
    while (offset as u64) < len {
        let left = (len - offset as u64).min(1 << 30) as usize;
        // SAFETY: sendfile reads the file through its descriptor and
        // writes only `offset`, which lives for the call.
        let n = unsafe { libc::sendfile(sock, file.as_raw_fd(), &mut offset, left) };
        match n {
            0 => break,
            n if n > 0 => {}
            _ => retry_or(io::Error::last_os_error())?,
        }
    }
    Ok(offset as u64)
}

/// `Ok` for an interrupted call, to try again; a write timeout
/// (`EAGAIN` under `SO_SNDTIMEO`) as [`io::ErrorKind::TimedOut`]; anything
/// else as it is.
fn retry_or(e: io::Error) -> io::Result<()> {
    match e.kind() {
        io::ErrorKind::Interrupted => Ok(()),
        io::ErrorKind::WouldBlock => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the other side took nothing for the write timeout",
        )),
        _ => Err(e),
    }
}

/// Raises this process's open-file limit to its hard limit: an owner of
/// a thousand peers holds several descriptors for each.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `lim`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Reads until `dec` holds a whole frame, or fails with a timeout once
/// `within` has passed.
pub fn fill_within(
    dec: &mut Decoder,
    stream: &mut TcpStream,
    within: Duration,
) -> std::result::Result<(), wire::Error> {
    let deadline = Instant::now() + within;
    while !dec.fill(stream)? {
        if Instant::now() >= deadline {
            return Err(wire::Error::Io(io::ErrorKind::TimedOut.into()));
        }
    }
    Ok(())
}

/// Closes a connection after a last message without losing it: a
/// socket closed with unread input sends a reset, which can destroy the
/// last message before the other side reads it. So: stop writing, read
/// and discard until the other side closes too (or `within` passes).
pub fn close_gracefully(stream: &mut TcpStream, within: Duration) {
    use std::io::Read;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + within;
    let mut sink = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

/// Parses `PORT` (meaning 127.0.0.1:PORT) or `HOST:PORT`.
pub fn parse_addr(text: &str) -> std::result::Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        if port == 0 {
            return Err("port 0 is not a usable port".into());
        }
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if !text.contains(':') {
        return Err(format!("'{text}' is not a port or HOST:PORT"));
    }
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("'{text}' resolves to no address")),
        Err(e) => Err(format!(
            "cannot resolve '{text}': {}",
            crate::error::plain(&e)
        )),
    }
}

/// Connects within the connect timeout and configures the stream.
pub fn connect(addr: SocketAddr, timeouts: &Timeouts) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, timeouts.connect)?;
    configure_with(&stream, timeouts)?;
    Ok(stream)
}

/// Binds a listener, naming the address in the error.
pub fn listen(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| Error::io(format!("listen on {addr}"), e))
}

/// What a connection has done, for choosing which one to close when a
/// listener is full and for the peer's exit rule. Written by the
/// connection's threads, read by others; every field is atomic.
#[derive(Debug)]
pub struct Stats {
    opened: Instant,
    /// Chunks sent in answer to a request, or received.
    asked: AtomicU64,
    /// Milliseconds after `opened` of the last such chunk.
    last_asked: AtomicU64,
    /// Chunks moved at all, including seeds the owner pushed unasked, and
    /// milliseconds after `opened` of the last one.
    moved: AtomicU64,
    last_moved: AtomicU64,
    /// Milliseconds after `opened` of the last frame received.
    last_heard: AtomicU64,
    /// Milliseconds after `opened`, plus one, when the writer began what
    /// it is writing; 0 while it writes nothing.
    writing_since: AtomicU64,
    /// Milliseconds after `opened` by which that write must be done.
    write_deadline: AtomicU64,
    /// Set once the connection belongs to a registered peer: a listener
    /// never closes it to make room.
    member: AtomicBool,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            opened: Instant::now(),
            asked: AtomicU64::new(0),
            last_asked: AtomicU64::new(0),
            moved: AtomicU64::new(0),
            last_moved: AtomicU64::new(0),
            last_heard: AtomicU64::new(0),
            writing_since: AtomicU64::new(0),
            write_deadline: AtomicU64::new(0),
            member: AtomicBool::new(false),
        }
    }
}

impl Stats {
    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.opened + Duration::from_millis(ms)
    }

    /// Counts a chunk sent or received; `asked` when it answered a
    /// request (or was received), not when it was pushed unasked.
    pub fn chunk_moved(&self, asked: bool) {
        let now = self.now_ms();
        if asked {
            self.asked.fetch_add(1, Ordering::Relaxed);
            self.last_asked.fetch_max(now, Ordering::Relaxed);
        }
        self.moved.fetch_add(1, Ordering::Relaxed);
        self.last_moved.fetch_max(now, Ordering::Relaxed);
    }

    /// Marks the connection as a registered peer's.
    pub fn set_member(&self) {
        self.member.store(true, Ordering::Relaxed);
    }

    /// Notes that a frame arrived.
    pub fn heard(&self) {
        self.last_heard.fetch_max(self.now_ms(), Ordering::Relaxed);
    }

    /// Notes that the writer began a write that must be done `within`.
    pub fn start_writing(&self, within: Duration) {
        let now = self.now_ms();
        let deadline = now + within.as_millis() as u64;
        self.write_deadline.store(deadline, Ordering::Relaxed);
        // Release: a reader that sees the start sees its deadline.
        self.writing_since.store(now + 1, Ordering::Release);
    }

    /// Notes that the writer finished its write.
    pub fn done_writing(&self) {
        self.writing_since.store(0, Ordering::Relaxed);
    }

    /// When a chunk was last asked for and moved, if one ever was.
    pub fn last_asked(&self) -> Option<Instant> {
        (self.asked.load(Ordering::Relaxed) > 0)
            .then(|| self.at(self.last_asked.load(Ordering::Relaxed)))
    }

    /// When a chunk last moved either way, if one ever did.
    pub fn last_moved(&self) -> Option<Instant> {
        (self.moved.load(Ordering::Relaxed) > 0)
            .then(|| self.at(self.last_moved.load(Ordering::Relaxed)))
    }

    /// When the last frame arrived (the opening time before any did).
    pub fn last_heard(&self) -> Instant {
        self.at(self.last_heard.load(Ordering::Relaxed))
    }

    /// When the write under way began and by when it must be done, if
    /// one is under way.
    pub fn writing(&self) -> Option<(Instant, Instant)> {
        match self.writing_since.load(Ordering::Acquire) {
            0 => None,
            v => Some((
                self.at(v - 1),
                self.at(self.write_deadline.load(Ordering::Relaxed)),
            )),
        }
    }
}

/// The connections a listener serves at once, and the rule for making
/// room when it is full: slots go to connections that do useful work.
#[derive(Debug)]
struct Slots {
    max: usize,
    next: u64,
    live: Vec<Slot>,
    /// The idle and keepalive intervals the rule below measures by.
    timeouts: Timeouts,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    stats: Arc<Stats>,
    /// A second handle on the socket, to shut it down from here.
    stream: TcpStream,
}

impl Slots {
    /// Takes a slot for a new connection, closing the connection that has
    /// done least if every slot is taken. In that order: one that never
    /// moved a chunk (open longest first); one that only received chunks
    /// it did not ask for (seeds) and none for the keepalive interval; one
    /// that asked for chunks but none for the idle timeout (idle longest
    /// first within each). When every connection is doing work the
    /// newcomer is turned away. Returns the slot's ID and the victim's
    /// description, if one was closed.
    fn admit(
        &mut self,
        stats: &Arc<Stats>,
        stream: &TcpStream,
        now: Instant,
    ) -> std::result::Result<(u64, Option<String>), ()> {
        let mut victim = None;
        if self.live.len() >= self.max {
            let idle = |at: Instant, limit: Duration| now.saturating_duration_since(at) > limit;
            let candidate = self
                .live
                .iter()
                .enumerate()
                .filter_map(|(i, slot)| {
                    let s = &slot.stats;
                    if s.member.load(Ordering::Relaxed) {
                        return None;
                    }
                    let key = match (s.last_asked(), s.last_moved()) {
                        (Some(at), _) => (2, at),
                        (None, Some(at)) => (1, at),
                        (None, None) => return Some((i, (0, s.opened))),
                    };
                    let limit = if key.0 == 2 {
                        self.timeouts.idle
                    } else {
                        self.timeouts.keepalive
                    };
                    idle(key.1, limit).then_some((i, key))
                })
                .min_by_key(|&(_, key)| key);
            let Some((i, (tier, _))) = candidate else {
                return Err(());
            };
            let slot = self.live.swap_remove(i);
            let _ = slot.stream.shutdown(std::net::Shutdown::Both);
            let who = slot
                .stream
                .peer_addr()
                .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
            victim = Some(match tier {
                0 => format!("{who}, which never sent or received a chunk"),
                1 => format!("{who}, which asked for no chunk"),
                _ => format!(
                    "{who}, idle for more than {} s",
                    self.timeouts.idle.as_secs()
                ),
            });
        }
        let clone = stream.try_clone().map_err(|_| ())?;
        self.next += 1;
        self.live.push(Slot {
            id: self.next,
            stats: Arc::clone(stats),
            stream: clone,
        });
        Ok((self.next, victim))
    }
}

/// The connections an accept loop left open when it stopped, and the
/// threads serving them.
#[derive(Debug)]
pub struct Open {
    slots: Arc<Mutex<Slots>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Open {
    /// Closes every one of them.
    pub fn close_all(&self) {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for slot in &slots.live {
            let _ = slot.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Closes every one of them and joins the threads that served them:
    /// each ends once its socket is shut down (a handshake read fails at
    /// once; a connection's reader sees the close and joins its writer).
    pub fn close_and_join(self) {
        self.close_all();
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Holds a slot for as long as its connection lives.
struct SlotGuard {
    slots: Arc<Mutex<Slots>>,
    id: u64,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.live.retain(|slot| slot.id != self.id);
    }
}

/// Accepts connections until `stopper` fires, serving each on its own
/// thread with `serve(stream, remote_address, stats)`, so one slow or
/// hostile connection never holds up another. At most `max` connections
/// are served at once; when a new one arrives at the cap, the one that
/// has done least is closed to make room (see `Slots::admit`, which
/// measures by `timeouts`), and only when every connection is moving
/// chunks is the newcomer sent REFUSE. There is no limit per source
/// address: a ring of hundreds of peers on one host must work. `name`
/// prefixes the warnings logged when a connection ends in an error.
///
/// The connection threads are kept, not detached: those that ended are
/// joined at each accept, the rest by [`Open::close_and_join`].
pub fn accept_loop<F>(
    listener: &TcpListener,
    stopper: &Stopper,
    name: &str,
    max: usize,
    timeouts: Timeouts,
    serve: F,
) -> Open
where
    F: Fn(TcpStream, &str, Arc<Stats>) -> Result<()> + Send + Sync + 'static,
{
    let serve = Arc::new(serve);
    let slots = Arc::new(Mutex::new(Slots {
        max,
        next: 0,
        live: Vec::new(),
        timeouts,
    }));
    let mut threads: Vec<thread::JoinHandle<()>> = Vec::new();
    for conn in listener.incoming() {
        if stopper.stopped() {
            return Open { slots, threads };
        }
        // Reap the threads of connections that have ended, so a long run
        // does not keep a handle per connection it ever served.
        let (ended, live): (Vec<_>, Vec<_>) = threads.drain(..).partition(|t| t.is_finished());
        threads = live;
        for thread in ended {
            let _ = thread.join();
        }
        let stream = match conn {
            Ok(stream) => stream,
            Err(e) => {
                log::warn!("{name}: accept failed: {}", crate::error::plain(&e));
                // Backoff: a failed accept (out of descriptors) fails
                // again at once.
                thread::sleep(READ_TICK);
                continue;
            }
        };
        let addr = stream
            .peer_addr()
            .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
        let stats = Arc::new(Stats::default());
        let admitted =
            slots
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .admit(&stats, &stream, Instant::now());
        if let Ok((_, Some(victim))) = &admitted {
            log::warn!("{name}: {max} connections open; closed {victim} to make room for {addr}");
        }
        // Frees the slot when the connection's thread ends, or at once if
        // it cannot start.
        let guard = admitted.map(|(id, _)| SlotGuard {
            slots: Arc::clone(&slots),
            id,
        });
        let (serve, name2) = (Arc::clone(&serve), name.to_string());
        let spawned = thread::Builder::new()
            .name(format!("{name} {addr}"))
            .spawn(move || {
                let result = match guard {
                    Ok(_guard) => serve(stream, &addr, stats),
                    Err(()) => refuse(stream, "too many connections; try again later", &addr),
                };
                if let Err(e) = result {
                    log::warn!("{name2}: {e}; connection closed");
                }
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => log::warn!("{name}: cannot start a connection thread: {e}"),
        }
    }
    // `incoming` never ends; this is for completeness.
    Open { slots, threads }
}

/// Tells the other side why it will not be served, then closes.
pub fn refuse(mut stream: TcpStream, reason: &str, who: &str) -> Result<()> {
    let _ = configure(&stream);
    let _ = wire::send(&mut stream, &Message::Refuse(reason));
    close_gracefully(&mut stream, READ_TICK);
    Err(Error::wire(who, wire::Error::Refused(reason.into())))
}

/// Backoff between connection attempts: 25 ms doubling to 2 s (the first
/// retries are quick because peers are often started with the owner).
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            next: Duration::from_millis(25),
        }
    }
}

impl Backoff {
    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(2));
        delay
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

/// A flag that stops an accept loop, and wakes it by connecting to it.
#[derive(Clone, Debug)]
pub struct Stopper {
    flag: Arc<AtomicBool>,
    addr: SocketAddr,
}

impl Stopper {
    /// A stopper for the listener bound at `addr`.
    pub fn new(addr: SocketAddr) -> Stopper {
        Stopper {
            flag: Arc::new(AtomicBool::new(false)),
            addr,
        }
    }

    /// Whether a stop was asked for.
    pub fn stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Asks the loop to stop and unblocks its `accept` by connecting to
    /// the listener once (a listener on 0.0.0.0 is reached on loopback).
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip([127, 0, 0, 1].into());
        }
        let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_port_or_host_port() {
        assert_eq!(parse_addr("9001").unwrap().to_string(), "127.0.0.1:9001");
        assert_eq!(
            parse_addr("10.1.2.3:80").unwrap().to_string(),
            "10.1.2.3:80"
        );
        assert_eq!(parse_addr("[::1]:80").unwrap().to_string(), "[::1]:80");
        assert_eq!(parse_addr("localhost:7").unwrap().port(), 7,);
        assert_eq!(parse_addr("0").unwrap_err(), "port 0 is not a usable port");
        assert_eq!(
            parse_addr("x").unwrap_err(),
            "'x' is not a port or HOST:PORT"
        );
        assert!(parse_addr("99999").is_err());
    }

    /// A connected pair of loopback sockets; the first is the server side.
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (l.accept().unwrap().0, c)
    }

    #[test]
    fn a_full_listener_closes_the_connection_that_has_done_least() {
        let mut slots = Slots {
            max: 3,
            next: 0,
            live: Vec::new(),
            timeouts: Timeouts::default(),
        };
        let (squat, seeded, worker) = (pair(), pair(), pair());
        let stats: Vec<Arc<Stats>> = (0..3).map(|_| Arc::new(Stats::default())).collect();
        stats[1].chunk_moved(false);
        stats[2].chunk_moved(true);
        for (s, (server, _)) in stats.iter().zip([&squat, &seeded, &worker]) {
            slots.admit(s, server, Instant::now()).unwrap();
        }
        let (late, _c) = pair();
        let fresh = Arc::new(Stats::default());
        let now = Instant::now();
        // First the one that never moved a chunk, at once.
        let (_, victim) = slots.admit(&fresh, &late, now).unwrap();
        assert!(
            victim
                .unwrap()
                .ends_with("which never sent or received a chunk")
        );
        // Now everyone has moved chunks and none is idle: refused.
        fresh.chunk_moved(true);
        assert!(
            slots
                .admit(&Arc::new(Stats::default()), &late, now)
                .is_err()
        );
        // After a while, the one that only received seeds goes.
        let (_, victim) = slots
            .admit(
                &Arc::new(Stats::default()),
                &late,
                now + Duration::from_secs(6),
            )
            .unwrap();
        assert!(
            victim.unwrap().ends_with("which asked for no chunk"),
            "seeds"
        );
        // The one that asked for a chunk a moment ago stays: the fresh
        // connections go first; with none left, the newcomer is refused.
        let mut full = Slots {
            max: 1,
            next: 0,
            live: Vec::new(),
            timeouts: Timeouts::default(),
        };
        full.admit(&stats[2], &worker.0, now).unwrap();
        assert!(
            full.admit(&fresh, &late, now + Duration::from_secs(6))
                .is_err()
        );
        let (_, victim) = full
            .admit(&fresh, &late, now + Duration::from_secs(31))
            .unwrap();
        assert!(victim.unwrap().ends_with("idle for more than 30 s"));
        // A closed victim's other end sees the close.
        let mut buf = [0u8; 1];
        squat
            .1
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(std::io::Read::read(&mut &squat.1, &mut buf).unwrap(), 0);
    }

    #[test]
    fn stopping_an_accept_loop_joins_its_connection_threads() {
        // 1. An accept loop whose one connection reads until its socket
        //    is shut down.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stopper = Stopper::new(addr);
        let (served_tx, served) = crossbeam_channel::unbounded();
        let (open_tx, open_rx) = crossbeam_channel::bounded(1);
        let looping = stopper.clone();
        let acceptor = thread::spawn(move || {
            let open = accept_loop(&listener, &looping, "test", 4, Timeouts::default(), {
                move |mut s, _, _| {
                    let _ = served_tx.send(());
                    let mut buf = [0u8; 16];
                    // Ends only when the socket is shut down (the read
                    // timeout just wakes it).
                    loop {
                        match std::io::Read::read(&mut s, &mut buf) {
                            Ok(0) => return Ok(()),
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(_) => return Ok(()),
                        }
                    }
                }
            });
            let _ = open_tx.send(open);
        });
        let _client = TcpStream::connect(addr).unwrap();
        served.recv_timeout(Duration::from_secs(10)).unwrap();
        // 2. Stop, then close and join: returns once the connection's
        //    thread has ended, though the client never closed.
        stopper.stop();
        let open = open_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        acceptor.join().unwrap();
        assert_eq!(open.threads.len(), 1);
        let (done_tx, done) = crossbeam_channel::bounded(1);
        thread::spawn(move || {
            open.close_and_join();
            let _ = done_tx.send(());
        });
        done.recv_timeout(Duration::from_secs(10))
            .expect("a connection thread outlived close_and_join");
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        let mut b = Backoff::default();
        let delays: Vec<_> = (0..7).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [25, 50, 100, 200, 400, 800, 1600]);
        assert_eq!(b.next_delay().as_millis(), 2000);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 25);
    }
}
