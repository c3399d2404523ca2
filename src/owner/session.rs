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
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

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
        // for another session to give its share back. Neither says when,
        // hence the short sleep (the one polling wait left in the owner).
        let _budget = loop {
            if v.store.has(id) {
                if v.store.send_chunk(id, w)? > 0 {
                    shared.sent.fetch_add(len as u64, Ordering::Relaxed);
                }
                return Ok(());
            }
            if let Some(taken) = Budget::take(&shared.source_reads, len) {
                break taken;
            }
            if v.retired.load(Ordering::Acquire) {
                return Err(Error::Integrity(format!(
                    "chunk {id} of version {}, which is no longer shared, is not on disk",
                    v.number
                )));
            }
            if shared.suspect.load(Ordering::Acquire) {
                return Err(Error::Integrity(format!(
                    "chunk {id} of version {} is not on disk and {} has changed",
                    v.number,
                    shared.source.display()
                )));
            }
            if shared.failed() || shared.stopper.stopped() {
                return Err(Error::Integrity("the owner is stopping".into()));
            }
            thread::sleep(Duration::from_millis(5));
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

/// A share of [`SOURCE_READ_BUDGET`], given back when dropped.
struct Budget<'a> {
    used: &'a AtomicUsize,
    len: usize,
}

impl<'a> Budget<'a> {
    fn take(used: &'a AtomicUsize, len: usize) -> Option<Budget<'a>> {
        used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
            (now == 0 || now + len <= SOURCE_READ_BUDGET).then_some(now + len)
        })
        .ok()
        .map(|_| Budget { used, len })
    }
}

impl Drop for Budget<'_> {
    fn drop(&mut self) {
        self.used.fetch_sub(self.len, Ordering::AcqRel);
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
