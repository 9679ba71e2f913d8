//! What more than one command resolves the same way, from the caller's environment and
//! the profile: the context, the profile itself (with its `[redact]` checked), the secret
//! backends' settings, the sandbox policy and what it keeps from the child, the audit sinks.
//! Pure resolution: nothing here fetches a secret or starts anything.

use super::{Fail, Level, Say};
use crate::audit::Sinks;
use crate::cli::ProfileArg;
use crate::context::Context;
use crate::profile::{self, AuditSink, Profile, Resolve, search};
use crate::sandbox::{self, Policy};
use crate::secrets;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

/// The caller's environment, working directory and home, snapshotted once.
pub fn context() -> Result<Context, Fail> {
    let env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    let cwd = std::env::current_dir()
        .map_err(|e| Fail::setup(format!("cannot read the working directory: {e}")))?;
    let home = env
        .get(std::ffi::OsStr::new("HOME"))
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    Ok(Context { env, cwd, home })
}

/// The profile the arguments name, found, loaded and checked.
pub fn load_profile(arg: &ProfileArg, ctx: &Context) -> Result<Profile, Fail> {
    let Some(p) = arg.profile.as_deref() else {
        return Err(Fail::setup(
            "no profile: pass --profile NAME (or a path), or set AGENTRUN_PROFILE",
        ));
    };
    let dirs = search_dirs(ctx);
    let path = search::find(p, &dirs, &ctx.cwd)?;
    let xdg_state = ctx.var("XDG_STATE_HOME").map(PathBuf::from);
    let profile = Profile::load(
        &path,
        &Resolve {
            cwd: &ctx.cwd,
            home: ctx.home.as_deref(),
            xdg_state_home: xdg_state.as_deref(),
        },
    )?;
    check_redact(&profile)?;
    Ok(profile)
}

/// `[redact]`'s rule ids and regexes, checked by the redactor's own code, the fault placed
/// like any other in the profile (`path:line:col: ...`).
fn check_redact(profile: &Profile) -> Result<(), profile::ProfileError> {
    profile
        .redact
        .validate()
        .map_err(|e| profile.redact_error(e.to_string()))
}

/// `[vault]` and `[aws]` checked before anything is fetched, so a bad table is one clear
/// error naming the profile, not one per secret.
pub fn validate_backends(profile: &Profile, ctx: &Context) -> Result<(), Fail> {
    secrets::check_backends(profile, ctx)
        .map_err(|e| Fail::setup(format!("{}: {e}", profile.path.display())))
}

/// The sandbox policy, with the files agentrun reads credentials from kept from the child
/// like the credential stores under `$HOME` (a `.env` holds more than the declared key).
pub fn sandbox_policy(
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
pub fn explain_kept_inputs(policy: &Policy, inputs: &secrets::CredentialInputs, say: &Say) {
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
pub fn output_files() -> Vec<PathBuf> {
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
pub fn refuse_plantable(ctx: &Context, policy: &Policy) -> Result<(), String> {
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
            let path = crate::profile::resolve_path(v, &ctx.cwd, ctx.home.as_deref());
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

/// The directories searched for a profile by name.
pub fn search_dirs(ctx: &Context) -> Vec<PathBuf> {
    let xdg_config = ctx.var("XDG_CONFIG_HOME").map(PathBuf::from);
    search::search_path(
        ctx.var_str("AGENTRUN_PROFILE_PATH"),
        &ctx.cwd,
        xdg_config.as_deref(),
        ctx.home.as_deref(),
    )
}

/// The audit sinks of a run: the operator's (`--audit-log`, else `$AGENTRUN_AUDIT_LOG`),
/// else the profile's, which must lie under agentrun's state directory: a profile must
/// never make agentrun write to a file that is not an agentrun audit log (a `~/.bashrc`
/// appended to with attacker-chosen text runs as shell code), and only the operator can
/// loosen that (contract, section 8).
pub fn audit_sinks(
    profile: &Profile,
    operator: Option<&str>,
    ctx: &Context,
) -> Result<Sinks, String> {
    let operator = operator
        .map(str::to_string)
        .or_else(|| ctx.var_str("AGENTRUN_AUDIT_LOG").map(str::to_string))
        .filter(|l| !l.is_empty());
    let log = match operator.as_deref() {
        Some("-") => AuditSink::Stderr,
        Some("journald") => AuditSink::Journald,
        Some(p) => AuditSink::File(crate::profile::resolve_path(
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

/// The user running agentrun, for the audit log.
pub fn user_name(ctx: &Context) -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| ctx.var_str("USER").map(str::to_string))
        .unwrap_or_else(|| uid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_bad_redact_table_is_placed_in_the_profile() {
        let parse = |text: &str| {
            Profile::parse(
                Path::new("/p/a.toml"),
                text,
                &Resolve {
                    cwd: Path::new("/w"),
                    home: None,
                    xdg_state_home: None,
                },
            )
            .unwrap()
        };
        let p = parse("version = 1\n[redact]\nrules = [\"nope\"]\n");
        let e = check_redact(&p).unwrap_err().to_string();
        assert!(
            e.starts_with("/p/a.toml:2:1: redact.rules[0]: unknown rule id \"nope\""),
            "{e}"
        );
        let p = parse("version = 1\nredact = { patterns = [\"a*\"] }\n");
        let e = check_redact(&p).unwrap_err().to_string();
        assert!(e.starts_with("/p/a.toml:2:10: redact.patterns[0]:"), "{e}");
        assert!(check_redact(&parse("version = 1\n")).is_ok());
    }
}
