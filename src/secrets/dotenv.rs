//! A strict dotenv parser: the value is exactly the bytes in the file.
//!
//! dotenvy 0.15 expands `$VAR` and `${VAR}` in unquoted and double-quoted values from the
//! process environment, with no way to turn it off. agentrun's environment holds its own
//! credentials (`VAULT_TOKEN`, `AWS_SECRET_ACCESS_KEY`), so a `.env` that an earlier run's
//! child rewrote to `API_KEY=${VAULT_TOKEN}` would hand them over. Nothing here substitutes:
//! `$` is an ordinary character everywhere.
//!
//! The grammar (a subset of what dotenv tools share):
//! - `KEY=value`, with an optional `export ` before the key and blanks around `=`;
//!   a key is `[A-Za-z_][A-Za-z0-9_.]*`;
//! - an unquoted value runs to the end of the line or to a blank followed by `#`, and is
//!   trimmed;
//! - `'...'` is literal and may span lines;
//! - `"..."` may span lines and knows the escapes `\n`, `\r`, `\t`, `\\`, `\"`, `\'`, `\$`
//!   (any other backslash stays as written);
//! - a line whose first non-blank character is `#` is a comment; blank lines are ignored.
//!
//! Errors name the line and the reason, never the line's text (it may hold a secret).

/// One `KEY=value` assignment.
pub(super) struct Entry {
    pub key: String,
    pub value: String,
}

/// A parsed file: its assignments in order, and whether it holds anything besides them
/// (a comment with text in it, an inline comment).
pub(super) struct Parsed {
    pub entries: Vec<Entry>,
    pub has_comments: bool,
}

impl Parsed {
    /// True when the file holds exactly one assignment for each of `keys` and nothing else
    /// (blank lines aside): then reading it gives nothing the child does not get anyway.
    pub(super) fn holds_exactly(&self, keys: &[&str]) -> bool {
        if self.has_comments || self.entries.len() != keys.len() {
            return false;
        }
        let mut found: Vec<&str> = self.entries.iter().map(|e| e.key.as_str()).collect();
        let mut want: Vec<&str> = keys.to_vec();
        found.sort_unstable();
        want.sort_unstable();
        found == want
    }
}

/// Where and why a file is not a dotenv file. Never holds the file's text.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ParseError {
    pub line: usize,
    pub why: &'static str,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.why)
    }
}

pub(super) fn parse(text: &str) -> Result<Parsed, ParseError> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        line: 1,
    };
    let mut out = Parsed {
        entries: Vec::new(),
        has_comments: false,
    };
    loop {
        p.skip_blanks();
        match p.peek() {
            None => break,
            Some(b'\n') => {
                p.newline();
                continue;
            }
            Some(b'\r') if p.peek_at(1) == Some(b'\n') => {
                p.i += 1;
                continue;
            }
            Some(b'#') => {
                p.i += 1;
                if p.comment_has_text() {
                    out.has_comments = true;
                }
                continue;
            }
            _ => {}
        }
        let start_line = p.line;
        let err = |why| ParseError {
            line: start_line,
            why,
        };
        if p.rest().starts_with(b"export ") || p.rest().starts_with(b"export\t") {
            p.i += 7;
            p.skip_blanks();
        }
        let key = p.key().ok_or_else(|| {
            err("expected KEY=value (a key is letters, digits, `_` and `.`, not starting with a digit)")
        })?;
        p.skip_blanks();
        if p.peek() != Some(b'=') {
            return Err(err("the key is not followed by `=`"));
        }
        p.i += 1;
        p.skip_blanks();
        let value = match p.peek() {
            Some(b'\'') => {
                p.i += 1;
                p.single_quoted()
                    .ok_or_else(|| err("a single-quoted value has no closing `'`"))?
            }
            Some(b'"') => {
                p.i += 1;
                p.double_quoted()
                    .ok_or_else(|| err("a double-quoted value has no closing `\"`"))?
            }
            _ => p.unquoted(),
        };
        // After the value: blanks, then a comment or the end of the line.
        p.skip_blanks();
        match p.peek() {
            None => {}
            Some(b'\n') => p.newline(),
            Some(b'\r') if p.peek_at(1) == Some(b'\n') => {
                p.i += 1;
                p.newline();
            }
            Some(b'#') => {
                p.i += 1;
                if p.comment_has_text() {
                    out.has_comments = true;
                }
            }
            Some(_) => {
                return Err(ParseError {
                    line: p.line,
                    why: "text after a quoted value: put the whole value in the quotes",
                });
            }
        }
        let value = String::from_utf8(value).map_err(|_| err("the value is not valid UTF-8"))?;
        out.entries.push(Entry { key, value });
    }
    Ok(out)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    line: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn peek_at(&self, n: usize) -> Option<u8> {
        self.s.get(self.i + n).copied()
    }

    fn rest(&self) -> &[u8] {
        &self.s[self.i.min(self.s.len())..]
    }

    fn newline(&mut self) {
        self.i += 1;
        self.line += 1;
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    /// Consumes a comment's text up to (and including) the end of its line; true when it
    /// holds anything but blanks.
    fn comment_has_text(&mut self) -> bool {
        let mut text = false;
        while let Some(c) = self.peek() {
            if c == b'\n' {
                self.newline();
                break;
            }
            if !c.is_ascii_whitespace() {
                text = true;
            }
            self.i += 1;
        }
        text
    }

    fn key(&mut self) -> Option<String> {
        let start = self.i;
        match self.peek() {
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => self.i += 1,
            _ => return None,
        }
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
        {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()
            .map(str::to_string)
    }

    fn single_quoted(&mut self) -> Option<Vec<u8>> {
        let mut v = Vec::new();
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'\'' => return Some(v),
                b'\n' => {
                    self.line += 1;
                    v.push(c);
                }
                _ => v.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Option<Vec<u8>> {
        let mut v = Vec::new();
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => return Some(v),
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    match e {
                        b'n' => v.push(b'\n'),
                        b'r' => v.push(b'\r'),
                        b't' => v.push(b'\t'),
                        b'\\' | b'"' | b'\'' | b'$' => v.push(e),
                        b'\n' => {
                            self.line += 1;
                            v.extend_from_slice(b"\\\n");
                        }
                        _ => v.extend_from_slice(&[b'\\', e]),
                    }
                }
                b'\n' => {
                    self.line += 1;
                    v.push(c);
                }
                _ => v.push(c),
            }
        }
    }

    /// To the end of the line or to a blank followed by `#`; trailing blanks dropped.
    fn unquoted(&mut self) -> Vec<u8> {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == b'\n' || (c == b'\r' && self.peek_at(1) == Some(b'\n')) {
                break;
            }
            if c == b'#' && self.i > start && matches!(self.s[self.i - 1], b' ' | b'\t') {
                break;
            }
            self.i += 1;
        }
        let mut v = self.s[start..self.i].to_vec();
        while matches!(v.last(), Some(b' ' | b'\t')) {
            v.pop();
        }
        v
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn get(text: &str, key: &str) -> Option<String> {
        parse(text)
            .unwrap()
            .entries
            .into_iter()
            .rev()
            .find(|e| e.key == key)
            .map(|e| e.value)
    }

    #[test]
    fn nothing_is_substituted() {
        let t = "A=${HOME}:$PATH\nB=\"${HOME} $PATH\"\nC='${HOME}'\nD=\"\\${X}\"\n";
        assert_eq!(get(t, "A").unwrap(), "${HOME}:$PATH");
        assert_eq!(get(t, "B").unwrap(), "${HOME} $PATH");
        assert_eq!(get(t, "C").unwrap(), "${HOME}");
        assert_eq!(get(t, "D").unwrap(), "${X}");
    }

    #[test]
    fn quotes_export_comments_and_crlf() {
        let t = "# top\n\nexport A=1\nB = two words # note\nC='x # y'\r\nD=\"l1\\nl2\"\nE='multi\nline'\nF=a#b\nG=\n";
        let p = parse(t).unwrap();
        assert!(p.has_comments);
        let v = |k| get(t, k).unwrap();
        assert_eq!(v("A"), "1");
        assert_eq!(v("B"), "two words");
        assert_eq!(v("C"), "x # y");
        assert_eq!(v("D"), "l1\nl2");
        assert_eq!(v("E"), "multi\nline");
        assert_eq!(v("F"), "a#b");
        assert_eq!(v("G"), "");
    }

    #[test]
    fn exactly_the_declared_keys() {
        let only = parse("A=1\n\nB='2'\n#\n").unwrap();
        assert!(only.holds_exactly(&["B", "A"]));
        assert!(!only.holds_exactly(&["A"]));
        assert!(!parse("A=1\n#A=old\n").unwrap().holds_exactly(&["A"]));
        assert!(!parse("A=old\nA=1\n").unwrap().holds_exactly(&["A"]));
        assert!(!parse("A=1 # pw\n").unwrap().holds_exactly(&["A"]));
    }

    #[test]
    fn errors_name_the_line_not_the_text() {
        for (t, line) in [
            ("A=1\nhunter2secret\n", 2),
            ("A='open\n\n", 1),
            ("A=\"x\" trailing-secret\n", 1),
            ("1A=x\n", 1),
            ("A=1\nB \"x\"\n", 2),
        ] {
            let e = parse(t).err().unwrap();
            assert_eq!(e.line, line, "{t:?}: {e}");
            let msg = e.to_string();
            assert!(!msg.contains("secret") && !msg.contains("open"), "{msg}");
        }
    }
}
