//! The commands: `run`, `check`, `explain`, `redact`, `profiles`.
//!
//! Each turns validated inputs into one pass through the pipeline:
//! profile -> fetch -> verify -> (sandbox, redactor) -> launch -> audit.

use crate::audit::{Audit, Sinks};
use crate::cli::{CheckArgs, Cli, Command, ProfileArg, RunArgs, Tty};
use crate::launch::{self, Injected, Launch, pump::Passthrough, pump::StreamFilter};
use crate::profile::{self, AuditSink, Inject, Profile, Resolve, SourceKind, search};
use crate::redact::{RedactStream, Redactor};
use crate::sandbox::{self, ChildNeeds, Mode, Policy};
use crate::secrets::{self, Context, Fetcher};
use crate::verify;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// A failure with its exit code and a message for the operator (never a value).
#[derive(Debug)]
pub struct Fail {
    pub code: u8,
    pub msg: String,
}

impl Fail {
    pub fn setup(msg: impl Into<String>) -> Fail {
        Fail {
            code: 125,
            msg: msg.into(),
        }
    }
}

impl<E: std::error::Error> From<E> for Fail {
    fn from(e: E) -> Fail {
        Fail::setup(e.to_string())
    }
}

/// A launch failure keeps its own exit code (126, 127, or 125 for a setup failure).
fn spawn_fail(e: &launch::spawn::SpawnError) -> Fail {
    Fail {
        code: e.exit_code(),
        msg: e.to_string(),
    }
}

/// Verbosity of agentrun's own messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Info,
    Debug,
}

/// agentrun's own stderr messages, prefixed `agentrun:`, through the redactor once the
/// secrets are known.
pub struct Say {
    level: Level,
    redactor: OnceLock<Pending>,
}

/// The run's redactor, built on its own thread (see [`redactor_in_background`]).
type Pending = &'static Building;

pub struct Building {
    /// The redactor, or why it could not be built.
    done: OnceLock<Result<&'static Redactor, String>>,
    /// Set by the first thing that needs it: the build stops holding back.
    wanted: Mutex<bool>,
    wake: Condvar,
}

/// How long the redactor thread holds back before building unasked. On a two-CPU machine a
/// build (a few ms of CPU) running beside a short child's start slowed that start by about
/// as much, whatever the thread's priority: a child that is done, or silent, within this
/// time never pays for it; output or a message before it starts the build at once (and
/// waits for it, as output always waited for a build in progress).
const HEAD_START: Duration = Duration::from_millis(10);

impl Building {
    /// The redactor (or why there is none), building it now if the thread is holding back.
    fn wait(&self) -> &Result<&'static Redactor, String> {
        if self.done.get().is_none() {
            *self.wanted.lock().unwrap_or_else(PoisonError::into_inner) = true;
            self.wake.notify_one();
        }
        self.done.wait()
    }
}

impl Say {
    pub fn new(p: &ProfileArg) -> Say {
        let level = if p.quiet {
            Level::Error
        } else if p.verbose {
            Level::Debug
        } else {
            Level::Info
        };
        Say {
            level,
            redactor: OnceLock::new(),
        }
    }

    /// From now on, messages pass through the redactor (waiting for it if need be).
    fn redact_with(&self, r: Pending) {
        let _ = self.redactor.set(r);
    }

    pub fn at(&self, level: Level, msg: &str) {
        if level > self.level {
            return;
        }
        // No `user:pass@` of any URL (a Vault address, an endpoint) in a message.
        let line = format!("agentrun: {}\n", crate::scrub::strip_userinfo(msg));
        let bytes = match self.redactor.get().map(|c| c.wait()) {
            Some(Ok(r)) => r.redact_bytes(line.as_bytes()),
            // No redactor (yet, or it failed): agentrun's messages name things, never values.
            _ => line.into_bytes(),
        };
        let _ = std::io::stderr().lock().write_all(&bytes);
    }
}

/// Entry point after hardening: dispatch and map the result to an exit code.
pub fn main(cli: Cli) -> u8 {
    let (result, say) = match cli.command {
        None => {
            let say = Say::new(&cli.run.profile);
            (run(cli.run, &say), say)
        }
        Some(Command::Run(a)) => {
            let say = Say::new(&a.profile);
            (run(a, &say), say)
        }
        Some(Command::Check(a)) => {
            let say = Say::new(&a.profile);
            (check(&a, &say), say)
        }
        Some(Command::Explain(a)) => {
            let say = Say::new(&a.profile);
            (explain(&a), say)
        }
        Some(Command::Redact(a)) => {
            let say = Say::new(&a);
            (redact(&a, &say), say)
        }
        Some(Command::Profiles) => (
            profiles(),
            Say {
                level: Level::Info,
                redactor: OnceLock::new(),
            },
        ),
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            say.at(Level::Error, &f.msg);
            f.code
        }
    }
}

/// The caller's environment, working directory and home, snapshotted once.
fn context() -> Result<Context, Fail> {
    let env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    let cwd = std::env::current_dir()
        .map_err(|e| Fail::setup(format!("cannot read the working directory: {e}")))?;
    let home = env
        .get(std::ffi::OsStr::new("HOME"))
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    Ok(Context { env, cwd, home })
}

fn load_profile(arg: &ProfileArg, ctx: &Context) -> Result<Profile, Fail> {
    let Some(p) = arg.profile.as_deref() else {
        return Err(Fail::setup(
            "no profile: pass --profile NAME (or a path), or set AGENTRUN_PROFILE",
        ));
    };
    let dirs = search_dirs(ctx);
    let path = search::find(p, &dirs, &ctx.cwd)?;
    let xdg_state = ctx.var("XDG_STATE_HOME").map(PathBuf::from);
    Ok(Profile::load(
        &path,
        &Resolve {
            cwd: &ctx.cwd,
            home: ctx.home.as_deref(),
            xdg_state_home: xdg_state.as_deref(),
        },
    )?)
}

/// `[vault]` and `[aws]` checked before anything is fetched, so a bad table is one clear
/// error naming the profile, not one per secret.
fn validate_backends(profile: &Profile, ctx: &Context) -> Result<(), Fail> {
    secrets::check_backends(profile, ctx)
        .map_err(|e| Fail::setup(format!("{}: {e}", profile.path.display())))
}

/// The sandbox policy, with the files agentrun reads credentials from kept from the child
/// like the credential stores under `$HOME` (a `.env` holds more than the declared key).
fn sandbox_policy(
    profile: &Profile,
    ctx: &Context,
    inputs: &secrets::CredentialInputs,
) -> Result<Policy, Fail> {
    let tmpdir = ctx.var("TMPDIR").map(PathBuf::from);
    let mut policy = Policy::resolve(
        profile.sandbox.as_ref(),
        &ctx.cwd,
        ctx.home.as_deref(),
        tmpdir.as_deref(),
    )
    .map_err(|e| Fail::setup(format!("{}: {e}", profile.path.display())))?;
    // The default `write` is refused in the home directory: the password database's too, so
    // that an unset or wrong `$HOME` does not make the real home writable.
    if policy.defaulted.contains(&"write")
        && ctx
            .homes()
            .iter()
            .any(|h| sandbox::normalize_path(h) == sandbox::normalize_path(&ctx.cwd))
    {
        let e = sandbox::SandboxError::DefaultPolicyAt {
            cwd: ctx.cwd.display().to_string(),
            what: "your home directory",
        };
        return Err(Fail::setup(format!("{}: {e}", profile.path.display())));
    }
    // No default write root (cwd, /tmp, $TMPDIR) may cover a home; explicit ones that do
    // keep the operator's start-up files there from the child. Compared as the kernel
    // resolves them (symlinks followed).
    let homes = ctx.homes();
    let real = |p: &std::path::Path| {
        std::fs::canonicalize(p).unwrap_or_else(|_| sandbox::normalize_path(p))
    };
    policy
        .refuse_default_write_over_homes(&homes, &real)
        .map_err(|e| Fail::setup(format!("{}: {e}", profile.path.display())))?;
    policy.protect_startup_files(&homes, &real);
    // uid 0 owns /etc/shadow and the like: the sandbox hides them from a root child in its
    // mount namespace (see `sandbox::isolate`).
    // The stores under every home (`$HOME` and the password database's) and the backends'
    // files are protected like the profile's own inputs.
    for p in inputs.paths.iter().chain(&inputs.stores) {
        if !policy.protected.contains(p) {
            policy.protected.push(p.clone());
        }
    }
    Ok(policy)
}

/// Say when keeping a credential file from the child costs it part of a directory it may
/// write: Landlock cannot grant a directory while denying one entry, so the directory's
/// other entries are granted one by one and the directory itself is not.
fn explain_kept_inputs(policy: &Policy, inputs: &secrets::CredentialInputs, say: &Say) {
    for p in &inputs.paths {
        if let Some(dir) = p.parent()
            && policy.write.iter().any(|w| w == dir)
        {
            say.at(
                Level::Info,
                &format!(
                    "{} holds credentials the profile does not declare: it is kept from the child, \
                     so {} cannot be listed and gets no new top-level entries (its files and \
                     subdirectories stay writable); move the file out of it, or keep only the declared keys in it",
                    p.display(),
                    dir.display()
                ),
            );
        }
    }
}

/// Every path a later run reads as configuration, secret or audit for this profile: the
/// profile file, the existing search directories and the profiles in them, the local
/// sources' files, the `[vault]` login files and CA bundle, the backends' files (see
/// [`secrets::startup_inputs`]), the audit log and its directory. The sandbox keeps those
/// inside a write root read-only for the child, so that no run can set up the next one.
/// (A directory that is itself a write root cannot be: its files listed here still are.)
pub fn startup_inputs(profile: &Profile, ctx: &Context, sink: &AuditSink) -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = search_dirs(ctx)
        .into_iter()
        .filter(|d| d.is_dir())
        .collect();
    let mut keep = secrets::startup_inputs(profile, ctx, &dirs);
    for d in &dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        keep.extend(
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml")),
        );
    }
    if let AuditSink::File(log) = sink {
        keep.push(log.clone());
        keep.extend(log.parent().map(PathBuf::from));
    }
    keep
}

/// agentrun's stdout and stderr when they are regular files (`agentrun ... > run.log`): the
/// child must reach them only through the redactor, never by opening them itself.
fn output_files() -> Vec<PathBuf> {
    use std::os::fd::AsFd;
    let out = std::io::stdout();
    let err = std::io::stderr();
    [out.as_fd(), err.as_fd()]
        .into_iter()
        .filter(|fd| {
            nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
        })
        .filter_map(|fd| {
            use std::os::fd::AsRawFd;
            std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
        })
        .filter(|p| p.is_absolute())
        .collect()
}

/// Files a later run would read if they existed, named by the operator's environment
/// (`$AGENTRUN_PROFILE_PATH`, the AWS and Google credential and config files, Vault's CA):
/// one that does not exist yet where the child may create it could be planted (an AWS
/// config's `credential_process` runs outside any sandbox), so the run is refused.
fn refuse_plantable(ctx: &Context, policy: &Policy) -> Result<(), String> {
    let mut named: Vec<(String, PathBuf)> = Vec::new();
    if let Some(list) = ctx.var_str("AGENTRUN_PROFILE_PATH") {
        for d in list.split(':').filter(|d| !d.is_empty()) {
            named.push(("AGENTRUN_PROFILE_PATH".into(), ctx.cwd.join(d)));
        }
    }
    for var in secrets::BACKEND_FILE_VARS
        .into_iter()
        .chain(["VAULT_CACERT"])
    {
        if let Some(v) = ctx.var_str(var).filter(|v| !v.is_empty()) {
            let path = secrets::source::resolve_path(v, &ctx.cwd, ctx.home.as_deref());
            named.push((var.into(), path));
        }
    }
    for (var, p) in named {
        if std::fs::symlink_metadata(&p).is_err()
            && let Some(root) = sandbox::writable_root_of(policy, &p)
        {
            return Err(format!(
                "${var} names {}, which does not exist and lies in {} where the child may \
                 write: it could create it for the next run; create it (it is then kept \
                 read-only), point ${var} elsewhere, or unset it",
                p.display(),
                root.display()
            ));
        }
    }
    Ok(())
}

fn search_dirs(ctx: &Context) -> Vec<PathBuf> {
    let xdg_config = ctx.var("XDG_CONFIG_HOME").map(PathBuf::from);
    search::search_path(
        ctx.var_str("AGENTRUN_PROFILE_PATH"),
        &ctx.cwd,
        xdg_config.as_deref(),
        ctx.home.as_deref(),
    )
}

/// One secret after fetch and verification.
struct Got {
    name: String,
    inject: Inject,
    value: SecretString,
}

/// The secrets stage: everything fetched at once, verified (a failed check refetches once),
/// reported per secret; only accepted values come out.
struct Secrets {
    got: Vec<Got>,
    /// Optional secrets fetched but left out (they failed their check): never handed over,
    /// but the child may still come across the value, so the redactor knows it.
    withheld: Vec<Got>,
    report: verify::SecretsCheck,
    errors: Vec<String>,
}

fn fetch_and_verify(profile: &Profile, ctx: &Context, audit: Option<&mut Audit>) -> Secrets {
    let fetcher = Fetcher::new(profile, ctx);
    let mut fetched = fetcher.fetch_all(&profile.secrets);
    let verifications = verify::verify_all(&fetcher, &profile.secrets, &mut fetched);
    let report = verify::summarize(&profile.secrets, &fetched, &verifications);
    let mut errors = Vec::new();
    let mut got = Vec::new();
    let mut withheld = Vec::new();
    for ((spec, f), r) in profile.secrets.iter().zip(fetched).zip(&report.secrets) {
        match f.value {
            Err(e) if spec.required => errors.push(format!(
                "secret {}: {} ({}): {e}",
                spec.name,
                spec.source_text,
                spec.source.kind()
            )),
            Ok(value) if r.verify.as_ref().is_none_or(verify::Verification::passed) => {
                got.push(Got {
                    name: spec.name.clone(),
                    inject: spec.inject,
                    value,
                })
            }
            // Optional and invalid: left out (the audit log says so), but redacted.
            Ok(value) => withheld.push(Got {
                name: spec.name.clone(),
                inject: spec.inject,
                value,
            }),
            // Optional and missing: left out.
            _ => {}
        }
    }
    if let Some(e) = verify::refusal(&verifications) {
        errors.push(e.to_string());
    }
    if let Some(audit) = audit {
        for r in &report.secrets {
            let mut outcome = json!(r.fetch);
            let accepted =
                r.fetch.is_ok() && r.verify.as_ref().is_none_or(verify::Verification::passed);
            if !r.required && !accepted {
                outcome["left_out"] = json!("optional");
            }
            audit.record(
                "secret",
                json!({"name": r.name, "source": r.kind, "location": r.source, "required": r.required,
                       "fetch": outcome, "duration_ms": ms(r.fetch_time)}),
            );
        }
        for v in &verifications {
            audit.record("verify", json!(v));
        }
    }
    Secrets {
        got,
        withheld,
        report,
        errors,
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn user_name(ctx: &Context) -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| ctx.var_str("USER").map(str::to_string))
        .unwrap_or_else(|| uid.to_string())
}

fn run(args: RunArgs, say: &Say) -> Result<u8, Fail> {
    // Before any thread exists: block the forwarded signals, become a subreaper.
    let signals = launch::supervise::prepare()
        .map_err(|e| Fail::setup(format!("cannot set up signal handling: {e}")))?;
    let ctx = context()?;
    if args.command.is_empty() {
        return Err(Fail::setup(
            "no command: write `agentrun --profile P -- COMMAND [ARGS]...`",
        ));
    }
    let profile = load_profile(&args.profile, &ctx)?;
    validate_backends(&profile, &ctx)?;
    let inputs = secrets::credential_inputs(&profile, &ctx);
    let policy = sandbox_policy(&profile, &ctx, &inputs)?;
    if !args.unconfined {
        explain_kept_inputs(&policy, &inputs, say);
    }
    let mode = if args.unconfined {
        Mode::Unconfined
    } else if args.best_effort {
        Mode::BestEffort
    } else {
        Mode::Enforce
    };
    let timeout = match &args.timeout {
        Some(t) => Some(profile::limits::parse_duration("--timeout", t).map_err(Fail::setup)?),
        None => profile.limits.timeout,
    };
    let sinks = audit_sinks(&profile, args.audit_log.as_deref(), &ctx).map_err(Fail::setup)?;
    let mut audit = Audit::open(&sinks)?;
    let argv0 = args.command[0].to_string_lossy().into_owned();
    audit.record(
        "start",
        json!({
            "profile": profile.path, "profile_sha256": profile.sha256, "user": user_name(&ctx),
            "argv0": argv0, "cwd": ctx.cwd, "pid": std::process::id(),
            "operator": {"best_effort": args.best_effort, "unconfined": args.unconfined, "no_redact": args.no_redact},
        }),
    );
    // A fetch from a server or a live probe can take seconds (or hang until its timeout):
    // the log shows the run started before it. Local sources take microseconds, and their
    // `start` goes out with the rest before the spawn, in one locked append.
    if profile
        .secrets
        .iter()
        .any(|s| s.source.is_remote() || s.verify.probe.is_some())
    {
        audit.flush()?;
    }
    let fail = |audit: &mut Audit, f: Fail| -> Fail {
        let _ = audit.event("refused", json!({"reason": f.msg}));
        f
    };

    let Secrets {
        got,
        errors,
        withheld,
        ..
    } = fetch_and_verify(&profile, &ctx, Some(&mut audit));
    if !errors.is_empty() {
        return Err(fail(&mut audit, Fail::setup(errors.join("\nagentrun: "))));
    }
    let redactor = if args.no_redact {
        say.at(
            Level::Info,
            "--no-redact: the child's output passes unfiltered",
        );
        None
    } else {
        match redactor_in_background(&profile, &got, &withheld) {
            Ok(r) => Some(r),
            Err(f) => return Err(fail(&mut audit, f)),
        }
    };
    let (redactor, mut build) = match redactor {
        Some((pending, build)) => (Some(pending), Some(build)),
        None => (None, None),
    };

    let base = launch::env::base(&profile, &ctx.env, &inputs.env_names);
    for d in &base.dropped {
        say.at(
            Level::Debug,
            &format!("not passing {d}: it looks like a credential (declare it under [secrets])"),
        );
    }
    let tty = match args.tty {
        Tty::Always => true,
        Tty::Never => false,
        Tty::Auto => nix::unistd::isatty(std::io::stdout()).unwrap_or(false),
    };
    let mut launch = Launch {
        argv: &args.command,
        base_env: base.vars,
        secrets: got
            .iter()
            .map(|g| Injected {
                name: &g.name,
                value: &g.value,
                inject: g.inject,
            })
            .collect(),
        cwd: &ctx.cwd,
        limits: &profile.limits,
        timeout,
        tty: None,
        confine: None,
    };
    let program = match launch::resolve(&launch) {
        Ok(p) => p,
        Err(e) => return Err(fail(&mut audit, spawn_fail(&e))),
    };
    if tty {
        let pty = launch::tty::Pty::open()
            .map_err(|e| Fail::setup(format!("cannot open a pseudo-terminal: {e}")))?;
        launch.tty = Some(pty);
    }
    let needs = ChildNeeds {
        program: program.clone(),
        extra_read: Vec::new(),
        tty: launch.tty.as_ref().and_then(|t| t.slave_path()),
    };
    let mut keep = startup_inputs(&profile, &ctx, &sinks.log);
    if mode != Mode::Unconfined {
        // agentrun's own output files: the child writes there only through the redactor.
        keep.extend(output_files());
        if let Err(e) = refuse_plantable(&ctx, &policy) {
            return Err(fail(&mut audit, Fail::setup(e)));
        }
    }
    let prepared = match sandbox::prepare(&policy, &needs, mode, &keep, &ctx.cwd) {
        Ok(p) => p,
        Err(e) => return Err(fail(&mut audit, Fail::setup(e.to_string()))),
    };
    let report = prepared.report();
    if mode != Mode::Enforce {
        for n in &report.notes {
            say.at(Level::Info, &format!("sandbox: {n}"));
        }
    } else if !report.pid_namespace.available {
        // Not a refusal (the contract asks for it only where agentrun can), but the
        // operator should know that a SIGKILL of agentrun may leave descendants behind.
        say.at(
            Level::Info,
            &format!(
                "no PID namespace ({}): if agentrun is SIGKILLed, processes the child detached may survive",
                report.pid_namespace.how
            ),
        );
    }
    audit.record("sandbox", json!(report));
    // Everything before the spawn reaches the log before the child starts.
    audit.flush()?;
    launch.confine = Some(std::sync::Arc::new(prepared));
    let start = Instant::now();
    let make_filter = || -> Box<dyn StreamFilter + '_> {
        match redactor {
            Some(r) => Box::new(LazyRedact {
                pending: r,
                stream: None,
                failed: false,
            }),
            None => Box::new(Passthrough),
        }
    };
    let mut audit_err = None;
    let ran = launch::run(
        launch,
        program.clone(),
        &signals,
        &make_filter,
        &mut |pid| {
            // The child is on its way: build the redactor now, beside it, not before it.
            if let Some(b) = build.take() {
                // From here on agentrun's own messages wait for it too (before, they hold
                // no values and must not wait for a build that has not started).
                say.redact_with(b.start());
            }
            // Not waiting for the log's lock: whoever holds it must not hold up the child's
            // supervision (the event then goes out with `exit`).
            audit.record("spawn", json!({"pid": pid, "program": program, "tty": tty}));
            if let Err(e) = audit.flush_if_free() {
                audit_err = Some(e);
            }
        },
    );
    let ran = match ran {
        Ok(r) => r,
        Err(e) => return Err(fail(&mut audit, spawn_fail(&e))),
    };
    if let Some(e) = audit_err {
        say.at(Level::Error, &e.to_string());
    }
    let o = &ran.outcome;
    let code = if o.timed_out {
        124
    } else {
        o.ending.exit_code()
    };
    let mut redactions = ran.stdout.counts.clone();
    for (k, v) in &ran.stderr.counts {
        *redactions.entry(k.clone()).or_default() += v;
    }
    let (exit_code, signal) = match o.ending {
        launch::supervise::Ending::Exited(c) => (Some(c), None),
        launch::supervise::Ending::Signaled(s) => (None, Some(s)),
    };
    if o.timed_out {
        say.at(
            Level::Info,
            &format!(
                "time limit of {} ran out: stopped the child",
                humantime::format_duration(timeout.unwrap_or_default())
            ),
        );
    }
    audit.event(
        "exit",
        json!({
            "pid": ran.pid, "code": exit_code, "signal": signal, "timed_out": o.timed_out, "exit_status": code,
            "duration_ms": ms(start.elapsed()), "forwarded_signals": o.forwarded,
            "killed_descendants": o.killed_descendants, "redactions": redactions,
            "bytes": {"stdout": ran.stdout.bytes_in, "stderr": ran.stderr.bytes_in},
        }),
    )?;
    Ok(code)
}

fn check(args: &CheckArgs, say: &Say) -> Result<u8, Fail> {
    let ctx = context()?;
    let profile = load_profile(&args.profile, &ctx)?;
    validate_backends(&profile, &ctx)?;
    let inputs = secrets::credential_inputs(&profile, &ctx);
    let policy = sandbox_policy(&profile, &ctx, &inputs)?;
    let Secrets {
        got,
        report,
        mut errors,
        ..
    } = fetch_and_verify(&profile, &ctx, None);
    // Everything else a run does before the spawn, so that 0 here means a run would start.
    if errors.is_empty()
        && let Err(f) = build_redactor(&profile, &got, &[])
    {
        errors.push(f.msg);
    }
    // Checked as a run would open it, but nothing is created, opened for writing or
    // changed: `check` starts nothing, so it writes nothing.
    match audit_sinks(&profile, None, &ctx) {
        Ok(sinks) => {
            if let Err(e) = Audit::inspect(&sinks) {
                errors.push(e.to_string());
            }
        }
        Err(e) => errors.push(e),
    }
    let kernel = sandbox::kernel_report(&policy);
    if !kernel.enforce_ok {
        errors.push(format!(
            "sandbox: this kernel cannot enforce the profile: {} (a run needs --best-effort)",
            kernel.missing.join("; ")
        ));
    } else {
        let needs = ChildNeeds {
            program: PathBuf::from("/bin/sh"),
            extra_read: Vec::new(),
            tty: None,
        };
        let log =
            audit_sinks(&profile, None, &ctx).map_or_else(|_| profile.audit.clone(), |s| s.log);
        let keep = startup_inputs(&profile, &ctx, &log);
        if let Err(e) = refuse_plantable(&ctx, &policy) {
            errors.push(e);
        }
        if let Err(e) = sandbox::prepare(&policy, &needs, Mode::Enforce, &keep, &ctx.cwd) {
            errors.push(e.to_string());
        }
    }
    let ok = errors.is_empty();
    if args.json {
        let mut doc = json!({"profile": profile.path, "ok": ok, "secrets": report.secrets, "sandbox": kernel, "errors": errors});
        crate::scrub::strip_userinfo_json(&mut doc);
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        // Fetch errors can quote an address: print every line without `user:pass@`.
        macro_rules! println {
            ($($t:tt)*) => { std::println!("{}", crate::scrub::strip_userinfo(&format!($($t)*))) };
        }
        println!("profile  {}  ok", profile.path.display());
        for r in &report.secrets {
            let mark = if r.ok { "ok" } else { "FAILED" };
            let fetch = match &r.fetch {
                verify::Outcome::Ok => "ok".to_string(),
                verify::Outcome::Failed(e) => e.clone(),
            };
            let checked = match &r.verify {
                None => "-".to_string(),
                Some(v) if v.passed() => format!("ok ({} attempt(s))", v.attempts.len()),
                Some(v) => v.reason(),
            };
            println!(
                "secret   {:<24} {}  fetch {fetch} ({:.1} ms)  verify {checked}  {mark}",
                r.name,
                r.source,
                ms(r.fetch_time)
            );
        }
        let w = &kernel.would_enforce;
        println!(
            "sandbox  landlock ABI {} (rules pinned to {}): fs {:?}, net {:?}, scope {:?}; seccomp {:?}; capabilities dropped",
            kernel.landlock_abi.unwrap_or(0),
            w.pinned_abi,
            w.fs,
            w.net,
            w.scope,
            w.seccomp
        );
        println!(
            "pid ns   {} ({})",
            if kernel.pid_namespace.available {
                "available"
            } else {
                "unavailable"
            },
            kernel.pid_namespace.how
        );
        for e in &errors {
            say.at(Level::Error, e);
        }
        println!(
            "{}",
            if ok {
                "ready: a run would start"
            } else {
                "not ready: a run would refuse to start"
            }
        );
    }
    Ok(if ok { 0 } else { 1 })
}

fn explain(args: &CheckArgs) -> Result<u8, Fail> {
    let ctx = context()?;
    let profile = load_profile(&args.profile, &ctx)?;
    let inputs = secrets::credential_inputs(&profile, &ctx);
    let policy = sandbox_policy(&profile, &ctx, &inputs)?;
    let denied = sandbox::denied_syscalls(&policy);
    let log = audit_sinks(&profile, None, &ctx).map_or_else(|_| profile.audit.clone(), |s| s.log);
    let keep = startup_inputs(&profile, &ctx, &log);
    let isolation = sandbox::isolation_report(&policy, &keep, &ctx.cwd)
        .map_err(|e| Fail::setup(e.to_string()))?;
    let base = launch::env::base(&profile, &ctx.env, &inputs.env_names);
    let mut env_names: Vec<String> = base
        .vars
        .keys()
        .map(|k| k.to_string_lossy().into_owned())
        .collect();
    env_names.extend(profile.secrets.iter().map(|s| s.name.clone()));
    env_names.sort();
    let secrets: Vec<_> = profile
        .secrets
        .iter()
        .map(|s| {
            json!({
                "name": s.name, "from": s.source_text, "source": s.source, "as": s.inject, "required": s.required,
                "verify": s.verify.section,
            })
        })
        .collect();
    let doc = json!({
        "profile": profile.path,
        "sha256": profile.sha256,
        "description": profile.description,
        "env": {"pass": profile.pass, "set": profile.set.keys().collect::<Vec<_>>(), "child_names": env_names, "dropped": base.dropped},
        "secrets": secrets,
        "sandbox": {"policy": policy, "denied_syscalls": denied, "isolation": isolation},
        "redact": {
            "replacement": profile.redact.replacement,
            "rules": profile.redact.rules,
            "patterns": profile.redact.patterns,
            "builtin_rules": crate::redact::builtin_rules().iter().map(|(id, what)| json!({"id": id, "what": what})).collect::<Vec<_>>(),
        },
        "audit": profile.audit,
        "audit_journald": profile.audit_journald,
        "limits": profile.limits,
        "vault": vault_shown(profile.vault.as_ref()),
        "aws": profile.aws,
    });
    // No `user:pass@` of an address or endpoint.
    let mut doc = doc;
    crate::scrub::strip_userinfo_json(&mut doc);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        // As TOML, the profile's own language; TOML has no null, so unset keys are left out.
        let doc = without_nulls(doc);
        match toml::to_string_pretty(&doc) {
            Ok(text) => print!("{text}"),
            Err(_) => println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default()),
        }
    }
    Ok(0)
}

fn without_nulls(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

fn redact(args: &ProfileArg, say: &Say) -> Result<u8, Fail> {
    let ctx = context()?;
    let profile = load_profile(args, &ctx)?;
    let Secrets {
        got,
        errors,
        withheld,
        ..
    } = fetch_and_verify(&profile, &ctx, None);
    if !errors.is_empty() {
        return Err(Fail::setup(errors.join("\nagentrun: ")));
    }
    let redactor = build_redactor(&profile, &got, &withheld)?;
    let input = std::fs::File::from(std::io::stdin().lock().as_fd_owned()?);
    let output = std::fs::File::from(std::io::stdout().lock().as_fd_owned()?);
    let stats = launch::pump::pump(input, output, Box::new(redactor.stream()));
    for (name, n) in &stats.counts {
        say.at(Level::Debug, &format!("redacted {name}: {n}"));
    }
    match stats.error {
        Some(e) => Err(Fail::setup(format!("redact: {e}"))),
        None => Ok(0),
    }
}

/// The run's redactor: every accepted secret value plus the profile's rules and patterns.
/// A secret too short to redact without mangling all output stops the run.
fn build_redactor(profile: &Profile, got: &[Got], withheld: &[Got]) -> Result<Redactor, Fail> {
    refuse_too_short(got)?;
    let pairs: Vec<(&str, &SecretString)> = got
        .iter()
        .chain(redactable(withheld))
        .map(|g| (g.name.as_str(), &g.value))
        .collect();
    new_redactor(&profile.redact, &profile.path, &pairs).map_err(Fail::setup)
}

/// `Redactor::new`, its error naming the profile.
fn new_redactor(
    section: &crate::redact::RedactSection,
    path: &std::path::Path,
    pairs: &[(&str, &SecretString)],
) -> Result<Redactor, String> {
    Redactor::new(section, pairs).map_err(|e| format!("{}: {e}", path.display()))
}

fn refuse_too_short(got: &[Got]) -> Result<(), Fail> {
    match got
        .iter()
        .find(|g| g.value.expose_secret().len() < crate::redact::MIN_SECRET_LEN)
    {
        Some(g) => Err(Fail::setup(format!(
            "secret {} is shorter than {} characters: it cannot be redacted without mangling \
             all output; use a real credential, or pass --no-redact (operator only)",
            g.name,
            crate::redact::MIN_SECRET_LEN
        ))),
        None => Ok(()),
    }
}

/// Build the run's redactor on its own thread, started once the child is spawned and
/// building when first needed or after [`HEAD_START`], so that compiling its automata (a few
/// milliseconds) never delays the child's start. Output and messages wait for it only when
/// there is something to redact; a child that prints nothing never waits. It lives until the
/// process ends (leaked once per run, on purpose).
fn redactor_in_background(
    profile: &Profile,
    got: &[Got],
    withheld: &[Got],
) -> Result<(Pending, Build), Fail> {
    refuse_too_short(got)?;
    let cell: Pending = Box::leak(Box::new(Building {
        done: OnceLock::new(),
        wanted: Mutex::new(false),
        wake: Condvar::new(),
    }));
    let build = Build {
        cell,
        section: profile.redact.clone(),
        path: profile.path.clone(),
        secrets: got
            .iter()
            .chain(redactable(withheld))
            .map(|g| (g.name.clone(), g.value.clone()))
            .collect(),
    };
    Ok((cell, build))
}

/// The left-out values long enough to redact (a short one cannot be, and is not handed over).
fn redactable(withheld: &[Got]) -> impl Iterator<Item = &Got> {
    withheld
        .iter()
        .filter(|g| g.value.expose_secret().len() >= crate::redact::MIN_SECRET_LEN)
}

/// What the redactor thread needs; [`Build::start`] moves it there.
struct Build {
    cell: Pending,
    section: crate::redact::RedactSection,
    path: PathBuf,
    secrets: Vec<(String, SecretString)>,
}

impl Build {
    fn start(self) -> Pending {
        let cell = self.cell;
        let spawned = std::thread::Builder::new()
            .name("redactor".into())
            .spawn(move || {
                let held = self
                    .cell
                    .wanted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                drop(
                    self.cell
                        .wake
                        .wait_timeout_while(held, HEAD_START, |wanted| !*wanted),
                );
                let pairs: Vec<(&str, &SecretString)> =
                    self.secrets.iter().map(|(n, v)| (n.as_str(), v)).collect();
                // A panic here must not leave output waiting forever: it is an error too.
                let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    new_redactor(&self.section, &self.path, &pairs)
                        .map(|r| &*Box::leak(Box::new(r)))
                }))
                .unwrap_or_else(|_| Err("the redactor's build panicked".to_owned()));
                let _ = self.cell.done.set(built);
            });
        if let Err(e) = spawned {
            // Fail closed: output is withheld, never passed raw.
            let _ = cell
                .done
                .set(Err(format!("cannot start the redactor thread: {e}")));
        }
        cell
    }
}

/// The pump's filter while the redactor may still be building: the first bytes wait for
/// it. If it could not be built, output is withheld (fail closed), never passed raw.
struct LazyRedact {
    pending: Pending,
    stream: Option<RedactStream<'static>>,
    failed: bool,
}

impl LazyRedact {
    fn ready(&mut self, out: &mut Vec<u8>) -> Option<&mut RedactStream<'static>> {
        if self.stream.is_none() && !self.failed {
            match self.pending.wait() {
                Ok(r) => self.stream = Some(r.stream()),
                Err(e) => {
                    self.failed = true;
                    out.extend_from_slice(
                        format!(
                            "[agentrun: output withheld: the redactor could not be built: {e}]\n"
                        )
                        .as_bytes(),
                    );
                }
            }
        }
        self.stream.as_mut()
    }
}

impl StreamFilter for LazyRedact {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if let Some(s) = self.ready(out) {
            s.push(input, out);
        }
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(s) = self.stream.as_mut() {
            s.finish(out);
        }
    }
    fn counts(&self) -> BTreeMap<String, u64> {
        self.stream
            .as_ref()
            .map(|s| s.counts().clone())
            .unwrap_or_default()
    }
}

/// The redactor is the pump's filter.
impl StreamFilter for RedactStream<'_> {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        RedactStream::push(self, input, out)
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        RedactStream::finish(self, out)
    }
    fn counts(&self) -> BTreeMap<String, u64> {
        RedactStream::counts(self).clone()
    }
}

trait AsFdOwned {
    fn as_fd_owned(&self) -> std::io::Result<std::os::fd::OwnedFd>;
}

impl<T: std::os::fd::AsFd> AsFdOwned for T {
    fn as_fd_owned(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        self.as_fd().try_clone_to_owned()
    }
}

fn profiles() -> Result<u8, Fail> {
    let ctx = context()?;
    let dirs = search_dirs(&ctx);
    let found = search::list(&dirs);
    if found.is_empty() {
        let looked: Vec<String> = dirs
            .iter()
            .map(|d| search::printable(&d.display().to_string()))
            .collect();
        println!("no profiles found; searched {}", looked.join(", "));
    }
    // Names come from directory listings a child may have written to: escaped.
    for (name, path, shadowed) in found {
        let note = if shadowed {
            "  (shadowed by an earlier one)"
        } else {
            ""
        };
        let name = search::printable(&name);
        let path = search::printable(&path.display().to_string());
        println!("{name:<20} {path}{note}");
    }
    Ok(0)
}

/// The audit sinks of a run: the operator's (`--audit-log`, else `$AGENTRUN_AUDIT_LOG`),
/// else the profile's, which must lie under agentrun's state directory: a profile must
/// never make agentrun write to a file that is not an agentrun audit log (a `~/.bashrc`
/// appended to with attacker-chosen text runs as shell code), and only the operator can
/// loosen that (contract, section 8).
fn audit_sinks(profile: &Profile, operator: Option<&str>, ctx: &Context) -> Result<Sinks, String> {
    let operator = operator
        .map(str::to_string)
        .or_else(|| ctx.var_str("AGENTRUN_AUDIT_LOG").map(str::to_string))
        .filter(|l| !l.is_empty());
    let log = match operator.as_deref() {
        Some("-") => AuditSink::Stderr,
        Some("journald") => AuditSink::Journald,
        Some(p) => AuditSink::File(secrets::source::resolve_path(
            p,
            &ctx.cwd,
            ctx.home.as_deref(),
        )),
        None => match &profile.audit {
            AuditSink::File(p) if !profile::inside_state_dir(p, &profile.state_dir) => {
                return Err(format!(
                    "{}: [audit] log = {} is outside agentrun's state directory {}: a profile may \
                     keep its audit log only there (it must not make agentrun write to any other \
                     file); name a file under {}, or, as the operator, pass --audit-log PATH or \
                     set AGENTRUN_AUDIT_LOG",
                    profile.path.display(),
                    p.display(),
                    profile.state_dir.display(),
                    profile.state_dir.display()
                ));
            }
            AuditSink::File(p) => {
                if let Some(link) = link_below(&profile.state_dir, p) {
                    return Err(format!(
                        "{}: [audit] log = {}: {} is a symbolic link: a profile's log must be a \
                         file in agentrun's state directory {}, not reached through a link \
                         (it could lead anywhere); remove the link, or, as the operator, pass \
                         --audit-log PATH",
                        profile.path.display(),
                        p.display(),
                        link.display(),
                        profile.state_dir.display()
                    ));
                }
                AuditSink::File(p.clone())
            }
            other => other.clone(),
        },
    };
    Ok(Sinks {
        log,
        journald: profile.audit_journald,
        journal_socket: ctx
            .var("AGENTRUN_JOURNAL_SOCKET")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from),
    })
}

/// `[vault]` for `explain`: the keys that carry a credential (`token`, `role_id`,
/// `secret_id`, `jwt`) show only that they are set and their source's kind, never the text
/// (it may be a credential pasted in the wrong place).
fn vault_shown(vault: Option<&crate::secrets::vault::VaultSection>) -> serde_json::Value {
    let Some(v) = vault else {
        return serde_json::Value::Null;
    };
    let mut doc = json!(v);
    if let Some(m) = doc.as_object_mut() {
        for key in ["token", "role_id", "secret_id", "jwt"] {
            if let Some(serde_json::Value::String(text)) = m.get(key) {
                let shown = credential_shown(text);
                m.insert(key.into(), json!(shown));
            }
        }
    }
    doc
}

/// "set" and the kind of source a credential key names; never its text.
fn credential_shown(text: &str) -> String {
    let kind = match text.split_once(':') {
        Some((scheme, _)) if SourceKind::from_scheme(scheme).is_some_and(|k| !k.is_remote()) => {
            format!("a {scheme}: source")
        }
        _ if text.starts_with(['/', '~', '.']) => "a file path".to_string(),
        _ => "not a source (a literal value?)".to_string(),
    };
    format!("(set: {kind}; not shown)")
}

/// The first symbolic link among the existing directories between `state_dir` and `log`
/// (the log itself is opened with `O_NOFOLLOW`): a link there would take a profile's log
/// out of the state directory, to a file a shell reads, say.
fn link_below(state_dir: &std::path::Path, log: &std::path::Path) -> Option<PathBuf> {
    let rest = log.strip_prefix(state_dir).ok()?;
    let mut at = state_dir.to_path_buf();
    let mut parts: Vec<_> = rest.components().collect();
    parts.pop();
    for c in parts {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => return Some(at),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}
