//! The streaming redactor: no declared secret, and nothing a built-in rule recognises as a
//! credential, reaches agentrun's stdout or stderr.
//!
//! Owns matching (known values with their encodings and fragments, built-in rules, profile
//! patterns) and the streaming pump state. It sees secret values (it must, to find them) but
//! never prints, logs or `Debug`-formats one; the audit log gets only names and counts.
//!
//! Why streaming is delicate (see `shared/FIELD-NOTES.md`): a secret may arrive one byte per
//! write, so the stream holds back exactly the bytes that could still be part of a match (a
//! live partial match) and emits everything else at once, with no newline wait and no timer
//! (a timer lets a child leak a secret one character at a time). Overlapping matches are
//! replaced as the union of their ranges, so a secret that is a prefix of another leaks
//! nothing of either. A regex match that touches the end of the window is held until the
//! regex is dead, because a greedy match cut at a buffer edge, or `$`/`\b` at a window end,
//! is not a real match.
//!
//! Layers: [`encodings`] (value -> forms to look for), [`rules`] (built-in detectors as data),
//! [`prefilter`] (where the exact matchers need to look at all), [`matcher`] (one window ->
//! matches + live start; declared values matched with line breaks taken out), [`screen`] (the
//! window as a terminal shows it: escape sequences and invisible characters out of view,
//! overwrites applied, answer-back sequences dropped), [`stream`] (windows, holding, open
//! matches, emitting). The launcher builds one [`Redactor`] before the child starts and gives
//! each output stream its own [`RedactStream`].
//!
//! The build cost is bounded: a value longer than 4 KiB is matched through tiles within a fixed
//! budget ([`encodings`]), so a large secret cannot make every start slow.

mod encodings;
mod matcher;
mod prefilter;
mod rules;
mod screen;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};

pub use stream::RedactStream;

/// Secrets shorter than this (in bytes) cannot be redacted without mangling ordinary
/// output; the launcher refuses them.
pub const MIN_SECRET_LEN: usize = encodings::MIN_LEN;

use matcher::{Anchors, Matcher, Rule, Values};

/// The `[redact]` table is plain data in `profile`; its checks live here, next to the rules
/// and the regex engine they check against.
pub use crate::profile::RedactSection;

impl RedactSection {
    /// Check the section without any secret: unknown rule ids and bad regexes are errors that
    /// name the key and the fix.
    pub fn validate(&self) -> Result<(), RedactError> {
        self.resolve_rules()?;
        for (index, p) in self.patterns.iter().enumerate() {
            compile_pattern(index, p, 0)?;
        }
        Ok(())
    }

    fn resolve_rules(&self) -> Result<Vec<usize>, RedactError> {
        rules::resolve(&self.rules).map_err(|index| RedactError::UnknownRule {
            index,
            id: self.rules[index].clone(),
        })
    }
}

fn compile_pattern(index: usize, pattern: &str, name: u32) -> Result<Rule, RedactError> {
    let bad = |message: String| RedactError::BadPattern { index, message };
    let rule = Rule::new(pattern, name, PATTERN_MAX_LEN, |n| n == "secret").map_err(bad)?;
    if rule.matches_empty() {
        return Err(bad(
            "it matches the empty string, so it would match everywhere; require at least one character (e.g. `+` instead of `*`)".to_owned(),
        ));
    }
    Ok(rule)
}

/// The capture groups a built-in rule replaces (a profile pattern's: `secret` only).
fn builtin_group(name: &str) -> bool {
    name == "secret" || name.starts_with("secret_")
}

/// A profile pattern's live match is held up to this many bytes.
const PATTERN_MAX_LEN: usize = 16 * 1024;

/// Every built-in rule id (and rule group id) with a one-line description, for `explain`.
pub fn builtin_rules() -> &'static [(&'static str, &'static str)] {
    rules::catalogue()
}

/// Errors building a redactor or validating a `[redact]` table.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error(
        "redact.rules[{index}]: unknown rule id {id:?}; use a group (default, headers, urls, keys, tokens) or a rule id listed by `agentrun explain`"
    )]
    UnknownRule { index: usize, id: String },
    #[error(
        "redact.patterns[{index}]: invalid regex: {message}; fix the pattern (Rust regex syntax; name a group `secret` to replace only that part)"
    )]
    BadPattern { index: usize, message: String },
    #[error("redactor: cannot build the {what}: {message}")]
    Build { what: String, message: String },
}

/// The redactor for one run: immutable, shared by the stdout and stderr pumps.
pub struct Redactor {
    matcher: Matcher,
    names: Vec<String>,
    replacements: Vec<Vec<u8>>,
    too_short: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("names", &self.names)
            .field("rules", &self.matcher.rules.len())
            .field(
                "anchor_triggers",
                &self
                    .matcher
                    .anchors
                    .as_ref()
                    .map_or(0, Anchors::trigger_count),
            )
            .field(
                "value_patterns",
                &self.matcher.values.as_ref().map_or(0, Values::len),
            )
            .finish_non_exhaustive()
    }
}

impl Redactor {
    /// Build the redactor from the profile's section and every declared secret that was
    /// fetched, as `(name, value)`.
    pub fn new(
        section: &RedactSection,
        secrets: &[(&str, &SecretString)],
    ) -> Result<Redactor, RedactError> {
        let mut names: Vec<String> = Vec::new();
        let mut name_ids: HashMap<String, u32> = HashMap::new();
        let mut intern = |n: &str, names: &mut Vec<String>| -> u32 {
            if let Some(&id) = name_ids.get(n) {
                return id;
            }
            let id = names.len() as u32;
            names.push(n.to_owned());
            name_ids.insert(n.to_owned(), id);
            id
        };

        // Known values: every form of every secret, first owner wins on duplicates.
        let mut value_patterns: Vec<Vec<u8>> = Vec::new();
        let mut value_names: Vec<u32> = Vec::new();
        let mut seen: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
        let mut too_short = Vec::new();
        for (name, value) in secrets {
            let value = value.expose_secret();
            let id = intern(name, &mut names);
            let forms = encodings::patterns(value);
            if forms.is_empty() {
                if !value.is_empty() {
                    too_short.push((*name).to_owned());
                }
                continue;
            }
            for f in forms {
                if seen.insert(f.clone()) {
                    value_patterns.push(f);
                    value_names.push(id);
                }
            }
        }
        // Rules: built-ins first, then the profile's patterns.
        let mut compiled: Vec<Rule> = Vec::new();
        let mut anchor_patterns: Vec<Vec<u8>> = Vec::new();
        let mut anchor_rules: Vec<Vec<u32>> = Vec::new();
        let mut anchor_index: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut everywhere = Vec::new();
        let mut add_anchor =
            |lit: Vec<u8>, rule: u32, pats: &mut Vec<Vec<u8>>, rs: &mut Vec<Vec<u32>>| {
                let key = lit.to_ascii_lowercase();
                let i = *anchor_index.entry(key).or_insert_with(|| {
                    pats.push(lit);
                    rs.push(Vec::new());
                    pats.len() - 1
                });
                if !rs[i].contains(&rule) {
                    rs[i].push(rule);
                }
            };
        for r in section.resolve_rules()? {
            let def = &rules::RULES[r];
            let name = intern(def.id, &mut names);
            let rule = Rule::deferred(def.pattern, name, def.check, def.max_len, builtin_group);
            let idx = compiled.len() as u32;
            compiled.push(rule);
            for pre in def.anchor_prefixes {
                for a in def.anchors {
                    add_anchor(
                        format!("{pre}{a}").into_bytes(),
                        idx,
                        &mut anchor_patterns,
                        &mut anchor_rules,
                    );
                }
            }
        }
        for (index, p) in section.patterns.iter().enumerate() {
            let name = intern(&format!("patterns[{index}]"), &mut names);
            let rule = compile_pattern(index, p, name)?;
            let idx = compiled.len() as u32;
            compiled.push(rule);
            match matcher::prefix_literals(p) {
                Some(lits) => {
                    for l in lits {
                        add_anchor(l, idx, &mut anchor_patterns, &mut anchor_rules);
                    }
                }
                None => everywhere.push(idx),
            }
        }
        let values = if value_patterns.is_empty() {
            None
        } else {
            Some(Values::new(&value_patterns, value_names)?)
        };
        for p in &mut value_patterns {
            p.fill(0);
        }
        let anchors = if anchor_patterns.is_empty() {
            None
        } else {
            Some(Anchors::new(&anchor_patterns, anchor_rules)?)
        };

        let replacements = names
            .iter()
            .map(|n| section.replacement.replace("{name}", n).into_bytes())
            .collect();
        Ok(Redactor {
            matcher: Matcher {
                values,
                anchors,
                rules: compiled,
                everywhere,
            },
            names,
            replacements,
            too_short,
        })
    }

    /// A streaming state for one output stream (stdout and stderr each get one).
    pub fn stream(&self) -> RedactStream<'_> {
        RedactStream::new(self)
    }

    /// Redact a whole buffer at once (agentrun's own messages; the reference for tests).
    pub fn redact_bytes(&self, input: &[u8]) -> Vec<u8> {
        let mut s = self.stream();
        let mut out = Vec::with_capacity(input.len());
        s.finish_with(input, &mut out);
        out
    }

    /// [`Redactor::redact_bytes`] for text (a message, a report line), lossy where a
    /// replacement split a character.
    pub fn redact_text(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.redact_bytes(text.as_bytes())).into_owned()
    }

    /// Names of declared secrets too short to redact (fewer than 4 bytes): the launcher should
    /// warn about them. Empty values are not listed.
    pub fn too_short(&self) -> &[String] {
        &self.too_short
    }

    /// Approximate heap bytes of the matching automata (for diagnostics and the RSS budget).
    pub fn memory_usage(&self) -> usize {
        self.matcher.values.as_ref().map_or(0, Values::memory_usage)
            + self
                .matcher
                .anchors
                .as_ref()
                .map_or(0, Anchors::memory_usage)
    }
}
