//! Helpers for the end-to-end tests: a scratch directory with profiles, the real
//! `agentrun` binary run with a clean, known environment through the [`Run`] builder
//! (`s.agentrun().profile(..).args(..).as_nobody().run()`), and process helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_agentrun")
}

/// A scratch working directory with a fake HOME reached through `home` inside it.
///
/// The home itself lies outside the working directory and outside `/tmp` (in `/var/tmp`):
/// the default policy refuses to run when one of its write roots (the working directory,
/// `/tmp`) contains a home. `<dir>/home` is a symlink to it, so tests write its files as
/// `home/...`; `$HOME` names the real directory.
pub(crate) struct Scratch {
    pub dir: tempfile::TempDir,
    pub env: BTreeMap<String, String>,
    pub home_dir: tempfile::TempDir,
}

impl Scratch {
    pub(crate) fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("agentrun-test-")
            .tempdir()
            .unwrap();
        let home_dir = tempfile::Builder::new()
            .prefix("agentrun-test-home-")
            .tempdir_in("/var/tmp")
            .unwrap();
        std::os::unix::fs::symlink(home_dir.path(), dir.path().join("home")).unwrap();
        std::fs::create_dir_all(dir.path().join("profiles")).unwrap();
        let mut env = BTreeMap::new();
        env.insert("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into());
        env.insert("HOME".into(), home_dir.path().display().to_string());
        env.insert("LANG".into(), "C.UTF-8".into());
        // The test is the operator: it keeps the log in the scratch directory, where a
        // profile may not put it (a profile's log must lie under agentrun's state directory).
        env.insert(
            "AGENTRUN_AUDIT_LOG".into(),
            dir.path().join("audit.jsonl").display().to_string(),
        );
        Scratch { dir, env, home_dir }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write a file with mode 0600.
    pub(crate) fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// Write `profiles/<name>.toml`. The audit log goes to `audit.jsonl` (the operator's
    /// `AGENTRUN_AUDIT_LOG`, which overrides the profile's `[audit] log`).
    pub(crate) fn profile(&self, name: &str, text: &str) -> PathBuf {
        let mut t = text.to_string();
        if !t.contains("[audit]") {
            t.push_str("\n[audit]\nlog = \"audit.jsonl\"\n");
        }
        self.file(&format!("profiles/{name}.toml"), &t)
    }

    /// A run of the real binary in this scratch directory, as root, with its environment
    /// and stdin from `/dev/null`: see [`Run`].
    pub(crate) fn agentrun(&self) -> Run<'_> {
        Run {
            scratch: self,
            profile: None,
            uid: None,
            cwd: None,
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
        }
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        self.agentrun().args(args).command()
    }

    pub(crate) fn run(&self, args: &[&str]) -> Out {
        self.agentrun().args(args).run()
    }

    pub(crate) fn spawn(&self, args: &[&str]) -> Child {
        self.agentrun().args(args).spawn()
    }

    /// Give the scratch directory and its home to `who`: for nobody, everything belongs to
    /// nobody and is readable (dirs 0755, files 0644, or 0755 when the owner may execute
    /// them; never group/other-writable), so any denial is the sandbox's, not the file
    /// mode's. Symlinks are only chowned. Nothing to do for root.
    pub(crate) fn hand_to(&self, who: As) {
        if who == As::Root {
            return;
        }
        for e in walk(self.path())
            .into_iter()
            .chain(walk(self.home_dir.path()))
        {
            std::os::unix::fs::lchown(&e, Some(NOBODY), Some(NOBODY)).unwrap();
            if e.is_symlink() {
                continue;
            }
            let x = std::fs::metadata(&e).unwrap().permissions().mode() & 0o100 != 0;
            let mode = if e.is_dir() || x { 0o755 } else { 0o644 };
            std::fs::set_permissions(&e, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }

    pub(crate) fn audit(&self) -> Vec<serde_json::Value> {
        read_events(&self.path().join("audit.jsonl"))
    }
}

/// The uid tests switch to for an unprivileged run.
pub(crate) const NOBODY: u32 = 65534;

/// Who runs agentrun.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum As {
    Root,
    Nobody,
}

/// Whether this test process runs as root (our own /proc entry is owned by our euid).
pub(crate) fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        == 0
}

/// One run of the real binary, built up from a [`Scratch`]:
///
/// ```ignore
/// let o = s.agentrun().profile("version = 1\n").args(["--", "true"]).env("K", "v").as_nobody().run();
/// assert_eq!(o.code, 0, "{o:?}");
/// let events = o.audit_events();
/// ```
///
/// Defaults: as root, in the scratch directory, with the scratch's environment only,
/// stdin from `/dev/null`. [`Run::command`] gives the `Command` for anything else (a pty,
/// pipes held open, a custom stdin).
#[must_use]
pub(crate) struct Run<'a> {
    scratch: &'a Scratch,
    /// `-p` and the path of a profile written for this run.
    profile: Option<PathBuf>,
    uid: Option<u32>,
    cwd: Option<PathBuf>,
    args: Vec<OsString>,
    /// Changes to the scratch's environment, in order: `None` removes the variable.
    env: Vec<(String, Option<OsString>)>,
    stdin: Option<Vec<u8>>,
}

#[allow(clippy::wrong_self_convention)] // `as_nobody()` reads as English; it consumes the builder
impl Run<'_> {
    /// Write `text` as a profile of its own (`profiles/runN.toml`, as [`Scratch::profile`]
    /// writes it) and pass its path with `-p`, after the subcommand if the arguments start
    /// with one.
    pub(crate) fn profile(mut self, text: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.profile = Some(self.scratch.profile(&format!("run{n}"), text));
        self
    }

    pub(crate) fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub(crate) fn args<I: IntoIterator<Item = A>, A: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub(crate) fn env(mut self, k: &str, v: impl Into<OsString>) -> Self {
        self.env.push((k.to_string(), Some(v.into())));
        self
    }

    pub(crate) fn env_remove(mut self, k: &str) -> Self {
        self.env.push((k.to_string(), None));
        self
    }

    /// Run in `dir` instead of the scratch directory.
    pub(crate) fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Feed `data` to agentrun's stdin (a pipe, closed after the data) instead of `/dev/null`.
    pub(crate) fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Run as `nobody` (uid and gid 65534, no supplementary groups) through `setpriv`.
    pub(crate) fn as_nobody(self) -> Self {
        self.as_uid(NOBODY)
    }

    /// Run as `who`.
    pub(crate) fn user(self, who: As) -> Self {
        match who {
            As::Root => self,
            As::Nobody => self.as_nobody(),
        }
    }

    /// Run as `uid` (gid 65534, no supplementary groups) through `setpriv`.
    pub(crate) fn as_uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    /// The `Command`, ready to spawn.
    pub(crate) fn command(&self) -> Command {
        let mut c = match self.uid {
            None => Command::new(bin()),
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.arg("--reuid").arg(uid.to_string()).args([
                    "--regid",
                    "65534",
                    "--clear-groups",
                    bin(),
                ]);
                c
            }
        };
        let sub = match self.args.first().and_then(|a| a.to_str()) {
            Some("run" | "check" | "explain" | "redact" | "learn" | "preflight") => 1,
            _ => 0,
        };
        c.args(&self.args[..sub]);
        if let Some(p) = &self.profile {
            c.arg("-p").arg(p);
        }
        c.args(&self.args[sub..])
            .current_dir(self.cwd.as_deref().unwrap_or(self.scratch.path()))
            .env_clear()
            .envs(&self.scratch.env)
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    }

    /// Run to the end and collect the output.
    pub(crate) fn run(&self) -> Out {
        let mut c = self.command();
        let output = match &self.stdin {
            None => c.output().unwrap(),
            Some(data) => {
                let mut child = c
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut pipe = child.stdin.take().unwrap();
                let data = data.clone();
                // A writer thread: the child may fill its output pipes before it reads all.
                let writer = std::thread::spawn(move || {
                    let _ = pipe.write_all(&data);
                });
                let out = child.wait_with_output().unwrap();
                writer.join().unwrap();
                out
            }
        };
        let mut o = Out::from(output);
        o.audit_log = self.audit_log();
        o
    }

    /// Start it with stdout and stderr piped.
    pub(crate) fn spawn(&self) -> Child {
        self.command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The operator's audit log for this run (`AGENTRUN_AUDIT_LOG`, as the scratch or
    /// [`Run::env`] sets it; a `--audit-log` argument is not looked at), relative to its cwd.
    fn audit_log(&self) -> Option<PathBuf> {
        let mut log = self
            .scratch
            .env
            .get("AGENTRUN_AUDIT_LOG")
            .map(OsString::from);
        for (k, v) in &self.env {
            if k == "AGENTRUN_AUDIT_LOG" {
                log = v.clone();
            }
        }
        let cwd = self.cwd.as_deref().unwrap_or(self.scratch.path());
        log.filter(|l| l != "-").map(|l| cwd.join(l))
    }
}

/// What a finished run printed, as text, and how it ended.
pub(crate) struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The operator's audit log, when the run came from [`Run::run`].
    pub audit_log: Option<PathBuf>,
}

impl Out {
    /// The events of the run's audit log (the whole file: earlier runs' events too).
    pub(crate) fn audit_events(&self) -> Vec<serde_json::Value> {
        let path = self
            .audit_log
            .as_deref()
            .expect("audit_events: this run has no operator audit log file");
        read_events(path)
    }
}

impl From<Output> for Out {
    fn from(o: Output) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            audit_log: None,
        }
    }
}

/// The JSON lines of an audit log (none when it does not exist).
/// Whether each line of an audit log's `text` names the SHA-256 of the line before it as
/// its `prev` (the first, the genesis: 64 zeros).
pub(crate) fn chained(text: &str) -> bool {
    use sha2::Digest;
    let mut prev = "0".repeat(64);
    text.lines().all(|line| {
        let ok = serde_json::from_str::<serde_json::Value>(line)
            .is_ok_and(|e| e["prev"].as_str() == Some(prev.as_str()));
        prev = hex::encode(sha2::Sha256::digest(line.as_bytes()));
        ok
    })
}

pub(crate) fn read_events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "code {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `p` and everything under it (symlinks not followed), parents first.
pub(crate) fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = vec![p.to_path_buf()];
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

/// Read from `r` until `pred` holds on what was read, or `limit` passes.
pub(crate) fn read_until(
    r: &mut impl Read,
    limit: Duration,
    pred: impl Fn(&str) -> bool,
) -> String {
    let start = Instant::now();
    let mut acc = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => acc.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("read_until: {e}");
                break;
            }
        }
        if pred(&String::from_utf8_lossy(&acc)) {
            break;
        }
    }
    String::from_utf8_lossy(&acc).into_owned()
}

/// Wait until `pred` holds, polling, up to `limit`.
pub(crate) fn eventually(limit: Duration, pred: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    pred()
}

pub(crate) fn alive(pid: i32) -> bool {
    // A zombie is dead for our purposes.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

pub(crate) fn send(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Live (non-zombie) processes descended from `root`, from /proc, as seen from here.
///
/// The child runs in its own PID namespace, so the pids it prints (`$$`, `$!`) are not
/// ours; tests find its processes from the outside instead.
pub(crate) fn descendants(root: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next();
        let ppid = f.next().and_then(|p| p.parse::<i32>().ok());
        if let Some(ppid) = ppid
            && state != Some("Z")
        {
            parent_of.push((pid, ppid));
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out.remove(0);
    out
}

/// Live processes whose command line contains `marker`.
pub(crate) fn pids_with(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline"))
            && String::from_utf8_lossy(&cmd).contains(marker)
            && alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

/// A string unique to this test process and call, to find processes by.
pub(crate) fn marker(tag: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("agentrun-marker-{tag}-{}-{n}", std::process::id())
}

/// Skip (or, under CI=true, fail) when `ok` is false: a test that needs what this machine
/// lacks says why.
pub(crate) fn require(test: &str, ok: bool, why: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {why}, and CI=true forbids skipping");
    }
    eprintln!("SKIP {test}: {why}");
    false
}
