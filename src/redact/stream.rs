//! One output stream's redaction state: the held-back bytes and the per-rule caches.
//!
//! Each `push` appends to the pending window, asks the matcher where the live part begins,
//! and emits everything before it with matches replaced. The window keeps one byte of context
//! before the pending part (for `\b` and `^` at its start); nothing before it is needed,
//! because a match can only begin at a byte that was held.
//!
//! The matcher sees the window as a terminal would show it ([`screen`]): escape sequences and
//! characters that print nothing are out of its view, so a secret painted in two colours, cut
//! by `\e[K` or by a zero-width space is still one match; a replaced range keeps its colour
//! codes (re-emitted after the replacement) so the terminal state stays right. An escape
//! sequence cut at the window end is held until it is complete. Sequences that make the
//! terminal answer, or reach the clipboard, are left out of the output.
//!
//! A rule's match that outgrows its bound is replaced from its start, and stays replaced
//! until the match ends however long it runs ([`Open`]), whatever else is held meanwhile.

use std::collections::BTreeMap;

use super::Redactor;
use super::matcher::{Hit, Open, RuleCache, Scratch};
use super::screen::{self, Rendered, View};

/// A chain of overlapping matches longer than this is emitted in parts (the rest stays
/// covered), so memory stays bounded whatever the output.
const MAX_HOLD: usize = 128 * 1024;

/// The streaming state for one output stream.
pub struct RedactStream<'r> {
    r: &'r Redactor,
    /// `[context byte]` + pending raw bytes.
    buf: Vec<u8>,
    /// 1 when `buf[0]` is context (already emitted), else 0.
    ctx: usize,
    /// The matcher's view when `buf` holds bytes that do not print, and the rendered view
    /// when it holds overwrites.
    view: View,
    rendered: Rendered,
    hits: Vec<Hit>,
    extra: Vec<Hit>,
    merged: Vec<Hit>,
    spans: Vec<(usize, usize)>,
    scratch: Scratch,
    caches: Vec<Option<RuleCache>>,
    /// Ranges (raw, relative to the pending start) of matches whose beginning was already
    /// emitted: replaced without being found again.
    carry: Vec<(usize, usize, u32)>,
    carry_next: Vec<(usize, usize, u32)>,
    /// Rules' matches still open past their bound: the rule's state, the raw offset (relative
    /// to the pending start) it was fed up to, the name.
    pub(crate) open: Vec<(Open, usize, u32)>,
    counts: BTreeMap<String, u64>,
}

impl<'r> RedactStream<'r> {
    pub(crate) fn new(r: &'r Redactor) -> Self {
        RedactStream {
            r,
            buf: Vec::new(),
            ctx: 0,
            view: View::default(),
            rendered: Rendered::default(),
            hits: Vec::new(),
            extra: Vec::new(),
            merged: Vec::new(),
            spans: Vec::new(),
            scratch: Scratch::default(),
            caches: r.matcher.rules.iter().map(|_| None).collect(),
            carry: Vec::new(),
            carry_next: Vec::new(),
            open: Vec::new(),
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

    /// Nothing held back and no match open or carried: a stream of another redactor can take
    /// over from here without losing a partial match or sequence.
    pub fn is_settled(&self) -> bool {
        self.held() == 0 && self.open.is_empty() && self.carry.is_empty()
    }

    fn process(&mut self, out: &mut Vec<u8>, eof: bool) {
        let from = self.ctx;
        if self.buf.len() <= from {
            return;
        }
        let stripped = self.view.build(&self.buf, from, eof);
        let raw_limit = stripped.unwrap_or(self.buf.len());
        let render =
            (stripped.is_some() && self.view.overwrites) || screen::bare_cr(&self.buf, from);
        if render {
            self.rendered.build(&self.buf, from, eof);
        }
        let Self {
            r,
            buf,
            view,
            rendered,
            hits,
            extra,
            merged,
            spans,
            scratch,
            caches,
            ..
        } = self;
        let hay: &[u8] = if stripped.is_some() { &view.bytes } else { buf };
        let len = hay.len();
        // Window index -> raw offset (start of the byte), exclusive end of a range, and back.
        let to_raw = |i: usize| -> usize {
            match stripped {
                None => i,
                Some(_) => view.to_raw(i, raw_limit),
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
                    sticky: true,
                });
            }
        }
        // Matches still open from earlier windows: covered from here to where they end.
        let rules = &r.matcher.rules;
        self.open.retain_mut(|(open, at, name)| {
            let v_at = to_view(from + *at).max(from);
            let ended = open.advance(rules, hay, v_at, eof);
            let end = ended.unwrap_or(len);
            if end > from {
                hits.push(Hit {
                    origin: from,
                    start: from,
                    end,
                    name: *name,
                    known: false,
                    sticky: true,
                });
            }
            ended.is_none()
        });

        scratch.overflows.clear();
        let scan = r.matcher.scan(caches, scratch, hay, from, eof, hits);
        let overflows = scratch.overflows.len();
        let mut boundary = if eof { len } else { scan.live };

        // The rendered view (overwrites applied): its matches and live start, in this view.
        if render {
            let rlen = rendered.bytes.len();
            extra.clear();
            let rscan = r
                .matcher
                .scan(caches, scratch, &rendered.bytes, from, eof, extra);
            // A rendered range's cells may come from anywhere in the window, in any order:
            // replace the smallest raw range holding all of them. What is held is held from
            // the start of its line, so that the next window draws the line from its first
            // column again.
            let line_start = |raw: usize| {
                let raw = raw.clamp(from, buf.len());
                memchr::memrchr3(b'\n', 0x0b, 0x0c, &buf[from..raw]).map_or(from, |p| from + p + 1)
            };
            for h in extra.iter() {
                let (lo, hi) = rendered.raw_span(h.start, h.end, raw_limit);
                let (o, _) = rendered.raw_span(h.origin, h.end, raw_limit);
                let (s, e) = (to_view(lo), to_view(hi));
                hits.push(Hit {
                    origin: to_view(line_start(o)).min(s),
                    start: s,
                    end: e.max(s),
                    ..*h
                });
            }
            if !eof && rscan.live < rlen {
                let (lo, _) = rendered.raw_span(rscan.live, rlen, raw_limit);
                boundary = boundary.min(to_view(line_start(lo)));
            }
            // A match that outgrew its bound in the rendered view is kept open too: from the
            // start of its line in the main view, where the rule's own run ends at once, so
            // the stream covers to the end of that line (fail closed), however many writes it
            // takes.
            for i in overflows..scratch.overflows.len() {
                let (rule, c) = scratch.overflows[i];
                let (lo, _) = rendered.raw_span(c, c + 1, raw_limit);
                scratch.overflows[i] = (rule, to_view(line_start(lo)));
            }
        }

        // A match that begins before the boundary and ends after it is held whole, from where
        // it begins (else it could not be found again), unless that would hold too much: then
        // its head is emitted replaced and the rest is carried over as covered.
        spans.clear();
        spans.extend(hits.iter().filter(|h| !h.sticky).map(|h| (h.origin, h.end)));
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
        // Rules whose match outgrew its bound and whose head goes out now: keep covering. One
        // open match per rule: a second one starting inside the first ends where it does (the
        // built-in rules end at a terminator), and the count stays bounded whatever the child
        // prints (`cookie: cookie: ...`).
        if !eof {
            for &(rule, c) in scratch.overflows.iter() {
                let name = rules[rule as usize].name;
                if c < boundary && !self.open.iter().any(|o| o.2 == name) {
                    let open = Open::new(rules, rule, hay, c);
                    self.open.push((open, 0, name));
                }
            }
        }
        for o in self.open.iter_mut() {
            o.1 = raw_limit - raw_boundary;
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

        // What goes out: the raw ranges to replace, in order.
        let mut ranges: Vec<(usize, usize, u32)> = merged
            .iter()
            .filter(|m| m.start < boundary)
            .map(|m| (to_raw(m.start), to_raw_end(m.end).min(raw_boundary), m.name))
            .collect();
        let drops: &[(usize, usize)] = if stripped.is_some() { &view.drops } else { &[] };
        let emit = Emit {
            buf,
            from,
            to: raw_boundary,
            drops,
            replacements: &r.replacements,
            keep_sgr: stripped.is_some(),
        };
        // A window that moves the cursor left is drawn once more as the terminal will receive
        // it, replacements in: a replacement is not as wide as what it replaces, so the
        // moves after it land elsewhere than in the raw view, and pieces may meet there.
        if render {
            let screen_hits = &mut *extra;
            settle(
                &emit,
                &mut ranges,
                rendered,
                r,
                caches,
                scratch,
                screen_hits,
            );
        }
        for &(_, _, name) in &ranges {
            *self
                .counts
                .entry(r.names[name as usize].clone())
                .or_insert(0) += 1;
        }
        emit.write(&ranges, out, None);

        // Carry-over state.
        std::mem::swap(&mut self.carry, &mut self.carry_next);
        if eof {
            self.open.clear();
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

/// Rounds of [`settle`] before it replaces the whole window (fail closed).
const SETTLE_ROUNDS: usize = 4;

/// What one window emits: `buf[from..to]`, the raw ranges given to [`Emit::write`] replaced,
/// the dropped sequences left out.
struct Emit<'a> {
    buf: &'a [u8],
    from: usize,
    to: usize,
    drops: &'a [(usize, usize)],
    replacements: &'a [Vec<u8>],
    /// Re-emit the colour codes inside a replaced range, so the terminal ends in its state.
    keep_sgr: bool,
}

impl Emit<'_> {
    /// Write the window to `out`; with `map`, also each written byte's raw range (a copied
    /// byte its own, a replacement's bytes the range it replaces).
    fn write(
        &self,
        ranges: &[(usize, usize, u32)],
        out: &mut Vec<u8>,
        mut map: Option<&mut Vec<(usize, usize)>>,
    ) {
        let mut pos = self.from;
        for &(rs, re, name) in ranges {
            self.copy(pos, rs, out, map.as_deref_mut());
            let at = out.len();
            out.extend_from_slice(&self.replacements[name as usize]);
            if self.keep_sgr {
                screen::keep_sgr(&self.buf[rs..re], out);
            }
            if let Some(m) = map.as_deref_mut() {
                m.extend(std::iter::repeat_n((rs, re), out.len() - at));
            }
            pos = re;
        }
        self.copy(pos, self.to, out, map);
    }

    /// Copy `buf[a..b]` to `out`, leaving out the dropped ranges inside it.
    fn copy(
        &self,
        a: usize,
        b: usize,
        out: &mut Vec<u8>,
        mut map: Option<&mut Vec<(usize, usize)>>,
    ) {
        let mut pos = a;
        let mut piece = |s: usize, e: usize, out: &mut Vec<u8>| {
            out.extend_from_slice(&self.buf[s..e]);
            if let Some(m) = map.as_deref_mut() {
                m.extend((s..e).map(|i| (i, i + 1)));
            }
        };
        for &(s, e) in self.drops {
            if e <= pos || s >= b {
                continue;
            }
            piece(pos, s.max(pos), out);
            pos = e.min(b);
        }
        if pos < b {
            piece(pos, b, out);
        }
    }
}

/// Draw what the window emits as the terminal receives it and search that too, until it shows
/// nothing more to replace: each round adds the raw ranges of what it finds (a match's
/// smallest raw range holding all its cells) to `ranges`. After [`SETTLE_ROUNDS`] rounds that
/// still find something, the whole window is replaced.
fn settle(
    emit: &Emit<'_>,
    ranges: &mut Vec<(usize, usize, u32)>,
    screen_view: &mut Rendered,
    r: &Redactor,
    caches: &mut [Option<RuleCache>],
    scratch: &mut Scratch,
    found: &mut Vec<Hit>,
) {
    let mut sent = Vec::new();
    let mut map = Vec::new();
    for _ in 0..SETTLE_ROUNDS {
        sent.clear();
        map.clear();
        emit.write(ranges, &mut sent, Some(&mut map));
        if sent.is_empty() {
            return;
        }
        screen_view.build(&sent, 0, true);
        found.clear();
        let overflows = scratch.overflows.len();
        r.matcher
            .scan(caches, scratch, &screen_view.bytes, 0, true, found);
        scratch.overflows.truncate(overflows);
        let covered = |lo: usize, hi: usize, ranges: &[(usize, usize, u32)]| {
            ranges.iter().any(|&(s, e, _)| s <= lo && hi <= e)
        };
        let mut grew = false;
        for h in found.iter() {
            let (mut lo, mut hi) = (usize::MAX, 0);
            for i in h.start..h.end {
                let (at, _) = screen_view.raw_span(i, i + 1, sent.len());
                if let Some(&(a, b)) = map.get(at) {
                    lo = lo.min(a);
                    hi = hi.max(b);
                }
            }
            if lo >= hi || covered(lo, hi, ranges) {
                continue;
            }
            ranges.push((lo, hi.min(emit.to), h.name));
            grew = true;
        }
        if !grew {
            return;
        }
        // Union, in order.
        ranges.sort_unstable();
        let mut merged: Vec<(usize, usize, u32)> = Vec::with_capacity(ranges.len());
        for &(s, e, n) in ranges.iter() {
            match merged.last_mut() {
                Some(m) if s < m.1 => m.1 = m.1.max(e),
                _ => merged.push((s, e, n)),
            }
        }
        *ranges = merged;
    }
    let name = ranges.first().map_or(0, |r| r.2);
    *ranges = vec![(emit.from, emit.to, name)];
}
