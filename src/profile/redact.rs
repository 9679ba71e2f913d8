//! The `[redact]` table of a profile, as plain data. Checking it (rule ids, regexes) and
//! building a redactor from it belong to `crate::redact`.
//!
//! Imports nothing of the crate (see `profile`).

use serde::{Deserialize, Serialize};

fn default_replacement() -> String {
    "[REDACTED:{name}]".to_owned()
}

fn default_rules() -> Vec<String> {
    vec!["default".to_owned()]
}

/// The `[redact]` table of a profile.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedactSection {
    /// What a match is replaced with; `{name}` becomes the secret's name or the rule's id.
    #[serde(default = "default_replacement")]
    pub replacement: String,
    /// Built-in rule groups or single rule ids; `[]` for none.
    #[serde(default = "default_rules")]
    pub rules: Vec<String>,
    /// Extra regexes; a named group `secret` limits what is replaced.
    #[serde(default)]
    pub patterns: Vec<String>,
}

impl Default for RedactSection {
    fn default() -> Self {
        RedactSection {
            replacement: default_replacement(),
            rules: default_rules(),
            patterns: Vec::new(),
        }
    }
}
