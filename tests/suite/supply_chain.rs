//! agentrun's own supply chain and integrations (issue 16): `.ci/deny` fails on a known
//! advisory, every Python requirements file stays pinned with hashes, the release build
//! carries its dependency list, and the systemd unit and GitHub workflow in `examples/` pass
//! their tools and work as their comments say.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness::require;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn on_path(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `.ci/deny` with the repository's own deny.toml and advisory snapshot fails on a lock that
/// pins `time` 0.3.45 (RUSTSEC-2026-0009, the advisory the landed lock had): a tiny crate
/// made here, its lock resolved from the registry (cargo's cache when it has the crates).
#[test]
fn deny_fails_on_a_lock_with_a_known_advisory() {
    if !require(
        "deny_fails_on_a_lock_with_a_known_advisory",
        on_path("cargo-deny"),
        "cargo-deny is not installed (.ci/deny installs it)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/lib.rs"), "").unwrap();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        "[package]\nname = \"old-time-lock\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
         license = \"MIT\"\npublish = false\n\n[dependencies]\ntime = \"=0.3.45\"\n",
    )
    .unwrap();
    let lock = |offline: bool| {
        let mut c = Command::new("cargo");
        c.arg("generate-lockfile").current_dir(dir.path());
        if offline {
            c.arg("--offline");
        }
        c.output().unwrap()
    };
    let o = lock(true);
    let o = if o.status.success() { o } else { lock(false) };
    assert!(o.status.success(), "cargo generate-lockfile: {}", text(&o));
    // cargo-deny reads the crates' manifests: have them in cargo's cache.
    let o = Command::new("cargo")
        .args(["fetch", "--locked"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "cargo fetch: {}", text(&o));

    let o = Command::new(root().join(".ci/deny"))
        .arg(dir.path().join("Cargo.toml"))
        .output()
        .unwrap();
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("RUSTSEC-2026-0009"), "{t}");
    assert!(
        t.contains("advisory snapshot of "),
        "the snapshot's date is printed: {t}"
    );
    // Only the advisory fails: the same config passes the tiny crate's licences, bans and
    // sources, so the failure above is the advisory's.
    assert!(
        t.contains("advisories FAILED, bans ok, licenses ok, sources ok"),
        "{t}"
    );
}

/// The requirements files in the repository: every tracked `*requirements*.txt`.
fn requirements_files() -> Vec<PathBuf> {
    let o = Command::new("git")
        .args(["ls-files", "-z", "--", "*requirements*.txt"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(o.status.success(), "git ls-files: {}", text(&o));
    o.stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(String::from_utf8(p.to_vec()).unwrap()))
        .collect()
}

/// agentrun's own `preflight` (which `our_own_dependencies_are_pinned_hashed_and_audited`
/// runs on the repository) sees every requirements file: in a copy of each one, an added
/// line without `==` fails `deps.pinned` and one without `--hash` fails `deps.hashes`, each
/// naming that file. A requirements file preflight would not look at (a name it does not
/// know) fails here instead of passing unchecked.
#[test]
fn a_broken_line_in_any_requirements_file_fails_preflight() {
    let files = requirements_files();
    for want in [
        ".ci/requirements-test.txt",
        "bench/requirements-mitmproxy.txt",
        "bench/requirements-preflight.txt",
    ] {
        assert!(
            files.iter().any(|f| f == Path::new(want)),
            "{want}: {files:?}"
        );
    }
    let zeros = "0".repeat(64);
    let breaks = [
        (
            "deps.pinned",
            format!("zzpkg>=1.0 \\\n    --hash=sha256:{zeros}\n"),
        ),
        ("deps.hashes", "zzpkg==1.0\n".to_string()),
    ];
    for rel in &files {
        let original = std::fs::read_to_string(root().join(rel)).unwrap();
        for (check, line) in &breaks {
            let dir = tempfile::tempdir().unwrap();
            let copy = dir.path().join(rel);
            std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
            std::fs::write(&copy, format!("{original}{line}")).unwrap();
            let o = Command::new(crate::harness::bin())
                .args(["preflight", "--json"])
                .arg(dir.path())
                .env_remove("AGENTRUN_PROFILE")
                .output()
                .unwrap();
            let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let c = doc["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["id"] == *check)
                .unwrap();
            assert_eq!(c["status"], "FAIL", "{}: {check}: {c}", rel.display());
            assert!(
                c.to_string().contains(&rel.display().to_string()),
                "{}: the finding names the file: {c}",
                rel.display()
            );
        }
    }
}
