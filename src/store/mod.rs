//! A directory of chunk files and the store that owns it: the only code
//! that touches them. This file holds the [`Store`] itself (its one lock,
//! [`Store::put`], the paths of the directory) and the manifest's cache;
//! the jobs around it sit in its submodules:
//!
//! - [`fs`]: hardened file I/O (checked opens, `O_TMPFILE` and `linkat`,
//!   `FICLONE`, `fallocate`, atomic writes), knowing nothing of chunks;
//! - [`chunks`]: the held set's other uses (subscribers, the summary file,
//!   sending and reading chunks, dropping bad ones) and [`Store::open`],
//!   which re-hashes what it finds and reuses an earlier version's chunks;
//! - [`assembly`]: a peer's output file and its whole-file hash.
//!
//! The owner's index of its file (FastCDC, the split into chunk files)
//! lives beside the owner, in [`crate::owner::index`]; [`index`] and
//! [`split`] are re-exported here for the callers that knew them here.
//!
//! Layout of a swarm directory (owner and peer alike):
//!
//! ```text
//! DIR/manifest               the file's manifest, text form
//! DIR/chunks/00000000.chunk  chunk 0's raw bytes, and so on; `cat
//!                            DIR/chunks/*` gives the file back
//! DIR/summary.txt            the chunk IDs this side holds, one a line,
//!                            rewritten (atomically) at most every 200 ms
//! DIR/files/NAME             a peer's output when NAME is one of the
//!                            names above (see [`default_output`])
//! ```
//!
//! Nothing unverified is ever stored: [`Store::put`] checks a chunk's
//! SHA-256 first and writes the very bytes it hashed (to the chunk file,
//! then into the output if one is being assembled). It writes them into
//! an unnamed file and links that under the chunk's name (or, without
//! `O_TMPFILE`, writes a temporary name and renames it), so a crash of
//! the process leaves either the whole verified chunk, no file at all, or
//! a `.tmp` file that the next [`Store::open`] deletes. (After a power cut
//! an unflushed chunk file can come back short or stale; `open` re-hashes
//! every one, so none is trusted.) Threads that want to hear about new
//! chunks subscribe to a channel instead of polling.
//!
//! Nothing found in the directory is trusted either. Every file read from
//! it is opened without following a symlink or blocking on a FIFO, must
//! be a regular file of the expected size and is read no further than
//! that; anything else counts as damaged. Every file written is created
//! afresh, unnamed or (`O_EXCL`) under a temporary name of at most 255
//! bytes, and linked or renamed into place, so a link planted in the
//! directory is replaced, never written through. A full disk is reported
//! as [`Error::NoSpace`].
//!
//! # One lock
//!
//! Everything the threads share sits behind one mutex, `Held`: the set
//! of held chunks, the subscribers, the chunk files kept open for sending,
//! the summary's state and the output under construction. Storing a
//! chunk ([`Store::put`]) takes it once. The hash and the chunk file's
//! write come first, without it; then, under it, the chunk is written
//! into the output, listed as held, kept open, announced and noted for
//! the summary, in one step, so no thread sees one of these without the
//! others. (It took six before: a retire guard, the held set twice, the
//! open files, the output and the summary.) So a copy of a chunk held
//! already is found out only under the lock, after its file was written
//! again with the same verified bytes: checking first would cost every
//! chunk a second lock, and copies are rare (the end game). The lock is
//! taken again only off the good path or rarely: a copy that fails its
//! hash or its write asks whether the chunk is held (a held chunk's copy
//! is [`Put::Duplicate`], as before); the chunk that finds the summary
//! due (at most one per 200 ms) hands the summary back after writing it,
//! so a flush waiting for it wakes; and the last write under way after
//! [`Store::retire`] wakes it. A retiring store counts its `put`s in an
//! atomic instead of a lock.
//!
//! The output's write stays under the lock because "written into the
//! output" and "listed as held" must be one step, for
//! [`Store::fill_assembly`] to copy every chunk exactly once and for
//! [`Store::finish_assembly`] never to overtake a write; it is a write
//! into the page cache, and only a peer building its output pays it (with
//! `--verify-output`, also the read-back of chunks that arrived out of
//! order). Whatever else is I/O (the summary file, the final hash, flush
//! and rename of the output, unlinking a bad chunk) runs with the lock
//! released.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::chunks::ChunkSet;
use crate::error::{Error, Result};
use crate::manifest::{self, ChunkId, Manifest};

pub mod assembly;
pub mod chunks;
pub mod fs;
#[cfg(test)]
mod tests;

pub use crate::owner::index::{index, split};
pub use assembly::StartedAssembly;
pub use chunks::Reused;
pub use fs::write_atomic;

use assembly::Assembly;
use chunks::RECENT_FILES;
use fs::{read_checked, real_dir};

/// The manifest's file name inside a swarm directory.
pub const MANIFEST_FILE: &str = "manifest";

/// The summary's file name inside a swarm directory.
pub const SUMMARY_FILE: &str = "summary.txt";

/// How often, at most, the summary is rewritten while chunks arrive; each
/// rewrite costs O(chunks), so once per chunk would be quadratic.
const SUMMARY_EVERY: Duration = Duration::from_millis(200);

/// The folder of chunk files inside a swarm directory.
pub const CHUNKS_DIR: &str = "chunks";

/// The folder inside a swarm directory that takes a peer's output when the
/// file's name is one the directory itself uses (see [`default_output`]).
pub const FILES_DIR: &str = "files";

/// What [`Store::put`] did with a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// Verified and stored; subscribers were told.
    Stored,
    /// Already held; nothing written.
    Duplicate,
    /// Failed its SHA-256 check; discarded.
    Corrupt,
}

/// How the output file is checked before it takes its final name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputCheck {
    /// Chunk by chunk: every byte written into it was checked against its
    /// chunk's SHA-256 first (by [`Store::put`], or when copied in from a
    /// chunk file or found in a clone), and it is whole when every chunk
    /// is held. Costs no pass over the file at the end.
    Chunks,
    /// Also the whole-file SHA-256 over the file's bytes, read back where
    /// chunks arrived out of order (`--verify-output`): one more hash of
    /// every byte, and a read of those that came out of order.
    WholeFile,
}

/// The chunk files of one file in one directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    manifest: Manifest,
    /// The one lock: everything threads share (see the module docs).
    held: Mutex<Held>,
    /// Signalled, under `held`, when a summary rewrite hands the summary
    /// back and when the last write under way ends after [`Store::retire`].
    idle: Condvar,
    /// What opening the directory kept.
    reused: Reused,
    /// Set when a newer version's store is about to take over the
    /// directory: from then on nothing is written for this one.
    retired: AtomicBool,
    /// `put`s under way, so [`Store::retire`] can wait for their writes.
    /// Raised before a `put` reads `retired` and lowered after its last
    /// write (both `SeqCst`): either the `put` sees the store retired, or
    /// `retire` sees it under way and waits on `idle`.
    writers: AtomicUsize,
    /// The thread deleting the chunk files no version uses any more, if
    /// one runs; stopped and joined when the store is dropped.
    pub(crate) trash: Option<chunks::Trash>,
    /// Test only: pauses a summary rewrite after it took its snapshot,
    /// saying so on the first channel and going on at a word on the second.
    #[cfg(test)]
    summary_pause: std::sync::OnceLock<(Sender<()>, crossbeam_channel::Receiver<()>)>,
}

/// What the store's one lock guards. (Which chunks are wanted and asked
/// of whom is the peer's scheduler's business.)
#[derive(Debug)]
struct Held {
    /// The chunks verified and on disk; `put` lists a chunk here only
    /// after its chunk file is linked and, with an output under
    /// construction, its bytes are written there.
    have: ChunkSet,
    /// Who hears of every chunk listed from now on.
    subscribers: Vec<Sender<ChunkId>>,
    /// The chunk files stored last, still open: in a ring a chunk is
    /// usually passed on within moments of arriving, and sending it from
    /// the open file saves an open, a check and a close per chunk.
    recent: VecDeque<(ChunkId, Arc<File>)>,
    summary: Summary,
    /// The output file under construction, once a peer starts one.
    assembly: Option<Assembly>,
}

/// The summary file's state.
#[derive(Debug)]
struct Summary {
    /// The held set changed since the last snapshot taken for the file.
    /// Set on every change, whoever is writing the file meanwhile, so no
    /// change is lost: a rewrite under way has an older snapshot.
    dirty: bool,
    /// A thread took a snapshot and is writing it; no other starts one
    /// until it is done, so an older snapshot never lands last.
    busy: bool,
    /// When the last snapshot for the file was taken.
    written: Option<Instant>,
}

/// A `put` under way, counted in [`Store::writers`] until dropped.
struct Writing<'a>(&'a Store);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let store = self.0;
        if store.writers.fetch_sub(1, Ordering::SeqCst) == 1 && store.retired.load(Ordering::SeqCst)
        {
            // Under the lock, so `retire` is either before its check or
            // asleep on `idle`, never in between.
            let _held = store.lock();
            store.idle.notify_all();
        }
    }
}

/// The path of chunk `id` under `dir`.
pub fn chunk_path(dir: &Path, id: ChunkId) -> PathBuf {
    dir.join(CHUNKS_DIR).join(format!("{:08}.chunk", id.get()))
}

/// Where a peer writes the file called `name` (a plain name) when no
/// `--out` is given: `DIR/<name>`, except for names the directory itself
/// uses, which would overwrite its bookkeeping or collide with it. Those
/// are `manifest`, `summary.txt`, `chunks`, `files`, and any name that
/// starts with `.` and ends with `.tmp` (the temporary files of
/// [`write_atomic`]); such a file goes to `DIR/files/<name>` instead.
pub fn default_output(dir: &Path, name: &str) -> PathBuf {
    let reserved = [MANIFEST_FILE, SUMMARY_FILE, CHUNKS_DIR, FILES_DIR].contains(&name)
        || (name.starts_with('.') && name.ends_with(".tmp"));
    if reserved {
        dir.join(FILES_DIR).join(name)
    } else {
        dir.join(name)
    }
}

/// Reads the cached manifest of `dir`, if there is one. A manifest that
/// is not a regular file of at most [`manifest::MAX_TEXT_LEN`] bytes is
/// an error, found without reading it.
pub fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join(MANIFEST_FILE);
    let mut buf = Vec::new();
    match read_checked(&path, 0..=manifest::MAX_TEXT_LEN, &mut buf) {
        Ok(()) => {
            let text = String::from_utf8(buf)
                .map_err(|_| Error::Manifest(format!("{}: not UTF-8 text", path.display())))?;
            Manifest::from_text(&text)
                .map(Some)
                .map_err(|e| Error::Manifest(format!("{}: {}", path.display(), inner_text(&e))))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io_path("read", path, e)),
    }
}

/// The message of a manifest error without its "bad manifest" prefix.
fn inner_text(err: &Error) -> String {
    match err {
        Error::Manifest(msg) => msg.clone(),
        other => other.to_string(),
    }
}

/// Writes `manifest` to `DIR/manifest` unless that already holds exactly
/// its text (an unchanged restart then writes and syncs nothing).
/// Returns whether it replaced another manifest (an earlier version's,
/// or a damaged one).
pub(crate) fn cache_manifest(dir: &Path, manifest: &Manifest) -> Result<bool> {
    let text = manifest.to_text();
    let path = dir.join(MANIFEST_FILE);
    let len = text.len() as u64;
    let mut old = Vec::new();
    let found = read_checked(&path, len..=len, &mut old);
    let same = found.is_ok() && old == text.as_bytes();
    if !same {
        write_atomic(&path, text.as_bytes(), true)?;
    }
    Ok(match found {
        Ok(()) => !same,
        Err(e) => e.kind() != io::ErrorKind::NotFound,
    })
}

/// Creates `dir` and its chunk folder; a chunk folder that is a symlink
/// (or anything but a directory) is replaced by a real one.
pub(crate) fn create_dirs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io_write("create directory", dir, e))?;
    real_dir(&dir.join(CHUNKS_DIR))
}

impl Store {
    /// The store for `dir` holding `have`, with its summary written.
    pub(crate) fn with_set(dir: &Path, manifest: Manifest, have: ChunkSet) -> Result<Store> {
        let store = Store {
            dir: dir.to_path_buf(),
            manifest,
            held: Mutex::new(Held {
                have,
                subscribers: Vec::new(),
                recent: VecDeque::with_capacity(RECENT_FILES),
                summary: Summary {
                    dirty: true,
                    busy: false,
                    written: None,
                },
                assembly: None,
            }),
            idle: Condvar::new(),
            reused: Reused::default(),
            retired: AtomicBool::new(false),
            writers: AtomicUsize::new(0),
            trash: None,
            #[cfg(test)]
            summary_pause: std::sync::OnceLock::new(),
        };
        store.flush_summary()?;
        Ok(store)
    }

    /// The one lock.
    fn lock(&self) -> MutexGuard<'_, Held> {
        // A panic elsewhere must not take the store down with it: what
        // it guards is updated in single steps, so it is consistent.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file this store holds chunks of.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The file's chunk layout.
    pub fn layout(&self) -> &manifest::Layout {
        self.manifest.layout()
    }

    /// Stops all writing for this store, once every write under way is
    /// done: a newer version's store is about to take over the directory
    /// (see [`Store::open_after`]). Chunks offered later are dropped, and
    /// an assembly being filled stops between two chunks.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        let mut held = self.lock();
        while self.writers.load(Ordering::SeqCst) > 0 {
            held = self.idle.wait(held).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// What [`Store::open`] kept of the chunk files it found.
    pub fn reused(&self) -> Reused {
        self.reused
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether chunk `id` is held.
    pub fn has(&self, id: ChunkId) -> bool {
        self.lock().have.contains(id)
    }

    /// How many chunks are held.
    pub fn held(&self) -> u32 {
        self.lock().have.len()
    }

    /// Whether every chunk is held.
    pub fn is_complete(&self) -> bool {
        self.lock().have.is_full()
    }

    /// A copy of the set of held chunks.
    pub fn snapshot(&self) -> ChunkSet {
        self.lock().have.clone()
    }

    /// Verifies `data` as chunk `id` and stores it. A full disk is
    /// [`Error::NoSpace`]: the caller should stop, not fetch again.
    ///
    /// The hash and the chunk file's write take no lock; then one
    /// section under the store's lock writes the chunk into the output
    /// (if one is being assembled), lists it as held and tells the
    /// subscribers (see the module docs). A chunk already held is
    /// [`Put::Duplicate`], also when its copy fails the hash: only a copy
    /// of a chunk still wanted is [`Put::Corrupt`].
    pub fn put(&self, id: ChunkId, data: &[u8]) -> Result<Put> {
        self.writers.fetch_add(1, Ordering::SeqCst);
        let _writing = Writing(self);
        if self.retired.load(Ordering::SeqCst) {
            return Ok(Put::Duplicate);
        }
        if !self.manifest.verify(id, data) {
            // A lock taken only here and after a failed write below,
            // never on the way of a good chunk.
            return Ok(if self.has(id) {
                Put::Duplicate
            } else {
                Put::Corrupt
            });
        }
        // Chunk files are not fsynced: a restart re-hashes every one. A
        // copy of a chunk held already is written too (the same verified
        // bytes, linked over the old name): finding that out first would
        // take the lock once more for every chunk, and copies are rare.
        let file = match fs::write_chunk_file(&chunk_path(&self.dir, id), data) {
            Ok(file) => file,
            // A copy of a held chunk that finds the disk full changes
            // nothing: not a reason to stop.
            Err(_) if self.has(id) => return Ok(Put::Duplicate),
            Err(e) => return Err(e),
        };
        let mut guard = self.lock();
        let held = &mut *guard;
        if held.have.contains(id) {
            return Ok(Put::Duplicate);
        }
        // Written into the output before it is listed, under the same
        // lock: fill_assembly copies every chunk exactly once, and
        // finish_assembly never finds a listed chunk missing.
        if let Some(a) = &held.assembly {
            a.write(self.layout(), id, data)?;
        }
        held.list(id);
        if let Some(file) = file {
            if held.recent.len() == RECENT_FILES {
                held.recent.pop_front();
            }
            held.recent.push_back((id, Arc::new(file)));
        }
        if let Some(a) = held.assembly.as_mut() {
            a.hashed(self.layout(), &held.have, id, data)?;
        }
        let due = held.summary_due();
        drop(guard);
        if let Some(have) = due {
            self.write_summary(have)
                .unwrap_or_else(|e| log::warn!("{e}"));
        }
        Ok(Put::Stored)
    }
}
