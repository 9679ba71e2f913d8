//! The run's redactor as the pump's filter, built in the background.
//!
//! Compiling the redactor's automata takes a few milliseconds; the child must not wait for
//! it. [`Build`] carries what the build needs to its own thread, started once the child is
//! spawned; [`LazyRedact`] is the pump's filter until then: the first bytes wait for the
//! build. If it cannot be built, output is withheld (fail closed), never passed raw.
//! agentrun's own messages wait for the same build through [`Pending`].
//!
//! Imports `redact` (the matcher) and the pump's [`StreamFilter`]; nothing imports back.

use super::pump::StreamFilter;
use crate::profile::RedactSection;
use crate::redact::{RedactStream, Redactor};
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// The run's redactor, built on its own thread (see [`Build`]).
pub type Pending = &'static Building;

/// The cell the redactor thread fills.
pub struct Building {
    /// The redactor, or why it could not be built.
    done: OnceLock<Result<&'static Redactor, String>>,
    /// Set by the first thing that needs it: the build stops holding back.
    wanted: Mutex<bool>,
    wake: Condvar,
}

/// How long the redactor thread holds back before building unasked. On a two-CPU machine a
/// build (a few ms of CPU) running beside a short child's start slowed that start by about
/// as much, whatever the thread's priority: a child that is done, or silent, within this
/// time never pays for it; output or a message before it starts the build at once (and
/// waits for it, as output always waited for a build in progress).
const HEAD_START: Duration = Duration::from_millis(10);

impl Building {
    /// The redactor (or why there is none), building it now if the thread is holding back.
    pub fn wait(&self) -> &Result<&'static Redactor, String> {
        if self.done.get().is_none() {
            *self.wanted.lock().unwrap_or_else(PoisonError::into_inner) = true;
            self.wake.notify_one();
        }
        self.done.wait()
    }
}

/// `Redactor::new`, its error naming the profile.
pub fn build(
    section: &RedactSection,
    path: &Path,
    pairs: &[(&str, &SecretString)],
) -> Result<Redactor, String> {
    Redactor::new(section, pairs).map_err(|e| format!("{}: {e}", path.display()))
}

/// What the redactor thread needs; [`Build::start`] moves it there.
pub struct Build {
    cell: Pending,
    section: RedactSection,
    path: PathBuf,
    secrets: Vec<(String, SecretString)>,
    /// Made only for a run that can get values late (a broker's): see [`Build::late`].
    late: OnceLock<&'static Late>,
}

/// Values that arrive during the run (a brokered secret refreshed from its source): each
/// [`Late::add`] builds a redactor that knows them too, and the pump's filters switch to it
/// at their next chunk, before the value is used (the broker calls `add` before it swaps the
/// value in). Lives until the process ends, as the first redactor does.
pub struct Late {
    /// How many redactors were built since the first; a filter behind switches.
    generation: std::sync::atomic::AtomicU64,
    current: Mutex<Option<&'static Redactor>>,
    build: Mutex<Inputs>,
}

/// What a redactor is built from: the profile's `[redact]`, its path, the named values.
type Inputs = (RedactSection, PathBuf, Vec<(String, SecretString)>);

impl Late {
    /// Build a redactor that also knows `value` (as `name`), and make it the one the
    /// pump's filters switch to. Blocks for the build (a few milliseconds); an error keeps
    /// the current one and says why.
    pub fn add(&self, name: &str, value: &SecretString) -> Result<(), String> {
        let mut b = self.build.lock().unwrap_or_else(PoisonError::into_inner);
        b.2.push((name.to_owned(), value.clone()));
        let pairs: Vec<(&str, &SecretString)> = b.2.iter().map(|(n, v)| (n.as_str(), v)).collect();
        let r: &'static Redactor = Box::leak(Box::new(build(&b.0, &b.1, &pairs)?));
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn newer_than(&self, seen: u64) -> Option<(u64, &'static Redactor)> {
        let g = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        if g == seen {
            return None;
        }
        let r = (*self.current.lock().unwrap_or_else(PoisonError::into_inner))?;
        Some((g, r))
    }
}

impl Build {
    /// The redactor of `section` (from the profile at `path`) for `secrets`, to be built on
    /// its own thread once [`Build::start`]ed, building when first needed or after
    /// [`HEAD_START`], so that compiling its automata never delays the child's start. It
    /// lives until the process ends (leaked once per run, on purpose).
    pub fn new(
        section: RedactSection,
        path: PathBuf,
        secrets: Vec<(String, SecretString)>,
    ) -> Build {
        let cell: Pending = Box::leak(Box::new(Building {
            done: OnceLock::new(),
            wanted: Mutex::new(false),
            wake: Condvar::new(),
        }));
        Build {
            cell,
            section,
            path,
            secrets,
            late: OnceLock::new(),
        }
    }

    /// Where values that arrive during the run go (see [`Late`]), made on the first call.
    pub fn late(&self) -> &'static Late {
        self.late.get_or_init(|| {
            Box::leak(Box::new(Late {
                generation: std::sync::atomic::AtomicU64::new(0),
                current: Mutex::new(None),
                build: Mutex::new((
                    self.section.clone(),
                    self.path.clone(),
                    self.secrets.clone(),
                )),
            }))
        })
    }

    /// [`Build::late`] if a caller made it (the pump's filters watch it then).
    pub fn late_if_made(&self) -> Option<&'static Late> {
        self.late.get().copied()
    }

    /// The cell the build will fill (for the pump's filter).
    pub fn pending(&self) -> Pending {
        self.cell
    }

    /// Start the build's thread (holding back for [`HEAD_START`] unless asked).
    pub fn start(self) -> Pending {
        let cell = self.cell;
        let spawned = std::thread::Builder::new()
            .name("redactor".into())
            .spawn(move || {
                let held = self
                    .cell
                    .wanted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                drop(
                    self.cell
                        .wake
                        .wait_timeout_while(held, HEAD_START, |wanted| !*wanted),
                );
                let pairs: Vec<(&str, &SecretString)> =
                    self.secrets.iter().map(|(n, v)| (n.as_str(), v)).collect();
                // A panic here must not leave output waiting forever: it is an error too.
                let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    build(&self.section, &self.path, &pairs).map(|r| &*Box::leak(Box::new(r)))
                }))
                .unwrap_or_else(|_| Err("the redactor's build panicked".to_owned()));
                let _ = self.cell.done.set(built);
            });
        if let Err(e) = spawned {
            // Fail closed: output is withheld, never passed raw.
            let _ = cell
                .done
                .set(Err(format!("cannot start the redactor thread: {e}")));
        }
        cell
    }
}

/// The pump's filter while the redactor may still be building: the first bytes wait for
/// it. If it could not be built, output is withheld (fail closed), never passed raw.
pub struct LazyRedact {
    pending: Pending,
    stream: Option<RedactStream<'static>>,
    failed: bool,
    late: Option<(&'static Late, u64)>,
    /// Replacements counted by the streams this filter switched away from.
    counted: BTreeMap<String, u64>,
}

impl LazyRedact {
    pub fn new(pending: Pending) -> LazyRedact {
        LazyRedact {
            pending,
            stream: None,
            failed: false,
            late: None,
            counted: BTreeMap::new(),
        }
    }

    /// Switch to a newer redactor of `late` when one is built (checked at each chunk).
    pub fn with_late(mut self, late: &'static Late) -> LazyRedact {
        self.late = Some((late, 0));
        self
    }

    /// When a newer redactor is built, switch to a stream of it at a quiet point: when the
    /// current stream holds nothing back and has no match open (review 11g, G1, G2: ending a
    /// stream mid-match let a token's rest, or a split escape sequence, out raw). Until then
    /// the current stream goes on; the check comes at every chunk.
    fn switch_if_newer(&mut self) {
        let Some((late, seen)) = self.late else {
            return;
        };
        if self.stream.as_ref().is_some_and(|s| !s.is_settled()) {
            return;
        }
        let Some((g, r)) = late.newer_than(seen) else {
            return;
        };
        if let Some(old) = self.stream.take() {
            for (k, v) in old.counts() {
                *self.counted.entry(k.clone()).or_default() += v;
            }
        }
        if !self.failed {
            self.stream = Some(r.stream());
        }
        self.late = Some((late, g));
    }

    /// The first redactor's stream, waiting for its build; if it could not be built, output
    /// is withheld from here on (fail closed).
    fn ready(&mut self, out: &mut Vec<u8>) {
        if self.stream.is_none() && !self.failed {
            match self.pending.wait() {
                Ok(r) => self.stream = Some(r.stream()),
                Err(e) => {
                    self.failed = true;
                    out.extend_from_slice(
                        format!(
                            "[agentrun: output withheld: the redactor could not be built: {e}]\n"
                        )
                        .as_bytes(),
                    );
                }
            }
        }
    }
}

impl StreamFilter for LazyRedact {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.stream.is_none() && !self.failed {
            self.ready(out);
        }
        self.switch_if_newer();
        if let Some(s) = self.stream.as_mut() {
            s.push(input, out);
        }
        self.switch_if_newer();
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(s) = self.stream.as_mut() {
            s.finish(out);
        }
    }
    fn counts(&self) -> BTreeMap<String, u64> {
        let mut c = self.counted.clone();
        for (k, v) in self
            .stream
            .as_ref()
            .map(|s| s.counts())
            .into_iter()
            .flatten()
        {
            *c.entry(k.clone()).or_default() += v;
        }
        c
    }
}

/// The redactor is the pump's filter.
impl StreamFilter for RedactStream<'_> {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        RedactStream::push(self, input, out)
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        RedactStream::finish(self, out)
    }
    fn counts(&self) -> BTreeMap<String, u64> {
        RedactStream::counts(self).clone()
    }
}
