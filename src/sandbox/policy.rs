//! `[sandbox]` as written in the profile -> [`Policy`]: absolute paths, defaults filled in,
//! syscall names validated. Pure path arithmetic: no file system access, no kernel.
//!
//! Later stages never re-validate: a `Policy` is always well-formed.

use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use super::SandboxError;

pub use crate::profile::SandboxSection;

/// A syscall (group) a profile may take back from the deny-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GiveBack {
    Ptrace,
    ProcessVmReadv,
    ProcessVmWritev,
    PerfEventOpen,
    Personality,
    /// `io_uring_setup`, `io_uring_enter`, `io_uring_register`.
    IoUring,
}

impl GiveBack {
    /// Every name a profile may use, in the order the contract lists them.
    pub const ALL: [GiveBack; 6] = [
        GiveBack::Ptrace,
        GiveBack::ProcessVmReadv,
        GiveBack::ProcessVmWritev,
        GiveBack::PerfEventOpen,
        GiveBack::Personality,
        GiveBack::IoUring,
    ];

    /// The name as written in `allow_syscalls`.
    pub fn name(self) -> &'static str {
        match self {
            GiveBack::Ptrace => "ptrace",
            GiveBack::ProcessVmReadv => "process_vm_readv",
            GiveBack::ProcessVmWritev => "process_vm_writev",
            GiveBack::PerfEventOpen => "perf_event_open",
            GiveBack::Personality => "personality",
            GiveBack::IoUring => "io_uring",
        }
    }

    /// Parses a name from `allow_syscalls` (exact, lower case).
    pub fn from_name(name: &str) -> Option<GiveBack> {
        GiveBack::ALL.into_iter().find(|g| g.name() == name)
    }
}

/// Credential stores under `$HOME` that stay denied even when a rule covers `$HOME`, unless a
/// rule names them (or a path inside them) explicitly. The last two are agentrun's own
/// configuration and state (profiles, audit log).
pub const CREDENTIAL_STORES: &[&str] = &[
    ".ssh",
    ".aws",
    ".config/gcloud",
    ".azure",
    ".kube",
    ".netrc",
    ".docker/config.json",
    ".config/gh",
    ".git-credentials",
    ".npmrc",
    ".gnupg",
    ".vault-token",
    ".config/agentrun",
    ".local/state/agentrun",
];

/// The credential stores under one home directory (see [`CREDENTIAL_STORES`]).
///
/// agentrun protects them under `$HOME` and under the account's home from the password
/// database: `$HOME` is an input (unset or wrong under a systemd unit without `User=`, or
/// `env -u HOME`), not a fact.
pub fn credential_stores(home: &Path) -> Vec<PathBuf> {
    CREDENTIAL_STORES.iter().map(|s| home.join(s)).collect()
}

/// The operator's own start-up files under a home: code or settings the operator's next
/// shell, login, `git` or `PATH` lookup runs. Kept from the child (denied, like
/// [`CREDENTIAL_STORES`]) when a write root covers the home, unless a rule names them (or a
/// path inside them) explicitly. Reading them is denied too: Landlock cannot deny writing one
/// file while granting its directory.
pub const STARTUP_FILES: &[&str] = &[
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".profile",
    ".zshrc",
    ".zshenv",
    ".zprofile",
    ".zlogin",
    ".config/fish",
    ".gitconfig",
    ".config/git",
    ".inputrc",
    ".pam_environment",
    ".local/bin",
];

/// System credential stores owned by uid 0: a root child reads them under any policy that
/// covers `/etc` (dropping capabilities does not help; the owner needs none). Always denied.
/// `/etc/ssh/ssh_host_*_key` is expanded by [`system_credential_stores`].
pub const SYSTEM_CREDENTIAL_STORES: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/ssl/private",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/security/opasswd",
];

/// The system credential stores that exist on this machine: [`SYSTEM_CREDENTIAL_STORES`] and
/// the SSH host private keys (`/etc/ssh/ssh_host_*_key`). Added to every run's policy (see
/// `commands::plan::sandbox_policy`), whatever the profile says.
pub fn system_credential_stores() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = SYSTEM_CREDENTIAL_STORES
        .iter()
        .map(PathBuf::from)
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .collect();
    if let Ok(rd) = std::fs::read_dir("/etc/ssh") {
        let mut keys: Vec<PathBuf> = rd
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("ssh_host_") && n.ends_with("_key")
            })
            .map(|e| e.path())
            .collect();
        keys.sort();
        out.extend(keys);
    }
    out
}

/// System roots the default policy lets the child read and execute (missing ones are skipped).
const DEFAULT_EXEC: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/opt",
];
/// Read-only in the default policy. `/proc` lets `sh`/`python3` use `/proc/self`; other
/// processes' memory and environment stay closed (Landlock's ptrace scope and no capabilities).
const DEFAULT_READ: &[&str] = &["/etc", "/proc"];

/// The resolved, validated sandbox policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Read-only roots (absolute).
    pub read: Vec<PathBuf>,
    /// Read-write roots (absolute).
    pub write: Vec<PathBuf>,
    /// Read-and-execute roots (absolute).
    pub exec: Vec<PathBuf>,
    /// TCP connect ports.
    pub connect: Vec<u16>,
    /// TCP bind ports.
    pub bind: Vec<u16>,
    /// UDP allowed (to any address and port).
    pub udp: bool,
    /// `socket(AF_UNIX)` allowed.
    pub unix_sockets: bool,
    /// Syscalls given back from the deny-list.
    pub allow_syscalls: Vec<GiveBack>,
    /// Credential stores kept denied (absolute; empty when `$HOME` is unknown).
    pub protected: Vec<PathBuf>,
    /// Which keys took their default value (`read`, `write`, `exec`), for `explain`.
    pub defaulted: Vec<&'static str>,
    /// The broker's port on the child's own loopback: the child's only way out. With it the
    /// child always gets a network namespace of its own, and Landlock lets it connect there.
    pub broker_port: Option<u16>,
    /// Paths the child may not open at all, even where it may read: the audit log (a child
    /// that opens it could hold its lock and keep agentrun's lines in memory) and the
    /// control sockets' directory. Masked in the child's mount namespace (`/dev/null` over a
    /// file, an empty read-only directory over a directory) when a rule would let it read
    /// them.
    pub hidden: Vec<PathBuf>,
}

impl Policy {
    /// Resolves a `[sandbox]` table (or its absence) against the working directory, `$HOME`
    /// and `$TMPDIR`.
    ///
    /// Relative paths resolve against `cwd`, `~` and `~/...` expand to `home`. Keys that are
    /// absent take the default policy's value. The default `write` (the working directory)
    /// is refused when `cwd` is `/` or `$HOME`.
    pub fn resolve(
        section: Option<&SandboxSection>,
        cwd: &Path,
        home: Option<&Path>,
        tmpdir: Option<&Path>,
    ) -> Result<Policy, SandboxError> {
        if !cwd.is_absolute() {
            return Err(SandboxError::Path {
                key: "working directory".into(),
                path: cwd.display().to_string(),
                reason: "is not absolute".into(),
            });
        }
        let cwd = normalize(cwd);
        let home = home.filter(|h| h.is_absolute()).map(normalize);
        let empty = SandboxSection::default();
        let s = section.unwrap_or(&empty);
        let mut defaulted = Vec::new();

        let resolve_list = |key: &str, list: &[String]| -> Result<Vec<PathBuf>, SandboxError> {
            let mut out: Vec<PathBuf> = Vec::with_capacity(list.len());
            for (i, raw) in list.iter().enumerate() {
                let p = resolve_path(raw, &cwd, home.as_deref()).map_err(|reason| {
                    SandboxError::Path {
                        key: format!("sandbox.{key}[{i}]"),
                        path: raw.clone(),
                        reason,
                    }
                })?;
                if !out.contains(&p) {
                    out.push(p);
                }
            }
            Ok(out)
        };

        let read = match &s.read {
            Some(l) => resolve_list("read", l)?,
            None => {
                defaulted.push("read");
                DEFAULT_READ.iter().map(PathBuf::from).collect()
            }
        };
        let exec = match &s.exec {
            Some(l) => resolve_list("exec", l)?,
            None => {
                defaulted.push("exec");
                DEFAULT_EXEC.iter().map(PathBuf::from).collect()
            }
        };
        let write = match &s.write {
            Some(l) => resolve_list("write", l)?,
            None => {
                defaulted.push("write");
                let what = if cwd == Path::new("/") {
                    Some("/")
                } else if home.as_deref() == Some(cwd.as_path()) {
                    Some("$HOME")
                } else {
                    None
                };
                if let Some(what) = what {
                    return Err(SandboxError::DefaultPolicyAt {
                        cwd: cwd.display().to_string(),
                        what,
                    });
                }
                let mut w = vec![cwd.clone(), PathBuf::from("/tmp")];
                if let Some(t) = tmpdir.filter(|t| t.is_absolute()).map(normalize)
                    && !w.contains(&t)
                {
                    w.push(t);
                }
                w
            }
        };

        let mut allow_syscalls = Vec::new();
        for (i, name) in s.allow_syscalls.iter().enumerate() {
            let g = GiveBack::from_name(name).ok_or_else(|| SandboxError::Syscall {
                key: format!("sandbox.allow_syscalls[{i}]"),
                name: name.clone(),
            })?;
            if !allow_syscalls.contains(&g) {
                allow_syscalls.push(g);
            }
        }
        allow_syscalls.sort();

        let mut connect = s.connect.clone();
        connect.sort_unstable();
        connect.dedup();
        let mut bind = s.bind.clone();
        bind.sort_unstable();
        bind.dedup();

        let protected: Vec<PathBuf> = home
            .as_deref()
            .map(|h| CREDENTIAL_STORES.iter().map(|s| h.join(s)).collect())
            .unwrap_or_default();

        let mut policy = Policy {
            read,
            write,
            exec,
            connect,
            bind,
            udp: s.udp,
            unix_sockets: s.unix_sockets,
            allow_syscalls,
            protected,
            defaulted,
            broker_port: None,
            hidden: Vec::new(),
        };
        if let Some(h) = home {
            policy.protect_startup_files(&[h], &|p| p.to_path_buf());
        }
        Ok(policy)
    }

    /// The write root that covers `home` (is `/`, `home` or an ancestor of it), compared as
    /// `real` resolves both (the path Landlock opens), if any.
    fn write_root_covering(
        &self,
        home: &Path,
        real: &dyn Fn(&Path) -> PathBuf,
    ) -> Option<&PathBuf> {
        let h = real(home);
        self.write.iter().find(|w| {
            let w = real(w);
            w == Path::new("/") || h.starts_with(&w)
        })
    }

    /// Adds the [`STARTUP_FILES`] under every home that a write root covers to `protected`.
    /// `real` resolves a path as the kernel will (symlinks followed); the caller passes
    /// `canonicalize` (or the identity, for pure resolution).
    pub fn protect_startup_files(&mut self, homes: &[PathBuf], real: &dyn Fn(&Path) -> PathBuf) {
        for home in homes {
            if self.write_root_covering(home, real).is_none() {
                continue;
            }
            for f in STARTUP_FILES {
                let p = home.join(f);
                if !self.protected.contains(&p) {
                    self.protected.push(p);
                }
            }
        }
    }

    /// Refuses the default policy when one of its write roots (the working directory, `/tmp`,
    /// `$TMPDIR`) is `/`, one of `homes` or an ancestor of one: the child could plant code in
    /// the operator's start-up files there. Explicit `write` lists pass (their homes get
    /// [`Policy::protect_startup_files`] instead).
    pub fn refuse_default_write_over_homes(
        &self,
        homes: &[PathBuf],
        real: &dyn Fn(&Path) -> PathBuf,
    ) -> Result<(), SandboxError> {
        if !self.defaulted.contains(&"write") {
            return Ok(());
        }
        for home in homes {
            if let Some(root) = self.write_root_covering(home, real) {
                return Err(SandboxError::DefaultWriteOverHome {
                    root: root.display().to_string(),
                    home: home.display().to_string(),
                });
            }
        }
        Ok(())
    }

    /// Whether the profile gives `g` back.
    pub fn allows(&self, g: GiveBack) -> bool {
        self.allow_syscalls.contains(&g)
    }
}

/// Resolves one path of a rule list: `~` expansion, relative to `cwd`, lexically normalized.
pub(super) fn resolve_path(raw: &str, cwd: &Path, home: Option<&Path>) -> Result<PathBuf, String> {
    if raw.is_empty() {
        return Err("is empty; write \".\" for the working directory".into());
    }
    if raw.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    let p = if raw == "~" || raw.starts_with("~/") {
        let home = home.ok_or_else(|| {
            "uses ~ but $HOME is not set (or not absolute); write the absolute path".to_string()
        })?;
        home.join(raw.trim_start_matches('~').trim_start_matches('/'))
    } else if raw.starts_with('~') {
        return Err("~user is not supported; write the absolute path".into());
    } else if Path::new(raw).is_absolute() {
        PathBuf::from(raw)
    } else {
        cwd.join(raw)
    };
    Ok(normalize(&p))
}

/// Lexical normalization: drops `.`, resolves `..` against the preceding component, removes
/// trailing slashes. Symlinks are resolved later, when the rule's path is opened.
pub(crate) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn section(toml_src: &str) -> SandboxSection {
        toml::from_str(toml_src).unwrap()
    }

    #[test]
    fn default_policy_resolves_against_cwd_and_tmpdir() {
        let p = Policy::resolve(
            None,
            Path::new("/work/proj"),
            Some(Path::new("/home/u")),
            Some(Path::new("/var/tmp/u")),
        )
        .unwrap();
        assert_eq!(
            p.write,
            vec![
                PathBuf::from("/work/proj"),
                PathBuf::from("/tmp"),
                PathBuf::from("/var/tmp/u")
            ]
        );
        assert!(p.exec.contains(&PathBuf::from("/usr")));
        assert!(p.read.contains(&PathBuf::from("/etc")));
        assert!(p.connect.is_empty() && p.bind.is_empty() && !p.udp && !p.unix_sockets);
        assert_eq!(p.defaulted, vec!["read", "exec", "write"]);
        assert!(p.protected.contains(&PathBuf::from("/home/u/.ssh")));
        assert!(
            p.protected
                .contains(&PathBuf::from("/home/u/.docker/config.json"))
        );
    }

    #[test]
    fn default_policy_refuses_root_and_home() {
        let home = Path::new("/home/u");
        for cwd in ["/", "/home/u", "/home/u/"] {
            let e = Policy::resolve(None, Path::new(cwd), Some(home), None).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, SandboxError::DefaultPolicyAt { .. }), "{msg}");
            assert!(msg.contains("[sandbox]"), "{msg}");
        }
        // An explicit write list is fine from $HOME.
        let s = section(r#"write = ["./out"]"#);
        let p = Policy::resolve(Some(&s), home, Some(home), None).unwrap();
        assert_eq!(p.write, vec![PathBuf::from("/home/u/out")]);
    }

    #[test]
    fn default_write_roots_over_a_home_are_refused() {
        let id = |p: &Path| p.to_path_buf();
        let homes = [PathBuf::from("/home/u"), PathBuf::from("/root")];
        // (cwd, $TMPDIR, the root named)
        for (cwd, tmpdir, root) in [
            ("/home", None, "/home"),
            ("/w", Some("/"), "/"),
            ("/w", Some("/home/u"), "/home/u"),
            ("/w", Some("/home/u/.."), "/home"),
            ("/root/..", None, "/"),
        ] {
            let r = Policy::resolve(None, Path::new(cwd), None, tmpdir.map(Path::new));
            let e = match r {
                Ok(p) => p.refuse_default_write_over_homes(&homes, &id).unwrap_err(),
                Err(e) => e,
            };
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("write root {root} ")) || msg.contains(root),
                "{msg}"
            );
            assert!(msg.contains("[sandbox]"), "{msg}");
        }
        // $HOME under /tmp.
        let p = Policy::resolve(None, Path::new("/w"), None, None).unwrap();
        let e = p
            .refuse_default_write_over_homes(&[PathBuf::from("/tmp/h")], &id)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("write root /tmp ") && e.contains("/tmp/h"),
            "{e}"
        );
        // Elsewhere it runs; an explicit write list is not refused.
        p.refuse_default_write_over_homes(&homes, &id).unwrap();
        let s = section(r#"write = ["/home"]"#);
        let p = Policy::resolve(Some(&s), Path::new("/w"), None, None).unwrap();
        p.refuse_default_write_over_homes(&homes, &id).unwrap();
    }

    #[test]
    fn startup_files_are_protected_under_covered_homes_only() {
        let id = |p: &Path| p.to_path_buf();
        let s = section(r#"write = ["/home"]"#);
        let mut p = Policy::resolve(Some(&s), Path::new("/w"), None, None).unwrap();
        p.protect_startup_files(&[PathBuf::from("/home/u"), PathBuf::from("/root")], &id);
        assert!(p.protected.contains(&PathBuf::from("/home/u/.bashrc")));
        assert!(p.protected.contains(&PathBuf::from("/home/u/.local/bin")));
        assert!(!p.protected.iter().any(|x| x.starts_with("/root")));
        // `$HOME` is handled by resolve itself.
        let s = section(r#"write = ["~"]"#);
        let p = Policy::resolve(Some(&s), Path::new("/w"), Some(Path::new("/h")), None).unwrap();
        assert!(p.protected.contains(&PathBuf::from("/h/.zshenv")));
        assert!(p.protected.contains(&PathBuf::from("/h/.ssh")));
        let s = section(r#"read = ["~"]"#);
        let p = Policy::resolve(Some(&s), Path::new("/w"), Some(Path::new("/h")), None).unwrap();
        assert!(!p.protected.contains(&PathBuf::from("/h/.bashrc")));
    }

    #[test]
    fn paths_expand_tilde_and_dots() {
        let s = section(r#"read = ["~", "~/docs/../notes", ".", "sub/./x", "/a//b/"]"#);
        let p =
            Policy::resolve(Some(&s), Path::new("/w"), Some(Path::new("/home/u")), None).unwrap();
        assert_eq!(
            p.read,
            ["/home/u", "/home/u/notes", "/w", "/w/sub/x", "/a/b"]
                .map(PathBuf::from)
                .to_vec()
        );
    }

    #[test]
    fn bad_paths_name_the_key() {
        let s = section(r#"write = ["/ok", "~root/x"]"#);
        let e = Policy::resolve(Some(&s), Path::new("/w"), Some(Path::new("/h")), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sandbox.write[1]"), "{e}");
        let s = section(r#"read = ["~/x"]"#);
        let e = Policy::resolve(Some(&s), Path::new("/w"), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sandbox.read[0]") && e.contains("$HOME"), "{e}");
        let s = section(r#"exec = [""]"#);
        assert!(Policy::resolve(Some(&s), Path::new("/w"), None, None).is_err());
    }

    #[test]
    fn syscall_names_are_validated() {
        let s = section(r#"allow_syscalls = ["io_uring", "ptrace", "ptrace"]"#);
        let p = Policy::resolve(Some(&s), Path::new("/w"), None, None).unwrap();
        assert_eq!(p.allow_syscalls, vec![GiveBack::Ptrace, GiveBack::IoUring]);

        for bad in ["mount", "PTRACE", "bpf", "io_uring_setup", ""] {
            let s = SandboxSection {
                allow_syscalls: vec!["ptrace".into(), bad.into()],
                ..Default::default()
            };
            let e = Policy::resolve(Some(&s), Path::new("/w"), None, None).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("sandbox.allow_syscalls[1]"), "{msg}");
            assert!(
                msg.contains("process_vm_readv"),
                "lists the allowed names: {msg}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<SandboxSection>("reed = []").is_err());
        assert!(toml::from_str::<SandboxSection>("connect = [70000]").is_err());
        let s = section("connect = [443, 80, 443]\nudp = true");
        let p = Policy::resolve(Some(&s), Path::new("/w"), None, None).unwrap();
        assert_eq!(p.connect, vec![80, 443]);
        assert!(p.udp);
        // Absent path keys take the default policy's values.
        assert!(p.exec.contains(&PathBuf::from("/usr")));
    }
}
