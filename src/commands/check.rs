//! `agentrun check`: would a run start? Fetches and verifies every secret, checks the
//! redactor, the audit log (opening nothing for writing) and the sandbox, and reports.
//! Prints names, outcomes and timings, never a value.

use super::fetch::Secrets;
use super::{Fail, Level, Say, fetch, plan};
use crate::audit::{Audit, events};
use crate::cli::CheckArgs;
use crate::sandbox::{self, ChildNeeds, Mode};
use crate::secrets;
use crate::verify;
use serde_json::json;
use std::path::PathBuf;

/// Everything a run does before the spawn, without starting anything: exit 0 when a run
/// would start, 1 when it would refuse, a profile that cannot be used included (a run would
/// refuse with 125). With `--json` that case prints `{"ok": false, "errors": [...]}` too.
pub fn check(args: &CheckArgs, say: &Say) -> Result<u8, Fail> {
    check_profile(args, say).map_err(|f| {
        if args.json {
            let mut doc = json!({"ok": false, "errors": [f.msg]});
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
    if errors.is_empty()
        && let Err(f) = fetch::build_redactor(&profile, &got, &[])
    {
        errors.push(f.msg);
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
    let ok = errors.is_empty();
    if args.json {
        let mut doc = json!({"profile": profile.path, "ok": ok, "secrets": report.secrets, "sandbox": kernel, "broker": broker_line, "errors": errors});
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
