//! `agentrun check`: would a run start? Fetches and verifies every secret, checks the
//! redactor, the audit log (opening nothing for writing) and the sandbox, and reports.
//! Prints names, outcomes and timings, never a value.

use super::fetch::Secrets;
use super::{Fail, Level, Say, fetch, plan};
use crate::audit::{Audit, events};
use crate::cli::CheckArgs;
use crate::context::Context;
use crate::profile::Profile;
use crate::sandbox::{self, ChildNeeds, Mode, Policy, Verdict};
use crate::secrets;
use crate::verify;
use serde::Serialize;
use serde_json::json;
use std::ffi::OsString;
use std::path::PathBuf;

/// Everything a run does before the spawn, without starting anything: exit 0 when a run
/// would start, 1 when it would refuse, a profile that cannot be used included (a run would
/// refuse with 125). With `--json` that case prints `{"ok": false, "errors": [...]}` too.
pub fn check(args: &CheckArgs, say: &Say) -> Result<u8, Fail> {
    check_profile(args, say).map_err(|f| {
        if args.json {
            let mut doc = json!({"ok": false, "errors": [super::known_tokens_out(&f.msg)]});
            crate::scrub::strip_userinfo_json(&mut doc);
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Fail { code: 1, ..f }
    })
}

fn check_profile(args: &CheckArgs, say: &Say) -> Result<u8, Fail> {
    let ctx = plan::context()?;
    let profile = plan::load_profile(&args.profile, &ctx)?;
    plan::validate_backends(&profile, &ctx)?;
    let broker = super::broker::plan(&profile, false)?;
    let inputs = secrets::credential_inputs(&profile, &ctx);
    let mut policy = plan::sandbox_policy(&profile, &ctx, &inputs)?;
    policy.broker_port = broker.as_ref().map(|b| b.port);
    let Secrets {
        got,
        report,
        mut errors,
        ..
    } = fetch::fetch_and_verify(&profile, &ctx, None);
    // Everything else a run does before the spawn, so that 0 here means a run would start.
    // `[preflight] require`: what a run checks before the spawn.
    match super::preflight::gate(&profile, &ctx, &got) {
        Ok(Some(r)) if !r.passed => {
            let dir = profile
                .preflight
                .as_ref()
                .map(|p| p.dir.clone())
                .unwrap_or_default();
            errors.push(super::preflight::refusal(&r, &dir, &got));
        }
        Ok(_) => {}
        Err(f) => errors.push(f.msg),
    }
    let mut redactor = None;
    if errors.is_empty() {
        match fetch::build_redactor(&profile, &got, &[]) {
            Ok(r) => redactor = Some(r),
            Err(f) => errors.push(f.msg),
        }
    }
    // Checked as a run would open it, but nothing is created, opened for writing or
    // changed: `check` starts nothing, so it writes nothing.
    match plan::audit_sinks(&profile, None, &ctx) {
        Ok(sinks) => {
            if let Err(e) = Audit::inspect(&sinks) {
                errors.push(e.to_string());
            }
        }
        Err(e) => errors.push(e),
    }
    // The broker: a CA this machine can make (nothing is kept), and the child's network
    // namespace (the sandbox check below refuses without one).
    let broker_line = broker.as_ref().map(|_| {
        crate::broker::install_crypto_provider();
        match crate::broker::Ca::new() {
            Ok(_) => "the run's CA can be made (ECDSA P-256)".to_string(),
            Err(e) => {
                errors.push(e.to_string());
                format!("cannot make the run's CA: {e}")
            }
        }
    });
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
        let log = plan::audit_sinks(&profile, None, &ctx)
            .map_or_else(|_| profile.audit.clone(), |s| s.log);
        let keep = plan::startup_inputs(&profile, &ctx, &log);
        if let Err(e) = plan::refuse_plantable(&ctx, &policy) {
            errors.push(e);
        }
        if let Err(e) = sandbox::prepare(&policy, &needs, Mode::Enforce, &keep, &ctx.cwd) {
            errors.push(e.to_string());
        }
    }
    // What `check -- COMMAND` prints comes from files a repository (or an earlier run's
    // child) can write (`#!` lines, pyvenv.cfg, version files): through the redactor.
    let command = match (&redactor, args.command.is_empty()) {
        (_, true) => None,
        (Some(r), false) => {
            let redact = |t: &str| r.redact_text(t);
            Some(command_report(
                &args.command,
                &profile,
                &ctx,
                &policy,
                &inputs.env_names,
                &redact,
            ))
        }
        (None, false) => {
            errors.push(
                "command: not resolved: without the secrets' redactor its paths could not be printed safely".into(),
            );
            None
        }
    };
    let mut warnings = Vec::new();
    if let Some(c) = &command {
        errors.extend(c.errors.iter().cloned());
        warnings.extend(c.warnings.iter().cloned());
    }
    let ok = errors.is_empty();
    let errors: Vec<String> = errors.iter().map(|e| super::known_tokens_out(e)).collect();
    if args.json {
        let mut doc = json!({"profile": profile.path, "ok": ok, "secrets": report.secrets, "sandbox": kernel, "broker": broker_line, "command": command, "warnings": warnings, "errors": errors});
        crate::scrub::strip_userinfo_json(&mut doc);
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        // Fetch errors can quote an address: print every line without `user:pass@`.
        macro_rules! println {
            ($($t:tt)*) => { std::println!("{}", crate::scrub::controls_escaped(&crate::scrub::strip_userinfo(&format!($($t)*)))) };
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
                events::ms(r.fetch_time)
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
        if let Some(b) = &broker_line {
            println!(
                "broker   {b}; the child's own network namespace: {}",
                if kernel.pid_namespace.available {
                    "available"
                } else {
                    "unavailable (a run would refuse)"
                }
            );
        }
        if let Some(c) = &command {
            let p = |s: &str| crate::scrub::printable(s);
            println!("command  {}  ->  {}", p(&c.argv), p(&c.program));
            for n in &c.needs {
                let mark = match n.verdict {
                    Verdict::Allowed => "ok".to_string(),
                    _ => format!("DENIED: {}", n.fix),
                };
                println!(
                    "  {:<5} {}  ({})  {}",
                    n.access,
                    p(&n.path),
                    p(&n.why),
                    p(&mark)
                );
            }
        }
        for w in &warnings {
            say.at(Level::Info, &format!("warning: {w}"));
        }
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

/// `check -- COMMAND`: the command resolved as a run would, and each path its start needs
/// with the run's verdict and the `[sandbox]` line that would allow it.
#[derive(Debug, Serialize)]
struct CommandReport {
    argv: String,
    program: String,
    needs: Vec<NeedReport>,
    #[serde(skip)]
    errors: Vec<String>,
    #[serde(skip)]
    warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
struct NeedReport {
    path: String,
    access: &'static str,
    why: String,
    verdict: Verdict,
    #[serde(skip_serializing_if = "String::is_empty")]
    fix: String,
}

fn command_report(
    argv: &[OsString],
    profile: &Profile,
    ctx: &Context,
    policy: &Policy,
    withheld: &[String],
    redact: &dyn Fn(&str) -> String,
) -> CommandReport {
    let shown_argv = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut r = CommandReport {
        argv: redact(&shown_argv),
        program: String::new(),
        needs: Vec::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let home = ctx.home.as_deref();
    for s in policy_skipped(policy) {
        r.warnings.push(s);
    }
    let base = crate::launch::env::base(profile, &ctx.env, withheld).vars;
    let path_var = base.get(std::ffi::OsStr::new("PATH")).cloned();
    let program =
        match crate::launch::spawn::resolve_program(&argv[0], path_var.as_deref(), &ctx.cwd) {
            Ok(p) => p,
            Err(e) => {
                r.program = "(not found)".into();
                r.errors.push(format!("command: {e}"));
                return r;
            }
        };
    r.program = redact(&program.display().to_string());
    let var = |k: &str| base.get(std::ffi::OsStr::new(k)).cloned();
    let needs = sandbox::command_needs(
        &program,
        &argv[1..],
        path_var.as_deref(),
        &var,
        &ctx.cwd,
        home,
    );
    let keep = plan::audit_sinks(profile, None, ctx)
        .map(|s| plan::startup_inputs(profile, ctx, &s.log))
        .unwrap_or_default();
    let child = ChildNeeds {
        program: program.clone(),
        extra_read: Vec::new(),
        tty: None,
    };
    let grants = match sandbox::grants(policy, &child, &keep, &ctx.cwd) {
        Ok(g) => g,
        Err(e) => {
            r.errors.push(format!("command: {e}"));
            return r;
        }
    };
    let mut denied = 0;
    for n in needs {
        let exists = n.path.exists();
        let verdict = if exists {
            grants.verdict(&n.path, n.want)
        } else {
            Verdict::Denied
        };
        let key = sandbox::key_for(n.want);
        let fix = match verdict {
            Verdict::Allowed => String::new(),
            _ if !exists => format!("{} does not exist", n.path.display()),
            Verdict::Denied => rule_line(policy, key, &sandbox::real(&n.path), home, redact),
            Verdict::Store => "a credential store: agentrun grants it only to a rule that names it; move the file out of the store instead".into(),
            Verdict::ReadOnly | Verdict::Hidden => "read-only for every child (a later run reads it)".into(),
        };
        if verdict != Verdict::Allowed {
            denied += 1;
        }
        r.needs.push(NeedReport {
            path: redact(&n.path.display().to_string()),
            access: key,
            why: redact(&n.why),
            verdict,
            fix: redact(&fix),
        });
    }
    if denied > 0 {
        r.errors.push(format!(
            "command: a run would deny {denied} path(s) its start needs (listed above with the [sandbox] line that allows each); `agentrun learn --profile {} -- {}` shows what it needs while it runs",
            profile.path.display(),
            r.argv
        ));
    }
    r
}

/// Rule paths of the policy that do not exist: a run skips them, and the child then meets
/// `Permission denied` there.
fn policy_skipped(policy: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    for (key, list) in [
        ("read", &policy.read),
        ("write", &policy.write),
        ("exec", &policy.exec),
    ] {
        if policy.defaulted.contains(&key) {
            continue;
        }
        for p in list {
            if !p.exists() {
                out.push(format!(
                    "sandbox.{key}: {} does not exist; a run skips it, so the child cannot use it (create it first, or fix the path)",
                    p.display()
                ));
            }
        }
    }
    out
}

/// The whole `key = [...]` line with `add` in it: the policy's effective list (the default
/// when the profile leaves the key out, which setting it would drop) plus the new path.
fn rule_line(
    policy: &Policy,
    key: &str,
    add: &std::path::Path,
    home: Option<&std::path::Path>,
    redact: &dyn Fn(&str) -> String,
) -> String {
    let list = match key {
        "exec" => &policy.exec,
        "write" => &policy.write,
        _ => &policy.read,
    };
    let items: Vec<String> = list
        .iter()
        .map(|p| p.as_path())
        .chain([add])
        .map(|p| sandbox::toml_str(&redact(&sandbox::shown(p, home))))
        .collect();
    format!("[sandbox] {key} = [{}]", items.join(", "))
}
