//! The module arrows of docs/architecture.md, read from the source: `profile` and the other
//! leaves import nothing of the crate, every import is one the table allows, and no two
//! modules import each other.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module -> the crate modules it may import (docs/architecture.md, "The modules").
const ALLOWED: &[(&str, &[&str])] = &[
    ("context", &[]),
    ("profile", &[]),
    ("scrub", &[]),
    ("cli", &[]),
    ("sys", &[]),
    ("broker", &[]),
    ("secrets", &["profile", "context", "sandbox", "scrub"]),
    ("verify", &["profile", "secrets"]),
    ("sandbox", &["profile", "sys"]),
    ("redact", &["profile"]),
    ("launch", &["profile", "redact", "sandbox", "sys"]),
    ("preflight", &["profile", "redact", "scrub"]),
    (
        "audit",
        &["profile", "sandbox", "verify", "scrub", "broker"],
    ),
    (
        "commands",
        &[
            "audit",
            "broker",
            "cli",
            "context",
            "launch",
            "preflight",
            "profile",
            "redact",
            "sandbox",
            "scrub",
            "secrets",
            "sys",
            "verify",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top module a source file belongs to (`src/x.rs` or `src/x/...`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let m = first.trim_end_matches(".rs");
    (m != "lib" && m != "main").then(|| m.to_owned())
}

/// `crate::NAME` paths in code (comments left out).
fn crate_imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let name: String = rest[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
            rest = &rest[i + 7..];
        }
    }
    found
}

#[test]
fn one_way_imports() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut arrows: BTreeSet<(String, String)> = BTreeSet::new();
    let mut wrong = Vec::new();
    for f in &files {
        let Some(m) = module_of(&src, f) else {
            continue;
        };
        let Some(ok) = allowed.get(m.as_str()) else {
            wrong.push(format!(
                "{}: module `{m}` is not in docs/architecture.md",
                f.display()
            ));
            continue;
        };
        for to in crate_imports(&std::fs::read_to_string(f).unwrap()) {
            if to == m {
                continue;
            }
            if !ok.contains(&to.as_str()) {
                wrong.push(format!("{}: `{m}` imports `{to}`", f.display()));
            }
            arrows.insert((m.clone(), to));
        }
    }
    for (a, b) in &arrows {
        if arrows.contains(&(b.clone(), a.clone())) {
            wrong.push(format!("`{a}` and `{b}` import each other"));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against docs/architecture.md:\n{}",
        wrong.join("\n")
    );
}

/// Files outside `src/sys/` that may call `sys`'s `unsafe fn`s (the rules between fork and exec
/// are the caller's to keep: the child start, and the kernel tests that start children).
/// Every such line has a `SAFETY` note just above it.
const UNSAFE_CALLERS: &[&str] = &[
    "launch/spawn.rs",
    "launch/pidns.rs",
    "sandbox/kernel_tests.rs",
];

#[test]
fn unsafe_lives_in_sys_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        if rel.starts_with("sys") {
            continue;
        }
        let caller = UNSAFE_CALLERS.iter().any(|c| rel == Path::new(c));
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let uses = [
                "unsafe {",
                "unsafe{",
                "unsafe fn",
                "unsafe(",
                "unsafe extern",
                "unsafe impl",
            ]
            .iter()
            .any(|u| code.contains(u));
            if !uses {
                continue;
            }
            let noted = lines[n.saturating_sub(12)..=n]
                .iter()
                .any(|l| l.contains("SAFETY") || l.contains("# Safety"));
            if !caller {
                wrong.push(format!(
                    "{}:{}: `unsafe` outside src/sys/: {}",
                    f.display(),
                    n + 1,
                    line.trim()
                ));
            } else if !noted {
                wrong.push(format!(
                    "{}:{}: no SAFETY note: {}",
                    f.display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Issue 16: the guide's supply-chain rules, applied to agentrun itself by its own
/// `preflight`: every Python requirements file (the test tools, the benchmarks' peers) pinned
/// with `==` and hashed, every npm lock with integrity, Cargo.lock beside the binary's
/// manifest, and an audit in CI (`.ci/deny`). An unpinned or unhashed line fails this test.
#[test]
fn our_own_dependencies_are_pinned_hashed_and_audited() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(crate::harness::bin())
        .args(["preflight", "--json"])
        .arg(root)
        .env_remove("AGENTRUN_PROFILE")
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for id in ["deps.pinned", "deps.hashes", "deps.audit_in_ci"] {
        let c = doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap();
        assert_eq!(c["status"], "PASS", "{id}: {c}");
    }
}
