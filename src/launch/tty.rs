//! The child's pseudo-terminal, for `--tty` runs: the child's stdin and stdout are the
//! pty (colours, line editing, job control work); its stderr stays a separate pipe.
//! agentrun's own terminal goes into raw mode so keys (Ctrl-C included) reach the
//! child's line discipline, and is restored on the way out.

use super::pump::{AtEnd, StdinForward};
use crate::sys;
use nix::sys::termios::{self, SetArg, Termios};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

pub struct Pty {
    pub master: OwnedFd,
    slave: Option<OwnedFd>,
}

impl Pty {
    /// Open a pty sized like agentrun's terminal.
    pub fn open() -> std::io::Result<Pty> {
        let ws = sys::window_size(libc::STDOUT_FILENO);
        let pty = nix::pty::openpty(ws.as_ref().map(to_nix).as_ref(), None)?;
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )?;
        }
        Ok(Pty {
            master: pty.master,
            slave: Some(pty.slave),
        })
    }

    /// The slave's path (for the sandbox's rules).
    pub fn slave_path(&self) -> Option<std::path::PathBuf> {
        let slave = self.slave.as_ref()?;
        nix::unistd::ttyname(slave).ok()
    }

    /// The slave side, which the caller hands to the child and then drops, so the master
    /// sees EOF (EIO) once the child's tree is gone.
    pub fn take_slave(&mut self) -> Option<OwnedFd> {
        self.slave.take()
    }

    /// Put agentrun's own terminal (stdin) into raw mode, if it is one.
    pub fn enter_raw_mode(&self) -> Option<RawGuard> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        // Input raw (keys, Ctrl-C included, go to the child's terminal), output processed as
        // before: the child's stderr is a pipe, not its pty, and its newlines need the
        // terminal's own newline translation, or they come out as a staircase. (The pty's
        // output already has `\r\n`; a second `\r` changes nothing on the screen.)
        raw.output_flags = saved.output_flags;
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, &raw).ok()?;
        Some(RawGuard { saved })
    }

    /// What copies agentrun's stdin to the pty from the event loop. Makes the master
    /// non-blocking (its description is agentrun's alone).
    pub fn stdin_forward(&self) -> std::io::Result<StdinForward> {
        let master = self.master.try_clone()?;
        super::pump::set_nonblocking(master.as_fd())?;
        Ok(StdinForward::new(master, AtEnd::EofChar))
    }

    /// The window-size and hang-up hooks, with their own copy of the master.
    pub fn winch_hook(&self) -> std::io::Result<Winch> {
        Ok(Winch {
            master: Some(self.master.try_clone()?),
        })
    }
}

fn to_nix(ws: &libc::winsize) -> nix::pty::Winsize {
    nix::pty::Winsize {
        ws_row: ws.ws_row,
        ws_col: ws.ws_col,
        ws_xpixel: ws.ws_xpixel,
        ws_ypixel: ws.ws_ypixel,
    }
}

/// Restores agentrun's terminal settings.
pub struct RawGuard {
    saved: Termios,
}

impl Drop for RawGuard {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}

/// Copies agentrun's window size to the child's pty on SIGWINCH, and hangs the pty up when
/// agentrun's stdout loses its reader.
pub struct Winch {
    master: Option<OwnedFd>,
}

impl super::supervise::OnSignal for Winch {
    fn winch(&mut self) -> bool {
        match (&self.master, sys::window_size(libc::STDOUT_FILENO)) {
            (Some(m), Some(ws)) => {
                sys::set_window_size(m.as_raw_fd(), &ws);
                true
            }
            _ => false,
        }
    }

    /// The output stream has closed its copy of the master and the input forwarder is told
    /// to close its own; with this one gone the pty has no master left, and the kernel
    /// hangs up the child's side (EIO). The kernel's SIGHUP goes to the session leader only
    /// (a process above the command), so agentrun sends the tree its own.
    fn stdout_gone(&mut self) -> bool {
        self.master = None;
        true
    }
}

/// What the child's stdin is (see [`child_stdin`]).
pub struct ChildStdin {
    /// The descriptor the child gets as fd 0: readable, never writable.
    pub fd: OwnedFd,
    /// When it is a pipe: what feeds it from agentrun's stdin.
    pub feed: Option<StdinForward>,
}

/// The child's stdin without a pty: agentrun's own stdin, read-only.
///
/// An inherited stdin is an output channel when it is open for writing: a terminal is open
/// read-write, so `echo "$SECRET" >&0` would reach the screen past the redactor. It is one
/// too when the child can reopen it for writing through `/proc/self/fd/0`: the sandbox's file
/// rules decide that for a file with a path, but an anonymous pipe (`producer | agentrun`)
/// has none, and Landlock lets such a reopen through. What the child wrote into that pipe
/// would be read by whoever reads the rest of it (the shell's next `read line`). So:
/// - a file with a path open read-only (`< file`, a named FIFO, a terminal, `< /dev/null`):
///   inherited as it is;
/// - a file with a path open for writing too (a terminal, `<> file`, a FIFO opened
///   read-write, systemd's `/dev/null`): a fresh read-only open of the same file through
///   `/proc/self/fd/0` (`O_NOCTTY`; a regular file keeps its offset). Reopening by path is
///   subject to the file's permissions, as the child's own attempt would be, and the
///   sandbox's rules decide whether the child may reopen it for writing (a terminal it does
///   not run on is not in them);
/// - everything else (an anonymous pipe, a socket, a memfd, a file agentrun may not reopen):
///   a pipe of agentrun's own that it feeds from its stdin and closes at its end (agentrun
///   reads ahead of the child then, as `ssh` does: give it `< /dev/null` in a `while read`
///   loop);
/// - open for writing only: `/dev/null`, since the child could not read it anyway;
/// - a directory (`< .`) or an `O_PATH` descriptor: `/dev/null`. Neither carries data, and
///   a directory descriptor opened before the sandbox's read-only mounts is a handle to
///   write through them (`openat(0, "x", O_WRONLY|O_CREAT)`).
pub fn child_stdin() -> std::io::Result<ChildStdin> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let stdin = std::io::stdin();
    let plain = |fd: OwnedFd| ChildStdin { fd, feed: None };
    let flags = match fcntl(stdin.as_fd(), FcntlArg::F_GETFL) {
        Ok(f) => OFlag::from_bits_truncate(f),
        // Closed (agentrun's start-up opens /dev/null there, so only in theory).
        Err(_) => return Ok(plain(open_dev_null()?)),
    };
    let access = flags & OFlag::O_ACCMODE;
    if access == OFlag::O_WRONLY || !data_stdin(stdin.as_fd(), flags) {
        return Ok(plain(open_dev_null()?));
    }
    if has_a_path(stdin.as_fd()) {
        if access == OFlag::O_RDONLY {
            return Ok(plain(stdin.as_fd().try_clone_to_owned()?));
        }
        if let Some(fd) = reopen_read_only(stdin.as_fd()) {
            return Ok(plain(fd));
        }
    }
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    super::pump::set_nonblocking(w.as_fd())?;
    Ok(ChildStdin {
        fd: r,
        feed: Some(StdinForward::new(w, AtEnd::Close)),
    })
}

/// Whether `fd` can carry data to read: not an `O_PATH` descriptor, not a directory (nor
/// anything `fstat` fails on).
fn data_stdin(fd: std::os::fd::BorrowedFd, flags: nix::fcntl::OFlag) -> bool {
    if flags.contains(nix::fcntl::OFlag::O_PATH) {
        return false;
    }
    fd.try_clone_to_owned()
        .and_then(|d| std::fs::File::from(d).metadata())
        .is_ok_and(|m| !m.is_dir())
}

/// Whether what `fd` refers to has a path in a mounted file system, so that reopening it
/// through `/proc/self/fd` is checked against the sandbox's file rules. Anonymous pipes,
/// sockets and anon-inodes show as `pipe:[N]`, `socket:[N]`, `anon_inode:...`; a memfd as
/// `/memfd:NAME`, on a kernel-internal mount the rules do not cover either.
fn has_a_path(fd: std::os::fd::BorrowedFd) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .is_ok_and(|p| p.is_absolute() && !p.as_os_str().as_encoded_bytes().starts_with(b"/memfd:"))
}

fn open_dev_null() -> std::io::Result<OwnedFd> {
    Ok(std::fs::File::open("/dev/null")?.into())
}

/// A read-only open of what `fd` refers to, the same file (device and inode), at the same
/// offset; `None` if it cannot be had.
fn reopen_read_only(fd: std::os::fd::BorrowedFd) -> Option<OwnedFd> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let before = std::fs::File::from(fd.try_clone_to_owned().ok()?);
    let was = before.metadata().ok()?;
    // Only what opening has no side effect on: a device other than a terminal or /dev/null
    // (a tape rewinds when closed) is fed through a pipe instead.
    let kind = was.file_type();
    let null = || std::fs::metadata("/dev/null").is_ok_and(|n| n.rdev() == was.rdev());
    let reopenable = kind.is_file()
        || kind.is_fifo()
        || (kind.is_char_device() && (nix::unistd::isatty(fd).unwrap_or(false) || null()));
    if !reopenable {
        return None;
    }
    // Non-blocking for the open only: a FIFO's read-only open waits for a writer otherwise
    // (agentrun's own stdin is one, so it would not; a slow device might).
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .ok()?;
    let now = f.metadata().ok()?;
    if (now.dev(), now.ino(), now.rdev()) != (was.dev(), was.ino(), was.rdev()) {
        return None;
    }
    if was.file_type().is_file() {
        let at = (&before).stream_position().ok()?;
        f.seek(SeekFrom::Start(at)).ok()?;
    }
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(&f, FcntlArg::F_GETFL).ok()?);
    fcntl(&f, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK)).ok()?;
    Some(f.into())
}
