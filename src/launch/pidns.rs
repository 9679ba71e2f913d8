//! No survivors: the child runs in its own PID namespace under a tiny init.
//!
//! `PR_SET_PDEATHSIG` reaches only the child itself, and a `setsid()` grandchild of a
//! SIGKILLed agentrun would live on under PID 1 with whatever it took. When the init of a PID
//! namespace dies, the kernel kills everything in the namespace, so agentrun puts the child in
//! one and ties that init's life to its own.
//!
//! As root (`CLONE_NEWPID` alone), agentrun's spawning thread unshares the namespace itself
//! just before the fork (see [`NextChildInNewNs`]), so std's forked child is already the init:
//!
//! ```text
//! agentrun ── C1 (std's forked child, PID 1: setsid, limits, fds; the init; dies with agentrun)
//!              └── C2 (PID 2: confined by the sandbox, execs the command)
//! ```
//!
//! Unprivileged, a user namespace must come with it, which only a single-threaded process
//! can unshare, so std's child does it and one more process is needed:
//!
//! ```text
//! agentrun ── C1 (std's forked child: setsid, limits, fds; then unshare(USER|PID))
//!              └── C2 (PID 1 of the new namespace: the init; dies with C1)
//!                   └── C3 (PID 2: confined by the sandbox, execs the command)
//! ```
//!
//! C1 dies with agentrun (its parent-death signal), an init outside agentrun's direct child
//! with C1, and every descendant of the command, however it detached, with the init. The
//! processes above the command block all signals, close every descriptor they do not need
//! (so std's exec-error pipe reports the command's exec, and the output pipes see EOF when
//! its tree is done) and never return from `pre_exec`. agentrun sends the signals it
//! forwards to its own child only: the init reads them from a signalfd and passes each to
//! every process of the namespace (`kill(-1, sig)`), and the watcher C1 of the unprivileged
//! chain relays them to the init. A command that leaves its process group (`setpgid`,
//! `setsid`, a double fork) is still in the namespace, so signals and the time limit reach
//! it; a SIGKILL of agentrun's child ends the whole namespace at once. The init reaps every
//! orphan; when the command ends it writes the command's wait status to a pipe and exits, which kills what is
//! left. An init cannot die by a signal it sends itself, so as C1 it exits with 128 + N and
//! agentrun takes the command's real status from the pipe (`launch::run`); as C2 it hands
//! the status to C1, which ends the same way the command did. Exit codes and the audit
//! log's `signal` stay as without a namespace.
//!
//! Unprivileged, the user namespace gets the caller's own uid and gid mapped to themselves
//! (`setgroups` denied); writing those maps needs the process dumpable for a moment (see
//! [`Plan::enter`]).
//!
//! The command itself (C2 or C3) is started with `clone(CLONE_VM | CLONE_VFORK)`
//! ([`sys::vfork_run`]): it runs on its parent's memory until its own `execve`, as with
//! `posix_spawn`, instead of on a copy of the launcher's page tables that the exec would
//! throw away. Its parent waits meanwhile. This was kept rather than replaced by a plain
//! fork, with its rules enforced by the shape of the code: the command's start is a plain
//! `fn` on borrowed data built before the first fork, on a stack of its own with a guard page,
//! sized from a bound that a unit test measures (see `sys::clone` and `launch::spawn`).
//!
//! Runs between fork and exec: syscalls only, everything allocated before the fork. A
//! failure is reported as a [`Step`] and an errno.

use crate::sandbox::Isolation;
use crate::sys::{self, Step};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Built in the parent, entered in the forked child.
#[derive(Debug, Clone)]
pub struct Plan {
    flags: libc::c_int,
    /// The write end of the pipe on which an init that is std's own child (C1) reports the
    /// command's wait status; -1 when the init is C2 (it reports to C1 on its own pipe).
    status_w: libc::c_int,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
}

impl Plan {
    /// `flags` as found by [`sys::probe_pid_namespace`]: `CLONE_NEWPID`, maybe `CLONE_NEWUSER`.
    pub fn new(flags: libc::c_int) -> Plan {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        Plan {
            flags,
            status_w: -1,
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
        }
    }

    /// Whether a user namespace comes with the PID namespace.
    pub fn with_user_ns(&self) -> bool {
        self.flags & libc::CLONE_NEWUSER != 0
    }

    /// Whether agentrun's spawning thread unshares the namespace before the fork (root: no
    /// user namespace needed), which makes std's child the init.
    pub fn unshared_by_parent(&self) -> bool {
        self.flags == libc::CLONE_NEWPID
    }

    /// Where the init (std's own child, see [`Plan::unshared_by_parent`]) writes the
    /// command's wait status.
    pub fn report_status_to(&mut self, fd: libc::c_int) {
        self.status_w = fd;
    }

    /// In std's forked child (C1), after its session, limits and descriptors are set up.
    /// Starts the command with [`sys::vfork_run`]: `command(arg)` runs in the process that
    /// becomes the command (C2 when the parent unshared, else C3), with all signals blocked
    /// (it sets the command's mask), and execs or returns an exit code on failure (having
    /// reported why). The processes above it become the init (and watcher) and never return;
    /// only a failure to get that far returns, as `(step, errno)`. `affinity`, when given, is
    /// restored in every process (the launcher pins the start to one CPU).
    ///
    /// The command shares its parent's memory until its exec instead of copying it: that
    /// copy was a fork of the launcher's whole address space, thrown away by the exec.
    ///
    /// `iso` adds the child's own network and mount namespaces, set up here, before the
    /// command exists (see `sandbox::isolate`).
    ///
    /// # Safety
    /// The caller is a single-threaded forked child (std's `pre_exec`), and `command` keeps
    /// [`sys::vfork_run`]'s contract: syscalls only, on a stack `stack` is large enough for.
    #[allow(unsafe_code)] // Calls `sys::fork_raw` and `sys::vfork_run`; see the module header.
    pub unsafe fn enter<T>(
        &self,
        iso: &Isolation,
        affinity: Option<&sys::CpuSet>,
        stack: &mut sys::CloneStack,
        command: fn(&T) -> i32,
        arg: &T,
    ) -> (Step, i32) {
        if let Err(e) = sys::block_all_signals() {
            return (Step::PidNamespace, e);
        }
        if self.unshared_by_parent() {
            // C1 is PID 1 already (and root): its own network and mount namespaces, then
            // start the command and become its init.
            if iso.unshare_flags() != 0
                && let Err(e) = sys::unshare(iso.unshare_flags())
            {
                return (Step::PidNamespace, e);
            }
            if let Err(e) = iso.apply_in_child() {
                return e;
            }
            if let Err(e) = iso.apply_in_init() {
                return e;
            }
            // SAFETY: the caller's contract, passed on.
            return unsafe { init_of_command(stack, command, arg, affinity, self.status_w) };
        }
        if let Err(e) = sys::unshare(self.flags | iso.unshare_flags()) {
            return (Step::PidNamespace, e);
        }
        if self.with_user_ns()
            && let Err(e) = self.write_maps()
        {
            return (Step::UserMaps, e);
        }
        if let Err(e) = iso.apply_in_child() {
            return e;
        }
        let (status_r, status_w) = match sys::pipe_cloexec() {
            Ok(p) => p,
            Err(e) => return (Step::PidInit, e),
        };
        // SAFETY: this process is single-threaded (the caller's contract); both it and the
        // init make only syscalls from here on.
        let init = match unsafe { sys::fork_raw() } {
            Ok(pid) => pid,
            Err(e) => return (Step::PidInit, e),
        };
        if init != 0 {
            restore(affinity);
            sys::close(status_w);
            sys::close_all_except(status_r);
            watch(init, status_r);
        }
        // C2, PID 1 of the new namespace.
        sys::close(status_r);
        if let Err(e) = sys::set_pdeathsig_kill() {
            return (Step::PidInit, e);
        }
        // getppid() is 0 here (the parent is outside the namespace): C1 holds the only read
        // end of the status pipe, so a closed read end means C1 died before the line above.
        if sys::readers_gone(status_w) {
            sys::exit_now(137);
        }
        if let Err(e) = iso.apply_in_init() {
            return e;
        }
        // SAFETY: the caller's contract, passed on (the init is a fork of this process).
        unsafe { init_of_command(stack, command, arg, affinity, status_w) }
    }

    /// Identity maps for the new user namespace. The kernel lets only a dumpable process
    /// open its own map files, so C1 is dumpable for these three writes and then not again.
    /// No child exists yet; for those microseconds another unconfined process of the same
    /// user could ptrace C1 (see docs/threat-model.md).
    fn write_maps(&self) -> Result<(), i32> {
        sys::set_dumpable(true)?;
        let r = sys::write_file(c"/proc/self/setgroups", b"deny")
            .and_then(|()| sys::write_file(c"/proc/self/uid_map", &self.uid_map))
            .and_then(|()| sys::write_file(c"/proc/self/gid_map", &self.gid_map));
        sys::set_dumpable(false)?;
        r
    }
}

/// In the PID namespace's init: start the command with [`sys::vfork_run`], then reap until
/// it ends and report its status on `status_w`. Returns only if the command could not be
/// started.
///
/// # Safety
/// As [`Plan::enter`].
#[allow(unsafe_code)] // Calls `sys::vfork_run`.
unsafe fn init_of_command<T>(
    stack: &mut sys::CloneStack,
    command: fn(&T) -> i32,
    arg: &T,
    affinity: Option<&sys::CpuSet>,
    status_w: i32,
) -> (Step, i32) {
    // SAFETY: this process is a single-threaded fork of the launcher (std's child or the
    // init forked from it) holding no lock, with every signal blocked; `command` (spawn.rs)
    // makes only syscalls and cannot panic; the stack is this run's own, used by nothing else.
    let agent = match unsafe { sys::vfork_run(stack, command, arg) } {
        Ok(pid) => pid,
        Err(e) => return (Step::PidInit, e),
    };
    restore(affinity);
    sys::close_all_except(status_w);
    init_loop(agent, status_w)
}

/// Back to the caller's CPU mask (best effort: a process left on one CPU only runs slower).
fn restore(affinity: Option<&sys::CpuSet>) {
    if let Some(set) = affinity {
        let _ = sys::set_affinity(set);
    }
}

/// agentrun's spawning thread, between [`NextChildInNewNs::enter`] and
/// [`NextChildInNewNs::leave`]: its next child is created as PID 1 of a new PID namespace.
///
/// The thread cannot create threads meanwhile (the kernel refuses a thread in another PID
/// namespace than its process), so `leave` must come right after the spawn.
pub struct NextChildInNewNs {
    own: std::os::fd::OwnedFd,
}

impl NextChildInNewNs {
    pub fn enter() -> std::io::Result<NextChildInNewNs> {
        let own = sys::pidfd_self()?;
        sys::unshare(libc::CLONE_NEWPID).map_err(std::io::Error::from_raw_os_error)?;
        Ok(NextChildInNewNs { own })
    }

    /// Back to agentrun's own PID namespace for later children and threads.
    pub fn leave(self) -> std::io::Result<()> {
        use std::os::fd::AsFd;
        sys::setns(self.own.as_fd(), libc::CLONE_NEWPID)
    }
}

/// C1: relay the forwarded signals to the init, wait for it, then end the way the command
/// did.
///
/// C1 is agentrun's own child, so it is where agentrun's signals arrive; the init is one
/// level down, in the new namespace, and does the forwarding to the whole tree (see
/// [`init_loop`]). A SIGKILL of C1 kills the init (its parent-death signal), and with it
/// the namespace.
fn watch(init: libc::pid_t, status_r: i32) -> ! {
    let Ok(signals) = wait_set() else {
        sys::exit_now(125)
    };
    let init_status = loop {
        match reap(init) {
            Reaped::Status(_, s) => break s,
            Reaped::None => {}
            Reaped::NoChildren => sys::exit_now(125),
        }
        if let Some(sig) = next_to_forward(&signals) {
            let _ = sys::kill(init, sig);
        }
    };
    let mut buf = [0u8; 4];
    let status = if sys::read_some(status_r, &mut buf) == 4 {
        i32::from_ne_bytes(buf)
    } else {
        // The init died without reporting (SIGKILL from outside, or a setup failure it
        // already reported through std's pipe): end like it.
        init_status
    };
    end_like(status)
}

/// The init: reap everything, and pass each forwarded signal to every process in the
/// namespace; when the command ends, report its status and exit, which makes the kernel kill
/// whatever is left in the namespace.
///
/// All signals stay blocked (an init has no handlers); the forwarded ones and SIGCHLD are
/// read from a signalfd. A blocked signal is queued even for a namespace's init, which the
/// kernel otherwise shields from signals it has no handler for, so whatever agentrun (or
/// the watcher above) sends arrives here. `kill(-1, sig)` from the init reaches every
/// other process of the namespace, however the command grouped them (`setpgid`, `setsid`,
/// double fork): leaving the process group does not leave the namespace.
///
/// Only signals a process sent are passed on. The terminal's own (Ctrl-C's SIGINT, SIGWINCH,
/// a hang-up) reach the pty's foreground process group, which the init and the command
/// share, straight from the kernel: passing them on too would deliver them twice.
fn init_loop(agent: libc::pid_t, status_w: i32) -> ! {
    let Ok(signals) = wait_set() else {
        sys::exit_now(125)
    };
    loop {
        // Reap first: SIGCHLDs coalesce, and one may have come before the first wait.
        loop {
            match reap(-1) {
                Reaped::Status(pid, status) if pid == agent => {
                    sys::write_best_effort(status_w, &status.to_ne_bytes());
                    sys::exit_now(code_of(status));
                }
                Reaped::Status(..) => {}
                Reaped::None => break,
                Reaped::NoChildren => sys::exit_now(125),
            }
        }
        if let Some(sig) = next_to_forward(&signals) {
            let _ = sys::kill(-1, sig);
        }
    }
}

/// The signals the init and the watcher take, the ones agentrun forwards and SIGCHLD, as a
/// blocking signalfd (they are blocked already, with all others).
fn wait_set() -> nix::Result<SignalFd> {
    let mut set = SigSet::empty();
    for s in super::supervise::FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC)
}

/// Wait for the next signal; the number to pass on when a process sent it (not SIGCHLD,
/// not one the kernel raised for the terminal).
fn next_to_forward(signals: &SignalFd) -> Option<i32> {
    let info = signals.read_signal().ok()??;
    let sig = info.ssi_signo as i32;
    (sig != libc::SIGCHLD && info.ssi_code != libc::SI_KERNEL).then_some(sig)
}

enum Reaped {
    /// `(pid, raw wait status)`
    Status(libc::pid_t, i32),
    /// Nothing has exited yet.
    None,
    NoChildren,
}

/// `waitpid(pid, WNOHANG | __WALL)`, with the status as a raw wait status.
fn reap(pid: libc::pid_t) -> Reaped {
    loop {
        return match waitpid(
            Pid::from_raw(pid),
            Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
        ) {
            Ok(WaitStatus::Exited(p, code)) => Reaped::Status(p.as_raw(), (code & 0xff) << 8),
            Ok(WaitStatus::Signaled(p, sig, core)) => {
                Reaped::Status(p.as_raw(), sig as i32 | if core { 0x80 } else { 0 })
            }
            Ok(WaitStatus::StillAlive) => Reaped::None,
            // Stopped or continued: not an ending.
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => Reaped::NoChildren,
        };
    }
}

/// The exit code for a wait status: the code, or 128 + signal.
fn code_of(status: i32) -> i32 {
    if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

fn end_like(status: i32) -> ! {
    if libc::WIFSIGNALED(status) {
        sys::die_by_signal(libc::WTERMSIG(status));
    }
    sys::exit_now(libc::WEXITSTATUS(status))
}
