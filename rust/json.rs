//! A small, validating JSON scanner for one job-log line.
//!
//! The scan needs a handful of top-level fields from lines that are almost
//! always compact and ASCII, but it must never trust a line it has not fully
//! checked: a line is accepted only if the *whole* of it is one JSON object
//! per RFC 8259. On top of the RFC:
//!
//! * a string holding a lone surrogate escape (`"\ud800"`, `"\udc00"`, a high
//!   surrogate not followed by a low one) is rejected, because it cannot be
//!   represented in UTF-8;
//! * nesting deeper than [`MAX_DEPTH`] arrays/objects (the top-level object
//!   counts as one) is rejected, so a hostile line cannot exhaust the stack.
//!
//! Duplicate keys are allowed and the last one wins, as in Python's `json`.
//! Strings are handed out as [`JsonStr`], a borrowed slice of the line that is
//! decoded only when a caller asks for it (and copied only if it has escapes).
//!
//! Speed: nearly every line is "plain" (at most 128 bytes, no backslash,
//! control character or non-ASCII byte). One SSE2 pass finds its quotes;
//! every quote then delimits a string and every string is valid as it
//! stands, so strings end where the quote mask says, and the compact form
//! (no whitespace) skips whitespace handling altogether. Other lines take
//! the general path, which checks escapes and UTF-8 byte by byte. Tests
//! check that both paths agree.

use std::borrow::Cow;

/// Deepest accepted nesting of arrays and objects; the top-level object is 1.
pub const MAX_DEPTH: usize = 512;

/// The line is not one well-formed JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

type R<T> = Result<T, Malformed>;

/// A validated JSON string: the raw bytes between its quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonStr<'a> {
    raw: &'a [u8],
    escaped: bool,
}

impl<'a> JsonStr<'a> {
    /// The bytes between the quotes, escapes not decoded.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Whether the string holds any backslash escape.
    pub fn has_escapes(&self) -> bool {
        self.escaped
    }

    /// The decoded UTF-8 bytes; borrowed unless the string has escapes.
    pub fn bytes(&self) -> Cow<'a, [u8]> {
        if !self.escaped {
            return Cow::Borrowed(self.raw);
        }
        let mut out = Vec::with_capacity(self.raw.len());
        decode_into(self.raw, &mut out);
        Cow::Owned(out)
    }

    /// The decoded string; borrowed unless the string has escapes.
    pub fn to_str(&self) -> Cow<'a, str> {
        match self.bytes() {
            // Both arms are valid UTF-8: the scanner checked every byte and
            // rejected lone surrogates, so the lossy conversion never replaces.
            Cow::Borrowed(b) => String::from_utf8_lossy(b),
            Cow::Owned(v) => Cow::Owned(
                String::from_utf8(v)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
        }
    }

    /// Whether the decoded string equals `s`.
    pub fn eq_bytes(&self, s: &[u8]) -> bool {
        if self.escaped {
            *self.bytes() == *s
        } else {
            self.raw == s
        }
    }
}

/// A top-level (or `extra`) value, reduced to what the scan asks of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Value<'a> {
    /// The key is not present.
    #[default]
    Absent,
    Str(JsonStr<'a>),
    /// An integer (no fraction, no exponent) in `0..=u64::MAX`; `-0` is 0.
    UInt(u64),
    /// A non-negative integer above `u64::MAX`: its decimal digits.
    BigUInt(&'a [u8]),
    /// The literal `false`.
    False,
    /// Anything else: other numbers, `true`, `null`, arrays, objects.
    Other,
}

/// The fields of one line that the scan reads; other keys are validated and
/// skipped. For duplicate keys the last occurrence is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fields<'a> {
    pub event: Value<'a>,
    pub seq: Value<'a>,
    pub id: Value<'a>,
    pub ts: Value<'a>,
    pub error: Value<'a>,
    pub retry: Value<'a>,
    /// `extra.item_size` ([`Value::UInt`] or [`Value::BigUInt`] when valid)
    /// when (the last) `extra` is an object; `Absent` otherwise.
    pub item_size: Value<'a>,
}

/// The fields the analytics pass reads on top of [`Fields`] (see
/// [`parse_into_more`]); the scan never asks for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct More<'a> {
    /// The top-level `worker`.
    pub worker: Value<'a>,
    /// `extra.files` when (the last) `extra` is an object; `Absent` otherwise.
    pub files: Value<'a>,
    /// `extra.disk` when (the last) `extra` is an object; `Absent` otherwise.
    pub disk: Value<'a>,
}

/// JSON insignificant whitespace.
#[inline]
pub fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Whether the line is empty or only JSON whitespace.
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|&b| is_ws(b))
}

/// Parse one line (without its `\n`).
///
/// `Ok(None)` for a blank line, `Ok(Some(fields))` for a well-formed object,
/// `Err(Malformed)` otherwise.
pub fn parse_line(line: &[u8]) -> Result<Option<Fields<'_>>, Malformed> {
    let mut f = Fields::default();
    Ok(parse_into(line, &mut f)?.then_some(f))
}

/// [`parse_line`] into `f` (reset first): `Ok(false)` for a blank line.
#[inline]
pub fn parse_into<'a>(line: &'a [u8], f: &mut Fields<'a>) -> Result<bool, Malformed> {
    let m = &mut More::default(); // never touched: `MORE` is false
    match plain_quotes(line) {
        Some((quotes, false)) => parse_with::<true, false, false>(line, f, m, quotes),
        Some((quotes, true)) => parse_with::<true, true, false>(line, f, m, quotes),
        None => parse_with::<false, true, false>(line, f, m, 0),
    }
}

/// [`parse_into`], also reading the [`More`] fields into `m` (reset first).
#[inline(always)]
pub fn parse_into_more<'a>(
    line: &'a [u8],
    f: &mut Fields<'a>,
    m: &mut More<'a>,
) -> Result<bool, Malformed> {
    match plain_quotes(line) {
        Some((quotes, false)) => parse_with::<true, false, true>(line, f, m, quotes),
        Some((quotes, true)) => parse_with::<true, true, true>(line, f, m, quotes),
        None => parse_with::<false, true, true>(line, f, m, 0),
    }
}

/// Parse in one of three modes: `PLAIN` (the line is plain, see
/// [`plain_quotes`], and `quotes` is its quote mask) and `WS` (the line may
/// hold whitespace). The compact lines the scan mostly sees take the
/// `<true, false>` path. `MORE`: also read the [`More`] fields into `m`.
#[inline(always)]
fn parse_with<'a, const PLAIN: bool, const WS: bool, const MORE: bool>(
    line: &'a [u8],
    f: &mut Fields<'a>,
    m: &mut More<'a>,
    quotes: u128,
) -> Result<bool, Malformed> {
    *f = Fields::default();
    if MORE {
        *m = More::default();
    }
    let mut p = Parser::<PLAIN, WS> {
        b: line,
        i: 0,
        lo: quotes as u64,
        hi: (quotes >> 64) as u64,
    };
    p.skip_ws();
    if p.i == line.len() {
        return Ok(false);
    }
    if line[p.i] != b'{' {
        return Err(Malformed);
    }
    p.i += 1;
    p.top_object::<MORE>(f, m)?;
    p.skip_ws();
    if p.i != line.len() {
        return Err(Malformed);
    }
    Ok(true)
}

/// The top-level keys the scan reads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Key {
    Event,
    Seq,
    Id,
    Ts,
    Error,
    Retry,
    Extra,
    /// `worker`, recognised only when the [`More`] fields are asked for.
    Worker,
    Other,
}

impl Key {
    fn of(k: &[u8]) -> Key {
        match k {
            b"event" => Key::Event,
            b"seq" => Key::Seq,
            b"id" => Key::Id,
            b"ts" => Key::Ts,
            b"error" => Key::Error,
            b"retry" => Key::Retry,
            b"extra" => Key::Extra,
            b"worker" => Key::Worker,
            _ => Key::Other,
        }
    }
}

/// `text` padded with zero bytes to a little-endian word.
const fn word(text: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let mut i = 0;
    while i < text.len() {
        w[i] = text[i];
        i += 1;
    }
    u64::from_le_bytes(w)
}

const fn mask(n: u32) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n)) - 1
    }
}

/// Check that `text` is one well-formed JSON value of any kind (used by tests
/// and by callers that only need validation).
pub fn validate_value(text: &[u8]) -> bool {
    let mut p = Parser::<false, true> {
        b: text,
        i: 0,
        lo: 0,
        hi: 0,
    };
    p.skip_ws();
    if p.skip_value(0).is_err() {
        return false;
    }
    p.skip_ws();
    p.i == text.len()
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Per byte of `w`: high bit set where the byte needs a closer look inside a
/// string (`"`, `\`, a control character, or a non-ASCII byte). The lowest
/// flagged byte is always a true hit; bits above it may be false positives.
#[inline]
fn string_specials(w: u64) -> u64 {
    #[inline]
    fn zero_bytes(v: u64) -> u64 {
        v.wrapping_sub(ONES) & !v & HIGHS
    }
    let quote = zero_bytes(w ^ (ONES * u64::from(b'"')));
    let backslash = zero_bytes(w ^ (ONES * u64::from(b'\\')));
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    quote | backslash | control | (w & HIGHS)
}

#[inline]
fn hex_val(b: u8) -> Option<u32> {
    match b {
        b'0'..=b'9' => Some(u32::from(b - b'0')),
        b'a'..=b'f' => Some(u32::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u32::from(b - b'A' + 10)),
        _ => None,
    }
}

fn hex4(b: &[u8], at: usize) -> Option<u32> {
    let d = b.get(at..at + 4)?;
    let mut v = 0;
    for &c in d {
        v = (v << 4) | hex_val(c)?;
    }
    Some(v)
}

/// Decode the escapes of an already validated string body.
fn decode_into(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        let start = i;
        while i < raw.len() && raw[i] != b'\\' {
            i += 1;
        }
        out.extend_from_slice(&raw[start..i]);
        if i >= raw.len() {
            break;
        }
        // raw[i] == '\\'; validation guarantees a complete escape follows.
        let e = raw.get(i + 1).copied().unwrap_or(b'\\');
        i += 2;
        let byte = match e {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let hi = hex4(raw, i).unwrap_or(0xFFFD);
                i += 4;
                let cp = if (0xD800..0xDC00).contains(&hi) {
                    let lo = hex4(raw, i + 2).unwrap_or(0xDC00);
                    i += 6;
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else {
                    hi
                };
                let c = char::from_u32(cp).unwrap_or('\u{FFFD}');
                let mut tmp = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                continue;
            }
            _ => e,
        };
        out.push(byte);
    }
}

/// The first 8 bytes of `s` (which must have them) as a little-endian word.
#[inline(always)]
fn load8(s: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&s[..8]);
    u64::from_le_bytes(w)
}

/// The 8 bytes of `b` from `at` as a word; past the end of `b` the bytes
/// read as zeros. `None` when `b` is shorter than 8 bytes or `at` is at or
/// past its end.
#[inline(always)]
fn word_at(b: &[u8], at: usize) -> Option<u64> {
    let left = b.len().checked_sub(at).filter(|&l| l > 0)?;
    if left >= 8 {
        Some(load8(&b[at..]))
    } else if b.len() >= 8 {
        // The last 8 bytes, moved down so that byte `at` starts the word.
        Some(load8(&b[b.len() - 8..]) >> (8 * (8 - left)))
    } else {
        None
    }
}

/// The most digits Python converts to an int by default (`sys.get_int_max_str_digits()`).
const PYTHON_INT_DIGITS: usize = 4300;

/// How many ASCII digits the word `w` starts with (0..=8).
#[inline(always)]
fn digit_run_word(w: u64) -> usize {
    // High bit of each byte below '0', above '9' or non-ASCII; the lowest
    // flagged byte is exact (borrows and carries only flag bytes above).
    let below = w.wrapping_sub(ONES * 0x30) & !w & HIGHS;
    let above = (w.wrapping_add(ONES * (0x7f - 0x39)) | w) & HIGHS;
    ((below | above).trailing_zeros() / 8) as usize
}

/// How many ASCII digits `s` starts with.
#[inline]
fn digit_run(s: &[u8]) -> usize {
    let mut n = 0;
    while let Some(chunk) = s.get(n..n + 8) {
        let k = digit_run_word(load8(chunk));
        if k < 8 {
            return n + k;
        }
        n += 8;
    }
    n + s[n..].iter().take_while(|c| c.is_ascii_digit()).count()
}

/// The value of the first `n` (1..=8) ASCII digits in `w` (first digit in
/// the lowest byte).
#[inline(always)]
fn eight_digits(w: u64, n: usize) -> u64 {
    // Move the digits to the top and fill the bottom with '0's: leading
    // zeros do not change the value.
    let shift = 8 * (8 - n) as u32;
    let w = w.checked_shl(shift).unwrap_or(0) | (ONES * 0x30).checked_shr(64 - shift).unwrap_or(0);
    let w = w.wrapping_sub(ONES * 0x30);
    // Combine pairs, then quads, then the two halves.
    let w = (w.wrapping_mul(10) + (w >> 8)) & 0x00ff_00ff_00ff_00ff;
    let w = (w.wrapping_mul(100) + (w >> 16)) & 0x0000_ffff_0000_ffff;
    (w.wrapping_mul(10_000) + (w >> 32)) & 0xffff_ffff
}

/// A number as the scan needs it.
#[derive(Clone, Copy)]
enum Num {
    UInt(u64),
    /// A non-negative integer above `u64::MAX`; its digits end here.
    Big(usize),
    Other,
}

struct Parser<'a, const PLAIN: bool, const WS: bool> {
    b: &'a [u8],
    i: usize,
    /// When `PLAIN`: the positions of the line's quotes not consumed yet
    /// (bytes 0..64 in `lo`, 64..128 in `hi`), so that each string's end is
    /// found from the mask alone.
    lo: u64,
    hi: u64,
}

/// The quote positions (bit `i` for byte `i`) of a line of at most 128
/// bytes that holds no backslash, control character or non-ASCII byte, the
/// shape of nearly every line the scan sees. In such a line every quote
/// delimits a string and every string is valid as it stands. `None` for
/// any other line, which then takes the general path.
/// Also tells whether the line holds a space.
#[inline]
fn plain_quotes(line: &[u8]) -> Option<(u128, bool)> {
    if line.len() > 128 {
        return None;
    }
    let n = line.len();
    // The quote mask in two words, 16 bits per 16-byte block.
    let (mut lo, mut hi) = (0u64, 0u64);
    let mut special = 0u32;
    let mut spaces = 0u32;
    let mut put = |k: usize, q: u32| {
        if k < 4 {
            lo |= u64::from(q) << (16 * k);
        } else {
            hi |= u64::from(q) << (16 * (k - 4));
        }
    };
    let full = n / 16;
    for k in 0..full {
        let block: &[u8; 16] = line[16 * k..16 * k + 16].try_into().unwrap_or(&[0; 16]);
        let (q, s, w) = masks16(block);
        put(k, q);
        special |= s;
        spaces |= w;
    }
    let rest = n % 16;
    if rest > 0 {
        let (q, s, w) = if n >= 16 {
            // The line's last 16 bytes, masks shifted down to the tail.
            let block: &[u8; 16] = line[n - 16..].try_into().unwrap_or(&[0; 16]);
            let (q, s, w) = masks16(block);
            let drop = 16 - rest as u32;
            (q >> drop, s >> drop, w >> drop)
        } else {
            let mut block = [b'a'; 16];
            block[..rest].copy_from_slice(line);
            masks16(&block)
        };
        put(full, q);
        special |= s;
        spaces |= w;
    }
    (special == 0).then_some(((u128::from(hi) << 64) | u128::from(lo), spaces != 0))
}

/// Per byte of `block`, a bit: (is a quote, is a backslash, a control
/// character or non-ASCII, is a space).
#[cfg(target_arch = "x86_64")]
#[inline]
fn masks16(block: &[u8; 16]) -> (u32, u32, u32) {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of the x86_64 baseline, and the unaligned load
    // reads exactly the 16 bytes of `block`.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast());
        let quote = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8)));
        let backslash = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8)));
        // Signed: below 0x20, or 0x80 and above.
        let odd = _mm_movemask_epi8(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)));
        let space = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b' ' as i8)));
        (quote as u32, (backslash | odd) as u32, space as u32)
    }
}

/// Bit `i` set where `chunk[i] == byte`.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn byte_mask64(chunk: &[u8; 64], byte: u8) -> u64 {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    let mut mask = 0u64;
    for (k, part) in chunk.chunks_exact(16).enumerate() {
        // SAFETY: SSE2 is part of the x86_64 baseline, and the unaligned
        // load reads exactly the 16 bytes of `part`.
        let m = unsafe {
            let v = _mm_loadu_si128(part.as_ptr().cast());
            _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(byte as i8))) as u16
        };
        mask |= u64::from(m) << (16 * k);
    }
    mask
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub(crate) fn byte_mask64(chunk: &[u8; 64], byte: u8) -> u64 {
    byte_mask64_portable(chunk, byte)
}

#[cfg(any(test, not(target_arch = "x86_64")))]
fn byte_mask64_portable(chunk: &[u8; 64], byte: u8) -> u64 {
    chunk
        .iter()
        .enumerate()
        .fold(0, |m, (i, &b)| m | (u64::from(b == byte) << i))
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn masks16(block: &[u8; 16]) -> (u32, u32, u32) {
    masks16_portable(block)
}

#[cfg(any(test, not(target_arch = "x86_64")))]
fn masks16_portable(block: &[u8; 16]) -> (u32, u32, u32) {
    let (mut quote, mut special, mut space) = (0u32, 0u32, 0u32);
    for (i, &b) in block.iter().enumerate() {
        quote |= u32::from(b == b'"') << i;
        special |= u32::from(b == b'\\' || !(0x20..0x80).contains(&b)) << i;
        space |= u32::from(b == b' ') << i;
    }
    (quote, special, space)
}

impl<'a, const PLAIN: bool, const WS: bool> Parser<'a, PLAIN, WS> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline(always)]
    fn skip_ws(&mut self) {
        if !WS {
            return;
        }
        while let Some(&c) = self.b.get(self.i) {
            if !is_ws(c) {
                break;
            }
            self.i += 1;
        }
    }

    #[inline]
    fn expect(&mut self, c: u8) -> R<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    /// A top-level key; `self.i` is just past its opening quote and ends
    /// just past the closing one. Plain spellings of the keys the scan reads
    /// are recognised from one 8-byte load; anything else takes the general
    /// string path.
    #[inline]
    fn key<const MORE: bool>(&mut self) -> R<Key> {
        if PLAIN {
            // The key ends at the next quote; no escapes are possible.
            let end = self.closing_quote()?;
            let len = end - self.i;
            let k = &self.b[self.i..end];
            fn is<const N: usize>(k: &[u8], name: &[u8; N]) -> bool {
                k.first_chunk::<N>() == Some(name)
            }
            let key = match len {
                2 if is(k, b"id") => Key::Id,
                2 if is(k, b"ts") => Key::Ts,
                3 if is(k, b"seq") => Key::Seq,
                5 if is(k, b"event") => Key::Event,
                5 if is(k, b"error") => Key::Error,
                5 if is(k, b"retry") => Key::Retry,
                5 if is(k, b"extra") => Key::Extra,
                6 if MORE && is(k, b"worker") => Key::Worker,
                _ => Key::Other,
            };
            self.i = end + 1;
            return Ok(key);
        }
        if let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            let w = u64::from_le_bytes(w);
            const EVENT: u64 = word(b"event\"");
            const SEQ: u64 = word(b"seq\"");
            const ID: u64 = word(b"id\"");
            const TS: u64 = word(b"ts\"");
            const ERROR: u64 = word(b"error\"");
            const RETRY: u64 = word(b"retry\"");
            const EXTRA: u64 = word(b"extra\"");
            const WORKER: u64 = word(b"worker\"");
            if MORE && w & mask(7) == WORKER {
                self.i += 7;
                return Ok(Key::Worker);
            }
            let (key, len) = match w & mask(6) {
                EVENT => (Key::Event, 6),
                ERROR => (Key::Error, 6),
                RETRY => (Key::Retry, 6),
                EXTRA => (Key::Extra, 6),
                _ => match w & mask(4) {
                    SEQ => (Key::Seq, 4),
                    _ => match w & mask(3) {
                        ID => (Key::Id, 3),
                        TS => (Key::Ts, 3),
                        _ => (Key::Other, 0),
                    },
                },
            };
            if len > 0 {
                self.i += len;
                return Ok(key);
            }
        }
        let key = self.string()?;
        Ok(if key.escaped {
            Key::of(&key.bytes())
        } else {
            Key::of(key.raw)
        })
    }

    /// The top-level object; `self.i` is just past its `{`.
    fn top_object<const MORE: bool>(&mut self, f: &mut Fields<'a>, m: &mut More<'a>) -> R<()> {
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.expect(b'"')?;
            let key = self.key::<MORE>()?;
            self.skip_ws();
            self.expect(b':')?;
            self.skip_ws();
            // Values are written straight into their field (building them
            // in a temporary and copying it costs a store-forwarding stall).
            match key {
                Key::Event => self.value_into(&mut f.event, 1)?,
                Key::Seq => self.value_into(&mut f.seq, 1)?,
                Key::Id => self.value_into(&mut f.id, 1)?,
                Key::Ts => self.value_into(&mut f.ts, 1)?,
                Key::Error => self.value_into(&mut f.error, 1)?,
                Key::Retry => self.value_into(&mut f.retry, 1)?,
                Key::Extra => {
                    if self.peek() == Some(b'{') {
                        self.extra::<MORE>(&mut f.item_size, m)?;
                    } else {
                        self.skip_scalar_or(1)?;
                        f.item_size = Value::Absent;
                        if MORE {
                            (m.files, m.disk) = (Value::Absent, Value::Absent);
                        }
                    }
                }
                Key::Worker if MORE => self.value_into(&mut m.worker, 1)?,
                Key::Worker | Key::Other => self.skip_scalar_or(1)?,
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.skip_ws();
                }
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Malformed),
            }
        }
    }

    /// The `extra` object (depth 2); writes its last `item_size` to `size`
    /// (and, when `MORE`, its last `files` and `disk` to `m`).
    #[inline(always)]
    fn extra<const MORE: bool>(&mut self, size: &mut Value<'a>, m: &mut More<'a>) -> R<()> {
        // Depth 2 is always within MAX_DEPTH.
        self.i += 1;
        self.skip_ws();
        *size = Value::Absent;
        if MORE {
            (m.files, m.disk) = (Value::Absent, Value::Absent);
        }
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.expect(b'"')?;
            let key = self.string()?;
            self.skip_ws();
            self.expect(b':')?;
            self.skip_ws();
            if key.eq_bytes(b"item_size") {
                self.value_into(size, 2)?;
            } else if MORE && key.eq_bytes(b"files") {
                self.value_into(&mut m.files, 2)?;
            } else if MORE && key.eq_bytes(b"disk") {
                self.value_into(&mut m.disk, 2)?;
            } else {
                self.skip_scalar_or(2)?;
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.skip_ws();
                }
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Malformed),
            }
        }
    }

    /// A value inside a container at `depth` (the top-level object or
    /// `extra`), reduced to a [`Value`] and written to `dest`.
    #[inline(always)]
    fn value_into(&mut self, dest: &mut Value<'a>, depth: usize) -> R<()> {
        match self.peek() {
            Some(b'"') => {
                self.i += 1;
                let start = self.i;
                let escaped = self.string_end()?;
                *dest = Value::Str(JsonStr {
                    raw: &self.b[start..self.i - 1],
                    escaped,
                });
            }
            Some(b'-' | b'0'..=b'9') => {
                if let Some(n) = self.short_number() {
                    *dest = Value::UInt(n);
                } else {
                    *dest = self.detour(|p| p.number_slow())?;
                }
            }
            Some(b'f') => {
                self.literal(b"false")?;
                *dest = Value::False;
            }
            _ => {
                self.skip_scalar_or(depth)?;
                *dest = Value::Other;
            }
        }
        Ok(())
    }

    /// Run an out-of-line step on a copy of the parser. The hot path never
    /// hands out `&mut self`, so the compiler can keep the parser's fields
    /// in registers; only the copy's address escapes.
    #[inline(always)]
    fn detour<T>(&mut self, step: impl FnOnce(&mut Self) -> R<T>) -> R<T> {
        let mut copy = Parser::<PLAIN, WS> {
            b: self.b,
            i: self.i,
            lo: self.lo,
            hi: self.hi,
        };
        let result = step(&mut copy);
        self.i = copy.i;
        self.lo = copy.lo;
        self.hi = copy.hi;
        result
    }

    /// Skip a value inside a container at `depth`: strings, short numbers
    /// and literals inline, anything else through [`Parser::skip_value`].
    #[inline(always)]
    fn skip_scalar_or(&mut self, depth: usize) -> R<()> {
        match self.peek() {
            Some(b'"') => {
                self.i += 1;
                self.string_end().map(|_| ())
            }
            Some(b'1'..=b'9') => match self.short_number() {
                Some(_) => Ok(()),
                None => self.detour(|p| p.skip_value(depth)),
            },
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => self.detour(|p| p.skip_value(depth)),
        }
    }

    /// Validate and skip any value inside a container at `depth`.
    #[inline(never)]
    fn skip_value(&mut self, depth: usize) -> R<()> {
        match self.peek().ok_or(Malformed)? {
            b'"' => {
                self.i += 1;
                self.string().map(|_| ())
            }
            b'-' | b'0'..=b'9' => self.number().map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            open @ (b'{' | b'[') => {
                let depth = depth + 1;
                if depth > MAX_DEPTH {
                    return Err(Malformed);
                }
                let close = if open == b'{' { b'}' } else { b']' };
                self.i += 1;
                self.skip_ws();
                if self.peek() == Some(close) {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    if open == b'{' {
                        self.expect(b'"')?;
                        self.string()?;
                        self.skip_ws();
                        self.expect(b':')?;
                        self.skip_ws();
                    }
                    self.skip_value(depth)?;
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => {
                            self.i += 1;
                            self.skip_ws();
                        }
                        Some(c) if c == close => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(Malformed),
                    }
                }
            }
            _ => Err(Malformed),
        }
    }

    #[inline(always)]
    fn literal(&mut self, word: &[u8]) -> R<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    /// A number per the RFC grammar; `self.i` is at its first byte.
    #[inline(always)]
    fn number(&mut self) -> R<Value<'a>> {
        match self.short_number() {
            Some(n) => Ok(Value::UInt(n)),
            None => self.number_slow(),
        }
    }

    /// The fast path for numbers: 1 to 15 digits (no leading zero), then
    /// neither a fraction nor an exponent. `None` (nothing consumed) for
    /// anything else.
    #[inline(always)]
    fn short_number(&mut self) -> Option<u64> {
        let b = self.b;
        let at = self.i;
        let w = word_at(b, at)?;
        let n = digit_run_word(w);
        let (n, value) = if n < 8 {
            (n, eight_digits(w, n.max(1)))
        } else {
            let w2 = word_at(b, at + 8).unwrap_or(0);
            let n2 = digit_run_word(w2);
            if n2 == 8 {
                return None;
            }
            const POW10: [u64; 8] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000];
            let low = if n2 == 0 { 0 } else { eight_digits(w2, n2) };
            (8 + n2, eight_digits(w, 8) * POW10[n2] + low)
        };
        if n == 0 || b[at] == b'0' || matches!(b.get(at + n), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        self.i += n;
        Some(value)
    }

    #[inline(never)]
    fn number_slow(&mut self) -> R<Value<'a>> {
        let start = self.i;
        Ok(match self.number_kind()? {
            Num::UInt(n) => Value::UInt(n),
            Num::Big(end) => Value::BigUInt(&self.b[start..end]),
            Num::Other => Value::Other,
        })
    }

    /// A number per the RFC grammar, returned in registers; `self.i` is at
    /// its first byte.
    #[inline]
    fn number_kind(&mut self) -> R<Num> {
        let b = self.b;
        let neg = b[self.i] == b'-';
        if neg {
            self.i += 1;
        }
        let mut value: u64 = 0;
        let mut overflow = false;
        let mut int_digits = 1;
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                let rest = &b[self.i..];
                let n = digit_run(rest);
                int_digits = n;
                let digits = &rest[..n];
                self.i += n;
                if n <= 8 && rest.len() >= 8 {
                    value = eight_digits(load8(rest), n);
                } else if n <= 16 && rest.len() >= 16 {
                    const POW10: [u64; 9] = [
                        1,
                        10,
                        100,
                        1_000,
                        10_000,
                        100_000,
                        1_000_000,
                        10_000_000,
                        100_000_000,
                    ];
                    value = eight_digits(load8(rest), 8) * POW10[n - 8]
                        + eight_digits(load8(&rest[8..]), n - 8);
                } else if n <= 19 {
                    // 19 digits always fit in a u64.
                    for &c in digits {
                        value = value * 10 + u64::from(c - b'0');
                    }
                } else if n == 20 {
                    // 20 digits may or may not fit.
                    for &c in digits {
                        match value
                            .checked_mul(10)
                            .and_then(|v| v.checked_add(u64::from(c - b'0')))
                        {
                            Some(v) => value = v,
                            None => overflow = true,
                        }
                    }
                } else {
                    overflow = true;
                }
            }
            _ => return Err(Malformed),
        }
        let int_end = self.i;
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digits()?;
            integer = false;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.digits()?;
            integer = false;
        }
        if integer && int_digits > PYTHON_INT_DIGITS {
            // Python's json refuses such integers: a job line holding one
            // could never be handed back as a dict.
            return Err(Malformed);
        }
        Ok(match (integer, overflow, neg) {
            (true, false, false) => Num::UInt(value),
            (true, false, true) if value == 0 => Num::UInt(0),
            (true, true, false) => Num::Big(int_end),
            _ => Num::Other,
        })
    }

    /// One or more decimal digits.
    fn digits(&mut self) -> R<()> {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        if self.i == start {
            Err(Malformed)
        } else {
            Ok(())
        }
    }

    /// A string body; `self.i` is just past the opening quote and ends just
    /// past the closing one.
    #[inline(always)]
    fn string(&mut self) -> R<JsonStr<'a>> {
        let start = self.i;
        let escaped = self.string_end()?;
        Ok(JsonStr {
            raw: &self.b[start..self.i - 1],
            escaped,
        })
    }

    /// Scan a string body (as [`Parser::string`]); returns whether it had
    /// escapes. Kept small so that its result travels in a register.
    #[inline]
    fn string_end(&mut self) -> R<bool> {
        if PLAIN {
            self.i = self.closing_quote()? + 1;
            return Ok(false);
        }
        let b = self.b;
        let mut escaped = false;
        loop {
            while let Some(chunk) = b.get(self.i..self.i + 8) {
                let mut w = [0u8; 8];
                w.copy_from_slice(chunk);
                let m = string_specials(u64::from_le_bytes(w));
                if m == 0 {
                    self.i += 8;
                } else {
                    self.i += (m.trailing_zeros() / 8) as usize;
                    break;
                }
            }
            match *b.get(self.i).ok_or(Malformed)? {
                b'"' => {
                    self.i += 1;
                    return Ok(escaped);
                }
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                0..=0x1f => return Err(Malformed),
                0x80..=0xff => self.utf8()?,
                _ => self.i += 1,
            }
        }
    }

    /// In a plain line, at the start of a string body: the position of its
    /// closing quote. Strings are met in order and each takes its two quotes
    /// off the mask, so the lowest quote left is this string's opening one
    /// and the next is its closing one.
    #[inline(always)]
    fn closing_quote(&mut self) -> R<usize> {
        self.pop_quote().ok_or(Malformed)?;
        self.pop_quote().ok_or(Malformed)
    }

    /// Take the lowest quote left off the mask.
    #[inline(always)]
    fn pop_quote(&mut self) -> Option<usize> {
        if self.lo != 0 {
            let at = self.lo.trailing_zeros() as usize;
            self.lo &= self.lo - 1;
            Some(at)
        } else if self.hi != 0 {
            let at = self.hi.trailing_zeros() as usize;
            self.hi &= self.hi - 1;
            Some(64 + at)
        } else {
            None
        }
    }

    /// One escape; `self.i` is at the backslash.
    fn escape(&mut self) -> R<()> {
        let b = self.b;
        match b.get(self.i + 1).copied().ok_or(Malformed)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                self.i += 2;
                Ok(())
            }
            b'u' => {
                let cp = hex4(b, self.i + 2).ok_or(Malformed)?;
                self.i += 6;
                if (0xD800..0xDC00).contains(&cp) {
                    // A high surrogate must be followed by a low one.
                    if b.get(self.i) == Some(&b'\\') && b.get(self.i + 1) == Some(&b'u') {
                        let lo = hex4(b, self.i + 2).ok_or(Malformed)?;
                        if (0xDC00..0xE000).contains(&lo) {
                            self.i += 6;
                            return Ok(());
                        }
                    }
                    Err(Malformed)
                } else if (0xDC00..0xE000).contains(&cp) {
                    Err(Malformed)
                } else {
                    Ok(())
                }
            }
            _ => Err(Malformed),
        }
    }

    /// One UTF-8 encoded character (strict: no overlongs, no surrogates,
    /// nothing above U+10FFFF); `self.i` is at its lead byte.
    fn utf8(&mut self) -> R<()> {
        let b = self.b;
        let lead = b[self.i];
        let cont = |k: usize, lo: u8, hi: u8| -> R<()> {
            match b.get(self.i + k) {
                Some(&c) if (lo..=hi).contains(&c) => Ok(()),
                _ => Err(Malformed),
            }
        };
        let len = match lead {
            0xC2..=0xDF => {
                cont(1, 0x80, 0xBF)?;
                2
            }
            0xE0 => {
                cont(1, 0xA0, 0xBF)?;
                cont(2, 0x80, 0xBF)?;
                3
            }
            0xE1..=0xEC | 0xEE..=0xEF => {
                cont(1, 0x80, 0xBF)?;
                cont(2, 0x80, 0xBF)?;
                3
            }
            0xED => {
                cont(1, 0x80, 0x9F)?;
                cont(2, 0x80, 0xBF)?;
                3
            }
            0xF0 => {
                cont(1, 0x90, 0xBF)?;
                cont(2, 0x80, 0xBF)?;
                cont(3, 0x80, 0xBF)?;
                4
            }
            0xF1..=0xF3 => {
                cont(1, 0x80, 0xBF)?;
                cont(2, 0x80, 0xBF)?;
                cont(3, 0x80, 0xBF)?;
                4
            }
            0xF4 => {
                cont(1, 0x80, 0x8F)?;
                cont(2, 0x80, 0xBF)?;
                cont(3, 0x80, 0xBF)?;
                4
            }
            _ => return Err(Malformed),
        };
        self.i += len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Fields<'_> {
        match parse_line(line.as_bytes()) {
            Ok(Some(f)) => f,
            other => panic!("expected a valid object for {line:?}, got {other:?}"),
        }
    }

    fn bad(line: &[u8]) {
        assert_eq!(
            parse_line(line),
            Err(Malformed),
            "expected malformed: {:?}",
            String::from_utf8_lossy(line)
        );
    }

    fn s<'a>(v: Value<'a>) -> String {
        match v {
            Value::Str(s) => s.to_str().into_owned(),
            other => panic!("not a string: {other:?}"),
        }
    }

    #[test]
    fn compact_job_line() {
        let f = ok(
            r#"{"event":"job","seq":1,"id":"nasa-apollo-11","op":"download","ts":"20261128T101500Z"}"#,
        );
        assert_eq!(s(f.event), "job");
        assert_eq!(f.seq, Value::UInt(1));
        assert_eq!(s(f.id), "nasa-apollo-11");
        assert_eq!(s(f.ts), "20261128T101500Z");
        assert_eq!(f.retry, Value::Absent);
        assert_eq!(f.item_size, Value::Absent);
    }

    #[test]
    fn completed_with_item_size_and_failed_with_retry() {
        let f =
            ok(r#"{"event":"completed","seq":7,"ts":"x","extra":{"files":3,"item_size":123456}}"#);
        assert_eq!(f.item_size, Value::UInt(123456));
        let f = ok(r#"{"event":"failed","seq":2,"error":"HTTP 503","retry":1}"#);
        assert_eq!(f.retry, Value::UInt(1));
        assert_eq!(s(f.error), "HTTP 503");
        let f = ok(r#"{"event":"failed","seq":3,"error":"dark","retry":false}"#);
        assert_eq!(f.retry, Value::False);
    }

    #[test]
    fn any_order_whitespace_and_escapes() {
        let f = ok(" \t{ \"ts\" : \"a\\\"b\" ,\r\n \"seq\" :\t42 , \"\\u0065vent\" : \"st\\u0061rted\" }\r");
        assert_eq!(s(f.event), "started");
        assert_eq!(f.seq, Value::UInt(42));
        assert_eq!(s(f.ts), "a\"b");
        let f = ok(r#"{"event":"job","id":"caf\u00e9 \ud83d\ude00 \/ \\ \b\f\n\r\t"}"#);
        assert_eq!(s(f.id), "café 😀 / \\ \u{8}\u{c}\n\r\t");
        let f = ok("{\"id\":\"café ☃ 😀\"}");
        assert_eq!(s(f.id), "café ☃ 😀");
    }

    #[test]
    fn strings_are_borrowed_without_escapes() {
        let f = ok(r#"{"id":"plain","ts":"with\nescape"}"#);
        match (f.id, f.ts) {
            (Value::Str(a), Value::Str(b)) => {
                assert!(matches!(a.to_str(), Cow::Borrowed("plain")));
                assert!(matches!(b.to_str(), Cow::Owned(_)));
                assert!(b.has_escapes() && !a.has_escapes());
                assert_eq!(a.raw(), b"plain");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn last_duplicate_key_wins() {
        let f = ok(r#"{"event":"job","seq":1,"seq":2,"event":5}"#);
        assert_eq!(f.seq, Value::UInt(2));
        assert_eq!(f.event, Value::UInt(5));
        let f = ok(r#"{"event":"job","event":null}"#);
        assert_eq!(f.event, Value::Other);
        let f = ok(r#"{"extra":{"item_size":5},"extra":{}}"#);
        assert_eq!(f.item_size, Value::Absent);
        let f = ok(r#"{"extra":{"item_size":5,"item_size":6}}"#);
        assert_eq!(f.item_size, Value::UInt(6));
        let f = ok(r#"{"extra":{"item_size":5,"item_size":"6"}}"#);
        assert!(matches!(f.item_size, Value::Str(_)));
        let f = ok(r#"{"extra":{"item_size":5},"extra":3}"#);
        assert_eq!(f.item_size, Value::Absent);
        let f = ok(r#"{"extra":{"item_size":-1}}"#);
        assert_eq!(f.item_size, Value::Other);
        let f = ok(r#"{"extra":{"item_\u0073ize":9}}"#);
        assert_eq!(f.item_size, Value::UInt(9));
        let f = ok(r#"{"extra":{"nested":{"item_size":9}}}"#);
        assert_eq!(f.item_size, Value::Absent);
        let f = ok(r#"{"extra":{"item_size":123456789012345678901234567890}}"#);
        assert_eq!(
            f.item_size,
            Value::BigUInt(b"123456789012345678901234567890")
        );
    }

    #[test]
    fn numbers() {
        // Short numbers followed by at least 8 bytes take the word path.
        for v in [
            1u64,
            7,
            42,
            905,
            1234,
            98765,
            100000,
            1234567,
            99999999,
            123456789,
            9876543210,
            1000000000000000,
            9999999999999999,
            10000000000000000,
            1234567890123456789,
            123456789012345,
            100000000000000,
            12345678,
        ] {
            for tail in [
                "}",
                ",\"padding\":\"xxxxxxxx\"}",
                ",\"padding\":\"xxxxxxxxxxxxxxxx\"}",
                " , \"p\":1}",
            ] {
                let line = format!("{{\"seq\":{v}{tail}");
                assert_eq!(ok(&line).seq, Value::UInt(v), "{line}");
            }
        }
        let seq = |t: &str| ok(Box::leak(format!(r#"{{"seq":{t}}}"#).into_boxed_str())).seq;
        assert_eq!(seq("0"), Value::UInt(0));
        assert_eq!(seq("-0"), Value::UInt(0));
        assert_eq!(seq("100000000"), Value::UInt(100_000_000));
        assert_eq!(seq("18446744073709551615"), Value::UInt(u64::MAX));
        assert_eq!(
            seq("9999999999999999999"),
            Value::UInt(9_999_999_999_999_999_999)
        );
        assert_eq!(
            seq("10000000000000000000"),
            Value::UInt(10_000_000_000_000_000_000)
        );
        assert_eq!(
            seq("99999999999999999999"),
            Value::BigUInt(b"99999999999999999999")
        );
        assert_eq!(
            seq("100000000000000000000"),
            Value::BigUInt(b"100000000000000000000")
        );
        assert_eq!(
            seq("18446744073709551616"),
            Value::BigUInt(b"18446744073709551616")
        );
        assert_eq!(seq("123456789012345678901234567890e0"), Value::Other);
        assert_eq!(seq("-18446744073709551616"), Value::Other);
        assert_eq!(seq("-1"), Value::Other);
        assert_eq!(seq("1.0"), Value::Other);
        assert_eq!(seq("1e2"), Value::Other);
        assert_eq!(seq("1E+2"), Value::Other);
        assert_eq!(seq("-0.5e-3"), Value::Other);
        assert_eq!(seq("true"), Value::Other);
        assert_eq!(seq("false"), Value::False);
        assert_eq!(seq("null"), Value::Other);
        assert_eq!(
            seq("\"1\""),
            Value::Str(JsonStr {
                raw: b"1",
                escaped: false
            })
        );
        assert_eq!(seq("[1]"), Value::Other);
        for t in [
            "01",
            "-",
            "+1",
            ".5",
            "1.",
            "1.e3",
            "1e",
            "1e+",
            "--1",
            "0x10",
            "1_000",
            "NaN",
            "-NaN",
            "Infinity",
            "-Infinity",
            "inf",
            "1 2",
            "tru",
            "nul",
            "falsey",
            "True",
        ] {
            bad(format!(r#"{{"seq":{t}}}"#).as_bytes());
            bad(format!(r#"{{"other":{t}}}"#).as_bytes());
        }
    }

    #[test]
    fn structure() {
        for t in [
            "{}",
            " {} ",
            "{\"a\":[]}",
            "{\"a\":[1,\"x\",{\"b\":null},[true,false]]}",
            "{\"a\":{\"b\":{\"c\":{}}}}",
            "{\"\":\"\"}",
        ] {
            ok(t);
        }
        for t in [
            "[]",
            "1",
            "\"x\"",
            "null",
            "{",
            "}",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{,\"a\":1}",
            "{\"a\":1 \"b\":2}",
            "{a:1}",
            "{'a':1}",
            "{\"a\":[1,]}",
            "{\"a\":[,1]}",
            "{\"a\":[1 2]}",
            "{\"a\":1}}",
            "{\"a\":1}x",
            "{\"a\":1}{}",
            "{\"a\":1",
            "{\"a\":[}",
            "{\"a\":{]}",
            "{\"a\" 1}",
            "\u{feff}{}",
            "{\"a\":1}\u{0}",
            "{\u{b}}",
            "{\u{c}}",
            "{\"a\":1}\u{a0}",
        ] {
            bad(t.as_bytes());
        }
    }

    #[test]
    fn blank_lines() {
        assert_eq!(parse_line(b""), Ok(None));
        assert_eq!(parse_line(b" \t\r "), Ok(None));
        assert!(is_blank(b" \r\t\n"));
        assert!(!is_blank(b" x"));
        bad(b"\x0b");
    }

    #[test]
    fn strings() {
        for t in [
            "\"\\u00e9\"",
            "\"\\uD83D\\uDE00\"",
            "\"\\u0000\"",
            "\"\\uFFFF\"",
            "\"\\uABcd\"",
            "\"\x7f\"",
            "\"a very long string that crosses several eight byte words \\\" ok\"",
        ] {
            ok(&format!("{{\"k\":{t}}}"));
        }
        let rejected: &[&[u8]] = &[
            b"\"\\ud800\"",                // lone high surrogate
            b"\"\\udc00\"",                // lone low surrogate
            b"\"\\ud800\\u0041\"",         // high followed by non-low
            b"\"\\ud800\\ud800\"",         // high followed by high
            b"\"\\udfff\\ud800\"",         // reversed pair
            b"\"\\ud800x\"",               // high then text
            b"\"\\u12\"",                  // short escape
            b"\"\\u12g4\"",                // bad hex
            b"\"\\x41\"",                  // unknown escape
            b"\"\\U0041\"",                // uppercase u
            b"\"\\'\"",                    // no single-quote escape
            b"\"\\",                       // dangling backslash
            b"\"abc",                      // unterminated
            b"\"a\tb\"",                   // raw tab
            b"\"a\nb\"",                   // raw newline
            b"\"a\x00b\"",                 // raw NUL
            b"\"a\x1fb\"",                 // raw unit separator
            b"\"\xff\"",                   // invalid byte
            b"\"\xc3\"",                   // truncated 2-byte
            b"\"\xc0\xaf\"",               // overlong
            b"\"\xe0\x80\xaf\"",           // overlong 3-byte
            b"\"\xed\xa0\x80\"",           // encoded surrogate
            b"\"\xf4\x90\x80\x80\"",       // above U+10FFFF
            b"\"\xf8\x88\x80\x80\x80\"",   // 5-byte form
            b"\"\x80\"",                   // lone continuation
            b"\"0123456789\xc3(abcdefg\"", // bad continuation after a fast run
        ];
        for t in rejected {
            let mut line = b"{\"k\":".to_vec();
            line.extend_from_slice(t);
            line.push(b'}');
            bad(&line);
            // The same bad string as a key.
            let mut line = b"{".to_vec();
            line.extend_from_slice(t);
            line.extend_from_slice(b":1}");
            bad(&line);
        }
        // Invalid UTF-8 outside strings.
        bad(b"{\"a\":1,\xc3\xa9}");
    }

    #[test]
    fn specials_cover_every_byte_position() {
        for pos in 0..8 {
            for special in [b'"', b'\\', 0x00, 0x1f, 0x80, 0xff] {
                let mut w = [b'a'; 8];
                w[pos] = special;
                let m = string_specials(u64::from_le_bytes(w));
                assert_eq!((m.trailing_zeros() / 8) as usize, pos);
            }
        }
        for plain in [b' ', b'!', b'#', b'[', b']', b'~', 0x7f, b'0'] {
            assert_eq!(string_specials(u64::from_le_bytes([plain; 8])), 0);
        }
    }

    #[test]
    fn depth_cap() {
        let nested = |n: usize| {
            // n nested arrays inside the top-level object: depth n + 1.
            format!("{{\"a\":{}{}}}", "[".repeat(n), "]".repeat(n))
        };
        ok(&nested(MAX_DEPTH - 1));
        bad(nested(MAX_DEPTH).as_bytes());
        // The same under the keys the scan reads, and inside `extra`.
        for key in ["event", "seq", "id", "ts", "error", "retry", "extra"] {
            let at = |n: usize| format!("{{\"{key}\":{}{}}}", "[".repeat(n), "]".repeat(n));
            ok(&at(MAX_DEPTH - 1));
            bad(at(MAX_DEPTH).as_bytes());
        }
        let in_extra = |n: usize| {
            format!(
                "{{\"extra\":{{\"item_size\":{}{}}}}}",
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        ok(&in_extra(MAX_DEPTH - 2));
        bad(in_extra(MAX_DEPTH - 1).as_bytes());
        bad(nested(100_000).as_bytes());
        let objects = |n: usize| format!("{{{}{}}}", "\"a\":{".repeat(n), "}".repeat(n));
        ok(&objects(MAX_DEPTH - 1));
        bad(objects(MAX_DEPTH).as_bytes());
        // An unbalanced deep prefix is rejected without recursing forever.
        bad("{\"a\":".to_string().repeat(10_000).as_bytes());
    }

    /// Every line through the general path only.
    fn parse_general(line: &[u8]) -> Result<Option<Fields<'_>>, Malformed> {
        let mut f = Fields::default();
        Ok(parse_with::<false, true, false>(line, &mut f, &mut More::default(), 0)?.then_some(f))
    }

    #[test]
    fn digit_helpers() {
        for s in [
            "",
            "a",
            "0",
            "7x",
            "12345678",
            "123456789",
            "1234567890123456789012",
            "12a45",
            "1.5",
        ] {
            let want = s.bytes().take_while(u8::is_ascii_digit).count();
            assert_eq!(digit_run(s.as_bytes()), want, "{s}");
        }
        for b in 0..=255u8 {
            let mut s = *b"11111111";
            s[3] = b;
            let want = if b.is_ascii_digit() { 8 } else { 3 };
            assert_eq!(digit_run(&s), want, "{b}");
        }
        for v in [0u64, 1, 9, 10, 99, 1234, 98765432, 10000000, 99999999] {
            let text = v.to_string();
            let n = text.len();
            let mut padded = text.into_bytes();
            padded.resize(8, b'}');
            assert_eq!(eight_digits(load8(&padded), n), v, "{v}");
        }
    }

    #[test]
    fn plain_line_path_agrees_with_the_general_path() {
        let lines: &[&[u8]] = &[
            br#"{"event":"job","seq":1,"id":"nasa-apollo-00000001","op":"download","ts":"20261128T101500Z"}"#,
            br#"{"event":"completed","seq":12,"ts":"20261128T101500Z","extra":{"item_size":123456}}"#,
            br#"{"event":"failed","seq":9,"ts":"20251124T170005Z","error":"HTTP 429","retry":false}"#,
            br#"{"event":"started","seq":3,"ts":"x","worker":2,"a":[1,{"b":"c"}],"":""}"#,
            br#" {"event" : "job" , "seq":1 , "id":"a" } "#,
            br#"{"event":"job","seq":1,"id":"a"}x"#,
            br#"{"event":"job","seq":1,"id":"a""b"}"#,
            br#"{"event":"job","seq":1,"id":}"#,
            br#"{"":"","":"","":""}"#,
            br#"{"a":"""#,
            br#"""#,
            b"{}",
        ];
        let long = format!("{{\"id\":\"{}\",\"seq\":5}}", "x".repeat(200));
        let mut all: Vec<Vec<u8>> = lines.iter().map(|l| l.to_vec()).collect();
        all.push(long.into_bytes());
        for line in &all {
            // Whole, and cut at every byte (strings left open, keys cut...).
            for end in 0..=line.len() {
                let l = &line[..end];
                assert_eq!(
                    parse_line(l),
                    parse_general(l),
                    "{:?}",
                    String::from_utf8_lossy(l)
                );
            }
        }
        // The mask sees exactly the quotes, at any offset up to 128 bytes.
        for n in 0..=128 {
            let mut l = vec![b'a'; n];
            if n > 0 {
                l[n - 1] = b'"';
            }
            let q = plain_quotes(&l);
            assert_eq!(q, Some((if n > 0 { 1u128 << (n - 1) } else { 0 }, false)));
        }
        assert_eq!(plain_quotes(&[b'a'; 129]), None);
        // Specials and spaces in the tail of lines longer than one block.
        for n in 17..=128 {
            for at in [n - 1, (n - 1) / 16 * 16, 15, 0] {
                for (byte, want) in [(b'\t', None), (b' ', Some((0, true))), (b'\\', None)] {
                    let mut l = vec![b'a'; n];
                    l[at] = byte;
                    assert_eq!(plain_quotes(&l), want, "{n} {at} {byte}");
                }
            }
        }
        assert_eq!(plain_quotes(b"a\\b"), None);
        assert_eq!(plain_quotes(b"a\tb"), None);
        assert_eq!(plain_quotes("é".as_bytes()), None);
        assert_eq!(plain_quotes(b"\x7f~ "), Some((0, true)));
        assert_eq!(plain_quotes(b"\"\" "), Some((3, true)));
        for b in 0..=255u8 {
            let mut block = [b' '; 16];
            block[b as usize % 16] = b;
            assert_eq!(masks16(&block), masks16_portable(&block), "{b}");
            let mut chunk = [b'x'; 64];
            chunk[b as usize % 64] = b;
            chunk[(b as usize * 7) % 64] = b'\n';
            for needle in [b'\n', b, b'x'] {
                assert_eq!(
                    byte_mask64(&chunk, needle),
                    byte_mask64_portable(&chunk, needle)
                );
            }
        }
    }

    fn more(line: &str) -> (Fields<'_>, More<'_>) {
        let (mut f, mut m) = (Fields::default(), More::default());
        assert_eq!(
            parse_into_more(line.as_bytes(), &mut f, &mut m),
            Ok(true),
            "{line}"
        );
        (f, m)
    }

    #[test]
    fn more_fields_worker_files_disk() {
        let (f, m) = more(
            r#"{"event":"completed","seq":7,"ts":"x","worker":3,"extra":{"item_size":9,"files":4,"disk":"/d1"}}"#,
        );
        assert_eq!(
            f,
            ok(
                r#"{"event":"completed","seq":7,"ts":"x","worker":3,"extra":{"item_size":9,"files":4,"disk":"/d1"}}"#
            )
        );
        assert_eq!((m.worker, m.files), (Value::UInt(3), Value::UInt(4)));
        assert_eq!(s(m.disk), "/d1");
        // Every spelling and path: escaped keys, whitespace, long lines.
        let long = format!(
            r#"{{"pad":"{}","worker":12,"extra":{{"files":5,"disk":"dé"}}}}"#,
            "p".repeat(200)
        );
        for line in [
            r#" { "worker" : 12 , "extra" : { "files" : 5 , "disk" : "dé" } } "#,
            r#"{"worker":12,"extra":{"files":5,"disk":"dé"}}"#,
            long.as_str(),
        ] {
            let (_, m) = more(line);
            assert_eq!(
                (m.worker, m.files),
                (Value::UInt(12), Value::UInt(5)),
                "{line}"
            );
            assert_eq!(s(m.disk), "dé", "{line}");
        }
        // The last duplicate wins; a later `extra` that is not an object clears both.
        let (_, m) = more(r#"{"worker":1,"worker":-2,"extra":{"files":1,"files":"x"}}"#);
        assert_eq!(m.worker, Value::Other);
        assert!(matches!(m.files, Value::Str(_)));
        let (f, m) = more(r#"{"extra":{"files":1,"disk":"a","item_size":3},"extra":7}"#);
        assert_eq!(
            (f.item_size, m.files, m.disk),
            (Value::Absent, Value::Absent, Value::Absent)
        );
        let (_, m) = more(r#"{"extra":{"files":1,"disk":"a"},"extra":{}}"#);
        assert_eq!((m.files, m.disk), (Value::Absent, Value::Absent));
        let (_, m) = more(r#"{"extra":{"nested":{"files":1}},"workers":1,"worke":2}"#);
        assert_eq!(m, More::default());
        // The plain parse never reads them, and agrees on everything else.
        for line in [
            r#"{"event":"started","seq":1,"worker":4}"#,
            r#"{"worker":{"a":[1,2]},"seq":2}"#,
            r#"{"worker":[],"seq":3}"#,
        ] {
            assert_eq!(more(line).0, ok(line));
        }
        let (mut f, mut m) = (Fields::default(), More::default());
        assert_eq!(
            parse_into_more(b"{\"worker\":1", &mut f, &mut m),
            Err(Malformed)
        );
        assert_eq!(parse_into_more(b"  ", &mut f, &mut m), Ok(false));
    }

    #[test]
    fn validate_value_helper() {
        assert!(validate_value(b" [1, {\"a\": null}] "));
        assert!(!validate_value(b"[1,]"));
        assert!(!validate_value(b"NaN"));
    }
}
