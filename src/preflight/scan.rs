//! `secrets.hardcoded`: the declared values (and every encoding the redactor knows of them),
//! the redactor's built-in rules, and assignments of long literals to credential-looking
//! names, in every scanned file; with `--history`, the declared values in every commit.
//!
//! The redactor is the matcher: what it would take out of the agent's output is what is
//! found in its code. A file is run through it whole first (most files have nothing); only a
//! file with a match is looked at line by line, to name the line (a match that spans lines,
//! a wrapped base64 or a key block, is named at the line where it ends).
//!
//! Findings carry the file, the line, the rule (`value:NAME` for a declared value, the
//! built-in rule's id, or `assignment`) and a message; never the matched text.

use std::collections::BTreeMap;
use std::process::Stdio;

use regex::bytes::Regex;

use super::tree::Skipped;
use super::{Check, Finding, Status, Tree};
use crate::redact::Redactor;

/// What a scan needs: the redactor over the declared values and the built-in rules, and a
/// second one over the values alone (for the history); the declared names.
pub struct Matchers<'a> {
    pub all: &'a Redactor,
    pub values: Option<&'a Redactor>,
    pub names: &'a [String],
}

/// The redactor's generic rules: any `token=…` or `"password": "…"`, whatever the value.
/// Right for output (a redactor may take out too much), wrong for code, where
/// `TOKEN = os.environ["API_KEY"]` is the fix, not a finding: the scan's own
/// [`assignment`] (which knows placeholders) looks at those lines instead.
const GENERIC_RULES: [&str; 2] = ["secret-assignment", "secret-field"];

/// The counts one pass of `r` over `bytes` finds, per secret name or rule id (the
/// [`GENERIC_RULES`] left out).
fn counts(r: &Redactor, bytes: &[u8]) -> BTreeMap<String, u64> {
    let mut s = r.stream();
    let mut out = Vec::with_capacity(bytes.len());
    s.finish_with(bytes, &mut out);
    let mut c = s.counts().clone();
    c.retain(|name, _| !GENERIC_RULES.contains(&name.as_str()));
    c
}

/// Credential-looking names assigned a long literal: `api_key = "…"`, `"token": "…"`,
/// `AWS_SECRET_ACCESS_KEY=…`. Placeholders (`${X}`, `<x>`, `changeme`, `xxx…`) are not findings.
fn assignment() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        #[allow(clippy::expect_used)] // a constant pattern, tested
        Regex::new(
            r#"(?ix)
            (?:^|[^a-z0-9_])
            ["']?[a-z0-9_.-]*(?:api[_-]?key|secret|token|passw(?:or)?d|credential|private[_-]?key|access[_-]?key|auth)[a-z0-9_]*["']?
            \s*(?::|=|:=|=>)\s*
            (?:["']([^"'\s]{16,})["']|([A-Za-z0-9+/=_\-]{20,})(?:\s|$))"#,
        )
        .expect("the assignment pattern compiles")
    })
}

fn placeholder(v: &[u8]) -> bool {
    let s = String::from_utf8_lossy(v).to_ascii_lowercase();
    s.starts_with("${")
        || s.starts_with("$(")
        || s.starts_with('<')
        || s.starts_with('{')
        || s.starts_with("%(")
        || s.contains("changeme")
        || s.contains("example")
        || s.contains("placeholder")
        || s.contains("your")
        || s.bytes()
            .all(|b| b == b'x' || b == b'*' || b == b'.' || b == b'-' || b == b'_')
        || s.starts_with("os.environ")
        || s.starts_with("process.env")
}

/// Scans every file of the tree (in parallel) and, with `history`, the git history.
pub fn hardcoded(tree: &Tree, m: &Matchers, history: bool, skipped: &mut Skipped) -> (Check, u64) {
    let files: Vec<&super::TreeFile> = tree.scanned().collect();
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let chunk = files.len().div_ceil(threads).max(1);
    let results: Vec<(Vec<Finding>, Skipped, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let mut findings = Vec::new();
                    let mut skipped = Skipped::default();
                    let mut scanned = 0;
                    for f in part {
                        // A symlink's content (what git commits) is its target's text.
                        let path = tree.root.join(&f.rel);
                        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink()) {
                            if let Ok(target) = std::fs::read_link(&path) {
                                let t = target.as_os_str().as_encoded_bytes();
                                for name in counts(m.all, t).keys() {
                                    let mut x = finding(&f.rel, 1, name, m.names, false);
                                    x.message.push_str(" (in the symlink's target)");
                                    findings.push(x);
                                }
                            }
                            continue;
                        }
                        let before = skipped.binary + skipped.large;
                        if let Some(text) = tree.text(f, &mut skipped) {
                            scanned += 1;
                            findings.extend(scan_file(&f.rel, &text, m));
                        } else if skipped.binary + skipped.large > before
                            && let Some(v) = m.values
                        {
                            // Binary or large: not read for the rules, but searched for the
                            // declared values (no false positives), streamed (review 14, F6).
                            findings.extend(scan_raw(tree, f, v, m.names));
                        }
                    }
                    (findings, skipped, scanned)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut findings = Vec::new();
    // File names are committed too (review 14b, F-5): all at once first, one by one only if
    // something matched.
    let names: Vec<u8> = files
        .iter()
        .flat_map(|f| f.rel.bytes().chain(std::iter::once(b'\n')))
        .collect();
    if !counts(m.all, &names).is_empty() {
        for f in &files {
            for name in counts(m.all, f.rel.as_bytes()).keys() {
                let mut x = finding(&f.rel, 1, name, m.names, false);
                x.message.push_str(" (in the file's name)");
                findings.push(x);
            }
        }
    }
    let mut scanned = 0;
    // What the walk could not read (a directory, a `.gitignore` line) is reported with the
    // files that could not be read: skipped, never fatal.
    skipped.unreadable.extend(tree.walk_errors.iter().cloned());
    for (f, s, n) in results {
        findings.extend(f);
        skipped.binary += s.binary;
        skipped.large += s.large;
        skipped.unreadable.extend(s.unreadable);
        scanned += n;
    }
    let mut summary = format!(
        "{scanned} file(s) scanned; skipped {} binary, {} over 1 MiB, {} unreadable or unusable",
        skipped.binary,
        skipped.large,
        skipped.unreadable.len()
    );
    let mut history_failed = false;
    if history {
        match (m.values, tree.git) {
            (Some(v), true) => match scan_history(tree, v, m.names) {
                Ok(h) => findings.extend(h),
                Err(e) => {
                    history_failed = true;
                    summary.push_str(&format!("; history not scanned: {e}"));
                }
            },
            (None, _) => summary.push_str("; --history needs --profile (the declared values)"),
            (_, false) => summary.push_str("; --history: not a git work tree"),
        }
    }
    findings.sort_by(|a, b| (&a.file, a.line, &a.rule).cmp(&(&b.file, b.line, &b.rule)));
    findings.dedup();
    // A file that could not be read could hold a key: not a pass.
    let unread = skipped.unreadable.len();
    let status = if !findings.is_empty() {
        Status::Fail
    } else if unread > 0 || history_failed {
        if unread > 0 {
            summary.push_str(&format!(
                "; {unread} file(s) or directories could not be read (listed below): not checked"
            ));
        }
        Status::Warn
    } else {
        Status::Pass
    };
    let mut c = Check::new(
        "secrets.hardcoded",
        status,
        summary,
        "remove the value from the file (and from the history: rotate it, it has leaked), and read it at run time from the environment or a secrets manager through the profile",
    );
    c.findings = findings;
    (c, scanned)
}

/// The findings of one file.
fn scan_file(rel: &str, text: &[u8], m: &Matchers) -> Vec<Finding> {
    let mut out = Vec::new();
    let whole = counts(m.all, text);
    if !whole.is_empty() {
        let mut found = 0;
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            for name in counts(m.all, line).keys() {
                found += 1;
                out.push(finding(rel, i as u64 + 1, name, m.names, false));
            }
        }
        if found == 0 {
            // A match across lines: name the line where it ends (the shortest prefix of whole
            // lines that holds it).
            let ends: Vec<usize> = std::iter::once(0)
                .chain(memchr::memchr_iter(b'\n', text).map(|p| p + 1))
                .chain(std::iter::once(text.len()))
                .collect();
            let (mut lo, mut hi) = (1, ends.len() - 1);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if counts(m.all, &text[..ends[mid]]).is_empty() {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            for name in whole.keys() {
                out.push(finding(rel, lo as u64, name, m.names, true));
            }
        }
    }
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let n = i as u64 + 1;
        // One finding a line: a built-in rule's (which names the kind) wins.
        if line.len() > 4096 || out.iter().any(|f| f.line == n) {
            continue;
        }
        for c in assignment().captures_iter(line) {
            let v = c
                .get(1)
                .or_else(|| c.get(2))
                .map_or(&b""[..], |m| m.as_bytes());
            if !placeholder(v) {
                out.push(Finding {
                    file: rel.to_string(),
                    line: n,
                    rule: "assignment".into(),
                    message: "a long literal assigned to a credential-looking name".into(),
                });
                break;
            }
        }
    }
    out
}

/// The declared values in a file too large or binary for the rules: read in 1 MiB pieces
/// through the values-only redactor (any size; a match across pieces is found, the stream
/// holds what may continue). Named at line 1, as a whole-file finding.
fn scan_raw(tree: &Tree, f: &super::TreeFile, values: &Redactor, names: &[String]) -> Vec<Finding> {
    use std::io::Read;
    let Some(mut file) = tree.open(f) else {
        return Vec::new();
    };
    let mut s = values.stream();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut out = Vec::new();
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.clear();
                s.push(&buf[..n], &mut out);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    out.clear();
    s.finish(&mut out);
    s.counts()
        .keys()
        .map(|name| {
            let mut x = finding(&f.rel, 1, name, names, false);
            x.message.push_str(" (in a binary or large file)");
            x
        })
        .collect()
}

fn finding(rel: &str, line: u64, name: &str, names: &[String], spans: bool) -> Finding {
    let (rule, what) = if names.iter().any(|n| n == name) {
        (
            format!("value:{name}"),
            format!("the value of the declared secret {name} (or an encoding of it)"),
        )
    } else {
        (
            name.to_string(),
            format!("a credential the built-in rule `{name}` recognises"),
        )
    };
    Finding {
        file: rel.to_string(),
        line,
        rule,
        message: if spans {
            format!("{what}, across lines ending here")
        } else {
            what
        },
    }
}

/// The declared values in the history: each commit's added lines (`git log -p --all`), named
/// by the commit, the file and the line where that commit added it.
fn scan_history(tree: &Tree, values: &Redactor, names: &[String]) -> Result<Vec<Finding>, String> {
    let Some(git) = &tree.repo_git else {
        return Err("not a git work tree".into());
    };
    let child = git
        .command(&tree.root)
        .args([
            "log",
            "--all",
            "-p",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--unified=0",
            "--no-show-signature",
            "--format=commit %H",
            "--relative",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("git log: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("git log: {e}"))?;
    if !out.status.success() {
        // A history that cannot be read is not a clean one. git's message is not repeated:
        // it can quote a line of a file the repository points it at (review 14b, F-4).
        return Err(format!("git log exited with {}", out.status));
    }
    let text = out.stdout;
    if counts(values, &text).is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let (mut commit, mut file, mut line) = (String::new(), String::new(), 0u64);
    // A file's header is `--- a/X` then `+++ b/X`, before its first hunk; an added line
    // that starts with `++ ` is content, not a header.
    let mut in_header = false;
    for l in text.split(|&b| b == b'\n') {
        if let Some(c) = l.strip_prefix(b"commit ") {
            commit = String::from_utf8_lossy(c).chars().take(12).collect();
            in_header = false;
        } else if l.starts_with(b"diff --git ") {
            in_header = true;
        } else if in_header && let Some(f) = l.strip_prefix(b"+++ ") {
            file = String::from_utf8_lossy(f.strip_prefix(b"b/").unwrap_or(f)).into_owned();
        } else if let Some(h) = l.strip_prefix(b"@@ ") {
            in_header = false;
            // `@@ -a[,b] +c[,d] @@`: added lines start at c.
            line = String::from_utf8_lossy(h)
                .split_whitespace()
                .find_map(|w| w.strip_prefix('+'))
                .and_then(|w| w.split(',').next()?.parse().ok())
                .unwrap_or(0);
        } else if let Some(added) = l.strip_prefix(b"+") {
            for name in counts(values, added).keys() {
                out.push(Finding {
                    file: file.clone(),
                    line,
                    rule: format!("value:{name}"),
                    message: format!(
                        "the value of the declared secret {} was added by commit {commit}: rotate it, it is in the history",
                        if names.iter().any(|n| n == name) { name.as_str() } else { "?" }
                    ),
                });
            }
            line += 1;
        }
    }
    Ok(out)
}
