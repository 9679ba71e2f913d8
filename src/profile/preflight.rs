//! The `[preflight]` table: which deployment-checklist checks a run depends on.
//!
//! ```toml
//! [preflight]
//! dir = "."                                  # what to check (default: the working directory)
//! require = ["secrets.hardcoded", "deps.hashes"]   # or "all"
//! ```
//!
//! Imports nothing of the crate (see `profile`); the checks themselves are `crate::preflight`.

use serde::Deserialize;
use std::path::PathBuf;

/// Every check id, in report order (stable: profiles name them).
pub const CHECK_IDS: [&str; 11] = [
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPreflight {
    dir: Option<String>,
    require: Option<RawRequire>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawRequire {
    All(String),
    Some(Vec<String>),
}

/// `[preflight]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preflight {
    /// The directory to check (resolved against the working directory).
    pub dir: PathBuf,
    /// The checks a run needs to pass, in report order.
    pub require: Vec<&'static str>,
}

impl RawPreflight {
    pub(super) fn parse(self, resolve: impl Fn(&str) -> PathBuf) -> Result<Preflight, String> {
        let dir = resolve(self.dir.as_deref().unwrap_or("."));
        let require = match self.require {
            None => Vec::new(),
            Some(RawRequire::All(s)) if s == "all" => CHECK_IDS.to_vec(),
            Some(RawRequire::All(_)) => {
                return Err(
                    "preflight.require: a list of check ids, or \"all\" (see `agentrun preflight`)"
                        .into(),
                );
            }
            Some(RawRequire::Some(ids)) => {
                let mut out = Vec::new();
                for (i, id) in ids.iter().enumerate() {
                    let Some(known) = CHECK_IDS.iter().find(|k| *k == id) else {
                        return Err(format!(
                            "preflight.require[{i}]: unknown check id; known: {}",
                            CHECK_IDS.join(", ")
                        ));
                    };
                    if !out.contains(known) {
                        out.push(*known);
                    }
                }
                out.sort_by_key(|id| CHECK_IDS.iter().position(|k| k == id));
                out
            }
        };
        Ok(Preflight { dir, require })
    }
}
