//! What is a match, and where could one still begin: the pure matching layer under the stream.
//!
//! [`Matcher::scan`] looks at one window of output and reports every match in it (as ranges to
//! replace) and the earliest position where a match could still be completed by bytes not seen
//! yet (the live start). The streaming layer emits everything before the live start and holds
//! the rest; the whole-buffer path calls the same function once with `eof = true`. Keeping one
//! definition of "match" for both is what lets the property tests compare them byte for byte.
//!
//! - Known values (every secret, its encodings, fragments and tiles) are searched in the window
//!   with its line breaks taken out ([`Joined`]), so a wrapped encoding is one match. They go
//!   into one
//!   case-sensitive Aho-Corasick automaton searched with overlapping semantics, so nested and
//!   overlapping values are all found (a secret that is a prefix of another included). A
//!   sampled q-gram filter ([`prefilter::GramFilter`]) says where it needs to run: only around
//!   the filter's hits, which ordinary output almost never has. The live start is the longest
//!   suffix of the window that is a proper prefix of some pattern, read from the automaton
//!   state via a per-state table built once.
//! - Rules start at literal anchors (case-insensitive), found through a few trigger literals
//!   searched in a lower-cased copy of the window ([`prefilter::Triggers`]). Each anchor hit
//!   is a candidate; a lazy DFA run anchored there says whether the rule is dead (the match,
//!   if any, is final), or still alive at the window end (hold from the candidate: never emit
//!   a match half done, and never trust `$` or `\b` at a window end). Captures, for the
//!   `secret` group, are computed by a PikeVM only over a span the DFA already proved to be a
//!   match. A second automaton of the anchors gives their live partial match at the end.
//!
//! Regexes are compiled with Unicode off (ASCII classes, byte-oriented `.`): an order of
//! magnitude faster and it lets binary output through untouched.

use std::collections::HashMap;
use std::sync::OnceLock;

use aho_corasick::automaton::{Automaton, OverlappingState, StateID};
use aho_corasick::{Anchored as AcAnchored, Input as AcInput, MatchKind};
use regex_automata::hybrid::dfa::{Cache as DfaCache, DFA};
use regex_automata::nfa::thompson::pikevm::{Cache as VmCache, PikeVM};
use regex_automata::nfa::thompson::{self, NFA};
use regex_automata::util::captures::Captures;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input};

use super::RedactError;
use super::prefilter::{self, GramFilter, Triggers};

/// Lazy DFA cache per rule and stream.
const DFA_CACHE_BYTES: usize = 256 * 1024;

/// How many of a rule's runs in a window a later candidate may join (see [`Trail`]): enough
/// for the phases of a periodic rule (base64 quads, hex pairs), whose consecutive candidates
/// are at different phases and join only the run a period back.
const JOIN_RUNS: usize = 8;

/// A candidate's run looks for a recorded run to join every this many bytes.
const JOIN_STRIDE: usize = 4;

/// The work a rule may do in one scan, in DFA steps (a PikeVM byte counts as one): this many
/// per window byte, plus [`BUDGET_FLOOR`]. Past it, the rule's remaining candidates in the
/// window are taken as matches to the end of their line (over-redaction under attack, never a
/// leak, and linear time whatever the rule). Ordinary output, with trails joined, stays far
/// below it.
const BUDGET_PER_BYTE: usize = 64;
const BUDGET_FLOOR: usize = 64 * 1024;

/// The DFA steps a rule may take in one scan of a window of `len` bytes.
fn scan_budget(len: usize) -> usize {
    len.saturating_mul(BUDGET_PER_BYTE)
        .saturating_add(BUDGET_FLOOR)
}

/// A set of literal byte strings searched with overlapping semantics, plus for every automaton
/// state the length of the longest suffix read so far that could still grow into a match.
///
/// A contiguous NFA, not a DFA: it is searched only around the q-gram filter's hits (values)
/// or over a window's last bytes (anchors), where its speed hardly shows, and it builds in a
/// fraction of the time. The redactor is built at every start, so that time is paid per run.
pub(crate) struct Literals {
    ac: aho_corasick::nfa::contiguous::NFA,
    /// Per trie state: depth, failure state, and whether some pattern continues past it.
    info: HashMap<StateID, (u32, StateID, bool)>,
    max_len: usize,
}

impl Literals {
    pub(crate) fn new(patterns: &[Vec<u8>], case_insensitive: bool) -> Result<Self, RedactError> {
        let build_err = |e: aho_corasick::BuildError| RedactError::Build {
            what: "literal matcher".to_owned(),
            message: e.to_string(),
        };
        let ac = aho_corasick::nfa::contiguous::NFA::builder()
            .match_kind(MatchKind::Standard)
            .ascii_case_insensitive(case_insensitive)
            .prefilter(true)
            .build(patterns)
            .map_err(build_err)?;
        let mut lit = Literals {
            ac,
            info: HashMap::new(),
            max_len: patterns.iter().map(Vec::len).max().unwrap_or(0),
        };
        lit.info = lit.state_info(patterns)?;
        Ok(lit)
    }

    fn automaton(&self) -> &dyn Automaton {
        &self.ac
    }

    fn start(&self) -> Result<StateID, RedactError> {
        self.automaton()
            .start_state(AcAnchored::No)
            .map_err(|e| RedactError::Build {
                what: "literal matcher".to_owned(),
                message: e.to_string(),
            })
    }

    /// For each trie state: depth (bytes of pattern prefix it stands for), failure state, and
    /// whether some pattern continues past it. The hold length of a state is its depth if a
    /// pattern continues, else that of the first such state along its failure links.
    fn state_info(
        &self,
        patterns: &[Vec<u8>],
    ) -> Result<HashMap<StateID, (u32, StateID, bool)>, RedactError> {
        let a = self.automaton();
        let start = self.start()?;
        let mut info: HashMap<StateID, (u32, StateID, bool)> = HashMap::new();
        for p in patterns {
            let (mut s, mut f) = (start, start);
            for (i, &b) in p.iter().enumerate() {
                let ns = a.next_state(AcAnchored::No, s, b);
                let nf = if i == 0 {
                    start
                } else {
                    a.next_state(AcAnchored::No, f, b)
                };
                let e = info.entry(ns).or_insert((i as u32 + 1, nf, false));
                if i + 1 < p.len() {
                    e.2 = true;
                }
                s = ns;
                f = nf;
            }
        }
        info.shrink_to_fit();
        Ok(info)
    }

    /// Call `f(pattern, start, end)` for every (overlapping) match inside `hay[from..to]`.
    pub(crate) fn for_each(
        &self,
        hay: &[u8],
        from: usize,
        to: usize,
        f: impl FnMut(usize, usize, usize),
    ) {
        // The concrete type keeps the search loop monomorphic (a `dyn` automaton costs a
        // virtual call per byte).
        overlapping(&self.ac, hay, from, to, f)
    }

    /// Length of the longest suffix of `hay[from..]` that is a proper prefix of some pattern
    /// (one that more bytes could complete).
    pub(crate) fn hold(&self, hay: &[u8], from: usize) -> usize {
        self.hold_if(hay, from, |_| true)
    }

    /// Like [`Literals::hold`], for the longest such suffix that `accept(length)` admits.
    pub(crate) fn hold_if(&self, hay: &[u8], from: usize, accept: impl Fn(usize) -> bool) -> usize {
        if self.max_len < 2 {
            return 0;
        }
        let a = self.automaton();
        let Ok(mut s) = a.start_state(AcAnchored::No) else {
            return hay.len() - from;
        };
        let begin = from.max(hay.len().saturating_sub(self.max_len - 1));
        for &b in &hay[begin..] {
            s = a.next_state(AcAnchored::No, s, b);
        }
        // Depth strictly decreases along failure links, so this ends.
        let mut cur = s;
        while let Some(&(d, fail, extendable)) = self.info.get(&cur) {
            if extendable && accept(d as usize) {
                return d as usize;
            }
            if fail == cur {
                break;
            }
            cur = fail;
        }
        0
    }

    pub(crate) fn memory_usage(&self) -> usize {
        self.automaton().memory_usage() + self.info.len() * 24
    }
}

fn overlapping<A: Automaton>(
    a: &A,
    hay: &[u8],
    from: usize,
    to: usize,
    mut f: impl FnMut(usize, usize, usize),
) {
    let input = AcInput::new(hay).span(from..to);
    let mut state = OverlappingState::start();
    while a.try_find_overlapping(&input, &mut state).is_ok() {
        let Some(m) = state.get_match() else { break };
        f(m.pattern().as_usize(), m.start(), m.end());
    }
}

/// One rule (built-in or a profile pattern). A built-in rule is compiled the first time one
/// of its anchors shows up in the output: most runs never need most rules, and compiling all
/// of them took over a millisecond of every start. (Every built-in rule compiles: a test
/// compiles them all.) A profile's patterns are compiled at once, so a bad one is refused
/// before the child starts.
pub(crate) struct Rule {
    pub name: u32,
    pattern: &'static str,
    secret_group: fn(&str) -> bool,
    compiled: OnceLock<Result<Compiled, String>>,
    check: Option<fn(&[u8]) -> bool>,
    pub max_len: usize,
}

/// A rule's automata.
struct Compiled {
    dfa: DFA,
    vm: PikeVM,
    /// Capture group indices whose union is replaced; empty: the whole match.
    secret_groups: Vec<usize>,
}

/// Per-stream mutable state for one rule.
pub(crate) struct RuleCache {
    dfa: DfaCache,
    vm: VmCache,
    caps: Captures,
    trail: Trail,
    /// The states of the run in progress (becomes one of the trail's runs).
    run: Vec<regex_automata::hybrid::LazyStateID>,
    /// Work done in the current scan (see [`scan_budget`]).
    steps: usize,
}

/// What the rule's last few full runs in the current window saw, so that its later candidates
/// cost only the bytes until their run joins one of them (linear time on repeated anchors,
/// such as `Authorization: ` ten thousand times on one line, and on periodic rules, whose
/// consecutive candidates are at different phases: each joins the run a period back).
///
/// The lazy DFA is deterministic: two runs in the same state after the same byte behave
/// alike from there on, so a later candidate whose run reaches a recorded state at the
/// same position ends where the recorded run ended. State ids are compared only while the
/// cache has not been cleared since the recording (a clear reuses ids).
#[derive(Default)]
struct Trail {
    /// Up to [`JOIN_RUNS`] recorded runs, replaced oldest first.
    runs: Vec<Run>,
    /// The slot the next recorded run goes to.
    next: usize,
    /// The range the rule's last hit in this window replaced: a later candidate whose whole
    /// match lies inside it adds nothing, so its captures are not computed.
    covered: Option<(usize, usize)>,
}

/// One recorded run of a [`Trail`].
#[derive(Default)]
struct Run {
    /// Recorded in the current window, with no cache clear during the recording.
    valid: bool,
    /// Window position of the first recorded state.
    start: usize,
    /// DFA state after each byte from `start`.
    states: Vec<regex_automata::hybrid::LazyStateID>,
    /// The cache's clear count while recording.
    clears: usize,
    /// How the run ended: still live at the window end, or dead with its last match end.
    live: bool,
    last: Option<usize>,
}

#[cfg(test)]
thread_local! {
    /// Tests compare the redactor with trails against the same one without them: 0 all on,
    /// 1 joins without skipping covered matches, 2 neither.
    pub(crate) static TRAILS: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

impl Trail {
    fn reset(&mut self) {
        for run in &mut self.runs {
            run.valid = false;
            run.states.clear();
        }
        self.next = 0;
        self.covered = None;
    }

    /// Forget every recorded run (the DFA gave up: nothing recorded can be trusted).
    fn invalidate(&mut self) {
        for run in &mut self.runs {
            run.valid = false;
        }
    }

    /// The recorded run whose state after `hay[i]` is `sid`, if any is still comparable.
    fn join_at(
        &self,
        i: usize,
        clears: usize,
        sid: regex_automata::hybrid::LazyStateID,
    ) -> Option<&Run> {
        #[cfg(test)]
        if TRAILS.get() == 2 {
            return None;
        }
        self.runs.iter().find(|r| {
            r.valid && r.clears == clears && i >= r.start && r.states.get(i - r.start) == Some(&sid)
        })
    }

    /// Record a run (its states are swapped in from `states`), replacing the oldest.
    fn record(
        &mut self,
        states: &mut Vec<regex_automata::hybrid::LazyStateID>,
        start: usize,
        clears: usize,
        valid: bool,
        live: bool,
        last: Option<usize>,
    ) {
        if self.next == self.runs.len() {
            self.runs.push(Run::default());
        }
        let run = &mut self.runs[self.next];
        self.next = (self.next + 1) % JOIN_RUNS;
        std::mem::swap(&mut run.states, states);
        run.start = start;
        run.clears = clears;
        run.valid = valid;
        run.live = live;
        run.last = last;
    }
}

pub(crate) enum Eval {
    /// More bytes could still change the outcome.
    Live,
    /// Final: the range to replace, if any.
    Done(Option<(usize, usize)>),
    /// The rule spent its work budget for this scan: not evaluated (the caller covers the
    /// candidate's line).
    Exhausted,
}

/// Compile `pattern` to a Thompson NFA, with Unicode off when the pattern allows it.
pub(crate) fn compile_nfa(pattern: &str) -> Result<NFA, String> {
    let build = |unicode: bool| {
        thompson::Compiler::new()
            .syntax(syntax::Config::new().unicode(unicode).utf8(false))
            .configure(thompson::Config::new().utf8(false))
            .build(pattern)
            .map_err(|e| e.to_string())
    };
    build(false).or_else(|_| build(true))
}

impl Compiled {
    fn new(pattern: &str, secret_group: fn(&str) -> bool) -> Result<Compiled, String> {
        let nfa = compile_nfa(pattern)?;
        let build_dfa = |config| {
            DFA::builder()
                .configure(config)
                .build_from_nfa(nfa.clone())
                .map_err(|e| e.to_string())
        };
        let small = DFA::config()
            .cache_capacity(DFA_CACHE_BYTES)
            .unicode_word_boundary(true);
        let dfa =
            build_dfa(small).or_else(|_| build_dfa(DFA::config().unicode_word_boundary(true)))?;
        let vm = PikeVM::builder()
            .build_from_nfa(nfa.clone())
            .map_err(|e| e.to_string())?;
        let secret_groups = nfa
            .group_info()
            .pattern_names(regex_automata::PatternID::ZERO)
            .enumerate()
            .filter_map(|(i, n)| n.filter(|n| secret_group(n)).map(|_| i))
            .collect();
        Ok(Compiled {
            dfa,
            vm,
            secret_groups,
        })
    }

    fn cache(&self) -> RuleCache {
        RuleCache {
            dfa: self.dfa.create_cache(),
            vm: self.vm.create_cache(),
            caps: self.vm.create_captures(),
            trail: Trail::default(),
            run: Vec::new(),
            steps: 0,
        }
    }
}

impl Rule {
    /// A profile pattern: compiled now.
    pub(crate) fn new(
        pattern: &str,
        name: u32,
        max_len: usize,
        secret_group: fn(&str) -> bool,
    ) -> Result<Rule, String> {
        let compiled = Compiled::new(pattern, secret_group)?;
        Ok(Rule {
            name,
            pattern: "",
            secret_group,
            compiled: OnceLock::from(Ok(compiled)),
            check: None,
            max_len,
        })
    }

    /// A built-in rule: compiled on first use.
    pub(crate) fn deferred(
        pattern: &'static str,
        name: u32,
        check: Option<fn(&[u8]) -> bool>,
        max_len: usize,
        secret_group: fn(&str) -> bool,
    ) -> Rule {
        Rule {
            name,
            pattern,
            secret_group,
            compiled: OnceLock::new(),
            check,
            max_len,
        }
    }

    fn compiled(&self) -> Result<&Compiled, &str> {
        self.compiled
            .get_or_init(|| Compiled::new(self.pattern, self.secret_group))
            .as_ref()
            .map_err(String::as_str)
    }

    /// Compiles a deferred rule now; the error says why it does not compile.
    #[cfg(test)]
    pub(crate) fn compile(&self) -> Result<(), String> {
        self.compiled().map(|_| ()).map_err(str::to_owned)
    }

    /// True when the pattern matches the empty string (useless and dangerous as a redactor).
    pub(crate) fn matches_empty(&self) -> bool {
        match self.compiled() {
            Ok(c) => c.vm.is_match(&mut c.vm.create_cache(), ""),
            Err(_) => false,
        }
    }

    /// Evaluate a candidate match starting at `c`, with this stream's cache for the rule
    /// (created on first use). A rule that fails to compile (never a built-in one: they are
    /// all compiled by a test) replaces everything from the candidate on: fail closed.
    pub(crate) fn eval(
        &self,
        cache: &mut Option<RuleCache>,
        hay: &[u8],
        c: usize,
        eof: bool,
        budget: usize,
    ) -> Eval {
        let Ok(compiled) = self.compiled() else {
            // Held until the end of output or the rule's length limit, then replaced.
            return if eof {
                Eval::Done(Some((c, hay.len())))
            } else {
                Eval::Live
            };
        };
        let cache = cache.get_or_insert_with(|| compiled.cache());
        self.eval_with(compiled, cache, hay, c, eof, budget)
    }

    fn eval_with(
        &self,
        rule: &Compiled,
        cache: &mut RuleCache,
        hay: &[u8],
        c: usize,
        eof: bool,
        budget: usize,
    ) -> Eval {
        if cache.steps >= budget {
            return Eval::Exhausted;
        }
        let input = Input::new(hay).range(c..).anchored(Anchored::Yes);
        let Ok(mut sid) = rule.dfa.start_state_forward(&mut cache.dfa, &input) else {
            return self.slow_after(rule, cache, hay, c, eof, budget);
        };
        let clears = cache.dfa.clear_count();
        let mut last = None;
        // Either this run joins a recorded one at `joined`, or it becomes a new record.
        let mut joined = None;
        cache.run.clear();
        for (i, &b) in hay.iter().enumerate().skip(c) {
            cache.steps += 1;
            if cache.steps > budget {
                return Eval::Exhausted;
            }
            sid = match rule.dfa.next_state(&mut cache.dfa, sid, b) {
                Ok(s) => s,
                Err(_) => return self.slow_after(rule, cache, hay, c, eof, budget),
            };
            if sid.is_tagged() {
                if sid.is_match() {
                    last = Some(i);
                } else if sid.is_dead() {
                    break;
                } else if sid.is_quit() {
                    return self.slow_after(rule, cache, hay, c, eof, budget);
                }
            }
            // Once this run's state equals a recorded one at a position, it does at every
            // later one the record covers: looking every few bytes finds the join a little
            // later, at a fraction of the comparisons.
            if (i - c).is_multiple_of(JOIN_STRIDE)
                && let Some(run) = cache.trail.join_at(i, cache.dfa.clear_count(), sid)
            {
                joined = Some((i, run.live, run.last));
                break;
            }
            cache.run.push(sid);
        }
        if let Some((p, live, run_last)) = joined {
            // From `p` on, this run is the recorded one: its last match end, if at or past
            // `p`, is this run's too. The record stays as it was.
            if let Some(l) = run_last.filter(|&l| l >= p) {
                last = Some(l);
            }
            if live {
                return Eval::Live;
            }
            return Eval::Done(self.finish_once(rule, cache, hay, c, last, budget));
        }
        let live = !sid.is_dead() && !eof;
        if !sid.is_dead() && eof {
            match rule.dfa.next_eoi_state(&mut cache.dfa, sid) {
                Ok(s) if s.is_match() => last = Some(hay.len()),
                Ok(_) => {}
                Err(_) => return self.slow_after(rule, cache, hay, c, eof, budget),
            }
        }
        // This run is a new record (comparable only if the cache was not cleared meanwhile).
        let valid = cache.dfa.clear_count() == clears;
        cache
            .trail
            .record(&mut cache.run, c, clears, valid, live, last);
        if live {
            return Eval::Live;
        }
        Eval::Done(self.finish_once(rule, cache, hay, c, last, budget))
    }

    /// The DFA gave up: no trail for this window's later candidates, and the slow path.
    fn slow_after(
        &self,
        rule: &Compiled,
        cache: &mut RuleCache,
        hay: &[u8],
        c: usize,
        eof: bool,
        budget: usize,
    ) -> Eval {
        cache.trail.invalidate();
        self.eval_slow(rule, cache, hay, c, eof, budget)
    }

    /// [`Rule::finish`], skipped when the whole match `[c, end)` lies inside what this rule
    /// already replaced in this window (its part to replace would change nothing).
    fn finish_once(
        &self,
        rule: &Compiled,
        cache: &mut RuleCache,
        hay: &[u8],
        c: usize,
        end: Option<usize>,
        budget: usize,
    ) -> Option<(usize, usize)> {
        let e = end?;
        #[cfg(test)]
        let skip = TRAILS.get() == 0;
        #[cfg(not(test))]
        let skip = true;
        if skip
            && let Some((s0, e0)) = cache.trail.covered
            && s0 <= c
            && e <= e0
        {
            return None;
        }
        let hit = self.finish(rule, cache, hay, c, end, budget);
        if let Some((s, e)) = hit {
            cache.trail.covered = Some(match cache.trail.covered {
                Some((s0, e0)) if s0 <= e && s <= e0 => (s0.min(s), e0.max(e)),
                _ => (s, e),
            });
        }
        hit
    }

    /// Without the lazy DFA (it gave up, e.g. on a Unicode word boundary next to non-ASCII).
    fn eval_slow(
        &self,
        rule: &Compiled,
        cache: &mut RuleCache,
        hay: &[u8],
        c: usize,
        eof: bool,
        budget: usize,
    ) -> Eval {
        // The PikeVM may read to the window's end: charged up front.
        cache.steps = cache.steps.saturating_add(hay.len() - c);
        if cache.steps > budget {
            return Eval::Exhausted;
        }
        let input = Input::new(hay).range(c..).anchored(Anchored::Yes);
        rule.vm.search(&mut cache.vm, &input, &mut cache.caps);
        match cache.caps.get_match() {
            Some(m) if eof || m.end() < hay.len() => {
                Eval::Done(self.finish(rule, cache, hay, c, Some(m.end()), budget))
            }
            Some(_) => Eval::Live,
            None if eof => Eval::Done(None),
            None => Eval::Live,
        }
    }

    fn finish(
        &self,
        rule: &Compiled,
        cache: &mut RuleCache,
        hay: &[u8],
        c: usize,
        end: Option<usize>,
        budget: usize,
    ) -> Option<(usize, usize)> {
        let e = end?;
        // Captures and the check read the match again: charged. Past the budget, the whole
        // match is replaced unchecked (over-redaction, never a leak).
        cache.steps = cache.steps.saturating_add(e - c);
        if cache.steps > budget {
            return (c < e).then_some((c, e));
        }
        let (s, e) = if rule.secret_groups.is_empty() {
            (c, e)
        } else {
            let input = Input::new(hay).range(c..e).anchored(Anchored::Yes);
            rule.vm.search(&mut cache.vm, &input, &mut cache.caps);
            if cache.caps.is_match() {
                let spans = rule
                    .secret_groups
                    .iter()
                    .filter_map(|&g| cache.caps.get_group(g));
                let (mut lo, mut hi) = (usize::MAX, 0);
                for sp in spans {
                    lo = lo.min(sp.start);
                    hi = hi.max(sp.end);
                }
                if lo >= hi {
                    return None;
                }
                (lo, hi)
            } else {
                (c, e)
            }
        };
        if s >= e {
            return None;
        }
        if let Some(check) = self.check
            && !check(&hay[s..e])
        {
            return None;
        }
        Some((s, e))
    }
}

/// A rule's match that outgrew its bound and is still open: the stream keeps replacing
/// everything up to where the match ends, however long it gets.
pub(crate) enum Open {
    /// The rule's DFA, fed up to the stream's position, in a cache of its own.
    Dfa {
        rule: u32,
        cache: Box<DfaCache>,
        sid: regex_automata::hybrid::LazyStateID,
    },
    /// The DFA gave up: replace to the end of the line.
    Line,
    /// The rule does not compile (never a built-in one): replace to the end of output.
    ToEnd,
}

impl Open {
    /// Start covering rule `r`'s match that begins at `hay[c]`, fed through the window's end.
    pub(crate) fn new(rules: &[Rule], r: u32, hay: &[u8], c: usize) -> Open {
        let rule = &rules[r as usize];
        let Ok(compiled) = rule.compiled() else {
            return Open::ToEnd;
        };
        let mut cache = Box::new(compiled.dfa.create_cache());
        let input = Input::new(hay).range(c..).anchored(Anchored::Yes);
        let Ok(sid) = compiled.dfa.start_state_forward(&mut cache, &input) else {
            return Open::Line;
        };
        let mut open = Open::Dfa {
            rule: r,
            cache,
            sid,
        };
        match open.advance(rules, hay, c, false) {
            // Live at the window end by construction; if not, keep covering the line.
            None => open,
            Some(_) => Open::Line,
        }
    }

    /// Feed `hay[at..]`: `Some(end)` when the match ends there (everything before `end` is
    /// covered), `None` when it is still open at the window's end.
    pub(crate) fn advance(
        &mut self,
        rules: &[Rule],
        hay: &[u8],
        at: usize,
        eof: bool,
    ) -> Option<usize> {
        if let Open::Dfa { rule, cache, sid } = self {
            let dfa = match rules[*rule as usize].compiled() {
                Ok(c) => &c.dfa,
                Err(_) => return Some(hay.len()),
            };
            // Match states come one byte late: a match state after `hay[i]` says a match
            // ends at `i`; the dead state comes a byte after the last one.
            let mut last = at;
            let mut i = at;
            while i < hay.len() {
                match dfa.next_state(cache, *sid, hay[i]) {
                    Ok(s) if s.is_dead() => return Some(last),
                    Ok(s) if s.is_quit() => break,
                    Ok(s) => {
                        if s.is_match() {
                            last = i;
                        }
                        *sid = s;
                    }
                    Err(_) => break,
                }
                i += 1;
            }
            if i == hay.len() {
                return if eof { Some(hay.len()) } else { None };
            }
            // The DFA gave up at `i`: cover to the end of that line from here on.
            *self = Open::Line;
            return self.advance(rules, hay, i, eof);
        }
        match self {
            Open::Line => match memchr::memchr(b'\n', &hay[at.min(hay.len())..]) {
                Some(p) => Some(at + p),
                None if eof => Some(hay.len()),
                None => None,
            },
            _ if eof => Some(hay.len()),
            _ => None,
        }
    }
}

/// Literal prefixes every match of `pattern` starts with, when there are few and none empty.
pub(crate) fn prefix_literals(pattern: &str) -> Option<Vec<Vec<u8>>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let parse = |unicode: bool| {
        regex_syntax::ParserBuilder::new()
            .unicode(unicode)
            .utf8(false)
            .build()
            .parse(pattern)
            .ok()
    };
    let hir = parse(false).or_else(|| parse(true))?;
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let lits = seq.literals()?;
    if lits.is_empty() || lits.len() > 256 || lits.iter().any(|l| l.as_bytes().is_empty()) {
        return None;
    }
    Some(lits.iter().map(|l| l.as_bytes().to_vec()).collect())
}

/// A match to replace, in window coordinates.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hit {
    /// Where the match begins (a rule's match may begin before the part it replaces): the
    /// stream must hold from here, or the match cannot be found again.
    pub origin: usize,
    pub start: usize,
    pub end: usize,
    pub name: u32,
    /// From a known value (preferred for the replacement's name over a rule id).
    pub known: bool,
    /// Already known to be covered (carried over, or an open match continued): never a reason
    /// to hold bytes back.
    pub sticky: bool,
}

/// Known values: a sampled q-gram filter in front of a case-sensitive automaton that runs
/// only around the filter's hits.
pub(crate) struct Values {
    lits: Literals,
    filter: Option<GramFilter>,
    /// Name index of each pattern.
    pub names: Vec<u32>,
}

impl Values {
    pub(crate) fn new(patterns: &[Vec<u8>], names: Vec<u32>) -> Result<Values, RedactError> {
        Ok(Values {
            lits: Literals::new(patterns, false)?,
            filter: GramFilter::new(patterns),
            names,
        })
    }

    /// Every occurrence `(pattern, start, end)` inside `hay[from..]`.
    fn for_each(
        &self,
        hay: &[u8],
        from: usize,
        regions: &mut Vec<(usize, usize)>,
        mut f: impl FnMut(usize, usize, usize),
    ) {
        let Some(filter) = &self.filter else {
            self.lits.for_each(hay, from, hay.len(), f);
            return;
        };
        // An occurrence holding the sampled q-gram at `p` lies inside
        // `[p + q - max_len, p + max_len)`; merge those spans and search them exactly.
        let (q, max_len, len) = (filter.q(), self.lits.max_len, hay.len());
        regions.clear();
        filter.for_each_hit(hay, from, |p| {
            let a = (p + q).saturating_sub(max_len).max(from);
            let b = (p + max_len).min(len);
            match regions.last_mut() {
                Some(r) if a < r.1 => r.1 = r.1.max(b),
                _ => regions.push((a, b)),
            }
        });
        for &(a, b) in regions.iter() {
            self.lits.for_each(hay, a, b, &mut f);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    /// Every occurrence in `hay[from..]`, sorted, with the filter (`true`) or the automaton
    /// over the whole window (`false`): for tests comparing the two.
    #[cfg(test)]
    pub(crate) fn occurrences(
        &self,
        hay: &[u8],
        from: usize,
        filtered: bool,
    ) -> Vec<(usize, usize, usize)> {
        let mut v = Vec::new();
        if filtered {
            self.for_each(hay, from, &mut Vec::new(), |p, s, e| v.push((p, s, e)));
        } else {
            self.lits
                .for_each(hay, from, hay.len(), |p, s, e| v.push((p, s, e)));
        }
        v.sort_unstable();
        v.dedup();
        v
    }

    pub(crate) fn memory_usage(&self) -> usize {
        self.lits.memory_usage() + self.filter.as_ref().map_or(0, GramFilter::memory_usage)
    }
}

/// Rule anchors: case-insensitive literals where a rule's match can begin.
pub(crate) struct Anchors {
    triggers: Triggers,
    /// The same anchors as an automaton, for the live partial anchor at a window's end.
    lits: Literals,
    /// Rules to try at each anchor.
    pub rules: Vec<Vec<u32>>,
}

impl Anchors {
    /// `patterns` distinct under ASCII case folding, as `rules` is indexed.
    pub(crate) fn new(patterns: &[Vec<u8>], rules: Vec<Vec<u32>>) -> Result<Anchors, RedactError> {
        Ok(Anchors {
            triggers: Triggers::new(patterns.iter().map(|p| p.to_ascii_lowercase()).collect())?,
            lits: Literals::new(patterns, true)?,
            rules,
        })
    }

    pub(crate) fn memory_usage(&self) -> usize {
        self.lits.memory_usage() + self.triggers.memory_usage()
    }

    pub(crate) fn trigger_count(&self) -> usize {
        self.triggers.len()
    }

    /// Every `(anchor, start)` in `hay[from..]`, sorted, found through the triggers (`true`)
    /// or by comparing every anchor at every position (`false`): for tests.
    #[cfg(test)]
    pub(crate) fn occurrences(
        &self,
        hay: &[u8],
        from: usize,
        filtered: bool,
    ) -> Vec<(usize, usize)> {
        let mut folded = Vec::new();
        prefilter::fold_into(hay, &mut folded);
        let mut v = Vec::new();
        if filtered {
            self.triggers.for_each(&folded, from, |a, s| v.push((a, s)));
        } else {
            for (a, anchor) in self.triggers.anchors().iter().enumerate() {
                for s in from..folded.len() {
                    if folded[s..].starts_with(anchor) {
                        v.push((a, s));
                    }
                }
            }
        }
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Per-stream scratch space for [`Matcher::scan`].
#[derive(Default)]
pub(crate) struct Scratch {
    cands: Vec<(usize, u32)>,
    folded: Vec<u8>,
    regions: Vec<(usize, usize)>,
    joined: Joined,
    /// Rules whose live match outgrew its bound: `(rule, start)`, appended by each scan
    /// (the caller clears it).
    pub overflows: Vec<(u32, usize)>,
}

/// A window with its line breaks (`\r`, `\n`) taken out, for known values: `base64` wraps at 76
/// columns, `xxd -p` at 60, a terminal under a pty adds `\r`. A value matches across breaks
/// when the part before its first break is at least [`JOIN_MIN`] bytes or it begins a line;
/// that rule lets a line's short tail go out at once instead of waiting for the next line.
#[derive(Default)]
struct Joined {
    text: Vec<u8>,
    /// `(joined index, bytes removed before it in total)`: a break was taken out just before
    /// that index.
    cuts: Vec<(usize, usize)>,
}

/// See [`Joined`].
pub(crate) const JOIN_MIN: usize = super::encodings::JOIN_MIN;

impl Joined {
    /// Build from `hay`; false (and nothing built) when `hay` has no line break.
    fn build(&mut self, hay: &[u8]) -> bool {
        // Most output has no `\r`: then one-byte searches (about twice as fast) find the breaks.
        let cr = memchr::memchr(b'\r', hay).is_some();
        let find = |s: &[u8]| {
            if cr {
                memchr::memchr2(b'\n', b'\r', s)
            } else {
                memchr::memchr(b'\n', s)
            }
        };
        let Some(first) = find(hay) else {
            return false;
        };
        self.text.clear();
        self.cuts.clear();
        self.text.extend_from_slice(&hay[..first]);
        let mut i = first;
        let mut removed = 0;
        while i < hay.len() {
            let mut j = i;
            while j < hay.len() && (hay[j] == b'\n' || hay[j] == b'\r') {
                j += 1;
            }
            removed += j - i;
            self.cuts.push((self.text.len(), removed));
            let next = find(&hay[j..]).map_or(hay.len(), |p| j + p);
            self.text.extend_from_slice(&hay[j..next]);
            i = next;
        }
        true
    }

    /// Window index of joined index `j` (of the byte there; `j` may be the end).
    fn to_hay(&self, j: usize) -> usize {
        let k = self.cuts.partition_point(|c| c.0 <= j);
        j + if k == 0 { 0 } else { self.cuts[k - 1].1 }
    }

    /// First joined index whose window index is at least `h`.
    fn index_of_hay(&self, h: usize) -> usize {
        let (mut lo, mut hi) = (0, self.text.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.to_hay(mid) < h {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The first break strictly inside `(s, e)`, as a joined index.
    fn first_break(&self, s: usize, e: usize) -> Option<usize> {
        let k = self.cuts.partition_point(|c| c.0 <= s);
        self.cuts.get(k).map(|c| c.0).filter(|&c| c < e)
    }

    /// Does joined index `s` begin a line (a break right before it, or the stream's start)?
    fn line_start(&self, s: usize, stream_start: bool) -> bool {
        (s == 0 && stream_start) || self.cuts.binary_search_by(|c| c.0.cmp(&s)).is_ok()
    }

    /// May an occurrence `[s, e)` count (see [`Joined`])? With `open`, `e` is the window end
    /// and a break there counts as inside.
    fn admits(&self, s: usize, e: usize, open: bool, stream_start: bool) -> bool {
        match self.first_break(s, if open { e + 1 } else { e }) {
            None => true,
            Some(c) => c - s >= JOIN_MIN || self.line_start(s, stream_start),
        }
    }
}

/// Everything the redactor matches, immutable after construction.
pub(crate) struct Matcher {
    pub values: Option<Values>,
    pub anchors: Option<Anchors>,
    pub rules: Vec<Rule>,
    /// Rules with no usable literal prefix: tried at every position.
    pub everywhere: Vec<u32>,
}

pub(crate) struct ScanOut {
    /// Earliest window position a match could still begin at (window length: none).
    pub live: usize,
}

impl Matcher {
    /// Report the matches in `hay[from..]` into `hits` (`hay[..from]` is context only) and
    /// where the live part of the window begins. With `eof`, nothing is live.
    pub(crate) fn scan(
        &self,
        caches: &mut [Option<RuleCache>],
        scratch: &mut Scratch,
        hay: &[u8],
        from: usize,
        eof: bool,
        hits: &mut Vec<Hit>,
    ) -> ScanOut {
        let len = hay.len();
        let mut out = ScanOut { live: len };
        if from >= len {
            return out;
        }
        let Scratch {
            cands,
            folded,
            regions,
            joined,
            overflows,
        } = scratch;
        cands.clear();
        if let Some(values) = &self.values {
            let stream_start = from == 0;
            if joined.build(hay) {
                let j: &Joined = joined;
                let text = &j.text[..];
                let jfrom = j.index_of_hay(from);
                values.for_each(text, jfrom, regions, |pid, start, end| {
                    if !j.admits(start, end, false, stream_start) {
                        return;
                    }
                    let (s, e) = (j.to_hay(start), j.to_hay(end - 1) + 1);
                    hits.push(Hit {
                        origin: s,
                        start: s,
                        end: e,
                        name: values.names[pid],
                        known: true,
                        sticky: false,
                    });
                });
                if !eof {
                    let tl = text.len();
                    let h = values
                        .lits
                        .hold_if(text, jfrom, |d| j.admits(tl - d, tl, true, stream_start));
                    if h > 0 {
                        out.live = out.live.min(j.to_hay(tl - h));
                    }
                }
            } else {
                values.for_each(hay, from, regions, |pid, start, end| {
                    hits.push(Hit {
                        origin: start,
                        start,
                        end,
                        name: values.names[pid],
                        known: true,
                        sticky: false,
                    });
                });
                if !eof {
                    out.live = out.live.min(len - values.lits.hold(hay, from));
                }
            }
        }
        if let Some(anchors) = &self.anchors {
            prefilter::fold_into(hay, folded);
            anchors.triggers.for_each(folded, from, |a, start| {
                for &r in &anchors.rules[a] {
                    cands.push((start, r));
                }
            });
            if !eof {
                out.live = out.live.min(len - anchors.lits.hold(hay, from));
            }
        }
        for &r in &self.everywhere {
            cands.extend((from..len).map(|p| (p, r)));
        }
        cands.sort_unstable();
        cands.dedup();
        // A rule still live (or overflowed) from `c` holds or replaces everything from `c` to
        // the window's end, so its later anchors in this window need no run of their own: each
        // would re-run the rule to the window's end (quadratic time on repeated anchors).
        let mut held_from: Vec<u32> = Vec::new();
        // A trail is this window's only: positions and states mean nothing in the next. The
        // work budget is per scan.
        for cache in caches.iter_mut().flatten() {
            cache.trail.reset();
            cache.steps = 0;
        }
        let budget = scan_budget(len);
        // Rules out of budget: `(rule, end)`, their candidates before `end` already covered.
        let mut lined: Vec<(u32, usize)> = Vec::new();
        // The last line break looked up: `(from, found)`, found at or after `from`.
        let mut nl: Option<(usize, Option<usize>)> = None;
        for &(c, r) in cands.iter() {
            if held_from.contains(&r) {
                continue;
            }
            if lined.iter().any(|&(lr, end)| lr == r && c < end) {
                continue;
            }
            let rule = &self.rules[r as usize];
            let res = rule.eval(&mut caches[r as usize], hay, c, eof, budget);
            if matches!(res, Eval::Live) {
                held_from.push(r);
            }
            match res {
                Eval::Exhausted => {
                    // Taken as a match to the end of its line; with no line break in the
                    // window, an overflow: the stream keeps covering.
                    let brk = match nl {
                        Some((f, found)) if f <= c && found.is_none_or(|p| p >= c) => found,
                        _ => memchr::memchr(b'\n', &hay[c..]).map(|p| c + p),
                    };
                    nl = Some((c, brk));
                    let end = brk.unwrap_or(len);
                    if end > c {
                        hits.push(Hit {
                            origin: c,
                            start: c,
                            end,
                            name: rule.name,
                            known: false,
                            sticky: false,
                        });
                    }
                    match lined.iter_mut().find(|l| l.0 == r) {
                        Some(l) => l.1 = end.max(c + 1),
                        None => lined.push((r, end.max(c + 1))),
                    }
                    if brk.is_none() && !eof {
                        overflows.push((r, c));
                        held_from.push(r);
                    }
                }
                Eval::Live if len - c > rule.max_len => {
                    hits.push(Hit {
                        origin: c,
                        start: c,
                        end: len,
                        name: rule.name,
                        known: false,
                        sticky: false,
                    });
                    overflows.push((r, c));
                }
                Eval::Live => out.live = out.live.min(c),
                Eval::Done(Some((start, end))) => hits.push(Hit {
                    origin: c,
                    start,
                    end,
                    name: rule.name,
                    known: false,
                    sticky: false,
                }),
                Eval::Done(None) => {}
            }
        }
        out
    }
}
