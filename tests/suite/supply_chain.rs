//! agentrun's own supply chain and integrations (issue 16): `.ci/deny` fails on a known
//! advisory, every Python requirements file stays pinned with hashes, the release build
//! carries its dependency list, and the systemd unit and GitHub workflow in `examples/` pass
//! their tools and work as their comments say.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness::require;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn on_path(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `.ci/deny` with the repository's own deny.toml and advisory snapshot fails on a lock that
/// pins `time` 0.3.45 (RUSTSEC-2026-0009, the advisory the landed lock had): a tiny crate
/// made here, its lock resolved from the registry (cargo's cache when it has the crates).
#[test]
fn deny_fails_on_a_lock_with_a_known_advisory() {
    if !require(
        "deny_fails_on_a_lock_with_a_known_advisory",
        on_path("cargo-deny"),
        "cargo-deny is not installed (.ci/deny installs it)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/lib.rs"), "").unwrap();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        "[package]\nname = \"old-time-lock\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
         license = \"MIT\"\npublish = false\n\n[dependencies]\ntime = \"=0.3.45\"\n",
    )
    .unwrap();
    let lock = |offline: bool| {
        let mut c = Command::new("cargo");
        c.arg("generate-lockfile").current_dir(dir.path());
        if offline {
            c.arg("--offline");
        }
        c.output().unwrap()
    };
    let o = lock(true);
    let o = if o.status.success() { o } else { lock(false) };
    assert!(o.status.success(), "cargo generate-lockfile: {}", text(&o));
    // cargo-deny reads the crates' manifests: have them in cargo's cache.
    let o = Command::new("cargo")
        .args(["fetch", "--locked"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "cargo fetch: {}", text(&o));

    let o = Command::new(root().join(".ci/deny"))
        .arg(dir.path().join("Cargo.toml"))
        .output()
        .unwrap();
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("RUSTSEC-2026-0009"), "{t}");
    assert!(
        t.contains("advisory snapshot of "),
        "the snapshot's date is printed: {t}"
    );
    // Only the advisory fails: the same config passes the tiny crate's licences, bans and
    // sources, so the failure above is the advisory's.
    assert!(
        t.contains("advisories FAILED, bans ok, licenses ok, sources ok"),
        "{t}"
    );
}

/// The requirements files in the repository: every tracked `*requirements*.txt`.
fn requirements_files() -> Vec<PathBuf> {
    let o = Command::new("git")
        .args(["ls-files", "-z", "--", "*requirements*.txt"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(o.status.success(), "git ls-files: {}", text(&o));
    o.stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(String::from_utf8(p.to_vec()).unwrap()))
        .collect()
}

/// agentrun's own `preflight` (which `our_own_dependencies_are_pinned_hashed_and_audited`
/// runs on the repository) sees every requirements file: in a copy of each one, an added
/// line without `==` fails `deps.pinned` and one without `--hash` fails `deps.hashes`, each
/// naming that file. A requirements file preflight would not look at (a name it does not
/// know) fails here instead of passing unchecked.
#[test]
fn a_broken_line_in_any_requirements_file_fails_preflight() {
    let files = requirements_files();
    for want in [
        ".ci/requirements-test.txt",
        "bench/requirements-mitmproxy.txt",
        "bench/requirements-preflight.txt",
    ] {
        assert!(
            files.iter().any(|f| f == Path::new(want)),
            "{want}: {files:?}"
        );
    }
    let zeros = "0".repeat(64);
    let breaks = [
        (
            "deps.pinned",
            format!("zzpkg>=1.0 \\\n    --hash=sha256:{zeros}\n"),
        ),
        ("deps.hashes", "zzpkg==1.0\n".to_string()),
    ];
    for rel in &files {
        let original = std::fs::read_to_string(root().join(rel)).unwrap();
        for (check, line) in &breaks {
            let dir = tempfile::tempdir().unwrap();
            let copy = dir.path().join(rel);
            std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
            std::fs::write(&copy, format!("{original}{line}")).unwrap();
            let o = Command::new(crate::harness::bin())
                .args(["preflight", "--json"])
                .arg(dir.path())
                .env_remove("AGENTRUN_PROFILE")
                .output()
                .unwrap();
            let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let c = doc["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["id"] == *check)
                .unwrap();
            assert_eq!(c["status"], "FAIL", "{}: {check}: {c}", rel.display());
            assert!(
                c.to_string().contains(&rel.display().to_string()),
                "{}: the finding names the file: {c}",
                rel.display()
            );
        }
    }
}

fn unit() -> String {
    std::fs::read_to_string(root().join("examples/systemd/agentrun-agent.service")).unwrap()
}

/// `systemd-analyze verify` accepts the example unit, here where systemd is not PID 1. It
/// checks that ExecStart='s program exists, so the copy it reads names the binary built
/// here; everything else is the unit as shipped. verify exits 0 even on lines it ignores,
/// so anything it prints fails too, and a copy with a bad value proves it does print.
#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if !require(
        "the_systemd_unit_passes_systemd_analyze_verify",
        on_path("systemd-analyze"),
        "systemd-analyze is not installed (.ci/run installs the systemd package)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let verify = |text: &str| {
        let path = dir.path().join("agentrun-agent.service");
        std::fs::write(&path, text).unwrap();
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .unwrap()
    };
    let ours = unit().replace("/usr/local/bin/agentrun", crate::harness::bin());
    let o = verify(&ours);
    assert!(
        o.status.success() && text(&o).trim().is_empty(),
        "{}",
        text(&o)
    );
    let o = verify(&ours.replace("NoNewPrivileges=yes", "NoNewPrivileges=maybe"));
    assert!(text(&o).contains("Failed to parse"), "{}", text(&o));
}

/// Item 5b: the unit's own `ExecStart=` line, run by hand as systemd would run it: the
/// credentials in a 0700 `$CREDENTIALS_DIRECTORY` as 0400 files, `$STATE_DIRECTORY` and
/// `$LOGS_DIRECTORY` made with the unit's modes, the unit's `Environment=`, the profile from
/// examples/systemd/research.toml where the search path finds it (`/etc/agentrun/profiles`
/// here is `$AGENTRUN_PROFILE_PATH`), and a test socket standing in for journald's. Only the
/// agent's script is replaced (the unit's interpreter runs a few lines that print each
/// key's SHA-256), and the binary is the one built here. Run as root, and as the unit's
/// `User=` would (uid 65534, no_new_privs, an empty capability bounding set, as
/// `NoNewPrivileges=yes` and `CapabilityBoundingSet=` set it).
#[test]
fn the_systemd_units_execstart_gets_its_credentials_and_writes_its_audit_log() {
    use std::os::unix::fs::PermissionsExt;
    let unit = unit();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart= line");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(words[0], "/usr/local/bin/agentrun", "{exec}");
    let dashes = words.iter().position(|w| *w == "--").unwrap();
    assert_eq!(words[dashes + 1], "/usr/bin/python3", "{exec}");
    let value = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(value("LogsDirectory"), ["agentrun"]);
    assert_eq!(value("StateDirectory"), ["agentrun"]);
    let creds: Vec<String> = value("LoadCredential")
        .into_iter()
        .chain(value("LoadCredentialEncrypted"))
        .map(|c| c.split(':').next().unwrap().to_string())
        .collect();
    assert_eq!(creds, ["openai-key", "github-token"]);

    let can_drop = on_path("setpriv");
    let whos: &[bool] = if crate::harness::is_root() && can_drop {
        &[false, true]
    } else {
        &[false]
    };
    for &as_user in whos {
        let top = tempfile::tempdir().unwrap();
        let r = top.path();
        std::fs::set_permissions(r, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mkdir = |p: &Path, mode: u32| {
            std::fs::create_dir_all(p).unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        for d in ["var", "var/lib", "var/log", "etc", "etc/agentrun", "run"] {
            mkdir(&r.join(d), 0o755);
        }
        let state = r.join("var/lib/agentrun");
        let logs = r.join("var/log/agentrun");
        let credentials = r.join("run/credentials/agentrun-agent.service");
        let profiles = r.join("etc/agentrun/profiles");
        // Outside /tmp, as a real home is: the default policy's write roots (the working
        // directory, /tmp) must not contain it.
        let home_dir = tempfile::Builder::new()
            .prefix("agentrun-test-home-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let home = home_dir.path().to_path_buf();
        let work = r.join("srv/agent");
        mkdir(&r.join("run/credentials"), 0o755);
        mkdir(&credentials, 0o700);
        mkdir(&state, 0o700);
        mkdir(&logs, 0o700);
        mkdir(&profiles, 0o755);
        mkdir(&home, 0o700);
        mkdir(&r.join("srv"), 0o755);
        mkdir(&work, 0o755);
        std::fs::copy(
            root().join("examples/systemd/research.toml"),
            profiles.join("research.toml"),
        )
        .unwrap();
        std::fs::set_permissions(
            profiles.join("research.toml"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let keys = [
            (
                "openai-key",
                "OPENAI_API_KEY",
                "sk-proj-systemd-test-0123456789abcdef",
            ),
            (
                "github-token",
                "GITHUB_TOKEN",
                "ghp_systemdtest0123456789abcdefghijklmn",
            ),
        ];
        for (file, _, v) in keys {
            let p = credentials.join(file);
            std::fs::write(&p, format!("{v}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        }
        let sock_path = r.join("run/journal.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
        sock.set_nonblocking(true).unwrap();
        std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o777)).unwrap();
        if as_user {
            // systemd makes these belong to User=.
            for p in [&state, &logs, &credentials, &home, &work] {
                std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
            }
            for (file, _, _) in keys {
                std::os::unix::fs::chown(credentials.join(file), Some(65534), Some(65534)).unwrap();
            }
        }

        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("HOME".into(), home.display().to_string()),
            (
                "CREDENTIALS_DIRECTORY".into(),
                credentials.display().to_string(),
            ),
            ("STATE_DIRECTORY".into(), state.display().to_string()),
            ("LOGS_DIRECTORY".into(), logs.display().to_string()),
            (
                "AGENTRUN_PROFILE_PATH".into(),
                profiles.display().to_string(),
            ),
            (
                "AGENTRUN_JOURNAL_SOCKET".into(),
                sock_path.display().to_string(),
            ),
        ];
        for e in value("Environment") {
            let (k, v) = e.split_once('=').unwrap();
            // Absolute paths of the unit live under the test's root.
            let v = if v.starts_with('/') {
                format!("{}{v}", r.display())
            } else {
                v.to_string()
            };
            env.push((k.to_string(), v));
        }
        let expand = |w: &str| {
            let mut w = w.to_string();
            for (k, v) in &env {
                w = w.replace(&format!("${{{k}}}"), v);
            }
            assert!(!w.contains("${"), "an unset variable in ExecStart=: {w}");
            w
        };
        let script = "import hashlib, os\n\
                      for k in ('OPENAI_API_KEY', 'GITHUB_TOKEN'):\n    \
                      print(k, hashlib.sha256(os.environ[k].encode()).hexdigest())\n";
        let mut argv: Vec<String> = vec![crate::harness::bin().to_string()];
        argv.extend(words[1..=dashes + 1].iter().map(|w| expand(w)));
        argv.extend(["-c".to_string(), script.to_string()]);
        let mut cmd = if as_user {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--no-new-privs",
                "--bounding-set=-all",
                "--inh-caps=-all",
                "--",
            ]);
            c.args(&argv);
            c
        } else {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        };
        assert_eq!(value("WorkingDirectory"), ["/srv/agent"]);
        cmd.env_clear().envs(env.iter().cloned()).current_dir(&work);
        let o = cmd.output().unwrap();
        let who = if as_user { "as User=" } else { "as root" };
        assert_eq!(o.status.code(), Some(0), "{who}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        for (_, name, v) in keys {
            use sha2::Digest;
            let want = hex::encode(sha2::Sha256::digest(v.as_bytes()));
            assert!(
                out.lines().any(|l| l == format!("{name} {want}")),
                "{who}: {name} did not arrive as the credential file holds it: {out}"
            );
            assert!(!text(&o).contains(v), "{who}: a key in the output");
        }

        // The audit log is where the unit says: ${LOGS_DIRECTORY}/audit.jsonl.
        let log = logs.join("audit.jsonl");
        let file = std::fs::read_to_string(&log).unwrap();
        assert!(crate::harness::chained(&file), "{who}: {file}");
        let events = crate::harness::read_events(&log);
        assert_eq!(events.first().unwrap()["event"], "start", "{who}");
        assert_eq!(events.last().unwrap()["event"], "exit", "{who}");
        for (_, name, v) in keys {
            assert!(file.contains(name), "{who}: {name} in the log");
            assert!(!file.contains(v), "{who}: a key in the log");
        }
        assert!(file.contains("systemd"), "{who}: the source kind is logged");
        // ... and every line went to the journal too, as `journalctl -t agentrun` shows it.
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = sock.recv(&mut buf) {
            got.push(crate::launcher::journal_fields(&buf[..n]));
        }
        let lines: Vec<&str> = file.lines().collect();
        assert_eq!(got.len(), lines.len(), "{who}: one journal entry per line");
        for (entry, line) in got.iter().zip(&lines) {
            assert_eq!(entry["SYSLOG_IDENTIFIER"], "agentrun", "{who}");
            assert_eq!(entry["MESSAGE"], *line, "{who}: the entry carries the line");
            assert_eq!(entry["AGENTRUN_LOG"], log.display().to_string(), "{who}");
        }
        let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{who}");
    }
}

/// The release build carries its dependency list (cargo auditable's `.dep-v0` section, a
/// zlib-compressed JSON that `cargo audit bin`, trivy, syft, grype and osv-scanner read).
/// `scripts/release --profile sbom` is the release script with the `sbom` profile: the same
/// list without the LTO build's minutes (in its own target/sbom). The list names our crate
/// as the root and the crates we ship at the versions in Cargo.lock, and no dev-dependency.
#[test]
fn the_release_build_carries_its_dependency_list() {
    if !require(
        "the_release_build_carries_its_dependency_list",
        on_path("objcopy") && Path::new("/usr/bin/python3").exists(),
        "objcopy (binutils) or /usr/bin/python3 is missing",
    ) {
        return;
    }
    let o = Command::new(root().join("scripts/release"))
        .args(["--profile", "sbom"])
        .output()
        .unwrap();
    assert!(o.status.success(), "scripts/release: {}", text(&o));
    let bin = root().join("target/sbom/agentrun");
    let dir = tempfile::tempdir().unwrap();
    let section = dir.path().join("dep-v0");
    let o = Command::new("objcopy")
        .arg(format!("--dump-section=.dep-v0={}", section.display()))
        .arg(&bin)
        .arg(dir.path().join("stripped"))
        .output()
        .unwrap();
    assert!(o.status.success(), "no .dep-v0 section: {}", text(&o));
    let o = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys, zlib; sys.stdout.buffer.write(zlib.decompress(open(sys.argv[1], 'rb').read()))",
        ])
        .arg(&section)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let packages = doc["packages"].as_array().unwrap();
    let find = |name: &str| packages.iter().find(|p| p["name"] == name);
    let ours = find("agentrun-cli").expect("our crate");
    assert_eq!(ours["root"], true);
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap();
    for name in [
        "tokio",
        "landlock",
        "rustls",
        "aws-lc-sys",
        "vaultrs",
        "time",
        "regex",
    ] {
        let p = find(name).unwrap_or_else(|| panic!("{name} is not in the list"));
        let entry = format!("name = \"{name}\"\nversion = {}\n", p["version"]);
        assert!(
            lock.contains(&entry),
            "{name} {} is not in Cargo.lock",
            p["version"]
        );
        assert_eq!(p["source"], "crates.io", "{name}");
    }
    for dev in ["proptest", "seccompiler", "tempfile"] {
        assert!(
            find(dev).is_none(),
            "{dev} is a dev-dependency: not shipped, not listed"
        );
    }
}

fn venv_tool(name: &str) -> PathBuf {
    root().join(".venv/bin").join(name)
}

fn workflow() -> String {
    std::fs::read_to_string(root().join("examples/github-actions/agent.yml")).unwrap()
}

/// The example workflow is valid against GitHub's workflow schema (check-jsonschema's
/// vendored copy), and zizmor's offline audits find nothing of medium severity or more:
/// every `uses:` pinned to a commit, minimal permissions, no persisted credentials, no
/// template injection. Each tool fails on a broken copy, so a pass is not a tool that
/// checked nothing.
#[test]
fn the_github_workflow_passes_check_jsonschema_and_zizmor() {
    let (cj, zz) = (venv_tool("check-jsonschema"), venv_tool("zizmor"));
    if !require(
        "the_github_workflow_passes_check_jsonschema_and_zizmor",
        cj.exists() && zz.exists(),
        "check-jsonschema or zizmor is not in .venv (.ci/install-test-servers installs them)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let schema = |yaml: &str| {
        let p = dir.path().join("schema.yml");
        std::fs::write(&p, yaml).unwrap();
        Command::new(&cj)
            .args(["--builtin-schema", "vendor.github-workflows"])
            .arg(&p)
            .output()
            .unwrap()
    };
    let audit = |yaml: &str| {
        let p = dir.path().join("audit.yml");
        std::fs::write(&p, yaml).unwrap();
        let o = Command::new(&zz)
            .args(["--offline", "--min-severity", "medium", "--format", "json"])
            .arg(&p)
            .output()
            .unwrap();
        let found: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("zizmor's JSON: {e}: {}", text(&o)));
        (o, found)
    };
    let ours = workflow();
    let o = schema(&ours);
    assert!(o.status.success(), "{}", text(&o));
    let o = schema(&ours.replace("runs-on: ubuntu-24.04", "runs_on: ubuntu-24.04"));
    assert!(!o.status.success(), "the schema is checked: {}", text(&o));

    let (o, found) = audit(&ours);
    assert!(o.status.success(), "{found}: {}", text(&o));
    assert_eq!(found, serde_json::json!([]), "{}", text(&o));
    let unpinned = ours.replace(
        "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2",
        "actions/checkout@v4",
    );
    assert_ne!(unpinned, ours);
    let (o, found) = audit(&unpinned);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(found.to_string().contains("unpinned-uses"), "{found}");
}

/// The workflow's agent step as the runner runs it: `GITHUB_TOKEN` in the step's
/// environment, `agentrun --profile profiles/ci.toml -- ...`, `XDG_STATE_HOME` under the
/// runner's temp directory. The agent sees the token, the job log does not, and the audit
/// log is at the path the upload step keeps.
#[test]
fn the_github_workflows_agent_step_redacts_the_token_and_keeps_the_audit_log() {
    let wf = workflow();
    assert!(wf.contains("run: agentrun --profile profiles/ci.toml -- ./agent"));
    assert!(wf.contains("XDG_STATE_HOME: ${{ runner.temp }}/state"));
    assert!(wf.contains("path: ${{ runner.temp }}/state/agentrun/audit.jsonl"));
    assert!(wf.contains("GITHUB_TOKEN: ${{ github.token }}"));
    let temp = tempfile::tempdir().unwrap();
    let work = tempfile::Builder::new()
        .prefix("agentrun-test-work-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let home = tempfile::Builder::new()
        .prefix("agentrun-test-home-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let token = "ghs_workflowtest0123456789abcdefghijklmnopq";
    let o = Command::new(crate::harness::bin())
        .args(["--profile"])
        .arg(root().join("profiles/ci.toml"))
        .args([
            "--",
            "sh",
            "-c",
            "test -n \"$GITHUB_TOKEN\" && echo \"agent: token $GITHUB_TOKEN\"",
        ])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home.path())
        .env("CI", "true")
        .env("GITHUB_TOKEN", token)
        .env("XDG_STATE_HOME", temp.path().join("state"))
        .current_dir(work.path())
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{}", t.replace(token, "<token>"));
    assert!(!t.contains(token), "the token reached the job log");
    assert!(t.contains("agent: token [REDACTED"), "{t}");
    let log = temp.path().join("state/agentrun/audit.jsonl");
    let events = crate::harness::read_events(&log);
    assert_eq!(events.last().unwrap()["event"], "exit");
    assert!(!std::fs::read_to_string(&log).unwrap().contains(token));
}

/// The journald audit sink against the real `systemd-journald`, without systemd as PID 1: a
/// journal namespace of the test's own (`systemd-journald NAMESPACE` listens on
/// `/run/systemd/journal.NAMESPACE/socket`, so the default socket other tests expect absent is
/// never made), agentrun pointed at it with `AGENTRUN_JOURNAL_SOCKET`, and `journalctl
/// --namespace NAMESPACE -t agentrun` shows each audit line with its structured fields, the
/// line's hash chained to the file's, and no value.
#[test]
fn the_audit_log_reaches_the_real_journal_with_its_fields() {
    let tag = "the_audit_log_reaches_the_real_journal_with_its_fields";
    let journald = Path::new("/usr/lib/systemd/systemd-journald");
    if !require(
        tag,
        journald.exists() && on_path("journalctl") && nix::unistd::geteuid().is_root(),
        "no systemd-journald/journalctl (the systemd package), or not root",
    ) {
        return;
    }
    let ns = format!("agentrun-test-{}", std::process::id());
    /// journald stopped and its namespace's runtime and journal files removed, however the
    /// test ends.
    struct Journal(std::process::Child, String);
    impl Drop for Journal {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = std::fs::remove_dir_all(format!("/run/systemd/journal.{}", self.1));
            if let Ok(id) = std::fs::read_to_string("/etc/machine-id") {
                let _ =
                    std::fs::remove_dir_all(format!("/var/log/journal/{}.{}", id.trim(), self.1));
            }
        }
    }
    let _journal = Journal(
        Command::new(journald)
            .arg(&ns)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
        ns.clone(),
    );
    let socket = PathBuf::from(format!("/run/systemd/journal.{ns}/socket"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !socket.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        socket.exists(),
        "{tag}: journald did not listen on {}",
        socket.display()
    );

    let mut s = crate::harness::Scratch::new();
    let value = "journal-secret-value-7Hq2Lm9Xw4";
    s.env.insert("JOURNAL_KEY".into(), value.into());
    s.env.insert(
        "AGENTRUN_JOURNAL_SOCKET".into(),
        socket.display().to_string(),
    );
    s.profile(
        "j",
        "version = 1\n[env]\npass = [\"PATH\"]\n[audit]\njournald = true\n[secrets]\nJOURNAL_KEY = \"env:JOURNAL_KEY\"\n",
    );
    let o = s.run(&["-p", "j", "--", "sh", "-c", "echo \"$JOURNAL_KEY\""]);
    assert_eq!(o.code, 0, "{o:?}");
    let file = std::fs::read_to_string(s.path().join("audit.jsonl")).unwrap();
    let mut entries = Vec::new();
    for _ in 0..50 {
        let out = Command::new("journalctl")
            .args([
                "--namespace",
                &ns,
                "-t",
                "agentrun",
                "-o",
                "json",
                "--no-pager",
            ])
            .output()
            .unwrap();
        entries = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .collect();
        if entries.len() >= file.lines().count() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let events: Vec<&str> = entries
        .iter()
        .map(|e| e["AGENTRUN_EVENT"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        events,
        ["start", "secret", "sandbox", "spawn", "exit"],
        "{tag}: {entries:?}"
    );
    // Each entry is the file's line, in order, with its hash; journald set the sender's uid.
    for (entry, line) in entries.iter().zip(file.lines()) {
        assert_eq!(entry["MESSAGE"].as_str(), Some(line), "{tag}");
        let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(line.as_bytes()));
        assert_eq!(
            entry["AGENTRUN_HASH"].as_str(),
            Some(hash.as_str()),
            "{tag}"
        );
        assert_eq!(entry["_UID"].as_str(), Some("0"), "{tag}");
        assert_eq!(
            entry["SYSLOG_FACILITY"].as_str(),
            Some("10"),
            "{tag}: authpriv"
        );
    }
    let all = serde_json::to_string(&entries).unwrap();
    assert!(
        !all.contains(value) && !all.contains(&value[..12]),
        "{tag}: a value in the journal"
    );
}
