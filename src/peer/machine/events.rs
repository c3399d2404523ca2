//! What goes into and comes out of [`PeerCore`](super::PeerCore): its
//! configuration, the events a driver feeds it ([`Input`]) and the actions
//! it polls ([`Output`]), with the typed reasons they carry. The rules that
//! turn one into the other are in the parent module.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::chunks::ChunkSet;
use crate::manifest::ChunkId;
use crate::scheduler::{SourceId, SourceKind};
use crate::store::Put;

/// A connection that downloads from this peer (its upload side).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DownloaderId(pub u64);

/// What the core needs to know of the peer's flags: no `PeerArgs`, no
/// store.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// The most download neighbours at once (`--sources`, K).
    pub sources: u8,
    /// Whether the owner wires this peer (no `--download-neighbor`).
    pub wired: bool,
    /// The download neighbours given by hand (none when wired).
    pub targets: Vec<SocketAddr>,
    /// How long a source has to answer a request (`--stall-timeout`).
    pub stall_timeout: Duration,
    /// How long to stay once verified with no downloader (`--linger`).
    pub linger: Duration,
    /// Whether `--linger` was given: then the owner's word that the
    /// swarm is complete does not cut it short.
    pub linger_given: bool,
    /// How long to go without a chunk before giving up (`--wait`).
    pub wait: Duration,
    /// Stay once verified (`--follow`): never [`Output::Leave`].
    pub follow: bool,
    /// The most requests in flight to one source (see
    /// [`crate::peer::request_window`]).
    pub window: usize,
    /// Which chunk of the longest missing run the end game asks the
    /// owner for while the peer has several neighbours: a random draw
    /// per peer (with one neighbour it asks for the top).
    pub spread: u64,
    /// Whether to queue [`Output::Note`]s (a simulator turns them off).
    pub notes: bool,
}

impl CoreConfig {
    /// A wired peer with one source and the command line's defaults
    /// (`--stall-timeout 10`, `--linger 30`, `--wait 60`), for a file of
    /// chunks of `chunk_size` bytes.
    pub fn new(chunk_size: u32) -> CoreConfig {
        CoreConfig {
            sources: 1,
            wired: true,
            targets: Vec::new(),
            stall_timeout: Duration::from_secs(10),
            linger: Duration::from_secs(30),
            linger_given: false,
            wait: Duration::from_secs(60),
            follow: false,
            window: crate::peer::request_window(chunk_size),
            spread: 0,
            notes: true,
        }
    }
}

/// An event, from the connections, the owner or the clock.
#[derive(Debug)]
pub enum Input {
    /// A connection to a source is up; for a ring source, the download
    /// neighbour's address it was dialed for.
    SourceUp {
        src: SourceId,
        kind: SourceKind,
        addr: Option<SocketAddr>,
    },
    /// A source listed every chunk it holds.
    Offered { src: SourceId, chunks: ChunkSet },
    /// A source gained chunks.
    Have { src: SourceId, ids: Vec<ChunkId> },
    /// A chunk of `bytes` arrived from a source and the store dealt with
    /// it (verified it first).
    Received {
        src: SourceId,
        id: ChunkId,
        put: Put,
        bytes: u64,
    },
    /// The owner has sent every seed of this session.
    SeedDone { src: SourceId },
    /// Whether the owner is seeding any peer now.
    OwnerSeeding(bool),
    /// A source's connection ended.
    SourceDown { src: SourceId },
    /// A connection asked this peer for a chunk: it downloads from us.
    Downloader { conn: DownloaderId },
    /// When a downloader last asked for a chunk, and whether its
    /// connection is closed; for the exit rule, given whenever it changes
    /// once the file is verified.
    DownloaderActivity {
        conn: DownloaderId,
        last_asked: Option<Instant>,
        closed: bool,
    },
    /// A downloader reports it holds every chunk.
    DownloaderComplete {
        conn: DownloaderId,
        last_asked: Option<Instant>,
    },
    /// A downloader's connection ended.
    DownloaderGone {
        conn: DownloaderId,
        last_asked: Option<Instant>,
    },
    /// The chunks the owner link listed to the owner in a new session.
    OwnerListed(ChunkSet),
    /// The owner assigned download neighbours, nearest first, each with
    /// its address as the owner wrote it (none: no one yet).
    Neighbours(Vec<(SocketAddr, String)>),
    /// The download side cannot reach the neighbour at this address.
    Unreachable(SocketAddr),
    /// The owner reports every peer it knows holds the whole file.
    SwarmComplete,
    /// The output file is started: the file can be finished once every
    /// chunk is held.
    OutputReady,
    /// The answer to [`Output::Finish`]: verified, or the chunks that
    /// failed the whole-file check and were dropped (none if only the
    /// output was damaged and is rebuilt).
    Verified(Result<(), Vec<ChunkId>>),
    /// Time passed: lapse requests past their deadline, report progress.
    Tick,
}

/// Something for the driver to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Send these requests to a source.
    Request { src: SourceId, ids: Vec<ChunkId> },
    /// Close a source's connection.
    Close { src: SourceId, why: CloseWhy },
    /// The download neighbours the download side dials now.
    SetTargets(Vec<SocketAddr>),
    /// Do not dial the neighbour at `addr` for this long.
    Shun { addr: SocketAddr, wait: Duration },
    /// Whether the owner is wanted as a source (the end game, or a
    /// stalled ring): the owner link reconnects only then.
    NeedOwner(bool),
    /// Send to the owner, on source `src` (its link).
    ToOwner { src: SourceId, msg: ToOwner },
    /// Tell a download neighbour this peer holds every chunk: the last
    /// word on its connection.
    TellComplete { src: SourceId },
    /// Every chunk is held: check the file, and answer with
    /// [`Input::Verified`].
    Finish,
    /// The peer may leave.
    Leave(LeaveWhy),
    /// No chunk arrived for `--wait`: give up.
    Stuck(Duration),
    /// Worth a log line.
    Note(Note),
}

/// Why a source's connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseWhy {
    /// It was dialed for a neighbour the owner has since replaced.
    NotATarget,
    /// It sent [`MAX_BAD_CHUNKS`](super::MAX_BAD_CHUNKS) corrupt chunks.
    Corrupt,
    /// It sent a chunk it was not asked for.
    Unasked,
}

/// A message to the owner.
#[derive(Debug, PartialEq, Eq)]
pub enum ToOwner {
    /// The chunks gained since the last report (HAVE) and the receive
    /// rate in bytes per second (PROGRESS).
    Report { have: Vec<ChunkId>, rate: u64 },
    /// The assigned neighbour, as the owner wrote it, cannot be reached.
    Unreachable(String),
    /// This peer holds every chunk.
    Complete,
}

/// Why the peer may leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveWhy {
    /// The owner reports every peer holds the file.
    SwarmComplete,
    /// A downloader holds every chunk and no other still needs us.
    Released,
    /// No downloader asked for anything for `--linger`.
    Lingered,
}

/// How a ring source fails this peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failing {
    /// A request to it lapsed within `--stall-timeout`.
    Lapsed,
    /// It has left a request unanswered for `--stall-timeout`.
    Hung,
    /// It takes `mine` per chunk where another neighbour takes `other`.
    SlowerThanNeighbour { mine: Duration, other: Duration },
    /// It takes `mine` per chunk where the owner took `owner`.
    SlowerThanOwner { mine: Duration, owner: Duration },
}

/// Why the ring is stalled and the owner stands in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stall {
    /// No download neighbour: this peer is alone in the ring.
    Alone,
    /// No ring chunk arrived for `--stall-timeout`.
    Silent,
    /// The only neighbour sent [`MAX_BAD_CHUNKS`](super::MAX_BAD_CHUNKS) corrupt chunks.
    Corrupt,
    /// Every connected ring source is failing, each as said.
    Failing(Vec<(SourceId, Failing)>),
}

/// What is worth a log line; the driver words it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// A request to `src` for `id` lapsed (once per source per
    /// `--stall-timeout`).
    Lapsed { src: SourceId, id: ChunkId },
    /// The ring stalled: the owner stands in.
    Stalled(Stall),
    /// One of several neighbours, at `addr`, was dropped for corrupt
    /// chunks and no other is connected: the owner stands in.
    CorruptAlone { addr: SocketAddr },
    /// The ring delivers again.
    Delivering,
    /// Chunk `id` from `src` failed its SHA-256 check; `bad` so far. At
    /// [`MAX_BAD_CHUNKS`](super::MAX_BAD_CHUNKS) the source is dropped.
    Corrupt {
        src: SourceId,
        id: ChunkId,
        bad: u32,
    },
    /// `src` sent chunk `id` unasked and is dropped.
    Unasked { src: SourceId, id: ChunkId },
    /// The neighbour at `addr` is not dialed for `wait` (others are
    /// connected).
    Shunned { addr: SocketAddr, wait: Duration },
    /// The owner has seeded `seeded` chunks in all and is done.
    Seeded { seeded: u32 },
    /// Progress: `held` of `total` chunks, receiving `rate` bytes/s.
    Progress { held: u32, total: u32, rate: u64 },
}
