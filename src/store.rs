//! A directory of chunk files: the only code that touches them.
//!
//! Layout of a swarm directory (owner and peer alike):
//!
//! ```text
//! DIR/manifest               the file's manifest, text form
//! DIR/chunks/00000000.chunk  chunk 0's raw bytes, and so on; `cat
//!                            DIR/chunks/*` gives the file back
//! DIR/summary.txt            the chunk IDs this side holds, one a line,
//!                            rewritten (atomically) at most every 200 ms
//! ```
//!
//! Nothing unverified is ever stored: [`Store::put`] checks a chunk's
//! SHA-256 first, writes it under a temporary name and renames it into
//! place, so a crash leaves either the whole verified chunk or a `.tmp`
//! file that the next [`Store::open`] deletes. `open` re-hashes every
//! chunk file it finds, so a restart never trusts a stale or damaged
//! chunk. The in-memory set of held chunks sits behind one briefly held
//! lock; threads that want to hear about new chunks subscribe to a
//! channel instead of polling.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use sha2::{Digest as _, Sha256};

use crate::chunks::ChunkSet;
use crate::error::{Error, Result};
use crate::manifest::{self, ChunkId, Digest, Layout, Manifest};
use crate::wire;

/// The manifest's file name inside a swarm directory.
pub const MANIFEST_FILE: &str = "manifest";
/// The summary's file name inside a swarm directory.
pub const SUMMARY_FILE: &str = "summary.txt";
/// How often, at most, the summary is rewritten while chunks arrive; each
/// rewrite costs O(chunks), so once per chunk would be quadratic.
const SUMMARY_EVERY: Duration = Duration::from_millis(200);
/// The folder of chunk files inside a swarm directory.
pub const CHUNKS_DIR: &str = "chunks";

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

/// The chunk files of one file in one directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    manifest: Manifest,
    inner: Mutex<Inner>,
    /// Guards rewriting the summary file, so two writers never race.
    summary: Mutex<Summary>,
    /// The output file under construction, once a peer starts one.
    assembly: Mutex<Option<Assembly>>,
}

#[derive(Debug)]
struct Inner {
    have: ChunkSet,
    /// Requested from some link and not yet put: see `claim_missing`.
    claimed: ChunkSet,
    subscribers: Vec<Sender<ChunkId>>,
}

/// The output file while it is being built.
#[derive(Debug)]
struct Assembly {
    /// `.NAME.swarm-partial` beside `out`.
    partial: PathBuf,
    out: PathBuf,
    file: File,
    /// SHA-256 state over chunks `0..cursor`, in order.
    whole: Sha256,
    /// The first chunk not yet fed to `whole`.
    cursor: u32,
    buf: Vec<u8>,
}

impl Assembly {
    /// Feeds `whole` every held chunk from `cursor` on, reading each back
    /// from the output file (from the page cache, as it was just written).
    fn advance(&mut self, store: &Store) -> Result<()> {
        let layout = store.layout();
        while let Some(id) = layout.chunk_id(self.cursor) {
            if !store.has(id) {
                break;
            }
            self.buf.resize(layout.chunk_len(id), 0);
            self.file
                .read_exact_at(&mut self.buf, layout.offset(id))
                .map_err(|e| Error::io_path("read", &self.partial, e))?;
            self.whole.update(&self.buf);
            self.cursor += 1;
        }
        Ok(())
    }
}

/// The summary file's state: whether it lags behind the held set.
#[derive(Debug)]
struct Summary {
    dirty: bool,
    written: Option<Instant>,
}

/// The path of chunk `id` under `dir`.
pub fn chunk_path(dir: &Path, id: ChunkId) -> PathBuf {
    dir.join(CHUNKS_DIR).join(format!("{:08}.chunk", id.get()))
}

/// Writes `data` to `path` through a temporary file and a rename, so
/// `path` never holds a partial write. `sync` also flushes it to disk
/// first, for files that are not re-checked on restart.
pub fn write_atomic(path: &Path, data: &[u8], sync: bool) -> Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.{}-{n}.tmp", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(data)?;
        if sync {
            file.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io_path("write", path, e)
    })
}

/// Reads the cached manifest of `dir`, if there is one.
pub fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join(MANIFEST_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => Manifest::from_text(&text)
            .map(Some)
            .map_err(|e| Error::Manifest(format!("{}: {}", path.display(), inner_text(&e)))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io_path("read", path, e)),
    }
}

fn inner_text(err: &Error) -> String {
    match err {
        Error::Manifest(msg) => msg.clone(),
        other => other.to_string(),
    }
}

/// Creates `dir` and its chunk folder.
fn create_dirs(dir: &Path) -> Result<()> {
    let chunks = dir.join(CHUNKS_DIR);
    fs::create_dir_all(&chunks).map_err(|e| Error::io_path("create directory", chunks, e))
}

/// Reads `file` once, a chunk at a time, and returns its manifest. Memory
/// stays at one chunk whatever the file's size.
pub fn index(file: &Path, chunk_size: u32) -> Result<Manifest> {
    let mut input = File::open(file).map_err(|e| Error::io_path("open", file, e))?;
    let meta = input
        .metadata()
        .map_err(|e| Error::io_path("read", file, e))?;
    if !meta.is_file() {
        return Err(Error::io_path(
            "read",
            file,
            io::Error::other("not a regular file"),
        ));
    }
    let layout = Layout::new(meta.len(), chunk_size)?;
    let raw_name = file.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = manifest::plain_name(raw_name.as_deref().unwrap_or(""));
    let mut whole = Sha256::new();
    let mut hashes = Vec::with_capacity(layout.count() as usize);
    let mut buf = vec![0u8; chunk_size as usize];
    for id in layout.ids() {
        let data = &mut buf[..layout.chunk_len(id)];
        input.read_exact(data).map_err(|e| read_error(file, e))?;
        whole.update(&*data);
        hashes.push(manifest::sha256(data));
    }
    Manifest::new(name, layout, whole.finalize().into(), hashes)
}

fn read_error(file: &Path, e: io::Error) -> Error {
    let e = if e.kind() == io::ErrorKind::UnexpectedEof {
        io::Error::other("file shrank while being read")
    } else {
        e
    };
    Error::io_path("read", file, e)
}

/// Splits `file` into chunk files under `dir` in one go; see
/// [`index`], [`Store::open_owner`] and [`Store::split_from`]. Returns
/// the store and how many chunk files were kept.
pub fn split(file: &Path, dir: &Path, chunk_size: u32) -> Result<(Store, u32)> {
    let store = Store::open_owner(dir, index(file, chunk_size)?)?;
    let kept = store.split_from(file)?;
    Ok((store, kept))
}

/// Deletes chunk files that a different, earlier file left in `dir`
/// beyond the new chunk count, so `cat DIR/chunks/*` stays right.
fn remove_stale_chunks(dir: &Path, layout: &Layout) -> Result<()> {
    for (path, id) in list_chunk_files(dir)? {
        if id.is_none_or(|raw| layout.chunk_id(raw).is_none()) {
            let _ = fs::remove_file(path);
        }
    }
    Ok(())
}

/// Every file in `DIR/chunks` with the chunk index its name gives, or
/// `None` for temporary and foreign files.
fn list_chunk_files(dir: &Path) -> Result<Vec<(PathBuf, Option<u32>)>> {
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

impl Store {
    /// Opens `dir` for `manifest`: creates it if needed, caches the
    /// manifest, re-hashes every chunk file already there (keeping the
    /// good ones, deleting the rest) and rewrites the summary.
    pub fn open(dir: &Path, manifest: Manifest) -> Result<Store> {
        create_dirs(dir)?;
        let text = manifest.to_text();
        let path = dir.join(MANIFEST_FILE);
        if fs::read_to_string(&path).ok().as_deref() != Some(&text) {
            write_atomic(&path, text.as_bytes(), true)?;
        }
        let layout = *manifest.layout();
        let mut have = ChunkSet::new(layout.count());
        let mut buf = Vec::new();
        for (path, raw) in list_chunk_files(dir)? {
            let Some(id) = raw.and_then(|raw| layout.chunk_id(raw)) else {
                // A temporary file from an interrupted write, or junk.
                let _ = fs::remove_file(&path);
                continue;
            };
            buf.clear();
            let good = File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut buf))
                .is_ok()
                && manifest.verify(id, &buf);
            if good {
                have.insert(id);
            } else {
                log::warn!("dropping damaged chunk file {}", path.display());
                let _ = fs::remove_file(&path);
            }
        }
        Store::with_set(dir, manifest, have)
    }

    /// Opens `dir` for the owner of `manifest`: caches the manifest and
    /// deletes chunk files an earlier, longer file left beyond the chunk
    /// count. It holds no chunk until [`Store::split_from`] writes them.
    pub fn open_owner(dir: &Path, manifest: Manifest) -> Result<Store> {
        create_dirs(dir)?;
        remove_stale_chunks(dir, manifest.layout())?;
        let text = manifest.to_text();
        let path = dir.join(MANIFEST_FILE);
        if fs::read_to_string(&path).ok().as_deref() != Some(&text) {
            write_atomic(&path, text.as_bytes(), true)?;
        }
        let have = ChunkSet::new(manifest.layout().count());
        Store::with_set(dir, manifest, have)
    }

    /// Writes the chunk files of `file`, which must still match the
    /// manifest, and lists each as held as soon as it is on disk. A chunk
    /// file already there with exactly the right bytes (an owner
    /// restarted on an unchanged file) is kept rather than written again.
    /// Returns how many were kept.
    pub fn split_from(&self, file: &Path) -> Result<u32> {
        let mut input = File::open(file).map_err(|e| Error::io_path("open", file, e))?;
        let layout = *self.layout();
        let mut buf = vec![0u8; layout.chunk_size() as usize];
        let mut old = Vec::with_capacity(layout.chunk_size() as usize);
        let mut kept = 0;
        for id in layout.ids() {
            let data = &mut buf[..layout.chunk_len(id)];
            input.read_exact(data).map_err(|e| read_error(file, e))?;
            if !self.manifest.verify(id, data) {
                return Err(Error::Integrity(format!(
                    "{} changed while being split (chunk {id}); restart the owner",
                    file.display()
                )));
            }
            let path = chunk_path(&self.dir, id);
            old.clear();
            let same = fs::metadata(&path).is_ok_and(|m| m.len() == data.len() as u64)
                && File::open(&path)
                    .and_then(|mut f| f.read_to_end(&mut old))
                    .is_ok()
                && old == *data;
            if same {
                kept += 1;
            } else {
                write_atomic(&path, data, false)?;
            }
            self.mark_held(id);
        }
        self.flush_summary()?;
        Ok(kept)
    }

    /// Lists `id` as held and tells the subscribers; returns whether it
    /// was new.
    fn mark_held(&self, id: ChunkId) -> bool {
        let mut inner = self.lock();
        if !inner.have.insert(id) {
            return false;
        }
        inner.subscribers.retain(|tx| tx.send(id).is_ok());
        drop(inner);
        self.summary_changed();
        true
    }

    fn with_set(dir: &Path, manifest: Manifest, have: ChunkSet) -> Result<Store> {
        let store = Store {
            dir: dir.to_path_buf(),
            manifest,
            inner: Mutex::new(Inner {
                claimed: ChunkSet::new(have.capacity()),
                have,
                subscribers: Vec::new(),
            }),
            summary: Mutex::new(Summary {
                dirty: true,
                written: None,
            }),
            assembly: Mutex::new(None),
        };
        store.flush_summary()?;
        Ok(store)
    }

    /// Rewrites the summary file if chunks were gained or dropped since
    /// it was last written.
    pub fn flush_summary(&self) -> Result<()> {
        let mut summary = self.summary.lock().unwrap_or_else(|p| p.into_inner());
        if summary.dirty {
            self.write_summary(&mut summary)
        } else {
            Ok(())
        }
    }

    /// Notes a change to the held set; rewrites the summary unless it was
    /// written less than [`SUMMARY_EVERY`] ago (the coordinator's next
    /// [`Store::flush_summary`] catches up) or another thread is at it.
    fn summary_changed(&self) {
        let Ok(mut summary) = self.summary.try_lock() else {
            return;
        };
        summary.dirty = true;
        if summary
            .written
            .is_none_or(|at| at.elapsed() >= SUMMARY_EVERY)
            && let Err(e) = self.write_summary(&mut summary)
        {
            log::warn!("{e}");
        }
    }

    fn write_summary(&self, summary: &mut Summary) -> Result<()> {
        let have = self.snapshot();
        let mut text = String::with_capacity(have.len() as usize * 8);
        for id in have.iter(self.layout()) {
            text.push_str(&format!("{id}\n"));
        }
        write_atomic(&self.dir.join(SUMMARY_FILE), text.as_bytes(), false)?;
        summary.dirty = false;
        summary.written = Some(Instant::now());
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not take the store down with it: the
        // set is updated in single steps, so it is consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file this store holds chunks of.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The file's chunk layout.
    pub fn layout(&self) -> &Layout {
        self.manifest.layout()
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

    /// A channel that receives the ID of every chunk stored from now on,
    /// together with the set held at the moment of subscribing (so no
    /// chunk falls between the two).
    pub fn subscribe(&self) -> (ChunkSet, Receiver<ChunkId>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut inner = self.lock();
        inner.subscribers.push(tx);
        (inner.have.clone(), rx)
    }

    /// Claims up to `max` chunks that are neither held nor claimed by
    /// another link, marking them claimed: with `offered`, chunks from that
    /// set, lowest first (the ring); without, any missing chunk, highest
    /// first (the owner, working from the other end). A claim lasts until
    /// the chunk is put or [`Store::release`]d, so two links never fetch
    /// the same chunk at once.
    pub fn claim_missing(&self, offered: Option<&ChunkSet>, max: usize) -> Vec<ChunkId> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let ids = match offered {
            Some(set) => set.pick_missing(&[&inner.have, &inner.claimed], self.layout(), max),
            None => inner
                .have
                .pick_absent_from_end(&inner.claimed, self.layout(), max),
        };
        for &id in &ids {
            inner.claimed.insert(id);
        }
        ids
    }

    /// Gives up claims on chunks that will not arrive (a link went down).
    pub fn release(&self, ids: impl IntoIterator<Item = ChunkId>) {
        let mut inner = self.lock();
        for id in ids {
            inner.claimed.remove(id);
        }
    }

    /// Verifies `data` as chunk `id` and stores it.
    pub fn put(&self, id: ChunkId, data: &[u8]) -> Result<Put> {
        // Whatever happens to it, this chunk is no longer on its way.
        self.release([id]);
        if self.has(id) {
            return Ok(Put::Duplicate);
        }
        if !self.manifest.verify(id, data) {
            return Ok(Put::Corrupt);
        }
        // Chunk files are not fsynced: a restart re-hashes every one.
        write_atomic(&chunk_path(&self.dir, id), data, false)?;
        // Lock order: assembly, then inner. Holding the assembly lock from
        // the write into the output until the chunk is listed as held
        // means begin_assembly copies every chunk exactly once.
        let mut assembly = self.assembly.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = assembly.as_mut() {
            a.file
                .write_all_at(data, self.layout().offset(id))
                .map_err(|e| Error::io_path("write", &a.partial, e))?;
        }
        if !self.mark_held(id) {
            return Ok(Put::Duplicate);
        }
        if let Some(a) = assembly.as_mut() {
            if a.cursor == id.get() {
                // The next chunk in file order: hash it from memory.
                a.whole.update(data);
                a.cursor += 1;
            }
            a.advance(self)?;
        }
        Ok(Put::Stored)
    }

    /// Opens chunk `id` for reading. The caller must hold it.
    pub fn open_chunk(&self, id: ChunkId) -> Result<File> {
        let path = chunk_path(&self.dir, id);
        File::open(&path).map_err(|e| Error::io_path("open", path, e))
    }

    /// Writes chunk `id` to `w` as one CHUNK frame; the chunk's bytes go
    /// from the file to a socket without passing through user space
    /// (`io::copy` uses sendfile there). Returns the bytes of data sent.
    pub fn send_chunk<W: Write>(&self, id: ChunkId, w: &mut W) -> Result<u64> {
        let len = self.layout().chunk_len(id) as u64;
        let path = chunk_path(&self.dir, id);
        let file = self.open_chunk(id)?;
        let on_disk = file
            .metadata()
            .map_err(|e| Error::io_path("read", &path, e))?;
        if on_disk.len() != len {
            // Sending it would break the frame; a restart re-checks it.
            return Err(Error::Integrity(format!(
                "chunk file {} holds {} bytes instead of {len}",
                path.display(),
                on_disk.len()
            )));
        }
        w.write_all(&wire::chunk_header(id, len as usize))
            .map_err(|e| Error::io("send chunk", e))?;
        let sent = io::copy(&mut file.take(len), w).map_err(|e| Error::io("send chunk", e))?;
        if sent != len {
            return Err(Error::io(
                "send chunk",
                io::Error::other(format!("chunk file {} shrank", path.display())),
            ));
        }
        Ok(len)
    }

    /// Reads chunk `id` into `buf`, replacing its contents.
    pub fn read_chunk(&self, id: ChunkId, buf: &mut Vec<u8>) -> Result<()> {
        buf.clear();
        let path = chunk_path(&self.dir, id);
        File::open(&path)
            .and_then(|mut f| f.read_to_end(buf))
            .map_err(|e| Error::io_path("read", &path, e))?;
        Ok(())
    }

    /// Forgets chunk `id` and deletes its file, after it was found bad.
    fn drop_chunk(&self, id: ChunkId) {
        self.lock().have.remove(id);
        let _ = fs::remove_file(chunk_path(&self.dir, id));
        self.summary_changed();
    }

    /// Starts building the output file `out` as chunks arrive.
    ///
    /// The file is written as `.NAME.swarm-partial` beside `out`: every
    /// chunk held now is copied in, and every chunk stored from now on is
    /// written at its offset as it is stored. The whole-file SHA-256 is
    /// fed in order as the held prefix grows, so when the last chunk
    /// lands only the tail remains to hash. [`Store::finish_assembly`]
    /// checks it and renames the file into place.
    pub fn begin_assembly(&self, out: &Path) -> Result<()> {
        let mut slot = self.assembly.lock().unwrap_or_else(|p| p.into_inner());
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(|e| Error::io_path("create directory", &parent, e))?;
        let name = out.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_else(|| self.manifest.name().to_string());
        let partial = parent.join(format!(".{name}.swarm-partial"));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&partial)
            .map_err(|e| Error::io_path("create", &partial, e))?;
        let layout = *self.layout();
        file.set_len(layout.file_len())
            .map_err(|e| Error::io_path("size", &partial, e))?;
        let mut buf = Vec::with_capacity(layout.chunk_size() as usize);
        for id in self.snapshot().iter(&layout) {
            self.read_chunk(id, &mut buf)?;
            file.write_all_at(&buf, layout.offset(id))
                .map_err(|e| Error::io_path("write", &partial, e))?;
        }
        let mut assembly = Assembly {
            partial,
            out: out.to_path_buf(),
            file,
            whole: Sha256::new(),
            cursor: 0,
            buf,
        };
        assembly.advance(self)?;
        *slot = Some(assembly);
        Ok(())
    }

    /// Checks the whole-file SHA-256 of the assembled file, flushes it to
    /// disk and renames it to its final name, so that name only ever holds
    /// the whole verified file. Every chunk must be held.
    ///
    /// If the digest is wrong, every chunk file is re-checked, the bad ones
    /// are dropped (to be fetched again), assembly starts over and an
    /// error is returned.
    pub fn finish_assembly(&self) -> Result<Digest> {
        let mut slot = self.assembly.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut assembly) = slot.take() else {
            return Err(Error::Bug("finish_assembly without begin_assembly".into()));
        };
        assembly.advance(self)?;
        if assembly.cursor != self.layout().count() {
            let msg = format!(
                "assembly stopped at chunk {} of {}",
                assembly.cursor,
                self.layout().count()
            );
            *slot = Some(assembly);
            return Err(Error::Bug(msg));
        }
        let digest: Digest = assembly.whole.finalize_reset().into();
        let partial = assembly.partial.clone();
        if digest != *self.manifest.file_hash() {
            let out = assembly.out.clone();
            drop(assembly);
            let dropped = self.recheck();
            drop(slot);
            self.begin_assembly(&out)?;
            return Err(Error::Integrity(format!(
                "the joined file's SHA-256 is {} instead of {}; dropped {dropped} damaged chunks",
                manifest::to_hex(&digest),
                manifest::to_hex(self.manifest.file_hash()),
            )));
        }
        assembly
            .file
            .sync_all()
            .map_err(|e| Error::io_path("flush", &partial, e))?;
        fs::rename(&partial, &assembly.out)
            .map_err(|e| Error::io_path("rename to", &assembly.out, e))?;
        Ok(digest)
    }

    /// Starts writing the assembled part of the output to disk, so the
    /// flush at the end has little left to do. Called about once a second;
    /// the flush runs on a second handle, without holding any lock.
    pub fn sync_partial(&self) {
        let handle = {
            let slot = self.assembly.lock().unwrap_or_else(|p| p.into_inner());
            slot.as_ref().and_then(|a| a.file.try_clone().ok())
        };
        if let Some(file) = handle {
            let _ = file.sync_data();
        }
    }

    /// Assembles a store that holds every chunk into `out` in one go.
    pub fn assemble(&self, out: &Path) -> Result<Digest> {
        self.begin_assembly(out)?;
        self.finish_assembly()
    }

    /// Re-hashes every held chunk and drops the bad ones; returns how
    /// many were dropped.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A fresh directory under the system temp dir.
    fn temp_dir(name: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "swarm-store-{}-{name}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn split_sample(len: usize) -> (PathBuf, Vec<u8>, Store) {
        let dir = temp_dir("split");
        let data = pattern(len);
        let file = dir.join("input.bin");
        fs::write(&file, &data).unwrap();
        let (store, kept) = split(&file, &dir.join("owner"), 1024).unwrap();
        assert_eq!(kept, 0);
        (dir, data, store)
    }

    #[test]
    fn split_writes_raw_chunk_files_and_a_manifest() {
        for len in [0, 1, 1023, 1024, 1025, 5000] {
            let (dir, data, store) = split_sample(len);
            let owner = dir.join("owner");
            let mut files: Vec<_> = fs::read_dir(owner.join(CHUNKS_DIR))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            assert_eq!(files.len(), len.div_ceil(1024), "len {len}");
            let joined: Vec<u8> = files.iter().flat_map(|f| fs::read(f).unwrap()).collect();
            assert_eq!(joined, data, "cat of chunk files gives the file");
            let m = read_manifest(&owner).unwrap().unwrap();
            assert_eq!(&m, store.manifest());
            assert_eq!(m.name(), "input.bin");
            assert_eq!(*m.file_hash(), manifest::sha256(&data));
            assert!(store.is_complete());
            let summary = fs::read_to_string(owner.join(SUMMARY_FILE)).unwrap();
            assert_eq!(summary.lines().count(), len.div_ceil(1024));
        }
    }

    #[test]
    fn put_verifies_stores_and_notifies() {
        let (dir, data, owner) = split_sample(2500);
        let peer = Store::open(&dir.join("peer"), owner.manifest().clone()).unwrap();
        let (held, rx) = peer.subscribe();
        assert!(held.is_empty());
        let l = *peer.layout();
        let id1 = l.chunk_id(1).unwrap();
        let mut bad = data[1024..2048].to_vec();
        bad[5] ^= 1;
        assert_eq!(peer.put(id1, &bad).unwrap(), Put::Corrupt);
        assert_eq!(peer.put(id1, &data[1024..2047]).unwrap(), Put::Corrupt);
        assert!(!chunk_path(peer.dir(), id1).exists());
        assert_eq!(peer.put(id1, &data[1024..2048]).unwrap(), Put::Stored);
        assert_eq!(peer.put(id1, &data[1024..2048]).unwrap(), Put::Duplicate);
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![id1]);
        assert!(
            fs::read_dir(peer.dir())
                .unwrap()
                .all(|e| { !e.unwrap().file_name().to_string_lossy().ends_with(".tmp") })
        );
        // Written at most every 200 ms; a flush catches up.
        peer.flush_summary().unwrap();
        let summary = fs::read_to_string(peer.dir().join(SUMMARY_FILE)).unwrap();
        assert_eq!(summary, "1\n");
        let id0 = l.chunk_id(0).unwrap();
        assert_eq!(peer.put(id0, &data[..1024]).unwrap(), Put::Stored);
        peer.flush_summary().unwrap();
        let summary = fs::read_to_string(peer.dir().join(SUMMARY_FILE)).unwrap();
        assert_eq!(summary, "0\n1\n");
        let mut buf = Vec::new();
        peer.read_chunk(id1, &mut buf).unwrap();
        assert_eq!(buf, &data[1024..2048]);
    }

    #[test]
    fn open_keeps_good_chunks_and_drops_damaged_ones() {
        let (dir, data, owner) = split_sample(3000);
        let m = owner.manifest().clone();
        let l = *m.layout();
        let peer_dir = dir.join("peer");
        let peer = Store::open(&peer_dir, m.clone()).unwrap();
        for id in l.ids() {
            let at = l.offset(id) as usize;
            peer.put(id, &data[at..at + l.chunk_len(id)]).unwrap();
        }
        drop(peer);
        let id0 = l.chunk_id(0).unwrap();
        let id2 = l.chunk_id(2).unwrap();
        fs::write(chunk_path(&peer_dir, id0), b"garbage").unwrap();
        let tmp = peer_dir.join(CHUNKS_DIR).join(".00000001.chunk.1-1.tmp");
        fs::write(&tmp, b"partial").unwrap();
        let peer = Store::open(&peer_dir, m).unwrap();
        assert!(!peer.has(id0) && peer.has(id2) && peer.held() == 2);
        assert!(!tmp.exists() && !chunk_path(&peer_dir, id0).exists());
        let summary = fs::read_to_string(peer_dir.join(SUMMARY_FILE)).unwrap();
        assert_eq!(summary, "1\n2\n");
    }

    #[test]
    fn assemble_writes_the_verified_file_or_drops_bad_chunks() {
        let (dir, data, owner) = split_sample(2100);
        let out = dir.join("out").join("copy.bin");
        let digest = owner.assemble(&out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), data);
        assert_eq!(digest, manifest::sha256(&data));
        let id1 = owner.layout().chunk_id(1).unwrap();
        fs::write(chunk_path(owner.dir(), id1), vec![0u8; 1024]).unwrap();
        let out2 = dir.join("out").join("copy2.bin");
        let err = owner.assemble(&out2).unwrap_err().to_string();
        assert!(err.contains("dropped 1 damaged chunks"), "{err}");
        assert!(!out2.exists());
        assert!(!owner.has(id1));
        let mut left: Vec<_> = fs::read_dir(dir.join("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        // Assembly starts over; the only new file is clearly partial.
        assert_eq!(left, [".copy2.bin.swarm-partial", "copy.bin"]);
    }

    #[test]
    fn assembly_grows_as_chunks_arrive_in_any_order() {
        let (dir, data, owner) = split_sample(5000);
        let m = owner.manifest().clone();
        let l = *m.layout();
        let peer = Store::open(&dir.join("peer"), m).unwrap();
        let put = |i: u32| {
            let id = l.chunk_id(i).unwrap();
            let at = l.offset(id) as usize;
            assert_eq!(
                peer.put(id, &data[at..at + l.chunk_len(id)]).unwrap(),
                Put::Stored
            );
        };
        // One chunk before assembly starts, the rest out of order after.
        put(3);
        let out = dir.join("got.bin");
        peer.begin_assembly(&out).unwrap();
        for i in [4, 1, 0, 2] {
            put(i);
        }
        assert!(
            !out.exists(),
            "nothing under the final name before the check"
        );
        assert_eq!(peer.finish_assembly().unwrap(), manifest::sha256(&data));
        assert_eq!(fs::read(&out).unwrap(), data);
        assert!(!dir.join(".got.bin.swarm-partial").exists());
    }

    #[test]
    fn split_again_keeps_unchanged_chunks_and_replaces_changed_ones() {
        let (dir, mut data, first) = split_sample(5000);
        let owner = dir.join("owner");
        let file = dir.join("input.bin");
        drop(first);
        let (again, kept) = split(&file, &owner, 1024).unwrap();
        assert_eq!(kept, 5);
        let id = again.layout().chunk_id(2).unwrap();
        fs::write(chunk_path(&owner, id), b"damaged").unwrap();
        let (_, kept) = split(&file, &owner, 1024).unwrap();
        assert_eq!(kept, 4, "the damaged chunk file is rewritten");
        data[3000] ^= 0xFF;
        data.truncate(4000);
        fs::write(&file, &data).unwrap();
        let (changed, kept) = split(&file, &owner, 1024).unwrap();
        assert_eq!(kept, 2, "chunks 0 and 1 did not change");
        assert_eq!(changed.layout().count(), 4);
        assert_eq!(read_manifest(&owner).unwrap().unwrap(), *changed.manifest());
        let mut names: Vec<_> = fs::read_dir(owner.join(CHUNKS_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        let joined: Vec<u8> = names.iter().flat_map(|f| fs::read(f).unwrap()).collect();
        assert_eq!(joined, data, "the old fifth chunk file is gone");
    }

    #[test]
    fn split_reports_missing_files_and_directories() {
        let dir = temp_dir("missing");
        let err = split(&dir.join("nope.bin"), &dir.join("o"), 1024).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot open ")
                && err
                    .to_string()
                    .ends_with("nope.bin: no such file or directory"),
            "{err}"
        );
        let err = split(&dir, &dir.join("o"), 1024).unwrap_err();
        assert!(err.to_string().ends_with("not a regular file"), "{err}");
    }
}
