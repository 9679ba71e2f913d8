//! End-to-end confinement tests (issue 3): the real binary, real child programs trying to
//! escape, as root and as an unprivileged user (`setpriv --reuid 65534`).
//!
//! Each attempt asserts the specific errno the child saw and, from the outside, that nothing
//! happened: the listeners accepted nothing, no marker file appeared, the launcher still runs.
//! A test that needs a kernel feature this kernel lacks says why and skips; with `CI=true`
//! such a skip fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::*;
use std::collections::HashMap;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const PYTHON: &str = "/usr/bin/python3";
const NOBODY: u32 = 65534;
/// Sits in the launcher's environment, never declared: the child must not get at it.
const LAUNCHER_ONLY: &str = "hvs.launcher-only-Qm7Zk2Lp9Xw4Rt6Yb1Nc";
const DECLARED: &str = "sk-declared-Vb8Nm3Kq5Wz1Xc7Lp2Rt";

/// Who runs agentrun.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum As {
    Root,
    Nobody,
}

/// Skip (or, under CI=true, fail) when `ok` is false.
fn require(test: &str, ok: bool, why: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {why}, and CI=true forbids skipping");
    }
    eprintln!("SKIP {test}: {why}");
    false
}

/// The kernel's Landlock ABI and whether seccomp is on, asked of the kernel itself (not of
/// the binary under test, whose detection could be what broke), and cross-checked against
/// `agentrun check --json`.
fn kernel() -> (u64, bool) {
    let abi = kernel_landlock_abi();
    let seccomp = std::fs::read_to_string("/proc/self/status")
        .map(|t| t.lines().any(|l| l.starts_with("Seccomp:")))
        .unwrap_or(false);
    let s = scratch();
    std::fs::create_dir_all(s.path().join("work")).unwrap();
    s.profile("k", "version = 1\n");
    let p = s.path().join("profiles/k.toml");
    let j = check_json(&s, As::Root, &s.path().join("work"), p.to_str().unwrap());
    assert_eq!(
        j["sandbox"]["landlock_abi"].as_u64().unwrap_or(0),
        abi,
        "agentrun misreads the Landlock ABI"
    );
    (abi, seccomp)
}

#[allow(unsafe_code)]
fn kernel_landlock_abi() -> u64 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: landlock_create_ruleset with a null attr, size 0 and the VERSION flag only
    // returns the ABI number (or an error); it takes no pointer it would dereference.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if r < 0 { 0 } else { r as u64 }
}

/// Landlock ABI 6 (signal and abstract-socket scoping) and seccomp: what these tests check.
fn kernel_ready(test: &str) -> bool {
    let (abi, seccomp) = kernel();
    require(
        test,
        abi >= 6 && seccomp,
        &format!("needs Landlock ABI 6 and seccomp; this kernel has ABI {abi}, seccomp {seccomp}"),
    )
}

fn is_root() -> bool {
    // Our own /proc entry is owned by our euid.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        == 0
}

/// Whether the test can run as `who` (switching users needs root).
fn can_run_as(test: &str, who: As) -> bool {
    who == As::Root
        || require(
            test,
            is_root(),
            &format!("switching to uid {NOBODY} needs root"),
        )
}

/// A scratch directory prepared for `who`: for nobody, everything belongs to nobody and is
/// readable (dirs 0755, files 0644, never group/other-writable), so any denial is the
/// sandbox's, not the file mode's.
fn scratch() -> Scratch {
    let s = Scratch::new();
    std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    s
}

fn hand_over(s: &Scratch, who: As) {
    if who == As::Root {
        return;
    }
    for e in walk(s.path()) {
        let dir = e.is_dir();
        std::os::unix::fs::lchown(&e, Some(NOBODY), Some(NOBODY)).unwrap();
        if !e.is_symlink() {
            let mode = if dir { 0o755 } else { 0o644 };
            let keep_x = std::fs::metadata(&e).unwrap().permissions().mode() & 0o100;
            std::fs::set_permissions(
                &e,
                std::fs::Permissions::from_mode(
                    mode | if dir { 0 } else { keep_x * 0o111 / 0o100 },
                ),
            )
            .unwrap();
        }
    }
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = vec![p.to_path_buf()];
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

/// The real agentrun as `who`, in `cwd`, with the scratch's clean environment.
fn agentrun(s: &Scratch, who: As, cwd: &Path, args: &[&str]) -> Command {
    let mut c = match who {
        As::Root => Command::new(bin()),
        As::Nobody => {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                bin(),
            ]);
            c
        }
    };
    c.args(args)
        .current_dir(cwd)
        .env_clear()
        .envs(&s.env)
        .stdin(Stdio::null());
    c
}

fn run(s: &Scratch, who: As, cwd: &Path, args: &[&str]) -> Out {
    Out::from(agentrun(s, who, cwd, args).output().unwrap())
}

/// `check --json` as `who` (landlock_abi, pid_namespace, ...).
fn check_json(s: &Scratch, who: As, cwd: &Path, profile: &str) -> serde_json::Value {
    let o = run(s, who, cwd, &["check", "--profile", profile, "--json"]);
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("check --json: {e}: {o:?}"))
}

fn results(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn audit_events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The escape attempts, one `name=result` line each (`ok` or the errno name). The launcher's
/// pid comes from a file the test writes once agentrun runs (the child's own pids are its
/// PID namespace's).
const ESCAPES: &str = r#"
import ctypes, errno, os, socket, subprocess, sys, time
libc = ctypes.CDLL(None, use_errno=True)
E = os.environ
work, outside, home = E["WORK"], E["OUTSIDE"], E["HOME"]
while not os.path.exists(work + "/launcher.pid"):
    time.sleep(0.01)
time.sleep(0.05)
lp = int(open(work + "/launcher.pid").read())
ppid = os.getppid()
print(f"ppid={ppid}", flush=True)

def sc(name, *args):
    r = libc.syscall(ctypes.c_long(int(E["NR_" + name])), *[ctypes.c_long(a) for a in args])
    return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]

def attempt(name, fn):
    try:
        r = fn()
        res = "ok" if r is None else r
    except OSError as e:
        res = errno.errorcode.get(e.errno, str(e.errno))
    print(f"{name}={res}", flush=True)

def read(p):
    with open(p, "rb") as f:
        return "ok:" + str(len(f.read()))

def write(p):
    with open(p, "w") as f:
        f.write("pwned")

def connect(port, proto=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    s.close()

def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x", ("127.0.0.1", int(E["UDP_PORT"])))

def unix(addr):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(addr)

def tiocsti():
    r = libc.ioctl(0, 0x5412, ctypes.c_char_p(b"x"))
    return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]

# The launcher (it holds a secret in its environment) and the process above us.
attempt("launcher_environ", lambda: read(f"/proc/{lp}/environ"))
attempt("launcher_mem", lambda: read(f"/proc/{lp}/mem"))
attempt("launcher_maps", lambda: read(f"/proc/{lp}/maps"))
attempt("launcher_fd_link", lambda: os.readlink(f"/proc/{lp}/fd/0") and None)
attempt("launcher_fd_open", lambda: read(f"/proc/{lp}/fd/2"))
attempt("launcher_fds", lambda: os.listdir(f"/proc/{lp}/fd") and None)
attempt("launcher_ptrace", lambda: sc("ptrace", 16, lp, 0, 0))
attempt("launcher_vm_readv", lambda: sc("process_vm_readv", lp, 0, 0, 0, 0, 0))
attempt("launcher_kill", lambda: os.kill(lp, 9))
attempt("parent_kill", lambda: os.kill(ppid, 9))
attempt("parent_ptrace", lambda: sc("ptrace", 16, ppid, 0, 0))
# Files.
attempt("read_ssh", lambda: read(home + "/.ssh/id_rsa"))
attempt("read_aws", lambda: read(home + "/.aws/credentials"))
attempt("read_bashrc", lambda: read(home + "/.bashrc") and None)
attempt("write_work", lambda: write(work + "/ok.txt"))
attempt("write_outside", lambda: write(outside + "/marker"))
attempt("write_home", lambda: write(home + "/marker"))
attempt("symlink_create", lambda: os.symlink(outside + "/marker_sym", work + "/link"))
attempt("symlink_write", lambda: write(work + "/link"))
attempt("hardlink_out", lambda: os.link(outside + "/ro.txt", work + "/hl"))
attempt("truncate_ro", lambda: os.truncate(outside + "/ro.txt", 0))
attempt("open_trunc_ro", lambda: os.close(os.open(outside + "/ro.txt", os.O_WRONLY | os.O_TRUNC)))
attempt("exec_from_work", lambda: subprocess.run([work + "/run.sh"]) and None)
# Network.
attempt("tcp_denied", lambda: connect(int(E["DENIED_PORT"])))
attempt("tcp_allowed", lambda: connect(int(E["ALLOWED_PORT"])))
attempt("mptcp_denied", lambda: connect(int(E["DENIED_PORT"]), 262))
attempt("udp", udp)
attempt("unix_abstract", lambda: unix("\0" + E["ABSTRACT"]))
attempt("unix_path", lambda: unix(E["UNIX_PATH"]))
attempt("socketpair", lambda: [s.close() for s in socket.socketpair()] and None)
# Kernel surface.
attempt("unshare", lambda: sc("unshare", 0x10000000))
attempt("mount", lambda: sc("mount", 0, 0, 0, 0, 0))
attempt("bpf", lambda: sc("bpf", 0, 0, 0))
attempt("io_uring_setup", lambda: sc("io_uring_setup", 1, 0))
attempt("keyctl", lambda: sc("keyctl", 0, -3, 0))
attempt("tiocsti", tiocsti)
with open("/proc/self/status") as f:
    for line in f:
        k, _, v = line.partition(":")
        if k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
            print(f"{k}={v.strip()}", flush=True)
print("done=1", flush=True)
while not os.path.exists(work + "/stop"):
    time.sleep(0.01)
"#;

fn escapes(who: As, tag: &str) {
    if !can_run_as(tag, who) || !kernel_ready(tag) {
        return;
    }
    let s = scratch();
    let home = s.path().join("home");
    s.file("home/.ssh/id_rsa", "-----BEGIN OPENSSH PRIVATE KEY-----\n");
    s.file(
        "home/.aws/credentials",
        "[default]\naws_secret_access_key=x\n",
    );
    s.file("home/.bashrc", "# rc\n");
    let work = s.path().join("work");
    let outside = s.path().join("outside");
    std::fs::create_dir_all(&work).unwrap();
    let ro = s.file("outside/ro.txt", "keep me");
    let script = s.file("work/run.sh", "#!/bin/sh\necho ran\n");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let denied = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for l in [&allowed, &denied] {
        l.set_nonblocking(true).unwrap();
    }
    udp.set_nonblocking(true).unwrap();
    let unix_path = outside.join("agent.sock");
    let unix = UnixListener::bind(&unix_path).unwrap();
    unix.set_nonblocking(true).unwrap();
    let abstract_name = marker("abstract");
    let abs = {
        use std::os::linux::net::SocketAddrExt;
        let a =
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap();
        UnixListener::bind_addr(&a).unwrap()
    };
    abs.set_nonblocking(true).unwrap();
    let port = |l: &TcpListener| l.local_addr().unwrap().port();

    let nr = [
        ("NR_unshare", libc::SYS_unshare),
        ("NR_mount", libc::SYS_mount),
        ("NR_bpf", libc::SYS_bpf),
        ("NR_io_uring_setup", libc::SYS_io_uring_setup),
        ("NR_keyctl", libc::SYS_keyctl),
        ("NR_ptrace", libc::SYS_ptrace),
        ("NR_process_vm_readv", libc::SYS_process_vm_readv),
    ];
    let mut set: Vec<String> = nr.iter().map(|(k, v)| format!("{k} = \"{v}\"")).collect();
    for (k, v) in [
        ("WORK", work.display().to_string()),
        ("OUTSIDE", outside.display().to_string()),
        ("ALLOWED_PORT", port(&allowed).to_string()),
        ("DENIED_PORT", port(&denied).to_string()),
        ("UDP_PORT", udp.local_addr().unwrap().port().to_string()),
        ("UNIX_PATH", unix_path.display().to_string()),
        ("ABSTRACT", abstract_name.clone()),
    ] {
        set.push(format!("{k} = \"{v}\""));
    }
    // The operator's log (the harness's AGENTRUN_AUDIT_LOG) overrides the profile's.
    let audit = s.path().join("audit.jsonl");
    let profile = s.file(
        "profiles/esc.toml",
        &format!(
            r#"version = 1
[env]
pass = ["PATH", "HOME", "LANG"]
set = {{ {} }}
[secrets]
MY_TOKEN = "env:SRC_TOKEN"
[sandbox]
read = ["~", "{}", "/proc"]
write = ["{}"]
exec = ["/usr", "/bin", "/lib", "/lib64"]
connect = [{}]
[audit]
log = "{}"
"#,
            set.join(", "),
            outside.display(),
            work.display(),
            port(&allowed),
            audit.display()
        ),
    );
    hand_over(&s, who);
    let mut s = s;
    s.env.insert("SRC_TOKEN".into(), DECLARED.into());
    s.env.insert("VAULT_TOKEN".into(), LAUNCHER_ONLY.into());

    let profile_s = profile.to_str().unwrap();
    let mut child = agentrun(
        &s,
        who,
        &work,
        &["--profile", profile_s, "--", PYTHON, "-c", ESCAPES],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let launcher = child.id() as i32;
    let pidfile = work.join("launcher.pid");
    std::fs::write(&pidfile, launcher.to_string()).unwrap();
    let mut out = child.stdout.take().unwrap();
    let text = read_until(&mut out, Duration::from_secs(30), |t| t.contains("done=1"));
    // From the outside: the launcher still runs, untraced and unstopped.
    let status = std::fs::read_to_string(format!("/proc/{launcher}/status")).unwrap_or_default();
    let still_running =
        alive(launcher) && status.contains("TracerPid:\t0\n") && !status.contains("State:\tT");
    std::fs::write(work.join("stop"), "").unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let code = child.wait().unwrap().code();
    let got = results(&text);
    assert_eq!(
        got.get("done").map(String::as_str),
        Some("1"),
        "{tag}: child did not finish: {text}\n{stderr}"
    );
    assert!(still_running, "{tag}: the launcher was disturbed: {status}");
    assert_eq!(code, Some(0), "{tag}: {stderr}");

    let events = audit_events(&audit);
    let sandbox = events.iter().find(|e| e["event"] == "sandbox").unwrap();
    let pid_ns = sandbox["pid_namespace"]["available"] == true;
    // In its own PID namespace the child cannot even name the launcher; outside one,
    // Landlock's signal scope refuses.
    let kill_launcher = if pid_ns { "ESRCH" } else { "EPERM" };
    let expect = [
        ("launcher_environ", "EACCES"),
        ("launcher_mem", "EACCES"),
        ("launcher_maps", "EACCES"),
        ("launcher_fd_link", "EACCES"),
        ("launcher_fd_open", "EACCES"),
        // Root owns the non-dumpable launcher's /proc entries, so a root child (no
        // capabilities) may list the fd *numbers*; what they point to stays closed.
        (
            "launcher_fds",
            if who == As::Root { "ok" } else { "EACCES" },
        ),
        ("launcher_ptrace", "EPERM"),
        ("launcher_vm_readv", "EPERM"),
        ("launcher_kill", kill_launcher),
        ("parent_kill", "EPERM"),
        ("parent_ptrace", "EPERM"),
        ("read_ssh", "EACCES"),
        ("read_aws", "EACCES"),
        ("read_bashrc", "ok"),
        ("write_work", "ok"),
        ("write_outside", "EACCES"),
        ("write_home", "EACCES"),
        ("symlink_create", "ok"),
        ("symlink_write", "EACCES"),
        ("hardlink_out", "EXDEV"),
        ("truncate_ro", "EACCES"),
        ("open_trunc_ro", "EACCES"),
        ("exec_from_work", "EACCES"),
        ("tcp_denied", "EACCES"),
        ("tcp_allowed", "ok"),
        ("mptcp_denied", "EPERM"),
        ("udp", "EPERM"),
        ("unix_abstract", "EPERM"),
        ("unix_path", "EPERM"),
        ("socketpair", "ok"),
        ("unshare", "EPERM"),
        ("mount", "EPERM"),
        ("bpf", "EPERM"),
        ("io_uring_setup", "EPERM"),
        ("keyctl", "EPERM"),
        ("tiocsti", "EPERM"),
        ("CapInh", "0000000000000000"),
        ("CapPrm", "0000000000000000"),
        ("CapEff", "0000000000000000"),
        ("CapBnd", "0000000000000000"),
        ("CapAmb", "0000000000000000"),
        ("NoNewPrivs", "1"),
        ("Seccomp", "2"),
    ];
    let mut wrong = Vec::new();
    for (k, v) in expect {
        if got.get(k).map(String::as_str) != Some(v) {
            wrong.push(format!("{k}: expected {v}, got {:?}", got.get(k)));
        }
    }
    assert!(wrong.is_empty(), "{tag}:\n{}\n{stderr}", wrong.join("\n"));
    if pid_ns {
        assert_eq!(got.get("ppid").map(String::as_str), Some("1"), "{tag}");
    }

    // From the outside: nothing happened.
    assert!(!text.contains(LAUNCHER_ONLY) && !rest.contains(LAUNCHER_ONLY));
    assert!(denied.accept().is_err(), "{tag}: the denied port accepted");
    assert!(
        allowed.accept().is_ok(),
        "{tag}: the allowed port saw nothing"
    );
    assert!(
        udp.recv(&mut [0u8; 8]).is_err(),
        "{tag}: a UDP datagram arrived"
    );
    assert!(unix.accept().is_err(), "{tag}: the unix socket accepted");
    assert!(abs.accept().is_err(), "{tag}: the abstract socket accepted");
    assert_eq!(std::fs::read_to_string(&ro).unwrap(), "keep me");
    for p in [
        outside.join("marker"),
        outside.join("marker_sym"),
        home.join("marker"),
    ] {
        assert!(!p.exists(), "{tag}: {} appeared", p.display());
    }
    assert_eq!(
        std::fs::read_to_string(work.join("ok.txt")).unwrap(),
        "pwned"
    );
}

#[test]
fn escapes_fail_as_root() {
    escapes(As::Root, "escapes_fail_as_root");
}

#[test]
fn escapes_fail_as_nobody() {
    escapes(As::Nobody, "escapes_fail_as_nobody");
}

/// With `unix_sockets = true` pathname sockets open up (Landlock mediates them only from ABI
/// 9), but abstract sockets of processes outside the sandbox stay scoped.
#[test]
fn abstract_sockets_stay_scoped_with_unix_sockets() {
    let tag = "abstract_sockets_stay_scoped_with_unix_sockets";
    for who in [As::Root, As::Nobody] {
        if !can_run_as(tag, who) || !kernel_ready(tag) {
            return;
        }
        let s = scratch();
        let work = s.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let name = marker("abs");
        let abs = {
            use std::os::linux::net::SocketAddrExt;
            let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            UnixListener::bind_addr(&a).unwrap()
        };
        abs.set_nonblocking(true).unwrap();
        let path = work.join("ok.sock");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        s.profile(
            "u",
            &format!("version = 1\n[sandbox]\nwrite = [\".\"]\nunix_sockets = true\n[env]\nset = {{ NAME = \"{name}\" }}\n"),
        );
        hand_over(&s, who);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let code = r#"
import errno, os, socket
for k, a in (("abstract", "\0" + os.environ["NAME"]), ("path", "ok.sock")):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(a); print(k + "=ok")
    except OSError as e:
        print(k + "=" + errno.errorcode[e.errno])
"#;
        let p = s.path().join("profiles/u.toml");
        let o = run(
            &s,
            who,
            &work,
            &["-p", p.to_str().unwrap(), "--", PYTHON, "-c", code],
        );
        let got = results(&o.stdout);
        assert_eq!(
            got.get("abstract").map(String::as_str),
            Some("EPERM"),
            "{who:?} {o:?}"
        );
        assert_eq!(
            got.get("path").map(String::as_str),
            Some("ok"),
            "{who:?} {o:?}"
        );
        assert!(
            abs.accept().is_err(),
            "{who:?}: the abstract socket accepted"
        );
        assert!(
            listener.accept().is_ok(),
            "{who:?}: the allowed socket saw nothing"
        );
    }
}

/// `--unconfined` really is: no seccomp, no Landlock, and the audit log says so;
/// `--best-effort` runs and records its mode.
#[test]
fn unconfined_and_best_effort_are_recorded() {
    let s = scratch();
    let work = s.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    s.profile("p", "version = 1\n");
    let p = s.path().join("profiles/p.toml");
    let p = p.to_str().unwrap();
    let status = "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status";
    let o = run(
        &s,
        As::Root,
        &work,
        &["-p", p, "--unconfined", "--", "sh", "-c", status],
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("Seccomp:\t0"), "{o:?}");
    let o2 = run(
        &s,
        As::Root,
        &work,
        &["-p", p, "--best-effort", "--", "sh", "-c", status],
    );
    assert_eq!(o2.code, 0, "{o2:?}");
    assert!(o2.stdout.contains("Seccomp:\t2"), "{o2:?}");
    // The operator's log (the harness's AGENTRUN_AUDIT_LOG) overrides the profile's.
    let events = audit_events(&s.path().join("audit.jsonl"));
    let modes: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "sandbox")
        .map(|e| e["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["unconfined", "best-effort"], "{events:?}");
    let ops: Vec<(bool, bool)> = events
        .iter()
        .filter(|e| e["event"] == "start")
        .map(|e| {
            (
                e["operator"]["unconfined"] == true,
                e["operator"]["best_effort"] == true,
            )
        })
        .collect();
    assert_eq!(ops, [(true, false), (false, true)]);
    let unconfined = events.iter().find(|e| e["event"] == "sandbox").unwrap();
    assert_eq!(unconfined["seccomp"], "not");
    assert_eq!(unconfined["fs"], "not");
}

/// `explain --json` shows the rules and the syscalls a profile gives back.
#[test]
fn explain_shows_rules_and_given_back_syscalls() {
    let s = scratch();
    let work = s.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    s.profile(
        "e",
        "version = 1\n[sandbox]\nread = [\"/etc\"]\nwrite = [\".\"]\nconnect = [443]\nallow_syscalls = [\"ptrace\"]\n",
    );
    let p = s.path().join("profiles/e.toml");
    let o = run(
        &s,
        As::Root,
        &work,
        &["explain", "-p", p.to_str().unwrap(), "--json"],
    );
    assert_eq!(o.code, 0, "{o:?}");
    let j: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let sb = &j["sandbox"];
    let text = sb.to_string();
    assert!(text.contains("\"/etc\"") && text.contains("443"), "{text}");
    assert!(
        text.contains("ptrace"),
        "the given-back syscall is shown: {text}"
    );
    let denied: Vec<&str> = sb["denied_syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(!denied.contains(&"ptrace"), "{denied:?}");
    for d in [
        "process_vm_readv",
        "bpf",
        "mount",
        "unshare",
        "keyctl",
        "io_uring_setup",
    ] {
        assert!(denied.contains(&d), "{d} missing from {denied:?}");
    }
}

/// `check --json` reports the Landlock ABI and PID-namespace availability, for each user.
#[test]
fn check_reports_abi_and_pid_namespace() {
    for who in [As::Root, As::Nobody] {
        if !can_run_as("check_reports_abi_and_pid_namespace", who) {
            return;
        }
        let s = scratch();
        let work = s.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        s.profile("c", "version = 1\n");
        hand_over(&s, who);
        let p = s.path().join("profiles/c.toml");
        let j = check_json(&s, who, &work, p.to_str().unwrap());
        let sb = &j["sandbox"];
        assert!(sb["landlock_abi"].as_u64().is_some(), "{who:?} {j}");
        assert!(sb["pid_namespace"]["available"].is_boolean(), "{j}");
        assert!(
            sb["pid_namespace"]["how"].as_str().unwrap().len() > 5,
            "{j}"
        );
        if who == As::Root {
            assert_eq!(sb["pid_namespace"]["available"], true, "{j}");
        }
    }
}

/// Ordinary programs run under the default policy: sh, python3, git, node.
#[test]
fn ordinary_programs_run_under_the_default_policy() {
    let tag = "ordinary_programs_run_under_the_default_policy";
    for who in [As::Root, As::Nobody] {
        if !can_run_as(tag, who) || !kernel_ready(tag) {
            return;
        }
        let s = scratch();
        let work = s.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let git = Command::new("git")
            .args(["init", "-q"])
            .current_dir(&work)
            .status()
            .unwrap();
        assert!(git.success());
        s.file("work/README", "hello\n");
        s.profile("d", "version = 1\n");
        hand_over(&s, who);
        let p = s.path().join("profiles/d.toml");
        let p = p.to_str().unwrap();
        let mut cases: Vec<(&str, Vec<&str>, &str)> = vec![
            (
                "sh",
                vec!["sh", "-c", "echo sh-ok > out.txt && cat out.txt"],
                "sh-ok",
            ),
            (
                "python3",
                vec![PYTHON, "-c", "import json, ssl, sqlite3; print('py-ok')"],
                "py-ok",
            ),
            ("git", vec!["git", "status", "--short"], "?? README"),
        ];
        if Path::new("/usr/bin/node").exists() {
            cases.push((
                "node",
                vec!["/usr/bin/node", "-e", "console.log('node-ok')"],
                "node-ok",
            ));
        } else {
            eprintln!("SKIP {tag}: node: /usr/bin/node not installed");
        }
        for (name, argv, want) in cases {
            let mut args = vec!["-p", p, "--"];
            args.extend(argv);
            let o = run(&s, who, &work, &args);
            assert_eq!(o.code, 0, "{who:?} {name}: {o:?}");
            assert!(o.stdout.contains(want), "{who:?} {name}: {o:?}");
        }
    }
}

/// No survivors: with agentrun SIGKILLed, a setsid grandchild and a double-forked daemon
/// die too (the PID namespace's init dies, and the kernel kills the rest).
#[test]
fn sigkilled_launcher_leaves_no_survivors() {
    let tag = "sigkilled_launcher_leaves_no_survivors";
    for who in [As::Root, As::Nobody] {
        if !can_run_as(tag, who) {
            return;
        }
        let s = scratch();
        let work = s.path().join("work");
        std::fs::create_dir_all(work.join("up")).unwrap();
        s.profile("n", "version = 1\n");
        hand_over(&s, who);
        let p = s.path().join("profiles/n.toml");
        let j = check_json(&s, who, &work, p.to_str().unwrap());
        if !require(
            tag,
            j["sandbox"]["pid_namespace"]["available"] == true,
            &format!(
                "no PID namespace as {who:?}: {}",
                j["sandbox"]["pid_namespace"]["how"]
            ),
        ) {
            continue;
        }
        let m = marker("survivor");
        // A setsid grandchild, and a daemon that double-forks away from its parent.
        let script = format!(
            "setsid sh -c 'touch up/1; sleep 300; : {m}' >/dev/null 2>&1 & \
             sh -c \"sh -c 'touch up/2; sleep 300; : {m}' >/dev/null 2>&1 &\" & \
             while [ ! -e up/1 ] || [ ! -e up/2 ]; do sleep 0.01; done; echo ready; sleep 300"
        );
        let mut child = agentrun(
            &s,
            who,
            &work,
            &["-p", p.to_str().unwrap(), "--", "sh", "-c", &script],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        let mut out = child.stdout.take().unwrap();
        let got = read_until(&mut out, Duration::from_secs(10), |t| t.contains("ready"));
        assert!(got.contains("ready"), "{who:?}: {got}");
        let before = pids_with(&format!(": {m}"));
        assert!(before.len() >= 2, "{who:?}: {before:?}");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            eventually(Duration::from_secs(5), || pids_with(&format!(": {m}"))
                .is_empty()),
            "{who:?}: survivors {:?}",
            pids_with(&format!(": {m}"))
        );
    }
}

/// Inside the PID namespace signals still reach the command and exit codes stay as without.
#[test]
fn signals_and_exit_codes_through_the_pid_namespace() {
    for who in [As::Root, As::Nobody] {
        if !can_run_as("signals_and_exit_codes_through_the_pid_namespace", who) {
            return;
        }
        let s = scratch();
        let work = s.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        s.profile("x", "version = 1\n");
        hand_over(&s, who);
        let p = s.path().join("profiles/x.toml");
        let p = p.to_str().unwrap();
        let code = |script: &str| run(&s, who, &work, &["-p", p, "--", "sh", "-c", script]).code;
        assert_eq!(code("exit 7"), 7, "{who:?}");
        assert_eq!(code("kill -TERM $$"), 143, "{who:?}");
        assert_eq!(code("kill -KILL $$"), 137, "{who:?}");
        assert_eq!(code("kill -SEGV $$"), 139, "{who:?}");
        let o = run(&s, who, &work, &["-p", p, "--", "./nope"]);
        assert_eq!(o.code, 127, "{who:?} {o:?}");

        let mut child = agentrun(
            &s,
            who,
            &work,
            &["-p", p, "--", "sh", "-c", "trap 'echo got-USR1' USR1; trap 'echo got-TERM; exit 9' TERM; echo ready; while :; do sleep 0.05; done"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        let mut out = child.stdout.take().unwrap();
        read_until(&mut out, Duration::from_secs(5), |t| t.contains("ready"));
        send(child.id(), "USR1");
        let got = read_until(&mut out, Duration::from_secs(5), |t| t.contains("got-USR1"));
        assert!(got.contains("got-USR1"), "{who:?}: {got}");
        send(child.id(), "TERM");
        let got = read_until(&mut out, Duration::from_secs(5), |t| t.contains("got-TERM"));
        assert!(got.contains("got-TERM"), "{who:?}: {got}");
        assert_eq!(child.wait().unwrap().code(), Some(9), "{who:?}");
    }
}
