//! The upload side: serves whoever downloads from this peer.
//!
//! An accept loop hands each connection to its own thread (a stray or
//! hostile connection never holds up the real neighbour; when all slots
//! are taken the connection that has done least makes room). After the
//! HELLO exchange this side sends its chunk-ID list, then the connection
//! runs with [`UploadRole`]: each REQUEST queues the chunk for the writer,
//! which reads it from disk only when sending it, and every chunk the
//! store gains goes out as HAVE.
//!
//! A connection becomes a *downloader* with its first REQUEST; only a
//! downloader's COMPLETE can let this peer leave, and only a downloader's
//! requests count as contact. A stranger can neither release a peer nor
//! hold it.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use super::{Event, Shared};
use crate::conn::{self, ChunkSource, Conn, Handle, INBOX, Outgoing, Role, SendError, Setup};
use crate::error::{Error, Result};
use crate::manifest::ChunkId;
use crate::net::{self, Stats, Stopper};
use crate::store::Store;
use crate::wire::{self, Decoder, Kind, Kinds, Message};

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
        let (max, timeouts) = (shared.limits.upload_connections, shared.timeouts);
        let open = net::accept_loop(
            &self.listener,
            &self.stopper,
            &name,
            max,
            timeouts,
            move |s, addr, stats| serve(s, &store, &shared, addr, stats),
        );
        // The peer is leaving: whoever is still connected goes too, and
        // each connection's thread is joined.
        open.close_and_join();
    }
}

impl ChunkSource for Store {
    fn write_chunk(&self, id: ChunkId, w: &mut TcpStream) -> Result<()> {
        // A chunk dropped since it was asked for goes unanswered, as any
        // chunk not held does; the requester's deadline sends it elsewhere.
        self.send_chunk(id, w).map(|_| ())
    }
}

/// One upload connection, as the wire module's "ring session" describes.
fn serve(
    mut stream: TcpStream,
    store: &Arc<Store>,
    shared: &Arc<Shared>,
    addr: &str,
    stats: Arc<Stats>,
) -> Result<()> {
    let timeouts = shared.timeouts;
    net::configure_with(&stream, &timeouts).map_err(|e| Error::io("configure connection", e))?;
    let name = &shared.name;
    let mut dec = Decoder::new();
    let secret = shared.secret.as_deref();
    let hello = conn::read_hello(&mut stream, &mut dec, addr, secret, &timeouts)?;
    let who = hello.name.clone();
    let file_id = store.manifest().id();
    if hello.file_id != file_id {
        return net::refuse(stream, "this peer is sharing a different file", &who);
    }
    let fail = |e: std::io::Error| Error::wire(who.as_str(), e.into());
    conn::answer_hello(&mut stream, file_id, name, &hello, shared.secret.as_deref())
        .map_err(fail)?;
    dec.set_layout(store.layout().clone());
    // The list and the feed of chunks gained after it, taken at one
    // instant so no chunk falls between the two.
    let (held, gained) = store.subscribe();
    let mut list = Vec::new();
    wire::encode(&Message::ChunkList(held), &mut list);
    stream.write_all(&list).map_err(fail)?;
    drop(list);
    log::info!("{name}: upload neighbour {who} connected from {addr}; sent chunk-ID list");
    let source: Arc<dyn ChunkSource> = Arc::clone(store) as Arc<dyn ChunkSource>;
    let conn = Conn::start(
        stream,
        dec,
        Setup {
            name: name.clone(),
            who: who.clone(),
            source: Some(source),
            announce: Some(gained),
            stats: Some(stats),
            timeouts,
        },
    )?;
    let id = conn.handle().id();
    let mut role = UploadRole {
        store: Arc::clone(store),
        shared: Arc::clone(shared),
        downloading: false,
    };
    let result = conn.run(&mut role);
    if role.downloading {
        shared.report(Event::DownloaderGone(id));
    }
    if result.is_ok() {
        log::info!("{name}: upload neighbour {who} disconnected");
    }
    result
}

/// What the peer does with the messages of a connection it serves.
struct UploadRole {
    store: Arc<Store>,
    shared: Arc<Shared>,
    /// Whether the other side has asked for a chunk.
    downloading: bool,
}

impl Role for UploadRole {
    fn accepts(&self) -> Kinds {
        const KINDS: Kinds = Kinds::of(&[Kind::Request, Kind::Complete, Kind::KeepAlive]);
        KINDS
    }

    fn on_message(&mut self, msg: Message<'_>, conn: &Handle) -> Result<()> {
        let name = &self.shared.name;
        match msg {
            Message::Request(id) => {
                log::info!(
                    target: "swarm::chunk",
                    "{name}: received request for chunk {id} from {}",
                    conn.who()
                );
                if !self.store.has(id) {
                    // Listed once and dropped since (it failed the
                    // whole-file check), or never listed: the requester's
                    // deadline sends it elsewhere.
                    log::debug!(
                        "{name}: {} asked for chunk {id}, which is not held",
                        conn.who()
                    );
                    return Ok(());
                }
                match conn.send(Outgoing::Chunk(id)) {
                    Ok(()) | Err(SendError::Closed) => {}
                    Err(SendError::Full) => {
                        return Err(Error::wire(conn.who(), wire::Error::Flood(INBOX)));
                    }
                }
                if !self.downloading {
                    self.downloading = true;
                    self.shared.report(Event::Downloader(conn.clone()));
                }
            }
            Message::Complete if self.downloading => {
                self.shared.report(Event::DownloaderComplete(conn.id()));
                // Nothing more to send it, not even the chunks it asked
                // for before it held them all (end-game requests that
                // another neighbour answered first); it closes once it
                // reads our close.
                conn.finish_now();
            }
            Message::Complete => {
                log::info!(
                    "{name}: ignoring COMPLETE from {}: it has not downloaded from this peer",
                    conn.who()
                );
                conn.close();
            }
            _ => {}
        }
        Ok(())
    }
}
