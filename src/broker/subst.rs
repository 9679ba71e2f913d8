//! Substitution: placeholders -> values in a request (headers, Basic auth, path, query, and
//! the `header` template), values -> placeholders in a response (headers, and the body while
//! it streams, split-safe across chunks).
//!
//! Each place gets the escaping it needs: percent-encoding in the path and query, base64
//! inside Basic auth. Body substitution (JSON and form bodies, `in = [.., "body"]`) is
//! issue 12; [`body_substitution_wanted`] is where it plugs in.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use hyper::body::{Body, Frame, SizeHint};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use secrecy::ExposeSecret;

use super::Secret;

/// Characters escaped when a value goes into a path segment.
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'%')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']');

/// Characters escaped when a value goes into a query.
const QUERY: &AsciiSet = &PATH.add(b'&').add(b'=').add(b'+').add(b';');

/// What a request's substitution did.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Secrets whose value went in.
    pub names: Vec<String>,
    /// Secrets whose placeholder stays, because the target is not theirs.
    pub mismatch: Vec<String>,
    /// Each encoded string this request wrote that differs from the raw value (a whole
    /// Basic credential, a percent-encoded value), with what the child had in its place:
    /// the response gets them put back ([`Restorer::with_extra`]).
    pub written: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Why a request could not be substituted.
#[derive(Debug)]
pub(crate) struct Unsendable(pub String);

fn push(v: &mut Vec<String>, name: &str) {
    if !v.iter().any(|n| n == name) {
        v.push(name.to_string());
    }
}

/// Replace placeholders in `parts`. `named(s)`: may `s`'s value go to this target?
pub(crate) fn apply(
    secrets: &[Secret],
    named: &dyn Fn(&Secret) -> bool,
    parts: &mut http::request::Parts,
) -> Result<Applied, Unsendable> {
    let mut out = Applied::default();
    let mut path = parts.uri.path().to_string();
    let mut query = parts.uri.query().map(str::to_string);
    for s in secrets {
        let ok = named(s);
        let value = s.value.expose_secret();
        let ph = s.placeholder.as_str();
        let mut found = false;
        // Headers (Host is checked elsewhere and never carries a value).
        let names: Vec<HeaderName> = parts.headers.keys().cloned().collect();
        for hname in names {
            if hname == http::header::HOST {
                continue;
            }
            let vals: Vec<HeaderValue> = parts.headers.get_all(&hname).iter().cloned().collect();
            let mut changed = false;
            let mut new_vals = Vec::with_capacity(vals.len());
            for v in vals {
                let (nv, hit) = header_value(&v, ph, value, ok && s.parts.header)?;
                if let Some(n) = &nv
                    && !n
                        .as_bytes()
                        .windows(value.len().max(1))
                        .any(|w| w == value.as_bytes())
                {
                    out.written
                        .push((n.as_bytes().to_vec(), v.as_bytes().to_vec()));
                }
                found |= hit;
                changed |= nv.is_some();
                new_vals.push(nv.unwrap_or(v));
            }
            if changed {
                parts.headers.remove(&hname);
                for v in new_vals {
                    parts.headers.append(hname.clone(), v);
                }
            }
        }
        if path.contains(ph) {
            found = true;
            if ok && s.parts.path {
                let enc = utf8_percent_encode(value, PATH).to_string();
                path = path.replace(ph, &enc);
                if enc != value {
                    out.written.push((enc.into_bytes(), ph.as_bytes().to_vec()));
                }
            }
        }
        if let Some(q) = &mut query
            && q.contains(ph)
        {
            found = true;
            if ok && s.parts.query {
                let enc = utf8_percent_encode(value, QUERY).to_string();
                *q = q.replace(ph, &enc);
                if enc != value {
                    out.written.push((enc.into_bytes(), ph.as_bytes().to_vec()));
                }
            }
        }
        if found {
            if ok {
                push(&mut out.names, &s.name);
            } else {
                push(&mut out.mismatch, &s.name);
            }
        }
        if ok && let Some(t) = &s.header {
            let v = HeaderValue::from_str(&format!("{}{}{}", t.before, value, t.after))
                .map_err(|_| Unsendable(format!("{}: the value cannot go in a header", s.name)))?;
            parts.headers.insert(t.name.clone(), v);
            push(&mut out.names, &s.name);
        }
    }
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    parts.uri = http::Uri::builder()
        .path_and_query(pq)
        .build()
        .map_err(|_| Unsendable("the request target is not valid after substitution".into()))?;
    Ok(out)
}

/// One header value: (replacement if changed, placeholder seen).
fn header_value(
    v: &HeaderValue,
    ph: &str,
    value: &str,
    put_in: bool,
) -> Result<(Option<HeaderValue>, bool), Unsendable> {
    let bytes = v.as_bytes();
    let err = || Unsendable("the value cannot go in a header".into());
    if memchr::memmem::find(bytes, ph.as_bytes()).is_some() {
        if !put_in {
            return Ok((None, true));
        }
        let text = String::from_utf8_lossy(bytes).replace(ph, value);
        return Ok((Some(HeaderValue::from_str(&text).map_err(|_| err())?), true));
    }
    // Basic auth: the placeholder is inside base64("user:password").
    if bytes.len() > 6 && bytes[..6].eq_ignore_ascii_case(b"basic ") {
        let enc = String::from_utf8_lossy(&bytes[6..]).trim().to_string();
        if let Ok(decoded) = B64.decode(enc.as_bytes())
            && memchr::memmem::find(&decoded, ph.as_bytes()).is_some()
        {
            if !put_in {
                return Ok((None, true));
            }
            let text = String::from_utf8_lossy(&decoded).replace(ph, value);
            let out = format!("Basic {}", B64.encode(text.as_bytes()));
            return Ok((Some(HeaderValue::from_str(&out).map_err(|_| err())?), true));
        }
    }
    Ok((None, false))
}

/// How a request body is encoded, by its `Content-Type`: the value is escaped to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// `application/json` (and `+json`): the value JSON-escaped (no quotes).
    Json,
    /// `application/x-www-form-urlencoded`: the value form-encoded.
    Form,
    /// Anything else: the value as it is.
    Other,
}

pub(crate) fn body_kind(h: &http::HeaderMap) -> BodyKind {
    let ct = h
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if ct == "application/json" || ct.ends_with("+json") {
        BodyKind::Json
    } else if ct == "application/x-www-form-urlencoded" {
        BodyKind::Form
    } else {
        BodyKind::Other
    }
}

/// Placeholders -> values for a request body to this target (`in = [.., "body"]`): the
/// secrets that ask for it, that name this target, and are not revoked; each value escaped
/// for `kind`. `None` when no secret applies.
pub(crate) fn body_substituter(
    secrets: &[Secret],
    named: &dyn Fn(&Secret) -> bool,
    revoked: &dyn Fn(&str) -> bool,
    kind: BodyKind,
) -> Option<(Restorer, Vec<String>)> {
    let chosen: Vec<&Secret> = secrets
        .iter()
        .filter(|s| s.parts.body && named(s) && !revoked(&s.name))
        .collect();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = chosen
        .iter()
        .map(|s| {
            let v = s.value.expose_secret();
            let escaped = match kind {
                BodyKind::Json => json_forms(v)[0].clone(),
                BodyKind::Form => url::form_urlencoded::byte_serialize(v.as_bytes()).collect(),
                BodyKind::Other => v.to_string(),
            };
            (s.placeholder.as_bytes().to_vec(), escaped.into_bytes())
        })
        .collect();
    let names = chosen.iter().map(|s| s.name.clone()).collect();
    Restorer::substituter(pairs).map(|r| (r, names))
}

/// Values -> placeholders in responses.
///
/// Every form the broker itself may have produced is put back, not just the raw value: the
/// percent-encodings it writes in a path or query (and the usual variants an upstream may
/// echo: lower-case hex, `+` for a space, every reserved character escaped, encoded twice),
/// JSON escaping (serde's and Go's), hex of the bytes in either case, and base64 at each of
/// the three alignments (standard and URL-safe alphabets), since a
/// Basic header is base64 of `user:VALUE`. Only whole forms: restoring a piece (a prefix, a
/// suffix) would answer a child's guess one character at a time (review 11c). Since a
/// Basic header is base64 of `user:VALUE`. A request's own exact substitutions (the whole
/// Basic credential it wrote, say) are added by [`Restorer::with_extra`].
pub(crate) struct Restorer {
    ac: AhoCorasick,
    /// The same patterns, ASCII case-insensitive: for header names (lower-cased on the way).
    ac_names: AhoCorasick,
    /// (what the upstream may send, what the child gets instead), `ac`'s pattern order.
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The longest pattern, minus one: what a chunk's end must hold back.
    hold: usize,
    /// Some replacement differs in length from its pattern: Content-Length changes.
    changes_length: bool,
}

/// Shortest derived (encoded) form restored: a shorter one would match unrelated text.
const MIN_FORM: usize = 6;

/// Characters left alone by the strictest percent-encoding (RFC 3986 unreserved).
const COMPONENT: &AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `value` percent-encoded with `set`, hex in upper or lower case, a space as `%20` or `+`.
fn pct(value: &str, set: &'static AsciiSet, lower: bool, plus: bool) -> String {
    let mut out = utf8_percent_encode(value, set).to_string();
    if plus {
        out = out.replace("%20", "+");
    }
    if lower {
        // Only the two hex digits after each '%' change case.
        let b = out.as_bytes();
        let mut o = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                o.push(b'%');
                o.push(b[i + 1].to_ascii_lowercase());
                o.push(b[i + 2].to_ascii_lowercase());
                i += 3;
            } else {
                o.push(b[i]);
                i += 1;
            }
        }
        out = String::from_utf8(o).unwrap_or(out);
    }
    out
}

/// HTML-escaped: `& < > " '` as named entities (`&amp;`...) or as numeric ones (`&#38;`...).
fn html(value: &str, named: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match (c, named) {
            ('&', true) => out.push_str("&amp;"),
            ('<', true) => out.push_str("&lt;"),
            ('>', true) => out.push_str("&gt;"),
            ('"', true) => out.push_str("&quot;"),
            ('\'', true) => out.push_str("&#x27;"),
            ('&' | '<' | '>' | '"' | '\'', false) => out.push_str(&format!("&#{};", c as u32)),
            _ => out.push(c),
        }
    }
    out
}

/// JSON string escaping, with and without `\/`.
fn json_forms(value: &str) -> [String; 2] {
    let plain = serde_json::to_string(value).unwrap_or_default();
    let plain = plain
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or("")
        .to_string();
    let slashed = plain.replace('/', "\\/");
    [plain, slashed]
}

/// The base64 characters that depend only on `bytes` when they start at offset `align`
/// (0, 1 or 2) of a 3-byte group.
fn b64_core(engine: &base64::engine::GeneralPurpose, bytes: &[u8], align: usize) -> String {
    let mut buf = vec![0u8; align];
    buf.extend_from_slice(bytes);
    let enc = engine.encode(&buf);
    let enc = enc.trim_end_matches('=');
    let skip = (align * 8).div_ceil(6);
    let full = ((align + bytes.len()) * 8) / 6;
    if full <= skip {
        return String::new();
    }
    enc[skip..full.min(enc.len())].to_string()
}

/// Every (form of the value, same form of the placeholder) the broker restores.
fn forms(value: &str, placeholder: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    use base64::engine::general_purpose::URL_SAFE;
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = vec![(value.into(), placeholder.into())];
    let mut add = |v: String, p: String| {
        if v.len() >= MIN_FORM && v != value && !out.iter().any(|(x, _)| *x == v.as_bytes()) {
            out.push((v.into_bytes(), p.into_bytes()));
        }
    };
    for set in [PATH, QUERY, COMPONENT] {
        for lower in [false, true] {
            for plus in [false, true] {
                add(
                    pct(value, set, lower, plus),
                    pct(placeholder, set, lower, plus),
                );
            }
        }
    }
    // In another case: an upstream that upper- or lower-cases an echo must not hand the value
    // back with only its case to guess. (Explicit forms, not a case-blind matcher: base64
    // and hex forms are not case-blind, and a case-blind scan loses the fast prefilter.)
    add(value.to_ascii_uppercase(), placeholder.to_ascii_uppercase());
    add(value.to_ascii_lowercase(), placeholder.to_ascii_lowercase());
    // Form-encoded (a body the broker wrote with `in = ["body"]`).
    add(
        url::form_urlencoded::byte_serialize(value.as_bytes()).collect(),
        url::form_urlencoded::byte_serialize(placeholder.as_bytes()).collect(),
    );
    // Percent-encoded twice (`%252F`): a value in a URL that is itself a parameter.
    for set in [PATH, QUERY] {
        add(
            pct(&pct(value, set, false, false), set, false, false),
            pct(&pct(placeholder, set, false, false), set, false, false),
        );
    }
    let [jv, jvs] = json_forms(value);
    let [jp, jps] = json_forms(placeholder);
    // Go's encoding/json also writes <, > and & as \u escapes.
    let go = |j: &str| {
        j.replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026")
    };
    add(go(&jv), go(&jp));
    add(jv, jp);
    add(jvs, jps);
    // JSON with every character escaped (`\u0073\u006b...`), and HTML entities.
    let all_u = |v: &str| {
        v.chars()
            .map(|c| format!("\\u{:04x}", c as u32))
            .collect::<String>()
    };
    add(all_u(value), all_u(placeholder));
    for named in [true, false] {
        add(html(value, named), html(placeholder, named));
    }
    // Hex of the bytes, in either case (a digest-style dump of a header, say).
    add(hex::encode(value), hex::encode(placeholder));
    add(hex::encode_upper(value), hex::encode_upper(placeholder));
    for engine in [&B64, &URL_SAFE] {
        for align in 0..3 {
            add(
                b64_core(engine, value.as_bytes(), align),
                b64_core(engine, placeholder.as_bytes(), align),
            );
        }
    }
    out
}

impl Restorer {
    pub(super) fn new(secrets: &[Secret]) -> Option<Restorer> {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = secrets
            .iter()
            .filter(|s| !s.value.expose_secret().is_empty())
            .flat_map(|s| forms(s.value.expose_secret(), &s.placeholder))
            .collect();
        Restorer::build(pairs)
    }

    /// Placeholders -> values in a request body: the same machine the other way round.
    pub(crate) fn substituter(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Option<Restorer> {
        Restorer::build(pairs)
    }

    fn build(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Option<Restorer> {
        if pairs.is_empty() {
            return None;
        }
        let patterns: Vec<&[u8]> = pairs.iter().map(|(v, _)| v.as_slice()).collect();
        let hold = patterns.iter().map(|v| v.len()).max().unwrap_or(1) - 1;
        let changes_length = pairs.iter().any(|(v, p)| v.len() != p.len());
        // A contiguous NFA, not a DFA: with a value's prefixes and suffixes there are dozens
        // of patterns, a DFA of them takes milliseconds to build (a request with its own
        // exact substitutions builds one), and the scan runs at the prefilter's speed
        // either way (about 9 GB/s both, measured).
        let kind = Some(aho_corasick::AhoCorasickKind::ContiguousNFA);
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .kind(kind)
            .build(&patterns)
            .ok()?;
        let ac_names = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .kind(kind)
            .build(&patterns)
            .ok()?;
        Some(Restorer {
            ac,
            ac_names,
            pairs,
            hold,
            changes_length,
        })
    }

    /// This restorer plus one request's exact substitutions (what it wrote, what the child
    /// had there).
    pub(super) fn with_extra(&self, extra: &[(Vec<u8>, Vec<u8>)]) -> Option<Restorer> {
        let mut pairs = self.pairs.clone();
        for (v, p) in extra {
            if !v.is_empty() && !pairs.iter().any(|(x, _)| x == v) {
                pairs.push((v.clone(), p.clone()));
            }
        }
        Restorer::build(pairs)
    }

    pub(super) fn changes_length(&self) -> bool {
        self.changes_length
    }

    fn replacement(&self, m: &aho_corasick::Match) -> &[u8] {
        &self.pairs[m.pattern().as_usize()].1
    }

    /// Replace every value in `bytes`.
    pub(super) fn replace_all(&self, bytes: &[u8]) -> Vec<u8> {
        self.replace_counting(bytes, None)
    }

    /// [`Restorer::replace_all`], adding the number of replacements to `hits`.
    pub(super) fn replace_counting(&self, bytes: &[u8], hits: Option<&AtomicU64>) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut pos = 0;
        for m in self.ac.find_iter(bytes) {
            if let Some(h) = hits {
                h.fetch_add(1, Ordering::Relaxed);
            }
            out.extend_from_slice(&bytes[pos..m.start()]);
            out.extend_from_slice(self.replacement(&m));
            pos = m.end();
        }
        out.extend_from_slice(&bytes[pos..]);
        out
    }

    /// Response headers (and trailers): values restored; a header whose NAME holds a value
    /// (in any case) is dropped, as is a value that cannot be restored.
    pub(super) fn headers(&self, headers: &mut http::HeaderMap) {
        let bad_names: Vec<HeaderName> = headers
            .keys()
            .filter(|n| self.ac_names.is_match(n.as_str().as_bytes()))
            .cloned()
            .collect();
        for n in bad_names {
            headers.remove(&n);
        }
        let names: Vec<HeaderName> = headers.keys().cloned().collect();
        for name in names {
            let vals: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
            if !vals.iter().any(|v| self.ac.is_match(v.as_bytes())) {
                continue;
            }
            headers.remove(&name);
            for v in vals {
                let out = self.replace_all(v.as_bytes());
                if let Ok(nv) = HeaderValue::from_bytes(&out) {
                    headers.append(name.clone(), nv);
                }
            }
        }
    }

    /// Streaming: `held` + `chunk` in, the part that is safe to send out. What stays in
    /// `held` is the longest tail that could still become a value with the next chunk (a
    /// proper prefix of some value): at most the longest value minus one byte, and nothing
    /// when the tail cannot start a value, so that an SSE event is never held back.
    #[cfg(test)]
    pub(super) fn push(&self, held: &mut Vec<u8>, chunk: &[u8]) -> Vec<u8> {
        self.push_counting(held, chunk, None)
    }

    /// [`Restorer::push`], adding the number of replacements to `hits`.
    fn push_counting(&self, held: &mut Vec<u8>, chunk: &[u8], hits: Option<&AtomicU64>) -> Vec<u8> {
        held.extend_from_slice(chunk);
        let buf = std::mem::take(held);
        let safe = buf.len() - self.tail_len(&buf);
        let mut out = Vec::with_capacity(buf.len());
        let mut pos = 0;
        for m in self.ac.find_iter(&buf) {
            if m.start() >= safe {
                break;
            }
            if let Some(h) = hits {
                h.fetch_add(1, Ordering::Relaxed);
            }
            out.extend_from_slice(&buf[pos..m.start()]);
            out.extend_from_slice(self.replacement(&m));
            pos = m.end();
        }
        let cut = pos.max(safe);
        out.extend_from_slice(&buf[pos..cut]);
        held.extend_from_slice(&buf[cut..]);
        out
    }

    /// The longest suffix of `buf` that is a proper prefix of some pattern.
    fn tail_len(&self, buf: &[u8]) -> usize {
        let max = self.hold.min(buf.len());
        (1..=max)
            .rev()
            .find(|&k| {
                let tail = &buf[buf.len() - k..];
                self.pairs
                    .iter()
                    .any(|(v, _)| v.len() > k && v.starts_with(tail))
            })
            .unwrap_or(0)
    }
}

/// A response body with values put back as placeholders, counting the bytes it reads.
pub(crate) struct RestoreBody<B> {
    inner: B,
    restorer: Option<Arc<Restorer>>,
    held: Vec<u8>,
    trailers: Option<Frame<Bytes>>,
    done: bool,
    bytes: Arc<AtomicU64>,
    /// Replacements made, when someone asks (a request body's substitutions, for its line).
    hits: Option<Arc<AtomicU64>>,
}

impl<B> RestoreBody<B> {
    pub(super) fn new(inner: B, restorer: Option<Arc<Restorer>>, bytes: Arc<AtomicU64>) -> Self {
        RestoreBody {
            inner,
            restorer,
            held: Vec::new(),
            trailers: None,
            done: false,
            bytes,
            hits: None,
        }
    }

    /// Count the replacements into `hits`.
    pub(super) fn counting(mut self, hits: Arc<AtomicU64>) -> Self {
        self.hits = Some(hits);
        self
    }
}

impl<B> Body for RestoreBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(t) = this.trailers.take() {
                this.done = true;
                return Poll::Ready(Some(Ok(t)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                        let Some(r) = &this.restorer else {
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        };
                        let out = r.push_counting(&mut this.held, &data, this.hits.as_deref());
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                        }
                    }
                    Err(trailers) => {
                        let trailers = match (trailers.into_trailers(), &this.restorer) {
                            (Ok(mut t), Some(r)) => {
                                r.headers(&mut t);
                                Frame::trailers(t)
                            }
                            (Ok(t), None) => Frame::trailers(t),
                            (Err(other), _) => other,
                        };
                        this.trailers = Some(trailers);
                        if let Some(out) = this.flush() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                },
                Poll::Ready(None) => {
                    this.done = true;
                    if let Some(out) = this.flush() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.restorer {
            Some(r) if r.changes_length() => SizeHint::default(),
            _ => self.inner.size_hint(),
        }
    }
}

impl<B> RestoreBody<B> {
    fn flush(&mut self) -> Option<Bytes> {
        if self.held.is_empty() {
            return None;
        }
        let held = std::mem::take(&mut self.held);
        let out = match &self.restorer {
            Some(r) => r.replace_counting(&held, self.hits.as_deref()),
            None => held,
        };
        Some(Bytes::from(out))
    }
}

/// A request body that counts the bytes it passes on.
pub(crate) struct Counted<B> {
    inner: B,
    bytes: Arc<AtomicU64>,
    keep: Option<Arc<std::sync::Mutex<Kept>>>,
}

/// A copy of a request body as it went upstream, while it is at most [`KEEP_MAX`] bytes: a
/// request refused with 401 can be sent again with a refreshed value.
#[derive(Default)]
pub(crate) struct Kept {
    bytes: Vec<u8>,
    complete: bool,
    over: bool,
}

/// The largest request body kept for a second sending.
pub(crate) const KEEP_MAX: usize = 1 << 20;

impl Kept {
    /// The whole body, if it was sent whole and is small enough.
    pub(crate) fn whole(&self) -> Option<Bytes> {
        (self.complete && !self.over).then(|| Bytes::from(self.bytes.clone()))
    }
}

impl<B: Body> Counted<B> {
    pub(super) fn new(
        inner: B,
        bytes: Arc<AtomicU64>,
        keep: Option<Arc<std::sync::Mutex<Kept>>>,
    ) -> Self {
        if let Some(k) = &keep
            && inner.is_end_stream()
        {
            k.lock().unwrap_or_else(|p| p.into_inner()).complete = true;
        }
        Counted { inner, bytes, keep }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let p = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &p
            && let Some(d) = f.data_ref()
        {
            self.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
        }
        if let Some(k) = &self.keep {
            let mut k = k.lock().unwrap_or_else(|p| p.into_inner());
            match &p {
                Poll::Ready(Some(Ok(f))) => match f.data_ref() {
                    Some(d) if !k.over && k.bytes.len() + d.len() <= KEEP_MAX => {
                        k.bytes.extend_from_slice(d)
                    }
                    Some(_) => {
                        k.over = true;
                        k.bytes = Vec::new();
                    }
                    // Trailers: the body is complete, but they are not kept: no resend.
                    None => k.over = true,
                },
                Poll::Ready(None) => k.complete = true,
                _ => {}
            }
        }
        p
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end && let Some(k) = &self.keep {
            k.lock().unwrap_or_else(|p| p.into_inner()).complete = true;
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{HeaderTemplate, HostPattern, Parts};
    use secrecy::SecretString;

    fn secret(name: &str, value: &str, ph: &str, host: &str) -> Secret {
        Secret {
            name: name.into(),
            value: SecretString::from(value.to_string()),
            placeholder: ph.into(),
            hosts: vec![HostPattern::parse(host).expect("host")],
            header: None,
            parts: Parts::default(),
            methods: None,
            paths: None,
        }
    }

    fn req(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    const PH: &str = "PHxxxxxxxxxxxxxxxxxxxxxx";
    const VAL: &str = "real/value with&odd=chars";

    #[test]
    fn request_places() {
        let secrets = vec![secret("K", VAL, PH, "api.example.com")];
        let named = |s: &Secret| s.hosts[0].matches("api.example.com", 443);
        let userpass = B64.encode(format!("x-access-token:{PH}"));
        let mut p = req(
            &format!("/v1/{PH}/x?key={PH}&a=1"),
            &[
                ("authorization", &format!("Bearer {PH}")),
                ("x-api-key", PH),
                ("proxy-thing", &format!("Basic {userpass}")),
            ],
        );
        let a = apply(&secrets, &named, &mut p).expect("applies");
        assert_eq!(a.names, vec!["K"]);
        assert!(a.mismatch.is_empty());
        assert_eq!(p.headers["authorization"], format!("Bearer {VAL}").as_str());
        assert_eq!(p.headers["x-api-key"], VAL);
        let basic = p.headers["proxy-thing"].to_str().expect("ascii");
        let dec = B64.decode(&basic[6..]).expect("b64");
        assert_eq!(dec, format!("x-access-token:{VAL}").as_bytes());
        assert_eq!(
            p.uri.to_string(),
            "/v1/real%2Fvalue%20with&odd=chars/x?key=real%2Fvalue%20with%26odd%3Dchars&a=1"
        );
    }

    #[test]
    fn other_host_keeps_the_placeholder_and_reports_mismatch() {
        let secrets = vec![secret("K", VAL, PH, "api.example.com")];
        let named = |_: &Secret| false;
        let mut p = req(
            &format!("/?k={PH}"),
            &[("authorization", &format!("Bearer {PH}"))],
        );
        let a = apply(&secrets, &named, &mut p).expect("applies");
        assert!(a.names.is_empty());
        assert_eq!(a.mismatch, vec!["K"]);
        assert_eq!(p.headers["authorization"], format!("Bearer {PH}").as_str());
        assert_eq!(p.uri.to_string(), format!("/?k={PH}"));
    }

    #[test]
    fn header_template_replaces_what_the_child_sent() {
        let mut s = secret("K", "tok123", PH, "api.example.com");
        s.header = Some(HeaderTemplate::parse("Authorization: Bearer {value}").expect("t"));
        let secrets = vec![s];
        let mut p = req("/", &[("authorization", "Bearer whatever")]);
        let a = apply(&secrets, &|_| true, &mut p).expect("applies");
        assert_eq!(a.names, vec!["K"]);
        assert_eq!(p.headers["authorization"], "Bearer tok123");
    }

    #[test]
    fn parts_limit_where_it_goes() {
        let mut s = secret("K", "tok123", PH, "api.example.com");
        s.parts = Parts {
            header: true,
            path: false,
            query: false,
            body: false,
        };
        let secrets = vec![s];
        let mut p = req(&format!("/{PH}?q={PH}"), &[]);
        apply(&secrets, &|_| true, &mut p).expect("applies");
        assert_eq!(p.uri.to_string(), format!("/{PH}?q={PH}"));
    }

    /// `in = ["body"]`: JSON and form bodies get the value escaped to fit, split anywhere
    /// across chunks, and only for a secret that names the target and is not revoked.
    #[test]
    fn body_substitution_escapes_and_is_split_safe() {
        let value = "v\"al&ue +/x\\0123456789";
        let ph = "PLACEHOLDERPLACEHOLDER";
        let mut s = secret("K", value, ph, "a.example.com");
        s.parts.body = true;
        let secrets = vec![s];
        let yes = |_: &Secret| true;
        let no_revoke = |_: &str| false;
        for (kind, body, want) in [
            (
                BodyKind::Json,
                format!("{{\"key\": \"{ph}\", \"n\": 1}}"),
                format!(
                    "{{\"key\": {}, \"n\": 1}}",
                    serde_json::to_string(value).expect("json")
                ),
            ),
            (
                BodyKind::Form,
                format!("a=1&key={ph}&b=2"),
                format!(
                    "a=1&key={}&b=2",
                    url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()
                ),
            ),
        ] {
            let (r, names) = body_substituter(&secrets, &yes, &no_revoke, kind).expect("applies");
            assert_eq!(names, ["K"]);
            assert_eq!(
                String::from_utf8(r.replace_all(body.as_bytes())).unwrap(),
                want
            );
            for split in 0..=body.len() {
                let mut held = Vec::new();
                let mut out = r.push(&mut held, &body.as_bytes()[..split]);
                out.extend(r.push(&mut held, &body.as_bytes()[split..]));
                out.extend(r.replace_all(&held));
                assert_eq!(String::from_utf8(out).unwrap(), want, "{kind:?} at {split}");
            }
            // A form parses back to the value.
            if kind == BodyKind::Form {
                let parsed: Vec<(String, String)> = url::form_urlencoded::parse(want.as_bytes())
                    .into_owned()
                    .collect();
                assert_eq!(parsed[1], ("key".into(), value.into()));
            }
        }
        // Not named, or revoked, or not asked for: nothing to substitute.
        assert!(body_substituter(&secrets, &|_| false, &no_revoke, BodyKind::Json).is_none());
        assert!(body_substituter(&secrets, &yes, &|_| true, BodyKind::Json).is_none());
        let mut plain = secrets[0].clone();
        plain.parts.body = false;
        assert!(body_substituter(&[plain], &yes, &no_revoke, BodyKind::Json).is_none());
        // Only the placeholder as it is: another case is the child's own text.
        let (r, _) =
            body_substituter(&secrets, &yes, &no_revoke, BodyKind::Other).expect("applies");
        let lower = ph.to_lowercase();
        assert_eq!(r.replace_all(lower.as_bytes()), lower.as_bytes());
    }

    #[test]
    fn restore_is_split_safe_at_every_offset() {
        let value = "sk-realvalue-0123456789abcdef";
        let ph = "sk-PLACEHOLDERxxxxxxxxxxxxxxx";
        let secrets = vec![
            secret("A", value, ph, "a.example.com"),
            secret("B", "short", "BBBBBBBBBBBBBBBBBBBBBBBB", "a.example.com"),
        ];
        let r = Restorer::new(&secrets).expect("restorer");
        assert!(r.changes_length());
        // Also in another case (an upper-cased echo is a restored form of its own).
        let upper = value.to_uppercase();
        let text = format!("x{value}yy{value}{upper}z short. shor{value}");
        let want = String::from_utf8(r.replace_all(text.as_bytes())).expect("utf8");
        assert!(!want.contains(value) && !want.contains(&upper) && want.contains(ph));
        for split in 0..=text.len() {
            for split2 in split..=text.len() {
                let mut held = Vec::new();
                let mut out = r.push(&mut held, &text.as_bytes()[..split]);
                out.extend(r.push(&mut held, &text.as_bytes()[split..split2]));
                out.extend(r.push(&mut held, &text.as_bytes()[split2..]));
                out.extend(r.replace_all(&held));
                assert_eq!(
                    String::from_utf8(out).expect("utf8"),
                    want,
                    "{split} {split2}"
                );
            }
        }
        // Bounded: never holds more than the longest value minus one, and nothing when the
        // tail cannot start a value.
        let mut held = Vec::new();
        let mut tail = vec![b'q'; 10_000];
        tail.extend_from_slice(&value.as_bytes()[..value.len() - 1]);
        r.push(&mut held, &tail);
        assert_eq!(held.len(), value.len() - 1);
        let out = r.push(&mut held, b"!data: 1\n\n");
        assert!(held.is_empty());
        assert!(out.ends_with(b"!data: 1\n\n"));
    }
    /// A value with every character the encodings treat specially.
    const ODD: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfi+CYEX=AMPLE&KEY x";
    const ODD_PH: &str = "PHPHPHPHPHPHPHPHPHPHPHPHPHPHPHPHPHPHPHPHPHPHP";

    fn odd_restorer() -> Restorer {
        Restorer::new(&[secret("K", ODD, ODD_PH, "a.example.com")]).expect("restorer")
    }

    /// Every way `text` could still carry ODD: as it is, or decoded once from base64 (both
    /// alphabets, any alignment) or from percent-encoding.
    fn carries_value(text: &[u8]) -> bool {
        use base64::alphabet::{STANDARD, URL_SAFE};
        use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
        let cfg = GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent);
        let engines = [
            GeneralPurpose::new(&STANDARD, cfg),
            GeneralPurpose::new(&URL_SAFE, cfg),
        ];
        let has = |b: &[u8]| memchr::memmem::find(b, ODD.as_bytes()).is_some();
        if has(text) {
            return true;
        }
        let t = String::from_utf8_lossy(text);
        if has(percent_encoding::percent_decode_str(&t.replace('+', " "))
            .collect::<Vec<u8>>()
            .as_slice())
        {
            return true;
        }
        if has(t.replace("\\/", "/").as_bytes()) {
            return true;
        }
        // base64: every run of base64 characters, at each start offset mod 4.
        for run in t.split(|c: char| !(c.is_ascii_alphanumeric() || "+/-_".contains(c))) {
            for off in 0..4.min(run.len()) {
                for cut in 0..3.min(run.len() - off) {
                    let r = &run[off..run.len() - cut];
                    for e in &engines {
                        if let Ok(d) = e.decode(r)
                            && has(&d)
                        {
                            return true;
                        }
                    }
                }
            }
        }
        false
    }

    #[test]
    fn base64_of_the_value_is_restored_at_every_alignment() {
        use base64::engine::general_purpose::URL_SAFE;
        let r = odd_restorer();
        for pre in ["", "x:", "xy:", "x-access-token:", "ab"] {
            for post in ["", "!", "!!", "\n"] {
                let plain = format!("{pre}{ODD}{post}");
                for enc in [B64.encode(&plain), URL_SAFE.encode(&plain)] {
                    assert!(carries_value(enc.as_bytes()), "the check must see it");
                    let body = format!("{{\"authorization\": \"Basic {enc}\"}}");
                    let out = r.replace_all(body.as_bytes());
                    assert!(
                        !carries_value(&out),
                        "{pre:?} {post:?}: {}",
                        String::from_utf8_lossy(&out)
                    );
                }
            }
        }
    }

    /// No piece of a value is restored, only whole forms: a restored prefix would tell a
    /// child which next character it guessed right (review 11c, F1), one request a
    /// character. Every proper prefix and suffix of the value comes back unchanged.
    #[test]
    fn no_piece_of_a_value_is_restored() {
        let value = "sk-proj-Zq8mT4vR2xW9pL6nB3cK7hJ5gF1dS0aY";
        let ph = format!("sk-proj-{}", "PH".repeat(16));
        let r = Restorer::new(&[secret("K", value, &ph, "a.example.com")]).expect("restorer");
        for cut in 1..value.len() {
            for piece in [&value[..cut], &value[cut..]] {
                let text = format!("q={piece}&x");
                assert_eq!(
                    r.replace_all(text.as_bytes()),
                    text.as_bytes(),
                    "{piece} was restored"
                );
            }
        }
        let whole = format!("q={value}&x");
        assert_eq!(
            r.replace_all(whole.as_bytes()),
            format!("q={ph}&x").as_bytes()
        );
    }

    /// Forms an upstream's error page or debug echo may use: hex, twice percent-encoded,
    /// Go's JSON escaping of `&`, every character `\u`-escaped, HTML entities, another case.
    #[test]
    fn hex_double_percent_and_go_json_forms_are_restored() {
        let r = odd_restorer();
        let twice = |v: &str| pct(&pct(v, QUERY, false, false), QUERY, false, false);
        let go = |v: &str| {
            serde_json::to_string(v)
                .expect("json")
                .replace('&', "\\u0026")
        };
        for (enc, ph) in [
            (hex::encode(ODD), hex::encode(ODD_PH)),
            (hex::encode_upper(ODD), hex::encode_upper(ODD_PH)),
            (twice(ODD), twice(ODD_PH)),
            (go(ODD), go(ODD_PH)),
            (ODD.to_ascii_uppercase(), ODD_PH.to_ascii_uppercase()),
            (ODD.to_ascii_lowercase(), ODD_PH.to_ascii_lowercase()),
            (html(ODD, true), html(ODD_PH, true)),
            (html(ODD, false), html(ODD_PH, false)),
            (
                ODD.chars()
                    .map(|c| format!("\\u{:04x}", c as u32))
                    .collect(),
                ODD_PH
                    .chars()
                    .map(|c| format!("\\u{:04x}", c as u32))
                    .collect(),
            ),
        ] {
            let out = r.replace_all(format!("{{\"k\": [{enc}]}}").as_bytes());
            let out = String::from_utf8_lossy(&out);
            assert!(!out.contains(&enc) && out.contains(&ph), "{enc}: {out}");
        }
    }

    #[test]
    fn percent_and_json_encodings_of_the_value_are_restored() {
        let r = odd_restorer();
        for enc in [
            utf8_percent_encode(ODD, PATH).to_string(),
            utf8_percent_encode(ODD, QUERY).to_string(),
            pct(ODD, COMPONENT, false, false),
            pct(ODD, QUERY, true, true),
            pct(ODD, COMPONENT, true, true),
            serde_json::to_string(ODD).expect("json"),
            serde_json::to_string(ODD)
                .expect("json")
                .replace('/', "\\/"),
        ] {
            let body = format!("{{\"path\": \"/echo?k={enc}&z=1\"}}");
            let out = r.replace_all(body.as_bytes());
            assert!(
                !carries_value(&out),
                "{enc}: {}",
                String::from_utf8_lossy(&out)
            );
            assert!(
                String::from_utf8_lossy(&out).contains(ODD_PH),
                "{enc}: {}",
                String::from_utf8_lossy(&out)
            );
        }
        // Streaming, split anywhere, gives the same.
        let text = format!(
            "a{}b{}c",
            pct(ODD, QUERY, false, false),
            B64.encode(format!("u:{ODD}"))
        );
        let want = r.replace_all(text.as_bytes());
        for split in 0..=text.len() {
            let mut held = Vec::new();
            let mut out = r.push(&mut held, &text.as_bytes()[..split]);
            out.extend(r.push(&mut held, &text.as_bytes()[split..]));
            out.extend(r.replace_all(&held));
            assert_eq!(out, want, "{split}");
        }
    }

    #[test]
    fn a_requests_basic_credential_comes_back_exactly_as_the_child_sent_it() {
        let secrets = vec![secret("K", ODD, ODD_PH, "a.example.com")];
        let child = format!("Basic {}", B64.encode(format!("x:{ODD_PH}")));
        let mut p = req(
            &format!("/p/{ODD_PH}?k={ODD_PH}"),
            &[("authorization", &child)],
        );
        let a = apply(&secrets, &|_| true, &mut p).expect("applies");
        assert_eq!(a.written.len(), 3, "Basic, path and query");
        let sent = p.headers["authorization"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert_ne!(sent, child);
        let r = Restorer::new(&secrets)
            .expect("restorer")
            .with_extra(&a.written)
            .expect("restorer");
        let echo = format!("{{\"authorization\": \"{sent}\", \"path\": \"{}\"}}", p.uri);
        let out = String::from_utf8(r.replace_all(echo.as_bytes())).expect("utf8");
        assert_eq!(
            out,
            format!("{{\"authorization\": \"{child}\", \"path\": \"/p/{ODD_PH}?k={ODD_PH}\"}}")
        );
        let mut h = http::HeaderMap::new();
        h.insert("x-echo", HeaderValue::from_str(&sent).expect("hv"));
        r.headers(&mut h);
        assert_eq!(h["x-echo"], child.as_str());
    }

    #[test]
    fn header_names_holding_a_value_are_dropped_and_trailers_restored() {
        use futures_util::FutureExt;
        use http_body_util::BodyExt;
        let value = "sk-proj-realVALUE0123456789abcdef";
        let ph = "sk-proj-PLACEHOLDER0123456789abcd";
        let r = Arc::new(Restorer::new(&[secret("K", value, ph, "a.example.com")]).expect("r"));
        let mut h = http::HeaderMap::new();
        let lower = format!("x-{}", value.to_ascii_lowercase());
        h.insert(
            HeaderName::from_bytes(lower.as_bytes()).expect("name"),
            HeaderValue::from_static("1"),
        );
        h.append(
            "x-two",
            HeaderValue::from_str(&format!("a {value}")).expect("hv"),
        );
        h.append("x-two", HeaderValue::from_static("plain"));
        r.headers(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        let two: Vec<_> = h.get_all("x-two").iter().collect();
        assert_eq!(two, [format!("a {ph}").as_str(), "plain"]);

        let mut trailers = http::HeaderMap::new();
        trailers.insert(
            "x-echo",
            HeaderValue::from_str(&format!("Bearer {value}")).expect("hv"),
        );
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ok"))),
            Ok(Frame::trailers(trailers)),
        ];
        let inner = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let body = RestoreBody::new(inner, Some(r), Arc::new(AtomicU64::new(0)));
        let got = body.collect().now_or_never().expect("ready").expect("ok");
        let t = got.trailers().expect("trailers").clone();
        assert_eq!(t["x-echo"], format!("Bearer {ph}").as_str());
    }
}
