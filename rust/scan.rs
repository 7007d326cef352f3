//! One pass over a job log → [`Snapshot`].
//!
//! The semantics are those of `python/iabulk/_native.pyi` (restated in plain
//! Python by `tests/model.py`). How the pass is made fast and lean:
//!
//! * The file is read with `pread` into one reused block per thread (never
//!   mapped: touched mapped pages would count as resident memory); the
//!   newlines of each block are found as a bitmap (SSE2), and each line goes
//!   to the validating parser in [`crate::json`].
//! * Large files are split into ranges at line boundaries (a few per
//!   thread); threads take the next range when done with one, so ranges of
//!   unequal cost still keep every thread busy. Each range keeps a compact
//!   state per seq (one byte: job seen, last terminal kind, started since)
//!   plus the item size of its last completion, folded in file order: a later
//!   range's terminal event (and its size) wins, started flags combine, so
//!   the fold is associative and the result does not depend on where the
//!   ranges were cut. A range is folded as soon as all ranges before it are,
//!   so only a few ranges' state is alive at a time.
//! * The one thing a range cannot decide alone is whether its job line for a
//!   seq duplicates a job line in an earlier range; when the fold finds such
//!   a duplicate (only in a damaged log) the whole file is scanned again on
//!   one thread, which is exact by construction.
//! * Job lines are kept as one packed integer (seq, offset) each, in file
//!   order, in memory reserved up front; at the end only the pending ones
//!   are kept (in the same memory), already in seq order when job lines were
//!   written with increasing seqs (they are), sorted otherwise.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::bitmap::{Bitmap, MAX_SEQ};
use crate::idset::{id_hash, IdSet};
use crate::json::{self, Fields, JsonStr, More, Value};
use crate::pending::{JobKey, PendingJobs};

/// How to scan; the defaults are right outside tests.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Collect the hash of every job id into [`Snapshot::ids`].
    pub collect_ids: bool,
    /// Threads to use; 0 picks the number of cores, at most 8.
    pub threads: usize,
    /// Ranges per thread: threads take the next range when done with one,
    /// so that ranges of unequal cost (job lines are fewer per byte than
    /// events) still keep every thread busy to the end.
    pub ranges_per_thread: usize,
    /// Bytes read per `pread`.
    pub block_size: usize,
    /// Smallest range worth a thread of its own.
    pub min_range_bytes: u64,
    /// Use 128-bit job keys even when 64-bit ones would do (for tests).
    pub wide_keys: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            collect_ids: false,
            threads: 0,
            ranges_per_thread: 4,
            block_size: 1 << 20,
            min_range_bytes: 8 << 20,
            wide_keys: false,
        }
    }
}

/// What one pass over a job log knows. See `_native.pyi` for each field.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub max_seq: u64,
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
    pub pending: u64,
    pub in_flight: u64,
    pub malformed: u64,
    pub bytes_completed: ByteTotal,
    pub first_ts: Option<String>,
    pub last_ts: Option<String>,
    /// (message, count), most frequent first, ties by message.
    pub errors: Vec<(String, u64)>,
    pub source: Option<String>,
    pub resolved: bool,
    /// Bytes of the file that were scanned.
    pub size: u64,
    pub bitmap: Bitmap,
    pub pending_jobs: PendingJobs,
    pub ids: Option<IdSet>,
}

/// A sum of item sizes: exact, however large the sizes in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ByteTotal {
    Small(u128),
    /// Decimal digits, when an `item_size` above `u64::MAX` was counted.
    Decimal(String),
}

impl std::fmt::Display for ByteTotal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ByteTotal::Small(n) => write!(f, "{n}"),
            ByteTotal::Decimal(d) => f.write_str(d),
        }
    }
}

/// The sum of two non-negative decimal numbers (digits only).
pub(crate) fn add_decimal(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len().max(b.len()) + 1);
    let (mut i, mut j, mut carry) = (a.len(), b.len(), 0u8);
    while i > 0 || j > 0 || carry > 0 {
        let mut d = carry;
        if i > 0 {
            i -= 1;
            d += a[i] - b'0';
        }
        if j > 0 {
            j -= 1;
            d += b[j] - b'0';
        }
        out.push(b'0' + d % 10);
        carry = d / 10;
    }
    if out.is_empty() {
        out.push(b'0');
    }
    out.reverse();
    out
}

/// Scan the job log at `path`.
pub fn scan_path(path: &Path, opts: &ScanOptions) -> io::Result<Snapshot> {
    let file = File::open(path)?;
    scan_file(Arc::new(file), opts)
}

/// Scan an open job log from its start to its current end.
pub fn scan_file(file: Arc<File>, opts: &ScanOptions) -> io::Result<Snapshot> {
    scan_file_with(file, opts, &()).map(|(snapshot, ())| snapshot)
}

/// Work done in the same pass as the scan (the analytics): it sees every
/// event line the scan accepts, one range at a time, and is folded in file
/// order like the scan's own state. `()` is the scan alone.
pub trait Visitor: Clone + Send + Sync {
    /// Whether [`Visitor::event`] needs the [`More`] fields parsed.
    const MORE: bool;
    type Output;
    /// A `started`, `completed`, `failed` or `requeued` line the scan
    /// accepted, for `seq` (`more` is all `Absent` unless [`Visitor::MORE`]).
    fn event(&mut self, kind: Kind, seq: u32, f: &Fields<'_>, more: &More<'_>, offset: u64);
    /// Fold the next range (in file order) into this one.
    fn absorb(&mut self, later: Self);
    /// The folded visitor, with the scan's final per-seq outcomes and its
    /// job lists (seq and offset of every accepted job line, in file order).
    fn finish<K: JobKey>(
        self,
        outcomes: &Outcomes<'_>,
        lists: &[Vec<K>],
        file: &Arc<File>,
    ) -> Self::Output;
}

impl Visitor for () {
    const MORE: bool = false;
    type Output = ();
    #[inline(always)]
    fn event(&mut self, _: Kind, _: u32, _: &Fields<'_>, _: &More<'_>, _: u64) {}
    #[inline(always)]
    fn absorb(&mut self, _: Self) {}
    fn finish<K: JobKey>(self, _: &Outcomes<'_>, _: &[Vec<K>], _: &Arc<File>) {}
}

/// What a finished scan knows of one seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No job line.
    NoJob,
    Pending,
    Completed,
    /// Failed permanently.
    Failed,
}

/// The folded per-seq states of a finished scan, for [`Visitor::finish`].
pub struct Outcomes<'s> {
    states: &'s States,
    sizes: &'s Sizes,
}

impl Outcomes<'_> {
    /// The final state of `seq`, as the counts count it.
    #[inline]
    pub fn of(&self, seq: u32) -> Outcome {
        let s = self.states.get(seq);
        match (s & HAS_JOB != 0, s & TERM_MASK) {
            (false, _) => Outcome::NoJob,
            (true, T_COMPLETED) => Outcome::Completed,
            (true, T_FAILED) => Outcome::Failed,
            _ => Outcome::Pending,
        }
    }

    /// The `item_size` counted for `seq` if it is completed (`Err`: the
    /// decimal digits of a size above `u64::MAX`).
    #[inline]
    pub fn item_size(&self, seq: u32) -> Result<u64, &[u8]> {
        let slot = match self.sizes.pages.get((seq >> PAGE_BITS) as usize) {
            Some(Some(page)) => page[seq as usize & (PAGE - 1)],
            _ => 0,
        };
        self.sizes.value(seq, slot)
    }
}

/// [`scan_file`] with a [`Visitor`] (each range starts from a clone of
/// `proto`).
pub fn scan_file_with<V: Visitor>(
    file: Arc<File>,
    opts: &ScanOptions,
    proto: &V,
) -> io::Result<(Snapshot, V::Output)> {
    let size = file.metadata()?.len();
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(8)
    } else {
        opts.threads
    };
    let threads = threads.max(1);
    let ranges = (size / opts.min_range_bytes.max(1))
        .clamp(1, (threads * opts.ranges_per_thread.max(1)) as u64) as usize;
    if opts.wide_keys || size > u64::MAX_OFFSET {
        scan_with::<u128, V>(file, size, ranges, threads, opts, proto)
    } else {
        scan_with::<u64, V>(file, size, ranges, threads, opts, proto)
    }
}

/// The ranges scanned so far, folded in file order.
struct Folding<K, V> {
    /// Ranges `0..next`, folded.
    acc: Option<RangeScan<K, V>>,
    next: usize,
    /// Finished ranges waiting for the ones before them.
    done: Vec<Option<RangeScan<K, V>>>,
    /// A job line appeared in two ranges.
    duplicate: bool,
    error: Option<io::Error>,
}

impl<K: JobKey, V: Visitor> Folding<K, V> {
    fn add(&mut self, k: usize, part: RangeScan<K, V>) {
        self.done[k] = Some(part);
        while let Some(part) = self.done.get_mut(self.next).and_then(Option::take) {
            self.next += 1;
            if self.duplicate {
                continue; // a sequential rescan follows: drop it
            }
            match &mut self.acc {
                None => self.acc = Some(part),
                Some(acc) => self.duplicate |= acc.absorb(part),
            }
        }
    }
}

fn scan_with<K: JobKey, V: Visitor>(
    file: Arc<File>,
    size: u64,
    ranges: usize,
    threads: usize,
    opts: &ScanOptions,
    proto: &V,
) -> io::Result<(Snapshot, V::Output)> {
    let bounds = split(&file, size, ranges)?;
    let n = bounds.len() - 1;
    // Each thread takes the next range to scan until none is left; a range
    // that completes the run of finished ranges from the start is folded in
    // at once, so that only a few ranges' per-seq state is alive at a time.
    let next = AtomicUsize::new(0);
    let folding = Mutex::new(Folding::<K, V> {
        acc: None,
        next: 0,
        done: (0..n).map(|_| None).collect(),
        duplicate: false,
        error: None,
    });
    let work = || {
        let mut bufs = Buffers::new(opts);
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            if k >= n {
                return;
            }
            let part =
                scan_range_with::<K, V>(&file, bounds[k], bounds[k + 1], opts, &mut bufs, proto);
            let mut f = folding.lock().unwrap_or_else(|e| e.into_inner());
            match part {
                Ok(part) => {
                    f.add(k, part);
                    if f.duplicate {
                        next.store(n, Ordering::Relaxed); // a rescan follows
                    }
                }
                Err(e) => {
                    f.error.get_or_insert(e);
                    next.store(n, Ordering::Relaxed); // stop the others early
                }
            }
        }
    };
    if threads.min(n) <= 1 {
        work();
    } else {
        std::thread::scope(|s| {
            let helpers: Vec<_> = (1..threads.min(n)).map(|_| s.spawn(work)).collect();
            work();
            for h in helpers {
                h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            }
        });
    }
    let f = folding.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = f.error {
        return Err(e);
    }
    if f.duplicate {
        // A job line duplicated across ranges: only a sequential pass knows
        // which of its fields to ignore.
        return scan_with::<K, V>(file, size, 1, 1, opts, proto);
    }
    let acc = f
        .acc
        .unwrap_or_else(|| RangeScan::with_visitor(opts.collect_ids, 0, proto.clone()));
    Ok(acc.finish_with(file, size))
}

/// Range boundaries: `ranges + 1` offsets, each (but the last) at a line start.
fn split(file: &File, size: u64, ranges: usize) -> io::Result<Vec<u64>> {
    let mut bounds = vec![0u64];
    for i in 1..ranges {
        let target = (u128::from(size) * i as u128 / ranges as u128) as u64;
        let prev = *bounds.last().unwrap_or(&0);
        let at = if target <= prev {
            prev
        } else {
            next_line_start(file, target, size)?
        };
        bounds.push(at.max(prev));
    }
    bounds.push(size);
    bounds.dedup();
    if bounds.len() == 1 {
        bounds.push(size);
    }
    Ok(bounds)
}

/// The first line start at or after `target` (`size` if there is none).
fn next_line_start(file: &File, target: u64, size: u64) -> io::Result<u64> {
    if target == 0 {
        return Ok(0);
    }
    let mut buf = vec![0u8; 64 << 10];
    let mut at = target - 1;
    while at < size {
        let want = buf.len().min((size - at) as usize);
        let n = read_at(file, &mut buf[..want], at)?;
        if n == 0 {
            break;
        }
        if let Some(nl) = memchr::memchr(b'\n', &buf[..n]) {
            return Ok(at + nl as u64 + 1);
        }
        at += n as u64;
    }
    Ok(size)
}

fn read_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    loop {
        match file.read_at(buf, at) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The newlines of `bytes` as a bitmap (bit `i % 64` of word `i / 64`).
fn newline_words(bytes: &[u8], out: &mut Vec<u64>) {
    out.clear();
    let mut chunks = bytes.chunks_exact(64);
    for c in &mut chunks {
        let mut block = [0u8; 64];
        block.copy_from_slice(c);
        out.push(json::byte_mask64(&block, b'\n'));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut block = [0u8; 64];
        block[..rest.len()].copy_from_slice(rest);
        out.push(json::byte_mask64(&block, b'\n'));
    }
}

/// A thread's read block and newline bitmap, reused from range to range.
struct Buffers {
    block: Vec<u8>,
    newlines: Vec<u64>,
}

impl Buffers {
    fn new(opts: &ScanOptions) -> Self {
        Buffers {
            block: vec![0u8; opts.block_size.max(1)],
            newlines: Vec::new(),
        }
    }
}

#[cfg(test)]
fn scan_range<K: JobKey>(
    file: &File,
    start: u64,
    end: u64,
    opts: &ScanOptions,
    bufs: &mut Buffers,
) -> io::Result<RangeScan<K>> {
    scan_range_with(file, start, end, opts, bufs, &())
}

fn scan_range_with<K: JobKey, V: Visitor>(
    file: &File,
    start: u64,
    end: u64,
    opts: &ScanOptions,
    bufs: &mut Buffers,
    proto: &V,
) -> io::Result<RangeScan<K, V>> {
    let mut rs = RangeScan::<K, V>::with_visitor(opts.collect_ids, end - start, proto.clone());
    let Buffers {
        block: buf,
        newlines,
    } = bufs;
    let mut base = start; // file offset of buf[0]
    let mut filled = 0usize;
    let mut next = start;
    while next < end {
        if filled == buf.len() {
            // A line longer than the block: grow to hold it.
            let bigger = buf.len() * 2;
            buf.resize(bigger, 0);
        }
        let want = (buf.len() - filled).min(usize::try_from(end - next).unwrap_or(usize::MAX));
        let n = read_at(file, &mut buf[filled..filled + want], next)?;
        if n == 0 {
            break; // the file shrank under us
        }
        let searched = filled;
        filled += n;
        next += n as u64;
        let mut line_start = 0;
        newline_words(&buf[searched..filled], newlines);
        for (k, &word) in newlines.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                let nl = searched + k * 64 + word.trailing_zeros() as usize;
                word &= word - 1;
                rs.line(&buf[line_start..nl], base + line_start as u64);
                line_start = nl + 1;
            }
        }
        if line_start > 0 {
            buf.copy_within(line_start..filled, 0);
            filled -= line_start;
            base += line_start as u64;
        }
    }
    if filled > 0 {
        rs.malformed += 1; // a torn tail (even a blank one: it is not a line)
    }
    Ok(rs)
}

// One byte of state per seq, per range.
const HAS_JOB: u8 = 1;
const TERM_MASK: u8 = 0b110;
const T_COMPLETED: u8 = 0b010;
const T_FAILED: u8 = 0b100; // failed with "retry": false
const T_NOT_DONE: u8 = 0b110; // failed to be retried, or requeued
const STARTED: u8 = 0b1000;

#[inline]
fn is_done(s: u8) -> bool {
    matches!(s & TERM_MASK, T_COMPLETED | T_FAILED)
}

/// `earlier` followed by `later` (both states of one seq).
#[inline]
fn fold_state(earlier: u8, later: u8) -> u8 {
    if later & TERM_MASK != 0 {
        (earlier & HAS_JOB) | later
    } else {
        earlier | later
    }
}

const PAGE_BITS: u32 = 12;
const PAGE: usize = 1 << PAGE_BITS;

/// Per-seq states in lazily allocated 4 KiB pages, so that a few stray huge
/// seqs cost a page each, not a table up to them.
#[derive(Default)]
struct States {
    pages: Vec<Option<Box<[u8]>>>,
}

impl States {
    #[inline]
    fn slot(&mut self, seq: u32) -> &mut u8 {
        let p = (seq >> PAGE_BITS) as usize;
        if p >= self.pages.len() {
            self.pages.resize_with(p + 1, || None);
        }
        let page = self.pages[p].get_or_insert_with(|| vec![0u8; PAGE].into_boxed_slice());
        &mut page[seq as usize & (PAGE - 1)]
    }

    #[inline]
    fn get(&self, seq: u32) -> u8 {
        match self.pages.get((seq >> PAGE_BITS) as usize) {
            Some(Some(page)) => page[seq as usize & (PAGE - 1)],
            _ => 0,
        }
    }
}

/// A small, fast hasher for short byte strings (error messages): eight
/// bytes at a time, multiply and rotate. Not DoS-resistant, which a log
/// reader does not need.
#[derive(Default, Clone, Copy)]
struct FxBytes(u64);

impl FxBytes {
    #[inline]
    fn mix(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxBytes {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// An item size too large for a page slot.
#[derive(Debug, Clone)]
enum BigSize {
    U64(u64),
    Digits(Box<[u8]>),
}

/// Page slots below this hold the size itself; `ARENA | i` refers to
/// `arena[i]`; [`SIZE_IN_MAP`] to the map entry of the seq.
const ARENA: u32 = 1 << 31;
/// In a page slot: the size is in [`Sizes::big`] under the seq.
const SIZE_IN_MAP: u32 = u32::MAX;
const ARENA_MAX: usize = (SIZE_IN_MAP - ARENA) as usize;

/// Per seq, the item size of the range's last `completed` event (0 when it
/// had none or an invalid one), in lazily allocated pages of `u32`. Sizes of
/// 2 GiB and more go to an append-only arena; sizes above `u64::MAX` (and
/// any overflow of the arena) to a map by seq.
#[derive(Default)]
struct Sizes {
    pages: Vec<Option<Box<[u32]>>>,
    arena: Vec<u64>,
    big: HashMap<u32, BigSize>,
}

fn zero_size_page() -> Box<[u32]> {
    vec![0u32; PAGE].into_boxed_slice()
}

impl Sizes {
    #[inline]
    fn set(&mut self, seq: u32, size: Value<'_>) {
        let v = match size {
            Value::UInt(n) if n < u64::from(ARENA) => n as u32,
            Value::UInt(n) if self.arena.len() < ARENA_MAX => {
                self.arena.push(n);
                ARENA | (self.arena.len() - 1) as u32
            }
            Value::UInt(n) => {
                self.big.insert(seq, BigSize::U64(n));
                SIZE_IN_MAP
            }
            Value::BigUInt(digits) => {
                self.big.insert(seq, BigSize::Digits(digits.into()));
                SIZE_IN_MAP
            }
            _ => 0,
        };
        let p = (seq >> PAGE_BITS) as usize;
        if v == 0 && !matches!(self.pages.get(p), Some(Some(_))) {
            return;
        }
        if p >= self.pages.len() {
            self.pages.resize_with(p + 1, || None);
        }
        self.pages[p].get_or_insert_with(zero_size_page)[seq as usize & (PAGE - 1)] = v;
    }

    /// The size in a slot of `seq` (as a decimal string when above u64).
    fn value(&self, seq: u32, slot: u32) -> Result<u64, &[u8]> {
        match slot {
            SIZE_IN_MAP => match self.big.get(&seq) {
                Some(BigSize::U64(n)) => Ok(*n),
                Some(BigSize::Digits(d)) => Err(d),
                None => Ok(0),
            },
            s if s >= ARENA => Ok(self.arena[(s - ARENA) as usize]),
            s => Ok(u64::from(s)),
        }
    }

    /// Move another range's arena to the end of this one's; returns how its
    /// slots translate.
    fn adopt_arena(&mut self, arena: Vec<u64>) -> usize {
        let offset = self.arena.len();
        if offset == 0 {
            self.arena = arena;
        } else {
            self.arena.extend_from_slice(&arena);
        }
        offset
    }

    /// A slot of the other range (whose arena starts at `offset` here) as a
    /// slot of this one.
    #[inline]
    fn translate(&mut self, seq: u32, slot: u32, offset: usize) -> u32 {
        if slot < ARENA || slot == SIZE_IN_MAP || offset == 0 {
            return slot;
        }
        let i = (slot - ARENA) as usize + offset;
        if i < ARENA_MAX {
            ARENA | i as u32
        } else {
            self.big.insert(seq, BigSize::U64(self.arena[i]));
            SIZE_IN_MAP
        }
    }
}

/// The event kinds this version knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Job,
    Started,
    Completed,
    Failed,
    Requeued,
    Source,
    Resolved,
}

impl Kind {
    #[inline]
    fn of(event: JsonStr<'_>) -> Option<Kind> {
        if event.has_escapes() {
            return Kind::named(&event.bytes());
        }
        // The plain spellings: the length, then fixed-size compares.
        fn is<const N: usize>(raw: &[u8], name: &[u8; N]) -> bool {
            raw.first_chunk::<N>() == Some(name)
        }
        let raw = event.raw();
        let kind = match raw.len() {
            3 if is(raw, b"job") => Kind::Job,
            7 if is(raw, b"started") => Kind::Started,
            9 if is(raw, b"completed") => Kind::Completed,
            6 if is(raw, b"failed") => Kind::Failed,
            8 if is(raw, b"requeued") => Kind::Requeued,
            6 if is(raw, b"source") => Kind::Source,
            8 if is(raw, b"resolved") => Kind::Resolved,
            _ => return None,
        };
        Some(kind)
    }

    fn named(name: &[u8]) -> Option<Kind> {
        Some(match name {
            b"job" => Kind::Job,
            b"started" => Kind::Started,
            b"completed" => Kind::Completed,
            b"failed" => Kind::Failed,
            b"requeued" => Kind::Requeued,
            b"source" => Kind::Source,
            b"resolved" => Kind::Resolved,
            _ => return None,
        })
    }
}

/// A line without its trailing `\r`s (the text a `source` line reports).
fn strip_cr(line: &[u8]) -> &[u8] {
    let end = line.iter().rposition(|&b| b != b'\r').map_or(0, |e| e + 1);
    &line[..end]
}

/// An empty job list with room for every job line a range of `range_bytes`
/// can hold (a job line takes at least 32 bytes), up to 16M entries, so
/// that it does not reallocate; the room is only address space until used.
/// Large lists ask for transparent huge pages: fewer page faults.
fn job_buffer<K>(range_bytes: u64) -> Vec<K> {
    let cap = (range_bytes / 32).min(1 << 24) as usize;
    let mut v: Vec<K> = Vec::new();
    // Where address space is tight (strict overcommit), grow as needed.
    if v.try_reserve_exact(cap).is_ok() {
        advise_huge(v.as_ptr().cast(), cap * std::mem::size_of::<K>());
    }
    v
}

/// Hint that the 2 MiB-aligned part of `[ptr, ptr + len)` be backed by huge
/// pages.
fn advise_huge(ptr: *const u8, len: usize) {
    const HUGE: usize = 2 << 20;
    if len < 2 * HUGE {
        return;
    }
    let start = (ptr as usize).next_multiple_of(HUGE);
    let end = (ptr as usize + len) / HUGE * HUGE;
    if end > start {
        // SAFETY: the range lies inside an allocation this function's caller
        // owns; MADV_HUGEPAGE only changes how the kernel backs its pages,
        // never their contents, and a failure is harmless.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

/// What one range of the file knows.
struct RangeScan<K, V = ()> {
    collect_ids: bool,
    states: States,
    sizes: Sizes,
    /// Job lines (first per seq within the range), in file order.
    jobs: Vec<K>,
    /// The job lists of later ranges folded into this one, in file order.
    more_jobs: Vec<Vec<K>>,
    /// Whether the job lists, one after the other, have strictly increasing
    /// seqs.
    jobs_sorted: bool,
    first_job_seq: u32,
    last_job_seq: u32,
    max_job_seq: u32,
    ids: Vec<u128>,
    malformed: u64,
    min_ts: Option<Vec<u8>>,
    max_ts: Option<Vec<u8>>,
    /// Error messages (decoded bytes, valid UTF-8) and their counts.
    errors: HashMap<Box<[u8]>, u64, BuildHasherDefault<FxBytes>>,
    /// The last source line seen in this range, without trailing `\r`s.
    source: Option<Vec<u8>>,
    /// Whether a resolved line follows the range's last source line (or, if
    /// it has none, appears anywhere in it).
    resolved: bool,
    visit: V,
}

impl<K: JobKey, V: Visitor> RangeScan<K, V> {
    fn with_visitor(collect_ids: bool, range_bytes: u64, visit: V) -> Self {
        RangeScan {
            collect_ids,
            states: States::default(),
            sizes: Sizes::default(),
            jobs: job_buffer(range_bytes),
            more_jobs: Vec::new(),
            jobs_sorted: true,
            first_job_seq: 0,
            last_job_seq: 0,
            max_job_seq: 0,
            ids: Vec::new(),
            malformed: 0,
            min_ts: None,
            max_ts: None,
            errors: HashMap::default(),
            source: None,
            resolved: false,
            visit,
        }
    }

    /// One line (without its `\n`) starting at byte `offset`.
    #[inline]
    fn line(&mut self, line: &[u8], offset: u64) {
        let mut fields = Fields::default();
        let mut more = More::default();
        let parsed = if V::MORE {
            json::parse_into_more(line, &mut fields, &mut more)
        } else {
            json::parse_into(line, &mut fields)
        };
        match parsed {
            Ok(true) => {
                if !self.apply(&fields, &more, line, offset) {
                    self.malformed += 1;
                }
            }
            Ok(false) => {}
            Err(json::Malformed) => self.malformed += 1,
        }
    }

    /// Apply a well-formed JSON line; false if the line is malformed as an
    /// event.
    #[inline]
    fn apply(&mut self, f: &Fields<'_>, more: &More<'_>, line: &[u8], offset: u64) -> bool {
        let Value::Str(event) = f.event else {
            return false;
        };
        let Some(kind) = Kind::of(event) else {
            return true; // a kind this version does not know: ignored
        };
        match kind {
            Kind::Source => {
                self.source = Some(strip_cr(line).to_vec());
                self.resolved = false;
            }
            Kind::Resolved => self.resolved = true,
            _ => {
                let seq = match f.seq {
                    Value::UInt(n) if (1..=MAX_SEQ).contains(&n) => n as u32,
                    _ => return false,
                };
                if kind == Kind::Job && !matches!(f.id, Value::Str(_)) {
                    return false;
                }
                let slot = self.states.slot(seq);
                match kind {
                    Kind::Job => {
                        if *slot & HAS_JOB != 0 {
                            return false; // the first job line defines the job
                        }
                        *slot |= HAS_JOB;
                        self.job(seq, offset, f.id);
                    }
                    Kind::Started => *slot |= STARTED,
                    Kind::Completed => {
                        *slot = (*slot & HAS_JOB) | T_COMPLETED;
                        self.sizes.set(seq, f.item_size);
                    }
                    Kind::Failed => {
                        let term = if f.retry == Value::False {
                            T_FAILED
                        } else {
                            T_NOT_DONE
                        };
                        *slot = (*slot & HAS_JOB) | term;
                        if let Value::Str(e) = f.error {
                            let e = e.bytes();
                            match self.errors.get_mut(&*e) {
                                Some(n) => *n += 1,
                                None => {
                                    self.errors.insert(e.into(), 1);
                                }
                            }
                        }
                    }
                    Kind::Requeued => *slot = (*slot & HAS_JOB) | T_NOT_DONE,
                    Kind::Source | Kind::Resolved => {}
                }
                if kind != Kind::Job {
                    self.visit.event(kind, seq, f, more, offset);
                }
            }
        }
        if let Value::Str(ts) = f.ts {
            self.note_ts(ts);
        }
        true
    }

    #[inline]
    fn job(&mut self, seq: u32, offset: u64, id: Value<'_>) {
        if self.last_job_seq == 0 {
            self.first_job_seq = seq;
        } else if seq <= self.last_job_seq {
            self.jobs_sorted = false;
        }
        self.last_job_seq = seq;
        self.max_job_seq = self.max_job_seq.max(seq);
        self.jobs.push(K::pack(seq, offset));
        if self.collect_ids {
            if let Value::Str(id) = id {
                self.ids.push(id_hash(&id.bytes()));
            }
        }
    }

    #[inline]
    fn note_ts(&mut self, ts: JsonStr<'_>) {
        // The usual case: a plain 16-byte `%Y%m%dT%H%M%SZ` within the range
        // seen so far, compared as two big-endian integers.
        if !ts.has_escapes() && ts.raw().len() == 16 {
            if let (Some(lo), Some(hi)) = (&self.min_ts, &self.max_ts) {
                if lo.len() == 16 && hi.len() == 16 {
                    let be = |s: &[u8]| u128::from_be_bytes(s.try_into().unwrap_or([0; 16]));
                    let t = be(ts.raw());
                    if be(lo) <= t && t <= be(hi) {
                        return;
                    }
                }
            }
        }
        let t = ts.bytes();
        match &mut self.max_ts {
            Some(m) if *t <= **m => {}
            Some(m) => {
                m.clear();
                m.extend_from_slice(&t);
            }
            None => self.max_ts = Some(t.to_vec()),
        }
        match &mut self.min_ts {
            Some(m) if *t >= **m => {}
            Some(m) => {
                m.clear();
                m.extend_from_slice(&t);
            }
            None => self.min_ts = Some(t.to_vec()),
        }
    }

    /// Fold a later range into this one; true if a seq has a job line in
    /// both (the caller then rescans sequentially).
    fn absorb(&mut self, mut later: RangeScan<K, V>) -> bool {
        if self.fold_seqs(&mut later) {
            return true;
        }
        if later.last_job_seq != 0 {
            if self.last_job_seq != 0 {
                self.jobs_sorted &= later.jobs_sorted && self.last_job_seq < later.first_job_seq;
            } else {
                self.jobs_sorted = later.jobs_sorted;
                self.first_job_seq = later.first_job_seq;
            }
            self.last_job_seq = later.last_job_seq;
            // Kept as a list of its own: no copy of millions of entries.
            self.more_jobs.push(std::mem::take(&mut later.jobs));
        }
        self.max_job_seq = self.max_job_seq.max(later.max_job_seq);
        self.ids.extend_from_slice(&later.ids);
        self.malformed += later.malformed;
        if let Some(t) = later.min_ts {
            if self.min_ts.as_ref().is_none_or(|m| t < *m) {
                self.min_ts = Some(t);
            }
        }
        if let Some(t) = later.max_ts {
            if self.max_ts.as_ref().is_none_or(|m| t > *m) {
                self.max_ts = Some(t);
            }
        }
        for (e, n) in later.errors {
            *self.errors.entry(e).or_insert(0) += n;
        }
        if later.source.is_some() {
            self.source = later.source;
            self.resolved = later.resolved;
        } else {
            self.resolved |= later.resolved;
        }
        self.visit.absorb(later.visit);
        false
    }

    /// Fold a later range's per-seq states and sizes into this one's; true
    /// if some seq has a job line in both.
    fn fold_seqs(&mut self, later: &mut RangeScan<K, V>) -> bool {
        // Wherever the later range has a terminal event, its size wins; the
        // later range's big sizes are all for such seqs.
        self.sizes.big.extend(std::mem::take(&mut later.sizes.big));
        let offset = self
            .sizes
            .adopt_arena(std::mem::take(&mut later.sizes.arena));
        let their_states = std::mem::take(&mut later.states.pages);
        let mut their_sizes = std::mem::take(&mut later.sizes.pages);
        let n = their_states.len();
        if self.states.pages.len() < n {
            self.states.pages.resize_with(n, || None);
        }
        if self.sizes.pages.len() < n {
            self.sizes.pages.resize_with(n, || None);
        }
        let mut both = 0u8;
        for (p, theirs) in their_states.into_iter().enumerate() {
            let Some(theirs) = theirs else { continue };
            let their_size_page = their_sizes.get_mut(p).and_then(Option::take);
            match &mut self.states.pages[p] {
                mine @ None => {
                    // Nothing here for this page yet (so no sizes either).
                    *mine = Some(theirs);
                    if let Some(mut page) = their_size_page {
                        if offset > 0 {
                            for (k, slot) in page.iter_mut().enumerate() {
                                let seq = ((p << PAGE_BITS) | k) as u32;
                                *slot = self.sizes.translate(seq, *slot, offset);
                            }
                        }
                        self.sizes.pages[p] = Some(page);
                    }
                }
                Some(mine) => {
                    if their_size_page.is_some() || self.sizes.pages[p].is_some() {
                        let mut my_sizes =
                            self.sizes.pages[p].take().unwrap_or_else(zero_size_page);
                        for (k, &b) in theirs.iter().enumerate() {
                            if b & TERM_MASK != 0 {
                                let slot = their_size_page.as_ref().map_or(0, |t| t[k]);
                                let seq = ((p << PAGE_BITS) | k) as u32;
                                my_sizes[k] = self.sizes.translate(seq, slot, offset);
                            }
                        }
                        self.sizes.pages[p] = Some(my_sizes);
                    }
                    for (a, &b) in mine.iter_mut().zip(theirs.iter()) {
                        both |= *a & b;
                        *a = fold_state(*a, b);
                    }
                }
            }
        }
        both & HAS_JOB != 0
    }

    fn finish_with(self, file: Arc<File>, size: u64) -> (Snapshot, V::Output) {
        let RangeScan {
            states,
            sizes,
            jobs,
            more_jobs,
            jobs_sorted,
            max_job_seq,
            ids,
            malformed,
            min_ts,
            max_ts,
            errors,
            source,
            resolved,
            collect_ids,
            visit,
            ..
        } = self;

        let lists: Vec<Vec<K>> = std::iter::once(jobs).chain(more_jobs).collect();
        let outcomes = Outcomes {
            states: &states,
            sizes: &sizes,
        };
        let visited = visit.finish(&outcomes, &lists, &file);

        // Three independent passes over what the scan gathered; on a big log
        // they run side by side.
        let big = lists.iter().map(Vec::len).sum::<usize>() >= 1 << 16;
        let (tally, pending, ids) = if big {
            std::thread::scope(|s| {
                let pending = s.spawn(|| pending_of(lists, &states, jobs_sorted));
                let ids = collect_ids.then(|| s.spawn(|| id_set(ids)));
                let tally = tally(&states, &sizes);
                (tally, join(pending), ids.map(join))
            })
        } else {
            let ids = collect_ids.then(|| id_set(ids));
            (
                tally(&states, &sizes),
                pending_of(lists, &states, jobs_sorted),
                ids,
            )
        };
        drop(sizes);
        let Tally {
            total,
            completed,
            failed,
            in_flight,
            words,
            bytes_completed,
        } = tally;
        let bitmap = Bitmap::from_words(words);
        let pending_jobs = PendingJobs::new(file, K::into_list(pending));

        let text = |b: Vec<u8>| {
            String::from_utf8(b)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        };
        let mut errors: Vec<(String, u64)> = errors
            .into_iter()
            .map(|(e, n)| (text(e.into_vec()), n))
            .collect();
        errors.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

        let snapshot = Snapshot {
            max_seq: u64::from(max_job_seq),
            total,
            completed,
            failed,
            pending: total - completed - failed,
            in_flight,
            malformed,
            bytes_completed,
            first_ts: min_ts.map(text),
            last_ts: max_ts.map(text),
            errors,
            source: source.map(text),
            resolved,
            size,
            bitmap,
            pending_jobs,
            ids,
        };
        (snapshot, visited)
    }
}

impl<K: JobKey> RangeScan<K> {
    #[cfg(test)]
    fn finish(self, file: Arc<File>, size: u64) -> Snapshot {
        self.finish_with(file, size).0
    }
}

/// A scoped thread's result, its panic passed on.
fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// The counts, done bitmap and byte total of the folded per-seq states.
struct Tally {
    total: u64,
    completed: u64,
    failed: u64,
    in_flight: u64,
    words: Vec<u64>,
    bytes_completed: ByteTotal,
}

fn tally(states: &States, sizes: &Sizes) -> Tally {
    let (mut total, mut completed, mut failed, mut in_flight) = (0u64, 0u64, 0u64, 0u64);
    let mut bytes: u128 = 0;
    let mut big_bytes: Option<Vec<u8>> = None;
    let mut words = vec![0u64; states.pages.len() * (PAGE / 64)];
    for (p, page) in states.pages.iter().enumerate() {
        let Some(page) = page else { continue };
        let size_page = sizes.pages.get(p).and_then(|s| s.as_deref());
        for (j, chunk) in page.chunks_exact(64).enumerate() {
            let mut w = 0u64;
            for (bit, &s) in chunk.iter().enumerate() {
                let job = u64::from(s & HAS_JOB);
                let term = s & TERM_MASK;
                let done = is_done(s);
                total += job;
                completed += job & u64::from(term == T_COMPLETED);
                failed += job & u64::from(term == T_FAILED);
                in_flight += job & u64::from(!done && s & STARTED != 0);
                w |= u64::from(done) << bit;
                if job != 0 && term == T_COMPLETED {
                    let k = j * 64 + bit;
                    let slot = size_page.map_or(0, |sp| sp[k]);
                    let seq = ((p << PAGE_BITS) | k) as u32;
                    match sizes.value(seq, slot) {
                        Ok(n) => bytes += u128::from(n),
                        Err(digits) => {
                            let sum = add_decimal(big_bytes.as_deref().unwrap_or(b"0"), digits);
                            big_bytes = Some(sum);
                        }
                    }
                }
            }
            words[p * (PAGE / 64) + j] = w;
        }
    }
    let bytes_completed = match big_bytes {
        None => ByteTotal::Small(bytes),
        Some(big) => {
            let sum = add_decimal(&big, bytes.to_string().as_bytes());
            ByteTotal::Decimal(String::from_utf8_lossy(&sum).into_owned())
        }
    };
    Tally {
        total,
        completed,
        failed,
        in_flight,
        words,
        bytes_completed,
    }
}

/// The pending entries of the job lists, joined in seq order. Each list
/// keeps its pending entries in its own memory, then they are joined in the
/// first list's memory: it was reserved for a whole range of job lines, so
/// this rarely needs fresh pages.
fn pending_of<K: JobKey>(lists: Vec<Vec<K>>, states: &States, sorted: bool) -> Vec<K> {
    let mut lists = lists.into_iter().map(|mut list| {
        list.retain(|k| !is_done(states.get(k.seq())));
        list
    });
    let mut pending = lists.next().unwrap_or_default();
    for list in lists {
        pending.extend_from_slice(&list);
    }
    if !sorted {
        pending.sort_unstable();
    }
    pending.shrink_to_fit();
    pending
}

fn id_set(hashes: Vec<u128>) -> IdSet {
    let mut set = IdSet::with_capacity(hashes.len());
    set.extend(hashes);
    set
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

    fn opts(threads: usize, block: usize) -> ScanOptions {
        ScanOptions {
            collect_ids: true,
            threads,
            ranges_per_thread: 1 + threads % 3,
            block_size: block,
            min_range_bytes: 1,
            wide_keys: false,
        }
    }

    fn scan_text(text: &str) -> Snapshot {
        scan_file(file_with(text.as_bytes()), &opts(1, 1 << 16)).unwrap()
    }

    fn pending_lines(s: &Snapshot) -> Vec<String> {
        let p = &s.pending_jobs;
        let mut r = p.reader();
        (0..p.len())
            .map(|i| {
                let (_, off) = p.list().get(i).unwrap();
                String::from_utf8(r.line_at(off).unwrap().to_vec()).unwrap()
            })
            .collect()
    }

    const JOB1: &str =
        r#"{"event":"job","seq":1,"id":"a","op":"download","ts":"20260101T000001Z"}"#;
    const JOB2: &str =
        r#"{"event":"job","seq":2,"id":"b","op":"download","ts":"20260101T000002Z"}"#;
    const JOB3: &str =
        r#"{"event":"job","seq":3,"id":"c","op":"download","ts":"20260101T000003Z"}"#;

    #[test]
    fn empty_and_blank_files() {
        for (text, malformed) in [("", 0), ("\n", 0), ("\n\n  \n\t\r\n", 0), ("   ", 1)] {
            let s = scan_text(text);
            assert_eq!(
                (s.total, s.malformed, s.pending),
                (0, malformed, 0),
                "{text:?}"
            );
            assert_eq!(s.size, text.len() as u64);
            assert!(s.first_ts.is_none() && s.source.is_none() && !s.resolved);
            assert!(s.bitmap.is_empty() && s.pending_jobs.is_empty());
            assert_eq!(s.ids.as_ref().map(|i| i.len()), Some(0));
        }
    }

    #[test]
    fn state_machine() {
        let text = [
            JOB1,
            JOB2,
            JOB3,
            r#"{"event":"job","seq":4,"id":"d"}"#,
            r#"{"event":"job","seq":5,"id":"e"}"#,
            r#"{"event":"job","seq":6,"id":"f"}"#,
            r#"{"event":"started","seq":1,"worker":1}"#,
            r#"{"event":"completed","seq":1,"extra":{"item_size":100}}"#,
            r#"{"event":"started","seq":2}"#,
            r#"{"event":"failed","seq":2,"error":"HTTP 503","retry":1}"#,
            r#"{"event":"failed","seq":3,"error":"dark","retry":false}"#,
            r#"{"event":"started","seq":4}"#,
            r#"{"event":"completed","seq":5,"extra":{"item_size":7}}"#,
            r#"{"event":"requeued","seq":5}"#,
            r#"{"event":"completed","seq":6}"#,
            r#"{"event":"started","seq":6}"#,
            r#"{"event":"failed","seq":9,"error":"dark","retry":false}"#,
        ]
        .join("\n")
            + "\n";
        let s = scan_text(&text);
        assert_eq!(s.total, 6);
        assert_eq!(s.completed, 2); // 1, 6 (started after done keeps it done)
        assert_eq!(s.failed, 1); // 3
        assert_eq!(s.pending, 3); // 2 (will retry), 4 (in flight), 5 (requeued)
        assert_eq!(s.in_flight, 1); // 4
        assert_eq!(s.malformed, 0);
        assert_eq!(s.bytes_completed, ByteTotal::Small(100)); // 5's completion was undone
        assert_eq!(s.max_seq, 6);
        assert_eq!(s.bitmap.iter().collect::<Vec<_>>(), vec![1, 3, 6, 9]);
        assert_eq!(s.pending_jobs.seqs(), vec![2, 4, 5]);
        assert_eq!(pending_lines(&s)[0], JOB2);
        assert_eq!(
            s.errors,
            vec![("dark".to_string(), 2), ("HTTP 503".to_string(), 1)]
        );
        assert_eq!(s.first_ts.as_deref(), Some("20260101T000001Z"));
        assert_eq!(s.last_ts.as_deref(), Some("20260101T000003Z"));
        let ids = s.ids.unwrap();
        assert_eq!(ids.len(), 6);
        assert!(ids.contains("a") && ids.contains("f") && !ids.contains("g"));
    }

    #[test]
    fn failure_then_retry_then_done_and_back() {
        let text = [
            JOB1,
            r#"{"event":"failed","seq":1,"retry":false}"#,
            r#"{"event":"requeued","seq":1}"#,
            r#"{"event":"started","seq":1}"#,
            r#"{"event":"failed","seq":1,"retry":0}"#,
        ]
        .join("\n")
            + "\n";
        let s = scan_text(&text);
        assert_eq!(
            (s.total, s.completed, s.failed, s.pending, s.in_flight),
            (1, 0, 0, 1, 0)
        );
        // retry must be exactly false: 0, null, "false" keep it pending.
        for retry in ["0", "null", "\"false\"", "[]"] {
            let t = format!("{JOB1}\n{{\"event\":\"failed\",\"seq\":1,\"retry\":{retry}}}\n");
            assert_eq!(scan_text(&t).failed, 0, "{retry}");
        }
        let t = format!("{JOB1}\n{{\"event\":\"failed\",\"seq\":1,\"retry\":false}}\n");
        assert_eq!(scan_text(&t).failed, 1);
        let t = format!("{JOB1}\n{{\"event\":\"failed\",\"seq\":1}}\n");
        assert_eq!(scan_text(&t).pending, 1);
    }

    #[test]
    fn seq_rules() {
        for (seq, ok) in [
            ("1", true),
            ("100000000", true),
            ("0", false),
            ("-0", false),
            ("-1", false),
            ("100000001", false),
            ("1.0", false),
            ("1e0", false),
            ("true", false),
            ("\"1\"", false),
            ("null", false),
            ("99999999999999999999999", false),
        ] {
            for event in ["job", "started", "completed", "failed", "requeued"] {
                let t = format!("{{\"event\":\"{event}\",\"seq\":{seq},\"id\":\"x\"}}\n");
                let s = scan_text(&t);
                assert_eq!(s.malformed, u64::from(!ok), "{t}");
            }
        }
        let s = scan_text("{\"event\":\"completed\",\"seq\":100000000}\n");
        assert!(s.bitmap.contains(100_000_000));
        // A missing seq is malformed for seq kinds, fine for others.
        let s = scan_text(
            "{\"event\":\"started\"}\n{\"event\":\"source\"}\n{\"event\":\"progress\"}\n",
        );
        assert_eq!(s.malformed, 1);
    }

    #[test]
    fn malformed_lines_are_counted_and_skipped() {
        let text = [
            JOB1,
            "garbage",
            "{\"event\":\"job\",\"seq\":2}", // job without id
            "{\"event\":\"job\",\"seq\":2,\"id\":7}", // id not a string
            "{\"seq\":1}",                   // no event
            "{\"event\":null,\"seq\":1}",    // event not a string
            "{\"event\":\"completed\",\"seq\":1,}", // trailing comma
            "{\"event\":\"completed\",\"seq\":1,\"x\":NaN}", // NaN
            "{\"event\":\"completed\",\"seq\":1,\"x\":\"\\ud800\"}", // lone surrogate
            "[1]",
            "   ",
            "",
            "{\"event\":\"mystery\"}", // unknown kind: ignored
            "{\"event\":\"mystery\",\"seq\":\"whatever\"}",
        ]
        .join("\n")
            + "\n";
        let mut data = text.into_bytes();
        data.extend_from_slice(b"{\"event\":\"completed\",\"seq\":1}\xff\n");
        let s = scan_file(file_with(&data), &opts(1, 1 << 16)).unwrap();
        assert_eq!(s.malformed, 10);
        assert_eq!((s.total, s.completed, s.pending), (1, 0, 1));
        assert!(s.bitmap.is_empty());
    }

    #[test]
    fn invalid_utf8_anywhere_is_malformed() {
        let mut data = format!("{JOB1}\n").into_bytes();
        data.extend_from_slice(b"{\"event\":\"completed\",\"seq\":1,\"ts\":\"\xc3\x28\"}\n");
        data.extend_from_slice(b"\xef\xbb\xbf{\"event\":\"completed\",\"seq\":1}\n");
        let s = scan_file(file_with(&data), &opts(1, 64)).unwrap();
        assert_eq!((s.malformed, s.completed), (2, 0));
    }

    #[test]
    fn duplicate_job_lines_first_wins() {
        let text = [
            JOB1,
            r#"{"event":"job","seq":1,"id":"other","ts":"00000000T000000Z"}"#,
            JOB2,
        ]
        .join("\n")
            + "\n";
        let s = scan_text(&text);
        assert_eq!((s.total, s.malformed), (2, 1));
        assert_eq!(pending_lines(&s), vec![JOB1.to_string(), JOB2.to_string()]);
        let ids = s.ids.unwrap();
        assert!(!ids.contains("other"));
        // The malformed duplicate's ts does not count.
        assert_eq!(s.first_ts.as_deref(), Some("20260101T000001Z"));
    }

    #[test]
    fn events_before_the_job_line_count() {
        let text = [
            r#"{"event":"completed","seq":2}"#,
            r#"{"event":"started","seq":3}"#,
            JOB1,
            JOB2,
            JOB3,
        ]
        .join("\n")
            + "\n";
        let s = scan_text(&text);
        assert_eq!((s.total, s.completed, s.in_flight, s.pending), (3, 1, 1, 2));
    }

    #[test]
    fn torn_tail() {
        let s = scan_text(&format!("{JOB1}\n{{\"event\":\"completed\",\"seq\":1}}"));
        assert_eq!((s.malformed, s.completed, s.pending), (1, 0, 1));
        let s = scan_text(&format!("{JOB1}\n{{\"event\":\"compl"));
        assert_eq!(s.malformed, 1);
        // Even a blank torn tail is not a line.
        let s = scan_text(&format!("{JOB1}\n  \r"));
        assert_eq!(s.malformed, 1);
        // A job line without its newline is not a job.
        let s = scan_text(JOB1);
        assert_eq!((s.total, s.malformed), (0, 1));
    }

    #[test]
    fn crlf_lines() {
        let text = format!("{JOB1}\r\n{{\"event\":\"completed\",\"seq\":1}}\r\n\r\n");
        let s = scan_text(&text);
        assert_eq!((s.total, s.completed, s.malformed), (1, 1, 0));
    }

    #[test]
    fn source_and_resolved() {
        let s = scan_text("{\"event\":\"resolved\"}\n");
        assert_eq!((s.source.as_deref(), s.resolved), (None, true));
        let s = scan_text(" {\"event\":\"source\",\"query\":\"q1\"} \r\r\n");
        assert_eq!(
            s.source.as_deref(),
            Some(" {\"event\":\"source\",\"query\":\"q1\"} ")
        );
        assert!(!s.resolved);
        let s = scan_text(
            "{\"event\":\"source\",\"query\":\"q1\"}\n{\"event\":\"resolved\"}\n{\"event\":\"source\",\"query\":\"q2\"}\n",
        );
        assert_eq!(
            s.source.as_deref(),
            Some("{\"event\":\"source\",\"query\":\"q2\"}")
        );
        assert!(!s.resolved);
        let s = scan_text(
            "{\"event\":\"source\",\"query\":\"q2\"}\n{\"event\":\"resolved\",\"ts\":\"z\"}\n{\"event\":\"resolvedx\"}\n",
        );
        assert!(s.resolved);
        assert_eq!(s.last_ts.as_deref(), Some("z"));
        // A malformed source line is not a source line.
        let s = scan_text("{\"event\":\"source\",\"query\":\"q\"}\n{\"event\":\"source\",}\n");
        assert_eq!(
            s.source.as_deref(),
            Some("{\"event\":\"source\",\"query\":\"q\"}")
        );
    }

    #[test]
    fn timestamps_and_errors() {
        let text = [
            r#"{"event":"started","seq":1,"ts":"b"}"#,
            r#"{"event":"started","seq":1,"ts":"\u00e9"}"#,
            r#"{"event":"started","seq":1,"ts":"a"}"#,
            r#"{"event":"started","seq":1,"ts":5}"#,
            r#"{"event":"mystery","ts":"0"}"#,
            r#"{"event":"started","seq":0,"ts":"0"}"#,
            r#"{"event":"failed","seq":1,"error":"x\u00e9"}"#,
            r#"{"event":"failed","seq":1,"error":"xé"}"#,
            r#"{"event":"failed","seq":1,"error":"b"}"#,
            r#"{"event":"failed","seq":1,"error":"a"}"#,
            r#"{"event":"failed","seq":1,"error":null}"#,
            r#"{"event":"failed","seq":0,"error":"a"}"#,
            r#"{"event":"completed","seq":1,"error":"a"}"#,
        ]
        .join("\n")
            + "\n";
        let s = scan_text(&text);
        assert_eq!(s.first_ts.as_deref(), Some("a"));
        assert_eq!(s.last_ts.as_deref(), Some("é"));
        assert_eq!(
            s.errors,
            vec![
                ("xé".to_string(), 2),
                ("a".to_string(), 1),
                ("b".to_string(), 1)
            ]
        );
        assert_eq!(s.malformed, 2);
    }

    #[test]
    fn bytes_completed_counts_the_completion_of_each_completed_job() {
        let text = [
            JOB1,
            JOB2,
            JOB3,
            r#"{"event":"job","seq":4,"id":"d"}"#,
            r#"{"event":"job","seq":5,"id":"e"}"#,
            r#"{"event":"completed","seq":1,"extra":{"item_size":5}}"#,
            r#"{"event":"completed","seq":1,"extra":{"item_size":7}}"#,
            r#"{"event":"completed","seq":2,"extra":{"item_size":18446744073709551615}}"#,
            r#"{"event":"completed","seq":3,"extra":{"item_size":10}}"#,
            r#"{"event":"failed","seq":3,"retry":1}"#,
            r#"{"event":"completed","seq":4,"extra":{"item_size":123456789012345678901234567890}}"#,
            r#"{"event":"completed","seq":5,"extra":{"item_size":10}}"#,
            r#"{"event":"completed","seq":5,"extra":{"item_size":-1}}"#,
            r#"{"event":"completed","seq":9,"extra":{"item_size":100}}"#,
        ]
        .join("\n")
            + "\n";
        let want = ByteTotal::Decimal("123456789030792422974944119512".to_string());
        for threads in [1, 2, 3, 7] {
            let s = scan_file(file_with(text.as_bytes()), &opts(threads, 16)).unwrap();
            assert_eq!(s.bytes_completed, want, "{threads}");
            assert_eq!(s.completed, 4);
        }
        assert_eq!(add_decimal(b"999", b"1"), b"1000");
        assert_eq!(add_decimal(b"0", b"0"), b"0");
        assert_eq!(add_decimal(b"", b""), b"0");
        assert_eq!(ByteTotal::Small(12).to_string(), "12");
    }

    #[test]
    fn bytes_completed_needs_a_job_line() {
        let text = [
            r#"{"event":"completed","seq":1,"extra":{"item_size":18446744073709551615}}"#,
            r#"{"event":"completed","seq":1,"extra":{"item_size":18446744073709551615}}"#,
            r#"{"event":"completed","seq":2,"extra":{"item_size":-5}}"#,
            r#"{"event":"completed","seq":2,"extra":{"item_size":1.5}}"#,
            r#"{"event":"completed","seq":2,"extra":{"item_size":"5"}}"#,
            r#"{"event":"failed","seq":2,"extra":{"item_size":5}}"#,
            r#"{"event":"completed","seq":0,"extra":{"item_size":5}}"#,
        ]
        .join("\n")
            + "\n";
        let s = scan_text(&text);
        // No job lines: nothing counts.
        assert_eq!(s.bytes_completed, ByteTotal::Small(0));
    }

    #[test]
    fn pending_in_seq_order_even_when_written_out_of_order() {
        let text = [
            r#"{"event":"job","seq":5,"id":"e"}"#,
            r#"{"event":"job","seq":2,"id":"b"}"#,
            r#"{"event":"job","seq":9,"id":"i"}"#,
            r#"{"event":"job","seq":1,"id":"a"}"#,
            r#"{"event":"completed","seq":9}"#,
        ]
        .join("\n")
            + "\n";
        for threads in 1..=4 {
            let s = scan_file(file_with(text.as_bytes()), &opts(threads, 8)).unwrap();
            assert_eq!(s.pending_jobs.seqs(), vec![1, 2, 5]);
            assert_eq!(s.max_seq, 9);
            let lines = pending_lines(&s);
            assert_eq!(lines[0], r#"{"event":"job","seq":1,"id":"a"}"#);
            assert_eq!(lines[2], r#"{"event":"job","seq":5,"id":"e"}"#);
        }
    }

    /// A deterministic pseudo-random log with every feature in it.
    fn messy_log(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        let mut rnd = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut out = Vec::new();
        let mut next_job = 1u64;
        for _ in 0..n {
            let seq = 1 + rnd(next_job + 2);
            let ts = format!("2026{:02}01T0000{:02}Z", 1 + rnd(12), rnd(60));
            let line = match rnd(20) {
                0..=3 => {
                    next_job += 1;
                    format!(
                        "{{\"event\":\"job\",\"seq\":{},\"id\":\"item-{}\",\"ts\":\"{ts}\"}}",
                        next_job - 1,
                        rnd(1000)
                    )
                }
                4 => format!("{{\"event\":\"job\",\"seq\":{seq},\"id\":\"dup-{seq}\"}}"),
                5..=6 => format!("{{\"event\":\"started\",\"seq\":{seq},\"ts\":\"{ts}\"}}"),
                                7..=9 => format!(
                    "{{\"event\":\"completed\",\"seq\":{seq},\"ts\":\"{ts}\",\"extra\":{{\"item_size\":{}}}}}",
                    match rnd(10) {
                        0 => (5_000_000_000 + rnd(1 << 40)).to_string(),
                        1 => format!("{}000000000000000000000", 1 + rnd(9)),
                        2 => "-1".to_string(),
                        _ => rnd(1 << 20).to_string(),
                    }
                ),
                10 => format!(
                    "{{\"event\":\"failed\",\"seq\":{seq},\"error\":\"e{}\",\"retry\":{}}}",
                    rnd(4),
                    if rnd(2) == 0 { "false".into() } else { rnd(3).to_string() }
                ),
                11 => format!("{{\"event\":\"requeued\",\"seq\":{seq}}}"),
                12 => format!("{{\"event\":\"source\",\"n\":{}}}", rnd(100)),
                13 => "{\"event\":\"resolved\"}".to_string(),
                14 => "{\"event\":\"completed\",\"seq\":".to_string(),
                15 => String::new(),
                16 => format!(" {{ \"seq\" : {seq} , \"event\" : \"st\\u0061rted\" }} \r"),
                17 => format!("{{\"event\":\"unknown\",\"seq\":{seq}}}"),
                18 => format!("{{\"event\":\"completed\",\"seq\":{}}}", rnd(300)),
                _ => "\u{1}".to_string(),
            };
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b"{\"event\":\"comp");
        out
    }

    fn messy_log_without_dups(n: usize, seed: u64) -> Vec<u8> {
        let text = String::from_utf8(messy_log(n, seed)).unwrap();
        text.split('\n')
            .filter(|l| !l.contains("dup-"))
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes()
    }

    #[test]
    fn threads_and_block_sizes_do_not_change_the_snapshot() {
        for (seed, data) in [
            (1, messy_log(3000, 1)),
            (2, messy_log(500, 2)),
            (3, messy_log_without_dups(3000, 3)),
            (4, messy_log_without_dups(40, 4)),
        ] {
            let reference = scan_file(file_with(&data), &opts(1, 1 << 20)).unwrap();
            assert!(
                reference.total > 0 && reference.malformed > 0,
                "seed {seed}"
            );
            for threads in [1, 2, 3, 5, 8, 13] {
                for block in [1, 3, 17, 64, 1000] {
                    let mut o = opts(threads, block);
                    o.wide_keys = block == 17;
                    let s = scan_file(file_with(&data), &o).unwrap();
                    assert_eq!(s, reference, "seed {seed} threads {threads} block {block}");
                    assert_eq!(pending_lines(&s), pending_lines(&reference));
                }
            }
        }
    }

    #[test]
    fn every_split_point_of_a_small_log() {
        let data = messy_log_without_dups(60, 9);
        let reference = scan_file(file_with(&data), &opts(1, 1 << 20)).unwrap();
        let f = file_with(&data);
        let size = data.len() as u64;
        // Two ranges cut at every possible byte (rounded to line starts).
        for cut in 0..=size {
            let bounds = [0, next_line_start(&f, cut, size).unwrap(), size];
            let o = opts(1, 7);
            let mut bufs = Buffers::new(&o);
            let a = scan_range::<u64>(&f, bounds[0], bounds[1], &o, &mut bufs).unwrap();
            let b = scan_range::<u64>(&f, bounds[1], bounds[2], &o, &mut bufs).unwrap();
            let mut a = a;
            assert!(!a.absorb(b));
            assert_eq!(a.finish(f.clone(), size), reference, "cut {cut}");
        }
    }

    #[test]
    fn event_kinds_plain_and_escaped() {
        let kind = |t: &str| {
            let line = format!("{{\"event\":{t}}}");
            let f = json::parse_line(line.as_bytes()).unwrap().unwrap();
            match f.event {
                Value::Str(s) => Kind::of(s),
                _ => None,
            }
        };
        for (name, k) in [
            ("job", Kind::Job),
            ("started", Kind::Started),
            ("completed", Kind::Completed),
            ("failed", Kind::Failed),
            ("requeued", Kind::Requeued),
            ("source", Kind::Source),
            ("resolved", Kind::Resolved),
        ] {
            assert!(kind(&format!("\"{name}\"")) == Some(k), "{name}");
            let escaped: String = name
                .chars()
                .map(|c| format!("\\u{:04x}", c as u32))
                .collect();
            assert!(kind(&format!("\"{escaped}\"")) == Some(k), "{escaped}");
        }
        for other in [
            "",
            "jo",
            "jobs",
            "Job",
            "complete",
            "completes",
            "completedd",
            "faile",
            "failed ",
            "sourcex",
            "resolve",
            "requeue",
            "checkpoint",
            "started\\u0000",
        ] {
            assert!(kind(&format!("\"{other}\"")).is_none(), "{other}");
        }
    }

    #[test]
    fn fold_is_associative() {
        let states: Vec<u8> = (0u8..16).collect();
        for &a in &states {
            for &b in &states {
                for &c in &states {
                    assert_eq!(
                        fold_state(fold_state(a, b), c),
                        fold_state(a, fold_state(b, c))
                    );
                }
            }
        }
    }

    #[test]
    fn newline_bitmap() {
        let mut words = Vec::new();
        for len in [0usize, 1, 63, 64, 65, 127, 128, 200] {
            let bytes: Vec<u8> = (0..len)
                .map(|i| if i % 5 == 3 { b'\n' } else { b'a' })
                .collect();
            newline_words(&bytes, &mut words);
            assert_eq!(words.len(), len.div_ceil(64));
            let got: Vec<usize> = (0..len)
                .filter(|&i| words[i / 64] >> (i % 64) & 1 == 1)
                .collect();
            let want: Vec<usize> = (0..len).filter(|&i| bytes[i] == b'\n').collect();
            assert_eq!(got, want, "{len}");
        }
    }

    #[test]
    fn split_lands_on_line_starts() {
        let data = b"aaaa\nbb\n\nccccccc\nd";
        let f = file_with(data);
        let size = data.len() as u64;
        assert_eq!(next_line_start(&f, 0, size).unwrap(), 0);
        assert_eq!(next_line_start(&f, 1, size).unwrap(), 5);
        assert_eq!(next_line_start(&f, 5, size).unwrap(), 5);
        assert_eq!(next_line_start(&f, 6, size).unwrap(), 8);
        assert_eq!(next_line_start(&f, 9, size).unwrap(), 9);
        assert_eq!(next_line_start(&f, 18, size).unwrap(), size);
        for n in 1..30 {
            let b = split(&f, size, n).unwrap();
            assert_eq!((b[0], *b.last().unwrap()), (0, size));
            assert!(b.windows(2).all(|w| w[0] < w[1]));
            for &x in &b[1..b.len() - 1] {
                assert_eq!(data[x as usize - 1], b'\n');
            }
        }
        let empty = file_with(b"");
        assert_eq!(split(&empty, 0, 4).unwrap(), vec![0, 0]);
    }

    #[test]
    fn cross_range_duplicate_falls_back_to_one_pass() {
        let mut text = String::new();
        for seq in 1..=50 {
            text += &format!(
                "{{\"event\":\"job\",\"seq\":{seq},\"id\":\"i{seq}\",\"ts\":\"t{seq:03}\"}}\n"
            );
        }
        // Duplicates of seq 1 late in the file, with extreme ts and new ids.
        text += "{\"event\":\"job\",\"seq\":1,\"id\":\"late\",\"ts\":\"a\"}\n";
        text += "{\"event\":\"job\",\"seq\":1,\"id\":\"later\",\"ts\":\"z\"}\n";
        let reference = scan_file(file_with(text.as_bytes()), &opts(1, 1 << 20)).unwrap();
        assert_eq!((reference.total, reference.malformed), (50, 2));
        assert_eq!(reference.first_ts.as_deref(), Some("t001"));
        assert_eq!(reference.last_ts.as_deref(), Some("t050"));
        assert!(!reference.ids.as_ref().unwrap().contains("late"));
        for threads in 2..6 {
            let s = scan_file(file_with(text.as_bytes()), &opts(threads, 5)).unwrap();
            assert_eq!(s, reference);
        }
    }

    #[test]
    fn big_logs_finish_in_parallel() {
        // Enough job lines for the final passes to run side by side.
        let n = 70_000u64;
        let mut text = String::new();
        for seq in 1..=n {
            text += &format!("{{\"event\":\"job\",\"seq\":{seq},\"id\":\"item-{seq}\"}}\n");
        }
        let (mut completed, mut failed, mut bytes) = (0, 0, 0u128);
        for seq in 1..=n {
            if seq % 3 == 0 {
                text += &format!(
                    "{{\"event\":\"completed\",\"seq\":{seq},\"extra\":{{\"item_size\":{}}}}}\n",
                    seq * 1000
                );
                completed += 1;
                bytes += u128::from(seq * 1000);
            } else if seq % 5 == 0 {
                text += &format!("{{\"event\":\"failed\",\"seq\":{seq},\"retry\":false}}\n");
                failed += 1;
            }
        }
        for threads in [1, 2, 3] {
            let mut o = opts(threads, 1 << 16);
            o.min_range_bytes = 1 << 16;
            let s = scan_file(file_with(text.as_bytes()), &o).unwrap();
            assert_eq!((s.total, s.completed, s.failed), (n, completed, failed));
            assert_eq!(s.pending, n - completed - failed);
            assert_eq!(s.pending_jobs.len() as u64, s.pending);
            assert_eq!(s.bytes_completed, ByteTotal::Small(bytes));
            assert_eq!(s.bitmap.len(), completed + failed);
            assert_eq!(s.ids.as_ref().map(|i| i.len()), Some(n as usize));
            let seqs = s.pending_jobs.seqs();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(seqs[0], 1);
        }
    }

    #[test]
    fn stray_huge_seqs_stay_cheap() {
        let text = "{\"event\":\"job\",\"seq\":100000000,\"id\":\"x\"}\n{\"event\":\"completed\",\"seq\":99999999}\n";
        let s = scan_text(text);
        assert_eq!((s.total, s.max_seq, s.pending), (1, 100_000_000, 1));
        assert!(s.bitmap.contains(99_999_999));
    }

    #[test]
    fn missing_file_is_an_os_error() {
        let err = scan_path(
            Path::new("/nonexistent/iabulk.jsonl"),
            &ScanOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let dir = tempfile::tempdir().unwrap();
        assert!(scan_path(dir.path(), &ScanOptions::default()).is_err());
    }

    #[test]
    fn default_options_scan_a_file_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        std::fs::write(&path, format!("{JOB1}\n{JOB2}\n")).unwrap();
        let s = scan_path(&path, &ScanOptions::default()).unwrap();
        assert_eq!((s.total, s.pending, s.ids.is_none()), (2, 2, true));
    }
}
