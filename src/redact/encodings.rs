//! The forms a known secret value takes when a program re-encodes it.
//!
//! Pure functions from a value to the byte strings the matcher looks for. Each form is one that
//! real programs print: base64 (standard and URL-safe, at each of the three byte alignments, so
//! `base64("user:" + pw)` is caught), hex, URL-encoding as different libraries do it, JSON and
//! Go `%q` quoting, shell quoting, XML/HTML entities (named, decimal and hex), a doubled single
//! quote (SQL, CI expression strings), the value inside double quotes, and a multi-line value
//! line by line and re-joined with literal `\n`. Nothing here knows a secret's name or keeps a
//! value beyond the returned vectors.
//!
//! The matcher looks for values in the output with its line breaks taken out (wrapped base64,
//! `xxd -p`), so no form holds a `\r` or `\n`. Base64 and hex forms also come as overlapping
//! tiles, so a wrapped form is covered even where its first bytes end a line.
//!
//! The cost is bounded: a value longer than [`LONG_SECRET`] bytes is matched by tiles of its
//! most common forms within a fixed budget ([`LONG_BUDGET`]), not by every form whole.

/// Values (and each encoded form) shorter than this are not matched: a three-byte "secret" would
/// replace ordinary text everywhere and protects nothing anyway.
pub(crate) const MIN_LEN: usize = 4;

/// Fragments: any run of this many characters of a secret that has at least
/// [`FRAGMENT_MIN_SECRET`] characters (and at most [`LONG_SECRET`] bytes) is replaced.
pub(crate) const FRAGMENT_LEN: usize = 12;
pub(crate) const FRAGMENT_MIN_SECRET: usize = 16;

/// A value longer than this (bytes) is matched by tiles within [`LONG_BUDGET`].
pub(crate) const LONG_SECRET: usize = 4096;
/// Pattern bytes a long value may register: about 15 ms and 25 MiB of matcher build.
pub(crate) const LONG_BUDGET: usize = 512 * 1024;
/// Tiles: pieces this long every `TILE / 2` bytes, so that where one tile begins too close to a
/// line end to count (see the matcher's `JOIN_MIN`), its neighbours still meet.
pub(crate) const TILE: usize = 16;

/// A value split over lines is matched across a line break when the part before its first
/// break is at least this long (or begins a line): shorter line tails go out at once.
pub(crate) const JOIN_MIN: usize = 4;

pub(crate) const B64_STD: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
pub(crate) const B64_URL: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Padded base64 of `data` with the given alphabet.
pub(crate) fn base64(data: &[u8], alphabet: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (i, c) in chars.iter().enumerate() {
            if i <= chunk.len() {
                out.push(alphabet[*c as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    out
}

/// The base64 forms of `value` wherever it sits in a longer encoded message: for each of the
/// three alignments, the characters that depend on the value's bytes only (the core), plus the
/// endings seen when the message ends right after the value (with and without padding).
fn base64_forms(value: &[u8], out: &mut Vec<Vec<u8>>) {
    for alphabet in [B64_STD, B64_URL] {
        for offset in 0..3usize {
            let mut data = vec![0u8; offset];
            data.extend_from_slice(value);
            let enc = base64(&data, alphabet);
            // Leading characters that mix in the unknown bytes before the value.
            let skip = [0, 2, 3][offset];
            let rem = data.len() % 3;
            // Trailing characters that would mix in unknown bytes after the value.
            let (core_end, unpadded_end) = match rem {
                0 => (enc.len(), enc.len()),
                1 => (enc.len() - 3, enc.len() - 2),
                _ => (enc.len() - 2, enc.len() - 1),
            };
            if core_end > skip {
                out.push(enc[skip..core_end].to_vec());
                if rem != 0 {
                    out.push(enc[skip..unpadded_end].to_vec());
                    out.push(enc[skip..].to_vec());
                }
            }
        }
    }
}

fn hex_forms(value: &[u8], out: &mut Vec<Vec<u8>>) {
    let lower = hex::encode(value).into_bytes();
    out.push(lower.to_ascii_uppercase());
    out.push(lower);
}

/// Percent-encoding as different libraries do it: which bytes stay literal differs.
fn url_forms(value: &[u8], out: &mut Vec<Vec<u8>>) {
    let rfc3986 = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
    let js_component = |b: u8| b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b);
    let python_quote = |b: u8| rfc3986(b) || b == b'/';
    let form = |b: u8| b.is_ascii_alphanumeric() || b"*-._".contains(&b);
    let keep_sets: [&dyn Fn(u8) -> bool; 4] = [&rfc3986, &js_component, &python_quote, &form];
    for (i, keep) in keep_sets.iter().enumerate() {
        for upper in [true, false] {
            let mut enc = Vec::with_capacity(value.len() * 3);
            for &b in value {
                if keep(b) {
                    enc.push(b);
                } else if i == 3 && b == b' ' {
                    enc.push(b'+');
                } else {
                    let h = if upper {
                        format!("%{b:02X}")
                    } else {
                        format!("%{b:02x}")
                    };
                    enc.extend_from_slice(h.as_bytes());
                }
            }
            out.push(enc);
        }
    }
}

fn json_forms(value: &str, out: &mut Vec<Vec<u8>>) {
    let mut plain = String::with_capacity(value.len() + 8);
    let mut ascii = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        let esc = match c {
            '"' => Some("\\\"".to_owned()),
            '\\' => Some("\\\\".to_owned()),
            '\n' => Some("\\n".to_owned()),
            '\r' => Some("\\r".to_owned()),
            '\t' => Some("\\t".to_owned()),
            '\u{8}' => Some("\\b".to_owned()),
            '\u{c}' => Some("\\f".to_owned()),
            c if (c as u32) < 0x20 => Some(format!("\\u{:04x}", c as u32)),
            _ => None,
        };
        match esc {
            Some(e) => {
                plain.push_str(&e);
                ascii.push_str(&e);
            }
            None => {
                plain.push(c);
                if c.is_ascii() {
                    ascii.push(c);
                } else {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        ascii.push_str(&format!("\\u{u:04x}"));
                    }
                }
            }
        }
    }
    out.push(plain.replace('/', "\\/").into_bytes());
    out.push(ascii.into_bytes());
    out.push(plain.into_bytes());
}

fn shell_forms(value: &str, out: &mut Vec<Vec<u8>>) {
    // Inside single quotes (sh, Python's shlex.quote).
    out.push(value.replace('\'', "'\\''").into_bytes());
    out.push(value.replace('\'', "'\"'\"'").into_bytes());
    // Inside double quotes.
    let mut dq = String::with_capacity(value.len() + 4);
    // Unquoted with backslashes (bash's printf %q).
    let mut bs = String::with_capacity(value.len() + 4);
    for c in value.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            dq.push('\\');
        }
        dq.push(c);
        if !(c.is_ascii_alphanumeric() || "_./:@%+=,-".contains(c)) && c.is_ascii() {
            bs.push('\\');
        }
        bs.push(c);
    }
    out.push(dq.into_bytes());
    out.push(bs.into_bytes());
}

/// XML/HTML entities: `&amp;`, `&lt;`, `&gt;` and each way libraries write the quotes
/// (`&quot;` `&#34;` `&#x22;`; `&#39;` `&#039;` `&#x27;` `&apos;`), in every pairing.
fn html_forms(value: &str, out: &mut Vec<Vec<u8>>) {
    const DQ: [&str; 3] = ["&quot;", "&#34;", "&#x22;"];
    const SQ: [&str; 4] = ["&#39;", "&#039;", "&#x27;", "&apos;"];
    let has_dq = value.contains('"');
    let has_sq = value.contains('\'');
    for (i, dq) in DQ.iter().enumerate() {
        for (j, sq) in SQ.iter().enumerate() {
            if (!has_dq && i > 0) || (!has_sq && j > 0) {
                continue;
            }
            let mut f = String::with_capacity(value.len() + 8);
            for c in value.chars() {
                match c {
                    '&' => f.push_str("&amp;"),
                    '<' => f.push_str("&lt;"),
                    '>' => f.push_str("&gt;"),
                    '"' => f.push_str(dq),
                    '\'' => f.push_str(sq),
                    c => f.push(c),
                }
            }
            out.push(f.into_bytes());
        }
    }
}

/// Go's `%q` / `strconv.Quote` without the quotes (what Buildkite's redactor adds).
fn go_quote_form(value: &str, out: &mut Vec<Vec<u8>>) {
    let mut f = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\x07' => f.push_str("\\a"),
            '\x08' => f.push_str("\\b"),
            '\x0c' => f.push_str("\\f"),
            '\n' => f.push_str("\\n"),
            '\r' => f.push_str("\\r"),
            '\t' => f.push_str("\\t"),
            '\x0b' => f.push_str("\\v"),
            '\\' => f.push_str("\\\\"),
            '"' => f.push_str("\\\""),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                f.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => f.push(c),
        }
    }
    out.push(f.into_bytes());
}

/// Quote doubling (SQL strings, GitHub expression strings), and a value that is itself in
/// double quotes without them (what GitHub's runner adds).
fn quote_forms(value: &str, out: &mut Vec<Vec<u8>>) {
    out.push(value.replace('\'', "''").into_bytes());
    out.push(value.replace('"', "\"\"").into_bytes());
    if value.len() > 8 && value.starts_with('"') && value.ends_with('"') {
        out.push(value.as_bytes()[1..value.len() - 1].to_vec());
    }
}

/// Every form of `value` to match as a whole (the value itself first), deduplicated, each at
/// least [`MIN_LEN`] bytes. Empty when the value itself is shorter than [`MIN_LEN`].
pub(crate) fn whole_forms(value: &str) -> Vec<Vec<u8>> {
    if value.len() < MIN_LEN {
        return Vec::new();
    }
    let mut bases: Vec<String> = vec![value.to_owned()];
    if value.contains('\n') {
        let unix = value.replace("\r\n", "\n");
        bases.push(unix.clone());
        bases.push(unix.replace('\n', "\r\n"));
        bases.push(unix.replace('\n', "\\n"));
        bases.push(unix.replace('\n', "\\r\\n"));
        for line in unix.lines() {
            let line = line.trim_end_matches('\r').trim();
            if line.len() >= MIN_LEN {
                bases.push(line.to_owned());
            }
        }
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    for base in &bases {
        out.push(base.clone().into_bytes());
    }
    for base in &bases {
        base64_forms(base.as_bytes(), &mut out);
        hex_forms(base.as_bytes(), &mut out);
        url_forms(base.as_bytes(), &mut out);
        json_forms(base, &mut out);
        shell_forms(base, &mut out);
        html_forms(base, &mut out);
        go_quote_form(base, &mut out);
        quote_forms(base, &mut out);
    }
    finish(out)
}

/// Take line breaks out of each form (the matcher's view has none), drop the short ones,
/// deduplicate.
fn finish(mut out: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut seen = std::collections::HashSet::new();
    for f in &mut out {
        f.retain(|&b| b != b'\n' && b != b'\r');
    }
    out.retain(|f| f.len() >= MIN_LEN && seen.insert(f.clone()));
    out
}

/// The value as the matcher sees it printed: line breaks out.
fn joined(value: &str) -> String {
    value.replace(['\r', '\n'], "")
}

/// Pieces of `form`, `len` long, starting every `stride` bytes, and the last `len` bytes.
/// With `stride <= len / 2`, where one piece begins too close to a line end to count, its
/// neighbours meet; at the two ends, pieces shifted by up to [`JOIN_MIN`] bytes do that job
/// (so at most `JOIN_MIN - 1` bytes of a wrapped form go out at a line end).
fn tiles(form: &[u8], len: usize, stride: usize, out: &mut Vec<Vec<u8>>) {
    if form.len() <= len {
        if form.len() >= MIN_LEN {
            out.push(form.to_vec());
        }
        return;
    }
    let mut k = 0;
    while k + len < form.len() {
        out.push(form[k..k + len].to_vec());
        k += stride;
    }
    let last = form.len() - len;
    out.push(form[last..].to_vec());
    for p in 1..JOIN_MIN.min(last) {
        out.push(form[p..p + len].to_vec());
        out.push(form[last + p..].to_vec());
    }
}

/// The base64 cores (both alphabets, three alignments) and hex forms of `value`, in that order.
fn encoded_cores(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for alphabet in [B64_STD, B64_URL] {
        for offset in 0..3usize {
            let mut data = vec![0u8; offset];
            data.extend_from_slice(value);
            let enc = base64(&data, alphabet);
            let skip = [0, 2, 3][offset];
            let core_end = match data.len() % 3 {
                0 => enc.len(),
                1 => enc.len() - 3,
                _ => enc.len() - 2,
            };
            if core_end > skip {
                out.push(enc[skip..core_end].to_vec());
            }
        }
    }
    hex_forms(value, &mut out);
    out
}

/// Every pattern the redactor registers for `value`: its whole forms, fragments and tiles, or
/// for a long value ([`LONG_SECRET`]) tiles within [`LONG_BUDGET`]. Empty when the value is
/// shorter than [`MIN_LEN`].
pub(crate) fn patterns(value: &str) -> Vec<Vec<u8>> {
    if value.len() < MIN_LEN {
        return Vec::new();
    }
    if value.len() > LONG_SECRET {
        return long_patterns(value);
    }
    let mut out = whole_forms(value);
    if out.is_empty() {
        return out;
    }
    out.extend(fragments(value));
    // Tiles of the forms that wrapping tools print: standard base64 (`base64`, `openssl`) and
    // lower-case hex (`xxd -p`); for a multi-line value also with `\n` line ends.
    let mut cores = Vec::new();
    let unix = value.replace("\r\n", "\n");
    let bases: &[&str] = if unix == value {
        &[value]
    } else {
        &[value, &unix]
    };
    for base in bases {
        let enc = encoded_cores(base.as_bytes());
        let n = enc.len();
        for core in enc[..3.min(n)].iter().chain(enc.get(n.wrapping_sub(1))) {
            tiles(core, TILE, TILE / 2, &mut cores);
        }
    }
    out.extend(cores);
    finish(out)
}

/// A long value: tiles of its joined raw form (always, at a stride that fits the budget), then
/// of its base64 (standard) cores, lower-case hex, JSON-escaped form, URL-safe base64 cores and
/// upper-case hex, each taken whole while the budget lasts.
fn long_patterns(value: &str) -> Vec<Vec<u8>> {
    let raw = joined(value).into_bytes();
    let mut out = Vec::new();
    // Tiles of TILE bytes every TILE/2 cost about twice the form's length.
    let full = 2 * raw.len();
    let stride = if full <= LONG_BUDGET {
        TILE / 2
    } else {
        (raw.len() * TILE).div_ceil(LONG_BUDGET)
    };
    tiles(&raw, TILE, stride, &mut out);
    let mut spent = out.len() * TILE;
    let cores = encoded_cores(value.as_bytes());
    let mut json = Vec::new();
    json_forms(value, &mut json);
    // cores: std x3, url x3, hex lower, hex upper.
    let mut order: Vec<&[u8]> = Vec::new();
    order.extend(cores[..3].iter().map(Vec::as_slice));
    order.extend(cores.get(7).map(Vec::as_slice));
    order.extend(json.last().map(Vec::as_slice));
    order.extend(cores[3..6].iter().map(Vec::as_slice));
    order.extend(cores.get(6).map(Vec::as_slice));
    for form in order {
        let cost = 2 * form.len();
        if spent + cost > LONG_BUDGET {
            break;
        }
        tiles(form, TILE, TILE / 2, &mut out);
        spent += cost;
    }
    finish(out)
}

/// Every run of [`FRAGMENT_LEN`] characters of `value` (line breaks out) when it has at least
/// [`FRAGMENT_MIN_SECRET`] characters. Windows that start or end with whitespace are left out:
/// they would make every line ending look like part of a secret (held back, or replaced along
/// with the line before it), and the neighbouring window catches the same run.
pub(crate) fn fragments(value: &str) -> Vec<Vec<u8>> {
    let value = &joined(value);
    let mut bounds: Vec<usize> = value.char_indices().map(|(i, _)| i).collect();
    let chars = bounds.len();
    if chars < FRAGMENT_MIN_SECRET {
        return Vec::new();
    }
    bounds.push(value.len());
    let bytes = value.as_bytes();
    (0..=chars - FRAGMENT_LEN)
        .map(|k| &bytes[bounds[k]..bounds[k + FRAGMENT_LEN]])
        .filter(|w| !w[0].is_ascii_whitespace() && !w[w.len() - 1].is_ascii_whitespace())
        .map(<[u8]>::to_vec)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn std_b64(s: &[u8]) -> String {
        String::from_utf8(base64(s, B64_STD)).unwrap()
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(std_b64(b""), "");
        assert_eq!(std_b64(b"f"), "Zg==");
        assert_eq!(std_b64(b"fo"), "Zm8=");
        assert_eq!(std_b64(b"foo"), "Zm9v");
        assert_eq!(std_b64(b"foobar"), "Zm9vYmFy");
        assert_eq!(
            String::from_utf8(base64(&[0xfb, 0xff], B64_URL)).unwrap(),
            "-_8="
        );
    }

    #[test]
    fn base64_core_is_found_at_every_alignment_and_prefix() {
        let pw = "hunter2-correct-horse";
        let forms = whole_forms(pw);
        for prefix in ["", "u", "us", "user:", "admin:", "xy:"] {
            for suffix in ["", "!", "!!", "!!!"] {
                let msg = format!("{prefix}{pw}{suffix}");
                let enc = base64(msg.as_bytes(), B64_STD);
                assert!(
                    forms
                        .iter()
                        .any(|f| enc.windows(f.len()).any(|w| w == f.as_slice())),
                    "no form of the secret inside base64({msg:?})"
                );
            }
        }
    }

    #[test]
    fn fragments_cover_every_twelve_char_run() {
        let v = "abcdefghijklmnopqrst";
        let f = fragments(v);
        assert_eq!(f.len(), v.len() - FRAGMENT_LEN + 1);
        assert!(fragments("short-secret-15").is_empty());
    }
}
