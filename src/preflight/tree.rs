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
#[derive(Debug)]
pub struct Tree {
    pub root: PathBuf,
    /// Whether `root` is inside a git work tree.
    pub git: bool,
    /// Sorted by `rel`.
    pub files: Vec<TreeFile>,
    /// Entries the walk could not read (directories, symlink loops), with the error.
    pub walk_errors: Vec<(String, String)>,
    /// How to run git on the repository (without its config), in a work tree.
    pub repo_git: Option<Git>,
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

/// The biggest dependency file (manifest or lock) that is read.
pub const MAX_DEP_FILE: u64 = 64 * 1024 * 1024;

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
        match find_repo(root) {
            Some(repo) => Tree::from_git(root, repo),
            None => Ok(Tree::from_walk(root)),
        }
    }

    fn from_git(root: &Path, repo: Repo) -> Result<Tree, TreeError> {
        let shown = root.display().to_string();
        let git = Git::new(repo).map_err(|e| TreeError::Git(shown.clone(), e.to_string()))?;
        let ls = |args: &[&str]| -> Result<Vec<String>, TreeError> {
            let out = git
                .command(root)
                .args(["ls-files", "-z"])
                .args(args)
                .output()
                .map_err(|e| TreeError::Git(shown.clone(), e.to_string()))?;
            if !out.status.success() {
                // git's own message can quote a line of a file the repository points it at:
                // not repeated (review 14b, F-4).
                return Err(TreeError::Git(
                    shown.clone(),
                    format!("git ls-files exited with {}", out.status),
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
        // Untracked files git does not ignore are scanned too: they are what the next
        // `git add .` commits, and what an agent writes between two runs (review 14, F6).
        for rel in ls(&["--others", "--exclude-standard"])? {
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
            repo_git: Some(git),
        })
    }

    fn from_walk(root: &Path) -> Tree {
        let mut walk_errors = Vec::new();
        let walk = |rules: bool, errors: &mut Vec<(String, String)>| -> Vec<String> {
            let mut out = Vec::new();
            let w = ignore::WalkBuilder::new(root)
                .hidden(false)
                // Outside a work tree, the `.gitignore` files alone (not `.ignore`, not an
                // `info/exclude` of a `.git` that is no repository).
                .git_ignore(rules)
                .git_exclude(false)
                .git_global(false)
                .ignore(false)
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
            repo_git: None,
        }
    }

    /// The files whose content is scanned: tracked (or kept by the rules), and untracked
    /// ones git does not ignore.
    pub fn scanned(&self) -> impl Iterator<Item = &TreeFile> {
        self.files.iter().filter(|f| f.tracked || !f.ignored)
    }

    /// A regular file of the tree opened for reading (not following a symlink, not blocking
    /// on a FIFO), whatever its size or content.
    pub fn open(&self, f: &TreeFile) -> Option<std::fs::File> {
        let file = open_untrusted(&self.root.join(&f.rel)).ok()?;
        file.metadata().ok()?.is_file().then_some(file)
    }

    /// Reads a tracked file's text: `Ok(None)` for a binary file or one over [`MAX_FILE`]
    /// (counted in `skipped`), `Err` for one that cannot be read (counted too).
    pub fn text(&self, f: &TreeFile, skipped: &mut Skipped) -> Option<Vec<u8>> {
        self.text_up_to(f, MAX_FILE, skipped)
    }

    /// [`Tree::text`] with another size limit: dependency files (a `package-lock.json` of a
    /// mid-size project is several MiB) are read up to [`MAX_DEP_FILE`].
    pub fn text_up_to(&self, f: &TreeFile, limit: u64, skipped: &mut Skipped) -> Option<Vec<u8>> {
        use std::io::Read;
        // Judged by what was opened: only a regular file is read.
        let mut file = match open_untrusted(&self.root.join(&f.rel)) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return None, // a symlink
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None, // deleted
            Err(e) => {
                skipped.unreadable.push((f.rel.clone(), e.to_string()));
                return None;
            }
        };
        match file.metadata() {
            Ok(m) if !m.is_file() => {
                skipped
                    .unreadable
                    .push((f.rel.clone(), "not a regular file".into()));
                return None;
            }
            Ok(m) if m.len() > limit => {
                skipped.large += 1;
                return None;
            }
            Ok(_) => {}
            Err(e) => {
                skipped.unreadable.push((f.rel.clone(), e.to_string()));
                return None;
            }
        }
        let mut bytes = Vec::new();
        // At most one byte past the limit: a file that grew since is skipped as large.
        match (&mut file).take(limit + 1).read_to_end(&mut bytes) {
            Ok(_) if bytes.len() as u64 > limit => {
                skipped.large += 1;
                None
            }
            Ok(_) if is_binary(&bytes) => {
                skipped.binary += 1;
                None
            }
            Ok(_) => Some(bytes),
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

/// A git repository found above a directory, by looking for `.git`, not by asking git.
#[derive(Debug, Clone)]
pub struct Repo {
    pub work_tree: PathBuf,
    /// Where the work tree's `HEAD` and `index` are (`.git`, or a linked worktree's dir).
    pub git_dir: PathBuf,
    /// Where the objects and refs are (the same, or the main repository's for a worktree).
    pub common_dir: PathBuf,
}

/// Opens a file of a tree the agent may have written: not following a symlink (it could
/// point anywhere the operator can read), not blocking (a FIFO would hang the scan), never
/// becoming a controlling terminal. The caller judges what was opened by its metadata.
fn open_untrusted(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// A small regular file of a git dir, read without following a symlink, without blocking
/// on a FIFO, and up to `cap` bytes: the agent may have written the git dir (review 14b:
/// `HEAD` as a link to an operator-only file was copied; a FIFO hung the gate).
fn read_git_file(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = open_untrusted(path)?;
    let m = f.metadata()?;
    if !m.is_file() || m.len() > cap {
        return Err(std::io::Error::other("not a small regular file"));
    }
    let mut out = Vec::new();
    f.take(cap).read_to_end(&mut out)?;
    Ok(out)
}

/// Whether `path` is a real directory (not a symlink to one).
fn real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Whether `path` is absent, or a regular file (not a symlink, FIFO or device).
fn absent_or_file(path: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(m) => m.is_file(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// The repository `dir` is in, if any: the nearest `.git` directory, or `.git` file
/// (`gitdir: PATH`, a linked worktree or submodule), at `dir` or above it.
pub fn find_repo(dir: &Path) -> Option<Repo> {
    for a in dir.ancestors() {
        let dot = a.join(".git");
        let git_dir = match std::fs::symlink_metadata(&dot) {
            Ok(m) if m.is_dir() => dot,
            Ok(m) if m.is_file() => {
                let text = String::from_utf8(read_git_file(&dot, 4096).ok()?).ok()?;
                let target = text.lines().next()?.strip_prefix("gitdir:")?.trim();
                a.join(target)
            }
            Ok(_) => return None,
            Err(_) => continue,
        };
        let common_dir = match std::fs::symlink_metadata(git_dir.join("commondir")) {
            Err(_) => git_dir.clone(),
            Ok(_) => {
                let c = String::from_utf8(read_git_file(&git_dir.join("commondir"), 4096).ok()?)
                    .ok()?;
                git_dir.join(c.trim())
            }
        };
        return Some(Repo {
            work_tree: a.to_path_buf(),
            git_dir,
            common_dir,
        });
    }
    None
}

/// Whether `dir` is inside a git work tree.
pub fn in_work_tree(dir: &Path) -> bool {
    find_repo(dir).is_some()
}

/// git, run on a repository preflight does not trust, without that repository's config.
///
/// A repository's config may name programs git runs: `core.fsmonitor` on `ls-files`,
/// `gpg.program` with `log.showSignature`, diff and textconv drivers, a pager, hooks. An
/// agent can write one into its working directory for the next run's preflight (review
/// 14, F1 and F2), and no list of keys to switch off closes that class. So git never reads
/// it: it runs with a git dir of agentrun's own (a private temp dir with the repository's
/// `HEAD` and `info/exclude` copied, its refs, packed refs and shallow file linked, and an
/// empty config), the repository's index and objects named by `GIT_INDEX_FILE` and
/// `GIT_OBJECT_DIRECTORY`, no system config, the environment cleared, and git itself found
/// on an absolute `PATH` entry (review 14, F7). The operator's own global config still
/// applies (their excludes), with the program-naming keys switched off on the command line.
#[derive(Debug)]
pub struct Git {
    dir: PathBuf,
    repo: Repo,
    program: PathBuf,
}

impl Git {
    pub fn new(repo: Repo) -> std::io::Result<Git> {
        use std::os::unix::fs::DirBuilderExt;
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("agentrun-git-{}-{n}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let git = Git {
            dir,
            repo,
            program: git_program(),
        };
        let (r, d) = (&git.repo, &git.dir);
        // Each file git will read is a regular file (or a real directory) of the repository,
        // never a link out of it or a FIFO; HEAD is read and written anew, only if it is
        // what a HEAD holds.
        let odd = |what: &str| {
            std::io::Error::other(format!("{what} is not a regular file or directory"))
        };
        for (what, ok) in [
            ("index", absent_or_file(&r.git_dir.join("index"))),
            (
                "packed-refs",
                absent_or_file(&r.common_dir.join("packed-refs")),
            ),
            ("shallow", absent_or_file(&r.common_dir.join("shallow"))),
            ("refs", real_dir(&r.common_dir.join("refs"))),
            ("objects", real_dir(&r.common_dir.join("objects"))),
        ] {
            if !ok {
                return Err(odd(what));
            }
        }
        let head = read_git_file(&r.git_dir.join("HEAD"), 4096)?;
        let head = String::from_utf8(head).map_err(|_| odd("HEAD"))?;
        let line = head.trim_end();
        let valid = line
            .strip_prefix("ref: refs/")
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_graphic()))
            || (matches!(line.len(), 40 | 64) && line.bytes().all(|b| b.is_ascii_hexdigit()));
        if !valid {
            return Err(odd("HEAD"));
        }
        std::fs::write(d.join("HEAD"), format!("{line}\n"))?;
        std::fs::write(
            d.join("config"),
            "[core]\n\trepositoryformatversion = 0\n\tbare = false\n",
        )?;
        std::fs::create_dir(d.join("info"))?;
        if let Ok(x) = read_git_file(&r.common_dir.join("info/exclude"), 1024 * 1024) {
            std::fs::write(d.join("info/exclude"), x)?;
        }
        for name in ["refs", "packed-refs", "shallow"] {
            let from = r.common_dir.join(name);
            if from.exists() {
                std::os::unix::fs::symlink(&from, d.join(name))?;
            }
        }
        if !d.join("refs").exists() {
            std::fs::create_dir(d.join("refs"))?;
        }
        Ok(git)
    }

    /// `git ARGS` in `cwd` (inside the work tree).
    pub fn command(&self, cwd: &Path) -> Command {
        let mut c = Command::new(&self.program);
        c.current_dir(cwd)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C")
            .env("GIT_DIR", &self.dir)
            .env("GIT_WORK_TREE", &self.repo.work_tree)
            .env("GIT_INDEX_FILE", self.repo.git_dir.join("index"))
            .env("GIT_OBJECT_DIRECTORY", self.repo.common_dir.join("objects"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_PAGER", "cat")
            .args([
                "--no-optional-locks",
                "-c",
                "core.fsmonitor=false",
                "-c",
                "core.untrackedCache=false",
                "-c",
                "core.hooksPath=/dev/null",
                "-c",
                "diff.external=",
                "-c",
                "core.pager=cat",
                "-c",
                "log.showSignature=false",
                "-c",
                "core.quotepath=off",
            ])
            .stdin(std::process::Stdio::null());
        if let Some(home) = std::env::var_os("HOME") {
            c.env("HOME", home);
        }
        c
    }
}

impl Drop for Git {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// git from a root-owned place no one else may write (`/usr/bin`, `/usr/local/bin`,
/// `/bin`): never from `PATH`, whose entries may include a project directory the agent
/// writes (an activated venv, direnv; review 14 F7 and 14b F-2).
fn git_program() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let trusted = |p: &Path| {
        p.ancestors()
            .all(|a| std::fs::metadata(a).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o022 == 0))
    };
    ["/usr/bin/git", "/usr/local/bin/git", "/bin/git"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file() && trusted(p))
        .unwrap_or_else(|| PathBuf::from("/usr/bin/git"))
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
