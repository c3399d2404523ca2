//! The owner's index of its file: one pass that reads the file a chunk
//! at a time, cuts it (fixed chunks, or content-defined ones with FastCDC
//! through a bounded window) and hashes each chunk and
//! the whole file, giving the [`Manifest`] ([`index`]); and the split of
//! the file into the chunk files of its [`Store`] ([`Store::open_owner`],
//! [`Store::split_from`], or both at once with [`split`]). A peer never
//! does either: it takes the manifest from the owner and stores what it
//! verifies with [`Store::put`].

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use fastcdc::v2020::FastCDC;
use sha2::{Digest as _, Sha256};

use crate::chunks::ChunkSet;
use crate::error::{Error, Result};
use crate::manifest::{self, Chunking, Layout, MAX_CHUNKS, Manifest, content_sizes};
use crate::store::chunks::{chunk_len_range, remove_stale_chunks};
use crate::store::fs::{read_checked, write_chunk_file};
use crate::store::{Store, cache_manifest, chunk_path, create_dirs};

/// Reads `file` once, a chunk at a time, and returns its manifest, the
/// file cut as `chunking` says with `chunk_size` (the average, for content
/// chunking; see [`manifest::content_sizes`]). The whole-file SHA-256 is
/// computed on a second thread while this one reads and hashes each
/// chunk: the owner serves nothing until both are done, and on two cores
/// that cuts the wait (256 MiB on this VM: 0.33 to 0.35 s against 0.48 to
/// 0.69 s on one thread). Content chunking finds each boundary in the
/// same pass (`ContentCuts`).
/// Memory stays at a few chunks whatever the file's size: those queued
/// (`INDEX_QUEUE` bytes' worth of the longest chunk, and at least 2),
/// one being read and one being hashed, and for content chunking a window
/// of about two of the longest chunks.
pub fn index(file: &Path, chunk_size: u32, chunking: Chunking) -> Result<Manifest> {
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
    let file_len = meta.len();
    // Checks the chunk size (and a fixed layout's count) before reading.
    let fixed = match chunking {
        Chunking::Fixed => Some(Layout::new(file_len, chunk_size)?),
        Chunking::Content => {
            manifest::check_chunk_size(chunking, chunk_size)?;
            None
        }
    };
    let max_len = match chunking {
        Chunking::Fixed => chunk_size,
        Chunking::Content => content_sizes(chunk_size).2,
    };
    let raw_name = file.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = manifest::plain_name(raw_name.as_deref().unwrap_or(""));
    let depth = (INDEX_QUEUE / max_len as usize).max(2);
    let (full_tx, full_rx) = crossbeam_channel::bounded::<Vec<u8>>(depth);
    let (empty_tx, empty_rx) = crossbeam_channel::bounded::<Vec<u8>>(depth);
    let (hashes, lens, whole) = std::thread::scope(|scope| {
        let whole = scope.spawn(move || {
            let mut whole = Sha256::new();
            for buf in full_rx {
                whole.update(&buf);
                // The reader may have stopped (a read error); then the
                // buffer is simply dropped.
                let _ = empty_tx.try_send(buf);
            }
            whole.finalize()
        });
        let mut hashes = Vec::with_capacity(fixed.as_ref().map_or(0, |l| l.count() as usize));
        let mut lens = Vec::new();
        let read = (|| {
            let mut chunks = match &fixed {
                Some(layout) => Chunks::Fixed {
                    input: &mut input,
                    layout,
                    next: 0,
                },
                None => Chunks::Content(ContentCuts::new(&mut input, file_len, chunk_size)),
            };
            loop {
                let mut buf = empty_rx
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(max_len as usize));
                if !chunks
                    .next_into(&mut buf)
                    .map_err(|e| read_error(file, e))?
                {
                    return Ok(());
                }
                if hashes.len() == MAX_CHUNKS as usize {
                    return Err(Error::Manifest(format!(
                        "a {file_len}-byte file makes more than {MAX_CHUNKS} chunks \
                         of {chunk_size} bytes on average; use a larger chunk size"
                    )));
                }
                hashes.push(manifest::sha256(&buf));
                if fixed.is_none() {
                    lens.push(buf.len() as u32);
                }
                if full_tx.send(buf).is_err() {
                    return Err(Error::Bug("the whole-file hasher stopped".into()));
                }
            }
        })();
        drop(full_tx);
        let whole = whole
            .join()
            .map_err(|_| Error::Bug("the whole-file hasher panicked".into()));
        read.and(whole).map(|whole| (hashes, lens, whole))
    })?;
    let layout = match fixed {
        Some(layout) => layout,
        None => Layout::content(file_len, chunk_size, &lens)?,
    };
    Manifest::new(name, layout, whole.into(), hashes)
}

/// Bytes of read chunks [`index`] may queue for its whole-file hasher.
const INDEX_QUEUE: usize = 8 << 20;

/// Where [`index`] takes each chunk's bytes from, in order.
enum Chunks<'a> {
    /// Fixed chunks: the layout says how long each one is.
    Fixed {
        input: &'a mut File,
        layout: &'a Layout,
        next: u32,
    },
    /// Content-defined chunks, found as the file is read.
    Content(ContentCuts<&'a mut File>),
}

impl Chunks<'_> {
    /// Puts the next chunk's bytes in `buf`; false past the last chunk.
    fn next_into(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        match self {
            Chunks::Fixed {
                input,
                layout,
                next,
            } => {
                let Some(id) = layout.chunk_id(*next) else {
                    return Ok(false);
                };
                *next += 1;
                buf.resize(layout.chunk_len(id), 0);
                input.read_exact(buf)?;
                Ok(true)
            }
            Chunks::Content(cuts) => cuts.next_into(buf),
        }
    }
}

/// Bytes [`ContentCuts`] reads at a time, at least: the window holds
/// this much beyond the longest chunk.
const CUT_READ: usize = 2 << 20;

/// Content-defined chunk boundaries over a file read once, front to back,
/// through a window of bounded size: the longest chunk plus at least
/// [`CUT_READ`]. A boundary depends only on the bytes from the chunk's
/// start to at most the longest chunk's length past it, so a cut is taken
/// only with that much in the window (or the end of the file): the
/// boundaries are exactly those of `fastcdc::v2020::FastCDC` over the
/// whole file in memory.
struct ContentCuts<R> {
    input: R,
    /// Bytes of the file still to read; the file is read no further than
    /// the size it had when measured.
    unread: u64,
    window: Vec<u8>,
    /// Where the next chunk starts in `window`.
    start: usize,
    /// How much of `window` holds file bytes.
    end: usize,
    min: u32,
    avg: u32,
    max: u32,
}

impl<R: Read> ContentCuts<R> {
    fn new(input: R, file_len: u64, chunk_size: u32) -> ContentCuts<R> {
        let (min, avg, max) = content_sizes(chunk_size);
        let cap = max as usize + CUT_READ.max(max as usize);
        ContentCuts {
            input,
            unread: file_len,
            window: vec![0; cap.min(file_len as usize)],
            start: 0,
            end: 0,
            min,
            avg,
            max,
        }
    }

    /// Puts the next chunk's bytes in `buf`; false past the last chunk.
    /// Fails with `UnexpectedEof` if the file ends before its size.
    fn next_into(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        if self.end - self.start < self.max as usize && self.unread > 0 {
            self.refill()?;
        }
        let rest = &self.window[self.start..self.end];
        let Some(chunk) = FastCDC::new(rest, self.min, self.avg, self.max).next() else {
            return Ok(false);
        };
        buf.clear();
        buf.extend_from_slice(&rest[..chunk.length]);
        self.start += chunk.length;
        Ok(true)
    }

    /// Moves what is left of the window to its front and fills the rest.
    fn refill(&mut self) -> io::Result<()> {
        self.window.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < self.window.len() && self.unread > 0 {
            let room = (self.window.len() - self.end).min(self.unread as usize);
            let n = match self.input.read(&mut self.window[self.end..self.end + room]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.end += n;
            self.unread -= n as u64;
        }
        Ok(())
    }
}

/// A read error on the owner's source file; running out early means the
/// file shrank after it was measured.
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
pub fn split(file: &Path, dir: &Path, chunk_size: u32, chunking: Chunking) -> Result<(Store, u32)> {
    let store = Store::open_owner(dir, index(file, chunk_size, chunking)?)?;
    let kept = store.split_from(file, &AtomicBool::new(false), &|| {})?;
    Ok((store, kept))
}

impl Store {
    /// Opens `dir` for the owner of `manifest`: caches the manifest and
    /// deletes chunk files an earlier, longer file left beyond the chunk
    /// count. It holds no chunk until [`Store::split_from`] writes them.
    pub fn open_owner(dir: &Path, manifest: Manifest) -> Result<Store> {
        create_dirs(dir)?;
        remove_stale_chunks(dir, manifest.layout())?;
        cache_manifest(dir, &manifest)?;
        let have = ChunkSet::new(manifest.layout().count());
        Store::with_set(dir, manifest, have)
    }

    /// Writes the chunk files of `file`, which must still match the
    /// manifest, and lists each as held as soon as it is on disk. A chunk
    /// file already there with exactly the right bytes (an owner
    /// restarted on an unchanged file) is kept rather than written again.
    /// Returns how many were kept. Setting `stop` ends it early, between
    /// two chunks (its version is no longer served). `listed` is called
    /// after each chunk is listed as held, so that whoever waits for one
    /// can be woken rather than poll.
    pub fn split_from(&self, file: &Path, stop: &AtomicBool, listed: &dyn Fn()) -> Result<u32> {
        let mut input = File::open(file).map_err(|e| Error::io_path("open", file, e))?;
        let layout = self.layout();
        let mut buf = vec![0u8; layout.max_chunk_len() as usize];
        let mut old = Vec::with_capacity(layout.max_chunk_len() as usize);
        let mut kept = 0;
        for id in layout.ids() {
            if stop.load(Ordering::Acquire) {
                return Ok(kept);
            }
            if self.has(id) {
                // Taken over from the version before (see
                // `Store::open_after`): its chunk file is in place.
                let len = layout.chunk_len(id) as i64;
                input
                    .seek(io::SeekFrom::Current(len))
                    .map_err(|e| read_error(file, e))?;
                kept += 1;
                continue;
            }
            let data = &mut buf[..layout.chunk_len(id)];
            input.read_exact(data).map_err(|e| read_error(file, e))?;
            if !self.manifest().verify(id, data) {
                return Err(Error::Integrity(format!(
                    "{} changed while being split (chunk {id}); restart the owner",
                    file.display()
                )));
            }
            let path = chunk_path(self.dir(), id);
            let same =
                read_checked(&path, chunk_len_range(layout, id), &mut old).is_ok() && old == *data;
            if same {
                kept += 1;
            } else {
                write_chunk_file(&path, data)?;
            }
            self.mark_held(id);
            listed();
        }
        self.flush_summary()?;
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CHUNKS_DIR, SUMMARY_FILE, chunk_path, read_manifest};
    use crate::testdir::TestDir;
    use std::fs;

    fn temp_dir(name: &str) -> TestDir {
        TestDir::new(&format!("index-{name}"))
    }

    fn split_sample(len: usize) -> (TestDir, Vec<u8>, Store) {
        crate::testdir::split_sample("index-split", len)
    }

    /// `len` pseudo-random bytes (xorshift), the same for the same seed.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// Hands out at most `step` bytes a read, to move the window often.
    struct Dribble<'a>(&'a [u8], usize);

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn content_cuts_are_fastcdc_over_the_whole_file() {
        let data = noise(5 << 20, 3);
        for avg in [1024, 16 * 1024, 100 * 1024] {
            let (min, handed, max) = content_sizes(avg);
            let want: Vec<usize> = FastCDC::new(&data, min, handed, max)
                .map(|c| c.length)
                .collect();
            let mut cuts = ContentCuts::new(Dribble(&data, 100_000), data.len() as u64, avg);
            let mut got = Vec::new();
            let mut buf = Vec::new();
            let mut at = 0;
            while cuts.next_into(&mut buf).unwrap() {
                assert_eq!(
                    buf,
                    data[at..at + buf.len()],
                    "avg {avg}, chunk {}",
                    got.len()
                );
                at += buf.len();
                got.push(buf.len());
            }
            assert_eq!(got, want, "avg {avg}");
            assert!(got.len() > 30, "avg {avg}: {} chunks", got.len());
            assert!(got.iter().all(|&l| l <= max as usize));
            assert!(got[..got.len() - 1].iter().all(|&l| l >= min as usize));
        }
        // A file that ends before its measured size shrank.
        let mut cuts = ContentCuts::new(&data[..5000], 6000, 1024);
        let mut buf = Vec::new();
        let err = (0..10).try_for_each(|_| cuts.next_into(&mut buf).map(drop));
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn content_chunking_survives_an_insertion() {
        // 4 MiB, chunks of 16 KiB on average; 1000 bytes inserted at 10 %.
        let dir = temp_dir("insert");
        let old = noise(4 << 20, 7);
        let at = old.len() / 10;
        let mut new = old[..at].to_vec();
        new.extend_from_slice(&noise(1000, 11));
        new.extend_from_slice(&old[at..]);
        let (old_file, new_file) = (dir.join("old.bin"), dir.join("new.bin"));
        fs::write(&old_file, &old).unwrap();
        fs::write(&new_file, &new).unwrap();
        let fresh = |chunking| {
            let before = index(&old_file, 16 * 1024, chunking).unwrap();
            let after = index(&new_file, 16 * 1024, chunking).unwrap();
            let known: std::collections::HashSet<_> = before.chunk_hashes().iter().collect();
            let fresh = after.chunk_hashes().iter().filter(|h| !known.contains(h));
            (fresh.count(), after.layout().count() as usize)
        };
        let (changed, count) = fresh(Chunking::Content);
        assert!(changed <= 3, "content: {changed} of {count} chunks are new");
        assert!(count > 150, "{count} chunks");
        let (changed, count) = fresh(Chunking::Fixed);
        assert!(
            changed * 10 >= count * 8,
            "fixed: only {changed} of {count} chunks are new"
        );
    }

    #[test]
    fn content_chunking_handles_tiny_files() {
        let dir = temp_dir("cdc-tiny");
        // Empty, one byte, under the minimum, just over the maximum.
        for len in [0, 1, 255, 4097] {
            let data = noise(len, 9);
            let file = dir.join(format!("{len}.bin"));
            fs::write(&file, &data).unwrap();
            let m = index(&file, 1024, Chunking::Content).unwrap();
            let l = m.layout();
            let lens: Vec<usize> = l.ids().map(|id| l.chunk_len(id)).collect();
            assert_eq!(lens.iter().sum::<usize>(), len);
            assert_eq!(lens.is_empty(), len == 0);
            assert!(lens.iter().all(|&n| (1..=4096).contains(&n)), "{lens:?}");
            assert_eq!(Manifest::from_text(&m.to_text()).unwrap(), m);
        }
    }

    #[test]
    fn content_chunks_split_resume_and_reassemble() {
        let dir = temp_dir("cdc-split");
        let data = noise(300_000, 5);
        let file = dir.join("input.bin");
        fs::write(&file, &data).unwrap();
        let (owner, kept) = split(&file, &dir.join("owner"), 4096, Chunking::Content).unwrap();
        assert_eq!(kept, 0);
        let m = owner.manifest().clone();
        let l = m.layout();
        assert_eq!(l.chunking(), Chunking::Content);
        assert_eq!(*m.file_hash(), manifest::sha256(&data));
        let mut files: Vec<_> = fs::read_dir(dir.join("owner").join(CHUNKS_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(files.len(), l.count() as usize);
        let joined: Vec<u8> = files.iter().flat_map(|f| fs::read(f).unwrap()).collect();
        assert_eq!(joined, data, "cat of chunk files gives the file");
        let lens: std::collections::HashSet<usize> = l.ids().map(|id| l.chunk_len(id)).collect();
        assert!(lens.len() > 10, "chunk lengths vary: {lens:?}");
        assert_eq!(read_manifest(&dir.join("owner")).unwrap().unwrap(), m);
        // An unchanged restart keeps every chunk file.
        let (_, kept) = split(&file, &dir.join("owner"), 4096, Chunking::Content).unwrap();
        assert_eq!(kept, l.count());
        // A peer holding some chunks resumes from them and reassembles.
        let peer_dir = dir.join("peer");
        fs::create_dir_all(peer_dir.join(CHUNKS_DIR)).unwrap();
        for id in l.ids().step_by(3) {
            fs::copy(
                chunk_path(&dir.join("owner"), id),
                chunk_path(&peer_dir, id),
            )
            .unwrap();
        }
        let peer = Store::open(&peer_dir, m.clone()).unwrap();
        assert_eq!(peer.snapshot().len(), l.count().div_ceil(3));
        let mut buf = Vec::new();
        for id in l.ids() {
            owner.read_chunk(id, &mut buf).unwrap();
            peer.put(id, &buf).unwrap();
        }
        let out = dir.join("out.bin");
        peer.assemble(&out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), data);
        // An average whose longest chunk would pass 16 MiB is refused.
        let err = index(&file, 8 << 20, Chunking::Content).unwrap_err();
        assert!(err.to_string().contains("outside 1024..=4194304"), "{err}");
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
    fn split_again_keeps_unchanged_chunks_and_replaces_changed_ones() {
        let (dir, mut data, first) = split_sample(5000);
        let owner = dir.join("owner");
        let file = dir.join("input.bin");
        drop(first);
        let (again, kept) = split(&file, &owner, 1024, Chunking::Fixed).unwrap();
        assert_eq!(kept, 5);
        let id = again.layout().chunk_id(2).unwrap();
        fs::write(chunk_path(&owner, id), b"damaged").unwrap();
        let (_, kept) = split(&file, &owner, 1024, Chunking::Fixed).unwrap();
        assert_eq!(kept, 4, "the damaged chunk file is rewritten");
        data[3000] ^= 0xFF;
        data.truncate(4000);
        fs::write(&file, &data).unwrap();
        let (changed, kept) = split(&file, &owner, 1024, Chunking::Fixed).unwrap();
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
        let err = split(&dir.join("nope.bin"), &dir.join("o"), 1024, Chunking::Fixed).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot open ")
                && err
                    .to_string()
                    .ends_with("nope.bin: no such file or directory"),
            "{err}"
        );
        let err = split(dir.path(), &dir.join("o"), 1024, Chunking::Fixed).unwrap_err();
        assert!(err.to_string().ends_with("not a regular file"), "{err}");
    }
}
