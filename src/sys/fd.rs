//! Descriptors: close-on-exec, pipes, poll, reads and writes on raw fds, terminals.
//!
//! The child-side functions take raw fd numbers: between fork and exec nothing may own (and
//! so close on drop) a descriptor the parent owns too. Async-signal-safe unless noted.

use super::{errno, raw};
use std::io;
use std::os::fd::RawFd;

/// Mark every fd from `first` up close-on-exec (Linux 5.11+ `close_range` with
/// `CLOSE_RANGE_CLOEXEC`; nix has no wrapper).
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

/// Clear close-on-exec on `fd` so the child inherits it.
pub fn inherit_fd(fd: RawFd) -> Result<(), i32> {
    // SAFETY: fcntl(F_SETFD) on an integer fd; an invalid fd yields EBADF, nothing else.
    let r = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

/// Make `fd` (a pty slave) the controlling terminal of this new session.
pub fn set_controlling_tty(fd: RawFd) -> Result<(), i32> {
    // SAFETY: TIOCSCTTY takes an integer argument; fd is a terminal we opened.
    let r = unsafe { libc::ioctl(fd, libc::TIOCSCTTY as _, 0) };
    if r < 0 { Err(errno()) } else { Ok(()) }
}

/// Write all of `buf` to `fd`, ignoring failures (used to report a setup error from the
/// child, where nothing better can be done).
pub fn write_best_effort(fd: RawFd, buf: &[u8]) {
    // SAFETY: buf is a valid slice for its length.
    let _ = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
}

/// A pipe, both ends close-on-exec: `(read, write)`, as raw fds for a forked child.
pub fn pipe_cloexec() -> Result<(RawFd, RawFd), i32> {
    use std::os::fd::IntoRawFd;
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(raw)?;
    Ok((r.into_raw_fd(), w.into_raw_fd()))
}

/// Close `fd`, ignoring errors.
pub fn close(fd: RawFd) {
    // SAFETY: closing an integer fd we own; a bad fd yields EBADF, nothing else.
    let _ = unsafe { libc::close(fd) };
}

/// Close every fd except `keep` (0, 1 and 2 included).
pub fn close_all_except(keep: RawFd) {
    let keep = keep.max(0) as u32;
    if keep > 0 {
        // SAFETY: close_range takes plain integers and touches only this process's fd table.
        let _ = unsafe { libc::syscall(libc::SYS_close_range, 0u32, keep - 1, 0u32) };
    }
    // SAFETY: as above.
    let _ = unsafe { libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0u32) };
}

/// Read up to `buf.len()` bytes (one `read`), retrying on EINTR; 0 at EOF or on error.
pub fn read_some(fd: RawFd, buf: &mut [u8]) -> usize {
    loop {
        // SAFETY: buf is a valid, writable slice for its length.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            return r as usize;
        }
        if errno() != libc::EINTR {
            return 0;
        }
    }
}

/// True when the read end of the pipe whose write end is `fd` has been closed everywhere
/// (`poll` reports `POLLERR` on a pipe's write end without readers).
pub fn readers_gone(fd: RawFd) -> bool {
    let mut p = [libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    }];
    poll(&mut p, 0).is_ok_and(|n| n > 0) && p[0].revents & libc::POLLERR != 0
}

/// `poll(2)` on raw descriptors, retrying on EINTR; `timeout_ms` < 0 waits for ever.
/// (nix's `poll` wants borrowed descriptors; the callers hold raw ones, some in a forked child.)
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    loop {
        // SAFETY: fds is a valid, writable slice of pollfd for its length.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `send(fd, buf, MSG_DONTWAIT | MSG_NOSIGNAL)`: a non-blocking write to a socket whose
/// description other processes share. Not for a forked child (the error allocates nothing,
/// but callers are the pump's threads).
pub fn send_nonblocking(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid slice for its length.
    let r = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if r >= 0 {
        Ok(r as usize)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Write `data` to the file at `path` (for `/proc/self/{uid_map,gid_map,setgroups}`).
pub fn write_file(path: &std::ffi::CStr, data: &[u8]) -> Result<(), i32> {
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::Mode;
    let fd = open(path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(raw)?;
    // The fd is closed when `fd` drops, as soon as the write returns.
    match nix::unistd::write(&fd, data) {
        Ok(n) if n == data.len() => Ok(()),
        Ok(_) => Err(libc::EIO),
        Err(e) => Err(raw(e)),
    }
}

/// True when `path` is executable for us (`access(X_OK)`).
pub fn executable(path: &std::path::Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
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
