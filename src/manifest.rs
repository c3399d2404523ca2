//! What a file is: its name, size, chunk layout and SHA-256 digests.
//!
//! [`Layout`] owns all size arithmetic (how many chunks, how long each one
//! is, where it starts) and is the only place a raw chunk index becomes a
//! [`ChunkId`]; code holding a `ChunkId` may index without checking again.
//! [`Manifest`] adds the name and the digests, and has one text form that
//! the owner writes and every peer caches in its directory:
//!
//! ```text
//! swarm manifest 1
//! name report.pdf
//! size 250000
//! chunk-size 102400
//! chunks 3
//! sha256 <64 hex digits of the whole file>
//! 0 <64 hex digits of chunk 0>
//! 1 <...>
//! 2 <...>
//! ```

use std::fmt;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// The chunk size used when `--chunk-size` is not given: 100 KiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 102_400;
/// The smallest chunk size accepted.
pub const MIN_CHUNK_SIZE: u32 = 1024;
/// The largest chunk size accepted; it bounds every frame on the wire.
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
/// The most chunks a file may have. It bounds the digests a peer keeps in
/// memory (128 MiB at the limit) and the chunk-ID list on the wire.
pub const MAX_CHUNKS: u32 = 1 << 22;
/// The longest file name, in bytes, that a manifest may carry.
pub const MAX_NAME_LEN: usize = 255;
/// The longest text form a valid manifest can have, in bytes: a header of
/// at most 512 (411 with a 255-byte name and the largest numbers) and one
/// line of at most 73 bytes per chunk. A cached manifest is read no
/// further than this, whatever the file claims to hold.
pub const MAX_TEXT_LEN: u64 = 512 + 73 * MAX_CHUNKS as u64;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Digest {
    Sha256::digest(data).into()
}

/// `digest` as the lowercase hex string `sha256sum` prints.
pub fn to_hex(digest: &Digest) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits into a digest.
pub fn from_hex(text: &str) -> Option<Digest> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A chunk index known to be in range for the file it was validated
/// against. Only [`Layout::chunk_id`] makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkId(u32);

impl ChunkId {
    /// The index as sent on the wire.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The index for slices and bitsets.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How a file of `file_len` bytes is cut into chunks of `chunk_size`; the
/// last chunk is shorter when the size is not a multiple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    file_len: u64,
    chunk_size: u32,
    count: u32,
}

impl Layout {
    /// Checks the chunk size and the resulting chunk count.
    pub fn new(file_len: u64, chunk_size: u32) -> Result<Layout> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(Error::Manifest(format!(
                "chunk size {chunk_size} is outside \
                 {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE} bytes"
            )));
        }
        let count = file_len.div_ceil(u64::from(chunk_size));
        if count > u64::from(MAX_CHUNKS) {
            return Err(Error::Manifest(format!(
                "a {file_len}-byte file makes {count} chunks of \
                 {chunk_size} bytes, more than the {MAX_CHUNKS} allowed; \
                 use a larger chunk size"
            )));
        }
        Ok(Layout {
            file_len,
            chunk_size,
            count: count as u32,
        })
    }

    /// The file's size in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The size of every chunk but (possibly) the last.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// How many chunks the file has (0 for an empty file).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Validates a raw index from the wire or from disk.
    pub fn chunk_id(&self, raw: u32) -> Option<ChunkId> {
        (raw < self.count).then_some(ChunkId(raw))
    }

    /// Every chunk, in order.
    pub fn ids(&self) -> impl Iterator<Item = ChunkId> + use<> {
        (0..self.count).map(ChunkId)
    }

    /// Where chunk `id` starts in the file.
    pub fn offset(&self, id: ChunkId) -> u64 {
        u64::from(id.0) * u64::from(self.chunk_size)
    }

    /// How many bytes chunk `id` holds.
    pub fn chunk_len(&self, id: ChunkId) -> usize {
        let rest = self.file_len - self.offset(id);
        rest.min(u64::from(self.chunk_size)) as usize
    }

    /// The largest frame (length field included) that any message about
    /// this file can need: a whole chunk, or the chunk-ID bitfield.
    pub fn frame_limit(&self) -> usize {
        let bitfield = self.count.div_ceil(8) as usize;
        64 + bitfield.max(self.chunk_size as usize)
    }
}

/// Reduces a file name from an untrusted source to a plain name that is
/// safe to create inside a directory: the last path component, without
/// control characters, never empty, `.` or `..`, at most 255 bytes.
pub fn plain_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let mut name: String = last.chars().filter(|c| !c.is_control()).collect();
    while name.len() > MAX_NAME_LEN {
        name.pop();
    }
    if name.is_empty() || name == "." || name == ".." {
        name = "file".to_string();
    }
    name
}

/// A file's name, layout and digests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    name: String,
    layout: Layout,
    file_hash: Digest,
    chunk_hashes: Vec<Digest>,
    /// The SHA-256 of the text form, computed once: every HELLO carries
    /// it, and the text of a large manifest is hundreds of MiB.
    id: Digest,
}

impl Manifest {
    /// Builds a manifest, checking that the parts agree. `name` must
    /// already be plain (see [`plain_name`]).
    pub fn new(
        name: String,
        layout: Layout,
        file_hash: Digest,
        chunk_hashes: Vec<Digest>,
    ) -> Result<Manifest> {
        if plain_name(&name) != name {
            return Err(Error::Manifest(format!(
                "file name {name:?} is not a plain file name"
            )));
        }
        if chunk_hashes.len() != layout.count() as usize {
            return Err(Error::Manifest(format!(
                "{} chunk digests for {} chunks",
                chunk_hashes.len(),
                layout.count()
            )));
        }
        let mut m = Manifest {
            name,
            layout,
            file_hash,
            chunk_hashes,
            id: [0; 32],
        };
        let mut hasher = Sha256::new();
        m.write_text(|part| hasher.update(part));
        m.id = hasher.finalize().into();
        Ok(m)
    }

    /// The original file's name, a plain name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The chunk layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The SHA-256 of the whole file.
    pub fn file_hash(&self) -> &Digest {
        &self.file_hash
    }

    /// The SHA-256 of chunk `id`.
    pub fn chunk_hash(&self, id: ChunkId) -> &Digest {
        &self.chunk_hashes[id.index()]
    }

    /// All chunk digests, in chunk order.
    pub fn chunk_hashes(&self) -> &[Digest] {
        &self.chunk_hashes
    }

    /// Whether `data` is exactly chunk `id`.
    pub fn verify(&self, id: ChunkId, data: &[u8]) -> bool {
        data.len() == self.layout.chunk_len(id) && sha256(data) == *self.chunk_hash(id)
    }

    /// Identifies this exact manifest: peers exchange it in their hello
    /// so that two peers never trade chunks of different files.
    pub fn id(&self) -> Digest {
        self.id
    }

    /// The text form described in the module documentation.
    pub fn to_text(&self) -> String {
        let mut out = Vec::with_capacity(200 + 73 * self.chunk_hashes.len());
        self.write_text(|part| out.extend_from_slice(part));
        // Every part is ASCII but the name, which is a `String`.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Hands the text form to `emit` a line at a time, so the ID can be
    /// hashed without building the whole text.
    fn write_text(&self, mut emit: impl FnMut(&[u8])) {
        emit(
            format!(
                "swarm manifest 1\nname {}\nsize {}\nchunk-size {}\nchunks {}\nsha256 {}\n",
                self.name,
                self.layout.file_len,
                self.layout.chunk_size,
                self.layout.count,
                to_hex(&self.file_hash)
            )
            .as_bytes(),
        );
        let mut line = Vec::with_capacity(80);
        for (i, hash) in self.chunk_hashes.iter().enumerate() {
            line.clear();
            line.extend_from_slice(i.to_string().as_bytes());
            line.push(b' ');
            for b in hash {
                line.push(HEX[usize::from(b >> 4)]);
                line.push(HEX[usize::from(b & 15)]);
            }
            line.push(b'\n');
            emit(&line);
        }
    }

    /// Parses and validates the text form.
    pub fn from_text(text: &str) -> Result<Manifest> {
        let bad = |what: &str| Error::Manifest(what.to_string());
        let mut lines = text.lines();
        if lines.next() != Some("swarm manifest 1") {
            return Err(bad("missing the 'swarm manifest 1' header"));
        }
        let mut field = |key: &str| -> Result<String> {
            let line = lines.next().unwrap_or("");
            match line.strip_prefix(key).and_then(|v| v.strip_prefix(' ')) {
                Some(value) => Ok(value.to_string()),
                None => Err(Error::Manifest(format!("expected a '{key}' line"))),
            }
        };
        let name = field("name")?;
        let size = field("size")?;
        let chunk_size = field("chunk-size")?;
        let chunks = field("chunks")?;
        let file_hash = field("sha256")?;
        let size: u64 = size.parse().map_err(|_| bad("size is not a number"))?;
        let chunk_size: u32 = chunk_size
            .parse()
            .map_err(|_| bad("chunk-size is not a number"))?;
        let chunks: u32 = chunks.parse().map_err(|_| bad("chunks is not a number"))?;
        let file_hash = from_hex(&file_hash).ok_or_else(|| bad("sha256 is not 64 hex digits"))?;
        let layout = Layout::new(size, chunk_size)?;
        if chunks != layout.count() {
            return Err(Error::Manifest(format!(
                "{chunks} chunks do not fit size {size} and chunk size \
                 {chunk_size}"
            )));
        }
        let mut chunk_hashes = Vec::with_capacity(chunks as usize);
        for (i, line) in lines.enumerate() {
            let hash = line
                .strip_prefix(&format!("{i} "))
                .and_then(from_hex)
                .ok_or_else(|| Error::Manifest(format!("line for chunk {i} is malformed")))?;
            chunk_hashes.push(hash);
        }
        Manifest::new(name, layout, file_hash, chunk_hashes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: u64, chunk: u32) -> Manifest {
        let layout = Layout::new(len, chunk).unwrap();
        let hashes = layout.ids().map(|id| sha256(&id.get().to_be_bytes()));
        Manifest::new(
            "data file.bin".into(),
            layout,
            sha256(b"whole"),
            hashes.collect(),
        )
        .unwrap()
    }

    #[test]
    fn layout_handles_odd_sizes() {
        let c = 1024u64;
        for (len, count, last) in [
            (0, 0, None),
            (1, 1, Some(1)),
            (c - 1, 1, Some(c - 1)),
            (c, 1, Some(c)),
            (c + 1, 2, Some(1)),
            (5 * c, 5, Some(c)),
        ] {
            let layout = Layout::new(len, c as u32).unwrap();
            assert_eq!(layout.count(), count, "len {len}");
            let last_len = layout
                .chunk_id(count.wrapping_sub(1))
                .map(|id| layout.chunk_len(id) as u64);
            assert_eq!(last_len, last, "len {len}");
            assert_eq!(layout.chunk_id(count), None);
            let total: u64 = layout.ids().map(|id| layout.chunk_len(id) as u64).sum();
            assert_eq!(total, len);
        }
    }

    #[test]
    fn layout_rejects_bad_chunk_sizes_and_huge_counts() {
        assert!(Layout::new(10, 0).is_err());
        assert!(Layout::new(10, MIN_CHUNK_SIZE - 1).is_err());
        assert!(Layout::new(10, MAX_CHUNK_SIZE + 1).is_err());
        let too_big = u64::from(MAX_CHUNKS) * 1024 + 1;
        let err = Layout::new(too_big, 1024).unwrap_err().to_string();
        assert!(err.contains("use a larger chunk size"), "{err}");
    }

    #[test]
    fn text_form_round_trips() {
        for len in [0, 1, 1023, 1024, 1025, 10_000] {
            let m = sample(len, 1024);
            let back = Manifest::from_text(&m.to_text()).unwrap();
            assert_eq!(back, m);
            assert_eq!(back.id(), m.id());
            assert_eq!(
                m.id(),
                sha256(m.to_text().as_bytes()),
                "the ID hashes the text"
            );
        }
    }

    #[test]
    fn text_form_rejects_inconsistent_manifests() {
        let good = sample(3000, 1024).to_text();
        let cases = [
            (good.replace("chunks 3", "chunks 4"), "do not fit"),
            (good.replace("size 3000", "size x"), "size is not a number"),
            (good.replace("\n2 ", "\n7 "), "chunk 2 is malformed"),
            (
                good.replacen("swarm manifest 1", "swarm manifest 2", 1),
                "header",
            ),
            (
                good.replace("name data file.bin", "name ../etc/passwd"),
                "plain",
            ),
            (
                good.lines().take(8).collect::<Vec<_>>().join("\n"),
                "3 chunks",
            ),
        ];
        for (text, want) in cases {
            let err = Manifest::from_text(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
    }

    #[test]
    fn plain_name_strips_paths_and_control_characters() {
        assert_eq!(plain_name("../../etc/passwd"), "passwd");
        assert_eq!(plain_name("/abs/x.bin"), "x.bin");
        assert_eq!(plain_name("a\\b\\c.txt"), "c.txt");
        assert_eq!(plain_name("bad\nname\u{7}"), "badname");
        assert_eq!(plain_name(".."), "file");
        assert_eq!(plain_name("dir/"), "file");
        assert_eq!(plain_name(&"é".repeat(200)).len(), 254);
    }

    #[test]
    fn max_text_len_bounds_the_longest_manifest() {
        // A 255-byte name and one chunk; only the digits of the size and
        // chunk-count lines, and the number of chunk lines, can grow.
        let one = Layout::new(1, MAX_CHUNK_SIZE).unwrap();
        let name = "n".repeat(MAX_NAME_LEN);
        let small = Manifest::new(name, one, [0xff; 32], vec![[0xff; 32]]).unwrap();
        let text = small.to_text();
        let first_line = format!("0 {}\n", to_hex(&[0xff; 32]));
        assert!(text.ends_with(&first_line));
        let header = text.len() - first_line.len();
        let biggest = Layout::new(
            u64::from(MAX_CHUNKS) * u64::from(MAX_CHUNK_SIZE),
            MAX_CHUNK_SIZE,
        )
        .unwrap();
        assert_eq!(biggest.count(), MAX_CHUNKS);
        let grow =
            (biggest.file_len().to_string().len() - 1) + (biggest.count().to_string().len() - 1);
        let last_line = format!("{} {}\n", MAX_CHUNKS - 1, to_hex(&[0xff; 32]));
        let worst = (header + grow) as u64 + u64::from(MAX_CHUNKS) * last_line.len() as u64;
        assert!(header + grow <= 512, "header of {} bytes", header + grow);
        assert!(worst <= MAX_TEXT_LEN, "{worst} > {MAX_TEXT_LEN}");
        assert!(MAX_TEXT_LEN - worst < 512, "the bound stays tight");
    }

    #[test]
    fn verify_checks_length_and_digest() {
        let layout = Layout::new(1500, 1024).unwrap();
        let data = vec![7u8; 1500];
        let hashes = vec![sha256(&data[..1024]), sha256(&data[1024..])];
        let m = Manifest::new("f".into(), layout, sha256(&data), hashes).unwrap();
        let last = layout.chunk_id(1).unwrap();
        assert!(m.verify(last, &data[1024..]));
        assert!(!m.verify(last, &data[1023..]));
        assert!(!m.verify(layout.chunk_id(0).unwrap(), &data[1024..]));
    }
}
