//! Google Cloud Secret Manager: `gcp-sm:projects/P/secrets/S[/versions/V][#KEY]`, or
//! `gcp-sm:S[/versions/V]` with `[gcp].project`.
//!
//! Owns the `[gcp]` table and `AccessSecretVersion`. The Google client (the `gcp` feature,
//! `gcp/client.rs`) is built only when a profile uses `gcp-sm:`, once per run. Credentials:
//! `[gcp].credentials` (a credentials JSON, or `"none"` for emulators), else Application
//! Default Credentials. Errors become [`GcpError`], whose messages name the secret, the
//! endpoint and the fix, never a value or a token.

use crate::context::Context;
use crate::profile::{DurationKind, GcpRef, GcpSection, parse_duration, resolve_path};
use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "gcp")]
mod client;
#[cfg(feature = "gcp")]
pub(crate) use client::Gcp;

/// Time limit when `[gcp].timeout` is not set (one limit for the whole call, retries included).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries after the first try when `[gcp].retries` is not set.
pub const DEFAULT_RETRIES: u32 = 2;
/// The public endpoint, replaced by `[gcp].endpoint`.
pub const PUBLIC_ENDPOINT: &str = "https://secretmanager.googleapis.com";

/// Where the Google credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcpCredentials {
    /// Application Default Credentials: `GOOGLE_APPLICATION_CREDENTIALS`, the gcloud ADC
    /// file, the metadata server.
    Default,
    /// `[gcp].credentials = "PATH"`: a service-account or authorized-user JSON.
    File(PathBuf),
    /// `[gcp].credentials = "none"`: no credentials at all (emulators only).
    Anonymous,
}

/// `[gcp]` validated; nothing loaded yet.
#[derive(Debug, Clone)]
pub struct GcpSettings {
    pub project: Option<String>,
    pub endpoint: Option<String>,
    pub credentials: GcpCredentials,
    pub timeout: Duration,
    pub retries: u32,
}

impl GcpSettings {
    pub fn from_section(section: Option<&GcpSection>, ctx: &Context) -> Result<Self, GcpError> {
        let default = GcpSection::default();
        let s = section.unwrap_or(&default);
        let cfg = GcpError::Config;
        if let Some(e) = &s.endpoint {
            let shown = crate::scrub::strip_userinfo(e);
            let url = reqwest::Url::parse(e)
                .map_err(|err| cfg(format!("endpoint = \"{shown}\" is not a URL ({err})")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(cfg(format!(
                    "endpoint = \"{shown}\": write http(s)://HOST[:PORT]"
                )));
            }
        }
        if s.project.as_deref().is_some_and(str::is_empty) {
            return Err(cfg(
                "project is empty: remove it or give the project id".into()
            ));
        }
        let credentials = match s.credentials.as_deref() {
            None => GcpCredentials::Default,
            Some("none") => GcpCredentials::Anonymous,
            Some("") => {
                return Err(cfg(
                    "credentials is empty: give a credentials JSON file, or \"none\" (emulators only)"
                        .into(),
                ));
            }
            Some(p) => GcpCredentials::File(resolve_path(p, &ctx.cwd, ctx.home.as_deref())),
        };
        // A bearer token over plain http only to this machine (review 15, F6): emulators.
        if let Some(e) = &s.endpoint
            && credentials != GcpCredentials::Anonymous
            && let Ok(url) = reqwest::Url::parse(e)
            && url.scheme() == "http"
            && !is_loopback(&url)
        {
            return Err(cfg(format!(
                "endpoint = \"{}\" is plain http to another host: the Google token would cross \
                 the network in clear; use https, or credentials = \"none\" for an emulator",
                crate::scrub::strip_userinfo(e)
            )));
        }
        let timeout = match &s.timeout {
            Some(t) => parse_duration("timeout", t, DurationKind::Request).map_err(cfg)?,
            None => DEFAULT_TIMEOUT,
        };
        Ok(GcpSettings {
            project: s.project.clone(),
            endpoint: s.endpoint.clone(),
            credentials,
            timeout,
            retries: s.retries.unwrap_or(DEFAULT_RETRIES),
        })
    }

    /// Every short-form source (`gcp-sm:SECRET`) needs `[gcp].project`.
    pub fn check_refs<'r>(&self, refs: impl Iterator<Item = &'r GcpRef>) -> Result<(), GcpError> {
        for r in refs {
            if r.project.is_none() && self.project.is_none() {
                return Err(GcpError::Config(format!(
                    "`gcp-sm:{}` names no project: set [gcp].project, or write \
                     `gcp-sm:projects/PROJECT/secrets/{}`",
                    r.secret, r.secret
                )));
            }
        }
        Ok(())
    }

    /// Where reads go, for messages (the endpoint without any `user:pass@`).
    pub fn place(&self) -> String {
        match &self.endpoint {
            Some(e) => crate::scrub::strip_userinfo(e).into_owned(),
            None => PUBLIC_ENDPOINT.to_string(),
        }
    }
}

/// `localhost` or a loopback address.
fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

/// `[gcp].credentials` when it names a file (resolved; whether or not it exists): a
/// credential store the child must not read, and a file a later run reads.
pub fn credentials_file(section: Option<&GcpSection>, ctx: &Context) -> Option<PathBuf> {
    match section?.credentials.as_deref() {
        None | Some("") | Some("none") => None,
        Some(p) => Some(resolve_path(p, &ctx.cwd, ctx.home.as_deref())),
    }
}

/// Why a Secret Manager read failed. `secret` is the resource name
/// (`projects/P/secrets/S/versions/V`), `place` the endpoint. Messages never hold a value or
/// a token. Clone: one failed set-up is reported per secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GcpError {
    #[error("[gcp] {0}")]
    Config(String),
    /// 404 `NOT_FOUND`: no such secret, or no such version of it.
    #[error(
        "gcp-sm {secret} ({place}): not found{detail}: check the project, the secret name and \
         the version (`gcloud secrets versions list SECRET --project PROJECT`)"
    )]
    NotFound {
        secret: String,
        place: String,
        detail: String,
    },
    /// 400 `FAILED_PRECONDITION`: the version is disabled or destroyed.
    #[error("gcp-sm {secret} ({place}): the version is {state}: {fix}")]
    VersionState {
        secret: String,
        place: String,
        state: &'static str,
        fix: String,
    },
    /// 403 `PERMISSION_DENIED`.
    #[error(
        "gcp-sm {secret} ({place}): permission denied{detail}: the caller needs the role \
         roles/secretmanager.secretAccessor on the secret (or its project)"
    )]
    PermissionDenied {
        secret: String,
        place: String,
        detail: String,
    },
    /// 401 `UNAUTHENTICATED`, or no access token could be had.
    #[error(
        "gcp-sm {secret} ({place}): the Google credentials were rejected or could not be used \
         (wrong or expired){detail}: run `gcloud auth application-default login`, or fix the \
         credentials file ([gcp].credentials or GOOGLE_APPLICATION_CREDENTIALS)"
    )]
    Unauthenticated {
        secret: String,
        place: String,
        detail: String,
    },
    #[error(
        "gcp-sm {secret} ({place}): no answer within {secs}s: check the network and \
         [gcp].endpoint, or raise [gcp].timeout"
    )]
    Timeout {
        secret: String,
        place: String,
        secs: f64,
    },
    #[error(
        "gcp-sm {secret} ({place}): cannot connect: {reason}: check [gcp].endpoint and the network"
    )]
    Unreachable {
        secret: String,
        place: String,
        reason: String,
    },
    #[error("gcp-sm {secret} ({place}): {msg}")]
    Other {
        secret: String,
        place: String,
        msg: String,
    },
}

impl GcpError {
    /// A version Secret Manager refused in `state` (`DISABLED`, `DESTROYED`, from Google's
    /// message), with the fix for that state. `secret` is `projects/P/secrets/S/versions/V`.
    pub fn version_state(secret: String, place: String, message: &str) -> GcpError {
        let parts: Vec<&str> = secret.split('/').collect();
        let (project, name, version) = match parts.as_slice() {
            ["projects", p, "secrets", s, "versions", v] => (*p, *s, *v),
            _ => ("PROJECT", "SECRET", "VERSION"),
        };
        let (state, fix) = if message.contains("DESTROYED") {
            (
                "destroyed",
                "a destroyed version never comes back: name another version, or `latest`".into(),
            )
        } else if message.contains("DISABLED") {
            (
                "disabled",
                format!(
                    "enable it (`gcloud secrets versions enable {version} --secret {name} \
                     --project {project}`), or name another version"
                ),
            )
        } else {
            (
                "not accessible (FAILED_PRECONDITION)",
                "enable the version, or name another version".into(),
            )
        };
        GcpError::VersionState {
            secret,
            place,
            state,
            fix,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn settings() {
        let ctx = Context {
            env: Default::default(),
            cwd: "/".into(),
            home: None,
        };
        let s = GcpSettings::from_section(None, &ctx).unwrap();
        assert_eq!(s.credentials, GcpCredentials::Default);
        let none: GcpSection = toml::from_str("credentials = \"none\"").unwrap();
        let s = GcpSettings::from_section(Some(&none), &ctx).unwrap();
        assert_eq!(s.credentials, GcpCredentials::Anonymous);
        for bad in [
            "endpoint = \"nope\"",
            "timeout = \"0s\"",
            "project = \"\"",
            "endpoint = \"http://192.0.2.2:80\"",
        ] {
            let bad: GcpSection = toml::from_str(bad).unwrap();
            assert!(GcpSettings::from_section(Some(&bad), &ctx).is_err());
        }
    }

    /// The short form `gcp-sm:S` without `[gcp].project` is one message naming both fixes;
    /// with the project, or with the long form, it passes.
    #[test]
    fn short_form_needs_a_project() {
        let ctx = Context {
            env: Default::default(),
            cwd: "/".into(),
            home: None,
        };
        let short = GcpRef {
            project: None,
            secret: "api-key".into(),
            version: "latest".into(),
            key: None,
        };
        let long = GcpRef {
            project: Some("p".into()),
            ..short.clone()
        };
        let s = GcpSettings::from_section(None, &ctx).unwrap();
        assert!(s.check_refs([&long].into_iter()).is_ok());
        let msg = s
            .check_refs([&long, &short].into_iter())
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "[gcp] `gcp-sm:api-key` names no project: set [gcp].project, or write \
             `gcp-sm:projects/PROJECT/secrets/api-key`"
        );
        let with: GcpSection = toml::from_str("project = \"p\"").unwrap();
        let s = GcpSettings::from_section(Some(&with), &ctx).unwrap();
        assert!(s.check_refs([&short].into_iter()).is_ok());
        assert_eq!(
            short.resource("p"),
            "projects/p/secrets/api-key/versions/latest"
        );
    }

    #[test]
    fn version_states_name_their_fix() {
        let e = GcpError::version_state(
            "projects/p/secrets/s/versions/1".into(),
            "http://x".into(),
            "Secret Version [projects/p/secrets/s/versions/1] is in DISABLED state.",
        );
        assert!(
            e.to_string().contains(
                "is disabled: enable it (`gcloud secrets versions enable 1 --secret s --project p`)"
            ),
            "{e}"
        );
        let e = GcpError::version_state("n".into(), "p".into(), "is in DESTROYED state.");
        assert!(
            e.to_string().contains("is destroyed: a destroyed version"),
            "{e}"
        );
    }
}
