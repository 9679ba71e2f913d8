//! The child's pseudo-terminal (`--tty`): agentrun itself runs on a real pty here, as it
//! would in a user's terminal.
#![allow(clippy::unwrap_used)]

use crate::harness::*;
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

// ---- issue 9: the operator's terminal is no way around the redactor ----

const TERM_SECRET: &str = "sk-term-Qw3Er5Ty7Ui9Op1As3Df5Gh";

/// Give the scratch directory to nobody (dirs 0755, files 0644), for runs as nobody.
/// A profile whose secret `API_KEY` is [`TERM_SECRET`], and the attack script `w.py`: the
/// child writes the secret to the terminal every way it can without a pty of its own, then
/// echoes a line of its input.
fn terminal_attack(s: &mut Scratch) {
    s.env.insert("SRC_KEY".into(), TERM_SECRET.into());
    s.profile(
        "w",
        "version = 1\n[env]\npass = [\"PATH\"]\n[secrets]\nAPI_KEY = \"env:SRC_KEY\"\n",
    );
    s.file(
        "w.py",
        r#"import os, fcntl, termios
s = os.environ["API_KEY"].encode()
tty = None
try:
    tty = os.ttyname(0)
except OSError:
    pass
r = []
def t(name, f):
    try:
        f()
        r.append(name + "=written")
    except OSError as e:
        r.append(name + "=" + str(e.errno))
def reopen(path, flags):
    fd = os.open(path, flags)
    os.write(fd, s)
t("fd0", lambda: os.write(0, s))
t("proc-wronly", lambda: reopen("/proc/self/fd/0", os.O_WRONLY))
t("proc-rdwr", lambda: reopen("/proc/self/fd/0", os.O_RDWR))
t("devtty", lambda: reopen("/dev/tty", os.O_WRONLY))
if tty:
    t("ttyname", lambda: reopen(tty, os.O_WRONLY))
# A session of its own, the terminal as its controlling terminal, then /dev/tty.
t("setsid", lambda: os.setsid())
t("sctty", lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 1))
t("devtty-after", lambda: reopen("/dev/tty", os.O_RDWR))
print("ready", " ".join(r), flush=True)
# What it wrote into a pipe of its own (agentrun's feed) comes back first: read on.
got = b""
while b"keyboard" not in got:
    b = os.read(0, 100)
    if not b:
        break
    got += b
print("got", got.decode(errors="replace").split(s.decode())[-1].strip(), flush=True)
"#,
    );
}

/// Read the pty master until the slave side is gone everywhere (EIO) or `limit` passes.
fn drain_master(master: &mut std::fs::File, limit: Duration) -> String {
    read_until(master, limit, |_| false)
}

/// Issue 9 item 4: without a pty of its own (stdout piped, or `--tty never`), the child's
/// stdin is agentrun's terminal. It must not be able to write the secret to it: not through
/// fd 0, not by reopening `/proc/self/fd/0` or the device for writing, not through
/// `/dev/tty`, not after making the terminal its controlling terminal. The screen (the pty
/// master) must never show the secret; input still reaches the child.
///
/// As root and as nobody; as nobody once on a terminal root owns (agentrun cannot reopen
/// it: a pipe it feeds) and once on nobody's own (a read-only reopen).
#[test]
fn the_child_cannot_write_to_the_operators_terminal_through_stdin() {
    let mut cases = vec![(As::Root, false)];
    if is_root() {
        cases.extend([(As::Nobody, false), (As::Nobody, true)]);
    } else {
        eprintln!("SKIP the nobody cases: switching users needs root");
    }
    for (who, own_tty) in cases {
        for piped in [true, false] {
            let mut s = Scratch::new();
            terminal_attack(&mut s);
            s.hand_to(who);
            let ws = nix::pty::Winsize {
                ws_row: 24,
                ws_col: 80,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            let pty = nix::pty::openpty(Some(&ws), None).unwrap();
            if own_tty {
                nix::unistd::fchown(&pty.slave, Some(65534.into()), None).unwrap();
            }
            let mut master = std::fs::File::from(pty.master);
            let what = format!("{who:?} own_tty={own_tty} piped={piped}");
            let mut args = vec!["-p", "w"];
            if !piped {
                args.extend(["--tty", "never"]);
            }
            args.extend(["--", "/usr/bin/python3", "w.py"]);
            let mut cmd = s.agentrun().user(who).args(&args).command();
            cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
                .stderr(Stdio::piped());
            if piped {
                cmd.stdout(Stdio::piped());
            } else {
                cmd.stdout(Stdio::from(pty.slave.try_clone().unwrap()));
            }
            let mut child = cmd.spawn().unwrap();
            drop(cmd);
            drop(pty.slave);
            let mut out = child.stdout.take();
            let ready = match out.as_mut() {
                Some(o) => read_until(o, Duration::from_secs(15), |t| t.contains("ready")),
                None => read_until(&mut master, Duration::from_secs(15), |t| {
                    t.contains("ready") && t.contains('\n')
                }),
            };
            assert!(ready.contains("ready"), "{what}: {ready}");
            master.write_all(b"line-from-the-keyboard\n").unwrap();
            let mut rest = String::new();
            if let Some(o) = out.as_mut() {
                o.read_to_string(&mut rest).unwrap();
            }
            let status = child.wait().unwrap();
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            let screen = drain_master(&mut master, Duration::from_secs(5));
            let all = format!("{ready}{rest}{screen}");
            assert_eq!(status.code(), Some(0), "{what}: {all}\n{err}");
            assert!(
                !screen.contains(TERM_SECRET) && !screen.contains(&TERM_SECRET[..12]),
                "{what}: the secret reached the terminal: {screen:?} (child said {ready})"
            );
            assert!(
                all.contains("got line-from-the-keyboard"),
                "{what}: input must still reach the child: {all:?}\n{err}"
            );
            assert!(
                !ready.contains("fd0=written"),
                "{what}: stdin is writable: {ready}"
            );
        }
    }
}

/// Issue 9 item 22: with `--tty always`, when the reader of agentrun's stdout goes (as in
/// `agentrun --tty always -- yes | head -c 20`), the child's terminal is hung up and
/// agentrun ends promptly, as with a pipe.
#[test]
fn losing_the_stdout_reader_hangs_up_the_childs_terminal() {
    let mut whos = vec![As::Root];
    if is_root() {
        whos.push(As::Nobody);
    } else {
        eprintln!("SKIP the nobody case: switching users needs root");
    }
    for who in whos {
        let s = Scratch::new();
        profile(&s);
        s.hand_to(who);
        let mut child = s
            .agentrun()
            .user(who)
            .args(["-p", "t", "--tty", "always", "--", "yes"])
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut buf = [0u8; 20];
        out.read_exact(&mut buf).unwrap();
        assert_eq!(&buf[..4], b"y\r\ny", "{who:?}");
        let gone = std::time::Instant::now();
        drop(out);
        let ended = ended_within(&mut child, Duration::from_secs(5));
        if !ended {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(
            ended,
            "{who:?}: agentrun still runs 5 s after its reader went"
        );
        eprintln!("{who:?}: ended {:?} after the reader went", gone.elapsed());
    }
}

/// Whether `child` ends within `limit`.
fn ended_within(child: &mut Child, limit: Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    matches!(child.try_wait(), Ok(Some(_)))
}

/// Issue 9 item 4 under `script(1)`, whose pty is the controlling terminal of its session as
/// an operator's terminal is: the child (output piped through `cat`, so without a pty of
/// its own) writes the secret every way it can; script's record of the screen never holds it.
#[test]
fn under_script_the_screen_never_shows_the_secret() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP under_script_the_screen_never_shows_the_secret: no script(1)");
        return;
    }
    let mut whos = vec![As::Root];
    if is_root() {
        whos.push(As::Nobody);
    }
    for who in whos {
        let mut s = Scratch::new();
        terminal_attack(&mut s);
        s.hand_to(who);
        let env: Vec<String> = s.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let setpriv = match who {
            As::Root => "",
            As::Nobody => "setpriv --reuid 65534 --regid 65534 --clear-groups",
        };
        let line = format!(
            "env -i {} {setpriv} {} -p w -- /usr/bin/python3 w.py | cat",
            env.join(" "),
            bin()
        );
        let mut script = std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .current_dir(s.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut keys = script.stdin.take().unwrap();
        let mut screen = script.stdout.take().unwrap();
        let ready = read_until(&mut screen, Duration::from_secs(15), |t| {
            t.contains("ready")
        });
        keys.write_all(b"line-from-the-keyboard\n").unwrap();
        let rest = read_until(&mut screen, Duration::from_secs(15), |t| t.contains("got "));
        drop(keys);
        let ended = ended_within(&mut script, Duration::from_secs(10));
        if !ended {
            let _ = script.kill();
        }
        let mut tail = String::new();
        let _ = screen.read_to_string(&mut tail);
        let all = format!("{ready}{rest}{tail}");
        assert!(ended, "{who:?}: script did not end: {all:?}");
        assert!(
            !all.contains(TERM_SECRET) && !all.contains(&TERM_SECRET[..12]),
            "{who:?}: the secret reached the screen: {all:?}"
        );
        assert!(
            all.contains("got line-from-the-keyboard"),
            "{who:?}: input must still reach the child: {all:?}"
        );
    }
}

/// In a user's terminal (agentrun's stdin, stdout and stderr all on one pty), the child's
/// stderr lines start at column 0 like its stdout lines: every newline reaching the screen
/// comes with its carriage return (issue 13: the staircase).
#[test]
fn stderr_lines_start_at_column_zero_on_a_terminal() {
    let s = Scratch::new();
    profile(&s);
    let ws = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).unwrap();
    let mut child = s
        .cmd(&[
            "-p",
            "t",
            "--",
            "/usr/bin/python3",
            "-c",
            "import sys; print('final answer: 4', flush=True); sys.stderr.write('INFO step 0 done\\nINFO step 1 done\\n'); sys.stderr.flush(); print('end', flush=True)",
        ])
        .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave))
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(pty.master);
    let out = read_until(&mut master, Duration::from_secs(10), |t| {
        t.contains("end") && t.contains("step 1 done")
    });
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{out:?}");
    let b = out.as_bytes();
    let bare: Vec<usize> = (0..b.len())
        .filter(|&i| b[i] == b'\n' && (i == 0 || b[i - 1] != b'\r'))
        .collect();
    assert!(
        bare.is_empty(),
        "newlines without a carriage return (a staircase): {out:?}"
    );
    assert!(
        out.contains("INFO step 0 done\r\nINFO step 1 done\r\n"),
        "{out:?}"
    );
}
