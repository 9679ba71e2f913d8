//! End-to-end tests of the launcher (issue 2): the real binary, real children.

#![allow(clippy::unwrap_used)]

use crate::harness::*;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const KEY: &str = "sk-test-Zx9Qw8Er7Ty6Ui5Op4As3Df2";

fn basic(s: &Scratch) {
    // Blank comments only: a comment with text would keep the file from the child.
    s.file(".env", &format!("#\nexport MY_KEY=\"{KEY}\"\n"));
    s.profile(
        "t",
        r#"version = 1
[env]
pass = ["PATH", "HOME", "LC_*"]
set = { PLAIN = "1" }
[secrets]
MY_KEY = "dotenv:.env#MY_KEY"
"#,
    );
}

#[test]
fn child_exit_code_passes_through() {
    let s = Scratch::new();
    basic(&s);
    let o = s.run(&["--profile", "t", "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.code, 7, "{o:?}");
    let o = s.run(&["run", "--profile", "t", "--", "true"]);
    assert_eq!(o.code, 0, "{o:?}");
}

#[test]
fn killed_child_gives_128_plus_signal() {
    let s = Scratch::new();
    basic(&s);
    assert_eq!(
        s.run(&["-p", "t", "--", "sh", "-c", "kill -TERM $$"]).code,
        143
    );
    assert_eq!(
        s.run(&["-p", "t", "--", "sh", "-c", "kill -KILL $$"]).code,
        137
    );
}

#[test]
fn not_found_127_not_executable_126() {
    let s = Scratch::new();
    basic(&s);
    let o = s.run(&["-p", "t", "--", "no-such-command-xyz"]);
    assert_eq!(o.code, 127, "{o:?}");
    assert!(
        o.stderr.contains("no-such-command-xyz: command not found"),
        "{o:?}"
    );
    let script = s.file("script.sh", "#!/bin/sh\necho hi\n");
    let o = s.run(&["-p", "t", "--", script.to_str().unwrap()]);
    assert_eq!(o.code, 126, "{o:?}");
    assert!(o.stderr.contains("not executable"), "{o:?}");
    let bad = s.file("bad.sh", "#!/nonexistent/interpreter\n");
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o700)).unwrap();
    let o = s.run(&["-p", "t", "--", "./bad.sh"]);
    assert_eq!(o.code, 126, "{o:?}");
    assert!(o.stderr.contains("interpreter"), "{o:?}");
}

#[test]
fn child_env_is_exactly_pass_set_and_secrets() {
    let mut s = Scratch::new();
    basic(&s);
    s.env.insert("LC_ALL".into(), "C".into());
    s.env.insert("LC_TOKEN".into(), "must-not-pass".into());
    s.env.insert("UNLISTED".into(), "must-not-pass".into());
    s.env.insert("VAULT_TOKEN".into(), "must-not-pass".into());
    let o = s.run(&["-p", "t", "--no-redact", "--", "env"]);
    assert_eq!(o.code, 0, "{o:?}");
    let mut names: Vec<&str> = o
        .stdout
        .lines()
        .filter_map(|l| l.split_once('=').map(|x| x.0))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["HOME", "LC_ALL", "MY_KEY", "PATH", "PLAIN"],
        "{o:?}"
    );
    assert!(o.stdout.contains(&format!("MY_KEY={KEY}\n")));
    assert!(!o.stdout.contains("must-not-pass"));
}

#[test]
fn default_pass_list_applies_without_env_table() {
    let s = Scratch::new();
    let o = s
        .agentrun()
        .profile("version = 1\n")
        .env("TZ", "UTC")
        .env("EDITOR", "vi")
        .args(["--", "env"])
        .run();
    assert!(
        o.stdout.contains("TZ=UTC") && o.stdout.contains("LANG=C.UTF-8"),
        "{o:?}"
    );
    assert!(!o.stdout.contains("EDITOR"), "{o:?}");
}

#[test]
fn every_local_source() {
    let mut s = Scratch::new();
    s.env.insert("SRC_ENV".into(), "from-env-value".into());
    s.file(
        ".env",
        "A=1\nMULTI=\"line one\nline two\"\n# c\nexport Q='quoted # not a comment'\n",
    );
    s.file("keyfile", "from-file-value\n");
    s.file("creds/sysd", "from-systemd-value\n");
    s.env.insert(
        "CREDENTIALS_DIRECTORY".into(),
        s.path().join("creds").display().to_string(),
    );
    s.profile(
        "all",
        r#"version = 1
[env]
pass = ["PATH"]
[secrets]
S_ENV = "env:SRC_ENV"
S_MULTI = "dotenv:.env#MULTI"
S_Q = "dotenv:.env#Q"
S_FILE = "file:keyfile"
S_SYSD = "systemd:sysd"
[secrets.S_OPT]
from = "env:NOT_THERE"
required = false
"#,
    );
    let o = s.run(&[
        "-p",
        "all",
        "--no-redact",
        "--",
        "sh",
        "-c",
        r#"printf '%s|' "$S_ENV" "$S_MULTI" "$S_Q" "$S_FILE" "$S_SYSD" "${S_OPT-unset}""#,
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        o.stdout,
        "from-env-value|line one\nline two|quoted # not a comment|from-file-value|from-systemd-value|unset|"
    );
    // The optional secret's absence is noted in the audit log.
    let audit = s.audit();
    let opt = audit.iter().find(|e| e["name"] == "S_OPT").unwrap();
    assert_eq!(opt["fetch"]["left_out"], "optional", "{opt}");
    assert_eq!(opt["fetch"]["outcome"], "failed", "{opt}");
}

#[test]
fn file_injection_is_a_private_file_gone_after_the_run() {
    let s = Scratch::new();
    s.file("k", &format!("{KEY}\n"));
    let o = s
        .agentrun()
        .profile("version = 1\n[secrets.KEYFILE]\nfrom = \"file:k\"\nas = \"file\"\n")
        .args([
            "--no-redact",
            "--",
            "sh",
            "-c",
            r#"echo "$KEYFILE"; cat "$KEYFILE"; echo; echo x >> "$KEYFILE" || echo sealed"#,
        ])
        .run();
    assert_eq!(o.code, 0, "{o:?}");
    let mut lines = o.stdout.lines();
    let path = lines.next().unwrap();
    assert!(path.starts_with("/proc/self/fd/"), "{o:?}");
    assert_eq!(lines.next(), Some(KEY));
    assert!(
        o.stdout.contains("sealed"),
        "the child must not be able to change it: {o:?}"
    );
    assert!(!o.stdout.contains(&format!("KEYFILE={KEY}")));
    assert_eq!(memfds_named("agentrun-KEYFILE"), 0);
}

/// Processes holding a memfd of that name, across the machine.
fn memfds_named(name: &str) -> usize {
    let mut n = 0;
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(t) = std::fs::read_link(fd.path())
                && t.to_string_lossy().contains(&format!("memfd:{name}"))
            {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn sigkill_of_agentrun_takes_the_child_and_its_secret_file() {
    let s = Scratch::new();
    s.file("k", KEY);
    s.profile(
        "f",
        "version = 1\n[secrets.KF2]\nfrom = \"file:k\"\nas = \"file\"\n",
    );
    let mut child = s.spawn(&["-p", "f", "--", "sh", "-c", "echo ready; exec sleep 300"]);
    let mut out = child.stdout.take().unwrap();
    read_until(&mut out, Duration::from_secs(5), |t| t.contains('\n'));
    // The child runs in its own PID namespace: find it from the outside.
    let pids = descendants(child.id() as i32);
    assert!(!pids.is_empty() && pids.iter().all(|p| alive(*p)));
    assert_eq!(
        memfds_named("agentrun-KF2"),
        1,
        "only the child holds the file"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    for pid in pids {
        assert!(
            eventually(Duration::from_secs(5), || !alive(pid)),
            "process {pid} survived agentrun's SIGKILL"
        );
    }
    assert!(eventually(Duration::from_secs(5), || memfds_named(
        "agentrun-KF2"
    ) == 0));
}

#[test]
fn signals_are_forwarded() {
    let s = Scratch::new();
    basic(&s);
    let script = r#"for s in TERM INT HUP QUIT USR1 USR2 WINCH; do trap "echo got-$s" $s; done; echo ready; i=0; while [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); [ -e stop ] && exit 9; done"#;
    let mut child = s.spawn(&["-p", "t", "--", "sh", "-c", script]);
    let mut out = child.stdout.take().unwrap();
    read_until(&mut out, Duration::from_secs(5), |t| t.contains("ready"));
    let mut seen = String::new();
    for sig in ["INT", "HUP", "QUIT", "USR1", "USR2", "WINCH", "TERM"] {
        send(child.id(), sig);
        seen += &read_until(&mut out, Duration::from_secs(5), |t| {
            t.contains(&format!("got-{sig}"))
        });
    }
    std::fs::write(s.path().join("stop"), "").unwrap();
    let status = child.wait().unwrap();
    for sig in ["INT", "HUP", "QUIT", "USR1", "USR2", "WINCH", "TERM"] {
        assert!(
            seen.contains(&format!("got-{sig}")),
            "{sig} not forwarded: {seen}"
        );
    }
    assert_eq!(status.code(), Some(9));
}

#[test]
fn second_term_kills() {
    let s = Scratch::new();
    basic(&s);
    let mut child = s.spawn(&[
        "-p",
        "t",
        "--",
        "sh",
        "-c",
        "trap 'echo caught' TERM; echo ready; while :; do sleep 0.05; done",
    ]);
    let mut out = child.stdout.take().unwrap();
    read_until(&mut out, Duration::from_secs(5), |t| t.contains("ready"));
    send(child.id(), "TERM");
    read_until(&mut out, Duration::from_secs(5), |t| t.contains("caught"));
    send(child.id(), "TERM");
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(137));
}

#[test]
fn timeout_gives_124_with_kill_after_grace() {
    let s = Scratch::new();
    s.profile(
        "slow",
        "version = 1\n[limits]\ntimeout = \"300ms\"\nkill_after = \"300ms\"\n",
    );
    let start = Instant::now();
    let o = s.run(&["-p", "slow", "--", "sh", "-c", "trap '' TERM; sleep 30"]);
    assert_eq!(o.code, 124, "{o:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
    // --timeout overrides the profile.
    let o = s.run(&[
        "-p",
        "slow",
        "--timeout",
        "5s",
        "--",
        "sh",
        "-c",
        "sleep 0.5; exit 3",
    ]);
    assert_eq!(o.code, 3, "{o:?}");
    let audit = s.audit();
    assert!(
        audit
            .iter()
            .any(|e| e["event"] == "exit" && e["timed_out"] == true)
    );
}

#[test]
fn nothing_outlives_the_run() {
    let s = Scratch::new();
    basic(&s);
    // The child's pids are its PID namespace's: find its descendants by a marker instead.
    let m = marker("outlive");
    // HOME is inside the working directory, so only its existing subdirectories are writable.
    std::fs::create_dir(s.path().join("up")).unwrap();
    let script = format!(
        "setsid sh -c 'touch up/1; sleep 300; : {m}' >/dev/null 2>&1 & \
         sh -c 'touch up/2; sleep 300; : {m}' >/dev/null 2>&1 & \
         while [ ! -e up/1 ] || [ ! -e up/2 ]; do sleep 0.01; done"
    );
    let o = s.run(&["-p", "t", "--", "sh", "-c", &script]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        pids_with(&m),
        Vec::<i32>::new(),
        "descendants outlived the run"
    );
}

#[test]
fn no_secret_on_any_command_line() {
    let s = Scratch::new();
    basic(&s);
    let mut child = s.spawn(&["-p", "t", "--", "sh", "-c", "echo ready; sleep 2"]);
    let mut out = child.stdout.take().unwrap();
    read_until(&mut out, Duration::from_secs(5), |t| t.contains("ready"));
    let mut found = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(p.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).contains(KEY)
        {
            found.push(p.path());
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(found.is_empty(), "secret on a command line: {found:?}");
}

#[test]
fn output_is_streamed_without_waiting_for_a_newline() {
    let s = Scratch::new();
    basic(&s);
    let mut child = s.spawn(&[
        "-p",
        "t",
        "--",
        "sh",
        "-c",
        "printf 'Continue? [y/N] '; printf 'to-stderr ' >&2; sleep 5",
    ]);
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let start = Instant::now();
    let got = read_until(&mut out, Duration::from_secs(4), |t| t.contains("[y/N] "));
    let got_err = read_until(&mut err, Duration::from_secs(4), |t| {
        t.contains("to-stderr ")
    });
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "partial line was held back"
    );
    assert_eq!(got, "Continue? [y/N] ");
    assert_eq!(got_err, "to-stderr ");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn streams_stay_separate_and_no_byte_is_lost() {
    let s = Scratch::new();
    basic(&s);
    let o = s.run(&[
        "-p",
        "t",
        "--",
        "/usr/bin/python3",
        "-c",
        "import sys\nfor i in range(20000):\n    sys.stdout.write(f'out{i}\\n'); sys.stderr.write(f'err{i}\\n')",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    let want_out: String = (0..20000).map(|i| format!("out{i}\n")).collect();
    let want_err: String = (0..20000).map(|i| format!("err{i}\n")).collect();
    assert!(o.stdout == want_out, "stdout differs");
    assert!(o.stderr == want_err, "stderr differs");
}

#[test]
fn core_dumps_are_off_for_agentrun_and_the_child() {
    let s = Scratch::new();
    basic(&s);
    let mut child = s.spawn(&["-p", "t", "--", "sh", "-c", "ulimit -c; sleep 2"]);
    let mut out = child.stdout.take().unwrap();
    let got = read_until(&mut out, Duration::from_secs(5), |t| t.contains('\n'));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(got.trim(), "0");
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert!(core.split_whitespace().nth(4) == Some("0"), "{core}");
}

#[test]
fn resource_limits_apply() {
    let s = Scratch::new();
    let o = s
        .agentrun()
        .profile("version = 1\n[limits]\nnofile = 64\nfsize = \"1M\"\n")
        .args(["--", "sh", "-c", "ulimit -n; ulimit -f"])
        .run();
    assert_eq!(o.stdout, "64\n2048\n", "{o:?}");
}

#[test]
fn audit_log_is_chained_private_and_valueless() {
    let s = Scratch::new();
    basic(&s);
    s.run(&["-p", "t", "--", "true"]);
    s.run(&["-p", "t", "--", "sh", "-c", "exit 4"]);
    let text = std::fs::read_to_string(s.path().join("audit.jsonl")).unwrap();
    assert!(!text.contains(KEY));
    let events = s.audit();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "start", "secret", "sandbox", "spawn", "exit", "start", "secret", "sandbox", "spawn",
            "exit"
        ]
    );
    assert!(chained(&text), "{text}");
    assert_eq!(events[0]["argv0"], "true");
    assert_eq!(events[0]["profile_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(events[1]["name"], "MY_KEY");
    assert_eq!(events[1]["source"], "dotenv");
    assert_eq!(events[9]["code"], 4);
    assert_eq!(events[2]["fs"], "fully");
    assert_eq!(events[2]["seccomp"], "fully");
    let mode = std::fs::metadata(s.path().join("audit.jsonl"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

/// A write to the log cut short (the file-size limit stands in for a full disk) is taken
/// back: the next run appends whole lines and the chain holds (review 11c, F4).
#[test]
fn a_failed_append_leaves_no_partial_line() {
    let s = Scratch::new();
    basic(&s);
    assert_eq!(s.run(&["-p", "t", "--", "true"]).code, 0);
    let log = s.path().join("audit.jsonl");
    let size = std::fs::metadata(&log).unwrap().len();
    // A limit (512-byte blocks) a few hundred bytes past the log's end: the next run's
    // writes cross it in the middle of a line.
    let blocks = (size + 700) / 512;
    let cut = std::process::Command::new("sh")
        .current_dir(s.path())
        .env_clear()
        .envs(&s.env)
        .args([
            "-c",
            &format!("trap '' XFSZ; ulimit -f {blocks}; exec \"$0\" -p t -- true"),
            bin(),
        ])
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.len() as u64 <= blocks * 512 && text.ends_with('\n'),
        "{cut:?}: a partial line is left: {:?}",
        &text[text.len().saturating_sub(80)..]
    );
    assert_eq!(s.run(&["-p", "t", "--", "true"]).code, 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(chained(&text), "{text}");
}

#[test]
fn default_audit_log_lives_in_xdg_state_home_with_private_dir() {
    let mut s = Scratch::new();
    s.env.remove("AGENTRUN_AUDIT_LOG");
    s.file("profiles/x.toml", "version = 1\n");
    let o = s.run(&["-p", "x", "--", "true"]);
    assert_eq!(o.code, 0, "{o:?}");
    let dir = s.path().join("home/.local/state/agentrun");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(dir.join("audit.jsonl").exists());
}

/// A path that is not a regular file is refused and left as it was: agentrun tightens the
/// mode of its own log, and `--audit-log /dev/null` once made /dev/null 0600 for everyone.
/// (A FIFO stands in for the device: same code path, and nothing outside the scratch dir.)
#[test]
fn audit_log_that_is_not_a_regular_file_is_refused_untouched() {
    let s = Scratch::new();
    basic(&s);
    let fifo = s.path().join("audit.fifo");
    let made = std::process::Command::new("mkfifo")
        .args(["-m", "0644"])
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let o = s.run(&[
        "-p",
        "t",
        "--audit-log",
        fifo.to_str().unwrap(),
        "--",
        "true",
    ]);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr.contains("audit log") && o.stderr.contains("not a regular file"),
        "{}",
        o.stderr
    );
    let mode = std::fs::metadata(&fifo).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
}

/// A file without a `#!` line runs under /bin/sh (as with `execvp`), even with tens of
/// thousands of arguments: the command's start-up stack is sized for them (glibc puts the
/// /bin/sh argument list on it), with a guard page below.
#[test]
fn a_script_without_shebang_runs_under_sh_with_many_arguments() {
    let s = Scratch::new();
    basic(&s);
    let script = s.file("count.sh", "echo \"args: $#\"\n");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let many: Vec<String> = (0..50_000).map(|i| i.to_string()).collect();
    let mut args = vec!["-p", "t", "--", "./count.sh"];
    args.extend(many.iter().map(String::as_str));
    let o = s.run(&args);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout.trim(), "args: 50000");
}

/// agentrun ignores SIGPIPE: when its reader goes away, the write fails, the child gets the
/// broken pipe, and agentrun lives to report how it ended.
#[test]
fn a_closed_output_pipe_ends_the_child_not_agentrun() {
    let s = Scratch::new();
    basic(&s);
    let mut child = s.spawn(&["-p", "t", "--", "yes"]);
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 64];
    out.read_exact(&mut buf).unwrap();
    drop(out);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(141), "{status:?}");
    let last = s.audit().pop().unwrap();
    assert_eq!(last["event"], "exit", "{last}");
    assert_eq!(last["signal"], 13, "{last}");
}

/// Closed fds 1 and 2 at start are reopened on /dev/null, so the audit log (opened later)
/// can never land on fd 2 and take agentrun's messages and the child's stderr.
#[test]
fn closed_std_fds_at_start_never_turn_the_audit_log_into_output() {
    let s = Scratch::new();
    basic(&s);
    let o = std::process::Command::new("sh")
        .args(["-c", "exec 1>&- 2>&-; exec \"$0\" \"$@\"", bin()])
        .args(["-p", "t", "--no-redact", "--"])
        .args(["sh", "-c", "echo marker-out; echo marker-err >&2"])
        .current_dir(s.path())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", s.path().join("home"))
        .env("AGENTRUN_AUDIT_LOG", s.path().join("audit.jsonl"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let log = std::fs::read_to_string(s.path().join("audit.jsonl")).unwrap();
    assert!(!log.contains("marker-"), "{log}");
    assert!(!log.contains("--no-redact: the child"), "{log}");
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
}

#[test]
fn audit_log_to_stderr() {
    let s = Scratch::new();
    basic(&s);
    let o = s.run(&["-p", "t", "--audit-log", "-", "--", "true"]);
    assert_eq!(o.code, 0, "{o:?}");
    let lines: Vec<serde_json::Value> = o
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.first().unwrap()["event"], "start");
    assert_eq!(lines.last().unwrap()["event"], "exit");
}

#[test]
fn profile_found_by_path_by_env_and_search_path() {
    let mut s = Scratch::new();
    basic(&s);
    assert_eq!(s.run(&["-p", "profiles/t.toml", "--", "true"]).code, 0);
    let other = s.path().join("elsewhere");
    std::fs::create_dir_all(&other).unwrap();
    s.file(
        "elsewhere/named.toml",
        "version = 1\n[audit]\nlog = \"-\"\n",
    );
    s.env
        .insert("AGENTRUN_PROFILE_PATH".into(), other.display().to_string());
    s.env.insert("AGENTRUN_PROFILE".into(), "named".into());
    let o = s.run(&["--", "sh", "-c", "exit 5"]);
    assert_eq!(o.code, 5, "{o:?}");
    let o = s.run(&["profiles"]);
    assert!(
        o.stdout.contains("named") && o.stdout.contains("t "),
        "{o:?}"
    );
}

/// Each bad input: exit 125, a message naming the problem, and nothing started.
fn refused(s: &Scratch, profile: &str, want: &[&str]) {
    let marker = s.path().join("started");
    let o = s.run(&["-p", profile, "--", "touch", marker.to_str().unwrap()]);
    assert_eq!(o.code, 125, "{o:?}");
    for w in want {
        assert!(o.stderr.contains(w), "expected {w:?} in {o:?}");
    }
    assert!(o.stderr.starts_with("agentrun: "), "{o:?}");
    assert!(!marker.exists(), "the command ran");
    assert!(!o.stderr.contains(KEY));
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let s = Scratch::new();
    s.file("k", KEY);
    refused(&s, "missing", &["no profile named `missing`", "profiles"]);
    s.profile("syntax", "version = 1\n[env\n");
    refused(&s, "syntax", &["syntax.toml:2:"]);
    s.profile("unknown", "version = 1\n[env]\npasss = []\n");
    refused(&s, "unknown", &["unknown.toml:3:1", "passs"]);
    s.profile("wrongtype", "version = 1\n[env]\npass = \"PATH\"\n");
    refused(
        &s,
        "wrongtype",
        &["wrongtype.toml:3:1: env.pass: expected an array, found a string"],
    );
    s.profile(
        "badname",
        "version = 1\n[secrets]\n\"MY-KEY\" = \"file:k\"\n",
    );
    refused(
        &s,
        "badname",
        &["badname.toml:3:1", "MY-KEY", "not a valid variable name"],
    );
    s.profile(
        "nosecret",
        "version = 1\n[secrets]\nX = \"env:DEFINITELY_NOT_SET\"\n",
    );
    refused(
        &s,
        "nosecret",
        &["secret X", "DEFINITELY_NOT_SET is not set"],
    );
    s.profile(
        "unreadable",
        "version = 1\n[secrets]\nX = \"file:profiles\"\n",
    );
    refused(
        &s,
        "unreadable",
        &["secret X", "not a regular file", "profiles"],
    );
    s.file("empty", "\n");
    s.profile("emptyval", "version = 1\n[secrets]\nX = \"file:empty\"\n");
    refused(&s, "emptyval", &["secret X", "empty"]);
    s.profile(
        "credpass",
        "version = 1\n[env]\npass = [\"GITHUB_TOKEN\"]\n",
    );
    refused(
        &s,
        "credpass",
        &["GITHUB_TOKEN", "declare it under [secrets]"],
    );
    s.profile(
        "pattern",
        "version = 1\n[secrets.X]\nfrom = \"file:k\"\nverify = { pattern = '^ghp_' }\n",
    );
    refused(
        &s,
        "pattern",
        &[
            "secret X",
            "does not match pattern",
            "all credentials invalid, refusing to start",
        ],
    );
    s.profile(
        "short",
        "version = 1\n[secrets.X]\nfrom = \"file:k\"\nverify = { min_length = 100 }\n",
    );
    refused(&s, "short", &["fewer than min_length = 100"]);
    let p = s.profile("loose", "version = 1\n");
    // A shared group (nogroup, gid 65534) that can write it: refused.
    std::os::unix::fs::chown(&p, None, Some(65534)).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o620)).unwrap();
    refused(&s, "loose", &["writable by its group", "chmod go-w"]);
    // The owner's private group (umask 002 on user-private-group systems): accepted, as
    // OpenSSH accepts it.
    let owner_gid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::gid(&m))
        .unwrap();
    std::os::unix::fs::chown(&p, None, Some(owner_gid)).unwrap();
    assert_eq!(s.run(&["-p", "loose", "--", "true"]).code, 0);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o602)).unwrap();
    refused(&s, "loose", &["writable by others"]);
}

#[test]
fn verify_passes_good_values() {
    let s = Scratch::new();
    s.file("k", KEY);
    let o = s.agentrun()
        .profile("version = 1\n[secrets.X]\nfrom = \"file:k\"\nverify = { pattern = '^sk-[A-Za-z0-9_-]{20,}$', min_length = 20 }\n")
        .args(["--", "true"])
        .run();
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.audit_events()
            .iter()
            .any(|e| e["event"] == "verify" && e["attempts"][0]["outcome"] == "ok")
    );
}

#[test]
fn check_exits_0_or_1_and_speaks_json() {
    let s = Scratch::new();
    basic(&s);
    let o = s.run(&["check", "-p", "t"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.contains("MY_KEY") && !o.stdout.contains(KEY),
        "{o:?}"
    );
    let o = s
        .agentrun()
        .profile("version = 1\n[secrets]\nX = \"env:NOPE_NOT_SET\"\n")
        .args(["check", "--json"])
        .run();
    assert_eq!(o.code, 1, "{o:?}");
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["secrets"][0]["name"], "X");
    assert_eq!(doc["secrets"][0]["ok"], false);
}

#[test]
fn explain_fetches_nothing_and_prints_no_values() {
    let s = Scratch::new();
    basic(&s);
    // A source that would fail if fetched: explain must not touch it.
    s.profile(
        "e",
        "version = 1\n[secrets]\nX = \"env:NOPE_NOT_SET\"\nY = \"dotenv:.env#MY_KEY\"\n",
    );
    let o = s.run(&["explain", "-p", "e", "--json"]);
    assert_eq!(o.code, 0, "{o:?}");
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(doc["secrets"][0]["name"], "X");
    assert_eq!(doc["limits"]["kill_after"], "10s");
    assert_eq!(doc["redact"]["replacement"], "[REDACTED:{name}]");
    assert!(!o.stdout.contains(KEY));
    let o = s.run(&["explain", "-p", "e"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("NOPE_NOT_SET"), "{o:?}");
}

#[test]
fn profile_is_required() {
    let s = Scratch::new();
    let o = s.run(&["--", "true"]);
    assert_eq!(o.code, 125);
    assert!(o.stderr.contains("--profile"), "{o:?}");
    let mut out = Vec::new();
    s.cmd(&["--help"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
        .stdout
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert!(String::from_utf8_lossy(&out).contains("explain"));
}

#[test]
fn output_is_redacted_and_counted_unless_the_operator_says_no() {
    let s = Scratch::new();
    basic(&s);
    let script = "env; printf '%s' \"$MY_KEY\" >&2; echo; echo \"> Authorization: Bearer $MY_KEY\"";
    let o = s.run(&["-p", "t", "--", "sh", "-c", script]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(!o.stdout.contains(KEY) && !o.stderr.contains(KEY), "{o:?}");
    assert!(o.stdout.contains("MY_KEY=[REDACTED:MY_KEY]"), "{o:?}");
    assert!(o.stderr.contains("[REDACTED:MY_KEY]"), "{o:?}");
    let exit = o
        .audit_events()
        .into_iter()
        .rfind(|e| e["event"] == "exit")
        .unwrap();
    assert!(
        exit["redactions"]["MY_KEY"].as_u64().unwrap() >= 3,
        "{exit}"
    );
    let o = s.run(&["-p", "t", "--no-redact", "--", "sh", "-c", script]);
    assert!(o.stdout.contains(KEY), "{o:?}");
    let start = o
        .audit_events()
        .into_iter()
        .rfind(|e| e["event"] == "start")
        .unwrap();
    assert_eq!(start["operator"]["no_redact"], true);
}

#[test]
fn redact_command_filters_stdin() {
    let s = Scratch::new();
    basic(&s);
    let o = s
        .agentrun()
        .args(["redact", "-p", "t"])
        .stdin(format!("build step 1 ok\ntoken={KEY} used\ncurl -H 'Authorization: Bearer abcdefghijklmnopqrstuvwx' https://x\n"))
        .run();
    let text = &o.stdout;
    assert_eq!(o.code, 0, "{o:?}");
    assert!(text.starts_with("build step 1 ok\n"), "{text}");
    assert!(
        !text.contains(KEY) && !text.contains("abcdefghijklmnopqrstuvwx"),
        "{text}"
    );
}

#[test]
fn a_dotenv_with_undeclared_keys_is_kept_from_the_child() {
    let s = Scratch::new();
    s.file(
        ".env",
        &format!("MY_KEY={KEY}\nOTHER_DB_PASS=UndeclaredValue98765\n"),
    );
    s.profile(
        "t",
        "version = 1\n[secrets]\nMY_KEY = \"dotenv:.env#MY_KEY\"\n",
    );
    let o = s.run(&["-p", "t", "--", "sh", "-c", "cat .env; echo rc=$?"]);
    assert!(!o.stdout.contains("UndeclaredValue98765"), "{o:?}");
    assert!(
        o.stdout.contains("rc=1") && o.stderr.contains("Permission denied"),
        "{o:?}"
    );
    assert!(
        o.stderr
            .contains(".env holds credentials the profile does not declare"),
        "{o:?}"
    );
    // With only the declared key in it, the file gives the child nothing new: no rule needed.
    s.file(".env", &format!("MY_KEY={KEY}\n"));
    let o = s.run(&["-p", "t", "--", "sh", "-c", "cat .env"]);
    assert_eq!(o.stdout, "MY_KEY=[REDACTED:MY_KEY]\n", "{o:?}");
}

#[test]
fn variables_agentrun_reads_credentials_from_are_withheld() {
    let mut s = Scratch::new();
    s.env
        .insert("MY_VAULT_TOK".into(), "vault-login-token-value".into());
    s.env.insert("MY_SRC_KEY".into(), KEY.into());
    s.env.insert("MY_PLAIN".into(), "plain".into());
    s.profile(
        "w",
        "version = 1\n[env]\npass = [\"PATH\", \"MY_*\"]\n[vault]\naddress = \"http://127.0.0.1:1\"\ntoken = \"env:MY_VAULT_TOK\"\n[secrets]\nRENAMED = \"env:MY_SRC_KEY\"\n",
    );
    let o = s.run(&["-p", "w", "--no-redact", "--", "env"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("MY_PLAIN=plain"), "{o:?}");
    assert!(o.stdout.contains(&format!("RENAMED={KEY}")), "{o:?}");
    assert!(
        !o.stdout.contains("MY_VAULT_TOK") && !o.stdout.contains("MY_SRC_KEY"),
        "{o:?}"
    );
}

#[test]
fn a_credential_pasted_as_a_source_is_never_echoed() {
    let s = Scratch::new();
    s.profile(
        "p",
        "version = 1\n[secrets]\nOPENAI_API_KEY = \"sk-proj-Abcdefghijklmnopqrstuvwx\"\n",
    );
    let o = s.run(&["-p", "p", "--", "true"]);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr.contains("secrets.OPENAI_API_KEY.from") && o.stderr.contains("no scheme"),
        "{o:?}"
    );
    assert!(!o.stderr.contains("Abcdefghijklmnopqrstuvwx"), "{o:?}");
    s.profile("v", "version = 1\n[vault]\naddress = \"http://127.0.0.1:1\"\ntoken = \"hvs.CAESIAbcdefghijklmnopqrstuvwx\"\n[secrets]\nK = \"vault:secret/x#y\"\n");
    let o = s.run(&["-p", "v", "--", "true"]);
    assert_eq!(o.code, 125, "{o:?}");
    // Refused while the profile is checked, before the audit log opens; when there is one,
    // it must not hold the token either.
    assert!(o.stderr.contains("[vault] token"), "{o:?}");
    let audit = std::fs::read_to_string(s.path().join("audit.jsonl")).unwrap_or_default();
    for text in [&o.stderr, &audit] {
        assert!(!text.contains("Abcdefghijklmnopqrstuvwx"), "{o:?}\n{audit}");
    }
}

#[test]
fn check_refuses_whatever_a_run_would_refuse() {
    let mut s = Scratch::new();
    s.file("short", "abc");
    s.profile("short", "version = 1\n[secrets]\nS = \"file:short\"\n");
    let o = s.run(&["check", "-p", "short"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("shorter than 4 characters"), "{o:?}");
    assert_eq!(s.run(&["-p", "short", "--", "true"]).code, 125);
    s.env.remove("AGENTRUN_AUDIT_LOG");
    s.file(
        "profiles/badaudit.toml",
        "version = 1\n[audit]\nlog = \"/proc/forbidden/a.jsonl\"\n",
    );
    let o = s.run(&["check", "-p", "badaudit"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert_eq!(s.run(&["-p", "badaudit", "--", "true"]).code, 125);
}

#[test]
fn explain_touches_no_secret_backend() {
    let mut s = Scratch::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    s.env
        .insert("VAULT_TOKEN".into(), "root-token-for-test".into());
    s.profile(
        "x",
        &format!("version = 1\n[vault]\naddress = \"http://127.0.0.1:{port}\"\ntimeout = \"1s\"\nretries = 0\n[secrets]\nK = \"vault:secret/x#y\"\n"),
    );
    let o = s.run(&["explain", "-p", "x", "--json"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        listener.accept().is_err(),
        "explain connected to the Vault address"
    );
    assert!(!o.stdout.contains("root-token-for-test"));
    // The control: check does fetch, and the listener sees it.
    let _ = s.run(&["check", "-p", "x"]);
    assert!(listener.accept().is_ok(), "check should have connected");
}

#[test]
fn messages_before_and_after_the_spawn_with_the_redactor_building_beside_the_child() {
    let s = Scratch::new();
    basic(&s);
    // --unconfined says something before the spawn (the redactor is not started yet), and
    // the time limit says something after it (then the redactor must be waited for).
    let start = std::time::Instant::now();
    let o = s.run(&[
        "-p",
        "t",
        "--unconfined",
        "--timeout",
        "300ms",
        "--",
        "sh",
        "-c",
        "echo \"$MY_KEY\"; sleep 5",
    ]);
    assert!(start.elapsed() < Duration::from_secs(4), "the run hung");
    assert_eq!(o.code, 124, "{o:?}");
    assert_eq!(o.stdout, "[REDACTED:MY_KEY]\n", "{o:?}");
    assert!(
        o.stderr.contains("--unconfined") && o.stderr.contains("time limit"),
        "{o:?}"
    );
}

/// Issue 9 item 13: a local source larger than 64 KiB (`file:`, `dotenv:`, `systemd:`) is
/// refused at once with a message naming the source and the fix, instead of costing every
/// start seconds in the redactor.
#[test]
fn an_oversized_local_source_is_refused_at_once() {
    let mut s = Scratch::new();
    let big = "k".repeat(200 * 1024);
    s.file("big.txt", &big);
    s.file(".env", &format!("BIG={big}\n"));
    s.file("creds/big", &big);
    s.env.insert(
        "CREDENTIALS_DIRECTORY".into(),
        s.path().join("creds").display().to_string(),
    );
    s.profile("f", "version = 1\n[secrets]\nBIG = \"file:big.txt\"\n");
    s.profile("d", "version = 1\n[secrets]\nBIG = \"dotenv:.env#BIG\"\n");
    s.profile("c", "version = 1\n[secrets]\nBIG = \"systemd:big\"\n");
    for (p, name) in [("f", "big.txt"), ("d", ".env"), ("c", "creds/big")] {
        let start = Instant::now();
        let marker = s.path().join("started");
        let o = s.run(&["-p", p, "--", "touch", marker.to_str().unwrap()]);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{p}: took {:?}",
            start.elapsed()
        );
        assert_eq!(o.code, 125, "{p}: {o:?}");
        assert!(
            o.stderr.contains("secret BIG")
                && o.stderr.contains(name)
                && o.stderr.contains("64 KiB"),
            "{p}: {o:?}"
        );
        assert!(!o.stderr.contains("kkkk"), "{p}: {o:?}");
        assert!(!marker.exists(), "{p}: the command ran");
    }
    // An `env:` source too (an environment string is at most 128 KiB on Linux).
    s.env.insert("BIG_ENV".into(), "k".repeat(100 * 1024));
    s.profile("e", "version = 1\n[secrets]\nBIG = \"env:BIG_ENV\"\n");
    let o = s.run(&["-p", "e", "--", "true"]);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr.contains("BIG_ENV") && o.stderr.contains("64 KiB"),
        "{o:?}"
    );
    assert!(!o.stderr.contains("kkkk"), "{o:?}");
    s.env.remove("BIG_ENV");
    // At the limit, it is accepted.
    s.file("big.txt", &"k".repeat(64 * 1024));
    let o = s.run(&["-p", "f", "--no-redact", "--", "true"]);
    assert_eq!(o.code, 0, "{o:?}");
}

// ---- issue 9: the child's whole tree, its stdin, and the end of its output ----

/// Root and, when the tests run as root, nobody.
fn whos(test: &str) -> Vec<As> {
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if root {
        vec![As::Root, As::Nobody]
    } else {
        eprintln!("SKIP {test} as nobody: switching users needs root");
        vec![As::Root]
    }
}

/// Whether `child` ends within `limit`; killed if not.
fn ends_within(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st.code().unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Issue 9 item 23: a child that leaves its process group (`setpgid(0, 0)`, or `setsid()`)
/// and ignores nothing is still stopped by the time limit on time: `--timeout 1s` ends in
/// about a second with 124, not after the `kill_after` grace. As root and as nobody.
#[test]
fn the_time_limit_reaches_a_child_that_left_its_process_group() {
    for who in whos("the_time_limit_reaches_a_child_that_left_its_process_group") {
        for how in ["os.setpgid(0, 0)", "os.setsid()"] {
            let s = Scratch::new();
            s.profile("slow", "version = 1\n[limits]\nkill_after = \"10s\"\n");
            s.hand_to(who);
            let script = format!("import os, time\n{how}\ntime.sleep(30)\n");
            let start = Instant::now();
            let o = s
                .agentrun()
                .user(who)
                .args([
                    "-p",
                    "slow",
                    "--timeout",
                    "1s",
                    "--",
                    "/usr/bin/python3",
                    "-c",
                    &script,
                ])
                .run();
            let took = start.elapsed();
            assert_eq!(o.code, 124, "{who:?} {how}: {o:?}");
            assert!(
                took < Duration::from_millis(2500),
                "{who:?} {how}: --timeout 1s took {took:?}"
            );
            let exit = s.audit().pop().unwrap();
            assert_eq!(exit["signal"], 15, "{who:?} {how}: {exit}");
        }
    }
}

/// Issue 9 item 23: a forwarded SIGTERM reaches every process of the child's tree, however
/// they grouped themselves: one that did `setpgid(0, 0)` and one that did `setsid()` each
/// catch it, and the shell above them, which waits for both, ends as it chooses.
#[test]
fn a_forwarded_term_reaches_processes_that_left_the_group() {
    for who in whos("a_forwarded_term_reaches_processes_that_left_the_group") {
        let s = Scratch::new();
        s.profile("t", "version = 1\n");
        // The handler writes with os.write: a TERM that lands while `print` is still in
        // the buffered writer would make a second `print` fail (a reentrant call).
        let catcher = |tag: &str, how: &str| {
            format!(
                "/usr/bin/python3 -c 'import os, signal, time\n{how}\nsignal.signal(signal.SIGTERM, lambda *a: (os.write(1, b\"{tag}-got-TERM\\n\"), os._exit(0)))\nprint(\"{tag}-ready\", flush=True)\ntime.sleep(30)' &"
            )
        };
        let script = format!(
            "{}\na=$!\n{}\nb=$!\ntrap 'wait $a; echo a=$?; wait $b; echo b=$?; exit 7' TERM\nwait\n",
            catcher("pgid", "os.setpgid(0, 0)"),
            catcher("sid", "os.setsid()"),
        );
        s.file("tree.sh", &script);
        s.hand_to(who);
        let mut child = s
            .agentrun()
            .user(who)
            .args(["-p", "t", "--", "sh", "tree.sh"])
            .spawn();
        let mut out = child.stdout.take().unwrap();
        let ready = read_until(&mut out, Duration::from_secs(10), |t| {
            t.contains("pgid-ready") && t.contains("sid-ready")
        });
        assert!(ready.contains("sid-ready"), "{who:?}: {ready}");
        send(child.id(), "TERM");
        let code = ends_within(&mut child, Duration::from_secs(8));
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        assert!(
            rest.contains("pgid-got-TERM") && rest.contains("sid-got-TERM"),
            "{who:?}: the TERM did not reach the whole tree: {rest:?} (ended: {code:?})"
        );
        assert_eq!(code, Some(7), "{who:?}: {rest}");
    }
}

/// Issue 9 item 23: once the child's tree is gone, a pipe held open from outside it (here the
/// child's stdout, passed over a unix socket to another process) keeps agentrun waiting for
/// at most about a second (`DRAIN_AFTER_EXIT`); what the child wrote before is all there.
#[test]
fn output_held_open_from_outside_the_tree_does_not_keep_agentrun() {
    for who in whos("output_held_open_from_outside_the_tree_does_not_keep_agentrun") {
        let s = Scratch::new();
        s.profile("t", "version = 1\n");
        let sock = s.path().join("holder.sock");
        // The holder: outside agentrun, takes the descriptor and keeps it for 30 s.
        s.file(
            "holder.py",
            &format!(
                r#"import os, socket, time
l = socket.socket(socket.AF_UNIX)
l.bind({sock:?})
os.chmod({sock:?}, 0o777)
l.listen(1)
print("listening", flush=True)
c, _ = l.accept()
msg, fds, _, _ = socket.recv_fds(c, 10, 4)
c.send(b"k")
print("holding", fds, flush=True)
time.sleep(30)
"#
            ),
        );
        s.file(
            "give.py",
            &format!(
                r#"import socket, sys
print("before", flush=True)
c = socket.socket(socket.AF_UNIX)
c.connect({sock:?})
socket.send_fds(c, [b"x"], [1])
c.recv(1)
"#
            ),
        );
        s.hand_to(who);
        let mut holder = std::process::Command::new("/usr/bin/python3")
            .arg(s.path().join("holder.py"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut hout = holder.stdout.take().unwrap();
        let l = read_until(&mut hout, Duration::from_secs(10), |t| {
            t.contains("listening")
        });
        assert!(l.contains("listening"), "{l}");
        let mut child = s
            .agentrun()
            .user(who)
            .args([
                "-p",
                "t",
                "--unconfined",
                "--",
                "/usr/bin/python3",
                "give.py",
            ])
            .spawn();
        let mut out = child.stdout.take().unwrap();
        let before = read_until(&mut out, Duration::from_secs(10), |t| t.contains("before"));
        let h = read_until(&mut hout, Duration::from_secs(10), |t| {
            t.contains("holding")
        });
        assert!(h.contains("holding"), "{who:?}: {h}");
        let start = Instant::now();
        let code = ends_within(&mut child, Duration::from_secs(8));
        let took = start.elapsed();
        let _ = holder.kill();
        let _ = holder.wait();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(code, Some(0), "{who:?}: took {took:?}: {err}");
        assert!(took < Duration::from_secs(3), "{who:?}: took {took:?}");
        assert!(before.contains("before"), "{who:?}: {before}");
    }
}

const STDIN_SECRET: &str = "sk-stdin-Lk4Jh6Gf8Ds0Ap2Mn4Bv6Cx";

/// The child reads its input, then writes the secret to fd 0 and to `/proc/self/fd/0`
/// reopened for writing, and says what happened.
const STDIN_ATTACK: &str = include_str!("../fixtures/stdin_attack.py");

/// Issue 9 item 4, every kind of stdin: whatever agentrun's stdin is, the child's is not a
/// way to write anywhere. A file open read-write (outside the child's write roots), a socket,
/// a FIFO opened read-write, an anonymous pipe's read end (which `/proc/self/fd/0` would
/// reopen for writing past Landlock), the write end of a pipe, `/dev/null` open read-write
/// and a closed fd 0: the secret reaches none of them, and input still reaches the child. As
/// root and as nobody.
#[test]
fn stdin_of_every_kind_is_read_only_for_the_child() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::process::Stdio;
    for who in whos("stdin_of_every_kind_is_read_only_for_the_child") {
        let mut s = Scratch::new();
        s.env.insert("SRC_KEY".into(), STDIN_SECRET.into());
        std::fs::create_dir(s.path().join("work")).unwrap();
        std::fs::create_dir(s.path().join("outside")).unwrap();
        let work = s.path().join("work");
        s.profile(
            "w",
            &format!(
                "version = 1\n[env]\npass = [\"PATH\"]\n[secrets]\nAPI_KEY = \"env:SRC_KEY\"\n[sandbox]\nwrite = [{work:?}]\n"
            ),
        );
        s.file("work/w.py", STDIN_ATTACK);
        s.file("outside/in.txt", "line-from-file\n");
        let fifo = s.path().join("outside/fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        s.hand_to(who);
        let args = ["-p", "w", "--", "/usr/bin/python3", "work/w.py"];
        let run = |stdin: Stdio| -> Out {
            Out::from(
                s.agentrun()
                    .user(who)
                    .args(args)
                    .command()
                    .stdin(stdin)
                    .output()
                    .unwrap(),
            )
        };

        // A file open read-write.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(s.path().join("outside/in.txt"))
            .unwrap();
        let o = run(Stdio::from(f));
        let after = std::fs::read_to_string(s.path().join("outside/in.txt")).unwrap();
        assert!(
            !after.contains(STDIN_SECRET),
            "{who:?} file: {after:?} {o:?}"
        );
        assert!(
            o.stdout.contains("read=line-from-file"),
            "{who:?} file: {o:?}"
        );

        // A socket.
        let (mine, theirs) = UnixStream::pair().unwrap();
        (&mine).write_all(b"line-from-socket\n").unwrap();
        let o = run(Stdio::from(std::os::fd::OwnedFd::from(theirs)));
        mine.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let _ = (&mine).read_to_end(&mut got);
        let got = String::from_utf8_lossy(&got);
        assert!(!got.contains(STDIN_SECRET), "{who:?} socket: {got:?} {o:?}");
        assert!(
            o.stdout.contains("read=line-from-socket"),
            "{who:?} socket: {o:?}"
        );

        // A FIFO opened read-write; what is left in it afterwards is read here.
        let rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        (&rw).write_all(b"line-from-fifo\n").unwrap();
        let o = run(Stdio::from(rw.try_clone().unwrap()));
        let mut left = Vec::new();
        nix::fcntl::fcntl(
            &rw,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        let _ = (&rw).read_to_end(&mut left);
        let left = String::from_utf8_lossy(&left);
        assert!(!left.contains(STDIN_SECRET), "{who:?} fifo: {left:?} {o:?}");
        assert!(
            o.stdout.contains("read=line-from-fifo"),
            "{who:?} fifo: {o:?}"
        );

        // An anonymous pipe's read end, as `producer | agentrun` gives it: whatever the
        // child could write into it would be read by the next reader (a shell's `read`).
        let (r, w) = nix::unistd::pipe().unwrap();
        let r2 = r.try_clone().unwrap();
        let mut w = std::fs::File::from(w);
        w.write_all(b"line-from-pipe\n").unwrap();
        let o = run(Stdio::from(r));
        drop(w);
        let mut left = Vec::new();
        std::fs::File::from(r2).read_to_end(&mut left).unwrap();
        let left = String::from_utf8_lossy(&left);
        assert!(!left.contains(STDIN_SECRET), "{who:?} pipe: {left:?} {o:?}");
        assert!(
            o.stdout.contains("read=line-from-pipe"),
            "{who:?} pipe: {o:?}"
        );

        // The write end of a pipe whose reader is here.
        let (r, w) = nix::unistd::pipe().unwrap();
        let o = run(Stdio::from(w));
        let mut got = Vec::new();
        std::fs::File::from(r).read_to_end(&mut got).unwrap();
        let got = String::from_utf8_lossy(&got);
        assert!(
            !got.contains(STDIN_SECRET),
            "{who:?} write end: {got:?} {o:?}"
        );
        assert_eq!(o.code, 0, "{who:?} write end: {o:?}");

        // /dev/null open read-write, as systemd gives it.
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .unwrap();
        let o = run(Stdio::from(null));
        assert!(o.stdout.contains("read= fd0=9"), "{who:?} /dev/null: {o:?}");

        // fd 0 closed.
        let c = s.agentrun().user(who).args(args).command();
        // The shell closes fd 0 before it execs agentrun.
        let o = Out::from(
            std::process::Command::new("sh")
                .arg("-c")
                .arg("exec 0<&-; exec \"$@\"")
                .arg("sh")
                .arg(c.get_program())
                .args(c.get_args())
                .current_dir(s.path())
                .env_clear()
                .envs(&s.env)
                .output()
                .unwrap(),
        );
        assert!(o.stdout.contains("read= fd0=9"), "{who:?} closed: {o:?}");
    }
}

/// The drain bound cuts only a pipe held from outside the tree: a reader slower than
/// `DRAIN_AFTER_EXIT` still gets every byte the child wrote before it exited.
#[test]
fn a_slow_reader_still_gets_every_byte_after_the_child_exits() {
    let s = Scratch::new();
    s.profile("t", "version = 1\n");
    let mut child = s.spawn(&[
        "-p",
        "t",
        "--no-redact",
        "--",
        "/usr/bin/python3",
        "-c",
        "import sys; sys.stdout.write('x' * 300000)",
    ]);
    let mut out = child.stdout.take().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let mut got = Vec::new();
    out.read_to_end(&mut got).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(got.len(), 300000);
}

// ---- issue 9: the audit log is agentrun's own, and nothing it prints carries a password ----

const NOBODY_UID: u32 = 65534;

/// Every file and directory under the scratch dir handed to `nobody` (modes kept), so that
/// a run as `nobody` finds its own files.
fn hand_to_nobody(s: &Scratch) {
    fn walk(p: &std::path::Path) {
        std::os::unix::fs::lchown(p, Some(NOBODY_UID), Some(NOBODY_UID)).unwrap();
        if p.is_dir() && !p.is_symlink() {
            for e in std::fs::read_dir(p).unwrap().flatten() {
                walk(&e.path());
            }
        }
    }
    walk(s.path());
    walk(s.home_dir.path());
}

fn mode_of(p: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

const RC: &str = "# ~/.bashrc\nalias ll='ls -l'\n";

/// Item 15: `[audit] log = "~/.bashrc"` once made agentrun append JSON (valid bash, with
/// a `$(...)` from a source string) to the shell's rc file and chmod it. A profile may keep
/// its log only under agentrun's state directory; the operator's own path must still be
/// an agentrun log (empty or starting with one of its events); a file agentrun did not
/// create keeps its mode.
#[test]
fn a_profile_cannot_aim_the_audit_log_at_a_shell_rc_file() {
    for who in whos("the audit log tests") {
        let mut s = Scratch::new();
        // Only the profile decides where the log goes here.
        s.env.remove("AGENTRUN_AUDIT_LOG");
        s.env.insert("X".into(), "value-of-x-1234".into());
        let rc = s.file("home/.bashrc", RC);
        std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o644)).unwrap();
        s.file(
            "profiles/rc.toml",
            "version = 1\n[secrets]\nX = { from = \"env:X\", required = false }\n[audit]\nlog = \"~/.bashrc\"\n",
        );
        // Also a path under the state directory that is a link to the rc file.
        let state = s.home_dir.path().join(".local/state/agentrun");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&rc, state.join("link.jsonl")).unwrap();
        s.file(
            "profiles/link.toml",
            "version = 1\n[audit]\nlog = \"~/.local/state/agentrun/link.jsonl\"\n",
        );
        // And a directory link in it that leads home, to a login file bash would read.
        std::os::unix::fs::symlink(s.path().join("home"), state.join("sub")).unwrap();
        s.file(
            "profiles/sub.toml",
            "version = 1\n[audit]\nlog = \"~/.local/state/agentrun/sub/.bash_login\"\n",
        );
        if who == As::Nobody {
            hand_to_nobody(&s);
        }
        let o = s
            .agentrun()
            .user(who)
            .args(["-p", "rc", "--", "true"])
            .run();
        assert_eq!(o.code, 125, "{who:?}: {o:?}");
        assert!(
            o.stderr.contains("outside agentrun's state directory")
                && o.stderr.contains("--audit-log"),
            "{who:?}: {o:?}"
        );
        let o = s.agentrun().user(who).args(["check", "-p", "rc"]).run();
        assert_eq!(o.code, 1, "{who:?}: {o:?}");
        assert!(
            o.stderr.contains("outside agentrun's state directory"),
            "{o:?}"
        );
        let o = s
            .agentrun()
            .user(who)
            .args(["-p", "link", "--", "true"])
            .run();
        assert_eq!(o.code, 125, "{who:?}: {o:?}");
        assert!(o.stderr.contains("not a regular file"), "{who:?}: {o:?}");
        let o = s
            .agentrun()
            .user(who)
            .args(["-p", "sub", "--", "true"])
            .run();
        assert_eq!(o.code, 125, "{who:?}: {o:?}");
        assert!(o.stderr.contains("is a symbolic link"), "{who:?}: {o:?}");
        assert!(!s.path().join("home/.bash_login").exists(), "{who:?}");
        // The operator's path is still checked: not a log of ours, so not appended to.
        let rc_s = rc.to_str().unwrap();
        let o = s
            .agentrun()
            .user(who)
            .args(["-p", "rc", "--audit-log", rc_s, "--", "true"])
            .run();
        assert_eq!(o.code, 125, "{who:?}: {o:?}");
        assert!(
            o.stderr.contains("is not an agentrun audit log"),
            "{who:?}: {o:?}"
        );
        assert_eq!(std::fs::read_to_string(&rc).unwrap(), RC, "{who:?}");
        assert_eq!(mode_of(&rc), 0o644, "{who:?}: the mode was changed");
        // The operator may put a new log anywhere of theirs; the profile's own default works.
        let o = s
            .agentrun()
            .user(who)
            .args(["-p", "link", "--audit-log", "op.jsonl", "--", "true"])
            .run();
        assert_eq!(o.code, 0, "{who:?}: {o:?}");
        s.file("profiles/plain.toml", "version = 1\n");
        if who == As::Nobody {
            hand_to_nobody(&s);
        }
        let o = s
            .agentrun()
            .user(who)
            .args(["-p", "plain", "--", "true"])
            .run();
        assert_eq!(o.code, 0, "{who:?}: {o:?}");
        assert!(state.join("audit.jsonl").is_file(), "{who:?}");
    }
}

/// Item 20: a log file or directory that another user owns, or that others may write, is
/// refused with the path and the fix, and left as it was.
#[test]
fn a_foreign_or_shared_audit_log_or_directory_is_refused() {
    for who in whos("the audit log tests") {
        let mut s = Scratch::new();
        s.env.remove("AGENTRUN_AUDIT_LOG");
        s.file("profiles/p.toml", "version = 1\n");
        let state = s.home_dir.path().join(".local/state/agentrun");
        std::fs::create_dir_all(&state).unwrap();
        if who == As::Nobody {
            hand_to_nobody(&s);
        }
        // The directory: someone else's (root's dir is accepted for nobody, so as nobody
        // the foreign owner is... nobody else: use a mode others may write instead).
        match who {
            As::Root => {
                std::os::unix::fs::chown(&state, Some(NOBODY_UID), Some(NOBODY_UID)).unwrap();
                std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
            }
            As::Nobody => {
                std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
            }
        }
        let o = s.agentrun().user(who).args(["-p", "p", "--", "true"]).run();
        assert_eq!(o.code, 125, "{who:?}: {o:?}");
        let want = if who == As::Root {
            "belongs to uid 65534"
        } else {
            "is writable by others"
        };
        assert!(
            o.stderr.contains(want) && o.stderr.contains(state.to_str().unwrap()),
            "{who:?}: {o:?}"
        );
        assert!(!state.join("audit.jsonl").exists(), "{who:?}");
        let o = s.agentrun().user(who).args(["check", "-p", "p"]).run();
        assert_eq!(o.code, 1, "{who:?}: {o:?}");
        assert!(o.stderr.contains(want), "{who:?}: {o:?}");

        // The file: the directory is fine now, the log is not.
        match who {
            As::Root => std::os::unix::fs::chown(&state, Some(0), Some(0)).unwrap(),
            As::Nobody => {
                std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap()
            }
        }
        let log = state.join("audit.jsonl");
        std::fs::write(&log, "").unwrap();
        match who {
            As::Root => {
                std::os::unix::fs::chown(&log, Some(NOBODY_UID), Some(NOBODY_UID)).unwrap();
                std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            As::Nobody => {
                std::os::unix::fs::chown(&log, Some(NOBODY_UID), Some(NOBODY_UID)).unwrap();
                std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o622)).unwrap();
            }
        }
        let before = mode_of(&log);
        let o = s.agentrun().user(who).args(["-p", "p", "--", "true"]).run();
        assert_eq!(o.code, 125, "{who:?}: {o:?}");
        let want = if who == As::Root {
            "belongs to uid 65534"
        } else {
            "is writable by others"
        };
        assert!(
            o.stderr.contains(want) && o.stderr.contains(log.to_str().unwrap()),
            "{who:?}: {o:?}"
        );
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "", "{who:?}");
        assert_eq!(mode_of(&log), before, "{who:?}: the mode was changed");
    }
}

/// Item 25, second half: `check` starts nothing, so it writes nothing: no state directory,
/// no log, no mode changed.
#[test]
fn check_creates_and_changes_nothing() {
    for who in whos("the audit log tests") {
        let mut s = Scratch::new();
        s.env.remove("AGENTRUN_AUDIT_LOG");
        s.env.insert(
            "XDG_STATE_HOME".into(),
            s.path().join("state").display().to_string(),
        );
        s.file("profiles/p.toml", "version = 1\n");
        if who == As::Nobody {
            hand_to_nobody(&s);
        }
        let o = s.agentrun().user(who).args(["check", "-p", "p"]).run();
        assert_eq!(o.code, 0, "{who:?}: {o:?}");
        assert!(
            !s.path().join("state").exists(),
            "{who:?}: check created it"
        );
        // An existing log of ours, readable by its group: check leaves its mode alone.
        let o = s.agentrun().user(who).args(["-p", "p", "--", "true"]).run();
        assert_eq!(o.code, 0, "{who:?}: {o:?}");
        let log = s.path().join("state/agentrun/audit.jsonl");
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o640)).unwrap();
        let len = std::fs::metadata(&log).unwrap().len();
        let o = s.agentrun().user(who).args(["check", "-p", "p"]).run();
        assert_eq!(o.code, 0, "{who:?}: {o:?}");
        assert_eq!(mode_of(&log), 0o640, "{who:?}");
        assert_eq!(std::fs::metadata(&log).unwrap().len(), len, "{who:?}");
    }
}

/// Suspected: a process that can open the log could hold its lock and stall agentrun. The
/// lock is taken with a time limit: the run ends promptly with 125 and says why.
#[test]
fn a_held_audit_lock_ends_the_run_with_125_not_a_hang() {
    let s = Scratch::new();
    basic(&s);
    assert_eq!(s.run(&["-p", "t", "--", "true"]).code, 0);
    let held = std::fs::File::open(s.path().join("audit.jsonl")).unwrap();
    held.lock().unwrap();
    let start = Instant::now();
    let mut child = s
        .cmd(&["-p", "t", "--", "true"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = start.elapsed();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = status.expect("agentrun still waited for the lock after 30 s");
    assert_eq!(status.code(), Some(125), "{err}");
    // One wait of 5 s for the lock, not one more for each later event.
    assert!(took < Duration::from_secs(9), "took {took:?}");
    assert!(
        err.contains("held its lock") && err.contains("audit.jsonl"),
        "{err}"
    );
    drop(held);
    assert_eq!(s.run(&["-p", "t", "--", "true"]).code, 0);
}

/// journald's native protocol, as agentrun sends it: every field length-prefixed.
pub(crate) fn journal_fields(d: &[u8]) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut i = 0;
    while i < d.len() {
        let nl = i + d[i..].iter().position(|&b| b == b'\n').unwrap();
        let key = String::from_utf8(d[i..nl].to_vec()).unwrap();
        let len = u64::from_le_bytes(d[nl + 1..nl + 9].try_into().unwrap()) as usize;
        let val = String::from_utf8(d[nl + 9..nl + 9 + len].to_vec()).unwrap();
        out.insert(key, val);
        i = nl + 9 + len + 1;
    }
    out
}

fn drain_journal(
    sock: &std::os::unix::net::UnixDatagram,
) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = sock.recv(&mut buf) {
        out.push(journal_fields(&buf[..n]));
    }
    out
}

fn sha(line: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(line.as_bytes()))
}

/// Item 6: `[audit] journald = true` copies every line to the journal. journald does not
/// run on this machine, so a datagram socket of the test's own stands in for its native
/// socket (`AGENTRUN_JOURNAL_SOCKET`). The chain alone cannot see the end of the file cut
/// off; the journal's copy can: the next run's start line (its `prev`, the file's head
/// hash) no longer follows the last line the journal saw.
#[test]
fn the_journal_copy_shows_a_cut_at_the_next_run() {
    for who in whos("the audit log tests") {
        let mut s = Scratch::new();
        let sock_path = s.path().join("journal.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
        sock.set_nonblocking(true).unwrap();
        std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o777)).unwrap();
        s.env.insert(
            "AGENTRUN_JOURNAL_SOCKET".into(),
            sock_path.display().to_string(),
        );
        s.profile("j", "version = 1\n[audit]\njournald = true\n");
        if who == As::Nobody {
            hand_to_nobody(&s);
        }
        let log = s.path().join("audit.jsonl");
        for _ in 0..2 {
            let o = s.agentrun().user(who).args(["-p", "j", "--", "true"]).run();
            assert_eq!(o.code, 0, "{who:?}: {o:?}");
        }
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let got = drain_journal(&sock);
        let messages: Vec<&str> = got.iter().map(|f| f["MESSAGE"].as_str()).collect();
        assert_eq!(messages, lines, "{who:?}: the journal has every line");
        for f in &got {
            assert_eq!(f["SYSLOG_IDENTIFIER"], "agentrun");
            assert_eq!(f["AGENTRUN_HASH"], sha(&f["MESSAGE"]));
            assert_eq!(f["AGENTRUN_LOG"], log.display().to_string());
        }
        // Cut the second run off the end: the file's own chain still verifies...
        let first_run: Vec<&str> = lines.iter().take(lines.len() / 2).copied().collect();
        std::fs::write(&log, format!("{}\n", first_run.join("\n"))).unwrap();
        let o = s.agentrun().user(who).args(["-p", "j", "--", "true"]).run();
        assert_eq!(o.code, 0, "{who:?}: {o:?}");
        let text = std::fs::read_to_string(&log).unwrap();
        let mut prev = "0".repeat(64);
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["prev"], prev.as_str(), "{who:?}: the chain verifies");
            prev = sha(l);
        }
        // ...but the next start line does not follow the journal's last line.
        let journal_head = got.last().unwrap()["AGENTRUN_HASH"].clone();
        let next = drain_journal(&sock);
        let start: serde_json::Value = serde_json::from_str(&next[0]["MESSAGE"]).unwrap();
        assert_eq!(start["event"], "start");
        assert_eq!(start["prev"], sha(first_run.last().unwrap()).as_str());
        assert_ne!(
            start["prev"],
            journal_head.as_str(),
            "{who:?}: the cut shows"
        );
    }
}

/// `log = "journald"` writes no file at all; a journal that is not there stops the run.
#[test]
fn a_journal_only_log_and_a_missing_journal() {
    let mut s = Scratch::new();
    s.env.remove("AGENTRUN_AUDIT_LOG");
    let sock_path = s.path().join("journal.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_nonblocking(true).unwrap();
    s.env.insert(
        "AGENTRUN_JOURNAL_SOCKET".into(),
        sock_path.display().to_string(),
    );
    s.file(
        "profiles/j.toml",
        "version = 1\n[audit]\nlog = \"journald\"\n",
    );
    let o = s.run(&["-p", "j", "--", "true"]);
    assert_eq!(o.code, 0, "{o:?}");
    let got = drain_journal(&sock);
    let events: Vec<String> = got
        .iter()
        .map(|f| {
            serde_json::from_str::<serde_json::Value>(&f["MESSAGE"]).unwrap()["event"].to_string()
        })
        .collect();
    assert_eq!(
        events.first().map(String::as_str),
        Some("\"start\""),
        "{events:?}"
    );
    assert_eq!(
        events.last().map(String::as_str),
        Some("\"exit\""),
        "{events:?}"
    );
    assert!(!s.path().join("home/.local/state").exists());
    s.env.insert(
        "AGENTRUN_JOURNAL_SOCKET".into(),
        s.path().join("nothing-here.sock").display().to_string(),
    );
    let o = s.run(&["-p", "j", "--", "true"]);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(o.stderr.contains("nothing-here.sock"), "{o:?}");
}

/// Item 21: `explain` never prints the value of a `[vault]` key that carries a credential,
/// in text or JSON: it says the key is set and what kind of source it names.
#[test]
fn explain_never_prints_a_vault_credential() {
    let s = Scratch::new();
    s.profile(
        "v",
        r#"version = 1
[vault]
address = "https://vault.example:8200"
auth = "approle"
token = "hvs.PASTEDtokenAAAAAAAAAAAA"
role_id = "PASTEDroleidBBBBBBBBBB"
secret_id = "file:/run/PASTEDsecretidpath"
jwt = "env:PASTED_JWT_VARIABLE"
"#,
    );
    for args in [
        &["explain", "-p", "v"][..],
        &["explain", "-p", "v", "--json"],
    ] {
        let o = s.run(args);
        assert_eq!(o.code, 0, "{o:?}");
        assert!(!o.stdout.contains("PASTED"), "{args:?}: {o:?}");
        assert!(o.stdout.contains("vault.example"), "{o:?}");
        assert!(
            o.stdout.contains("a file: source") && o.stdout.contains("a env: source"),
            "{o:?}"
        );
        assert!(o.stdout.contains("not a source"), "{o:?}");
    }
}

/// Item 25: `user:pass@` in a Vault address or an AWS endpoint is never printed (run, -v,
/// check, explain, text and JSON) nor logged.
#[test]
fn userinfo_in_an_address_is_never_printed_or_logged() {
    let mut s = Scratch::new();
    s.env.insert("VT".into(), "s.not-a-real-token-1234".into());
    s.env
        .insert("AWS_ACCESS_KEY_ID".into(), "AKIATESTTESTTESTTEST".into());
    s.env.insert(
        "AWS_SECRET_ACCESS_KEY".into(),
        "testtesttesttesttesttesttesttesttesttest".into(),
    );
    s.env
        .insert("AWS_EC2_METADATA_DISABLED".into(), "true".into());
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    s.profile(
        "v",
        r#"version = 1
[secrets]
S = "vault:secret/app#key"
[vault]
address = "http://vaultuser:hunter2vaultpw@127.0.0.1:1"
token = "env:VT"
retries = 0
timeout = "2s"
"#,
    );
    s.profile(
        "a",
        r#"version = 1
[secrets]
S = "aws-sm:app#key"
[aws]
region = "us-east-1"
endpoint = "http://awsuser:hunter2awspw@127.0.0.1:1"
retries = 0
timeout = "3s"
"#,
    );
    let mut seen = Vec::new();
    for p in ["v", "a"] {
        for args in [
            &["-p", p, "--", "true"][..],
            &["-v", "-p", p, "--", "true"],
            &["check", "-p", p],
            &["check", "-p", p, "--json"],
            &["explain", "-p", p],
            &["explain", "-p", p, "--json"],
        ] {
            let o = s.run(args);
            seen.push(format!("{args:?}: {o:?}"));
        }
    }
    let all = seen.join("\n") + &std::fs::read_to_string(s.path().join("audit.jsonl")).unwrap();
    for bad in ["hunter2", "vaultuser", "awsuser"] {
        assert!(!all.contains(bad), "{bad} printed:\n{all}");
    }
    // The address itself is still named, so the operator knows which server failed.
    assert!(all.contains("http://127.0.0.1:1"), "{all}");
}

/// Review L3: `agentrun profiles` lists `./profiles/`, where a child may write: a planted
/// file name carrying terminal escape sequences is printed escaped, never raw.
#[test]
fn profiles_listing_escapes_planted_names() {
    let s = Scratch::new();
    s.profile("ok", "version = 1\n");
    let evil = "evil\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}31m\u{202e}x";
    s.profile(evil, "version = 1\n");
    let o = s.run(&["profiles"]);
    assert_eq!(o.code, 0, "{o:?}");
    for raw in ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'] {
        assert!(!o.stdout.contains(raw), "{raw:?} printed raw: {o:?}");
    }
    assert!(
        o.stdout
            .contains("evil\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\u{9b}31m\\u{202e}x"),
        "{o:?}"
    );
    assert!(o.stdout.contains("ok "), "{o:?}");
}

/// Review L4: `pass = ["*"]` copied `VAULT_ADDR` (which may carry `user:pass@`),
/// `VAULT_ROLE_ID` and the clouds' settings to the child. A glob never copies `VAULT_*`,
/// `AWS_*` (but `AWS_REGION`, `AWS_DEFAULT_REGION`, `AWS_PROFILE`), `AZURE_*`,
/// `GOOGLE_APPLICATION_CREDENTIALS` or `AGENTRUN_*`; naming one exactly still does.
#[test]
fn star_pass_keeps_backend_and_cloud_variables() {
    let mut s = Scratch::new();
    s.profile("star", "version = 1\n[env]\npass = [\"*\"]\n");
    s.profile(
        "named",
        "version = 1\n[env]\npass = [\"*\", \"VAULT_NAMESPACE\"]\n",
    );
    let withheld = [
        (
            "VAULT_ADDR",
            "https://vaultuser:pw-Hq7Lm2@vault.example:8200",
        ),
        ("VAULT_ROLE_ID", "role-id-Zx4Kp9Wq"),
        ("VAULT_NAMESPACE", "ns-Tb6Yc1Rv"),
        ("AWS_ENDPOINT_URL", "http://awsuser:pw-Jd3Nf8@127.0.0.1:1"),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            "/run/aws-token-Gm5Ps2",
        ),
        ("GOOGLE_APPLICATION_CREDENTIALS", "/keys/gcp-Lw9Xe4.json"),
        ("AZURE_CLIENT_ID", "azure-client-Uv2Qh7"),
        ("AGENTRUN_PROFILE_PATH_X", "agentrun-own-Ke8Bn3"),
    ];
    for (k, v) in withheld {
        s.env.insert(k.into(), v.into());
    }
    s.env.insert("AWS_REGION".into(), "region-Fp1Dz6".into());
    s.env.insert("PLAIN_SETTING".into(), "plain-Wr5Ca0".into());
    let o = s.run(&["-p", "star", "--", "env"]);
    assert_eq!(o.code, 0, "{o:?}");
    for (k, v) in withheld {
        assert!(!o.stdout.contains(v), "{k} copied: {o:?}");
    }
    assert!(!o.stdout.contains("AGENTRUN_AUDIT_LOG="), "{o:?}");
    assert!(o.stdout.contains("AWS_REGION=region-Fp1Dz6"), "{o:?}");
    assert!(o.stdout.contains("PLAIN_SETTING=plain-Wr5Ca0"), "{o:?}");
    // Named exactly, the operator means it.
    let o = s.run(&["-p", "named", "--", "env"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("VAULT_NAMESPACE=ns-Tb6Yc1Rv"), "{o:?}");
    assert!(!o.stdout.contains("pw-Hq7Lm2"), "{o:?}");
}

/// `check` on a profile a run would refuse exits 1 (not 125), and `--json` still prints one
/// JSON object, with the error (issue 13, item 3).
#[test]
fn check_of_a_broken_profile_exits_1_with_a_json_error() {
    let s = Scratch::new();
    s.profile("bad", "version = 1\n[limits]\nnofile = \"many\"\n");
    let o = s.run(&["check", "-p", "bad"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("bad.toml:3"), "{o:?}");
    let j = s.run(&["check", "-p", "bad", "--json"]);
    assert_eq!(j.code, 1, "{j:?}");
    let doc: serde_json::Value = serde_json::from_str(&j.stdout).expect("one JSON object");
    assert_eq!(doc["ok"], false);
    assert!(
        doc["errors"][0].as_str().unwrap().contains("bad.toml:3"),
        "{doc}"
    );
    // A profile that does not exist is the same case.
    let m = s.run(&["check", "-p", "no-such-profile", "--json"]);
    assert_eq!(m.code, 1, "{m:?}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&m.stdout).unwrap()["ok"],
        false
    );
}
