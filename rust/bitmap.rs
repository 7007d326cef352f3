//! A growable bitset for the resume bitmap, capped at [`MAX_SEQ`].

use std::fmt;

/// The largest seq a job log may use; the bitmap holds `0..=MAX_SEQ`.
pub const MAX_SEQ: u64 = 100_000_000;

const MAX_WORDS: usize = (MAX_SEQ as usize) / 64 + 1;

/// `n` is negative or above [`MAX_SEQ`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange(pub i128);

impl fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is out of range 0..={MAX_SEQ}", self.0)
    }
}

impl std::error::Error for OutOfRange {}

/// Set of integers in `0..=MAX_SEQ`, one bit each, grown on demand (12.5 MB
/// at the cap). Keeps its member count so `len` is O(1).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Bitmap {
    words: Vec<u64>,
    count: u64,
}

impl fmt::Debug for Bitmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bitmap")
            .field("len", &self.count)
            .field("words", &self.words.len())
            .finish()
    }
}

fn check(n: i128) -> Result<usize, OutOfRange> {
    if (0..=i128::from(MAX_SEQ)).contains(&n) {
        Ok(n as usize)
    } else {
        Err(OutOfRange(n))
    }
}

impl Bitmap {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty bitmap with room for `bits` members (clamped to the cap).
    pub fn with_capacity(bits: u64) -> Self {
        let words = (bits.min(MAX_SEQ + 1) as usize).div_ceil(64);
        Bitmap {
            words: vec![0; words],
            count: 0,
        }
    }

    /// Build from whole words (bit `i` of word `w` is member `64 * w + i`).
    /// Words beyond the cap are dropped, as are bits above `MAX_SEQ`.
    pub fn from_words(mut words: Vec<u64>) -> Self {
        words.truncate(MAX_WORDS);
        if words.len() == MAX_WORDS {
            let keep = (MAX_SEQ % 64) + 1; // bits used in the last word
            if keep < 64 {
                words[MAX_WORDS - 1] &= (1u64 << keep) - 1;
            }
        }
        while words.last() == Some(&0) {
            words.pop();
        }
        words.shrink_to_fit();
        let count = words.iter().map(|w| u64::from(w.count_ones())).sum();
        Bitmap { words, count }
    }

    fn grow_to(&mut self, word: usize) {
        if word < self.words.len() {
            return;
        }
        // Grow geometrically, but never past the cap, so that `size_bytes`
        // stays at 12.5 MB at most.
        let target = (word + 1).max(self.words.len() * 2).min(MAX_WORDS);
        self.words.reserve_exact(target - self.words.len());
        self.words.resize(target, 0);
    }

    /// Add `n`; true if it was not a member yet.
    pub fn set(&mut self, n: i128) -> Result<bool, OutOfRange> {
        let n = check(n)?;
        self.grow_to(n / 64);
        let w = &mut self.words[n / 64];
        let bit = 1u64 << (n % 64);
        let new = *w & bit == 0;
        *w |= bit;
        self.count += u64::from(new);
        Ok(new)
    }

    /// Remove `n`; true if it was a member.
    pub fn clear(&mut self, n: i128) -> Result<bool, OutOfRange> {
        let n = check(n)?;
        let Some(w) = self.words.get_mut(n / 64) else {
            return Ok(false);
        };
        let bit = 1u64 << (n % 64);
        let was = *w & bit != 0;
        *w &= !bit;
        self.count -= u64::from(was);
        Ok(was)
    }

    /// Membership; false for anything outside `0..=MAX_SEQ`.
    pub fn contains(&self, n: i128) -> bool {
        match check(n) {
            Ok(n) => self
                .words
                .get(n / 64)
                .is_some_and(|w| w & (1u64 << (n % 64)) != 0),
            Err(_) => false,
        }
    }

    /// Number of members.
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether every bit set in `other` is set here too.
    pub fn is_superset(&self, other: &Bitmap) -> bool {
        other.count <= self.count
            && other
                .words
                .iter()
                .enumerate()
                .all(|(i, &theirs)| theirs & !self.words.get(i).copied().unwrap_or(0) == 0)
    }

    /// Bytes of storage currently allocated.
    pub fn size_bytes(&self) -> usize {
        self.words.capacity() * 8
    }

    /// The bits as bytes, member `8 * i + j` at bit `j` of byte `i` (the
    /// upstream bitmap's layout), without trailing zero bytes: what a pickled
    /// bitmap holds.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes: Vec<u8> = self.words.iter().flat_map(|w| w.to_le_bytes()).collect();
        while bytes.last() == Some(&0) {
            bytes.pop();
        }
        bytes
    }

    /// The inverse of [`Bitmap::to_bytes`]; the largest member if it is above
    /// the cap (trailing zero bytes are fine).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OutOfRange> {
        if let Some(last) = bytes.iter().rposition(|&b| b != 0) {
            let top = 8 * last as i128 + 7 - i128::from(bytes[last].leading_zeros());
            check(top)?;
        }
        let words = bytes
            .chunks(8)
            .map(|chunk| {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                u64::from_le_bytes(word)
            })
            .collect();
        Ok(Self::from_words(words))
    }

    /// The members in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros();
                w &= w - 1;
                Some(i as u64 * 64 + u64::from(b))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_contains_clear() {
        let mut b = Bitmap::new();
        assert!(b.is_empty());
        assert_eq!(b.size_bytes(), 0);
        assert_eq!(b.set(0), Ok(true));
        assert_eq!(b.set(0), Ok(false));
        assert_eq!(b.set(64), Ok(true));
        assert_eq!(b.set(i128::from(MAX_SEQ)), Ok(true));
        assert_eq!(b.len(), 3);
        assert!(b.contains(0) && b.contains(64) && b.contains(i128::from(MAX_SEQ)));
        assert!(!b.contains(1) && !b.contains(63) && !b.contains(65));
        assert_eq!(b.clear(64), Ok(true));
        assert_eq!(b.clear(64), Ok(false));
        assert_eq!(b.clear(i128::from(MAX_SEQ) - 1), Ok(false));
        assert_eq!(b.len(), 2);
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, MAX_SEQ]);
    }

    #[test]
    fn superset() {
        let mut big = Bitmap::new();
        let mut small = Bitmap::new();
        assert!(big.is_superset(&small) && small.is_superset(&big));
        for n in [1, 64, 700, 5_000] {
            big.set(n).unwrap();
        }
        small.set(700).unwrap();
        assert!(big.is_superset(&small) && !small.is_superset(&big));
        small.set(9_000).unwrap(); // beyond big's words
        assert!(!big.is_superset(&small));
        small.clear(9_000).unwrap();
        small.set(2).unwrap();
        assert!(!big.is_superset(&small));
    }

    #[test]
    fn range_checks() {
        let mut b = Bitmap::new();
        assert_eq!(b.set(-1), Err(OutOfRange(-1)));
        assert_eq!(b.set(i128::from(MAX_SEQ) + 1), Err(OutOfRange(100_000_001)));
        assert!(b.clear(-5).is_err());
        assert!(b.clear(i128::from(MAX_SEQ) + 1).is_err());
        assert!(!b.contains(-1));
        assert!(!b.contains(i128::from(MAX_SEQ) + 1));
        assert!(!b.contains(i128::MAX));
        assert!(b.is_empty());
        assert_eq!(
            OutOfRange(-1).to_string(),
            "-1 is out of range 0..=100000000"
        );
    }

    #[test]
    fn size_is_capped_at_twelve_and_a_half_megabytes() {
        let mut b = Bitmap::new();
        for n in [1, 1000, 1_000_000, 99_999_999, 100_000_000] {
            b.set(n).unwrap();
        }
        assert_eq!(b.size_bytes(), MAX_WORDS * 8);
        assert!(b.size_bytes() <= 12_500_008);
        let c = Bitmap::with_capacity(u64::MAX);
        assert_eq!(c.size_bytes(), MAX_WORDS * 8);
        let d = Bitmap::with_capacity(1000);
        assert_eq!(d.size_bytes(), 16 * 8);
        assert!(d.is_empty());
    }

    #[test]
    fn bytes_round_trip_up_to_the_cap() {
        assert!(Bitmap::new().to_bytes().is_empty());
        assert_eq!(Bitmap::from_bytes(&[]), Ok(Bitmap::new()));
        let mut b = Bitmap::new();
        for n in [0, 9, 64, 99_999_937, i128::from(MAX_SEQ)] {
            b.set(n).unwrap();
        }
        let bytes = b.to_bytes();
        assert_eq!(bytes.len(), MAX_SEQ as usize / 8 + 1);
        assert_eq!(&bytes[..2], &[0b1, 0b10]);
        let back = Bitmap::from_bytes(&bytes).unwrap();
        assert_eq!(
            (back.len(), back.iter().collect::<Vec<_>>()),
            (5, b.iter().collect())
        );
        let mut padded = bytes.clone();
        padded.extend([0; 9]);
        assert_eq!(Bitmap::from_bytes(&padded).unwrap().len(), 5);
        let mut beyond = bytes;
        *beyond.last_mut().unwrap() |= 0b10;
        assert_eq!(
            Bitmap::from_bytes(&beyond),
            Err(OutOfRange(i128::from(MAX_SEQ) + 1))
        );
        assert!(Bitmap::from_bytes(&[0, 0x80]).unwrap().contains(15));
    }

    #[test]
    fn from_words_counts_and_trims() {
        let b = Bitmap::from_words(vec![0b1011, 0, 1 << 63, 0, 0]);
        assert_eq!(b.len(), 4);
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 1, 3, 191]);
        assert_eq!(b.size_bytes(), 24);
        let mut big = vec![0u64; MAX_WORDS + 3];
        big[MAX_WORDS - 1] = u64::MAX;
        big[MAX_WORDS + 2] = u64::MAX;
        let b = Bitmap::from_words(big);
        assert!(b.contains(i128::from(MAX_SEQ)));
        assert_eq!(b.iter().last(), Some(MAX_SEQ));
    }
}
