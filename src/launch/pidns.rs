//! No survivors: the child runs in its own PID namespace under a tiny init.
//!
//! `PR_SET_PDEATHSIG` reaches only the child itself, and a `setsid()` grandchild of a
//! SIGKILLed agentrun would live on under PID 1 with whatever it took. When the init of a PID
//! namespace dies, the kernel kills everything in the namespace, so agentrun puts the child in
//! one and ties that init's life to its own:
//!
//! ```text
//! agentrun ── C1 (std's forked child: setsid, limits, fds; then unshare(CLONE_NEWPID))
//!              └── C2 (PID 1 of the new namespace: the init; dies with C1)
//!                   └── C3 (PID 2: confined by the sandbox, execs the command)
//! ```
//!
//! C1 dies with agentrun (its parent-death signal), C2 with C1, and every descendant of C3,
//! however it detached, with C2. C1 and C2 block all signals, close every descriptor they do
//! not need (so std's exec-error pipe reports C3's exec, and the output pipes see EOF when
//! C3's tree is done) and never return from `pre_exec`. agentrun forwards signals to the
//! process group, which C3 shares with C1 and C2. C2 reaps every orphan; when C3 ends it
//! passes C3's wait status to C1 over a pipe and exits, which kills what is left; C1 ends the
//! same way C3 did (exit code, or death by the same signal), so exit codes stay as without.
//!
//! As root `unshare(CLONE_NEWPID)` is enough. Unprivileged, a user namespace comes with it
//! (the caller's own uid and gid mapped to themselves, `setgroups` denied); writing those maps
//! needs the process dumpable for a moment (see [`Plan::enter`]).
//!
//! Runs between fork and exec: syscalls only, everything allocated before the fork.

use crate::sys;

/// The steps that can fail, reported as `(step, errno)` by [`Plan::enter`].
pub const STEP_UNSHARE: usize = 0;
pub const STEP_USER_MAP: usize = 1;
pub const STEP_FORK: usize = 2;

/// Built in the parent, entered in the forked child.
#[derive(Debug, Clone)]
pub struct Plan {
    flags: libc::c_int,
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
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
        }
    }

    /// Whether a user namespace comes with the PID namespace.
    pub fn with_user_ns(&self) -> bool {
        self.flags & libc::CLONE_NEWUSER != 0
    }

    /// In std's forked child (C1), after its session, limits and descriptors are set up.
    /// Returns only in C3, the process that goes on to be confined and exec the command; with
    /// all signals blocked (the caller sets the child's mask). C1 and C2 end in here.
    pub fn enter(&self) -> Result<(), (usize, i32)> {
        sys::block_all_signals().map_err(|e| (STEP_UNSHARE, e))?;
        sys::unshare(self.flags).map_err(|e| (STEP_UNSHARE, e))?;
        if self.with_user_ns() {
            self.write_maps().map_err(|e| (STEP_USER_MAP, e))?;
        }
        let (status_r, status_w) = sys::pipe_cloexec().map_err(|e| (STEP_FORK, e))?;
        let init = sys::fork_raw().map_err(|e| (STEP_FORK, e))?;
        if init != 0 {
            sys::close(status_w);
            sys::close_all_except(status_r);
            watch(init, status_r);
        }
        // C2, PID 1 of the new namespace.
        sys::close(status_r);
        sys::set_pdeathsig_kill().map_err(|e| (STEP_FORK, e))?;
        // getppid() is 0 here (the parent is outside the namespace): C1 holds the only read
        // end of the status pipe, so a closed read end means C1 died before the line above.
        if sys::readers_gone(status_w) {
            sys::exit_now(137);
        }
        let agent = sys::fork_raw().map_err(|e| (STEP_FORK, e))?;
        if agent != 0 {
            sys::close_all_except(status_w);
            init_loop(agent, status_w);
        }
        // C3.
        sys::close(status_w);
        Ok(())
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

/// C1: wait for the init, then end the way the command did.
fn watch(init: libc::pid_t, status_r: i32) -> ! {
    let init_status = match sys::wait_for(init) {
        Ok((_, s)) => s,
        Err(_) => sys::exit_now(125),
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

/// C2: reap everything; when the command ends, report its status and exit, which makes the
/// kernel kill whatever is left in the namespace.
fn init_loop(agent: libc::pid_t, status_w: i32) -> ! {
    loop {
        match sys::wait_for(-1) {
            Ok((pid, status)) if pid == agent => {
                sys::write_best_effort(status_w, &status.to_ne_bytes());
                sys::exit_now(code_of(status));
            }
            Ok(_) => {}
            Err(_) => sys::exit_now(125),
        }
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
