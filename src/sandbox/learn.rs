//! `learn`'s proposal: from what a command did ([`Usage`]) and the profile's policy, the
//! smallest change to the `[sandbox]` table that allows it, each addition with its reason,
//! and what no rule can allow (credential stores, files a later run reads).
//!
//! Plain data over [`Grants`]: a use the policy already allows adds nothing. What it
//! denies is grouped: paths of one kind (exec, write, read) that share a parent become
//! that parent, repeatedly, but never a top-level directory (`/usr`, `/home`), a home or
//! an ancestor of one, or a directory that holds a credential store. So a Python under
//! `~/.pyenv/versions/3.12.1` becomes that one directory, not `~/.pyenv` or `~`, and two
//! files read in `/etc/ssl` become `/etc/ssl`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::access::{Grants, Verdict, key_for, real, toml_str};
use super::{FsAccess, Policy, SandboxSection};

/// What a command did that a sandbox rules on.
#[derive(Debug, Default, Clone)]
pub struct Usage {
    /// Each path used, with every kind of access it needed.
    pub files: BTreeMap<PathBuf, FsAccess>,
    /// TCP ports connected to, with one address each for the report.
    pub connect: BTreeMap<u16, String>,
    /// TCP ports bound.
    pub bind: BTreeSet<u16>,
    /// UDP used.
    pub udp: bool,
    /// `socket(AF_UNIX)` used.
    pub unix_sockets: bool,
    /// Pathname sockets connected to.
    pub unix_paths: BTreeSet<PathBuf>,
}

/// One rule the proposal adds, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Addition {
    pub key: &'static str,
    pub value: String,
    pub why: String,
}

/// A use no rule of a profile can allow.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// Absolute, redacted.
    pub path: String,
    pub access: &'static str,
    pub verdict: Verdict,
    pub why: &'static str,
}

/// The proposal.
#[derive(Debug, Clone, Serialize)]
pub struct Proposal {
    pub additions: Vec<Addition>,
    pub refused: Vec<Refusal>,
    /// The `[sandbox]` table with the additions (the keys the profile sets, and those that
    /// change; a key left to its default is written out in full when it changes, since
    /// setting it replaces the default).
    pub table: String,
    /// `- old` / `+ new` lines for each key that changes.
    pub diff: Vec<String>,
}

/// How paths are written: `./...` under the working directory, `~/...` under the home, else
/// absolute; each form is kept only if the profile loader resolves it back to the same path
/// (a directory named `~` in the working directory is `./~`, never the home). `redact` is
/// applied to every path written (the command chose them: one may be named after a
/// secret), before any escaping.
pub struct Shown<'a> {
    pub cwd: &'a Path,
    pub home: Option<&'a Path>,
    pub redact: &'a dyn Fn(&str) -> String,
}

impl Shown<'_> {
    fn path(&self, p: &Path) -> String {
        let text = if p == self.cwd {
            ".".to_string()
        } else if let Ok(rest) = p.strip_prefix(self.cwd) {
            format!("./{}", rest.display())
        } else {
            super::access::shown(p, self.home)
        };
        let back = super::policy::resolve_path(&text, self.cwd, self.home).ok();
        let text = if back.as_deref() == Some(super::policy::normalize(p).as_path()) {
            text
        } else {
            p.display().to_string()
        };
        (self.redact)(&text)
    }

    /// `p` written absolute, redacted.
    fn absolute(&self, p: &Path) -> String {
        (self.redact)(&p.display().to_string())
    }
}

/// The proposal for `usage` under `policy` (whose profile table is `section`).
pub fn propose(
    policy: &Policy,
    section: Option<&SandboxSection>,
    grants: &Grants,
    usage: &Usage,
    homes: &[PathBuf],
    shown: &Shown,
) -> Proposal {
    let mut buckets: BTreeMap<&'static str, BTreeMap<PathBuf, usize>> = BTreeMap::new();
    let mut refused = Vec::new();
    for (path, &want) in &usage.files {
        match grants.verdict(path, want) {
            Verdict::Allowed => {}
            Verdict::Denied => {
                *buckets
                    .entry(key_for(want))
                    .or_default()
                    .entry(real(path))
                    .or_default() += 1;
            }
            v => refused.push(Refusal {
                path: shown.absolute(path),
                access: key_for(want),
                verdict: v,
                why: match v {
                    Verdict::Store => {
                        "a credential store: no rule grants it unless it names it; keep the \
                         agent's files out of stores"
                    }
                    Verdict::ReadOnly => {
                        "read by later runs (profile, secret source, .git): read-only for \
                         every child"
                    }
                    _ => "agentrun's audit log or control sockets: never open to a child",
                },
            }),
        }
    }
    for p in &usage.unix_paths {
        // Connecting to a pathname socket needs it to be reachable by the file rules.
        if grants.verdict(p, FsAccess::READ_WRITE) == Verdict::Denied {
            *buckets
                .entry("write")
                .or_default()
                .entry(real(p))
                .or_default() += 1;
        }
    }
    let stop = |d: &Path| -> bool {
        d.components().count() < 3
            || homes.iter().any(|h| h.starts_with(d))
            || policy.protected.iter().any(|s| s.starts_with(d))
    };
    let mut grouped: BTreeMap<&'static str, BTreeMap<PathBuf, usize>> = buckets
        .into_iter()
        .map(|(k, v)| (k, collapse(v, &stop)))
        .collect();
    // Exec and write grant reading too.
    let wider: Vec<PathBuf> = ["exec", "write"]
        .iter()
        .filter_map(|k| grouped.get(k))
        .flat_map(|m| m.keys().cloned())
        .collect();
    if let Some(read) = grouped.get_mut("read") {
        read.retain(|p, _| !wider.iter().any(|w| p.starts_with(w)));
    }

    let mut additions = Vec::new();
    for (key, paths) in &grouped {
        for (p, n) in paths {
            additions.push(Addition {
                key,
                value: shown.path(p),
                why: match n {
                    1 => format!("{key}: 1 use"),
                    n => format!("{key}: {n} uses beneath it"),
                },
            });
        }
    }
    let new_ports = |seen: &mut dyn Iterator<Item = u16>, have: &[u16]| -> Vec<u16> {
        seen.filter(|p| !have.contains(p)).collect()
    };
    let connect = new_ports(&mut usage.connect.keys().copied(), &policy.connect);
    for p in &connect {
        additions.push(Addition {
            key: "connect",
            value: p.to_string(),
            why: format!("TCP connect to {}", usage.connect[p]),
        });
    }
    let bind = new_ports(&mut usage.bind.iter().copied(), &policy.bind);
    for p in &bind {
        additions.push(Addition {
            key: "bind",
            value: p.to_string(),
            why: "TCP bind".into(),
        });
    }
    let udp = usage.udp && !policy.udp;
    if udp {
        additions.push(Addition {
            key: "udp",
            value: "true".into(),
            why: "a UDP socket (DNS lookups use one): UDP to any address".into(),
        });
    }
    let unix = usage.unix_sockets && !policy.unix_sockets;
    if unix {
        additions.push(Addition {
            key: "unix_sockets",
            value: "true".into(),
            why: "socket(AF_UNIX)".into(),
        });
    }

    // The table: each list key the profile sets or that changes.
    let s = section.cloned().unwrap_or_default();
    let mut lines = vec!["[sandbox]".to_string()];
    let mut diff = Vec::new();
    for (key, set, current) in [
        ("read", &s.read, &policy.read),
        ("write", &s.write, &policy.write),
        ("exec", &s.exec, &policy.exec),
    ] {
        let old: Vec<String> = match set {
            Some(l) => l.clone(),
            None => current.iter().map(|p| shown.path(p)).collect(),
        };
        let added: Vec<String> = grouped
            .get(key)
            .map(|m| m.keys().map(|p| shown.path(p)).collect())
            .unwrap_or_default();
        let new: Vec<String> = old.iter().cloned().chain(added.iter().cloned()).collect();
        let line = |l: &[String]| {
            format!(
                "{key} = [{}]",
                l.iter().map(|x| toml_str(x)).collect::<Vec<_>>().join(", ")
            )
        };
        if !added.is_empty() {
            diff.push(match set {
                Some(_) => format!("- {}", line(&old)),
                None => format!("- ({key} not set: the default {})", line(&old)),
            });
            diff.push(format!("+ {}", line(&new)));
        }
        if set.is_some() || !added.is_empty() {
            lines.push(line(&new));
        }
    }
    for (key, have, add) in [
        ("connect", &policy.connect, &connect),
        ("bind", &policy.bind, &bind),
    ] {
        let mut all = have.clone();
        all.extend(add);
        all.sort_unstable();
        let l = |v: &[u16]| {
            format!(
                "{key} = [{}]",
                v.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
            )
        };
        if !add.is_empty() {
            diff.push(format!("- {}", l(have)));
            diff.push(format!("+ {}", l(&all)));
        }
        if !all.is_empty() {
            lines.push(l(&all));
        }
    }
    for (key, before, now) in [
        ("udp", policy.udp, policy.udp || udp),
        (
            "unix_sockets",
            policy.unix_sockets,
            policy.unix_sockets || unix,
        ),
    ] {
        if before != now {
            diff.push(format!("- {key} = {before}"));
            diff.push(format!("+ {key} = {now}"));
        }
        if now {
            lines.push(format!("{key} = true"));
        }
    }
    if !s.allow_syscalls.is_empty() {
        lines.push(format!(
            "allow_syscalls = [{}]",
            s.allow_syscalls
                .iter()
                .map(|x| toml_str(x))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Proposal {
        additions,
        refused,
        table: lines.join("\n") + "\n",
        diff,
    }
}

/// Paths in two or more branches of one directory become that directory (their counts
/// summed), deepest first, until no directory `stop` allows has two; a path beneath
/// another is then dropped.
fn collapse(
    mut paths: BTreeMap<PathBuf, usize>,
    stop: &dyn Fn(&Path) -> bool,
) -> BTreeMap<PathBuf, usize> {
    loop {
        // Each directory above a path, and the branches (its children) that lead to paths.
        let mut branches: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
        for p in paths.keys() {
            let mut child = p.as_path();
            while let Some(d) = child.parent() {
                branches
                    .entry(d.to_path_buf())
                    .or_default()
                    .insert(child.to_path_buf());
                child = d;
            }
        }
        let Some(dir) = branches
            .into_iter()
            .filter(|(d, b)| b.len() >= 2 && !stop(d))
            .max_by_key(|(d, _)| d.components().count())
            .map(|(d, _)| d)
        else {
            break;
        };
        let beneath: Vec<PathBuf> = paths
            .keys()
            .filter(|p| p.starts_with(&dir))
            .cloned()
            .collect();
        let n: usize = beneath.iter().filter_map(|p| paths.remove(p)).sum();
        *paths.entry(dir).or_default() += n;
    }
    let keys: Vec<PathBuf> = paths.keys().cloned().collect();
    for k in &keys {
        if let Some(a) = keys.iter().find(|a| *a != k && k.starts_with(a)) {
            let n = paths.remove(k).unwrap_or(0);
            if let Some(c) = paths.get_mut(a) {
                *c += n;
            }
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn siblings_collapse_but_never_into_a_home_or_a_top_directory() {
        let home = PathBuf::from("/home/u");
        let stop = |d: &Path| d.components().count() < 3 || home.starts_with(d);
        let m: BTreeMap<PathBuf, usize> = [
            "/home/u/.pyenv/versions/3.12.1/bin/python3.12",
            "/home/u/.pyenv/versions/3.12.1/lib/python3.12/os.py",
            "/home/u/.pyenv/versions/3.12.1/lib/python3.12/encodings/__init__.py",
            "/home/u/notes.txt",
            "/etc/ssl/openssl.cnf",
            "/etc/ssl/certs/ca.pem",
            "/srv/a",
            "/opt/x/y",
        ]
        .iter()
        .map(|p| (PathBuf::from(p), 1))
        .collect();
        let c = collapse(m, &stop);
        let keys: Vec<&str> = c.keys().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "/etc/ssl",
                "/home/u/.pyenv/versions/3.12.1",
                "/home/u/notes.txt",
                "/opt/x/y",
                "/srv/a"
            ]
        );
        assert_eq!(c[Path::new("/home/u/.pyenv/versions/3.12.1")], 3);
    }
}
