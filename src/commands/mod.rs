//! The commands: `run`, `check`, `explain`, `redact`, `profiles`, one file each.
//!
//! This is the orchestrator: the only module that drives the pipeline
//! profile -> fetch -> verify -> (sandbox, redactor) -> launch -> audit, and so the only one
//! that owns loops across stages (fetch, verify, refetch once: [`fetch`]). It imports every
//! stage; no stage imports it. [`plan`] holds what more than one command resolves the same
//! way (the profile, the sandbox policy, the audit sinks); `run` turns its arguments into a
//! checked [`run::Plan`] once, then runs named phases over it.
//!
//! Every failure is a [`Fail`]: an exit code and a message for the operator, never a value.

pub mod broker;
pub mod check;
pub mod control;
pub mod explain;
pub mod fetch;
pub mod learn;
pub mod plan;
pub mod preflight;
pub mod preflight_scope;
pub mod profiles;
pub mod progress;
pub mod redact;
pub mod run;

use crate::audit::AuditError;
use crate::cli::{Cli, Command, ProfileArg};
use crate::launch::redactor::Pending;
use crate::launch::spawn::SpawnError;
use crate::profile::ProfileError;
use std::io::Write;
use std::sync::OnceLock;

/// A failure with its exit code and a message for the operator (never a value).
#[derive(Debug)]
pub struct Fail {
    pub code: u8,
    pub msg: String,
}

impl Fail {
    /// A run that cannot start as asked: exit 125.
    pub fn setup(msg: impl Into<String>) -> Fail {
        Fail {
            code: 125,
            msg: known_tokens_out(&msg.into()),
        }
    }
}

/// Whether `text` holds a run of 20 or more characters a token is made of (letters, digits,
/// `_-+=`): what every built-in token rule needs (paths break at `/` and `.`).
fn token_shaped(text: &str) -> bool {
    let mut run = 0;
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"_-+=".contains(&b) {
            run += 1;
            if run >= 20 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// `text` with everything the built-in redaction rules recognise replaced: a failure message
/// can quote a profile's value (an address, a header line, a key name), and a credential
/// pasted into the wrong key must not come out with it (review 13b, F2). Built once, on the
/// first message that needs it; a build failure leaves the text as it is (the rules are
/// fixed, tested data).
pub(crate) fn known_tokens_out(text: &str) -> String {
    static BUILT_IN: OnceLock<Option<crate::redact::Redactor>> = OnceLock::new();
    let r = BUILT_IN.get_or_init(|| {
        crate::redact::Redactor::new(&crate::profile::RedactSection::default(), &[]).ok()
    });
    match r {
        Some(r) => r.redact_text(text),
        None => text.to_string(),
    }
}

/// A profile that cannot be found, read or accepted: 125, with the profile's own message.
impl From<ProfileError> for Fail {
    fn from(e: ProfileError) -> Fail {
        Fail::setup(e.to_string())
    }
}

/// An audit log that cannot be opened or written: 125 (a run without its log does not
/// start), with the log's own message.
impl From<AuditError> for Fail {
    fn from(e: AuditError) -> Fail {
        Fail::setup(e.to_string())
    }
}

/// A launch failure keeps its own exit code (126, 127, or 125 for a setup failure).
impl From<SpawnError> for Fail {
    fn from(e: SpawnError) -> Fail {
        Fail {
            code: e.exit_code(),
            msg: e.to_string(),
        }
    }
}

/// Verbosity of agentrun's own messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Info,
    Debug,
}

/// agentrun's own stderr messages, prefixed `agentrun:`, through the redactor once the
/// secrets are known.
pub struct Say {
    level: Level,
    redactor: OnceLock<Pending>,
}

impl Say {
    pub fn new(p: &ProfileArg) -> Say {
        let level = if p.quiet {
            Level::Error
        } else if p.verbose {
            Level::Debug
        } else {
            Level::Info
        };
        Say::at_level(level)
    }

    fn at_level(level: Level) -> Say {
        Say {
            level,
            redactor: OnceLock::new(),
        }
    }

    /// From now on, messages pass through the redactor (waiting for it if need be).
    pub(crate) fn redact_with(&self, r: Pending) {
        let _ = self.redactor.set(r);
    }

    pub fn at(&self, level: Level, msg: &str) {
        if level > self.level {
            return;
        }
        // No `user:pass@` of any URL (a Vault address, an endpoint) in a message.
        // Control characters (a server's error text, a TOML string) escaped: nothing a
        // message quotes can drive the operator's terminal (review 15, F7).
        let msg = crate::scrub::controls_escaped(&crate::scrub::strip_userinfo(msg));
        let line = format!("agentrun: {msg}\n");
        let bytes = match self.redactor.get().map(|c| c.wait()) {
            Some(Ok(r)) => r.redact_bytes(line.as_bytes()),
            // No redactor (yet, or it failed): agentrun's messages name things, never values;
            // a message quoting a profile's value loses what looks like a credential. The
            // built-in rules cost a few ms to build, so a run's ordinary notes (which name
            // paths and flags) skip them unless they hold a token-shaped run of characters.
            _ if level == Level::Error || token_shaped(&line) => {
                known_tokens_out(&line).into_bytes()
            }
            _ => line.into_bytes(),
        };
        let _ = std::io::stderr().lock().write_all(&bytes);
    }
}

/// Entry point after hardening: dispatch and map the result to an exit code.
pub fn main(cli: Cli) -> u8 {
    let mut ran = None;
    progress::enable(quiet(&cli));
    let (result, say) = match cli.command {
        None => {
            let say = Say::new(&cli.run.profile);
            ran = Some((cli.run.profile.profile.clone(), cli.run.command.clone()));
            (run::run(cli.run, &say), say)
        }
        Some(Command::Run(a)) => {
            let say = Say::new(&a.profile);
            ran = Some((a.profile.profile.clone(), a.command.clone()));
            (run::run(a, &say), say)
        }
        Some(Command::Check(a)) => {
            let say = Say::new(&a.profile);
            (check::check(&a, &say), say)
        }
        Some(Command::Explain(a)) => {
            let say = Say::new(&a.profile);
            (explain::explain(&a), say)
        }
        Some(Command::Learn(a)) => {
            let say = Say::new(&a.profile);
            (learn::learn(&a, &say), say)
        }
        Some(Command::Preflight(a)) => {
            let say = Say::new(&a.profile);
            (preflight::preflight(&a, &say), say)
        }
        Some(Command::Redact(a)) => {
            let say = Say::new(&a);
            (redact::redact(&a, &say), say)
        }
        Some(Command::Profiles) => (profiles::profiles(), Say::at_level(Level::Info)),
        Some(Command::Revoke(a)) => (control::revoke(&a), Say::at_level(Level::Info)),
        Some(Command::Runs(a)) => (control::runs(&a), Say::at_level(Level::Info)),
    };
    let code = match result {
        Ok(code) => code,
        Err(f) => {
            say.at(Level::Error, &f.msg);
            f.code
        }
    };
    if let Some((profile, argv)) = ran
        && needs_hint(code)
        && !argv.is_empty()
        && nix::unistd::isatty(std::io::stderr()).unwrap_or(false)
    {
        say.at(Level::Info, &hint(profile.as_deref(), &argv));
    }
    code
}

/// Whether a run that ended with `code` gets the hint: the command could not be executed
/// (126, 127) or ended with an error of its own (1 to 123); not a refusal before the start
/// (125, which says why), a time limit (124) or a signal (128 and up).
fn needs_hint(code: u8) -> bool {
    matches!(code, 1..=123 | 126 | 127)
}

/// The one line after a failed run on a terminal: where to see what the sandbox denied.
fn hint(profile: Option<&str>, argv: &[std::ffi::OsString]) -> String {
    let p = profile.map_or_else(String::new, |p| format!(" --profile {}", shell_word(p)));
    let cmd = argv
        .iter()
        .map(|a| shell_word(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "if the sandbox refused something: `agentrun check{p} -- {cmd}` names what its start needs and a run denies; `agentrun learn{p} -- {cmd}` shows all it uses (it runs the command once without a sandbox)"
    )
}

/// `w` as one shell word: as it is when it is plain, else in single quotes.
fn shell_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./=:,+@%-".contains(&b));
    if plain {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

/// `-q` as given to the command at hand.
fn quiet(cli: &Cli) -> bool {
    match &cli.command {
        None => cli.run.profile.quiet,
        Some(Command::Run(a)) => a.profile.quiet,
        Some(Command::Check(a)) => a.profile.quiet,
        Some(Command::Explain(a)) => a.profile.quiet,
        Some(Command::Learn(a)) => a.profile.quiet,
        Some(Command::Preflight(a)) => a.profile.quiet,
        Some(Command::Redact(a)) => a.quiet,
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_keeps_its_exit_code_and_message() {
        let e = ProfileError::NotFound("profile x does not exist".into());
        let f = Fail::from(e);
        assert_eq!((f.code, f.msg.as_str()), (125, "profile x does not exist"));
        let f = Fail::from(SpawnError::NotFound("cmd".into(), String::new()));
        assert_eq!((f.code, f.msg.as_str()), (127, "cmd: command not found"));
        let f = Fail::from(SpawnError::CannotExecute("cmd".into(), "denied".into()));
        assert_eq!(
            (f.code, f.msg.as_str()),
            (126, "cmd: cannot execute: denied")
        );
        let f = Fail::setup("no command");
        assert_eq!((f.code, f.msg.as_str()), (125, "no command"));
    }
}
