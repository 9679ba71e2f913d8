//! Review 14's findings against `agentrun preflight` and the `[preflight]` gate, each as the
//! attack that worked: git config in the scanned repository that names a program, a FIFO
//! in the tree, escape sequences and values in file names, keys hidden where the scan did
//! not look.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness::*;
use std::path::Path;
use std::process::Command;

const VALUE: &str = "pr3flight-V4lue-9d8c7b6a5f4e3d2c";

fn git(dir: &Path, args: &[&str]) {
    let s = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(s.status.success(), "git {args:?}: {s:?}");
}

/// A repository `repo/` in the scratch directory with one clean tracked file.
fn repo(s: &Scratch) -> std::path::PathBuf {
    let r = s.path().join("repo");
    std::fs::create_dir_all(&r).unwrap();
    git(&r, &["init", "-q"]);
    std::fs::write(r.join("main.py"), "print('hello')\n").unwrap();
    git(&r, &["add", "main.py"]);
    git(&r, &["commit", "-q", "-m", "init"]);
    r
}

const PROFILE: &str = "version = 1\n[secrets]\nAPI_KEY = \"env:API_KEY\"\n";

/// F1, F2: the scanned repository's config names programs (`core.fsmonitor` runs on
/// `ls-files`; `gpg.program` with `log.showSignature` on `log`): none runs, with or without
/// `--history`.
#[test]
fn the_scanned_repositorys_config_runs_nothing() {
    let s = Scratch::new();
    let r = repo(&s);
    let mark = s.path().join("RAN");
    let evil = format!("sh -c 'echo ran >> {}' #", mark.display());
    git(&r, &["config", "core.fsmonitor", &evil]);
    git(&r, &["config", "log.showSignature", "true"]);
    git(
        &r,
        &[
            "config",
            "gpg.program",
            &format!("{}/evil-gpg", s.path().display()),
        ],
    );
    s.file(
        "evil-gpg",
        &format!("#!/bin/sh\necho ran >> {}\n", mark.display()),
    );
    std::fs::set_permissions(
        s.path().join("evil-gpg"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let o = s
        .agentrun()
        .profile(PROFILE)
        .args(["preflight", "--history", "--json"])
        .arg(&r)
        .env("API_KEY", VALUE)
        .run();
    assert!(o.code == 0 || o.code == 1, "{o:?}");
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(doc["checks"][0]["id"], "secrets.hardcoded", "{doc}");
    assert!(
        !mark.exists(),
        "a program named by the repository's config ran: {o:?}"
    );
}

/// F3: a FIFO where a tracked file was never blocks the scan.
#[test]
fn a_fifo_in_the_tree_does_not_hang_the_scan() {
    let s = Scratch::new();
    let r = repo(&s);
    std::fs::remove_file(r.join("main.py")).unwrap();
    nix::unistd::mkfifo(
        &r.join("main.py"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let mut child = s
        .agentrun()
        .args(["preflight", "--json"])
        .arg(&r)
        .command()
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let mut done = false;
    while start.elapsed() < std::time::Duration::from_secs(20) {
        if child.try_wait().unwrap().is_some() {
            done = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if !done {
        let _ = child.kill();
    }
    assert!(done, "preflight hung on a FIFO");
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not a regular file"), "{text}");
}

/// F4, F5, F6: a value in a file name (non-ASCII, so an escaped form would not be caught
/// afterwards) never shows; escape sequences in a file name never reach the terminal raw
/// in the run's refusal; a key in an untracked file and in a binary file fails the gate.
#[test]
fn the_gate_sees_untracked_and_binary_files_and_prints_nothing_raw() {
    let s = Scratch::new();
    let r = repo(&s);
    let value = "p\u{e4}ss-w\u{f6}rd-pr3flight-\u{e9}9d8c7b";
    // A key in an untracked, not ignored file.
    std::fs::write(r.join("notes.txt"), format!("key: {value}\n")).unwrap();
    // A key in a binary file (a NUL first).
    let mut bin = vec![0u8, 1, 2];
    bin.extend_from_slice(value.as_bytes());
    std::fs::write(r.join("blob.bin"), bin).unwrap();
    // A file named after the value, and one with escape sequences in its name.
    std::fs::write(r.join(format!("{value}.txt")), "x\n").unwrap();
    std::fs::write(
        r.join("x\u{1b}]0;TITLE\u{7}\u{1b}[31mRED\r\nagentrun: all checks passed.py"),
        "api_key = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'\n",
    )
    .unwrap();
    let profile = format!(
        "version = 1\n[secrets]\nAPI_KEY = \"env:API_KEY\"\n[preflight]\ndir = \"{}\"\nrequire = [\"secrets.hardcoded\"]\n",
        r.display()
    );
    let o = s
        .agentrun()
        .profile(&profile)
        .args(["--", "true"])
        .env("API_KEY", value)
        .run();
    assert_eq!(o.code, 125, "{o:?}");
    for f in ["notes.txt:1", "blob.bin:1"] {
        assert!(o.stderr.contains(f), "{f}: {o:?}");
    }
    assert!(
        !o.stderr.contains('\u{1b}') && !o.stderr.contains('\r'),
        "{o:?}"
    );
    for text in [&o.stdout, &o.stderr] {
        assert!(!text.contains("ss-w"), "{text}");
        assert!(!text.contains("pr3flight"), "{text}");
    }
    for format in ["--json", "--sarif"] {
        let p = s
            .agentrun()
            .profile(PROFILE)
            .args(["preflight", format])
            .arg(&r)
            .env("API_KEY", value)
            .run();
        assert_eq!(p.code, 1, "{p:?}");
        assert!(
            !p.stdout.contains("pr3flight") && !p.stdout.contains("ss-w"),
            "{p:?}"
        );
    }
    let t = s
        .agentrun()
        .profile(PROFILE)
        .args(["preflight"])
        .arg(&r)
        .env("API_KEY", value)
        .run();
    assert!(
        !t.stdout.contains("pr3flight") && !t.stdout.contains('\u{1b}'),
        "{t:?}"
    );
}

/// F7: git is never taken from a relative `PATH` entry (the agent's working directory).
#[test]
fn git_is_not_taken_from_a_relative_path_entry() {
    let s = Scratch::new();
    let r = repo(&s);
    let mark = s.path().join("PLANTED");
    std::fs::write(
        r.join("git"),
        format!(
            "#!/bin/sh\necho ran > {}\nexec /usr/bin/git \"$@\"\n",
            mark.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        r.join("git"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let o = s
        .agentrun()
        .args(["preflight", "--json", "."])
        .cwd(&r)
        .env("PATH", "::/usr/local/bin:/usr/bin:/bin")
        .run();
    assert!(o.code == 0 || o.code == 1, "{o:?}");
    assert!(!mark.exists(), "a git in the working directory ran: {o:?}");
}

/// Review 14b, F-1 to F-4: the git dir is the agent's to write. `HEAD` as a link to an
/// operator-only file, `info/exclude` or `index` as a FIFO, `packed-refs` as a link to a
/// private file: preflight neither copies the file, nor hangs, nor prints a line of it;
/// a git on an absolute `PATH` entry the agent writes is never run.
#[test]
fn the_git_dir_cannot_copy_hang_or_leak() {
    let s = Scratch::new();
    let private = s.file("private/secret", "PRIVATE-operator-only-line\n");
    let mark = s.path().join("PLANTED");
    let bin = s.path().join("venv-bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(
        bin.join("git"),
        format!(
            "#!/bin/sh\necho ran > {}\nexec /usr/bin/git \"$@\"\n",
            mark.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("git"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display());
    for case in [
        "head-link",
        "exclude-fifo",
        "index-fifo",
        "packed-refs-link",
    ] {
        let r = repo(&s);
        let g = r.join(".git");
        match case {
            "head-link" => {
                std::fs::remove_file(g.join("HEAD")).unwrap();
                std::os::unix::fs::symlink(&private, g.join("HEAD")).unwrap();
            }
            "exclude-fifo" | "index-fifo" => {
                let f = if case == "index-fifo" {
                    g.join("index")
                } else {
                    g.join("info/exclude")
                };
                let _ = std::fs::remove_file(&f);
                std::fs::create_dir_all(f.parent().unwrap()).unwrap();
                nix::unistd::mkfifo(&f, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
            }
            _ => {
                let _ = std::fs::remove_file(g.join("packed-refs"));
                std::os::unix::fs::symlink(&private, g.join("packed-refs")).unwrap();
            }
        }
        let mut child = s
            .agentrun()
            .args(["preflight", "--history", "--json"])
            .arg(&r)
            .env("PATH", &path)
            .command()
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() && start.elapsed().as_secs() < 20 {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let hung = child.try_wait().unwrap().is_none();
        if hung {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        assert!(!hung, "{case}: preflight hung");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains("PRIVATE-operator-only"), "{case}: {text}");
        assert!(!mark.exists(), "{case}: a git on PATH ran");
        std::fs::remove_dir_all(&r).unwrap();
    }
    // Nothing of agentrun's git dir is left behind with the private file in it.
    for e in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("agentrun-git-") {
            let head = std::fs::read_to_string(e.path().join("HEAD")).unwrap_or_default();
            assert!(!head.contains("PRIVATE"), "{}", e.path().display());
        }
    }
}

/// Review 14b, F-5: a key as a committed symlink's target and as a file's name is found.
#[test]
fn a_key_in_a_symlink_target_or_a_file_name_is_found() {
    let s = Scratch::new();
    let r = repo(&s);
    std::os::unix::fs::symlink(VALUE, r.join("link.py")).unwrap();
    std::fs::write(r.join(format!("{VALUE}.txt")), "x\n").unwrap();
    git(&r, &["add", "-A"]);
    git(&r, &["commit", "-q", "-m", "k"]);
    let o = s
        .agentrun()
        .profile(PROFILE)
        .args(["preflight", "--json"])
        .arg(&r)
        .env("API_KEY", VALUE)
        .run();
    assert_eq!(o.code, 1, "{o:?}");
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let f = doc["checks"][0]["findings"].to_string();
    assert!(f.contains("link.py") && f.contains("symlink"), "{f}");
    assert!(f.contains("in the file's name"), "{f}");
    assert!(
        !o.stdout.contains(VALUE) && !o.stdout.contains(&VALUE[..12]),
        "{o:?}"
    );
}
