//! The child's pseudo-terminal (`--tty`): agentrun itself runs on a real pty here, as it
//! would in a user's terminal.
#![allow(clippy::unwrap_used)]

mod harness;

use harness::*;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, Stdio};
use std::time::Duration;

struct OnPty {
    child: Child,
    master: std::fs::File,
}

/// Start agentrun with its stdin and stdout on a fresh pty (stderr a pipe), 24x80.
fn on_pty(s: &Scratch, args: &[&str]) -> OnPty {
    let ws = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).unwrap();
    let child = s
        .cmd(args)
        .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    OnPty {
        child,
        master: std::fs::File::from(pty.master),
    }
}

fn profile(s: &Scratch) {
    s.profile("t", "version = 1\n[env]\npass = [\"PATH\", \"TERM\"]\n");
}

#[test]
fn child_gets_a_terminal_and_stderr_stays_separate() {
    let s = Scratch::new();
    profile(&s);
    let mut p = on_pty(
        &s,
        &[
            "-p",
            "t",
            "--",
            "/usr/bin/python3",
            "-c",
            "import sys,os; print('tty', os.isatty(0), os.isatty(1), os.isatty(2)); print('\\x1b[31mred\\x1b[0m'); sys.stderr.write('err-line\\n')",
        ],
    );
    let out = read_until(&mut p.master, Duration::from_secs(10), |t| {
        t.contains("red")
    });
    let mut err = String::new();
    p.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = p.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("tty True True False"), "{out:?}");
    assert!(
        out.contains("\x1b[31mred\x1b[0m"),
        "colours must pass intact: {out:?}"
    );
    assert_eq!(err, "err-line\n");
    assert!(!out.contains("err-line"));
}

#[test]
fn tty_never_gives_pipes() {
    let s = Scratch::new();
    profile(&s);
    let mut p = on_pty(
        &s,
        &[
            "-p",
            "t",
            "--tty",
            "never",
            "--",
            "/usr/bin/python3",
            "-c",
            "import os; print('tty', os.isatty(1))",
        ],
    );
    let out = read_until(&mut p.master, Duration::from_secs(10), |t| {
        t.contains("tty ")
    });
    p.child.wait().unwrap();
    assert!(out.contains("tty False"), "{out:?}");
}

#[test]
fn ctrl_c_reaches_the_child_through_its_terminal() {
    let s = Scratch::new();
    profile(&s);
    let mut p = on_pty(
        &s,
        &[
            "-p",
            "t",
            "--",
            "/usr/bin/python3",
            "-c",
            "import time\ntry:\n    print('ready', flush=True); time.sleep(30)\nexcept KeyboardInterrupt:\n    print('interrupted', flush=True)\n    raise SystemExit(3)",
        ],
    );
    read_until(&mut p.master, Duration::from_secs(10), |t| {
        t.contains("ready")
    });
    p.master.write_all(&[3]).unwrap();
    let out = read_until(&mut p.master, Duration::from_secs(10), |t| {
        t.contains("interrupted")
    });
    let status = p.child.wait().unwrap();
    assert!(out.contains("interrupted"), "{out:?}");
    assert_eq!(status.code(), Some(3));
}

#[test]
fn input_and_window_size_follow() {
    let s = Scratch::new();
    profile(&s);
    let mut p = on_pty(
        &s,
        &[
            "-p",
            "t",
            "--",
            "/usr/bin/python3",
            "-c",
            "import os,signal,sys\nprint('size', os.get_terminal_size(1), flush=True)\nsignal.signal(signal.SIGWINCH, lambda *a: os.write(1, f'resized {os.get_terminal_size(1)}\\n'.encode()))\nline = sys.stdin.readline()\nprint('got', line.strip(), flush=True)\nwhile True: signal.pause()",
        ],
    );
    let out = read_until(&mut p.master, Duration::from_secs(10), |t| {
        t.contains("size")
    });
    assert!(out.contains("columns=80, lines=24"), "{out:?}");
    p.master.write_all(b"hello agent\r").unwrap();
    let out = read_until(&mut p.master, Duration::from_secs(10), |t| {
        t.contains("got hello agent")
    });
    assert!(out.contains("got hello agent"), "{out:?}");
    let ws = libc::winsize {
        ws_row: 50,
        ws_col: 132,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    set_winsize(p.master.as_raw_fd(), &ws);
    send(p.child.id(), "WINCH");
    let out = read_until(&mut p.master, Duration::from_secs(10), |t| {
        t.contains("resized")
    });
    if !out.contains("columns=132, lines=50") {
        let st = p.child.wait().unwrap();
        let mut err = String::new();
        p.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        panic!("{out:?} status {st:?} stderr {err}");
    }
    send(p.child.id(), "TERM");
    let status = p.child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
}

#[allow(unsafe_code)]
fn set_winsize(fd: i32, ws: &libc::winsize) {
    // SAFETY: TIOCSWINSZ reads the valid struct we pass.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, ws) };
}
