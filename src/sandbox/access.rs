//! What a policy lets the child do with one path, as a run would grant it, and the
//! `[sandbox]` line that would allow what it does not: for `check -- COMMAND` (which names
//! what a run would deny) and `learn` (which proposes the rules a command needs).
//!
//! Plain data over the same file-system plan a run gives Landlock (`fsplan`), so the answer
//! here is the kernel's answer: a path is allowed when the rights granted on it and its
//! ancestors together cover what is wanted (Landlock's rule union), and never when it lies in
//! a credential store, a file a later run reads, or a hidden path.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::fsplan::{self, FsAccess, FsPlan};
use super::{ChildNeeds, Policy, SandboxError};

/// The answer for one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// A run allows it.
    Allowed,
    /// A run denies it; a rule would allow it.
    Denied,
    /// A credential store (or agentrun's own state, or a start-up file under a write root):
    /// no rule of a profile grants it, unless the rule names it explicitly.
    Store,
    /// A file a later run reads (profile, secret source, `.git`): read-only in the child.
    ReadOnly,
    /// The audit log or the control sockets: the child may not open them at all.
    Hidden,
}

/// The grants of one policy, ready to answer [`Grants::verdict`].
#[derive(Debug, Clone)]
pub struct Grants {
    plan: FsPlan,
    stores: Vec<PathBuf>,
    read_only: Vec<PathBuf>,
    hidden: Vec<PathBuf>,
}

impl Grants {
    /// The grants a run would give `needs` under `policy`; `read_only` are the paths the run
    /// keeps read-only (`isolate`), given canonical.
    pub fn new(
        policy: &Policy,
        needs: &ChildNeeds,
        read_only: Vec<PathBuf>,
    ) -> Result<Grants, SandboxError> {
        let plan = fsplan::plan(policy, needs)?;
        let stores = fsplan::denied(&policy.protected);
        let hidden = policy.hidden.iter().map(|h| real(h)).collect();
        Ok(Grants {
            plan,
            stores,
            read_only,
            hidden,
        })
    }

    /// Rule paths of the policy that do not exist (a run skips them).
    pub fn skipped(&self) -> &[String] {
        &self.plan.skipped
    }

    /// What a run does when the child wants `want` on `path` (resolved as the kernel would:
    /// symlinks followed; a path that does not exist yet as its nearest existing ancestor
    /// plus the rest).
    pub fn verdict(&self, path: &Path, want: FsAccess) -> Verdict {
        let p = real(path);
        if self.hidden.iter().any(|h| p.starts_with(h)) {
            return Verdict::Hidden;
        }
        if self.stores.iter().any(|s| p.starts_with(s)) {
            return Verdict::Store;
        }
        if want.write && self.read_only.iter().any(|r| p.starts_with(r)) {
            return Verdict::ReadOnly;
        }
        let have = self
            .plan
            .grants
            .iter()
            .filter(|g| p.starts_with(&g.path))
            .fold(FsAccess::default(), |a, g| a.union(g.access));
        let covers = (!want.read || have.read)
            && (!want.write || have.write)
            && (!want.exec || have.exec)
            && (!want.ioctl || have.ioctl);
        if covers {
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }
}

/// `path` as the kernel resolves it: canonical when it exists, else its nearest existing
/// ancestor's canonical form joined with the rest.
pub fn real(path: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(path) {
        return c;
    }
    let mut rest = Vec::new();
    let mut base = path.to_path_buf();
    loop {
        let Some(name) = base.file_name().map(|n| n.to_os_string()) else {
            return path.to_path_buf();
        };
        rest.push(name);
        if !base.pop() {
            return path.to_path_buf();
        }
        if let Ok(mut c) = std::fs::canonicalize(&base) {
            c.extend(rest.iter().rev());
            return c;
        }
    }
}

/// The profile key that grants `want`: `exec` for execution, `write` for writing, else `read`.
pub fn key_for(want: FsAccess) -> &'static str {
    if want.exec {
        "exec"
    } else if want.write {
        "write"
    } else {
        "read"
    }
}

/// `path` as a profile would write it: `~/...` under `home`.
pub fn shown(path: &Path, home: Option<&Path>) -> String {
    match home.and_then(|h| path.strip_prefix(h).ok()) {
        Some(rest) if rest.as_os_str().is_empty() => "~".into(),
        Some(rest) => format!("~/{}", rest.display()),
        None => path.display().to_string(),
    }
}

/// A TOML string literal of `s` (basic string): quotes, backslashes and every character
/// outside printable ASCII escaped, so a file name cannot end the string, add a key, or
/// reach the operator's terminal as a control sequence or a look-alike.
pub fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::profile::SandboxSection;
    use std::fs;

    fn grants(dir: &Path, s: &SandboxSection) -> Grants {
        let home = dir.join("home");
        let policy = Policy::resolve(Some(s), dir, Some(&home), None).unwrap();
        let needs = ChildNeeds {
            program: PathBuf::from("/bin/sh"),
            extra_read: Vec::new(),
            tty: None,
        };
        Grants::new(&policy, &needs, vec![real(&dir.join("work/.git"))]).unwrap()
    }

    #[test]
    fn verdicts_follow_the_rule_union_and_the_stores() {
        let t = std::env::temp_dir().join(format!("agentrun-access-{}", std::process::id()));
        let _ = fs::remove_dir_all(&t);
        for d in ["home/.ssh", "home/proj", "work/.git", "data"] {
            fs::create_dir_all(t.join(d)).unwrap();
        }
        fs::write(t.join("data/a.txt"), "x").unwrap();
        let s = SandboxSection {
            read: Some(vec![t.join("data").display().to_string(), "~".into()]),
            write: Some(vec![t.join("work").display().to_string()]),
            exec: Some(vec!["/usr".into()]),
            ..Default::default()
        };
        let g = grants(&t, &s);
        let (r, w, x) = (FsAccess::READ, FsAccess::READ_WRITE, FsAccess::READ_EXEC);
        assert_eq!(g.verdict(&t.join("data/a.txt"), r), Verdict::Allowed);
        assert_eq!(g.verdict(&t.join("data/a.txt"), w), Verdict::Denied);
        assert_eq!(g.verdict(&t.join("data/new.txt"), r), Verdict::Allowed);
        assert_eq!(g.verdict(&t.join("work/out/x"), w), Verdict::Allowed);
        assert_eq!(g.verdict(&t.join("work/.git/config"), w), Verdict::ReadOnly);
        assert_eq!(g.verdict(&t.join("work/.git/config"), r), Verdict::Allowed);
        assert_eq!(g.verdict(&t.join("home/proj"), r), Verdict::Allowed);
        assert_eq!(
            g.verdict(&t.join("home/.ssh/id_ed25519"), r),
            Verdict::Store
        );
        assert_eq!(g.verdict(Path::new("/usr/bin/env"), x), Verdict::Allowed);
        assert_eq!(g.verdict(&t.join("data/a.txt"), x), Verdict::Denied);
        assert_eq!(g.verdict(Path::new("/etc/hostname"), r), Verdict::Denied);
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn paths_are_shown_as_a_profile_writes_them() {
        let h = Path::new("/home/u");
        assert_eq!(shown(Path::new("/home/u/.venv"), Some(h)), "~/.venv");
        assert_eq!(shown(Path::new("/home/u"), Some(h)), "~");
        assert_eq!(shown(Path::new("/home/uv"), Some(h)), "/home/uv");
        assert_eq!(toml_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
        assert_eq!(toml_str("caf\u{e9}\u{1b}]52"), "\"caf\\u00E9\\u001B]52\"");
        assert_eq!(key_for(FsAccess::READ_EXEC), "exec");
        assert_eq!(key_for(FsAccess::READ_WRITE), "write");
    }
}
