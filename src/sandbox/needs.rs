//! What starting a command needs from the file system, found the way the kernel and the
//! usual launchers would find it, without running it: for `check -- COMMAND`.
//!
//! From the resolved program (the caller resolves `PATH` as a run does): the `#!` chain
//! (`/usr/bin/env NAME` looked up on the child's `PATH`), each file's ELF interpreter, the
//! shims that pick an interpreter at run time (pyenv, asdf), a Python virtual environment
//! (its `pyvenv.cfg`: the venv itself and its base interpreter), the library directory beside
//! an interpreter outside the system (`PREFIX/bin/x` reads `PREFIX/lib`), and the command's
//! arguments that name existing files (a script given to its interpreter).
//!
//! Known limit: a shim is followed by reading its configuration files as the shim's tool
//! does for the common cases (`PYENV_VERSION`, `.python-version`, `.tool-versions`), not by
//! running the tool; what a command opens later, while it runs, is `learn`'s to find.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::fsplan::{FsAccess, interpreters};

/// One path the command needs, how, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub path: PathBuf,
    pub want: FsAccess,
    pub why: String,
}

/// What the command's start needs, in the order it is met. `program` is the resolved
/// program, `args` the command's arguments after it, `path_var` the child's `PATH`, `var`
/// the child's environment.
pub fn command_needs(
    program: &Path,
    args: &[OsString],
    path_var: Option<&OsStr>,
    var: &dyn Fn(&str) -> Option<OsString>,
    cwd: &Path,
    home: Option<&Path>,
) -> Vec<Need> {
    let mut w = Walk {
        needs: Vec::new(),
        path_var,
        var,
        cwd,
        home,
    };
    w.exec(program, "the program".into(), 0);
    for a in args {
        let p = cwd.join(a);
        if !a.is_empty() && !a.as_bytes().starts_with(b"-") && p.is_file() {
            w.push(
                p,
                FsAccess::READ,
                format!("argument {}", a.to_string_lossy()),
            );
        }
    }
    w.needs
}

struct Walk<'a> {
    needs: Vec<Need>,
    path_var: Option<&'a OsStr>,
    var: &'a dyn Fn(&str) -> Option<OsString>,
    cwd: &'a Path,
    home: Option<&'a Path>,
}

/// How deep a chain of interpreters and shims is followed (the kernel's own `#!` limit is 4).
const MAX_DEPTH: usize = 6;

impl Walk<'_> {
    fn push(&mut self, path: PathBuf, want: FsAccess, why: String) {
        if !self.needs.iter().any(|n| n.path == path && n.want == want) {
            self.needs.push(Need { path, want, why });
        }
    }

    /// `path` is executed: it, its interpreters, and what a shim or venv around it picks.
    fn exec(&mut self, path: &Path, why: String, depth: usize) {
        if depth > MAX_DEPTH || self.needs.iter().any(|n| n.path == path && n.want.exec) {
            return;
        }
        self.push(path.to_path_buf(), FsAccess::READ_EXEC, why);
        let shown = path.display().to_string();
        if let Some((root, target)) = self.pyenv_target(path) {
            // The shim runs `ROOT/libexec/pyenv exec`, bash scripts that read the version
            // files and run the plugins' hooks, before the interpreter.
            for (sub, want) in [
                ("libexec", FsAccess::READ_EXEC),
                ("plugins", FsAccess::READ_EXEC),
                ("version", FsAccess::READ),
            ] {
                let p = root.join(sub);
                if p.exists() {
                    self.push(
                        p,
                        want,
                        format!("pyenv's own files, which its shim {shown} uses"),
                    );
                }
            }
            self.exec(
                &target,
                format!("the interpreter pyenv's shim {shown} runs"),
                depth + 1,
            );
        }
        if let Some(target) = self.asdf_target(path) {
            self.exec(
                &target,
                format!("the program asdf's shim {shown} runs"),
                depth + 1,
            );
        }
        self.venv(path);
        self.prefix_lib(path);
        for interp in interpreters(path) {
            let is_env = interp.file_name() == Some(OsStr::new("env"));
            self.exec(&interp, format!("the interpreter of {shown}"), depth + 1);
            if is_env && let Some(name) = env_target(path) {
                match self.on_path(&name) {
                    Some(p) => self.exec(
                        &p,
                        format!(
                            "`{}` that {shown}'s `#!` line runs through env",
                            name.to_string_lossy()
                        ),
                        depth + 1,
                    ),
                    None => self.push(
                        PathBuf::from(&name),
                        FsAccess::READ_EXEC,
                        format!(
                            "`{}` that {shown}'s `#!` line runs through env: not on the child's PATH",
                            name.to_string_lossy()
                        ),
                    ),
                }
            }
        }
    }

    /// `name` on the child's `PATH`, as `env` would find it.
    fn on_path(&self, name: &OsStr) -> Option<PathBuf> {
        if name.as_bytes().contains(&b'/') {
            return Some(self.cwd.join(name));
        }
        let path = self
            .path_var
            .unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
        path.as_bytes()
            .split(|&b| b == b':')
            .map(|d| self.cwd.join(OsStr::from_bytes(d)).join(name))
            .find(|p| p.is_file())
    }

    /// A pyenv shim (`ROOT/shims/NAME`; ROOT as the shim exports it, else `$PYENV_ROOT`, else
    /// `~/.pyenv`) runs `ROOT/versions/V/bin/NAME`, V from `PYENV_VERSION`, the nearest
    /// `.python-version`, or `ROOT/version`. Returns ROOT and that program.
    fn pyenv_target(&self, path: &Path) -> Option<(PathBuf, PathBuf)> {
        let name = path.file_name()?;
        let shims = path.parent()?;
        let exported = fs::read(path).ok().and_then(|t| {
            let t = String::from_utf8_lossy(&t[..t.len().min(4096)]).into_owned();
            t.lines().find_map(|l| {
                let v = l.trim().strip_prefix("export PYENV_ROOT=")?;
                Some(PathBuf::from(v.trim_matches('"')))
            })
        });
        let root = exported
            .or_else(|| (self.var)("PYENV_ROOT").map(PathBuf::from))
            .or_else(|| self.home.map(|h| h.join(".pyenv")))?;
        if shims != root.join("shims") {
            return None;
        }
        let version = (self.var)("PYENV_VERSION")
            .map(|v| v.to_string_lossy().into_owned())
            .or_else(|| self.nearest(".python-version").and_then(|f| first_word(&f)))
            .or_else(|| first_word(&root.join("version")))?;
        let version = version.split(':').next()?.to_string();
        if version == "system" {
            return None;
        }
        let target = root.join("versions").join(version).join("bin").join(name);
        Some((root, target))
    }

    /// An asdf shim names its plugin (`# asdf-plugin: NAME VERSION`) and runs
    /// `$ASDF_DATA_DIR/installs/PLUGIN/VERSION/bin/NAME`, the version from
    /// `ASDF_<PLUGIN>_VERSION` or the nearest `.tool-versions`.
    fn asdf_target(&self, path: &Path) -> Option<PathBuf> {
        let root = (self.var)("ASDF_DATA_DIR")
            .map(PathBuf::from)
            .or_else(|| self.home.map(|h| h.join(".asdf")))?;
        if path.parent()? != root.join("shims") {
            return None;
        }
        let name = path.file_name()?;
        let text = fs::read_to_string(path).ok()?;
        let plugin = text
            .lines()
            .find_map(|l| l.strip_prefix("# asdf-plugin: "))?
            .split_whitespace()
            .next()?
            .to_string();
        let var = format!("ASDF_{}_VERSION", plugin.to_uppercase().replace('-', "_"));
        let version = (self.var)(&var)
            .map(|v| v.to_string_lossy().into_owned())
            .or_else(|| {
                let f = self.nearest(".tool-versions")?;
                fs::read_to_string(f).ok()?.lines().find_map(|l| {
                    let mut w = l.split_whitespace();
                    (w.next()? == plugin).then(|| w.next().map(str::to_string))?
                })
            })?;
        Some(
            root.join("installs")
                .join(&plugin)
                .join(version)
                .join("bin")
                .join(name),
        )
    }

    /// The nearest `name` in the working directory or above it, then in the home.
    fn nearest(&self, name: &str) -> Option<PathBuf> {
        self.cwd
            .ancestors()
            .map(|d| d.join(name))
            .chain(self.home.map(|h| h.join(name)))
            .find(|p| p.is_file())
    }

    /// A program in a Python virtual environment (`VENV/bin/x` with `VENV/pyvenv.cfg`) reads
    /// the venv (its site-packages) and runs on the base interpreter named by `home =`.
    fn venv(&mut self, path: &Path) {
        let Some(root) = path.parent().and_then(Path::parent) else {
            return;
        };
        let cfg = root.join("pyvenv.cfg");
        let Ok(text) = fs::read_to_string(&cfg) else {
            return;
        };
        let shown = root.display().to_string();
        self.push(
            root.to_path_buf(),
            FsAccess::READ,
            format!("the virtual environment {shown} (its pyvenv.cfg and site-packages)"),
        );
        let home = text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "home").then(|| PathBuf::from(v.trim()))
        });
        if let Some(prefix) = home.as_deref().and_then(Path::parent) {
            let lib = prefix.join("lib");
            if lib.is_dir() {
                self.push(
                    lib,
                    FsAccess::READ,
                    format!("the standard library of {shown}'s base interpreter (pyvenv.cfg home)"),
                );
            }
        }
    }

    /// An interpreter at `PREFIX/bin/x` outside the system directories reads `PREFIX/lib`
    /// (Python's `encodings`, Ruby's and Perl's libraries).
    fn prefix_lib(&mut self, path: &Path) {
        let Ok(real) = fs::canonicalize(path) else {
            return;
        };
        let Some(bin) = real.parent() else { return };
        if bin.file_name() != Some(OsStr::new("bin")) {
            return;
        }
        let Some(prefix) = bin.parent() else { return };
        if [Path::new("/"), Path::new("/usr"), Path::new("/usr/local")].contains(&prefix) {
            return;
        }
        let lib = prefix.join("lib");
        if lib.is_dir() && (fs::read_dir(&lib).is_ok_and(|mut d| d.next().is_some())) {
            self.push(
                lib,
                FsAccess::READ,
                format!("the library directory beside {}", real.display()),
            );
        }
    }
}

/// What `#!/usr/bin/env [-S] [-i] [-u NAME] [VAR=value]... NAME` runs: NAME.
fn env_target(script: &Path) -> Option<OsString> {
    let text = fs::read(script).ok()?;
    let line = text.strip_prefix(b"#!")?.split(|&b| b == b'\n').next()?;
    let mut words = line
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|w| !w.is_empty())
        .skip(1);
    while let Some(w) = words.next() {
        match w {
            b"-S" | b"-i" | b"--ignore-environment" | b"-" => {}
            b"-u" | b"-C" => {
                words.next();
            }
            w if w.starts_with(b"-S") => return Some(OsStr::from_bytes(&w[2..]).into()),
            w if w.starts_with(b"-") || w.contains(&b'=') => {}
            w => return Some(OsStr::from_bytes(w).into()),
        }
    }
    None
}

/// The first word of a file (a version file's content).
fn first_word(path: &Path) -> Option<String> {
    fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    fn tmp(name: &str) -> Tmp {
        let t = std::env::temp_dir().join(format!("agentrun-needs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&t);
        fs::create_dir_all(&t).unwrap();
        Tmp(t)
    }
    fn script(p: &Path, text: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fn paths(n: &[Need]) -> Vec<(String, &'static str)> {
        n.iter()
            .map(|n| (n.path.display().to_string(), super::super::key_for(n.want)))
            .collect()
    }

    #[test]
    fn a_pyenv_shim_leads_to_its_version_and_its_library() {
        let t = tmp("pyenv");
        let home = t.0.join("home");
        let shim = home.join(".pyenv/shims/python");
        script(&shim, "#!/bin/sh\nexec pyenv exec python \"$@\"\n");
        let py = home.join(".pyenv/versions/3.12.1/bin/python");
        script(&py, "#!/bin/sh\n");
        fs::create_dir_all(home.join(".pyenv/versions/3.12.1/lib/python3.12")).unwrap();
        let proj = t.0.join("proj");
        fs::create_dir_all(&proj).unwrap();
        fs::write(proj.join(".python-version"), "3.12.1\n").unwrap();
        fs::write(proj.join("agent.py"), "print(1)\n").unwrap();
        let none = |_: &str| None;
        let n = command_needs(
            &shim,
            &["agent.py".into(), "-v".into()],
            None,
            &none,
            &proj,
            Some(&home),
        );
        let p = paths(&n);
        let s = |x: &Path| x.display().to_string();
        assert!(p.contains(&(s(&shim), "exec")), "{p:?}");
        assert!(p.contains(&(s(&py), "exec")), "{p:?}");
        assert!(p.contains(&("/bin/sh".into(), "exec")), "{p:?}");
        assert!(
            p.contains(&(s(&home.join(".pyenv/versions/3.12.1/lib")), "read")),
            "{p:?}"
        );
        assert!(p.contains(&(s(&proj.join("agent.py")), "read")), "{p:?}");
        // PYENV_VERSION wins over the file.
        let var = |k: &str| (k == "PYENV_VERSION").then(|| OsString::from("3.11.0"));
        let n = command_needs(&shim, &[], None, &var, &proj, Some(&home));
        assert!(
            n.iter()
                .any(|n| n.path == home.join(".pyenv/versions/3.11.0/bin/python")),
            "{n:?}"
        );
    }

    #[test]
    fn env_shebangs_asdf_shims_and_venvs_are_followed() {
        let t = tmp("chain");
        let home = t.0.join("home");
        let bin = t.0.join("bin");
        let tool = bin.join("mytool");
        script(&tool, "#!/usr/bin/env -S mypy -u\n");
        let asdf_shim = bin.join("mypy");
        script(
            &asdf_shim,
            "#!/usr/bin/env bash\n# asdf-plugin: python 3.10.4\nexec asdf exec mypy\n",
        );
        // The shim is not in ~/.asdf/shims: only PATH applies.
        let path = OsString::from(bin.as_os_str());
        let none = |_: &str| None;
        let n = command_needs(&tool, &[], Some(&path), &none, &t.0, Some(&home));
        let p = paths(&n);
        assert!(
            p.contains(&(asdf_shim.display().to_string(), "exec")),
            "{p:?}"
        );
        // Now as a real asdf shim.
        let shim = home.join(".asdf/shims/mypy");
        script(
            &shim,
            "#!/usr/bin/env bash\n# asdf-plugin: python 3.10.4\nexec asdf exec mypy\n",
        );
        fs::write(t.0.join(".tool-versions"), "nodejs 20\npython 3.10.4\n").unwrap();
        let n = command_needs(&shim, &[], None, &none, &t.0, Some(&home));
        assert!(
            n.iter()
                .any(|n| n.path == home.join(".asdf/installs/python/3.10.4/bin/mypy")),
            "{n:?}"
        );
        // A venv: the venv itself, and its base interpreter's library.
        let venv = t.0.join("venv");
        let base = t.0.join("py/bin");
        script(&base.join("python3"), "#!/bin/sh\n");
        fs::create_dir_all(t.0.join("py/lib/python3.12")).unwrap();
        fs::create_dir_all(venv.join("bin")).unwrap();
        fs::write(
            venv.join("pyvenv.cfg"),
            format!("home = {}\n", base.display()),
        )
        .unwrap();
        symlink(base.join("python3"), venv.join("bin/python")).unwrap();
        let n = command_needs(
            &venv.join("bin/python"),
            &[],
            None,
            &none,
            &t.0,
            Some(&home),
        );
        let p = paths(&n);
        assert!(p.contains(&(venv.display().to_string(), "read")), "{p:?}");
        assert!(
            p.contains(&(t.0.join("py/lib").display().to_string(), "read")),
            "{p:?}"
        );
    }
}
