//! `agentrun redact`: the run's redactor as a filter, stdin to stdout, with the profile's
//! secrets (fetched and verified as a run would) and rules.

use super::fetch::{self, Secrets};
use super::{Fail, Level, Say, plan};
use crate::cli::ProfileArg;
use crate::launch;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Redact stdin to stdout with the profile's secrets and rules.
pub fn redact(args: &ProfileArg, say: &Say) -> Result<u8, Fail> {
    let ctx = plan::context()?;
    let profile = plan::load_profile(args, &ctx)?;
    let Secrets {
        got,
        errors,
        withheld,
        ..
    } = fetch::fetch_and_verify(&profile, &ctx, None);
    if !errors.is_empty() {
        return Err(Fail::setup(errors.join("\nagentrun: ")));
    }
    let redactor = fetch::build_redactor(&profile, &got, &withheld)?;
    let input = std::fs::File::from(owned(std::io::stdin().lock().as_fd())?);
    let output = std::fs::File::from(owned(std::io::stdout().lock().as_fd())?);
    let stats = launch::pump::pump(input, output, Box::new(redactor.stream()));
    for (name, n) in &stats.counts {
        say.at(Level::Debug, &format!("redacted {name}: {n}"));
    }
    match stats.error {
        Some(e) => Err(Fail::setup(format!("redact: {e}"))),
        None => Ok(0),
    }
}

/// A copy of agentrun's stdin or stdout for the pump; failing to make one is a setup
/// failure (125) with the system's message.
fn owned(fd: BorrowedFd) -> Result<OwnedFd, Fail> {
    fd.try_clone_to_owned()
        .map_err(|e| Fail::setup(e.to_string()))
}
