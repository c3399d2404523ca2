//! The download side: the connections to the download neighbours.
//!
//! One thread keeps a dialer thread for each download neighbour of the
//! moment (those given, or those the owner last assigned; `--sources` of
//! them at most). A dialer connects to its neighbour, retrying with
//! backoff while it is not up and telling the coordinator (which tells the
//! owner) when it cannot be reached, and runs the connection with
//! [`DownloadRole`]: the neighbour's chunk-ID list and HAVE updates go to
//! the coordinator, which decides what to request from which neighbour;
//! each chunk that arrives is verified and stored by the store, then
//! reported. A dialer ends once its neighbour is no longer one of the
//! peer's. Once the file is verified the coordinator sends COMPLETE on
//! every connection and each dialer ends when its connection closes; a
//! neighbour still unreachable [`GIVE_UP_WHEN_COMPLETE`] after that is
//! gone. After a neighbour sent corrupt chunks its dialer stays away for
//! the time the coordinator set.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::intake::Intake;
use super::{Event, Shared};
use crate::conn::{self, ChunkSink, Conn, Handle, Role, Setup};
use crate::error::{Error, Result};
use crate::manifest::ChunkId;
use crate::net::Backoff;
use crate::scheduler::SourceKind;
use crate::store::{Put, Store};
use crate::wire::{self, Kind, Kinds, Message};

/// How long a complete peer keeps trying to reach its neighbour to tell
/// it so.
const GIVE_UP_WHEN_COMPLETE: Duration = Duration::from_secs(3);

/// Everything the download thread needs.
#[derive(Clone)]
pub(crate) struct Download {
    pub store: Arc<Store>,
    pub shared: Arc<Shared>,
}

impl Download {
    /// The thread's body: a dialer for every download neighbour, until
    /// the file is verified and every neighbour told, or the peer leaves.
    pub fn run(self) {
        let mut dialers: HashMap<SocketAddr, thread::JoinHandle<()>> = HashMap::new();
        // Neighbours whose dialer ended after the file was verified: told
        // COMPLETE, or given up on; not dialed again.
        let mut done: HashSet<SocketAddr> = HashSet::new();
        let mut verified_at = None;
        loop {
            let verified = self.shared.verified();
            dialers.retain(|&addr, d| {
                let finished = d.is_finished();
                // (One that ended because it is no longer a neighbour may
                // be assigned again, and then told.)
                if finished && verified && self.shared.is_target(addr) {
                    done.insert(addr);
                }
                !finished
            });
            if self.shared.stopping() {
                break;
            }
            // Once verified, a neighbour assigned within a few seconds is
            // still dialed, to deliver COMPLETE.
            if verified {
                verified_at.get_or_insert_with(Instant::now);
            } else {
                verified_at = None;
            }
            let late = verified_at.is_some_and(|at| at.elapsed() >= GIVE_UP_WHEN_COMPLETE);
            if late && dialers.is_empty() {
                break;
            }
            if !late {
                for addr in self.shared.targets() {
                    if dialers.contains_key(&addr) || done.contains(&addr) {
                        continue;
                    }
                    let dialer = self.clone();
                    let spawned = thread::Builder::new()
                        .name(format!("download {addr}"))
                        .spawn(move || dialer.dial(addr));
                    match spawned {
                        Ok(thread) => {
                            dialers.insert(addr, thread);
                        }
                        Err(e) => {
                            let e = Error::io("start a download thread", e);
                            self.shared.report(super::Event::Fatal(e));
                            return;
                        }
                    }
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        for (_, dialer) in dialers {
            if dialer.is_finished() {
                let _ = dialer.join();
            }
        }
    }

    /// One download neighbour's dialer: sessions until the file is
    /// verified and the neighbour told, the neighbour is no longer one of
    /// this peer's, or the peer leaves.
    fn dial(self, addr: SocketAddr) {
        let name = &self.shared.name;
        let mut backoff = Backoff::default();
        let mut failures = 0u32;
        let mut verified_since = None;
        loop {
            if self.shared.stopping() || !self.shared.is_target(addr) {
                return;
            }
            if self.shared.now_ms() < self.shared.shunned_until(addr) {
                // A neighbour that sent corrupt chunks is not told COMPLETE.
                if self.shared.verified() {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
                continue;
            }
            match self.session(addr, &mut backoff) {
                // Ended in order after the file was verified: COMPLETE
                // went out.
                Ok(()) if self.shared.verified() => return,
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    // A neighbour that is not up yet refuses many times
                    // in a row; say so once.
                    if failures == 1 || !matches!(e, Error::Io { .. }) {
                        log::warn!("{name}: download neighbour at {addr}: {e}; retrying");
                    }
                    // The owner re-wires around a neighbour that is gone.
                    if matches!(e, Error::Io { .. }) {
                        self.shared.report(Event::Unreachable(addr));
                    }
                    if !matches!(e, Error::Io { .. }) {
                        failures = 0;
                    }
                }
            }
            // Complete or not, keep trying a little: the neighbour may be
            // starting up and then wait for our COMPLETE to leave. A
            // neighbour still unreachable 3 s after we completed is gone.
            if self.shared.verified() {
                let since = *verified_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= GIVE_UP_WHEN_COMPLETE {
                    return;
                }
            }
            // A new assignment ends the wait early.
            let until = Instant::now() + backoff.next_delay();
            while Instant::now() < until && self.shared.is_target(addr) {
                thread::sleep(Duration::from_millis(10));
            }
        }
    }

    fn session(&self, to: SocketAddr, backoff: &mut Backoff) -> Result<()> {
        let name = &self.shared.name;
        let file_id = self.store.manifest().id();
        let addr = to.to_string();
        let secret = self.shared.secret.as_deref();
        let (stream, mut dec, hello) = conn::dial(to, file_id, name, secret)?;
        if hello.file_id != file_id {
            return Err(Error::wire(
                &addr,
                wire::Error::Refused("it shares a different file".into()),
            ));
        }
        dec.set_layout(self.store.layout().clone());
        backoff.reset();
        log::info!(
            "{name}: connected to download neighbour {} at {addr}",
            hello.name
        );
        let conn = Conn::start(
            stream,
            dec,
            Setup {
                name: name.clone(),
                who: hello.name,
                ..Setup::default()
            },
        )?;
        let id = conn.handle().id();
        self.shared.report(Event::SourceUp(
            SourceKind::Ring,
            conn.handle().clone(),
            Some(to),
        ));
        let mut role = DownloadRole {
            store: Arc::clone(&self.store),
            shared: Arc::clone(&self.shared),
            listed: false,
            intake: Intake::new(Arc::clone(&self.store), Arc::clone(&self.shared)),
        };
        let result = conn.run(&mut role);
        // Every chunk that arrived is reported before the source is gone;
        // a chunk that could not be stored (a full disk) closed the
        // connection, and is why it ended.
        let stored = role.intake.finish();
        let result = result.and(stored);
        self.shared.report(Event::SourceDown(id));
        result
    }
}

/// What the peer does with its download neighbour's messages.
struct DownloadRole {
    store: Arc<Store>,
    shared: Arc<Shared>,
    /// Whether the neighbour's one chunk-ID list has arrived.
    listed: bool,
    /// Verifies and stores the chunks that arrive, off the reader.
    intake: Intake,
}

impl Role for DownloadRole {
    fn accepts(&self) -> Kinds {
        // One list, first; after it only what changes. A list costs the
        // coordinator time in proportion to the chunk count.
        const FIRST: Kinds = Kinds::of(&[Kind::ChunkList, Kind::KeepAlive, Kind::Refuse]);
        const THEN: Kinds = Kinds::of(&[Kind::Have, Kind::Chunk, Kind::KeepAlive, Kind::Refuse]);
        if self.listed { THEN } else { FIRST }
    }

    fn chunk_sink(&mut self) -> Option<&mut dyn ChunkSink> {
        Some(&mut self.intake)
    }

    fn on_message(&mut self, msg: Message<'_>, conn: &Handle) -> Result<()> {
        // What the neighbour says now comes after the chunks it sent, but
        // for a HAVE, which comes often in a ring and which the
        // coordinator takes in any order: a chunk still with the intake is
        // in flight for it, never asked for again.
        if !matches!(msg, Message::Have(_) | Message::KeepAlive) {
            self.intake.drain()?;
        }
        match msg {
            Message::ChunkList(set) => {
                self.listed = true;
                self.shared.report(Event::Offered(conn.id(), set));
            }
            Message::Have(ids) => self.shared.report(Event::Have(conn.id(), ids)),
            Message::Chunk { id, data } => {
                store_chunk(&self.store, &self.shared, conn, id, data)?;
            }
            Message::Refuse(why) => {
                return Err(Error::wire(
                    conn.who(),
                    wire::Error::Refused(why.to_string()),
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Verifies and stores a chunk that arrived on `conn` and reports it. A
/// store that cannot write (a full disk) stops the peer: retrying would
/// only fail again.
pub(super) fn store_chunk(
    store: &Store,
    shared: &Shared,
    conn: &Handle,
    id: ChunkId,
    data: &[u8],
) -> Result<()> {
    let put = match store.put(id, data) {
        Ok(put) => put,
        Err(e) => {
            let text = e.to_string();
            shared.report(Event::Fatal(e));
            return Err(Error::io("store a chunk", std::io::Error::other(text)));
        }
    };
    match put {
        Put::Stored => log::info!(
            target: "swarm::chunk",
            "{}: received chunk {id} from {}",
            shared.name,
            conn.who()
        ),
        Put::Duplicate => log::debug!(
            "{}: chunk {id} from {} was already held",
            shared.name,
            conn.who()
        ),
        // The coordinator says what it does about it.
        Put::Corrupt => {}
    }
    shared.report(Event::Received {
        from: conn.id(),
        id,
        put,
        bytes: data.len() as u64,
    });
    Ok(())
}
