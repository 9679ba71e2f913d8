//! Finding a profile: a path, or a name looked up on the search path (first match wins).

use super::ProfileError;
use std::path::{Path, PathBuf};

/// The search path, in order: `$AGENTRUN_PROFILE_PATH` (colon-separated),
/// `$XDG_CONFIG_HOME/agentrun/profiles/` (default `~/.config/agentrun/profiles/`),
/// `/etc/agentrun/profiles/`, then `./profiles/`.
///
/// The user's own configuration comes before the working directory, as git and ssh order
/// theirs: the working directory is where an agent writes, so a profile planted in
/// `./profiles/` never shadows one the user wrote (`agentrun profiles` lists it as shadowed).
pub fn search_path(
    profile_path: Option<&str>,
    cwd: &Path,
    xdg_config_home: Option<&Path>,
    home: Option<&Path>,
) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = profile_path
        .map(|p| {
            p.split(':')
                .filter(|d| !d.is_empty())
                .map(|d| cwd.join(d))
                .collect()
        })
        .unwrap_or_default();
    match (xdg_config_home, home) {
        (Some(x), _) if x.is_absolute() => dirs.push(x.join("agentrun/profiles")),
        (_, Some(h)) => dirs.push(h.join(".config/agentrun/profiles")),
        _ => {}
    }
    dirs.push(PathBuf::from("/etc/agentrun/profiles"));
    dirs.push(cwd.join("profiles"));
    dirs
}

/// True when `<P>` is a path rather than a name.
pub fn is_path(p: &str) -> bool {
    p.contains('/') || p.ends_with(".toml")
}

/// Resolve `<P>` to a file.
pub fn find(p: &str, dirs: &[PathBuf], cwd: &Path) -> Result<PathBuf, ProfileError> {
    if p.is_empty() {
        return Err(ProfileError::NotFound(
            "the profile name is empty: pass --profile NAME or a path".into(),
        ));
    }
    if is_path(p) {
        let path = cwd.join(p);
        if path.is_file() {
            return Ok(path);
        }
        let relative = super::source::relative_note(p, cwd)
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        if path.is_dir() {
            return Err(ProfileError::NotFound(format!(
                "profile {} is a directory{relative}: a profile is a `.toml` file; {}",
                path.display(),
                toml_files_in(&path)
            )));
        }
        return Err(ProfileError::NotFound(format!(
            "profile {} does not exist{relative}: pass the path of a `.toml` file, or a name \
             from `agentrun profiles`",
            path.display()
        )));
    }
    let file = format!("{p}.toml");
    for d in dirs {
        let candidate = d.join(&file);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let here = cwd.join(p);
    let dir_note = if here.is_dir() {
        format!(
            " (./{p} is a directory here: a profile is a `.toml` file; {})",
            toml_files_in(&here)
        )
    } else {
        String::new()
    };
    Err(ProfileError::NotFound(format!(
        "no profile named `{p}`: looked for {file} in {}; create one there, or pass a path{dir_note}",
        looked.join(", ")
    )))
}

/// What a directory given as a profile holds: its `.toml` files to pass instead, or that
/// it has none. File names are escaped (see [`printable`]).
fn toml_files_in(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
                .map(|p| printable(&p.display().to_string()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    match names.as_slice() {
        [] => "it holds none: pass the path of one".into(),
        [one] => format!("pass --profile {one}"),
        many => format!("pass one of: {}", many.join(", ")),
    }
}

/// `s` with control characters, backslashes and invisible formatting characters (zero-width,
/// bidirectional overrides) escaped as `\u{..}`: for printing a file name from a directory
/// listing the child may have written to, so that a planted name cannot drive the
/// operator's terminal or pose as another.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let invisible = matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}');
        if c.is_control() || invisible {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    out
}

/// Every `*.toml` on the search path: (name, path, shadowed by an earlier one).
pub fn list(dirs: &[PathBuf]) -> Vec<(String, PathBuf, bool)> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        let mut names: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        names.sort();
        for path in names {
            let Some(name) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            let shadowed = !seen.insert(name.clone());
            out.push((name, path, shadowed));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_what_drives_a_terminal() {
        assert_eq!(printable("ok-name_1.toml"), "ok-name_1.toml");
        assert_eq!(
            printable("a\u{1b}]0;x\u{7}b\u{9b}c\nd\\e\u{202e}f"),
            "a\\u{1b}]0;x\\u{7}b\\u{9b}c\\u{a}d\\\\e\\u{202e}f"
        );
    }

    #[test]
    fn the_users_configuration_comes_before_the_working_directory() {
        let dirs = search_path(
            Some("/p1:rel"),
            Path::new("/w"),
            None,
            Some(Path::new("/h")),
        );
        assert_eq!(
            dirs,
            [
                "/p1",
                "/w/rel",
                "/h/.config/agentrun/profiles",
                "/etc/agentrun/profiles",
                "/w/profiles"
            ]
            .map(PathBuf::from)
            .to_vec()
        );
    }
}
