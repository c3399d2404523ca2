//! A peer's output file and its hash: the file is built as
//! `.NAME.swarm-partial` beside the output while chunks arrive (each
//! written at its offset by [`Store::put`], under the store's one lock),
//! started as a reflink clone of the version before where the file system
//! allows, checked chunk by chunk or also whole ([`OutputCheck`]), then
//! flushed and renamed into place by [`Store::finish_assembly`], so the
//! output's name only ever holds the whole verified file.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::fs::{allocate, clone_file, open_checked, real_dir, remove_entry, side_name};
use super::{FILES_DIR, OutputCheck, Store};
use crate::chunks::ChunkSet;
use crate::error::{Error, Result};
use crate::manifest::{self, ChunkId, Digest, Layout, Manifest};

/// The most chunks read back and hashed for the whole-file digest
/// (`--verify-output`) while the store's lock is held, beyond the chunk
/// just stored. Chunks held out of order wait their turn: each later
/// store catches up this many, and the finish hashes the rest with the
/// lock released. Without the bound, the chunk that closes a gap before a
/// long run of held chunks (a seed share is one) would hash the whole run
/// with the lock held, and stall every sender and store meanwhile.
pub(super) const CATCH_UP_UNDER_LOCK: u32 = 4;

/// The output file while it is being built.
#[derive(Debug)]
pub(super) struct Assembly {
    /// `.NAME.swarm-partial` beside `out` (see [`side_name`]).
    pub(super) partial: PathBuf,
    pub(super) out: PathBuf,
    pub(super) file: File,
    /// SHA-256 state over chunks `0..cursor`, in order; `None` when the
    /// file is checked chunk by chunk ([`OutputCheck::Chunks`]).
    pub(super) whole: Option<Sha256>,
    /// The first chunk not yet fed to `whole`.
    pub(super) cursor: u32,
    pub(super) buf: Vec<u8>,
}

impl Assembly {
    /// Writes chunk `id`'s verified bytes at its place; [`Store::put`]
    /// calls it under the store's lock, before it lists the chunk.
    pub(super) fn write(&self, layout: &Layout, id: ChunkId, data: &[u8]) -> Result<()> {
        self.file
            .write_all_at(data, layout.offset(id))
            .map_err(|e| Error::io_write("write", &self.partial, e))
    }

    /// After chunk `id` (`data`) was listed in `have`: hashes it from
    /// memory if it is the next in file order, then up to
    /// [`CATCH_UP_UNDER_LOCK`] held chunks that follow it.
    pub(super) fn hashed(
        &mut self,
        layout: &Layout,
        have: &ChunkSet,
        id: ChunkId,
        data: &[u8],
    ) -> Result<()> {
        let Some(whole) = self.whole.as_mut() else {
            return Ok(());
        };
        if self.cursor == id.get() {
            whole.update(data);
            self.cursor += 1;
        }
        self.advance_by(layout, have, CATCH_UP_UNDER_LOCK)
    }

    /// Feeds `whole` every chunk of `have` from `cursor` on, reading each
    /// back from the output file (from the page cache, as it was just
    /// written).
    pub(super) fn advance(&mut self, layout: &Layout, have: &ChunkSet) -> Result<()> {
        self.advance_by(layout, have, u32::MAX)
    }

    /// [`Assembly::advance`], by at most `most` chunks.
    pub(super) fn advance_by(&mut self, layout: &Layout, have: &ChunkSet, most: u32) -> Result<()> {
        let Some(whole) = self.whole.as_mut() else {
            return Ok(());
        };
        let stop = self.cursor.saturating_add(most);
        while let Some(id) = layout.chunk_id(self.cursor) {
            if !have.contains(id) || self.cursor == stop {
                break;
            }
            self.buf.resize(layout.chunk_len(id), 0);
            self.file
                .read_exact_at(&mut self.buf, layout.offset(id))
                .map_err(|e| Error::io_path("read", &self.partial, e))?;
            whole.update(&self.buf);
            self.cursor += 1;
        }
        Ok(())
    }
}

/// An output file created and sized by [`Store::start_assembly`], not
/// yet filled.
#[derive(Debug)]
pub struct StartedAssembly {
    assembly: Assembly,
    /// Where the file started as a clone of the version before: each of
    /// that version's chunks by offset, with its length and digest. A
    /// chunk of the new version found there is in the file already.
    cloned: Option<HashMap<u64, (usize, Digest)>>,
}

/// Where the output `out` of the file called `name` is assembled:
/// `.NAME.swarm-partial` beside it (see [`side_name`]).
fn partial_of(out: &Path, name: &str) -> PathBuf {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = match out.file_name() {
        Some(name) => name.to_os_string(),
        None => OsString::from(name),
    };
    parent.join(side_name(&name, ".", ".swarm-partial"))
}

impl Store {
    /// Starts building the output file `out` as chunks arrive.
    ///
    /// The file is written as `.NAME.swarm-partial` beside `out` (a name
    /// too long for that gets a cut one with a hash of the full name, so
    /// it fits in 255 bytes): every chunk held now
    /// is copied in, and every chunk stored from now on is written at its
    /// offset as it is stored. The whole-file SHA-256 is fed in order as
    /// the held prefix grows, so when the last chunk lands only the tail
    /// remains to hash. [`Store::finish_assembly`] checks it and renames
    /// the file into place. Whatever sat at the partial name (a symlink
    /// included) is removed and the file created afresh. (This is the
    /// [`OutputCheck::WholeFile`] assembly, as `--verify-output` has it;
    /// see [`Store::begin_assembly_checked`] for the other.)
    ///
    /// The chunks held when it starts are copied without holding the
    /// assembly lock, so chunks go on being stored meanwhile (as chunk
    /// files only); those are copied in at the end, under the lock. A peer
    /// that takes up a new version holds most of the file, and copying it
    /// must not stop its downloads.
    pub fn begin_assembly(&self, out: &Path) -> Result<()> {
        self.begin_assembly_checked(out, OutputCheck::WholeFile)
    }

    /// [`Store::begin_assembly`] with the check `check` at the end: with
    /// [`OutputCheck::Chunks`] nothing is hashed beyond what
    /// [`Store::put`] verifies, and the file is whole once every chunk is
    /// held.
    pub fn begin_assembly_checked(&self, out: &Path, check: OutputCheck) -> Result<()> {
        let started = self.start_assembly(out, None, check)?;
        self.fill_assembly(started).map(|_| ())
    }

    /// The first half of [`Store::begin_assembly`]: creates the output's
    /// partial file and allocates its blocks, so a disk too small for the
    /// file shows at once, before anything is fetched.
    ///
    /// With `before`, the manifest of the version this process verified
    /// and wrote to `out` last, the partial file is first made a clone of
    /// `out` (`FICLONE`: the two share blocks until either is written, on
    /// file systems with reflinks such as XFS and Btrfs), and the chunks
    /// found at their places in it are not written again: a new version
    /// then costs the disk only what changed. Elsewhere (ext4, tmpfs) the
    /// file is allocated and every chunk written, as without `before`.
    /// Either way every byte is checked: with [`OutputCheck::WholeFile`]
    /// the whole-file check reads every byte; with [`OutputCheck::Chunks`]
    /// each chunk found in the clone is hashed against its digest, and
    /// one that does not match is written from its chunk file.
    pub fn start_assembly(
        &self,
        out: &Path,
        before: Option<&Manifest>,
        check: OutputCheck,
    ) -> Result<StartedAssembly> {
        // An earlier assembly's partial file may be the one replaced
        // below; its state would no longer match any file.
        self.lock().assembly = None;
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if parent == self.dir.join(FILES_DIR) {
            // Inside DIR, like DIR/chunks: never write into a link's target.
            real_dir(&parent)?;
        } else {
            fs::create_dir_all(&parent)
                .map_err(|e| Error::io_write("create directory", &parent, e))?;
        }
        let partial = partial_of(out, self.manifest.name());
        remove_entry(&partial).map_err(|e| Error::io_path("remove", &partial, e))?;
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&partial)
            .map_err(|e| Error::io_write("create", &partial, e))?;
        let len = self.layout().file_len();
        let cloned = before.and_then(|before| {
            let old_len = before.layout().file_len();
            let (old, _) = open_checked(out, old_len..=old_len).ok()?;
            clone_file(&old, &file).ok()?;
            file.set_len(len).ok()?;
            let layout = before.layout();
            let places = layout
                .ids()
                .map(|id| {
                    let entry = (layout.chunk_len(id), *before.chunk_hash(id));
                    (layout.offset(id), entry)
                })
                .collect::<HashMap<_, _>>();
            Some(places)
        });
        if cloned.is_none()
            && let Err(e) = allocate(&file, len)
        {
            let _ = fs::remove_file(&partial);
            return Err(Error::io_write("size", &partial, e));
        }
        Ok(StartedAssembly {
            assembly: Assembly {
                partial,
                out: out.to_path_buf(),
                file,
                whole: (check == OutputCheck::WholeFile).then(Sha256::new),
                cursor: 0,
                buf: Vec::with_capacity(self.layout().max_chunk_len() as usize),
            },
            cloned,
        })
    }

    /// The second half of [`Store::begin_assembly`]: copies every chunk
    /// held into the started assembly, which from then on takes every
    /// chunk stored. Says how, for logs: "copied", or for a clone of the
    /// version before, "a clone of the earlier version's output".
    pub fn fill_assembly(&self, started: StartedAssembly) -> Result<&'static str> {
        let (mut assembly, cloned) = (started.assembly, started.cloned);
        let first = self.snapshot();
        let result = self
            .copy_in(&mut assembly, first.iter(self.layout()), cloned.as_ref())
            .and_then(|()| {
                // Under the lock from here until the assembly is in its
                // slot: every chunk listed meanwhile is copied here, every
                // one listed after is written by `put`.
                let held = self.lock();
                let since = held
                    .have
                    .iter(self.layout())
                    .filter(|&id| !first.contains(id));
                self.copy_in(&mut assembly, since, cloned.as_ref())?;
                assembly.advance_by(self.layout(), &held.have, CATCH_UP_UNDER_LOCK)?;
                Ok(held)
            });
        let how = if cloned.is_some() {
            "a clone of the earlier version's output"
        } else {
            "copied"
        };
        match result {
            Ok(mut held) => {
                held.assembly = Some(assembly);
                Ok(how)
            }
            // A retired store's partial file may already be the next
            // version's, under the same name.
            Err(e) if self.is_retired() => Err(e),
            Err(e) => {
                let _ = fs::remove_file(&assembly.partial);
                Err(e)
            }
        }
    }

    /// Copies chunks `ids` (held, in ID order) into a new assembly's file,
    /// but for those a clone of the version before has in place already,
    /// hashing the held prefix from memory as it goes.
    fn copy_in(
        &self,
        assembly: &mut Assembly,
        ids: impl Iterator<Item = ChunkId>,
        cloned: Option<&HashMap<u64, (usize, Digest)>>,
    ) -> Result<()> {
        let layout = self.layout();
        let partial = &assembly.partial;
        let mut buf = Vec::with_capacity(layout.max_chunk_len() as usize);
        for id in ids {
            if self.is_retired() {
                return Err(Error::Bug("the store was retired during assembly".into()));
            }
            let at = layout.offset(id);
            let len = layout.chunk_len(id);
            let in_place = cloned
                .and_then(|places| places.get(&at))
                .is_some_and(|(was, digest)| *was == len && digest == self.manifest.chunk_hash(id));
            let mut write = !in_place;
            if in_place {
                // Hashed as it is in the output, not as the chunk file
                // has it: the check must cover what the clone brought
                // along.
                buf.resize(len, 0);
                assembly
                    .file
                    .read_exact_at(&mut buf, at)
                    .map_err(|e| Error::io_path("read", partial, e))?;
                write = assembly.whole.is_none() && !self.manifest.verify(id, &buf);
            }
            if write {
                self.read_chunk(id, &mut buf)?;
                assembly
                    .file
                    .write_all_at(&buf, at)
                    .map_err(|e| Error::io_write("write", partial, e))?;
            }
            if assembly.cursor == id.get()
                && let Some(whole) = assembly.whole.as_mut()
            {
                // The held prefix is hashed from memory, not read back:
                // a peer resuming, or taking up a new version, holds most
                // of the file.
                whole.update(&buf);
                assembly.cursor += 1;
            }
        }
        Ok(())
    }

    /// Checks the assembled file as its [`OutputCheck`] says, flushes it
    /// to disk and renames it to its final name, so that name only ever
    /// holds the whole verified file. Every chunk must be held. Returns
    /// the whole-file SHA-256: computed over the file's bytes with
    /// [`OutputCheck::WholeFile`], the manifest's with
    /// [`OutputCheck::Chunks`] (every byte was verified with its chunk).
    ///
    /// If the digest is wrong, every chunk file is re-checked, the bad ones
    /// are dropped (to be fetched again), assembly starts over and an
    /// error is returned. On any other error the assembly stays as it
    /// was, so a later call can try again.
    pub fn finish_assembly(&self) -> Result<Digest> {
        let mut guard = self.lock();
        let held = &mut *guard;
        let count = self.layout().count();
        let Some(a) = held.assembly.as_mut() else {
            return Err(Error::Bug("finish_assembly without begin_assembly".into()));
        };
        if !held.have.is_full() {
            a.advance(self.layout(), &held.have)?;
            return Err(Error::Bug(match a.whole {
                Some(_) => format!("assembly stopped at chunk {} of {count}", a.cursor),
                None => format!("assembly holds {} of {count} chunks", held.have.len()),
            }));
        }
        // Every chunk is in the file: put writes each there before it
        // lists it, under the lock, and fill_assembly copied in every one
        // listed before. With every chunk held no put writes into it
        // again, so it is taken out and finished without the lock (the
        // tail's hash, the flush and the rename take time, and senders
        // must not wait for them); after an error other than a wrong
        // digest it goes back, so a later call can try again.
        let Some(mut assembly) = held.assembly.take() else {
            unreachable!("checked above");
        };
        let have = held.have.clone();
        drop(guard);
        let (digest, check) = match self.digest_of(&mut assembly, &have) {
            Ok(found) => found,
            Err(e) => return Err(self.put_back(assembly, e)),
        };
        if digest != *self.manifest.file_hash() {
            let dropped = self.recheck();
            self.begin_assembly_checked(&assembly.out, check)?;
            return Err(Error::Integrity(format!(
                "the joined file's SHA-256 is {} instead of {}; dropped {dropped} damaged chunks",
                manifest::to_hex(&digest),
                manifest::to_hex(self.manifest.file_hash()),
            )));
        }
        let placed = assembly
            .file
            .sync_all()
            .map_err(|e| Error::io_write("flush", &assembly.partial, e))
            .and_then(|()| {
                fs::rename(&assembly.partial, &assembly.out)
                    .map_err(|e| Error::io_write("rename to", &assembly.out, e))
            });
        match placed {
            Ok(()) => Ok(digest),
            Err(e) => Err(self.put_back(assembly, e)),
        }
    }

    /// The whole-file digest of a finished assembly of every chunk in
    /// `have` (all of them), as its [`OutputCheck`] says: computed over
    /// the file's bytes, or the manifest's when every byte was verified
    /// with its chunk. The hash's state is copied, so it survives a
    /// failed flush or rename.
    fn digest_of(&self, assembly: &mut Assembly, have: &ChunkSet) -> Result<(Digest, OutputCheck)> {
        assembly.advance(self.layout(), have)?;
        let count = self.layout().count();
        match &assembly.whole {
            Some(_) if assembly.cursor != count => Err(Error::Bug(format!(
                "assembly stopped at chunk {} of {count}",
                assembly.cursor
            ))),
            Some(whole) => Ok((whole.clone().finalize().into(), OutputCheck::WholeFile)),
            None => Ok((*self.manifest.file_hash(), OutputCheck::Chunks)),
        }
    }

    /// Puts an assembly taken out by [`Store::finish_assembly`] back in
    /// its slot after `e`, unless another took its place; returns `e`.
    fn put_back(&self, assembly: Assembly, e: Error) -> Error {
        let mut held = self.lock();
        if held.assembly.is_none() {
            held.assembly = Some(assembly);
        }
        e
    }

    /// Starts writing the assembled part of the output to disk, so the
    /// flush at the end has little left to do. Called about once a second;
    /// the flush runs on a second handle, without holding any lock.
    pub fn sync_partial(&self) {
        let handle = {
            let held = self.lock();
            held.assembly.as_ref().and_then(|a| a.file.try_clone().ok())
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
}
