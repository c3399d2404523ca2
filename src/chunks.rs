//! Sets of chunks as bitsets.
//!
//! A [`ChunkSet`] answers "which chunks does this side hold" for the local
//! store, a neighbour's advertised list and the requests in flight. It
//! converts to and from the wire's bitfield (bit `i` of the list is chunk
//! `i`, most significant bit of each byte first).

use crate::manifest::{ChunkId, Layout};

/// A set of chunks of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkSet {
    words: Vec<u64>,
    capacity: u32,
    len: u32,
}

impl ChunkSet {
    /// An empty set for a file of `count` chunks.
    pub fn new(count: u32) -> ChunkSet {
        ChunkSet {
            words: vec![0; count.div_ceil(64) as usize],
            capacity: count,
            len: 0,
        }
    }

    /// How many chunks are in the set.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// How many chunks the file has.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the set holds every chunk of the file.
    pub fn is_full(&self) -> bool {
        self.len == self.capacity
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: ChunkId) -> bool {
        let i = id.index();
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    /// Adds `id`; returns whether it was new.
    pub fn insert(&mut self, id: ChunkId) -> bool {
        let i = id.index();
        let bit = 1 << (i % 64);
        let fresh = self.words[i / 64] & bit == 0;
        self.words[i / 64] |= bit;
        self.len += u32::from(fresh);
        fresh
    }

    /// Whether chunk number `raw` (below the capacity) is in the set.
    pub fn contains_raw(&self, raw: u32) -> bool {
        let i = raw as usize;
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    /// Adds chunk number `raw` (below the capacity); returns whether it
    /// was new.
    pub fn insert_raw(&mut self, raw: u32) -> bool {
        let i = raw as usize;
        let bit = 1 << (i % 64);
        let fresh = self.words[i / 64] & bit == 0;
        self.words[i / 64] |= bit;
        self.len += u32::from(fresh);
        fresh
    }

    /// Removes `id`; returns whether it was there.
    pub fn remove(&mut self, id: ChunkId) -> bool {
        let i = id.index();
        let bit = 1 << (i % 64);
        let present = self.words[i / 64] & bit != 0;
        self.words[i / 64] &= !bit;
        self.len -= u32::from(present);
        present
    }

    /// Adds every chunk of `other` (a set for the same file).
    pub fn union_with(&mut self, other: &ChunkSet) {
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w |= o;
        }
        self.recount();
    }

    /// Removes every chunk of `other` (a set for the same file).
    pub fn subtract(&mut self, other: &ChunkSet) {
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w &= !o;
        }
        self.recount();
    }

    /// The chunks of the file not in the set.
    pub fn complement(&self) -> ChunkSet {
        let mut out = ChunkSet::new(self.capacity);
        for (w, o) in out.words.iter_mut().zip(&self.words) {
            *w = !o;
        }
        if !self.capacity.is_multiple_of(64)
            && let Some(last) = out.words.last_mut()
        {
            *last &= (1u64 << (self.capacity % 64)) - 1;
        }
        out.recount();
        out
    }

    fn recount(&mut self) {
        self.len = self.words.iter().map(|w| w.count_ones()).sum();
    }

    /// The chunks in the set, in order.
    pub fn iter<'a>(&'a self, layout: &'a Layout) -> impl Iterator<Item = ChunkId> + 'a {
        layout.ids().filter(|&id| self.contains(id))
    }

    /// Up to `max` chunks that are in `include` (every chunk of the file
    /// when `None`) and in none of `exclude`, lowest first or, with
    /// `from_top`, highest first. Works a word (64 chunks) at a time.
    pub fn pick(
        layout: &Layout,
        include: Option<&ChunkSet>,
        exclude: &[&ChunkSet],
        max: usize,
        from_top: bool,
    ) -> Vec<ChunkId> {
        let words = layout.count().div_ceil(64) as usize;
        let mut out = Vec::new();
        let order: Box<dyn Iterator<Item = usize>> = if from_top {
            Box::new((0..words).rev())
        } else {
            Box::new(0..words)
        };
        for w in order {
            if out.len() >= max {
                break;
            }
            let mut bits = include.map_or(!0, |set| set.words[w]);
            for e in exclude {
                bits &= !e.words[w];
            }
            // Bits past the last chunk are in no set; without `include`
            // they would look wanted.
            let spare = layout.count() % 64;
            if w + 1 == words && spare != 0 {
                bits &= (1u64 << spare) - 1;
            }
            while bits != 0 && out.len() < max {
                let bit = if from_top {
                    63 - bits.leading_zeros()
                } else {
                    bits.trailing_zeros()
                };
                bits &= !(1u64 << bit);
                if let Some(id) = layout.chunk_id(w as u32 * 64 + bit) {
                    out.push(id);
                }
            }
        }
        out
    }

    /// The set as the wire's bitfield of `ceil(count / 8)` bytes.
    pub fn to_bitfield(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.capacity.div_ceil(8) as usize];
        for (i, byte) in out.iter_mut().enumerate() {
            let word = self.words[i / 8];
            let bits = (word >> ((i % 8) * 8)) as u8;
            *byte = bits.reverse_bits();
        }
        out
    }

    /// Parses the wire's bitfield; `None` if its length is wrong or a bit
    /// past the last chunk is set.
    pub fn from_bitfield(count: u32, bytes: &[u8]) -> Option<ChunkSet> {
        if bytes.len() != count.div_ceil(8) as usize {
            return None;
        }
        let mut set = ChunkSet::new(count);
        for (i, &byte) in bytes.iter().enumerate() {
            let bits = u64::from(byte.reverse_bits());
            set.words[i / 8] |= bits << ((i % 8) * 8);
            set.len += byte.count_ones();
        }
        let spare = count % 64;
        if spare != 0 {
            let last = *set.words.last()?;
            if last >> spare != 0 {
                return None;
            }
        }
        Some(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(count: u32) -> Layout {
        Layout::new(u64::from(count) * 1024, 1024).unwrap()
    }

    #[test]
    fn insert_remove_and_count() {
        let l = layout(130);
        let mut s = ChunkSet::new(130);
        let id = |i| l.chunk_id(i).unwrap();
        assert!(s.insert(id(0)));
        assert!(!s.insert(id(0)));
        assert!(s.insert(id(129)));
        assert_eq!(s.len(), 2);
        assert!(s.contains(id(129)) && !s.contains(id(64)));
        assert!(s.remove(id(0)));
        assert!(!s.remove(id(0)));
        assert_eq!(s.iter(&l).collect::<Vec<_>>(), vec![id(129)]);
        for i in 0..130 {
            s.insert(id(i));
        }
        assert!(s.is_full());
    }

    #[test]
    fn bitfield_round_trips_msb_first() {
        for count in [0, 1, 7, 8, 9, 63, 64, 65, 200] {
            let l = layout(count);
            let mut s = ChunkSet::new(count);
            for id in l.ids().filter(|id| id.get() % 3 == 0) {
                s.insert(id);
            }
            let bits = s.to_bitfield();
            assert_eq!(bits.len(), count.div_ceil(8) as usize);
            if count > 0 {
                assert_eq!(bits[0] & 0x80, 0x80, "chunk 0 is the top bit");
            }
            assert_eq!(ChunkSet::from_bitfield(count, &bits), Some(s));
        }
    }

    #[test]
    fn bitfield_rejects_wrong_length_and_spare_bits() {
        assert_eq!(ChunkSet::from_bitfield(9, &[0]), None);
        assert_eq!(ChunkSet::from_bitfield(9, &[0, 0, 0]), None);
        assert_eq!(ChunkSet::from_bitfield(9, &[0, 0x40]), None);
        assert!(ChunkSet::from_bitfield(9, &[0, 0x80]).is_some());
    }

    #[test]
    fn pick_skips_excluded_and_stops_at_max() {
        let l = layout(200);
        let id = |i| l.chunk_id(i).unwrap();
        let mut theirs = ChunkSet::new(200);
        let mut ours = ChunkSet::new(200);
        let mut asked = ChunkSet::new(200);
        for i in [1, 2, 3, 70, 150, 199] {
            theirs.insert(id(i));
        }
        ours.insert(id(2));
        asked.insert(id(70));
        let pick = |max, top| ChunkSet::pick(&l, Some(&theirs), &[&ours, &asked], max, top);
        assert_eq!(pick(10, false), vec![id(1), id(3), id(150), id(199)]);
        assert_eq!(pick(2, false), vec![id(1), id(3)]);
        assert_eq!(pick(2, true), vec![id(199), id(150)]);
    }

    #[test]
    fn pick_from_everything_goes_downwards_and_skips_spare_bits() {
        let l = layout(130);
        let id = |i| l.chunk_id(i).unwrap();
        let mut ours = ChunkSet::new(130);
        let mut asked = ChunkSet::new(130);
        ours.insert(id(129));
        asked.insert(id(127));
        let got = ChunkSet::pick(&l, None, &[&ours, &asked], 3, true);
        assert_eq!(got, vec![id(128), id(126), id(125)]);
        let got = ChunkSet::pick(&l, None, &[&ours, &asked], 2, false);
        assert_eq!(got, vec![id(0), id(1)]);
        for i in 0..130 {
            ours.insert(id(i));
        }
        assert!(ChunkSet::pick(&l, None, &[&ours], 3, true).is_empty());
    }
}
