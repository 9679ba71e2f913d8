//! One output stream's redaction state: the held-back bytes and the per-rule caches.
//!
//! Each `push` appends to the pending window, asks the matcher where the live part begins,
//! and emits everything before it with matches replaced. The window keeps one byte of context
//! before the pending part (for `\b` and `^` at its start); nothing before it is needed,
//! because a match can only begin at a byte that was held.
//!
//! Terminal colour codes (SGR: `ESC [ params m`) are removed from the matcher's view, so a
//! secret painted in two colours is still one match; a replaced range keeps its colour codes
//! (re-emitted after the replacement) so the terminal state stays right. An escape sequence
//! cut at the window end is held until it is complete.

use std::collections::BTreeMap;

use super::Redactor;
use super::matcher::{Hit, RuleCache, Scratch};

/// A chain of overlapping matches longer than this is emitted in parts (the rest stays
/// covered), so memory stays bounded whatever the output.
const MAX_HOLD: usize = 128 * 1024;
/// An incomplete escape sequence longer than this is not a colour code.
const MAX_SGR: usize = 32;

/// The streaming state for one output stream.
pub struct RedactStream<'r> {
    r: &'r Redactor,
    /// `[context byte]` + pending raw bytes.
    buf: Vec<u8>,
    /// 1 when `buf[0]` is context (already emitted), else 0.
    ctx: usize,
    /// Matcher's view when `buf` holds escape sequences: the bytes without colour codes, and
    /// where codes were cut out: `(view index, raw bytes skipped before it in total)`.
    view: Vec<u8>,
    cuts: Vec<(usize, usize)>,
    hits: Vec<Hit>,
    merged: Vec<Hit>,
    spans: Vec<(usize, usize)>,
    scratch: Scratch,
    caches: Vec<Option<RuleCache>>,
    /// Ranges (raw, relative to the pending start) of matches whose beginning was already
    /// emitted: replaced without being found again.
    carry: Vec<(usize, usize, u32)>,
    carry_next: Vec<(usize, usize, u32)>,
    /// A rule's match outgrew its bound: keep replacing up to the end of the line.
    cover_line: Option<u32>,
    counts: BTreeMap<String, u64>,
}

impl<'r> RedactStream<'r> {
    pub(crate) fn new(r: &'r Redactor) -> Self {
        RedactStream {
            r,
            buf: Vec::new(),
            ctx: 0,
            view: Vec::new(),
            cuts: Vec::new(),
            hits: Vec::new(),
            merged: Vec::new(),
            spans: Vec::new(),
            scratch: Scratch::default(),
            caches: r.matcher.rules.iter().map(|_| None).collect(),
            carry: Vec::new(),
            carry_next: Vec::new(),
            cover_line: None,
            counts: BTreeMap::new(),
        }
    }

    /// Append to `out` every byte that can no longer be part of a match (redacted); hold back
    /// only a live partial match.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if input.is_empty() {
            return;
        }
        self.buf.extend_from_slice(input);
        self.process(out, false);
    }

    /// End of stream: emit everything still held (redacted).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.process(out, true);
    }

    /// `push(input)` then `finish()`, in a single pass over the whole input.
    pub(crate) fn finish_with(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.buf.extend_from_slice(input);
        self.process(out, true);
    }

    /// Replacements so far per secret name or rule id (never values).
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    /// Bytes currently held back (for tests and diagnostics).
    pub fn held(&self) -> usize {
        self.buf.len() - self.ctx
    }

    /// Build the matcher's view of `buf` with SGR sequences removed. Returns the raw offset
    /// past which bytes must be held (an incomplete escape sequence at the end), or `None`
    /// when `buf` has no escape byte (the view is `buf` itself).
    fn build_view(&mut self, eof: bool) -> Option<usize> {
        let from = self.ctx;
        let first = from + memchr::memchr(0x1b, &self.buf[from..])?;
        let buf = &self.buf;
        self.view.clear();
        self.cuts.clear();
        self.view.extend_from_slice(&buf[..first]);
        let mut i = first;
        let mut skipped = 0;
        let mut limit = buf.len();
        while i < buf.len() {
            // buf[i] is ESC.
            match sgr_len(&buf[i..]) {
                Sgr::Complete(n) => {
                    skipped += n;
                    match self.cuts.last_mut() {
                        Some(c) if c.0 == self.view.len() => c.1 = skipped,
                        _ => self.cuts.push((self.view.len(), skipped)),
                    }
                    i += n;
                }
                Sgr::Partial if !eof => {
                    limit = i;
                    break;
                }
                Sgr::Partial | Sgr::No => {
                    self.view.push(buf[i]);
                    i += 1;
                }
            }
            let next = memchr::memchr(0x1b, &buf[i..]).map_or(buf.len(), |p| i + p);
            self.view.extend_from_slice(&buf[i..next]);
            i = next;
        }
        Some(limit)
    }

    fn process(&mut self, out: &mut Vec<u8>, eof: bool) {
        let from = self.ctx;
        if self.buf.len() <= from {
            return;
        }
        let stripped = self.build_view(eof);
        let raw_limit = stripped.unwrap_or(self.buf.len());
        let Self {
            r,
            buf,
            view,
            cuts,
            hits,
            merged,
            spans,
            scratch,
            caches,
            ..
        } = self;
        let hay: &[u8] = if stripped.is_some() { view } else { buf };
        let len = hay.len();
        // Window index -> raw offset (start of the byte), exclusive end of a range, and back.
        let to_raw = |i: usize| -> usize {
            match stripped {
                None => i,
                Some(_) if i >= len => raw_limit,
                Some(_) => {
                    let k = cuts.partition_point(|c| c.0 <= i);
                    i + if k == 0 { 0 } else { cuts[k - 1].1 }
                }
            }
        };
        let to_raw_end = |e: usize| -> usize {
            match stripped {
                None => e,
                Some(_) if e == 0 => 0,
                Some(_) => to_raw(e - 1) + 1,
            }
        };
        let to_view = |raw: usize| -> usize {
            match stripped {
                None => raw.min(len),
                Some(_) => {
                    // First view index whose raw offset is at least `raw`.
                    let (mut lo, mut hi) = (0, len);
                    while lo < hi {
                        let mid = (lo + hi) / 2;
                        if to_raw(mid) < raw {
                            lo = mid + 1;
                        } else {
                            hi = mid;
                        }
                    }
                    lo
                }
            }
        };

        hits.clear();
        for &(s, e, name) in &self.carry {
            let (s, e) = (to_view(from + s), to_view(from + e));
            if s < e {
                hits.push(Hit {
                    origin: s,
                    start: s,
                    end: e,
                    name,
                    known: true,
                });
            }
        }
        let mut line_end: Option<usize> = None;
        if let Some(name) = self.cover_line {
            let end = memchr::memchr(b'\n', &hay[from..]).map_or(len, |p| from + p);
            if end < len {
                line_end = Some(end);
            }
            if end > from {
                hits.push(Hit {
                    origin: from,
                    start: from,
                    end,
                    name,
                    known: false,
                });
            }
        }

        let scan = r.matcher.scan(caches, scratch, hay, from, eof, hits);
        let mut boundary = if eof { len } else { scan.live };

        // A match that begins before the boundary and ends after it is held whole, from where
        // it begins (else it could not be found again), unless that would hold too much: then
        // its head is emitted replaced and the rest is carried over as covered.
        spans.clear();
        spans.extend(hits.iter().map(|h| (h.origin, h.end)));
        spans.sort_unstable();
        let mut span: Option<(usize, usize)> = None;
        for &(o, e) in spans.iter() {
            match &mut span {
                Some((_, se)) if o < *se => *se = (*se).max(e),
                _ if o >= boundary => break,
                _ => span = Some((o, e)),
            }
        }
        if let Some((o, e)) = span
            && o < boundary
            && boundary < e
            && to_raw(boundary) - to_raw(o) <= MAX_HOLD
        {
            boundary = o;
        }
        let raw_boundary = to_raw(boundary);
        self.carry_next.clear();
        for h in hits.iter() {
            if h.origin < boundary && boundary < h.end {
                let s = to_raw(h.start.max(boundary)).max(raw_boundary) - raw_boundary;
                let e = to_raw_end(h.end) - raw_boundary;
                self.carry_next.push((s, e, h.name));
            }
        }

        // Union of ranges: sort, merge overlapping; the name prefers a known value, then the
        // longest match.
        hits.sort_unstable_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        merged.clear();
        for h in hits.iter() {
            if h.start >= h.end {
                continue;
            }
            match merged.last_mut() {
                Some(m) if h.start < m.end => {
                    let better = (h.known && !m.known)
                        || (h.known == m.known && h.end - h.start > m.end - m.start);
                    if better {
                        m.name = h.name;
                        m.known = h.known;
                    }
                    m.end = m.end.max(h.end);
                }
                _ => merged.push(*h),
            }
        }

        // Emit.
        let mut pos = from;
        for m in merged.iter().filter(|m| m.start < boundary) {
            let rs = to_raw(m.start);
            let re = to_raw_end(m.end).min(raw_boundary);
            out.extend_from_slice(&buf[pos..rs]);
            out.extend_from_slice(&r.replacements[m.name as usize]);
            if stripped.is_some() {
                keep_sgr(&buf[rs..re], out);
            }
            *self
                .counts
                .entry(r.names[m.name as usize].clone())
                .or_insert(0) += 1;
            pos = re;
        }
        out.extend_from_slice(&buf[pos..raw_boundary]);

        // Carry-over state.
        std::mem::swap(&mut self.carry, &mut self.carry_next);
        if eof {
            self.cover_line = None;
        } else if let Some(e) = line_end
            && boundary > e
        {
            self.cover_line = None;
        }
        if scan.overflow.is_some() && boundary == len && !eof {
            self.cover_line = scan.overflow;
        }
        let ctx_byte = if boundary > 0 {
            Some(hay[boundary - 1])
        } else {
            None
        };
        self.buf.drain(from..raw_boundary);
        if let Some(b) = ctx_byte {
            if self.ctx == 1 {
                self.buf[0] = b;
            } else {
                self.buf.insert(0, b);
                self.ctx = 1;
            }
        }
        if eof {
            self.buf.truncate(self.ctx);
            self.carry.clear();
        }
        // Do not keep a big allocation around after a burst.
        if self.buf.capacity() > 4 * MAX_HOLD && self.buf.len() < MAX_HOLD {
            self.buf.shrink_to(MAX_HOLD);
        }
    }
}

enum Sgr {
    /// A complete SGR sequence of this many bytes.
    Complete(usize),
    /// Could become one with more bytes.
    Partial,
    No,
}

/// Is `s` (starting with ESC) a colour code `ESC [ [0-9;:]* m`?
fn sgr_len(s: &[u8]) -> Sgr {
    if s.len() < 2 {
        return Sgr::Partial;
    }
    if s[1] != b'[' {
        return Sgr::No;
    }
    for (i, &b) in s.iter().enumerate().skip(2).take(MAX_SGR) {
        match b {
            b'm' => return Sgr::Complete(i + 1),
            b'0'..=b'9' | b';' | b':' => {}
            _ => return Sgr::No,
        }
    }
    if s.len() < MAX_SGR {
        Sgr::Partial
    } else {
        Sgr::No
    }
}

/// Append the colour codes inside a replaced range, so the terminal ends in the same state.
fn keep_sgr(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while let Some(p) = memchr::memchr(0x1b, &raw[i..]) {
        let at = i + p;
        match sgr_len(&raw[at..]) {
            Sgr::Complete(n) => {
                out.extend_from_slice(&raw[at..at + n]);
                i = at + n;
            }
            _ => i = at + 1,
        }
    }
}
