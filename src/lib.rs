//! agentrun: run an AI agent with exactly the credentials it needs.
//!
//! The data flows one way: profile -> secrets -> verify -> launch (sandbox, redact) -> audit.
#![deny(unsafe_code)]

pub mod app;
pub mod audit;
pub mod broker;
pub mod cli;
pub mod launch;
pub mod profile;
pub mod redact;
pub mod sandbox;
pub mod scrub;
pub mod secrets;
pub mod sys;
pub mod verify;

/// What std's runtime start-up would do and agentrun relies on (the binary has no std
/// `main`): fds 0, 1 and 2 open (on /dev/null when closed, so that no file agentrun opens
/// later lands on them and receives the child's output), and SIGPIPE ignored, so a write
/// to a closed pipe fails with EPIPE instead of killing agentrun.
pub fn start() -> std::io::Result<()> {
    sys::open_std_fds()?;
    sys::ignore_sigpipe()
}

/// Make this process non-dumpable and turn core dumps off, before any secret is read.
pub fn harden() -> std::io::Result<()> {
    nix::sys::prctl::set_dumpable(false)?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)?;
    Ok(())
}
