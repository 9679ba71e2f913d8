//! The child's pseudo-terminal, for `--tty` runs: the child's stdin and stdout are the
//! pty (colours, line editing, job control work); its stderr stays a separate pipe.
//! agentrun's own terminal goes into raw mode so keys (Ctrl-C included) reach the
//! child's line discipline, and is restored on the way out.

use crate::sys;
use nix::sys::termios::{self, SetArg, Termios};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

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
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, &raw).ok()?;
        Some(RawGuard { saved })
    }

    /// What copies agentrun's stdin to the pty from the event loop. Makes the master
    /// non-blocking (its description is agentrun's alone).
    pub fn stdin_forward(&self) -> std::io::Result<StdinToPty> {
        let master = self.master.try_clone()?;
        super::pump::set_nonblocking(master.as_fd())?;
        Ok(StdinToPty {
            master: std::fs::File::from(master),
            buf: vec![0u8; 4096],
            len: 0,
            written: 0,
            open: true,
        })
    }

    pub fn winch_hook(&self) -> Winch {
        Winch {
            master: self.master.as_raw_fd(),
        }
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

/// Copies agentrun's window size to the child's pty on SIGWINCH.
pub struct Winch {
    master: std::os::fd::RawFd,
}

impl super::supervise::OnSignal for Winch {
    fn winch(&mut self) -> bool {
        match sys::window_size(libc::STDOUT_FILENO) {
            Some(ws) => {
                sys::set_window_size(self.master, &ws);
                true
            }
            None => false,
        }
    }
}

/// agentrun's stdin -> the child's terminal, one chunk at a time: stdin is read only when the
/// previous chunk is in, so a child that does not read its input holds nothing up but that.
pub struct StdinToPty {
    master: std::fs::File,
    buf: Vec<u8>,
    len: usize,
    written: usize,
    open: bool,
}

impl StdinToPty {
    /// Poll stdin while the last chunk is delivered and input has not ended.
    pub fn read_fd(&self) -> Option<RawFd> {
        (self.open && self.written == self.len).then_some(libc::STDIN_FILENO)
    }

    /// Poll the master while a chunk waits for room.
    pub fn write_fd(&self) -> Option<RawFd> {
        (self.written < self.len).then(|| self.master.as_raw_fd())
    }

    pub fn on_readable(&mut self) {
        // A raw read: std's buffered stdin could hold bytes that poll no longer sees.
        match nix::unistd::read(std::io::stdin().as_fd(), &mut self.buf) {
            Ok(0) => {
                // End of input: the terminal's EOF character.
                self.open = false;
                self.buf[0] = 4;
                self.len = 1;
            }
            Ok(n) => self.len = n,
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => return,
            Err(_) => {
                self.open = false;
                return;
            }
        }
        self.written = 0;
        self.on_writable();
    }

    pub fn on_writable(&mut self) {
        while self.written < self.len {
            match self.master.write(&self.buf[self.written..self.len]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.open = false;
                    self.written = self.len;
                }
            }
        }
    }
}
