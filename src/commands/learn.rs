//! `agentrun learn --profile P -- COMMAND`: run the command once, observed, with the
//! profile's secrets and no sandbox, and print the smallest change to the profile's
//! `[sandbox]` table that allows what it did (`sandbox::propose`), with the diff against
//! the current table. It never writes the profile: the operator copies what they accept.
//!
//! It runs the command with the operator's own access (no Landlock, no seccomp deny-list,
//! the host's network), so it says so before the command starts, and only the operator
//! can start it: it is a command of its own, never something a profile can ask for.
//! `docs/threat-model.md` has its threat note.

use super::fetch::{self, Secrets};
use super::{Fail, Level, Say, plan};
use crate::cli::LearnArgs;
use crate::launch::redactor::{Build, LazyRedact};
use crate::launch::{self, Launch, pump::StreamFilter};
use crate::sandbox::{self, ChildNeeds, Shown};
use crate::secrets;
use serde_json::json;

pub fn learn(args: &LearnArgs, say: &Say) -> Result<u8, Fail> {
    let ctx = plan::context()?;
    let profile = plan::load_profile(&args.profile, &ctx)?;
    plan::validate_backends(&profile, &ctx)?;
    if let Some(out) = &args.output
        && sandbox::real(out) == sandbox::real(&profile.path)
    {
        return Err(Fail::setup(format!(
            "--output {}: that is the profile; learn never writes it (write the proposal elsewhere and copy what you accept)",
            out.display()
        )));
    }
    let inputs = secrets::credential_inputs(&profile, &ctx);
    let policy = plan::sandbox_policy(&profile, &ctx, &inputs)?;
    let shown_argv = args
        .command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let Secrets {
        got,
        withheld,
        errors,
        ..
    } = fetch::fetch_and_verify(&profile, &ctx, None);
    if !errors.is_empty() {
        return Err(Fail::setup(errors.join("\nagentrun: ")));
    }
    fetch::refuse_too_short(&got)?;
    let values = got
        .iter()
        .chain(fetch::redactable(&withheld))
        .map(|g| (g.name.clone(), g.value.clone()))
        .collect();
    let build = Build::new(profile.redact.clone(), profile.path.clone(), values);
    let pending = build.start();
    say.redact_with(pending);
    let make_filter = || -> Box<dyn StreamFilter> { Box::new(LazyRedact::new(pending)) };
    // The command line may hold a value, and the report names paths the command chose: each
    // through the redactor before it is escaped (a file named after a secret is not
    // printed), the whole text once more after (review 13b, F3).
    let redactor = match pending.wait() {
        Ok(r) => *r,
        Err(e) => {
            return Err(Fail::setup(format!(
                "the redactor could not be built ({e}): learn does not run the command"
            )));
        }
    };
    let redact = |text: &str| redactor.redact_text(text);
    let shown_argv = crate::scrub::printable(&redact(&shown_argv));
    say.at(
        Level::Error,
        &format!(
            "learn: running `{shown_argv}` ONCE WITHOUT A SANDBOX, with your own access (files, \
             network) and the profile's secrets, to see what it needs. Run only a command you \
             would run yourself; stop it with Ctrl-C."
        ),
    );

    let base = launch::env::base(&profile, &ctx.env, &inputs.env_names);
    let launch = Launch {
        argv: &args.command,
        base_env: base.vars,
        secrets: fetch::injected(&got),
        cwd: &ctx.cwd,
        limits: &profile.limits,
        timeout: None,
        tty: None,
        confine: None,
    };
    let program = launch::resolve(&launch)?;
    let observed = launch::trace::run_traced(launch, program.clone(), &make_filter)?;

    let keep = plan::audit_sinks(&profile, None, &ctx)
        .map(|s| plan::startup_inputs(&profile, &ctx, &s.log))
        .unwrap_or_default();
    let needs = ChildNeeds {
        program: program.clone(),
        extra_read: Vec::new(),
        tty: None,
    };
    let grants = sandbox::grants(&policy, &needs, &keep, &ctx.cwd)
        .map_err(|e| Fail::setup(format!("{}: {e}", profile.path.display())))?;
    let shown = Shown {
        cwd: &ctx.cwd,
        home: ctx.home.as_deref(),
        redact: &redact,
    };
    let proposal = sandbox::propose(
        &policy,
        profile.sandbox.as_ref(),
        &grants,
        &observed.usage,
        &ctx.homes(),
        &shown,
    );
    let p = |path: &std::path::Path| crate::scrub::printable(&redact(&path.display().to_string()));
    let u = &observed.usage;
    if args.json {
        let doc = json!({
            "profile": profile.path,
            "command": shown_argv,
            "exit_code": observed.exit_code,
            "processes": observed.processes,
            "file_uses": u.files.len(),
            "foreign_abi_syscalls": observed.foreign_abi,
            "additions": proposal.additions,
            "refused": proposal.refused,
            "diff": proposal.diff,
            "table": proposal.table,
        });
        println!(
            "{}",
            redact(&serde_json::to_string_pretty(&doc).unwrap_or_default())
        );
    } else {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "\nlearn: `{}` exited {}; {} process(es), {} path(s) used, {} port(s)",
            shown_argv,
            observed.exit_code,
            observed.processes,
            u.files.len(),
            u.connect.len() + u.bind.len()
        ));
        if proposal.additions.is_empty() && proposal.refused.is_empty() {
            line(format!(
                "the profile's [sandbox] already allows everything it did ({})",
                p(&profile.path)
            ));
        } else {
            if !proposal.additions.is_empty() {
                line(
                    "what the profile's [sandbox] would deny, and the rule that allows it:".into(),
                );
                for a in &proposal.additions {
                    line(format!(
                        "  + {:<12} {:<40} {}",
                        a.key,
                        crate::scrub::printable(&a.value),
                        a.why
                    ));
                }
            }
            if !proposal.refused.is_empty() {
                line("what no rule allows (the command must do without it under agentrun):".into());
                for r in &proposal.refused {
                    line(format!(
                        "  ! {:<5} {}  {}",
                        r.access,
                        crate::scrub::printable(&r.path),
                        r.why
                    ));
                }
            }
            if !proposal.diff.is_empty() {
                line(format!("diff against {}:", p(&profile.path)));
                for d in &proposal.diff {
                    line(format!("  {d}"));
                }
                line("the [sandbox] table with it (nothing was changed; copy it into the profile if you accept it):".into());
                out.push_str(&proposal.table);
            }
        }
        if observed.foreign_abi > 0 {
            out.push_str(&format!(
                "note: {} syscall(s) of a 32-bit ABI: a run kills the process at the first\n",
                observed.foreign_abi
            ));
        }
        print!("{}", redact(&out));
    }
    if let Some(out) = &args.output {
        std::fs::write(out, redact(&proposal.table))
            .map_err(|e| Fail::setup(format!("--output {}: {e}", out.display())))?;
    }
    Ok(u8::try_from(observed.exit_code).unwrap_or(1))
}
