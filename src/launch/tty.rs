//! The child's pseudo-terminal, for `--tty` runs: the child's stdin and stdout are the
//! pty (colours, line editing, job control work); its stderr stays a separate pipe.
//! agentrun's own terminal goes into raw mode so keys (Ctrl-C included) reach the
//! child's line discipline, and is restored on the way out.

use crate::sys;
use nix::sys::termios::{self, SetArg, Termios};
use std::io::{Read, Write};
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
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, &raw).ok()?;
        Some(RawGuard { saved })
    }

    /// Copy agentrun's stdin to the pty in a detached thread (it may block forever).
    pub fn forward_stdin(&self) {
        let Ok(master) = self.master.try_clone() else {
            return;
        };
        std::thread::spawn(move || {
            let mut master = std::fs::File::from(master);
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => {
                        // End of input: the terminal's EOF character.
                        let _ = master.write_all(&[4]);
                        return;
                    }
                    Ok(n) => {
                        if master.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        });
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
