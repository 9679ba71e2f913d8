//! [`Policy`] + [`ChildNeeds`] -> the list of file-system grants Landlock will get.
//!
//! Plain data, no Landlock types: unit-testable on temp dirs without the kernel's help.
//! This is where the credential stores under `$HOME` are kept out. Landlock only *grants*
//! access beneath a path, so a rule that covers a store (`~`, `/home`, `/`) is replaced by
//! grants on its children, leaving out the stores, recursing into the directories that
//! contain a store (`~/.config`, `~/.docker`). The directories expanded this way get no rule of
//! their own: they can be walked through and `stat`ed, but not listed or created in.
//! Symlinks met while expanding are never granted (Landlock would grant their *target*).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{ChildNeeds, Policy, SandboxError};

/// What a grant allows, in agentrun's terms (mapped to Landlock rights in `landlock.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct FsAccess {
    /// Open files for reading, list directories.
    pub read: bool,
    /// Create, write, truncate, remove, rename, link (no device nodes).
    pub write: bool,
    /// Execute files.
    pub exec: bool,
    /// ioctl on device files (the terminal).
    pub ioctl: bool,
}

impl FsAccess {
    pub const READ: FsAccess = FsAccess {
        read: true,
        write: false,
        exec: false,
        ioctl: false,
    };
    pub const READ_EXEC: FsAccess = FsAccess {
        exec: true,
        ..FsAccess::READ
    };
    pub const READ_WRITE: FsAccess = FsAccess {
        write: true,
        ..FsAccess::READ
    };
    pub const TERMINAL: FsAccess = FsAccess {
        write: true,
        ioctl: true,
        ..FsAccess::READ
    };

    pub(super) fn union(self, o: FsAccess) -> FsAccess {
        FsAccess {
            read: self.read || o.read,
            write: self.write || o.write,
            exec: self.exec || o.exec,
            ioctl: self.ioctl || o.ioctl,
        }
    }
}

/// One path the child may use, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsGrant {
    /// Canonical path (symlinks resolved).
    pub path: PathBuf,
    pub access: FsAccess,
}

/// The grants plus what was left out and why, for `explain` and the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FsPlan {
    pub grants: Vec<FsGrant>,
    /// Rules that covered a credential store and were replaced by grants on their children.
    pub expanded: Vec<PathBuf>,
    /// Rule paths that do not exist (or could not be resolved) and were skipped.
    pub skipped: Vec<String>,
}

impl FsPlan {
    fn grant(&mut self, path: PathBuf, access: FsAccess) {
        if let Some(g) = self.grants.iter_mut().find(|g| g.path == path) {
            g.access = g.access.union(access);
        } else {
            self.grants.push(FsGrant { path, access });
        }
    }
}

/// Device files every child gets: `/dev/null` read-write, the entropy and zero devices read.
const DEVICES_RW: &[&str] = &["/dev/null"];
const DEVICES_RO: &[&str] = &["/dev/zero", "/dev/urandom", "/dev/random"];

/// Where the dynamic loader finds libraries: read-only, so that the program (and the ELF
/// interpreter named in it) can start under any policy. Libraries outside these (RUNPATH,
/// `LD_LIBRARY_PATH`) need a `read` rule.
const LIBRARY_DIRS: &[&str] = &[
    "/lib",
    "/lib64",
    "/lib32",
    "/usr/lib",
    "/usr/lib64",
    "/usr/lib32",
    "/usr/local/lib",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
];

/// Builds the file-system plan.
pub(super) fn plan(policy: &Policy, needs: &ChildNeeds) -> Result<FsPlan, SandboxError> {
    let mut r = Resolver::default();
    let denied = denied_paths(&policy.protected, &mut r);
    let mut plan = FsPlan::default();

    let lists = [
        (&policy.read, FsAccess::READ),
        (&policy.exec, FsAccess::READ_EXEC),
        (&policy.write, FsAccess::READ_WRITE),
    ];
    for (list, access) in lists {
        for root in list {
            add_rule(&mut plan, &mut r, root, access, &policy.protected, &denied)?;
        }
    }

    for d in DEVICES_RW {
        add_existing(&mut plan, &mut r, Path::new(d), FsAccess::READ_WRITE);
    }
    for d in DEVICES_RO {
        add_existing(&mut plan, &mut r, Path::new(d), FsAccess::READ);
    }
    if let Some(tty) = &needs.tty {
        add_existing(&mut plan, &mut r, Path::new("/dev/tty"), FsAccess::TERMINAL);
        let c = r.canonical(tty).map_err(|e| SandboxError::ChildPath {
            what: "terminal",
            path: tty.clone(),
            source: e,
        })?;
        plan.grant(c, FsAccess::TERMINAL);
    }

    // The program, its interpreter(s), and the loader's libraries.
    let program = r
        .canonical(&needs.program)
        .map_err(|e| SandboxError::ChildPath {
            what: "program",
            path: needs.program.clone(),
            source: e,
        })?;
    // What the kernel will execute is granted only when it is a regular file outside every
    // credential store: a `#!` line can be planted by an earlier run's child, and a grant
    // of what it names must never open a store (or a directory) to the next run.
    let executable = |c: &Path, what: &str, named: &Path| -> Result<(), SandboxError> {
        let reason = if denied.iter().any(|d| c.starts_with(d)) {
            "lies in a credential store (or agentrun's own state): agentrun will not grant it"
        } else if !fs::metadata(c).is_ok_and(|m| m.is_file()) {
            "is not a regular file"
        } else {
            return Ok(());
        };
        Err(SandboxError::Path {
            key: what.to_string(),
            path: named.display().to_string(),
            reason: format!("(resolved to {}) {reason}", c.display()),
        })
    };
    executable(&program, "program", &needs.program)?;
    for p in interpreters(&program) {
        if let Ok(c) = r.canonical(&p) {
            executable(&c, "the program's interpreter", &p)?;
            for q in interpreters(&c) {
                if let Ok(qc) = r.canonical(&q) {
                    executable(&qc, "the interpreter's interpreter", &q)?;
                    plan.grant(qc, FsAccess::READ_EXEC);
                }
            }
            plan.grant(c, FsAccess::READ_EXEC);
        }
    }
    plan.grant(program, FsAccess::READ_EXEC);
    for d in LIBRARY_DIRS {
        add_existing(&mut plan, &mut r, Path::new(d), FsAccess::READ);
    }

    for p in &needs.extra_read {
        let c = r.canonical(p).map_err(|e| SandboxError::ChildPath {
            what: "injected file",
            path: p.clone(),
            source: e,
        })?;
        plan.grant(c, FsAccess::READ);
    }
    Ok(plan)
}

/// `fs::canonicalize` with a memory, for the one plan it serves.
///
/// glibc's `realpath` makes one `readlink` per component on every call, and a plan resolves
/// dozens of paths that share prefixes (`$HOME` for every store, `/usr` for the rules and the
/// loader), most of the stores not even existing. Here a path in normal form resolves as its
/// parent's canonical form plus its last component when that component is not a symlink (one
/// `lstat` says so, and fails at once for a missing path), and every answer is remembered,
/// failures with their errno. A symlink, or a path not in normal form, goes to
/// `fs::canonicalize` whole: symlinks resolve exactly as `realpath` resolves them.
#[derive(Debug, Default)]
struct Resolver {
    /// Each path resolved so far: its canonical form, or the errno that said there is none.
    known: HashMap<PathBuf, Result<PathBuf, i32>>,
}

impl Resolver {
    /// The canonical form of `p` (symlinks resolved), or why there is none.
    fn canonical(&mut self, p: &Path) -> io::Result<PathBuf> {
        // `Path` equality ignores doubled and trailing slashes and `.`, which `realpath` does
        // not (`file/` is not `file`): such paths are neither looked up nor remembered.
        if !is_normal(p) {
            return fs::canonicalize(p);
        }
        match self.known.get(p) {
            Some(Ok(c)) => return Ok(c.clone()),
            Some(Err(errno)) => return Err(io::Error::from_raw_os_error(*errno)),
            None => {}
        }
        let resolved = self.resolve(p);
        let answer = match &resolved {
            Ok(c) => Some(Ok(c.clone())),
            Err(e) => e.raw_os_error().map(Err),
        };
        if let Some(answer) = answer {
            self.known.insert(p.to_path_buf(), answer);
        }
        resolved
    }

    fn resolve(&mut self, p: &Path) -> io::Result<PathBuf> {
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            return fs::canonicalize(p); // `/`
        };
        // The parent first: under a missing directory there is nothing to `lstat`.
        let parent = self.canonical(parent)?;
        if fs::symlink_metadata(p)?.file_type().is_symlink() {
            fs::canonicalize(p)
        } else {
            Ok(parent.join(name))
        }
    }
}

/// Absolute, without `.`, `..`, doubled or trailing slashes: a path `realpath` would walk
/// exactly as its components read (what `policy::normalize` makes of any path).
fn is_normal(p: &Path) -> bool {
    match p.as_os_str().as_bytes() {
        b"/" => true,
        [b'/', rest @ ..] => rest
            .split(|&c| c == b'/')
            .all(|name| !matches!(name, b"" | b"." | b"..")),
        _ => false,
    }
}

fn add_existing(plan: &mut FsPlan, r: &mut Resolver, p: &Path, access: FsAccess) {
    if let Ok(c) = r.canonical(p) {
        plan.grant(c, access);
    }
}

/// The stores, both as written under `$HOME` and with symlinks resolved (a store may be a
/// symlink into another tree that a rule covers).
/// The credential stores a plan keeps out, as written and as resolved (for `access`).
pub(super) fn denied(protected: &[PathBuf]) -> Vec<PathBuf> {
    denied_paths(protected, &mut Resolver::default())
}

fn denied_paths(protected: &[PathBuf], r: &mut Resolver) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for s in protected {
        let resolved = r.canonical(s).ok().or_else(|| {
            let parent = s.parent()?;
            let name = s.file_name()?;
            // A store that does not exist yet: resolve its nearest existing ancestor.
            let mut base = parent.to_path_buf();
            let mut rest = vec![name.to_os_string()];
            loop {
                if let Ok(c) = r.canonical(&base) {
                    let mut p = c;
                    for part in rest.iter().rev() {
                        p.push(part);
                    }
                    return Some(p);
                }
                rest.push(base.file_name()?.to_os_string());
                base = base.parent()?.to_path_buf();
            }
        });
        for p in [Some(s.clone()), resolved].into_iter().flatten() {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// Adds one profile rule, expanding it around the stores when it covers one.
fn add_rule(
    plan: &mut FsPlan,
    r: &mut Resolver,
    root: &Path,
    access: FsAccess,
    protected: &[PathBuf],
    denied: &[PathBuf],
) -> Result<(), SandboxError> {
    let Ok(c) = r.canonical(root) else {
        plan.skipped
            .push(format!("{} (does not exist)", root.display()));
        return Ok(());
    };
    // Does the rule, as written, name a store or a path inside one? Then it is explicit.
    let explicit = protected.iter().any(|s| root.starts_with(s));
    let lands_in_store = denied.iter().any(|d| c.starts_with(d));
    if lands_in_store && !explicit {
        plan.skipped.push(format!(
            "{} (resolves to {}, inside a credential store; name the store itself to allow it)",
            root.display(),
            c.display()
        ));
        return Ok(());
    }
    if explicit {
        plan.grant(c, access);
        return Ok(());
    }
    if !denied.iter().any(|d| d.starts_with(&c) && d != &c) {
        plan.grant(c, access);
        return Ok(());
    }
    if !plan.expanded.contains(&root.to_path_buf()) {
        plan.expanded.push(root.to_path_buf());
    }
    expand(plan, &c, access, denied).map_err(|e| SandboxError::ChildPath {
        what: "rule covering a credential store",
        path: c.clone(),
        source: e,
    })
}

/// Grants every entry of `dir` except the denied ones, recursing into directories that
/// contain a denied path. Symlinks on the way to a store are skipped, never followed.
fn expand(
    plan: &mut FsPlan,
    dir: &Path,
    access: FsAccess,
    denied: &[PathBuf],
) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = dir.join(e.file_name());
        if denied.contains(&p) {
            continue;
        }
        let ft = e.file_type()?;
        if ft.is_symlink() {
            // Landlock would grant the target; the broad rule never covered it.
            continue;
        }
        if denied.iter().any(|d| d.starts_with(&p)) {
            if ft.is_dir() {
                expand(plan, &p, access, denied)?;
            }
            continue;
        }
        plan.grant(p, access);
    }
    Ok(())
}

/// The interpreters `execve` of `path` will open: the ELF `PT_INTERP`, or a script's `#!` line.
pub(crate) fn interpreters(path: &Path) -> Vec<PathBuf> {
    let mut head = Vec::with_capacity(4096);
    let Ok(mut f) = fs::File::open(path) else {
        return Vec::new();
    };
    if (&mut f).take(4096).read_to_end(&mut head).is_err() {
        return Vec::new();
    }
    if let Some(rest) = head.strip_prefix(b"#!") {
        // As the kernel's binfmt_script reads it: the name starts after spaces and tabs and
        // ends at a space, a tab, a NUL or the end of the line. Nothing else (not `\r`)
        // ends it, so the grant names exactly the file the kernel will run.
        let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
        let start = line
            .iter()
            .position(|&b| b != b' ' && b != b'\t')
            .unwrap_or(line.len());
        let name = &line[start..];
        let end = name
            .iter()
            .position(|&b| matches!(b, b' ' | b'\t' | 0))
            .unwrap_or(name.len());
        let name = &name[..end];
        return if name.starts_with(b"/") {
            vec![PathBuf::from(std::ffi::OsStr::from_bytes(name))]
        } else {
            Vec::new()
        };
    }
    elf_interp(&mut f, &head).into_iter().collect()
}

/// `len` bytes of `f` at `off`: from `head` (the file's first bytes, already read) when it
/// holds them, else read from the file.
fn bytes_at(f: &mut fs::File, head: &[u8], off: u64, len: usize) -> Option<Vec<u8>> {
    let in_head = usize::try_from(off)
        .ok()
        .and_then(|start| head.get(start..start.checked_add(len)?));
    if let Some(b) = in_head {
        return Some(b.to_vec());
    }
    let mut buf = vec![0u8; len];
    f.seek(SeekFrom::Start(off)).ok()?;
    f.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// Reads `PT_INTERP` from a 64- or 32-bit little-endian ELF file, `head` being its first bytes
/// (the program headers and the interpreter's name are usually among them).
fn elf_interp(f: &mut fs::File, head: &[u8]) -> Option<PathBuf> {
    let ident = bytes_at(f, head, 0, 64)?;
    if &ident[..4] != b"\x7fELF" || ident[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| -> Option<u64> {
        Some(u64::from(u16::from_le_bytes(
            b.get(o..o + 2)?.try_into().ok()?,
        )))
    };
    let u32_at = |b: &[u8], o: usize| -> Option<u64> {
        Some(u64::from(u32::from_le_bytes(
            b.get(o..o + 4)?.try_into().ok()?,
        )))
    };
    let u64_at = |b: &[u8], o: usize| -> Option<u64> {
        Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
    };
    let is64 = match ident[4] {
        2 => true,
        1 => false,
        _ => return None,
    };
    let (phoff, phentsize, phnum) = if is64 {
        (
            u64_at(&ident, 0x20)?,
            u16_at(&ident, 0x36)?,
            u16_at(&ident, 0x38)?,
        )
    } else {
        (
            u32_at(&ident, 0x1c)?,
            u16_at(&ident, 0x2a)?,
            u16_at(&ident, 0x2c)?,
        )
    };
    if phentsize < 32 || phnum > 512 {
        return None;
    }
    let ph = bytes_at(f, head, phoff, usize::try_from(phentsize * phnum).ok()?)?;
    for i in 0..usize::try_from(phnum).ok()? {
        let e = &ph[i * usize::try_from(phentsize).ok()?..];
        if u32_at(e, 0)? != 3 {
            continue; // not PT_INTERP
        }
        let (off, size) = if is64 {
            (u64_at(e, 0x08)?, u64_at(e, 0x20)?)
        } else {
            (u32_at(e, 0x04)?, u32_at(e, 0x10)?)
        };
        if size == 0 || size > 4096 {
            return None;
        }
        let buf = bytes_at(f, head, off, usize::try_from(size).ok()?)?;
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let s = std::str::from_utf8(&buf[..end]).ok()?;
        return s.starts_with('/').then(|| PathBuf::from(s));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::sandbox::{CREDENTIAL_STORES, SandboxSection};

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "agentrun-fsplan-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(fs::canonicalize(&p).unwrap())
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn fake_home(t: &TempDir) -> PathBuf {
        let h = t.0.join("home");
        for d in [
            ".ssh",
            ".aws",
            ".config/gcloud",
            ".config/gh",
            ".config/nvim",
            ".docker",
            "src/proj",
        ] {
            fs::create_dir_all(h.join(d)).unwrap();
        }
        for f in [
            ".ssh/id_rsa",
            ".aws/credentials",
            ".docker/config.json",
            ".docker/daemon.json",
            ".bashrc",
            ".netrc",
        ] {
            fs::write(h.join(f), "x").unwrap();
        }
        std::os::unix::fs::symlink(h.join(".ssh"), h.join("innocent")).unwrap();
        h
    }

    fn needs() -> ChildNeeds {
        ChildNeeds {
            program: PathBuf::from("/bin/sh"),
            extra_read: vec![],
            tty: None,
        }
    }

    fn paths(plan: &FsPlan) -> Vec<PathBuf> {
        plan.grants.iter().map(|g| g.path.clone()).collect()
    }

    #[test]
    fn home_rule_is_expanded_around_the_stores() {
        let t = TempDir::new("home");
        let home = fake_home(&t);
        let s = SandboxSection {
            read: Some(vec!["~".into()]),
            write: Some(vec![]),
            exec: Some(vec![]),
            ..Default::default()
        };
        let policy = Policy::resolve(Some(&s), &t.0, Some(&home), None).unwrap();
        let plan = plan(&policy, &needs()).unwrap();
        let got = paths(&plan);
        for ok in [".bashrc", "src", ".config/nvim", ".docker/daemon.json"] {
            assert!(got.contains(&home.join(ok)), "{ok} granted: {got:?}");
        }
        for denied in [
            "",
            ".ssh",
            ".aws",
            ".config",
            ".config/gcloud",
            ".config/gh",
            ".docker",
            ".docker/config.json",
            ".netrc",
            "innocent",
        ] {
            let p = home.join(denied);
            assert!(
                !got.contains(&p),
                "{} must not be granted: {got:?}",
                p.display()
            );
        }
        assert!(got.iter().all(|g| !g.starts_with(home.join(".ssh"))));
        assert_eq!(plan.expanded, vec![home.clone()]);
    }

    #[test]
    fn a_rule_above_home_is_expanded_down_to_it() {
        let t = TempDir::new("above");
        let home = fake_home(&t);
        fs::write(t.0.join("sibling"), "x").unwrap();
        let s = SandboxSection {
            read: Some(vec![t.0.display().to_string()]),
            write: Some(vec![]),
            exec: Some(vec![]),
            ..Default::default()
        };
        let policy = Policy::resolve(Some(&s), &t.0, Some(&home), None).unwrap();
        let got = paths(&plan(&policy, &needs()).unwrap());
        assert!(got.contains(&t.0.join("sibling")));
        assert!(got.contains(&home.join(".bashrc")));
        assert!(!got.contains(&t.0) && !got.contains(&home));
        assert!(!got.iter().any(|g| g.starts_with(home.join(".aws"))));
    }

    #[test]
    fn a_rule_naming_a_store_grants_it() {
        let t = TempDir::new("explicit");
        let home = fake_home(&t);
        let s = SandboxSection {
            read: Some(vec!["~".into(), "~/.aws/credentials".into()]),
            write: Some(vec!["~/.config/gh".into()]),
            exec: Some(vec![]),
            ..Default::default()
        };
        let policy = Policy::resolve(Some(&s), &t.0, Some(&home), None).unwrap();
        let plan = plan(&policy, &needs()).unwrap();
        let got = paths(&plan);
        assert!(got.contains(&home.join(".aws/credentials")));
        assert!(got.contains(&home.join(".config/gh")));
        assert!(!got.contains(&home.join(".ssh")));
        // A symlink that leads into a store is not an explicit naming.
        let s = SandboxSection {
            read: Some(vec!["~/innocent".into()]),
            write: Some(vec![]),
            exec: Some(vec![]),
            ..Default::default()
        };
        let policy = Policy::resolve(Some(&s), &t.0, Some(&home), None).unwrap();
        let plan = super::plan(&policy, &needs()).unwrap();
        assert!(!paths(&plan).contains(&home.join(".ssh")));
        assert!(
            plan.skipped.iter().any(|s| s.contains("credential store")),
            "{:?}",
            plan.skipped
        );
    }

    #[test]
    fn store_behind_a_symlink_is_denied_at_its_target() {
        let t = TempDir::new("symstore");
        let home = t.0.join("home");
        let keys = t.0.join("data/keys");
        fs::create_dir_all(&keys).unwrap();
        fs::create_dir_all(t.0.join("data/other")).unwrap();
        fs::create_dir_all(&home).unwrap();
        std::os::unix::fs::symlink(&keys, home.join(".ssh")).unwrap();
        let s = SandboxSection {
            read: Some(vec![t.0.join("data").display().to_string()]),
            write: Some(vec![]),
            exec: Some(vec![]),
            ..Default::default()
        };
        let policy = Policy::resolve(Some(&s), &t.0, Some(&home), None).unwrap();
        let got = paths(&plan(&policy, &needs()).unwrap());
        assert!(got.contains(&t.0.join("data/other")));
        assert!(!got.contains(&keys) && !got.contains(&t.0.join("data")));
    }

    #[test]
    fn resolver_agrees_with_canonicalize() {
        use std::os::unix::fs::symlink;
        let t = TempDir::new("resolver");
        let b = t.0.join("a/b");
        fs::create_dir_all(&b).unwrap();
        fs::write(b.join("file"), "x").unwrap();
        symlink(t.0.join("a"), t.0.join("abs")).unwrap();
        symlink("a/b/../b", t.0.join("rel")).unwrap();
        symlink(b.join("file"), t.0.join("leaf")).unwrap();
        symlink(t.0.join("nowhere"), t.0.join("dangling")).unwrap();
        symlink(t.0.join("loop2"), t.0.join("loop1")).unwrap();
        symlink(t.0.join("loop1"), t.0.join("loop2")).unwrap();
        let root = t.0.display().to_string();
        let cases = [
            "a/b/file",
            "abs/b/file",
            "abs/b",
            "rel/file",
            "rel",
            "leaf",
            "dangling",
            "loop1/x",
            "loop1",
            "a/missing",
            "a/missing/x",
            "a/b/file/x",
            "a/./b",
            "a/b/../b/file",
            "a/b/",
            "a/b/file/",
            "abs//b",
        ];
        let mut r = Resolver::default();
        for round in 0..2 {
            for case in cases {
                let p = PathBuf::from(format!("{root}/{case}"));
                let want = fs::canonicalize(&p);
                let got = r.canonical(&p);
                match (&want, &got) {
                    (Ok(w), Ok(g)) => assert_eq!(w, g, "{case} (round {round})"),
                    (Err(w), Err(g)) => assert_eq!(
                        w.raw_os_error(),
                        g.raw_os_error(),
                        "{case} (round {round}): {w} vs {g}"
                    ),
                    _ => panic!("{case} (round {round}): {want:?} vs {got:?}"),
                }
            }
        }
        for p in ["/", "/usr/bin/env", "/bin/sh", "relative/path"] {
            let p = Path::new(p);
            assert_eq!(
                fs::canonicalize(p).ok(),
                r.canonical(p).ok(),
                "{}",
                p.display()
            );
        }
    }

    #[test]
    fn normal_form_is_what_normalize_makes() {
        for p in [
            "/", "/a", "/a/b", "/a/.b", "/a/..b", "/a/b.", "//", "//a", "/a/", "/a//b", "/./a",
            "/a/.", "/a/..", "/a/../b", "a", "a/b", "./a", "", ".",
        ] {
            let p = Path::new(p);
            assert_eq!(
                is_normal(p),
                crate::sandbox::policy::normalize(p).as_os_str() == p.as_os_str(),
                "{}",
                p.display()
            );
        }
    }

    #[test]
    fn denied_paths_resolve_stores_as_before() {
        use std::os::unix::fs::symlink;
        let t = TempDir::new("denied");
        let real = t.0.join("real-home");
        let keys = t.0.join("elsewhere/keys");
        let docker = t.0.join("elsewhere/docker");
        fs::create_dir_all(&real).unwrap();
        fs::create_dir_all(&keys).unwrap();
        fs::create_dir_all(&docker).unwrap();
        // $HOME as the environment says it, through a symlink.
        let home = t.0.join("home");
        symlink(&real, &home).unwrap();
        symlink(&keys, real.join(".ssh")).unwrap();
        symlink(&docker, real.join(".docker")).unwrap();
        symlink(t.0.join("nowhere"), real.join(".netrc")).unwrap();
        fs::write(real.join(".npmrc"), "x").unwrap();
        let s = SandboxSection {
            read: Some(vec![]),
            write: Some(vec![]),
            exec: Some(vec![]),
            ..Default::default()
        };
        let policy = Policy::resolve(Some(&s), &t.0, Some(&home), None).unwrap();
        let denied = denied_paths(&policy.protected, &mut Resolver::default());
        let expect = [
            // Every store as written.
            home.join(".ssh"),
            home.join(".aws"),
            home.join(".docker/config.json"),
            // A store that is a symlink: its target.
            keys.clone(),
            // One that exists: resolved through $HOME's symlink.
            real.join(".npmrc"),
            // Missing ones: under the nearest existing ancestor, resolved.
            real.join(".aws"),
            real.join(".config/gcloud"),
            real.join(".local/state/agentrun"),
            docker.join("config.json"),
            // A dangling symlink: where it sits (its target does not resolve).
            real.join(".netrc"),
        ];
        for p in &expect {
            assert!(denied.contains(p), "{} denied: {denied:?}", p.display());
        }
        assert_eq!(
            denied.len(),
            2 * CREDENTIAL_STORES.len(),
            "each store as written and resolved: {denied:?}"
        );
    }

    #[test]
    fn missing_stores_still_keep_home_from_being_granted_whole() {
        let t = TempDir::new("nostores");
        let home = t.0.join("home");
        fs::create_dir_all(home.join("src")).unwrap();
        fs::write(home.join(".bashrc"), "x").unwrap();
        let s = SandboxSection {
            read: Some(vec!["~".into(), "~/.aws".into()]),
            write: Some(vec![]),
            exec: Some(vec![]),
            ..Default::default()
        };
        let policy = Policy::resolve(Some(&s), &t.0, Some(&home), None).unwrap();
        let plan = plan(&policy, &needs()).unwrap();
        let got = paths(&plan);
        assert!(got.contains(&home.join("src")) && got.contains(&home.join(".bashrc")));
        // Without a rule on $HOME itself the child cannot create a store in it.
        assert!(!got.contains(&home), "{got:?}");
        assert_eq!(plan.expanded, vec![home.clone()]);
        assert_eq!(
            plan.skipped,
            vec![format!("{} (does not exist)", home.join(".aws").display())]
        );
    }

    #[test]
    fn child_needs_are_added() {
        let t = TempDir::new("needs");
        let s = SandboxSection {
            read: Some(vec![]),
            write: Some(vec![]),
            exec: Some(vec![]),
            ..Default::default()
        };
        let secret = t.0.join("secret");
        fs::write(&secret, "x").unwrap();
        let policy = Policy::resolve(Some(&s), &t.0, None, None).unwrap();
        let n = ChildNeeds {
            program: PathBuf::from("/usr/bin/python3"),
            extra_read: vec![secret.clone()],
            tty: None,
        };
        let plan = plan(&policy, &n).unwrap();
        let g = |p: &Path| plan.grants.iter().find(|g| g.path == p).map(|g| g.access);
        let py = fs::canonicalize("/usr/bin/python3").unwrap();
        assert_eq!(g(&py), Some(FsAccess::READ_EXEC));
        assert_eq!(g(&secret), Some(FsAccess::READ));
        assert_eq!(g(Path::new("/dev/null")), Some(FsAccess::READ_WRITE));
        let interp = interpreters(&py).pop().expect("python3 is a dynamic ELF");
        let interp = fs::canonicalize(interp).unwrap();
        assert_eq!(g(&interp), Some(FsAccess::READ_EXEC));

        let missing = ChildNeeds {
            extra_read: vec![t.0.join("nope")],
            ..n
        };
        let e = super::plan(&policy, &missing).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn shebang_interpreter_is_found() {
        let t = TempDir::new("shebang");
        let script = t.0.join("s");
        fs::write(&script, "#!/bin/sh -e\necho hi\n").unwrap();
        assert_eq!(interpreters(&script), vec![PathBuf::from("/bin/sh")]);
        fs::write(&script, "no shebang").unwrap();
        assert!(interpreters(&script).is_empty());
    }
}
