//! The peer's link to the owner: manifest and seeded chunks.
//!
//! Connects (retrying with backoff while the owner is not up), checks
//! the manifest against the file ID the owner announced and against the
//! one cached in `--dir`, opens the store, tells the owner what is already
//! held and stores each seeded chunk after verifying it. It gives up
//! after `--wait` without reaching the owner: fatally when there is no
//! cached manifest to work from, with a warning otherwise.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use super::{Event, Shared};
use crate::error::{Error, Result};
use crate::manifest::{self, Layout, Manifest};
use crate::net::{self, Backoff};
use crate::store::{Put, Store};
use crate::wire::{self, Decoder, Message};

/// Everything the owner link thread needs.
pub(crate) struct OwnerLink {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// The store, when a cached manifest opened it already.
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
        let mut refused = 0;
        loop {
            if self.shared.stopping() {
                return;
            }
            match self.session(&mut last_ok) {
                Ok(()) => return,
                Err(e @ (Error::Manifest(_) | Error::Integrity(_))) => {
                    let _ = self.shared.events.send(Event::Fatal(e));
                    return;
                }
                Err(e) => {
                    if matches!(&e, Error::Io { .. }) {
                        refused += 1;
                    }
                    // Connection refused while the owner starts up is
                    // expected; say so once, not every 100 ms.
                    if refused <= 1 || !matches!(&e, Error::Io { .. }) {
                        log::warn!("{name}: owner at {}: {e}; retrying", self.addr);
                    }
                }
            }
            if last_ok.elapsed() >= self.wait {
                let msg = format!(
                    "cannot reach the owner at {} for {} s",
                    self.addr,
                    self.wait.as_secs()
                );
                if self.store.is_some() {
                    log::warn!("{name}: {msg}; carrying on with the ring");
                } else {
                    let _ = self.shared.events.send(Event::Fatal(Error::Timeout(msg)));
                }
                return;
            }
            thread::sleep(backoff.next_delay());
        }
    }

    /// One connection to the owner, as the wire module's "owner session"
    /// describes. Returns `Ok` once seeding is done.
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
                "the owner at {}'s manifest does not match the file ID it announced",
                self.addr
            )));
        }
        let store = match &self.store {
            Some(store) if store.manifest() != &manifest => {
                return Err(Error::Manifest(format!(
                    "the owner now serves a different file than the one cached in {}; \
                     use another --dir or empty this one",
                    self.dir.display()
                )));
            }
            Some(store) => Arc::clone(store),
            None => {
                let store = Arc::new(Store::open(&self.dir, manifest)?);
                let _ = self.shared.events.send(Event::Store(Arc::clone(&store)));
                self.store = Some(Arc::clone(&store));
                store
            }
        };
        log::info!(
            "{name}: received manifest from the owner: {} ({} bytes, {} chunks)",
            store.manifest().name(),
            store.layout().file_len(),
            store.layout().count()
        );
        dec.set_layout(*store.layout());
        let held = store.snapshot();
        wire::send(&mut stream, &Message::ChunkList(held.clone())).map_err(|e| fail(e.into()))?;
        log::info!(
            "{name}: sent chunk-ID list to the owner ({} chunks)",
            held.len()
        );

        let mut last_heard = Instant::now();
        let mut seeded = 0u32;
        loop {
            if self.shared.stopping() {
                return Ok(());
            }
            match dec.fill(&mut stream) {
                Ok(true) => {
                    last_heard = Instant::now();
                    *last_ok = last_heard;
                }
                Ok(false) if last_heard.elapsed() < net::IDLE_TIMEOUT => continue,
                Ok(false) => {
                    return Err(fail(wire::Error::Io(std::io::ErrorKind::TimedOut.into())));
                }
                Err(e) => return Err(fail(e)),
            }
            match dec.message().map_err(fail)? {
                Message::Chunk { id, data } => match store.put(id, data)? {
                    Put::Stored => {
                        seeded += 1;
                        self.shared
                            .from_owner
                            .fetch_add(data.len() as u64, Ordering::Relaxed);
                        log::info!(target: "swarm::chunk", "{name}: received chunk {id} from the owner");
                    }
                    Put::Duplicate => {}
                    Put::Corrupt => log::warn!(
                        "{name}: chunk {id} from the owner failed its SHA-256 check; discarded"
                    ),
                },
                Message::SeedDone => {
                    log::info!("{name}: the owner seeded {seeded} chunks");
                    return Ok(());
                }
                Message::KeepAlive => {}
                other => return Err(fail(wire::Error::Unexpected(other.name()))),
            }
        }
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
