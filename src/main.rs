//! agentrun: harden, parse, run, map the result to an exit code.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before reading any secret: no core dumps, not dumpable (no ptrace or /proc/PID/mem
    // by same-user processes, the child included).
    if let Err(e) = agentrun::harden() {
        eprintln!("agentrun: cannot harden the process: {e}");
        return ExitCode::from(125);
    }
    let cli = match agentrun::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 125 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    agentrun::app::main(cli)
}
