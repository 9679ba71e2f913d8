//! The one home of `unsafe`: the raw syscalls agentrun needs, each behind a function whose
//! signature says what its caller must uphold.
//!
//! Where `nix` has the wrapper it is used (kill, setsid, pipe2, unshare, setns, prctl,
//! setrlimit, sched affinity, mount, chdir, access, waitpid, signal masks); what is left
//! here is what nix does not cover (close_range, mount_setattr, capget/capset, Landlock,
//! seccomp, pidfd_open, a few ioctls) or covers only on an owned or borrowed descriptor where
//! the caller holds a raw fd number between fork and exec. A function that is sound only under
//! a contract its caller must keep (it runs between fork and exec, or shares the caller's
//! memory) is an `unsafe fn` with a `# Safety` section; everything else is safe. Every
//! `unsafe` block has one unsafe operation and a `// SAFETY:` note (the lints
//! `clippy::undocumented_unsafe_blocks` and `clippy::multiple_unsafe_ops_per_block` hold it).
//!
//! Everything here that runs in a forked child (between fork and exec) is async-signal-safe:
//! plain syscalls, no allocation, no locks; a failure is a bare errno (`i32`).
//!
//! - [`step`]: the child-setup steps, and how the child reports the one that failed.
//! - [`clone`]: fork, the `CLONE_VM` start of the command, its stack and its exec arguments.
//! - [`fd`]: descriptors, pipes, poll, terminals.
//! - [`mount`]: the child's own network and mount namespaces.
//! - [`caps`]: capabilities, `no_new_privs`, Landlock and seccomp installation.
//! - `trace`: `learn`'s traced child (it stops for its tracer before its filter and exec) and
//!   the reading of `PTRACE_GET_SYSCALL_INFO`.
//!
//! May import nothing of the crate: every other module may import it.
#![allow(unsafe_code)]

mod caps;
mod clone;
mod fd;
mod mount;
pub mod step;
#[cfg(test)]
pub(crate) mod testing;
mod trace;

pub(crate) use caps::*;
pub use clone::*;
pub use fd::*;
pub use mount::*;
pub use step::{Step, UnknownStep, report_step};
pub use trace::{SyscallStop, TracedStart, spawn_traced, syscall_stop};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;
use std::io;
use std::os::fd::RawFd;

/// Errno of the last failed libc call, without allocating.
fn errno() -> i32 {
    nix::errno::Errno::last_raw()
}

/// A nix error as the bare errno the child-side functions report.
fn raw(e: nix::errno::Errno) -> i32 {
    e as i32
}

/// Ask for SIGKILL when the parent thread dies, then close the race where the parent
/// died before the request. Async-signal-safe.
pub fn die_with_parent(parent: libc::pid_t) -> Result<(), i32> {
    set_pdeathsig_kill()?;
    if nix::unistd::getppid().as_raw() != parent {
        return Err(libc::ESRCH);
    }
    Ok(())
}

/// A new session, so the child has no controlling terminal to inject input into and
/// leads its own process group. Async-signal-safe.
pub fn new_session() -> Result<(), i32> {
    nix::unistd::setsid().map(drop).map_err(raw)
}

/// A resource limit, as [`set_rlimit`] takes it.
pub use nix::sys::resource::Resource;

/// setrlimit with soft = hard = `value`. Async-signal-safe.
pub fn set_rlimit(resource: Resource, value: u64) -> Result<(), i32> {
    nix::sys::resource::setrlimit(resource, value, value).map_err(raw)
}

/// Send `sig` to a process group (negative pid) or process.
pub fn kill(pid: libc::pid_t, sig: i32) -> io::Result<()> {
    let sig = Signal::try_from(sig)?;
    nix::sys::signal::kill(Pid::from_raw(pid), sig)?;
    Ok(())
}

/// `waitpid(pid, 0 | __WALL)`, retrying on EINTR: `(pid, raw wait status)`.
pub fn wait_for(pid: libc::pid_t) -> Result<(libc::pid_t, libc::c_int), i32> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: waitpid writes the status into the valid int we pass. (nix's waitpid
        // decodes the status, and the callers want the raw one to pass on.)
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r > 0 {
            return Ok((r, status));
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// End this process now, without running destructors or atexit handlers.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is async-signal-safe.
    unsafe { libc::_exit(code) }
}

/// End this process by signal `sig` (so whoever waits for it sees the same death as the
/// process it reports for); `_exit(128 + sig)` if the signal does not kill.
pub fn die_by_signal(sig: libc::c_int) -> ! {
    if let Ok(s) = Signal::try_from(sig) {
        let dfl = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::SigDfl,
            nix::sys::signal::SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: installing SIG_DFL runs no code of ours in a signal context.
        let _ = unsafe { nix::sys::signal::sigaction(s, &dfl) };
        let mut set = SigSet::empty();
        set.add(s);
        let _ = set.thread_unblock();
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), s);
    }
    exit_now(128 + sig)
}

/// Block every signal on the calling thread (SIGKILL and SIGSTOP stay deliverable).
pub fn block_all_signals() -> Result<(), i32> {
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), None)
        .map_err(|_| libc::EINVAL)
}

/// `unshare(flags)`.
pub fn unshare(flags: libc::c_int) -> Result<(), i32> {
    nix::sched::unshare(nix::sched::CloneFlags::from_bits_retain(flags)).map_err(raw)
}

/// `PR_SET_DUMPABLE`: whether same-user processes may ptrace us and own our `/proc` files.
pub fn set_dumpable(on: bool) -> Result<(), i32> {
    nix::sys::prctl::set_dumpable(on).map_err(raw)
}

/// Ask for SIGKILL when the parent dies (no race check: see the caller).
pub fn set_pdeathsig_kill() -> Result<(), i32> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(raw)
}

/// True when the read end of the pipe whose write end is `fd` is closed everywhere, which
/// for a pipe whose only other reader is the parent means: the parent is gone.
/// `PR_SET_PDEATHSIG` first, then this check: the race check for a child that cannot use
/// `getppid()` (PID 1 of a new PID namespace sees 0). Async-signal-safe.
pub fn die_with_reader(fd: RawFd) -> Result<(), i32> {
    set_pdeathsig_kill()?;
    if readers_gone(fd) {
        return Err(libc::ESRCH);
    }
    Ok(())
}

/// Which `unshare` flags give this process a PID namespace, tried in a throwaway child:
/// `CLONE_NEWPID` alone (root), else with `CLONE_NEWUSER` (unprivileged user namespaces).
/// `Err` carries the errno of the last attempt.
pub fn probe_pid_namespace() -> Result<libc::c_int, i32> {
    // Above every errno, so the exit code says which attempt worked or why the last failed.
    const ALONE: i32 = 200;
    const WITH_USER: i32 = 201;
    // SAFETY: the child below makes only syscalls (unshare, _exit) and touches no lock.
    let pid = unsafe { fork_raw() }?;
    if pid == 0 {
        // The throwaway child: only syscalls, then _exit.
        if unshare(libc::CLONE_NEWPID).is_ok() {
            exit_now(ALONE);
        }
        match unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWPID) {
            Ok(()) => exit_now(WITH_USER),
            Err(e) => exit_now(e.clamp(1, 199)),
        }
    }
    let (_, status) = wait_for(pid)?;
    if !libc::WIFEXITED(status) {
        return Err(libc::ECHILD);
    }
    match libc::WEXITSTATUS(status) {
        ALONE => Ok(libc::CLONE_NEWPID),
        WITH_USER => Ok(libc::CLONE_NEWUSER | libc::CLONE_NEWPID),
        e => Err(e),
    }
}

// --- Start-up scheduling: hand the CPU from parent to child (see `launch::spawn`) ---

/// A CPU affinity mask, copied by value so the forked child can use it.
pub type CpuSet = nix::sched::CpuSet;

/// This thread's affinity mask; `None` if the kernel's mask does not fit a `cpu_set_t`.
pub fn affinity() -> Option<CpuSet> {
    nix::sched::sched_getaffinity(Pid::from_raw(0)).ok()
}

/// The CPU this thread runs on, as a one-CPU mask, if it is one of `allowed`'s.
pub fn current_cpu_within(allowed: &CpuSet) -> Option<CpuSet> {
    let cpu = nix::sched::sched_getcpu().ok()?;
    if !allowed.is_set(cpu).ok()? {
        return None;
    }
    let mut set = CpuSet::new();
    set.set(cpu).ok()?;
    Some(set)
}

/// Restrict this thread to `set`. Async-signal-safe.
pub fn set_affinity(set: &CpuSet) -> Result<(), i32> {
    nix::sched::sched_setaffinity(Pid::from_raw(0), set).map_err(raw)
}

/// A pidfd for this process (to return to its own namespaces with [`setns`]).
pub fn pidfd_self() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let pid = nix::unistd::getpid().as_raw();
    // SAFETY: pidfd_open takes integers; on success it returns a new fd that we own.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: r is a fresh fd from pidfd_open, owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(r as RawFd) })
}

/// `setns(fd, nstype)`: with a pidfd and `CLONE_NEWPID`, later children of this thread are
/// created in that process's PID namespace again.
pub fn setns(fd: std::os::fd::BorrowedFd, nstype: libc::c_int) -> io::Result<()> {
    nix::sched::setns(fd, nix::sched::CloneFlags::from_bits_retain(nstype))?;
    Ok(())
}

/// A raw `int 0x80` getpid (the i386 syscall ABI), for the test that the seccomp filter kills
/// a process that uses it.
#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) fn int80_getpid() {
    let mut eax: u32 = 20;
    // SAFETY: `int 0x80` with eax = 20 is getpid in the i386 table: it reads and writes no
    // memory of ours and returns its result in eax.
    unsafe { std::arch::asm!("int 0x80", inout("eax") eax, options(nostack)) };
    let _ = eax;
}
