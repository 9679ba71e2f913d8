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
    /// Fetch and verify every secret and test kernel support; run nothing. With `-- COMMAND`,
    /// also name every path starting COMMAND needs that the sandbox would deny.
    Check(CheckArgs),
    /// Print the effective policy; fetch nothing, never print values.
    Explain(ExplainArgs),
    /// Run COMMAND once, unconfined and observed, and print the smallest [sandbox] table that
    /// allows what it did (operator only: it runs with your own access).
    Learn(LearnArgs),
    /// Copy stdin to stdout through the profile's redactor.
    Redact(ProfileArg),
    /// Check the agent's project against the deployment checklist (hardcoded secrets,
    /// .env files, pinned and hashed dependencies, audits in CI, ...).
    Preflight(PreflightArgs),
    /// List the profiles found on the search path.
    Profiles,
    /// Revoke brokered secrets of running agents (theirs stay revoked until the run ends).
    Revoke(RevokeArgs),
    /// List this user's running brokers: PID, profile, names, counts, what is revoked.
    Runs(RunsArgs),
}

#[derive(Debug, Args, Clone)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["all", "names"]))]
pub struct RevokeArgs {
    /// Only the run of agentrun with this PID.
    #[arg(long, value_name = "PID")]
    pub run: Option<u32>,
    /// Every brokered secret, and close the runs' tunnels too.
    #[arg(long)]
    pub all: bool,
    /// The secrets to revoke (in every run that brokers them).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct RunsArgs {
    /// One JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
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
    /// A command to resolve as a run would (PATH, `#!` chains, shims), after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args, Clone)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub profile: ProfileArg,
    /// One JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct PreflightArgs {
    #[command(flatten)]
    pub profile: ProfileArg,
    /// The agent's project directory (default: the profile's [preflight].dir, else the
    /// working directory).
    #[arg(value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
    /// One JSON document instead of text.
    #[arg(long, conflicts_with = "sarif")]
    pub json: bool,
    /// SARIF 2.1.0, for code-scanning tools.
    #[arg(long)]
    pub sarif: bool,
    /// Also look for the declared values in the git history.
    #[arg(long)]
    pub history: bool,
}

#[derive(Debug, Args, Clone)]
pub struct LearnArgs {
    #[command(flatten)]
    pub profile: ProfileArg,
    /// Also write the proposed [sandbox] table to this file (never the profile itself).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
    /// The report as one JSON document (on stdout, after the command's own output).
    #[arg(long)]
    pub json: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
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

/// The run line checked before clap reads it, because `COMMAND` takes hyphen values and so
/// would swallow any mistake as the command's first word: an option agentrun does not know
/// before the command is an error (`unknown option`), a short option's attached value
/// (`-pNAME`, `-p=NAME`) is split off as clap expects it, and a first word within edit
/// distance 2 of a subcommand that is no executable (`chek`) is a typo. Everything after
/// `--`, and everything from the command's first word on, is left as it is. A line that
/// starts with a subcommand is clap's alone.
pub fn run_line(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    run_line_with(&cmd, args)
}

/// How a command line failed to parse.
pub enum ParseError {
    /// Refused by [`run_line`]: the message.
    Line(String),
    /// clap's own error (or `--help`, `--version`).
    Clap(clap::Error),
}

/// The command line checked by [`run_line`] and read by clap, with clap's command built
/// once for both (building it is most of what parsing costs a run's start).
pub fn parse(args: Vec<OsString>) -> Result<Cli, ParseError> {
    use clap::FromArgMatches;
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    let args = run_line_with(&cmd, args).map_err(ParseError::Line)?;
    let m = cmd
        .try_get_matches_from_mut(args)
        .map_err(ParseError::Clap)?;
    Cli::from_arg_matches(&m).map_err(|e| ParseError::Clap(e.format(&mut cmd)))
}

fn run_line_with(cmd: &clap::Command, args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let subcommands: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    let mut it = args.into_iter();
    let mut out: Vec<OsString> = it.next().into_iter().collect();
    let mut rest: Vec<OsString> = it.collect();
    if rest
        .first()
        .and_then(|a| a.to_str())
        .is_some_and(|a| subcommands.iter().any(|s| s == a))
    {
        out.append(&mut rest);
        return Ok(out);
    }
    let takes_value = |a: &clap::Arg| a.get_action().takes_values();
    let mut words = rest.into_iter();
    while let Some(word) = words.next() {
        let Some(w) = word.to_str().map(str::to_string) else {
            out.push(word);
            break;
        };
        if w == "--" || !w.starts_with('-') || w == "-" {
            if !w.starts_with('-')
                && let Some(near) = typo_of(&w, &subcommands)
            {
                return Err(format!(
                    "unknown command `{w}`, did you mean `{near}`? (to run a program called \
                     `{w}`, put it after `--`: agentrun -p P -- {w})"
                ));
            }
            out.push(word);
            break;
        }
        let unknown = || {
            format!(
                "unknown option `{w}`: agentrun's options come before the command (see \
                 `agentrun --help`); to pass it to the command, put it after `--`"
            )
        };
        if let Some(long) = w.strip_prefix("--") {
            let name = long.split('=').next().unwrap_or(long);
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(name))
                .ok_or_else(unknown)?;
            let value_follows = takes_value(arg) && !long.contains('=');
            out.push(word);
            if value_follows {
                out.extend(words.next());
            }
            continue;
        }
        // A cluster of short options; the first that takes a value takes the rest.
        for (i, c) in w[1..].char_indices() {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_short() == Some(c))
                .ok_or_else(unknown)?;
            out.push(format!("-{c}").into());
            if takes_value(arg) {
                let attached = &w[1 + i + c.len_utf8()..];
                match (attached, attached.strip_prefix('=').unwrap_or(attached)) {
                    // `-p=` with nothing after it (`-p=$P`, `$P` unset) is an empty value,
                    // never the next word (review 13b, F4).
                    ("=", _) => {
                        return Err(format!(
                            "`{w}`: the value of -{c} is empty (an unset variable?); give it, \
                             as `-{c} VALUE`"
                        ));
                    }
                    ("", _) => out.extend(words.next()),
                    (_, v) => out.push(v.into()),
                }
                break;
            }
        }
    }
    out.extend(words);
    Ok(out)
}

/// The subcommand `word` is a typo of: within edit distance 2 of one (not the name itself:
/// `agentrun -p t check` runs a program called `check`), and not a program that could be
/// run by that name (a path that exists, or an executable on `PATH`).
fn typo_of<'a>(word: &str, subcommands: &'a [String]) -> Option<&'a str> {
    let near = subcommands
        .iter()
        .map(|s| (strsim::levenshtein(word, s), s))
        .filter(|(d, _)| (1..=2).contains(d))
        // An exact subcommand name is never a typo of another (`run` is not `runs`).
        .filter(|_| !subcommands.iter().any(|s| s == word))
        .min_by_key(|(d, _)| *d)?
        .1;
    (!runnable(word)).then_some(near.as_str())
}

/// True when `word` names something a run could execute: a path that exists, or an
/// executable file of that name in a `PATH` directory.
fn runnable(word: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    if word.contains('/') {
        return std::path::Path::new(word).exists();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| {
        std::fs::metadata(d.join(word))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

#[cfg(test)]
mod tests {
    //! What the command line means, without the binary: `--` handling, the profile argument,
    //! subcommands, and the exit code `main.rs` gives a parse error (125 for a usage error,
    //! 0 for `--help`/`--version`).
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;
    use std::os::unix::ffi::OsStringExt;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("agentrun").chain(args.iter().copied()))
    }

    fn ok(args: &[&str]) -> Cli {
        parse(args).unwrap_or_else(|e| panic!("{args:?} does not parse: {e}"))
    }

    fn err(args: &[&str]) -> clap::Error {
        match parse(args) {
            Ok(c) => panic!("{args:?} parsed: {c:?}"),
            Err(e) => e,
        }
    }

    /// As `main.rs` maps a parse error to its exit code.
    fn exit_code(e: &clap::Error) -> u8 {
        if e.use_stderr() { 125 } else { 0 }
    }

    fn command(c: &Cli) -> Vec<&str> {
        c.run.command.iter().map(|a| a.to_str().unwrap()).collect()
    }

    /// The default command (no subcommand) with its profile and command.
    fn default_run(args: &[&str]) -> (Option<String>, Vec<String>) {
        let c = ok(args);
        assert!(c.command.is_none(), "{args:?}: {c:?}");
        let cmd = command(&c).into_iter().map(String::from).collect();
        (c.run.profile.profile, cmd)
    }

    #[test]
    fn the_clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn everything_after_double_dash_is_the_command() {
        let (p, cmd) = default_run(&["-p", "t", "--", "sh", "-c", "exit 7"]);
        assert_eq!(p.as_deref(), Some("t"));
        assert_eq!(cmd, ["sh", "-c", "exit 7"]);
        // Flags of agentrun's own after `--` belong to the command.
        let (_, cmd) = default_run(&["-p", "t", "--", "--tty", "never", "-p", "x", "--help"]);
        assert_eq!(cmd, ["--tty", "never", "-p", "x", "--help"]);
        // A second `--` is the command's.
        let (_, cmd) = default_run(&["-p", "t", "--", "env", "--", "x"]);
        assert_eq!(cmd, ["env", "--", "x"]);
    }

    #[test]
    fn without_double_dash_the_command_starts_at_the_first_word() {
        let (p, cmd) = default_run(&["-p", "t", "sh", "-c", "echo hi", "--tty", "never"]);
        assert_eq!(p.as_deref(), Some("t"));
        assert_eq!(cmd, ["sh", "-c", "echo hi", "--tty", "never"]);
    }

    #[test]
    fn no_command_parses_and_is_left_to_the_run() {
        let (_, cmd) = default_run(&["-p", "t"]);
        assert!(cmd.is_empty());
        let (_, cmd) = default_run(&["-p", "t", "--"]);
        assert!(cmd.is_empty());
    }

    #[test]
    fn a_command_argument_need_not_be_utf8() {
        let raw = std::ffi::OsString::from_vec(vec![b'a', 0xff, b'b']);
        let c = Cli::try_parse_from([
            std::ffi::OsString::from("agentrun"),
            "-p".into(),
            "t".into(),
            "--".into(),
            "printf".into(),
            raw.clone(),
        ])
        .unwrap();
        assert_eq!(c.run.command, [std::ffi::OsString::from("printf"), raw]);
    }

    /// A name and a path are both kept verbatim: the profile lookup, not the parser, tells
    /// them apart.
    #[test]
    fn the_profile_is_kept_verbatim_name_or_path() {
        for p in [
            "t",
            "t.toml",
            "./t.toml",
            "profiles/t.toml",
            "/etc/agentrun/t.toml",
        ] {
            assert_eq!(default_run(&["-p", p, "--", "true"]).0.as_deref(), Some(p));
            assert_eq!(
                default_run(&["--profile", p, "--", "true"]).0.as_deref(),
                Some(p)
            );
            let eq = format!("--profile={p}");
            assert_eq!(default_run(&[&eq, "--", "true"]).0.as_deref(), Some(p));
        }
    }

    #[test]
    fn run_options_are_read() {
        let c = ok(&[
            "--tty",
            "always",
            "--audit-log",
            "-",
            "--timeout",
            "90s",
            "--best-effort",
            "--unconfined",
            "--no-redact",
            "-q",
            "-v",
            "-p",
            "t",
            "--",
            "true",
        ]);
        let r = &c.run;
        assert_eq!(r.tty, Tty::Always);
        assert_eq!(r.audit_log.as_deref(), Some("-"));
        assert_eq!(r.timeout.as_deref(), Some("90s"));
        assert!(r.best_effort && r.unconfined && r.no_redact);
        assert!(r.profile.quiet && r.profile.verbose);
        let d = ok(&["-p", "t", "--", "true"]).run;
        assert_eq!(d.tty, Tty::Auto);
        assert!(d.audit_log.is_none() && d.timeout.is_none());
        assert!(!d.best_effort && !d.unconfined && !d.no_redact);
        assert!(!d.profile.quiet && !d.profile.verbose);
        assert_eq!(ok(&["--tty", "never", "-p", "t"]).run.tty, Tty::Never);
    }

    #[test]
    fn subcommands() {
        match ok(&["run", "-p", "t", "--", "sh", "-c", "x"]).command {
            Some(Command::Run(a)) => {
                assert_eq!(a.profile.profile.as_deref(), Some("t"));
                assert_eq!(a.command, ["sh", "-c", "x"]);
            }
            c => panic!("{c:?}"),
        }
        match ok(&["check", "-p", "./t.toml", "--json"]).command {
            Some(Command::Check(a)) => {
                assert_eq!(a.profile.profile.as_deref(), Some("./t.toml"));
                assert!(a.json);
                assert!(a.command.is_empty());
            }
            c => panic!("{c:?}"),
        }
        match ok(&["check", "-p", "t", "--", "python3", "-m", "x"]).command {
            Some(Command::Check(a)) => assert_eq!(a.command, ["python3", "-m", "x"]),
            c => panic!("{c:?}"),
        }
        match ok(&["learn", "-p", "t", "-o", "s.toml", "--", "sh", "-c", "x"]).command {
            Some(Command::Learn(a)) => {
                assert_eq!(a.command, ["sh", "-c", "x"]);
                assert_eq!(a.output.as_deref(), Some(std::path::Path::new("s.toml")));
            }
            c => panic!("{c:?}"),
        }
        match ok(&["explain", "--profile", "t", "-v"]).command {
            Some(Command::Explain(a)) => {
                assert!(!a.json);
                assert!(a.profile.verbose);
            }
            c => panic!("{c:?}"),
        }
        match ok(&["redact", "-p", "t", "-q"]).command {
            Some(Command::Redact(a)) => {
                assert_eq!(a.profile.as_deref(), Some("t"));
                assert!(a.quiet);
            }
            c => panic!("{c:?}"),
        }
        assert!(matches!(ok(&["profiles"]).command, Some(Command::Profiles)));
    }

    /// A word after the run's own flags is the command, even when it names a subcommand.
    #[test]
    fn a_subcommand_name_after_run_flags_is_the_command() {
        let (_, cmd) = default_run(&["-p", "t", "--", "check"]);
        assert_eq!(cmd, ["check"]);
        let (_, cmd) = default_run(&["-p", "t", "check"]);
        assert_eq!(cmd, ["check"]);
    }

    /// `COMMAND` takes hyphen values, so [`run_line`] reads the run line first: a flag
    /// agentrun does not know before the command is an error, and a short flag with its
    /// value attached (`-pt`, `-p=t`) is the profile. The command's own flags stay its own.
    #[test]
    fn on_the_run_line_an_unknown_flag_is_an_error_and_an_attached_value_is_the_profile() {
        let line = |args: &[&str]| {
            run_line(
                std::iter::once("agentrun")
                    .chain(args.iter().copied())
                    .map(OsString::from)
                    .collect(),
            )
        };
        let parsed = |args: &[&str]| {
            let c = Cli::try_parse_from(line(args).unwrap()).unwrap();
            assert!(c.command.is_none(), "{args:?}: {c:?}");
            let cmd: Vec<String> = command(&c).into_iter().map(String::from).collect();
            (c.run.profile.profile, cmd)
        };
        for bad in [&["--no-such-flag"][..], &["-p", "t", "-x", "y"], &["-qz"]] {
            let e = line(bad).unwrap_err();
            assert!(e.starts_with("unknown option `-"), "{bad:?}: {e}");
        }
        for attached in ["-pt", "-p=t"] {
            assert_eq!(
                parsed(&[attached, "--", "true"]),
                (Some("t".into()), vec!["true".into()]),
                "{attached}"
            );
        }
        assert_eq!(parsed(&["-qpt", "x"]).0.as_deref(), Some("t"));
        // `-p=` with an empty value never takes the next word (review 13b, F4).
        let e = line(&["-p=", "bash", "./agent.sh"]).unwrap_err();
        assert!(e.contains("the value of -p is empty"), "{e}");
        // An exact subcommand name after the flags is a program, not a typo (F5).
        assert_eq!(parsed(&["-p", "t", "run", "x"]).1, ["run", "x"]);
        assert_eq!(parsed(&["-q", "-p", "t", "runs"]).1, ["runs"]);
        assert_eq!(parsed(&["--profile=t", "x"]).0.as_deref(), Some("t"));
        // After `--`, and from the command's first word on, everything is the command's.
        assert_eq!(
            parsed(&["-p", "t", "--", "-x", "--no-such-flag"]).1,
            ["-x", "--no-such-flag"]
        );
        assert_eq!(
            parsed(&["-p", "t", "sh", "-c", "x", "--what"]).1,
            ["sh", "-c", "x", "--what"]
        );
        // A subcommand's line is clap's.
        assert_eq!(line(&["check", "--nope"]).unwrap().len(), 3);
        // A typo of a subcommand, unless it is a program or after `--`.
        let e = line(&["chek", "--profile", "x"]).unwrap_err();
        assert!(
            e.starts_with("unknown command `chek`, did you mean `check`?"),
            "{e}"
        );
        assert_eq!(parsed(&["-p", "t", "--", "chek"]).1, ["chek"]);
        assert_eq!(parsed(&["-p", "t", "check"]).1, ["check"]);
        assert_eq!(parsed(&["-p", "t", "mytool"]).1, ["mytool"]);
    }

    #[test]
    fn usage_errors_exit_125() {
        for (args, kind) in [
            (&["check", "--no-such-flag"][..], ErrorKind::UnknownArgument),
            (&["-p"][..], ErrorKind::InvalidValue),
            (
                &["--tty", "sometimes", "-p", "t"][..],
                ErrorKind::InvalidValue,
            ),
            (
                &["check", "-p", "t", "--tty", "always"][..],
                ErrorKind::UnknownArgument,
            ),
            (
                &["explain", "-p", "t", "--", "true"][..],
                ErrorKind::UnknownArgument,
            ),
            (
                &["learn", "-p", "t"][..],
                ErrorKind::MissingRequiredArgument,
            ),
            (&["profiles", "extra"][..], ErrorKind::UnknownArgument),
            (
                &["explain", "-p", "t", "--json=yes"][..],
                ErrorKind::TooManyValues,
            ),
        ] {
            let e = err(args);
            assert_eq!(e.kind(), kind, "{args:?}: {e}");
            assert_eq!(exit_code(&e), 125, "{args:?}: {e}");
        }
    }

    #[test]
    fn help_and_version_exit_0() {
        for args in [
            &["--help"][..],
            &["-h"][..],
            &["run", "--help"][..],
            &["check", "--help"][..],
            &["help"][..],
            &["help", "redact"][..],
        ] {
            let e = err(args);
            assert_eq!(e.kind(), ErrorKind::DisplayHelp, "{args:?}");
            assert_eq!(exit_code(&e), 0, "{args:?}");
        }
        let e = err(&["--version"]);
        assert_eq!(e.kind(), ErrorKind::DisplayVersion);
        assert_eq!(exit_code(&e), 0);
        assert!(e.to_string().contains(env!("CARGO_PKG_VERSION")), "{e}");
    }
}
