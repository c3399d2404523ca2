//! What a file is: its name, size, chunk layout and SHA-256 digests.
//!
//! [`Layout`] owns all size arithmetic (how many chunks, how long each one
//! is, where it starts) and is the only place a raw chunk index becomes a
//! [`ChunkId`]; code holding a `ChunkId` may index without checking again.
//! A file is cut in one of two ways ([`Chunking`]): into chunks of a fixed
//! size, where a chunk's place follows from its index, or where the
//! content says (FastCDC), so that bytes inserted into a file change only
//! the chunks around them; then the layout carries a table of where every
//! chunk ends. [`Shape`] is the part of a layout that fits in a MANIFEST
//! frame (no table), enough to bound every frame about the file.
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
//!
//! With content chunking, a `chunking` line names the algorithm and its
//! minimum, average and maximum chunk lengths, and each chunk line carries
//! the chunk's length, so the text (and the file ID, its SHA-256) fixes
//! every boundary:
//!
//! ```text
//! swarm manifest 1
//! name report.pdf
//! size 250000
//! chunk-size 102400
//! chunking fastcdc-2020 25600 92681 409600
//! chunks 3
//! sha256 <64 hex digits of the whole file>
//! 0 98304 <64 hex digits of chunk 0>
//! 1 120250 <...>
//! 2 31446 <...>
//! ```

use std::fmt;
use std::sync::Arc;

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
/// The largest average accepted for content chunking: its maximum chunk,
/// four times the average, must stay within [`MAX_CHUNK_SIZE`].
pub const MAX_CONTENT_CHUNK_SIZE: u32 = MAX_CHUNK_SIZE / 4;
/// The content-chunking algorithm, as the text form names it: FastCDC as
/// published in 2020 (Xia et al.), as the `fastcdc` crate's `v2020`
/// module implements it (its gear table, normalization level 1).
pub const CONTENT_ALGORITHM: &str = "fastcdc-2020";
/// The most chunks a file may have. It bounds the digests a peer keeps in
/// memory (128 MiB at the limit) and the chunk-ID list on the wire.
pub const MAX_CHUNKS: u32 = 1 << 22;
/// The longest file name, in bytes, that a manifest may carry.
pub const MAX_NAME_LEN: usize = 255;
/// The longest text form a valid manifest can have, in bytes: a header of
/// at most 512 (451 with a 255-byte name, a `chunking` line and the
/// largest numbers) and one line of at most 82 bytes per chunk (73
/// without a length). A cached manifest is read no further than this,
/// whatever the file claims to hold.
pub const MAX_TEXT_LEN: u64 = 512 + 82 * MAX_CHUNKS as u64;

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

/// How a file is cut into chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Chunking {
    /// Every chunk is `chunk_size` bytes but the last, which may be
    /// shorter; where a chunk starts follows from its index. One byte
    /// inserted near the start of a file moves every chunk after it.
    #[default]
    Fixed,
    /// Boundaries where a rolling hash over the content says
    /// ([`CONTENT_ALGORITHM`], see [`content_sizes`]): `chunk_size` is the
    /// average, and an insertion changes only the chunks around it.
    Content,
}

impl Chunking {
    /// The scheme's name on the command line and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Chunking::Fixed => "fixed",
            Chunking::Content => "content",
        }
    }

    /// The scheme called `name` on the command line.
    pub fn from_name(name: &str) -> Option<Chunking> {
        match name {
            "fixed" => Some(Chunking::Fixed),
            "content" => Some(Chunking::Content),
            _ => None,
        }
    }
}

impl fmt::Display for Chunking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The minimum, average and maximum chunk lengths handed to FastCDC for
/// content chunking with average `chunk_size`: a quarter, about once and
/// four times it. Every chunk but the last is at least the minimum (the
/// last may be shorter), and none is longer than the maximum.
///
/// The crate cuts with a mask of `round(log2(avg))` bits, so an average
/// whose logarithm's fraction is .5 or more would cut as if it were the
/// next power of two (102400 gives chunks of 134 KB on average, measured
/// on 64 MiB of random bytes). Such an average is handed over as the
/// largest value that still rounds down: 92681 for 102400, whose chunks
/// then average 97.5 KB.
pub fn content_sizes(chunk_size: u32) -> (u32, u32, u32) {
    let floor = 31 - chunk_size.max(1).leading_zeros();
    let cap = (f64::from(floor) + 0.5).exp2().floor() as u32;
    let avg = if f64::from(cap).log2().round() as u32 > floor {
        cap - 1
    } else {
        cap
    };
    (
        chunk_size / 4,
        chunk_size.min(avg),
        chunk_size.saturating_mul(4),
    )
}

/// What a MANIFEST frame says of a file's chunks: the scheme, the size,
/// the chunk size (the average, for content chunking) and the chunk count.
/// That is a [`Layout`] without its table of boundaries, and enough to
/// bound every frame about the file before the boundaries arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    file_len: u64,
    chunk_size: u32,
    chunking: Chunking,
    count: u32,
}

impl Shape {
    /// Checks that `count` chunks of `chunking` with `chunk_size` can make
    /// a file of `file_len` bytes: the chunk size is in bounds, the count
    /// is at most [`MAX_CHUNKS`], and for fixed chunking it is exactly
    /// `ceil(file_len / chunk_size)`; for content chunking, every chunk
    /// can hold 1 byte to the maximum.
    pub fn new(file_len: u64, chunk_size: u32, chunking: Chunking, count: u32) -> Result<Shape> {
        let shape = Shape {
            file_len,
            chunk_size,
            chunking,
            count,
        };
        let bad = |what: String| Err(Error::Manifest(what));
        match chunking {
            Chunking::Fixed => {
                let fixed = Shape::fixed(file_len, chunk_size)?;
                if fixed.count != count {
                    return bad(format!(
                        "{count} chunks do not fit size {file_len} and chunk size {chunk_size}"
                    ));
                }
            }
            Chunking::Content => {
                check_chunk_size(chunking, chunk_size)?;
                if count > MAX_CHUNKS {
                    return bad(too_many(file_len, count, chunk_size));
                }
                let max = u64::from(shape.max_chunk_len());
                if u64::from(count) > file_len || u64::from(count) * max < file_len {
                    return bad(format!(
                        "{count} chunks do not fit size {file_len} with content chunking \
                         of average {chunk_size}"
                    ));
                }
            }
        }
        Ok(shape)
    }

    /// The shape of a file of `file_len` bytes cut into `chunk_size`
    /// chunks.
    fn fixed(file_len: u64, chunk_size: u32) -> Result<Shape> {
        check_chunk_size(Chunking::Fixed, chunk_size)?;
        let count = file_len.div_ceil(u64::from(chunk_size));
        if count > u64::from(MAX_CHUNKS) {
            return Err(Error::Manifest(too_many(file_len, count, chunk_size)));
        }
        Ok(Shape {
            file_len,
            chunk_size,
            chunking: Chunking::Fixed,
            count: count as u32,
        })
    }

    /// The file's size in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The size of every chunk but (possibly) the last, for fixed
    /// chunking; the average, for content chunking.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// How the file is cut.
    pub fn chunking(&self) -> Chunking {
        self.chunking
    }

    /// How many chunks the file has (0 for an empty file).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The longest a chunk of this shape may be: `chunk_size` for fixed
    /// chunking; for content chunking the scheme's maximum, 4 times the
    /// average, whatever the chunks actually are. That is known from the
    /// MANIFEST alone, so both ends agree on the frame limit before the
    /// boundaries arrive, and it is what every buffer for a chunk is sized
    /// by.
    pub fn max_chunk_len(&self) -> u32 {
        match self.chunking {
            Chunking::Fixed => self.chunk_size,
            Chunking::Content => content_sizes(self.chunk_size).2,
        }
    }

    /// The largest frame (length field included) that any message about
    /// this file can need: a whole chunk of the longest length, or the
    /// chunk-ID bitfield.
    pub fn frame_limit(&self) -> usize {
        let bitfield = self.count.div_ceil(8) as usize;
        64 + bitfield.max(self.max_chunk_len() as usize)
    }
}

/// Checks `chunk_size` for `chunking`: 1024 to 16 MiB for fixed chunks,
/// an average of 1024 to 4 MiB for content chunking (whose longest chunk,
/// 4 times the average, must stay within 16 MiB).
pub fn check_chunk_size(chunking: Chunking, chunk_size: u32) -> Result<()> {
    let max = match chunking {
        Chunking::Fixed => MAX_CHUNK_SIZE,
        Chunking::Content => MAX_CONTENT_CHUNK_SIZE,
    };
    if (MIN_CHUNK_SIZE..=max).contains(&chunk_size) {
        return Ok(());
    }
    Err(Error::Manifest(match chunking {
        Chunking::Fixed => {
            format!("chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}..={max} bytes")
        }
        Chunking::Content => format!(
            "average chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}..={max} bytes \
             for content chunking (its longest chunk, 4 times the average, must be at \
             most {MAX_CHUNK_SIZE})"
        ),
    }))
}

fn too_many(file_len: u64, count: impl fmt::Display, chunk_size: u32) -> String {
    format!(
        "a {file_len}-byte file makes {count} chunks of \
         {chunk_size} bytes, more than the {MAX_CHUNKS} allowed; \
         use a larger chunk size"
    )
}

/// How a file is cut into chunks: its [`Shape`] and, for content
/// chunking, where each chunk ends. Cloning it is cheap (the table is
/// shared); code that only reads it should borrow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Shape,
    /// For content chunking, the end offset of every chunk (exclusive),
    /// ascending, the last one `file_len`; `None` for fixed chunking.
    ends: Option<Arc<[u64]>>,
}

impl Layout {
    /// A file of `file_len` bytes in chunks of `chunk_size` (the last
    /// shorter when the size is not a multiple); checks the chunk size and
    /// the resulting chunk count.
    pub fn new(file_len: u64, chunk_size: u32) -> Result<Layout> {
        Ok(Layout {
            shape: Shape::fixed(file_len, chunk_size)?,
            ends: None,
        })
    }

    /// A file of `file_len` bytes cut by content chunking of average
    /// `chunk_size` into chunks of `lens` bytes, in order. Checks the
    /// average, the count, that every length is 1 to the maximum (4 times
    /// the average) and that they add up to `file_len`.
    pub fn content(file_len: u64, chunk_size: u32, lens: &[u32]) -> Result<Layout> {
        let count = u32::try_from(lens.len()).unwrap_or(u32::MAX);
        let shape = Shape::new(file_len, chunk_size, Chunking::Content, count)?;
        let max = shape.max_chunk_len();
        let mut ends = Vec::with_capacity(lens.len());
        let mut end = 0u64;
        for (i, &len) in lens.iter().enumerate() {
            if !(1..=max).contains(&len) {
                return Err(Error::Manifest(format!(
                    "chunk {i} is {len} bytes long, outside 1..={max} for content \
                     chunking of average {chunk_size}"
                )));
            }
            end += u64::from(len);
            ends.push(end);
        }
        if end != file_len {
            return Err(Error::Manifest(format!(
                "the chunk lengths add up to {end} bytes, not the file's {file_len}"
            )));
        }
        Ok(Layout {
            shape,
            ends: Some(ends.into()),
        })
    }

    /// What a MANIFEST frame says of this layout.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// How the file is cut.
    pub fn chunking(&self) -> Chunking {
        self.shape.chunking
    }

    /// The file's size in bytes.
    pub fn file_len(&self) -> u64 {
        self.shape.file_len
    }

    /// The size of every chunk but (possibly) the last, for fixed
    /// chunking; the average, for content chunking. Size buffers by
    /// [`Layout::max_chunk_len`] instead.
    pub fn chunk_size(&self) -> u32 {
        self.shape.chunk_size
    }

    /// The longest any chunk of this layout may be (see
    /// [`Shape::max_chunk_len`]).
    pub fn max_chunk_len(&self) -> u32 {
        self.shape.max_chunk_len()
    }

    /// How many chunks the file has (0 for an empty file).
    pub fn count(&self) -> u32 {
        self.shape.count
    }

    /// Validates a raw index from the wire or from disk.
    pub fn chunk_id(&self, raw: u32) -> Option<ChunkId> {
        (raw < self.shape.count).then_some(ChunkId(raw))
    }

    /// Every chunk, in order.
    pub fn ids(&self) -> impl Iterator<Item = ChunkId> + use<> {
        (0..self.shape.count).map(ChunkId)
    }

    /// Where chunk `id` starts in the file.
    pub fn offset(&self, id: ChunkId) -> u64 {
        match &self.ends {
            None => u64::from(id.0) * u64::from(self.shape.chunk_size),
            Some(_) if id.0 == 0 => 0,
            Some(ends) => ends[id.index() - 1],
        }
    }

    /// How many bytes chunk `id` holds.
    pub fn chunk_len(&self, id: ChunkId) -> usize {
        match &self.ends {
            None => {
                let rest = self.shape.file_len - self.offset(id);
                rest.min(u64::from(self.shape.chunk_size)) as usize
            }
            Some(ends) => (ends[id.index()] - self.offset(id)) as usize,
        }
    }

    /// The largest frame (length field included) that any message about
    /// this file can need (see [`Shape::frame_limit`]).
    pub fn frame_limit(&self) -> usize {
        self.shape.frame_limit()
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
        let line = match self.layout.chunking() {
            Chunking::Fixed => 73,
            Chunking::Content => 82,
        };
        let mut out = Vec::with_capacity(300 + line * self.chunk_hashes.len());
        self.write_text(|part| out.extend_from_slice(part));
        // Every part is ASCII but the name, which is a `String`.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Hands the text form to `emit` a line at a time, so the ID can be
    /// hashed without building the whole text.
    fn write_text(&self, mut emit: impl FnMut(&[u8])) {
        let layout = &self.layout;
        let chunking = match layout.chunking() {
            Chunking::Fixed => String::new(),
            Chunking::Content => {
                let (min, avg, max) = content_sizes(layout.chunk_size());
                format!("chunking {CONTENT_ALGORITHM} {min} {avg} {max}\n")
            }
        };
        emit(
            format!(
                "swarm manifest 1\nname {}\nsize {}\nchunk-size {}\n{chunking}chunks {}\nsha256 {}\n",
                self.name,
                layout.file_len(),
                layout.chunk_size(),
                layout.count(),
                to_hex(&self.file_hash)
            )
            .as_bytes(),
        );
        let with_len = layout.chunking() == Chunking::Content;
        let mut line = Vec::with_capacity(88);
        for (id, hash) in layout.ids().zip(&self.chunk_hashes) {
            line.clear();
            line.extend_from_slice(id.get().to_string().as_bytes());
            line.push(b' ');
            if with_len {
                line.extend_from_slice(layout.chunk_len(id).to_string().as_bytes());
                line.push(b' ');
            }
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
        let mut lines = text.lines().peekable();
        if lines.next() != Some("swarm manifest 1") {
            return Err(bad("missing the 'swarm manifest 1' header"));
        }
        let value = |line: Option<&str>, key: &str| -> Result<String> {
            let line = line.unwrap_or("");
            match line.strip_prefix(key).and_then(|v| v.strip_prefix(' ')) {
                Some(value) => Ok(value.to_string()),
                None => Err(Error::Manifest(format!("expected a '{key}' line"))),
            }
        };
        let name = value(lines.next(), "name")?;
        let size = value(lines.next(), "size")?;
        let chunk_size = value(lines.next(), "chunk-size")?;
        let chunking = match lines.next_if(|l| l.starts_with("chunking ")) {
            Some(line) => Some(value(Some(line), "chunking")?),
            None => None,
        };
        let chunks = value(lines.next(), "chunks")?;
        let file_hash = value(lines.next(), "sha256")?;
        let size: u64 = size.parse().map_err(|_| bad("size is not a number"))?;
        let chunk_size: u32 = chunk_size
            .parse()
            .map_err(|_| bad("chunk-size is not a number"))?;
        let chunks: u32 = chunks.parse().map_err(|_| bad("chunks is not a number"))?;
        let file_hash = from_hex(&file_hash).ok_or_else(|| bad("sha256 is not 64 hex digits"))?;
        let scheme = match &chunking {
            None => Chunking::Fixed,
            Some(params) => {
                let (min, avg, max) = content_sizes(chunk_size);
                if *params != format!("{CONTENT_ALGORITHM} {min} {avg} {max}") {
                    return Err(Error::Manifest(format!(
                        "chunking must be '{CONTENT_ALGORITHM} {min} {avg} {max}' for \
                         chunk-size {chunk_size}, not '{params}'"
                    )));
                }
                Chunking::Content
            }
        };
        // Checks the count before anything is sized by it.
        Shape::new(size, chunk_size, scheme, chunks)?;
        let mut chunk_hashes = Vec::with_capacity(chunks as usize);
        let mut lens = Vec::new();
        for (i, line) in lines.enumerate() {
            let malformed = || Error::Manifest(format!("line for chunk {i} is malformed"));
            let mut rest = line.strip_prefix(&format!("{i} ")).ok_or_else(malformed)?;
            if scheme == Chunking::Content {
                let (len, hash) = rest.split_once(' ').ok_or_else(malformed)?;
                // Decimal with no sign, as the text form writes it.
                if !len.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(malformed());
                }
                lens.push(len.parse::<u32>().map_err(|_| malformed())?);
                rest = hash;
            }
            chunk_hashes.push(from_hex(rest).ok_or_else(malformed)?);
        }
        let layout = match scheme {
            Chunking::Fixed => Layout::new(size, chunk_size)?,
            Chunking::Content => {
                if lens.len() != chunks as usize {
                    return Err(Error::Manifest(format!(
                        "{} chunk lines for {chunks} chunks",
                        lens.len()
                    )));
                }
                Layout::content(size, chunk_size, &lens)?
            }
        };
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
    fn content_averages_are_handed_over_below_the_next_power_of_two() {
        assert_eq!(content_sizes(102_400), (25_600, 92_681, 409_600));
        assert_eq!((92_681f64).log2().round(), 16.0);
        assert_eq!(content_sizes(1024), (256, 1024, 4096));
        assert_eq!(content_sizes(4096), (1024, 4096, 16_384));
        assert_eq!(content_sizes(1500).1, 1448);
        assert_eq!(content_sizes(4 << 20).1, 4 << 20);
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
        let name = "n".repeat(MAX_NAME_LEN);
        let longest = MAX_CONTENT_CHUNK_SIZE * 4;
        let one = Layout::content(u64::from(longest), MAX_CONTENT_CHUNK_SIZE, &[longest]).unwrap();
        let small = Manifest::new(name, one, [0xff; 32], vec![[0xff; 32]]).unwrap();
        let text = small.to_text();
        let first_line = format!("0 {longest} {}\n", to_hex(&[0xff; 32]));
        assert!(text.ends_with(&first_line), "{text}");
        let header = text.len() - first_line.len();
        // The largest file: every chunk as long as a chunk can be.
        let biggest = u64::from(MAX_CHUNKS) * u64::from(MAX_CHUNK_SIZE);
        Layout::new(biggest, MAX_CHUNK_SIZE).unwrap();
        let grow = (biggest.to_string().len() - longest.to_string().len())
            + (MAX_CHUNKS.to_string().len() - 1);
        let last_line = format!("{} {longest} {}\n", MAX_CHUNKS - 1, to_hex(&[0xff; 32]));
        let worst = (header + grow) as u64 + u64::from(MAX_CHUNKS) * last_line.len() as u64;
        assert!(header + grow <= 512, "header of {} bytes", header + grow);
        assert!(worst <= MAX_TEXT_LEN, "{worst} > {MAX_TEXT_LEN}");
        assert!(MAX_TEXT_LEN - worst < 512, "the bound stays tight");
        // Fixed chunking's lines are shorter and it has no chunking line.
        let fixed = sample(1, MAX_CHUNK_SIZE).to_text();
        assert!(fixed.len() < text.len());
    }

    #[test]
    fn verify_checks_length_and_digest() {
        let layout = Layout::new(1500, 1024).unwrap();
        let data = vec![7u8; 1500];
        let hashes = vec![sha256(&data[..1024]), sha256(&data[1024..])];
        let m = Manifest::new("f".into(), layout.clone(), sha256(&data), hashes).unwrap();
        let last = layout.chunk_id(1).unwrap();
        assert!(m.verify(last, &data[1024..]));
        assert!(!m.verify(last, &data[1023..]));
        assert!(!m.verify(layout.chunk_id(0).unwrap(), &data[1024..]));
    }

    /// A content-chunked manifest of chunks `lens` bytes long.
    fn sample_content(lens: &[u32], avg: u32) -> Manifest {
        let len = lens.iter().map(|&l| u64::from(l)).sum();
        let layout = Layout::content(len, avg, lens).unwrap();
        let hashes = layout.ids().map(|id| sha256(&id.get().to_be_bytes()));
        Manifest::new("cdc.bin".into(), layout, sha256(b"whole"), hashes.collect()).unwrap()
    }

    #[test]
    fn content_layout_follows_its_table() {
        let l = Layout::content(10_000, 1024, &[3000, 4096, 1, 2903]).unwrap();
        assert_eq!(l.chunking(), Chunking::Content);
        assert_eq!(
            (l.count(), l.chunk_size(), l.max_chunk_len()),
            (4, 1024, 4096)
        );
        let got: Vec<(u64, usize)> = l.ids().map(|id| (l.offset(id), l.chunk_len(id))).collect();
        assert_eq!(got, [(0, 3000), (3000, 4096), (7096, 1), (7097, 2903)]);
        assert_eq!(l.chunk_id(4), None);
        // The frame limit bounds a chunk of the longest length.
        assert_eq!(l.frame_limit(), 64 + 4096);
        let empty = Layout::content(0, 1024, &[]).unwrap();
        assert_eq!((empty.count(), empty.chunk_id(0)), (0, None));
        // Fixed chunking is what it was.
        let f = Layout::new(2500, 1024).unwrap();
        assert_eq!(
            (f.chunking(), f.max_chunk_len(), f.frame_limit()),
            (Chunking::Fixed, 1024, 1088)
        );
    }

    #[test]
    fn content_layout_rejects_bad_tables() {
        let cases: [(u64, u32, &[u32], &str); 6] = [
            (
                10,
                1024,
                &[4, 0, 6],
                "chunk 1 is 0 bytes long, outside 1..=4096",
            ),
            (5000, 1024, &[4097, 3], "chunk 0 is 4097 bytes long"),
            (10, 1024, &[4, 5], "add up to 9 bytes, not the file's 10"),
            (1, 1024, &[1, 0], "2 chunks do not fit size 1"),
            (
                10,
                1000,
                &[10],
                "average chunk size 1000 is outside 1024..=4194304",
            ),
            (10, MAX_CONTENT_CHUNK_SIZE + 1, &[10], "4 times the average"),
        ];
        for (len, avg, lens, want) in cases {
            let err = Layout::content(len, avg, lens).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
        // The count is checked before any table is built from it.
        let err = Shape::new(1 << 40, 1024, Chunking::Content, MAX_CHUNKS + 1).unwrap_err();
        assert!(err.to_string().contains("use a larger chunk size"), "{err}");
        let err = Shape::new(100_000, 1024, Chunking::Content, 2).unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
        let err = Shape::new(3000, 1024, Chunking::Fixed, 2).unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
        assert!(Shape::new(3000, 1024, Chunking::Fixed, 3).is_ok());
        assert!(Shape::new(3000, 1024, Chunking::Content, 1).is_ok());
    }

    #[test]
    fn content_text_form_round_trips_and_names_every_length() {
        for lens in [&[][..], &[1], &[4096, 1, 300], &[1024; 9]] {
            let m = sample_content(lens, 1024);
            let text = m.to_text();
            assert!(
                text.contains("\nchunk-size 1024\nchunking fastcdc-2020 256 1024 4096\nchunks ")
            );
            let back = Manifest::from_text(&text).unwrap();
            assert_eq!(back, m);
            assert_eq!(back.id(), m.id());
            assert_eq!(m.id(), sha256(text.as_bytes()), "the ID hashes the text");
        }
        let m = sample_content(&[4096, 1, 300], 1024);
        let line = format!(
            "\n1 1 {}\n",
            to_hex(m.chunk_hash(m.layout().chunk_id(1).unwrap()))
        );
        assert!(m.to_text().contains(&line), "{}", m.to_text());
        // The same chunks cut elsewhere make another file ID.
        assert_ne!(m.id(), sample_content(&[4095, 2, 300], 1024).id());
    }

    #[test]
    fn content_text_form_rejects_inconsistent_tables() {
        let good = sample_content(&[4096, 1, 300], 1024).to_text();
        let cases = [
            (
                good.replace("\n1 1 ", "\n1 2 "),
                "add up to 4398 bytes, not the file's 4397",
            ),
            (good.replace("\n1 1 ", "\n1 0 "), "chunk 1 is 0 bytes long"),
            (
                good.replace("\n0 4096 ", "\n0 +4096 "),
                "chunk 0 is malformed",
            ),
            (good.replace("\n2 300 ", "\n2 "), "chunk 2 is malformed"),
            (
                good.replace("chunks 3", "chunks 4"),
                "3 chunk lines for 4 chunks",
            ),
            (
                good.replace(" 256 1024 4096", " 256 1024 8192"),
                "chunking must be 'fastcdc-2020 256 1024 4096'",
            ),
            (good.replace("fastcdc-2020", "rabin"), "chunking must be"),
            (
                good.replace("chunk-size 1024", "chunk-size 8388608")
                    .replace(" 256 1024 4096", " 2097152 8388608 33554432"),
                "outside 1024..=4194304",
            ),
            (
                good.replace("chunks 3", "chunks 9000"),
                "9000 chunks do not fit size 4397",
            ),
        ];
        for (text, want) in cases {
            let err = Manifest::from_text(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
    }

    #[test]
    fn the_test_vectors_of_the_protocol_spec_hold() {
        let empty = Manifest::new(
            "empty.bin".into(),
            Layout::new(0, 102_400).unwrap(),
            sha256(b""),
            vec![],
        )
        .unwrap();
        assert_eq!(
            to_hex(&empty.id()),
            "2352aaa160ae8c6df60d8e66593c42a63e945b9008580c52a46d4b75503995f7"
        );
        let hello = b"hello\n";
        let fixed = Manifest::new(
            "a.txt".into(),
            Layout::new(6, 1024).unwrap(),
            sha256(hello),
            vec![sha256(hello)],
        )
        .unwrap();
        assert_eq!(
            to_hex(&fixed.id()),
            "fa38f4546ee07702657d4c248c4547a92a8c7281353e461c287a0f2d272752b9"
        );
        let content = Manifest::new(
            "a.txt".into(),
            Layout::content(6, 1024, &[6]).unwrap(),
            sha256(hello),
            vec![sha256(hello)],
        )
        .unwrap();
        assert_eq!(
            to_hex(&content.id()),
            "f0299c7962f43c7b38f13311ae45f5ea25146b873205ae70e490daee0e536d0e"
        );
    }
}
