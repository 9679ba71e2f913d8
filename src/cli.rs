//! Command-line types only (clap). Validation beyond syntax happens in `app`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;

#[derive(Debug, Parser)]
#[command(
    name = "agentrun",
    version,
    about = "Run an AI agent with exactly the credentials it needs, confined, with its output redacted.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run COMMAND under a profile (the default).
    Run(RunArgs),
    /// Fetch and verify every secret and test kernel support; run nothing.
    Check(CheckArgs),
    /// Print the effective policy; fetch nothing, never print values.
    Explain(CheckArgs),
    /// Copy stdin to stdout through the profile's redactor.
    Redact(ProfileArg),
    /// List the profiles found on the search path.
    Profiles,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Tty {
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Debug, Args, Clone)]
pub struct ProfileArg {
    /// Profile path, or a name looked up on the search path.
    #[arg(short = 'p', long, env = "AGENTRUN_PROFILE", value_name = "P")]
    pub profile: Option<String>,
    /// Say less (errors only).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Say more (what was dropped and why).
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

#[derive(Debug, Args, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub profile: ProfileArg,
    /// One JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub profile: ProfileArg,
    /// Give the child a pseudo-terminal: auto = when agentrun's stdout is a terminal.
    #[arg(long, value_enum, default_value_t = Tty::Auto)]
    pub tty: Tty,
    /// Audit log path, or `-` for stderr (overrides the profile's).
    #[arg(long, value_name = "PATH|-")]
    pub audit_log: Option<String>,
    /// Stop the child after this long (e.g. 90s, 30m); exit code 124.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Run even when the kernel cannot enforce every sandbox rule (operator only).
    #[arg(long)]
    pub best_effort: bool,
    /// Run without Landlock or seccomp at all (operator only).
    #[arg(long)]
    pub unconfined: bool,
    /// Pass the child's output unfiltered (operator only).
    #[arg(long)]
    pub no_redact: bool,
    /// The command and its arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<OsString>,
}
