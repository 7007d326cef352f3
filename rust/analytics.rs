//! Job-log analytics: everything `iabulk status` reports, computed in the
//! scan's own pass.
//!
//! The meaning of every figure is in `python/iabulk/_native.pyi`
//! (`analyze`), restated in plain Python by `tests/model_analytics.py`. The
//! line rules are the scan's: [`Pass`] is a [`Visitor`](scan::Visitor) of
//! [`crate::scan`], so it sees exactly the event lines the scan accepts, and
//! the counts, bytes and timestamps are the scan's [`Snapshot`].
//!
//! How it stays one pass, parallel and lean:
//!
//! * Each range of the file keeps, per seq it has a terminal event for, one
//!   12-byte [`Slot`]: the range's last terminal event was a completion (the
//!   *candidate*: its time, duration, files, worker and disk), or not; and
//!   how many retried failures it saw. Values that do not fit (a time outside
//!   1970-2106, a duration over 18 hours, 65,536 files or more, worker 254 and
//!   up, the 255th disk) move the candidate whole into a side map. Slot pages
//!   are mapped, and unmapped, on their own: the memory they held is free
//!   again for the job lists made at the end.
//! * An *attempt* runs from a `started` to the next terminal event of its
//!   seq. The open attempts of a range (started, no terminal since) sit in a
//!   small map. A completion whose attempt may have started in an earlier
//!   range (no `started` or terminal event before it in its range) is an
//!   *orphan*, linked to the earlier ranges' open attempt when the ranges are
//!   folded.
//! * Folding a later range into the ranges before it: its orphans take their
//!   attempt, the earlier open attempts it ended are dropped, and wherever it
//!   has a terminal event its slot replaces the earlier one (retries add up).
//!   So the folded slot holds the seq's last completion if its last terminal
//!   event is one, which is the completion the counts count.
//! * `failed` events with a string error are kept in file order as (seq,
//!   message number); their causes are worked out at the end, when every
//!   job's id is known (the ids of failing jobs are read back from their job
//!   lines, in file order, on a thread of their own).
//! * At the end, one walk over the slots adds up the counted completions
//!   (those of seqs whose final state is completed, with a job line) and the
//!   retries of done jobs, using the scan's final per-seq outcomes and item
//!   sizes.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::json::{self, Fields, JsonStr, More, Value};
use crate::pending::{JobKey, LineReader, PendingJobs};
use crate::scan::{self, add_decimal, ByteTotal, Kind, Outcome, Outcomes, ScanOptions, Snapshot};

/// The most throughput buckets reported: the most recent ones.
pub const MAX_BUCKETS: u64 = 100_000;

/// Seconds from 0001-01-01 to 1970-01-01.
const UNIX_EPOCH: i64 = 719_162 * 86_400;

// -- time --------------------------------------------------------------------

/// Days from 0001-01-01 to the (proleptic Gregorian) date `y-m-d`.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 306
}

/// The date of day `days` counted from 0001-01-01 (day 0).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 306;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

/// Seconds from 0001-01-01T00:00:00Z to the UTC time `ts` written as
/// `%Y%m%dT%H%M%SZ`: exactly 16 ASCII characters, year 0001 to 9999, a real
/// date, hour below 24, minute and second below 60. `None` otherwise.
pub fn parse_ts(ts: &[u8]) -> Option<i64> {
    let ts: &[u8; 16] = ts.try_into().ok()?;
    if ts[8] != b'T' || ts[15] != b'Z' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        ts[from..to].iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let (y, mo, d) = (num(0, 4)?, num(4, 6)?, num(6, 8)?);
    let (h, mi, s) = (num(9, 11)?, num(11, 13)?, num(13, 15)?);
    const DAYS: [i64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let month_days = match mo {
        2 if is_leap(y) => 29,
        1..=12 => DAYS[mo as usize - 1],
        _ => return None,
    };
    if y < 1 || d < 1 || d > month_days || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s)
}

/// `secs` from 0001-01-01T00:00:00Z as `%Y%m%dT%H%M%SZ`.
pub fn format_ts(secs: i64) -> String {
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

// -- error causes ------------------------------------------------------------

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
}

/// A word (dots trimmed off both ends) that names a host: it holds a dot and
/// its last label is one or more ASCII letters.
fn is_host(core: &str) -> bool {
    match core.rsplit_once('.') {
        Some((_, last)) => !last.is_empty() && last.bytes().all(|b| b.is_ascii_alphabetic()),
        None => false,
    }
}

/// Characters that join an id to the text around it (so that it is not the
/// id there but part of a longer name).
fn is_name(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')
}

/// `message` with every whole-word occurrence of `id` (not next to a letter,
/// digit, `-` or `_`) replaced by `<id>`; `None` if there is none.
fn without_id(message: &str, id: &str) -> Option<String> {
    if id.is_empty() {
        return None;
    }
    let (m, n) = (message.as_bytes(), id.len());
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut from = 0;
    while let Some(at) = memchr::memmem::find(&m[from..], id.as_bytes()).map(|i| from + i) {
        let alone = (at == 0 || !is_name(m[at - 1])) && m.get(at + n).is_none_or(|&b| !is_name(b));
        if alone {
            let o = out.get_or_insert_with(|| String::with_capacity(message.len()));
            o.push_str(&message[copied..at]);
            o.push_str("<id>");
            copied = at + n;
            from = at + n;
        } else {
            // The next match may start inside this one (a match starts at a
            // character boundary, so byte steps are safe).
            from = at + 1;
        }
    }
    let mut out = out?;
    out.push_str(&message[copied..]);
    Some(out)
}

/// The cause of a failure: its message with the job's own id, host names
/// and numbers taken out (see `analyze` in `_native.pyi`).
pub fn error_cause(message: &str, id: Option<&str>) -> String {
    let with_id = id.and_then(|id| without_id(message, id));
    let text = with_id.as_deref().unwrap_or(message);
    // Hosts: maximal runs of word characters, dots at their ends left out.
    let b = text.as_bytes();
    let mut hosts = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let start = i;
        if is_word(b[i]) {
            while i < b.len() && is_word(b[i]) {
                i += 1;
            }
            let run = &text[start..i];
            let core = run.trim_matches('.');
            if is_host(core) {
                let lead = run.len() - run.trim_start_matches('.').len();
                hosts.push_str(&run[..lead]);
                hosts.push_str("<host>");
                hosts.push_str(&run[lead + core.len()..]);
            } else {
                hosts.push_str(run);
            }
        } else {
            while i < b.len() && !is_word(b[i]) {
                i += 1;
            }
            hosts.push_str(&text[start..i]);
        }
    }
    // Numbers: runs of digits, but a status code after "HTTP " stays, and
    // so do digits that end a word (md5, sha256, mp4).
    let b = hosts.as_bytes();
    let mut out = String::with_capacity(hosts.len());
    let mut i = 0;
    while i < b.len() {
        let start = i;
        if b[i].is_ascii_digit() {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let after_letter = start > 0 && b[start - 1].is_ascii_alphabetic();
            if after_letter || (i - start == 3 && hosts[..start].ends_with("HTTP ")) {
                out.push_str(&hosts[start..i]);
            } else {
                out.push('N');
            }
        } else {
            while i < b.len() && !b[i].is_ascii_digit() {
                i += 1;
            }
            out.push_str(&hosts[start..i]);
        }
    }
    out
}

// -- sums of integers of any size ----------------------------------------------

/// A non-negative integer read from the log: `extra.files` or `extra.item_size`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Num {
    Int(u64),
    /// Decimal digits of an integer above `u64::MAX`.
    Digits(Box<[u8]>),
}

impl Num {
    /// A non-negative JSON integer of any size; anything else counts as 0.
    fn of(v: Value<'_>) -> Num {
        match v {
            Value::UInt(n) => Num::Int(n),
            Value::BigUInt(d) => Num::Digits(d.into()),
            _ => Num::Int(0),
        }
    }
}

/// An exact sum of non-negative integers of any size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Total {
    small: u128,
    digits: Option<Vec<u8>>,
}

impl Total {
    #[inline]
    fn add(&mut self, n: u64) {
        // 2^64 values of up to 2^64 each would be needed to overflow.
        self.small += u128::from(n);
    }

    fn add_digits(&mut self, d: &[u8]) {
        let sum = add_decimal(self.digits.as_deref().unwrap_or(b"0"), d);
        self.digits = Some(sum);
    }

    fn add_num(&mut self, n: &Num) {
        match n {
            Num::Int(n) => self.add(*n),
            Num::Digits(d) => self.add_digits(d),
        }
    }

    fn add_size(&mut self, size: Result<u64, &[u8]>) {
        match size {
            Ok(n) => self.add(n),
            Err(d) => self.add_digits(d),
        }
    }

    fn value(&self) -> ByteTotal {
        match &self.digits {
            None => ByteTotal::Small(self.small),
            Some(d) => {
                let sum = add_decimal(d, self.small.to_string().as_bytes());
                ByteTotal::Decimal(String::from_utf8_lossy(&sum).into_owned())
            }
        }
    }
}

// -- per-seq state -----------------------------------------------------------

/// A multiplicative hasher for seqs.
#[derive(Default, Clone, Copy)]
struct SeqHasher(u64);

impl Hasher for SeqHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.0 = (u64::from(n) ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

type SeqMap<V> = HashMap<u32, V, BuildHasherDefault<SeqHasher>>;

/// A completion: what it adds to the figures if it is counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Cand {
    /// Its `ts`, seconds from 0001-01-01 (`None`: missing or not parsable).
    ts: Option<i64>,
    /// Seconds from its attempt's `started`.
    dur: Option<u64>,
    files: Num,
    /// The `worker` of its attempt's `started`.
    worker: Option<u64>,
    /// Its `extra.disk`, numbered in the range's (or the fold's) table.
    disk: Option<u32>,
}

impl Default for Num {
    fn default() -> Self {
        Num::Int(0)
    }
}

/// The start of an attempt.
#[derive(Debug, Clone, Copy)]
struct Start {
    ts: Option<i64>,
    worker: Option<u64>,
}

fn duration(start: Option<i64>, end: Option<i64>) -> Option<u64> {
    let (s, e) = (start?, end?);
    u64::try_from(e - s).ok()
}

// Slot flags.
/// The range has a terminal event for the seq.
const TERM: u8 = 1;
/// Its last terminal event is a completion: the candidate.
const CAND: u8 = 2;
/// The candidate's attempt may have started in an earlier range.
const ORPHAN: u8 = 4;
const HAS_TS: u8 = 8;
const HAS_DUR: u8 = 16;
/// The candidate is in [`Slots::big`], not in the slot.
const BIG: u8 = 32;
/// `Slot::retries` at this value: the count is in [`Slots::retries`].
const RETRIES_BIG: u8 = u8::MAX;
const NO_CODE: u8 = 0;

/// What one range (or a fold of ranges) knows of one seq; see the module doc.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Seconds from 1970 (`HAS_TS`).
    ts: u32,
    /// `HAS_DUR`.
    dur: u16,
    files: u16,
    /// Worker + 1, or [`NO_CODE`].
    worker: u8,
    /// Disk number + 1, or [`NO_CODE`].
    disk: u8,
    retries: u8,
    flags: u8,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 12);

const PAGE_BITS: u32 = 12;
const PAGE: usize = 1 << PAGE_BITS;

/// [`Slot`]s in lazily allocated pages of 4096 seqs, and the values too big
/// for them.
#[derive(Default, Clone)]
struct Slots {
    pages: Vec<Option<Page>>,
    big: SeqMap<Cand>,
    retries: SeqMap<u64>,
}

/// [`PAGE`] empty slots in an anonymous mapping of their own, unmapped when
/// dropped. (Heap memory freed once the slots are added up would stay
/// resident, and the job lists made next would come on top of it.)
struct Page {
    ptr: std::ptr::NonNull<Slot>,
}

const PAGE_BYTES: usize = PAGE * std::mem::size_of::<Slot>();

impl Page {
    fn new() -> Page {
        // SAFETY: a fresh private anonymous mapping: no file, no other owner.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        match std::ptr::NonNull::new(at.cast::<Slot>()) {
            Some(ptr) if at != libc::MAP_FAILED => Page { ptr },
            _ => std::alloc::handle_alloc_error(
                std::alloc::Layout::from_size_align(PAGE_BYTES, 4096)
                    .unwrap_or_else(|_| std::alloc::Layout::new::<Slot>()),
            ),
        }
    }
}

impl std::ops::Deref for Page {
    type Target = [Slot];
    fn deref(&self) -> &[Slot] {
        // SAFETY: the mapping holds PAGE slots (zero-filled, and all zeros is
        // an empty Slot), is page-aligned and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), PAGE) }
    }
}

impl std::ops::DerefMut for Page {
    fn deref_mut(&mut self) -> &mut [Slot] {
        // SAFETY: as in `deref`, and `&mut self` is the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), PAGE) }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `Page::new`, unmapped once.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), PAGE_BYTES);
        }
    }
}

impl Clone for Page {
    fn clone(&self) -> Page {
        let mut page = Page::new();
        page.copy_from_slice(self);
        page
    }
}

// SAFETY: a Page owns its mapping exclusively, like a Box<[Slot]>.
unsafe impl Send for Page {}
// SAFETY: shared access is read-only, like &[Slot].
unsafe impl Sync for Page {}

fn empty_page() -> Page {
    Page::new()
}

impl Slots {
    #[inline]
    fn get(&self, seq: u32) -> Slot {
        match self.pages.get((seq >> PAGE_BITS) as usize) {
            Some(Some(page)) => page[seq as usize & (PAGE - 1)],
            _ => Slot::default(),
        }
    }

    #[inline]
    fn slot(&mut self, seq: u32) -> &mut Slot {
        let p = (seq >> PAGE_BITS) as usize;
        if p >= self.pages.len() {
            self.pages.resize_with(p + 1, || None);
        }
        &mut self.pages[p].get_or_insert_with(empty_page)[seq as usize & (PAGE - 1)]
    }

    /// The candidate a slot (with `CAND`) holds.
    fn cand(&self, seq: u32, s: Slot) -> Cand {
        if s.flags & BIG != 0 {
            return self.big.get(&seq).cloned().unwrap_or_default();
        }
        Cand {
            ts: (s.flags & HAS_TS != 0).then(|| i64::from(s.ts) + UNIX_EPOCH),
            dur: (s.flags & HAS_DUR != 0).then_some(u64::from(s.dur)),
            files: Num::Int(u64::from(s.files)),
            worker: (s.worker != NO_CODE).then(|| u64::from(s.worker) - 1),
            disk: (s.disk != NO_CODE).then(|| u32::from(s.disk) - 1),
        }
    }

    /// Make `c` the candidate of `seq` (`extra`: [`ORPHAN`] or 0).
    #[inline]
    fn put(&mut self, seq: u32, c: Cand, extra: u8) {
        let ts = match c.ts {
            None => Some(0),
            Some(t) => u32::try_from(t - UNIX_EPOCH).ok(),
        };
        let dur = match c.dur {
            None => Some(0),
            Some(d) => u16::try_from(d).ok(),
        };
        let files = match c.files {
            Num::Int(n) => u16::try_from(n).ok(),
            Num::Digits(_) => None,
        };
        let code = |v: Option<u64>| match v {
            None => Some(NO_CODE),
            Some(v) => v
                .checked_add(1)
                .and_then(|c| u8::try_from(c).ok())
                .filter(|&c| c != u8::MAX),
        };
        let (worker, disk) = (code(c.worker), code(c.disk.map(u64::from)));
        let slot = self.slot(seq);
        let was_big = slot.flags & BIG != 0;
        let mut flags = TERM | CAND | extra;
        match (ts, dur, files, worker, disk) {
            (Some(ts), Some(dur), Some(files), Some(worker), Some(disk)) => {
                flags |= if c.ts.is_some() { HAS_TS } else { 0 };
                flags |= if c.dur.is_some() { HAS_DUR } else { 0 };
                (slot.ts, slot.dur, slot.files) = (ts, dur, files);
                (slot.worker, slot.disk, slot.flags) = (worker, disk, flags);
                if was_big {
                    self.big.remove(&seq);
                }
            }
            _ => {
                slot.flags = flags | BIG;
                self.big.insert(seq, c);
            }
        }
    }

    /// A terminal event that is not a completion.
    #[inline]
    fn end(&mut self, seq: u32) {
        let slot = self.slot(seq);
        let was_big = slot.flags & BIG != 0;
        slot.flags = TERM;
        if was_big {
            self.big.remove(&seq);
        }
    }

    fn retries_of(&self, seq: u32, s: Slot) -> u64 {
        if s.retries == RETRIES_BIG {
            self.retries.get(&seq).copied().unwrap_or(0)
        } else {
            u64::from(s.retries)
        }
    }

    fn set_retries(&mut self, seq: u32, n: u64) {
        let slot = self.slot(seq);
        if n < u64::from(RETRIES_BIG) {
            slot.retries = n as u8;
            self.retries.remove(&seq);
        } else {
            slot.retries = RETRIES_BIG;
            self.retries.insert(seq, n);
        }
    }

    #[inline]
    fn add_retry(&mut self, seq: u32) {
        let slot = self.slot(seq);
        if slot.retries < RETRIES_BIG - 1 {
            slot.retries += 1;
        } else {
            let s = *slot;
            let n = self.retries_of(seq, s) + 1;
            self.set_retries(seq, n);
        }
    }
}

/// Names numbered in order of first sight (disks, error messages).
#[derive(Default, Clone)]
struct Names {
    codes: HashMap<Box<[u8]>, u32>,
    names: Vec<Box<[u8]>>,
}

impl Names {
    #[inline]
    fn code(&mut self, name: &[u8]) -> u32 {
        if let Some(&c) = self.codes.get(name) {
            return c;
        }
        let c = self.names.len() as u32;
        self.codes.insert(name.into(), c);
        self.names.push(name.into());
        c
    }

    /// Take `other`'s names in; how its numbers translate to ours.
    fn adopt(&mut self, other: &Names) -> Vec<u32> {
        other.names.iter().map(|n| self.code(n)).collect()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The analytics [`Visitor`](scan::Visitor): one per range, folded in file
/// order.
#[derive(Clone)]
pub struct Pass {
    bucket_seconds: i64,
    slots: Slots,
    /// Attempts started and not ended yet, by seq.
    open: SeqMap<Start>,
    /// Seqs whose candidate may be an orphan (see the module doc).
    orphans: Vec<u32>,
    disks: Names,
    messages: Names,
    /// `failed` events with a string error, in file order: (seq, message).
    failures: Vec<(u32, u32)>,
    /// The last plain 16-byte `ts` parsed, and what it gave.
    ts_cache: (u128, Option<i64>),
}

impl Pass {
    /// An empty pass; throughput buckets of `bucket_seconds` (at least 1).
    pub fn new(bucket_seconds: u64) -> Pass {
        Pass {
            bucket_seconds: i64::try_from(bucket_seconds.max(1)).unwrap_or(i64::MAX),
            slots: Slots::default(),
            open: SeqMap::default(),
            orphans: Vec::new(),
            disks: Names::default(),
            messages: Names::default(),
            failures: Vec::new(),
            ts_cache: (0, None),
        }
    }

    #[inline]
    fn ts(&mut self, v: Value<'_>) -> Option<i64> {
        let Value::Str(s) = v else { return None };
        ts_of(s, &mut self.ts_cache)
    }
}

#[inline]
fn ts_of(s: JsonStr<'_>, cache: &mut (u128, Option<i64>)) -> Option<i64> {
    if s.has_escapes() {
        return parse_ts(&s.bytes());
    }
    let raw: &[u8; 16] = s.raw().try_into().ok()?;
    let key = u128::from_le_bytes(*raw);
    if key != cache.0 {
        *cache = (key, parse_ts(raw));
    }
    cache.1
}

fn worker_of(v: Value<'_>) -> Option<u64> {
    match v {
        Value::UInt(w) => Some(w),
        _ => None,
    }
}

impl scan::Visitor for Pass {
    const MORE: bool = true;
    type Output = io::Result<Figures>;

    #[inline]
    fn event(&mut self, kind: Kind, seq: u32, f: &Fields<'_>, more: &More<'_>, _offset: u64) {
        match kind {
            Kind::Started => {
                let start = Start {
                    ts: self.ts(f.ts),
                    worker: worker_of(more.worker),
                };
                self.open.insert(seq, start);
            }
            Kind::Completed => {
                let start = self.open.remove(&seq);
                let fresh = start.is_none() && self.slots.get(seq).flags & TERM == 0;
                let ts = self.ts(f.ts);
                let disk = match more.disk {
                    Value::Str(d) => Some(self.disks.code(&d.bytes())),
                    _ => None,
                };
                let c = Cand {
                    ts,
                    dur: start.and_then(|s| duration(s.ts, ts)),
                    files: Num::of(more.files),
                    worker: start.and_then(|s| s.worker),
                    disk,
                };
                self.slots.put(seq, c, if fresh { ORPHAN } else { 0 });
                if fresh {
                    self.orphans.push(seq);
                }
            }
            Kind::Failed => {
                self.open.remove(&seq);
                self.slots.end(seq);
                if f.retry != Value::False {
                    self.slots.add_retry(seq);
                }
                if let Value::Str(e) = f.error {
                    let code = self.messages.code(&e.bytes());
                    self.failures.push((seq, code));
                }
            }
            Kind::Requeued => {
                self.open.remove(&seq);
                self.slots.end(seq);
            }
            Kind::Job | Kind::Source | Kind::Resolved => {}
        }
    }

    fn absorb(&mut self, mut later: Pass) {
        // Its orphans take the attempt the ranges before it left open.
        for &seq in &later.orphans {
            let s = later.slots.get(seq);
            if s.flags & ORPHAN == 0 {
                continue; // no longer its candidate
            }
            let mut c = later.slots.cand(seq, s);
            if let Some(start) = self.open.get(&seq) {
                c.dur = duration(start.ts, c.ts);
                c.worker = start.worker;
            }
            later.slots.put(seq, c, 0);
        }
        // Attempts it ended or restarted are no longer open here.
        let their = &later.slots;
        self.open.retain(|&seq, _| their.get(seq).flags & TERM == 0);
        self.open.extend(later.open.drain());
        self.orphans.clear(); // ours were linked when we were folded

        // Disk numbers: theirs in our table.
        let disks = self.disks.adopt(&later.disks);
        if disks.iter().enumerate().any(|(i, &c)| i as u32 != c) {
            renumber_disks(&mut later.slots, &disks);
        }
        merge_slots(&mut self.slots, later.slots);

        let messages = self.messages.adopt(&later.messages);
        self.failures.extend(
            later
                .failures
                .iter()
                .map(|&(seq, m)| (seq, messages[m as usize])),
        );
    }

    fn finish<K: JobKey>(
        self,
        outcomes: &Outcomes<'_>,
        lists: &[Vec<K>],
        file: &Arc<File>,
    ) -> io::Result<Figures> {
        let Pass {
            bucket_seconds,
            slots,
            disks,
            messages,
            failures,
            ..
        } = self;
        // The error causes need the failing jobs' ids, read back from the
        // file: that runs beside the walk over the slots and the job lists.
        std::thread::scope(|scope| {
            let errors = scope.spawn(|| causes(&messages, &failures, lists, file));
            let (sums, completed_jobs, failed_jobs) =
                add_up(slots, bucket_seconds, outcomes, lists, file);
            let errors = errors
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
            Ok(sums.figures(bucket_seconds, &disks, errors, completed_jobs, failed_jobs))
        })
    }
}

/// The sums over the counted completions and done jobs, then (the slots
/// given back first: a lower peak) the completed and failed job lists.
fn add_up<K: JobKey>(
    slots: Slots,
    bucket_seconds: i64,
    outcomes: &Outcomes<'_>,
    lists: &[Vec<K>],
    file: &Arc<File>,
) -> (Sums, PendingJobs, PendingJobs) {
    let mut sums = Sums::default();
    let (mut n_completed, mut n_failed) = (0, 0);
    for (p, page) in slots.pages.iter().enumerate() {
        let Some(page) = page else { continue };
        for (k, &s) in page.iter().enumerate() {
            if s.flags & TERM == 0 {
                continue;
            }
            let seq = ((p << PAGE_BITS) | k) as u32;
            let outcome = outcomes.of(seq);
            if matches!(outcome, Outcome::Completed | Outcome::Failed) {
                sums.retries(slots.retries_of(seq, s));
                n_completed += usize::from(outcome == Outcome::Completed);
                n_failed += usize::from(outcome == Outcome::Failed);
            }
            if outcome == Outcome::Completed && s.flags & CAND != 0 {
                if s.flags & (BIG | ORPHAN) == 0 {
                    sums.add_compact(s, outcomes.item_size(seq), bucket_seconds);
                } else {
                    let mut c = slots.cand(seq, s);
                    if s.flags & ORPHAN != 0 {
                        // An orphan of the first range: no attempt.
                        (c.dur, c.worker) = (None, None);
                    }
                    sums.add(&c, outcomes.item_size(seq), bucket_seconds);
                }
            }
        }
    }
    drop(slots);
    let (completed, failed) = job_lists(outcomes, lists, file, n_completed, n_failed);
    (sums, completed, failed)
}

/// Rewrite the disk numbers of `slots` through `map`.
fn renumber_disks(slots: &mut Slots, map: &[u32]) {
    for c in slots.big.values_mut() {
        c.disk = c.disk.map(|d| map[d as usize]);
    }
    let mut moved = Vec::new();
    for (p, page) in slots.pages.iter_mut().enumerate() {
        let Some(page) = page else { continue };
        for (k, s) in page.iter_mut().enumerate() {
            if s.flags & (CAND | BIG) != CAND || s.disk == NO_CODE {
                continue;
            }
            let new = map[usize::from(s.disk) - 1] + 1;
            match u8::try_from(new) {
                Ok(c) if c != u8::MAX => s.disk = c,
                _ => moved.push(((p << PAGE_BITS) | k) as u32),
            }
        }
    }
    // Numbers too big for a slot: the candidate moves to the map.
    for seq in moved {
        let s = slots.get(seq);
        let mut c = slots.cand(seq, Slot { disk: NO_CODE, ..s });
        c.disk = Some(map[usize::from(s.disk) - 1]);
        slots.put(seq, c, s.flags & ORPHAN);
    }
}

/// Fold a later range's slots into `acc`.
fn merge_slots(acc: &mut Slots, mut later: Slots) {
    let n = later.pages.len();
    if acc.pages.len() < n {
        acc.pages.resize_with(n, || None);
    }
    for (p, theirs) in later.pages.iter_mut().enumerate() {
        let Some(theirs) = theirs.take() else {
            continue;
        };
        let Some(mine) = &mut acc.pages[p] else {
            acc.pages[p] = Some(theirs); // its map entries move below
            continue;
        };
        for (k, (a, &b)) in mine.iter_mut().zip(theirs.iter()).enumerate() {
            if b.flags & TERM == 0 {
                continue; // it has nothing on this seq
            }
            let seq = ((p << PAGE_BITS) | k) as u32;
            let count = |map: &mut SeqMap<u64>, s: Slot| match s.retries {
                RETRIES_BIG => map.remove(&seq).unwrap_or(0),
                r => u64::from(r),
            };
            let retries = count(&mut acc.retries, *a) + count(&mut later.retries, b);
            if a.flags & BIG != 0 {
                acc.big.remove(&seq);
            }
            *a = b; // its last terminal event is the later one
            if b.flags & BIG != 0 {
                if let Some(c) = later.big.remove(&seq) {
                    acc.big.insert(seq, c);
                }
            }
            if retries < u64::from(RETRIES_BIG) {
                a.retries = retries as u8;
            } else {
                a.retries = RETRIES_BIG;
                acc.retries.insert(seq, retries);
            }
        }
    }
    // What is left in the maps belongs to the pages that moved whole.
    acc.big.extend(later.big);
    acc.retries.extend(later.retries);
}

// -- the figures -------------------------------------------------------------

/// Completions and bytes of one worker, disk or throughput bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tally {
    completed: u64,
    bytes: Total,
}

impl Tally {
    #[inline]
    fn add(&mut self, size: Result<u64, &[u8]>) {
        self.completed += 1;
        self.bytes.add_size(size);
    }
}

/// The sums the final walk makes.
#[derive(Default)]
struct Sums {
    files: Total,
    buckets: HashMap<i64, Tally>,
    /// The last bucket added to, to skip the lookup for runs of completions.
    last_bucket: Option<(i64, Tally)>,
    /// Durations below 65,536 s counted by value; longer ones in `long`.
    short: Vec<u64>,
    long: BTreeMap<u64, u64>,
    /// By worker + 1 (0: none) below 256; others in `other_workers`.
    workers: Vec<Tally>,
    other_workers: BTreeMap<u64, Tally>,
    disks: Vec<Tally>,
    /// Done jobs by retried failures: below 256 by index, others in the map.
    few_retries: Vec<u64>,
    many_retries: BTreeMap<u64, u64>,
}

impl Sums {
    #[inline]
    fn bucket(&mut self, ts: i64, bucket_seconds: i64, size: Result<u64, &[u8]>) {
        let b = ts.div_euclid(bucket_seconds);
        match &mut self.last_bucket {
            Some((at, tally)) if *at == b => tally.add(size),
            _ => {
                self.flush_bucket();
                let mut tally = Tally::default();
                tally.add(size);
                self.last_bucket = Some((b, tally));
            }
        }
    }

    fn flush_bucket(&mut self) {
        if let Some((at, tally)) = self.last_bucket.take() {
            let t = self.buckets.entry(at).or_default();
            t.completed += tally.completed;
            t.bytes.small += tally.bytes.small;
            if let Some(d) = tally.bytes.digits {
                t.bytes.add_digits(&d);
            }
        }
    }

    #[inline]
    fn retries(&mut self, n: u64) {
        if n < 256 {
            let n = n as usize;
            if self.few_retries.len() <= n {
                self.few_retries.resize(n + 1, 0);
            }
            self.few_retries[n] += 1;
        } else {
            *self.many_retries.entry(n).or_insert(0) += 1;
        }
    }

    #[inline]
    fn duration(&mut self, d: u64) {
        if d < 1 << 16 {
            let d = d as usize;
            if d >= self.short.len() {
                self.short
                    .resize((d + 1).max(2 * self.short.len()).min(1 << 16), 0);
            }
            self.short[d] += 1;
        } else {
            *self.long.entry(d).or_insert(0) += 1;
        }
    }

    #[inline]
    fn worker(&mut self, w: Option<u64>) -> &mut Tally {
        let i = match w {
            None => 0,
            Some(w) if w < 255 => w as usize + 1,
            Some(w) => return self.other_workers.entry(w).or_default(),
        };
        if self.workers.len() <= i {
            self.workers.resize_with(i + 1, Tally::default);
        }
        &mut self.workers[i]
    }

    #[inline]
    fn disk(&mut self, d: u32) -> &mut Tally {
        let i = d as usize;
        if self.disks.len() <= i {
            self.disks.resize_with(i + 1, Tally::default);
        }
        &mut self.disks[i]
    }

    /// A counted completion held in a slot.
    #[inline]
    fn add_compact(&mut self, s: Slot, size: Result<u64, &[u8]>, bucket_seconds: i64) {
        self.files.add(u64::from(s.files));
        if s.flags & HAS_TS != 0 {
            self.bucket(i64::from(s.ts) + UNIX_EPOCH, bucket_seconds, size);
        }
        if s.flags & HAS_DUR != 0 {
            self.duration(u64::from(s.dur));
        }
        let worker = (s.worker != NO_CODE).then(|| u64::from(s.worker) - 1);
        self.worker(worker).add(size);
        if s.disk != NO_CODE {
            self.disk(u32::from(s.disk) - 1).add(size);
        }
    }

    /// A counted completion.
    fn add(&mut self, c: &Cand, size: Result<u64, &[u8]>, bucket_seconds: i64) {
        self.files.add_num(&c.files);
        if let Some(ts) = c.ts {
            self.bucket(ts, bucket_seconds, size);
        }
        if let Some(d) = c.dur {
            self.duration(d);
        }
        self.worker(c.worker).add(size);
        if let Some(d) = c.disk {
            self.disk(d).add(size);
        }
    }

    fn figures(
        mut self,
        bucket_seconds: i64,
        disks: &Names,
        errors: Vec<Cause>,
        completed_jobs: PendingJobs,
        failed_jobs: PendingJobs,
    ) -> Figures {
        self.flush_bucket();
        let mut throughput = Vec::new();
        if let (Some(&first), Some(&last)) = (self.buckets.keys().min(), self.buckets.keys().max())
        {
            let first = first.max(last - (MAX_BUCKETS as i64 - 1));
            for b in first..=last {
                let t = self.buckets.remove(&b).unwrap_or_default();
                throughput.push(Bucket {
                    start: b * bucket_seconds,
                    items: t.completed,
                    bytes: t.bytes.value(),
                });
            }
        }

        let mut all: Vec<(u64, u64)> = self
            .short
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(d, &n)| (d as u64, n))
            .collect();
        all.extend(self.long);
        let count: u64 = all.iter().map(|&(_, n)| n).sum();
        let rank = |p: u64| -> Option<u64> {
            let want = (p * count).div_ceil(100);
            let mut seen = 0;
            all.iter().find_map(|&(d, n)| {
                seen += n;
                (seen >= want).then_some(d)
            })
        };
        let durations = Durations {
            count,
            p50: rank(50),
            p90: rank(90),
            p99: rank(99),
            max: all.last().map(|&(d, _)| d),
        };

        let fig = |t: Tally| Figure {
            completed: t.completed,
            bytes: t.bytes.value(),
        };
        let mut workers: Vec<(Option<u64>, Figure)> = Vec::new();
        let mut none = None;
        for (i, t) in self.workers.into_iter().enumerate() {
            if t.completed > 0 {
                match i {
                    0 => none = Some(fig(t)),
                    i => workers.push((Some(i as u64 - 1), fig(t))),
                }
            }
        }
        workers.extend(
            self.other_workers
                .into_iter()
                .map(|(w, t)| (Some(w), fig(t))),
        );
        workers.extend(none.map(|f| (None, f)));

        let mut disk_figures: Vec<(String, Figure)> = self
            .disks
            .into_iter()
            .enumerate()
            .filter(|(_, t)| t.completed > 0)
            .map(|(i, t)| (text(&disks.names[i]), fig(t)))
            .collect();
        disk_figures.sort_by(|a, b| a.0.cmp(&b.0));

        Figures {
            files_completed: self.files.value(),
            throughput,
            durations,
            retries: self
                .few_retries
                .iter()
                .enumerate()
                .filter(|(_, &jobs)| jobs > 0)
                .map(|(n, &jobs)| (n as u64, jobs))
                .chain(self.many_retries)
                .collect(),
            workers,
            disks: disk_figures,
            errors,
            completed_jobs,
            failed_jobs,
        }
    }
}

/// The jobs whose final state is completed, and those failed permanently.
/// (`n_completed` and `n_failed`: how many there are.)
fn job_lists<K: JobKey>(
    outcomes: &Outcomes<'_>,
    lists: &[Vec<K>],
    file: &Arc<File>,
    n_completed: usize,
    n_failed: usize,
) -> (PendingJobs, PendingJobs) {
    let mut completed: Vec<K> = Vec::with_capacity(n_completed);
    let mut failed: Vec<K> = Vec::with_capacity(n_failed);
    for &k in lists.iter().flatten() {
        match outcomes.of(k.seq()) {
            Outcome::Completed => completed.push(k),
            Outcome::Failed => failed.push(k),
            _ => {}
        }
    }
    for list in [&mut completed, &mut failed] {
        if !list.is_sorted() {
            list.sort_unstable();
        }
    }
    (
        PendingJobs::new(file.clone(), K::into_list(completed)),
        PendingJobs::new(file.clone(), K::into_list(failed)),
    )
}

/// Job ids by seq, in one buffer.
#[derive(Default)]
struct Ids {
    /// (seq, start in `text`, length), sorted by seq.
    index: Vec<(u32, usize, usize)>,
    text: String,
}

impl Ids {
    fn get(&self, seq: u32) -> Option<&str> {
        let i = self.index.binary_search_by_key(&seq, |e| e.0).ok()?;
        let (_, start, len) = self.index[i];
        Some(&self.text[start..start + len])
    }
}

/// The ids of the jobs `seqs` (sorted, distinct), read back from their job
/// lines.
fn ids_of<K: JobKey>(seqs: &[u32], lists: &[Vec<K>], file: &Arc<File>) -> io::Result<Ids> {
    let Some(&top) = seqs.last() else {
        return Ok(Ids::default());
    };
    let mut wanted = vec![0u64; top as usize / 64 + 1];
    for &s in seqs {
        wanted[s as usize / 64] |= 1 << (s % 64);
    }
    let mut at: Vec<(u64, u32)> = lists
        .iter()
        .flatten()
        .filter(|k| {
            let s = k.seq() as usize;
            wanted.get(s / 64).is_some_and(|w| w >> (s % 64) & 1 != 0)
        })
        .map(|k| (k.offset(), k.seq()))
        .collect();
    drop(wanted);
    at.sort_unstable();
    let mut reader = LineReader::with_window(file.clone(), 64 << 10);
    let mut ids = Ids {
        index: Vec::with_capacity(at.len()),
        text: String::new(),
    };
    for (offset, seq) in at {
        let line = reader.line_at(offset)?;
        if let Ok(Some(Fields {
            id: Value::Str(id), ..
        })) = json::parse_line(line)
        {
            let id = id.to_str();
            ids.index.push((seq, ids.text.len(), id.len()));
            ids.text.push_str(&id);
        }
    }
    ids.index.sort_unstable_by_key(|e| e.0);
    Ok(ids)
}

/// Failures grouped by cause.
fn causes<K: JobKey>(
    messages: &Names,
    failures: &[(u32, u32)],
    lists: &[Vec<K>],
    file: &Arc<File>,
) -> io::Result<Vec<Cause>> {
    let mut seqs: Vec<u32> = failures.iter().map(|&(seq, _)| seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let ids = ids_of(&seqs, lists, file)?;
    drop(seqs);
    let texts: Vec<String> = messages.names.iter().map(|m| text(m)).collect();
    // The cause of each message when the job's id is not in it.
    let mut plain: Vec<Option<usize>> = vec![None; texts.len()];
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut causes: Vec<Cause> = Vec::new();
    for &(seq, m) in failures {
        let message = &texts[m as usize];
        let id = ids.get(seq);
        // (Whether the id is in the message at all: a cheap test that
        // keeps the cached cause for the usual message without it.)
        let own_id = id.is_some_and(|id| !id.is_empty() && message.contains(id));
        let cached = if own_id { None } else { plain[m as usize] };
        let i = match cached {
            Some(i) => i,
            None => {
                let cause = error_cause(message, id);
                let i = *index.entry(cause).or_insert_with_key(|cause| {
                    causes.push(Cause {
                        cause: cause.clone(),
                        count: 0,
                        examples: Vec::new(),
                    });
                    causes.len() - 1
                });
                if !own_id {
                    plain[m as usize] = Some(i);
                }
                i
            }
        };
        let c = &mut causes[i];
        c.count += 1;
        if let Some(id) = id {
            if c.examples.len() < 3 && !c.examples.iter().any(|e| e == id) {
                c.examples.push(id.to_string());
            }
        }
    }
    causes.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.cause.cmp(&b.cause)));
    Ok(causes)
}

/// Completions and bytes (of a worker or a disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figure {
    pub completed: u64,
    pub bytes: ByteTotal,
}

/// One throughput bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// Seconds from 0001-01-01T00:00:00Z (see [`format_ts`]).
    pub start: i64,
    pub items: u64,
    pub bytes: ByteTotal,
}

/// Durations of the counted completions' attempts, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durations {
    pub count: u64,
    pub p50: Option<u64>,
    pub p90: Option<u64>,
    pub p99: Option<u64>,
    pub max: Option<u64>,
}

/// Failures with one cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub cause: String,
    pub count: u64,
    /// Up to 3 distinct ids, in order of first appearance.
    pub examples: Vec<String>,
}

/// What the analytics add to the scan's [`Snapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub files_completed: ByteTotal,
    /// Oldest first, with the empty buckets between; at most [`MAX_BUCKETS`].
    pub throughput: Vec<Bucket>,
    pub durations: Durations,
    /// (retried failures, done jobs), by the first.
    pub retries: Vec<(u64, u64)>,
    /// By worker, `None` last.
    pub workers: Vec<(Option<u64>, Figure)>,
    /// By disk.
    pub disks: Vec<(String, Figure)>,
    /// Most frequent first, ties by cause.
    pub errors: Vec<Cause>,
    pub completed_jobs: PendingJobs,
    pub failed_jobs: PendingJobs,
}

/// Everything one pass over a job log knows.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub snapshot: Snapshot,
    pub figures: Figures,
    pub bucket_seconds: u64,
}

/// Analyse an open job log (throughput buckets of `bucket_seconds`, at least 1).
pub fn analyze_file(
    file: Arc<File>,
    bucket_seconds: u64,
    opts: &ScanOptions,
) -> io::Result<Analysis> {
    let bucket_seconds = bucket_seconds.max(1);
    let (snapshot, figures) = scan::scan_file_with(file, opts, &Pass::new(bucket_seconds))?;
    Ok(Analysis {
        snapshot,
        figures: figures?,
        bucket_seconds,
    })
}

/// Analyse the job log at `path`.
pub fn analyze_path(path: &Path, bucket_seconds: u64, opts: &ScanOptions) -> io::Result<Analysis> {
    analyze_file(Arc::new(File::open(path)?), bucket_seconds, opts)
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

    fn opts(threads: usize, ranges_per_thread: usize, block: usize) -> ScanOptions {
        ScanOptions {
            collect_ids: false,
            threads,
            ranges_per_thread,
            block_size: block,
            min_range_bytes: 1,
            wide_keys: false,
        }
    }

    fn analyze_text(text: &str, bucket_seconds: u64) -> Analysis {
        analyze_file(
            file_with(text.as_bytes()),
            bucket_seconds,
            &opts(1, 1, 1 << 16),
        )
        .unwrap()
    }

    fn log(lines: &[&str]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    fn small(n: u128) -> ByteTotal {
        ByteTotal::Small(n)
    }

    fn fig(completed: u64, bytes: u128) -> Figure {
        Figure {
            completed,
            bytes: small(bytes),
        }
    }

    fn lines_of(jobs: &PendingJobs) -> Vec<String> {
        let mut line = Vec::new();
        (0..jobs.len())
            .map(|i| {
                jobs.line(i, &mut line).unwrap();
                String::from_utf8(line.clone()).unwrap()
            })
            .collect()
    }

    #[test]
    fn times_parse_and_format() {
        let t = |s: &str| parse_ts(s.as_bytes());
        assert_eq!(t("00010101T000000Z"), Some(0));
        assert_eq!(t("19700101T000000Z"), Some(UNIX_EPOCH));
        assert_eq!(t("20261128T101500Z"), Some(UNIX_EPOCH + 1_795_860_900));
        assert_eq!(t("20240229T235959Z"), Some(UNIX_EPOCH + 1_709_251_199));
        assert_eq!(t("99991231T235959Z"), Some(315_537_897_599));
        for bad in [
            "00000101T000000Z",
            "20230229T000000Z",
            "21000229T000000Z",
            "20261301T000000Z",
            "20260001T000000Z",
            "20260100T000000Z",
            "20260431T000000Z",
            "20261128T240000Z",
            "20261128T106000Z",
            "20261128T101560Z",
            "20261128 101500Z",
            "20261128T101500z",
            "20261128T101500",
            "20261128T101500Z ",
            "2026112aT101500Z",
            "+0261128T101500Z",
            "",
        ] {
            assert_eq!(t(bad), None, "{bad}");
        }
        assert_eq!(
            t("20000229T000000Z").map(format_ts).as_deref(),
            Some("20000229T000000Z")
        );
        for s in [
            "00010101T000000Z",
            "00041231T235959Z",
            "16000301T120000Z",
            "19691231T235959Z",
            "20261128T101500Z",
            "99991231T235959Z",
        ] {
            assert_eq!(format_ts(t(s).unwrap()), s);
        }
        // Every day of a few leap cycles round-trips.
        for day in 0..(3 * 146_097) {
            let secs = day * 86_400 + 3661;
            assert_eq!(parse_ts(format_ts(secs).as_bytes()), Some(secs));
        }
    }

    #[test]
    fn causes_take_out_ids_hosts_and_numbers() {
        let c = |m: &str, id: Option<&str>| error_cause(m, id);
        assert_eq!(c("HTTP 503", None), "HTTP 503");
        assert_eq!(
            c("HTTP 503 from ia801234.us.archive.org", None),
            "HTTP 503 from <host>"
        );
        assert_eq!(
            c("HTTP 503 from ia905678.us.archive.org.", None),
            "HTTP 503 from <host>."
        );
        assert_eq!(
            c("HTTP 5031 and HTTP  503, HTTP 50", None),
            "HTTP N and HTTP  N, HTTP N"
        );
        assert_eq!(c("HTTP/1.1 404", None), "HTTP/N.N N");
        assert_eq!(c("xHTTP 404", None), "xHTTP 404");
        assert_eq!(
            c("read timed out after 30.5s (attempt 3)", None),
            "read timed out after N.Ns (attempt N)"
        );
        assert_eq!(
            c("md5 mismatch for nasa-42/x.pdf", Some("nasa-42")),
            "md5 mismatch for <id>/<host>"
        );
        assert_eq!(
            c("item nasa-42 is dark", Some("nasa-42")),
            "item <id> is dark"
        );
        assert_eq!(
            c("item nasa-42 is dark", Some("nasa-7")),
            "item nasa-N is dark"
        );
        assert_eq!(c("item nasa-42 is dark", Some("")), "item nasa-N is dark");
        assert_eq!(
            c("item nasa42 is dark", Some("nasa-7")),
            "item nasa42 is dark"
        );
        // Only whole words: not inside a longer name.
        assert_eq!(
            c("from f: f-1 f_2 f.3 (f) af fa", Some("f")),
            "from <id>: f-N f_N <id>.N (<id>) af fa"
        );
        assert_eq!(c("aaa a a", Some("a")), "aaa <id> <id>");
        assert_eq!(c("x-1x-1 x-1.x-1", Some("x-1")), "x-Nx-N <id>.<id>");
        assert_eq!(c("\"q\":1 \"q\":1", Some("\"q\":1")), "<id> <id>");
        assert_eq!(
            c("https://ia8.us.archive.org:443/7/items/x", None),
            "https://<host>:N/N/items/x"
        );
        assert_eq!(c("..a.b.. 1.2.c3 .x", None), "..<host>.. N.N.c3 .x");
        assert_eq!(c("café 12 ☃ v2.0 über.de", None), "café N ☃ v2.N ü<host>");
        assert_eq!(
            c("sha256 of mp4 x86_64 0x1f 7z", None),
            "sha256 of mp4 x86_N Nx1f Nz"
        );
        assert_eq!(c("", None), "");
    }

    const T0: &str = "20261128T100000Z";

    /// `20261128T10MMSSZ`.
    fn at(min: u32, sec: u32) -> String {
        format!("20261128T10{min:02}{sec:02}Z")
    }

    #[test]
    fn worked_example() {
        let job = |seq: u32, id: &str| {
            format!(r#"{{"event":"job","seq":{seq},"id":"{id}","op":"download","ts":"{T0}"}}"#)
        };
        let started = |seq: u32, ts: &str, worker: u32| {
            format!(r#"{{"event":"started","seq":{seq},"ts":"{ts}","worker":{worker}}}"#)
        };
        let completed = |seq: u32, ts: &str, size: u64, files: u64, disk: &str| {
            format!(
                r#"{{"event":"completed","seq":{seq},"ts":"{ts}","extra":{{"item_size":{size},"files":{files},"disk":"{disk}"}}}}"#
            )
        };
        let failed = |seq: u32, ts: &str, error: &str, retry: &str| {
            format!(
                r#"{{"event":"failed","seq":{seq},"ts":"{ts}","error":"{error}","retry":{retry}}}"#
            )
        };
        let lines = [
            job(1, "a"),
            job(2, "b"),
            job(3, "c"),
            job(4, "d"),
            job(5, "e"),
            job(6, "f"),
            job(7, "g"),
            // 1: done in 10 s by worker 0.
            started(1, &at(0, 0), 0),
            completed(1, &at(0, 10), 100, 2, "/d1"),
            // 2: two retried failures, then done in 30 s by worker 1.
            started(2, &at(0, 5), 3),
            failed(2, &at(0, 6), "HTTP 503 from ia801.us.archive.org", "1"),
            started(2, &at(0, 20), 1),
            failed(2, &at(0, 21), "HTTP 503 from ia902.us.archive.org", "2"),
            started(2, &at(2, 0), 1),
            completed(2, &at(2, 30), 200, 3, "/d2"),
            // 3: fails for good, its id in the message.
            started(3, &at(0, 30), 2),
            failed(3, &at(0, 31), "item c is dark", "false"),
            // 4: completed, then requeued: pending, not counted.
            started(4, &at(0, 40), 0),
            completed(4, &at(0, 50), 1000, 9, "/d1"),
            r#"{"event":"requeued","seq":4}"#.to_string(),
            // 5: completed without a started: worker None, no duration.
            completed(5, &at(5, 0), 50, 1, "/d1"),
            // 6: a retried failure, then started and never finished.
            failed(6, &at(1, 0), "HTTP 503 from ia801.us.archive.org", "1"),
            started(6, &at(1, 1), 4),
            // 7: a started whose attempt failed; the completion has none.
            started(7, &at(0, 0), 5),
            failed(7, &at(0, 1), "read timed out after 30 s", "true"),
            completed(7, &at(0, 3), 7, 0, "/d1"),
            // 9: no job line: never counted.
            started(9, &at(0, 0), 0),
            completed(9, &at(0, 1), 5000, 5, "/d9"),
        ];
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let a = analyze_text(&log(&refs), 60);
        let s = &a.snapshot;
        assert_eq!(
            (s.total, s.completed, s.failed, s.pending, s.in_flight),
            (7, 4, 1, 2, 1)
        );
        assert_eq!(s.bytes_completed, small(357));
        let f = &a.figures;
        assert_eq!(f.files_completed, small(6));
        let minute = |m: u32, items: u64, bytes: u128| Bucket {
            start: parse_ts(at(m, 0).as_bytes()).unwrap(),
            items,
            bytes: small(bytes),
        };
        assert_eq!(
            f.throughput,
            vec![
                minute(0, 2, 107),
                minute(1, 0, 0),
                minute(2, 1, 200),
                minute(3, 0, 0),
                minute(4, 0, 0),
                minute(5, 1, 50)
            ]
        );
        assert_eq!(
            f.durations,
            Durations {
                count: 2,
                p50: Some(10),
                p90: Some(30),
                p99: Some(30),
                max: Some(30)
            }
        );
        assert_eq!(f.retries, vec![(0, 3), (1, 1), (2, 1)]); // 1, 3, 5; 7; 2
        assert_eq!(
            f.workers,
            vec![
                (Some(0), fig(1, 100)),
                (Some(1), fig(1, 200)),
                (None, fig(2, 57))
            ]
        );
        assert_eq!(
            f.disks,
            vec![
                ("/d1".to_string(), fig(3, 157)),
                ("/d2".to_string(), fig(1, 200))
            ]
        );
        let cause = |cause: &str, count, examples: &[&str]| Cause {
            cause: cause.to_string(),
            count,
            examples: examples.iter().map(|e| e.to_string()).collect(),
        };
        assert_eq!(
            f.errors,
            vec![
                cause("HTTP 503 from <host>", 3, &["b", "f"]),
                cause("item <id> is dark", 1, &["c"]),
                cause("read timed out after N s", 1, &["g"]),
            ]
        );
        assert_eq!(f.completed_jobs.seqs(), vec![1, 2, 5, 7]);
        assert_eq!(f.failed_jobs.seqs(), vec![3]);
        assert_eq!(lines_of(&f.failed_jobs), vec![job(3, "c")]);
    }

    #[test]
    fn attempts_end_at_every_terminal_event() {
        let text = log(&[
            r#"{"event":"job","seq":1,"id":"a"}"#,
            // A started after done does not undo it, and its worker is not
            // the completion's.
            &format!(
                r#"{{"event":"started","seq":1,"ts":"{}","worker":1}}"#,
                at(0, 0)
            ),
            &format!(r#"{{"event":"completed","seq":1,"ts":"{}"}}"#, at(0, 9)),
            &format!(
                r#"{{"event":"started","seq":1,"ts":"{}","worker":2}}"#,
                at(1, 0)
            ),
            // Unparsable times: the attempt counts, its duration does not.
            r#"{"event":"job","seq":2,"id":"b"}"#,
            r#"{"event":"started","seq":2,"ts":"soon","worker":3}"#,
            &format!(r#"{{"event":"completed","seq":2,"ts":"{}"}}"#, at(0, 9)),
            // A negative duration is left out too.
            r#"{"event":"job","seq":3,"id":"c"}"#,
            &format!(
                r#"{{"event":"started","seq":3,"ts":"{}","worker":4}}"#,
                at(0, 9)
            ),
            &format!(r#"{{"event":"completed","seq":3,"ts":"{}"}}"#, at(0, 8)),
            // The last started of the attempt wins; a worker that is not a
            // non-negative integer is None.
            r#"{"event":"job","seq":4,"id":"d"}"#,
            &format!(
                r#"{{"event":"started","seq":4,"ts":"{}","worker":5}}"#,
                at(0, 0)
            ),
            &format!(
                r#"{{"event":"started","seq":4,"ts":"{}","worker":-1}}"#,
                at(0, 4)
            ),
            &format!(r#"{{"event":"completed","seq":4,"ts":"{}"}}"#, at(0, 8)),
            // The largest worker there can be.
            r#"{"event":"job","seq":5,"id":"e"}"#,
            r#"{"event":"started","seq":5,"worker":18446744073709551615}"#,
            r#"{"event":"completed","seq":5}"#,
        ]);
        let f = analyze_text(&text, 60).figures;
        assert_eq!(
            f.workers,
            vec![
                (Some(1), fig(1, 0)),
                (Some(3), fig(1, 0)),
                (Some(4), fig(1, 0)),
                (Some(u64::MAX), fig(1, 0)),
                (None, fig(1, 0))
            ]
        );
        assert_eq!(
            (f.durations.count, f.durations.p50, f.durations.max),
            (2, Some(4), Some(9))
        );
    }

    #[test]
    fn values_too_big_for_a_slot() {
        // Times before 1970, durations over 18 hours, 70,000 files, a
        // worker above 254, item sizes and file counts above 2^64, many
        // retries and disks: the same figures as small values would give.
        let mut lines = vec![];
        let big = "123456789012345678901234567890";
        for seq in 1..=400u32 {
            lines.push(format!(r#"{{"event":"job","seq":{seq},"id":"j{seq}"}}"#));
        }
        for seq in 1..=300u32 {
            lines.push(format!(
                r#"{{"event":"started","seq":{seq},"ts":"19000101T000000Z","worker":{}}}"#,
                seq * 1000
            ));
            let files = if seq == 7 {
                big.to_string()
            } else {
                (70_000 + seq).to_string()
            };
            lines.push(format!(
                r#"{{"event":"completed","seq":{seq},"ts":"19000102T000000Z","extra":{{"item_size":{},"files":{files},"disk":"disk{seq}"}}}}"#,
                if seq == 9 { big.to_string() } else { seq.to_string() }
            ));
        }
        for _ in 0..300 {
            lines.push(r#"{"event":"failed","seq":400,"error":"x","retry":1}"#.to_string());
        }
        lines.push(r#"{"event":"failed","seq":400,"error":"x","retry":false}"#.to_string());
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let text = log(&refs);
        let a = analyze_text(&text, 86_400);
        let f = &a.figures;
        let files: u128 = (1..=300u128).filter(|&s| s != 7).map(|s| 70_000 + s).sum();
        let want_files = add_decimal(big.as_bytes(), files.to_string().as_bytes());
        assert_eq!(
            f.files_completed,
            ByteTotal::Decimal(String::from_utf8(want_files).unwrap())
        );
        assert_eq!(f.durations.count, 300);
        assert_eq!(f.durations.max, Some(86_400));
        assert_eq!(f.throughput.len(), 1);
        assert_eq!(format_ts(f.throughput[0].start), "19000102T000000Z");
        assert_eq!(f.workers.len(), 300);
        assert_eq!(f.workers[0], (Some(1000), fig(1, 1)));
        assert_eq!(f.disks.len(), 300);
        assert_eq!(f.retries, vec![(0, 300), (300, 1)]);
        // Split anywhere, the same.
        for (threads, per) in [(2, 1), (3, 2), (5, 3), (8, 4)] {
            let b =
                analyze_file(file_with(text.as_bytes()), 86_400, &opts(threads, per, 256)).unwrap();
            assert_eq!(b, a, "threads {threads} per {per}");
        }
    }

    #[test]
    fn throughput_keeps_the_most_recent_buckets() {
        let text = log(&[
            r#"{"event":"job","seq":1,"id":"a"}"#,
            r#"{"event":"job","seq":2,"id":"b"}"#,
            r#"{"event":"completed","seq":1,"ts":"20250101T000000Z"}"#,
            r#"{"event":"completed","seq":2,"ts":"20261128T101500Z"}"#,
        ]);
        let f = analyze_text(&text, 60).figures;
        assert_eq!(f.throughput.len(), MAX_BUCKETS as usize);
        let last = f.throughput.last().unwrap();
        assert_eq!(
            (format_ts(last.start).as_str(), last.items),
            ("20261128T101500Z", 1)
        );
        assert_eq!(f.throughput.iter().map(|b| b.items).sum::<u64>(), 1);
        let f = analyze_text(&text, 86_400 * 7).figures;
        // Buckets count from 0001-01-01: weeks start on a Monday.
        assert_eq!(format_ts(f.throughput[0].start), "20241230T000000Z");
        assert_eq!(f.throughput.len(), 100);
        assert_eq!(f.throughput.iter().map(|b| b.items).sum::<u64>(), 2);
    }

    #[test]
    fn empty_log() {
        let a = analyze_text("", 60);
        let f = a.figures;
        assert!(f.throughput.is_empty() && f.retries.is_empty() && f.errors.is_empty());
        assert_eq!(f.durations.count, 0);
        assert_eq!(f.durations.p50, None);
        assert!(f.workers.is_empty() && f.disks.is_empty());
        assert!(f.completed_jobs.is_empty() && f.failed_jobs.is_empty());
        assert_eq!(f.files_completed, small(0));
    }

    /// A deterministic pseudo-random log: a pool of workers over jobs, with
    /// retries, requeues, restarts, events before job lines, strays, odd
    /// values and malformed lines.
    fn messy_log(n: usize, seed: u64, dup_jobs: bool) -> Vec<u8> {
        let mut x = seed;
        let mut rnd = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut out = String::new();
        let mut next_job = 1u64;
        let mut running: Vec<(u64, u64)> = Vec::new();
        // From just before 1970 (times a slot cannot hold) to after.
        let mut clock = UNIX_EPOCH as u64 - 2000;
        for _ in 0..n {
            clock += rnd(4);
            let ts = format_ts(clock as i64);
            let seq = 1 + rnd(next_job + 3);
            let line = match rnd(24) {
                0..=3 => {
                    next_job += 1;
                    format!(
                        r#"{{"event":"job","seq":{},"id":"item-{}","ts":"{ts}"}}"#,
                        next_job - 1,
                        rnd(50)
                    )
                }
                4 if dup_jobs => format!(r#"{{"event":"job","seq":{seq},"id":"dup"}}"#),
                5..=8 => {
                    let w = if rnd(30) == 0 { 1000 + rnd(3) } else { rnd(8) };
                    running.push((seq, w));
                    format!(r#"{{"event":"started","seq":{seq},"ts":"{ts}","worker":{w}}}"#)
                }
                9..=13 if !running.is_empty() => {
                    let (seq, _) = running.swap_remove(rnd(running.len() as u64) as usize);
                    match rnd(10) {
                        0..=5 => format!(
                            r#"{{"event":"completed","seq":{seq},"ts":"{}","extra":{{"item_size":{},"files":{},"disk":"/d{}"}}}}"#,
                            if rnd(15) == 0 {
                                "x".to_string()
                            } else {
                                ts.clone()
                            },
                            match rnd(12) {
                                0 => "99999999999999999999999".to_string(),
                                1 => "-3".to_string(),
                                _ => rnd(1 << 40).to_string(),
                            },
                            match rnd(12) {
                                0 => "123456789012345678901234".to_string(),
                                1 => (70_000 + rnd(9)).to_string(),
                                2 => "\"7\"".to_string(),
                                _ => rnd(40).to_string(),
                            },
                            if rnd(40) == 0 { 300 + rnd(300) } else { rnd(4) }
                        ),
                        6..=7 => format!(
                            r#"{{"event":"failed","seq":{seq},"ts":"{ts}","error":"HTTP 503 from ia{}.us.archive.org","retry":{}}}"#,
                            rnd(1000),
                            rnd(3)
                        ),
                        8 => format!(
                            r#"{{"event":"failed","seq":{seq},"ts":"{ts}","error":"item item-{} is dark","retry":false}}"#,
                            rnd(50)
                        ),
                        _ => format!(r#"{{"event":"requeued","seq":{seq},"ts":"{ts}"}}"#),
                    }
                }
                14 => format!(r#"{{"event":"completed","seq":{seq},"ts":"{ts}"}}"#),
                15 => format!(
                    r#"{{"event":"failed","seq":{seq},"error":"e{}","retry":{}}}"#,
                    rnd(3),
                    if rnd(2) == 0 { "false" } else { "1" }
                ),
                16 => format!(r#"{{"event":"requeued","seq":{seq}}}"#),
                17 => format!(
                    r#" {{ "seq" : {seq} , "event" : "st\u0061rted" , "w\u006frker" : {} , "ts" : "{ts}" }} "#,
                    rnd(3)
                ),
                18 => format!(
                    r#"{{"event":"c\u006fmpleted","seq":{seq},"ts":"{}","extra":{{"disk":"\u00e9{}"}}}}"#,
                    ts.replace('0', "\\u0030"),
                    rnd(3)
                ),
                19 => format!(
                    r#"{{"event":"started","seq":{seq},"ts":"{}","worker":1}}"#,
                    format_ts(clock as i64 - 100_000)
                ),
                20 => "{\"event\":\"completed\",\"seq\":".to_string(),
                21 => format!(
                    r#"{{"event":"failed","seq":{},"error":"x","retry":1}}"#,
                    rnd(3)
                ),
                _ => String::new(),
            };
            out.push_str(&line);
            out.push('\n');
        }
        out.into_bytes()
    }

    /// An analysis with job lists as seqs and lines (so that logs with
    /// shifted offsets compare equal).
    fn portable(a: &Analysis) -> String {
        let mut f = a.figures.clone();
        let lists = (
            f.completed_jobs.seqs(),
            lines_of(&f.completed_jobs),
            f.failed_jobs.seqs(),
            lines_of(&f.failed_jobs),
        );
        f.completed_jobs = PendingJobs::new(file_with(b""), Default::default());
        f.failed_jobs = f.completed_jobs.clone();
        let s = &a.snapshot;
        format!(
            "{:?}",
            (
                f,
                lists,
                (
                    s.total,
                    s.completed,
                    s.failed,
                    s.pending,
                    s.in_flight,
                    s.malformed
                ),
                (&s.bytes_completed, &s.errors, &s.first_ts, &s.last_ts)
            )
        )
    }

    #[test]
    fn ranges_threads_and_blocks_do_not_change_the_figures() {
        for (seed, data) in [
            (1, messy_log(4000, 1, false)),
            (2, messy_log(3000, 2, true)),
            (3, messy_log(300, 3, false)),
        ] {
            let reference = analyze_file(file_with(&data), 60, &opts(1, 1, 1 << 20)).unwrap();
            let f = &reference.figures;
            assert!(
                f.durations.count > 3 && f.errors.len() > 2 && f.workers.len() > 2,
                "seed {seed}: {f:?}"
            );
            for threads in [1, 2, 3, 5, 8] {
                for per in [1, 2, 7] {
                    for block in [7, 64, 1000] {
                        let a =
                            analyze_file(file_with(&data), 60, &opts(threads, per, block)).unwrap();
                        assert_eq!(a, reference, "seed {seed} threads {threads} per {per}");
                    }
                }
            }
            // Blank padding moves every range boundary.
            let want = portable(&reference);
            for pad in [1, 13, 77, 301, 1024, 4093] {
                let mut padded = vec![b' '; pad];
                padded.push(b'\n');
                padded.extend_from_slice(&data);
                for per in [2, 3, 11, 29] {
                    let a = analyze_file(file_with(&padded), 60, &opts(1, per, 4096)).unwrap();
                    assert_eq!(portable(&a), want, "seed {seed} pad {pad} ranges {per}");
                }
            }
        }
    }

    #[test]
    fn every_two_range_split_of_a_small_log() {
        let data = messy_log(70, 11, false);
        let reference = portable(&analyze_file(file_with(&data), 1, &opts(1, 1, 1 << 20)).unwrap());
        // Two ranges, cut at the middle: padding before the log moves the
        // cut through its first half, padding after it through the second
        // (a byte per two bytes of padding).
        for pad in (0..data.len()).step_by(2) {
            for (before, after) in [(pad, 0), (0, pad)] {
                let mut padded = vec![b' '; before];
                padded.push(b'\n');
                padded.extend_from_slice(&data);
                padded.extend(std::iter::repeat_n(b' ', after));
                padded.push(b'\n');
                let a = analyze_file(file_with(&padded), 1, &opts(1, 2, 16)).unwrap();
                assert_eq!(portable(&a), reference, "before {before} after {after}");
            }
        }
    }
}
