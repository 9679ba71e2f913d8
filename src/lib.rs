//! agentrun: run an AI agent with exactly the credentials it needs.
//!
//! The data flows one way: profile -> secrets -> verify -> launch (sandbox, redact) -> audit.
#![deny(unsafe_code)]

pub mod app;
pub mod audit;
pub mod cli;
pub mod launch;
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
