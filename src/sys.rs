//! The few raw syscalls agentrun needs that no safe wrapper covers, each as a safe fn.
//!
//! Everything here that runs in the forked child (between fork and exec) is
//! async-signal-safe: plain syscalls, no allocation, no locks.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;
use std::process::Command;

/// Register `f` to run in the child after fork, before exec.
///
/// `f` must only make syscalls: it runs in a copy of a possibly multi-threaded process
/// where another thread may have held the allocator's lock at fork time.
pub fn set_pre_exec<F>(cmd: &mut Command, f: F)
where
    F: FnMut() -> io::Result<()> + Send + Sync + 'static,
{
    use std::os::unix::process::CommandExt;
    // SAFETY: callers pass closures that make only async-signal-safe syscalls (see the
    // launcher's `child_setup`), which is what `pre_exec` requires.
    unsafe {
        cmd.pre_exec(f);
    }
}

/// Errno of the last failed libc call.
fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Mark every fd from `first` up close-on-exec (Linux 5.11+ `close_range` with
/// `CLOSE_RANGE_CLOEXEC`). Async-signal-safe.
pub fn cloexec_from(first: u32) -> Result<(), i32> {
    // SAFETY: close_range takes plain integers and touches only this process's fd table.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

/// Clear close-on-exec on `fd` so the child inherits it. Async-signal-safe.
pub fn inherit_fd(fd: RawFd) -> Result<(), i32> {
    // SAFETY: fcntl(F_SETFD) on an integer fd; an invalid fd yields EBADF, nothing else.
    let r = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

/// Ask for SIGKILL when the parent thread dies, then close the race where the parent
/// died before the request. Async-signal-safe.
pub fn die_with_parent(parent: libc::pid_t) -> Result<(), i32> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if r != 0 {
        return Err(errno());
    }
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } != parent {
        return Err(libc::ESRCH);
    }
    Ok(())
}

/// A new session, so the child has no controlling terminal to inject input into and
/// leads its own process group. Async-signal-safe.
pub fn new_session() -> Result<(), i32> {
    // SAFETY: setsid takes no arguments.
    if unsafe { libc::setsid() } < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Make `fd` (a pty slave) the controlling terminal of this new session. Async-signal-safe.
pub fn set_controlling_tty(fd: RawFd) -> Result<(), i32> {
    // SAFETY: TIOCSCTTY takes an integer argument; fd is a terminal we opened.
    let r = unsafe { libc::ioctl(fd, libc::TIOCSCTTY as _, 0) };
    if r < 0 { Err(errno()) } else { Ok(()) }
}

/// setrlimit with soft = hard = `value`. Async-signal-safe.
pub fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> Result<(), i32> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `lim` is a valid rlimit on our stack.
    let r = unsafe { libc::setrlimit(resource, &lim) };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

/// Write all of `buf` to `fd`, ignoring failures (used to report a setup error from the
/// child, where nothing better can be done). Async-signal-safe.
pub fn write_best_effort(fd: RawFd, buf: &[u8]) {
    // SAFETY: buf is a valid slice for its length.
    let _ = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
}

/// Send `sig` to a process group (negative pid) or process.
pub fn kill(pid: libc::pid_t, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes integers only.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// True when `path` is executable for us (`access(X_OK)`).
pub fn executable(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c is a valid NUL-terminated string.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

/// The window size of the terminal on `fd`, if it is one.
pub fn window_size(fd: RawFd) -> Option<libc::winsize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the valid struct we pass.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (r == 0).then_some(ws)
}

/// Set the window size of the terminal (pty master) on `fd`.
pub fn set_window_size(fd: RawFd, ws: &libc::winsize) {
    // SAFETY: TIOCSWINSZ reads the valid struct we pass.
    let _ = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, ws) };
}
