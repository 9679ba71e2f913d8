//! TOML -> validated [`Profile`]: paths absolute, names checked, regexes compiled.
//!
//! No I/O beyond finding and reading the profile file. Later stages never re-validate.
//!
//! A leaf: it imports nothing of the crate. The sections other stages read are plain data
//! here ([`sandbox`], [`redact`], [`verify`]); what those stages do with them (build a
//! policy, a redactor, send a probe) lives with them. `[redact]`'s rule ids and regexes are
//! the redactor's to check: the command that loads a profile calls it
//! ([`Profile::redact_error`] places the message).

pub mod backends;
pub mod broker;
pub mod duration;
pub mod limits;
mod placed;
pub mod preflight;
pub mod redact;
pub mod sandbox;
pub mod search;
pub mod source;
pub mod verify;

pub use backends::{AwsSection, AzureSection, GcpSection, VaultSection};
pub use broker::{BrokerSection, Rate, SecretBroker};
pub use duration::{DurationKind, parse_duration};
pub use limits::Limits;
pub use preflight::{CHECK_IDS, Preflight};
pub use redact::RedactSection;
pub use sandbox::SandboxSection;
pub use source::{
    AwsRef, AzureRef, GcpRef, SCHEMES, Scheme, Source, SourceKind, SsmRef, VaultRef, resolve_path,
};
pub use verify::{Verify, VerifySection};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Names copied from agentrun's environment when a profile has no `[env].pass`.
pub const DEFAULT_PASS: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_*",
    "TERM",
    "COLORTERM",
    "TZ",
    "TMPDIR",
];

/// Words that make an environment variable name look like a credential (case-insensitive).
pub const CREDENTIAL_WORDS: &[&str] = &[
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "API_KEY",
    "APIKEY",
    "PRIVATE_KEY",
    "ACCESS_KEY",
];

/// A profile load error: always names the file, and where known the line and column.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{0}")]
    NotFound(String),
    #[error("cannot read profile {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error(
        "profile {path} is writable by {who} (mode {mode:o}): anyone who can edit it can change what the agent gets; run `chmod go-w {path}`"
    )]
    Insecure {
        path: PathBuf,
        who: &'static str,
        mode: u32,
    },
    #[error(
        "profile {path} belongs to uid {uid}, not to agentrun's user or root: its owner can change what the agent gets; `chown` it to yourself, or use your own copy"
    )]
    NotOwned { path: PathBuf, uid: u32 },
    #[error(
        "profile {path}: the directory {dir} {why}: another user could replace the profile; {fix}"
    )]
    InsecureDir {
        path: PathBuf,
        dir: PathBuf,
        why: String,
        fix: String,
    },
    #[error("{path}:{line}:{col}: {msg}")]
    At {
        path: PathBuf,
        line: usize,
        col: usize,
        msg: String,
    },
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    version: Spanned<i64>,
    description: Option<String>,
    env: Option<Spanned<EnvSection>>,
    #[serde(default)]
    secrets: BTreeMap<Spanned<String>, Spanned<RawSecret>>,
    sandbox: Option<SandboxSection>,
    redact: Option<Spanned<RedactSection>>,
    audit: Option<Spanned<AuditSection>>,
    limits: Option<Spanned<LimitsSection>>,
    vault: Option<VaultSection>,
    aws: Option<AwsSection>,
    gcp: Option<GcpSection>,
    azure: Option<AzureSection>,
    broker: Option<Spanned<broker::RawBrokerSection>>,
    preflight: Option<Spanned<preflight::RawPreflight>>,
}

/// `[env]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSection {
    pub pass: Option<Vec<String>>,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
}

/// A `[secrets]` entry, short (`NAME = "env:NAME"`) or long (a table). Deserialized in
/// place, not through a `toml::Value`, so that an error inside the table (an unknown key, a
/// wrong type) keeps the span of its own key.
#[derive(Debug)]
enum RawSecret {
    Short(Spanned<String>),
    Long(Box<LongSecret>),
}

impl<'de> Deserialize<'de> for RawSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = RawSecret;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a source string like \"env:NAME\" or a table with `from`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawSecret, E> {
                Ok(RawSecret::Short(Spanned::new(0..0, v.to_string())))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<RawSecret, A::Error> {
                LongSecret::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(|l| RawSecret::Long(Box::new(l)))
            }
        }
        d.deserialize_any(Either)
    }
}

/// Long form of a `[secrets]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LongSecret {
    from: Spanned<String>,
    #[serde(rename = "as", default)]
    inject: Inject,
    #[serde(default = "yes")]
    required: bool,
    verify: Option<VerifySection>,
    broker: Option<toml::Value>,
}

fn yes() -> bool {
    true
}

/// How the child receives a secret.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Inject {
    #[default]
    Env,
    File,
}

/// `[audit]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    pub log: Option<String>,
    /// Copy every line to the system journal as well (tamper evidence outside the file).
    pub journald: Option<bool>,
}

/// `[limits]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub timeout: Option<String>,
    pub kill_after: Option<String>,
    pub nofile: Option<u64>,
    pub nproc: Option<u64>,
    pub memory: Option<toml::Value>,
    pub cpu: Option<toml::Value>,
    pub fsize: Option<toml::Value>,
}

/// One declared secret, validated.
#[derive(Debug, Clone)]
pub struct SecretSpec {
    pub name: String,
    pub source: Source,
    pub source_text: String,
    pub inject: Inject,
    pub required: bool,
    pub verify: Verify,
    /// `broker = ...`: the child gets a placeholder, the broker puts the value in requests
    /// to these hosts.
    pub broker: Option<SecretBroker>,
}

/// Where the audit log goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditSink {
    Stderr,
    File(PathBuf),
    /// The system journal only (`log = "journald"`).
    Journald,
}

/// A validated profile. Every later stage trusts it.
#[derive(Debug, Clone)]
pub struct Profile {
    pub path: PathBuf,
    pub sha256: String,
    pub description: Option<String>,
    pub pass: Vec<String>,
    pub set: BTreeMap<String, String>,
    pub secrets: Vec<SecretSpec>,
    pub sandbox: Option<SandboxSection>,
    pub redact: RedactSection,
    /// Line and column where `[redact]` starts, for [`Profile::redact_error`].
    pub redact_at: Option<(usize, usize)>,
    pub audit: AuditSink,
    /// `[audit] journald = true`: every line goes to the journal too.
    pub audit_journald: bool,
    /// agentrun's state directory (`$XDG_STATE_HOME/agentrun`, `~/.local/state/agentrun`):
    /// the only place a profile may put its audit log (anything else is the operator's call).
    pub state_dir: PathBuf,
    pub limits: Limits,
    pub vault: Option<VaultSection>,
    pub aws: Option<AwsSection>,
    pub gcp: Option<GcpSection>,
    pub azure: Option<AzureSection>,
    /// The broker's table: present when the profile has `[broker]` or brokers a secret.
    pub broker: Option<BrokerSection>,
    /// `[preflight]`: the checks a run depends on.
    pub preflight: Option<Preflight>,
}

/// The environment a profile resolves against.
pub struct Resolve<'a> {
    pub cwd: &'a Path,
    pub home: Option<&'a Path>,
    pub xdg_state_home: Option<&'a Path>,
}

/// True when `name` is a valid environment variable name for the child.
pub fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// True when a variable name looks like a credential.
pub fn looks_like_credential(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    CREDENTIAL_WORDS.iter().any(|w| upper.contains(w))
}

/// Prefixes of variables a `pass` glob never copies: backends' settings and credentials
/// (`VAULT_ADDR` may carry `user:pass@`, `VAULT_ROLE_ID` is half a login), cloud
/// credentials, and agentrun's own settings. Naming one exactly in `pass` still copies it.
pub const GLOB_WITHHELD_PREFIXES: &[&str] = &[
    "VAULT_",
    "AWS_",
    "AZURE_",
    "AGENTRUN_",
    // Google's and the managed identities' own (review 15, F5): `GOOGLE_GHA_CREDS_PATH`,
    // `CLOUDSDK_CONFIG`, `GCE_METADATA_HOST`, `IDENTITY_HEADER`/`_ENDPOINT`, `MSI_*`, `IMDS_*`.
    "GOOGLE_",
    "CLOUDSDK_",
    "GCE_METADATA",
    "IDENTITY_",
    "MSI_",
    "IMDS_",
];

/// Names under [`GLOB_WITHHELD_PREFIXES`] a glob still copies: they select, not authenticate.
pub const GLOB_PASSED_ANYWAY: &[&str] = &["AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"];

/// True when a `pass` glob must not copy `name`: it looks like a credential, or it is a
/// backend's, a cloud's or agentrun's own variable (see [`GLOB_WITHHELD_PREFIXES`]), or
/// `GOOGLE_APPLICATION_CREDENTIALS`.
pub fn withheld_from_globs(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    if GLOB_PASSED_ANYWAY.contains(&upper.as_str()) {
        return false;
    }
    looks_like_credential(name)
        || upper == "GOOGLE_APPLICATION_CREDENTIALS"
        || GLOB_WITHHELD_PREFIXES.iter().any(|p| upper.starts_with(p))
}

impl Profile {
    /// A fault the redactor's checks found in `[redact]`, placed like any other profile
    /// error (`path:line:col: message`).
    pub fn redact_error(&self, msg: String) -> ProfileError {
        match self.redact_at {
            Some((line, col)) => ProfileError::At {
                path: self.path.clone(),
                line,
                col,
                msg,
            },
            None => ProfileError::File {
                path: self.path.clone(),
                msg,
            },
        }
    }

    /// Read, check permissions, parse and validate the profile at `path`.
    pub fn load(path: &Path, r: &Resolve) -> Result<Profile, ProfileError> {
        use std::os::unix::fs::MetadataExt;
        let read_err = |err| ProfileError::Read {
            path: path.to_path_buf(),
            err,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o002 != 0 {
            return Err(ProfileError::Insecure {
                path: path.to_path_buf(),
                who: "others",
                mode,
            });
        }
        if mode & 0o020 != 0 && !private_group(meta.uid(), meta.gid()) {
            return Err(ProfileError::Insecure {
                path: path.to_path_buf(),
                who: "its group",
                mode,
            });
        }
        check_owner_and_dirs(path, meta.uid())?;
        let bytes = std::fs::read(path).map_err(read_err)?;
        let text = String::from_utf8(bytes).map_err(|_| ProfileError::File {
            path: path.to_path_buf(),
            msg: "is not valid UTF-8".into(),
        })?;
        Self::parse(path, &text, r)
    }

    /// Parse and validate profile text (`path` is used for messages and the audit log).
    pub fn parse(path: &Path, text: &str, r: &Resolve) -> Result<Profile, ProfileError> {
        use sha2::Digest;
        let at = |span: std::ops::Range<usize>, msg: String| {
            let (line, col) = line_col(text, span.start);
            ProfileError::At {
                path: path.to_path_buf(),
                line,
                col,
                msg,
            }
        };
        let raw: RawProfile = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => {
                let (offset, msg) = placed::place(text, span, e.message());
                at(offset..offset, msg)
            }
            None => ProfileError::File {
                path: path.to_path_buf(),
                msg: e.message().to_string(),
            },
        })?;
        if *raw.version.get_ref() != 1 {
            return Err(at(
                raw.version.span(),
                format!(
                    "version = {} is not supported: this agentrun reads version = 1",
                    raw.version.get_ref()
                ),
            ));
        }

        // [env]
        let (env_span, env) = match raw.env {
            Some(e) => (e.span(), e.into_inner()),
            None => (0..0, EnvSection::default()),
        };
        let pass: Vec<String> = match env.pass {
            Some(p) => p,
            None => DEFAULT_PASS.iter().map(|s| s.to_string()).collect(),
        };
        for name in &pass {
            let base = name.strip_suffix('*').unwrap_or(name);
            if base.contains('*') || (!base.is_empty() && !valid_env_name(base)) || name.is_empty()
            {
                return Err(at(
                    env_span.clone(),
                    format!(
                        "env.pass: `{name}` is not a variable name (letters, digits, `_`, optionally ending in `*`)"
                    ),
                ));
            }
            if looks_like_credential(base) {
                return Err(at(
                    env_span.clone(),
                    format!(
                        "env.pass: `{name}` looks like a credential: declare it under [secrets] instead \
                     (e.g. `{b} = \"env:{b}\"`) so that it is fetched on purpose, verified, audited and redacted",
                        b = base.trim_end_matches('_')
                    ),
                ));
            }
        }
        for name in env.set.keys() {
            if !valid_env_name(name) {
                return Err(at(
                    env_span.clone(),
                    format!(
                        "env.set: `{name}` is not a valid variable name (letters, digits and `_`, not starting with a digit)"
                    ),
                ));
            }
        }

        // [secrets]
        let mut secrets = Vec::new();
        for (key, value) in raw.secrets {
            let name = key.get_ref().clone();
            let kspan = key.span();
            if !valid_env_name(&name) {
                return Err(at(
                    kspan,
                    format!(
                        "secrets.{name}: not a valid variable name (letters, digits and `_`, not starting with a digit)"
                    ),
                ));
            }
            if env.set.contains_key(&name) {
                return Err(at(
                    kspan,
                    format!(
                        "secrets.{name}: `{name}` is also in env.set: a name may appear once; remove one of them"
                    ),
                ));
            }
            let vspan = value.span();
            let long = match value.into_inner() {
                RawSecret::Short(from) => LongSecret {
                    from: Spanned::new(vspan.clone(), from.into_inner()),
                    inject: Inject::Env,
                    required: true,
                    verify: None,
                    broker: None,
                },
                RawSecret::Long(l) => *l,
            };
            let fspan = long.from.span();
            let from = long.from.into_inner();
            let source = Source::parse(&from, r.cwd, r.home)
                .map_err(|m| at(fspan, format!("secrets.{name}.from: {m}")))?;
            let verify = Verify::from_section(&long.verify.unwrap_or_default())
                .map_err(|m| at(vspan.clone(), format!("secrets.{name}.verify: {m}")))?;
            let broker = long
                .broker
                .map(SecretBroker::parse)
                .transpose()
                .map_err(|m| at(vspan.clone(), format!("secrets.{name}.broker: {m}")))?;
            secrets.push(SecretSpec {
                name,
                source,
                source_text: from,
                inject: long.inject,
                required: long.required,
                verify,
                broker,
            });
        }

        // [redact]
        // Its rule ids and regexes are checked by the redactor's own code when the profile
        // is loaded for a command (see `Profile::redact_error`): this module imports nothing.
        let (redact, redact_at) = match raw.redact {
            Some(s) => {
                let at = line_col(text, s.span().start);
                (s.into_inner(), Some(at))
            }
            None => (RedactSection::default(), None),
        };

        // [audit]
        let audit = match raw.audit.as_ref().and_then(|a| a.get_ref().log.clone()) {
            Some(l) if l == "-" => AuditSink::Stderr,
            Some(l) if l == "journald" => AuditSink::Journald,
            Some(l) if l.is_empty() => {
                let span = raw.audit.as_ref().map(|a| a.span()).unwrap_or(0..0);
                return Err(at(
                    span,
                    "audit.log is empty: give a path, \"-\" for stderr or \"journald\"".into(),
                ));
            }
            Some(l) => AuditSink::File(resolve_path(&l, r.cwd, r.home)),
            None => AuditSink::File(default_audit_log(r)),
        };
        let audit_journald = raw
            .audit
            .as_ref()
            .and_then(|a| a.get_ref().journald)
            .unwrap_or(false);

        // [limits]
        let limits = match raw.limits {
            Some(l) => {
                let span = l.span();
                Limits::from_section(l.get_ref()).map_err(|m| at(span, m))?
            }
            None => Limits::default(),
        };

        // [broker]
        let broker_span = raw.broker.as_ref().map(|b| b.span());
        let brokered = secrets.iter().any(|s| s.broker.is_some());
        let broker = match raw.broker {
            Some(b) => {
                let span = b.span();
                Some(
                    b.into_inner()
                        .parse(|p| resolve_path(p, r.cwd, r.home))
                        .map_err(|m| at(span, m))?,
                )
            }
            None if brokered => Some(BrokerSection::default()),
            None => None,
        };
        if broker.is_some() {
            let span = || broker_span.clone().unwrap_or(0..0);
            if let Some(sb) = &raw.sandbox
                && (!sb.connect.is_empty() || sb.udp)
            {
                return Err(at(
                    span(),
                    "sandbox.connect and sandbox.udp must stay empty with a broker: the broker is the child's only network; reach other hosts through [broker].allow".into(),
                ));
            }
            for name in env.set.keys().chain(secrets.iter().map(|s| &s.name)) {
                if broker::reserved(name) {
                    return Err(at(
                        span(),
                        format!(
                            "`{name}` is set by the broker (proxy, trust store): remove it from env.set or [secrets]"
                        ),
                    ));
                }
            }
        }

        // [preflight]
        let preflight = match raw.preflight {
            Some(p) => {
                let span = p.span();
                Some(
                    p.into_inner()
                        .parse(|d| resolve_path(d, r.cwd, r.home))
                        .map_err(|m| at(span, m))?,
                )
            }
            None => None,
        };

        Ok(Profile {
            path: path.to_path_buf(),
            sha256: hex::encode(sha2::Sha256::digest(text.as_bytes())),
            description: raw.description,
            pass,
            set: env.set,
            secrets,
            sandbox: raw.sandbox,
            redact,
            redact_at,
            audit,
            audit_journald,
            state_dir: state_dir(r),
            limits,
            vault: raw.vault,
            aws: raw.aws,
            gcp: raw.gcp,
            azure: raw.azure,
            broker,
            preflight,
        })
    }
}

/// True when `gid` is the owner's own private group (named like the owner, nobody else
/// in it): then group-writable is owner-writable, as OpenSSH also accepts. This is what a
/// umask of 002 gives files on systems with user private groups.
fn private_group(uid: u32, gid: u32) -> bool {
    use nix::unistd::{Gid, Group, Uid, User};
    let (Ok(Some(user)), Ok(Some(group))) = (
        User::from_uid(Uid::from_raw(uid)),
        Group::from_gid(Gid::from_raw(gid)),
    ) else {
        return false;
    };
    is_private_group(&user.name, user.gid.as_raw(), &group.name, gid, &group.mem)
}

/// As ssh's `secure_path`: the profile belongs to agentrun's user or root, and so does every
/// directory from the profile's up to `/`, none writable by another user (a directory with
/// the sticky bit, such as `/tmp`, is fine: others cannot rename or delete what is ours in
/// it). Checked on the directory the path names and on the real directories it resolves to.
fn check_owner_and_dirs(path: &Path, file_uid: u32) -> Result<(), ProfileError> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    let ours = |uid: u32| uid == me || uid == 0;
    if !ours(file_uid) {
        return Err(ProfileError::NotOwned {
            path: path.to_path_buf(),
            uid: file_uid,
        });
    }
    // The directories the path names (a link among them may be swapped by whoever can write
    // the directory that holds it), then the real ones it resolves to.
    let mut dirs: Vec<PathBuf> = path.ancestors().skip(1).map(Path::to_path_buf).collect();
    dirs.retain(|d| !d.as_os_str().is_empty());
    let real = std::fs::canonicalize(path).map_err(|err| ProfileError::Read {
        path: path.to_path_buf(),
        err,
    })?;
    for d in real.ancestors().skip(1) {
        if !dirs.iter().any(|x| x == d) {
            dirs.push(d.to_path_buf());
        }
    }
    for dir in dirs {
        let meta = std::fs::metadata(&dir).map_err(|err| ProfileError::Read {
            path: dir.clone(),
            err,
        })?;
        let mode = meta.mode() & 0o7777;
        let sticky = mode & 0o1000 != 0;
        let bad = |why: String, fix: String| ProfileError::InsecureDir {
            path: path.to_path_buf(),
            dir: dir.clone(),
            why,
            fix,
        };
        if !ours(meta.uid()) {
            return Err(bad(
                format!(
                    "belongs to uid {}, not to agentrun's user or root",
                    meta.uid()
                ),
                "keep profiles in a directory of your own (~/.config/agentrun/profiles)".into(),
            ));
        }
        if sticky {
            continue;
        }
        if mode & 0o002 != 0 {
            return Err(bad(
                format!("is writable by others (mode {mode:o})"),
                format!("run `chmod o-w {}`", dir.display()),
            ));
        }
        if mode & 0o020 != 0 && !private_group(meta.uid(), meta.gid()) {
            return Err(bad(
                format!("is writable by its group (mode {mode:o})"),
                format!("run `chmod g-w {}`", dir.display()),
            ));
        }
    }
    Ok(())
}

fn is_private_group(user: &str, user_gid: u32, group: &str, gid: u32, members: &[String]) -> bool {
    user_gid == gid && group == user && members.iter().all(|m| m == user)
}

/// agentrun's state directory: `$XDG_STATE_HOME/agentrun`, else `~/.local/state/agentrun`,
/// else `/var/lib/agentrun`.
pub fn state_dir(r: &Resolve) -> PathBuf {
    let state = match (r.xdg_state_home, r.home) {
        (Some(s), _) if s.is_absolute() => s.to_path_buf(),
        (_, Some(h)) => h.join(".local/state"),
        _ => PathBuf::from("/var/lib"),
    };
    state.join("agentrun")
}

fn default_audit_log(r: &Resolve) -> PathBuf {
    state_dir(r).join("audit.jsonl")
}

/// True when `log` lies inside `state_dir` (lexically: no `..` anywhere), the only place a
/// profile may put its audit log.
pub fn inside_state_dir(log: &Path, state_dir: &Path) -> bool {
    use std::path::Component;
    log != state_dir
        && log.starts_with(state_dir)
        && !log.components().any(|c| c == Component::ParentDir)
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Profile, ProfileError> {
        Profile::parse(
            Path::new("/p/x.toml"),
            text,
            &Resolve {
                cwd: Path::new("/w"),
                home: Some(Path::new("/h")),
                xdg_state_home: None,
            },
        )
    }

    #[test]
    fn only_a_private_group_may_write() {
        assert!(is_private_group("ada", 1000, "ada", 1000, &[]));
        assert!(is_private_group("ada", 1000, "ada", 1000, &["ada".into()]));
        assert!(!is_private_group("ada", 1000, "ada", 1000, &["bob".into()]));
        assert!(!is_private_group("ada", 1000, "staff", 50, &[]));
        assert!(!is_private_group("ada", 100, "ada", 1000, &[]));
    }

    #[test]
    fn minimal_profile_gets_defaults() {
        let p = parse("version = 1\n").unwrap();
        assert_eq!(p.pass.len(), DEFAULT_PASS.len());
        assert_eq!(
            p.audit,
            AuditSink::File("/h/.local/state/agentrun/audit.jsonl".into())
        );
        assert!(p.secrets.is_empty());
    }

    #[test]
    fn audit_keys_and_the_state_directory() {
        let p = parse("version = 1\n[audit]\nlog = \"journald\"\n").unwrap();
        assert_eq!(p.audit, AuditSink::Journald);
        assert!(!p.audit_journald);
        let p = parse("version = 1\n[audit]\njournald = true\n").unwrap();
        assert!(p.audit_journald);
        assert_eq!(p.state_dir, Path::new("/h/.local/state/agentrun"));
        let state = Path::new("/h/.local/state/agentrun");
        assert!(inside_state_dir(
            Path::new("/h/.local/state/agentrun/a.jsonl"),
            state
        ));
        assert!(inside_state_dir(
            Path::new("/h/.local/state/agentrun/x/a.jsonl"),
            state
        ));
        assert!(!inside_state_dir(state, state));
        assert!(!inside_state_dir(Path::new("/h/.bashrc"), state));
        assert!(!inside_state_dir(
            Path::new("/h/.local/state/agentrun/../../../.bashrc"),
            state
        ));
        assert!(!inside_state_dir(
            Path::new("/h/.local/state/agentrunx/a"),
            state
        ));
        let e = parse("version = 1\n[audit]\njournald = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/p/x.toml:"), "{e}");
    }

    #[test]
    fn short_and_long_secrets() {
        let p = parse(
            "version = 1\n[secrets]\nA = \"env:A\"\n[secrets.B]\nfrom = \"file:b\"\nas = \"file\"\nrequired = false\nverify = { min_length = 3 }\n",
        )
        .unwrap();
        assert_eq!(p.secrets[0].name, "A");
        assert_eq!(
            p.secrets[1].source,
            Source::File {
                path: "/w/b".into()
            }
        );
        assert_eq!(p.secrets[1].inject, Inject::File);
        assert!(!p.secrets[1].required);
    }

    #[test]
    fn errors_carry_line_and_column() {
        let e = parse("version = 1\n[env]\npas = []\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/p/x.toml:3:1:"), "{e}");
        assert!(e.contains("pas"), "{e}");
        let e = parse("version = 1\n[secrets.A]\nfrom = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/p/x.toml:3:1: secrets.A.from:"), "{e}");
        let e = parse("version = 2\n").unwrap_err().to_string();
        assert!(e.starts_with("/p/x.toml:1:11:"), "{e}");
    }

    /// A wrong type or an unknown key names the dotted key, at the key's own line, in
    /// TOML's words, in every table; a string value is never quoted.
    #[test]
    fn type_errors_name_the_key_at_its_own_line() {
        for (text, want) in [
            (
                "version = 1\n[limits]\nnofile = \"many\"\n",
                "/p/x.toml:3:1: limits.nofile: expected a non-negative integer, found a string",
            ),
            (
                "version = 1\n[secrets.A]\nfrom = \"env:A\"\nform = \"x\"\n",
                "/p/x.toml:4:1: secrets.A.form: unknown key `form`",
            ),
            (
                "version = 1\n[secrets.A]\nfrom = \"env:A\"\nrequired = \"sk-Abc123\"\n",
                "/p/x.toml:4:1: secrets.A.required: expected a boolean, found a string",
            ),
            (
                "version = 1\n[secrets]\nA = 3\n",
                "/p/x.toml:3:1: secrets.A: expected a source string like \"env:NAME\" or a table with `from`, found an integer",
            ),
            (
                "version = 1\n[sandbox]\nread = [\"/a\", 3]\n",
                "/p/x.toml:3:15: sandbox.read[1]: expected a string, found an integer",
            ),
            (
                "version = 1\n\n[vault]\naddress = \"http://x\"\ntimeout = 5\n",
                "/p/x.toml:5:1: vault.timeout: expected a string, found an integer",
            ),
            (
                "version = 1\n[secrets.A]\nfrom = \"dotenv://.env#A\"\n",
                "/p/x.toml:3:8: secrets.A.from: did you mean `dotenv:.env#A`?",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text}\n got: {e}\nwant: {want}");
            assert!(!e.contains("sk-Abc123"), "{e}");
        }
    }

    #[test]
    fn credential_names_in_pass_are_refused() {
        let e = parse("version = 1\n[env]\npass = [\"PATH\", \"github_token\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("declare it under [secrets]"), "{e}");
        let e = parse("version = 1\n[env]\npass = [\"AWS_SECRET*\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("looks like a credential"), "{e}");
    }

    #[test]
    fn a_name_appears_once() {
        let e = parse("version = 1\n[env]\nset = { A = \"1\" }\n[secrets]\nA = \"env:A\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("also in env.set"), "{e}");
        let e = parse("version = 1\n[secrets]\nA = \"env:A\"\nA = \"env:B\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/p/x.toml:4:"), "{e}");
    }

    #[test]
    fn invalid_names() {
        assert!(
            parse("version = 1\n[secrets]\n\"1A\" = \"env:A\"\n")
                .unwrap_err()
                .to_string()
                .contains("not a valid variable name")
        );
        assert!(
            parse("version = 1\n[env]\nset = { \"A-B\" = \"1\" }\n")
                .unwrap_err()
                .to_string()
                .contains("env.set")
        );
    }

    #[test]
    fn broker_keys() {
        let p = parse("version = 1\n[secrets.K]\nfrom = \"env:K\"\nbroker = \"api.openai.com\"\n")
            .unwrap();
        assert_eq!(
            p.secrets[0].broker.as_ref().unwrap().hosts,
            ["api.openai.com"]
        );
        assert_eq!(
            p.broker,
            Some(BrokerSection::default()),
            "a brokered secret turns it on"
        );
        let p = parse("version = 1\n[broker]\nallow = [\"en.wikipedia.org\"]\n").unwrap();
        assert_eq!(p.broker.unwrap().allow, ["en.wikipedia.org"]);
        assert!(parse("version = 1\n").unwrap().broker.is_none());
        let refused = [
            (
                "version = 1\n[sandbox]\nconnect = [443]\n[broker]\nallow = [\"a\"]\n",
                "sandbox.connect and sandbox.udp must stay empty",
            ),
            (
                "version = 1\n[sandbox]\nudp = true\n[secrets.K]\nfrom = \"env:K\"\nbroker = \"a\"\n",
                "the broker is the child's only network",
            ),
            (
                "version = 1\n[env]\nset = { HTTPS_PROXY = \"http://x\" }\n[broker]\n",
                "`HTTPS_PROXY` is set by the broker",
            ),
            (
                "version = 1\n[secrets.K]\nfrom = \"env:K\"\nbroker = { hosts = [\"a\"], header = \"X: y\" }\n",
                "secrets.K.broker: header = \"X: y\" has no `{value}`",
            ),
            ("version = 1\n[broker]\nttl = \"later\"\n", "broker.ttl"),
        ];
        for (text, want) in refused {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("/p/x.toml:"), "{text}: {e}");
        }
    }
}
