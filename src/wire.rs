//! The swarm protocol: every byte that crosses a connection.
//!
//! This module holds the whole wire format: one [`Message`] enum, one
//! encoder ([`encode`]) and one decoder ([`Decoder`]). It knows nothing of
//! files or threads. The text below is the specification; a compatible
//! peer can be written from it alone.
//!
//! # Frames
//!
//! A connection carries frames in both directions. Integers are unsigned
//! and big-endian.
//!
//! ```text
//! frame = length:u32  kind:u8  payload:(length - 1 bytes)
//! ```
//!
//! `length` counts the kind byte and the payload, so it is at least 1. A
//! receiver checks, from these five header bytes alone and before it
//! reads or allocates the payload, that the kind is one it accepts in the
//! session's current state (tables below), that `length` is within the
//! kind's allowed sizes, and that it is within its frame limit; it closes
//! the connection on any violation. The frame limit is 1024 until the
//! manifest is known, then `64 + max(chunk_size, ceil(chunks / 8))`. A
//! receiver's buffer grows with the bytes that actually arrive, not with
//! what `length` claims.
//!
//! # Messages
//!
//! | kind | name       | payload                                                        |
//! |------|------------|----------------------------------------------------------------|
//! | 1    | HELLO      | `"SWRM"` `version:u16` `file_id:[32]` `name:utf8 (0..=64 bytes)` |
//! | 2    | MANIFEST   | `file_len:u64` `chunk_size:u32` `file_sha256:[32]` `name:utf8 (1..=255 bytes)` |
//! | 3    | HASHES     | `first:u32` then `n >= 1` chunk SHA-256 digests of 32 bytes, for chunks `first..first+n` |
//! | 4    | CHUNK_LIST | bitfield of exactly `ceil(chunks / 8)` bytes; bit 7 of byte 0 is chunk 0; spare bits 0 |
//! | 5    | HAVE       | `n >= 1` chunk IDs as `u32`: chunks the sender has gained since its last list |
//! | 6    | REQUEST    | `chunk:u32`                                                    |
//! | 7    | CHUNK      | `chunk:u32` then exactly that chunk's bytes                    |
//! | 8    | SEED_DONE  | empty: the owner has sent every chunk it seeds to this peer    |
//! | 9    | COMPLETE   | empty: the sender now holds every chunk                        |
//! | 10   | KEEPALIVE  | empty: sent after 5 s without other traffic                    |
//! | 11   | REFUSE     | `reason:utf8 (0..=200 bytes)`, then the sender closes          |
//! | 12   | SEEDING    | `busy:u8`, 1 or 0: whether the owner is sending seeds to any peer now |
//! | 13   | CHALLENGE  | `nonce:[32]`: fresh random bytes to be proved over (see Admission) |
//! | 14   | PROOF      | `mac:[32]`: HMAC-SHA-256 over both nonces (see Admission)      |
//!
//! A chunk ID is valid when it is below the manifest's chunk count, and a
//! chunk's length is `chunk_size`, except the last chunk's, which is
//! `file_len - (chunks - 1) * chunk_size`. An unknown kind, an ID out of
//! range, a wrong length or a message that is out of place ends the
//! connection.
//!
//! Every list a sender builds must fit the receiver's frame limit: HASHES
//! carry at most `(limit - 64) / 32` digests and HAVE at most
//! `(limit - 1) / 4` IDs per frame; longer lists are split over several
//! frames ([`encode_have`]).
//!
//! # Admission
//!
//! A swarm may be closed by a secret that the owner and every peer hold
//! (`--secret-file`). Then every connection, to the owner or between
//! peers, opens with a mutual challenge-response before any HELLO, and a
//! side that has not proved the secret is sent nothing of the file: no
//! MANIFEST, no CHUNK_LIST, no CHUNK. A peer likewise takes nothing from
//! an owner that has not proved it. Without a secret a connection opens
//! with HELLO as below, and a swarm is open to anyone who reaches it.
//!
//! A is the connecting side, B the accepting side. `na` and `nb` are 32
//! bytes from the operating system's random source, fresh for each
//! connection. `secret` is the secret file's bytes without trailing ASCII
//! whitespace (1 to 4096 bytes), the HMAC-SHA-256 key (RFC 2104). `||` is
//! concatenation, and the labels are the ASCII bytes shown, without a
//! terminator; they differ so that neither side's proof can be replayed
//! as the other's.
//!
//! 1. A → CHALLENGE(`na`), its first frame.
//! 2. B reads A's first frame. A CHALLENGE: B → CHALLENGE(`nb`), then
//!    PROOF(`HMAC(secret, "swarm accept" || na || nb)`).
//! 3. A checks B's PROOF in constant time. If it is wrong, or B sent
//!    HELLO or REFUSE instead of CHALLENGE, A closes without sending its
//!    own proof or its HELLO: B has not shown it belongs to the swarm.
//! 4. A → PROOF(`HMAC(secret, "swarm connect" || na || nb)`), then its
//!    HELLO, and the session goes on as below.
//! 5. B checks A's PROOF in constant time; if it is wrong, B → REFUSE
//!    `"wrong swarm secret"` and closes. Otherwise the next frame is A's
//!    HELLO and the session goes on as below.
//!
//! A side configured differently from the other is refused, with nothing
//! else sent: B with a secret whose first frame from A is a HELLO → REFUSE
//! `"this swarm needs its secret: start with --secret-file"`; B without a
//! secret whose first frame from A is a CHALLENGE → REFUSE `"this swarm has
//! no secret; start without --secret-file"`. These three refusals mean
//! that admission failed, which trying again will not change. B's other
//! refusals (a full listener) come before it reads anything and mean what
//! they always do.
//!
//! The exchange runs under the handshake deadline: B has 10 s from the
//! connection's start to receive A's PROOF and HELLO, A has 10 s from its
//! connect to receive B's CHALLENGE, PROOF and HELLO. Frames in it are
//! checked from their headers like any other: B accepts only CHALLENGE or
//! HELLO first and then only PROOF; A accepts CHALLENGE, HELLO or REFUSE
//! first and then only PROOF.
//!
//! Admission proves that whoever answers at the start of a connection
//! holds the secret. It neither encrypts nor authenticates the frames
//! that follow: a party that can alter traffic between two members can
//! still relay the exchange and then inject frames of its own (chunks are
//! still checked against the manifest's digests, the manifest is not).
//!
//! # Sessions
//!
//! The connecting side speaks first. `version` is 3 (version 1 had no
//! SEEDING, version 2 no CHALLENGE or PROOF); a HELLO with another magic
//! or version is refused. `file_id` is
//! the SHA-256 of the manifest's text form (see `manifest.rs`), or 32 zero
//! bytes from a peer that has no manifest yet; `name` names the sender in
//! logs (`"peer 9001"`). The answering side has 10 s to receive the opening
//! HELLO.
//!
//! Owner session (peer connects to the owner):
//!
//! 1. peer → HELLO; owner → HELLO (with the real `file_id`).
//! 2. owner → MANIFEST, then HASHES frames covering chunks `0..chunks` in
//!    order. The peer checks that `file_id` is the SHA-256 of the manifest
//!    it rebuilt, and, if its own HELLO carried a non-zero `file_id`,
//!    that the two are equal.
//! 3. peer → CHUNK_LIST of the chunks it already holds.
//! 4. owner → CHUNK for each chunk it seeds to this peer, unasked, then
//!    SEED_DONE.
//! 5. From step 3 on the peer may send REQUEST for any chunk; the owner
//!    answers each with CHUNK, in order, after the seeds, and never holds
//!    a request back for another session's sake. The session lasts until
//!    the peer closes. An owner that must stop (its file changed) sends
//!    REFUSE with the reason.
//! 6. After SEED_DONE the owner sends SEEDING with whether any session is
//!    still receiving seeds, and again whenever that changes. A peer
//!    should ask the owner for chunks the ring would bring anyway (its end
//!    game) only while the owner is not seeding: the owner's link is the
//!    one every byte must cross once, and seeds are chunks no peer has.
//!
//! | state (receiver)               | kinds accepted                            |
//! |--------------------------------|-------------------------------------------|
//! | owner, before CHUNK_LIST       | CHUNK_LIST, KEEPALIVE                      |
//! | owner, after CHUNK_LIST        | REQUEST, KEEPALIVE                         |
//! | peer, before the manifest      | MANIFEST (then HASHES until complete), REFUSE |
//! | peer, after the manifest       | CHUNK, SEED_DONE, SEEDING, KEEPALIVE, REFUSE |
//!
//! Ring session (a downloader connects to an uploader's listening port):
//!
//! 1. downloader → HELLO; uploader → HELLO. Both carry the real `file_id`;
//!    on a mismatch the uploader sends REFUSE and closes.
//! 2. uploader → CHUNK_LIST of everything it holds, then HAVE whenever it
//!    gains chunks, and CHUNK in answer to each REQUEST, in request order.
//!    A REQUEST for a chunk the uploader does not hold (it may have dropped
//!    a damaged one since listing it) goes unanswered.
//! 3. downloader → REQUEST for chunks the uploader listed and it lacks,
//!    several in flight at once, at most 256 outstanding (more is a
//!    flood, and the uploader closes); COMPLETE once it holds every chunk
//!    and has checked the whole file.
//!
//! | state (receiver)          | kinds accepted                                 |
//! |---------------------------|------------------------------------------------|
//! | uploader                  | REQUEST, COMPLETE, KEEPALIVE                   |
//! | downloader, before the list | CHUNK_LIST, KEEPALIVE, REFUSE                |
//! | downloader, after it      | HAVE, CHUNK, KEEPALIVE, REFUSE                 |
//!
//! A requester gives each REQUEST a deadline (the peer's
//! `--stall-timeout`): past it, the chunk may be asked of another source,
//! and the first copy to arrive is kept. A late CHUNK in answer to a
//! REQUEST that was sent is no violation; a CHUNK nobody asked for (other
//! than the owner's seeds) is, and ends the connection.
//!
//! An uploader counts a downloader's COMPLETE only if that connection has
//! asked it for at least one chunk: a connection that never downloaded
//! cannot release the uploader.
//!
//! A side that is done (a downloader after COMPLETE, an uploader after
//! receiving it, a peer leaving the owner) stops writing and reads until
//! the other side closes too, so its last message is not lost to a reset.
//!
//! Either side sends KEEPALIVE when it has sent nothing for 5 s, and
//! closes a connection that has been silent for 30 s, or whose other side
//! has taken more than 30 s plus one second per 16 KiB to read what was
//! written to it. A listener serves a bounded number of connections (256
//! at the owner, 16 at a peer); when a new one arrives at the cap it
//! closes, to make room, first a connection that never sent or received a
//! chunk, then one that received only chunks it did not ask for (seeds)
//! and none for 5 s, then one that has asked for nothing for 30 s, the one
//! idle longest within each; if every connection is doing work, the
//! newcomer gets REFUSE.

use std::fmt;
use std::io::{self, Read, Write};

use crate::chunks::ChunkSet;
use crate::manifest::{ChunkId, Digest, Layout, MAX_NAME_LEN};

/// The four bytes every HELLO starts with.
pub const MAGIC: [u8; 4] = *b"SWRM";
/// The protocol version this build speaks.
pub const VERSION: u16 = 3;
/// The largest `length` accepted before the manifest is known.
pub const HANDSHAKE_LIMIT: usize = 1024;
/// The longest name a HELLO may carry.
pub const MAX_HELLO_NAME: usize = 64;
/// The longest reason a REFUSE may carry.
pub const MAX_REFUSE_LEN: usize = 200;

const KIND_HELLO: u8 = 1;
const KIND_MANIFEST: u8 = 2;
const KIND_HASHES: u8 = 3;
const KIND_CHUNK_LIST: u8 = 4;
const KIND_HAVE: u8 = 5;
const KIND_REQUEST: u8 = 6;
const KIND_CHUNK: u8 = 7;
const KIND_SEED_DONE: u8 = 8;
const KIND_COMPLETE: u8 = 9;
const KIND_KEEPALIVE: u8 = 10;
const KIND_REFUSE: u8 = 11;
const KIND_SEEDING: u8 = 12;
const KIND_CHALLENGE: u8 = 13;
const KIND_PROOF: u8 = 14;

/// Bytes in a CHALLENGE's nonce and in a PROOF's MAC.
pub const NONCE_LEN: usize = 32;
const KIND_REGISTER: u8 = 15;
const KIND_PROGRESS: u8 = 16;
const KIND_NEIGHBOUR: u8 = 17;
const KIND_UNREACHABLE: u8 = 18;
const KIND_STATUS_REQUEST: u8 = 19;
const KIND_STATUS: u8 = 20;

/// The longest address a REGISTER, NEIGHBOUR or UNREACHABLE may carry.
pub const MAX_ADDR_LEN: usize = 255;

/// A message kind: the byte after the length field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = KIND_HELLO,
    Manifest = KIND_MANIFEST,
    Hashes = KIND_HASHES,
    ChunkList = KIND_CHUNK_LIST,
    Have = KIND_HAVE,
    Request = KIND_REQUEST,
    Chunk = KIND_CHUNK,
    SeedDone = KIND_SEED_DONE,
    Complete = KIND_COMPLETE,
    KeepAlive = KIND_KEEPALIVE,
    Refuse = KIND_REFUSE,
    Seeding = KIND_SEEDING,
    Challenge = KIND_CHALLENGE,
    Proof = KIND_PROOF,
    Register = KIND_REGISTER,
    Progress = KIND_PROGRESS,
    Neighbour = KIND_NEIGHBOUR,
    Unreachable = KIND_UNREACHABLE,
    StatusRequest = KIND_STATUS_REQUEST,
    Status = KIND_STATUS,
}

impl Kind {
    /// The kind's name for logs and errors.
    pub fn name(self) -> &'static str {
        kind_name(self as u8)
    }
}

/// The kinds a connection accepts in its current state. A frame of any
/// other kind is refused from its five header bytes, before a buffer is
/// sized for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kinds(u32);

impl Kinds {
    /// Every kind: what a bare [`Decoder`] accepts.
    pub const ALL: Kinds = Kinds(0x1F_FFFE);

    /// The set of `kinds`.
    pub const fn of(kinds: &[Kind]) -> Kinds {
        let mut bits = 0u32;
        let mut i = 0;
        while i < kinds.len() {
            bits |= 1 << kinds[i] as u8;
            i += 1;
        }
        Kinds(bits)
    }

    /// Whether the kind byte `kind` is in the set.
    pub fn contains(self, kind: u8) -> bool {
        kind < 32 && self.0 & (1 << kind) != 0
    }
}

/// Bytes before the payload: the length and the kind.
const HEADER_LEN: usize = 5;
/// How much the frame buffer grows by at least when bytes arrive.
const GROW_STEP: usize = 64 * 1024;
const HELLO_FIXED: usize = 4 + 2 + 32;
const MANIFEST_FIXED: usize = 8 + 4 + 32;

/// One protocol message. Borrowed fields point into the decoder's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// Opens every session in both directions.
    Hello {
        version: u16,
        file_id: Digest,
        name: &'a str,
    },
    /// The file's name, size, chunk size and whole-file digest.
    Manifest {
        file_len: u64,
        chunk_size: u32,
        file_hash: Digest,
        name: &'a str,
    },
    /// Chunk digests for chunks `first`, `first + 1`, ...
    Hashes { first: ChunkId, hashes: Vec<Digest> },
    /// Every chunk the sender holds.
    ChunkList(ChunkSet),
    /// Chunks the sender gained since it last listed.
    Have(Vec<ChunkId>),
    /// Asks for one chunk.
    Request(ChunkId),
    /// One chunk's bytes.
    Chunk { id: ChunkId, data: &'a [u8] },
    /// The owner has sent all the chunks it seeds to this peer.
    SeedDone,
    /// The sender holds every chunk.
    Complete,
    /// Nothing to say; keeps an idle connection known to be alive.
    KeepAlive,
    /// The sender will not serve this connection, and says why.
    Refuse(&'a str),
    /// Whether the owner is sending seeds to any peer now.
    Seeding(bool),
    /// Fresh random bytes the other side must prove the secret over.
    Challenge([u8; NONCE_LEN]),
    /// HMAC-SHA-256 of the secret over both sides' nonces.
    Proof([u8; NONCE_LEN]),
    /// A peer joins the owner's registry: where its upload port is
    /// reached (`host` empty: at the address its owner link comes from),
    /// and whether the owner wires it into the ring.
    Register {
        wired: bool,
        port: u16,
        host: &'a str,
        /// A hand-wired peer's download neighbour, for the registry.
        neighbour: &'a str,
    },
    /// A peer's receive rate over the last second, in bytes per second.
    Progress { rate: u64 },
    /// The owner tells a peer whom to download from (empty: no one yet).
    Neighbour(&'a str),
    /// A peer cannot reach its download neighbour at this address.
    Unreachable(&'a str),
    /// Asks the owner for its registry.
    StatusRequest,
    /// Part of the owner's registry.
    Status(Status),
}

/// One STATUS frame: entries `first..first + peers.len()` of `total`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub total: u32,
    pub first: u32,
    /// Chunk bytes the owner has sent in all.
    pub sent: u64,
    pub peers: Vec<PeerStatus>,
}

/// One registered peer as the owner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub state: PeerState,
    /// Whether the owner wires it into the ring.
    pub wired: bool,
    pub held: u32,
    /// Bytes per second it last reported receiving.
    pub rate: u64,
    pub addr: String,
    /// Its download neighbour, empty if none.
    pub neighbour: String,
}

/// Where a registered peer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Connected and still missing chunks.
    Downloading = 0,
    /// Holds the whole verified file.
    Complete = 1,
    /// Its link to the owner dropped; it may come back.
    Away = 2,
    /// Gone without completing (dead).
    Gone = 3,
    /// Left after completing.
    Left = 4,
}

impl PeerState {
    /// The state's name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            PeerState::Downloading => "downloading",
            PeerState::Complete => "complete",
            PeerState::Away => "away",
            PeerState::Gone => "gone",
            PeerState::Left => "left",
        }
    }

    fn from_u8(raw: u8) -> Option<PeerState> {
        Some(match raw {
            0 => PeerState::Downloading,
            1 => PeerState::Complete,
            2 => PeerState::Away,
            3 => PeerState::Gone,
            4 => PeerState::Left,
            _ => return None,
        })
    }
}

/// Bytes of a STATUS frame before its entries.
const STATUS_FIXED: usize = 4 + 4 + 8;
/// Bytes of a STATUS entry besides its two addresses.
const ENTRY_FIXED: usize = 1 + 1 + 4 + 8 + 1 + 1;

impl Message<'_> {
    /// The message's name for logs and errors.
    pub fn name(&self) -> &'static str {
        kind_name(self.kind())
    }

    fn kind(&self) -> u8 {
        match self {
            Message::Hello { .. } => KIND_HELLO,
            Message::Manifest { .. } => KIND_MANIFEST,
            Message::Hashes { .. } => KIND_HASHES,
            Message::ChunkList(_) => KIND_CHUNK_LIST,
            Message::Have(_) => KIND_HAVE,
            Message::Request(_) => KIND_REQUEST,
            Message::Chunk { .. } => KIND_CHUNK,
            Message::SeedDone => KIND_SEED_DONE,
            Message::Complete => KIND_COMPLETE,
            Message::KeepAlive => KIND_KEEPALIVE,
            Message::Refuse(_) => KIND_REFUSE,
            Message::Seeding(_) => KIND_SEEDING,
            Message::Challenge(_) => KIND_CHALLENGE,
            Message::Proof(_) => KIND_PROOF,
            Message::Register { .. } => KIND_REGISTER,
            Message::Progress { .. } => KIND_PROGRESS,
            Message::Neighbour(_) => KIND_NEIGHBOUR,
            Message::Unreachable(_) => KIND_UNREACHABLE,
            Message::StatusRequest => KIND_STATUS_REQUEST,
            Message::Status(_) => KIND_STATUS,
        }
    }
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        KIND_HELLO => "hello",
        KIND_MANIFEST => "manifest",
        KIND_HASHES => "hashes",
        KIND_CHUNK_LIST => "chunk-list",
        KIND_HAVE => "have",
        KIND_REQUEST => "request",
        KIND_CHUNK => "chunk",
        KIND_SEED_DONE => "seed-done",
        KIND_COMPLETE => "complete",
        KIND_KEEPALIVE => "keepalive",
        KIND_REFUSE => "refuse",
        KIND_SEEDING => "seeding",
        KIND_CHALLENGE => "challenge",
        KIND_PROOF => "proof",
        KIND_REGISTER => "register",
        KIND_PROGRESS => "progress",
        KIND_NEIGHBOUR => "neighbour",
        KIND_UNREACHABLE => "unreachable",
        KIND_STATUS_REQUEST => "status-request",
        KIND_STATUS => "status",
        _ => "unknown",
    }
}

/// Why a connection's bytes were rejected.
#[derive(Debug)]
pub enum Error {
    /// The other side closed the connection between frames.
    Closed,
    /// The other side closed the connection inside a frame.
    Truncated { got: usize, wanted: usize },
    /// A read or write failed.
    Io(io::Error),
    /// The length field was 0.
    EmptyFrame,
    /// The length field exceeded the frame limit.
    TooLong { len: usize, limit: usize },
    /// The kind byte names no message.
    UnknownKind(u8),
    /// The length does not fit the message kind.
    BadLength { kind: &'static str, len: usize },
    /// A message that needs the manifest came before it.
    NeedsManifest(&'static str),
    /// A HELLO without the magic bytes.
    BadMagic,
    /// A HELLO of another protocol version.
    BadVersion(u16),
    /// A name or reason that is not UTF-8.
    BadText(&'static str),
    /// A chunk ID at or past the chunk count.
    ChunkOutOfRange {
        kind: &'static str,
        id: u64,
        count: u32,
    },
    /// A chunk whose length is not the layout's length for that chunk.
    ChunkLength {
        id: ChunkId,
        got: usize,
        wanted: usize,
    },
    /// A chunk-ID list whose size or spare bits are wrong.
    BadChunkList,
    /// A well-formed message that does not belong at this point.
    Unexpected(&'static str),
    /// The other side refused the session.
    Refused(String),
    /// The other side queued more requests than any honest peer would.
    Flood(usize),
    /// Nothing arrived for this many seconds.
    Silent(u64),
    /// The other side took longer than this many seconds to read one frame.
    SlowReader(u64),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Closed => write!(f, "connection closed"),
            Error::Truncated { got, wanted } => write!(
                f,
                "connection closed inside a frame ({got} of {wanted} bytes)"
            ),
            Error::Io(err) => write!(f, "{}", crate::error::plain(err)),
            Error::EmptyFrame => write!(f, "frame with length 0"),
            Error::TooLong { len, limit } => {
                write!(f, "frame of {len} bytes is over the {limit}-byte limit")
            }
            Error::UnknownKind(kind) => write!(f, "unknown message type {kind}"),
            Error::BadLength { kind, len } => {
                write!(f, "{kind} message with a {len}-byte length is malformed")
            }
            Error::NeedsManifest(kind) => {
                write!(f, "{kind} message before the manifest")
            }
            Error::BadMagic => write!(f, "not a swarm connection (bad magic)"),
            Error::BadVersion(v) => write!(
                f,
                "protocol version {v} is not supported (this is version {VERSION})"
            ),
            Error::BadText(what) => write!(f, "{what} is not valid UTF-8"),
            Error::ChunkOutOfRange { kind, id, count } => write!(
                f,
                "{kind} message names chunk {id} but the file has {count} chunks"
            ),
            Error::ChunkLength { id, got, wanted } => {
                write!(f, "chunk {id} carries {got} bytes instead of {wanted}")
            }
            Error::BadChunkList => write!(f, "chunk-ID list has the wrong size"),
            Error::Unexpected(kind) => write!(f, "unexpected {kind} message"),
            Error::Refused(reason) => write!(f, "refused: {reason}"),
            Error::Flood(n) => write!(f, "more than {n} requests queued (request flood)"),
            Error::Silent(secs) => write!(f, "nothing received for {secs} s"),
            Error::SlowReader(secs) => {
                write!(f, "took more than {secs} s to read one frame (too slow)")
            }
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Error {
        Error::Io(err)
    }
}

impl Error {
    /// Whether this is a read that timed out rather than bad data.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Io(e) if is_timeout(e))
    }
}

fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Appends `msg` as one frame to `out`.
pub fn encode(msg: &Message<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, msg.kind()]);
    match msg {
        Message::Hello {
            version,
            file_id,
            name,
        } => {
            out.extend_from_slice(&MAGIC);
            out.extend_from_slice(&version.to_be_bytes());
            out.extend_from_slice(file_id);
            out.extend_from_slice(name.as_bytes());
        }
        Message::Manifest {
            file_len,
            chunk_size,
            file_hash,
            name,
        } => {
            out.extend_from_slice(&file_len.to_be_bytes());
            out.extend_from_slice(&chunk_size.to_be_bytes());
            out.extend_from_slice(file_hash);
            out.extend_from_slice(name.as_bytes());
        }
        Message::Hashes { first, hashes } => {
            out.extend_from_slice(&first.get().to_be_bytes());
            for hash in hashes {
                out.extend_from_slice(hash);
            }
        }
        Message::ChunkList(set) => out.extend_from_slice(&set.to_bitfield()),
        Message::Have(ids) => {
            for id in ids {
                out.extend_from_slice(&id.get().to_be_bytes());
            }
        }
        Message::Request(id) => out.extend_from_slice(&id.get().to_be_bytes()),
        Message::Chunk { id, data } => {
            out.truncate(start);
            out.extend_from_slice(&chunk_header(*id, data.len()));
            out.extend_from_slice(data);
        }
        Message::SeedDone | Message::Complete | Message::KeepAlive => {}
        Message::Refuse(reason) => out.extend_from_slice(reason.as_bytes()),
        Message::Seeding(busy) => out.push(u8::from(*busy)),
        Message::Challenge(bytes) | Message::Proof(bytes) => out.extend_from_slice(bytes),
        Message::Register {
            wired,
            port,
            host,
            neighbour,
        } => {
            out.push(u8::from(*wired));
            out.extend_from_slice(&port.to_be_bytes());
            short_text(host, out);
            short_text(neighbour, out);
        }
        Message::Progress { rate } => out.extend_from_slice(&rate.to_be_bytes()),
        Message::Neighbour(addr) | Message::Unreachable(addr) => {
            out.extend_from_slice(addr.as_bytes());
        }
        Message::StatusRequest => {}
        Message::Status(status) => {
            out.extend_from_slice(&status.total.to_be_bytes());
            out.extend_from_slice(&status.first.to_be_bytes());
            out.extend_from_slice(&status.sent.to_be_bytes());
            for p in &status.peers {
                out.push(p.state as u8);
                out.push(u8::from(p.wired));
                out.extend_from_slice(&p.held.to_be_bytes());
                out.extend_from_slice(&p.rate.to_be_bytes());
                short_text(&p.addr, out);
                short_text(&p.neighbour, out);
            }
        }
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// A length byte, then at most [`MAX_ADDR_LEN`] bytes of `text`, cut at
/// a character boundary.
fn short_text(text: &str, out: &mut Vec<u8>) {
    let mut end = text.len().min(MAX_ADDR_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.push(end as u8);
    out.extend_from_slice(&text.as_bytes()[..end]);
}

/// The bytes one STATUS entry takes.
pub fn status_entry_len(p: &PeerStatus) -> usize {
    ENTRY_FIXED + p.addr.len().min(MAX_ADDR_LEN) + p.neighbour.len().min(MAX_ADDR_LEN)
}

/// Appends the registry as STATUS frames that each fit `limit` (at least
/// one frame, even for no peers).
pub fn encode_status(sent: u64, peers: &[PeerStatus], limit: usize, out: &mut Vec<u8>) {
    let total = peers.len() as u32;
    let room = limit.saturating_sub(1 + STATUS_FIXED);
    let mut first = 0;
    loop {
        let mut used = 0;
        let mut end = first;
        while end < peers.len() && used + status_entry_len(&peers[end]) <= room {
            used += status_entry_len(&peers[end]);
            end += 1;
        }
        // An entry is at most 530 bytes and every limit is over 1024.
        let end = end.max((first + 1).min(peers.len()));
        let status = Status {
            total,
            first: first as u32,
            sent,
            peers: peers[first..end].to_vec(),
        };
        encode(&Message::Status(status), out);
        first = end;
        if first >= peers.len() {
            return;
        }
    }
}

/// The bytes of a CHUNK frame that precede the chunk's data, for senders
/// that copy the data straight from a file to the socket.
pub fn chunk_header(id: ChunkId, data_len: usize) -> [u8; 9] {
    let len = (1 + 4 + data_len) as u32;
    let mut out = [0u8; 9];
    out[..4].copy_from_slice(&len.to_be_bytes());
    out[4] = KIND_CHUNK;
    out[5..].copy_from_slice(&id.get().to_be_bytes());
    out
}

/// The most chunk IDs one HAVE frame may carry for `layout`: the frame
/// must fit the receiver's frame limit like any other.
pub fn max_have_ids(layout: &Layout) -> usize {
    (layout.frame_limit() - 1) / 4
}

/// Appends `ids` as HAVE frames, as many as it takes for each to fit
/// within [`max_have_ids`].
pub fn encode_have(ids: &[ChunkId], layout: &Layout, out: &mut Vec<u8>) {
    for part in ids.chunks(max_have_ids(layout)) {
        encode(&Message::Have(part.to_vec()), out);
    }
}

/// Encodes `msg` and writes it with one call.
pub fn send(w: &mut impl Write, msg: &Message<'_>) -> io::Result<()> {
    let mut buf = Vec::with_capacity(64);
    encode(msg, &mut buf);
    w.write_all(&buf)
}

/// The allowed `length` range for a kind, or why the kind is rejected.
/// Called on the five header bytes, before any payload is read.
fn length_bounds(kind: u8, layout: Option<&Layout>) -> Result<(usize, usize), Error> {
    let needs =
        |layout: Option<&Layout>| layout.copied().ok_or(Error::NeedsManifest(kind_name(kind)));
    let payload = match kind {
        KIND_HELLO => (HELLO_FIXED, HELLO_FIXED + MAX_HELLO_NAME),
        KIND_MANIFEST => (MANIFEST_FIXED + 1, MANIFEST_FIXED + MAX_NAME_LEN),
        KIND_HASHES => {
            let l = needs(layout)?;
            (4 + 32, 4 + 32 * l.count() as usize)
        }
        KIND_CHUNK_LIST => {
            let bytes = needs(layout)?.count().div_ceil(8) as usize;
            (bytes, bytes)
        }
        KIND_HAVE => (4, 4 * needs(layout)?.count() as usize),
        KIND_REQUEST => {
            needs(layout)?;
            (4, 4)
        }
        KIND_CHUNK => (4 + 1, 4 + needs(layout)?.chunk_size() as usize),
        KIND_SEED_DONE | KIND_COMPLETE | KIND_KEEPALIVE => (0, 0),
        KIND_REFUSE => (0, MAX_REFUSE_LEN),
        KIND_SEEDING => (1, 1),
        KIND_CHALLENGE | KIND_PROOF => (NONCE_LEN, NONCE_LEN),
        KIND_REGISTER => (1 + 2 + 1 + 1, 1 + 2 + 2 * (1 + MAX_ADDR_LEN)),
        KIND_PROGRESS => (8, 8),
        KIND_NEIGHBOUR => (0, MAX_ADDR_LEN),
        KIND_UNREACHABLE => (1, MAX_ADDR_LEN),
        KIND_STATUS_REQUEST => (0, 0),
        KIND_STATUS => (STATUS_FIXED, usize::MAX - 1),
        other => return Err(Error::UnknownKind(other)),
    };
    Ok((1 + payload.0, 1 + payload.1))
}

/// Reads frames from a blocking stream and decodes them.
///
/// A read timeout on the stream does not lose data: bytes of a partly
/// read frame stay buffered and [`Decoder::fill`] carries on from there on
/// its next call. The buffer never grows past the frame limit, whatever
/// the length field claims.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    filled: usize,
    ready: bool,
    layout: Option<Layout>,
    accepts: Kinds,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder for the handshake, before the manifest is known.
    pub fn new() -> Decoder {
        Decoder {
            buf: vec![0; HEADER_LEN],
            filled: 0,
            ready: false,
            layout: None,
            accepts: Kinds::ALL,
        }
    }

    /// Tells the decoder which file the connection is about; from then on
    /// chunk messages are accepted and checked against `layout`.
    pub fn set_layout(&mut self, layout: Layout) {
        self.layout = Some(layout);
    }

    /// The layout frames are checked against, once known.
    pub fn layout(&self) -> Option<&Layout> {
        self.layout.as_ref()
    }

    /// Restricts the kinds accepted from the next frame on; any other
    /// kind fails with [`Error::Unexpected`] from the frame's header.
    pub fn set_accepts(&mut self, kinds: Kinds) {
        self.accepts = kinds;
    }

    /// Bytes of the frame being read that have arrived so far.
    pub fn buffered(&self) -> usize {
        if self.ready { 0 } else { self.filled }
    }

    /// Bytes the decoder's buffer holds allocated; never more than the
    /// frame limit plus the length field.
    pub fn allocated(&self) -> usize {
        self.buf.capacity()
    }

    /// The largest `length` currently accepted.
    pub fn limit(&self) -> usize {
        self.layout.map_or(HANDSHAKE_LIMIT, |l| l.frame_limit())
    }

    /// Reads until one whole frame is buffered. Returns `Ok(false)` when
    /// the stream's read timeout expired first (call again to continue)
    /// and `Ok(true)` when [`Decoder::message`] has a frame to decode.
    pub fn fill<R: Read>(&mut self, r: &mut R) -> Result<bool, Error> {
        if self.ready {
            self.ready = false;
            self.filled = 0;
        }
        loop {
            let wanted = if self.filled < HEADER_LEN {
                HEADER_LEN
            } else {
                4 + self.header_len()
            };
            if self.filled >= HEADER_LEN && self.filled == wanted {
                self.ready = true;
                return Ok(true);
            }
            if self.buf.len() <= self.filled {
                // The buffer grows with the bytes that actually arrive, at
                // most doubling, so a header that claims a large frame
                // costs nothing until its bytes come.
                let grow = self.filled.max(GROW_STEP);
                self.buf.resize((self.filled + grow).min(wanted), 0);
            }
            let end = self.buf.len().min(wanted);
            match r.read(&mut self.buf[self.filled..end]) {
                Ok(0) if self.filled == 0 => return Err(Error::Closed),
                Ok(0) => {
                    return Err(Error::Truncated {
                        got: self.filled,
                        wanted,
                    });
                }
                Ok(n) => {
                    self.filled += n;
                    if self.filled == HEADER_LEN {
                        // The header is complete: check it before reading
                        // anything of the payload.
                        self.check_header()?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Ok(false),
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }

    /// Decodes the frame that [`Decoder::fill`] buffered.
    pub fn message(&self) -> Result<Message<'_>, Error> {
        if !self.ready {
            return Err(Error::Unexpected("partial frame"));
        }
        decode(&self.buf[4..4 + self.header_len()], self.layout.as_ref())
    }

    /// Reads and decodes one message, however many read timeouts it
    /// takes; for tests and simple clients.
    pub fn read<R: Read>(&mut self, r: &mut R) -> Result<Message<'_>, Error> {
        while !self.fill(r)? {}
        self.message()
    }

    fn header_len(&self) -> usize {
        u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize
    }

    /// Checks the length field and kind before any payload is read.
    fn check_header(&self) -> Result<(), Error> {
        let len = self.header_len();
        if len == 0 {
            return Err(Error::EmptyFrame);
        }
        let limit = self.limit();
        if len > limit {
            return Err(Error::TooLong { len, limit });
        }
        let kind = self.buf[4];
        let (min, max) = length_bounds(kind, self.layout.as_ref())?;
        if !self.accepts.contains(kind) {
            return Err(Error::Unexpected(kind_name(kind)));
        }
        if len < min || len > max {
            return Err(Error::BadLength {
                kind: kind_name(kind),
                len,
            });
        }
        Ok(())
    }
}

/// Decodes one frame's kind and payload (everything after the length
/// field). `layout` is the file's layout once the manifest is known.
pub fn decode<'a>(frame: &'a [u8], layout: Option<&Layout>) -> Result<Message<'a>, Error> {
    let (&kind, payload) = frame.split_first().ok_or(Error::EmptyFrame)?;
    let (min, max) = length_bounds(kind, layout)?;
    let name = kind_name(kind);
    if frame.len() < min || frame.len() > max {
        return Err(Error::BadLength {
            kind: name,
            len: frame.len(),
        });
    }
    let id_at = |at: usize| -> Result<ChunkId, Error> {
        let raw = u32::from_be_bytes(payload[at..at + 4].try_into().unwrap());
        // Every kind that carries an ID needs a layout (length_bounds).
        let l = layout.ok_or(Error::NeedsManifest(name))?;
        l.chunk_id(raw).ok_or(Error::ChunkOutOfRange {
            kind: name,
            id: u64::from(raw),
            count: l.count(),
        })
    };
    let digest = |bytes: &[u8]| -> Digest { bytes.try_into().unwrap() };
    let text = |bytes: &'a [u8], what| std::str::from_utf8(bytes).map_err(|_| Error::BadText(what));
    Ok(match kind {
        KIND_HELLO => {
            if payload[..4] != MAGIC {
                return Err(Error::BadMagic);
            }
            let version = u16::from_be_bytes([payload[4], payload[5]]);
            if version != VERSION {
                return Err(Error::BadVersion(version));
            }
            Message::Hello {
                version,
                file_id: digest(&payload[6..38]),
                name: text(&payload[38..], "hello name")?,
            }
        }
        KIND_MANIFEST => Message::Manifest {
            file_len: u64::from_be_bytes(payload[..8].try_into().unwrap()),
            chunk_size: u32::from_be_bytes(payload[8..12].try_into().unwrap()),
            file_hash: digest(&payload[12..44]),
            name: text(&payload[44..], "file name")?,
        },
        KIND_HASHES => {
            let rest = &payload[4..];
            if rest.len() % 32 != 0 {
                return Err(Error::BadLength {
                    kind: name,
                    len: frame.len(),
                });
            }
            let first = id_at(0)?;
            let n = rest.len() / 32;
            if first.index() + n > layout.map_or(0, |l| l.count() as usize) {
                return Err(Error::ChunkOutOfRange {
                    kind: name,
                    id: (first.index() + n - 1) as u64,
                    count: layout.map_or(0, |l| l.count()),
                });
            }
            Message::Hashes {
                first,
                hashes: rest.chunks_exact(32).map(digest).collect(),
            }
        }
        KIND_CHUNK_LIST => {
            let count = layout.map_or(0, |l| l.count());
            let set = ChunkSet::from_bitfield(count, payload).ok_or(Error::BadChunkList)?;
            Message::ChunkList(set)
        }
        KIND_HAVE => {
            if payload.len() % 4 != 0 {
                return Err(Error::BadLength {
                    kind: name,
                    len: frame.len(),
                });
            }
            let ids = (0..payload.len()).step_by(4).map(id_at);
            Message::Have(ids.collect::<Result<_, _>>()?)
        }
        KIND_REQUEST => Message::Request(id_at(0)?),
        KIND_CHUNK => {
            let id = id_at(0)?;
            let data = &payload[4..];
            let wanted = layout.map_or(0, |l| l.chunk_len(id));
            if data.len() != wanted {
                return Err(Error::ChunkLength {
                    id,
                    got: data.len(),
                    wanted,
                });
            }
            Message::Chunk { id, data }
        }
        KIND_SEED_DONE => Message::SeedDone,
        KIND_COMPLETE => Message::Complete,
        KIND_KEEPALIVE => Message::KeepAlive,
        KIND_REFUSE => Message::Refuse(text(payload, "refusal reason")?),
        KIND_SEEDING => match payload[0] {
            0 => Message::Seeding(false),
            1 => Message::Seeding(true),
            _ => {
                return Err(Error::BadLength {
                    kind: name,
                    len: frame.len(),
                });
            }
        },
        // length_bounds let through exactly NONCE_LEN bytes.
        KIND_CHALLENGE => Message::Challenge(payload.try_into().unwrap()),
        KIND_PROOF => Message::Proof(payload.try_into().unwrap()),
        KIND_REGISTER => {
            let bad = || Error::BadLength {
                kind: name,
                len: frame.len(),
            };
            let mut at = 3;
            let mut field = |what| -> Result<&'a str, Error> {
                let len = *payload.get(at).ok_or_else(bad)? as usize;
                let bytes = payload.get(at + 1..at + 1 + len).ok_or_else(bad)?;
                at += 1 + len;
                text(bytes, what)
            };
            let host = field("registered host")?;
            let neighbour = field("registered neighbour")?;
            if at != payload.len() || payload[0] > 1 {
                return Err(bad());
            }
            Message::Register {
                wired: payload[0] == 1,
                port: u16::from_be_bytes([payload[1], payload[2]]),
                host,
                neighbour,
            }
        }
        KIND_PROGRESS => Message::Progress {
            rate: u64::from_be_bytes(payload.try_into().unwrap()),
        },
        KIND_NEIGHBOUR => Message::Neighbour(text(payload, "neighbour address")?),
        KIND_UNREACHABLE => Message::Unreachable(text(payload, "unreachable address")?),
        KIND_STATUS_REQUEST => Message::StatusRequest,
        KIND_STATUS => Message::Status(decode_status(payload).ok_or(Error::BadLength {
            kind: name,
            len: frame.len(),
        })?),
        other => return Err(Error::UnknownKind(other)),
    })
}

fn decode_status(payload: &[u8]) -> Option<Status> {
    let u32_at = |at: usize| {
        Some(u32::from_be_bytes(
            payload.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    let u64_at = |at: usize| {
        Some(u64::from_be_bytes(
            payload.get(at..at + 8)?.try_into().ok()?,
        ))
    };
    let total = u32_at(0)?;
    let first = u32_at(4)?;
    let sent = u64_at(8)?;
    let mut at = STATUS_FIXED;
    let mut peers = Vec::new();
    let text = |at: &mut usize| -> Option<String> {
        let len = *payload.get(*at)? as usize;
        let bytes = payload.get(*at + 1..*at + 1 + len)?;
        *at += 1 + len;
        std::str::from_utf8(bytes).ok().map(str::to_string)
    };
    while at < payload.len() {
        let state = PeerState::from_u8(*payload.get(at)?)?;
        let wired = match *payload.get(at + 1)? {
            0 => false,
            1 => true,
            _ => return None,
        };
        let held = u32_at(at + 2)?;
        let rate = u64_at(at + 6)?;
        at += 14;
        let addr = text(&mut at)?;
        let neighbour = text(&mut at)?;
        peers.push(PeerStatus {
            state,
            wired,
            held,
            rate,
            addr,
            neighbour,
        });
    }
    if u64::from(first) + peers.len() as u64 > u64::from(total) {
        return None;
    }
    Some(Status {
        total,
        first,
        sent,
        peers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2.5 chunks of 1 KiB.
    fn layout() -> Layout {
        Layout::new(2560, 1024).unwrap()
    }

    fn id(raw: u32) -> ChunkId {
        layout().chunk_id(raw).unwrap()
    }

    fn every_message() -> Vec<Message<'static>> {
        static DATA: [u8; 1024] = [0xAB; 1024];
        let mut set = ChunkSet::new(3);
        set.insert(id(2));
        vec![
            Message::Hello {
                version: VERSION,
                file_id: [7; 32],
                name: "peer 9001",
            },
            Message::Hello {
                version: VERSION,
                file_id: [0; 32],
                name: "",
            },
            Message::Manifest {
                file_len: 2560,
                chunk_size: 1024,
                file_hash: [1; 32],
                name: "report ü.pdf",
            },
            Message::Hashes {
                first: id(1),
                hashes: vec![[2; 32], [3; 32]],
            },
            Message::ChunkList(set),
            Message::ChunkList(ChunkSet::new(3)),
            Message::Have(vec![id(0), id(2)]),
            Message::Request(id(2)),
            Message::Chunk {
                id: id(0),
                data: &DATA,
            },
            Message::Chunk {
                id: id(2),
                data: &DATA[..512],
            },
            Message::SeedDone,
            Message::Complete,
            Message::KeepAlive,
            Message::Refuse("too many connections"),
            Message::Seeding(true),
            Message::Seeding(false),
            Message::Challenge([0x5A; NONCE_LEN]),
            Message::Proof(std::array::from_fn(|i| i as u8)),
            Message::Register {
                wired: true,
                port: 9001,
                host: "",
                neighbour: "",
            },
            Message::Register {
                wired: false,
                port: 65535,
                host: "peer-7.example.org",
                neighbour: "[::1]:9002",
            },
            Message::Progress { rate: u64::MAX },
            Message::Neighbour("127.0.0.1:9002"),
            Message::Neighbour(""),
            Message::Unreachable("127.0.0.1:9002"),
            Message::StatusRequest,
            Message::Status(Status {
                total: 0,
                first: 0,
                sent: 0,
                peers: vec![],
            }),
            Message::Status(Status {
                total: 3,
                first: 1,
                sent: 12345,
                peers: vec![
                    PeerStatus {
                        state: PeerState::Downloading,
                        wired: true,
                        held: 2,
                        rate: 1 << 20,
                        addr: "127.0.0.1:9001".into(),
                        neighbour: "127.0.0.1:9002".into(),
                    },
                    PeerStatus {
                        state: PeerState::Left,
                        wired: false,
                        held: 3,
                        rate: 0,
                        addr: "h:1".into(),
                        neighbour: String::new(),
                    },
                ],
            }),
        ]
    }

    #[test]
    fn status_splits_into_frames_that_fit_the_limit() {
        let peers: Vec<PeerStatus> = (0..1000)
            .map(|i| PeerStatus {
                state: PeerState::Downloading,
                wired: true,
                held: i,
                rate: 7,
                addr: format!("127.0.0.1:{}", 10_000 + i),
                neighbour: format!("127.0.0.1:{}", 10_001 + i),
            })
            .collect();
        let l = layout();
        let mut buf = Vec::new();
        encode_status(99, &peers, l.frame_limit(), &mut buf);
        let mut dec = Decoder::new();
        dec.set_layout(l);
        let mut got = Vec::new();
        let mut cursor = &buf[..];
        while !cursor.is_empty() {
            let Message::Status(s) = dec.read(&mut cursor).unwrap() else {
                panic!("not a status frame")
            };
            assert_eq!((s.total, s.first as usize, s.sent), (1000, got.len(), 99));
            got.extend(s.peers);
        }
        assert_eq!(got, peers);
        let mut one = Vec::new();
        encode_status(0, &[], l.frame_limit(), &mut one);
        assert_eq!(one.len(), 5 + 16);
    }

    #[test]
    fn register_with_a_bad_field_length_is_rejected() {
        let mut buf = Vec::new();
        encode(
            &Message::Register {
                wired: true,
                port: 1,
                host: "ab",
                neighbour: "",
            },
            &mut buf,
        );
        // Claim a host of 3 bytes where 2 follow.
        buf[5 + 3] = 3;
        assert!(matches!(
            decode(&buf[4..], Some(&layout())),
            Err(Error::BadLength { .. })
        ));
    }

    /// Hands out bytes in pieces of at most `step`, then times out once
    /// before each piece, to exercise resumption after a read timeout.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
        timeout_next: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if std::mem::take(&mut self.timeout_next) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.timeout_next = true;
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn every_message_round_trips_at_every_split() {
        for msg in every_message() {
            let mut buf = Vec::new();
            encode(&msg, &mut buf);
            let frame = &buf[4..];
            assert_eq!(decode(frame, Some(&layout())).unwrap(), msg);
            for step in [1, 3, 7, buf.len()] {
                let mut r = Trickle {
                    data: &buf,
                    step,
                    timeout_next: true,
                };
                let mut dec = Decoder::new();
                dec.set_layout(layout());
                while !dec.fill(&mut r).unwrap() {}
                assert_eq!(dec.message().unwrap(), msg);
                assert!(matches!(dec.read(&mut r), Err(Error::Closed)));
            }
        }
    }

    #[test]
    fn a_stream_of_messages_decodes_in_order() {
        let mut buf = Vec::new();
        for msg in every_message() {
            encode(&msg, &mut buf);
        }
        let mut r = &buf[..];
        let mut dec = Decoder::new();
        dec.set_layout(layout());
        for msg in every_message() {
            assert_eq!(dec.read(&mut r).unwrap(), msg);
        }
        assert!(matches!(dec.read(&mut r), Err(Error::Closed)));
    }

    #[test]
    fn chunk_header_matches_encoder() {
        let data = [9u8; 512];
        let mut buf = Vec::new();
        encode(
            &Message::Chunk {
                id: id(2),
                data: &data,
            },
            &mut buf,
        );
        assert_eq!(buf[..9], chunk_header(id(2), 512));
    }

    fn decode_bytes(bytes: &[u8], layout: Option<Layout>) -> Error {
        let mut dec = Decoder::new();
        if let Some(l) = layout {
            dec.set_layout(l);
        }
        let mut r = bytes;
        match dec.read(&mut r) {
            Err(e) => e,
            Ok(m) => panic!("decoded {m:?}"),
        }
    }

    #[test]
    fn truncated_frames_are_rejected() {
        for msg in every_message() {
            let mut buf = Vec::new();
            encode(&msg, &mut buf);
            for cut in 1..buf.len() {
                let err = decode_bytes(&buf[..cut], Some(layout()));
                assert!(
                    matches!(err, Error::Truncated { got, .. } if got == cut),
                    "{} cut at {cut}: {err}",
                    msg.name()
                );
            }
        }
    }

    #[test]
    fn oversized_and_malformed_frames_are_rejected_before_the_payload() {
        let l = Some(layout());
        // A 4 GiB length is refused from the header alone.
        let err = decode_bytes(&[0xFF, 0xFF, 0xFF, 0xFF, KIND_CHUNK], l);
        assert!(
            matches!(
                err,
                Error::TooLong {
                    len: 0xFFFF_FFFF,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "frame of 4294967295 bytes is over the {}-byte limit",
                64 + 1024
            )
        );
        // Before the manifest the limit is the handshake limit.
        let err = decode_bytes(&[0, 0, 8, 0, KIND_HELLO], None);
        assert!(matches!(
            err,
            Error::TooLong {
                len: 2048,
                limit: 1024
            }
        ));
        // A chunk one byte longer than a chunk can be.
        let err = decode_bytes(&[0, 0, 4, 6, KIND_CHUNK], l);
        assert!(matches!(
            err,
            Error::BadLength {
                kind: "chunk",
                len: 1030
            }
        ));
        assert!(matches!(
            decode_bytes(&[0, 0, 0, 0, 1], l),
            Error::EmptyFrame
        ));
        let err = decode_bytes(&[0, 0, 0, 1, 99], l);
        assert_eq!(err.to_string(), "unknown message type 99");
        let err = decode_bytes(&[0, 0, 0, 5, KIND_REQUEST], None);
        assert_eq!(err.to_string(), "request message before the manifest");
        let err = decode_bytes(&[0, 0, 0, 2, KIND_KEEPALIVE, 0], l);
        assert!(matches!(
            err,
            Error::BadLength {
                kind: "keepalive",
                ..
            }
        ));
    }

    #[test]
    fn a_buffer_grows_with_the_bytes_that_arrive_not_the_length_claimed() {
        // 16 MiB chunks: a CHUNK header may claim 16 MiB.
        let big = Layout::new(64 << 20, 16 << 20).unwrap();
        let id = big.chunk_id(0).unwrap();
        let mut bytes = chunk_header(id, 16 << 20).to_vec();
        bytes.extend_from_slice(&[7; 100]);
        let mut dec = Decoder::new();
        dec.set_layout(big);
        let mut r = &bytes[..];
        assert!(matches!(dec.fill(&mut r), Err(Error::Truncated { .. })));
        assert!(dec.allocated() <= 128 * 1024, "{}", dec.allocated());
        // A kind the state does not accept is refused from its header.
        let mut dec = Decoder::new();
        dec.set_layout(big);
        dec.set_accepts(Kinds::of(&[Kind::Request, Kind::KeepAlive]));
        let mut r = &bytes[..];
        let err = dec.fill(&mut r).unwrap_err();
        assert_eq!(err.to_string(), "unexpected chunk message");
        assert!(dec.allocated() <= 64, "{}", dec.allocated());
        // And a whole frame still arrives whole.
        let l = layout();
        let data = [5u8; 1024];
        let mut buf = Vec::new();
        encode(
            &Message::Chunk {
                id: id0(),
                data: &data,
            },
            &mut buf,
        );
        let mut dec = Decoder::new();
        dec.set_layout(l);
        dec.set_accepts(Kinds::of(&[Kind::Chunk]));
        let mut r = &buf[..];
        assert_eq!(
            dec.read(&mut r).unwrap(),
            Message::Chunk {
                id: id0(),
                data: &data
            }
        );
    }

    fn id0() -> ChunkId {
        id(0)
    }

    #[test]
    fn have_lists_are_split_to_fit_the_frame_limit() {
        // 8192 chunks of 1 KiB: the limit is 64 + 1024 bytes.
        let l = Layout::new(8192 * 1024, 1024).unwrap();
        let ids: Vec<ChunkId> = l.ids().collect();
        let mut buf = Vec::new();
        encode_have(&ids, &l, &mut buf);
        let mut dec = Decoder::new();
        dec.set_layout(l);
        let mut r = &buf[..];
        let mut got = Vec::new();
        while !r.is_empty() {
            match dec.read(&mut r).unwrap() {
                Message::Have(more) => got.extend(more),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, ids);
        assert_eq!(max_have_ids(&l), (64 + 1024 - 1) / 4);
    }

    #[test]
    fn random_and_mutated_frames_never_panic_or_overallocate() {
        let mut x = 0x853C_49E6_748F_EA9Bu64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid: Vec<Vec<u8>> = every_message()
            .iter()
            .map(|m| {
                let mut buf = Vec::new();
                encode(m, &mut buf);
                buf
            })
            .collect();
        let mut decoded = 0;
        for round in 0..100_000 {
            let mut bytes = match round % 4 {
                // Pure noise.
                0 => (0..next() % 64).map(|_| next() as u8).collect(),
                // A valid frame with a few bytes flipped.
                1 | 2 => {
                    let mut f = valid[next() as usize % valid.len()].clone();
                    for _ in 0..1 + next() % 3 {
                        let at = next() as usize % f.len();
                        f[at] ^= 1 << (next() % 8);
                    }
                    f
                }
                // A valid frame with a random length field.
                _ => {
                    let mut f = valid[next() as usize % valid.len()].clone();
                    f[..4].copy_from_slice(&(next() as u32).to_be_bytes());
                    f
                }
            };
            if next() % 4 == 0 {
                let cut = next() as usize % (bytes.len() + 1);
                bytes.truncate(cut);
            }
            let mut dec = Decoder::new();
            if round % 2 == 0 {
                dec.set_layout(layout());
            }
            let mut r = &bytes[..];
            while dec.read(&mut r).is_ok() {
                decoded += 1;
            }
            assert!(
                dec.allocated() <= 4 + dec.limit(),
                "round {round}: {}",
                dec.allocated()
            );
        }
        // Some mutations leave a valid message; most must not.
        assert!(decoded > 1000 && decoded < 90_000, "decoded {decoded}");
    }

    #[test]
    fn challenge_and_proof_are_a_33_byte_frame_of_32_bytes() {
        let nonce: [u8; NONCE_LEN] = std::array::from_fn(|i| 200 - i as u8);
        for (msg, kind) in [
            (Message::Challenge(nonce), KIND_CHALLENGE),
            (Message::Proof(nonce), KIND_PROOF),
        ] {
            let mut buf = Vec::new();
            encode(&msg, &mut buf);
            assert_eq!(buf[..5], [0, 0, 0, 33, kind], "{}", msg.name());
            assert_eq!(buf[5..], nonce);
            // Known before the manifest, as the handshake needs.
            let mut r = &buf[..];
            assert_eq!(Decoder::new().read(&mut r).unwrap(), msg);
            // One byte short or long is refused from the header alone.
            for len in [1u8, 2, 32, 34, 65] {
                let err = decode_bytes(&[0, 0, 0, len, kind], None);
                assert!(
                    matches!(err, Error::BadLength { len: l, .. } if l == usize::from(len)),
                    "{} with length {len}: {err}",
                    msg.name()
                );
            }
            assert!(matches!(
                decode(&buf[4..buf.len() - 1], None),
                Err(Error::BadLength { len: 32, .. })
            ));
        }
        assert_eq!(
            decode_bytes(&[0, 0, 0, 34, KIND_PROOF], None).to_string(),
            "proof message with a 34-byte length is malformed"
        );
        // Past the handshake limit it is too long before it is malformed.
        assert!(matches!(
            decode_bytes(&[0, 0, 4, 1, KIND_CHALLENGE], None),
            Error::TooLong { len: 1025, .. }
        ));
        // A state that does not take them refuses them from the header.
        let mut dec = Decoder::new();
        dec.set_accepts(Kinds::of(&[Kind::Hello]));
        let mut buf = Vec::new();
        encode(&Message::Challenge(nonce), &mut buf);
        let mut r = &buf[..];
        assert_eq!(
            dec.read(&mut r).unwrap_err().to_string(),
            "unexpected challenge message"
        );
        assert!(Kinds::ALL.contains(KIND_CHALLENGE) && Kinds::ALL.contains(KIND_PROOF));
    }

    #[test]
    fn bad_contents_are_rejected() {
        let l = Some(layout());
        let err = decode_bytes(&[0, 0, 0, 5, KIND_REQUEST, 0, 0, 0, 3], l);
        assert_eq!(
            err.to_string(),
            "request message names chunk 3 but the file has 3 chunks"
        );
        // Chunk 2 is 512 bytes long; 600 is within the limit but wrong.
        let mut frame = vec![0, 0, 2, 93, KIND_CHUNK, 0, 0, 0, 2];
        frame.resize(4 + 605, 0);
        let err = decode_bytes(&frame, l);
        assert_eq!(err.to_string(), "chunk 2 carries 600 bytes instead of 512");
        let mut hello = Vec::new();
        let msg = Message::Hello {
            version: VERSION,
            file_id: [0; 32],
            name: "x",
        };
        encode(&msg, &mut hello);
        let mut wrong = hello.clone();
        wrong[5] = b'X';
        assert!(matches!(decode_bytes(&wrong, None), Error::BadMagic));
        let mut wrong = hello.clone();
        wrong[9..11].copy_from_slice(&(VERSION - 1).to_be_bytes());
        assert_eq!(
            decode_bytes(&wrong, None).to_string(),
            format!(
                "protocol version {} is not supported (this is version {VERSION})",
                VERSION - 1
            )
        );
        let mut wrong = hello;
        *wrong.last_mut().unwrap() = 0xFF;
        assert!(matches!(decode_bytes(&wrong, None), Error::BadText(_)));
        // Spare bits set in a chunk list (3 chunks: only the top 3 bits).
        let err = decode_bytes(&[0, 0, 0, 2, KIND_CHUNK_LIST, 0x10], l);
        assert!(matches!(err, Error::BadChunkList));
        // Digests that run past the last chunk.
        let mut frame = vec![0, 0, 0, 69, KIND_HASHES, 0, 0, 0, 2];
        frame.resize(4 + 69, 0);
        assert!(matches!(
            decode_bytes(&frame, l),
            Error::ChunkOutOfRange {
                kind: "hashes",
                id: 3,
                count: 3
            }
        ));
    }
}
