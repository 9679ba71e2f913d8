//! Secret sources: parse `scheme:location[?query][#field]` and fetch values.
//!
//! One file per source. Every fetch returns a [`SecretString`]; nothing here formats a value.
//! Remote backends (`vault:`, `aws-sm:`) live in `vault.rs` and `aws.rs` and are only
//! touched when a profile uses them, so local profiles keep their start-up time.

pub mod aws;
mod local;
pub mod source;
pub mod vault;

pub use source::{AwsRef, Source, VaultRef};

use secrecy::SecretString;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Everything a fetch may read besides the source itself: agentrun's own environment
/// (a snapshot taken at start), the working directory and `$HOME`.
#[derive(Debug, Clone)]
pub struct Context {
    pub env: BTreeMap<OsString, OsString>,
    pub cwd: PathBuf,
    pub home: Option<PathBuf>,
}

impl Context {
    pub fn var(&self, name: &str) -> Option<&OsString> {
        self.env.get(std::ffi::OsStr::new(name))
    }

    pub fn var_str(&self, name: &str) -> Option<&str> {
        self.var(name).and_then(|v| v.to_str())
    }
}

/// Why a fetch failed. Messages name the source and the fix, never a value.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0} is not set in agentrun's environment: export it, or change the source")]
    EnvMissing(String),
    #[error("{0}: environment variable is not valid UTF-8")]
    EnvNotUtf8(String),
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
    #[error("the value is empty: an empty credential is never valid")]
    Empty,
    #[error("{0}")]
    Remote(String),
}

/// The outcome of fetching one secret.
pub struct Fetched {
    pub value: Result<SecretString, FetchError>,
    pub duration: Duration,
}

/// Fetch one local secret (env, dotenv, file, systemd). Remote sources are not local.
pub fn fetch_local(source: &Source, ctx: &Context) -> Result<SecretString, FetchError> {
    local::fetch(source, ctx)
}

/// Fetch every `(name, source)` pair; the result is in the same order.
pub fn fetch_all(sources: &[&Source], ctx: &Context) -> Vec<Fetched> {
    sources
        .iter()
        .map(|s| {
            let start = Instant::now();
            let value = match s {
                Source::Vault(_) | Source::AwsSm(_) => Err(FetchError::Remote(format!(
                    "the {} source is not available in this build",
                    s.kind()
                ))),
                _ => fetch_local(s, ctx),
            };
            Fetched {
                value,
                duration: start.elapsed(),
            }
        })
        .collect()
}
