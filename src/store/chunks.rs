//! The held set and the chunk files: what a [`Store`] holds and how it
//! comes to hold it. [`Store::open`] re-hashes every chunk file it finds
//! and takes an earlier version's chunk files wherever they sit (by their
//! digests, moved aside and linked into every place the new version has
//! them); [`Store::open_after`] trusts what this process verified of the
//! version before. Around the held set (guarded by the store's one lock,
//! see [`super`]): subscribers hear of every chunk listed, the summary
//! file follows it at most every 200 ms without ever losing a change,
//! chunks are sent (`sendfile(2)` from the files kept open) and read, and
//! a chunk found bad is dropped to be fetched again.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::net::TcpStream;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_channel::Receiver;

use super::fs::{open_checked, read_checked, real_dir, remove_entry, write_atomic};
use super::{
    CHUNKS_DIR, Held, SUMMARY_EVERY, SUMMARY_FILE, Store, cache_manifest, chunk_path, create_dirs,
};
use crate::chunks::ChunkSet;
use crate::error::{Error, Result};
use crate::manifest::{self, ChunkId, Digest, Layout, Manifest};
use crate::{net, wire};

/// Where [`Store::open`] keeps chunk files of an earlier version while it
/// moves them to their places in the new one: inside `DIR/chunks` and
/// hidden, so `cat DIR/chunks/*` never sees it.
pub(super) const REUSE_DIR: &str = ".reuse";

/// How the folders of chunk files to delete start, inside `DIR/chunks`
/// (hidden, like [`REUSE_DIR`]).
const TRASH_PREFIX: &str = ".trash-";

/// Numbers the trash folders of one process.
static TRASH_SEQ: AtomicU64 = AtomicU64::new(0);

/// What [`Store::open`] kept of the chunk files it found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reused {
    /// Chunks found in their own place.
    pub in_place: u32,
    /// Chunks found elsewhere (an earlier version had them at another
    /// place, or more than once) and linked into place.
    pub moved: u32,
    /// Their bytes, together.
    pub bytes: u64,
}

/// How many stored chunk files [`Store`] keeps open for sending.
pub(super) const RECENT_FILES: usize = 64;

/// Deletes entries of `DIR/chunks` that cannot be chunk files of
/// `layout`: names beyond the new chunk count (a different, earlier file
/// left them; `cat DIR/chunks/*` must stay right), foreign names, and
/// anything that is not a regular file (a chunk file's rename could not
/// replace a directory).
pub(crate) fn remove_stale_chunks(dir: &Path, layout: &Layout) -> Result<()> {
    for (path, id) in list_chunk_files(dir)? {
        let regular = fs::symlink_metadata(&path).is_ok_and(|m| m.is_file());
        if !regular || id.is_none_or(|raw| layout.chunk_id(raw).is_none()) {
            let _ = remove_entry(&path);
        }
    }
    Ok(())
}

/// Every entry in `DIR/chunks` with the chunk index its name gives, or
/// `None` for temporary and foreign files.
pub(super) fn list_chunk_files(dir: &Path) -> Result<Vec<(PathBuf, Option<u32>)>> {
    let chunks = dir.join(CHUNKS_DIR);
    let entries = fs::read_dir(&chunks).map_err(|e| Error::io_path("list", &chunks, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io_path("list", &chunks, e))?;
        let name = entry.file_name();
        let raw = name
            .to_str()
            .and_then(|n| n.strip_suffix(".chunk"))
            .filter(|n| n.len() == 8 && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse().ok());
        out.push((entry.path(), raw));
    }
    Ok(out)
}

/// Where each digest sits in `manifest`, built into `slot` on first use.
fn places_of<'a>(
    slot: &'a mut Option<HashMap<Digest, Vec<ChunkId>>>,
    manifest: &Manifest,
) -> &'a HashMap<Digest, Vec<ChunkId>> {
    slot.get_or_insert_with(|| {
        let mut map: HashMap<Digest, Vec<ChunkId>> = HashMap::new();
        for id in manifest.layout().ids() {
            map.entry(*manifest.chunk_hash(id)).or_default().push(id);
        }
        map
    })
}

/// The exact size chunk `id` must have on disk, as a range for
/// [`open_checked`].
pub(crate) fn chunk_len_range(layout: &Layout, id: ChunkId) -> RangeInclusive<u64> {
    let len = layout.chunk_len(id) as u64;
    len..=len
}

impl Store {
    /// Opens `dir` for `manifest`: creates it if needed, caches the
    /// manifest, re-hashes every chunk file already there and rewrites the
    /// summary. A chunk file that is right where it is, is kept; one whose
    /// bytes are another chunk of this manifest (an earlier version's
    /// chunk, which the new version has elsewhere) is moved there; the
    /// rest are deleted, including anything that is not a regular file of
    /// a possible chunk length. [`Store::reused`] says what was kept.
    pub fn open(dir: &Path, manifest: Manifest) -> Result<Store> {
        Store::open_from(dir, manifest, None)
    }

    /// Opens `dir` for `manifest` after `prev`, the store of an earlier
    /// version that this process verified every held chunk of: those
    /// chunk files are taken by their digests in `prev`'s manifest
    /// without being read again. Anything else in the directory is
    /// re-hashed as [`Store::open`] does.
    pub fn open_after(dir: &Path, manifest: Manifest, prev: &Store) -> Result<Store> {
        Store::open_from(dir, manifest, Some(prev))
    }

    fn open_from(dir: &Path, manifest: Manifest, prev: Option<&Store>) -> Result<Store> {
        create_dirs(dir)?;
        // A directory that held another version: its chunk files are
        // expected not to match, and are not called damaged.
        let replaced = cache_manifest(dir, &manifest)?;
        let earlier = prev.is_some() || replaced;
        let layout = manifest.layout().clone();
        let longest = 1..=u64::from(layout.max_chunk_len());
        let mut have = ChunkSet::new(layout.count());
        let mut reused = Reused::default();
        let reuse = dir.join(CHUNKS_DIR).join(REUSE_DIR);
        // The previous version's digest of each chunk it held, by index.
        let trusted = prev.map(|p| (p.manifest(), p.snapshot()));
        let known = |raw: u32| {
            let (m, held) = trusted.as_ref()?;
            let old = m.layout().chunk_id(raw)?;
            held.contains(old).then(|| *m.chunk_hash(old))
        };
        // Built only once a chunk file is found out of place.
        let mut wanted: Option<HashMap<Digest, Vec<ChunkId>>> = None;
        // Digests checked in this call of the files moved aside.
        let mut checked = HashSet::new();
        let mut dropped = 0u32;
        let mut buf = Vec::new();
        // Chunk files no version uses any more, moved here and deleted on
        // a thread of their own: deleting thousands of files can take
        // seconds, which a switch to a new version need not wait for.
        let trash = dir.join(CHUNKS_DIR).join(format!(
            "{TRASH_PREFIX}{}-{}",
            std::process::id(),
            TRASH_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let mut old_trash = Vec::new();
        for (path, raw) in list_chunk_files(dir)? {
            if path == reuse {
                continue;
            }
            if path
                .file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| n.starts_with(TRASH_PREFIX))
            {
                old_trash.push(path);
                continue;
            }
            let id = raw.and_then(|raw| layout.chunk_id(raw));
            let digest = match raw.and_then(known) {
                Some(d) => Some(d),
                // A temporary file from an interrupted write, junk, or a
                // chunk file to check.
                None if raw.is_some() => read_checked(&path, longest.clone(), &mut buf)
                    .ok()
                    .map(|()| manifest::sha256(&buf)),
                None => None,
            };
            match (id, digest) {
                (Some(id), Some(d)) if d == *manifest.chunk_hash(id) => {
                    have.insert(id);
                    reused.in_place += 1;
                    reused.bytes += layout.chunk_len(id) as u64;
                }
                (_, Some(d)) if places_of(&mut wanted, &manifest).contains_key(&d) => {
                    real_dir(&reuse)?;
                    let aside = reuse.join(manifest::to_hex(&d));
                    fs::rename(&path, &aside).map_err(|e| Error::io_write("move", &path, e))?;
                    checked.insert(d);
                }
                _ if raw.is_some() && earlier => {
                    dropped += 1;
                    if dropped == 1 {
                        real_dir(&trash)?;
                    }
                    let to = trash.join(path.file_name().unwrap_or(OsStr::new("chunk")));
                    if fs::rename(&path, &to).is_err() {
                        let _ = remove_entry(&path);
                    }
                }
                _ => {
                    if raw.is_some() {
                        log::warn!("dropping damaged chunk file {}", path.display());
                    }
                    let _ = remove_entry(&path);
                }
            }
        }
        if fs::symlink_metadata(&reuse).is_ok_and(|m| m.is_dir()) {
            let entries = fs::read_dir(&reuse).map_err(|e| Error::io_path("list", &reuse, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io_path("list", &reuse, e))?;
                let path = entry.path();
                let digest = entry.file_name().to_str().and_then(manifest::from_hex);
                // Left by an interrupted open, it is checked like any other.
                let good = digest.filter(|d| {
                    checked.contains(d)
                        || (read_checked(&path, longest.clone(), &mut buf).is_ok()
                            && manifest::sha256(&buf) == *d)
                });
                let places = good.and_then(|d| places_of(&mut wanted, &manifest).get(&d));
                for &id in places.into_iter().flatten() {
                    if have.contains(id) {
                        continue;
                    }
                    let to = chunk_path(dir, id);
                    let linked = fs::hard_link(&path, &to).or_else(|_| {
                        remove_entry(&to)?;
                        fs::hard_link(&path, &to)
                    });
                    linked.map_err(|e| Error::io_write("link", &to, e))?;
                    have.insert(id);
                    reused.moved += 1;
                    reused.bytes += layout.chunk_len(id) as u64;
                }
                let _ = remove_entry(&path);
            }
            let _ = remove_entry(&reuse);
        }
        // A chunk that the file holds more than once is needed at every
        // place it has, the ones found in place included.
        if !have.is_empty() && !have.is_full() {
            let places = places_of(&mut wanted, &manifest);
            for id in layout.ids() {
                let Some(&from) = places[manifest.chunk_hash(id)]
                    .iter()
                    .find(|&&at| at != id && have.contains(at))
                else {
                    continue;
                };
                if have.contains(id) {
                    continue;
                }
                let to = chunk_path(dir, id);
                let _ = remove_entry(&to);
                fs::hard_link(chunk_path(dir, from), &to)
                    .map_err(|e| Error::io_write("link", &to, e))?;
                have.insert(id);
                reused.moved += 1;
                reused.bytes += layout.chunk_len(id) as u64;
            }
        }
        if dropped > 0 {
            log::info!(
                "dropped {dropped} chunk files of an earlier version that this one does not use"
            );
            old_trash.push(trash);
        }
        let trash = (!old_trash.is_empty())
            .then(|| Trash::start(old_trash))
            .flatten();
        let mut store = Store::with_set(dir, manifest, have)?;
        store.reused = reused;
        store.trash = trash;
        Ok(store)
    }

    /// Lists `id` as held, for a chunk file just written whole (the
    /// owner's split); returns whether it was new.
    pub(crate) fn mark_held(&self, id: ChunkId) -> bool {
        let mut held = self.lock();
        if !held.list(id) {
            return false;
        }
        let due = held.summary_due();
        drop(held);
        if let Some(have) = due {
            self.write_summary(have)
                .unwrap_or_else(|e| log::warn!("{e}"));
        }
        true
    }

    /// Rewrites the summary file if chunks were gained or dropped since
    /// it was last written, after waiting for a rewrite under way (which
    /// may have an older snapshot). On a full disk this returns
    /// [`Error::NoSpace`], so a caller can stop.
    pub fn flush_summary(&self) -> Result<()> {
        let mut held = self.lock();
        while held.summary.busy {
            held = self.idle.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        if !held.summary.dirty {
            return Ok(());
        }
        let have = held.claim_summary();
        drop(held);
        self.write_summary(have)
    }

    /// Writes `have`, a snapshot taken by [`Held::claim_summary`], as the
    /// summary file, then hands the summary back (taking the lock again);
    /// on a full disk ([`Error::NoSpace`]) the summary stays dirty for
    /// the next try.
    pub(super) fn write_summary(&self, have: ChunkSet) -> Result<()> {
        #[cfg(test)]
        if let Some((paused, go)) = self.summary_pause.get() {
            let _ = paused.send(());
            let _ = go.recv();
        }
        let mut text = String::with_capacity(have.len() as usize * 8);
        for id in have.iter(self.layout()) {
            text.push_str(&format!("{id}\n"));
        }
        let written = write_atomic(&self.dir.join(SUMMARY_FILE), text.as_bytes(), false);
        let mut held = self.lock();
        held.summary.busy = false;
        if written.is_err() {
            held.summary.dirty = true;
        }
        self.idle.notify_all();
        written
    }

    /// A channel that receives the ID of every chunk stored from now on,
    /// together with the set held at the moment of subscribing (so no
    /// chunk falls between the two).
    pub fn subscribe(&self) -> (ChunkSet, Receiver<ChunkId>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut inner = self.lock();
        inner.subscribers.push(tx);
        (inner.have.clone(), rx)
    }

    /// Opens chunk `id` for reading. The caller must hold it. The chunk
    /// file must be a regular file of exactly the chunk's length.
    pub fn open_chunk(&self, id: ChunkId) -> Result<File> {
        let path = chunk_path(&self.dir, id);
        match open_checked(&path, chunk_len_range(self.layout(), id)) {
            Ok((file, _)) => Ok(file),
            Err(e) => Err(Error::io_path("open", path, e)),
        }
    }

    /// Writes chunk `id` to `stream` as one CHUNK frame; the chunk's
    /// bytes go from the page cache to the socket by `sendfile(2)`,
    /// without a copy through user space. Returns the bytes of data sent:
    /// 0, with nothing written, if the chunk was dropped (it failed the
    /// whole-file check) since the caller saw it held.
    pub fn send_chunk(&self, id: ChunkId, stream: &TcpStream) -> Result<u64> {
        let len = self.layout().chunk_len(id) as u64;
        let open = self.recent_file(id);
        // Checked to be exactly `len` bytes: anything else would break
        // the frame (a restart re-checks it).
        let opened;
        let file = match &open {
            Some(file) => &**file,
            None => match self.open_chunk(id) {
                Ok(file) => {
                    opened = file;
                    &opened
                }
                Err(_) if !self.has(id) => return Ok(0),
                Err(e) => return Err(e),
            },
        };
        let header = wire::chunk_header(id, len as usize);
        let sent =
            net::send_file(stream, &header, file, len).map_err(|e| Error::io("send chunk", e))?;
        if sent != len {
            let path = chunk_path(&self.dir, id);
            return Err(Error::io(
                "send chunk",
                io::Error::other(format!("chunk file {} shrank", path.display())),
            ));
        }
        Ok(len)
    }

    /// Reads chunk `id` into `buf`, replacing its contents. The chunk file
    /// must be a regular file of exactly the chunk's length.
    pub fn read_chunk(&self, id: ChunkId, buf: &mut Vec<u8>) -> Result<()> {
        let path = chunk_path(&self.dir, id);
        read_checked(&path, chunk_len_range(self.layout(), id), buf)
            .map_err(|e| Error::io_path("read", &path, e))
    }

    /// Chunk `id`'s file if it is among the ones kept open.
    fn recent_file(&self, id: ChunkId) -> Option<Arc<File>> {
        self.lock()
            .recent
            .iter()
            .rev()
            .find(|(held, _)| *held == id)
            .map(|(_, file)| Arc::clone(file))
    }

    /// Forgets chunk `id` and deletes its file, after it was found bad.
    fn drop_chunk(&self, id: ChunkId) {
        let mut held = self.lock();
        held.recent.retain(|(kept, _)| *kept != id);
        held.have.remove(id);
        held.summary.dirty = true;
        let due = held.summary_due();
        drop(held);
        let _ = remove_entry(&chunk_path(&self.dir, id));
        if let Some(have) = due {
            self.write_summary(have)
                .unwrap_or_else(|e| log::warn!("{e}"));
        }
    }

    /// Re-hashes every held chunk and drops the bad ones (a chunk file
    /// that is not a regular file of the chunk's length among them);
    /// returns how many were dropped.
    pub fn recheck(&self) -> usize {
        let mut buf = Vec::new();
        let mut dropped = 0;
        for id in self.snapshot().iter(self.layout()) {
            let good = self.read_chunk(id, &mut buf).is_ok() && self.manifest.verify(id, &buf);
            if !good {
                log::warn!("chunk {id} is damaged on disk; fetching it again");
                self.drop_chunk(id);
                dropped += 1;
            }
        }
        dropped
    }
}

impl Held {
    /// Lists `id` as held, tells the subscribers and marks the summary
    /// dirty; returns whether it was new.
    pub(super) fn list(&mut self, id: ChunkId) -> bool {
        if !self.have.insert(id) {
            return false;
        }
        self.subscribers.retain(|tx| tx.send(id).is_ok());
        self.summary.dirty = true;
        true
    }

    /// After a change to the held set: the snapshot to write as the
    /// summary if it is dirty and due (last written [`SUMMARY_EVERY`] ago
    /// or more) and no other thread is writing it. Otherwise it stays
    /// dirty, and the coordinator's next [`Store::flush_summary`] (or the
    /// next chunk's) catches up.
    pub(super) fn summary_due(&mut self) -> Option<ChunkSet> {
        let due = self.summary.dirty
            && !self.summary.busy
            && self
                .summary
                .written
                .is_none_or(|at| at.elapsed() >= SUMMARY_EVERY);
        due.then(|| self.claim_summary())
    }

    /// Takes the summary's rewrite: a snapshot of the held set, which
    /// the caller must pass to [`Store::write_summary`].
    fn claim_summary(&mut self) -> ChunkSet {
        self.summary.busy = true;
        self.summary.dirty = false;
        self.summary.written = Some(Instant::now());
        self.have.clone()
    }
}

/// Deletes folders of chunk files no version uses any more, on a thread of
/// its own: deleting thousands of files can take seconds, which a switch
/// to a new version need not wait for. Dropping it stops the deletion
/// between two files and joins the thread; what is left is deleted by the
/// next open, which takes up every trash folder it finds.
#[derive(Debug)]
pub(crate) struct Trash {
    /// Dropped to say stop.
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Trash {
    fn start(folders: Vec<PathBuf>) -> Option<Trash> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let spawned = std::thread::Builder::new()
            .name("trash".into())
            .spawn(move || {
                let go_on = || stopped.try_recv() == Err(crossbeam_channel::TryRecvError::Empty);
                for folder in folders {
                    if let Ok(entries) = fs::read_dir(&folder) {
                        for entry in entries.flatten() {
                            if !go_on() {
                                return;
                            }
                            let _ = remove_entry(&entry.path());
                        }
                    }
                    if !go_on() {
                        return;
                    }
                    let _ = remove_entry(&folder);
                }
            });
        match spawned {
            Ok(thread) => Some(Trash {
                stop: Some(stop),
                thread: Some(thread),
            }),
            Err(e) => {
                log::warn!("cannot start a thread to delete old chunk files: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
impl Trash {
    /// Waits for the deletion to finish, without stopping it.
    pub(crate) fn wait(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Trash {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
