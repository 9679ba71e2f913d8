//! [`Context`]: what agentrun read of its caller at start (environment snapshot, working
//! directory, `$HOME`), handed to every stage that resolves a path or reads a variable.
//!
//! A leaf: imports nothing of the crate. Its `Debug` shows variable names only, never values
//! (the environment holds agentrun's own credentials).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

/// Everything a fetch may read besides the source itself: agentrun's own environment
/// (a snapshot taken at start), the working directory and `$HOME`.
#[derive(Clone)]
pub struct Context {
    pub env: BTreeMap<OsString, OsString>,
    pub cwd: PathBuf,
    pub home: Option<PathBuf>,
}

/// Names only: the environment holds agentrun's own credentials.
impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("env_names", &self.env.keys().collect::<Vec<_>>())
            .field("cwd", &self.cwd)
            .field("home", &self.home)
            .finish()
    }
}

impl Context {
    pub fn var(&self, name: &str) -> Option<&OsString> {
        self.env.get(std::ffi::OsStr::new(name))
    }

    pub fn var_str(&self, name: &str) -> Option<&str> {
        self.var(name).and_then(|v| v.to_str())
    }

    /// Every home directory credential stores may sit under: `$HOME` (when absolute), the
    /// home of agentrun's user in the password database and, for root started through
    /// `sudo`, the home of the user who ran it (`$SUDO_UID`). `$HOME` alone is an input a
    /// caller can unset or point elsewhere.
    pub fn homes(&self) -> Vec<PathBuf> {
        use nix::unistd::{Uid, User, getuid};
        let mut out: Vec<PathBuf> = self
            .home
            .iter()
            .filter(|h| h.is_absolute())
            .cloned()
            .collect();
        let mut uids = vec![getuid()];
        if getuid().is_root()
            && let Some(uid) = self.var_str("SUDO_UID").and_then(|u| u.parse().ok())
        {
            uids.push(Uid::from_raw(uid));
        }
        for uid in uids {
            if let Ok(Some(user)) = User::from_uid(uid)
                && user.dir.is_absolute()
                && !out.contains(&user.dir)
            {
                out.push(user.dir);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_names_never_values() {
        let ctx = Context {
            env: [(OsString::from("VAULT_TOKEN"), OsString::from("hvs.s3cr3t"))]
                .into_iter()
                .collect(),
            cwd: PathBuf::from("/w"),
            home: None,
        };
        let shown = format!("{ctx:?}");
        assert!(shown.contains("VAULT_TOKEN"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert_eq!(ctx.var_str("VAULT_TOKEN"), Some("hvs.s3cr3t"));
    }
}
