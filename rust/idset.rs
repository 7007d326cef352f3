//! A set of job identifiers stored as 128-bit hashes.
//!
//! Resolving a source of millions of items must skip the ones already in the
//! log without holding millions of strings. A 128-bit XXH3 hash is exact for
//! any practical purpose: the chance of one collision among 10^9 identifiers
//! is below 10^-20.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// The 128-bit hash an identifier is stored as.
#[inline]
pub fn id_hash(identifier: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(identifier)
}

/// The keys are already uniform hashes: use their low 64 bits as is.
#[derive(Default, Clone, Copy)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for key types other than u128; fold them in.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type Table = HashSet<u128, BuildHasherDefault<PassThrough>>;

/// Exact-enough set of identifiers.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct IdSet {
    set: Table,
}

impl std::fmt::Debug for IdSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdSet(len {})", self.set.len())
    }
}

impl IdSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        IdSet {
            set: Table::with_capacity_and_hasher(n, Default::default()),
        }
    }

    /// Add; true if it was not there yet.
    pub fn add(&mut self, identifier: &str) -> bool {
        self.set.insert(id_hash(identifier.as_bytes()))
    }

    /// Add a hash made by [`id_hash`]; true if it was not there yet.
    pub fn add_hash(&mut self, hash: u128) -> bool {
        self.set.insert(hash)
    }

    /// Whether a hash made by [`id_hash`] is in the set.
    pub fn contains_hash(&self, hash: u128) -> bool {
        self.set.contains(&hash)
    }

    pub fn contains(&self, identifier: &str) -> bool {
        self.set.contains(&id_hash(identifier.as_bytes()))
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

impl Extend<u128> for IdSet {
    fn extend<I: IntoIterator<Item = u128>>(&mut self, iter: I) {
        self.set.extend(iter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_contains() {
        let mut s = IdSet::new();
        assert!(s.is_empty());
        assert!(s.add("nasa-apollo-11"));
        assert!(!s.add("nasa-apollo-11"));
        assert!(s.add("nasa-apollo-12"));
        assert!(s.add(""));
        assert!(s.add("café"));
        assert!(s.contains("nasa-apollo-11"));
        assert!(s.contains("café"));
        assert!(!s.contains("nasa-apollo-13"));
        assert!(!s.contains("cafe"));
        assert_eq!(s.len(), 4);
        assert!(!s.add_hash(id_hash(b"nasa-apollo-12")));
    }

    #[test]
    fn many_distinct_ids_stay_distinct() {
        let mut s = IdSet::with_capacity(200_000);
        for i in 0..200_000 {
            assert!(s.add(&format!("item-{i:08}")));
        }
        assert_eq!(s.len(), 200_000);
        for i in (0..200_000).step_by(997) {
            assert!(s.contains(&format!("item-{i:08}")));
        }
        assert!(!s.contains("item-00200000"));
        let mut t = IdSet::new();
        t.extend([id_hash(b"a"), id_hash(b"b"), id_hash(b"a")]);
        assert_eq!(t.len(), 2);
    }
}
