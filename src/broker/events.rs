//! What the broker reports, as typed `Serialize` structs: one per request, tunnel and
//! denial. They carry names, hosts, paths without the query, counts and times, and NEVER a
//! value or a placeholder (the path is the one the child sent, before substitution, with
//! every placeholder in it replaced by `{NAME}`).

use serde::Serialize;

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
}

impl Event {
    /// The audit event name.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Request(_) => "broker.request",
            Event::Tunnel(_) => "broker.tunnel",
            Event::Denied(_) => "broker.denied",
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
