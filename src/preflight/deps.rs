//! The tree's own checks: `deps.pinned`, `deps.hashes`, `deps.audit_in_ci`,
//! `secrets.dotenv_ignored`, `runtime.incident_plan`.
//!
//! Each is a function of the [`Tree`]: the files git tracks (or the `.gitignore` rules keep),
//! and, for `.env` files, the ones it does not. Findings name the file and line (1 for a whole
//! file) and never quote a line or a name read from one: a requirement may carry a URL with
//! a token in it, and a key pasted into a requirements file would read as a project name.
//!
//! Dependency files are found by name anywhere in the tree, except under `node_modules/`
//! (installed packages, not the project's). A dependency file that cannot be read (a
//! symlink, binary, over 64 MiB) could not be checked: that is a finding (`unreadable`), so a
//! gate on these checks fails closed. A manifest that cannot be read or parsed is taken to
//! declare dependencies (and, for `Cargo.toml`, a binary), so it needs its lock.

use std::collections::HashMap;

use serde_json::Value;

use super::tree::Skipped;
use super::{Check, Finding, Status, Tree, TreeFile, tree};

const PY_LOCKS: [&str; 3] = ["uv.lock", "poetry.lock", "pdm.lock"];
const JS_LOCKS: [&str; 3] = ["package-lock.json", "pnpm-lock.yaml", "yarn.lock"];
const NO_DEPS: &str = "no dependency files (requirements*.txt, pyproject.toml, package.json, package-lock.json, Cargo.toml)";

const FIX_UNREADABLE: &str = "a dependency file that is a symlink, binary or over 64 MiB cannot be checked: make it a regular text file under 64 MiB";

/// `deps.pinned`: every requirement `==`; `pyproject.toml`, `package.json` and a binary's
/// `Cargo.toml` have their lock beside them (or at their workspace root).
pub fn pinned(tree: &Tree) -> Check {
    let deps = DepFiles::of(tree);
    if deps.files.is_empty() {
        return Check::new("deps.pinned", Status::Skip, NO_DEPS, "");
    }
    let mut findings = Vec::new();
    let mut fixes = Fixes::default();
    for f in &deps.files {
        let name = name_of(&f.rel);
        let dir = dir_of(&f.rel);
        if is_requirements(name) {
            let Some(text) = deps.text(f) else {
                findings.push(unreadable(f));
                fixes.add(FIX_UNREADABLE);
                continue;
            };
            for r in requirements(&text) {
                if let Some(why) = r.unpinned() {
                    findings.push(finding(&f.rel, r.line, "requirements.unpinned", why));
                    fixes.add(
                        "pin every requirement with == (`pip-compile` or `uv pip compile` writes a fully pinned requirements.txt)",
                    );
                }
            }
        } else if name == "pyproject.toml" {
            let declares = deps.toml(f).is_none_or(|t| pyproject_declares(&t));
            if declares && !deps.locked(dir, &PY_LOCKS, |d| deps.is_py_workspace(d)) {
                findings.push(finding(
                    &f.rel,
                    1,
                    "pyproject.lock_missing",
                    "declares dependencies but no uv.lock, poetry.lock or pdm.lock is committed beside it".into(),
                ));
                fixes.add(
                    "commit a lock beside pyproject.toml: `uv lock`, `poetry lock` or `pdm lock`",
                );
            }
        } else if name == "package.json" {
            let declares = deps.json(f).is_none_or(|j| package_json_declares(&j));
            if declares && !deps.locked(dir, &JS_LOCKS, |d| deps.is_js_workspace(d)) {
                findings.push(finding(
                    &f.rel,
                    1,
                    "package-json.lock_missing",
                    "declares dependencies but no package-lock.json, pnpm-lock.yaml or yarn.lock is committed beside it"
                        .into(),
                ));
                fixes.add(
                    "commit a lock beside package.json: `npm install` (package-lock.json), `pnpm install` or `yarn install`",
                );
            }
        } else if name == "Cargo.toml" {
            let bin = match deps.toml(f) {
                Some(t) => {
                    t.contains_key("package") && (t.contains_key("bin") || deps.has_main(dir))
                }
                None => deps.has_main(dir),
            };
            if bin && !deps.locked(dir, &["Cargo.lock"], |d| deps.is_cargo_workspace(d)) {
                findings.push(finding(
                    &f.rel,
                    1,
                    "cargo.lock_missing",
                    "builds a binary but no Cargo.lock is committed beside it or at its workspace root".into(),
                ));
                fixes.add(
                    "commit Cargo.lock (`cargo generate-lockfile`; take it out of .gitignore)",
                );
            }
        }
    }
    let summary = format!("{} dependency file(s) checked", deps.files.len());
    close("deps.pinned", Status::Fail, findings, summary, fixes)
}

/// `deps.hashes`: every requirement has `--hash=sha256:`; every package of a
/// `package-lock.json` has `integrity`.
pub fn hashes(tree: &Tree) -> Check {
    let deps = DepFiles::of(tree);
    if deps.files.is_empty() {
        return Check::new("deps.hashes", Status::Skip, NO_DEPS, "");
    }
    let mut findings = Vec::new();
    let mut fixes = Fixes::default();
    let mut looked = 0;
    for f in &deps.files {
        let name = name_of(&f.rel);
        if is_requirements(name) {
            looked += 1;
            let Some(text) = deps.text(f) else {
                findings.push(unreadable(f));
                fixes.add(FIX_UNREADABLE);
                continue;
            };
            for r in requirements(&text) {
                if !r.hashed {
                    let what =
                        "requirement has no --hash=sha256: (pip cannot verify what it downloads)";
                    findings.push(finding(
                        &f.rel,
                        r.line,
                        "requirements.hash_missing",
                        what.into(),
                    ));
                    fixes.add(
                        "write hashes with `pip-compile --generate-hashes` or `uv pip compile --generate-hashes`, install with `pip install --require-hashes`",
                    );
                }
            }
        } else if name == "package-lock.json" {
            looked += 1;
            let Some(bytes) = deps.bytes(f) else {
                findings.push(unreadable(f));
                fixes.add(FIX_UNREADABLE);
                continue;
            };
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(lock) => {
                    let before = findings.len();
                    lock_integrity(&f.rel, &bytes, &lock, &mut findings);
                    if findings.len() > before {
                        fixes.add(
                            "run `npm install` with a current npm to write a lock with integrity for every registry package; a git or URL dependency has none: publish it or vendor it",
                        );
                    }
                }
                Err(e) => {
                    findings.push(finding(
                        &f.rel,
                        e.line().max(1) as u64,
                        "package-lock.invalid",
                        "not valid JSON: its packages cannot be checked".into(),
                    ));
                    fixes.add("rewrite package-lock.json with `npm install`");
                }
            }
        }
    }
    let summary = format!("{looked} requirements*.txt / package-lock.json file(s) checked");
    close("deps.hashes", Status::Fail, findings, summary, fixes)
}

/// What a CI file must mention: the tools (and the names their actions and modules go by).
const AUDITS: [&str; 11] = [
    "pip-audit",
    "pip_audit",
    "npm audit",
    "pnpm audit",
    "yarn audit",
    "cargo audit",
    "cargo-audit",
    "rustsec/audit-check",
    "cargo deny",
    "cargo-deny",
    "osv-scanner",
];

/// `deps.audit_in_ci`: a file under `.github/workflows/`, `.gitlab-ci.yml` or `.ci/` runs a
/// dependency audit (in a line that is not a comment).
pub fn audit_in_ci(tree: &Tree) -> Check {
    let deps = DepFiles::of(tree);
    let Some(first) = deps.files.first() else {
        return Check::new("deps.audit_in_ci", Status::Skip, NO_DEPS, "");
    };
    let ci: Vec<&TreeFile> = tree
        .scanned()
        .filter(|f| {
            f.rel.starts_with(".github/workflows/")
                || f.rel == ".gitlab-ci.yml"
                || f.rel.starts_with(".ci/")
        })
        .collect();
    let mut skipped = Skipped::default();
    for f in &ci {
        let Some(bytes) = tree.text(f, &mut skipped) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let hit = text.lines().enumerate().find(|(_, l)| {
            !l.trim_start().starts_with('#') && AUDITS.iter().any(|a| l.contains(a))
        });
        if let Some((i, _)) = hit {
            let summary = format!("{}:{} runs a dependency audit", f.rel, i + 1);
            return Check::new("deps.audit_in_ci", Status::Pass, summary, "");
        }
    }
    let at = ci.first().map_or(first.rel.as_str(), |f| f.rel.as_str());
    let mut check = Check::new(
        "deps.audit_in_ci",
        Status::Warn,
        format!("{} CI file(s), none runs a dependency audit", ci.len()),
        "run `pip-audit`, `npm audit`, `cargo audit` / `cargo deny check` or `osv-scanner` in a CI workflow",
    );
    check.findings.push(finding(
        at,
        1,
        "ci.audit_missing",
        "no file under .github/workflows/, .gitlab-ci.yml or .ci/ runs pip-audit, npm audit, cargo audit, cargo deny or osv-scanner".into(),
    ));
    check
}

/// `secrets.dotenv_ignored`: every `.env` / `.env.*` (the templates aside) is ignored and
/// not tracked.
pub fn dotenv_ignored(tree: &Tree) -> Check {
    let mut findings = Vec::new();
    let mut seen = 0;
    for f in tree.files.iter().filter(|f| tree::is_dotenv(&f.rel)) {
        seen += 1;
        if f.tracked && tree.git {
            findings.push(finding(
                &f.rel,
                1,
                "dotenv.tracked",
                "tracked by git: its secrets are in every clone and in the history".into(),
            ));
        } else if !f.ignored {
            findings.push(finding(
                &f.rel,
                1,
                "dotenv.not_ignored",
                "not ignored by git: one `git add` away from being committed".into(),
            ));
        }
    }
    let summary = if seen == 0 {
        "no .env files".to_string()
    } else {
        format!("{seen} .env file(s) checked")
    };
    let mut fixes = Fixes::default();
    if findings.iter().any(|f| f.rule == "dotenv.tracked") {
        fixes.add(
            "`git rm --cached` the file, rotate the secrets it held (they are in the history)",
        );
    }
    if !findings.is_empty() {
        fixes.add("add `.env` and `.env.*` to .gitignore, with `!.env.example` for a template");
    }
    close(
        "secrets.dotenv_ignored",
        Status::Fail,
        findings,
        summary,
        fixes,
    )
}

/// `runtime.incident_plan`: `SECURITY.md`, `INCIDENT*.md` or `docs/incident*` under DIR.
pub fn incident_plan(tree: &Tree) -> Check {
    let plan = tree.scanned().find(|f| {
        let lower = f.rel.to_ascii_lowercase();
        let name = name_of(&lower);
        name == "security.md"
            || (name.starts_with("incident") && name.ends_with(".md"))
            || lower.starts_with("docs/incident")
            || lower.contains("/docs/incident")
    });
    match plan {
        Some(f) => Check::new(
            "runtime.incident_plan",
            Status::Pass,
            format!("{} is the incident plan", f.rel),
            "",
        ),
        None => {
            let mut check = Check::new(
                "runtime.incident_plan",
                Status::Warn,
                "no incident response plan",
                "write SECURITY.md (or docs/incident-response.md): who revokes which credential, how, and how fast",
            );
            check.findings.push(finding(
                "SECURITY.md",
                1,
                "incident_plan.missing",
                "no SECURITY.md, INCIDENT*.md or docs/incident* under the directory".into(),
            ));
            check
        }
    }
}

fn finding(file: &str, line: u64, rule: &str, message: String) -> Finding {
    Finding {
        file: file.to_string(),
        line,
        rule: rule.to_string(),
        message,
    }
}

fn unreadable(f: &TreeFile) -> Finding {
    finding(
        &f.rel,
        1,
        "unreadable",
        "could not be checked: a symlink, binary, over 64 MiB or unreadable".into(),
    )
}

/// The fixes a check's findings call for, each once, in the order first called for.
#[derive(Default)]
struct Fixes(Vec<&'static str>);

impl Fixes {
    fn add(&mut self, fix: &'static str) {
        if !self.0.contains(&fix) {
            self.0.push(fix);
        }
    }
}

/// `bad` when there are findings, else PASS.
fn close(
    id: &'static str,
    bad: Status,
    findings: Vec<Finding>,
    summary: String,
    fixes: Fixes,
) -> Check {
    let status = if findings.is_empty() {
        Status::Pass
    } else {
        bad
    };
    let mut check = Check::new(id, status, summary, fixes.0.join("; "));
    check.findings = findings;
    check
}

fn name_of(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

/// The directory of `rel`, `""` at the root.
fn dir_of(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(d, _)| d)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn is_requirements(name: &str) -> bool {
    name.starts_with("requirements") && name.ends_with(".txt")
}

fn is_dep_file(rel: &str) -> bool {
    let name = name_of(rel);
    is_requirements(name)
        || [
            "pyproject.toml",
            "package.json",
            "package-lock.json",
            "Cargo.toml",
        ]
        .contains(&name)
}

/// The tree's dependency files, with the reads the checks share.
struct DepFiles<'a> {
    tree: &'a Tree,
    files: Vec<&'a TreeFile>,
}

impl<'a> DepFiles<'a> {
    fn of(tree: &'a Tree) -> DepFiles<'a> {
        let files = tree
            .scanned()
            .filter(|f| is_dep_file(&f.rel) && !f.rel.split('/').any(|c| c == "node_modules"))
            .collect();
        DepFiles { tree, files }
    }

    fn bytes(&self, f: &TreeFile) -> Option<Vec<u8>> {
        self.tree
            .text_up_to(f, super::tree::MAX_DEP_FILE, &mut Skipped::default())
    }

    fn text(&self, f: &TreeFile) -> Option<String> {
        self.bytes(f)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    fn toml(&self, f: &TreeFile) -> Option<toml::Table> {
        self.text(f)?.parse::<toml::Table>().ok()
    }

    fn json(&self, f: &TreeFile) -> Option<Value> {
        serde_json::from_slice(&self.bytes(f)?).ok()
    }

    /// The tracked file `rel` (the tree's files are sorted by `rel`: a binary search, so a
    /// monorepo's thousand manifests do not each walk the tree).
    fn find(&self, rel: &str) -> Option<&'a TreeFile> {
        let files = &self.tree.files;
        let i = files.binary_search_by(|f| f.rel.as_str().cmp(rel)).ok()?;
        files.get(i).filter(|f| f.tracked)
    }

    /// Whether a tracked file's path starts with `prefix`.
    fn has_under(&self, prefix: &str) -> bool {
        let files = &self.tree.files;
        let i = files.partition_point(|f| f.rel.as_str() < prefix);
        files[i..]
            .iter()
            .take_while(|f| f.rel.starts_with(prefix))
            .any(|f| f.tracked)
    }

    /// The manifest `name` in `dir`, parsed, when the tree tracks it.
    fn manifest_toml(&self, dir: &str, name: &str) -> Option<toml::Table> {
        self.toml(self.find(&join(dir, name))?)
    }

    /// A lock in `dir`, or in an ancestor that `is_root` says is a workspace root.
    fn locked(&self, dir: &str, locks: &[&str], is_root: impl Fn(&str) -> bool) -> bool {
        let has_lock = |d: &str| locks.iter().any(|l| self.find(&join(d, l)).is_some());
        if has_lock(dir) {
            return true;
        }
        let mut d = dir;
        while !d.is_empty() {
            d = dir_of(d);
            if has_lock(d) && is_root(d) {
                return true;
            }
        }
        false
    }

    fn has_main(&self, dir: &str) -> bool {
        self.find(&join(dir, "src/main.rs")).is_some() || self.has_under(&join(dir, "src/bin/"))
    }

    fn is_cargo_workspace(&self, dir: &str) -> bool {
        self.manifest_toml(dir, "Cargo.toml")
            .is_some_and(|t| t.contains_key("workspace"))
    }

    fn is_py_workspace(&self, dir: &str) -> bool {
        self.manifest_toml(dir, "pyproject.toml").is_some_and(|t| {
            t.get("tool")
                .and_then(|t| t.get("uv"))
                .is_some_and(|uv| uv.get("workspace").is_some())
        })
    }

    fn is_js_workspace(&self, dir: &str) -> bool {
        self.find(&join(dir, "pnpm-workspace.yaml")).is_some()
            || self
                .find(&join(dir, "package.json"))
                .and_then(|f| self.json(f))
                .is_some_and(|j| j.get("workspaces").is_some())
    }
}

/// Whether a `pyproject.toml` declares dependencies (one that only configures tools needs
/// no lock).
fn pyproject_declares(t: &toml::Table) -> bool {
    let nonempty = |v: Option<&toml::Value>| match v {
        Some(toml::Value::Array(a)) => !a.is_empty(),
        Some(toml::Value::Table(t)) => t.values().any(|v| match v {
            toml::Value::Array(a) => !a.is_empty(),
            _ => true,
        }),
        _ => false,
    };
    let project = t.get("project");
    let poetry = t.get("tool").and_then(|t| t.get("poetry"));
    nonempty(project.and_then(|p| p.get("dependencies")))
        || nonempty(project.and_then(|p| p.get("optional-dependencies")))
        || nonempty(t.get("dependency-groups"))
        || poetry
            .and_then(|p| p.get("dependencies"))
            .and_then(|d| d.as_table())
            .is_some_and(|d| d.keys().any(|k| k != "python"))
        || poetry
            .and_then(|p| p.get("group"))
            .and_then(|g| g.as_table())
            .is_some_and(|g| g.values().any(|g| nonempty(g.get("dependencies"))))
        || nonempty(poetry.and_then(|p| p.get("dev-dependencies")))
}

fn package_json_declares(j: &Value) -> bool {
    [
        "dependencies",
        "devDependencies",
        "optionalDependencies",
        "peerDependencies",
    ]
    .iter()
    .any(|k| {
        j.get(k)
            .and_then(Value::as_object)
            .is_some_and(|o| !o.is_empty())
    })
}

/// One requirement of a requirements file.
#[derive(Debug, PartialEq, Eq)]
struct Requirement {
    /// The line it starts on.
    line: u64,
    kind: ReqKind,
    /// Has `--hash=sha256:` (or sha384, sha512: pip's other accepted digests).
    hashed: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum ReqKind {
    /// `name==1.2.3` (or `===`).
    Pinned,
    /// A specifier other than an exact `==`, or none.
    Range,
    /// `name @ URL`, a bare URL or a path.
    Url,
    /// `-e` / `--editable`.
    Editable,
}

impl Requirement {
    /// Why it is not pinned, or `None` when it is.
    fn unpinned(&self) -> Option<String> {
        let why = match self.kind {
            ReqKind::Pinned => return None,
            ReqKind::Range => "requirement is not pinned to an exact version with ==",
            ReqKind::Url => "requirement comes from a URL or a path, not a pinned version",
            ReqKind::Editable => "editable requirement (-e) is not pinned",
        };
        Some(why.into())
    }
}

/// The requirements of a requirements file, as pip reads it: a line ending in `\` goes on
/// with the next (a comment line ends it), `#` after whitespace starts a comment, a line
/// starting with `-` is an option (`-r`, `-c`, `--index-url`, a lone `--hash`), except
/// `-e` / `--editable`, which is a requirement.
fn requirements(text: &str) -> Vec<Requirement> {
    let mut out = Vec::new();
    for (line, logical) in logical_lines(text) {
        let l = strip_comment(&logical).trim();
        if l.is_empty() {
            continue;
        }
        let hashed = hash_re().is_match(l);
        let editable = l
            .strip_prefix("--editable")
            .or_else(|| l.strip_prefix("-e"));
        if editable.is_some() {
            out.push(Requirement {
                line,
                kind: ReqKind::Editable,
                hashed,
            });
            continue;
        }
        if l.starts_with('-') {
            continue;
        }
        // The requirement is every token before the first option.
        let req: Vec<&str> = l
            .split_whitespace()
            .take_while(|t| !t.starts_with('-'))
            .collect();
        let req = req.join(" ");
        out.push(Requirement {
            line,
            kind: classify(&req),
            hashed,
        });
    }
    out
}

/// Joins `\` continuations as pip does; each logical line with the number of its first line.
fn logical_lines(text: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(u64, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        let comment = line.trim_start().starts_with('#');
        match (line.strip_suffix('\\'), comment) {
            (Some(head), false) => cur
                .get_or_insert_with(|| (n, String::new()))
                .1
                .push_str(head),
            _ => match cur.take() {
                Some((first, mut joined)) => {
                    joined.push(' ');
                    joined.push_str(line);
                    out.push((first, joined));
                }
                None => out.push((n, line.to_string())),
            },
        }
    }
    out.extend(cur);
    out
}

/// Cuts a comment: `#` at the start or after whitespace (`#egg=` in a URL stays).
fn strip_comment(line: &str) -> &str {
    let b = line.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'#' && (i == 0 || b[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

fn hash_re() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        #[allow(clippy::expect_used)] // a constant pattern, tested
        regex::Regex::new(r"(?:^|\s)--hash(?:=|\s+)(?:sha256|sha384|sha512):[0-9a-fA-F]{32,}")
            .expect("the hash pattern compiles")
    })
}

/// The leading project name of a PEP 508 requirement.
fn project_name(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .unwrap_or(s.len());
    &s[..end]
}

/// Whether a requirement is pinned (by its text up to the first option).
fn classify(req: &str) -> ReqKind {
    let lower = req.to_ascii_lowercase();
    let url_start = [
        "http:", "https:", "file:", "git+", "hg+", "svn+", "bzr+", ".", "/", "~",
    ]
    .iter()
    .any(|p| lower.starts_with(p));
    if url_start || req.contains('@') || req.contains("://") {
        return ReqKind::Url;
    }
    // What follows the name: extras, then the specifiers, then `;` and the markers.
    let rest = &req[project_name(req).len()..];
    let rest = rest.split(';').next().unwrap_or("").trim_start();
    let rest = match rest.strip_prefix('[') {
        Some(r) => r.split_once(']').map_or("", |(_, r)| r),
        None => rest,
    };
    let specs = rest.trim().trim_start_matches('(').trim_end_matches(')');
    let exact = specs.split(',').any(|s| {
        let s = s.trim();
        match s.strip_prefix("===").or_else(|| s.strip_prefix("==")) {
            Some(v) => {
                let v = v.trim();
                !v.is_empty() && !v.contains('*')
            }
            None => false,
        }
    });
    if exact {
        ReqKind::Pinned
    } else {
        ReqKind::Range
    }
}

/// Every package of a lock without `integrity`: lockfile v2/v3 `packages` (not the root `""`,
/// a `link`, a bundled one or a workspace folder), or v1 `dependencies` (nested; not bundled
/// nor `file:`), named at the line of its key.
fn lock_integrity(rel: &str, bytes: &[u8], lock: &Value, out: &mut Vec<Finding>) {
    let has_integrity = |v: &Value| {
        v.get("integrity")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    let flag = |v: &Value, k: &str| v.get(k).and_then(Value::as_bool) == Some(true);
    if let Some(packages) = lock.get("packages").and_then(Value::as_object) {
        let lines = key_lines(bytes, |p| p.len() == 2 && p[0] == "packages");
        for (key, pkg) in packages {
            let installed = key.starts_with("node_modules/") || key.contains("/node_modules/");
            if !installed || flag(pkg, "link") || flag(pkg, "inBundle") || has_integrity(pkg) {
                continue;
            }
            let path = vec!["packages".to_string(), key.clone()];
            let line = lines.get(&path).copied().unwrap_or(1);
            out.push(finding(
                rel,
                line,
                "package-lock.integrity",
                "package has no integrity hash (npm cannot verify its tarball)".into(),
            ));
        }
        return;
    }
    let Some(deps) = lock.get("dependencies").and_then(Value::as_object) else {
        return;
    };
    let lines = key_lines(bytes, |p| {
        p.len() % 2 == 0 && p.iter().step_by(2).all(|k| k == "dependencies")
    });
    let mut stack: Vec<(Vec<String>, &serde_json::Map<String, Value>)> = vec![(Vec::new(), deps)];
    let mut found = Vec::new();
    while let Some((prefix, deps)) = stack.pop() {
        for (name, dep) in deps {
            let mut path = prefix.clone();
            path.push("dependencies".to_string());
            path.push(name.clone());
            let local = dep
                .get("version")
                .and_then(Value::as_str)
                .is_some_and(|v| v.starts_with("file:") || v.starts_with("link:"));
            if !flag(dep, "bundled") && !local && !has_integrity(dep) {
                let line = lines.get(&path).copied().unwrap_or(1);
                found.push(finding(
                    rel,
                    line,
                    "package-lock.integrity",
                    "package has no integrity hash (npm cannot verify its tarball)".into(),
                ));
            }
            if let Some(inner) = dep.get("dependencies").and_then(Value::as_object) {
                stack.push((path, inner));
            }
        }
    }
    found.sort_by_key(|f| f.line);
    out.extend(found);
}

/// The line of each object key whose path (the keys from the top) `want` accepts, in JSON
/// that serde_json has parsed (so it is valid). serde_json keeps no positions; this is the
/// few lines of a tokenizer that follows strings, objects and arrays.
fn key_lines(bytes: &[u8], want: impl Fn(&[String]) -> bool) -> HashMap<Vec<String>, u64> {
    enum Frame {
        Object { keyed: bool },
        Array,
    }
    let mut out = HashMap::new();
    let mut frames: Vec<Frame> = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut expect_key = false;
    let mut line = 1u64;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => line += 1,
            b'{' => {
                frames.push(Frame::Object { keyed: false });
                expect_key = true;
            }
            b'[' => {
                frames.push(Frame::Array);
                expect_key = false;
            }
            b'}' | b']' => {
                if let Some(Frame::Object { keyed: true }) = frames.pop() {
                    path.pop();
                }
                expect_key = false;
            }
            b',' => {
                if let Some(Frame::Object { keyed }) = frames.last_mut() {
                    if *keyed {
                        path.pop();
                        *keyed = false;
                    }
                    expect_key = true;
                }
            }
            b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if expect_key {
                    let end = (i + 1).min(bytes.len());
                    let key: String =
                        serde_json::from_slice(&bytes[start..end]).unwrap_or_default();
                    path.push(key);
                    if let Some(Frame::Object { keyed }) = frames.last_mut() {
                        *keyed = true;
                    }
                    if want(&path) {
                        out.insert(path.clone(), line);
                    }
                    expect_key = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

#[cfg(test)]
#[path = "deps_tests.rs"]
mod tests;
