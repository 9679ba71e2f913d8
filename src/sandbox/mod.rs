//! Confinement of the child: Landlock (file system, TCP ports, scopes), a seccomp deny-list,
//! no capabilities, `no_new_privs`.
//!
//! The stages are kept apart so that everything that can fail or allocate happens before the
//! fork:
//!
//! 1. [`Policy::resolve`]: the profile's `[sandbox]` table -> validated plain data (pure).
//! 2. [`prepare`] (parent): plan the file-system grants (`fsplan`, keeping the credential stores
//!    under `$HOME` out), build the Landlock ruleset fd (`landlock`), compile the BPF program
//!    (`seccomp`), decide fail-closed vs best effort. Returns a [`Prepared`].
//! 3. [`Prepared::apply_in_child`] (child, inside `Command::pre_exec`): raw syscalls only.
//!
//! This module never sees secret values: injected secret files reach it as paths only.
//! New session, parent-death signal, fd hygiene and PID namespaces are the launcher's job.

mod access;
mod fsplan;
mod isolate;
mod landlock;
mod learn;
mod needs;
mod policy;
mod seccomp;
use crate::sys::{self, Step};

#[cfg(test)]
mod kernel_tests;

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use serde::Serialize;

pub use access::{Grants, Verdict, key_for, real, shown, toml_str};
pub use fsplan::{FsAccess, FsGrant, FsPlan};
pub use isolate::{Isolation, IsolationReport, wants_own_network, writable_root_of};
pub use landlock::PINNED_ABI;
pub use learn::{Addition, Proposal, Refusal, Shown, Usage, propose};
pub use needs::{Need, command_needs};
pub(crate) use policy::normalize as normalize_path;
pub use policy::{
    CREDENTIAL_STORES, GiveBack, Policy, STARTUP_FILES, SYSTEM_CREDENTIAL_STORES, SandboxSection,
    credential_stores, system_credential_stores,
};

/// Errors of the sandbox stage. Each names the key or step and the fix; all mean exit 125.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{key}: `{path}` {reason}")]
    Path {
        key: String,
        path: String,
        reason: String,
    },
    #[error(
        "{key}: `{name}` cannot be given back; allow_syscalls takes only {}",
        GiveBack::ALL.map(GiveBack::name).join(", ")
    )]
    Syscall { key: String, name: String },
    #[error(
        "the profile has no [sandbox] write list and the working directory is {what} ({cwd}): the \
         default policy would make all of it writable; add a [sandbox] table with explicit \
         `write` paths, or run from a project directory"
    )]
    DefaultPolicyAt { cwd: String, what: &'static str },
    #[error(
        "the profile has no [sandbox] write list and the default policy's write root {root} (the \
         working directory, /tmp or $TMPDIR) is / or contains the home directory {home}: the child \
         could change its start-up files (.bashrc, .profile, .gitconfig, ...); add a [sandbox] \
         table with explicit `write` paths, or run from a project directory outside the home with \
         $HOME and $TMPDIR outside /tmp and the working directory"
    )]
    DefaultWriteOverHome { root: String, home: String },
    #[error("sandbox: {what} {}: {source}", path.display())]
    ChildPath {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "sandbox: this kernel cannot enforce the profile: {}; run on a newer kernel, or pass \
         --best-effort to run with what it can enforce (the audit log records what that was)",
        missing.join("; ")
    )]
    Unsupported { missing: Vec<String> },
    #[error("sandbox: Landlock: {step}: {detail}")]
    Landlock { step: &'static str, detail: String },
    #[error("sandbox: seccomp filter: {0}")]
    Seccomp(String),
    #[error(
        "sandbox: the broker needs the child in a network namespace of its own, and this run \
         has none (it is made only when the sandbox is on: drop --unconfined)"
    )]
    NoBrokerNamespace,
}

/// How strictly to confine, from the operator's flags (never from the profile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Default: refuse unless every rule is enforced.
    Enforce,
    /// `--best-effort`: run with what the kernel can enforce.
    BestEffort,
    /// `--unconfined`: no Landlock, no seccomp (capabilities and no_new_privs still apply).
    Unconfined,
}

/// What the child needs beyond the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildNeeds {
    /// The resolved program path. It gets read+execute, and so does its ELF interpreter
    /// (`PT_INTERP`) or `#!` interpreter (one level deep: `#!/usr/bin/env python3` grants `env`,
    /// not `python3`). The loader's libraries are granted by directory: the system library
    /// directories and `/etc/ld.so.*` are readable under every policy.
    pub program: PathBuf,
    /// Read-only extras: injected secret files (or their private directory).
    pub extra_read: Vec<PathBuf>,
    /// The terminal the child gets (pty slave path), when it runs on one; `/dev/tty` too.
    pub tty: Option<PathBuf>,
}

/// How much of an area is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Fully,
    Partially,
    Not,
}

/// What the sandbox enforces for one run: for the audit log and `check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enforcement {
    pub mode: Mode,
    /// The kernel's Landlock ABI (0: none).
    pub landlock_abi: u32,
    /// The ABI agentrun's rules are written for.
    pub pinned_abi: u32,
    /// Landlock file-system rules.
    pub fs: Level,
    /// Landlock TCP port rules.
    pub net: Level,
    /// Landlock abstract-socket and signal scoping.
    pub scope: Level,
    /// The seccomp deny-list (incl. socket family filtering).
    pub seccomp: Level,
    /// Capability drop (always attempted).
    pub caps: Level,
    pub no_new_privs: bool,
    /// Plain-words notes: what is missing, what the profile opens, skipped paths.
    pub notes: Vec<String>,
    /// The file-system grants after credential-store expansion.
    pub fs_plan: FsPlan,
    /// Syscalls the filter denies.
    pub denied_syscalls: Vec<&'static str>,
    /// Whether the child gets its own PID namespace (no survivors if agentrun is killed).
    pub pid_namespace: PidNamespace,
    /// Its own network namespace, and what is read-only in its own mount namespace.
    pub isolation: IsolationReport,
}

/// Built in the parent; applied in the child.
#[derive(Debug)]
pub struct Prepared {
    ruleset: Option<OwnedFd>,
    filter: Option<Vec<libc::sock_filter>>,
    last_cap: u32,
    enforcement: Enforcement,
    isolation: Isolation,
}

/// A failure in the child between fork and exec: which step, and the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildSetupError {
    pub step: Step,
    pub errno: i32,
}

impl std::fmt::Display for ChildSetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sandbox setup in the child failed: {}: {}",
            self.step,
            std::io::Error::from_raw_os_error(self.errno)
        )
    }
}

impl std::error::Error for ChildSetupError {}

impl ChildSetupError {
    fn at(step: Step, errno: i32) -> ChildSetupError {
        ChildSetupError { step, errno }
    }
}

/// Builds everything the child will need. Fails closed: in [`Mode::Enforce`] any rule the
/// kernel cannot enforce is an error naming it and the fix.
///
/// Every mode also probes for a PID namespace (the launcher's "no survivors"); its
/// availability is part of the report.
///
/// `startup_inputs` are the files and directories a later run reads (profile, search
/// directories, secret sources, the audit log): those inside a write root are made
/// read-only in the child's own mount namespace, with each `.git` directly inside a write
/// root (see `isolate`). A policy without network ports gets its own network namespace.
/// Both need the namespaces the PID namespace comes with; without them enforce mode
/// refuses.
pub fn prepare(
    policy: &Policy,
    needs: &ChildNeeds,
    mode: Mode,
    startup_inputs: &[PathBuf],
    cwd: &std::path::Path,
) -> Result<Prepared, SandboxError> {
    let abi = landlock::kernel_abi();
    let mut p = prepare_for_kernel(policy, needs, mode, abi, sys::seccomp_available())?;
    p.enforcement.pid_namespace = pid_namespace();
    let pidns = p.enforcement.pid_namespace.clone();
    if !pidns.available {
        let n = format!("no PID namespace: {}", pidns.how);
        p.enforcement.notes.push(n);
    }
    if mode == Mode::Unconfined {
        return Ok(p);
    }
    let root = pidns.flags == libc::CLONE_NEWPID && nix::unistd::geteuid().is_root();
    let (iso, report) = isolate::plan(policy, startup_inputs, cwd, root)?;
    if iso.unshare_flags() != 0 && !pidns.available {
        let mut missing = Vec::new();
        if iso.net {
            missing.push(format!(
                "a network namespace of its own for a policy without ports ({})",
                pidns.how
            ));
        }
        if iso.needs_mount_ns() {
            missing.push(format!(
                "a mount namespace to keep {} read-only",
                report
                    .read_only
                    .iter()
                    .map(|r| r.path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if mode == Mode::Enforce {
            return Err(SandboxError::Unsupported { missing });
        }
        p.enforcement
            .notes
            .extend(missing.into_iter().map(|m| format!("not enforced: {m}")));
        return Ok(p);
    }
    p.isolation = iso;
    p.enforcement.isolation = report;
    Ok(p)
}

/// What a run under `policy` would grant `needs`, path by path (see [`Grants`]): the
/// file-system plan, the credential stores, and the files a later run reads
/// (`startup_inputs`, kept read-only as [`prepare`] keeps them).
pub fn grants(
    policy: &Policy,
    needs: &ChildNeeds,
    startup_inputs: &[PathBuf],
    cwd: &std::path::Path,
) -> Result<Grants, SandboxError> {
    let (_, report) = isolate::plan(policy, startup_inputs, cwd, false)?;
    let read_only = report.read_only.into_iter().map(|r| r.path).collect();
    Grants::new(policy, needs, read_only)
}

/// The seccomp program `learn` installs in the command it observes: `traced` (native
/// syscall numbers) stop for the tracer, everything else runs. Not a sandbox.
pub fn learn_filter(traced: &[u32]) -> Result<Vec<libc::sock_filter>, SandboxError> {
    seccomp::trace_filter(traced)
}

/// [`prepare`] against a given kernel description (tests simulate older kernels with it).
fn prepare_for_kernel(
    policy: &Policy,
    needs: &ChildNeeds,
    mode: Mode,
    abi: Result<u32, &'static str>,
    seccomp_ok: bool,
) -> Result<Prepared, SandboxError> {
    let (mut e, missing) = expected(policy, mode, &abi, seccomp_ok);
    let last_cap = sys::last_cap();
    if mode == Mode::Unconfined {
        return Ok(Prepared {
            ruleset: None,
            filter: None,
            last_cap,
            enforcement: e,
            isolation: Isolation::default(),
        });
    }
    if mode == Mode::Enforce && !missing.is_empty() {
        return Err(SandboxError::Unsupported { missing });
    }
    let plan = fsplan::plan(policy, needs)?;
    for s in &plan.skipped {
        e.notes.push(format!("skipped rule path {s}"));
    }
    let ruleset = if abi.is_ok() {
        landlock::build(&plan, policy, mode == Mode::BestEffort)?
    } else {
        None
    };
    e.fs_plan = plan;
    let filter = if seccomp_ok {
        Some(seccomp::build(policy)?)
    } else {
        None
    };
    Ok(Prepared {
        ruleset,
        filter,
        last_cap,
        enforcement: e,
        isolation: Isolation::default(),
    })
}

/// What `mode` would enforce on a kernel with `abi` and seccomp support, and (for enforce
/// mode) what is missing.
fn expected(
    policy: &Policy,
    mode: Mode,
    abi: &Result<u32, &'static str>,
    seccomp_ok: bool,
) -> (Enforcement, Vec<String>) {
    let kernel_abi = *abi.as_ref().unwrap_or(&0);
    let (mut fs, mut net, mut scope, mut missing) = landlock::coverage(kernel_abi);
    if let Err(why) = abi {
        missing.insert(0, (*why).to_string());
    }
    let mut seccomp_level = if seccomp_ok { Level::Fully } else { Level::Not };
    if !seccomp_ok {
        missing.push("seccomp filters (CONFIG_SECCOMP_FILTER)".into());
    }
    let mut notes = Vec::new();
    if mode == Mode::Unconfined {
        (fs, net, scope, seccomp_level) = (Level::Not, Level::Not, Level::Not, Level::Not);
        notes.push("--unconfined: no Landlock and no seccomp filter".into());
    } else {
        notes.extend(missing.iter().map(|m| format!("not enforced: {m}")));
    }
    if policy.udp {
        notes.push(
            "udp = true: UDP to any address and port (Landlock filters UDP only from ABI 10)"
                .into(),
        );
    }
    if policy.unix_sockets {
        notes.push(
            "unix_sockets = true: any pathname socket the file-system rules reach can be \
             connected to (Landlock mediates this only from ABI 9)"
                .into(),
        );
    }
    for g in &policy.allow_syscalls {
        notes.push(format!("allow_syscalls gives back {}", g.name()));
    }
    let e = Enforcement {
        mode,
        landlock_abi: kernel_abi,
        pinned_abi: PINNED_ABI,
        fs,
        net,
        scope,
        seccomp: seccomp_level,
        caps: Level::Fully,
        no_new_privs: true,
        notes,
        fs_plan: FsPlan::default(),
        denied_syscalls: if mode == Mode::Unconfined {
            Vec::new()
        } else {
            seccomp::denied_names(policy)
        },
        pid_namespace: PidNamespace {
            available: false,
            how: "not probed".into(),
            flags: 0,
        },
        isolation: IsolationReport::default(),
    };
    (e, missing)
}

impl Prepared {
    /// Applies the confinement to the calling (forked) process. Syscalls only: no allocation,
    /// no locks. Order: capabilities (bounding set while CAP_SETPCAP is still there, securebits,
    /// ambient, then effective/permitted/inheritable), `no_new_privs`, Landlock, seccomp last.
    ///
    /// On error the launcher must not exec: it reports the [`Step`] and errno on its report
    /// pipe (`sys::report_step`) and fails the spawn, which exits 125.
    pub fn apply_in_child(&self) -> Result<(), ChildSetupError> {
        let at = ChildSetupError::at;
        // Without CAP_SETPCAP (an unprivileged user) the bounding set cannot shrink; nothing in
        // it can be gained back either, as no_new_privs below blocks setuid and file caps.
        let privileged = sys::has_cap_setpcap().map_err(|e| at(Step::BoundingSet, e))?;
        if privileged {
            sys::drop_bounding_set(self.last_cap).map_err(|e| at(Step::BoundingSet, e))?;
            sys::lock_securebits().map_err(|e| at(Step::Securebits, e))?;
        }
        match sys::clear_ambient() {
            Ok(()) | Err(libc::EINVAL) => {} // EINVAL: a kernel without ambient capabilities
            Err(e) => return Err(at(Step::Ambient, e)),
        }
        sys::clear_capabilities().map_err(|e| at(Step::Capabilities, e))?;
        sys::set_no_new_privs().map_err(|e| at(Step::NoNewPrivs, e))?;
        if let Some(fd) = &self.ruleset {
            sys::landlock_restrict_self(fd.as_fd()).map_err(|e| at(Step::Landlock, e))?;
        }
        if let Some(prog) = &self.filter {
            sys::seccomp_install(prog).map_err(|e| at(Step::Seccomp, e))?;
        }
        Ok(())
    }

    /// What this run enforces.
    pub fn report(&self) -> Enforcement {
        self.enforcement.clone()
    }

    /// The `unshare` flags that give the child its own PID namespace, when available.
    pub fn pid_namespace_flags(&self) -> Option<libc::c_int> {
        let p = &self.enforcement.pid_namespace;
        (p.available && p.flags != 0).then_some(p.flags)
    }

    /// The network and mount namespaces that come with the PID namespace (see `isolate`).
    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    /// Have the child make the broker's listener on `127.0.0.1:port` inside its network
    /// namespace and send it over the unix socket `to` (see [`Isolation::broker_listener`]).
    /// Refused when the child gets no network namespace of its own.
    pub fn hand_broker_listener(
        &mut self,
        port: u16,
        to: std::os::fd::RawFd,
    ) -> Result<(), SandboxError> {
        if !self.isolation.net {
            return Err(SandboxError::NoBrokerNamespace);
        }
        self.isolation.broker_listener = Some((port, to));
        Ok(())
    }
}

/// PID-namespace availability, for `check` and the audit log ("no survivors" needs one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PidNamespace {
    pub available: bool,
    pub how: String,
    /// The `unshare` flags that worked in the probe (0: none).
    #[serde(skip)]
    pub flags: libc::c_int,
}

/// For `check`: the kernel's Landlock ABI, what each mode would enforce, PID isolation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelReport {
    /// Landlock ABI of the kernel, `None` without Landlock.
    pub landlock_abi: Option<u32>,
    /// Why Landlock is unavailable, when it is.
    pub landlock_unavailable: Option<String>,
    pub seccomp: bool,
    /// Whether a run in enforce mode would start.
    pub enforce_ok: bool,
    /// What is missing for enforce mode (each item a kernel feature).
    pub missing: Vec<String>,
    /// What a run would enforce (enforce mode if it can start, else best effort).
    pub would_enforce: Enforcement,
    pub pid_namespace: PidNamespace,
}

/// Inspects the running kernel for `check`.
pub fn kernel_report(policy: &Policy) -> KernelReport {
    let abi = landlock::kernel_abi();
    let seccomp_ok = sys::seccomp_available();
    let (enf, missing) = expected(policy, Mode::Enforce, &abi, seccomp_ok);
    let enforce_ok = missing.is_empty();
    let would_enforce = if enforce_ok {
        enf
    } else {
        expected(policy, Mode::BestEffort, &abi, seccomp_ok).0
    };
    KernelReport {
        landlock_abi: abi.as_ref().ok().copied(),
        landlock_unavailable: abi.err().map(str::to_string),
        seccomp: seccomp_ok,
        enforce_ok,
        missing,
        would_enforce,
        pid_namespace: pid_namespace(),
    }
}

fn read_num(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Probes, in a throwaway child with our own credentials, whether the launcher can give the
/// child a PID namespace: with `CLONE_NEWPID` alone (root, CAP_SYS_ADMIN) or together with an
/// unprivileged user namespace. When neither works, says why in words for `check`.
pub fn pid_namespace() -> PidNamespace {
    // With CAP_SYS_ADMIN, CLONE_NEWPID works: skip the probe's fork (it costs start-up time).
    // Should a seccomp filter around agentrun refuse it anyway, the run stops with 125.
    let probed = if sys::has_effective_cap(sys::CAP_SYS_ADMIN) == Ok(true) {
        Ok(libc::CLONE_NEWPID)
    } else {
        sys::probe_pid_namespace()
    };
    match probed {
        Ok(flags) if flags & libc::CLONE_NEWUSER != 0 => PidNamespace {
            available: true,
            how: "in an unprivileged user namespace, own uid and gid mapped to themselves".into(),
            flags,
        },
        Ok(flags) => PidNamespace {
            available: true,
            how: "CLONE_NEWPID, with CAP_SYS_ADMIN".into(),
            flags,
        },
        Err(errno) => {
            let blocked = [
                (
                    "/proc/sys/user/max_user_namespaces",
                    0,
                    "user.max_user_namespaces is 0",
                ),
                (
                    "/proc/sys/kernel/unprivileged_userns_clone",
                    0,
                    "kernel.unprivileged_userns_clone is 0",
                ),
                (
                    "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
                    1,
                    "AppArmor restricts unprivileged user namespaces",
                ),
            ];
            let why = blocked
                .iter()
                .find(|(path, bad, _)| read_num(path) == Some(*bad))
                .map(|(_, _, why)| (*why).to_string())
                .unwrap_or_else(|| {
                    format!(
                        "unshare(CLONE_NEWPID) failed: {}",
                        std::io::Error::from_raw_os_error(errno)
                    )
                });
            PidNamespace {
                available: false,
                how: format!(
                    "{why}: a SIGKILLed agentrun may leave setsid() descendants running \
                     (run as root, or allow unprivileged user namespaces)"
                ),
                flags: 0,
            }
        }
    }
}

/// What the child's own network and mount namespaces would hold, for `explain` (plans
/// only; nothing is mounted).
pub fn isolation_report(
    policy: &Policy,
    startup_inputs: &[PathBuf],
    cwd: &std::path::Path,
) -> Result<IsolationReport, SandboxError> {
    isolate::plan(policy, startup_inputs, cwd, false).map(|(_, r)| r)
}

/// The syscalls the filter denies under `policy`, for `explain`.
pub fn denied_syscalls(policy: &Policy) -> Vec<&'static str> {
    seccomp::denied_names(policy)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::path::Path;

    fn default_policy() -> Policy {
        Policy::resolve(
            None,
            Path::new("/tmp"),
            Some(Path::new("/nonexistent-home")),
            None,
        )
        .unwrap()
    }

    fn needs() -> ChildNeeds {
        ChildNeeds {
            program: PathBuf::from("/bin/sh"),
            extra_read: vec![],
            tty: None,
        }
    }

    #[test]
    fn older_kernel_is_refused_in_enforce_mode() {
        let p = default_policy();
        let e = prepare_for_kernel(&p, &needs(), Mode::Enforce, Ok(4), true).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("scoping") && msg.contains("--best-effort"),
            "{msg}"
        );
        let e = prepare_for_kernel(&p, &needs(), Mode::Enforce, Err("no Landlock"), true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no Landlock") && e.contains("--best-effort"),
            "{e}"
        );
        let e = prepare_for_kernel(&p, &needs(), Mode::Enforce, Ok(7), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("seccomp"), "{e}");
    }

    #[test]
    fn best_effort_and_unconfined_report_what_they_do() {
        let p = default_policy();
        let r = prepare_for_kernel(&p, &needs(), Mode::BestEffort, Err("no Landlock"), true)
            .unwrap()
            .report();
        assert_eq!(
            (r.fs, r.net, r.scope, r.seccomp),
            (Level::Not, Level::Not, Level::Not, Level::Fully)
        );
        assert!(
            r.notes.iter().any(|n| n.contains("no Landlock")),
            "{:?}",
            r.notes
        );
        let u = prepare_for_kernel(&p, &needs(), Mode::Unconfined, Ok(7), true).unwrap();
        assert!(u.ruleset.is_none() && u.filter.is_none());
        let r = u.report();
        assert_eq!(
            (r.fs, r.seccomp, r.caps),
            (Level::Not, Level::Not, Level::Fully)
        );
        assert!(r.notes.iter().any(|n| n.contains("--unconfined")));
    }

    #[test]
    fn report_is_serializable() {
        let p = default_policy();
        let k = kernel_report(&p);
        let j = serde_json::to_string(&k).unwrap();
        assert!(j.contains("\"landlock_abi\""), "{j}");
        serde_json::to_string(&p).unwrap();
    }
}
