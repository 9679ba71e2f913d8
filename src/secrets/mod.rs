//! Secret sources: fetch the values of the sources a profile declares.
//!
//! One file per backend. Every fetch returns a [`SecretString`]; nothing here formats a value.
//! Remote backends (`vault:`, `aws-sm:` and `aws-ssm:`, `gcp-sm:`, `azure-kv:`) live in
//! `vault.rs`, `aws.rs`, `gcp.rs` and `azure.rs` and are only touched when a profile uses
//! them, so local profiles keep their start-up time. The cloud SDKs are Cargo features
//! (`aws`, `gcp`, `azure`); a build without one reports its sources as not built
//! ([`NotBuilt`]), never skips them.
//!
//! The parsed sources ([`crate::profile::Source`], its kinds and the scheme table) and the
//! backends' tables are plain data in `profile`; this module reads them, and [`Context`].
//! It may not import `verify`, `launch` or the commands (they call it). Dispatch over
//! kinds is by exhaustive `match`: see `docs/adding-a-source.md` to add a backend.

pub mod aws;
pub mod azure;
mod dotenv;
pub mod gcp;
mod local;
mod value;
pub mod vault;

pub use aws::{AwsError, AwsSettings};
pub use azure::{AzureError, AzureSettings};
pub use gcp::{GcpError, GcpSettings};
pub use vault::{VaultError, VaultSettings};

use crate::context::Context;
use crate::profile::{AwsRef, AzureRef, GcpRef, Source, SsmRef, VaultRef};
use crate::profile::{AwsSection, AzureSection, GcpSection, VaultSection};

use crate::profile::{Profile, SCHEMES, SecretSpec, SourceKind, resolve_path};
use secrecy::SecretString;
use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Why a fetch failed. Messages name the source and the fix, never a value.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0} is not set in agentrun's environment: export it, or change the source")]
    EnvMissing(String),
    #[error("{0}: environment variable is not valid UTF-8")]
    EnvNotUtf8(String),
    #[error(
        "{0} holds more than the {limit} KiB a local source may hold: a credential is far smaller; put the credential alone in it", limit = local::MAX_SOURCE_BYTES / 1024
    )]
    EnvTooLarge(String),
    #[error("cannot read {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("{path}: {msg}")]
    Dotenv { path: PathBuf, msg: String },
    #[error("{path} has no key {key}: add `{key}=...` to it, or fix the `#KEY` part of the source")]
    DotenvKeyMissing { path: PathBuf, key: String },
    #[error(
        "$CREDENTIALS_DIRECTORY is not set: run agentrun from a systemd unit with LoadCredential={0}:..., or use another source"
    )]
    NoCredentialsDirectory(String),
    #[error("{0} is not valid UTF-8")]
    NotUtf8(PathBuf),
    #[error(
        "{0} is a symbolic link: agentrun reads a source only from the file itself (a link may have been swapped in to point at another credential); name the real file in the profile"
    )]
    Symlink(PathBuf),
    #[error("{0} is not a regular file: a source is a regular file")]
    NotRegular(PathBuf),
    #[error(
        "{path} belongs to uid {uid}, not to agentrun's user or root: another user could put anything in it; `chown` it to yourself, or read the secret from elsewhere"
    )]
    Owner { path: PathBuf, uid: u32 },
    #[error(
        "{path} is {size} bytes, more than the {} KiB a local source may hold: a credential is far smaller; point the source at the credential alone", local::MAX_SOURCE_BYTES / 1024
    )]
    TooLarge { path: PathBuf, size: u64 },
    #[error(
        "{path} resolves into the credential store {store} through a link: refused; if that store is really the source, name it in the profile"
    )]
    IntoStore { path: PathBuf, store: PathBuf },
    #[error("the value is empty: an empty credential is never valid")]
    Empty,
    #[error("{0}")]
    Vault(#[from] VaultError),
    #[error("{0}")]
    Aws(#[from] AwsError),
    #[error("{0}")]
    Gcp(#[from] GcpError),
    #[error("{0}")]
    Azure(#[from] AzureError),
    #[error("{0}")]
    NotBuilt(#[from] NotBuilt),
    #[error("{0}")]
    Remote(String),
}

/// The outcome of fetching one secret: a value or an error, and how long it took.
///
/// `duration` is the wall time until this secret was available, counted from the start of the
/// fetch (for remote secrets it includes the shared login or AWS configuration loading).
pub struct Fetched {
    pub name: String,
    pub value: Result<SecretString, FetchError>,
    pub duration: Duration,
}

/// Fetch one local secret (env, dotenv, file, systemd). Remote sources are not local.
pub fn fetch_local(source: &Source, ctx: &Context) -> Result<SecretString, FetchError> {
    local::fetch(source, ctx)
}

/// Fetches secrets from every source, remote ones concurrently.
///
/// Nothing remote is touched until a remote source is fetched: no async runtime, no Vault
/// client, no AWS configuration for a profile of local sources. The runtime (current-thread)
/// and the logged-in clients are created on first use and kept for refetches and probes.
/// Values are never cached: every fetch and refetch reads the source again.
pub struct Fetcher<'a> {
    ctx: &'a Context,
    sections: Sections<'a>,
    runtime: OnceCell<Result<tokio::runtime::Runtime, String>>,
    vault: OnceCell<Result<Rc<vault::Vault>, VaultError>>,
    #[cfg(feature = "aws")]
    aws: std::cell::RefCell<BTreeMap<Option<String>, Result<aws::Aws, AwsError>>>,
    #[cfg(feature = "gcp")]
    gcp: OnceCell<Result<Rc<gcp::Gcp>, GcpError>>,
    #[cfg(feature = "azure")]
    azure: OnceCell<Result<Rc<azure::Azure>, AzureError>>,
}

/// The remote backends' tables a [`Fetcher`] reads (`[vault]`, `[aws]`, `[gcp]`, `[azure]`).
#[derive(Clone, Copy, Default)]
pub struct Sections<'a> {
    pub vault: Option<&'a VaultSection>,
    pub aws: Option<&'a AwsSection>,
    pub gcp: Option<&'a GcpSection>,
    pub azure: Option<&'a AzureSection>,
}

impl<'a> Sections<'a> {
    pub fn of(profile: &'a Profile) -> Self {
        Sections {
            vault: profile.vault.as_ref(),
            aws: profile.aws.as_ref(),
            gcp: profile.gcp.as_ref(),
            azure: profile.azure.as_ref(),
        }
    }
}

impl<'a> Fetcher<'a> {
    pub fn new(profile: &'a Profile, ctx: &'a Context) -> Self {
        Self::with_sections(Sections::of(profile), ctx)
    }

    /// For callers without a [`Profile`] (tests, tools): the backends' tables.
    pub fn with_sections(sections: Sections<'a>, ctx: &'a Context) -> Self {
        Fetcher {
            ctx,
            sections,
            runtime: OnceCell::new(),
            vault: OnceCell::new(),
            #[cfg(feature = "aws")]
            aws: std::cell::RefCell::new(BTreeMap::new()),
            #[cfg(feature = "gcp")]
            gcp: OnceCell::new(),
            #[cfg(feature = "azure")]
            azure: OnceCell::new(),
        }
    }

    pub fn context(&self) -> &Context {
        self.ctx
    }

    /// Fetch all `specs` at once; the result is in the same order.
    pub fn fetch_all(&self, specs: &[SecretSpec]) -> Vec<Fetched> {
        let refs: Vec<&SecretSpec> = specs.iter().collect();
        self.fetch_many(&refs)
    }

    /// Fetch one secret again from its source (after a failed verification: it may have been
    /// rotated). Reuses the Vault login and AWS configuration, never a value.
    pub fn refetch(&self, spec: &SecretSpec) -> Fetched {
        self.fetch_many(&[spec]).pop().unwrap_or_else(|| Fetched {
            name: spec.name.clone(),
            value: Err(FetchError::Remote("internal: no fetch result".into())),
            duration: Duration::ZERO,
        })
    }

    /// Fetch several secrets; local ones in turn (they take microseconds), remote ones
    /// concurrently on the runtime. The result is in the order of `specs`.
    pub fn fetch_many(&self, specs: &[&SecretSpec]) -> Vec<Fetched> {
        let start = Instant::now();
        let mut out: Vec<(usize, Fetched)> = Vec::with_capacity(specs.len());
        let mut remote = RemoteReads::default();
        for (i, &spec) in specs.iter().enumerate() {
            match &spec.source {
                Source::Env { .. }
                | Source::Dotenv { .. }
                | Source::File { .. }
                | Source::Systemd { .. } => {
                    let value = fetch_local(&spec.source, self.ctx);
                    out.push((i, fetched(spec, value, start)));
                }
                Source::Vault(r) => remote.vault.push((i, spec, r)),
                Source::AwsSm(r) => remote
                    .aws
                    .entry(r.region.clone())
                    .or_default()
                    .push((i, spec, r)),
                Source::AwsSsm(r) => remote
                    .ssm
                    .entry(r.region.clone())
                    .or_default()
                    .push((i, spec, r)),
                Source::GcpSm(r) => remote.gcp.push((i, spec, r)),
                Source::AzureKv(r) => remote.azure.push((i, spec, r)),
            }
        }
        if !remote.is_empty() {
            match self.runtime() {
                Ok(rt) => out.extend(rt.block_on(self.fetch_remote(remote, start))),
                Err(msg) => out.extend(remote.specs().into_iter().map(|(i, spec)| {
                    (
                        i,
                        fetched(spec, Err(FetchError::Remote(msg.clone())), start),
                    )
                })),
            }
        }
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, f)| f).collect()
    }

    /// The current-thread runtime, created on first use (remote sources and live probes).
    pub fn runtime(&self) -> Result<&tokio::runtime::Runtime, String> {
        self.runtime
            .get_or_init(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the async runtime for remote secrets: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Each backend's set-up (one Vault login, one AWS configuration per region, one Google
    /// and one Azure credential), all at once, then every read at once. Each read gets the
    /// client of its group: there is no read without one. Ten secrets over four backends
    /// take about as long as the slowest backend's set-up and read.
    async fn fetch_remote(&self, reads: RemoteReads<'_>, start: Instant) -> Vec<(usize, Fetched)> {
        use futures_util::future::{join, join_all, join4};
        let RemoteReads {
            vault,
            aws,
            ssm,
            gcp,
            azure,
        } = reads;
        let vault_setup = async {
            match vault.is_empty() {
                true => Vec::new(),
                false => vec![(self.vault_client().await, vault)],
            }
        };
        let aws_setup = join_all(
            aws.into_iter()
                .map(|(region, reads)| async { (self.aws_client(region).await, reads) }),
        );
        let ssm_setup = join_all(
            ssm.into_iter()
                .map(|(region, reads)| async { (self.ssm_client(region).await, reads) }),
        );
        let gcp_setup = async {
            match gcp.is_empty() {
                true => Vec::new(),
                false => vec![(self.gcp_client().await, gcp)],
            }
        };
        let azure_setup = async {
            match azure.is_empty() {
                true => Vec::new(),
                false => vec![(self.azure_client().await, azure)],
            }
        };
        let ((vault_groups, aws_groups, ssm_groups, gcp_groups), azure_groups) = join(
            join4(vault_setup, aws_setup, ssm_setup, gcp_setup),
            azure_setup,
        )
        .await;
        let ((mut out, aws_out, ssm_out, gcp_out), azure_out) = join(
            join4(
                join_all(group_reads(&vault_groups, start)),
                join_all(group_reads(&aws_groups, start)),
                join_all(group_reads(&ssm_groups, start)),
                join_all(group_reads(&gcp_groups, start)),
            ),
            join_all(group_reads(&azure_groups, start)),
        )
        .await;
        out.extend(aws_out);
        out.extend(ssm_out);
        out.extend(gcp_out);
        out.extend(azure_out);
        if out.iter().all(|(_, f)| f.value.is_ok()) {
            return out;
        }
        let held = self.held_logins();
        for (_, f) in &mut out {
            if let Err(e) = &f.value {
                let msg = e.to_string();
                // A server's text (or a profile string quoted in the message) reaches stderr,
                // `check` and the audit log: no held credential and no control or format
                // character in it (review 15 F3 and F7, 15b).
                let scrubbed = scrub_held(&msg, &held).unwrap_or_else(|| msg.clone());
                let shown = crate::scrub::controls_escaped(&scrubbed);
                if shown != msg {
                    f.value = Err(FetchError::Remote(shown));
                }
            }
        }
        out
    }

    /// The values agentrun holds for its own logins: its credential variables, the `[vault]`
    /// and `[azure]` login sources' variables and files, and the strings of
    /// `[gcp].credentials`. A server's error text that quotes one (a hostile endpoint can
    /// echo what it was sent) loses it before any message carries it (review 15, F3). Read
    /// only after a remote fetch that failed: a few variables and small files at most.
    fn held_logins(&self) -> Vec<SecretString> {
        let mut names: Vec<String> = HELD_CREDENTIAL_VARS.iter().map(|n| n.to_string()).collect();
        let mut files = Vec::new();
        if let Some(v) = self.sections.vault {
            let (n, f) = vault_inputs(v, self.ctx);
            names.extend(n);
            files.extend(f);
        }
        let (n, f) = azure::login_inputs(self.sections.azure, self.ctx);
        names.extend(n);
        files.extend(f);
        let json = gcp::credentials_file(self.sections.gcp, self.ctx);
        let mut held: Vec<String> = names
            .iter()
            .filter_map(|n| self.ctx.var_str(n))
            .map(str::to_string)
            .collect();
        for path in files.iter().chain(&json) {
            let Ok(bytes) = local::read_source(path, self.ctx) else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes).into_owned();
            match serde_json::from_str::<serde_json::Value>(&text) {
                // A credentials JSON: its secrets, not its URIs, ids and type (review 15b).
                Ok(serde_json::Value::Object(m)) => held.extend(
                    [
                        "private_key",
                        "private_key_id",
                        "client_secret",
                        "refresh_token",
                        "access_token",
                    ]
                    .iter()
                    .filter_map(|k| m.get(*k).and_then(|v| v.as_str()))
                    .map(str::to_string),
                ),
                _ => held.push(text.trim().to_string()),
            }
        }
        held.into_iter()
            .filter(|v| v.len() >= 8)
            .map(SecretString::from)
            .collect()
    }

    async fn vault_client(&self) -> Result<Rc<vault::Vault>, VaultError> {
        if let Some(v) = self.vault.get() {
            return v.clone();
        }
        let result = match VaultSettings::from_section(self.sections.vault, self.ctx) {
            Ok(settings) => vault::Vault::connect(&settings, self.ctx)
                .await
                .map(Rc::new),
            Err(e) => Err(e),
        };
        let _ = self.vault.set(result.clone());
        result
    }

    #[cfg(feature = "aws")]
    async fn aws_client(&self, region: Option<String>) -> Result<aws::Aws, AwsError> {
        if let Some(c) = self.aws.borrow().get(&region) {
            return c.clone();
        }
        let result = match AwsSettings::from_section(self.sections.aws) {
            Ok(settings) => Ok(aws::connect(&settings, region.as_deref(), self.ctx).await),
            Err(e) => Err(e),
        };
        self.aws.borrow_mut().insert(region, result.clone());
        result
    }

    /// Parameter Store reads use their region's AWS configuration (one per region for both
    /// `aws-sm:` and `aws-ssm:`).
    #[cfg(feature = "aws")]
    async fn ssm_client(&self, region: Option<String>) -> Result<aws::Ssm, AwsError> {
        self.aws_client(region).await.map(aws::Ssm)
    }

    #[cfg(feature = "gcp")]
    async fn gcp_client(&self) -> Result<Rc<gcp::Gcp>, GcpError> {
        if let Some(c) = self.gcp.get() {
            return c.clone();
        }
        let result = match GcpSettings::from_section(self.sections.gcp, self.ctx) {
            Ok(settings) => gcp::Gcp::connect(&settings, self.ctx).await.map(Rc::new),
            Err(e) => Err(e),
        };
        let _ = self.gcp.set(result.clone());
        result
    }

    #[cfg(feature = "azure")]
    async fn azure_client(&self) -> Result<Rc<azure::Azure>, AzureError> {
        if let Some(c) = self.azure.get() {
            return c.clone();
        }
        let result = match AzureSettings::from_section(self.sections.azure, self.ctx) {
            Ok(settings) => azure::Azure::connect(&settings, self.ctx)
                .await
                .map(Rc::new),
            Err(e) => Err(e),
        };
        let _ = self.azure.set(result.clone());
        result
    }

    #[cfg(not(feature = "aws"))]
    async fn aws_client(&self, _: Option<String>) -> Result<Absent<AwsRef>, NotBuilt> {
        Err(NotBuilt(SourceKind::AwsSm))
    }

    #[cfg(not(feature = "aws"))]
    async fn ssm_client(&self, _: Option<String>) -> Result<Absent<SsmRef>, NotBuilt> {
        Err(NotBuilt(SourceKind::AwsSsm))
    }

    #[cfg(not(feature = "gcp"))]
    async fn gcp_client(&self) -> Result<Absent<GcpRef>, NotBuilt> {
        Err(NotBuilt(SourceKind::GcpSm))
    }

    #[cfg(not(feature = "azure"))]
    async fn azure_client(&self) -> Result<Absent<AzureRef>, NotBuilt> {
        Err(NotBuilt(SourceKind::AzureKv))
    }
}

/// agentrun's own credential variables whose values a backend's error text must not carry.
const HELD_CREDENTIAL_VARS: [&str; 6] = [
    "VAULT_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_CLIENT_SECRET",
    "IDENTITY_HEADER",
    "MSI_SECRET",
];

/// `msg` with every held value replaced, or `None` when it holds none.
fn scrub_held(msg: &str, held: &[SecretString]) -> Option<String> {
    use secrecy::ExposeSecret;
    let hit = held.iter().any(|h| msg.contains(h.expose_secret()));
    hit.then(|| {
        held.iter().fold(msg.to_string(), |m, h| {
            m.replace(h.expose_secret(), "[REDACTED: a credential agentrun holds]")
        })
    })
}

/// The Cargo feature a kind's client is built with (`None`: always built).
pub fn feature_of(kind: SourceKind) -> Option<&'static str> {
    match kind {
        SourceKind::Env
        | SourceKind::Dotenv
        | SourceKind::File
        | SourceKind::Systemd
        | SourceKind::Vault => None,
        SourceKind::AwsSm | SourceKind::AwsSsm => Some("aws"),
        SourceKind::GcpSm => Some("gcp"),
        SourceKind::AzureKv => Some("azure"),
    }
}

/// Whether this build can fetch a kind (its feature, if any, was on).
pub fn is_built(kind: SourceKind) -> bool {
    match feature_of(kind) {
        None => true,
        Some("aws") => cfg!(feature = "aws"),
        Some("gcp") => cfg!(feature = "gcp"),
        Some("azure") => cfg!(feature = "azure"),
        Some(_) => false,
    }
}

/// A source whose backend this agentrun was built without: reported for every secret of
/// that kind, before anything starts (fail closed).
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "`{scheme}:` sources need agentrun's `{feature}` feature, which this build was made without: \
     rebuild with the default features (or `--features {feature}`), or use another source",
    scheme = .0.scheme(),
    feature = feature_of(*.0).unwrap_or("default")
)]
pub struct NotBuilt(pub SourceKind);

/// The client of a backend this build lacks: its set-up fails with [`NotBuilt`], and it
/// cannot be made (the `Infallible`), so no read ever reaches it.
#[cfg(not(all(feature = "aws", feature = "gcp", feature = "azure")))]
struct Absent<R>(std::convert::Infallible, std::marker::PhantomData<R>);

#[cfg(not(all(feature = "aws", feature = "gcp", feature = "azure")))]
impl<R> Client for Absent<R> {
    type Ref = R;
    type Error = NotBuilt;
    async fn read(&self, _: &R) -> Result<SecretString, NotBuilt> {
        match self.0 {}
    }
}

/// The backends' tables (`[vault]`, `[aws]`) validated against agentrun's environment
/// before anything is fetched, for each backend the profile has a table or a source of, so
/// that a bad table is one clear error (naming no file: the caller adds the profile's), not
/// one per secret. One arm per kind: a new backend says here what it checks.
pub fn check_backends(profile: &Profile, ctx: &Context) -> Result<(), String> {
    let uses = |kind: SourceKind| profile.secrets.iter().any(|s| s.source.kind() == kind);
    for row in &SCHEMES {
        match row.kind {
            SourceKind::Env | SourceKind::Dotenv | SourceKind::File | SourceKind::Systemd => {}
            SourceKind::Vault => {
                if profile.vault.is_some() || uses(row.kind) {
                    VaultSettings::from_section(profile.vault.as_ref(), ctx)
                        .map_err(|e| e.to_string())?;
                }
            }
            SourceKind::AwsSm | SourceKind::AwsSsm => {
                if profile.aws.is_some() || uses(row.kind) {
                    AwsSettings::from_section(profile.aws.as_ref()).map_err(|e| e.to_string())?;
                }
            }
            SourceKind::GcpSm => {
                if profile.gcp.is_some() || uses(row.kind) {
                    let settings = GcpSettings::from_section(profile.gcp.as_ref(), ctx)
                        .map_err(|e| e.to_string())?;
                    settings
                        .check_refs(profile.secrets.iter().filter_map(|s| match &s.source {
                            Source::GcpSm(r) => Some(r),
                            _ => None,
                        }))
                        .map_err(|e| e.to_string())?;
                }
            }
            SourceKind::AzureKv => {
                if profile.azure.is_some() || uses(row.kind) {
                    AzureSettings::from_section(profile.azure.as_ref(), ctx)
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        if uses(row.kind) && !is_built(row.kind) {
            return Err(NotBuilt(row.kind).to_string());
        }
    }
    Ok(())
}

/// One fetch's remote reads (index in the request, spec, reference), grouped by the client
/// each needs. A backend is a field: `fetch_remote` and `specs` take the struct apart
/// whole, so a new one cannot be collected and then left unread.
#[derive(Default)]
struct RemoteReads<'s> {
    vault: Vec<Read<'s, VaultRef>>,
    /// By `?region=` (`None`: `[aws].region` or the chain's).
    aws: BTreeMap<Option<String>, Vec<Read<'s, AwsRef>>>,
    /// By `?region=`, as `aws`.
    ssm: BTreeMap<Option<String>, Vec<Read<'s, SsmRef>>>,
    gcp: Vec<Read<'s, GcpRef>>,
    azure: Vec<Read<'s, AzureRef>>,
}

impl<'s> RemoteReads<'s> {
    fn specs(self) -> Vec<(usize, &'s SecretSpec)> {
        let RemoteReads {
            vault,
            aws,
            ssm,
            gcp,
            azure,
        } = self;
        let mut out: Vec<(usize, &'s SecretSpec)> =
            vault.into_iter().map(|(i, spec, _)| (i, spec)).collect();
        out.extend(aws.into_values().flatten().map(|(i, spec, _)| (i, spec)));
        out.extend(ssm.into_values().flatten().map(|(i, spec, _)| (i, spec)));
        out.extend(gcp.into_iter().map(|(i, spec, _)| (i, spec)));
        out.extend(azure.into_iter().map(|(i, spec, _)| (i, spec)));
        out
    }

    fn is_empty(&self) -> bool {
        let RemoteReads {
            vault,
            aws,
            ssm,
            gcp,
            azure,
        } = self;
        vault.is_empty() && aws.is_empty() && ssm.is_empty() && gcp.is_empty() && azure.is_empty()
    }
}

/// One remote read: its index in the request, its spec, and its parsed reference.
type Read<'s, R> = (usize, &'s SecretSpec, &'s R);

/// Reads that share a client, with that client (or the error its set-up gave).
type Group<'s, C> = (
    Result<C, <C as Client>::Error>,
    Vec<Read<'s, <C as Client>::Ref>>,
);

/// A remote backend's client, as built once per run for a group of reads.
trait Client {
    /// The parsed reference a read takes (`VaultRef`, `AwsRef`).
    type Ref;
    /// A failed read, or a failed set-up reported for every read of the group.
    type Error: Clone + Into<FetchError>;
    async fn read(&self, r: &Self::Ref) -> Result<SecretString, Self::Error>;
}

impl Client for Rc<vault::Vault> {
    type Ref = VaultRef;
    type Error = VaultError;
    async fn read(&self, r: &VaultRef) -> Result<SecretString, VaultError> {
        vault::Vault::read(self, r).await
    }
}

#[cfg(feature = "aws")]
impl Client for aws::Aws {
    type Ref = AwsRef;
    type Error = AwsError;
    async fn read(&self, r: &AwsRef) -> Result<SecretString, AwsError> {
        aws::Aws::read(self, r).await
    }
}

#[cfg(feature = "aws")]
impl Client for aws::Ssm {
    type Ref = SsmRef;
    type Error = AwsError;
    async fn read(&self, r: &SsmRef) -> Result<SecretString, AwsError> {
        aws::Ssm::read(self, r).await
    }
}

#[cfg(feature = "gcp")]
impl Client for Rc<gcp::Gcp> {
    type Ref = GcpRef;
    type Error = GcpError;
    async fn read(&self, r: &GcpRef) -> Result<SecretString, GcpError> {
        gcp::Gcp::read(self, r).await
    }
}

#[cfg(feature = "azure")]
impl Client for Rc<azure::Azure> {
    type Ref = AzureRef;
    type Error = AzureError;
    async fn read(&self, r: &AzureRef) -> Result<SecretString, AzureError> {
        azure::Azure::read(self, r).await
    }
}

/// One backend's groups of reads, each read with its group's client (or the error that
/// client's set-up gave), ready to be joined.
fn group_reads<'a, C: Client>(
    groups: &'a [Group<'a, C>],
    start: Instant,
) -> impl Iterator<Item = impl std::future::Future<Output = (usize, Fetched)> + 'a> {
    groups.iter().flat_map(move |(client, reads)| {
        reads.iter().map(move |&(i, spec, r)| async move {
            let value = match client {
                Ok(c) => c.read(r).await.map_err(Into::into),
                Err(e) => Err(e.clone().into()),
            };
            (i, fetched(spec, value, start))
        })
    })
}

fn fetched(spec: &SecretSpec, value: Result<SecretString, FetchError>, start: Instant) -> Fetched {
    Fetched {
        name: spec.name.clone(),
        value,
        duration: start.elapsed(),
    }
}

/// Where agentrun's credentials come from, besides the values it hands over: the child
/// must not read these files or inherit these variables, or it would get more than the
/// profile declares (the rest of a `.env`, the Vault login, agentrun's own AWS keys).
#[derive(Debug, Default)]
pub struct CredentialInputs {
    /// Variables read by `env:` sources of `[vault]` (the `[secrets]` ones are declared).
    pub env_names: Vec<String>,
    /// Files of this profile's sources holding more than the child gets: a dotenv file with
    /// anything but the declared assignments, the source of an optional secret (it may be
    /// left out), the `[vault]` login files, `$CREDENTIALS_DIRECTORY`.
    pub paths: Vec<PathBuf>,
    /// Credential stores kept from the child whatever the profile uses: the stores under
    /// every home ([`Context::homes`]) and the files a secret backend would read
    /// ([`backend_files`]), when they exist.
    pub stores: Vec<PathBuf>,
}

/// The variables naming a file or directory an AWS, Google or Azure credential chain (or its
/// CLI) reads: the moved `~/.azure` and `~/.config/gcloud` included (review 15, F2).
pub const BACKEND_FILE_VARS: [&str; 10] = [
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_GHA_CREDS_PATH",
    "CLOUDSDK_CONFIG",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CONFIG_DIR",
];

/// The files agentrun's backends (and the SDKs under them) read credentials from, named by
/// agentrun's environment or at their fixed places, whether or not the profile uses that
/// backend: AWS shared files and web-identity token, Google's service-account key, Azure's
/// federated token, the Kubernetes, EKS and AKS workload-identity service-account tokens
/// (Vault Kubernetes auth reads the first).
/// Only those that exist.
pub fn backend_files(ctx: &Context) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for name in BACKEND_FILE_VARS {
        if let Some(v) = ctx.var_str(name).filter(|v| !v.is_empty()) {
            out.push(resolve_path(v, &ctx.cwd, ctx.home.as_deref()));
        }
    }
    for dir in [
        "/var/run/secrets/kubernetes.io/serviceaccount",
        "/run/secrets/kubernetes.io/serviceaccount",
        "/var/run/secrets/eks.amazonaws.com/serviceaccount",
        "/run/secrets/eks.amazonaws.com/serviceaccount",
        "/var/run/secrets/azure/tokens",
        "/run/secrets/azure/tokens",
    ] {
        out.push(PathBuf::from(dir));
    }
    out.retain(|p| p.exists());
    out
}

/// Every credential store a source must not reach through a link: the stores under every
/// home, the backends' files and `$CREDENTIALS_DIRECTORY`.
pub fn protected_stores(ctx: &Context) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = ctx
        .homes()
        .iter()
        .flat_map(|h| crate::sandbox::credential_stores(h))
        .collect();
    out.extend(backend_files(ctx));
    if let Some(dir) = ctx.var("CREDENTIALS_DIRECTORY") {
        out.push(PathBuf::from(dir));
    }
    out
}

/// What the `[vault]` login sources (`token`, `role_id`, `secret_id`, `jwt`) read: the
/// variables of `env:` ones and the files of the others.
fn vault_inputs(v: &VaultSection, ctx: &Context) -> (Vec<String>, Vec<PathBuf>) {
    let (mut names, mut paths) = (Vec::new(), Vec::new());
    for (key, text) in [
        ("token", &v.token),
        ("role_id", &v.role_id),
        ("secret_id", &v.secret_id),
        ("jwt", &v.jwt),
    ] {
        let Some(text) = text else { continue };
        match Source::parse(text, &ctx.cwd, ctx.home.as_deref()) {
            Ok(Source::Env { name }) => names.push(name),
            Ok(Source::Dotenv { path, .. } | Source::File { path }) => paths.push(path),
            // Under `$CREDENTIALS_DIRECTORY`, which the callers name whole.
            Ok(Source::Systemd { .. }) => {}
            // A login is never remote (`VaultSettings` refuses it): nothing local to name.
            Ok(
                Source::Vault(_)
                | Source::AwsSm(_)
                | Source::AwsSsm(_)
                | Source::GcpSm(_)
                | Source::AzureKv(_),
            ) => {}
            // `jwt` may be a bare path; anything else that does not parse is an error
            // the fetch reports (without echoing it).
            Err(_) if key == "jwt" => paths.push(resolve_path(text, &ctx.cwd, ctx.home.as_deref())),
            Err(_) => {}
        }
    }
    (names, paths)
}

pub fn credential_inputs(profile: &crate::profile::Profile, ctx: &Context) -> CredentialInputs {
    let mut out = CredentialInputs::default();
    // A dotenv file is kept from the child unless it holds exactly the declared assignments
    // of required secrets (then reading it gives nothing new); a `file:` source of a required
    // secret holds exactly the value the child gets anyway. An optional secret may be left
    // out (missing, or failing its check), so its source is kept from the child either way.
    let mut dotenv_keys: BTreeMap<&std::path::Path, (Vec<&str>, bool)> = BTreeMap::new();
    for s in &profile.secrets {
        match &s.source {
            Source::Env { name } => out.env_names.push(name.clone()),
            Source::Dotenv { path, key } => {
                let e = dotenv_keys.entry(path).or_insert((Vec::new(), true));
                e.0.push(key);
                e.1 &= s.required;
            }
            Source::File { path } => {
                if !s.required {
                    out.paths.push(path.clone())
                }
            }
            // `$CREDENTIALS_DIRECTORY` is kept whole, below.
            Source::Systemd { .. } => {}
            // Nothing local: the backends' own files are among the stores, below.
            Source::Vault(_)
            | Source::AwsSm(_)
            | Source::AwsSsm(_)
            | Source::GcpSm(_)
            | Source::AzureKv(_) => {}
        }
    }
    for (path, (declared, all_required)) in dotenv_keys {
        let exact = all_required
            && local::read_source(path, ctx)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|t| dotenv::parse(&t).ok())
                .is_some_and(|p| p.holds_exactly(&declared));
        if !exact {
            out.paths.push(path.to_path_buf());
        }
    }
    if let Some(v) = &profile.vault {
        let (names, paths) = vault_inputs(v, ctx);
        out.env_names.extend(names);
        out.paths.extend(paths);
    }
    let (names, paths) = azure::login_inputs(profile.azure.as_ref(), ctx);
    out.env_names.extend(names);
    out.paths.extend(paths);
    // `[gcp].credentials`: a service-account key or a refresh token (review 15, F1).
    out.paths
        .extend(gcp::credentials_file(profile.gcp.as_ref(), ctx));
    if let Some(dir) = ctx.var("CREDENTIALS_DIRECTORY") {
        out.paths.push(PathBuf::from(dir));
    }
    // Only files that exist can be kept from the child (and a bare `jwt` that is really a
    // pasted token is then never named in a message).
    out.paths.retain(|p| p.exists());
    out.paths.sort();
    out.paths.dedup();
    for home in ctx.homes() {
        for store in crate::sandbox::credential_stores(&home) {
            if !out.stores.contains(&store) {
                out.stores.push(store);
            }
        }
    }
    for f in backend_files(ctx) {
        if !out.stores.contains(&f) {
            out.stores.push(f);
        }
    }
    out
}

/// Every path a later run reads as configuration or secret input, for the profile at hand:
/// the profile file, the profile search directories that exist, the files of its local
/// sources (`dotenv:`, `file:`, `systemd:` and `$CREDENTIALS_DIRECTORY`), the `[vault]` login
/// files (`token`, `role_id`, `secret_id`, `jwt`, and `~/.vault-token`), the Vault CA bundle
/// (`[vault].ca_cert` or `$VAULT_CACERT`: a swapped CA would let a server in the middle take
/// the login) and the backends' files ([`backend_files`]). Only those that exist; sorted.
///
/// A child must not be able to create, change, rename or delete any of them: what it wrote
/// would be read by the next run outside the sandbox.
pub fn startup_inputs(
    profile: &crate::profile::Profile,
    ctx: &Context,
    search_dirs: &[PathBuf],
) -> Vec<PathBuf> {
    let mut out = vec![profile.path.clone()];
    out.extend(search_dirs.iter().cloned());
    for s in &profile.secrets {
        match &s.source {
            Source::Dotenv { path, .. } | Source::File { path } => out.push(path.clone()),
            Source::Systemd { name } => {
                if let Some(dir) = ctx.var("CREDENTIALS_DIRECTORY") {
                    out.push(PathBuf::from(dir).join(name));
                }
            }
            // A variable, not a file.
            Source::Env { .. } => {}
            // Nothing local: the `[vault]` logins and the backends' files follow.
            Source::Vault(_)
            | Source::AwsSm(_)
            | Source::AwsSsm(_)
            | Source::GcpSm(_)
            | Source::AzureKv(_) => {}
        }
    }
    if let Some(v) = &profile.vault {
        out.extend(vault_inputs(v, ctx).1);
        if let Some(ca) = v.ca_cert.as_deref().filter(|c| !c.is_empty()) {
            out.push(resolve_path(ca, &ctx.cwd, ctx.home.as_deref()));
        }
    }
    // The broker's extra upstream roots: a swapped CA would let a server in the middle take
    // every brokered value of a later run.
    if let Some(ca) = profile.broker.as_ref().and_then(|b| b.ca_cert.clone()) {
        out.push(ca);
    }
    let uses_vault = profile.vault.is_some()
        || profile
            .secrets
            .iter()
            .any(|s| matches!(s.source, Source::Vault(_)));
    if uses_vault {
        for home in ctx.homes() {
            out.push(home.join(".vault-token"));
        }
        if let Some(ca) = ctx.var_str("VAULT_CACERT").filter(|c| !c.is_empty()) {
            out.push(resolve_path(ca, &ctx.cwd, ctx.home.as_deref()));
        }
    }
    out.extend(azure::startup_files(profile.azure.as_ref(), ctx));
    // A rewritten `token_uri` would send the next run's refresh token elsewhere.
    out.extend(gcp::credentials_file(profile.gcp.as_ref(), ctx));
    out.extend(backend_files(ctx));
    out.retain(|p| p.exists());
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::profile::{Profile, Resolve};
    use std::ffi::OsString;

    fn setup() -> (tempfile::TempDir, Context, Profile) {
        let t = tempfile::tempdir().unwrap();
        let w = t.path();
        for f in [
            ".env",
            "tok",
            "opt",
            "vault-token",
            "ca.pem",
            "creds/sd",
            "aws",
        ] {
            let p = w.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "K=v\n").unwrap();
        }
        std::fs::create_dir_all(w.join("profiles")).unwrap();
        let env: BTreeMap<OsString, OsString> = [
            ("CREDENTIALS_DIRECTORY", w.join("creds")),
            ("AWS_SHARED_CREDENTIALS_FILE", w.join("aws")),
        ]
        .into_iter()
        .map(|(k, v)| (OsString::from(k), v.into_os_string()))
        .collect();
        let ctx = Context {
            env,
            cwd: w.to_path_buf(),
            home: Some(w.join("home")),
        };
        let text = "version = 1\n[vault]\naddress = \"http://127.0.0.1:1\"\ntoken = \"file:vault-token\"\nca_cert = \"ca.pem\"\n\
                    [secrets]\nK = \"dotenv:.env#K\"\nT = \"file:tok\"\nO = { from = \"file:opt\", required = false }\nS = \"systemd:sd\"\n";
        let profile = Profile::parse(
            &w.join("profiles/p.toml"),
            text,
            &Resolve {
                cwd: w,
                home: Some(&w.join("home")),
                xdg_state_home: None,
            },
        )
        .unwrap();
        (t, ctx, profile)
    }

    /// Review 15, F1 and F2: `[gcp].credentials` and the moved gcloud and Azure CLI stores
    /// (`CLOUDSDK_CONFIG`, `AZURE_CONFIG_DIR`) are kept from the child and read-only for it.
    #[test]
    fn gcp_credentials_and_moved_cli_stores_are_kept_from_the_child() {
        let (t, mut ctx, _) = setup();
        let w = t.path();
        for f in ["gcreds.json", "gcfg/x", "azcfg/msal_token_cache.json"] {
            std::fs::create_dir_all(w.join(f).parent().unwrap()).unwrap();
            std::fs::write(w.join(f), "{}").unwrap();
        }
        ctx.env
            .insert("CLOUDSDK_CONFIG".into(), w.join("gcfg").into());
        ctx.env
            .insert("AZURE_CONFIG_DIR".into(), w.join("azcfg").into());
        let profile = Profile::parse(
            &w.join("profiles/p.toml"),
            "version = 1\n[gcp]\ncredentials = \"gcreds.json\"\n[secrets]\nG = \"gcp-sm:projects/p/secrets/s\"\n",
            &Resolve {
                cwd: w,
                home: Some(&w.join("home")),
                xdg_state_home: None,
            },
        )
        .unwrap();
        let inputs = credential_inputs(&profile, &ctx);
        assert!(inputs.paths.contains(&w.join("gcreds.json")), "{inputs:?}");
        for d in ["gcfg", "azcfg"] {
            assert!(inputs.stores.contains(&w.join(d)), "{d}: {inputs:?}");
        }
        let kept = startup_inputs(&profile, &ctx, &[]);
        for p in ["gcreds.json", "gcfg", "azcfg"] {
            assert!(kept.contains(&w.join(p)), "{p}: {kept:?}");
        }
    }

    /// Every kind reaches its own fetch: a local kind its reader, a remote kind its
    /// backend's client (here refused at set-up, so no network is touched), in order.
    #[test]
    fn every_kind_dispatches_to_its_backend() {
        let (t, ctx, _) = setup();
        let specs: Vec<SecretSpec> = SCHEMES
            .iter()
            .map(|row| {
                let text = crate::profile::source::tests::example(row.kind);
                let source = Source::parse(text, t.path(), Some(&t.path().join("home"))).unwrap();
                SecretSpec {
                    name: format!("S_{}", row.name.replace('-', "_").to_uppercase()),
                    source,
                    source_text: text.to_string(),
                    inject: crate::profile::Inject::Env,
                    required: true,
                    verify: crate::profile::Verify::from_section(&Default::default()).unwrap(),
                    broker: None,
                }
            })
            .collect();
        // No `[vault]` address anywhere; `[aws]`, `[gcp]` and `[azure]` tables refused
        // before any client loads.
        let aws: AwsSection = toml::from_str("timeout = \"0s\"").unwrap();
        let gcp: GcpSection = toml::from_str("timeout = \"0s\"").unwrap();
        let azure: AzureSection = toml::from_str("timeout = \"0s\"").unwrap();
        let fetcher = Fetcher::with_sections(
            Sections {
                aws: Some(&aws),
                gcp: Some(&gcp),
                azure: Some(&azure),
                ..Sections::default()
            },
            &ctx,
        );
        let got = fetcher.fetch_all(&specs);
        assert_eq!(got.len(), specs.len());
        for ((row, spec), f) in SCHEMES.iter().zip(&specs).zip(&got) {
            assert_eq!(f.name, spec.name);
            let ok = match (row.kind, &f.value) {
                (SourceKind::Env, Err(FetchError::EnvMissing(n))) => n == "A",
                (SourceKind::Dotenv, Ok(_)) => true,
                (SourceKind::File | SourceKind::Systemd, Ok(_)) => true,
                (SourceKind::Vault, Err(FetchError::Vault(VaultError::Config(m)))) => {
                    m.contains("no Vault address")
                }
                (
                    SourceKind::AwsSm | SourceKind::AwsSsm,
                    Err(FetchError::Aws(AwsError::Config(m))),
                ) => m.contains("zero"),
                (SourceKind::GcpSm, Err(FetchError::Gcp(GcpError::Config(m)))) => {
                    m.contains("zero")
                }
                (SourceKind::AzureKv, Err(FetchError::Azure(AzureError::Config(m)))) => {
                    m.contains("zero")
                }
                (
                    SourceKind::Env
                    | SourceKind::Dotenv
                    | SourceKind::File
                    | SourceKind::Systemd
                    | SourceKind::Vault
                    | SourceKind::AwsSm
                    | SourceKind::AwsSsm
                    | SourceKind::GcpSm
                    | SourceKind::AzureKv,
                    _,
                ) => false,
            };
            assert!(ok, "{}: {:?}", row.name, f.value.as_ref().err());
        }
    }

    #[test]
    fn startup_inputs_name_every_file_a_run_reads() {
        let (t, ctx, profile) = setup();
        std::fs::write(&profile.path, "").unwrap();
        let w = t.path();
        let got = startup_inputs(&profile, &ctx, &[w.join("profiles"), w.join("absent")]);
        for f in [
            "profiles/p.toml",
            "profiles",
            ".env",
            "tok",
            "opt",
            "creds/sd",
            "vault-token",
            "ca.pem",
            "aws",
        ] {
            assert!(got.contains(&w.join(f)), "{f} missing from {got:?}");
        }
        assert!(!got.contains(&w.join("absent")));
    }

    #[test]
    fn credential_inputs_keep_optional_and_inexact_sources() {
        let (t, ctx, profile) = setup();
        let w = t.path();
        let inputs = credential_inputs(&profile, &ctx);
        // `.env` holds exactly `K=v`, declared and required: readable. `tok` is a required
        // secret's own value: readable. `opt` may be left out: kept.
        assert!(!inputs.paths.contains(&w.join(".env")), "{inputs:?}");
        assert!(!inputs.paths.contains(&w.join("tok")), "{inputs:?}");
        assert!(inputs.paths.contains(&w.join("opt")), "{inputs:?}");
        assert!(inputs.paths.contains(&w.join("vault-token")), "{inputs:?}");
        assert!(inputs.paths.contains(&w.join("creds")), "{inputs:?}");
        assert!(inputs.stores.contains(&w.join("aws")), "{inputs:?}");
        assert!(inputs.stores.contains(&w.join("home/.ssh")), "{inputs:?}");
        std::fs::write(w.join(".env"), "# K=old\nK=v\n").unwrap();
        let inputs = credential_inputs(&profile, &ctx);
        assert!(inputs.paths.contains(&w.join(".env")), "{inputs:?}");
    }
}
