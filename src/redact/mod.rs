//! The streaming redactor (issue 4). Placeholder types until the redactor lands.

use serde::{Deserialize, Serialize};

/// The `[redact]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedactSection {
    #[serde(default = "default_replacement")]
    pub replacement: String,
    #[serde(default = "default_rules")]
    pub rules: Vec<String>,
    #[serde(default)]
    pub patterns: Vec<String>,
}

fn default_replacement() -> String {
    "[REDACTED:{name}]".into()
}

fn default_rules() -> Vec<String> {
    vec!["default".into()]
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

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RedactError(String);

impl RedactSection {
    pub fn validate(&self) -> Result<(), RedactError> {
        Ok(())
    }
}
