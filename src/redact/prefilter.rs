//! Cheap tests that let the exact automata skip almost all of a window.
//!
//! Most output contains no secret and no rule anchor, yet walking a window byte by byte
//! through the literal automaton (a few MiB once fragments and encodings of ten secrets are in
//! it, so every step is a cache miss) cost half the redactor's time. Two filters now decide
//! where the automata run; neither can miss a match, which the property tests check against
//! a full scan:
//!
//! - [`GramFilter`], for known values: every value form is at least `min_len` bytes, so an
//!   occurrence covers `min_len - q + 1` consecutive `q`-byte pieces (q-grams), and one of them
//!   starts at a multiple of that stride. Sampling one q-gram per stride against a small
//!   bitmap (then the exact set) of the forms' q-grams finds every occurrence; the value
//!   automaton then runs only around a hit. Random secrets share 6-byte pieces with ordinary
//!   logs almost never, so that is nearly no work.
//! - [`Triggers`], for rule anchors: the anchors are case-insensitive, so the window is folded
//!   to lower case (a vectorised copy) and searched for a few dozen trigger literals, no one
//!   inside another, such that every anchor contains one (SIMD Teddy when the CPU has it). A
//!   trigger hit is checked against the anchors that contain it.

use aho_corasick::packed;
use aho_corasick::{AhoCorasick, Input as AcInput, MatchKind};

use super::RedactError;

/// Longest q-gram sampled. Shorter pieces allow a longer stride (12-byte fragments: 7 with
/// 6-byte pieces, 5 with 8-byte ones) but shorter than 6 they start to occur in ordinary
/// text (`test`, hex runs); 6 measured fastest on the log corpus.
const MAX_Q: usize = 6;
/// Bytes read per sample (one unaligned load, masked to the q-gram).
const LOAD: usize = 8;
/// Bitmap words per distinct q-gram (rounded up to a power of two): about 32 bits per q-gram
/// with two bits set each keeps false hits near 1/200.
const WORDS_PER_GRAM_DIV: usize = 2;
/// Cap on the bitmap (1 MiB): past it, false hits grow but stay correct.
const MAX_WORDS: usize = 1 << 17;

fn hash(g: u64) -> u64 {
    let m = g.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    m ^ (m >> 32)
}

/// A sampled q-gram test over a set of byte strings, each at least `min_len` long.
pub(crate) struct GramFilter {
    q: usize,
    stride: usize,
    mask: u64,
    word_mask: usize,
    bits: Vec<u64>,
    /// Sorted distinct q-grams, for the exact check after a bitmap hit.
    grams: Vec<u64>,
}

impl Drop for GramFilter {
    fn drop(&mut self) {
        // The q-grams are pieces of secret values.
        self.grams.fill(0);
    }
}

impl GramFilter {
    /// `None` when a pattern is shorter than 4 bytes (then no stride saves anything).
    pub(crate) fn new(patterns: &[Vec<u8>]) -> Option<GramFilter> {
        let min_len = patterns.iter().map(Vec::len).min()?;
        if min_len < 4 {
            return None;
        }
        let q = min_len.min(MAX_Q);
        let stride = min_len - q + 1;
        let mask = (1u64 << (8 * q)) - 1;
        let mut grams: Vec<u64> = patterns
            .iter()
            .flat_map(|p| p.windows(q).map(gram_of))
            .collect();
        grams.sort_unstable();
        grams.dedup();
        let words = (grams.len() / WORDS_PER_GRAM_DIV)
            .next_power_of_two()
            .clamp(64, MAX_WORDS);
        let mut f = GramFilter {
            q,
            stride,
            mask,
            word_mask: words - 1,
            bits: vec![0; words],
            grams,
        };
        for i in 0..f.grams.len() {
            let (w, b) = f.slot(f.grams[i]);
            f.bits[w] |= b;
        }
        Some(f)
    }

    fn slot(&self, g: u64) -> (usize, u64) {
        let h = hash(g);
        let w = (h as usize) & self.word_mask;
        let b = (1u64 << ((h >> 40) & 63)) | (1u64 << ((h >> 52) & 63));
        (w, b)
    }

    fn contains(&self, g: u64) -> bool {
        let (w, b) = self.slot(g);
        self.bits[w] & b == b && self.grams.binary_search(&g).is_ok()
    }

    pub(crate) fn q(&self) -> usize {
        self.q
    }

    /// Call `f(p)` for every sampled position `p` in `hay[from..]` whose q-gram is a piece of
    /// some pattern. Every occurrence of a pattern inside `hay[from..]` contains such a `p`.
    pub(crate) fn for_each_hit(&self, hay: &[u8], from: usize, mut f: impl FnMut(usize)) {
        let q = self.q;
        let mut p = from;
        while p + LOAD <= hay.len() {
            let mut w = [0u8; LOAD];
            w.copy_from_slice(&hay[p..p + LOAD]);
            if self.contains(u64::from_le_bytes(w) & self.mask) {
                f(p);
            }
            p += self.stride;
        }
        while p + q <= hay.len() {
            if self.contains(gram_of(&hay[p..p + q])) {
                f(p);
            }
            p += self.stride;
        }
    }

    pub(crate) fn memory_usage(&self) -> usize {
        (self.bits.len() + self.grams.len()) * 8
    }
}

/// Little-endian, zero-extended value of up to 8 bytes.
fn gram_of(piece: &[u8]) -> u64 {
    let mut w = [0u8; LOAD];
    w[..piece.len()].copy_from_slice(piece);
    u64::from_le_bytes(w)
}

/// ASCII lower case of every byte (the fold the anchors are matched under), vectorised.
pub(crate) fn fold_into(hay: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend(
        hay.iter()
            .map(|&b| b | (u8::from(b.wrapping_sub(b'A') < 26) << 5)),
    );
}

/// An anchor containing a trigger, with what rejects most wrong candidates inline (no
/// pointer to chase): its first and last byte.
struct Use {
    anchor: u32,
    /// Where the trigger sits in the anchor.
    offset: u32,
    len: u32,
    first: u8,
    last: u8,
}

enum Finder {
    Teddy(packed::Searcher),
    Ac(AhoCorasick),
}

/// Triggers shorter than this get their own `memmem` search when there are few of them:
/// Teddy fingerprints the first `min(3, shortest)` bytes of every trigger, so one two-byte
/// trigger would blunt it for all.
const SHORT_TRIGGER: usize = 3;
const MAX_SHORT_TRIGGERS: usize = 3;

/// Trigger literals for a set of lower-case anchors, and which anchors each one can start.
pub(crate) struct Triggers {
    /// The triggers of [`SHORT_TRIGGER`] bytes or more (all, when there are many short ones),
    /// with their trigger ids.
    main: Option<(Finder, Vec<u32>)>,
    short: Vec<(memchr::memmem::Finder<'static>, u32)>,
    /// Per trigger: the anchors that contain it.
    uses: Vec<Vec<Use>>,
    anchors: Vec<Vec<u8>>,
}

impl Triggers {
    /// `anchors` must be lower case, non-empty and distinct.
    pub(crate) fn new(anchors: Vec<Vec<u8>>) -> Result<Triggers, RedactError> {
        let triggers = choose_triggers(&anchors);
        let uses = triggers
            .iter()
            .map(|t| {
                let mut u = Vec::new();
                for (i, a) in anchors.iter().enumerate() {
                    for o in 0..=a.len().saturating_sub(t.len()) {
                        if a[o..].starts_with(t) {
                            u.push(Use {
                                anchor: i as u32,
                                offset: o as u32,
                                len: a.len() as u32,
                                first: a[0],
                                last: a[a.len() - 1],
                            });
                        }
                    }
                }
                u
            })
            .collect();
        let n_short = triggers.iter().filter(|t| t.len() < SHORT_TRIGGER).count();
        let split = n_short <= MAX_SHORT_TRIGGERS;
        let (mut long, mut long_ids, mut short) = (Vec::new(), Vec::new(), Vec::new());
        for (i, t) in triggers.iter().enumerate() {
            if split && t.len() < SHORT_TRIGGER {
                short.push((memchr::memmem::Finder::new(t).into_owned(), i as u32));
            } else {
                long.push(t.as_slice());
                long_ids.push(i as u32);
            }
        }
        let main = if long.is_empty() {
            None
        } else {
            let teddy = packed::Config::new()
                .match_kind(packed::MatchKind::LeftmostFirst)
                .builder()
                .extend(&long)
                .build();
            let finder = match teddy {
                Some(t) => Finder::Teddy(t),
                None => Finder::Ac(
                    AhoCorasick::builder()
                        .match_kind(MatchKind::LeftmostFirst)
                        .build(&long)
                        .map_err(|e| RedactError::Build {
                            what: "rule anchor finder".to_owned(),
                            message: e.to_string(),
                        })?,
                ),
            };
            Some((finder, long_ids))
        };
        Ok(Triggers {
            main,
            short,
            uses,
            anchors,
        })
    }

    /// Call `f(anchor, start)` for every anchor occurring in `folded[from..]` (the window
    /// folded by [`fold_into`]), in no particular order; an anchor holding two triggers is
    /// reported twice.
    ///
    /// Each search restarts one byte after its last hit. That finds every occurrence because
    /// no trigger contains another, so no two start at the same position.
    pub(crate) fn for_each(&self, folded: &[u8], from: usize, mut f: impl FnMut(usize, usize)) {
        let len = folded.len();
        if let Some((finder, ids)) = &self.main {
            let mut at = from;
            while at < len {
                let found = match finder {
                    Finder::Teddy(t) => t
                        .find_in(folded, aho_corasick::Span::from(at..len))
                        .map(|m| (m.pattern().as_usize(), m.start())),
                    Finder::Ac(a) => a
                        .find(AcInput::new(folded).span(at..len))
                        .map(|m| (m.pattern().as_usize(), m.start())),
                };
                let Some((t, p)) = found else { break };
                self.verify(folded, from, ids[t] as usize, p, &mut f);
                at = p + 1;
            }
        }
        for (finder, t) in &self.short {
            let mut at = from;
            while let Some(p) = finder.find(&folded[at..]) {
                self.verify(folded, from, *t as usize, at + p, &mut f);
                at += p + 1;
            }
        }
    }

    /// Trigger `t` occurs at `p`: report the anchors around it that contain it there.
    fn verify(
        &self,
        folded: &[u8],
        from: usize,
        t: usize,
        p: usize,
        f: &mut impl FnMut(usize, usize),
    ) {
        for u in &self.uses[t] {
            let Some(start) = p.checked_sub(u.offset as usize) else {
                continue;
            };
            // First and last byte before the full comparison: most anchors sharing a trigger
            // differ there (`?token=`, `"token"`, `x-auth-token`).
            if start >= from
                && folded.get(start + u.len as usize - 1) == Some(&u.last)
                && folded[start] == u.first
                && folded[start..].starts_with(&self.anchors[u.anchor as usize])
            {
                f(u.anchor as usize, start);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.uses.len()
    }

    #[cfg(test)]
    pub(crate) fn anchors(&self) -> &[Vec<u8>] {
        &self.anchors
    }

    pub(crate) fn memory_usage(&self) -> usize {
        self.main.as_ref().map_or(0, |(f, _)| match f {
            Finder::Teddy(t) => t.memory_usage(),
            Finder::Ac(a) => a.memory_usage(),
        })
    }
}

/// Shortest trigger worth choosing over the whole anchor: shorter pieces are common in text.
const MIN_TRIGGER: usize = 4;

/// A small set of substrings such that every anchor contains one (greedy set cover: the
/// piece of at least [`MIN_TRIGGER`] bytes, or a whole shorter anchor, found in the most
/// anchors not yet covered), then without any piece that contains another (it is redundant,
/// and without it at most one trigger starts at any position, so a leftmost search that
/// restarts one byte after each hit finds every occurrence). Teddy takes up to 64.
///
/// The greedy choice is made lazily: every piece sits in a heap under the number of open
/// anchors it had when last counted, which only falls as anchors are covered, so a piece whose
/// recount still tops the heap is the best one. This runs at every start (the redactor is
/// built per run); recounting every piece in every round took milliseconds.
fn choose_triggers(anchors: &[Vec<u8>]) -> Vec<Vec<u8>> {
    use std::collections::{BinaryHeap, HashMap};
    // Every piece, with the anchors that hold it (each once, in order).
    let mut holders: HashMap<&[u8], Vec<u32>> = HashMap::new();
    for (i, a) in anchors.iter().enumerate() {
        let m = a.len().min(MIN_TRIGGER);
        for s in 0..a.len() {
            for e in s + m..=a.len() {
                let h = holders.entry(&a[s..e]).or_default();
                if h.last() != Some(&(i as u32)) {
                    h.push(i as u32);
                }
            }
        }
    }
    let mut heap: BinaryHeap<Candidate> = holders
        .iter()
        .map(|(piece, h)| Candidate {
            count: h.len(),
            piece,
        })
        .collect();
    let mut open = vec![true; anchors.len()];
    let mut left = anchors.len();
    let mut chosen: Vec<Vec<u8>> = Vec::new();
    while left > 0 {
        let Some(top) = heap.pop() else { break };
        let count = holders[top.piece]
            .iter()
            .filter(|&&i| open[i as usize])
            .count();
        if count == 0 {
            continue;
        }
        if count < top.count {
            heap.push(Candidate {
                count,
                piece: top.piece,
            });
            continue;
        }
        // Cover every anchor containing it (a short whole anchor can sit inside a longer
        // one without being one of its pieces).
        for (i, a) in anchors.iter().enumerate() {
            if open[i] && contains(a, top.piece) {
                open[i] = false;
                left -= 1;
            }
        }
        chosen.push(top.piece.to_vec());
    }
    without_redundant(chosen)
}

/// `chosen` without any trigger that contains a shorter one (it is redundant).
fn without_redundant(chosen: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let keep: Vec<bool> = chosen
        .iter()
        .map(|t| !chosen.iter().any(|u| u.len() < t.len() && contains(t, u)))
        .collect();
    chosen
        .into_iter()
        .zip(keep)
        .filter_map(|(t, k)| k.then_some(t))
        .collect()
}

/// A piece in [`choose_triggers`]'s heap, ordered as the greedy choice prefers: most anchors
/// covered, then the longest (rarer in text), then the smallest bytes (only for a result that
/// does not depend on hash order).
#[derive(PartialEq, Eq)]
struct Candidate<'a> {
    count: usize,
    piece: &'a [u8],
}

impl Ord for Candidate<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.count, self.piece.len())
            .cmp(&(other.count, other.piece.len()))
            .then_with(|| other.piece.cmp(self.piece))
    }
}

impl PartialOrd for Candidate<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The greedy cover as first written: every piece recounted in every round. The lazy
    /// version must choose exactly the same triggers.
    fn choose_triggers_reference(anchors: &[Vec<u8>]) -> Vec<Vec<u8>> {
        use std::collections::{BTreeSet, HashMap};
        let mut open: Vec<&[u8]> = anchors.iter().map(Vec::as_slice).collect();
        let mut chosen: Vec<Vec<u8>> = Vec::new();
        while !open.is_empty() {
            let mut count: HashMap<&[u8], usize> = HashMap::new();
            for a in &open {
                let m = a.len().min(MIN_TRIGGER);
                let pieces: BTreeSet<&[u8]> = (0..a.len())
                    .flat_map(|i| (i + m..=a.len()).map(move |j| &a[i..j]))
                    .collect();
                for p in pieces {
                    *count.entry(p).or_insert(0) += 1;
                }
            }
            // Most anchors covered, then the longest (rarer in text), then the smallest bytes
            // (only for a result that does not depend on hash order).
            let Some(best) = count
                .into_iter()
                .max_by(|x, y| {
                    (x.1, x.0.len())
                        .cmp(&(y.1, y.0.len()))
                        .then_with(|| y.0.cmp(x.0))
                })
                .map(|(p, _)| p.to_vec())
            else {
                break;
            };
            open.retain(|a| !contains(a, &best));
            chosen.push(best);
        }
        without_redundant(chosen)
    }

    fn built_in_anchors() -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = Vec::new();
        for r in super::super::rules::RULES {
            for pre in r.anchor_prefixes {
                for a in r.anchors {
                    let l = format!("{pre}{a}").to_ascii_lowercase().into_bytes();
                    if !v.contains(&l) {
                        v.push(l);
                    }
                }
            }
        }
        v
    }

    #[test]
    fn lazy_greedy_chooses_what_the_full_recount_chooses_for_the_built_in_rules() {
        let anchors = built_in_anchors();
        assert!(anchors.len() > 100, "{}", anchors.len());
        let t = choose_triggers(&anchors);
        assert_eq!(t, choose_triggers_reference(&anchors));
        assert!(anchors.iter().all(|a| t.iter().any(|t| contains(a, t))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn lazy_greedy_matches_the_full_recount(
            set in proptest::collection::btree_set("[a-e_=]{1,9}", 1..40)
        ) {
            let anchors: Vec<Vec<u8>> = set.into_iter().map(String::into_bytes).collect();
            prop_assert_eq!(choose_triggers(&anchors), choose_triggers_reference(&anchors));
        }
    }
}
