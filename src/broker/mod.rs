//! The credential broker's core: an HTTP(S) proxy that holds brokered values, so the child
//! holds only placeholders (contract `docs/contract.md`, "The credential broker").
//!
//! Owns: the rule syntax ([`rules`]), placeholders ([`placeholder()`]), the run's CA ([`Ca`]),
//! the proxy ([`serve`]), its events ([`events`]) and the seams for revocation, rate limits
//! and refresh ([`Control`]).
//!
//! May not import: the rest of the crate (profile, secrets, launch, audit, sandbox). The
//! caller builds a plain [`Config`], makes the listening socket (inside the child's network
//! namespace), turns [`Event`]s into audit lines and stops the [`Handle`] at the end.
//!
//! Nothing TLS is built until [`Ca::new`] or [`serve`] is called, so runs without a broker
//! pay nothing for it.
//!
//! Crypto: rustls with the aws-lc-rs provider, installed as the process default by
//! [`install_crypto_provider`] (reqwest and the AWS SDK already use it; `ring` is in the
//! build only as a direct dependency of `aws-config`).

pub mod ca;
pub mod control;
pub mod events;
pub mod placeholder;
mod proxy;
pub mod rules;
pub mod socket;
mod subst;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use secrecy::SecretString;

pub use ca::{Ca, write_bundle};
pub use control::{Control, Governed, RateLimiter, Refresher, RetryAfter};
pub use events::{DenyReason, Event, EventSink};
pub use placeholder::placeholder;
pub use rules::{HeaderTemplate, HostPattern, PathGlob, RuleError};

/// The broker's own failures (at start; a request's failures are HTTP answers).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("broker CA: cannot make a certificate: {0}")]
    Cert(String),
    #[error("broker TLS: {0}")]
    Tls(String),
    #[error("broker: extra upstream roots: {0}")]
    Roots(String),
    #[error("broker: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    fn cert(e: rcgen::Error) -> Error {
        Error::Cert(e.to_string())
    }
    fn tls(e: rustls::Error) -> Error {
        Error::Tls(e.to_string())
    }
}

/// Where in a request the placeholder is replaced (`in = [...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    pub header: bool,
    pub path: bool,
    pub query: bool,
    /// JSON and form bodies: issue 12. Accepted here; the proxy does not substitute in
    /// bodies yet (`subst::body` is the seam).
    pub body: bool,
}

impl Default for Parts {
    fn default() -> Parts {
        Parts {
            header: true,
            path: true,
            query: true,
            body: false,
        }
    }
}

/// One brokered secret.
#[derive(Clone)]
pub struct Secret {
    pub name: String,
    pub value: SecretString,
    /// What the child holds (see [`placeholder()`]).
    pub placeholder: String,
    /// Which hosts may receive the value.
    pub hosts: Vec<HostPattern>,
    /// Auth-slot mode: set this header on every request to `hosts`.
    pub header: Option<HeaderTemplate>,
    pub parts: Parts,
    /// Allowed methods (uppercase) for requests to `hosts`; `None`: any.
    pub methods: Option<Vec<String>>,
    /// Allowed path globs for requests to `hosts`; `None`: any.
    pub paths: Option<Vec<PathGlob>>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("hosts", &self.hosts)
            .field("header", &self.header.as_ref().map(|h| h.name.as_str()))
            .field("parts", &self.parts)
            .field("methods", &self.methods)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

/// Limits against a hostile child.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open client connections at once; more are closed at accept.
    pub max_connections: usize,
    /// Time for a request's head (and a TLS handshake) to arrive: slowloris. hyper starts
    /// this timer whenever it waits for a head, so it also closes a keep-alive connection
    /// that sends no next request for this long (clients reconnect, as with any server).
    pub header_read_timeout: Duration,
    /// A tunnel with no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// Dialing an upstream.
    pub connect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Base-URL mode: requests to `http://127.0.0.1:PORT{prefix}/...` (plain http, inside the
/// child's own namespace) go to `https://{host}:{port}{path}/...`, substituted as any
/// request to that host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `/<random id>`: what the child's base URL ends with.
    pub prefix: String,
    pub host: String,
    pub port: u16,
    /// The upstream URL's path, without a trailing `/` (`/v1`, or empty).
    pub path: String,
}

/// What the broker does, built by the caller from the profile.
#[derive(Debug, Default)]
pub struct Config {
    pub secrets: Vec<Secret>,
    /// Base-URL routes.
    pub routes: Vec<Route>,
    /// Hosts tunnelled unread (`[broker].allow`).
    pub allow: Vec<HostPattern>,
    /// More roots to trust for upstreams, PEM (`[broker].ca_cert`), besides the system's.
    pub extra_roots: Vec<Vec<u8>>,
    pub limits: Limits,
}

/// Install aws-lc-rs as rustls's process-wide provider (once; a later call, or a provider
/// someone else installed first, is left as it is).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The broker's counts, for the exit event.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub requests: u64,
    pub denied: u64,
    pub rate_limited: u64,
    pub tunnels: u64,
    pub refreshed: u64,
    pub revoked: Vec<String>,
}

/// A live view of a broker's counters.
#[derive(Clone)]
pub struct CountsNow(Arc<Counters>);

impl CountsNow {
    /// Requests forwarded and refused so far.
    pub fn requests_denied(&self) -> (u64, u64) {
        (
            self.0.requests.load(Ordering::Relaxed),
            self.0.denied.load(Ordering::Relaxed),
        )
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub denied: AtomicU64,
    pub rate_limited: AtomicU64,
    pub tunnels: AtomicU64,
    pub refreshed: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Who revoked: the ttl, or a process through the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokedBy {
    Ttl,
    Peer { uid: u32, pid: i32 },
}

/// Revokes a running broker's secrets and logs it (`broker.revoked`); cheap to clone, for
/// the ttl's timer and the control socket.
#[derive(Clone)]
pub struct Revoker {
    control: Arc<Control>,
    events: Arc<dyn EventSink>,
    names: Arc<Vec<String>>,
}

impl Revoker {
    /// The brokered names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Revoke `names` (`None`: every one, and close the tunnels). Returns what this call
    /// newly revoked; asking for a name this broker does not have is the caller's check.
    pub fn revoke(&self, names: Option<&[String]>, by: RevokedBy) -> Vec<String> {
        let before = self.control.revoked();
        let all = names.is_none();
        match names {
            None => self.control.revoke_all(&self.names),
            Some(ns) => {
                for n in ns.iter().filter(|n| self.names.contains(n)) {
                    self.control.revoke(n);
                }
            }
        }
        let newly: Vec<String> = self
            .control
            .revoked()
            .into_iter()
            .filter(|n| !before.contains(n))
            .collect();
        if !newly.is_empty() || all {
            let (who, uid, pid) = match by {
                RevokedBy::Ttl => ("ttl", None, None),
                RevokedBy::Peer { uid, pid } => ("control", Some(uid), Some(pid)),
            };
            self.events.emit(Event::Revoked(events::RevokedEvent {
                names: newly.clone(),
                by: who,
                uid,
                pid,
                all,
            }));
        }
        newly
    }

    /// The counts a `runs` listing shows, and what is revoked.
    pub fn revoked(&self) -> Vec<String> {
        self.control.revoked()
    }
}

/// A running broker. [`Handle::stop`] ends it; dropping the handle does too.
pub struct Handle {
    runtime: Option<tokio::runtime::Runtime>,
    counters: Arc<Counters>,
    control: Arc<Control>,
    revoker: Revoker,
    state: Arc<proxy::State>,
    conns: proxy::Conns,
    addr: std::net::SocketAddr,
}

impl Handle {
    /// What revokes this broker's secrets.
    pub fn revoker(&self) -> Revoker {
        self.revoker.clone()
    }

    /// Revoke every secret (and close the tunnels) `after` from now: `[broker].ttl`.
    pub fn revoke_after(&self, after: Duration) {
        if let Some(rt) = &self.runtime {
            let r = self.revoker.clone();
            rt.spawn(async move {
                tokio::time::sleep(after).await;
                r.revoke(None, RevokedBy::Ttl);
            });
        }
    }

    /// Enter the broker's runtime (to register an I/O object with it).
    pub fn enter(&self) -> Option<tokio::runtime::EnterGuard<'_>> {
        self.runtime.as_ref().map(|rt| rt.enter())
    }

    /// Fetch every brokered secret again `every` so often: `[broker].refresh`.
    pub fn refresh_every(&self, every: Duration) {
        if let Some(rt) = &self.runtime {
            let st = self.state.clone();
            let names = self.revoker.names.clone();
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    for n in names.iter() {
                        st.refresh(n, "timer").await;
                    }
                }
            });
        }
    }

    /// Run `fut` on the broker's runtime (the control socket's server).
    pub fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if let Some(rt) = &self.runtime {
            rt.spawn(fut);
        }
    }

    /// The counters now (for the control socket's report).
    pub fn counters(&self) -> CountsNow {
        CountsNow(self.counters.clone())
    }

    /// The address the broker listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            requests: get(&self.counters.requests),
            denied: get(&self.counters.denied),
            rate_limited: get(&self.counters.rate_limited),
            tunnels: get(&self.counters.tunnels),
            refreshed: get(&self.counters.refreshed),
            revoked: self.control.revoked(),
        }
    }

    /// Stop serving: close the listener and every connection, and return the final counts.
    /// Every tunnel and intercepted connection still open ends first and emits its event
    /// (bytes so far, duration) before this returns (waiting at most 1 s for them, then at
    /// most 1 s more for the runtime, whose drop of a task still emits a tunnel's event).
    pub fn stop(mut self) -> Counts {
        self.shutdown();
        self.counts()
    }

    fn shutdown(&mut self) {
        if let Some(rt) = self.runtime.take() {
            self.conns.stop();
            self.conns.wait_closed(Duration::from_secs(1));
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Serve the proxy on `listener` until the handle is stopped.
///
/// Runs on its own multi-thread tokio runtime with two workers (named `agentrun-broker`):
/// an intercepted stream is two TLS sessions (child side and upstream side) in two tasks,
/// which can then use both cores, and one busy connection cannot stall the others; the
/// launcher's own thread stays free to supervise the child.
pub fn serve(
    config: Config,
    ca: Arc<Ca>,
    listener: std::net::TcpListener,
    events: impl EventSink,
    control: Arc<Control>,
) -> Result<Handle, Error> {
    install_crypto_provider();
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("agentrun-broker")
        .enable_io()
        .enable_time()
        .build()?;
    let counters = Arc::new(Counters::default());
    let max_connections = config.limits.max_connections;
    let events: Arc<dyn EventSink> = Arc::new(events);
    let revoker = Revoker {
        control: control.clone(),
        events: events.clone(),
        names: Arc::new(config.secrets.iter().map(|s| s.name.clone()).collect()),
    };
    let state = proxy::State::new(config, ca, events, control.clone(), counters.clone())?;
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let conns = proxy::Conns::new(max_connections);
    let state = Arc::new(state);
    runtime.spawn(proxy::accept_loop(listener, state.clone(), conns.clone()));
    Ok(Handle {
        runtime: Some(runtime),
        counters,
        control,
        revoker,
        state,
        conns,
        addr,
    })
}
