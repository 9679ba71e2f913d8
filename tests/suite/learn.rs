//! Issue 13 item 2: when the sandbox refuses something, say what. `check -- COMMAND` names
//! what a command's start needs that a run would deny, with the `[sandbox]` line that
//! allows it; `learn` runs the command once under observation (ptrace + seccomp
//! `RET_TRACE`, no sandbox) and proposes the table that allows what it did. Each test runs
//! the real binary on a command that a run refuses, then applies the fix it printed and
//! shows the run working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness::{As, Scratch};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const SECRET: &str = "learn-secret-value-7c1f9e2ab4d8";

/// `tools/bin/mytool` (a shell script outside every exec root), `agent` (a script whose
/// `#!/usr/bin/env mytool` line runs it), `~/data/config.txt` (outside every read root).
fn layout(s: &Scratch) -> PathBuf {
    let tools = s.path().join("tools/bin");
    let tool = s.file(
        "tools/bin/mytool",
        "#!/bin/sh\necho \"mytool ran $(basename \"$1\")\"\n[ -n \"$1\" ] && . \"$1\"\nexit 0\n",
    );
    let agent = s.file(
        "agent",
        "#!/usr/bin/env mytool\ncat \"$HOME/data/config.txt\"\nmkdir -p out && echo done > out/result.txt\necho \"token $TOK\"\n",
    );
    for p in [&tool, &agent] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    s.file("home/data/config.txt", "config-content\n");
    tools
}

fn path_with(tools: &Path) -> String {
    format!("{}:/usr/local/bin:/usr/bin:/bin", tools.display())
}

const PROFILE: &str = "version = 1\n[secrets.TOK]\nfrom = \"env:LEARN_TOK\"\n";

/// `check -- ./agent` names `mytool` (run through env from the `#!` line) as denied, with
/// the exec line that allows it; with that line the run works, and `check` says ready.
#[test]
fn check_names_what_a_run_would_deny_and_its_fix_works() {
    let s = Scratch::new();
    let tools = layout(&s);
    let run = |profile: &str, args: &[&str]| {
        s.agentrun()
            .profile(profile)
            .args(args)
            .env("PATH", path_with(&tools))
            .env("LEARN_TOK", SECRET)
            .run()
    };
    // Without a rule: env cannot execute mytool.
    let before = run(PROFILE, &["--", "./agent"]);
    assert_eq!(before.code, 126, "{before:?}");
    let c = run(PROFILE, &["check", "--json", "--", "./agent"]);
    assert_eq!(c.code, 1, "{c:?}");
    let doc: serde_json::Value = serde_json::from_str(&c.stdout).unwrap();
    let needs = doc["command"]["needs"].as_array().unwrap();
    let tool = tools.join("mytool").canonicalize().unwrap();
    let denied: Vec<&serde_json::Value> =
        needs.iter().filter(|n| n["verdict"] == "denied").collect();
    assert_eq!(denied.len(), 1, "{needs:?}");
    assert_eq!(
        denied[0]["path"],
        tools.join("mytool").display().to_string()
    );
    assert_eq!(denied[0]["access"], "exec");
    let fix = denied[0]["fix"].as_str().unwrap();
    assert!(fix.contains(&tool.display().to_string()), "{fix}");
    assert!(fix.starts_with("[sandbox] exec = [\"/usr\""), "{fix}");
    // The program, its `#!` interpreter and env's target are all listed.
    for want in ["the program", "the interpreter of"] {
        assert!(
            needs
                .iter()
                .any(|n| n["why"].as_str().unwrap().contains(want)),
            "{want}: {needs:?}"
        );
    }
    assert!(
        doc["errors"][0]
            .as_str()
            .unwrap()
            .contains("a run would deny 1 path"),
        "{doc}"
    );
    // The same in text.
    let t = run(PROFILE, &["check", "--", "./agent"]);
    assert_eq!(t.code, 1, "{t:?}");
    assert!(t.stdout.contains("DENIED: [sandbox] exec = ["), "{t:?}");

    // Apply the line it printed (and let the agent read its data, as learn would).
    let fixed = format!(
        "{PROFILE}[sandbox]\n{}\nread = [\"/etc\", \"/proc\", \"~/data\"]\n",
        fix.trim_start_matches("[sandbox] ")
    );
    let c = run(&fixed, &["check", "--", "./agent"]);
    assert_eq!(c.code, 0, "{c:?}");
    assert!(c.stdout.contains("ready: a run would start"), "{c:?}");
    let after = run(&fixed, &["--", "./agent"]);
    assert_eq!(after.code, 0, "{after:?}");
    assert!(after.stdout.contains("mytool ran agent"), "{after:?}");
    assert!(after.stdout.contains("config-content"), "{after:?}");
    assert!(!after.stdout.contains(SECRET), "{after:?}");
}

/// A write or read root that does not exist is flagged: a run skips it, and the child then
/// meets `Permission denied` there.
#[test]
fn check_flags_roots_that_do_not_exist() {
    let s = Scratch::new();
    let c = s
        .agentrun()
        .profile("version = 1\n[sandbox]\nwrite = [\"out\"]\nread = [\"/nonexistent-agentrun\"]\n")
        .args(["check", "--json", "--", "true"])
        .run();
    let doc: serde_json::Value = serde_json::from_str(&c.stdout).unwrap();
    let w = doc["warnings"].to_string();
    assert!(
        w.contains("sandbox.write:") && w.contains("/out does not exist"),
        "{doc}"
    );
    assert!(
        w.contains("sandbox.read: /nonexistent-agentrun does not exist"),
        "{doc}"
    );
    // Warnings, not errors: `true` starts.
    assert_eq!(c.code, 0, "{c:?}");
}

/// `learn` runs the agent once (the secret in its environment, its output redacted), and
/// proposes a table that allows exactly what it needed beyond the profile: executing
/// `mytool` and reading `~/data`. A run under the proposal works; the original fails.
/// As root and as nobody (ptrace of one's own child needs no privilege).
#[test]
fn learn_proposes_a_table_that_makes_the_run_work() {
    for who in [As::Root, As::Nobody] {
        learn_then_run(who);
    }
}

fn learn_then_run(who: As) {
    let s = Scratch::new();
    let tools = layout(&s);
    s.hand_to(who);
    let base = s.profile("base", PROFILE);
    s.hand_to(who);
    let run = |profile: &Path, args: &[&str]| {
        let mut r = s
            .agentrun()
            .args(args[..1].iter().copied())
            .arg("-p")
            .arg(profile)
            .args(args[1..].iter().copied())
            .env("PATH", path_with(&tools))
            .env("LEARN_TOK", SECRET);
        if who == As::Nobody {
            r = r.as_nobody();
        }
        r.run()
    };
    let before = run(&base, &["run", "--", "./agent"]);
    assert_ne!(before.code, 0, "{who:?}: {before:?}");

    let l = run(&base, &["learn", "-o", "proposal.toml", "--", "./agent"]);
    assert_eq!(l.code, 0, "{who:?}: {l:?}");
    assert!(l.stderr.contains("WITHOUT A SANDBOX"), "{who:?}: {l:?}");
    assert!(l.stdout.contains("mytool ran agent"), "{who:?}: {l:?}");
    assert!(l.stdout.contains("token [REDACTED:TOK]"), "{who:?}: {l:?}");
    let proposal = std::fs::read_to_string(s.path().join("proposal.toml")).unwrap();
    for text in [&l.stdout, &l.stderr, &proposal] {
        assert!(!text.contains(SECRET), "{who:?}: {text}");
    }
    assert!(
        l.stdout.contains("+ exec") && l.stdout.contains("tools/bin/mytool"),
        "{who:?}: {l:?}"
    );
    assert!(l.stdout.contains("~/data/config.txt"), "{who:?}: {l:?}");
    assert!(l.stdout.contains("diff against"), "{who:?}: {l:?}");
    // Nothing wider than needed: not the home, not the scratch directory's tools tree.
    assert!(!proposal.contains("\"~\""), "{who:?}: {proposal}");
    assert!(proposal.starts_with("[sandbox]\n"), "{proposal}");
    // The profile itself is untouched.
    assert!(
        !std::fs::read_to_string(&base)
            .unwrap()
            .contains("[sandbox]")
    );

    let learned = s.profile("learned", &format!("{PROFILE}{proposal}"));
    s.hand_to(who);
    let after = run(&learned, &["run", "--", "./agent"]);
    assert_eq!(after.code, 0, "{who:?}: {proposal}\n{after:?}");
    assert!(
        after.stdout.contains("config-content"),
        "{who:?}: {after:?}"
    );
    assert!(
        after.stdout.contains("token [REDACTED:TOK]"),
        "{who:?}: {after:?}"
    );
    // And learn has nothing more to add.
    let again = run(&learned, &["learn", "--json", "--", "./agent"]);
    assert_eq!(again.code, 0, "{who:?}: {again:?}");
    let json_at = again.stdout.find("{\n").unwrap();
    let doc: serde_json::Value = serde_json::from_str(&again.stdout[json_at..]).unwrap();
    assert_eq!(doc["additions"], serde_json::json!([]), "{who:?}: {doc}");
    assert_eq!(doc["exit_code"], 0);
}

/// Ports and socket kinds: a TCP connect to a local server is proposed as its port, a UDP
/// socket as `udp = true`; nothing is proposed for a port the profile already allows.
#[test]
fn learn_proposes_ports_and_udp() {
    let s = Scratch::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in listener.incoming().take(1) {
            drop(c);
        }
    });
    let py = format!(
        "import socket\nc = socket.create_connection(('127.0.0.1', {port})); c.close()\nu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b'x', ('127.0.0.1', 9)); u.close()\n"
    );
    s.file("net.py", &py);
    let l = s
        .agentrun()
        .profile("version = 1\n")
        .args(["learn", "--json", "--", "/usr/bin/python3", "net.py"])
        .run();
    assert_eq!(l.code, 0, "{l:?}");
    let doc: serde_json::Value = serde_json::from_str(&l.stdout).unwrap();
    let adds = doc["additions"].as_array().unwrap();
    assert!(
        adds.iter().any(
            |a| a["key"] == "connect" && a["value"].as_str() == Some(port.to_string().as_str())
        ),
        "{doc}"
    );
    assert!(adds.iter().any(|a| a["key"] == "udp"), "{doc}");
    assert!(
        doc["table"]
            .as_str()
            .unwrap()
            .contains(&format!("connect = [{port}]")),
        "{doc}"
    );
}

/// `learn` never writes the profile, and refuses `-o` naming it.
#[test]
fn learn_refuses_to_write_the_profile() {
    let s = Scratch::new();
    let p = s.profile("p", "version = 1\n");
    let before = std::fs::read_to_string(&p).unwrap();
    let l = s
        .agentrun()
        .args(["learn", "-p"])
        .arg(&p)
        .args(["-o"])
        .arg(&p)
        .args(["--", "true"])
        .run();
    assert_eq!(l.code, 125, "{l:?}");
    assert!(l.stderr.contains("learn never writes it"), "{l:?}");
    assert_eq!(std::fs::read_to_string(&p).unwrap(), before);
}

/// After a run that fails (126 here: env cannot execute `mytool`), on a terminal, agentrun
/// prints one line pointing at `check -- COMMAND` and `learn`; not in a pipe, not after a
/// command that succeeds.
#[test]
fn a_failed_run_on_a_terminal_points_at_check_and_learn() {
    use std::process::Stdio;
    let s = Scratch::new();
    let tools = layout(&s);
    s.profile("t", PROFILE);
    let on_pty = |args: &[&str]| -> (Option<i32>, String) {
        let pty = nix::pty::openpty(None, None).unwrap();
        let mut child = s
            .agentrun()
            .args(args.iter().copied())
            .env("PATH", path_with(&tools))
            .env("LEARN_TOK", SECRET)
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::from(pty.slave))
            .spawn()
            .unwrap();
        let mut master = std::fs::File::from(pty.master);
        let code = child.wait().unwrap().code();
        let text =
            crate::harness::read_until(&mut master, std::time::Duration::from_secs(2), |t| {
                t.contains("learn --profile") || t.contains("EOF")
            });
        (code, text)
    };
    let (code, text) = on_pty(&["-p", "t", "--", "./agent", "it's"]);
    assert_eq!(code, Some(126), "{text}");
    let hints: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("agentrun check"))
        .collect();
    assert_eq!(hints.len(), 1, "{text}");
    assert!(
        hints[0].contains("`agentrun check --profile t -- ./agent 'it'\\''s'`")
            && hints[0].contains("`agentrun learn --profile t -- ./agent 'it'\\''s'`"),
        "{text}"
    );
    // A command that succeeds gets none.
    let (code, text) = on_pty(&["-p", "t", "--", "true"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("agentrun check"), "{text}");
    // Not in a pipe.
    let piped = s
        .agentrun()
        .args(["-p", "t", "--", "./agent"])
        .env("PATH", path_with(&tools))
        .env("LEARN_TOK", SECRET)
        .run();
    assert_eq!(piped.code, 126, "{piped:?}");
    assert!(!piped.stderr.contains("agentrun check"), "{piped:?}");
}

/// Review 13, F1: a directory named `~` in the working directory is written `./~` in the
/// proposal, never `~` (which a profile resolves to the real home): a run under the
/// proposal reads the decoy, never the home's key.
#[test]
fn a_directory_named_tilde_is_never_proposed_as_the_home() {
    let s = Scratch::new();
    s.file("home/.ssh/id_ed25519", "REAL-PRIVATE-KEY\n");
    s.file("~/.ssh/id_ed25519", "decoy\n");
    s.file("~/a/x", "");
    s.file("~/b/y", "");
    std::fs::create_dir_all(s.path().join("out")).unwrap();
    let agent = "cat './~/.ssh/id_ed25519'; echo 1 >> './~/a/x'; echo 1 >> './~/b/y'";
    let profile = "version = 1\n[sandbox]\nwrite = [\"out\"]\n";
    let l = s
        .agentrun()
        .profile(profile)
        .args(["learn", "-o", "proposal.toml", "--", "/bin/sh", "-c", agent])
        .run();
    assert_eq!(l.code, 0, "{l:?}");
    let proposal = std::fs::read_to_string(s.path().join("proposal.toml")).unwrap();
    assert!(proposal.contains("\"./~"), "{proposal}");
    assert!(!proposal.contains("\"~"), "{proposal}");
    let after = s
        .agentrun()
        .profile(&format!("version = 1\n{proposal}"))
        .args([
            "--",
            "/bin/sh",
            "-c",
            "cat ~/.ssh/id_ed25519; cat './~/.ssh/id_ed25519'",
        ])
        .run();
    assert!(
        !after.stdout.contains("REAL-PRIVATE-KEY"),
        "{proposal}\n{after:?}"
    );
    assert!(after.stdout.contains("decoy"), "{proposal}\n{after:?}");
}

/// Review 13, F2 to F4: a path the command chose is redacted before it is escaped (a
/// non-ASCII secret as a file name shows in no form: raw, Rust, TOML or JSON escapes), in
/// learn's text, JSON and `-o` file, and in `check -- COMMAND` (a `#!` line naming the
/// secret); a name with an escape sequence never reaches the terminal raw.
#[test]
fn paths_in_reports_are_redacted_before_escaping_and_printable() {
    let s = Scratch::new();
    let secret = "p\u{e4}55w\u{f6}rd-\u{11d}1-q8Zr2";
    let profile =
        "version = 1\n[secrets.TOK]\nfrom = \"env:LEARN_TOK\"\n[sandbox]\nwrite = [\"out\"]\n";
    std::fs::create_dir_all(s.path().join("out")).unwrap();
    s.file("home/.ssh/id_ed25519", "key\n");
    std::os::unix::fs::symlink(
        s.home_dir.path().join(".ssh/id_ed25519"),
        s.path().join("k\u{1b}]0;OWNED\u{7}\u{1b}[31mRED"),
    )
    .unwrap();
    let agent = "printf '#!/bin/sh\\n' > \"out/$LEARN_TOK\"; chmod +x \"out/$LEARN_TOK\"; \"./out/$LEARN_TOK\"; cat ./k* 2>/dev/null; true";
    let mut texts = Vec::new();
    for json in [false, true] {
        let mut args = vec!["learn", "-o", "proposal.toml"];
        if json {
            args.push("--json");
        }
        args.extend(["--", "/bin/sh", "-c", agent]);
        let l = s
            .agentrun()
            .profile(profile)
            .args(args)
            .env("LEARN_TOK", secret)
            .run();
        assert_eq!(l.code, 0, "{l:?}");
        texts.push(l.stdout.clone());
        texts.push(l.stderr.clone());
        texts.push(std::fs::read_to_string(s.path().join("proposal.toml")).unwrap());
    }
    // check: a `#!` line naming the secret.
    s.file("tool", &format!("#!/opt/{secret}/python\n"));
    std::fs::set_permissions(
        s.path().join("tool"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for json in [false, true] {
        let mut args = vec!["check"];
        if json {
            args.push("--json");
        }
        args.extend(["--", "./tool"]);
        let c = s
            .agentrun()
            .profile(profile)
            .args(args)
            .env("LEARN_TOK", secret)
            .run();
        assert_eq!(c.code, 1, "{c:?}");
        assert!(c.stdout.contains("REDACTED"), "{c:?}");
        texts.push(c.stdout);
        texts.push(c.stderr);
    }
    for t in &texts {
        for form in ["55w", "\u{1b}]0;OWNED", "\u{1b}[31m"] {
            assert!(!t.contains(form), "{form:?} in {t}");
        }
    }
}

/// Review 13b, F3: learn's warning and summary show the command line redacted, then escaped.
#[test]
fn learn_shows_the_command_line_redacted() {
    let s = Scratch::new();
    let secret = "p\u{e4}ssw\u{f6}rd-LONG-enough-123";
    let l = s
        .agentrun()
        .profile(PROFILE)
        .args(["learn", "--", "/bin/echo", secret, "\u{1b}[31mRED"])
        .env("LEARN_TOK", secret)
        .run();
    assert_eq!(l.code, 0, "{l:?}");
    for t in [&l.stdout, &l.stderr] {
        assert!(!t.contains("LONG-enough"), "{t}");
    }
    // The child's own output may colour (the redactor passes colours); agentrun's lines not.
    assert!(!l.stderr.contains('\u{1b}'), "{l:?}");
    let summary = l.stdout.lines().find(|x| x.starts_with("learn: ")).unwrap();
    assert!(!summary.contains('\u{1b}'), "{summary}");
    assert!(l.stderr.contains("WITHOUT A SANDBOX"), "{l:?}");
}
