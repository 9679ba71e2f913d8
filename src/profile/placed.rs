//! A TOML or type error in a profile, placed and worded for the operator: the dotted key it
//! is about (`limits.nofile`), at that key's own line, in TOML's words (`expected an
//! integer, found a string`), never quoting a string value (a credential pasted in the
//! wrong place would otherwise be printed).
//!
//! serde's messages name Rust types and quote the value, and a table's errors are placed
//! wherever the deserializer stood. The key is found from the error's span in the document
//! itself (toml's spanned `DeTable`), so every table gets this, not one at a time.

use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The byte offset to report and the message (`KEY: reworded`), for a toml error at `span`.
pub(super) fn place(text: &str, span: Range<usize>, message: &str) -> (usize, String) {
    let reworded = reword(message);
    let Ok(doc) = DeTable::parse(text) else {
        return (span.start, reworded);
    };
    let mut best: Option<(usize, Vec<String>, usize)> = None;
    walk(doc.get_ref(), span.start, &mut Vec::new(), &mut best);
    match best {
        Some((_, path, at)) => (at, format!("{}: {reworded}", path.join("."))),
        None => (span.start, reworded),
    }
}

/// Every key of `table` whose key or value holds `pos`; the deepest wins (its path and the
/// offset of its key).
fn walk(
    table: &DeTable<'_>,
    pos: usize,
    path: &mut Vec<String>,
    best: &mut Option<(usize, Vec<String>, usize)>,
) {
    for (k, v) in table.iter() {
        path.push(k.get_ref().to_string());
        consider(k.span(), v, pos, path, best);
        path.pop();
    }
}

fn consider(
    key_span: Range<usize>,
    v: &Spanned<DeValue<'_>>,
    pos: usize,
    path: &mut Vec<String>,
    best: &mut Option<(usize, Vec<String>, usize)>,
) {
    let here = key_span.contains(&pos) || v.span().contains(&pos) || v.span().start == pos;
    if here && best.as_ref().is_none_or(|(d, _, _)| path.len() >= *d) {
        *best = Some((path.len(), path.clone(), key_span.start));
    }
    match v.get_ref() {
        DeValue::Table(t) => walk(t, pos, path, best),
        DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                let last = path.pop().unwrap_or_default();
                path.push(format!("{last}[{i}]"));
                // An element has no key of its own: it is placed at itself.
                consider(item.span(), item, pos, path, best);
                path.pop();
                path.push(last);
            }
        }
        _ => {}
    }
}

/// serde's wording in TOML's terms, without quoting a string value.
fn reword(message: &str) -> String {
    for (prefix, found_first) in [("invalid type: ", true), ("invalid value: ", false)] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.rsplit_once(", expected ")
        {
            let found = if found_first || found.starts_with("string") {
                found_word(found)
            } else {
                found.to_string()
            };
            return format!("expected {}, found {found}", expected_word(expected));
        }
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return format!("unknown key {rest}");
    }
    // The value is not repeated: it may be a credential pasted into the wrong key.
    if let Some(rest) = message.strip_prefix("unknown variant ")
        && let Some((_, expected)) = rest.split_once(", expected ")
    {
        return format!("unknown value, expected {expected}");
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return format!("missing key {rest}");
    }
    message.to_string()
}

fn found_word(found: &str) -> String {
    let kind = [
        ("string", "a string"),
        ("integer", "an integer"),
        ("floating point", "a float"),
        ("boolean", "a boolean"),
        ("sequence", "an array"),
        ("map", "a table"),
        ("character", "a string"),
    ]
    .into_iter()
    .find(|(serde, _)| found.starts_with(serde));
    match kind {
        Some((_, toml)) => toml.into(),
        None => "a value of another type".into(),
    }
}

fn expected_word(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a non-negative integer".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".into(),
        "f32" | "f64" => "a float".into(),
        "a sequence" => "an array".into(),
        "a map" => "a table".into(),
        e if e.starts_with("struct ") => "a table".into(),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewording() {
        assert_eq!(
            reword("invalid type: string \"sk-secret\", expected u64"),
            "expected a non-negative integer, found a string"
        );
        assert_eq!(
            reword("invalid type: integer `3`, expected a string"),
            "expected a string, found an integer"
        );
        assert_eq!(
            reword("invalid value: integer `-1`, expected u64"),
            "expected a non-negative integer, found integer `-1`"
        );
        assert_eq!(
            reword("unknown variant `ghp_x`, expected `env` or `file`"),
            "unknown value, expected `env` or `file`"
        );
        assert_eq!(
            reword("unknown field `form`, expected one of `from`, `as`"),
            "unknown key `form`, expected one of `from`, `as`"
        );
    }
}
