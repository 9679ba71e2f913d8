//! `agentrun preflight [--profile P] [DIR] [--json | --sarif] [--history]`, and the
//! `[preflight] require` gate a run passes before its spawn.
//!
//! The tree's checks are `crate::preflight`'s; this file gathers what the profile's checks
//! need (the fetched values for the scan, the audit log for rotation, the sinks, the
//! brokered secrets) and runs them. Exit 0 when no check fails, 1 when one does, 125 on bad
//! input (a DIR that is missing or not a directory, a profile that cannot be used).

use super::fetch::{self, Got};
use super::{Fail, Say, plan};
use crate::audit::Audit;
use crate::cli::PreflightArgs;
use crate::context::Context;
use crate::preflight::{self, Check, Finding, Report, Status, Tree, output, scan};
use crate::profile::{Profile, RedactSection};
use crate::redact::Redactor;
use std::path::Path;

pub fn preflight(args: &PreflightArgs, _say: &Say) -> Result<u8, Fail> {
    let ctx = plan::context()?;
    let profile = match args.profile.profile {
        Some(_) => Some(plan::load_profile(&args.profile, &ctx)?),
        None => None,
    };
    let dir = match (
        &args.dir,
        profile.as_ref().and_then(|p| p.preflight.as_ref()),
    ) {
        (Some(d), _) => ctx.cwd.join(d),
        (None, Some(p)) => p.dir.clone(),
        (None, None) => ctx.cwd.clone(),
    };
    // Every value fetched, the ones that failed their check included: a stale key in the
    // repository is as leaked as a good one, and no output may show either.
    let got = match &profile {
        Some(p) => {
            plan::validate_backends(p, &ctx)?;
            let s = fetch::fetch_and_verify(p, &ctx, None);
            s.got.into_iter().chain(s.withheld).collect()
        }
        None => Vec::new(),
    };
    let report = run_checks(&dir, profile.as_ref(), &ctx, &got, args.history, None)?;
    let text = if args.sarif {
        serde_json::to_string_pretty(&output::sarif(&report)).unwrap_or_default() + "\n"
    } else if args.json {
        serde_json::to_string_pretty(&output::json(&report)).unwrap_or_default() + "\n"
    } else {
        output::text(&report)
    };
    print!("{}", redacted(&text, &got));
    Ok(if report.passed { 0 } else { 1 })
}

/// The report, checked once more by a redactor over the values (a finding never holds one;
/// this is the belt to that brace).
fn redacted(text: &str, got: &[Got]) -> String {
    let values: Vec<(&str, &secrecy::SecretString)> =
        got.iter().map(|g| (g.name.as_str(), &g.value)).collect();
    match Redactor::new(&RedactSection::default(), &values) {
        Ok(r) => r.redact_text(text),
        Err(_) => super::known_tokens_out(text),
    }
}

/// A check of the profile's own facts.
type ProfileCheck<'a> = dyn Fn(&Profile) -> Check + 'a;

/// Every check (or only `only`, for a run's gate) over `dir`, with the profile's facts when
/// there is a profile.
pub fn run_checks(
    dir: &Path,
    profile: Option<&Profile>,
    ctx: &Context,
    got: &[Got],
    history: bool,
    only: Option<&[&str]>,
) -> Result<Report, Fail> {
    let tree = Tree::read(dir).map_err(|e| Fail::setup(format!("preflight: {e}")))?;
    let wanted = |id: &str| only.is_none_or(|o| o.contains(&id));
    let mut skipped = preflight::tree::Skipped::default();
    let mut checks = Vec::new();
    let mut scanned = 0;
    if wanted("secrets.hardcoded") {
        let values: Vec<(&str, &secrecy::SecretString)> = got
            .iter()
            .filter(|g| {
                secrecy::ExposeSecret::expose_secret(&g.value).len()
                    >= crate::redact::MIN_SECRET_LEN
            })
            .map(|g| (g.name.as_str(), &g.value))
            .collect();
        let all = Redactor::new(&RedactSection::default(), &values)
            .map_err(|e| Fail::setup(format!("preflight: the redactor: {e}")))?;
        let only_values = RedactSection {
            rules: Vec::new(),
            ..RedactSection::default()
        };
        let vals = Redactor::new(&only_values, &values)
            .map_err(|e| Fail::setup(format!("preflight: the redactor: {e}")))?;
        let names: Vec<String> = got.iter().map(|g| g.name.clone()).collect();
        let m = scan::Matchers {
            all: &all,
            values: profile.map(|_| &vals),
            names: &names,
        };
        let (mut c, n) = scan::hardcoded(&tree, &m, history, &mut skipped);
        scanned = n;
        if let Some(p) = profile {
            let missing: Vec<&str> = p
                .secrets
                .iter()
                .filter(|s| !got.iter().any(|g| g.name == s.name))
                .map(|s| s.name.as_str())
                .collect();
            if !missing.is_empty() {
                c.summary.push_str(&format!(
                    "; not looked for (not fetched): {}",
                    missing.join(", ")
                ));
            }
        } else {
            c.summary
                .push_str("; built-in rules only (--profile adds the declared values)");
        }
        checks.push(c);
    }
    for (id, f) in [
        (
            "secrets.dotenv_ignored",
            preflight::deps::dotenv_ignored as fn(&Tree) -> Check,
        ),
        ("deps.pinned", preflight::deps::pinned),
        ("deps.hashes", preflight::deps::hashes),
        ("deps.audit_in_ci", preflight::deps::audit_in_ci),
        ("runtime.incident_plan", preflight::deps::incident_plan),
    ] {
        if wanted(id) {
            checks.push(f(&tree));
        }
    }
    let profile_checks: [(&str, &ProfileCheck); 5] = [
        ("secrets.runtime", &|p| runtime_sources(p)),
        ("secrets.rotation", &|p| rotation(p, ctx)),
        ("permissions.scoped", &|p| {
            super::preflight_scope::scoped(p, ctx, got)
        }),
        ("runtime.proxy", &|p| proxy(p, got)),
        ("runtime.access_logs", &|p| access_logs(p, ctx)),
    ];
    for (id, f) in profile_checks {
        if wanted(id) {
            checks.push(match profile {
                Some(p) => f(p),
                None => Check::needs_profile(id),
            });
        }
    }
    let mut report = Report::new(checks, skipped, scanned);
    clean(&mut report, got);
    Ok(report)
}

/// Every string of the report through the redactor over the values, before any format
/// escapes it: the tree's file names are anyone's, and a name may hold a value in a form
/// the redactor knows raw but not escaped (review 14, F5).
fn clean(report: &mut Report, got: &[Got]) {
    let values: Vec<(&str, &secrecy::SecretString)> =
        got.iter().map(|g| (g.name.as_str(), &g.value)).collect();
    let Ok(r) = Redactor::new(&RedactSection::default(), &values) else {
        return;
    };
    let red = |t: &mut String| {
        let out = r.redact_bytes(t.as_bytes());
        if out != t.as_bytes() {
            *t = String::from_utf8_lossy(&out).into_owned();
        }
    };
    for c in &mut report.checks {
        red(&mut c.summary);
        for f in &mut c.findings {
            red(&mut f.file);
            red(&mut f.rule);
            red(&mut f.message);
        }
    }
    for (f, e) in &mut report.skipped.unreadable {
        red(f);
        red(e);
    }
}

/// A finding about the profile itself (line 1).
fn on_profile(p: &Profile, rule: &str, message: String) -> Finding {
    Finding {
        file: p.path.display().to_string(),
        line: 1,
        rule: rule.into(),
        message,
    }
}

/// `secrets.runtime`: every secret from a source (a profile has no other way); a `dotenv:`
/// file inside a git work tree is a WARN (one `git add .` from the history).
fn runtime_sources(p: &Profile) -> Check {
    let mut c = Check::new(
        "secrets.runtime",
        Status::Pass,
        format!(
            "{} secret(s), each read at run time from its source",
            p.secrets.len()
        ),
        "keep .env files out of repositories: move the file outside the work tree, or read the value from the environment or a secrets manager",
    );
    for s in &p.secrets {
        if let crate::profile::Source::Dotenv { path, .. } = &s.source
            && in_work_tree(path)
        {
            c.status = Status::Warn;
            c.findings.push(on_profile(
                p,
                "dotenv.in-repository",
                format!(
                    "secret {} is read from {}, inside a git work tree",
                    s.name,
                    path.display()
                ),
            ));
        }
    }
    c
}

fn in_work_tree(file: &Path) -> bool {
    preflight::tree::in_work_tree(file.parent().unwrap_or(Path::new("/")))
}

/// `secrets.rotation`: the audit log shows, for each remote secret, a refetch that changed
/// its value (a failed check fixed by a new value) or a broker refresh that did.
fn rotation(p: &Profile, ctx: &Context) -> Check {
    let remote: Vec<&str> = p
        .secrets
        .iter()
        .filter(|s| s.source.is_remote())
        .map(|s| s.name.as_str())
        .collect();
    let fix = "rotate each remote secret once while an agent runs (agentrun refetches on a failed check, and the broker refreshes on a 401), so the log shows the new value was picked up";
    if remote.is_empty() {
        return Check::new("secrets.rotation", Status::Pass, "no remote secret", fix);
    }
    let log = plan::audit_sinks(p, None, ctx)
        .ok()
        .and_then(|s| match s.log {
            crate::profile::AuditSink::File(f) => Some(f),
            _ => None,
        });
    let text = log
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .unwrap_or_default();
    let mut rotated = std::collections::BTreeSet::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let name = v["name"].as_str().unwrap_or_default().to_string();
        match v["event"].as_str() {
            Some("broker.refresh") if v["outcome"] == "ok" && v["changed"] == true => {
                rotated.insert(name);
            }
            Some("verify") => {
                let changed = v["attempts"].as_array().is_some_and(|a| {
                    a.iter().any(|t| {
                        t["outcome"] == "ok"
                            && t["refetch"]["outcome"] == "ok"
                            && t["refetch"]["same_value"] == false
                    })
                });
                if changed {
                    rotated.insert(name);
                }
            }
            _ => {}
        }
    }
    let mut c = Check::new(
        "secrets.rotation",
        Status::Pass,
        format!(
            "{} remote secret(s); the audit log {}",
            remote.len(),
            log.map_or("(none)".to_string(), |l| l.display().to_string())
        ),
        fix,
    );
    for name in remote {
        if !rotated.contains(name) {
            c.status = Status::Warn;
            c.findings.push(on_profile(
                p,
                "rotation.never-seen",
                format!("secret {name}: no rotation picked up in the audit log"),
            ));
        }
    }
    c
}

/// `runtime.proxy`: every secret that has an http probe, or a known vendor format (the
/// built-in rules recognise it), is brokered.
fn proxy(p: &Profile, got: &[Got]) -> Check {
    let builtin = Redactor::new(&RedactSection::default(), &[]).ok();
    let mut c = Check::new(
        "runtime.proxy",
        Status::Pass,
        "each API credential goes through the broker",
        "add `broker = \"api.host\"` to the secret: the child then holds a placeholder and the broker puts the value in requests to that host",
    );
    for s in &p.secrets {
        if s.broker.is_some() {
            continue;
        }
        let vendor = got.iter().find(|g| g.name == s.name).is_some_and(|g| {
            builtin.as_ref().is_some_and(|r| {
                let v = secrecy::ExposeSecret::expose_secret(&g.value).as_bytes();
                r.redact_bytes(v) != v
            })
        });
        if s.verify.probe.is_some() || vendor {
            c.status = Status::Warn;
            c.findings.push(on_profile(
                p,
                "proxy.not-brokered",
                format!(
                    "secret {} is an API credential handed to the child itself",
                    s.name
                ),
            ));
        }
    }
    c
}

/// `runtime.access_logs`: the audit log is configured and writable (checked as a run would
/// open it, nothing created).
fn access_logs(p: &Profile, ctx: &Context) -> Check {
    let fix = "set [audit] log under agentrun's state directory (or pass --audit-log), in a directory agentrun's user can write";
    match plan::audit_sinks(p, None, ctx) {
        Ok(sinks) => match Audit::inspect(&sinks) {
            Ok(()) => Check::new(
                "runtime.access_logs",
                Status::Pass,
                format!("the audit log: {}", sink_name(&sinks.log)),
                fix,
            ),
            Err(e) => {
                let mut c = Check::new(
                    "runtime.access_logs",
                    Status::Fail,
                    "the audit log cannot be written",
                    fix,
                );
                c.findings
                    .push(on_profile(p, "audit.unwritable", e.to_string()));
                c
            }
        },
        Err(e) => {
            let mut c = Check::new(
                "runtime.access_logs",
                Status::Fail,
                "no usable audit log",
                fix,
            );
            c.findings.push(on_profile(p, "audit.unusable", e));
            c
        }
    }
}

fn sink_name(s: &crate::profile::AuditSink) -> String {
    match s {
        crate::profile::AuditSink::File(f) => f.display().to_string(),
        crate::profile::AuditSink::Stderr => "stderr".into(),
        crate::profile::AuditSink::Journald => "journald".into(),
    }
}

/// A run's gate: the profile's `[preflight] require` checks, before the spawn (None when
/// it requires none). A bad DIR is the only error; the caller refuses on a FAIL.
pub fn gate(profile: &Profile, ctx: &Context, got: &[Got]) -> Result<Option<Report>, Fail> {
    let Some(p) = &profile.preflight else {
        return Ok(None);
    };
    if p.require.is_empty() {
        return Ok(None);
    }
    run_checks(&p.dir, Some(profile), ctx, got, false, Some(&p.require)).map(Some)
}

/// The refusal of a run whose required checks failed: each failed check, its findings and
/// its fix.
pub fn refusal(report: &Report, dir: &Path, got: &[Got]) -> String {
    let mut msg = format!(
        "preflight ({}): a required check failed; the agent does not start",
        dir.display()
    );
    // Escaped for the terminal: a file name must not move the cursor or forge a line
    // (review 14, F4); the report's strings are redacted already.
    let p = crate::scrub::printable;
    for c in report.checks.iter().filter(|c| c.status == Status::Fail) {
        msg.push_str(&format!("\n  FAIL {}: {}", c.id, p(&c.summary)));
        for f in c.findings.iter().take(20) {
            msg.push_str(&format!(
                "\n    {}:{} [{}] {}",
                p(&f.file),
                f.line,
                p(&f.rule),
                p(&f.message)
            ));
        }
        msg.push_str(&format!("\n    fix: {}", c.fix));
    }
    redacted(&msg, got)
}
