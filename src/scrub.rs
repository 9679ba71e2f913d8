//! Cutting `user:pass@` out of every URL agentrun prints or logs, and making text that
//! others chose (file names, paths) safe to print on the operator's terminal.
//!
//! A Vault address, an AWS endpoint or a server's error message can carry userinfo
//! (`https://user:pass@host`); agentrun's messages, `check`, `explain` and the audit log
//! show such a URL without it. One helper, applied where text leaves agentrun, so that no
//! formatting path is missed.

use regex::Regex;
use serde_json::Value;
use std::borrow::Cow;
use std::sync::OnceLock;

/// `scheme://` followed by userinfo up to the last `@` before the host ends.
fn userinfo() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| {
        // The authority ends at `/`, `?`, `#`, whitespace or a quote; userinfo is all of it
        // up to its last `@` (a password may hold an unencoded `@`).
        Regex::new(r#"(?i)\b([a-z][a-z0-9+.\-]*://)[^/?#\s"'<>`]*@"#).ok()
    })
    .as_ref()
}

/// `text` with the userinfo of every URL in it removed (`https://u:p@h/x` -> `https://h/x`).
pub fn strip_userinfo(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    match userinfo() {
        Some(re) => re.replace_all(text, "$1"),
        // The pattern is a constant and compiles; if it ever did not, hide the text.
        None => Cow::Borrowed("(not shown: it may hold a URL with a password)"),
    }
}

/// Every string in a JSON document, keys included, through [`strip_userinfo`].
pub fn strip_userinfo_json(v: &mut Value) {
    match v {
        Value::String(s) => {
            if let Cow::Owned(o) = strip_userinfo(s) {
                *s = o;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_userinfo_json),
        Value::Object(m) => {
            let taken = std::mem::take(m);
            for (k, mut val) in taken {
                strip_userinfo_json(&mut val);
                m.insert(strip_userinfo(&k).into_owned(), val);
            }
        }
        _ => {}
    }
}

/// `s` safe to print on the operator's terminal: control characters (escape sequences) and
/// every character outside printable ASCII shown as Rust escapes (`\u{1b}`). Text others
/// chose (a file name, a path) is redacted first, then passed through this.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ' '..='~' => out.push(c),
            c => out.extend(c.escape_unicode()),
        }
    }
    out
}

/// Invisible format characters a terminal or log viewer acts on or hides: bidirectional
/// marks, overrides and isolates, zero-width characters, line and paragraph separators, the
/// byte-order mark, soft hyphen, Mongolian vowel separator, interlinear annotations, tags.
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{ad}' | '\u{61c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}' | '\u{e0000}'..='\u{e007f}')
}

/// `s` with control characters (C0 but newline and tab, DEL, C1) and invisible format
/// characters (see `is_format`) shown as Rust escapes; everything else as it is (a message's multi-line layout
/// and its non-ASCII names survive).
pub fn controls_escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if (c.is_control() && c != '\n' && c != '\t') || is_format(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn controls_escaped_keeps_lines_and_names() {
        assert_eq!(
            super::controls_escaped(
                "a\u{1b}]0;x\u{7}\nb\u{9b}2J caf\u{e9}\u{202e}\u{200f}\u{2028}\u{feff}\u{e0041}"
            ),
            "a\\u{1b}]0;x\\u{7}\nb\\u{9b}2J caf\u{e9}\\u{202e}\\u{200f}\\u{2028}\\u{feff}\\u{e0041}"
        );
    }

    #[test]
    fn printable_escapes_controls_and_non_ascii() {
        assert_eq!(
            super::printable("a\u{1b}[2Jb\u{202e}c\u{e9}"),
            "a\\u{1b}[2Jb\\u{202e}c\\u{e9}"
        );
        assert_eq!(super::printable("plain/path.py"), "plain/path.py");
    }

    use super::*;

    #[test]
    fn userinfo_is_cut_from_every_url() {
        for (input, want) in [
            ("https://u:p@vault:8200", "https://vault:8200"),
            (
                "vault at http://user:pa@ss@127.0.0.1:1/x failed",
                "vault at http://127.0.0.1:1/x failed",
            ),
            ("a HTTPS://tok@h?q=a@b b", "a HTTPS://h?q=a@b b"),
            (
                "address = \"http://u:p@h\" is not",
                "address = \"http://h\" is not",
            ),
            (
                "two: http://a@x and https://b:c@y/",
                "two: http://x and https://y/",
            ),
            (
                "mail me@example.com, http://h/p@q",
                "mail me@example.com, http://h/p@q",
            ),
            ("no url here", "no url here"),
        ] {
            assert_eq!(strip_userinfo(input), want, "{input}");
        }
    }

    #[test]
    fn json_strings_and_keys() {
        let mut v = serde_json::json!({"a": ["http://u:p@h"], "http://k@h": 1});
        strip_userinfo_json(&mut v);
        assert_eq!(v, serde_json::json!({"a": ["http://h"], "http://h": 1}));
    }
}
