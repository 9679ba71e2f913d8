//! The proxy: accept, CONNECT (intercept or tunnel or deny), absolute-form plain http,
//! the address check, the upstream dial and the forwarding of each request.
//!
//! HTTP is hyper's (server and client, HTTP/1.1), TLS is tokio-rustls'. Nothing here parses
//! HTTP or encodes a certificate by hand.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1 as server_http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::{LazyConfigAcceptor, TlsConnector};

use super::ca::{Ca, parse_pem_certs, system_roots};
use super::events::{self, DeniedEvent, DenyReason, Event, EventSink, RequestEvent, TunnelEvent};
use super::rules::{self, HostPattern};
use super::subst::{self, Counted, RestoreBody, Restorer};
use super::{Config, Control, Counters, Error, Limits, Secret};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// A secret is fetched again at most this often, however many 401s arrive.
pub(crate) const REFRESH_GAP: std::time::Duration = std::time::Duration::from_secs(30);

/// The header that marks the broker's own answers.
const MARK: &str = "x-agentrun-broker";

/// The brokered secrets as they are now: a refresh swaps in a new set (each request works
/// on the set it started with).
pub(crate) struct Values {
    pub(crate) secrets: Vec<Secret>,
    /// Values replaced by a refresh: still restored to the placeholder, and scrubbed.
    retired: Vec<Secret>,
    restorer: Option<Arc<Restorer>>,
    /// Every value and placeholder, for the text of events.
    scrubber: events::Scrubber,
}

impl Values {
    fn new(secrets: Vec<Secret>, retired: Vec<Secret>) -> Values {
        use secrecy::ExposeSecret;
        let all: Vec<Secret> = secrets.iter().chain(retired.iter()).cloned().collect();
        let scrubber = events::Scrubber::new(all.iter().flat_map(|s| {
            [s.placeholder.as_str(), s.value.expose_secret()]
                .into_iter()
                .filter(|x| !x.is_empty())
                .map(move |x| (x, &s.name))
        }));
        Values {
            restorer: Restorer::new(&all).map(Arc::new),
            scrubber,
            secrets,
            retired,
        }
    }
}

pub(crate) struct State {
    values: std::sync::RwLock<Arc<Values>>,
    routes: Vec<super::Route>,
    /// The broker's own port (a base-URL request may name it in absolute form).
    own_port: std::sync::atomic::AtomicU16,
    /// When each secret was last refetched (at most once per [`REFRESH_GAP`]).
    last_refresh: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
    allow: Vec<HostPattern>,
    ca: Arc<Ca>,
    /// The upstream TLS client, made on the first intercepted request: loading the system's
    /// roots costs milliseconds that a run whose agent never calls a brokered host (or
    /// calls it late) should not pay at its start.
    tls: std::sync::OnceLock<TlsConnector>,
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    events: Arc<dyn EventSink>,
    control: Arc<Control>,
    limits: Limits,
    counters: Arc<Counters>,
}

/// Where a request goes: the CONNECT target, or the absolute-form URI's authority.
#[derive(Clone, Debug)]
struct Target {
    host: String,
    port: u16,
}

impl Target {
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Https,
    Http,
}

impl State {
    pub(crate) fn new(
        config: Config,
        ca: Arc<Ca>,
        events: Arc<dyn EventSink>,
        control: Arc<Control>,
        counters: Arc<Counters>,
    ) -> Result<State, Error> {
        // Parsed now, so that a bad one is an error at the start, not at the first request.
        let mut extra_roots = Vec::new();
        for pem in &config.extra_roots {
            extra_roots.extend(parse_pem_certs(pem)?);
        }
        Ok(State {
            values: std::sync::RwLock::new(Arc::new(Values::new(config.secrets, Vec::new()))),
            routes: config.routes,
            own_port: std::sync::atomic::AtomicU16::new(0),
            last_refresh: Default::default(),
            allow: config.allow,
            ca,
            tls: std::sync::OnceLock::new(),
            extra_roots,
            events,
            control,
            limits: config.limits,
            counters,
        })
    }

    /// The upstream TLS client: the system's roots plus the extra ones, verified strictly.
    fn tls(&self) -> &TlsConnector {
        self.tls.get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            for cert in system_roots() {
                // A system root rustls cannot parse is skipped, as every rustls client does.
                let _ = roots.add(cert);
            }
            for cert in &self.extra_roots {
                // Each was parsed at the start; one rustls refuses is left out, as above.
                let _ = roots.add(cert.clone());
            }
            let mut client = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            client.alpn_protocols = vec![b"http/1.1".to_vec()];
            TlsConnector::from(Arc::new(client))
        })
    }

    /// Fetch `name` again (on a 401, or the timer), at most once per [`REFRESH_GAP`]; when
    /// the value changed, later requests use the new one and the old one is still restored.
    /// True when it changed. A failure leaves the old value and is logged.
    pub(crate) async fn refresh(&self, name: &str, why: &'static str) -> bool {
        let Some(r) = self.control.refresher() else {
            return false;
        };
        if self.control.is_revoked(name) {
            return false;
        }
        {
            let mut last = self.last_refresh.lock().unwrap_or_else(|p| p.into_inner());
            if last.get(name).is_some_and(|t| t.elapsed() < REFRESH_GAP) {
                return false;
            }
            last.insert(name.to_string(), Instant::now());
        }
        let started = Instant::now();
        // On a thread of its own: a source's client may run its own runtime.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let n = name.to_string();
        let spawned = std::thread::Builder::new()
            .name("agentrun-refresh".into())
            .spawn(move || {
                let _ = tx.send(r.refetch(&n));
            });
        let got = match spawned {
            Ok(_) => rx
                .await
                .unwrap_or_else(|_| Err("the refresh ended without an answer".into())),
            Err(e) => Err(format!("cannot start the refresh: {e}")),
        };
        let (changed, error) = match got {
            Err(e) => (false, Some(e)),
            Ok(v) => {
                use secrecy::ExposeSecret;
                let mut w = self.values.write().unwrap_or_else(|p| p.into_inner());
                match w.secrets.iter().position(|s| s.name == name) {
                    Some(i) if w.secrets[i].value.expose_secret() != v.expose_secret() => {
                        let mut secrets = w.secrets.clone();
                        let mut retired = w.retired.clone();
                        retired.push(secrets[i].clone());
                        secrets[i].value = v;
                        *w = Arc::new(Values::new(secrets, retired));
                        (true, None)
                    }
                    _ => (false, None),
                }
            }
        };
        if changed {
            Counters::bump(&self.counters.refreshed);
        }
        self.events.emit(Event::Refresh(events::RefreshEvent {
            name: name.to_string(),
            why,
            outcome: if error.is_some() { "failed" } else { "ok" },
            changed,
            // A source's message names the source, never a value; scrubbed all the same.
            error: error.map(|e| self.scrub(&e, events::MAX_PATH)),
            ms: started.elapsed().as_millis() as u64,
        }));
        changed
    }

    /// The secrets as they are now.
    pub(crate) fn values(&self) -> Arc<Values> {
        self.values
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn intercepts(&self, t: &Target) -> bool {
        self.values()
            .secrets
            .iter()
            .any(|s| s.hosts.iter().any(|h| h.matches(&t.host, t.port)))
    }

    fn allowed(&self, t: &Target) -> bool {
        self.allow.iter().any(|h| h.matches(&t.host, t.port))
    }

    fn names_exactly(&self, t: &Target) -> bool {
        self.values()
            .secrets
            .iter()
            .flat_map(|s| s.hosts.iter())
            .chain(self.allow.iter())
            .any(|h| h.names_exactly(&t.host, t.port))
    }

    /// A value may go over plain http only to a loopback host:port a secret names exactly.
    fn plain_named(&self, s: &Secret, t: &Target) -> bool {
        s.hosts
            .iter()
            .any(|h| h.is_loopback() && h.names_exactly(&t.host, t.port))
    }

    fn deny(&self, t: &Target, method: &Method, path: &str, reason: DenyReason) {
        Counters::bump(&self.counters.denied);
        if reason == DenyReason::Rate {
            Counters::bump(&self.counters.rate_limited);
        }
        self.events.emit(Event::Denied(DeniedEvent {
            host: self.scrub(&t.host, events::MAX_HOST),
            port: t.port,
            method: self.scrub(method.as_str(), events::MAX_METHOD),
            path: self.scrub(path, events::MAX_PATH),
            reason,
        }));
    }

    /// Text for an event (a path, host or method): every placeholder and value, in any
    /// case, replaced by `{NAME}`, then cut to `max` bytes.
    fn scrub(&self, text: &str, max: usize) -> String {
        events::clip(self.values().scrubber.scrub(text), max)
    }

    /// Resolve `t` and check every address; the address returned is the one to dial.
    async fn resolve(&self, t: &Target) -> Result<SocketAddr, Refusal> {
        let named = self.names_exactly(t);
        let addrs: Vec<SocketAddr> = match t.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, t.port)],
            Err(_) => match tokio::time::timeout(
                self.limits.connect_timeout,
                tokio::net::lookup_host((t.host.as_str(), t.port)),
            )
            .await
            {
                Ok(Ok(a)) => a.collect(),
                _ => return Err(Refusal::Upstream("cannot resolve the host")),
            },
        };
        if addrs.is_empty() {
            return Err(Refusal::Upstream("the host has no address"));
        }
        if addrs.iter().any(|a| !rules::address_allowed(a.ip(), named)) {
            return Err(Refusal::Address);
        }
        Ok(addrs[0])
    }
}

enum Refusal {
    Address,
    Upstream(&'static str),
}

/// Text answer from the broker itself.
fn answer(status: StatusCode, mark: &'static str, text: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("agentrun broker: {text}\n")));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(MARK, HeaderValue::from_static(mark));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn full(text: String) -> Body {
    Full::new(Bytes::from(text)).map_err(|e| match e {}).boxed()
}

fn empty() -> Body {
    Full::new(Bytes::new()).map_err(|e| match e {}).boxed()
}

fn refused(st: &State, t: &Target, method: &Method, path: &str, r: Refusal) -> Response<Body> {
    match r {
        Refusal::Address => {
            st.deny(t, method, path, DenyReason::Address);
            answer(
                StatusCode::FORBIDDEN,
                "denied",
                &format!(
                    "{} resolves to an address the broker does not dial",
                    t.authority()
                ),
            )
        }
        Refusal::Upstream(why) => {
            st.deny(t, method, path, DenyReason::Unreachable);
            answer(
                StatusCode::BAD_GATEWAY,
                "upstream-error",
                &format!("{}: {why}", t.authority()),
            )
        }
    }
}

/// The open connections: one permit per client connection, held for its whole life (the
/// tunnel or intercept a CONNECT turns it into included), and the stop signal they watch.
#[derive(Clone)]
pub(crate) struct Conns {
    slots: Arc<Semaphore>,
    max: usize,
    stop: tokio::sync::watch::Sender<bool>,
}

/// One client connection's hold on its slot, shared by whatever serves it.
pub(crate) struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Slot {
    /// Resolves when the broker is stopping.
    fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        stopped(self.stop.clone())
    }
}

/// Resolves once the stop signal is set (or its sender is gone).
async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// `Some(f's output)`, or `None` if `stop` resolves first (then `f` is dropped).
macro_rules! unless_stopped {
    ($stop:expr, $f:expr) => {
        match futures_util::future::select(std::pin::pin!($f), std::pin::pin!($stop)).await {
            futures_util::future::Either::Left((out, _)) => Some(out),
            futures_util::future::Either::Right(_) => None,
        }
    };
}

impl Conns {
    pub(crate) fn new(max: usize) -> Conns {
        let max = max.min(Semaphore::MAX_PERMITS);
        Conns {
            slots: Arc::new(Semaphore::new(max)),
            max,
            stop: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Tell every connection to end (each emits its event as it does).
    pub(crate) fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Wait (blocking the calling thread, not a runtime's) until every connection has
    /// ended, or `limit` has passed. True if they all ended.
    pub(crate) fn wait_closed(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        loop {
            if self.slots.available_permits() >= self.max {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

pub(crate) async fn accept_loop(listener: tokio::net::TcpListener, st: Arc<State>, conns: Conns) {
    if let Ok(a) = listener.local_addr() {
        st.own_port.store(a.port(), Ordering::Relaxed);
    }
    let stop = conns.stop.subscribe();
    loop {
        let Some(accepted) = unless_stopped!(stopped(stop.clone()), listener.accept()) else {
            return;
        };
        let (stream, _) = match accepted {
            Ok(x) => x,
            Err(_) => {
                // Out of fds or a reset before accept: wait a little, keep serving.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = conns.slots.clone().try_acquire_owned() else {
            drop(stream); // over the connection cap: closed at once
            continue;
        };
        let slot = Arc::new(Slot {
            _permit: permit,
            stop: conns.stop.subscribe(),
        });
        let _ = stream.set_nodelay(true);
        let st = st.clone();
        tokio::spawn(async move {
            let svc_state = st.clone();
            let svc_slot = slot.clone();
            let svc = service_fn(move |req| {
                let st = svc_state.clone();
                let slot = svc_slot.clone();
                async move { Ok::<_, Infallible>(proxy_request(st, slot, req).await) }
            });
            let conn = server_builder(&st.limits)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            // At stop the connection is dropped: a response body in flight emits its event.
            let _ = unless_stopped!(slot.stopping(), conn);
        });
    }
}

fn server_builder(limits: &Limits) -> server_http1::Builder {
    let mut b = server_http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .max_buf_size(64 * 1024);
    b
}

async fn proxy_request(st: Arc<State>, slot: Arc<Slot>, req: Request<Incoming>) -> Response<Body> {
    if req.method() == Method::CONNECT {
        return connect(st, slot, req).await;
    }
    let uri = req.uri();
    let to_self = uri.authority().is_none_or(|a| {
        matches!(a.host(), "127.0.0.1" | "localhost")
            && a.port_u16() == Some(st.own_port.load(Ordering::Relaxed))
    });
    if to_self && let Some(r) = route_of(&st.routes, uri.path()) {
        let r = r.clone();
        return base_url(st, r, slot, req).await;
    }
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(a)) => {
            let t = Target {
                host: rules::normalize_host(a.host()),
                port: a.port_u16().unwrap_or(80),
            };
            plain(st, t, slot, req).await
        }
        _ => answer(
            StatusCode::BAD_REQUEST,
            "denied",
            "this is a proxy: send CONNECT host:port, or an absolute http:// URL",
        ),
    }
}

/// The route whose prefix `path` starts with (as a whole segment).
fn route_of<'a>(routes: &'a [super::Route], path: &str) -> Option<&'a super::Route> {
    routes.iter().find(|r| {
        path.strip_prefix(r.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Base-URL mode: the request goes to the route's upstream over TLS, its path under the
/// upstream's, its Host the upstream's; then as any intercepted request.
async fn base_url(
    st: Arc<State>,
    r: super::Route,
    slot: Arc<Slot>,
    req: Request<Incoming>,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let rest = parts
        .uri
        .path()
        .strip_prefix(r.prefix.as_str())
        .unwrap_or("");
    let path = format!("{}{}", r.path, if rest.is_empty() { "/" } else { rest });
    let pq = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let Ok(uri) = pq.parse::<http::Uri>() else {
        return answer(StatusCode::BAD_REQUEST, "denied", "not a valid path");
    };
    parts.uri = uri;
    parts.headers.remove(header::HOST);
    let t = Target {
        host: r.host.clone(),
        port: r.port,
    };
    let upstream = Arc::new(tokio::sync::Mutex::new(None));
    forward(
        st,
        t,
        None,
        upstream,
        Scheme::Https,
        slot,
        Request::from_parts(parts, body),
    )
    .await
}

async fn connect(st: Arc<State>, slot: Arc<Slot>, req: Request<Incoming>) -> Response<Body> {
    let Some(auth) = req.uri().authority().cloned() else {
        return answer(StatusCode::BAD_REQUEST, "denied", "CONNECT needs host:port");
    };
    let t = Target {
        host: rules::normalize_host(auth.host()),
        port: auth.port_u16().unwrap_or(443),
    };
    if st.intercepts(&t) {
        let addr = match st.resolve(&t).await {
            Ok(a) => a,
            Err(r) => return refused(&st, &t, &Method::CONNECT, "", r),
        };
        tokio::spawn(async move {
            // The connection's slot goes with it: the cap counts intercepts.
            let Some(upgraded) = unless_stopped!(slot.stopping(), hyper::upgrade::on(req)) else {
                return;
            };
            if let Ok(up) = upgraded {
                intercept(st, t, addr, up, slot).await;
            }
        });
        return Response::new(empty());
    }
    if st.allowed(&t) {
        if st.control.all_revoked() {
            st.deny(&t, &Method::CONNECT, "", DenyReason::Revoked);
            return answer(
                StatusCode::FORBIDDEN,
                "revoked",
                "every secret of this run is revoked, and tunnels with them",
            );
        }
        let addr = match st.resolve(&t).await {
            Ok(a) => a,
            Err(r) => return refused(&st, &t, &Method::CONNECT, "", r),
        };
        let upstream =
            match tokio::time::timeout(st.limits.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                _ => {
                    st.deny(&t, &Method::CONNECT, "", DenyReason::Unreachable);
                    return answer(
                        StatusCode::BAD_GATEWAY,
                        "upstream-error",
                        &format!("cannot connect to {}", t.authority()),
                    );
                }
            };
        let _ = upstream.set_nodelay(true);
        tokio::spawn(async move {
            // The connection's slot goes with it: the cap counts tunnels.
            let Some(upgraded) = unless_stopped!(slot.stopping(), hyper::upgrade::on(req)) else {
                return;
            };
            if let Ok(up) = upgraded {
                tunnel(st, t, TokioIo::new(up), upstream, slot).await;
            }
        });
        return Response::new(empty());
    }
    st.deny(&t, &Method::CONNECT, "", DenyReason::Host);
    answer(
        StatusCode::FORBIDDEN,
        "denied",
        &format!("{} is not a host this run may reach", t.authority()),
    )
}

/// Byte for byte, unread, until either side closes, both are idle for `idle_timeout`, or
/// the broker stops. Its `broker.tunnel` event is emitted however it ends (a guard's drop),
/// with the bytes moved so far.
async fn tunnel(
    st: Arc<State>,
    t: Target,
    mut child: TokioIo<hyper::upgrade::Upgraded>,
    mut upstream: TcpStream,
    slot: Arc<Slot>,
) {
    Counters::bump(&st.counters.tunnels);
    let guard = TunnelGuard {
        st: st.clone(),
        host: bounded(&t.host),
        port: t.port,
        started: Instant::now(),
        up: AtomicU64::new(0),
        down: AtomicU64::new(0),
    };
    let copy = idle_copy(
        &mut child,
        &mut upstream,
        st.limits.idle_timeout,
        (&guard.up, &guard.down),
    );
    // `revoke --all` (or the ttl) closes tunnels too.
    let stop = Box::pin(slot.stopping());
    let revoked = Box::pin(st.control.all_revoked_wait());
    let _ = unless_stopped!(futures_util::future::select(stop, revoked), copy);
    drop(guard);
}

/// Emits a tunnel's `broker.tunnel` when dropped: when the copy ends, and also when the
/// runtime drops the task.
struct TunnelGuard {
    st: Arc<State>,
    host: String,
    port: u16,
    started: Instant,
    up: AtomicU64,
    down: AtomicU64,
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        // A wildcard `allow` lets the child choose the name: never a value or placeholder.
        let host = self
            .st
            .scrub(&std::mem::take(&mut self.host), super::events::MAX_HOST);
        self.st.events.emit(Event::Tunnel(TunnelEvent {
            host,
            port: self.port,
            bytes_up: self.up.load(Ordering::Relaxed),
            bytes_down: self.down.load(Ordering::Relaxed),
            ms: self.started.elapsed().as_millis() as u64,
        }));
    }
}

/// The longest host an event carries; a longer one is cut (on a char boundary) and marked.
const EVENT_FIELD_MAX: usize = 1024;

fn bounded(s: &str) -> String {
    if s.len() <= EVENT_FIELD_MAX {
        return s.to_string();
    }
    let mut end = EVENT_FIELD_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...[{} bytes]", &s[..end], s.len())
}

/// How long since the last byte, in ms: saturating, as `last` is written by the copying
/// halves (on other threads) between the watchdog's two reads and may be past `now`.
fn idle_for(now_ms: u64, last_ms: u64) -> u64 {
    now_ms.saturating_sub(last_ms)
}

/// `copy_bidirectional`, ended when no byte moves either way for `idle`; the bytes moved
/// each way are added to `counts` (a to b, b to a) as they go.
async fn idle_copy<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Duration,
    counts: (&AtomicU64, &AtomicU64),
) -> (u64, u64)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let last = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let touch = |l: &AtomicU64| l.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    let (up_bytes, down_bytes) = counts;
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match ar.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    touch(&last);
                    if bw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    up_bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
        let _ = bw.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match br.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    touch(&last);
                    if aw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    down_bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
        let _ = aw.shutdown().await;
    };
    let watchdog = async {
        loop {
            tokio::time::sleep(idle / 4 + Duration::from_millis(1)).await;
            let now = start.elapsed().as_millis() as u64;
            if idle_for(now, last.load(Ordering::Relaxed)) >= idle.as_millis() as u64 {
                break;
            }
        }
    };
    let both = futures_util::future::join(up, down);
    futures_util::pin_mut!(both);
    futures_util::pin_mut!(watchdog);
    futures_util::future::select(both, watchdog).await;
    (
        up_bytes.load(Ordering::Relaxed),
        down_bytes.load(Ordering::Relaxed),
    )
}

#[cfg(test)]
#[path = "proxy_tunnel_tests.rs"]
mod tunnel_tests;

/// Terminate TLS with a leaf for the target (the SNI must name it), then serve HTTP/1.1 on it
/// and forward each request upstream with values put in.
async fn intercept(
    st: Arc<State>,
    t: Target,
    addr: SocketAddr,
    up: hyper::upgrade::Upgraded,
    slot: Arc<Slot>,
) {
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), TokioIo::new(up));
    let Ok(Ok(start)) = tokio::time::timeout(st.limits.header_read_timeout, acceptor).await else {
        return;
    };
    let sni = start
        .client_hello()
        .server_name()
        .map(rules::normalize_host);
    let is_ip = t.host.parse::<IpAddr>().is_ok();
    let sni_ok = match &sni {
        Some(s) => *s == t.host,
        None => is_ip,
    };
    if !sni_ok {
        st.deny(&t, &Method::CONNECT, "", DenyReason::HostHeader);
        return;
    }
    let Ok(config) = st.ca.server_config(&t.host) else {
        return;
    };
    let Ok(Ok(tls)) =
        tokio::time::timeout(st.limits.header_read_timeout, start.into_stream(config)).await
    else {
        return;
    };
    let upstream = Arc::new(tokio::sync::Mutex::new(None));
    let svc_state = st.clone();
    let svc_slot = slot.clone();
    let svc = service_fn(move |req| {
        let st = svc_state.clone();
        let t = t.clone();
        let upstream = upstream.clone();
        let slot = svc_slot.clone();
        async move {
            Ok::<_, Infallible>(
                forward(st, t, Some(addr), upstream, Scheme::Https, slot, req).await,
            )
        }
    });
    let conn = server_builder(&st.limits)
        .serve_connection(TokioIo::new(tls), svc)
        .with_upgrades();
    // At stop the connection is dropped: a response body in flight emits its event.
    let _ = unless_stopped!(slot.stopping(), conn);
}

/// Absolute-form plain http.
async fn plain(
    st: Arc<State>,
    t: Target,
    slot: Arc<Slot>,
    req: Request<Incoming>,
) -> Response<Body> {
    let named = st.values().secrets.iter().any(|s| st.plain_named(s, &t));
    if !named && !st.allowed(&t) {
        st.deny(&t, req.method(), req.uri().path(), DenyReason::Host);
        return answer(
            StatusCode::FORBIDDEN,
            "denied",
            &format!(
                "{} is not a host this run may reach over http",
                t.authority()
            ),
        );
    }
    let upstream = Arc::new(tokio::sync::Mutex::new(None));
    forward(st, t, None, upstream, Scheme::Http, slot, req).await
}

type Sender = hyper::client::conn::http1::SendRequest<Body>;

/// Does the `Host` header name the target? (Absent is fine: it is set from the target.)
/// Only `host` or `host:port`: userinfo (`evil@host`) is refused.
fn host_header_ok(v: &HeaderValue, t: &Target, scheme: Scheme) -> bool {
    let Ok(text) = v.to_str() else {
        return false;
    };
    if text.contains('@') {
        return false;
    }
    let Ok(auth) = text.parse::<http::uri::Authority>() else {
        return false;
    };
    let default = if scheme == Scheme::Https { 443 } else { 80 };
    rules::normalize_host(auth.host()) == t.host && auth.port_u16().unwrap_or(default) == t.port
}

/// Headers that belong to one hop, never forwarded.
const HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop(headers: &mut http::HeaderMap) {
    let listed: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    for h in HOP.iter().map(|s| s.to_string()).chain(listed) {
        headers.remove(h.as_str());
    }
}

/// Emits `broker.request` when it is dropped: when the response body ends, or the request
/// ends any other way (status 0 when it was cut off before an answer).
struct Finish {
    st: Arc<State>,
    event: Option<RequestEvent>,
    /// Secrets whose placeholder the body may carry, and how many it did carry.
    body: (Vec<String>, Arc<AtomicU64>),
    started: Instant,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

impl Finish {
    fn resent(&mut self) {
        if let Some(e) = &mut self.event {
            e.resent = true;
        }
    }

    fn status(&mut self, status: u16) {
        if let Some(e) = &mut self.event {
            e.status = status;
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if let Some(mut e) = self.event.take() {
            if self.body.1.load(Ordering::Relaxed) > 0 {
                for n in &self.body.0 {
                    if !e.names.contains(n) {
                        e.names.push(n.clone());
                    }
                }
            }
            e.bytes_up = self.up.load(Ordering::Relaxed);
            e.bytes_down = self.down.load(Ordering::Relaxed);
            e.ms = self.started.elapsed().as_millis() as u64;
            self.st.events.emit(Event::Request(e));
        }
    }
}

/// A body that keeps a value alive until it is dropped.
struct WithGuard<B, G> {
    inner: B,
    _guard: G,
}

impl<B: hyper::body::Body + Unpin, G: Unpin> hyper::body::Body for WithGuard<B, G> {
    type Data = B::Data;
    type Error = B::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    st: Arc<State>,
    t: Target,
    checked: Option<SocketAddr>,
    upstream: Arc<tokio::sync::Mutex<Option<Sender>>>,
    scheme: Scheme,
    slot: Arc<Slot>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    // A WebSocket upgrade: substituted as any request; after a 101 the frames pass through.
    let upgrade = websocket_upgrade(req.headers());
    let child_side = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();

    // One Host, naming the target; an absolute-form target inside an intercepted
    // connection must name it too.
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host_bad = match (hosts.next(), hosts.next()) {
        (Some(h), None) => !host_header_ok(h, &t, scheme),
        (Some(_), Some(_)) => true,
        (None, _) => false,
    };
    let authority_bad = parts.uri.authority().is_some_and(|a| {
        HeaderValue::from_str(a.as_str()).map_or(true, |v| !host_header_ok(&v, &t, scheme))
    });
    if host_bad || authority_bad {
        st.deny(&t, &method, &path, DenyReason::HostHeader);
        return answer(
            StatusCode::MISDIRECTED_REQUEST,
            "denied",
            &format!("the Host header does not name {}", t.authority()),
        );
    }
    let named = |s: &Secret| match scheme {
        Scheme::Https => s.hosts.iter().any(|h| h.matches(&t.host, t.port)),
        Scheme::Http => st.plain_named(s, &t),
    };
    let values = st.values();
    // Allow-lists of every secret naming this host apply to every request to it.
    for s in values
        .secrets
        .iter()
        .filter(|s| s.hosts.iter().any(|h| h.matches(&t.host, t.port)))
    {
        if let Some(m) = &s.methods
            && !m.iter().any(|m| m == method.as_str())
        {
            st.deny(&t, &method, &path, DenyReason::Method);
            return answer(
                StatusCode::FORBIDDEN,
                "denied",
                &format!("{method} is not allowed to {} ({})", t.authority(), s.name),
            );
        }
        if let Some(p) = &s.paths
            && !p.iter().any(|g| g.matches(&path))
        {
            st.deny(&t, &method, &path, DenyReason::Path);
            return answer(
                StatusCode::FORBIDDEN,
                "denied",
                &format!("this path is not allowed on {} ({})", t.authority(), s.name),
            );
        }
    }
    // The request as the child sent it (placeholders in place), for a second sending.
    let original = (
        parts.method.clone(),
        parts.uri.clone(),
        parts.version,
        parts.headers.clone(),
    );
    let applied = match subst::apply(&values.secrets, &named, &mut parts) {
        Ok(a) => a,
        Err(e) => {
            st.deny(&t, &method, &path, DenyReason::Unsendable);
            return answer(StatusCode::BAD_GATEWAY, "upstream-error", &e.0);
        }
    };
    for n in &applied.names {
        if st.control.is_revoked(n) {
            st.deny(&t, &method, &path, DenyReason::Revoked);
            // The connection closes after this answer: the client's next request starts
            // afresh, and finds the secret revoked too.
            let mut r = answer(
                StatusCode::FORBIDDEN,
                "revoked",
                &format!("{n} is revoked for this run"),
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
    }
    let mut rate_limited = 0;
    for n in &applied.names {
        if let Err(ra) = st.control.admit(n) {
            // The first refusal after an admitted request is logged; the rest are counted
            // (and reported with the next admitted one, and in `exit`).
            if st.control.refused(n) {
                st.deny(&t, &method, &path, DenyReason::Rate);
            } else {
                Counters::bump(&st.counters.denied);
                Counters::bump(&st.counters.rate_limited);
            }
            let mut r = answer(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                &format!("{n} is over its rate"),
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(ra.0.as_secs_f64().ceil().max(1.0) as u64),
            );
            return r;
        }
        rate_limited += st.control.admitted(n);
    }
    // `in = ["body"]`: placeholders in the body replaced, escaped for its Content-Type.
    let sub = subst::body_substituter(
        &values.secrets,
        &named,
        &|n| st.control.is_revoked(n),
        subst::body_kind(&parts.headers),
    );
    let body_names: Vec<String> = sub.as_ref().map(|(_, n)| n.clone()).unwrap_or_default();
    // Whether a value may travel with this request: in its head, or in its body.
    let carries = !applied.names.is_empty() || sub.is_some();
    // A host a secret names can hold a value (one this run sent, and the upstream stored or
    // echoes): every request to it gets whole responses restored, never a `Range` of one
    // (review 11e, E1, E2).
    let to_named = values.secrets.iter().any(&named);
    let restore = restorer_for(&values, &applied, to_named);
    upstream_headers(&mut parts, &t, scheme, restore.is_some(), to_named);
    if let Some(u) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, u.clone());
    }
    let up_bytes = Arc::new(AtomicU64::new(0));
    let down_bytes = Arc::new(AtomicU64::new(0));
    // A request carrying a value keeps a copy of its body (up to 1 MiB): a 401 that a
    // refreshed value answers can then be sent again.
    let kept = (carries && st.control.refresher().is_some())
        .then(|| Arc::new(std::sync::Mutex::new(subst::Kept::default())));
    let counted = Counted::new(body, up_bytes.clone(), kept.clone());
    let body_hits = Arc::new(AtomicU64::new(0));
    let body = match sub {
        None => counted.map_err(|e| Box::new(e) as BoxError).boxed(),
        Some((sub, _)) => {
            match substitute_body(&mut parts.headers, counted, sub, body_hits.clone()).await {
                Ok(b) => b,
                Err(why) => {
                    st.deny(&t, &method, &path, DenyReason::Unsendable);
                    return answer(StatusCode::BAD_REQUEST, "denied", &why);
                }
            }
        }
    };
    let out = Request::from_parts(parts, body);

    let event = RequestEvent {
        names: applied.names.clone(),
        method: st.scrub(method.as_str(), events::MAX_METHOD),
        host: st.scrub(&t.host, events::MAX_HOST),
        port: t.port,
        path: st.scrub(&path, events::MAX_PATH),
        status: 0,
        bytes_up: 0,
        bytes_down: 0,
        ms: 0,
        mismatch: applied.mismatch.clone(),
        rate_limited,
        resent: false,
    };
    Counters::bump(&st.counters.requests);
    // From here on the request is logged however it ends: answered, failed, or cut off
    // (the child hung up or the run ended first: status 0).
    let mut finish = Finish {
        st: st.clone(),
        event: Some(event),
        body: (body_names.clone(), body_hits.clone()),
        started,
        up: up_bytes,
        down: down_bytes.clone(),
    };

    let resp = {
        let mut slot = upstream.lock().await;
        let ready = match slot.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !ready {
            let addr = match checked {
                Some(a) => a,
                None => match st.resolve(&t).await {
                    Ok(a) => a,
                    Err(r) => {
                        // Logged as the denial it is, not as a request.
                        finish.event = None;
                        return refused(&st, &t, &method, &path, r);
                    }
                },
            };
            match dial(&st, &t, addr, scheme).await {
                Ok(s) => *slot = Some(s),
                Err(why) => {
                    finish.status(502);
                    return answer(
                        StatusCode::BAD_GATEWAY,
                        "upstream-error",
                        &format!("{}: {why}", t.authority()),
                    );
                }
            }
        }
        let Some(sender) = slot.as_mut() else {
            return answer(StatusCode::BAD_GATEWAY, "upstream-error", "no upstream");
        };
        sender.send_request(out).await
    };
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            finish.status(502);
            let why = if e.is_timeout() {
                "timed out"
            } else {
                "the upstream closed or failed"
            };
            return answer(
                StatusCode::BAD_GATEWAY,
                "upstream-error",
                &format!("{}: {why}", t.authority()),
            );
        }
    };
    let mut resp = resp;
    if let (Some(u), Some(child_side)) = (&upgrade, child_side)
        && resp.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let upstream_side = hyper::upgrade::on(&mut resp);
        let (mut rparts, _) = resp.into_parts();
        finish.status(101);
        strip_hop(&mut rparts.headers);
        if let Some(r) = &restore {
            r.headers(&mut rparts.headers);
        }
        rparts.extensions.remove::<hyper::ext::ReasonPhrase>();
        rparts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        rparts.headers.insert(header::UPGRADE, u.clone());
        let idle = st.limits.idle_timeout;
        // The stream ends when a secret it carries is revoked (or everything is), or the
        // broker stops; it holds its connection's slot (the cap counts it).
        let mut carried = applied.names.clone();
        carried.extend(body_names.iter().cloned());
        let revoked = Box::pin(st.control.revocation_of(carried));
        let stopping = Box::pin(slot.stopping());
        tokio::spawn(async move {
            // Frames pass through as a tunnel's bytes do (idle timeout included); the
            // request's line is written when the stream ends, with its bytes.
            let (finish, _slot) = (finish, slot);
            if let (Ok(a), Ok(b)) = (child_side.await, upstream_side.await) {
                let (up, down) = (finish.up.clone(), finish.down.clone());
                let copy = async {
                    idle_copy(
                        &mut TokioIo::new(a),
                        &mut TokioIo::new(b),
                        idle,
                        (&up, &down),
                    )
                    .await
                };
                let _ = unless_stopped!(futures_util::future::select(revoked, stopping), copy);
            }
        });
        return Response::from_parts(rparts, empty());
    }
    let (rparts, rbody) = resp.into_parts();
    finish.status(rparts.status.as_u16());
    // A 401 that a refreshed value answers: the second answer is the one that goes on.
    let (mut rparts, rbody, restore) = if rparts.status == StatusCode::UNAUTHORIZED && carries {
        match resend_refreshed(
            &st,
            &t,
            checked,
            scheme,
            &applied.names,
            original,
            kept,
            &named,
        )
        .await
        {
            Some((parts2, body2, restore2)) => {
                finish.resent();
                finish.status(parts2.status.as_u16());
                (parts2, body2, restore2)
            }
            None => (rparts, rbody, restore),
        }
    } else {
        (rparts, rbody, restore)
    };
    // What the restorer cannot read, it cannot restore: a compressed body (sent although
    // `identity` was asked for), or a partial one from a named host. Checked on the answer
    // that goes to the child, whichever it is (review 11f, F1: a resent request's answer
    // skipped these checks).
    // Every Content-Encoding header, and every coding listed in each (review 11g, G4: a
    // second header got past a check of the first).
    let encoded = rparts
        .headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| {
            v.to_str().map_or(true, |t| {
                t.split(',')
                    .map(str::trim)
                    .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
            })
        });
    if (restore.is_some() && encoded) || (to_named && rparts.status == StatusCode::PARTIAL_CONTENT)
    {
        finish.status(502);
        let why = if encoded {
            "the upstream sent an encoded body (Content-Encoding) the broker cannot check for values"
        } else {
            "the upstream sent a partial response to a request carrying a credential"
        };
        return answer(
            StatusCode::BAD_GATEWAY,
            "upstream-error",
            &format!("{}: {why}", t.authority()),
        );
    }
    strip_hop(&mut rparts.headers);
    // The upstream's own reason phrase never reaches the child (it could carry a value):
    // hyper writes the canonical one for the status.
    rparts.extensions.remove::<hyper::ext::ReasonPhrase>();
    if let Some(r) = &restore {
        r.headers(&mut rparts.headers);
        if r.changes_length() {
            rparts.headers.remove(header::CONTENT_LENGTH);
        }
    }
    let body = WithGuard {
        inner: RestoreBody::new(rbody, restore, down_bytes),
        _guard: finish,
    }
    .map_err(|e| Box::new(e) as BoxError)
    .boxed();
    Response::from_parts(rparts, body)
}

/// A request body with its placeholders replaced. When the replacement changes the length
/// and the body declares one of at most [`subst::KEEP_MAX`] bytes, the body is read whole
/// and its `Content-Length` set anew; a longer one streams, chunked (no `Content-Length`).
async fn substitute_body<B>(
    headers: &mut http::HeaderMap,
    body: B,
    sub: Restorer,
    hits: Arc<AtomicU64>,
) -> Result<Body, String>
where
    B: hyper::body::Body<Data = hyper::body::Bytes> + Unpin + Send + Sync + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if sub.changes_length() {
        if let Some(n) = declared
            && n <= subst::KEEP_MAX
        {
            let whole = http_body_util::Limited::new(body, subst::KEEP_MAX)
                .collect()
                .await
                .map_err(|e| format!("the request body could not be read: {e}"))?
                .to_bytes();
            let out = sub.replace_counting(&whole, Some(&hits));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
            return Ok(http_body_util::Full::new(hyper::body::Bytes::from(out))
                .map_err(|never| match never {})
                .boxed());
        }
        headers.remove(header::CONTENT_LENGTH);
    }
    Ok(
        RestoreBody::new(body, Some(Arc::new(sub)), Arc::new(AtomicU64::new(0)))
            .counting(hits)
            .map_err(|e| Box::new(e) as BoxError)
            .boxed(),
    )
}

/// The `Upgrade` value of a WebSocket upgrade request (`Connection: upgrade` and
/// `Upgrade: websocket`), else `None`: other upgrades are not passed on.
fn websocket_upgrade(h: &http::HeaderMap) -> Option<HeaderValue> {
    let conn_upgrade = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let up = h.get(header::UPGRADE)?;
    (conn_upgrade
        && up
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("websocket")))
    .then(|| up.clone())
}

/// The restorer for a request's response: none for plain http that carried nothing; the
/// run's, plus the request's own exact substitutions.
fn restorer_for(
    values: &Values,
    applied: &subst::Applied,
    to_named: bool,
) -> Option<Arc<Restorer>> {
    if !to_named && applied.names.is_empty() {
        None
    } else if applied.written.is_empty() {
        values.restorer.clone()
    } else {
        values
            .restorer
            .as_ref()
            .and_then(|r| r.with_extra(&applied.written))
            .map(Arc::new)
    }
}

/// The head that goes upstream: no hop-by-hop headers, a Host naming the target, no
/// compression when the response is to be restored, and no `Range` on a request that
/// carries a value (the child could have an echo of its own request cut where it likes, so
/// that no piece holds the whole value the restorer looks for).
fn upstream_headers(
    parts: &mut http::request::Parts,
    t: &Target,
    scheme: Scheme,
    restoring: bool,
    carries: bool,
) {
    strip_hop(&mut parts.headers);
    if !parts.headers.contains_key(header::HOST) {
        let host = if (scheme == Scheme::Https && t.port == 443)
            || (scheme == Scheme::Http && t.port == 80)
        {
            if t.host.contains(':') {
                format!("[{}]", t.host)
            } else {
                t.host.clone()
            }
        } else {
            t.authority()
        };
        if let Ok(v) = HeaderValue::from_str(&host) {
            parts.headers.insert(header::HOST, v);
        }
    }
    if restoring {
        parts.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    if carries {
        parts.headers.remove(header::RANGE);
        parts.headers.remove(header::IF_RANGE);
    }
}

/// A 401 to a request carrying `names`: refresh them (at most once per [`REFRESH_GAP`]
/// each); when a value changed and the body was kept whole, send the request again, once,
/// on a new connection, with the new value. `None`: the 401 stands.
#[allow(clippy::too_many_arguments)]
async fn resend_refreshed(
    st: &Arc<State>,
    t: &Target,
    checked: Option<SocketAddr>,
    scheme: Scheme,
    names: &[String],
    original: (Method, http::Uri, http::Version, http::HeaderMap),
    kept: Option<Arc<std::sync::Mutex<subst::Kept>>>,
    named: &(dyn Fn(&Secret) -> bool + Sync),
) -> Option<(http::response::Parts, Incoming, Option<Arc<Restorer>>)> {
    // A revoked secret is neither refetched nor sent again (review 11d, D).
    let revoked = |names: &[String]| names.iter().any(|n| st.control.is_revoked(n));
    if revoked(names) {
        return None;
    }
    let mut changed = false;
    for n in names {
        changed |= st.refresh(n, "401").await;
    }
    let body = kept?.lock().unwrap_or_else(|p| p.into_inner()).whole();
    let body = body.filter(|_| changed)?;
    // The refetch took time: a revocation (or the ttl) may have come meanwhile.
    if revoked(names) {
        return None;
    }
    let values = st.values();
    let (method, uri, version, headers) = original;
    let mut parts = Request::new(()).into_parts().0;
    (parts.method, parts.uri, parts.version, parts.headers) = (method, uri, version, headers);
    let applied = subst::apply(&values.secrets, named, &mut parts).ok()?;
    let restore = restorer_for(&values, &applied, true);
    upstream_headers(&mut parts, t, scheme, restore.is_some(), true);
    let sub = subst::body_substituter(
        &values.secrets,
        named,
        &|n| st.control.is_revoked(n),
        subst::body_kind(&parts.headers),
    );
    let body = match sub {
        Some((sub, _)) => hyper::body::Bytes::from(sub.replace_all(&body)),
        None => body,
    };
    // hyper writes the length of the whole body it is given.
    parts.headers.remove(header::CONTENT_LENGTH);
    let addr = match checked {
        Some(a) => a,
        None => st.resolve(t).await.ok()?,
    };
    let mut sender = dial(st, t, addr, scheme).await.ok()?;
    let req = Request::from_parts(
        parts,
        http_body_util::Full::new(body)
            .map_err(|never| match never {})
            .boxed(),
    );
    let resp = sender.send_request(req).await.ok()?;
    let (p, b) = resp.into_parts();
    Some((p, b, restore))
}

/// Dial the checked address (no second resolution), TLS-verify against the roots, and
/// start an HTTP/1.1 client connection.
async fn dial(st: &State, t: &Target, addr: SocketAddr, scheme: Scheme) -> Result<Sender, String> {
    let tcp = match tokio::time::timeout(st.limits.connect_timeout, TcpStream::connect(addr)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("cannot connect: {e}")),
        Err(_) => return Err("connect timed out".into()),
    };
    let _ = tcp.set_nodelay(true);
    match scheme {
        Scheme::Http => handshake(TokioIo::new(tcp)).await,
        Scheme::Https => {
            let name = match t.host.parse::<IpAddr>() {
                Ok(ip) => ServerName::IpAddress(ip.into()),
                Err(_) => ServerName::try_from(t.host.clone())
                    .map_err(|_| "not a valid TLS name".to_string())?,
            };
            let tls =
                match tokio::time::timeout(st.limits.connect_timeout, st.tls().connect(name, tcp))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return Err(format!("TLS: {e}")),
                    Err(_) => return Err("TLS handshake timed out".into()),
                };
            handshake(TokioIo::new(tls)).await
        }
    }
}

async fn handshake<I>(io: I) -> Result<Sender, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}
