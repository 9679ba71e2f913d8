//! agentrun: harden, parse, run, map the result to an exit code.
//!
//! A plain std `main`: std's runtime start-up opens fds 0-2 on /dev/null when they are closed
//! (so no file agentrun opens later lands on them and receives the child's output) and
//! ignores SIGPIPE (a closed output pipe is an error to handle, not a death). A `#![no_main]`
//! entry point that skipped that start-up was measured side by side with this one and saved
//! nothing above the run-to-run noise, while it broke a musl build silently.
//! A panic on this thread aborts (fail closed), as it did with that entry point.
#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let _abort = AbortOnPanic;
    let code = run();
    let _ = std::io::stdout().flush();
    ExitCode::from(code)
}

/// Turns a panic that unwinds out of [`run`] into an abort: nothing of the launcher's state
/// is dropped half-way, and the exit is a death by SIGABRT, never a normal-looking code.
struct AbortOnPanic;

impl Drop for AbortOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            std::process::abort();
        }
    }
}

fn run() -> u8 {
    // Before reading any secret: no core dumps, not dumpable (no ptrace or /proc/PID/mem
    // by same-user processes, the child included).
    if let Err(e) = agentrun::harden() {
        eprintln!("agentrun: cannot harden the process: {e}");
        return 125;
    }
    let cli = match agentrun::cli::parse(std::env::args_os().collect()) {
        Ok(c) => c,
        Err(agentrun::cli::ParseError::Line(msg)) => {
            eprintln!("agentrun: {msg}");
            return 125;
        }
        Err(agentrun::cli::ParseError::Clap(e)) => {
            let code = if e.use_stderr() { 125 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    agentrun::commands::main(cli)
}
