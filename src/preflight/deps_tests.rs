//! The tree checks on fixture trees made in temp dirs: with `git init` (files added to the
//! index, so `git ls-files` lists them) and without git (the `ignore` walk).

use std::path::Path;
use std::process::Command;

use super::super::{Check, Status, Tree};
use super::*;

const H1: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const H2: &str = "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

/// A fixture tree: a temp dir, a git work tree or not.
struct Fixture {
    dir: tempfile::TempDir,
    git: bool,
}

impl Fixture {
    fn git() -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
            git: true,
        };
        f.run_git(&["init", "-q"]);
        f
    }

    fn plain() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            git: false,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> &Fixture {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    fn run_git(&self, args: &[&str]) {
        let out = Command::new("git")
            .arg("-C")
            .arg(self.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `git add -A` (in a git fixture), then the tree.
    fn tree(&self) -> Tree {
        if self.git {
            self.run_git(&["add", "-A"]);
        }
        let t = Tree::read(self.path()).unwrap();
        assert_eq!(t.git, self.git, "the fixture is (not) a work tree");
        t
    }
}

/// Every finding as (file, line, rule).
fn found(c: &Check) -> Vec<(&str, u64, &str)> {
    c.findings
        .iter()
        .map(|f| (f.file.as_str(), f.line, f.rule.as_str()))
        .collect()
}

fn assert_check(c: &Check, id: &str, status: Status, findings: &[(&str, u64, &str)]) {
    assert_eq!(c.id, id);
    assert_eq!(c.status, status, "{id}: {c:?}");
    assert_eq!(found(c), findings, "{id}");
}

fn hashed_requirements() -> String {
    format!(
        "# pip-compile --generate-hashes\n\
         --index-url https://pypi.org/simple\n\
         -r base-requirements.txt\n\
         \n\
         certifi==2024.2.2 \\\n    --hash={H1} \\\n    --hash={H2}\n    # via requests\n\
         requests[socks]==2.31.0 ; python_version >= \"3.8\" \\\n    --hash={H1}\n"
    )
}

// ---- the requirements parser ----

#[test]
fn preflight_requirements_parse_like_pip() {
    let text = hashed_requirements();
    let reqs = requirements(&text);
    let got: Vec<(u64, &ReqKind, bool)> =
        reqs.iter().map(|r| (r.line, &r.kind, r.hashed)).collect();
    assert_eq!(
        got,
        [(5, &ReqKind::Pinned, true), (9, &ReqKind::Pinned, true)]
    );
    let text = "a>=1\nb==1.*\nc===1.0\nd == 2.0  # comment\ne @ https://x/e.whl#egg=e\nhttps://x/f.whl\n\
                -e ./g\n--editable=git+https://x/h#egg=h\n./i\nj\nk[x]==1,<2\n--hash sha256:00\n";
    let reqs = requirements(text);
    let got: Vec<(u64, &ReqKind)> = reqs.iter().map(|r| (r.line, &r.kind)).collect();
    use ReqKind::*;
    let want = [
        (1, &Range),
        (2, &Range),
        (3, &Pinned),
        (4, &Pinned),
        (5, &Url),
        (6, &Url),
        (7, &Editable),
        (8, &Editable),
        (9, &Url),
        (10, &Range),
        (11, &Pinned),
    ];
    assert_eq!(got, want);
}

#[test]
fn preflight_key_lines_follow_nesting_and_strings() {
    let json = br#"{
  "a": "x,{\"y\"",
  "packages": {
    "": {"k": [1, {"packages": 2}]},
    "node_modules/b": {
      "v": "1"
    },
    "node_modules/c\"q": {}
  }
}"#;
    let lines = key_lines(json, |p| p.len() == 2 && p[0] == "packages");
    let key = |k: &str| vec!["packages".to_string(), k.to_string()];
    assert_eq!(lines.get(&key("")), Some(&4));
    assert_eq!(lines.get(&key("node_modules/b")), Some(&5));
    assert_eq!(lines.get(&key("node_modules/c\"q")), Some(&8));
    assert_eq!(lines.len(), 3);
}

// ---- deps.pinned, deps.hashes ----

#[test]
fn preflight_requirements_with_hashes_pass() {
    let f = Fixture::git();
    f.write("requirements.txt", hashed_requirements());
    f.write("base-requirements.txt", format!("idna==3.6 --hash={H1}\n"));
    let t = f.tree();
    assert_check(&pinned(&t), "deps.pinned", Status::Pass, &[]);
    assert_check(&hashes(&t), "deps.hashes", Status::Pass, &[]);
}

#[test]
fn preflight_requirements_without_hashes_or_pins_fail() {
    let f = Fixture::git();
    f.write(
        "svc/requirements-dev.txt",
        format!(
            "# dev\n\
             pytest>=8\n\
             numpy==1.26.4\n\
             private @ git+https://deploy:sEcReTtOkEn123@git.example.com/p.git\n\
             -e ./local\n\
             rich==13.7.0 \\\n    --hash={H1}\n\
             click==8.1.7 \\\n    --no-binary :all:\n"
        ),
    );
    let t = f.tree();
    let p = pinned(&t);
    assert_check(
        &p,
        "deps.pinned",
        Status::Fail,
        &[
            ("svc/requirements-dev.txt", 2, "requirements.unpinned"),
            ("svc/requirements-dev.txt", 4, "requirements.unpinned"),
            ("svc/requirements-dev.txt", 5, "requirements.unpinned"),
        ],
    );
    assert!(p.fix.contains("pip-compile"), "{}", p.fix);
    let h = hashes(&t);
    assert_check(
        &h,
        "deps.hashes",
        Status::Fail,
        &[
            ("svc/requirements-dev.txt", 2, "requirements.hash_missing"),
            ("svc/requirements-dev.txt", 3, "requirements.hash_missing"),
            ("svc/requirements-dev.txt", 4, "requirements.hash_missing"),
            ("svc/requirements-dev.txt", 5, "requirements.hash_missing"),
            ("svc/requirements-dev.txt", 8, "requirements.hash_missing"),
        ],
    );
    assert!(h.fix.contains("--generate-hashes"), "{}", h.fix);
    // The URL's token appears nowhere.
    for c in [&p, &h] {
        let all = serde_json::to_string(c).unwrap() + &c.summary;
        assert!(!all.contains("sEcReT") && !all.contains("deploy:"), "{all}");
    }
    // Nor any name read from a line: a pasted key would read as one.
    assert_eq!(
        p.findings[1].message,
        "requirement comes from a URL or a path, not a pinned version"
    );
    assert!(
        p.findings
            .iter()
            .chain(&h.findings)
            .all(|f| !f.message.contains("pytest"))
    );
}

fn lock_v3(with_integrity: bool) -> String {
    let integrity = if with_integrity {
        r#",
      "integrity": "sha512-AAAA""#
    } else {
        ""
    };
    format!(
        r#"{{
  "name": "agent",
  "lockfileVersion": 3,
  "requires": true,
  "packages": {{
    "": {{
      "name": "agent",
      "workspaces": ["packages/*"],
      "dependencies": {{ "left-pad": "^1.3.0" }}
    }},
    "node_modules/left-pad": {{
      "version": "1.3.0",
      "resolved": "https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz"{integrity}
    }},
    "node_modules/tool": {{
      "resolved": "packages/tool",
      "link": true
    }},
    "packages/tool": {{
      "version": "0.1.0"
    }},
    "node_modules/left-pad/node_modules/inner": {{
      "version": "2.0.0",
      "integrity": "sha512-BBBB"
    }}
  }}
}}
"#
    )
}

#[test]
fn preflight_package_lock_v3_with_integrity_passes() {
    let f = Fixture::git();
    f.write("package.json", r#"{"name": "agent", "workspaces": ["packages/*"], "dependencies": {"left-pad": "^1.3.0"}}"#);
    f.write("package-lock.json", lock_v3(true));
    f.write(
        "packages/tool/package.json",
        r#"{"name": "tool", "dependencies": {"left-pad": "^1.3.0"}}"#,
    );
    let t = f.tree();
    assert_check(&pinned(&t), "deps.pinned", Status::Pass, &[]);
    assert_check(&hashes(&t), "deps.hashes", Status::Pass, &[]);
}

#[test]
fn preflight_package_lock_v3_without_integrity_fails_at_the_key() {
    let f = Fixture::git();
    f.write(
        "package.json",
        r#"{"dependencies": {"left-pad": "^1.3.0"}}"#,
    );
    f.write("package-lock.json", lock_v3(false));
    let t = f.tree();
    let h = hashes(&t);
    assert_check(
        &h,
        "deps.hashes",
        Status::Fail,
        &[("package-lock.json", 11, "package-lock.integrity")],
    );
    assert!(
        h.findings[0].message.contains("no integrity"),
        "{}",
        h.findings[0].message
    );
    assert!(h.fix.contains("npm install"), "{}", h.fix);
}

#[test]
fn preflight_package_lock_v1_nested_and_invalid() {
    let f = Fixture::git();
    f.write(
        "a/package-lock.json",
        r#"{
  "lockfileVersion": 1,
  "dependencies": {
    "ok": { "version": "1.0.0", "integrity": "sha512-A", "requires": { "bad": "^1" } },
    "bad": {
      "version": "1.0.0",
      "dependencies": {
        "deep": { "version": "2.0.0" },
        "bundled": { "version": "1.0.0", "bundled": true }
      }
    },
    "local": { "version": "file:../local" }
  }
}
"#,
    );
    f.write("b/package-lock.json", "{\n  \"packages\": {\n    oops\n}\n");
    let t = f.tree();
    assert_check(
        &hashes(&t),
        "deps.hashes",
        Status::Fail,
        &[
            ("a/package-lock.json", 5, "package-lock.integrity"),
            ("a/package-lock.json", 8, "package-lock.integrity"),
            ("b/package-lock.json", 3, "package-lock.invalid"),
        ],
    );
}

#[test]
fn preflight_manifests_need_their_locks() {
    let f = Fixture::git();
    f.write(
        "py/pyproject.toml",
        "[project]\nname = \"a\"\ndependencies = [\"httpx>=0.27\"]\n",
    );
    f.write(
        "py-locked/pyproject.toml",
        "[tool.poetry.dependencies]\npython = \"^3.11\"\nhttpx = \"*\"\n",
    );
    f.write("py-locked/poetry.lock", "");
    f.write(
        "py-tools/pyproject.toml",
        "[tool.ruff]\nline-length = 100\n",
    );
    f.write("js/package.json", r#"{"devDependencies": {"tsx": "^4"}}"#);
    f.write(
        "js-locked/package.json",
        r#"{"dependencies": {"tsx": "^4"}}"#,
    );
    f.write("js-locked/yarn.lock", "");
    f.write(
        "js/node_modules/x/package.json",
        r#"{"dependencies": {"y": "^1"}}"#,
    );
    f.write(
        "bin/Cargo.toml",
        "[package]\nname = \"b\"\nversion = \"0.1.0\"\n",
    );
    f.write("bin/src/main.rs", "fn main() {}\n");
    f.write(
        "lib/Cargo.toml",
        "[package]\nname = \"l\"\nversion = \"0.1.0\"\n",
    );
    f.write("lib/src/lib.rs", "");
    f.write(
        "explicit/Cargo.toml",
        "[package]\nname = \"e\"\n\n[[bin]]\nname = \"e\"\npath = \"e.rs\"\n",
    );
    f.write("ws/Cargo.toml", "[workspace]\nmembers = [\"tool\"]\n");
    f.write("ws/Cargo.lock", "");
    f.write("ws/tool/Cargo.toml", "[package]\nname = \"t\"\n");
    f.write("ws/tool/src/main.rs", "fn main() {}\n");
    f.write("bins/Cargo.toml", "[package]\nname = \"s\"\n");
    f.write("bins/src/bin/s.rs", "fn main() {}\n");
    f.write("pnpm/pnpm-workspace.yaml", "packages: [apps/*]\n");
    f.write("pnpm/pnpm-lock.yaml", "");
    f.write(
        "pnpm/apps/a/package.json",
        r#"{"dependencies": {"tsx": "^4"}}"#,
    );
    // A lock in an ancestor that is no workspace root does not lock this one.
    f.write("solo/package.json", r#"{"dependencies": {"tsx": "^4"}}"#);
    f.write(
        "solo/package-lock.json",
        r#"{"lockfileVersion": 3, "packages": {}}"#,
    );
    f.write(
        "solo/sub/package.json",
        r#"{"dependencies": {"tsx": "^4"}}"#,
    );
    let t = f.tree();
    let p = pinned(&t);
    assert_check(
        &p,
        "deps.pinned",
        Status::Fail,
        &[
            ("bin/Cargo.toml", 1, "cargo.lock_missing"),
            ("bins/Cargo.toml", 1, "cargo.lock_missing"),
            ("explicit/Cargo.toml", 1, "cargo.lock_missing"),
            ("js/package.json", 1, "package-json.lock_missing"),
            ("py/pyproject.toml", 1, "pyproject.lock_missing"),
            ("solo/sub/package.json", 1, "package-json.lock_missing"),
        ],
    );
    for want in ["Cargo.lock", "npm install", "uv lock"] {
        assert!(p.fix.contains(want), "{want}: {}", p.fix);
    }
}

#[test]
fn preflight_an_ignored_lock_is_no_lock() {
    let f = Fixture::git();
    f.write(".gitignore", "Cargo.lock\n");
    f.write("Cargo.toml", "[package]\nname = \"b\"\n");
    f.write("Cargo.lock", "");
    f.write("src/main.rs", "fn main() {}\n");
    let t = f.tree();
    assert_check(
        &pinned(&t),
        "deps.pinned",
        Status::Fail,
        &[("Cargo.toml", 1, "cargo.lock_missing")],
    );
    // Cargo.lock's checksums are not deps.hashes' business.
    assert_check(&hashes(&t), "deps.hashes", Status::Pass, &[]);
}

#[test]
fn preflight_unreadable_dependency_files_are_findings() {
    let f = Fixture::git();
    f.write("requirements.txt", b"flask==3.0.0\0\n");
    // A lock of 2 MiB is read (real ones are); one past 64 MiB is not.
    let mut big = String::from("{\"lockfileVersion\": 3, \"packages\": {}, \"pad\": \"");
    big.push_str(&"x".repeat(2 * 1024 * 1024));
    big.push_str("\"}\n");
    f.write("package-lock.json", big);
    f.write("sub/package-lock.json", vec![b' '; 64 * 1024 * 1024 + 1]);
    f.write("big/README", b"\0");
    let t = f.tree();
    assert_check(
        &pinned(&t),
        "deps.pinned",
        Status::Fail,
        &[("requirements.txt", 1, "unreadable")],
    );
    assert_check(
        &hashes(&t),
        "deps.hashes",
        Status::Fail,
        &[
            ("requirements.txt", 1, "unreadable"),
            ("sub/package-lock.json", 1, "unreadable"),
        ],
    );
}

#[test]
fn preflight_no_dependency_files_skip() {
    for f in [Fixture::git(), Fixture::plain()] {
        f.write("README.md", "hello\n");
        f.write(
            "node_modules/x/package.json",
            r#"{"dependencies": {"y": "^1"}}"#,
        );
        let t = f.tree();
        assert_check(&pinned(&t), "deps.pinned", Status::Skip, &[]);
        assert_check(&hashes(&t), "deps.hashes", Status::Skip, &[]);
        assert_check(&audit_in_ci(&t), "deps.audit_in_ci", Status::Skip, &[]);
    }
}

#[test]
fn preflight_outside_git_the_ignore_rules_decide() {
    let f = Fixture::plain();
    f.write(".gitignore", "build/\n");
    f.write("requirements.txt", "flask>=3\n");
    f.write("build/requirements.txt", "anything\n");
    let t = f.tree();
    assert_check(
        &pinned(&t),
        "deps.pinned",
        Status::Fail,
        &[("requirements.txt", 1, "requirements.unpinned")],
    );
    assert_check(
        &hashes(&t),
        "deps.hashes",
        Status::Fail,
        &[("requirements.txt", 1, "requirements.hash_missing")],
    );
}

// ---- deps.audit_in_ci ----

#[test]
fn preflight_audit_in_ci() {
    let f = Fixture::git();
    f.write("requirements.txt", format!("flask==3.0.0 --hash={H1}\n"));
    f.write(
        ".github/workflows/ci.yml",
        "jobs:\n  t:\n    steps:\n      # - run: pip-audit\n      - run: pytest\n",
    );
    let t = f.tree();
    let c = audit_in_ci(&t);
    assert_check(
        &c,
        "deps.audit_in_ci",
        Status::Warn,
        &[(".github/workflows/ci.yml", 1, "ci.audit_missing")],
    );
    assert!(c.fix.contains("pip-audit"));

    f.write(".github/workflows/audit.yml", "jobs:\n  a:\n    steps:\n      - run: pip install pip-audit && pip-audit -r requirements.txt\n");
    let t = f.tree();
    let c = audit_in_ci(&t);
    assert_check(&c, "deps.audit_in_ci", Status::Pass, &[]);
    assert!(
        c.summary.contains(".github/workflows/audit.yml:4"),
        "{}",
        c.summary
    );

    let g = Fixture::git();
    g.write("Cargo.toml", "[package]\nname = \"l\"\n");
    g.write(".gitlab-ci.yml", "audit:\n  script: cargo deny check\n");
    assert_check(
        &audit_in_ci(&g.tree()),
        "deps.audit_in_ci",
        Status::Pass,
        &[],
    );

    let h = Fixture::git();
    h.write("sub/package.json", "{}");
    h.write("docs/ci.md", "we run npm audit\n");
    assert_check(
        &audit_in_ci(&h.tree()),
        "deps.audit_in_ci",
        Status::Warn,
        &[("sub/package.json", 1, "ci.audit_missing")],
    );
}

// ---- secrets.dotenv_ignored ----

#[test]
fn preflight_dotenv_tracked_ignored_and_unignored() {
    let f = Fixture::git();
    f.write(".gitignore", ".env.local\n");
    f.write(".env", "A=1\n");
    f.write(".env.example", "A=\n");
    f.write("svc/.env.template", "A=\n");
    f.run_git(&["add", "-A"]);
    // Ignored only after it was tracked: still tracked.
    f.write(".gitignore", ".env.local\n.env\n");
    f.write(".env.local", "A=1\n");
    f.write("svc/.env.production", "A=1\n");
    let out = Command::new("git")
        .arg("-C")
        .arg(f.path())
        .args(["add", "-u"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let t = Tree::read(f.path()).unwrap();
    let c = dotenv_ignored(&t);
    assert_check(
        &c,
        "secrets.dotenv_ignored",
        Status::Fail,
        &[
            (".env", 1, "dotenv.tracked"),
            ("svc/.env.production", 1, "dotenv.not_ignored"),
        ],
    );
    assert!(
        c.fix.contains("git rm --cached") && c.fix.contains(".gitignore"),
        "{}",
        c.fix
    );
}

#[test]
fn preflight_dotenv_without_git() {
    let f = Fixture::plain();
    f.write(".env", "A=1\n");
    f.write(".env.sample", "A=\n");
    let t = f.tree();
    assert_check(
        &dotenv_ignored(&t),
        "secrets.dotenv_ignored",
        Status::Fail,
        &[(".env", 1, "dotenv.not_ignored")],
    );
    f.write(".gitignore", ".env\n");
    let t = f.tree();
    assert_check(
        &dotenv_ignored(&t),
        "secrets.dotenv_ignored",
        Status::Pass,
        &[],
    );
}

// ---- runtime.incident_plan ----

#[test]
fn preflight_incident_plan() {
    let f = Fixture::git();
    f.write("README.md", "");
    let c = incident_plan(&f.tree());
    assert_check(
        &c,
        "runtime.incident_plan",
        Status::Warn,
        &[("SECURITY.md", 1, "incident_plan.missing")],
    );
    assert!(c.fix.contains("SECURITY.md"));
    for plan in [
        "SECURITY.md",
        ".github/SECURITY.md",
        "INCIDENT_RESPONSE.md",
        "docs/incident-response/runbook.txt",
    ] {
        let g = Fixture::git();
        g.write(plan, "who revokes what\n");
        let c = incident_plan(&g.tree());
        assert_check(&c, "runtime.incident_plan", Status::Pass, &[]);
        assert!(c.summary.contains(plan), "{}", c.summary);
    }
}

// ---- all five ----

#[test]
fn preflight_a_clean_tree_passes_all_five() {
    for f in [Fixture::git(), Fixture::plain()] {
        f.write(".gitignore", ".env\n.env.*\n!.env.example\n");
        f.write(".env", "OPENAI_API_KEY=x\n");
        f.write(".env.example", "OPENAI_API_KEY=\n");
        f.write("requirements.txt", hashed_requirements());
        f.write("base-requirements.txt", format!("idna==3.6 --hash={H1}\n"));
        f.write(
            "web/package.json",
            r#"{"dependencies": {"left-pad": "^1.3.0"}}"#,
        );
        f.write("web/package-lock.json", lock_v3(true));
        f.write(
            ".github/workflows/ci.yml",
            "jobs:\n  a:\n    steps:\n      - uses: pypa/gh-action-pip-audit@v1\n",
        );
        f.write("SECURITY.md", "# Security\n");
        let t = f.tree();
        for c in [
            pinned(&t),
            hashes(&t),
            audit_in_ci(&t),
            dotenv_ignored(&t),
            incident_plan(&t),
        ] {
            assert_eq!(c.status, Status::Pass, "{c:?}");
            assert!(c.findings.is_empty());
        }
    }
}
