//! One peer's session on the owner: the connection's reader and what it
//! does with each message.
//!
//! A session thread (started by the accept loop) runs the HELLO exchange,
//! queues the manifest and then reads. It decides nothing about the swarm:
//! REGISTER and the chunk-ID list, HAVE, PROGRESS, UNREACHABLE, COMPLETE,
//! STATUS_REQUEST and its own end go as events to the owner's loop
//! ([`super::shell`]), which owns the registry, the seeder and every
//! session's seeding state, and answers through the session's writer. A
//! REQUEST is the session's own business: it is queued on its writer at
//! once. The writer sends chunks from the version the session began with
//! ([`Serving`]).

use std::fs::File;
use std::net::{IpAddr, TcpStream};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};

use crossbeam_channel::Sender;

use super::core::{Input, Registration};
use super::shell::Event;
use super::version::Version;
use super::{STOPPED, Shared};
use crate::conn::{self, ChunkSource, Conn, Handle, Outgoing, Role, SendError, Setup};
use crate::error::{Error, Result};
use crate::manifest::ChunkId;
use crate::net::{self, Stats};
use crate::wire::{self, Decoder, Kind, Kinds, Message};

/// What a session's writer sends chunks from: the version it serves.
struct Serving {
    shared: Arc<Shared>,
    v: Arc<Version>,
}

impl ChunkSource for Serving {
    /// Sends chunk `id`: from its chunk file once split, else straight
    /// from the source file, verified first like everything else sent. A
    /// source file that no longer matches has nothing right to serve:
    /// with `--once` that stops the owner, and otherwise it ends the
    /// session until the new version is ready.
    fn write_chunk(&self, id: ChunkId, w: &mut TcpStream) -> Result<()> {
        let (shared, v) = (&*self.shared, &*self.v);
        let layout = v.store.layout();
        let len = layout.chunk_len(id);
        // A chunk read from the file is held in memory until it is sent,
        // so such reads share a budget; over it, a session waits for the
        // split (which waits on no session) to write the chunk file, or
        // for another session to give its share back. Every change it
        // waits for wakes it (see `SourceReads`), so it does not poll.
        let ready = || {
            if v.store.has(id) {
                return Some(Ok(()));
            }
            if v.retired.load(Ordering::Acquire) {
                return Some(Err(Error::Integrity(format!(
                    "chunk {id} of version {}, which is no longer shared, is not on disk",
                    v.number
                ))));
            }
            if shared.suspect.load(Ordering::Acquire) {
                return Some(Err(Error::Integrity(format!(
                    "chunk {id} of version {} is not on disk and {} has changed",
                    v.number,
                    shared.source.display()
                ))));
            }
            if shared.failed() || shared.stopper.stopped() {
                return Some(Err(Error::Integrity("the owner is stopping".into())));
            }
            None
        };
        let _budget = match shared.source_reads.take(len, ready) {
            Taken::Budget(budget) => budget,
            Taken::Ready(result) => {
                result?;
                if v.store.send_chunk(id, w)? > 0 {
                    shared.sent.fetch_add(len as u64, Ordering::Relaxed);
                }
                return Ok(());
            }
        };
        let mut data = vec![0u8; len];
        File::open(&shared.source)
            .and_then(|f| f.read_exact_at(&mut data, layout.offset(id)))
            .map_err(|e| Error::io_path("read", &shared.source, e))?;
        if !v.store.manifest().verify(id, &data) {
            shared.source_changed(v, id);
            if shared.once {
                // This writer is between frames: tell the peer why at once.
                let _ = wire::send(w, &Message::Refuse(STOPPED));
            }
            return Err(Error::Integrity(format!(
                "chunk {id} of {} no longer matches its digest",
                shared.source.display()
            )));
        }
        wire::send(w, &Message::Chunk { id, data: &data })
            .map_err(|e| Error::io("send chunk", e))?;
        shared.sent.fetch_add(len as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// The most bytes of chunks read from the source file (before the split
/// has written them) held at once, whatever the number of sessions; one
/// chunk may always be read.
const SOURCE_READ_BUDGET: usize = 64 << 20;

/// The bytes of chunks read from the source file and not yet sent, shared
/// by every session's writer, with a condition variable that wakes a
/// writer waiting for room or for its chunk file. Whatever such a writer
/// waits for wakes it: a share given back ([`Budget`]'s drop), a chunk
/// file listed by the split, a version retired, the source found
/// changed, the owner stopping ([`SourceReads::wake`] at each).
#[derive(Debug, Default)]
pub(super) struct SourceReads {
    used: Mutex<usize>,
    changed: Condvar,
}

/// What [`SourceReads::take`] came back with.
enum Taken<'a, T> {
    /// Room to read the chunk from the source file.
    Budget(Budget<'a>),
    /// What the caller's `ready` said first.
    Ready(T),
}

impl SourceReads {
    /// Waits until `ready` says something (asked first and after every
    /// wake-up) or there is room for `len` more bytes, which it then takes.
    fn take<T>(&self, len: usize, ready: impl Fn() -> Option<T>) -> Taken<'_, T> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(t) = ready() {
                return Taken::Ready(t);
            }
            if *used == 0 || *used + len <= SOURCE_READ_BUDGET {
                *used += len;
                return Taken::Budget(Budget { reads: self, len });
            }
            used = self.changed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Wakes every waiting writer to look again. Whoever changes what a
    /// writer waits for calls this after the change; the lock taken here
    /// orders it after a writer's look, so no wake-up is lost.
    pub(super) fn wake(&self) {
        let _used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        self.changed.notify_all();
    }
}

/// A share of [`SOURCE_READ_BUDGET`], given back when dropped.
struct Budget<'a> {
    reads: &'a SourceReads,
    len: usize,
}

impl Drop for Budget<'_> {
    fn drop(&mut self) {
        let mut used = self.reads.used.lock().unwrap_or_else(|p| p.into_inner());
        *used -= self.len;
        self.reads.changed.notify_all();
    }
}

/// One peer's session, as the wire module's "owner session" describes.
pub(super) fn serve(
    shared: &Arc<Shared>,
    events: &Sender<Event>,
    mut stream: TcpStream,
    addr: &str,
    stats: Arc<Stats>,
) -> Result<()> {
    let timeouts = shared.timeouts;
    net::configure_with(&stream, &timeouts).map_err(|e| Error::io("configure connection", e))?;
    let peer_ip = stream
        .peer_addr()
        .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip());
    let mut dec = Decoder::new();
    let secret = shared.secret.as_deref();
    let hello = conn::read_hello(&mut stream, &mut dec, addr, secret, &timeouts)?;
    let who = hello.name.clone();
    let v = shared.current();
    conn::answer_hello(
        &mut stream,
        v.file_id,
        "owner",
        &hello,
        shared.secret.as_deref(),
    )
    .map_err(|e| Error::wire(who.as_str(), e.into()))?;
    dec.set_layout(v.store.layout().clone());
    let source: Arc<dyn ChunkSource> = Arc::new(Serving {
        shared: Arc::clone(shared),
        v: Arc::clone(&v),
    });
    let conn = Conn::start(
        stream,
        dec,
        Setup {
            name: "owner".into(),
            who: who.clone(),
            source: Some(source),
            announce: None,
            stats: Some(stats),
            timeouts,
        },
    )?;
    let handle = conn.handle().clone();
    let _ = handle.send(Outgoing::Shared(Arc::clone(&v.manifest_frames)));
    let opened = Event::Opened {
        handle: handle.clone(),
        version: v.number,
    };
    if events.send(opened).is_err() {
        // The owner's loop has stopped: so has the owner.
        handle.close();
    }
    let mut role = Session {
        events: events.clone(),
        phase: Phase::Waiting,
        peer_ip,
        registration: None,
    };
    let result = conn.run(&mut role);
    // Logged here, before the loop hears the session ended, so an owner
    // that stops has every session's last word out before its own.
    match &result {
        Ok(()) => log::info!("owner: {who} disconnected"),
        Err(e) => log::warn!("owner: {e}; connection closed"),
    }
    let _ = events.send(Event::Input(Input::Ended(handle.id())));
    Ok(())
}

/// Where a session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Before the peer's chunk-ID list (or a status request).
    Waiting,
    /// A peer: seeded, then asking and reporting.
    Serving,
    /// `swarm status`: asks for the registry, nothing else.
    Status,
}

/// What a session does with one peer's messages: keep its REGISTER
/// until the chunk-ID list completes it, answer its requests, and pass
/// everything else to the owner's loop.
struct Session {
    events: Sender<Event>,
    phase: Phase,
    /// Where the session comes from: a registration without a host means
    /// this address.
    peer_ip: IpAddr,
    registration: Option<Registration>,
}

impl Session {
    fn tell(&self, input: Input, conn: &Handle) {
        if self.events.send(Event::Input(input)).is_err() {
            conn.close();
        }
    }
}

impl Role for Session {
    fn accepts(&self) -> Kinds {
        const WAITING: Kinds = Kinds::of(&[Kind::ChunkList, Kind::KeepAlive, Kind::StatusRequest]);
        const REGISTER: Kinds = Kinds::of(&[
            Kind::Register,
            Kind::ChunkList,
            Kind::KeepAlive,
            Kind::StatusRequest,
        ]);
        const SERVING: Kinds = Kinds::of(&[
            Kind::Request,
            Kind::Have,
            Kind::Progress,
            Kind::Unreachable,
            Kind::Complete,
            Kind::KeepAlive,
        ]);
        const STATUS: Kinds = Kinds::of(&[Kind::StatusRequest, Kind::KeepAlive]);
        match self.phase {
            Phase::Waiting if self.registration.is_some() => WAITING,
            Phase::Waiting => REGISTER,
            Phase::Serving => SERVING,
            Phase::Status => STATUS,
        }
    }

    fn on_message(&mut self, msg: Message<'_>, conn: &Handle) -> Result<()> {
        let who = conn.who();
        let id = conn.id();
        match msg {
            Message::Register {
                wired,
                sources,
                port,
                host,
                neighbour,
            } => {
                let addr = if host.is_empty() {
                    std::net::SocketAddr::new(self.peer_ip, port).to_string()
                } else {
                    format!("{host}:{port}")
                };
                self.registration = Some(Registration {
                    addr,
                    wired,
                    sources,
                    neighbour: neighbour.to_string(),
                });
            }
            Message::ChunkList(has) => {
                log::info!(
                    "owner: received chunk-ID list from {who} ({} of {} chunks)",
                    has.len(),
                    has.capacity()
                );
                self.phase = Phase::Serving;
                let registration = self.registration.take();
                self.tell(
                    Input::ChunkList {
                        conn: id,
                        registration,
                        has,
                    },
                    conn,
                );
            }
            Message::Request(chunk) => {
                log::info!(target: "swarm::chunk", "owner: received request for chunk {chunk} from {who}");
                match conn.send(Outgoing::Chunk(chunk)) {
                    Ok(()) | Err(SendError::Closed) => {}
                    Err(SendError::Full) => {
                        return Err(Error::wire(who, wire::Error::Flood(conn::INBOX)));
                    }
                }
            }
            Message::Have(ids) => self.tell(Input::Have { conn: id, ids }, conn),
            Message::Progress { rate } => self.tell(Input::Progress { conn: id, rate }, conn),
            Message::Unreachable(addr) => self.tell(
                Input::Unreachable {
                    conn: id,
                    addr: addr.to_string(),
                },
                conn,
            ),
            Message::Complete => self.tell(Input::Complete(id), conn),
            Message::StatusRequest => {
                self.phase = Phase::Status;
                self.tell(Input::StatusRequest(id), conn);
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    /// Runs `take(1, ready)` on a thread of its own; its outcome (`true`
    /// for `Ready`) arrives on the returned channel.
    fn waiter(
        reads: &Arc<SourceReads>,
        flag: &Arc<AtomicBool>,
    ) -> crossbeam_channel::Receiver<bool> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (reads, flag) = (Arc::clone(reads), Arc::clone(flag));
        std::thread::spawn(move || {
            let ready = || flag.load(Ordering::Acquire).then_some(());
            let got = matches!(reads.take(1, ready), Taken::Ready(()));
            let _ = tx.send(got);
        });
        rx
    }

    #[test]
    fn a_writer_over_the_budget_waits_and_a_share_given_back_wakes_it() {
        let reads = Arc::new(SourceReads::default());
        let flag = Arc::new(AtomicBool::new(false));
        let Taken::Budget(all) = reads.take(SOURCE_READ_BUDGET, || None::<()>) else {
            panic!("an empty budget has room");
        };
        let rx = waiter(&reads, &flag);
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "took room the budget does not have"
        );
        drop(all);
        let got = rx.recv_timeout(Duration::from_secs(5));
        assert_eq!(got, Ok(false), "the share given back should wake it");
        assert_eq!(
            *reads.used.lock().unwrap(),
            0,
            "its own share was given back"
        );
    }

    #[test]
    fn a_waiting_writer_is_woken_by_what_it_waits_for() {
        let reads = Arc::new(SourceReads::default());
        let flag = Arc::new(AtomicBool::new(false));
        let Taken::Budget(_all) = reads.take(SOURCE_READ_BUDGET, || None::<()>) else {
            panic!("an empty budget has room");
        };
        let rx = waiter(&reads, &flag);
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        // The chunk file listed, say: the change, then the wake-up.
        flag.store(true, Ordering::Release);
        reads.wake();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(true));
    }
}
