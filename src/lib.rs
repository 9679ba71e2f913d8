//! agentrun: run an AI agent with exactly the credentials it needs.
//!
//! The data flows one way: profile -> secrets -> verify -> launch (sandbox, redact) -> audit,
//! driven by [`commands`], the orchestrator, the only module that calls more than one stage.
//! `profile`, `context`, `cli`, `scrub` and `sys` are leaves: they import nothing of the
//! crate. `unsafe` lives in `sys` only. docs/architecture.md has the table of who owns what
//! and may import what; `tests/suite/architecture.rs` holds the code to it.
#![deny(unsafe_code)]

pub mod audit;
pub mod broker;
pub mod cli;
pub mod commands;
pub mod context;
pub mod launch;
pub mod preflight;
pub mod profile;
pub mod redact;
pub mod sandbox;
pub mod scrub;
pub mod secrets;
pub mod sys;
pub mod verify;

/// Make this process non-dumpable and turn core dumps off, before any secret is read.
pub fn harden() -> std::io::Result<()> {
    nix::sys::prctl::set_dumpable(false)?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)?;
    Ok(())
}
