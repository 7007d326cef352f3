//! The pending jobs of a snapshot: byte offsets of their job lines, read back
//! from the file on demand.
//!
//! A snapshot of a log with millions of pending jobs keeps 8 bytes per
//! pending job (seq and offset packed in one integer), never the lines
//! themselves. Reading them back in seq order goes through a small window
//! that moves forward through the file, so a full iteration reads each region
//! of the file about once, with a few hundred KiB of memory.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// A job line's seq and byte offset packed into one integer that sorts by
/// seq first. `u64` holds offsets below 2^37 (128 GiB files); `u128` any.
pub trait JobKey: Copy + Ord + Send + Sync + 'static {
    /// The largest offset this key can hold.
    const MAX_OFFSET: u64;
    fn pack(seq: u32, offset: u64) -> Self;
    fn seq(self) -> u32;
    fn offset(self) -> u64;
    fn into_list(keys: Vec<Self>) -> PendingList;
}

const NARROW_SHIFT: u32 = 37;

impl JobKey for u64 {
    const MAX_OFFSET: u64 = (1 << NARROW_SHIFT) - 1;

    #[inline]
    fn pack(seq: u32, offset: u64) -> Self {
        debug_assert!(offset <= Self::MAX_OFFSET);
        (u64::from(seq) << NARROW_SHIFT) | offset
    }

    #[inline]
    fn seq(self) -> u32 {
        (self >> NARROW_SHIFT) as u32
    }

    #[inline]
    fn offset(self) -> u64 {
        self & Self::MAX_OFFSET
    }

    fn into_list(keys: Vec<Self>) -> PendingList {
        PendingList::Narrow(keys)
    }
}

impl JobKey for u128 {
    const MAX_OFFSET: u64 = u64::MAX;

    #[inline]
    fn pack(seq: u32, offset: u64) -> Self {
        (u128::from(seq) << 64) | u128::from(offset)
    }

    #[inline]
    fn seq(self) -> u32 {
        (self >> 64) as u32
    }

    #[inline]
    fn offset(self) -> u64 {
        self as u64
    }

    fn into_list(keys: Vec<Self>) -> PendingList {
        PendingList::Wide(keys)
    }
}

/// Pending (seq, offset) pairs in seq order.
#[derive(Clone)]
pub enum PendingList {
    Narrow(Vec<u64>),
    Wide(Vec<u128>),
}

impl PartialEq for PendingList {
    /// Equal when they hold the same pairs, whatever the key width.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (PendingList::Narrow(a), PendingList::Narrow(b)) => a == b,
            (PendingList::Wide(a), PendingList::Wide(b)) => a == b,
            _ => self.len() == other.len() && (0..self.len()).all(|i| self.get(i) == other.get(i)),
        }
    }
}

impl Eq for PendingList {}

impl std::fmt::Debug for PendingList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head: Vec<_> = (0..self.len().min(8)).filter_map(|i| self.get(i)).collect();
        write!(
            f,
            "PendingList(len {}, first (seq, offset) {head:?})",
            self.len()
        )
    }
}

impl Default for PendingList {
    fn default() -> Self {
        PendingList::Narrow(Vec::new())
    }
}

impl PendingList {
    pub fn len(&self) -> usize {
        match self {
            PendingList::Narrow(v) => v.len(),
            PendingList::Wide(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`-th pending job as (seq, offset).
    pub fn get(&self, i: usize) -> Option<(u32, u64)> {
        match self {
            PendingList::Narrow(v) => v.get(i).map(|&k| (k.seq(), k.offset())),
            PendingList::Wide(v) => v.get(i).map(|&k| (k.seq(), k.offset())),
        }
    }

    /// The pending seqs in order.
    pub fn seqs(&self) -> Vec<u32> {
        match self {
            PendingList::Narrow(v) => v.iter().map(|k| k.seq()).collect(),
            PendingList::Wide(v) => v.iter().map(|k| k.seq()).collect(),
        }
    }
}

/// Reads complete lines (without their `\n`) at given offsets through a
/// window that is refilled, with `pread`, only when a line is not in it.
pub struct LineReader {
    file: Arc<File>,
    buf: Vec<u8>,
    start: u64,
    len: usize,
}

/// Bytes read per refill of a [`LineReader`] window.
pub const WINDOW: usize = 256 << 10;

impl LineReader {
    pub fn new(file: Arc<File>) -> Self {
        Self::with_window(file, WINDOW)
    }

    pub fn with_window(file: Arc<File>, window: usize) -> Self {
        LineReader {
            file,
            buf: vec![0; window.max(1)],
            start: 0,
            len: 0,
        }
    }

    /// The line that starts at byte `offset`.
    pub fn line_at(&mut self, offset: u64) -> io::Result<&[u8]> {
        if offset >= self.start && offset - self.start < self.len as u64 {
            let rel = (offset - self.start) as usize;
            if let Some(nl) = memchr::memchr(b'\n', &self.buf[rel..self.len]) {
                return Ok(&self.buf[rel..rel + nl]);
            }
        }
        self.start = offset;
        self.len = 0;
        loop {
            if self.len == self.buf.len() {
                let bigger = self.buf.len() * 2;
                self.buf.resize(bigger, 0);
            }
            let at = self.start + self.len as u64;
            let n = match self.file.read_at(&mut self.buf[self.len..], at) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                self.len = 0;
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the job line at byte {offset} no longer ends in a newline"),
                ));
            }
            let searched = self.len;
            self.len += n;
            if let Some(nl) = memchr::memchr(b'\n', &self.buf[searched..self.len]) {
                return Ok(&self.buf[..searched + nl]);
            }
        }
    }
}

/// Several lines read in one go (so that the Python side can release the
/// GIL once per batch rather than once per line).
#[derive(Default, Debug)]
pub struct Batch {
    pub data: Vec<u8>,
    /// End of each line in `data`; line `k` is `data[ends[k-1]..ends[k]]`.
    pub ends: Vec<usize>,
}

impl Batch {
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn line(&self, k: usize) -> &[u8] {
        let start = if k == 0 { 0 } else { self.ends[k - 1] };
        &self.data[start..self.ends[k]]
    }
}

/// The pending jobs of a snapshot: the list and the file to read them from.
#[derive(Clone)]
pub struct PendingJobs {
    file: Arc<File>,
    list: Arc<PendingList>,
}

impl std::fmt::Debug for PendingJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.list.fmt(f)
    }
}

impl PartialEq for PendingJobs {
    fn eq(&self, other: &Self) -> bool {
        self.list == other.list
    }
}

impl PendingJobs {
    pub fn new(file: Arc<File>, list: PendingList) -> Self {
        PendingJobs {
            file,
            list: Arc::new(list),
        }
    }

    pub fn list(&self) -> &PendingList {
        &self.list
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn seqs(&self) -> Vec<u32> {
        self.list.seqs()
    }

    pub fn reader(&self) -> LineReader {
        LineReader::new(self.file.clone())
    }

    /// Read the `i`-th pending job line into `out` (random access).
    pub fn line(&self, i: usize, out: &mut Vec<u8>) -> io::Result<()> {
        let (_, offset) = self.list.get(i).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "pending index out of range")
        })?;
        let mut reader = LineReader::with_window(self.file.clone(), 4096);
        out.clear();
        out.extend_from_slice(reader.line_at(offset)?);
        Ok(())
    }

    /// Read pending lines `from..` into `batch` (cleared first): at most
    /// `max_lines` lines, stopping once `max_bytes` have been collected.
    /// Returns the number of lines read.
    pub fn fill(
        &self,
        reader: &mut LineReader,
        from: usize,
        max_lines: usize,
        max_bytes: usize,
        batch: &mut Batch,
    ) -> io::Result<usize> {
        batch.clear();
        let end = self.list.len().min(from.saturating_add(max_lines));
        for i in from..end {
            let (_, offset) = self.list.get(i).unwrap_or_default();
            batch.data.extend_from_slice(reader.line_at(offset)?);
            batch.ends.push(batch.data.len());
            if batch.data.len() >= max_bytes {
                break;
            }
        }
        Ok(batch.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(data: &[u8]) -> Arc<File> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        Arc::new(f)
    }

    #[test]
    fn keys_pack_and_sort_by_seq() {
        let a = <u64 as JobKey>::pack(100_000_000, (1 << 37) - 1);
        assert_eq!((a.seq(), a.offset()), (100_000_000, (1 << 37) - 1));
        assert!(<u64 as JobKey>::pack(2, 0) > <u64 as JobKey>::pack(1, 1 << 36));
        let w = <u128 as JobKey>::pack(7, u64::MAX);
        assert_eq!((w.seq(), w.offset()), (7, u64::MAX));
        assert!(<u128 as JobKey>::pack(2, 0) > <u128 as JobKey>::pack(1, u64::MAX));
    }

    #[test]
    fn list_accessors() {
        let l = u64::into_list(vec![u64::pack(3, 10), u64::pack(5, 0)]);
        assert_eq!(l.len(), 2);
        assert_eq!(l.get(1), Some((5, 0)));
        assert_eq!(l.get(2), None);
        assert_eq!(l.seqs(), vec![3, 5]);
        let w = u128::into_list(vec![u128::pack(9, 1 << 40)]);
        assert_eq!(w.get(0), Some((9, 1 << 40)));
        assert!(PendingList::default().is_empty());
    }

    #[test]
    fn line_reader_moves_forward_and_back() {
        let mut data = Vec::new();
        let mut offsets = Vec::new();
        for i in 0..1000 {
            offsets.push(data.len() as u64);
            data.extend_from_slice(format!("line number {i} {}\n", "x".repeat(i % 37)).as_bytes());
        }
        let f = file_with(&data);
        for window in [1, 7, 64, 4096, WINDOW] {
            let mut r = LineReader::with_window(f.clone(), window);
            for (i, &off) in offsets.iter().enumerate() {
                let want = format!("line number {i} {}", "x".repeat(i % 37));
                assert_eq!(r.line_at(off).unwrap(), want.as_bytes());
            }
            // Backwards too.
            for (i, &off) in offsets.iter().enumerate().rev().step_by(13) {
                let want = format!("line number {i} {}", "x".repeat(i % 37));
                assert_eq!(r.line_at(off).unwrap(), want.as_bytes());
            }
        }
    }

    #[test]
    fn line_reader_long_lines_and_missing_newline() {
        let long = "y".repeat(1 << 20);
        let data = format!("{long}\nshort\nno newline");
        let f = file_with(data.as_bytes());
        let mut r = LineReader::with_window(f, 100);
        assert_eq!(r.line_at(0).unwrap(), long.as_bytes());
        assert_eq!(r.line_at((long.len() + 1) as u64).unwrap(), b"short");
        let err = r.line_at((long.len() + 7) as u64).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(r.line_at(1 << 30).is_err());
    }

    #[test]
    fn pending_jobs_fill_and_random_access() {
        let data = b"a\nbb\n\nccc\ndddd\n";
        let f = file_with(data);
        let p = PendingJobs::new(
            f,
            u64::into_list(vec![
                u64::pack(1, 0),
                u64::pack(2, 2),
                u64::pack(4, 6),
                u64::pack(6, 10),
            ]),
        );
        assert_eq!(p.len(), 4);
        assert_eq!(p.seqs(), vec![1, 2, 4, 6]);
        let mut out = Vec::new();
        p.line(2, &mut out).unwrap();
        assert_eq!(out, b"ccc");
        assert!(p.line(4, &mut out).is_err());
        let mut r = p.reader();
        let mut b = Batch::default();
        assert_eq!(p.fill(&mut r, 0, 3, usize::MAX, &mut b).unwrap(), 3);
        assert_eq!(
            (b.line(0), b.line(1), b.line(2)),
            (&b"a"[..], &b"bb"[..], &b"ccc"[..])
        );
        assert_eq!(p.fill(&mut r, 3, 3, usize::MAX, &mut b).unwrap(), 1);
        assert_eq!(b.line(0), b"dddd");
        assert_eq!(p.fill(&mut r, 4, 3, usize::MAX, &mut b).unwrap(), 0);
        assert!(b.is_empty());
        // The byte budget stops a batch early, after at least one line.
        assert_eq!(p.fill(&mut r, 0, 10, 1, &mut b).unwrap(), 1);
    }
}
