//! agentrun: harden, parse, run, map the result to an exit code.
//!
//! `#![no_main]`: std's runtime start-up (finding the main thread's stack guard by parsing
//! /proc/self/maps, an alternate signal stack) cost about 0.1 ms of every run, and agentrun
//! needs only two things from it, done in [`agentrun::start`]: fds 0-2 open, and SIGPIPE
//! ignored (a closed output pipe is an error to handle, not a death). std still reads the
//! arguments and environment at load time (glibc's `.init_array`; a musl build would not).
//! A panic on this thread aborts (fail closed).
#![no_main]

use clap::Parser;
use std::io::Write;

/// The C entry point; the exit code is returned to libc, which flushes nothing of ours
/// (stdout is flushed below) and exits.
// SAFETY: `main` is the symbol libc's start-up calls with (argc, argv); no other item in
// the program defines it (std's own `main` shim is absent under `#![no_main]`).
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    let code = run();
    let _ = std::io::stdout().flush();
    libc::c_int::from(code)
}

fn run() -> u8 {
    if let Err(e) = agentrun::start() {
        eprintln!("agentrun: cannot set up the process: {e}");
        return 125;
    }
    // Before reading any secret: no core dumps, not dumpable (no ptrace or /proc/PID/mem
    // by same-user processes, the child included).
    if let Err(e) = agentrun::harden() {
        eprintln!("agentrun: cannot harden the process: {e}");
        return 125;
    }
    let cli = match agentrun::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 125 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    agentrun::commands::main(cli)
}
