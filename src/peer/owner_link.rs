//! The peer's link to the owner: manifest, seeded chunks, and a source
//! the coordinator may ask for missing chunks.
//!
//! Connects (retrying with backoff while the owner is not up), checks the
//! manifest against the file ID the owner announced and against the one
//! cached in `--dir`, opens the store and tells the owner what is already
//! held. Then the connection runs with [`OwnerRole`]: seeded chunks are
//! verified and stored as they come, and later the chunks the
//! coordinator asks the owner for, and the owner's NEIGHBOUR assignments.
//! Every session registers first (REGISTER): where this peer's upload
//! port is reached, and whether the owner wires it. A peer the owner
//! wires keeps its link up for as long as it runs (the owner counts a
//! peer whose link stays down as gone); a hand-wired one reconnects
//! after its first session only while the coordinator wants the owner
//! (the end game, a stalled ring), since each new session of it is
//! seeded again.
//!
//! Before the manifest is known, `--wait` without reaching the owner is
//! fatal; after, an unreachable owner only earns a warning, since the ring
//! may still finish without it.
//!
//! The coordinator steers the link with [`LinkCmd`]s (the output is
//! ready, the owner is wanted or not, the file is verified, the peer is
//! leaving); the link waits on them, and on them with a timeout for its
//! backoff, so nothing is polled. On leaving, the coordinator also fires
//! the link's [`Abort`], which ends a handshake or session in progress.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, at, never, select};

use super::intake::Intake;
use super::{Event, Shared};
use crate::conn::{self, Abort, ChunkSink, Conn, Handle, Role, Setup};
use crate::error::{Error, Result};
use crate::manifest::{self, Chunking, Layout, Manifest, Shape};
use crate::net::{self, Backoff};
use crate::scheduler::SourceKind;
use crate::store::Store;
use crate::wire::{self, Decoder, Kind, Kinds, Message};

/// What the coordinator tells the owner link.
#[derive(Debug)]
pub(crate) enum LinkCmd {
    /// The output file's blocks are allocated: the link may register (and
    /// so be seeded), since a disk too small for the file has had its say.
    OutputReady,
    /// Whether the coordinator wants the owner as a source (the end game,
    /// or a stalled ring): a hand-wired peer reconnects only then.
    WantOwner(bool),
    /// The file is verified.
    Verified,
    /// The peer is leaving.
    Stop,
}

/// A refusal from the owner, as the link decides on it.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// The swarm is full; it stays full for as long as it runs.
    Full,
    /// The address to reach this peer at is unusable; it stays so.
    BadAddress,
    /// Anything else: retried.
    Other,
}

impl Refusal {
    /// Reads the owner's REFUSE text: the wire carries text, so this is
    /// the one place that reads it (the tracker writes it).
    fn of(why: &str) -> Refusal {
        if why.starts_with(crate::tracker::FULL) {
            Refusal::Full
        } else if why.starts_with(crate::tracker::BAD_ADDRESS) {
            Refusal::BadAddress
        } else {
            Refusal::Other
        }
    }

    /// Whether retrying cannot help.
    fn is_final(&self) -> bool {
        matches!(self, Refusal::Full | Refusal::BadAddress)
    }
}

/// What the link has heard from the coordinator.
#[derive(Debug, Default)]
pub(crate) struct Told {
    output_ready: bool,
    want_owner: bool,
    verified: bool,
    stop: bool,
}

/// Everything the owner link thread needs.
pub(crate) struct OwnerLink {
    pub addr: SocketAddr,
    /// The download neighbours given on the command line (none: the
    /// owner wires this peer), named in REGISTER.
    pub given: Vec<SocketAddr>,
    /// Where others reach this peer's upload port: a host (empty: the
    /// address the owner sees) and a port.
    pub advertise: (String, u16),
    pub dir: PathBuf,
    /// The store, once a cached manifest or the owner's has opened it.
    pub store: Option<Arc<Store>>,
    pub shared: Arc<Shared>,
    pub wait: Duration,
    /// Whether a session got as far as being seeded.
    pub seeded_once: bool,
    /// Whether the owner announced a new version: the link reconnects
    /// at once, verified or not, to fetch its manifest.
    pub version_due: bool,
    /// Whether the peer stays once complete to take up new versions.
    pub follow: bool,
    /// The coordinator's commands.
    pub cmds: Receiver<LinkCmd>,
    /// Fired by the coordinator when the peer leaves.
    pub abort: Abort,
    /// What the commands said so far (nothing, at the start).
    pub told: Told,
}

impl OwnerLink {
    /// Applies a command (a closed channel: the coordinator is gone, and
    /// so is the peer).
    fn apply(&mut self, cmd: std::result::Result<LinkCmd, crossbeam_channel::RecvError>) {
        match cmd {
            Ok(LinkCmd::OutputReady) => self.told.output_ready = true,
            Ok(LinkCmd::WantOwner(on)) => self.told.want_owner = on,
            Ok(LinkCmd::Verified) => self.told.verified = true,
            Ok(LinkCmd::Stop) | Err(_) => self.told.stop = true,
        }
    }

    /// Applies every command already queued.
    fn drain(&mut self) {
        while let Ok(cmd) = self.cmds.try_recv() {
            self.apply(Ok(cmd));
        }
    }

    /// Waits for the next command, or until `until` if given.
    fn wait_for_command(&mut self, until: Option<Instant>) {
        let deadline = until.map_or_else(never, at);
        select! {
            recv(self.cmds) -> cmd => self.apply(cmd),
            recv(deadline) -> _ => {}
        }
    }

    /// The thread's body.
    pub fn run(mut self) {
        let name = self.shared.name.clone();
        let mut backoff = Backoff::default();
        let mut last_ok = Instant::now();
        let mut failures = 0u32;
        loop {
            self.drain();
            if self.done() && !self.version_due {
                return;
            }
            // Every new session is seeded again, so after one that got
            // that far a hand-wired link reconnects only when the owner is
            // wanted; or, once verified, to follow the owner's versions
            // (a verified peer lacks nothing, so it is seeded nothing).
            let following = self.follow && self.told.verified;
            if self.seeded_once
                && !self.version_due
                && !self.shared.wired
                && !self.told.want_owner
                && !following
            {
                self.wait_for_command(None);
                continue;
            }
            let result = self.session(&mut last_ok);
            self.abort.disarm();
            self.drain();
            match result {
                // The coordinator takes it from here, with a new link.
                Ok(Ended::NewVersion) => return,
                Ok(Ended::InOrder) => {
                    failures = 0;
                    backoff.reset();
                    continue;
                }
                Err(e @ (Error::Manifest(_) | Error::Integrity(_))) => {
                    self.shared.report(Event::Fatal(e));
                    return;
                }
                // A full swarm stays full for as long as it runs, and
                // an address too long stays too long.
                Err(Error::Wire {
                    peer,
                    err: wire::Error::Refused(why),
                }) if Refusal::of(&why).is_final() => {
                    let err = wire::Error::Refused(why);
                    self.shared.report(Event::Fatal(Error::Wire { peer, err }));
                    return;
                }
                // The secret on either side will not change by retrying;
                // and an owner that cannot prove it must not be trusted.
                Err(Error::Admission { failure, .. }) => {
                    let peer = format!("owner at {}", self.addr);
                    self.shared
                        .report(Event::Fatal(Error::Admission { peer, failure }));
                    return;
                }
                // Cut short by this peer's own exit: nothing to report.
                Err(_) if self.told.stop => return,
                Err(e) => {
                    failures += 1;
                    // Refusals while the owner starts up are expected;
                    // say so once per streak, not every 100 ms.
                    if failures == 1 || !matches!(e, Error::Io { .. }) {
                        // A protocol error already names the owner.
                        let text = match &e {
                            Error::Wire { .. } => e.to_string(),
                            _ => format!("owner at {}: {e}", self.addr),
                        };
                        log::warn!("{name}: {text}; retrying");
                    }
                }
            }
            if self.store.is_none() && last_ok.elapsed() >= self.wait {
                let msg = format!(
                    "cannot reach the owner at {} for {} s",
                    self.addr,
                    self.wait.as_secs()
                );
                self.shared.report(Event::Fatal(Error::Timeout(msg)));
                return;
            }
            // Backoff before the next attempt; the peer's exit ends it.
            let until = Instant::now() + backoff.next_delay();
            while Instant::now() < until && !self.told.stop {
                self.wait_for_command(Some(until));
            }
        }
    }

    fn done(&self) -> bool {
        // A peer that follows the owner's versions stays in touch.
        self.told.stop || (self.told.verified && !self.follow)
    }

    /// One connection to the owner, as the wire module's "owner session"
    /// describes. Returns `Ok` when it ended in order.
    fn session(&mut self, last_ok: &mut Instant) -> Result<Ended> {
        let name = self.shared.name.clone();
        let owner = format!("owner at {}", self.addr);
        let cached_id = self.store.as_ref().map(|s| s.manifest().id());
        let secret = self.shared.secret.as_deref();
        let timeouts = self.shared.timeouts;
        let file_id = cached_id.unwrap_or([0; 32]);
        let (mut stream, mut dec, hello) =
            conn::dial(self.addr, file_id, &name, secret, &timeouts, &self.abort)?;
        *last_ok = Instant::now();
        let manifest = receive_manifest(&mut dec, &mut stream, &owner, timeouts.handshake)?;
        if manifest.id() != hello.file_id {
            return Err(Error::Manifest(format!(
                "the manifest from the owner at {} does not match the file ID it announced",
                self.addr
            )));
        }
        let Some(store) = self.adopt(manifest)? else {
            return Ok(Ended::NewVersion);
        };
        self.version_due = false;
        dec.set_layout(store.layout().clone());
        // Nothing is asked of the owner before the output has its room.
        self.drain();
        while !self.told.output_ready {
            if self.told.stop {
                return Ok(Ended::InOrder);
            }
            self.wait_for_command(None);
        }
        let held = store.snapshot();
        let neighbour = if self.shared.wired {
            String::new()
        } else {
            let given: Vec<String> = self.given.iter().map(|a| a.to_string()).collect();
            given.join(", ")
        };
        let mut buf = Vec::new();
        wire::encode(
            &Message::Register {
                wired: self.shared.wired,
                // 0: as many as the owner chooses, up to MAX_SOURCES.
                sources: if self.shared.auto_sources {
                    0
                } else {
                    self.shared.sources
                },
                port: self.advertise.1,
                host: &self.advertise.0,
                neighbour: &neighbour,
            },
            &mut buf,
        );
        wire::encode(&Message::ChunkList(held.clone()), &mut buf);
        stream
            .write_all(&buf)
            .map_err(|e| Error::wire(owner.as_str(), e.into()))?;
        self.shared.report(Event::OwnerListed(held.clone()));
        log::info!(
            "{name}: sent chunk-ID list to the owner ({} chunks)",
            held.len()
        );
        let conn = Conn::start(
            stream,
            dec,
            Setup {
                name: name.clone(),
                who: "the owner".into(),
                timeouts,
                ..Setup::default()
            },
        )?;
        let id = conn.handle().id();
        self.seeded_once = true;
        self.shared.report(Event::SourceUp(
            SourceKind::Owner,
            conn.handle().clone(),
            None,
        ));
        let mut role = OwnerRole {
            intake: Intake::new(Arc::clone(&store), Arc::clone(&self.shared)),
            store,
            shared: Arc::clone(&self.shared),
            announced: false,
        };
        let result = conn.run(&mut role);
        // Every chunk that arrived is reported before the source is gone;
        // a chunk that could not be stored (a full disk) closed the
        // connection, and is why it ended.
        let stored = role.intake.finish();
        let result = result.and(stored);
        self.shared.report(Event::SourceDown(id));
        self.version_due |= role.announced;
        result.map(|()| Ended::InOrder).map_err(|e| match e {
            // The owner's reason is the message; keep it whole.
            Error::Wire { err, .. } => Error::wire(owner, err),
            other => other,
        })
    }

    /// Opens the store for the owner's manifest, or checks it against the
    /// store already open. A different manifest is a new version: it goes
    /// to the coordinator, which switches to it, and `None` comes back.
    fn adopt(&mut self, manifest: Manifest) -> Result<Option<Arc<Store>>> {
        if let Some(store) = &self.store {
            if store.manifest() != &manifest {
                self.shared.report(Event::NewVersion(manifest));
                return Ok(None);
            }
            return Ok(Some(Arc::clone(store)));
        }
        let store = Arc::new(Store::open(&self.dir, manifest)?);
        log::info!(
            "{}: received manifest from the owner: {} ({} bytes, {} chunks)",
            self.shared.name,
            store.manifest().name(),
            store.layout().file_len(),
            store.layout().count()
        );
        self.shared.report(Event::Store(Arc::clone(&store)));
        self.store = Some(Arc::clone(&store));
        Ok(Some(store))
    }
}

/// How a session with the owner ended without an error.
enum Ended {
    /// Closed by either side in order.
    InOrder,
    /// The owner shares a new version, handed to the coordinator.
    NewVersion,
}

/// What the peer does with the owner's messages once the manifest is in:
/// store each chunk (seeded or asked for) and report it.
struct OwnerRole {
    store: Arc<Store>,
    shared: Arc<Shared>,
    /// Whether the owner announced a new version.
    announced: bool,
    /// Verifies and stores the chunks that arrive, off the reader.
    intake: Intake,
}

impl Role for OwnerRole {
    fn accepts(&self) -> Kinds {
        const KINDS: Kinds = Kinds::of(&[
            Kind::Chunk,
            Kind::SeedDone,
            Kind::Seeding,
            Kind::Neighbour,
            Kind::Complete,
            Kind::KeepAlive,
            Kind::Refuse,
            Kind::Version,
        ]);
        KINDS
    }

    fn chunk_sink(&mut self) -> Option<&mut dyn ChunkSink> {
        Some(&mut self.intake)
    }

    fn on_message(&mut self, msg: Message<'_>, conn: &Handle) -> Result<()> {
        // What the owner says now (SEED_DONE above all) comes after the
        // chunks it sent.
        self.intake.drain()?;
        match msg {
            Message::Chunk { id, data } => {
                super::download::store_chunk(&self.store, &self.shared, conn, id, data)
            }
            Message::SeedDone => {
                self.shared.report(Event::SeedDone(conn.id()));
                Ok(())
            }
            Message::Seeding(busy) => {
                self.shared.report(Event::OwnerSeeding(busy));
                Ok(())
            }
            Message::Complete => {
                self.shared.report(Event::SwarmComplete);
                Ok(())
            }
            Message::Neighbour(texts) if !self.shared.wired => {
                log::debug!(
                    "{}: ignoring the owner's neighbours {texts:?}: hand-wired",
                    self.shared.name
                );
                Ok(())
            }
            Message::Neighbour(texts) => {
                let named = !texts.is_empty();
                let mut assigned = Vec::new();
                for text in texts {
                    if assigned.len() == usize::from(self.shared.sources) {
                        break;
                    }
                    match net::parse_addr(text) {
                        Ok(addr) if !assigned.iter().any(|(a, _)| *a == addr) => {
                            assigned.push((addr, text.to_string()));
                        }
                        Ok(_) => {}
                        Err(why) => log::warn!(
                            "{}: the owner assigned download neighbour {text:?}, which is not usable: {why}",
                            self.shared.name
                        ),
                    }
                }
                // Nothing usable: keep the neighbours there are.
                if !(named && assigned.is_empty()) {
                    self.shared.report(Event::Neighbour(assigned));
                }
                Ok(())
            }
            Message::Version(id) => {
                log::info!(
                    "{}: the owner announced version {}",
                    self.shared.name,
                    super::short_id(&id)
                );
                self.announced = true;
                conn.close();
                Ok(())
            }
            Message::Refuse(why) => Err(Error::wire(
                conn.who(),
                wire::Error::Refused(why.to_string()),
            )),
            _ => Ok(()),
        }
    }
}

/// Why a session ended whose VERSION came before its MANIFEST: a new
/// session gets the new manifest.
pub(crate) const NEW_VERSION: &str = "the owner now shares a new version";

/// Reads MANIFEST and the HASHES frames that follow it into a manifest,
/// and leaves `dec` set to its layout.
pub(crate) fn receive_manifest(
    dec: &mut Decoder,
    stream: &mut std::net::TcpStream,
    owner: &str,
    within: Duration,
) -> Result<Manifest> {
    let fail = |err| Error::wire(owner, err);
    // VERSION may come first from a session that began just before the
    // owner switched: the new manifest is a reconnect away.
    dec.set_accepts(Kinds::of(&[Kind::Manifest, Kind::Refuse, Kind::Version]));
    net::fill_within(dec, stream, within).map_err(fail)?;
    let (shape, file_hash, raw_name) = match dec.message().map_err(fail)? {
        Message::Manifest {
            file_len,
            chunk_size,
            chunking,
            chunks,
            file_hash,
            name,
        } => (
            Shape::new(file_len, chunk_size, chunking, chunks),
            file_hash,
            name.to_string(),
        ),
        Message::Refuse(why) => return Err(fail(wire::Error::Refused(why.into()))),
        Message::Version(_) => return Err(fail(wire::Error::Refused(NEW_VERSION.into()))),
        other => return Err(fail(wire::Error::Unexpected(other.name()))),
    };
    let shape = shape?;
    // An owner makes its name plain before it hashes the manifest, so a
    // name that is not plain cannot be an honest owner's.
    let name = manifest::plain_name(&raw_name);
    if name != raw_name {
        return Err(Error::Manifest(format!(
            "{owner} sent a file name that is not a plain name ({raw_name:?})"
        )));
    }
    dec.set_shape(shape);
    dec.set_accepts(Kinds::of(&[Kind::Hashes]));
    // Grown as digests arrive, not sized from what the owner claims.
    let mut hashes = Vec::new();
    let mut lens = Vec::new();
    while hashes.len() < shape.count() as usize {
        net::fill_within(dec, stream, within).map_err(fail)?;
        match dec.message().map_err(fail)? {
            Message::Hashes {
                first,
                hashes: more,
                lens: more_lens,
            } if first as usize == hashes.len() => {
                hashes.extend(more);
                // The decoder gives lengths exactly for content chunking.
                lens.extend(more_lens.into_iter().flatten());
            }
            other => return Err(fail(wire::Error::Unexpected(other.name()))),
        }
    }
    let layout = match shape.chunking() {
        Chunking::Fixed => Layout::new(shape.file_len(), shape.chunk_size())?,
        Chunking::Content => Layout::content(shape.file_len(), shape.chunk_size(), &lens)?,
    };
    dec.set_layout(layout.clone());
    Manifest::new(name, layout, file_hash, hashes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_full_swarm_and_a_bad_address_are_final_refusals() {
        let full = format!("{}: this owner takes at most 3 peers", crate::tracker::FULL);
        assert_eq!(Refusal::of(&full), Refusal::Full);
        let bad = format!("{} is not usable", crate::tracker::BAD_ADDRESS);
        assert_eq!(Refusal::of(&bad), Refusal::BadAddress);
        assert!(Refusal::of(&full).is_final() && Refusal::of(&bad).is_final());
        for other in ["too many connections; try again later", NEW_VERSION, ""] {
            assert_eq!(Refusal::of(other), Refusal::Other);
            assert!(!Refusal::of(other).is_final());
        }
    }
}
