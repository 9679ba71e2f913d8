//! `agentrun preflight`: the guide's deployment checklist, the part a program can check, on
//! the agent's project directory (`../shared/spec/preflight.md`, `docs/contract.md` §11).
//!
//! The tree is read once ([`Tree::read`]: the files git tracks, or, outside a work tree,
//! every file the `.gitignore` rules keep, walked with the `ignore` crate); each check is a
//! function of the tree (and, for the profile's checks, of [`ProfileFacts`] the caller
//! gathers: fetched values, probes, the audit log). Findings name a file, a line, a rule and
//! a message; never a value, a fragment, a hash or a length of one.
//!
//! Imports `profile` (the `[preflight]` table) and `redact` (the redactor that finds the
//! declared values and the built-in rules, so a key found in output is found in code).

pub mod deps;
pub mod output;
pub mod scan;
pub mod tree;

use serde::Serialize;

pub use tree::{Tree, TreeError, TreeFile};

/// Every check, in the order reports list them (ids are stable).
pub use crate::profile::CHECK_IDS as CHECKS;

/// The checklist lines no program can check: listed at the end as reminders.
pub const REMINDERS: [&str; 3] = [
    "alerts on unusual credential use are subscribed to (provider dashboards, CloudTrail, Vault audit devices)",
    "token scopes were reviewed by a person against what the agent does",
    "the incident plan names who revokes which credential, and how fast",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Fail,
    Warn,
    Skip,
}

/// One finding: where, which rule, what (never a value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Relative to the scanned directory, `/`-separated.
    pub file: String,
    /// 1-based; 1 for a finding about a whole file.
    pub line: u64,
    pub rule: String,
    pub message: String,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub status: Status,
    pub findings: Vec<Finding>,
    pub fix: String,
    /// One line for the text report: what was looked at, or why it was skipped.
    #[serde(skip)]
    pub summary: String,
}

impl Check {
    pub fn new(
        id: &'static str,
        status: Status,
        summary: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            id,
            status,
            findings: Vec::new(),
            fix: fix.into(),
            summary: summary.into(),
        }
    }

    /// A check that needs `--profile`.
    pub fn needs_profile(id: &'static str) -> Check {
        Check::new(
            id,
            Status::Skip,
            "needs --profile (the profile's secrets)",
            "run with --profile P",
        )
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub passed: bool,
    #[serde(skip)]
    pub skipped: tree::Skipped,
    #[serde(skip)]
    pub files_scanned: u64,
}

impl Report {
    /// Puts the checks in [`CHECKS`] order and computes `passed` (no check FAILs).
    pub fn new(mut checks: Vec<Check>, skipped: tree::Skipped, files_scanned: u64) -> Report {
        checks.sort_by_key(|c| {
            CHECKS
                .iter()
                .position(|id| *id == c.id)
                .unwrap_or(usize::MAX)
        });
        let passed = checks.iter().all(|c| c.status != Status::Fail);
        Report {
            checks,
            passed,
            skipped,
            files_scanned,
        }
    }
}
