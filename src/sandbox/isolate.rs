//! The child's own network and mount namespaces: no network but loopback, and the files a
//! later run reads made read-only.
//!
//! Two classes of escape are closed here, at the kernel, rather than by a deny-list:
//!
//! - **Implicit connects.** Landlock checks TCP ports at `connect()` and `bind()`, but
//!   `sendto(MSG_FASTOPEN)` connects without `connect()`, and `listen()` autobinds a port. A
//!   policy without network ports gets a network namespace of its own with only `lo` up, so
//!   no socket reaches anything outside it, however it was opened.
//! - **Persistence across runs.** Landlock cannot take one file out of a granted directory,
//!   so a child allowed to write the working directory could rewrite the profile, a `.env`, a
//!   `file:` source, the audit log or `.git/config` for the next run (or for the operator's
//!   next `git status`). In a private mount namespace each of those that lies inside a write
//!   root is bind-mounted onto itself read-only. A mount point cannot be unlinked or renamed
//!   over (`EBUSY`), so the file cannot be replaced either; and each directory between the
//!   write root and the protected path is bind-mounted onto itself (read-write), so no
//!   ancestor can be renamed away and recreated around it.
//!
//! As root, the mount namespace also hides the system credential stores uid 0 owns
//! (`/etc/shadow`, SSH host keys: `/dev/null` or an empty tmpfs over them), and the PID
//! namespace gets `vm.memfd_noexec = 2`.
//!
//! Planned in the parent ([`plan`]), applied in the forked child right after `unshare`
//! ([`Isolation::apply_in_child`]): syscalls only. The mounts never propagate back: the new
//! namespace's mounts are made slaves of the old ones first.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Policy, SandboxError};
use crate::sys::{self, Step};

/// Connections the broker's listener queues before agentrun accepts them.
const BROKER_BACKLOG: i32 = 1024;

/// Built in the parent; applied in the child after `unshare`.
#[derive(Debug, Clone, Default)]
pub struct Isolation {
    /// A network namespace of its own (loopback only).
    pub net: bool,
    /// Directories bound onto themselves so that they cannot be renamed (parents first).
    anchors: Vec<CString>,
    /// Paths bound onto themselves read-only.
    read_only: Vec<CString>,
    /// System credential stores hidden (root only): a file gets `/dev/null` bound over it, a
    /// directory an empty read-only tmpfs.
    masks: Vec<(CString, bool)>,
    /// The working directory, entered again after the mounts (the old one would still
    /// resolve paths beneath it on the mounts underneath).
    cwd: Option<CString>,
    /// Set `vm.memfd_noexec = 2` in the child's PID namespace (root only; see the threat
    /// model): a memfd cannot be made executable.
    pub memfd_noexec: bool,
    /// The broker's listener: made on `127.0.0.1:port` inside the new network namespace and
    /// sent over the unix socket `fd` to agentrun, which serves it from outside.
    pub broker_listener: Option<(u16, RawFd)>,
}

/// What the audit log and `explain` show of the isolation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IsolationReport {
    /// Whether the child has a network namespace of its own (loopback only).
    pub own_network: bool,
    /// Paths read-only inside the child's mount namespace, and why.
    pub read_only: Vec<ReadOnly>,
    /// Directories a later run reads that are write roots themselves: the child may create
    /// files in them (the files already there are protected one by one).
    pub writable_input_dirs: Vec<PathBuf>,
    /// System credential stores hidden from a root child (empty file or directory).
    pub masked: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadOnly {
    pub path: PathBuf,
    pub why: &'static str,
}

impl Isolation {
    /// Extra `unshare` flags this needs.
    pub fn unshare_flags(&self) -> libc::c_int {
        let mut f = 0;
        if self.net {
            f |= libc::CLONE_NEWNET;
        }
        if self.needs_mount_ns() {
            f |= libc::CLONE_NEWNS;
        }
        f
    }

    pub fn needs_mount_ns(&self) -> bool {
        !self.read_only.is_empty() || !self.masks.is_empty()
    }

    /// In the forked child, after `unshare(unshare_flags())`: bring `lo` up and make the
    /// mounts. Syscalls only. Returns `(step, errno)` on failure.
    pub fn apply_in_child(&self) -> Result<(), (Step, i32)> {
        if self.net {
            sys::loopback_up().map_err(|e| (Step::Loopback, e))?;
            if let Some((port, to)) = self.broker_listener {
                let l = sys::listen_loopback(port, BROKER_BACKLOG)
                    .map_err(|e| (Step::BrokerListener, e))?;
                let sent = sys::send_fd(to, l);
                sys::close(l);
                sent.map_err(|e| (Step::BrokerListener, e))?;
            }
        }
        if self.needs_mount_ns() {
            sys::mounts_slave_recursive().map_err(|e| (Step::ReadOnlyMounts, e))?;
            for a in &self.anchors {
                sys::bind_onto_itself(a).map_err(|e| (Step::ReadOnlyMounts, e))?;
            }
            for p in &self.read_only {
                sys::bind_onto_itself(p).map_err(|e| (Step::ReadOnlyMounts, e))?;
                sys::make_read_only(p).map_err(|e| (Step::ReadOnlyMounts, e))?;
            }
            for (p, dir) in &self.masks {
                let r = if *dir {
                    sys::mount_empty_read_only_dir(p)
                } else {
                    sys::bind_dev_null_over(p)
                };
                r.map_err(|e| (Step::ReadOnlyMounts, e))?;
            }
            if let Some(cwd) = &self.cwd {
                sys::chdir(cwd).map_err(|e| (Step::ReadOnlyMounts, e))?;
            }
        }
        Ok(())
    }

    /// In the process that is the PID namespace's init (root only): no executable memfds.
    /// A kernel without the setting (before 6.3) is not an error.
    pub fn apply_in_init(&self) -> Result<(), (Step, i32)> {
        if self.memfd_noexec {
            match sys::write_file(c"/proc/sys/vm/memfd_noexec", b"2") {
                Ok(()) | Err(libc::ENOENT) => {}
                Err(e) => return Err((Step::MemfdNoexec, e)),
            }
        }
        Ok(())
    }
}

/// Whether `policy` gets a network namespace of its own: a broker (then it is the only way
/// out), or no TCP port to connect to or bind and no UDP. (Pathname unix sockets are files,
/// not network: they work either way.)
pub fn wants_own_network(policy: &Policy) -> bool {
    policy.broker_port.is_some()
        || (policy.connect.is_empty() && policy.bind.is_empty() && !policy.udp)
}

/// Plans the isolation: `keep` lists the files and directories a later run reads as
/// configuration, secret or audit (profile, search directories, sources, the log); each `.git` directly inside a write root is added unless the policy names it
/// (or a path inside it) in `write`. Only paths inside a write root need a mount: the others
/// are not writable under Landlock anyway.
pub(super) fn plan(
    policy: &Policy,
    keep: &[PathBuf],
    cwd: &Path,
    root: bool,
) -> Result<(Isolation, IsolationReport), SandboxError> {
    let roots = write_roots(policy);
    refuse_replaceable(policy, keep, &roots)?;
    let mut wanted: Vec<(PathBuf, &'static str)> = Vec::new();
    for p in keep {
        if let Ok(c) = std::fs::canonicalize(p) {
            wanted.push((
                c,
                "read by later runs (profile, secret source or audit log)",
            ));
        }
    }
    let mut starts: Vec<PathBuf> = roots.clone();
    starts.extend(std::fs::canonicalize(cwd));
    let (gits, links) = git_dirs(&starts);
    for l in links {
        if let Some(root) = inside_root(&roots, &l) {
            return Err(SandboxError::Path {
                key: "git metadata".into(),
                path: l.display().to_string(),
                reason: format!(
                    "is a symbolic link in {} where the child may write: it could replace it \
                     with a repository of its own whose config runs at your next git \
                     command; use a `.git` file (`gitdir: PATH`) or a real directory",
                    root.display()
                ),
            });
        }
    }
    for g in gits {
        let named = policy
            .write
            .iter()
            .any(|p| std::fs::canonicalize(p).is_ok_and(|c| c.starts_with(&g)));
        if !named {
            wanted.push((
                g,
                "git metadata: its config and hooks run outside the sandbox",
            ));
        }
    }
    // Inside a write root, and not inside another protected path. A directory that is a write
    // root itself (or holds one) stays writable: the profile grants it, and the files in it
    // that later runs read are protected one by one.
    let mut writable_dirs = Vec::new();
    wanted.retain(|(p, _)| {
        if roots.iter().any(|w| w.starts_with(p)) {
            writable_dirs.push(p.clone());
            return false;
        }
        roots.iter().any(|w| p.starts_with(w))
    });
    wanted.sort();
    wanted.dedup_by(|b, a| b.0.starts_with(&a.0));

    let mut anchors: Vec<PathBuf> = Vec::new();
    for (p, _) in &wanted {
        // The outermost write root holding p: its own parent is not writable.
        let Some(w) = roots
            .iter()
            .filter(|w| p.starts_with(w))
            .min_by_key(|w| w.components().count())
        else {
            continue;
        };
        let mut d = p.parent();
        while let Some(dir) = d {
            if dir == w.as_path() || !dir.starts_with(w) {
                break;
            }
            anchors.push(dir.to_path_buf());
            d = dir.parent();
        }
    }
    anchors.sort_by_key(|a| a.components().count());
    anchors.dedup();
    anchors.retain(|a| !wanted.iter().any(|(p, _)| a.starts_with(p)));

    // A root child reads what uid 0 owns (`/etc/shadow`, host keys) whatever its
    // capabilities: hide those. Masks, not Landlock denials: a denial inside `/etc` would
    // turn the `/etc` rule into one grant per entry, and an entry replaced during the run
    // (`/etc/resolv.conf`) would then be unreadable.
    let mut masked: Vec<PathBuf> = if root {
        super::system_credential_stores()
            .iter()
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .collect()
    } else {
        Vec::new()
    };
    // Paths the child may not even open, where a rule would let it read them: the audit log
    // (an open descriptor is enough to hold its lock), the control sockets' directory (the
    // child could rename, hide or impersonate a run's socket).
    let readable: Vec<PathBuf> = policy
        .read
        .iter()
        .chain(&policy.write)
        .chain(&policy.exec)
        .filter_map(|r| std::fs::canonicalize(r).ok())
        .collect();
    for h in &policy.hidden {
        if let Ok(c) = std::fs::canonicalize(h)
            && (c.is_file() || c.is_dir())
            && readable.iter().any(|r| c.starts_with(r))
            && !masked.contains(&c)
        {
            masked.push(c);
        }
    }
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).ok();
    let iso = Isolation {
        net: wants_own_network(policy),
        anchors: anchors.iter().filter_map(|a| c(a)).collect(),
        read_only: wanted.iter().filter_map(|(p, _)| c(p)).collect(),
        masks: masked
            .iter()
            .filter_map(|p| Some((c(p)?, p.is_dir())))
            .collect(),
        cwd: if wanted.is_empty() && masked.is_empty() {
            None
        } else {
            c(cwd)
        },
        memfd_noexec: root,
        broker_listener: None,
    };
    let report = IsolationReport {
        own_network: iso.net,
        read_only: wanted
            .into_iter()
            .map(|(path, why)| ReadOnly { path, why })
            .collect(),
        writable_input_dirs: writable_dirs,
        masked,
    };
    Ok((iso, report))
}

/// The write roots that exist, canonical.
fn write_roots(policy: &Policy) -> Vec<PathBuf> {
    policy
        .write
        .iter()
        .filter_map(|w| std::fs::canonicalize(w).ok())
        .collect()
}

/// The write root (canonical) that lets the child create or replace `p`, if any: `p`'s
/// nearest existing ancestor lies inside one.
pub fn writable_root_of(policy: &Policy, p: &Path) -> Option<PathBuf> {
    inside_root(&write_roots(policy), p)
}

fn inside_root(roots: &[PathBuf], p: &Path) -> Option<PathBuf> {
    let mut dir = p.parent();
    while let Some(d) = dir {
        if let Ok(c) = std::fs::canonicalize(d) {
            return roots.iter().find(|w| c.starts_with(w)).cloned();
        }
        dir = d.parent();
    }
    None
}

/// Refuses what a read-only mount cannot keep: a start-up input or a rule path reached
/// through a symbolic link that lies in a directory the child may write (the child could
/// point the link elsewhere for the next run: at a profile of its own, or at `~/.ssh` for a
/// `read` rule), and a start-up input with more than one hard link (the child could change
/// it through a link an earlier run made).
fn refuse_replaceable(
    policy: &Policy,
    keep: &[PathBuf],
    roots: &[PathBuf],
) -> Result<(), SandboxError> {
    let mut named: Vec<(String, &Path)> = keep
        .iter()
        .map(|p| ("a file later runs read".to_string(), p.as_path()))
        .collect();
    for (key, list) in [
        ("read", &policy.read),
        ("write", &policy.write),
        ("exec", &policy.exec),
    ] {
        named.extend(
            list.iter()
                .map(|p| (format!("[sandbox] {key}"), p.as_path())),
        );
    }
    for (what, p) in named {
        let mut q = PathBuf::new();
        for c in p.components() {
            q.push(c);
            let link = std::fs::symlink_metadata(&q).is_ok_and(|m| m.file_type().is_symlink());
            if link && let Some(root) = inside_root(roots, &q) {
                return Err(SandboxError::Path {
                    key: what,
                    path: p.display().to_string(),
                    reason: format!(
                        "goes through the symbolic link {}, which lies in {} where the child \
                         may write: it could point the link elsewhere before the next run; name \
                         the real path instead, or move the link out of the writable directory",
                        q.display(),
                        root.display()
                    ),
                });
            }
        }
    }
    for p in keep {
        use std::os::unix::fs::MetadataExt;
        let Ok(m) = std::fs::symlink_metadata(p) else {
            continue;
        };
        if m.is_file() && m.nlink() > 1 {
            return Err(SandboxError::Path {
                key: "a file later runs read".into(),
                path: p.display().to_string(),
                reason: format!(
                    "has {} hard links: through another name the child could change it even \
                     while it is read-only; remove the other links (find / -xdev -samefile {})",
                    m.nlink(),
                    p.display()
                ),
            });
        }
    }
    Ok(())
}

/// The git directories a `git` command run in any of `starts` (or below them) would read:
/// for each start, the repository git's discovery finds walking up from it: its `.git` (and
/// when that is a file, as in worktrees and submodules, the directory it points to and that
/// directory's `commondir`), and the `.git` of each submodule its `.gitmodules` lists.
/// Canonical paths of what exists. Repositories nested deeper are not searched (see the
/// threat model).
/// Also returns each `.git` that is a symbolic link (a mount cannot keep a link in place).
fn git_dirs(starts: &[PathBuf]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut out = Vec::new();
    let mut links = Vec::new();
    for start in starts {
        let mut dir = Some(start.as_path());
        while let Some(d) = dir {
            if let Ok(m) = std::fs::symlink_metadata(d.join(".git")) {
                if m.file_type().is_symlink() {
                    links.push(d.join(".git"));
                }
                git_paths(d, &mut out);
                if let Ok(text) = std::fs::read_to_string(d.join(".gitmodules")) {
                    for line in text.lines() {
                        if let Some(path) = line
                            .trim()
                            .strip_prefix("path")
                            .map(str::trim_start)
                            .and_then(|l| l.strip_prefix('='))
                        {
                            git_paths(&d.join(path.trim()), &mut out);
                        }
                    }
                }
                break;
            }
            dir = d.parent();
        }
    }
    out.sort();
    out.dedup();
    (out, links)
}

/// `W/.git`, and when it is a file (`gitdir: PATH`) the directory it points to and that
/// directory's `commondir` (a worktree's shared repository).
fn git_paths(w: &Path, out: &mut Vec<PathBuf>) {
    let g = w.join(".git");
    let Ok(meta) = std::fs::symlink_metadata(&g) else {
        return;
    };
    if let Ok(c) = std::fs::canonicalize(&g) {
        out.push(c);
    }
    if meta.is_file()
        && let Ok(text) = std::fs::read_to_string(&g)
        && let Some(dir) = text.lines().next().and_then(|l| l.strip_prefix("gitdir:"))
        && let Ok(gitdir) = std::fs::canonicalize(w.join(dir.trim()))
    {
        if let Ok(common) = std::fs::read_to_string(gitdir.join("commondir"))
            && let Ok(c) = std::fs::canonicalize(gitdir.join(common.trim()))
        {
            out.push(c);
        }
        out.push(gitdir);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sandbox::SandboxSection;

    fn policy(dir: &Path, write: &[&str]) -> Policy {
        let s = SandboxSection {
            write: Some(write.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        };
        Policy::resolve(Some(&s), dir, None, None).unwrap()
    }

    #[test]
    fn protects_inputs_and_git_inside_write_roots_with_their_ancestors_anchored() {
        let t = tempfile::tempdir().unwrap();
        let d = std::fs::canonicalize(t.path()).unwrap();
        std::fs::create_dir_all(d.join("w/a/b")).unwrap();
        std::fs::create_dir_all(d.join("w/.git/hooks")).unwrap();
        std::fs::write(d.join("w/a/b/.env"), "K=v\n").unwrap();
        std::fs::write(d.join("outside.toml"), "").unwrap();
        let p = policy(&d, &["./w"]);
        let keep = vec![
            d.join("w/a/b/.env"),
            d.join("outside.toml"),
            d.join("w/missing"),
            // The write root itself (an audit log's directory, say) cannot be read-only.
            d.join("w"),
        ];
        let (iso, report) = plan(&p, &keep, &d.join("w"), false).unwrap();
        let ro: Vec<&Path> = report.read_only.iter().map(|r| r.path.as_path()).collect();
        assert_eq!(
            ro,
            [d.join("w/.git").as_path(), d.join("w/a/b/.env").as_path()]
        );
        let anchors: Vec<String> = iso
            .anchors
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            anchors,
            [
                d.join("w/a").display().to_string(),
                d.join("w/a/b").display().to_string()
            ]
        );
        assert!(iso.net, "no ports: own network namespace");
        assert_eq!(iso.unshare_flags(), libc::CLONE_NEWNET | libc::CLONE_NEWNS);
    }

    #[test]
    fn a_git_dir_named_in_write_stays_writable() {
        let t = tempfile::tempdir().unwrap();
        let d = std::fs::canonicalize(t.path()).unwrap();
        std::fs::create_dir_all(d.join("w/.git")).unwrap();
        let p = policy(&d, &["./w", "./w/.git"]);
        let (iso, report) = plan(&p, &[], &d.join("w"), false).unwrap();
        assert!(report.read_only.is_empty(), "{report:?}");
        assert_eq!(iso.unshare_flags(), libc::CLONE_NEWNET);
    }

    #[test]
    fn ports_keep_the_host_network() {
        let t = tempfile::tempdir().unwrap();
        let s = SandboxSection {
            connect: vec![443],
            ..Default::default()
        };
        let p = Policy::resolve(Some(&s), t.path(), None, None).unwrap();
        assert!(!wants_own_network(&p));
        let s = SandboxSection {
            udp: true,
            ..Default::default()
        };
        let p = Policy::resolve(Some(&s), t.path(), None, None).unwrap();
        assert!(!wants_own_network(&p));
    }
}
