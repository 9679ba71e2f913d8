//! The credential broker in a run (docs/contract.md, "The credential broker"): the profile's
//! broker keys checked into a [`BrokerPlan`]; before the spawn, brokered values swapped for
//! placeholders and the run's CA, trust bundle and proxy variables made ([`Prepared`]); after
//! it, the listener the child's network namespace made is served ([`Serving`]); at the end,
//! the broker's events and counts go to the audit log.
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

/// The broker's variables in the child's environment that name the trust bundle.
const BUNDLE_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "PIP_CERT",
    "GIT_SSL_CAINFO",
    "NODE_EXTRA_CA_CERTS",
];
const PROXY_VARS: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];
/// How long agentrun waits for the child's namespace to send the listener.
const LISTENER_WAIT: Duration = Duration::from_secs(10);

/// One brokered secret's rules, checked.
struct SecretRules {
    name: String,
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
    let later = |key: &str| {
        at(
            key,
            "is not served by this build yet (rate limits, expiry, refresh, base-URL mode and body substitution come with broker control): remove it".into(),
        )
    };
    if unconfined {
        return Err(at(
            "[broker]",
            "the broker needs the sandbox (the child's network namespace is its only way out): drop --unconfined".into(),
        ));
    }
    if section.rate.is_some() {
        return Err(later("broker.rate"));
    }
    if section.ttl.is_some() {
        return Err(later("broker.ttl"));
    }
    if section.refresh.is_some() {
        return Err(later("broker.refresh"));
    }
    let hosts = |key: &str, list: &[String]| -> Result<Vec<HostPattern>, Fail> {
        list.iter()
            .map(|h| HostPattern::parse(h).map_err(|e| at(key, e.to_string())))
            .collect()
    };
    let allow = hosts("broker.allow", &section.allow)?;
    let mut secrets = Vec::new();
    for s in &profile.secrets {
        let Some(b) = &s.broker else { continue };
        let key = |k: &str| format!("secrets.{}.broker.{k}", s.name);
        if b.rate.is_some() {
            return Err(later(&key("rate")));
        }
        if b.base_url.is_some() {
            return Err(later(&key("base_url")));
        }
        if b.parts.iter().any(|p| p == "body") {
            return Err(later(&key("in")));
        }
        secrets.push(SecretRules {
            name: s.name.clone(),
            hosts: hosts(&key("hosts"), &b.hosts)?,
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
                body: false,
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
    }))
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
}

/// Swap each brokered value in `got` for its placeholder (the real value goes to the broker
/// only), make the run's CA and trust bundle, and the proxy variables.
pub fn prepare(plan: &BrokerPlan, got: &mut [Got]) -> Result<Prepared, Fail> {
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
    env.push(("AGENTRUN_BROKER".into(), Some(proxy)));
    Ok(Prepared {
        config: broker::Config {
            secrets,
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
    })
}

/// Broker events kept for the audit log: at most this many (a child that floods the broker
/// cannot make agentrun's memory grow); the rest are counted.
const MAX_EVENTS: usize = 100_000;

/// The broker's events, kept in order for the audit log at the end of the run.
#[derive(Clone, Default)]
struct Events(Arc<std::sync::Mutex<(Vec<broker::Event>, u64)>>);

impl broker::EventSink for Events {
    fn emit(&self, event: broker::Event) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.0.len() < MAX_EVENTS {
            g.0.push(event);
        } else {
            g.1 += 1;
        }
    }
}

/// The broker serving a run; its events, for the audit log at the end.
pub struct Serving {
    handle: broker::Handle,
    events: Events,
    _bundle: Bundle,
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
        Arc::new(broker::Control::new()),
    )
    .map_err(|e| Fail::setup(e.to_string()))?;
    Ok(Serving {
        handle,
        events,
        _bundle: bundle,
        names,
    })
}

impl Serving {
    /// Stop serving; the events in the order they happened, how many more were left out,
    /// and the counts.
    pub fn stop(self) -> (Vec<broker::Event>, u64, broker::Counts) {
        let counts = self.handle.stop();
        let mut g = self.events.0.lock().unwrap_or_else(|p| p.into_inner());
        let (evs, dropped) = std::mem::take(&mut *g);
        (evs, dropped, counts)
    }
}
