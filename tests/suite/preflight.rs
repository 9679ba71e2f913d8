//! Issue 14: `agentrun preflight [--profile P] [DIR] [--json | --sarif] [--history]` and the
//! `[preflight] require` gate, through the real binary, on fixture repositories each test
//! makes (`git init` in a temp dir). A finding is checked by id, file, line and rule; no
//! output format (nor stderr) holds a value or any 12-character fragment of one; the SARIF
//! validates against the pinned OASIS schema (`tests/fixtures/sarif-2.1.0-rtm.5.json`) with
//! the test venv's `jsonschema`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness::{As, Out, Scratch, is_root};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The declared secret's value (no built-in rule recognises it: only `--profile` finds it).
const VALUE: &str = "Pf7QmZ4tXw9RkLp2VnB8cYdHs3Ja6Ue1";
/// A GitHub classic token shape the built-in rule `github-token` recognises.
const GHP: &str = "ghp_R8kT2mWq9ZxV4bN7cLp3Hs6Jd1Fg5Ya0Ue2i";

const PROFILE: &str = "version = 1\n[secrets]\nAPI_KEY = \"env:API_KEY\"\n";

fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A git repository `name` in the scratch directory with `files`, committed.
fn repo(s: &Scratch, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = s.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    write(&dir, files);
    commit(&dir, "fixture");
    dir
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (rel, text) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
    }
}

fn commit(dir: &Path, msg: &str) {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "--allow-empty", "-m", msg]);
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `agentrun preflight [--profile P] DIR EXTRA...` with `API_KEY` in the environment.
fn preflight(s: &Scratch, profile: Option<&str>, dir: &Path, extra: &[&str]) -> Out {
    let mut r = s.agentrun().arg("preflight");
    if let Some(p) = profile {
        r = r.profile(p);
    }
    r.arg(dir).args(extra).env("API_KEY", VALUE).run()
}

fn json_report(s: &Scratch, profile: Option<&str>, dir: &Path, extra: &[&str]) -> (Out, Value) {
    let mut args = vec!["--json"];
    args.extend(extra);
    let o = preflight(s, profile, dir, &args);
    let doc = serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {o:?}"));
    (o, doc)
}

fn check<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {doc:#}"))
}

/// `(file, line, rule)` of each finding of `id`.
fn findings(doc: &Value, id: &str) -> Vec<(String, u64, String)> {
    check(doc, id)["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["file"].as_str().unwrap().to_string(),
                f["line"].as_u64().unwrap(),
                f["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn f(file: &str, line: u64, rule: &str) -> (String, u64, String) {
    (file.to_string(), line, rule.to_string())
}

/// The repository of the key in four kinds of file, each at a known line.
fn planted(s: &Scratch) -> PathBuf {
    let notebook = format!(
        "{{\n \"cells\": [\n  {{\n   \"cell_type\": \"code\",\n   \"source\": [\n    \"import os\\n\",\n    \"key = \\\"{VALUE}\\\"\\n\"\n   ]\n  }}\n ]\n}}\n"
    );
    let blob = base64(format!("{{\"auth\": \"Bearer {VALUE}\"}}").as_bytes());
    repo(
        s,
        "planted",
        &[
            ("app.py", &format!("import os\n\nAPI_KEY = \"{VALUE}\"\n")),
            ("analysis.ipynb", &notebook),
            (
                "config/settings.yaml",
                &format!("service:\n  url: https://api.example.com\n  api_key: {VALUE}\n"),
            ),
            (
                "deploy/blob.txt",
                &format!("# the deploy credentials\ndata: {blob}\n"),
            ),
            ("README.md", "nothing to see\n"),
        ],
    )
}

/// A declared key in a Python file, a notebook, a YAML config and a base64 blob: each found
/// by id, file, line and rule `value:API_KEY`; without `--profile` none of them (no rule
/// knows the value), and the check that needs the profile says SKIP.
#[test]
fn preflight_finds_the_declared_key_in_code_notebook_yaml_and_base64() {
    let s = Scratch::new();
    let dir = planted(&s);
    let (o, doc) = json_report(&s, Some(PROFILE), &dir, &[]);
    assert_eq!(o.code, 1, "{o:?}");
    assert_eq!(doc["passed"], false);
    assert_eq!(check(&doc, "secrets.hardcoded")["status"], "FAIL");
    assert_eq!(
        findings(&doc, "secrets.hardcoded"),
        vec![
            f("analysis.ipynb", 7, "value:API_KEY"),
            f("app.py", 3, "value:API_KEY"),
            f("config/settings.yaml", 3, "value:API_KEY"),
            f("deploy/blob.txt", 2, "value:API_KEY"),
        ],
        "{doc:#}"
    );
    for c in check(&doc, "secrets.hardcoded")["findings"]
        .as_array()
        .unwrap()
    {
        assert!(c["message"].as_str().unwrap().contains("API_KEY"), "{c}");
    }
    assert!(
        !check(&doc, "secrets.hardcoded")["fix"]
            .as_str()
            .unwrap()
            .is_empty()
    );

    // Without the profile: rules only. The value matches none, but `API_KEY = "..."` and
    // `api_key: <long literal>` look like credentials (the built-in `secret-assignment` rule,
    // the check's own `assignment`); the base64 blob is found by nothing.
    let (o, doc) = json_report(&s, None, &dir, &[]);
    assert_eq!(o.code, 1, "{o:?}");
    let found = findings(&doc, "secrets.hardcoded");
    assert!(
        found.iter().all(|(_, _, rule)| !rule.starts_with("value:")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|(file, line, _)| file == "app.py" && *line == 3),
        "{found:?}"
    );
    assert!(!found.iter().any(|(file, ..)| file == "deploy/blob.txt"));
    for id in [
        "secrets.runtime",
        "secrets.rotation",
        "permissions.scoped",
        "runtime.proxy",
        "runtime.access_logs",
    ] {
        assert_eq!(check(&doc, id)["status"], "SKIP", "{id}: {doc:#}");
    }
}

/// A declared value committed and removed in the next commit: the tree is clean, so only
/// `--history` finds it, naming the commit that added it, the file and the line.
#[test]
fn preflight_history_finds_a_removed_value_only_with_history() {
    let s = Scratch::new();
    let dir = repo(&s, "hist", &[("README.md", "a project\n")]);
    write(
        &dir,
        &[(
            "src/settings.py",
            &format!("DEBUG = True\nTOKEN = \"{VALUE}\"\nPORT = 8080\n"),
        )],
    );
    commit(&dir, "add settings");
    let added = git(&dir, &["rev-parse", "HEAD"]);
    write(
        &dir,
        &[(
            "src/settings.py",
            "import os\nDEBUG = True\nTOKEN = os.environ[\"API_KEY\"]\nPORT = 8080\n",
        )],
    );
    commit(&dir, "read the token from the environment");

    let (o, doc) = json_report(&s, Some(PROFILE), &dir, &[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        check(&doc, "secrets.hardcoded")["status"],
        "PASS",
        "{doc:#}"
    );

    let (o, doc) = json_report(&s, Some(PROFILE), &dir, &["--history"]);
    assert_eq!(o.code, 1, "{o:?}");
    let c = check(&doc, "secrets.hardcoded");
    assert_eq!(c["status"], "FAIL");
    assert_eq!(
        findings(&doc, "secrets.hardcoded"),
        vec![f("src/settings.py", 2, "value:API_KEY")],
        "{doc:#}"
    );
    let msg = c["findings"][0]["message"].as_str().unwrap();
    assert!(msg.contains(&added[..12]), "the commit {added}: {msg}");
    assert!(msg.contains("API_KEY"), "{msg}");

    // --history without --profile: nothing to look for, and it says so.
    let (o, doc) = json_report(&s, None, &dir, &["--history"]);
    assert_eq!(o.code, 0, "{o:?}");
    let summary = check(&doc, "secrets.hardcoded")["summary"]
        .as_str()
        .unwrap();
    assert!(summary.contains("--history needs --profile"), "{summary}");
}

/// A built-in rule's token (a GitHub classic token) found without `--profile`, by the
/// rule's id.
#[test]
fn preflight_finds_a_builtin_rule_token_without_a_profile() {
    let s = Scratch::new();
    let dir = repo(
        &s,
        "ghp",
        &[
            ("README.md", "docs\n"),
            (
                "scripts/release.sh",
                &format!("#!/bin/sh\nset -e\necho {GHP} | gh auth login --with-token\n"),
            ),
        ],
    );
    let (o, doc) = json_report(&s, None, &dir, &[]);
    assert_eq!(o.code, 1, "{o:?}");
    assert_eq!(
        findings(&doc, "secrets.hardcoded"),
        vec![f("scripts/release.sh", 3, "github-token")],
        "{doc:#}"
    );
}

/// A clean repository passes `secrets.hardcoded`, with and without the profile and the
/// history; placeholders assigned to credential names are not findings.
#[test]
fn preflight_passes_a_clean_repository() {
    let s = Scratch::new();
    let dir = repo(
        &s,
        "clean",
        &[
            ("README.md", "# a clean agent\n"),
            (
                "agent.py",
                "import os\nAPI_KEY = os.environ[\"API_KEY\"]\ntoken = \"${GITHUB_TOKEN}\"\npassword = \"changeme-changeme-changeme\"\n",
            ),
            ("config.yaml", "api_key: <your-api-key-goes-here>\n"),
        ],
    );
    for (profile, extra) in [
        (None, &[][..]),
        (Some(PROFILE), &[][..]),
        (Some(PROFILE), &["--history"][..]),
    ] {
        let (o, doc) = json_report(&s, profile, &dir, extra);
        let c = check(&doc, "secrets.hardcoded");
        assert_eq!(c["status"], "PASS", "{profile:?} {extra:?}: {doc:#}");
        assert_eq!(c["findings"], serde_json::json!([]));
        assert_eq!(doc["files_scanned"], 3, "{doc:#}");
        // Nothing else this test controls fails either (the deps checks may WARN or SKIP).
        assert_eq!(o.code, 0, "{o:?}");
    }
}

/// Every output (text, --json, --sarif; stdout and stderr, with and without --history) of a
/// repository holding the declared value (raw, base64, in the history) and a built-in
/// rule's token: none holds either value or any 12-character fragment of one.
#[test]
fn preflight_output_never_holds_a_value_or_a_fragment() {
    let s = Scratch::new();
    let dir = planted(&s);
    write(
        &dir,
        &[
            (
                "gh.txt",
                &format!("echo {GHP} | gh auth login --with-token\n"),
            ),
            ("old.py", &format!("secret = \"{VALUE}\"\n")),
        ],
    );
    commit(&dir, "more");
    std::fs::remove_file(dir.join("old.py")).unwrap();
    commit(&dir, "removed");
    let values = [VALUE.to_string(), GHP.to_string()];
    let mut seen = 0;
    for extra in [
        &[][..],
        &["--json"][..],
        &["--sarif"][..],
        &["--history"][..],
        &["--json", "--history"][..],
        &["--sarif", "--history"][..],
    ] {
        let o = preflight(&s, Some(PROFILE), &dir, extra);
        assert_eq!(o.code, 1, "{extra:?}: {o:?}");
        let all = format!("{}\n{}", o.stdout, o.stderr);
        assert!(all.contains("github-token"), "{extra:?}: {o:?}");
        assert!(all.contains("app.py"), "{extra:?}: {o:?}");
        for v in &values {
            for i in 0..=v.len() - 12 {
                let frag = &v[i..i + 12];
                assert!(
                    !all.contains(frag),
                    "{extra:?}: the fragment at {i} of a value is in the output"
                );
                seen += 1;
            }
        }
    }
    assert!(seen > 0);
}

/// Every check id (all 11) appears in every output format, with and without a profile.
#[test]
fn preflight_every_check_id_in_every_format() {
    let s = Scratch::new();
    let dir = repo(&s, "ids", &[("README.md", "x\n")]);
    let ids = [
        "secrets.hardcoded",
        "secrets.dotenv_ignored",
        "secrets.runtime",
        "secrets.rotation",
        "permissions.scoped",
        "deps.pinned",
        "deps.hashes",
        "deps.audit_in_ci",
        "runtime.proxy",
        "runtime.access_logs",
        "runtime.incident_plan",
    ];
    for profile in [None, Some(PROFILE)] {
        let text = preflight(&s, profile, &dir, &[]);
        for id in ids {
            assert!(
                text.stdout
                    .lines()
                    .any(|l| l.split_whitespace().nth(1) == Some(id)
                        && ["PASS", "FAIL", "WARN", "SKIP"]
                            .contains(&l.split_whitespace().next().unwrap_or(""))),
                "text: {id}: {text:?}"
            );
        }
        let (_, doc) = json_report(&s, profile, &dir, &[]);
        let got: Vec<&str> = doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(got, ids, "json");
        let sarif = preflight(&s, profile, &dir, &["--sarif"]);
        let doc: Value = serde_json::from_str(&sarif.stdout).unwrap();
        let rules: Vec<&str> = doc["runs"][0]["tool"]["driver"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(rules, ids, "sarif");
    }
}

/// The test venv's Python, with `jsonschema` (`.ci/requirements-test.txt`).
fn venv_python() -> PathBuf {
    super::servers::venv_bin("python")
}

const VALIDATE: &str = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
doc = json.load(open(sys.argv[2]))
jsonschema.Draft7Validator.check_schema(schema)
errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
for e in errors:
    print("/".join(map(str, e.path)), e.message[:200])
sys.exit(1 if errors else 0)
"#;

/// Validates `doc` against the pinned SARIF 2.1.0 schema: the validator's output and
/// whether it passed.
fn sarif_valid(s: &Scratch, doc: &Value) -> (bool, String) {
    let schema =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sarif-2.1.0-rtm.5.json");
    let file = s.path().join("report.sarif");
    std::fs::write(&file, serde_json::to_vec(doc).unwrap()).unwrap();
    let o = Command::new(venv_python())
        .args(["-c", VALIDATE])
        .arg(&schema)
        .arg(&file)
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.code().is_some_and(|c| c <= 1) && !out.contains("Traceback"),
        "the validator did not run: {out}"
    );
    (o.status.success(), out)
}

/// `--sarif` validates against the pinned SARIF 2.1.0 schema, for a report with findings
/// (each a result with a physicalLocation and region.startLine at the finding's line) and
/// one that passes; a document without `version` does not (the validator works).
#[test]
fn preflight_sarif_validates_against_the_pinned_schema() {
    let s = Scratch::new();
    let dirty = planted(&s);
    let clean = repo(&s, "clean", &[("README.md", "ok\n")]);

    let o = preflight(&s, Some(PROFILE), &dirty, &["--sarif"]);
    assert_eq!(o.code, 1, "{o:?}");
    let doc: Value = serde_json::from_str(&o.stdout).unwrap();
    let (ok, why) = sarif_valid(&s, &doc);
    assert!(ok, "findings: {why}");
    assert_eq!(doc["version"], "2.1.0");
    let results = doc["runs"][0]["results"].as_array().unwrap();
    let mut located: Vec<(String, u64)> = results
        .iter()
        .filter(|r| r["ruleId"] == "secrets.hardcoded")
        .map(|r| {
            let l = &r["locations"][0]["physicalLocation"];
            (
                l["artifactLocation"]["uri"].as_str().unwrap().to_string(),
                l["region"]["startLine"].as_u64().unwrap(),
            )
        })
        .collect();
    located.sort();
    assert_eq!(
        located,
        vec![
            ("analysis.ipynb".to_string(), 7),
            ("app.py".to_string(), 3),
            ("config/settings.yaml".to_string(), 3),
            ("deploy/blob.txt".to_string(), 2),
        ]
    );
    for r in results {
        assert!(
            r["locations"][0]["physicalLocation"]["region"]["startLine"].as_u64() >= Some(1),
            "{r}"
        );
        // A FAIL's results are errors, a WARN's warnings (the incident plan's, here).
        let want = if r["ruleId"] == "runtime.incident_plan" {
            "warning"
        } else {
            "error"
        };
        assert_eq!(r["level"], want, "{r}");
    }

    let o = preflight(&s, Some(PROFILE), &clean, &["--sarif"]);
    assert_eq!(o.code, 0, "{o:?}");
    let doc: Value = serde_json::from_str(&o.stdout).unwrap();
    let (ok, why) = sarif_valid(&s, &doc);
    assert!(ok, "passing: {why}");

    let mut broken = doc.clone();
    broken.as_object_mut().unwrap().remove("version");
    let (ok, why) = sarif_valid(&s, &broken);
    assert!(!ok, "a document without version validated");
    assert!(why.contains("version"), "{why}");
    let mut broken = doc;
    broken["runs"][0]["results"] =
        serde_json::json!([{"message": {"text": "x"}, "level": "fatal"}]);
    assert!(
        !sarif_valid(&s, &broken).0,
        "a result with level fatal validated"
    );
}

/// `[preflight] require = ["secrets.hardcoded"]`: a run on the dirty repository refuses
/// (125) with the finding and the fix, and the audit log's `preflight` event says
/// passed=false; `check` says not ready (1); on a clean repository the run starts (0).
#[test]
fn preflight_require_blocks_a_run_and_lets_a_clean_one_start() {
    let s = Scratch::new();
    let dirty = planted(&s);
    let clean = repo(&s, "clean", &[("README.md", "ok\n")]);
    let gate = |dir: &Path| {
        format!(
            "{PROFILE}[preflight]\ndir = \"{}\"\nrequire = [\"secrets.hardcoded\"]\n",
            dir.display()
        )
    };
    let o = s
        .agentrun()
        .profile(&gate(&dirty))
        .args(["--", "true"])
        .env("API_KEY", VALUE)
        .run();
    assert_eq!(o.code, 125, "{o:?}");
    assert!(o.stderr.contains("secrets.hardcoded"), "{o:?}");
    assert!(o.stderr.contains("app.py:3"), "{o:?}");
    assert!(o.stderr.contains("value:API_KEY"), "{o:?}");
    assert!(o.stderr.contains("fix: remove the value"), "{o:?}");
    assert!(!o.stderr.contains(&VALUE[..12]) && !o.stdout.contains(&VALUE[..12]));
    let events = o.audit_events();
    let pf: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "preflight")
        .collect();
    assert_eq!(pf.len(), 1, "{events:#?}");
    assert_eq!(pf[0]["passed"], false, "{:#}", pf[0]);
    assert!(
        pf[0]["failed"]
            .as_array()
            .is_some_and(|a| a.iter().any(|id| id == "secrets.hardcoded")),
        "{:#}",
        pf[0]
    );

    let c = s
        .agentrun()
        .profile(&gate(&dirty))
        .arg("check")
        .env("API_KEY", VALUE)
        .run();
    assert_eq!(c.code, 1, "{c:?}");
    assert!(
        format!("{}{}", c.stdout, c.stderr).contains("secrets.hardcoded"),
        "{c:?}"
    );

    let o = s
        .agentrun()
        .profile(&gate(&clean))
        .args(["--", "true"])
        .env("API_KEY", VALUE)
        .run();
    assert_eq!(o.code, 0, "{o:?}");
    let events = o.audit_events();
    let last = events.iter().rfind(|e| e["event"] == "preflight").unwrap();
    assert_eq!(last["passed"], true, "{last:#}");
    let c = s
        .agentrun()
        .profile(&gate(&clean))
        .arg("check")
        .env("API_KEY", VALUE)
        .run();
    assert_eq!(c.code, 0, "{c:?}");
}

/// A DIR that does not exist, or is a file: 125 with a message naming it and what to give.
#[test]
fn preflight_bad_dir_is_125_with_a_clear_message() {
    let s = Scratch::new();
    let file = s.file("notadir.txt", "x\n");
    for (dir, says) in [
        (s.path().join("missing"), "no such directory"),
        (file, "not a directory"),
    ] {
        for extra in [&[][..], &["--json"][..], &["--sarif"][..]] {
            let o = preflight(&s, None, &dir, extra);
            assert_eq!(o.code, 125, "{o:?}");
            assert!(o.stderr.contains(says), "{o:?}");
            assert!(
                o.stderr.contains(&dir.display().to_string()),
                "names the DIR: {o:?}"
            );
            assert!(o.stdout.is_empty(), "{o:?}");
        }
    }
}

/// An unreadable file inside the tree (mode 000, agentrun running as nobody): reported by
/// name with the error, counted, and skipped; never fatal, the other files still scanned.
#[test]
fn preflight_unreadable_file_is_reported_and_skipped() {
    let s = Scratch::new();
    let dir = s.path().join("tree");
    write(
        &dir,
        &[
            ("locked.txt", "nothing\n"),
            ("leak.sh", &format!("export T={GHP}\n")),
        ],
    );
    s.hand_to(As::Nobody);
    std::fs::set_permissions(
        dir.join("locked.txt"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        s.agentrun()
            .arg("preflight")
            .arg(&dir)
            .args(extra)
            .as_nobody()
            .run()
    };
    let o = run(&["--json"]);
    assert_eq!(o.code, 1, "{o:?}");
    let doc: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        doc["skipped"]["unreadable"][0]["file"], "locked.txt",
        "{doc:#}"
    );
    assert!(
        doc["skipped"]["unreadable"][0]["error"]
            .as_str()
            .unwrap()
            .contains("ermission denied"),
        "{doc:#}"
    );
    assert_eq!(
        findings(&doc, "secrets.hardcoded"),
        vec![f("leak.sh", 1, "github-token")]
    );
    assert!(
        check(&doc, "secrets.hardcoded")["summary"]
            .as_str()
            .unwrap()
            .contains("1 unreadable"),
        "{doc:#}"
    );
    let o = run(&[]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stdout.contains("locked.txt: skipped (Permission denied"),
        "{o:?}"
    );
    if is_root() {
        // Root reads a mode-000 file: the same tree passes through with nothing skipped.
        let o = s.agentrun().arg("preflight").arg(&dir).arg("--json").run();
        let doc: Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(
            doc["skipped"]["unreadable"],
            serde_json::json!([]),
            "{doc:#}"
        );
    }
}

/// An unreadable directory inside a tree that is not a git work tree: reported (the walk's
/// error, naming it), not fatal.
#[test]
fn preflight_unreadable_directory_is_reported_not_fatal() {
    let s = Scratch::new();
    let dir = s.path().join("tree");
    write(
        &dir,
        &[("private/x.txt", "x\n"), ("leak.sh", &format!("T={GHP}\n"))],
    );
    s.hand_to(As::Nobody);
    std::fs::set_permissions(dir.join("private"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let o = s
        .agentrun()
        .arg("preflight")
        .arg(&dir)
        .arg("--json")
        .as_nobody()
        .run();
    assert_eq!(o.code, 1, "{o:?}");
    let doc: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        findings(&doc, "secrets.hardcoded"),
        vec![f("leak.sh", 1, "github-token")]
    );
    let unreadable = doc["skipped"]["unreadable"].as_array().unwrap();
    assert!(
        unreadable.iter().any(|u| u["file"] == "private"),
        "the unreadable directory is reported: {doc:#}"
    );
}

/// Symlink loops (a directory linking to itself, two links to each other) in a tree that
/// is not a git work tree: not followed, the walk ends, the real files are scanned.
#[test]
fn preflight_symlink_loop_ends() {
    let s = Scratch::new();
    let dir = s.path().join("tree");
    write(&dir, &[("src/main.py", &format!("T = '{GHP}'\n"))]);
    std::os::unix::fs::symlink(".", dir.join("src/self")).unwrap();
    std::os::unix::fs::symlink("b", dir.join("a")).unwrap();
    std::os::unix::fs::symlink("a", dir.join("b")).unwrap();
    std::os::unix::fs::symlink("../..", dir.join("src/up")).unwrap();
    let mut child = s
        .agentrun()
        .arg("preflight")
        .arg(&dir)
        .arg("--json")
        .spawn();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            panic!("preflight did not finish on a tree with symlink loops");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o: Out = child.wait_with_output().unwrap().into();
    assert_eq!(o.code, 1, "{o:?}");
    let doc: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        findings(&doc, "secrets.hardcoded"),
        vec![f("src/main.py", 1, "github-token")],
        "{doc:#}"
    );
    assert_eq!(doc["files_scanned"], 1, "{doc:#}");
}

/// A `.gitignore` with odd patterns (negation, `**`, trailing spaces, an escaped `#`, a
/// comment, a bad glob): outside a work tree, the files scanned are the ones git itself
/// would keep (asked of git in a copy of the tree), and a token in an ignored file is not
/// a finding.
#[test]
fn preflight_gitignore_odd_patterns_match_git() {
    let s = Scratch::new();
    let gitignore = "# a comment\n*.log\n!keep.log\n**/build/\nsecret.txt   \n\\#notes\nlogs/**/*.tmp\n[unclosed\n";
    let files: Vec<(&str, String)> = [
        "debug.log",
        "keep.log",
        "a/b/build/out.txt",
        "build/top.txt",
        "secret.txt",
        "#notes",
        "logs/x/y/z.tmp",
        "logs/x/y/z.txt",
        "main.py",
    ]
    .iter()
    .map(|n| (*n, format!("t = \"{GHP}\"\n")))
    .collect();
    let mut all: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    all.push((".gitignore", gitignore));
    let dir = s.path().join("tree");
    write(&dir, &all);
    // What git keeps, in a copy.
    let copy = s.path().join("copy");
    write(&copy, &all);
    git(&copy, &["init", "-q"]);
    let kept = git(&copy, &["ls-files", "--others", "--exclude-standard"]);
    let mut want: Vec<&str> = kept
        .lines()
        .filter(|l| *l != ".gitignore")
        .map(|l| l.trim_matches('"'))
        .collect();
    want.sort();

    let (o, doc) = json_report(&s, None, &dir, &[]);
    assert_eq!(o.code, 1, "{o:?}");
    let mut got: Vec<String> = findings(&doc, "secrets.hardcoded")
        .into_iter()
        .map(|(file, line, rule)| {
            assert_eq!((line, rule.as_str()), (1, "github-token"), "{file}");
            file
        })
        .collect();
    got.sort();
    assert_eq!(got, want, "the files git keeps: {doc:#}");
    assert!(got.contains(&"keep.log".to_string()) && got.contains(&"main.py".to_string()));
}

/// A DIR that cannot be listed (mode 000, agentrun as nobody) and a profile that cannot be
/// used: 125, each with a message naming it.
#[test]
fn preflight_unlistable_dir_and_bad_profile_are_125() {
    let s = Scratch::new();
    let dir = s.path().join("tree");
    write(&dir, &[("a.txt", "x\n")]);
    s.hand_to(As::Nobody);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o000)).unwrap();
    let o = s.agentrun().arg("preflight").arg(&dir).as_nobody().run();
    assert_eq!(o.code, 125, "{o:?}");
    assert!(o.stderr.contains("cannot be listed"), "{o:?}");
    assert!(o.stderr.contains(&dir.display().to_string()), "{o:?}");

    // The profiles (a scratch of root's own: nobody's profile directory is refused).
    let s = Scratch::new();
    let o = s
        .agentrun()
        .args(["preflight", "--profile", "no-such-profile"])
        .arg(s.path())
        .run();
    assert_eq!(o.code, 125, "{o:?}");
    assert!(o.stderr.contains("no-such-profile"), "{o:?}");
    let o = s
        .agentrun()
        .arg("preflight")
        .profile("version = 1\n[secrets]\nAPI_KEY = 42\n")
        .arg(s.path())
        .run();
    assert_eq!(o.code, 125, "{o:?}");
    assert!(o.stderr.contains("API_KEY"), "{o:?}");
}
