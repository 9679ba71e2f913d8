//! agentrun's end-to-end suite: one test binary, one module per area, as ripgrep and just
//! keep theirs. Every test runs the real binary (or the library against real servers);
//! tests run as threads of this one process, so none may change process-wide state
//! (environment, working directory, umask, signal dispositions): each sets what it needs on
//! the `Command` it spawns instead.
//!
//! - `harness`: scratch directories, the `Scratch::agentrun()` run builder, process helpers.
//! - `servers`: real OpenBao and moto servers, and tiny in-test HTTP servers.
//! - `fixtures/`: the child-side attack scripts, one file each, loaded with `include_str!`.
//!
//! Run one area with `cargo test --test suite sandbox::`.

mod architecture;
mod backends;
mod broker;
mod broker_control;
mod broker_core;
mod child_setup;
mod harness;
mod servers;

mod filter;
mod launcher;
mod learn;
mod messages;
mod preflight;
mod preflight_review;
mod preflight_scope;
mod progress;
mod redact;
mod remote;
mod remote_azure;
mod remote_cli;
mod remote_gcp;
mod remote_ssm;
mod sandbox;
mod supply_chain;
mod terminal;
