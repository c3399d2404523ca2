//! The file owner: splits the file, then seeds and serves peers.
//!
//! [`Owner::bind`] listens first (so a taken port fails at once), then
//! indexes the file (one read that hashes every chunk) and writes the
//! chunk files on a thread of its own: peers are served from the moment
//! the manifest exists, from chunk files once written and from the file
//! itself (verified) before. [`Owner::run`] accepts peers until stopped,
//! serving each on its own thread: handshake, manifest, the peer's share
//! of seeded chunks, then any chunk the peer asks for.
//!
//! Seeding hands each peer about 1/N of the chunks, choosing the chunks
//! handed out least so far ([`Seeder`]), so the first N peers between them
//! hold every chunk and the ring can finish even without the owner.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::chunks::ChunkSet;
use crate::cli::OwnerArgs;
use crate::error::{Error, Result};
use crate::manifest::{ChunkId, Layout, Manifest};
use crate::net::{self, Stopper};
use crate::store::{self, Store};
use crate::wire::{self, Decoder, Message};

/// Connections served at once; more are refused with a REFUSE message.
/// Each peer keeps one open until it is complete.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a request waits while other peers are still being seeded.
const REQUEST_DEFER: Duration = Duration::from_secs(2);

/// Chooses which chunks to seed to each joining peer.
#[derive(Debug)]
pub struct Seeder {
    /// How many times each chunk has been handed out.
    handed: Vec<u32>,
    /// Chunks per peer: `count / N`, and one more for the first
    /// `count % N` of every N peers, so N shares add up to the file
    /// exactly (every extra chunk costs the owner's link, the one link
    /// every byte must cross).
    base: usize,
    extra: usize,
    peers: usize,
    joined: usize,
}

impl Seeder {
    /// A seeder for `count` chunks shared among `peers` peers.
    pub fn new(count: u32, peers: u32) -> Seeder {
        Seeder {
            handed: vec![0; count as usize],
            base: (count / peers.max(1)) as usize,
            extra: (count % peers.max(1)) as usize,
            peers: peers.max(1) as usize,
            joined: 0,
        }
    }

    /// Picks this peer's share among the chunks it lacks, least handed out
    /// first (lowest ID among equals, so a share is a contiguous run when
    /// it can be), and counts them as handed out.
    pub fn choose(&mut self, layout: &Layout, peer_has: &ChunkSet) -> Vec<ChunkId> {
        let mut candidates: Vec<ChunkId> =
            layout.ids().filter(|&id| !peer_has.contains(id)).collect();
        candidates.sort_by_key(|id| (self.handed[id.index()], *id));
        let share = self.base + usize::from(self.joined % self.peers < self.extra);
        self.joined += 1;
        candidates.truncate(share);
        candidates.sort();
        for id in &candidates {
            self.handed[id.index()] += 1;
        }
        candidates
    }
}

/// A bound, indexed owner, ready to serve.
#[derive(Debug)]
pub struct Owner {
    listener: TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
    stopper: Stopper,
}

#[derive(Debug)]
struct Shared {
    store: Store,
    /// The file being served; chunks not yet split are read from here.
    source: PathBuf,
    file_id: [u8; 32],
    seeder: Mutex<Seeder>,
    /// Connections still sending their seeds. Requests wait for them: a
    /// seed is a chunk no peer has yet, worth more on the owner's link
    /// than one the ring would bring anyway.
    seeding: AtomicUsize,
}

impl Shared {
    /// Sends chunk `id`: from its chunk file once split, else straight
    /// from the source file, verified first like everything else sent.
    fn send_chunk(&self, id: ChunkId, stream: &mut TcpStream) -> Result<()> {
        if self.store.has(id) {
            self.store.send_chunk(id, stream)?;
            return Ok(());
        }
        let layout = self.store.layout();
        let mut data = vec![0u8; layout.chunk_len(id)];
        File::open(&self.source)
            .and_then(|f| f.read_exact_at(&mut data, layout.offset(id)))
            .map_err(|e| Error::io_path("read", &self.source, e))?;
        if !self.store.manifest().verify(id, &data) {
            return Err(Error::Integrity(format!(
                "{} changed since it was indexed (chunk {id}); restart the owner",
                self.source.display()
            )));
        }
        wire::send(stream, &Message::Chunk { id, data: &data })
            .map_err(|e| Error::io("send chunk", e))
    }
}

impl Owner {
    /// Listens on `args.listen`, indexes `args.file` (one read, hashing
    /// every chunk) and starts writing its chunk files into `args.dir` on
    /// a thread of their own, so peers are served from the start.
    pub fn bind(args: &OwnerArgs) -> Result<Owner> {
        let listener = net::listen(args.listen)?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("read the listening address", e))?;
        let started = Instant::now();
        let manifest = store::index(&args.file, args.chunk_size)?;
        let m = &manifest;
        log::info!(
            "owner: indexed {} ({} bytes, {} chunks of {} bytes) in {:.2} s; sha256 {}",
            m.name(),
            m.layout().file_len(),
            m.layout().count(),
            m.layout().chunk_size(),
            started.elapsed().as_secs_f64(),
            crate::manifest::to_hex(m.file_hash()),
        );
        let seeder = Seeder::new(m.layout().count(), args.peers);
        let file_id = m.id();
        let store = Store::open_owner(&args.dir, manifest)?;
        let shared = Arc::new(Shared {
            store,
            source: args.file.clone(),
            file_id,
            seeder: Mutex::new(seeder),
            seeding: AtomicUsize::new(0),
        });
        let splitter = Arc::clone(&shared);
        let dir = args.dir.clone();
        thread::Builder::new()
            .name("split".into())
            .spawn(move || {
                let started = Instant::now();
                match splitter.store.split_from(&splitter.source) {
                    Ok(kept) => log::info!(
                        "owner: wrote {} chunk files under {} in {:.2} s (reused {kept} unchanged chunk files)",
                        splitter.store.layout().count(),
                        dir.display(),
                        started.elapsed().as_secs_f64()
                    ),
                    Err(e) => log::error!("owner: splitting stopped: {e}"),
                }
            })
            .map_err(|e| Error::io("start the split thread", e))?;
        Ok(Owner {
            listener,
            addr,
            shared,
            stopper: Stopper::new(addr),
        })
    }

    /// The address the owner listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The manifest of the file being served.
    pub fn manifest(&self) -> &Manifest {
        self.shared.store.manifest()
    }

    /// A handle that stops [`Owner::run`] from another thread.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Accepts and serves peers until stopped.
    pub fn run(self) -> Result<()> {
        log::info!("owner: listening on {}", self.addr);
        let shared = self.shared;
        net::accept_loop(
            &self.listener,
            &self.stopper,
            "owner",
            MAX_CONNECTIONS,
            move |s, who| serve(&shared, s, who),
        );
        log::info!("owner: stopped");
        Ok(())
    }
}

/// One peer's session, as the wire module's "owner session" describes.
fn serve(shared: &Shared, mut stream: TcpStream, addr: &str) -> Result<()> {
    let store = &shared.store;
    let layout = *store.layout();
    net::configure(&stream).map_err(|e| Error::io("configure connection", e))?;
    let mut dec = Decoder::new();
    let fail = |err| Error::wire(addr, err);

    // 1. Hello both ways.
    net::fill_within(&mut dec, &mut stream, net::HANDSHAKE_TIMEOUT).map_err(fail)?;
    let who = match dec.message().map_err(fail)? {
        Message::Hello { name, .. } => name.to_string(),
        other => return Err(fail(wire::Error::Unexpected(other.name()))),
    };
    let who = if who.is_empty() {
        addr.to_string()
    } else {
        who
    };
    let fail = |err| Error::wire(who.as_str(), err);
    let hello = Message::Hello {
        version: wire::VERSION,
        file_id: shared.file_id,
        name: "owner",
    };
    wire::send(&mut stream, &hello).map_err(|e| fail(e.into()))?;

    // 2. Manifest and chunk digests.
    send_manifest(store.manifest(), &mut stream).map_err(|e| fail(e.into()))?;
    dec.set_layout(layout);

    // 3. What the peer already holds.
    net::fill_within(&mut dec, &mut stream, net::HANDSHAKE_TIMEOUT).map_err(fail)?;
    let peer_has = match dec.message().map_err(fail)? {
        Message::ChunkList(set) => set,
        other => return Err(fail(wire::Error::Unexpected(other.name()))),
    };
    log::info!(
        "owner: received chunk-ID list from {who} ({} of {} chunks)",
        peer_has.len(),
        layout.count()
    );

    // 4. Seed its share.
    let seeds = shared
        .seeder
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .choose(&layout, &peer_has);
    log::info!("owner: seeding {} chunks to {who}", seeds.len());
    shared.seeding.fetch_add(1, Ordering::SeqCst);
    let seeded = seed(shared, &mut stream, &seeds, &who);
    shared.seeding.fetch_sub(1, Ordering::SeqCst);
    seeded?;
    wire::send(&mut stream, &Message::SeedDone).map_err(|e| fail(e.into()))?;

    // 5. Answer requests until the peer leaves.
    let mut last_heard = Instant::now();
    let mut last_sent = Instant::now();
    loop {
        // A peer waiting for its end game sends only keepalives; answer in
        // kind so its idle timeout does not drop and re-seed it.
        if last_sent.elapsed() >= net::KEEPALIVE_EVERY {
            wire::send(&mut stream, &Message::KeepAlive).map_err(|e| fail(e.into()))?;
            last_sent = Instant::now();
        }
        match dec.fill(&mut stream) {
            Ok(true) => last_heard = Instant::now(),
            Ok(false) => {
                if last_heard.elapsed() > net::IDLE_TIMEOUT {
                    log::info!(
                        "owner: {who} idle for {} s; closing",
                        net::IDLE_TIMEOUT.as_secs()
                    );
                    return Ok(());
                }
                continue;
            }
            Err(wire::Error::Closed) => {
                log::info!("owner: {who} disconnected");
                return Ok(());
            }
            Err(e) => return Err(fail(e)),
        }
        match dec.message().map_err(fail)? {
            Message::Request(id) => {
                let asked = Instant::now();
                while shared.seeding.load(Ordering::SeqCst) > 0 && asked.elapsed() < REQUEST_DEFER {
                    thread::sleep(Duration::from_millis(5));
                }
                log::info!(target: "swarm::chunk", "owner: received request for chunk {id} from {who}");
                shared.send_chunk(id, &mut stream)?;
                last_sent = Instant::now();
                log::info!(target: "swarm::chunk", "owner: sent chunk {id} to {who}");
            }
            Message::KeepAlive => {}
            other => return Err(fail(wire::Error::Unexpected(other.name()))),
        }
    }
}

/// Sends a peer its seeded chunks.
fn seed(shared: &Shared, stream: &mut TcpStream, seeds: &[ChunkId], who: &str) -> Result<()> {
    for &id in seeds {
        shared.send_chunk(id, stream)?;
        log::info!(target: "swarm::chunk", "owner: sent chunk {id} to {who}");
    }
    Ok(())
}

/// Sends MANIFEST and the HASHES frames that cover every chunk.
pub fn send_manifest(m: &Manifest, stream: &mut TcpStream) -> std::io::Result<()> {
    let layout = m.layout();
    let mut buf = Vec::with_capacity(layout.frame_limit());
    wire::encode(
        &Message::Manifest {
            file_len: layout.file_len(),
            chunk_size: layout.chunk_size(),
            file_hash: *m.file_hash(),
            name: m.name(),
        },
        &mut buf,
    );
    let per_frame = (layout.frame_limit() - 64) / 32;
    for (n, hashes) in m.chunk_hashes().chunks(per_frame).enumerate() {
        let first = layout
            .chunk_id((n * per_frame) as u32)
            .expect("a digest exists only for a chunk in range");
        wire::encode(
            &Message::Hashes {
                first,
                hashes: hashes.to_vec(),
            },
            &mut buf,
        );
        if buf.len() >= 256 * 1024 {
            std::io::Write::write_all(stream, &buf)?;
            buf.clear();
        }
    }
    std::io::Write::write_all(stream, &buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(count: u32) -> Layout {
        Layout::new(u64::from(count) * 1024 - 10, 1024).unwrap()
    }

    fn raw(ids: &[ChunkId]) -> Vec<u32> {
        ids.iter().map(|id| id.get()).collect()
    }

    #[test]
    fn first_n_peers_between_them_get_every_chunk_once() {
        let l = layout(11);
        let mut seeder = Seeder::new(11, 5);
        let empty = ChunkSet::new(11);
        let shares: Vec<_> = (0..5).map(|_| raw(&seeder.choose(&l, &empty))).collect();
        // 11 chunks for 5 peers: 3 + 2 + 2 + 2 + 2, each chunk once.
        assert_eq!(
            shares,
            vec![
                vec![0, 1, 2],
                vec![3, 4],
                vec![5, 6],
                vec![7, 8],
                vec![9, 10]
            ]
        );
        // A sixth peer starts the next round.
        assert_eq!(raw(&seeder.choose(&l, &empty)), vec![0, 1, 2]);
    }

    #[test]
    fn a_returning_peer_gets_least_handed_chunks_it_lacks() {
        let l = layout(10);
        let mut seeder = Seeder::new(10, 2);
        let empty = ChunkSet::new(10);
        assert_eq!(raw(&seeder.choose(&l, &empty)), vec![0, 1, 2, 3, 4]);
        let mut has = ChunkSet::new(10);
        for i in [5, 6] {
            has.insert(l.chunk_id(i).unwrap());
        }
        // 5 and 6 are held; 7, 8, 9 have never been handed out.
        assert_eq!(raw(&seeder.choose(&l, &has)), vec![0, 1, 7, 8, 9]);
        let mut full = ChunkSet::new(10);
        l.ids().for_each(|id| {
            full.insert(id);
        });
        assert!(seeder.choose(&l, &full).is_empty());
    }

    #[test]
    fn more_peers_than_chunks_seeds_each_chunk_once_per_round() {
        let l = layout(2);
        let mut seeder = Seeder::new(2, 5);
        let empty = ChunkSet::new(2);
        let shares: Vec<_> = (0..6).map(|_| raw(&seeder.choose(&l, &empty))).collect();
        // The ring carries chunks 0 and 1 to the three peers seeded none.
        assert_eq!(
            shares,
            vec![vec![0], vec![1], vec![], vec![], vec![], vec![0]]
        );
        assert!(
            Seeder::new(0, 5)
                .choose(&Layout::new(0, 1024).unwrap(), &ChunkSet::new(0))
                .is_empty()
        );
    }
}
