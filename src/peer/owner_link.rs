//! The peer's link to the owner: manifest, seeded chunks, and a stand-in
//! for a download neighbour that has stalled.
//!
//! Connects (retrying with backoff while the owner is not up), checks the
//! manifest against the file ID the owner announced and against the one
//! cached in `--dir`, opens the store, tells the owner what is already
//! held and stores each seeded chunk after verifying it. Then it stays
//! for the end game: once no more chunks are missing than the owner
//! seeded, it asks the owner for a couple at a time, from the highest ID
//! down while the ring works from the lowest up, so the owner's link,
//! idle once seeding is done, shortens the ring's tail. While the download
//! side reports a stall it asks for a full window. Chunks are claimed in the store, so the ring and the owner
//! never fetch the same one at once.
//!
//! Before the manifest is known, `--wait` without reaching the owner is
//! fatal; after, an unreachable owner only earns a warning, since the ring
//! may still finish without it.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use super::upload::id_list;
use super::{Event, Shared};
use crate::chunks::ChunkSet;
use crate::error::{Error, Result};
use crate::manifest::{self, Layout, Manifest};
use crate::net::{self, Backoff};
use crate::store::{Put, Store};
use crate::wire::{self, Decoder, Message};

/// Requests in flight to the owner in the end game: enough to keep a
/// chunk coming, few enough not to take chunks the ring is about to bring.
const ENDGAME_WINDOW: usize = 2;

/// Everything the owner link thread needs.
pub(crate) struct OwnerLink {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// The store, once a cached manifest or the owner's has opened it.
    pub store: Option<Arc<Store>>,
    pub shared: Arc<Shared>,
    pub wait: Duration,
}

impl OwnerLink {
    /// The thread's body.
    pub fn run(mut self) {
        let name = self.shared.name.clone();
        let mut backoff = Backoff::default();
        let mut last_ok = Instant::now();
        let mut failures = 0u32;
        loop {
            if self.done() {
                return;
            }
            match self.session(&mut last_ok) {
                Ok(()) => {
                    failures = 0;
                    backoff.reset();
                    if !self.wait_for_stall() {
                        return;
                    }
                    continue;
                }
                Err(e @ (Error::Manifest(_) | Error::Integrity(_))) => {
                    let _ = self.shared.events.send(Event::Fatal(e));
                    return;
                }
                Err(e) => {
                    failures += 1;
                    // Refusals while the owner starts up are expected;
                    // say so once per streak, not every 100 ms.
                    if failures == 1 || !matches!(e, Error::Io { .. }) {
                        log::warn!("{name}: owner at {}: {e}; retrying", self.addr);
                    }
                }
            }
            if self.store.is_none() && last_ok.elapsed() >= self.wait {
                let msg = format!(
                    "cannot reach the owner at {} for {} s",
                    self.addr,
                    self.wait.as_secs()
                );
                let _ = self.shared.events.send(Event::Fatal(Error::Timeout(msg)));
                return;
            }
            thread::sleep(backoff.next_delay());
        }
    }

    fn done(&self) -> bool {
        self.shared.stopping() || self.store.as_ref().is_some_and(|s| s.is_complete())
    }

    /// Waits until the download side reports a stall (true) or there is
    /// nothing left to do (false).
    fn wait_for_stall(&self) -> bool {
        loop {
            if self.done() {
                return false;
            }
            if self.shared.stalled() {
                return true;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// One connection to the owner, as the wire module's "owner session"
    /// describes. Returns `Ok` once every chunk is held (or the peer is
    /// leaving).
    fn session(&mut self, last_ok: &mut Instant) -> Result<()> {
        let name = self.shared.name.clone();
        let owner = format!("owner at {}", self.addr);
        let mut stream = net::connect(self.addr).map_err(|e| Error::io("connect", e))?;
        let fail = |err| Error::wire(owner.as_str(), err);
        let cached_id = self.store.as_ref().map(|s| s.manifest().id());
        let hello = Message::Hello {
            version: wire::VERSION,
            file_id: cached_id.unwrap_or([0; 32]),
            name: &name,
        };
        wire::send(&mut stream, &hello).map_err(|e| fail(e.into()))?;
        let mut dec = Decoder::new();
        net::fill_within(&mut dec, &mut stream, net::HANDSHAKE_TIMEOUT).map_err(fail)?;
        let file_id = match dec.message().map_err(fail)? {
            Message::Hello { file_id, .. } => file_id,
            Message::Refuse(why) => return Err(fail(wire::Error::Refused(why.into()))),
            other => return Err(fail(wire::Error::Unexpected(other.name()))),
        };
        *last_ok = Instant::now();
        let manifest = receive_manifest(&mut dec, &mut stream, &owner)?;
        if manifest.id() != file_id {
            return Err(Error::Manifest(format!(
                "the manifest from the owner at {} does not match the file ID it announced",
                self.addr
            )));
        }
        let store = self.adopt(manifest)?;
        dec.set_layout(*store.layout());
        let held = store.snapshot();
        wire::send(&mut stream, &Message::ChunkList(held.clone())).map_err(|e| fail(e.into()))?;
        log::info!(
            "{name}: sent chunk-ID list to the owner ({} chunks)",
            held.len()
        );

        let mut link = Fetch {
            in_flight: ChunkSet::new(store.layout().count()),
            seeding: true,
            seeded: 0,
            last_heard: Instant::now(),
            last_sent: Instant::now(),
        };
        let result = self.fetch(&mut stream, &mut dec, &store, &mut link, last_ok, &owner);
        // What was asked for and not received may come from the ring.
        store.release(link.in_flight.iter(store.layout()).collect::<Vec<_>>());
        result
    }

    /// Receives the seeded chunks, then asks the owner for missing chunks
    /// until the store is complete: a few at a time from the highest ID
    /// down (the end game: the owner's link is idle once seeding is done,
    /// and the ring works from the lowest ID up), or a full window while
    /// the download neighbour is stalled.
    fn fetch(
        &self,
        stream: &mut TcpStream,
        dec: &mut Decoder,
        store: &Store,
        link: &mut Fetch,
        last_ok: &mut Instant,
        owner: &str,
    ) -> Result<()> {
        let name = &self.shared.name;
        let fail = |err| Error::wire(owner, err);
        let full_window = super::request_window(store.layout().chunk_size());
        loop {
            if self.shared.stopping() {
                return Ok(());
            }
            if !link.seeding && store.is_complete() {
                net::close_gracefully(stream, net::READ_TICK);
                return Ok(());
            }
            if !link.seeding {
                // The end game begins once what is missing is no more than
                // the owner seeded us: the tail, which would otherwise cross
                // the most hops of the ring while the owner's link idles.
                let missing = store.layout().count() - store.held();
                let window = if self.shared.stalled() {
                    full_window
                } else if missing <= link.seeded.max(ENDGAME_WINDOW as u32) {
                    ENDGAME_WINDOW
                } else {
                    0
                };
                link.request_more(stream, store, window, name)
                    .map_err(fail)?;
            }
            if link.last_sent.elapsed() >= net::KEEPALIVE_EVERY {
                wire::send(stream, &Message::KeepAlive).map_err(|e| fail(e.into()))?;
                link.last_sent = Instant::now();
            }
            match dec.fill(stream) {
                Ok(true) => {
                    link.last_heard = Instant::now();
                    *last_ok = link.last_heard;
                }
                Ok(false) if link.last_heard.elapsed() < net::IDLE_TIMEOUT => continue,
                Ok(false) => {
                    return Err(fail(wire::Error::Io(std::io::ErrorKind::TimedOut.into())));
                }
                Err(e) => return Err(fail(e)),
            }
            match dec.message().map_err(fail)? {
                Message::Chunk { id, data } => {
                    link.in_flight.remove(id);
                    match store.put(id, data)? {
                        Put::Stored => {
                            link.seeded += u32::from(link.seeding);
                            self.shared
                                .from_owner
                                .fetch_add(data.len() as u64, Ordering::Relaxed);
                            log::info!(target: "swarm::chunk", "{name}: received chunk {id} from the owner");
                        }
                        Put::Duplicate => {}
                        Put::Corrupt => log::warn!(
                            "{name}: chunk {id} from the owner failed its SHA-256 check; discarded"
                        ),
                    }
                }
                Message::SeedDone => {
                    log::info!("{name}: the owner seeded {} chunks", link.seeded);
                    link.seeding = false;
                }
                Message::KeepAlive => {}
                other => return Err(fail(wire::Error::Unexpected(other.name()))),
            }
        }
    }

    /// Opens the store for the owner's manifest, or checks it against the
    /// store already open.
    fn adopt(&mut self, manifest: Manifest) -> Result<Arc<Store>> {
        if let Some(store) = &self.store {
            if store.manifest() != &manifest {
                return Err(Error::Manifest(format!(
                    "the owner now serves a different file than the one cached in {}; \
                     use another --dir or empty this one",
                    self.dir.display()
                )));
            }
            return Ok(Arc::clone(store));
        }
        let store = Arc::new(Store::open(&self.dir, manifest)?);
        log::info!(
            "{}: received manifest from the owner: {} ({} bytes, {} chunks)",
            self.shared.name,
            store.manifest().name(),
            store.layout().file_len(),
            store.layout().count()
        );
        let _ = self.shared.events.send(Event::Store(Arc::clone(&store)));
        self.store = Some(Arc::clone(&store));
        Ok(store)
    }
}

/// Requests to the owner while it stands in for the ring.
struct Fetch {
    in_flight: ChunkSet,
    seeding: bool,
    seeded: u32,
    last_heard: Instant,
    last_sent: Instant,
}

impl Fetch {
    fn request_more(
        &mut self,
        stream: &mut TcpStream,
        store: &Store,
        window: usize,
        name: &str,
    ) -> std::result::Result<(), wire::Error> {
        let room = window.saturating_sub(self.in_flight.len() as usize);
        if room == 0 {
            return Ok(());
        }
        let ids = store.claim_missing(None, room);
        if ids.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(9 * ids.len());
        for &id in &ids {
            self.in_flight.insert(id);
            wire::encode(&Message::Request(id), &mut buf);
        }
        std::io::Write::write_all(stream, &buf)?;
        if self.last_heard.elapsed() > net::IDLE_TIMEOUT {
            // Nothing was in flight; the silence so far was ours.
            self.last_heard = Instant::now();
        }
        self.last_sent = Instant::now();
        log::info!(target: "swarm::chunk", "{name}: requested {} from the owner", id_list(&ids));
        Ok(())
    }
}

/// Reads MANIFEST and the HASHES frames that follow it into a manifest.
fn receive_manifest(dec: &mut Decoder, stream: &mut TcpStream, owner: &str) -> Result<Manifest> {
    let fail = |err| Error::wire(owner, err);
    net::fill_within(dec, stream, net::HANDSHAKE_TIMEOUT).map_err(fail)?;
    let (file_len, chunk_size, file_hash, raw_name) = match dec.message().map_err(fail)? {
        Message::Manifest {
            file_len,
            chunk_size,
            file_hash,
            name,
        } => (file_len, chunk_size, file_hash, name.to_string()),
        other => return Err(fail(wire::Error::Unexpected(other.name()))),
    };
    let layout = Layout::new(file_len, chunk_size)?;
    let name = manifest::plain_name(&raw_name);
    if name != raw_name {
        log::warn!("the owner's file name {raw_name:?} is not a plain name; using {name:?}");
    }
    dec.set_layout(layout);
    let mut hashes = Vec::with_capacity(layout.count() as usize);
    while hashes.len() < layout.count() as usize {
        net::fill_within(dec, stream, net::HANDSHAKE_TIMEOUT).map_err(fail)?;
        match dec.message().map_err(fail)? {
            Message::Hashes {
                first,
                hashes: more,
            } if first.index() == hashes.len() => {
                hashes.extend(more);
            }
            other => return Err(fail(wire::Error::Unexpected(other.name()))),
        }
    }
    Manifest::new(name, layout, file_hash, hashes)
}
