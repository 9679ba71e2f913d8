//! Verification before the spawn: format checks (`pattern`, `min_length`) and live probes.
//!
//! A failed check triggers one refetch that bypasses any cache (the secret may have been
//! rotated); the caller does the refetch, this module only judges a value.

use regex::Regex;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// `verify = { ... }` of a long-form secret.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySection {
    pub pattern: Option<String>,
    pub min_length: Option<usize>,
    pub probe: Option<String>,
    pub url: Option<String>,
    pub header: Option<String>,
    pub method: Option<String>,
    pub expect_status: Option<u16>,
    pub timeout: Option<String>,
}

/// A validated `verify` table: the pattern compiled, anchored to the whole value.
#[derive(Debug, Clone)]
pub struct Verify {
    pub pattern: Option<Regex>,
    pub pattern_text: Option<String>,
    pub min_length: Option<usize>,
    pub section: VerifySection,
}

impl Verify {
    /// Validate at profile load. Errors are phrased for `secrets.NAME.verify.KEY`.
    pub fn from_section(section: &VerifySection) -> Result<Verify, String> {
        let pattern = match &section.pattern {
            None => None,
            Some(p) => Some(
                Regex::new(&format!("^(?:{p})$"))
                    .map_err(|e| format!("pattern is not a valid regex: {e}"))?,
            ),
        };
        if section.probe.is_some() {
            return Err(
                "live probes are not available in this build: remove `probe` or use `pattern`/`min_length`"
                    .into(),
            );
        }
        Ok(Verify {
            pattern,
            pattern_text: section.pattern.clone(),
            min_length: section.min_length,
            section: section.clone(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.pattern.is_none() && self.min_length.is_none()
    }

    /// The offline checks. The message never contains the value.
    pub fn check_format(&self, value: &SecretString) -> Result<(), String> {
        let v = value.expose_secret();
        if let Some(min) = self.min_length {
            let len = v.chars().count();
            if len < min {
                return Err(format!(
                    "the value has {len} characters, fewer than min_length = {min}"
                ));
            }
        }
        if let (Some(re), Some(text)) = (&self.pattern, &self.pattern_text)
            && !re.is_match(v)
        {
            return Err(format!("the value does not match pattern '{text}'"));
        }
        Ok(())
    }
}
