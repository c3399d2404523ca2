//! The upload side: serves the peer's upload neighbour.
//!
//! An accept loop hands each connection to its own thread, so a stray or
//! hostile connection never holds up the real neighbour. Per connection,
//! the reading half takes REQUEST, COMPLETE and KEEPALIVE; the writing
//! half (a second thread) sends the chunk-ID list, then HAVE as the store
//! gains chunks and CHUNK for each request, straight from the chunk file.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, select};

use super::{Event, Shared};
use crate::chunks::ChunkSet;
use crate::error::{Error, Result};
use crate::manifest::ChunkId;
use crate::net::{self, Stopper};
use crate::store::Store;
use crate::wire::{self, Decoder, Message};

/// Connections served at once; more are refused with a REFUSE message.
pub const MAX_CONNECTIONS: usize = 16;
/// Requests one connection may have queued. An honest downloader keeps
/// at most a window (64) in flight; more is a flood, and the connection
/// is dropped rather than letting the queue grow.
pub const MAX_QUEUED_REQUESTS: usize = 256;

/// Everything the upload thread needs.
pub(crate) struct Upload {
    pub listener: TcpListener,
    pub store: Arc<Store>,
    pub shared: Arc<Shared>,
    pub stopper: Stopper,
}

impl Upload {
    /// The accept loop.
    pub fn run(self) {
        let name = self.shared.name.clone();
        let (store, shared) = (self.store, self.shared);
        net::accept_loop(
            &self.listener,
            &self.stopper,
            &name,
            MAX_CONNECTIONS,
            move |s, who| serve(s, &store, &shared, who),
        );
    }
}

/// One upload connection, as the wire module's "ring session" describes.
fn serve(
    mut stream: TcpStream,
    store: &Arc<Store>,
    shared: &Arc<Shared>,
    addr: &str,
) -> Result<()> {
    net::configure(&stream).map_err(|e| Error::io("configure connection", e))?;
    let name = &shared.name;
    let mut dec = Decoder::new();
    net::fill_within(&mut dec, &mut stream, net::HANDSHAKE_TIMEOUT)
        .map_err(|e| Error::wire(addr, e))?;
    let (file_id, who) = match dec.message().map_err(|e| Error::wire(addr, e))? {
        Message::Hello { file_id, name, .. } if !name.is_empty() => (file_id, name.to_string()),
        Message::Hello { file_id, .. } => (file_id, addr.to_string()),
        other => return Err(Error::wire(addr, wire::Error::Unexpected(other.name()))),
    };
    if file_id != store.manifest().id() {
        return net::refuse(stream, "this peer is sharing a different file", &who);
    }
    let hello = Message::Hello {
        version: wire::VERSION,
        file_id,
        name,
    };
    wire::send(&mut stream, &hello).map_err(|e| Error::wire(&who, e.into()))?;
    dec.set_layout(*store.layout());
    shared.upload_contact();
    log::info!("{name}: upload neighbour {who} connected from {addr}");

    let (held, gained) = store.subscribe();
    let (requests, request_rx) = crossbeam_channel::bounded(MAX_QUEUED_REQUESTS);
    let writer = Writer {
        stream: stream
            .try_clone()
            .map_err(|e| Error::io("clone connection", e))?,
        store: Arc::clone(store),
        shared: Arc::clone(shared),
        who: who.clone(),
    };
    let writer = thread::Builder::new()
        .name(format!("upload writer {who}"))
        .spawn(move || writer.run(held, gained, request_rx))
        .map_err(|e| Error::io("start an upload writer thread", e))?;

    let result = read_loop(&mut stream, &mut dec, store, shared, &who, &requests);
    drop(requests);
    let _ = stream.shutdown(Shutdown::Both);
    let written = writer
        .join()
        .unwrap_or_else(|_| Err(Error::Bug("upload writer panicked".into())));
    match result {
        // The neighbour has everything and hangs up; a write cut short by
        // that is no error.
        Ok(true) => Ok(()),
        Ok(false) => written,
        Err(e) => Err(e),
    }
}

fn read_loop(
    stream: &mut TcpStream,
    dec: &mut Decoder,
    store: &Store,
    shared: &Shared,
    who: &str,
    requests: &crossbeam_channel::Sender<ChunkId>,
) -> Result<bool> {
    // Returns whether the neighbour reported that it holds every chunk.
    let name = &shared.name;
    let fail = |err| Error::wire(who, err);
    let mut last_heard = Instant::now();
    loop {
        if shared.stopping() {
            return Ok(false);
        }
        match dec.fill(stream) {
            Ok(true) => {
                last_heard = Instant::now();
                shared.upload_contact();
            }
            Ok(false) if last_heard.elapsed() < net::IDLE_TIMEOUT => continue,
            Ok(false) => return Err(fail(wire::Error::Io(std::io::ErrorKind::TimedOut.into()))),
            Err(wire::Error::Closed) => {
                log::info!("{name}: upload neighbour {who} disconnected");
                return Ok(false);
            }
            Err(e) => return Err(fail(e)),
        }
        match dec.message().map_err(fail)? {
            Message::Request(id) => {
                if !store.has(id) {
                    return Err(fail(wire::Error::Unexpected(
                        "request for an unlisted chunk",
                    )));
                }
                log::info!(target: "swarm::chunk", "{name}: received request for chunk {id} from {who}");
                match requests.try_send(id) {
                    Ok(()) => {}
                    Err(crossbeam_channel::TrySendError::Full(_)) => {
                        return Err(fail(wire::Error::Flood(MAX_QUEUED_REQUESTS)));
                    }
                    // The writer stopped; its error says why.
                    Err(crossbeam_channel::TrySendError::Disconnected(_)) => return Ok(false),
                }
            }
            Message::Complete => {
                let _ = shared
                    .events
                    .send(Event::UploadNeighbourComplete(who.to_string()));
                return Ok(true);
            }
            Message::KeepAlive => {}
            other => return Err(fail(wire::Error::Unexpected(other.name()))),
        }
    }
}

/// The writing half of an upload connection.
struct Writer {
    stream: TcpStream,
    store: Arc<Store>,
    shared: Arc<Shared>,
    who: String,
}

impl Writer {
    fn run(
        mut self,
        held: ChunkSet,
        gained: Receiver<ChunkId>,
        requests: Receiver<ChunkId>,
    ) -> Result<()> {
        let result = self.serve(held, gained, requests);
        // Wake the reading half so the connection ends as one.
        let _ = self.stream.shutdown(Shutdown::Both);
        result
    }

    fn serve(
        &mut self,
        held: ChunkSet,
        gained: Receiver<ChunkId>,
        requests: Receiver<ChunkId>,
    ) -> Result<()> {
        let name = self.shared.name.clone();
        let who = self.who.clone();
        let count = held.len();
        self.send(&Message::ChunkList(held))?;
        log::info!("{name}: sent chunk-ID list to {who} ({count} chunks)");
        loop {
            if self.shared.stopping() {
                return Ok(());
            }
            select! {
                recv(requests) -> id => {
                    let Ok(id) = id else { return Ok(()) };
                    self.store.send_chunk(id, &mut self.stream)?;
                    log::info!(target: "swarm::chunk", "{name}: sent chunk {id} to {who}");
                }
                recv(gained) -> id => {
                    let Ok(id) = id else { return Ok(()) };
                    let mut ids = vec![id];
                    ids.extend(gained.try_iter());
                    ids.sort();
                    log::info!(
                        target: "swarm::chunk",
                        "{name}: sent chunk-ID update to {who}: {}",
                        id_list(&ids)
                    );
                    self.send(&Message::Have(ids))?;
                }
                default(net::KEEPALIVE_EVERY) => self.send(&Message::KeepAlive)?,
            }
        }
    }

    fn send(&mut self, msg: &Message<'_>) -> Result<()> {
        wire::send(&mut self.stream, msg).map_err(|e| Error::wire(self.who.as_str(), e.into()))
    }
}

/// "chunk 7" or "3 chunks (4, 5, 9)", eliding long lists.
pub(crate) fn id_list(ids: &[ChunkId]) -> String {
    if let [one] = ids {
        return format!("chunk {one}");
    }
    let shown: Vec<String> = ids.iter().take(8).map(|id| id.to_string()).collect();
    let more = if ids.len() > 8 { ", ..." } else { "" };
    format!("{} chunks ({}{more})", ids.len(), shown.join(", "))
}
