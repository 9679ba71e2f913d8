//! Azure Key Vault secrets: `azure-kv:VAULT/NAME[/VERSION][#KEY]`.
//!
//! Owns the `[azure]` table and `GetSecret`. The Azure client (the `azure` feature,
//! `azure/client.rs`) is built only when a profile uses `azure-kv:`, once per run, with one
//! credential: a client secret (`[azure].client_secret`, a source, default
//! `env:AZURE_CLIENT_SECRET`), else workload identity, managed identity, the Azure CLI.
//! Errors become [`AzureError`], whose messages name the secret, the vault and the fix,
//! never a value or a token.

use crate::context::Context;
use crate::profile::{AzureSection, DurationKind, Source, parse_duration, resolve_path};
use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "azure")]
mod client;
#[cfg(feature = "azure")]
pub(crate) use client::Azure;

/// Time limit when `[azure].timeout` is not set (one limit for the whole call, retries included).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries after the first try when `[azure].retries` is not set.
pub const DEFAULT_RETRIES: u32 = 2;
/// Where a client secret comes from when `[azure].client_secret` is not set.
pub const DEFAULT_CLIENT_SECRET: &str = "env:AZURE_CLIENT_SECRET";

/// `[azure]` validated against agentrun's environment; nothing fetched yet.
#[derive(Debug, Clone)]
pub struct AzureSettings {
    /// `[azure].vault_url`: replaces `https://VAULT.vault.azure.net` for every source.
    pub vault_url: Option<String>,
    /// `[azure].tenant_id`, else `$AZURE_TENANT_ID`.
    pub tenant_id: Option<String>,
    /// `[azure].client_id`, else `$AZURE_CLIENT_ID`.
    pub client_id: Option<String>,
    /// The client secret's source, when one is configured (`[azure].client_secret`, or
    /// `env:AZURE_CLIENT_SECRET` when that variable is set). Never a remote source.
    pub client_secret: Option<Source>,
    /// `[azure].authority_host`, else `$AZURE_AUTHORITY_HOST`, else the public cloud's.
    pub authority_host: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub timeout: Duration,
    pub retries: u32,
}

impl AzureSettings {
    pub fn from_section(section: Option<&AzureSection>, ctx: &Context) -> Result<Self, AzureError> {
        let default = AzureSection::default();
        let s = section.unwrap_or(&default);
        let cfg = AzureError::Config;
        let url = |key: &str, v: &str| -> Result<(), AzureError> {
            let shown = crate::scrub::strip_userinfo(v);
            let u = reqwest::Url::parse(v)
                .map_err(|e| cfg(format!("{key} = \"{shown}\" is not a URL ({e})")))?;
            if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                return Err(cfg(format!(
                    "{key} = \"{shown}\": write https://HOST[:PORT]"
                )));
            }
            Ok(())
        };
        if let Some(v) = &s.vault_url {
            url("vault_url", v)?;
        }
        let env = |name: &str| {
            ctx.var_str(name)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let authority_host = s
            .authority_host
            .clone()
            .or_else(|| env("AZURE_AUTHORITY_HOST"));
        if let Some(v) = &authority_host {
            url("authority_host", v)?;
        }
        for (key, v) in [
            ("tenant_id", &s.tenant_id),
            ("client_id", &s.client_id),
            ("client_secret", &s.client_secret),
            ("ca_cert", &s.ca_cert),
        ] {
            if v.as_deref().is_some_and(str::is_empty) {
                return Err(cfg(format!("{key} is empty: remove it or give a value")));
            }
        }
        let client_secret = match &s.client_secret {
            Some(text) => Some(
                Source::parse(text, &ctx.cwd, ctx.home.as_deref())
                    .map_err(|e| cfg(format!("client_secret: {e}")))?,
            ),
            None => env("AZURE_CLIENT_SECRET").map(|_| Source::Env {
                name: "AZURE_CLIENT_SECRET".into(),
            }),
        };
        if let Some(src) = &client_secret
            && src.is_remote()
        {
            return Err(cfg(format!(
                "client_secret is a `{}:` source: the login's own secret must be local \
                 (env:, file:, dotenv:, systemd:)",
                src.kind()
            )));
        }
        let timeout = match &s.timeout {
            Some(t) => parse_duration("timeout", t, DurationKind::Request).map_err(cfg)?,
            None => DEFAULT_TIMEOUT,
        };
        Ok(AzureSettings {
            vault_url: s.vault_url.clone(),
            tenant_id: s.tenant_id.clone().or_else(|| env("AZURE_TENANT_ID")),
            client_id: s.client_id.clone().or_else(|| env("AZURE_CLIENT_ID")),
            client_secret,
            authority_host,
            ca_cert: s
                .ca_cert
                .as_deref()
                .map(|p| resolve_path(p, &ctx.cwd, ctx.home.as_deref())),
            timeout,
            retries: s.retries.unwrap_or(DEFAULT_RETRIES),
        })
    }

    /// The vault's URL: `[azure].vault_url`, else `https://VAULT.vault.azure.net`.
    pub fn vault_url(&self, vault: &str) -> String {
        match &self.vault_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("https://{vault}.vault.azure.net"),
        }
    }
}

/// What `[azure].client_secret` reads, when the profile sets it: its variable (`env:`) or
/// its file (`file:`, `dotenv:`). The callers keep them from the child like the `[vault]`
/// login's (`credential_inputs`).
pub fn login_inputs(section: Option<&AzureSection>, ctx: &Context) -> (Vec<String>, Vec<PathBuf>) {
    let Some(text) = section.and_then(|s| s.client_secret.as_deref()) else {
        return (Vec::new(), Vec::new());
    };
    match Source::parse(text, &ctx.cwd, ctx.home.as_deref()) {
        Ok(Source::Env { name }) => (vec![name], Vec::new()),
        Ok(Source::Dotenv { path, .. } | Source::File { path }) => (Vec::new(), vec![path]),
        // Under `$CREDENTIALS_DIRECTORY`, which the callers name whole; a remote login is
        // refused by `AzureSettings`; a text that does not parse is the fetch's error.
        Ok(
            Source::Systemd { .. }
            | Source::Vault(_)
            | Source::AwsSm(_)
            | Source::AwsSsm(_)
            | Source::GcpSm(_)
            | Source::AzureKv(_),
        )
        | Err(_) => (Vec::new(), Vec::new()),
    }
}

/// The files of `[azure]` a later run reads and a child must not change (`startup_inputs`):
/// the client secret's file, and `ca_cert` (a swapped CA would let a server in the middle
/// take the login).
pub fn startup_files(section: Option<&AzureSection>, ctx: &Context) -> Vec<PathBuf> {
    let mut out = login_inputs(section, ctx).1;
    if let Some(ca) = section
        .and_then(|s| s.ca_cert.as_deref())
        .filter(|c| !c.is_empty())
    {
        out.push(resolve_path(ca, &ctx.cwd, ctx.home.as_deref()));
    }
    out
}

/// Why a Key Vault read failed. `secret` is `VAULT/NAME[/VERSION]`, `place` the vault's URL.
/// Clone: one failed set-up is reported per secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AzureError {
    #[error("[azure] {0}")]
    Config(String),
    #[error("azure-kv {secret} ({place}): not found: {what}")]
    NotFound {
        secret: String,
        place: String,
        /// `no secret NAME in the vault`, or `the secret has no version V`.
        what: String,
    },
    #[error(
        "azure-kv {secret} ({place}): access denied{detail}: the identity needs `get` on secrets \
         in the vault's access policy, or the role \"Key Vault Secrets User\" on the vault (RBAC)"
    )]
    Forbidden {
        secret: String,
        place: String,
        detail: String,
    },
    #[error(
        "azure-kv {secret} ({place}): the secret version is disabled: enable it in the vault, or \
         pin an enabled version"
    )]
    Disabled { secret: String, place: String },
    #[error("azure-kv {secret} ({place}): the Azure credentials were rejected{detail}: {fix}")]
    BadCredentials {
        secret: String,
        place: String,
        detail: String,
        /// Which login was refused and how to renew it (names the tenant and client id,
        /// never the secret).
        fix: String,
    },
    #[error(
        "azure-kv {secret} ({place}): no answer within {secs}s: check the network, or raise \
         [azure].timeout"
    )]
    Timeout {
        secret: String,
        place: String,
        secs: f64,
    },
    #[error("azure-kv {secret} ({place}): cannot connect{to}: {reason}")]
    Unreachable {
        secret: String,
        place: String,
        /// Empty for the vault; ` to the authority HOST` for the token endpoint.
        to: String,
        reason: String,
    },
    #[error("azure-kv {secret} ({place}): {msg}")]
    Other {
        secret: String,
        place: String,
        msg: String,
    },
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ctx(vars: &[(&str, &str)]) -> Context {
        Context {
            env: vars
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect::<BTreeMap<_, _>>(),
            cwd: PathBuf::from("/tmp"),
            home: None,
        }
    }

    #[test]
    fn settings_defaults_from_the_environment() {
        let c = ctx(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s"),
        ]);
        let s = AzureSettings::from_section(None, &c).unwrap();
        assert_eq!(s.tenant_id.as_deref(), Some("t"));
        assert_eq!(s.client_id.as_deref(), Some("c"));
        assert!(
            matches!(&s.client_secret, Some(Source::Env { name }) if name == "AZURE_CLIENT_SECRET")
        );
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        assert_eq!(s.retries, DEFAULT_RETRIES);
        assert_eq!(s.vault_url("kv1"), "https://kv1.vault.azure.net");
        let none = AzureSettings::from_section(None, &ctx(&[])).unwrap();
        assert!(none.client_secret.is_none());
    }

    #[test]
    fn settings_refuse_a_remote_client_secret_and_bad_urls() {
        let c = ctx(&[]);
        for text in [
            "client_secret = \"vault:secret/x#k\"",
            "vault_url = \"nope\"",
            "authority_host = \"ftp://x\"",
            "tenant_id = \"\"",
        ] {
            let s: AzureSection = toml::from_str(text).unwrap();
            assert!(AzureSettings::from_section(Some(&s), &c).is_err(), "{text}");
        }
        let s: AzureSection = toml::from_str("vault_url = \"https://127.0.0.1:9/\"").unwrap();
        let s = AzureSettings::from_section(Some(&s), &c).unwrap();
        assert_eq!(s.vault_url("any"), "https://127.0.0.1:9");
    }

    #[test]
    fn login_inputs_name_the_client_secret_variable_or_file() {
        let c = ctx(&[]);
        let s: AzureSection =
            toml::from_str("client_secret = \"env:SP\"\nca_cert = \"/etc/ca.pem\"").unwrap();
        assert_eq!(login_inputs(Some(&s), &c), (vec!["SP".to_string()], vec![]));
        assert_eq!(
            startup_files(Some(&s), &c),
            vec![PathBuf::from("/etc/ca.pem")]
        );
        let s: AzureSection = toml::from_str("client_secret = \"file:/etc/sp\"").unwrap();
        assert_eq!(
            login_inputs(Some(&s), &c),
            (vec![], vec![PathBuf::from("/etc/sp")])
        );
        assert_eq!(login_inputs(None, &c), (vec![], vec![]));
    }

    #[test]
    fn messages_name_the_secret_the_vault_and_the_fix() {
        let e = AzureError::Forbidden {
            secret: "kv1/api".into(),
            place: "https://kv1.vault.azure.net".into(),
            detail: String::new(),
        };
        let m = e.to_string();
        assert!(
            m.starts_with("azure-kv kv1/api (https://kv1.vault.azure.net): access denied"),
            "{m}"
        );
        assert!(m.contains("Key Vault Secrets User"), "{m}");
    }
}
