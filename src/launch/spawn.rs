//! Build the child and start it: program lookup, secret files, the fork-to-exec setup.
//!
//! Everything the child needs is built here, before the fork; the `pre_exec` closure
//! only makes syscalls (see `sys`). A setup failure in the child is reported through a
//! close-on-exec pipe as ([`Step`] as u8, errno) (see `sys::step`), so it ends the run with
//! 125, never in an unconfined child; a byte that names no step does too.
//!
//! With a PID namespace the command is started by `clone(CLONE_VM | CLONE_VFORK)` from the
//! namespace's init (see `pidns` and `sys::clone` for why, and what keeps it sound):
//! [`start_command`] is the whole of what runs there, a plain `fn` over [`CommandStart`], on a
//! stack of [`COMMAND_STACK`] bytes whose bound the tests below measure.

use super::pidns;
use crate::profile::Limits;
use crate::sys::{self, Step};
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

/// Why the child did not start. Each knows its exit code.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{0}: command not found{1}")]
    NotFound(String, String),
    #[error("{0}: cannot execute: {1}")]
    CannotExecute(String, String),
    #[error("setting up the child failed at {step}: {err}")]
    Setup { step: &'static str, err: io::Error },
    #[error("cannot start the child: {0}")]
    Io(io::Error),
}

impl SpawnError {
    pub fn exit_code(&self) -> u8 {
        match self {
            SpawnError::NotFound(..) => 127,
            SpawnError::CannotExecute(..) => 126,
            SpawnError::Setup { .. } | SpawnError::Io(_) => 125,
        }
    }
}

/// Find the program the way `execvp` would, with the child's `PATH`.
pub fn resolve_program(
    cmd: &OsStr,
    path_var: Option<&OsStr>,
    cwd: &Path,
) -> Result<PathBuf, SpawnError> {
    let shown = cmd.to_string_lossy().into_owned();
    if cmd.is_empty() {
        return Err(SpawnError::NotFound(
            shown,
            " (the command is empty)".into(),
        ));
    }
    let check = |p: PathBuf| -> Result<PathBuf, SpawnError> {
        if p.is_dir() {
            return Err(SpawnError::CannotExecute(
                shown.clone(),
                "it is a directory".into(),
            ));
        }
        if !sys::executable(&p) {
            return Err(SpawnError::CannotExecute(
                shown.clone(),
                format!(
                    "{} is not executable (chmod +x it, or run it through its interpreter)",
                    p.display()
                ),
            ));
        }
        Ok(p)
    };
    if cmd.as_bytes().contains(&b'/') {
        let p = cwd.join(cmd);
        if !p.exists() {
            return Err(SpawnError::NotFound(
                shown,
                format!(" ({} does not exist)", p.display()),
            ));
        }
        return check(p);
    }
    let default_path = OsStr::new("/usr/local/bin:/usr/bin:/bin");
    let path_var = path_var.unwrap_or(default_path);
    for dir in path_var.as_bytes().split(|&b| b == b':') {
        let dir = if dir.is_empty() {
            cwd.to_path_buf()
        } else {
            cwd.join(OsStr::from_bytes(dir))
        };
        let p = dir.join(cmd);
        if p.is_file() && sys::executable(&p) {
            return Ok(p);
        }
    }
    Err(SpawnError::NotFound(
        shown,
        format!(
            " in the child's PATH ({}); add its directory to PATH or give a path",
            path_var.to_string_lossy()
        ),
    ))
}

/// A secret delivered as a file: a sealed memfd the child inherits, reachable as
/// `/proc/self/fd/N`. It lives exactly as long as some process holds it, so it is gone
/// when the run ends, even if agentrun is killed.
pub struct SecretFile {
    pub fd: OwnedFd,
}

impl SecretFile {
    pub fn new(name: &str, value: &[u8]) -> io::Result<SecretFile> {
        use nix::sys::memfd::{MFdFlags, memfd_create};
        let fd = memfd_create(
            format!("agentrun-{name}").as_str(),
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )?;
        let mut f = std::fs::File::from(fd);
        f.write_all(value)?;
        use nix::fcntl::{FcntlArg, SealFlag, fcntl};
        fcntl(
            &f,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_WRITE
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_SEAL,
            ),
        )?;
        Ok(SecretFile { fd: f.into() })
    }

    /// The path the child opens.
    pub fn child_path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd.as_raw_fd())
    }
}

/// The child's confinement, prepared in the parent and applied last before exec.
pub type Confine = Arc<crate::sandbox::Prepared>;

/// Everything needed to start the child.
pub struct ChildSpec<'a> {
    pub program: PathBuf,
    pub argv: &'a [OsString],
    pub env: Vec<(OsString, OsString)>,
    pub cwd: &'a Path,
    pub limits: &'a Limits,
    pub inherit: Vec<RawFd>,
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
    /// With a pty: the slave fd becomes the controlling terminal.
    pub ctty: Option<RawFd>,
    pub confine: Option<Confine>,
}

/// The stack the command runs on between its `clone(CLONE_VM)` and its exec (see
/// `pidns`): the sandbox's syscalls need a few KiB, and glibc's `execvpe` a pointer per
/// argument when it runs a `#!`-less file under /bin/sh (sized as glibc's `posix_spawn`).
const COMMAND_STACK: usize = 64 * 1024;

/// A started child: std's child, and where the command's own wait status arrives when a PID
/// namespace init stands between them (see `pidns`).
pub struct Spawned {
    pub child: Child,
    pub status: Option<OwnedFd>,
}

/// Fork and exec the child.
///
/// Start-up on a busy machine is mostly waiting for a CPU: each new process queues behind
/// whatever runs until the next scheduler tick, unless its parent hands over its own CPU by
/// blocking. So the spawning thread pins itself to the CPU it is on for the spawn; every
/// process of the chain is created there and runs as soon as its parent blocks on it. Each
/// process that stays (the command, a PID namespace init) gets the caller's mask back, and so
/// does agentrun once the command has started.
#[allow(unsafe_code)] // `sys::set_pre_exec` and `pidns::Plan::enter`: see their `# Safety`.
pub fn spawn(spec: ChildSpec) -> Result<Spawned, SpawnError> {
    let shown = spec.argv[0].to_string_lossy().into_owned();
    let mut cmd = Command::new(&spec.program);
    cmd.arg0(&spec.argv[0]).env_clear();
    cmd.current_dir(spec.cwd);
    cmd.stdin(spec.stdin)
        .stdout(spec.stdout)
        .stderr(spec.stderr);

    let (report_r, report_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnError::Io(e.into()))?;
    let report_fd = report_w.as_raw_fd();
    let parent = nix::unistd::getpid().as_raw();
    use sys::Resource;
    let mut rlimits: Vec<(Resource, u64)> = vec![(Resource::RLIMIT_CORE, 0)];
    let l = spec.limits;
    for (res, v) in [
        (Resource::RLIMIT_NOFILE, l.nofile),
        (Resource::RLIMIT_NPROC, l.nproc),
        (Resource::RLIMIT_AS, l.memory),
        (Resource::RLIMIT_CPU, l.cpu),
        (Resource::RLIMIT_FSIZE, l.fsize),
    ] {
        if let Some(v) = v {
            rlimits.push((res, v));
        }
    }
    let inherit = spec.inherit;
    let ctty = spec.ctty;
    let confine = spec.confine;
    let mut pidns = confine
        .as_ref()
        .and_then(|c| c.pid_namespace_flags())
        .map(pidns::Plan::new);
    let in_new_ns = pidns.as_ref().is_some_and(pidns::Plan::unshared_by_parent);
    let mut status = None;
    if let Some(plan) = pidns.as_mut().filter(|_| in_new_ns) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| SpawnError::Io(e.into()))?;
        plan.report_status_to(w.as_raw_fd());
        status = Some((r, w));
    }
    let report_r_fd = report_r.as_raw_fd();
    let restore = sys::affinity();
    let pin = restore.as_ref().and_then(sys::current_cpu_within);
    // With a PID namespace the command is started by `clone(CLONE_VM)` inside it and execs
    // on its own (std's exec is for the processes above it, which never reach it).
    // Only one of the two holds the arguments and the environment (the secrets among it).
    let exec = match &pidns {
        Some(_) => Some(
            sys::ExecArgs::new(
                spec.program.as_os_str(),
                spec.argv.iter().map(OsString::as_os_str),
                spec.env.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str())),
            )
            .map_err(SpawnError::Io)?,
        ),
        None => {
            cmd.args(&spec.argv[1..])
                .envs(spec.env.iter().map(|(k, v)| (k, v)));
            None
        }
    };
    let mut stack = match &pidns {
        Some(_) => Some(
            sys::CloneStack::new(COMMAND_STACK + (spec.argv.len() + 3) * 8)
                .map_err(SpawnError::Io)?,
        ),
        None => None,
    };
    let no_isolation = crate::sandbox::Isolation::default();
    let pre_exec = move || {
        let fail = |step: Step, errno: i32| {
            sys::report_step(report_fd, step, errno);
            Err(io::Error::from_raw_os_error(errno))
        };
        let dies_with_parent = if in_new_ns {
            // PID 1 of a new namespace sees getppid() == 0; the parent holds the report
            // pipe's only other read end until the command has started.
            sys::close(report_r_fd);
            sys::die_with_reader(report_fd)
        } else {
            sys::die_with_parent(parent)
        };
        if let Err(e) = dies_with_parent {
            return fail(Step::ParentDeath, e);
        }
        if let Err(e) = sys::new_session() {
            return fail(Step::Session, e);
        }
        if ctty.is_some() {
            // stdin is the pty slave by now.
            if let Err(e) = sys::set_controlling_tty(0) {
                return fail(Step::ControllingTty, e);
            }
        }
        for &(res, v) in &rlimits {
            if let Err(e) = sys::set_rlimit(res, v) {
                return fail(Step::Rlimits, e);
            }
        }
        if let Err(e) = sys::cloexec_from(3) {
            return fail(Step::CloseFds, e);
        }
        for &fd in &inherit {
            if let Err(e) = sys::inherit_fd(fd) {
                return fail(Step::CloseFds, e);
            }
        }
        let affinity = restore.as_ref().filter(|_| pin.is_some());
        if let (Some(plan), Some(exec), Some(stack)) = (&pidns, &exec, stack.as_mut()) {
            let start = CommandStart {
                exec,
                report_fd,
                affinity,
                confine: confine.as_deref(),
            };
            // Returns only on a failure before the command was started (see `pidns`).
            let iso = match &confine {
                Some(c) => c.isolation(),
                None => &no_isolation,
            };
            // SAFETY: this is std's forked child (single-threaded); `start_command` makes
            // only syscalls on data built before the fork, on `stack`, sized by
            // COMMAND_STACK (measured in the tests below).
            let (step, e) =
                unsafe { plan.enter(iso, restore.as_ref(), stack, start_command, &start) };
            return fail(step, e);
        }
        become_command(affinity, confine.as_deref()).or_else(|(step, e)| fail(step, e))
    };
    // SAFETY: `pre_exec` above makes only async-signal-safe syscalls on data built before
    // the fork (through `sys`, `pidns` and `sandbox::Prepared::apply_in_child`), and its
    // errors are raw OS codes.
    unsafe { sys::set_pre_exec(&mut cmd, pre_exec) };

    let pinned = pin.is_some_and(|p| sys::set_affinity(&p).is_ok());
    let ns = if in_new_ns {
        match pidns::NextChildInNewNs::enter() {
            Ok(ns) => Some(ns),
            Err(e) => {
                unpin(pinned, restore.as_ref());
                return Err(SpawnError::Setup {
                    step: Step::PidNamespace.message(),
                    err: e,
                });
            }
        }
    } else {
        None
    };
    let result = cmd.spawn();
    let left = ns.map(pidns::NextChildInNewNs::leave);
    unpin(pinned, restore.as_ref());
    drop(cmd);
    drop(report_w);
    let status = status.map(|(r, _w)| r);
    if let Some(Err(e)) = left {
        // Threads could not be created any more; never happens with CAP_SYS_ADMIN.
        if let Ok(mut child) = result {
            let _ = sys::kill(child.id() as i32, libc::SIGKILL);
            let _ = child.wait();
        }
        return Err(SpawnError::Setup {
            step: "returning to agentrun's PID namespace",
            err: e,
        });
    }
    let mut report = [0u8; sys::step::REPORT_LEN];
    let mut f = std::fs::File::from(report_r);
    let got = f.read(&mut report).unwrap_or(0);
    let reported = (got == report.len()).then(|| Step::decode(report));
    let report = match (result, reported) {
        (Ok(child), None) => return Ok(Spawned { child, status }),
        // The command, started inside the PID namespace, failed before or at its exec; its
        // init has ended the same way: reap it.
        (Ok(mut child), Some(r)) => {
            let _ = child.wait();
            r
        }
        (Err(err), None) => return Err(spawn_error(err, &shown)),
        (Err(_), Some(r)) => r,
    };
    Err(reported_error(report, &shown))
}

/// What the child reported on the report pipe, as the run's error.
fn reported_error(report: Result<(Step, i32), sys::UnknownStep>, shown: &str) -> SpawnError {
    match report {
        Ok((Step::Exec, errno)) => spawn_error(io::Error::from_raw_os_error(errno), shown),
        Ok((step, errno)) => SpawnError::Setup {
            step: step.message(),
            err: io::Error::from_raw_os_error(errno),
        },
        // Fail closed: a report that names no step is still a failed set-up.
        Err(sys::UnknownStep(_)) => SpawnError::Setup {
            step: "setup",
            err: io::Error::from_raw_os_error(libc::EIO),
        },
    }
}

/// What an exec or set-up error of the child means for the operator.
fn spawn_error(err: io::Error, shown: &str) -> SpawnError {
    let shown = shown.to_owned();
    match err.raw_os_error() {
        Some(libc::ENOENT) => SpawnError::CannotExecute(
            shown,
            "its interpreter or loader was not found (check the #! line)".into(),
        ),
        Some(libc::EACCES) | Some(libc::EPERM) => SpawnError::CannotExecute(
            shown,
            "permission denied (is it, or its interpreter, outside the sandbox's exec rules?)"
                .into(),
        ),
        Some(libc::ENOEXEC) => SpawnError::CannotExecute(shown, "not an executable format".into()),
        _ => SpawnError::CannotExecute(shown, err.to_string()),
    }
}

/// Everything the command's process needs between its `clone(CLONE_VM)` and its exec: built
/// before the first fork, borrowed (nothing here is owned, so nothing is dropped there).
struct CommandStart<'a> {
    exec: &'a sys::ExecArgs,
    report_fd: RawFd,
    /// The caller's CPU mask, when the start was pinned to one CPU.
    affinity: Option<&'a sys::CpuSet>,
    confine: Option<&'a crate::sandbox::Prepared>,
}

/// The command's process, started by `pidns` with `clone(CLONE_VM | CLONE_VFORK)`: become the
/// command and exec it, or report the failed step and return the exit code. Syscalls only.
fn start_command(c: &CommandStart) -> i32 {
    // Its parent's handlers must not run on the memory it shares.
    sys::reset_signal_handlers();
    if let Err((step, e)) = become_command(c.affinity, c.confine) {
        sys::report_step(c.report_fd, step, e);
        return 125;
    }
    sys::report_step(c.report_fd, Step::Exec, c.exec.exec());
    127
}

/// What makes the command of this process (std's child, or the one `pidns` starts): its CPU
/// mask, an empty signal mask (agentrun blocks the signals it forwards, the init all of
/// them), then the sandbox. Syscalls only.
fn become_command(
    affinity: Option<&sys::CpuSet>,
    confine: Option<&crate::sandbox::Prepared>,
) -> Result<(), (Step, i32)> {
    if let Some(set) = affinity {
        // Best effort: a command left on one CPU only runs slower.
        let _ = sys::set_affinity(set);
    }
    if let Err(e) = nix::sys::signal::SigSet::empty().thread_set_mask() {
        return Err((Step::SignalMask, e as i32));
    }
    if let Some(confine) = confine {
        confine.apply_in_child().map_err(|e| (e.step, e.errno))?;
    }
    Ok(())
}

/// Give the spawning thread its CPU mask back.
fn unpin(pinned: bool, restore: Option<&sys::CpuSet>) {
    if pinned && let Some(set) = restore {
        let _ = sys::set_affinity(set);
    }
}

#[cfg(test)]
#[allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)] // `sys::vfork_run`, as `pidns`.
mod tests {
    use super::*;
    use crate::sys::testing::{ALLOCATIONS, in_forked_child};
    use std::sync::atomic::Ordering;

    /// The command's start on its `CLONE_VM` stack, through the deepest path it has: glibc's
    /// `execvpe` of a file without `#!`, which runs it under /bin/sh with the argument list
    /// copied on the stack. Its high-water mark stays below half of [`COMMAND_STACK`] (plus
    /// the pointer per argument `spawn` adds), and it allocates nothing.
    #[test]
    fn command_start_fits_its_stack_and_allocates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("no-shebang");
        std::fs::write(&script, "exit 7\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        // The sandbox as the kernel allows (best effort): its syscalls run on the stack too.
        let policy = crate::sandbox::Policy::resolve(None, dir.path(), None, None).unwrap();
        let needs = crate::sandbox::ChildNeeds {
            program: script.clone(),
            extra_read: vec![],
            tty: None,
        };
        let confine = crate::sandbox::prepare(
            &policy,
            &needs,
            crate::sandbox::Mode::BestEffort,
            &[],
            dir.path(),
        )
        .unwrap();
        let affinity = sys::affinity();
        for n_args in [0, 2000] {
            let args: Vec<OsString> = std::iter::once(script.clone().into_os_string())
                .chain((0..n_args).map(|i| OsString::from(format!("arg{i}"))))
                .collect();
            let env = [(OsStr::new("PATH"), OsStr::new("/usr/bin:/bin"))];
            let exec = sys::ExecArgs::new(
                script.as_os_str(),
                args.iter().map(OsString::as_os_str),
                env.iter().copied(),
            )
            .unwrap();
            let per_arg = (args.len() + 3) * 8;
            let mut stack = sys::CloneStack::new(COMMAND_STACK + per_arg).unwrap();
            stack.paint();
            let (report_r, report_w) = sys::pipe_cloexec().unwrap();
            let start = CommandStart {
                exec: &exec,
                report_fd: report_w,
                affinity: affinity.as_ref(),
                confine: Some(&confine),
            };
            let mut run = || {
                if sys::block_all_signals().is_err() {
                    return [u64::MAX; 3];
                }
                let before = ALLOCATIONS.load(Ordering::SeqCst);
                // SAFETY: this forked copy is single-threaded with every signal blocked;
                // `start_command` is the real child path (syscalls only).
                let Ok(pid) = (unsafe { sys::vfork_run(&mut stack, start_command, &start) }) else {
                    return [u64::MAX; 3];
                };
                let allocated = ALLOCATIONS.load(Ordering::SeqCst) - before;
                let status = sys::wait_for(pid).map_or(-1, |(_, s)| s);
                [status as u64, stack.high_water() as u64, allocated as u64]
            };
            // SAFETY: `run` makes only syscalls, on data built above.
            let [status, high_water, allocations] = unsafe { in_forked_child(&mut run) };
            sys::close(report_w);
            let mut report = [0u8; 5];
            let reported = sys::read_some(report_r, &mut report);
            sys::close(report_r);
            assert_eq!(reported, 0, "the command's start reported {report:?}");
            let status = status as i32;
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 7,
                "the script did not run under /bin/sh: status {status:#x}"
            );
            assert_eq!(allocations, 0, "the command's start allocated");
            eprintln!(
                "command start: {high_water} bytes of stack used, {} given",
                stack.usable()
            );
            assert!(
                high_water as usize <= COMMAND_STACK / 2 + per_arg,
                "{high_water} bytes used: COMMAND_STACK ({COMMAND_STACK}) has less than half to spare"
            );
        }
    }

    /// An overflow of the `CLONE_VM` stack faults on its guard page (SIGSEGV of the new
    /// process) instead of writing into the memory it shares with its parent.
    #[test]
    fn an_overflow_hits_the_guard_page() {
        fn recurse(depth: &u32) -> i32 {
            sys::reset_signal_handlers();
            fn down(n: u32) -> u32 {
                let frame = std::hint::black_box([n as u8; 512]);
                if n == 0 {
                    return u32::from(frame[0]);
                }
                std::hint::black_box(down(n - 1)) + u32::from(frame[1])
            }
            down(*depth) as i32
        }
        let mut stack = sys::CloneStack::new(16 * 1024).unwrap();
        let depth = 10_000u32;
        let mut run = || {
            // SAFETY: single-threaded forked copy; `recurse` makes no allocation (its frames
            // are on the stack it is meant to overflow) and resets the signal handlers first.
            let Ok(pid) = (unsafe { sys::vfork_run(&mut stack, recurse, &depth) }) else {
                return [u64::MAX; 3];
            };
            [sys::wait_for(pid).map_or(-1, |(_, s)| s) as u64, 0, 0]
        };
        // SAFETY: `run` makes only syscalls, on data built above.
        let [status, _, _] = unsafe { in_forked_child(&mut run) };
        let status = status as i32;
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV,
            "status {status:#x}"
        );
    }

    #[test]
    fn a_reported_step_is_the_runs_error() {
        let e = reported_error(Ok((Step::Seccomp, libc::EINVAL)), "sh");
        assert_eq!(e.exit_code(), 125);
        assert_eq!(
            e.to_string(),
            "setting up the child failed at install the seccomp filter: Invalid argument (os error 22)"
        );
        let e = reported_error(Ok((Step::ParentDeath, libc::ESRCH)), "sh");
        assert!(
            e.to_string()
                .starts_with("setting up the child failed at the parent-death signal: "),
            "{e}"
        );
        // The command's own exec: an exec error, not a set-up step.
        let e = reported_error(Ok((Step::Exec, libc::ENOEXEC)), "sh");
        assert_eq!(e.exit_code(), 126);
        assert_eq!(
            e.to_string(),
            "sh: cannot execute: not an executable format"
        );
    }

    #[test]
    fn an_unknown_step_fails_closed() {
        let report = [0xee, 1, 0, 0, 0];
        let e = reported_error(Step::decode(report), "sh");
        assert!(matches!(e, SpawnError::Setup { step: "setup", .. }), "{e}");
        assert_eq!(e.exit_code(), 125);
    }
}
