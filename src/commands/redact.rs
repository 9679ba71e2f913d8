//! `agentrun redact`: the run's redactor as a filter, stdin to stdout, with the profile's
//! secrets (fetched and verified as a run would) and rules.
//!
//! A log filter must never lose the log. When a secret is missing or fails its check, or
//! the profile's own `[redact]` rules cannot be built, the filter warns on stderr, redacts
//! with what it has (every value it could fetch and the built-in rules at least), copies all
//! of stdin, and exits 1 at the end. With no profile at all it uses the built-in rules and
//! exits 0.
//!
//! A profile that cannot be used at all (not found, unparsable, or refused as insecure: a
//! child that may write its directory can make it so with one `chmod`) fails closed: the
//! log is withheld (125), since without the profile agentrun cannot know which values to
//! take out (review 13b, F1). The operator's explicit way past is `agentrun redact`
//! without `--profile` (the built-in rules only).

use super::fetch::{self, Secrets};
use super::{Fail, Level, Say, plan};
use crate::cli::ProfileArg;
use crate::launch;
use crate::profile::RedactSection;
use crate::redact::Redactor;
use secrecy::ExposeSecret;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Redact stdin to stdout with the profile's secrets and rules (the built-in rules without
/// a profile); 1 when something was left out (each said on stderr), 0 otherwise.
pub fn redact(args: &ProfileArg, say: &Say) -> Result<u8, Fail> {
    let ctx = plan::context()?;
    let (redactor, degraded) = match args.profile.as_deref() {
        None => (built_in()?, false),
        Some(_) => with_profile(args, &ctx, say)?,
    };
    let input = std::fs::File::from(owned(std::io::stdin().lock().as_fd())?);
    let output = std::fs::File::from(owned(std::io::stdout().lock().as_fd())?);
    let stats = launch::pump::pump(input, output, Box::new(redactor.stream()));
    for (name, n) in &stats.counts {
        say.at(Level::Debug, &format!("redacted {name}: {n}"));
    }
    match stats.error {
        Some(e) => Err(Fail::setup(format!("redact: {e}"))),
        None if degraded => Ok(1),
        None => Ok(0),
    }
}

/// The profile's redactor with every value that could be fetched; `true` when anything was
/// left out (a missing secret, a profile that cannot be loaded, rules that do not build),
/// each said once on stderr. Only a failure of the built-in rules themselves is an error.
fn with_profile(
    args: &ProfileArg,
    ctx: &crate::context::Context,
    say: &Say,
) -> Result<(Redactor, bool), Fail> {
    let warn = |msg: &str| say.at(Level::Error, msg);
    let profile = plan::load_profile(args, ctx).map_err(|f| {
        Fail::setup(format!(
            "{}; the log is withheld: without the profile agentrun cannot know which secret \
             values to take out of it. Fix the profile, or run `agentrun redact` without \
             --profile to apply the built-in rules only",
            f.msg
        ))
    })?;
    let Secrets {
        got,
        errors,
        withheld,
        ..
    } = fetch::fetch_and_verify(&profile, ctx, None);
    let mut degraded = !errors.is_empty();
    for e in &errors {
        warn(&format!(
            "{e}; its value is not redacted from this log (the other secrets and the rules \
             are); fix the source and run the filter again"
        ));
    }
    // A value too short to redact without mangling the log is left out, not the whole filter.
    let (long, short): (Vec<_>, Vec<_>) = got
        .into_iter()
        .partition(|g| g.value.expose_secret().len() >= crate::redact::MIN_SECRET_LEN);
    for g in &short {
        degraded = true;
        warn(&format!(
            "secret {} is shorter than {} characters: it cannot be redacted without mangling \
             the log, so it is not; use a real credential",
            g.name,
            crate::redact::MIN_SECRET_LEN
        ));
    }
    match fetch::build_redactor(&profile, &long, &withheld) {
        Ok(r) => Ok((r, degraded)),
        Err(f) => {
            warn(&format!(
                "{}; redacting with the built-in rules and every value fetched (not the \
                 profile's own [redact] rules), and exiting 1 at the end",
                f.msg
            ));
            let values: Vec<(&str, &secrecy::SecretString)> = long
                .iter()
                .chain(fetch::redactable(&withheld))
                .map(|g| (g.name.as_str(), &g.value))
                .collect();
            let r = Redactor::new(&RedactSection::default(), &values)
                .map_err(|e| Fail::setup(format!("the built-in redaction rules: {e}")))?;
            Ok((r, true))
        }
    }
}

/// The built-in rules (`[redact]`'s defaults), no values.
fn built_in() -> Result<Redactor, Fail> {
    Redactor::new(&RedactSection::default(), &[])
        .map_err(|e| Fail::setup(format!("the built-in redaction rules: {e}")))
}

/// A copy of agentrun's stdin or stdout for the pump; failing to make one is a setup
/// failure (125) with the system's message.
fn owned(fd: BorrowedFd) -> Result<OwnedFd, Fail> {
    fd.try_clone_to_owned()
        .map_err(|e| Fail::setup(e.to_string()))
}
