//! What the broker reports, as typed `Serialize` structs: one per request, tunnel and
//! denial. They carry names, hosts, paths without the query, counts and times, and NEVER a
//! value or a placeholder (the path, host and method are the ones the child sent, before
//! substitution, with every placeholder and value in them, in any case, replaced by
//! `{NAME}`, and cut to `MAX_PATH`, `MAX_HOST` and `MAX_METHOD` bytes).

use serde::Serialize;

/// The longest path, host and method an event carries (bytes); longer ones are cut.
pub(crate) const MAX_PATH: usize = 512;
pub(crate) const MAX_HOST: usize = 256;
pub(crate) const MAX_METHOD: usize = 32;

/// Replaces each value and placeholder in an event's text by `{NAME}`: built once per set of
/// values (a request's events use it three times).
pub(crate) struct Scrubber {
    /// `None`: no pattern, or none could be built (then text is refused, not shown).
    ac: Option<aho_corasick::AhoCorasick>,
    names: Vec<String>,
    empty: bool,
}

impl Scrubber {
    /// From (string to hide, its secret's name) pairs.
    pub(crate) fn new<'a>(pairs: impl Iterator<Item = (&'a str, &'a String)>) -> Scrubber {
        let (pats, names): (Vec<&str>, Vec<String>) =
            pairs.map(|(p, n)| (p, format!("{{{n}}}"))).unzip();
        let empty = pats.is_empty();
        let ac = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&pats)
            .ok();
        Scrubber { ac, names, empty }
    }

    /// `text` with each string, in any ASCII case, replaced by `{name}`; when the text holds
    /// one only once percent-decoded, the decoded text so scrubbed.
    pub(crate) fn scrub(&self, text: &str) -> String {
        if self.empty {
            return text.to_string();
        }
        // Cannot fail for these sizes; refuse to report the text rather than leak it.
        let Some(ac) = &self.ac else {
            return "{?}".to_string();
        };
        // A child can percent-encode a placeholder (once or more) so that the raw text holds
        // none: then the decoded text, scrubbed, is what is reported.
        let mut shown = text.to_string();
        let mut decoded = text.to_string();
        for _ in 0..MAX_DECODES {
            let next = percent_encoding::percent_decode_str(&decoded)
                .decode_utf8_lossy()
                .into_owned();
            if next == decoded {
                break;
            }
            decoded = next;
            if ac.is_match(&decoded) {
                shown = decoded.clone();
            }
        }
        ac.replace_all(&shown, &self.names)
    }
}

/// [`Scrubber::scrub`] with a scrubber built for this one text.
#[cfg(test)]
pub(crate) fn scrub<'a>(text: &str, pairs: impl Iterator<Item = (&'a str, &'a String)>) -> String {
    Scrubber::new(pairs).scrub(text)
}

/// How many layers of percent-encoding [`Scrubber::scrub`] looks through.
const MAX_DECODES: usize = 4;

/// `text` cut to at most `max` bytes (at a character boundary), marked with `...` when cut.
pub(crate) fn clip(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str("...");
    text
}

/// Why a request was refused (`broker.denied`'s `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DenyReason {
    Host,
    Method,
    Path,
    Address,
    Revoked,
    Rate,
    Mismatch,
    HostHeader,
    /// The broker answered 502 itself: the host did not resolve, or could not be reached.
    Unreachable,
    /// The value cannot be written where the placeholder is (502).
    Unsendable,
}

/// `broker.request`: one request forwarded upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestEvent {
    /// The brokered secrets whose values this request carried.
    pub names: Vec<String>,
    pub method: String,
    pub host: String,
    pub port: u16,
    /// Without the query.
    pub path: String,
    pub status: u16,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub ms: u64,
    /// Secrets whose placeholder went, as it is, to a host they do not name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mismatch: Vec<String>,
    /// Requests refused by its secrets' rate since their last admitted one, beyond the
    /// first (which has its own `broker.denied` line).
    #[serde(skip_serializing_if = "is_zero")]
    pub rate_limited: u64,
    /// The upstream answered 401, the value was refreshed, and the request sent again
    /// (`status` is the second answer's).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub resent: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `broker.tunnel`: one CONNECT to an `allow` host, tunnelled unread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TunnelEvent {
    pub host: String,
    pub port: u16,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub ms: u64,
}

/// `broker.denied`: a request the broker answered itself with a refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeniedEvent {
    pub host: String,
    pub port: u16,
    pub method: String,
    /// Without the query; empty for CONNECT.
    pub path: String,
    pub reason: DenyReason,
}

/// `broker.revoked`: secrets revoked for the rest of the run, and by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevokedEvent {
    pub names: Vec<String>,
    /// `"ttl"` when `[broker].ttl` ran out, `"control"` for `agentrun revoke`.
    pub by: &'static str,
    /// The uid and pid of the process that asked, through the control socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Tunnels were closed too (`--all`, the ttl).
    pub all: bool,
}

/// `broker.refresh`: a brokered secret fetched again from its source (on a 401, or on the
/// `refresh` timer). Never a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefreshEvent {
    pub name: String,
    /// `"401"` or `"timer"`.
    pub why: &'static str,
    /// `"ok"` or `"failed"` (the old value stays in place).
    pub outcome: &'static str,
    pub changed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub ms: u64,
}

/// One broker event; serialised with its audit name in `event`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event")]
pub enum Event {
    #[serde(rename = "broker.request")]
    Request(RequestEvent),
    #[serde(rename = "broker.tunnel")]
    Tunnel(TunnelEvent),
    #[serde(rename = "broker.denied")]
    Denied(DeniedEvent),
    #[serde(rename = "broker.revoked")]
    Revoked(RevokedEvent),
    #[serde(rename = "broker.refresh")]
    Refresh(RefreshEvent),
}

impl Event {
    /// The audit event name.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Request(_) => "broker.request",
            Event::Tunnel(_) => "broker.tunnel",
            Event::Denied(_) => "broker.denied",
            Event::Revoked(_) => "broker.revoked",
            Event::Refresh(_) => "broker.refresh",
        }
    }
}

/// Where events go (the audit log, in a run). Called from the broker's runtime threads: it
/// must not block for long.
pub trait EventSink: Send + Sync + 'static {
    fn emit(&self, event: Event);
}

impl<F: Fn(Event) + Send + Sync + 'static> EventSink for F {
    fn emit(&self, event: Event) {
        self(event)
    }
}

/// Drops every event.
pub struct NoEvents;

impl EventSink for NoEvents {
    fn emit(&self, _: Event) {}
}

/// Keeps every event in memory (tests, and a caller that writes them at the end).
#[derive(Default, Clone)]
pub struct Collect(pub std::sync::Arc<std::sync::Mutex<Vec<Event>>>);

impl Collect {
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl EventSink for Collect {
    fn emit(&self, event: Event) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_is_case_insensitive_and_clip_bounds_the_length() {
        let name = "API_KEY".to_string();
        let ph = "sk-proj-PlaceHolder0123456789";
        let pairs = || [(ph, &name), ("s3cret", &name)].into_iter();
        assert_eq!(
            scrub(&format!("{}.evil.example.com", ph.to_lowercase()), pairs()),
            "{API_KEY}.evil.example.com"
        );
        assert_eq!(
            scrub(&format!("/a/{ph}/S3CRET"), pairs()),
            "/a/{API_KEY}/{API_KEY}"
        );
        assert_eq!(scrub("/plain", pairs()), "/plain");
        assert_eq!(
            scrub("/a%20b", pairs()),
            "/a%20b",
            "decoded only when it hides one"
        );
        // Percent-encoded, once or twice: the decoded text is shown, scrubbed.
        let once = ph.replace('-', "%2D");
        let twice = ph.replace('-', "%252d");
        assert_eq!(scrub(&format!("/x/{once}"), pairs()), "/x/{API_KEY}");
        assert_eq!(scrub(&format!("/x/{twice}%20y"), pairs()), "/x/{API_KEY} y");
        let long = "/é".repeat(10_000);
        let c = clip(long, MAX_PATH);
        assert!(c.len() <= MAX_PATH && c.ends_with("..."), "{}", c.len());
        assert_eq!(clip("/short".into(), MAX_PATH), "/short");
    }
}
