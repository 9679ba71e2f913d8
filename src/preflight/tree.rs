//! The project tree preflight looks at, read once.
//!
//! In a git work tree: the files git tracks (`git ls-files`), plus the `.env` files it does
//! not track, each marked ignored or not (`git ls-files --others [--ignored]` limited to
//! `.env` names). The `git` binary rather than `gix`: it is what the repository's owner runs,
//! so its answer (their config, their global excludes, sparse checkouts) is theirs, and it
//! costs no dependency; `ls-files` of 50k files takes milliseconds.
//!
//! Outside a work tree: every file the `.gitignore` rules keep, walked with the `ignore`
//! crate (ripgrep's walker; hidden files included, symlinks not followed, so a loop cannot
//! trap it), and a second walk without the rules for the `.env` files they leave out.
//!
//! A file that cannot be read is reported and skipped, never fatal; only a DIR that does not
//! exist, is not a directory or cannot be listed is an error.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One file of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Relative to the root, `/`-separated.
    pub rel: String,
    /// Tracked by git (outside a work tree: kept by the ignore rules).
    pub tracked: bool,
    /// Left out by `.gitignore` (and not tracked).
    pub ignored: bool,
}

/// Files left out of the content scan, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skipped {
    pub binary: u64,
    pub large: u64,
    /// Each with its error, for the report.
    pub unreadable: Vec<(String, String)>,
}

/// The tree.
#[derive(Debug, Clone)]
pub struct Tree {
    pub root: PathBuf,
    /// Whether `root` is inside a git work tree.
    pub git: bool,
    /// Sorted by `rel`.
    pub files: Vec<TreeFile>,
    /// Entries the walk could not read (directories, symlink loops), with the error.
    pub walk_errors: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{0}: no such directory; give the agent's project directory")]
    Missing(String),
    #[error("{0}: not a directory; give the agent's project directory")]
    NotDir(String),
    #[error("{0}: cannot be listed ({1}); check its permissions")]
    Unreadable(String, String),
    #[error("{0}: git ls-files failed: {1}")]
    Git(String, String),
}

/// The biggest file whose content is scanned.
pub const MAX_FILE: u64 = 1024 * 1024;

impl Tree {
    /// Reads the tree at `root`.
    pub fn read(root: &Path) -> Result<Tree, TreeError> {
        let shown = root.display().to_string();
        let meta = std::fs::metadata(root).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => TreeError::Missing(shown.clone()),
            _ => TreeError::Unreadable(shown.clone(), e.to_string()),
        })?;
        if !meta.is_dir() {
            return Err(TreeError::NotDir(shown));
        }
        std::fs::read_dir(root).map_err(|e| TreeError::Unreadable(shown.clone(), e.to_string()))?;
        if in_work_tree(root) {
            Tree::from_git(root)
        } else {
            Ok(Tree::from_walk(root))
        }
    }

    fn from_git(root: &Path) -> Result<Tree, TreeError> {
        let shown = root.display().to_string();
        let ls = |args: &[&str]| -> Result<Vec<String>, TreeError> {
            let out = Command::new("git")
                .arg("-C")
                .arg(root)
                .args(["-c", "core.quotepath=off", "ls-files", "-z"])
                .args(args)
                .output()
                .map_err(|e| TreeError::Git(shown.clone(), e.to_string()))?;
            if !out.status.success() {
                return Err(TreeError::Git(
                    shown.clone(),
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                ));
            }
            Ok(out
                .stdout
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect())
        };
        let env_names = [":(glob)**/.env", ":(glob)**/.env.*"];
        let mut files: Vec<TreeFile> = ls(&["--cached"])?
            .into_iter()
            .map(|rel| TreeFile {
                rel,
                tracked: true,
                ignored: false,
            })
            .collect();
        let mut others = vec!["--others", "--exclude-standard", "--"];
        others.extend(env_names);
        for rel in ls(&others)? {
            files.push(TreeFile {
                rel,
                tracked: false,
                ignored: false,
            });
        }
        let mut ignored = vec!["--others", "--ignored", "--exclude-standard", "--"];
        ignored.extend(env_names);
        for rel in ls(&ignored)? {
            files.push(TreeFile {
                rel,
                tracked: false,
                ignored: true,
            });
        }
        files.sort_by(|a, b| a.rel.cmp(&b.rel));
        files.dedup_by(|a, b| a.rel == b.rel);
        Ok(Tree {
            root: root.to_path_buf(),
            git: true,
            files,
            walk_errors: Vec::new(),
        })
    }

    fn from_walk(root: &Path) -> Tree {
        let mut walk_errors = Vec::new();
        let walk = |rules: bool, errors: &mut Vec<(String, String)>| -> Vec<String> {
            let mut out = Vec::new();
            let w = ignore::WalkBuilder::new(root)
                .hidden(false)
                .git_ignore(rules)
                .git_exclude(rules)
                .git_global(rules)
                .ignore(rules)
                .parents(rules)
                .require_git(false)
                .follow_links(false)
                .filter_entry(|e| e.file_name() != ".git")
                .build();
            for entry in w {
                match entry {
                    Ok(e) if e.file_type().is_some_and(|t| t.is_file()) => {
                        if let Ok(rel) = e.path().strip_prefix(root) {
                            out.push(rel_string(rel));
                        }
                    }
                    Ok(_) => {}
                    Err(err) => errors.push(walk_error(root, &err)),
                }
            }
            out
        };
        let kept = walk(true, &mut walk_errors);
        let mut files: Vec<TreeFile> = kept
            .iter()
            .map(|rel| TreeFile {
                rel: rel.clone(),
                tracked: true,
                ignored: false,
            })
            .collect();
        let mut none = Vec::new();
        for rel in walk(false, &mut none) {
            if is_dotenv(&rel) && !kept.contains(&rel) {
                files.push(TreeFile {
                    rel,
                    tracked: false,
                    ignored: true,
                });
            }
        }
        files.sort_by(|a, b| a.rel.cmp(&b.rel));
        Tree {
            root: root.to_path_buf(),
            git: false,
            files,
            walk_errors,
        }
    }

    /// The files whose content is scanned (tracked, or kept by the rules).
    pub fn scanned(&self) -> impl Iterator<Item = &TreeFile> {
        self.files.iter().filter(|f| f.tracked)
    }

    pub fn has(&self, rel: &str) -> bool {
        self.files.iter().any(|f| f.tracked && f.rel == rel)
    }

    /// Reads a tracked file's text: `Ok(None)` for a binary file or one over [`MAX_FILE`]
    /// (counted in `skipped`), `Err` for one that cannot be read (counted too).
    pub fn text(&self, f: &TreeFile, skipped: &mut Skipped) -> Option<Vec<u8>> {
        let path = self.root.join(&f.rel);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => return None,
            Ok(m) if m.len() > MAX_FILE => {
                skipped.large += 1;
                return None;
            }
            Ok(_) => {}
            Err(e) => {
                skipped.unreadable.push((f.rel.clone(), e.to_string()));
                return None;
            }
        }
        match std::fs::read(&path) {
            Ok(bytes) if is_binary(&bytes) => {
                skipped.binary += 1;
                None
            }
            Ok(bytes) => Some(bytes),
            Err(e) => {
                skipped.unreadable.push((f.rel.clone(), e.to_string()));
                None
            }
        }
    }
}

/// `.env` or `.env.*`, the templates aside.
pub fn is_dotenv(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    (name == ".env" || name.starts_with(".env."))
        && ![".env.example", ".env.sample", ".env.template"].contains(&name)
}

/// A NUL byte in the first 8 KiB (git's and ripgrep's test).
fn is_binary(bytes: &[u8]) -> bool {
    memchr::memchr(0, &bytes[..bytes.len().min(8192)]).is_some()
}

fn rel_string(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// A walk's error as (the entry relative to the root, what went wrong): an unreadable
/// directory, a symlink loop, a `.gitignore` line the walker could not use.
fn walk_error(root: &Path, err: &ignore::Error) -> (String, String) {
    fn at(err: &ignore::Error, line: Option<u64>) -> (Option<&Path>, Option<u64>, String) {
        match err {
            ignore::Error::WithPath { path, err } => {
                let (_, l, msg) = at(err, line);
                (Some(path.as_path()), l, msg)
            }
            ignore::Error::WithLineNumber { line, err } => at(err, Some(*line)),
            ignore::Error::WithDepth { err, .. } => at(err, line),
            ignore::Error::Partial(errs) if errs.len() == 1 => at(&errs[0], line),
            ignore::Error::Loop { child, .. } => {
                (Some(child.as_path()), line, "a symlink loop".to_string())
            }
            other => (None, line, other.to_string()),
        }
    }
    let (path, line, msg) = at(err, None);
    let rel = path.map_or_else(
        || ".".to_string(),
        |p| {
            p.strip_prefix(root)
                .map_or_else(|_| p.display().to_string(), rel_string)
        },
    );
    match line {
        Some(l) => (rel, format!("line {l}: {msg}")),
        None => (rel, msg),
    }
}

/// Whether `dir` is inside a git work tree (and git is installed).
fn in_work_tree(dir: &Path) -> bool {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--is-inside-work-tree"])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"true"))
}
