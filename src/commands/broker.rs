//! The credential broker in a run (docs/contract.md, "The credential broker"): the profile's
//! broker keys checked into a [`BrokerPlan`]; before the spawn, brokered values swapped for
//! placeholders and the run's CA, trust bundle and proxy variables made ([`Prepared`]); after
//! it, the listener the child's network namespace made is served ([`Serving`]), its events
//! going to the audit log as they come ([`Events`]); at the end, its counts.
//!
//! The child's only network is the broker: a network namespace of its own (loopback only),
//! Landlock allowing one TCP port, the broker's, where a listener made inside that namespace
//! is served by agentrun from outside it.

use super::Fail;
use super::fetch::Got;
use crate::broker::{self, Ca, HeaderTemplate, HostPattern, PathGlob};
use crate::profile::Profile;
use secrecy::SecretString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::profile::broker::{BUNDLE_VARS, PROXY_VARS};
use std::path::Path;

/// How long agentrun waits for the child's namespace to send the listener.
const LISTENER_WAIT: Duration = Duration::from_secs(10);

/// One brokered secret's rules, checked.
struct SecretRules {
    name: String,
    /// The secret's rate, else `[broker].rate`.
    rate: Option<crate::profile::broker::Rate>,
    hosts: Vec<HostPattern>,
    header: Option<HeaderTemplate>,
    parts: broker::Parts,
    methods: Option<Vec<String>>,
    paths: Option<Vec<PathGlob>>,
}

/// The broker's part of a run's plan: checked before anything is fetched.
pub struct BrokerPlan {
    /// The broker's port on the child's own loopback.
    pub port: u16,
    secrets: Vec<SecretRules>,
    allow: Vec<HostPattern>,
    extra_roots: Vec<Vec<u8>>,
    /// A secret or `allow` names a loopback `host:port` (tests): no `NO_PROXY` then, so
    /// those requests go through the broker too.
    loopback_named: bool,
    /// Every brokered secret is revoked this long after the broker starts.
    ttl: Option<Duration>,
    /// Every brokered secret is fetched again this often.
    refresh: Option<Duration>,
    /// Base-URL mode: (the child's variable, its route).
    routes: Vec<(String, broker::Route)>,
    /// The profile's name, for `agentrun runs`.
    profile: String,
}

/// Check the profile's broker keys: host patterns, globs and templates by the broker's own
/// grammar, the keys this build does not serve yet refused, `[broker].ca_cert` read. `None`
/// for a profile without a broker.
pub fn plan(profile: &Profile, unconfined: bool) -> Result<Option<BrokerPlan>, Fail> {
    let Some(section) = &profile.broker else {
        return Ok(None);
    };
    let at =
        |key: &str, msg: String| Fail::setup(format!("{}: {key}: {msg}", profile.path.display()));
    if unconfined {
        return Err(at(
            "[broker]",
            "the broker needs the sandbox (the child's network namespace is its only way out): drop --unconfined".into(),
        ));
    }
    let hosts = |key: &str, list: &[String]| -> Result<Vec<HostPattern>, Fail> {
        list.iter()
            .map(|h| HostPattern::parse(h).map_err(|e| at(key, e.to_string())))
            .collect()
    };
    let allow = hosts("broker.allow", &section.allow)?;
    let mut secrets = Vec::new();
    let mut routes: Vec<(String, broker::Route)> = Vec::new();
    for s in &profile.secrets {
        let Some(b) = &s.broker else { continue };
        let key = |k: &str| format!("secrets.{}.broker.{k}", s.name);
        let secret_hosts = hosts(&key("hosts"), &b.hosts)?;
        if let Some(u) = &b.base_url {
            routes.push((
                u.env.clone(),
                base_route(u, &secret_hosts, profile).map_err(|e| at(&key("base_url"), e))?,
            ));
        }
        secrets.push(SecretRules {
            name: s.name.clone(),
            rate: b.rate.or(section.rate),
            hosts: secret_hosts,
            header: b
                .header
                .as_deref()
                .map(HeaderTemplate::parse)
                .transpose()
                .map_err(|e| at(&key("header"), e.to_string()))?,
            parts: broker::Parts {
                header: b.parts.iter().any(|p| p == "header"),
                path: b.parts.iter().any(|p| p == "path"),
                query: b.parts.iter().any(|p| p == "query"),
                body: b.parts.iter().any(|p| p == "body"),
            },
            methods: b.methods.clone(),
            paths: b
                .paths
                .as_ref()
                .map(|p| {
                    p.iter()
                        .map(|g| PathGlob::parse(g))
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()
                .map_err(|e| at(&key("paths"), e.to_string()))?,
        });
    }
    let extra_roots = match &section.ca_cert {
        None => Vec::new(),
        Some(p) => {
            let pem = std::fs::read(p).map_err(|e| {
                at(
                    "broker.ca_cert",
                    format!(
                        "cannot read {}: {e}; name a PEM file of CA certificates",
                        p.display()
                    ),
                )
            })?;
            broker::ca::parse_pem_certs(&pem).map_err(|e| {
                at(
                    "broker.ca_cert",
                    format!("{}: {e}; name a PEM file of CA certificates", p.display()),
                )
            })?;
            vec![pem]
        }
    };
    // A loopback `allow` entry on a brokered loopback port is the same server under another
    // name: it would be tunnelled unread (docs/threat-model.md, "another name").
    for a in &allow {
        if let Some(h) = secrets
            .iter()
            .flat_map(|s| s.hosts.iter())
            .find(|h| h.is_loopback() && a.is_loopback() && h.port == a.port)
        {
            return Err(at(
                "broker.allow",
                format!(
                    "{a} is the brokered host {h} under another name: responses through it would not be checked for values; remove it from allow"
                ),
            ));
        }
    }
    let loopback_named = allow
        .iter()
        .chain(secrets.iter().flat_map(|s| s.hosts.iter()))
        .any(HostPattern::is_loopback);
    Ok(Some(BrokerPlan {
        // A port in a namespace of the child's own: free whatever the host runs.
        port: 20_000 + rand::random::<u16>() % 40_000,
        secrets,
        allow,
        extra_roots,
        loopback_named,
        ttl: section.ttl,
        refresh: section.refresh,
        routes,
        profile: profile.path.display().to_string(),
    }))
}

/// A secret's `base_url`, checked: an `https://` URL whose host the secret names, without
/// query or userinfo; a variable the child may be given. Its prefix is random per run.
fn base_route(
    u: &crate::profile::broker::BaseUrl,
    hosts: &[HostPattern],
    profile: &Profile,
) -> Result<broker::Route, String> {
    let fix = "write e.g. base_url = { env = \"OPENAI_BASE_URL\", upstream = \"https://api.openai.com/v1\" }";
    let url = url::Url::parse(&u.upstream)
        .map_err(|e| format!("upstream = \"{}\" is not a URL ({e}); {fix}", u.upstream))?;
    let host = url
        .host_str()
        .map(crate::broker::rules::normalize_host)
        .ok_or_else(|| format!("upstream = \"{}\" has no host; {fix}", u.upstream))?;
    let port = url.port_or_known_default().unwrap_or(443);
    if url.scheme() != "https" {
        return Err(format!(
            "upstream = \"{}\": the broker reaches upstreams over https only; {fix}",
            u.upstream
        ));
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(format!(
            "upstream = \"{}\" may have no user, password, query or fragment; {fix}",
            u.upstream
        ));
    }
    if !hosts.iter().any(|h| h.matches(&host, port)) {
        return Err(format!(
            "upstream = \"{}\": {host}:{port} is not one of this secret's hosts, so the value could not go there; add it to hosts",
            u.upstream
        ));
    }
    let env = u.env.as_str();
    let valid = !env.is_empty()
        && !env.starts_with(|c: char| c.is_ascii_digit())
        && env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("env = \"{env}\" is not a variable name; {fix}"));
    }
    if crate::profile::broker::reserved(env)
        || profile.secrets.iter().any(|s| s.name == env)
        || profile.set.contains_key(env)
    {
        return Err(format!(
            "env = \"{env}\" is already set by the broker, a secret or [env] set: name another variable"
        ));
    }
    Ok(broker::Route {
        prefix: format!("/{:016x}", rand::random::<u64>()),
        host,
        port,
        path: url.path().trim_end_matches('/').to_string(),
    })
}

/// A directory of agentrun's own (0700, `mkdtemp`) holding the run's trust bundle, removed
/// when the run ends.
pub struct Bundle {
    dir: PathBuf,
    pub path: PathBuf,
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Ready for the spawn: the placeholders in, the CA made, the variables and the socket the
/// child's namespace sends its listener on.
pub struct Prepared {
    config: broker::Config,
    ca: Arc<Ca>,
    /// Variables that win over the profile's (`None`: removed).
    pub env: Vec<(String, Option<String>)>,
    pub bundle: Bundle,
    /// Our end, and the child's end (handed to the sandbox, closed after the spawn).
    ours: OwnedFd,
    pub theirs: OwnedFd,
    pub names: Vec<String>,
    /// The run's control socket (`agentrun revoke`, `agentrun runs`), bound before the spawn.
    control: ControlSocket,
    rates: Vec<(String, u32, Duration)>,
    ttl: Option<Duration>,
    refresh: Option<Duration>,
    refetch: Refetch,
    profile: String,
}

/// Fetches a brokered secret again from its source, checked as at the start (`pattern`,
/// `min_length`; a live probe is not run again: the upstream itself is the check).
pub struct Refetch {
    profile: crate::profile::Profile,
    ctx: crate::context::Context,
    /// The output redactor: told of a new value before the broker uses it.
    late: Option<&'static crate::launch::redactor::Late>,
    /// The value each name last handed to `late` (a refetch that changed nothing adds none).
    added: std::sync::Mutex<std::collections::HashMap<String, SecretString>>,
}

impl Refetch {
    pub fn new(
        profile: &crate::profile::Profile,
        ctx: &crate::context::Context,
        late: Option<&'static crate::launch::redactor::Late>,
    ) -> Refetch {
        Refetch {
            profile: profile.clone(),
            ctx: ctx.clone(),
            late,
            added: Default::default(),
        }
    }
}

impl broker::Refresher for Refetch {
    fn refetch(&self, name: &str) -> Result<SecretString, String> {
        let spec = self
            .profile
            .secrets
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("{name} is not declared"))?;
        let fetcher = crate::secrets::Fetcher::new(&self.profile, &self.ctx);
        let value = fetcher.refetch(spec).value.map_err(|e| e.to_string())?;
        crate::verify::check_format(&spec.verify, &value)?;
        // As at the start: a value too short to redact is not used (review 11g, G3).
        {
            use secrecy::ExposeSecret;
            if value.expose_secret().len() < crate::redact::MIN_SECRET_LEN {
                return Err(format!(
                    "the new value is shorter than {} characters: it could not be redacted; the old one stays",
                    crate::redact::MIN_SECRET_LEN
                ));
            }
        }
        // Into the output redactor first: the broker swaps the value in only after this
        // returns, so no output can carry it before the redactor knows it.
        if let Some(late) = self.late {
            use secrecy::ExposeSecret;
            let mut added = self.added.lock().unwrap_or_else(|p| p.into_inner());
            let seen = added
                .get(name)
                .is_some_and(|v| v.expose_secret() == value.expose_secret());
            if !seen {
                late.add(name, &value)
                    .map_err(|e| format!("the redactor could not take the new value: {e}"))?;
                added.insert(name.to_string(), value.clone());
            }
        }
        Ok(value)
    }
}

/// The directory of this user's control sockets: `$XDG_RUNTIME_DIR/agentrun`, else
/// `/tmp/agentrun-<uid>`.
pub fn control_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("agentrun"),
        None => PathBuf::from(format!("/tmp/agentrun-{}", nix::unistd::geteuid())),
    }
}

/// `dir`, made 0700 if missing; refused unless it is a real directory of ours that no one
/// else can enter.
pub fn own_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot make {}: {e}", dir.display())),
    }
    let m = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if !m.is_dir() || m.uid() != me {
        return Err(format!(
            "{} is not a directory of uid {me}: remove it, or set XDG_RUNTIME_DIR to a private directory",
            dir.display()
        ));
    }
    if m.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make {} private: {e}", dir.display()))?;
    }
    Ok(())
}

/// A bound control socket; its file is removed when the run ends.
pub struct ControlSocket {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn bind_control() -> Result<ControlSocket, String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = control_dir();
    own_private_dir(&dir)?;
    let path = dir.join(format!("{}.sock", std::process::id()));
    // One left by an earlier process with this pid is stale.
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    let sock = ControlSocket { listener, path };
    std::fs::set_permissions(&sock.path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", sock.path.display()))?;
    sock.listener
        .set_nonblocking(true)
        .map_err(|e| format!("{}: {e}", sock.path.display()))?;
    Ok(sock)
}

/// Swap each brokered value in `got` for its placeholder (the real value goes to the broker
/// only), make the run's CA and trust bundle, and the proxy variables.
pub fn prepare(plan: &BrokerPlan, got: &mut [Got], refetch: Refetch) -> Result<Prepared, Fail> {
    let fail = |what: &str, e: &dyn std::fmt::Display| Fail::setup(format!("broker: {what}: {e}"));
    let mut rng = rand::rng();
    let mut secrets = Vec::new();
    for g in got.iter_mut() {
        let Some(rules) = plan.secrets.iter().find(|r| r.name == g.name) else {
            continue;
        };
        let placeholder = broker::placeholder(&g.value, &mut rng);
        let value = std::mem::replace(&mut g.value, SecretString::from(placeholder.clone()));
        secrets.push(broker::Secret {
            name: g.name.clone(),
            value,
            placeholder,
            hosts: rules.hosts.clone(),
            header: rules.header.clone(),
            parts: rules.parts,
            methods: rules.methods.clone(),
            paths: rules.paths.clone(),
        });
    }
    let names = secrets.iter().map(|s| s.name.clone()).collect();
    broker::install_crypto_provider();
    let ca = Arc::new(Ca::new().map_err(|e| fail("the run's CA", &e))?);
    let dir = nix::unistd::mkdtemp(&std::env::temp_dir().join("agentrun-broker-XXXXXX"))
        .map_err(|e| fail("a directory for the trust bundle", &e))?;
    let path = dir.join("ca-bundle.pem");
    let bundle = Bundle { dir, path };
    broker::write_bundle(&ca, &bundle.path).map_err(|e| fail("the trust bundle", &e))?;
    let (ours, theirs) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| fail("a socket for the listener", &e))?;
    let proxy = format!("http://127.0.0.1:{}", plan.port);
    let mut env: Vec<(String, Option<String>)> = PROXY_VARS
        .iter()
        .map(|v| ((*v).to_owned(), Some(proxy.clone())))
        .collect();
    let no_proxy = (!plan.loopback_named).then(|| "localhost,127.0.0.1,::1".to_owned());
    env.push(("NO_PROXY".into(), no_proxy.clone()));
    env.push(("no_proxy".into(), no_proxy));
    let bundle_path = bundle.path.to_string_lossy().into_owned();
    env.extend(
        BUNDLE_VARS
            .iter()
            .map(|v| ((*v).to_owned(), Some(bundle_path.clone()))),
    );
    env.push(("NODE_USE_ENV_PROXY".into(), Some("1".into())));
    for (var, r) in &plan.routes {
        env.push((var.clone(), Some(format!("{proxy}{}", r.prefix))));
    }
    env.push(("AGENTRUN_BROKER".into(), Some(proxy)));
    let control = bind_control().map_err(|e| {
        Fail::setup(format!(
            "broker: the control socket (for `agentrun revoke`): {e}"
        ))
    })?;
    let rates = plan
        .secrets
        .iter()
        .filter_map(|r| r.rate.map(|rate| (r.name.clone(), rate.count, rate.per)))
        .collect();
    Ok(Prepared {
        config: broker::Config {
            secrets,
            routes: plan.routes.iter().map(|(_, r)| r.clone()).collect(),
            allow: plan.allow.clone(),
            extra_roots: plan.extra_roots.clone(),
            limits: broker::Limits::default(),
        },
        ca,
        env,
        bundle,
        ours,
        theirs,
        names,
        control,
        rates,
        ttl: plan.ttl,
        refresh: plan.refresh,
        refetch,
        profile: plan.profile.clone(),
    })
}

/// Broker events for the audit log: at most this many in a run, of at most
/// [`MAX_EVENT_BYTES`] in all (a child that floods the broker cannot make agentrun's memory
/// or the log grow without bound); the rest are counted.
const MAX_EVENTS: usize = 100_000;
const MAX_EVENT_BYTES: usize = 16 << 20;
/// A child-chosen string of an event (path, host, method) longer than this is cut.
const MAX_FIELD: usize = 512;

/// The broker's events on their way to the audit log: the broker's threads put them here,
/// and [`Events::next_batch`] hands them, in order, to the thread that writes them as they
/// come.
#[derive(Clone, Default)]
pub struct Events(Arc<(std::sync::Mutex<Queue>, std::sync::Condvar)>);

#[derive(Default)]
struct Queue {
    waiting: Vec<broker::Event>,
    /// How many events and bytes were taken in this run (the budget), and left out.
    taken: usize,
    bytes: usize,
    dropped: u64,
    /// The broker has stopped: no more will come.
    closed: bool,
}

/// Cut `s` to [`MAX_FIELD`] bytes (at a character boundary), saying how long it was.
fn clip(s: &mut String) -> usize {
    if s.len() > MAX_FIELD {
        let mut at = MAX_FIELD;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        let len = s.len();
        s.truncate(at);
        s.push_str(&format!("...({len} bytes)"));
    }
    s.len()
}

impl Events {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.0.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The events that came since the last batch, waiting for some when there are none;
    /// `None` once the broker has stopped and every event was handed out.
    pub fn next_batch(&self) -> Option<Vec<broker::Event>> {
        let mut q = self.queue();
        while q.waiting.is_empty() && !q.closed {
            q = self.0.1.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        if q.waiting.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut q.waiting))
    }

    fn close(&self) -> u64 {
        let mut q = self.queue();
        q.closed = true;
        self.0.1.notify_all();
        q.dropped
    }
}

impl broker::EventSink for Events {
    fn emit(&self, mut event: broker::Event) {
        let size = match &mut event {
            broker::Event::Request(r) => {
                clip(&mut r.path) + clip(&mut r.host) + clip(&mut r.method) + 128
            }
            broker::Event::Tunnel(t) => clip(&mut t.host) + 96,
            broker::Event::Denied(d) => {
                clip(&mut d.path) + clip(&mut d.host) + clip(&mut d.method) + 96
            }
            broker::Event::Revoked(r) => r.names.iter().map(String::len).sum::<usize>() + 96,
            broker::Event::Refresh(r) => r.name.len() + r.error.as_mut().map_or(0, clip) + 128,
        };
        let mut q = self.queue();
        if q.closed || q.taken >= MAX_EVENTS || q.bytes + size > MAX_EVENT_BYTES {
            q.dropped += 1;
            return;
        }
        q.taken += 1;
        q.bytes += size;
        q.waiting.push(event);
        self.0.1.notify_one();
    }
}

/// The broker serving a run.
pub struct Serving {
    handle: broker::Handle,
    /// Its events, for the thread that writes them to the audit log.
    pub events: Events,
    _bundle: Bundle,
    _control: ControlSocket,
    pub names: Vec<String>,
}

/// Take the listener the child's namespace sent and serve it.
pub fn serve(p: Prepared) -> Result<Serving, Fail> {
    let Prepared {
        config,
        ca,
        bundle,
        ours,
        theirs,
        names,
        control,
        rates,
        ttl,
        refresh,
        refetch,
        profile,
        ..
    } = p;
    drop(theirs);
    let listener = crate::sys::recv_fd(ours.as_fd(), LISTENER_WAIT).map_err(|e| {
        Fail::setup(format!(
            "broker: the child's network namespace sent no listener: {e}"
        ))
    })?;
    let events = Events::default();
    let handle = broker::serve(
        config,
        ca,
        std::net::TcpListener::from(listener),
        events.clone(),
        Arc::new(
            broker::Control::new()
                .with_limiter(Box::new(broker::Governed::new(&rates)))
                .with_refresher(Arc::new(refetch)),
        ),
    )
    .map_err(|e| Fail::setup(e.to_string()))?;
    if let Some(ttl) = ttl {
        handle.revoke_after(ttl);
    }
    if let Some(every) = refresh {
        handle.refresh_every(every);
    }
    let served = broker::socket::Served {
        revoker: handle.revoker(),
        counts: handle.counters(),
        pid: std::process::id(),
        profile,
    };
    let listener = {
        let _in = handle.enter();
        tokio::net::UnixListener::from_std(
            control
                .listener
                .try_clone()
                .map_err(|e| Fail::setup(format!("broker: the control socket: {e}")))?,
        )
        .map_err(|e| Fail::setup(format!("broker: the control socket: {e}")))?
    };
    handle.spawn(broker::socket::serve(listener, served));
    Ok(Serving {
        handle,
        events,
        _bundle: bundle,
        _control: control,
        names,
    })
}

impl Serving {
    /// Stop serving (requests still in flight are cut off and logged) and remove the trust
    /// bundle; how many events were left out, and the counts. The events' last batch is
    /// then handed out and [`Events::next_batch`] ends.
    pub fn stop(self) -> (u64, broker::Counts) {
        let counts = self.handle.stop();
        let dropped = self.events.close();
        (dropped, counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::EventSink;

    fn denied(path: String) -> broker::Event {
        broker::Event::Denied(broker::events::DeniedEvent {
            host: "evil.example".into(),
            port: 80,
            method: "GET".into(),
            path,
            reason: broker::DenyReason::Host,
        })
    }

    /// A child that floods the broker with huge paths cannot grow the log or agentrun's
    /// memory: fields are cut, and past the budget events are only counted.
    #[test]
    fn events_are_bounded_in_size() {
        let e = Events::default();
        for _ in 0..100_000 {
            e.emit(denied("/".to_string() + &"A".repeat(60_000)));
        }
        let dropped = e.close();
        let kept = e.next_batch().unwrap();
        assert!(e.next_batch().is_none(), "closed and drained");
        let bytes: usize = kept
            .iter()
            .map(|ev| match ev {
                broker::Event::Denied(d) => d.path.len() + d.host.len() + d.method.len() + 96,
                _ => 0,
            })
            .sum();
        assert!(bytes <= MAX_EVENT_BYTES, "{bytes}");
        assert!(
            kept.len() < 100_000 && dropped > 0,
            "{} kept, {dropped} dropped",
            kept.len(),
        );
        match &kept[0] {
            broker::Event::Denied(d) => {
                assert!(d.path.len() < MAX_FIELD + 32 && d.path.ends_with("(60001 bytes)"));
            }
            _ => panic!("kind"),
        }
    }

    /// Events reach the writer as they come, before the broker stops; after it stops, the
    /// writer gets the rest and then its end.
    #[test]
    fn events_are_handed_out_as_they_come() {
        let e = Events::default();
        let w = e.clone();
        let writer = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while let Some(b) = w.next_batch() {
                seen.push(b.len());
            }
            seen
        });
        e.emit(denied("/first".into()));
        let t = std::time::Instant::now();
        while e.queue().waiting.len() == 1 && t.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(e.queue().waiting.is_empty(), "taken while the broker runs");
        e.emit(denied("/second".into()));
        e.close();
        e.emit(denied("/after".into()));
        assert_eq!(writer.join().unwrap().iter().sum::<usize>(), 2);
    }
}
