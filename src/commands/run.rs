//! `agentrun run`: one pass through the pipeline for one child.
//!
//! The arguments become a checked [`Plan`] once (ripgrep's low args -> high args); then
//! [`run`] is a list of named phases over it, in the order they happen: open the audit
//! log, fetch and verify, prepare the redactor, build the launch, confine it, run it,
//! report. From the audit log's opening on, a phase that stops the run logs `refused`
//! with the message the operator sees.

use super::broker::{self, BrokerPlan};
use super::fetch::{self, Got, Secrets};
use super::plan;
use super::{Fail, Level, Say};
use crate::audit::{Audit, Sinks, events};
use crate::cli::{RunArgs, Tty};
use crate::context::Context;
use crate::launch::redactor::{Build, LazyRedact};
use crate::launch::{self, Launch, Ran, pump::Passthrough, pump::StreamFilter};
use crate::profile::{self, AuditSink, Profile};
use crate::sandbox::{self, ChildNeeds, Mode, Policy};
use crate::secrets;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What a run will do, resolved and checked once from the arguments and the environment.
/// Later phases read it and never re-validate.
pub struct Plan {
    pub args: RunArgs,
    pub ctx: Context,
    pub profile: Profile,
    /// The files and variables the profile's sources read credentials from.
    pub inputs: secrets::CredentialInputs,
    pub policy: Policy,
    pub mode: Mode,
    pub timeout: Option<Duration>,
    pub sinks: Sinks,
    /// The child gets a pseudo-terminal.
    pub tty: bool,
    /// The credential broker, when the profile has one.
    pub broker: Option<BrokerPlan>,
}

impl Plan {
    /// Snapshot the caller's context, load the profile, check its backends, resolve the
    /// sandbox policy, the time limit and the audit sinks.
    pub fn resolve(args: RunArgs, say: &Say) -> Result<Plan, Fail> {
        let ctx = plan::context()?;
        if args.command.is_empty() {
            return Err(Fail::setup(
                "no command: write `agentrun --profile P -- COMMAND [ARGS]...`",
            ));
        }
        let profile = plan::load_profile(&args.profile, &ctx)?;
        plan::validate_backends(&profile, &ctx)?;
        let broker = broker::plan(&profile, args.unconfined)?;
        let inputs = secrets::credential_inputs(&profile, &ctx);
        let mut policy = plan::sandbox_policy(&profile, &ctx, &inputs)?;
        policy.broker_port = broker.as_ref().map(|b| b.port);
        if !args.unconfined {
            plan::explain_kept_inputs(&policy, &inputs, say);
        }
        let mode = if args.unconfined {
            Mode::Unconfined
        } else if args.best_effort {
            Mode::BestEffort
        } else {
            Mode::Enforce
        };
        let timeout = match &args.timeout {
            Some(t) => Some(
                profile::parse_duration("--timeout", t, profile::DurationKind::Limit)
                    .map_err(Fail::setup)?,
            ),
            None => profile.limits.timeout,
        };
        let sinks =
            plan::audit_sinks(&profile, args.audit_log.as_deref(), &ctx).map_err(Fail::setup)?;
        if let AuditSink::File(log) = &sinks.log {
            policy.hidden.push(log.clone());
        }
        // Every run's child, broker or not: another run's child must not rename or stand
        // in for a broker's socket (review 11d, B).
        policy.hidden.push(broker::control_dir());
        let tty = match args.tty {
            Tty::Always => true,
            Tty::Never => false,
            Tty::Auto => nix::unistd::isatty(std::io::stdout()).unwrap_or(false),
        };
        Ok(Plan {
            args,
            ctx,
            profile,
            inputs,
            policy,
            mode,
            timeout,
            sinks,
            tty,
            broker,
        })
    }
}

/// The run: the phases in order.
pub fn run(args: RunArgs, say: &Say) -> Result<u8, Fail> {
    // Before any thread exists: block the forwarded signals, become a subreaper.
    let signals = launch::supervise::prepare()
        .map_err(|e| Fail::setup(format!("cannot set up signal handling: {e}")))?;
    let plan = Plan::resolve(args, say)?;
    let mut audit = open_audit(&plan)?;
    let mut secrets = fetch_and_verify(&plan, &mut audit).map_err(|f| refused(&mut audit, f))?;
    preflight_gate(&plan, &secrets, &mut audit, say).map_err(|f| refused(&mut audit, f))?;
    let redactor = prepare_redactor(&plan, &secrets, say).map_err(|f| refused(&mut audit, f))?;
    let brokered = prepare_broker(&plan, &mut secrets.got, redactor.as_ref())
        .map_err(|f| refused(&mut audit, f))?;
    let (mut launch, program) = build_launch(&plan, &secrets.got, brokered.as_ref(), say)
        .map_err(|f| refused(&mut audit, f))?;
    attach_tty(&plan, &mut launch)?;
    confine(
        &plan,
        &mut launch,
        &program,
        brokered.as_ref(),
        &mut audit,
        say,
    )?;
    let start = Instant::now();
    let (ran, stopped) = supervise(
        &plan, launch, program, redactor, brokered, signals, &mut audit, say,
    )
    .map_err(|f| refused(&mut audit, f))?;
    report(&plan, &ran, stopped, start, &mut audit, say)
}

/// Log that the run stopped, with the operator's message, and pass the failure on.
fn refused(audit: &mut Audit, f: Fail) -> Fail {
    let _ = audit.event(&events::Refused { reason: &f.msg });
    f
}

/// Open the audit log and record `start`. A fetch from a server or a live probe can take
/// seconds (or hang until its timeout): the log then shows the run started before it.
/// Local sources take microseconds, and their `start` goes out with the rest before the
/// spawn, in one locked append.
fn open_audit(plan: &Plan) -> Result<Audit, Fail> {
    let Plan {
        args, ctx, profile, ..
    } = plan;
    let mut audit = Audit::open(&plan.sinks).map_err(|e| {
        let mut f = Fail::from(e);
        // The operator's path, as written (a profile's log lies in the state directory).
        let written = args
            .audit_log
            .as_deref()
            .or_else(|| ctx.var_str("AGENTRUN_AUDIT_LOG"))
            .filter(|l| !matches!(*l, "" | "-" | "journald"));
        if let Some(n) = written.and_then(|w| profile::source::relative_note(w, &ctx.cwd)) {
            f.msg.push_str(&format!(" ({n})"));
        }
        f
    })?;
    let argv0 = args.command[0].to_string_lossy().into_owned();
    audit.record(&events::Start {
        profile: &profile.path,
        profile_sha256: &profile.sha256,
        user: &plan::user_name(ctx),
        argv0: &argv0,
        cwd: &ctx.cwd,
        pid: std::process::id(),
        operator: events::Operator {
            best_effort: args.best_effort,
            unconfined: args.unconfined,
            no_redact: args.no_redact,
        },
    });
    if profile
        .secrets
        .iter()
        .any(|s| s.source.is_remote() || s.verify.probe.is_some())
    {
        audit.flush()?;
    }
    Ok(audit)
}

/// Fetch and verify every declared secret (see [`fetch`]); any required one missing or
/// invalid stops the run.
fn fetch_and_verify(plan: &Plan, audit: &mut Audit) -> Result<Secrets, Fail> {
    let secrets = fetch::fetch_and_verify(&plan.profile, &plan.ctx, Some(audit));
    if !secrets.errors.is_empty() {
        return Err(Fail::setup(secrets.errors.join("\nagentrun: ")));
    }
    Ok(secrets)
}

/// The profile's `[preflight] require` checks (`commands::preflight`): a FAIL stops the run
/// with its findings and fix, a WARN is said; the result goes to the audit log.
fn preflight_gate(
    plan: &Plan,
    secrets: &Secrets,
    audit: &mut Audit,
    say: &Say,
) -> Result<(), Fail> {
    let Some(p) = &plan.profile.preflight else {
        return Ok(());
    };
    if p.require.is_empty() {
        return Ok(());
    }
    let Some(report) = super::preflight::gate(&plan.profile, &plan.ctx, &secrets.got)? else {
        return Ok(());
    };
    let with = |s: crate::preflight::Status| -> Vec<&'static str> {
        report
            .checks
            .iter()
            .filter(|c| c.status == s)
            .map(|c| c.id)
            .collect()
    };
    audit.record(&events::Preflight {
        dir: &p.dir,
        required: &p.require,
        passed: report.passed,
        failed: with(crate::preflight::Status::Fail),
        warned: with(crate::preflight::Status::Warn),
    });
    if !report.passed {
        return Err(Fail::setup(super::preflight::refusal(
            &report,
            &p.dir,
            &secrets.got,
        )));
    }
    for c in report
        .checks
        .iter()
        .filter(|c| c.status == crate::preflight::Status::Warn)
    {
        say.at(
            Level::Info,
            &format!("preflight: WARN {}: {} ({})", c.id, c.summary, c.fix),
        );
    }
    Ok(())
}

/// The redactor's build, to start beside the child (none with `--no-redact`): every
/// accepted value, the withheld ones long enough to redact, the profile's rules and
/// patterns. A secret too short to redact stops the run.
fn prepare_redactor(plan: &Plan, secrets: &Secrets, say: &Say) -> Result<Option<Build>, Fail> {
    if plan.args.no_redact {
        say.at(
            Level::Info,
            "--no-redact: the child's output passes unfiltered",
        );
        return Ok(None);
    }
    fetch::refuse_too_short(&secrets.got)?;
    let values = secrets
        .got
        .iter()
        .chain(fetch::redactable(&secrets.withheld))
        .map(|g| (g.name.clone(), g.value.clone()))
        .collect();
    Ok(Some(Build::new(
        plan.profile.redact.clone(),
        plan.profile.path.clone(),
        values,
    )))
}

/// With a broker: each brokered value swapped for its placeholder (the value goes to the
/// broker alone), the run's CA, trust bundle and proxy variables made.
/// A refreshed value goes to the output redactor (its [`Build::late`]) before the broker
/// uses it.
fn prepare_broker(
    plan: &Plan,
    got: &mut [Got],
    redactor: Option<&Build>,
) -> Result<Option<broker::Prepared>, Fail> {
    plan.broker
        .as_ref()
        .map(|b| {
            let late = redactor.map(Build::late);
            broker::prepare(b, got, broker::Refetch::new(&plan.profile, &plan.ctx, late))
        })
        .transpose()
}

/// The child's argv, environment (the profile's base plus the accepted secrets, and the
/// broker's variables, which win), working directory and limits, and the program its
/// command resolves to.
fn build_launch<'a>(
    plan: &'a Plan,
    got: &'a [Got],
    brokered: Option<&broker::Prepared>,
    say: &Say,
) -> Result<(Launch<'a>, PathBuf), Fail> {
    let mut base = launch::env::base(&plan.profile, &plan.ctx.env, &plan.inputs.env_names);
    for (k, v) in brokered.iter().flat_map(|b| b.env.iter()) {
        match v {
            Some(v) => base.vars.insert(k.into(), v.into()),
            None => base.vars.remove(std::ffi::OsStr::new(k)),
        };
    }
    for d in &base.dropped {
        say.at(
            Level::Debug,
            &format!("not passing {d}: it looks like a credential (declare it under [secrets])"),
        );
    }
    let launch = Launch {
        argv: &plan.args.command,
        base_env: base.vars,
        secrets: fetch::injected(got),
        cwd: &plan.ctx.cwd,
        limits: &plan.profile.limits,
        timeout: plan.timeout,
        tty: None,
        confine: None,
    };
    let program = launch::resolve(&launch)?;
    Ok((launch, program))
}

/// The child's pseudo-terminal, when it gets one.
fn attach_tty(plan: &Plan, launch: &mut Launch) -> Result<(), Fail> {
    if plan.tty {
        let pty = launch::tty::Pty::open()
            .map_err(|e| Fail::setup(format!("cannot open a pseudo-terminal: {e}")))?;
        launch.tty = Some(pty);
    }
    Ok(())
}

/// Prepare the sandbox for this child (refusing what it cannot keep from the next run),
/// say what it does not enforce, and log `sandbox`: everything before the spawn reaches
/// the log before the child starts.
fn confine(
    plan: &Plan,
    launch: &mut Launch,
    program: &std::path::Path,
    brokered: Option<&broker::Prepared>,
    audit: &mut Audit,
    say: &Say,
) -> Result<(), Fail> {
    let Plan {
        ctx, policy, mode, ..
    } = plan;
    let needs = ChildNeeds {
        program: program.to_path_buf(),
        // The broker's trust bundle, read-only.
        extra_read: brokered
            .map(|b| b.bundle.path.clone())
            .into_iter()
            .collect(),
        tty: launch.tty.as_ref().and_then(|t| t.slave_path()),
    };
    let mut keep = plan::startup_inputs(&plan.profile, ctx, &plan.sinks.log);
    if *mode != Mode::Unconfined {
        // agentrun's own output files: the child writes there only through the redactor.
        keep.extend(plan::output_files());
        if let Err(e) = plan::refuse_plantable(ctx, policy) {
            return Err(refused(audit, Fail::setup(e)));
        }
    }
    let mut prepared = match sandbox::prepare(policy, &needs, *mode, &keep, &ctx.cwd) {
        Ok(p) => p,
        Err(e) => return Err(refused(audit, Fail::setup(e.to_string()))),
    };
    if let (Some(b), Some(port)) = (brokered, policy.broker_port) {
        use std::os::fd::AsRawFd;
        if let Err(e) = prepared.hand_broker_listener(port, b.theirs.as_raw_fd()) {
            return Err(refused(audit, Fail::setup(e.to_string())));
        }
    }
    let report = prepared.report();
    if *mode != Mode::Enforce {
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
    audit.record(&events::Sandbox(&report));
    audit.flush()?;
    launch.confine = Some(std::sync::Arc::new(prepared));
    Ok(())
}

/// Spawn the child and supervise it to its end, its output through the redactor. The
/// redactor's build starts once the child is on its way; `spawn` is logged without
/// waiting for the log's lock. The broker, when there is one, is served from the spawn on,
/// a thread of its own writing its events to the audit log as they come; it stops when the
/// child has ended.
#[allow(clippy::too_many_arguments)]
fn supervise(
    plan: &Plan,
    launch: Launch,
    program: PathBuf,
    build: Option<Build>,
    brokered: Option<broker::Prepared>,
    signals: launch::supervise::Signals,
    audit: &mut Audit,
    say: &Say,
) -> Result<(Ran, Option<(u64, crate::broker::Counts)>), Fail> {
    let mut brokered = brokered;
    let mut serving = None;
    let redactor = build.as_ref().map(Build::pending);
    let late = build.as_ref().and_then(Build::late_if_made);
    let mut build = build;
    let make_filter = || -> Box<dyn StreamFilter + '_> {
        match (redactor, late) {
            (Some(r), Some(l)) => Box::new(LazyRedact::new(r).with_late(l)),
            (Some(r), None) => Box::new(LazyRedact::new(r)),
            (None, _) => Box::new(Passthrough),
        }
    };
    let audit = std::sync::Mutex::new(audit);
    let lock = || audit.lock().unwrap_or_else(|p| p.into_inner());
    let audit_err = std::sync::Mutex::new(None);
    let note = |r: Result<(), crate::audit::AuditError>| {
        if let Err(e) = r {
            audit_err
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(e);
        }
    };
    let (ran, stopped) = std::thread::scope(|scope| {
        let ran = launch::run(
            launch,
            program.clone(),
            &signals,
            &make_filter,
            &mut |pid| {
                // First in the log, before any of the broker's events.
                lock().record(&events::Spawn {
                    pid,
                    program: &program,
                    tty: plan.tty,
                });
                // The child's network namespace has sent the broker's listener by now (it
                // did before the command's exec): serve it, and log its events as they come.
                if let Some(b) = brokered.take() {
                    match broker::serve(b) {
                        Ok(s) => {
                            let events = s.events.clone();
                            serving = Some(s);
                            let (lock, note) = (&lock, &note);
                            scope.spawn(move || {
                                while let Some(batch) = events.next_batch() {
                                    let mut a = lock();
                                    for e in &batch {
                                        record_broker(&mut a, e);
                                    }
                                    // Not waiting for the lock: what is not written now goes
                                    // with the next batch, or with `exit`.
                                    note(a.flush_if_free());
                                }
                            });
                        }
                        Err(f) => say.at(Level::Error, &f.msg),
                    }
                }
                // The child is on its way: build the redactor now, beside it, not before it.
                if let Some(b) = build.take() {
                    // From here on agentrun's own messages wait for it too (before, they hold
                    // no values and must not wait for a build that has not started).
                    say.redact_with(b.start());
                }
                // Not waiting for the log's lock: whoever holds it must not hold up the
                // child's supervision (the event then goes out with `exit`).
                note(lock().flush_if_free());
            },
        );
        // Requests still in flight are cut off (and logged); the writer ends with the last.
        (ran, serving.take().map(broker::Serving::stop))
    });
    let ran = ran?;
    if let Some(e) = audit_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        say.at(Level::Error, &e.to_string());
    }
    Ok((ran, stopped))
}

/// One broker event, recorded for the audit log.
fn record_broker(audit: &mut Audit, e: &crate::broker::Event) {
    match e {
        crate::broker::Event::Request(r) => audit.record(&events::BrokerRequest(r)),
        crate::broker::Event::Tunnel(t) => audit.record(&events::BrokerTunnel(t)),
        crate::broker::Event::Denied(d) => audit.record(&events::BrokerDenied(d)),
        crate::broker::Event::Revoked(r) => audit.record(&events::BrokerRevoked(r)),
        crate::broker::Event::Refresh(r) => audit.record(&events::BrokerRefresh(r)),
    }
}

/// How the child ended, as agentrun's exit status, and the `exit` event.
fn report(
    plan: &Plan,
    ran: &Ran,
    stopped: Option<(u64, crate::broker::Counts)>,
    start: Instant,
    audit: &mut Audit,
    say: &Say,
) -> Result<u8, Fail> {
    let broker_counts = stopped.map(|(dropped, c)| events::BrokerCounts {
        requests: c.requests,
        denied: c.denied,
        rate_limited: c.rate_limited,
        tunnels: c.tunnels,
        refreshed: c.refreshed,
        revoked: c.revoked,
        events_dropped: dropped,
    });
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
                humantime::format_duration(plan.timeout.unwrap_or_default())
            ),
        );
    }
    audit.event(&events::Exit {
        pid: ran.pid,
        code: exit_code,
        signal,
        timed_out: o.timed_out,
        exit_status: code,
        duration_ms: events::ms(start.elapsed()),
        forwarded_signals: &o.forwarded,
        killed_descendants: o.killed_descendants,
        redactions: &redactions,
        bytes: events::Bytes {
            stdout: ran.stdout.bytes_in,
            stderr: ran.stderr.bytes_in,
        },
        broker: broker_counts.as_ref(),
    })?;
    Ok(code)
}
