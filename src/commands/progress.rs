//! A one-line note on the operator's terminal while slow work runs: after 300 ms of a
//! fetch, a probe or a refetch, `agentrun: fetching OPENAI_API_KEY from vault (1.2s)` on
//! stderr, redrawn in place every 100 ms and erased when the work ends, so that a hung
//! server is not ten seconds of silence.
//!
//! Only on a terminal: never when stderr is a pipe or a file, never in CI (`CI` set), never
//! with `-q`. The note names secrets and their sources' kinds, never a value.
//!
//! A few lines of our own rather than `indicatif`: one line redrawn with `\r` and erased
//! with `ESC [ K` is all this needs, while indicatif brings `console` and three more
//! crates (templates, bars, multi-progress, its own terminal detection) for it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long work runs before the note appears.
const DELAY: Duration = Duration::from_millis(300);
/// How often the elapsed time is redrawn.
const TICK: Duration = Duration::from_millis(100);
/// The longest description drawn (a wrapped line could not be redrawn in place).
const MAX_CHARS: usize = 60;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Decide once, at the start of a command: notes only when stderr is a terminal, `CI` is
/// not set, and the operator did not ask for quiet.
pub fn enable(quiet: bool) {
    let on = !quiet
        && std::env::var_os("CI").is_none()
        && nix::unistd::isatty(std::io::stderr()).unwrap_or(false);
    ENABLED.store(on, Ordering::Relaxed);
}

/// A note shown while it lives (after [`DELAY`]); dropping it erases the note.
pub struct Note {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Show `what` (`fetching K from vault`) if the work outlasts [`DELAY`] on a terminal.
pub fn show(what: impl Into<String>) -> Note {
    if !ENABLED.load(Ordering::Relaxed) {
        return Note {
            stop: None,
            thread: None,
        };
    }
    let what = shorten(&what.into());
    let (tx, rx) = mpsc::channel::<()>();
    let start = Instant::now();
    let thread = std::thread::Builder::new()
        .name("progress".into())
        .spawn(move || {
            let mut wait = DELAY;
            let mut drawn = false;
            while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(wait) {
                let secs = start.elapsed().as_secs_f64();
                draw(&format!("\r\x1b[2Kagentrun: {what} ({secs:.1}s)"));
                drawn = true;
                wait = TICK;
            }
            if drawn {
                draw("\r\x1b[2K");
            }
        })
        .ok();
    Note {
        stop: Some(tx),
        thread,
    }
}

impl Drop for Note {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn draw(s: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(s.as_bytes());
    let _ = err.flush();
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= MAX_CHARS {
        return s.to_string();
    }
    let mut out: String = s.chars().take(MAX_CHARS - 1).collect();
    out.push('…');
    out
}

/// `A from vault, B from aws-sm`: the remote sources among `(name, scheme, remote)`, or
/// every name when none is remote.
pub fn sources<'a>(items: impl Iterator<Item = (&'a str, &'a str, bool)>) -> String {
    let items: Vec<_> = items.collect();
    let remote: Vec<String> = items
        .iter()
        .filter(|(_, _, r)| *r)
        .map(|(n, k, _)| format!("{n} from {k}"))
        .collect();
    if remote.is_empty() {
        items
            .iter()
            .map(|(n, _, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        remote.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_named() {
        assert_eq!(
            sources(
                [
                    ("A", "env", false),
                    ("K", "vault", true),
                    ("S", "aws-sm", true)
                ]
                .into_iter()
            ),
            "K from vault, S from aws-sm"
        );
        assert_eq!(
            sources([("A", "env", false), ("B", "file", false)].into_iter()),
            "A, B"
        );
        assert_eq!(shorten(&"x".repeat(100)).chars().count(), MAX_CHARS);
    }
}
