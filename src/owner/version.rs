//! The versions of the owner's file: what one version serves, writing
//! its chunk files (the split), and following the file as it changes
//! (the watch thread), which makes a new version current.
//!
//! The watch thread looks at the file every [`WATCH_EVERY`] (a deadline
//! tick selected together with its stop channel). A new version is made
//! current in three steps, so that no session of the old one sends a
//! chunk file the new one has moved: the old version is retired (its
//! split stops between two chunks, its writers send nothing more from the
//! source) and the owner's loop tells its sessions VERSION; the old split
//! is joined; then the new version opens, taking over the chunk files
//! both share, and the loop switches to it. The watch thread owns every
//! split thread it starts and joins them on the way out.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use super::Shared;
use super::encode_manifest;
use super::shell::Event;
use crate::error::{Error, Result};
use crate::manifest::{self, ChunkId, Chunking, Digest, Layout, Manifest};
use crate::store::{self, Store};

/// One version of the file: what the owner serves while it is current.
/// A session keeps the version it started with; when a new one becomes
/// current, every older session is told (VERSION) and ends.
#[derive(Debug)]
pub(super) struct Version {
    /// 1 for the file as indexed at start, then one more per change.
    pub number: u32,
    pub store: Store,
    pub file_id: [u8; 32],
    /// MANIFEST and HASHES, encoded once for every session.
    pub manifest_frames: Arc<[u8]>,
    /// Set when a newer version replaces this one, or the owner stops:
    /// its split stops, and its writers no longer read the source.
    pub retired: AtomicBool,
}

/// What making a [`Version`] needs besides its manifest.
pub(super) struct VersionSetup {
    pub dir: PathBuf,
}

impl Version {
    /// The version of `manifest`. With `before`, the version it replaces,
    /// whose chunk files this process wrote and verified: those the new
    /// one has too are taken over wherever they sit, without being read,
    /// and the split writes only the rest.
    pub fn new(
        number: u32,
        manifest: Manifest,
        args: &VersionSetup,
        before: Option<&Version>,
    ) -> Result<Version> {
        let file_id = manifest.id();
        let manifest_frames = encode_manifest(&manifest).into();
        let store = match before {
            Some(before) => Store::open_after(&args.dir, manifest, &before.store)?,
            None => Store::open_owner(&args.dir, manifest)?,
        };
        Ok(Version {
            number,
            store,
            file_id,
            manifest_frames,
            retired: AtomicBool::new(false),
        })
    }
}

/// The first chunk `store` does not hold.
fn first_missing(store: &Store) -> Option<ChunkId> {
    let held = store.snapshot();
    store.layout().ids().find(|&id| !held.contains(id))
}

/// Writes version `v`'s chunk files on a thread of its own; sessions
/// read chunks from the source file (verified) until then.
pub(super) fn start_split(shared: &Arc<Shared>, v: Arc<Version>) -> Result<JoinHandle<()>> {
    let splitter = Arc::clone(shared);
    thread::Builder::new()
        .name("owner split".into())
        .spawn(move || {
            let started = Instant::now();
            match v.store.split_from(&splitter.source, &v.retired, &|| splitter.source_reads.wake()) {
                Ok(_) if v.retired.load(Ordering::Acquire) => {
                    if !splitter.stopper.stopped() {
                        log::info!("owner: version {} is replaced; its split stopped", v.number);
                    }
                }
                Ok(kept) => log::info!(
                    "owner: wrote {} of {} chunk files under {} in {:.2} s (reused {kept} unchanged chunk files)",
                    v.store.layout().count() - kept,
                    v.store.layout().count(),
                    splitter.dir.display(),
                    started.elapsed().as_secs_f64()
                ),
                // The split goes in ID order, passing over the chunks held:
                // the first one not held is where it stopped.
                Err(Error::Integrity(_)) => match first_missing(&v.store) {
                    Some(id) => splitter.source_changed(&v, id),
                    None => splitter.fail(Error::Bug("split failed past the last chunk".into())),
                },
                // Cut short, or truncated, by a writer: a change to follow.
                Err(e @ Error::Io { .. }) if !splitter.once && !v.store.is_complete() => {
                    log::warn!("owner: {e}");
                    if let Some(id) = first_missing(&v.store) {
                        splitter.source_changed(&v, id);
                    }
                }
                Err(e) => splitter.fail(e),
            }
        })
        .map_err(|e| Error::io("start the split thread", e))
}

/// How long the file must stay unchanged before it is indexed again: a
/// file being written is indexed once, when the writer is done.
const QUIET: Duration = Duration::from_secs(1);

/// How often the watcher looks at the file.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// Set by SIGHUP: index the file again now.
static HANGUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hangup(_: libc::c_int) {
    HANGUP.store(true, Ordering::SeqCst);
}

/// Makes SIGHUP ask for a new index instead of ending the process.
pub(super) fn catch_hangup() {
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe.
    unsafe {
        libc::signal(libc::SIGHUP, on_hangup as *const () as libc::sighandler_t);
    }
}

/// What the watcher compares to notice a change: size, modification and
/// change times, and the inode (a file replaced by rename).
fn stamp(path: &Path) -> Option<(u64, i64, i64, i64, i64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.ino(),
    ))
}

/// The watch thread's state.
pub(super) struct Watcher {
    shared: Arc<Shared>,
    /// The owner's loop.
    events: Sender<Event>,
    /// Closed when the owner stops.
    stop: Receiver<()>,
    /// The split of the current version, until joined.
    split: Option<JoinHandle<()>>,
    seen: Option<(u64, i64, i64, i64, i64, u64)>,
    /// When a change was last seen, while one is pending.
    pending: Option<Instant>,
}

impl Watcher {
    /// A watcher for `shared`'s file; `split` is the current version's.
    pub fn new(
        shared: Arc<Shared>,
        events: Sender<Event>,
        stop: Receiver<()>,
        split: Option<JoinHandle<()>>,
    ) -> Watcher {
        let seen = stamp(&shared.source);
        Watcher {
            shared,
            events,
            stop,
            split,
            seen,
            pending: None,
        }
    }

    /// Follows the source file until the stop channel closes: once it
    /// has changed and then stayed quiet for [`QUIET`] (or on SIGHUP, or
    /// when a read found it changed), indexes it while the current
    /// version is still served, and makes the result the current version
    /// if it differs. With `--once`, a change stops the owner instead.
    /// On the way out, stops the current version's split and joins it.
    pub fn run(mut self) {
        loop {
            select! {
                recv(self.stop) -> _ => break,
                default(WATCH_EVERY) => {}
            }
            if !self.look() {
                break;
            }
        }
        self.shared.current().retired.store(true, Ordering::Release);
        self.shared.source_reads.wake();
        if let Some(split) = self.split.take() {
            let _ = split.join();
        }
    }

    /// One look at the file; returns whether to go on watching.
    fn look(&mut self) -> bool {
        let shared = Arc::clone(&self.shared);
        let now = Instant::now();
        let stamp_now = stamp(&shared.source);
        if stamp_now != self.seen {
            self.seen = stamp_now;
            self.pending = Some(now);
        }
        let asked = HANGUP.swap(false, Ordering::SeqCst);
        let suspect = shared.suspect.load(Ordering::Acquire);
        if asked || (suspect && self.pending.is_none()) {
            self.pending = Some(now.checked_sub(QUIET).unwrap_or(now));
        }
        let Some(since) = self.pending else {
            return true;
        };
        if now.saturating_duration_since(since) < QUIET {
            return true;
        }
        let before = stamp(&shared.source);
        let doing = if shared.once {
            "checking its bytes"
        } else {
            "indexing it again"
        };
        log::info!("owner: {} changed; {doing}", shared.source.display());
        let started = Instant::now();
        let indexed = store::index(&shared.source, shared.chunk_size, shared.chunking);
        if stamp(&shared.source) != before {
            log::info!(
                "owner: {} changed again while being indexed; waiting for it to settle",
                shared.source.display()
            );
            self.seen = stamp(&shared.source);
            self.pending = Some(Instant::now());
            return true;
        }
        self.pending = None;
        shared.suspect.store(false, Ordering::Release);
        if shared.once {
            // Touched but the same bytes is no change.
            let v = shared.current();
            let changed = match &indexed {
                Ok(m) if m.id() == v.file_id => {
                    log::info!("owner: {} is unchanged", shared.source.display());
                    return true;
                }
                Ok(m) => first_difference(v.store.manifest(), m),
                Err(_) => None,
            };
            shared.fail(match changed.or_else(|| v.store.layout().ids().next()) {
                Some(id) => shared.changed(id),
                None => Error::Integrity(format!(
                    "{} changed while being shared; restart the owner to share the new version",
                    shared.source.display()
                )),
            });
            return false;
        }
        match indexed {
            Ok(m) if m.id() == shared.current().file_id => {
                log::info!("owner: {} is unchanged", shared.source.display());
                let v = shared.current();
                // A split that a passing change cut short goes on.
                let idle = self.split.as_ref().is_none_or(JoinHandle::is_finished);
                if !v.store.is_complete() && idle {
                    if let Some(done) = self.split.take() {
                        let _ = done.join();
                    }
                    match start_split(&shared, v) {
                        Ok(split) => self.split = Some(split),
                        Err(e) => {
                            shared.fail(e);
                            return false;
                        }
                    }
                }
            }
            Ok(m) => {
                if let Err(e) = self.switch_to(m, started.elapsed()) {
                    shared.fail(e);
                    return false;
                }
            }
            Err(e) => {
                log::warn!("owner: cannot index the new version: {e}; serving the current one");
            }
        }
        true
    }

    /// Makes `m` the current version: every session of an older one is
    /// told VERSION and ends (its peer comes back for the new manifest),
    /// and the new chunk files are written while the new version is
    /// served.
    fn switch_to(&mut self, m: Manifest, took: Duration) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let old = shared.current();
        let number = old.number + 1;
        log_version(number, &m, Some(old.store.manifest()), took);
        let setup = VersionSetup {
            dir: shared.dir.clone(),
        };
        // The old version's sessions send nothing more after the frame
        // they are writing (VERSION goes next, then they stop), and its
        // split stops between two chunks; only then does the new version
        // take over the chunk files, some of which it moves.
        old.retired.store(true, Ordering::Release);
        shared.source_reads.wake();
        let (told_tx, told_rx) = crossbeam_channel::bounded(1);
        let retire = Event::Retire {
            number,
            file_id: m.id(),
            told: told_tx,
        };
        if self.events.send(retire).is_err() {
            return Ok(());
        }
        let told = select! {
            recv(told_rx) -> told => told.unwrap_or(0),
            // The owner is stopping.
            recv(self.stop) -> _ => return Ok(()),
        };
        if let Some(split) = self.split.take() {
            let _ = split.join();
        }
        let next = Arc::new(Version::new(number, m, &setup, Some(&old))?);
        // The loop first, so that every session that takes the new
        // version finds the loop serving it.
        let _ = self.events.send(Event::Current(Arc::clone(&next)));
        *shared.current.lock().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&next);
        log::info!("owner: now sharing version {number}; told {told} sessions");
        self.split = Some(start_split(&shared, next)?);
        Ok(())
    }
}

/// The first chunk of `old` that `new` does not have at the same place.
fn first_difference(old: &Manifest, new: &Manifest) -> Option<ChunkId> {
    old.layout().ids().find(|&id| {
        let same = new.layout().chunk_id(id.get()).is_some_and(|at| {
            new.chunk_hash(at) == old.chunk_hash(id)
                && new.layout().chunk_len(at) == old.layout().chunk_len(id)
        });
        !same
    })
}

/// How the chunks are cut, for the "indexed" line: "102400 bytes, fixed
/// chunking", or the actual average and the scheme's bounds.
fn chunking_text(layout: &Layout) -> String {
    match layout.chunking() {
        Chunking::Fixed => format!("{} bytes, fixed chunking", layout.chunk_size()),
        Chunking::Content => {
            let (min, avg, max) = crate::manifest::content_sizes(layout.chunk_size());
            let mean = layout.file_len() / u64::from(layout.count().max(1));
            format!("{mean} bytes on average, content chunking of min/avg/max {min}/{avg}/{max}")
        }
    }
}

/// Logs a version the owner is about to serve.
pub(super) fn log_version(number: u32, m: &Manifest, prev: Option<&Manifest>, took: Duration) {
    let what = if number == 1 {
        "indexed".to_string()
    } else {
        format!("indexed version {number} of")
    };
    log::info!(
        "owner: {what} {} ({} bytes, {} chunks of {}) in {:.2} s; sha256 {}",
        m.name(),
        m.layout().file_len(),
        m.layout().count(),
        chunking_text(m.layout()),
        took.as_secs_f64(),
        manifest::to_hex(m.file_hash()),
    );
    let shared = prev.map(|prev| {
        let old: HashSet<&Digest> = prev.chunk_hashes().iter().collect();
        let same = m.chunk_hashes().iter().filter(|d| old.contains(d)).count();
        format!(
            "; {same} of its {} chunks were in the version before",
            m.layout().count()
        )
    });
    log::info!(
        "owner: version {number}: file ID {}, {} chunks{}",
        crate::peer::short_id(&m.id()),
        m.layout().count(),
        shared.unwrap_or_default()
    );
}
