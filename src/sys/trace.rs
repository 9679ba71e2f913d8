//! ptrace, for `agentrun learn` only: start a command that stops for its tracer before it
//! installs a `SECCOMP_RET_TRACE` filter and execs, and read what each stop is about.
//!
//! The tracer is the thread that calls [`spawn_traced`] (`PTRACE_TRACEME` makes the forking
//! thread the tracer): it must also be the thread that waits and calls ptrace. No
//! privilege is needed: a process may trace its own child (Yama's `ptrace_scope` 0 to 2;
//! 3 forbids it, and `learn` then says so).

use super::{clone::ExecArgs, errno, raw};
use nix::sys::ptrace;
use nix::unistd::Pid;
use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;

/// What the traced child gets.
pub struct TracedStart<'a> {
    pub exec: &'a ExecArgs,
    pub cwd: &'a CStr,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// Descriptors it inherits (secret files).
    pub inherit: &'a [RawFd],
    /// The `learn` filter (`SECCOMP_RET_TRACE` for what is observed).
    pub filter: &'a [libc::sock_filter],
    /// The highest capability number, to empty the bounding set.
    pub last_cap: u32,
}

/// Forks the command. The child stops itself with `SIGSTOP` right after `PTRACE_TRACEME`;
/// the caller (this thread: the tracer) sets its options and lets it go on. It then loses
/// every capability, sets `no_new_privs`, installs the filter and execs. Exit 125 in the
/// child means a setup step failed, 126/127 that the exec did.
pub fn spawn_traced(s: &TracedStart) -> io::Result<Pid> {
    // SAFETY: the child runs `traced_child` only, which makes plain syscalls (no allocation,
    // no locks) on data prepared before the fork, and ends in exec or `_exit`.
    let pid = unsafe { super::fork_raw() }.map_err(io::Error::from_raw_os_error)?;
    if pid == 0 {
        traced_child(s);
    }
    Ok(Pid::from_raw(pid))
}

/// The child side of [`spawn_traced`]. Async-signal-safe.
fn traced_child(s: &TracedStart) -> ! {
    let setup = |r: Result<(), i32>| {
        if r.is_err() {
            super::exit_now(125);
        }
    };
    setup(dup_onto(s.stdout, 1));
    setup(dup_onto(s.stderr, 2));
    for &fd in s.inherit {
        setup(super::inherit_fd(fd));
    }
    setup(super::mount::chdir(s.cwd));
    super::reset_signal_handlers();
    // The child stays as undumpable as agentrun until its exec replaces its memory (a copy
    // of agentrun's, with the backends' credentials): no process, not even the tracer, can
    // read it before. The tracer sees the exec's path from the exec event instead.
    setup(ptrace::traceme().map_err(raw));
    setup(stop_self());
    setup(super::set_no_new_privs());
    if super::has_cap_setpcap().unwrap_or(false) {
        setup(super::drop_bounding_set(s.last_cap));
    }
    match super::clear_ambient() {
        Ok(()) | Err(libc::EINVAL) => {}
        Err(e) => setup(Err(e)),
    }
    setup(super::clear_capabilities());
    setup(super::seccomp_install(s.filter));
    let e = s.exec.exec();
    super::exit_now(if e == libc::ENOENT { 127 } else { 126 })
}

/// `dup2(from, to)`.
fn dup_onto(from: RawFd, to: RawFd) -> Result<(), i32> {
    // SAFETY: dup2 on integer fds touches only this process's fd table.
    let r = unsafe { libc::dup2(from, to) };
    if r < 0 { Err(errno()) } else { Ok(()) }
}

/// `kill(getpid(), SIGSTOP)` with raw syscalls (glibc's cached ids are stale after a raw fork).
fn stop_self() -> Result<(), i32> {
    // SAFETY: getpid takes no arguments.
    let me = unsafe { libc::syscall(libc::SYS_getpid) };
    // SAFETY: kill with an integer pid and signal.
    let r = unsafe { libc::syscall(libc::SYS_kill, me, libc::SIGSTOP) };
    if r < 0 { Err(errno()) } else { Ok(()) }
}

/// What a ptrace stop of a traced syscall is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyscallStop {
    /// The filter stopped it before it ran: its number, arguments and audit arch.
    Seccomp { nr: u64, args: [u64; 6], arch: u32 },
    /// It returned: its value (a negative errno when `error`).
    Exit { value: i64, error: bool },
    /// Anything else (a syscall-entry stop, or no syscall).
    Other,
}

/// `PTRACE_GET_SYSCALL_INFO` (Linux 5.3) for a tracee in a syscall stop.
pub fn syscall_stop(pid: Pid) -> nix::Result<SyscallStop> {
    let info = ptrace::syscall_info(pid)?;
    Ok(match info.op {
        libc::PTRACE_SYSCALL_INFO_SECCOMP => {
            // SAFETY: `op` says the kernel filled the `seccomp` member of the union.
            let s = unsafe { info.u.seccomp };
            SyscallStop::Seccomp {
                nr: s.nr,
                args: s.args,
                arch: info.arch,
            }
        }
        libc::PTRACE_SYSCALL_INFO_EXIT => {
            // SAFETY: `op` says the kernel filled the `exit` member of the union.
            let x = unsafe { info.u.exit };
            SyscallStop::Exit {
                value: x.sval,
                error: x.is_error != 0,
            }
        }
        _ => SyscallStop::Other,
    })
}
