//! agentrun: run an AI agent with exactly the credentials it needs.
//!
//! The data flows one way: profile -> secrets -> verify -> launch (sandbox, redact) -> audit.
#![deny(unsafe_code)]

pub mod profile;
pub mod redact;
pub mod sandbox;
pub mod secrets;
pub mod verify;
